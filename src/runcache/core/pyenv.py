"""Keys for cached Python environments (`runcache pip install`): when one job's virtualenv is valid for another.

A virtualenv is only as portable as the interpreter it was made from and the requirements it was synced to,
so its key names both, with a readable prefix that restore-keys can cut at:

    pyenv-<OS>-<arch>-<python tag>-<interpreter digest>-<installer>-<requirements digest>
    pyenv-Linux-x64-cp311-3f1c0a9d2b7e4c55-pip-<64 hex>        restore key: pyenv-Linux-x64-cp311-3f1c0a9d2b7e4c55-pip-

- the interpreter digest covers the implementation, the full version and build string (a rebuilt 3.11.7 is
  another interpreter), the ABI (SOABI, abiflags, free-threading), the platform and libc (binary wheels
  link against it) and the interpreter's real path (a venv's `bin/python` and pyvenv.cfg `home` point at
  it): a prefix restore never crosses interpreters;
- the requirements digest covers the installer's version, the requirement files (with their `-r`/`-c`
  includes, followed by runcache.client.pyenv), the requirement strings and installer arguments given on
  the command line, and the project's dependency declarations and lock files when present.

The installer's download/wheel cache has a key of its own, `pyenv-cache-<OS>-<arch>-<installer>-<digest>`:
its wheels are tagged per interpreter, so one cache serves every interpreter of a machine kind.

Pure rules only: probing interpreters, reading files and running installers is runcache.client.pyenv's.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

# Bumped whenever what goes into a digest changes, so entries made under the old rules stop matching exactly.
KEY_SCHEMA = "1"
KEY_PREFIX = "pyenv"
CACHE_KEY_PREFIX = "pyenv-cache"
INSTALLERS = ("pip", "uv")

# Files beside the project that declare or pin its dependencies: hashed when present (PEP 751 allows
# `pylock.<name>.toml` too). pyproject.toml contributes only its dependency tables (project_dependency_view).
PROJECT_FILES = ("pyproject.toml", "uv.lock", "poetry.lock", "Pipfile.lock", "pylock.toml")
PYLOCK_PATTERN = re.compile(r"pylock\.[^/\\]+\.toml")


class RequirementsError(ValueError):
    """Requirement inputs that cannot be part of a key (a remote file, a local project path)."""


@dataclass(frozen=True)
class Interpreter:
    """What the probe (runcache.client.pyenv.probe) reports about an interpreter."""

    implementation: str  # sys.implementation.name: cpython, pypy, ...
    version: tuple[int, int, int]
    build: str  # sys.version: version, build date and compiler
    cache_tag: str  # sys.implementation.cache_tag
    soabi: str  # sysconfig SOABI (cpython-311-x86_64-linux-gnu)
    abiflags: str
    freethreaded: bool
    system: str  # platform.system(): Linux, Darwin, Windows
    machine: str  # platform.machine()
    bits: int
    platform: str  # sysconfig.get_platform()
    libc: str  # "glibc 2.36", "" where there is none to speak of
    executable: str  # sys.executable (may be a shim, or a venv's python)
    base_executable: str  # what venvs are made from (sys._base_executable)
    real_executable: str  # realpath of base_executable: the interpreter's identity on disk
    ensurepip: str  # the pip version `python -m venv` seeds, "" without ensurepip

    @classmethod
    def from_probe(cls, data: Mapping[str, object]) -> Interpreter:
        values: dict[str, object] = {}
        for f in fields(cls):
            if f.name not in data:
                raise ValueError(f"the interpreter probe did not report {f.name!r}")
            values[f.name] = data[f.name]
        version = values["version"]
        if not isinstance(version, list | tuple) or len(version) != 3:
            raise ValueError(f"the interpreter probe reported version {version!r}")
        values["version"] = tuple(int(v) for v in version)
        values["bits"] = int(values["bits"])  # type: ignore[call-overload]
        values["freethreaded"] = bool(values["freethreaded"])
        return cls(**values)  # type: ignore[arg-type]

    @property
    def version_string(self) -> str:
        return ".".join(map(str, self.version))


def os_label(system: str) -> str:
    """`runner.os`'s spelling: Linux, macOS, Windows."""
    return {"Darwin": "macOS", "Linux": "Linux", "Windows": "Windows"}.get(system, system or "unknown")


def arch_label(machine: str, bits: int) -> str:
    m = machine.lower()
    if m in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "x64" if bits == 64 else "x86"
    if m in ("aarch64", "arm64"):
        return "arm64"
    if m.startswith("arm"):
        return "arm"
    return m or "unknown"


def python_tag(interp: Interpreter) -> str:
    """The wheel-style tag: cp311, pp310, cp313t (free-threaded); other implementations by their name."""
    short = {"cpython": "cp", "pypy": "pp", "graalpy": "graalpy", "ironpython": "ip"}.get(
        interp.implementation, interp.implementation
    )
    return f"{short}{interp.version[0]}{interp.version[1]}" + ("t" if interp.freethreaded else "")


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def interpreter_digest(interp: Interpreter) -> str:
    """16 hex digits over everything that makes a venv of this interpreter unusable with another one.

    The invocation paths (`executable`, `base_executable`) are left out: a shim or a symlink to the same
    binary is the same interpreter. `ensurepip` is the installer's business (requirements digest).
    """
    identity = {
        "schema": KEY_SCHEMA,
        "implementation": interp.implementation,
        "build": interp.build,
        "version": interp.version_string,
        "soabi": interp.soabi,
        "abiflags": interp.abiflags,
        "freethreaded": interp.freethreaded,
        "platform": interp.platform,
        "libc": interp.libc,
        "real_executable": interp.real_executable,
    }
    return _digest(identity)[:16]


@dataclass(frozen=True)
class RequirementInput:
    """One file that decides the environment: its role, a label for messages, and what is hashed."""

    role: str  # requirements | constraints | project | lock
    label: str  # the path as a person would write it (not hashed: moving a file does not change the set)
    content: bytes


def requirements_digest(
    installer: str,
    installer_version: str,
    inputs: Sequence[RequirementInput],
    specs: Sequence[str] = (),
    installer_args: Sequence[str] = (),
) -> str:
    """64 hex digits over what the environment is synced to, and by which installer version."""
    material = {
        "schema": KEY_SCHEMA,
        "installer": [installer, installer_version],
        "inputs": [[i.role, hashlib.sha256(i.content).hexdigest()] for i in inputs],
        "specs": list(specs),
        "args": list(installer_args),
    }
    return _digest(material)


@dataclass(frozen=True)
class EnvKeys:
    key: str
    restore_keys: list[str]
    cache_key: str
    cache_restore_keys: list[str]


def env_keys(interp: Interpreter, installer: str, req_digest: str) -> EnvKeys:
    if installer not in INSTALLERS:
        raise ValueError(f"installer must be one of {', '.join(INSTALLERS)}, got {installer!r}")
    platform = f"{os_label(interp.system)}-{arch_label(interp.machine, interp.bits)}"
    env_prefix = f"{KEY_PREFIX}-{platform}-{python_tag(interp)}-{interpreter_digest(interp)}-{installer}-"
    cache_prefix = f"{CACHE_KEY_PREFIX}-{platform}-{installer}-"
    return EnvKeys(env_prefix + req_digest, [env_prefix], cache_prefix + req_digest, [cache_prefix])


# --- requirement inputs -------------------------------------------------------------------------------
# pip's requirements-file syntax, only as far as a key needs it: which other files a file pulls in. pip's
# own parser (pip._internal.req.req_file) is not a public API and packaging has none, so the option
# syntax is followed here: logical lines (backslash continuations), comments (`#` at the start or after
# whitespace), `${VAR}` expansion, and `-r`/`--requirement`/`-c`/`--constraint` in every spelling pip takes.

_COMMENT = re.compile(r"(^|\s+)#.*$")
_ENV_VAR = re.compile(r"\$\{([A-Z0-9_]+)\}")
_INCLUDE_OPTIONS = {
    "-r": "requirements",
    "--requirement": "requirements",
    "-c": "constraints",
    "--constraint": "constraints",
}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def logical_lines(text: str) -> list[str]:
    """Lines as pip reads them: comments removed, backslash continuations joined, blanks dropped."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = _COMMENT.sub("", raw)
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line, pending = pending + line, ""
        if line.strip():
            out.append(line.strip())
    if pending.strip():
        out.append(pending.strip())
    return out


def requirement_includes(text: str, environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """The files a requirements file pulls in, in order: (role, path as written, `${VAR}` expanded)."""
    found: list[tuple[str, str]] = []
    for line in logical_lines(text):
        line = _ENV_VAR.sub(lambda m: environ.get(m.group(1), m.group(0)), line)
        if not line.startswith("-"):
            continue
        try:
            tokens = shlex.split(line)
        except ValueError:
            continue  # pip would fail on it too; the file's bytes are in the key either way
        i = 0
        while i < len(tokens):
            token = tokens[i]
            role, value = None, None
            for option, option_role in _INCLUDE_OPTIONS.items():
                if token == option and i + 1 < len(tokens):
                    role, value = option_role, tokens[i + 1]
                    i += 1
                elif option.startswith("--") and token.startswith(option + "="):
                    role, value = option_role, token[len(option) + 1 :]
                elif not option.startswith("--") and token.startswith(option) and len(token) > len(option):
                    role, value = option_role, token[len(option) :]
                if role:
                    break
            if role and value is not None:
                if _URL.match(value):
                    raise RequirementsError(
                        f"{value}: a remote requirements file cannot be part of a cache key; download it first"
                    )
                found.append((role, value))
            i += 1
    return found


def check_spec(spec: str) -> str:
    """A requirement given on the command line: a PEP 508 requirement with a name (what the key can see)."""
    # Imported here: packaging's parser is ~10 ms of start-up an exact hit (no specifiers) never needs.
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        Requirement(spec)
    except InvalidRequirement:
        raise RequirementsError(
            f"{spec!r} is not a requirement runcache can key (a name with optional version, extras, markers or "
            "`@ URL`); install local projects and paths after `runcache pip install`, outside the cached environment"
        ) from None
    return spec.strip()


_PROJECT_KEYS = ("name", "dependencies", "optional-dependencies", "requires-python", "dynamic")
_TOOL_KEYS = ("uv", "poetry", "pdm")


def project_dependency_view(pyproject: Mapping[str, object]) -> dict[str, object]:
    """The parts of a parsed pyproject.toml that decide an environment's contents.

    A tool's settings (ruff, pytest) or the project's description change often and install nothing, so
    hashing the whole file would throw away a valid environment for every such edit.
    """
    view: dict[str, object] = {}
    project = pyproject.get("project")
    if isinstance(project, Mapping):
        view["project"] = {k: project[k] for k in _PROJECT_KEYS if k in project}
    for table in ("build-system", "dependency-groups"):
        if table in pyproject:
            view[table] = pyproject[table]
    tool = pyproject.get("tool")
    if isinstance(tool, Mapping):
        view["tool"] = {k: tool[k] for k in _TOOL_KEYS if k in tool}
    return view


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
