"""A bounded schemathesis run against the service's own OpenAPI spec: the real app and its real
components (SQLite log, in-process store; no model server, so model routes degrade), called in
process over ASGI. 0 server errors, and every response conforms to the spec (status code,
content type, headers, body schema)."""

from __future__ import annotations

import time
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.service.conftest import TrainedRun
from tests.service.test_robustness import make_client

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
MAX_EXAMPLES = 60  # per operation
TIME_LIMIT_S = 90


@pytest.mark.timeout(600)
def test_schemathesis_finds_no_server_error_and_no_nonconforming_response(trained_run: TrainedRun,
                                                                          tmp_path: Path) -> None:
    with make_client(trained_run, tmp_path, rate_limit_per_second=1e6, rate_limit_burst=10**6) as client:
        schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
        began = time.monotonic()
        calls: dict[str, int] = {}
        for result in schema.get_all_operations():
            operation = result.ok()

            @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                                 suppress_health_check=list(HealthCheck))
            @hypothesis.given(case=operation.as_strategy())
            def run(case: schemathesis.Case) -> None:
                if time.monotonic() - began > TIME_LIMIT_S:
                    return
                response = case.call()
                case.validate_response(response, checks=CHECKS)
                key = f"{operation.label} {response.status_code}"
                calls[key] = calls.get(key, 0) + 1

            run()
        print(calls)
        assert {key.rsplit(" ", 1)[0] for key in calls} == {"GET /healthz", "GET /metrics", "POST /events",
                                                            "POST /recommend"}
        assert not [key for key in calls if key.endswith(tuple(f" {status}" for status in range(500, 600)))]
        assert sum(calls.values()) >= 100
