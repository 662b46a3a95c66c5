#!/usr/bin/env python3
"""Scale-out: one replica against two replicas behind nginx, on SQLite+disk, PostgreSQL+S3 and PostgreSQL+Azure.

    .venv/bin/python bench/scale.py [--quick] [--rounds 3] [--entry-mib 256] [--save-mib 20] [--saves 32]
                                    [--clients 1,8,32] [--only sqlite-disk,pg-s3,pg-azure]

Per backend, two replicas (tests/cluster.py: separate data directories, one RUNCACHE_SECRET) share the
metadata and the blobs, and two nginx balancers run in front of them at once: A lists replica 0 only, B both
replicas. A and B differ in nothing but the number of replicas serving (same proxy, same data, same entry),
so their ratio is what a second replica buys. Measured through each balancer, with Python clients in threads
of this process driving the v2 protocol (twirp calls with httpx, the signed blob URL's bytes with
http.client, see TRANSFER below; no Node, no tar, no zstd):

- restore: a --entry-mib entry, GetCacheEntryDownloadURL then the GET streamed and discarded, by 1, 8 and
  32 concurrent clients (all the same entry);
- save: --saves concurrent saves of distinct --save-mib entries (CreateCacheEntry, one Put Blob,
  FinalizeCacheEntryUpload, which commits);
- reference (PostgreSQL+S3 only): the same entry's object read straight from the object store with boto3
  GetObject by the same numbers of clients, what a replica's download could at best relay; paired with it
  (ref, direct, ref, direct), the same restore from a third replica started with `--downloads direct`, whose
  GetCacheEntryDownloadURL hands out a presigned URL on the object store: its ratio column is direct ÷
  reference (goal: the S3 path within 1.3× of direct object-store reads, i.e. a ratio ≥ 0.77).

- transfers (PostgreSQL+Azure only, Azurite as the account): the same restores and saves against replica 0
  (archive bytes proxied through it) paired with a replica started with `--transfers direct` (bytes between
  client and storage, SAS URLs); ratio = direct ÷ proxied MB/s, and a second table of the CPU seconds each
  replica process spent per GB its clients moved (goal: direct < 5 % of proxied). The per-request work of a
  direct replica (lookup, SAS signing, the finalize's seal and check) does not grow with the archive, so its
  share shrinks as entries grow: judge it at the default 256 MiB, not with --quick.

Rounds interleave A B A B; the table shows, per operation, the median aggregate MB/s over rounds (bytes of
all clients over the wall time from the common start to the last finish; 1 MB = 10^6 bytes), p50/p99 of the
per-client operation time over all rounds, and `ratio` as the median of the per-round (per-pair) ratios: B/A
for two replicas against one, direct ÷ reference for the `--downloads direct` rows.

Backends: `sqlite-disk` is one SQLite file and one blob directory on this disk that both replicas open;
its uploads in flight are staged on the replica that reserved them, so saves there need stickiness: both
balancers hash an `X-Runner` header each client sends (as ip_hash would with one address per runner).
`pg-s3` is a throwaway PostgreSQL (tests/pg.py) and SeaweedFS (tests/s3server.py) with uploads in the bucket
too: plain round-robin, no stickiness.

Everything (servers, nginx, PostgreSQL, SeaweedFS and the clients) shares this machine's cores: the table is
about what a second replica changes on the same hardware, not about what two machines would do. The header
prints the core count and the load average; the `client cpu` column is how many cores the clients' own
Python used, to show when the measuring side is the bottleneck.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cluster import Balancer, Replicas
from helpers import Server
from wire import TWIRP, VERSION

MiB = 1024 * 1024
MB = 1e6


@dataclass
class Sample:
    """One run of one operation: every client's time and the aggregate rate."""

    wall: float
    durations: list[float]
    total_bytes: int
    cpu: float  # this process's CPU seconds during the run

    @property
    def mbps(self) -> float:
        return self.total_bytes / self.wall / MB


@dataclass
class Row:
    backend: str
    operation: str
    clients: int
    config: str
    samples: list[Sample] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # B/A per pair, on the B row


# --- clients -------------------------------------------------------------------------------------------
# The protocol calls go through httpx. The archive bytes go through the standard library's http.client by
# default: httpx (h11 underneath) moved one 256 MiB download at about 200 MB/s for half a core on this
# machine, http.client with readinto() at about 1000 MB/s for a fifth of one, so with httpx the clients,
# not the replicas, would set the pace. `--transfer httpx` measures with httpx for the bodies too.
TRANSFER = "stdlib"
# One client for all threads (httpx clients are thread-safe): a new one per call would build an SSL context
# each time, tens of milliseconds of CPU that would count as the server's time.
CLIENT = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))


def _auth(token: str, runner: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Runner": str(runner)}


def _connection(url: str) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(url)
    assert parts.scheme == "http" and parts.hostname, url
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=600), f"{parts.path}?{parts.query}"


def _get(client: httpx.Client, url: str, runner: int, digest: hashlib._Hash | None) -> int:
    """The body of a GET, dropped as it arrives (hashed if asked); returns its length."""
    # X-Runner on the blob requests too: with hashed balancing the whole job stays on one replica.
    headers = {"X-Runner": str(runner)}
    size = 0
    if TRANSFER == "httpx":
        with client.stream("GET", url, headers=headers) as r:
            if r.status_code != 200:
                raise RuntimeError(f"GET {url}: HTTP {r.status_code}")
            for chunk in r.iter_raw(MiB):
                size += len(chunk)
                if digest is not None:
                    digest.update(chunk)
        return size
    conn, target = _connection(url)
    try:
        conn.request("GET", target, headers=headers)
        r = conn.getresponse()
        if r.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {r.status} {r.read(300)!r}")
        buf = memoryview(bytearray(MiB))
        while n := r.readinto(buf):
            size += n
            if digest is not None:
                digest.update(buf[:n])
    finally:
        conn.close()
    return size


def _put(client: httpx.Client, url: str, data: bytes, runner: int) -> None:
    headers = {"x-ms-blob-type": "BlockBlob", "X-Runner": str(runner)}
    if TRANSFER == "httpx":
        r = client.put(url, content=data, headers=headers)
        status, text = r.status_code, r.text
    else:
        conn, target = _connection(url)
        try:
            conn.request("PUT", target, body=data, headers={**headers, "Content-Length": str(len(data))})
            resp = conn.getresponse()
            status, text = resp.status, resp.read(300).decode(errors="replace")
        finally:
            conn.close()
    if status != 201:
        raise RuntimeError(f"PUT {url}: HTTP {status} {text}")


def restore(base: str, token: str, key: str, runner: int, digest: bool = False) -> tuple[int, str]:
    """v2 restore of one entry, the body streamed and dropped: (bytes, SHA-256 if asked)."""
    got = CLIENT.post(
        base + TWIRP + "GetCacheEntryDownloadURL", json={"key": key, "version": VERSION}, headers=_auth(token, runner)
    ).json()
    if not got.get("ok"):
        raise RuntimeError(f"lookup of {key} failed: {got}")
    h = hashlib.sha256() if digest else None
    size = _get(CLIENT, got["signed_download_url"], runner, h)
    return size, h.hexdigest() if h is not None else ""


def save(base: str, token: str, key: str, data: bytes, runner: int) -> int:
    """v2 save of one entry: CreateCacheEntry, one Put Blob, FinalizeCacheEntryUpload (the commit)."""
    headers = _auth(token, runner)
    created = CLIENT.post(base + TWIRP + "CreateCacheEntry", json={"key": key, "version": VERSION}, headers=headers)
    body = created.json()
    if not body.get("ok"):
        raise RuntimeError(f"create of {key} failed: {body}")
    _put(CLIENT, body["signed_upload_url"], data, runner)
    fin = CLIENT.post(
        base + TWIRP + "FinalizeCacheEntryUpload",
        json={"key": key, "version": VERSION, "size_bytes": str(len(data))},
        headers=headers,
    ).json()
    if not fin.get("ok"):
        raise RuntimeError(f"finalize of {key} failed: {fin}")
    return len(data)


def concurrently(n: int, work: Callable[[int], int]) -> Sample:
    """`work(i)` on n threads released together; the wall time runs from the release to the last finish."""
    barrier = threading.Barrier(n + 1)
    durations: list[float] = [0.0] * n
    sizes: list[int] = [0] * n
    errors: list[BaseException] = []

    def client(i: int) -> None:
        barrier.wait()
        t = time.perf_counter()
        try:
            sizes[i] = work(i)
        except BaseException as exc:  # reported after the run
            errors.append(exc)
        durations[i] = time.perf_counter() - t

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    cpu = time.process_time()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} of {n} clients failed, first: {errors[0]}")
    return Sample(wall, durations, sum(sizes), time.process_time() - cpu)


# --- backends ------------------------------------------------------------------------------------------
@dataclass
class Backend:
    name: str
    replicas: Replicas
    one: Balancer  # A: replica 0 only
    s3_object: Callable[[int], Callable[[int], int]] | None = None  # entry id -> reader of its object, or None
    direct_url: str = ""  # a replica serving with --downloads direct (object stores only)
    # Azure: a replica serving with --transfers direct, measured against replica 0 (proxied), with the CPU
    # each of the two spends per GB its clients move.
    transfers_direct: Server | None = None

    @property
    def configs(self) -> list[tuple[str, str]]:
        return [("1 replica", self.one.url), ("2 replicas", self.replicas.url)]


@contextmanager
def sqlite_disk(base: Path, args: argparse.Namespace) -> Iterator[Backend]:
    shared = base / "shared"
    shared.mkdir(parents=True)
    # Hash on the runner: local upload staging needs a job's calls on one replica (see the module doc).
    sticky = "hash $http_x_runner consistent;"
    replicas = Replicas(
        base / "replicas",
        database_url=f"sqlite:///{shared / 'metadata.db'}",
        blobs=str(shared / "blobs"),
        balancing=sticky,
    )
    with _started(replicas, base, sticky) as (started, one):
        yield Backend("sqlite-disk", started, one)


@contextmanager
def pg_s3(base: Path, args: argparse.Namespace) -> Iterator[Backend]:
    from pg import Cluster
    from s3server import SeaweedFS

    with ExitStack() as stack:
        pg = Cluster().start()
        stack.callback(pg.stop)
        s3 = SeaweedFS().start()
        stack.callback(s3.stop)
        prefix = "bench/scale"
        replicas = Replicas(
            base / "replicas",
            database_url=pg.url(pg.create_database("scale")).replace("postgresql+psycopg://", "postgresql://"),
            blobs=f"s3://{s3.bucket}/{prefix}",
            env=s3.env,
        )
        started, one = stack.enter_context(_started(replicas, base, ""))
        # Outside both balancers: it answers only the lookups of the direct rows (the bytes skip it).
        direct = started.add(join=False, args=["--downloads", "direct"])

        def reader(entry_id: int) -> Callable[[int], int]:
            import boto3
            from botocore.config import Config

            # One client for all threads (boto3 clients are thread-safe), with a connection for each.
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=s3.endpoint,
                aws_access_key_id=s3.env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=s3.env["AWS_SECRET_ACCESS_KEY"],
                region_name=s3.env["AWS_DEFAULT_REGION"],
                config=Config(max_pool_connections=max(args.clients) + 4, read_timeout=600),
            )

            def read(_: int) -> int:
                body = client.get_object(Bucket=s3.bucket, Key=f"{prefix}/{entry_id}")["Body"]
                size = 0
                while chunk := body.read(MiB):
                    size += len(chunk)
                return size

            return read

        yield Backend("pg-s3", started, one, reader, direct.url)


@contextmanager
def pg_azure(base: Path, args: argparse.Namespace) -> Iterator[Backend]:
    from azurite import Azurite
    from pg import Cluster

    with ExitStack() as stack:
        pg = Cluster().start()
        stack.callback(pg.stop)
        azure = Azurite().start()
        stack.callback(azure.stop)
        replicas = Replicas(
            base / "replicas",
            database_url=pg.url(pg.create_database("scale")).replace("postgresql+psycopg://", "postgresql://"),
            blobs=f"azure://{azure.container}/bench",
            env=azure.env,
        )
        started, one = stack.enter_context(_started(replicas, base, ""))
        # Outside both balancers: archive bytes of its clients go to and from Azurite, never through it.
        direct = started.add(join=False, args=["--transfers", "direct"])
        yield Backend("pg-azure", started, one, transfers_direct=direct)


@contextmanager
def _started(replicas: Replicas, base: Path, balancing: str) -> Iterator[tuple[Replicas, Balancer]]:
    replicas.start()
    one = None
    try:
        one = Balancer(base / "nginx-one", replicas.addresses()[:1], balancing=balancing).start()
        yield replicas, one
    finally:
        if one is not None:
            one.stop()
        replicas.stop()


# --- the measurement ------------------------------------------------------------------------------------
def entry_id(base: str, token: str, key: str) -> int:
    got = httpx.post(
        base + TWIRP + "GetCacheEntryDownloadURL", json={"key": key, "version": VERSION}, headers=_auth(token, 0)
    ).json()
    # The signed URL ends in /runcache/archives/<id>?...
    return int(got["signed_download_url"].split("?", 1)[0].rsplit("/", 1)[1])


def measure(backend: Backend, args: argparse.Namespace, rows: list[Row]) -> None:
    token = backend.replicas.token()
    big = os.urandom(args.entry_mib * MiB)
    want = hashlib.sha256(big).hexdigest()
    save(backend.replicas.url, token, "bench-big", big, 0)
    del big
    # Check the path once per configuration (and warm caches): the whole entry, byte-identical.
    for _, url in backend.configs:
        for runner in (0, 1):
            size, digest = restore(url, token, "bench-big", runner, digest=True)
            assert digest == want, f"{url}: restored {size} bytes that differ from the saved entry"

    for clients in args.clients:
        a = Row(backend.name, f"restore {args.entry_mib} MiB", clients, "1 replica")
        b = Row(backend.name, f"restore {args.entry_mib} MiB", clients, "2 replicas")
        for _ in range(args.rounds):
            for row, (_, url) in zip((a, b), backend.configs, strict=True):
                row.samples.append(concurrently(clients, lambda i, u=url: restore(u, token, "bench-big", i)[0]))
            b.ratios.append(b.samples[-1].mbps / a.samples[-1].mbps)
        rows += [a, b]
        print(
            f"{backend.name}: restore by {clients}: {a.samples[-1].mbps:.0f} / {b.samples[-1].mbps:.0f} MB/s",
            flush=True,
        )

    payload = os.urandom(args.save_mib * MiB)
    a = Row(backend.name, f"save {args.save_mib} MiB (distinct keys)", args.saves, "1 replica")
    b = Row(backend.name, f"save {args.save_mib} MiB (distinct keys)", args.saves, "2 replicas")
    for r in range(args.rounds):
        for row, (config, url) in zip((a, b), backend.configs, strict=True):
            tag = f"save-{r}-{config[0]}"
            row.samples.append(concurrently(args.saves, lambda i, u=url, t=tag: save(u, token, f"{t}-{i}", payload, i)))
        b.ratios.append(b.samples[-1].mbps / a.samples[-1].mbps)
    rows += [a, b]
    print(f"{backend.name}: {args.saves} saves: {a.samples[-1].mbps:.0f} / {b.samples[-1].mbps:.0f} MB/s", flush=True)

    if backend.s3_object is not None:
        read = backend.s3_object(entry_id(backend.replicas.url, token, "bench-big"))
        if backend.direct_url:
            size, digest = restore(backend.direct_url, token, "bench-big", 0, digest=True)
            assert digest == want, f"direct download: {size} bytes that differ from the saved entry"
        for clients in args.clients:
            ref = Row(backend.name, f"restore {args.entry_mib} MiB: S3 GetObject", clients, "boto3 direct")
            direct = Row(backend.name, f"restore {args.entry_mib} MiB: --downloads direct", clients, "presigned")
            for _ in range(args.rounds):
                ref.samples.append(concurrently(clients, read))
                if backend.direct_url:
                    url = backend.direct_url
                    direct.samples.append(concurrently(clients, lambda i, u=url: restore(u, token, "bench-big", i)[0]))
                    direct.ratios.append(direct.samples[-1].mbps / ref.samples[-1].mbps)
            rows += [ref, direct] if direct.samples else [ref]


def _cpu_seconds(server: Server) -> float:
    """User + system CPU seconds the server process has used so far (Linux /proc)."""
    assert server.proc is not None
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuRow:
    operation: str
    clients: int
    config: str
    seconds_per_gb: list[float] = field(default_factory=list)


def measure_transfers(backend: Backend, args: argparse.Namespace, rows: list[Row], cpu_rows: list[CpuRow]) -> None:
    """Proxied (replica 0: archive bytes through it) against `--transfers direct` (bytes between client and
    storage), paired per round; ratio = direct ÷ proxied MB/s; and each replica's CPU seconds per GB moved."""
    assert backend.transfers_direct is not None
    proxied, direct = backend.replicas.servers[0], backend.transfers_direct
    token = backend.replicas.token()
    big = os.urandom(args.entry_mib * MiB)
    want = hashlib.sha256(big).hexdigest()
    save(direct.url, token, "bench-direct", big, 0)  # written straight into the storage account
    del big
    for server in (proxied, direct):
        size, digest = restore(server.url, token, "bench-direct", 0, digest=True)
        assert digest == want, f"{server.url}: restored {size} bytes that differ from the saved entry"
    configs = (("proxied", proxied), ("direct", direct))

    def run(op: str, clients: int, work: Callable[[str], Callable[[int], int]]) -> None:
        pair = [Row(backend.name, op, clients, name) for name, _ in configs]
        cpu = [CpuRow(op, clients, name) for name, _ in configs]
        for _ in range(args.rounds):
            for row, cpu_row, (_, server) in zip(pair, cpu, configs, strict=True):
                before = _cpu_seconds(server)
                row.samples.append(concurrently(clients, work(server.url)))
                cpu_row.seconds_per_gb.append((_cpu_seconds(server) - before) / (row.samples[-1].total_bytes / 1e9))
            pair[1].ratios.append(pair[1].samples[-1].mbps / pair[0].samples[-1].mbps)
        rows.extend(pair)
        cpu_rows.extend(cpu)
        print(
            f"{backend.name}: {op} by {clients}: {pair[0].samples[-1].mbps:.0f} / {pair[1].samples[-1].mbps:.0f} MB/s"
        )

    for clients in args.clients:
        run(
            f"restore {args.entry_mib} MiB: transfers",
            clients,
            lambda url: lambda i: restore(url, token, "bench-direct", i)[0],
        )
    payload = os.urandom(args.save_mib * MiB)
    keys = itertools.count()  # distinct keys over rounds and configurations (next() is atomic in CPython)
    run(
        f"save {args.save_mib} MiB: transfers",
        args.saves,
        lambda url: lambda i: save(url, token, f"direct-save-{next(keys)}", payload, i),
    )


# --- the table ---------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def report(rows: list[Row]) -> None:
    head = (
        f"{'backend':<12} {'operation':<34} {'clients':>7}  {'config':<12} {'MB/s':>7} {'p50 s':>7} {'p99 s':>7}"
        f" {'client cpu':>10} {'ratio':>6}"
    )
    print("\n" + head)
    print("-" * len(head))
    for row in rows:
        durations = [d for s in row.samples for d in s.durations]
        mbps = statistics.median(s.mbps for s in row.samples)
        cpu = statistics.median(s.cpu / s.wall for s in row.samples)
        ratio = f"{statistics.median(row.ratios):.2f}x" if row.ratios else ""
        print(
            f"{row.backend:<12} {row.operation:<34} {row.clients:>7}  {row.config:<12} {mbps:>7.0f}"
            f" {statistics.median(durations):>7.2f} {percentile(durations, 0.99):>7.2f} {cpu:>10.2f} {ratio:>6}"
        )


def report_cpu(rows: list[CpuRow]) -> None:
    if not rows:
        return
    head = f"{'operation':<34} {'clients':>7}  {'config':<9} {'replica cpu s/GB':>16} {'of proxied':>10}"
    print("\nreplica CPU per GB moved, pg-azure (goal: direct < 5 % of proxied)\n" + head)
    print("-" * len(head))
    proxied: dict[tuple[str, int], float] = {}
    for row in rows:
        value = statistics.median(row.seconds_per_gb)
        key = (row.operation, row.clients)
        share = f"{value / proxied[key] * 100:.1f} %" if row.config == "direct" and proxied.get(key) else ""
        if row.config == "proxied":
            proxied[key] = value
        print(f"{row.operation:<34} {row.clients:>7}  {row.config:<9} {value:>16.3f} {share:>10}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 16 MiB entry, 2 MiB saves, one round")
    ap.add_argument("--rounds", type=int, default=3, help="A B pairs per operation")
    ap.add_argument("--entry-mib", type=int, default=256)
    ap.add_argument("--save-mib", type=int, default=20)
    ap.add_argument("--saves", type=int, default=32, help="concurrent saves")
    ap.add_argument("--clients", default="1,8,32", help="concurrent restoring clients, comma-separated")
    ap.add_argument("--only", default="sqlite-disk,pg-s3,pg-azure", help="backends, comma-separated")
    ap.add_argument("--transfer", choices=["stdlib", "httpx"], default="stdlib", help="client for archive bytes")
    args = ap.parse_args()
    global TRANSFER
    TRANSFER = args.transfer
    if args.quick:
        args.rounds, args.entry_mib, args.save_mib = 1, 16, 2
    args.clients = [int(c) for c in args.clients.split(",")]
    backends = {"sqlite-disk": sqlite_disk, "pg-s3": pg_s3, "pg-azure": pg_azure}
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(only) - set(backends)
    if unknown:
        ap.error(f"unknown backend(s) {', '.join(sorted(unknown))}; choose from {', '.join(backends)}")
    print(
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; entry {args.entry_mib} MiB, "
        f"{args.saves} saves of {args.save_mib} MiB, {args.rounds} round(s) of A (1 replica) B (2 replicas); "
        f"archive bytes through {args.transfer}",
        flush=True,
    )
    rows: list[Row] = []
    cpu_rows: list[CpuRow] = []
    with tempfile.TemporaryDirectory(prefix="runcache-bench-scale-") as tmp:
        for name in only:
            with backends[name](Path(tmp) / name, args) as backend:
                measure(backend, args, rows)
                if backend.transfers_direct is not None:
                    measure_transfers(backend, args, rows, cpu_rows)
    report(rows)
    report_cpu(cpu_rows)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
