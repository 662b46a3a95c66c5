"""What a new user trips over in the first hour: tokens from the wrong folder, messages, exit codes, help."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from helpers import RUNCACHE, Server
from wire import v1_lookup


def runcache(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, stdin: str | None = None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCACHE_", "ACTIONS_", "GITHUB_"))}
    return subprocess.run(
        [*RUNCACHE, *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
    )


# --- tokens ---------------------------------------------------------------------------------------
def test_token_from_a_folder_without_the_servers_secret_is_refused_with_the_reason(
    server: Server, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = runcache("token", "--repo", "octo/app", "--ref", "main", cwd=elsewhere)
    assert done.returncode == 2 and done.stdout == ""
    assert "does not exist" in done.stderr and "--data-dir" in done.stderr
    assert not (elsewhere / ".runcache").exists()  # no stray secret made on the way
    (elsewhere / ".runcache").mkdir()
    done = runcache("token", "--repo", "octo/app", "--ref", "main", cwd=elsewhere)
    assert done.returncode == 2 and "holds no runcache secret" in done.stderr
    assert not (elsewhere / ".runcache" / "secret").exists()

    missing = tmp_path / "nonexistent" / "x"
    done = runcache("token", "--data-dir", str(missing), "--repo", "octo/app", "--ref", "main")
    assert done.returncode == 2 and "does not exist" in done.stderr
    assert not missing.exists()
    done = runcache("token", "--admin", "--repo", "octo/app", "--data-dir", str(missing))
    assert done.returncode == 2 and "does not exist" in done.stderr

    # The server's data directory works, from anywhere, by flag or by the same variable serve reads.
    by_flag = runcache(
        "token", "--data-dir", str(server.data_dir), "--repo", "octo/app", "--ref", "main", cwd=elsewhere
    )
    assert by_flag.returncode == 0 and v1_lookup(server, by_flag.stdout.strip(), "k").status_code == 204
    by_env = runcache("token", "--repo", "octo/app", "--ref", "main", env={"RUNCACHE_DATA_DIR": str(server.data_dir)})
    assert by_env.returncode == 0 and v1_lookup(server, by_env.stdout.strip(), "k").status_code == 204


def test_a_token_signed_with_another_secret_says_so(server: Server, tmp_path: Path) -> None:
    other = Server(tmp_path / "other").start()
    try:
        foreign = other.token()
    finally:
        other.stop()
    r = v1_lookup(server, foreign, "k")
    assert r.status_code == 401 and "signed with another secret" in r.json()["message"]
    r = httpx.post(
        server.url + "/twirp/github.actions.results.api.v1.CacheService/GetCacheEntryDownloadURL",
        json={"key": "k", "version": "a" * 64},
        headers={"Authorization": f"Bearer {foreign}"},
    )
    assert r.status_code == 401 and "signed with another secret" in r.json()["msg"]
