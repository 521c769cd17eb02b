"""Where the books are kept: an SQLite file (the embedded default) or a PostgreSQL database (replicas sharing one
ledger), behind one small interface, so the billing logic is written once.

SQL is written with `?` placeholders and SQLite's type names; the PostgreSQL adapter translates both. Work of
several statements runs inside `transaction()`: SQLite's is `BEGIN IMMEDIATE` (one writer at a time, across
processes), PostgreSQL's is READ COMMITTED with the row locks the statements take (`FOR UPDATE`, conditional
updates), so concurrent replicas never both spend the same balance. A single statement, atomic by itself, runs
through `execute()` without a transaction around it: no BEGIN and COMMIT to wait for, and no write lock for a read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from common.errors import ConfigError

from . import database_url
from .errors import BillingUnavailable

log = logging.getLogger("vl2v.teacher")


class Cursor(Protocol):
    def execute(self, sql: str, args: tuple = ()) -> list[tuple]: ...

    @property
    def rowcount(self) -> int: ...


class Database(Protocol):
    """What the billing needs of a database."""

    for_update: str  # the row-locking suffix of a SELECT that is about to be updated ("" where locks are coarser)
    shared: bool  # whether other processes (replicas) write to it too
    clock: str  # SQL for the time `now` reads, for a statement that stamps its own rows

    def transaction(
        self, *, exclusive: bool = False, durable: bool = True
    ) -> contextlib.AbstractContextManager[Cursor]:
        """A transaction; `exclusive` ones run one at a time across every process (schema and key changes). One
        that is not `durable` may be acknowledged before it is on disk: a crash of the database server can lose
        its last such commits, never a durable one (for state that may be lost, like rate-limit buckets)."""
        ...

    def execute(self, sql: str, args: tuple = ()) -> list[tuple]:
        """One statement on its own: a read sees the last committed state, a write is committed when it returns."""
        ...

    def now(self, cursor: Cursor) -> float:
        """The time, in seconds since the epoch, from the clock every replica shares."""
        ...

    def create_schema(self, ddl: str) -> None: ...

    def check_present(self) -> None: ...

    def scrub(self, text: str) -> str:
        """`text` (a driver's error) without any secret of the connection: safe to log or show."""
        ...

    def close(self) -> None: ...


class _SqliteCursor:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db, self.rowcount = db, 0

    def execute(self, sql: str, args: tuple = ()) -> list[tuple]:
        cursor = self._db.execute(sql, args)
        self.rowcount = cursor.rowcount
        return cursor.fetchall()


class SqliteDatabase:
    """One SQLite file (WAL, synchronous=FULL), owner-only, that notices being deleted or replaced under it."""

    for_update = ""  # BEGIN IMMEDIATE already holds the only write lock
    shared = False
    clock = "((julianday('now') - 2440587.5) * 86400.0)"  # the system clock, as time.time() reads it

    def __init__(self, path: Path, *, create: bool) -> None:
        if not path.exists():
            if not create:
                raise BillingMissing(path)
            log.warning("creating a new billing database at %s", path)
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as e:
                raise ConfigError(f"cannot create {path}: {e.strerror or e}") from None
        self.path = path
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            raise ConfigError(f"cannot open the billing database {path}: {e}") from None
        self._identity = _identity(path)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def transaction(self, *, exclusive: bool = False, durable: bool = True) -> Iterator[_SqliteCursor]:
        with self._lock:
            self.check_present()  # never write into a file that is no longer the ledger
            self._db.execute("BEGIN IMMEDIATE")  # the one write lock, across processes: always exclusive
            try:
                yield _SqliteCursor(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def execute(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            self.check_present()
            return self._db.execute(sql, args).fetchall()  # autocommit (isolation_level=None)

    def now(self, cursor: Cursor) -> float:
        return time.time()

    def create_schema(self, ddl: str) -> None:
        with self._lock:
            self._db.executescript(ddl)

    def check_present(self) -> None:
        """Raise `BillingUnavailable` (503) if the file was deleted or replaced since it was opened."""
        if _identity(self.path) != self._identity:
            raise BillingUnavailable(
                "the billing database is gone or was replaced while the service ran; nothing can be charged "
                "until the service is restarted on the right state folder"
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def scrub(self, text: str) -> str:
        return text  # a file path holds no secret

    def __str__(self) -> str:
        return str(self.path)


class _PostgresCursor:
    def __init__(self, cursor) -> None:
        self._cursor = cursor

    def execute(self, sql: str, args: tuple = ()) -> list[tuple]:
        self._cursor.execute(_postgres_sql(sql), args)
        return self._cursor.fetchall() if self._cursor.description else []

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class PostgresDatabase:
    """A PostgreSQL database (psycopg 3), shared by every replica of the vendor."""

    for_update = " FOR UPDATE"
    shared = True
    clock = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
    _EXCLUSIVE = 0x766C3276  # the advisory lock that serialises schema and key changes across replicas

    def __init__(self, url: str, *, create: bool) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                "a postgresql:// billing database needs psycopg 3: pip install 'psycopg[binary]'"
            ) from None
        self._psycopg = psycopg
        self.url = url
        self._lock = threading.Lock()
        if database_url.parts(url) is None:  # the driver's own message would quote pieces of the string
            raise ConfigError(f"cannot use the billing database: {database_url.describe(url)}")
        try:
            self._db = self._connect()
            with self.transaction() as cursor:
                exists = cursor.execute("SELECT to_regclass('keys') IS NOT NULL")[0][0]
        except (psycopg.Error, BillingUnavailable) as e:
            raise ConfigError(f"cannot connect to the billing database {self}: {self.scrub(_first_line(e))}") from None
        if not exists and not create:
            self.close()
            raise BillingMissing(self)
        if not exists:
            log.warning("creating the billing tables in %s", self)

    def _connect(self):
        # Autocommit: a statement on its own commits by itself; transaction() sends BEGIN and COMMIT around its block.
        return self._psycopg.connect(database_url.normalized(self.url), autocommit=True, connect_timeout=10)

    def scrub(self, text: str) -> str:
        """`text` without the connection string's password, in any form."""
        return database_url.scrub(text, self.url)

    @contextlib.contextmanager
    def _cursor(self) -> Iterator:
        """This process's connection, reopened if the server restarted or the network dropped it, held alone."""
        with self._lock:
            try:
                if self._db.closed or self._db.broken:
                    self._db = self._connect()
                with self._db.cursor() as cursor:
                    yield cursor
            except self._psycopg.OperationalError as e:
                raise BillingUnavailable(
                    f"the billing database cannot be reached: {self.scrub(_first_line(e))}"
                ) from None

    @contextlib.contextmanager
    def transaction(self, *, exclusive: bool = False, durable: bool = True) -> Iterator[_PostgresCursor]:
        with self._cursor() as cursor, cursor.connection.transaction():
            if exclusive:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self._EXCLUSIVE,))
            if not durable:  # the commit does not wait for the WAL flush
                cursor.execute("SET LOCAL synchronous_commit = off")
            yield _PostgresCursor(cursor)

    def execute(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._cursor() as cursor:
            return _PostgresCursor(cursor).execute(sql, args)

    def now(self, cursor: Cursor) -> float:
        return float(cursor.execute(f"SELECT {self.clock}")[0][0])

    def create_schema(self, ddl: str) -> None:
        with self.transaction(exclusive=True) as cursor:
            for statement in filter(str.strip, postgres_ddl(ddl).split(";")):
                cursor.execute(statement)

    def check_present(self) -> None:
        """The database answers (a dropped connection or database is a 503, not a charge into nowhere)."""
        self.execute("SELECT 1")

    def close(self) -> None:
        self._db.close()

    def __str__(self) -> str:
        return database_url.describe(self.url)


class BillingMissing(ConfigError):
    """No billing database where one is expected, and creating one was not asked for."""

    def __init__(self, where: object) -> None:
        super().__init__(
            f"no billing database at {where}, and keys are configured. If this is the vendor's first start, pass "
            "--create-billing (VL2V_CREATE_BILLING=1) once; otherwise the state folder is not the one that held the "
            "ledger (check the volume or --state-dir)"
        )


def connect(url: str | None, sqlite_path: Path, *, create: bool) -> Database:
    """The database `url` names (postgresql://...), or the SQLite file at `sqlite_path` when it names none."""
    if not url:
        return SqliteDatabase(sqlite_path, create=create)
    if url.startswith("sqlite:///"):
        return SqliteDatabase(Path(url[len("sqlite:///") :]), create=create)
    if database_url.is_postgres(url):
        return PostgresDatabase(url, create=create)
    raise ConfigError(
        "the database URL is not one vl2v reads (not shown: it may hold a password): expected postgresql://..., "
        "libpq's keyword=value pairs, or sqlite:///PATH"
    )


_TYPES = [(r"\bINTEGER PRIMARY KEY\b", "BIGSERIAL PRIMARY KEY"), (r"\bINTEGER\b", "BIGINT"),
          (r"\bREAL\b", "DOUBLE PRECISION"), (r"\bBLOB\b", "BYTEA")]  # fmt: skip


def postgres_ddl(sql: str) -> str:
    """SQLite's column types, as PostgreSQL names them (64-bit integers: balances are nano-units)."""
    for pattern, replacement in _TYPES:
        sql = re.sub(pattern, replacement, sql)
    return sql


def _postgres_sql(sql: str) -> str:
    return sql.replace("?", "%s")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
