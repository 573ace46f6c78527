"""The one training path of the retrieval model: build it from a TrainConfig, fit it with early stopping.

The pipeline's Trainer (``trainer_module.run_fn``) and the Amazon Beauty benchmark
(``bench/quality.py``) both call :func:`build_model` and :func:`fit`; only the data and the
validation protocol differ (a hold-out slice of the train period vs leave-one-out).

* :func:`build_model`: :class:`shoprec.model.two_tower.TwoTowerModel` from the config's fields
  (pooling, loss, all-positions training, tower options), compiled with its optimizer.
* :func:`fit`: epochs until ``patience`` validations without a better value, ``epochs``, or the
  time budget; the best epoch's weights are kept.
* Pipeline helpers on Transform's outputs (item index 0 = padding, histories right-padded, most
  recent last): :func:`next_item_targets`, :func:`sequence_rows`, :func:`catalogue_from_examples`,
  :func:`validation_mask` and :class:`HeldOutValidation` (the Evaluator's protocol on the slice).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable

import numpy as np
import tensorflow as tf

from shoprec import features
from shoprec.config import TrainConfig
from shoprec.data import point_in_time
from shoprec.model import evaluation as protocol
from shoprec.model import metrics as metrics_lib
from shoprec.model import two_tower

SELECTION_METRIC = "ndcg@10"
CANDIDATE_COLUMNS = (features.CATEGORY_FEATURE.transformed_name, features.BRAND_FEATURE.transformed_name,
                     features.PRICE_FEATURE.transformed_name)


def tower_options(config: TrainConfig) -> two_tower.TowerOptions:
    """The :class:`~shoprec.model.two_tower.TowerOptions` the config's fields describe."""
    return two_tower.TowerOptions(
        item_embedding_dim=config.item_embedding_dim, use_user_id=config.use_user_id,
        use_age_group=config.use_age_group, attention_blocks=config.attention_blocks,
        attention_heads=config.attention_heads, dropout=config.dropout, norm_first=config.norm_first,
        projection=config.projection, normalize=config.normalize,
        candidate_attributes=config.candidate_attributes, candidate_price=config.candidate_attributes)


def build_model(sizes: two_tower.VocabularySizes, config: TrainConfig, history_length: int,
                catalogue: dict[str, np.ndarray] | None = None,
                sampling_probability: np.ndarray | None = None) -> two_tower.TwoTowerModel:
    """The retrieval model of ``config``, compiled.

    Args:
      sizes: embedding table rows.
      config: every hyper-parameter.
      history_length: N, the padded behaviour-sequence length.
      catalogue: transformed candidate features per item index, each ``[sizes.items]``: the
        softmax losses' classes, and what validation ranks (see
        :class:`~shoprec.model.two_tower.TwoTowerModel`); needed by the softmax losses.
      sampling_probability: ``[sizes.items]`` for the in-batch loss's logQ correction (used only
        when ``config.logq_correction``).
    """
    model = two_tower.TwoTowerModel(
        sizes, sampling_probability if config.logq_correction and config.loss == "in_batch" else None,
        output_dim=config.embedding_dim, temperature=config.temperature, pooling=config.pooling,
        history_length=history_length, options=tower_options(config), loss=config.loss,
        catalogue=catalogue,
        all_positions=config.all_positions, negatives=config.negatives, mask_history=config.mask_history)
    optimizer = (tf.keras.optimizers.Adam(learning_rate=config.learning_rate) if config.optimizer == "adam"
                 else tf.keras.optimizers.Adagrad(learning_rate=config.learning_rate))
    model.compile(optimizer=optimizer)
    return model


STOPPED_BY_TIME_BUDGET = "time_budget"  # FitResult.stopped_by when the budget ended the search


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
      epochs_run: epochs trained.
      best_epoch: the epoch whose weights were kept (the last one without validation).
      best_value: its validation ``SELECTION_METRIC`` (None without validation).
      history: per epoch: ``epoch``, ``loss`` and, when validated, ``valid`` and ``elapsed_s``.
      train_seconds: wall seconds of gradient steps.
      valid_seconds: wall seconds of validations.
      total_seconds: wall seconds of the whole call.
      stopped_by: ``"patience"``, ``"epochs"`` or :data:`STOPPED_BY_TIME_BUDGET`.
      refit_epochs: epochs of a refit on all the data after the search (0: none).
    """

    epochs_run: int
    best_epoch: int
    best_value: float | None
    history: list[dict[str, float]]
    train_seconds: float
    valid_seconds: float
    total_seconds: float
    stopped_by: str
    refit_epochs: int = 0


def fit(model: two_tower.TwoTowerModel, dataset: tf.data.Dataset, config: TrainConfig,
        validate: Callable[[two_tower.TwoTowerModel], float] | None = None,
        log: Callable[[str], None] | None = None, began: float | None = None) -> FitResult:
    """Trains one epoch at a time; with ``validate``, keeps the best epoch and stops early.

    Stops after ``config.patience`` validations without a higher value, after ``config.epochs``
    epochs, or when one more epoch and validation (timed as the last ones) would pass
    ``config.time_budget_s`` (0: no budget) counted from ``began`` (default: now).

    Args:
      model: a compiled model (:func:`build_model`).
      dataset: one epoch of training batches (iterated afresh each epoch).
      config: ``epochs``, ``patience``, ``validate_every``, ``time_budget_s``.
      validate: model -> the validation value to maximise (e.g. NDCG@10 on held-out data; it
        must not read the evaluation split).
      log: receives one line per epoch.
      began: ``time.perf_counter()`` the budget counts from (e.g. before the model was built).
    """
    began = time.perf_counter() if began is None else began
    best, best_weights, best_epoch = -np.inf, None, 0
    history: list[dict[str, float]] = []
    train_seconds = valid_seconds = last_valid_s = 0.0
    stale, epoch, stopped_by = 0, 0, "epochs"
    for epoch in range(1, config.epochs + 1):
        step_began = time.perf_counter()
        losses: list[float] = []
        model.fit(dataset, epochs=1, verbose=0, callbacks=[tf.keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: losses.append(float(logs["loss"])))])
        epoch_s = time.perf_counter() - step_began
        train_seconds += epoch_s
        record: dict[str, float] = {"epoch": epoch, "loss": round(float(np.mean(losses)), 4)}
        history.append(record)
        out_of_time = bool(config.time_budget_s) and (
            time.perf_counter() - began + epoch_s + last_valid_s > config.time_budget_s)
        if validate is None or (epoch % config.validate_every and epoch != config.epochs
                                and not out_of_time):
            best_epoch = epoch if validate is None else best_epoch
            if log:
                log(f"epoch {epoch:3d}  loss {record['loss']:.4f}  [{epoch_s:.1f} s]")
        else:
            valid_began = time.perf_counter()
            value = float(validate(model))
            last_valid_s = time.perf_counter() - valid_began
            valid_seconds += last_valid_s
            record.update(valid=round(value, 5), elapsed_s=round(time.perf_counter() - began, 1))
            improved = value > best
            if improved:
                best, best_epoch, best_weights, stale = value, epoch, model.get_weights(), 0
            else:
                stale += 1
            if log:
                log(f"epoch {epoch:3d}  loss {record['loss']:.4f}  [{epoch_s:.1f} s]  valid "
                    f"{SELECTION_METRIC} {value:.4f}{'  *' if improved else ''}  "
                    f"[{record['elapsed_s']:.0f} s]")
            if stale >= config.patience:
                stopped_by = "patience"
                break
        if out_of_time and epoch != config.epochs:
            stopped_by = STOPPED_BY_TIME_BUDGET
            break
    if best_weights is not None:
        model.set_weights(best_weights)
    return FitResult(epochs_run=epoch, best_epoch=best_epoch,
                     best_value=None if validate is None else float(best), history=history,
                     train_seconds=train_seconds, valid_seconds=valid_seconds,
                     total_seconds=time.perf_counter() - began, stopped_by=stopped_by)


# ---------------------------------------------------------------------------------------------
# The pipeline's examples (Transform's outputs, one per event).
# ---------------------------------------------------------------------------------------------
def next_item_targets(history: np.ndarray, item: np.ndarray) -> np.ndarray:
    """``[n, N]``: the item after each history position (0 where there is no history item).

    ``history`` ``[n, N]`` is right-padded, most recent last; the item after the last history
    item is the example's own ``item`` ``[n]``.
    """
    lengths = (history > 0).sum(axis=1)
    targets = np.zeros_like(history)
    targets[:, :-1] = history[:, 1:]
    rows = np.flatnonzero(lengths > 0)
    targets[rows, lengths[rows] - 1] = item[rows]
    return np.where(history > 0, targets, 0)


def sequence_rows(users: np.ndarray, timestamps: np.ndarray, event_ids: np.ndarray,
                  history: np.ndarray) -> np.ndarray:
    """Rows whose histories cover each user's transitions about once (for all-position training).

    Per user, in time order, the latest example and every ``N``-th one before it (``N`` =
    ``history.shape[1]``): together their histories and items hold every transition of the user's
    sequence, instead of each transition ``N`` times over. Examples without history are left out.
    """
    order = np.lexsort((event_ids, timestamps, users))
    sorted_users = users[order]
    ends = np.r_[np.flatnonzero(sorted_users[1:] != sorted_users[:-1]), len(order) - 1]
    starts = np.r_[0, ends[:-1] + 1]
    from_end = np.repeat(ends, ends - starts + 1) - np.arange(len(order))
    keep = order[from_end % history.shape[1] == 0]
    return np.sort(keep[(history[keep] > 0).any(axis=1)])


def catalogue_from_examples(columns: dict[str, np.ndarray], n_items: int) -> dict[str, np.ndarray]:
    """``[n_items]`` candidate features per item index, from examples of those items.

    Rows of items no example holds (padding, OOV) are 0.
    """
    items = columns[features.ITEM_ID_FEATURE.transformed_name].astype(np.int64)
    catalogue = {}
    for name in CANDIDATE_COLUMNS:
        values = np.zeros(n_items, columns[name].dtype)
        values[items] = columns[name]
        catalogue[name] = values
    return catalogue


def validation_mask(timestamps: np.ndarray, fraction: float) -> np.ndarray:
    """``[n]`` bool: the latest ``fraction`` of the train period's events (the time-split rule of
    :mod:`shoprec.data.point_in_time`, applied inside the train split)."""
    if fraction <= 0:
        return np.zeros(len(timestamps), bool)
    cutoff = point_in_time.time_cutoff(timestamps, fraction)
    return np.array([point_in_time.is_eval(int(t), cutoff) for t in timestamps], bool)


def example_dataset(columns: dict[str, np.ndarray], config: TrainConfig) -> tf.data.Dataset:
    """One shuffled epoch of training batches from Transform's columns (:data:`MODEL_COLUMNS` and,
    for ``all_positions``, the user, timestamp and event id).

    With ``config.all_positions`` the examples are :func:`sequence_rows` and the item-id feature
    becomes ``[batch, N]`` :func:`next_item_targets`.
    """
    arrays = {name: columns[name] for name in MODEL_COLUMNS}
    if config.all_positions:
        history = columns[features.HISTORY_FEATURE.transformed_name]
        rows = sequence_rows(columns[features.USER_ID], columns[features.TIMESTAMP],
                             columns[features.EVENT_ID], history)
        arrays = {name: values[rows] for name, values in arrays.items()}
        item = features.ITEM_ID_FEATURE.transformed_name
        arrays[item] = next_item_targets(arrays[features.HISTORY_FEATURE.transformed_name], arrays[item])
    count = len(arrays[features.HISTORY_FEATURE.transformed_name])
    return (tf.data.Dataset.from_tensor_slices(arrays)
            .shuffle(count, seed=config.seed, reshuffle_each_iteration=True)
            .batch(config.batch_size).prefetch(2))


class HeldOutValidation:
    """NDCG@10 of the Evaluator's protocol (:mod:`shoprec.model.evaluation`) on a held-out slice.

    Each user of the slice is queried with their first held-out example's features; relevant are
    their held-out items not among their fitted items, which are excluded from the ranking.

    Args:
      fitted: columns of the examples the model trains on (users, items).
      held_out: columns of the held-out examples (the model's query features, timestamps).
      ks: cut-offs of :func:`shoprec.model.metrics.retrieval_metrics`.
    """

    def __init__(self, fitted: dict[str, np.ndarray], held_out: dict[str, np.ndarray],
                 ks: Iterable[int] = (10,)):
        item = features.ITEM_ID_FEATURE.transformed_name
        history = features.HISTORY_FEATURE.transformed_name
        train = protocol.Interactions(fitted[features.USER_ID], fitted[item], fitted[features.TIMESTAMP])
        evaluation = protocol.Interactions(held_out[features.USER_ID], held_out[item],
                                           held_out[features.TIMESTAMP],
                                           histories=list(held_out[history]))
        n_items = int(max(fitted[item].max(), held_out[item].max()))
        self.eval_set = protocol.build_eval_set(train, evaluation, {i: i - 1 for i in range(1, n_items + 1)})
        order = np.lexsort((held_out[features.TIMESTAMP], held_out[features.USER_ID]))
        users = held_out[features.USER_ID][order]
        first = order[np.r_[True, users[1:] != users[:-1]]]
        row_of_user = dict(zip(held_out[features.USER_ID][first], first))
        rows = np.array([row_of_user[u] for u in self.eval_set.users], np.int64)
        self.queries = {name: tf.constant(held_out[name][rows]) for name in QUERY_COLUMNS}
        self.ks = tuple(ks)
        self.n_items = n_items

    @property
    def users(self) -> int:
        return len(self.eval_set.users)

    def metrics(self, model: two_tower.TwoTowerModel) -> dict[str, float]:
        """:func:`shoprec.model.metrics.retrieval_metrics` of the model on the slice."""
        queries = model.query_tower(self.queries, training=False).numpy()
        items = model.item_embeddings(training=False).numpy()[1:self.n_items + 1]
        ranked = metrics_lib.top_k_unseen(queries @ items.T, self.eval_set.seen, max(self.ks))
        return metrics_lib.retrieval_metrics(ranked, self.eval_set.relevant, self.ks, self.n_items)

    def __call__(self, model: two_tower.TwoTowerModel) -> float:
        return self.metrics(model)[SELECTION_METRIC]


QUERY_COLUMNS = (features.USER_ID_FEATURE.transformed_name, features.AGE_GROUP_FEATURE.transformed_name,
                 features.HISTORY_FEATURE.transformed_name)
MODEL_COLUMNS = QUERY_COLUMNS + (features.ITEM_ID_FEATURE.transformed_name,) + CANDIDATE_COLUMNS
