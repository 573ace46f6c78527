"""The ranking model: a TFRS DCN-v2 that predicts click and purchase of a shown item.

Inputs are the transformed ranking features (``features.RANKING_FEATURES``): embeddings of the
user, age group, item, category, brand, scene, position, context item and context category (in
the category's embedding table), plus the normalised log price and the retrieval score. The
concatenation ``x0`` ``[B, F]`` goes through ``cross_layers`` :class:`tfrs.layers.dcn.Cross` layers (``x_{l+1} = x0 * (W x_l + b) + x_l``),
then a ReLU MLP, then two logits: click and purchase (both per impression: P(purchase) is
P(click and buy)). The loss is ``BCE(click) + purchase_weight * BCE(purchase)``.

``kind="logistic"`` builds the baseline on the same raw features: a logistic regression (each
categorical value and position its own weight, i.e. one-hot, plus linear numeric terms), one per
task.

:class:`RankingServingModule` is the export: raw request features in (see
``features.RANKING_REQUEST_FEATURES``), the Transform graph and the model inside, the item
attributes and the users' age groups looked up from tables taken from the training data.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from shoprec import features
from shoprec.config import RANKING_CANDIDATES, RankingConfig
from shoprec.model import warmup

CLICK_LOGIT = "click_logit"
PURCHASE_LOGIT = "purchase_logit"


class RankingModel(tfrs.models.Model):
    """DCN-v2 (or logistic regression) over transformed ranking features, two tasks.

    Args:
      vocabulary_rows: transformed feature name -> embedding rows (vocabulary + OOV buckets) of
        every categorical ranking feature.
      config: widths, depth, the purchase loss weight.
      kind: ``"dcn"`` or ``"logistic"``.

    Raises:
      ValueError: a categorical feature without its vocabulary size, or an unknown kind.
    """

    def __init__(self, vocabulary_rows: dict[str, int], config: RankingConfig = RankingConfig(),
                 kind: Literal["dcn", "logistic"] = "dcn") -> None:
        super().__init__()
        if kind not in ("dcn", "logistic"):
            raise ValueError(f"kind must be dcn or logistic, got {kind!r}")
        self.kind = kind
        self._purchase_weight = config.purchase_weight
        self._embeddings: dict[str, tf.keras.layers.Layer] = {}
        # transformed input -> the embedding table it is looked up in (the DCN's shared features
        # use their owner's table)
        self._table_of: dict[str, str] = {}
        width = 1 if kind == "logistic" else None
        l2 = config.l2 if kind == "dcn" else config.baseline_l2
        for feature in features.RANKING_FEATURES:
            if feature.kind == "numeric":
                continue
            if feature.shares and kind == "dcn":
                self._table_of[feature.transformed_name] = features.RANKING_FEATURES_BY_NAME[
                    feature.shares].transformed_name
                continue
            self._table_of[feature.transformed_name] = feature.transformed_name
            if feature.kind == "position":
                rows = features.MAX_POSITION + 1
            elif feature.transformed_name in vocabulary_rows:
                rows = vocabulary_rows[feature.transformed_name]
            else:
                raise ValueError(f"no vocabulary size for {feature.transformed_name}")
            # logistic: one weight per value and task (2 columns); dcn: an embedding
            self._embeddings[feature.transformed_name] = tf.keras.layers.Embedding(
                rows, 2 if width else feature.embedding_dim, name=f"{feature.name}_embedding",
                embeddings_regularizer=tf.keras.regularizers.l2(l2) if l2 else None)
        self._numeric = tuple(f.transformed_name for f in features.RANKING_FEATURES if f.kind == "numeric")
        if kind == "dcn":
            self._cross = [tfrs.layers.dcn.Cross(kernel_initializer="glorot_uniform", name=f"cross_{i}")
                           for i in range(config.cross_layers)]
            self._deep = [tf.keras.layers.Dense(units, activation="relu") for units in config.deep_layers]
            self._head = tf.keras.layers.Dense(2, name="logits")
        else:
            self._head = tf.keras.layers.Dense(2, name="linear")  # numeric terms and the biases
        self.click_task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.AUC(from_logits=True, name="click_auc")])
        self.purchase_task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.AUC(from_logits=True, name="purchase_auc")])

    def call(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Transformed features (each ``[B]``) -> ``{click_logit, purchase_logit}``, each ``[B]``."""
        numeric = tf.stack([tf.cast(inputs[name], tf.float32) for name in self._numeric], axis=1)  # [B, N]
        embedded = [self._embeddings[table](inputs[name]) for name, table in self._table_of.items()]
        if self.kind == "logistic":
            logits = tf.add_n(embedded) + self._head(numeric)  # [B, 2]
        else:
            x0 = tf.concat(embedded + [numeric], axis=1)  # [B, F]
            x = x0
            for cross in self._cross:
                x = cross(x0, x)
            for dense in self._deep:
                x = dense(x)
            logits = self._head(x)
        return {CLICK_LOGIT: logits[:, 0], PURCHASE_LOGIT: logits[:, 1]}

    def compute_loss(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Click BCE + ``purchase_weight`` x purchase BCE, on logits."""
        outputs = self(inputs)
        click = self.click_task(labels=inputs[features.CLICKED], predictions=outputs[CLICK_LOGIT])
        purchase = self.purchase_task(labels=inputs[features.PURCHASED], predictions=outputs[PURCHASE_LOGIT])
        return click + self._purchase_weight * purchase


@dataclasses.dataclass(frozen=True)
class _WarmupSample:
    """Training-data values the warmup requests use (a plain object: not saved in the SavedModel)."""

    users: tuple[str, ...]
    items: tuple[str, ...]


def _table(keys: np.ndarray, values: np.ndarray, default: str | float) -> tf.lookup.StaticHashTable:
    value_dtype = tf.float32 if isinstance(default, float) else tf.string
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(np.asarray(keys).astype(str), tf.string),
                                            tf.constant(values, value_dtype)), default_value=default)


class RankingServingModule(tf.Module):
    """The exported ranking SavedModel; see the module docstring.

    Signatures:
      ``serving_default(user_id, item_id, scene, context_item_id: string[B], position: int64[B],
      retrieval_score: float[B])`` -> ``click_probability``, ``purchase_probability``: float[B].
      ``score_examples(examples: string[B])``: serialized ranking tf.Examples (what TFMA feeds)
      -> the same outputs.

    Args:
      tft_layer: ``TFTransformOutput.transform_features_layer()`` of the ranking Transform.
      model: a trained :class:`RankingModel`.
      catalogue: raw ``item_id``, ``category``, ``brand``, ``price`` columns, each ``[I]``.
      user_ids: ``[U]`` users, and ``age_groups`` ``[U]`` their age groups.
      age_groups: see ``user_ids``.
    """

    def __init__(self, tft_layer: tf.keras.layers.Layer, model: RankingModel,
                 catalogue: dict[str, np.ndarray], user_ids: np.ndarray, age_groups: np.ndarray) -> None:
        super().__init__(name="ranking_serving")
        self.tft_layer = tft_layer
        self.model = model
        item_ids = catalogue[features.ITEM_ID]
        self.categories = _table(item_ids, np.asarray(catalogue[features.CATEGORY]).astype(str), features.UNKNOWN)
        self.brands = _table(item_ids, np.asarray(catalogue[features.BRAND]).astype(str), features.UNKNOWN)
        self.prices = _table(item_ids, np.asarray(catalogue[features.PRICE], np.float32),
                             float(np.median(catalogue[features.PRICE])))
        self.age_groups = _table(user_ids, np.asarray(age_groups).astype(str), features.UNKNOWN)
        self._warmup = _WarmupSample(tuple(np.asarray(user_ids).astype(str)[:1]),
                                     tuple(np.asarray(item_ids).astype(str)[:RANKING_CANDIDATES]))

    def _predict(self, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        transformed = self.tft_layer({name: tf.reshape(value, [-1, 1]) for name, value in raw.items()})
        logits = self.model(transformed)
        return {features.OUTPUT_CLICK_PROBABILITY: tf.sigmoid(logits[CLICK_LOGIT]),
                features.OUTPUT_PURCHASE_PROBABILITY: tf.sigmoid(logits[PURCHASE_LOGIT])}

    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec([None], tf.string, name=features.USER_ID),
        tf.TensorSpec([None], tf.string, name=features.ITEM_ID),
        tf.TensorSpec([None], tf.string, name=features.SCENE),
        tf.TensorSpec([None], tf.int64, name=features.POSITION),
        tf.TensorSpec([None], tf.string, name=features.CONTEXT_ITEM_ID),
        tf.TensorSpec([None], tf.float32, name=features.RETRIEVAL_SCORE)])
    def rank(self, user_id: tf.Tensor, item_id: tf.Tensor, scene: tf.Tensor, position: tf.Tensor,
             context_item_id: tf.Tensor, retrieval_score: tf.Tensor) -> dict[str, tf.Tensor]:
        # the rule of builder.context_categories: none on a page about no item, unknown for an unknown item
        context_category = tf.where(tf.equal(context_item_id, features.NO_ITEM), features.NO_ITEM,
                                    self.categories.lookup(context_item_id))
        return self._predict({
            features.USER_ID: user_id, features.AGE_GROUP: self.age_groups.lookup(user_id),
            features.ITEM_ID: item_id, features.CATEGORY: self.categories.lookup(item_id),
            features.BRAND: self.brands.lookup(item_id), features.PRICE: self.prices.lookup(item_id),
            features.SCENE: scene, features.POSITION: position, features.CONTEXT_ITEM_ID: context_item_id,
            features.CONTEXT_CATEGORY: context_category, features.RETRIEVAL_SCORE: retrieval_score})

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def score_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        spec = {f.name: tf.io.FixedLenFeature([], {"string": tf.string, "int64": tf.int64,
                                                    "float": tf.float32}[f.dtype])
                for f in features.RANKING_FEATURES}
        return self._predict(tf.io.parse_example(examples, spec))

    def save(self, export_dir: str, write_warmup: bool = True) -> None:
        """Writes the SavedModel with both signatures, and its warmup requests.

        Without them the first ``rank`` calls a model server answers after loading a version pay
        for the graph's first run, longer than the service's deadline (0.5 s) on a busy machine,
        and those requests keep the retrieval order.

        Args:
          export_dir: the SavedModel directory (local or any ``tf.io.gfile`` path).
          write_warmup: also write ``assets.extra/tf_serving_warmup_requests``.
        """
        tf.saved_model.save(self, export_dir, signatures={
            features.SIGNATURE_RANK: self.rank.get_concrete_function(),
            features.SIGNATURE_RANK_EXAMPLES: self.score_examples.get_concrete_function(),
        })
        if write_warmup:
            warmup.write_warmup_file(export_dir, warmup.ranking_requests(self._warmup.users, self._warmup.items))
