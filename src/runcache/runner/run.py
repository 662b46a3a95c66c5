"""Running a workflow's jobs (one, or all in ``needs`` order, each matrix combination in turn)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runcache.runner.engine import JobResult, JobRun, Reporter, RunOptions
from runcache.runner.matrix import MatrixError, expand_matrix, filter_combos
from runcache.runner.workflow import Workflow, job_order

KEEP_RUNS = 30


@dataclass
class RunResult:
    workflow: Workflow
    options: RunOptions
    jobs: list[JobResult] = field(default_factory=list)
    duration: float = 0.0
    log_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    summary_file: Path | None = None  # <run>/summary.md, when a step wrote a job summary

    @property
    def result(self) -> str:
        from runcache.runner.console import overall_result

        return overall_result(self.jobs)

    @property
    def exit_code(self) -> int:
        return {"success": 0, "skipped": 0, "failure": 1, "cancelled": 130}.get(self.result, 1)

    def as_json(self) -> dict[str, Any]:
        o = self.options
        cache = o.cache
        return {
            "workflow": str(self.workflow.path),
            "name": self.workflow.name,
            "event": o.event_name,
            "ref": o.ref,
            "sha": o.sha,
            "repository": o.repository,
            "workspace": str(o.workspace),
            "run_id": o.run_id,
            "run_number": o.run_number,
            "cache": None
            if cache is None
            else {
                "url": cache.url,
                "kind": cache.kind,
                "protocol": cache.protocol,
                "data_dir": str(cache.data_dir or ""),
            },
            "result": self.result,
            "exit_code": self.exit_code,
            "duration": round(self.duration, 3),
            "logs": str(self.log_dir) if self.log_dir else None,
            "summary": str(self.summary_file) if self.summary_file else None,
            "notes": self.notes,
            "jobs": [j.as_json() for j in self.jobs],
        }


def run_jobs(
    opts: RunOptions,
    reporter: Reporter,
    *,
    job_ids: list[str] | None = None,
    matrix_filter: dict[str, str] | None = None,
    log_dir: Path | None = None,
) -> RunResult:
    wf = opts.workflow
    started = time.monotonic()
    out = RunResult(wf, opts, log_dir=log_dir)
    selected = job_ids or job_order(wf)
    by_job: dict[str, list[JobResult]] = {}
    for job_id in [j for j in job_order(wf) if j in selected]:
        job = wf.jobs[job_id]
        needs: dict[str, Any] = {}
        for need in job.needs:
            results = by_job.get(need)
            if results is None:
                continue
            outputs: dict[str, str] = {}
            for r in results:
                outputs.update(r.outputs)
            needs[need] = {"result": _aggregate(results), "outputs": outputs}

        def needs_status(kind: str, job=job, needs=needs) -> bool:
            results = [needs[n]["result"] for n in job.needs if n in needs]
            if kind == "success":
                return all(r == "success" for r in results)
            if kind == "failure":
                return any(r == "failure" for r in results)
            return any(r == "cancelled" for r in results)

        try:
            matrix = job.strategy.get("matrix")
            if isinstance(matrix, str):
                raise MatrixError("a matrix given as one expression is not supported by runcache run")
            combos = expand_matrix(matrix)
        except MatrixError as exc:
            res = JobResult(job_id, job.name or job_id, "failure", 0.0, [], error=f"strategy.matrix: {exc}")
            reporter.job_finished(res)
            by_job[job_id] = [res]
            out.jobs.append(res)
            continue
        if matrix is not None:
            total = len(combos)
            combos = filter_combos(combos, matrix_filter or {})
            if not combos:
                res = JobResult(
                    job_id, job.name or job_id, "skipped", 0.0, [], error="no matrix combination matches --matrix"
                )
                reporter.job_finished(res)
                by_job[job_id] = [res]
                out.jobs.append(res)
                continue
        runs: list[dict[str, Any] | None] = list(combos) if matrix is not None else [None]
        fail_fast = job.strategy.get("fail-fast", True) is not False
        results: list[JobResult] = []
        for index, combo in enumerate(runs):
            if fail_fast and any(r.result in ("failure", "cancelled") and not r.allowed_failure for r in results):
                res = JobResult(
                    job_id, job.name or job_id, "cancelled", 0.0, [], matrix=combo, error="cancelled by fail-fast"
                )
                reporter.job_finished(res)
                results.append(res)
                continue
            job_log = None
            if log_dir:
                job_log = log_dir / (job_id if combo is None else f"{job_id}-{index + 1}")
                job_log.mkdir(parents=True, exist_ok=True)
            strategy = {
                "fail-fast": fail_fast,
                "job-index": index,
                "job-total": total if matrix is not None else 1,
                "max-parallel": 1,
            }
            runner = JobRun(
                opts,
                job,
                reporter,
                matrix=combo,
                strategy=strategy,
                needs=needs,
                needs_status=needs_status if job_ids is None else None,
                log_dir=job_log,
            )
            try:
                results.append(runner.run())
            except KeyboardInterrupt:
                res = JobResult(
                    job_id, runner.name, "cancelled", 0.0, runner.records, matrix=combo, error="interrupted"
                )
                results.append(res)
                by_job[job_id] = results
                out.jobs.extend(results)
                out.duration = time.monotonic() - started
                raise RunInterrupted(out) from None
        by_job[job_id] = results
        out.jobs.extend(results)
    out.duration = time.monotonic() - started
    return out


class RunInterrupted(Exception):
    def __init__(self, result: RunResult) -> None:
        super().__init__("interrupted")
        self.result = result


def _aggregate(results: list[JobResult]) -> str:
    values = ["success" if r.allowed_failure else r.result for r in results]
    if "cancelled" in values:
        return "cancelled"
    if "failure" in values:
        return "failure"
    if values and all(v == "skipped" for v in values):
        return "skipped"
    return "success"


# --------------------------------------------------------------------------- run bookkeeping


@contextlib.contextmanager
def data_dir_lock(data_dir: Path, wait_message=None) -> Iterator[None]:
    """One local run at a time per data directory (run numbers, the embedded server's start-up recovery)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "runner.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if wait_message:
                wait_message(f"waiting for another runcache run that uses {data_dir} ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def allocate_run(data_dir: Path, workflow_key: str) -> tuple[str, str, Path]:
    """(run_id, run_number, log folder): ids grow per data directory, numbers per workflow."""
    runs = data_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    state_path = runs / "state.json"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        state = {}
    run_id = int(state.get("last_run_id", 0)) + 1
    numbers = state.setdefault("run_numbers", {})
    number = int(numbers.get(workflow_key, 0)) + 1
    state["last_run_id"] = run_id
    numbers[workflow_key] = number
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(state_path)
    folder = runs / str(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    _prune(runs)
    return str(run_id), str(number), folder


def _prune(runs: Path) -> None:
    numbered = sorted((p for p in runs.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    for old in numbered[:-KEEP_RUNS]:
        shutil.rmtree(old, ignore_errors=True)
