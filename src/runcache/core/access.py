"""Who may manage which repository's caches (the REST API, the CLI and the web page).

Two kinds of callers:

- management ("admin") tokens, scoped to one repository, one owner (org-wide) or the whole site,
  with a permission level: `read` lists and reads usage, `write` also deletes, `admin` also changes
  the storage and retention limits;
- job tokens (the cache protocol's `ac` tokens): `read` on their own repository when they can read
  any scope, and `write` there when they can write one, but a job may only delete entries of the
  scope it writes (its own ref), so a pull request job cannot wipe the default branch's caches.
  A job's permissions are not a ladder: a `write-only` job (cache-mode write-only: GitHub's "can
  save, cannot restore") may delete its own ref's caches, which is what replacing a cache takes,
  but may not list keys or read usage, since both are reads it was not given.

Repositories are named `owner/name`, or `id:<n>` when a GitHub token names its repository only by
id (`repository_for_id`); those are managed under GitHub's `/repositories/{repository_id}` paths.

A caller with no relation to a repository gets 404 (its existence is not revealed); a caller that
may see it but lacks the permission gets 403, as GitHub answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from runcache.core.errors import CacheError, NotFound
from runcache.core.keys import fold_repository
from runcache.core.scopes import Identity

NONE, READ, WRITE, ADMIN = 0, 1, 2, 3
LEVELS = {"read": READ, "write": WRITE, "admin": ADMIN}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}


class Forbidden(CacheError):
    """The caller may see the resource but lacks the permission for this action (HTTP 403)."""


ID_PREFIX = "id:"
MAX_REPOSITORY_ID = 2**63 - 1


def same_name(a: str, b: str) -> bool:
    """Owner and repository names compare case-insensitively, as on GitHub: the one rule of the
    management layers, folding as the metadata store does so that both agree on what one repository is."""
    return fold_repository(a) == fold_repository(b)


def repository_for_id(repository_id: int | str) -> str:
    """The name of a repository known only by its numeric id (a GitHub token with `repository_id` and
    no `repository`). One spelling per id, so `42` and `"42"` from two tokens are one repository.
    ValueError for anything but a positive integer."""
    if isinstance(repository_id, bool):
        raise ValueError(f"invalid repository id {repository_id!r}")
    if isinstance(repository_id, str):
        # ASCII digits only: int() would also take " 42", "4_2" and other scripts' digits.
        if not (repository_id.isascii() and repository_id.isdigit() and len(repository_id) <= 19):
            raise ValueError(f"invalid repository id {repository_id!r}")
        repository_id = int(repository_id)
    if not isinstance(repository_id, int) or not 0 < repository_id <= MAX_REPOSITORY_ID:
        raise ValueError(f"invalid repository id {repository_id!r}")
    return f"{ID_PREFIX}{repository_id}"


def repository_id_of(repository: str) -> int | None:
    """The id of an `id:<n>` repository name; None for an `owner/name`."""
    digits = repository.removeprefix(ID_PREFIX)
    if digits == repository:
        return None
    try:
        return int(digits) if repository_for_id(digits) == repository else None
    except ValueError:
        return None


def owner_of(repository: str) -> str | None:
    """The owner of an `owner/name` repository; None for one known only by id (it has no owner here)."""
    owner, slash, _ = repository.partition("/")
    return owner if slash else None


@dataclass(frozen=True)
class Principal:
    kind: str  # "admin" or "job"
    subject: str
    level: int
    repository: str | None = None  # repository-scoped token (admin or job)
    org: str | None = None  # org-wide admin token
    site: bool = False  # site-wide admin token
    write_scope: str | None = None  # a job token's own ref: the only scope it may delete from
    reads: bool = True  # False for a write-only job: its WRITE level does not include READ

    @classmethod
    def from_job(cls, identity: Identity) -> Principal:
        level = WRITE if identity.write_scope else READ if identity.readable_scopes else NONE
        return cls(
            "job",
            identity.subject,
            level,
            repository=identity.repository,
            write_scope=identity.write_scope,
            reads=bool(identity.readable_scopes),
        )

    @property
    def description(self) -> str:
        if self.site:
            return "every repository"
        if self.org:
            return f"the repositories of {self.org}"
        return str(self.repository)

    def relates_to(self, repository: str) -> bool:
        if self.site:
            return True
        if self.org is not None:
            # An `id:<n>` repository has no known owner, so no org token reaches it.
            owner = owner_of(repository)
            return owner is not None and same_name(owner, self.org)
        return self.repository is not None and same_name(self.repository, repository)

    def permits(self, needed: int) -> bool:
        """Whether this caller's permission covers `needed` (READ, WRITE or ADMIN) on a related repository."""
        if needed <= NONE:
            return True
        if needed == READ and not self.reads:
            return False
        return self.level >= needed

    def level_for(self, repository: str) -> int:
        return self.level if self.relates_to(repository) else NONE

    def require(self, repository: str, needed: int) -> None:
        if not self.relates_to(repository):
            raise NotFound(f"repository {repository} not found")
        if not self.permits(needed):
            if needed >= ADMIN:
                raise Forbidden("Must have admin rights to Repository.")
            raise Forbidden("Resource not accessible by integration")

    def require_org(self, org: str, needed: int) -> None:
        if self.site or (self.org is not None and same_name(self.org, org)):
            if not self.permits(needed):
                raise Forbidden("Resource not accessible by integration")
            return
        owner = owner_of(self.repository) if self.repository is not None else None
        if owner is not None and same_name(owner, org):
            raise Forbidden("Resource not accessible by integration")
        raise NotFound(f"organization {org} not found")

    def may_delete_scope(self, scope: str) -> bool:
        """Job tokens delete only from their own ref; management tokens with write from any."""
        if self.kind == "job":
            return self.write_scope is not None and scope == self.write_scope
        return self.level >= WRITE
