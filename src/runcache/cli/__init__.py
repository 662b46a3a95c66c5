"""The `runcache` command line: argument parsing only; the work lives in the packages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runcache.config import Settings


def _server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help="data directory (env RUNCACHE_DATA_DIR, default ./.runcache)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runcache")
    except PackageNotFoundError:
        return "unknown"


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from runcache.server.serve import serve

    settings = Settings.from_env(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        database_url=args.database_url,
        blobs=args.blobs,
        reservation_ttl=args.reservation_ttl,
        upload_idle_timeout=args.upload_idle_timeout,
        url_ttl=args.url_ttl,
        github_jwks_url=args.github_jwks_url,
        github_jwks_file=args.github_jwks_file,
        github_issuer=args.github_issuer,
        results_upstream=args.results_upstream,
        storage_limit_gb=args.storage_limit_gb,
        retention_days=args.retention_days,
        max_entry_size_mb=args.max_entry_size_mb,
        min_free_mb=args.min_free_mb,
    )
    serve(settings, log_level=args.log_level)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from runcache.auth.tokens import TokenIssuer
    from runcache.core.scopes import build_scopes

    if args.admin or args.org or args.site:
        from runcache.cli.management import cmd_admin_token

        return cmd_admin_token(args)
    if not args.repo or not args.ref:
        raise ValueError("a job token needs --repo and --ref (or use --admin for a management token)")
    settings = Settings.from_env(data_dir=args.data_dir)
    scopes = build_scopes(args.ref, default_branch=args.default_branch, base_ref=args.base_ref, mode=args.mode)
    token = TokenIssuer(settings.derived_key("tokens", create=False)).issue(
        repository=args.repo, scopes=scopes, ttl_seconds=args.ttl or 6 * 3600
    )
    print(token)
    return 0


EXIT_OK, EXIT_MISS, EXIT_USAGE, EXIT_SERVICE, EXIT_UNWRITABLE = 0, 1, 2, 3, 4


def _client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--path",
        action="append",
        required=True,
        help="path, glob or !exclusion; repeat or give several lines (as the action's `path` input)",
    )
    p.add_argument("-k", "--key", required=True, help="the cache key")
    p.add_argument("--enable-cross-os-archive", action="store_true", help="as the action's enableCrossOsArchive")
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


def _workspace(args: argparse.Namespace) -> Path:
    import os

    return (args.workspace or Path(os.environ.get("GITHUB_WORKSPACE") or os.getcwd())).resolve()


def _client(args: argparse.Namespace):
    import os

    from runcache.client.config import resolve_endpoint
    from runcache.client.transfer import CacheClient

    ep = resolve_endpoint(os.environ, url=args.url, token=args.token, protocol=args.protocol)
    return CacheClient(ep.url, ep.token, ep.protocol)


def _write_outputs(outputs: dict[str, str]) -> None:
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
    with sigterm_interrupts(), _client(args) as client, TransferProgress("restore") as progress:
        result = restore(
            client,
            paths=args.path,
            key=args.key,
            restore_keys=restore_keys,
            workspace=_workspace(args),
            lookup_only=args.lookup_only,
            cross_os=args.enable_cross_os_archive,
            progress=progress,
        )
    _write_outputs(result.outputs())
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
    with sigterm_interrupts(), _client(args) as client, TransferProgress("save") as progress:
        result = save(
            client,
            paths=args.path,
            key=args.key,
            workspace=_workspace(args),
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runcache", description="Self-hosted GitHub Actions dependency cache")
    parser.add_argument("--version", action="version", version=f"runcache {_version()}")
    parser.set_defaults(func=lambda _args: _print_help(parser))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="run the cache server")
    _server_flags(p)
    p.add_argument("--host", help="listen address (env RUNCACHE_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port, 0 for any free port (env RUNCACHE_PORT, default 8080)")
    p.add_argument(
        "--public-url", help="URL clients reach this server at, if not the listen address (env RUNCACHE_PUBLIC_URL)"
    )
    p.add_argument(
        "--database-url",
        help="SQLAlchemy URL for metadata (env RUNCACHE_DATABASE_URL; default: SQLite in the data directory)",
    )
    p.add_argument(
        "--blobs",
        help="where finished archives live: s3://BUCKET/PREFIX (endpoint and credentials from AWS_* variables) "
        "or a directory (env RUNCACHE_BLOBS; default: blobs/ in the data directory)",
    )
    p.add_argument(
        "--reservation-ttl",
        type=int,
        help="seconds an unfinished upload keeps its key (env RUNCACHE_RESERVATION_TTL, default 3600)",
    )
    p.add_argument(
        "--upload-idle-timeout",
        type=int,
        help="seconds an upload may receive no bytes before it expires and frees its key; 0: only "
        "--reservation-ttl (env RUNCACHE_UPLOAD_IDLE_TIMEOUT, default 300)",
    )
    p.add_argument(
        "--url-ttl", type=int, help="seconds a signed blob URL stays valid (env RUNCACHE_URL_TTL, default 600)"
    )
    p.add_argument(
        "--github-jwks-url",
        help="also accept GitHub runtime tokens verified against this JWKS URL (env RUNCACHE_GITHUB_JWKS_URL)",
    )
    p.add_argument(
        "--github-jwks-file",
        help="also accept GitHub runtime tokens verified against this JWKS file (env RUNCACHE_GITHUB_JWKS_FILE)",
    )
    p.add_argument(
        "--github-issuer",
        help="issuer GitHub runtime tokens must carry; required with a JWKS (env RUNCACHE_GITHUB_ISSUER)",
    )
    p.add_argument(
        "--results-upstream",
        help="forward other /twirp/ services (artifacts) to this URL (env RUNCACHE_RESULTS_UPSTREAM)",
    )
    p.add_argument(
        "--storage-limit-gb",
        type=int,
        help="default cache size limit per repository (env RUNCACHE_STORAGE_LIMIT_GB, default 10)",
    )
    p.add_argument(
        "--retention-days",
        type=int,
        help="default days caches are kept after last use (env RUNCACHE_RETENTION_DAYS, default 7)",
    )
    p.add_argument(
        "--max-entry-size-mb", type=int, help="largest cache entry accepted (env RUNCACHE_MAX_ENTRY_SIZE_MB, 10240)"
    )
    p.add_argument(
        "--min-free-mb",
        type=int,
        help="free space saves must leave on the data volume, at most 10%% of it (env RUNCACHE_MIN_FREE_MB, 1024)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="server log detail on stderr (default info: one access line per request, saves, evictions)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("token", help="issue a job token for the cache protocols, or a management token (--admin)")
    _server_flags(p)
    p.add_argument("-R", "--repo", help="OWNER/NAME")
    p.add_argument("-r", "--ref", help="the run's ref, e.g. refs/heads/feature or refs/pull/7/merge")
    p.add_argument("--default-branch", default="main", help="readable fallback scope (default main)")
    p.add_argument("--base-ref", help="PR base branch, readable after the run's own ref")
    p.add_argument(
        "--mode",
        default="write",
        choices=["read", "write", "write-only", "none"],
        help="cache-mode lattice (default write)",
    )
    p.add_argument("--ttl", type=int, help="seconds the token stays valid (default 6 h; management tokens 30 days)")
    from runcache.cli.management import add_admin_token_flags

    add_admin_token_flags(p)
    p.set_defaults(func=cmd_token)

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

    from runcache.cli.management import register

    register(sub)
    from runcache.runner.cli import register as register_runner

    register_runner(sub)
    from runcache.cli.db import register as register_db

    register_db(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from runcache.client.config import ConfigError
    from runcache.client.interrupt import EXIT_INTERRUPTED, interrupted_line
    from runcache.core.errors import InvalidRequest
    from runcache.store.lock import DataDirInUse

    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, ConfigError, InvalidRequest, DataDirInUse) as exc:
        print(f"runcache: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        # One line saying what was undone, not a traceback through the upload threads.
        print(interrupted_line(exc), file=sys.stderr)
        return EXIT_INTERRUPTED
