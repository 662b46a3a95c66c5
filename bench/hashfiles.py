#!/usr/bin/env python3
"""hashFiles('**') speed: runcache's native hash_files beside sha256sum over the same tree.

    .venv/bin/python bench/hashfiles.py [--tree PATH] [--files 13500] [--runs 5]

Without --tree it builds a virtualenv-like tree in a temp folder: ``python -m venv``
(pip and setuptools come from the interpreter's bundled wheels, so no network is
needed), then any wheels named with --wheels, then synthetic packages until there are
--files files. Synthetic file sizes are drawn from the sizes of the real venv files, and
each synthetic package gets modules and a ``__pycache__`` beside them, as installed
packages do.

Timings are best-of---runs with a warm page cache (each side runs once before timing):
- runcache: ``hash_files(['**'], tree)`` in this process (walk + match + hash);
- runcache (process): the same through ``python -c``, interpreter start included;
- sha256sum: ``find TREE -type f -print0 | xargs -0 sha256sum``.
``**`` also hashes symlinks to files (e.g. ``bin/python``), which ``find -type f``
skips; the table prints both file counts and byte totals.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from runcache.client.hashfiles import hash_files, list_hashed_files

TARGET_RATIO = 1.5


def build_tree(root: Path, n_files: int, wheels: list[Path], seed: int) -> tuple[Path, int]:
    """A virtualenv topped up with synthetic packages; returns (tree, synthetic file count)."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if wheels:
        subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", "--quiet", *map(str, wheels)], check=True)
    real_files = [p for p in venv.rglob("*") if p.is_file() and not p.is_symlink()]
    sizes = [p.stat().st_size for p in real_files]
    missing = n_files - len(real_files)
    if missing <= 0:
        return venv, 0

    rng = random.Random(seed)
    pool = os.urandom(16 << 20)  # contents only have to be distinct enough; sizes matter
    site = next((venv / "lib").glob("python*/site-packages"))
    made = 0
    pkg = 0
    while made < missing:
        package = site / f"synthpkg_{pkg:04d}"
        pkg += 1
        subpackages = [package] + [package / f"sub{i}" for i in range(rng.randint(0, 4))]
        for directory in subpackages:
            (directory / "__pycache__").mkdir(parents=True, exist_ok=True)
            for m in range(rng.randint(2, 12)):
                for path in (directory / f"mod{m}.py", directory / "__pycache__" / f"mod{m}.cpython-311.pyc"):
                    if made >= missing:
                        break
                    size = min(rng.choice(sizes), len(pool))
                    start = rng.randrange(0, len(pool) - size + 1)
                    path.write_bytes(pool[start : start + size])
                    made += 1
        dist = site / f"synthpkg_{pkg - 1:04d}-1.0.dist-info"
        dist.mkdir(exist_ok=True)
        for name in ("METADATA", "RECORD", "WHEEL", "INSTALLER"):
            if made < missing:
                (dist / name).write_text(f"{name} of synthpkg {pkg}\n" * rng.randint(1, 40))
                made += 1
    return venv, made


def best_of(runs: int, fn) -> float:
    fn()  # warm the page cache and imports
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def tree_stats(tree: Path) -> tuple[int, int, int, int]:
    """(files find sees, their bytes, files hashFiles('**') hashes, their bytes)."""
    found = [Path(d) / f for d, _, fs in os.walk(tree) for f in fs]
    regular = [p for p in found if not p.is_symlink() and p.is_file()]
    hashed = [tree / rel for rel in list_hashed_files(["**"], tree)]
    return (
        len(regular),
        sum(p.stat().st_size for p in regular),
        len(hashed),
        sum(p.stat().st_size for p in hashed),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", type=Path, help="hash this tree instead of building one")
    ap.add_argument("--files", type=int, default=13_500, help="files in the built tree (default 13500)")
    ap.add_argument("--wheels", type=Path, nargs="*", default=[], help="local wheels to install into the venv")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if shutil.which("sha256sum") is None:
        print("needs sha256sum (coreutils)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="runcache-bench-hashfiles-") as tmp:
        if args.tree:
            tree, synthetic = args.tree.resolve(), 0
        else:
            tree, synthetic = build_tree(Path(tmp), args.files, args.wheels, args.seed)
        n_find, bytes_find, n_hashed, bytes_hashed = tree_stats(tree)

        digest = ""

        def native() -> None:
            nonlocal digest
            digest = hash_files(["**"], tree)

        src = str(Path(__file__).resolve().parents[1] / "src")
        code = (
            f"import sys; sys.path.insert(0, {src!r}); "
            f"from runcache.client.hashfiles import hash_files; print(hash_files(['**'], {str(tree)!r}))"
        )

        def own_process() -> None:
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)

        def sha256sum() -> None:
            script = 'find "$1" -type f -print0 | xargs -0 sha256sum >/dev/null'
            subprocess.run(["bash", "-o", "pipefail", "-c", script, "-", str(tree)], check=True)

        rows = [
            ("runcache hash_files('**')", best_of(args.runs, native), n_hashed, bytes_hashed),
            ("runcache, own python process", best_of(args.runs, own_process), n_hashed, bytes_hashed),
            ("find -type f | xargs -0 sha256sum", best_of(args.runs, sha256sum), n_find, bytes_find),
        ]

    base = rows[-1][1]
    print(f"tree: {tree if args.tree else f'venv + {synthetic} synthetic files'}; {os.cpu_count()} CPUs")
    print(f"hashFiles('**') = {digest}")
    print()
    print(f"| {'what':<34} | {'files':>6} | {'MB':>7} | {'seconds':>7} | {'vs sha256sum':>12} |")
    print(f"|{'-' * 36}|{'-' * 8}|{'-' * 9}|{'-' * 9}|{'-' * 14}|")
    for name, secs, n, size in rows:
        print(f"| {name:<34} | {n:>6} | {size / 1e6:>7.1f} | {secs:>7.3f} | {secs / base:>11.2f}x |")
    ratio = rows[0][1] / base
    verdict = "OK" if ratio <= TARGET_RATIO else "SLOWER THAN TARGET"
    print(f"\nin-process ratio {ratio:.2f} (target <= {TARGET_RATIO}): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
