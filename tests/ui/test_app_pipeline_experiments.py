"""The Pipeline and Experiments pages in ``streamlit.testing.v1.AppTest``, on the small pipeline run
and the real service."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.service.conftest import ModelServer, TrainedRun
from ui import config, pipeline_data

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")
TIMEOUT_S = 60
COMPONENTS = {"EventsExampleGen", "StatisticsGen", "ExampleValidator", "AnomaliesGate", "Transform", "Trainer",
              "RetrievalEvaluator", "Pusher"}


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame_with(at: AppTest, *columns: str) -> pd.DataFrame:
    frames = [d.value for d in at.dataframe if set(columns) <= set(d.value.columns)]
    assert frames, f"no table with {columns}"
    return frames[0]


def test_pipeline_page_shows_runs_metrics_statistics_anomalies_and_versions(
        app_env: dict[str, str], trained_run: TrainedRun, model_server: ModelServer) -> None:
    at = open_page("views/pipeline.py")
    assert at.title[0].value == "Pipeline"
    assert [h.value for h in at.subheader] == ["Runs", "Metrics against K", "Model versions: blessed and pushed",
                                               "Data statistics", "Anomalies of the last validation"]
    runs = frame_with(at, "run", "status", "cache hits")
    assert len(runs) >= 1 and runs["status"].iloc[0] == "COMPLETE"
    assert at.selectbox(key="run").value == runs["run"].iloc[0]
    components = frame_with(at, "component", "state", "seconds", "cache hit")
    assert COMPONENTS <= set(components["component"])
    assert set(components["state"]) <= {"COMPLETE", "CACHED"}
    trainer = components[components["component"] == "Trainer"].iloc[0]
    assert trainer["seconds"] > 0

    # Metrics against K: the plot and the table, from the RetrievalEvaluator's artifact.
    summary = json.loads((trained_run.root / "run_summary.json").read_text())
    assert len([m for m in at.markdown if m.value.startswith('<img alt="metrics against K" src="data:image/png;base64,')]) == 1
    metrics = frame_with(at, "ranking", "recall@10", "ndcg@10")
    assert metrics["ranking"].tolist()[0] == "model"
    assert set(metrics["ranking"]) == set(summary["metrics"])
    assert metrics.set_index("ranking").loc["model", "ndcg@10"] == pytest.approx(
        summary["metrics"]["model"]["all"]["ndcg@10"])
    assert at.selectbox(key="slice").options[0] == "all"
    at.selectbox(key="slice").set_value("new_users").run()
    new_users = frame_with(at, "ranking", "recall@10")
    assert new_users.set_index("ranking").loc["model", "users"] == int(
        summary["metrics"]["model"]["new_users"]["users"])

    # Versions: the pushed one, blessed, served now, its metrics next to popularity's.
    versions = frame_with(at, "pushed version", "serving now")
    latest = versions.iloc[0]
    assert latest["pushed version"] == str(model_server.version) == summary["pushed_version"]
    assert bool(latest["blessed"]) and bool(latest["serving now"])
    assert latest["recall@10"] == pytest.approx(summary["metrics"]["model"]["all"]["recall@10"])
    assert latest["recall@10 (popularity)"] == pytest.approx(summary["metrics"]["popularity"]["all"]["recall@10"])

    # Data statistics of both splits, and the validation verdict.
    statistics = [d.value for d in at.dataframe if "missing_pct" in d.value.columns]
    assert len(statistics) == 2
    assert {"user_id", "item_id", "price", "history"} <= set(statistics[0]["feature"])
    splits = [m.value for m in at.markdown if " examples, " in m.value]
    assert [s.split("**")[1] for s in splits] == ["eval", "train"]
    assert [s.value for s in at.success] == ["**eval**: no anomalies", "**train**: no anomalies"]


def test_pipeline_page_without_a_run_says_what_to_do(monkeypatch: pytest.MonkeyPatch, app_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    monkeypatch.setenv(config.RUN_DIR_ENV, str(tmp_path / "nothing"))
    at = open_page("views/pipeline.py")
    assert len(at.warning) == 1 and "no pipeline run in" in at.warning[0].value
    assert "python -m pipeline.local_runner" in at.warning[0].value and not at.dataframe


def test_the_pipeline_table_readers_agree_with_run_summary(trained_run: TrainedRun) -> None:
    store = pipeline_data.open_run_store(str(trained_run.root))
    evaluation = pipeline_data.load_evaluation(str(trained_run.root), store)
    summary = json.loads((trained_run.root / "run_summary.json").read_text())
    assert evaluation is not None and evaluation.metrics == summary["metrics"]
    assert pipeline_data.metrics_plot_png(evaluation).startswith(b"\x89PNG")
    anomalies = pipeline_data.load_anomalies(store)
    assert anomalies is not None and all(split.anomalies.empty for split in anomalies)


def test_experiments_page_says_none_are_running(app_env: dict[str, str], experiments_dir: Path) -> None:
    at = open_page("views/experiments.py")
    assert at.title[0].value == "Experiments"
    assert len(at.info) == 1 and at.info[0].value.startswith("**No experiments are running.**")
    assert str(experiments_dir) in at.info[0].value and not at.dataframe


def test_experiments_page_renders_definitions_and_a_report(app_env: dict[str, str], experiments_dir: Path) -> None:
    (experiments_dir / "home_ab.json").write_text(json.dumps({
        "name": "home_ab", "salt": "s1", "scenes": ["home"], "primary_metric": "ctr",
        "guardrail_metrics": ["revenue_per_user"], "alpha": 0.05, "horizon_days": 7, "allocation": "thompson",
        "arms": [{"name": "control", "weight": 0.3, "kind": "strategy", "value": "popularity"},
                 {"name": "treatment", "weight": 0.7, "kind": "strategy", "value": "personalized"}]}))
    (experiments_dir / "home_ab_report.json").write_text(json.dumps({
        "experiment": "home_ab", "srm": {"p_value": 0.003, "passed": False},
        "metrics": [{"metric": "ctr", "relative_lift": 0.04, "ci_low": -0.01, "ci_high": 0.09, "p_value": 0.12}],
        "bandit": {"allocation": [{"step": 0, "control": 0.5, "treatment": 0.5},
                                  {"step": 1, "control": 0.3, "treatment": 0.7}],
                   "regret": [{"step": 0, "regret": 0.0}, {"step": 1, "regret": 0.4}]}}))
    (experiments_dir / "summary.md").write_text("## Week 1\nTreatment ahead, not significant.")
    at = open_page("views/experiments.py")
    assert not at.info
    assert [h.value for h in at.subheader] == ["home_ab", "home_ab", "summary.md"]
    arms = frame_with(at, "arm", "allocation")
    assert arms.to_dict("records") == [
        {"arm": "control", "allocation": 0.3, "kind": "strategy", "value": "popularity"},
        {"arm": "treatment", "allocation": 0.7, "kind": "strategy", "value": "personalized"}]
    assert any("**allocation**: thompson" in m.value and "**plan**: 7 days" in m.value for m in at.markdown)
    assert len(at.error) == 1 and at.error[0].value.startswith("sample-ratio check: p = 0.003: FAILED")
    lift = frame_with(at, "metric", "relative_lift", "ci_low", "ci_high")
    assert lift.iloc[0]["relative_lift"] == 0.04
    assert any(m.value == "## Week 1\nTreatment ahead, not significant." for m in at.markdown)
    assert len(at.get("vega_lite_chart")) == 2  # allocation over time and regret
