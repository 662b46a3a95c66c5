"""Which files a cache `path` input names, exactly as @actions/cache resolves it.

@actions/cache globs its `path` lines with @actions/glob (implicitDescendants=false,
matchDirectories=true, symlinks followed, dangling links omitted): a matched directory is
archived whole by tar, and `!` exclusions only remove items matched at the same level. The
pattern rules are shared with hashFiles() (runcache.core.hashfiles); this module only walks.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from runcache.client.hashfiles import homedir_js, sorted_entries
from runcache.core.hashfiles import GlobPlan, MatchKind, directory_base, from_js, to_js

_DIRECTORY = int(MatchKind.DIRECTORY)
_FILE = int(MatchKind.FILE)


def _plan(patterns: list[str], cwd: Path) -> GlobPlan:
    return GlobPlan.create(
        "\n".join(to_js(p) for p in patterns), cwd=to_js(str(cwd)), homedir=homedir_js, implicit_descendants=False
    )


def resolve_cache_paths(patterns: list[str], workspace: Path, cwd: Path | None = None) -> list[str]:
    """The tar manifest: matched paths relative to `workspace` ('.' for the workspace itself, '../' outside)."""
    plan = _plan(patterns, cwd or Path.cwd())
    found: list[str] = []
    for search_path in plan.search_paths:
        root = from_js(search_path)
        if not os.path.lexists(root):
            continue
        stack: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [(root, tuple(search_path.split("/")), ())]
        while stack:
            path, segs, chain = stack.pop()
            kind = plan.match(segs)
            if not kind and not plan.partial_match(segs):
                continue
            try:
                mode = os.stat(path).st_mode  # follows symlinks, as followSymbolicLinks=true does
            except FileNotFoundError:
                continue  # omitBrokenSymbolicLinks
            if stat.S_ISDIR(mode):
                real = os.path.realpath(path)
                if real in chain:
                    continue  # a symlink cycle is walked once
                if kind & _DIRECTORY:
                    found.append(path)
                elif not plan.partial_match(segs):
                    continue
                base = directory_base(segs)
                for entry in reversed(sorted_entries(path)):
                    stack.append((os.path.join(path, entry.name), (*base, to_js(entry.name)), (*chain, real)))
            elif kind & _FILE:
                found.append(path)
    members = []
    for path in found:
        rel = os.path.relpath(path, workspace).replace(os.sep, "/")
        members.append("." if rel == "." else rel)
    return members


def restore_roots(patterns: list[str], cwd: Path | None = None) -> list[Path]:
    """Where a restore may write: the literal roots of the non-negated patterns (a glob's fixed prefix)."""
    plan = _plan(patterns, cwd or Path.cwd())
    return [Path(from_js(p)) for p in plan.search_paths]
