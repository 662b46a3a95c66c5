"""`runcache restore`, `save` and `hash-files`: actions/cache's semantics outside GitHub's runners.

Inputs, outputs and exit codes are docs/cli.md's; the work is the client package's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runcache.cli import EXIT_MISS, EXIT_OK, EXIT_SERVICE, EXIT_UNWRITABLE


def _client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--path",
        action="append",
        required=True,
        help="path, glob or !exclusion; repeat or give several lines (as the action's `path` input)",
    )
    p.add_argument("-k", "--key", required=True, help="the cache key")
    p.add_argument("--enable-cross-os-archive", action="store_true", help="as the action's enableCrossOsArchive")
    connection_flags(p)


def connection_flags(p: argparse.ArgumentParser) -> None:
    """The flags every command that talks to a cache service shares (also `runcache pip install`'s)."""
    p.add_argument("--url", help="cache service URL (env RUNCACHE_URL, or ACTIONS_CACHE_URL/ACTIONS_RESULTS_URL)")
    p.add_argument("--token", help="bearer token (env RUNCACHE_TOKEN or ACTIONS_RUNTIME_TOKEN)")
    p.add_argument("--protocol", choices=["v1", "v2"], help="cache protocol (default v2, or what ACTIONS_* imply)")
    p.add_argument(
        "--workspace",
        type=Path,
        help="archive paths are relative to this (default $GITHUB_WORKSPACE or the current directory)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 3 when the cache service or the archive fails (default: a warning, as in the action)",
    )


def workspace_of(args: argparse.Namespace) -> Path:
    import os

    return (args.workspace or Path(os.environ.get("GITHUB_WORKSPACE") or os.getcwd())).resolve()


def client_of(args: argparse.Namespace):
    import os

    from runcache.client.config import download_buffer_bytes, resolve_endpoint
    from runcache.client.transfer import CacheClient

    ep = resolve_endpoint(os.environ, url=args.url, token=args.token, protocol=args.protocol)
    return CacheClient(ep.url, ep.token, ep.protocol, download_buffer=download_buffer_bytes(os.environ))


def write_outputs(outputs: dict[str, str]) -> None:
    import os

    target = os.environ.get("GITHUB_OUTPUT")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            for name, value in outputs.items():
                fh.write(f"{name}={value}\n")


def cmd_restore(args: argparse.Namespace) -> int:
    import json

    from runcache.client.interrupt import sigterm_interrupts
    from runcache.client.operations import key_lines, restore
    from runcache.client.progress import TransferProgress

    restore_keys = key_lines(args.restore_key or [])
    with sigterm_interrupts(), client_of(args) as client, TransferProgress("restore") as progress:
        result = restore(
            client,
            paths=args.path,
            key=args.key,
            restore_keys=restore_keys,
            workspace=workspace_of(args),
            lookup_only=args.lookup_only,
            cross_os=args.enable_cross_os_archive,
            progress=progress,
        )
    write_outputs(result.outputs())
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        if result.warning:
            print(f"warning: {result.warning}", file=sys.stderr)
        if result.matched_key and args.lookup_only:
            print(f"Cache found and can be restored from key: {result.matched_key}")
        elif result.restored:
            print(
                f"Cache restored from key: {result.matched_key} ({result.bytes / 1e6:.1f} MB in {result.seconds:.2f} s)"
            )
        elif not result.warning:
            print(f"Cache not found for input keys: {', '.join([args.key, *restore_keys])}")
        for name, value in result.outputs().items():
            print(f"{name}={value}")
    if result.unwritable:
        return EXIT_UNWRITABLE
    if not result.cache_hit and args.fail_on_cache_miss:
        print(
            f"error: Failed to restore cache entry. Exiting as fail-on-cache-miss is set. Input key: {args.key}",
            file=sys.stderr,
        )
        return EXIT_MISS
    if result.warning and args.strict:
        return EXIT_SERVICE
    return EXIT_OK


def cmd_save(args: argparse.Namespace) -> int:
    import json

    from runcache.client.interrupt import sigterm_interrupts
    from runcache.client.operations import save
    from runcache.client.progress import TransferProgress

    # SIGTERM (a cancelled CI job) takes Ctrl-C's path: the upload is cancelled on the server.
    with sigterm_interrupts(), client_of(args) as client, TransferProgress("save") as progress:
        result = save(
            client,
            paths=args.path,
            key=args.key,
            workspace=workspace_of(args),
            cross_os=args.enable_cross_os_archive,
            progress=progress,
        )
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    elif result.saved:
        print(f"Cache saved with key: {result.key} ({result.bytes / 1e6:.1f} MB in {result.seconds:.2f} s)")
    else:
        print(f"warning: {result.warning}", file=sys.stderr)
    if result.warning and args.strict:
        return EXIT_SERVICE
    return EXIT_OK


def cmd_hash_files(args: argparse.Namespace) -> int:
    from runcache.client.hashfiles import HashFilesError, hash_files

    try:
        digest = hash_files(args.patterns, args.workspace, follow_symbolic_links=args.follow_symbolic_links)
    except HashFilesError as exc:
        # Where the runner would fail the step instead of returning a value.
        print(f"runcache: hashFiles failed: {exc}", file=sys.stderr)
        return EXIT_MISS
    if not digest:
        # The runner returns '' too, but a key like `Linux-pip-` then matches every state: say it loudly.
        print(
            f"runcache: warning: no files match {' '.join(args.patterns)} (under {args.workspace or 'the workspace'});"
            " the hash is empty, so a key built from it never changes",
            file=sys.stderr,
        )
    print(digest)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add `restore`, `save` and `hash-files` to the `runcache` command line."""
    p = sub.add_parser("restore", help="restore a cache entry (actions/cache/restore semantics)")
    _client_flags(p)
    p.add_argument("--restore-key", action="append", help="ordered prefix fallbacks; repeat or give several lines")
    p.add_argument("--lookup-only", action="store_true", help="check for an entry without downloading it")
    p.add_argument("--fail-on-cache-miss", action="store_true", help="exit 1 when nothing was restored")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("save", help="save paths under a key (actions/cache/save semantics)")
    _client_flags(p)
    p.set_defaults(func=cmd_save)

    p = sub.add_parser("hash-files", help="the runner's hashFiles() of the given patterns")
    p.add_argument("patterns", nargs="+", help="glob patterns, as in hashFiles('**/requirements.txt')")
    p.add_argument("--follow-symbolic-links", action="store_true", help="as hashFiles('--follow-symbolic-links', ...)")
    p.add_argument("--workspace", type=Path, help="default $GITHUB_WORKSPACE or the current directory")
    p.set_defaults(func=cmd_hash_files)
