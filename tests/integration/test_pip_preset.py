"""`runcache pip install` against a real server, with real wheels from a loopback index, with pip and with uv.

The wheels (flask, requests and their dependencies, and six) are PyPI's own, downloaded by `scripts/setup
--dev` into .cache/wheels; a missing one fails the suite (run the setup), never skips. pip and uv see only
the loopback index: their configuration files and the caller's PIP_*/UV_* settings are left out.

Whether an installer ran is proven from outside the CLI: uv is reached through a PATH shim that logs every
invocation, and pip writes every invocation to the file named by PIP_LOG.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ROOT, RUNCACHE, Server
from runcache.runner.wheelhouse import LocalIndex, normalize

WHEEL_LISTS = [
    ROOT / "tests" / "data" / "wheels" / "requirements.txt",
    ROOT / "tests" / "data" / "wheels" / "extra.txt",
]
WHEEL_CACHE = ROOT / ".cache" / "wheels"
INSTALLERS = ["pip", "uv"]
BASE = "flask==3.1.2\nrequests==2.32.5\n"
FLASK_SET = {"flask", "werkzeug", "jinja2", "markupsafe", "itsdangerous", "click", "blinker"}
REQUESTS_SET = {"requests", "certifi", "idna", "urllib3", "charset-normalizer"}


def _pinned() -> list[tuple[str, str]]:
    pins = []
    for path in WHEEL_LISTS:
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                name, version = line.split("==")
                pins.append((normalize(name), version))
    return pins


@pytest.fixture(scope="session")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalIndex]:
    """Exactly the pinned wheels, served as a PEP 503 index on loopback."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    have = list(WHEEL_CACHE.glob("*.whl")) if WHEEL_CACHE.is_dir() else []
    missing = []
    for name, version in _pinned():
        found = [w for w in have if normalize(w.name.split("-")[0]) == name and w.name.split("-")[1] == version]
        if not found:
            missing.append(f"{name}=={version}")
        for wheel in found:
            shutil.copy2(wheel, folder / wheel.name)
    if missing:
        pytest.fail(f"wheels missing from {WHEEL_CACHE}: {', '.join(missing)}; run scripts/setup --dev", pytrace=False)
    with LocalIndex(folder) as served:
        yield served


def _uv() -> str:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not uv:
        pytest.fail("uv is not installed (it is in the dev extra: run scripts/setup --dev)", pytrace=False)
    return uv


def _path_without_uv() -> list[str]:
    return [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not os.path.exists(os.path.join(d, "uv"))]


@dataclass
class Job:
    """One CI job's view: a workspace, a home, the server, an installer that logs its invocations."""

    server: Server
    token: str
    installer: str
    ws: Path
    home: Path
    index: LocalIndex
    log: Path  # uv shim log, or PIP_LOG
    shim_dir: Path

    def env(self) -> dict[str, str]:
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PIP_", "UV_", "RUNCACHE_", "ACTIONS_", "GITHUB_", "VIRTUAL_ENV", "PYTHON", "XDG_"))
        }
        path = _path_without_uv()
        if self.installer == "uv":
            path = [str(self.shim_dir), *path]
        env = {
            **keep,
            "PATH": os.pathsep.join(path),
            "HOME": str(self.home),
            "RUNCACHE_URL": self.server.url,
            "RUNCACHE_TOKEN": self.token,
            "GITHUB_WORKSPACE": str(self.ws),
            "PIP_INDEX_URL": f"{self.index.url}/simple/",
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_NO_INPUT": "1",
            "PIP_TRUSTED_HOST": "127.0.0.1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "UV_INDEX_URL": f"{self.index.url}/simple/",
            "UV_NO_CONFIG": "1",
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_LINK_MODE": "copy",
            "UV_SHIM_LOG": str(self.log),
        }
        if self.installer == "pip":
            env["PIP_LOG"] = str(self.log)
        return env

    def write(self, requirements: str) -> None:
        (self.ws / "requirements.txt").write_text(requirements)

    def run(self, *extra: str, python: str | None = None, ok: bool = True) -> dict:
        argv = [*RUNCACHE, "pip", "install", "-r", "requirements.txt", "--python", python or sys.executable]
        proc = subprocess.run(
            [*argv, "--json", *extra], cwd=self.ws, env=self.env(), capture_output=True, text=True, timeout=600
        )
        if ok:
            assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        report = json.loads(proc.stdout)
        report["stderr"] = proc.stderr
        return report

    def venv(self) -> Path:
        return self.ws / ".venv"

    def py(self, code: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv() / "bin" / "python"), "-c", code],
            capture_output=True,
            text=True,
            check=check,
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.home)},
        )

    def dists(self) -> set[str]:
        out = self.py(
            "import importlib.metadata as m, json; print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"
        )
        return {normalize(n) for n in json.loads(out.stdout)}


@pytest.fixture
def make_job(server: Server, index: LocalIndex, tmp_path: Path):
    token = server.token()
    uv = _uv()

    def make(installer: str, name: str = "repo") -> Job:
        ws = tmp_path / name / "work"
        ws.mkdir(parents=True)
        home = tmp_path / "home"  # one machine: the jobs share the home (caches, runcache's notes)
        home.mkdir(exist_ok=True)
        shim_dir = tmp_path / "shim"
        shim_dir.mkdir(exist_ok=True)
        shim = shim_dir / "uv"
        if not shim.exists():
            shim.write_text(f'#!/bin/sh\nprintf \'%s\\n\' "$*" >> "$UV_SHIM_LOG"\nexec "{uv}" "$@"\n')
            shim.chmod(0o755)
        job = Job(server, token, installer, ws, home, index, tmp_path / f"{installer}-calls.log", shim_dir)
        job.write(BASE)
        return job

    return make


def _calls(job: Job) -> int:
    """Installer invocations so far: a line per uv run from the shim, a growing log from pip (PIP_LOG)."""
    if not job.log.exists():
        return 0
    return len(job.log.read_text().splitlines())


@pytest.mark.parametrize("installer", INSTALLERS)
def test_miss_saves_then_exact_hit_starts_no_installer(make_job, installer: str) -> None:
    job = make_job(installer)
    first = job.run()
    assert first["installer"] == installer
    assert first["outcome"] == "miss" and first["saved"] is True, first
    assert first["key"].startswith("pyenv-Linux-x64-cp3") and f"-{installer}-" in first["key"]
    assert first["restore_keys"] == [first["key"][: first["key"].rindex("-") + 1]]
    assert set(a.split("==")[0] for a in first["added"]) >= FLASK_SET | REQUESTS_SET
    assert _calls(job) > 0  # the installer ran (and the log proves it can see a run)

    shutil.rmtree(job.venv())  # a fresh CI job: nothing but the checkout
    before = _calls(job)
    hit = job.run()
    assert hit["outcome"] == "hit" and hit["cache_hit"] == "true", hit
    assert hit["matched_key"] == first["key"] and hit["installer_runs"] == []
    assert _calls(job) == before, "an installer process started on an exact hit"
    job.py("import flask, requests")
    assert job.dists() >= FLASK_SET | REQUESTS_SET


@pytest.mark.parametrize("installer", INSTALLERS)
def test_added_requirement_restores_by_prefix_and_installs_only_the_difference(make_job, installer: str) -> None:
    job = make_job(installer)
    base = job.run()
    job.write(BASE + "six==1.17.0\n")
    shutil.rmtree(job.venv())
    grown = job.run()
    assert grown["outcome"] == "restored" and grown["cache_hit"] == "false", grown
    assert grown["matched_key"] == base["key"] and grown["key"] != base["key"]
    assert grown["added"] == ["six==1.17.0"] and grown["removed"] == [] and grown["changed"] == []
    assert not any("venv" in argv for argv in grown["installer_runs"]), "a restored environment is not rebuilt"
    assert grown["saved"] is True
    job.py("import six, flask, requests")

    shutil.rmtree(job.venv())
    again = job.run()
    assert again["outcome"] == "hit" and again["matched_key"] == grown["key"]


@pytest.mark.parametrize("installer", INSTALLERS)
def test_removed_requirement_is_gone_with_what_only_it_needed(make_job, installer: str) -> None:
    job = make_job(installer)
    job.write(BASE + "six==1.17.0\n")
    job.run()
    job.write("flask==3.1.2\n")
    shutil.rmtree(job.venv())
    shrunk = job.run()
    assert shrunk["outcome"] == "restored", shrunk
    assert {r.split("==")[0] for r in shrunk["removed"]} == REQUESTS_SET | {"six"}
    assert job.py("import requests", check=False).returncode != 0
    seed = {"pip", "setuptools"} if installer == "pip" else set()
    assert job.dists() - seed == FLASK_SET  # exactly what a fresh install of flask has


@pytest.fixture(scope="session")
def copied_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Another interpreter: this one's binary copied elsewhere (its standard library linked in beside it).

    Same version and build, so the same wheels install, but another real path: a venv made from it names
    that path, and an environment from the original must never be taken for one of it."""
    root = tmp_path_factory.mktemp("copied-python")
    real = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    ver = sysconfig.get_python_version()
    (root / "bin").mkdir()
    (root / "lib").mkdir()
    binary = root / "bin" / f"python{ver}"
    shutil.copy2(real, binary)
    (root / "lib" / f"python{ver}").symlink_to(Path(sys.base_prefix) / "lib" / f"python{ver}")
    libdir = sysconfig.get_config_var("LIBDIR")
    for lib in Path(libdir).glob("libpython*") if libdir else []:
        (root / "lib" / lib.name).symlink_to(lib)
    probe = subprocess.run(
        [str(binary), "-c", "import sys, ensurepip, ssl; print(sys.prefix)"], capture_output=True, text=True
    )
    assert probe.returncode == 0 and probe.stdout.strip() == str(root), probe.stderr
    return str(binary)


@pytest.mark.parametrize("installer", INSTALLERS)
def test_another_interpreter_is_a_miss(make_job, installer: str, copied_python: str) -> None:
    job = make_job(installer)
    original = job.run()
    shutil.rmtree(job.venv())
    other = job.run(python=copied_python)
    assert other["outcome"] == "miss" and other["matched_key"] == "", other
    # Same OS, arch and Python tag; another interpreter digest, so neither the key nor its prefix matches.
    tag = original["key"].split("-")[:4]
    assert other["key"].split("-")[:4] == tag and other["restore_keys"] != original["restore_keys"]
    assert os.path.realpath(job.venv() / "bin" / "python") == os.path.realpath(copied_python)
    job.py("import flask, requests")

    # The environment left at --venv (built on the copy) is not this interpreter's: replaced, not reused.
    back = job.run()
    assert back["outcome"] == "hit" and back["matched_key"] == original["key"], back
    assert os.path.realpath(job.venv() / "bin" / "python") != os.path.realpath(copied_python)


def test_an_environment_of_another_interpreter_is_refused(make_job, copied_python: str) -> None:
    """The check behind every restore: pyvenv.cfg and bin/python must lead to the interpreter in use."""
    from runcache.client.pyenv.probe import probe_interpreter
    from runcache.client.pyenv.venv import EnvironmentRefused, accept

    job = make_job("uv")
    job.run(python=copied_python)
    with pytest.raises(EnvironmentRefused, match="not this interpreter"):
        accept(job.venv(), probe_interpreter(sys.executable), "uv")
    cfg = job.venv() / "pyvenv.cfg"
    cfg.write_text(re.sub(r"(?m)^home = .*$", "home = /nonexistent/python/bin", cfg.read_text()))
    with pytest.raises(EnvironmentRefused, match="does not exist here"):
        accept(job.venv(), probe_interpreter(copied_python), "uv")


@pytest.mark.parametrize("installer", INSTALLERS)
def test_environment_restored_elsewhere_is_repaired(make_job, installer: str) -> None:
    first = make_job(installer, "a")
    built = first.run()
    # Another checkout: a path with a space, long enough that shebangs need pip's /bin/sh trampoline.
    second = make_job(installer, "b c " + "x" * 120)
    hit = second.run()
    old = str(first.venv().resolve())
    assert hit["outcome"] == "hit" and hit["matched_key"] == built["key"], hit
    assert hit["relocated_from"] == old and hit["installer_runs"] == []
    shutil.rmtree(first.ws)  # nothing may still lean on the first checkout

    new_venv = second.venv()
    for script in (new_venv / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            assert old.encode() not in script.read_bytes(), f"{script.name} still names {old}"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(second.home)}
    flask = subprocess.run([str(new_venv / "bin" / "flask"), "--version"], capture_output=True, text=True, env=env)
    assert flask.returncode == 0 and "Flask 3.1.2" in flask.stdout, flask.stderr
    activated = subprocess.run(
        [
            "bash",
            "-c",
            f'. "{new_venv}/bin/activate" && echo "$VIRTUAL_ENV" && python -c "import sys; print(sys.prefix)"',
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert activated.stdout.split("\n")[:2] == [str(new_venv), str(new_venv)], activated.stderr
    if installer == "pip":
        pip = subprocess.run([str(new_venv / "bin" / "pip"), "--version"], capture_output=True, text=True, env=env)
        assert pip.returncode == 0 and str(new_venv) in pip.stdout, pip.stderr


@pytest.mark.parametrize("installer", INSTALLERS)
def test_environment_that_cannot_be_moved_is_refused_and_rebuilt(make_job, installer: str) -> None:
    first = make_job(installer, "a")
    built = first.run()
    odd = make_job(installer, "price$HOME")  # `$` cannot be written into the activation scripts safely
    report = odd.run()
    assert report["outcome"] == "miss" and "cannot be moved" in report["refused"], report
    assert report["key"] == built["key"] and not report["saved"]
    assert any("exists (entries are immutable)" in w for w in report["warnings"])
    odd.py("import flask, requests")
    assert f"{odd.ws}/.venv" in (odd.venv() / "bin" / "activate").read_text()


def test_a_failed_sync_leaves_nothing_that_passes_for_a_finished_environment(make_job) -> None:
    job = make_job("uv")
    base = job.run()
    job.write(BASE + "no-such-package==1.0\n")
    failed = subprocess.run(
        [*RUNCACHE, "pip", "install", "-r", "requirements.txt", "--python", sys.executable],
        cwd=job.ws, env=job.env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert failed.returncode == 1 and "is not ready" in failed.stderr, failed.stderr
    job.write(BASE)
    again = job.run()
    # The prefix-restored environment the failed sync started from is not taken for the base key's.
    assert again["outcome"] == "hit" and again["matched_key"] == base["key"], again


def test_key_follows_installer_arguments_and_includes(make_job) -> None:
    job = make_job("uv")

    def key(*extra: str) -> str:
        proc = subprocess.run(
            [*RUNCACHE, "pip", "key", "-r", "requirements.txt", "--python", sys.executable, "--json", *extra],
            cwd=job.ws, env=job.env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["key"]

    plain = key()
    assert key("--", "--no-binary", ":all:") != plain
    job.write(BASE + "-c pins.txt\n")
    (job.ws / "pins.txt").write_text("urllib3==2.5.0\n")
    pinned = key()
    (job.ws / "pins.txt").write_text("urllib3==2.4.0\n")
    assert len({plain, pinned, key()}) == 3
