"""Eviction, retention, deletes and management permissions over real SQLite and disk stores."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from runcache.auth import Authenticator
from runcache.auth.tokens import TokenIssuer
from runcache.core.access import ADMIN, READ, WRITE, Forbidden, Principal
from runcache.core.errors import NotFound, Unauthenticated
from runcache.core.eviction import GB
from runcache.core.listing import Page, ValidationFailed
from runcache.core.scopes import Identity, build_scopes
from runcache.server.app import _janitor
from runcache.services.cache import CacheService
from runcache.services.management import Management
from runcache.store.disk import DiskBlobStore
from runcache.store.metadata import MetadataStore, utcnow
from runcache.store.models import Entry

V = "f" * 64
SITE = Principal("admin", "test", ADMIN, site=True)


@pytest.fixture
def svc(tmp_path: Path) -> CacheService:
    from runcache.store.staging import Staging

    return CacheService(
        MetadataStore(f"sqlite:///{tmp_path / 'm.db'}"),
        DiskBlobStore(tmp_path / "blobs"),
        Staging(tmp_path / "uploads"),
        node_id="n1",
        reservation_ttl=3600,
        storage_limit_gb=1,
        retention_days=7,
    )


def ident(ref: str = "refs/heads/main", repo: str = "o/r") -> Identity:
    return Identity(repo, build_scopes(ref, default_branch="main"))


def save(svc: CacheService, key: str, size: int, *, ref: str = "refs/heads/main", repo: str = "o/r") -> int:
    who = ident(ref, repo)
    entry = svc.reserve(who, key, V, size)
    w = svc.chunk_writer(entry, 0, size)
    w.write(b"x" * size)
    w.finish()
    return svc.commit(entry, size).id


def fake_size(svc: CacheService, entry_id: int, size: int) -> None:
    """Pretend an entry is large without writing gigabytes: eviction reads sizes from the metadata."""
    with svc.metadata._session.begin() as s:
        s.execute(update(Entry).where(Entry.id == entry_id).values(size=size))


def age(svc: CacheService, entry_id: int, days: float) -> None:
    with svc.metadata._session.begin() as s:
        s.execute(update(Entry).where(Entry.id == entry_id).values(last_accessed_at=utcnow() - timedelta(days=days)))


def ids(svc: CacheService, repo: str = "o/r") -> set[int]:
    return {e.id for e in svc.metadata.query_entries(repository=repo)[1]}


# --- eviction after commit --------------------------------------------------------------------------
def test_commit_over_the_limit_evicts_lru_and_keeps_the_new_entry(svc: CacheService) -> None:
    a = save(svc, "a", 10)
    b = save(svc, "b", 10)
    c = save(svc, "c", 10)
    fake_size(svc, a, GB // 2)
    fake_size(svc, b, GB // 2)
    fake_size(svc, c, GB // 4)
    time.sleep(0.01)
    svc.lookup(ident(), ["a"], V)  # a is now more recently used than b and c
    d = save(svc, "d", 10)  # 1.25 GiB in all: committing d evicts b, the least recently used
    assert ids(svc) == {a, c, d}
    fake_size(svc, d, GB // 2)
    gone = svc.enforce_storage_limit("o/r", keep=[d])  # what commit runs (d's size was faked after it)
    assert [e.id for e in gone] == [c]
    assert ids(svc) == {a, d}
    assert not svc.blobs.contains(str(b)) and not svc.blobs.contains(str(c)) and svc.blobs.contains(str(a))


def test_commit_itself_enforces_the_limit(svc: CacheService) -> None:
    old = save(svc, "old", 10)
    fake_size(svc, old, GB)
    new = save(svc, "new", 10)  # 1 GiB + 10 B > 1 GiB: the older entry goes, the new one stays
    assert ids(svc) == {new}
    assert not svc.blobs.contains(str(old))


def test_a_new_entry_larger_than_the_limit_is_kept(svc: CacheService) -> None:
    other = save(svc, "x", 10)
    big = save(svc, "big", 20)
    fake_size(svc, big, 2 * GB)
    svc.enforce_storage_limit("o/r", keep=[big])
    assert ids(svc) == {big}
    assert other not in ids(svc)


def test_limits_are_per_repository(svc: CacheService) -> None:
    mine = save(svc, "a", 10, repo="o/r")
    theirs = save(svc, "a", 10, repo="o/other")
    fake_size(svc, theirs, 2 * GB)
    save(svc, "b", 10, repo="o/r")
    assert mine in ids(svc) and theirs in ids(svc, "o/other")


def test_lowering_the_storage_limit_evicts_at_once(svc: CacheService) -> None:
    svc.default_storage_limit_gb = 10
    mgmt = Management(svc)
    a, b = save(svc, "a", 10), save(svc, "b", 10)
    fake_size(svc, a, 2 * GB)
    fake_size(svc, b, 2 * GB)
    gone = mgmt.set_storage_limit(SITE, "o/r", 3)
    assert [e.id for e in gone] == [a] and ids(svc) == {b}
    assert mgmt.limits(SITE, "O/R").storage_gb == 3  # stored per repository, names case-insensitive


# --- retention --------------------------------------------------------------------------------------
def test_retention_removes_entries_unused_longer_than_the_limit(svc: CacheService) -> None:
    fresh, stale, other_repo = save(svc, "fresh", 3), save(svc, "stale", 3), save(svc, "s", 3, repo="o/b")
    age(svc, fresh, 6.9)
    age(svc, stale, 7.1)
    age(svc, other_repo, 7.1)
    gone = svc.enforce_retention()
    assert {e.id for e in gone} == {stale, other_repo}
    assert ids(svc) == {fresh}
    assert not svc.blobs.contains(str(stale))


def test_retention_honours_each_repositorys_limit(svc: CacheService) -> None:
    mgmt = Management(svc)
    a, b = save(svc, "a", 1, repo="o/short"), save(svc, "b", 1, repo="o/long")
    age(svc, a, 2.5)
    age(svc, b, 20)
    mgmt.set_retention_limit(SITE, "o/long", 30)
    assert a in ids(svc, "o/short")
    mgmt.set_retention_limit(SITE, "o/short", 2)  # applied at once
    assert ids(svc, "o/short") == set() and ids(svc, "o/long") == {b}


def test_janitor_runs_the_retention_pass(svc: CacheService) -> None:
    stale = save(svc, "stale", 1)
    age(svc, stale, 8)

    async def run() -> None:
        task = asyncio.create_task(_janitor(svc, 0.01))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if not ids(svc):
                break
        task.cancel()

    asyncio.run(run())
    assert ids(svc) == set() and not svc.blobs.contains(str(stale))


# --- management -------------------------------------------------------------------------------------
def test_delete_by_key_matches_exact_keys_in_every_ref_and_version(svc: CacheService) -> None:
    mgmt = Management(svc)
    main = save(svc, "npm-1", 1)
    feature = save(svc, "NPM-1", 1, ref="refs/heads/feature")  # keys compare as lookups do
    save(svc, "npm-12", 1)  # a prefix match is not a key match
    gone = mgmt.delete_by_key(SITE, "o/r", "npm-1")
    assert {e.id for e in gone} == {main, feature}
    with pytest.raises(NotFound):
        mgmt.delete_by_key(SITE, "o/r", "npm-1")
    with pytest.raises(ValidationFailed):
        mgmt.delete_by_key(SITE, "o/r", "")


def test_job_tokens_delete_only_their_own_ref(svc: CacheService) -> None:
    mgmt = Management(svc)
    main = save(svc, "k", 1)
    feature = save(svc, "k", 1, ref="refs/heads/feature")
    job = Principal.from_job(ident("refs/heads/feature"))
    with pytest.raises(Forbidden):
        mgmt.delete_by_id(job, "o/r", main)
    with pytest.raises(Forbidden):
        mgmt.delete_by_key(job, "o/r", "k", "refs/heads/main")
    assert [e.id for e in mgmt.delete_by_key(job, "o/r", "k")] == [feature]  # no ref: its own ref only
    assert ids(svc) == {main}
    with pytest.raises(NotFound):
        mgmt.list_caches(job, "o/other")


def test_delete_by_id_is_confined_to_the_repository(svc: CacheService) -> None:
    mgmt = Management(svc)
    theirs = save(svc, "k", 1, repo="o/other")
    with pytest.raises(NotFound):
        mgmt.delete_by_id(SITE, "o/r", theirs)
    with pytest.raises(NotFound):
        mgmt.delete_by_id(SITE, "o/r", 2**63)
    pending = svc.reserve(ident(), "pending", V, 1)
    with pytest.raises(NotFound):  # uploads in flight are not caches yet
        mgmt.delete_by_id(SITE, "o/r", pending.id)
    mgmt.delete_by_id(SITE, "o/other", theirs)
    assert not svc.blobs.contains(str(theirs))


def test_bulk_delete_spares_entries_saved_after_the_list_was_shown(svc: CacheService) -> None:
    mgmt = Management(svc)
    a = save(svc, "npm-a", 1)
    b = save(svc, "npm-b", 1)
    keep = save(svc, "pip-a", 1)
    as_of = utcnow()
    time.sleep(0.01)
    late = save(svc, "npm-late", 1)
    gone = mgmt.delete_matching(SITE, "o/r", key="npm-", ref=None, created_before=as_of)
    assert {e.id for e in gone} == {a, b}
    assert ids(svc) == {keep, late}


def test_listing_sorts_filters_and_pages(svc: CacheService) -> None:
    mgmt = Management(svc)
    small = save(svc, "k-small", 1)
    big = save(svc, "k-big", 30, ref="refs/heads/feature")
    mid = save(svc, "other", 20)
    total, page = mgmt.list_caches(SITE, "o/r", sort="size_in_bytes", direction="desc", page=Page(1, 2))
    assert total == 3 and [e.id for e in page] == [big, mid]
    assert [e.id for e in mgmt.list_caches(SITE, "o/r", sort="size_in_bytes", page=Page(2, 2))[1]] == [small]
    assert [e.id for e in mgmt.list_caches(SITE, "o/r", key="K-", sort="created_at", direction="asc")[1]] == [
        small,
        big,
    ]
    assert [e.id for e in mgmt.list_caches(SITE, "o/r", ref="feature")[1]] == [big]  # bare branch name
    assert mgmt.list_caches(SITE, "o/r", key="x" * 600) == (0, [])
    assert mgmt.list_caches(SITE, "o/r", key="a\x00b") == (0, [])
    assert mgmt.refs(SITE, "o/r") == ["refs/heads/feature", "refs/heads/main"]


def test_usage_and_visible_repositories(svc: CacheService) -> None:
    mgmt = Management(svc)
    save(svc, "a", 5, repo="octo/one")
    save(svc, "b", 7, repo="octo/one")
    save(svc, "c", 100, repo="octo/two")
    save(svc, "d", 1, repo="else/three")
    assert mgmt.repo_usage(SITE, "octo/one").size == 12
    assert mgmt.org_usage(SITE, "octo") == (3, 112)
    total, rows = mgmt.org_usage_by_repository(SITE, "OCTO", Page(1, 1))
    assert total == 2 and [(r.full_name, r.count, r.size) for r in rows] == [("octo/two", 1, 100)]
    org = Principal("admin", "t", READ, org="octo")
    assert {r.full_name for r in mgmt.visible_repositories(org)} == {"octo/one", "octo/two"}
    repo = Principal("admin", "t", READ, repository="octo/empty")
    assert [(r.full_name, r.count) for r in mgmt.visible_repositories(repo)] == [("octo/empty", 0)]
    with pytest.raises(Forbidden):
        mgmt.set_retention_limit(Principal("admin", "t", WRITE, site=True), "octo/one", 3)


# --- management tokens ------------------------------------------------------------------------------
def test_management_tokens_are_separate_from_job_tokens(tmp_path: Path) -> None:
    issuer = TokenIssuer(b"k" * 32)
    auth = Authenticator(issuer)
    p = auth.principal(f"Bearer {issuer.issue_admin(repository='octo/app', permission='write')}")
    assert (p.kind, p.repository, p.level) == ("admin", "octo/app", WRITE)
    p = auth.principal(f"token {issuer.issue_admin(org='octo')}")  # Octokit's scheme
    assert (p.org, p.level) == ("octo", ADMIN)
    assert auth.principal(f"Bearer {issuer.issue_admin(site=True, permission='read')}").site
    job = issuer.issue(repository="octo/app", scopes=build_scopes("main"))
    assert auth.principal(f"Bearer {job}").kind == "job"
    with pytest.raises(Unauthenticated, match="management token"):
        auth.principal(f"Bearer {job}", admin_only=True)
    with pytest.raises(Unauthenticated):  # a management token is no job token for the cache protocol
        auth.identify(f"Bearer {issuer.issue_admin(site=True)}")
    with pytest.raises(Unauthenticated):
        auth.principal(f"Bearer {TokenIssuer(b'other' * 8).issue_admin(site=True)}")
    with pytest.raises(Unauthenticated):
        auth.principal(f"Bearer {issuer.issue_admin(site=True, ttl_seconds=-60)}")
    with pytest.raises(Unauthenticated):
        auth.principal(None)
    with pytest.raises(ValueError):
        issuer.issue_admin(repository="octo/app", org="octo")
    with pytest.raises(ValueError):
        issuer.issue_admin(repository="nope")
