"""The one home of default settings: shop size, split, model and blessing.

Command-line flags override these; nothing else hard-codes them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

POOLINGS = ("mean", "attention", "gru")  # how the query tower summarises the behaviour sequence
LOSSES = ("in_batch", "full_softmax", "sampled_softmax")  # the retrieval model's training losses
OPTIMIZERS = ("adagrad", "adam")
MIN_HISTORY_LENGTH = 1


@dataclasses.dataclass(frozen=True)
class ShopConfig:
    """Size and shape of a generated shop (defaults follow the source article)."""

    users: int = 10_000
    items: int = 5_000
    events: int = 100_000
    categories: int = 20
    brands: int = 15
    price_mean: float = 50.0
    price_std: float = 30.0
    price_min: float = 10.0
    price_max: float = 200.0
    start: dt.datetime = dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc)
    end: dt.datetime = dt.datetime(2022, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
    purchase_share: float = 0.2  # clicks : purchases is about 80 : 20
    seed: int = 42


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """Time-based split: events at or after the cutoff quantile of time go to eval."""

    eval_fraction: float = 0.2  # share of events (by time) in the eval split
    history_length: int = 20  # N previous items kept in each example's behaviour sequence

    def __post_init__(self) -> None:
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.history_length < MIN_HISTORY_LENGTH:
            raise ValueError(f"history_length must be >= {MIN_HISTORY_LENGTH}, got {self.history_length}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Two-tower training hyper-parameters (one flag each; ``shoprec.model.training`` reads them).

    The defaults were searched on the validation slice of the 100K shop (docs/quality.md).
    """

    epochs: int = 40  # most passes over the training examples (early stopping stops sooner)
    batch_size: int = 1024
    learning_rate: float = 0.005
    embedding_dim: int = 64  # output width of both towers
    temperature: float = 0.2
    logq_correction: bool = True  # in_batch loss only: subtract log Q(item) from each logit
    # in_batch: TFRS in-batch softmax | full_softmax: every catalogue item is a class |
    # sampled_softmax: `negatives` uniformly drawn items per batch (large catalogues)
    loss: str = "full_softmax"
    negatives: int = 1024  # sampled_softmax: items drawn per batch
    # True: a training example is its whole history with a loss at every position (the next item
    # after each; softmax losses only); False: one loss per example, on its own item
    all_positions: bool = False
    optimizer: str = "adam"  # adagrad | adam
    attention_blocks: int = 1  # causal self-attention blocks of the attention pooling
    attention_heads: int = 2  # must divide item_embedding_dim
    dropout: float = 0.0  # attention and gru poolings
    norm_first: bool = False  # pre-LayerNorm attention blocks (SASRec) instead of post-LN
    item_embedding_dim: int = 32  # width of the shared item-id table
    projection: str = "mlp"  # mlp | linear | none: each tower's head on its concatenated features
    normalize: bool = True  # cosine scores (then divided by the temperature) instead of dot products
    use_user_id: bool = False  # the query tower reads the user-id embedding (it overfit on the 100K shop)
    use_age_group: bool = True  # the query tower reads the age-group embedding
    candidate_attributes: bool = True  # the candidate tower reads category, brand and price
    # Early stopping: the latest validation_fraction of the TRAIN period's events are held out
    # (never the eval split); training stops after `patience` validations without a better
    # NDCG@10 on them, or when another epoch would pass time_budget_s, and keeps the best epoch.
    # validation_fraction 0: no hold-out, exactly `epochs` epochs.
    validation_fraction: float = 0.1
    patience: int = 2
    validate_every: int = 1  # epochs between validations
    time_budget_s: float = 60.0  # wall-time budget of the search in seconds (the refit comes after); 0: none
    # After early stopping, train a fresh model on every train example (the held-out slice too)
    # for the best epoch count: the slice is the most recent data. Skipped when the time budget
    # stopped the search: the refit would cost the search's epochs again, past the budget.
    refit: bool = True
    # Start from the last blessed model (the Trainer's base_model): its weights, with the id
    # vocabularies extended for new ids (shoprec.model.warm_start; docs/production_loop.md).
    warm_start: bool = False
    # full_softmax, one position: the example's history items (other than its own item) are not
    # classes of its softmax; the Evaluator excludes seen items, so the loss need not rank them.
    mask_history: bool = False
    seed: int = 0  # weights, dropout and shuffling
    # mean | attention | gru. GRU led mean by 2% NDCG@10 on the 100K shop (bench/results/pooling.json)
    # but doubles the Trainer's time, which the 3-minute budget of the default run cannot afford.
    pooling: str = "mean"
    top_k: int = 100  # items returned by the serving signature
    user_id_hash_buckets: int = 0  # > 0: hash user ids into this many buckets, no vocabulary
    # brute_force | scann: the serving signatures take top-K from a ScaNN index (large
    # catalogues; needs the ScaNN-enabled TF Serving image, docs/serving.md)
    retrieval_index: str = "brute_force"

    def __post_init__(self) -> None:
        if self.user_id_hash_buckets < 0:
            raise ValueError(f"user_id_hash_buckets must be >= 0, got {self.user_id_hash_buckets}")
        for name in ("epochs", "batch_size", "embedding_dim", "top_k", "negatives", "attention_blocks",
                     "attention_heads", "item_embedding_dim", "patience", "validate_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.all_positions and self.loss == "in_batch":
            raise ValueError("all_positions needs loss full_softmax or sampled_softmax")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.time_budget_s < 0:
            raise ValueError(f"time_budget_s must be >= 0, got {self.time_budget_s}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.learning_rate < 0:
            raise ValueError(f"learning_rate must be >= 0, got {self.learning_rate}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.retrieval_index not in ("brute_force", "scann"):
            raise ValueError(f"retrieval_index must be brute_force or scann, got {self.retrieval_index!r}")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Retrieval evaluation and blessing."""

    ks: tuple[int, ...] = (10, 50, 100)
    blessing_metric: str = "ndcg@10"
    min_blessing_value: float = 0.0  # absolute floor the model must clear
    must_beat_popularity: bool = True
    regression_tolerance: float = 0.0  # allowed drop against the last blessed model


MODEL_NAME = "shoprec_retrieval"
PIPELINE_NAME = "shoprec"


@dataclasses.dataclass(frozen=True)
class RankingConfig:
    """Ranking model (DCN-v2, click and purchase), its training and its blessing."""

    # Defaults from five RankingTrainer reruns on the default shop (docs/ranking.md): with l2 1e-4
    # the DCN overfits its id embeddings (TFMA click AUC 0.770 against the baseline's 0.814).
    epochs: int = 5
    # Each model trains for the most whole epochs (of `epochs`, at least one) within this many
    # steps, so that the time grows no faster than the data: the default shop's 5 epochs are about
    # 625 steps; at 1M events an epoch is 1,245, and it trains two (docs/pipeline.md).
    max_steps: int = 3000
    batch_size: int = 512
    # Train impressions shuffled together, afresh each epoch (RankingExampleGen writes them in time
    # order): the whole train split up to this many (about 640,000 at 1M events).
    shuffle_buffer: int = 1_000_000
    learning_rate: float = 0.01
    # The logistic-regression baseline (same features, same run) is convex: it gets its own, larger step.
    baseline_learning_rate: float = 0.03
    cross_layers: int = 2  # tfrs.layers.dcn.Cross layers
    deep_layers: tuple[int, ...] = (64, 32)
    purchase_weight: float = 0.5  # weight of the purchase loss beside the click loss
    l2: float = 1e-3  # L2 penalty of every DCN embedding
    baseline_l2: float = 1e-4  # the baseline's, on its one-hot weights (its best of 1e-4, 1e-3, 3e-3)
    min_auc: float = 0.55  # blessing: click AUC on the eval impressions must reach this
    regression_tolerance: float = 0.01  # blessing: largest allowed AUC drop against the last blessed
    # Real logs without impressions.csv: each click gets this many sampled negatives
    # (popularity-weighted, items the user never touched before it; docs/ranking.md).
    sampled_negatives: int = 4

    def __post_init__(self) -> None:
        for name in ("epochs", "max_steps", "batch_size", "shuffle_buffer", "cross_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.min_auc <= 1.0:
            raise ValueError(f"min_auc must be in [0, 1], got {self.min_auc}")
        if self.sampled_negatives < 1:
            raise ValueError(f"sampled_negatives must be >= 1, got {self.sampled_negatives}")

    def training_fields(self) -> dict[str, object]:
        """The fields the RankingTrainer reads. The blessing floors and the negative sampling are left
        out, so that changing them does not invalidate the Trainer's cache (a cached model, re-judged)."""
        return {name: value for name, value in dataclasses.asdict(self).items()
                if name not in ("min_auc", "regression_tolerance", "sampled_negatives")}


RANKING_MODEL_NAME = "shoprec_ranking"
RANKING_CANDIDATES = 200  # candidates the service sends to the ranking model per request
