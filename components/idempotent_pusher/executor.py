"""TFX's Pusher executor, except that a model identical to the latest pushed version is not pushed again.

The standard Evaluator blesses a candidate that equals its baseline (no regression), so a rerun
with unchanged inputs re-blesses the cached model and the standard Pusher copies it to a new
version directory: the model server then hot-swaps to the same model. This executor compares the
model's files (SHA-256 over relative paths and contents) with the latest version under the push
destination; when they are identical it marks the push ``pushed = 0`` with the custom property
``identical_to_version`` and writes nothing. An older identical version does not count: pushing it
again is a rollback. Everything else, blessing checks and the copy included, is TFX's own code.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from absl import logging
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

IDENTICAL_TO_VERSION = "identical_to_version"  # custom property of the PushedModel artifact
_CHUNK = 1 << 20


def model_digest(model_dir: str) -> str:
    """Hex SHA-256 of every file under ``model_dir``: sorted relative paths and their bytes."""
    digest = hashlib.sha256()
    files = []
    for root, _, names in fileio.walk(model_dir):
        files.extend(os.path.relpath(os.path.join(root, name), model_dir) for name in names)
    for relative in sorted(files):
        digest.update(relative.encode() + b"\0")
        with fileio.open(os.path.join(model_dir, relative), "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def latest_version(base_directory: str) -> str | None:
    """The largest numeric version directory under ``base_directory``; None when there is none."""
    if not fileio.exists(base_directory):
        return None
    versions = [name.rstrip("/") for name in fileio.listdir(base_directory) if name.rstrip("/").isdigit()]
    return max(versions, key=int) if versions else None


class Executor(pusher_executor.Executor):
    """See the module docstring."""

    def Do(self, input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") == "filesystem" and self.CheckBlessing(input_dict):
            base_directory = destination.filesystem.base_directory
            latest = latest_version(base_directory)
            if latest is not None and model_digest(self.GetModelPath(input_dict)) == model_digest(
                    os.path.join(base_directory, latest)):
                model_push = artifact_utils.get_single_instance(
                    output_dict[standard_component_specs.PUSHED_MODEL_KEY])
                logging.info("The model is identical to version %s in %s: not pushed again.", latest,
                             base_directory)
                self._MarkNotPushed(model_push)
                model_push.set_string_custom_property(IDENTICAL_TO_VERSION, latest)
                return
        super().Do(input_dict, output_dict, exec_properties)
