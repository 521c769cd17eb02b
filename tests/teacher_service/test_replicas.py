"""Three replicas of the vendor sharing one PostgreSQL ledger: exact books under concurrent clients with replays
and 402 races, and one rate limit across every replica."""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import threading
import time

from teacher_service.billing import NANOS
from teacher_service.runtime import load_encoder

from ..conftest import run_service
from .test_api_contract import image

PRICE = 0.0001  # per image: 100_000 nano-units


def test_three_replicas_keep_exact_books_under_eight_clients(make_settings, postgres, jpeg_bytes):
    # 48 idempotency keys of 2 images, each sent by two clients to different replicas at about the same time
    # (one pays, the other gets a replay or a 409 and retries): 96 images wanted, the balance pays for 61.
    settings = make_settings(
        database_url=postgres.create_database(),
        api_keys="alice:sk-alice-secret:0.0061",
        price_per_image=PRICE,
        price_per_1k_tokens=0.0,
        rate_limit_requests=0,
        rate_limit_images=0,
    )
    with contextlib.ExitStack() as stack:
        replicas = [stack.enter_context(run_service(settings)) for _ in range(3)]
        keys = [f"order-{i:03d}" for i in range(48)]
        bodies = {k: [image(jpeg_bytes[i % 8]), image(jpeg_bytes[(i + 3) % 8])] for i, k in enumerate(keys)}

        def client(c: int) -> list[tuple[str, int, bool, bytes]]:
            session = replicas[0].session()
            answers = []
            mine = keys[c % 4 :: 4]  # clients c and c + 4 send the same keys, starting from different replicas
            for n, key in enumerate(mine):
                for attempt in itertools.count():
                    replica = replicas[(c + n + attempt) % 3]
                    r = session.post(
                        f"{replica.url}/v1/embeddings",
                        json={"model": "vl2v-tiny", "input": bodies[key]},
                        headers={"Idempotency-Key": key},
                        timeout=60,
                    )
                    if r.status_code != 409:  # in flight on another replica: try again
                        break
                    assert attempt < 200, "a key stayed in flight"
                    time.sleep(0.02)
                answers.append((key, r.status_code, r.headers.get("Idempotent-Replayed") == "true", r.content))
            return answers

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = [a for client_answers in pool.map(client, range(8)) for a in client_answers]
        store = replicas[0].state.store
        account = next(iter(store._accounts.values()))
        ledger = store.ledger(account)
        usage = store.usage(account)
        balance = store.balance(account)

    assert len(answers) == 96 and {status for _, status, _, _ in answers} <= {200, 402}
    paid = [key for key, status, replayed, _ in answers if status == 200 and not replayed]
    assert len(paid) == len(set(paid)), "no key is charged twice"
    assert sorted(row["idempotency_key"] for row in ledger) == sorted(paid), "one ledger row per charged answer"
    assert all(row["cost"] == 2 * PRICE * NANOS and row["images"] == 2 for row in ledger)
    assert len(ledger) == 30, "61 images of balance buy 30 requests of 2, whichever replicas sold them"
    assert balance == round(0.0061 * NANOS) - sum(row["cost"] for row in ledger) == 100_000
    assert usage.spent == sum(row["cost"] for row in ledger) and usage.images == 60
    by_key: dict[str, set[bytes]] = {}
    for key, status, _, body in answers:
        if status == 200:
            by_key.setdefault(key, set()).add(body)
    assert all(len(bodies) == 1 for bodies in by_key.values()), "a replay is the paid answer, byte for byte"
    refused = {key for key, status, _, _ in answers if status == 402}
    assert refused.isdisjoint(paid) or all(len(by_key[k]) == 1 for k in refused & set(paid))


def test_the_rate_limit_holds_across_replicas(make_settings, postgres):
    """6 requests a minute for a key is 6 across the three replicas together, not 6 on each."""
    settings = make_settings(database_url=postgres.create_database(), rate_limit_requests=6, rate_limit_images=0)
    with contextlib.ExitStack() as stack:
        replicas = [stack.enter_context(run_service(settings)) for _ in range(3)]
        started = time.monotonic()

        def send(n: int) -> int:
            replica = replicas[n % 3]
            body = {"model": "vl2v-tiny", "input": ["a dog"]}
            return replica.session().post(f"{replica.url}/v1/embeddings", json=body, timeout=30).status_code

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(send, range(18)))
        elapsed = time.monotonic() - started
    refilled = int(elapsed * 6 / 60) + 1
    assert set(statuses) <= {200, 429}
    assert 6 <= statuses.count(200) <= 6 + refilled, statuses


def test_a_key_taken_over_when_its_claim_ran_out_is_charged_once_across_replicas(make_settings, postgres, jpeg_bytes):
    """The window that charged twice: replica A computes a key past its claim, replica B takes the key over, and
    both finish at the same moment. Whatever the row's state, the second charger waits on it and replays free."""
    settings = make_settings(
        database_url=postgres.create_database(),
        api_keys="alice:sk-alice-secret:1.0",
        price_per_image=PRICE,
        price_per_1k_tokens=0.0,
        rate_limit_requests=0,
        rate_limit_images=0,
        idempotency_lock_s=0.4,
    )
    gate = threading.Event()
    held = [threading.Semaphore(0), threading.Semaphore(0)]  # one release per model call that reached the gate

    def gated(n: int):
        def factory(s):
            encoder = load_encoder(s)
            encode = encoder.encode_images

            def wait_for_the_gate(pixels):
                held[n].release()
                assert gate.wait(30)
                return encode(pixels)

            encoder.encode_images = wait_for_the_gate
            return encoder

        return factory

    waves, per_wave = 3, 8
    answers: list[tuple[str, int, bool, bytes]] = []
    with contextlib.ExitStack() as stack:
        a, b = (stack.enter_context(run_service(settings, gated(n))) for n in range(2))
        for wave in range(waves):
            gate.clear()
            keys = [f"wave{wave}-key{i}" for i in range(per_wave)]
            inputs = {k: [image(jpeg_bytes[(i + wave) % 8])] for i, k in enumerate(keys)}

            def send(replica, key, inputs=inputs):
                r = replica.session().post(
                    f"{replica.url}/v1/embeddings",
                    json={"model": "vl2v-tiny", "input": inputs[key]},
                    headers={"Idempotency-Key": key},
                    timeout=60,
                )
                return key, r.status_code, r.headers.get("Idempotent-Replayed") == "true", r.content

            with concurrent.futures.ThreadPoolExecutor(2 * per_wave) as pool:
                first = [pool.submit(send, a, k) for k in keys]
                assert held[0].acquire(timeout=30), "replica A never reached its model"
                time.sleep(0.6)  # every claim of A's has run out
                second = [pool.submit(send, b, k) for k in keys]
                assert held[1].acquire(timeout=30), "replica B never took the keys over"
                time.sleep(0.1)  # B's batch is complete
                gate.set()  # both replicas finish together and charge at once
                answers += [f.result() for f in first + second]
        store = a.state.store
        account = next(iter(store._accounts.values()))
        ledger = store.ledger(account)
        balance = store.balance(account)

    races = waves * per_wave
    assert {status for _, status, _, _ in answers} == {200}
    charged = sorted(row["idempotency_key"] for row in ledger)
    assert charged == sorted({key for key, *_ in answers}), "one ledger row per key"
    assert len(ledger) == races
    assert balance == NANOS - races * round(PRICE * NANOS), "every balance exact, to the nano-unit"
    by_key: dict[str, list[tuple[bool, bytes]]] = {}
    for key, _, replayed, body in answers:
        by_key.setdefault(key, []).append((replayed, body))
    for key, pair in by_key.items():
        assert sorted(replayed for replayed, _ in pair) == [False, True], key
        assert pair[0][1] == pair[1][1], f"{key}: the replay is the paid answer, byte for byte"
