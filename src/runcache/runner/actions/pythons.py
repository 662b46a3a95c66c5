"""Finding Python interpreters on this machine and matching them against setup-python version specs.

Specs follow setup-python (node-semver ranges): ``3.11`` means any 3.11.x, ``3``/``3.x`` any 3.y,
``>=3.9 <3.12``, ``~3.10``, ``^3.10``, ``3.8 - 3.11``, ``a || b``, exact ``3.11.7``, ``3.13-dev``
(pre-releases of 3.13), ``3.13t`` (free-threaded), ``pypy3.10``/``pypy-3.10`` (PyPy implementing 3.10).
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

_PROBE = r"""
import json, platform, struct, sys
try:
    import sysconfig
    ft = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
except Exception:
    ft = False
impl = platform.python_implementation()
v = sys.version_info
print(json.dumps({
    "version": [v[0], v[1], v[2]], "level": v[3], "serial": v[4], "impl": impl,
    "impl_version": list(sys.pypy_version_info[:3]) if impl == "PyPy" else None,
    "venv": getattr(sys, "base_prefix", sys.prefix) != sys.prefix or hasattr(sys, "real_prefix"),
    "executable": sys.executable, "prefix": sys.prefix, "machine": platform.machine(),
    "bits": struct.calcsize("P") * 8, "freethreaded": ft,
}))
"""


@dataclass(frozen=True)
class Interpreter:
    executable: str
    version: tuple[int, int, int]
    level: str  # final | alpha | beta | candidate
    serial: int
    impl: str  # CPython | PyPy | ...
    impl_version: tuple[int, int, int] | None
    prefix: str
    machine: str
    bits: int
    freethreaded: bool

    @property
    def prerelease(self) -> bool:
        return self.level != "final"

    @property
    def version_string(self) -> str:
        base = ".".join(map(str, self.version))
        if self.prerelease:
            base += {"alpha": "-alpha.", "beta": "-beta.", "candidate": "-rc."}.get(self.level, "-") + str(self.serial)
        return base + ("t" if self.freethreaded else "")

    @property
    def arch(self) -> str:
        m = self.machine.lower()
        if m in ("x86_64", "amd64", "i386", "i686", "x86"):
            return "x64" if self.bits == 64 else "x86"
        if m in ("aarch64", "arm64"):
            return "arm64"
        return m


def _candidates() -> list[str]:
    home = Path.home()
    found: list[str] = []
    patterns = []
    for var in ("RUNNER_TOOL_CACHE", "AGENT_TOOLSDIRECTORY"):
        if os.environ.get(var):
            patterns.append(os.path.join(os.environ[var], "Python", "*", "*", "bin", "python3"))
            patterns.append(os.path.join(os.environ[var], "PyPy", "*", "*", "bin", "pypy3"))
    pyenv = os.environ.get("PYENV_ROOT") or str(home / ".pyenv")
    patterns.append(os.path.join(pyenv, "versions", "*", "bin", "python"))
    uv = os.environ.get("UV_PYTHON_INSTALL_DIR") or str(home / ".local" / "share" / "uv" / "python")
    patterns.append(os.path.join(uv, "*", "bin", "python3"))
    patterns.append(str(home / ".asdf" / "installs" / "python" / "*" / "bin" / "python"))
    patterns.append("/Library/Frameworks/Python.framework/Versions/*/bin/python3")
    for pattern in patterns:
        found.extend(sorted(glob.glob(pattern)))
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    dirs += ["/usr/local/bin", "/usr/bin", "/opt/homebrew/bin"]
    name_re = re.compile(r"^(?:python|python3|python3\.\d+t?|pypy|pypy3|pypy3\.\d+)$")
    for d in dirs:
        if d.rstrip("/").endswith("shims"):  # pyenv/asdf shims pick a version per directory
            continue
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        found.extend(os.path.join(d, n) for n in names if name_re.match(n))
    unique: list[str] = []
    seen: set[str] = set()
    for path in found:
        if path not in seen and os.path.isfile(path) and os.access(path, os.X_OK):
            seen.add(path)
            unique.append(path)
    return unique


def _probe(executable: str) -> Interpreter | None:
    try:
        proc = subprocess.run(
            [executable, "-c", _PROBE], capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0:
            return None
        data = json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None
    return Interpreter(
        executable=executable,
        version=tuple(data["version"]),  # type: ignore[arg-type]
        level=data["level"],
        serial=data["serial"],
        impl=data["impl"],
        impl_version=tuple(data["impl_version"]) if data.get("impl_version") else None,  # type: ignore[arg-type]
        prefix=data["prefix"],
        machine=data["machine"],
        bits=data["bits"],
        freethreaded=bool(data["freethreaded"]),
    )


def discover() -> list[Interpreter]:
    """Every distinct, non-virtualenv interpreter found, highest version first."""
    paths = _candidates()
    with ThreadPoolExecutor(max_workers=8) as pool:
        probed = list(pool.map(_probe, paths))
    out: list[Interpreter] = []
    seen: set[tuple[str, tuple[int, int, int], str]] = set()
    for interp in probed:
        if interp is None:
            continue
        ident = (os.path.realpath(interp.executable), interp.version, interp.prefix)
        if ident in seen:
            continue
        seen.add(ident)
        out.append(interp)
    return sorted(out, key=lambda i: (i.version, i.level == "final", i.serial), reverse=True)


# --------------------------------------------------------------------------- version specs


@dataclass(frozen=True)
class Spec:
    text: str
    impl: str  # CPython | PyPy
    ranges: list[list[tuple[str, tuple[int, int, int], bool]]]  # OR of AND of (op, version, partial)
    prerelease: bool  # -dev / allow-prereleases
    freethreaded: bool


class SpecError(ValueError):
    pass


_PART = r"(?:\d+|[xX*])"
_VERSION_RE = re.compile(rf"^v?({_PART})(?:\.({_PART}))?(?:\.({_PART}))?(?:-[0-9A-Za-z.-]+)?$")


def _parse_version(text: str) -> tuple[tuple[int | None, int | None, int | None], int]:
    m = _VERSION_RE.match(text)
    if not m:
        raise SpecError(f"'{text}' is not a version")
    parts: list[int | None] = []
    for g in m.groups():
        parts.append(None if g is None or g in ("x", "X", "*") else int(g))
    # A wildcard ends the significant part: 3.x.5 means 3.x
    for i, p in enumerate(parts):
        if p is None:
            parts[i + 1 :] = [None] * (2 - i)
            break
    significant = sum(1 for p in parts if p is not None)
    return (parts[0], parts[1], parts[2]), significant


def _bump(parts: tuple[int | None, ...], index: int) -> tuple[int, int, int]:
    values = [p or 0 for p in parts]
    values[index] += 1
    return tuple(values[: index + 1] + [0] * (2 - index))  # type: ignore[return-value]


def _comparators(token: str) -> list[tuple[str, tuple[int, int, int]]]:
    m = re.match(r"^(>=|<=|>|<|=|~|\^)?\s*(.+)$", token)
    assert m
    op, rest = m.group(1) or "", m.group(2)
    parts, significant = _parse_version(rest)
    low = tuple(p or 0 for p in parts)
    if op in ("", "=") and significant == 3:
        return [("=", low)]  # type: ignore[list-item]
    if op in ("", "="):
        if significant == 0:
            return [(">=", (0, 0, 0))]
        return [(">=", low), ("<", _bump(parts, significant - 1))]  # type: ignore[list-item]
    if op == "~":
        upper = _bump(parts, 1) if significant >= 2 else _bump(parts, 0)
        return [(">=", low), ("<", upper)]  # type: ignore[list-item]
    if op == "^":
        if parts[0]:
            upper = _bump(parts, 0)
        elif significant >= 2 and parts[1]:
            upper = _bump(parts, 1)
        else:
            upper = _bump(parts, max(significant - 1, 0))
        return [(">=", low), ("<", upper)]  # type: ignore[list-item]
    if significant < 3 and op in (">", "<="):
        # >3.10 means >=3.11; <=3.10 means <3.11
        return [(">=" if op == ">" else "<", _bump(parts, significant - 1))]
    return [(op, low)]  # type: ignore[list-item]


def parse_spec(text: str, *, allow_prereleases: bool = False, freethreaded: bool = False) -> Spec:
    raw = text.strip()
    if not raw:
        raise SpecError("empty python-version")
    impl = "CPython"
    body = raw
    m = re.match(r"^(pypy|graalpy)-?(.*)$", raw, re.IGNORECASE)
    if m:
        impl = {"pypy": "PyPy", "graalpy": "GraalVM"}[m.group(1).lower()]
        body = m.group(2).split("-v", 1)[0] or "3"
    prerelease = allow_prereleases
    if body.endswith("-dev"):
        body, prerelease = body[: -len("-dev")], True
    if re.match(r"^\d+\.\d+t$", body) or re.match(r"^\d+\.\d+\.\d+t$", body):
        body, freethreaded = body[:-1], True
    ranges: list[list[tuple[str, tuple[int, int, int], bool]]] = []
    for alternative in body.split("||"):
        alternative = alternative.strip()
        hyphen = re.match(r"^(\S+)\s+-\s+(\S+)$", alternative)
        comps: list[tuple[str, tuple[int, int, int], bool]] = []
        if hyphen:
            lo, _ = _parse_version(hyphen.group(1))
            hi, hi_sig = _parse_version(hyphen.group(2))
            comps.append((">=", tuple(p or 0 for p in lo), False))  # type: ignore[arg-type]
            if hi_sig == 3:
                comps.append(("<=", tuple(p or 0 for p in hi), False))  # type: ignore[arg-type]
            else:
                comps.append(("<", _bump(hi, hi_sig - 1), False))
        else:
            tokens = re.findall(r"(?:>=|<=|>|<|=|~|\^)?\s*[^\s<>=~^]+", alternative.replace(",", " "))
            if not tokens:
                raise SpecError(f"'{text}' is not a version or version range")
            for token in tokens:
                comps.extend((op, v, False) for op, v in _comparators(token.strip()))
        ranges.append(comps)
    return Spec(raw, impl, ranges, prerelease, freethreaded)


def _cmp(op: str, a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    return {"=": a == b, ">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b}[op]


def matches(spec: Spec, interp: Interpreter) -> bool:
    if spec.impl != interp.impl:
        return False
    if spec.freethreaded != interp.freethreaded:
        return False
    if interp.prerelease and not spec.prerelease:
        return False
    version = interp.version
    return any(all(_cmp(op, version, v) for op, v, _ in comps) for comps in spec.ranges)


def pep440_to_spec(text: str) -> str:
    """``requires-python`` (PEP 440) as a setup-python range: ``>=3.9,<3.13`` -> ``>=3.9 <3.13``."""
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part or part.startswith("!="):
            continue
        if part.startswith("~="):
            nums = part[2:].strip().split(".")
            upper = [*nums[:-2], str(int(nums[-2]) + 1)] if len(nums) >= 2 else [str(int(nums[0]) + 1)]
            out += [">=" + ".".join(nums), "<" + ".".join(upper)]
        elif part.startswith("=="):
            out.append(part[2:].strip().replace(".*", ""))
        else:
            out.append(part.replace(" ", ""))
    return " ".join(out)
