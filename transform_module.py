"""TFX Transform module: raw example features -> model features (see shoprec.features).

* ids and categorical values get vocabularies with OOV buckets, so an unknown value maps to a
  generic bucket instead of failing;
* ``item_id`` and ``history`` share one item vocabulary, shifted by one so that index 0 is the
  padding of the behaviour sequence (item index k -> k + 1, OOV -> vocabulary size + 1);
* ``history`` becomes a dense ``[batch, history_length]`` int64 matrix, most recent last,
  zero-padded on the right;
* ``price`` becomes the z-score of ``log(price)``;
* ``timestamp`` and the raw ``user_id`` pass through unchanged, for the trainer's user snapshot;
* with ``custom_config["user_id_hash_buckets"] > 0``, user ids are hashed into that many buckets
  instead of getting a vocabulary (for very many users);
* a feature listed in ``custom_config["disabled_features"]`` (an optional field the importer
  filled with a default) becomes a constant, so the towers get no signal from it.
"""


import tensorflow as tf
import tensorflow_transform as tft

from shoprec import features
from shoprec.config import SplitConfig

HISTORY_LENGTH = SplitConfig.history_length  # default; the pipeline passes its own in custom_config


def _dense(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """``[batch, 1]`` (dense or sparse with one value per row) -> ``[batch]``."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(x, default_value="" if x.dtype == tf.string else 0)
    return tf.squeeze(x, axis=1)


def item_index(item_ids: tf.Tensor, vocabulary: tf.Tensor) -> tf.Tensor:
    """Looks item id strings up in the shared item vocabulary, shifted by one (0 = padding)."""
    return tft.apply_vocabulary(
        item_ids, vocabulary, num_oov_buckets=features.ITEM_ID_FEATURE.oov_buckets) + 1


def history_matrix(history: tf.SparseTensor, vocabulary: tf.Tensor, length: int) -> tf.Tensor:
    """Variable-length history strings -> ``[batch, length]`` item indices, 0-padded.

    Keeps the *last* ``length`` items of each row (the most recent ones).
    """
    ragged = tf.RaggedTensor.from_sparse(history)
    ragged = ragged[:, -length:]
    indices = tf.ragged.map_flat_values(item_index, ragged, vocabulary)
    return indices.to_tensor(default_value=0, shape=[None, length])


def preprocessing_fn(inputs: dict[str, tf.Tensor | tf.SparseTensor],
                     custom_config: dict | None = None) -> dict[str, tf.Tensor]:
    """tf.Transform callback; see the module docstring for what each output holds.

    Args:
      inputs: raw features, as parsed with the curated schema.
      custom_config: ``history_length`` (default SplitConfig's), ``disabled_features`` and
        ``user_id_hash_buckets``, from the pipeline.
    """
    history_length = int((custom_config or {}).get("history_length", HISTORY_LENGTH))
    disabled = set((custom_config or {}).get("disabled_features", ()))
    user_id_hash_buckets = int((custom_config or {}).get("user_id_hash_buckets", 0))
    outputs: dict[str, tf.Tensor] = {}
    item_ids = _dense(inputs[features.ITEM_ID])
    item_vocabulary = tft.vocabulary(item_ids, vocab_filename=features.ITEM_ID_VOCAB)
    outputs[features.ITEM_ID_FEATURE.transformed_name] = item_index(item_ids, item_vocabulary)
    outputs[features.HISTORY_FEATURE.transformed_name] = history_matrix(
        inputs[features.HISTORY], item_vocabulary, history_length)
    user_ids = _dense(inputs[features.USER_ID])
    outputs[features.USER_ID] = user_ids  # raw, for the trainer's user snapshot only
    vocabulary_features = (features.USER_ID_FEATURE, features.AGE_GROUP_FEATURE,
                           features.CATEGORY_FEATURE, features.BRAND_FEATURE)
    if user_id_hash_buckets:  # very many users: a fixed-size hashed id instead of a vocabulary
        outputs[features.USER_ID_FEATURE.transformed_name] = tf.strings.to_hash_bucket_fast(
            user_ids, user_id_hash_buckets)
        vocabulary_features = vocabulary_features[1:]
    for feature in vocabulary_features:
        values = _dense(inputs[feature.name])
        if feature.name in disabled:  # one vocabulary entry: a constant index, no signal
            values = tf.fill(tf.shape(values), features.UNKNOWN)
        outputs[feature.transformed_name] = tft.compute_and_apply_vocabulary(
            values, num_oov_buckets=feature.oov_buckets, vocab_filename=f"{feature.name}_vocab")
    log_price = tf.math.log(tf.maximum(_dense(inputs[features.PRICE]), 1e-3))
    if features.PRICE in disabled:
        log_price = tf.zeros_like(log_price)
    outputs[features.PRICE_FEATURE.transformed_name] = tft.scale_to_z_score(log_price)
    # Passed through raw for the trainer's user snapshot only (each user's behaviour sequence as
    # of the end of the data, shoprec.data.point_in_time); no tower reads them.
    outputs[features.TIMESTAMP] = _dense(inputs[features.TIMESTAMP])
    outputs[features.EVENT_ID] = _dense(inputs[features.EVENT_ID])
    outputs[features.ITEM_ID] = item_ids
    return outputs
