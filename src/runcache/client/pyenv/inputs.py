"""The files that decide an environment, read for its key: requirement files with the `-r` / `-c` files they
include (followed the way pip follows them: relative to the including file), the command line's own
requirements, and the project's dependency declarations and lock files when present."""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from runcache.core.pyenv import (
    PROJECT_FILES,
    PYLOCK_PATTERN,
    RequirementInput,
    RequirementsError,
    canonical_json,
    project_dependency_view,
    requirement_includes,
)


def collect_inputs(
    requirements: list[str], constraints: list[str], project_dir: Path, environ: Mapping[str, str]
) -> list[RequirementInput]:
    found: list[RequirementInput] = []
    seen: set[tuple[str, str]] = set()

    def visit(path: Path, role: str, label: str) -> None:
        try:
            real = str(path.resolve(strict=True))
        except (FileNotFoundError, RuntimeError):
            raise RequirementsError(f"{label}: no such requirements file") from None
        if (real, role) in seen:  # an include cycle, or one file included twice: hashed once
            return
        seen.add((real, role))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RequirementsError(f"cannot read {label}: {exc.strerror or exc}") from None
        found.append(RequirementInput(role, label, data))
        for sub_role, sub in requirement_includes(data.decode("utf-8", "replace"), environ):
            child = Path(sub) if os.path.isabs(sub) else path.parent / sub
            # pip reads every file a constraints file pulls in as constraints too.
            visit(child, "constraints" if role == "constraints" else sub_role, str(child))

    for name in requirements:
        visit(Path(name), "requirements", name)
    for name in constraints:
        visit(Path(name), "constraints", name)
    names = list(PROJECT_FILES)
    with contextlib.suppress(OSError):
        names += sorted(e.name for e in os.scandir(project_dir) if PYLOCK_PATTERN.fullmatch(e.name))
    for name in names:
        path = project_dir / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        if name == "pyproject.toml":
            # Unreadable as TOML, every byte counts.
            with contextlib.suppress(tomllib.TOMLDecodeError, UnicodeDecodeError):
                data = canonical_json(project_dependency_view(tomllib.loads(data.decode("utf-8"))))
        found.append(RequirementInput("project" if name == "pyproject.toml" else "lock", name, data))
    return found
