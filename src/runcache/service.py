"""The cache service: the one place where requests meet the rules in `core` and the stores.

Both protocols (v1 REST and v2 twirp) and the blob endpoints call these methods; they only
translate wire formats to arguments and errors to status codes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from runcache.core.errors import InvalidRequest, NotFound
from runcache.core.eviction import (
    DEFAULT_RETENTION_DAYS,
    DEFAULT_STORAGE_LIMIT_GB,
    GB,
    choose_expired,
    choose_lru_evictions,
)
from runcache.core.keys import validate_key, validate_lookup_keys, validate_version
from runcache.core.matching import find_match, lookup_prefixes
from runcache.core.scopes import Identity
from runcache.store.blobs import BlobStore
from runcache.store.metadata import EntryInfo, MetadataStore, utcnow
from runcache.store.models import COMMITTED, UPLOADING
from runcache.store.staging import Staging

log = logging.getLogger("runcache.service")


@dataclass(frozen=True)
class LookupResult:
    entry: EntryInfo
    exact: bool


class CacheService:
    def __init__(
        self,
        metadata: MetadataStore,
        blobs: BlobStore,
        staging: Staging,
        *,
        node_id: str,
        reservation_ttl: int,
        storage_limit_gb: int = DEFAULT_STORAGE_LIMIT_GB,
        retention_days: int = DEFAULT_RETENTION_DAYS,
    ) -> None:
        self.metadata = metadata
        self.blobs = blobs
        self.staging = staging
        self.node_id = node_id
        self.reservation_ttl = timedelta(seconds=reservation_ttl)
        self.default_storage_limit_gb = storage_limit_gb
        self.default_retention_days = retention_days

    # --- reads -------------------------------------------------------------------------------
    def lookup(self, identity: Identity, keys: Sequence[str], version: str) -> LookupResult | None:
        keys = validate_lookup_keys(keys)
        version = validate_version(version)
        scopes = identity.require_read()
        candidates = self.metadata.candidates(
            repository=identity.repository, version=version, scopes=scopes, prefixes=lookup_prefixes(keys)
        )
        # An entry whose blob vanished is a miss, never a download that 404s later.
        candidates = [c for c in candidates if self.blobs.contains(str(c.id))]
        match = find_match(candidates, keys, version, scopes)
        if match is None:
            return None
        self.metadata.touch(match.entry.id)
        entry = self.metadata.get(match.entry.id)
        if entry is None:  # deleted between the two calls
            return None
        return LookupResult(entry, match.exact)

    def entry_for_download(self, entry_id: int) -> EntryInfo:
        entry = self.metadata.get(entry_id)
        if entry is None or entry.state != COMMITTED or not self.blobs.contains(str(entry_id)):
            raise NotFound(f"no cache entry with id {entry_id}")
        return entry

    def list_for_key(self, identity: Identity, key: str) -> list[EntryInfo]:
        scopes = set(identity.require_read())
        return [
            e
            for e in self.metadata.list_entries(repository=identity.repository, key=validate_key(key))
            if e.scope in scopes
        ]

    # --- writes ------------------------------------------------------------------------------
    def reserve(self, identity: Identity, key: str, version: str, declared_size: int | None = None) -> EntryInfo:
        key = validate_key(key)
        version = validate_version(version)
        if declared_size is not None and declared_size < 0:
            raise InvalidRequest(f"cacheSize must not be negative, got {declared_size}")
        scope = identity.require_write()
        entry = self.metadata.reserve(
            repository=identity.repository,
            scope=scope,
            key=key,
            version=version,
            declared_size=declared_size,
            node=self.node_id,
            reservation_ttl=self.reservation_ttl,
        )
        self.staging.create(entry.id)
        return entry

    def upload_for(self, identity: Identity, upload_id: int) -> EntryInfo:
        """The caller's own in-progress upload, or NotFound (other repositories' ids are not revealed)."""
        entry = self.upload_open(upload_id)
        if entry.repository != identity.repository or entry.scope != identity.write_scope:
            raise NotFound(f"no upload in progress with id {upload_id}")
        return entry

    def upload_by_key(self, identity: Identity, key: str, version: str) -> EntryInfo:
        scope = identity.require_write()
        entry = self.metadata.find_upload(
            repository=identity.repository, scope=scope, key=validate_key(key), version=validate_version(version)
        )
        if entry is None or not self.staging.exists(entry.id):
            raise NotFound(f"no upload in progress for key {key} and version {version}")
        return entry

    def upload_open(self, upload_id: int) -> EntryInfo:
        """Upload target for a signed URL (the signature already proved who may write it)."""
        entry = self.metadata.get(upload_id)
        if entry is None or entry.state != UPLOADING or not self.staging.exists(upload_id):
            raise NotFound(f"no upload in progress with id {upload_id}")
        return entry

    def commit(self, entry: EntryInfo, size: int) -> EntryInfo:
        if size < 0:
            raise InvalidRequest(f"size must not be negative, got {size}")
        if entry.declared_size is not None and entry.declared_size >= 0 and entry.declared_size != size:
            raise InvalidRequest(f"commit size {size} differs from the reserved cacheSize {entry.declared_size}")
        paths, sha256 = self.staging.finalize(entry.id, size)
        if len(paths) == 1:
            self.blobs.put_file(str(entry.id), paths[0], size=size, sha256=sha256)
        else:
            self.blobs.put_parts(str(entry.id), paths, size=size, sha256=sha256)
        try:
            committed = self.metadata.commit(entry.id, size=size, sha256=sha256)
        except Exception:
            self.blobs.delete(str(entry.id))
            raise
        self.staging.discard(entry.id)
        log.info("committed entry %s %s key=%s size=%d sha256=%s", entry.id, entry.scope, entry.key, size, sha256)
        try:
            self.enforce_storage_limit(entry.repository, keep=(entry.id,))
        except Exception:  # the entry is saved; a failed eviction pass is retried by the next commit
            log.exception("eviction after committing entry %s failed", entry.id)
        return committed

    # --- limits and eviction -------------------------------------------------------------------
    def limits(self, repository: str) -> tuple[int, int]:
        """The repository's effective (storage limit in GB, retention in days)."""
        size_gb, days = self.metadata.policy(repository)
        return (
            size_gb if size_gb is not None else self.default_storage_limit_gb,
            days if days is not None else self.default_retention_days,
        )

    def delete_entries(self, ids: Sequence[int]) -> list[EntryInfo]:
        """Delete committed entries and their blobs (the row first: a crash in between leaves an
        orphan blob that recovery removes, never a row without its blob)."""
        gone = self.metadata.delete_committed(ids)
        for e in gone:
            self.blobs.delete(str(e.id))
        return gone

    def enforce_storage_limit(self, repository: str, keep: Sequence[int] = ()) -> list[EntryInfo]:
        """Evict least-recently-used entries until the repository is within its storage limit."""
        limit_gb, _ = self.limits(repository)
        if self.metadata.usage_totals(repository=repository)[1] <= limit_gb * GB:
            return []  # the common case: one aggregate query, no rows fetched
        chosen = choose_lru_evictions(self.metadata.usages(repository), limit_gb * GB, keep)
        gone = self.delete_entries(chosen)
        for e in gone:
            log.info("evicted entry %s of %s (key=%s, %s bytes): over %d GB", e.id, repository, e.key, e.size, limit_gb)
        return gone

    def enforce_retention(self, now: datetime | None = None) -> list[EntryInfo]:
        """Remove entries not accessed for longer than their repository's retention limit."""
        now = now or utcnow()
        overrides = self.metadata.retention_overrides()
        shortest = min([self.default_retention_days, *overrides.values()])
        stale = self.metadata.stale(now - timedelta(days=shortest))
        folded = {e.repository: e.repository.lower() for e in stale}
        days = {name: overrides.get(f, self.default_retention_days) for name, f in folded.items()}
        gone = self.delete_entries(choose_expired(stale, now, days, self.default_retention_days))
        for e in gone:
            log.info(
                "removed entry %s of %s (key=%s): unused for over %d days",
                e.id,
                e.repository,
                e.key,
                days[e.repository],
            )
        return gone

    # --- housekeeping --------------------------------------------------------------------------
    def recover(self) -> None:
        """After a restart: uploads staged on this node died with it; blobs without a committed entry go."""
        for entry in self.metadata.uploads_on_node(self.node_id):
            self.metadata.abort(entry.id)
        self.staging.clear_all()
        self._drop_orphan_blobs()

    def expire_uploads(self) -> int:
        expired = self.metadata.expired_uploads(utcnow() - self.reservation_ttl)
        for entry in expired:
            self.metadata.abort(entry.id)
            self.staging.discard(entry.id)
        live = {e.id for e in self.metadata.uploads_on_node(self.node_id)}
        for upload_id in self.staging.upload_ids():
            if upload_id not in live:
                self.staging.discard(upload_id)
        return len(expired)

    def _drop_orphan_blobs(self) -> None:
        names = [n for n in self.blobs.names() if n.isdigit()]
        keep = self.metadata.committed_ids([int(n) for n in names])
        for n in names:
            if int(n) not in keep:
                self.blobs.delete(n)
