"""Assembly: the parts of a running service, built from its settings."""

from __future__ import annotations

import dataclasses

from service.auth import Guard, RateLimiter
from service.event_log import EventLog, open_event_log
from service.feature_store import FeatureStore, UserEvent, open_feature_store
from service.settings import ServiceSettings
from service.strategy import retrievers
from service.strategy.attribution import RecentResponses
from service.strategy.catalogue import Catalogue
from service.strategy.context import SessionEvent
from service.strategy.filters import BusinessFilters, Denylist
from service.strategy.interactions import (
    build_interactions,
    read_events,
    with_purchases,
)
from service.strategy.metrics import ServiceMetrics
from service.strategy.model_gateway import ModelGateway, RankingGateway
from service.strategy.ranking import ModelRanker, Ranker, RetrievalScoreRanker
from service.strategy.routing import DEFAULT_ROUTING, RoutingTable
from service.strategy.service import RecommendationService
from serving.client import ModelClient
from shoprec import features


@dataclasses.dataclass
class Components:
    """The parts of a running service."""

    settings: ServiceSettings
    service: RecommendationService
    gateway: ModelGateway
    feature_store: FeatureStore
    event_log: EventLog
    metrics: ServiceMetrics
    guard: Guard
    ranking_gateway: RankingGateway | None = None  # None: no ranking model (retrieval order)


def retrieval_gateway(settings: ServiceSettings, catalogue: Catalogue, model_name: str) -> ModelGateway:
    """A gateway to the retrieval model ``model_name`` on the settings' model server (not yet polled)."""
    return ModelGateway(ModelClient(settings.model_url, model_name, settings.model_timeout_seconds),
                        catalogue.item_ids, settings.history_length)


def build_components(settings: ServiceSettings) -> Components:
    """Loads the shop's files and connects the model server, the feature store and the event log.

    The model server may still be down: the gateway keeps trying and the service degrades to
    routes without the model meanwhile. With ``settings.ranking_model_name``, the ranking stage is
    the ranking model on the model server (a :class:`ModelRanker`; the retrieval order while it is
    missing), else the retrieval order.

    Raises:
      OSError: a data, routing or denylist file cannot be read.
      RoutingError: the routing table is invalid.
      EventLogError: the event log cannot be opened, or is not configured durably.
    """
    catalogue = Catalogue.load(settings.data_dir)
    event_log = open_event_log(settings.event_log)
    interactions = build_interactions(read_events(settings.data_dir), catalogue, settings.history_length)
    interactions = with_purchases(interactions, catalogue, (
        (event.user_id, event.item_id) for event in event_log.events(event_type=features.PURCHASE)))
    gateway = retrieval_gateway(settings, catalogue, settings.model_name)
    routes = retrievers.default_routes(catalogue, interactions, gateway)
    if settings.routing_file:
        routing = RoutingTable.load(settings.routing_file, routes)
    else:
        routing = RoutingTable.from_dict(DEFAULT_ROUTING, routes)
    feature_store = open_feature_store(settings.redis_url, settings.store)
    metrics = ServiceMetrics()
    ranking_gateway = None
    ranker: Ranker = RetrievalScoreRanker()
    if settings.ranking_model_name:
        ranking_gateway = RankingGateway(ModelClient(settings.ranking_model_url or settings.model_url,
                                                     settings.ranking_model_name, settings.model_timeout_seconds))
        ranker = ModelRanker(ranking_gateway, gateway, catalogue, settings.ranking_candidates, metrics)
    service = RecommendationService(
        catalogue, interactions, routing, routes, feature_store, gateway,
        BusinessFilters(catalogue, Denylist(catalogue, settings.denylist_file)), ranker,
        settings.history_length, metrics, RecentResponses())
    guard = Guard(settings.api_keys, RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst))
    return Components(settings, service, gateway, feature_store, event_log, metrics, guard, ranking_gateway)


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
