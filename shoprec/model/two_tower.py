"""The TFRS two-tower retrieval model over Transform's outputs (see shoprec.features).

Both towers end in L2-normalised ``[batch, output_dim]`` embeddings, so a score is a cosine
similarity in [-1, 1]; the task divides it by the temperature. The item-id embedding table is
shared: the query tower pools it over the behaviour sequence, the candidate tower looks the
candidate up in it.

:class:`TowerOptions` and the ``loss``/``catalogue``/``all_positions`` arguments of
:class:`TwoTowerModel` add a sequential-recommender set-up on the same two towers (used by the
Amazon Beauty benchmark, ``bench/quality.py``): a SASRec-style query tower (several causal
self-attention blocks with dropout, no user id), a full softmax over the whole catalogue instead
of in-batch negatives, and a loss on every position of each training sequence. Their defaults
keep the original model.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from shoprec import features
from shoprec.config import LOSSES, POOLINGS


@dataclasses.dataclass(frozen=True)
class VocabularySizes:
    """Rows of each embedding table, OOV buckets included (items also count padding row 0)."""

    users: int
    age_groups: int
    items: int
    categories: int
    brands: int


PROJECTIONS = ("mlp", "linear", "none")


@dataclasses.dataclass(frozen=True)
class TowerOptions:
    """How the towers are built; the defaults are the original two-tower model.

    Attributes:
      item_embedding_dim: width of the shared item-id embedding.
      use_user_id: the query tower reads the user-id embedding.
      use_age_group: the query tower reads the age-group embedding.
      attention_blocks: causal self-attention blocks of the ``attention`` pooling.
      attention_heads: heads of each block (must divide ``item_embedding_dim``).
      dropout: dropout rate of the ``attention`` (embeddings, attention weights, feed-forward
        and residual branches) and ``gru`` (inputs) poolings; ``mean`` has none.
      norm_first: pre-LayerNorm blocks with a final LayerNorm (as SASRec) instead of the
        original post-LayerNorm block.
      projection: what each tower puts on top of its concatenated features: ``"mlp"`` (ReLU
        layer of ``hidden_units`` then a linear layer), ``"linear"`` or ``"none"`` (the
        concatenation itself, whose width must then equal ``output_dim``).
      hidden_units: width of the ``mlp`` projection's hidden layer.
      normalize: L2-normalise both tower outputs (scores are cosines); else raw dot products.
      candidate_attributes: the candidate tower reads category and brand.
      candidate_price: the candidate tower reads the normalised price.
    """

    item_embedding_dim: int = features.ITEM_ID_FEATURE.embedding_dim
    use_user_id: bool = True
    use_age_group: bool = True
    attention_blocks: int = 1
    attention_heads: int = 2
    dropout: float = 0.0
    norm_first: bool = False
    projection: str = "mlp"
    hidden_units: int = 128
    normalize: bool = True
    candidate_attributes: bool = True
    candidate_price: bool = True

    def __post_init__(self) -> None:
        if self.projection not in PROJECTIONS:
            raise ValueError(f"unknown projection {self.projection!r}; choose one of "
                             f"{', '.join(PROJECTIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attention_blocks < 1 or self.attention_heads < 1:
            raise ValueError("attention_blocks and attention_heads must be >= 1")
        if self.item_embedding_dim % self.attention_heads:
            raise ValueError(f"attention_heads ({self.attention_heads}) must divide "
                             f"item_embedding_dim ({self.item_embedding_dim})")


def _vocab_features(sizes: VocabularySizes) -> dict[features.Feature, int]:
    return {features.USER_ID_FEATURE: sizes.users, features.AGE_GROUP_FEATURE: sizes.age_groups,
            features.CATEGORY_FEATURE: sizes.categories, features.BRAND_FEATURE: sizes.brands}


def _embedding_layers(tower_features: tuple[features.Feature, ...],
                      sizes: VocabularySizes) -> dict[str, tf.keras.layers.Embedding]:
    """Transformed name -> embedding, for the tower's vocabulary features except item ids."""
    dims = _vocab_features(sizes)
    return {f.transformed_name: tf.keras.layers.Embedding(dims[f], f.embedding_dim,
                                                          name=f"{f.name}_embedding")
            for f in tower_features if f in dims}


def _mlp(hidden_units: int, output_dim: int, name: str, projection: str = "mlp",
         normalize: bool = True) -> tf.keras.Sequential:
    """The tower head: the ``projection`` (see :class:`TowerOptions`), then optionally L2 norm."""
    layers: list[tf.keras.layers.Layer] = []
    if projection == "mlp":
        layers += [tf.keras.layers.Dense(hidden_units, activation="relu"),
                   tf.keras.layers.Dense(output_dim)]
    elif projection == "linear":
        layers.append(tf.keras.layers.Dense(output_dim))
    if normalize:
        layers.append(tf.keras.layers.UnitNormalization())
    if not layers:
        layers.append(tf.keras.layers.Identity())
    return tf.keras.Sequential(layers, name=name)


def masked_mean(embeddings: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """Mean of ``[batch, length, dim]`` embeddings over positions whose index is not 0.

    Rows with no items give a zero vector.
    """
    mask = tf.cast(indices > 0, embeddings.dtype)[..., tf.newaxis]
    total = tf.reduce_sum(embeddings * mask, axis=1)
    return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


def last_valid(sequence: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """``[batch, length, dim]`` -> the vector at each row's last non-padding position.

    Rows are right-padded with index 0; rows with no items give a zero vector.
    """
    lengths = tf.reduce_sum(tf.cast(indices > 0, tf.int32), axis=1)
    picked = tf.gather(sequence, tf.maximum(lengths - 1, 0), batch_dims=1)
    return picked * tf.cast(lengths > 0, sequence.dtype)[:, tf.newaxis]


def causal_mask(indices: tf.Tensor) -> tf.Tensor:
    """``[batch, length, length]``: position i may attend to position j <= i that is not padding."""
    length = tf.shape(indices)[1]
    causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
    return tf.logical_and(causal[tf.newaxis], (indices > 0)[:, tf.newaxis, :])


class TransformerBlock(tf.keras.layers.Layer):
    """Masked multi-head self-attention then a feed-forward layer, each a residual branch.

    ``norm_first=False`` is the original block (LayerNorm after each residual sum);
    ``norm_first=True`` normalises each branch's input instead (SASRec's pre-LN arrangement).
    Dropout applies to the attention weights and to each branch's output.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, norm_first: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.norm_first = norm_first
        self.attention = tf.keras.layers.MultiHeadAttention(heads, key_dim=dim // heads,
                                                            dropout=dropout)
        self.norm_attention = tf.keras.layers.LayerNormalization()
        self.feed_forward = tf.keras.Sequential([tf.keras.layers.Dense(2 * dim, activation="relu"),
                                                 tf.keras.layers.Dropout(dropout),
                                                 tf.keras.layers.Dense(dim)])
        self.norm_output = tf.keras.layers.LayerNormalization()
        self.dropout = tf.keras.layers.Dropout(dropout)

    def call(self, x: tf.Tensor, mask: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if self.norm_first:
            normed = self.norm_attention(x)
            x = x + self.dropout(self.attention(normed, normed, attention_mask=mask,
                                                training=training), training=training)
            return x + self.dropout(self.feed_forward(self.norm_output(x), training=training),
                                    training=training)
        x = self.norm_attention(x + self.dropout(
            self.attention(x, x, attention_mask=mask, training=training), training=training))
        return self.norm_output(x + self.dropout(self.feed_forward(x, training=training),
                                                 training=training))


class AttentionPooling(tf.keras.layers.Layer):
    """Causal Transformer blocks over the sequence; returns the most recent position.

    Input ``[batch, length, dim]`` item embeddings with their ``[batch, length]`` indices (0 =
    padding, on the right); output ``[batch, dim]``. Positions are learned and count from the
    oldest item, so a prefix of a sequence is encoded exactly as the shorter sequence would be.
    :meth:`sequence` gives every position's output (position i sees items 0..i only).

    Args:
      length: the longest sequence (rows of the position embedding).
      dim: item embedding width.
      heads: attention heads.
      blocks: stacked Transformer blocks.
      dropout: rate for the embeddings and inside each block.
      norm_first: pre-LN blocks and a final LayerNorm (see :class:`TransformerBlock`).
    """

    def __init__(self, length: int, dim: int, heads: int = 2, blocks: int = 1,
                 dropout: float = 0.0, norm_first: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.positions = tf.keras.layers.Embedding(length, dim)
        self.embedding_dropout = tf.keras.layers.Dropout(dropout)
        self.blocks = [TransformerBlock(dim, heads, dropout, norm_first, name=f"block_{i}")
                       for i in range(blocks)]
        self.final_norm = tf.keras.layers.LayerNormalization() if norm_first else None

    def sequence(self, embeddings: tf.Tensor, indices: tf.Tensor,
                 training: bool | None = None) -> tf.Tensor:
        """``[batch, length, dim]``: each position's output, from it and earlier items only."""
        length = tf.shape(indices)[1]
        x = embeddings + self.positions(tf.range(length))[tf.newaxis]
        x = self.embedding_dropout(x, training=training)
        mask = causal_mask(indices)
        for block in self.blocks:
            x = block(x, mask, training=training)
        return x if self.final_norm is None else self.final_norm(x)

    def call(self, embeddings: tf.Tensor, indices: tf.Tensor,
             training: bool | None = None) -> tf.Tensor:
        return last_valid(self.sequence(embeddings, indices, training), indices)


class GRUPooling(tf.keras.layers.Layer):
    """A GRU over the non-padding positions; returns its final state ``[batch, dim]``."""

    def __init__(self, dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.gru = tf.keras.layers.GRU(dim, dropout=dropout, return_sequences=True)

    def sequence(self, embeddings: tf.Tensor, indices: tf.Tensor,
                 training: bool | None = None) -> tf.Tensor:
        """``[batch, length, dim]``: the state after each position."""
        return self.gru(embeddings, mask=indices > 0, training=training)

    def call(self, embeddings: tf.Tensor, indices: tf.Tensor,
             training: bool | None = None) -> tf.Tensor:
        return last_valid(self.sequence(embeddings, indices, training), indices)


class MeanPooling(tf.keras.layers.Layer):
    """Masked mean of the sequence's item embeddings ``[batch, dim]``."""

    def sequence(self, embeddings: tf.Tensor, indices: tf.Tensor,
                 training: bool | None = None) -> tf.Tensor:
        """``[batch, length, dim]``: the running mean up to each position."""
        mask = tf.cast(indices > 0, embeddings.dtype)[..., tf.newaxis]
        total = tf.cumsum(embeddings * mask, axis=1)
        return total / tf.maximum(tf.cumsum(mask, axis=1), 1.0)

    def call(self, embeddings: tf.Tensor, indices: tf.Tensor,
             training: bool | None = None) -> tf.Tensor:
        return masked_mean(embeddings, indices)




def make_pooling(pooling: str, history_length: int, dim: int, heads: int = 2, blocks: int = 1,
                 dropout: float = 0.0, norm_first: bool = False) -> tf.keras.layers.Layer:
    """The sequence pooling layer named ``pooling`` (one of :data:`POOLINGS`)."""
    if pooling == "mean":
        return MeanPooling(name="mean_pooling")
    if pooling == "attention":
        return AttentionPooling(history_length, dim, heads, blocks, dropout, norm_first,
                                name="attention_pooling")
    if pooling == "gru":
        return GRUPooling(dim, dropout, name="gru_pooling")
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


class QueryTower(tf.keras.Model):
    """User id, age group and behaviour sequence -> ``[batch, output_dim]`` unit vectors.

    ``options`` (:class:`TowerOptions`) can drop the user id or age group, deepen the attention
    pooling, add dropout and change the head; :meth:`sequence_outputs` gives the query after
    every position of the history, for training on all positions.
    """

    def __init__(self, sizes: VocabularySizes, item_embedding: tf.keras.layers.Embedding,
                 output_dim: int, pooling: str = "mean", history_length: int = 20,
                 hidden_units: int = 128, options: TowerOptions | None = None):
        super().__init__(name="query_tower")
        options = options or TowerOptions(hidden_units=hidden_units)
        wanted = tuple(f for f in features.QUERY_FEATURES
                       if (f is not features.USER_ID_FEATURE or options.use_user_id)
                       and (f is not features.AGE_GROUP_FEATURE or options.use_age_group))
        self.embeddings = _embedding_layers(wanted, sizes)
        self.item_embedding = item_embedding
        self.pooling = make_pooling(pooling, history_length, item_embedding.output_dim,
                                    options.attention_heads, options.attention_blocks,
                                    options.dropout, options.norm_first)
        width = item_embedding.output_dim + sum(f.embedding_dim for f in wanted
                                                if f.transformed_name in self.embeddings)
        _check_width(options.projection, width, output_dim, "query")
        self.mlp = _mlp(hidden_units, output_dim, "query_mlp", options.projection,
                        options.normalize)

    def call(self, inputs: dict[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        history = inputs[features.HISTORY_FEATURE.transformed_name]
        parts = [layer(inputs[name]) for name, layer in self.embeddings.items()]
        parts.append(self.pooling(self.item_embedding(history), history, training=training))
        return self.mlp(tf.concat(parts, axis=1), training=training)

    def sequence_outputs(self, inputs: dict[str, tf.Tensor],
                         training: bool | None = None) -> tf.Tensor:
        """``[batch, length, output_dim]``: position i is the query for the history up to i."""
        history = inputs[features.HISTORY_FEATURE.transformed_name]
        pooled = self.pooling.sequence(self.item_embedding(history), history, training=training)
        parts = [tf.broadcast_to(layer(inputs[name])[:, tf.newaxis, :],
                                 tf.concat([tf.shape(pooled)[:2], [layer.output_dim]], 0))
                 for name, layer in self.embeddings.items()]
        merged = tf.concat(parts + [pooled], axis=2)
        shape = tf.shape(merged)
        # The head sees [batch * length, features]: UnitNormalization fixes its axis when built.
        flat = self.mlp(tf.reshape(merged, [-1, merged.shape[-1]]), training=training)
        return tf.reshape(flat, tf.concat([shape[:2], tf.shape(flat)[1:]], axis=0))


class CandidateTower(tf.keras.Model):
    """Item id, category, brand and normalised price -> ``[batch, output_dim]`` unit vectors.

    ``options`` (:class:`TowerOptions`) can drop category/brand or price and change the head.
    """

    def __init__(self, sizes: VocabularySizes, item_embedding: tf.keras.layers.Embedding,
                 output_dim: int, hidden_units: int = 128, options: TowerOptions | None = None):
        super().__init__(name="candidate_tower")
        options = options or TowerOptions(hidden_units=hidden_units)
        wanted = features.CANDIDATE_FEATURES if options.candidate_attributes else ()
        self.embeddings = _embedding_layers(wanted, sizes)
        self.item_embedding = item_embedding
        self.use_price = options.candidate_price
        width = (item_embedding.output_dim + int(self.use_price)
                 + sum(f.embedding_dim for f in wanted if f.transformed_name in self.embeddings))
        _check_width(options.projection, width, output_dim, "candidate")
        self.mlp = _mlp(hidden_units, output_dim, "candidate_mlp", options.projection,
                        options.normalize)

    def call(self, inputs: dict[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        parts = [layer(inputs[name]) for name, layer in self.embeddings.items()]
        parts.append(self.item_embedding(inputs[features.ITEM_ID_FEATURE.transformed_name]))
        if self.use_price:
            price = tf.reshape(inputs[features.PRICE_FEATURE.transformed_name], [-1, 1])
            parts.append(tf.cast(price, tf.float32))
        return self.mlp(tf.concat(parts, axis=1), training=training)


def _check_width(projection: str, width: int, output_dim: int, tower: str) -> None:
    if projection == "none" and width != output_dim:
        raise ValueError(f"projection 'none': the {tower} tower's features are {width} wide, "
                         f"but output_dim is {output_dim}")


class TwoTowerModel(tfrs.models.Model):
    """Two-tower retrieval: in-batch softmax with logQ correction, or a full-catalogue softmax.

    Args:
      sizes: embedding table sizes from the Transform vocabularies.
      item_sampling_probability: ``[sizes.items]`` probability that an item index appears as a
        training positive (its in-batch negative sampling probability). ``None`` turns the logQ
        correction off. Not used by the full softmax.
      output_dim: width of both tower outputs.
      temperature: divides the scores (cosines, or dot products without ``normalize``) before
        the softmax.
      pooling: how the query tower summarises the behaviour sequence (:data:`POOLINGS`).
      history_length: N, the behaviour sequence's padded length.
      options: how the towers are built (:class:`TowerOptions`); ``None``: the defaults.
      loss: ``"in_batch"`` (the other examples' items are the negatives, via TFRS),
        ``"full_softmax"`` (cross-entropy against every catalogue item, which needs
        ``catalogue``) or ``"sampled_softmax"`` (cross-entropy against the positive and
        ``negatives`` catalogue items drawn uniformly per batch and shared by its examples; a
        drawn item that is the example's own positive is masked out).
      catalogue: transformed candidate features of every item index, each ``[sizes.items]``
        (row i describes item index i; an absent item-id column means ``range(sizes.items)``).
        Row 0, the padding, is never a softmax class. The in-batch loss does not read it, but
        :meth:`item_embeddings` (validation) does.
      all_positions: (full softmax only) a training example is a whole sequence: the item-id
        feature is ``[batch, N]``, the next item after each history position (0 where there is
        none), and the loss averages over every position that has one.
      negatives: items drawn per batch by the sampled softmax.
      mask_history: (full softmax, one position) each example's history items other than its
        target are not classes of its softmax.
    """

    def __init__(self, sizes: VocabularySizes, item_sampling_probability: np.ndarray | None,
                 output_dim: int = 64, temperature: float = 0.1, pooling: str = "mean",
                 history_length: int = 20, options: TowerOptions | None = None,
                 loss: str = "in_batch", catalogue: dict[str, np.ndarray] | None = None,
                 all_positions: bool = False, negatives: int = 1024, mask_history: bool = False):
        super().__init__()
        options = options or TowerOptions()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        softmax = loss in ("full_softmax", "sampled_softmax")
        if softmax and catalogue is None:
            raise ValueError(f"the {loss} loss needs the catalogue's candidate features")
        if all_positions and not softmax:
            raise ValueError("all_positions needs the full or sampled softmax loss")
        if loss == "sampled_softmax" and negatives < 1:
            raise ValueError(f"negatives must be >= 1, got {negatives}")
        item_embedding = tf.keras.layers.Embedding(
            sizes.items, options.item_embedding_dim, name="item_id_embedding")
        self.query_tower = QueryTower(sizes, item_embedding, output_dim, pooling, history_length,
                                      options.hidden_units, options)
        self.candidate_tower = CandidateTower(sizes, item_embedding, output_dim,
                                              options.hidden_units, options)
        self.item_sampling_probability = None
        if item_sampling_probability is not None:
            if item_sampling_probability.shape != (sizes.items,):
                raise ValueError(f"item_sampling_probability has shape "
                                 f"{item_sampling_probability.shape}, expected ({sizes.items},)")
            self.item_sampling_probability = tf.constant(item_sampling_probability, tf.float32)
        self.task = tfrs.tasks.Retrieval(temperature=temperature, remove_accidental_hits=True)
        self.loss_name = loss
        self.temperature = temperature
        self.all_positions = all_positions
        self.negatives = negatives
        self.mask_history = mask_history
        self.catalogue = None
        if catalogue is not None:
            self.catalogue = _catalogue_tensors(catalogue, sizes.items)

    # Keras would run AutoGraph over every function these steps reach (TFRS, Keras internals):
    # about 20 s of conversion on 2 cores, for code with no tensor-dependent Python control flow.
    @tf.autograph.experimental.do_not_convert
    def train_step(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        if self.loss_name == "in_batch":
            return super().train_step(inputs)
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization_loss = tf.add_n(self.losses) if self.losses else tf.constant(0.0)
            total_loss = loss + regularization_loss
        gradients = tape.gradient(total_loss, self.trainable_variables)
        # The softmax reads the whole item table every step: one dense update is cheaper than
        # sparse updates with a catalogue's worth of rows.
        gradients = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                     for g in gradients]
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return {"loss": loss, "regularization_loss": regularization_loss,
                "total_loss": total_loss}

    @tf.autograph.experimental.do_not_convert
    def test_step(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return super().test_step(inputs)

    def compute_loss(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        if self.loss_name != "in_batch":
            return self._softmax_loss(inputs, training)
        item_ids = tf.reshape(inputs[features.ITEM_ID_FEATURE.transformed_name], [-1])
        sampling_probability = None
        if self.item_sampling_probability is not None:
            sampling_probability = tf.gather(self.item_sampling_probability, item_ids)
        return self.task(self.query_tower(inputs), self.candidate_tower(inputs),
                         candidate_sampling_probability=sampling_probability,
                         candidate_ids=item_ids, compute_metrics=False)

    def item_embeddings(self, training: bool | None = None) -> tf.Tensor:
        """``[sizes.items, output_dim]``: the candidate tower over the whole ``catalogue``."""
        if self.catalogue is None:
            raise ValueError("the model was built without a catalogue")
        return self.candidate_tower(self.catalogue, training=training)

    def _softmax_loss(self, inputs: dict[str, tf.Tensor], training: bool) -> tf.Tensor:
        """Cross-entropy of each positive against the catalogue (full or sampled)."""
        targets = inputs[features.ITEM_ID_FEATURE.transformed_name]
        if self.all_positions:
            queries = self.query_tower.sequence_outputs(inputs, training=training)
            has_target = targets > 0
            queries, targets = tf.boolean_mask(queries, has_target), tf.boolean_mask(
                targets, has_target)
        else:
            queries, targets = self.query_tower(inputs, training=training), tf.reshape(targets,
                                                                                        [-1])
        targets = tf.cast(targets, tf.int32)
        items = self.item_embeddings(training)
        queries = queries / self.temperature  # [T, D] rather than dividing [T, items] logits
        positive = tf.reduce_sum(queries * tf.gather(items, targets), axis=1)
        if self.loss_name == "full_softmax":
            # Every item but row 0 (the padding) is a class; the positive is among them.
            logits = tf.matmul(queries, items[1:], transpose_b=True)
            if self.mask_history and not self.all_positions:
                logits += _history_mask(inputs[features.HISTORY_FEATURE.transformed_name], targets,
                                        tf.shape(logits))
        else:
            sampled = tf.random.uniform([self.negatives], 1, tf.shape(items)[0], tf.int32)
            negative = tf.matmul(queries, tf.gather(items, sampled), transpose_b=True)
            negative += tf.where(sampled[tf.newaxis] == targets[:, tf.newaxis], -1e9, 0.0)
            logits = tf.concat([positive[:, tf.newaxis], negative], axis=1)
        return tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - positive)


def _history_mask(history: tf.Tensor, targets: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """``[batch, items - 1]`` logit offsets: -1e9 at each row's history items but its own target.

    ``history`` ``[batch, N]`` item indices (0 = padding), ``targets`` ``[batch]``; column j is
    item index j + 1.
    """
    rows = tf.broadcast_to(tf.range(tf.shape(history)[0])[:, tf.newaxis], tf.shape(history))
    indices = tf.stack([rows, tf.cast(history, tf.int32) - 1], axis=-1)
    valid = history > 0
    seen = tf.scatter_nd(tf.boolean_mask(indices, valid),
                         tf.ones([tf.reduce_sum(tf.cast(valid, tf.int32))]), shape)
    own = tf.one_hot(targets - 1, shape[1])
    return -1e9 * tf.cast(seen > 0, tf.float32) * (1.0 - own)


def _catalogue_tensors(catalogue: dict[str, np.ndarray], items: int) -> dict[str, tf.Tensor]:
    """The catalogue's columns as constants, item ids filled in; each must have ``items`` rows."""
    columns = dict(catalogue)
    columns.setdefault(features.ITEM_ID_FEATURE.transformed_name, np.arange(items))
    tensors = {}
    for name, values in columns.items():
        values = np.asarray(values)
        if values.shape[:1] != (items,):
            raise ValueError(f"catalogue column {name!r} has {values.shape[:1]} rows, "
                             f"expected {items}")
        tensors[name] = tf.constant(values, tf.float32 if values.dtype.kind == "f" else tf.int64)
    return tensors


def sampling_probability(item_indices: np.ndarray, num_items: int) -> np.ndarray:
    """Empirical probability of each item index among training positives; ``[num_items]``.

    Unseen indices (padding, OOV) get the smallest positive probability, so log Q stays finite.
    """
    counts = np.bincount(item_indices.astype(np.int64), minlength=num_items).astype(np.float64)
    counts[counts == 0] = 1.0
    return (counts / counts.sum()).astype(np.float32)
