"""Wire-level behaviour beyond what the JS client exercises: other clients' shapes, bad input, auth, blobs."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from helpers import Server, StandIn, serve_stand_in
from wire import TWIRP, V1, VERSION, auth, twirp, v1_commit, v1_patch, v1_reserve, v2_save, v2_url

# Every test taking `server` runs on the embedded default and on scale-out (tests/conftest.py).
BOTH_BACKENDS = True


# --- authentication ------------------------------------------------------------------------------
def test_no_token_is_401_and_reveals_nothing(server: Server) -> None:
    v2_save(server, server.token(), "secret-key", b"payload")
    r = twirp(server, "GetCacheEntryDownloadURL", {"key": "secret-key", "version": VERSION}, None)
    assert r.status_code == 401
    assert r.json()["code"] == "unauthenticated" and "secret-key" not in r.text
    r = httpx.get(server.url + V1 + "cache", params={"keys": "secret-key", "version": VERSION})
    assert r.status_code == 401 and "message" in r.json()
    r = twirp(server, "CreateCacheEntry", {"key": "x", "version": VERSION}, "not-a-jwt")
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"


def test_token_signed_by_another_server_is_rejected(server: Server, tmp_path: Path) -> None:
    other = Server(tmp_path / "other-data")
    other.data_dir.mkdir()
    forged = other.token()  # same issuer name, different secret
    r = twirp(server, "CreateCacheEntry", {"key": "x", "version": VERSION}, forged)
    assert r.status_code == 401


def test_expired_token_is_rejected(server: Server) -> None:
    token = server.token(ttl=-10)
    assert twirp(server, "CreateCacheEntry", {"key": "x", "version": VERSION}, token).status_code == 401


# --- twirp shapes --------------------------------------------------------------------------------
def test_twirp_errors_are_always_json(server: Server) -> None:
    tok = server.token()
    r = httpx.post(server.url + TWIRP + "CreateCacheEntry", content=b"{not json", headers=auth(tok))
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument"
    r = twirp(server, "NoSuchMethod", {}, tok)
    assert r.status_code == 404 and r.json()["code"] == "bad_route"
    r = httpx.get(server.url + TWIRP + "CreateCacheEntry")
    assert r.json()["code"] == "bad_route"
    r = twirp(server, "CreateCacheEntry", {"key": "a,b", "version": VERSION}, tok)
    assert r.status_code == 400 and "cannot contain commas" in r.json()["msg"]
    r = twirp(
        server,
        "GetCacheEntryDownloadURL",
        {"key": "k", "restore_keys": [f"r{i}" for i in range(10)], "version": VERSION},
        tok,
    )
    assert r.status_code == 400 and "maximum of 10" in r.json()["msg"]


def test_go_client_shapes_camel_case_numbers_and_null_lists(server: Server) -> None:
    tok = server.token()
    created = twirp(server, "CreateCacheEntry", {"key": "buildx-1", "version": VERSION}, tok).json()
    url = created["signedUploadUrl"] if "signedUploadUrl" in created else created["signed_upload_url"]
    httpx.put(url, content=b"0123456789", headers={"x-ms-blob-type": "BlockBlob"}).raise_for_status()
    fin = twirp(server, "FinalizeCacheEntryUpload", {"key": "buildx-1", "version": VERSION, "sizeBytes": 10}, tok)
    assert fin.json()["ok"] and isinstance(fin.json()["entry_id"], str)
    got = twirp(server, "GetCacheEntryDownloadURL", {"key": "buildx-1", "restoreKeys": None, "version": VERSION}, tok)
    assert got.json()["matched_key"] == "buildx-1"
    got = twirp(
        server, "GetCacheEntryDownloadURL", {"key": "nope", "restore_keys": ["buildx-"], "version": VERSION}, tok
    )
    assert got.json()["ok"] and got.json()["matched_key"] == "buildx-1"


def test_create_twice_is_ok_false_not_an_error(server: Server) -> None:
    tok = server.token()
    first = twirp(server, "CreateCacheEntry", {"key": "dup", "version": VERSION}, tok).json()
    assert first["ok"]
    second = twirp(server, "CreateCacheEntry", {"key": "dup", "version": VERSION}, tok)
    assert second.status_code == 200 and second.json()["ok"] is False
    assert "being created" in second.json()["message"]


def test_finalize_with_wrong_size_fails_and_nothing_is_visible(server: Server) -> None:
    tok = server.token()
    created = twirp(server, "CreateCacheEntry", {"key": "short", "version": VERSION}, tok).json()
    httpx.put(created["signed_upload_url"], content=b"12345", headers={"x-ms-blob-type": "BlockBlob"})
    fin = twirp(server, "FinalizeCacheEntryUpload", {"key": "short", "version": VERSION, "size_bytes": "9"}, tok)
    assert fin.json()["ok"] is False and "5 of 9" in fin.json()["message"]
    got = twirp(server, "GetCacheEntryDownloadURL", {"key": "short", "version": VERSION}, tok).json()
    assert got["ok"] is False
    fin = twirp(server, "FinalizeCacheEntryUpload", {"key": "nothing", "version": VERSION, "size_bytes": "1"}, tok)
    assert fin.json()["ok"] is False


# --- unknown services ----------------------------------------------------------------------------
def test_unknown_twirp_service_refused_without_upstream(server: Server) -> None:
    r = httpx.post(server.url + "/twirp/github.actions.results.api.v1.ArtifactService/CreateArtifact", json={})
    assert r.status_code == 404 and r.json()["code"] == "bad_route" and "upstream" in r.json()["msg"]


@pytest.fixture
def upstream() -> Iterator[tuple[str, list[dict]]]:
    seen: list[dict] = []

    class Handler(StandIn):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append({"path": self.path, "body": json.loads(body), "auth": self.headers.get("Authorization")})
            self.reply_json({"ok": True, "signed_upload_url": "https://elsewhere/upload"})

    httpd, url = serve_stand_in(Handler)
    yield url, seen
    httpd.shutdown()


def test_unknown_twirp_service_forwarded_to_upstream(tmp_path: Path, upstream: tuple[str, list[dict]]) -> None:
    url, seen = upstream
    srv = Server(tmp_path / "d", extra_args=["--results-upstream", url]).start()
    try:
        r = httpx.post(
            srv.url + "/twirp/github.actions.results.api.v1.ArtifactService/CreateArtifact",
            json={"name": "logs"},
            headers={"Authorization": "Bearer job-token"},
        )
        assert r.status_code == 200 and r.json()["signed_upload_url"] == "https://elsewhere/upload"
        assert seen == [
            {
                "path": "/twirp/github.actions.results.api.v1.ArtifactService/CreateArtifact",
                "body": {"name": "logs"},
                "auth": "Bearer job-token",
            }
        ]
    finally:
        srv.stop()


# --- v1 uploads ----------------------------------------------------------------------------------
def test_v1_out_of_order_chunks_holes_and_bad_ranges(server: Server) -> None:
    tok = server.token()
    data = bytes(range(256)) * 4  # 1024 bytes
    cid = v1_reserve(server, tok, "chunks", len(data)).json()["cacheId"]
    assert v1_patch(server, tok, cid, 512, data[512:]).status_code == 204
    r = v1_commit(server, tok, cid, len(data))
    assert r.status_code == 400 and "missing bytes 0-511" in r.json()["message"]
    assert v1_patch(server, tok, cid, 0, data[:10], crange="bytes 0-99/*").status_code == 400  # body shorter
    assert v1_patch(server, tok, cid, 0, data[:10], crange="bytes 9-0/*").status_code == 400
    assert v1_patch(server, tok, cid, 0, data[:10], crange=None if False else "bytes nonsense").status_code == 400
    assert v1_patch(server, tok, cid, 1000, data[:100]).status_code == 400  # past the reserved size
    assert v1_patch(server, tok, cid, 0, data[:512]).status_code == 204
    assert v1_patch(server, tok, cid, 0, data[:512]).status_code == 204  # a retried chunk is idempotent
    assert v1_commit(server, tok, cid, 2048).status_code == 400  # differs from reserved cacheSize
    assert v1_commit(server, tok, cid, len(data)).status_code == 204
    hit = httpx.get(server.url + V1 + "cache", params={"keys": "chunks", "version": VERSION}, headers=auth(tok))
    assert hit.status_code == 200 and hit.json()["cacheKey"] == "chunks"
    assert httpx.get(hit.json()["archiveLocation"]).content == data
    # The committed entry cannot be touched any more.
    assert v1_patch(server, tok, cid, 0, b"evil").status_code == 404
    assert v1_commit(server, tok, cid, 4).status_code == 404
    assert httpx.get(hit.json()["archiveLocation"]).content == data


def test_v1_unknown_ids_and_other_repositories(server: Server) -> None:
    tok = server.token()
    cid = v1_reserve(server, tok, "mine", 4).json()["cacheId"]
    other = server.token(repo="evil/fork")
    assert v1_patch(server, other, cid, 0, b"evil").status_code == 404
    assert v1_commit(server, other, cid, 4).status_code == 404
    assert v1_patch(server, tok, 999999, 0, b"data").status_code == 404
    assert v1_patch(server, tok, "abc", 0, b"data").status_code == 400  # type: ignore[arg-type]
    assert httpx.post(server.url + V1 + "caches", content=b"[1,", headers=auth(tok)).status_code == 400
    assert v1_reserve(server, tok, "neg", -5).status_code == 400


def test_v1_second_reserve_is_409_with_message(server: Server) -> None:
    tok = server.token()
    assert v1_reserve(server, tok, "same", 10).status_code == 201
    r = v1_reserve(server, tok, "SAME", 10)
    assert r.status_code == 409 and "being created" in r.json()["message"]


def test_v1_miss_is_204_and_list_caches(server: Server) -> None:
    tok = server.token()
    r = httpx.get(server.url + V1 + "cache", params={"keys": "nothing,no", "version": VERSION}, headers=auth(tok))
    assert r.status_code == 204 and r.content == b""
    v2_save(server, tok, "listed-1", b"x")
    v2_save(server, tok, "listed-2", b"y", version="b" * 64)
    r = httpx.get(server.url + V1 + "caches", params={"key": "listed"}, headers=auth(tok)).json()
    assert r["totalCount"] == 2
    assert {c["cacheVersion"] for c in r["artifactCaches"]} == {VERSION, "b" * 64}


def test_abandoned_reservation_expires_and_frees_the_key(tmp_path: Path) -> None:
    srv = Server(tmp_path / "d", extra_args=["--reservation-ttl", "1"]).start()
    try:
        tok = srv.token()
        first = v1_reserve(srv, tok, "stuck", 4).json()["cacheId"]
        assert v1_reserve(srv, tok, "stuck", 4).status_code == 409
        time.sleep(1.5)
        second = v1_reserve(srv, tok, "stuck", 4)
        assert second.status_code == 201 and second.json()["cacheId"] != first
        assert v1_patch(srv, tok, first, 0, b"late").status_code == 404
    finally:
        srv.stop()


# --- blob endpoint -------------------------------------------------------------------------------
def test_block_list_order_is_honoured_and_unlisted_blocks_dropped(server: Server) -> None:
    tok = server.token()
    created = twirp(server, "CreateCacheEntry", {"key": "blocks", "version": VERSION}, tok).json()
    url = created["signed_upload_url"]
    ids = [base64.b64encode(f"block-{i:04d}".encode()).decode() for i in range(4)]
    parts = [b"AAAA", b"BBBB", b"CCCC", b"DDDD"]
    for bid, part in zip(reversed(ids), reversed(parts), strict=True):
        r = httpx.put(url + "&comp=block&blockid=" + bid, content=part)
        assert r.status_code == 201 and r.headers["x-ms-request-id"]
    missing = base64.b64encode(b"never-sent").decode()
    xml = '<?xml version="1.0" encoding="utf-8"?><BlockList><Latest>' + missing + "</Latest></BlockList>"
    assert httpx.put(url + "&comp=blocklist", content=xml).status_code == 400
    order = [ids[2], ids[0], ids[1]]  # block 3 uploaded but not listed
    xml = "<BlockList>" + "".join(f"<Latest>{b}</Latest>" for b in order) + "</BlockList>"
    assert (
        httpx.put(url + "&comp=blocklist", content=xml, headers={"Content-Type": "application/xml"}).status_code == 201
    )
    fin = twirp(server, "FinalizeCacheEntryUpload", {"key": "blocks", "version": VERSION, "size_bytes": "12"}, tok)
    assert fin.json()["ok"], fin.text
    assert httpx.get(v2_url(server, tok, "blocks")).content == b"CCCCAAAABBBB"


def test_bad_block_requests(server: Server) -> None:
    tok = server.token()
    url = twirp(server, "CreateCacheEntry", {"key": "badblocks", "version": VERSION}, tok).json()["signed_upload_url"]
    assert httpx.put(url + "&comp=block&blockid=%%%", content=b"x").status_code == 400
    r = httpx.put(url + "&comp=blocklist", content=b"<nope")
    assert r.status_code == 400 and r.headers["x-ms-error-code"] == "InvalidInput" and b"<Error>" in r.content
    assert httpx.put(url + "&comp=appendblock", content=b"x").status_code == 400
    assert httpx.put(url, content=b"x", headers={"x-ms-blob-type": "PageBlob"}).status_code == 400


def test_download_ranges_head_and_headers(server: Server) -> None:
    tok = server.token()
    data = bytes(range(256)) * 40
    v2_save(server, tok, "ranged", data)
    url = v2_url(server, tok, "ranged")
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == data and int(r.headers["content-length"]) == len(data)
    assert r.headers["x-ms-request-id"] and r.headers["etag"]
    r = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert (
        r.status_code == 206 and r.content == data[10:20] and r.headers["content-range"] == f"bytes 10-19/{len(data)}"
    )
    r = httpx.get(url, headers={"x-ms-range": "bytes=100-"})
    assert r.status_code == 206 and r.content == data[100:]
    r = httpx.head(url)
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(data) and r.content == b""
    r = httpx.get(url, headers={"Range": f"bytes={len(data) + 5}-"})
    assert r.status_code == 416


def test_signed_urls_are_bound_to_entry_purpose_and_time(tmp_path: Path) -> None:
    srv = Server(tmp_path / "d", extra_args=["--url-ttl", "2"]).start()
    try:
        tok = srv.token()
        v2_save(srv, tok, "signed", b"content")
        url = v2_url(srv, tok, "signed")
        assert httpx.get(url).content == b"content"
        tampered = url[:-1] + ("0" if url[-1] != "0" else "1")
        r = httpx.get(tampered)
        assert r.status_code == 401 and r.headers["x-ms-error-code"] == "AuthenticationFailed"
        other_entry = url.replace("/archives/", "/archives/9").split("?")[0] + "?" + url.split("?")[1]
        assert httpx.get(other_entry).status_code in (401, 404)
        # A download URL cannot be replayed as an upload URL.
        assert httpx.put(url.replace("/archives/", "/uploads/"), content=b"evil").status_code == 401
        assert httpx.get(url.split("?")[0]).status_code == 401
        time.sleep(3.1)
        assert httpx.get(url).status_code == 401
    finally:
        srv.stop()


# --- GitHub-issued runtime tokens ----------------------------------------------------------------
def test_github_runtime_tokens_verified_against_jwks(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "test-kid", "alg": "RS256", "use": "sig"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    issuer = "https://token.actions.githubusercontent.com"
    srv = Server(tmp_path / "d", extra_args=["--github-jwks-file", str(jwks), "--github-issuer", issuer]).start()

    def gh_token(signing_key: rsa.RSAPrivateKey = key, **claims: object) -> str:
        now = int(time.time())
        body = {
            "iss": issuer,
            "iat": now,
            "exp": now + 600,
            "repository": "octo/app",
            "ac": json.dumps([{"Scope": "refs/heads/main", "Permission": 3}]),
            **claims,
        }
        return jwt.encode(body, signing_key, algorithm="RS256", headers={"kid": "test-kid"})

    try:
        tok = gh_token()
        v2_save(srv, tok, "gh-key", b"from github token")
        assert httpx.get(v2_url(srv, tok, "gh-key")).content == b"from github token"
        # The same repository through a runcache token sees the same entry.
        assert twirp(srv, "GetCacheEntryDownloadURL", {"key": "gh-key", "version": VERSION}, srv.token()).json()["ok"]
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert (
            twirp(
                srv, "GetCacheEntryDownloadURL", {"key": "gh-key", "version": VERSION}, gh_token(stranger)
            ).status_code
            == 401
        )
        assert (
            twirp(
                srv,
                "GetCacheEntryDownloadURL",
                {"key": "gh-key", "version": VERSION},
                gh_token(iss="https://evil.example"),
            ).status_code
            == 401
        )
        other_repo = gh_token(repository="octo/other")
        assert (
            twirp(srv, "GetCacheEntryDownloadURL", {"key": "gh-key", "version": VERSION}, other_repo).json()["ok"]
            is False
        )
        read_only = gh_token(ac=json.dumps([{"Scope": "refs/heads/main", "Permission": 1}]))
        denied = twirp(srv, "CreateCacheEntry", {"key": "gh-2", "version": VERSION}, read_only).json()
        assert denied["ok"] is False and denied["message"].startswith("cache write denied:")
    finally:
        srv.stop()


def test_second_server_on_the_same_data_dir_refuses_to_start(server: Server) -> None:
    import subprocess

    from helpers import RUNCACHE

    r = subprocess.run(
        [*RUNCACHE, "serve", "--data-dir", str(server.data_dir), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "in use by another runcache server" in r.stderr
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_github_runtime_tokens_verified_against_a_jwks_url(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "url-kid", "alg": "RS256", "use": "sig"})
    body = json.dumps({"keys": [jwk]}).encode()
    fetched: list[str] = []

    class Jwks(StandIn):
        def do_GET(self) -> None:
            fetched.append(self.path)
            self.reply(200, body)

    httpd, base = serve_stand_in(Jwks)
    url = f"{base}/.well-known/jwks"
    issuer = "https://ghes.example/_services/token"
    srv = Server(tmp_path / "d", extra_args=["--github-jwks-url", url, "--github-issuer", issuer]).start()
    try:
        now = int(time.time())
        claims = {
            "iss": issuer,
            "iat": now,
            "exp": now + 600,
            "repository_id": 42,
            "ac": json.dumps([{"Scope": "refs/heads/main", "Permission": 3}]),
        }
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "url-kid"})
        v2_save(srv, token, "ghes-key", b"from a GHES token")
        assert httpx.get(v2_url(srv, token, "ghes-key")).content == b"from a GHES token"
        assert fetched and fetched[0] == "/.well-known/jwks"
        wrong = jwt.encode({**claims, "iss": "https://other"}, key, algorithm="RS256", headers={"kid": "url-kid"})
        assert twirp(srv, "CreateCacheEntry", {"key": "x", "version": VERSION}, wrong).status_code == 401
    finally:
        srv.stop()
        httpd.shutdown()


def test_block_uploaded_blob_serves_ranges_across_its_parts(server: Server) -> None:
    tok = server.token()
    url = twirp(server, "CreateCacheEntry", {"key": "parts", "version": VERSION}, tok).json()["signed_upload_url"]
    parts = [bytes([i]) * 1000 for i in range(5)]
    ids = [base64.b64encode(f"part-{i:04d}".encode()).decode() for i in range(5)]
    for bid, body in zip(ids, parts, strict=True):
        assert httpx.put(url + "&comp=block&blockid=" + bid, content=body).status_code == 201
    xml = "<BlockList>" + "".join(f"<Latest>{b}</Latest>" for b in ids) + "</BlockList>"
    assert httpx.put(url + "&comp=blocklist", content=xml).status_code == 201
    fin = twirp(server, "FinalizeCacheEntryUpload", {"key": "parts", "version": VERSION, "size_bytes": "5000"}, tok)
    assert fin.json()["ok"], fin.text
    data = b"".join(parts)
    down = v2_url(server, tok, "parts")
    r = httpx.get(down)
    assert r.content == data and r.headers["content-length"] == "5000"
    assert r.headers["x-ms-meta-sha256"] == hashlib.sha256(data).hexdigest()
    r = httpx.get(down, headers={"Range": "bytes=990-3010"})
    assert r.status_code == 206 and r.content == data[990:3011] and r.headers["content-range"] == "bytes 990-3010/5000"
    r = httpx.get(down, headers={"x-ms-range": "bytes=-1500"})
    assert r.status_code == 206 and r.content == data[3500:]
    assert httpx.head(down).headers["content-length"] == "5000"
    assert httpx.get(down, headers={"Range": "bytes=0-1,4-5"}).status_code == 400
