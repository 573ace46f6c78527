"""InfraValidator components: a local one (model server subprocess) and the standard Kubeflow one.

* :class:`LocalInfraValidator` is TFX's ``InfraValidator`` with the executor of
  :mod:`components.infra_validator.executor`: it starts the model server as a child process,
  waits for the model to load, sends LOAD_AND_QUERY requests built from the examples and writes
  the standard ``InfraBlessing``. :func:`local_infra_validator` builds it with the project's
  defaults.
* :func:`standard_infra_validator` builds the unmodified TFX ``InfraValidator`` on ``kubernetes``
  (TF Serving in a pod). Caveat found here: TFX 1.16's ``KubeflowV2DagRunner`` (the only Kubeflow
  runner 1.16 has) refuses to compile ``tfx.components.InfraValidator``, so the standard component
  only runs under an orchestrator that runs it in-cluster (e.g. ``LocalDagRunner`` or Beam inside
  the cluster). For a KFP v2 pipeline use :func:`local_infra_validator` (it compiles; it runs the
  model server inside the component's container, ``model_server_command=["tensorflow_model_server"]``
  for the real binary in an image that has it).

Either one's ``outputs["blessing"]`` goes to the standard Pusher's ``infra_blessing=``; a model
that is not infra-blessed is not pushed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from tfx import types
from tfx import v1 as tfx
from tfx.dsl.components.base import base_component, base_driver, executor_spec
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from components.infra_validator import executor
from shoprec import config, features

# Signatures queried by default: all four of the export (README's signature table).
DEFAULT_SIGNATURES: tuple[str, ...] = (features.SIGNATURE_TOP_K, features.SIGNATURE_TOP_K_WITH_HISTORY,
                                       features.SIGNATURE_QUERY_EMBEDDING, features.SIGNATURE_ITEM_EMBEDDING)
DEFAULT_NUM_EXAMPLES = 4  # examples (each one request per signature) read from the split
DEFAULT_SPLIT = "eval"
DEFAULT_MAX_LOADING_SECONDS = 180  # the model server imports TensorFlow first: ~10-20 s on 2 cores
DEFAULT_NUM_TRIES = 2  # a second attempt absorbs a port taken between probing and binding
LOCAL_IMAGE_TAG = "local-subprocess"  # TFX needs a TF Serving tag; the local executor runs no image
DEFAULT_TF_SERVING_IMAGE = "tensorflow/serving"
DEFAULT_TF_SERVING_TAG = "2.16.1"  # matches tensorflow-serving-api in the lock file


class LocalInfraValidatorSpec(standard_component_specs.InfraValidatorSpec):
    """InfraValidator's spec plus ``model_server_command`` (JSON argv prefix of the server)."""

    PARAMETERS = {**standard_component_specs.InfraValidatorSpec.PARAMETERS,
                  executor.MODEL_SERVER_COMMAND_KEY: ExecutionParameter(type=str, optional=True)}


class LocalInfraValidator(base_component.BaseComponent):
    """TFX ``InfraValidator``'s spec and executor contract, with a local-subprocess model server.

    Deliberately not a subclass of ``tfx.components.InfraValidator``: TFX 1.16's
    ``KubeflowV2DagRunner`` refuses any instance of that class ("The component type ... is not
    supported"), while this component compiles like any custom component, and in a Kubeflow
    pipeline runs the model server inside its own container.

    Args: as ``tfx.components.InfraValidator``, plus
      model_server_command: the server's argv prefix, given TF Serving's flags after it; ``None``:
        ``[python, -m, serving.model_server]`` (the project's server, resolved when it runs).
        ``["tensorflow_model_server"]`` runs the real TF Serving binary where it is installed.
    """

    SPEC_CLASS = LocalInfraValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
    DRIVER_CLASS = base_driver.BaseDriver

    def __init__(self, model: types.BaseChannel, serving_spec: tfx.proto.ServingSpec,
                 examples: types.BaseChannel | None = None,
                 request_spec: tfx.proto.RequestSpec | None = None,
                 validation_spec: tfx.proto.ValidationSpec | None = None,
                 model_server_command: Sequence[str] | None = None):
        spec = LocalInfraValidatorSpec(
            model=model, examples=examples,
            blessing=types.Channel(type=standard_artifacts.InfraBlessing),
            serving_spec=serving_spec, validation_spec=validation_spec, request_spec=request_spec,
            model_server_command=json.dumps(list(model_server_command)) if model_server_command else None)
        super().__init__(spec=spec)


def request_spec(signature_names: Sequence[str] = DEFAULT_SIGNATURES, split_name: str = DEFAULT_SPLIT,
                 num_examples: int = DEFAULT_NUM_EXAMPLES, make_warmup: bool = False) -> tfx.proto.RequestSpec:
    """A ``tensorflow_serving`` RequestSpec: ``num_examples`` examples of ``split_name``, each
    queried on every signature in ``signature_names``.

    ``make_warmup=True`` makes TFX copy the model into the blessing with these requests as its
    warmup file (and the Pusher then pushes that copy); the default keeps the export's own warmup
    file, which also covers unknown users and items.
    """
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    return tfx.proto.RequestSpec(
        tensorflow_serving=tfx.proto.TensorFlowServingRequestSpec(signature_names=list(signature_names)),
        split_name=split_name, num_examples=num_examples, make_warmup=make_warmup)


def local_infra_validator(model: types.BaseChannel, examples: types.BaseChannel | None,
                          model_name: str = config.MODEL_NAME,
                          signature_names: Sequence[str] = DEFAULT_SIGNATURES,
                          split_name: str = DEFAULT_SPLIT, num_examples: int = DEFAULT_NUM_EXAMPLES,
                          max_loading_time_seconds: int = DEFAULT_MAX_LOADING_SECONDS,
                          num_tries: int = DEFAULT_NUM_TRIES,
                          model_server_command: Sequence[str] | None = None) -> LocalInfraValidator:
    """The local InfraValidator: LOAD_AND_QUERY on a model server subprocess.

    Args:
      model: the Trainer's ``Model`` channel.
      examples: an ``Examples`` channel for the requests; ``None``: LOAD_ONLY.
      model_name: the name the model is served and queried under.
      signature_names: signatures queried, each once per example.
      split_name: split the examples are read from.
      num_examples: examples read.
      max_loading_time_seconds: deadline for the server to start and load the model, per attempt.
      num_tries: attempts before the model is refused (INFRA_NOT_BLESSED).
      model_server_command: see :class:`LocalInfraValidator`.
    """
    return LocalInfraValidator(
        model=model, examples=examples,
        serving_spec=tfx.proto.ServingSpec(
            tensorflow_serving=tfx.proto.TensorFlowServing(tags=[LOCAL_IMAGE_TAG]),
            local_docker=tfx.proto.LocalDockerConfig(), model_name=model_name),
        request_spec=request_spec(signature_names, split_name, num_examples) if examples is not None else None,
        validation_spec=tfx.proto.ValidationSpec(max_loading_time_seconds=max_loading_time_seconds,
                                                 num_tries=num_tries),
        model_server_command=model_server_command)


def standard_infra_validator(model: types.BaseChannel, examples: types.BaseChannel | None,
                             model_name: str = config.MODEL_NAME,
                             image_name: str = DEFAULT_TF_SERVING_IMAGE, tag: str = DEFAULT_TF_SERVING_TAG,
                             split_name: str = DEFAULT_SPLIT, num_examples: int = DEFAULT_NUM_EXAMPLES,
                             max_loading_time_seconds: int = DEFAULT_MAX_LOADING_SECONDS,
                             num_tries: int = 3,
                             service_account_name: str = "") -> tfx.components.InfraValidator:
    """The unmodified TFX InfraValidator on Kubernetes, for the Kubeflow build.

    TF Serving (``image_name:tag``) runs in a pod next to the component's pod. Its requests come
    from TFX's own builder, which queries only signatures with one serialized-record input: of the
    export's signatures that is ``serving_default`` (``user_id: string[B]``), which then receives
    each serialized example as an (unknown) user id and answers through the cold-start path. That
    still proves the model loads in the production binary, replays its warmup file (which queries
    all four signatures with real ids) and answers a Predict call.

    Args:
      model, examples, model_name, split_name, num_examples, max_loading_time_seconds, num_tries:
        as :func:`local_infra_validator`.
      image_name: TF Serving image (use the ScaNN-enabled one for a ScaNN export, docs/serving.md).
      tag: its tag.
      service_account_name: Kubernetes service account of the serving pod ("": the default).
    """
    return tfx.components.InfraValidator(
        model=model, examples=examples,
        serving_spec=tfx.proto.ServingSpec(
            tensorflow_serving=tfx.proto.TensorFlowServing(image_name=image_name, tags=[tag]),
            kubernetes=tfx.proto.KubernetesConfig(service_account_name=service_account_name),
            model_name=model_name),
        request_spec=(request_spec((features.SIGNATURE_TOP_K,), split_name, num_examples)
                      if examples is not None else None),
        validation_spec=tfx.proto.ValidationSpec(max_loading_time_seconds=max_loading_time_seconds,
                                                 num_tries=num_tries))
