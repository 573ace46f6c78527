"""Unit tests of the app's plain functions: no servers."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import portpicker
import pytest

from ui import config, demo, experiments_data, recommend_view
from ui.client import RecommendQuery, ServiceClient, ServiceError, ServiceUnavailable


def test_diff_lists_names_added_removed_and_moved_items() -> None:
    change = recommend_view.diff_lists(["a", "b", "c", "d"], ["b", "a", "e", "c"])
    assert change.added == ("e",)
    assert change.removed == ("d",)
    assert change.moved == ("b", "a", "c")
    assert recommend_view.describe_change(change, "click on a") == \
        "After click on a: 1 new item(s), 1 dropped, 3 moved."
    same = recommend_view.diff_lists(["a", "b"], ["a", "b"])
    assert not same.changed
    assert recommend_view.describe_change(same, "click on a") == "After click on a: the list did not change."


def test_query_key_differs_exactly_when_the_query_does() -> None:
    base = RecommendQuery(user_id="u1", scene="home", k=5)
    assert recommend_view.query_key(base) == recommend_view.query_key(RecommendQuery("u1", "home", 5))
    assert recommend_view.query_key(base) != recommend_view.query_key(RecommendQuery("u1", "home", 6))


def test_settings_come_from_flags_then_environment_then_defaults() -> None:
    env = {config.SERVICE_URL_ENV: "http://svc:9000/", config.RUN_DIR_ENV: "/runs/x"}
    settings = config.load_settings(["--run_dir", "/flag/run", "-q", "unrelated"], env)
    assert settings == config.UiSettings(service_url="http://svc:9000", run_dir="/flag/run",
                                         experiments_dir=config.DEFAULT_EXPERIMENTS_DIR)
    assert config.load_settings([], {}) == config.UiSettings()


def test_query_body_uses_the_service_schema_and_refuses_invalid_fields() -> None:
    body = RecommendQuery(user_id="u1", scene="cart", k=4, cart_items=("i1",), max_price=50.0).body()
    assert body == {"user_id": "u1", "scene": "cart", "k": 4, "context": {"cart_items": ["i1"]},
                    "filters": {"max_price": 50.0, "exclude_ids": [], "exclude_purchased": True}}
    with pytest.raises(ServiceError, match="k"):
        RecommendQuery(user_id="u1", scene="home", k=0).body()
    with pytest.raises(ServiceError, match="min_price must not exceed max_price"):
        RecommendQuery(user_id="u1", scene="home", min_price=9.0, max_price=1.0).body()


def test_a_service_that_does_not_answer_raises_service_unavailable() -> None:
    client = ServiceClient(f"http://127.0.0.1:{portpicker.pick_unused_port()}", timeout_s=2)
    with pytest.raises(ServiceUnavailable, match="no answer from"):
        client.health()


def _definition(name: str) -> dict[str, object]:
    return {"name": name, "salt": f"{name}-salt", "scenes": ["home"], "primary_metric": "ctr", "alpha": 0.05,
            "sample_size_per_arm": 5000,
            "arms": [{"name": "control", "weight": 0.5, "kind": "strategy", "value": "popularity"},
                     {"name": "treatment", "weight": 0.5, "kind": "strategy", "value": "personalized"}]}


def test_experiments_folder_splits_definitions_from_reports(tmp_path: Path) -> None:
    assert not experiments_data.load_folder(str(tmp_path / "missing")).running
    (tmp_path / "ab.json").write_text(json.dumps(_definition("ab")))
    (tmp_path / "cd.yaml").write_text("name: cd\nsalt: s\narms:\n  - {name: a, weight: 1.0, kind: strategy, "
                                      "value: popularity}\n")
    (tmp_path / "ab_report.json").write_text(json.dumps({
        "experiment": "ab", "srm": {"p_value": 0.41, "passed": True},
        "metrics": [{"metric": "ctr", "relative_lift": 0.05, "ci_low": 0.01, "ci_high": 0.09}],
        "bandit": {"allocation": [{"step": 0, "control": 0.5, "treatment": 0.5}], "regret": [0.0, 0.1]}}))
    (tmp_path / "notes.md").write_text("# Notes\nread me")
    folder = experiments_data.load_folder(str(tmp_path))
    assert folder.running
    assert [d.name for d in folder.definitions] == ["ab", "cd"]
    assert folder.definitions[0].arms_table()["allocation"].tolist() == [0.5, 0.5]
    assert folder.definitions[0].facts()["plan"] == "5000 users per arm"
    report, notes = folder.reports
    assert report.title == "ab" and notes.markdown == "# Notes\nread me"
    assert report.srm() == {"p_value": 0.41, "passed": True}
    assert report.metrics_table().to_dict("records") == [
        {"metric": "ctr", "relative_lift": 0.05, "ci_low": 0.01, "ci_high": 0.09}]
    assert report.bandit_allocation().loc[0, "treatment"] == 0.5
    assert report.bandit_regret()["regret"].tolist() == [0.0, 0.1]


def test_a_broken_experiment_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(experiments_data.ExperimentFileError, match="bad.json"):
        experiments_data.load_folder(str(tmp_path))


def test_demo_runs_the_pipeline_with_the_shop_size_flags_it_was_given(tmp_path: Path) -> None:
    args = demo.build_parser().parse_args(["--output_dir", str(tmp_path), "--events", "500"])
    command = demo.pipeline_command(args)
    assert command[1:] == ["-m", "pipeline.local_runner", "--output_dir", str(tmp_path), "--events", "500"]
    assert demo.pushed_versions(tmp_path) == []
    version = tmp_path / "serving" / demo.MODEL_NAME / "17"
    version.mkdir(parents=True)
    assert demo.pushed_versions(tmp_path) == []  # no saved_model.pb yet: not a pushed model
    (version / "saved_model.pb").write_bytes(b"")
    assert demo.pushed_versions(tmp_path) == [17]


def test_demo_refuses_a_taken_port_naming_the_flag() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(demo.DemoError, match=f"port {port} .* --ui_port"):
            demo.check_port_free("127.0.0.1", port, "--ui_port")


def test_demo_relays_the_pipelines_console_lines_as_they_come(tmp_path: Path) -> None:
    # Before, the demo printed one line and nothing more during its 5-minute pipeline run.
    (tmp_path / "pipeline.log").write_text("a line of an earlier run\n")
    script = ("import sys, time\n"
              "print('  EventsExampleGen   done   1.0 s', flush=True)\n"
              "time.sleep(0.6)\n"
              "print('', flush=True)\n"
              "sys.stdout.write('  Trainer   done   2.0 s')  # no newline: the last line still comes\n"
              "sys.exit(3)\n")
    child = demo.spawn("pipeline", [sys.executable, "-c", script], tmp_path, dict(os.environ))
    out = io.StringIO()
    assert demo.relay_output(child, out, poll_s=0.1) == 3
    assert out.getvalue().splitlines() == ["    EventsExampleGen   done   1.0 s", "    Trainer   done   2.0 s"]
