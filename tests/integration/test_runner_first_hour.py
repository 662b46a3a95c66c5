"""`runcache run` in a new user's first hour: the README's RUNCACHE_URL, pip into a job's own Python, no
stray data in the repository, a busy data directory, and messages that say what is wrong and where."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import Server
from runcache.runner.wheelhouse import LocalIndex, make_wheel, strip_pip_env

RUNCACHE = [sys.executable, "-m", "runcache.cli"]
PROBE = "rc-first-hour-probe"  # a package no environment has: installed only from the test's own index

CACHE_WORKFLOW = """
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - id: c
        uses: actions/cache@v4
        with: {path: ~/stuff, key: first-hour}
      - if: steps.c.outputs.cache-hit != 'true'
        run: mkdir -p ~/stuff && date +%N > ~/stuff/stamp
      - run: echo "hit=[${{ steps.c.outputs.cache-hit }}]"
"""


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "RUNNER_", "ACTIONS_", "RUNCACHE_", "XDG_", "VIRTUAL_ENV"))
    }
    env["HOME"] = str(home)
    env.update(extra)
    return env


def project(root: Path, workflow: str) -> Path:
    wf = root / ".github" / "workflows"
    wf.mkdir(parents=True, exist_ok=True)
    (wf / "ci.yml").write_text(textwrap.dedent(workflow))
    return root


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def run(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUNCACHE, "run", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


# --- 1. RUNCACHE_URL / RUNCACHE_TOKEN / RUNCACHE_PROTOCOL, --url ----------------------------------------
def test_run_uses_the_server_in_runcache_url_like_the_other_commands(
    tmp_path: Path, home: Path, server: Server
) -> None:
    root = project(tmp_path / "repo", CACHE_WORKFLOW)
    token = server.token("octo/app", "refs/heads/main")
    data = str(tmp_path / "d")
    env = clean_env(home, RUNCACHE_URL=server.url, RUNCACHE_TOKEN=token, RUNCACHE_PROTOCOL="v1")
    proc = run(root, "--repo", "octo/app", "--ref", "main", "--data-dir", data, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["cache"]["kind"] == "external" and result["cache"]["url"] == server.url
    assert result["cache"]["protocol"] == "v1"
    assert f"{server.url} (from RUNCACHE_URL) · v1" in proc.stderr  # the header says which server and why
    assert [c["result"] for c in result["jobs"][0]["caches"]] == ["miss", "saved"]

    # --url (the other commands' name) with --token, and --server kept as an alias: exact hits on that server.
    bare = clean_env(home)
    for flag in ("--url", "--server"):
        proc = run(
            root, flag, server.url, "--token", token, "--repo", "octo/app", "--data-dir", data, "--json", env=bare
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["jobs"][0]["caches"][0]["result"] == "hit"

    # --embedded ignores RUNCACHE_URL; RUNCACHE_URL without a token says what to do.
    proc = run(root, "--embedded", "--repo", "octo/app", "--data-dir", data, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cache"]["kind"] == "embedded"
    proc = run(root, "--data-dir", data, env=clean_env(home, RUNCACHE_URL=server.url))
    assert proc.returncode == 2
    assert "RUNCACHE_URL is set" in proc.stderr and "RUNCACHE_TOKEN" in proc.stderr and "--embedded" in proc.stderr
    proc = run(root, "--data-dir", data, env=clean_env(home, RUNCACHE_URL=server.url, RUNCACHE_PROTOCOL="v3"))
    assert proc.returncode == 2 and "RUNCACHE_PROTOCOL must be v1 or v2" in proc.stderr


# --- 2. the job's own Python --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def probe_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalIndex]:
    folder = tmp_path_factory.mktemp("probe-wheels")
    make_wheel(folder, PROBE, "1.0")
    with LocalIndex(folder) as index:
        yield index


def _installed_in_runcache_env(name: str) -> bool:
    done = subprocess.run(
        [sys.executable, "-c", f"import importlib.metadata as m; m.version({name!r})"], capture_output=True
    )
    return done.returncode == 0


def test_pip_install_goes_into_a_fresh_job_environment_not_runcaches(
    tmp_path: Path, home: Path, probe_index: LocalIndex
) -> None:
    own_bin = str(Path(sys.prefix) / "bin")
    root = project(
        tmp_path / "repo",
        f"""
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - run: |
                  python -c "import sys; print('prefix=' + sys.prefix)"
                  echo "venv=$VIRTUAL_ENV"
                  pip --version
              - name: install
                run: |
                  # a guard, so that a runner without job environments cannot touch runcache's own one
                  if [ "$(python -c 'import sys; print(sys.prefix)')" = "{sys.prefix}" ]; then exit 7; fi
                  pip install {PROBE}
                  python -c "import rc_first_hour_probe, sys; print('imported in', sys.prefix)"
        """,
    )
    # The worst case: runcache's own virtual environment is activated (first on PATH, VIRTUAL_ENV set).
    env = strip_pip_env(clean_env(home))
    env.update(probe_index.pip_env())
    env.update(PATH=f"{own_bin}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=sys.prefix)
    proc = run(root, "--no-cache", "--data-dir", str(tmp_path / "d"), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    first = Path(result["jobs"][0]["steps"][0]["log"]).read_text()
    prefix = re.search(r"^prefix=(/.*)$", first, re.M).group(1)
    assert prefix != sys.prefix and not prefix.startswith(sys.base_prefix)
    assert prefix.endswith("venv") and f"venv={prefix}" in first
    assert f"from {prefix}" in first  # pip of that environment
    assert f"imported in {prefix}" in Path(result["jobs"][0]["steps"][1]["log"]).read_text()
    assert not _installed_in_runcache_env(PROBE)
    assert not Path(prefix).exists()  # removed with the job's temporary folder
    assert "a fresh virtual environment per job" in proc.stderr

    # --host-python: the PATH as it is (here runcache's own environment comes first).
    proc = run(root, "--no-cache", "--host-python", "--data-dir", str(tmp_path / "d"), "--json", env=env)
    first = Path(json.loads(proc.stdout)["jobs"][0]["steps"][0]["log"]).read_text()
    assert f"prefix={sys.prefix}" in first
    assert json.loads(proc.stdout)["jobs"][0]["steps"][1]["outcome"] == "failure"  # the guard refused
    assert not _installed_in_runcache_env(PROBE)


def test_setup_python_still_puts_its_interpreter_first(tmp_path: Path, home: Path) -> None:
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    root = project(
        tmp_path / "repo",
        f"""
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/setup-python@v5
                with: {{python-version: '{version}'}}
              - run: |
                  python -c "import sys; print('prefix=' + sys.prefix)"
                  echo "venv=[$VIRTUAL_ENV] location=$pythonLocation"
                  pip --version
        """,
    )
    proc = run(root, "--no-cache", "--data-dir", str(tmp_path / "d"), "--json", env=clean_env(home))
    assert proc.returncode == 0, proc.stderr
    log = Path(json.loads(proc.stdout)["jobs"][0]["steps"][1]["log"]).read_text()
    location = re.search(r"location=(/\S+)", log).group(1)
    assert location.startswith(str(home / ".cache" / "runcache" / "toolcache" / "Python"))
    assert f"prefix={location}" in log and f"from {location}" in log
    assert "venv=[]" in log  # VIRTUAL_ENV no longer names the job's environment, whose python is not first


# --- 3. no data in the user's repository ------------------------------------------------------------
def test_the_embedded_store_lives_outside_the_repository_and_is_shared_between_runs(tmp_path: Path, home: Path) -> None:
    root = project(tmp_path / "repo", CACHE_WORKFLOW)
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "init")
    env = clean_env(home)
    first = run(root, "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert not (root / ".runcache").exists()
    assert git(root, "status", "--porcelain") == ""
    state = home / ".local" / "state" / "runcache"
    assert json.loads(first.stdout)["cache"]["data_dir"] == str(state)
    assert Path(json.loads(first.stdout)["logs"]).is_relative_to(state)
    second = run(root, "--json", env=env)  # the next run restores what the first saved
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["jobs"][0]["caches"][0]["result"] == "hit"

    # $XDG_STATE_HOME is honoured; RUNCACHE_DATA_DIR (as for serve) and --data-dir win.
    xdg = run(root, "--json", env=clean_env(home, XDG_STATE_HOME=str(tmp_path / "xdg")))
    assert json.loads(xdg.stdout)["cache"]["data_dir"] == str(tmp_path / "xdg" / "runcache")
    by_env = run(root, "--json", env=clean_env(home, RUNCACHE_DATA_DIR=str(tmp_path / "envdir")))
    assert json.loads(by_env.stdout)["cache"]["data_dir"] == str(tmp_path / "envdir")

    # A data directory inside the work tree ignores itself, so git status stays clean.
    inside = run(root, "--data-dir", "cache-data", "--json", env=env)
    assert inside.returncode == 0, inside.stderr
    assert (root / "cache-data" / ".gitignore").read_text().strip().endswith("*")
    assert git(root, "status", "--porcelain") == ""


# --- 4. a data directory a server already uses --------------------------------------------------------
def test_a_busy_data_directory_is_one_line_and_exit_3(tmp_path: Path, home: Path, server: Server) -> None:
    root = project(tmp_path / "repo", CACHE_WORKFLOW)
    proc = run(root, "--data-dir", str(server.data_dir), env=clean_env(home))
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr and "did not start: 3" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "is in use by another runcache server" in lines[0] and "--url" in lines[0]


# --- 5. messages -----------------------------------------------------------------------------------
def test_an_invalid_expression_names_its_field_step_and_text(tmp_path: Path, home: Path) -> None:
    root = project(
        tmp_path / "repo",
        """
        on: push
        jobs:
          build:
            runs-on: ubuntu-latest
            steps:
              - run: echo first
              - name: Cache deps
                uses: actions/cache@v4
                with:
                  path: x
                  key: ${{ foo.bar }}
        """,
    )
    proc = run(root, "--no-cache", env=clean_env(home))
    assert proc.returncode == 2
    assert "in other" not in proc.stderr
    assert "ci.yml:12:" in proc.stderr
    assert "invalid expression in with.key of step 2 ('Cache deps') in job 'build'" in proc.stderr
    assert "foo.bar" in proc.stderr and "contexts available here: github" in proc.stderr


def test_a_repository_without_commits_says_so(tmp_path: Path, home: Path) -> None:
    root = project(tmp_path / "repo", "on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{run: echo hi}]\n")
    git(root, "init", "-q")
    proc = run(root, "--no-cache", "--data-dir", str(tmp_path / "d"), env=clean_env(home))
    assert proc.returncode == 0, proc.stderr
    assert "no commits yet" in proc.stdout and "not a git repository" not in proc.stdout
    elsewhere = project(tmp_path / "plain", "on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{run: echo hi}]\n")
    proc = run(elsewhere, "--no-cache", "--data-dir", str(tmp_path / "d"), env=clean_env(home))
    assert "no commit (not a git repository)" in proc.stdout


def test_step_summaries_are_written_where_the_run_says(tmp_path: Path, home: Path) -> None:
    root = project(
        tmp_path / "repo",
        """
        on: push
        jobs:
          one:
            runs-on: x
            steps: [{run: 'echo "### from one" >> "$GITHUB_STEP_SUMMARY"'}]
          two:
            runs-on: x
            steps: [{run: 'echo "### from two" >> "$GITHUB_STEP_SUMMARY"'}]
        """,
    )
    proc = run(root, "--no-cache", "--data-dir", str(tmp_path / "d"), "--json", env=clean_env(home))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    summary = Path(result["summary"])
    assert summary == Path(result["logs"]) / "summary.md"
    text = summary.read_text()
    assert "### from one" in text and "### from two" in text
    assert f"job summary ($GITHUB_STEP_SUMMARY): {summary}" in proc.stderr.replace("\n", "")
    assert "### from two" in (Path(result["logs"]) / "two" / "summary.md").read_text()


def test_demo_says_what_it_prepares_and_prints_no_paths_it_deletes(tmp_path: Path, home: Path) -> None:
    proc = subprocess.run(
        [*RUNCACHE, "demo"], cwd=tmp_path, env=clean_env(home), capture_output=True, text=True, timeout=600
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    demo_root = re.search(r"project\s+(/\S+)/seed", out).group(1)
    assert not Path(demo_root).exists()
    # Before each run the demo says what it is doing; then the run's header comes.
    for label in ("Run 1", "Run 2", "Run 3"):
        part = out.split(label, 1)[1]
        assert part.index("preparing:") < part.index("runcache run ·")
    for line in out.splitlines():
        if demo_root in line:  # the project copy is named as such; no log, data or summary paths under it
            assert re.match(r"\s*(project\b|repo\b|│)", line), line
    assert "logs      not kept" in out


def test_sigterm_stops_a_run_like_ctrl_c(tmp_path: Path, home: Path) -> None:
    """A cancelled CI job sends SIGTERM: one line, exit 130, the step's process group stopped."""
    import signal
    import time

    marker = tmp_path / "started"
    workflow = f"on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{{run: 'touch {marker}; sleep 60'}}]\n"
    root = project(tmp_path / "repo", workflow)
    proc = subprocess.Popen(
        [*RUNCACHE, "run", "--no-cache", "--data-dir", str(tmp_path / "d")],
        cwd=root,
        env=clean_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert marker.exists()
    started = time.time()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.time() - started < 20
    assert "was cancelled" in out and "Traceback" not in out + err, (out, err)
