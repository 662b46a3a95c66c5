"""Seeding caches for the management tests through the real v2 protocol (reserve, upload, finalize)."""

from __future__ import annotations

import hashlib

import httpx

from helpers import Server

TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"


def version_for(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


VERSION = version_for("default")


def save(
    server: Server,
    key: str,
    data: bytes,
    *,
    repo: str = "octo/app",
    ref: str = "refs/heads/main",
    version: str = VERSION,
) -> int:
    """Save one committed entry as a job of `repo` on `ref` would; returns its id."""
    token = server.token(repo, ref)
    headers = {"Authorization": f"Bearer {token}"}
    created = httpx.post(
        server.url + TWIRP + "CreateCacheEntry", json={"key": key, "version": version}, headers=headers
    ).json()
    assert created["ok"], created
    r = httpx.put(created["signed_upload_url"], content=data, headers={"x-ms-blob-type": "BlockBlob"})
    assert r.status_code == 201, r.text
    fin = httpx.post(
        server.url + TWIRP + "FinalizeCacheEntryUpload",
        json={"key": key, "version": version, "size_bytes": str(len(data))},
        headers=headers,
    ).json()
    assert fin["ok"], fin
    return int(fin["entry_id"])


def restore(
    server: Server, key: str, *, repo: str = "octo/app", ref: str = "refs/heads/main", version: str = VERSION
) -> str | None:
    """Look the key up (refreshing its last access); the matched key on a hit, else None."""
    token = server.token(repo, ref)
    got = httpx.post(
        server.url + TWIRP + "GetCacheEntryDownloadURL",
        json={"key": key, "version": version},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    return got.get("matched_key") if got.get("ok") else None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
