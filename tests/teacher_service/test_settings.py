"""Settings: keys from the environment or a file, and values refused with a message naming them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from common.errors import ConfigError
from teacher_service.settings import ApiKey, Settings, parse_api_keys


def test_keys_parse_from_the_documented_env_format():
    keys = parse_api_keys("alice:sk-alice:10.0,bob:sk-bob:2.5", "VL2V_API_KEYS")
    assert keys == [ApiKey("alice", "sk-alice", 10.0), ApiKey("bob", "sk-bob", 2.5)]


def test_a_key_may_contain_colons_and_files_may_have_comments():
    text = "# team keys\ncarol:sk:with:colons:1\n\n  dave:sk-d:0  # intern\n"
    assert parse_api_keys(text, "keys.txt") == [
        ApiKey("carol", "sk:with:colons", 1.0),
        ApiKey("dave", "sk-d", 0.0),
    ]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("alice:sk-alice", "expected 'name:key:balance'"),
        ("alice:sk-alice:lots", "the balance is not a number"),
        ("alice:sk:alice", "the balance is not a number"),  # balance forgotten, a key with a colon: no echo
        ("alice:sk-alice:-1", "balance must be in [0, 1e+09]"),
        ("alice:sk-alice:inf", "balance must be in [0, 1e+09]"),
        ("alice:sk-alice:nan", "balance must be in [0, 1e+09]"),
        ("a:k1:1,a:k2:1", "duplicate key names ['a']"),
        ("a:sk-alice:1,b:sk-alice:2", "keys 'a' and 'b' have the same secret"),
    ],
)
def test_malformed_keys_are_refused_without_echoing_the_secret(text, fragment):
    with pytest.raises(ConfigError, match="VL2V_API_KEYS") as raised:
        parse_api_keys(text, "VL2V_API_KEYS")
    assert fragment in str(raised.value)
    secret = text.split(",")[0].split(":", 1)[1].rsplit(":", 1)[0]
    assert secret not in str(raised.value) and "sk" not in str(raised.value).replace("keys", "")


def test_two_names_with_one_secret_across_env_and_file_are_refused(tmp_path):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("bob:sk-shared:2\n")
    keys_file.chmod(0o600)
    settings = Settings(_env_file=None, api_keys="alice:sk-shared:1", keys_file=keys_file)
    with pytest.raises(ConfigError, match="keys 'alice' and 'bob' have the same secret") as raised:
        settings.load_api_keys()
    assert "sk-shared" not in str(raised.value)


def test_a_keys_file_others_can_read_gets_a_warning(tmp_path, caplog):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("bob:sk-bob:2\n")
    keys_file.chmod(0o600)
    Settings(_env_file=None, keys_file=keys_file).load_api_keys()
    assert "readable by other users" not in caplog.text
    keys_file.chmod(0o644)
    Settings(_env_file=None, keys_file=keys_file).load_api_keys()
    assert f"keys file {keys_file} is readable by other users (mode 0o644); make it owner-only" in caplog.text
    assert "sk-bob" not in caplog.text


def test_keys_file_and_env_combine(tmp_path):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("bob:sk-bob:2\n")
    settings = Settings(_env_file=None, api_keys="alice:sk-a:1", keys_file=keys_file)
    assert [k.name for k in settings.load_api_keys()] == ["alice", "bob"]


def test_settings_read_vl2v_environment_variables(monkeypatch):
    monkeypatch.setenv("VL2V_PORT", "9123")
    monkeypatch.setenv("VL2V_PRICE_PER_IMAGE", "0.5")
    monkeypatch.setenv("VL2V_PRETRAINED", "")
    settings = Settings(_env_file=None)
    assert (settings.port, settings.price_per_image, settings.pretrained) == (9123, 0.5, None)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"precision": "bf16", "device": "cpu"}, "precision"),
        ({"port": 70000}, "port"),
        ({"price_per_image": -1}, "price_per_image"),
        ({"price_per_image": float("inf")}, "price_per_image"),
        ({"price_per_1k_tokens": float("nan")}, "price_per_1k_tokens"),
        ({"body_timeout_s": float("inf")}, "body_timeout_s"),
        ({"keys_file": "/nonexistent/keys"}, "keys_file"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_values_name_the_setting(values, field):
    with pytest.raises(ValidationError, match=field):
        Settings(_env_file=None, **values)
