"""The Amazon Beauty quality benchmark's training and evaluation path, on tiny synthetic data."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from bench import quality
from shoprec.data import importer
from shoprec.model import leave_one_out as st
from shoprec.model import metrics, two_tower

N_ITEMS = 60


def _pattern_sequences(users: int = 300, seed: int = 0) -> dict[str, list[str]]:
    """Each user walks the catalogue in order (item k is always followed by item k + 1)."""
    rng = np.random.default_rng(seed)
    sequences = {}
    for user in range(users):
        start, length = rng.integers(N_ITEMS), rng.integers(5, 9)
        sequences[f"u{user}"] = [f"i{(start + step) % N_ITEMS}" for step in range(length)]
    return sequences


TINY = dataclasses.replace(st.BEAUTY, embedding_dim=16, item_embedding_dim=16, attention_blocks=1,
                           attention_heads=1, dropout=0.0, batch_size=64, learning_rate=0.01, epochs=12,
                           patience=3, validate_every=1, seed=0)
TINY_LENGTH = 8


def test_leave_one_out_indexing_and_histories():
    sequences = {"a": ["x", "y", "z", "w", "v"], "b": ["y", "x", "q"]}
    data = st.index_sequences(*importer.leave_one_out(sequences))
    ids = {item: index + 1 for index, item in enumerate(data.item_ids)}
    assert sorted(data.item_ids) == ["q", "v", "w", "x", "y", "z"]
    np.testing.assert_array_equal(data.train[0], [ids["x"], ids["y"], ids["z"]])
    assert data.valid[0] == ids["w"] and data.test[0] == ids["v"]
    np.testing.assert_array_equal(data.test_histories()[1], [ids["y"], ids["x"]])
    arrays = st.training_arrays(data, max_length=2)
    # user a: inputs x y (z dropped: it has no next training item), targets y z; user b has one
    # training item, so no example
    np.testing.assert_array_equal(arrays["history_xf"], [[ids["x"], ids["y"]]])
    np.testing.assert_array_equal(arrays["item_id_xf"], [[ids["y"], ids["z"]]])
    np.testing.assert_array_equal(st.right_pad([np.array([1, 2, 3]), np.array([4])], 2),
                                  [[2, 3], [4, 0]])


def test_length_batches_cover_every_example_once_and_cut_padding():
    lengths = np.array([1, 5, 2, 8, 3, 3, 7])
    history = np.zeros((7, 8), np.int64)
    for row, n in enumerate(lengths):
        history[row, :n] = row + 1
    arrays = {"history_xf": history, "item_id_xf": history.copy(), "user_id_xf": np.arange(7)}
    batches = list(st.length_batches(arrays, 3, np.random.default_rng(0)))
    seen = np.concatenate([b["user_id_xf"] for b in batches])
    assert sorted(seen) == list(range(7))
    for batch in batches:
        assert batch["history_xf"].shape[1] == lengths[batch["user_id_xf"]].max()
        np.testing.assert_array_equal(batch["history_xf"][:, 0], batch["user_id_xf"] + 1)


def test_shortlist_ranking_equals_top_k_unseen_for_distinct_scores():
    rng = np.random.default_rng(3)
    for _ in range(10):
        items, users = rng.integers(25, 200), rng.integers(1, 40)
        scores = rng.standard_normal((users, items))
        seen = [rng.choice(items, rng.integers(0, 15), replace=False) for _ in range(users)]
        np.testing.assert_array_equal(st.ranked_unseen(scores, seen, 10),
                                      metrics.top_k_unseen(scores, seen, 10))


@pytest.mark.parametrize("pooling", two_tower.POOLINGS)
def test_every_position_of_the_sequence_output_is_the_query_of_that_prefix(pooling):
    tf.keras.utils.set_random_seed(0)
    layer = two_tower.make_pooling(pooling, 6, 8, heads=2, blocks=2, norm_first=True)
    embeddings = tf.random.stateless_normal([3, 6, 8], seed=[4, 2])
    indices = np.array([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6], [7, 0, 0, 0, 0, 0]])
    sequence = layer.sequence(embeddings, tf.constant(indices)).numpy()
    for end in range(1, 7):
        prefix = np.where(np.arange(6) < end, indices, 0)
        pooled = layer(embeddings, tf.constant(prefix)).numpy()
        rows = indices[:, end - 1] > 0
        np.testing.assert_allclose(sequence[rows, end - 1], pooled[rows], atol=1e-5)


@pytest.mark.parametrize("negatives", [0, 20])
def test_the_benchmark_learns_a_next_item_pattern(negatives):
    data = st.index_sequences(*importer.leave_one_out(_pattern_sequences()))
    lines = []
    config = TINY if not negatives else dataclasses.replace(TINY, loss="sampled_softmax",
                                                            negatives=negatives)
    report = quality.run(data, config, knn_neighbours=(10, 20), log=lines.append,
                         als_factors=(8,), max_length=TINY_LENGTH)
    assert set(report["test"]) == {"two_tower", "popularity", "item_knn", "als"}
    for method_metrics in report["test"].values():
        assert set(method_metrics) == {f"{m}@{k}" for m in ("hitrate", "ndcg") for k in (5, 10, 20)}
    assert report["users_evaluated"] == 300
    training = report["training"]
    assert 1 <= training["best_epoch"] <= training["epochs_run"] <= TINY.epochs
    assert training["per_epoch_validation"] and training["seconds"] > 0
    assert any("valid HR@10" in line for line in lines)
    ours, popularity = report["test"]["two_tower"], report["test"]["popularity"]
    assert ours["hitrate@10"] > 0.9 > popularity["hitrate@10"] + 0.5
    assert ours["ndcg@10"] > popularity["ndcg@10"] + 0.4
    assert report["targets"]["beats_popularity"]
    assert "two-tower (ours)" in quality.render_table({**report, "machine": {}})


def test_cli_writes_json_and_chart(tmp_path, capsys):
    data_dir = tmp_path / "beauty"
    data_dir.mkdir()
    lines = [" ".join([user, *(item[1:] for item in items)])
             for user, items in _pattern_sequences(120, seed=1).items()]
    (data_dir / "Beauty.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "quality.json"
    assert quality.main(["--data", str(data_dir), "--out", str(out), "--epochs", "2",
                         "--dim", "16", "--blocks", "1", "--max-length", "8",
                         "--knn-neighbours", "10", "--als-factors", "8"]) == 0
    report = json.loads(out.read_text())
    assert report["dataset"]["users"] == 120 and report["dataset"]["items"] == N_ITEMS
    assert report["dataset"]["interactions"] == sum(len(line.split()) - 1 for line in lines)
    assert report["training"]["epochs_run"] == 2
    assert report["hyperparameters"]["embedding_dim"] == 16
    assert report["command"].startswith("python -m bench.quality --data")
    assert {"cpu_cores", "ram_gib"} <= set(report["machine"])
    assert (tmp_path / "quality.png").stat().st_size > 1000
    assert "SASRec" in capsys.readouterr().out


def test_help_describes_the_protocol(capsys):
    with pytest.raises(SystemExit):
        quality.main(["--help"])
    assert "leave-one-out" in capsys.readouterr().out
