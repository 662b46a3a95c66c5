"""The built-in actions' inputs, outputs, state and log lines: checkout, cache, cache/restore, cache/save, setup-python.

Cache steps talk to a real runcache server running in-process on loopback (the embedded server of
``runcache run``) with a job token, exactly as in a run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runcache.config import Settings
from runcache.runner.actions import pythons
from runcache.runner.endpoint import CacheEndpoint
from runcache.runner.engine import RunOptions
from runcache.runner.run import run_jobs
from runcache.runner.workflow import parse_workflow
from runcache.server.embedded import EmbeddedServer

sys.path.insert(0, str(Path(__file__).parent))
from test_runner_engine import Collector


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer(Settings.from_env({}, data_dir=tmp_path_factory.mktemp("data"))).start()
    yield srv
    srv.stop()


_repo_counter = iter(range(10_000))


@pytest.fixture
def endpoint(server: EmbeddedServer) -> CacheEndpoint:
    """A fresh repository per test, so entries never leak between tests."""
    repo = f"octo/app{next(_repo_counter)}"
    return CacheEndpoint(server.url, server.token(repo, "refs/heads/main", default_branch="main"), "v2", "embedded")


class Runner:
    def __init__(self, tmp_path: Path, endpoint: CacheEndpoint | None) -> None:
        self.tmp = tmp_path
        self.ws = tmp_path / "ws"
        self.ws.mkdir(exist_ok=True)
        self.endpoint = endpoint
        self.home = tmp_path / "home"
        self.home.mkdir(exist_ok=True)

    def __call__(self, body: str, **opts: Any):
        workflow = parse_workflow(textwrap.dedent(body), self.ws / ".github" / "workflows" / "w.yml")
        repo = "octo/app"
        if self.endpoint is not None:
            import jwt

            repo = jwt.decode(self.endpoint.token, options={"verify_signature": False})["repository"]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_", "PIP_"))}
        base["HOME"] = str(self.home)
        opts.setdefault("sha", "a" * 40)
        options = RunOptions(
            workflow=workflow,
            workspace=self.ws,
            repository=repo,
            ref="refs/heads/main",
            base_env=base,
            cache=self.endpoint,
            tool_cache=self.tmp / "toolcache",
            **opts,
        )
        collector = Collector()
        result = run_jobs(options, collector, log_dir=self.tmp / "logs")
        return result, collector


@pytest.fixture
def runner(tmp_path: Path, endpoint: CacheEndpoint) -> Runner:
    return Runner(tmp_path, endpoint)


def step(result, name: str):
    return next(s for s in result.jobs[0].steps if s.name == name)


def text_of(c: Collector, result, name: str) -> str:
    return c.text(step(result, name).number)


CACHE_WF = """
on: push
jobs:
  a:
    runs-on: x
    steps:
      - name: cache
        id: c
        uses: actions/cache@v4
        with:
          path: |
            data
            !data/skip
          key: deps-${{ hashFiles('lock.txt') }}
          restore-keys: |
            deps-
      - name: show
        run: echo "hit=[${{ steps.c.outputs.cache-hit }}] null=${{ steps.c.outputs.cache-hit == null }}"
      - name: make
        if: steps.c.outputs.cache-hit != 'true'
        run: mkdir -p data && echo "built from $(cat lock.txt)" > data/file.txt
"""


def test_cache_miss_exact_hit_and_restore_key_hit(runner: Runner) -> None:
    ws = runner.ws
    (ws / "lock.txt").write_text("v1\n")
    import hashlib

    key1 = "deps-" + hashlib.sha256(hashlib.sha256(b"v1\n").digest()).hexdigest()

    r1, c1 = runner(CACHE_WF)
    assert r1.result == "success"
    assert f"Cache not found for input keys: {key1}, deps-" in text_of(c1, r1, "cache")
    assert "hit=[] null=true" in text_of(c1, r1, "show")  # a miss leaves cache-hit unset
    assert step(r1, "make").outcome == "success"
    post = text_of(c1, r1, "Post cache")
    assert f"Cache saved with key: {key1}" in post and "Cache saved successfully" in post
    assert [(c.operation, c.result) for c in r1.jobs[0].caches] == [("restore", "miss"), ("save", "saved")]

    (ws / "data").rename(ws / "data-old")
    r2, c2 = runner(CACHE_WF)
    restore = text_of(c2, r2, "cache")
    assert f"Cache hit for: {key1}" in restore and f"Cache restored from key: {key1}" in restore
    assert "Cache Size: ~0 MB (" in restore
    assert "hit=[true]" in text_of(c2, r2, "show")
    assert step(r2, "make").outcome == "skipped"
    assert (ws / "data" / "file.txt").read_text() == "built from v1\n"
    assert f"Cache hit occurred on the primary key {key1}, not saving cache." in text_of(c2, r2, "Post cache")
    assert [(c.operation, c.result) for c in r2.jobs[0].caches] == [("restore", "hit"), ("save", "skipped")]

    (ws / "lock.txt").write_text("v2\n")
    key2 = "deps-" + hashlib.sha256(hashlib.sha256(b"v2\n").digest()).hexdigest()
    r3, c3 = runner(CACHE_WF)
    restore = text_of(c3, r3, "cache")
    assert f"Cache hit for restore-key: {key1}" in restore
    assert "hit=[false]" in text_of(c3, r3, "show")
    assert step(r3, "make").outcome == "success"
    assert f"Cache saved with key: {key2}" in text_of(c3, r3, "Post cache")
    rec = r3.jobs[0].caches[0]
    assert (rec.result, rec.matched_key, rec.restore_keys) == ("restore-key", key1, ["deps-"])


def test_exact_hit_is_case_insensitive(runner: Runner) -> None:
    (runner.ws / "f").write_text("x")
    save = """
    on: push
    jobs:
      a:
        runs-on: x
        steps:
          - uses: actions/cache/save@v4
            with: {path: f, key: MyKey}
    """
    runner(save)
    _, c = runner(
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - id: c
                uses: actions/cache@v4
                with: {path: f, key: mykey}
              - run: echo "hit=${{ steps.c.outputs.cache-hit }}"
        """
    )
    assert "hit=true" in c.text(2)
    assert "not saving cache" in c.text(3)


def test_restore_action_outputs(runner: Runner) -> None:
    (runner.ws / "f").write_text("x")
    body = """
    on: push
    jobs:
      a:
        runs-on: x
        steps:
          - id: r
            uses: actions/cache/restore@v4
            with:
              path: f
              key: k-2
              restore-keys: k-
          - run: >-
              echo "hit=[${{ steps.r.outputs.cache-hit }}] primary=${{ steps.r.outputs.cache-primary-key }}
              matched=[${{ steps.r.outputs.cache-matched-key }}]"
    """
    r, c = runner(body)
    assert "hit=[] primary=k-2 matched=[]" in c.text(2)
    assert len(r.jobs[0].steps) == 2  # no post step: the restore action never saves
    runner(
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - uses: actions/cache/save@v4
                with: {path: f, key: k-1}
        """
    )
    r, c = runner(body)
    assert "hit=[false] primary=k-2 matched=[k-1]" in c.text(2)


def test_save_action_warnings(runner: Runner) -> None:
    (runner.ws / "f").write_text("x")
    body = """
    on: push
    jobs:
      a:
        runs-on: x
        steps:
          - name: save missing
            uses: actions/cache/save@v4
            with: {path: nothing-here, key: s1}
          - name: save
            uses: actions/cache/save@v4
            with: {path: f, key: s2, upload-chunk-size: 1048576, enableCrossOsArchive: true}
          - name: save again
            uses: actions/cache/save@v4
            with: {path: f, key: s2}
    """
    r, c = runner(body)
    assert r.result == "success"  # save problems are warnings
    missing = text_of(c, r, "save missing")
    assert "Path Validation Error: Path(s) specified in the action for caching do(es) not exist" in missing
    assert "Warning: Cache save failed." in missing
    assert "Cache saved with key: s2" in text_of(c, r, "save")
    again = text_of(c, r, "save again")
    assert "Unable to reserve cache with key s2, another job may be creating this cache" in again
    assert "Warning: Cache save failed." in again
    assert "Unexpected input" not in text_of(c, r, "save")


def test_fail_on_cache_miss_and_lookup_only(runner: Runner) -> None:
    (runner.ws / "f").write_text("content")
    runner(
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - uses: actions/cache/save@v4
                with: {path: f, key: look-1}
        """
    )
    (runner.ws / "f").unlink()
    r, c = runner(
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - name: lookup
                id: l
                uses: actions/cache/restore@v4
                with: {path: f, key: look-1, lookup-only: true}
              - name: prefix is not a miss
                uses: actions/cache/restore@v4
                with: {path: f, key: look-2, restore-keys: look-, fail-on-cache-miss: true, lookup-only: true}
              - name: miss fails
                uses: actions/cache/restore@v4
                with: {path: f, key: other, fail-on-cache-miss: 'TRUE'}
              - if: always()
                run: echo "lookup hit=${{ steps.l.outputs.cache-hit }}"
        """
    )
    assert "Lookup only - skipping download" in text_of(c, r, "lookup")
    assert "Cache found and can be restored from key: look-1" in text_of(c, r, "lookup")
    assert not (runner.ws / "f").exists()
    assert step(r, "prefix is not a miss").outcome == "success"
    miss = step(r, "miss fails")
    assert miss.outcome == "failure"
    assert "Failed to restore cache entry. Exiting as fail-on-cache-miss is set. Input key: other" in text_of(
        c, r, "miss fails"
    )
    assert "lookup hit=true" in c.text(4)
    assert [c_.operation for c_ in r.jobs[0].caches] == ["lookup", "lookup", "restore"]


def test_required_inputs_and_key_validation(runner: Runner) -> None:
    r, c = runner(
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - name: no key
                continue-on-error: true
                uses: actions/cache@v4
                with: {path: f}
              - name: no path
                continue-on-error: true
                uses: actions/cache/restore@v4
                with: {key: k}
              - name: comma
                continue-on-error: true
                uses: actions/cache@v4
                with: {path: f, key: 'a,b'}
        """
    )
    assert "Input required and not supplied: key" in text_of(c, r, "no key")
    assert "Input required and not supplied: path" in text_of(c, r, "no path")
    assert "Key Validation Error: a,b cannot contain commas." in text_of(c, r, "comma")
    assert [s.outcome for s in r.jobs[0].steps[:3]] == ["failure"] * 3


def test_unexpected_and_deprecated_inputs_by_version(runner: Runner) -> None:
    r, c = runner(
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - name: v3
                uses: actions/cache@v3
                with: {path: f, key: k, save-always: true, bogus: 1}
              - name: v4
                uses: actions/cache@v4
                with: {path: f, key: k, save-always: true}
        """
    )
    v3 = text_of(c, r, "v3")
    assert "Unexpected input(s) 'save-always', 'bogus', valid inputs are ['path', 'key', 'restore-keys'" in v3
    assert "'lookup-only']" in v3
    v4 = text_of(c, r, "v4")
    assert "Input 'save-always' has been deprecated with message: save-always does not work as intended" in v4
    assert "Unexpected input" not in v4


def test_cache_step_without_a_service(tmp_path: Path) -> None:
    r, c = Runner(tmp_path, None)(
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - id: c
                uses: actions/cache@v4
                with: {path: f, key: k}
              - run: echo "hit=${{ steps.c.outputs.cache-hit }}"
        """
    )
    assert "cache service is disabled" in c.text(1)
    assert "hit=false" in c.text(2)
    assert r.result == "success"


def test_skipped_cache_step_registers_no_post(runner: Runner) -> None:
    r, _ = runner(
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - if: false
                uses: actions/cache@v4
                with: {path: f, key: k}
        """
    )
    assert [s.name for s in r.jobs[0].steps] == ["Run actions/cache@v4"]


def test_cache_inputs_from_expressions_and_env(runner: Runner) -> None:
    (runner.ws / "f").write_text("x")
    r, c = runner(
        """
        on: push
        env:
          PREFIX: pre
        jobs:
          a:
            runs-on: x
            steps:
              - uses: actions/cache@v4
                with:
                  path: f
                  key: ${{ env.PREFIX }}-${{ runner.os }}-${{ github.ref_name }}
        """
    )
    assert f"Cache saved with key: pre-{r.jobs[0].steps[0].caches[0].key.split('-', 1)[1]}" in c.text(2)
    assert r.jobs[0].caches[0].key.endswith("-main")


# --------------------------------------------------------------------------- checkout


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def test_checkout_local_working_tree(tmp_path: Path) -> None:
    runner = Runner(tmp_path, None)
    (runner.ws / "keep.txt").write_text("uncommitted")
    r, c = runner(
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - id: co
                uses: actions/checkout@v4
                with: {fetch-depth: 0, bogus: x}
              - run: echo "ref=${{ steps.co.outputs.ref }} commit=${{ steps.co.outputs.commit }}"
        """
    )
    assert r.result == "success"
    assert (runner.ws / "keep.txt").read_text() == "uncommitted"  # never cleaned
    assert "Using the working tree" in c.text(1)
    assert "Unexpected input(s) 'bogus'" in c.text(1)
    assert "Not used locally: fetch-depth" in c.text(1)
    assert f"ref=refs/heads/main commit={'a' * 40}" in c.text(2)
    assert [s.name for s in r.jobs[0].steps][-1] == "Post Run actions/checkout@v4"


def test_checkout_other_repository_ref_and_path(tmp_path: Path) -> None:
    runner = Runner(tmp_path, None)
    ws = runner.ws
    git(ws, "init", "-q", "-b", "main")
    (ws / "a.txt").write_text("one")
    git(ws, "add", "a.txt")
    git(ws, "commit", "-q", "-m", "one")
    first = git(ws, "rev-parse", "HEAD")
    git(ws, "tag", "v1")
    (ws / "a.txt").write_text("two")
    git(ws, "commit", "-q", "-am", "two")
    head = git(ws, "rev-parse", "HEAD")
    r, c = runner(
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - name: other repo
                continue-on-error: true
                uses: actions/checkout@v4
                with: {repository: someone/else}
              - name: other ref
                continue-on-error: true
                uses: actions/checkout@v4
                with: {ref: v1}
              - name: same ref
                uses: actions/checkout@v4
                with: {ref: main}
              - name: into a folder
                id: sub
                uses: actions/checkout@v4
                with: {ref: v1, path: old}
              - name: escaping
                continue-on-error: true
                uses: actions/checkout@v4
                with: {path: ../outside}
              - run: cat old/a.txt; echo " commit=${{ steps.sub.outputs.commit }}"
        """,
        sha=head,
    )
    assert "checks out only the local repository (octo/app)" in text_of(c, r, "other repo")
    assert "never switches your working tree" in text_of(c, r, "other ref")
    assert step(r, "same ref").outcome == "success"
    assert step(r, "into a folder").outcome == "success"
    assert (ws / "old" / "a.txt").read_text() == "one"
    assert (ws / "a.txt").read_text() == "two"
    assert "is not under" in text_of(c, r, "escaping")
    assert f"one commit={first}" in c.text(6)


# --------------------------------------------------------------------------- setup-python


@pytest.mark.parametrize(
    ("spec", "version", "ok"),
    [
        ("3.11", (3, 11, 7), True),
        ("3.11", (3, 12, 0), False),
        ("3", (3, 9, 1), True),
        ("3.x", (3, 13, 0), True),
        ("3.11.7", (3, 11, 7), True),
        ("3.11.7", (3, 11, 8), False),
        (">=3.9 <3.12", (3, 11, 9), True),
        (">=3.9 <3.12", (3, 12, 0), False),
        (">=3.9,<3.12", (3, 9, 0), True),
        ("~3.10", (3, 10, 14), True),
        ("~3.10", (3, 11, 0), False),
        ("^3.10", (3, 13, 1), True),
        ("3.8 - 3.10", (3, 10, 5), True),
        ("3.8 - 3.10", (3, 11, 0), False),
        ("3.8 || 3.12", (3, 12, 1), True),
        (">3.10", (3, 11, 0), True),
        (">3.10", (3, 10, 9), False),
        ("<=3.10", (3, 10, 9), True),
    ],
)
def test_version_specs(spec: str, version: tuple[int, int, int], ok: bool) -> None:
    interp = pythons.Interpreter("/x/python", version, "final", 0, "CPython", None, "/x", "x86_64", 64, False)
    assert pythons.matches(pythons.parse_spec(spec), interp) is ok


def test_version_spec_flavours() -> None:
    pre = pythons.Interpreter("/x", (3, 14, 0), "beta", 2, "CPython", None, "/x", "x86_64", 64, False)
    assert not pythons.matches(pythons.parse_spec("3.14"), pre)
    assert pythons.matches(pythons.parse_spec("3.14-dev"), pre)
    assert pythons.matches(pythons.parse_spec("3.14", allow_prereleases=True), pre)
    ft = pythons.Interpreter("/x", (3, 13, 0), "final", 0, "CPython", None, "/x", "x86_64", 64, True)
    assert pythons.matches(pythons.parse_spec("3.13t"), ft)
    assert not pythons.matches(pythons.parse_spec("3.13"), ft)
    pypy = pythons.Interpreter("/x", (3, 10, 14), "final", 0, "PyPy", (7, 3, 17), "/x", "x86_64", 64, False)
    assert pythons.matches(pythons.parse_spec("pypy3.10"), pypy)
    assert pythons.matches(pythons.parse_spec("pypy-3.10"), pypy)
    assert not pythons.matches(pythons.parse_spec("3.10"), pypy)
    assert pythons.pep440_to_spec(">=3.9,!=3.9.1,<3.13") == ">=3.9 <3.13"
    assert pythons.pep440_to_spec("~=3.10") == ">=3.10 <4"
    with pytest.raises(pythons.SpecError):
        pythons.parse_spec("three")


HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_setup_python_sets_up_a_matching_interpreter(tmp_path: Path) -> None:
    runner = Runner(tmp_path, None)
    r, c = runner(
        f"""
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - id: py
                uses: actions/setup-python@v5
                with:
                  python-version: '{HERE}'
                  check-latest: true
              - run: |
                  python -c "import sys; print('running', sys.version_info[:2], sys.prefix)"
                  echo "out=${{{{ steps.py.outputs.python-version }}}} path=${{{{ steps.py.outputs.python-path }}}}"
                  echo "loc=$pythonLocation root=$Python3_ROOT_DIR"
                  pip --version
        """
    )
    assert r.result == "success", c.text(1)
    out = c.text(2)
    root = tmp_path / "toolcache" / "Python"
    assert f"running ({sys.version_info[0]}, {sys.version_info[1]}) {root}" in out
    assert f"out={HERE}." in out
    assert f"loc={root}" in out and "root=" + str(root) in out
    assert "Successfully set up CPython" in c.text(1)
    assert "check-latest is ignored" in c.text(1)
    assert str(root) in out.split("pip ", 1)[1]  # pip of the job's own environment


def test_setup_python_errors(tmp_path: Path) -> None:
    runner = Runner(tmp_path, None)
    r, c = runner(
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - name: too old
                continue-on-error: true
                uses: actions/setup-python@v5
                with: {python-version: '2.5'}
              - name: nonsense
                continue-on-error: true
                uses: actions/setup-python@v5
                with: {python-version: three}
              - name: arch
                continue-on-error: true
                uses: actions/setup-python@v5
                with: {python-version: '3', architecture: x86}
              - name: poetry
                continue-on-error: true
                uses: actions/setup-python@v5
                with: {cache: npm, update-environment: false, python-version: '3'}
              - name: missing file
                continue-on-error: true
                uses: actions/setup-python@v5
                with: {python-version-file: nope.txt}
        """
    )
    too_old = text_of(c, r, "too old")
    assert "The version '2.5' with architecture" in too_old and "was not found on this machine" in too_old
    assert "Interpreters found:" in too_old
    assert "Invalid python-version 'three'" in text_of(c, r, "nonsense")
    assert "is not available locally" in text_of(c, r, "arch")
    assert "Caching for 'npm' is not supported" in text_of(c, r, "poetry")
    assert "nope.txt doesn't exist" in text_of(c, r, "missing file")
    assert all(s.outcome == "failure" for s in r.jobs[0].steps if s.stage == "main")


def test_setup_python_version_file_and_pip_cache(runner: Runner) -> None:
    ws = runner.ws
    (ws / ".python-version").write_text(HERE + "\n")
    (ws / "requirements.txt").write_text("nothing\n")
    body = """
    on: push
    jobs:
      a:
        runs-on: x
        steps:
          - id: py
            uses: actions/setup-python@v5
            with:
              python-version-file: .python-version
              cache: pip
          - run: |
              mkdir -p "$(pip cache dir)" && echo data > "$(pip cache dir)/marker"
              echo "hit=${{ steps.py.outputs.cache-hit }}"
    """
    r1, c1 = runner(body)
    assert r1.result == "success", c1.text(1)
    restore = r1.jobs[0].caches[0]
    assert restore.key.startswith(
        f"setup-python-Linux-{pythons.Interpreter.__name__ and ''}"
    ) or restore.key.startswith("setup-python-")
    assert f"-python-{HERE}." in restore.key and "-pip-" in restore.key
    assert restore.restore_keys == [restore.key.rsplit("-", 1)[0]]
    assert "pip cache is not found" in c1.text(1)
    assert "hit=false" in c1.text(2)
    assert f"Cache saved with the key: {restore.key}" in c1.text(3)
    _, c2 = runner(body)
    assert f"Cache restored from key: {restore.key}" in c2.text(1)
    assert "hit=true" in c2.text(2)
    assert "not saving cache" in c2.text(3)


def test_setup_python_pip_install_dependency_path_and_no_env_update(runner: Runner, tmp_path: Path) -> None:
    from runcache.runner.wheelhouse import LocalIndex, build_stand_ins

    build_stand_ins(tmp_path / "wheels", ["idna"])
    (runner.ws / "deps").mkdir()
    (runner.ws / "deps" / "lock.txt").write_text("idna\n")
    with LocalIndex(tmp_path / "wheels") as index:
        r, c = runner(
            f"""
            on: push
            jobs:
              a:
                runs-on: x
                env:
                  PIP_INDEX_URL: {index.url}/simple/
                  PIP_CONFIG_FILE: /dev/null
                steps:
                  - id: py
                    uses: actions/setup-python@v5
                    with:
                      python-version: '>={HERE} <4'
                      allow-prereleases: false
                      update-environment: false
                      pip-install: idna
                      cache: pip
                      cache-dependency-path: deps/*.txt
                  - run: |
                      "${{{{ steps.py.outputs.python-path }}}}" -c "import idna; print('idna', idna.__version__)"
                      echo "location=[$pythonLocation]"
            """
        )
    assert r.result == "success", c.text(1)
    assert "Installing idna" in c.text(1)
    assert "idna 3.10" in c.text(2)
    assert "location=[]" in c.text(2)  # update-environment: false leaves the environment alone
    import hashlib

    expected = hashlib.sha256(hashlib.sha256(b"idna\n").digest()).hexdigest()
    assert r.jobs[0].caches[0].key.endswith(f"-pip-{expected}")
