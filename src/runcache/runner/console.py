"""What ``runcache run`` prints: a line per step with a status mark and duration, the step logs folded
(on a terminal a live tail while a step runs, the full log of a failing step), annotations, then a
summary of steps and cache operations. Without a terminal (CI logs, pipes) every log line is printed,
indented under its step, so nothing is lost.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from runcache.runner.engine import JobResult, JobRun, StepRecord

TAIL_LINES = 6
FAILED_TAIL = 40

MARKS = {
    "success": ("✓", "green"),
    "failure": ("✗", "red"),
    "cancelled": ("⊘", "red"),
    "skipped": ("○", "bright_black"),
    "continue": ("!", "yellow"),
}
CACHE_STYLE = {
    "hit": "green",
    "restore-key": "yellow",
    "miss": "bright_black",
    "saved": "green",
    "skipped": "bright_black",
    "failed": "red",
    "not-saved": "yellow",
}


def human_bytes(n: int) -> str:
    if n <= 0:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    minutes, secs = divmod(round(s), 60)
    return f"{minutes}m{secs:02d}s"


def mark(rec: StepRecord) -> tuple[str, str]:
    if rec.outcome == "failure" and rec.conclusion == "success":
        return MARKS["continue"]
    return MARKS.get(rec.outcome or "", ("?", "white"))


def outcome_text(rec: StepRecord) -> str:
    if rec.outcome == "failure" and rec.conclusion == "success":
        return "failure (continue-on-error)"
    if rec.timed_out:
        return "failure (timed out)"
    return rec.outcome or ""


def cache_result_text(c: Any) -> str:
    if c.result == "restore-key":
        return f"restore-key hit ({c.matched_key})"
    if c.result == "hit":
        return "exact hit"
    if c.result == "skipped":
        return "not saved (exact hit)"
    if c.result == "not-saved":
        return "not saved" + (f": {c.message}" if c.message else "")
    if c.result == "failed":
        return "failed" + (f": {c.message}" if c.message else "")
    return c.result


class _Running:
    """The live block for the step that is running: spinner, name, elapsed time, progress, log tail."""

    def __init__(self, rec: StepRecord) -> None:
        self.rec = rec
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.progress = ""
        self.lock = threading.Lock()
        self.spinner = Spinner("dots", style="cyan")

    def __rich__(self) -> Group:
        with self.lock:
            elapsed = time.monotonic() - self.rec.started
            head = Text.assemble(
                (f"{self.rec.name}", "bold"), ("  " + seconds(elapsed), "bright_black"), ("  " + self.progress, "cyan")
            )
            self.spinner.update(text=head)
            lines = [Text("    " + line, style="bright_black", overflow="ellipsis", no_wrap=True) for line in self.tail]
        return Group(self.spinner, *lines)


class ConsoleReporter:
    def __init__(
        self,
        console: Console,
        *,
        stream: bool | None = None,
        verbose: bool = False,
        github_groups: bool = False,
        show_log_paths: bool = True,
    ) -> None:
        self.console = console
        # False where the logs will not outlive the command (runcache demo in a temporary folder).
        self.show_log_paths = show_log_paths
        # Inside a GitHub Actions job, wrap each step's log in ::group:: so the job log folds it.
        self.github_groups = github_groups and not console.is_terminal
        self.interactive = console.is_terminal
        # stream: print every log line (CI logs, pipes, --verbose); otherwise fold them on the terminal
        self.stream = (not self.interactive) if stream is None else stream
        if verbose:
            self.stream = True
        self._live: Live | None = None
        self._running: _Running | None = None
        self._lock = threading.Lock()
        self._logs: dict[int, list[tuple[str, str]]] = {}

    # --- run-level messages --------------------------------------------------------------------
    def header(self, lines: list[tuple[str, str]]) -> None:
        for label, value in lines:
            if label:
                self.console.print(Text.assemble((f"{label:<9}", "bright_black"), value))
            else:
                self.console.print(Text(value, style="bold"))

    def note(self, message: str, style: str = "yellow") -> None:
        self.console.print(Text(message, style=style))

    # --- engine callbacks ----------------------------------------------------------------------
    def job_started(self, job: JobRun) -> None:
        self.console.print()
        runs_on = job.job.runs_on
        shown = ", ".join(map(str, runs_on)) if isinstance(runs_on, list) else str(runs_on or "")
        self.console.print(
            Text.assemble(
                ("● ", "cyan"), (f"Job {job.name}", "bold"), (f"  (runs-on: {shown})" if shown else "", "bright_black")
            )
        )

    def step_started(self, rec: StepRecord) -> None:
        self._logs[rec.number] = []
        if self.stream:
            if self.github_groups:
                self.console.print(f"::group::{rec.name}", markup=False, highlight=False)
            else:
                self.console.print(Text.assemble(("  ▶ ", "cyan"), (rec.name, "bold")))
            return
        if self.interactive:
            self._running = _Running(rec)
            self._live = Live(self._running, console=self.console, transient=True, refresh_per_second=10)
            self._live.start()

    def step_line(self, rec: StepRecord, text: str, kind: str = "text") -> None:
        with self._lock:
            self._logs.setdefault(rec.number, []).append((text, kind))
        if self.stream:
            self.console.print(self._log_text(text, kind), soft_wrap=True)
            return
        running = self._running
        if running is not None and running.rec is rec:
            with running.lock:
                running.tail.append(text)

    def step_progress(self, rec: StepRecord, text: str) -> None:
        running = self._running
        if running is not None and running.rec is rec:
            with running.lock:
                running.progress = text

    def step_finished(self, rec: StepRecord) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            self._running = None
        if self.stream and self.github_groups and rec.number in self._logs:
            self.console.print("::endgroup::", markup=False, highlight=False)
        symbol, style = mark(rec)
        line = Text.assemble(
            ("  " + symbol + " ", style),
            (rec.name, "bold" if rec.outcome != "skipped" else "bright_black"),
        )
        if rec.outcome == "skipped":
            line.append("  skipped", style="bright_black")
        else:
            line.append("  " + seconds(rec.duration), style="bright_black")
        if rec.outcome == "failure" and rec.conclusion == "success":
            line.append("  failed, continue-on-error", style="yellow")
        elif rec.timed_out:
            line.append("  timed out", style="red")
        self.console.print(line)
        if not self.stream:
            logs = self._logs.get(rec.number, [])
            if rec.failed and rec.conclusion != "success":
                shown = logs[-FAILED_TAIL:]
                if len(logs) > len(shown):
                    self.console.print(Text(f"      … {len(logs) - len(shown)} earlier lines", style="bright_black"))
                for text, kind in shown:
                    self.console.print(self._log_text(text, kind), soft_wrap=True)
            else:
                for annotation in rec.annotations:
                    self.console.print(self._log_text(annotation.render(), "annotation"), soft_wrap=True)
            for c in rec.caches:
                self.console.print(self._cache_line(c))
            if rec.log_path and rec.failed and logs and self.show_log_paths:
                self.console.print(Text(f"      full log: {rec.log_path}", style="bright_black"))
        self._logs.pop(rec.number, None)

    def job_finished(self, result: JobResult) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if result.error:
            style = "red" if result.result in ("failure", "cancelled") else "yellow"
            self.console.print(Text(f"  {result.error}", style=style))

    # --- pieces --------------------------------------------------------------------------------
    @staticmethod
    def _log_text(text: str, kind: str) -> Text:
        if kind == "annotation":
            style = "red" if text.startswith("Error") else "yellow" if text.startswith("Warning") else "cyan"
            return Text("      " + text, style=style)
        if kind == "header":
            return Text("      " + text, style="bright_black")
        if kind == "group":
            return Text("      ▸ " + text, style="bold")
        return Text("      │ " + text)

    @staticmethod
    def _cache_line(c: Any) -> Text:
        style = CACHE_STYLE.get(c.result, "white")
        verb = {"restore": "restore", "lookup": "lookup", "save": "save"}[c.operation]
        t = Text.assemble(
            ("      ↳ cache ", "bright_black"), (f"{verb}: ", "bright_black"), (cache_result_text(c), style)
        )
        t.append(f"  key {c.key}", style="bright_black")
        if c.bytes:
            t.append(f"  {human_bytes(c.bytes)} in {c.seconds:.2f}s", style="bright_black")
        return t

    # --- summary -------------------------------------------------------------------------------
    def summary(
        self, results: list[JobResult], *, total: float, log_root: str | None, summary_file: str | None = None
    ) -> None:
        self.console.print()
        for result in results:
            if len(results) > 1:
                self.console.print(Text(f"Job {result.name}", style="bold"))
            if result.steps:
                table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
                table.add_column("Step", overflow="fold")
                table.add_column("Outcome")
                table.add_column("Time", justify="right")
                for rec in result.steps:
                    symbol, style = mark(rec)
                    table.add_row(
                        escape(rec.name),
                        Text(f"{symbol} {outcome_text(rec)}", style=style),
                        "" if rec.outcome == "skipped" else seconds(rec.duration),
                    )
                self.console.print(table)
            caches = result.caches
            if caches:
                self.console.print()
                table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
                table.add_column("Cache step", overflow="fold")
                table.add_column("Key", overflow="fold")
                table.add_column("Result", overflow="fold")
                table.add_column("Size", justify="right")
                table.add_column("Time", justify="right")
                for c in caches:
                    table.add_row(
                        escape(c.step),
                        escape(c.key),
                        Text(f"{c.operation}: {cache_result_text(c)}", style=CACHE_STYLE.get(c.result, "white")),
                        human_bytes(c.bytes),
                        f"{c.seconds:.2f}s",
                    )
                self.console.print(table)
            if result.summary.strip():
                from rich.markdown import Markdown
                from rich.panel import Panel

                self.console.print()
                self.console.print(Panel(Markdown(result.summary), title="Job summary", title_align="left"))
            self.console.print()
        if summary_file:
            self.console.print(Text(f"job summary ($GITHUB_STEP_SUMMARY): {summary_file}", style="bright_black"))
        overall = overall_result(results)
        symbol, style = MARKS.get(overall if overall != "skipped" else "skipped", ("?", "white"))
        words = {"success": "succeeded", "failure": "failed", "cancelled": "was cancelled", "skipped": "was skipped"}
        what = f"Job {results[0].name}" if len(results) == 1 else f"Workflow ({len(results)} jobs)"
        line = Text.assemble((f"{symbol} ", style), (f"{what} {words.get(overall, overall)}", f"bold {style}"))
        line.append(f" in {seconds(total)}", style="bright_black")
        if log_root:
            line.append(f" · logs {log_root}", style="bright_black")
        self.console.print(line)


def overall_result(results: list[JobResult]) -> str:
    """The run's conclusion: a failed job with ``continue-on-error: true`` does not fail it."""
    values = ["success" if r.allowed_failure else r.result for r in results]
    if not values:
        return "skipped"
    if "cancelled" in values:
        return "cancelled"
    if "failure" in values:
        return "failure"
    if all(v == "skipped" for v in values):
        return "skipped"
    return "success"
