"""RetrievalEvaluator's blessing verdict on its own: the floor, beating popularity, no regression."""

from __future__ import annotations

import pytest

from components.retrieval_evaluator.component import blessing_verdict
from shoprec.config import EvalConfig


def results(model: float, popularity: float, last_blessed: float | None = None) -> dict:
    rankings = {"model": model, "popularity": popularity, "item_knn": 0.01, "als": 0.02}
    if last_blessed is not None:
        rankings["last_blessed"] = last_blessed
    return {name: {"all": {"ndcg@10": value, "recall@10": 2 * value}} for name, value in rankings.items()}


def verdict(scores: dict, **overrides: object) -> list[str]:
    settings = dict(metric=EvalConfig.blessing_metric, min_value=EvalConfig.min_blessing_value,
                    must_beat_popularity=EvalConfig.must_beat_popularity,
                    regression_tolerance=EvalConfig.regression_tolerance)
    settings.update(overrides)
    return blessing_verdict(scores, **settings)


def test_a_model_that_beats_popularity_is_blessed() -> None:
    assert verdict(results(model=0.05, popularity=0.03)) == []


def test_the_floor_refuses_a_weak_model() -> None:
    assert verdict(results(model=0.05, popularity=0.03), min_value=0.06) == [
        "ndcg@10=0.0500 is below the floor 0.06"]


def test_losing_or_tying_with_popularity_is_refused_unless_allowed() -> None:
    assert verdict(results(model=0.03, popularity=0.03)) == ["ndcg@10=0.0300 does not beat popularity (0.0300)"]
    assert verdict(results(model=0.02, popularity=0.03), must_beat_popularity=False) == []


def test_losing_to_popularity_on_returning_users_is_refused_even_when_the_total_wins() -> None:
    # New users get the same popularity list from every ranking (a tie), but they weigh in
    # differently: here the model wins the mixed total while losing on returning users.
    scores = results(model=0.05, popularity=0.04)
    scores["model"]["returning_users"] = {"ndcg@10": 0.020}
    scores["popularity"]["returning_users"] = {"ndcg@10": 0.025}
    assert verdict(scores) == ["ndcg@10=0.0200 does not beat popularity on returning users (0.0250)"]
    scores["model"]["returning_users"] = {"ndcg@10": 0.030}
    assert verdict(scores) == []


def test_a_regression_against_the_last_blessed_model_is_refused_beyond_the_tolerance() -> None:
    assert verdict(results(model=0.05, popularity=0.03, last_blessed=0.06)) == [
        "ndcg@10=0.0500 regresses against the last blessed model (0.0600, tolerance 0.0)"]
    assert verdict(results(model=0.05, popularity=0.03, last_blessed=0.06), regression_tolerance=0.02) == []


def test_the_last_blessed_model_itself_is_not_blessed_again() -> None:
    assert verdict(results(model=0.05, popularity=0.03), already_blessed=True) == [
        "this model is the last blessed model itself (unchanged inputs): it was pushed already, so it is "
        "not blessed again"]


def test_an_unknown_metric_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"blessing_metric 'auc' is not one of \['ndcg@10', 'recall@10'\]"):
        verdict(results(model=0.05, popularity=0.03), metric="auc")
