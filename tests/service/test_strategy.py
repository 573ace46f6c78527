"""Unit tests of the strategy layer (no servers): signals, routes, fusion, diversity, filters."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.feature_store import InMemoryFeatureStore, StoreSettings, UserEvent
from service.schemas import RecommendedItemOut, RecommendResponse
from service.strategy import retrievers
from service.strategy.catalogue import Catalogue
from service.strategy.context import Candidates, RetrievalQuery, SessionEvent
from service.strategy.diversity import intra_list_diversity, mmr
from service.strategy.filters import BusinessFilters, Denylist, FilterSpec
from service.strategy.interactions import (
    build_interactions,
    split_by_time,
    with_purchases,
)
from service.strategy.model_gateway import ModelUnavailableError
from service.strategy.ranking import RetrievalScoreRanker, append_fallback, fuse, rank
from service.strategy.routing import (
    DEFAULT_ROUTING,
    RoutingError,
    RoutingTable,
    UnknownSceneError,
)
from service.strategy.service import (
    Recommendation,
    RecommendationService,
    RecommendedItem,
    RecommendRequest,
)
from shoprec import features
from shoprec.data import point_in_time

# A tiny shop: 8 items in 3 categories; u1 and u2 are known users.
ITEMS = pd.DataFrame({
    features.ITEM_ID: [f"i{n}" for n in range(8)],
    features.CATEGORY: ["a", "a", "a", "b", "b", "c", "c", "c"],
    features.BRAND: ["x", "y", "x", "y", "x", "y", "x", "y"],
    features.PRICE: [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0],
})
EVENTS = pd.DataFrame(
    [  # event_id, user, item, type, timestamp, session
        ("e0", "u1", "i0", features.CLICK, 100, "s1"),
        ("e1", "u1", "i1", features.CLICK, 101, "s1"),
        ("e2", "u1", "i1", features.PURCHASE, 102, "s1"),
        ("e3", "u1", "i3", features.CLICK, 200, "s2"),
        ("e4", "u2", "i0", features.CLICK, 300, "s3"),
        ("e5", "u2", "i1", features.CLICK, 301, "s3"),
        ("e6", "u2", "i0", features.PURCHASE, 302, "s3"),
        ("e7", "u2", "i5", features.CLICK, 400, "s4"),
        ("e8", "u2", "i5", features.CLICK, 401, "s4"),
        ("e9", "u2", "i9-not-in-catalogue", features.CLICK, 402, "s4"),
        ("e10", "u2", "i5", features.PURCHASE, 403, "s4"),
    ],
    columns=[column.name for column in features.EVENT_COLUMNS])


@pytest.fixture
def catalogue() -> Catalogue:
    return Catalogue.from_frame(ITEMS)


def query(catalogue: Catalogue, **overrides: object) -> RetrievalQuery:
    fields: dict[str, object] = dict(user_id="u1", known_user=True, model_history=(),
                                     session_rows=np.zeros(0, np.int64), session_types=(), current_row=None,
                                     cart_rows=np.zeros(0, np.int64), allowed=np.ones(len(catalogue), bool), limit=10)
    fields.update(overrides)
    return RetrievalQuery(**fields)  # type: ignore[arg-type]


def test_catalogue_lookups(catalogue: Catalogue) -> None:
    assert len(catalogue) == 8 and "i3" in catalogue and "zz" not in catalogue
    rows, unknown = catalogue.rows(["i2", "zz", "i0"])
    assert rows.tolist() == [2, 0] and unknown == ["zz"]
    assert catalogue.rows_or_missing(["i2", "zz", "i0"]).tolist() == [2, -1, 0]
    assert catalogue.category_names == ("a", "b", "c")
    assert catalogue.category_codes.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="duplicate"):
        Catalogue.from_frame(pd.concat([ITEMS, ITEMS.iloc[:1]]))


def test_interactions(catalogue: Catalogue) -> None:
    signals = build_interactions(EVENTS, catalogue, history_length=3)
    # click 1, purchase 3: i0 = 1 + 1 + 3, i1 = 1 + 3 + 1, i5 = 1 + 1 + 3, i3 = 1; the unknown item is dropped.
    assert signals.popularity.tolist() == [5.0, 5.0, 0.0, 1.0, 0.0, 5.0, 0.0, 0.0]
    assert signals.popular_order.tolist() == [0, 1, 5, 3, 2, 4, 6, 7]
    assert [order.tolist() for order in signals.popular_by_category] == [[0, 1, 2], [3, 4], [5, 6, 7]]
    # Consecutive repeats collapsed, the last 3 kept, most recent last.
    assert signals.histories == {"u1": ("i0", "i1", "i3"), "u2": ("i1", "i0", "i5")}
    assert signals.last_timestamps == {"u1": 200, "u2": 403}
    assert {user: rows.tolist() for user, rows in signals.purchased.items()} == {"u1": [1], "u2": [0, 5]}
    assert signals.is_known_user("u2") and not signals.is_known_user("u3")
    matrix = signals.co_occurrence.toarray()
    np.testing.assert_allclose(matrix, matrix.T)
    assert np.all(np.diag(matrix) == 0)
    # i0-i1: two sessions; i0-i5: bought by u2 (counts twice); cosine-normalised by each item's total:
    # i0: 2 sessions + 2 x 1 buyer, i1: 2 + 2 x 1, i5: 1 + 2 x 1.
    assert matrix[0, 1] == pytest.approx(2 / np.sqrt(4 * 4))
    assert matrix[0, 5] == pytest.approx(2 / np.sqrt(4 * 3))
    assert matrix[0, 3] == 0  # never together


def test_with_purchases_and_time_split(catalogue: Catalogue) -> None:
    signals = with_purchases(build_interactions(EVENTS, catalogue), catalogue,
                             [("u1", "i7"), ("u9", "i2"), ("u9", "nope")])
    assert signals.purchased["u1"].tolist() == [1, 7] and signals.purchased["u9"].tolist() == [2]
    train, held_out = split_by_time(EVENTS, eval_fraction=0.2)
    assert len(train) + len(held_out) == len(EVENTS)
    assert train[features.TIMESTAMP].max() < held_out[features.TIMESTAMP].min()


def test_live_items_extend_the_sequence_with_the_pipelines_rule() -> None:
    assert point_in_time.extend_history((), ["a", "a", "b", "a", "a"], 20) == ("a", "b", "a")


def test_top_allowed_orders_and_masks() -> None:
    scores = np.array([0.5, 0.9, 0.9, 0.1, 0.7])
    allowed = np.array([True, True, True, True, False])
    assert retrievers.top_allowed(scores, allowed, 3).tolist() == [1, 2, 0]
    assert retrievers.top_allowed(scores, allowed, 10, keep=scores > 0.4).tolist() == [1, 2, 0]


def test_popularity_session_and_complementary_routes(catalogue: Catalogue) -> None:
    signals = build_interactions(EVENTS, catalogue)
    allowed = np.ones(len(catalogue), bool)
    allowed[1] = False
    popular = retrievers.PopularityRetriever(signals).retrieve(query(catalogue, allowed=allowed, limit=3))
    assert popular.rows.tolist() == [0, 5, 3]

    # Session on category c (i5, most recent) and a (i2): c weighs more; session items are left out.
    session = retrievers.SessionInterestRetriever(catalogue, signals).retrieve(
        query(catalogue, session_rows=np.array([2, 5]), session_types=(features.CLICK, features.CART)))
    assert session.rows.tolist() == [6, 7, 0, 1]
    assert session.anchors.tolist() == [5, 5, 2, 2]  # the session item each category came from
    assert np.all(np.diff(session.scores) <= 0)
    assert not len(retrievers.SessionInterestRetriever(catalogue, signals).retrieve(query(catalogue)))

    complementary = retrievers.ComplementaryRetriever(signals).retrieve(query(catalogue, cart_rows=np.array([0])))
    assert complementary.rows.tolist() == [5, 1] and complementary.anchors.tolist() == [0, 0]
    assert not len(retrievers.ComplementaryRetriever(signals).retrieve(query(catalogue)))


def candidates(route: str, rows: list[int], anchors: list[int] | None = None) -> Candidates:
    return Candidates(route, np.array(rows, np.int64), np.linspace(1.0, 0.5, len(rows)),
                      None if anchors is None else np.array(anchors, np.int64))


def test_fusion_by_weighted_reciprocal_rank() -> None:
    pool = fuse([(candidates("two_tower", [3, 1, 2]), 1.0), (candidates("session", [1, 7], [5, 5]), 0.5),
                 (Candidates.empty("similar"), 1.0)], fusion_k=0.0)
    # 3: 1/1; 1: 1/2 + 0.5/1; 2: 1/3; 7: 0.5/2
    assert pool.rows.tolist() == [3, 1, 2, 7]
    np.testing.assert_allclose(pool.scores, [1.0, 1.0, 1 / 3, 0.25])
    assert pool.routes.tolist() == ["two_tower", "two_tower", "two_tower", "session"]  # 1: tie, first route
    assert pool.anchors.tolist() == [-1, -1, -1, 5]
    assert len(fuse([(Candidates.empty("x"), 1.0)], 10.0)) == 0


def test_fallback_fills_below_the_pool() -> None:
    pool = fuse([(candidates("two_tower", [3, 1]), 1.0)], fusion_k=10.0)
    filled = append_fallback(pool, candidates("popularity", [1, 4, 5, 6]), limit=4)
    assert filled.rows.tolist() == [3, 1, 4, 5]
    assert filled.routes.tolist()[2:] == ["popularity", "popularity"]
    assert np.all(np.diff(filled.scores) < 0) and filled.scores[2] < pool.scores.min()
    assert append_fallback(pool, candidates("popularity", [3]), limit=4) is pool


def test_ranking_stage_keeps_the_retrieval_order() -> None:
    pool = fuse([(candidates("two_tower", [3, 1, 2]), 1.0)], fusion_k=10.0)
    ranked = rank(pool, RetrievalScoreRanker().score(query(Catalogue.from_frame(ITEMS)), pool))
    assert ranked.rows.tolist() == [3, 1, 2]
    reversed_pool = rank(pool, -pool.scores)
    assert reversed_pool.rows.tolist() == [2, 1, 3] and reversed_pool.scores.tolist() == sorted(-pool.scores,
                                                                                                reverse=True)


def test_mmr() -> None:
    relevance = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    categories = np.array([0, 0, 0, 1, 1, 2])
    assert mmr(relevance, categories, 4, 0.0).tolist() == [0, 1, 2, 3]
    assert mmr(relevance, categories, 4, 1.0).tolist() == [0, 3, 5, 1]  # one per category, then by relevance
    middle = mmr(relevance, categories, 4, 0.5).tolist()
    assert middle[0] == 0 and len(set(categories[middle])) == 3
    assert mmr(relevance, categories, 10, 0.3).shape == (6,)
    assert mmr(np.ones(3), np.array([0, 0, 1]), 2, 1.0).tolist() == [0, 2]
    with pytest.raises(ValueError):
        mmr(relevance, categories, 3, 1.5)
    assert intra_list_diversity(np.array([0, 0, 1, 2])) == pytest.approx(5 / 6)
    assert intra_list_diversity(np.array([4, 4])) == 0.0 and intra_list_diversity(np.array([1])) == 0.0


def test_routing_table() -> None:
    known = {retrievers.TWO_TOWER, retrievers.SESSION, retrievers.COMPLEMENTARY, retrievers.SIMILAR,
             retrievers.POPULARITY}
    table = RoutingTable.from_dict(DEFAULT_ROUTING, known)
    assert set(table.scenes) == {"home", "cart", "detail"}
    assert [route.route for route in table.scene("home").routes] == ["two_tower", "session"]
    with pytest.raises(UnknownSceneError, match="unknown scene 'x'; valid scenes: cart, detail, home"):
        table.scene("x")
    with pytest.raises(RoutingError, match="unknown route"):
        RoutingTable.from_dict({"scenes": {"s": {"routes": [{"route": "magic"}]}}}, known)
    with pytest.raises(RoutingError, match="malformed"):
        RoutingTable.from_dict({"scenes": {"s": {}}}, known)
    with pytest.raises(RoutingError, match="diversity"):
        RoutingTable.from_dict({"scenes": {"s": {"routes": [], "fallback": "popularity", "diversity": 2}}}, known)
    custom = RoutingTable.from_dict({"fusion_k": 5, "scenes": {"search": {"routes": [], "fallback": "popularity"}}},
                                    known)
    assert custom.fusion_k == 5.0 and custom.scene("search").fallback == "popularity"


def test_filters_and_denylist_reload(catalogue: Catalogue, tmp_path: Path) -> None:
    path = tmp_path / "denylist.txt"
    path.write_text("i7  # out of stock\nnot-an-item\n\n")
    denylist = Denylist(catalogue, str(path), check_interval_seconds=0.0)
    filters = BusinessFilters(catalogue, denylist)
    allowed = filters.allowed(FilterSpec(min_price=20.0, max_price=70.0, exclude_rows=np.array([3])),
                              purchased_rows=np.array([4]), context_rows=np.array([1]))
    assert np.flatnonzero(allowed).tolist() == [2, 5, 6]
    keep_bought = filters.allowed(FilterSpec(exclude_purchased=False), np.array([4]), np.zeros(0, np.int64))
    assert np.flatnonzero(~keep_bought).tolist() == [7]
    path.write_text("i0\n")
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert np.flatnonzero(denylist.mask()).tolist() == [0]
    path.unlink()  # an unreadable file keeps the last list
    assert np.flatnonzero(denylist.mask()).tolist() == [0]
    with pytest.raises(OSError):
        Denylist(catalogue, str(tmp_path / "missing.txt"))


def test_response_dataclasses_match_the_documented_schema() -> None:
    # The route adds the experiment's fields (experiment, arm, propensity) after the service's own.
    assert [f.name for f in dataclasses.fields(Recommendation)] + ["experiment", "arm", "propensity"] == list(
        RecommendResponse.model_fields)
    assert [f.name for f in dataclasses.fields(RecommendedItem)] == list(RecommendedItemOut.model_fields)


class FakeGateway:
    """A stand-in for the model: a fixed ranking, and the history it was last given."""

    def __init__(self, ranking: list[str], model_name: str = "fake_model") -> None:
        self.ranking = ranking
        self.histories: list[tuple[str, ...]] = []
        self.served = None
        self.model_name = model_name

    def top_k(self, user_id: str, history: tuple[str, ...]) -> tuple[list[str], np.ndarray, int]:
        self.histories.append(tuple(history))
        return self.ranking, np.linspace(0.9, 0.1, len(self.ranking)), 7

    async def top_k_async(self, user_id: str, history: tuple[str, ...]) -> tuple[list[str], np.ndarray, int]:
        await asyncio.sleep(0)  # gives way, like a real call
        return self.top_k(user_id, history)


def fake_service(catalogue: Catalogue, gateway: FakeGateway) -> tuple[RecommendationService, InMemoryFeatureStore]:
    signals = build_interactions(EVENTS, catalogue, history_length=20)
    routes = {retrievers.TWO_TOWER: retrievers.TwoTowerRetriever(gateway, catalogue),  # type: ignore[arg-type]
              retrievers.SESSION: retrievers.SessionInterestRetriever(catalogue, signals),
              retrievers.COMPLEMENTARY: retrievers.ComplementaryRetriever(signals),
              retrievers.SIMILAR: retrievers.PopularityRetriever(signals),
              retrievers.POPULARITY: retrievers.PopularityRetriever(signals)}
    store = InMemoryFeatureStore(StoreSettings())
    service = RecommendationService(catalogue, signals, RoutingTable.from_dict(DEFAULT_ROUTING, routes), routes,
                                    store, None, BusinessFilters(catalogue, Denylist(catalogue, None)),
                                    RetrievalScoreRanker(), history_length=4)
    return service, store


def test_service_feeds_the_session_to_the_model_and_explains_items(catalogue: Catalogue) -> None:
    gateway = FakeGateway(["i5", "i6", "ghost", "i2", "i0", "i7", "i3"])
    service, store = fake_service(catalogue, gateway)

    result = service.recommend(RecommendRequest(user_id="u2", scene="home", k=3, diversity=0.0))
    assert gateway.histories[-1] == ("i0", "i1", "i0", "i5")
    assert [item.item_id for item in result.items] == ["i6", "i2", "i7"]  # i5, i0 bought; ghost unknown
    # The scene's default lambda (0.2) prefers i3 (category b) to a second item of category c.
    diverse = service.recommend(RecommendRequest(user_id="u2", scene="home", k=3))
    assert [item.item_id for item in diverse.items] == ["i6", "i2", "i3"] and diverse.diversity == 0.2
    assert result.model_version == 7 and result.known_user
    assert result.items[0].reason == "two_tower: personalised from your history"

    store.record([UserEvent("u2", SessionEvent("i5", features.CLICK, 350)),  # before the last offline event
                  UserEvent("u2", SessionEvent("i3", features.CLICK, 500)),
                  UserEvent("u2", SessionEvent("i4", features.PURCHASE, 501))])
    result = service.recommend(RecommendRequest(user_id="u2", scene="home", k=8, diversity=0.0))
    assert gateway.histories[-1] == ("i0", "i5", "i3", "i4")  # offline, then the fresh session, last 4
    ids = [item.item_id for item in result.items]
    assert "i4" not in ids and "i0" not in ids  # bought (live and offline)
    # i6 is first for the model and first for the session's category c: both routes count.
    assert ids[0] == "i6" and result.items[0].score == pytest.approx(1 / 11 + 0.6 / 11)
    assert "this session" in result.items[0].reason
    assert "popularity" in {item.route for item in result.items}  # 4 candidates < k: the fallback fills

    cold = service.recommend(RecommendRequest(user_id="new", scene="home", k=2, cart_items=("nope",)))
    assert [item.route for item in cold.items] == ["popularity", "popularity"]
    assert cold.ignored_context_items == ("nope",) and not cold.known_user
    assert len(gateway.histories) == 3  # no profile, no history: the model is not asked
    with pytest.raises(UnknownSceneError):
        service.recommend(RecommendRequest(user_id="u1", scene="checkout"))


def test_recommend_async_answers_exactly_as_recommend(catalogue: Catalogue) -> None:
    gateway = FakeGateway(["i5", "i6", "ghost", "i2", "i0", "i7", "i3"])
    service, store = fake_service(catalogue, gateway)
    store.record([UserEvent("u2", SessionEvent("i3", features.CLICK, 500))])
    requests = [RecommendRequest(user_id="u2", scene="home", k=3),
                RecommendRequest(user_id="u2", scene="home", k=8, diversity=1.0, max_price=50.0),
                RecommendRequest(user_id="new", scene="home", k=2, cart_items=("nope",)),
                RecommendRequest(user_id="u1", scene="cart", k=4, cart_items=("i1",)),
                RecommendRequest(user_id="u1", scene="detail", k=4, current_item="i2")]

    async def all_async() -> list[Recommendation]:
        return list(await asyncio.gather(*(service.recommend_async(request) for request in requests)))

    expected = [service.recommend(request) for request in requests]
    for got, wanted in zip(asyncio.run(all_async()), expected):
        assert dataclasses.replace(got, request_id="") == dataclasses.replace(wanted, request_id="")
    with pytest.raises(UnknownSceneError):
        asyncio.run(service.recommend_async(RecommendRequest(user_id="u1", scene="checkout")))


def test_recommend_async_skips_the_model_route_when_the_model_fails(catalogue: Catalogue) -> None:
    class FailingGateway(FakeGateway):
        async def top_k_async(self, user_id: str, history: tuple[str, ...]) -> tuple[list[str], np.ndarray, int]:
            raise ModelUnavailableError("no model version is available")

    service, _ = fake_service(catalogue, FailingGateway([]))
    result = asyncio.run(service.recommend_async(RecommendRequest(user_id="u2", scene="home", k=3)))
    assert len(result.items) == 3 and {item.route for item in result.items} <= {"session", "popularity"}
    assert "route two_tower skipped, model unavailable: no model version is available" in result.warnings
