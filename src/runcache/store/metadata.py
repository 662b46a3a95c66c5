"""Metadata store: entries and reservations in a SQL database (SQLite embedded, PostgreSQL scale-out).

Every method is one unit of work in its own session; the unique constraint on the entry identity is
what makes reservations race-free across threads, processes and replicas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, delete, event, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from runcache.core.errors import AlreadyExists, NotFound
from runcache.core.keys import fold
from runcache.core.matching import Candidate
from runcache.store.models import COMMITTED, UPLOADING, Base, Entry


def utcnow() -> datetime:
    # Stored naive in UTC: SQLite has no time zones, and both engines then compare the same way.
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class EntryInfo:
    id: int
    repository: str
    scope: str
    key: str
    version: str
    state: str
    declared_size: int | None
    size: int | None
    sha256: str | None
    created_at: datetime
    last_accessed_at: datetime
    reserved_at: datetime

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.id, self.scope, self.key, self.version, self.created_at)


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
    )


class MetadataStore:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, future=True, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

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
    ) -> EntryInfo:
        now = utcnow()
        identity = (
            Entry.repository == repository,
            Entry.scope == scope,
            Entry.key_folded == fold(key),
            Entry.version == version,
        )
        with self._session.begin() as s:
            # An abandoned reservation frees its key once it has expired.
            s.execute(
                delete(Entry).where(*identity, Entry.state == UPLOADING, Entry.reserved_at < now - reservation_ttl)
            )
        entry = Entry(
            repository=repository,
            scope=scope,
            key=key,
            key_folded=fold(key),
            version=version,
            state=UPLOADING,
            declared_size=declared_size,
            node=node,
            reserved_at=now,
            created_at=now,
            last_accessed_at=now,
        )
        try:
            with self._session.begin() as s:
                s.add(entry)
        except IntegrityError:
            with self._session() as s:
                existing = s.scalars(select(Entry).where(*identity)).first()
            taken = existing.key if existing is not None else key
            if existing is not None and existing.state == UPLOADING:
                raise AlreadyExists(
                    f"Cache is being created by another job. Scope: {scope}, Key: {taken}, Version: {version}"
                ) from None
            raise AlreadyExists(f"Cache already exists. Scope: {scope}, Key: {taken}, Version: {version}") from None
        return _info(entry)

    def get(self, entry_id: int) -> EntryInfo | None:
        with self._session() as s:
            e = s.get(Entry, entry_id)
            return _info(e) if e else None

    def find_upload(self, *, repository: str, scope: str, key: str, version: str) -> EntryInfo | None:
        with self._session() as s:
            e = s.scalars(
                select(Entry).where(
                    Entry.repository == repository,
                    Entry.scope == scope,
                    Entry.key_folded == fold(key),
                    Entry.version == version,
                    Entry.state == UPLOADING,
                )
            ).first()
            return _info(e) if e else None

    def commit(self, entry_id: int, *, size: int, sha256: str) -> EntryInfo:
        now = utcnow()
        with self._session.begin() as s:
            e = s.get(Entry, entry_id, with_for_update=True)
            if e is None or e.state != UPLOADING:
                raise NotFound(f"no upload in progress with id {entry_id}")
            e.state, e.size, e.sha256 = COMMITTED, size, sha256
            e.created_at = e.last_accessed_at = now
            return _info(e)

    def abort(self, entry_id: int) -> None:
        with self._session.begin() as s:
            s.execute(delete(Entry).where(Entry.id == entry_id, Entry.state == UPLOADING))

    def candidates(
        self, *, repository: str, version: str, scopes: Sequence[str], prefixes: Sequence[str]
    ) -> list[Candidate]:
        if not scopes or not prefixes:
            return []
        with self._session() as s:
            rows = s.scalars(
                select(Entry).where(
                    Entry.repository == repository,
                    Entry.version == version,
                    Entry.state == COMMITTED,
                    Entry.scope.in_(list(scopes)),
                    or_(*[Entry.key_folded.startswith(p, autoescape=True) for p in prefixes]),
                )
            ).all()
            return [_info(e).candidate for e in rows]

    def touch(self, entry_id: int) -> None:
        with self._session.begin() as s:
            s.execute(update(Entry).where(Entry.id == entry_id).values(last_accessed_at=utcnow()))

    def list_entries(self, *, repository: str, key: str | None = None) -> list[EntryInfo]:
        with self._session() as s:
            q = select(Entry).where(Entry.repository == repository, Entry.state == COMMITTED)
            if key is not None:
                q = q.where(Entry.key_folded.startswith(fold(key), autoescape=True))
            return [_info(e) for e in s.scalars(q.order_by(Entry.created_at.desc(), Entry.id.desc())).all()]

    def expired_uploads(self, older_than: datetime) -> list[EntryInfo]:
        with self._session() as s:
            rows = s.scalars(select(Entry).where(Entry.state == UPLOADING, Entry.reserved_at < older_than))
            return [_info(e) for e in rows.all()]

    def uploads_on_node(self, node: str) -> list[EntryInfo]:
        with self._session() as s:
            rows = s.scalars(select(Entry).where(Entry.state == UPLOADING, Entry.node == node))
            return [_info(e) for e in rows.all()]

    def committed_ids(self, ids: Sequence[int]) -> set[int]:
        if not ids:
            return set()
        with self._session() as s:
            return set(s.scalars(select(Entry.id).where(Entry.id.in_(list(ids)), Entry.state == COMMITTED)))


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers go on while a commit writes; busy_timeout turns lock contention into waiting.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
