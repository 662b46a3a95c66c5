"""The `runcache` command line: argument parsing only; the work lives in the packages.

One module per command group, each adding its commands with `register`: `serve` (serve.py), `token`
(token.py), `restore`/`save`/`hash-files` (cache.py), `ls`/`rm`/`usage`/`limits` (management.py),
`run`/`demo` (run.py), `pip install`/`pip key` (python.py) and `db` (db.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_MISS, EXIT_USAGE, EXIT_SERVICE, EXIT_UNWRITABLE = 0, 1, 2, 3, 4
# Commands that hand what follows `--` to another program (`runcache pip install -r r.txt -- --no-binary :all:`):
# argparse would mix those words with the command's own positionals, so they are cut off before parsing.
PASSTHROUGH_COMMANDS = ("pip",)


def data_dir_flag(p: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    from runcache.cli import cache, db, management, python, run, serve, token

    parser = argparse.ArgumentParser(prog="runcache", description="Self-hosted GitHub Actions dependency cache")
    parser.add_argument("--version", action="version", version=f"runcache {_version()}")
    parser.set_defaults(func=lambda _args: _print_help(parser))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve.register(sub)
    token.register(sub)
    cache.register(sub)
    management.register(sub)
    run.register(sub)
    python.register(sub)
    db.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    passthrough: list[str] = []
    if argv[:1] and argv[0] in PASSTHROUGH_COMMANDS and "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    args.passthrough = passthrough
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
