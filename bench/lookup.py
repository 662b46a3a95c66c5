#!/usr/bin/env python3
"""Lookup and list cost on a large metadata database, SQLite and PostgreSQL.

    .venv/bin/python bench/lookup.py [--entries 1000000] [--repositories 1000] [--big 100000]
                                     [--postgres URL | --no-postgres] [--rounds 200]

Fills `--entries` committed entries over `--repositories` repositories (one of them, `bench/big`, holds
`--big` of them: 2 versions x 20 scopes x 10 key families) with bulk SQL (executemany on SQLite, COPY on
PostgreSQL), after MetadataStore has migrated the schema, and prints how long the fill took. Then, in the
big repository (the expensive case), p50/p99 in milliseconds of:

- lookups: `MetadataStore.candidates`, the one database query of a v1/v2 lookup, for an exact hit, a
  restore-key (prefix) hit and a miss, with 1 client and with 16 (threads, one pooled connection each);
- the management list (`MetadataStore.query_entries`, what GET .../actions/caches calls) for its first
  and its last page at 100 per page (sorted by last access, the default), with 1 client.

What is measured, and why: the store, not HTTP. A lookup's database work is this one query; the rest of
`CacheService.lookup` is one `contains_many` over the handful of candidates it returns (one stat per
candidate on a DiskBlobStore, independent of how many rows the database holds) plus one touch, and the
HTTP layer adds a constant. Creating a million blob files to drive the real service would measure the
file system. So a lookup here is the part that can grow with the database; the goals (single client
p99 < 5 ms, 16 clients p99 < 50 ms, any list page < 50 ms) are checked on it.

Each measurement follows an unmeasured warm-up by as many clients (six calls each): the pool's connections
open and their statements prepared, as in a replica that has been serving for a while.

SQLite runs without ANALYZE (runcache never gathers statistics: plans must not depend on them).
PostgreSQL gets one VACUUM ANALYZE after the fill, standing for the autovacuum that follows a bulk load.
Without --postgres a throwaway cluster is started with tests/pg.py (Debian's server binaries).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from runcache.core.matching import lookup_prefixes
from runcache.store.metadata import MetadataStore

BIG = "bench/big"
FAMILIES = [f"{tool}-{os}" for tool in ("npm", "pip", "cargo", "gradle", "go") for os in ("linux", "macos")]
SCOPES = ["refs/heads/main"] + [f"refs/pull/{n}/merge" for n in range(1, 20)]
VERSIONS = ["a" * 64, "b" * 64]
COLUMNS = (
    "repository",
    "scope",
    "key",
    "key_folded",
    "version",
    "state",
    "declared_size",
    "size",
    "sha256",
    "node",
    "owner",
    "reserved_at",
    "created_at",
    "last_accessed_at",
)
T0 = datetime(2026, 1, 1)


def rows(entries: int, repositories: int, big: int):
    """Entries in id order, repositories interleaved as saves arrive (every `entries // big`-th one is the
    big repository's); created_at and last_accessed_at increase with the id."""
    others = max(1, repositories - 1)
    every = max(1, entries // max(1, big))
    counts: dict[str, int] = {}
    other = 0
    for n in range(entries):
        if n % every == 0 and counts.get(BIG, 0) < big:
            repo = BIG
        else:
            repo = f"org{other % 50}/repo{other}"
            other = (other + 1) % others
        i = counts[repo] = counts.get(repo, -1) + 1
        family = FAMILIES[i % len(FAMILIES)]
        scope = SCOPES[(i // len(FAMILIES)) % len(SCOPES)]
        version = VERSIONS[(i // (len(FAMILIES) * len(SCOPES))) % len(VERSIONS)]
        key = f"{family}-{i:08x}"
        t = T0 + timedelta(milliseconds=n)
        yield (repo, scope, key, key.lower(), version, "committed", 10, 10, "0" * 64, "n", None, t, t, t)


def fill(store: MetadataStore, entries: int, repositories: int, big: int) -> float:
    start = time.perf_counter()
    with store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        if store.dialect == "sqlite":
            placeholders = ",".join("?" * len(COLUMNS))
            cur = raw.cursor()
            cur.execute("BEGIN")
            batch: list[tuple] = []
            for r in rows(entries, repositories, big):
                batch.append(r[:11] + tuple(t.isoformat(" ", "microseconds") for t in r[11:]))
                if len(batch) == 50_000:
                    cur.executemany(f"INSERT INTO cache_entries ({','.join(COLUMNS)}) VALUES ({placeholders})", batch)
                    batch.clear()
            if batch:
                cur.executemany(f"INSERT INTO cache_entries ({','.join(COLUMNS)}) VALUES ({placeholders})", batch)
            cur.execute("COMMIT")
        else:
            # A commit flushed to WAL: until then (the test cluster runs synchronous_commit=off) VACUUM
            # cannot mark the new rows' pages all-visible.
            raw.execute("SET LOCAL synchronous_commit = on")
            with raw.cursor() as cur, cur.copy(f"COPY cache_entries ({','.join(COLUMNS)}) FROM STDIN") as copy:
                for r in rows(entries, repositories, big):
                    copy.write_row(r)
            raw.commit()
    if store.dialect == "postgresql":
        # On a connection of its own once the load has committed, as autovacuum would after a bulk load:
        # ANALYZE for the planner, VACUUM for the visibility map that index-only scans rely on.
        import psycopg

        dsn = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE cache_entries")
            visible = conn.execute(
                "SELECT relallvisible::float / greatest(relpages, 1) FROM pg_class WHERE relname = 'cache_entries'"
            ).fetchone()
        print(f"postgresql: {visible[0]:.0%} of the table's pages all-visible after VACUUM", flush=True)
    return time.perf_counter() - start


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


def timed_calls(fn: Callable[[], object], rounds: int, clients: int) -> list[float]:
    samples: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client() -> None:
        mine: list[float] = []
        barrier.wait()
        for _ in range(rounds):
            t = time.perf_counter()
            fn()
            mine.append(time.perf_counter() - t)
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples


def measure(store: MetadataStore, args: argparse.Namespace, engine: str) -> list[tuple[str, str, float, float]]:
    version = VERSIONS[0]
    scopes = ["refs/pull/3/merge", "refs/heads/main"]  # a pull request reads its own scope and the base's
    # An existing key in the PR's scope (family 0 of round 3, version 0).
    exact_key = f"{FAMILIES[0]}-{3 * len(FAMILIES):08x}"
    lookups = {
        "lookup exact hit": [exact_key],
        "lookup prefix hit": [f"{FAMILIES[1]}-ffffffff", f"{FAMILIES[1]}-"],
        "lookup miss": ["nothing-here-1", "nothing-"],
    }
    total, _ = store.query_entries(repository=BIG, limit=1)
    last_offset = max(0, (total - 1) // 100 * 100)
    calls: dict[str, Callable[[], object]] = {}
    for name, keys in lookups.items():
        prefixes = lookup_prefixes(keys)
        calls[name] = lambda p=prefixes: store.candidates(repository=BIG, version=version, scopes=scopes, prefixes=p)
    calls["list first page"] = lambda: store.query_entries(repository=BIG, limit=100, offset=0)
    calls[f"list last page (offset {last_offset})"] = lambda: store.query_entries(
        repository=BIG, limit=100, offset=last_offset
    )
    assert store.candidates(repository=BIG, version=version, scopes=scopes, prefixes=lookup_prefixes([exact_key]))
    out = []
    for name, fn in calls.items():
        for clients in (1, 16) if name.startswith("lookup") else (1,):
            # Warm-up, not measured: a replica's pool is open and its statements prepared long before its
            # lookups matter, so opening `clients` connections (a new PostgreSQL backend each) and psycopg's
            # first five unprepared executions per connection are start-up costs, not a lookup's.
            timed_calls(fn, 6, clients)
            p50, p99 = percentiles(timed_calls(fn, args.rounds if clients == 1 else max(20, args.rounds // 4), clients))
            out.append((engine, f"{name}, {clients} client{'s' if clients > 1 else ''}", p50, p99))
    return out


def run(url: str, engine: str, args: argparse.Namespace) -> list[tuple[str, str, float, float]]:
    store = MetadataStore(url)
    try:
        took = fill(store, args.entries, args.repositories, args.big)
        print(f"{engine}: filled {args.entries:,} entries in {took:.1f} s", flush=True)
        return measure(store, args, engine)
    finally:
        store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--repositories", type=int, default=1000)
    ap.add_argument("--big", type=int, default=100_000, help="entries of the one big repository")
    ap.add_argument("--rounds", type=int, default=200, help="calls per client (16-client runs do a quarter)")
    ap.add_argument("--postgres", metavar="URL", help="an empty PostgreSQL database (default: a throwaway cluster)")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--no-sqlite", action="store_true")
    args = ap.parse_args()
    results: list[tuple[str, str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="runcache-bench-") as tmp:
        if not args.no_sqlite:
            results += run(f"sqlite:///{tmp}/metadata.db", "sqlite", args)
        if not args.no_postgres:
            if args.postgres:
                results += run(args.postgres, "postgresql", args)
            else:
                from pg import Cluster

                cluster = Cluster().start()
                try:
                    results += run(cluster.url(cluster.create_database("bench")), "postgresql", args)
                finally:
                    cluster.stop()
    goals = {"1 client": 5.0, "16 clients": 50.0}
    print(f"\n{'engine':<11} {'operation':<46} {'p50 ms':>8} {'p99 ms':>8}  goal")
    for engine, name, p50, p99 in results:
        goal = 50.0 if name.startswith("list") else goals[name.rsplit(", ", 1)[1]]
        print(f"{engine:<11} {name:<46} {p50:8.2f} {p99:8.2f}  p99 < {goal:g} {'ok' if p99 < goal else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
