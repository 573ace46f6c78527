"""Simulator truths, in-process experiments end to end, and the refused verdict."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import analysis, analyze, policies, traffic
from experiments.assignment import Assigner
from experiments.config import Arm, ExperimentConfig
from experiments.simulator import ClickModel, ShopSimulator, draw_shop_truth
from shoprec.config import ShopConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def sim() -> ShopSimulator:
    return ShopSimulator(draw_shop_truth(dataclasses.replace(ShopConfig(), users=3000, items=400)))


def _config(weights=(0.5, 0.5)) -> ExperimentConfig:
    return ExperimentConfig("t", "t", (Arm("control", weights[0], "strategy", "popularity"),
                                       Arm("treatment", weights[1], "strategy", "personalized")),
                            "ctr", ("revenue_per_user", "conversion"), 0.05, None, 100)


def test_relative_appeal_matches_item_scores(sim):
    users = np.array([0, 5, 17])
    slates = np.array([[0, 1, 2], [3, 4, 5], [10, 20, 30]])
    expected = sim.truth.n_items * sim.truth.item_scores(users)[np.arange(3)[:, None], slates]
    assert sim.relative_appeal(users, slates) == pytest.approx(expected)


def test_click_models_hand_computed(sim):
    users, slates = np.array([1]), np.array([[3, 4]])
    attraction = sim.attraction(users, slates)[0]
    position = sim.click_probabilities(users, slates)[0]
    assert position == pytest.approx(attraction * [1.0, 2 ** -0.7])
    cascade = ShopSimulator(sim.truth, click_model=ClickModel(kind="cascade"))
    assert cascade.click_probabilities(users, slates)[0] == pytest.approx(
        [attraction[0], (1 - attraction[0]) * attraction[1]])


def test_respond_matches_expectation(sim):
    rng = np.random.default_rng(0)
    visits = sim.draw_visits(20_000, rng)
    slates = policies.PersonalizedPolicy(sim)(visits, 10)
    outcome = sim.respond(visits, slates, rng)
    expected = sim.expected(visits.user, slates).clicks
    assert outcome.expected_clicks == pytest.approx(expected)
    se = outcome.clicks.sum(axis=1).std() / np.sqrt(len(visits))
    assert abs(outcome.clicks.sum(axis=1).mean() - expected.mean()) < 4 * se


def test_drift_moves_tastes_slowly(sim):
    drifting = ShopSimulator(sim.truth, drift_rate=0.05)
    before = drifting.category_weights.copy()
    drifting.advance_period(np.random.default_rng(0))
    change = np.abs(drifting.category_weights - before).sum(axis=1)
    assert np.allclose(drifting.category_weights.sum(axis=1), 1.0)
    assert 0 < change.mean() < 0.1 * 2
    drifting.reset()
    assert np.array_equal(drifting.category_weights, before)


def _experiment(sim, weights=(0.5, 0.5), seed=0):
    backend = traffic.InProcessBackend(
        sim, "t", {"control": policies.PopularityPolicy(sim),
                   "treatment": policies.PersonalizedPolicy(sim)},
        assigner=Assigner("t", ("control", "treatment"), weights))
    return traffic.run_traffic(sim, backend, np.random.default_rng(seed), [4000] * 3)


def test_model_beats_popularity_and_analysis_reads_the_files(sim, tmp_path):
    log = _experiment(sim)
    log.write(str(tmp_path), sim)
    requests = analyze.load_requests(_config(), str(tmp_path))
    metrics, mixed = analysis.per_user_metrics(
        requests["user_id"].to_numpy(), requests["arm"].to_numpy(),
        requests["impressions"].to_numpy(), requests["clicks"].to_numpy(),
        requests["purchases"].to_numpy(), requests["revenue"].to_numpy(), ("control", "treatment"))
    assert mixed == 0
    verdict = analysis.analyze(_config(), metrics)
    assert verdict.status == analysis.SIGNIFICANT
    primary = verdict.primary("treatment").result
    truth = {arm: log.expected[log.served.arm == arm].mean() for arm in ("control", "treatment")}
    assert truth["treatment"] > truth["control"] and primary.ci_low > 0
    # the files give the same clicks as the in-memory log
    assert requests["clicks"].sum() == log.outcome.clicks.sum()


def test_srm_refuses_the_verdict(sim, tmp_path):
    log = _experiment(sim, weights=(0.4, 0.6))  # planned 50/50
    r = log.per_request()
    metrics, _ = analysis.per_user_metrics(r["user"], r["arm"], r["impressions"], r["clicks"],
                                           r["purchases"], r["revenue"], ("control", "treatment"))
    verdict = analysis.analyze(_config(), metrics)
    assert verdict.status == analysis.REFUSED
    assert verdict.comparisons == () and "sample ratio mismatch" in verdict.message
    with pytest.raises(KeyError):
        verdict.primary("treatment")


def test_cli_end_to_end_and_fast_help(tmp_path):
    example = os.path.join(REPO, "experiments", "examples", "home_model_vs_popularity.yaml")
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "experiments.simulate", "--help"], cwd=REPO, check=True,
                   capture_output=True)
    assert time.perf_counter() - began < 3.0
    subprocess.run([sys.executable, "-m", "experiments.simulate", example, "--out", str(tmp_path),
                    "--users", "2000", "--items", "300", "--periods", "2",
                    "--visits-per-period", "1500"], cwd=REPO, check=True, capture_output=True)
    done = subprocess.run([sys.executable, "-m", "experiments.analyze", example, "--events",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = os.path.join(tmp_path, "report", "home_model_vs_popularity.md")
    assert "Verdict: significant" in open(report, encoding="utf-8").read()
    assert os.path.getsize(os.path.join(tmp_path, "report", "home_model_vs_popularity_lift.png"))
