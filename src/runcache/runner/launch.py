"""A local run from its options: ``runcache run``'s arguments, then everything after parsing them.

The workflow file and workspace, the event payload and inputs, the data directory, the cache server
(embedded or external, see ``runcache.runner.endpoint``), the run itself and its summary. The command
(its console and exit codes) is ``runcache.cli.run``; ``runcache demo`` runs through here too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

PR_EVENTS = ("pull_request", "pull_request_target", "pull_request_review", "pull_request_review_comment")


class UsageError(Exception):
    pass


class ServiceFailed(Exception):
    """The cache service could not be started or reached (exit 3)."""


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow", nargs="?", help="workflow file (default: the one in .github/workflows/)")
    p.add_argument("-j", "--job", action="append", help="run only this job (repeatable; default: all, in needs order)")
    p.add_argument("-e", "--event", default="push", help="event name (default push)")
    p.add_argument("--event-path", type=Path, help="JSON payload for github.event (merged over the default one)")
    p.add_argument("--ref", help="github.ref (default: the current branch, refs/heads/<branch>)")
    p.add_argument("--sha", help="github.sha (default: HEAD)")
    p.add_argument("--repo", help="OWNER/NAME (default: from the origin remote, else local/<folder>)")
    p.add_argument("--default-branch", help="the repository's default branch (default: origin's, else main)")
    p.add_argument("--base-ref", help="base branch of a pull_request run (default: the default branch)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=VALUE", help="workflow_dispatch input")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment for steps")
    p.add_argument(
        "-s", "--secret", action="append", default=[], metavar="NAME[=VALUE]", help="secret (value from env if omitted)"
    )
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="configuration variable (vars.*)")
    p.add_argument(
        "--matrix", action="append", default=[], metavar="KEY=VALUE", help="run only matching matrix combinations"
    )
    p.add_argument("--workspace", type=Path, help="the repository root (default: the workflow file's repository)")
    p.add_argument(
        "--url",
        "--server",
        dest="url",
        metavar="URL",
        help="the runcache server for the cache steps (env RUNCACHE_URL; default: an embedded server)",
    )
    p.add_argument("--embedded", action="store_true", help="use an embedded server even if RUNCACHE_URL is set")
    p.add_argument("--token", help="token for --url (env RUNCACHE_TOKEN)")
    p.add_argument("--protocol", choices=["v1", "v2"], help="cache protocol (env RUNCACHE_PROTOCOL, default v2)")
    p.add_argument(
        "--data-dir",
        type=Path,
        help="the embedded server's store and the run logs (env RUNCACHE_DATA_DIR, default ~/.local/state/runcache)",
    )
    p.add_argument("--no-cache", action="store_true", help="run without a cache service (cache steps only warn)")
    p.add_argument(
        "--host-python",
        action="store_true",
        help="run steps with the PATH as it is, instead of a fresh virtual environment per job first on PATH",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout (the log goes to stderr)")
    p.add_argument("-v", "--verbose", action="store_true", help="show every step's full log, not just failing ones")
    p.add_argument("--debug", action="store_true", help="runner.debug / RUNNER_DEBUG=1 and ::debug:: lines")
    p.add_argument("--keep-temp", action="store_true", help="keep RUNNER_TEMP and the event file after the run")
    p.add_argument("-l", "--list", action="store_true", help="list the workflow's jobs and steps, run nothing")


def _pairs(values: list[str], what: str, *, from_env: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        if "=" in item:
            k, v = item.split("=", 1)
        elif from_env:
            k, v = item, os.environ.get(item, "")
            if item not in os.environ:
                raise UsageError(f"{what} {item}: no value given and no such environment variable")
        else:
            raise UsageError(f"{what} must look like NAME=VALUE, got {item!r}")
        if not k:
            raise UsageError(f"{what} needs a name: {item!r}")
        out[k] = v
    return out


def resolve_workflow(arg: str | None, cwd: Path, event: str) -> Path:
    from runcache.runner.repo import git_toplevel
    from runcache.runner.workflow import WorkflowError, find_workflows, load_workflow

    if arg:
        path = Path(arg)
        if path.is_dir():
            candidates = find_workflows(path)
            if not candidates:
                raise UsageError(f"no workflow files in {path / '.github' / 'workflows'}")
        else:
            if not path.exists():
                raise UsageError(f"workflow file not found: {path}")
            return path
    else:
        root = git_toplevel(cwd) or next(
            (d for d in [cwd, *cwd.parents] if (d / ".github" / "workflows").is_dir()), cwd
        )
        candidates = find_workflows(root)
        if not candidates:
            raise UsageError(
                f"no workflow files in {root / '.github' / 'workflows'}; pass the workflow file, "
                "e.g. runcache run .github/workflows/ci.yml"
            )
    if len(candidates) == 1:
        return candidates[0]
    triggered = []
    for c in candidates:
        try:
            if load_workflow(c).triggered_by(event):
                triggered.append(c)
        except WorkflowError:
            continue
    if len(triggered) == 1:
        return triggered[0]
    listing = "\n  ".join(str(c) for c in candidates)
    raise UsageError(f"several workflows; choose one:\n  {listing}")


def workspace_for(workflow: Path, override: Path | None) -> Path:
    from runcache.runner.repo import git_toplevel

    if override:
        return override.resolve()
    path = workflow.resolve()
    if path.parent.name == "workflows" and path.parent.parent.name == ".github":
        return path.parent.parent.parent
    return git_toplevel(path.parent) or Path.cwd().resolve()


def default_event(
    event: str,
    *,
    ref: str,
    sha: str,
    repository: str,
    default_branch: str,
    actor: str,
    base_ref: str,
    head_ref: str,
    inputs: dict[str, Any],
) -> dict[str, Any]:
    owner, _, name = repository.partition("/")
    repo = {
        "full_name": repository,
        "name": name,
        "owner": {"login": owner},
        "default_branch": default_branch,
        "html_url": f"https://github.com/{repository}",
    }
    payload: dict[str, Any] = {"repository": repo, "sender": {"login": actor}}
    if event == "push":
        payload.update(
            {
                "ref": ref,
                "before": "0" * 40,
                "after": sha,
                "created": False,
                "deleted": False,
                "forced": False,
                "head_commit": {"id": sha},
                "pusher": {"name": actor},
            }
        )
    elif event in PR_EVENTS:
        number = int(ref.split("/")[2]) if ref.startswith("refs/pull/") and ref.split("/")[2].isdigit() else 1
        payload.update(
            {
                "action": "synchronize",
                "number": number,
                "pull_request": {
                    "number": number,
                    "head": {"ref": head_ref, "sha": sha},
                    "base": {"ref": base_ref},
                },
            }
        )
    elif event == "workflow_dispatch":
        payload.update(
            {"ref": ref, "inputs": {k: v if isinstance(v, str) else json.dumps(v) for k, v in inputs.items()}}
        )
    return payload


def dispatch_inputs(declared: dict[str, Any], given: dict[str, str]) -> dict[str, Any]:
    """``inputs`` context: declared defaults typed (boolean, number), then ``--input`` values."""
    out: dict[str, Any] = {}
    for name, spec in declared.items():
        spec = spec if isinstance(spec, dict) else {}
        kind = spec.get("type", "string")
        value = spec.get("default")
        if name in given:
            value = given[name]
        if value is None:
            value = False if kind == "boolean" else ""
        if kind == "boolean":
            value = value if isinstance(value, bool) else str(value).lower() == "true"
        elif kind == "number":
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise UsageError(f"input {name} must be a number, got {value!r}") from None
        elif kind == "choice" and spec.get("options") and str(value) not in [str(o) for o in spec["options"]]:
            raise UsageError(f"input {name} must be one of {spec['options']}, got {value!r}")
        else:
            value = value if isinstance(value, str) else str(value)
        out[name] = value
        if spec.get("required") and name not in given and spec.get("default") is None:
            raise UsageError(f"input {name} is required: pass --input {name}=VALUE")
    for name in given:
        if name not in declared:
            raise UsageError(
                f"the workflow declares no input {name!r}" + (f" (inputs: {', '.join(declared)})" if declared else "")
            )
    return out


def make_console(*, to_stderr: bool):
    from rich.console import Console

    file = sys.stderr if to_stderr else sys.stdout
    console = Console(file=file, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        width = int(os.environ.get("COLUMNS", "0") or 0) or 160
        console = Console(file=file, highlight=False, width=width, no_color=True)
    return console


def run_from_args(args: argparse.Namespace, reporter, *, base_env: dict[str, str] | None = None):
    """Everything ``runcache run`` does after parsing; returns the RunResult (``None`` after a reported error)."""
    from runcache.runner import repo as repomod
    from runcache.runner.endpoint import ServiceError, cache_endpoint
    from runcache.runner.engine import RunOptions
    from runcache.runner.run import RunInterrupted, allocate_run, data_dir_lock, run_jobs
    from runcache.runner.workflow import WorkflowError, load_workflow

    cwd = Path.cwd()
    try:
        workflow_path = resolve_workflow(args.workflow, cwd, args.event)
        workflow = load_workflow(workflow_path)
    except WorkflowError as exc:
        print(f"runcache run: {exc}", file=sys.stderr)
        return None
    if args.list:
        list_jobs(workflow, workflow_path, reporter)
        return Listed()
    workspace = workspace_for(workflow_path, args.workspace)
    info = repomod.discover(workspace)
    repository = args.repo or info.repository
    if "/" not in repository.strip("/"):
        raise UsageError(f"--repo must look like OWNER/NAME, got {repository!r}")
    default_branch = args.default_branch or info.default_branch
    event = args.event
    head_ref = base_ref = ""
    if event in PR_EVENTS:
        head_ref = info.branch or "feature"
        base_ref = args.base_ref or default_branch
        ref = repomod.normalize_ref(args.ref) if args.ref else "refs/pull/1/merge"
    else:
        ref = repomod.normalize_ref(args.ref) if args.ref else f"refs/heads/{info.branch or default_branch}"
    sha = args.sha or info.sha
    given_inputs = _pairs(args.input, "--input")
    declared = workflow.dispatch_inputs()
    if event in ("workflow_dispatch", "workflow_call") or given_inputs:
        inputs = dispatch_inputs(declared, given_inputs)
    else:
        inputs = {}
    payload = default_event(
        event,
        ref=ref,
        sha=sha,
        repository=repository,
        default_branch=default_branch,
        actor=info.actor,
        base_ref=base_ref,
        head_ref=head_ref,
        inputs=inputs,
    )
    if args.event_path:
        try:
            payload.update(json.loads(args.event_path.read_text()))
        except (OSError, ValueError) as exc:
            raise UsageError(f"--event-path {args.event_path}: {exc}") from None
    job_ids = args.job
    if job_ids:
        unknown = [j for j in job_ids if j not in workflow.jobs]
        if unknown:
            raise UsageError(f"no job {unknown[0]!r} in {workflow_path}; jobs: {', '.join(workflow.jobs)}")
    host_env = dict(base_env if base_env is not None else os.environ)
    env = dict(host_env)
    env.update(_pairs(args.env, "--env"))
    data_dir = resolve_data_dir(args.data_dir, host_env)
    xdg = Path(env.get("XDG_CACHE_HOME") or Path(env.get("HOME") or Path.home()) / ".cache")
    opts = RunOptions(
        workflow=workflow,
        workspace=workspace,
        repository=repository,
        sha=sha,
        ref=ref,
        default_branch=default_branch,
        actor=info.actor,
        event_name=event,
        event=payload,
        inputs=inputs,
        secrets=_pairs(args.secret, "--secret", from_env=True),
        vars=_pairs(args.var, "--var"),
        base_env=env,
        tool_cache=xdg / "runcache" / "toolcache",
        job_python=not args.host_python,
        pip_seed_cache=xdg / "runcache" / "pip-seed",
        keep_temp=args.keep_temp,
        debug=args.debug,
        base_ref=base_ref,
        head_ref=head_ref,
    )
    notes = _notes(workflow, event, job_ids)
    wait = lambda message: reporter.note(message)  # noqa: E731
    started = time.monotonic()
    server = None if args.no_cache else resolve_server(args, host_env, repository=repository, ref=ref)
    embedded = not args.no_cache and server is None
    matrix_filter = _pairs(args.matrix, "--matrix")
    try:
        # The embedded server needs the data directory to itself for the whole run; otherwise the lock
        # only guards the run numbering.
        with data_dir_lock(data_dir, wait) if embedded else contextlib.nullcontext():
            with contextlib.nullcontext() if embedded else data_dir_lock(data_dir, wait):
                key = f"{repository}/{opts.workflow.path.name}"
                opts.run_id, opts.run_number, log_root = allocate_run(data_dir, key)
                ignore_in_git(data_dir)
            try:
                endpoint = (
                    contextlib.nullcontext()
                    if args.no_cache
                    else cache_endpoint(
                        server_url=server.url if server else None,
                        token=server.token if server else None,
                        protocol=server.protocol if server else _protocol(args, host_env),
                        source=server.source if server else "",
                        data_dir=data_dir,
                        repository=repository,
                        ref=ref,
                        default_branch=default_branch,
                        base_ref=base_ref or None,
                    )
                )
                with endpoint as cache:
                    opts.cache = cache
                    show_logs = getattr(reporter, "show_log_paths", True)
                    reporter.header(_header_lines(opts, workflow_path, log_root, cache, info.is_git, show_logs))
                    if cache is not None and cache.kind == "external":
                        problem = _unreachable(cache.url)
                        if problem:
                            reporter.note(f"warning: {problem}; cache steps will warn and miss, as the action does")
                    for note in notes:
                        reporter.note(note)
                    try:
                        result = run_jobs(
                            opts, reporter, job_ids=job_ids, matrix_filter=matrix_filter, log_dir=log_root
                        )
                    except RunInterrupted as exc:
                        result = exc.result
            except ServiceError as exc:
                raise ServiceFailed(str(exc)) from None
    except OSError as exc:
        raise UsageError(str(exc)) from None
    result.notes = notes
    result.duration = time.monotonic() - started
    summary_file = write_run_summary(result.jobs, log_root)
    result.summary_file = summary_file
    show_logs = getattr(reporter, "show_log_paths", True)
    reporter.summary(
        result.jobs,
        total=result.duration,
        log_root=_short(log_root) if show_logs else None,
        summary_file=_short(summary_file) if summary_file and show_logs else None,
    )
    (log_root / "result.json").write_text(json.dumps(result.as_json(), indent=2))
    return result


def default_data_dir(env: dict[str, str]) -> Path:
    """The embedded server's per-user store: ``$XDG_STATE_HOME/runcache``, else ``~/.local/state/runcache``.

    Outside any repository (no stray ``.runcache/`` in the user's work tree), and the same for every run,
    so a run restores what an earlier one saved, as on GitHub (entries are kept per repository)."""
    state = env.get("XDG_STATE_HOME", "")
    if state and os.path.isabs(state):
        return Path(state) / "runcache"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "runcache"


def resolve_data_dir(flag: Path | None, env: dict[str, str]) -> Path:
    if flag is not None:
        return flag.expanduser()
    if env.get("RUNCACHE_DATA_DIR"):
        return Path(env["RUNCACHE_DATA_DIR"]).expanduser()
    return default_data_dir(env)


def ignore_in_git(data_dir: Path) -> None:
    """A data directory inside a git work tree gets a ``.gitignore`` of ``*``, so ``git status`` stays clean."""
    from runcache.runner.repo import git_toplevel

    if not data_dir.is_dir() or (data_dir / ".gitignore").exists():
        return
    top = git_toplevel(data_dir)
    if top is None or top.resolve() == data_dir.resolve():
        return
    with contextlib.suppress(OSError):
        (data_dir / ".gitignore").write_text("# runcache data (cache store, run logs): not for git\n*\n")


class _Server:
    def __init__(self, url: str, token: str, protocol: str, source: str) -> None:
        self.url, self.token, self.protocol, self.source = url, token, protocol, source


def _protocol(args: argparse.Namespace, env: dict[str, str]) -> str:
    protocol = args.protocol or env.get("RUNCACHE_PROTOCOL") or "v2"
    if protocol not in ("v1", "v2"):
        raise UsageError(f"RUNCACHE_PROTOCOL must be v1 or v2, got {protocol!r}")
    return protocol


def resolve_server(args: argparse.Namespace, env: dict[str, str], *, repository: str, ref: str) -> _Server | None:
    """The external server the cache steps use: ``--url`` (alias ``--server``), else ``RUNCACHE_URL``, as the
    other commands read it; ``None``: an embedded one (also with ``--embedded`` or ``--url ''``)."""
    if args.embedded or args.url == "":
        return None
    if args.url:
        url, source = args.url, "--url"
    elif env.get("RUNCACHE_URL"):
        url, source = env["RUNCACHE_URL"], "RUNCACHE_URL"
    else:
        return None
    protocol = _protocol(args, env)
    token = args.token or env.get("RUNCACHE_TOKEN") or ""
    if not token:
        given = "--url" if source == "--url" else f"RUNCACHE_URL is set ({url}), so the run uses that server; it"
        raise UsageError(
            f"{given} needs a token: pass --token or set RUNCACHE_TOKEN "
            f"(runcache token --repo {repository} --ref {ref}, on the server's data directory)"
            + ("; or pass --embedded for an embedded server" if source == "RUNCACHE_URL" else "")
        )
    return _Server(url, token, protocol, source)


def write_run_summary(jobs: list, log_root: Path) -> Path | None:
    """``<run>/summary.md``: every job's ``$GITHUB_STEP_SUMMARY`` content (also in ``<run>/<job>/summary.md``)."""
    with_summary = [j for j in jobs if j.summary.strip()]
    if not with_summary:
        return None
    if len(with_summary) == 1:
        text = with_summary[0].summary
    else:
        text = "\n\n".join(f"## {j.name}\n\n{j.summary}" for j in with_summary)
    path = log_root / "summary.md"
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return path


def _unreachable(url: str) -> str | None:
    import httpx

    try:
        r = httpx.get(f"{url}/healthz", timeout=5)
    except httpx.HTTPError as exc:
        return f"cannot reach the cache server {url} ({type(exc).__name__}: {exc})"
    if r.status_code != 200:
        return f"the cache server {url} answers /healthz with HTTP {r.status_code}"
    return None


class Listed:
    """``--list`` printed the jobs; nothing ran."""


def list_jobs(workflow, path: Path, reporter) -> None:
    from rich.table import Table

    from runcache.runner.actions.registry import resolve_action
    from runcache.runner.workflow import job_order

    console = reporter.console
    console.print(f"{workflow.name or path.name}  ({_short(path)}; on: {', '.join(workflow.on)})")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("Job", "Needs", "Runs on", "Steps"):
        table.add_column(col, overflow="fold")
    for job_id in job_order(workflow):
        job = workflow.jobs[job_id]
        if job.unsupported:
            table.add_row(job_id, ", ".join(job.needs), "", f"cannot run: {job.unsupported}")
            continue
        names = []
        for step in job.steps:
            label = step.name or (
                f"Run {step.uses}" if step.uses else f"Run {(step.run or '').strip().splitlines()[0]}"
            )
            if step.uses and resolve_action(step.uses) is None:
                label += " (not supported)"
            names.append(label)
        runs_on = job.runs_on if isinstance(job.runs_on, str) else ", ".join(map(str, job.runs_on or []))
        table.add_row(job_id, ", ".join(job.needs), runs_on, "\n".join(names))
    console.print(table)


def _short(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _notes(workflow, event: str, job_ids: list[str] | None) -> list[str]:
    from runcache.runner.contexts import runner_os

    notes: list[str] = []
    if not workflow.triggered_by(event):
        notes.append(
            f"note: this workflow is not triggered by '{event}' (on: {', '.join(workflow.on)}); running it anyway"
        )
    selected = job_ids or list(workflow.jobs)
    host = runner_os().lower()
    for job_id in selected:
        job = workflow.jobs[job_id]
        labels = job.runs_on if isinstance(job.runs_on, list) else [job.runs_on]
        text = " ".join(str(label).lower() for label in labels if label)
        for other in ("windows", "macos", "ubuntu"):
            if other in text and not (other == host or (other == "ubuntu" and host == "linux")):
                notes.append(f"note: job '{job_id}' runs on {text}; runcache run runs it on this {runner_os()} host")
                break
        if job_ids and job.needs:
            notes.append(
                f"note: job '{job_id}' needs {', '.join(job.needs)}; with --job it runs alone, so needs.* is empty"
            )
    return notes


def _header_lines(
    opts, workflow_path: Path, log_root: Path, cache, is_git: bool, show_paths: bool = True
) -> list[tuple[str, str]]:
    """The run's header; ``show_paths=False`` leaves out the data and log folders (they will not outlive the demo)."""
    wf = opts.workflow
    title = (
        f"runcache run · {wf.name} ({_short(workflow_path)})" if wf.name else f"runcache run · {_short(workflow_path)}"
    )
    lines = [("", title)]
    from runcache.runner.repo import ZERO_SHA

    if opts.sha != ZERO_SHA:
        commit = opts.sha[:12]
    else:
        commit = "no commits yet" if is_git else "no commit (not a git repository)"
    lines.append(("event", f"{opts.event_name} · {opts.ref} · {commit}"))
    lines.append(("repo", f"{opts.repository} · workspace {opts.workspace}"))
    if cache is None:
        lines.append(("cache", "disabled (--no-cache)"))
    elif cache.kind == "embedded":
        data = f" · data {_short(cache.data_dir)}" if show_paths else ""
        lines.append(("cache", f"embedded server {cache.url}{data} · {cache.protocol}"))
    else:
        source = " (from RUNCACHE_URL)" if cache.source == "RUNCACHE_URL" else ""
        lines.append(("cache", f"{cache.url}{source} · {cache.protocol}"))
    if opts.job_python:
        from runcache.runner.jobpython import base_interpreter

        lines.append(("python", f"a fresh virtual environment per job, of {base_interpreter()}"))
    else:
        lines.append(("python", "as on the host's PATH (--host-python)"))
    run = f"#{opts.run_number} (id {opts.run_id})"
    lines.append(("run", f"{run} · logs {_short(log_root)}" if show_paths else run))
    return lines
