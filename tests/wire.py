"""Raw protocol calls for tests that need more control than the real client gives (races, faults)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

import httpx

from helpers import Server

TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"
V1 = "/_apis/artifactcache/"
VERSION = "a" * 64


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def twirp(server: Server, method: str, body: dict, token: str | None) -> httpx.Response:
    headers = auth(token) if token else {}
    return httpx.post(server.url + TWIRP + method, json=body, headers=headers, timeout=60)


def v2_create(server: Server, token: str, key: str, version: str = VERSION) -> dict:
    return twirp(server, "CreateCacheEntry", {"key": key, "version": version}, token).json()


def v2_finalize(server: Server, token: str, key: str, size: int, version: str = VERSION) -> dict:
    body = {"key": key, "version": version, "size_bytes": str(size)}
    return twirp(server, "FinalizeCacheEntryUpload", body, token).json()


def v2_save(server: Server, token: str, key: str, data: bytes, version: str = VERSION) -> str:
    created = v2_create(server, token, key, version)
    assert created["ok"], created
    put = httpx.put(created["signed_upload_url"], content=data, headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201, put.text
    fin = v2_finalize(server, token, key, len(data), version)
    assert fin["ok"], fin
    return fin["entry_id"]


def v2_url(server: Server, token: str, key: str, version: str = VERSION) -> str:
    got = twirp(server, "GetCacheEntryDownloadURL", {"key": key, "version": version}, token).json()
    assert got["ok"], got
    return got["signed_download_url"]


def v2_restore(server: Server, token: str, key: str, version: str = VERSION) -> bytes:
    r = httpx.get(v2_url(server, token, key, version), timeout=60)
    assert r.status_code == 200, r.text
    return r.content


def block_id(i: int) -> str:
    return base64.b64encode(f"block-{i:06d}".encode()).decode()


def put_blocks(upload_url: str, blocks: Iterable[bytes]) -> list[str]:
    ids = []
    for i, body in enumerate(blocks):
        bid = block_id(i)
        r = httpx.put(upload_url + "&comp=block&blockid=" + bid, content=body)
        assert r.status_code == 201, r.text
        ids.append(bid)
    return ids


def put_block_list(upload_url: str, ids: list[str]) -> httpx.Response:
    xml = "<BlockList>" + "".join(f"<Latest>{b}</Latest>" for b in ids) + "</BlockList>"
    return httpx.put(upload_url + "&comp=blocklist", content=xml)


def v1_reserve(server: Server, tok: str, key: str, size: int | None, version: str = VERSION) -> httpx.Response:
    body: dict[str, object] = {"key": key, "version": version}
    if size is not None:
        body["cacheSize"] = size
    return httpx.post(server.url + V1 + "caches", json=body, headers=auth(tok))


def v1_patch(server: Server, tok: str, cache_id: int, start: int, data, crange: str | None = None, length=None):
    """One chunk; `data` may be bytes or an iterator of bytes (then `length` gives its size)."""
    size = len(data) if length is None else length
    rng = crange or f"bytes {start}-{start + size - 1}/*"
    return httpx.patch(
        f"{server.url}{V1}caches/{cache_id}",
        content=data,
        headers={**auth(tok), "Content-Range": rng, "Content-Type": "application/octet-stream"},
        timeout=60,
    )


def v1_commit(server: Server, tok: str, cache_id: int, size: int) -> httpx.Response:
    return httpx.post(f"{server.url}{V1}caches/{cache_id}", json={"size": size}, headers=auth(tok), timeout=60)


def v1_lookup(server: Server, tok: str, key: str, version: str = VERSION) -> httpx.Response:
    return httpx.get(server.url + V1 + "cache", params={"keys": key, "version": version}, headers=auth(tok))


def v1_save(server: Server, tok: str, key: str, data: bytes) -> int:
    r = v1_reserve(server, tok, key, len(data))
    assert r.status_code == 201, r.text
    cid = r.json()["cacheId"]
    if data:
        assert v1_patch(server, tok, cid, 0, data).status_code == 204
    assert v1_commit(server, tok, cid, len(data)).status_code == 204
    return cid


def v1_restore(server: Server, tok: str, key: str) -> bytes:
    hit = v1_lookup(server, tok, key)
    assert hit.status_code == 200, hit.text
    got = httpx.get(hit.json()["archiveLocation"], timeout=60)
    assert got.status_code == 200
    return got.content


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
