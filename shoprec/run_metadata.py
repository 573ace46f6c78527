"""Reads a pipeline run folder's ML Metadata store: runs, executions, artifacts and their properties.

These readers are generic (ML Metadata only, no TFX or TensorFlow import), so the local runner's
summary (``pipeline/run_summary.py``) and the UI's pipeline page share them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

# What the RetrievalEvaluator writes into its ModelEvaluation artifact (metrics by ranking and
# slice, and the blessing reasons).
EVALUATION_METRICS_FILE = "metrics.json"
# Artifact type names the pipeline produces, as TFX registers them in ML Metadata.
STATISTICS_TYPE = "ExampleStatistics"
ANOMALIES_TYPE = "ExampleAnomalies"
EVALUATION_TYPE = "ModelEvaluation"
BLESSING_TYPE = "ModelBlessing"
PUSHED_MODEL_TYPE = "PushedModel"

_STATES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}
_PIPELINE_RUN_CONTEXT = "pipeline_run"
_NODE_CONTEXT = "node"


def open_store(metadata_path: str, read_only: bool = False) -> metadata_store.MetadataStore:
    """A handle on a SQLite ML Metadata store (read-write unless ``read_only``)."""
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = (metadata_store_pb2.SqliteMetadataSourceConfig.READONLY if read_only
                                     else metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE)
    return metadata_store.MetadataStore(config)


def _custom(artifact: metadata_store_pb2.Artifact | metadata_store_pb2.Execution, key: str) -> Any:
    """The value of custom property ``key`` (int, double, string or struct), or None if unset."""
    if key not in artifact.custom_properties:
        return None
    value = artifact.custom_properties[key]
    return getattr(value, value.WhichOneof("value"))


def node_executions(store: metadata_store.MetadataStore, pipeline_name: str,
                    since: float = 0.0) -> dict[str, list[metadata_store_pb2.Execution]]:
    """Node id -> its executions created at or after ``since`` (Unix seconds), oldest first."""
    result = {}
    prefix = f"{pipeline_name}."
    for context in store.get_contexts_by_type(_NODE_CONTEXT):
        if not context.name.startswith(prefix):
            continue
        executions = [e for e in store.get_executions_by_context(context.id)
                      if e.create_time_since_epoch >= since * 1000 - 1]
        result[context.name[len(prefix):]] = sorted(executions,
                                                    key=lambda e: e.create_time_since_epoch)
    return result


def output_artifacts(store: metadata_store.MetadataStore,
                     execution: metadata_store_pb2.Execution) -> list[metadata_store_pb2.Artifact]:
    """The artifacts an execution produced (or reused from the cache)."""
    events = store.get_events_by_execution_ids([execution.id])
    ids = [e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT]
    return store.get_artifacts_by_id(ids) if ids else []


def state_name(execution: metadata_store_pb2.Execution) -> str:
    """``COMPLETE``, ``CACHED``, ``FAILED``, ``RUNNING`` ... of an execution."""
    return _STATES[execution.last_known_state]


@dataclasses.dataclass(frozen=True)
class ExecutionRecord:
    """One component's execution in a pipeline run.

    Attributes:
      node: the component's node id (``Trainer``, ``StatisticsGen`` ...).
      state: ``COMPLETE``, ``CACHED``, ``FAILED`` ...
      seconds: wall time from creation to the last update.
      started: creation time, Unix seconds.
      execution_id: the ML Metadata execution id.
    """

    node: str
    state: str
    seconds: float
    started: float
    execution_id: int

    @property
    def cached(self) -> bool:
        """Whether the component reused a cached result instead of running."""
        return self.state == "CACHED"


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One pipeline run (an ML Metadata ``pipeline_run`` context) and its executions, oldest first."""

    run_id: str
    started: float
    executions: tuple[ExecutionRecord, ...]

    @property
    def seconds(self) -> float:
        """From the first execution's start to the last one's end."""
        if not self.executions:
            return 0.0
        return max(e.started + e.seconds for e in self.executions) - min(e.started for e in self.executions)

    @property
    def cache_hits(self) -> int:
        """How many components were served from the cache."""
        return sum(e.cached for e in self.executions)

    @property
    def status(self) -> str:
        """``FAILED`` if any component failed, ``RUNNING`` if one is still running, else ``COMPLETE``."""
        states = {e.state for e in self.executions}
        for state in ("FAILED", "RUNNING", "NEW", "CANCELED"):
            if state in states:
                return state
        return "COMPLETE"


def _execution_nodes(store: metadata_store.MetadataStore, pipeline_name: str) -> dict[int, str]:
    """Execution id -> node id."""
    return {execution.id: node for node, executions in node_executions(store, pipeline_name).items()
            for execution in executions}


def pipeline_runs(store: metadata_store.MetadataStore, pipeline_name: str) -> list[RunRecord]:
    """Every run of ``pipeline_name`` in the store, newest first."""
    nodes = _execution_nodes(store, pipeline_name)
    runs = []
    for context in store.get_contexts_by_type(_PIPELINE_RUN_CONTEXT):
        executions = [e for e in store.get_executions_by_context(context.id) if e.id in nodes]
        if not executions:
            continue
        records = tuple(sorted(
            (ExecutionRecord(node=nodes[e.id], state=state_name(e),
                             seconds=round((e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000.0, 2),
                             started=e.create_time_since_epoch / 1000.0, execution_id=e.id)
             for e in executions), key=lambda r: (r.started, r.execution_id)))
        runs.append(RunRecord(run_id=context.name, started=context.create_time_since_epoch / 1000.0,
                              executions=records))
    return sorted(runs, key=lambda r: r.started, reverse=True)


def artifact_type_name(store: metadata_store.MetadataStore, artifact: metadata_store_pb2.Artifact) -> str:
    """The registered type name of an artifact (``Model``, ``ExampleStatistics`` ...)."""
    return store.get_artifact_types_by_id([artifact.type_id])[0].name


def latest_artifact(store: metadata_store.MetadataStore, type_name: str) -> metadata_store_pb2.Artifact | None:
    """The newest artifact of ``type_name`` (by creation time), or None if there is none."""
    artifacts = store.get_artifacts_by_type(type_name)
    return max(artifacts, key=lambda a: (a.create_time_since_epoch, a.id)) if artifacts else None


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """One evaluated model: whether it was blessed and where it was pushed.

    Attributes:
      run_id: the pipeline run that evaluated it.
      evaluated_at: Unix seconds.
      model_uri: the Trainer's model artifact.
      evaluation_uri: the ModelEvaluation artifact's folder (``metrics.json`` inside).
      blessed: the Evaluator's verdict.
      reasons: why it was (not) blessed.
      pushed_version: the serving version the Pusher wrote, or None if it was not pushed.
      pushed_destination: the serving folder it was pushed to, or None.
    """

    run_id: str
    evaluated_at: float
    model_uri: str
    evaluation_uri: str | None
    blessed: bool
    reasons: str
    pushed_version: str | None
    pushed_destination: str | None


def _node_of(store: metadata_store.MetadataStore, execution_id: int) -> str:
    """The node id (``Pusher``, ``RankingEvaluator`` ...) of an execution; "" if it has none."""
    for context in store.get_contexts_by_execution(execution_id):
        if store.get_context_types_by_id([context.type_id])[0].name == _NODE_CONTEXT:
            return context.name.rsplit(".", 1)[-1]
    return ""


def _producer_node(store: metadata_store.MetadataStore, artifact: metadata_store_pb2.Artifact) -> str:
    """The node id of the execution that first output ``artifact``; "" if none did."""
    outputs = [e for e in store.get_events_by_artifact_ids([artifact.id]) if e.type == metadata_store_pb2.Event.OUTPUT]
    return _node_of(store, outputs[0].execution_id) if outputs else ""


def model_versions(store: metadata_store.MetadataStore, evaluator_node: str = "RetrievalEvaluator",
                   pusher_node: str = "Pusher") -> list[ModelVersion]:
    """Every blessing verdict of one model in the store with its evaluation and push, newest first.

    Args:
      store: the run's ML Metadata.
      evaluator_node: the node whose blessings count (the retrieval model's; the ranking
        branch's are ``RankingEvaluator`` with ``RankingPusher``).
      pusher_node: the node whose pushes count.

    The evaluation is the ModelEvaluation written by the same execution as the blessing; the push
    is the PushedModel of ``pusher_node`` in the same pipeline run (cached pushes reuse the
    earlier artifact).
    """
    versions = []
    for blessing in store.get_artifacts_by_type(BLESSING_TYPE):
        events = [e for e in store.get_events_by_artifact_ids([blessing.id])
                  if e.type == metadata_store_pb2.Event.OUTPUT]
        if not events or _node_of(store, events[0].execution_id) != evaluator_node:
            continue
        execution = store.get_executions_by_id([events[0].execution_id])[0]
        evaluation = next((a for a in output_artifacts(store, execution)
                           if artifact_type_name(store, a) == EVALUATION_TYPE), None)
        pushed: metadata_store_pb2.Artifact | None = None
        run_id = ""
        for context in store.get_contexts_by_execution(execution.id):
            if store.get_context_types_by_id([context.type_id])[0].name != _PIPELINE_RUN_CONTEXT:
                continue
            run_id = context.name
            for artifact in store.get_artifacts_by_context(context.id):
                if (artifact_type_name(store, artifact) == PUSHED_MODEL_TYPE and _custom(artifact, "pushed")
                        and _producer_node(store, artifact) == pusher_node):
                    pushed = artifact
        versions.append(ModelVersion(
            run_id=run_id, evaluated_at=execution.create_time_since_epoch / 1000.0,
            model_uri=str(_custom(blessing, "current_model") or ""),
            evaluation_uri=evaluation.uri if evaluation is not None else None,
            blessed=bool(_custom(blessing, "blessed")), reasons=str(_custom(blessing, "reasons") or ""),
            pushed_version=str(_custom(pushed, "pushed_version")) if pushed is not None else None,
            pushed_destination=str(_custom(pushed, "pushed_destination")) if pushed is not None else None))
    return sorted(versions, key=lambda v: v.evaluated_at, reverse=True)
