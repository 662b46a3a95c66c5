"""`runcache run` options: where the cache server, its token and protocol, and the data directory come from."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from runcache.runner.launch import (
    UsageError,
    add_run_arguments,
    default_data_dir,
    ignore_in_git,
    resolve_data_dir,
    resolve_server,
)


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    return p.parse_args(list(argv))


def server(argv: tuple[str, ...], env: dict[str, str]):
    return resolve_server(parse(*argv), env, repository="o/r", ref="refs/heads/main")


def test_server_from_flag_or_runcache_url_with_token_and_protocol() -> None:
    env = {"RUNCACHE_URL": "http://env", "RUNCACHE_TOKEN": "t-env", "RUNCACHE_PROTOCOL": "v1"}
    s = server((), env)
    assert (s.url, s.token, s.protocol, s.source) == ("http://env", "t-env", "v1", "RUNCACHE_URL")
    s = server(("--url", "http://flag", "--token", "t", "--protocol", "v2"), env)
    assert (s.url, s.token, s.protocol, s.source) == ("http://flag", "t", "v2", "--url")
    assert server(("--server", "http://alias"), env).url == "http://alias"
    assert server(("--embedded",), env) is None
    assert server(("--url", ""), env) is None
    assert server((), {}) is None
    assert server((), {"RUNCACHE_URL": "http://env", "RUNCACHE_TOKEN": "t"}).protocol == "v2"
    with pytest.raises(UsageError, match=r"RUNCACHE_URL is set .* RUNCACHE_TOKEN"):
        server((), {"RUNCACHE_URL": "http://env"})
    with pytest.raises(UsageError, match="RUNCACHE_PROTOCOL must be v1 or v2"):
        server((), {**env, "RUNCACHE_PROTOCOL": "v9"})


def test_data_dir_is_per_user_unless_given(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    assert default_data_dir({"HOME": home}) == Path(home) / ".local" / "state" / "runcache"
    assert default_data_dir({"HOME": home, "XDG_STATE_HOME": "/x/state"}) == Path("/x/state/runcache")
    assert default_data_dir({"HOME": home, "XDG_STATE_HOME": "relative"}) == Path(home) / ".local/state/runcache"
    assert resolve_data_dir(None, {"HOME": home, "RUNCACHE_DATA_DIR": "/d"}) == Path("/d")
    assert resolve_data_dir(Path("flag"), {"HOME": home, "RUNCACHE_DATA_DIR": "/d"}) == Path("flag")


def test_a_data_dir_inside_a_git_work_tree_ignores_itself(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    inside = repo / "data"
    inside.mkdir()
    ignore_in_git(inside)
    assert (inside / ".gitignore").read_text().splitlines()[-1] == "*"
    ignore_in_git(repo)  # never the work tree's own root
    assert not (repo / ".gitignore").exists()
    outside = tmp_path / "outside"
    outside.mkdir()
    ignore_in_git(outside)
    assert not (outside / ".gitignore").exists()
    (inside / ".gitignore").write_text("mine\n")
    ignore_in_git(inside)  # an existing one is left alone
    assert (inside / ".gitignore").read_text() == "mine\n"
