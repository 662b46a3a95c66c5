"""CacheService over real SQLite and disk stores, without HTTP."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

from runcache.core.errors import AlreadyExists, IncompleteUpload, WriteDenied
from runcache.core.scopes import Identity, build_scopes
from runcache.services.cache import CacheService
from runcache.store.disk import DiskBlobStore
from runcache.store.metadata import MetadataStore
from runcache.store.staging import Staging

V = "f" * 64


@pytest.fixture
def svc(tmp_path: Path) -> CacheService:
    return CacheService(
        MetadataStore(f"sqlite:///{tmp_path / 'm.db'}"),
        DiskBlobStore(tmp_path / "blobs"),
        Staging(tmp_path / "uploads"),
        node_id="n1",
        reservation_ttl=3600,
    )


def ident(ref: str = "refs/heads/main", mode: str = "write") -> Identity:
    return Identity("o/r", build_scopes(ref, default_branch="main", mode=mode))


def save(svc: CacheService, key: str, data: bytes, who: Identity | None = None) -> int:
    who = who or ident()
    entry = svc.reserve(who, key, V, len(data))
    w = svc.chunk_writer(entry, 0, len(data))
    w.write(data)
    w.finish()
    return svc.commit(entry, len(data)).id


def test_lookup_hit_updates_last_access(svc: CacheService) -> None:
    eid = save(svc, "k", b"abc")
    before = svc.metadata.get(eid)
    assert before is not None
    time.sleep(0.01)
    hit = svc.lookup(ident(), ["k"], V)
    assert hit is not None and hit.exact and hit.entry.last_accessed_at > before.last_accessed_at
    assert hit.entry.created_at == before.created_at


def test_commit_records_sha256_and_size(svc: CacheService) -> None:
    eid = save(svc, "k", b"hello")
    e = svc.metadata.get(eid)
    assert e and e.size == 5 and e.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


def test_incomplete_upload_is_not_committed_and_stays_invisible(svc: CacheService) -> None:
    entry = svc.reserve(ident(), "k", V, 10)
    w = svc.chunk_writer(entry, 0, 4)
    w.write(b"1234")
    w.finish()
    with pytest.raises(IncompleteUpload):
        svc.commit(entry, 10)
    assert svc.lookup(ident(), ["k"], V) is None


def test_writes_only_to_own_scope_and_immutable(svc: CacheService) -> None:
    save(svc, "k", b"main")
    with pytest.raises(AlreadyExists, match=r"Cache already exists\. Scope: refs/heads/main, Key: k,"):
        svc.reserve(ident(), "K", V, 1)
    feature = ident("refs/heads/feature")
    save(svc, "k", b"feature", feature)  # same key, other scope: a separate entry
    assert svc.lookup(feature, ["k"], V).entry.scope == "refs/heads/feature"  # type: ignore[union-attr]
    with pytest.raises(WriteDenied):
        svc.reserve(ident(mode="read"), "x", V, 1)


def test_missing_blob_is_a_miss(svc: CacheService) -> None:
    eid = save(svc, "k", b"abc")
    svc.blobs.delete(str(eid))
    assert svc.lookup(ident(), ["k"], V) is None


def test_recover_drops_dead_uploads_and_orphan_blobs(svc: CacheService, tmp_path: Path) -> None:
    kept = save(svc, "kept", b"abc")
    dead = svc.reserve(ident(), "dead", V, 3)
    orphan, young = tmp_path / "orphan", tmp_path / "young"
    orphan.write_bytes(b"zzz")
    young.write_bytes(b"yyy")
    svc.blobs.put_file("999", orphan, size=3, sha256="")
    svc.blobs.put_file("998", young, size=3, sha256="")
    two_hours_ago = time.time() - 7200
    os.utime(svc.blobs.local_path("999"), (two_hours_ago, two_hours_ago))  # type: ignore[attr-defined]
    svc.recover()
    assert svc.metadata.get(dead.id) is None and not svc.staging.exists(dead.id)
    assert not svc.blobs.contains("999") and svc.blobs.contains(str(kept))
    # Younger than the reservation TTL: maybe another replica's commit in flight, so it stays.
    assert svc.blobs.contains("998")
    assert svc.reserve(ident(), "dead", V, 3).id != dead.id


def test_put_blob_hash_recorded_while_writing_matches_the_bytes(svc: CacheService) -> None:
    entry = svc.reserve(ident(), "blob", V, None)
    w = svc.whole_writer(entry)
    w.write(b"hello ")
    w.write(b"world")
    w.finish()
    assert svc.commit(entry, 11).sha256 == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"


def test_a_later_range_write_invalidates_the_recorded_hash(svc: CacheService) -> None:
    entry = svc.reserve(ident(), "mixed", V, None)
    w = svc.whole_writer(entry)
    w.write(b"hello world")
    w.finish()
    r = svc.chunk_writer(entry, 0, 5)
    r.write(b"HELLO")
    r.finish()
    import hashlib

    assert svc.commit(entry, 11).sha256 == hashlib.sha256(b"HELLO world").hexdigest()


def test_block_list_hash_covers_the_listed_order(svc: CacheService) -> None:
    import base64
    import hashlib

    entry = svc.reserve(ident(), "blocks", V, None)
    ids = [base64.b64encode(f"b{i}".encode()).decode() for i in range(3)]
    for bid, body in zip(ids, (b"AA", b"BB", b"CC"), strict=True):
        bw = svc.block_writer(entry, bid)
        bw.write(body)
        bw.finish()
    assert svc.put_block_list(entry, [ids[2], ids[0]]) == 4
    assert svc.commit(entry, 4).sha256 == hashlib.sha256(b"CCAA").hexdigest()


def test_blob_and_its_folder_are_fsynced_before_the_row_is_committed(
    svc: CacheService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    events: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    real_commit = svc.metadata.commit

    def commit(entry_id: int, **kwargs: object):
        events.append("row committed")
        return real_commit(entry_id, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(svc.metadata, "commit", commit)
    eid = save(svc, "durable", b"bytes on disk")
    blob = svc.blobs.parts(str(eid))[0]  # type: ignore[index]
    committed_at = events.index("row committed")
    synced = events[:committed_at]
    assert any(e.startswith("fsync ") and e.endswith("/data") for e in synced)  # the staged file's bytes
    assert f"fsync {blob.parent}" in synced  # the name it got in the blob store


def test_two_part_builds_of_one_blob_never_share_a_folder(tmp_path: Path) -> None:
    from runcache.store.disk import DiskBlobStore

    store = DiskBlobStore(tmp_path / "blobs")
    first, second = [], []
    for i, bucket in enumerate((first, second)):
        for j in range(3):
            p = tmp_path / f"p{i}{j}"
            p.write_bytes(bytes([i]) * 10)
            bucket.append(p)
    store.put_parts("7", first, size=30, sha256="")
    with pytest.raises(OSError):
        store.put_parts("7", second, size=30, sha256="")  # never swaps or mixes into a committed blob
    assert b"".join(p.read_bytes() for p in store.parts("7") or []) == b"\0" * 30
    assert [p.name for p in (tmp_path / "blobs").rglob(".*")] == []  # no half-built folder left


def test_ranked_candidates_pick_what_the_rule_picks_from_every_entry(svc: CacheService) -> None:
    """The store narrows candidates in SQL (exact + newest per scope and prefix); the answer must be the
    one `find_match` gives over all committed entries."""
    import random

    from runcache.core.matching import find_match

    rng = random.Random(7)
    refs = ["refs/heads/main", "refs/heads/feature", "refs/pull/3/merge"]
    keys = [f"{os}-{tool}-{n}" for os in ("Linux", "linux", "macOS") for tool in ("pip", "npm") for n in range(4)]
    for i in range(120):
        who = Identity("o/r", build_scopes(rng.choice(refs), default_branch="main"))
        with contextlib.suppress(AlreadyExists):
            save(svc, rng.choice(keys) + ("-x" if i % 3 else ""), b"", who)
    everything = [e.candidate for e in svc.metadata.list_entries(repository="o/r")]
    for _ in range(200):
        ref = rng.choice(refs)
        who = Identity("o/r", build_scopes(ref, default_branch="main", base_ref="feature"))
        lookup = [
            rng.choice([*keys, "Linux-", "linux-pip", "macOS-npm-1", "nothing"]) for _ in range(rng.randint(1, 4))
        ]
        want = find_match(everything, lookup, V, who.readable_scopes)
        got = svc.lookup(who, lookup, V)
        assert (got.entry.id if got else None) == (want.entry.id if want else None), lookup
        assert (got.exact if got else None) == (want.exact if want else None)
