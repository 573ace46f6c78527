"""Request and response bodies of the service's HTTP API (pydantic; they make the OpenAPI spec)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    Tag,
    model_validator,
)

from service.settings import (
    DEFAULT_MAX_BATCH_EVENTS,
    MAX_CART_ITEMS,
    MAX_EXCLUDE_IDS,
    MAX_ID_CHARS,
    MAX_K,
    MAX_TIMESTAMP,
)
from shoprec import features

# Control characters (C0, DEL, C1): never in an id.
_CONTROL = "\\x00-\\x1f\\x7f-\\x9f"


def _printable(value: str) -> str:
    """Refuses what the pattern cannot say: other non-printable characters (line and paragraph
    separators, format characters, lone surrogates) and text that is not valid UTF-8."""
    for position, character in enumerate(value):
        if not character.isprintable():
            raise ValueError(f"the character {character!r} at position {position} is not printable")
    return value


# Ids: printable, at most MAX_ID_CHARS characters. Ids written to the canonical CSV files also
# have no comma or quote (docs/data_schema.md).
PrintableId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=f"^[^{_CONTROL}]+$"),
                        AfterValidator(_printable)]
CsvId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=f'^[^{_CONTROL},"]+$'),
                  AfterValidator(_printable)]
ContextId = PrintableId
Price = Annotated[StrictFloat | StrictInt, Field(ge=0, le=1e12)]


class RecommendContext(BaseModel):
    """What the user is looking at; unknown item ids are ignored and reported."""

    model_config = ConfigDict(extra="forbid")
    current_item: ContextId | None = Field(None, description="The item being viewed (detail scene).")
    cart_items: list[ContextId] = Field(default_factory=list, max_length=MAX_CART_ITEMS,
                                        description="Items in the cart (cart scene); never recommended.")


class RecommendFilters(BaseModel):
    """Business filters of one request (the denylist and purchased items apply always)."""

    model_config = ConfigDict(extra="forbid")
    min_price: Price | None = Field(None, description="Lowest price shown (inclusive).")
    max_price: Price | None = Field(None, description="Highest price shown (inclusive).")
    exclude_ids: list[ContextId] = Field(default_factory=list, max_length=MAX_EXCLUDE_IDS,
                                         description="Items never to show in this response.")
    exclude_purchased: StrictBool = Field(True, description="Leave out items the user bought.")

    @model_validator(mode="after")
    def _price_range(self) -> RecommendFilters:
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError("min_price must not exceed max_price")
        return self


class RecommendBody(BaseModel):
    """A request for one scene's list."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"user_id": "u42", "scene": "home", "k": 10},
        {"user_id": "u42", "scene": "cart", "k": 5, "context": {"cart_items": ["i12", "i99"]},
         "filters": {"max_price": 80}},
        {"user_id": "u42", "scene": "detail", "k": 8, "context": {"current_item": "i12"}, "diversity": 0.5},
    ]})
    user_id: PrintableId
    scene: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=f"^[^{_CONTROL}]+$"),
                     AfterValidator(_printable)] = Field(
        description="A scene of the routing table (by default home, cart, detail).")
    k: StrictInt = Field(10, ge=1, le=MAX_K, description="List length (a JSON integer: 5.0 and \"5\" are refused).")
    context: RecommendContext = Field(default_factory=RecommendContext)
    diversity: StrictFloat | StrictInt | None = Field(None, ge=0.0, le=1.0,
                                    description="MMR lambda: 0 = by relevance only, 1 = most categories; "
                                                "default: the scene's.")
    filters: RecommendFilters = Field(default_factory=RecommendFilters)


class RecommendedItemOut(BaseModel):
    """One recommended item."""

    item_id: str
    score: float = Field(description="Ranking score, higher is better: the ranking model's predicted click "
                                     "probability (x price on a revenue scene), else the fused retrieval score.")
    category: str
    brand: str
    price: float
    route: str = Field(description="The route that produced the item (two_tower, session, complementary ...).")
    reason: str = Field(description="Why the item is shown, in a few words.")


class RecommendResponse(BaseModel):
    """A scene's list."""

    request_id: str = Field(description="Send it back with events on these items, for attribution.")
    scene: str
    user_id: str
    known_user: bool = Field(description="Whether the user has a trained profile (else: cold start).")
    model_version: int | None = Field(description="The model version that answered (null: model unavailable).")
    diversity: float
    items: list[RecommendedItemOut]
    ignored_context_items: list[str] = Field(description="Context item ids not in the catalogue.")
    warnings: list[str] = Field(description="Degradations: skipped routes, fallbacks, unavailable backends.")
    ranking_model_version: int | None = Field(None, description="The ranking model version that ordered the "
                                                                "candidates (null: retrieval order kept, see warnings).")
    model_name: str | None = Field(None, description="The retrieval model asked, by its name on the model server "
                                                     "(an experiment's model arm asks its own).")
    experiment: str | None = Field(None, description="The experiment that decided this answer (null: none).")
    arm: str | None = Field(None, description="The experiment's arm that answered (null: no experiment).")
    propensity: float | None = Field(None, description="The probability the arm had for this request "
                                                       "(its weight, or the bandit's allocation).")


class EventIn(BaseModel):
    """One event."""

    model_config = ConfigDict(extra="forbid")
    user_id: CsvId
    item_id: CsvId
    event_type: Literal[features.LOGGED_EVENT_TYPES]  # type: ignore[valid-type]
    request_id: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=f'^[^{_CONTROL},"]+$'),
                          AfterValidator(_printable)] | None = Field(
        None, description="The /recommend response that showed the item, if any.")
    timestamp: StrictInt | None = Field(
        None, ge=0, le=MAX_TIMESTAMP,
        description="Unix seconds; default: now. At most --max_future_skew_seconds (1 day) ahead of the "
                    f"service's clock, and never after {MAX_TIMESTAMP} (2100-01-01).")
    session_id: CsvId | None = Field(None, description="Default: the request id, else '<user_id>-live'.")
    event_id: CsvId | None = Field(None, description="Unique id; re-sending an id is a no-op. Default: generated.")


class EventBatch(BaseModel):
    """Several events, logged together (all or none)."""

    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(description=f"At most {DEFAULT_MAX_BATCH_EVENTS} events (configurable).")


def _event_body_kind(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "events" in value else "single"


EventsBody = Annotated[Annotated[EventBatch, Tag("batch")] | Annotated[EventIn, Tag("single")],
                       Discriminator(_event_body_kind)]


class EventsResponse(BaseModel):
    """What happened to posted events."""

    accepted: int = Field(description="Events newly logged.")
    duplicates: int = Field(description="Events whose event_id was already logged (ignored).")
    event_ids: list[str] = Field(description="The id of every posted event, in order.")
    warnings: list[str]


class HealthResponse(BaseModel):
    """Service health."""

    status: Literal["ok", "degraded"]
    model_version: int | None
    ranking_model_version: int | None = Field(None, description="The ranking model version in use; None "
                                                                "without a ranking stage or while none is "
                                                                "available (a problem then).")
    feature_store: str
    event_log: str = Field(description="The event log's backend and what makes a write durable, read back "
                                       "from it (e.g. 'sqlite synchronous=FULL journal_mode=wal').")
    catalogue_items: int
    problems: list[str]
