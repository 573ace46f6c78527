"""The Servable runs a version the way TF Serving does: its own graph and Session, fed and
fetched by the tensor names of the SignatureDef."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from serving.errors import Code, ModelServerError
from serving.servable import Servable


def _save_tf1_graph_only_model(export_dir: str) -> None:
    """A TF1 SavedModel (no object graph, no functions).

    ``serving_default``: ``x`` [B, 2], ``text`` [B] -> ``y = x @ w + b`` and ``text_upper``;
    ``parse``: ``text`` [B] -> ``number`` (fails in the graph on a non-number).
    """
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        text = tf.compat.v1.placeholder(tf.string, [None], name="text")
        weights = tf.compat.v1.get_variable("w", initializer=tf.constant([[1.0], [2.0]]))
        bias = tf.compat.v1.get_variable("b", initializer=tf.constant([0.5]))
        y = tf.matmul(x, weights) + bias
        session.run(tf.compat.v1.global_variables_initializer())
        builder = tf.compat.v1.saved_model.Builder(export_dir)
        signature = tf.compat.v1.saved_model.predict_signature_def(
            inputs={"x": x, "text": text}, outputs={"y": y, "text_upper": tf.strings.upper(text)}
        )
        parse = tf.compat.v1.saved_model.predict_signature_def(
            inputs={"text": text}, outputs={"number": tf.strings.to_number(text)}
        )
        builder.add_meta_graph_and_variables(
            session, ["serve"], signature_def_map={"serving_default": signature, "parse": parse}
        )
        builder.save()


def test_serves_a_tf1_graph_only_signature(tmp_path: os.PathLike) -> None:
    export_dir = os.path.join(tmp_path, "1")
    _save_tf1_graph_only_model(export_dir)
    servable = Servable.load("m", 1, export_dir)

    result = servable.predict(
        "", {"x": np.array([[1.0, 1.0], [0.0, 3.0]], np.float32), "text": np.array([b"ab", b"c"], object)}
    )

    assert result.signature_name == "serving_default"
    np.testing.assert_allclose(result.outputs["y"], [[3.5], [6.5]])
    assert result.outputs["text_upper"].tolist() == [b"AB", b"C"]


def test_output_filter_fetches_only_the_named_outputs(tmp_path: os.PathLike) -> None:
    export_dir = os.path.join(tmp_path, "1")
    _save_tf1_graph_only_model(export_dir)
    servable = Servable.load("m", 1, export_dir)
    inputs = {"x": np.zeros((1, 2), np.float32), "text": np.array([b"a"], object)}

    assert list(servable.predict("", inputs, ["y"]).outputs) == ["y"]
    assert list(servable.predict("", inputs, ["text_upper", "y"]).outputs) == ["text_upper", "y"]


def test_a_graph_error_is_reported_with_its_code(tmp_path: os.PathLike) -> None:
    export_dir = os.path.join(tmp_path, "1")
    _save_tf1_graph_only_model(export_dir)
    servable = Servable.load("m", 1, export_dir)

    assert servable.predict("parse", {"text": np.array([b"1.5"], object)}).outputs["number"].tolist() == [1.5]
    with pytest.raises(ModelServerError) as raised:
        servable.predict("parse", {"text": np.array([b"1.5", b"abc"], object)})
    assert raised.value.code == Code.INVALID_ARGUMENT
    assert "StringToNumberOp could not correctly convert string: abc" in raised.value.message


def test_a_version_that_cannot_be_restored_is_refused(tmp_path: os.PathLike) -> None:
    export_dir = os.path.join(tmp_path, "1")
    _save_tf1_graph_only_model(export_dir)
    for name in os.listdir(os.path.join(export_dir, "variables")):
        if name.startswith("variables.data"):
            with open(os.path.join(export_dir, "variables", name), "wb") as data:
                data.write(b"not a checkpoint shard")

    with pytest.raises(ModelServerError) as raised:
        Servable.load("m", 1, export_dir)
    assert raised.value.code == Code.DATA_LOSS
    assert "Checksum does not match" in raised.value.message
