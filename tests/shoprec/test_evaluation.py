"""The evaluation protocol and the baselines on tiny cases computed by hand."""

import math

import numpy as np
import pytest

from shoprec.model import baselines, evaluation

ROWS = {b"a": 0, b"b": 1, b"c": 2, b"d": 3}


def _interactions(rows, histories=None):
    users, items, times = zip(*rows)
    return evaluation.Interactions(np.array(users, dtype=object), np.array(items, dtype=object),
                                   np.array(times), histories)


def test_eval_set_excludes_seen_items_and_takes_the_first_eval_history():
    train = _interactions([(b"u1", b"a", 1), (b"u1", b"b", 2), (b"u2", b"c", 3)])
    evaluation_split = _interactions(
        [(b"u1", b"c", 12), (b"u1", b"a", 11), (b"u2", b"c", 13), (b"u3", b"d", 14),
         (b"u3", b"zzz", 15)],
        histories=[[b"a", b"b", b"a"], [b"a", b"b"], [b"c"], [], [b"d"]])
    eval_set = evaluation.build_eval_set(train, evaluation_split, ROWS)
    # u2 only re-bought c (seen in train): no relevant item, not evaluated; zzz is not an item.
    assert eval_set.users == [b"u1", b"u3"]
    assert eval_set.histories == [[b"a", b"b"], []]  # u1's earliest eval event is at t=11
    assert [list(s) for s in eval_set.seen] == [[0, 1], []]
    assert [list(r) for r in eval_set.relevant] == [[2], [3]]
    assert list(eval_set.returning) == [True, False]


def test_head_items_hold_the_requested_share():
    popularity = np.array([1.0, 6.0, 3.0, 0.0])  # 60% in item 1 alone
    assert list(evaluation.head_items(popularity, share=0.5)) == [1]
    assert list(evaluation.head_items(popularity, share=0.7)) == [1, 2]


def test_category_diversity_is_the_share_of_differing_pairs():
    categories = np.array(["x", "x", "y", "z"])
    ranked = np.array([[0, 1, 2], [0, 2, 3]])
    # row 0: pairs (0,1) same, (0,2) (1,2) differ -> 2/3; row 1: all differ -> 1
    assert evaluation.category_diversity(ranked, categories, k=3) == pytest.approx((2 / 3 + 1) / 2)


def test_item_knn_scores_by_cosine_co_occurrence():
    # users: u0 {0, 1}, u1 {0, 1, 2}, u2 {2, 3}
    users = np.array([0, 0, 1, 1, 1, 2, 2, 0])
    items = np.array([0, 1, 0, 1, 2, 2, 3, 0])  # u0 bought item 0 twice: counted once
    knn = baselines.ItemKNN(users, items, n_items=5)
    sim = knn.similarity.toarray()
    assert sim[0, 1] == pytest.approx(2 / math.sqrt(2 * 2))
    assert sim[0, 2] == pytest.approx(1 / math.sqrt(2 * 2))
    assert sim[2, 3] == pytest.approx(1 / math.sqrt(2 * 1))
    assert sim[0, 0] == 0.0 and sim[4].sum() == 0.0
    scores = knn.scores([np.array([0, 3]), np.array([], dtype=np.int64)])
    np.testing.assert_allclose(scores[0], [0.0, 1.0, 0.5 + 1 / math.sqrt(2), 0.0, 0.0])
    np.testing.assert_allclose(scores[1], np.zeros(5))


def test_item_knn_keeps_only_the_nearest_neighbours():
    users = np.array([0, 0, 0, 1, 1])
    items = np.array([0, 1, 2, 0, 1])
    knn = baselines.ItemKNN(users, items, n_items=3, neighbours=1)
    assert (knn.similarity.toarray() > 0).sum(axis=1).max() == 1
    assert knn.similarity[0, 1] > 0  # 0 and 1 co-occur twice, 0 and 2 once


def test_popularity_scores_count_interactions():
    np.testing.assert_array_equal(baselines.popularity_scores(np.array([2, 2, 0]), 4),
                                  [1.0, 0.0, 2.0, 0.0])


def test_score_all_reports_every_ranking_and_slice():
    eval_set = evaluation.EvalSet(users=[b"u1", b"u2"], histories=[[], []],
                                  seen=[np.array([0]), np.array([], dtype=np.int64)],
                                  relevant=[np.array([2]), np.array([3])],
                                  returning=np.array([True, False]))
    scores = np.tile(np.arange(12.0)[::-1], (2, 1))  # item 0 best, then 1, 2, ...
    results = evaluation.score_all(eval_set, {"fixed": lambda s: scores[s]}, ks=(2, 10),
                                   n_items=12, popularity=np.arange(12.0)[::-1],
                                   categories=np.array(["c"] * 12))
    # u1 (0 seen): ranking 1, 2, ... -> item 2 at rank 2; u2: 0, 1, 2, 3 -> item 3 at rank 4
    assert results["fixed"]["all"]["hitrate@2"] == pytest.approx(0.5)
    assert results["fixed"]["returning_users"]["mrr@10"] == pytest.approx(1 / 2)
    assert results["fixed"]["new_users"]["mrr@10"] == pytest.approx(1 / 4)
    assert results["fixed"]["all"]["diversity@10"] == 0.0
    assert "head_items" in results["fixed"] or "tail_items" in results["fixed"]


def test_als_ranks_the_items_of_a_users_own_cluster_first():
    # Two disjoint taste groups (rank 2): users 0-19 take items 0-4, users 20-39 items 5-9.
    rng = np.random.default_rng(0)
    users, items = [], []
    for user in range(40):
        group = range(0, 5) if user < 20 else range(5, 10)
        for item in rng.choice(list(group), size=3, replace=False):
            users.append(user)
            items.append(item)
    als = baselines.ALS(np.array(users), np.array(items), n_items=12, factors=2, iterations=10)
    # scored from the history alone, so a user the model never saw is scored too
    scores = als.scores([np.array([0, 1]), np.array([7]), np.array([], dtype=np.int64)])
    assert scores.shape == (3, 12)
    assert set(np.argsort(-scores[0])[:5]) == set(range(5))
    assert set(np.argsort(-scores[1])[:5]) == set(range(5, 10))
    np.testing.assert_allclose(scores[2], np.zeros(12), atol=1e-6)  # no history: no preference
    assert als.scores([]).shape == (0, 12)
