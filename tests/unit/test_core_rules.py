"""The pure cache rules in runcache.core."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from runcache.core.errors import IncompleteUpload, InvalidRequest, ReadDenied, WriteDenied
from runcache.core.keys import validate_key, validate_lookup_keys, validate_version
from runcache.core.matching import Candidate, find_match, lookup_prefixes
from runcache.core.ranges import RangeNotSatisfiable, check_complete, parse_content_range, parse_range
from runcache.core.scopes import Identity, Scope, build_scopes, normalize_ref, scopes_from_ac, scopes_to_ac
from runcache.core.version import GZIP, ZSTD, cache_version

T0 = datetime(2026, 1, 1)
MAIN, FEAT = "refs/heads/main", "refs/heads/feature"


def cand(i: int, key: str, scope: str = MAIN, version: str = "v", minutes: int = 0) -> Candidate:
    return Candidate(i, scope, key, version, T0 + timedelta(minutes=minutes))


# --- keys ----------------------------------------------------------------------------------------
def test_key_length_limit_is_512() -> None:
    assert validate_key("k" * 512)
    with pytest.raises(InvalidRequest, match="cannot be larger than 512 characters"):
        validate_key("k" * 513)


def test_key_may_not_contain_commas() -> None:
    with pytest.raises(InvalidRequest, match="cannot contain commas"):
        validate_key("a,b")


def test_empty_key_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        validate_key("")


def test_at_most_ten_keys_per_lookup() -> None:
    assert len(validate_lookup_keys([f"k{i}" for i in range(10)])) == 10
    with pytest.raises(InvalidRequest, match="maximum of 10"):
        validate_lookup_keys([f"k{i}" for i in range(11)])


def test_version_required() -> None:
    with pytest.raises(InvalidRequest):
        validate_version("")


# --- version -------------------------------------------------------------------------------------
def test_cache_version_matches_client_vectors() -> None:
    assert cache_version(["~/.npm"], ZSTD) == "c242501c19ada3dcced7a83b074ccb8e79f816602d4125493924624b38591de2"
    assert cache_version(["~/.npm"], GZIP) == "9e0ba804245d8292e3d31c4651caa1d2c2e10e81739c3a6224daf431cd079309"
    assert (
        cache_version(["~/.npm"], ZSTD, windows=True)
        == "87a143c2687b970ac142274f8402e52dd505af933d11e344dc1908521d3d68f7"
    )
    assert cache_version(["~/.npm"], ZSTD, windows=True, cross_os=True) == cache_version(["~/.npm"], ZSTD)


# --- matching ------------------------------------------------------------------------------------
def test_exact_match_wins_over_newer_prefix() -> None:
    m = find_match([cand(1, "npm-abc"), cand(2, "npm-abcdef", minutes=5)], ["npm-abc"], "v", [MAIN])
    assert m and m.entry.id == 1 and m.exact


def test_primary_key_acts_as_prefix_newest_created_wins() -> None:
    cs = [cand(1, "npm-abc-1", minutes=1), cand(2, "npm-abc-2", minutes=3), cand(3, "npm-abc-3", minutes=2)]
    m = find_match(cs, ["npm-abc"], "v", [MAIN])
    assert m and m.entry.id == 2 and not m.exact


def test_restore_keys_in_order_exact_then_prefix() -> None:
    cs = [cand(1, "npm-", minutes=0), cand(2, "npm-x", minutes=9), cand(3, "other-1", minutes=5)]
    m = find_match(cs, ["npm-zzz", "other-", "npm-"], "v", [MAIN])
    assert m and m.entry.id == 3 and not m.exact
    m = find_match(cs, ["npm-zzz", "npm-"], "v", [MAIN])
    assert m and m.entry.id == 1, "exact restore key beats a newer prefix match"


def test_scope_order_current_branch_first_even_if_older() -> None:
    cs = [cand(1, "npm-old", scope=FEAT, minutes=0), cand(2, "npm-key", scope=MAIN, minutes=10)]
    m = find_match(cs, ["npm-key", "npm-"], "v", [FEAT, MAIN])
    assert m and m.entry.id == 1


def test_falls_back_to_next_scope() -> None:
    cs = [cand(2, "npm-key", scope=MAIN)]
    m = find_match(cs, ["npm-key"], "v", [FEAT, MAIN])
    assert m and m.entry.id == 2 and m.exact


def test_unreadable_scope_is_ignored() -> None:
    assert find_match([cand(1, "k", scope=FEAT)], ["k"], "v", [MAIN]) is None


def test_version_must_match() -> None:
    assert find_match([cand(1, "k", version="other")], ["k"], "v", [MAIN]) is None


def test_case_insensitive_returns_stored_case() -> None:
    m = find_match([cand(1, "Linux-Pip-ABC")], ["linux-pip-abc"], "v", [MAIN])
    assert m and m.entry.key == "Linux-Pip-ABC" and m.exact


def test_restore_key_equal_to_primary_is_not_exact() -> None:
    m = find_match([cand(1, "npm-a")], ["npm-b", "npm-a"], "v", [MAIN])
    assert m and not m.exact


def test_docs_worked_example_search_order() -> None:
    # PR from feature into main; key npm-feature-d5ea0750, restore keys npm-feature-, npm-.
    keys = ["npm-feature-d5ea0750", "npm-feature-", "npm-"]
    only_main_exact = [cand(1, "npm-feature-d5ea0750", scope=MAIN), cand(2, "npm-zzz", scope=FEAT)]
    m = find_match(only_main_exact, keys, "v", [FEAT, MAIN])
    assert m and m.entry.id == 2, "step 3 (npm- in feature) comes before step 4 (exact in main)"


def test_lookup_prefixes_are_folded_and_unique() -> None:
    assert lookup_prefixes(["A-", "a-", "b"]) == ["a-", "b"]


# --- scopes --------------------------------------------------------------------------------------
def test_normalize_ref() -> None:
    assert normalize_ref("main") == MAIN
    assert normalize_ref("refs/pull/7/merge") == "refs/pull/7/merge"
    with pytest.raises(InvalidRequest):
        normalize_ref(" ")


def test_build_scopes_write_mode_order_and_permissions() -> None:
    scopes = build_scopes("refs/pull/7/merge", base_ref="feature-a", default_branch="main")
    assert [s.name for s in scopes] == ["refs/pull/7/merge", "refs/heads/feature-a", MAIN]
    ident = Identity("o/r", scopes)
    assert ident.write_scope == "refs/pull/7/merge"
    assert ident.readable_scopes == ["refs/pull/7/merge", "refs/heads/feature-a", MAIN]


def test_build_scopes_default_branch_not_duplicated() -> None:
    assert [s.name for s in build_scopes(MAIN, default_branch="main")] == [MAIN]


@pytest.mark.parametrize(
    ("mode", "readable", "writable"),
    [("write", [FEAT, MAIN], FEAT), ("read", [FEAT, MAIN], None), ("write-only", [], FEAT), ("none", [], None)],
)
def test_cache_mode_lattice(mode: str, readable: list[str], writable: str | None) -> None:
    ident = Identity("o/r", build_scopes(FEAT, default_branch="main", mode=mode))
    assert ident.readable_scopes == readable
    assert ident.write_scope == writable


def test_denials_use_client_prefixes() -> None:
    ident = Identity("o/r", ())
    with pytest.raises(ReadDenied, match=r"^cache read denied:"):
        ident.require_read()
    with pytest.raises(WriteDenied, match=r"^cache write denied:"):
        ident.require_write()


def test_invalid_mode() -> None:
    with pytest.raises(InvalidRequest, match="invalid cache mode"):
        build_scopes(MAIN, mode="admin")


def test_ac_claim_round_trip_and_github_shape() -> None:
    scopes = (Scope(FEAT, 3), Scope(MAIN, 1))
    assert scopes_from_ac(scopes_to_ac(scopes)) == scopes
    assert scopes_from_ac('[{"Scope":"refs/heads/x","Permission":1}]') == (Scope("refs/heads/x", 1),)
    assert scopes_from_ac(None) == ()
    with pytest.raises(InvalidRequest):
        scopes_from_ac("{not json")
    with pytest.raises(InvalidRequest):
        scopes_from_ac('[{"Scope": 5}]')


# --- ranges --------------------------------------------------------------------------------------
def test_parse_content_range_inclusive_end() -> None:
    assert parse_content_range("bytes 0-99/*") == (0, 100)
    assert parse_content_range("bytes 100-199/200") == (100, 200)
    for bad in (None, "", "bytes 5-1/*", "items 0-1/*", "bytes 0-200/100", "bytes -1-5/*"):
        with pytest.raises(InvalidRequest):
            parse_content_range(bad)


def test_check_complete_accepts_out_of_order_and_overlapping_retries() -> None:
    check_complete([(50, 100), (0, 50), (0, 50)], 100)
    check_complete([], 0)


def test_check_complete_finds_holes_and_overruns() -> None:
    with pytest.raises(IncompleteUpload, match="missing bytes 50-59"):
        check_complete([(0, 50), (60, 100)], 100)
    with pytest.raises(IncompleteUpload, match="received 50 of 100"):
        check_complete([(0, 50)], 100)
    with pytest.raises(IncompleteUpload, match="declared size is 100"):
        check_complete([(0, 120)], 100)


def test_parse_range_forms_and_limits() -> None:
    assert parse_range("bytes=0-9", 100) == (0, 10)
    assert parse_range("bytes=90-", 100) == (90, 100)
    assert parse_range("bytes=95-200", 100) == (95, 100)
    assert parse_range("bytes=-10", 100) == (90, 100)
    assert parse_range("bytes=-500", 100) == (0, 100)
    for unsatisfiable in ("bytes=100-", "bytes=5-4", "bytes=-0"):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(unsatisfiable, 100)
    for malformed in ("bytes=", "bytes=a-b", "bytes=0-1,5-6", "items=0-1"):
        with pytest.raises(InvalidRequest):
            parse_range(malformed, 100)
