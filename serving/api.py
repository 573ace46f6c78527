"""The recommendation service's HTTP API (FastAPI on uvicorn): the endpoint a shop calls.

==================  ============================================================================
``POST /recommend`` a scene's list for a user: items with score, category, brand, price, the
                    route that produced each and a short reason, the model version, a request id
``POST /events``    one event or ``{"events": [...]}`` (impression, click, cart, purchase), logged
                    durably before the answer, then fed to the online feature store
``GET /healthz``    ``ok`` or ``degraded`` with the problems (always 200 while the process serves)
``GET /metrics``    Prometheus text
``GET /docs``       the OpenAPI UI (``/openapi.json``: the spec)
==================  ============================================================================

Run::

    python -m serving.api --data_dir runs/local/data --model_url http://localhost:8501 \\
        [--redis_url redis://localhost:6379/0] [--event_log runs/service/events.sqlite] \\
        [--routing routing.json] [--denylist out_of_stock.txt] --port 8080

Errors are JSON ``{"error": "..."}``: 400 malformed JSON or unknown scene (with the valid scenes),
413 body or batch too large, 422 invalid fields, 503 event log unwritable. See ``docs/service.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from typing import Annotated, Any, Literal

import fastapi
import orjson
import uvicorn
from fastapi import Body
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag, model_validator

from serving.client import ModelClient
from serving.event_log import EventLog, LoggedEvent
from serving.feature_store import FeatureStore, FeatureStoreError, StoreSettings, UserEvent, open_feature_store
from shoprec import config, features
from shoprec.strategy import retrievers
from shoprec.strategy.attribution import RecentResponses
from shoprec.strategy.catalogue import Catalogue
from shoprec.strategy.context import SessionEvent
from shoprec.strategy.filters import BusinessFilters, Denylist
from shoprec.strategy.interactions import build_interactions, read_events, with_purchases
from shoprec.strategy.metrics import CONTENT_TYPE, ServiceMetrics
from shoprec.strategy.model_gateway import ModelGateway
from shoprec.strategy.ranking import RetrievalScoreRanker
from shoprec.strategy.routing import DEFAULT_ROUTING, RoutingTable, UnknownSceneError
from shoprec.strategy.service import RecommendationService, RecommendRequest

_log = logging.getLogger("serving.api")

MAX_K = 100
MAX_CART_ITEMS = 100
MAX_EXCLUDE_IDS = 1000
DEFAULT_MAX_BATCH_EVENTS = 1000
DEFAULT_MAX_BODY_BYTES = 1 << 20
ENDPOINTS = ("/recommend", "/events", "/healthz", "/metrics")


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """Everything the service is configured with (the command line fills it)."""

    data_dir: str
    model_url: str = "http://localhost:8501"
    model_name: str = config.MODEL_NAME
    redis_url: str | None = None
    event_log: str = "runs/service/events.sqlite"
    routing_file: str | None = None
    denylist_file: str | None = None
    history_length: int = config.SplitConfig.history_length
    store: StoreSettings = StoreSettings()
    model_poll_seconds: float = 10.0
    model_timeout_seconds: float = 0.5
    max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


# ---------------------------------------------------------------------------------------------
# Request and response bodies.
# ---------------------------------------------------------------------------------------------
# Ids written to the canonical CSV files: no comma, quote or line break (docs/data_schema.md).
CsvId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r'^[^,"\r\n]+$')]
ContextId = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class RecommendContext(BaseModel):
    """What the user is looking at; unknown item ids are ignored and reported."""

    model_config = ConfigDict(extra="forbid")
    current_item: ContextId | None = Field(None, description="The item being viewed (detail scene).")
    cart_items: list[ContextId] = Field(default_factory=list, max_length=MAX_CART_ITEMS,
                                        description="Items in the cart (cart scene); never recommended.")


class RecommendFilters(BaseModel):
    """Business filters of one request (the denylist and purchased items apply always)."""

    model_config = ConfigDict(extra="forbid")
    min_price: float | None = Field(None, ge=0, description="Lowest price shown (inclusive).")
    max_price: float | None = Field(None, ge=0, description="Highest price shown (inclusive).")
    exclude_ids: list[ContextId] = Field(default_factory=list, max_length=MAX_EXCLUDE_IDS,
                                         description="Items never to show in this response.")
    exclude_purchased: bool = Field(True, description="Leave out items the user bought.")

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
    user_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    scene: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="A scene of the routing table (by default home, cart, detail).")
    k: int = Field(10, ge=1, le=MAX_K, description="List length.")
    context: RecommendContext = Field(default_factory=RecommendContext)
    diversity: float | None = Field(None, ge=0.0, le=1.0,
                                    description="MMR lambda: 0 = by relevance only, 1 = most categories; "
                                                "default: the scene's.")
    filters: RecommendFilters = Field(default_factory=RecommendFilters)


class RecommendedItemOut(BaseModel):
    """One recommended item."""

    item_id: str
    score: float = Field(description="Ranking score (fused retrieval score for now); higher is better.")
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


class EventIn(BaseModel):
    """One event."""

    model_config = ConfigDict(extra="forbid")
    user_id: CsvId
    item_id: CsvId
    event_type: Literal[features.LOGGED_EVENT_TYPES]  # type: ignore[valid-type]
    request_id: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        None, description="The /recommend response that showed the item, if any.")
    timestamp: int | None = Field(None, ge=0, description="Unix seconds; default: now.")
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
    feature_store: str
    catalogue_items: int
    problems: list[str]


class ErrorResponse(BaseModel):
    """Every error answer."""

    error: str


# ---------------------------------------------------------------------------------------------
# Assembly.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Components:
    """The parts of a running service."""

    settings: ServiceSettings
    service: RecommendationService
    gateway: ModelGateway
    feature_store: FeatureStore
    event_log: EventLog
    metrics: ServiceMetrics


def build_components(settings: ServiceSettings) -> Components:
    """Loads the shop's files and connects the model server, the feature store and the event log.

    The model server may still be down: the gateway keeps trying and the service degrades to
    routes without the model meanwhile.

    Raises:
      OSError: a data, routing or denylist file cannot be read.
      RoutingError: the routing table is invalid.
      sqlite3.Error: the event log cannot be opened.
    """
    catalogue = Catalogue.load(settings.data_dir)
    event_log = EventLog(settings.event_log)
    interactions = build_interactions(read_events(settings.data_dir), catalogue, settings.history_length)
    interactions = with_purchases(interactions, catalogue, (
        (event.user_id, event.item_id) for event in event_log.events(event_type=features.PURCHASE)))
    gateway = ModelGateway(ModelClient(settings.model_url, settings.model_name, settings.model_timeout_seconds),
                           catalogue.item_ids, settings.history_length)
    routes = retrievers.default_routes(catalogue, interactions, gateway)
    if settings.routing_file:
        routing = RoutingTable.load(settings.routing_file, routes)
    else:
        routing = RoutingTable.from_dict(DEFAULT_ROUTING, routes)
    feature_store = open_feature_store(settings.redis_url, settings.store)
    metrics = ServiceMetrics()
    service = RecommendationService(
        catalogue, interactions, routing, routes, feature_store, gateway,
        BusinessFilters(catalogue, Denylist(catalogue, settings.denylist_file)), RetrievalScoreRanker(),
        settings.history_length, metrics, RecentResponses())
    return Components(settings, service, gateway, feature_store, event_log, metrics)


def replay_recent_events(event_log: EventLog, feature_store: FeatureStore, now: float) -> int:
    """Feeds the events of the last session TTL from the log into a fresh in-process store.

    Returns:
      The number of events replayed.
    """
    since = now - feature_store.settings.session_ttl_seconds
    replayed = [UserEvent(event.user_id, SessionEvent(event.item_id, event.event_type, event.timestamp))
                for event in event_log.events(received_since=since) if event.event_type in features.EVENT_TYPES]
    if replayed:
        feature_store.record(replayed)
    return len(replayed)


# ---------------------------------------------------------------------------------------------
# The application.
# ---------------------------------------------------------------------------------------------
class ApiError(Exception):
    """An error answer with a status code and a message."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def _error(status_code: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status_code)


def _validation_message(errors: Sequence[Any]) -> tuple[int, str]:
    """Status and message of a validation failure: 400 for malformed JSON, else 422."""
    for error in errors:
        if error.get("type") == "json_invalid":
            context = error.get("ctx", {}).get("error", "")
            return 400, f"malformed JSON body: {context}".rstrip(": ")
    parts = []
    for error in errors:
        location = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "batch", "single"))
        parts.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    return 422, "invalid request: " + "; ".join(parts)


Asgi = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                Awaitable[None]]


class BodyLimitAndMetrics:
    """ASGI middleware: refuses bodies over ``max_body_bytes`` (413) and counts requests.

    Args:
      app: the wrapped application.
      max_body_bytes: the largest request body accepted.
      metrics: where to count requests by path and status.
    """

    def __init__(self, app: Asgi, max_body_bytes: int, metrics: ServiceMetrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in ENDPOINTS else "other"
        status = {"code": 500}

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        async def refuse(message: str) -> None:
            await _error(413, message)(scope, receive, counting_send)

        try:
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            if length is not None and int(length) > self.max_body_bytes:
                await refuse(f"request body of {int(length)} bytes exceeds the limit of {self.max_body_bytes}")
                return
            if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
                chunks, size = [], 0
                while True:  # no length given: read (at most the limit) before the app sees it
                    message = await receive()
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        await refuse(f"request body exceeds the limit of {self.max_body_bytes} bytes")
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
                body = b"".join(chunks)

                async def replay() -> dict[str, Any]:
                    return {"type": "http.request", "body": body, "more_body": False}

                receive = replay
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.http_requests.inc(path, str(status["code"]))


def create_app(components: Components) -> fastapi.FastAPI:
    """The FastAPI application over built components (see :func:`build_components`)."""
    settings = components.settings
    service = components.service
    metrics = components.metrics

    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[None]:
        if components.feature_store.kind == "memory":
            replayed = replay_recent_events(components.event_log, components.feature_store, time.time())
            _log.info("replayed %d recent events from the event log into the in-process feature store", replayed)
        components.gateway.start_polling(settings.model_poll_seconds)
        yield
        components.gateway.close()
        components.feature_store.close()
        components.event_log.close()

    app = fastapi.FastAPI(
        title="shoprec recommendation service",
        version="1.0",
        description=__doc__.split("\n\n")[0],
        lifespan=lifespan,
        responses={422: {"model": ErrorResponse}},
    )
    errors = {400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: fastapi.Request, error: RequestValidationError) -> JSONResponse:
        status_code, message = _validation_message(error.errors())
        return _error(status_code, message)

    @app.exception_handler(UnknownSceneError)
    async def on_unknown_scene(request: fastapi.Request, error: UnknownSceneError) -> JSONResponse:
        return _error(400, str(error), valid_scenes=error.valid)

    @app.exception_handler(ApiError)
    async def on_api_error(request: fastapi.Request, error: ApiError) -> JSONResponse:
        return _error(error.status_code, error.message)

    @app.post("/recommend", response_model=RecommendResponse, responses=errors)
    async def recommend(body: RecommendBody) -> fastapi.Response:
        """A scene's recommendations for a user (see the module docstring).

        It runs on the event loop and awaits the model (and a remote feature store), so
        concurrent requests overlap there instead of each holding a worker thread.
        """
        began = time.perf_counter()
        request = RecommendRequest(
            user_id=body.user_id, scene=body.scene, k=body.k,
            current_item=body.context.current_item, cart_items=tuple(body.context.cart_items),
            diversity=body.diversity, min_price=body.filters.min_price, max_price=body.filters.max_price,
            exclude_ids=tuple(body.filters.exclude_ids), exclude_purchased=body.filters.exclude_purchased)
        result = await service.recommend_async(request)
        # The dataclasses have RecommendResponse's fields; orjson writes them directly (no second
        # validation of our own output on the hot path).
        content = orjson.dumps(result)
        metrics.recommend_latency.observe(time.perf_counter() - began, result.scene)
        return fastapi.Response(content, media_type="application/json")

    @app.post("/events", response_model=EventsResponse, responses=errors)
    def post_events(body: Annotated[EventsBody, Body()]) -> EventsResponse:
        """Logs one event or a batch durably, then feeds the online feature store."""
        posted = body.events if isinstance(body, EventBatch) else [body]
        if len(posted) > settings.max_batch_events:
            raise ApiError(413, f"batch of {len(posted)} events exceeds the limit of "
                                f"{settings.max_batch_events} per request")
        unknown = sorted({event.item_id for event in posted if event.item_id not in service.catalogue})
        if unknown:
            raise ApiError(422, f"invalid request: unknown item_id(s) {', '.join(unknown[:20])}")
        now = time.time()
        logged = [
            LoggedEvent(
                event_id=event.event_id or f"live-{uuid.uuid4().hex}",
                user_id=event.user_id, item_id=event.item_id, event_type=event.event_type,
                timestamp=event.timestamp if event.timestamp is not None else int(now),
                session_id=event.session_id or event.request_id or f"{event.user_id}-live",
                request_id=event.request_id)
            for event in posted]
        try:
            inserted = components.event_log.append(logged, received_at=now)
        except sqlite3.Error as err:
            _log.error("event log write failed: %s", err)
            raise ApiError(503, f"event log unavailable, nothing was logged: {err}") from err
        fresh = [event for event, new in zip(logged, inserted) if new]
        warnings = []
        session_events = [UserEvent(event.user_id, SessionEvent(event.item_id, event.event_type, event.timestamp))
                          for event in fresh if event.event_type in features.EVENT_TYPES]
        if session_events:
            try:
                components.feature_store.record(session_events)
            except FeatureStoreError as err:
                warnings.append(f"events logged, but the feature store was not updated: {err}")
                metrics.degraded.inc("feature_store")
        for event in fresh:
            metrics.events.inc(event.event_type)
            attribution = service.responses.attribute(event.request_id, event.item_id) if service.responses else None
            if attribution is not None:
                metrics.attributed_events.inc(attribution.scene, attribution.route, event.event_type)
        return EventsResponse(accepted=len(fresh), duplicates=len(logged) - len(fresh),
                              event_ids=[event.event_id for event in logged], warnings=warnings)

    @app.get("/healthz", response_model=HealthResponse)
    def healthz() -> HealthResponse:
        """Whether the model and the feature store are reachable (200 even when degraded)."""
        problems = []
        served = components.gateway.served
        if served is None:
            problems.append("no model version available: home and detail fall back to non-model routes")
        try:
            components.feature_store.check()
        except FeatureStoreError as err:
            problems.append(f"feature store: {err}")
        return HealthResponse(status="degraded" if problems else "ok",
                              model_version=served.version if served else None,
                              feature_store=components.feature_store.kind,
                              catalogue_items=len(service.catalogue), problems=problems)

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus_metrics() -> PlainTextResponse:
        """Prometheus text exposition."""
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    app.add_middleware(BodyLimitAndMetrics, max_body_bytes=settings.max_body_bytes, metrics=metrics)
    return app


# ---------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    defaults = ServiceSettings(data_dir="")
    parser = argparse.ArgumentParser(
        prog="python -m serving.api",
        description="The shoprec recommendation service: POST /recommend, POST /events, GET /healthz, "
                    "GET /metrics, OpenAPI at /docs and /openapi.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", required=True,
                        help="the shop's canonical files (items.csv, events.csv) the model was trained on")
    parser.add_argument("--model_url", default=defaults.model_url,
                        help="TF Serving (or python -m serving.model_server): http://host:port (REST) "
                             "or grpc://host:port")
    parser.add_argument("--model_name", default=defaults.model_name, help="the served model's name")
    parser.add_argument("--redis_url", default=None,
                        help="online feature store, e.g. redis://localhost:6379/0; default: in-process store")
    parser.add_argument("--event_log", default=defaults.event_log, help="durable event log (SQLite file)")
    parser.add_argument("--routing", default=None, help="routing table (JSON); default: the built-in table")
    parser.add_argument("--denylist", default=None, help="item ids never to recommend, one per line "
                                                         "(re-read when it changes)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--history_length", type=int, default=defaults.history_length,
                        help="items passed to the user tower")
    parser.add_argument("--recent_events", type=int, default=defaults.store.history_length,
                        help="recent events kept per user in the feature store")
    parser.add_argument("--session_ttl_seconds", type=int, default=defaults.store.session_ttl_seconds,
                        help="recent events expire this long after the user's last event")
    parser.add_argument("--purchase_ttl_seconds", type=int, default=defaults.store.purchase_ttl_seconds,
                        help="live purchases expire from the feature store after this long")
    parser.add_argument("--model_poll_seconds", type=float, default=defaults.model_poll_seconds,
                        help="how often to look for a new model version")
    parser.add_argument("--model_timeout_seconds", type=float, default=defaults.model_timeout_seconds,
                        help="deadline of each model server request")
    parser.add_argument("--max_batch_events", type=int, default=defaults.max_batch_events,
                        help="most events per POST /events")
    parser.add_argument("--max_body_bytes", type=int, default=defaults.max_body_bytes,
                        help="largest request body")
    parser.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def settings_from_args(args: argparse.Namespace) -> ServiceSettings:
    """ServiceSettings from parsed flags."""
    return ServiceSettings(
        data_dir=args.data_dir, model_url=args.model_url, model_name=args.model_name, redis_url=args.redis_url,
        event_log=args.event_log, routing_file=args.routing, denylist_file=args.denylist,
        history_length=args.history_length,
        store=StoreSettings(history_length=args.recent_events, session_ttl_seconds=args.session_ttl_seconds,
                            purchase_ttl_seconds=args.purchase_ttl_seconds),
        model_poll_seconds=args.model_poll_seconds, model_timeout_seconds=args.model_timeout_seconds,
        max_batch_events=args.max_batch_events, max_body_bytes=args.max_body_bytes)


def main(argv: Sequence[str] | None = None) -> int:
    """Builds the service and serves until SIGINT or SIGTERM."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S")
    components = build_components(settings_from_args(args))
    _log.info("catalogue: %d items; routing: %s; feature store: %s; event log: %s",
              len(components.service.catalogue), json.dumps(sorted(components.service.routing.scenes)),
              components.feature_store.kind, args.event_log)
    server = uvicorn.Server(uvicorn.Config(
        create_app(components), host=args.host, port=args.port, log_config=None, log_level="warning",
        access_log=False, http="httptools", loop="uvloop"))
    _log.info("serving on http://%s:%d", args.host, args.port)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
