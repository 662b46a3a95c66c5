"""Findings of an adversarial review of authentication and management, each pinned by a test.

- a ref filter that cannot match deletes nothing (it used to be dropped, so the delete hit every ref);
- a `write-only` job token saves but does not read: no listing, no usage;
- caches saved with a GitHub token that names its repository only by id are reachable under
  `/repositories/{repository_id}/...`;
- GitHub-token mode needs an issuer, and a slow JWKS endpoint cannot take the server's worker threads;
- the web session cookie is a server-side session id that sign-out revokes, not the token itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import create_engine, text

from helpers import ROOT, RUNCACHE, Server, StandIn, serve_stand_in
from mgmt_helpers import VERSION, bearer, save
from runcache.auth.github import GitHubTokenVerifier
from runcache.core.errors import Unauthenticated
from runcache.store.metadata import utcnow

ISSUER = "https://token.actions.githubusercontent.com"
V1 = "/_apis/artifactcache/"
PAGE = "/octo/app/actions/caches"
CACHES = "/repos/octo/app/actions/caches"
MAIN_RW = json.dumps([{"Scope": "refs/heads/main", "Permission": 3}])


# --- GitHub-shaped tokens and a JWKS endpoint --------------------------------------------------------
class Signer:
    """An RS256 key pair standing in for GitHub's token service."""

    def __init__(self, kid: str = "gh-kid") -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = kid

    def jwk(self) -> dict:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        return jwk

    def token(self, *, kid: str | None = None, **claims: object) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "iat": now, "exp": now + 600, "ac": MAIN_RW, **claims}
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": kid or self.kid})


def jwks_file(tmp_path: Path, *signers: Signer) -> Path:
    path = tmp_path / f"jwks-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps({"keys": [s.jwk() for s in signers]}))
    return path


class JwksServer:
    """A JWKS endpoint whose behaviour the test switches: `ok`, `fail` (503) or `hang` (30 s, no answer)."""

    def __init__(self, *signers: Signer, mode: str = "ok") -> None:
        self.signers = list(signers)
        self.mode = mode
        self.fetches = 0
        self._lock = threading.Lock()
        self._release = threading.Event()
        outer = self

        class Handler(StandIn):
            def do_GET(self) -> None:
                with outer._lock:
                    outer.fetches += 1
                if outer.mode == "hang":
                    outer._release.wait(30)
                    return
                if outer.mode == "fail":
                    self.reply(503)
                    return
                self.reply_json({"keys": [s.jwk() for s in outer.signers]})

        self.httpd, base = serve_stand_in(Handler)
        self.url = f"{base}/.well-known/jwks"

    def close(self) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def v1_lookup(srv: Server, token: str, key: str = "k", timeout: float = 10) -> tuple[int, float, str]:
    """(status, seconds, body) of a v1 cache lookup; a client timeout is status -1."""
    start = time.monotonic()
    try:
        r = httpx.get(
            srv.url + V1 + "cache", params={"keys": key, "version": VERSION}, headers=bearer(token), timeout=timeout
        )
    except httpx.TimeoutException:
        return -1, time.monotonic() - start, ""
    return r.status_code, time.monotonic() - start, r.text


def v1_save(srv: Server, token: str, key: str, data: bytes) -> int:
    r = httpx.post(srv.url + V1 + "caches", json={"key": key, "version": VERSION}, headers=bearer(token))
    assert r.status_code == 201, r.text
    cid = r.json()["cacheId"]
    r = httpx.patch(
        f"{srv.url}{V1}caches/{cid}",
        content=data,
        headers={**bearer(token), "Content-Range": f"bytes 0-{len(data) - 1}/*"},
    )
    assert r.status_code == 204, r.text
    r = httpx.post(f"{srv.url}{V1}caches/{cid}", json={"size": len(data)}, headers=bearer(token))
    assert r.status_code == 204, r.text
    return cid


def cache_ids(srv: Server, path: str = CACHES) -> set[int]:
    r = httpx.get(srv.url + path, headers=bearer(srv.admin_token(site=True)), params={"per_page": 100})
    assert r.status_code == 200, r.text
    return {c["id"] for c in r.json()["actions_caches"]}


# --- 1. a ref filter that cannot match ------------------------------------------------------------------
ODD_REFS = [" ", "\x00", "x" * 600, ""]


def test_a_ref_filter_that_cannot_match_deletes_nothing(server: Server) -> None:
    ids = {save(server, "K", b"x", ref=ref) for ref in ("refs/heads/main", "refs/heads/release", "refs/pull/7/merge")}
    admin = server.admin_token()
    for odd in ODD_REFS:
        r = httpx.delete(server.url + CACHES, params={"key": "K", "ref": odd}, headers=bearer(admin))
        assert r.status_code in (404, 422), (odd[:10], r.status_code, r.text)
        assert cache_ids(server) == ids, f"ref {odd[:10]!r} deleted caches"
        listed = httpx.get(server.url + CACHES, params={"ref": odd}, headers=bearer(admin))
        assert listed.status_code == 422 or listed.json()["total_count"] == 0, odd[:10]
    # A job token naming an odd ref is not narrowed to "its own ref" silently either.
    job = server.token(ref="refs/pull/7/merge")
    for odd in ODD_REFS:
        r = httpx.delete(server.url + CACHES, params={"key": "K", "ref": odd}, headers=bearer(job))
        assert r.status_code in (403, 404, 422), (odd[:10], r.status_code)
    assert cache_ids(server) == ids
    # The page's bulk delete with a blank branch qualifier removes nothing either.
    for query in ['branch:" "', "key:K branch:\x00"]:
        r = httpx.post(
            server.url + PAGE + "/delete",
            data={"bulk": "1", "query": query, "confirm": "yes"},
            headers=bearer(admin),
        )
        assert r.status_code in (303, 400, 422), r.text
        assert cache_ids(server) == ids, f"bulk delete with {query!r} deleted caches"
    # A real ref still narrows the delete.
    r = httpx.delete(server.url + CACHES, params={"key": "K", "ref": "release"}, headers=bearer(admin))
    assert r.status_code == 200 and r.json()["total_count"] == 1


# --- 2. write-only job tokens ------------------------------------------------------------------------
def test_a_write_only_job_token_neither_lists_nor_reads_usage(server: Server) -> None:
    main = save(server, "k", b"x")
    feature = save(server, "k", b"x", ref="refs/heads/feature")
    save(server, "other", b"x", ref="refs/heads/feature")
    wo = server.token(ref="refs/heads/feature", mode="write-only")
    for path in (
        CACHES,
        "/api/v3" + CACHES,
        "/repos/octo/app/actions/cache/usage",
        "/repos/octo/app/actions/cache/storage-limit",
    ):
        r = httpx.get(server.url + path, headers=bearer(wo))
        assert r.status_code == 403, (path, r.status_code, r.text)
        assert "other" not in r.text
    assert httpx.delete(server.url + f"{CACHES}/{main}", headers=bearer(wo)).status_code == 403
    # ... but it may delete its own ref's caches (delete, then save anew: what a write-only job does).
    r = httpx.delete(server.url + CACHES, params={"key": "k"}, headers=bearer(wo))
    assert r.status_code == 200 and [c["id"] for c in r.json()["actions_caches"]] == [feature]
    assert main in cache_ids(server)


# --- 3. repositories known only by id -------------------------------------------------------------------
def test_caches_of_a_repository_known_only_by_id_are_managed_under_repositories(tmp_path: Path) -> None:
    signer = Signer()
    srv = Server(
        tmp_path / "d", extra_args=["--github-jwks-file", str(jwks_file(tmp_path, signer)), "--github-issuer", ISSUER]
    ).start()
    try:
        job = signer.token(repository_id=4242)
        first = v1_save(srv, job, "by-id", b"saved by id")
        second = v1_save(srv, job, "by-id-2", b"second")
        site = srv.admin_token(site=True)
        for prefix in ("", "/api/v3"):
            r = httpx.get(srv.url + prefix + "/repositories/4242/actions/caches", headers=bearer(site))
            assert r.status_code == 200, r.text
            assert {c["key"] for c in r.json()["actions_caches"]} == {"by-id", "by-id-2"}
            assert {c["ref"] for c in r.json()["actions_caches"]} == {"refs/heads/main"}
            usage = httpx.get(srv.url + prefix + "/repositories/4242/actions/cache/usage", headers=bearer(site))
            assert usage.json() == {
                "full_name": "id:4242",
                "active_caches_size_in_bytes": len(b"saved by id") + len(b"second"),
                "active_caches_count": 2,
            }
            limit = httpx.get(srv.url + prefix + "/repositories/4242/actions/cache/storage-limit", headers=bearer(site))
            assert limit.json() == {"max_cache_size_gb": 10}
        # The repository's own job token reads it; nobody else's token reaches it.
        assert httpx.get(srv.url + "/repositories/4242/actions/caches", headers=bearer(job)).status_code == 200
        for stranger in (
            srv.admin_token(org="id:4242"),
            srv.admin_token(org="id"),
            srv.admin_token("octo/app"),
            signer.token(repository_id=4243),
        ):
            r = httpx.get(srv.url + "/repositories/4242/actions/caches", headers=bearer(stranger))
            assert r.status_code == 404 and r.json()["message"] == "Not Found"
        for bad in ("abc", "0", "-1", "99999999999999999999999", "4242x"):
            r = httpx.get(srv.url + f"/repositories/{bad}/actions/caches", headers=bearer(site))
            assert r.status_code == 404 and r.headers["content-type"].startswith("application/json"), bad
        # The page lists it on the index and serves its Caches page.
        index = httpx.get(srv.url + "/", headers=bearer(site))
        assert 'href="/-/repositories/4242/actions/caches"' in index.text
        page = httpx.get(srv.url + "/-/repositories/4242/actions/caches", headers=bearer(site))
        assert page.status_code == 200 and "by-id-2" in page.text
        # A site administrator deletes by key and by id.
        r = httpx.delete(srv.url + "/repositories/4242/actions/caches", params={"key": "by-id"}, headers=bearer(site))
        assert r.status_code == 200 and [c["id"] for c in r.json()["actions_caches"]] == [first]
        r = httpx.delete(srv.url + f"/repositories/4242/actions/caches/{second}", headers=bearer(site))
        assert r.status_code == 204
        assert cache_ids(srv, "/repositories/4242/actions/caches") == set()
        assert v1_lookup(srv, job, "by-id")[0] == 204  # gone for the protocol as well
        # A repository name and a numeric id never meet: an id route does not reach `octo/app`.
        named = save(srv, "named", b"x")
        r = httpx.delete(srv.url + f"/repositories/4242/actions/caches/{named}", headers=bearer(site))
        assert r.status_code == 404
    finally:
        srv.stop()


# --- 4. an issuer is required -----------------------------------------------------------------------
def test_github_token_mode_without_an_issuer_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCACHE_")}
    jwks = jwks_file(tmp_path, Signer())
    proc = subprocess.Popen(
        [*RUNCACHE, "serve", "--data-dir", str(tmp_path / "d"), "--port", "0", "--github-jwks-file", str(jwks)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the server started without --github-issuer and would accept tokens of any issuer")
    assert proc.returncode == 2, (out, err)
    assert "serving on" not in out and "--github-issuer" in err


# --- 5. the JWKS endpoint cannot stall requests ----------------------------------------------------------
def test_a_hanging_jwks_endpoint_does_not_take_the_worker_threads(tmp_path: Path) -> None:
    jwks = JwksServer(mode="hang")
    srv = Server(tmp_path / "d", extra_args=["--github-jwks-url", jwks.url, "--github-issuer", ISSUER])
    try:
        srv.start(timeout=60)
        fake = Signer()
        fakes = [fake.token(repository="octo/app", kid=f"fake-{i}") for i in range(60)]
        with ThreadPoolExecutor(61) as pool:
            pending = [pool.submit(v1_lookup, srv, t) for t in fakes]
            time.sleep(0.3)  # the fakes are in the server when the job's lookup arrives
            valid = pool.submit(v1_lookup, srv, srv.token()).result()
            answers = [f.result() for f in pending]
        assert valid[0] == 204 and valid[1] < 3, f"a valid lookup took {valid[1]:.1f}s (status {valid[0]})"
        assert all(status == 401 for status, _, _ in answers), {status for status, _, _ in answers}
        assert max(took for _, took, _ in answers) < 3
        assert "JWKS" in answers[0][2]  # says why, so an operator sees the JWKS is the problem
        # One fetch at start-up, maybe its retry: not one per token.
        assert jwks.fetches <= 3, f"{jwks.fetches} JWKS fetches for 60 tokens"
    finally:
        srv.stop()
        jwks.close()


def test_a_jwks_that_becomes_available_later_is_used(tmp_path: Path) -> None:
    signer = Signer()
    jwks = JwksServer(signer, mode="fail")
    srv = Server(tmp_path / "d", extra_args=["--github-jwks-url", jwks.url, "--github-issuer", ISSUER]).start()
    try:
        job = signer.token(repository="octo/app")
        status, took, body = v1_lookup(srv, job)
        assert status == 401 and took < 3 and "JWKS" in body
        jwks.mode = "ok"
        deadline = time.monotonic() + 30
        while (status := v1_lookup(srv, job)[0]) == 401 and time.monotonic() < deadline:
            time.sleep(0.25)
        assert status == 204, "the JWKS served later was never used"
        # Failures later keep the last good key set.
        jwks.mode = "fail"
        assert v1_lookup(srv, signer.token(repository="octo/app", kid="rotated?"))[0] == 401
        assert v1_lookup(srv, job)[0] == 204
    finally:
        srv.stop()
        jwks.close()


def _wait_loaded(verifier: GitHubTokenVerifier, token: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            verifier.verify(token)
            return
        except Unauthenticated:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_unknown_kids_refresh_the_jwks_at_most_once_per_interval() -> None:
    signer = Signer("k1")
    jwks = JwksServer(signer)
    verifier = GitHubTokenVerifier(jwks_url=jwks.url, issuer=ISSUER, kid_refresh_interval=1.0)
    try:
        good = signer.token(repository="octo/app")
        _wait_loaded(verifier, good)
        before = jwks.fetches
        stranger = Signer()
        for i in range(50):
            with pytest.raises(Unauthenticated):
                verifier.verify(stranger.token(repository="octo/app", kid=f"nope-{i}"))
        time.sleep(0.3)
        assert jwks.fetches - before <= 1, f"{jwks.fetches - before} fetches for 50 unknown kids"
        # A key the issuer rotates in is picked up once the interval has passed.
        rotated = Signer("k2")
        jwks.signers.append(rotated)
        time.sleep(1.1)
        _wait_loaded(verifier, rotated.token(repository="octo/app"), seconds=5)
        # A failing endpoint keeps the last good key set.
        jwks.mode = "fail"
        time.sleep(1.1)
        with pytest.raises(Unauthenticated):
            verifier.verify(stranger.token(repository="octo/app", kid="again"))
        time.sleep(0.5)
        assert verifier.verify(good).repository == "octo/app"
    finally:
        verifier.close()
        jwks.close()


# --- 6. web sessions --------------------------------------------------------------------------------
def test_sign_out_revokes_every_copy_of_the_session_cookie(server: Server) -> None:
    entry = save(server, "k", b"x")
    client = httpx.Client(base_url=server.url)
    r = client.post("/-/login", data={"token": server.admin_token(), "next": PAGE})
    assert r.status_code == 303 and r.headers["location"] == PAGE
    session = client.cookies["runcache_session"]
    assert "." not in session and len(session) >= 40  # a random id, not the token (a JWT has dots)
    for path in (CACHES, PAGE):  # and no credential anywhere
        assert httpx.get(server.url + path, headers=bearer(session)).status_code == 401
    copy = httpx.Client(base_url=server.url, cookies={"runcache_session": session})
    page = copy.get(PAGE)
    assert page.status_code == 200
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text).group(1)  # type: ignore[union-attr]
    assert client.post("/-/logout", data={"csrf": csrf}).status_code == 303
    after = copy.get(PAGE)
    assert after.status_code == 303 and after.headers["location"].startswith("/-/login")
    r = copy.post(PAGE + "/delete", data={"id": str(entry), "csrf": csrf, "confirm": "yes"})
    assert r.status_code == 401
    assert entry in cache_ids(server)


def test_a_session_ends_with_its_token(server: Server) -> None:
    client = httpx.Client(base_url=server.url)
    r = client.post("/-/login", data={"token": server.admin_token(ttl=2), "next": PAGE})
    assert r.status_code == 303
    assert re.search(r"Max-Age=[12];", r.headers["set-cookie"])
    session = client.cookies["runcache_session"]
    copy = httpx.Client(base_url=server.url, cookies={"runcache_session": session})
    assert copy.get(PAGE).status_code == 200
    time.sleep(2.5)
    assert copy.get(PAGE).status_code == 303


def test_session_store_keeps_only_a_hash_and_drops_expired_sessions(tmp_path: Path) -> None:
    from runcache.store.sessions import SessionStore

    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    store = SessionStore(engine)
    old = store.create("token-old", expires_at=utcnow() - timedelta(seconds=1))
    assert store.token(old) is None
    live = store.create("token-live", expires_at=utcnow() + timedelta(hours=1))
    assert store.token(live) == "token-live"
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM web_sessions")).fetchall()
    assert len(rows) == 1  # the expired one was removed
    assert all(live not in str(v) for v in rows[0])
    store.delete(live)
    assert store.token(live) is None
    assert store.token("") is None and store.token("x" * 5000) is None


def test_a_github_token_owns_its_upload_by_jti(tmp_path: Path) -> None:
    signer = Signer()
    srv = Server(
        tmp_path / "d", extra_args=["--github-jwks-file", str(jwks_file(tmp_path, signer)), "--github-issuer", ISSUER]
    ).start()
    try:
        mine = signer.token(repository="octo/app", jti="job-1")
        theirs = signer.token(repository="octo/app", jti="job-2")
        body = {"key": "owned", "version": "a" * 64, "cacheSize": 4}
        cid = httpx.post(srv.url + "/_apis/artifactcache/caches", json=body, headers=bearer(mine)).json()["cacheId"]
        url = f"{srv.url}/_apis/artifactcache/caches/{cid}"
        chunk = {"Content-Range": "bytes 0-3/*", "Content-Type": "application/octet-stream"}
        assert httpx.patch(url, content=b"evil", headers={**bearer(theirs), **chunk}).status_code == 404
        assert httpx.patch(url, content=b"good", headers={**bearer(mine), **chunk}).status_code == 204
        assert httpx.post(url, json={"size": 4}, headers=bearer(theirs)).status_code == 404
        assert httpx.post(url, json={"size": 4}, headers=bearer(mine)).status_code == 204
    finally:
        srv.stop()
