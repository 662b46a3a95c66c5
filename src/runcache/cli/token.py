"""`runcache token`: job tokens for the cache protocols, and management tokens (`--admin`) for the REST
API, `runcache ls/rm/usage/limits` and the web page; both signed with a key derived from the server's
secret (`<data-dir>/secret`, or RUNCACHE_SECRET)."""

from __future__ import annotations

import argparse
import os

from runcache.cli import data_dir_flag
from runcache.config import Settings


def cmd_token(args: argparse.Namespace) -> int:
    from runcache.auth.tokens import TokenIssuer
    from runcache.core.scopes import build_scopes

    if args.admin or args.org or args.site:
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


def add_admin_token_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("management tokens (REST API, `runcache ls/rm/usage`, web page)")
    g.add_argument("--admin", action="store_true", help="issue a management token (for --repo, --org or --site)")
    g.add_argument("--org", help="with --admin: for every repository of this owner")
    g.add_argument("--site", action="store_true", help="with --admin: for every repository on this server")
    g.add_argument(
        "--permission",
        choices=["read", "write", "admin"],
        default="admin",
        help="read: list and usage; write: also delete; admin: also set limits (default admin)",
    )


def cmd_admin_token(args: argparse.Namespace) -> int:
    from runcache.auth.tokens import TokenIssuer

    chosen = [bool(args.repo), bool(args.org), bool(args.site)]
    if sum(chosen) != 1:
        raise ValueError("a management token needs exactly one of --repo OWNER/NAME, --org OWNER or --site")
    if args.ref or args.base_ref:
        raise ValueError("--ref and --base-ref belong to job tokens, not to management tokens")
    settings = Settings.from_env(data_dir=args.data_dir)
    token = TokenIssuer(settings.derived_key("tokens", create=False)).issue_admin(
        repository=args.repo.strip("/") if args.repo else None,
        org=args.org or None,
        site=bool(args.site),
        permission=args.permission,
        ttl_seconds=args.ttl or 30 * 86400,
        subject=f"admin:{os.environ.get('USER', 'cli')}",
    )
    print(token)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `token` to the `runcache` command line."""
    p = sub.add_parser("token", help="issue a job token for the cache protocols, or a management token (--admin)")
    data_dir_flag(p)
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
    add_admin_token_flags(p)
    p.set_defaults(func=cmd_token)
