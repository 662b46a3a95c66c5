"""Lookups and management list pages read only index entries of the caller's repository, on SQLite and
PostgreSQL (`db_url` is parametrized): the plans the databases choose for the store's own statements, and
the answers of the byte-order key ranges those plans rely on.

The statements checked are the ones the store really sends (captured at the cursor), so a change to a
query that loses its index fails here rather than on a large production database.

SQLite runs without statistics (runcache never runs ANALYZE), so these are the plans a server gets.
PostgreSQL gets ANALYZE after the fill, as autovacuum would after a bulk load; no enable_seqscan=off:
with a few thousand rows over many repositories an index is the cheaper plan by PostgreSQL's own costs,
so a Seq Scan here means the index cannot serve the query (a lost predicate, an unusable operator).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event, insert, text

from runcache.core.entries import COMMITTED, UPLOADING
from runcache.core.matching import lookup_prefixes
from runcache.store.metadata import MetadataStore
from runcache.store.models import Entry

V1, V2 = "a" * 64, "b" * 64
MAIN, PR = "refs/heads/main", "refs/pull/7/merge"
T0 = datetime(2026, 1, 1)
LOOKUP_INDEX = "ix_entry_committed_lookup"


@pytest.fixture
def store(db_url: str) -> Iterator[MetadataStore]:
    s = MetadataStore(db_url)
    try:
        yield s
    finally:
        s.close()


def _row(n: int, repository: str, scope: str, key: str, version: str, state: str = COMMITTED) -> dict:
    t = T0 + timedelta(seconds=n)
    return {
        "repository": repository,
        "scope": scope,
        "key": key,
        "key_folded": key.lower(),
        "version": version,
        "state": state,
        "declared_size": n % 97,
        "size": n % 97 if state == COMMITTED else None,
        "sha256": "0" * 64,
        "node": "n",
        "reserved_at": t,
        "created_at": t,
        # Not the creation order, so each sort index is really needed for its own order.
        "last_accessed_at": T0 + timedelta(seconds=(n * 7919) % 100_000),
    }


def _fill(store: MetadataStore, repositories: int = 60, per_repository: int = 100, own: int = 100) -> None:
    """Many repositories of which the caller's (`own` entries) is a small share, in two versions and scopes,
    with some uploads in flight: the shape in which a scan of anything but the caller's rows is visible."""
    rows = []
    n = 0
    for r in range(repositories):
        repository = "Octo/App" if r == 0 else f"org{r % 7}/repo{r}"
        for i in range(own if r == 0 else per_repository):
            n += 1
            state = UPLOADING if i % 25 == 0 else COMMITTED
            scope = MAIN if i % 2 else PR
            rows.append(_row(n, repository, scope, f"npm-Linux-{i:04d}", V1 if i % 3 else V2, state))
    with store.engine.begin() as conn:
        conn.execute(insert(Entry), rows)
    if store.dialect == "postgresql":
        # What autovacuum does after a load: statistics for the planner, the visibility map for index-only
        # scans. A flushed commit first: until then VACUUM cannot mark the new pages all-visible.
        with store.engine.connect() as conn:
            conn.connection.driver_connection.autocommit = True
            conn.exec_driver_sql("CHECKPOINT")
            conn.exec_driver_sql("VACUUM ANALYZE cache_entries")
            conn.connection.driver_connection.autocommit = False


def _statements(store: MetadataStore, call: Callable[[], object]) -> list[tuple[str, object]]:
    """The SQL statements (and parameters) `call` sends, SELECTs only: through SQLAlchemy, and the lookup's
    own read on a bare driver connection (`MetadataStore._read`)."""
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, parameters))

    read = store._read

    def capture_read(statement: str, parameters: object) -> list[tuple]:
        seen.append((statement, parameters))
        return read(statement, parameters)  # type: ignore[arg-type]

    event.listen(store.engine, "before_cursor_execute", capture)
    store._read = capture_read  # type: ignore[method-assign]
    try:
        call()
    finally:
        del store._read
        event.remove(store.engine, "before_cursor_execute", capture)
    assert seen
    return seen


def _plan(store: MetadataStore, statement: str, parameters: object) -> tuple[list[str], list[str]]:
    """(index names used, descriptions of full table scans) for one statement, from the database."""
    with store.engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        if store.dialect == "sqlite":
            rows = cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters).fetchall()
            details = [r[3] for r in rows]
            # SEARCH ... USING [COVERING] INDEX x (...) seeks; SCAN cache_entries [USING INDEX x] walks it all.
            used = [m.group(1) for d in details if (m := re.search(r"USING (?:COVERING )?INDEX (\S+)", d))]
            scans = [d for d in details if d.startswith("SCAN cache_entries")]
            return used, scans
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
        plan = cursor.fetchone()[0]
        plan = json.loads(plan) if isinstance(plan, str) else plan
        used, scans = [], []

        def walk(node: dict) -> None:
            if node.get("Relation Name") == "cache_entries" and node["Node Type"] == "Seq Scan":
                scans.append(json.dumps(node))
            if "Index Name" in node:
                used.append(node["Index Name"])
            for child in node.get("Plans", []):
                walk(child)

        walk(plan[0]["Plan"])
        return used, scans


def _assert_uses(
    store: MetadataStore, call: Callable[[], object], index: str, also: set[str], *, counts: bool = False
) -> None:
    """Every statement of `call` (but a bare total, checked separately, unless `counts`) reads `index` and at
    most the indexes in `also`, and scans no table."""
    for statement, parameters in _statements(store, call):
        if "count(" in statement.lower() and not counts:
            continue
        used, scans = _plan(store, statement, parameters)
        assert not scans, (statement, scans)
        assert index in used and set(used) <= {index, *also}, (statement, used)


@pytest.mark.parametrize(
    "keys",
    [["npm-linux-0007"], ["npm-linux-none", "npm-linux-"], ["nothing-here", "nothing-"]],
    ids=["exact", "prefix", "miss"],
)
def test_lookups_seek_the_committed_lookup_index(store: MetadataStore, keys: list[str]) -> None:
    _fill(store)
    prefixes = lookup_prefixes(keys)

    def lookup() -> object:
        return store.candidates(repository="octo/app", version=V1, scopes=[PR, MAIN], prefixes=prefixes)

    # An exact key may also be sought through the identity index: an equality on all four of its columns
    # reads at most one row per scope, so it is as good (SQLite picks it for a single key). The newest
    # prefix matches' rows are read by id (PostgreSQL: the primary key; SQLite: the rowid, no index).
    _assert_uses(store, lookup, LOOKUP_INDEX, {"uq_entry_identity_folded", "cache_entries_pkey"})


INDEXES = {"last_accessed_at": "accessed", "created_at": "created", "size_in_bytes": "size"}


@pytest.mark.parametrize("sort", ["last_accessed_at", "created_at", "size_in_bytes"])
@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_list_pages_walk_the_sort_index(store: MetadataStore, sort: str, direction: str) -> None:
    _fill(store, own=2000)  # a repository large enough that PostgreSQL would rather not sort it
    index = INDEXES[sort]
    for offset in (0, 80, 1900):  # the first page, a deep one, a last one (walked backwards)
        _assert_uses(
            store,
            lambda o=offset: store.query_entries(
                repository="OCTO/app", sort=sort, direction=direction, limit=10, offset=o
            ),
            f"ix_entry_committed_{index}",
            # The page's rows, fetched by id (SQLite: the rowid, no index); the total, counted in the same
            # statement, from whichever index of the repository's committed entries the planner likes.
            {"cache_entries_pkey", "ix_entry_repository_folded"}
            | {f"ix_entry_committed_{i}" for i in INDEXES.values()},
            counts=True,
        )


def test_list_total_counts_index_entries_only(store: MetadataStore) -> None:
    _fill(store)
    statements = _statements(store, lambda: store.query_entries(repository="octo/app", limit=10))
    counts = [(s, p) for s, p in statements if "count(" in s.lower()]
    assert counts
    for statement, parameters in counts:
        used, scans = _plan(store, statement, parameters)
        assert used and not scans, (statement, used, scans)


def test_list_pages_are_the_sorted_committed_entries(store: MetadataStore) -> None:
    _fill(store, repositories=5, per_repository=120)
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, size, created_at, last_accessed_at FROM cache_entries WHERE lower(repository) = "
                "'octo/app' AND state = 'committed'"
            )
        ).all()
    for sort, column in (("size_in_bytes", 1), ("created_at", 2), ("last_accessed_at", 3)):
        for direction in ("asc", "desc"):
            want = [r[0] for r in sorted(rows, key=lambda r: (r[column], r[0]), reverse=direction == "desc")]
            got: list[int] = []
            for offset in range(0, len(want) + 10, 10):
                total, page = store.query_entries(
                    repository="octo/app", sort=sort, direction=direction, limit=10, offset=offset
                )
                assert total == len(want)
                got += [e.id for e in page]
            assert got == want, (sort, direction)


# Characters around the edges of byte order, LIKE's wildcards and its escape, and case that folds.
ALPHABET = ["a", "b", "-", "%", "_", "/", "\\", "é", "ß", "\ud7ff", "\ue000", "\uffff", "\U0010ffff", "Z"]


def test_prefix_candidates_match_python_startswith(store: MetadataStore) -> None:
    """The byte-order range that replaced LIKE picks exactly the keys that start with the prefix."""
    rng = random.Random(6)
    keys = sorted({"".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 4))) for _ in range(400)})
    rows = [_row(n, "octo/app", MAIN if n % 2 else PR, k, V1) for n, k in enumerate(keys, 1)]
    with store.engine.begin() as conn:
        conn.execute(insert(Entry), rows)
    by_key = {r["key"]: r for r in rows}
    ids = {}
    with store.engine.connect() as conn:
        for key, entry_id in conn.execute(text("SELECT key, id FROM cache_entries")):
            ids[key] = entry_id
    prefixes = sorted({k[:i] for k in keys for i in (1, 2, 3)} | {"\U0010ffff\U0010ffff", "zz"})
    for prefix in prefixes:
        folded = prefix.lower()
        want: set[int] = set()
        for scope in (MAIN, PR):
            matching = [k for k in keys if by_key[k]["scope"] == scope and k.lower().startswith(folded)]
            if matching:  # the newest per scope, and the exact key if there is one
                want.add(ids[max(matching, key=lambda k: by_key[k]["created_at"])])
            want |= {ids[k] for k in matching if k.lower() == folded}
        got = store.candidates(repository="octo/app", version=V1, scopes=[MAIN, PR], prefixes=[folded])
        assert {c.id for c in got} == want, repr(prefix)
