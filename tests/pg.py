"""A throwaway PostgreSQL cluster for tests, run with Debian's server binaries (`scripts/setup --dev`).

No PostgreSQL on the machine is a failure, never a skip: the metadata contract holds on both engines or
the suite says how to install what is missing. initdb refuses to run as root, so as root the cluster
runs as Debian's `postgres` system user (created by the package) in a directory it owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

SETUP_HINT = "PostgreSQL server binaries are missing (/usr/lib/postgresql/*/bin/initdb): run `scripts/setup --dev`"


class PostgresMissing(RuntimeError):
    pass


def bin_dir() -> Path:
    """The newest Debian PostgreSQL server's bin directory."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        raise PostgresMissing(SETUP_HINT)

    def major(path: str) -> int:
        m = re.search(r"/postgresql/(\d+)/", path)
        return int(m.group(1)) if m else 0

    return Path(max(found, key=major)).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """initdb + pg_ctl start on a free loopback port; `stop` removes everything."""

    def __init__(self) -> None:
        self.bin = bin_dir()
        self.base = Path(tempfile.mkdtemp(prefix="runcache-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresMissing(f"no `postgres` system user to run the test cluster as; {SETUP_HINT}") from None
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}): {result.stdout}{result.stderr}")

    def start(self) -> Cluster:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        # Throwaway data: durability off makes per-test databases cheap on a busy 2-core machine.
        opts = (
            f"-k {self.base} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"), "-w", "-o", opts, "start"
        )
        return self

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres", *, scheme: str = "postgresql+psycopg") -> str:
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(sql)

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        # FORCE: a test that failed may leave connections open (PostgreSQL 13+).
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
