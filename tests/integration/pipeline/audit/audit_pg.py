"""A throwaway PostgreSQL server for tests: initdb in a temporary directory, listening only on a
unix socket in that directory, stopped and removed afterwards.

Run as the ``postgres`` user via ``runuser`` when the tests run as root (PostgreSQL refuses to
run as root), as the current user otherwise. Never skipped: the install script provides
PostgreSQL, and a missing binary fails loudly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from ccpipe.pipeline.servers import free_port


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for version in sorted(Path("/usr/lib/postgresql").glob("*"), reverse=True):
        if (version / "bin" / name).exists():
            return str(version / "bin" / name)
    raise FileNotFoundError(f"{name} not found: run scripts/install-system-deps.sh (it installs postgresql)")


class ThrowawayPostgres:
    """One PostgreSQL cluster; :meth:`new_database` gives each test its own database."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ccpipe-pg-"))
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self.data = self.root / "data"

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._as, *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> ThrowawayPostgres:
        """initdb and start; raises ``subprocess.CalledProcessError`` with PostgreSQL's output."""
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        opts = f"-k {self.root} -p {self.port} -h '' -c fsync=off -c full_page_writes=off"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", opts, "-w", "start")
        return self

    def dsn(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL of ``database`` over the unix socket."""
        return f"postgresql://postgres@/{database}?host={self.root}&port={self.port}"

    def new_database(self) -> str:
        """Create an empty database; returns its URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.dsn(), autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def stop(self) -> None:
        """Stop the server and remove its files."""
        try:
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
