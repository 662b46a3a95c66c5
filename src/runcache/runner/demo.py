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
import tempfile
from collections.abc import Iterator
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
        if self.problems:
            for p in self.problems:
                self.say(f"✗ {p}", "bold red")
            return 1
        self.say("✓ all three runs behaved as in the tutorial", "bold green")
        return 0

    def _one_run(self, root: Path, n: int, project: Path, data_dir: Path, repo: str, index: Any):
        from runcache.runner.console import ConsoleReporter

        # The same home path every run (entries store ~/.cache/pip relative to the workspace), emptied each time
        # but for runcache's own ~/.cache/runcache (the pip that job environments are seeded with).
        home = root / "home"
        home.mkdir(exist_ok=True)
        _empty(home, keep=".cache")
        _empty(home / ".cache", keep="runcache")
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
