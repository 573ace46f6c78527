"""bench/pipeline.py's reading of a run: the RankingTrainer's report."""

from __future__ import annotations

import json
from pathlib import Path

from bench import pipeline as bench_pipeline


def test_the_ranking_trainers_report_is_read_from_its_model_run(tmp_path: Path) -> None:
    assert bench_pipeline.ranking_training(str(tmp_path)) is None  # a run without the ranking branch
    model_run = tmp_path / "pipeline_root" / "RankingTrainer" / "model_run" / "14"
    model_run.mkdir(parents=True)
    report = {"epochs": 2, "steps_per_epoch": 1245, "eval": {"dcn": {"click_auc": 0.86}}, "config": {"epochs": 5}}
    (model_run / "ranking_training.json").write_text(json.dumps(report))
    assert bench_pipeline.ranking_training(str(tmp_path)) == {
        "epochs": 2, "steps_per_epoch": 1245, "eval": {"dcn": {"click_auc": 0.86}}}
