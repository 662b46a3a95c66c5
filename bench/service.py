#!/usr/bin/env python3
"""Server throughput: the real @actions/cache client against runcache, beside curl on the same server.

    .venv/bin/python bench/service.py [--size-mib 1024]

For one incompressible archive-sized payload it measures, on a fresh server:
- curl upload (one Put Blob to a signed URL) and curl download (GET to /dev/null): the raw server path;
- the real client's save and restore over v1 and v2 (these include its tar + zstd work);
- bare `tar | zstd -T0` and `zstd -d | tar -x` on the same tree, the client's local floor.
The ratio column compares each client run with curl + the local floor, so the server's share is visible.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import Server, node_available, run_client

TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sh(cmd: str, cwd: Path) -> None:
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=cwd, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    if not node_available():
        print("bench needs the Node test clients: run scripts/setup --dev first", file=sys.stderr)
        return 2
    size = args.size_mib * 1024 * 1024
    mb = size / 1e6
    with tempfile.TemporaryDirectory(prefix="runcache-bench-") as tmp:
        root = Path(tmp)
        ws = root / "ws"
        (ws / "payload").mkdir(parents=True)
        with open(ws / "payload" / "data.bin", "wb") as fh:
            for _ in range(args.size_mib):
                fh.write(os.urandom(1024 * 1024))
        server = Server(root / "data").start()
        token = server.token()
        rows: list[tuple[str, float]] = []
        try:
            # Raw server path with curl.
            created = httpx.post(
                server.url + TWIRP + "CreateCacheEntry",
                json={"key": "curl", "version": "c" * 64},
                headers={"Authorization": f"Bearer {token}"},
            ).json()
            up = created["signed_upload_url"]
            rows.append(
                (
                    "curl upload (Put Blob)",
                    timed(
                        lambda: sh(
                            f"curl -sf -o /dev/null -X PUT -H 'x-ms-blob-type: BlockBlob' -T payload/data.bin '{up}'",
                            ws,
                        )
                    ),
                )
            )
            fin = httpx.post(
                server.url + TWIRP + "FinalizeCacheEntryUpload",
                json={"key": "curl", "version": "c" * 64, "size_bytes": str(size)},
                headers={"Authorization": f"Bearer {token}"},
                timeout=120,
            ).json()
            assert fin["ok"], fin
            down = httpx.post(
                server.url + TWIRP + "GetCacheEntryDownloadURL",
                json={"key": "curl", "version": "c" * 64},
                headers={"Authorization": f"Bearer {token}"},
            ).json()["signed_download_url"]
            rows.append(("curl download (GET)", timed(lambda: sh(f"curl -sf -o /dev/null '{down}'", ws))))

            # Local floor of what the client does around the transfer.
            rows.append(
                (
                    "local tar | zstd -T0",
                    timed(lambda: sh("tar --posix -cf - payload | zstd -T0 -q -o ../floor.tzst -f", ws)),
                )
            )
            extract = root / "extract"
            extract.mkdir()
            rows.append(
                (
                    "local zstd -d | tar -x",
                    timed(lambda: sh(f"zstd -d -q -c {root / 'floor.tzst'} | tar -xf - -C {extract}", ws)),
                )
            )
            shutil.rmtree(extract)

            for protocol in ("v1", "v2"):
                key = f"bench-{protocol}"
                t = timed(
                    lambda k=key, p=protocol: _ok(
                        run_client(server, p, "save", workspace=ws, token=token, paths=["payload"], key=k), "cacheId"
                    )
                )
                rows.append((f"@actions/cache save {protocol}", t))
                shutil.move(str(ws / "payload"), str(root / "payload.keep"))
                t = timed(
                    lambda k=key, p=protocol: _ok(
                        run_client(server, p, "restore", workspace=ws, token=token, paths=["payload"], key=k),
                        "matchedKey",
                    )
                )
                rows.append((f"@actions/cache restore {protocol}", t))
                shutil.rmtree(ws / "payload")
                shutil.move(str(root / "payload.keep"), str(ws / "payload"))
        finally:
            server.stop()

    by = dict(rows)
    save_ref = by["curl upload (Put Blob)"] + by["local tar | zstd -T0"]
    restore_ref = by["curl download (GET)"] + by["local zstd -d | tar -x"]
    print(f"\nrunning on {os.cpu_count()} cores, payload {args.size_mib} MiB incompressible\n")
    print(f"{'operation':34} {'seconds':>8} {'MB/s':>8} {'ratio':>28}")
    for name, secs in rows:
        ratio = ""
        if "save" in name:
            ratio = f"{secs / save_ref:.2f}x curl upload + tar|zstd"
        elif "restore" in name:
            ratio = f"{secs / restore_ref:.2f}x curl GET + zstd -d|tar"
        print(f"{name:34} {secs:8.2f} {mb / secs:8.0f} {ratio:>28}")
    return 0


def _ok(run, field: str) -> None:
    value = run.result.get(field)
    if value in (None, -1):
        raise SystemExit(f"client run failed:\n{run.output[-3000:]}")


if __name__ == "__main__":
    sys.exit(main())
