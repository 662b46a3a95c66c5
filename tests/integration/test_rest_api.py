"""The management REST API against a real server: every endpoint and parameter, pagination edges,
status codes and GitHub's JSON shapes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import Server
from mgmt_helpers import TWIRP, VERSION, bearer, restore, save, version_for
from runcache.server import rest
from runcache.server.openapi import openapi_document

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ENTRY_FIELDS = {"id", "ref", "key", "version", "last_accessed_at", "created_at", "size_in_bytes"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("rest") / "data").start()
    yield server
    server.stop()


@pytest.fixture
def repo() -> str:
    """A fresh repository per test, so tests sharing the server do not see each other's caches."""
    return f"octo/r{uuid.uuid4().hex[:10]}"


def api(srv: Server, method: str, path: str, token: str | None, **kw) -> httpx.Response:
    headers = bearer(token) if token else {}
    return httpx.request(method, srv.url + path, headers=headers, **kw)


def caches(srv: Server, repo: str, token: str, **params) -> httpx.Response:
    return api(srv, "GET", f"/repos/{repo}/actions/caches", token, params=params)


def keys(r: httpx.Response) -> list[str]:
    return [c["key"] for c in r.json()["actions_caches"]]


# --- list ---------------------------------------------------------------------------------------------
def test_list_shape_and_default_order(srv: Server, repo: str) -> None:
    save(srv, "first", b"a" * 10, repo=repo)
    save(srv, "second", b"b" * 20, repo=repo, ref="refs/heads/feature")
    save(srv, "third", b"c" * 5, repo=repo)
    assert restore(srv, "first", repo=repo)  # a hit refreshes last_accessed_at
    r = caches(srv, repo, srv.admin_token(repo))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"total_count", "actions_caches"} and body["total_count"] == 3
    assert keys(r) == ["first", "third", "second"]  # last_accessed_at desc by default
    entry = body["actions_caches"][0]
    assert set(entry) == ENTRY_FIELDS
    assert entry["ref"] == "refs/heads/main" and entry["version"] == VERSION and entry["size_in_bytes"] == 10
    assert isinstance(entry["id"], int)
    assert ISO_MS.match(entry["created_at"]) and ISO_MS.match(entry["last_accessed_at"])
    assert entry["last_accessed_at"] > entry["created_at"]
    assert "Link" not in r.headers  # one page only
    listing = caches(srv, repo, srv.admin_token(repo))
    assert listing.json() == body  # listing is not an access


def test_list_filters_and_sorts(srv: Server, repo: str) -> None:
    tok = srv.admin_token(repo)
    save(srv, "npm-linux-1", b"x" * 30, repo=repo)
    save(srv, "npm-linux-2", b"x" * 10, repo=repo, ref="refs/pull/7/merge")
    save(srv, "npm-mac-1", b"x" * 20, repo=repo, ref="refs/heads/feature")
    save(srv, "pip-linux", b"x" * 40, repo=repo)
    assert keys(caches(srv, repo, tok, key="npm-linux-")) == ["npm-linux-2", "npm-linux-1"]
    assert keys(caches(srv, repo, tok, key="NPM-MAC")) == ["npm-mac-1"]  # keys compare case-insensitively
    assert keys(caches(srv, repo, tok, key="npm-linux-1")) == ["npm-linux-1"]  # an explicit key
    assert keys(caches(srv, repo, tok, key="nothing")) == []
    assert keys(caches(srv, repo, tok, ref="refs/pull/7/merge")) == ["npm-linux-2"]
    assert keys(caches(srv, repo, tok, ref="refs/heads/feature")) == ["npm-mac-1"]
    assert keys(caches(srv, repo, tok, ref="feature")) == ["npm-mac-1"]  # bare branch name
    assert keys(caches(srv, repo, tok, ref="refs/heads/main", key="npm")) == ["npm-linux-1"]
    assert keys(caches(srv, repo, tok, sort="size_in_bytes")) == [
        "pip-linux",
        "npm-linux-1",
        "npm-mac-1",
        "npm-linux-2",
    ]
    assert keys(caches(srv, repo, tok, sort="size_in_bytes", direction="asc"))[0] == "npm-linux-2"
    assert keys(caches(srv, repo, tok, sort="created_at", direction="asc")) == [
        "npm-linux-1",
        "npm-linux-2",
        "npm-mac-1",
        "pip-linux",
    ]
    assert keys(caches(srv, repo, tok, sort="created_at"))[0] == "pip-linux"
    assert keys(caches(srv, repo, tok, sort="last_accessed_at", direction="asc"))[0] == "npm-linux-1"
    r = caches(srv, repo, tok, key="npm-linux-", ref="refs/heads/main")
    assert r.json()["total_count"] == 1


def _links(r: httpx.Response) -> dict[str, dict[str, str]]:
    return {rel: dict(httpx.URL(v["url"]).params) for rel, v in r.links.items()}


def test_pagination_and_link_header(srv: Server, repo: str) -> None:
    tok = srv.admin_token(repo)
    for i in range(7):
        save(srv, f"k{i}", b"x" * (i + 1), repo=repo)
    r = caches(srv, repo, tok, per_page=3, sort="size_in_bytes", direction="asc", key="k")
    assert r.json()["total_count"] == 7 and keys(r) == ["k0", "k1", "k2"]
    links = _links(r)
    assert set(links) == {"next", "last"}
    assert links["next"] == {"per_page": "3", "sort": "size_in_bytes", "direction": "asc", "key": "k", "page": "2"}
    assert links["last"]["page"] == "3"
    assert r.links["next"]["url"].startswith(srv.url + f"/repos/{repo}/actions/caches?")
    middle = httpx.get(r.links["next"]["url"], headers=bearer(tok))
    assert keys(middle) == ["k3", "k4", "k5"] and set(_links(middle)) == {"prev", "next", "last", "first"}
    last = httpx.get(middle.links["next"]["url"], headers=bearer(tok))
    assert keys(last) == ["k6"] and set(_links(last)) == {"prev", "first"}
    beyond = caches(srv, repo, tok, per_page=3, page=9)
    assert beyond.status_code == 200 and beyond.json() == {"total_count": 7, "actions_caches": []}
    assert _links(beyond)["last"]["page"] == "3" and "next" not in beyond.links
    assert len(keys(caches(srv, repo, tok, per_page=1000))) == 7  # capped at 100, not refused
    assert len(keys(caches(srv, repo, tok))) == 7  # default 30


def test_per_page_cap_is_100(srv: Server, repo: str) -> None:
    tok = srv.admin_token(repo)
    # 101 tiny entries through the real protocol would be slow; 101 distinct versions of one key are not.
    for i in range(101):
        save(srv, "many", b"x", repo=repo, version=version_for(str(i)))
    r = caches(srv, repo, tok, per_page=500)
    assert r.json()["total_count"] == 101 and len(keys(r)) == 100
    assert _links(r)["next"]["per_page"] == "100"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"sort": "size"}, "sort"),
        ({"direction": "up"}, "direction"),
        ({"per_page": "0"}, "per_page"),
        ({"per_page": "ten"}, "per_page"),
        ({"page": "0"}, "page"),
        ({"page": "-1"}, "page"),
    ],
)
def test_invalid_list_parameters_are_422(srv: Server, repo: str, params: dict, field: str) -> None:
    r = caches(srv, repo, srv.admin_token(repo), **params)
    assert r.status_code == 422
    body = r.json()
    assert body["message"] == "Validation Failed" and body["errors"][0]["field"] == field


def test_api_v3_prefix_serves_the_same(srv: Server, repo: str) -> None:
    tok = srv.admin_token(repo)
    for i in range(3):
        save(srv, f"k{i}", b"x", repo=repo)
    plain = caches(srv, repo, tok, per_page=2)
    prefixed = api(srv, "GET", f"/api/v3/repos/{repo}/actions/caches", tok, params={"per_page": 2})
    assert prefixed.status_code == 200 and prefixed.json() == plain.json()
    assert prefixed.links["next"]["url"].startswith(srv.url + f"/api/v3/repos/{repo}/actions/caches?")
    usage = api(srv, "GET", f"/api/v3/repos/{repo}/actions/cache/usage", tok)
    assert usage.json()["active_caches_count"] == 3


# --- delete -------------------------------------------------------------------------------------------
def test_delete_by_key_returns_the_deleted_entries(srv: Server, repo: str) -> None:
    tok = srv.admin_token(repo)
    main = save(srv, "npm-k", b"main", repo=repo)
    other_version = save(srv, "npm-k", b"v2", repo=repo, version=version_for("v2"))
    feature = save(srv, "npm-k", b"feature", repo=repo, ref="refs/heads/feature")
    prefix_only = save(srv, "npm-k2", b"x", repo=repo)
    r = api(srv, "DELETE", f"/repos/{repo}/actions/caches", tok, params={"key": "npm-k", "ref": "refs/heads/feature"})
    assert r.status_code == 200
    assert r.json()["total_count"] == 1 and [c["id"] for c in r.json()["actions_caches"]] == [feature]
    r = api(srv, "DELETE", f"/repos/{repo}/actions/caches", tok, params={"key": "npm-k"})
    assert r.status_code == 200 and r.json()["total_count"] == 2
    assert {c["id"] for c in r.json()["actions_caches"]} == {main, other_version}
    assert set(r.json()["actions_caches"][0]) == ENTRY_FIELDS
    assert [c["id"] for c in caches(srv, repo, tok).json()["actions_caches"]] == [prefix_only]
    assert restore(srv, "npm-k", repo=repo) == "npm-k2"  # only the prefix match is left for the protocol
    again = api(srv, "DELETE", f"/repos/{repo}/actions/caches", tok, params={"key": "npm-k"})
    assert again.status_code == 404 and again.json()["message"] == "Not Found"
    missing = api(srv, "DELETE", f"/repos/{repo}/actions/caches", tok)
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "key"


def test_delete_by_id_is_204_then_404(srv: Server, repo: str) -> None:
    tok = srv.admin_token(repo)
    eid = save(srv, "k", b"data", repo=repo)
    blob = srv.data_dir / "blobs" / str(eid)[-2:].rjust(2, "0") / str(eid)
    assert blob.is_file()
    r = api(srv, "DELETE", f"/repos/{repo}/actions/caches/{eid}", tok)
    assert r.status_code == 204 and r.content == b""
    assert not blob.exists()  # the blob goes with the entry
    assert api(srv, "DELETE", f"/repos/{repo}/actions/caches/{eid}", tok).status_code == 404
    assert api(srv, "DELETE", f"/repos/{repo}/actions/caches/abc", tok).status_code == 404
    assert api(srv, "DELETE", f"/repos/{repo}/actions/caches/99999999999999999999999", tok).status_code == 404
    theirs = save(srv, "k", b"x", repo="octo/someone-else")
    site = srv.admin_token(site=True)
    assert api(srv, "DELETE", f"/repos/{repo}/actions/caches/{theirs}", site).status_code == 404
    assert api(srv, "DELETE", f"/repos/octo/someone-else/actions/caches/{theirs}", site).status_code == 204


# --- usage --------------------------------------------------------------------------------------------
def test_repository_and_org_usage(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data").start()
    try:
        save(srv, "a", b"x" * 100, repo="acme/one")
        save(srv, "b", b"x" * 50, repo="acme/one")
        save(srv, "c", b"x" * 500, repo="Acme/Two")
        save(srv, "d", b"x" * 7, repo="acme/three")
        save(srv, "e", b"x" * 9999, repo="other/repo")
        tok = srv.admin_token(org="acme", permission="read")
        r = api(srv, "GET", "/repos/acme/one/actions/cache/usage", tok)
        assert r.json() == {"full_name": "acme/one", "active_caches_size_in_bytes": 150, "active_caches_count": 2}
        empty = api(srv, "GET", "/repos/acme/empty/actions/cache/usage", tok)
        assert empty.status_code == 200 and empty.json()["active_caches_count"] == 0
        org = api(srv, "GET", "/orgs/acme/actions/cache/usage", tok)
        assert org.json() == {"total_active_caches_count": 4, "total_active_caches_size_in_bytes": 657}
        by_repo = api(srv, "GET", "/orgs/ACME/actions/cache/usage-by-repository", tok, params={"per_page": 2})
        body = by_repo.json()
        assert body["total_count"] == 3
        assert body["repository_cache_usages"] == [
            {"full_name": "Acme/Two", "active_caches_size_in_bytes": 500, "active_caches_count": 1},
            {"full_name": "acme/one", "active_caches_size_in_bytes": 150, "active_caches_count": 2},
        ]
        page2 = httpx.get(by_repo.links["next"]["url"], headers=bearer(tok)).json()
        assert [u["full_name"] for u in page2["repository_cache_usages"]] == ["acme/three"]
        assert api(srv, "GET", "/orgs/other/actions/cache/usage", tok).status_code == 404
        repo_tok = srv.admin_token("acme/one")
        assert api(srv, "GET", "/orgs/acme/actions/cache/usage", repo_tok).status_code == 403
        job = srv.token("acme/one")
        assert api(srv, "GET", "/orgs/acme/actions/cache/usage-by-repository", job).status_code == 403
        assert api(srv, "GET", "/orgs/acme/actions/cache/usage", srv.admin_token(site=True)).status_code == 200
    finally:
        srv.stop()


# --- limits -------------------------------------------------------------------------------------------
def test_storage_and_retention_limits(srv: Server, repo: str) -> None:
    tok = srv.admin_token(repo)
    base = f"/repos/{repo}/actions/cache"
    assert api(srv, "GET", f"{base}/storage-limit", tok).json() == {"max_cache_size_gb": 10}
    assert api(srv, "GET", f"{base}/retention-limit", tok).json() == {"max_cache_retention_days": 7}
    r = api(srv, "PUT", f"{base}/storage-limit", tok, json={"max_cache_size_gb": 25})
    assert r.status_code == 204 and r.content == b""
    assert api(srv, "PUT", f"{base}/retention-limit", tok, json={"max_cache_retention_days": 30}).status_code == 204
    assert api(srv, "GET", f"{base}/storage-limit", tok).json() == {"max_cache_size_gb": 25}
    assert api(srv, "GET", f"{base}/retention-limit", tok).json() == {"max_cache_retention_days": 30}
    for bad in ({"max_cache_size_gb": 0}, {"max_cache_size_gb": "5"}, {"max_cache_size_gb": 10_001}, {}):
        r = api(srv, "PUT", f"{base}/storage-limit", tok, json=bad)
        assert r.status_code == 400, bad
    assert api(srv, "PUT", f"{base}/retention-limit", tok, json={"max_cache_retention_days": 366}).status_code == 400
    assert api(srv, "PUT", f"{base}/retention-limit", tok, content=b"{not json").status_code == 400
    writer = srv.admin_token(repo, permission="write")
    assert api(srv, "GET", f"{base}/storage-limit", writer).status_code == 200
    denied = api(srv, "PUT", f"{base}/storage-limit", writer, json={"max_cache_size_gb": 1})
    assert denied.status_code == 403 and denied.json()["message"] == "Must have admin rights to Repository."
    assert api(srv, "GET", f"{base}/storage-limit", tok).json() == {"max_cache_size_gb": 25}


# --- authentication and authorization ------------------------------------------------------------------
def test_authentication_errors(srv: Server, repo: str) -> None:
    save(srv, "secret", b"x", repo=repo)
    r = caches(srv, repo, None)  # type: ignore[arg-type]
    assert r.status_code == 401 and r.json()["message"] == "Requires authentication" and "secret" not in r.text
    assert caches(srv, repo, "not-a-jwt").status_code == 401
    assert caches(srv, repo, srv.admin_token(repo, ttl=-30)).status_code == 401
    forged = Server(srv.data_dir.parent / "elsewhere")
    forged.data_dir.mkdir(exist_ok=True)
    assert caches(srv, repo, forged.admin_token(site=True)).status_code == 401
    octokit_style = httpx.get(
        srv.url + f"/repos/{repo}/actions/caches", headers={"Authorization": f"token {srv.admin_token(repo)}"}
    )
    assert octokit_style.status_code == 200


def test_permissions_of_management_and_job_tokens(srv: Server, repo: str) -> None:
    main = save(srv, "k", b"x", repo=repo)
    feature = save(srv, "k", b"x", repo=repo, ref="refs/heads/feature")
    other = f"{repo}-other"
    save(srv, "k", b"x", repo=other)
    reader = srv.admin_token(repo, permission="read")
    assert caches(srv, repo, reader).status_code == 200
    assert api(srv, "DELETE", f"/repos/{repo}/actions/caches/{main}", reader).status_code == 403
    r = api(srv, "DELETE", f"/repos/{repo}/actions/caches", reader, params={"key": "k"})
    assert r.status_code == 403 and r.json()["message"] == "Resource not accessible by integration"
    assert caches(srv, other, srv.admin_token(repo)).status_code == 404  # another repository: not revealed
    assert (
        api(srv, "DELETE", f"/repos/{other}/actions/caches", srv.admin_token(repo), params={"key": "k"}).status_code
        == 404
    )
    # Repository names are not case sensitive.
    assert caches(srv, repo.upper(), srv.admin_token(repo)).json()["total_count"] == 2

    job = srv.token(repo, "refs/heads/feature")
    assert caches(srv, repo, job).json()["total_count"] == 2  # a job lists its own repository
    assert caches(srv, other, job).status_code == 404  # ... and no other
    assert api(srv, "DELETE", f"/repos/{other}/actions/caches", job, params={"key": "k"}).status_code == 404
    assert api(srv, "DELETE", f"/repos/{repo}/actions/caches/{main}", job).status_code == 403  # not its ref
    r = api(srv, "DELETE", f"/repos/{repo}/actions/caches", job, params={"key": "k"})
    assert r.status_code == 200 and [c["id"] for c in r.json()["actions_caches"]] == [feature]
    read_job = srv.token(repo, "refs/heads/main", mode="read")
    assert caches(srv, repo, read_job).status_code == 200
    assert api(srv, "DELETE", f"/repos/{repo}/actions/caches/{main}", read_job).status_code == 403
    assert (
        api(srv, "PUT", f"/repos/{repo}/actions/cache/storage-limit", job, json={"max_cache_size_gb": 1}).status_code
        == 403
    )
    # Management tokens never work as job tokens on the cache protocol.
    r = httpx.post(
        srv.url + TWIRP + "GetCacheEntryDownloadURL",
        json={"key": "k", "version": VERSION},
        headers=bearer(srv.admin_token(site=True)),
    )
    assert r.status_code == 401


# --- the OpenAPI document -----------------------------------------------------------------------------
def test_openapi_document_matches_the_routes(srv: Server) -> None:
    doc = httpx.get(srv.url + "/openapi.json").json()
    assert doc == openapi_document()
    assert httpx.get(srv.url + "/api/v3/openapi.json").json() == doc
    described = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = {
        (route.path, method)
        for route in rest._api
        if route.path != "/openapi.json"
        for method in route.methods - {"HEAD"}
    }
    assert described == served
    for ops in doc["paths"].values():
        for op in ops.values():
            assert op["operationId"].startswith("actions/") and "401" in op["responses"]


def test_server_wide_default_limits(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", extra_args=["--storage-limit-gb", "3", "--retention-days", "2"]).start()
    try:
        tok = srv.admin_token("octo/app")
        base = "/repos/octo/app/actions/cache"
        assert api(srv, "GET", f"{base}/storage-limit", tok).json() == {"max_cache_size_gb": 3}
        assert api(srv, "GET", f"{base}/retention-limit", tok).json() == {"max_cache_retention_days": 2}
    finally:
        srv.stop()
