"""The real pipeline, end to end, on a small generated shop (LocalDagRunner, SQLite MLMD, Beam).

The runs share one output folder, in this order: a first run (both models blessed, pushed); a
rerun, where everything up to the Trainers is cached, the retrieval evaluator refuses to bless the
same model twice and the ranking Pusher does not copy the serving version again; a third run,
entirely cached; a run whose blessing floors (NDCG, ranking AUC) cannot be met; then untrained
models (learning rate 0) that lose to popularity and regress against the last blessed model (the
ranking model too, against the last blessed ranking model).
Corrupted data gets its own folder.
"""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from components.anomalies_gate import DataAnomaliesError
from pipeline import local_runner, run_summary
from serving import servable
from shoprec import features as F
from shoprec.config import MODEL_NAME, PIPELINE_NAME, RANKING_MODEL_NAME, SplitConfig
from shoprec.data import canonical, point_in_time
from shoprec.model import export, score_test_file
from tests.conftest import requirement_mark

pytestmark = pytest.mark.e2e
# The ranking model sees about 1,700 training impressions here: small batches give it enough steps.
SMALL_RANKING = ["--ranking_batch_size", "64", "--ranking_epochs", "4"]
SMALL_SHOP = ["--events", "3000", "--users", "300", "--items", "200", "--epochs", "2", *SMALL_RANKING]
BELOW_POPULARITY_OK = ["--bless_below_popularity"]  # too small a shop to promise more
UPSTREAM_NODES = {"EventsExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator",
                  "AnomaliesGate", "Transform", "Trainer"}
RESOLVER = "latest_blessed_model_resolver"
RANKING_RESOLVER = "ranking_model_resolver"
RANKING_NODES = {"RankingExampleGen", "RankingTransform", "RankingTrainer", RANKING_RESOLVER, "RankingEvaluator",
                 "RankingPusher"}
EXPECTED_NODES = UPSTREAM_NODES | {RESOLVER, "RetrievalEvaluator", "Pusher"} | RANKING_NODES
RESOLVERS = {RESOLVER, RANKING_RESOLVER}  # a resolver always runs: it only queries MLMD


def run(output_dir: str, *extra: str) -> dict:
    assert local_runner.main(["--output_dir", output_dir, *SMALL_SHOP, *extra]) == 0
    with open(os.path.join(output_dir, "run_summary.json")) as f:
        return json.load(f)


def pushed_versions(output_dir: str, model_name: str = MODEL_NAME) -> list[str]:
    model_dir = os.path.join(output_dir, "serving", model_name)
    return sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("e2e"))


@pytest.fixture(scope="module")
def first_run(output_dir):
    return run(output_dir, *BELOW_POPULARITY_OK)


def test_first_run_executes_every_component_once_and_pushes(first_run, output_dir):
    assert set(first_run["components"]) == EXPECTED_NODES
    assert {c["state"] for c in first_run["components"].values()} == {"COMPLETE"}
    store = run_summary.open_store(os.path.join(output_dir, "metadata.sqlite"))
    executions = run_summary.node_executions(store, PIPELINE_NAME)
    assert {node: len(e) for node, e in executions.items()} == {n: 1 for n in EXPECTED_NODES}
    examples = store.get_artifacts_by_type("Examples")
    # Only the ExampleGens write examples: both Transforms analyse (materialize=False) and each
    # Trainer applies the transform graph to the raw examples per batch.
    assert sorted(e.uri.split(os.sep)[-3] for e in examples) == ["EventsExampleGen", "RankingExampleGen"]
    assert first_run["blessed"] is True and first_run["pushed"] is True
    assert pushed_versions(output_dir) == [str(first_run["pushed_version"])]
    ranking = first_run["ranking"]
    assert ranking["blessed"] is True and ranking["pushed"] is True
    assert pushed_versions(output_dir, RANKING_MODEL_NAME) == [str(ranking["pushed_version"])]
    assert ranking["pushed_model"] == os.path.join(output_dir, "serving", RANKING_MODEL_NAME,
                                                   str(ranking["pushed_version"]))
    metrics = first_run["metrics"]
    assert set(metrics) == {"model", "popularity", "item_knn", "als"}  # no blessed model existed yet
    for ranking in metrics.values():
        assert {"all", "new_users", "returning_users", "head_items", "tail_items"} <= set(ranking)
        for k in (10, 50, 100):
            for name in ("recall", "hitrate", "ndcg", "mrr", "coverage"):
                assert 0.0 <= ranking["all"][f"{name}@{k}"] <= 1.0
        assert 0.0 <= ranking["all"]["diversity@10"] <= 1.0
    assert os.path.exists(first_run["metrics_plot"])


def test_pushed_model_answers_known_and_unknown_users(first_run, output_dir):
    version = pushed_versions(output_dir)[0]
    model_dir = os.path.join(output_dir, "serving", MODEL_NAME, version)
    assert os.path.exists(os.path.join(model_dir, "assets.extra", "tf_serving_warmup_requests"))
    model = tf.saved_model.load(model_dir)
    catalogue = set(model.catalog_item_ids.numpy())
    with open(os.path.join(output_dir, "data", F.EVENTS_FILE)) as f:
        known_user = next(csv.DictReader(f))[F.USER_ID]
    result = model.signatures[F.SIGNATURE_TOP_K](
        **{F.USER_ID: tf.constant([known_user, "somebody-new"])})
    ids, scores = result[F.OUTPUT_ITEM_IDS].numpy(), result[F.OUTPUT_SCORES].numpy()
    assert ids.shape == scores.shape == (2, min(100, len(catalogue)))
    for row in range(2):
        assert len(set(ids[row])) == ids.shape[1]
        assert set(ids[row]) <= catalogue
        assert np.all(np.diff(scores[row]) <= 1e-6)  # best first
    with_history = model.signatures[F.SIGNATURE_TOP_K_WITH_HISTORY](
        **{F.USER_ID: tf.constant(["somebody-new"]),
           F.HISTORY: tf.constant([[ids[0][0].decode(), "not-an-item", ""]])})
    assert set(with_history[F.OUTPUT_ITEM_IDS].numpy()[0]) <= catalogue
    assert not np.allclose(with_history[F.OUTPUT_SCORES].numpy()[0], scores[1])


def test_users_of_the_eval_period_are_served_as_of_the_end_of_the_data(first_run, output_dir):
    # Users whose events all lie in the eval period (after the time split's cutoff) have no
    # trained id embedding; the pushed model still knows their behaviour sequence, so
    # serving_default personalises instead of giving them the unknown-user list.
    data_dir = os.path.join(output_dir, "data")
    events = canonical.read_table(os.path.join(data_dir, F.EVENTS_FILE))
    categories = canonical.read_table(os.path.join(data_dir, F.ITEMS_FILE)).set_index(F.ITEM_ID)[F.CATEGORY]
    cutoff = point_in_time.time_cutoff(events[F.TIMESTAMP].to_numpy(), SplitConfig.eval_fraction)
    first_seen = events.groupby(F.USER_ID)[F.TIMESTAMP].min()
    late_users = sorted(first_seen[first_seen >= cutoff].index)
    assert len(late_users) >= 5
    model = export.load_exported(first_run["pushed_model"])
    served = model.signatures[F.SIGNATURE_TOP_K](user_id=tf.constant([*late_users, "nobody-ever"]))
    top10 = np.char.decode(served[F.OUTPUT_ITEM_IDS].numpy()[:, :10].astype(bytes), "utf-8")
    fallback = top10[-1]
    assert all(not np.array_equal(row, fallback) for row in top10[:-1])
    # Their lists come from their whole sequence, exactly as the history signature computes it.
    ordered = events.sort_values([F.TIMESTAMP, F.EVENT_ID])
    histories = [list(point_in_time.latest_history(ordered[ordered[F.USER_ID] == user][F.ITEM_ID],
                                                   SplitConfig.history_length)) for user in late_users]
    width = max(map(len, histories))
    with_history = model.signatures[F.SIGNATURE_TOP_K_WITH_HISTORY](
        user_id=tf.constant(late_users),
        history=tf.constant([h + [""] * (width - len(h)) for h in histories]))
    np.testing.assert_array_equal(served[F.OUTPUT_ITEM_IDS].numpy()[:-1], with_history[F.OUTPUT_ITEM_IDS].numpy())
    # And most of them see items of categories they acted on.
    own = [set(categories[events[events[F.USER_ID] == user][F.ITEM_ID]]) for user in late_users]
    assert np.mean([any(categories[item] in own[i] for item in row) for i, row in enumerate(top10[:-1])]) >= 0.5


def test_a_test_file_scores_like_the_evaluator(first_run, output_dir, tmp_path):
    # The eval split written as a user's own test file, the train period as the training data:
    # the outside-split command reproduces the Evaluator's figures (one protocol, one code path).
    data_dir = os.path.join(output_dir, "data")
    events = canonical.read_table(os.path.join(data_dir, F.EVENTS_FILE))
    cutoff = point_in_time.time_cutoff(events[F.TIMESTAMP].to_numpy(), SplitConfig.eval_fraction)
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    events[events[F.TIMESTAMP] < cutoff].to_csv(train_dir / F.EVENTS_FILE, index=False)
    for name in (F.ITEMS_FILE, F.USERS_FILE):
        shutil.copy(os.path.join(data_dir, name), train_dir / name)
    test_file = tmp_path / "test.csv"
    events[events[F.TIMESTAMP] >= cutoff][[F.USER_ID, F.ITEM_ID, F.TIMESTAMP]].to_csv(test_file, index=False)
    results = score_test_file.score(first_run["pushed_model"], str(train_dir),
                                    score_test_file.read_test_file(str(test_file)), ks=[10, 100])
    for ranking in ("model", "popularity", "item_knn", "als"):
        for name in ("ndcg@10", "recall@100", "users"):
            assert results[ranking]["all"][name] == pytest.approx(first_run["metrics"][ranking]["all"][name])


def test_rerun_with_unchanged_inputs_uses_the_cache(first_run, output_dir):
    second = run(output_dir, *BELOW_POPULARITY_OK)
    states = {node: c["state"] for node, c in second["components"].items()}
    assert {node: states[node] for node in UPSTREAM_NODES} == {n: "CACHED" for n in UPSTREAM_NODES}
    # The resolver now finds the first run's model, a new input: the evaluator runs, sees the
    # same model, and does not bless it twice, so nothing is pushed again.
    assert states["RetrievalEvaluator"] == "COMPLETE" and second["pushed"] is False
    assert any("last blessed model itself" in r for r in second["blessing_reasons"])
    # TFX's Evaluator re-blesses the cached ranking model (its baseline is itself); the Pusher sees
    # the files of the serving version and does not copy them again.
    assert states["RankingEvaluator"] == "COMPLETE" and second["ranking"]["blessed"] is True
    assert second["ranking"]["pushed"] is False
    assert second["ranking"]["identical_to_version"] == str(first_run["ranking"]["pushed_version"])
    third = run(output_dir, *BELOW_POPULARITY_OK)
    states = {node: c["state"] for node, c in third["components"].items()}
    assert {node: states.pop(node) for node in RESOLVERS} == {node: "COMPLETE" for node in RESOLVERS}
    assert set(states.values()) == {"CACHED"}
    assert pushed_versions(output_dir) == [str(first_run["pushed_version"])]
    assert pushed_versions(output_dir, RANKING_MODEL_NAME) == [str(first_run["ranking"]["pushed_version"])]


def test_impossible_blessing_threshold_pushes_nothing(first_run, output_dir):
    third = run(output_dir, *BELOW_POPULARITY_OK, "--min_ndcg", "2.0", "--ranking_min_auc", "0.999")
    assert third["components"]["RetrievalEvaluator"]["state"] == "COMPLETE"
    assert third["components"]["Transform"]["state"] == "CACHED"
    assert third["blessed"] is False and third["pushed"] is False
    assert any("below the floor 2.0" in reason for reason in third["blessing_reasons"])
    assert pushed_versions(output_dir) == [str(first_run["pushed_version"])]
    # The ranking model: the same model (cached), a floor it cannot meet, nothing pushed.
    assert third["components"]["RankingTrainer"]["state"] == "CACHED"
    assert third["components"]["RankingEvaluator"]["state"] == "COMPLETE"
    ranking = third["ranking"]
    assert ranking["blessed"] is False and ranking["pushed"] is False
    assert any("auc" in failure and "below the floor 0.999" in failure for failure in ranking["evaluation"]["failures"])
    assert pushed_versions(output_dir, RANKING_MODEL_NAME) == [str(first_run["ranking"]["pushed_version"])]


# An untrained ranking model (learning rate 0) with no AUC floor: only the no-regression check
# against the last blessed ranking model can stop it.
UNTRAINED_RANKING = ["--ranking_learning_rate", "0", "--ranking_min_auc", "0"]


def test_model_worse_than_popularity_is_not_pushed(first_run, output_dir):
    untrained = run(output_dir, "--learning_rate", "0", *UNTRAINED_RANKING)
    assert untrained["components"]["Trainer"]["state"] == "COMPLETE"
    assert untrained["blessed"] is False and untrained["pushed"] is False
    assert any("does not beat popularity" in r for r in untrained["blessing_reasons"])
    assert pushed_versions(output_dir) == [str(first_run["pushed_version"])]
    ranking = untrained["ranking"]
    assert untrained["components"]["RankingTrainer"]["state"] == "COMPLETE"
    assert ranking["blessed"] is False and ranking["pushed"] is False
    assert ranking["evaluation"]["failures"] and all(
        "against the last blessed ranking model" in failure for failure in ranking["evaluation"]["failures"])
    assert pushed_versions(output_dir, RANKING_MODEL_NAME) == [str(first_run["ranking"]["pushed_version"])]


def test_regression_against_the_last_blessed_model_is_not_pushed(first_run, output_dir):
    untrained = run(output_dir, "--learning_rate", "0", *BELOW_POPULARITY_OK, *UNTRAINED_RANKING)
    assert untrained["components"]["Trainer"]["state"] == "CACHED"  # the same untrained model
    assert "last_blessed" in untrained["metrics"]
    assert untrained["metrics"]["last_blessed"]["all"]["ndcg@10"] == pytest.approx(
        first_run["metrics"]["model"]["all"]["ndcg@10"])
    assert untrained["blessing_reasons"] and all(
        "regresses against the last blessed model" in r for r in untrained["blessing_reasons"])
    assert untrained["pushed"] is False
    assert pushed_versions(output_dir) == [str(first_run["pushed_version"])]


def test_corrupted_events_stop_at_validation(first_run, output_dir, tmp_path):
    data_dir = str(tmp_path / "corrupted")
    shutil.copytree(os.path.join(output_dir, "data"), data_dir)
    with open(os.path.join(data_dir, F.ITEMS_FILE)) as f:
        items = list(csv.DictReader(f))
    items[0][F.PRICE] = "-5.0"
    with open(os.path.join(data_dir, F.ITEMS_FILE), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(items[0]))
        writer.writeheader()
        writer.writerows(items)
    with open(os.path.join(data_dir, F.EVENTS_FILE), "a") as f:
        f.write(f"e-bad,u0,{items[1][F.ITEM_ID]},teleport,1650000000,s-bad\n")
    corrupted_out = str(tmp_path / "out")
    with pytest.raises(DataAnomaliesError) as error:
        local_runner.main(["--output_dir", corrupted_out, "--data_dir", data_dir, *SMALL_SHOP])
    message = str(error.value)
    assert "event_type" in message and "teleport" in message
    assert "price" in message
    store = run_summary.open_store(os.path.join(corrupted_out, "metadata.sqlite"))
    executions = run_summary.node_executions(store, PIPELINE_NAME)
    assert not executions.get("Transform") and not executions.get("Trainer")
    assert pushed_versions(corrupted_out) == []


def test_missing_input_folder_or_column_is_named(tmp_path):
    with pytest.raises(canonical.DataError, match="input folder .*no-such-folder.* does not exist"):
        local_runner.main(["--output_dir", str(tmp_path / "o1"), "--data_dir",
                           str(tmp_path / "no-such-folder")])
    data_dir = tmp_path / "no-price"
    data_dir.mkdir()
    (data_dir / F.EVENTS_FILE).write_text(
        "event_id,user_id,item_id,event_type,timestamp,session_id\n")
    (data_dir / F.ITEMS_FILE).write_text("item_id,category,brand\ni1,cat00,brand00\n")
    (data_dir / F.USERS_FILE).write_text("user_id,age_group\n")
    with pytest.raises(canonical.DataError, match=r"items.csv: missing column\(s\) price"):
        local_runner.main(["--output_dir", str(tmp_path / "o2"), "--data_dir", str(data_dir)])


REES46 = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "..", "shared",
                      "datasets", "rees46-sample", "events.csv")


@requirement_mark(os.path.exists(REES46), f"the REES46 sample dataset at {REES46}", "put ../shared/datasets in place")
def test_real_rees46_logs_run_through_the_pipeline(tmp_path):
    from shoprec.data import importer

    data_dir = str(tmp_path / "data")
    report = importer.import_logs("rees46", REES46, data_dir)
    assert report.events_written == report.rows_read == 17_434
    output_dir = str(tmp_path / "out")
    # The retrieval branch only: the ranking branch took 85 of the run's 136 component seconds, and
    # its rule for logs without impressions (each click and 4 sampled unclicked items) is tested in
    # tests/components/test_ranking_example_gen.py.
    assert local_runner.main(["--output_dir", output_dir, "--data_dir", data_dir,
                              "--epochs", "1", "--no_ranking"]) == 0
    with open(os.path.join(output_dir, "run_summary.json")) as f:
        summary = json.load(f)
    assert {c["state"] for c in summary["components"].values()} == {"COMPLETE"}
    assert not RANKING_NODES & set(summary["components"])
    assert "category values" in summary["schema"] and "brand values" in summary["schema"]
    assert summary["disabled_features"] == [F.AGE_GROUP]  # the sample has no age groups
    users = summary["metrics"]["model"]["all"]["users"]
    assert users > 500 and summary["metrics"]["item_knn"]["all"]["users"] == users
    # Three hours of logs are too little to beat popularity: the blessing must say so.
    assert summary["pushed"] == summary["blessed"]


def test_tuner_feeds_its_best_hyper_parameters_to_the_trainer(tmp_path):
    # Also the hashed-user-id and the ScaNN-export options, which this run exercises end to end.
    summary = run(str(tmp_path / "tuned"), *BELOW_POPULARITY_OK, "--epochs", "1", "--no_ranking",
                  "--tuner_trials", "2", "--user_id_hash_buckets", "64",
                  "--retrieval_index", "scann")
    assert summary["components"]["Tuner"]["state"] == "COMPLETE"
    store = run_summary.open_store(str(tmp_path / "tuned" / "metadata.sqlite"))
    [best] = store.get_artifacts_by_type("HyperParameters")
    with open(os.path.join(best.uri, "best_hyperparameters.txt")) as f:
        values = json.load(f)["values"]
    assert set(values) == {"learning_rate", "embedding_dim", "pooling"}
    assert summary["pushed"] is True
    # The evaluator loaded the ScaNN export (its ops registered on the way); so does a reader.
    [version] = pushed_versions(str(tmp_path / "tuned"))
    export_dir = os.path.join(tmp_path, "tuned", "serving", MODEL_NAME, version)
    used_ops = {op.name for op in servable.read_meta_graph(export_dir).meta_info_def.stripped_op_list.op}
    assert "Scann>ScannSearchBatched" in used_ops
    served = export.load_exported(export_dir).signatures["serving_default"](user_id=tf.constant(["u1"]))
    ids = served[F.OUTPUT_ITEM_IDS].numpy()[0]
    assert len(set(ids)) == len(ids) == 100
