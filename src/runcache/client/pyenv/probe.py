"""Which interpreter and which installer `runcache pip install` works with, and their versions.

The interpreter is asked about itself in a subprocess (it is rarely the one runcache runs on). uv's version
is remembered per binary (path, size, times, inode) in the user's cache folder, so an exact hit starts no
installer process at all; pip's is the one the interpreter's ensurepip seeds a new environment with.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runcache.core.pyenv import Interpreter

PROBE = r"""
import json, os, platform, struct, sys, sysconfig
try:
    import ensurepip
    seeded = ensurepip.version()
except Exception:
    seeded = ""
base = getattr(sys, "_base_executable", "") or sys.executable
print(json.dumps({
    "implementation": sys.implementation.name,
    "version": list(sys.version_info[:3]),
    "build": sys.version,
    "cache_tag": sys.implementation.cache_tag or "",
    "soabi": sysconfig.get_config_var("SOABI") or "",
    "abiflags": getattr(sys, "abiflags", ""),
    "freethreaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
    "system": platform.system(),
    "machine": platform.machine(),
    "bits": struct.calcsize("P") * 8,
    "platform": sysconfig.get_platform(),
    "libc": " ".join(platform.libc_ver()).strip() if sys.platform.startswith("linux") else "",
    "executable": sys.executable,
    "base_executable": base,
    "real_executable": os.path.realpath(base),
    "ensurepip": seeded,
}))
"""
_VERSION_CACHE_ENTRIES = 32


class InstallerError(Exception):
    """No usable interpreter or installer: a setup problem, reported before anything is changed."""


@dataclass(frozen=True)
class Installer:
    name: str  # pip | uv
    version: str
    command: tuple[str, ...]  # uv: its binary; pip: empty (it runs as `<venv>/bin/python -m pip`)


def find_python(python: str | None) -> str:
    """`--python` as given (a path, or a name looked up on PATH), else `python3` on PATH (`python` on Windows)."""
    names = [python] if python else (["python"] if os.name == "nt" else ["python3", "python"])
    for name in names:
        if os.sep in name or (os.altsep and os.altsep in name):
            if os.path.isfile(name):
                return os.path.abspath(name)
            continue
        found = shutil.which(name)
        if found:
            return found
    raise InstallerError(f"no Python interpreter {python or 'python3'} found (pass --python PATH)")


class Probe:
    """An interpreter asked about itself in a subprocess, started now and answered by `result()`.

    Started before the client's own imports and connection set-up, its ~40-70 ms (the interpreter's start and
    ensurepip's import) run beside them instead of before them: on an exact hit that is a few percent of
    the whole command. `close()` ends a probe whose answer is no longer wanted."""

    def __init__(self, python: str, timeout: float = 120) -> None:
        self.python = python
        self._timeout = timeout
        self._answer: Interpreter | None = None
        self._error = ""
        self._proc: subprocess.Popen[str] | None = None
        try:
            self._proc = subprocess.Popen(
                [python, "-I", "-c", PROBE],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        except OSError as exc:
            self._error = f"could not run {python}: {exc}"

    def result(self) -> Interpreter:
        if self._answer is not None:
            return self._answer
        if self._proc is None:
            raise InstallerError(self._error)
        try:
            out, err = self._proc.communicate(timeout=self._timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise InstallerError(f"could not run {self.python}: no answer within {self._timeout:g} s") from None
        if self._proc.returncode != 0:
            last = (err.strip().splitlines() or ["no output"])[-1]
            raise InstallerError(f"{self.python} is not a usable Python 3 interpreter: {last}")
        try:
            self._answer = Interpreter.from_probe(json.loads(out))
        except (ValueError, TypeError) as exc:
            raise InstallerError(f"{self.python} did not describe itself: {exc}") from None
        return self._answer

    def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()


def probe_interpreter(python: str) -> Interpreter:
    probe = Probe(python)
    try:
        return probe.result()
    finally:
        probe.close()


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "runcache"


def _identity(binary: str) -> str:
    real = os.path.realpath(binary)
    st = os.stat(real)
    return f"{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


def uv_version(uv: str) -> str:
    """`uv --version`'s number, asked once per binary: a replaced or rebuilt binary has another identity."""
    store = _user_cache() / "installer-versions.json"
    try:
        identity = _identity(uv)
    except OSError as exc:
        raise InstallerError(f"cannot read {uv}: {exc}") from None
    try:
        known = json.loads(store.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(identity), str):
        return known[identity]
    try:
        proc = subprocess.run([uv, "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallerError(f"could not run {uv}: {exc}") from None
    words = proc.stdout.split()
    if proc.returncode != 0 or len(words) < 2 or words[0] != "uv":
        raise InstallerError(f"{uv} --version said {(proc.stdout + proc.stderr).strip()!r}, not `uv <version>`")
    known[identity] = words[1]
    known = dict(list(known.items())[-_VERSION_CACHE_ENTRIES:])
    try:  # best effort: without the note the next run asks again
        store.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".installer-versions-", dir=store.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(known, fh)
        os.replace(tmp, store)
    except OSError:
        pass
    return words[1]


def find_installer(choice: str, interp: Interpreter) -> Installer:
    """`auto`: uv when it is on PATH, else pip; `uv` or `pip`: that one, or a clear error."""
    if choice in ("auto", "uv"):
        uv = shutil.which("uv")
        if uv:
            return Installer("uv", uv_version(uv), (uv,))
        if choice == "uv":
            raise InstallerError("--installer uv: no `uv` on PATH (pip install uv, or use --installer pip)")
    if choice not in ("auto", "pip"):
        raise InstallerError(f"--installer must be auto, pip or uv, not {choice!r}")
    if not interp.ensurepip:
        raise InstallerError(
            f"{interp.base_executable} cannot make a virtual environment with pip (no ensurepip; on Debian and "
            "Ubuntu install python3-venv), or use --installer uv"
        )
    return Installer("pip", interp.ensurepip, ())
