"""The job's own Python: a fresh virtual environment first on ``PATH``, as a hosted runner has a clean interpreter.

Without it a workflow's ``pip install`` lands in whatever ``python`` is first on the host's ``PATH``
(runcache's own virtual environment, when that one is). Each job gets
``<job temp>/venv``, made with the stdlib ``venv`` module from the interpreter runcache runs on (its
base interpreter when runcache itself runs in a virtual environment), with pip in it.

``python -m venv`` with pip takes seconds (ensurepip runs pip to install pip). Here the environment is
made ``--without-pip`` (tens of milliseconds) and pip is copied in from a seed: the pip wheel bundled
with the interpreter (``ensurepip/_bundled``, or Debian's ``/usr/share/python-wheels``) unpacked and
byte-compiled once into ``~/.cache/runcache/pip-seed``. When no wheel is found, ``ensurepip`` runs
(slow but complete); when that fails too, the job gets a warning and no pip of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import venv
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

COMPLETE = ".complete"
WHEEL_DIRS = ("/usr/share/python-wheels",)


class JobPythonError(Exception):
    pass


@dataclass
class JobPython:
    root: Path
    bin: Path
    python: Path
    base: str  # the interpreter it was made from
    warning: str = ""


def _version_key(path: Path) -> tuple:
    version = path.name.split("-")[1] if path.name.count("-") >= 1 else ""
    return tuple(int(p) if p.isdigit() else 0 for p in version.split("."))


def bundled_pip_wheel() -> Path | None:
    """The pip wheel that ``ensurepip`` of this interpreter would install, if it can be found."""
    folders: list[Path] = []
    try:
        import ensurepip

        folders.append(Path(ensurepip.__file__).parent / "_bundled")
    except ImportError:  # a distribution that splits ensurepip out
        pass
    folders += [Path(d) for d in WHEEL_DIRS]
    for folder in folders:
        wheels = sorted(folder.glob("pip-*.whl"), key=_version_key)
        if wheels:
            return wheels[-1]
    return None


def pip_seed(wheel: Path, cache: Path | None, note: Callable[[str], None] | None = None) -> Path | None:
    """``<cache>/<wheel>-<cache tag>``: the wheel unpacked and byte-compiled, made once (``None``: no cache)."""
    if cache is None:
        return None
    seed = cache / f"{wheel.stem}-{sys.implementation.cache_tag}"
    if (seed / COMPLETE).is_file():
        return seed
    try:
        cache.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    except OSError:
        return None
    try:
        if note:
            note(f"preparing pip for the jobs' virtual environments (once, in {_tilde(cache)})")
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(building)
        # A separate process: compileall's worker pool must not fork this (threaded) one.
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "-j", "0", str(building)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=300,
        )
        (building / COMPLETE).write_text(f"{wheel}\n")
        try:
            building.rename(seed)
        except OSError:  # another run made it meanwhile
            shutil.rmtree(building, ignore_errors=True)
        return seed if (seed / COMPLETE).is_file() else None
    except (OSError, zipfile.BadZipFile, subprocess.SubprocessError):
        shutil.rmtree(building, ignore_errors=True)
        return None


def _tilde(path: Path) -> str:
    home = os.path.expanduser("~")
    text = str(path)
    return "~" + text[len(home) :] if home not in ("", "/") and text.startswith(home + os.sep) else text


def _pip_script(python: Path) -> str:
    shebang = f"#!{python}"
    if len(shebang) > 127 or " " in str(python):  # the kernel's limit; pip's own launchers do the same
        shebang = f"#!/bin/sh\n'''exec' \"{python}\" \"$0\" \"$@\"\n' '''"
    return (
        f"{shebang}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom pip._internal.cli.main import main\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
        "    sys.exit(main())\n"
    )


def _write_pip_scripts(bin_dir: Path, python: Path) -> None:
    major, minor = sys.version_info[:2]
    for name in ("pip", f"pip{major}", f"pip{major}.{minor}"):
        path = bin_dir / name
        path.write_text(_pip_script(python))
        path.chmod(0o755)


def base_interpreter() -> str:
    """The interpreter the jobs' environments are made of: runcache's own, or its base if that is a venv."""
    return getattr(sys, "_base_executable", "") or sys.executable


def create(root: Path, *, seed_cache: Path | None = None, note: Callable[[str], None] | None = None) -> JobPython:
    """A virtual environment at ``root`` with ``python`` and a ``pip`` that installs into it."""
    base = base_interpreter()
    try:
        venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt", clear=True).create(str(root))
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise JobPythonError(f"could not create a virtual environment of {base} in {root}: {exc}") from None
    bin_dir = root / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    if not python.exists():
        raise JobPythonError(f"could not create a virtual environment of {base} in {root}: no {python}")
    job = JobPython(root, bin_dir, python, base)
    site = Path(sysconfig.get_path("purelib", scheme="venv", vars={"base": str(root), "platbase": str(root)}))
    wheel = bundled_pip_wheel()
    try:
        if wheel is not None:
            seed = pip_seed(wheel, seed_cache, note)
            if seed is not None:
                shutil.copytree(seed, site, dirs_exist_ok=True, ignore=shutil.ignore_patterns(COMPLETE))
            else:
                with zipfile.ZipFile(wheel) as zf:
                    zf.extractall(site)
            _write_pip_scripts(bin_dir, python)
            return job
    except (OSError, zipfile.BadZipFile) as exc:
        job.warning = f"could not unpack {wheel} into the job's virtual environment ({exc}); trying ensurepip"
    proc = subprocess.run(
        [str(python), "-m", "ensurepip", "--default-pip"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        job.warning = (
            f"the job's virtual environment {root} has no pip: {base} has no bundled pip wheel and ensurepip "
            f"failed ({last[0]}); install your distribution's python3-venv package, or use --host-python"
        )
    return job


def own_venv_bin() -> str | None:
    """runcache's own virtual environment's scripts folder (``None`` when runcache runs on a plain interpreter)."""
    if sys.prefix == sys.base_prefix:
        return None
    return os.path.join(sys.prefix, "Scripts" if os.name == "nt" else "bin")


def job_path(venv_bin: Path, host_path: str) -> str:
    """``PATH`` for the job: its environment first, then the host's without runcache's own environment."""
    own = own_venv_bin()
    own_real = os.path.realpath(own) if own else None
    kept = [d for d in host_path.split(os.pathsep) if d and not (own_real and os.path.realpath(d) == own_real)]
    return os.pathsep.join([str(venv_bin), *kept])
