"""The vendor's books: keyed key hashes, balances, one ledger row per charged request, idempotency records.

Money is stored as integer nano-units of the price currency, so balances add up exactly. The books live in one
database (`ledger_db`): an SQLite file in the state folder (the embedded default, one replica) or a PostgreSQL
database that every replica shares. A charge, its ledger row and its idempotency record are one transaction, and
the balance is debited by a conditional UPDATE, so two replicas never both spend the last of it.

Idempotency follows Stripe's design: a key is claimed by a row marked in flight, with a lock that expires (a
replica that dies mid-request leaves a claim another replica takes over after `idempotency_lock_s`); a
completed request stores its answer, replayed free by any replica for `idempotency_ttl_s`. Should two replicas
ever compute the same key (a lock that expired under a slow request), the first to charge wins and the second
answers with the first one's stored response, uncharged.

Keys are stored as HMAC-SHA256 under a server secret kept in the state folder, never in the database (a leaked
database alone does not let anyone test guesses); replicas share the secret through that folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError

from .errors import IdempotencyConflict, IdempotencyMismatch, InsufficientQuota
from .ledger_db import BillingMissing, Cursor, Database, connect
from .ratelimit import Bucket
from .settings import ApiKey, Settings

log = logging.getLogger("vl2v.teacher")

__all__ = ["BILLING_DB", "NANOS", "SECRET_FILE", "BillingMissing", "BillingStore", "open_billing"]

NANOS = 1_000_000_000
SCHEMA_VERSION = 2

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
    state TEXT NOT NULL DEFAULT 'done',
    owner TEXT,
    locked_until REAL,
    PRIMARY KEY (key_id, idempotency_key)
);
CREATE TABLE IF NOT EXISTS rate (
    key_id INTEGER NOT NULL REFERENCES keys(id),
    unit TEXT NOT NULL,
    tokens REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (key_id, unit)
);
"""

# v1 -> v2: idempotency claims became rows (shared by replicas), and rate-limit buckets can live in the database.
_MIGRATE_V1 = """
ALTER TABLE idempotency ADD COLUMN state TEXT NOT NULL DEFAULT 'done';
ALTER TABLE idempotency ADD COLUMN owner TEXT;
ALTER TABLE idempotency ADD COLUMN locked_until REAL;
"""

SECRET_FILE = "key-hash.secret"
BILLING_DB = "billing.sqlite3"
IN_FLIGHT, DONE = "in_flight", "done"


def to_nanos(amount: float) -> int:
    return round(amount * NANOS)


def replica_name() -> str:
    """This process, as an in-flight claim names its owner: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive_other_process(pid: int) -> bool:
    """Whether `pid` is a running process other than this one."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # running, as another user
        return True
    return True


def hash_key(secret: str, server_secret: bytes) -> str:
    """HMAC-SHA256 of an API key under the server's secret: what the database stores and compares."""
    return hmac.new(server_secret, secret.encode(), hashlib.sha256).hexdigest()


def prepare_state_dir(state_dir: Path) -> None:
    """Create the state folder owner-only (0700); tighten an existing one that others can enter."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if state_dir.stat().st_mode & 0o077:
            state_dir.chmod(0o700)
    except OSError as e:
        raise ConfigError(f"state folder {state_dir}: {e.strerror or e}") from None


def server_secret(state_dir: Path) -> bytes:
    """The key-hashing secret in `state_dir`, created (0600) on first use. Replicas starting together on one
    folder agree on it: the file appears whole, by a hard link, or not at all."""
    path = state_dir / SECRET_FILE
    if not path.exists():
        try:
            fd, draft = tempfile.mkstemp(dir=state_dir, prefix=".secret-")  # mode 0600
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(draft, path)  # fails if another process got there first: then its secret is the one
            except FileExistsError:
                pass
            finally:
                os.unlink(draft)
        except OSError as e:
            raise ConfigError(f"cannot create {path}: {e.strerror or e}") from None
    value = path.read_bytes()
    if len(value) < 32:
        raise ConfigError(f"{path} is damaged ({len(value)} bytes); delete it and restart")
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
class Charged:
    """What `charge` did: debited (`balance` left) or, when another replica completed the same idempotency key
    first, nothing (`replay` is its stored answer)."""

    balance: int
    replay: StoredResponse | None = None


@dataclass(frozen=True)
class UsageTotals:
    balance: int
    spent: int
    images: int
    texts: int
    tokens: int
    requests: int


class BillingStore:
    """Thread-safe access to the books; one instance per service process, any number of processes per database.

    Args:
        db: the database (`ledger_db.connect`).
        secret: the key-hashing secret (`server_secret`).
        idempotency_ttl_s: how long a completed answer is kept for replay (Stripe keeps them 24 hours); after
            that, the same key starts a new, charged request.
        idempotency_lock_s: how long an in-flight claim holds its key against other requests; a claim left by a
            replica that died is taken over after it.
    """

    def __init__(
        self,
        db: Database,
        secret: bytes,
        *,
        idempotency_ttl_s: float = 86_400.0,
        idempotency_lock_s: float = 90.0,
    ) -> None:
        self.db = db
        self._secret = secret
        self._accounts: dict[str, Account] = {}
        self.idempotency_ttl_s = idempotency_ttl_s
        self.idempotency_lock_s = idempotency_lock_s
        self._migrate()
        with db.transaction() as cursor:
            cursor.execute(
                f"DELETE FROM idempotency WHERE state = '{DONE}' AND created_at < ?",
                (db.now(cursor) - idempotency_ttl_s,),
            )
        self._free_claims_of_dead_processes()

    def _free_claims_of_dead_processes(self) -> None:
        """Claims left in flight by an earlier vendor process on this host (killed, crashed, or this container
        before a restart, with the same pid) are freed now rather than when their lock expires: a client
        re-sending the request need not wait `idempotency_lock_s`. Other hosts' claims expire on their own."""
        host, _ = replica_name().split(":")
        with self.db.transaction() as cursor:
            claims = cursor.execute(
                f"SELECT key_id, idempotency_key, owner FROM idempotency WHERE state = '{IN_FLIGHT}'"
            )
            for key_id, idempotency_key, owner in claims:
                owner_host, _, rest = (owner or "").partition(":")
                pid = rest.split("/", 1)[0]
                if owner_host == host and pid.isdigit() and not _alive_other_process(int(pid)):
                    cursor.execute(
                        "UPDATE idempotency SET locked_until = 0 WHERE key_id = ? AND idempotency_key = ? "
                        "AND owner = ?",
                        (key_id, idempotency_key, owner),
                    )

    def _migrate(self) -> None:
        self.db.create_schema(_SCHEMA.split("CREATE TABLE IF NOT EXISTS idempotency")[0])
        with self.db.transaction(exclusive=True) as cursor:
            found = cursor.execute("SELECT value FROM meta WHERE name = 'schema_version'")
            version = int(found[0][0]) if found else None
            if version == 1:
                log.warning("upgrading the billing database %s from schema v1 to v%d", self.db, SCHEMA_VERSION)
                for statement in filter(str.strip, _MIGRATE_V1.split(";")):
                    cursor.execute(statement)
            elif version not in (None, SCHEMA_VERSION):
                raise ConfigError(f"{self.db}: billing schema v{version}, this service needs v{SCHEMA_VERSION}")
        self.db.create_schema(_SCHEMA)
        with self.db.transaction(exclusive=True) as cursor:
            cursor.execute("DELETE FROM meta WHERE name = 'schema_version'")
            cursor.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def check_present(self) -> None:
        """Raise `BillingUnavailable` (503) if the database is gone, replaced or unreachable."""
        self.db.check_present()

    def close(self) -> None:
        self.db.close()

    @property
    def path(self) -> str:
        return str(self.db)

    def sync_keys(self, keys: list[ApiKey]) -> None:
        """Make the configured keys the active ones. A key seen before keeps its balance and history."""
        hashes = {key.name: hash_key(key.secret, self._secret) for key in keys}
        check = hash_key("vl2v: the secret the key hashes were made with", self._secret)[:16]
        with self.db.transaction(exclusive=True) as cursor:
            recorded = cursor.execute("SELECT value FROM meta WHERE name = 'secret_check'")
            if recorded and recorded[0][0] != check:
                raise ConfigError(
                    f"the key-hashing secret ({SECRET_FILE} in the state folder) is not the one the billing database "
                    f"{self.db} was written with: every replica needs the same {SECRET_FILE} (a shared state volume, "
                    "or the file copied to each machine)"
                )
            if not recorded:
                cursor.execute("INSERT INTO meta VALUES ('secret_check', ?)", (check,))
            now = self.db.now(cursor)
            cursor.execute("UPDATE keys SET active = 0")
            for key in keys:
                cursor.execute(
                    "INSERT INTO keys (name, key_hash, balance, created_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET key_hash = excluded.key_hash, active = 1",
                    (key.name, hashes[key.name], to_nanos(key.balance), now),
                )
            rows = cursor.execute("SELECT id, name FROM keys WHERE active = 1")
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
        return self.db.execute("SELECT balance FROM keys WHERE id = ?", (account.id,))[0][0]

    def standing(self, account: Account, idempotency_key: str | None) -> tuple[int, bool]:
        """The balance, and whether a completed answer is stored under `idempotency_key` (a retry of it will be a
        free replay): one read."""
        if idempotency_key is None:
            return self.balance(account), False
        balance, stored = self.db.execute(
            f"SELECT balance, EXISTS (SELECT 1 FROM idempotency WHERE key_id = keys.id AND idempotency_key = ? "
            f"AND state = '{DONE}' AND created_at >= {self.db.clock} - ?) FROM keys WHERE id = ?",
            (idempotency_key, self.idempotency_ttl_s, account.id),
        )[0]
        return balance, bool(stored)

    def usage(self, account: Account) -> UsageTotals:
        row = self.db.execute(
            "SELECT balance, spent, images, texts, tokens, requests FROM keys WHERE id = ?", (account.id,)
        )[0]
        return UsageTotals(*row)

    def ledger(self, account: Account | None = None) -> list[dict]:
        """Ledger rows, oldest first; all accounts' when `account` is None."""
        names = ["id", "request_id", "key_id", "idempotency_key", "images", "texts", "tokens", "cost", "created_at"]
        query = f"SELECT {', '.join('l.' + n for n in names)}, k.name FROM ledger l JOIN keys k ON k.id = l.key_id"
        args: tuple = ()
        if account is not None:
            query, args = query + " WHERE l.key_id = ?", (account.id,)
        rows = self.db.execute(query + " ORDER BY l.id", args)
        return [dict(zip([*names, "key_name"], row, strict=True)) for row in rows]

    # -- idempotency ------------------------------------------------------------------------------------------

    def claim(self, account: Account, idempotency_key: str, body_hash: str, owner: str) -> StoredResponse | None:
        """Start a request under an idempotency key: the stored response if it already completed, else None
        (the key is now `owner`'s until it charges, releases, or its lock expires).

        Raises:
            IdempotencyMismatch: the key was used with a different body.
            IdempotencyConflict: a request with this key is in flight, here or on another replica.
            BillingUnavailable: the database is gone.
        """
        key = (account.id, idempotency_key)
        clock = self.db.clock
        insert = (
            "INSERT INTO idempotency (key_id, idempotency_key, body_hash, status, headers, body, created_at, state, "
            f"owner, locked_until) VALUES (?, ?, ?, 0, '{{}}', ?, {clock}, '{IN_FLIGHT}', ?, {clock} + ?) "
            "ON CONFLICT (key_id, idempotency_key) DO NOTHING RETURNING 1",
            (*key, body_hash, b"", owner, self.idempotency_lock_s),
        )
        if self.db.execute(*insert):  # a new key, the common case: one statement
            return None
        with self.db.transaction() as cursor:
            now = self.db.now(cursor)
            # The row that stopped the insert may be gone by the time it is read (its request failed and released
            # the key): then the insert is tried again.
            while True:
                found = cursor.execute(
                    "SELECT state, body_hash, status, headers, body, created_at, locked_until FROM idempotency "
                    "WHERE key_id = ? AND idempotency_key = ?" + self.db.for_update,
                    key,
                )
                if found:
                    break
                if cursor.execute(*insert):
                    return None
            state, stored_hash, status, headers, body, created_at, locked_until = found[0]
            completed = state == DONE and created_at >= now - self.idempotency_ttl_s
            if state == IN_FLIGHT and stored_hash != body_hash:
                # Whether its lock has run out or not, the claim's request may still charge: taking the key over
                # with another body would replay that request's answer for this one.
                raise _reused_key()
            if not completed and state == IN_FLIGHT and locked_until > now:
                raise IdempotencyConflict(
                    "a request with this Idempotency-Key is still in progress; retry later", param="Idempotency-Key"
                )
            if not completed:  # expired, or abandoned by a replica that died: this request takes it over
                cursor.execute(
                    f"UPDATE idempotency SET state = '{IN_FLIGHT}', body_hash = ?, owner = ?, locked_until = ?, "
                    "created_at = ? WHERE key_id = ? AND idempotency_key = ?",
                    (body_hash, owner, now + self.idempotency_lock_s, now, *key),
                )
                return None
        if stored_hash != body_hash:
            raise _reused_key()
        return StoredResponse(status=status, headers=json.loads(headers), body=bytes(body))

    def shared_buckets(self) -> DatabaseBuckets | None:
        """Rate-limit buckets in the database, when other replicas share it (None: keep them in memory)."""
        return DatabaseBuckets(self.db) if self.db.shared else None

    def release(self, account: Account, idempotency_key: str, owner: str) -> None:
        """Give up `owner`'s claim on a key (its request failed before charging): the key is free again."""
        self.db.execute(
            f"DELETE FROM idempotency WHERE key_id = ? AND idempotency_key = ? AND state = '{IN_FLIGHT}' AND owner = ?",
            (account.id, idempotency_key, owner),
        )

    # -- charging ---------------------------------------------------------------------------------------------

    def charge(
        self,
        account: Account,
        request_id: str,
        charge: Charge,
        *,
        idempotency: tuple[str, str] | None = None,
        response: StoredResponse | None = None,
    ) -> Charged:
        """Debit `charge.cost`, write its ledger row and (with a key) the replayable response, atomically.

        With a key, the key's row is locked first, whatever its state, so two requests that both computed it
        (one took the key over when the other's claim ran out) charge one after the other: the second finds the
        first's answer and replays it free, or, had its body been another, is refused with nothing charged.

        Raises:
            InsufficientQuota: the balance does not cover the cost; nothing is written.
            IdempotencyMismatch: another request body completed this key first; nothing is written.
            BillingUnavailable: the database is gone, replaced or unreachable; nothing is written.
        """
        with self.db.transaction() as cursor:
            now = self.db.now(cursor)
            if idempotency is not None:
                done = self._lock_key(cursor, account, idempotency, now)
                if done is not None:  # another replica finished this key while this one computed it: it is paid for
                    balance = cursor.execute("SELECT balance FROM keys WHERE id = ?", (account.id,))[0][0]
                    return Charged(balance, done)
            left = cursor.execute(
                "UPDATE keys SET balance = balance - ?, spent = spent + ?, images = images + ?, "
                "texts = texts + ?, tokens = tokens + ?, requests = requests + 1 WHERE id = ? AND balance >= ? "
                "RETURNING balance",
                (charge.cost, charge.cost, charge.images, charge.texts, charge.tokens, account.id, charge.cost),
            )
            if not left:
                balance = cursor.execute("SELECT balance FROM keys WHERE id = ?", (account.id,))[0][0]
                raise InsufficientQuota(_quota_message(charge.cost, balance))
            cursor.execute(
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
                cursor.execute(
                    "INSERT INTO idempotency (key_id, idempotency_key, body_hash, status, headers, body, created_at, "
                    f"state, owner, locked_until) VALUES (?, ?, ?, ?, ?, ?, ?, '{DONE}', ?, NULL) "
                    "ON CONFLICT (key_id, idempotency_key) DO UPDATE SET body_hash = excluded.body_hash, "
                    "status = excluded.status, headers = excluded.headers, body = excluded.body, "
                    "created_at = excluded.created_at, state = excluded.state, owner = excluded.owner, "
                    "locked_until = NULL",
                    (
                        account.id,
                        idempotency[0],
                        idempotency[1],
                        response.status,
                        json.dumps(response.headers),
                        response.body,
                        now,
                        request_id,
                    ),
                )
            return Charged(left[0][0])

    def _lock_key(
        self, cursor: Cursor, account: Account, idempotency: tuple[str, str], now: float
    ) -> StoredResponse | None:
        """Hold the key's row until the transaction ends (a row is made if none is left, so that there is one to
        wait on); the answer stored under it if a request with this body already completed it.

        On PostgreSQL a locking read that filtered on the row's state would not wait for a replica that is about to
        complete it (its snapshot still shows the claim): it must lock the row as it is, then read what it became.
        """
        key = (account.id, idempotency[0])
        select = (
            "SELECT state, body_hash, status, headers, body, created_at FROM idempotency "
            "WHERE key_id = ? AND idempotency_key = ?" + self.db.for_update
        )
        found = cursor.execute(select, key)
        if not found:
            cursor.execute(
                "INSERT INTO idempotency (key_id, idempotency_key, body_hash, status, headers, body, created_at, "
                f"state, owner, locked_until) VALUES (?, ?, ?, 0, '{{}}', ?, ?, '{IN_FLIGHT}', NULL, ?) "
                "ON CONFLICT (key_id, idempotency_key) DO NOTHING",
                (*key, idempotency[1], b"", now, now + self.idempotency_lock_s),
            )
            found = cursor.execute(select, key)
        state, body_hash, status, headers, body, created_at = found[0]
        if state != DONE or created_at < now - self.idempotency_ttl_s:
            return None
        if body_hash != idempotency[1]:
            raise _reused_key()
        return StoredResponse(status, json.loads(headers), bytes(body))


def _reused_key() -> IdempotencyMismatch:
    return IdempotencyMismatch(
        "this Idempotency-Key was already used with a different request body", param="Idempotency-Key"
    )


class DatabaseBuckets:
    """Rate-limit buckets as rows of the shared database, read and written under a row lock: a limit holds for a
    key across every replica. Time is the database's clock, the one the replicas share."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @contextlib.contextmanager
    def hold(self, account_id: int, capacities: dict[str, float]) -> Iterator[dict[str, Bucket]]:
        # Two statements whatever the number of units (four for a key's first check), in a transaction that need
        # not wait for the disk: a database crash may forget the last moments of spending, which only makes a limit
        # briefly looser.
        units, clock = list(capacities), self.db.clock
        which = f"key_id = ? AND unit IN ({', '.join('?' * len(units))})"
        select = f"SELECT unit, tokens, updated, {clock} FROM rate WHERE {which} ORDER BY unit" + self.db.for_update
        with self.db.transaction(durable=False) as cursor:
            rows = cursor.execute(select, (account_id, *units))
            if len(rows) < len(units):  # new buckets start full
                cursor.execute(
                    "INSERT INTO rate (key_id, unit, tokens, updated) VALUES "
                    + ", ".join(f"(?, ?, ?, {clock})" for _ in units)
                    + " ON CONFLICT (key_id, unit) DO NOTHING",
                    tuple(value for unit in units for value in (account_id, unit, capacities[unit])),
                )
                rows = cursor.execute(select, (account_id, *units))
            now = rows[0][3]
            stored = {unit: (tokens, updated) for unit, tokens, updated, _ in rows}
            held = {}
            for unit, capacity in capacities.items():
                tokens, updated = stored[unit]
                held[unit] = Bucket(capacity, min(tokens, capacity), min(updated, now))
                held[unit].refill(now)
            yield held
            cases = " ".join("WHEN ? THEN ?" for _ in units)
            cursor.execute(
                f"UPDATE rate SET tokens = CASE unit {cases} END, updated = CASE unit {cases} END WHERE {which}",
                (
                    *(value for unit in units for value in (unit, held[unit].tokens)),
                    *(value for unit in units for value in (unit, held[unit].updated)),
                    account_id,
                    *units,
                ),
            )


def _quota_message(cost: int, balance: int) -> str:
    return f"insufficient balance: this request costs {cost / NANOS:.9g}, the balance is {balance / NANOS:.9g}"


def check_affordable(cost: int, balance: int) -> None:
    """Refuse before any work is done when the balance cannot cover the cost."""
    if balance < cost:
        raise InsufficientQuota(_quota_message(cost, balance))


def open_billing(settings: Settings) -> BillingStore:
    """The books with the configured keys active: the database `settings.database_url` names, or the SQLite file
    in the state folder. A missing database is created only when no keys are configured or `create_billing` is
    set (the first start), and always with a log line saying so.

    Raises:
        ConfigError: a bad key entry, a state folder that cannot be written, a database that cannot be reached,
            or a missing database not to create.
    """
    keys = settings.load_api_keys()
    prepare_state_dir(settings.state_dir)
    secret = server_secret(settings.state_dir)
    db = connect(settings.database_url, settings.state_dir / BILLING_DB, create=settings.create_billing or not keys)
    try:
        store = BillingStore(
            db,
            secret,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            idempotency_lock_s=settings.idempotency_lock_s,
        )
        store.sync_keys(keys)
    except ConfigError:
        db.close()
        raise
    except Exception as e:  # sqlite3.Error, psycopg.Error: the database refused a write
        db.close()
        message = db.scrub(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        raise ConfigError(f"cannot write the billing database {db}: {message}") from None
    return store
