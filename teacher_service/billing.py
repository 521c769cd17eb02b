"""The vendor's books: keyed key hashes, balances, one ledger row per charged request, idempotency records.

Money is stored as integer nano-units of the price currency, so balances add up exactly. Everything lives in
one SQLite file (WAL, synchronous=FULL) that survives restarts; a charge, its ledger row and its idempotency
record are one transaction. Keys are stored as HMAC-SHA256 under a server secret kept beside the database (a
leaked database alone does not let anyone test guesses). The state folder is owner-only, and the store refuses to
charge once its file is gone or replaced (a deleted state folder, a volume mounted elsewhere).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import BillingUnavailable, IdempotencyConflict, IdempotencyMismatch, InsufficientQuota
from .settings import ApiKey, ConfigError, Settings

log = logging.getLogger("vl2v.teacher")

NANOS = 1_000_000_000
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    balance INTEGER NOT NULL,
    spent INTEGER NOT NULL DEFAULT 0,
    images INTEGER NOT NULL DEFAULT 0,
    texts INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    key_id INTEGER NOT NULL REFERENCES keys(id),
    idempotency_key TEXT,
    images INTEGER NOT NULL,
    texts INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    cost INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key_id INTEGER NOT NULL REFERENCES keys(id),
    idempotency_key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (key_id, idempotency_key)
);
"""


SECRET_FILE = "key-hash.secret"
BILLING_DB = "billing.sqlite3"


def to_nanos(amount: float) -> int:
    return round(amount * NANOS)


def hash_key(secret: str, server_secret: bytes) -> str:
    """HMAC-SHA256 of an API key under the server's secret: what the database stores and compares."""
    return hmac.new(server_secret, secret.encode(), hashlib.sha256).hexdigest()


class BillingMissing(ConfigError):
    """No billing database where one is expected, and creating a new one was not asked for."""


def prepare_state_dir(state_dir: Path) -> None:
    """Create the state folder owner-only (0700); tighten an existing one that others can enter."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if state_dir.stat().st_mode & 0o077:
            state_dir.chmod(0o700)
    except OSError as e:
        raise ConfigError(f"state folder {state_dir}: {e.strerror or e}") from None


def server_secret(state_dir: Path) -> bytes:
    """The key-hashing secret in `state_dir`, created (0600) on first use."""
    path = state_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_bytes()
        if len(value) < 32:
            raise ConfigError(f"{path} is damaged ({len(value)} bytes); delete it and restart") from None
        return value
    except OSError as e:
        raise ConfigError(f"cannot create {path}: {e.strerror or e}") from None
    value = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return value


@dataclass(frozen=True)
class Account:
    """An authenticated caller. `fingerprint` is a short hash safe to log; the key itself never is."""

    id: int
    name: str
    fingerprint: str


@dataclass(frozen=True)
class Charge:
    images: int
    texts: int
    tokens: int
    cost: int  # nanos


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class UsageTotals:
    balance: int
    spent: int
    images: int
    texts: int
    tokens: int
    requests: int


class BillingStore:
    """Thread-safe access to the billing database; one instance per service process.

    Args:
        path: the SQLite file, inside the service's state folder.
        create: make a new, empty database if `path` does not exist. Otherwise a missing file is refused: a
            state folder mounted in the wrong place must not hand every key its starting balance again.
        idempotency_ttl_s: how long a completed answer is kept for replay (Stripe keeps them 24 hours); after
            that, the same key starts a new, charged request.
    """

    def __init__(self, path: Path, *, create: bool = True, idempotency_ttl_s: float = 86_400.0) -> None:
        prepare_state_dir(path.parent)
        if not path.exists():
            if not create:
                raise BillingMissing(
                    f"no billing database at {path}, and keys are configured. If this is the vendor's first start, "
                    "pass --create-billing (VL2V_CREATE_BILLING=1) once; otherwise the state folder is not the one "
                    "that held the ledger (check the volume or --state-dir)"
                )
            log.warning("creating a new billing database at %s", path)
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as e:
                raise ConfigError(f"cannot create {path}: {e.strerror or e}") from None
        self.path = path
        self._secret = server_secret(path.parent)
        try:
            self._db = self._connect(path)
        except sqlite3.Error as e:
            raise ConfigError(f"cannot open the billing database {path}: {e}") from None
        self._identity = _identity(path)
        self._lock = threading.Lock()
        self._inflight: set[tuple[int, str]] = set()
        self._accounts: dict[str, Account] = {}
        self.idempotency_ttl_s = idempotency_ttl_s
        with self._lock:
            self._db.execute("DELETE FROM idempotency WHERE created_at < ?", (time.time() - idempotency_ttl_s,))

    def _connect(self, path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(_SCHEMA)
        found = db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
        if found is None:
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(found[0]) != SCHEMA_VERSION:
            raise ConfigError(f"{path}: billing schema v{found[0]}, this service needs v{SCHEMA_VERSION}")
        return db

    def check_present(self) -> None:
        """Raise `BillingUnavailable` (503) if the database file was deleted or replaced since it was opened."""
        if _identity(self.path) != self._identity:
            raise BillingUnavailable(
                "the billing database is gone or was replaced while the service ran; nothing can be charged "
                "until the service is restarted on the right state folder"
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def sync_keys(self, keys: list[ApiKey]) -> None:
        """Make the configured keys the active ones. A key seen before keeps its balance and history."""
        now = time.time()
        hashes = {key.name: hash_key(key.secret, self._secret) for key in keys}
        with self._lock, self._transaction():
            self._db.execute("UPDATE keys SET active = 0")
            for key in keys:
                self._db.execute(
                    "INSERT INTO keys (name, key_hash, balance, created_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET key_hash = excluded.key_hash, active = 1",
                    (key.name, hashes[key.name], to_nanos(key.balance), now),
                )
            rows = self._db.execute("SELECT id, name FROM keys WHERE active = 1").fetchall()
        # From this process's own hashes, not the table's: the table is a record, not the authority.
        self._accounts = {hashes[n]: Account(i, n, hashes[n][:8]) for i, n in rows}

    def authenticate(self, secret: str) -> Account | None:
        """The account whose key is `secret`, compared in constant time against every active key."""
        candidate = hash_key(secret, self._secret)
        match = None
        for key_hash, account in self._accounts.items():
            if hmac.compare_digest(candidate, key_hash):
                match = account
        return match

    def balance(self, account: Account) -> int:
        with self._lock:
            return self._db.execute("SELECT balance FROM keys WHERE id = ?", (account.id,)).fetchone()[0]

    def usage(self, account: Account) -> UsageTotals:
        with self._lock:
            row = self._db.execute(
                "SELECT balance, spent, images, texts, tokens, requests FROM keys WHERE id = ?", (account.id,)
            ).fetchone()
        return UsageTotals(*row)

    def ledger(self, account: Account | None = None) -> list[dict]:
        """Ledger rows, oldest first; all accounts' when `account` is None."""
        query = "SELECT l.*, k.name AS key_name FROM ledger l JOIN keys k ON k.id = l.key_id"
        args: tuple = ()
        if account is not None:
            query, args = query + " WHERE l.key_id = ?", (account.id,)
        with self._lock:
            cursor = self._db.execute(query + " ORDER BY l.id", args)
            names = [c[0] for c in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def claim(self, account: Account, idempotency_key: str, body_hash: str) -> StoredResponse | None:
        """Start a request under an idempotency key: the stored response if it already completed, else None.

        Raises:
            IdempotencyMismatch: the key was used with a different body.
            IdempotencyConflict: a request with this key is still in flight.
            BillingUnavailable: the database is gone.
        """
        self.check_present()
        with self._lock:
            row = self._db.execute(
                "SELECT body_hash, status, headers, body FROM idempotency "
                "WHERE key_id = ? AND idempotency_key = ? AND created_at >= ?",
                (account.id, idempotency_key, time.time() - self.idempotency_ttl_s),
            ).fetchone()
            if row is None:  # never used, or expired: an expired record makes way for the new request's
                self._db.execute(
                    "DELETE FROM idempotency WHERE key_id = ? AND idempotency_key = ?", (account.id, idempotency_key)
                )
            if row is None and (account.id, idempotency_key) in self._inflight:
                raise IdempotencyConflict(
                    "a request with this Idempotency-Key is still in progress; retry later",
                    param="Idempotency-Key",
                )
            if row is None:
                self._inflight.add((account.id, idempotency_key))
                return None
        if row[0] != body_hash:
            raise IdempotencyMismatch(
                "this Idempotency-Key was already used with a different request body", param="Idempotency-Key"
            )
        return StoredResponse(status=row[1], headers=json.loads(row[2]), body=row[3])

    def has_response(self, account: Account, idempotency_key: str) -> bool:
        """Whether a completed answer is stored under this key (a retry of it will be a free replay)."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM idempotency WHERE key_id = ? AND idempotency_key = ? AND created_at >= ?",
                (account.id, idempotency_key, time.time() - self.idempotency_ttl_s),
            ).fetchone()
        return row is not None

    def release(self, account: Account, idempotency_key: str) -> None:
        with self._lock:
            self._inflight.discard((account.id, idempotency_key))

    def charge(
        self,
        account: Account,
        request_id: str,
        charge: Charge,
        *,
        idempotency: tuple[str, str] | None = None,
        response: StoredResponse | None = None,
    ) -> int:
        """Debit `charge.cost`, write its ledger row and (with a key) the replayable response, atomically.

        Returns:
            The balance left, in nanos.

        Raises:
            InsufficientQuota: the balance does not cover the cost; nothing is written.
            BillingUnavailable: the database file is gone or replaced; nothing is written.
        """
        self.check_present()
        now = time.time()
        with self._lock, self._transaction():
            balance = self._db.execute("SELECT balance FROM keys WHERE id = ?", (account.id,)).fetchone()[0]
            if balance < charge.cost:
                raise InsufficientQuota(_quota_message(charge.cost, balance))
            self._db.execute(
                "UPDATE keys SET balance = balance - ?, spent = spent + ?, images = images + ?, "
                "texts = texts + ?, tokens = tokens + ?, requests = requests + 1 WHERE id = ?",
                (charge.cost, charge.cost, charge.images, charge.texts, charge.tokens, account.id),
            )
            self._db.execute(
                "INSERT INTO ledger (request_id, key_id, idempotency_key, images, texts, tokens, cost, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request_id,
                    account.id,
                    idempotency[0] if idempotency else None,
                    charge.images,
                    charge.texts,
                    charge.tokens,
                    charge.cost,
                    now,
                ),
            )
            if idempotency is not None and response is not None:
                self._db.execute(
                    "INSERT INTO idempotency VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        account.id,
                        idempotency[0],
                        idempotency[1],
                        response.status,
                        json.dumps(response.headers),
                        response.body,
                        now,
                    ),
                )
            return balance - charge.cost

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _quota_message(cost: int, balance: int) -> str:
    return f"insufficient balance: this request costs {cost / NANOS:.9g}, the balance is {balance / NANOS:.9g}"


def check_affordable(cost: int, balance: int) -> None:
    """Refuse before any work is done when the balance cannot cover the cost."""
    if balance < cost:
        raise InsufficientQuota(_quota_message(cost, balance))


def open_billing(settings: Settings) -> BillingStore:
    """The billing database with the configured keys active. A missing database is created only when no keys are
    configured or `create_billing` is set (the first start), and always with a log line saying so.

    Raises:
        ConfigError: a bad key entry, a state folder that cannot be written, or a missing database not to create.
    """
    keys = settings.load_api_keys()
    store = BillingStore(
        settings.state_dir / BILLING_DB,
        create=settings.create_billing or not keys,
        idempotency_ttl_s=settings.idempotency_ttl_s,
    )
    try:
        store.sync_keys(keys)
    except sqlite3.Error as e:
        store.close()
        raise ConfigError(f"cannot write the billing database {store.path}: {e}") from None
    return store
