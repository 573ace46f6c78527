"""The TFX pipeline: canonical shop files -> validated examples -> two-tower model -> serving dir.

``create_pipeline`` is pure: it only builds the component graph. Runners add paths, metadata and
Beam arguments (see ``local_runner.py``).
"""

from __future__ import annotations

import json
import os

from tfx import v1 as tfx

from components.anomalies_gate import AnomaliesGate
from components.events_example_gen import EventsExampleGen
from components.retrieval_evaluator import RetrievalEvaluator
from pipeline.run_schema import CURATED_SCHEMA
from shoprec import features
from shoprec.config import MODEL_NAME, EvalConfig, SplitConfig, TrainConfig

PREPROCESSING_FN = "transform_module.preprocessing_fn"
RUN_FN = "trainer_module.run_fn"
TUNER_FN = "trainer_module.tuner_fn"


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

    Returns:
      A ``tfx.dsl.Pipeline`` with ExampleGen, StatisticsGen, ImportSchemaGen, ExampleValidator,
      AnomaliesGate, Transform, Trainer, the latest-blessed-model resolver, RetrievalEvaluator
      and Pusher.
    """
    example_gen = EventsExampleGen(input_base=data_dir, eval_fraction=split.eval_fraction,
                                   history_length=split.history_length)
    schema_gen = tfx.components.ImportSchemaGen(
        schema_file=schema_path)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"])
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"],
                         schema=schema_gen.outputs["schema"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"], schema=gate.outputs["validated_schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={"history_length": split.history_length,
                       "disabled_features": list(disabled_features),
                       "user_id_hash_buckets": train.user_id_hash_buckets},
        # StatisticsGen already profiled the raw data; Transform's own pre/post statistics
        # would double the component's time for nothing the pipeline reads.
        disable_statistics=True)
    custom_config = {field: getattr(train, field) for field in train.__dataclass_fields__}
    custom_config.update(history_length=split.history_length,
                         items_path=os.path.join(data_dir, features.ITEMS_FILE))
    tuner = None
    if tuner_trials > 0:
        tuner = tfx.components.Tuner(
            tuner_fn=TUNER_FN,
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=gate.outputs["validated_schema"],
            custom_config={**custom_config, "tuner_trials": tuner_trials})
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=gate.outputs["validated_schema"],
        hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
        custom_config=custom_config)
    last_blessed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = RetrievalEvaluator(
        model=trainer.outputs["model"], examples=example_gen.outputs["examples"],
        baseline_model=last_blessed.outputs["model"],
        items_path=os.path.join(data_dir, features.ITEMS_FILE),
        regression_tolerance=evaluation.regression_tolerance,
        ks=json.dumps(list(evaluation.ks)), blessing_metric=evaluation.blessing_metric,
        min_blessing_value=evaluation.min_blessing_value,
        must_beat_popularity=int(evaluation.must_beat_popularity))
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=os.path.join(serving_dir, model_name))))
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[example_gen, schema_gen, statistics_gen, example_validator, gate, transform,
                    *([tuner] if tuner else []), trainer, last_blessed, evaluator, pusher],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )
