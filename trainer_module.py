"""TFX Trainer and Tuner module: trains the TFRS two-tower model, exports the serving model.

The model is built and trained by :mod:`shoprec.model.training` (the benchmark's path too); this
module wires it into TFX: it reads Transform's examples, carves the validation slice out of the
train period and exports the serving model with a user snapshot of train and eval.

``run_fn`` and ``tuner_fn`` read their settings from ``fn_args.custom_config`` (keys: the fields
of :class:`shoprec.config.TrainConfig`, ``history_length``, ``items_path`` (the catalogue's
``items.csv``) and, for the tuner, ``tuner_trials``).
"""


import dataclasses
import functools
import json
import os
import time
from typing import Any

import keras_tuner
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from shoprec import features
from shoprec.config import TrainConfig
from shoprec.data import canonical, point_in_time
from shoprec.model import export, scann_index, training, two_tower, warm_start

_SNAPSHOT_COLUMNS = (features.USER_ID, features.AGE_GROUP_FEATURE.transformed_name, features.ITEM_ID,
                     features.EVENT_ID, features.TIMESTAMP)
TRAINING_REPORT = "training.json"  # in the Trainer's ModelRun: config, epochs, validation per epoch


def vocabulary_sizes(tft_output: tft.TFTransformOutput,
                     user_id_hash_buckets: int = 0) -> two_tower.VocabularySizes:
    """Embedding table sizes: vocabulary + OOV buckets (+1 padding row for items); hashed user
    ids take ``user_id_hash_buckets`` rows."""

    def rows(feature: features.Feature) -> int:
        name = features.ITEM_ID_VOCAB if feature is features.ITEM_ID_FEATURE else (
            f"{feature.name}_vocab")
        return tft_output.vocabulary_size_by_name(name) + feature.oov_buckets

    return two_tower.VocabularySizes(
        users=user_id_hash_buckets or rows(features.USER_ID_FEATURE),
        age_groups=rows(features.AGE_GROUP_FEATURE),
        items=rows(features.ITEM_ID_FEATURE) + 1, categories=rows(features.CATEGORY_FEATURE),
        brands=rows(features.BRAND_FEATURE))


def read_columns(dataset: tf.data.Dataset, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Concatenates the named columns of one pass over a batched dataset."""
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for batch in dataset:
        for name in names:
            chunks[name].append(batch[name].numpy())
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def user_snapshot(columns: dict[str, np.ndarray], tft_output: tft.TFTransformOutput,
                  history_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's age group and behaviour sequence as of their latest event, as strings.

    Args:
      columns: :data:`_SNAPSHOT_COLUMNS` of every example, train and eval: the pushed model serves
        with everything the data holds, so users whose events all lie in the eval period are known.
      tft_output: Transform's output (the age-group vocabulary).
      history_length: N.

    Returns:
      ``(user_ids, age_groups, histories)``, each ``[users]``; histories are space-joined, built by
      :func:`shoprec.data.point_in_time.latest_history` (the rule ExampleGen and the service use).
    """
    order = np.lexsort((columns[features.EVENT_ID], columns[features.TIMESTAMP], columns[features.USER_ID]))
    users = columns[features.USER_ID][order]
    items = np.char.decode(columns[features.ITEM_ID][order].astype(bytes), "utf-8")
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    age_vocab = np.array(
        tft_output.vocabulary_by_name(f"{features.AGE_GROUP}_vocab") + [b""]).astype(str)
    last_rows = order[ends - 1]
    histories = [export.join_history(list(point_in_time.latest_history(items[start:end], history_length)))
                 for start, end in zip(starts, ends)]
    return (np.array([name.decode() for name in users[starts]], dtype=object),
            age_vocab[np.minimum(columns[features.AGE_GROUP_FEATURE.transformed_name][last_rows],
                                 len(age_vocab) - 1)],
            np.array(histories, dtype=object))


def read_catalogue(items_path: str) -> dict[str, np.ndarray]:
    """The raw catalogue columns from ``items.csv``."""
    items = canonical.read_table(items_path)
    return {f.name: items[f.name].to_numpy() for f in (features.ITEM_ID_FEATURE,)
            + features.ITEM_ATTRIBUTES}


def train_config(custom_config: dict[str, Any]) -> TrainConfig:
    """The TrainConfig fields found in ``custom_config`` (others keep their defaults)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in custom_config.items() if k in names})


# Hyper-parameters the Tuner searches; their values replace TrainConfig's in run_fn.
# (The temperature is not searched: it rescales the loss the tuner compares.)
TUNED = {"learning_rate": (0.002, 0.005, 0.01), "embedding_dim": (32, 64),
         "pooling": two_tower.POOLINGS}
# What run_fn reads of each training example: the model's features, plus what the user snapshot,
# the validation carve-out and all-position training need (read once: the snapshot reuses them).
_READ_COLUMNS = tuple(dict.fromkeys(training.MODEL_COLUMNS + _SNAPSHOT_COLUMNS))


class _Inputs:
    """What both tuner_fn and run_fn read: config, Transform output, the train split's columns
    split into the examples trained on and the held-out validation slice (latest
    ``validation_fraction`` of the train period; the eval split is never read for training)."""

    def __init__(self, fn_args: tfx.components.FnArgs):
        self.config = train_config(fn_args.custom_config)
        if fn_args.hyperparameters:  # the Tuner's best values
            values = keras_tuner.HyperParameters.from_config(fn_args.hyperparameters).values
            self.config = dataclasses.replace(
                self.config, **{k: v for k, v in values.items() if k in TUNED})
            logging.info("using tuned hyper-parameters %s", values)
        self.history_length = int(fn_args.custom_config["history_length"])
        # The Tuner fills transform_graph_path only; the Trainer fills both.
        self.tft_output = tft.TFTransformOutput(fn_args.transform_output
                                                or fn_args.transform_graph_path)
        self._fn_args = fn_args
        read_began = time.perf_counter()
        self.columns = read_columns(self.dataset(fn_args.train_files), _READ_COLUMNS)
        logging.info("read %d train examples in %.1f s", len(self.columns[features.TIMESTAMP]),
                     time.perf_counter() - read_began)
        self.sizes = vocabulary_sizes(self.tft_output, self.config.user_id_hash_buckets)
        held = training.validation_mask(self.columns[features.TIMESTAMP], self.config.validation_fraction)
        self.fitted = {name: values[~held] for name, values in self.columns.items()}
        self.held_out = {name: values[held] for name, values in self.columns.items()}
        logging.info("vocabulary sizes %s; %d training examples, %d held out for validation", self.sizes,
                     int((~held).sum()), int(held.sum()))
        self.base_model = fn_args.base_model if self.config.warm_start else None
        self.catalogue = training.catalogue_from_examples(self.columns, self.sizes.items)
        self.probability = two_tower.sampling_probability(
            self.fitted[features.ITEM_ID_FEATURE.transformed_name], self.sizes.items)

    def dataset(self, files: list[str]) -> tf.data.Dataset:
        """One unshuffled pass over the raw examples in ``files``, through the Transform graph
        (Transform only analyses: applying the graph per batch here costs less than writing and
        reading a transformed copy)."""
        raw = self._fn_args.data_accessor.tf_dataset_factory(
            files, tfxio.TensorFlowDatasetOptions(batch_size=8192, num_epochs=1, shuffle=False),
            self.tft_output.raw_metadata.schema)
        return raw.map(self._transform_layer, num_parallel_calls=tf.data.AUTOTUNE)

    @functools.cached_property
    def _transform_layer(self) -> tf.keras.layers.Layer:
        return self.tft_output.transform_features_layer()

    def validation(self) -> training.HeldOutValidation | None:
        """The held-out slice's NDCG@10 (None: no slice, or no user in it to evaluate)."""
        if not len(self.held_out[features.TIMESTAMP]):
            return None
        validation = training.HeldOutValidation(self.fitted, self.held_out)
        return validation if validation.users else None

    def build_model(self, config: TrainConfig) -> two_tower.TwoTowerModel:
        return training.build_model(self.sizes, config, self.history_length, self.catalogue, self.probability)

    @functools.cached_property
    def vocabularies(self) -> dict[str, warm_start.Vocabulary]:
        """The ids behind the model's embedding tables (Transform's vocabularies)."""
        return warm_start.transform_vocabularies(self.tft_output, self.config.user_id_hash_buckets)

    def warm_started(self, model: two_tower.TwoTowerModel, config: TrainConfig) -> warm_start.WarmStartReport | None:
        """Starts ``model`` from the base model (the last blessed one) when ``warm_start`` is on
        and there is one; None when it starts cold by configuration or for lack of a base."""
        if not self.base_model:
            if config.warm_start:
                logging.info("warm start: no blessed model yet, starting cold")
            return None
        batch = next(iter(training.example_dataset(self.fitted, config).take(1)))
        model.compute_loss(batch, training=False)  # creates the weights
        report = warm_start.warm_start(model, self.vocabularies, warm_start.state_dir(self.base_model))
        logging.info("warm start from %s: %s", self.base_model, report)
        return report


def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
    """TFX Tuner entry point: a small random search over :data:`TUNED` on the held-out slice's loss
    (needs ``validation_fraction`` > 0; the eval split is not read)."""
    inputs = _Inputs(fn_args)
    if not len(inputs.held_out[features.TIMESTAMP]):
        raise ValueError("the Tuner validates on the held-out slice of the train period: set "
                         "validation_fraction > 0")

    def build(hp: keras_tuner.HyperParameters) -> tf.keras.Model:
        chosen = {name: hp.Choice(name, list(values)) for name, values in TUNED.items()}
        return inputs.build_model(dataclasses.replace(inputs.config, **chosen))

    tuner = keras_tuner.RandomSearch(
        build, objective=keras_tuner.Objective("val_total_loss", "min"),
        max_trials=int(fn_args.custom_config.get("tuner_trials", 4)), seed=0,
        directory=fn_args.working_dir, project_name="two_tower")
    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={
        "x": training.example_dataset(inputs.fitted, inputs.config),
        "validation_data": training.example_dataset(inputs.held_out, inputs.config),
        "epochs": inputs.config.epochs, "verbose": 2})


def train_model(inputs: _Inputs, began: float | None = None
                ) -> tuple[two_tower.TwoTowerModel, training.FitResult, warm_start.WarmStartReport | None]:
    """Builds and fits the model on the train split's examples, early-stopping on its held-out
    slice (``began``: when the time budget started; default now); with ``refit``, then trains a
    fresh model on all of them for the best epoch count, unless the time budget stopped the search
    (the refit would spend the budget again on the same epochs; the search's model is kept). With
    ``warm_start``, both start from the base model; the report says what was carried over (None: a
    cold start)."""
    config = inputs.config
    tf.keras.utils.set_random_seed(config.seed)
    model = inputs.build_model(config)
    report = inputs.warm_started(model, config)
    validation = inputs.validation()
    result = training.fit(model, training.example_dataset(inputs.fitted, config), config,
                          validate=validation, log=logging.info, began=began)
    may_refit = config.refit and validation is not None
    if may_refit and result.stopped_by == training.STOPPED_BY_TIME_BUDGET:
        logging.info("no refit: the %.0f s time budget stopped the search after %d epochs, and a refit "
                     "would train as many again", config.time_budget_s, result.epochs_run)
    elif may_refit:
        # The best epoch count, on every train example: the held-out slice is the latest data.
        every = {name: np.concatenate([inputs.fitted[name], inputs.held_out[name]]) for name in inputs.fitted}
        tf.keras.utils.set_random_seed(config.seed)
        model = inputs.build_model(config)
        inputs.warm_started(model, config)
        refit_config = dataclasses.replace(config, epochs=result.best_epoch or result.epochs_run,
                                           time_budget_s=0.0)
        refit = training.fit(model, training.example_dataset(every, refit_config), refit_config, log=logging.info)
        result = dataclasses.replace(result, refit_epochs=refit.epochs_run,
                                     total_seconds=result.total_seconds + refit.total_seconds)
    return model, result, report


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """TFX Trainer entry point: :func:`shoprec.model.training.build_model` and ``fit`` (early
    stopping on the held-out slice of the train period), then the export."""
    began = time.perf_counter()
    inputs = _Inputs(fn_args)
    config, tft_output = inputs.config, inputs.tft_output
    history_length = inputs.history_length
    model, result, report = train_model(inputs, began)
    logging.info("trained %d epochs (kept %d, stopped by %s) in %.1f s; history %s", result.epochs_run,
                 result.best_epoch, result.stopped_by, result.total_seconds, result.history)
    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, TRAINING_REPORT), "w") as f:
        json.dump({"config": dataclasses.asdict(config), **dataclasses.asdict(result),
                   "warm_start": dataclasses.asdict(report) if report else None,
                   "base_model": inputs.base_model}, f, indent=2)
    warm_start.save_state(model, inputs.vocabularies, warm_start.state_dir(fn_args.serving_model_dir))

    export_began = time.perf_counter()
    eval_columns = read_columns(inputs.dataset(fn_args.eval_files), _SNAPSHOT_COLUMNS)
    user_ids, age_groups, histories = user_snapshot(
        {name: np.concatenate([inputs.columns[name], eval_columns[name]]) for name in _SNAPSHOT_COLUMNS},
        tft_output, history_length)
    module = export.RetrievalServingModule(
        tft_output.transform_features_layer(), model.query_tower, model.candidate_tower,
        read_catalogue(fn_args.custom_config["items_path"]), user_ids, age_groups, histories,
        top_k=config.top_k,
        scann=scann_index.ScannConfig() if config.retrieval_index == "scann" else None)
    module.save(fn_args.serving_model_dir)
    logging.info("exported %d catalogue items and %d users to %s in %.1f s", module.catalog_item_ids.shape[0],
                 len(user_ids), fn_args.serving_model_dir, time.perf_counter() - export_began)
