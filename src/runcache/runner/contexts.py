"""Which expression contexts each workflow field may use, and the runner's default contexts and env vars.

GitHub makes a different set of contexts available to each field (``steps`` only inside a job's
steps, ``secrets`` not in ``if:``, no ``env`` in a job's ``env``...); an unknown name is a parse
error there, and the same here, so a workflow that runs under ``runcache run`` also parses on GitHub.
"""

from __future__ import annotations

import os
import platform
from typing import Any

_GITHUB = ("github", "vars", "inputs")
FIELD_CONTEXTS: dict[str, tuple[str, ...]] = {
    "workflow:env": (*_GITHUB, "secrets"),
    "job:if": (*_GITHUB, "needs"),
    "job:name": (*_GITHUB, "needs", "strategy", "matrix"),
    "job:env": (*_GITHUB, "needs", "strategy", "matrix", "secrets"),
    "job:other": (*_GITHUB, "needs", "strategy", "matrix", "secrets"),
    "job:defaults": (*_GITHUB, "needs", "strategy", "matrix", "env"),
    "job:outputs": (*_GITHUB, "needs", "strategy", "matrix", "job", "runner", "env", "secrets", "steps"),
    "step:if": (*_GITHUB, "needs", "strategy", "matrix", "job", "runner", "env", "steps"),
    "step:name": (*_GITHUB, "needs", "strategy", "matrix", "job", "runner", "env", "secrets", "steps"),
    "step:env": (*_GITHUB, "needs", "strategy", "matrix", "job", "runner", "env", "secrets", "steps"),
    "step:run": (*_GITHUB, "needs", "strategy", "matrix", "job", "runner", "env", "secrets", "steps"),
    "step:other": (*_GITHUB, "needs", "strategy", "matrix", "job", "runner", "env", "secrets", "steps"),
}
STATUS_FIELDS = frozenset({"job:if", "step:if"})


def placeholder_contexts(names: tuple[str, ...]) -> dict[str, Any]:
    return {name: {} for name in names}


def select(contexts: dict[str, Any], field_kind: str) -> dict[str, Any]:
    """The subset of ``contexts`` a field may see."""
    return {name: contexts.get(name, {}) for name in FIELD_CONTEXTS[field_kind]}


def runner_os() -> str:
    system = platform.system()
    return {"Linux": "Linux", "Darwin": "macOS", "Windows": "Windows"}.get(system, system)


def runner_arch() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "X64"
    if machine in ("i386", "i686", "x86"):
        return "X86"
    if machine in ("aarch64", "arm64"):
        return "ARM64"
    if machine.startswith("arm"):
        return "ARM"
    return machine.upper()


def node_arch() -> str:
    """``process.arch`` as Node reports it (setup-python puts it in cache keys)."""
    return {"X64": "x64", "X86": "ia32", "ARM64": "arm64", "ARM": "arm"}.get(runner_arch(), platform.machine())


GITHUB_ENV_KEYS = (
    "action",
    "action_path",
    "action_ref",
    "action_repository",
    "actor",
    "actor_id",
    "api_url",
    "base_ref",
    "event_name",
    "event_path",
    "graphql_url",
    "head_ref",
    "job",
    "ref",
    "ref_name",
    "ref_protected",
    "ref_type",
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "retention_days",
    "run_attempt",
    "run_id",
    "run_number",
    "server_url",
    "sha",
    "triggering_actor",
    "workflow",
    "workflow_ref",
    "workflow_sha",
    "workspace",
)


def default_env(github: dict[str, Any], runner: dict[str, Any], base: dict[str, str]) -> dict[str, str]:
    """``CI``, ``GITHUB_*`` and ``RUNNER_*`` as the runner sets them for every step."""
    env: dict[str, str] = {}
    if "CI" not in base:
        env["CI"] = "true"
    env["GITHUB_ACTIONS"] = "true"
    for key in GITHUB_ENV_KEYS:
        value = github.get(key)
        if value is None:
            value = ""
        env["GITHUB_" + key.upper()] = str(value) if not isinstance(value, bool) else str(value).lower()
    for key in ("os", "arch", "name", "environment", "tool_cache", "temp", "workspace"):
        if runner.get(key) is not None:
            env["RUNNER_" + key.upper()] = str(runner[key])
    if runner.get("debug"):
        env["RUNNER_DEBUG"] = "1"
    return env


def host_name() -> str:
    try:
        return os.uname().nodename
    except AttributeError:  # pragma: no cover - Windows
        return platform.node()
