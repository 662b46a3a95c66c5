"""The virtual environment on disk: making one, telling whether a restored one is valid here, moving one.

A restored environment is used only when all of these hold, else it is removed and a fresh one is built:
- it carries runcache's marker (`.runcache-pyenv.json`) from the same installer;
- its `bin/python` resolves to this interpreter's binary and pyvenv.cfg's `home` exists and names the
  same Python version (an interpreter moved, upgraded or rebuilt elsewhere fails here);
- it sits where it was built, or it can be moved here by the rules of runcache.core.venvs: launchers and
  activation scripts rewritten (each file replaced whole, by rename), pyvenv.cfg's `command` updated, and
  nothing else in the scripts folder or in a `.pth` file naming the old path. Anything the rules cannot
  rewrite refuses the move; a move that fails half-way removes the environment (never left half-moved).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from runcache.core.pyenv import Interpreter
from runcache.core.venvs import (
    MARKER,
    MARKER_SCHEMA,
    RelocationPlan,
    canonical_name,
    parse_pyvenv_cfg,
    plan_script_relocation,
    relocate_pyvenv_cfg,
)

WINDOWS = os.name == "nt"

# Run in the environment's own python: every installed distribution, its version and direct_url.json.
_LIST = r"""
import importlib.metadata as md, json
out = {}
for d in md.distributions():
    name = d.metadata["Name"]
    if name and name not in out:
        out[name] = [d.version, d.read_text("direct_url.json") or ""]
print(json.dumps(out))
"""


class EnvironmentRefused(Exception):
    """A restored environment that is not valid here; the message says why, for the report."""


def bin_dir(venv: Path) -> Path:
    return venv / ("Scripts" if WINDOWS else "bin")


def venv_python(venv: Path) -> Path:
    return bin_dir(venv) / ("python.exe" if WINDOWS else "python")


def read_marker(venv: Path) -> dict | None:
    try:
        data = json.loads((venv / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == MARKER_SCHEMA else None


def write_marker(venv: Path, data: dict) -> None:
    _replace_file(venv / MARKER, json.dumps({"schema": MARKER_SCHEMA, **data}, indent=2, sort_keys=True).encode())


def clear_marker(venv: Path) -> None:
    (venv / MARKER).unlink(missing_ok=True)


def _replace_file(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write `path` whole or not at all: a temp file beside it, renamed over it (never written through)."""
    fd, tmp = tempfile.mkstemp(prefix=".runcache-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def prepare_destination(venv: Path) -> None:
    """Clear the way for a restored or new environment: an old one there is removed, anything else refused."""
    if os.path.islink(venv):
        raise ValueError(f"--venv {venv} is a symbolic link; give the environment's real path")
    if not venv.exists():
        return
    if not venv.is_dir():
        raise ValueError(f"--venv {venv} exists and is not a directory; refusing to replace it")
    if (venv / "pyvenv.cfg").is_file() or not any(venv.iterdir()):
        shutil.rmtree(venv)
        return
    raise ValueError(f"--venv {venv} exists and is not a virtual environment (no pyvenv.cfg); refusing to replace it")


def remove(venv: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)


def interpreter_problem(venv: Path, interp: Interpreter) -> str | None:
    """Why the environment at `venv` does not run on `interp` (None: it does)."""
    try:
        cfg = parse_pyvenv_cfg((venv / "pyvenv.cfg").read_text())
    except (OSError, UnicodeDecodeError):
        return "it has no readable pyvenv.cfg"
    home = cfg.get("home", "")
    if not home or not os.path.isdir(home):
        return f"its interpreter folder (pyvenv.cfg home = {home or 'nothing'}) does not exist here"
    version = cfg.get("version_info") or cfg.get("version") or ""
    numbers = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if not numbers or tuple(int(n) for n in numbers.groups()) != interp.version:
        return f"it was made for Python {version or '(unknown)'}, not {interp.version_string}"
    python = venv_python(venv)
    real = os.path.realpath(python)
    if not os.path.exists(real):
        return f"its {python.name} points at {real}, which does not exist here"
    if os.path.normcase(real) != os.path.normcase(interp.real_executable):
        return f"its {python.name} runs {real}, not this interpreter ({interp.real_executable})"
    return None


def accept(venv: Path, interp: Interpreter, installer: str, key: str | None = None) -> str:
    """Check a restored (or already present) environment and move it here if needed.

    Returns the path it was built at when it was moved ('' when it was in place); raises
    EnvironmentRefused when it cannot be used, after which the caller removes it.
    """
    marker = read_marker(venv)
    if marker is None:
        raise EnvironmentRefused("it carries no runcache marker (not made by `runcache pip install`)")
    if marker.get("installer") != installer:
        raise EnvironmentRefused(f"it was made by {marker.get('installer')}, not {installer}")
    if key is not None and marker.get("key") != key:
        raise EnvironmentRefused("it was synced to another requirement set")
    problem = interpreter_problem(venv, interp)
    if problem:
        raise EnvironmentRefused(problem)
    old = str(marker.get("venv") or "")
    here = os.path.realpath(venv)
    if not old or os.path.realpath(old) == here:
        return ""
    relocate(venv, old, here)
    marker["venv"] = here
    marker.pop("schema", None)
    write_marker(venv, marker)
    return old


def plan_relocation(venv: Path, old: str, new: str) -> RelocationPlan:
    if WINDOWS:
        return RelocationPlan(refused="moving an environment on Windows is not supported (its launchers are .exe)")
    scripts: dict[str, bytes] = {}
    folder = bin_dir(venv)
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False):
            scripts[f"{folder.name}/{entry.name}"] = Path(entry.path).read_bytes()
    plan = plan_script_relocation(scripts, old, new)
    if plan.refused:
        return plan
    needle = old.encode("utf-8", "surrogateescape")
    for pth in sorted(venv.glob("lib*/python*/site-packages/*.pth")):
        if needle in pth.read_bytes():
            plan.refused = f"{pth.relative_to(venv)} names {old} (a path install runcache cannot move)"
            return plan
    cfg = venv / "pyvenv.cfg"
    text = cfg.read_text()
    moved = relocate_pyvenv_cfg(text, old, new)
    if moved != text:
        plan.rewrites["pyvenv.cfg"] = moved.encode()
    return plan


def relocate(venv: Path, old: str, new: str) -> None:
    """Point the environment's launchers, activation scripts and pyvenv.cfg at `new` (its path now)."""
    try:
        plan = plan_relocation(venv, old, new)
    except OSError as exc:
        raise EnvironmentRefused(f"it was built at {old} and could not be read for the move: {exc}") from None
    if plan.refused:
        raise EnvironmentRefused(f"it was built at {old} and cannot be moved to {new}: {plan.refused}")
    try:
        for name, data in sorted(plan.rewrites.items()):
            path = venv / name
            _replace_file(path, data, os.stat(path).st_mode & 0o7777)
    except OSError as exc:
        raise EnvironmentRefused(f"moving it from {old} failed half-way ({exc})") from None


def create(
    venv: Path, interp: Interpreter, installer_name: str, run: Callable[[list[str]], object], uv: str = ""
) -> None:
    """A new, empty environment of `interp` at `venv`: `python -m venv` for pip (it seeds pip), `uv venv` for uv."""
    if installer_name == "uv":
        run([uv, "venv", "--quiet", "--python", interp.base_executable, str(venv)])
    else:
        run([interp.base_executable, "-m", "venv", str(venv)])


def installed(venv: Path) -> dict[str, tuple[str, str]]:
    """Canonical name → (version, direct_url.json text) of everything installed in the environment."""
    try:
        proc = subprocess.run(
            [str(venv_python(venv)), "-I", "-c", _LIST],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentRefused(f"its python does not run: {exc}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvironmentRefused(f"its python does not run: {last}")
    raw = json.loads(proc.stdout)
    return {canonical_name(name): (v[0], v[1]) for name, v in raw.items()}


def local_installs(dists: dict[str, tuple[str, str]]) -> list[str]:
    """Distributions installed from a local path: their files live outside the environment, unseen by the key."""
    out = []
    for name, (_version, direct) in sorted(dists.items()):
        try:
            url = json.loads(direct).get("url", "") if direct else ""
        except ValueError:
            url = ""
        if url.startswith("file:"):
            out.append(f"{name} ({url})")
    return out
