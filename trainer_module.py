"""TFX Trainer module: trains the TFRS two-tower model and exports the serving SavedModel.

``run_fn`` reads its settings from ``fn_args.custom_config`` (keys: the fields of
:class:`shoprec.config.TrainConfig` plus ``items_path``, the catalogue's ``items.csv``).
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import dataclasses  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
from absl import logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx_bsl.public import tfxio  # noqa: E402

from shoprec import features  # noqa: E402
from shoprec.config import TrainConfig  # noqa: E402
from shoprec.model import export, two_tower  # noqa: E402

_SNAPSHOT_COLUMNS = (features.USER_ID_FEATURE.transformed_name,
                     features.AGE_GROUP_FEATURE.transformed_name,
                     features.HISTORY_FEATURE.transformed_name,
                     features.ITEM_ID_FEATURE.transformed_name, features.TIMESTAMP)


def vocabulary_sizes(tft_output: tft.TFTransformOutput) -> two_tower.VocabularySizes:
    """Embedding table sizes: vocabulary + OOV buckets (+1 padding row for items)."""

    def rows(feature: features.Feature) -> int:
        name = features.ITEM_ID_VOCAB if feature is features.ITEM_ID_FEATURE else (
            f"{feature.name}_vocab")
        return tft_output.vocabulary_size_by_name(name) + feature.oov_buckets

    return two_tower.VocabularySizes(
        users=rows(features.USER_ID_FEATURE), age_groups=rows(features.AGE_GROUP_FEATURE),
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
    """Each training user's age group and latest items (history + last item), as strings.

    Returns:
      ``(user_ids, age_groups, histories)``, each ``[users]``; histories are space-joined.
    """
    users = columns[features.USER_ID_FEATURE.transformed_name]
    latest = np.lexsort((columns[features.TIMESTAMP], users))
    last_rows = latest[np.r_[users[latest][1:] != users[latest][:-1], True]]
    user_vocab = np.array(tft_output.vocabulary_by_name(f"{features.USER_ID}_vocab")).astype(str)
    age_vocab = np.array(
        tft_output.vocabulary_by_name(f"{features.AGE_GROUP}_vocab") + [b""]).astype(str)
    item_vocab = np.array([""] + [v.decode() for v in
                                  tft_output.vocabulary_by_name(features.ITEM_ID_VOCAB)] + [""])
    histories = []
    for row in last_rows:
        indices = columns[features.HISTORY_FEATURE.transformed_name][row]
        indices = np.append(indices[indices > 0], columns[features.ITEM_ID_FEATURE.transformed_name][row])
        histories.append(export.join_history([item_vocab[i] for i in indices[-history_length:]]))
    return (user_vocab[users[last_rows]],
            age_vocab[np.minimum(columns[features.AGE_GROUP_FEATURE.transformed_name][last_rows],
                                 len(age_vocab) - 1)],
            np.array(histories, dtype=object))


def read_catalogue(items_path: str) -> dict[str, np.ndarray]:
    """The raw catalogue columns from ``items.csv``."""
    with tf.io.gfile.GFile(items_path) as f:
        items = pd.read_csv(f, dtype={features.ITEM_ID: str, features.CATEGORY: str,
                                      features.BRAND: str})
    return {f.name: items[f.name].to_numpy() for f in (features.ITEM_ID_FEATURE,)
            + features.ITEM_ATTRIBUTES}


def train_config(custom_config: dict[str, Any]) -> TrainConfig:
    """The TrainConfig fields found in ``custom_config`` (others keep their defaults)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in custom_config.items() if k in names})


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """TFX Trainer entry point."""
    config = train_config(fn_args.custom_config)
    history_length = int(fn_args.custom_config["history_length"])
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    schema = tft_output.transformed_metadata.schema

    def dataset(files: list[str], shuffle: bool) -> tf.data.Dataset:
        return fn_args.data_accessor.tf_dataset_factory(
            files, tfxio.TensorFlowDatasetOptions(batch_size=config.batch_size, num_epochs=1,
                                                  shuffle=shuffle, shuffle_seed=0), schema)

    columns = read_columns(dataset(fn_args.train_files, shuffle=False), _SNAPSHOT_COLUMNS)
    sizes = vocabulary_sizes(tft_output)
    logging.info("vocabulary sizes %s; %d training examples", sizes,
                 len(columns[features.TIMESTAMP]))
    probability = None
    if config.logq_correction:
        probability = two_tower.sampling_probability(
            columns[features.ITEM_ID_FEATURE.transformed_name], sizes.items)

    tf.keras.utils.set_random_seed(0)
    model = two_tower.TwoTowerModel(sizes, probability, output_dim=config.embedding_dim,
                                    temperature=config.temperature, pooling=config.pooling,
                                    history_length=history_length)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=config.learning_rate))
    history = model.fit(dataset(fn_args.train_files, shuffle=True), epochs=config.epochs,
                        validation_data=dataset(fn_args.eval_files, shuffle=False), verbose=2)
    logging.info("training losses %s", history.history)

    user_ids, age_groups, histories = user_snapshot(columns, tft_output, history_length)
    module = export.RetrievalServingModule(
        tft_output.transform_features_layer(), model.query_tower, model.candidate_tower,
        read_catalogue(fn_args.custom_config["items_path"]), user_ids, age_groups, histories,
        top_k=config.top_k)
    module.save(fn_args.serving_model_dir)
    logging.info("exported %d catalogue items to %s", module.catalog_item_ids.shape[0],
                 fn_args.serving_model_dir)
