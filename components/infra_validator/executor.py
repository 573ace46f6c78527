"""InfraValidator executor that runs the model server as a local subprocess.

It subclasses TFX 1.16's ``tfx.components.infra_validator.executor.Executor`` and keeps its
contract: the same ``serving_spec`` / ``validation_spec`` / ``request_spec`` properties, the same
retries (``ValidationSpec.num_tries``) and loading deadline (``max_loading_time_seconds``), the
same TF-Serving model path preparation, the same ``TensorFlowServingClient`` (official gRPC stubs)
for ``GetModelStatus`` and the queries, and the same ``InfraBlessing`` output (an empty
``INFRA_BLESSED`` or ``INFRA_NOT_BLESSED`` file and the ``blessed`` custom property, which the
standard Pusher reads). Two things differ:

* the model server is :class:`~components.infra_validator.runner.LocalModelServerRunner` (a child
  process on a free port) instead of a Docker container or a Kubernetes pod; the ``serving_platform``
  of the spec must be unset or ``local_docker`` (``kubernetes`` belongs to the standard component,
  :func:`components.infra_validator.standard_infra_validator`);
* the LOAD_AND_QUERY requests fill each signature input from the example feature of the same
  name (:mod:`components.infra_validator.requests`), because the project's signatures take raw
  features rather than one serialized ``tf.Example``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import logging
from tfx import types
from tfx.components.infra_validator import executor as tfx_executor
from tfx.components.infra_validator import serving_bins
from tfx.proto import infra_validator_pb2

from components.infra_validator import requests as requests_lib
from components.infra_validator.runner import LocalModelServerRunner

MODEL_SERVER_COMMAND_KEY = "model_server_command"
_SUPPORTED_PLATFORMS = (None, "local_docker")


class Executor(tfx_executor.Executor):
    """TFX InfraValidator executor with a local-subprocess model server (see module docstring)."""

    def Do(self, input_dict: dict[str, list[types.Artifact]],  # noqa: N802
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        """As TFX's ``Do``, plus ``model_server_command``: a JSON list, the server's argv prefix."""
        command = exec_properties.get(MODEL_SERVER_COMMAND_KEY)
        self._model_server_command = json.loads(command) if command else None
        super().Do(input_dict, output_dict, exec_properties)

    def _Do(self, model: types.Artifact, examples: types.Artifact | None,  # noqa: N802
            blessing: types.Artifact, serving_spec: infra_validator_pb2.ServingSpec,
            validation_spec: infra_validator_pb2.ValidationSpec,
            request_spec: infra_validator_pb2.RequestSpec | None) -> None:
        platform = serving_spec.WhichOneof("serving_platform")
        if platform not in _SUPPORTED_PLATFORMS:
            raise ValueError(f"the local InfraValidator runs the model server as a subprocess; serving_platform "
                             f"{platform!r} needs the standard InfraValidator (standard_infra_validator)")
        if examples and request_spec:
            missing = requests_lib.missing_signatures(model, request_spec)
            if missing:  # the model breaks the serving contract: refused, not a pipeline error
                logging.error("Model lacks the signature(s) %s that InfraValidator queries; not blessed.",
                              ", ".join(missing))
                tfx_executor._mark_not_blessed(blessing)  # pylint: disable=protected-access
                return
            logging.info("InfraValidator will be run in LOAD_AND_QUERY mode.")
            # A request that cannot be built is the pipeline's configuration error, not the model's:
            # it raises here instead of refusing the model.
            requests = requests_lib.build_requests(serving_spec.model_name, model, examples, request_spec)
        else:
            logging.info("InfraValidator will be run in LOAD_ONLY mode.")
            requests = []
        model_path = self._PrepareModelPath(model, serving_spec)
        all_passed = True
        for serving_binary in serving_bins.parse_serving_binaries(serving_spec):
            all_passed &= self._ValidateWithRetry(
                model_path=model_path, serving_binary=serving_binary, serving_spec=serving_spec,
                validation_spec=validation_spec, requests=requests)
        if all_passed:
            tfx_executor._mark_blessed(blessing)  # pylint: disable=protected-access
            if requests and request_spec.make_warmup:
                self._CreateWarmupModel(blessing, model_path, warmup_requests=requests)
        else:
            tfx_executor._mark_not_blessed(blessing)  # pylint: disable=protected-access

    def _ValidateOnce(self, model_path: str, serving_binary: serving_bins.ServingBinary,  # noqa: N802
                      serving_spec: infra_validator_pb2.ServingSpec,
                      validation_spec: infra_validator_pb2.ValidationSpec,
                      requests: list[Any]) -> None:
        """One attempt: start the server, wait for the model to be AVAILABLE, send every request.

        Raises whatever failed (the base class's retry loop logs it and counts a failed attempt).
        """
        deadline = time.time() + validation_spec.max_loading_time_seconds
        log_dir = os.path.join(self._get_tmp_dir(), f"attempt-{time.time_ns()}")
        runner = LocalModelServerRunner(model_path, serving_spec.model_name, log_dir,
                                        getattr(self, "_model_server_command", None))
        try:
            logging.info("Starting %r.", runner)
            runner.Start()
            runner.WaitUntilRunning(deadline)
            client = serving_binary.MakeClient(runner.GetEndpoint())
            client.WaitUntilModelLoaded(deadline, polling_interval_sec=tfx_executor._DEFAULT_POLLING_INTERVAL_SEC)  # pylint: disable=protected-access
            if requests:
                client.SendRequests(requests)
            logging.info("Model loaded and answered %d request(s).", len(requests))
        except Exception:
            logging.error("Infra validation attempt failed; model server log:\nBEGIN_MODEL_SERVER_LOG\n%s\n"
                          "END_MODEL_SERVER_LOG", runner.GetLogs())
            raise  # re-raised: the base class's _ValidateWithRetry decides about retries
        finally:
            logging.info("Stopping %r.", runner)
            runner.Stop()
