"""`runcache run` with the Python setup actions' caches, and `runcache demo --python`, end to end.

- actions/setup-python `cache: pip | pipenv | poetry`: the real action's keys (distribution segment, pip's
  restore key only, poetry's `v2`), folders (pip's cache dir, ~/.local/share/virtualenvs, poetry's configured
  virtualenvs and in-project .venv), `cache-hit` false then true, the save in the post step and none after an
  exact hit. pipenv and poetry are not installed here: pipenv's folder needs no tool, and poetry is a stand-in
  script that answers `poetry config --list` and logs `poetry env use`.
- astral-sh/setup-uv `enable-cache`: a miss that saves uv's cache, then a hit from which uv installs without
  downloading a file; `prune-cache` runs `uv cache prune --ci`; a uv version this machine lacks fails clearly.
- `runcache demo --python` on real wheels from a loopback index.

Real wheels come from .cache/wheels (`scripts/setup --dev`); a missing one fails, never skips.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import ROOT, RUNCACHE
from runcache.runner.actions.setup_python import os_key_segment
from runcache.runner.wheelhouse import LocalIndex

WHEELS = ROOT / ".cache" / "wheels"
HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"
HEX64 = "[0-9a-f]{64}"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalIndex]:
    folder = tmp_path_factory.mktemp("wheels")
    for name in ("six-1.17.0", "idna-3.10"):
        found = list(WHEELS.glob(f"{name}-*.whl"))
        if not found:
            pytest.fail(f"{name} wheel missing from {WHEELS}: run scripts/setup --dev", pytrace=False)
        shutil.copy2(found[0], folder)
    with LocalIndex(folder) as served:
        yield served


def files_hash(*contents: bytes) -> str:
    """hashFiles(): sha256 over the matched files' sha256 digests."""
    outer = hashlib.sha256()
    for content in contents:
        outer.update(hashlib.sha256(content).digest())
    return outer.hexdigest()


class Project:
    def __init__(self, root: Path, index: LocalIndex) -> None:
        self.root, self.index = root, index
        self.ws = root / "ws"
        (self.ws / ".github" / "workflows").mkdir(parents=True)
        self.home = root / "home"
        self.tools = root / "tools"
        self.tools.mkdir()
        self.extra_env: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PIP_", "UV_", "RUNCACHE_", "ACTIONS_", "GITHUB_", "RUNNER_", "VIRTUAL_ENV", "XDG_"))
        }
        url = f"{self.index.url}/simple/"
        return {
            **keep,
            "HOME": str(self.home),
            "PATH": f"{self.tools}{os.pathsep}{keep.get('PATH', '')}",
            "PIP_INDEX_URL": url,
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_TRUSTED_HOST": "127.0.0.1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "UV_INDEX_URL": url,
            "UV_NO_CONFIG": "1",
            "UV_PYTHON_DOWNLOADS": "never",
            **self.extra_env,
        }

    def run(self, workflow: str) -> dict:
        """A fresh runner: an empty home (keeping runcache's tool cache), the workspace as checked out."""
        for folder, keep in ((self.home, ".cache"), (self.home / ".cache", "runcache")):
            for item in folder.iterdir() if folder.is_dir() else []:
                if item.name != keep:
                    shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        self.home.mkdir(exist_ok=True)
        (self.ws / ".github" / "workflows" / "w.yml").write_text(textwrap.dedent(workflow))
        proc = subprocess.run(
            [*RUNCACHE, "run", "--data-dir", str(self.root / "data"), "--json", "--host-python"],
            cwd=self.ws,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"no JSON (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None


def job(result: dict, name: str) -> dict:
    return next(j for j in result["jobs"] if j["job"] == name or j.get("name") == name)


def step(j: dict, name: str, stage: str = "main") -> dict:
    return next(s for s in j["steps"] if s["name"] == name and s.get("stage", "main") == stage)


def log(s: dict) -> str:
    return Path(s["log"]).read_text()


def cache_ops(j: dict) -> dict[str, dict]:
    return {c["operation"]: c for c in j["caches"]}


POETRY = """#!/bin/sh
# poetry stand-in: `config --list` as poetry prints it, every other call logged
if [ "$1 $2" = "config --list" ]; then
  echo 'cache-dir = "'"$HOME"'/.cache/pypoetry"'
  echo 'virtualenvs.create = true'
  echo 'virtualenvs.in-project = true'
  echo 'virtualenvs.path = "{cache-dir}/virtualenvs"  # '"$HOME"'/.cache/pypoetry/virtualenvs'
  exit 0
fi
echo "$PWD: $*" >> "$POETRY_LOG"
"""

SETUP_PYTHON_WF = f"""
on: push
jobs:
  py:
    runs-on: ubuntu-latest
    steps:
      - name: pip
        id: pip
        uses: actions/setup-python@v5
        with: {{python-version: '{HERE}', cache: pip}}
      # the same version again in one job: the first step's environment, other caches
      - name: pipenv
        id: pipenv
        uses: actions/setup-python@v5
        with: {{python-version: '{HERE}', cache: pipenv}}
      - name: poetry
        id: poetry
        uses: actions/setup-python@v5
        with: {{python-version: '{HERE}', cache: poetry}}
      - name: use
        run: |
          cat ~/.cache/pip/marker ~/.local/share/virtualenvs/app-1a2b/marker || echo "no marker"
          cat app/.venv/marker ~/.cache/pypoetry/virtualenvs/marker || echo "no marker"
          mkdir -p ~/.cache/pip ~/.local/share/virtualenvs/app-1a2b app/.venv ~/.cache/pypoetry/virtualenvs
          echo pip-cache > ~/.cache/pip/marker
          echo pipenv-env > ~/.local/share/virtualenvs/app-1a2b/marker
          echo in-project > app/.venv/marker && echo shared > ~/.cache/pypoetry/virtualenvs/marker
          echo "hits=${{{{ steps.pip.outputs.cache-hit }}}},${{{{ steps.pipenv.outputs.cache-hit }}}},\\
          ${{{{ steps.poetry.outputs.cache-hit }}}}" | tr -d ' \\n'; echo
"""


FILES = {"pip": "requirements.txt", "pipenv": "Pipfile.lock", "poetry": "app/poetry.lock"}


def test_setup_python_cache_pip_pipenv_poetry(tmp_path: Path, index: LocalIndex) -> None:
    p = Project(tmp_path, index)
    (p.ws / "requirements.txt").write_bytes(b"six\n")
    (p.ws / "Pipfile.lock").write_bytes(b'{"default": {}}\n')
    (p.ws / "app").mkdir()
    (p.ws / "app" / "poetry.lock").write_bytes(b"# poetry lock\n")
    (p.tools / "poetry").write_text(POETRY)
    (p.tools / "poetry").chmod(0o755)
    poetry_log = tmp_path / "poetry.log"
    p.extra_env["POETRY_LOG"] = str(poetry_log)
    r1 = p.run(SETUP_PYTHON_WF)
    r2 = p.run(SETUP_PYTHON_WF)

    version = re.escape(HERE) + r"\.\d+"
    base = re.escape(f"setup-python-Linux-x64{os_key_segment()}-python-")
    hashes = {name: files_hash((p.ws / f).read_bytes()) for name, f in FILES.items()}
    expected = {
        "pip": (f"pip-{hashes['pip']}", [str(p.home / ".cache" / "pip")]),
        "pipenv": (f"pipenv-{hashes['pipenv']}", [str(p.home / ".local/share/virtualenvs")]),
        "poetry": (
            f"poetry-v2-{hashes['poetry']}",
            [str(p.home / ".cache/pypoetry/virtualenvs"), str(p.ws / "app" / ".venv")],
        ),
    }
    j1, j2 = job(r1, "py"), job(r2, "py")
    assert j1["result"] == "success", "\n".join(log(s) for s in j1["steps"] if s.get("log"))
    assert j2["result"] == "success", "\n".join(log(s) for s in j2["steps"] if s.get("log"))
    assert "hits=false,false,false" in log(step(j1, "use"))
    assert "hits=true,true,true" in log(step(j2, "use"))
    for name, (tail, paths) in expected.items():
        restores = [c for c in j1["caches"] if c["step"] == name and c["operation"] == "restore"]
        saves = [c for c in j1["caches"] if c["step"] == f"Post {name}" and c["operation"] == "save"]
        assert len(restores) == 1 and len(saves) == 1, j1["caches"]
        key = restores[0]["key"]
        assert re.fullmatch(base + version + "-" + re.escape(tail), key), key
        # pip alone takes an older entry by prefix; pipenv's and poetry's folders are only valid for their lock
        assert restores[0]["restore_keys"] == ([key.rsplit("-", 1)[0]] if name == "pip" else [])
        assert restores[0]["paths"] == paths
        assert restores[0]["result"] == "miss"
        assert f"{name} cache is not found" in log(step(j1, name))
        assert saves[0]["result"] == "saved" and saves[0]["key"] == key
        assert f"Cache saved with the key: {key}" in log(step(j1, f"Post {name}", "post"))

        hit = next(c for c in j2["caches"] if c["step"] == name and c["operation"] == "restore")
        assert hit["result"] == "hit" and hit["key"] == key
        assert f"Cache restored from key: {key}" in log(step(j2, name))
        skipped = next(c for c in j2["caches"] if c["step"] == f"Post {name}")
        assert skipped["result"] == "skipped"
        assert "not saving cache" in log(step(j2, f"Post {name}", "post"))

    used = log(step(j2, "use"))
    assert all(m in used for m in ("pip-cache", "pipenv-env", "in-project", "shared")), used
    # one environment for the three steps: the later ones did not rebuild it
    assert "Successfully set up" in log(step(j1, "pipenv")) and "Successfully set up" in log(step(j1, "poetry"))
    # after a restore the projects' environments are pointed at the job's interpreter, in each project
    calls = poetry_log.read_text().splitlines()
    assert len(calls) == 2 and all(c.startswith(f"{p.ws / 'app'}: env use /") for c in calls), calls


UV_WF = """
on: push
jobs:
  uv:
    runs-on: ubuntu-latest
    steps:
      - name: too new
        continue-on-error: true
        uses: astral-sh/setup-uv@v6
        with: {version: '99.0.0'}
      - name: setup
        id: uv
        uses: astral-sh/setup-uv@v6
        with:
          enable-cache: true
          cache-suffix: @SUFFIX@
          prune-cache: @PRUNE@
          python-version: '@HERE@'
      - name: use
        run: |
          echo "uv=$(command -v uv) cache=$UV_CACHE_DIR"
          uv venv -q --clear --python "$(command -v python3)" .venv
          uv pip install -q --python .venv -r requirements.txt
          .venv/bin/python -c "import six; print('six', six.__version__)"
          echo "hit=${{ steps.uv.outputs.cache-hit }} version=${{ steps.uv.outputs.uv-version }}"
"""


def test_setup_uv_enable_cache_miss_then_hit(tmp_path: Path, index: LocalIndex) -> None:
    p = Project(tmp_path, index)
    (p.ws / "requirements.txt").write_bytes(b"six==1.17.0\n")
    wf = UV_WF.replace("@HERE@", HERE).replace("@SUFFIX@", "tests").replace("@PRUNE@", "false")
    r1 = p.run(wf)
    j1 = job(r1, "uv")
    assert j1["result"] == "success", log(step(j1, "setup")) + log(step(j1, "use"))
    too_new = step(j1, "too new")
    assert too_new["outcome"] == "failure"
    assert "uv 99.0.0 is not available on this machine" in log(too_new)
    assert "downloads no tools" in log(too_new)

    uv_version = subprocess.run(
        [shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv", "--version"], capture_output=True, text=True
    ).stdout.split()[1]
    key = cache_ops(j1)["restore"]["key"]
    digest = files_hash((p.ws / "requirements.txt").read_bytes())
    assert re.fullmatch(rf"setup-uv-2-x86_64-unknown-linux-gnu-[a-z0-9.-]+-{re.escape(HERE)}-{digest}-tests", key), key
    use1 = log(step(j1, "use"))
    assert f"cache={p.home / '.cache' / 'uv'}" in use1
    assert f"/uv/{uv_version}/" in use1  # uv on PATH from the action's own folder
    assert f"hit=false version={uv_version}" in use1 and "six 1.17.0" in use1
    post1 = log(step(j1, "Post setup", "post"))
    assert "Pruning cache..." not in post1 and f"uv cache saved with key: {key}" in post1
    assert cache_ops(j1)["save"]["result"] == "saved"

    downloads = len([r for r in index.requests if "/files/" in r])
    r2 = p.run(wf)
    j2 = job(r2, "uv")
    assert j2["result"] == "success", log(step(j2, "use"))
    assert cache_ops(j2)["restore"]["result"] == "hit"
    assert "hit=true" in log(step(j2, "use")) and "six 1.17.0" in log(step(j2, "use"))
    assert len([r for r in index.requests if "/files/" in r]) == downloads  # installed from the restored cache
    assert f"Cache hit occurred on key {key}, not saving cache." in log(step(j2, "Post setup", "post"))
    assert "save" not in cache_ops(j2)

    # prune-cache: another key (no restore keys, so a miss), and `uv cache prune --ci` before the save
    r3 = p.run(wf.replace("prune-cache: false", "prune-cache: true"))
    j3 = job(r3, "uv")
    assert j3["result"] == "success", log(step(j3, "Post setup", "post"))
    pruned = cache_ops(j3)["restore"]["key"]
    assert pruned == key.replace(f"-{digest}-", f"-pruned-{digest}-") and cache_ops(j3)["restore"]["result"] == "miss"
    post3 = log(step(j3, "Post setup", "post"))
    assert "Pruning cache..." in post3 and f"uv cache saved with key: {pruned}" in post3


def test_demo_python(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_", "ACTIONS_", "PIP_", "UV_"))}
    proc = subprocess.run(
        [*RUNCACHE, "demo", "--python", "-r", str(requirements), "--find-links", str(WHEELS), "--add", "idna"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "both workflows installed the requirements in every run" in out
    rows = re.findall(r"^([123])\s+(\S+)\s+([\d.]+) s\s+(\S+)\s+([\d.]+) s\s+[\d.]+×$", proc.stdout, re.M)
    assert [(n, t, pr) for n, t, _, pr, _ in rows] == [
        ("1", "miss", "miss"),
        ("2", "hit", "hit"),
        ("3", "restore-key", "restore-key"),
    ], proc.stdout
    hit_line = next(line for line in out.splitlines() if "Environment restored from key" in line)
    assert "no installer run" in hit_line  # run 2's exact hit
