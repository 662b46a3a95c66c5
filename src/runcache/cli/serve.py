"""`runcache serve`: the server's flags (each also an environment variable, see config.py); binding,
announcing the URL and serving are server/serve.py's."""

from __future__ import annotations

import argparse

from runcache.cli import data_dir_flag
from runcache.config import DOWNLOAD_MODES, TRANSFER_MODES, Settings


def cmd_serve(args: argparse.Namespace) -> int:
    from runcache.server.serve import serve

    settings = Settings.from_env(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        database_url=args.database_url,
        blobs=args.blobs,
        uploads=args.uploads,
        reservation_ttl=args.reservation_ttl,
        upload_idle_timeout=args.upload_idle_timeout,
        url_ttl=args.url_ttl,
        downloads=args.downloads,
        transfers=args.transfers,
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add `serve` to the `runcache` command line."""
    p = sub.add_parser("serve", help="run the cache server")
    data_dir_flag(p)
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
        help="where finished archives live: s3://BUCKET/PREFIX (endpoint and credentials from AWS_* variables), "
        "azure://CONTAINER/PREFIX (account from AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT + "
        "AZURE_STORAGE_KEY) or a directory (env RUNCACHE_BLOBS; default: blobs/ in the data directory)",
    )
    p.add_argument(
        "--uploads",
        choices=["auto", "local"],
        help="where uploads in flight live: auto = beside s3:// or azure:// blobs (any replica takes any "
        "chunk), else the data directory; local = always the data directory (env RUNCACHE_UPLOADS, default auto)",
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
        "--downloads",
        choices=list(DOWNLOAD_MODES),
        help="how restores fetch archives: proxy = streamed by this server from its blob store; direct = a "
        "presigned (S3) or read-only SAS (Azure) URL straight to the object store (s3:// or azure:// blobs; "
        "runners must reach it, see RUNCACHE_S3_PUBLIC_ENDPOINT / RUNCACHE_AZURE_PUBLIC_ENDPOINT) "
        "(env RUNCACHE_DOWNLOADS, default proxy)",
    )
    p.add_argument(
        "--transfers",
        choices=list(TRANSFER_MODES),
        help="direct = archives go between runners and the storage both ways, as on GitHub: v2 saves write to a "
        "short-lived write-only SAS URL, restores read from a read-only one (azure:// blobs only; implies "
        "--downloads direct; unfinished uploads then expire by --reservation-ttl only); proxy = as --downloads "
        "says (env RUNCACHE_TRANSFERS, default proxy)",
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
