"""Acceptance: the tutorial's workflow (tests/data/seed-workflow) under `runcache run`, three runs.

1. first run: cache miss, pip installs, the post step saves ~/.cache/pip;
2. second run: exact hit, "Install pip packages" skipped, `Cache Hit Status - true`;
3. django added to requirements.txt: restore-key hit, `Cache Hit Status - false`, pip installs (from the
   restored pip cache where it can), and a second entry is saved.

Each run starts like a fresh hosted runner: the same home path emptied, a new virtual environment. pip
installs from a loopback index of stand-in packages (runcache.runner.wheelhouse), so the test talks
only to 127.0.0.1, and the embedded server keeps its entries in one data directory between runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runcache.config import Settings
from runcache.runner.wheelhouse import LocalIndex, build_stand_ins, strip_pip_env
from runcache.server.embedded import EmbeddedServer

# The tutorial's workflow as it was published (actions/cache@v3), kept with the tests.
SEED = Path(__file__).resolve().parents[1] / "data" / "seed-workflow"
RUNCACHE = [sys.executable, "-m", "runcache.cli"]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalIndex]:
    folder = tmp_path_factory.mktemp("wheels")
    build_stand_ins(folder)
    with LocalIndex(folder) as idx:
        yield idx


def key_for(requirements: bytes) -> str:
    return "Linux-pip-" + hashlib.sha256(hashlib.sha256(requirements).digest()).hexdigest()


class Seed:
    def __init__(self, root: Path, index: LocalIndex) -> None:
        self.root = root
        self.project = root / "learngit"
        shutil.copytree(SEED, self.project)
        for p in [self.project, *self.project.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
        self.data = root / "data"
        self.home = root / "home"
        self.venv = root / "venv"
        self.index = index

    def fresh_runner(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir()
        shutil.rmtree(self.venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True, capture_output=True)

    def run(self) -> tuple[dict, str, int]:
        self.fresh_runner()
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_", "ACTIONS_", "VIRTUAL_ENV"))
        }
        env = strip_pip_env(env)
        env.update(self.index.pip_env())
        env["HOME"] = str(self.home)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env['PATH']}"
        env.pop("XDG_CACHE_HOME", None)
        proc = subprocess.run(
            [*RUNCACHE, "run", "--data-dir", str(self.data), "--json"],
            cwd=self.project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"no JSON (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None
        return result, proc.stderr, proc.returncode


def outcomes(result: dict) -> list[tuple[str, str]]:
    return [(s["name"], s["outcome"]) for s in result["jobs"][0]["steps"]]


def caches(result: dict) -> list[tuple[str, str, str]]:
    return [(c["operation"], c["result"], c["key"]) for c in result["jobs"][0]["caches"]]


def step_log(result: dict, name: str) -> str:
    step = next(s for s in result["jobs"][0]["steps"] if s["name"] == name)
    return Path(step["log"]).read_text()


def test_seed_workflow_three_runs(tmp_path: Path, index: LocalIndex) -> None:
    seed = Seed(tmp_path, index)
    key1 = key_for((seed.project / "requirements.txt").read_bytes())

    # 1. miss, install, save
    r1, log1, rc1 = seed.run()
    assert rc1 == 0, log1
    assert r1["result"] == "success" and r1["event"] == "push" and r1["cache"]["kind"] == "embedded"
    assert outcomes(r1) == [
        ("Run actions/checkout@v3", "success"),
        ("Cache Python Packages", "success"),
        ("Install pip packages", "success"),
        ("List pip packages", "success"),
        ("Post Cache Python Packages", "success"),
        ("Post Run actions/checkout@v3", "success"),
    ]
    assert caches(r1) == [("restore", "miss", key1), ("save", "saved", key1)]
    assert f"Cache not found for input keys: {key1}, Linux-pip-" in log1
    assert "Cache Hit Status - \n" in step_log(r1, "List pip packages")
    assert "Successfully installed" in step_log(r1, "Install pip packages")
    assert f"Cache saved with key: {key1}" in log1
    assert r1["jobs"][0]["steps"][1]["outputs"] == {}  # cache-hit is not set on a miss
    assert r1["jobs"][0]["caches"][1]["bytes"] > 0

    # 2. exact hit: the install step is skipped, nothing is saved
    r2, log2, rc2 = seed.run()
    assert rc2 == 0, log2
    assert outcomes(r2) == [
        ("Run actions/checkout@v3", "success"),
        ("Cache Python Packages", "success"),
        ("Install pip packages", "skipped"),
        ("List pip packages", "success"),
        ("Post Cache Python Packages", "success"),
        ("Post Run actions/checkout@v3", "success"),
    ]
    assert caches(r2) == [("restore", "hit", key1), ("save", "skipped", key1)]
    assert f"Cache restored from key: {key1}" in log2
    assert "Cache Hit Status - true" in step_log(r2, "List pip packages")
    assert f"Cache hit occurred on the primary key {key1}, not saving cache." in log2
    assert (seed.home / ".cache" / "pip").is_dir()  # restored into the fresh home

    # 3. a new requirement: restore-key hit, cache-hit false, install, second entry saved
    with open(seed.project / "requirements.txt", "a") as fh:
        fh.write("django\n")
    key2 = key_for((seed.project / "requirements.txt").read_bytes())
    r3, log3, rc3 = seed.run()
    assert rc3 == 0, log3
    assert [o for _, o in outcomes(r3)] == ["success"] * 6
    assert caches(r3) == [("restore", "restore-key", key2), ("save", "saved", key2)]
    assert r3["jobs"][0]["caches"][0]["matched_key"] == key1
    assert r3["jobs"][0]["steps"][1]["outputs"] == {"cache-hit": "false"}
    assert f"Cache hit for restore-key: {key1}" in log3
    assert "Cache Hit Status - false" in step_log(r3, "List pip packages")
    install = step_log(r3, "Install pip packages")
    assert "Using cached" in install and "django" in install  # the restored pip cache was used
    assert f"Cache saved with key: {key2}" in log3
    assert int(r3["run_number"]) == 3

    # The store holds both entries for the repository.
    server = EmbeddedServer(Settings.from_env({}, data_dir=seed.data)).start()
    try:
        token = server.token(r3["repository"], "refs/heads/main", default_branch="main")
        r = httpx.get(
            f"{server.url}/_apis/artifactcache/caches",
            params={"key": "Linux-pip-"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200
        assert sorted(c["cacheKey"] for c in r.json()["artifactCaches"]) == sorted([key1, key2])
    finally:
        server.stop()


def test_demo_command(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_", "ACTIONS_"))}
    proc = subprocess.run(
        [*RUNCACHE, "demo", "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "all three runs behaved as in the tutorial" in out
    assert "Cache Hit Status - true" in out and "Cache Hit Status - false" in out
    assert "entries left: 0" in out or "no management API" in out
