"""Web sessions of the Caches page: a random id in the browser's cookie, the rest on the server.

The cookie used to be the management token itself, so a copied cookie stayed a 30-day credential
after sign-out. Now the cookie carries only a random session id; the database keeps its SHA-256 (a
leaked table row cannot be replayed as a cookie), the management token it was opened with (verified
again on every request, so its expiry and scope still apply) and an expiry. Signing out deletes the
row, which ends every copy of the cookie at once. Expired rows are deleted when met and whenever a new
session is opened.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import Engine, String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from runcache.store.metadata import utcnow
from runcache.store.models import Base

MAX_SESSION_ID = 128  # token_urlsafe(32) is 43 characters; anything much longer is no session id


class WebSession(Base):
    __tablename__ = "web_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    def __init__(self, engine: Engine) -> None:
        # The server's schema (this table too) comes from the migrations (store/migrations). Only a bare
        # SQLite engine (tests, tools) gets the table here; never PostgreSQL, where replicas would race.
        if engine.dialect.name == "sqlite":
            Base.metadata.create_all(engine, tables=[WebSession.__table__])  # type: ignore[list-item]
        self._session = sessionmaker(engine, expire_on_commit=False)

    def create(self, token: str, *, expires_at: datetime) -> str:
        """Open a session for a verified management token; returns the id for the cookie (naive UTC expiry)."""
        session_id = secrets.token_urlsafe(32)
        now = utcnow()
        with self._session.begin() as s:
            s.execute(delete(WebSession).where(WebSession.expires_at <= now))
            s.add(WebSession(id_sha256=_digest(session_id), token=token, created_at=now, expires_at=expires_at))
        return session_id

    def token(self, session_id: str) -> str | None:
        """The management token of a live session; None for an unknown, ended or expired one."""
        if not session_id or len(session_id) > MAX_SESSION_ID:
            return None
        digest = _digest(session_id)
        with self._session.begin() as s:
            row = s.execute(select(WebSession).where(WebSession.id_sha256 == digest)).scalar_one_or_none()
            if row is None:
                return None
            if row.expires_at <= utcnow():
                s.delete(row)
                return None
            return row.token

    def delete(self, session_id: str) -> None:
        if not session_id or len(session_id) > MAX_SESSION_ID:
            return
        with self._session.begin() as s:
            s.execute(delete(WebSession).where(WebSession.id_sha256 == _digest(session_id)))
