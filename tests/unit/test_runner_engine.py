"""The job runner: conditions, contexts, env, shells, file commands, continue-on-error, timeouts, post steps."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runcache.runner.engine import JobResult, RunOptions, StepRecord
from runcache.runner.run import run_jobs
from runcache.runner.workflow import parse_workflow


class Collector:
    """A reporter that keeps every line per step."""

    def __init__(self) -> None:
        self.lines: dict[int, list[tuple[str, str]]] = {}
        self.finished: list[StepRecord] = []
        self.jobs: list[JobResult] = []

    def job_started(self, job: Any) -> None:
        pass

    def step_started(self, rec: StepRecord) -> None:
        self.lines.setdefault(rec.number, [])

    def step_line(self, rec: StepRecord, text: str, kind: str = "text") -> None:
        self.lines.setdefault(rec.number, []).append((text, kind))

    def step_progress(self, rec: StepRecord, text: str) -> None:
        pass

    def step_finished(self, rec: StepRecord) -> None:
        self.finished.append(rec)

    def job_finished(self, result: JobResult) -> None:
        self.jobs.append(result)

    def text(self, number: int) -> str:
        return "\n".join(t for t, _ in self.lines.get(number, []))


def run(tmp_path: Path, body: str, *, job: str | None = None, env: dict[str, str] | None = None, **opts: Any):
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    workflow = parse_workflow(textwrap.dedent(body), ws / ".github" / "workflows" / "w.yml")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    base.update(env or {})
    options = RunOptions(
        workflow=workflow,
        workspace=ws,
        repository="octo/app",
        sha="a" * 40,
        ref="refs/heads/main",
        base_env=base,
        log_dir=None,
        tool_cache=tmp_path / "toolcache",
        **opts,
    )
    collector = Collector()
    result = run_jobs(options, collector, job_ids=[job] if job else None, log_dir=tmp_path / "logs")
    return result, collector


def steps_of(result) -> dict[str, StepRecord]:
    return {s.name: s for s in result.jobs[0].steps}


def test_outputs_env_and_path_flow_to_later_steps(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "hello-tool"
    tool.write_text("#!/bin/sh\necho tool says hi\n")
    tool.chmod(0o755)
    result, c = run(
        tmp_path,
        f"""
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - id: produce
                name: produce
                run: |
                  echo "single=one" >> "$GITHUB_OUTPUT"
                  {{
                    echo "multi<<EOF_MARK"
                    echo "line 1"
                    echo ""
                    echo "line 3"
                    echo "EOF_MARK"
                  }} >> "$GITHUB_OUTPUT"
                  echo "FROM_STEP=set by produce" >> "$GITHUB_ENV"
                  echo "{tmp_path / "bin"}" >> "$GITHUB_PATH"
              - name: consume
                run: |
                  echo "single=${{{{ steps.produce.outputs.single }}}}"
                  echo "env=$FROM_STEP expr=${{{{ env.FROM_STEP }}}}"
                  hello-tool
                  printf '%s' "${{{{ steps.produce.outputs.multi }}}}" | od -c | head -2
        """,
    )
    assert result.result == "success"
    text = c.text(2)
    assert "single=one" in text
    assert "env=set by produce expr=set by produce" in text
    assert "tool says hi" in text
    assert steps_of(result)["produce"].outputs["multi"] == "line 1\n\nline 3"


def test_failed_step_still_applies_outputs_and_env(tmp_path: Path) -> None:
    result, c = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - id: failing
                run: |
                  echo "partial=kept" >> "$GITHUB_OUTPUT"
                  echo "AFTER=yes" >> "$GITHUB_ENV"
                  exit 3
              - name: runs on failure
                if: failure()
                run: echo "got ${{ steps.failing.outputs.partial }} $AFTER ${{ steps.failing.outcome }}"
              - name: skipped after failure
                run: echo never
        """,
    )
    s = steps_of(result)
    assert result.result == "failure" and result.exit_code == 1
    assert s['Run echo "partial=kept" >> "$GITHUB_OUTPUT"'].outcome == "failure"
    assert "Process completed with exit code 3." in c.text(1)
    assert "got kept yes failure" in c.text(2)
    assert s["skipped after failure"].outcome == "skipped"


def test_malformed_output_file_fails_the_step(tmp_path: Path) -> None:
    result, c = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - run: printf 'x<<END\\nno end\\n' >> "$GITHUB_OUTPUT"
        """,
    )
    assert result.result == "failure"
    assert "Unable to process file command 'output' successfully" in c.text(1)


def test_continue_on_error_outcome_vs_conclusion(tmp_path: Path) -> None:
    result, c = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - id: flaky
                continue-on-error: true
                run: exit 1
              - name: report
                run: >-
                  echo "outcome=${{ steps.flaky.outcome }} conclusion=${{ steps.flaky.conclusion }}
                  job=${{ job.status }}"
              - id: expr
                continue-on-error: ${{ github.event_name == 'push' }}
                run: exit 2
              - name: still success
                if: success()
                run: echo ok
        """,
    )
    s = steps_of(result)
    assert result.result == "success"
    assert (s["Run exit 1"].outcome, s["Run exit 1"].conclusion) == ("failure", "success")
    assert "outcome=failure conclusion=success job=success" in c.text(2)
    assert s["Run exit 2"].conclusion == "success"
    assert s["still success"].outcome == "success"


def test_if_implicit_success_and_status_functions(tmp_path: Path) -> None:
    result, _ = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - run: exit 1
              - name: plain condition is wrapped in success()
                if: github.event_name == 'push'
                run: echo no
              - name: always
                if: always()
                run: echo yes
              - name: mixed text is always true (format string), but still wrapped
                if: ${{ github.event_name }} == 'nope'
                run: echo no
              - name: not cancelled
                if: ${{ !cancelled() }}
                run: echo yes
              - name: false literal
                if: false
                run: echo no
        """,
    )
    outcomes = [s.outcome for s in result.jobs[0].steps]
    assert outcomes == ["failure", "skipped", "success", "skipped", "success", "skipped"]


def test_default_env_and_contexts(tmp_path: Path) -> None:
    _, c = run(
        tmp_path,
        """
        name: Ctx
        on: push
        env:
          WF: workflow
        jobs:
          build:
            runs-on: x
            env:
              JOB: job-${{ github.ref_name }}
            steps:
              - run: |
                  echo "CI=$CI GA=$GITHUB_ACTIONS ws=$GITHUB_WORKSPACE"
                  echo "ref=$GITHUB_REF name=$GITHUB_REF_NAME sha=$GITHUB_SHA" \\
                    "repo=$GITHUB_REPOSITORY owner=$GITHUB_REPOSITORY_OWNER"
                  echo "event=$GITHUB_EVENT_NAME job=$GITHUB_JOB wf=$GITHUB_WORKFLOW run=$GITHUB_RUN_NUMBER"
                  echo "os=$RUNNER_OS arch=$RUNNER_ARCH temp=$RUNNER_TEMP"
                  echo "ctx os=${{ runner.os }} temp=${{ runner.temp }} ws=${{ github.workspace }}"
                  echo "WF=$WF JOB=$JOB"
                  test -d "$RUNNER_TEMP" && test -f "$GITHUB_EVENT_PATH" && echo "files ok"
                  echo "action=$GITHUB_ACTION"
        """,
    )
    text = c.text(1)
    ws = str((tmp_path / "ws").resolve())
    assert f"CI=true GA=true ws={ws}" in text
    assert f"ref=refs/heads/main name=main sha={'a' * 40} repo=octo/app owner=octo" in text
    assert "event=push job=build wf=Ctx run=1" in text
    assert "os=Linux" in text or "os=macOS" in text
    assert "temp=/" in text and "files ok" in text
    assert f"ws={ws}" in text.split("ctx", 1)[1]
    assert "WF=workflow JOB=job-main" in text


def test_env_precedence_step_over_github_env_over_job(tmp_path: Path) -> None:
    _, c = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            env:
              V: job
              CASE: upper
            steps:
              - run: echo "V=from-github-env" >> "$GITHUB_ENV"
              - run: echo "plain=$V expr=${{ env.V }} lower=[${{ env.case }}]"
              - env:
                  V: step
                run: echo "plain=$V expr=${{ env.V }}"
        """,
    )
    assert "plain=from-github-env expr=from-github-env lower=[]" in c.text(2)  # env keys are case-sensitive
    assert "plain=step expr=step" in c.text(3)


def test_shells(tmp_path: Path) -> None:
    result, c = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - name: default bash -e has no pipefail
                run: false | true; echo "survived $0"
              - name: bash has pipefail
                shell: bash
                continue-on-error: true
                run: false | true; echo never
              - name: sh
                shell: sh
                run: echo "sh works"
              - name: python
                shell: python
                run: |
                  import sys
                  print("python", sys.version_info[0], __file__.endswith(".py"))
              - name: custom
                shell: perl {0}
                run: print "perl via custom\\n";
        """,
    )
    s = steps_of(result)
    assert s["default bash -e has no pipefail"].outcome == "success"
    assert "shell: " in c.text(1) and " -e {0}" in c.text(1)
    assert s["bash has pipefail"].outcome == "failure"
    assert "--noprofile --norc -eo pipefail {0}" in c.text(2)
    assert "sh works" in c.text(3)
    assert "python 3 True" in c.text(4)
    if s["custom"].outcome == "success":
        assert "perl via custom" in c.text(5)
    else:  # no perl on this machine
        assert "perl: command not found" in c.text(5)


def test_invalid_shell_and_missing_working_directory(tmp_path: Path) -> None:
    _, c = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - shell: nonsense
                continue-on-error: true
                run: echo x
              - working-directory: does/not/exist
                run: echo x
        """,
    )
    assert "must contain '{0}'" in c.text(1)
    assert "with working directory" in c.text(2) and "No such file or directory" in c.text(2)


def test_working_directory_and_defaults(tmp_path: Path) -> None:
    (tmp_path / "ws" / "sub" / "deeper").mkdir(parents=True)
    _, c = run(
        tmp_path,
        """
        on: push
        defaults:
          run:
            shell: sh
            working-directory: sub
        jobs:
          a:
            runs-on: x
            steps:
              - run: echo "at $(basename "$PWD") with $0"
              - working-directory: sub/deeper
                run: echo "at $(basename "$PWD")"
        """,
    )
    assert "at sub with " in c.text(1) and "sh" in c.text(1).split("with", 1)[1]
    assert "at deeper" in c.text(2)


def test_step_timeout(tmp_path: Path) -> None:
    result, c = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - name: slow
                timeout-minutes: 0.01
                run: sleep 30
        """,
    )
    s = steps_of(result)["slow"]
    assert s.outcome == "failure" and s.timed_out
    assert s.duration < 15
    assert "has timed out after 0.01 minutes" in c.text(1)


def test_job_timeout_cancels(tmp_path: Path) -> None:
    result, _ = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            timeout-minutes: 0.01
            steps:
              - run: sleep 30
              - if: always()
                run: echo cleanup
        """,
    )
    assert result.jobs[0].result == "cancelled"
    assert "exceeded the maximum execution time" in result.jobs[0].error
    assert result.exit_code == 130


def test_expression_errors_fail_the_step(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "dangling").symlink_to(tmp_path / "missing")
    result, c = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - run: echo ${{ fromJSON('not json') }}
                continue-on-error: true
              - run: echo ${{ hashFiles('**') }}
        """,
    )
    assert "Error parsing fromJson" in c.text(1)
    assert "hashFiles(**) failed" in c.text(2)
    assert result.result == "failure"


def test_hashfiles_is_evaluated_when_the_step_starts(tmp_path: Path) -> None:
    _, c = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - run: echo "before=[${{ hashFiles('made.txt') }}]"; echo hi > made.txt
              - run: echo "after=[${{ hashFiles('made.txt') }}]"
        """,
    )
    import hashlib

    expected = hashlib.sha256(hashlib.sha256(b"hi\n").digest()).hexdigest()
    assert "before=[]" in c.text(1)
    assert f"after=[{expected}]" in c.text(2)


def test_workflow_commands_and_masking(tmp_path: Path) -> None:
    result, c = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - id: s
                run: |
                  echo "::add-mask::tok3n"
                  echo "the token is tok3n"
                  echo "::warning title=Heads up::careful"
                  echo "::set-output name=old::style"
                  echo "secret=${{ secrets.API_KEY }}"
                  echo "# Summary for tok3n" >> "$GITHUB_STEP_SUMMARY"
              - run: echo "${{ steps.s.outputs.old }}"
        """,
        secrets={"API_KEY": "hunter2"},
    )
    text = c.text(1)
    printed = [t for t, kind in c.lines[1] if kind == "text"]
    assert "the token is ***" in printed and not any("tok3n" in t for t in printed)
    assert "secret=***" in text and "hunter2" not in text  # secrets are masked everywhere, the script too
    assert "Warning: Heads up: careful" in text
    assert "set-output` command is deprecated" in text
    assert "style" in c.text(2)
    assert result.jobs[0].summary == "# Summary for ***\n"
    rec = steps_of(result)['Run echo "::add-mask::tok3n"']
    assert [a.level for a in rec.annotations] == ["warning", "warning"]
    assert "the token is ***" in rec.log_path.read_text()


def test_skipped_step_has_no_outputs_and_skipped_outcome(tmp_path: Path) -> None:
    _, c = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - id: never
                if: false
                run: echo "x=1" >> "$GITHUB_OUTPUT"
              - run: echo "[${{ steps.never.outputs.x }}] ${{ steps.never.outcome }} ${{ steps.never.conclusion }}"
        """,
    )
    assert "[] skipped skipped" in c.text(2)


def test_unsupported_action_names_the_supported_ones(tmp_path: Path) -> None:
    result, c = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - uses: actions/setup-node@v4
              - if: always()
                uses: ./local-action
        """,
    )
    assert result.result == "failure"
    assert "cannot run 'actions/setup-node@v4'" in c.text(1)
    for name in (
        "actions/checkout@*",
        "actions/cache@*",
        "actions/cache/restore@*",
        "actions/cache/save@*",
        "actions/setup-python@*",
    ):
        assert name in c.text(1)
    assert "local actions" in c.text(2)


def test_post_steps_run_in_reverse_order_with_post_if(tmp_path: Path) -> None:
    # checkout's post runs always(); cache's post runs on success() only (and needs no service here).
    result, _ = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - uses: actions/checkout@v4
              - name: first cache
                uses: actions/cache@v4
                with: {path: x, key: k1}
              - name: second cache
                uses: actions/cache@v4
                with: {path: x, key: k2}
        """,
    )
    names = [(s.name, s.outcome) for s in result.jobs[0].steps]
    assert names == [
        ("Run actions/checkout@v4", "success"),
        ("first cache", "success"),
        ("second cache", "success"),
        ("Post second cache", "success"),
        ("Post first cache", "success"),
        ("Post Run actions/checkout@v4", "success"),
    ]
    result, _ = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - uses: actions/checkout@v4
              - name: the cache
                uses: actions/cache@v4
                with: {path: x, key: k1}
              - run: exit 1
              - name: never registered
                uses: actions/cache@v4
                with: {path: x, key: k2}
        """,
    )
    names = [(s.name, s.outcome) for s in result.jobs[0].steps]
    assert names == [
        ("Run actions/checkout@v4", "success"),
        ("the cache", "success"),
        ("Run exit 1", "failure"),
        ("never registered", "skipped"),
        ("Post the cache", "skipped"),  # post-if: success()
        ("Post Run actions/checkout@v4", "success"),  # post-if: always()
    ]


def test_continue_on_error_keeps_cache_post_step(tmp_path: Path) -> None:
    result, _ = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - name: the cache
                uses: actions/cache@v4
                with: {path: x, key: k1}
              - run: exit 1
                continue-on-error: true
        """,
    )
    assert [s.outcome for s in result.jobs[0].steps] == ["success", "failure", "success"]


def test_jobs_run_in_needs_order_with_outputs_and_job_if(tmp_path: Path) -> None:
    result, c = run(
        tmp_path,
        """
        on: push
        jobs:
          report:
            needs: [build]
            runs-on: x
            steps:
              - run: echo "got ${{ needs.build.outputs.version }} ${{ needs.build.result }}"
          build:
            runs-on: x
            outputs:
              version: ${{ steps.v.outputs.version }}
            steps:
              - id: v
                run: echo "version=1.2.3" >> "$GITHUB_OUTPUT"
          broken:
            runs-on: x
            steps:
              - run: exit 1
          after-broken:
            needs: broken
            runs-on: x
            steps:
              - run: echo never
          cleanup:
            needs: broken
            if: always()
            runs-on: x
            steps:
              - run: echo "broken was ${{ needs.broken.result }}"
        """,
    )
    by_job = {j.job_id: j for j in result.jobs}
    assert [j.job_id for j in result.jobs] == ["build", "report", "broken", "after-broken", "cleanup"]
    assert by_job["build"].outputs == {"version": "1.2.3"}
    assert by_job["report"].result == "success"
    assert by_job["after-broken"].result == "skipped"
    assert by_job["cleanup"].result == "success"
    all_text = "\n".join(c.text(n) for n in c.lines)
    assert "got 1.2.3 success" in all_text and "broken was failure" in all_text
    assert result.result == "failure"


def test_single_job_selection(tmp_path: Path) -> None:
    result, _ = run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps: [{run: exit 1}]
          b:
            needs: a
            runs-on: x
            steps: [{run: echo b}]
        """,
        job="b",
    )
    assert [j.job_id for j in result.jobs] == ["b"] and result.result == "success"


def test_matrix_runs_each_combination(tmp_path: Path) -> None:
    result, c = run(
        tmp_path,
        """
        on: push
        jobs:
          t:
            runs-on: x
            strategy:
              matrix:
                n: [1, 2]
                include:
                  - n: 3
            steps:
              - run: echo "n=${{ matrix.n }} index=${{ strategy.job-index }} of ${{ strategy.job-total }}"
        """,
    )
    names = [j.name for j in result.jobs]
    assert names == ["t (1)", "t (2)", "t (3)"]
    texts = [c.text(n) for n in sorted(c.lines)]
    assert any("n=2 index=1 of 3" in t for t in texts)


def test_matrix_fail_fast(tmp_path: Path) -> None:
    result, _ = run(
        tmp_path,
        """
        on: push
        jobs:
          t:
            runs-on: x
            strategy:
              matrix:
                n: [1, 2]
            steps:
              - run: exit ${{ matrix.n }}
        """,
    )
    assert [j.result for j in result.jobs] == ["failure", "cancelled"]


def test_dispatch_inputs_context(tmp_path: Path) -> None:
    _, c = run(
        tmp_path,
        """
        on:
          workflow_dispatch:
            inputs:
              debug: {type: boolean, default: false}
        jobs:
          a:
            runs-on: x
            steps:
              - if: inputs.debug
                run: echo "debug is on"
        """,
        event_name="workflow_dispatch",
        inputs={"debug": True},
    )
    assert "debug is on" in c.text(1)


def test_python_shell_uses_the_path_prepends(tmp_path: Path) -> None:
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "python").write_text(f"#!/bin/sh\nexec {sys.executable} -c 'print(\"fake python ran\")'\n")
    (fake / "python").chmod(0o755)
    _, c = run(
        tmp_path,
        f"""
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - run: echo "{fake}" >> "$GITHUB_PATH"
              - shell: python
                run: print("real")
        """,
    )
    assert "fake python ran" in c.text(2)


@pytest.mark.parametrize("event", ["push", "pull_request"])
def test_logs_are_written_per_step(tmp_path: Path, event: str) -> None:
    result, _ = run(
        tmp_path,
        """
        on: [push, pull_request]
        jobs:
          a:
            runs-on: x
            steps:
              - name: say
                run: echo "hello log"
        """,
        event_name=event,
    )
    rec = result.jobs[0].steps[0]
    assert rec.log_path is not None and "hello log" in rec.log_path.read_text()
    assert rec.log_path.parent == tmp_path / "logs" / "a"


def test_job_continue_on_error_and_action_context(tmp_path: Path) -> None:
    result, c = run(
        tmp_path,
        """
        on: push
        jobs:
          experimental:
            runs-on: x
            continue-on-error: ${{ matrix.experimental }}
            strategy:
              fail-fast: true
              matrix:
                experimental: [true]
            steps:
              - uses: actions/checkout@v4
              - run: echo "action=$GITHUB_ACTION repo=[${{ github.action_repository }}]"; exit 1
          after:
            needs: experimental
            runs-on: x
            steps:
              - run: echo "needs result ${{ needs.experimental.result }}"
        """,
    )
    by_job = {j.job_id: j for j in result.jobs}
    assert by_job["experimental"].result == "failure" and by_job["experimental"].allowed_failure
    assert by_job["after"].result == "success"
    assert result.result == "success" and result.exit_code == 0
    texts = "\n".join(c.text(n) for n in c.lines)
    assert "action=__run_2 repo=[]" in texts
    assert "needs result success" in texts


def test_job_python_is_a_fresh_environment_first_on_path(tmp_path: Path) -> None:
    """opts.job_python (runcache run's default): python/pip of a new venv, not the host's (here runcache's own)."""
    own_bin = str(Path(sys.prefix) / "bin")
    other = tmp_path / "other"  # what setup-python does: another interpreter first on PATH
    other.mkdir()
    (other / "python").symlink_to(sys.executable)
    env = {"PATH": own_bin + os.pathsep + os.environ.get("PATH", ""), "VIRTUAL_ENV": sys.prefix}
    body = f"""
    on: push
    jobs:
      a:
        runs-on: x
        steps:
          - run: |
              python -c "import sys; print('prefix=' + sys.prefix)"
              echo "venv=$VIRTUAL_ENV"
              echo "path=$PATH"
              pip --version
              echo "{other}" >> "$GITHUB_PATH"
          - run: echo "venv=[$VIRTUAL_ENV] python=$(command -v python)"
    """
    result, c = run(tmp_path, body, env=env, job_python=True, pip_seed_cache=tmp_path / "seed")
    assert result.jobs[0].result == "success", c.text(1)
    first = c.text(1)
    prefix = next(line.split("=", 1)[1] for line in first.splitlines() if line.startswith("prefix=/"))
    assert prefix != sys.prefix and Path(prefix).name == "venv"
    assert f"venv={prefix}" in first and f"from {prefix}" in first
    path_line = next(line for line in first.splitlines() if line.startswith("path=/"))
    assert path_line.startswith(f"path={prefix}/bin{os.pathsep}")
    if sys.prefix != sys.base_prefix:
        assert own_bin not in path_line.split("=", 1)[1].split(os.pathsep)  # runcache's own scripts are not offered
    assert f"venv=[] python={other}/python" in c.text(2)
    assert not Path(prefix).exists()  # removed with the job's temporary folder
    assert any((tmp_path / "seed").iterdir())  # pip was seeded once, for the next jobs

    result, c = run(tmp_path, body, env=env)  # the default of RunOptions: the host's PATH as it is
    assert f"prefix={sys.prefix}" in c.text(1)
