"""Which model versions are loaded, and which one answers a request.

A ``ModelManager`` per model polls its base path like TF Serving's file-system source and follows
TF Serving's availability-preserving policy:

* a new aspired version is loaded, and its warmup replayed, *before* an old version is unloaded;
* a version that is no longer aspired is unloaded only when an aspired version is available
  (or none is aspired at all, or more than one old version is still loaded);
* a version that fails to load is retried (``--max_num_load_retries``), then reported as
  ``END`` with its error in the status and never tried again until its directory goes away
  and comes back; the versions already loaded keep serving.

Versions keep their last state after they are unloaded, so the status is a history, as in
TF Serving. ``ServerCore`` holds the managers and resolves a request's model, version and label.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence

import tensorflow as tf

from serving.errors import Code, ModelServerError, invalid_argument, not_found
from serving.metrics import ServingMetrics
from serving.model_config import ModelConfig
from serving.servable import Servable

_log = logging.getLogger(__name__)
_VERSION_DIR = re.compile(r"\d+")

START = "START"
LOADING = "LOADING"
AVAILABLE = "AVAILABLE"
UNLOADING = "UNLOADING"
END = "END"


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """The state of one version, as ``GetModelStatus`` reports it.

    Attributes:
        version: The version number.
        state: START, LOADING, AVAILABLE, UNLOADING or END.
        error_code: OK, or why the version failed to load.
        error_message: The load error ("" when none).
    """

    version: int
    state: str
    error_code: Code = Code.OK
    error_message: str = ""


@dataclasses.dataclass(frozen=True)
class ServableRequest:
    """Which servable a request asks for: a model and at most one of version or label."""

    model_name: str
    version: int | None = None
    label: str | None = None

    def describe(self, version: int | None = None) -> str:
        """Returns TF Serving's text for the request: ``Latest(name)`` or ``Specific(name, v)``."""
        version = self.version if version is None else version
        if version is None:
            return f"Latest({self.model_name})"
        return f"Specific({self.model_name}, {version})"


@dataclasses.dataclass(frozen=True)
class ManagerOptions:
    """How models are polled and loaded (TF Serving's flags of the same names).

    Attributes:
        file_system_poll_wait_seconds: Seconds between polls; 0 polls once, < 0 never.
        max_num_load_retries: Retries after a failed load.
        load_retry_interval_seconds: Wait between retries.
        enable_model_warmup: Replay ``assets.extra/tf_serving_warmup_requests`` before serving.
        allow_version_labels_for_unavailable_models: Let a label name a version not loaded.
        intra_op_parallelism: Threads one op may use in a version's session; 0: TensorFlow's
            choice (``--tensorflow_intra_op_parallelism``).
        inter_op_parallelism: Threads running independent ops at once; 0: TensorFlow's choice
            (``--tensorflow_inter_op_parallelism``).
    """

    file_system_poll_wait_seconds: float = 1.0
    max_num_load_retries: int = 5
    load_retry_interval_seconds: float = 60.0
    enable_model_warmup: bool = True
    allow_version_labels_for_unavailable_models: bool = False
    intra_op_parallelism: int = 0
    inter_op_parallelism: int = 0

    def session_config(self) -> tf.compat.v1.ConfigProto:
        """The ``ConfigProto`` of every version's session."""
        return tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=self.intra_op_parallelism,
            inter_op_parallelism_threads=self.inter_op_parallelism,
        )


def _servable_id(name: str, version: int) -> str:
    return f"{{name: {name} version: {version}}}"


class ModelManager:
    """Loads, serves and unloads the versions of one model."""

    def __init__(self, config: ModelConfig, options: ManagerOptions, metrics: ServingMetrics) -> None:
        self._config = config
        self._options = options
        self._metrics = metrics
        self._lock = threading.Lock()  # guards _ready, _states, _config
        self._reconcile_lock = threading.Lock()  # one poll at a time
        self._ready: dict[int, Servable] = {}
        self._states: dict[int, VersionStatus] = {}
        self._failed: set[int] = set()  # failed and still on disk: not tried again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_empty = False

    @property
    def config(self) -> ModelConfig:
        """The model's current config."""
        with self._lock:
            return self._config

    @property
    def name(self) -> str:
        """The model name."""
        return self._config.name

    # --- requests ----------------------------------------------------------------------------

    def servable(self, request: ServableRequest) -> Servable:
        """Returns the servable for a request: the given version, or the highest available.

        Raises:
            ModelServerError: NOT_FOUND when that version (or any version) is not available.
        """
        with self._lock:
            if request.version is None:
                version = max(self._ready, default=None)
            else:
                version = request.version
            servable = self._ready.get(version) if version is not None else None
        if servable is None:
            raise not_found(f"Servable not found for request: {request.describe()}")
        return servable

    def version_for_label(self, label: str) -> int:
        """Returns the version a label names.

        Raises:
            ModelServerError: INVALID_ARGUMENT when the model has no such label.
        """
        with self._lock:
            version = self._config.version_labels.get(label)
        if version is None:
            raise invalid_argument(f"Unrecognized servable version label: {label}")
        return version

    def statuses(self, version: int | None = None) -> list[VersionStatus]:
        """Returns the status of one version or of all versions (highest first).

        Raises:
            ModelServerError: NOT_FOUND when the version, or any version, was never aspired.
        """
        with self._lock:
            if version is not None:
                status = self._states.get(version)
                if status is None:
                    raise not_found(f"Could not find version {version} of model {self.name}")
                return [status]
            if not self._states:
                raise not_found(f"Could not find any versions of model {self.name}")
            return [self._states[v] for v in sorted(self._states, reverse=True)]

    def check_labels(self, labels: Mapping[str, int]) -> None:
        """Checks that each label names an available version (unless that check is off).

        Raises:
            ModelServerError: FAILED_PRECONDITION with TF Serving's message.
        """
        if self._options.allow_version_labels_for_unavailable_models:
            return
        with self._lock:
            for version in sorted(set(labels.values())):
                if version not in self._ready:
                    raise ModelServerError(
                        Code.FAILED_PRECONDITION,
                        f"Request to assign label to version {version} of model {self.name}, "
                        "which is not currently available for inference",
                    )

    # --- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Polls once now (loading what the policy asks for), then keeps polling in a thread."""
        poll_wait = self._options.file_system_poll_wait_seconds
        if poll_wait < 0:
            return
        self.reconcile()
        if poll_wait > 0:
            self._thread = threading.Thread(target=self._poll_forever, name=f"poll-{self.name}", daemon=True)
            self._thread.start()

    def update_config(self, config: ModelConfig) -> None:
        """Takes a new policy and labels (same name and base path) and polls at once."""
        with self._lock:
            self._config = config
        self.reconcile()

    def stop(self) -> None:
        """Stops polling and unloads every version."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._reconcile_lock:
            for version in sorted(self._ready):
                self._unload(version)

    def _poll_forever(self) -> None:
        while not self._stop.wait(self._options.file_system_poll_wait_seconds):
            self.reconcile()

    def _versions_on_disk(self) -> set[int]:
        base_path = self._config.base_path
        try:
            entries = os.listdir(base_path)
        except FileNotFoundError:
            entries = []
        except OSError as err:
            _log.error("Cannot list base path %s of model %s: %s", base_path, self.name, err)
            entries = []
        versions = {
            int(entry)
            for entry in entries
            if _VERSION_DIR.fullmatch(entry) and os.path.isdir(os.path.join(base_path, entry))
        }
        if not versions and not self._warned_empty:
            _log.warning(
                "No versions of servable %s found under base path %s. Did you forget to name your "
                "leaf directory as a number (eg. '/1/')?",
                self.name,
                base_path,
            )
        self._warned_empty = not versions
        return versions

    def reconcile(self) -> None:
        """Polls the base path once and loads/unloads versions until the policy is met."""
        with self._reconcile_lock:
            on_disk = self._versions_on_disk()
            self._failed &= on_disk
            aspired = self.config.version_policy.aspired(on_disk)
            while not self._stop.is_set():
                version_to_unload = self._next_unload(aspired)
                if version_to_unload is not None:
                    self._unload(version_to_unload)
                    continue
                new_versions = aspired - set(self._ready) - self._failed
                if not new_versions:
                    return
                self._load(max(new_versions))

    def _next_unload(self, aspired: set[int]) -> int | None:
        """TF Serving's AvailabilityPreservingPolicy: which loaded version may go now."""
        unaspired_ready = sorted(v for v in self._ready if v not in aspired)
        aspired_ready = any(v in self._ready for v in aspired)
        if unaspired_ready and (not aspired or aspired_ready or len(unaspired_ready) > 1):
            return unaspired_ready[0]
        return None

    def _set_state(self, version: int, state: str, error: ModelServerError | None = None) -> None:
        with self._lock:
            self._states[version] = VersionStatus(
                version, state, error.code if error else Code.OK, error.message if error else ""
            )

    def _load(self, version: int) -> None:
        """Loads and warms up one version; on failure records the error and gives up on it."""
        servable_id = _servable_id(self.name, version)
        export_dir = os.path.join(self._config.base_path, str(version))
        self._set_state(version, START)
        _log.info("Approving load for servable version %s", servable_id)
        self._set_state(version, LOADING)
        attempts = 1 + max(self._options.max_num_load_retries, 0)
        last_error = ModelServerError(Code.UNKNOWN, "not loaded")
        for attempt in range(1, attempts + 1):
            _log.info("Loading servable version %s", servable_id)
            try:
                servable = self._load_and_warm_up(version, export_dir)
            except ModelServerError as err:
                self._metrics.record_load(export_dir, succeeded=False)
                _log.error("Loading servable: %s failed: %s: %s", servable_id, err.code.name, err.message)
                last_error = err
            else:
                self._metrics.record_load(export_dir, succeeded=True)
                with self._lock:
                    self._ready[version] = servable
                self._set_state(version, AVAILABLE)
                _log.info("Successfully loaded servable version %s", servable_id)
                return
            if attempt == attempts or self._stop.wait(self._options.load_retry_interval_seconds):
                break
            if not os.path.isdir(export_dir):
                break
            _log.info("Retrying load of servable version %s (retry %d)", servable_id, attempt)
        self._failed.add(version)
        self._set_state(version, END, last_error)

    def _load_and_warm_up(self, version: int, export_dir: str) -> Servable:
        """Loads a version and replays its warmup requests.

        Raises:
            ModelServerError: The version cannot serve. Any other exception from loading a
                broken or unusual SavedModel is reported the same way (as UNKNOWN), because
                one bad version must never stop the poller that keeps the good ones serving.
        """
        try:
            servable = Servable.load(self.name, version, export_dir, self._options.session_config())
            if self._options.enable_model_warmup:
                servable.warmup()
            return servable
        except ModelServerError:
            raise
        except Exception as err:  # noqa: BLE001 - reported in the version's status, see docstring
            _log.exception("Unexpected error while loading %s", export_dir)
            raise ModelServerError(Code.UNKNOWN, f"{type(err).__name__}: {err}") from err

    def _unload(self, version: int) -> None:
        servable_id = _servable_id(self.name, version)
        self._set_state(version, UNLOADING)
        _log.info("Quiescing servable version %s", servable_id)
        with self._lock:
            del self._ready[version]  # requests already holding it finish with it
        self._set_state(version, END)
        _log.info("Done unloading servable version %s", servable_id)


class ServerCore:
    """The models a server serves; resolves requests to servables."""

    def __init__(self, options: ManagerOptions, metrics: ServingMetrics) -> None:
        self._options = options
        self._metrics = metrics
        self._models: dict[str, ModelManager] = {}
        self._lock = threading.Lock()  # guards _models
        self._config_lock = threading.Lock()  # one config change at a time

    def _manager(self, model_name: str) -> ModelManager | None:
        with self._lock:
            return self._models.get(model_name)

    def apply_config(self, configs: Sequence[ModelConfig]) -> None:
        """Serves exactly these models: adds new ones (loading them first), updates, removes.

        Labels are checked before anything already served changes; a refused config leaves
        the old one in effect.

        Raises:
            ModelServerError: FAILED_PRECONDITION when a label names a version that is not
                available.
        """
        with self._config_lock:
            wanted = {config.name: config for config in configs}
            current = dict(self._models)
            added: dict[str, ModelManager] = {}
            for name, config in wanted.items():
                existing = current.get(name)
                if existing is None or existing.config.base_path != config.base_path:
                    manager = ModelManager(config, self._options, self._metrics)
                    manager.start()
                    added[name] = manager
            try:
                for name, config in wanted.items():
                    (added.get(name) or current[name]).check_labels(config.version_labels)
            except ModelServerError:
                for manager in added.values():
                    manager.stop()
                raise
            with self._lock:
                self._models = {name: added.get(name) or current[name] for name in wanted}
            for name, manager in current.items():
                if self._models.get(name) is not manager:
                    _log.info("Removing model %s", name)
                    manager.stop()
            for name, config in wanted.items():
                if name not in added:
                    current[name].update_config(config)
            for config in configs:
                _log.info(
                    "Serving model %s from %s with %s, labels %s",
                    config.name,
                    config.base_path,
                    config.version_policy.describe(),
                    dict(config.version_labels),
                )

    def servable(self, request: ServableRequest) -> Servable:
        """Returns the servable that answers a request.

        Raises:
            ModelServerError: INVALID_ARGUMENT for an unknown label, NOT_FOUND for an unknown
                model or a version that is not available (TF Serving's codes and messages).
        """
        manager = self._manager(request.model_name)
        version = request.version
        if request.label is not None:
            if manager is None:
                raise invalid_argument(f"Unrecognized servable version label: {request.label}")
            version = manager.version_for_label(request.label)
        if manager is None:
            raise not_found(f"Servable not found for request: {request.describe(version)}")
        return manager.servable(dataclasses.replace(request, version=version, label=None))

    def statuses(self, model_name: str, version: int | None = None) -> list[VersionStatus]:
        """Returns the version statuses of a model (one version, or all, highest first).

        Raises:
            ModelServerError: NOT_FOUND for an unknown model or version.
        """
        manager = self._manager(model_name)
        if manager is None:
            if version is not None:
                raise not_found(f"Could not find version {version} of model {model_name}")
            raise not_found(f"Could not find any versions of model {model_name}")
        return manager.statuses(version)

    def stop(self) -> None:
        """Stops polling and unloads everything."""
        with self._lock:
            managers = list(self._models.values())
            self._models = {}
        for manager in managers:
            manager.stop()

