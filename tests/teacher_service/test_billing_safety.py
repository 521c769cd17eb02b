"""The vendor's books under careless operators and hostile clients: keyed hashes, owner-only files, a database
that vanishes, replays that cost nothing but still count, a renamed model."""

from __future__ import annotations

import hashlib
import hmac
import logging
import shutil
import sqlite3
import stat

import numpy as np
import pytest

from common.schema import encode_vector
from teacher_service.billing import BILLING_DB, SECRET_FILE, BillingMissing, open_billing

from ..conftest import BACKENDS, run_service
from .test_api_contract import embed, image
from .test_errors import assert_error
from .test_idempotency_and_ledger import post


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_are_stored_as_hmac_under_a_server_secret_in_an_owner_only_state_folder(service):
    state_dir = service.state.settings.state_dir
    assert embed(service, ["a dog"]).status_code == 200
    assert mode(state_dir) == 0o700
    assert mode(state_dir / BILLING_DB) == 0o600 and mode(state_dir / SECRET_FILE) == 0o600
    assert all(mode(p) & 0o077 == 0 for p in state_dir.iterdir()), "WAL and shared-memory files too"
    secret = (state_dir / SECRET_FILE).read_bytes()
    with sqlite3.connect(state_dir / BILLING_DB) as db:
        stored = dict(db.execute("SELECT name, key_hash FROM keys"))
    assert stored["alice"] != hashlib.sha256(b"sk-alice-secret").hexdigest(), "not a bare, guessable SHA-256"
    assert stored["alice"] == hmac.new(secret, b"sk-alice-secret", hashlib.sha256).hexdigest()


def test_an_existing_state_folder_others_can_enter_is_made_owner_only(make_settings, tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    state_dir.chmod(0o755)
    open_billing(make_settings(state_dir=state_dir)).close()
    assert mode(state_dir) == 0o700


def test_a_billing_database_deleted_under_the_service_is_a_503_and_nothing_is_charged(service, jpeg_bytes):
    state_dir = service.state.settings.state_dir
    assert embed(service, [image(jpeg_bytes[0])]).status_code == 200
    shutil.rmtree(state_dir)
    error = assert_error(embed(service, [image(jpeg_bytes[0])]), 503, "billing_unavailable")
    assert "gone or was replaced" in error["message"]
    assert service.session().get(f"{service.url}/ready", timeout=10).status_code == 503
    assert not state_dir.exists(), "nothing is charged into, or recreated at, a vanished path"


def test_a_billing_database_replaced_under_the_service_is_a_503(service, make_settings, tmp_path):
    state_dir = service.state.settings.state_dir
    other = make_settings(state_dir=tmp_path / "other")
    open_billing(other).close()  # a fresh database with every starting balance: the wrong mount
    (state_dir / BILLING_DB).unlink()
    shutil.copy(tmp_path / "other" / BILLING_DB, state_dir / BILLING_DB)
    assert_error(embed(service, ["a dog"]), 503, "billing_unavailable")


def test_a_missing_billing_database_is_created_only_when_asked_and_with_a_log_line(make_settings, tmp_path, caplog):
    with pytest.raises(BillingMissing, match="VL2V_CREATE_BILLING=1") as raised:
        open_billing(make_settings(state_dir=tmp_path / "s1", create_billing=False))
    assert "sk-" not in str(raised.value)
    assert not (tmp_path / "s1" / BILLING_DB).exists()

    with caplog.at_level(logging.WARNING, logger="vl2v.teacher"):
        open_billing(make_settings(state_dir=tmp_path / "s2", create_billing=True)).close()
        open_billing(make_settings(state_dir=tmp_path / "s3", create_billing=False, api_keys="")).close()
    assert caplog.text.count("creating a new billing database at") == 2
    caplog.clear()
    open_billing(make_settings(state_dir=tmp_path / "s2", create_billing=False)).close()  # exists: no question
    assert "creating" not in caplog.text


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_replays_are_free_but_count_against_the_request_rate_limit(make_settings):
    with run_service(make_settings(rate_limit_requests=3)) as service:
        assert post(service, ["a dog"], "k-1").status_code == 200
        replays = [post(service, ["a dog"], "k-1") for _ in range(3)]
        assert [r.status_code for r in replays] == [200, 200, 429]
        assert all(r.headers["x-request-cost"] == "0" for r in replays[:2])
        assert replays[-1].headers["retry-after"]
        assert len(service.state.store.ledger()) == 1


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_a_replay_is_answered_even_when_the_balance_is_spent(make_settings, jpeg_bytes):
    with run_service(make_settings(api_keys="dana:sk-dana:0.0001", price_per_image=0.0001)) as service:
        first = post(service, [image(jpeg_bytes[0])], "k-1", api_key="sk-dana")
        assert first.status_code == 200 and first.headers["x-balance-remaining"] == "0.000000000"
        again = post(service, [image(jpeg_bytes[0])], "k-1", api_key="sk-dana")
        assert again.status_code == 200 and again.content == first.content
        assert_error(post(service, [image(jpeg_bytes[1])], "k-2", api_key="sk-dana"), 402, "insufficient_quota")


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_renaming_the_served_model_keeps_old_idempotency_keys_replayable(make_settings, jpeg_bytes):
    settings = make_settings(served_model_id="clip-2024")
    inputs = [image(jpeg_bytes[0]), "a dog"]

    def send(service, model: str, **extra):
        return service.session().post(
            f"{service.url}/v1/embeddings",
            json={"model": model, "input": inputs, **extra},
            headers={"Idempotency-Key": "batch-7"},
            timeout=30,
        )

    with run_service(settings) as service:
        first = send(service, "clip-2024")
        assert first.status_code == 200
    renamed = settings.model_copy(update={"served_model_id": "clip-2025"})
    with run_service(renamed) as service:
        replay = send(service, "clip-2025", encoding_format="base64", user="someone")
        assert replay.status_code == 200, replay.text
        assert replay.headers["Idempotent-Replayed"] == "true" and replay.headers["x-request-cost"] == "0"
        assert replay.json()["model"] == "clip-2025"
        same = [encode_vector(np.array(d["embedding"]), "base64") for d in first.json()["data"]]
        assert [d["embedding"] for d in replay.json()["data"]] == same
        other = post(service, ["a cat"], "batch-7", model="clip-2025")  # the key still guards its own content
        assert_error(other, 422, "idempotency_key_reused")
        assert len(service.state.store.ledger()) == 1
