"""Unit tests of the pieces under the server: JSON and TensorProto codecs, configs, batching, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import portpicker
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import dtypes, grpc_api, json_codec, model_config, model_server, tensor_codec
from serving.errors import Code, ModelServerError
from serving.model_config import (
    BatchingParameters,
    VersionPolicy,
    configs_from_proto,
    parse_batching_parameters,
)
from serving.predictors import BatchingPredictor, DirectPredictor, ServingLoop
from serving.servable import PredictResult
from tests.serving.conftest import REPO_ROOT

FLOAT = dtypes.BY_ENUM_NAME["DT_FLOAT"]
INT32 = dtypes.BY_ENUM_NAME["DT_INT32"]
STRING = dtypes.DT_STRING


def _error(call) -> ModelServerError:
    with pytest.raises(ModelServerError) as caught:
        call()
    return caught.value


# --- JSON -----------------------------------------------------------------------------------------


def test_row_format_batches_named_inputs() -> None:
    document = {"instances": [{"user_id": "u1", "history": ["a", "b"]}, {"user_id": "u2", "history": ["c", "d"]}]}
    tensors, request_format = json_codec.tensors_from_document(document, {"user_id": STRING, "history": STRING})
    assert request_format is json_codec.RequestFormat.ROW
    assert tensors["user_id"].tolist() == [b"u1", b"u2"]
    assert tensors["history"].shape == (2, 2)


def test_columnar_format_takes_a_bare_value_for_one_input() -> None:
    tensors, request_format = json_codec.tensors_from_document({"inputs": [[1, 2.5]]}, {"x": FLOAT})
    assert request_format is json_codec.RequestFormat.COLUMNAR
    assert tensors["x"].dtype == np.float32 and tensors["x"].tolist() == [[1.0, 2.5]]


@pytest.mark.parametrize(
    ("value", "dtype", "message"),
    [
        (16777217, FLOAT, "Cannot convert JSON value: 16777217 to float without loss of precision."),
        (1.5, INT32, "JSON Value: 1.5 Type: Number is not of expected type: int32"),
        (2**31, INT32, "JSON Value: 2147483648 Type: Number is not of expected type: int32"),
        (True, INT32, "JSON Value: true Type: True is not of expected type: int32"),
        ({"b64": "%%%"}, STRING, "Unable to base64 decode"),
        ({"x": 1}, STRING, 'JSON Value: {"x": 1} not formatted correctly for base64 data'),
        ([[1, 2], [3]], INT32, "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        ([[1, 2], 3], INT32, "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
    ],
)
def test_json_values_are_checked_as_tf_serving_checks_them(value: object, dtype: dtypes.DType, message: str) -> None:
    error = _error(lambda: json_codec.array_from_json(value, dtype))
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, message)


def test_b64_strings_and_bytes_outputs() -> None:
    array = json_codec.array_from_json([{"b64": "AP8="}, "text"], STRING)
    assert array.tolist() == [b"\x00\xff", b"text"]
    reply = json_codec.response_document({"data_bytes": array, "text": np.array([b"a", b"\xff"], dtype=object)}, json_codec.RequestFormat.COLUMNAR)
    assert reply == {"outputs": {"data_bytes": [{"b64": "AP8="}, {"b64": "dGV4dA=="}], "text": ["a", {"b64": "/w=="}]}}


def test_row_replies_collapse_one_output_and_need_one_batch_size() -> None:
    row = json_codec.RequestFormat.ROW
    assert json_codec.response_document({"y": np.array([[1.0], [2.0]], np.float32)}, row) == {"predictions": [[1.0], [2.0]]}
    two = {"a": np.zeros([2], np.int64), "b": np.array([True, False])}
    assert json_codec.response_document(two, row) == {"predictions": [{"a": 0, "b": True}, {"a": 0, "b": False}]}
    error = _error(lambda: json_codec.response_document({"a": np.zeros([2]), "b": np.zeros([3])}, row))
    assert error.message == "Tensor name: b has inconsistent batch size: 3 expecting: 2"
    error = _error(lambda: json_codec.response_document({"a": np.float32(1)}, row))
    assert error.message == "Tensor name: a has no shape information "


def test_float32_json_is_short_and_exact() -> None:
    values = np.array([0.1, 1 / 3, 16777216, np.nan, -np.inf, 1e-40], dtype=np.float32)
    text = json_codec.dumps({"outputs": json_codec.array_to_json(values)}).decode()
    assert text.startswith('{"outputs": [0.1, 0.33333334, 16777216.0, NaN, -Infinity')
    back = json_codec.array_from_json(json.loads(text)["outputs"], FLOAT)
    np.testing.assert_array_equal(back, values)


def test_request_document_errors() -> None:
    assert _error(lambda: json_codec.parse_document(b"")).message == "JSON Parse error: The document is empty"
    assert _error(lambda: json_codec.parse_document(b'{"a": ')).message.startswith("JSON Parse error: ")
    both = _error(lambda: json_codec.tensors_from_document({"inputs": [1], "instances": [1]}, {"x": FLOAT}))
    assert both.message.endswith("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ")
    empty = _error(lambda: json_codec.tensors_from_document({"instances": []}, {"x": FLOAT}))
    assert empty.message == "JSON Value: {\"instances\": []} No values in 'instances' array"
    plain = _error(lambda: json_codec.tensors_from_document({"instances": ["u1"]}, {"a": STRING, "b": STRING}))
    assert plain.message.startswith("instances is a plain list, but expecting list of objects")


# --- TensorProto ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([[1, -2]], dtype=np.int64),
        np.array([True, False]),
        np.array([b"a", b"\x00\xff"], dtype=object),
        np.array([1.5, -2.25], dtype=np.float16),
        np.array(7, dtype=np.int32),
    ],
)
def test_tensor_protos_match_tensorflow(array: np.ndarray) -> None:
    ours = tensor_codec.to_tensor_proto(array)
    assert not ours.tensor_content  # typed fields, as TF Serving's Predict replies
    reply = predict_pb2.PredictResponse()
    tensor_codec.write_tensor_proto(array, reply.outputs["y"])  # in place, as the gRPC API writes
    assert reply.outputs["y"] == ours
    np.testing.assert_array_equal(tf.make_ndarray(ours), array)
    np.testing.assert_array_equal(tensor_codec.to_ndarray(tf.make_tensor_proto(array)), array)


def test_tensor_proto_values_are_repeated_or_refused_like_tensorflow() -> None:
    proto = tf.make_tensor_proto(np.float32(2.5), shape=[3])  # one value for three elements
    assert tensor_codec.to_ndarray(proto).tolist() == [2.5, 2.5, 2.5]
    too_many = tensor_codec.to_tensor_proto(np.zeros([3], np.float32))
    too_many.tensor_shape.dim[0].size = 2
    with pytest.raises(ValueError, match="holds 3 values but shape"):
        tensor_codec.to_ndarray(too_many)


# --- configs --------------------------------------------------------------------------------------


def test_version_policies() -> None:
    on_disk = [1, 5, 3, 9]
    assert VersionPolicy().aspired(on_disk) == {9}
    assert VersionPolicy("latest", num_versions=2).aspired(on_disk) == {9, 5}
    assert VersionPolicy("all").aspired(on_disk) == set(on_disk)
    assert VersionPolicy("specific", versions=frozenset({3, 4})).aspired(on_disk) == {3}


def test_model_server_config_checks() -> None:
    proto = model_server_config_pb2.ModelServerConfig()
    for _ in range(2):
        proto.model_config_list.config.add(name="m", base_path="/m")
    assert _error(lambda: configs_from_proto(proto)).message == "Illegal to list model m multiple times in config list"
    proto.model_config_list.config[1].name = "other"
    proto.model_config_list.config[1].model_platform = "pytorch"
    assert "model_platform 'pytorch' is not supported" in _error(lambda: configs_from_proto(proto)).message


def test_a_written_model_config_file_reads_back(tmp_path) -> None:
    path = model_config.write_model_config_file(str(tmp_path / "models.config"),
                                                {"shoprec_retrieval": "/r", "shoprec_ranking": "/k"})
    read = model_config.read_model_config_file(path)
    assert [(c.name, c.base_path, c.version_policy) for c in read] == [
        ("shoprec_retrieval", "/r", VersionPolicy()), ("shoprec_ranking", "/k", VersionPolicy())]


def test_batching_parameters_parse_and_refuse_unknown_fields() -> None:
    text = "max_batch_size { value: 32 }  # comment\nallowed_batch_sizes: 8\nallowed_batch_sizes: 32\n"
    assert parse_batching_parameters(text) == BatchingParameters(max_batch_size=32, allowed_batch_sizes=(8, 32))
    assert "Unknown batching parameter: max_batch" in _error(lambda: parse_batching_parameters("max_batch { value: 1 }")).message


# --- batching -------------------------------------------------------------------------------------


class _RecordingServable:
    """Stands in for a Servable: doubles its input and records the batch sizes it ran.

    ``gate``, when given, holds every run until it is set; ``fail_with`` is raised by every run.
    """

    def __init__(self, gate: threading.Event | None = None, fail_with: BaseException | None = None) -> None:
        self.batch_sizes: list[int] = []
        self.gate = gate
        self.fail_with = fail_with

    def predict(self, signature_name: str, inputs: dict, output_filter: object) -> PredictResult:
        if self.gate is not None:
            self.gate.wait(timeout=10)
        if self.fail_with is not None:
            raise self.fail_with
        self.batch_sizes.append(len(inputs["x"]))
        return PredictResult({"y": inputs["x"] * 2}, signature_name or "serving_default")


@pytest.fixture()
def serving_loop() -> Iterator[ServingLoop]:
    loop = ServingLoop("test-serving-loop")
    yield loop
    loop.close()


def _ask_concurrently(predictor: BatchingPredictor, servable: _RecordingServable, row_counts: list[int]) -> list:
    """Sends one request per entry of ``row_counts`` from as many threads; returns outputs or errors."""
    answers: list = [None] * len(row_counts)
    started = threading.Barrier(len(row_counts))

    def ask(index: int) -> None:
        rows = np.full([row_counts[index], 2], index, np.float32)
        started.wait()
        try:
            answers[index] = predictor.predict(servable, "", {"x": rows}, ()).outputs["y"]
        except ModelServerError as err:
            answers[index] = err

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(len(row_counts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    return answers


def test_batching_merges_concurrent_requests_and_splits_their_rows(serving_loop: ServingLoop) -> None:
    servable = _RecordingServable()
    predictor = BatchingPredictor(BatchingParameters(max_batch_size=8, batch_timeout_micros=2_000_000), serving_loop)
    answers = _ask_concurrently(predictor, servable, [1, 2, 3, 4])
    for index in range(4):
        np.testing.assert_array_equal(answers[index], np.full([index + 1, 2], 2 * index, np.float32))
    assert sum(servable.batch_sizes) == 1 + 2 + 3 + 4
    assert len(servable.batch_sizes) < 4 and max(servable.batch_sizes) <= 8  # some requests shared a batch
    error = _error(lambda: predictor.predict(servable, "", {"x": np.zeros([9, 2])}, ()))
    assert error.message == "Task size 9 is larger than maximum input batch size 8"
    error = _error(lambda: predictor.predict(servable, "", {"x": np.zeros([2]), "z": np.zeros([3])}, ()))
    assert error.message == "Batching Run() input tensors must have equal 0th-dimension size"
    predictor.close()


def test_a_full_batch_runs_without_waiting_for_the_timeout(serving_loop: ServingLoop) -> None:
    servable = _RecordingServable()
    predictor = BatchingPredictor(BatchingParameters(max_batch_size=4, batch_timeout_micros=30_000_000), serving_loop)
    began = time.monotonic()
    answers = _ask_concurrently(predictor, servable, [1, 1, 1, 1])
    assert time.monotonic() - began < 10  # the 30 s timeout never ran out
    assert servable.batch_sizes == [4]
    assert [float(answer[0, 0]) for answer in answers] == [0.0, 2.0, 4.0, 6.0]
    predictor.close()


def test_a_failed_batch_fails_every_request_in_it(serving_loop: ServingLoop) -> None:
    parameters = BatchingParameters(max_batch_size=2, batch_timeout_micros=5_000_000)
    refused = ModelServerError(Code.INVALID_ARGUMENT, "bad rows")
    predictor = BatchingPredictor(parameters, serving_loop)
    answers = _ask_concurrently(predictor, _RecordingServable(fail_with=refused), [1, 1])
    assert [answer.message for answer in answers] == ["bad rows", "bad rows"]
    answers = _ask_concurrently(predictor, _RecordingServable(fail_with=ZeroDivisionError("boom")), [1, 1])
    assert {(answer.code, answer.message) for answer in answers} == {
        (Code.INTERNAL, "Batch failed: ZeroDivisionError: boom")
    }
    predictor.close()


def test_batching_refuses_a_request_when_the_queue_is_full(serving_loop: ServingLoop) -> None:
    gate = threading.Event()
    servable = _RecordingServable(gate=gate)
    parameters = BatchingParameters(max_batch_size=2, batch_timeout_micros=5_000_000, max_enqueued_batches=1)
    predictor = BatchingPredictor(parameters, serving_loop)
    results: list = []
    # The first batch runs (held by the gate); the second waits for the one batch thread.
    first = [threading.Thread(target=lambda: results.append(predictor.predict(servable, "", {"x": np.ones([2, 2])}, ())))
             for _ in range(2)]
    for thread in first:
        thread.start()
        time.sleep(0.3)
    error = _error(lambda: predictor.predict(servable, "", {"x": np.ones([1, 2])}, ()))
    assert (error.code, error.message) == (
        Code.UNAVAILABLE, "The batch scheduling queue to which this task was submitted is full"
    )
    gate.set()
    for thread in first:
        thread.join(timeout=10)
    assert len(results) == 2 and servable.batch_sizes == [2, 2]
    predictor.close()


def test_serving_loop_refuses_to_wait_for_itself(serving_loop: ServingLoop) -> None:
    async def inner() -> None:
        async def nothing() -> None:
            return None

        serving_loop.run(nothing())

    with pytest.raises(RuntimeError, match="on the loop's own thread"):
        serving_loop.run(inner())


def test_grpc_server_refuses_a_port_another_server_listens_on(serving_loop: ServingLoop) -> None:
    address = f"127.0.0.1:{portpicker.pick_unused_port()}"

    def start() -> tuple:
        return serving_loop.run(grpc_api.start_server(None, None, None, address=address, max_receive_bytes=1024))

    first, first_port = start()
    second, second_port = start()
    assert first_port == int(address.rsplit(":", 1)[1])
    assert second_port == 0  # refused, not shared
    serving_loop.run(first.stop(None))


def test_direct_predictor_runs_on_the_caller_or_beside_the_loop(serving_loop: ServingLoop) -> None:
    servable = _RecordingServable()
    predictor = DirectPredictor(num_threads=2)
    rows = np.ones([3, 2], np.float32)
    np.testing.assert_array_equal(predictor.predict(servable, "", {"x": rows}, ()).outputs["y"], rows * 2)
    result = serving_loop.run(predictor.predict_async(servable, "", {"x": rows}, ()))
    np.testing.assert_array_equal(result.outputs["y"], rows * 2)
    assert servable.batch_sizes == [3, 3]
    predictor.close()


# --- command line and client weight -----------------------------------------------------------------


def test_help_lists_tf_serving_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        model_server.parse_flags(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model_base_path", "--model_config_file", "--file_system_poll_wait_seconds", "--rest_api_port",
                 "--max_request_bytes", "--tensorflow_intra_op_parallelism", "--tensorflow_inter_op_parallelism"):
        assert flag in text
    with pytest.raises(SystemExit) as exited:
        model_server.parse_flags(["--model_name=m"])
    assert exited.value.code == 2
    assert "either --model_base_path or --model_config_file is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        model_server.parse_flags(["--model_base_path=/m", "--tensorflow_intra_op_parallelism=-1"])
    assert exited.value.code == 2
    assert "--tensorflow_intra_op_parallelism must be 0" in capsys.readouterr().err


def test_rest_client_does_not_import_tensorflow() -> None:
    code = "import sys, serving.client; print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'grpc')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"

