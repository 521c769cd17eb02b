"""The ledger's share of a request: keyed single-image requests per second through the billing calls alone, over
bare durable commits per second on the same database, in one run.

    python bench/billing.py --requests 500
    python bench/billing.py --requests 500 --database-url postgresql://postgres@127.0.0.1:5432/bench

Each keyed request makes the calls `POST /v1/embeddings` makes when it succeeds, in its order: the presence check,
the request-rate check, the can-it-pay check (a replay is free), the claim of the idempotency key, the image-rate
check, the exact-price check, and the charge with its ledger row and replay record. The floor is one durable write
per request: a transaction of one INSERT on the same database. The SQLite file lives in a temp folder (or `--dir`);
a PostgreSQL URL is used as given (fsync as its server has it), in a new table each run. Prints one JSON object per
database: ms per call, requests/s, and the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from teacher_service.billing import BillingStore, Charge, StoredResponse
from teacher_service.ledger_db import Database, connect
from teacher_service.ratelimit import RateLimiter
from teacher_service.settings import ApiKey

ANSWER = b"x" * 2_900  # a single-image answer's size, as stored for replay: one 512-d embedding in base64


def keyed_requests(store: BillingStore, n: int) -> tuple[float, dict[str, float]]:
    """Requests per second and ms per call, for `n` keyed single-image requests made one after another."""
    store.sync_keys([ApiKey(name="bench", secret="sk-bench", balance=1e6)])
    account = store.authenticate("sk-bench")
    assert account is not None
    spent: Counter[str] = Counter()

    @contextlib.contextmanager
    def timed(call: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        spent[call] += time.perf_counter() - started

    # Rate limits in the buckets the service would use (the database's, where replicas share it), so high that
    # none refuses: each check does its full work.
    limiter = RateLimiter(10**9, 10**9, buckets=store.shared_buckets())
    answer = StoredResponse(200, {}, ANSWER)
    charge = Charge(images=1, texts=0, tokens=0, cost=100)
    started = time.perf_counter()
    for _ in range(n):
        key = uuid.uuid4().hex
        with timed("present"):
            store.check_present()
        with timed("rate_requests"):
            limiter.check(account.id, images=0)
        with timed("can_pay"):
            store.standing(account, key)
        with timed("claim"):
            store.claim(account, key, "digest", "bench")
        with timed("rate_images"):
            limiter.check(account.id, 1, requests=0)
        with timed("price"):
            store.balance(account)
        with timed("charge"):
            store.charge(account, key, charge, idempotency=(key, "digest"), response=answer)
    elapsed = time.perf_counter() - started
    return n / elapsed, {name: 1e3 * seconds / n for name, seconds in spent.items()}


def bare_commits(db: Database, n: int) -> float:
    """Durable single-row INSERT + COMMIT per second: the least a request that writes anything costs."""
    table = f"bench_{uuid.uuid4().hex[:8]}"
    with db.transaction() as cursor:
        cursor.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY, body BYTEA)")
    started = time.perf_counter()
    for i in range(n):
        with db.transaction() as cursor:
            cursor.execute(f"INSERT INTO {table} VALUES (?, ?)", (str(i), ANSWER))
    elapsed = time.perf_counter() - started
    with db.transaction() as cursor:
        cursor.execute(f"DROP TABLE {table}")
    return n / elapsed


def measure(url: str | None, folder: Path, n: int) -> dict:
    db = connect(url, folder / "billing.sqlite", create=True)
    store = BillingStore(db, b"bench-secret" * 3)
    try:
        bare = bare_commits(db, n)
        per_s, ms = keyed_requests(store, n)
    finally:
        store.close()
    return {
        "database": "postgresql" if url else "sqlite",
        "requests": n,
        "keyed_requests_per_s": round(per_s, 1),
        "bare_commits_per_s": round(bare, 1),
        "ratio": round(per_s / bare, 3),
        "ms_per_call": {name: round(value, 3) for name, value in ms.items()},
        "ms_per_request": round(1e3 / per_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite file goes (default: a temp folder)")
    parser.add_argument("--database-url", action="append", default=[], help="a PostgreSQL database to measure too")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="vl2v-bench-billing-"))
    folder.mkdir(parents=True, exist_ok=True)
    for url in [None, *args.database_url]:
        print(json.dumps(measure(url, folder, args.requests)))


if __name__ == "__main__":
    main()
