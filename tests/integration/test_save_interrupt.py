"""A real `runcache save` interrupted at random points: it exits promptly, and its key is free or whole.

A save overlaps tar, zstd, reading the archive and sending it (v1: chunks on upload threads; v2: one
streamed Put Blob on a thread of its own); Ctrl-C (SIGINT) or a cancelled job (SIGTERM) may land
anywhere. Whatever the moment, the command must end within a bound with a non-zero status (unless it had
already finished), and afterwards either no entry exists for the key, or the entry restores
byte-identical. A save interrupted before its commit gives its reservation back, so the next save of
the same key succeeds at once instead of meeting "another job may be creating this cache".
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

from test_restore_interrupt import snapshot

from helpers import RUNCACHE, Server, cli_env

ROUNDS = 6
EXIT_BOUND = 30  # seconds from the signal to the exit; an interrupted save needs well under one


def build_tree(dest: Path, rng: random.Random) -> None:
    """Incompressible bytes (a few seconds of saving) and many small files (many tar members)."""
    for p in range(10):
        pkg = dest / f"pkg{p:02d}"
        pkg.mkdir(parents=True)
        for f in range(30):
            (pkg / f"mod{f:02d}.py").write_bytes(rng.randbytes(rng.choice([300, 3000])))
    for i in range(3):
        (dest / f"blob{i}.bin").write_bytes(rng.randbytes(12 * 2**20))


def run_cli(server: Server, ws: Path, token: str, protocol: str, *args: str) -> subprocess.Popen[bytes]:
    env = cli_env(server, protocol, token, ws)
    return subprocess.Popen(
        [*RUNCACHE, *args, "--json"],
        cwd=ws,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 300) -> tuple[int, dict[str, object], str]:
    out, err = proc.communicate(timeout=timeout)
    result = json.loads(out) if out.strip() else {}
    return proc.returncode, result, err.decode(errors="replace")


def restored(server: Server, token: str, protocol: str, key: str, into: Path) -> dict[str, tuple[object, ...]] | None:
    """What an exact restore of `key` leaves in a fresh workspace; None when there is no such entry."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir()
    rc, result, err = finish(run_cli(server, into, token, protocol, "restore", "--path", "deps", "--key", key))
    assert rc == 0 and not result.get("warning"), (rc, result, err)
    if not result["restored"]:
        return None
    assert result["cache_hit"] == "true", result
    return snapshot(into / "deps")


def test_an_interrupted_save_exits_promptly_and_leaves_no_entry_or_a_whole_one(server: Server, tmp_path: Path) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    ws = tmp_path / "ws"
    build_tree(ws / "deps", rng)
    expected = snapshot(ws / "deps")
    token = server.token()
    check = tmp_path / "check"

    started = time.monotonic()
    rc, result, err = finish(run_cli(server, ws, token, "v2", "save", "--path", "deps", "--key", "whole"))
    duration = time.monotonic() - started
    assert rc == 0 and result["saved"], (result, err)

    outcomes: list[str] = []
    for i in range(ROUNDS):
        protocol = ("v1", "v2")[i % 2]
        key = f"interrupted-{i}"
        proc = run_cli(server, ws, token, protocol, "save", "--path", "deps", "--key", key)
        time.sleep(rng.uniform(0.0, duration * 1.1))
        sig = rng.choice([signal.SIGINT, signal.SIGTERM])
        signalled = proc.poll() is None
        if signalled:
            proc.send_signal(sig)
        try:
            rc, result, err = finish(proc, EXIT_BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError(f"{protocol} save still running {EXIT_BOUND} s after {sig.name}") from None
        got = restored(server, token, protocol, key, check)
        if got is None:
            assert rc != 0, (rc, result, err)  # not saved, so it must not look like success
            outcomes.append(f"{protocol}:{sig.name}:nothing")
            # The reservation was given back: the same key saves at once, and restores whole.
            rc, result, err = finish(run_cli(server, ws, token, protocol, "save", "--path", "deps", "--key", key))
            assert rc == 0 and result["saved"], (f"after {sig.name} the key stayed blocked", result, err)
            assert restored(server, token, protocol, key, check) == expected
        else:
            assert got == expected, f"{protocol} save interrupted by {sig.name} left an entry that differs"
            outcomes.append(f"{protocol}:{sig.name}:whole{'' if signalled else ' (finished first)'}")
        assert "Traceback" not in err, err
    print(outcomes)
