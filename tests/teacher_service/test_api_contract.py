"""The wire contract of v1, through a real uvicorn server on loopback."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest

from common.schema import (
    BALANCE_HEADER,
    COST_HEADER,
    REQUEST_ID_HEADER,
    decode_vector,
    image_data_url,
)
from teacher_service.billing import NANOS


def image(data: bytes, mime: str = "image/jpeg") -> dict:
    return {"type": "image", "image": image_data_url(data, mime)}


def embed(service, inputs, *, key: str = "sk-alice-secret", **extra):
    return service.session(key).post(
        f"{service.url}/v1/embeddings", json={"model": "vl2v-tiny", "input": inputs, **extra}, timeout=30
    )


def vectors(response) -> np.ndarray:
    return np.stack([decode_vector(d["embedding"]) for d in response.json()["data"]])


def test_mixed_inputs_come_back_in_order_with_unit_norm(service, jpeg_bytes, png_bytes):
    inputs = [
        "a photo of a dog",
        image(jpeg_bytes[0]),
        {"type": "text", "text": "a sketch"},
        image(png_bytes, "image/png"),
    ]
    response = embed(service, inputs)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == "vl2v-tiny"
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
    assert all(d["object"] == "embedding" for d in body["data"])
    got = vectors(response)
    assert got.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert response.headers[REQUEST_ID_HEADER].startswith("req_")


def test_a_single_string_input_is_accepted(service):
    response = embed(service, "a photo of a house")
    assert response.status_code == 200
    assert vectors(response).shape == (1, 32)


def test_same_input_gives_the_same_embedding(service, jpeg_bytes):
    first = vectors(embed(service, [image(jpeg_bytes[1]), "a guitar"]))
    # Alone and inside a bigger batch: the answer must not depend on its neighbours.
    again = vectors(embed(service, [image(b) for b in jpeg_bytes[:5]] + ["a guitar"]))
    np.testing.assert_allclose(first[0], again[1], atol=1e-6)
    np.testing.assert_allclose(first[1], again[5], atol=1e-6)
    assert not np.allclose(again[0], again[1])


def test_float_and_base64_encodings_agree(service, jpeg_bytes):
    inputs = [image(jpeg_bytes[2]), "a horse"]
    as_float = embed(service, inputs, encoding_format="float")
    as_base64 = embed(service, inputs, encoding_format="base64")
    assert isinstance(as_float.json()["data"][0]["embedding"], list)
    assert isinstance(as_base64.json()["data"][0]["embedding"], str)
    np.testing.assert_array_equal(vectors(as_float), vectors(as_base64))


def test_models_lists_what_a_client_must_record(service):
    response = service.session().get(f"{service.url}/v1/models", timeout=10)
    assert response.status_code == 200
    (card,) = response.json()["data"]
    assert card["id"] == "vl2v-tiny" and card["architecture"] == "vl2v-tiny"
    assert card["embedding_dim"] == 32 and card["image_size"] == [32, 32] and card["context_length"] == 77
    assert card["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-4)
    assert card["preprocess"]["interpolation"] == "bicubic" and len(card["preprocess"]["mean"]) == 3
    assert len(card["fingerprint"]) == 64
    assert card["pricing"] == {"per_image": 0.0001, "per_1k_tokens": 0.02, "currency": "USD"}


def test_cost_is_images_times_price_plus_tokens_and_balance_drops_exactly(service, jpeg_bytes):
    before = service.session().get(f"{service.url}/v1/usage", timeout=10).json()
    texts = ["a photo of a dog", "art of the elephant"]  # 5 + 4 BPE tokens
    response = embed(service, [image(b) for b in jpeg_bytes[:3]] + texts)
    usage = response.json()["usage"]
    assert usage["images"] == 3 and usage["texts"] == 2
    assert usage["prompt_tokens"] == usage["total_tokens"] == 9
    expected_nanos = 3 * 100_000 + round(9 * 20_000_000 / 1000)  # 0.0001 per image, 0.02 per 1k tokens
    assert usage["cost"] == expected_nanos / NANOS
    assert response.headers[COST_HEADER] == f"{expected_nanos / NANOS:.9f}"

    after = service.session().get(f"{service.url}/v1/usage", timeout=10).json()
    assert round((before["balance"] - after["balance"]) * NANOS) == expected_nanos
    assert float(response.headers[BALANCE_HEADER]) == pytest.approx(after["balance"], abs=1e-9)
    assert after["images"] - before["images"] == 3 and after["texts"] - before["texts"] == 2
    assert after["tokens"] - before["tokens"] == 9 and after["requests"] - before["requests"] == 1
    ledger = service.state.store.ledger()
    assert ledger[-1]["request_id"] == response.headers[REQUEST_ID_HEADER]
    assert (ledger[-1]["images"], ledger[-1]["texts"], ledger[-1]["cost"]) == (3, 2, expected_nanos)


def test_usage_reports_only_the_callers_own_account(service, jpeg_bytes):
    embed(service, [image(jpeg_bytes[0])])
    alice = service.session().get(f"{service.url}/v1/usage", timeout=10).json()
    bob = service.session("sk-bob-secret").get(f"{service.url}/v1/usage", timeout=10).json()
    assert alice["key"] == "alice" and alice["images"] == 1
    assert bob["key"] == "bob" and bob["images"] == 0 and bob["balance"] == 0.0005


def test_concurrent_requests_are_coalesced_into_model_batches(service, jpeg_bytes):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda b: embed(service, [image(b)]), jpeg_bytes))
    assert all(r.status_code == 200 for r in responses)
    text = service.session().get(f"{service.url}/metrics", timeout=10).text
    batches = _metric(text, "vl2v_batch_size_count")
    assert batches < len(jpeg_bytes), "eight concurrent single-image requests should share model calls"
    assert _metric(text, "vl2v_images_total") == len(jpeg_bytes)
    for step in ("decode", "preprocess"):  # where an image's time goes before the model, one observation each
        assert _metric(text, f"vl2v_image_{step}_seconds_count") == len(jpeg_bytes)
        assert 0 < _metric(text, f"vl2v_image_{step}_seconds_sum") < _metric(text, "vl2v_request_latency_seconds_sum")


def test_metrics_count_requests_errors_and_latency(service, jpeg_bytes):
    embed(service, [image(jpeg_bytes[0])])
    embed(service, ["x"], key="sk-wrong")
    text = service.session().get(f"{service.url}/metrics", timeout=10).text
    assert 'vl2v_requests_total{route="/v1/embeddings",status="200"} 1' in text
    assert 'vl2v_errors_total{code="invalid_api_key",status="401"} 1' in text
    assert _metric(text, "vl2v_request_latency_seconds_count") >= 2
    assert "# TYPE vl2v_batch_size histogram" in text


def test_health_is_open_and_ready_reports_loaded(service):
    assert service.session("none").get(f"{service.url}/health", timeout=10).json()["model"] == "ready"
    assert service.session("none").get(f"{service.url}/ready", timeout=10).status_code == 200


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )
