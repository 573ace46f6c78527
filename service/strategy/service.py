"""The recommendation service: scene routing, retrieval, filters, ranking and diversity.

One request goes through these stages::

    context + user state  ->  allowed mask (business filters)
      -> the scene's routes (RetrievalQuery -> Candidates), fused by weighted reciprocal rank
      -> the fallback route tops the pool up, below every primary candidate (fills short lists
         for cold users and thin contexts, and gives diversity other categories to pick)
      -> ranking stage (Ranker: the ranking model on the model server, by the scene's objective)
      -> diversity (MMR, lambda)  -> top k, each with its reason

A route whose backend fails (model server, feature store) is skipped with a warning in the
response: the service answers from what is left, down to popularity, instead of failing. A
failing or missing ranking model keeps the retrieval order, with a warning.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import uuid
from collections.abc import Mapping

import numpy as np

from service.feature_store import FeatureStore, FeatureStoreError, UserState
from service.strategy import retrievers
from service.strategy.attribution import RecentResponses
from service.strategy.catalogue import Catalogue
from service.strategy.context import Candidates, RetrievalQuery
from service.strategy.diversity import mmr
from service.strategy.filters import BusinessFilters, FilterSpec
from service.strategy.interactions import Interactions
from service.strategy.metrics import ServiceMetrics
from service.strategy.model_gateway import ModelGateway, ModelUnavailableError
from service.strategy.ranking import (
    CandidatePool,
    Ranker,
    RankingResult,
    append_fallback,
    fuse,
    rank,
    reserve_slots,
)
from service.strategy.routing import RoutingTable, SceneSpec
from serving.client import ModelServerError
from shoprec import features
from shoprec.data import point_in_time


@dataclasses.dataclass(frozen=True)
class RecommendRequest:
    """A validated request.

    Attributes:
      user_id: the user.
      scene: a scene of the routing table.
      k: list length.
      current_item: the item being viewed, if any.
      cart_items: the items in the cart.
      diversity: MMR lambda in [0, 1]; None: the scene's default.
      min_price: lowest price shown, if any.
      max_price: highest price shown, if any.
      exclude_ids: items never to show.
      exclude_purchased: leave out what the user bought.
    """

    user_id: str
    scene: str
    k: int = 10
    current_item: str | None = None
    cart_items: tuple[str, ...] = ()
    diversity: float | None = None
    min_price: float | None = None
    max_price: float | None = None
    exclude_ids: tuple[str, ...] = ()
    exclude_purchased: bool = True


@dataclasses.dataclass(frozen=True)
class RecommendedItem:
    """One recommended item with its attributes and why it is there."""

    item_id: str
    score: float
    category: str
    brand: str
    price: float
    route: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """The answer to a :class:`RecommendRequest`.

    Attributes:
      request_id: id to attribute later events to.
      scene: the scene served.
      user_id: the user.
      known_user: whether the user has a trained profile.
      model_version: the model version that answered (or is in use); None when unavailable.
      diversity: the lambda applied.
      ranking_model_version: the ranking model version that ordered the candidates; None when
        the retrieval order was kept.
      model_name: the retrieval model the service asks (its name on the model server; an
        experiment's model arm asks its own); None without one.
      items: the list, best first.
      ignored_context_items: context item ids not in the catalogue.
      warnings: what was degraded (a route skipped, a backend down, a fallback used ...).
    """

    request_id: str
    scene: str
    user_id: str
    known_user: bool
    model_version: int | None
    diversity: float
    items: tuple[RecommendedItem, ...]
    ignored_context_items: tuple[str, ...]
    warnings: tuple[str, ...]
    ranking_model_version: int | None = None
    model_name: str | None = None


@dataclasses.dataclass(frozen=True)
class Retrieval:
    """A request's ranked candidate pool, before diversity and truncation.

    Attributes:
      scene: the scene's spec.
      query: the resolved query.
      pool: ranked candidates.
      model_version: the model version of the model-backed routes, if any ran.
      ignored_context_items: unknown context ids.
      warnings: degradations so far.
      session_used: whether live session events were used.
      ranking_model_version: the ranking model version that ordered the pool, if one did.
    """

    scene: SceneSpec
    query: RetrievalQuery
    pool: CandidatePool
    model_version: int | None
    ignored_context_items: tuple[str, ...]
    warnings: tuple[str, ...]
    session_used: bool
    ranking_model_version: int | None = None


class RecommendationService:
    """Serves recommendations; see the module docstring.

    Args:
      catalogue: the shop's items.
      interactions: offline signals of the shop's events.
      routing: the routing table.
      routes: route name -> retriever, for every route the table names.
      feature_store: the online per-user state.
      gateway: the model (for the version reported when no model-backed route ran).
      filters: the business filters.
      ranker: the ranking stage.
      history_length: items passed to the user tower.
      metrics: where to count; None for none.
      responses: recent responses, for attribution; None for none.
    """

    def __init__(self, catalogue: Catalogue, interactions: Interactions, routing: RoutingTable,
                 routes: Mapping[str, retrievers.Retriever], feature_store: FeatureStore, gateway: ModelGateway | None,
                 filters: BusinessFilters, ranker: Ranker, history_length: int,
                 metrics: ServiceMetrics | None = None, responses: RecentResponses | None = None) -> None:
        missing = routing.route_names - set(routes)
        if missing:
            raise ValueError(f"no retriever for route(s) {', '.join(sorted(missing))}")
        self.catalogue = catalogue
        self.interactions = interactions
        self.routing = routing
        self._routes = dict(routes)
        self.feature_store = feature_store
        self._gateway = gateway
        self._filters = filters
        self._ranker = ranker
        self._history_length = history_length
        self._metrics = metrics
        self.responses = responses

    def with_routing(self, routing: RoutingTable, ranker: Ranker | None = None) -> RecommendationService:
        """This service routed by ``routing`` (and ranked by ``ranker``, when given); every other
        part (catalogue, model, feature store, filters, attribution) is shared."""
        missing = routing.route_names - set(self._routes)
        if missing:
            raise ValueError(f"no retriever for route(s) {', '.join(sorted(missing))}")
        other = copy.copy(self)
        other.routing = routing
        if ranker is not None:
            other._ranker = ranker
        return other

    def with_model(self, gateway: ModelGateway) -> RecommendationService:
        """This service asking another retrieval model: its model routes (``two_tower``,
        ``similar``) and the ranking stage's retrieval score use ``gateway``; every other part is
        shared."""
        other = copy.copy(self)
        other._routes = {**self._routes, **retrievers.model_routes(self.catalogue, gateway)}
        other._gateway = gateway
        other._ranker = self._ranker.with_retrieval(gateway)
        return other

    def recommend(self, request: RecommendRequest) -> Recommendation:
        """Answers a request.

        Raises:
          UnknownSceneError: the scene is not in the routing table.
        """
        retrieval = self.retrieve(request)
        return self.finish(request, retrieval, self._diversity(request, retrieval))

    async def recommend_async(self, request: RecommendRequest) -> Recommendation:
        """``recommend`` for asyncio code: the same answer; the model call and a remote feature
        store are awaited, so one event loop serves many requests at once.

        Raises:
          UnknownSceneError: the scene is not in the routing table.
        """
        scene = self.routing.scene(request.scene)
        warnings: list[str] = []
        if self.feature_store.remote:  # a round trip (or its timeout) must not hold the event loop
            state = await asyncio.to_thread(self._user_state, request.user_id, warnings)
        else:
            state = self._user_state(request.user_id, warnings)
        query, session_used, ignored = self._query(request, state, warnings)
        lists = [(await self._run_route_async(route.route, query, warnings), route.weight) for route in scene.routes]
        pool = fuse(lists, self.routing.fusion_k)
        fallback = None
        if self._needs_fallback(scene, pool):
            fallback = await self._run_route_async(scene.fallback, query, warnings)
        pool = self._with_fallback(pool, fallback)
        rank_async = getattr(self._ranker, "rank_async", None)
        if rank_async is None:
            ranked = self._ranker.rank(query, pool, scene.name, scene.objective)
        else:
            ranked = await rank_async(query, pool, scene.name, scene.objective)
        retrieval = self._retrieval(scene, query, lists, pool, ranked, ignored, warnings, session_used)
        return self.finish(request, retrieval, self._diversity(request, retrieval))

    @staticmethod
    def _diversity(request: RecommendRequest, retrieval: Retrieval) -> float:
        return retrieval.scene.diversity if request.diversity is None else request.diversity

    def _user_state(self, user_id: str, warnings: list[str]) -> UserState:
        try:
            return self.feature_store.user_state(user_id)
        except FeatureStoreError as err:
            warnings.append(f"feature store unavailable, session ignored: {err}")
            self._count_degraded("feature_store")
            return UserState()

    def _count_degraded(self, component: str) -> None:
        if self._metrics is not None:
            self._metrics.degraded.inc(component)

    def _run_route(self, name: str, query: RetrievalQuery, warnings: list[str]) -> Candidates:
        try:
            return self._routes[name].retrieve(query)
        except (ModelUnavailableError, ModelServerError) as err:
            return self._skipped_route(name, err, warnings)

    async def _run_route_async(self, name: str, query: RetrievalQuery, warnings: list[str]) -> Candidates:
        retrieve_async = getattr(self._routes[name], "retrieve_async", None)
        if retrieve_async is None:
            return self._run_route(name, query, warnings)
        try:
            return await retrieve_async(query)
        except (ModelUnavailableError, ModelServerError) as err:
            return self._skipped_route(name, err, warnings)

    def _skipped_route(self, name: str, err: Exception, warnings: list[str]) -> Candidates:
        warnings.append(f"route {name} skipped, model unavailable: {err}")
        self._count_degraded("model")
        return Candidates.empty(name)

    def retrieve(self, request: RecommendRequest) -> Retrieval:
        """Runs every stage up to ranking: the request's ranked candidate pool.

        Raises:
          UnknownSceneError: the scene is not in the routing table.
        """
        scene = self.routing.scene(request.scene)
        warnings: list[str] = []
        state = self._user_state(request.user_id, warnings)
        query, session_used, ignored = self._query(request, state, warnings)
        lists = [(self._run_route(route.route, query, warnings), route.weight) for route in scene.routes]
        pool = fuse(lists, self.routing.fusion_k)
        fallback = self._run_route(scene.fallback, query, warnings) if self._needs_fallback(scene, pool) else None
        pool = self._with_fallback(pool, fallback)
        ranked = self._ranker.rank(query, pool, scene.name, scene.objective)
        return self._retrieval(scene, query, lists, pool, ranked, ignored, warnings, session_used)

    def _query(self, request: RecommendRequest, state: UserState,
               warnings: list[str]) -> tuple[RetrievalQuery, bool, list[str]]:
        """The routes' query for a request and the user's live state.

        Returns:
          ``(query, session_used, ignored)``: whether live session events count, and the unknown
          context item ids (also reported in ``warnings``).
        """
        context_ids = ([request.current_item] if request.current_item is not None else []) + list(request.cart_items)
        _, ignored = self.catalogue.rows(context_ids)
        current_row = self.catalogue.row(request.current_item) if request.current_item is not None else None
        cart_rows, _ = self.catalogue.rows(request.cart_items)
        if ignored:
            warnings.append(f"unknown context item(s) ignored: {', '.join(ignored)}")
            if self._metrics is not None:
                self._metrics.ignored_context_items.inc(amount=len(ignored))

        session = [event for event in state.recent
                   if event.item_id in self.catalogue and event.event_type in features.EVENT_TYPES]
        session_rows, _ = self.catalogue.rows(event.item_id for event in session)
        last_offline = self.interactions.last_timestamps.get(request.user_id)
        fresh = [event.item_id for event in session if last_offline is None or event.timestamp > last_offline]
        history = point_in_time.extend_history(self.interactions.histories.get(request.user_id, ()), fresh,
                                               self._history_length)
        purchased_live, _ = self.catalogue.rows(state.purchased)
        purchased = np.concatenate([self.interactions.purchased.get(request.user_id, np.zeros(0, np.int64)),
                                    purchased_live])
        excluded, _ = self.catalogue.rows(request.exclude_ids)
        spec = FilterSpec(request.min_price, request.max_price, excluded, request.exclude_purchased)
        context_rows = cart_rows if current_row is None else np.append(cart_rows, current_row)
        query = RetrievalQuery(
            user_id=request.user_id,
            known_user=self.interactions.is_known_user(request.user_id),
            model_history=history,
            session_rows=session_rows,
            session_types=tuple(event.event_type for event in session),
            current_row=current_row,
            cart_rows=cart_rows,
            allowed=self._filters.allowed(spec, purchased, context_rows),
            limit=self.routing.pool_size,
        )
        return query, bool(session), ignored

    def _needs_fallback(self, scene: SceneSpec, pool: CandidatePool) -> bool:
        return scene.fallback is not None and len(pool) < self.routing.pool_size

    def _with_fallback(self, pool: CandidatePool, fallback: Candidates | None) -> CandidatePool:
        """The fused pool with the fallback's candidates below every primary one: they fill short
        lists (cold start, thin context) and give the diversity stage other categories to choose from."""
        return pool if fallback is None else append_fallback(pool, fallback, self.routing.pool_size)

    def _retrieval(self, scene: SceneSpec, query: RetrievalQuery, lists: list[tuple[Candidates, float]],
                   pool: CandidatePool, ranked: RankingResult, ignored: list[str], warnings: list[str],
                   session_used: bool) -> Retrieval:
        """Orders the pool by the ranking stage's scores."""
        versions = [candidates.model_version for candidates, _ in lists if candidates.model_version is not None]
        if ranked.warning is not None:
            warnings.append(ranked.warning)
        ordered = rank(pool, ranked.scores)
        session = next((candidates for candidates, _ in lists if candidates.route == retrievers.SESSION), None)
        if ranked.model_version is not None and scene.session_slots and session is not None:
            ordered = reserve_slots(ordered, session, scene.session_slots)
        return Retrieval(scene, query, ordered, versions[0] if versions else None, tuple(ignored),
                         tuple(warnings), session_used, ranked.model_version)

    def finish(self, request: RecommendRequest, retrieval: Retrieval, diversity: float) -> Recommendation:
        """Applies diversity to a retrieval and builds the response."""
        pool = retrieval.pool
        chosen = pool.take(mmr(pool.scores, self.catalogue.category_codes[pool.rows], request.k, diversity))
        items = tuple(
            RecommendedItem(
                item_id=str(self.catalogue.item_ids[row]),
                score=float(score),
                category=str(self.catalogue.categories[row]),
                brand=str(self.catalogue.brands[row]),
                price=float(self.catalogue.prices[row]),
                route=str(route),
                reason=self._reason(str(route), int(anchor), retrieval),
            )
            for row, score, route, anchor in zip(chosen.rows, chosen.scores, chosen.routes, chosen.anchors))
        fallback_shown = sum(item.route == retrieval.scene.fallback for item in items)
        warnings = retrieval.warnings
        if fallback_shown:
            warnings += (f"{fallback_shown} item(s) from the fallback route {retrieval.scene.fallback}",)
            if self._metrics is not None:
                self._metrics.fallbacks.inc(retrieval.scene.name)
        model_version = retrieval.model_version
        if model_version is None and self._gateway is not None and self._gateway.served is not None:
            model_version = self._gateway.served.version
        recommendation = Recommendation(
            request_id=uuid.uuid4().hex,
            scene=retrieval.scene.name,
            user_id=request.user_id,
            known_user=retrieval.query.known_user,
            model_version=model_version,
            diversity=diversity,
            items=items,
            ignored_context_items=retrieval.ignored_context_items,
            warnings=warnings,
            ranking_model_version=retrieval.ranking_model_version,
            model_name=self._gateway.model_name if self._gateway is not None else None,
        )
        if self.responses is not None:
            self.responses.remember(recommendation.request_id, recommendation.scene,
                                    [item.item_id for item in items], [item.route for item in items])
        if self._metrics is not None:
            per_route: dict[str, int] = {}
            for item in items:
                per_route[item.route] = per_route.get(item.route, 0) + 1
            for route, count in per_route.items():
                self._metrics.recommended_items.inc(recommendation.scene, route, amount=count)
        return recommendation

    def _reason(self, route: str, anchor: int, retrieval: Retrieval) -> str:
        anchor_id = str(self.catalogue.item_ids[anchor]) if anchor >= 0 else "your context"
        if route == retrievers.TWO_TOWER:
            if not retrieval.query.known_user:
                return "two_tower: from the items you viewed in this session"
            return "two_tower: personalised from your history" + (
                " and this session" if retrieval.session_used else "")
        if route == retrievers.SESSION and anchor >= 0:
            return f"session: more {self.catalogue.categories[anchor]}, like {anchor_id} you just viewed"
        if route == retrievers.COMPLEMENTARY:
            return f"complementary: often bought or browsed with {anchor_id}"
        if route == retrievers.SIMILAR:
            return f"similar: close to {anchor_id} in the model's item embeddings"
        if route == retrievers.POPULARITY:
            cold = not retrieval.query.known_user and not retrieval.session_used
            return "popularity: popular in the shop" + (" (new user)" if cold else "")
        return f"{route}: retrieved by the {route} route"
