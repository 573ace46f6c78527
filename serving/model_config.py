"""What to serve: TF Serving's ``models.config`` and the other text-proto files it reads.

``--model_config_file`` takes a text-format ``tensorflow.serving.ModelServerConfig`` with a
``model_config_list``; each ``config`` names a model, its ``base_path``, a
``model_version_policy`` (``latest { num_versions }``, ``all {}`` or
``specific { versions }``) and ``version_labels``. ``--model_name``/``--model_base_path`` is
the one-model shorthand with the default policy (latest 1).

``--batching_parameters_file`` and ``--monitoring_config_file`` are text protos too. Their
protos are not in the tensorflow-serving-api package, so they are read by a small parser that
accepts the fields this server uses and refuses anything else.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import Code, ModelServerError, invalid_argument


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which of the version directories on disk should be loaded.

    Attributes:
        kind: ``latest``, ``all`` or ``specific``.
        num_versions: For ``latest``: how many of the highest versions.
        versions: For ``specific``: exactly these versions.
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: frozenset[int] = frozenset()

    def aspired(self, on_disk: Iterable[int]) -> set[int]:
        """Returns the versions that should be loaded, out of those on disk."""
        found = sorted(set(on_disk), reverse=True)
        if self.kind == "all":
            return set(found)
        if self.kind == "specific":
            return self.versions & set(found)
        return set(found[: self.num_versions])

    def describe(self) -> str:
        """Returns the policy as the text proto spells it."""
        if self.kind == "specific":
            return "specific { " + " ".join(f"versions: {v}" for v in sorted(self.versions)) + " }"
        if self.kind == "all":
            return "all {}"
        return f"latest {{ num_versions: {self.num_versions} }}"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One model to serve.

    Attributes:
        name: The model name clients ask for.
        base_path: The folder that holds ``<version>/saved_model.pb``.
        version_policy: Which versions to load.
        version_labels: Label -> version.
    """

    name: str
    base_path: str
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: Mapping[str, int] = dataclasses.field(default_factory=dict)


def _policy_from_proto(config: model_server_config_pb2.ModelConfig) -> VersionPolicy:
    if not config.HasField("model_version_policy"):
        return VersionPolicy()
    policy = config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "specific":
        if not policy.specific.versions:
            raise invalid_argument(f"Model {config.name}: model_version_policy specific {{}} lists no versions")
        return VersionPolicy("specific", versions=frozenset(policy.specific.versions))
    if choice == "all":
        return VersionPolicy("all")
    num_versions = policy.latest.num_versions if choice == "latest" else 0
    return VersionPolicy("latest", num_versions=num_versions or 1)


def configs_from_proto(server_config: model_server_config_pb2.ModelServerConfig) -> list[ModelConfig]:
    """Converts a ModelServerConfig proto to the models to serve.

    Raises:
        ModelServerError: INVALID_ARGUMENT for a config this server cannot serve.
    """
    if server_config.WhichOneof("config") == "custom_model_config":
        raise invalid_argument("custom_model_config is not supported; use model_config_list")
    configs: list[ModelConfig] = []
    for config in server_config.model_config_list.config:
        if not config.name:
            raise invalid_argument("A model in model_config_list has no name")
        if not config.base_path:
            raise invalid_argument(f"Model {config.name} has no base_path")
        if config.model_platform not in ("", "tensorflow"):
            raise invalid_argument(
                f"Model {config.name}: model_platform {config.model_platform!r} is not supported "
                "(only 'tensorflow')"
            )
        if any(existing.name == config.name for existing in configs):
            raise invalid_argument(f"Illegal to list model {config.name} multiple times in config list")
        configs.append(
            ModelConfig(
                name=config.name,
                base_path=config.base_path,
                version_policy=_policy_from_proto(config),
                version_labels=dict(config.version_labels),
            )
        )
    return configs


def read_model_config_file(path: str) -> list[ModelConfig]:
    """Reads a text-format ModelServerConfig (``--model_config_file``).

    Raises:
        ModelServerError: INVALID_ARGUMENT when the file cannot be read or parsed.
    """
    try:
        with open(path, encoding="utf-8") as config_file:
            text = config_file.read()
        return configs_from_proto(text_format.Parse(text, model_server_config_pb2.ModelServerConfig()))
    except OSError as err:
        raise invalid_argument(f"Cannot read model config file {path}: {err}") from err
    except text_format.ParseError as err:
        raise invalid_argument(f"Cannot parse model config file {path}: {err}") from err


def write_model_config_file(path: str, base_paths: Mapping[str, str]) -> str:
    """Writes a text-format ModelServerConfig serving each ``{model name: base path}`` (latest
    version of each, ``tensorflow`` platform); returns ``path``."""
    server_config = model_server_config_pb2.ModelServerConfig()
    for name, base_path in base_paths.items():
        model = server_config.model_config_list.config.add(name=name, base_path=str(base_path),
                                                            model_platform="tensorflow")
        model.model_version_policy.latest.num_versions = 1
    with open(path, "w", encoding="utf-8") as config_file:
        config_file.write(text_format.MessageToString(server_config))
    return path


# --- the small text protos --------------------------------------------------------------------

_SCALAR_FIELD = re.compile(r"(\w+)\s*:\s*(\"[^\"]*\"|[\w.+-]+)\s*[,;]?")
_WRAPPED_FIELD = re.compile(r"(\w+)\s*\{\s*value\s*:\s*([\w.+-]+)\s*\}")
_COMMENT = re.compile(r"#[^\n]*")


def _scalar_fields(text: str) -> list[tuple[str, str]]:
    return [(name, value.strip('"')) for name, value in _SCALAR_FIELD.findall(text)]


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's ``BatchingParameters`` (the fields this server uses).

    Attributes:
        max_batch_size: Most rows in one batch.
        batch_timeout_micros: How long a batch waits to fill up.
        max_enqueued_batches: Most batches waiting; a request beyond that is refused.
        num_batch_threads: Threads that run batches (per signature).
        allowed_batch_sizes: Accepted but not used: batches are not padded here.
        pad_variable_length_inputs: Accepted but not used.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False


_INT_BATCHING_FIELDS = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")


def parse_batching_parameters(text: str) -> BatchingParameters:
    """Parses a text-format ``BatchingParameters`` (``--batching_parameters_file``).

    Raises:
        ModelServerError: INVALID_ARGUMENT for a field this server does not know or a bad value.
    """
    text = _COMMENT.sub("", text)
    values: dict[str, Any] = {}
    allowed: list[int] = []
    try:
        for name, value in _WRAPPED_FIELD.findall(text):
            if name not in _INT_BATCHING_FIELDS:
                raise invalid_argument(f"Unknown batching parameter: {name}")
            values[name] = int(value)
        for name, value in _scalar_fields(_WRAPPED_FIELD.sub("", text)):
            if name == "allowed_batch_sizes":
                allowed.append(int(value))
            elif name == "pad_variable_length_inputs":
                values[name] = value == "true"
            else:
                raise invalid_argument(f"Unknown batching parameter: {name}")
    except ValueError as err:
        raise invalid_argument(f"Bad batching parameter value: {err}") from err
    parameters = BatchingParameters(allowed_batch_sizes=tuple(allowed), **values)
    if parameters.max_batch_size < 1 or parameters.num_batch_threads < 1:
        raise invalid_argument("max_batch_size and num_batch_threads must be positive")
    return parameters


def parse_prometheus_path(text: str) -> str | None:
    """Returns the Prometheus path of a text-format ``MonitoringConfig``, None when disabled.

    Raises:
        ModelServerError: INVALID_ARGUMENT when there is no ``prometheus_config``.
    """
    text = _COMMENT.sub("", text)
    match = re.search(r"prometheus_config\s*\{([^}]*)\}", text)
    if match is None:
        raise ModelServerError(Code.INVALID_ARGUMENT, "monitoring config has no prometheus_config")
    fields = dict(_scalar_fields(match.group(1)))
    if fields.get("enable") != "true":
        return None
    return fields.get("path") or None
