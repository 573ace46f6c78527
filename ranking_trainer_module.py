"""TFX Trainer module of the ranking model: trains the DCN-v2 and its logistic-regression baseline.

``run_fn`` reads ``fn_args.custom_config``: the fields of :class:`shoprec.config.RankingConfig`,
``items_path`` and ``users_path`` (the catalogue and the users, for the serving tables). It
exports the DCN-v2 to ``fn_args.serving_model_dir`` (what the Evaluator scores and the Pusher
pushes) and the logistic regression, trained on the same transformed features in the same run,
to :func:`baseline_model_dir` beside it (what ``bench/ranking.py`` compares against).
"""


import dataclasses
import json
import math
import os
from typing import Any, Callable

import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from shoprec import features
from shoprec.config import RankingConfig
from shoprec.data import canonical
from shoprec.model import ranking

BASELINE_DIR = "Format-Baseline-LogisticRegression"  # beside Format-Serving in the Model artifact
TRAINING_REPORT = "ranking_training.json"  # in fn_args.model_run_dir


def baseline_model_dir(serving_model_dir: str) -> str:
    """Where the logistic-regression baseline of a ranking Model artifact is exported."""
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), BASELINE_DIR)


def ranking_config(custom_config: dict[str, Any]) -> RankingConfig:
    """The RankingConfig fields found in ``custom_config`` (others keep their defaults)."""
    names = {f.name for f in dataclasses.fields(RankingConfig)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in custom_config.items() if k in names}
    return RankingConfig(**values)


def vocabulary_rows(tft_output: tft.TFTransformOutput) -> dict[str, int]:
    """Embedding rows (vocabulary + OOV buckets) of each categorical ranking feature."""
    return {f.transformed_name: tft_output.vocabulary_size_by_name(f.vocabulary_name)
            + f.oov_buckets for f in features.RANKING_FEATURES if f.kind == "categorical"}


def epochs_within(config: RankingConfig, steps_per_epoch: int) -> int:
    """The most whole epochs, of ``config.epochs``, within ``config.max_steps``; at least one."""
    return max(1, min(config.epochs, math.floor(config.max_steps / max(steps_per_epoch, 1))))


def example_batches(raw: tf.data.Dataset, transform_layer: Callable[[dict], dict], config: RankingConfig,
                    shuffle: bool) -> tf.data.Dataset:
    """Batches of ``config.batch_size`` transformed examples, from batches of raw ones.

    The Transform graph is applied here (RankingTransform only analyses: writing transformed
    copies cost more than applying the graph to each batch). RankingExampleGen writes the
    examples in time order; with ``shuffle`` they are shuffled whole (up to
    ``config.shuffle_buffer``), afresh each epoch, after the cache. TFXIO's own shuffle holds
    10,000 records, so its batches drifted through the train period in time order, and a cache
    after it froze that order for every epoch.
    """
    examples = raw.map(transform_layer, num_parallel_calls=tf.data.AUTOTUNE).unbatch().cache()
    if shuffle:
        examples = examples.shuffle(config.shuffle_buffer, seed=0, reshuffle_each_iteration=True)
    return examples.batch(config.batch_size)


def _train(kind: str, config: RankingConfig, rows: dict[str, int], train: tf.data.Dataset,
           evaluation: tf.data.Dataset, epochs: int) -> tuple[ranking.RankingModel, dict[str, float]]:
    tf.keras.utils.set_random_seed(0)
    model = ranking.RankingModel(rows, config, kind=kind)
    learning_rate = config.learning_rate if kind == "dcn" else config.baseline_learning_rate
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate))
    model.fit(train, epochs=epochs, verbose=2)
    metrics = model.evaluate(evaluation, return_dict=True, verbose=0)
    logging.info("%s eval metrics %s", kind, metrics)
    return model, {name: float(value) for name, value in metrics.items()}


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """TFX Trainer entry point; see the module docstring."""
    config = ranking_config(fn_args.custom_config)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    transform_layer = tft_output.transform_features_layer()

    def dataset(files: list[str], shuffle: bool) -> tf.data.Dataset:
        raw = fn_args.data_accessor.tf_dataset_factory(
            files, tfxio.TensorFlowDatasetOptions(batch_size=config.batch_size, num_epochs=1, shuffle=False),
            tft_output.raw_metadata.schema)
        return example_batches(raw, transform_layer, config, shuffle)

    train, evaluation = dataset(fn_args.train_files, True), dataset(fn_args.eval_files, False)
    steps_per_epoch = int(train.reduce(0, lambda count, _: count + 1))  # one pass, which fills the cache
    epochs = epochs_within(config, steps_per_epoch)
    logging.info("training %d of %d epochs of %d steps (max_steps %d)", epochs, config.epochs, steps_per_epoch,
                 config.max_steps)
    rows = vocabulary_rows(tft_output)
    items = canonical.read_table(fn_args.custom_config["items_path"])
    users = canonical.read_table(fn_args.custom_config["users_path"])
    catalogue = {f.name: items[f.name].to_numpy() for f in (features.ITEM_ID_FEATURE,) + features.ITEM_ATTRIBUTES}
    report = {}
    for kind, export_dir in (("dcn", fn_args.serving_model_dir),
                             ("logistic", baseline_model_dir(fn_args.serving_model_dir))):
        model, report[kind] = _train(kind, config, rows, train, evaluation, epochs)
        ranking.RankingServingModule(tft_output.transform_features_layer(), model, catalogue,
                                     users[features.USER_ID].to_numpy(),
                                     users[features.AGE_GROUP].to_numpy()).save(export_dir)
    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, TRAINING_REPORT), "w") as f:
        json.dump({"eval": report, "config": dataclasses.asdict(config), "epochs": epochs,
                   "steps_per_epoch": steps_per_epoch}, f, indent=2)
