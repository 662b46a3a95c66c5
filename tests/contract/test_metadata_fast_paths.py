"""The metadata store's fast paths give the answers of the plain queries they replace, on SQLite and
PostgreSQL (`db_url` is parametrized):

- a list page walks the sort index from whichever end is nearer, in one statement with the total: every
  page must equal a plain `ORDER BY ... LIMIT ... OFFSET ...` (ties, NULL sizes, pages past the end,
  short last pages), also after inserts and deletes;
- a lookup runs SQL compiled once per shape, prepared by psycopg on PostgreSQL, whose plan becomes
  generic after a few executions: its answers must not change with the plan, and the generic plan must
  still seek the lookup index (the key-range bounds are parameters there, never literals).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete, insert, text

from runcache.core.entries import COMMITTED, UPLOADING
from runcache.core.matching import lookup_prefixes
from runcache.store.metadata import MetadataStore
from runcache.store.models import Entry

V1, V2 = "a" * 64, "b" * 64
MAIN, PR = "refs/heads/main", "refs/pull/7/merge"
T0 = datetime(2026, 1, 1)
SORTS = {"last_accessed_at": "last_accessed_at", "created_at": "created_at", "size_in_bytes": "size"}


@pytest.fixture
def store(db_url: str) -> Iterator[MetadataStore]:
    # One pooled connection: on PostgreSQL every lookup then reuses the statement psycopg prepared.
    s = MetadataStore(db_url, pool_size=1)
    try:
        yield s
    finally:
        s.close()


def _row(n: int, repository: str, key: str, *, scope: str = MAIN, version: str = V1, state: str = COMMITTED) -> dict:
    # Few distinct times and sizes: most rows tie on the sort column, so the id must break the ties; some
    # sizes are NULL, which the engines order differently (first or last), and so must the fast path.
    return {
        "repository": repository,
        "scope": scope,
        "key": key,
        "key_folded": key.lower(),
        "version": version,
        "state": state,
        "declared_size": 1,
        "size": None if n % 11 == 0 else n % 4,
        "sha256": "0" * 64,
        "node": "n",
        "reserved_at": T0,
        "created_at": T0 + timedelta(seconds=n % 3),
        "last_accessed_at": T0 + timedelta(seconds=(n * 7) % 5),
    }


def _insert(store: MetadataStore, rows: list[dict]) -> None:
    with store.engine.begin() as conn:
        conn.execute(insert(Entry), rows)


def _plain_page(store: MetadataStore, sort: str, direction: str, limit: int, offset: int) -> tuple[int, list[int]]:
    """The page as one plain OFFSET query (and the total as one count), written out independently."""
    column, way = SORTS[sort], "ASC" if direction == "asc" else "DESC"
    where = "lower(repository) = 'octo/app' AND state = 'committed'"
    with store.engine.connect() as conn:
        total = conn.execute(text(f"SELECT count(*) FROM cache_entries WHERE {where}")).scalar_one()
        ids = conn.execute(
            text(
                f"SELECT id FROM cache_entries WHERE {where} ORDER BY {column} {way}, id {way} "
                f"LIMIT {limit} OFFSET {offset}"
            )
        ).scalars()
        return total, list(ids)


def _check_every_page(store: MetadataStore) -> int:
    total, _ = _plain_page(store, "created_at", "asc", 1, 0)
    checked = 0
    for sort in SORTS:
        for direction in ("asc", "desc"):
            for limit in (1, 7, 30, 1000):
                # Every offset from the first page to past the end, around the middle (where the walk turns
                # round) and the end (a short last page walked backwards).
                offsets = set(range(0, total + 2 * limit, max(1, limit // 2))) | set(range(total // 2 - 3, total + 3))
                for offset in sorted(o for o in offsets if o >= 0):
                    got_total, page = store.query_entries(
                        repository="OCTO/App", sort=sort, direction=direction, limit=limit, offset=offset
                    )
                    assert (got_total, [e.id for e in page]) == _plain_page(store, sort, direction, limit, offset), (
                        sort,
                        direction,
                        limit,
                        offset,
                    )
                    checked += 1
    return checked


def test_list_pages_equal_a_plain_offset_query_also_after_inserts_and_deletes(store: MetadataStore) -> None:
    rows = [_row(n, "octo/app", f"k-{n}") for n in range(1, 62)]
    rows += [_row(n, "octo/app", f"u-{n}", state=UPLOADING) for n in range(62, 70)]  # not listed
    rows += [_row(n, f"org/other{n % 3}", f"k-{n}") for n in range(70, 130)]  # other repositories
    _insert(store, rows)
    assert _check_every_page(store) > 100
    with store.engine.begin() as conn:
        conn.execute(delete(Entry).where(Entry.key.in_([f"k-{n}" for n in range(1, 62, 4)])))
    _insert(store, [_row(n, "Octo/App", f"k-{n}") for n in range(200, 213)])
    _check_every_page(store)


def test_list_page_entries_are_whole_rows(store: MetadataStore) -> None:
    """The one-statement page builds EntryInfo from columns, no longer from ORM objects: the same values."""
    _insert(store, [_row(n, "octo/app", f"K-{n}") for n in range(1, 40)])
    total, page = store.query_entries(repository="octo/app", sort="created_at", direction="asc", limit=5, offset=30)
    assert total == 39 and len(page) == 5
    assert page == [store.get(e.id) for e in page]
    assert store.query_entries(repository="nobody/here", limit=10) == (0, [])
    assert store.query_entries(repository="octo/app", limit=10, offset=39) == (39, [])
    assert store.query_entries(repository="octo/app", limit=0, offset=3) == (39, [])


def _lookup_rows() -> list[dict]:
    rng = random.Random(10)
    rows = []
    for n in range(1, 400):
        key = f"{rng.choice(['npm', 'NPM', 'pip'])}-{rng.choice(['linux', 'macos'])}-{rng.randint(0, 40):02d}"
        row = _row(n, "octo/app", key, scope=rng.choice([MAIN, PR]), version=rng.choice([V1, V2]))
        row["created_at"] = T0 + timedelta(seconds=rng.randint(0, 50))  # ties on created_at too
        rows.append(row)
    # Identities are unique: keep the first of each (scope, folded key, version).
    unique: dict[tuple, dict] = {}
    for r in rows:
        unique.setdefault((r["scope"], r["key_folded"], r["version"]), r)
    return list(unique.values())


def _want(rows: list[dict], ids: dict[tuple, int], version: str, scopes: list[str], prefixes: list[str]) -> set[int]:
    """The lookup's candidates computed in Python: per scope and prefix the exact key and the newest match
    (newest by created_at, then id)."""
    want: set[int] = set()
    for scope in scopes:
        mine = [r for r in rows if r["scope"] == scope and r["version"] == version]
        for prefix in prefixes:
            want |= {ids[r["scope"], r["key_folded"], version] for r in mine if r["key_folded"] == prefix}
            matching = [r for r in mine if r["key_folded"].startswith(prefix)]
            if matching:
                newest = max(matching, key=lambda r: (r["created_at"], ids[r["scope"], r["key_folded"], version]))
                want.add(ids[newest["scope"], newest["key_folded"], version])
    return want


def test_lookups_answer_the_same_on_every_call(store: MetadataStore) -> None:
    """Many calls of each shape on one connection: on PostgreSQL the first few use custom plans, the rest
    a prepared statement's generic plan; every answer must be the one computed from the rows."""
    rows = _lookup_rows()
    _insert(store, rows)
    ids = {}
    with store.engine.connect() as conn:
        for scope, key_folded, version, entry_id in conn.execute(
            text("SELECT scope, key_folded, version, id FROM cache_entries")
        ):
            ids[scope, key_folded, version] = entry_id
    rng = random.Random(11)
    for round_ in range(40):
        keys = [rng.choice(["npm-linux-0", "npm-", "pip-macos-1", "NPM-linux-", "nothing", "p"])]
        if round_ % 2:
            keys.append(rng.choice(["npm-linux-", "pip-", ""]) or "n")
        prefixes = lookup_prefixes(keys)
        scopes = [PR, MAIN] if round_ % 3 else [MAIN]
        version = V1 if round_ % 4 else V2
        got = store.candidates(repository="Octo/App", version=version, scopes=scopes, prefixes=prefixes)
        assert len({c.id for c in got}) == len(got)
        assert {c.id for c in got} == _want(rows, ids, version, scopes, [p.lower() for p in prefixes]), keys
        for c in got:
            e = store.get(c.id)
            assert e is not None and (c.scope, c.key, c.version, c.created_at) == (
                e.scope,
                e.key,
                e.version,
                e.created_at,
            )


def test_postgresql_lookup_generic_plan_seeks_the_lookup_index(store: MetadataStore) -> None:
    if store.dialect != "postgresql":
        pytest.skip("prepared statements and generic plans are PostgreSQL's")
    rows = _lookup_rows() + [_row(n, f"org/r{n % 40}", f"npm-linux-{n}") for n in range(1000, 4000)]
    _insert(store, rows)
    with store.engine.connect() as conn:
        conn.connection.driver_connection.autocommit = True
        conn.exec_driver_sql("VACUUM ANALYZE cache_entries")
        conn.connection.driver_connection.autocommit = False
    prefixes = lookup_prefixes(["npm-linux-07", "npm-linux-"])
    answers = {
        frozenset(
            c.id for c in store.candidates(repository="octo/app", version=V1, scopes=[PR, MAIN], prefixes=prefixes)
        )
        for _ in range(15)
    }
    assert len(answers) == 1 and next(iter(answers))
    with store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.autocommit = True  # no transaction: psycopg would forget its prepared statements at a ROLLBACK
        prepared = raw.execute(
            "SELECT name, statement, generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%ix_entry%' OR statement LIKE '%row_number()%'"
        ).fetchall()
        assert len(prepared) == 1, prepared
        name, statement, generic, custom = prepared[0]
        # PostgreSQL's own choice after five custom plans: the generic one (plan_cache_mode = auto).
        assert generic > 0, (generic, custom)
        raw.execute("SET plan_cache_mode = force_generic_plan")
        count = max(int(n) for n in re.findall(r"\$(\d+)", statement))
        # A generic plan does not depend on the values, so NULLs stand for them.
        plan = raw.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({', '.join(['NULL'] * count)})").fetchone()[0]
        raw.execute("RESET plan_cache_mode")
        raw.autocommit = False
    plan = json.loads(plan) if isinstance(plan, str) else plan
    used, scans = [], []

    def walk(node: dict) -> None:
        if node.get("Relation Name") == "cache_entries" and node["Node Type"] == "Seq Scan":
            scans.append(node)
        if "Index Name" in node:
            used.append(node["Index Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    assert not scans, scans
    assert "ix_entry_committed_lookup" in used and set(used) <= {
        "ix_entry_committed_lookup",
        "uq_entry_identity_folded",
        "cache_entries_pkey",
    }, used
