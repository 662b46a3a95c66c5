#!/usr/bin/env python3
"""Restore downloads: runcache's signed download URL beside nginx serving the very same blob file.

    .venv/bin/python bench/downloads.py [--size-mib 256] [--clients 1,8,32] [--rounds 3] [--protocols v2,v1]

One incompressible entry is saved through the v2 protocol (Put Blob to the signed upload URL, then
FinalizeCacheEntryUpload). Debian's nginx (`sendfile on; tcp_nopush on;`, `worker_processes auto`, its
access log on: Debian's defaults) then serves the blob's own file out of runcache's blob directory, so both
servers send the same page-cached bytes. For each number of concurrent clients, every round runs runcache
then nginx (A B A B ...), each client GETting the whole archive once; the v2 URL is GetCacheEntryDownloadURL's
`signed_download_url`, the v1 one the lookup's `archiveLocation`. Reported per row: the aggregate MB/s of
each server (median over rounds), the median of the per-round ratios runcache / nginx (pairs taken next to
each other see the same load on this shared machine, so the ratio is steadier than either figure), and the
CPU seconds each server's processes used per GB sent (runcache: its one process; nginx: master and workers).

Clients are `curl -s -o /dev/null` processes, one per download: curl reads with 512 KiB buffers and throws the
bytes away in C, a process each lets the kernel spread them over the cores like real runners would, and the
same clients against both servers cost the same. A Python (httpx) reader was the bottleneck at 8 clients;
curl's exit status, HTTP status and byte count are checked so a short or failed download is an error.
Everything (both servers, the clients) shares this machine's cores: read the ratios, not the absolute MB/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cluster import _die_with_parent, nginx_binary
from helpers import Server
from s3server import _free_ports

TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"
KEY, VERSION = "bench-downloads", "d" * 64
TICKS = os.sysconf("SC_CLK_TCK")


class StaticNginx:
    """Debian's nginx serving `root` as static files on a free loopback port, as a non-daemon child."""

    def __init__(self, prefix: Path, root: Path) -> None:
        self.prefix, self.root = prefix, root
        self.port = _free_ports(1)[0]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StaticNginx:
        self.prefix.mkdir(parents=True, exist_ok=True)
        p = self.prefix
        user = "user root;" if os.geteuid() == 0 else ""
        conf = p / "nginx.conf"
        conf.write_text(f"""
{user}
worker_processes auto;
pid {p}/nginx.pid;
error_log {p}/error.log;
events {{ worker_connections 1024; }}
http {{
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    default_type application/octet-stream;
    access_log {p}/access.log;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
    }}
}}
""")
        argv = [str(nginx_binary()), "-e", str(p / "error.log"), "-p", str(p), "-c", str(conf), "-g", "daemon off;"]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"nginx did not start: {(p / 'error.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its live children (nginx's workers)."""
    total = 0.0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        pids.extend(int(c) for c in children)
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def fetch_all(url: str, clients: int, size: int) -> float:
    """Seconds until `clients` concurrent curls have each downloaded all `size` bytes of `url`."""
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url]
    t = time.perf_counter()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE) for _ in range(clients)]
    outs = [p.communicate()[0].decode() for p in procs]
    elapsed = time.perf_counter() - t
    for p, out in zip(procs, outs, strict=True):
        if p.returncode != 0 or out != f"200 {size}":
            raise RuntimeError(f"download of {url} failed: curl exit {p.returncode}, {out!r}")
    return elapsed


def save_entry(server: Server, token: str, payload: Path, size: int) -> tuple[str, str]:
    """Save the payload over v2; returns the v2 signed download URL and the v1 archiveLocation."""
    auth = {"Authorization": f"Bearer {token}"}
    created = httpx.post(server.url + TWIRP + "CreateCacheEntry", json={"key": KEY, "version": VERSION}, headers=auth)
    up = created.json()["signed_upload_url"]
    subprocess.run(
        ["curl", "-sf", "-o", "/dev/null", "-X", "PUT", "-H", "x-ms-blob-type: BlockBlob", "-T", payload, up],
        check=True,
    )
    fin = httpx.post(
        server.url + TWIRP + "FinalizeCacheEntryUpload",
        json={"key": KEY, "version": VERSION, "size_bytes": str(size)},
        headers=auth,
        timeout=300,
    ).json()
    assert fin["ok"], fin
    v2 = httpx.post(
        server.url + TWIRP + "GetCacheEntryDownloadURL", json={"key": KEY, "version": VERSION}, headers=auth
    )
    v1 = httpx.get(
        server.url + "/_apis/artifactcache/cache",
        params={"keys": KEY, "version": VERSION},
        headers={**auth, "Accept": "application/json;api-version=6.0-preview.1"},
    )
    return v2.json()["signed_download_url"], v1.json()["archiveLocation"]


def blob_file(data_dir: Path, size: int) -> Path:
    """The committed blob's one file: the only file of that size under the blob directory."""
    found = [p for p in data_dir.rglob("*") if p.is_file() and p.stat().st_size == size and "stag" not in str(p)]
    if len(found) != 1:
        raise RuntimeError(f"expected one blob file of {size} bytes under {data_dir}, found {found}")
    return found[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--clients", default="1,8,32", help="comma-separated numbers of concurrent clients")
    ap.add_argument("--rounds", type=int, default=3, help="A B pairs per row")
    ap.add_argument("--protocols", default="v2,v1", help="which URLs runcache is measured on: v2, v1 or both")
    ap.add_argument("--server-arg", action="append", default=[], help="extra `runcache serve` argument")
    args = ap.parse_args()
    size = args.size_mib * 1024 * 1024
    counts = [int(c) for c in args.clients.split(",")]
    protocols = args.protocols.split(",")
    with tempfile.TemporaryDirectory(prefix="runcache-bench-") as tmp:
        root = Path(tmp)
        payload = root / "payload.bin"
        with open(payload, "wb") as fh:
            for _ in range(args.size_mib):
                fh.write(os.urandom(1024 * 1024))
        server = Server(root / "data", extra_args=args.server_arg).start()
        nginx = None
        try:
            v2, v1 = save_entry(server, server.token(), payload, size)
            payload.unlink()
            blob = blob_file(root / "data", size)
            nginx = StaticNginx(root / "nginx", blob.parent).start()
            static = f"{nginx.url}/{blob.name}"
            urls = {"v2": v2, "v1": v1}
            assert server.proc is not None and nginx.proc is not None
            # Warm: the page cache holds the blob, both servers have started their workers.
            fetch_all(urls[protocols[0]], 1, size)
            fetch_all(static, 1, size)
            rows = []
            for clients in counts:
                for protocol in protocols:
                    rc_rates, ng_rates, ratios = [], [], []
                    rc_cpu = ng_cpu = 0.0
                    moved = clients * size
                    for _ in range(args.rounds):
                        before = cpu_seconds(server.proc.pid)
                        rc = fetch_all(urls[protocol], clients, size)
                        rc_cpu += cpu_seconds(server.proc.pid) - before
                        before = cpu_seconds(nginx.proc.pid)
                        ng = fetch_all(static, clients, size)
                        ng_cpu += cpu_seconds(nginx.proc.pid) - before
                        rc_rates.append(moved / rc / 1e6)
                        ng_rates.append(moved / ng / 1e6)
                        ratios.append(ng / rc)
                    gb = moved * args.rounds / 1e9
                    row = (
                        clients,
                        protocol,
                        statistics.median(rc_rates),
                        statistics.median(ng_rates),
                        statistics.median(ratios),
                        rc_cpu / gb,
                        ng_cpu / gb,
                    )
                    rows.append(row)
                    print(
                        f"  {clients} clients {protocol}: ratios {' '.join(f'{r:.2f}' for r in ratios)}",
                        file=sys.stderr,
                    )
        finally:
            server.stop()
            if nginx is not None:
                nginx.stop()
    print(f"\n{os.cpu_count()} cores, {args.size_mib} MiB incompressible archive, {args.rounds} A/B pairs per row\n")
    head = ("clients", "URL", "runcache MB/s", "nginx MB/s", "ratio", "CPU s/GB rc", "nginx")
    print("{:>7} {:>4} {:>14} {:>11} {:>6} {:>12} {:>6}".format(*head))
    for clients, protocol, rc, ng, ratio, rc_cpu, ng_cpu in rows:
        print(f"{clients:7d} {protocol:>4} {rc:14.0f} {ng:11.0f} {ratio:6.2f} {rc_cpu:12.2f} {ng_cpu:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
