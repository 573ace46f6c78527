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
