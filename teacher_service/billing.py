"""The vendor's books: hashed keys, balances, one ledger row per charged request, idempotency records.

Money is stored as integer nano-units of the price currency, so balances add up exactly. Everything lives in
one SQLite file (WAL, synchronous=FULL) that survives restarts; a charge, its ledger row and its idempotency
record are one transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import IdempotencyConflict, IdempotencyMismatch, InsufficientQuota
from .settings import ApiKey

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


def to_nanos(amount: float) -> int:
    return round(amount * NANOS)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


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
    """Thread-safe access to the billing database; one instance per service process."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._lock = threading.Lock()
        self._inflight: set[tuple[int, str]] = set()
        with self._lock:
            self._db.executescript(_SCHEMA)
            found = self._db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
            if found is None:
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(found[0]) != SCHEMA_VERSION:
                raise RuntimeError(f"{path}: billing schema v{found[0]}, this service needs v{SCHEMA_VERSION}")
        self._accounts: dict[str, Account] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def sync_keys(self, keys: list[ApiKey]) -> None:
        """Make the configured keys the active ones. A key seen before keeps its balance and history."""
        now = time.time()
        with self._lock, self._transaction():
            self._db.execute("UPDATE keys SET active = 0")
            for key in keys:
                self._db.execute(
                    "INSERT INTO keys (name, key_hash, balance, created_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET key_hash = excluded.key_hash, active = 1",
                    (key.name, hash_key(key.secret), to_nanos(key.balance), now),
                )
            rows = self._db.execute("SELECT id, name, key_hash FROM keys WHERE active = 1").fetchall()
        self._accounts = {h: Account(i, n, h[:8]) for i, n, h in rows}

    def authenticate(self, secret: str) -> Account | None:
        """The account whose key is `secret`, compared in constant time against every active key."""
        candidate = hash_key(secret)
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
        """
        with self._lock:
            row = self._db.execute(
                "SELECT body_hash, status, headers, body FROM idempotency WHERE key_id = ? AND idempotency_key = ?",
                (account.id, idempotency_key),
            ).fetchone()
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
        """
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


def _quota_message(cost: int, balance: int) -> str:
    return f"insufficient balance: this request costs {cost / NANOS:.9g}, the balance is {balance / NANOS:.9g}"


def check_affordable(cost: int, balance: int) -> None:
    """Refuse before any work is done when the balance cannot cover the cost."""
    if balance < cost:
        raise InsufficientQuota(_quota_message(cost, balance))
