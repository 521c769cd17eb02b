"""Idempotent replays, in-flight conflicts, and books that survive a restart."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import numpy as np
import pytest

from common.schema import decode_vector
from teacher_service.runtime import load_encoder

from ..conftest import BACKENDS, run_service
from .test_api_contract import embed, image
from .test_errors import assert_error

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)


def post(service, inputs, key: str, api_key: str = "sk-alice-secret", model: str = "vl2v-tiny"):
    return service.session(api_key).post(
        f"{service.url}/v1/embeddings",
        json={"model": model, "input": inputs},
        headers={"Idempotency-Key": key},
        timeout=30,
    )


def test_replay_with_same_key_is_not_billed_and_returns_the_same_body(service, jpeg_bytes):
    inputs = [image(jpeg_bytes[0]), "a dog"]
    first = post(service, inputs, "batch-0001")
    balance_after_first = service.session().get(f"{service.url}/v1/usage", timeout=10).json()["balance"]
    replay = post(service, inputs, "batch-0001")
    assert replay.status_code == 200
    assert replay.content == first.content
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["x-original-request-id"] == first.headers["x-request-id"]
    assert replay.headers["x-request-cost"] == "0"
    usage = service.session().get(f"{service.url}/v1/usage", timeout=10).json()
    assert usage["balance"] == balance_after_first and usage["requests"] == 1 and usage["images"] == 1
    ledger = service.state.store.ledger()
    assert len(ledger) == 1 and ledger[0]["idempotency_key"] == "batch-0001"


def test_same_key_with_another_body_is_422(service, jpeg_bytes):
    assert post(service, ["a dog"], "k-1").status_code == 200
    assert_error(post(service, ["a cat"], "k-1"), 422, "idempotency_key_reused", "Idempotency-Key")
    assert len(service.state.store.ledger()) == 1


def test_keys_are_scoped_to_the_api_key(make_settings):
    with run_service(make_settings(api_keys="alice:sk-alice-secret:1,carol:sk-carol:1")) as service:
        assert post(service, ["a dog"], "shared").status_code == 200
        other = post(service, ["a cat"], "shared", api_key="sk-carol")
        assert other.status_code == 200 and "Idempotent-Replayed" not in other.headers


def held_encoder(started: threading.Event, release: threading.Event):
    """The real tiny teacher, whose image batches say they started and then wait for `release`."""

    def factory(settings):
        encoder = load_encoder(settings)
        encode = encoder.encode_images

        def held(pixels):
            started.set()
            release.wait(20)
            return encode(pixels)

        encoder.encode_images = held
        return encoder

    return factory


def test_a_key_still_in_flight_is_409(make_settings, jpeg_bytes):
    started, release = threading.Event(), threading.Event()

    slow_factory = held_encoder(started, release)

    with (
        run_service(make_settings(), slow_factory) as service,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        first = pool.submit(post, service, [image(jpeg_bytes[0])], "slow-1")
        assert started.wait(20)
        assert_error(post(service, [image(jpeg_bytes[0])], "slow-1"), 409, "idempotency_key_in_use")
        release.set()
        assert first.result().status_code == 200
        assert post(service, [image(jpeg_bytes[0])], "slow-1").headers["Idempotent-Replayed"] == "true"


def test_a_failed_request_does_not_burn_its_key(service, jpeg_bytes):
    assert post(service, [image(b"broken")], "k-bad").status_code == 400
    assert post(service, [image(b"broken")], "k-bad").status_code == 400  # not replayed: nothing was charged
    assert service.state.store.ledger() == []


def test_ledger_balances_and_replays_survive_a_restart(make_settings, jpeg_bytes):
    settings = make_settings()
    with run_service(settings) as service:
        first = post(service, [image(b) for b in jpeg_bytes[:3]], "before-restart")
        embed(service, ["a guitar"], key="sk-bob-secret")
        usage = {
            k: service.session(k).get(f"{service.url}/v1/usage", timeout=10).json()
            for k in ("sk-alice-secret", "sk-bob-secret")
        }
        ledger = service.state.store.ledger()

    with run_service(settings) as service:
        assert service.state.store.ledger() == ledger
        for key, before in usage.items():
            assert service.session(key).get(f"{service.url}/v1/usage", timeout=10).json() == before
        replay = post(service, [image(b) for b in jpeg_bytes[:3]], "before-restart")
        assert replay.headers["Idempotent-Replayed"] == "true" and replay.content == first.content
        fresh = embed(service, [image(jpeg_bytes[0])])
        np.testing.assert_allclose(
            decode_vector(fresh.json()["data"][0]["embedding"]),
            decode_vector(first.json()["data"][0]["embedding"]),
            atol=1e-6,
        )


def test_a_restart_with_a_rotated_key_keeps_the_balance(make_settings):
    with run_service(make_settings()) as service:
        embed(service, ["a dog"])
        balance = service.session().get(f"{service.url}/v1/usage", timeout=10).json()["balance"]
    rotated = make_settings(api_keys="alice:sk-alice-new:10.0")
    with run_service(rotated) as service:
        assert_error(embed(service, ["a"]), 401, "invalid_api_key")
        assert service.session("sk-alice-new").get(f"{service.url}/v1/usage", timeout=10).json()["balance"] == balance
        assert_error(embed(service, ["a"], key="sk-bob-secret"), 401, "invalid_api_key")  # removed keys stop working


def test_the_openai_sdk_gets_text_embeddings(service):
    import openai

    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key="sk-alice-secret", max_retries=0)
    default = client.embeddings.create(model="vl2v-tiny", input=["a photo of a dog", "a sketch of a house"])
    as_float = client.embeddings.create(model="vl2v-tiny", input="a photo of a dog", encoding_format="float")
    assert len(default.data) == 2 and len(default.data[0].embedding) == 32
    np.testing.assert_allclose(default.data[0].embedding, as_float.data[0].embedding, atol=1e-6)
    assert abs(np.linalg.norm(default.data[1].embedding) - 1) < 1e-5
    assert default.usage.prompt_tokens == 10
    try:
        openai.OpenAI(base_url=f"{service.url}/v1", api_key="sk-nope", max_retries=0).embeddings.create(
            model="vl2v-tiny", input="a"
        )
    except openai.AuthenticationError as e:
        assert e.status_code == 401 and e.code == "invalid_api_key"
    else:
        raise AssertionError("a wrong key must raise AuthenticationError")


def test_an_expired_claim_is_never_taken_over_by_another_body(make_settings, jpeg_bytes):
    """A key whose claim ran out while its request still computes: the same body may take it over (and then
    replays the first one's answer), another body is 422 before and after the first one charges."""
    started, release = threading.Event(), threading.Event()

    slow_factory = held_encoder(started, release)

    first_body, other_body = [image(jpeg_bytes[0])], [image(jpeg_bytes[1])]
    with (
        run_service(make_settings(idempotency_lock_s=0.3), slow_factory) as service,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        first = pool.submit(post, service, first_body, "slow-1")
        assert started.wait(20)
        time.sleep(0.5)  # the first request's claim has run out; it is still computing
        assert_error(post(service, other_body, "slow-1"), 422, "idempotency_key_reused", "Idempotency-Key")
        release.set()
        paid = first.result()
        assert paid.status_code == 200 and "Idempotent-Replayed" not in paid.headers
        assert_error(post(service, other_body, "slow-1"), 422, "idempotency_key_reused", "Idempotency-Key")
        replay = post(service, first_body, "slow-1")
        assert replay.headers["Idempotent-Replayed"] == "true" and replay.content == paid.content
        ledger = service.state.store.ledger()
    assert len(ledger) == 1 and ledger[0]["images"] == 1


def test_a_charge_for_another_body_under_a_completed_key_is_refused_and_free(make_settings, jpeg_bytes):
    """The store itself: a request that computed a key another body completed first pays nothing, gets 422."""
    from teacher_service.billing import Charge, StoredResponse
    from teacher_service.errors import IdempotencyMismatch

    with run_service(make_settings()) as service:
        store = service.state.store
        account = next(a for a in store._accounts.values() if a.name == "alice")
        before = store.balance(account)
        answer = StoredResponse(200, {}, b"{}")
        charge = Charge(images=1, texts=0, tokens=0, cost=100_000)
        store.charge(account, "req-1", charge, idempotency=("k", "body-a"), response=answer)
        with pytest.raises(IdempotencyMismatch):
            store.charge(account, "req-2", charge, idempotency=("k", "body-b"), response=answer)
        replayed = store.charge(account, "req-3", charge, idempotency=("k", "body-a"), response=answer)
        assert replayed.replay == answer
        assert store.balance(account) == before - 100_000 and len(store.ledger(account)) == 1
