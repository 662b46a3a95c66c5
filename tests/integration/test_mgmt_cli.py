"""`runcache ls / rm / usage / limits / token --admin` against a real server, piped and on a terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import RUNCACHE, Server
from mgmt_helpers import bearer, save


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data").start()
    yield server
    server.stop()


def run(srv: Server, *args: str, token: str | None = None, tty: bool = False, env: dict | None = None):
    environ = {
        **os.environ,
        "RUNCACHE_URL": srv.url,
        "RUNCACHE_ADMIN_TOKEN": token if token is not None else srv.admin_token("octo/app"),
        "COLUMNS": "200",
        **(env or {}),
    }
    environ.pop("GITHUB_REPOSITORY", None)
    if not tty:
        p = subprocess.run([*RUNCACHE, *args], capture_output=True, text=True, env=environ, timeout=60)
        return p.returncode, p.stdout, p.stderr
    leader, follower = pty.openpty()
    p = subprocess.Popen([*RUNCACHE, *args], stdout=follower, stderr=subprocess.PIPE, env=environ)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    p.wait(60)
    os.close(leader)
    assert p.stderr is not None
    return p.returncode, b"".join(chunks).decode().replace("\r\n", "\n"), p.stderr.read().decode()


def seed(srv: Server) -> dict[str, int]:
    return {
        "small": save(srv, "npm-linux-small", b"x" * 100),
        "big": save(srv, "npm-linux-big", b"x" * 3000, ref="refs/heads/feature"),
        "pip": save(srv, "pip-cache", b"x" * 2048),
    }


def test_ls_piped_is_tab_separated_with_absolute_values(srv: Server) -> None:
    ids = seed(srv)
    code, out, _ = run(srv, "ls", "--sort", "size_in_bytes")
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[0] for r in rows] == [str(ids["big"]), str(ids["pip"]), str(ids["small"])]
    assert rows[0][1:3] == ["npm-linux-big", "3000"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", t) for r in rows for t in r[3:5])
    code, out, _ = run(srv, "ls", "--key", "npm-", "--order", "asc", "--sort", "created_at", "--limit", "1")
    assert [line.split("\t")[1] for line in out.splitlines()] == ["npm-linux-small"]
    code, out, _ = run(srv, "ls", "--ref", "refs/heads/feature")
    assert [line.split("\t")[1] for line in out.splitlines()] == ["npm-linux-big"]


def test_ls_on_a_terminal_is_a_table_with_relative_times_and_human_sizes(srv: Server) -> None:
    seed(srv)
    code, out, _ = run(srv, "ls", "--sort", "size_in_bytes", tty=True)
    assert code == 0
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines[0] == "Showing 3 of 3 caches in octo/app"
    assert re.match(r"ID\s+KEY\s+SIZE\s+CREATED\s+ACCESSED$", lines[1])
    assert re.search(r"npm-linux-big\s+2\.92 KiB\s+less than a minute ago\s+less than a minute ago", lines[2])
    assert "2.00 KiB" in lines[3] and "100 B" in lines[4]
    code, out, _ = run(srv, "ls", "--limit", "2", tty=True)
    assert "Showing 2 of 3 caches in octo/app" in out


def test_ls_json_and_empty_results(srv: Server) -> None:
    ids = seed(srv)
    code, out, _ = run(srv, "ls", "--json", "id,key,sizeInBytes,ref", "--key", "pip")
    assert code == 0
    assert json.loads(out) == [{"id": ids["pip"], "key": "pip-cache", "sizeInBytes": 2048, "ref": "refs/heads/main"}]
    code, out, _ = run(srv, "ls", "--json", "createdAt,lastAccessedAt,version")
    assert code == 0 and set(json.loads(out)[0]) == {"createdAt", "lastAccessedAt", "version"}
    code, _, err = run(srv, "ls", "--json")
    assert code == 2 and "sizeInBytes" in err
    code, _, err = run(srv, "ls", "--json", "id,nope")
    assert code == 2 and "Unknown JSON field: nope" in err
    code, out, err = run(srv, "ls", "--key", "nothing")
    assert code == 0 and out == "" and err == ""  # piped: nothing to say, and nothing went wrong
    code, out, err = run(srv, "ls", "--key", "nothing", tty=True)
    assert code == 0 and "No caches found in octo/app" in err
    code, out, _ = run(srv, "ls", "--key", "nothing", "--json", "id")
    assert code == 0 and json.loads(out) == []
    code, _, err = run(srv, "ls", "--limit", "0")
    assert code == 2 and "invalid limit" in err


def test_ls_pages_through_more_than_100(srv: Server) -> None:
    from mgmt_helpers import version_for

    for i in range(105):
        save(srv, "k", b"x", version=version_for(str(i)))
    code, out, _ = run(srv, "ls", "--limit", "1000")
    assert code == 0 and len(out.splitlines()) == 105
    code, out, _ = run(srv, "ls", "--limit", "101")
    assert len(out.splitlines()) == 101


def test_rm_by_id_key_and_all(srv: Server) -> None:
    ids = seed(srv)
    code, out, _ = run(srv, "rm", str(ids["small"]), tty=True)
    assert code == 0 and "✓ Deleted 1 cache from octo/app" in out
    code, _, err = run(srv, "rm", str(ids["small"]))
    assert code == 1 and f"X Could not find a cache matching {ids['small']} in octo/app" in err
    code, _, err = run(srv, "rm", "npm-linux-big", "--ref", "refs/heads/main")
    assert code == 1 and "Could not find a cache matching npm-linux-big" in err
    code, out, _ = run(srv, "rm", "npm-linux-big", "--ref", "refs/heads/feature")
    assert code == 0 and out == ""  # piped: quiet, as gh
    save(srv, "a", b"1")
    save(srv, "b", b"2", ref="refs/heads/feature")
    for empty in ("", " "):  # an empty filter is an error, never "every ref"
        code, _, err = run(srv, "rm", "--all", "--ref", empty)
        assert code == 2 and "--ref needs a ref" in err
    code, out, _ = run(srv, "rm", "--all", "--ref", "refs/heads/feature", tty=True)
    assert code == 0 and "Deleted 1 cache from" in out
    code, out, _ = run(srv, "rm", "--all", tty=True)
    assert code == 0 and "✓ Deleted 2 caches from octo/app" in out
    token = srv.admin_token("octo/app")
    assert httpx.get(srv.url + "/repos/octo/app/actions/caches", headers=bearer(token)).json()["total_count"] == 0
    code, _, err = run(srv, "rm", "--all")
    assert code == 1 and "No caches to delete" in err
    assert run(srv, "rm", "--all", "--succeed-on-no-caches")[0] == 0
    assert run(srv, "rm")[0] == 2
    assert run(srv, "rm", "x", "--all")[0] == 2
    assert run(srv, "rm", "12", "--ref", "main")[0] == 2


def test_usage_and_limits(srv: Server) -> None:
    seed(srv)
    code, out, _ = run(srv, "usage", tty=True)
    assert code == 0
    assert "octo/app: 3 caches, 5.02 KiB of 10 GiB (0.0%); unused caches are removed after 7 days" in out
    code, out, _ = run(srv, "usage")
    assert out.split("\t") == ["octo/app", "3", "5148", str(10 * 1024**3), "7\n"]
    code, out, _ = run(srv, "usage", "--json")
    assert json.loads(out) == {
        "full_name": "octo/app",
        "active_caches_size_in_bytes": 5148,
        "active_caches_count": 3,
        "max_cache_size_gb": 10,
        "max_cache_retention_days": 7,
    }
    code, out, _ = run(srv, "limits", "--storage", "20", "--retention", "3")
    assert code == 0 and "storage limit: 20 GiB" in out and "3 days" in out
    code, _, err = run(srv, "limits", "--storage", "0")
    assert code == 1 and "max_cache_size_gb" in err
    code, _, err = run(srv, "limits", "--storage", "5", token=srv.admin_token("octo/app", permission="write"))
    assert code == 1 and "admin rights" in err
    save(srv, "x", b"x" * 10, repo="octo/lib")
    org = srv.admin_token(org="octo", permission="read")
    code, out, _ = run(srv, "usage", "--org", "octo", token=org, tty=True)
    assert code == 0 and "octo: 4 caches, 5.03 KiB in 2 repositories" in out and "octo/lib" in out
    code, out, _ = run(srv, "usage", "--org", "octo", token=org)
    assert out.splitlines() == ["octo/app\t3\t5148", "octo/lib\t1\t10"]


def test_errors_and_configuration(srv: Server) -> None:
    seed(srv)
    code, _, err = run(srv, "ls", "-R", "octo/app", token="garbage")
    assert code == 4 and "Bad credentials" in err
    code, _, err = run(srv, "ls", "-R", "octo/other")
    assert code == 1 and "Not Found" in err
    site = srv.admin_token(site=True)
    code, _, err = run(srv, "ls", token=site)
    assert code == 2 and "no repository" in err  # a site token names no repository
    code, out, _ = run(srv, "ls", token=site, env={"RUNCACHE_REPO": "octo/app"})
    assert code == 0 and len(out.splitlines()) == 3
    code, out, _ = run(srv, "ls", token=srv.token("octo/app"))  # a job token lists its own repository
    assert code == 0 and len(out.splitlines()) == 3
    code, _, err = run(srv, "ls", env={"RUNCACHE_URL": "http://127.0.0.1:9"})
    assert code == 1 and "cannot reach" in err


def test_token_admin(srv: Server) -> None:
    def token(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*RUNCACHE, "token", "--data-dir", str(srv.data_dir), *args], capture_output=True, text=True, timeout=60
        )

    seed(srv)
    repo_token = token("--admin", "--repo", "octo/app", "--permission", "read").stdout.strip()
    r = httpx.get(srv.url + "/repos/octo/app/actions/caches", headers=bearer(repo_token))
    assert r.status_code == 200 and r.json()["total_count"] == 3
    assert (
        httpx.delete(srv.url + "/repos/octo/app/actions/caches?key=pip-cache", headers=bearer(repo_token)).status_code
        == 403
    )
    org_token = token("--admin", "--org", "octo").stdout.strip()
    assert httpx.get(srv.url + "/orgs/octo/actions/cache/usage", headers=bearer(org_token)).status_code == 200
    site_token = token("--admin", "--site", "--ttl", "60").stdout.strip()
    assert httpx.get(srv.url + "/repos/any/where/actions/caches", headers=bearer(site_token)).status_code == 200
    assert token("--admin").returncode == 2
    assert token("--admin", "--repo", "octo/app", "--org", "octo").returncode == 2
    assert token("--admin", "--repo", "octo/app", "--ref", "main").returncode == 2
    assert token("--repo", "octo/app").returncode == 2  # a job token still needs --ref
    job = token("--repo", "octo/app", "--ref", "main").stdout.strip()
    assert httpx.get(srv.url + "/repos/octo/app/actions/caches", headers=bearer(job)).status_code == 200
