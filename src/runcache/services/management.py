"""Cache management: list, delete, usage and limits, with the caller's permissions checked.

The REST API and the web page both call these methods; they only translate wire formats. Deletes
and limit changes go through `CacheService`, which owns eviction and blob removal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from runcache.core.access import ADMIN, READ, WRITE, Forbidden, Principal, repository_for_id, same_name
from runcache.core.entries import COMMITTED, EntryInfo
from runcache.core.errors import NotFound
from runcache.core.eviction import GB, validate_retention, validate_storage_limit
from runcache.core.keys import MAX_KEY_LENGTH
from runcache.core.listing import Page, ValidationFailed, validate_name
from runcache.core.scopes import normalize_ref
from runcache.services.cache import CacheService

log = logging.getLogger("runcache.management")
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class RepoUsage:
    full_name: str
    count: int
    size: int


@dataclass(frozen=True)
class Limits:
    storage_gb: int
    retention_days: int

    @property
    def storage_bytes(self) -> int:
        return self.storage_gb * GB


def repository_name(owner: str, repo: str) -> str:
    """`owner/repo` from path parameters; invalid names are reported as not found."""
    try:
        return f"{validate_name(owner, 'owner')}/{validate_name(repo, 'repository')}"
    except Exception:
        raise NotFound(f"repository {owner}/{repo} not found") from None


def repository_from_path(params: Mapping[str, str]) -> str:
    """The repository a REST or page path names: `{owner}/{repo}`, or `{repository_id}` for one known
    only by id. Invalid names and ids are reported as not found."""
    if "repository_id" in params:
        try:
            return repository_for_id(params["repository_id"])
        except ValueError:
            raise NotFound(f"repository {params['repository_id']} not found") from None
    return repository_name(params["owner"], params["repo"])


def normalize_filter_ref(ref: str | None) -> str | None:
    """`refs/heads/main`, `refs/pull/7/merge`; a bare branch name means `refs/heads/<name>`.

    None when there is no filter, and only then: callers test `ref_can_match` first, since a ref that
    is given but blank must narrow to nothing, not widen to every ref."""
    if ref is None or not ref.strip():
        return None
    return normalize_ref(ref)


def _searchable(text: str | None) -> bool:
    # A key filter that can never match a stored key (too long, NUL) simply matches nothing.
    return text is None or (len(text) <= MAX_KEY_LENGTH and "\x00" not in text)


def ref_can_match(ref: str | None) -> bool:
    """False for a ref filter that is given but matches no stored ref (blank, NUL, too long): such a
    filter selects nothing. Dropping it instead once turned `DELETE ?key=K&ref=%20` into "every ref"."""
    return ref is None or (_searchable(ref) and bool(ref.strip()))


class Management:
    def __init__(self, service: CacheService) -> None:
        self.service = service
        self.metadata = service.metadata

    # --- listing -----------------------------------------------------------------------------
    def list_caches(
        self,
        principal: Principal,
        repository: str,
        *,
        key: str | None = None,
        ref: str | None = None,
        sort: str = "last_accessed_at",
        direction: str = "desc",
        page: Page | None = None,
        created_before: datetime | None = None,
    ) -> tuple[int, list[EntryInfo]]:
        principal.require(repository, READ)
        if not _searchable(key) or not ref_can_match(ref):
            return 0, []
        return self.metadata.query_entries(
            repository=repository,
            key_prefix=key or None,
            ref=normalize_filter_ref(ref),
            sort=sort,
            direction=direction,
            limit=page.per_page if page else None,
            offset=page.offset if page else 0,
            created_before=created_before,
        )

    def entries_by_id(self, principal: Principal, repository: str, ids: list[int]) -> list[EntryInfo]:
        """The committed entries of this repository among `ids` (others are left out, not revealed)."""
        principal.require(repository, READ)
        found = []
        for i in ids:
            e = self.metadata.get(i) if 0 < i <= MAX_ID else None
            if e is not None and e.state == COMMITTED and same_name(e.repository, repository):
                found.append(e)
        return found

    def refs(self, principal: Principal, repository: str) -> list[str]:
        principal.require(repository, READ)
        return self.metadata.refs(repository)

    # --- deletes -----------------------------------------------------------------------------
    def delete_by_key(self, principal: Principal, repository: str, key: str, ref: str | None = None) -> list[EntryInfo]:
        """Every entry with exactly this key (any version; one ref if given). NotFound when none."""
        principal.require(repository, WRITE)
        if not key:
            raise ValidationFailed("key", "key is required", code="missing_field")
        if not ref_can_match(ref) or not _searchable(key):
            raise NotFound(f"no cache with key {key!r} in {repository}")
        ref = normalize_filter_ref(ref)
        if principal.kind == "job":
            # A job deletes from its own ref only; naming another ref is refused, not ignored.
            if ref is not None and not principal.may_delete_scope(ref):
                raise Forbidden(f"a job token may only delete caches of {principal.write_scope}")
            ref = principal.write_scope
        matches = self.metadata.entries_with_key(repository=repository, key=key, ref=ref)
        if not matches:
            raise NotFound(f"no cache with key {key!r} in {repository}")
        gone = self.service.delete_entries([e.id for e in matches])
        log.info("%s deleted %d entries with key %r from %s", principal.subject, len(gone), key, repository)
        return gone

    def delete_by_id(self, principal: Principal, repository: str, entry_id: int) -> EntryInfo:
        principal.require(repository, WRITE)
        entry = self.metadata.get(entry_id) if 0 < entry_id <= MAX_ID else None
        if entry is None or entry.state != COMMITTED or not same_name(entry.repository, repository):
            raise NotFound(f"no cache with id {entry_id} in {repository}")
        if not principal.may_delete_scope(entry.scope):
            raise Forbidden(f"a job token may only delete caches of {principal.write_scope}")
        gone = self.service.delete_entries([entry.id])
        if not gone:
            raise NotFound(f"no cache with id {entry_id} in {repository}")
        log.info("%s deleted entry %s (key %r) from %s", principal.subject, entry.id, entry.key, repository)
        return gone[0]

    def delete_ids(self, principal: Principal, repository: str, ids: list[int]) -> list[EntryInfo]:
        """Delete several entries of one repository (ids of other repositories are ignored)."""
        principal.require(repository, WRITE)
        wanted = [e.id for e in self.entries_by_id(principal, repository, ids) if principal.may_delete_scope(e.scope)]
        gone = self.service.delete_entries(wanted)
        log.info("%s deleted %d entries from %s", principal.subject, len(gone), repository)
        return gone

    def delete_matching(
        self,
        principal: Principal,
        repository: str,
        *,
        key: str | None,
        ref: str | None,
        created_before: datetime | None,
    ) -> list[EntryInfo]:
        """Bulk delete of a filtered set (the web page); only entries created up to `created_before`, so
        that nothing saved after the caller looked at the list is removed."""
        principal.require(repository, WRITE)
        _, entries = self.list_caches(principal, repository, key=key, ref=ref, created_before=created_before)
        return self.delete_ids(principal, repository, [e.id for e in entries])

    # --- usage ---------------------------------------------------------------------------------
    def repo_usage(self, principal: Principal, repository: str) -> RepoUsage:
        principal.require(repository, READ)
        count, size = self.metadata.usage_totals(repository=repository)
        return RepoUsage(repository, count, size)

    def org_usage(self, principal: Principal, org: str) -> tuple[int, int]:
        principal.require_org(org, READ)
        return self.metadata.usage_totals(owner=org)

    def org_usage_by_repository(self, principal: Principal, org: str, page: Page) -> tuple[int, list[RepoUsage]]:
        principal.require_org(org, READ)
        total, rows = self.metadata.usage_by_repository(owner=org, limit=page.per_page, offset=page.offset)
        return total, [RepoUsage(*r) for r in rows]

    def visible_repositories(self, principal: Principal) -> list[RepoUsage]:
        """Repositories with caches that the caller may read (its own one always, even when empty)."""
        if principal.site:
            rows = self.metadata.usage_by_repository()[1]
        elif principal.org is not None:
            rows = self.metadata.usage_by_repository(owner=principal.org)[1]
        else:
            assert principal.repository is not None
            count, size = self.metadata.usage_totals(repository=principal.repository)
            rows = [(principal.repository, count, size)]
        return [RepoUsage(*r) for r in rows]

    # --- limits --------------------------------------------------------------------------------
    def limits(self, principal: Principal, repository: str) -> Limits:
        principal.require(repository, READ)
        return Limits(*self.service.limits(repository))

    def set_storage_limit(self, principal: Principal, repository: str, value: object) -> list[EntryInfo]:
        principal.require(repository, ADMIN)
        try:
            gb = validate_storage_limit(value)
        except ValueError as exc:
            raise ValidationFailed("max_cache_size_gb", str(exc)) from None
        self.metadata.set_policy(repository, max_cache_size_gb=gb)
        log.info("%s set the storage limit of %s to %d GB", principal.subject, repository, gb)
        return self.service.enforce_storage_limit(repository)

    def set_retention_limit(self, principal: Principal, repository: str, value: object) -> list[EntryInfo]:
        principal.require(repository, ADMIN)
        try:
            days = validate_retention(value)
        except ValueError as exc:
            raise ValidationFailed("max_cache_retention_days", str(exc)) from None
        self.metadata.set_policy(repository, max_cache_retention_days=days)
        log.info("%s set the retention limit of %s to %d days", principal.subject, repository, days)
        return self.service.enforce_retention()
