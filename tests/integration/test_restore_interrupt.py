"""A multi-threaded `runcache restore` interrupted at random points: the destination is untouched or complete.

The restore overlaps download, decompression, member parsing and file writing on several threads; Ctrl-C
(SIGINT) or a cancelled job (SIGTERM) may land in any of them. Whatever the moment, the destination must
hold either exactly what it held before or exactly what an uninterrupted restore leaves, and no staging
directory may remain.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

from helpers import RUNCACHE, Server

ROUNDS = 12


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Names, types, modes, contents and link targets (directory mtimes move with staging, so not those)."""
    out: dict[str, tuple[object, ...]] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(Path(p).read_bytes()).hexdigest())
    return out


def staging_left(top: Path) -> list[str]:
    return [os.path.join(d, n) for d, dirs, _ in os.walk(top) for n in dirs if n.startswith(".runcache-restore-")]


def build_tree(dest: Path, rng: random.Random) -> None:
    """A package-like tree: many small files in nested folders, a few larger ones, a symlink."""
    for p in range(30):
        pkg = dest / f"pkg{p:02d}" / "sub"
        pkg.mkdir(parents=True)
        for f in range(50):
            (pkg / f"mod{f:02d}.py").write_bytes(rng.randbytes(rng.choice([200, 2000, 9000])))
    big = dest / "big"
    big.mkdir()
    for i in range(4):
        (big / f"blob{i}.bin").write_bytes(rng.randbytes(3 * 2**20))
    os.symlink("pkg00/sub/mod00.py", dest / "link.py")


def run_cli(server: Server, ws: Path, token: str, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RUNCACHE_URL": server.url,
        "RUNCACHE_TOKEN": token,
        "RUNCACHE_PROTOCOL": "v2",
        "GITHUB_WORKSPACE": str(ws),
    }
    for name in ("ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL", "ACTIONS_RUNTIME_TOKEN", "GITHUB_OUTPUT"):
        env.pop(name, None)
    return subprocess.Popen(
        [*RUNCACHE, *args], cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def test_an_interrupted_restore_leaves_the_destination_untouched_or_complete(server: Server, tmp_path: Path) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    ws = tmp_path / "ws"
    dest = ws / "deps"
    build_tree(dest, rng)
    token = server.token()
    saved = run_cli(server, ws, token, "save", "--path", "deps", "--key", "interrupt-1")
    assert saved.wait(300) == 0, saved.stderr.read() if saved.stderr else ""

    # The state a restore starts from: an older copy, some files changed, one the archive does not have.
    template = tmp_path / "before"
    shutil.copytree(dest, template, symlinks=True)
    (template / "pkg03" / "sub" / "mod07.py").write_bytes(b"older")
    (template / "local-only.txt").write_bytes(b"mine")
    shutil.rmtree(template / "pkg29")
    before = snapshot(template)

    def fresh() -> None:
        shutil.rmtree(dest)
        shutil.copytree(template, dest, symlinks=True)

    fresh()
    started = time.monotonic()
    whole = run_cli(server, ws, token, "restore", "--path", "deps", "--key", "interrupt-1")
    assert whole.wait(300) == 0, whole.stderr.read() if whole.stderr else ""
    duration = time.monotonic() - started
    complete = snapshot(dest)
    assert complete != before
    assert complete["pkg03/sub/mod07.py"] != before["pkg03/sub/mod07.py"]
    assert complete["local-only.txt"] == before["local-only.txt"]

    outcomes = []
    for _ in range(ROUNDS):
        fresh()
        proc = run_cli(server, ws, token, "restore", "--path", "deps", "--key", "interrupt-1")
        time.sleep(rng.uniform(0.0, duration * 1.1))
        sig = rng.choice([signal.SIGINT, signal.SIGTERM])
        if proc.poll() is None:
            proc.send_signal(sig)
        rc = proc.wait(120)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        got = snapshot(dest)
        if got not in (before, complete):
            off_before = sorted(k for k in set(got) | set(before) if got.get(k) != before.get(k))
            off_complete = sorted(k for k in set(got) | set(complete) if got.get(k) != complete.get(k))
            raise AssertionError(
                f"{sig.name} gave a half-restored tree (exit {rc}): {err[-500:]}\n"
                f"differs from before at {off_before[:10]} ({len(off_before)}), "
                f"from complete at {off_complete[:10]} ({len(off_complete)})"
            )
        assert not staging_left(ws), staging_left(ws)
        outcomes.append("complete" if got == complete else "untouched")
        if got == before:
            assert rc != 0, err
