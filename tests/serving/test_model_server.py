"""End-to-end tests of the local model server, over plain HTTP and the official gRPC stubs.

Every request here is one a client of real TF Serving would send; the expected codes and
messages are TF Serving's.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import re
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.client import ModelClient, ModelServerError
from shoprec import config
from tests.serving import toy_models
from tests.serving.conftest import (
    BATCH_SIZE,
    MAX_REQUEST_BYTES,
    ServerProcess,
    ToyWorld,
)

pytestmark = pytest.mark.timeout(300)

USERS = ["u1", "u2", "nobody"]


# --- helpers -------------------------------------------------------------------------------------


class GrpcApi:
    """The official stubs on one channel."""

    def __init__(self, server: ServerProcess) -> None:
        self.channel = grpc.insecure_channel(server.grpc_target)
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def predict(
        self,
        model: str,
        inputs: dict[str, object],
        signature: str = "",
        version: int | None = None,
        label: str | None = None,
    ) -> predict_pb2.PredictResponse:
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model, signature_name=signature))
        if version is not None:
            request.model_spec.version.value = version
        if label is not None:
            request.model_spec.version_label = label
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        return self.prediction.Predict(request, timeout=10)

    def status(self, model: str, version: int | None = None) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=model))
        if version is not None:
            request.model_spec.version.value = version
        return self.models.GetModelStatus(request, timeout=10)


def outputs_of(response: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def rest_predict(server: ServerProcess, path: str, body: dict) -> requests.Response:
    return requests.post(f"{server.rest_url}/v1/models/{path}:predict", json=body, timeout=10)


def rest_status(server: ServerProcess, path: str) -> requests.Response:
    return requests.get(f"{server.rest_url}/v1/models/{path}", timeout=10)


def grpc_error(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def states(server: ServerProcess, model: str) -> dict[int, tuple[str, str]]:
    reply = rest_status(server, model).json()
    return {int(entry["version"]): (entry["state"], entry["status"]["error_code"]) for entry in reply["model_version_status"]}


def version_of_items(item_ids: object) -> int:
    """Reads the version that answered from the toy item ids ("v2_item5" -> 2)."""
    first = np.asarray(item_ids).reshape(-1)[0]
    text = first.decode() if isinstance(first, bytes) else str(first)
    return int(re.match(r"v(\d+)_", text).group(1))


@pytest.fixture(scope="module")
def config_server(toy_world: ToyWorld) -> ServerProcess:
    return toy_world.config_server


@pytest.fixture(scope="module")
def shoprec_server(toy_world: ToyWorld) -> ServerProcess:
    return toy_world.shoprec_server


@pytest.fixture(scope="module")
def grpc_api(config_server: ServerProcess) -> Iterator[GrpcApi]:
    api = GrpcApi(config_server)
    yield api
    api.channel.close()


# --- protocol -------------------------------------------------------------------------------------


def test_status_json_is_tf_servings(config_server: ServerProcess) -> None:
    reply = rest_status(config_server, "toy")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert rest_status(config_server, "toy/versions/1").json() == reply.json()


def test_rest_and_grpc_return_identical_results(config_server: ServerProcess, grpc_api: GrpcApi) -> None:
    grpc_outputs = outputs_of(grpc_api.predict("toy", {"user_id": USERS}))
    row = rest_predict(config_server, "toy", {"instances": USERS}).json()["predictions"]
    row_as_objects = rest_predict(config_server, "toy", {"instances": [{"user_id": u} for u in USERS]}).json()
    columnar = rest_predict(config_server, "toy", {"inputs": {"user_id": USERS}}).json()["outputs"]

    assert row == row_as_objects["predictions"]
    assert [r["item_ids"] for r in row] == columnar["item_ids"]
    assert columnar["item_ids"] == grpc_outputs["item_ids"].astype(bytes).astype(str).tolist()
    # Float32 values are written with the fewest digits that read back bitwise equal.
    np.testing.assert_array_equal(np.asarray(columnar["scores"], dtype=np.float32), grpc_outputs["scores"])
    np.testing.assert_array_equal(np.asarray([r["scores"] for r in row], dtype=np.float32), grpc_outputs["scores"])
    assert grpc_outputs["item_ids"].shape == (3, toy_models.TOP_K)


def test_signatures_inputs_and_single_output_shapes(config_server: ServerProcess, grpc_api: GrpcApi) -> None:
    history = [["v1_item2", "v1_item5"], ["v1_item0", "unknown"]]
    body = {"signature_name": "with_history", "inputs": {"user_id": ["u1", "u2"], "history": history}}
    rest = rest_predict(config_server, "toy", body).json()["outputs"]
    grpc_outputs = outputs_of(grpc_api.predict("toy", {"user_id": ["u1", "u2"], "history": history}, "with_history"))
    assert rest["item_ids"] == grpc_outputs["item_ids"].astype(bytes).astype(str).tolist()
    assert set(rest["item_ids"][0][:2]) == {"v1_item2", "v1_item5"}  # the boosted history items

    # One output: row format collapses to the value per row, columnar to the tensor itself.
    embedding = outputs_of(grpc_api.predict("toy", {"user_id": ["u1", "u2"]}, "user_embedding"))["embedding"]
    row = rest_predict(config_server, "toy", {"signature_name": "user_embedding", "instances": ["u1", "u2"]})
    assert row.json() == {"predictions": np.asarray(row.json()["predictions"]).tolist()}
    np.testing.assert_array_equal(np.asarray(row.json()["predictions"], dtype=np.float32), embedding)
    columnar = rest_predict(config_server, "toy", {"signature_name": "user_embedding", "inputs": ["u1", "u2"]})
    assert columnar.json()["outputs"] == row.json()["predictions"]

    # A float input: 2x + version.
    scaled = rest_predict(config_server, "toy", {"signature_name": "scale", "instances": [[1.0, 2.5], [0, -1]]})
    assert scaled.json() == {"predictions": [[3.0, 6.0], [1.0, -1.0]]}


def test_binary_strings_travel_as_b64(config_server: ServerProcess, grpc_api: GrpcApi) -> None:
    raw = [b"\x00\xffbinary", "text".encode()]
    body = {"signature_name": "echo_bytes", "instances": [{"b64": base64.b64encode(v).decode()} for v in raw]}
    reply = rest_predict(config_server, "toy", body).json()
    # An output named *_bytes is always written as {"b64": ...}.
    assert [base64.b64decode(item["b64"]) for item in reply["predictions"]] == raw
    assert outputs_of(grpc_api.predict("toy", {"data": raw}, "echo_bytes"))["data_bytes"].tolist() == raw


def test_metadata_matches_over_both_protocols(config_server: ServerProcess, grpc_api: GrpcApi) -> None:
    rest = requests.get(f"{config_server.rest_url}/v1/models/toy/metadata", timeout=10).json()
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name="toy"), metadata_field=["signature_def"]
    )
    reply = grpc_api.prediction.GetModelMetadata(request, timeout=10)
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    assert reply.metadata["signature_def"].Unpack(signature_def_map)
    assert rest["model_spec"] == {"name": "toy", "signature_name": "", "version": "1"}
    assert rest["metadata"]["signature_def"] == json_format.MessageToDict(
        signature_def_map, including_default_value_fields=True, preserving_proto_field_name=True
    )
    signatures = rest["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "with_history", "__saved_model_init_op"} <= set(signatures)
    history = signatures["with_history"]["inputs"]["history"]
    assert history["dtype"] == "DT_STRING"
    assert [dim["size"] for dim in history["tensor_shape"]["dim"]] == ["-1", "-1"]
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert reply.model_spec.version.value == 1


def test_grpc_reply_names_version_and_signature(grpc_api: GrpcApi) -> None:
    reply = grpc_api.predict("toy", {"user_id": ["u1"]})
    assert (reply.model_spec.name, reply.model_spec.version.value) == ("toy", 1)
    assert reply.model_spec.signature_name == "serving_default"
    filtered = grpc_api.prediction.Predict(
        predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name="toy"),
            inputs={"user_id": tf.make_tensor_proto(["u1"])},
            output_filter=["scores"],
        ),
        timeout=10,
    )
    assert list(filtered.outputs) == ["scores"]


# --- errors ---------------------------------------------------------------------------------------


REST_ERRORS = [
    # (path, body, HTTP status, exact message or pattern)
    ("nope", {"instances": ["u1"]}, 404, "Servable not found for request: Latest(nope)"),
    ("toy/versions/9", {"instances": ["u1"]}, 404, "Servable not found for request: Specific(toy, 9)"),
    ("toy/labels/nope", {"instances": ["u1"]}, 400, "Unrecognized servable version label: nope"),
    ("toy", {"signature_name": "nope", "instances": ["u1"]}, 400, 'Serving signature name: "nope" not found in signature def'),
    (
        "toy",
        {"signature_name": "scale", "instances": [["a", "b"]]},
        400,
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: \"a\" "
        "Type: String is not of expected type: float",
    ),
    (
        "toy",
        {"signature_name": "with_history", "inputs": {"user_id": ["u1"]}},
        400,
        "Missing named input: history in 'inputs' object.",
    ),
    (
        "toy",
        {"signature_name": "with_history", "instances": [{"user_id": "u1"}]},
        400,
        "Failed to process element: 0 of 'instances' list. JSON object: {\"user_id\": \"u1\"} must only "
        "have keys: history,user_id",
    ),
    (
        "toy",
        {"signature_name": "scale", "instances": [[1.0, 2.0], [3.0]]},
        400,
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 1",
    ),
    ("toy", {"user_id": ["u1"]}, 400, "Missing 'inputs' or 'instances' key"),
    ("toy", {"signature_name": 7, "instances": ["u1"]}, 400, re.compile(r"'signature_name' key must be a string value\.$")),
]


@pytest.mark.parametrize(("path", "body", "http_status", "message"), REST_ERRORS)
def test_rest_errors_have_tf_serving_codes_and_messages(
    config_server: ServerProcess, path: str, body: dict, http_status: int, message: str | re.Pattern
) -> None:
    reply = rest_predict(config_server, path, body)
    assert reply.status_code == http_status
    error = reply.json()["error"]
    assert set(reply.json()) == {"error"}
    if isinstance(message, re.Pattern):
        assert message.search(error), error
    else:
        assert error == message


def test_rest_malformed_requests(config_server: ServerProcess) -> None:
    url = f"{config_server.rest_url}/v1/models/toy:predict"
    reply = requests.post(url, data=b'{"instances": [', timeout=10)
    assert reply.status_code == 400
    assert reply.json()["error"].startswith("JSON Parse error: ")
    assert re.search(r"at offset: \d+$", reply.json()["error"])
    assert requests.post(url, data=b"", timeout=10).json() == {"error": "JSON Parse error: The document is empty"}
    assert requests.post(url, data=b"[1]", timeout=10).json() == {"error": "JSON Value: [1] Is not object"}
    unknown_status = rest_status(config_server, "nope")
    assert (unknown_status.status_code, unknown_status.json()) == (404, {"error": "Could not find any versions of model nope"})
    unknown_version = rest_status(config_server, "toy/versions/5")
    assert (unknown_version.status_code, unknown_version.json()) == (404, {"error": "Could not find version 5 of model toy"})
    classify = requests.post(f"{config_server.rest_url}/v1/models/toy:classify", json={}, timeout=10)
    assert classify.status_code == 501
    wrong_method = requests.put(url, json={}, timeout=10)
    assert (wrong_method.status_code, wrong_method.json()) == (400, {"error": "Malformed request: PUT /v1/models/toy:predict"})


def test_grpc_errors_have_tf_serving_codes_and_messages(grpc_api: GrpcApi) -> None:
    cases = [
        (lambda: grpc_api.predict("nope", {"user_id": ["u1"]}), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
        (
            lambda: grpc_api.predict("toy", {"user_id": ["u1"]}, version=9),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(toy, 9)",
        ),
        (
            lambda: grpc_api.predict("toy", {"user_id": ["u1"]}, label="nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: nope",
        ),
        (
            lambda: grpc_api.predict("toy", {"user_id": ["u1"]}, "nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (
            lambda: grpc_api.predict("toy", {"user_id": ["u1"]}, "with_history"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input size does not match signature: 1!=2 len({user_id}) != len({history,user_id}). "
            "Sent extra: {}. Missing but required: {history}.",
        ),
        (
            lambda: grpc_api.predict("toy", {"x": [["a", "b"]]}, "scale"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Expects arg[0] to be float but string is provided (input 'x' of signature 'scale')",
        ),
        (
            lambda: grpc_api.predict("toy", {"x": np.ones([2, 3], np.float32)}, "scale"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'x' of signature 'scale' must have shape [-1,2] (-1 = any size) but has shape [2,3]",
        ),
        (lambda: grpc_api.status("nope"), grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope"),
        (lambda: grpc_api.status("toy", 5), grpc.StatusCode.NOT_FOUND, "Could not find version 5 of model toy"),
    ]
    for call, code, message in cases:
        assert grpc_error(call) == (code, message)


def test_oversized_requests_are_refused(config_server: ServerProcess, grpc_api: GrpcApi) -> None:
    big_ids = ["u" * 1000] * (2 * MAX_REQUEST_BYTES // 1000)
    reply = rest_predict(config_server, "toy", {"instances": big_ids})
    assert reply.status_code == 413
    assert re.fullmatch(
        rf"Request body of \d+ bytes is larger than the limit of {MAX_REQUEST_BYTES} bytes \(--max_request_bytes\)",
        reply.json()["error"],
    )
    code, message = grpc_error(lambda: grpc_api.predict("toy", {"user_id": big_ids}))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in message
    assert rest_predict(config_server, "toy", {"instances": ["u1"]}).status_code == 200  # still serving


# --- versions, labels, warmup, reload ---------------------------------------------------------------


def test_version_policies_and_labels(config_server: ServerProcess, grpc_api: GrpcApi) -> None:
    # specific {1, 2}: version 3 is on disk but never aspired, so it is not listed.
    assert states(config_server, "toy_versions") == {2: ("AVAILABLE", "OK"), 1: ("AVAILABLE", "OK")}
    latest = rest_predict(config_server, "toy_versions", {"instances": ["u1"]}).json()["predictions"][0]
    assert version_of_items(latest["item_ids"]) == 2
    for label, version in (("stable", 1), ("canary", 2)):
        rest = rest_predict(config_server, f"toy_versions/labels/{label}", {"instances": ["u1"]}).json()
        assert version_of_items(rest["predictions"][0]["item_ids"]) == version
        reply = grpc_api.predict("toy_versions", {"user_id": ["u1"]}, label=label)
        assert reply.model_spec.version.value == version
    by_number = rest_predict(config_server, "toy_versions/versions/1", {"instances": ["u1"]}).json()
    assert version_of_items(by_number["predictions"][0]["item_ids"]) == 1

    # latest { num_versions: 2 }: the two highest of 1, 2, 3.
    assert states(config_server, "toy_latest2") == {3: ("AVAILABLE", "OK"), 2: ("AVAILABLE", "OK")}
    old = rest_predict(config_server, "toy_latest2/versions/1", {"instances": ["u1"]})
    assert (old.status_code, old.json()["error"]) == (404, "Servable not found for request: Specific(toy_latest2, 1)")


def test_warmup_replayed_before_serving_and_failed_warmup_blocks_version(config_server: ServerProcess) -> None:
    log = config_server.log()
    assert re.search(r"Finished reading warmup data for model at \S+/toy/1/assets\.extra/tf_serving_warmup_requests\. "
                     r"Number of warmup records read: 2\.", log)
    status = rest_status(config_server, "toy_bad_warmup").json()["model_version_status"]
    assert len(status) == 1
    assert status[0]["state"] == "END"
    assert status[0]["status"]["error_code"] == "INVALID_ARGUMENT"
    assert status[0]["status"]["error_message"].startswith("Warmup record 1 failed: input size does not match signature")
    reply = rest_predict(config_server, "toy_bad_warmup", {"instances": ["u1"]})
    assert (reply.status_code, reply.json()["error"]) == (404, "Servable not found for request: Latest(toy_bad_warmup)")


def test_hot_reload_under_load_never_fails_and_never_serves_a_broken_version(
    toy_world: ToyWorld, config_server: ServerProcess, grpc_api: GrpcApi
) -> None:
    base_path = toy_world.root / "models" / "reload"
    stop = threading.Event()
    failures: list[str] = []
    seen: list[tuple[float, int]] = []  # (time, version that answered)
    lock = threading.Lock()

    def rest_loop() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                reply = session.post(
                    f"{config_server.rest_url}/v1/models/toy_reload:predict", json={"instances": ["u1", "u2"]}, timeout=10
                )
                with lock:
                    if reply.status_code != 200:
                        failures.append(f"REST {reply.status_code} {reply.text}")
                    else:
                        seen.append((time.monotonic(), version_of_items(reply.json()["predictions"][0]["item_ids"])))

    def grpc_loop() -> None:
        while not stop.is_set():
            try:
                reply = grpc_api.predict("toy_reload", {"user_id": ["u1", "u2"]})
            except grpc.RpcError as err:
                with lock:
                    failures.append(f"gRPC {err.code()} {err.details()}")
            else:
                version = reply.model_spec.version.value
                assert version_of_items(tf.make_ndarray(reply.outputs["item_ids"])) == version
                with lock:
                    seen.append((time.monotonic(), version))

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        loops = [pool.submit(rest_loop), pool.submit(grpc_loop)]
        time.sleep(1.5)
        toy_models.publish_version(str(base_path), 2, toy_models.copy_of(str(toy_world.library[2])))
        wait_for(lambda: states(config_server, "toy_reload").get(1, ("",))[0] == "END", what="version 2 to replace 1")
        time.sleep(1.0)
        toy_models.publish_version(str(base_path), 3, toy_models.write_garbage_saved_model)
        wait_for(lambda: states(config_server, "toy_reload").get(3, ("",))[0] == "END", what="version 3 to fail")
        time.sleep(max(0.0, 10.0 - (time.monotonic() - started)))
        stop.set()
        for loop in loops:
            loop.result()

    assert failures == []
    versions = [version for _, version in seen]
    assert set(versions) == {1, 2}
    assert 3 not in versions
    assert versions[-10:] == [2] * 10
    assert len(seen) > 50
    status = rest_status(config_server, "toy_reload").json()["model_version_status"]
    assert [(s["version"], s["state"], s["status"]["error_code"]) for s in status] == [
        ("3", "END", "DATA_LOSS"),
        ("2", "AVAILABLE", "OK"),
        ("1", "END", "OK"),
    ]
    assert re.fullmatch(r"Can't parse \S+/reload/3/saved_model\.pb as binary proto: .+", status[0]["status"]["error_message"])
    log = config_server.log()
    loaded = log.index("Successfully loaded servable version {name: toy_reload version: 2}")
    assert loaded < log.index("Quiescing servable version {name: toy_reload version: 1}")
    assert "Loading servable: {name: toy_reload version: 3} failed: DATA_LOSS" in log


def test_config_file_reload_moves_labels_and_refuses_unavailable_versions(
    toy_world: ToyWorld, config_server: ServerProcess
) -> None:
    def stable_version() -> int:
        reply = rest_predict(config_server, "toy_versions/labels/stable", {"instances": ["u1"]}).json()
        return version_of_items(reply["predictions"][0]["item_ids"])

    try:
        toy_world.write_config(stable=2)
        wait_for(lambda: stable_version() == 2, what="stable -> 2")
        toy_world.write_config(stable=3)  # version 3 is not loaded under specific {1, 2}
        wait_for(
            lambda: "Request to assign label to version 3 of model toy_versions, which is not currently "
            "available for inference" in config_server.log(),
            what="the refused config",
        )
        assert stable_version() == 2
    finally:
        toy_world.write_config(stable=1)
        wait_for(lambda: stable_version() == 1, what="stable -> 1")


# --- concurrency, batching, metrics, client --------------------------------------------------------


def test_concurrent_requests_with_batching_match_unbatched_results(
    config_server: ServerProcess, shoprec_server: ServerProcess
) -> None:
    # shoprec_server serves toy version 2 with batching; config_server serves the same model as
    # toy_versions/versions/2 without it.
    users = [f"u{i % 5}" for i in range(24)]
    expected = {
        user: rest_predict(config_server, "toy_versions/versions/2", {"instances": [user]}).json()["predictions"][0]
        for user in set(users)
    }

    def ask(user: str) -> dict:
        reply = requests.post(
            f"{shoprec_server.rest_url}/v1/models/{config.MODEL_NAME}:predict", json={"instances": [user]}, timeout=10
        )
        assert reply.status_code == 200, reply.text
        return reply.json()["predictions"][0]

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, users))
    assert [a["item_ids"] for a in answers] == [expected[user]["item_ids"] for user in users]
    # A batched matmul may round the last bit differently from a one-row one.
    np.testing.assert_allclose(
        [a["scores"] for a in answers], [expected[user]["scores"] for user in users], rtol=1e-6
    )
    too_big = requests.post(
        f"{shoprec_server.rest_url}/v1/models/{config.MODEL_NAME}:predict",
        json={"instances": ["u1"] * (BATCH_SIZE + 1)},
        timeout=10,
    )
    assert (too_big.status_code, too_big.json()) == (
        400,
        {"error": f"Task size {BATCH_SIZE + 1} is larger than maximum input batch size {BATCH_SIZE}"},
    )


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text, value = line[len(name) + 1 :].rsplit("} ", 1)
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', label_text))
        if all(found.get(key) == wanted for key, wanted in labels.items()):
            total += float(value)
    return total


def test_prometheus_metrics_count_requests_errors_and_latency(config_server: ServerProcess, grpc_api: GrpcApi) -> None:
    url = f"{config_server.rest_url}/monitoring/prometheus/metrics"
    before = requests.get(url, timeout=10).text
    for _ in range(3):
        rest_predict(config_server, "toy", {"signature_name": "scale", "instances": [[1.0, 2.0]]})
    for _ in range(2):
        grpc_api.predict("toy", {"x": [[1.0, 2.0]]}, "scale")
    rest_predict(config_server, "nope", {"instances": ["u1"]})
    reply = requests.get(url, timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    after = reply.text

    def delta(name: str, **labels: str) -> float:
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    ok = {"model_name": "toy", "model_version": "1", "signature_name": "scale", "API": "predict", "status": "OK"}
    assert delta("model_server_requests_total", entrypoint="REST", **ok) == 3
    assert delta("model_server_requests_total", entrypoint="GRPC", **ok) == 2
    assert delta("model_server_request_errors_total", model_name="nope", entrypoint="REST", status="NOT_FOUND") == 1
    assert delta(":tensorflow:serving:request_count", model_name="nope", status="NOT_FOUND") == 1
    assert delta(":tensorflow:serving:request_latency_count", model_name="toy", API="predict", entrypoint="GRPC") == 2
    assert _metric(after, ":tensorflow:serving:request_latency_bucket", model_name="toy", API="predict", entrypoint="REST", le="+Inf") > 0
    assert _metric(after, ":tensorflow:cc:saved_model:load_attempt_count", status="success") >= 1
    assert "# TYPE :tensorflow:serving:request_latency histogram" in after
    assert re.search(r"serving\.requests\] REST predict model=toy version=1 signature=scale status=OK latency_ms=", config_server.log())
    assert re.search(r"serving\.requests\] REST predict model=nope .*status=NOT_FOUND .*error=", config_server.log())


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_model_client(shoprec_server: ServerProcess, protocol: str) -> None:
    address = shoprec_server.rest_url if protocol == "rest" else f"grpc://{shoprec_server.grpc_target}"
    with ModelClient(address, config.MODEL_NAME) as client:
        outputs = client.predict({"user_id": ["u1", "u2"]})
        assert outputs["item_ids"].dtype == object and outputs["item_ids"].shape == (2, toy_models.TOP_K)
        assert outputs["scores"].dtype == np.float32
        assert version_of_items(outputs["item_ids"]) == 2
        assert version_of_items(client.predict({"user_id": ["u1"]}, version=2)["item_ids"]) == 2
        scaled = client.predict({"x": [[1, 2]]}, signature_name="scale")  # ints cast to the signature's float
        np.testing.assert_array_equal(scaled["y"], np.asarray([[4.0, 6.0]], np.float32))
        echoed = client.predict({"data": [b"\x00\xff", "text"]}, signature_name="echo_bytes")["data_bytes"]
        assert echoed.tolist() == [b"\x00\xff", b"text"]
        assert [(s.version, s.state, s.error_code) for s in client.status()] == [(2, "AVAILABLE", "OK")]
        metadata = client.metadata()
        assert metadata.version == 2
        assert metadata.signatures["with_history"].inputs["history"].dtype == "DT_STRING"
        assert metadata.signatures["serving_default"].outputs["scores"].shape == (-1, toy_models.TOP_K)
        with pytest.raises(ModelServerError) as not_found:
            client.predict({"user_id": ["u1"]}, version=1)  # on disk, but not loaded under latest 1
        assert not_found.value.code.name == "NOT_FOUND"
        assert not_found.value.message == f"Servable not found for request: Specific({config.MODEL_NAME}, 1)"
        with pytest.raises(ModelServerError) as missing:
            client.predict({"user_id": ["u1"]}, signature_name="with_history")
        assert missing.value.code.name == "INVALID_ARGUMENT"
        assert "history" in missing.value.message


def test_rest_and_grpc_clients_agree(shoprec_server: ServerProcess) -> None:
    inputs = {"user_id": ["u1", "u3", "stranger"], "history": [["v2_item1"], ["v2_item6"], ["x"]]}
    with ModelClient(shoprec_server.rest_url, config.MODEL_NAME) as rest, ModelClient(f"grpc://{shoprec_server.grpc_target}", config.MODEL_NAME) as grpc_client:
        for signature in ("serving_default", "with_history", "user_embedding"):
            wanted = inputs if signature == "with_history" else {"user_id": inputs["user_id"]}
            rest_outputs = rest.predict(wanted, signature_name=signature)
            grpc_outputs = grpc_client.predict(wanted, signature_name=signature)
            assert rest_outputs.keys() == grpc_outputs.keys()
            for name in rest_outputs:
                assert rest_outputs[name].dtype == grpc_outputs[name].dtype
                np.testing.assert_array_equal(rest_outputs[name], grpc_outputs[name])


def test_client_reports_an_unreachable_server_as_unavailable() -> None:
    import portpicker

    port = portpicker.pick_unused_port()
    for address in (f"http://127.0.0.1:{port}", f"grpc://127.0.0.1:{port}"):
        with ModelClient(address, config.MODEL_NAME, timeout_seconds=2) as client, pytest.raises(ModelServerError) as caught:
            client.status()
        assert caught.value.code.name == "UNAVAILABLE"


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_model_client_predict_async_matches_predict(shoprec_server: ServerProcess, protocol: str) -> None:
    address = shoprec_server.rest_url if protocol == "rest" else f"grpc://{shoprec_server.grpc_target}"
    inputs = {"user_id": ["u1", "u3", "stranger"], "history": [["v2_item1"], ["v2_item6"], ["x"]]}

    async def concurrently(client: ModelClient) -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(client.predict_async(inputs, signature_name="with_history")
                                      for _ in range(8)))

    with ModelClient(address, config.MODEL_NAME) as client:
        expected = client.predict(inputs, signature_name="with_history")
    with ModelClient(address, config.MODEL_NAME) as client:  # a fresh client: the first call reads the metadata too
        answers = asyncio.run(concurrently(client))
        for outputs in answers:
            assert outputs.keys() == expected.keys()
            for name in expected:
                assert outputs[name].dtype == expected[name].dtype
                np.testing.assert_array_equal(outputs[name], expected[name])
        with pytest.raises(ModelServerError) as not_found:
            asyncio.run(client.predict_async({"user_id": ["u1"]}, version=1))
        assert not_found.value.code.name == "NOT_FOUND"
        assert not_found.value.message == f"Servable not found for request: Specific({config.MODEL_NAME}, 1)"
        with pytest.raises(ModelServerError) as missing:
            asyncio.run(client.predict_async({"user_id": ["u1"]}, signature_name="with_history"))
        assert missing.value.code.name == "INVALID_ARGUMENT"
        assert "history" in missing.value.message


def test_grpc_predict_async_cancelled_while_waiting_cancels_the_call(shoprec_server: ServerProcess) -> None:
    async def cancel_one(client: ModelClient) -> dict[str, np.ndarray]:
        task = asyncio.ensure_future(client.predict_async({"user_id": ["u1"]}))
        await asyncio.sleep(0)  # the call is in flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await client.predict_async({"user_id": ["u1"]})  # the client still works

    with ModelClient(f"grpc://{shoprec_server.grpc_target}", config.MODEL_NAME) as client:
        client.metadata()  # cached: the first await is the Predict call itself
        outputs = asyncio.run(cancel_one(client))
    assert version_of_items(outputs["item_ids"]) == 2
