"""Scoring exported retrieval models offline, with the Evaluator's protocol and baselines.

RetrievalEvaluator scores ExampleGen's splits with :func:`evaluate_splits`; ``python -m
shoprec.model.score_test_file`` scores a pushed model on a test file a user supplies, with the
same function, so the two report the same metrics the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from shoprec import features
from shoprec.data import canonical
from shoprec.model import evaluation as protocol
from shoprec.model import export


class ExportedModelScorer:
    """Scores the catalogue for eval users with an exported model's query-embedding signature.

    The model's own catalogue is mapped onto ``catalogue`` (the current model's item order);
    items it does not know score -inf.
    """

    def __init__(self, model_dir: str, catalogue: np.ndarray, eval_set: protocol.EvalSet):
        model = export.load_exported(model_dir)
        self._signature = model.signatures[features.SIGNATURE_QUERY_EMBEDDING]
        own_rows = {item: row for row, item in enumerate(model.catalog_item_ids.numpy())}
        own_embeddings = model.catalog_embeddings.numpy()
        mapping = np.array([own_rows.get(item, -1) for item in catalogue])
        self._embeddings = own_embeddings[np.maximum(mapping, 0)].T  # [D, n_items]
        self._unknown = mapping < 0
        self._eval_set = eval_set

    def __call__(self, users: slice) -> np.ndarray:
        histories = tf.ragged.constant(self._eval_set.histories[users], dtype=tf.string)
        queries = self._signature(**{
            features.USER_ID: tf.constant(self._eval_set.users[users]),
            features.HISTORY: histories.to_tensor(default_value="")})[features.OUTPUT_EMBEDDING]
        scores = queries.numpy().astype(np.float64) @ self._embeddings
        scores[:, self._unknown] = -np.inf
        return scores


def catalogue_categories(items_path: str, catalogue: np.ndarray) -> np.ndarray:
    """``[n_items]`` category of each catalogue item, from ``items.csv``."""
    items = canonical.read_table(items_path)
    by_id = dict(zip(items[features.ITEM_ID].str.encode("utf-8"), items[features.CATEGORY]))
    return np.array([by_id.get(item, "") for item in catalogue], dtype=object)


def evaluate_splits(model_dir: str, train: protocol.Interactions, evaluation: protocol.Interactions,
                    items_path: str, ks: Sequence[int], baseline_model_dir: str | None = None) -> dict:
    """Metrics per ranking (the model, popularity, item-kNN, ALS, optionally the last blessed
    model) and slice; see :func:`shoprec.model.evaluation.score_all`.

    Args:
      model_dir: an exported retrieval SavedModel.
      train: what the baselines are fitted on, and each user's seen items (excluded).
      evaluation: the held-out interactions, with each event's history (the model's query).
      items_path: the catalogue's ``items.csv`` (categories, for diversity).
      ks: cut-offs.
      baseline_model_dir: another export to score alike (``last_blessed``).

    Raises:
      ValueError: no eval user has an item to retrieve.
    """
    catalogue = export.load_exported(model_dir).catalog_item_ids.numpy()
    item_rows = {item: row for row, item in enumerate(catalogue)}
    eval_set = protocol.build_eval_set(train, evaluation, item_rows)
    if not eval_set.users:
        raise ValueError("the eval split has no user with a new item to retrieve")
    known = np.array([item in item_rows for item in train.items])
    train_item_rows = np.array([item_rows[i] for i in train.items[known]], dtype=np.int64)
    _, train_user_rows = np.unique(train.users[known], return_inverse=True)
    scorers = {"model": ExportedModelScorer(model_dir, catalogue, eval_set)}
    scorers.update(protocol.baseline_scorers(train_user_rows, train_item_rows, eval_set,
                                               len(catalogue)))
    if baseline_model_dir:
        scorers["last_blessed"] = ExportedModelScorer(baseline_model_dir, catalogue, eval_set)
    popularity = np.bincount(train_item_rows, minlength=len(catalogue)).astype(np.float64)
    return protocol.score_all(eval_set, scorers, ks, len(catalogue), popularity,
                                catalogue_categories(items_path, catalogue))
