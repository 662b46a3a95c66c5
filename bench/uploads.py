#!/usr/bin/env python3
"""Upload write-behind: concurrent saves into the local disk store with and without it, in paired runs.

    .venv/bin/python bench/uploads.py [--uploads 8] [--size-mib 256] [--protocols v2,v1] [--pairs 3]
                                      [--chunk-mib 32] [--modes on,off] [--window-mib 32]

Each run starts a fresh `runcache serve` (its own data dir, so the peak RSS is that run's) and sends
--uploads concurrent uploads of --size-mib MiB of incompressible bytes, each one a whole save: reserve,
the body, commit (whose fsync pays for whatever is still dirty). v2 is one Put Blob to the signed URL
(CreateCacheEntry, PUT, FinalizeCacheEntryUpload); v1 is reserve, the --chunk-mib chunks PATCHed one after
another on one connection, then the commit (POST with the size), so v1 commits hash the file in one read.
The bodies are sent by curl (one process per upload, from files fsynced before the first run), so the
client side costs the same C code in every run and little CPU next to the server.

Modes: `on` is the write-behind (RUNCACHE_WRITE_BEHIND_MIB=--window-mib), `off` sets it to 0 (or, with
--baseline SRC, is the server of another source tree, e.g. the commit before, as it runs by default). Every pair
runs both modes back to back, the order alternating between pairs (A B, B A, ...); the ratio columns are
the medians of the per-pair ratios on/off, never ratios of medians: a load spike slows both runs of a
pair, so it cancels in that pair's ratio.

Reported per mode (medians over the pairs): wall seconds from the first reserve to the last commit; the
server's CPU seconds (user + system, all its threads, /proc/<pid>/stat) per GB uploaded; its peak RSS
(VmHWM); the peak of the dirty page cache (sampled every 20 ms) and of dirty + under writeback: the
script's memory cgroup's memory.stat when it runs in one below the root (so another process's dirty pages
do not count; the server is the script's child), else /proc/meminfo (machine-wide; the idle level before
each run is shown). The kernel's
flusher threads are not the server's CPU: write-behind moves the submission of writeback into the
server's writeback thread, so the machine-wide CPU per GB (/proc/stat, everything that ran) is shown too.

Between runs the script waits for `sync` so no run inherits another's dirty pages. Nothing is deleted
until the end (on these VMs' ext4 without a journal, creating files soon after a large delete is slower),
so it needs uploads * size * 2 * pairs of free space. The machine's load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import Server

TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"
V1 = "/_apis/artifactcache/caches"
V1_ACCEPT = "application/json;api-version=6.0-preview.1"
VERSION = "e" * 64
TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


def server_cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of the process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def machine_busy() -> float:
    """CPU seconds all cores spent outside idle and iowait since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / TICKS


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _memory_stat() -> tuple[Path, str, str] | None:
    """This process's memory cgroup's memory.stat and its names for dirty and writeback page-cache bytes."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "memory":
            stat = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.stat"
            if stat.exists():
                return stat, "total_dirty", "total_writeback"
        if controllers == "" and path != "/":
            stat = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.stat"
            if stat.exists():
                return stat, "file_dirty", "file_writeback"
    return None


MEMORY_STAT = _memory_stat()


def dirty_mib() -> tuple[float, float]:
    """(Dirty, Dirty + Writeback) in MiB: of this script's memory cgroup (the server's pages, not those of
    whatever else runs here) when there is one below the root, else machine-wide from /proc/meminfo."""
    if MEMORY_STAT is not None:
        stat, dirty, writeback = MEMORY_STAT
        values = dict(line.split() for line in stat.read_text().splitlines())
        return int(values[dirty]) / MIB, (int(values[dirty]) + int(values[writeback])) / MIB
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, value = line.split(":", 1)
        info[name] = int(value.split()[0])
    return info["Dirty"] / 1024, (info["Dirty"] + info["Writeback"]) / 1024


class DirtySampler:
    def __init__(self) -> None:
        self.dirty = self.inflight = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            d, w = dirty_mib()
            self.dirty, self.inflight = max(self.dirty, d), max(self.inflight, w)
            self._stop.wait(0.02)

    def __enter__(self) -> DirtySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def curl(argv: list[str]) -> None:
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}\\n", *argv], capture_output=True)
    codes = out.stdout.decode().split()
    if out.returncode != 0 or any(c not in ("201", "204") for c in codes):
        raise RuntimeError(f"upload failed: curl exit {out.returncode}, statuses {codes}")


def save_v2(url: str, token: str, key: str, payload: Path, size: int) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    created = httpx.post(
        url + TWIRP + "CreateCacheEntry", json={"key": key, "version": VERSION}, headers=auth, timeout=600
    )
    up = created.json()["signed_upload_url"]
    curl(["-X", "PUT", "-H", "x-ms-blob-type: BlockBlob", "-H", "Expect:", "-T", str(payload), up])
    fin = httpx.post(
        url + TWIRP + "FinalizeCacheEntryUpload",
        json={"key": key, "version": VERSION, "size_bytes": str(size)},
        headers=auth,
        timeout=600,
    ).json()
    if not fin.get("ok"):
        raise RuntimeError(f"finalize failed: {fin}")


def save_v1(url: str, token: str, key: str, chunks: list[Path], size: int) -> None:
    auth = {"Authorization": f"Bearer {token}", "Accept": V1_ACCEPT}
    reserved = httpx.post(url + V1, json={"key": key, "version": VERSION, "cacheSize": size}, headers=auth, timeout=600)
    cache_url = f"{url}{V1}/{reserved.json()['cacheId']}"
    argv: list[str] = []
    start = 0
    for i, chunk in enumerate(chunks):
        n = chunk.stat().st_size
        argv += [] if i == 0 else ["--next"]
        argv += ["-X", "PATCH", "-H", f"Authorization: Bearer {token}", "-H", f"Accept: {V1_ACCEPT}"]
        argv += ["-H", "Content-Type: application/octet-stream", "-H", "Expect:"]
        argv += ["-H", f"Content-Range: bytes {start}-{start + n - 1}/*", "-T", str(chunk), cache_url]
        start += n
    curl(argv)
    done = httpx.post(cache_url, json={"size": size}, headers=auth, timeout=600)
    if done.status_code != 204:
        raise RuntimeError(f"commit failed: {done.status_code} {done.text}")


def wait_sync() -> None:
    subprocess.run(["sync"], check=True)
    deadline = time.monotonic() + 60
    while dirty_mib()[1] > 64 and time.monotonic() < deadline:
        time.sleep(0.2)


def one_run(
    root: Path, name: str, protocol: str, env: dict[str, str], args: argparse.Namespace, files: dict
) -> dict[str, float]:
    wait_sync()
    size = args.size_mib * MIB
    server = Server(root / name, env=env).start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        token = server.token()
        idle_dirty = dirty_mib()[0]
        cpu0, busy0, t0 = server_cpu(pid), machine_busy(), time.perf_counter()
        with DirtySampler() as sampler, ThreadPoolExecutor(args.uploads) as pool:
            futures = []
            for i in range(args.uploads):
                key = f"bench-{name}-{i}"
                if protocol == "v2":
                    futures.append(pool.submit(save_v2, server.url, token, key, files["payload"], size))
                else:
                    futures.append(pool.submit(save_v1, server.url, token, key, files["chunks"], size))
            for f in futures:
                f.result()
        wall = time.perf_counter() - t0
        gb = args.uploads * size / 1e9
        user, system = server_cpu(pid)
        return {
            "wall": wall,
            "cpu": (user + system - sum(cpu0)) / gb,
            "sys": (system - cpu0[1]) / gb,
            "machine": (machine_busy() - busy0) / gb,
            "rss": peak_rss_mib(pid),
            "dirty": sampler.dirty,
            "inflight": sampler.inflight,
            "idle_dirty": idle_dirty,
        }
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uploads", type=int, default=8, help="concurrent uploads per run")
    ap.add_argument("--size-mib", type=int, default=256, help="bytes per upload")
    ap.add_argument("--protocols", default="v2,v1")
    ap.add_argument("--pairs", type=int, default=3, help="on/off pairs per protocol")
    ap.add_argument("--chunk-mib", type=int, default=32, help="v1 chunk size (the @actions/cache default)")
    ap.add_argument("--window-mib", type=int, default=None, help="write-behind window (default: the server's)")
    ap.add_argument("--tmp", default=None, help="where the payload and the data dirs go")
    ap.add_argument("--json", action="store_true", help="also print every run as a JSON line")
    ap.add_argument(
        "--baseline",
        default=None,
        metavar="SRC",
        help="run the `off` side from this source tree (the directory holding the runcache package, e.g. "
        "`git worktree add /tmp/base HEAD` then /tmp/base/src), with its defaults, instead of write-behind off",
    )
    args = ap.parse_args()
    modes = {
        "on": {} if args.window_mib is None else {"RUNCACHE_WRITE_BEHIND_MIB": str(args.window_mib)},
        # The reference: write-behind off, or with --baseline another source tree's server as it is.
        "off": {"RUNCACHE_WRITE_BEHIND_MIB": "0"} if args.baseline is None else {"PYTHONPATH": args.baseline},
    }
    load_before = os.getloadavg()
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="runcache-bench-uploads-", dir=args.tmp) as tmp:
        root = Path(tmp)
        payload = root / "payload.bin"
        chunks = []
        with open(payload, "wb") as fh:
            for _ in range(args.size_mib):
                fh.write(os.urandom(MIB))
            os.fsync(fh.fileno())
        for i, start in enumerate(range(0, args.size_mib, args.chunk_mib)):
            chunk = root / f"chunk.{i:04d}"
            with open(payload, "rb") as src, open(chunk, "wb") as out:
                src.seek(start * MIB)
                out.write(src.read(min(args.chunk_mib, args.size_mib - start) * MIB))
                os.fsync(out.fileno())
            chunks.append(chunk)
        files = {"payload": payload, "chunks": chunks}
        try:
            for protocol in args.protocols.split(","):
                for pair in range(args.pairs):
                    order = ["on", "off"] if pair % 2 == 0 else ["off", "on"]
                    for mode in order:
                        run = one_run(root, f"{protocol}-{mode}-{pair}", protocol, modes[mode], args, files)
                        results.setdefault((protocol, mode), []).append(run)
                        if args.json:
                            print(json.dumps({"protocol": protocol, "mode": mode, "pair": pair, **run}))
                        print(
                            f"  {protocol} {mode} pair {pair}: {run['wall']:.1f} s, {run['cpu']:.2f} CPU s/GB, "
                            f"RSS {run['rss']:.0f} MiB, Dirty peak {run['dirty']:.0f} MiB",
                            file=sys.stderr,
                        )
        finally:
            for p in root.iterdir():
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
    load_after = os.getloadavg()

    def med(protocol: str, mode: str, field: str) -> float:
        return statistics.median(r[field] for r in results[(protocol, mode)])

    def ratio(protocol: str, field: str) -> float:
        ons, offs = results[(protocol, "on")], results[(protocol, "off")]
        return statistics.median(a[field] / b[field] for a, b in zip(ons, offs, strict=True) if b[field])

    window = args.window_mib if args.window_mib is not None else "default"
    print(
        f"\n{os.cpu_count()} cores; {args.uploads} concurrent uploads of {args.size_mib} MiB; v1 chunks of "
        f"{args.chunk_mib} MiB; write-behind window {window} MiB; {args.pairs} on/off pairs per protocol; "
        f"off = {'write-behind off' if args.baseline is None else 'baseline ' + args.baseline}; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after\n"
    )
    fields = ("wall", "cpu", "sys", "machine", "rss", "dirty", "inflight")
    head = ("proto", "mode", "wall s", "CPU s/GB", "sys", "machine", "peak RSS", "Dirty MiB", "+Writeback")
    print("{:>5} {:>6} {:>7} {:>9} {:>5} {:>8} {:>9} {:>10} {:>11}  idle Dirty".format(*head))
    for protocol in args.protocols.split(","):
        for mode in ("on", "off"):
            c = [med(protocol, mode, f) for f in fields]
            idle = med(protocol, mode, "idle_dirty")
            print(
                f"{protocol:>5} {mode:>6} {c[0]:7.1f} {c[1]:9.2f} {c[2]:5.2f} {c[3]:8.2f} {c[4]:9.0f} "
                f"{c[5]:10.0f} {c[6]:11.0f}  {idle:10.0f}"
            )
        r = [ratio(protocol, f) for f in fields]
        print(
            f"{protocol:>5} {'on/off':>6} {r[0]:7.2f} {r[1]:9.2f} {r[2]:5.2f} {r[3]:8.2f} {r[4]:9.2f} "
            f"{r[5]:10.2f} {r[6]:11.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
