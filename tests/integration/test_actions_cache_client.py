"""The real @actions/cache 6.3.0 against a real runcache server, over both protocol versions."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from helpers import Server, run_client

# Every test taking `server` runs on the embedded default and on scale-out (tests/conftest.py).
BOTH_BACKENDS = True

PROTOCOLS = ["v1", "v2"]


def make_tree(root: Path, seed: str, files: int = 3, size: int = 200_000) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    digests = {}
    for i in range(files):
        data = hashlib.sha256(f"{seed}-{i}".encode()).digest() * (size // 32) + os.urandom(64)
        p = root / f"file{i}.bin"
        p.write_bytes(data)
        digests[p.name] = hashlib.sha256(data).hexdigest()
    return digests


def tree_digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    w = tmp_path / "ws"
    w.mkdir()
    return w


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_save_then_exact_restore_is_byte_identical(server: Server, ws: Path, protocol: str) -> None:
    token = server.token()
    want = make_tree(ws / "deps", "a")
    saved = run_client(server, protocol, "save", workspace=ws, token=token, paths=["deps"], key="Linux-deps-1")
    assert saved.result["cacheId"] > 0, saved.output
    shutil.rmtree(ws / "deps")
    got = run_client(server, protocol, "restore", workspace=ws, token=token, paths=["deps"], key="Linux-deps-1")
    assert got.result["matchedKey"] == "Linux-deps-1", got.output
    assert tree_digests(ws / "deps") == want
    if protocol == "v2":
        assert "Cache hit for: Linux-deps-1" in got.output


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_restore_key_returns_newest_matching_entry(server: Server, ws: Path, protocol: str) -> None:
    token = server.token()
    make_tree(ws / "deps", "old")
    assert (
        run_client(server, protocol, "save", workspace=ws, token=token, paths=["deps"], key="npm-aaa").result["cacheId"]
        > 0
    )
    newest = make_tree(ws / "deps", "new")
    assert (
        run_client(server, protocol, "save", workspace=ws, token=token, paths=["deps"], key="npm-bbb").result["cacheId"]
        > 0
    )
    shutil.rmtree(ws / "deps")
    got = run_client(
        server,
        protocol,
        "restore",
        workspace=ws,
        token=token,
        paths=["deps"],
        key="npm-ccc",
        restore_keys=["nomatch-", "npm-"],
    )
    assert got.result["matchedKey"] == "npm-bbb", got.output
    assert tree_digests(ws / "deps") == newest
    if protocol == "v2":
        assert "Cache hit for restore-key: npm-bbb" in got.output


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_case_insensitive_match_returns_stored_case(server: Server, ws: Path, protocol: str) -> None:
    token = server.token()
    make_tree(ws / "deps", "c")
    run_client(server, protocol, "save", workspace=ws, token=token, paths=["deps"], key="Linux-PIP-abc")
    got = run_client(
        server, protocol, "restore", workspace=ws, token=token, paths=["deps"], key="linux-pip-ABC", lookup_only=True
    )
    assert got.result["matchedKey"] == "Linux-PIP-abc"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_version_mismatch_misses(server: Server, ws: Path, protocol: str) -> None:
    token = server.token()
    make_tree(ws / "deps", "v")
    run_client(server, protocol, "save", workspace=ws, token=token, paths=["deps"], key="ver-key")
    # A different path list is a different version: the same key must not match.
    got = run_client(
        server,
        protocol,
        "restore",
        workspace=ws,
        token=token,
        paths=["deps", "other"],
        key="ver-key",
        restore_keys=["ver-"],
    )
    assert got.result["matchedKey"] is None, got.output


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_feature_branch_reads_main_but_not_the_reverse(server: Server, ws: Path, protocol: str) -> None:
    main_tok = server.token(ref="refs/heads/main")
    feat_tok = server.token(ref="refs/heads/feature")
    main_tree = make_tree(ws / "deps", "main")
    run_client(server, protocol, "save", workspace=ws, token=main_tok, paths=["deps"], key="br-main")
    make_tree(ws / "deps", "feature")
    run_client(
        server,
        protocol,
        "save",
        workspace=ws,
        token=feat_tok,
        ref="refs/heads/feature",
        paths=["deps"],
        key="br-feature",
    )
    shutil.rmtree(ws / "deps")
    got = run_client(
        server,
        protocol,
        "restore",
        workspace=ws,
        token=feat_tok,
        ref="refs/heads/feature",
        paths=["deps"],
        key="br-main",
    )
    assert got.result["matchedKey"] == "br-main"
    assert tree_digests(ws / "deps") == main_tree
    miss = run_client(
        server,
        protocol,
        "restore",
        workspace=ws,
        token=main_tok,
        paths=["deps"],
        key="br-feature",
        restore_keys=["br-f"],
    )
    assert miss.result["matchedKey"] is None, miss.output


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_second_save_of_same_key_is_refused_and_first_is_unchanged(server: Server, ws: Path, protocol: str) -> None:
    token = server.token()
    first = make_tree(ws / "deps", "first")
    assert (
        run_client(server, protocol, "save", workspace=ws, token=token, paths=["deps"], key="immut").result["cacheId"]
        > 0
    )
    make_tree(ws / "deps", "second")
    again = run_client(server, protocol, "save", workspace=ws, token=token, paths=["deps"], key="immut")
    assert again.result["cacheId"] == -1, again.output
    assert "Unable to reserve cache with key immut, another job may be creating this cache." in again.output
    if protocol == "v1":
        assert "Cache already exists. Scope: refs/heads/main, Key: immut" in again.output
    shutil.rmtree(ws / "deps")
    got = run_client(server, protocol, "restore", workspace=ws, token=token, paths=["deps"], key="immut")
    assert got.result["matchedKey"] == "immut"
    assert tree_digests(ws / "deps") == first


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_lookup_only_downloads_nothing(server: Server, ws: Path, protocol: str) -> None:
    token = server.token()
    make_tree(ws / "deps", "lo")
    run_client(server, protocol, "save", workspace=ws, token=token, paths=["deps"], key="look-1")
    shutil.rmtree(ws / "deps")
    got = run_client(
        server, protocol, "restore", workspace=ws, token=token, paths=["deps"], key="look-1", lookup_only=True
    )
    assert got.result["matchedKey"] == "look-1"
    assert "Lookup only - skipping download" in got.output
    assert not (ws / "deps").exists()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_read_only_token_saves_nothing_and_client_logs_denial(server: Server, ws: Path, protocol: str) -> None:
    ro = server.token(mode="read")
    make_tree(ws / "deps", "ro")
    saved = run_client(server, protocol, "save", workspace=ws, token=ro, paths=["deps"], key="ro-key")
    assert saved.result["cacheId"] == -1
    assert "Failed to save: Unable to reserve cache with key ro-key. More details: cache write denied:" in saved.output
    assert "::warning::" in saved.output
    rw = server.token()
    got = run_client(
        server, protocol, "restore", workspace=ws, token=rw, paths=["deps"], key="ro-key", lookup_only=True
    )
    assert got.result["matchedKey"] is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_token_without_read_reports_denial_as_miss(server: Server, ws: Path, protocol: str) -> None:
    rw = server.token()
    make_tree(ws / "deps", "wo")
    run_client(server, protocol, "save", workspace=ws, token=rw, paths=["deps"], key="wo-key")
    write_only = server.token(mode="write-only")
    got = run_client(server, protocol, "restore", workspace=ws, token=write_only, paths=["deps"], key="wo-key")
    assert got.result["matchedKey"] is None
    assert "Failed to restore:" in got.output and "cache read denied:" in got.output


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_other_repository_cannot_see_entries(server: Server, ws: Path, protocol: str) -> None:
    make_tree(ws / "deps", "repo")
    run_client(
        server, protocol, "save", workspace=ws, token=server.token(repo="octo/app"), paths=["deps"], key="shared-key"
    )
    got = run_client(
        server,
        protocol,
        "restore",
        workspace=ws,
        token=server.token(repo="evil/fork"),
        paths=["deps"],
        key="shared-key",
        restore_keys=["shared"],
    )
    assert got.result["matchedKey"] is None


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_archive_above_300_mib(server: Server, ws: Path, protocol: str) -> None:
    token = server.token()
    big = ws / "big"
    big.mkdir()
    digest = hashlib.sha256()
    with open(big / "blob.bin", "wb") as fh:
        for _ in range(310):
            chunk = os.urandom(1024 * 1024)  # incompressible: the archive stays above 300 MiB
            digest.update(chunk)
            fh.write(chunk)
    saved = run_client(server, protocol, "save", workspace=ws, token=token, paths=["big"], key="big-1")
    assert saved.result["cacheId"] > 0, saved.output
    if protocol == "v1":
        assert saved.output.count("Uploading chunk of size 33554432") >= 9, saved.output
    else:
        assert server.log_path is not None
        assert "put block list of 5 blocks" in server.log_path.read_text()
    shutil.rmtree(big)
    got = run_client(server, protocol, "restore", workspace=ws, token=token, paths=["big"], key="big-1")
    assert got.result["matchedKey"] == "big-1", got.output
    assert "Cache Size: ~310 MB" in got.output
    h = hashlib.sha256()
    with open(big / "blob.bin", "rb") as fh:
        while b := fh.read(1 << 20):
            h.update(b)
    assert h.hexdigest() == digest.hexdigest()
