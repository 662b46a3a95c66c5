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


# --- messages and exit codes -------------------------------------------------------------------------
def test_ls_against_a_server_that_is_not_runcache_says_so_without_dumping_its_page(tmp_path: Path) -> None:
    from helpers import StandIn, serve_stand_in

    class Page(StandIn):
        def do_GET(self) -> None:
            body = b"<!doctype html><html><body>" + b"<p>some other app</p>" * 200 + b"</body></html>"
            self.reply(200, body, "text/html")

    httpd, url = serve_stand_in(Page)
    try:
        done = runcache("ls", "-R", "octo/app", "--url", url, "--token", "x.y.z")
        assert done.returncode == 1
        assert "did not answer like a runcache server (HTTP 200, text/html)" in done.stderr
        assert "<html" not in done.stderr and len(done.stderr.splitlines()) == 1
    finally:
        httpd.shutdown()


def test_the_wrong_kind_of_token_is_named(server: Server, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "deps").mkdir(parents=True)
    (ws / "deps" / "a").write_text("a")
    env = {"RUNCACHE_URL": server.url, "RUNCACHE_TOKEN": server.admin_token()}
    done = runcache("save", "--path", "deps", "--key", "k", "--strict", cwd=ws, env=env)
    assert "this is a management token" in done.stderr and "runcache token --repo" in done.stderr
    done = runcache("ls", "-R", "octo/app", env={"RUNCACHE_URL": server.url, "RUNCACHE_ADMIN_TOKEN": server.token()})
    assert done.returncode == 0  # a job token may list its own repository's caches


def test_restore_into_a_folder_that_cannot_be_written_is_a_clear_failure(server: Server, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "deps").mkdir(parents=True)
    (ws / "deps" / "a").write_text("payload")
    env = {"RUNCACHE_URL": server.url, "RUNCACHE_TOKEN": server.token()}
    assert runcache("save", "--path", "deps", "--key", "ro", cwd=ws, env=env).returncode == 0
    target = tmp_path / "target"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(target)], check=True)
    try:
        done = runcache("restore", "--path", "deps", "--key", "ro", "--workspace", str(target), cwd=target, env=env)
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)
    assert done.returncode == 4, done.stderr
    assert "read-only file system" in done.stderr and "nothing was changed" in done.stderr
    assert "Errno" not in done.stderr


def test_hash_files_warns_when_nothing_matches(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("django\n")
    done = runcache("hash-files", "**/nothing.lock", "--workspace", str(tmp_path))
    assert done.returncode == 0 and done.stdout == "\n"
    assert "no files match **/nothing.lock" in done.stderr
    done = runcache("hash-files", "**/requirements.txt", "--workspace", str(tmp_path))
    assert done.returncode == 0 and len(done.stdout.strip()) == 64 and done.stderr == ""


def test_ls_with_no_caches_is_a_success(server: Server) -> None:
    done = runcache(
        "ls", "-R", "octo/app", env={"RUNCACHE_URL": server.url, "RUNCACHE_ADMIN_TOKEN": server.admin_token()}
    )
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


# --- help and flags -------------------------------------------------------------------------------------
def test_version_bare_command_and_serve_help() -> None:
    done = runcache("--version")
    assert done.returncode == 0 and done.stdout.startswith("runcache ")
    done = runcache()
    assert done.returncode == 0 and "COMMAND" in done.stdout and "serve" in done.stdout
    help_text = " ".join(runcache("serve", "--help").stdout.split())
    for flag in ("--data-dir", "--host", "--port", "--public-url", "--database-url", "--reservation-ttl"):
        assert flag in help_text
    for env in ("RUNCACHE_PUBLIC_URL", "RUNCACHE_DATABASE_URL", "RUNCACHE_GITHUB_ISSUER", "RUNCACHE_STORAGE_LIMIT_GB"):
        assert env in help_text, env
    assert "--log-level" in help_text and "access line per request" in help_text


def test_the_same_flags_mean_the_same_thing_everywhere(server: Server, tmp_path: Path) -> None:
    short = runcache("token", "--data-dir", str(server.data_dir), "-R", "octo/app", "-r", "main")
    assert short.returncode == 0
    ws = tmp_path / "ws"
    (ws / "deps").mkdir(parents=True)
    (ws / "deps" / "f").write_text("x")
    env = {"RUNCACHE_URL": server.url, "RUNCACHE_TOKEN": short.stdout.strip()}
    assert runcache("save", "--path", "deps", "-k", "short-k", cwd=ws, env=env).returncode == 0
    assert runcache("restore", "--path", "deps", "-k", "short-k", cwd=ws, env=env).returncode == 0
    admin = {"RUNCACHE_URL": server.url, "RUNCACHE_ADMIN_TOKEN": server.admin_token()}
    done = runcache("limits", "-R", "octo/app", "--storage-limit-gb", "5", "--retention-days", "3", env=admin)
    assert done.returncode == 0 and "5 GiB" in done.stdout and "3 days" in done.stdout
    done = runcache("ls", "-R", "octo/app", "-k", "short", "-r", "main", env=admin)
    assert done.returncode == 0 and "short-k" in done.stdout


def test_scripts_run_says_how_to_get_runcache_on_path(tmp_path: Path) -> None:
    from helpers import ROOT

    venv_bin = str(ROOT / ".venv" / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "run"), "--port", "0", "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PATH": path},
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "serving on" in line:
                break
    finally:
        proc.terminate()
        proc.wait(20)
    activate = next(ln.strip() for ln in lines if ln.strip().startswith("source "))
    assert activate == f"source {ROOT}/.venv/bin/activate"
    done = subprocess.run(
        ["bash", "-c", f"{activate} && runcache --version"], capture_output=True, text=True, env={"PATH": path}
    )
    assert done.returncode == 0 and done.stdout.startswith("runcache ")


def test_the_access_log_is_on_at_the_default_level_and_off_when_quieter(server: Server, tmp_path: Path) -> None:
    httpx.get(server.url + "/healthz")
    server.stop()
    assert '"GET /healthz HTTP/1.1" 200' in server.log_path.read_text()  # type: ignore[union-attr]
    quiet = Server(tmp_path / "quiet", extra_args=["--log-level", "warning"]).start()
    try:
        httpx.get(quiet.url + "/healthz")
    finally:
        quiet.stop()
    assert "GET /healthz" not in quiet.log_path.read_text()  # type: ignore[union-attr]


def test_any_path_under_twirp_answers_in_twirp_json(server: Server) -> None:
    for method, path in (("POST", "/twirp/x/../admin/M"), ("POST", "/twirp/a/b/c"), ("GET", "/twirp/a/b")):
        r = httpx.request(method, server.url + path)
        assert r.status_code == 404 and r.json()["code"] == "bad_route", (method, path, r.text)
