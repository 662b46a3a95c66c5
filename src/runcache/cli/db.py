"""`runcache db …`: the metadata database's schema, for operators who migrate before (re)starting servers."""

from __future__ import annotations

import argparse

from runcache.cli import data_dir_flag


def _database(args: argparse.Namespace, *, create: bool = False) -> str:
    from runcache.config import Settings

    settings = Settings.from_env(data_dir=args.data_dir, database_url=args.database_url)
    if create and not settings.database_url:  # the embedded SQLite file: its directory as the server makes it
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return settings.database


def _flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url",
        help="SQLAlchemy URL of the metadata database (env RUNCACHE_DATABASE_URL; default: SQLite in the data dir)",
    )
    data_dir_flag(p)


def cmd_upgrade(args: argparse.Namespace) -> int:
    from runcache.store import migrations
    from runcache.store.metadata import open_engine, unreachable_as_error

    engine = open_engine(_database(args, create=True))
    try:
        with unreachable_as_error(engine), migrations.locked(engine) as conn:
            before = migrations.upgrade(conn)
            after = migrations.current(conn)
    finally:
        engine.dispose()
    if before == after:
        print(f"metadata schema already at {after} (head)")
    else:
        print(f"metadata schema upgraded from {before or 'nothing'} to {after}")
    return 0


def cmd_current(args: argparse.Namespace) -> int:
    from runcache.store import migrations
    from runcache.store.metadata import open_engine, unreachable_as_error

    engine = open_engine(_database(args))
    try:
        with unreachable_as_error(engine), engine.connect() as conn:
            have = migrations.current(conn)
            legacy = have is None and migrations.is_legacy(conn)
    finally:
        engine.dispose()
    want = migrations.head()
    state = "pre-migration schema" if legacy else (have or "empty")
    print(f"{state} (head {want}){'' if have == want else ': run `runcache db upgrade`'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `db upgrade` and `db current` to the `runcache` command line."""
    db = sub.add_parser("db", help="the metadata database's schema (migrations)")
    db.set_defaults(func=lambda _args: db.print_help() or 0)
    dsub = db.add_subparsers(dest="db_command", metavar="COMMAND")
    p = dsub.add_parser(
        "upgrade",
        help="migrate the schema to this version's head (adopts databases made before migrations); "
        "safe while servers run and with several at once",
    )
    _flags(p)
    p.set_defaults(func=cmd_upgrade)
    p = dsub.add_parser("current", help="print the schema revision of the database and the one runcache needs")
    _flags(p)
    p.set_defaults(func=cmd_current)
