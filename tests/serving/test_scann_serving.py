"""The local server serves ScaNN exports (importing ScaNN's ops itself) and replays exports' warmup.

One server, started for this module, serves the same small synthetic catalogue exported by
``RetrievalServingModule.save`` twice: with brute force and with a ScaNN index.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow.core.framework import node_def_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from bench import synthetic_model
from serving import servable
from serving.errors import Code, ModelServerError
from shoprec import features
from shoprec.model import export, scann_index, warmup
from tests.serving.conftest import (
    SERVER_START_TIMEOUT_S,
    ServerProcess,
    _launch,
    _stop,
    _wait_until_serving,
)
from tests.shoprec.test_export import (
    NUM_ITEMS,
    SCANN_RECALL_FLOOR,
    TOP_K,
    USERS,
    recall_at_10,
)

pytestmark = pytest.mark.timeout(300)

MODELS = ("synthetic_brute_force", "synthetic_scann")


@pytest.fixture(scope="module")
def export_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both exports, as ``<root>/<model>/1``."""
    root = tmp_path_factory.mktemp("scann_server")
    synthetic_model.synthetic_serving_module(NUM_ITEMS, TOP_K).save(str(root / MODELS[0] / "1"))
    synthetic_model.synthetic_serving_module(NUM_ITEMS, TOP_K, scann=scann_index.ScannConfig()).save(
        str(root / MODELS[1] / "1"))
    return root


@pytest.fixture(scope="module")
def scann_server(export_root: Path) -> Iterator[ServerProcess]:
    """A server with both exports (version 1 each), started once for the module."""
    root = export_root
    config_path = root / "models.config"
    config_path.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{root / name}" model_platform: "tensorflow" }}\n'
        for name in MODELS) + "}\n")
    server = _launch([f"--model_config_file={config_path}", "--file_system_poll_wait_seconds=0",
                      "--max_num_load_retries=0"], root / "server.log")
    try:
        _wait_until_serving(server, time.monotonic() + SERVER_START_TIMEOUT_S)
        yield server
    finally:
        _stop(server)


def _top_items(server: ServerProcess, model: str) -> np.ndarray:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model))
    request.inputs[features.USER_ID].CopyFrom(tf.make_tensor_proto(USERS))
    with grpc.insecure_channel(server.grpc_target) as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    return tf.make_ndarray(reply.outputs[features.OUTPUT_ITEM_IDS])


def test_both_exports_load_with_their_warmup_replayed(scann_server: ServerProcess) -> None:
    for model in MODELS:
        status = requests.get(f"{scann_server.rest_url}/v1/models/{model}", timeout=10).json()
        assert status["model_version_status"][0]["state"] == "AVAILABLE", status
    log = scann_server.log()
    assert "Imported scann.scann_ops.py.scann_ops for the custom op Scann>" in log
    records = len(warmup.retrieval_requests(["u0", "u1", "u2"], ["i0"]))
    for model in MODELS:
        assert (f"/{model}/1/assets.extra/tf_serving_warmup_requests. "
                f"Number of warmup records read: {records}.") in log


def test_scann_model_serves_k_distinct_items_close_to_brute_force(
    scann_server: ServerProcess, export_root: Path
) -> None:
    exact, approximate = (_top_items(scann_server, model) for model in MODELS)
    assert approximate.shape == (len(USERS), TOP_K)
    catalogue = {f"i{i}".encode() for i in range(NUM_ITEMS)}
    for row in approximate:
        assert len(set(row)) == TOP_K and set(row) <= catalogue
    # The server answers exactly what the same export answers in this process.
    in_process = export.load_exported(str(export_root / MODELS[1] / "1"))
    expected = in_process.signatures[features.SIGNATURE_TOP_K](**{features.USER_ID: tf.constant(USERS)})
    np.testing.assert_array_equal(approximate, expected[features.OUTPUT_ITEM_IDS].numpy())
    assert recall_at_10(approximate, exact) >= SCANN_RECALL_FLOOR


def test_unknown_custom_op_fails_the_load_with_not_found() -> None:
    meta_graph = meta_graph_pb2.MetaGraphDef()
    meta_graph.graph_def.node.append(node_def_pb2.NodeDef(name="x", op="Nowhere>MysteryOp"))
    with pytest.raises(ModelServerError) as raised:
        servable.load_custom_ops(meta_graph)
    assert raised.value.code == Code.NOT_FOUND
    assert "Op type not registered 'Nowhere>MysteryOp'" in raised.value.message
