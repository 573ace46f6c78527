"""One loaded version of a SavedModel: its signatures, Predict on them, and its warmup.

The signatures are read from the SavedModel's own ``MetaGraphDef`` (tag ``serve``), so the server
works with any model and reports metadata exactly as TF Serving does (``__saved_model_init_op``
included). Predict checks a request the way TF Serving's ``predict_util.cc`` does and with its
messages, then runs like TF Serving's ``SavedModelBundle``: the version is loaded into its own
graph and ``Session`` (the TF1 loader, which restores the variables and runs
``__saved_model_init_op``), and a request feeds and fetches the tensor names its SignatureDef
gives. The session's callables cost a third to a half of the CPU of calling the signature
functions of ``tf.saved_model.load`` (for one user of the pipeline's 5,000-item model on this
machine: ``serving_default`` 0.24-0.32 vs 0.92-1.0 ms, ``recommend_with_history`` 0.7 vs 1.5 ms),
and they serve TF1 graph-only signatures too.

Custom ops: before loading, every op type the SavedModel uses must be registered in this process.
An op in a namespace listed in ``CUSTOM_OP_MODULES`` (ScaNN's ``Scann>...``) registers itself by
importing that Python module, which this server does only for the models that need it (as the
ScaNN-enabled TF Serving image has ScaNN's ops linked in). Any other unregistered op fails the
load with NOT_FOUND, as in TF Serving.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import message as protobuf_message
from google.protobuf import text_format
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, saved_model_pb2
from tensorflow.python.framework import op_def_registry
from tensorflow_serving.apis import prediction_log_pb2

from serving import dtypes, tensor_codec
from serving.errors import Code, ModelServerError, invalid_argument
from serving.protocol import DEFAULT_SIGNATURE_NAME, MAX_WARMUP_RECORDS, WARMUP_FILE

SERVE_TAG = "serve"
SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
PREDICT_METHOD_NAMES = (
    "tensorflow/serving/predict",
    "tensorflow/serving/classify",
    "tensorflow/serving/regress",
)

# Op namespace (the part before ">" of a custom op's type) -> the module whose import registers it.
CUSTOM_OP_MODULES: Mapping[str, str] = {"Scann": "scann.scann_ops.py.scann_ops"}

_log = logging.getLogger(__name__)

try:  # glibc only; elsewhere freed heap memory stays with the process
    _MALLOC_TRIM: Callable[[int], int] | None = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):
    _MALLOC_TRIM = None


@dataclasses.dataclass(frozen=True)
class PredictResult:
    """What a Predict call returns.

    Attributes:
        outputs: Output tensors by alias (string tensors as ``object`` arrays of ``bytes``).
        signature_name: The signature that ran (``serving_default`` when none was asked for).
    """

    outputs: dict[str, np.ndarray]
    signature_name: str


def _shape_text(dims: Sequence[int]) -> str:
    return "[" + ",".join(str(size) for size in dims) + "]"


def read_meta_graph(export_dir: str, tags: frozenset[str] = frozenset({SERVE_TAG})) -> meta_graph_pb2.MetaGraphDef:
    """Reads the MetaGraphDef with ``tags`` from a SavedModel directory.

    Raises:
        ModelServerError: NOT_FOUND when there is no SavedModel or no such tag-set, DATA_LOSS
            when the file cannot be parsed, PERMISSION_DENIED or UNKNOWN when it cannot be read.
    """
    saved_model = saved_model_pb2.SavedModel()
    pb_path = os.path.join(export_dir, SAVED_MODEL_PB)
    pbtxt_path = os.path.join(export_dir, SAVED_MODEL_PBTXT)
    path = pb_path if os.path.exists(pb_path) else pbtxt_path
    if not os.path.exists(path):
        raise ModelServerError(
            Code.NOT_FOUND,
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {export_dir}",
        )
    try:
        if path == pb_path:
            with open(path, "rb") as pb_file:
                saved_model.ParseFromString(pb_file.read())
        else:
            with open(path, encoding="utf-8") as pbtxt_file:
                text_format.Parse(pbtxt_file.read(), saved_model)
    except (protobuf_message.DecodeError, text_format.ParseError, UnicodeDecodeError) as err:
        kind = "binary" if path == pb_path else "text"
        raise ModelServerError(Code.DATA_LOSS, f"Can't parse {path} as {kind} proto: {err}") from err
    except PermissionError as err:
        raise ModelServerError(Code.PERMISSION_DENIED, f"Can't read {path}: {err}") from err
    except OSError as err:
        raise ModelServerError(Code.UNKNOWN, f"Can't read {path}: {err}") from err
    for meta_graph in saved_model.meta_graphs:
        if frozenset(meta_graph.meta_info_def.tags) == tags:
            return meta_graph
    raise ModelServerError(
        Code.NOT_FOUND,
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(tags))} }}. "
        "To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
        "`saved_model_cli`",
    )


def _op_types(meta_graph: meta_graph_pb2.MetaGraphDef) -> set[str]:
    """The op types a MetaGraphDef runs (graph and function library; calls of its own functions
    excluded)."""
    library = meta_graph.graph_def.library
    types = {node.op for node in meta_graph.graph_def.node}
    for function in library.function:
        types.update(node.op for node in function.node_def)
    return types - {function.signature.name for function in library.function}


def load_custom_ops(meta_graph: meta_graph_pb2.MetaGraphDef) -> list[str]:
    """Registers the custom ops a SavedModel needs by importing their modules (``CUSTOM_OP_MODULES``).

    Returns:
        The modules this call imported (empty when every op was already registered).

    Raises:
        ModelServerError: NOT_FOUND for an op that is not registered and that no known module
            provides, or whose module cannot be imported.
    """
    imported: list[str] = []
    for op_type in sorted(_op_types(meta_graph)):
        if op_def_registry.get(op_type) is not None:
            continue
        module = CUSTOM_OP_MODULES.get(op_type.split(">", 1)[0]) if ">" in op_type else None
        if module is None:
            raise ModelServerError(
                Code.NOT_FOUND,
                f"Op type not registered '{op_type}' in binary running on this model server. Make "
                "sure the Op and Kernel are registered in the binary running in this process.",
            )
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ModelServerError(
                Code.NOT_FOUND,
                f"Op type not registered '{op_type}': the model needs the custom ops of {module}, "
                f"which cannot be imported ({err})",
            ) from err
        _log.info("Imported %s for the custom op %s", module, op_type)
        imported.append(module)
        if op_def_registry.get(op_type) is None:
            raise ModelServerError(
                Code.NOT_FOUND, f"Op type not registered '{op_type}' (not defined by {module})"
            )
    return imported


def _release_freed_memory() -> None:
    """Returns freed heap pages to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    Restoring the variables and replaying the warmup free their buffers, but glibc keeps the
    pages: at 1,000,000 items that is about 500 MiB of RSS after the load (1.9 -> 1.4 GiB) and
    130 MiB after the warmup.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class Servable:
    """A loaded SavedModel version that answers Predict on its signatures.

    Thread-safe: any number of threads may call ``predict`` at once (``Session`` callables are).
    The session closes when the last reference to the servable goes, so requests that already
    hold an unloaded version finish with it.
    """

    def __init__(
        self,
        model_name: str,
        version: int,
        export_dir: str,
        meta_graph: meta_graph_pb2.MetaGraphDef,
        session: tf.compat.v1.Session,
    ) -> None:
        self.model_name = model_name
        self.version = version
        self.export_dir = export_dir
        self.signature_defs: Mapping[str, meta_graph_pb2.SignatureDef] = meta_graph.signature_def
        self._session = session
        # (signature, output aliases) -> callable taking the inputs in sorted-alias order
        self._callables: dict[tuple[str, tuple[str, ...]], Callable[..., list[np.ndarray]]] = {}
        self._callables_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        model_name: str,
        version: int,
        export_dir: str,
        session_config: tf.compat.v1.ConfigProto | None = None,
    ) -> Servable:
        """Loads the SavedModel in ``export_dir`` into a new graph and session.

        Args:
            session_config: The session's options (thread pools); ``None``: TensorFlow's defaults.

        Raises:
            ModelServerError: The model cannot be loaded; the code says why.
        """
        meta_graph = read_meta_graph(export_dir)
        load_custom_ops(meta_graph)
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph, config=session_config)
        try:
            with graph.as_default():
                # The TF1 loader (deprecated for TF2 code, and exactly what TF Serving runs).
                tf.compat.v1.saved_model.load(session, [SERVE_TAG], export_dir)
        except tf.errors.OpError as err:
            session.close()
            raise ModelServerError(Code(err.error_code), err.message) from err
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            session.close()
            raise ModelServerError(
                Code.DATA_LOSS, f"SavedModel in {export_dir} cannot be loaded: {err}"
            ) from err
        _release_freed_memory()
        return cls(model_name, version, export_dir, meta_graph, session)

    def __repr__(self) -> str:
        return f"Servable(name={self.model_name!r}, version={self.version})"

    def signature(self, signature_name: str) -> tuple[str, meta_graph_pb2.SignatureDef]:
        """Returns the resolved name and SignatureDef of a Predict signature ("" = default).

        Raises:
            ModelServerError: FAILED_PRECONDITION when the signature does not exist, INTERNAL
                when it is not a predict/classify/regress signature (TF Serving's checks).
        """
        name = signature_name or DEFAULT_SIGNATURE_NAME
        signature_def = self.signature_defs.get(name)
        if signature_def is None:
            raise ModelServerError(
                Code.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.'
            )
        if signature_def.method_name not in PREDICT_METHOD_NAMES:
            raise ModelServerError(
                Code.INTERNAL,
                "Expected prediction signature method_name to be one of "
                f"{{{', '.join(PREDICT_METHOD_NAMES)}}}. Was: {signature_def.method_name}",
            )
        return name, signature_def

    def input_dtypes(self, signature_name: str) -> dict[str, dtypes.DType]:
        """Returns a signature's inputs as name -> DataType, for reading a REST request.

        Raises:
            ModelServerError: INVALID_ARGUMENT when the signature does not exist (the REST
                wording), or when an input has a DataType the server does not support.
        """
        name = signature_name or DEFAULT_SIGNATURE_NAME
        signature_def = self.signature_defs.get(name)
        if signature_def is None:
            raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
        input_dtypes = {}
        for alias, tensor_info in signature_def.inputs.items():
            dtype = dtypes.BY_NUMBER.get(tensor_info.dtype)
            if dtype is None:
                raise invalid_argument(
                    f"Input {alias} of signature {name} has unsupported dtype "
                    f"{dtypes.short_name(tensor_info.dtype)}"
                )
            input_dtypes[alias] = dtype
        return input_dtypes

    def _check_inputs(
        self, signature_name: str, signature_def: meta_graph_pb2.SignatureDef, inputs: Mapping[str, np.ndarray]
    ) -> None:
        """Checks names, dtypes and shapes of the request inputs against the signature."""
        expected = sorted(signature_def.inputs)
        sent = sorted(inputs)
        if len(sent) != len(expected):
            extra = sorted(set(sent) - set(expected))
            missing = sorted(set(expected) - set(sent))
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sent)}}}) != len({{{','.join(expected)}}}). "
                f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
            )
        for alias in sent:
            if alias not in signature_def.inputs:
                raise invalid_argument(
                    f"input tensor alias not found in signature: {alias}. Inputs expected to be in "
                    f"the set {{{','.join(expected)}}}."
                )
        for position, alias in enumerate(expected):
            tensor_info = signature_def.inputs[alias]
            array = inputs[alias]
            sent_dtype = dtypes.for_numpy(array).number
            if sent_dtype != tensor_info.dtype:
                raise invalid_argument(
                    f"Expects arg[{position}] to be {dtypes.short_name(tensor_info.dtype)} but "
                    f"{dtypes.short_name(sent_dtype)} is provided (input '{alias}' of signature "
                    f"'{signature_name}')"
                )
            shape = tensor_info.tensor_shape
            if shape.unknown_rank:
                continue
            dims = [dim.size for dim in shape.dim]
            if len(dims) != array.ndim or any(
                size >= 0 and size != sent for size, sent in zip(dims, array.shape)
            ):
                raise invalid_argument(
                    f"input '{alias}' of signature '{signature_name}' must have shape "
                    f"{_shape_text(dims)} (-1 = any size) but has shape {_shape_text(array.shape)}"
                )

    def predict(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> PredictResult:
        """Runs a signature.

        Args:
            signature_name: The signature ("" = ``serving_default``).
            inputs: One array per signature input, of the input's dtype (strings as bytes).
            output_filter: Output aliases to return (empty = all).

        Raises:
            ModelServerError: The request does not fit the signature, or the model failed.
        """
        name, signature_def = self.signature(signature_name)
        self._check_inputs(name, signature_def, inputs)
        seen_outputs: set[str] = set()
        for alias in output_filter:
            if alias not in signature_def.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be "
                    f"in the set {{{','.join(sorted(signature_def.outputs))}}}."
                )
            if alias in seen_outputs:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            seen_outputs.add(alias)
        wanted = tuple(output_filter) or tuple(sorted(signature_def.outputs))
        run = self._callable(name, signature_def, wanted)
        try:
            values = run(*(inputs[alias] for alias in sorted(signature_def.inputs)))
        except tf.errors.OpError as err:
            raise ModelServerError(Code(err.error_code), err.message) from err
        except (TypeError, ValueError) as err:
            raise invalid_argument(f"Signature {name} rejected the inputs: {err}") from err
        return PredictResult(dict(zip(wanted, values)), name)

    def _callable(
        self, name: str, signature_def: meta_graph_pb2.SignatureDef, outputs: tuple[str, ...]
    ) -> Callable[..., list[np.ndarray]]:
        """The session callable that feeds a signature's inputs (sorted by alias) and fetches
        ``outputs``; made on first use and kept."""
        key = (name, outputs)
        run = self._callables.get(key)
        if run is None:
            with self._callables_lock:
                run = self._callables.get(key)
                if run is None:
                    # Session._make_callable_from_options is TF_SessionMakeCallable, the path
                    # tf_keras's TF1 backend runs; it costs half of make_callable's
                    # feed-dict path (0.25 vs 0.50 ms per one-user request here).
                    options = config_pb2.CallableOptions(
                        feed=[signature_def.inputs[alias].name for alias in sorted(signature_def.inputs)],
                        fetch=[signature_def.outputs[alias].name for alias in outputs],
                    )
                    if os.environ.get("XINLINE"):
                        options.run_options.inter_op_thread_pool = -1
                    try:
                        run = self._session._make_callable_from_options(options)  # noqa: SLF001
                    except (tf.errors.OpError, KeyError, ValueError) as err:
                        raise ModelServerError(
                            Code.INTERNAL, f"Signature {name} names tensors the graph lacks: {err}"
                        ) from err
                    self._callables[key] = run
        return run

    def warmup(self) -> int:
        """Replays ``assets.extra/tf_serving_warmup_requests`` (PredictionLog records).

        Only ``predict_log`` records run; other kinds are logged and passed over.

        Returns:
            The number of records read.

        Raises:
            ModelServerError: A record is unreadable or its request fails; the version must not
                serve then (TF Serving fails the load).
        """
        path = os.path.join(self.export_dir, WARMUP_FILE)
        if not os.path.exists(path):
            return 0
        _log.info("Starting to read warmup data for model at %s", path)
        started = time.monotonic()
        count = 0
        try:
            for record in tf.data.TFRecordDataset(path):
                count += 1
                if count > MAX_WARMUP_RECORDS:
                    raise invalid_argument(
                        f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
                    )
                self._replay(prediction_log_pb2.PredictionLog.FromString(record.numpy()), count)
        except tf.errors.OpError as err:
            raise ModelServerError(Code(err.error_code), f"Reading {path}: {err.message}") from err
        except protobuf_message.DecodeError as err:
            raise ModelServerError(
                Code.DATA_LOSS, f"Warmup record {count} in {path} is not a PredictionLog: {err}"
            ) from err
        _release_freed_memory()
        _log.info(
            "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
            "Elapsed time (microseconds): %d.",
            path,
            count,
            (time.monotonic() - started) * 1e6,
        )
        return count

    def _replay(self, log: prediction_log_pb2.PredictionLog, index: int) -> None:
        kind = log.WhichOneof("log_type")
        if kind != "predict_log":
            _log.warning("Warmup record %d is a %s; only predict_log records are replayed", index, kind)
            return
        request = log.predict_log.request
        inputs = {}
        for alias, proto in request.inputs.items():
            try:
                inputs[alias] = tensor_codec.to_ndarray(proto)
            except ValueError as err:
                raise invalid_argument(f"Warmup record {index}: tensor parsing error: {alias}: {err}") from err
        try:
            self.predict(request.model_spec.signature_name, inputs, list(request.output_filter))
        except ModelServerError as err:
            raise ModelServerError(err.code, f"Warmup record {index} failed: {err.message}") from err

