"""``runcache demo``: the pip-caching tutorial, three runs of the bundled example, then the entries it left.

1. first run: cache miss, pip installs, the post step saves ``~/.cache/pip``;
2. second run: exact hit, the install step is skipped;
3. ``django`` added to requirements.txt: the key changes, the ``restore-keys`` prefix restores the first
   entry (``cache-hit`` is ``false``), pip installs, and a second entry is saved;

then it lists the repository's cache entries and deletes them. Each run starts like a fresh hosted
runner: an empty home folder (so an empty ``~/.cache/pip``) and, as every ``runcache run`` job, a new
virtual environment. pip installs from a local index of small stand-in packages, so the demo needs no
network (``--online`` uses PyPI). Run logs are shown only where they outlive the demo (``--keep`` or
``--data-dir``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from runcache.runner.launch import add_run_arguments, run_from_args

INSTALL_STEP = "Install pip packages"
CACHE_STEP = "Cache Python Packages"


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help="keep the entries in this data directory (default: a temporary one)")
    p.add_argument(
        "--url", "--server", dest="url", metavar="URL", help="use this runcache server instead of an embedded one"
    )
    p.add_argument("--token", help="token for --url (env RUNCACHE_TOKEN); its repository is used")
    p.add_argument("--repo", help="OWNER/NAME the entries belong to (default: a fresh runcache-demo/seed-<id>)")
    p.add_argument("--online", action="store_true", help="install the real packages from PyPI instead of stand-ins")
    p.add_argument("--keep", action="store_true", help="keep the project copy, the run logs and the cache entries")
    p.add_argument("-v", "--verbose", action="store_true", help="show every step's log")
    g = p.add_argument_group("--python: the tutorial's pip cache beside `runcache pip install`")
    g.add_argument(
        "--python",
        action="store_true",
        help="run the tutorial's pip-cache workflow and the same workflow with `runcache pip install`, three runs each",
    )
    g.add_argument(
        "-r", "--requirements", type=Path, metavar="FILE",
        help="the requirements both workflows install (default: flask and requests, the tutorial's)",
    )  # fmt: skip
    g.add_argument(
        "--find-links", type=Path, metavar="DIR",
        help="serve the wheels in DIR as a loopback index (no network; e.g. .cache/wheels after scripts/setup --dev)",
    )  # fmt: skip
    g.add_argument("--index-url", metavar="URL", help="install from this index (e.g. a PyPI mirror)")
    g.add_argument(
        "--add", metavar="REQUIREMENT",
        help="the requirement run 3 adds (default django with the stand-ins, six otherwise)",
    )  # fmt: skip
    g.add_argument(
        "--installer", choices=["auto", "pip", "uv"], default="auto",
        help="the preset's installer (auto: uv when runcache's own uv is there, else pip)",
    )  # fmt: skip


@contextlib.contextmanager
def patched_environ(changes: dict[str, str | None]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in changes}
    try:
        for k, v in changes.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def copy_example(dest: Path) -> Path:
    from runcache.examples import example_path

    shutil.copytree(example_path("seed"), dest, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    return dest


class Demo:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.problems: list[str] = []
        # Log paths are printed only where the files outlive the demo.
        self.show_logs = bool(args.keep or args.data_dir)

    def say(self, text: str, style: str = "") -> None:
        self.console.print(Text(text, style=style))

    def title(self, text: str) -> None:
        self.console.print()
        self.console.rule(Text(text, style="bold cyan"), align="left")

    def run(self) -> int:
        args = self.args
        root = Path(tempfile.mkdtemp(prefix="runcache-demo-"))
        try:
            return self._run(root)
        finally:
            if args.keep:
                self.say(f"kept: {root}", "bright_black")
            else:
                shutil.rmtree(root, ignore_errors=True)

    def _run(self, root: Path) -> int:
        args = self.args
        project = copy_example(root / "seed")
        data_dir = args.data_dir or root / "data"
        repo = args.repo or _token_repository(args.token) or f"runcache-demo/seed-{secrets.token_hex(3)}"
        self.title("runcache demo: caching pip downloads with actions/cache")
        self.say(f"project   {project} (a copy of the bundled example)")
        self.say("workflow  .github/workflows/cacheworkflow.yml, job build")
        where = args.url or ("embedded server, data " + (str(data_dir) if args.data_dir else "in a temporary folder"))
        self.say(f"cache     {where} · repository {repo}")
        self.say("python    a fresh virtual environment and an empty home folder for every run (like a hosted runner)")
        if not self.show_logs:
            self.say("logs      not kept (the demo's folder is removed at the end; --keep keeps it)", "bright_black")
        index_cm: Any = contextlib.nullcontext(None)
        if not args.online:
            from runcache.runner.wheelhouse import LocalIndex, build_stand_ins

            self.say("pip       a local package index of stand-in packages (no network; --online uses PyPI)")
            build_stand_ins(root / "wheels")
            index_cm = LocalIndex(root / "wheels")
        with index_cm as index:
            runs = [
                ("Run 1: nothing cached yet", None),
                ("Run 2: the same requirements", None),
                ("Run 3: django added to requirements.txt", "django"),
            ]
            results = []
            for n, (label, add) in enumerate(runs, 1):
                if add:
                    with open(project / "requirements.txt", "a") as fh:
                        fh.write(add + "\n")
                    self.title(label)
                    self.say(f"$ echo {add} >> requirements.txt", "bright_black")
                else:
                    self.title(label)
                self.say(
                    "preparing: an emptied home folder, "
                    + ("the cache server" if args.url else "the embedded cache server")
                    + " and the job's virtual environment ...",
                    "bright_black",
                )
                result = self._one_run(root, n, project, data_dir, repo, index)
                if result is None:
                    return 1
                results.append(result)
                self._explain(n, result)
            self._entries(data_dir, repo)
        self.title("What happened")
        self._recap(results)
        return self._verdict("all three runs behaved as in the tutorial")

    def _verdict(self, success: str) -> int:
        if self.problems:
            for p in self.problems:
                self.say(f"✗ {p}", "bold red")
            return 1
        self.say(f"✓ {success}", "bold green")
        return 0

    def _one_run(self, root: Path, n: int, project: Path, data_dir: Path, repo: str, index: Any):
        from runcache.runner.console import ConsoleReporter

        home = _fresh_home(root)
        changes: dict[str, str | None] = {
            "HOME": str(home),
            "VIRTUAL_ENV": None,
            "XDG_CACHE_HOME": None,
            "XDG_STATE_HOME": None,
            "PYTHONHOME": None,
        }
        if index is not None:
            changes.update({k: None for k in os.environ if k.startswith("PIP_")})
            changes.update(index.pip_env())
        parser = argparse.ArgumentParser()
        add_run_arguments(parser)
        argv = [
            str(project / ".github" / "workflows" / "cacheworkflow.yml"),
            "--repo",
            repo,
            "--ref",
            "refs/heads/main",
        ]
        argv += ["--data-dir", str(data_dir)]
        argv += ["--url", self.args.url] if self.args.url else ["--embedded"]  # not RUNCACHE_URL: the demo's own
        if self.args.token:
            argv += ["--token", self.args.token]
        run_args = parser.parse_args(argv)
        reporter = ConsoleReporter(self.console, stream=self.args.verbose or None, show_log_paths=self.show_logs)
        with patched_environ(changes), contextlib.chdir(project):
            return run_from_args(run_args, reporter)

    def _explain(self, n: int, result: Any) -> None:
        job = result.jobs[0]
        steps = {s.name: s for s in job.steps}
        restore = next((c for c in job.caches if c.operation == "restore"), None)
        save = next((c for c in job.caches if c.operation == "save"), None)
        install = steps.get(INSTALL_STEP)
        cache_step = steps.get(CACHE_STEP)
        hit = cache_step.outputs.get("cache-hit") if cache_step else None
        lines = []
        if restore:
            if restore.result == "miss":
                lines.append(
                    f"restore: miss, no entry for {restore.key} or the prefix {', '.join(restore.restore_keys)}"
                )
            elif restore.result == "hit":
                lines.append(f"restore: exact hit on {restore.key}")
            elif restore.result == "restore-key":
                lines.append(f"restore: restore-key hit, restored {restore.matched_key}")
        lines.append(f"cache-hit output: {hit!r}" if hit is not None else "cache-hit output: not set")
        if install:
            lines.append(f"{INSTALL_STEP}: {'skipped' if install.outcome == 'skipped' else install.outcome}")
        if save:
            if save.result == "saved":
                lines.append(f"post step: saved {save.key} ({save.bytes} bytes)")
            elif save.result == "skipped":
                lines.append("post step: not saved (the restore was an exact hit)")
            else:
                lines.append(f"post step: {save.result} {save.message}")
        for line in lines:
            self.say(f"  → {line}", "cyan")
        expected = {
            1: ("miss", None, "success", "saved"),
            2: ("hit", "true", "skipped", "skipped"),
            3: ("restore-key", "false", "success", "saved"),
        }[n]
        got = (
            restore.result if restore else None,
            hit,
            install.outcome if install else None,
            save.result if save else None,
        )
        if self.args.online and got[2] == "failure":
            # PyPI unreachable: pip fails, but continue-on-error keeps the job (and the cache) going.
            expected = (expected[0], expected[1], "failure", expected[3])
        if got != expected or job.result != "success":
            self.problems.append(f"run {n}: expected (restore, cache-hit, install, save) = {expected}, got {got}")

    def _entries(self, data_dir: Path, repo: str) -> None:
        from runcache.runner.endpoint import CacheEndpoint
        from runcache.runner.run import data_dir_lock
        from runcache.server.embedded import EmbeddedServer

        self.title("Cache entries")
        server = None
        lock = contextlib.nullcontext() if self.args.url else data_dir_lock(data_dir)
        with lock:
            if self.args.url:
                token = self.args.token or os.environ.get("RUNCACHE_TOKEN", "")
                endpoint = CacheEndpoint(self.args.url.rstrip("/"), token, "v2", "external")
            else:
                from runcache.config import Settings

                server = EmbeddedServer(Settings.from_env(data_dir=data_dir)).start()
                endpoint = CacheEndpoint(
                    server.url, server.token(repo, "refs/heads/main", default_branch="main"), "v2", "embedded"
                )
            try:
                self._list_and_delete(endpoint, repo)
            finally:
                if server:
                    server.stop()

    def _list_and_delete(self, endpoint: Any, repo: str) -> None:
        headers = {"Authorization": f"Bearer {endpoint.token}", "Accept": "application/vnd.github+json"}
        import httpx  # only the listing step needs it; keeps `runcache --help` quick

        with httpx.Client(base_url=endpoint.url, headers=headers, timeout=30) as http:
            rest = http.get(f"/repos/{repo}/actions/caches", params={"per_page": 100})
            if rest.status_code == 200:
                entries = rest.json().get("actions_caches", [])
                self._table(
                    [(e["key"], e["ref"], e["size_in_bytes"], e["created_at"]) for e in entries],
                    f"$ GET /repos/{repo}/actions/caches  (what `gh cache list` shows)",
                )
                if self.args.keep:
                    self.say("kept (--keep)", "bright_black")
                    return
                for e in entries:
                    r = http.delete(f"/repos/{repo}/actions/caches", params={"key": e["key"], "ref": e["ref"]})
                    status = "deleted" if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"
                    self.say(f"$ DELETE /repos/{repo}/actions/caches?key={e['key']}  → {status}", "bright_black")
                left = http.get(f"/repos/{repo}/actions/caches").json().get("total_count")
                self.say(f"entries left: {left}")
                return
            # The management REST API is not available on this server: list with the v1 diagnostic endpoint.
            r = http.get("/_apis/artifactcache/caches", params={"key": "Linux-pip-"})
            if r.status_code != 200:
                self.say(f"could not list the entries: HTTP {r.status_code} {r.text[:200]}", "red")
                return
            caches = r.json().get("artifactCaches", [])
            self._table(
                [(c["cacheKey"], c["scope"], None, c["creationTime"]) for c in caches],
                "$ GET _apis/artifactcache/caches?key=Linux-pip-  (the v1 protocol's listing)",
            )
            self.say(
                "this server has no management API to delete entries with; they go with the demo's data directory",
                "yellow",
            )

    def _table(self, rows: list[tuple[str, str, int | None, str]], caption: str) -> None:
        self.say(caption, "bright_black")
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("Key", overflow="fold")
        table.add_column("Ref")
        table.add_column("Size", justify="right")
        table.add_column("Created")
        for key, ref, size, created in rows:
            table.add_row(key, ref, "" if size is None else f"{size / 1000:.1f} KB", created)
        self.console.print(table)

    def _recap(self, results: list[Any]) -> None:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("Run", "Restore", "cache-hit", INSTALL_STEP, "Post save", "Time"):
            table.add_column(col)
        for n, result in enumerate(results, 1):
            job = result.jobs[0]
            restore = next((c for c in job.caches if c.operation == "restore"), None)
            save = next((c for c in job.caches if c.operation == "save"), None)
            install = next((s for s in job.steps if s.name == INSTALL_STEP), None)
            cache_step = next((s for s in job.steps if s.name == CACHE_STEP), None)
            hit = cache_step.outputs.get("cache-hit", "(unset)") if cache_step else ""
            table.add_row(
                str(n),
                restore.result if restore else "",
                hit,
                install.outcome if install else "",
                save.result if save else "",
                f"{job.duration:.1f}s",
            )
        self.console.print(table)


def _fresh_home(root: Path) -> Path:
    """The same home path every run (entries store ~/.cache/pip relative to the workspace), emptied each time
    but for runcache's own ~/.cache/runcache (the pip that job environments are seeded with)."""
    home = root / "home"
    home.mkdir(exist_ok=True)
    _empty(home, keep=".cache")
    _empty(home / ".cache", keep="runcache")
    return home


def _empty(folder: Path, *, keep: str) -> None:
    """Remove everything in ``folder`` but ``keep``."""
    if not folder.is_dir():
        return
    for item in folder.iterdir():
        if item.name == keep:
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink()


def _token_repository(token: str | None) -> str | None:
    """With --server, the entries must belong to the repository the token is for."""
    token = token or os.environ.get("RUNCACHE_TOKEN")
    if not token:
        return None
    import jwt

    try:
        return str(jwt.decode(token, options={"verify_signature": False}).get("repository") or "") or None
    except jwt.PyJWTError:
        return None


# --- runcache demo --python ---------------------------------------------------------------------------------
# The two workflows the Python demo (and bench/python.py) run on the same project. The tutorial's skips its
# install step on an exact hit, which on a fresh runner leaves nothing installed: here it installs every time,
# from the restored pip cache, which is the most that caching ~/.cache/pip can buy.
DEPENDENCY_STEP = "Install dependencies"
TUTORIAL_WORKFLOW = """\
name: the tutorial's pip cache
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Cache Python Packages
        id: cache-python
        uses: actions/cache@v4
        with:
          path: ~/.cache/pip
          key: ${{ runner.os }}-pip-${{ hashFiles('**/requirements.txt') }}
          restore-keys: |
            ${{ runner.os }}-pip-
      - name: Install dependencies
        run: pip install -r requirements.txt
      - name: Show them
        run: python -c "import importlib.metadata as m; print(*sorted(d.name for d in m.distributions()))"
"""
PRESET_WORKFLOW = """\
name: runcache pip install
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Install dependencies
        id: deps
        run: runcache pip install -r requirements.txt --installer ${{ vars.installer || 'auto' }}
      - name: Show them
        run: .venv/bin/python -c "import importlib.metadata as m; print(*sorted(d.name for d in m.distributions()))"
"""


@dataclass
class FlowRun:
    """One run of one workflow: what the dependency step did and how long it took."""

    flow: str  # tutorial | preset
    n: int
    result: Any
    restore: str = ""  # tutorial: the cache step's restore; preset: the step's cache-hit output
    seconds: float = 0.0  # the dependency work: the tutorial's restore + install, the preset's one step
    ok: bool = True


class PythonDemo(Demo):
    """The tutorial's pip cache and `runcache pip install` on the same requirements, run for run."""

    def _run(self, root: Path) -> int:
        args = self.args
        project = root / "project"
        (project / ".github" / "workflows").mkdir(parents=True)
        (project / ".github" / "workflows" / "tutorial.yml").write_text(TUTORIAL_WORKFLOW)
        (project / ".github" / "workflows" / "preset.yml").write_text(PRESET_WORKFLOW)
        if args.requirements:
            shutil.copyfile(args.requirements.resolve(), project / "requirements.txt")
        else:
            from runcache.examples import example_path

            shutil.copyfile(example_path("seed") / "requirements.txt", project / "requirements.txt")
        repo = args.repo or _token_repository(args.token) or f"runcache-demo/python-{secrets.token_hex(3)}"
        add = args.add or ("django" if not (args.find_links or args.index_url or args.online) else "six")
        self.title("runcache demo --python: the tutorial's pip cache beside `runcache pip install`")
        self.say(f"project   {project}: requirements.txt ({_one_line(project / 'requirements.txt')})")
        self.say("tutorial  actions/cache of ~/.cache/pip, then pip install -r requirements.txt")
        self.say("preset    runcache pip install -r requirements.txt (the whole virtualenv, restored or synced)")
        self.say(f"runs      1: nothing cached · 2: the same requirements · 3: {add} added; a fresh runner each time")
        bin_dir = self._tools(root)
        with contextlib.ExitStack() as stack:
            env = self._index_env(root, stack)
            url, token = self._server(root, repo, stack)
            env.update({"RUNCACHE_URL": url, "RUNCACHE_TOKEN": token})
            self.bin_dir = bin_dir
            runs: list[tuple[FlowRun, FlowRun]] = []
            for n in (1, 2, 3):
                if n == 3:
                    with open(project / "requirements.txt", "a") as fh:
                        fh.write(add + "\n")
                self.title(f"Run {n}: " + {1: "nothing cached yet", 2: "the same requirements", 3: f"{add} added"}[n])
                pair = []
                for flow in ("tutorial", "preset"):
                    self.say(f"{flow}: a fresh runner (empty home, new checkout) ...", "bright_black")
                    result = self._flow_run(root, project, flow, repo, url, token, env)
                    if result is None:
                        return 1
                    pair.append(self._measure(flow, n, result))
                    if not pair[-1].ok:
                        self.say(f"✗ {self.problems[-1]}", "bold red")
                        return 1
                runs.append((pair[0], pair[1]))
                self._explain_pair(pair[0], pair[1])
        self.title("The dependency step, run by run")
        self._times(runs)
        return self._verdict("both workflows installed the requirements in every run")

    def _tools(self, root: Path) -> Path:
        """`runcache` (and uv, for the preset) on the jobs' PATH, whatever the caller's PATH holds."""
        bin_dir = root / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "runcache"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m runcache.cli "$@"\n')
        shim.chmod(0o755)
        uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
        if uv and self.args.installer != "pip":
            (bin_dir / "uv").symlink_to(os.path.realpath(uv))
        elif self.args.installer == "uv":
            self.problems.append("--installer uv: no uv beside runcache or on PATH (pip install uv)")
        return bin_dir

    def _index_env(self, root: Path, stack: contextlib.ExitStack) -> dict[str, str | None]:
        """pip and uv see one index: the given one, the wheels of --find-links or the stand-ins, on loopback."""
        args = self.args
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("PIP_", "UV_"))}
        if args.online:
            self.say("index     PyPI (--online)")
            return {}
        from runcache.runner.wheelhouse import LocalIndex, build_stand_ins

        if args.index_url:
            url = args.index_url
            self.say(f"index     {url}")
        else:
            if args.find_links:
                folder = args.find_links.resolve()  # the runs work in the project, not here
                if not any(folder.glob("*.whl")):
                    raise ValueError(
                        f"--find-links {folder}: no wheels there (scripts/setup --dev fills .cache/wheels)"
                    )
                self.say(f"index     the wheels in {folder}, served on loopback (no network)")
            else:
                folder = root / "wheels"
                build_stand_ins(folder)
                self.say(
                    "index     stand-in packages on loopback (no network; --find-links .cache/wheels for real ones)"
                )
            url = stack.enter_context(LocalIndex(folder)).url + "/simple/"
            env["PIP_TRUSTED_HOST"] = "127.0.0.1"
        env.update(
            {
                "PIP_INDEX_URL": url,
                "PIP_CONFIG_FILE": os.devnull,
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PIP_NO_INPUT": "1",
                "UV_INDEX_URL": url,
                "UV_NO_CONFIG": "1",
                "UV_PYTHON_DOWNLOADS": "never",
            }
        )
        return env

    def _server(self, root: Path, repo: str, stack: contextlib.ExitStack) -> tuple[str, str]:
        """One server for all six runs: the preset's step talks to it too (RUNCACHE_URL), so it must outlive a run."""
        if self.args.url:
            token = self.args.token or os.environ.get("RUNCACHE_TOKEN", "")
            self.say(f"cache     {self.args.url} · repository {repo}")
            return self.args.url.rstrip("/"), token
        from runcache.config import Settings
        from runcache.runner.run import data_dir_lock
        from runcache.server.embedded import EmbeddedServer

        data_dir = self.args.data_dir or root / "data"
        stack.enter_context(data_dir_lock(data_dir))
        server = EmbeddedServer(Settings.from_env(data_dir=data_dir)).start()
        stack.callback(server.stop)
        self.say(f"cache     embedded server on {server.url}, data in {data_dir} · repository {repo}")
        return server.url, server.token(repo, "refs/heads/main", default_branch="main")

    def _flow_run(
        self, root: Path, project: Path, flow: str, repo: str, url: str, token: str, env: dict[str, str | None]
    ) -> Any:
        from runcache.runner.console import ConsoleReporter

        home = _fresh_home(root)
        shutil.rmtree(project / ".venv", ignore_errors=True)  # a new checkout has no environment
        changes: dict[str, str | None] = {
            **env,
            "HOME": str(home),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": None,
            "XDG_CACHE_HOME": None,
            "XDG_STATE_HOME": None,
            "PYTHONHOME": None,
        }
        parser = argparse.ArgumentParser()
        add_run_arguments(parser)
        argv = [str(project / ".github" / "workflows" / f"{flow}.yml"), "--repo", repo, "--ref", "refs/heads/main"]
        argv += ["--data-dir", str(root / "runs"), "--url", url, "--token", token]
        argv += ["--var", f"installer={self.args.installer}"]
        reporter = ConsoleReporter(self.console, stream=self.args.verbose or None, show_log_paths=self.show_logs)
        with patched_environ(changes), contextlib.chdir(project):
            return run_from_args(parser.parse_args(argv), reporter)

    def _measure(self, flow: str, n: int, result: Any) -> FlowRun:
        job = result.jobs[0]
        steps = {s.name: s for s in job.steps if s.stage == "main"}
        install = steps.get(DEPENDENCY_STEP)
        run = FlowRun(flow, n, result, ok=job.result == "success" and install is not None)
        if install is None:
            self.problems.append(f"{flow} run {n}: no {DEPENDENCY_STEP!r} step ran")
            return run
        run.seconds = install.duration
        if flow == "tutorial":
            cache = steps.get(CACHE_STEP)
            restore = next((c for c in job.caches if c.operation == "restore"), None)
            run.restore = restore.result if restore else ""
            run.seconds += cache.duration if cache else 0.0
            expected = {1: "miss", 2: "hit", 3: "restore-key"}[n]
        else:
            run.restore = {"true": "hit", "false": "restore-key"}.get(install.outputs.get("cache-hit", ""), "miss")
            expected = {1: "miss", 2: "hit", 3: "restore-key"}[n]
        if not run.ok:
            self.problems.append(f"{flow} run {n}: the job ended {job.result}")
        elif run.restore != expected:
            self.problems.append(f"{flow} run {n}: expected a {expected}, got {run.restore or 'nothing'}")
        return run

    def _explain_pair(self, tutorial: FlowRun, preset: FlowRun) -> None:
        what = {
            "miss": "nothing to restore",
            "hit": "exact hit",
            "restore-key": "an older entry restored by prefix",
            "failed": "restore failed",
        }
        self.say(
            f"  → tutorial: {what.get(tutorial.restore, tutorial.restore)}, then pip install: {tutorial.seconds:.1f} s",
            "cyan",
        )
        done = {"miss": "built and synced", "hit": "no installer run", "restore-key": "synced to the new set"}
        self.say(
            f"  → preset:   {what.get(preset.restore, preset.restore)}, {done.get(preset.restore, '')}: "
            f"{preset.seconds:.1f} s",
            "cyan",
        )

    def _times(self, runs: list[tuple[FlowRun, FlowRun]]) -> None:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("Run", "Tutorial restore", "Tutorial step", "Preset restore", "Preset step", "Preset faster"):
            table.add_column(col, justify="right" if "step" in col or "faster" in col else "left")
        for tutorial, preset in runs:
            ratio = tutorial.seconds / preset.seconds if preset.seconds else 0.0
            table.add_row(
                str(tutorial.n),
                tutorial.restore or "-",
                f"{tutorial.seconds:.2f} s",
                preset.restore or "-",
                f"{preset.seconds:.2f} s",
                f"{ratio:.1f}×",
            )
        self.console.print(table)
        self.say(
            "Tutorial step: the cache step's restore plus `pip install`; preset step: `runcache pip install` (restore, "
            "and a sync when needed). Post-step saves are not counted: the job has finished its work by then.",
            "bright_black",
        )


def _one_line(path: Path) -> str:
    words = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return ", ".join(w for w in words if w) or "empty"
