"""Rules about a virtualenv's own files: pyvenv.cfg, script launchers, activation scripts, what is installed.

A virtualenv hard-codes absolute paths: pyvenv.cfg's `home` (the interpreter's folder), the `bin/python`
symlink, every console script's shebang (`#!/work/a/.venv/bin/python`, or for long paths and spaces the
`/bin/sh` trampoline pip and uv write) and the activation scripts' `VIRTUAL_ENV=...`. Restored at another
path, the environment still imports but its scripts run another environment's python, or none. The rules
here say what to rewrite and when a rewrite is not safe; runcache.client.pyenv.venv applies them.

Also the resolved-set arithmetic of a sync: what an installer's resolution asks for, what is installed,
what to remove. Pure functions only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

MARKER = ".runcache-pyenv.json"  # inside the environment: what runcache built it from and for
MARKER_SCHEMA = 1
# Linux reads at most this many bytes of a `#!` line (BINPRM_BUF_SIZE less the NUL); pip (distlib) and uv
# switch to the /bin/sh trampoline past it, and so does the rewrite.
SHEBANG_MAX = 127
# Activation scripts name the environment's path in a shell's quotes; these characters would need escaping
# in one of the shells (sh, csh, fish, nushell, cmd), so a path holding one is refused, never half-quoted.
_UNSAFE_IN_SCRIPTS = set("\"'`$\\!%\n\r\t\0")
_TRAMPOLINE = re.compile(rb"#!/bin/sh\n'''exec' (?P<q>[\"'])(?P<path>[^\"'\n]+)(?P=q) \"\$0\" \"\$@\"\n' '''\n")
_SHEBANG = re.compile(rb"#!(?P<path>[^\s]+)(?P<args>[^\n]*)\n")


def parse_pyvenv_cfg(text: str) -> dict[str, str]:
    """pyvenv.cfg as CPython's site.py reads it: `key = value` lines, keys lower-cased, others ignored."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


def unsafe_path_reason(path: str) -> str | None:
    """Why `path` cannot be written into launchers and activation scripts, or None when it can."""
    bad = sorted({c for c in path if c in _UNSAFE_IN_SCRIPTS})
    if bad:
        return f"it contains {', '.join(repr(c) for c in bad)}, which the activation scripts cannot quote safely"
    return None


def launcher_target(data: bytes) -> tuple[str, bytes, int] | None:
    """The interpreter a script's header runs: (path, shebang arguments, header length); None for other files."""
    m = _TRAMPOLINE.match(data)
    if m:
        return m.group("path").decode("utf-8", "surrogateescape"), b"", m.end()
    m = _SHEBANG.match(data)
    if m:
        return m.group("path").decode("utf-8", "surrogateescape"), m.group("args"), m.end()
    return None


def launcher_header(python: str, args: bytes = b"") -> bytes:
    """The header pip and uv would write for `python`: a plain shebang when the kernel can read it whole."""
    raw = python.encode("utf-8", "surrogateescape")
    plain = b"#!" + raw + args
    if len(plain) <= SHEBANG_MAX and not re.search(rb"\s", raw):
        return plain + b"\n"
    if args.strip():
        raise ValueError(f"a launcher of {python} with arguments {args!r} needs a longer shebang than the kernel reads")
    return b"#!/bin/sh\n'''exec' \"" + raw + b'" "$0" "$@"\n\' \'\'\'\n'


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _moved(path: str, old: str, new: str) -> str:
    return new + path[len(old.rstrip("/")) :] if path != old else new


def relocate_launcher(data: bytes, old_venv: str, new_venv: str) -> bytes | None:
    """`data` with its launcher pointed into `new_venv`; None when it does not launch `old_venv`'s python."""
    target = launcher_target(data)
    if target is None:
        return None
    path, args, end = target
    if not _within(path, old_venv):
        return None
    return launcher_header(_moved(path, old_venv, new_venv), args) + data[end:]


def relocate_text(data: bytes, old: str, new: str) -> bytes:
    """Every mention of the path `old` (not of a longer name that starts with it) replaced by `new`."""
    pattern = re.compile(re.escape(old.encode("utf-8", "surrogateescape")) + rb"(?![A-Za-z0-9._-])")
    replacement = new.encode("utf-8", "surrogateescape")
    return pattern.sub(lambda _m: replacement, data)


def is_activation_script(name: str) -> bool:
    return name.lower().startswith(("activate", "deactivate"))


@dataclass
class RelocationPlan:
    """New contents per file (relative to the environment), or why the environment cannot be moved."""

    rewrites: dict[str, bytes] = field(default_factory=dict)
    refused: str = ""


def plan_script_relocation(
    scripts: Mapping[str, bytes], old_venv: str, new_venv: str, plan: RelocationPlan | None = None
) -> RelocationPlan:
    """Rewrites for the files of the scripts folder (name → bytes, `bin/flask` style names).

    A launcher of the old environment's python gets a new header; an activation script gets the new path
    wherever it names the old one. Any other file that still names the old path (a hand-written script,
    a binary with the path compiled in) cannot be fixed by rule, so the whole move is refused.
    """
    plan = plan or RelocationPlan()
    if plan.refused:
        return plan
    reason = unsafe_path_reason(new_venv)
    if reason:
        plan.refused = f"the new path {new_venv!r} cannot go into the environment's scripts: {reason}"
        return plan
    needle = old_venv.encode("utf-8", "surrogateescape")
    for name, data in sorted(scripts.items()):
        if needle not in data:
            continue
        try:
            new = relocate_launcher(data, old_venv, new_venv)
        except ValueError as exc:
            plan.refused = f"{name}: {exc}"
            return plan
        if new is None and is_activation_script(name.rsplit("/", 1)[-1]):
            new = relocate_text(data, old_venv, new_venv)
        if new is None or needle in new.replace(new_venv.encode("utf-8", "surrogateescape"), b""):
            plan.refused = f"{name} names {old_venv} in a way runcache cannot rewrite safely"
            return plan
        plan.rewrites[name] = new
    return plan


def relocate_pyvenv_cfg(text: str, old_venv: str, new_venv: str) -> str:
    """pyvenv.cfg with the environment's own path moved (venv records it in `command`); `home` is untouched."""
    out = []
    for line in text.splitlines(keepends=True):
        key = line.partition("=")[0].strip().lower()
        if key != "home":
            line = relocate_text(line.encode("utf-8", "surrogateescape"), old_venv, new_venv).decode(
                "utf-8", "surrogateescape"
            )
        out.append(line)
    return "".join(out)


# --- resolved sets ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    """One distribution a resolution asks for: its version, or for a direct reference (`name @ url`) none."""

    name: str  # canonical
    version: str | None
    url: str = ""


def canonical_name(name: str) -> str:
    """A distribution's PEP 503 name. packaging is imported on first use: only a sync lists or compares
    distributions, and its import is start-up an exact hit never needs."""
    from packaging.utils import canonicalize_name

    return canonicalize_name(name)


def _same_version(a: str, b: str) -> bool:
    from packaging.version import InvalidVersion, Version  # here: see canonical_name

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def pins_from_pip_report(report: Mapping[str, object]) -> dict[str, Pin]:
    """`pip install --dry-run --ignore-installed --report` → the complete set a fresh install would have."""
    pins: dict[str, Pin] = {}
    for item in report.get("install") or []:  # type: ignore[union-attr]
        meta = item["metadata"]
        name = canonical_name(meta["name"])
        url = ""
        if item.get("is_direct"):
            url = (item.get("download_info") or {}).get("url", "")
        pins[name] = Pin(name, None if url else meta["version"], url)
    return pins


def pins_from_compiled(text: str) -> dict[str, Pin]:
    """`uv pip compile` output (`name==version` lines, `name @ url` for direct references) → the set."""
    # packaging's parser is imported where a sync needs it: an exact hit never does, and it is ~10-20 ms of
    # start-up for every `runcache pip install`.
    from packaging.requirements import InvalidRequirement, Requirement

    pins: dict[str, Pin] = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            raise ValueError(f"cannot read the resolved requirement {line!r}") from None
        name = canonical_name(req.name)
        exact = [s.version for s in req.specifier if s.operator in ("==", "===")]
        pins[name] = Pin(name, None if req.url else (exact[0] if exact else None), req.url or "")
    return pins


def pin_lines(pins: Mapping[str, Pin]) -> str:
    """A constraints file holding the resolution's versions (direct references stay with the requirement)."""
    return "".join(f"{p.name}=={p.version}\n" for p in sorted(pins.values(), key=lambda p: p.name) if p.version)


@dataclass
class SyncPlan:
    remove: list[str] = field(default_factory=list)  # installed, asked for by nothing
    reinstall: dict[str, str] = field(default_factory=dict)  # missing or at another version: name → version


def desired_set(pins: Mapping[str, Pin], seed: Mapping[str, str]) -> dict[str, Pin]:
    """What a fresh environment synced to `pins` holds: the pins, and the installer's own seed packages
    (pip and, on older Pythons, setuptools, as `python -m venv` installs them) that the pins do not name."""
    out = dict(pins)
    for name, version in seed.items():
        canonical = canonical_name(name)
        out.setdefault(canonical, Pin(canonical, version))
    return out


def plan_sync(installed: Mapping[str, str], desired: Mapping[str, Pin]) -> SyncPlan:
    """What remains once the installer installed the resolution over a restored environment: what nothing
    asks for any more, and seed packages a previous set had changed (the resolution does not name them)."""
    plan = SyncPlan()
    plan.remove = [name for name in sorted(installed) if name not in desired]
    for name, pin in sorted(desired.items()):
        have = installed.get(name)
        if pin.version is not None and (have is None or not _same_version(have, pin.version)):
            plan.reinstall[name] = pin.version
    return plan


def differences(installed: Mapping[str, str], desired: Mapping[str, Pin]) -> list[str]:
    """How the environment differs from the set it must be exactly (empty: it is that set)."""
    out = []
    for name, pin in sorted(desired.items()):
        have = installed.get(name)
        if have is None:
            out.append(f"{name} is missing")
        elif pin.version is not None and not _same_version(have, pin.version):
            out.append(f"{name} is {have}, not {pin.version}")
    out += [f"{name} {installed[name]} is not asked for" for name in sorted(installed) if name not in desired]
    return out


def changes(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, list[str]]:
    """The sync as a person reads it: added, removed and changed distributions."""
    return {
        "added": [f"{n}=={after[n]}" for n in sorted(after) if n not in before],
        "removed": [f"{n}=={before[n]}" for n in sorted(before) if n not in after],
        "changed": [f"{n} {before[n]} -> {after[n]}" for n in sorted(after) if n in before and before[n] != after[n]],
    }
