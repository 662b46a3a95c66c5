"""`runcache run` and `runcache demo`: the commands, their console and exit codes (2 usage, 3 cache
service, 130 cancelled). Their options and the runs themselves are the runner's: runner/launch.py
(``add_run_arguments``, ``run_from_args``) and runner/demo.py."""

from __future__ import annotations

import argparse
import json
import os
import sys

from runcache.runner.launch import Listed, ServiceFailed, UsageError, add_run_arguments, make_console, run_from_args

EXIT_USAGE, EXIT_SERVICE, EXIT_CANCELLED = 2, 3, 130


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `run` and `demo` to the `runcache` command line."""
    p = subparsers.add_parser(
        "run",
        help="run a workflow job locally, with its cache steps on a runcache server",
        description=(
            "Run a GitHub Actions workflow's job on this machine: run: steps with the runner's shells, file "
            "commands and expressions, and the built-in actions checkout, cache (restore/save), setup-python "
            "(cache: pip|pipenv|poetry) and astral-sh/setup-uv (enable-cache). "
            "The cache steps use the server given with --url or RUNCACHE_URL; without one an embedded server runs for "
            "the duration on a per-user data directory (~/.local/state/runcache), so the next run restores what "
            "this one saved. Each job gets a fresh Python virtual environment first on PATH (--host-python: the "
            "PATH as it is)."
        ),
    )
    add_run_arguments(p)
    p.set_defaults(func=cmd_run)

    from runcache.runner.demo import add_demo_arguments

    p = subparsers.add_parser(
        "demo",
        help="run the bundled example workflow three times: miss and save, exact hit, restore-key hit",
        description=(
            "A guided tour of the cache in a temporary copy of the bundled example project. With --python: the "
            "tutorial's pip-cache workflow and the same workflow with `runcache pip install`, three runs each, "
            "with the time of the dependency step in each run."
        ),
    )
    add_demo_arguments(p)
    p.set_defaults(func=cmd_demo)


def cmd_run(args: argparse.Namespace) -> int:
    from runcache.runner.console import ConsoleReporter

    console = make_console(to_stderr=args.json)
    reporter = ConsoleReporter(console, verbose=args.verbose, github_groups=os.environ.get("GITHUB_ACTIONS") == "true")
    from runcache.client.interrupt import sigterm_interrupts

    try:
        # A cancelled CI job sends SIGTERM: the same path as Ctrl-C (steps stopped, post steps and the
        # cache save's cancellation run, exit 130).
        with sigterm_interrupts():
            result = run_from_args(args, reporter)
    except UsageError as exc:
        print(f"runcache run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ServiceFailed as exc:
        print(f"runcache run: {exc}", file=sys.stderr)
        return EXIT_SERVICE
    except KeyboardInterrupt:
        print("runcache run: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    if result is None:
        return EXIT_USAGE
    if isinstance(result, Listed):
        return 0
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    return result.exit_code


def cmd_demo(args: argparse.Namespace) -> int:
    from runcache.runner.demo import Demo, PythonDemo

    python_only = [f for f, v in (("-r", args.requirements), ("--find-links", args.find_links),
                                  ("--index-url", args.index_url), ("--add", args.add)) if v]  # fmt: skip
    if python_only and not args.python:
        print(f"runcache demo: {', '.join(python_only)} only go with --python", file=sys.stderr)
        return EXIT_USAGE
    if args.index_url and (args.find_links or args.online):
        print("runcache demo: --index-url, --find-links and --online each choose the index: give one", file=sys.stderr)
        return EXIT_USAGE
    console = make_console(to_stderr=False)
    try:
        return (PythonDemo if args.python else Demo)(args, console).run()
    except KeyboardInterrupt:
        print("runcache demo: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
