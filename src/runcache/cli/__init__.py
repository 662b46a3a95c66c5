"""The `runcache` command line: argument parsing only; the work lives in the packages.

One module per command group, each adding its commands with `register`: `serve` (serve.py), `token`
(token.py), `restore`/`save`/`hash-files` (cache.py), `ls`/`rm`/`usage`/`limits` (management.py),
`run`/`demo` (run.py), `pip install`/`pip key` (python.py) and `db` (db.py).
"""

from __future__ import annotations

import argparse
import gc
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


class _VersionAction(argparse.Action):
    """`--version`, looked up only when asked: importlib.metadata costs more than parsing a command line."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        # On stdout, as argparse's own version action and every other CLI's --version (parser.exit's
        # message would go to stderr).
        print(f"runcache {_version()}")
        parser.exit()


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_OK


# Which module registers each command. A command imports only its own module: `runcache restore` must
# not pay for the server's, the runner's or the management table's imports (rich, the web stack), which
# would cost more than a small restore itself. A command missing here (or moved to another module) still
# works: build_parser then falls back to registering every module.
COMMAND_MODULES: dict[str, str] = {
    "serve": "serve",
    "token": "token",
    "restore": "cache",
    "save": "cache",
    "hash-files": "cache",
    "ls": "management",
    "list": "management",
    "rm": "management",
    "delete": "management",
    "usage": "management",
    "limits": "management",
    "run": "run",
    "demo": "run",
    "pip": "python",
    "db": "db",
}
_MODULE_ORDER = ("serve", "token", "cache", "management", "run", "python", "db")  # the order of `--help`


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with `command` only the module that registers it (the rest of the
    parser is never consulted once the command word is known)."""
    import importlib

    parser = argparse.ArgumentParser(prog="runcache", description="Self-hosted GitHub Actions dependency cache")
    parser.add_argument("--version", action=_VersionAction)
    parser.set_defaults(func=lambda _args: _print_help(parser))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    only = COMMAND_MODULES.get(command or "")
    for name in _MODULE_ORDER if only is None else (only,):
        importlib.import_module(f"runcache.cli.{name}").register(sub)
    if only is not None and command not in sub.choices:
        return build_parser()
    return parser


def main(argv: list[str] | None = None) -> int:
    code = _run(sys.argv[1:] if argv is None else list(argv))
    if argv is None:
        # This process is the command and ends now. Python's shutdown runs full garbage collections over
        # every object the imports made (httpx, the email and http modules, ...): 30-100 ms after the
        # last byte of a restore, longer than the restore of a small cache itself. Frozen objects are
        # skipped; memory goes back with the process, and everything holding a resource (the HTTP client,
        # files, tar, staging) was closed explicitly before this point. Not when called as a function
        # (tests, another program): freezing that caller's objects would keep its garbage forever.
        gc.freeze()
    return code


def _run(argv: list[str]) -> int:
    parser = build_parser(argv[0] if argv else None)
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
