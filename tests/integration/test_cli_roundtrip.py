"""`runcache save/restore` against a real server, interchangeable with the real @actions/cache client."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import RUNCACHE, Server, run_client

PROTOCOLS = ["v1", "v2"]


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def cli(
    server: Server, protocol: str, *args: str, ws: Path, token: str, home: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RUNCACHE_URL": server.url,
        "RUNCACHE_TOKEN": token,
        "RUNCACHE_PROTOCOL": protocol,
        "HOME": str(home),
        "GITHUB_WORKSPACE": str(ws),
        **(extra_env or {}),
    }
    for name in ("ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL", "ACTIONS_RUNTIME_TOKEN", "GITHUB_OUTPUT"):
        if name not in (extra_env or {}):
            env.pop(name, None)
    return subprocess.run([*RUNCACHE, *args], cwd=ws, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def env(tmp_path: Path, server: Server) -> tuple[Path, Path, str]:
    ws = tmp_path / "work" / "repo"
    ws.mkdir(parents=True)
    home = tmp_path / "home"
    (home / ".cache" / "pip" / "wheels").mkdir(parents=True)
    (home / ".cache" / "pip" / "wheels" / "pkg-1.0-py3-none-any.whl").write_bytes(os.urandom(50_000))
    (home / ".cache" / "pip" / "http.json").write_text('{"a": 1}')
    deps = ws / "deps"
    deps.mkdir()
    for i in range(3):
        (deps / f"lib{i}.bin").write_bytes(os.urandom(20_000 + i))
    (deps / "skip.log").write_text("not cached\n")
    (deps / "sub").mkdir()
    (deps / "sub" / "inner.txt").write_text("inner\n")
    return ws, home, server.token()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_to_cli_exact_hit_outputs_and_github_output(server: Server, env, protocol: str, tmp_path: Path) -> None:
    ws, home, token = env
    before = snapshot(ws / "deps")
    saved = cli(server, protocol, "save", "--path", "deps", "--key", "cli-1", ws=ws, token=token, home=home)
    assert saved.returncode == 0, saved.stderr
    assert "Cache saved with key: cli-1" in saved.stdout
    shutil.rmtree(ws / "deps")
    out_file = tmp_path / "github_output"
    got = cli(
        server,
        protocol,
        "restore",
        "--path",
        "deps",
        "--key",
        "cli-1",
        ws=ws,
        token=token,
        home=home,
        extra_env={"GITHUB_OUTPUT": str(out_file)},
    )
    assert got.returncode == 0, got.stderr
    assert snapshot(ws / "deps") == before
    assert "cache-hit=true" in got.stdout
    assert out_file.read_text().splitlines() == ["cache-hit=true", "cache-primary-key=cli-1", "cache-matched-key=cli-1"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_outputs_for_restore_key_hit_miss_and_fail_on_miss(server: Server, env, protocol: str) -> None:
    ws, home, token = env
    assert (
        cli(server, protocol, "save", "--path", "deps", "--key", "out-abc", ws=ws, token=token, home=home).returncode
        == 0
    )
    partial = cli(
        server,
        protocol,
        "restore",
        "--path",
        "deps",
        "--key",
        "out-xyz",
        "--restore-key",
        "out-",
        "--json",
        ws=ws,
        token=token,
        home=home,
    )
    data = json.loads(partial.stdout)
    assert data["outputs"] == {"cache-hit": "false", "cache-primary-key": "out-xyz", "cache-matched-key": "out-abc"}
    miss = cli(
        server, protocol, "restore", "--path", "deps", "--key", "nothing", "--json", ws=ws, token=token, home=home
    )
    assert miss.returncode == 0
    assert json.loads(miss.stdout)["outputs"] == {"cache-hit": "", "cache-primary-key": "nothing"}
    fail = cli(
        server,
        protocol,
        "restore",
        "--path",
        "deps",
        "--key",
        "nothing",
        "--fail-on-cache-miss",
        ws=ws,
        token=token,
        home=home,
    )
    assert fail.returncode == 1 and "fail-on-cache-miss" in fail.stderr
    ok = cli(
        server,
        protocol,
        "restore",
        "--path",
        "deps",
        "--key",
        "none",
        "--restore-key",
        "out-",
        "--fail-on-cache-miss",
        ws=ws,
        token=token,
        home=home,
    )
    assert ok.returncode == 0, "a restore-key hit is not a miss"
    shutil.rmtree(ws / "deps")
    lookup = cli(
        server,
        protocol,
        "restore",
        "--path",
        "deps",
        "--key",
        "out-abc",
        "--lookup-only",
        "--json",
        ws=ws,
        token=token,
        home=home,
    )
    assert json.loads(lookup.stdout)["outputs"]["cache-hit"] == "true"
    assert not (ws / "deps").exists()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("direction", ["cli-to-client", "client-to-cli"])
def test_interchangeable_with_actions_cache(server: Server, env, protocol: str, direction: str) -> None:
    ws, home, token = env
    paths = ["~/.cache/pip", "deps/*.bin", "deps/sub", "!deps/lib1.bin"]
    key = f"x-{direction}"
    want_pip = snapshot(home / ".cache" / "pip")
    want_deps = {k: v for k, v in snapshot(ws / "deps").items() if k not in ("skip.log", "lib1.bin")}
    client_env = {"HOME": str(home)}
    if direction == "cli-to-client":
        r = cli(
            server,
            protocol,
            "save",
            *[a for p in paths for a in ("--path", p)],
            "--key",
            key,
            ws=ws,
            token=token,
            home=home,
        )
        assert r.returncode == 0 and "Cache saved" in r.stdout, r.stderr
    else:
        run = run_client(
            server, protocol, "save", workspace=ws, token=token, paths=paths, key=key, extra_env=client_env
        )
        assert run.result["cacheId"] > 0, run.output
    shutil.rmtree(home / ".cache" / "pip")
    shutil.rmtree(ws / "deps")
    if direction == "cli-to-client":
        run = run_client(
            server, protocol, "restore", workspace=ws, token=token, paths=paths, key=key, extra_env=client_env
        )
        assert run.result["matchedKey"] == key, run.output
    else:
        r = cli(server, protocol, "restore", "--path", "\n".join(paths), "--key", key, ws=ws, token=token, home=home)
        assert r.returncode == 0 and "cache-hit=true" in r.stdout, r.stdout + r.stderr
    assert snapshot(home / ".cache" / "pip") == want_pip
    assert snapshot(ws / "deps") == want_deps
