"""The metadata store's contract, run on SQLite and on PostgreSQL (`db_url` is parametrized).

Two MetadataStore objects on one database stand for two replicas: each has its own engine and pool,
so races between them are races between processes as far as the database can tell."""

from __future__ import annotations

import itertools
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text, update
from sqlalchemy.pool import NullPool

import runcache.store.metadata as metadata_module
from runcache.cli import main as cli_main
from runcache.core.entries import COMMITTED, UPLOADING
from runcache.core.errors import AlreadyExists, InvalidRequest, NotFound
from runcache.store import migrations
from runcache.store.metadata import MetadataStore, database_url
from runcache.store.models import Base, Entry
from runcache.store.sessions import WebSession

TTL = timedelta(hours=1)
V = "a" * 64
MAIN = "refs/heads/main"


@pytest.fixture
def stores(db_url: str) -> Iterator[Callable[[], MetadataStore]]:
    """Open replicas (MetadataStore objects) on the test's database; all closed afterwards."""
    opened: list[MetadataStore] = []

    def open_store() -> MetadataStore:
        opened.append(MetadataStore(db_url))
        return opened[-1]

    yield open_store
    for s in opened:
        s.close()


@pytest.fixture
def store(stores: Callable[[], MetadataStore]) -> MetadataStore:
    return stores()


def reserve(
    m: MetadataStore, key: str, *, repository: str = "octo/app", scope: str = MAIN, version: str = V, **kw
) -> int:
    return m.reserve(
        repository=repository,
        scope=scope,
        key=key,
        version=version,
        declared_size=kw.pop("declared_size", 10),
        node=kw.pop("node", "node-1"),
        reservation_ttl=kw.pop("reservation_ttl", TTL),
        owner=kw.pop("owner", "jti-1"),
        **kw,
    ).id


def save(m: MetadataStore, key: str, *, size: int = 10, **kw) -> int:
    entry_id = reserve(m, key, declared_size=size, **kw)
    assert m.claim_commit(entry_id, size=size, sha256="0" * 64)
    m.commit(entry_id)
    return entry_id


def set_times(m: MetadataStore, entry_id: int, **values: datetime) -> None:
    with m.engine.begin() as conn:
        conn.execute(update(Entry).where(Entry.id == entry_id).values(**values))


# --- reservations and identity ----------------------------------------------------------------------


def test_reserve_conflicts_and_repository_names_fold(store: MetadataStore) -> None:
    first = reserve(store, "Linux-Pip-1", repository="Octo/App")
    with pytest.raises(AlreadyExists, match="being created by another job"):
        reserve(store, "linux-pip-1", repository="octo/app")  # one repository, one key, other spellings
    reserve(store, "linux-pip-1", scope="refs/heads/other")  # another scope is another identity
    reserve(store, "linux-pip-1", version="b" * 64)  # so is another version
    assert store.claim_commit(first, size=10, sha256="0" * 64)
    store.commit(first)
    with pytest.raises(AlreadyExists, match=r"Cache already exists.*Key: Linux-Pip-1"):
        reserve(store, "LINUX-PIP-1", repository="OCTO/APP")
    found = store.find_entry(repository="OCTO/app", scope=MAIN, key="linux-PIP-1", version=V)
    assert found is not None and found.id == first and found.key == "Linux-Pip-1" and found.state == COMMITTED


def test_concurrent_reserves_of_one_identity_on_two_replicas_make_one_entry(
    stores: Callable[[], MetadataStore],
) -> None:
    replicas = [stores(), stores()]
    won: list[int] = []
    lost: list[Exception] = []
    barrier = threading.Barrier(8)

    def go(i: int) -> None:
        barrier.wait()
        try:
            won.append(reserve(replicas[i % 2], "race", repository="Octo/App" if i % 3 else "octo/app"))
        except AlreadyExists as exc:
            lost.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7


def test_uploads_in_flight_limit_holds_under_concurrency(stores: Callable[[], MetadataStore]) -> None:
    replicas = [stores(), stores()]
    won: list[int] = []
    refused: list[Exception] = []
    barrier = threading.Barrier(10)

    def go(i: int) -> None:
        barrier.wait()
        try:
            won.append(reserve(replicas[i % 2], f"k{i}", max_uploads=3))
        except Exception as exc:  # TooManyUploads
            refused.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 3, refused
    assert all("upload" in str(e).lower() for e in refused)


def test_claim_commit_has_one_winner_across_replicas(stores: Callable[[], MetadataStore]) -> None:
    replicas = [stores(), stores()]
    entry_id = reserve(replicas[0], "claimed")
    results: list[bool] = []
    barrier = threading.Barrier(12)

    def go(i: int) -> None:
        barrier.wait()
        results.append(replicas[i % 2].claim_commit(entry_id, size=10, sha256=f"{i:064d}"))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 11 + [True]
    committed = replicas[1].commit(entry_id)
    assert committed.state == COMMITTED and committed.size == 10
    with pytest.raises(NotFound):
        replicas[0].commit(entry_id)  # a second commit finds nothing committing


def test_commit_needs_a_claim_and_makes_the_entry_visible(store: MetadataStore) -> None:
    entry_id = reserve(store, "k")
    with pytest.raises(NotFound):
        store.commit(entry_id)
    assert store.list_entries(repository="octo/app") == []
    assert store.candidates(repository="octo/app", version=V, scopes=[MAIN], prefixes=["k"]) == []
    assert store.claim_commit(entry_id, size=5, sha256="f" * 64)
    assert not store.claim_commit(entry_id, size=5, sha256="f" * 64)
    done = store.commit(entry_id)
    assert done.created_at >= done.reserved_at and done.last_accessed_at == done.created_at
    assert [e.id for e in store.list_entries(repository="OCTO/APP")] == [entry_id]
    store.abort(entry_id)  # never removes a committed entry
    assert store.get(entry_id) is not None


# --- lookups ----------------------------------------------------------------------------------------


def test_candidates_rank_newest_prefix_match_per_scope(store: MetadataStore) -> None:
    old = save(store, "npm-linux-1")
    exact = save(store, "npm-linux-2")
    newest = save(store, "NPM-linux-3")  # saved last, within milliseconds: ids break created_at ties
    other_scope = save(store, "npm-linux-0", scope="refs/heads/dev")
    save(store, "npm_linux%", scope=MAIN)  # LIKE wildcards in keys are literal
    save(store, "npm-linux-9", repository="other/repo")
    got = {c.id: c for c in store.candidates(repository="Octo/App", version=V, scopes=[MAIN], prefixes=["npm-linux-2"])}
    assert set(got) == {exact}
    by_prefix = store.candidates(repository="octo/app", version=V, scopes=[MAIN, "refs/heads/dev"], prefixes=["npm-"])
    ids = {c.id for c in by_prefix}
    assert ids == {newest, other_scope}, (ids, old)
    assert store.candidates(repository="octo/app", version=V, scopes=[MAIN], prefixes=["npm_"]) != []
    assert {
        c.key for c in store.candidates(repository="octo/app", version=V, scopes=[MAIN], prefixes=["npm%"])
    } == set()
    entries = [e for e in store.list_entries(repository="octo/app", key="NPM-") if e.scope == MAIN]
    assert [e.id for e in entries] == [newest, exact, old]  # newest first
    assert all(a.created_at >= b.created_at for a, b in itertools.pairwise(entries))


def test_touch_records_use(store: MetadataStore) -> None:
    entry_id = save(store, "k")
    past = store.now() - timedelta(days=3)
    set_times(store, entry_id, last_accessed_at=past)
    assert store.touch(entry_id)
    entry = store.get(entry_id)
    assert entry is not None and entry.last_accessed_at > past + timedelta(days=2)


def test_management_queries(store: MetadataStore) -> None:
    a = save(store, "build-a", size=100)
    b = save(store, "build-b", size=300, scope="refs/pull/7/merge")
    c = save(store, "BUILD-a", size=50, version="c" * 64)
    save(store, "x", size=7, repository="Octo/Other")
    save(store, "y", size=9, repository="elsewhere/repo")
    reserve(store, "in-flight")
    total, page = store.query_entries(repository="octo/app", sort="size_in_bytes", direction="desc", limit=2)
    assert total == 3 and [e.id for e in page] == [b, a]
    total, page = store.query_entries(repository="octo/app", key_prefix="build-A", ref=MAIN)
    assert total == 2 and {e.id for e in page} == {a, c}
    assert [e.id for e in store.entries_with_key(repository="octo/app", key="build-a")] == [a, c]
    assert store.refs("Octo/App") == [MAIN, "refs/pull/7/merge"]
    assert store.usage_totals(repository="octo/APP") == (3, 450)
    assert store.usage_totals(owner="OCTO") == (4, 457)
    assert store.usage_totals() == (5, 466)
    count, rows = store.usage_by_repository(owner="octo")
    assert count == 2 and rows[0][1:] == (3, 450) and rows[1] == ("Octo/Other", 1, 7)
    assert len(store.usages("octo/app")) == 3
    total, uploads = store.query_uploads(repository="octo/app")
    assert total == 1 and uploads[0].state == UPLOADING
    gone = store.delete_committed([a, b, uploads[0].id])
    assert {e.id for e in gone} == {a, b}
    assert store.get(uploads[0].id) is not None


def test_set_policy_race_on_a_new_repository(stores: Callable[[], MetadataStore]) -> None:
    replicas = [stores(), stores()]
    errors: list[Exception] = []
    barrier = threading.Barrier(10)

    def go(i: int) -> None:
        barrier.wait()
        try:
            if i % 2:
                replicas[i % 2].set_policy("Octo/New", max_cache_size_gb=5)
            else:
                replicas[i % 2].set_policy("octo/new", max_cache_retention_days=3)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert replicas[0].policy("OCTO/NEW") == (5, 3)
    assert replicas[1].set_policy("octo/new", max_cache_size_gb=7) == (7, 3)  # others unchanged
    assert replicas[0].retention_overrides() == {"octo/new": 3}


def test_expiry_uses_the_database_clock(store: MetadataStore) -> None:
    stuck = reserve(store, "stuck")
    assert store.expired_uploads(TTL) == []
    set_times(store, stuck, reserved_at=store.now() - timedelta(hours=2))
    assert [e.id for e in store.expired_uploads(TTL)] == [stuck]
    assert [e.id for e in store.expired_uploads(store.now() - TTL)] == [stuck]  # the datetime form too
    again = reserve(store, "stuck")  # an expired reservation frees its key
    assert again != stuck and store.get(stuck) is None
    old = save(store, "old")
    set_times(store, old, last_accessed_at=store.now() - timedelta(days=8))
    assert [u.id for u in store.stale(timedelta(days=7))] == [old]
    assert store.stale(timedelta(days=9)) == []


def test_times_come_from_the_database_not_this_process(store: MetadataStore, monkeypatch: pytest.MonkeyPatch) -> None:
    far = datetime(2100, 1, 1)
    monkeypatch.setattr(metadata_module, "utcnow", lambda: far)  # a replica with a wild clock
    entry_id = save(store, "k")
    store.touch(entry_id)
    store.set_policy("octo/app", max_cache_size_gb=1)
    entry = store.get(entry_id)
    assert entry is not None
    real = datetime.now(UTC).replace(tzinfo=None)
    for t in (entry.reserved_at, entry.created_at, entry.last_accessed_at, store.now()):
        assert abs(t - real) < timedelta(minutes=1), t
    with store.engine.connect() as conn:
        updated = conn.execute(text("SELECT updated_at FROM repository_policies")).scalar_one()
    if isinstance(updated, str):  # SQLite's raw text
        updated = datetime.fromisoformat(updated)
    assert abs(updated - real) < timedelta(minutes=1)


def test_database_times_have_sub_second_precision(store: MetadataStore) -> None:
    ids = [save(store, f"k{i}") for i in range(5)]
    entries = [store.get(i) for i in ids]
    assert any(e is not None and e.created_at.microsecond != 0 for e in entries)
    created = [e.created_at for e in entries if e is not None]
    assert created == sorted(created)


def test_postgresql_times_are_utc_whatever_the_session_time_zone(pg_url: str) -> None:
    tokyo = MetadataStore(pg_url + "?options=-c%20timezone%3DAsia/Tokyo")
    try:
        entry = tokyo.get(save(tokyo, "k"))
        assert entry is not None
        assert abs(entry.created_at - datetime.now(UTC).replace(tzinfo=None)) < timedelta(minutes=1)
    finally:
        tokyo.close()


# --- column limits ----------------------------------------------------------------------------------

OVERSIZE = {
    "repository": {"repository": "o/" + "r" * 255},
    "scope": {"scope": "refs/heads/" + "s" * 502},
    "key": {"key": "k" * 513},
    "folded key": {"key": "İ" * 300},  # 300 characters, 600 once lower-cased: key_folded overflows
    "version": {"version": "v" * 513},
    "node": {"node": "n" * 129},
    "owner": {"owner": "j" * 65},
    "NUL in key": {"key": "a\x00b"},
}


@pytest.mark.parametrize("field", list(OVERSIZE))
def test_oversize_values_are_invalid_requests_before_the_database(store: MetadataStore, field: str) -> None:
    values = {"repository": "octo/app", "scope": MAIN, "key": "k", "version": V, "node": "n", "owner": "j"}
    values.update(OVERSIZE[field])
    with pytest.raises(InvalidRequest):
        store.reserve(declared_size=1, reservation_ttl=TTL, **values)
    lookup = {k: values[k] for k in ("repository", "scope", "key", "version")}
    if field in ("node", "owner"):
        return
    with pytest.raises(InvalidRequest):
        store.find_entry(**lookup)
    with pytest.raises(InvalidRequest):
        store.candidates(
            repository=lookup["repository"],
            version=lookup["version"],
            scopes=[lookup["scope"]],
            prefixes=[lookup["key"]],
        )
    repo = lookup["repository"]
    if field == "repository":
        for call in (
            lambda: store.policy(repo),
            lambda: store.set_policy(repo, max_cache_size_gb=1),
            lambda: store.query_entries(repository=repo),
            lambda: store.query_uploads(repository=repo),
            lambda: store.usage_totals(repository=repo),
            lambda: store.usage_by_repository(owner=repo),
            lambda: store.refs(repo),
            lambda: store.usages(repo),
        ):
            with pytest.raises(InvalidRequest):
                call()
    if field in ("key", "folded key", "NUL in key"):
        for call in (
            lambda: store.query_entries(repository="octo/app", key_prefix=lookup["key"]),
            lambda: store.list_entries(repository="octo/app", key=lookup["key"]),
            lambda: store.entries_with_key(repository="octo/app", key=lookup["key"]),
            lambda: store.query_uploads(repository="octo/app", key=lookup["key"]),
            lambda: store.query_uploads(repository="octo/app", key_prefix=lookup["key"]),
        ):
            with pytest.raises(InvalidRequest):
                call()
    if field == "scope":
        with pytest.raises(InvalidRequest):
            store.query_entries(repository="octo/app", ref=lookup["scope"])


def test_values_at_the_column_limits_are_stored(store: MetadataStore) -> None:
    repository = "o/" + "r" * 254
    entry = store.reserve(
        repository=repository,
        scope="refs/heads/" + "s" * 501,
        key="k" * 512,
        version="v" * 512,
        declared_size=1,
        node="n" * 128,
        reservation_ttl=TTL,
        owner="j" * 64,
    )
    assert len(entry.key) == 512 and store.get(entry.id) is not None
    assert store.set_policy(repository.upper(), max_cache_size_gb=2) == (2, None)


# --- migrations -------------------------------------------------------------------------------------


def _schema_diff(engine: Engine) -> list:
    """Alembic's comparison of the database with the models. It cannot reflect SQLite's expression
    indexes (it warns and skips them); `_index_sql` checks those."""
    with engine.connect() as conn, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def _index_sql(engine: Engine) -> dict[str, str]:
    """Every index as the database itself describes it (functional ones included)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type IN ('index', 'table')"))
        else:
            rows = conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"))
        return {r[0]: " ".join((r[1] or "").split()) for r in rows if "alembic_version" not in r[0]}


def _columns(engine: Engine) -> dict[str, list[tuple]]:
    insp = inspect(engine)
    return {
        t: [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)]
        for t in sorted(insp.get_table_names())
        if t != "alembic_version"
    }


def test_migrations_create_exactly_the_models_schema(db_url: str, tmp_path: Path, new_pg_database) -> None:
    store = MetadataStore(db_url)
    try:
        with store.engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()
        reference_url = f"sqlite:///{tmp_path / 'create_all.db'}" if db_url.startswith("sqlite") else new_pg_database()
        reference = create_engine(database_url(reference_url))
        Base.metadata.create_all(reference)  # what the server made before migrations existed
        try:
            assert _index_sql(store.engine) == _index_sql(reference)
            assert _columns(store.engine) == _columns(reference)
        finally:
            reference.dispose()
        assert "uq_entry_identity_folded" in _index_sql(store.engine)
        assert _schema_diff(store.engine) == []
    finally:
        store.close()


def test_replicas_starting_at_once_migrate_once(db_url: str) -> None:
    opened: list[MetadataStore] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            opened.append(MetadataStore(db_url))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(opened) == 4
        with opened[0].engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [migrations.head()]
    finally:
        for s in opened:
            s.close()


def test_db_upgrade_command_then_a_server_start_without_auto_migrate(
    pg_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = pg_url.replace("postgresql+psycopg://", "postgres://")  # as operators write it
    monkeypatch.setenv("RUNCACHE_AUTO_MIGRATE", "0")
    with pytest.raises(migrations.SchemaNotReady, match="runcache db upgrade"):
        MetadataStore(plain)
    assert cli_main(["db", "current", "--database-url", plain]) == 0
    assert "empty" in capsys.readouterr().out
    assert cli_main(["db", "upgrade", "--database-url", plain]) == 0
    assert f"upgraded from nothing to {migrations.head()}" in capsys.readouterr().out
    assert cli_main(["db", "upgrade", "--database-url", plain]) == 0
    assert f"already at {migrations.head()}" in capsys.readouterr().out
    store = MetadataStore(plain)  # RUNCACHE_AUTO_MIGRATE=0 and the schema is at head: starts
    try:
        save(store, "k")
    finally:
        store.close()


def test_a_server_refuses_a_schema_newer_than_it_knows(db_url: str) -> None:
    MetadataStore(db_url).close()
    engine = create_engine(database_url(db_url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(migrations.SchemaNotReady, match=r"9999.*newer runcache"):
        MetadataStore(db_url)


def _legacy_database(url: str, *, old: bool) -> Engine:
    """A database as the server made it before migrations: `create_all` of today's models, or (old) one
    from before uploads had owners, repository names were folded and the web page had sessions."""
    engine = create_engine(database_url(url))
    Base.metadata.create_all(engine)
    if old:
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX uq_entry_identity_folded"))
            conn.execute(text("DROP INDEX ix_entry_repository_folded"))
            conn.execute(text("ALTER TABLE cache_entries DROP COLUMN owner"))
            conn.execute(text(f"DROP TABLE {WebSession.__tablename__}"))
            conn.execute(text("DROP TABLE repository_policies"))
    now = datetime.now(UTC).replace(tzinfo=None)
    row = {"scope": MAIN, "version": V, "state": COMMITTED, "size": 3, "sha256": "0" * 64, "node": "n"}
    times = {"reserved_at": now, "created_at": now, "last_accessed_at": now, "declared_size": 3}
    with engine.begin() as conn:
        conn.execute(
            Entry.__table__.insert().values(repository="Octo/App", key="Kept-1", key_folded="kept-1", **row, **times)
        )
        conn.execute(
            Entry.__table__.insert().values(repository="octo/app", key="kept-2", key_folded="kept-2", **row, **times)
        )
    return engine


@pytest.mark.parametrize("old", [False, True], ids=["today", "older"])
def test_a_database_made_before_migrations_is_adopted(db_url: str, old: bool) -> None:
    _legacy_database(db_url, old=old).dispose()
    store = MetadataStore(db_url)
    try:
        with store.engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()
        assert sorted(e.key for e in store.list_entries(repository="OCTO/APP")) == ["Kept-1", "kept-2"]
        with pytest.raises(AlreadyExists):
            reserve(store, "KEPT-1")  # the folded identity index is there
        new = save(store, "new")
        assert new > max(e.id for e in store.list_entries(repository="octo/app") if e.key != "new")
        store.set_policy("octo/app", max_cache_size_gb=2)
        assert _schema_diff(store.engine) == []
        indexes = _index_sql(store.engine)
        for name in ("uq_entry_identity_folded", "ix_entry_repository_folded"):  # lower((repository)::text) on PG
            assert re.search(r"lower\(\(?repository\)?", indexes[name], re.IGNORECASE), indexes[name]
    finally:
        store.close()
    MetadataStore(db_url).close()  # a second start finds the schema at head


def test_adoption_keeps_serving_when_old_rows_collide_by_repository_case(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = _legacy_database(url, old=True)
    with engine.begin() as conn:  # saved before names were folded: two spellings, one identity
        conn.execute(text("UPDATE cache_entries SET key = 'kept-1', key_folded = 'kept-1'"))
    engine.dispose()
    store = MetadataStore(url)
    try:
        with store.engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()
        assert len(store.list_entries(repository="octo/app")) == 2
    finally:
        store.close()


def test_an_unreachable_database_is_one_line_without_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert cli_main(["db", "upgrade", "--database-url", f"postgres://u:hunter2@127.0.0.1:{port}/x"]) == 2
    err = capsys.readouterr().err
    assert "cannot open the metadata database postgresql+psycopg://u:***@127.0.0.1" in err
    assert "hunter2" not in err and "Traceback" not in err
    with pytest.raises(ValueError, match="not mysql"):
        MetadataStore("mysql://u@localhost/x")


# --- connections the database dropped -----------------------------------------------------------------


def _drop_connections(m: MetadataStore) -> None:
    """What a database restart or failover does to a replica's pool: every session of the database ends
    (ended from a connection of its own, so none of the pool's survives)."""
    admin = create_engine(m.engine.url, poolclass=NullPool)
    try:
        with admin.begin() as conn:
            ended = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert ended >= 1
    finally:
        admin.dispose()


def test_dropped_connections_cost_no_request_and_busy_ones_no_ping(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metadata_module, "PING_AFTER_IDLE_SECONDS", 0.3)
    m = MetadataStore(pg_url)
    try:
        entry_id = save(m, "linux-npm-1")
        pings: list[int] = []
        real_ping = m.engine.dialect.do_ping
        monkeypatch.setattr(m.engine.dialect, "do_ping", lambda conn: pings.append(1) or real_ping(conn))

        def lookup() -> list[int]:
            found = m.candidates(repository="octo/app", version=V, scopes=[MAIN], prefixes=["linux-npm-1"])
            return [c.id for c in found]

        # Busy: a connection back in the pool a moment ago is handed out again without a round trip.
        assert lookup() == [entry_id]
        pings.clear()
        for _ in range(5):
            assert lookup() == [entry_id]
        assert pings == []

        # Dropped while in the pool, used again at once (no ping): the lookup retries on a new connection.
        _drop_connections(m)
        assert lookup() == [entry_id]

        # Dropped, then idle past the threshold: the ping finds it dead and the pool opens another, so a
        # write (which is not retried) succeeds too.
        _drop_connections(m)
        time.sleep(0.5)
        pings.clear()
        second = reserve(m, "linux-npm-2")
        assert pings, "an idle connection was handed out without a ping"
        assert m.get(second) is not None
    finally:
        m.close()
