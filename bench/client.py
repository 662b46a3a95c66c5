#!/usr/bin/env python3
"""Client speed: `runcache save/restore` beside the real @actions/cache and the local tar | zstd floor.

    .venv/bin/python bench/client.py [--protocol v2] [--repeat 3] [--rate-mbps 100] [--mixed-mib 1024]
                                     [--pip-cache PATH] [--only pip,venv,mixed] [--tools floor,cli,actions]
                                     [--baseline SRC]

Three data sets, built in a temp dir:
- pip:   a real pip cache ($HOME/.cache/pip under a fake HOME, cached as `~/.cache/pip`), filled by
         `pip install` of a realistic package set from PyPI (or copied from --pip-cache PATH);
- venv:  a real virtualenv (`.venv` in the workspace) with those packages, installed from that cache;
- mixed: a deterministic synthetic tree (`mixed`): many small text-like files, medium text and binary
         files and a few large incompressible ones, --mixed-mib in total.

For each it times save and restore (into a fresh state: the cached paths are moved away first) of
- the floor: `tar --posix -cf - -P -C <ws> <paths> | zstd -T0 -o <archive>` and `zstd -d -c | tar -xf -`;
- the runcache CLI (`python -m runcache.cli save|restore --json`);
- the real @actions/cache 6.3.0 through Node (tests/node), on the same server and protocol;
- with --baseline SRC, a second runcache CLI run from another source tree (SRC is the directory that holds
  the `runcache` package, e.g. `git worktree add /tmp/base <commit>` then `--baseline /tmp/base/src`), so
  a change is measured against its parent in the same paired runs;
then restores both clients' entries again through bench/throttle.py, a proxy limiting the link to
--rate-mbps each way. Every key is new (keys are immutable).

Pairing: each repeat runs every tool once, back to back (A B C A B C ...), and a comparison between two
tools is the median of the per-repeat ratios (or differences), never a ratio of two medians: a load spike
slows both runs of one pair, so it cancels in that pair's ratio, where a ratio of medians can call a win a
loss when the two medians come from different moments. The seconds shown are plain medians.

Noise: whatever else runs on the machine shows up (the load average is printed), so prefer --repeat 3 or
more; the order of the tools rotates between repeats. On an ext4 without a journal (as on these VMs) creating
files soon (up to ~6 min) after a large delete is several times slower, so nothing is deleted between
measurements (restored copies go to a trash that is emptied at the end): leave a few minutes between
two runs, or point --tmp at another filesystem. Needs about 10 GB of free space per repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import stat
import statistics
import string
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from throttle import Throttle

from helpers import NODE_DIR, RUNCACHE, Server, run_client

MiB = 1024 * 1024
PACKAGES = ["numpy", "pandas", "scipy", "django", "requests", "sqlalchemy", "rich", "flask", "pytest", "pillow"]
GOAL_FLOOR = 1.25  # CLI time ≤ 1.25 × floor
GOAL_THROTTLED = 1.4  # at the limited rate, @actions/cache time ≥ 1.4 × CLI time
GOAL_OVER_FLOOR_S = 0.15  # a small cache: CLI restore ≤ floor + 0.15 s (start-up is what is left)
TIMEOUT = 1800

# PyPI sends Cache-Control (immutable for files, 10 minutes for index pages), and pip caches what it
# downloads only because of it. Where a proxy strips the header (as on this network) pip would cache
# nothing; the shim puts PyPI's header back, so the pip cache comes out as it does on a runner.
PIP_SHIM = """\
import sys
try:
    from pip._vendor.cachecontrol.controller import CacheController

    _orig = CacheController.cache_response

    def cache_response(self, request, response, *args, **kwargs):
        if "cache-control" not in response.headers:
            if "files.pythonhosted.org" in request.url:
                response.headers["Cache-Control"] = "max-age=365000000, immutable, public"
            elif "/simple/" in request.url:
                response.headers["Cache-Control"] = "max-age=600, public"
        return _orig(self, request, response, *args, **kwargs)

    CacheController.cache_response = cache_response
except Exception as exc:  # an unknown pip: run it as it is
    print(f"pip shim not applied: {exc}", file=sys.stderr)
from pip._internal.cli.main import main

sys.exit(main())
"""


class BenchError(Exception):
    pass


def node_available() -> bool:
    return shutil.which("node") is not None and (NODE_DIR / "node_modules" / "@actions" / "cache").is_dir()


@dataclass
class Tree:
    files: int = 0
    links: int = 0
    dirs: int = 0
    bytes: int = 0

    def __str__(self) -> str:
        return f"{self.files:,} files, {self.dirs:,} dirs, {self.links:,} symlinks, {self.bytes / 1e6:,.1f} MB"


def scan(paths: list[Path]) -> Tree:
    t = Tree()
    for top in paths:
        for dirpath, dirnames, filenames in os.walk(top):
            t.dirs += 1
            for name in dirnames:
                if os.path.islink(os.path.join(dirpath, name)):
                    t.links += 1
            for name in filenames:
                st = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISLNK(st.st_mode):
                    t.links += 1
                else:
                    t.files += 1
                    t.bytes += st.st_size
    return t


@dataclass
class DataSet:
    name: str
    title: str
    paths: list[str]  # as given to the clients (`path:` input)
    locations: list[Path]  # where they are on disk
    tree: Tree = field(default_factory=Tree)


@dataclass
class Env:
    root: Path
    ws: Path
    home: Path
    stash: Path
    trash: Path

    def rel(self, p: Path) -> str:
        return os.path.relpath(p, self.ws)


# --- data sets ------------------------------------------------------------------------------------


def pip_env(home: Path) -> dict[str, str]:
    """PyPI directly, no local config or find-links; keep what the network needs (the CA bundle)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")}
    env.update(HOME=str(home), PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.pop("VIRTUAL_ENV", None)
    return env


def build_pip_and_venv(env: Env, packages: list[str], pip_cache: Path | None) -> tuple[DataSet, DataSet]:
    cache = env.home / ".cache" / "pip"
    if pip_cache:
        log(f"copying pip cache from {pip_cache}")
        shutil.copytree(pip_cache, cache, symlinks=True)
    else:
        cache.mkdir(parents=True)
    venv = env.ws / ".venv"
    shim = env.root / "pip_shim.py"
    shim.write_text(PIP_SHIM)
    log(f"building the virtualenv and the pip cache: pip install {' '.join(packages)}")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=pip_env(env.home))
    subprocess.run(
        [str(venv / "bin" / "python"), str(shim), "install", "-q", "--cache-dir", str(cache), *packages],
        check=True,
        env=pip_env(env.home),
        cwd=env.ws,
    )
    log(f"  done in {time.perf_counter() - t:.0f} s")
    pip = DataSet("pip", "pip cache", ["~/.cache/pip"], [cache])
    return pip, DataSet("venv", "virtualenv", [".venv"], [venv])


def text_source(rng: random.Random) -> list[bytes]:
    """Code-like lines (indentation, words from a vocabulary, punctuation): about 3:1 with zstd."""
    vocab = ["".join(rng.choices(string.ascii_lowercase + "_", k=rng.randint(2, 12))) for _ in range(6000)]
    puncts = ["", ":", ",", ";", " {", " }", "()", ")", " = None", " == 0", " # note"]
    lines = []
    for _ in range(200_000):
        indent = " " * (4 * rng.randint(0, 4))
        words = rng.choices(vocab, k=rng.randint(1, 10))
        sep = rng.choice([" ", ".", "_", ", "])
        lines.append(f"{indent}{sep.join(words)}{rng.choice(puncts)}\n".encode())
    return lines


def text_bytes(rng: random.Random, lines: list[bytes], size: int) -> bytes:
    out = b"".join(rng.choices(lines, k=size // 40 + 1))
    while len(out) < size:
        out += b"".join(rng.choices(lines, k=size // 40 + 1))
    return out[:size]


def binary_bytes(rng: random.Random, size: int) -> bytes:
    """Object-file-like: random blocks, zero padding and repeated tables; about 2:1 with zstd."""
    parts: list[bytes] = []
    n = 0
    while n < size:
        kind = rng.random()
        k = rng.randint(256, 16384)
        if kind < 0.5:
            piece = rng.randbytes(k)
        elif kind < 0.75:
            piece = bytes(k)
        else:
            piece = rng.randbytes(rng.randint(4, 64)) * (k // 16)
        parts.append(piece)
        n += len(piece)
    return b"".join(parts)[:size]


def log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return round(lo * (hi / lo) ** rng.random())


def build_mixed(dest: Path, total: int, seed: int = 20240601) -> None:
    """~30% small text files (100 B-32 KiB), ~35% medium text/binary (64 KiB-8 MiB), the rest large
    incompressible files (16-128 MiB); the same bytes for the same seed and total."""
    rng = random.Random(seed)
    lines = text_source(rng)
    written = 0
    count = 0

    def put(rel: str, data: bytes) -> None:
        nonlocal written, count
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written += len(data)
        count += 1

    small_budget, medium_budget = int(total * 0.30), int(total * 0.35)
    exts = [".py", ".js", ".ts", ".json", ".txt", ".md", ".h", ".c", ".yaml", ".html"]
    while written < small_budget:
        size = min(log_uniform(rng, 100, 32 * 1024), small_budget - written)
        put(
            f"src/pkg{count // 1000:03d}/mod{count // 50 % 20:02d}/f{count:06d}{rng.choice(exts)}",
            text_bytes(rng, lines, size),
        )
    medium_end = small_budget + medium_budget
    while written < medium_end:
        size = min(log_uniform(rng, 64 * 1024, 8 * MiB), medium_end - written)
        if rng.random() < 0.5:
            put(f"data/set{count % 7}/doc{count:06d}.txt", text_bytes(rng, lines, size))
        else:
            put(f"lib/arch{count % 5}/obj{count:06d}.so", binary_bytes(rng, size))
    while written < total:
        size = min(log_uniform(rng, 16 * MiB, 128 * MiB), total - written)
        path = dest / f"blobs/blob{count:06d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            left = size
            while left:
                n = min(left, 4 * MiB)
                fh.write(rng.randbytes(n))
                left -= n
        written += size
        count += 1


# --- the operations -------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sh(cmd: str, cwd: Path) -> None:
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"`{cmd}` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "(no output)"


def client_failure(output: str) -> str:
    """The warning @actions/cache logged for a failed save/restore (it warns instead of failing)."""
    hits = [ln.strip() for ln in output.splitlines() if "Failed to" in ln or "::warning::" in ln or "Error" in ln]
    return hits[-1][:500] if hits else last_line(output)


def quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def floor_save(env: Env, ds: DataSet, archive: Path) -> int:
    rels = " ".join(quote(env.rel(p)) for p in ds.locations)
    sh(f"tar --posix -cf - -P -C {quote(str(env.ws))} {rels} | zstd -T0 -q -f -o {quote(str(archive))}", env.ws)
    return archive.stat().st_size


def floor_restore(env: Env, ds: DataSet, archive: Path) -> int:
    sh(f"zstd -d -q -c {quote(str(archive))} | tar -xf - -P -C {quote(str(env.ws))}", env.ws)
    return archive.stat().st_size


def cli_env(env: Env) -> dict[str, str]:
    """The CLI's environment. Its bytecode is cached (in the temp dir), as for an installed package: with
    PYTHONDONTWRITEBYTECODE set, as here, every run would compile runcache's modules again (~0.15 s)."""
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("ACTIONS_", "RUNCACHE_", "GITHUB_"))}
    run_env.pop("PYTHONDONTWRITEBYTECODE", None)
    run_env["PYTHONPYCACHEPREFIX"] = str(env.root / "pycache")
    return run_env


def warm_cli(env: Env, src: Path | None = None) -> None:
    """Fill the CLI's bytecode cache before the first measurement."""
    code = "import runcache.cli, runcache.client.operations, runcache.client.transfer, runcache.client.progress"
    run_env = cli_env(env)
    if src is not None:
        run_env["PYTHONPATH"] = str(src)
        run_env["PYTHONPYCACHEPREFIX"] = str(env.root / "pycache-baseline")
        code += "; import runcache; assert runcache.__file__.startswith(" + repr(str(src)) + "), runcache.__file__"
    proc = subprocess.run([sys.executable, "-c", code], env=run_env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(
            f"could not import the CLI's modules{' from ' + str(src) if src else ''}: {last_line(proc.stderr)}"
        )


def cli(
    env: Env, ds: DataSet, command: str, key: str, url: str, token: str, protocol: str, src: Path | None = None
) -> int:
    """The runcache CLI; `src` runs another source tree's (the baseline) through PYTHONPATH."""
    run_env = cli_env(env)
    if src is not None:
        run_env["PYTHONPATH"] = str(src)
        run_env["PYTHONPYCACHEPREFIX"] = str(env.root / "pycache-baseline")
    run_env.update(
        RUNCACHE_URL=url,
        RUNCACHE_TOKEN=token,
        RUNCACHE_PROTOCOL=protocol,
        HOME=str(env.home),
        GITHUB_WORKSPACE=str(env.ws),
    )
    argv = [*RUNCACHE, command, *[a for p in ds.paths for a in ("--path", p)], "--key", key, "--json"]
    proc = subprocess.run(argv, cwd=env.ws, env=run_env, capture_output=True, text=True, timeout=TIMEOUT)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        detail = last_line(proc.stderr or proc.stdout)
        raise BenchError(f"runcache {command} exited {proc.returncode}: {detail}") from None
    if command == "save" and not result.get("saved"):
        raise BenchError(f"runcache save did not save: {result.get('warning') or last_line(proc.stderr)}")
    if command == "restore" and (not result.get("restored") or result.get("matched_key") != key):
        raise BenchError(f"runcache restore did not restore {key}: {result.get('warning') or last_line(proc.stderr)}")
    return int(result.get("bytes") or 0)


SIZE_RE = re.compile(r"Cache Size: ~\d+ MB \((\d+) B\)")


def actions(env: Env, ds: DataSet, command: str, key: str, url: str, token: str, protocol: str) -> int:
    run = run_client(
        SimpleNamespace(url=url),  # type: ignore[arg-type]  # run_client needs only .url
        protocol,
        command,
        workspace=env.ws,
        token=token,
        paths=ds.paths,
        key=key,
        extra_env={"HOME": str(env.home)},
        timeout=TIMEOUT,
    )
    if command == "save" and run.result.get("cacheId") in (None, -1):
        raise BenchError(f"@actions/cache save failed: {run.result.get('error') or client_failure(run.output)}")
    if command == "restore" and run.result.get("matchedKey") != key:
        detail = run.result.get("error") or client_failure(run.output)
        raise BenchError(f"@actions/cache restore did not restore {key}: {detail}")
    sizes = SIZE_RE.findall(run.output)
    return int(sizes[-1]) if sizes else 0


def timed(fn, *args) -> tuple[float, int]:
    os.sync()  # earlier restores' dirty pages are not written back during this measurement
    t = time.perf_counter()
    size = fn(*args)
    return time.perf_counter() - t, size


def stash(env: Env, ds: DataSet) -> None:
    env.stash.mkdir(exist_ok=True)
    for i, p in enumerate(ds.locations):
        p.rename(env.stash / f"{ds.name}-{i}")


def unstash(env: Env, ds: DataSet) -> None:
    """Put the original back; the restored copy goes to the trash, which is only emptied at the end.

    Deleting trees between measurements would skew the next ones: on an ext4 without a journal (as on
    this kind of VM) a new inode skips every inode deleted in the last 60 s (360 s while its inode-table
    block is dirty), one lookup each, and a restore right after a big delete creates its files several
    times slower.
    """
    env.trash.mkdir(exist_ok=True)
    for i, p in enumerate(ds.locations):
        if p.exists() or p.is_symlink():
            p.rename(env.trash / uuid.uuid4().hex)
        (env.stash / f"{ds.name}-{i}").rename(p)


def restore_run(env: Env, ds: DataSet, fn, *args) -> tuple[float, int]:
    """Restore into the emptied location, check it came back whole, then put the original back."""
    stash(env, ds)
    try:
        secs, size = timed(fn, *args)
        got = scan(ds.locations)
        if (got.files, got.links, got.bytes) != (ds.tree.files, ds.tree.links, ds.tree.bytes):
            raise BenchError(f"restored tree differs: {got} instead of {ds.tree}")
        return secs, size
    finally:
        unstash(env, ds)


# --- the benchmark --------------------------------------------------------------------------------

ROWS = [
    ("floor", "tar | zstd -T0 (floor)"),
    ("cli", "runcache CLI"),
    ("base", "runcache CLI (baseline)"),
    ("actions", "@actions/cache 6.3.0"),
    ("cli@", "runcache CLI @ {rate}"),
    ("base@", "baseline CLI @ {rate}"),
    ("actions@", "@actions/cache @ {rate}"),
]


@dataclass
class Cell:
    times: dict[int, float] = field(default_factory=dict)  # repeat → seconds: runs pair up by repeat
    error: str = ""

    @property
    def value(self) -> float | None:
        return statistics.median(self.times.values()) if self.times and not self.error else None


@dataclass
class Results:
    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)  # (dataset, row, op)
    sizes: dict[tuple[str, str], int] = field(default_factory=dict)  # (dataset, row) → archive bytes

    def cell(self, ds: str, row: str, op: str) -> Cell:
        return self.cells.setdefault((ds, row, op), Cell())

    def get(self, ds: str, row: str, op: str) -> float | None:
        c = self.cells.get((ds, row, op))
        return c.value if c else None

    def pairs(self, ds: str, a: tuple[str, str], b: tuple[str, str]) -> list[tuple[float, float]]:
        """(a, b) times of the repeats where both ran, in repeat order."""
        ca, cb = self.cells.get((ds, *a)), self.cells.get((ds, *b))
        if not ca or not cb or ca.error or cb.error:
            return []
        return [(ca.times[r], cb.times[r]) for r in sorted(ca.times.keys() & cb.times.keys())]

    def ratio(self, ds: str, a: tuple[str, str], b: tuple[str, str]) -> float | None:
        """Median over the repeats of a's time ÷ b's time (the pair ran back to back)."""
        ratios = [x / y for x, y in self.pairs(ds, a, b) if y > 0]
        return statistics.median(ratios) if ratios else None

    def diff(self, ds: str, a: tuple[str, str], b: tuple[str, str]) -> float | None:
        """Median over the repeats of a's time − b's time."""
        diffs = [x - y for x, y in self.pairs(ds, a, b)]
        return statistics.median(diffs) if diffs else None


LOG_LABELS = {
    "floor": "floor",
    "cli": "runcache CLI",
    "base": "runcache CLI (baseline)",
    "actions": "@actions/cache",
    "cli@": "runcache CLI (limited link)",
    "base@": "baseline CLI (limited link)",
    "actions@": "@actions/cache (limited link)",
}


def measure(results: Results, env: Env, ds: DataSet, rep: int, row: str, op: str, fn, *args) -> int | None:
    """Time one save or restore (repeat `rep`) into `results`; None when it failed (the error is kept)."""
    cell = results.cell(ds.name, row, op)
    if cell.error:
        return None
    label = LOG_LABELS[row]
    try:
        secs, size = restore_run(env, ds, fn, *args) if op == "restore" else timed(fn, *args)
    except (BenchError, subprocess.SubprocessError, OSError, AssertionError) as exc:
        cell.error = str(exc) or type(exc).__name__
        log(f"  {ds.name:5} {label:29} {op:7}  ERROR {cell.error.splitlines()[0][:200]}")
        return None
    cell.times[rep] = secs
    if size:
        results.sizes[(ds.name, row)] = size
    log(f"  {ds.name:5} {label:29} {op:7} {secs:7.2f} s" + (f"  ({size / 1e6:,.1f} MB archive)" if size else ""))
    return size


def run_dataset(
    results: Results,
    env: Env,
    ds: DataSet,
    *,
    server: Server,
    proxy: Throttle | None,
    token: str,
    protocol: str,
    repeat: int,
    nonce: str,
    tool_rows: list[str],
    baseline: Path | None,
) -> None:
    archive = env.root / "floor.tar.zst"
    tools = {
        "cli": cli,
        "base": lambda *a: cli(*a, src=baseline),
        "actions": actions,
    }
    clients = [t for t in tool_rows if t != "floor"]

    def run(rep: int, row: str, op: str, keys: dict[str, str], url: str = server.url) -> int | None:
        if row == "floor":
            fn = floor_save if op == "save" else floor_restore
            return measure(results, env, ds, rep, row, op, fn, env, ds, archive)
        cell_row = row if url == server.url else row + "@"
        return measure(results, env, ds, rep, cell_row, op, tools[row], env, ds, op, keys[row], url, token, protocol)

    for r in range(repeat):
        # One run of every tool per repeat, back to back (the pairs the ratios are taken over); the order
        # rotates between repeats, so a steady drift in the machine's load does not favour one tool.
        k = r % len(tool_rows)
        order = tool_rows[k:] + tool_rows[:k]
        keys = {row: f"bench-{ds.name}-{row}-{nonce}-{r}" for row in clients}
        saved = {row: run(r, row, "save", keys) is not None for row in order}
        restored = {row: saved[row] and run(r, row, "restore", keys) is not None for row in order}
        archive.unlink(missing_ok=True)
        if proxy is None:
            continue
        k = r % len(clients) if clients else 0
        for row in clients[k:] + clients[:k]:
            if not restored[row]:
                results.cell(ds.name, row + "@", "restore").error = "no entry (the unlimited run failed)"
                continue
            proxy.reset_counters()
            size = run(r, row, "restore", keys, proxy.url)
            if size and proxy.down_bytes < size:
                cell = results.cell(ds.name, row + "@", "restore")
                cell.error = f"only {proxy.down_bytes} of {size} archive bytes went through the proxy"


def fmt_s(v: float | None, cell: Cell | None = None) -> str:
    if cell is not None and cell.error:
        return "error"
    return "" if v is None else f"{v:.2f}"


def fmt_x(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}x"


def fmt_d(v: float | None) -> str:
    return "" if v is None else f"{v:+.2f}"


def report(results: Results, datasets: list[DataSet], rate_label: str) -> list[tuple[str, str, bool | None]]:
    """Print one table per data set with its goals; return (dataset, goal, passed) for the summary.

    Every ratio and difference is the median over the repeats of that repeat's pair (see the module doc)."""
    goals: list[tuple[str, str, bool | None]] = []
    head = (
        f"{'':28} {'save s':>8} {'restore s':>9} {'save':>8} {'restore':>8} {'restore':>8} {'save':>9} {'restore':>9}"
    )
    sub = f"{'':28} {'':>8} {'':>9} {'÷ floor':>8} {'÷ floor':>8} {'− floor':>8} {'speed-up':>9} {'speed-up':>9}"
    for ds in datasets:
        g = lambda row, op, ds=ds: results.get(ds.name, row, op)  # noqa: E731
        pr = lambda a, b, op, ds=ds: results.ratio(ds.name, (a, op), (b, op))  # noqa: E731
        pd = lambda a, b, op, ds=ds: results.diff(ds.name, (a, op), (b, op))  # noqa: E731
        sizes = ", ".join(
            f"{name} {results.sizes[(ds.name, row)] / 1e6:,.1f} MB"
            for row, name in (("floor", "floor"), ("cli", "CLI"), ("base", "baseline"), ("actions", "@actions/cache"))
            if (ds.name, row) in results.sizes
        )
        print(f"\n{ds.title} ({', '.join(ds.paths)}): {ds.tree}")
        if sizes:
            print(f"archives: {sizes}")
        print(head)
        print(sub)
        for row, label in ROWS:
            if row.endswith("@") and not rate_label:
                continue
            if not any(k[0] == ds.name and k[1] == row for k in results.cells):
                continue
            label = label.format(rate=rate_label)
            save, restore = g(row, "save"), g(row, "restore")
            cols = [
                fmt_s(save, results.cells.get((ds.name, row, "save"))),
                fmt_s(restore, results.cells.get((ds.name, row, "restore"))),
            ]
            if row.endswith("@"):
                cols[0] = "-"
            sf = rf = rd = su = ru = ""
            if row in ("cli", "base", "actions"):
                sf, rf = fmt_x(pr(row, "floor", "save")), fmt_x(pr(row, "floor", "restore"))
                rd = fmt_d(pd(row, "floor", "restore"))
            if row in ("cli", "base"):
                su, ru = fmt_x(pr("actions", row, "save")), fmt_x(pr("actions", row, "restore"))
            if row in ("cli@", "base@"):
                ru = fmt_x(pr("actions@", row, "restore"))
            print(f"{label:28} {cols[0]:>8} {cols[1]:>9} {sf:>8} {rf:>8} {rd:>8} {su:>9} {ru:>9}")
        print(
            "÷ floor / − floor: time over / minus the floor's (lower is better); "
            "speed-up: @actions/cache time over the CLI's"
        )
        if any(k[0] == ds.name and k[1] == "base" for k in results.cells):
            parts = [
                f"save {fmt_x(pr('cli', 'base', 'save')) or 'n/a'}",
                f"restore {fmt_x(pr('cli', 'base', 'restore')) or 'n/a'}",
            ]
            if rate_label:
                parts.append(f"restore @ {rate_label} {fmt_x(pr('cli@', 'base@', 'restore')) or 'n/a'}")
            print(f"CLI ÷ baseline (below 1: the change is faster): {', '.join(parts)}")
        checks = [
            (f"CLI save ≤ {GOAL_FLOOR}x floor", pr("cli", "floor", "save"), lambda x: x <= GOAL_FLOOR, fmt_x),
            (f"CLI restore ≤ {GOAL_FLOOR}x floor", pr("cli", "floor", "restore"), lambda x: x <= GOAL_FLOOR, fmt_x),
            (
                f"CLI restore ≤ floor + {GOAL_OVER_FLOOR_S} s",
                pd("cli", "floor", "restore"),
                lambda x: x <= GOAL_OVER_FLOOR_S,
                lambda v: "" if v is None else f"{v:+.3f} s",
            ),
            ("CLI save not slower than @actions/cache", pr("actions", "cli", "save"), lambda x: x >= 1, fmt_x),
            ("CLI restore not slower than @actions/cache", pr("actions", "cli", "restore"), lambda x: x >= 1, fmt_x),
        ]
        if rate_label:
            checks.append(
                (
                    f"CLI restore ≥ {GOAL_THROTTLED}x faster than @actions/cache @ {rate_label}",
                    pr("actions@", "cli@", "restore"),
                    lambda x: x >= GOAL_THROTTLED,
                    fmt_x,
                )
            )
        print("goals:")
        for name, value, test, fmt in checks:
            ok = None if value is None else bool(test(value))
            mark = {True: "PASS", False: "MISS", None: "n/a "}[ok]
            what = "" if "floor" in name or value is None else " speed-up"
            print(f"  {mark}  {name:58} {fmt(value) or 'not measured'}{what}")
            goals.append((ds.title, name, ok))
        errors = [(row, op, c.error) for (d, row, op), c in results.cells.items() if d == ds.name and c.error]
        for row, op, err in errors:
            first = err.strip().splitlines()[0] if err.strip() else err
            print(f"  error in {row} {op}: {first[:300]}")
    return goals


def tool_versions() -> str:
    def first_line(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    zstd = re.search(r"v[\d.]+", first_line(["zstd", "--version"]))
    return (
        f"Python {sys.version.split()[0]}, {first_line(['tar', '--version'])}, "
        f"zstd {zstd.group(0) if zstd else '?'}, node {first_line(['node', '--version'])}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=["v1", "v2"], default="v2", help="cache protocol for both clients")
    ap.add_argument("--repeat", type=int, default=3, help="paired runs per measurement (A B A B ...)")
    ap.add_argument("--rate-mbps", type=float, default=100.0, help="link for the limited restores (0: skip them)")
    ap.add_argument("--mixed-mib", type=int, default=1024, help="size of the synthetic mixed tree")
    ap.add_argument("--pip-cache", type=Path, help="copy this pip cache instead of filling one from PyPI")
    ap.add_argument("--packages", default=",".join(PACKAGES), help="comma-separated packages for pip and venv")
    ap.add_argument("--only", default="pip,venv,mixed", help="comma-separated data sets to run")
    ap.add_argument("--tmp", type=Path, help="parent of the temp dir (default the system's)")
    ap.add_argument("--tools", default="floor,cli,actions", help="comma-separated: floor, cli, actions")
    ap.add_argument(
        "--baseline", type=Path, help="also run the runcache CLI from this source tree (the dir holding `runcache`)"
    )
    args = ap.parse_args()
    tool_rows = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown := set(tool_rows) - {"floor", "cli", "actions"}:
        print(f"unknown --tools: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if args.baseline:
        tool_rows.insert(tool_rows.index("cli") + 1 if "cli" in tool_rows else len(tool_rows), "base")
    if "actions" in tool_rows and not node_available():
        print("bench needs the Node test clients: run scripts/setup --dev first", file=sys.stderr)
        return 2
    for tool in ("tar", "zstd"):
        if not shutil.which(tool):
            print(f"bench needs {tool} on PATH", file=sys.stderr)
            return 2
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    rate_label = f"{args.rate_mbps:g} MB/s" if args.rate_mbps > 0 else ""
    nonce = uuid.uuid4().hex[:8]

    with tempfile.TemporaryDirectory(prefix="runcache-client-bench-", dir=args.tmp) as tmp:
        root = Path(tmp)
        env = Env(root=root, ws=root / "work" / "repo", home=root / "home", stash=root / "stash", trash=root / "trash")
        env.ws.mkdir(parents=True)
        env.home.mkdir()
        datasets: list[DataSet] = []
        if "pip" in only or "venv" in only:
            pip, venv = build_pip_and_venv(env, [p for p in args.packages.split(",") if p], args.pip_cache)
            datasets += [d for d in (pip, venv) if d.name in only]
        if "mixed" in only:
            log(f"building the mixed tree ({args.mixed_mib} MiB)")
            t = time.perf_counter()
            mixed = DataSet("mixed", f"mixed {args.mixed_mib} MiB tree", ["mixed"], [env.ws / "mixed"])
            build_mixed(env.ws / "mixed", args.mixed_mib * MiB)
            log(f"  done in {time.perf_counter() - t:.0f} s")
            datasets.append(mixed)
        for ds in datasets:
            ds.tree = scan(ds.locations)
            log(f"{ds.title}: {ds.tree}")

        warm_cli(env)
        if args.baseline:
            warm_cli(env, args.baseline.resolve())
        server = Server(root / "server-data").start()
        proxy = Throttle(server.url, args.rate_mbps).start() if rate_label else None
        token = server.token()
        results = Results()
        load_start = os.getloadavg()[0]
        try:
            for ds in datasets:
                run_dataset(
                    results,
                    env,
                    ds,
                    server=server,
                    proxy=proxy,
                    token=token,
                    protocol=args.protocol,
                    repeat=args.repeat,
                    nonce=nonce,
                    tool_rows=tool_rows,
                    baseline=args.baseline.resolve() if args.baseline else None,
                )
        finally:
            load_end = os.getloadavg()[0]
            if proxy:
                proxy.stop()
            server.stop()
        print_report(args, results, datasets, rate_label, (load_start, load_end))
        log(f"removing {root}")
    return 0


def print_report(
    args: argparse.Namespace,
    results: Results,
    datasets: list[DataSet],
    rate_label: str,
    load: tuple[float, float],
) -> None:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    print(f"\nrunning on {cores} cores ({usable} usable), {tool_versions()}")
    print(f"load average (1 min) {load[0]:.2f} before the measurements, {load[1]:.2f} after")
    print(
        f"protocol {args.protocol}, runcache server on 127.0.0.1, {args.repeat} paired run(s): seconds are medians, "
        "ratios the median of the per-repeat ratios"
        + (f", limited link {rate_label} each way through bench/throttle.py" if rate_label else "")
    )
    goals = report(results, datasets, rate_label)
    passed = sum(1 for *_, ok in goals if ok)
    missed = [(d, n) for d, n, ok in goals if ok is False]
    unknown = sum(1 for *_, ok in goals if ok is None)
    print(f"\nsummary: {passed} goals met, {len(missed)} missed, {unknown} not measured", flush=True)
    for d, n in missed:
        print(f"  MISS  {d}: {n}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
