"""`runcache pip install` and `runcache pip key`: a Python environment at restore speed.

Inputs, outputs and exit codes are docs/cli.md's ("Python environments"); the work is runcache.client.pyenv's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runcache.cli import EXIT_MISS, EXIT_OK, EXIT_SERVICE, EXIT_UNWRITABLE, EXIT_USAGE
from runcache.cli.cache import client_of, connection_flags, workspace_of, write_outputs


def _input_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="*", metavar="REQUIREMENT", help="requirement specifiers (flask==3.1.2)")
    p.add_argument(
        "-r", "--requirement", dest="requirements", action="append", default=[], metavar="FILE",
        help="a requirements file; repeat for several ( -r / -c lines inside are followed)",
    )  # fmt: skip
    p.add_argument(
        "-c", "--constraint", dest="constraints", action="append", default=[], metavar="FILE",
        help="a constraints file; repeat for several",
    )  # fmt: skip
    p.add_argument("--venv", type=Path, default=Path(".venv"), help="the virtual environment (default .venv)")
    p.add_argument("--python", help="the interpreter to build it with (default: python3 on PATH)")
    p.add_argument("--installer", choices=["auto", "pip", "uv"], default="auto", help="auto: uv when on PATH, else pip")


def _options(args: argparse.Namespace, probe=None):
    from runcache.client.pyenv import PipInstallOptions

    return PipInstallOptions(
        probe=probe,
        venv=args.venv,
        requirements=args.requirements,
        constraints=args.constraints,
        specs=args.specs,
        installer_args=list(getattr(args, "passthrough", [])),
        python=args.python,
        installer=args.installer,
        workspace=workspace_of(args),
        save=not getattr(args, "no_save", False),
        installer_cache=not getattr(args, "no_installer_cache", False),
    )


def cmd_key(args: argparse.Namespace) -> int:
    import json

    from runcache.client.pyenv import plan
    from runcache.client.pyenv.probe import InstallerError

    try:
        p = plan(_options(args))
    except InstallerError as exc:
        print(f"runcache: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    info = {
        "key": p.keys.key,
        "restore_keys": p.keys.restore_keys,
        "cache_key": p.keys.cache_key,
        "cache_restore_keys": p.keys.cache_restore_keys,
        "venv_path": p.venv_path,
        "installer": p.installer.name,
        "installer_version": p.installer.version,
        "python": p.interpreter.real_executable,
        "inputs": p.inputs,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for name, value in info.items():
            print(f"{name}={','.join(value) if isinstance(value, list) else value}")
    return EXIT_OK


def _describe(result) -> str:
    seconds = f"{result.seconds:.2f} s"
    moved = f", moved from {result.relocated_from}" if result.relocated_from else ""
    if result.outcome == "local":
        return f"Environment {result.venv} is already at key {result.key}{moved} ({seconds}, no installer run)"
    if result.outcome == "hit":
        return f"Environment restored from key: {result.key}{moved} ({seconds}, no installer run)"
    delta = f"{len(result.added)} added, {len(result.removed)} removed, {len(result.changed)} changed"
    if result.outcome == "restored":
        return f"Environment restored from key: {result.matched_key}{moved} and synced: {delta} ({seconds})"
    return f"Environment built with {result.installer} {result.installer_version}: {delta} ({seconds})"


def cmd_install(args: argparse.Namespace) -> int:
    from runcache.client.pyenv.probe import InstallerError, Probe, find_python

    try:
        # Started before the cache client's imports and connection: the probe's interpreter runs beside them.
        probe = Probe(find_python(args.python))
    except InstallerError as exc:
        print(f"runcache: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _install(args, probe)
    finally:
        probe.close()


def _install(args: argparse.Namespace, probe) -> int:
    import json

    from runcache.client.interrupt import sigterm_interrupts
    from runcache.client.progress import TransferProgress
    from runcache.client.pyenv import install
    from runcache.client.pyenv.probe import InstallerError
    from runcache.client.pyenv.sync import InstallerFailed, SyncError
    from runcache.client.pyenv.venv import EnvironmentRefused

    try:
        with sigterm_interrupts(), client_of(args) as client:
            result = install(client, _options(args, probe), progress=TransferProgress)
    except InstallerError as exc:
        print(f"runcache: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (InstallerFailed, SyncError, EnvironmentRefused) as exc:
        print(f"runcache: error: {exc}; the environment at {args.venv} is not ready", file=sys.stderr)
        return EXIT_MISS
    write_outputs(result.outputs())
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if result.refused:
            print(f"warning: {result.refused}", file=sys.stderr)
        if not result.unwritable:
            print(_describe(result))
        if result.saved:
            print(f"Environment saved with key: {result.key}")
        if result.cache_saved:
            print(f"Installer cache saved with key: {result.cache_key}")
        for name, value in result.outputs().items():
            print(f"{name}={value}")
    if result.unwritable:
        return EXIT_UNWRITABLE
    if result.warnings and args.strict:
        return EXIT_SERVICE
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add `pip install` and `pip key` to the `runcache` command line."""
    pip = sub.add_parser("pip", help="Python environments restored whole from the cache (pip or uv)")
    pip.set_defaults(func=lambda _args: (pip.print_help(), EXIT_USAGE)[1])
    commands = pip.add_subparsers(dest="pip_command", metavar="COMMAND")

    p = commands.add_parser(
        "install",
        help="restore the environment for these requirements, or build, sync and save it",
        description="Arguments after `--` go to the installer (pip install, or uv pip compile and uv pip sync).",
    )
    _input_flags(p)
    p.add_argument("--no-save", action="store_true", help="restore and sync, but save nothing")
    p.add_argument("--no-installer-cache", action="store_true", help="neither restore nor save pip's or uv's own cache")
    connection_flags(p)
    p.set_defaults(func=cmd_install)

    p = commands.add_parser("key", help="print the key, restore keys and inputs `pip install` would use")
    _input_flags(p)
    p.add_argument("--workspace", type=Path, help="default $GITHUB_WORKSPACE or the current directory")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(func=cmd_key)
