"""Approximate top-K over the catalogue with ScaNN, for catalogues too large for brute force.

:class:`ScannIndex` builds a ScaNN searcher (a k-means tree over the item embeddings, anisotropic
vector quantisation inside the searched partitions, then an exact float rescoring of the best
``reorder_candidates``) and keeps it as TensorFlow state, so that a SavedModel carrying it answers
with ScaNN's custom ops (``Scann>TensorsToScann``, ``Scann>ScannSearchBatched``). Scores stay exact
dot products (cosine similarities for the unit-length embeddings of the towers).

Serving such a SavedModel needs those ops in the serving binary:

* the local server (``python -m serving.model_server``) imports ``scann`` by itself when a model
  uses them (its ``CUSTOM_OP_MODULES``);
* real TF Serving needs the ScaNN-enabled image (``google/tf-serving-scann``, built from
  google-research/scann/tf_serving), whose TensorFlow version must match the one ``scann`` was
  built for (2.16 for ``scann==1.3.2``); the stock ``tensorflow/serving`` image fails the load
  with ``Op type not registered 'Scann>TensorsToScann'``.

``scann`` is imported only when an index is built or traced, so brute-force exports never need it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import uuid
from types import ModuleType

import numpy as np
import tensorflow as tf

MIN_ITEMS = 100  # ScaNN's quantiser needs more training points; brute force is exact and fast here


def _scann_ops() -> ModuleType:
    """ScaNN's TensorFlow ops module (importing it registers the ``Scann>`` ops)."""
    from scann.scann_ops.py import scann_ops

    return scann_ops


def register_ops_for(export_dir: str) -> bool:
    """Imports ScaNN's ops when the SavedModel at ``export_dir`` uses them.

    Returns:
      Whether the export names a ``Scann>`` op.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    uses_scann = any(op.name.startswith("Scann>") for graph in saved_model.meta_graphs
                     for op in graph.meta_info_def.stripped_op_list.op)
    if uses_scann:
        _scann_ops()
    return uses_scann


@dataclasses.dataclass(frozen=True)
class ScannConfig:
    """How the ScaNN index is built and searched.

    The defaults reach recall@10 >= 0.95 against brute force on the synthetic 1,000,000-item
    catalogue of ``bench/serving.py`` (``bench/results/serving.json`` has the measured value).

    Attributes:
      num_leaves: k-means partitions of the catalogue; ``None``: about sqrt(items), and at least
        50 items per partition on average.
      leaves_to_search_fraction: share of the partitions scanned per query (more: higher recall,
        slower). At least enough partitions to hold 2K items on average are scanned.
      reorder_candidates: candidates rescored exactly before the top K is taken (at least K).
      dimensions_per_block: embedding dimensions per quantisation block (2 is ScaNN's default).
      anisotropic_quantization_threshold: ScaNN's score-aware quantisation threshold.
      training_sample_size: items the partitioner and quantiser are trained on.
      training_iterations: k-means iterations.
    """

    num_leaves: int | None = None
    leaves_to_search_fraction: float = 0.25
    reorder_candidates: int = 500
    dimensions_per_block: int = 2
    anisotropic_quantization_threshold: float = 0.2
    training_sample_size: int = 100_000
    training_iterations: int = 12

    def __post_init__(self) -> None:
        if self.num_leaves is not None and self.num_leaves < 1:
            raise ValueError(f"num_leaves must be >= 1, got {self.num_leaves}")
        if not 0.0 < self.leaves_to_search_fraction <= 1.0:
            raise ValueError("leaves_to_search_fraction must be in (0, 1], got "
                             f"{self.leaves_to_search_fraction}")
        if self.reorder_candidates < 1 or self.training_sample_size < 1:
            raise ValueError("reorder_candidates and training_sample_size must be >= 1")

    def leaves(self, num_items: int) -> int:
        """Partitions of a catalogue of ``num_items``."""
        if self.num_leaves is not None:
            return min(self.num_leaves, num_items)
        return max(1, min(round(math.sqrt(num_items)), num_items // 50))

    def leaves_to_search(self, num_items: int, k: int) -> int:
        """Partitions scanned per query for a top-``k`` over ``num_items``."""
        leaves = self.leaves(num_items)
        by_fraction = math.ceil(self.leaves_to_search_fraction * leaves)
        by_size = math.ceil(2 * k * leaves / num_items)
        return min(leaves, max(by_fraction, by_size))


class ScannIndex(tf.Module):
    """A ScaNN searcher over ``[I, D]`` item embeddings, saved with the module that holds it.

    Args:
      embeddings: ``[I, D]`` float32 item embeddings; row ``i`` is catalogue item ``i``.
      k: neighbours returned per query.
      config: how the index is built and searched.

    Raises:
      ValueError: fewer than :data:`MIN_ITEMS` items, ``k`` above the catalogue size, or
        embeddings that are not a non-empty 2-D array.
    """

    def __init__(self, embeddings: np.ndarray, k: int, config: ScannConfig = ScannConfig()):
        super().__init__(name="scann_index")
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] == 0:
            raise ValueError(f"embeddings must be [items, dim], got shape {embeddings.shape}")
        num_items = embeddings.shape[0]
        if num_items < MIN_ITEMS:
            raise ValueError(f"ScaNN needs at least {MIN_ITEMS} items, got {num_items}; "
                             "use brute force for a catalogue this small")
        if not 1 <= k <= num_items:
            raise ValueError(f"k must be in [1, {num_items}], got {k}")
        self.k = k
        self.num_leaves = config.leaves(num_items)
        self.num_leaves_to_search = config.leaves_to_search(num_items, k)
        builder = _scann_ops().builder(embeddings, k, "dot_product")
        builder = builder.tree(num_leaves=self.num_leaves,
                               num_leaves_to_search=self.num_leaves_to_search,
                               training_sample_size=min(config.training_sample_size, num_items),
                               training_iterations=config.training_iterations)
        builder = builder.score_ah(
            config.dimensions_per_block,
            anisotropic_quantization_threshold=config.anisotropic_quantization_threshold)
        builder = builder.reorder(max(config.reorder_candidates, k))
        searcher = builder.build(shared_name=f"shoprec_scann/{uuid.uuid4()}")
        self.state = searcher.serialize_to_module()

    def search(self, query: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The approximate top K of each query.

        Args:
          query: ``[B, D]`` float32 query embeddings.

        Returns:
          ``(rows, scores)``: ``int32[B, W]`` catalogue rows and ``float32[B, W]`` dot products,
          best first. ``W`` is K unless the scanned partitions held fewer than K items for some
          query; then the missing entries are row 0 with a NaN score.
        """
        searcher = _scann_ops().searcher_from_module(self.state)
        result = searcher.search_batched_parallel(query, final_num_neighbors=self.k)
        return result.indices, result.distances
