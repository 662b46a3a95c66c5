#!/usr/bin/env python3
"""Python dependencies: the tutorial's pip cache, setup-python's, and `runcache pip install`, as workflow steps.

    .venv/bin/python bench/python.py [--repeat 3] [--sets light,heavy] [--json FILE]

Two requirement sets, served from a loopback index of real PyPI wheels (no network while measuring):
- light: the tutorial's `requests flask` (.cache/wheels, from `scripts/setup --dev`); the changed runs add six;
- heavy: requests, flask, django, numpy, pandas, boto3 (tests/data/wheels/heavy.txt; downloaded here into
  .cache/wheels-heavy with `pip download --only-binary :all:` when missing); the changed runs add attrs.

Every variant is a real `runcache run` of a workflow on one runcache server, each on a fresh runner (an empty
home, a new checkout, the job's own new virtualenv), and what is timed is the dependency work inside it:
- no cache, pip / uv: `pip install -r requirements.txt` / `uv venv` + `uv pip install` with empty caches;
- tutorial: the tutorial's workflow (runcache.runner.demo): the actions/cache step restoring ~/.cache/pip
  (an exact hit) plus `pip install -r requirements.txt` from it;
- setup-python cache: pip: the action's restore of pip's cache dir (an exact hit) plus `pip install`;
- preset hit, pip / uv: `runcache pip install -r requirements.txt` finding its environment (an exact hit);
- preset changed, pip / uv: the same with one requirement added: the newest environment restored by prefix
  and synced (run with --no-save, so every repeat meets the same entries; a real run saves after that).
A warm-up round (not measured) saves the entries the hits restore. Post-step saves are never timed.

Nothing is deleted while a set is measured: on an ext4 without a journal (as on these VMs) creating files soon
after a large delete is several times slower, and every variant creates thousands. Each run gets a home of its
own, the checkout's last .venv goes to a trash, job folders are kept (--keep-temp); all of it is removed between
sets. The heavy set needs about 15 GB of free space for 3 repeats; short of that, `--tmp /dev/shm
--empty-each-round` measures on a RAM disk (about 5 GB of memory; faster for every variant alike).

Pairing: each repeat runs every variant once, back to back, in an order that rotates between repeats; a
comparison is the median of the per-repeat ratios, never a ratio of two medians (a load spike slows both
sides of one pair). The seconds shown are plain medians; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from runcache.runner.demo import CACHE_STEP, DEPENDENCY_STEP, PRESET_WORKFLOW, TUTORIAL_WORKFLOW  # noqa: E402
from runcache.runner.wheelhouse import LocalIndex  # noqa: E402

HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"
LOW_SPACE = 3 << 30
NOCACHE_PIP = """\
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Install dependencies
        run: pip install -r requirements.txt
"""
NOCACHE_UV = """\
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Install dependencies
        run: |
          uv venv -q --clear --python "$(command -v python3)" .venv
          uv pip install -q --python .venv -r requirements.txt
"""
SETUP_PYTHON = f"""\
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Set up Python
        uses: actions/setup-python@v5
        with:
          python-version: '{HERE}'
          cache: pip
      - name: Install dependencies
        run: pip install -r requirements.txt
"""
CHANGED = PRESET_WORKFLOW.replace(
    "--installer ${{ vars.installer || 'auto' }}", "--installer ${{ vars.installer }} --no-save"
)


@dataclass(frozen=True)
class Variant:
    name: str
    workflow: str
    installer: str = "auto"
    changed: bool = False  # the requirements with one more line


VARIANTS = [
    Variant("no cache, pip", NOCACHE_PIP),
    Variant("no cache, uv", NOCACHE_UV),
    Variant("tutorial (actions/cache ~/.cache/pip + pip)", TUTORIAL_WORKFLOW),
    Variant("setup-python cache: pip", SETUP_PYTHON),
    Variant("preset exact hit, pip", PRESET_WORKFLOW, "pip"),
    Variant("preset exact hit, uv", PRESET_WORKFLOW, "uv"),
    Variant("preset one requirement added, pip", CHANGED, "pip", changed=True),
    Variant("preset one requirement added, uv", CHANGED, "uv", changed=True),
]
WARMUP = [VARIANTS[2], VARIANTS[3], VARIANTS[4], VARIANTS[5]]


@dataclass(frozen=True)
class ReqSet:
    name: str
    wheels: Path
    requirements: str
    added: str


SETS = {
    "light": ReqSet("light", ROOT / ".cache" / "wheels", "requests\nflask\n", "six"),
    "heavy": ReqSet(
        "heavy", ROOT / ".cache" / "wheels-heavy", "requests\nflask\ndjango\nnumpy\npandas\nboto3\n", "attrs"
    ),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_heavy_wheels(folder: Path) -> None:
    """heavy.txt's wheels, downloaded once per list (the bench's own; scripts/setup --dev does not fetch them)."""
    listing = ROOT / "tests" / "data" / "wheels" / "heavy.txt"
    stamp = folder / f".downloaded-{hashlib.sha256(listing.read_bytes()).hexdigest()[:16]}"
    if stamp.exists():
        return
    log(f"downloading the heavy set's wheels into {folder} (once)")
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary", ":all:", "--no-deps", "-d", str(folder),
         "-r", str(listing)],
        check=True,
    )  # fmt: skip
    stamp.touch()


def check_wheels(rs: ReqSet) -> None:
    if not any(rs.wheels.glob("*.whl")):
        raise SystemExit(f"no wheels in {rs.wheels}: run scripts/setup --dev")


@dataclass
class Bench:
    root: Path
    url: str
    token: str
    repo: str
    index_url: str = ""
    bin_dir: Path = field(init=False)
    runs: int = 0

    def __post_init__(self) -> None:
        self.trash, self.tmp = self.root / "trash", self.root / "tmp"
        self.trash.mkdir(exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        self.bin_dir = self.root / "bin"
        self.bin_dir.mkdir(exist_ok=True)
        shim = self.bin_dir / "runcache"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m runcache.cli "$@"\n')
        shim.chmod(0o755)
        uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
        if not uv:
            raise SystemExit("uv is not installed (it is in the dev extra: scripts/setup --dev)")
        link = self.bin_dir / "uv"
        if not link.exists():
            link.symlink_to(os.path.realpath(uv))

    def empty_trash(self) -> None:
        """Between sets (never between measurements): the kept homes, job folders and environments."""
        for folder in (self.trash, self.tmp, self.root / "homes"):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()

    def env(self, home: Path) -> dict[str, str]:
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PIP_", "UV_", "RUNCACHE_", "ACTIONS_", "GITHUB_", "RUNNER_", "VIRTUAL_ENV", "XDG_"))
        }
        return {
            **keep,
            "HOME": str(home),
            "PATH": f"{self.bin_dir}{os.pathsep}{keep.get('PATH', '')}",
            "RUNCACHE_URL": self.url,
            "RUNCACHE_TOKEN": self.token,
            "PIP_INDEX_URL": self.index_url,
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_TRUSTED_HOST": "127.0.0.1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            "UV_INDEX_URL": self.index_url,
            "UV_NO_CONFIG": "1",
            "UV_PYTHON_DOWNLOADS": "never",
        }

    def run(self, rs: ReqSet, variant: Variant) -> float:
        """One fresh runner's run of the variant; the seconds of its dependency work."""
        ws = self.root / f"ws-{rs.name}"
        (ws / ".github" / "workflows").mkdir(parents=True, exist_ok=True)
        (ws / "requirements.txt").write_text(rs.requirements + (rs.added + "\n" if variant.changed else ""))
        # Nothing is deleted while measuring (see the module doc): the last checkout's environment goes to the
        # trash, every run gets a home of its own (with its own tool cache), and job folders are kept.
        self.runs += 1
        if shutil.disk_usage(self.root).free < LOW_SPACE:
            log(f"less than {LOW_SPACE >> 30} GiB free: emptying the trash now (the next measurements may be slower)")
            self.empty_trash()
        if (ws / ".venv").exists():
            (ws / ".venv").rename(self.trash / f"venv-{self.runs}")
        home = self.root / "homes" / str(self.runs)
        home.mkdir(parents=True)
        wf = ws / ".github" / "workflows" / "bench.yml"
        wf.write_text(variant.workflow)
        proc = subprocess.run(
            [sys.executable, "-m", "runcache.cli", "run", str(wf), "--json", "--repo", self.repo,
             "--ref", "refs/heads/main", "--url", self.url, "--token", self.token,
             "--data-dir", str(self.root / "runs"), "--var", f"installer={variant.installer}", "--keep-temp"],
            cwd=ws, env={**self.env(home), "TMPDIR": str(self.tmp)}, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        try:
            job = json.loads(proc.stdout)["jobs"][0]
        except (ValueError, KeyError, IndexError):
            raise SystemExit(f"{variant.name}: no result (rc={proc.returncode})\n{proc.stderr[-3000:]}") from None
        if job["result"] != "success":
            logs = "\n".join(Path(s["log"]).read_text()[-2000:] for s in job["steps"] if s.get("log"))
            raise SystemExit(f"{rs.name} / {variant.name}: the job ended {job['result']}\n{logs}")
        steps = {s["name"]: s for s in job["steps"] if s["stage"] == "main"}
        seconds = steps[DEPENDENCY_STEP]["duration"]
        if CACHE_STEP in steps:
            seconds += steps[CACHE_STEP]["duration"]
        if variant.workflow is SETUP_PYTHON:
            seconds += sum(c["seconds"] for c in job["caches"] if c["operation"] == "restore")
        return seconds


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True) if y > 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="paired repeats (default 3)")
    ap.add_argument("--sets", default="light,heavy", help="light, heavy or both (default)")
    ap.add_argument("--json", type=Path, help="also write the seconds and ratios here")
    ap.add_argument("--tmp", type=Path, help="make the work folder here (e.g. /dev/shm when the disk is short)")
    ap.add_argument(
        "--empty-each-round", action="store_true",
        help="empty the trash after every repeat (needed on a RAM disk; on ext4 it slows the next repeat's first run)",
    )  # fmt: skip
    args = ap.parse_args()
    chosen = [SETS[s.strip()] for s in args.sets.split(",") if s.strip()]
    if "heavy" in args.sets:
        ensure_heavy_wheels(SETS["heavy"].wheels)
    for rs in chosen:
        check_wheels(rs)

    from runcache.config import Settings
    from runcache.server.embedded import EmbeddedServer

    root = Path(tempfile.mkdtemp(prefix="runcache-bench-python-", dir=args.tmp))
    server = EmbeddedServer(Settings.from_env(data_dir=root / "data")).start()
    results: dict[str, dict[str, list[float]]] = {}
    runs = 0
    try:
        for rs in chosen:
            repo = f"bench/python-{rs.name}-{os.getpid()}"
            token = server.token(repo, "refs/heads/main", default_branch="main")
            with LocalIndex(rs.wheels) as index:
                bench = Bench(root, server.url, token, repo, f"{index.url}/simple/", runs=runs)
                log(f"{rs.name}: warm-up (the entries the hits restore)")
                for v in WARMUP:
                    bench.run(rs, v)
                times: dict[str, list[float]] = {v.name: [] for v in VARIANTS}
                for rep in range(args.repeat):
                    order = VARIANTS[rep % len(VARIANTS) :] + VARIANTS[: rep % len(VARIANTS)]
                    for v in order:
                        seconds = bench.run(rs, v)
                        times[v.name].append(seconds)
                        log(f"{rs.name} #{rep + 1} {v.name}: {seconds:.2f} s  (load {os.getloadavg()[0]:.1f})")
                    if args.empty_each_round:
                        bench.empty_trash()
                results[rs.name] = times
                runs = bench.runs
                bench.empty_trash()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    report(results, args)
    return 0


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    hit_pip, hit_uv = "preset exact hit, pip", "preset exact hit, uv"
    out: dict[str, object] = {"repeat": args.repeat, "sets": {}}
    print(f"\nbench/python.py: {args.repeat} paired repeat(s), python {sys.version.split()[0]}, load {os.getloadavg()}")
    goals = []
    for name, times in results.items():
        print(f"\n{name} set — seconds of the dependency step (median), and × against the preset's exact hit")
        print(f"| {'variant':<46} | {'seconds':>8} | {'vs hit (pip)':>12} | {'vs hit (uv)':>11} |")
        print(f"| {'-' * 46} | {'-' * 7}: | {'-' * 11}: | {'-' * 10}: |")
        rows = {}
        for v, ts in times.items():
            med = statistics.median(ts)
            rows[v] = {"seconds": ts, "median": med, "vs_hit_pip": ratio(times, v, hit_pip),
                       "vs_hit_uv": ratio(times, v, hit_uv)}  # fmt: skip
            print(f"| {v:<46} | {med:>8.2f} | {rows[v]['vs_hit_pip']:>11.1f}× | {rows[v]['vs_hit_uv']:>10.1f}× |")
        out["sets"][name] = rows  # type: ignore[index]
        if name == "heavy":
            nocache = ratio(times, "no cache, pip", hit_pip)
            tutorial = ratio(times, "tutorial (actions/cache ~/.cache/pip + pip)", hit_pip)
            changed = ratio(times, "preset one requirement added, uv", hit_uv)
            goals = [
                ("exact hit (pip) ≥ 8× faster than no cache (pip)", nocache, nocache >= 8),
                ("exact hit (pip) ≥ 5× faster than the tutorial's flow", tutorial, tutorial >= 5),
                ("one requirement added (uv) ≤ 2× the exact hit (uv)", changed, changed <= 2),
            ]
    if goals:
        print("\ngoals (heavy set, medians of per-repeat ratios)")
        for label, value, ok in goals:
            print(f"  {'✓' if ok else '✗'} {label}: {value:.1f}×")
        out["goals"] = [{"goal": g, "ratio": v, "met": ok} for g, v, ok in goals]
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
