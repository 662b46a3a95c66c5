"""The cache service: the one place where requests meet the rules in `core` and the stores.

Both protocols (v1 REST and v2 twirp) and the blob endpoints call these methods; they only
translate wire formats to arguments and errors to status codes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from runcache.core.entries import COMMITTED, COMMITTING, UPLOADING, EntryInfo
from runcache.core.errors import IncompleteUpload, InvalidRequest, NotFound, StorageFull, UploadBusy, UploadElsewhere
from runcache.core.eviction import (
    DEFAULT_RETENTION_DAYS,
    DEFAULT_STORAGE_LIMIT_GB,
    GB,
    choose_expired,
    choose_lru_evictions,
)
from runcache.core.keys import fold_repository, validate_key, validate_lookup_keys, validate_version
from runcache.core.limits import (
    UploadLimits,
    check_declared_size,
    check_free_space,
    check_upload_end,
    effective_free_floor,
    entry_size_cap,
)
from runcache.core.matching import find_match, lookup_prefixes
from runcache.core.scopes import Identity
from runcache.store.blobs import BlobStore, DirectUploads
from runcache.store.metadata import MetadataStore
from runcache.store.uploads import Progress, StagedUpload, UploadStore, UploadWriter

log = logging.getLogger("runcache.services.cache")
_COMMIT_LOCKS = 64
# An upload row whose staging vanished (dropped when the disk filled) is removed after this long;
# younger rows may be between their insert and the creation of their staging folder.
_ORPHAN_UPLOAD_GRACE = timedelta(seconds=60)
# The node recorded for uploads in a shared upload store: every replica holds them.
SHARED_NODE = "*"


@dataclass(frozen=True)
class LookupResult:
    entry: EntryInfo
    exact: bool


class CacheService:
    def __init__(
        self,
        metadata: MetadataStore,
        blobs: BlobStore,
        staging: UploadStore,
        *,
        node_id: str,
        reservation_ttl: int,
        storage_limit_gb: int = DEFAULT_STORAGE_LIMIT_GB,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        limits: UploadLimits | None = None,
        direct_download_ttl: int | None = None,
        direct_upload_ttl: int | None = None,
    ) -> None:
        self.metadata = metadata
        self.blobs = blobs
        self.staging = staging
        self.node_id = node_id
        # Whose uploads this process may write, commit and expire: its own, or, in a shared upload
        # store, everyone's.
        self.upload_node = SHARED_NODE if staging.shared else node_id
        self.reservation_ttl = timedelta(seconds=reservation_ttl)
        self.default_storage_limit_gb = storage_limit_gb
        self.default_retention_days = retention_days
        self.upload_limits = limits or UploadLimits()
        # Seconds a direct (object-store) download URL lives; None: downloads stream through the server.
        self.direct_download_ttl = direct_download_ttl
        # Seconds a direct (write SAS) upload URL lives; None: v2 uploads go through the server. Direct
        # uploads need a store that can sign one (`DirectUploads`), checked at start-up.
        self.direct_upload_ttl = direct_upload_ttl
        # Striped locks serialise commits of one upload in this process (the database claim does it
        # across processes); a bounded array never grows with the number of uploads.
        self._commit_locks = [threading.Lock() for _ in range(_COMMIT_LOCKS)]

    # --- reads -------------------------------------------------------------------------------
    def lookup(self, identity: Identity, keys: Sequence[str], version: str) -> LookupResult | None:
        keys = validate_lookup_keys(keys)
        version = validate_version(version)
        scopes = identity.require_read()
        candidates = self.metadata.candidates(
            repository=identity.repository, version=version, scopes=scopes, prefixes=lookup_prefixes(keys)
        )
        # An entry whose blob vanished is a miss, never a download that 404s later (one store call).
        present = self.blobs.contains_many(str(c.id) for c in candidates)
        candidates = [c for c in candidates if str(c.id) in present]
        match = find_match(candidates, keys, version, scopes)
        if match is None:
            return None
        self.metadata.touch(match.entry.id)  # best effort: a full disk must not fail a restore
        entry = self.metadata.get(match.entry.id)
        if entry is None:  # deleted between the two calls
            return None
        return LookupResult(entry, match.exact)

    def entry_for_download(self, entry_id: int) -> EntryInfo:
        entry = self.metadata.get(entry_id)
        if entry is None or entry.state != COMMITTED or not self.blobs.contains(str(entry_id)):
            raise NotFound(f"no cache entry with id {entry_id}")
        return entry

    def direct_download_url(self, entry: EntryInfo) -> str | None:
        """Where a client fetches a found entry's archive straight from the blob store, when this server
        hands out such URLs and the store has them; None: through the server's own signed URL."""
        if self.direct_download_ttl is None:
            return None
        return self.blobs.download_url(str(entry.id), self.direct_download_ttl)

    def direct_upload_url(self, entry: EntryInfo) -> str | None:
        """Where a v2 client writes a reserved entry's archive straight into the blob store (a URL that can
        create and write that one blob only), when this server hands out such URLs; None: through the
        server's own signed upload URL."""
        if self.direct_upload_ttl is None or not isinstance(self.blobs, DirectUploads):
            return None
        return self.blobs.upload_url(str(entry.id), self.direct_upload_ttl)

    def open_download(self, entry: EntryInfo, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) of a committed entry, streamed from the blob store."""
        return self.blobs.open_range(str(entry.id), start, end)

    def list_for_key(self, identity: Identity, key: str) -> list[EntryInfo]:
        scopes = set(identity.require_read())
        return [
            e
            for e in self.metadata.list_entries(repository=identity.repository, key=validate_key(key))
            if e.scope in scopes
        ]

    # --- space ---------------------------------------------------------------------------------
    def _free_floor(self) -> tuple[int, int] | None:
        usage = self.staging.disk_usage()
        if usage is None:  # not on this node's disk: the object store answers for its own space
            return None
        free, total = usage
        return free, effective_free_floor(self.upload_limits.min_free_bytes, total)

    def _guard_space(self, incoming: int) -> None:
        """Called as bytes arrive: half the floor stays in reserve for the database and logs, so
        restores, commits and housekeeping keep working even when concurrent uploads race for space."""
        space = self._free_floor()
        if space is not None:
            check_free_space(space[0], incoming, space[1] // 2)

    def _entry_cap(self, repository: str) -> int:
        return entry_size_cap(self.upload_limits, self.limits(repository)[0] * GB)

    # --- writes ------------------------------------------------------------------------------
    def reserve(self, identity: Identity, key: str, version: str, declared_size: int | None = None) -> EntryInfo:
        key = validate_key(key)
        version = validate_version(version)
        scope = identity.require_write()
        check_declared_size(declared_size, self._entry_cap(identity.repository))
        space = self._free_floor()
        if space is not None:
            check_free_space(space[0], declared_size or 0, space[1])
        entry = self.metadata.reserve(
            repository=identity.repository,
            scope=scope,
            key=key,
            version=version,
            declared_size=declared_size,
            node=self.upload_node,
            reservation_ttl=self.reservation_ttl,
            owner=identity.token_id or None,
            max_uploads=self.upload_limits.max_uploads_per_repo,
        )
        try:
            self.staging.create(entry.id)
        except BaseException:
            self.metadata.abort(entry.id)
            raise
        return entry

    def _owned(self, identity: Identity, entry: EntryInfo | None) -> bool:
        """The caller's own upload: same repository and write scope, and (for uploads reserved with a
        token id) the very token that reserved it, so a guessed sequential id is of no use."""
        return (
            entry is not None
            and fold_repository(entry.repository) == fold_repository(identity.repository)
            and entry.scope == identity.write_scope
            and (entry.owner is None or entry.owner == identity.token_id)
        )

    def upload_for(self, identity: Identity, upload_id: int) -> EntryInfo:
        """The caller's own in-progress upload, or NotFound (other repositories' ids are not revealed)."""
        entry = self.upload_open(upload_id)
        if not self._owned(identity, entry):
            raise NotFound(f"no upload in progress with id {upload_id}")
        return entry

    def upload_open(self, upload_id: int) -> EntryInfo:
        """Upload target for a signed URL (the signature already proved who may write it)."""
        entry = self.metadata.get(upload_id)
        if entry is None or entry.state != UPLOADING:
            raise NotFound(f"no upload in progress with id {upload_id}")
        self._here(entry)
        if not self.staging.exists(upload_id):
            raise NotFound(f"no upload in progress with id {upload_id}")
        return entry

    def _here(self, entry: EntryInfo) -> None:
        """With local staging, upload bytes are on the replica that reserved the upload: say so, rather
        than 404. In a shared upload store every replica holds every upload."""
        if entry.node != self.upload_node:
            raise UploadElsewhere(
                f"upload {entry.id} is staged on replica {entry.node!r}, not on {self.node_id!r}: route a job's "
                "cache calls to one replica (e.g. nginx ip_hash)"
            )

    # The writers below take an entry from `upload_open`/`upload_for`, which already checked that its
    # bytes are staged where this replica can reach them.
    def chunk_writer(self, entry: EntryInfo, start: int, end: int) -> UploadWriter:
        """v1 PATCH: bytes [start, end) of the caller's upload, within its declared size and the caps."""
        cap = self._entry_cap(entry.repository)  # one policy read per request
        check_upload_end(end, entry.declared_size, cap)
        return self.staging.range_writer(
            entry.id, start, end, cap=cap, max_chunks=self.upload_limits.max_blocks_per_upload, guard=self._guard_space
        )

    def whole_writer(self, entry: EntryInfo) -> UploadWriter:
        """Azure Put Blob: the whole archive in one body."""
        return self.staging.whole_writer(entry.id, cap=self._entry_cap(entry.repository), guard=self._guard_space)

    def block_writer(self, entry: EntryInfo, block_id: str) -> UploadWriter:
        return self.staging.block_writer(
            entry.id,
            block_id,
            cap=self._entry_cap(entry.repository),
            max_blocks=self.upload_limits.max_blocks_per_upload,
            guard=self._guard_space,
        )

    def put_block_list(self, entry: EntryInfo, block_ids: list[str]) -> int:
        try:
            size = self.staging.commit_blocks(entry.id, block_ids, max_blocks=self.upload_limits.max_blocks_per_upload)
        except StorageFull:
            # As for a body refused for space: the staged blocks are what fills the store, and the same list
            # would be refused again, so the upload goes now and its key is free for a later save.
            self._drop_for_space(entry.id)
            raise
        check_upload_end(size, entry.declared_size, self._entry_cap(entry.repository))
        return size

    def drop_if_out_of_space(self, upload_id: int) -> None:
        """An upload stopped at the free-space floor is dropped at once: its bytes are what fills the disk."""
        if self.staging.dropped_for_space(upload_id):
            self._drop_for_space(upload_id)

    def _drop_for_space(self, upload_id: int) -> None:
        self.staging.discard(upload_id)
        try:
            self.metadata.abort(upload_id)
        except Exception:  # the janitor removes the row once the database can be written again
            log.warning("upload %s dropped for space; its row is removed later", upload_id)
        log.warning("upload %s dropped: the storage is out of space", upload_id)

    def commit_upload(self, identity: Identity, upload_id: int, size: int) -> EntryInfo:
        """v1 commit by id: the caller's own upload, or the entry a previous identical commit made."""
        entry = self.metadata.get(upload_id)
        if not self._owned(identity, entry):
            raise NotFound(f"no upload in progress with id {upload_id}")
        assert entry is not None
        return self.commit(entry, size)

    def finalize_by_key(self, identity: Identity, key: str, version: str, size: int) -> EntryInfo:
        """v2 finalize: the caller's own upload of this key and version (a retry gets the first result)."""
        scope = identity.require_write()
        entry = self.metadata.find_entry(
            repository=identity.repository, scope=scope, key=validate_key(key), version=validate_version(version)
        )
        if not self._owned(identity, entry) or (entry is not None and entry.owner is None and entry.state == COMMITTED):
            raise NotFound(f"no upload in progress for key {key} and version {version}")
        assert entry is not None
        if self.direct_upload_ttl is not None:
            return self.commit_direct(entry, size)
        return self.commit(entry, size)

    def commit_direct(self, entry: EntryInfo, size: int) -> EntryInfo:
        """v2 finalize of an upload the client wrote straight into the blob store: the blob is sealed against
        its upload URL, and the entry becomes visible only once the storage reports exactly `size` bytes
        under its name. The server never saw the bytes, so there is no SHA-256 of its own; what the storage
        reports (ETag, content MD5) is logged with the commit. The SHA-256 the uploader put in the blob's
        metadata (the runcache CLI does) is recorded as it was when sealed, for one use: proxied downloads
        send it, as direct ones get it from the storage, so the client checks the bytes against it. It
        decides nothing here (a wrong one only fails downloads of the uploader's own bytes). A blob of
        another size is refused and stays invisible; the janitor removes it with the expired reservation."""
        if size < 0:
            raise InvalidRequest(f"size must not be negative, got {size}")
        assert isinstance(self.blobs, DirectUploads)
        with self._commit_locks[entry.id % _COMMIT_LOCKS]:
            current = self.metadata.get(entry.id)
            if current is None:
                raise NotFound(f"no upload in progress with id {entry.id}")
            if current.state != UPLOADING:
                return self._earlier_commit(current, size)
            check_upload_end(size, current.declared_size, self._entry_cap(current.repository))
            # Sealed before it is measured: the upload URL stays valid for a while, and must not change the
            # blob between this check and the entry becoming visible, nor afterwards.
            report = self.blobs.seal(str(current.id))
            if report is None:
                raise IncompleteUpload(f"upload {current.id}: no archive was written to its upload URL")
            if report.size != size:
                self.blobs.unseal(str(current.id))
                raise InvalidRequest(f"upload {current.id}: the stored archive has {report.size} bytes, not {size}")
            lost = self._claim(current, size, report.sha256)
            if lost is not None:
                return lost
            try:
                committed = self.metadata.commit(current.id)
            except BaseException:
                self.blobs.delete(str(current.id))
                self.metadata.abort(current.id)
                raise
            self.staging.discard(current.id)
        log.info(
            "committed direct upload %s %s key=%s size=%d etag=%s content-md5=%s sha256=%s",
            current.id,
            current.scope,
            current.key,
            size,
            report.etag,
            report.content_md5 or "-",
            report.sha256 or "-",
        )
        self._evict_after_commit(committed)
        return committed

    def commit(self, entry: EntryInfo, size: int) -> EntryInfo:
        """Seal the upload, prove it whole, claim it, move it into the blob store, make it visible.

        Idempotent: a retry of a commit that already succeeded (same size) gets that entry back; a
        commit racing another one for the same upload either waits for it here or loses the claim."""
        if size < 0:
            raise InvalidRequest(f"size must not be negative, got {size}")
        with self._commit_locks[entry.id % _COMMIT_LOCKS]:
            current = self.metadata.get(entry.id)
            if current is None:
                raise NotFound(f"no upload in progress with id {entry.id}")
            if current.state != UPLOADING:
                return self._earlier_commit(current, size)
            if current.declared_size is not None and current.declared_size >= 0 and current.declared_size != size:
                raise InvalidRequest(f"commit size {size} differs from the reserved cacheSize {current.declared_size}")
            check_upload_end(size, None, self._entry_cap(current.repository))
            self._here(current)
            self.staging.seal(current.id)
            try:
                staged = self.staging.finalize(current.id, size)
            except BaseException:
                self.staging.unseal(current.id)
                raise
            lost = self._claim(current, size, staged.sha256)
            if lost is not None:
                return lost
            try:
                sha256 = self._store_blob(str(current.id), staged)
                committed = self.metadata.commit(current.id, sha256=sha256)
            except BaseException:
                # Our claim is exclusive, so the blob of this id (if any) is ours to remove.
                self.blobs.delete(str(current.id))
                self.staging.discard(current.id)
                self.metadata.abort(current.id)
                raise
            self.staging.discard(current.id)
        log.info("committed entry %s %s key=%s size=%d sha256=%s", current.id, current.scope, current.key, size, sha256)
        self._evict_after_commit(committed)
        return committed

    def _claim(self, current: EntryInfo, size: int, sha256: str | None) -> EntryInfo | None:
        """Claim an upload for this commit (None), or what another process or replica that claimed it between
        our read and our claim made of it (the entry, or the error a retry gets)."""
        if self.metadata.claim_commit(current.id, size=size, sha256=sha256):
            return None
        latest = self.metadata.get(current.id)
        if latest is None:
            raise NotFound(f"no upload in progress with id {current.id}")
        return self._earlier_commit(latest, size)

    def _evict_after_commit(self, committed: EntryInfo) -> None:
        try:
            self.enforce_storage_limit(committed.repository, keep=(committed.id,))
        except Exception:  # the entry is saved; a failed eviction pass is retried by the next commit
            log.exception("eviction after committing entry %s failed", committed.id)

    def _store_blob(self, name: str, staged: StagedUpload) -> str:
        """Local staged files are handed over (moved or linked, no copy); anything else is streamed."""
        if staged.paths is not None and staged.sha256 is not None:
            if len(staged.paths) == 1:
                self.blobs.put_file(name, staged.paths[0], size=staged.size, sha256=staged.sha256)
            else:
                self.blobs.put_parts(name, staged.paths, size=staged.size, sha256=staged.sha256)
            return staged.sha256
        return self.blobs.put_stream(name, staged.chunks(), size=staged.size, sha256=staged.sha256)

    def _earlier_commit(self, current: EntryInfo, size: int) -> EntryInfo:
        if current.state == COMMITTED and current.size == size:
            return current
        if current.state == COMMITTING:
            raise UploadBusy(f"upload {current.id} is being committed by another request")
        raise NotFound(f"no upload in progress with id {current.id}")

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
        max_count = self.upload_limits.max_entries_per_repo
        count, size = self.metadata.usage_totals(repository=repository)
        if size <= limit_gb * GB and count <= max_count:
            return []  # the common case: one aggregate query, no rows fetched
        chosen = choose_lru_evictions(self.metadata.usages(repository), limit_gb * GB, keep, max_count)
        gone = self.delete_entries(chosen)
        for e in gone:
            log.info(
                "evicted entry %s of %s (key=%s, %s bytes): over %d GB or %d entries",
                e.id,
                repository,
                e.key,
                e.size,
                limit_gb,
                max_count,
            )
        return gone

    def enforce_retention(self, now: datetime | None = None) -> list[EntryInfo]:
        """Remove entries not accessed for longer than their repository's retention limit (one replica
        at a time: the others skip the pass)."""
        with self.metadata.housekeeping_turn("retention") as mine:
            return self._enforce_retention(now) if mine else []

    def _enforce_retention(self, now: datetime | None) -> list[EntryInfo]:
        now = now or self.metadata.now()  # the clock the access times were written with
        overrides = self.metadata.retention_overrides()
        shortest = min([self.default_retention_days, *overrides.values()])
        stale = self.metadata.stale(now - timedelta(days=shortest))
        folded = {e.repository: fold_repository(e.repository) for e in stale}
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
    # Space first, then the database: on a full disk the database may only accept writes once staged
    # bytes are gone, so every pass deletes files before it writes rows.
    def recover(self) -> None:
        """After a restart: uploads staged on this node died with it; blobs without a committed entry go.
        A shared upload store keeps every upload: other replicas (or this one's clients, retrying) go on."""
        self.staging.after_restart()
        self._drop_orphan_blobs()
        if self.staging.shared:
            return
        for entry in self.metadata.uploads_on_node(self.node_id):
            try:
                self.metadata.abort(entry.id)
            except Exception:  # invisible anyway; the janitor retries once the database takes writes
                log.warning("could not remove unfinished upload %s at start; will retry", entry.id)

    def expire_uploads(self) -> int:
        # Staged uploads are listed before rows are read: a row is written before its staging, so an
        # upload reserved meanwhile is among the rows and its staging is not taken for an orphan.
        staged_ids = self.staging.upload_ids()
        now = self.metadata.now()
        expired = self.metadata.expired_uploads(now - self.reservation_ttl)
        for entry in expired:
            self.staging.discard(entry.id)
            # A direct upload's bytes are already the blob of its id (written by the client, never committed).
            if entry.state == COMMITTING or self.direct_upload_ttl is not None:
                self.blobs.delete(str(entry.id))
        live = self.metadata.uploads_on_node(self.upload_node)
        live_ids = {e.id for e in live}
        for upload_id in staged_ids:
            if upload_id not in live_ids:
                self.staging.discard(upload_id)
        for entry in expired:
            self.metadata.abort(entry.id)
        # Rows whose staging is gone (dropped at the free-space floor) can never complete.
        orphans = [
            e
            for e in live
            if e.state == UPLOADING
            and e.reserved_at < now - _ORPHAN_UPLOAD_GRACE
            and not self.staging.exists(e.id)
            and e not in expired
        ]
        for entry in orphans:
            self.metadata.abort(entry.id)
        return len(expired) + len(orphans)

    def collect_orphan_blobs(self) -> int:
        """The periodic form of start-up's orphan sweep, one replica at a time."""
        with self.metadata.housekeeping_turn("orphan-blobs") as mine:
            return self._drop_orphan_blobs() if mine else 0

    def _drop_orphan_blobs(self) -> int:
        """Blobs no row references. Only those older than the reservation TTL: a younger one may belong
        to a commit in flight on another replica (stored, row not yet flipped)."""
        min_age = self.reservation_ttl.total_seconds()
        names = [n for n, age in self.blobs.names_with_age() if n.isdigit() and age > min_age]
        keep = self.metadata.referenced_ids([int(n) for n in names])
        gone = [n for n in names if int(n) not in keep]
        for n in gone:
            self.blobs.delete(n)
        return len(gone)

    # --- abandoned and idle uploads -------------------------------------------------------------------
    # An upload that receives no bytes for this long gives its key back long before the reservation TTL:
    # the job that reserved it was cancelled or died. Set from `Settings.upload_idle_timeout`; None: off.
    upload_idle_timeout: timedelta | None = timedelta(seconds=300)

    def pending_upload(self, upload_id: int) -> EntryInfo:
        """An unfinished upload by id (uploading or committing), for callers that proved their right to it
        another way (a signed URL, a management permission)."""
        entry = self.metadata.get(upload_id)
        if entry is None or entry.state not in (UPLOADING, COMMITTING):
            raise NotFound(f"no upload in progress with id {upload_id}")
        return entry

    def abandon_own_upload(self, identity: Identity, upload_id: int) -> EntryInfo:
        """v1 DELETE: only the token that reserved the upload may give it up; for any other caller, and
        for a committed entry, it does not exist."""
        entry = self.metadata.get(upload_id)
        if entry is None or entry.state == COMMITTED or not self._owned(identity, entry):
            raise NotFound(f"no upload in progress with id {upload_id}")
        self.abandon_upload(entry)
        return entry

    def abandon_upload(self, entry: EntryInfo) -> None:
        """Give an upload up: its staged bytes go first, then its row, and its key is free at once.

        Never touches a committed entry (NotFound) and refuses one a commit has claimed (UploadBusy). The
        commit lock keeps a commit in this process from starting meanwhile; across replicas only an
        `uploading` row is deleted, so a commit that claims it first wins and keeps its blob."""
        with self._commit_locks[entry.id % _COMMIT_LOCKS]:
            current = self.metadata.get(entry.id)
            if current is None or current.state == COMMITTED:
                raise NotFound(f"no upload in progress with id {entry.id}")
            if current.state == COMMITTING:
                raise UploadBusy(f"upload {entry.id} is being committed and can no longer be abandoned")
            self.staging.discard(current.id)
            if not self.metadata.discard_upload(current.id):
                # Another replica claimed it for a commit, or removed it, since the read above.
                latest = self.metadata.get(current.id)
                if latest is None or latest.state == COMMITTED:
                    raise NotFound(f"no upload in progress with id {entry.id}")
                raise UploadBusy(f"upload {entry.id} is being committed and can no longer be abandoned")
            if self.direct_upload_ttl is not None:
                # What the client wrote through its upload URL: only once the row is gone, so no finalize
                # can still claim it and find its blob missing.
                self.blobs.delete(str(current.id))
        log.info("abandoned upload %s %s key=%s", current.id, current.scope, current.key)

    def expire_idle_uploads(self) -> int:
        """Drop this node's uploads that have received no bytes for `upload_idle_timeout`; one with a
        writer still registered is never idle. Files before rows, as every housekeeping pass."""
        idle = self.upload_idle_timeout
        # A direct upload's bytes never pass this server or its upload store, so no activity of theirs can be
        # seen here: those uploads end with the reservation TTL (expire_uploads) instead.
        if not idle or self.direct_upload_ttl is not None:
            return 0
        reserved_before = self.metadata.now() - idle
        gone = 0
        for entry in self.metadata.uploads_on_node(self.upload_node):
            if entry.state != UPLOADING or entry.reserved_at >= reserved_before:
                continue
            with self._commit_locks[entry.id % _COMMIT_LOCKS]:
                progress = self.staging.progress(entry.id)
                # No staging: dropped for space or not created yet; expire_uploads handles those rows.
                # Activity times come from the staging's clock (this host, or the object store): compared
                # with that clock's now, not the database's.
                quiet_since = datetime.now(UTC).replace(tzinfo=None) - idle
                if progress is None or progress.last_activity >= quiet_since:
                    continue
                current = self.metadata.get(entry.id)
                if current is None or current.state != UPLOADING:
                    continue
                self.staging.discard(entry.id)
                if self.metadata.discard_upload(entry.id):
                    gone += 1
                    log.info(
                        "expired upload %s %s key=%s: no bytes for %d s",
                        entry.id,
                        entry.scope,
                        entry.key,
                        idle.total_seconds(),
                    )
        return gone

    def upload_progress(self, entry: EntryInfo) -> Progress | None:
        """Bytes received so far and when bytes last arrived (naive UTC), or None when the upload's bytes
        are staged on another replica."""
        if entry.node != self.upload_node:
            return None
        return self.staging.progress(entry.id)
