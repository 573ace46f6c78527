"""Warm start of the retrieval model from the last blessed one: weights, with vocabularies extended.

Every Trainer run saves its model's state beside the export (:func:`save_state`): each weight in
the model's own order, with the id vocabulary behind every embedding table. The next run, given
the last blessed model (the Trainer's ``base_model``), starts from it (:func:`warm_start`):

* an embedding table indexed by a vocabulary (user id, age group, item id, category, brand) is
  re-indexed by id: a row whose id the old vocabulary had takes the old row, a new id keeps its
  fresh initialisation, and the padding and OOV rows take the old ones (the vocabularies' layout
  is Transform's: ``transform_module``; items have padding row 0 before the vocabulary);
* every other weight (towers, pooling, positions) is copied when its shape is unchanged;
* an architecture that changed (other weights, other order) starts cold, with the reason.

The optimizer's state is not carried over: each run's optimizer starts fresh.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os

import numpy as np
import tensorflow as tf

from shoprec import features

STATE_DIR = "warm_start"  # beside the export's Format-Serving, in the Trainer's Model artifact
_WEIGHTS_FILE = "weights.npz"
_STATE_FILE = "state.json"


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The ids behind one embedding table's rows.

    Attributes:
      ids: the vocabulary, in index order.
      offset: rows before the vocabulary (1 for items: the padding row).
      oov_buckets: rows after it, for unknown ids.
    """

    ids: tuple[str, ...]
    offset: int
    oov_buckets: int


@dataclasses.dataclass(frozen=True)
class WarmStartReport:
    """What :func:`warm_start` did.

    Attributes:
      warm: whether the model starts from the old weights (False: cold, see ``reason``).
      reason: why it started cold ("" when warm).
      weights_copied: weights copied whole.
      tables_remapped: embedding tables re-indexed by id.
      rows_carried: table rows that took an old row (vocabulary ids, padding and OOV rows).
      new_ids: vocabulary ids the old model did not have (fresh rows).
    """

    warm: bool
    reason: str = ""
    weights_copied: int = 0
    tables_remapped: int = 0
    rows_carried: int = 0
    new_ids: int = 0


def state_dir(serving_model_dir: str) -> str:
    """Where a Trainer run's state lies, given its export folder (``.../Format-Serving``)."""
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), STATE_DIR)


def _table_of(weight_name: str, vocabularies: dict[str, Vocabulary]) -> str | None:
    """The vocabulary feature whose embedding table ``weight_name`` is (None: not a table)."""
    for feature in vocabularies:
        if f"{feature}_embedding/" in weight_name:  # the tables' layer names (two_tower)
            return feature
    return None


def _role(weight_name: str, vocabularies: dict[str, Vocabulary]) -> str:
    """A weight's identity across runs: its table's feature, or '' (Keras numbers other layers)."""
    return _table_of(weight_name, vocabularies) or ""


def save_state(model: tf.keras.Model, vocabularies: dict[str, Vocabulary], directory: str) -> None:
    """Writes every weight of ``model`` (in order) and the tables' vocabularies to ``directory``."""
    tf.io.gfile.makedirs(directory)
    weights = model.weights
    buffer = io.BytesIO()  # np.savez seeks, which a GFile (gs://, ...) cannot
    np.savez(buffer, **{f"w{index}": weight.numpy() for index, weight in enumerate(weights)})
    with tf.io.gfile.GFile(os.path.join(directory, _WEIGHTS_FILE), "wb") as out:
        out.write(buffer.getvalue())
    state = {"weights": [{"name": weight.name, "role": _role(weight.name, vocabularies),
                          "shape": list(weight.shape)} for weight in weights],
             "vocabularies": {name: dataclasses.asdict(vocabulary) for name, vocabulary in vocabularies.items()}}
    with tf.io.gfile.GFile(os.path.join(directory, _STATE_FILE), "w") as out:
        json.dump(state, out)


def _remap(new_table: np.ndarray, old_table: np.ndarray, new: Vocabulary, old: Vocabulary) -> tuple[int, int]:
    """Copies into ``new_table`` (in place) the old rows of every id both vocabularies have, and
    the padding and OOV rows; returns ``(rows carried, new ids)``."""
    old_index = {item_id: old.offset + index for index, item_id in enumerate(old.ids)}
    targets, sources = [], []
    for index, item_id in enumerate(new.ids):
        source = old_index.get(item_id)
        if source is not None:
            targets.append(new.offset + index)
            sources.append(source)
    shared_offset = min(new.offset, old.offset)
    targets += list(range(shared_offset))
    sources += list(range(shared_offset))
    shared_oov = min(new.oov_buckets, old.oov_buckets)
    targets += [new.offset + len(new.ids) + bucket for bucket in range(shared_oov)]
    sources += [old.offset + len(old.ids) + bucket for bucket in range(shared_oov)]
    new_table[targets] = old_table[sources]
    return len(targets), len(new.ids) - (len(targets) - shared_offset - shared_oov)


def warm_start(model: tf.keras.Model, vocabularies: dict[str, Vocabulary], directory: str) -> WarmStartReport:
    """Sets ``model``'s weights (built, e.g. by one forward pass) from the state in ``directory``.

    Returns:
      What was carried over; ``warm=False`` (the model untouched) when there is no state there
      or the architecture differs.
    """
    state_path = os.path.join(directory, _STATE_FILE)
    if not tf.io.gfile.exists(state_path):
        return WarmStartReport(False, f"no warm-start state at {directory} (a model saved before warm start existed)")
    with tf.io.gfile.GFile(state_path) as handle:
        state = json.load(handle)
    with tf.io.gfile.GFile(os.path.join(directory, _WEIGHTS_FILE), "rb") as handle:
        arrays = np.load(io.BytesIO(handle.read()))
    old_weights = [arrays[f"w{index}"] for index in range(len(state["weights"]))]
    old_vocabularies = {name: Vocabulary(tuple(v["ids"]), v["offset"], v["oov_buckets"])
                        for name, v in state["vocabularies"].items()}
    weights = model.weights
    roles = [_role(weight.name, vocabularies) for weight in weights]
    old_roles = [entry["role"] for entry in state["weights"]]
    if roles != old_roles:
        return WarmStartReport(False, f"the architecture changed: {len(weights)} weights now, {len(old_weights)} "
                                      f"in the base model, or in another order")
    values, copied, remapped, carried, new_ids = [], 0, 0, 0, 0
    for weight, role, old in zip(weights, roles, old_weights):
        value = weight.numpy()
        if role and role in old_vocabularies and value.shape[1:] == old.shape[1:]:
            rows, fresh = _remap(value, old, vocabularies[role], old_vocabularies[role])
            remapped, carried, new_ids = remapped + 1, carried + rows, new_ids + fresh
        elif value.shape == old.shape:
            value, copied = old, copied + 1
        else:
            return WarmStartReport(False, f"weight {weight.name} has shape {list(value.shape)}, "
                                          f"{list(old.shape)} in the base model")
        values.append(value)
    for weight, value in zip(weights, values):
        weight.assign(value)
    return WarmStartReport(True, "", copied, remapped, carried, new_ids)


def transform_vocabularies(tft_output, user_id_hash_buckets: int = 0) -> dict[str, Vocabulary]:
    """The vocabularies behind the two-tower model's tables, from Transform's output (the layout
    of ``transform_module``: items shifted by one for padding; hashed user ids have none)."""

    def ids(name: str) -> tuple[str, ...]:
        return tuple(value.decode() if isinstance(value, bytes) else str(value)
                     for value in tft_output.vocabulary_by_name(name))

    vocabularies = {features.ITEM_ID_FEATURE.name: Vocabulary(ids(features.ITEM_ID_VOCAB), 1,
                                                              features.ITEM_ID_FEATURE.oov_buckets)}
    for feature in (features.USER_ID_FEATURE, features.AGE_GROUP_FEATURE, features.CATEGORY_FEATURE,
                    features.BRAND_FEATURE):
        if feature is features.USER_ID_FEATURE and user_id_hash_buckets:
            continue  # a hashed id keeps its row from run to run: copied whole
        vocabularies[feature.name] = Vocabulary(ids(f"{feature.name}_vocab"), 0, feature.oov_buckets)
    return vocabularies
