"""What a local run knows about its repository: root, commit, branch, OWNER/NAME, default branch, actor."""

from __future__ import annotations

import getpass
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ZERO_SHA = "0" * 40
_REMOTE_RE = re.compile(r"(?:[:/])([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?$")


@dataclass
class RepoInfo:
    root: Path
    is_git: bool
    sha: str
    branch: str | None  # None when detached or not a git repository
    repository: str  # OWNER/NAME
    default_branch: str
    actor: str


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip()


def git_toplevel(path: Path) -> Path | None:
    out = _git(path, "rev-parse", "--show-toplevel")
    return Path(out) if out else None


def repository_from_remote(url: str) -> str | None:
    m = _REMOTE_RE.search(url.strip())
    if not m:
        return None
    return f"{m.group(1)}/{m.group(2)}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "repo"


def discover(root: Path) -> RepoInfo:
    root = root.resolve()
    top = git_toplevel(root)
    is_git = top is not None
    sha = (_git(root, "rev-parse", "HEAD") if is_git else None) or ZERO_SHA
    branch = _git(root, "symbolic-ref", "--short", "-q", "HEAD") if is_git else None
    remote = _git(root, "remote", "get-url", "origin") if is_git else None
    repository = repository_from_remote(remote) if remote else None
    if not repository:
        repository = f"local/{_slug(root.name)}"
    default_branch = "main"
    if is_git:
        head = _git(root, "symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD")
        if head and "/" in head:
            default_branch = head.split("/", 1)[1]
        elif (
            _git(root, "rev-parse", "-q", "--verify", "refs/heads/main") is None
            and _git(root, "rev-parse", "-q", "--verify", "refs/heads/master") is not None
        ):
            default_branch = "master"
    actor = (_git(root, "config", "user.name") if is_git else None) or _user()
    return RepoInfo(root, is_git, sha, branch or None, repository, default_branch, actor)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "runner"


def ref_name(ref: str) -> str:
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    if ref.startswith("refs/pull/"):
        return ref[len("refs/pull/") :]
    return ref


def ref_type(ref: str) -> str:
    return "tag" if ref.startswith("refs/tags/") else "branch"


def normalize_ref(ref: str) -> str:
    ref = ref.strip()
    if ref.startswith("refs/"):
        return ref
    return f"refs/heads/{ref}"
