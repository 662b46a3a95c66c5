"""Bringing an environment to exactly the requested set, with pip or uv, and the installers' own caches.

Both installers first resolve the requested set as a fresh install would (so a restored environment's older
versions are not kept just because they still satisfy a range), then install it, then remove what nothing
asks for any more; the result is compared with the resolution and a difference is an error, never saved.

- uv: `uv pip compile` of the inputs for the environment's interpreter, then `uv pip sync` of that
  resolution (uv's own exact sync). `uv pip compile` does not check `--hash` options, so inputs with hashes
  (complete locks, as pip's hash-checking mode requires) are synced from themselves, hashes checked.
- pip: `pip install --dry-run --ignore-installed --report` gives the complete resolution; `pip install -r
  <inputs> -c <its versions>` installs it (the inputs keep their hashes, indexes and options; the
  constraints pin what a fresh resolution chose); `pip uninstall` removes the rest, except the packages
  `python -m venv` seeded (pip, and setuptools on older Pythons), which a fresh environment has too.

Installer caches are saved pruned to what is worth a download: uv's with `uv cache prune --ci` (keeps wheels
built from source, drops downloaded wheels, which the index serves as fast); pip's as its `wheels/` folder
only (wheels pip built locally; the `http*/` folders hold downloads, and nothing is deleted on the machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runcache.client.pyenv.probe import Installer
from runcache.client.pyenv.venv import EnvironmentRefused, installed, venv_python
from runcache.core.venvs import (
    Pin,
    desired_set,
    differences,
    pin_lines,
    pins_from_compiled,
    pins_from_pip_report,
    plan_sync,
)

# pip asks PyPI for a newer pip on every run unless told not to; the answer is noise here.
_QUIET_PIP = {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}


class InstallerFailed(Exception):
    def __init__(self, argv: Sequence[str], returncode: int, detail: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        super().__init__(f"{' '.join(argv[:4])} ... failed with exit code {returncode}{detail}")


class SyncError(Exception):
    """The installer finished but the environment is not the requested set."""


@dataclass
class Runner:
    """Runs installer processes with their output on stderr (stdout is the command's report), keeping each argv."""

    runs: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: list[str], *, capture: bool = False) -> str:
        self.runs.append([str(a) for a in argv])
        env = {**os.environ, **_QUIET_PIP}
        try:
            if capture:
                proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env)
                if proc.returncode != 0:
                    tail = (proc.stderr.strip().splitlines() or [""])[-1]
                    raise InstallerFailed(argv, proc.returncode, f": {tail}" if tail else "")
                return proc.stdout
            sys.stderr.flush()
            proc = subprocess.run(argv, stdout=_stderr_fd(), stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            raise InstallerFailed(argv, 127, f": {exc}") from None
        if proc.returncode != 0:
            raise InstallerFailed(argv, proc.returncode)
        return ""


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def write_inputs(folder: Path, requirements: list[str], constraints: list[str], specs: list[str]) -> Path:
    """One requirements file naming all inputs (absolute `-r`/`-c` lines, then the specs), for both installers."""
    lines = [f"-r {os.path.abspath(p)}" for p in requirements]
    lines += [f"-c {os.path.abspath(p)}" for p in constraints]
    lines += specs
    path = folder / "requirements.in"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _versions(dists: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {name: version for name, (version, _direct) in dists.items()}


@dataclass
class Synced:
    pins: dict[str, Pin]
    before: dict[str, str]
    after: dict[str, tuple[str, str]]


def sync(
    installer: Installer,
    venv: Path,
    inputs: Path,
    installer_args: list[str],
    seed: dict[str, str],
    run: Runner,
    hashed: bool = False,
) -> Synced:
    before = _versions(installed(venv))
    with tempfile.TemporaryDirectory(prefix="runcache-pyenv-") as tmp:
        if installer.name == "uv":
            desired = _sync_uv(installer, venv, inputs, installer_args, before, Path(tmp), run, hashed)
        else:
            desired = _sync_pip(venv, inputs, installer_args, seed, before, Path(tmp), run)
    after = installed(venv)
    wrong = differences(_versions(after), desired)
    if wrong:
        raise SyncError(f"after {installer.name} the environment is not the requested set: {'; '.join(wrong)}")
    return Synced(desired, before, after)


def _sync_uv(
    installer: Installer,
    venv: Path,
    inputs: Path,
    args: list[str],
    before: dict[str, str],
    tmp: Path,
    run: Runner,
    hashed: bool,
) -> dict[str, Pin]:
    uv, python = installer.command[0], str(venv_python(venv))
    resolved = tmp / "resolved.txt"
    run([uv, "pip", "compile", str(inputs), "--python", python, "--no-header", "--no-annotate", "--quiet",
         "--output-file", str(resolved), *args])  # fmt: skip
    pins = pins_from_compiled(resolved.read_text())
    if differences(before, pins):
        run([uv, "pip", "sync", str(inputs if hashed else resolved), "--python", python, *args])
    return pins


def _sync_pip(
    venv: Path,
    inputs: Path,
    args: list[str],
    seed: dict[str, str],
    before: dict[str, str],
    tmp: Path,
    run: Runner,
) -> dict[str, Pin]:
    pip = [str(venv_python(venv)), "-m", "pip"]
    report = tmp / "report.json"
    run([*pip, "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), "-r", str(inputs),
         *args])  # fmt: skip
    try:
        pins = pins_from_pip_report(json.loads(report.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SyncError(f"pip's resolution report could not be read: {exc}") from None
    desired = desired_set(pins, seed)
    if not differences(before, desired):
        return desired
    if differences({n: v for n, v in before.items() if n in pins}, pins):
        constraints = tmp / "resolved-constraints.txt"
        constraints.write_text(pin_lines(pins))
        run([*pip, "install", "-r", str(inputs), "-c", str(constraints), *args])
    plan = plan_sync(_versions(installed(venv)), desired)
    if plan.remove:
        run([*pip, "uninstall", "--yes", *plan.remove])
    if plan.reinstall:
        run([*pip, "install", "--no-deps", *(f"{n}=={v}" for n, v in sorted(plan.reinstall.items()))])
    return desired


def seed_packages(venv: Path) -> dict[str, str]:
    """What a brand-new environment holds before anything is installed (pip's and setuptools' versions)."""
    try:
        return _versions(installed(venv))
    except EnvironmentRefused as exc:
        raise SyncError(f"the new environment does not run: {exc}") from None


# --- installer caches ---------------------------------------------------------------------------------------


def cache_dir(installer: Installer, venv: Path, run: Runner) -> Path | None:
    """Where the installer keeps its cache (None: caching is off), as the installer itself reports it."""
    try:
        if installer.name == "uv":
            out = run([installer.command[0], "cache", "dir"], capture=True)
        else:
            out = run([str(venv_python(venv)), "-m", "pip", "cache", "dir"], capture=True)
    except InstallerFailed:
        return None  # pip says "cache is disabled" with an error; nothing to cache then
    text = out.strip().splitlines()[-1:] if out.strip() else []
    return Path(text[0]) if text else None


def cache_paths(installer: Installer, folder: Path) -> Path:
    """The part of the installer cache worth saving (see the module docstring)."""
    return folder if installer.name == "uv" else folder / "wheels"


def prune_cache(installer: Installer, run: Runner) -> None:
    if installer.name == "uv":
        run([installer.command[0], "cache", "prune", "--ci", "--quiet"])


def has_files(folder: Path) -> bool:
    return any(files for _root, _dirs, files in os.walk(folder))
