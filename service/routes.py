"""The service's endpoints, over built components (see :func:`service.app.build_components`)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from typing import Annotated, Any

import fastapi
import orjson
from fastapi import Body, Header
from fastapi.responses import PlainTextResponse

from experiments.exposure import Exposure
from service.components import Components
from service.errors import ApiError, ErrorResponse
from service.event_log import EventLogError, LoggedEvent
from service.experiments import Decision, LiveExperiments
from service.feature_store import FeatureStoreError, UserEvent
from service.schemas import (
    EventBatch,
    EventsBody,
    EventsResponse,
    HealthResponse,
    RecommendBody,
    RecommendResponse,
)
from service.strategy.context import SessionEvent
from service.strategy.metrics import CONTENT_TYPE
from service.strategy.service import Recommendation, RecommendRequest
from shoprec import features

_log = logging.getLogger("service.routes")


def build_router(components: Components, experiments: LiveExperiments | None = None) -> fastapi.APIRouter:
    """``POST /recommend``, ``POST /events``, ``GET /healthz`` and ``GET /metrics``; with
    ``experiments``, ``/recommend`` answers from the request's arm and logs its exposure
    (:mod:`service.experiments`)."""
    settings = components.settings
    service = components.service
    metrics = components.metrics
    router = fastapi.APIRouter()
    errors = {400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}
    write_errors = {**errors, 401: {"model": ErrorResponse, "description": "missing or invalid API key"},
                    429: {"model": ErrorResponse, "description": "rate limit exceeded; see Retry-After"}}

    @router.post("/recommend", response_model=RecommendResponse, responses=errors)
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
        decision = experiments.decide(body.user_id, body.scene) if experiments is not None else None
        result = await (service if decision is None else decision.service).recommend_async(request)
        # The dataclasses have RecommendResponse's fields; orjson writes them directly (no second
        # validation of our own output on the hot path).
        answer: dict[str, Any] = {field.name: getattr(result, field.name) for field in dataclasses.fields(result)}
        answer.update(experiment=None, arm=None, propensity=None)
        if decision is not None:
            await log_exposure(decision, result, answer)
        content = orjson.dumps(answer)
        metrics.recommend_latency.observe(time.perf_counter() - began, result.scene)
        return fastapi.Response(content, media_type="application/json")

    async def log_exposure(decision: Decision, result: Recommendation, answer: dict[str, Any]) -> None:
        """Commits the exposure (durably, before the answer); then the answer names the arm.

        If the log refuses, the answer still goes out, without experiment and arm and with a
        warning: that request is outside the experiment (the analysis never sees it).
        """
        now = time.time()
        exposure = Exposure(result.request_id, result.user_id, decision.experiment, decision.arm, result.scene,
                            int(now), decision.propensity)
        try:
            await asyncio.to_thread(components.event_log.append_exposures, [exposure], now)
        except EventLogError as err:
            _log.error("exposure of request %s not logged: %s", result.request_id, err)
            metrics.degraded.inc("exposure_log")
            answer["warnings"] = (*result.warnings, f"experiment {decision.experiment}: the exposure was not "
                                                    f"logged, so this answer is outside the experiment: {err}")
            return
        assert experiments is not None
        experiments.exposed(decision, result.request_id, result.scene)
        answer.update(experiment=decision.experiment, arm=decision.arm, propensity=decision.propensity)

    def authorize(request: fastapi.Request,
                  authorization: Annotated[str | None, Header(description="Bearer <API key>, when keys are "
                                                                          "configured")] = None) -> str:
        """The write's caller, once its key and rate limit pass (401 / 429 otherwise)."""
        return components.guard.check(authorization, request.client.host if request.client else "unknown")

    @router.post("/events", response_model=EventsResponse, responses=write_errors)
    def post_events(body: Annotated[EventsBody, Body()],
                    caller: str = fastapi.Depends(authorize)) -> EventsResponse:  # noqa: B008 - a local dependency
        """Logs one event or a batch durably, then feeds the online feature store."""
        posted = body.events if isinstance(body, EventBatch) else [body]
        if len(posted) > settings.max_batch_events:
            raise ApiError(413, f"batch of {len(posted)} events exceeds the limit of "
                                f"{settings.max_batch_events} per request")
        unknown = sorted({event.item_id for event in posted if event.item_id not in service.catalogue})
        if unknown:
            raise ApiError(422, f"invalid request: unknown item_id(s) {', '.join(unknown[:20])}")
        now = time.time()
        latest = int(now) + settings.max_future_skew_seconds
        late = [(index, event.timestamp) for index, event in enumerate(posted)
                if event.timestamp is not None and event.timestamp > latest]
        if late:
            where = "; ".join(f"{'events.' + str(index) + '.' if isinstance(body, EventBatch) else ''}timestamp: "
                              f"{timestamp} is more than {settings.max_future_skew_seconds} s in the future "
                              f"(latest accepted now: {latest})" for index, timestamp in late[:10])
            raise ApiError(422, f"invalid request: {where}")
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
        except EventLogError as err:
            if err.rejected:
                raise ApiError(422, f"invalid request: the event log refused the events, nothing was "
                                    f"logged: {err}") from err
            _log.error("event log write failed (%s): %s", caller, err)
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
            if experiments is not None:
                experiments.observe(event.request_id, event.event_type)
            attribution = service.responses.attribute(event.request_id, event.item_id) if service.responses else None
            if attribution is not None:
                metrics.attributed_events.inc(attribution.scene, attribution.route, event.event_type)
        return EventsResponse(accepted=len(fresh), duplicates=len(logged) - len(fresh),
                              event_ids=[event.event_id for event in logged], warnings=warnings)

    @router.get("/healthz", response_model=HealthResponse)
    def healthz() -> HealthResponse:
        """Whether the models and the feature store are reachable (200 even when degraded)."""
        problems = []
        served = components.gateway.served
        if served is None:
            problems.append("no model version available: home and detail fall back to non-model routes")
        ranking_version = components.ranking_gateway.version if components.ranking_gateway else None
        if components.ranking_gateway is not None and ranking_version is None:
            problems.append("no ranking model version available: answers keep the retrieval order")
        try:
            components.feature_store.check()
        except FeatureStoreError as err:
            problems.append(f"feature store: {err}")
        return HealthResponse(status="degraded" if problems else "ok",
                              model_version=served.version if served else None,
                              ranking_model_version=ranking_version,
                              feature_store=components.feature_store.kind,
                              event_log=f"{components.event_log.kind} {components.event_log.durability()}",
                              catalogue_items=len(service.catalogue), problems=problems)

    @router.get("/metrics", response_class=PlainTextResponse)
    def prometheus_metrics() -> PlainTextResponse:
        """Prometheus text exposition."""
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    return router
