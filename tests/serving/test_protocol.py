"""TF Serving's protocol names are declared once per layer, and the declarations agree.

The library (the exporter) and the model server cannot import each other, so each names what it
needs; this test holds both to TensorFlow's and TF Serving's own constants.
"""

import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2

from serving import protocol
from shoprec import features
from shoprec.model import warmup


def test_the_default_signature_is_tensorflows() -> None:
    assert protocol.DEFAULT_SIGNATURE_NAME == tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
    assert features.SIGNATURE_TOP_K == tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY


def test_version_states_are_tf_servings() -> None:
    states = get_model_status_pb2.ModelVersionStatus.State
    for name in (protocol.START, protocol.LOADING, protocol.AVAILABLE, protocol.UNLOADING, protocol.END):
        assert states.Name(states.Value(name)) == name


def test_the_exporter_writes_the_warmup_file_the_server_reads() -> None:
    assert warmup.WARMUP_FILE == protocol.WARMUP_FILE == "assets.extra/tf_serving_warmup_requests"
    assert warmup.MAX_WARMUP_RECORDS == protocol.MAX_WARMUP_RECORDS == 1000
