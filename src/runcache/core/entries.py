"""A cache entry as the rest of runcache sees it, and the states it passes through.

An entry is reserved `uploading`, claimed `committing` by the one commit that finishes it (still
invisible to lookups), then `committed`. The store keeps these as rows (store/models.py) and hands
them out as `EntryInfo`, so nothing above the store needs SQLAlchemy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from runcache.core.matching import Candidate

UPLOADING = "uploading"
COMMITTING = "committing"  # one commit has claimed the upload; still invisible to lookups
COMMITTED = "committed"


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
    owner: str | None = None
    node: str = ""  # the replica whose disk stages the upload

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.id, self.scope, self.key, self.version, self.created_at)
