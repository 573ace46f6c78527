"""The model server's request metrics and request log (no server process needed)."""

import logging

import pytest

from serving.errors import Code
from serving.metrics import GRPC, RequestRecord, ServingMetrics


@pytest.mark.parametrize("log_successful", [False, True])
def test_failed_requests_are_always_logged_successful_ones_on_request(caplog, log_successful):
    metrics = ServingMetrics(log_successful_requests=log_successful)
    with caplog.at_level(logging.INFO, logger="serving.requests"):
        metrics.record_request(RequestRecord(GRPC, "predict", "m", "1", "serving_default"), Code.OK, 0.002)
        metrics.record_request(RequestRecord(GRPC, "predict", "nope"), Code.NOT_FOUND, 0.001, "no model")
    lines = [record.getMessage() for record in caplog.records]
    assert any("model=nope" in line and "status=NOT_FOUND" in line and "error='no model'" in line
               for line in lines)
    assert any("status=OK" in line for line in lines) is log_successful
    rendered = metrics.render()  # counted either way
    assert 'model_server_requests_total{model_name="m",model_version="1"' in rendered
    assert 'model_server_request_errors_total{model_name="nope"' in rendered
