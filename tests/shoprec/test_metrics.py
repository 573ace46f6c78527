"""Retrieval metrics against values computed by hand."""

import math

import numpy as np
import pytest

from shoprec.model import metrics


def test_top_k_unseen_skips_seen_items_and_breaks_ties_by_index():
    scores = np.array([[0.9, 0.8, 0.8, 0.1, 0.5],
                       [0.0, 0.0, 0.0, 0.0, 1.0]])
    ranked = metrics.top_k_unseen(scores, [np.array([0]), np.array([4])], k=3)
    np.testing.assert_array_equal(ranked, [[1, 2, 4], [0, 1, 2]])


def test_retrieval_metrics_match_hand_computed_values():
    ranked = np.array([[3, 1, 4, 0],    # relevant {1, 0}: hits at ranks 2 and 4
                       [2, 3, 0, 1],    # relevant {5}: never retrieved
                       [0, 1, 2, 3]])   # relevant {}: skipped
    relevant = [np.array([1, 0]), np.array([5]), np.array([], dtype=np.int64)]
    result = metrics.retrieval_metrics(ranked, relevant, ks=(2, 4), catalogue_size=10)
    d = [1 / math.log2(r + 2) for r in range(4)]
    assert result["users"] == 2
    assert result["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert result["recall@4"] == pytest.approx((2 / 2 + 0) / 2)
    assert result["hitrate@2"] == pytest.approx(0.5)
    assert result["ndcg@2"] == pytest.approx((d[1] / (d[0] + d[1])) / 2)
    assert result["ndcg@4"] == pytest.approx(((d[1] + d[3]) / (d[0] + d[1])) / 2)
    assert result["mrr@2"] == pytest.approx((1 / 2) / 2)
    assert result["coverage@2"] == pytest.approx(len({3, 1, 2}) / 10)
    assert result["coverage@4"] == pytest.approx(len({3, 1, 4, 0, 2}) / 10)


def test_perfect_ranking_scores_one():
    ranked = np.array([[7, 8, 1, 2]])
    result = metrics.retrieval_metrics(ranked, [np.array([8, 7])], ks=(2,), catalogue_size=9)
    assert result["ndcg@2"] == pytest.approx(1.0)
    assert result["recall@2"] == pytest.approx(1.0)
    assert result["mrr@2"] == pytest.approx(1.0)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="longer than the ranked lists"):
        metrics.retrieval_metrics(np.zeros((1, 2), int), [np.array([1])], ks=(5,),
                                  catalogue_size=3)
    with pytest.raises(ValueError, match="no user has a relevant item"):
        metrics.retrieval_metrics(np.zeros((1, 2), int), [np.array([], int)], ks=(1,),
                                  catalogue_size=3)
    with pytest.raises(ValueError, match="seen has 2 rows"):
        metrics.top_k_unseen(np.zeros((1, 3)), [np.array([]), np.array([])], k=1)
