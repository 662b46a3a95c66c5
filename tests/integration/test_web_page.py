"""The web page over plain HTTP: bearer access, sessions, CSRF, the no-script confirmation, escaping, headers."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import Server
from mgmt_helpers import bearer, save

PAGE = "/octo/app/actions/caches"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data").start()
    yield server
    server.stop()


def signed_in(srv: Server, token: str) -> httpx.Client:
    client = httpx.Client(base_url=srv.url)
    r = client.post("/-/login", data={"token": token, "next": PAGE})
    assert r.status_code == 303 and r.headers["location"] == PAGE
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
    return client


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert m, "no CSRF token in the page"
    return m.group(1)


def test_bearer_request_gets_the_page_with_escaped_keys(srv: Server) -> None:
    key = 'k-<script>alert("x")</script>&"quoted"'
    save(srv, key, b"abc")
    r = httpx.get(srv.url + PAGE, headers=bearer(srv.admin_token("octo/app")))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<script>alert" not in r.text
    shown = re.findall(r'<code class="key">(.*?)</code>', r.text)
    assert [html.unescape(k) for k in shown] == [key]  # the text a browser shows is the key itself
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    index = httpx.get(srv.url + "/", headers=bearer(srv.admin_token(site=True)))
    assert index.status_code == 200 and 'href="/octo/app/actions/caches"' in index.text


def test_access_rules_of_the_page(srv: Server) -> None:
    save(srv, "k", b"x")
    anonymous = httpx.get(srv.url + PAGE + "?query=key:k")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/-/login?next=%2Focto%2Fapp%2Factions%2Fcaches%3Fquery%3Dkey%3Ak"
    assert httpx.get(srv.url + PAGE, headers=bearer("garbage")).status_code == 401
    assert httpx.get(srv.url + PAGE, headers=bearer(srv.token("octo/app"))).status_code == 401  # job token
    other = httpx.get(srv.url + "/octo/other/actions/caches", headers=bearer(srv.admin_token("octo/app")))
    assert other.status_code == 404
    assert httpx.get(srv.url + "/-/login").status_code == 200
    bad = httpx.post(srv.url + "/-/login", data={"token": "nope"})
    assert bad.status_code == 401 and "not valid" in bad.text
    evil = httpx.post(srv.url + "/-/login", data={"token": srv.admin_token(), "next": "//evil.example/x"})
    assert evil.status_code == 303 and evil.headers["location"] == "/"  # never an open redirect


def test_deletes_need_csrf_and_confirmation(srv: Server) -> None:
    a = save(srv, "a", b"x")
    b = save(srv, "b", b"x")
    client = signed_in(srv, srv.admin_token("octo/app"))
    page = client.get(PAGE)
    assert page.status_code == 200
    token = csrf_of(page.text)

    no_csrf = client.post(PAGE + "/delete", data={"id": str(a), "confirm": "yes"})
    assert no_csrf.status_code == 403
    wrong = client.post(PAGE + "/delete", data={"id": str(a), "confirm": "yes", "csrf": "0" * 64})
    assert wrong.status_code == 403
    cross = client.post(
        PAGE + "/delete",
        data={"id": str(a), "confirm": "yes", "csrf": token},
        headers={"Origin": "http://evil.example"},
    )
    assert cross.status_code == 403

    # Without script, the first post only asks.
    ask = client.post(PAGE + "/delete", data={"id": str(a), "csrf": token})
    assert ask.status_code == 200 and "Delete 1 cache?" in ask.text and 'name="confirm" value="yes"' in ask.text
    assert (
        len(
            httpx.get(srv.url + "/repos/octo/app/actions/caches", headers=bearer(srv.admin_token())).json()[
                "actions_caches"
            ]
        )
        == 2
    )

    done = client.post(PAGE + "/delete", data={"id": str(a), "csrf": token, "confirm": "yes"})
    assert done.status_code == 303 and done.headers["location"] == PAGE + "?deleted=1"
    left = httpx.get(srv.url + "/repos/octo/app/actions/caches", headers=bearer(srv.admin_token())).json()
    assert [c["id"] for c in left["actions_caches"]] == [b]

    # A bearer request needs no CSRF token (a browser never adds that header by itself).
    r = httpx.post(srv.url + PAGE + "/delete", data={"id": str(b), "confirm": "yes"}, headers=bearer(srv.admin_token()))
    assert r.status_code == 303

    reader = httpx.post(
        srv.url + PAGE + "/delete",
        data={"bulk": "1", "confirm": "yes"},
        headers=bearer(srv.admin_token(permission="read")),
    )
    assert reader.status_code == 403

    client.post("/-/logout", data={"csrf": token})
    assert client.get(PAGE).status_code == 303  # signed out


def test_bulk_delete_keeps_caches_saved_after_the_page_was_shown(srv: Server) -> None:
    save(srv, "npm-1", b"x")
    save(srv, "npm-2", b"x")
    save(srv, "pip-1", b"x")
    tok = srv.admin_token()
    page = httpx.get(srv.url + PAGE, params={"query": "key:npm-"}, headers=bearer(tok)).text
    as_of = re.search(r'name="as_of" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    late = save(srv, "npm-late", b"x")
    r = httpx.post(
        srv.url + PAGE + "/delete",
        data={"bulk": "1", "query": "key:npm-", "as_of": as_of, "confirm": "yes"},
        headers=bearer(tok),
    )
    assert r.status_code == 303 and "deleted=2" in r.headers["location"]
    left = httpx.get(srv.url + "/repos/octo/app/actions/caches", headers=bearer(tok)).json()["actions_caches"]
    assert sorted(c["key"] for c in left) == ["npm-late", "pip-1"] and late in [c["id"] for c in left]


def _text(fragment: str) -> str:
    """What a browser shows for an HTML fragment: tags dropped, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def _hint(page: str) -> str | None:
    m = re.search(r'<p class="hint" id="filter-hint">(.*?)</p>', page, re.S)
    return _text(m.group(1)) if m else None


def test_unknown_qualifier_is_key_text_with_a_hint(srv: Server) -> None:
    save(srv, "os:<b>linux-1", b"x")
    save(srv, "other", b"x")
    tok = bearer(srv.admin_token())

    r = httpx.get(srv.url + PAGE, params={"query": "os:<b>linux"}, headers=tok)
    assert r.status_code == 200
    # Still a key prefix (keys may contain ':'), and the page says why nothing was filtered by `os:`.
    assert [html.unescape(k) for k in re.findall(r'<code class="key">(.*?)</code>', r.text)] == ["os:<b>linux-1"]
    assert _hint(r.text) == (
        "os: is not a filter; searching for keys starting with os:<b>linux. Filters: key:, branch:"
    )
    assert "<b>linux" not in r.text and "os:&lt;b&gt;linux" in r.text  # the hint shows the text, escaped
    assert 'aria-describedby="filter-hint"' in r.text  # read out with the filter box

    several = httpx.get(srv.url + PAGE, params={"query": "os:linux arch:x64 branch:main"}, headers=tok)
    assert _hint(several.text) == (
        "os:, arch: are not filters; searching for keys starting with arch:x64. Filters: key:, branch:"
    )
    for fine in ("key:os: branch:main", "npm-linux", "ref:refs/heads/main", ""):
        page = httpx.get(srv.url + PAGE, params={"query": fine}, headers=tok).text
        assert _hint(page) is None and 'id="filter-hint"' not in page, fine


def test_usage_is_in_binary_units_with_the_used_size(srv: Server) -> None:
    save(srv, "k", b"x" * 3_400_000)
    tok = bearer(srv.admin_token(site=True))
    page = httpx.get(srv.url + PAGE, headers=tok).text
    m = re.search(r'<label for="usage-meter">(.*?)</label>', page, re.S)
    assert m and _text(m.group(1)) == "Using 3.24 MiB of 10 GiB (0.0%)"
    index = httpx.get(srv.url + "/", headers=tok).text
    cell = re.search(r'<td class="usage-cell">(.*?)</td>', index, re.S)
    assert cell and _text(cell.group(1)) == "3.24 MiB of 10 GiB (0.0%)"  # the number, not just "of 10 GB"
    for text in (page, index):
        assert not re.search(r"\d GB\b", _text(text))  # one unit family on the page
