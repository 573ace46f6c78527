"""The leave-one-out protocol on item sequences (the Amazon Beauty benchmark, ``bench/quality.py``).

Data, batching and full-ranking evaluation only: the model is built and trained by
:mod:`shoprec.model.training` (:func:`~shoprec.model.training.build_model` and
:func:`~shoprec.model.training.fit`), the pipeline Trainer's path, from a
:class:`~shoprec.config.TrainConfig` (:data:`BEAUTY` holds the benchmark's defaults). It works on
any ``user -> chronological items`` mapping.

Protocol (as in the SASRec and S3-Rec papers): each user's last item is the test target, the
second-last the validation target, the rest training (:func:`shoprec.data.importer.leave_one_out`).
Every catalogue item is ranked; the items before the target are excluded. Model selection and
early stopping read the validation targets only.

Item *indices* here follow the Transform convention: 0 is padding, catalogue item r (0-based
row) is index r + 1. Metrics and baselines work on rows.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from shoprec import features
from shoprec.config import TrainConfig
from shoprec.model import metrics as metrics_lib
from shoprec.model import training, two_tower

KS: tuple[int, ...] = (5, 10, 20)
SELECTION_METRIC = training.SELECTION_METRIC
_EVAL_USERS_PER_CHUNK = 2048


# The benchmark's defaults, searched on Beauty's validation targets (docs/quality.md): causal
# self-attention at every position, a full softmax over the catalogue, cosine / 0.05.
BEAUTY = TrainConfig(
    loss="full_softmax", all_positions=True, pooling="attention", attention_blocks=2, attention_heads=1,
    dropout=0.2, norm_first=True, embedding_dim=64, item_embedding_dim=64, projection="none",
    normalize=True, temperature=0.05, use_user_id=False, use_age_group=False, candidate_attributes=False,
    logq_correction=False, optimizer="adam", learning_rate=5e-3, batch_size=512, epochs=200, patience=10,
    validate_every=2)
MAX_LENGTH = 50  # items of history the query tower reads (the most recent ones)


@dataclasses.dataclass
class SequenceData:
    """Leave-one-out sequences as item indices (0 = padding, row r = index r + 1).

    Attributes:
      item_ids: ``[items]`` the catalogue's item ids; index i is ``item_ids[i - 1]``.
      users: ``[users]`` user ids.
      train: per user, the training items' indices, oldest first.
      valid: ``[users]`` validation target index (0: none).
      test: ``[users]`` test target index (0: none).
      categories: ``[items + 1]`` category index of each item index (0 for padding), or None.
      brands: ``[items + 1]`` brand index of each item index, or None.
    """

    item_ids: list[str]
    users: list[str]
    train: list[np.ndarray]
    valid: np.ndarray
    test: np.ndarray
    categories: np.ndarray | None = None
    brands: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def valid_histories(self) -> list[np.ndarray]:
        """Per user, what the model reads to predict the validation item: the training items."""
        return self.train

    def test_histories(self) -> list[np.ndarray]:
        """Per user, what precedes the test item: the training items and the validation item."""
        return [np.append(t, v) if v else t for t, v in zip(self.train, self.valid)]


def index_sequences(train: dict[str, list[str]], valid: dict[str, str], test: dict[str, str],
                    item_attributes: dict[str, tuple[str, str]] | None = None) -> SequenceData:
    """Leave-one-out splits (:func:`shoprec.data.importer.leave_one_out`) -> :class:`SequenceData`.

    Args:
      train, valid, test: user -> training items, validation item, test item.
      item_attributes: item id -> (category, brand); missing items get their own "unknown".

    Items are indexed in order of first appearance (training, then validation, then test).
    """
    users = list(train)
    order: dict[str, int] = {}
    for user in users:
        for item in train[user]:
            order.setdefault(item, len(order) + 1)
    for targets in (valid, test):
        for user in users:
            if user in targets:
                order.setdefault(targets[user], len(order) + 1)
    data = SequenceData(
        item_ids=list(order), users=users,
        train=[np.array([order[i] for i in train[u]], np.int64) for u in users],
        valid=np.array([order[valid[u]] if u in valid else 0 for u in users], np.int64),
        test=np.array([order[test[u]] if u in test else 0 for u in users], np.int64))
    if item_attributes is not None:
        data.categories, data.brands = (
            _attribute_indices([item_attributes.get(i, (None, None))[k] for i in order])
            for k in (0, 1))
    return data


def _attribute_indices(values: list[str | None]) -> np.ndarray:
    """``[items + 1]``: 0 for padding and for a missing value, 1.. for each distinct value."""
    vocabulary: dict[str, int] = {}
    indices = [0] + [0 if v is None else vocabulary.setdefault(v, len(vocabulary) + 1)
                     for v in values]
    return np.array(indices, np.int64)


def right_pad(sequences: Sequence[np.ndarray], length: int) -> np.ndarray:
    """``[len(sequences), length]``: each sequence's last ``length`` items, then zeros."""
    padded = np.zeros((len(sequences), length), np.int64)
    for row, sequence in enumerate(sequences):
        tail = sequence[-length:]
        padded[row, :len(tail)] = tail
    return padded


def training_arrays(data: SequenceData, max_length: int) -> dict[str, np.ndarray]:
    """Model inputs for training on every position: each user's training sequence.

    The history is ``train[:-1]`` (its last ``max_length`` items) and the item-id feature the
    next item at each position, ``train[1:]``; users with fewer than two training items give no
    example.
    """
    rows = [u for u, t in enumerate(data.train) if len(t) >= 2]
    return {
        features.HISTORY_FEATURE.transformed_name:
            right_pad([data.train[u][:-1] for u in rows], max_length),
        features.ITEM_ID_FEATURE.transformed_name:
            right_pad([data.train[u][1:] for u in rows], max_length),
        features.USER_ID_FEATURE.transformed_name: np.array(rows, np.int64) + 1,
    }


def length_batches(arrays: dict[str, np.ndarray], batch_size: int, rng: np.random.Generator,
                   pool_batches: int = 50) -> Iterator[dict[str, np.ndarray]]:
    """One shuffled epoch of :func:`training_arrays` batches, each cut to its longest history.

    Examples are shuffled, then sorted by length within pools of ``pool_batches`` batches, so a
    batch holds sequences of similar length and little padding; the batch order is shuffled.
    Cutting trailing padding changes nothing (right padding, positions from the oldest item).
    """
    history = arrays[features.HISTORY_FEATURE.transformed_name]
    lengths = (history > 0).sum(axis=1)
    order = rng.permutation(len(history))
    batches = []
    for pool in _chunks(order, batch_size * pool_batches):
        batches += list(_chunks(pool[np.argsort(lengths[pool], kind="stable")], batch_size))
    for index in rng.permutation(len(batches)):
        rows = np.sort(batches[index])
        width = max(int(lengths[rows].max()), 1)
        yield {name: values[rows, :width] if values.ndim == 2 else values[rows]
               for name, values in arrays.items()}


def model_inputs(data: SequenceData, config: TrainConfig
                 ) -> tuple[two_tower.VocabularySizes, dict[str, np.ndarray]]:
    """Embedding sizes and the catalogue (candidate features per item index) for
    :func:`shoprec.model.training.build_model`; with ``config.candidate_attributes``, category and
    brand (a constant price: the data has none)."""
    attributes = config.candidate_attributes and data.categories is not None
    if config.candidate_attributes and not attributes:
        raise ValueError("candidate_attributes needs the items' categories and brands")
    sizes = two_tower.VocabularySizes(
        users=len(data.users) + 1, age_groups=1, items=data.n_items + 1,
        categories=int(data.categories.max()) + 1 if attributes else 1,
        brands=int(data.brands.max()) + 1 if attributes else 1)
    catalogue: dict[str, np.ndarray] = {}
    if attributes:
        catalogue = {features.CATEGORY_FEATURE.transformed_name: data.categories,
                     features.BRAND_FEATURE.transformed_name: data.brands,
                     features.PRICE_FEATURE.transformed_name: np.zeros(data.n_items + 1, np.float32)}
    return sizes, catalogue


def query_embeddings(model: two_tower.TwoTowerModel, histories: Sequence[np.ndarray],
                     max_length: int, user_rows: np.ndarray | None = None,
                     batch_size: int = 1024) -> np.ndarray:
    """``[len(histories), D]`` query-tower outputs for these item-index histories.

    Histories are batched by length and each batch is cut to its longest history: with
    right padding and positions counted from the oldest item, that changes no output.
    """
    padded = right_pad(histories, max_length)
    users = (np.arange(len(histories)) if user_rows is None else np.asarray(user_rows)) + 1
    lengths = (padded > 0).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    tower = _inference_function(model)
    parts = []
    for rows in _chunks(order, batch_size):
        width = max(int(lengths[rows].max()), 1)
        parts.append(tower(tf.constant(padded[rows, :width]), tf.constant(users[rows])).numpy())
    outputs = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    return outputs[np.argsort(order)]


def _inference_function(model: two_tower.TwoTowerModel) -> Callable:
    function = getattr(model, "_shoprec_query_fn", None)
    if function is None:
        @tf.function(reduce_retracing=True)
        def function(history: tf.Tensor, users: tf.Tensor) -> tf.Tensor:
            return model.query_tower({features.HISTORY_FEATURE.transformed_name: history,
                                      features.USER_ID_FEATURE.transformed_name: users},
                                     training=False)
        model._shoprec_query_fn = function
    return function


def model_scorer(model: two_tower.TwoTowerModel, max_length: int
                 ) -> Callable[[Sequence[np.ndarray], np.ndarray], tf.Tensor]:
    """``score(histories, user_rows) -> [users, items]`` dot products with every catalogue row."""
    items = tf.constant(model.item_embeddings(training=False).numpy()[1:])

    def score(histories: Sequence[np.ndarray], user_rows: np.ndarray) -> tf.Tensor:
        queries = query_embeddings(model, histories, max_length, user_rows)
        return tf.matmul(queries, items, transpose_b=True)

    return score


def ranked_unseen(scores: np.ndarray | tf.Tensor, seen: Sequence[np.ndarray],
                  k: int) -> np.ndarray:
    """:func:`shoprec.model.metrics.top_k_unseen` of ``scores``, computed on a shortlist.

    The ``k + max |seen|`` best items of each row always hold that row's ``k`` best unseen
    items, so ``tf.math.top_k`` picks those columns and ``top_k_unseen`` ranks them (minus the
    seen ones): about 10x faster than ranking all the columns with NumPy. When a row's scores
    are distinct (as a model's float scores are) the result is identical; at tied scores either
    way picks one of the tied items, so baselines with integer-like scores use ``top_k_unseen``
    directly.

    Args:
      scores: ``[users, items]`` (NumPy or TensorFlow).
      seen: per user, the item rows to exclude.
      k: list length.
    """
    items = int(scores.shape[1])
    width = min(items, k + max((len(s) for s in seen), default=0))
    shortlist = tf.math.top_k(tf.convert_to_tensor(scores), width)
    values, columns = shortlist.values.numpy(), shortlist.indices.numpy()
    seen_columns = [np.flatnonzero(np.isin(row, excluded))
                    for row, excluded in zip(columns, seen)]
    ranked = metrics_lib.top_k_unseen(values, seen_columns, min(k, items))
    return np.take_along_axis(columns, ranked, axis=1)


def evaluate(score: Callable[[Sequence[np.ndarray], np.ndarray], np.ndarray | tf.Tensor],
             histories: Sequence[np.ndarray], targets: np.ndarray, n_items: int,
             ks: Sequence[int] = KS, shortlist: bool = False) -> dict[str, float]:
    """Full-ranking metrics of one leave-one-out target per user.

    Args:
      score: ``(histories, user_rows) -> [len(histories), n_items]`` scores of catalogue rows.
      histories: per user, the item indices before the target (they are excluded from ranking).
      targets: ``[users]`` the target's item index; users with 0 are skipped.
      n_items: catalogue size.
      ks: cut-offs.
      shortlist: rank with :func:`ranked_unseen` (for distinct scores) instead of
        :func:`shoprec.model.metrics.top_k_unseen`.

    Returns:
      :func:`shoprec.model.metrics.retrieval_metrics` (hitrate@K, ndcg@K, ... and ``users``).
    """
    users = np.flatnonzero(targets)
    rank = ranked_unseen if shortlist else metrics_lib.top_k_unseen
    ranked = []
    for chunk in _chunks(users, _EVAL_USERS_PER_CHUNK):
        chunk_histories = [histories[u] for u in chunk]
        scores = score(chunk_histories, chunk)
        if not shortlist:
            scores = np.asarray(scores)
        ranked.append(rank(scores, [h - 1 for h in chunk_histories], max(ks)))
    relevant = [np.array([t - 1]) for t in targets[users]]
    return metrics_lib.retrieval_metrics(np.concatenate(ranked), relevant, ks, n_items)


def _chunks(values: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: the model with its best validation weights, and the fit."""

    model: two_tower.TwoTowerModel
    fit: training.FitResult
    best_valid: dict[str, float]


def train(data: SequenceData, config: TrainConfig, max_length: int = MAX_LENGTH,
          log: Callable[[str], None] | None = print) -> TrainResult:
    """:func:`shoprec.model.training.build_model` and :func:`~shoprec.model.training.fit` on the
    training sequences, validating (``SELECTION_METRIC``) on the validation targets; the test
    targets are not read. ``config.time_budget_s`` counts model building, training and validation.
    """
    began = time.perf_counter()
    tf.keras.utils.set_random_seed(config.seed)
    sizes, catalogue = model_inputs(data, config)
    model = training.build_model(sizes, config, max_length, catalogue)
    arrays = training_arrays(data, max_length)
    rng = np.random.default_rng(config.seed)
    signature = {name: tf.TensorSpec([None] * values.ndim, tf.int64)
                 for name, values in arrays.items()}
    dataset = tf.data.Dataset.from_generator(
        lambda: length_batches(arrays, config.batch_size, rng), output_signature=signature
    ).prefetch(2)
    best: dict[str, float] = {}

    def validate(model: two_tower.TwoTowerModel) -> float:
        metrics = evaluate(model_scorer(model, max_length), data.valid_histories(), data.valid,
                           data.n_items, shortlist=True)
        if metrics[SELECTION_METRIC] > best.get(SELECTION_METRIC, -np.inf):
            best.clear()
            best.update(metrics)
        if log:
            log(f"  valid HR@10 {metrics['hitrate@10']:.4f}  NDCG@10 {metrics[SELECTION_METRIC]:.4f}")
        return metrics[SELECTION_METRIC]

    result = training.fit(model, dataset, config, validate=validate, log=log, began=began)
    return TrainResult(model=model, fit=result, best_valid=best)
