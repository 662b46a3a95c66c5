"""What a built-in action sees: its inputs (with ``@actions/core`` semantics), state, outputs, a log, the cache."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runcache.runner.endpoint import CacheEndpoint


class ActionFailed(Exception):
    """``core.setFailed``: the step fails with this message."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    default: str | None = None  # may hold ${{ }} (evaluated like the action.yml default)
    required: bool = False  # as declared in action.yml (the runner does not enforce it; getInput does)
    deprecation: str | None = None


@dataclass
class CacheRecord:
    """One cache operation for the run summary."""

    step: str
    operation: str  # restore | save | lookup
    key: str
    result: str  # hit | restore-key | miss | saved | skipped | failed | not-saved
    restore_keys: list[str] = field(default_factory=list)
    matched_key: str = ""
    bytes: int = 0
    seconds: float = 0.0
    message: str = ""
    paths: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "operation": self.operation,
            "key": self.key,
            "restore_keys": self.restore_keys,
            "matched_key": self.matched_key,
            "result": self.result,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "message": self.message,
            "paths": self.paths,
        }


class BuiltinAction:
    """One action. ``main`` runs as the step; ``post`` (when ``has_post``) runs after the job's steps."""

    repository = ""  # e.g. actions/cache/restore
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[str, ...] = ()
    has_post = False
    post_if = "always()"

    def main(self, ctx: ActionContext) -> None:
        raise NotImplementedError

    def post(self, ctx: ActionContext) -> None:  # pragma: no cover - only for actions with has_post
        pass


@dataclass
class ActionContext:
    """The action's view of its step; the engine fills it in and reads outputs, state and env back."""

    step_name: str
    inputs: dict[str, str]  # lower-cased input name -> value (defaults applied, not trimmed)
    workspace: Path
    temp: Path
    env: dict[str, str]  # the step's process environment
    github: Mapping[str, Any]
    runner: Mapping[str, Any]
    state: dict[str, str] = field(default_factory=dict)  # main: what it saved; post: what main saved
    cache: CacheEndpoint | None = None
    log: Callable[[str], None] = print
    annotate: Callable[[str, str], None] = lambda level, message: print(f"{level}: {message}")
    hash_files: Callable[[list[str]], str] | None = None
    tool_cache: Path | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    exported_env: dict[str, str] = field(default_factory=dict)
    added_paths: list[str] = field(default_factory=list)
    cache_records: list[CacheRecord] = field(default_factory=list)
    progress: Callable[[str], None] | None = None
    explicit_inputs: set[str] = field(default_factory=set)  # lower-cased names the workflow's with: gave
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # run at the end of the job

    # --- @actions/core -----------------------------------------------------------------------
    def get_input(self, name: str, *, required: bool = False, trim: bool = True) -> str:
        value = self.inputs.get(name.lower(), "") or ""
        if required and not value:
            raise ActionFailed(f"Input required and not supplied: {name}")
        return value.strip() if trim else value

    def get_multiline(self, name: str, *, required: bool = False) -> list[str]:
        value = self.get_input(name, required=required, trim=False)
        return [line.strip() for line in value.split("\n") if line.strip()]

    def get_bool(self, name: str) -> bool:
        """actions/cache's ``getInputAsBool``: true only for ``true`` in any case."""
        return self.get_input(name).lower() == "true"

    def get_yaml_bool(self, name: str, default: bool = False) -> bool:
        """``core.getBooleanInput``: the YAML 1.2 core booleans, anything else is an error."""
        value = self.get_input(name)
        if not value:
            return default
        if value in ("true", "True", "TRUE"):
            return True
        if value in ("false", "False", "FALSE"):
            return False
        raise ActionFailed(
            f'Input does not meet YAML 1.2 "Core Schema" specification: {name}\n'
            "Support boolean input list: `true | True | TRUE | false | False | FALSE`"
        )

    def set_output(self, name: str, value: Any) -> None:
        self.outputs[name] = value if isinstance(value, str) else _js_string(value)

    def save_state(self, name: str, value: Any) -> None:
        self.state[name] = value if isinstance(value, str) else _js_string(value)

    def get_state(self, name: str) -> str:
        for key, value in self.state.items():
            if key.lower() == name.lower():
                return value
        return ""

    def export_variable(self, name: str, value: str) -> None:
        self.exported_env[name] = value
        self.env[name] = value

    def add_path(self, path: str) -> None:
        self.added_paths.append(path)
        self.env["PATH"] = path + ":" + self.env.get("PATH", "")

    def info(self, message: str) -> None:
        for line in str(message).split("\n"):
            self.log(line)

    def warning(self, message: str) -> None:
        self.annotate("warning", message)

    def error(self, message: str) -> None:
        self.annotate("error", message)

    def notice(self, message: str) -> None:
        self.annotate("notice", message)

    def record(self, record: CacheRecord) -> None:
        self.cache_records.append(record)

    def run(self, argv: list[str], *, cwd: Path | None = None, check: bool = True, quiet: bool = False) -> str:
        """Run a helper command with the step's environment; its output goes to the step log."""
        proc = subprocess.run(
            argv,
            cwd=str(cwd or self.workspace),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        if not quiet:
            for line in proc.stdout.splitlines():
                self.log(line)
        if check and proc.returncode != 0:
            shown = " ".join(argv)
            detail = "" if not quiet else "\n" + proc.stdout.strip()
            raise ActionFailed(f"The process '{shown}' failed with exit code {proc.returncode}{detail}")
        return proc.stdout


def _js_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)
