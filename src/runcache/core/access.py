"""Who may manage which repository's caches (the REST API, the CLI and the web page).

Two kinds of callers:

- management ("admin") tokens, scoped to one repository, one owner (org-wide) or the whole site,
  with a permission level: `read` lists and reads usage, `write` also deletes, `admin` also changes
  the storage and retention limits;
- job tokens (the cache protocol's `ac` tokens): `read` on their own repository when they can read
  any scope, and `write` there when they can write one, but a job may only delete entries of the
  scope it writes (its own ref), so a pull request job cannot wipe the default branch's caches.

A caller with no relation to a repository gets 404 (its existence is not revealed); a caller that
may see it but lacks the permission gets 403, as GitHub answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from runcache.core.errors import CacheError, NotFound
from runcache.core.scopes import Identity

NONE, READ, WRITE, ADMIN = 0, 1, 2, 3
LEVELS = {"read": READ, "write": WRITE, "admin": ADMIN}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}


class Forbidden(CacheError):
    """The caller may see the resource but lacks the permission for this action (HTTP 403)."""


def same_name(a: str, b: str) -> bool:
    """Owner and repository names compare case-insensitively, as on GitHub."""
    return a.casefold() == b.casefold()


def owner_of(repository: str) -> str:
    return repository.split("/", 1)[0]


@dataclass(frozen=True)
class Principal:
    kind: str  # "admin" or "job"
    subject: str
    level: int
    repository: str | None = None  # repository-scoped token (admin or job)
    org: str | None = None  # org-wide admin token
    site: bool = False  # site-wide admin token
    write_scope: str | None = None  # a job token's own ref: the only scope it may delete from

    @classmethod
    def from_job(cls, identity: Identity) -> Principal:
        level = WRITE if identity.write_scope else READ if identity.readable_scopes else NONE
        return cls("job", identity.subject, level, repository=identity.repository, write_scope=identity.write_scope)

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
            return same_name(owner_of(repository), self.org)
        return self.repository is not None and same_name(self.repository, repository)

    def level_for(self, repository: str) -> int:
        return self.level if self.relates_to(repository) else NONE

    def require(self, repository: str, needed: int) -> None:
        if not self.relates_to(repository):
            raise NotFound(f"repository {repository} not found")
        if self.level < needed:
            if needed >= ADMIN:
                raise Forbidden("Must have admin rights to Repository.")
            raise Forbidden("Resource not accessible by integration")

    def require_org(self, org: str, needed: int) -> None:
        if self.site or (self.org is not None and same_name(self.org, org)):
            if self.level < needed:
                raise Forbidden("Resource not accessible by integration")
            return
        if self.repository is not None and same_name(owner_of(self.repository), org):
            raise Forbidden("Resource not accessible by integration")
        raise NotFound(f"organization {org} not found")

    def may_delete_scope(self, scope: str) -> bool:
        """Job tokens delete only from their own ref; management tokens with write from any."""
        if self.kind == "job":
            return self.write_scope is not None and scope == self.write_scope
        return self.level >= WRITE
