"""`runcache run` as a command: workflow discovery, errors, exit codes, --json, an external --server, events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import Server

RUNCACHE = [sys.executable, "-m", "runcache.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_", "ACTIONS_", "RUNCACHE_"))}
    env.update(extra)
    return env


def project(tmp_path: Path, workflow: str, name: str = "ci.yml") -> Path:
    root = tmp_path / "repo"
    wf = root / ".github" / "workflows"
    wf.mkdir(parents=True, exist_ok=True)
    (wf / name).write_text(textwrap.dedent(workflow))
    return root


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUNCACHE, "run", *args], cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=300
    )


def test_invalid_yaml_and_schema_errors_name_file_and_line(tmp_path: Path) -> None:
    root = project(
        tmp_path, "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo hi\n         bad: indent\n"
    )
    proc = run(root)
    assert proc.returncode == 2
    assert "ci.yml:7:" in proc.stderr and "invalid YAML" in proc.stderr
    (root / ".github" / "workflows" / "ci.yml").write_text("on: push\njobs:\n  a:\n    runs-on: x\n    stepps: []\n")
    proc = run(root)
    assert proc.returncode == 2
    assert "ci.yml:5:5: unexpected key 'stepps' in job 'a' (did you mean 'steps'?)" in proc.stderr


def test_discovery_exit_codes_and_json(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        """
        name: CI
        on: push
        jobs:
          ok:
            runs-on: ubuntu-latest
            steps:
              - run: echo fine
          bad:
            runs-on: ubuntu-latest
            steps:
              - run: echo broken; exit 4
        """,
    )
    (root / "sub").mkdir()
    proc = run(root / "sub", "--data-dir", str(tmp_path / "data"), "--json", "--no-cache")
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["result"] == "failure" and result["exit_code"] == 1 and result["cache"] is None
    assert [(j["job"], j["result"]) for j in result["jobs"]] == [("ok", "success"), ("bad", "failure")]
    assert result["workspace"] == str(root.resolve())
    assert "Process completed with exit code 4." in proc.stderr
    assert "✗" in proc.stderr and "Job" in proc.stderr
    assert Path(result["logs"], "result.json").is_file()
    proc = run(root, "--data-dir", str(tmp_path / "data"), "--job", "ok", "--no-cache")
    assert proc.returncode == 0
    assert "fine" in proc.stdout and "#2" in proc.stdout  # run numbers grow per workflow
    proc = run(root, "--job", "nope", "--no-cache")
    assert proc.returncode == 2 and "no job 'nope'" in proc.stderr and "jobs: ok, bad" in proc.stderr


def test_several_workflows_need_a_choice(tmp_path: Path) -> None:
    root = project(tmp_path, "on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{run: echo a}]\n", "a.yml")
    project(tmp_path, "on: pull_request\njobs:\n  b:\n    runs-on: x\n    steps: [{run: echo b}]\n", "b.yml")
    proc = run(root, "--no-cache", "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 0 and "a.yml" in proc.stdout  # only a.yml runs on push
    project(tmp_path, "on: push\njobs:\n  c:\n    runs-on: x\n    steps: [{run: echo c}]\n", "c.yml")
    proc = run(root, "--no-cache", "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 2 and "several workflows" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run(empty, "--no-cache")
    assert proc.returncode == 2 and "no workflow files" in proc.stderr


def test_external_server_with_token_and_pull_request_scopes(tmp_path: Path, server: Server) -> None:
    workflow = """
    on: [push, pull_request]
    jobs:
      a:
        runs-on: x
        steps:
          - id: c
            uses: actions/cache@v4
            with: {path: out, key: "k-${{ github.event_name }}", restore-keys: k-}
          - run: mkdir -p out && echo "${{ github.ref }} hit=[${{ steps.c.outputs.cache-hit }}]" | tee out/f
    """
    root = project(tmp_path, workflow)
    main_token = server.token("octo/app", "refs/heads/main")
    args = ["--server", server.url, "--repo", "octo/app", "--data-dir", str(tmp_path / "d"), "--json"]
    proc = run(root, *args, "--ref", "main", env=clean_env(RUNCACHE_TOKEN=main_token))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["jobs"][0]["caches"][1]["result"] == "saved"
    assert "refs/heads/main hit=[]" in proc.stderr
    # A pull request run reads main's entry (restore-key) and writes only its own merge ref.
    pr_token = server.token("octo/app", "refs/pull/1/merge", base_ref="main")
    proc = run(root, *args, "--event", "pull_request", "--token", pr_token)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ref"] == "refs/pull/1/merge"
    assert [(c["result"], c["matched_key"]) for c in result["jobs"][0]["caches"]] == [
        ("restore-key", "k-push"),
        ("saved", ""),
    ]
    proc = run(root, "--server", server.url, "--no-cache", "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 0  # --no-cache wins, no token needed
    proc = run(root, "--server", server.url, "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 2 and "needs a token" in proc.stderr


def test_dispatch_inputs_secrets_vars_and_env(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        """
        on:
          workflow_dispatch:
            inputs:
              who: {required: true}
              loud: {type: boolean, default: false}
        jobs:
          a:
            runs-on: x
            steps:
              - run: >-
                  echo "hi ${{ inputs.who }} loud=${{ inputs.loud }} ev=${{ github.event.inputs.who }}
                  var=${{ vars.V }} env=$EXTRA secret=${{ secrets.S }}"
        """,
    )
    env = clean_env(MY_SECRET="shh")
    proc = run(
        root,
        "-e",
        "workflow_dispatch",
        "--input",
        "who=you",
        "--input",
        "loud=true",
        "--var",
        "V=1",
        "--env",
        "EXTRA=x",
        "-s",
        "S=hidden-value",
        "--no-cache",
        "--data-dir",
        str(tmp_path / "d"),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "hi you loud=true ev=you var=1 env=x secret=***" in proc.stdout
    assert "hidden-value" not in proc.stdout
    proc = run(root, "-e", "workflow_dispatch", "--no-cache")
    assert proc.returncode == 2 and "input who is required" in proc.stderr
    proc = run(root, "-e", "workflow_dispatch", "--input", "who=x", "--input", "nope=1", "--no-cache")
    assert proc.returncode == 2 and "declares no input 'nope'" in proc.stderr


def test_terminal_output_folds_successful_steps(tmp_path: Path) -> None:
    """On a terminal, a passing step is one line; a failing one shows its log."""
    from io import StringIO

    from rich.console import Console

    from runcache.runner.console import ConsoleReporter
    from runcache.runner.engine import RunOptions
    from runcache.runner.run import run_jobs
    from runcache.runner.workflow import parse_workflow

    root = tmp_path / "ws"
    root.mkdir()
    wf = parse_workflow(
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n"
        "      - name: quiet\n        run: echo hidden-when-folded\n"
        "      - name: loud\n        run: echo shown-on-failure; exit 1\n",
        root / "w.yml",
    )
    buf = StringIO()
    console = Console(file=buf, force_terminal=True, width=120, color_system=None)
    reporter = ConsoleReporter(console)
    opts = RunOptions(workflow=wf, workspace=root, repository="o/r", sha="0" * 40, ref="refs/heads/main")
    result = run_jobs(opts, reporter, log_dir=tmp_path / "logs")
    reporter.summary(result.jobs, total=result.duration, log_root=None)
    out = buf.getvalue()
    assert "✓ quiet" in out and "✗ loud" in out
    assert "shown-on-failure" in out and "full log:" in out
    final = out.split("✓ quiet", 1)[1]
    assert "hidden-when-folded" not in final.split("✗ loud", 1)[0]
    assert "Job a failed" in out


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_embedded_server_both_protocols_persist(tmp_path: Path, protocol: str) -> None:
    root = project(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - id: c
                uses: actions/cache@v4
                with: {path: out, key: fixed}
              - if: steps.c.outputs.cache-hit != 'true'
                run: mkdir -p out && date +%N > out/stamp
              - run: cat out/stamp
        """,
    )
    data = tmp_path / "data"
    first = run(root, "--data-dir", str(data), "--protocol", protocol, "--json")
    assert first.returncode == 0, first.stderr
    stamp = (root / "out" / "stamp").read_text()
    (root / "out" / "stamp").unlink()
    second = run(root, "--data-dir", str(data), "--protocol", protocol, "--json")
    assert second.returncode == 0, second.stderr
    assert (root / "out" / "stamp").read_text() == stamp
    assert json.loads(second.stdout)["jobs"][0]["caches"][0]["result"] == "hit"


def test_list_shows_jobs_and_unsupported_steps(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        """
        on: [push, pull_request]
        jobs:
          test:
            needs: build
            runs-on: ubuntu-latest
            steps:
              - uses: actions/setup-node@v4
              - run: npm test
          build:
            runs-on: ubuntu-latest
            steps:
              - name: Compile
                run: make
        """,
    )
    proc = run(root, "--list")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "on: push, pull_request" in out
    assert out.index("build") < out.index("test ")
    assert "Run actions/setup-node@v4 (not supported)" in out and "Compile" in out


def test_inside_github_actions_step_logs_are_grouped(tmp_path: Path) -> None:
    root = project(tmp_path, "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo '::notice::hi'\n")
    proc = run(root, "--no-cache", "--data-dir", str(tmp_path / "d"), env=clean_env(GITHUB_ACTIONS="true"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    start = lines.index("::group::Run echo '::notice::hi'")
    end = lines.index("::endgroup::")
    assert start < end and any("Notice: hi" in line for line in lines[start:end])
    assert not any(line.startswith("::notice") for line in lines)  # the step's commands do not leak out
