"""TFX Transform module of the ranking model: raw ranking features -> model features.

* every categorical ranking feature (``features.RANKING_FEATURES``) gets a vocabulary with its
  OOV buckets (``RankingFeature.vocabulary_name``), so an unknown user, item or scene maps to a bucket;
  features that share one (``context_category`` and ``category``) are mapped with one vocabulary,
  computed over the values of all of them;
* ``position`` is clipped to ``[0, features.MAX_POSITION]``;
* ``price`` becomes the z-score of ``log(price)``; ``retrieval_score`` (a cosine) passes as is;
* the labels ``clicked`` and ``purchased`` pass as float32 (absent at serving: the serving
  signature's Transform layer computes only what the request's features feed).
"""


import tensorflow as tf
import tensorflow_transform as tft

from shoprec import features


def _dense(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """``[batch, 1]`` -> ``[batch]``."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(x, default_value="" if x.dtype == tf.string else 0)
    return tf.squeeze(x, axis=1)


def preprocessing_fn(inputs: dict[str, tf.Tensor | tf.SparseTensor]) -> dict[str, tf.Tensor]:
    """tf.Transform callback; see the module docstring."""
    outputs: dict[str, tf.Tensor] = {}
    by_vocabulary: dict[str, list[features.RankingFeature]] = {}
    for feature in features.RANKING_FEATURES:
        if feature.kind == "categorical":
            by_vocabulary.setdefault(feature.vocabulary_name, []).append(feature)
    for vocabulary_name, members in by_vocabulary.items():
        values = [_dense(inputs[member.name]) for member in members]
        vocabulary = tft.vocabulary(tf.concat(values, axis=0), vocab_filename=vocabulary_name)
        for member, member_values in zip(members, values):
            outputs[member.transformed_name] = tft.apply_vocabulary(member_values, vocabulary,
                                                                    num_oov_buckets=members[0].oov_buckets)
    for feature in features.RANKING_FEATURES:
        if feature.kind == "categorical":
            continue
        values = _dense(inputs[feature.name])
        if feature.kind == "position":
            outputs[feature.transformed_name] = tf.clip_by_value(tf.cast(values, tf.int64), 0, features.MAX_POSITION)
        elif feature.name == features.PRICE:
            outputs[feature.transformed_name] = tft.scale_to_z_score(tf.math.log(tf.maximum(values, 1e-3)))
        else:
            outputs[feature.transformed_name] = tf.cast(values, tf.float32)
    for label in features.RANKING_LABELS:
        outputs[label] = tf.cast(_dense(inputs[label]), tf.float32)
    return outputs
