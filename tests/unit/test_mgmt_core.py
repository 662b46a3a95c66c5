"""Pure management rules: pagination, sorting, Link headers, filters, eviction choice, access, humanized output."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from runcache.core.access import ADMIN, READ, WRITE, Forbidden, Principal
from runcache.core.errors import NotFound
from runcache.core.eviction import (
    GB,
    Usage,
    choose_expired,
    choose_lru_evictions,
    validate_retention,
    validate_storage_limit,
)
from runcache.core.humanize import fuzzy_ago, human_limit, human_size, usage_of_limit
from runcache.core.listing import (
    FilterQuery,
    Page,
    ValidationFailed,
    link_header,
    parse_filter_query,
    parse_page,
    parse_sort,
    read_filter_query,
    validate_name,
)
from runcache.core.scopes import Identity, build_scopes

T0 = datetime(2026, 1, 1, 12, 0, 0)


# --- pagination and sorting -------------------------------------------------------------------------
def test_page_defaults_and_cap() -> None:
    assert parse_page(None, None) == Page(1, 30)
    assert parse_page("10" + "0" * 30, None) == Page(1, 100)  # any large number is capped
    assert parse_page("100", "2") == Page(2, 100)
    assert parse_page("101", "1") == Page(1, 100)  # capped as GitHub does, not refused
    assert parse_page(" 5 ", "3").offset == 10


@pytest.mark.parametrize(
    ("per_page", "page", "field"),
    [
        ("0", "1", "per_page"),
        ("-1", "1", "per_page"),
        ("x", "1", "per_page"),
        ("1.5", "1", "per_page"),
        ("10", "0", "page"),
        ("10", "-3", "page"),
        ("10", "abc", "page"),
        ("10", "99999999999", "page"),
    ],
)
def test_page_rejects_bad_values_naming_the_field(per_page: str, page: str, field: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        parse_page(per_page, page)
    assert exc.value.field == field


def test_last_page() -> None:
    assert Page(1, 30).last(0) == 1
    assert Page(1, 30).last(30) == 1
    assert Page(1, 30).last(31) == 2


def test_sort_defaults_and_validation() -> None:
    assert parse_sort(None, None) == ("last_accessed_at", "desc")
    assert parse_sort("size_in_bytes", "asc") == ("size_in_bytes", "asc")
    assert parse_sort("created_at", None) == ("created_at", "desc")
    for bad in (("size", None), ("created_at", "up"), ("CREATED_AT", None), ("", None), (None, "")):
        with pytest.raises(ValidationFailed):
            parse_sort(*bad)


def _links(header: str | None) -> dict[str, dict[str, list[str]]]:
    out = {}
    for part in (header or "").split(", "):
        if not part:
            continue
        url, rel = part.split("; ")
        out[rel.removeprefix('rel="').removesuffix('"')] = parse_qs(urlsplit(url.strip("<>")).query)
    return out


def test_link_header_middle_page_keeps_other_params() -> None:
    h = link_header(
        "http://h/repos/o/r/actions/caches", [("key", "npm-"), ("page", "2"), ("per_page", "10")], Page(2, 10), 35
    )
    links = _links(h)
    assert set(links) == {"prev", "next", "last", "first"}
    assert links["next"]["page"] == ["3"] and links["last"]["page"] == ["4"]
    assert links["prev"]["page"] == ["1"] and links["first"]["page"] == ["1"]
    assert all(v["key"] == ["npm-"] and v["per_page"] == ["10"] for v in links.values())
    assert h is not None and h.index('rel="prev"') < h.index('rel="next"') < h.index('rel="last"')


def test_link_header_edges() -> None:
    assert link_header("http://h/x", [], Page(1, 30), 30) is None  # a single page: no header, as GitHub
    assert link_header("http://h/x", [], Page(1, 30), 0) is None
    first = _links(link_header("http://h/x", [], Page(1, 10), 11))
    assert set(first) == {"next", "last"} and first["last"]["page"] == ["2"]
    last = _links(link_header("http://h/x", [], Page(2, 10), 11))
    assert set(last) == {"prev", "first"}
    beyond = _links(link_header("http://h/x", [], Page(9, 10), 11))
    assert beyond["prev"]["page"] == ["2"] and beyond["last"]["page"] == ["2"] and "next" not in beyond


def test_filter_query_qualifiers() -> None:
    assert parse_filter_query("key:npm-") == ("npm-", None)
    assert parse_filter_query("npm-linux") == ("npm-linux", None)
    assert parse_filter_query('key:"a b" branch:main') == ("a b", "main")
    assert parse_filter_query("ref:refs/pull/1/merge") == (None, "refs/pull/1/merge")
    assert parse_filter_query("") == (None, None)
    assert parse_filter_query("key:") == (None, None)
    assert parse_filter_query("os:linux") == ("os:linux", None)  # not a qualifier: part of a key


def test_filter_query_names_unknown_qualifiers() -> None:
    # The key text is unchanged (keys may contain ':'); the page can now say `os:` is not a filter.
    assert read_filter_query("os:linux") == FilterQuery("os:linux", None, ("os",))
    assert read_filter_query("key:npm- branch:main") == FilterQuery("npm-", "main", ())
    assert read_filter_query("npm-linux ref:refs/pull/1/merge") == FilterQuery("npm-linux", "refs/pull/1/merge", ())
    both = read_filter_query("Os:linux arch:x64 os:mac branch:main")
    assert both == FilterQuery("os:mac", "main", ("Os", "arch"))  # once each, as first typed; last word wins
    assert read_filter_query("key:foo:bar").unknown == ()  # a ':' inside a key: value is no qualifier
    assert read_filter_query("Linux-node-18:abc").unknown == ()  # only a leading `word:` looks like one


def test_names() -> None:
    assert validate_name("octo-org.x_1", "owner") == "octo-org.x_1"
    for bad in ("", "a/b", "..", "a b", "x" * 101, "<script>"):
        with pytest.raises(Exception):  # noqa: B017 - InvalidRequest
            validate_name(bad, "owner")


# --- eviction ---------------------------------------------------------------------------------------
def u(i: int, size: int, accessed_min: int, created_min: int = 0, repo: str = "o/r") -> Usage:
    return Usage(i, repo, size, T0 + timedelta(minutes=created_min), T0 + timedelta(minutes=accessed_min))


def test_lru_evicts_least_recently_used_until_within_limit() -> None:
    entries = [u(1, 4, accessed_min=30), u(2, 4, accessed_min=10), u(3, 4, accessed_min=20), u(4, 4, 40)]
    assert choose_lru_evictions(entries, 16) == []
    assert choose_lru_evictions(entries, 15) == [2]
    assert choose_lru_evictions(entries, 8) == [2, 3]
    assert choose_lru_evictions(entries, 0) == [2, 3, 1, 4]


def test_lru_keeps_the_new_entry_even_when_it_alone_is_over() -> None:
    entries = [u(1, 5, 1), u(2, 5, 2), u(9, 50, 0)]  # the new one is oldest by access only by clock skew
    assert choose_lru_evictions(entries, 10, keep=[9]) == [1, 2]
    assert choose_lru_evictions([u(9, 50, 0)], 10, keep=[9]) == []


def test_lru_ties_break_on_creation_then_id() -> None:
    entries = [u(3, 1, 5, created_min=2), u(2, 1, 5, created_min=1), u(1, 1, 5, created_min=2)]
    assert choose_lru_evictions(entries, 0) == [2, 1, 3]


def test_expired_uses_each_repositorys_retention() -> None:
    now = T0 + timedelta(days=10)
    entries = [
        u(1, 1, accessed_min=0, repo="o/a"),  # 10 days unused
        u(2, 1, accessed_min=60 * 24 * 4, repo="o/a"),  # 6 days
        u(3, 1, accessed_min=60 * 24 * 4, repo="o/b"),  # 6 days, but o/b keeps 5
        u(4, 1, accessed_min=60 * 24 * 9, repo="o/b"),  # 1 day
    ]
    assert choose_expired(entries, now, {"o/b": 5}) == [1, 3]
    assert choose_expired(entries, now, {}, default_days=30) == []
    exactly = [Usage(5, "o/a", 1, T0, now - timedelta(days=7))]
    assert choose_expired(exactly, now, {}) == []  # "more than 7 days"


def test_limit_validation() -> None:
    assert validate_storage_limit(1) == 1 and validate_storage_limit(10_000) == 10_000
    assert validate_retention(1) == 1 and validate_retention(365) == 365
    for bad in (0, 10_001, -1, 1.5, "10", True, None):
        with pytest.raises(ValueError):
            validate_storage_limit(bad)
    for bad in (0, 366, "7", False):
        with pytest.raises(ValueError):
            validate_retention(bad)
    assert GB == 1024**3


# --- access -----------------------------------------------------------------------------------------
def test_repository_admin_token() -> None:
    p = Principal("admin", "t", WRITE, repository="Octo/App")
    p.require("octo/app", WRITE)  # names compare case-insensitively
    with pytest.raises(Forbidden, match="admin rights"):
        p.require("octo/app", ADMIN)
    with pytest.raises(NotFound):
        p.require("octo/other", READ)
    with pytest.raises(Forbidden):
        p.require_org("octo", READ)  # it knows the org exists, but may not read all of it
    with pytest.raises(NotFound):
        p.require_org("elsewhere", READ)


def test_org_and_site_tokens() -> None:
    org = Principal("admin", "t", READ, org="octo")
    org.require("OCTO/anything", READ)
    org.require_org("Octo", READ)
    with pytest.raises(Forbidden):
        org.require("octo/x", WRITE)
    with pytest.raises(NotFound):
        org.require("octopus/x", READ)
    site = Principal("admin", "t", ADMIN, site=True)
    site.require("any/repo", ADMIN)
    site.require_org("any", READ)


def test_job_token_reads_its_repository_and_deletes_only_its_own_ref() -> None:
    job = Principal.from_job(Identity("octo/app", build_scopes("refs/heads/feature", default_branch="main")))
    assert job.level == WRITE and job.write_scope == "refs/heads/feature"
    job.require("octo/app", WRITE)
    assert job.may_delete_scope("refs/heads/feature") and not job.may_delete_scope("refs/heads/main")
    with pytest.raises(NotFound):
        job.require("octo/other", READ)
    reader = Principal.from_job(Identity("octo/app", build_scopes("main", mode="read")))
    assert reader.level == READ and not reader.may_delete_scope("refs/heads/main")
    with pytest.raises(Forbidden):
        reader.require("octo/app", WRITE)
    none = Principal.from_job(Identity("octo/app", build_scopes("main", mode="none")))
    with pytest.raises(Forbidden):
        none.require("octo/app", READ)


# --- humanized output -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (2047, "1.99 KiB"),
        (1536, "1.50 KiB"),
        (1024**2, "1.00 MiB"),
        (int(1024**2 * 5.999), "5.99 MiB"),
        (1024**3 * 3, "3.00 GiB"),
        (1024**4, "1024.00 GiB"),
    ],
)
def test_human_size_truncates_like_gh(size: int, text: str) -> None:
    assert human_size(size) == text


def test_usage_of_limit_uses_binary_units_throughout() -> None:
    # The limit counts 1024^3 bytes (GB above), so it is named GiB like the size before it, never "GB".
    assert human_limit(10) == "10 GiB"
    assert usage_of_limit(3_400_000, 10) == "3.24 MiB of 10 GiB (0.0%)"
    assert usage_of_limit(5 * GB, 10) == "5.00 GiB of 10 GiB (50.0%)"
    # Over the limit (a new entry is kept even alone above it): the share says by how much.
    assert usage_of_limit(12 * GB, 10) == "12.00 GiB of 10 GiB (120.0%)"
    assert usage_of_limit(0, 1) == "0 B of 1 GiB (0.0%)"


def test_usage_command_names_the_limit_in_gib(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse
    import io

    from runcache.cli import management

    class FakeClient:
        def __init__(self, url: str, token: str) -> None:
            pass

        def __enter__(self) -> FakeClient:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def usage(self, repo: str) -> dict:
            return {"full_name": repo, "active_caches_size_in_bytes": 3_400_000, "active_caches_count": 2}

        def limits(self, repo: str) -> dict:
            return {"max_cache_size_gb": 10, "max_cache_retention_days": 7}

    monkeypatch.setattr(management, "ManagementClient", FakeClient)
    monkeypatch.setenv("RUNCACHE_FORCE_TTY", "1")
    args = argparse.Namespace(url="http://x", token="t", repo="octo/app", org=None, json=False)
    out = io.StringIO()
    assert management.cmd_usage(args, out=out) == 0
    assert out.getvalue() == "octo/app: 2 caches, 3.24 MiB of 10 GiB (0.0%); unused caches are removed after 7 days\n"


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=59), "less than a minute ago"),
        (timedelta(minutes=1), "about 1 minute ago"),
        (timedelta(minutes=59), "about 59 minutes ago"),
        (timedelta(hours=2, minutes=59), "about 2 hours ago"),
        (timedelta(hours=25), "about 1 day ago"),
        (timedelta(days=29), "about 29 days ago"),
        (timedelta(days=65), "about 2 months ago"),
        (timedelta(days=800), "about 2 years ago"),
    ],
)
def test_fuzzy_ago_like_gh(delta: timedelta, text: str) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert fuzzy_ago(now - delta, now) == text
    assert fuzzy_ago((now - delta).replace(tzinfo=None), now) == text  # naive means UTC
