"""The `runcache` command line: argument parsing only; the work lives in the packages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runcache.config import Settings


def _server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help="data directory (env RUNCACHE_DATA_DIR, default ./.runcache)")


def cmd_serve(args: argparse.Namespace) -> int:
    from runcache.serve import serve

    settings = Settings.from_env(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        database_url=args.database_url,
        reservation_ttl=args.reservation_ttl,
        url_ttl=args.url_ttl,
        github_jwks_url=args.github_jwks_url,
        github_jwks_file=args.github_jwks_file,
        github_issuer=args.github_issuer,
        results_upstream=args.results_upstream,
    )
    serve(settings, log_level=args.log_level)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from runcache.auth.tokens import TokenIssuer
    from runcache.core.scopes import build_scopes

    settings = Settings.from_env(data_dir=args.data_dir)
    scopes = build_scopes(args.ref, default_branch=args.default_branch, base_ref=args.base_ref, mode=args.mode)
    token = TokenIssuer(settings.derived_key("tokens")).issue(repository=args.repo, scopes=scopes, ttl_seconds=args.ttl)
    print(token)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runcache", description="Self-hosted GitHub Actions dependency cache")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the cache server")
    _server_flags(p)
    p.add_argument("--host", help="listen address (env RUNCACHE_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port, 0 for any free port (env RUNCACHE_PORT, default 8080)")
    p.add_argument("--public-url", help="URL clients reach this server at, if not the listen address")
    p.add_argument("--database-url", help="SQLAlchemy URL for metadata (default: SQLite in the data directory)")
    p.add_argument("--reservation-ttl", type=int, help="seconds an unfinished upload keeps its key (default 3600)")
    p.add_argument("--url-ttl", type=int, help="seconds a signed blob URL stays valid (default 600)")
    p.add_argument("--github-jwks-url", help="also accept GitHub runtime tokens verified against this JWKS URL")
    p.add_argument("--github-jwks-file", help="also accept GitHub runtime tokens verified against this JWKS file")
    p.add_argument("--github-issuer", help="required issuer of GitHub runtime tokens")
    p.add_argument("--results-upstream", help="forward other /twirp/ services (artifacts) to this URL")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("token", help="issue a job token for the cache protocols")
    _server_flags(p)
    p.add_argument("--repo", required=True, help="OWNER/NAME")
    p.add_argument("--ref", required=True, help="the run's ref, e.g. refs/heads/feature or refs/pull/7/merge")
    p.add_argument("--default-branch", default="main", help="readable fallback scope (default main)")
    p.add_argument("--base-ref", help="PR base branch, readable after the run's own ref")
    p.add_argument(
        "--mode",
        default="write",
        choices=["read", "write", "write-only", "none"],
        help="cache-mode lattice (default write)",
    )
    p.add_argument("--ttl", type=int, default=6 * 3600, help="seconds the token stays valid (default 6 h)")
    p.set_defaults(func=cmd_token)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:
        print(f"runcache: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
