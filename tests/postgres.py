"""A real PostgreSQL server for the tests: the distribution's binaries, a throwaway data folder, loopback only.

Debian's `postgresql` package puts `initdb`, `pg_ctl` and `postgres` in /usr/lib/postgresql/<version>/bin (set
VL2V_PG_BIN to use others). PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user the
package creates, in a folder that user owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INSTALL = "install PostgreSQL (Debian: apt-get update && apt-get install -y postgresql) or set VL2V_PG_BIN"


def postgres_bin() -> Path | None:
    """The folder holding `initdb` and `pg_ctl`, or None when PostgreSQL's server is not installed."""
    if os.environ.get("VL2V_PG_BIN"):
        given = Path(os.environ["VL2V_PG_BIN"])
        return given if (given / "initdb").is_file() else None
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


@dataclass
class PostgresServer:
    port: int
    host: str = "127.0.0.1"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def postgres_server(port: int) -> Iterator[PostgresServer]:
    """initdb + pg_ctl start on 127.0.0.1:`port` with trust authentication; stopped and deleted afterwards."""
    binaries = postgres_bin()
    if binaries is None:
        raise RuntimeError(f"no PostgreSQL server binaries found: {INSTALL}")
    root = Path(tempfile.mkdtemp(prefix="vl2v-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    data, log = root / "data", root / "server.log"
    try:
        _run([*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"])
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200"
        _run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"])
        yield PostgresServer(port)
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
            )
        shutil.rmtree(root, ignore_errors=True)


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
