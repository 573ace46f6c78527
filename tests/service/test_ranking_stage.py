"""The service's ranking stage with stand-in models: what it sends, how it orders, how it degrades."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from service.strategy.catalogue import Catalogue
from service.strategy.context import Candidates, RetrievalQuery
from service.strategy.metrics import ServiceMetrics
from service.strategy.model_gateway import (
    ModelUnavailableError,
    RankingGateway,
    ServedModel,
)
from service.strategy.ranking import (
    CandidatePool,
    ModelRanker,
    RetrievalScoreRanker,
    fuse,
    rank,
    reserve_slots,
)
from service.strategy.routing import DEFAULT_ROUTING, RoutingError, RoutingTable
from serving.client import AVAILABLE, Code, ModelServerError, VersionStatus
from shoprec import features

ITEMS = pd.DataFrame({features.ITEM_ID: [f"i{n}" for n in range(6)],
                      features.CATEGORY: ["a", "a", "b", "b", "c", "c"],
                      features.BRAND: ["x"] * 6,
                      features.PRICE: [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]})


class FakeRetrieval:
    """The retrieval gateway's ``query_embedding``: a fixed unit query and item embeddings."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        embeddings = np.eye(6, dtype=np.float32)[:, :4]  # items 4 and 5: zero vectors
        found = np.array([True, True, True, True, False, True])
        self.served = ServedModel(3, embeddings, found)

    def query_embedding(self, user_id: str, history: tuple[str, ...]) -> tuple[np.ndarray, ServedModel]:
        if self.fail:
            raise ModelUnavailableError("no model version is available")
        return np.array([0.6, 0.8, 0.0, 0.0], np.float32), self.served

    async def query_embedding_async(self, user_id: str, history: tuple[str, ...]) -> tuple[np.ndarray, ServedModel]:
        await asyncio.sleep(0)
        return self.query_embedding(user_id, history)


class FakeRankingClient:
    """A ranking model on a server: click probability = a fixed value per item; records requests."""

    def __init__(self, click: dict[str, float], error: ModelServerError | None = None) -> None:
        self.click = click
        self.error = error
        self.requests: list[dict] = []

    def status(self) -> list[VersionStatus]:
        return [VersionStatus(11, AVAILABLE, "OK", "")]

    def predict(self, inputs: dict, signature_name: str, version: int) -> dict[str, np.ndarray]:
        self.requests.append({"inputs": inputs, "signature_name": signature_name, "version": version})
        if self.error is not None:
            raise self.error
        click = np.array([self.click[item.decode()] for item in inputs[features.ITEM_ID]], np.float32)
        return {features.OUTPUT_CLICK_PROBABILITY: click, features.OUTPUT_PURCHASE_PROBABILITY: click / 10}

    async def predict_async(self, inputs: dict, signature_name: str, version: int) -> dict[str, np.ndarray]:
        await asyncio.sleep(0)
        return self.predict(inputs, signature_name, version)

    def close(self) -> None:
        pass


CLICK = {"i0": 0.1, "i1": 0.5, "i2": 0.3, "i3": 0.05, "i4": 0.2, "i5": 0.4}


def pool(rows: list[int]) -> CandidatePool:
    scores = 1.0 / (11.0 + np.arange(len(rows)))
    return CandidatePool(np.array(rows, np.int64), scores, np.full(len(rows), "two_tower", object),
                         scores.copy(), np.full(len(rows), -1, np.int64))


def query(catalogue: Catalogue, current_row: int | None = None) -> RetrievalQuery:
    return RetrievalQuery(user_id="u1", known_user=True, model_history=("i0",), session_rows=np.zeros(0, np.int64),
                          session_types=(), current_row=current_row, cart_rows=np.zeros(0, np.int64),
                          allowed=np.ones(len(catalogue), bool), limit=200)


def ranker(client: FakeRankingClient, candidates: int = 200, retrieval: FakeRetrieval | None = None,
           metrics: ServiceMetrics | None = None) -> ModelRanker:
    gateway = RankingGateway(client)  # type: ignore[arg-type]
    gateway.refresh()
    return ModelRanker(gateway, retrieval or FakeRetrieval(), Catalogue.from_frame(ITEMS),  # type: ignore[arg-type]
                       candidates, metrics)


def test_orders_by_click_probability_and_sends_the_signature_inputs() -> None:
    client = FakeRankingClient(CLICK)
    catalogue = Catalogue.from_frame(ITEMS)
    result = ranker(client).rank(query(catalogue, current_row=3), pool([0, 1, 2, 3, 4, 5]), "detail", "click")
    assert result.model_version == 11 and result.warning is None
    np.testing.assert_allclose(result.scores, [0.1, 0.5, 0.3, 0.05, 0.2, 0.4], rtol=1e-6)
    [sent] = client.requests
    assert sent["signature_name"] == features.SIGNATURE_RANK and sent["version"] == 11
    inputs = sent["inputs"]
    assert set(inputs) == {f.name for f in features.RANKING_REQUEST_FEATURES}
    assert list(inputs[features.ITEM_ID]) == [b"i0", b"i1", b"i2", b"i3", b"i4", b"i5"]  # bytes: one copy
    assert inputs[features.USER_ID] == [b"u1"] * 6 and inputs[features.SCENE] == [b"detail"] * 6
    assert inputs[features.CONTEXT_ITEM_ID] == [b"i3"] * 6  # the page's item
    assert inputs[features.POSITION].tolist() == [0] * 6  # scored as if at the top slot
    # The cosine of the unit query (0.6, 0.8, 0, 0) with each unit item embedding; unknown items 0.
    np.testing.assert_allclose(inputs[features.RETRIEVAL_SCORE], [0.6, 0.8, 0.0, 0.0, 0.0, 0.0], atol=1e-6)


def test_revenue_objective_weighs_by_price() -> None:
    result = ranker(FakeRankingClient(CLICK)).rank(query(Catalogue.from_frame(ITEMS)), pool([0, 1, 2, 5]), "home",
                                                   "revenue")
    np.testing.assert_allclose(result.scores, [0.1 * 10, 0.5 * 20, 0.3 * 30, 0.4 * 60], rtol=1e-6)


def test_only_the_first_candidates_are_sent_and_the_rest_keep_their_order_below() -> None:
    client = FakeRankingClient(CLICK)
    result = ranker(client, candidates=3).rank(query(Catalogue.from_frame(ITEMS)), pool([3, 0, 4, 5, 1]), "home",
                                               "click")
    assert client.requests[0]["inputs"][features.ITEM_ID].tolist() == [b"i3", b"i0", b"i4"]
    head, tail = result.scores[:3], result.scores[3:]
    np.testing.assert_allclose(head, [0.05, 0.1, 0.2], rtol=1e-6)
    assert tail.max() < head.min() and tail[0] > tail[1]  # below every ranked one, in retrieval order


@pytest.mark.parametrize("error", [ModelServerError(Code.UNAVAILABLE, "connection refused"),
                                   ModelServerError(Code.DEADLINE_EXCEEDED, "deadline exceeded")])
def test_a_failing_model_keeps_the_retrieval_order_with_a_warning_and_a_metric(error: ModelServerError) -> None:
    metrics = ServiceMetrics()
    candidates = pool([2, 0, 1])
    result = ranker(FakeRankingClient(CLICK, error), metrics=metrics).rank(
        query(Catalogue.from_frame(ITEMS)), candidates, "home", "click")
    np.testing.assert_array_equal(result.scores, candidates.scores)
    assert result.model_version is None
    assert result.warning is not None and "ranking model unavailable, retrieval order kept" in result.warning
    assert error.code.name in result.warning
    assert 'shoprec_degraded_total{component="ranking_model"} 1' in metrics.render()


def test_a_missing_model_or_retrieval_model_degrades_too() -> None:
    catalogue = Catalogue.from_frame(ITEMS)
    never_refreshed = ModelRanker(RankingGateway(FakeRankingClient(CLICK)), FakeRetrieval(),  # type: ignore[arg-type]
                                  catalogue)
    result = never_refreshed.rank(query(catalogue), pool([1, 2]), "home", "click")
    assert result.model_version is None and "no ranking model version is available" in result.warning
    result = ranker(FakeRankingClient(CLICK), retrieval=FakeRetrieval(fail=True)).rank(
        query(catalogue), pool([1, 2]), "home", "click")
    assert result.model_version is None and "retrieval order kept" in result.warning


def test_async_path_gives_the_same_result() -> None:
    catalogue = Catalogue.from_frame(ITEMS)
    stage = ranker(FakeRankingClient(CLICK))
    sync = stage.rank(query(catalogue), pool([0, 1, 2, 5]), "home", "click")
    awaited = asyncio.run(stage.rank_async(query(catalogue), pool([0, 1, 2, 5]), "home", "click"))
    np.testing.assert_array_equal(sync.scores, awaited.scores)
    assert awaited.model_version == sync.model_version == 11


def test_gateway_follows_a_new_version_after_not_found() -> None:
    client = FakeRankingClient(CLICK)
    gateway = RankingGateway(client)  # type: ignore[arg-type]
    gateway.refresh()
    calls = []

    def predict(inputs: dict, signature_name: str, version: int) -> dict[str, np.ndarray]:
        calls.append(version)
        if version == 11:
            raise ModelServerError(Code.NOT_FOUND, "version 11 unloaded")
        return {features.OUTPUT_CLICK_PROBABILITY: np.zeros(1, np.float32)}

    client.predict = predict  # type: ignore[method-assign]
    client.status = lambda: [VersionStatus(12, AVAILABLE, "OK", "")]  # type: ignore[method-assign]
    _, version = gateway.predict({features.ITEM_ID: ["i0"]})
    assert calls == [11, 12] and version == gateway.version == 12


def test_retrieval_score_ranker_keeps_the_pool_scores() -> None:
    candidates = pool([4, 1])
    result = RetrievalScoreRanker().rank(query(Catalogue.from_frame(ITEMS)), candidates, "home", "click")
    np.testing.assert_array_equal(result.scores, candidates.scores)
    assert result.model_version is None and result.warning is None


def test_routing_table_takes_a_per_scene_objective() -> None:
    routes = {"two_tower", "session", "complementary", "similar", "popularity"}
    document = {**DEFAULT_ROUTING, "scenes": {**DEFAULT_ROUTING["scenes"],
                                              "cart": {**DEFAULT_ROUTING["scenes"]["cart"], "objective": "revenue"}}}
    table = RoutingTable.from_dict(document, routes)
    assert table.scene("cart").objective == "revenue" and table.scene("home").objective == "click"
    document["scenes"]["cart"]["objective"] = "profit"
    with pytest.raises(RoutingError, match="objective must be one of click, revenue"):
        RoutingTable.from_dict(document, routes)


def test_session_slots_move_the_best_ranked_session_candidates_to_the_top() -> None:
    routes = np.array(["two_tower", "two_tower", "session", "two_tower", "session", "session"], object)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    ranked = CandidatePool(np.arange(6, dtype=np.int64), scores, routes, scores.copy(), np.full(6, -1, np.int64))
    session = Candidates("session", np.array([4, 2, 5], np.int64), np.array([0.3, 0.2, 0.1]), np.array([7, 8, 9]))
    reserved = reserve_slots(ranked, session, 2)
    assert reserved.rows.tolist() == [2, 4, 0, 1, 3, 5]  # 5 is the third session candidate: it stays
    assert np.all(np.diff(reserved.scores) < 0) and reserved.scores[1] > 0.9
    np.testing.assert_array_equal(reserved.scores[2:], [0.9, 0.8, 0.6, 0.4])
    assert reserved.routes.tolist()[:2] == ["session", "session"]
    # The moved ones carry the session route's own score and anchor (for the explanation).
    np.testing.assert_array_equal(reserved.route_scores[:2], [0.2, 0.3])
    assert reserved.anchors.tolist() == [8, 7, -1, -1, -1, -1]
    # No session candidate (no live session) or no slots: the ranked order stands.
    assert reserve_slots(ranked, Candidates.empty("session"), 2) is ranked
    assert reserve_slots(ranked, session, 0) is ranked


def test_session_slots_count_a_session_candidate_another_route_contributed_more_to() -> None:
    # Row 1 was found by both routes and fused under two_tower's label (its larger contribution);
    # it is still a session candidate, so it takes the first slot and says why it is there.
    two_tower = Candidates("two_tower", np.array([1, 0, 3], np.int64), np.array([0.9, 0.8, 0.7]))
    session = Candidates("session", np.array([2, 1], np.int64), np.array([0.5, 0.4]), np.array([6, 6]))
    fused = fuse([(two_tower, 1.0), (session, 0.5)], fusion_k=60.0)
    assert fused.routes[fused.rows.tolist().index(1)] == "two_tower"
    ranked = rank(fused, np.array([0.9 - 0.1 * index for index in range(len(fused))]))
    reserved = reserve_slots(ranked, session, 2)
    assert sorted(reserved.rows[:2].tolist()) == [1, 2]
    assert reserved.routes.tolist()[:2] == ["session", "session"] and reserved.anchors.tolist()[:2] == [6, 6]
    assert set(reserved.routes[2:].tolist()) == {"two_tower"}


def test_routing_table_checks_session_slots() -> None:
    routes = {"two_tower", "session", "complementary", "similar", "popularity"}
    table = RoutingTable.from_dict(DEFAULT_ROUTING, routes)
    assert table.scene("home").session_slots == 2 and table.scene("cart").session_slots == 0
    for slots, message in ((-1, "session_slots must be >= 0"), (1.5, "whole number"), ("2", "whole number")):
        document = {**DEFAULT_ROUTING, "scenes": {
            **DEFAULT_ROUTING["scenes"], "home": {**DEFAULT_ROUTING["scenes"]["home"], "session_slots": slots}}}
        with pytest.raises(RoutingError, match=message):
            RoutingTable.from_dict(document, routes)
    document = {**DEFAULT_ROUTING, "scenes": {
        **DEFAULT_ROUTING["scenes"], "cart": {**DEFAULT_ROUTING["scenes"]["cart"], "session_slots": 1}}}
    with pytest.raises(RoutingError, match="session_slots needs the 'session' route"):
        RoutingTable.from_dict(document, routes)
