"""Schemathesis fuzzes every operation of the live service through its own OpenAPI document, with valid and
invalid data, signed in and not: no 500, every status documented, every answer matching its schema, and the
service still healthy afterwards. Examples are bounded per operation and mode; the totals are asserted."""

from __future__ import annotations

import zlib
from collections import Counter

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from ..conftest import TINY

EXAMPLES = 250  # per operation and generation mode
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzz_operation(operation, mode: GenerationMode, service, seen: Counter) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        if isinstance(case.body, dict) and zlib.crc32(repr(case.body).encode()) % 2:
            case.body["model"] = TINY  # half the bodies name the served model, so they reach the inputs
        signed_in = zlib.crc32(repr((case.body, case.query, case.headers)).encode()) % 4 != 0
        headers = {"Authorization": "Bearer sk-alice-secret"} if signed_in else {}
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        seen[(f"{case.method} {case.path}", response.status_code)] += 1

    run()


def test_no_generated_request_makes_the_service_fail(service):
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    seen: Counter = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        # Invalid data needs something to be invalid: only a request body gives negative mode room to work.
        for mode in GenerationMode if operation.body else [GenerationMode.POSITIVE]:
            fuzz_operation(operation, mode, service, seen)
    assert requests.get(f"{service.url}/health", timeout=5).status_code == 200

    operations = {operation for operation, _ in seen}
    assert {"POST /v1/embeddings", "GET /v1/models", "GET /v1/usage", "GET /health", "GET /ready"} <= operations
    assert {200, 400, 401} <= {status for operation, status in seen if operation == "POST /v1/embeddings"}, seen
    print(f"fuzzed {sum(seen.values())} requests: {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= 900
