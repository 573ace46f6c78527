"""The one place that declares the project's columns and features.

Every other module (generator, adapters, ExampleGen, Transform, Trainer, serving, UI) reads the
names, types and vocabularies from here instead of repeating them as string literals.

Three groups are declared:

* the **canonical files** a shop is stored in (``events.csv``, ``items.csv``, ``users.csv``),
  documented in ``docs/data_schema.md``;
* the **example features** that ExampleGen writes (an event joined with its item and user, plus
  the point-in-time behaviour sequence);
* the **model features** that Transform produces and the towers read.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

# ---------------------------------------------------------------------------------------------
# Canonical files.
# ---------------------------------------------------------------------------------------------
EVENTS_FILE = "events.csv"
ITEMS_FILE = "items.csv"
USERS_FILE = "users.csv"
TRUTH_DIR = "truth"  # hidden ground truth of a generated shop; never read by the pipeline

# Column names. The same name is used in the files, the tf.Examples and serving requests.
EVENT_ID = "event_id"
USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT_TYPE = "event_type"
TIMESTAMP = "timestamp"
SESSION_ID = "session_id"
CATEGORY = "category"
BRAND = "brand"
PRICE = "price"
AGE_GROUP = "age_group"
HISTORY = "history"  # derived: the user's previous items, most recent last

CLICK = "click"
CART = "cart"  # added to cart; real logs have it, the generated shop does not
PURCHASE = "purchase"
EVENT_TYPES: tuple[str, ...] = (CLICK, CART, PURCHASE)  # interactions: training data
IMPRESSION = "impression"  # shown to the user; logged by the service for attribution, not trained on
LOGGED_EVENT_TYPES: tuple[str, ...] = (IMPRESSION, *EVENT_TYPES)  # what POST /events accepts
AGE_GROUPS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55+")
UNKNOWN = "(unknown)"  # an imported category, brand or age group that the source does not give
AGE_GROUP_VALUES: tuple[str, ...] = AGE_GROUPS + (UNKNOWN,)

Dtype = Literal["string", "int64", "float"]


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a canonical file.

    Attributes:
      name: column name in the CSV header.
      dtype: value type once parsed.
      description: meaning and unit.
      allowed: the closed set of allowed values, if any.
      min_value: inclusive lower bound for numbers, if any.
    """

    name: str
    dtype: Dtype
    description: str
    allowed: tuple[str, ...] | None = None
    min_value: float | None = None


EVENT_COLUMNS: tuple[Column, ...] = (
    Column(EVENT_ID, "string", "unique id of the event"),
    Column(USER_ID, "string", "id of the user who acted"),
    Column(ITEM_ID, "string", "id of the item acted on; must exist in items.csv"),
    Column(EVENT_TYPE, "string", "what the user did", allowed=EVENT_TYPES),
    Column(TIMESTAMP, "int64", "when, in Unix seconds (UTC)", min_value=0),
    Column(SESSION_ID, "string", "id of the browsing session the event belongs to"),
)
ITEM_COLUMNS: tuple[Column, ...] = (
    Column(ITEM_ID, "string", "unique id of the item"),
    Column(CATEGORY, "string", "category id"),
    Column(BRAND, "string", "brand id"),
    Column(PRICE, "float", "price in the shop's currency, > 0", min_value=0.0),
)
USER_COLUMNS: tuple[Column, ...] = (
    Column(USER_ID, "string", "unique id of the user"),
    Column(AGE_GROUP, "string", "self-declared age bracket, or (unknown)",
           allowed=AGE_GROUP_VALUES),
)
CANONICAL_FILES: dict[str, tuple[Column, ...]] = {
    EVENTS_FILE: EVENT_COLUMNS,
    ITEMS_FILE: ITEM_COLUMNS,
    USERS_FILE: USER_COLUMNS,
}

# ---------------------------------------------------------------------------------------------
# Model features.
# ---------------------------------------------------------------------------------------------
Tower = Literal["query", "candidate"]


@dataclasses.dataclass(frozen=True)
class Feature:
    """A raw example feature and how Transform and the towers treat it.

    Attributes:
      name: raw feature name in the tf.Example (and serving request).
      dtype: raw value type.
      tower: which tower reads the transformed value.
      kind: ``"id"``/``"categorical"`` get a vocabulary with ``oov_buckets`` out-of-vocabulary
        buckets; ``"numeric"`` is z-score normalised; ``"sequence"`` is a padded list of item ids
        looked up in the item vocabulary.
      oov_buckets: OOV buckets for vocabularies; unknown values share a generic embedding.
      embedding_dim: width of the embedding of a vocabulary feature.
    """

    name: str
    dtype: Dtype
    tower: Tower
    kind: Literal["id", "categorical", "numeric", "sequence"]
    oov_buckets: int = 1
    embedding_dim: int = 16

    @property
    def transformed_name(self) -> str:
        """Name of the Transform output for this feature."""
        return f"{self.name}_xf"


USER_ID_FEATURE = Feature(USER_ID, "string", "query", "id", oov_buckets=1, embedding_dim=32)
AGE_GROUP_FEATURE = Feature(AGE_GROUP, "string", "query", "categorical", oov_buckets=1,
                            embedding_dim=4)
HISTORY_FEATURE = Feature(HISTORY, "string", "query", "sequence")
ITEM_ID_FEATURE = Feature(ITEM_ID, "string", "candidate", "id", oov_buckets=1, embedding_dim=32)
CATEGORY_FEATURE = Feature(CATEGORY, "string", "candidate", "categorical", embedding_dim=8)
BRAND_FEATURE = Feature(BRAND, "string", "candidate", "categorical", embedding_dim=8)
PRICE_FEATURE = Feature(PRICE, "float", "candidate", "numeric")

FEATURES: tuple[Feature, ...] = (
    USER_ID_FEATURE,
    AGE_GROUP_FEATURE,
    HISTORY_FEATURE,
    ITEM_ID_FEATURE,
    CATEGORY_FEATURE,
    BRAND_FEATURE,
    PRICE_FEATURE,
)
QUERY_FEATURES = tuple(f for f in FEATURES if f.tower == "query")
CANDIDATE_FEATURES = tuple(f for f in FEATURES if f.tower == "candidate")
# Item attributes, joined onto each event by ExampleGen and stored in the serving catalogue.
ITEM_ATTRIBUTES: tuple[Feature, ...] = (CATEGORY_FEATURE, BRAND_FEATURE, PRICE_FEATURE)

# Transformed-only outputs that are not features of a tower.
HISTORY_LENGTH_XF = "history_length_xf"
ITEM_ID_VOCAB = "item_id_vocab"  # vocabulary file shared by item_id and history

# Names of the exported serving signatures and their outputs.
SIGNATURE_TOP_K = "serving_default"
SIGNATURE_TOP_K_WITH_HISTORY = "recommend_with_history"
SIGNATURE_QUERY_EMBEDDING = "query_embedding"
SIGNATURE_ITEM_EMBEDDING = "item_embedding"
OUTPUT_ITEM_IDS = "item_ids"
OUTPUT_SCORES = "scores"
OUTPUT_EMBEDDING = "embedding"
OUTPUT_FOUND = "found"

# ---------------------------------------------------------------------------------------------
# Impressions and the ranking model (docs/data_schema.md, docs/ranking.md).
# ---------------------------------------------------------------------------------------------
IMPRESSIONS_FILE = "impressions.csv"  # optional canonical file: what a slate showed, and what came of it
REQUEST_ID = "request_id"  # the slate (one /recommend response) an impression belongs to
SCENE = "scene"  # where the slate was shown (home, detail, cart ...)
POSITION = "position"  # 0-based slot in the slate
PROPENSITY = "propensity"  # logging policy's probability of this item at this slot, given the slots above
CONTEXT_ITEM_ID = "context_item_id"  # the item the page was about ("" on pages about no item)
CONTEXT_CATEGORY = "context_category"  # derived: the category of the page's item ("" on pages about no item)
CLICKED = "clicked"  # 1: the shown item was clicked from the slate
PURCHASED = "purchased"  # 1: ... and then bought
RETRIEVAL_SCORE = "retrieval_score"  # derived: cosine of the two-tower query and item embeddings
USER_SEGMENT = "user_segment"  # derived: RETURNING (events before the split cutoff) or NEW
NO_ITEM = ""  # context_item_id of a page about no item
RETURNING = "returning"
NEW = "new"
HOME_SCENE = "home"
DETAIL_SCENE = "detail"

IMPRESSION_COLUMNS: tuple[Column, ...] = (
    Column(EVENT_ID, "string", "unique id of the impression"),
    Column(USER_ID, "string", "id of the user the slate was shown to"),
    Column(ITEM_ID, "string", "id of the item shown; must exist in items.csv"),
    Column(TIMESTAMP, "int64", "when the slate was shown, in Unix seconds (UTC)", min_value=0),
    Column(SESSION_ID, "string", "the browsing session"),
    Column(REQUEST_ID, "string", "the slate the impression belongs to"),
    Column(SCENE, "string", "the page the slate was on"),
    Column(POSITION, "int64", "0-based slot in the slate", min_value=0),
    Column(PROPENSITY, "float", "logging policy's probability of the item at this slot, given the slots above",
           min_value=0.0),
    Column(CONTEXT_ITEM_ID, "string", "the item the page was about, empty if none"),
    Column(CLICKED, "int64", "1 if the shown item was clicked from the slate, else 0", allowed=("0", "1")),
    Column(PURCHASED, "int64", "1 if it was clicked and then bought, else 0", allowed=("0", "1")),
)
OPTIONAL_FILES: dict[str, tuple[Column, ...]] = {IMPRESSIONS_FILE: IMPRESSION_COLUMNS}


@dataclasses.dataclass(frozen=True)
class RankingFeature:
    """A raw feature of a ranking example and how the ranking Transform treats it.

    Attributes:
      name: raw name in the ranking tf.Example and in the ranking serving request.
      dtype: raw value type.
      kind: ``"categorical"`` gets a vocabulary with ``oov_buckets``; ``"numeric"`` passes as a
        float (``price`` as the z-score of its log); ``"position"`` is clipped to
        ``[0, max_position]`` and embedded.
      embedding_dim: width of its embedding (vocabulary and position features).
      oov_buckets: OOV buckets of a vocabulary.
      request: the serving signature takes it; otherwise the model looks it up (item attributes
        from the catalogue, the age group from the user snapshot).
      shares: name of another categorical feature whose vocabulary this one is mapped with, and
        whose embedding the DCN uses for it (``context_category`` shares ``category``'s, so the
        cross layers see the page's category and the item's in the same space and can learn
        their match); the logistic baseline keeps a weight of its own per value.
    """

    name: str
    dtype: Dtype
    kind: Literal["categorical", "numeric", "position"]
    embedding_dim: int = 8
    oov_buckets: int = 1
    request: bool = True
    shares: str | None = None

    @property
    def transformed_name(self) -> str:
        """Name of the ranking Transform output."""
        return f"{self.name}_xf"

    @property
    def vocabulary_name(self) -> str:
        """The ranking Transform's vocabulary file of a categorical feature (the shared one's, if any)."""
        return f"ranking_{self.shares or self.name}_vocab"


MAX_POSITION = 19  # positions beyond share one embedding row
RANKING_FEATURES: tuple[RankingFeature, ...] = (
    RankingFeature(USER_ID, "string", "categorical", embedding_dim=16),
    RankingFeature(AGE_GROUP, "string", "categorical", embedding_dim=4, request=False),
    RankingFeature(ITEM_ID, "string", "categorical", embedding_dim=16),
    RankingFeature(CATEGORY, "string", "categorical", request=False),
    RankingFeature(BRAND, "string", "categorical", request=False),
    RankingFeature(PRICE, "float", "numeric", request=False),
    RankingFeature(SCENE, "string", "categorical", embedding_dim=4),
    RankingFeature(POSITION, "int64", "position", embedding_dim=4),
    RankingFeature(CONTEXT_ITEM_ID, "string", "categorical", embedding_dim=16),
    RankingFeature(CONTEXT_CATEGORY, "string", "categorical", request=False, shares=CATEGORY),
    RankingFeature(RETRIEVAL_SCORE, "float", "numeric"),
)
RANKING_FEATURES_BY_NAME: dict[str, RankingFeature] = {f.name: f for f in RANKING_FEATURES}
for _feature in RANKING_FEATURES:
    _owner = RANKING_FEATURES_BY_NAME.get(_feature.shares or "")
    if _feature.shares and (_owner is None or {_feature.kind, _owner.kind} != {"categorical"}):
        raise ValueError(f"ranking feature {_feature.name} shares {_feature.shares!r}: both must be declared "
                         f"categorical ranking features")
RANKING_REQUEST_FEATURES: tuple[RankingFeature, ...] = tuple(f for f in RANKING_FEATURES if f.request)
RANKING_LABELS: tuple[str, ...] = (CLICKED, PURCHASED)
# Carried in ranking examples for slicing and offline metrics, not read by the model.
RANKING_EXTRA_COLUMNS: tuple[str, ...] = (REQUEST_ID, USER_SEGMENT, TIMESTAMP)

# The ranking serving signatures and their outputs.
SIGNATURE_RANK = "serving_default"  # raw request features -> probabilities
SIGNATURE_RANK_EXAMPLES = "score_examples"  # serialized ranking tf.Examples -> probabilities (TFMA)
OUTPUT_CLICK_PROBABILITY = "click_probability"
OUTPUT_PURCHASE_PROBABILITY = "purchase_probability"
