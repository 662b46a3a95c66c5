"""Running one job on the host, step by step, with the GitHub runner's semantics.

* Conditions: ``if:`` with the implicit ``success() &&``; the job status starts as success and turns to
  failure when a step fails without ``continue-on-error`` (then ``outcome`` is failure but
  ``conclusion`` success and the job goes on as if it had succeeded).
* Values: ``${{ }}`` in ``name``, ``env``, ``with``, ``run``, ``shell``, ``working-directory``,
  ``continue-on-error`` and ``timeout-minutes``, evaluated right before the step runs (so
  ``hashFiles()`` sees the workspace as it is then), with the contexts GitHub allows in each field.
* Environment: host env, then workflow/job env, ``$GITHUB_ENV`` values, the step's ``env``, then the
  runner's ``CI``/``GITHUB_*``/``RUNNER_*``; ``$GITHUB_PATH`` entries go first on ``PATH``.
* File commands are read after every step, failed or not; post steps of actions run after the last
  step in reverse order of registration, each under its action's ``post-if``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runcache.runner import contexts as ctxmod
from runcache.runner import jobpython
from runcache.runner.actions.base import ActionContext, ActionFailed, BuiltinAction, CacheRecord
from runcache.runner.actions.registry import resolve_action, split_uses, unsupported_message
from runcache.runner.commands import Annotation, CommandEffects, CommandParser, Masker
from runcache.runner.expressions import (
    CaseSensitiveDict,
    ExpressionError,
    ExpressionFunctions,
    evaluate,
    evaluate_if,
    evaluate_template,
    interpolate,
)
from runcache.runner.filecommands import FileCommands
from runcache.runner.shells import ShellError, resolve_shell
from runcache.runner.workflow import Job, Step, Workflow, value_string

DEFAULT_JOB_TIMEOUT_MINUTES = 360.0
KILL_GRACE_SECONDS = 5.0
# Variables of an enclosing CI job that must not leak into the steps of a local run.
_HOST_PREFIXES = ("GITHUB_", "RUNNER_", "ACTIONS_", "INPUT_", "STATE_")


class StepError(Exception):
    """The step fails with this message (shown as an error annotation)."""


class Reporter(Protocol):
    def job_started(self, job: JobRun) -> None: ...
    def step_started(self, rec: StepRecord) -> None: ...
    def step_line(self, rec: StepRecord, text: str, kind: str = "text") -> None: ...
    def step_progress(self, rec: StepRecord, text: str) -> None: ...
    def step_finished(self, rec: StepRecord) -> None: ...
    def job_finished(self, result: JobResult) -> None: ...


@dataclass
class RunOptions:
    """Everything about the run that is not in the workflow file."""

    workflow: Workflow
    workspace: Path
    repository: str
    sha: str
    ref: str
    default_branch: str = "main"
    actor: str = "runner"
    event_name: str = "push"
    event: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    vars: dict[str, str] = field(default_factory=dict)
    base_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    cache: Any = None  # CacheEndpoint | None
    log_dir: Path | None = None
    tool_cache: Path | None = None
    run_id: str = "1"
    run_number: str = "1"
    run_attempt: str = "1"
    keep_temp: bool = False
    debug: bool = False
    server_url: str = "https://github.com"
    base_ref: str = ""
    head_ref: str = ""
    # A fresh virtual environment per job, first on PATH (runcache run's default; --host-python turns it off).
    job_python: bool = False
    pip_seed_cache: Path | None = None  # where the unpacked pip for those environments is kept


@dataclass
class StepRecord:
    number: int
    stage: str  # main | post
    name: str
    step: Step | None = None
    id: str | None = None
    outcome: str | None = None  # success | failure | cancelled | skipped
    conclusion: str | None = None
    started: float = 0.0
    duration: float = 0.0
    log_path: Path | None = None
    annotations: list[Annotation] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    caches: list[CacheRecord] = field(default_factory=list)
    continue_on_error: bool = False
    timed_out: bool = False
    summary: str = ""
    lines: int = 0

    @property
    def failed(self) -> bool:
        return self.outcome in ("failure", "cancelled")

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "stage": self.stage,
            "name": self.name,
            "id": self.id,
            "line": self.step.line if self.step else None,
            "outcome": self.outcome,
            "conclusion": self.conclusion,
            "duration": round(self.duration, 3),
            "timed_out": self.timed_out,
            "outputs": self.outputs,
            "annotations": [a.as_json() for a in self.annotations],
            "log": str(self.log_path) if self.log_path else None,
        }


@dataclass
class JobResult:
    job_id: str
    name: str
    result: str  # success | failure | cancelled | skipped
    duration: float
    steps: list[StepRecord]
    outputs: dict[str, str] = field(default_factory=dict)
    matrix: dict[str, Any] | None = None
    summary: str = ""
    error: str = ""
    log_dir: Path | None = None
    allowed_failure: bool = False  # failed, but the job has continue-on-error: true
    notes: list[str] = field(default_factory=list)  # warnings about the job's set-up (its Python environment)

    @property
    def caches(self) -> list[CacheRecord]:
        return [c for s in self.steps for c in s.caches]

    def as_json(self) -> dict[str, Any]:
        return {
            "job": self.job_id,
            "name": self.name,
            "matrix": self.matrix,
            "result": self.result,
            "continue_on_error": self.allowed_failure,
            "duration": round(self.duration, 3),
            "error": self.error,
            "outputs": self.outputs,
            "steps": [s.as_json() for s in self.steps],
            "caches": [c.as_json() for c in self.caches],
            "summary": self.summary,
            "notes": self.notes,
            "logs": str(self.log_dir) if self.log_dir else None,
        }


@dataclass
class _Post:
    step: Step
    action: BuiltinAction
    state: dict[str, str]
    name: str


class _StepLog:
    """The sink for one step's output: masks, parses workflow commands, writes the log file, tells the reporter."""

    def __init__(self, run: JobRun, rec: StepRecord, effects: CommandEffects | None = None) -> None:
        self.run = run
        self.rec = rec
        self.effects = effects or CommandEffects()
        self.parser = CommandParser(
            self.effects,
            allow_unsecure=run.base_env_value("ACTIONS_ALLOW_UNSECURE_COMMANDS") == "true",
            debug=run.opts.debug,
        )
        self.lock = threading.RLock()
        self.closed = False
        self._seen = 0
        self.file = open(rec.log_path, "w", encoding="utf-8") if rec.log_path else None  # noqa: SIM115

    def header(self, text: str) -> None:
        self._emit(text, "header")

    def output(self, text: str) -> None:
        """A line the step's process printed (workflow commands are interpreted)."""
        with self.lock:
            if self.closed:
                return
            parsed = self.parser.feed(text)
            for mask in self.effects.masks:
                self.run.masker.add(mask)
            self.effects.masks.clear()
            new = self.effects.annotations[self._seen :]
            self._seen = len(self.effects.annotations)
            for annotation in new:
                annotation.message = self.run.masker(annotation.message)
                self.rec.annotations.append(annotation)
                if parsed.kind != "annotation":
                    self._emit(annotation.render(), "annotation")
            if parsed.display is not None:
                self._emit(parsed.display, parsed.kind)

    def info(self, text: str) -> None:
        self._emit(text, "text")

    def annotate(self, level: str, message: str) -> None:
        message = self.run.masker(message)
        self.rec.annotations.append(Annotation(level, message))
        self._emit(Annotation(level, message).render(), "annotation")

    def _emit(self, text: str, kind: str) -> None:
        text = self.run.masker(text)
        with self.lock:
            if self.file:
                prefix = "▸ " if kind == "group" else ""
                self.file.write(prefix + text + "\n")
                self.file.flush()
            self.rec.lines += 1
        self.run.reporter.step_line(self.rec, text, kind)

    def detach(self) -> None:
        """Stop showing the process's output (a background process kept the pipe open)."""
        with self.lock:
            self.closed = True

    def close(self) -> None:
        with self.lock:
            self.closed = True
            if self.file:
                self.file.close()
                self.file = None


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:limit] or "step"


def clean_host_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(_HOST_PREFIXES)}


class JobRun:
    def __init__(
        self,
        opts: RunOptions,
        job: Job,
        reporter: Reporter,
        *,
        matrix: dict[str, Any] | None = None,
        strategy: dict[str, Any] | None = None,
        needs: dict[str, Any] | None = None,
        needs_status: Callable[[str], bool] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.opts = opts
        self.workflow = opts.workflow
        self.job = job
        self.reporter = reporter
        self.matrix = matrix
        self.strategy = strategy or {"fail-fast": True, "job-index": 0, "job-total": 1, "max-parallel": 1}
        self.needs = needs or {}
        self.needs_status = needs_status
        self.workspace = opts.workspace.resolve()
        self.base_env = clean_host_env(opts.base_env)
        self.masker = Masker([v for v in opts.secrets.values() if v])
        self.status = "success"
        self.job_env: dict[str, str] = {}
        self.global_env: dict[str, str] = {}
        self.path_prepend: list[str] = []
        self.steps_ctx: dict[str, Any] = {}
        self.records: list[StepRecord] = []
        self.posts: list[_Post] = []
        self.summaries: list[str] = []
        self.notes: list[str] = []
        self.cleanups: list[Callable[[], None]] = []
        self.pgids: list[int] = []
        self.interrupts = 0
        self.deadline: float | None = None
        self.job_timed_out = False
        self.name = job.name or job.id
        self.log_dir = log_dir
        self._temp_root: Path | None = None
        self.temp = Path()
        self.job_venv: Path | None = None
        self.github: dict[str, Any] = {}
        self.runner_ctx: dict[str, Any] = {}

    def base_env_value(self, name: str) -> str:
        return self.opts.base_env.get(name, "")

    # --- contexts ------------------------------------------------------------------------------
    def _setup_contexts(self) -> None:
        o = self.opts
        owner = o.repository.split("/", 1)[0]
        wf_rel = self._workflow_relpath()
        self.github = {
            "action": "",
            "action_path": "",
            "action_ref": "",
            "action_repository": "",
            "action_status": "",
            "actor": o.actor,
            "actor_id": "0",
            "api_url": "https://api.github.com",
            "base_ref": o.base_ref,
            "env": "",
            "event": o.event,
            "event_name": o.event_name,
            "event_path": str(self.temp.parent / "_github_workflow" / "event.json"),
            "graphql_url": "https://api.github.com/graphql",
            "head_ref": o.head_ref,
            "job": self.job.id,
            "path": "",
            "ref": o.ref,
            "ref_name": _ref_name(o.ref),
            "ref_protected": False,
            "ref_type": "tag" if o.ref.startswith("refs/tags/") else "branch",
            "repository": o.repository,
            "repository_id": "0",
            "repository_owner": owner,
            "repository_owner_id": "0",
            "repositoryUrl": f"git://github.com/{o.repository}.git",
            "retention_days": "90",
            "run_attempt": o.run_attempt,
            "run_id": o.run_id,
            "run_number": o.run_number,
            "secret_source": "None",
            "server_url": o.server_url,
            "sha": o.sha,
            "token": o.secrets.get("GITHUB_TOKEN", ""),
            "triggering_actor": o.actor,
            "workflow": self.workflow.name or wf_rel,
            "workflow_ref": f"{o.repository}/{wf_rel}@{o.ref}",
            "workflow_sha": o.sha,
            "workspace": str(self.workspace),
        }
        self.runner_ctx = {
            "name": "runcache",
            "os": ctxmod.runner_os(),
            "arch": ctxmod.runner_arch(),
            "temp": str(self.temp),
            "tool_cache": str(self.tool_cache),
            "workspace": str(self.workspace.parent),
            "environment": "self-hosted",
            "debug": "1" if o.debug else "",
        }
        if not o.debug:
            del self.runner_ctx["debug"]

    def _workflow_relpath(self) -> str:
        path = self.workflow.path
        with contextlib.suppress(ValueError):
            return str(path.resolve().relative_to(self.workspace))
        return path.name

    def _contexts(self, env_ctx: dict[str, str]) -> dict[str, Any]:
        return {
            "github": self.github,
            "env": CaseSensitiveDict(env_ctx),
            "vars": dict(self.opts.vars),
            "job": {"status": self.status, "container": {"id": "", "network": ""}, "services": {}},
            "steps": self.steps_ctx,
            "runner": self.runner_ctx,
            "secrets": {"GITHUB_TOKEN": self.opts.secrets.get("GITHUB_TOKEN", ""), **self.opts.secrets},
            "strategy": self.strategy,
            "matrix": self.matrix or {},
            "needs": self.needs,
            "inputs": self.opts.inputs,
        }

    def _env_context(self) -> dict[str, str]:
        return {**self.job_env, **self.global_env}

    def _functions(self, status: str | None = None) -> ExpressionFunctions:
        return ExpressionFunctions.for_job_status(status or self.status, hash_files=self._hash_files)  # type: ignore[arg-type]

    def _hash_files(self, patterns: list[str]) -> str:
        from runcache.client.hashfiles import hash_files

        return hash_files(patterns, self.workspace)

    def _eval_str(self, text: str, ctx: dict[str, Any], kind: str, what: str) -> str:
        try:
            functions = self._functions() if kind.startswith("step") else None
            return interpolate(text, ctxmod.select(ctx, kind), functions)
        except ExpressionError as exc:
            raise StepError(f"{what}: {exc}") from None

    def _eval_map(self, values: dict[str, str], ctx: dict[str, Any], kind: str, what: str) -> dict[str, str]:
        return {k: self._eval_str(v, ctx, kind, f"{what}.{k}") for k, v in values.items()}

    def _process_env(self, env_ctx: dict[str, str], files: FileCommands | None = None) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(env_ctx)
        env.update(ctxmod.default_env(self.github, self.runner_ctx, {**self.opts.base_env, **env_ctx}))
        for name in ("ENV", "OUTPUT", "PATH", "STATE", "STEP_SUMMARY"):
            env.pop(f"GITHUB_{name}", None)
        if files:
            env.update(files.env())
        path = env.get("PATH") or os.defpath
        if self.job_venv is not None:
            path = jobpython.job_path(self.job_venv / "bin", path)
        if self.path_prepend:
            path = os.pathsep.join([*reversed(self.path_prepend), path])
        env["PATH"] = path
        env["HOME"] = env.get("HOME") or os.path.expanduser("~")
        if self.job_venv is not None:
            # The host's VIRTUAL_ENV (runcache's own, often) must not steer pip, uv or poetry; the job's
            # environment is named while its python is the one on PATH (setup-python may put another first).
            for name in ("VIRTUAL_ENV", "PYTHONHOME"):
                if name not in env_ctx:
                    env.pop(name, None)
            if "VIRTUAL_ENV" not in env_ctx:
                first = shutil.which("python", path=path)
                if first and os.path.dirname(first) == str(self.job_venv / "bin"):
                    env["VIRTUAL_ENV"] = str(self.job_venv)
        return env

    def _make_job_python(self) -> None:
        """The job's own virtual environment (``opts.job_python``); on failure a warning and the host's PATH."""
        assert self._temp_root is not None
        reporter_note = getattr(self.reporter, "note", None)

        def note(message: str) -> None:
            if reporter_note:
                reporter_note(f"  {message}")

        try:
            made = jobpython.create(self._temp_root / "venv", seed_cache=self.opts.pip_seed_cache, note=note)
        except jobpython.JobPythonError as exc:
            self.notes.append(f"warning: {exc}; the job's steps use the python on the host's PATH")
        else:
            self.job_venv = made.root
            if made.warning:
                self.notes.append(f"warning: {made.warning}")
        for message in self.notes:
            note(message)

    # --- job -----------------------------------------------------------------------------------
    def run(self) -> JobResult:
        started = time.monotonic()
        self._temp_root = Path(tempfile.mkdtemp(prefix="runcache-run-"))
        self.temp = self._temp_root / "_temp"
        self.temp.mkdir()
        self.tool_cache = self.opts.tool_cache or (self._temp_root / "_tool")
        self._setup_contexts()
        self._write_event()
        error = ""
        try:
            base_ctx = self._contexts({})
            if self.job.name:
                with contextlib.suppress(ExpressionError):
                    self.name = interpolate(self.job.name, ctxmod.select(base_ctx, "job:name"))
            elif self.matrix:
                self.name = f"{self.job.id} ({', '.join(value_string(v) for v in _flat_values(self.matrix))})"
            self.reporter.job_started(self)
            if self.job.unsupported:
                return self._finish(started, "failure", self.job.unsupported)
            try:
                run_job = self._job_if(base_ctx)
            except ExpressionError as exc:
                return self._finish(started, "failure", f"the job's if: could not be evaluated: {exc}")
            if not run_job:
                return self._finish(started, "skipped", "")
            try:
                wf_env = {
                    k: interpolate(v, ctxmod.select(base_ctx, "workflow:env")) for k, v in self.workflow.env.items()
                }
                base_ctx = self._contexts(wf_env)
                job_env = {k: interpolate(v, ctxmod.select(base_ctx, "job:env")) for k, v in self.job.env.items()}
                self.job_env = {**wf_env, **job_env}
                timeout = self._job_timeout(base_ctx)
            except (ExpressionError, StepError) as exc:
                return self._finish(started, "failure", f"evaluating the job's env: {exc}")
            self.deadline = time.monotonic() + timeout * 60
            self._job_timeout_minutes = timeout
            if self.opts.job_python:
                self._make_job_python()
            for step in self.job.steps:
                self._main_step(step)
            while self.posts:
                self._post_step(self.posts.pop())
            outputs = self._job_outputs()
            result = self.status
            if self.job_timed_out:
                error = (
                    f"The job running on runner runcache has exceeded the maximum execution time of "
                    f"{_minutes(self._job_timeout_minutes)} minutes."
                )
            return self._finish(started, result, error, outputs)
        finally:
            self._cleanup()

    def _job_if(self, ctx: dict[str, Any]) -> bool:
        if self.needs_status is None:
            functions = ExpressionFunctions.for_job_status("success")
        else:
            status = self.needs_status
            functions = ExpressionFunctions(
                success=lambda: status("success"),
                failure=lambda: status("failure"),
                always=lambda: True,
                cancelled=lambda: status("cancelled"),
            )
        return evaluate_if(self.job.if_, ctxmod.select(ctx, "job:if"), functions)

    def _job_timeout(self, ctx: dict[str, Any]) -> float:
        value = self.job.timeout_minutes
        if value is None:
            return DEFAULT_JOB_TIMEOUT_MINUTES
        if isinstance(value, str):
            value = evaluate_template(value, ctxmod.select(ctx, "job:other"))
        try:
            minutes = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise StepError(f"timeout-minutes must be a number, got {value!r}") from None
        return minutes

    def _job_outputs(self) -> dict[str, str]:
        if not self.job.outputs:
            return {}
        ctx = self._contexts(self._env_context())
        out: dict[str, str] = {}
        for name, template in self.job.outputs.items():
            try:
                out[name] = interpolate(template, ctxmod.select(ctx, "job:outputs"))
            except ExpressionError as exc:
                out[name] = ""
                self.reporter.step_line(self.records[-1], f"Error: job output {name}: {exc}", "annotation")
        return out

    def _finish(self, started: float, result: str, error: str, outputs: dict[str, str] | None = None) -> JobResult:
        allowed = False
        if result == "failure" and self.job.continue_on_error:
            value: Any = self.job.continue_on_error
            with contextlib.suppress(ExpressionError):
                if isinstance(value, str):
                    value = evaluate_template(value, ctxmod.select(self._contexts({}), "job:other"))
            allowed = value is True or (isinstance(value, str) and value.strip().lower() == "true")
        res = JobResult(
            job_id=self.job.id,
            name=self.name,
            allowed_failure=allowed,
            result=result,
            duration=time.monotonic() - started,
            steps=self.records,
            outputs=outputs or {},
            matrix=self.matrix,
            summary="\n".join(self.summaries),
            error=error,
            log_dir=self.log_dir,
            notes=list(self.notes),
        )
        if self.log_dir and res.summary:
            (self.log_dir / "summary.md").write_text(res.summary, encoding="utf-8")
        self.reporter.job_finished(res)
        return res

    def _write_event(self) -> None:
        import json

        folder = self.temp.parent / "_github_workflow"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "event.json").write_text(json.dumps(self.opts.event, indent=2), encoding="utf-8")

    def _cleanup(self) -> None:
        for pgid in self.pgids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
        for fn in self.cleanups:
            with contextlib.suppress(Exception):
                fn()
        if self._temp_root and not self.opts.keep_temp:
            shutil.rmtree(self._temp_root, ignore_errors=True)

    # --- steps ---------------------------------------------------------------------------------
    def _new_record(self, stage: str, name: str, step: Step | None) -> StepRecord:
        rec = StepRecord(number=len(self.records) + 1, stage=stage, name=name, step=step, id=step.id if step else None)
        if self.log_dir:
            rec.log_path = self.log_dir / f"{rec.number:02d}_{_slug(name)}.log"
        self.records.append(rec)
        return rec

    def _display_name(self, step: Step, ctx: dict[str, Any]) -> str:
        return self.masker(self._raw_display_name(step, ctx))

    def _raw_display_name(self, step: Step, ctx: dict[str, Any]) -> str:
        if step.name:
            try:
                return interpolate(step.name, ctxmod.select(ctx, "step:name"), self._functions())
            except ExpressionError:
                return step.name
        if step.uses:
            return f"Run {step.uses}"
        text = step.run or ""
        with contextlib.suppress(ExpressionError):
            text = interpolate(text, ctxmod.select(ctx, "step:run"), self._functions())
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        return f"Run {first}"

    def _set_action_context(self, step: Step) -> None:
        """``github.action*`` describe the step that runs (``GITHUB_ACTION`` is its id)."""
        name, ref = split_uses(step.uses) if step.uses else ("", "")
        self.github = {**self.github, "action": step.context_id, "action_repository": name, "action_ref": ref}

    def _main_step(self, step: Step) -> None:
        self._set_action_context(step)
        env_ctx = self._env_context()
        ctx = self._contexts(env_ctx)
        condition = step.if_
        if isinstance(condition, (int, float)) and not isinstance(condition, bool):
            condition = value_string(condition)
        try:
            run_it = evaluate_if(condition, ctxmod.select(ctx, "step:if"), self._functions())
            if_error = None
        except ExpressionError as exc:
            run_it, if_error = True, str(exc)
        name = self._display_name(step, ctx)
        if not run_it:
            rec = self._new_record("main", name, step)
            rec.outcome = rec.conclusion = "skipped"
            rec.log_path = None
            self.steps_ctx[step.context_id] = {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
            self.reporter.step_finished(rec)
            return
        rec = self._new_record("main", name, step)
        rec.started = time.monotonic()
        self.reporter.step_started(rec)
        log = _StepLog(self, rec)
        result = "success"
        try:
            if if_error:
                raise StepError(f"The step's if: condition could not be evaluated: {if_error}")
            step_env = self._eval_map(step.env, ctx, "step:env", "env")
            env_ctx = {**env_ctx, **step_env}
            ctx = self._contexts(env_ctx)
            timeout = self._step_timeout(step, ctx)
            if step.run is not None:
                result = self._run_script(rec, log, step, ctx, env_ctx, step_env, timeout)
            else:
                result = self._run_action(rec, log, step, ctx, env_ctx, step_env, "main", None)
        except StepError as exc:
            log.annotate("error", str(exc))
            result = "failure"
        except KeyboardInterrupt:
            result = self._interrupted(log)
        self._conclude(rec, log, step, ctx, result)

    def _post_step(self, post: _Post) -> None:
        self._set_action_context(post.step)
        env_ctx = self._env_context()
        ctx = self._contexts(env_ctx)
        name = f"Post {post.name}"
        try:
            run_it = bool(evaluate(post.action.post_if, ctxmod.select(ctx, "step:if"), self._functions()))
            if_error = None
        except ExpressionError as exc:
            run_it, if_error = True, str(exc)
        rec = self._new_record("post", name, post.step)
        if not run_it:
            rec.outcome = rec.conclusion = "skipped"
            rec.log_path = None
            self.reporter.step_finished(rec)
            return
        rec.started = time.monotonic()
        self.reporter.step_started(rec)
        log = _StepLog(self, rec)
        try:
            if if_error:
                raise StepError(f"post-if could not be evaluated: {if_error}")
            step_env = self._eval_map(post.step.env, ctx, "step:env", "env")
            env_ctx = {**env_ctx, **step_env}
            ctx = self._contexts(env_ctx)
            result = self._run_action(rec, log, post.step, ctx, env_ctx, step_env, "post", post)
        except StepError as exc:
            log.annotate("error", str(exc))
            result = "failure"
        except KeyboardInterrupt:
            result = self._interrupted(log)
        self._conclude(rec, log, post.step, ctx, result, post=True)

    def _interrupted(self, log: _StepLog) -> str:
        self.interrupts += 1
        if self.interrupts > 1:
            raise KeyboardInterrupt
        log.annotate("error", "The operation was canceled.")
        return "cancelled"

    def _conclude(
        self, rec: StepRecord, log: _StepLog, step: Step, ctx: dict[str, Any], result: str, post: bool = False
    ) -> None:
        if result == "failure":
            try:
                coe = self._continue_on_error(step, ctx)
            except StepError as exc:
                log.annotate("error", str(exc))
                coe = False
            rec.outcome = "failure"
            rec.conclusion = "success" if coe else "failure"
            rec.continue_on_error = coe
            if not coe:
                self.status = "failure"
        elif result == "cancelled":
            rec.outcome = rec.conclusion = "cancelled"
            self.status = "cancelled"
        else:
            rec.outcome = rec.conclusion = "success"
        rec.duration = time.monotonic() - rec.started
        log.close()
        if not post:
            self.steps_ctx[step.context_id] = {
                "outputs": dict(rec.outputs),
                "outcome": rec.outcome,
                "conclusion": rec.conclusion,
            }
        self.reporter.step_finished(rec)

    def _continue_on_error(self, step: Step, ctx: dict[str, Any]) -> bool:
        value: Any = step.continue_on_error
        if isinstance(value, str):
            try:
                value = evaluate_template(value, ctxmod.select(ctx, "step:other"), self._functions())
            except ExpressionError as exc:
                raise StepError(f"continue-on-error: {exc}") from None
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                value = value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise StepError(f"continue-on-error must be a boolean, got {value!r}")
        return value

    def _step_timeout(self, step: Step, ctx: dict[str, Any]) -> float | None:
        value: Any = step.timeout_minutes
        if isinstance(value, str):
            try:
                value = evaluate_template(value, ctxmod.select(ctx, "step:other"), self._functions())
            except ExpressionError as exc:
                raise StepError(f"timeout-minutes: {exc}") from None
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise StepError(f"timeout-minutes must be a number, got {value!r}") from None
        return float(value) * 60 if value is not None else None

    # --- run: steps ----------------------------------------------------------------------------
    def _run_script(
        self,
        rec: StepRecord,
        log: _StepLog,
        step: Step,
        ctx: dict[str, Any],
        env_ctx: dict[str, str],
        step_env: dict[str, str],
        timeout: float | None,
    ) -> str:
        functions = self._functions()
        try:
            script_text = interpolate(step.run or "", ctxmod.select(ctx, "step:run"), functions)
        except ExpressionError as exc:
            raise StepError(f"run: {exc}") from None
        wd_text = (
            step.working_directory
            or self.job.defaults_working_directory
            or self.workflow.defaults_working_directory
            or ""
        )
        wd = self.workspace
        if wd_text:
            wd_kind = "step:other" if step.working_directory else "job:defaults"
            wd = self.workspace / self._eval_str(wd_text, ctx, wd_kind, "working-directory")
        shell_text = step.shell or self.job.defaults_shell or self.workflow.defaults_shell
        if shell_text and "${{" in shell_text:
            shell_text = self._eval_str(shell_text, ctx, "step:other", "shell")
        files = FileCommands(self.temp)
        env = self._process_env(env_ctx, files)
        try:
            shell = resolve_shell(shell_text, env["PATH"])
        except ShellError as exc:
            raise StepError(str(exc)) from None
        script = shell.write_script(self.temp, script_text)
        for line in script_text.rstrip("\n").split("\n"):
            log.header(line)
        log.header(f"shell: {shell.display}")
        if step_env or self.job_env or self.global_env:
            log.header("env:")
            for k, v in {**self.job_env, **self.global_env, **step_env}.items():
                log.header(f"  {k}: {v}")
        if not wd.is_dir():
            raise StepError(
                f"An error occurred trying to start process '{shell.command}' with working directory '{wd}'. "
                "No such file or directory"
            )
        timeout, job_limited = self._bounded(timeout)
        code, timed_out, cancelled = self._exec(shell.argv(script), wd, env, timeout, log)
        failed = self._apply_file_commands(rec, log, files)
        if log.effects.failed:
            failed = True
        self._apply_effects(rec, log.effects)
        if cancelled:
            return self._interrupted(log)
        if timed_out:
            if job_limited:
                self.job_timed_out = True
                log.annotate("error", "The operation was canceled.")
                return "cancelled"
            rec.timed_out = True
            log.annotate("error", f"The action '{rec.name}' has timed out after {_minutes(timeout / 60)} minutes.")
            return "failure"
        if code != 0:
            log.annotate("error", f"Process completed with exit code {code}.")
            return "failure"
        return "failure" if failed else "success"

    def _bounded(self, timeout: float | None) -> tuple[float | None, bool]:
        """The step's timeout in seconds, cut to what is left of the job's; and whether the job's decided."""
        if self.deadline is None:
            return timeout, False
        left = max(self.deadline - time.monotonic(), 0.001)
        if timeout is None or left < timeout:
            return left, True
        return timeout, False

    def _exec(
        self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float | None, log: _StepLog
    ) -> tuple[int, bool, bool]:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=str(cwd),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise StepError(
                f"An error occurred trying to start process '{argv[0]}' with working directory '{cwd}'. {exc.strerror}"
            ) from None
        self.pgids.append(proc.pid)
        assert proc.stdout is not None
        stream = proc.stdout

        def pump() -> None:
            for raw in iter(stream.readline, b""):
                text = raw.decode("utf-8", errors="replace")
                text = text[:-1] if text.endswith("\n") else text
                text = text[:-1] if text.endswith("\r") else text
                log.output(text.rsplit("\r", 1)[-1])

        reader = threading.Thread(target=pump, name="step-output", daemon=True)
        reader.start()
        timed_out = cancelled = False
        deadline = time.monotonic() + timeout if timeout is not None else None
        try:
            while True:
                wait = 0.25 if deadline is None else min(0.25, max(deadline - time.monotonic(), 0))
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    if deadline is not None and time.monotonic() >= deadline:
                        timed_out = True
                        self._terminate(proc)
                        break
        except KeyboardInterrupt:
            cancelled = True
            self._terminate(proc)
        code = proc.wait()
        reader.join(2.0)
        if reader.is_alive():
            log.detach()
            log.info("(a background process of this step still holds its output open; it is no longer shown)")
        return code, timed_out, cancelled

    @staticmethod
    def _terminate(proc: subprocess.Popen) -> None:
        for sig, grace in ((signal.SIGINT, KILL_GRACE_SECONDS), (signal.SIGTERM, 2.5), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue
            except KeyboardInterrupt:
                continue

    def _apply_file_commands(self, rec: StepRecord, log: _StepLog, files: FileCommands) -> bool:
        result = files.collect()
        for message in result.errors:
            log.annotate("error", message)
        for message in result.warnings:
            log.annotate("error", message)
        rec.outputs.update(result.outputs)
        self.global_env.update(result.env)
        for path in result.paths:
            if path in self.path_prepend:
                self.path_prepend.remove(path)
            self.path_prepend.append(path)
        if result.summary:
            rec.summary = result.summary
            self.summaries.append(self.masker(result.summary))
        return bool(result.errors)

    def _apply_effects(self, rec: StepRecord, effects: CommandEffects) -> None:
        rec.outputs.update(effects.outputs)
        self.global_env.update(effects.env)
        for path in effects.paths:
            if path in self.path_prepend:
                self.path_prepend.remove(path)
            self.path_prepend.append(path)

    # --- uses: steps ---------------------------------------------------------------------------
    def _action_inputs(
        self, action: BuiltinAction, step: Step, ctx: dict[str, Any], log: _StepLog, *, warn: bool
    ) -> tuple[dict[str, str], set[str]]:
        specs = {spec.name.lower(): spec for spec in action.inputs}
        given = {k.lower(): (k, v) for k, v in step.with_.items()}
        if warn:
            unexpected = [k for k in step.with_ if k.lower() not in specs]
            if unexpected:
                log.annotate(
                    "warning",
                    f"Unexpected input(s) {', '.join(repr(k) for k in unexpected)}, valid inputs are "
                    f"[{', '.join(repr(s.name) for s in action.inputs)}]",
                )
        values: dict[str, str] = {}
        for key, (name, raw) in given.items():
            values[key] = self._eval_str(raw, ctx, "step:other", f"with.{name}")
        for key, spec in specs.items():
            if key in given:
                if spec.deprecation and warn:
                    log.annotate("warning", f"Input '{spec.name}' has been deprecated with message: {spec.deprecation}")
            elif spec.default is not None:
                values[key] = self._eval_str(spec.default, ctx, "step:other", f"the default of {spec.name}")
        return values, set(given)

    def _run_action(
        self,
        rec: StepRecord,
        log: _StepLog,
        step: Step,
        ctx: dict[str, Any],
        env_ctx: dict[str, str],
        step_env: dict[str, str],
        stage: str,
        post: _Post | None,
    ) -> str:
        assert step.uses is not None
        action = post.action if post else resolve_action(step.uses)
        if action is None:
            raise StepError(unsupported_message(step.uses))
        self._set_action_context(step)
        ctx = {**ctx, "github": self.github}
        inputs, explicit = self._action_inputs(action, step, ctx, log, warn=stage == "main")
        if stage == "main" and action.has_post:
            state: dict[str, str] = {}
            self.posts.append(_Post(step, action, state, rec.name))
        else:
            state = post.state if post else {}
        env = self._process_env(env_ctx)
        for key, value in inputs.items():
            env["INPUT_" + key.replace(" ", "_").upper()] = value
        if post:
            for key, value in post.state.items():
                env[f"STATE_{key}"] = value
        actx = ActionContext(
            step_name=rec.name,
            inputs=inputs,
            workspace=self.workspace,
            temp=self.temp,
            env=env,
            github=self.github,
            runner=self.runner_ctx,
            state=state,
            cache=self.opts.cache,
            log=log.info,
            annotate=log.annotate,
            hash_files=self._hash_files,
            tool_cache=self.tool_cache,
            progress=lambda text: self.reporter.step_progress(rec, text),
            explicit_inputs=explicit,
        )
        result = "success"
        try:
            if stage == "main":
                action.main(actx)
            else:
                action.post(actx)
        except ActionFailed as exc:
            log.annotate("error", str(exc))
            result = "failure"
        except KeyboardInterrupt:
            result = self._interrupted(log)
        except ExpressionError as exc:
            log.annotate("error", str(exc))
            result = "failure"
        except Exception as exc:
            log.annotate("error", f"{type(exc).__name__}: {exc}")
            if log.file:
                log.file.write(traceback.format_exc())
            result = "failure"
        finally:
            self.cleanups.extend(actx.cleanups)
            rec.caches.extend(actx.cache_records)
        if stage == "main":
            rec.outputs.update(actx.outputs)
        self.global_env.update(actx.exported_env)
        for path in actx.added_paths:
            if path in self.path_prepend:
                self.path_prepend.remove(path)
            self.path_prepend.append(path)
        return result


def _ref_name(ref: str) -> str:
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    if ref.startswith("refs/pull/"):
        return ref[len("refs/pull/") :]
    return ref


def _minutes(value: float | None) -> str:
    if value is None:
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _flat_values(matrix: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for value in matrix.values():
        if isinstance(value, dict):
            out.extend(_flat_values(value))
        else:
            out.append(value)
    return out
