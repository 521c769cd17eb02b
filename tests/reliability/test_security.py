"""Keys: one cannot read or spend another's balance, none ever reaches a log, and nothing administrative (keys,
balances, settings) can be read or changed over HTTP."""

from __future__ import annotations

import logging

import pytest
import requests

from teacher_service.billing import BILLING_DB

from ..conftest import run_service
from ..teacher_service.test_api_contract import embed, image
from ..teacher_service.test_errors import assert_error

SECRETS = ("sk-alice-secret", "sk-bob-secret", "sk-wrong-but-plausible-0123456789")


def usage(service, secret: str, params: dict | None = None) -> dict:
    return service.session(secret).get(f"{service.url}/v1/usage", params=params, timeout=10).json()


def test_one_key_can_neither_read_nor_spend_another_keys_balance(service, jpeg_bytes):
    bob_before = usage(service, "sk-bob-secret")
    # Alice names bob everywhere a careless service might look: the body's `user`, the query string.
    response = service.session().post(
        f"{service.url}/v1/embeddings",
        params={"key": "bob", "user": "bob"},
        json={"model": "vl2v-tiny", "input": [image(jpeg_bytes[0])], "user": "bob"},
        timeout=30,
    )
    assert response.status_code == 200
    seen_by_alice = usage(service, "sk-alice-secret", {"key": "bob", "name": "bob"})
    assert seen_by_alice["key"] == "alice" and seen_by_alice["images"] == 1

    # Bob's balance (0.0005) cannot buy ten images, and alice's money is not his to use.
    alice_before = usage(service, "sk-alice-secret")
    refused = embed(service, [image(b) for b in jpeg_bytes[:8]] * 2, key="sk-bob-secret")
    assert_error(refused, 402, "insufficient_quota")
    assert usage(service, "sk-bob-secret") == bob_before
    assert usage(service, "sk-alice-secret") == alice_before
    assert {row["key_name"] for row in service.state.store.ledger()} == {"alice"}


@pytest.mark.parametrize(
    "header",
    [
        "Bearer sk-alice-secret, Bearer sk-bob-secret",
        "Bearer sk-alice-secret sk-bob-secret",
        "Bearer sk-alice-secre",
        "Basic c2stYWxpY2Utc2VjcmV0Og==",
        "sk-alice-secret",
    ],
)
def test_near_miss_credentials_are_401(service, header):
    response = requests.get(f"{service.url}/v1/usage", headers={"Authorization": header}, timeout=10)
    assert_error(response, 401, "invalid_api_key")


def test_no_key_reaches_a_log_or_an_error_message(make_settings, jpeg_bytes, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    with run_service(make_settings()) as service:
        bodies = []
        for secret in SECRETS:
            for path in ("/v1/usage", "/v1/models", f"/v1/usage?api_key={secret}"):
                answer = requests.get(service.url + path, headers={"Authorization": f"Bearer {secret}"}, timeout=10)
                bodies.append(answer.text)
            bodies.append(embed(service, ["a dog", image(jpeg_bytes[0])], key=secret).text)
            bodies.append(requests.get(service.url + "/v1/models", headers={"Authorization": secret}, timeout=10).text)
    # The test's own HTTP client (urllib3) logs its URLs; everything else in this process is the service.
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("urllib3"))
    assert "GET /v1/usage" in logged and "401" in logged, "the access log did record these requests"
    for secret in SECRETS:
        assert secret not in logged
        assert not any(secret in body for body in bodies)


ADMIN_LIKE = ["/admin", "/v1/keys", "/v1/settings", "/settings", "/config", "/v1/balance", "/debug", "/v1/admin"]


def test_nothing_administrative_is_routed_and_balances_cannot_be_written(service):
    before = usage(service, "sk-alice-secret")
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        for path in ADMIN_LIKE:
            response = service.session().request(method, service.url + path, json={"balance": 1e9}, timeout=10)
            assert_error(response, 404, "not_found")
        if method != "GET":
            response = service.session().request(method, f"{service.url}/v1/usage", json={"balance": 1e9}, timeout=10)
            assert_error(response, 405, "method_not_allowed")
    assert usage(service, "sk-alice-secret") == before


def test_the_api_and_every_open_answer_hide_keys_and_settings(make_settings, tmp_path):
    state_dir = tmp_path / "hidden-state-dir"
    with run_service(make_settings(state_dir=state_dir)) as service:
        spec = requests.get(f"{service.url}/openapi.json", timeout=10).json()
        assert {f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m in ops} == {
            "POST /v1/embeddings",
            "GET /v1/models",
            "GET /v1/usage",
            "GET /health",
            "GET /ready",
            "GET /metrics",
        }
        answers = [requests.get(f"{service.url}{p}", timeout=10).text for p in ("/health", "/ready", "/metrics")]
        answers += [service.session().get(f"{service.url}/v1/models", timeout=10).text, str(spec)]
    for text in answers:
        for hidden in (*SECRETS, "alice", "bob", str(state_dir), BILLING_DB):
            assert hidden not in text
