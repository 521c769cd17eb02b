"""Every error the service answers: the status, the one envelope, the item it names. Never a 500."""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib

import pytest
import requests
from PIL import Image

from common.schema import image_data_url
from teacher_service.runtime import load_encoder

from ..conftest import run_service
from .test_api_contract import embed, image


def assert_error(response: requests.Response, status: int, code: str, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    assert error["message"]
    assert response.headers["x-request-id"].startswith("req_")
    return error


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring width x height, with one tiny compressed row: a bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("name", "item", "code"),
    [
        ("corrupt", lambda jpg: image(b"\xff\xd8\xff" + bytes(range(256)) * 4), "invalid_input"),
        ("truncated", lambda jpg: image(jpg[: len(jpg) // 3]), "invalid_input"),
        ("empty", lambda jpg: {"type": "image", "image": "data:image/jpeg;base64,"}, "invalid_input"),
        ("not an image", lambda jpg: image(b"%PDF-1.4 not an image at all"), "invalid_input"),
        ("bomb", lambda jpg: image(png_header_only(30_000, 30_000), "image/png"), "image_too_many_pixels"),
        ("sliver", lambda jpg: image(png_header_only(100_000, 1), "image/png"), "invalid_input"),
        (
            "bad base64",
            lambda jpg: {"type": "image", "image": "data:image/jpeg;base64,@@@@"},
            "invalid_input",
        ),
        (
            "not a data URL",
            lambda jpg: {"type": "image", "image": "https://example.com/a.jpg"},
            "invalid_input",
        ),
        ("wrong mime", lambda jpg: image(jpg, "text/plain"), "invalid_input"),
        ("empty text", lambda jpg: "   ", "invalid_input"),
        ("text too long", lambda jpg: "dog " * 100, "text_too_long"),
    ],
)
def test_a_bad_item_is_a_400_naming_it_and_nothing_is_charged(service, jpeg_bytes, name, item, code):
    before = service.state.store.ledger()
    response = embed(service, ["a dog", image(jpeg_bytes[0]), item(jpeg_bytes[0])])
    error = assert_error(response, 400, code, "input[2]")
    assert error["type"] == "invalid_request_error"
    assert service.state.store.ledger() == before


def test_a_truncated_png_is_refused(service, png_bytes):
    assert_error(embed(service, [image(png_bytes[:200], "image/png")]), 400, "invalid_input", "input[0]")


def test_an_empty_pixel_grid_is_refused(service):
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    zero = buffer.getvalue().replace(struct.pack(">II", 1, 1), struct.pack(">II", 0, 1), 1)
    assert_error(embed(service, [image(zero, "image/png")]), 400, "invalid_input", "input[0]")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "vl2v-tiny", "input": [1, 2, 3]}, "input[0]"),
        ({"model": "vl2v-tiny", "input": [{"type": "video", "video": "x"}]}, "input[0]"),
        ({"model": "vl2v-tiny", "input": [{"type": "image"}]}, "input[0].image"),
        ({"model": "vl2v-tiny", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "vl2v-tiny"}, "input"),
        ({"model": 7, "input": "x"}, "model"),
        ({"model": "vl2v-tiny", "input": "x", "surprise": True}, "surprise"),
    ],
)
def test_wrong_json_types_are_a_400_naming_the_field(service, body, param):
    response = service.session().post(f"{service.url}/v1/embeddings", json=body, timeout=10)
    assert_error(response, 400, "invalid_request", param)


def test_malformed_json_is_a_400(service):
    response = service.session().post(
        f"{service.url}/v1/embeddings",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert_error(response, 400, "invalid_json")


def test_an_empty_input_list_and_too_many_inputs_are_400(make_settings):
    with run_service(make_settings(max_inputs=3)) as service:
        assert_error(embed(service, []), 400, "invalid_request", "input")
        assert_error(embed(service, ["a"] * 4), 400, "too_many_inputs", "input")


def test_wrong_dimensions_and_unknown_model_are_refused(service):
    assert_error(embed(service, ["a"], dimensions=16), 400, "invalid_request", "dimensions")
    response = service.session().post(f"{service.url}/v1/embeddings", json={"model": "gpt-9", "input": "a"}, timeout=10)
    assert_error(response, 404, "model_not_found", "model")


@pytest.mark.parametrize("header", [None, "Bearer sk-wrong", "Basic c2stYWxpY2Utc2VjcmV0", "Bearer", "sk-alice-secret"])
def test_missing_malformed_or_wrong_keys_are_401(service, header):
    headers = {"Authorization": header} if header else {}
    for method, path in [("post", "/v1/embeddings"), ("get", "/v1/usage"), ("get", "/v1/models")]:
        response = requests.request(
            method, service.url + path, json={"model": "vl2v-tiny", "input": "a"}, headers=headers, timeout=10
        )
        error = assert_error(response, 401, "invalid_api_key")
        assert error["type"] == "authentication_error"


def test_an_exhausted_balance_is_402_without_retry_and_without_charge(service, jpeg_bytes):
    # bob has 0.0005: five images at 0.0001 fit, the sixth does not.
    assert embed(service, [image(b) for b in jpeg_bytes[:5]], key="sk-bob-secret").status_code == 200
    response = embed(service, [image(jpeg_bytes[5])], key="sk-bob-secret")
    assert_error(response, 402, "insufficient_quota")
    assert response.headers["x-should-retry"] == "false"
    usage = service.session("sk-bob-secret").get(f"{service.url}/v1/usage", timeout=10).json()
    assert usage["balance"] == 0 and usage["images"] == 5 and usage["requests"] == 1


def test_an_oversized_body_is_413_whether_declared_or_streamed(make_settings):
    with run_service(make_settings(max_request_bytes=4096)) as service:
        big = ["x" * 3000, "y" * 3000]
        assert_error(embed(service, big), 413, "request_too_large")

        def chunks():  # no Content-Length: chunked transfer encoding
            yield b'{"model": "vl2v-tiny", "input": ["'
            for _ in range(10):
                yield b"z" * 1000
            yield b'"]}'

        response = service.session().post(
            f"{service.url}/v1/embeddings",
            data=chunks(),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert_error(response, 413, "request_too_large")


def test_an_image_over_the_byte_cap_is_413_naming_it(make_settings, jpeg_bytes):
    with run_service(make_settings(max_image_bytes=1000)) as service:
        assert_error(embed(service, ["a", image(jpeg_bytes[0])]), 413, "image_too_large", "input[1]")


def test_rate_limit_is_429_with_retry_after_in_seconds_and_ms(make_settings, jpeg_bytes):
    with run_service(make_settings(rate_limit_requests=2)) as service:
        first = embed(service, ["a"])
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert embed(service, ["b"]).status_code == 200
        response = embed(service, ["c"])
        error = assert_error(response, 429, "rate_limit_exceeded")
        assert error["type"] == "rate_limit_error"
        assert int(response.headers["retry-after"]) >= 1
        assert 0 < int(response.headers["retry-after-ms"]) <= 30_000
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
        assert embed(service, ["c"], key="sk-bob-secret").status_code == 200  # limits are per key


def test_images_per_minute_limit_counts_images(make_settings, jpeg_bytes):
    with run_service(make_settings(rate_limit_images=3)) as service:
        assert embed(service, [image(b) for b in jpeg_bytes[:2]]).status_code == 200
        assert_error(embed(service, [image(b) for b in jpeg_bytes[2:4]]), 429, "rate_limit_exceeded")
        assert_error(embed(service, [image(b) for b in jpeg_bytes[:4]]), 400, "invalid_request", "input")


def test_requests_before_the_model_is_loaded_are_503(make_settings):
    release = threading.Event()

    def slow_factory(settings):
        release.wait(30)
        return load_encoder(settings)

    with run_service(make_settings(), slow_factory, wait_ready=False) as service:
        assert_error(service.session().get(f"{service.url}/ready", timeout=10), 503, "model_not_ready")
        response = embed(service, ["a"])
        assert_error(response, 503, "model_not_ready")
        assert response.headers["retry-after"]
        assert service.session().get(f"{service.url}/health", timeout=10).json()["model"] == "loading"
        release.set()


def test_a_model_that_cannot_load_keeps_answering_503_with_the_reason(make_settings, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    with run_service(make_settings(pretrained=str(broken)), wait_ready=False) as service:
        deadline = time.monotonic() + 30
        while service.session().get(f"{service.url}/health", timeout=10).json()["model"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        error = assert_error(service.session().get(f"{service.url}/ready", timeout=10), 503, "model_not_ready")
        assert "failed to load" in error["message"]


def test_unknown_routes_and_methods_use_the_envelope(service):
    assert_error(service.session().get(f"{service.url}/v2/nothing", timeout=10), 404, "not_found")
    assert_error(service.session().get(f"{service.url}/v1/embeddings", timeout=10), 405, "method_not_allowed")


def test_a_data_url_whose_mime_type_is_not_the_decoded_format_is_a_400(service, png_bytes, jpeg_bytes):
    before = service.state.store.ledger()
    error = assert_error(embed(service, [image(jpeg_bytes[0]), image(png_bytes, "image/jpeg")]), 400, "invalid_input")
    assert error["param"] == "input[1]" and "image/jpeg" in error["message"] and "PNG" in error["message"]
    assert embed(service, [image(png_bytes, "image/png")]).status_code == 200
    assert embed(service, [image(jpeg_bytes[0], "image/jpg")]).status_code == 200  # an alias of image/jpeg
    assert len(service.state.store.ledger()) == len(before) + 2
    garbage = {"type": "image", "image": "data:image/png;base64," + base64.b64encode(b"\0" * 64).decode()}
    assert_error(embed(service, [garbage]), 400, "invalid_input", "input[0]")


def test_data_url_helper_round_trips(jpeg_bytes):
    url = image_data_url(jpeg_bytes[0])
    assert base64.b64decode(url.split(",", 1)[1]) == jpeg_bytes[0]
