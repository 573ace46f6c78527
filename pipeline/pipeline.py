"""The TFX pipeline: canonical shop files -> validated examples -> two-tower model -> serving dir,
and the ranking branch: impressions -> ranking examples -> DCN-v2 -> TFMA Evaluator -> serving dir.

``create_pipeline`` is pure: it only builds the component graph. Runners add paths, metadata and
Beam arguments (see ``local_runner.py``).
"""

from __future__ import annotations

import json
import os

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.anomalies_gate import AnomaliesGate
from components.drift_gate import SkewGate, SpanDriftGate
from components.events_example_gen import EventsExampleGen
from components.idempotent_pusher import Executor as IdempotentPusherExecutor
from components.infra_validator import local_infra_validator
from components.ranking_example_gen import RankingExampleGen
from components.retrieval_evaluator import RetrievalEvaluator
from pipeline.run_schema import CURATED_SCHEMA
from shoprec import features
from shoprec.config import (
    MODEL_NAME,
    RANKING_MODEL_NAME,
    EvalConfig,
    RankingConfig,
    SplitConfig,
    TrainConfig,
)
from shoprec.data.spans import SpanTurn

PREPROCESSING_FN = "transform_module.preprocessing_fn"
RUN_FN = "trainer_module.run_fn"
TUNER_FN = "trainer_module.tuner_fn"
RANKING_PREPROCESSING_FN = "ranking_transform_module.preprocessing_fn"
RANKING_RUN_FN = "ranking_trainer_module.run_fn"

# Node ids. Both resolvers filter by producer, so neither branch sees the other's models.
DRIFT_GATE = "DriftGate"
SKEW_GATE = "SkewGate"
TRAINER = "Trainer"
RETRIEVAL_EVALUATOR = "RetrievalEvaluator"
INFRA_VALIDATOR = "InfraValidator"
RANKING_EXAMPLE_GEN = "RankingExampleGen"
RANKING_TRANSFORM = "RankingTransform"
RANKING_TRAINER = "RankingTrainer"
RANKING_RESOLVER = "ranking_model_resolver"
RANKING_EVALUATOR = "RankingEvaluator"
RANKING_PUSHER = "RankingPusher"
RANKING_SLICES = (features.SCENE, features.CATEGORY, features.USER_SEGMENT)
# Both Pushers: TFX's, except that a model identical to the serving version is not copied again
# (the standard Evaluator re-blesses a cached model whose baseline is itself).
IDEMPOTENT_PUSH = executor_spec.ExecutorClassSpec(IdempotentPusherExecutor)


def ranking_eval_config(ranking: RankingConfig) -> tfma.EvalConfig:
    """TFMA config of the ranking model: click AUC, log loss, calibration and its plot, overall and
    by scene, category and new vs returning users; blessing = AUC floor + no regression."""
    auc_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": ranking.min_auc}),
        change_threshold=tfma.GenericChangeThreshold(direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                                                     absolute={"value": -ranking.regression_tolerance}))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=features.SIGNATURE_RANK_EXAMPLES, label_key=features.CLICKED,
                                    prediction_key=features.OUTPUT_CLICK_PROBABILITY)],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[name]) for name in RANKING_SLICES],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="ExampleCount"),
            # The blessing reads the overall slice only: small slices are reported, not gated.
            tfma.MetricConfig(class_name="AUC", per_slice_thresholds=[
                tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=auc_threshold)]),
            # TFMA's own log loss: the Keras metric's wrapper cost 4% of the evaluator's time.
            tfma.MetricConfig(class_name="BinaryCrossEntropy", config='{"name": "log_loss"}'),
            tfma.MetricConfig(class_name="Calibration"),
            tfma.MetricConfig(class_name="MeanLabel"),
            tfma.MetricConfig(class_name="MeanPrediction"),
            tfma.MetricConfig(class_name="CalibrationPlot", config='{"num_buckets": 20}'),
        ])])


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_dir: str,
    serving_dir: str,
    metadata_connection_config: tfx.orchestration.metadata.ConnectionConfig | None = None,
    beam_pipeline_args: list[str] | None = None,
    split: SplitConfig = SplitConfig(),
    train: TrainConfig = TrainConfig(),
    evaluation: EvalConfig = EvalConfig(),
    schema_path: str = CURATED_SCHEMA,
    disabled_features: tuple[str, ...] = (),
    model_name: str = MODEL_NAME,
    enable_cache: bool = True,
    tuner_trials: int = 0,
    ranking: RankingConfig | None = RankingConfig(),
    ranking_model_name: str = RANKING_MODEL_NAME,
    infra_validation: bool = False,
    spans: SpanTurn | None = None,
    monitoring_config: str = "",
) -> tfx.dsl.Pipeline:
    """Builds the pipeline.

    Args:
      pipeline_name: name in ML Metadata.
      pipeline_root: where artifacts are written.
      data_dir: folder with events.csv, items.csv and users.csv (docs/data_schema.md).
      serving_dir: the Pusher writes blessed models to ``<serving_dir>/<model_name>/<version>/``.
      metadata_connection_config: ML Metadata store; None lets the runner decide.
      beam_pipeline_args: arguments for Beam-based components.
      split: the time split and behaviour-sequence length.
      train: two-tower hyper-parameters.
      evaluation: metrics cut-offs and the blessing rule.
      schema_path: the schema to validate against (see ``run_schema.prepare_schema``).
      disabled_features: raw features the data does not really have (filled by the importer);
        Transform turns them into a constant, so they carry no signal.
      model_name: TF Serving model name.
      enable_cache: reuse the outputs of components whose inputs did not change.
      tuner_trials: when > 0, a Tuner (KerasTuner random search over learning rate, embedding
        width and pooling) runs this many trials first and the Trainer uses its best values.
      ranking: the ranking model's settings; None leaves the ranking branch out.
      ranking_model_name: TF Serving name of the ranking model (its own folder under
        ``serving_dir``).
      infra_validation: run the retrieval model in a model server before the Pusher
        (LocalInfraValidator, LOAD_AND_QUERY on eval examples); the Pusher then needs its
        blessing too (docs/production_loop.md).
      spans: a turn of the production loop (:func:`shoprec.data.spans.prepare_turn`): ``data_dir``
        is its window; ExampleGen resolves the span through TFX's input pattern over the
        windows folder; before Transform a SpanDriftGate compares the new span with the previous
        one and a SkewGate the new span (what the service logged) with the training split: a
        drift or skew beyond its threshold stops the turn (docs/production_loop.md).
      monitoring_config: the gates' thresholds, ``MonitoringConfig.to_json()``; "" for the
        defaults (docs/monitoring.md).

    Returns:
      A ``tfx.dsl.Pipeline`` with ExampleGen, StatisticsGen, ImportSchemaGen, ExampleValidator,
      AnomaliesGate, Transform, Trainer, the latest-blessed-model resolver, RetrievalEvaluator
      and Pusher; and, with ``ranking``, RankingExampleGen, RankingTransform, RankingTrainer,
      the latest-blessed-ranking-model resolver, RankingEvaluator (TFX Evaluator) and
      RankingPusher (docs/ranking.md).
    """
    example_gen = EventsExampleGen(input_base=spans.windows_dir if spans else data_dir,
                                   eval_fraction=split.eval_fraction, history_length=split.history_length,
                                   spans=spans is not None)
    schema_gen = tfx.components.ImportSchemaGen(
        schema_file=schema_path)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"])
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"],
                         schema=schema_gen.outputs["schema"])
    drift_nodes: list = []
    validated_schema = gate.outputs["validated_schema"]
    if spans is not None:
        drift_gate = SpanDriftGate(schema=validated_schema, span_dir=spans.span_dir,
                                   previous_span_dir=spans.previous_span_dir or "",
                                   config=monitoring_config).with_id(DRIFT_GATE)
        # The new span is what the service logged (export_span): skew against the training split.
        skew_gate = SkewGate(statistics=statistics_gen.outputs["statistics"],
                             schema=drift_gate.outputs["validated_schema"],
                             serving_data_dir=spans.span_dir, config=monitoring_config).with_id(SKEW_GATE)
        drift_nodes = [drift_gate, skew_gate]
        validated_schema = skew_gate.outputs["validated_schema"]
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"], schema=validated_schema,
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={"history_length": split.history_length,
                       "disabled_features": list(disabled_features),
                       "user_id_hash_buckets": train.user_id_hash_buckets},
        # StatisticsGen already profiled the raw data; Transform's own pre/post statistics
        # would double the component's time for nothing the pipeline reads.
        disable_statistics=True,
        # Analyse only: the Trainer (and Tuner) apply the graph to the raw examples as they read
        # them, as the exported model does at serving; a transformed copy cost more to write.
        materialize=False)
    custom_config = {field: getattr(train, field) for field in train.__dataclass_fields__}
    custom_config.update(history_length=split.history_length,
                         items_path=os.path.join(data_dir, features.ITEMS_FILE))
    tuner = None
    if tuner_trials > 0:
        tuner = tfx.components.Tuner(
            tuner_fn=TUNER_FN,
            examples=example_gen.outputs["examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=validated_schema,
            custom_config={**custom_config, "tuner_trials": tuner_trials})
    last_blessed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model, producer_component_id=TRAINER,
                              output_key="model"),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing,
                                       producer_component_id=RETRIEVAL_EVALUATOR, output_key="blessing"),
    ).with_id("latest_blessed_model_resolver")
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=validated_schema,
        hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
        # warm start: the last blessed model (only then, so that a cold run's cache key does not
        # change when a model is blessed)
        base_model=last_blessed.outputs["model"] if train.warm_start else None,
        custom_config=custom_config)
    evaluator = RetrievalEvaluator(
        model=trainer.outputs["model"], examples=example_gen.outputs["examples"],
        baseline_model=last_blessed.outputs["model"],
        items_path=os.path.join(data_dir, features.ITEMS_FILE),
        regression_tolerance=evaluation.regression_tolerance,
        ks=json.dumps(list(evaluation.ks)), blessing_metric=evaluation.blessing_metric,
        min_blessing_value=evaluation.min_blessing_value,
        must_beat_popularity=int(evaluation.must_beat_popularity))
    infra_validator = local_infra_validator(
        trainer.outputs["model"], example_gen.outputs["examples"], model_name=model_name,
    ).with_id(INFRA_VALIDATOR) if infra_validation else None
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        infra_blessing=infra_validator.outputs["blessing"] if infra_validator else None,
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=os.path.join(serving_dir, model_name))),
        custom_executor_spec=IDEMPOTENT_PUSH)
    ranking_components = [] if ranking is None else _ranking_branch(
        trainer.outputs["model"], data_dir, serving_dir, split, ranking, ranking_model_name)
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[example_gen, schema_gen, statistics_gen, example_validator, gate, *drift_nodes, transform, *([tuner] if tuner else []), last_blessed, trainer, evaluator,
                    *([infra_validator] if infra_validator else []), pusher,
                    *ranking_components],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )


def _ranking_branch(retrieval_model: tfx.dsl.Channel, data_dir: str, serving_dir: str, split: SplitConfig,
                    ranking: RankingConfig, model_name: str) -> list:
    """The ranking nodes; see :func:`create_pipeline` and docs/ranking.md."""
    example_gen = RankingExampleGen(
        retrieval_model=retrieval_model, data_dir=data_dir, eval_fraction=split.eval_fraction,
        history_length=split.history_length, sampled_negatives=ranking.sampled_negatives,
    ).with_id(RANKING_EXAMPLE_GEN)
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"], schema=example_gen.outputs["schema"],
        preprocessing_fn=RANKING_PREPROCESSING_FN, disable_statistics=True,
        # Analyse only: the RankingTrainer applies the graph to the raw examples as it reads them
        # (the Evaluator scores raw examples anyway), instead of reading a transformed copy.
        materialize=False).with_id(RANKING_TRANSFORM)
    custom_config = ranking.training_fields()
    custom_config.update(items_path=os.path.join(data_dir, features.ITEMS_FILE),
                         users_path=os.path.join(data_dir, features.USERS_FILE))
    trainer = tfx.components.Trainer(
        run_fn=RANKING_RUN_FN, examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"], schema=example_gen.outputs["schema"],
        custom_config=custom_config).with_id(RANKING_TRAINER)
    last_blessed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model, producer_component_id=RANKING_TRAINER,
                              output_key="model"),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing,
                                       producer_component_id=RANKING_EVALUATOR, output_key="blessing"),
    ).with_id(RANKING_RESOLVER)
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
        baseline_model=last_blessed.outputs["model"], eval_config=ranking_eval_config(ranking),
        example_splits=["eval"]).with_id(RANKING_EVALUATOR)
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(filesystem=tfx.proto.PushDestination.Filesystem(
            base_directory=os.path.join(serving_dir, model_name))),
        custom_executor_spec=IDEMPOTENT_PUSH).with_id(RANKING_PUSHER)
    return [example_gen, transform, trainer, last_blessed, evaluator, pusher]
