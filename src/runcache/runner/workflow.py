"""Reading a workflow file: YAML with line numbers, GitHub's schema, and plain dataclasses for the runner.

Parsing goes through PyYAML's node graph (``yaml.compose``) rather than ``safe_load`` so that
every error can name the line and column it is about, and so that scalars are typed the way
GitHub types them (YAML 1.2 core schema: ``on``, ``yes`` and ``no`` are strings, not booleans,
and a quoted ``'true'`` stays a string).

Values that may hold expressions are kept as written (``str``, or ``bool``/number for fields
such as ``continue-on-error`` and ``timeout-minutes``); the runner evaluates them when the
step runs. Expression *syntax* is checked here, so a typo is reported with its line before
anything runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runcache.runner import expressions
from runcache.runner.contexts import FIELD_CONTEXTS, STATUS_FIELDS, placeholder_contexts

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class WorkflowError(Exception):
    """An invalid workflow: ``str()`` is ``file:line:col: message``."""

    def __init__(self, message: str, *, path: str = "", line: int | None = None, column: int | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.column = column
        where = path
        if line is not None:
            where += f":{line}" + (f":{column}" if column is not None else "")
        super().__init__(f"{where}: {message}" if where else message)


# --------------------------------------------------------------------------- data model


@dataclass
class Step:
    index: int  # 0-based position in the job
    line: int
    id: str | None = None
    name: str | None = None
    if_: str | bool | int | float | None = None
    uses: str | None = None
    run: str | None = None
    shell: str | None = None
    with_: dict[str, str] = field(default_factory=dict)
    with_lines: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    working_directory: str | None = None
    continue_on_error: bool | str = False
    timeout_minutes: float | str | None = None

    @property
    def context_id(self) -> str:
        """The id expressions see; steps without one get the runner's generated ``__run_N``-style id."""
        if self.id:
            return self.id
        if self.uses:
            base = re.sub(r"[^A-Za-z0-9_]", "_", self.uses.split("@", 1)[0])
            return f"__{base}_{self.index + 1}"
        return f"__run_{self.index + 1}"


@dataclass
class Job:
    id: str
    line: int
    name: str | None = None
    runs_on: Any = None
    needs: list[str] = field(default_factory=list)
    if_: str | bool | int | float | None = None
    env: dict[str, str] = field(default_factory=dict)
    defaults_shell: str | None = None
    defaults_working_directory: str | None = None
    timeout_minutes: float | str | None = None
    continue_on_error: bool | str = False
    strategy: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    unsupported: str | None = None  # why this job cannot run locally (reusable workflow, container, ...)


@dataclass
class Workflow:
    path: Path
    name: str | None
    on: dict[str, Any]  # event name -> its configuration (None when given as a plain list/string)
    env: dict[str, str]
    defaults_shell: str | None
    defaults_working_directory: str | None
    jobs: dict[str, Job]
    run_name: str | None = None

    @property
    def display_name(self) -> str:
        return self.name or str(self.path)

    def triggered_by(self, event: str) -> bool:
        return event in self.on

    def dispatch_inputs(self) -> dict[str, dict[str, Any]]:
        for event in ("workflow_dispatch", "workflow_call"):
            conf = self.on.get(event)
            if isinstance(conf, dict) and isinstance(conf.get("inputs"), dict):
                return conf["inputs"]
        return {}


# --------------------------------------------------------------------------- YAML helpers

_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$"
)


def scalar_value(node: yaml.ScalarNode) -> Any:
    """A scalar typed by the YAML 1.2 core schema, as GitHub's parser does."""
    text = node.value
    if node.style is not None:  # quoted, literal (|) or folded (>): always a string
        return text
    if _NULL_RE.match(text):
        return None
    if _BOOL_RE.match(text):
        return text.lower() == "true"
    if _INT_RE.match(text):
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0x"):
            return int(text[2:], 16)
        return int(text)
    if _FLOAT_RE.match(text):
        lowered = text.lower()
        if lowered.endswith("inf"):
            return -math.inf if lowered.startswith("-") else math.inf
        if lowered.endswith("nan"):
            return math.nan
        return float(text)
    return text


def to_python(node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return scalar_value(node)
    if isinstance(node, yaml.SequenceNode):
        return [to_python(item) for item in node.value]
    if isinstance(node, yaml.MappingNode):
        return {str(to_python(k)): to_python(v) for k, v in node.value}
    return None


def value_string(value: Any) -> str:
    """How GitHub turns a scalar input into a string: ``true``, ``3.1`` (``3.10`` is a number!), ``''``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, node: yaml.Node | None, message: str) -> WorkflowError:
        if node is None:
            return WorkflowError(message, path=self.path)
        mark = node.start_mark
        return WorkflowError(message, path=self.path, line=mark.line + 1, column=mark.column + 1)

    def line(self, node: yaml.Node) -> int:
        return node.start_mark.line + 1

    def mapping(self, node: yaml.Node, what: str) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping, got {_kind(node)}")
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key_node, f"{what}: keys must be plain strings")
            key = key_node.value
            if key in seen:
                raise self.error(key_node, f"'{key}' is already defined (line {seen[key]})")
            seen[key] = self.line(key_node)
            yield key, key_node, value_node

    def check_keys(self, node: yaml.MappingNode, allowed: tuple[str, ...], what: str) -> None:
        for key, key_node, _ in self.mapping(node, what):
            if key not in allowed:
                hint = _suggest(key, allowed)
                raise self.error(
                    key_node, f"unexpected key '{key}' in {what}" + (f" (did you mean '{hint}'?)" if hint else "")
                )

    def scalar(self, node: yaml.Node, what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"{what} must be a single value, got {_kind(node)}")
        return scalar_value(node)

    def string(self, node: yaml.Node, what: str) -> str:
        value = self.scalar(node, what)
        if isinstance(value, str):
            return value
        return value_string(value)

    def string_map(self, node: yaml.Node, what: str, lines: dict[str, int] | None = None) -> dict[str, str]:
        out: dict[str, str] = {}
        if isinstance(node, yaml.ScalarNode) and scalar_value(node) is None:
            return out
        if isinstance(node, yaml.ScalarNode) and isinstance(scalar_value(node), str) and "${{" in node.value:
            raise self.error(node, f"{what} given as one expression is not supported by runcache run; list the keys")
        for key, _key_node, value_node in self.mapping(node, what):
            out[key] = self.string(value_node, f"{what}.{key}")
            if lines is not None:
                lines[key] = self.line(value_node)
        return out

    def check_expressions(self, node: yaml.Node, text: Any, field_kind: str, what: str, *, is_if: bool = False) -> None:
        """Report expression syntax errors (and unknown context names) with the field's line and name.

        ``what`` names the field for the message, e.g. ``with.key of step 2 ('Cache') in job 'build'``."""
        if not isinstance(text, str):
            return
        contexts = placeholder_contexts(FIELD_CONTEXTS[field_kind])
        hash_files = (lambda _p: "") if field_kind.startswith("step") else None
        functions = expressions.ExpressionFunctions.for_job_status("success", hash_files=hash_files)
        with_status = field_kind in STATUS_FIELDS
        try:
            if is_if:
                _check_if(text, contexts, functions)
            elif "${{" in text:
                _check_template(text, contexts, functions if with_status or field_kind.startswith("step") else None)
        except expressions.ExpressionError as exc:
            message = str(exc)
            if "within expression" not in message:
                message += f" (in {text.strip()!r})"
            if message.startswith("Unrecognized named-value"):
                message += f"; contexts available here: {', '.join(FIELD_CONTEXTS[field_kind])}"
            raise self.error(node, f"invalid expression in {what}: {message}") from None


def _check_template(text: str, contexts: dict[str, Any], functions: expressions.ExpressionFunctions | None) -> None:
    for is_expression, part in expressions._split_template(text):
        if is_expression:
            expressions._parse(part, contexts, functions)


def _check_if(text: str, contexts: dict[str, Any], functions: expressions.ExpressionFunctions) -> None:
    expr = expressions._template_expression(text, contexts, functions)
    if expr is None:
        expr = text.strip()
    if expr:
        expressions._parse(expr, contexts, functions)


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    value = scalar_value(node) if isinstance(node, yaml.ScalarNode) else None
    if value is None:
        return "an empty value"
    return f"{type(value).__name__} {node.value!r}"


def _suggest(key: str, allowed: tuple[str, ...]) -> str | None:
    import difflib

    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return close[0] if close else None


# --------------------------------------------------------------------------- schema

WORKFLOW_KEYS = ("name", "run-name", "on", "permissions", "env", "defaults", "concurrency", "jobs")
JOB_KEYS = (
    "name",
    "runs-on",
    "needs",
    "if",
    "env",
    "defaults",
    "timeout-minutes",
    "continue-on-error",
    "strategy",
    "outputs",
    "steps",
    "permissions",
    "environment",
    "concurrency",
    "container",
    "services",
    "uses",
    "with",
    "secrets",
    "snapshot",
)
RUN_STEP_KEYS = ("id", "name", "if", "run", "shell", "env", "working-directory", "continue-on-error", "timeout-minutes")
USES_STEP_KEYS = ("id", "name", "if", "uses", "with", "env", "continue-on-error", "timeout-minutes")
KNOWN_EVENTS = (
    "branch_protection_rule",
    "check_run",
    "check_suite",
    "create",
    "delete",
    "deployment",
    "deployment_status",
    "discussion",
    "discussion_comment",
    "fork",
    "gollum",
    "issue_comment",
    "issues",
    "label",
    "merge_group",
    "milestone",
    "page_build",
    "project",
    "project_card",
    "project_column",
    "public",
    "pull_request",
    "pull_request_comment",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_target",
    "push",
    "registry_package",
    "release",
    "repository_dispatch",
    "schedule",
    "status",
    "watch",
    "workflow_call",
    "workflow_dispatch",
    "workflow_run",
)


def load_workflow(path: str | Path) -> Workflow:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError(f"workflow file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise WorkflowError(f"{path}: not UTF-8 text ({exc})") from None
    return parse_workflow(text, path)


def parse_workflow(text: str, path: str | Path = "<workflow>") -> Workflow:
    shown = str(path)
    r = _Reader(shown)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        context = ""
        if exc.context:
            context = f" ({exc.context}"
            if exc.context_mark and mark and exc.context_mark.line != mark.line:
                context += f" that starts on line {exc.context_mark.line + 1}"
            context += ")"
        hint = ""
        if "found character '\\t'" in str(exc):
            hint = "; YAML indentation must use spaces, not tabs"
        raise WorkflowError(
            f"invalid YAML: {problem}{context}{hint}",
            path=shown,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:
        raise WorkflowError(f"invalid YAML: {exc}", path=shown) from None
    if root is None:
        raise WorkflowError("the workflow file is empty", path=shown, line=1)
    if not isinstance(root, yaml.MappingNode):
        raise r.error(root, f"a workflow must be a mapping (name:, on:, jobs:), got {_kind(root)}")
    r.check_keys(root, WORKFLOW_KEYS, "the workflow")
    nodes = {key: (key_node, value) for key, key_node, value in r.mapping(root, "the workflow")}
    if "on" not in nodes:
        raise WorkflowError("the workflow has no 'on:' (which events trigger it)", path=shown, line=1)
    if "jobs" not in nodes:
        raise WorkflowError("the workflow has no 'jobs:'", path=shown, line=1)

    name = r.string(nodes["name"][1], "name") if "name" in nodes else None
    run_name = r.string(nodes["run-name"][1], "run-name") if "run-name" in nodes else None
    on = _read_on(r, nodes["on"][1])
    env: dict[str, str] = {}
    if "env" in nodes:
        env = r.string_map(nodes["env"][1], "env")
        for key, value_node in _map_items(nodes["env"][1]):
            r.check_expressions(value_node, scalar_value(value_node), "workflow:env", f"the workflow's env.{key}")
    shell, wd = _read_defaults(r, nodes["defaults"][1], "defaults") if "defaults" in nodes else (None, None)

    jobs_node = nodes["jobs"][1]
    jobs: dict[str, Job] = {}
    for job_id, key_node, job_node in r.mapping(jobs_node, "jobs"):
        if not NAME_RE.match(job_id):
            raise r.error(
                key_node, f"invalid job id '{job_id}': use letters, digits, '-' and '_', starting with a letter or '_'"
            )
        jobs[job_id] = _read_job(r, job_id, key_node, job_node)
    if not jobs:
        raise r.error(jobs_node, "'jobs:' must define at least one job")
    for job in jobs.values():
        for need in job.needs:
            if need not in jobs:
                raise WorkflowError(
                    f"job '{job.id}' needs '{need}', which is not a job of this workflow", path=shown, line=job.line
                )
    _check_cycles(jobs, shown)
    return Workflow(
        path=Path(path),
        name=name,
        on=on,
        env=env,
        defaults_shell=shell,
        defaults_working_directory=wd,
        jobs=jobs,
        run_name=run_name,
    )


def _map_items(node: yaml.Node) -> list[tuple[str, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        return []
    return [(str(k.value) if isinstance(k, yaml.ScalarNode) else "?", v) for k, v in node.value]


def _read_on(r: _Reader, node: yaml.Node) -> dict[str, Any]:
    events: dict[str, Any] = {}
    if isinstance(node, yaml.ScalarNode):
        events[r.string(node, "on")] = None
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            events[r.string(item, "on[]")] = None
    else:
        for key, _key_node, value in r.mapping(node, "on"):
            events[key] = to_python(value)
    for event in events:
        if event not in KNOWN_EVENTS:
            hint = _suggest(event, KNOWN_EVENTS)
            raise r.error(node, f"unknown event '{event}' in on:" + (f" (did you mean '{hint}'?)" if hint else ""))
    return events


def _read_defaults(r: _Reader, node: yaml.Node, what: str) -> tuple[str | None, str | None]:
    r.check_keys(node, ("run",), what)
    shell = wd = None
    for _key, _kn, run in r.mapping(node, what):
        r.check_keys(run, ("shell", "working-directory"), f"{what}.run")
        for key, _kn2, value in r.mapping(run, f"{what}.run"):
            if key == "shell":
                shell = r.string(value, f"{what}.run.shell")
            else:
                wd = r.string(value, f"{what}.run.working-directory")
    return shell, wd


def _read_job(r: _Reader, job_id: str, key_node: yaml.Node, node: yaml.Node) -> Job:
    if not isinstance(node, yaml.MappingNode):
        raise r.error(node, f"job '{job_id}' must be a mapping, got {_kind(node)}")
    r.check_keys(node, JOB_KEYS, f"job '{job_id}'")
    nodes = {key: value for key, _kn, value in r.mapping(node, f"job '{job_id}'")}
    job = Job(id=job_id, line=r.line(key_node))
    if "uses" in nodes:
        job.unsupported = (
            f"job '{job_id}' calls the reusable workflow {r.string(nodes['uses'], 'uses')}; "
            "runcache run runs jobs with steps only"
        )
        return job
    for unsupported in ("container", "services"):
        given = nodes.get(unsupported)
        if given is not None and not (isinstance(given, yaml.ScalarNode) and scalar_value(given) is None):
            job.unsupported = (
                f"job '{job_id}' uses '{unsupported}:' (line {r.line(nodes[unsupported])}); "
                "runcache run runs steps on the host, without containers"
            )
    if "runs-on" not in nodes:
        raise r.error(key_node, f"job '{job_id}' has no 'runs-on:'")
    job.runs_on = to_python(nodes["runs-on"])
    if "name" in nodes:
        job.name = r.string(nodes["name"], "name")
        r.check_expressions(nodes["name"], job.name, "job:name", f"jobs.{job_id}.name")
    if "needs" in nodes:
        needs = to_python(nodes["needs"])
        job.needs = [needs] if isinstance(needs, str) else [value_string(n) for n in (needs or [])]
    if "if" in nodes:
        job.if_ = r.scalar(nodes["if"], "if")
        r.check_expressions(nodes["if"], job.if_, "job:if", f"jobs.{job_id}.if", is_if=True)
    if "env" in nodes:
        job.env = r.string_map(nodes["env"], f"jobs.{job_id}.env")
        for key, value_node in _map_items(nodes["env"]):
            r.check_expressions(value_node, scalar_value(value_node), "job:env", f"jobs.{job_id}.env.{key}")
    if "defaults" in nodes:
        job.defaults_shell, job.defaults_working_directory = _read_defaults(
            r, nodes["defaults"], f"jobs.{job_id}.defaults"
        )
    if "timeout-minutes" in nodes:
        job.timeout_minutes = _number_or_expression(
            r, nodes["timeout-minutes"], "timeout-minutes", "job:other", f"jobs.{job_id}.timeout-minutes"
        )
    if "continue-on-error" in nodes:
        job.continue_on_error = _bool_or_expression(
            r, nodes["continue-on-error"], "continue-on-error", "job:other", f"jobs.{job_id}.continue-on-error"
        )
    if "strategy" in nodes:
        strategy = to_python(nodes["strategy"])
        if not isinstance(strategy, dict):
            raise r.error(nodes["strategy"], "strategy must be a mapping")
        r.check_keys(nodes["strategy"], ("matrix", "fail-fast", "max-parallel"), "strategy")
        job.strategy = strategy
    if "outputs" in nodes:
        job.outputs = r.string_map(nodes["outputs"], f"jobs.{job_id}.outputs")
        for key, value_node in _map_items(nodes["outputs"]):
            r.check_expressions(value_node, scalar_value(value_node), "job:outputs", f"jobs.{job_id}.outputs.{key}")
    if "steps" not in nodes:
        raise r.error(key_node, f"job '{job_id}' has no 'steps:'")
    steps_node = nodes["steps"]
    if not isinstance(steps_node, yaml.SequenceNode):
        raise r.error(steps_node, f"steps of job '{job_id}' must be a list, got {_kind(steps_node)}")
    if not steps_node.value:
        raise r.error(steps_node, f"job '{job_id}' must have at least one step")
    ids: dict[str, int] = {}
    for index, step_node in enumerate(steps_node.value):
        step = _read_step(r, index, step_node, job_id)
        if step.id:
            if step.id in ids:
                raise r.error(step_node, f"the step id '{step.id}' is already used by the step on line {ids[step.id]}")
            ids[step.id] = step.line
        job.steps.append(step)
    return job


def _number_or_expression(r: _Reader, node: yaml.Node, what: str, field_kind: str, where: str) -> float | str:
    value = r.scalar(node, what)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise r.error(node, f"{what} must be a number of minutes, got {_kind(node)}")
    if isinstance(value, str):
        if "${{" not in value:
            raise r.error(node, f"{what} must be a number of minutes, got {value!r}")
        r.check_expressions(node, value, field_kind, where)
        return value
    if value <= 0:
        raise r.error(node, f"{what} must be greater than 0")
    return float(value)


def _bool_or_expression(r: _Reader, node: yaml.Node, what: str, field_kind: str, where: str) -> bool | str:
    value = r.scalar(node, what)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and "${{" in value:
        r.check_expressions(node, value, field_kind, where)
        return value
    raise r.error(node, f"{what} must be true, false or an expression, got {_kind(node)}")


def _step_label(nodes: dict[str, tuple[yaml.Node, yaml.Node]]) -> str:
    """How a step is named in messages: its name, else its id, uses or the first line of run."""
    for key in ("name", "id", "uses", "run"):
        node = nodes.get(key, (None, None))[1]
        if isinstance(node, yaml.ScalarNode) and isinstance(node.value, str) and node.value.strip():
            text = node.value.strip().splitlines()[0]
            return text if len(text) <= 50 else text[:47] + "..."
    return ""


def _read_step(r: _Reader, index: int, node: yaml.Node, job_id: str = "") -> Step:
    where = f"step {index + 1}"
    if not isinstance(node, yaml.MappingNode):
        raise r.error(node, f"{where} must be a mapping (with run: or uses:), got {_kind(node)}")
    nodes = {key: (kn, value) for key, kn, value in r.mapping(node, where)}
    step = Step(index=index, line=r.line(node))
    if "run" in nodes and "uses" in nodes:
        raise r.error(nodes["uses"][0], f"{where} has both 'run:' and 'uses:'; a step does one or the other")
    if "run" not in nodes and "uses" not in nodes:
        for key, (key_node, _value) in nodes.items():
            if key not in RUN_STEP_KEYS + USES_STEP_KEYS:
                hint = _suggest(key, ("run", "uses", *RUN_STEP_KEYS, *USES_STEP_KEYS))
                raise r.error(
                    key_node, f"unexpected key '{key}' in {where}" + (f" (did you mean '{hint}'?)" if hint else "")
                )
        raise r.error(node, f"{where} has neither 'run:' nor 'uses:'")
    allowed = RUN_STEP_KEYS if "run" in nodes else USES_STEP_KEYS
    for key, (key_node, _value) in nodes.items():
        if key not in allowed:
            other = USES_STEP_KEYS if "run" in nodes else RUN_STEP_KEYS
            if key in other:
                kind = "'run:'" if "run" in nodes else "'uses:'"
                raise r.error(key_node, f"'{key}' is not allowed in a step with {kind}")
            hint = _suggest(key, allowed)
            raise r.error(
                key_node, f"unexpected key '{key}' in {where}" + (f" (did you mean '{hint}'?)" if hint else "")
            )

    def value(key: str) -> yaml.Node:
        return nodes[key][1]

    label = _step_label(nodes)
    in_step = f" of step {index + 1}" + (f" ({label!r})" if label else "") + (f" in job '{job_id}'" if job_id else "")

    if "id" in nodes:
        step.id = r.string(value("id"), "id")
        if not NAME_RE.match(step.id):
            raise r.error(
                value("id"),
                f"invalid step id '{step.id}': use letters, digits, '-' and '_', starting with a letter or '_'",
            )
        if step.id.startswith("__"):
            raise r.error(value("id"), f"step ids starting with '__' are reserved for the runner: '{step.id}'")
    if "name" in nodes:
        step.name = r.string(value("name"), "name")
        r.check_expressions(value("name"), step.name, "step:name", "name" + in_step)
    if "if" in nodes:
        step.if_ = r.scalar(value("if"), "if")
        r.check_expressions(value("if"), step.if_, "step:if", "if" + in_step, is_if=True)
    if "run" in nodes:
        step.run = r.string(value("run"), "run")
        if not step.run.strip():
            raise r.error(value("run"), f"{where}: 'run:' is empty")
        r.check_expressions(value("run"), step.run, "step:run", "run" + in_step)
    if "uses" in nodes:
        step.uses = r.string(value("uses"), "uses").strip()
        if not step.uses:
            raise r.error(value("uses"), f"{where}: 'uses:' is empty")
        if "${{" in step.uses:
            raise r.error(value("uses"), "'uses:' cannot contain expressions")
        if not (step.uses.startswith(("./", "docker://")) or "@" in step.uses):
            raise r.error(
                value("uses"),
                f"'{step.uses}' needs a version: write it as {step.uses}@<ref>, for example {step.uses}@v4",
            )
    if "shell" in nodes:
        step.shell = r.string(value("shell"), "shell")
        r.check_expressions(value("shell"), step.shell, "step:other", "shell" + in_step)
    if "with" in nodes:
        step.with_ = r.string_map(value("with"), "with", step.with_lines)
        for key, value_node in _map_items(value("with")):
            r.check_expressions(value_node, scalar_value(value_node), "step:other", f"with.{key}{in_step}")
    if "env" in nodes:
        step.env = r.string_map(value("env"), "env")
        for key, value_node in _map_items(value("env")):
            r.check_expressions(value_node, scalar_value(value_node), "step:env", f"env.{key}{in_step}")
    if "working-directory" in nodes:
        step.working_directory = r.string(value("working-directory"), "working-directory")
        r.check_expressions(
            value("working-directory"), step.working_directory, "step:other", "working-directory" + in_step
        )
    if "continue-on-error" in nodes:
        step.continue_on_error = _bool_or_expression(
            r, value("continue-on-error"), "continue-on-error", "step:other", "continue-on-error" + in_step
        )
    if "timeout-minutes" in nodes:
        step.timeout_minutes = _number_or_expression(
            r, value("timeout-minutes"), "timeout-minutes", "step:other", "timeout-minutes" + in_step
        )
    return step


def _check_cycles(jobs: dict[str, Job], path: str) -> None:
    state: dict[str, int] = {}

    def visit(job_id: str, chain: list[str]) -> None:
        if state.get(job_id) == 2:
            return
        if state.get(job_id) == 1:
            cycle = " -> ".join([*chain[chain.index(job_id) :], job_id])
            raise WorkflowError(f"the jobs' needs form a cycle: {cycle}", path=path, line=jobs[job_id].line)
        state[job_id] = 1
        for need in jobs[job_id].needs:
            visit(need, [*chain, job_id])
        state[job_id] = 2

    for job_id in jobs:
        visit(job_id, [])


def job_order(workflow: Workflow) -> list[str]:
    """Jobs in an order that respects ``needs`` (declaration order otherwise)."""
    done: list[str] = []

    def visit(job_id: str) -> None:
        if job_id in done:
            return
        for need in workflow.jobs[job_id].needs:
            visit(need)
        done.append(job_id)

    for job_id in workflow.jobs:
        visit(job_id)
    return done


def find_workflows(root: Path) -> list[Path]:
    folder = root / ".github" / "workflows"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file())
