"""Metadata store: entries and reservations in a SQL database (SQLite embedded, PostgreSQL scale-out).

Every method is one unit of work in its own session; the unique constraint on the entry identity is
what makes reservations race-free across threads, processes and replicas.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from sqlalchemy import (
    DateTime,
    Dialect,
    Engine,
    Interval,
    String,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    literal,
    literal_column,
    select,
    true,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.orm import sessionmaker
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CompoundSelect

from runcache.core.entries import COMMITTED, COMMITTING, UPLOADING, EntryInfo
from runcache.core.errors import AlreadyExists, NotFound
from runcache.core.eviction import Usage
from runcache.core.keys import (
    check_key_text,
    check_node,
    check_owner_name,
    check_repository,
    check_scope,
    check_upload_owner,
    check_version_text,
    fold,
    fold_repository,
)
from runcache.core.limits import check_uploads_in_flight
from runcache.core.matching import Candidate
from runcache.store import migrations
from runcache.store.models import Entry, RepositoryPolicy

log = logging.getLogger("runcache.metadata")


def utcnow() -> datetime:
    """This process's clock, naive UTC. The store writes and compares the database's time instead
    (`MetadataStore.now`): replicas' clocks differ, the database's is one."""
    return datetime.now(UTC).replace(tzinfo=None)


def database_url(url: str) -> str:
    """PostgreSQL URLs as operators write them (`postgres://`, `postgresql://`) use psycopg 3, the one
    driver runcache ships; any other URL is left as given."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def auto_migrate_from_env(env: dict[str, str] | None = None) -> bool:
    """RUNCACHE_AUTO_MIGRATE=0 (or false/no/off): the server never migrates, the operator runs
    `runcache db upgrade`. Default on, so the embedded SQLite start stays two commands."""
    raw = (os.environ if env is None else env).get("RUNCACHE_AUTO_MIGRATE", "").strip().lower()
    return raw not in ("0", "false", "no", "off")


def _db_now(dialect: str, minus: timedelta | None = None) -> ColumnElement[datetime]:
    """The database's current time as naive UTC, optionally `minus` a duration, as a SQL expression.

    PostgreSQL: statement_timestamp() in UTC (microseconds); unlike now(), the transaction's start, it
    does not lag behind while a statement waits for a lock (a reserve queued behind others).
    SQLite: CURRENT_TIMESTAMP has whole seconds only, too coarse to order entries by creation, so
    strftime('%f') (milliseconds) padded to the six fraction digits SQLAlchemy writes, which keeps
    stored values comparable as the strings SQLite compares."""
    if dialect == "sqlite":
        args = ["%Y-%m-%d %H:%M:%f", "now"]
        if minus:
            args.append(f"{-minus.total_seconds():+.6f} seconds")
        # type_coerce, not CAST: SQLite's CAST(... AS DATETIME) would turn the text into the number 2026.
        return type_coerce(func.strftime(*args).concat("000"), DateTime())
    now = func.timezone("UTC", func.statement_timestamp())
    if minus:
        now = now - literal(minus, Interval())
    return type_coerce(now, DateTime())


def _info(e: Entry) -> EntryInfo:
    return EntryInfo(
        e.id,
        e.repository,
        e.scope,
        e.key,
        e.version,
        e.state,
        e.declared_size,
        e.size,
        e.sha256,
        e.created_at,
        e.last_accessed_at,
        e.reserved_at,
        e.owner,
        e.node,
    )


# Advisory-lock class ids (the first int of the two-int form), apart from the reserve lock's.
_HOUSEKEEPING_LOCK_CLASS = 0x52430002


# Requests run on a thread pool of 40: SQLAlchemy's default of 5 (+10 overflow) made concurrent lookups
# wait for, or open and close, connections (bench/lookup.py at 16 clients).
DEFAULT_POOL_SIZE = 20


class MetadataStore:
    def __init__(self, url: str, *, auto_migrate: bool | None = None, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        """Open the metadata database and make sure its schema is at head (store/migrations).

        auto_migrate: migrate at start if needed (default: RUNCACHE_AUTO_MIGRATE, on unless 0). Off, a
        database that is not at head is refused with a message naming `runcache db upgrade`.
        pool_size: connections kept open to PostgreSQL (SQLite opens one per thread as needed)."""
        self.engine = open_engine(url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        try:
            with unreachable_as_error(self.engine):
                migrations.prepare(
                    self.engine, auto_migrate=auto_migrate_from_env() if auto_migrate is None else auto_migrate
                )
        except BaseException:
            self.engine.dispose()
            raise
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def _now(self, minus: timedelta | None = None) -> ColumnElement[datetime]:
        return _db_now(self.dialect, minus)

    def now(self) -> datetime:
        """The database's clock (naive UTC): what reserved_at, created_at and last_accessed_at are
        written with, so callers comparing against stored times should use it, not their own clock."""
        with self.engine.connect() as conn:
            return conn.execute(select(self._now())).scalar_one()

    def close(self) -> None:
        self.engine.dispose()

    @property
    def shared(self) -> bool:
        """True when several server processes may use this database at once (PostgreSQL); SQLite is the
        embedded default, one server per data directory."""
        return self.dialect != "sqlite"

    @contextlib.contextmanager
    def housekeeping_turn(self, name: str) -> Iterator[bool]:
        """Whether this process should run a global housekeeping pass now: on PostgreSQL one replica at a
        time holds a session-level advisory lock for the pass (the others skip it, they will get another
        turn); on SQLite there is only one server, so always."""
        if self.dialect != "postgresql":
            yield True
            return
        with self.engine.connect() as conn:
            key = func.hashtext(f"runcache:housekeeping:{name}")
            got = bool(conn.execute(select(func.pg_try_advisory_lock(_HOUSEKEEPING_LOCK_CLASS, key))).scalar())
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(select(func.pg_advisory_unlock(_HOUSEKEEPING_LOCK_CLASS, key)))
                    conn.commit()

    def reserve(
        self,
        *,
        repository: str,
        scope: str,
        key: str,
        version: str,
        declared_size: int | None,
        node: str,
        reservation_ttl: timedelta,
        owner: str | None = None,
        max_uploads: int | None = None,
    ) -> EntryInfo:
        check_repository(repository)
        check_scope(scope)
        check_key_text(key)
        check_version_text(version)
        check_node(node)
        check_upload_owner(owner)
        identity = (
            *_in_repository(repository),
            Entry.scope == scope,
            Entry.key_folded == fold(key),
            Entry.version == version,
        )
        try:
            # One transaction: the count of uploads in flight and the insert it allows are one decision.
            with self._session.begin() as s:
                if self.dialect == "postgresql" and max_uploads is not None:
                    # Reserves of one repository take turns (across replicas) so that concurrent ones
                    # cannot all count below the limit and all insert; released at commit.
                    s.execute(
                        select(
                            func.pg_advisory_xact_lock(_RESERVE_LOCK_CLASS, func.hashtext(fold_repository(repository)))
                        )
                    )
                # An abandoned reservation frees its key once it has expired. On SQLite this first write
                # also takes the write lock, which serialises reserves there.
                s.execute(
                    delete(Entry).where(
                        *identity, Entry.state == UPLOADING, Entry.reserved_at < self._now(reservation_ttl)
                    )
                )
                if max_uploads is not None:
                    in_flight = s.scalar(
                        select(func.count())
                        .select_from(Entry)
                        .where(*_in_repository(repository), Entry.state.in_([UPLOADING, COMMITTING]))
                    )
                    check_uploads_in_flight(in_flight or 0, max_uploads, repository)
                now = self._now()
                entry = Entry(
                    repository=repository,
                    scope=scope,
                    key=key,
                    key_folded=fold(key),
                    version=version,
                    state=UPLOADING,
                    declared_size=declared_size,
                    node=node,
                    owner=owner,
                    reserved_at=now,
                    created_at=now,
                    last_accessed_at=now,
                )
                s.add(entry)
                s.flush()
                s.refresh(entry)  # the times the database wrote
                info = _info(entry)
        except IntegrityError:
            with self._session() as s:
                existing = s.scalars(select(Entry).where(*identity)).first()
            taken = existing.key if existing is not None else key
            if existing is not None and existing.state != COMMITTED:
                raise AlreadyExists(
                    f"Cache is being created by another job. Scope: {scope}, Key: {taken}, Version: {version}"
                ) from None
            raise AlreadyExists(f"Cache already exists. Scope: {scope}, Key: {taken}, Version: {version}") from None
        return info

    def get(self, entry_id: int) -> EntryInfo | None:
        with self._session() as s:
            e = s.get(Entry, entry_id)
            return _info(e) if e else None

    def find_entry(self, *, repository: str, scope: str, key: str, version: str) -> EntryInfo | None:
        """The one entry (in any state) with this identity: keys are immutable, so there is at most one."""
        check_repository(repository)
        check_scope(scope)
        check_key_text(key)
        check_version_text(version)
        with self._session() as s:
            e = s.scalars(
                select(Entry).where(
                    *_in_repository(repository),
                    Entry.scope == scope,
                    Entry.key_folded == fold(key),
                    Entry.version == version,
                )
            ).first()
            return _info(e) if e else None

    def claim_commit(self, entry_id: int, *, size: int, sha256: str | None) -> bool:
        """Move an upload to `committing` (still invisible); False when another commit claimed it first.

        The claim is what makes a commit single-winner across threads, processes and replicas: only
        the claimer moves bytes into the blob store. `sha256` may be None when it is only known once
        the bytes are in the blob store (then `commit` records it)."""
        with self._session.begin() as s:
            result = s.execute(
                update(Entry)
                .where(Entry.id == entry_id, Entry.state == UPLOADING)
                # reserved_at restarts: a commit that dies after its claim expires one TTL later.
                .values(state=COMMITTING, size=size, sha256=sha256, reserved_at=self._now())
            )
            return result.rowcount == 1

    def commit(self, entry_id: int, *, sha256: str | None = None) -> EntryInfo:
        """A claimed upload whose blob is in place becomes a visible entry (with its SHA-256, if the claim
        did not know it yet)."""
        with self._session.begin() as s:
            now = self._now()
            values: dict[str, object] = {"state": COMMITTED, "created_at": now, "last_accessed_at": now}
            if sha256 is not None:
                values["sha256"] = sha256
            flipped = s.execute(update(Entry).where(Entry.id == entry_id, Entry.state == COMMITTING).values(**values))
            if flipped.rowcount != 1:
                raise NotFound(f"no upload being committed with id {entry_id}")
            e = s.get(Entry, entry_id, populate_existing=True)
            assert e is not None  # the update above holds the row until this transaction ends
            return _info(e)

    def abort(self, entry_id: int) -> None:
        """Drop an unfinished upload (uploading, or a commit that died before it finished)."""
        with self._session.begin() as s:
            s.execute(delete(Entry).where(Entry.id == entry_id, Entry.state.in_([UPLOADING, COMMITTING])))

    def candidates(
        self, *, repository: str, version: str, scopes: Sequence[str], prefixes: Sequence[str]
    ) -> list[Candidate]:
        """What the lookup rule can pick from: per scope and prefix, the exact entry (at most one: keys
        are unique per scope and version) and the newest entry starting with it. Ranking in SQL keeps
        a broad restore key over thousands of entries one indexed scan, not thousands of rows."""
        if not scopes or not prefixes:
            return []
        check_repository(repository)
        check_version_text(version)
        for scope in scopes:
            check_scope(scope)
        for prefix in prefixes:
            check_key_text(prefix)
        ends = [_prefix_end(p) for p in prefixes]
        lookup = _lookup_statement(self.engine.dialect, tuple(end is not None for end in ends), len(scopes))
        values: dict[str, object] = {"repository": fold_repository(repository), "version": version}
        values |= {f"s{i}": scope for i, scope in enumerate(scopes)}
        values |= {f"k{i}": prefix for i, prefix in enumerate(prefixes)}
        values |= {f"p{i}": prefix for i, prefix in enumerate(prefixes)}
        values |= {f"e{i}": end for i, end in enumerate(ends) if end is not None}
        params = tuple(values[name] for name in lookup.names) if lookup.names is not None else values
        seen: dict[int, Candidate] = {}
        for row in self._read(lookup.sql, params):
            created = lookup.created_at(row[4]) if lookup.created_at else row[4]
            seen.setdefault(row[0], Candidate(row[0], row[1], row[2], row[3], created))
        return list(seen.values())

    def _read(self, sql: str, params: tuple[object, ...] | dict[str, object]) -> list[tuple]:
        """One read-only statement in the driver's own SQL, on a pooled DBAPI connection: the lookup's path.

        Not through SQLAlchemy's Connection and result objects: they cost as much Python time again as the
        driver and the database together (measured 0.31-0.53 ms against 0.15-0.24 ms per lookup), and 16
        concurrent lookups share one interpreter. In autocommit on PostgreSQL: one read needs no
        transaction, and without BEGIN/ROLLBACK around it psycopg keeps the statement it prepared on the
        connection (it forgets them all at a ROLLBACK), so the database runs a generic plan.

        A connection the database dropped since its last use (a restart, a failover) fails as a disconnect:
        the pool is then replaced (its other connections are as dead) and the read runs once more. Safe
        because it is a read; the pool's checkout pings connections that sat idle (`_ping_when_idle`)."""
        dialect = self.engine.dialect
        for attempt in (1, 2):
            raw = self.engine.raw_connection()
            try:
                driver = raw.driver_connection
                try:
                    if self.dialect == "postgresql":
                        driver.autocommit = True
                    cursor = raw.cursor()
                    try:
                        cursor.execute(sql, params)
                        return cursor.fetchall()
                    finally:
                        cursor.close()
                finally:
                    if self.dialect == "postgresql" and not driver.closed:
                        driver.autocommit = False  # as the pool's other users expect it
            except dialect.loaded_dbapi.Error as exc:
                if attempt == 2 or not dialect.is_disconnect(exc, driver, None):
                    raise
                log.info("metadata database connection lost, retrying the read on a new one: %s", exc)
                raw.invalidate(exc)
                self.engine.dispose(close=False)
            finally:
                raw.close()
        raise AssertionError("unreachable")

    def touch(self, entry_id: int) -> bool:
        """Record a use for LRU and retention. Best effort: a database that cannot take the write
        (a full disk) must not turn a restore into a failure; False tells the caller it did not land."""
        try:
            with self._session.begin() as s:
                s.execute(update(Entry).where(Entry.id == entry_id).values(last_accessed_at=self._now()))
        except OperationalError as exc:
            log.warning("last access of entry %s not recorded: %s", entry_id, exc.orig)
            return False
        return True

    def list_entries(self, *, repository: str, key: str | None = None) -> list[EntryInfo]:
        check_repository(repository)
        if key is not None:
            check_key_text(key, what="Key prefix")
        with self._session() as s:
            q = select(Entry).where(*_in_repository(repository), Entry.state == COMMITTED)
            if key is not None:
                q = q.where(Entry.key_folded.startswith(fold(key), autoescape=True))
            return [_info(e) for e in s.scalars(q.order_by(Entry.created_at.desc(), Entry.id.desc())).all()]

    def expired_uploads(self, older_than: datetime | timedelta) -> list[EntryInfo]:
        """Unfinished uploads reserved (or claimed) before a time, or longer ago than a duration by the
        database's clock (the duration form is the one to use: one clock for every replica)."""
        cutoff = self._now(older_than) if isinstance(older_than, timedelta) else older_than
        with self._session() as s:
            rows = s.scalars(select(Entry).where(Entry.state.in_([UPLOADING, COMMITTING]), Entry.reserved_at < cutoff))
            return [_info(e) for e in rows.all()]

    def uploads_on_node(self, node: str) -> list[EntryInfo]:
        """Unfinished uploads staged on this node, including commits that had claimed but not finished."""
        with self._session() as s:
            rows = s.scalars(select(Entry).where(Entry.state.in_([UPLOADING, COMMITTING]), Entry.node == node))
            return [_info(e) for e in rows.all()]

    def referenced_ids(self, ids: Sequence[int]) -> set[int]:
        """Those of `ids` that a row still points at, in any state (a commit in flight included)."""
        if not ids:
            return set()
        with self._session() as s:
            return set(s.scalars(select(Entry.id).where(Entry.id.in_(list(ids)))))

    # --- management ------------------------------------------------------------------------------
    def query_entries(
        self,
        *,
        repository: str,
        key_prefix: str | None = None,
        ref: str | None = None,
        sort: str = "last_accessed_at",
        direction: str = "desc",
        limit: int | None = None,
        offset: int = 0,
        created_before: datetime | None = None,
    ) -> tuple[int, list[EntryInfo]]:
        """Committed entries of a repository, filtered and sorted: (total matching, this page)."""
        check_repository(repository)
        if key_prefix:
            check_key_text(key_prefix, what="Key prefix")
        if ref:
            check_scope(ref)
        # The literal predicate lets the partial ix_entry_committed_<sort> indexes serve the page.
        where = [*_in_repository(repository), _COMMITTED_ONLY]
        if key_prefix:
            where.append(Entry.key_folded.startswith(fold(key_prefix), autoescape=True))
        if ref:
            where.append(Entry.scope == ref)
        if created_before is not None:
            where.append(Entry.created_at <= created_before)
        column = {"created_at": Entry.created_at, "last_accessed_at": Entry.last_accessed_at}.get(sort, Entry.size)
        order = [column.asc(), Entry.id.asc()] if direction == "asc" else [column.desc(), Entry.id.desc()]
        if limit is None:
            # The page's ids first, then its rows: the ids come from the sort index alone (PostgreSQL: an
            # index-only scan), so a deep OFFSET skips index entries, not table rows.
            ids = select(Entry.id).where(*where).order_by(*order).offset(offset).subquery()
            with self._session() as s:
                total = s.scalar(select(func.count(Entry.id)).where(*where)) or 0
                q = select(Entry).join(ids, Entry.id == ids.c.id).order_by(*order)
                return total, [_info(e) for e in s.scalars(q).all()]
        stmt = _page_statement(self.dialect, where, order, _reverse(order), limit, offset)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        total = rows[0][0]
        page = [EntryInfo(*r[1:]) for r in rows if r[1] is not None]
        # The page's first row's position in the order (the same test as the statement's gate): a
        # backwards walk ends where the page ends or at the last row, so it may begin before the page.
        before = total - offset - limit
        first = offset if before >= offset else total - max(before, 0) - len(page)
        return total, page[max(0, offset - first) :]

    def entries_with_key(self, *, repository: str, key: str, ref: str | None = None) -> list[EntryInfo]:
        """Committed entries whose key is exactly `key` (compared as lookups do), in any version."""
        check_repository(repository)
        check_key_text(key)
        if ref:
            check_scope(ref)
        where = [*_in_repository(repository), Entry.state == COMMITTED, Entry.key_folded == fold(key)]
        if ref:
            where.append(Entry.scope == ref)
        with self._session() as s:
            rows = s.scalars(select(Entry).where(*where).order_by(Entry.id)).all()
            return [_info(e) for e in rows]

    def delete_committed(self, ids: Sequence[int]) -> list[EntryInfo]:
        """Delete these committed entries in one transaction; returns the ones that were there."""
        if not ids:
            return []
        with self._session.begin() as s:
            rows = s.scalars(
                select(Entry).where(Entry.id.in_(list(ids)), Entry.state == COMMITTED).order_by(Entry.id)
            ).all()
            gone = [_info(e) for e in rows]
            if gone:
                s.execute(delete(Entry).where(Entry.id.in_([e.id for e in gone]), Entry.state == COMMITTED))
            return gone

    def refs(self, repository: str) -> list[str]:
        check_repository(repository)
        with self._session() as s:
            rows = s.scalars(
                select(Entry.scope).where(*_in_repository(repository), Entry.state == COMMITTED).distinct()
            )
            return sorted(rows.all())

    def usages(self, repository: str) -> list[Usage]:
        check_repository(repository)
        with self._session() as s:
            rows = s.execute(
                select(Entry.id, Entry.repository, Entry.size, Entry.created_at, Entry.last_accessed_at).where(
                    *_in_repository(repository), Entry.state == COMMITTED
                )
            ).all()
            return [Usage(r[0], r[1], r[2] or 0, r[3], r[4]) for r in rows]

    def stale(self, accessed_before: datetime | timedelta) -> list[Usage]:
        """Committed entries of every repository last accessed before the given time, or longer ago
        than the given duration by the database's clock."""
        cutoff = self._now(accessed_before) if isinstance(accessed_before, timedelta) else accessed_before
        with self._session() as s:
            rows = s.execute(
                select(Entry.id, Entry.repository, Entry.size, Entry.created_at, Entry.last_accessed_at).where(
                    Entry.state == COMMITTED, Entry.last_accessed_at < cutoff
                )
            ).all()
            return [Usage(r[0], r[1], r[2] or 0, r[3], r[4]) for r in rows]

    def usage_by_repository(
        self, *, owner: str | None = None, limit: int | None = None, offset: int = 0
    ) -> tuple[int, list[tuple[str, int, int]]]:
        """(number of repositories, [(full_name, entry count, bytes)]) of committed entries, largest first."""
        if owner is not None:
            check_owner_name(owner)
        where = [Entry.state == COMMITTED]
        if owner is not None:
            where.append(_owned_by(owner))
        folded = func.lower(Entry.repository)
        size = func.coalesce(func.sum(Entry.size), 0)
        with self._session() as s:
            total = s.scalar(select(func.count(folded.distinct())).where(*where)) or 0
            q = (
                select(func.min(Entry.repository), func.count(), size)
                .where(*where)
                .group_by(folded)
                .order_by(size.desc(), folded.asc())
                .offset(offset)
            )
            if limit is not None:
                q = q.limit(limit)
            return total, [(r[0], int(r[1]), int(r[2])) for r in s.execute(q).all()]

    def usage_totals(self, *, repository: str | None = None, owner: str | None = None) -> tuple[int, int]:
        """(entry count, bytes) of committed entries of one repository, one owner, or everything."""
        if repository is not None:
            check_repository(repository)
        if owner is not None:
            check_owner_name(owner)
        where = [Entry.state == COMMITTED]
        if repository is not None:
            where.extend(_in_repository(repository))
        if owner is not None:
            where.append(_owned_by(owner))
        with self._session() as s:
            row = s.execute(select(func.count(), func.coalesce(func.sum(Entry.size), 0)).where(*where)).one()
            return int(row[0]), int(row[1])

    def policy(self, repository: str) -> tuple[int | None, int | None]:
        """A repository's own (storage limit GB, retention days); None where it uses the default."""
        check_repository(repository)
        with self._session() as s:
            p = s.get(RepositoryPolicy, fold_repository(repository))
            return (p.max_cache_size_gb, p.max_cache_retention_days) if p else (None, None)

    def retention_overrides(self) -> dict[str, int]:
        """Folded repository name -> retention days, for repositories that set their own."""
        with self._session() as s:
            rows = s.execute(
                select(RepositoryPolicy.repository_folded, RepositoryPolicy.max_cache_retention_days).where(
                    RepositoryPolicy.max_cache_retention_days.is_not(None)
                )
            ).all()
            return {r[0]: int(r[1]) for r in rows}

    def set_policy(
        self, repository: str, *, max_cache_size_gb: int | None = None, max_cache_retention_days: int | None = None
    ) -> tuple[int | None, int | None]:
        """Set the given limits (others unchanged); returns the repository's own limits afterwards.

        One INSERT … ON CONFLICT DO UPDATE (both engines have it): concurrent first writers of a
        repository's row cannot collide, where a read-then-insert needed a retry after a unique violation
        (and on PostgreSQL, a rollback before it)."""
        check_repository(repository)
        given = {
            k: v
            for k, v in (
                ("max_cache_size_gb", max_cache_size_gb),
                ("max_cache_retention_days", max_cache_retention_days),
            )
            if v is not None
        }
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(RepositoryPolicy)
        now = self._now()
        stmt = insert.values(
            repository_folded=fold_repository(repository), repository=repository, updated_at=now, **given
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[RepositoryPolicy.repository_folded], set_={"updated_at": now, **given}
        ).returning(RepositoryPolicy.max_cache_size_gb, RepositoryPolicy.max_cache_retention_days)
        with self._session.begin() as s:
            row = s.execute(stmt).one()
            return row[0], row[1]

    # --- uploads in progress -----------------------------------------------------------------------
    def discard_upload(self, entry_id: int) -> bool:
        """Delete an upload that is still `uploading`; False when it is gone or a commit has claimed it.

        Unlike `abort`, a `committing` row is never touched: abandoning an upload must not take a commit
        that won the claim (on any replica) down with it."""
        with self._session.begin() as s:
            result = s.execute(delete(Entry).where(Entry.id == entry_id, Entry.state == UPLOADING))
            return result.rowcount == 1

    def query_uploads(
        self,
        *,
        repository: str,
        key_prefix: str | None = None,
        key: str | None = None,
        ref: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[int, list[EntryInfo]]:
        """Unfinished uploads (uploading or committing) of a repository, oldest first: (total, this page).

        `key_prefix` filters as the cache list does; `key` is an exact key, compared as lookups do."""
        check_repository(repository)
        if key_prefix:
            check_key_text(key_prefix, what="Key prefix")
        if key is not None:
            check_key_text(key)
        if ref:
            check_scope(ref)
        where = [*_in_repository(repository), Entry.state.in_([UPLOADING, COMMITTING])]
        if key_prefix:
            where.append(Entry.key_folded.startswith(fold(key_prefix), autoescape=True))
        if key is not None:
            where.append(Entry.key_folded == fold(key))
        if ref:
            where.append(Entry.scope == ref)
        with self._session() as s:
            total = s.scalar(select(func.count()).select_from(Entry).where(*where)) or 0
            q = select(Entry).where(*where).order_by(Entry.reserved_at.asc(), Entry.id.asc()).offset(offset)
            if limit is not None:
                q = q.limit(limit)
            return total, [_info(e) for e in s.scalars(q).all()]


# First key of the per-repository advisory lock taken by reserve on PostgreSQL ('rc' + 1).
_RESERVE_LOCK_CLASS = 0x72630001


class DatabaseUnavailable(ValueError):
    """The metadata database cannot be reached or opened (a ValueError: the CLI prints one line)."""


@contextmanager
def unreachable_as_error(engine: Engine) -> Iterator[None]:
    """A database that is down, a wrong host or password, an unwritable SQLite path: one line naming the
    database (password hidden) instead of a driver traceback."""
    try:
        yield
    except OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        reason = " ".join(str(exc.orig).split())  # psycopg's messages span lines
        raise DatabaseUnavailable(f"cannot open the metadata database {where}: {reason}") from exc


def open_engine(url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    """An engine for the metadata database: SQLite (embedded) or PostgreSQL (psycopg 3)."""
    url = database_url(url)
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"runcache keeps metadata in SQLite or PostgreSQL, not {backend} ({url.split(':', 1)[0]})")
    if pool_size < 1:
        raise ValueError(f"the database pool size must be at least 1, got {pool_size}")
    pooling = {"pool_size": pool_size, "max_overflow": pool_size} if backend == "postgresql" else {}
    engine = create_engine(url, **pooling)
    _ping_when_idle(engine)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


# A pooled connection unused for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's pool_pre_ping, for connections that sat idle only. pool_pre_ping costs a round trip
    on every checkout — on PostgreSQL as much again as the lookup it precedes, and what 16 busy clients
    queue on. A connection back in the pool a moment ago has just worked; one idle for a while may have
    been cut by a database restart, a failover or an idle timeout, and is the one worth a ping. A
    connection that breaks in that moment fails its statement as a disconnect, which makes SQLAlchemy
    invalidate the pool's older connections; lookups retry once on that (`MetadataStore._read`), so a
    database restart costs them nothing."""

    def checkin(_dbapi_conn, record) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_conn, record, _proxy) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return  # new connections have just been opened; recent ones have just worked
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out another (a fresh one if need be).
            raise DisconnectionError(f"pooled connection lost while idle: {exc}") from exc

    event.listen(engine, "checkin", checkin)
    event.listen(engine, "checkout", checkout)


def _in_repository(repository: str) -> list:
    # SQL lower() on the column and fold_repository on the argument: the same ASCII folding.
    return [func.lower(Entry.repository) == fold_repository(repository)]


# `state = 'committed'` written out, not bound: the partial indexes' predicate, which the planners match
# only against a literal (SQLite always; PostgreSQL in a generic plan of a prepared statement).
_COMMITTED_ONLY = Entry.state == literal_column(f"'{COMMITTED}'")


def _prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix`, in code point order (= UTF-8 byte
    order); None when there is none (the prefix is all U+10FFFF)."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            following = 0xE000 if 0xD800 <= last + 1 <= 0xDFFF else last + 1  # surrogates are no characters
            return "".join(chars) + chr(following)
    return None


def _candidates_statement(dialect: str, bounded: tuple[bool, ...], scopes: int) -> CompoundSelect:
    """The lookup's one statement for this many prefixes (`bounded`: whether each has an upper end) and
    scopes, values left as bind parameters: repository, version, s<i> (scopes), k<i> (the prefixes as
    exact keys), p<i> and e<i> (each prefix and its `_prefix_end`)."""
    cols = (Entry.id, Entry.scope, Entry.key, Entry.version, Entry.created_at)
    # The columns of ix_entry_committed_lookup in order, its predicate as a literal: each part reads only
    # index entries of this repository, version and scopes, exact keys or one key range. One parameter
    # per scope and key rather than an expanding IN: the SQL text is then fixed for the shape, so it can
    # be compiled once (`_lookup_statement`) and prepared once per connection by PostgreSQL.
    base = (
        func.lower(Entry.repository) == bindparam("repository", type_=String()),
        Entry.version == bindparam("version", type_=String()),
        Entry.scope.in_([bindparam(f"s{i}", type_=String()) for i in range(scopes)]),
        _COMMITTED_ONLY,
    )
    keys = [bindparam(f"k{i}", type_=String()) for i in range(len(bounded))]
    parts = [select(*cols).where(*base, Entry.key_folded.in_(keys))]
    if dialect == "sqlite":
        # SQLite: per prefix and scope, the newest match's id as a top-1 scan of the index (which holds
        # created_at), then the winners' rows by id. 3x cheaper there than ranking with a window function,
        # which materializes and sorts every match (bench/lookup.py: 1.34 -> 0.40 ms for 500 matches).
        newest = []
        for i, has_end in enumerate(bounded):
            start, end = bindparam(f"p{i}", type_=String()), bindparam(f"e{i}", type_=String()) if has_end else None
            for j in range(scopes):
                top = (
                    select(Entry.id)
                    .where(
                        *base[:2],
                        Entry.scope == bindparam(f"s{j}", type_=String()),
                        _COMMITTED_ONLY,
                        *_starts_with(Entry.key_folded, start, end, dialect),
                    )
                    .order_by(Entry.created_at.desc(), Entry.id.desc())
                    # Written out: every value the statement takes is one of the lookup's parameters.
                    .limit(literal_column("1"))
                    .offset(literal_column("0"))
                    .subquery()
                )
                newest.append(select(top.c.id))
        parts.append(select(*cols).where(Entry.id.in_(union_all(*newest))))
        return union_all(*parts)
    for i, has_end in enumerate(bounded):
        rank = (
            func.row_number()
            .over(partition_by=Entry.scope, order_by=(Entry.created_at.desc(), Entry.id.desc()))
            .label("rank")
        )
        start, end = bindparam(f"p{i}", type_=String()), bindparam(f"e{i}", type_=String()) if has_end else None
        # Ranked on ids alone, from columns the index holds (SQLite then never reads the matches' rows);
        # only the winners' rows are read, by id.
        ranked = select(Entry.id, rank).where(*base, *_starts_with(Entry.key_folded, start, end, dialect)).subquery()
        # The 1 written out: every value the statement takes is one of the lookup's parameters.
        parts.append(select(*cols).join(ranked, Entry.id == ranked.c.id).where(ranked.c.rank == literal_column("1")))
    return union_all(*parts)


class _Lookup(NamedTuple):
    sql: str  # in the driver's own parameter style
    names: tuple[str, ...] | None  # the parameters' order for a positional style (SQLite's qmark), else None
    created_at: Callable[[object], object] | None  # the driver's created_at value -> datetime, if needed


@functools.lru_cache(maxsize=256)
def _lookup_statement(dialect: Dialect, bounded: tuple[bool, ...], scopes: int) -> _Lookup:
    """`_candidates_statement` compiled once per shape to the driver's SQL. A lookup then skips
    SQLAlchemy's per-call work (cache key, expanding IN, parameter and result processing): about as
    much Python time as SQLite takes to run the statement, and 16 concurrent lookups share one
    interpreter. Only created_at needs converting (SQLite returns it as text)."""
    compiled = _candidates_statement(dialect.name, bounded, scopes).compile(dialect=dialect)
    names = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup is not None else None
    created_at = Entry.created_at.type.dialect_impl(dialect).result_processor(dialect, None)
    return _Lookup(str(compiled), names, created_at)


def _starts_with(column, prefix, end, dialect: str) -> list:
    """`column` starts with `prefix` (`end` is `_prefix_end(prefix)`), as a byte-order range an index
    can seek: LIKE 'p%' cannot use one on SQLite (its LIKE ignores case) nor on PostgreSQL with a bound
    parameter or a non-C collation. PostgreSQL's ~>=~ / ~<~ compare bytewise and match the
    text_pattern_ops index; SQLite's BINARY collation already compares bytes."""
    if dialect == "postgresql":
        ge, lt = column.op("~>=~", is_comparison=True), column.op("~<~", is_comparison=True)
    else:
        ge, lt = column.__ge__, column.__lt__
    return [ge(prefix)] if end is None else [ge(prefix), lt(end)]


_ENTRY_COLUMNS = (
    Entry.id,
    Entry.repository,
    Entry.scope,
    Entry.key,
    Entry.version,
    Entry.state,
    Entry.declared_size,
    Entry.size,
    Entry.sha256,
    Entry.created_at,
    Entry.last_accessed_at,
    Entry.reserved_at,
    Entry.owner,
    Entry.node,
)  # EntryInfo's fields, in order


def _reverse(order: list) -> list:
    """The same order walked from the other end (`order` is [column.asc(), id.asc()] or both desc)."""
    return [o.element.desc() if o.modifier is operators.asc_op else o.element.asc() for o in order]


def _page_statement(dialect: str, where: list, order: list, backwards: list, limit: int, offset: int):
    """One statement for a list page and the total: rows (total, *EntryInfo fields) in the page's order,
    or a single (total, NULL, ...) row when the page is empty.

    A page's ids come from the sort index (PostgreSQL: index-only), walked from whichever end is nearer:
    OFFSET skips index entries one by one, so the last page of 100,000 entries walked all of them. Walked
    backwards, the page is rows total - offset - limit .. total - offset - 1 of the reversed order (the
    order is total: the id breaks ties), clipped at its start. Only one of the two walks runs: the other
    is gated on the count (see `gate`). The count and the page are one statement, hence one snapshot: a
    concurrent insert or delete cannot shift the backwards page against the total it was computed from."""
    counted = select(func.count(Entry.id).label("total")).where(*where).cte("counted")
    total = select(counted.c.total).scalar_subquery()
    before = total - literal(offset) - literal(limit)  # rows after the page, in the page's order
    backwards_from_end = before < literal(offset)

    def gate(walk, when):
        # PostgreSQL: a WHERE term on the count alone is a one-time filter, and LIMIT stays the page size,
        # a constant, so the planner expects at most 2 x limit ids and reads their rows by primary key (an
        # expression as LIMIT made it merge-join the whole table). SQLite tests such a term on every index
        # entry it walks, so there the walk not taken gets LIMIT 0 and stops before its first entry.
        if dialect == "postgresql":
            return walk.where(when).limit(limit)
        return walk.limit(case((when, literal(limit)), else_=literal(0)))

    forwards = gate(select(Entry.id).where(*where).order_by(*order).offset(offset), ~backwards_from_end)
    # Walking backwards from a page that runs past the end (before < 0) starts at the last row and may
    # return up to `limit` rows, some preceding the page; `query_entries` drops them.
    backward = gate(
        select(Entry.id).where(*where).order_by(*backwards).offset(case((before > 0, before), else_=literal(0))),
        backwards_from_end,
    )
    ids = union_all(select(forwards.subquery().c.id), select(backward.subquery().c.id)).subquery("page_ids")
    page = select(*_ENTRY_COLUMNS).join(ids, Entry.id == ids.c.id).subquery("page")
    by = {c.key: page.c[c.key] for c in _ENTRY_COLUMNS}
    page_order = [
        by[o.element.key].asc() if o.modifier is operators.asc_op else by[o.element.key].desc() for o in order
    ]
    return select(counted.c.total, *page.c).select_from(counted.outerjoin(page, true())).order_by(*page_order)


def _owned_by(owner: str):
    return func.lower(Entry.repository).startswith(fold_repository(owner) + "/", autoescape=True)


SQLITE_BUSY_TIMEOUT_MS = 10_000


def _switch_to_wal(cur) -> None:
    # SQLite answers "database is locked" to a journal-mode change at once, without calling the busy
    # handler, while another connection is opening the same new file; retry until the busy timeout.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # busy_timeout first: it turns lock contention into waiting, also for the switch to WAL below, which
    # needs the database to itself when several processes (replicas, a server and the CLI) open a new
    # file at once.
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # WAL lets readers go on while a commit writes. The mode is kept in the file, so only the first
    # opener switches; the others read "wal" and take no lock.
    if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        _switch_to_wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
