"""Analyse an experiment from the service's exported events and exposures.

    python -m experiments.analyze EXPERIMENT_FILE --events DIR [--out DIR]

Reads ``DIR/exposures.csv``, the events with their request ids and, for revenue,
``DIR/items.csv``. The events come from ``DIR/attributed_events.csv`` when it is there (what
``python -m service.event_log export`` writes from the service's own log: every logged event,
impressions included, with its request id), else from ``DIR/events.csv`` (canonical columns plus
``request_id``, as the simulator writes it; impressions may instead be in ``DIR/impressions.csv``). Events are attributed to arms by request id. Writes
``<out>/<experiment>.md`` and PNGs; for a bandit experiment, the allocation over time, the SRM
check against each period's allocation and, when ``DIR/truth.json`` (written by the simulator)
holds the true mean reward per scene and arm, the cumulative regret.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

IMPRESSIONS_FILE = "impressions.csv"  # what the service's event-log export writes impressions to
TRUTH_FILE = "truth.json"  # the simulator's true mean reward per scene and arm (bandit runs)


def load_requests(config: "ExperimentConfig", events_dir: str,  # noqa: F821
                  exposures_path: str | None = None) -> "pd.DataFrame":  # noqa: F821
    """One row per exposed request of the experiment, with its attributed event counts.

    Returns:
      Frame with the exposure columns plus ``impressions``, ``clicks``, ``purchases``,
      ``revenue`` (0 where no events came back).

    Raises:
      FileNotFoundError / ValueError: a file or column is missing, saying which.
    """
    import pandas as pd

    from experiments import exposure
    from shoprec import features

    exposures_path = exposures_path or os.path.join(events_dir, exposure.EXPOSURES_FILE)
    attributed_path = os.path.join(events_dir, exposure.ATTRIBUTED_EVENTS_FILE)
    from_service_log = os.path.isfile(attributed_path)
    events_path = attributed_path if from_service_log else os.path.join(events_dir, features.EVENTS_FILE)
    for path in (exposures_path, events_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: missing (see python -m experiments.analyze --help)")
    exposures = pd.read_csv(exposures_path, dtype={exposure.REQUEST_ID: str,
                                                   features.USER_ID: str, exposure.ARM: str})
    exposure.check_exposure_columns(list(exposures.columns), exposures_path)
    exposures = exposures[exposures[exposure.EXPERIMENT] == config.name]
    if exposures.empty:
        raise ValueError(f"{exposures_path}: no exposures of experiment {config.name!r}")
    frames = [pd.read_csv(events_path, dtype=str)]
    impressions_path = os.path.join(events_dir, IMPRESSIONS_FILE)
    if not from_service_log and os.path.isfile(impressions_path):
        impressions = pd.read_csv(impressions_path, dtype=str)
        impressions[features.EVENT_TYPE] = features.IMPRESSION
        frames.append(impressions)
    events = pd.concat(frames, ignore_index=True)
    if exposure.REQUEST_ID not in events.columns:
        raise ValueError(f"{events_path}: no {exposure.REQUEST_ID} column, so events cannot be"
                         f" attributed to arms")
    events = events[events[exposure.REQUEST_ID].isin(exposures[exposure.REQUEST_ID])]
    if not (events[features.EVENT_TYPE] == features.IMPRESSION).any():
        raise ValueError(f"{events_dir}: no impression events of this experiment's requests;"
                         f" CTR needs them")
    counts = pd.crosstab(events[exposure.REQUEST_ID], events[features.EVENT_TYPE])
    requests = exposures.set_index(exposure.REQUEST_ID)
    for column, event_type in (("impressions", features.IMPRESSION), ("clicks", features.CLICK),
                               ("purchases", features.PURCHASE)):
        requests[column] = (counts[event_type] if event_type in counts else
                            pd.Series(dtype=float)).reindex(requests.index).fillna(0.0)
    requests["revenue"] = 0.0
    items_path = os.path.join(events_dir, features.ITEMS_FILE)
    if os.path.isfile(items_path):
        prices = pd.read_csv(items_path, dtype={features.ITEM_ID: str}).set_index(
            features.ITEM_ID)[features.PRICE]
        bought = events[events[features.EVENT_TYPE] == features.PURCHASE]
        revenue = bought[features.ITEM_ID].map(prices).fillna(0.0).groupby(
            bought[exposure.REQUEST_ID]).sum()
        requests["revenue"] = revenue.reindex(requests.index).fillna(0.0)
    elif {"revenue_per_user"} & {config.primary_metric, *config.guardrail_metrics}:
        raise FileNotFoundError(f"{items_path}: missing, and revenue_per_user needs prices")
    return requests.reset_index()


def bandit_sections(config: "ExperimentConfig", requests: "pd.DataFrame", events_dir: str,  # noqa: F821
                    out_dir: str) -> tuple[dict[str, str], list[str], "SrmResult"]:  # noqa: F821
    """Allocation plot, adaptive SRM (per period = per day) and regret when the truth is known."""
    import numpy as np

    from experiments import exposure, report, stats
    from experiments.bandits import cumulative_regret
    from experiments.simulator import PERIOD_S
    from shoprec import features

    arms = list(config.arm_names)
    period = ((requests[features.TIMESTAMP].astype("int64")) // PERIOD_S).to_numpy()
    periods = np.unique(period)
    counts = np.zeros((periods.size, len(arms)))
    allocation = np.zeros_like(counts)
    arm_index = requests[exposure.ARM].map({a: i for i, a in enumerate(arms)}).to_numpy()
    notes = []
    plots = {}
    srm_parts = []
    for t, p in enumerate(periods):
        for scene, group in requests[period == p].groupby(exposure.SCENE):
            index = arm_index[group.index]
            scene_counts = np.bincount(index, minlength=len(arms))
            propensity = np.bincount(index, weights=group[exposure.PROPENSITY],
                                     minlength=len(arms)) / np.maximum(scene_counts, 1)
            if (propensity == 0).sum() == 1:
                propensity[propensity == 0] = 1.0 - propensity.sum()
            if np.all(propensity > 0) and abs(propensity.sum() - 1.0) < 0.05:
                srm_parts.append((scene_counts, propensity / propensity.sum()))
            counts[t] += scene_counts
        allocation[t] = counts[t] / max(counts[t].sum(), 1)
    # A period's allocation is constant when the propensities logged in each of its (scene,
    # arm) cells are (the in-process simulator updates its bandit per period); a live bandit
    # updates with every request, so its gate weighs each request by its own propensity.
    constant = requests.groupby([period, requests[exposure.SCENE], requests[exposure.ARM]])[
        exposure.PROPENSITY].std().fillna(0.0).max() < 1e-9
    if constant and srm_parts:
        srm = stats.srm_test_adaptive(np.array([c for c, _ in srm_parts]),
                                      np.array([a for _, a in srm_parts]))
        notes.append(f"adaptive SRM over {len(srm_parts)} (day, scene) cells against each cell's"
                     f" logged allocation: p = {srm.p_value:.3g} ({'pass' if srm.passed else 'FAIL'})")
    else:
        srm = stats.srm_test_propensity(arm_index, requests[exposure.PROPENSITY].to_numpy(), len(arms))
        notes.append(f"SRM of a live bandit: each arm's Horvitz-Thompson count (sum of 1 / logged"
                     f" propensity) against the {len(requests):,} requests, Bonferroni over the arms:"
                     f" p = {srm.p_value:.3g} ({'pass' if srm.passed else 'FAIL'})")
    if constant or periods.size > 1:
        plots["allocation"] = report.plot_allocation(
            dict(zip(arms, allocation.T)), os.path.join(out_dir, f"{config.name}_allocation.png"),
            f"{config.name}: share of requests per arm and day")
    else:  # a live bandit within one day: its allocation over windows of requests, in log order
        windows = np.array_split(arm_index, min(40, max(1, arm_index.size // 100)))
        shares = np.array([np.bincount(window, minlength=len(arms)) / window.size for window in windows])
        plots["allocation"] = report.plot_allocation(
            dict(zip(arms, shares.T)), os.path.join(out_dir, f"{config.name}_allocation.png"),
            f"{config.name}: share of requests per arm, {windows[0].size:,}-request windows",
            xlabel="window of requests (log order)")
    truth_path = os.path.join(events_dir, TRUTH_FILE)
    if os.path.isfile(truth_path):
        with open(truth_path, encoding="utf-8") as handle:
            truth = json.load(handle)  # {scene: {arm: mean reward}}
        order = requests.sort_values(features.TIMESTAMP, kind="stable")
        chosen = np.array([truth[s][a] for s, a in zip(order[exposure.SCENE], order[exposure.ARM])])
        best = np.array([max(truth[s].values()) for s in order[exposure.SCENE]])
        plots["regret"] = report.plot_curves(
            {config.allocation: cumulative_regret(best, chosen)},
            os.path.join(out_dir, f"{config.name}_regret.png"), "cumulative regret (clicks)",
            f"{config.name}: regret against the best arm per scene (truth from {TRUTH_FILE})",
            xlabel="request")
    return plots, notes, srm


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns 0 on a verdict, 2 when the verdict is refused (SRM)."""
    parser = argparse.ArgumentParser(prog="python -m experiments.analyze",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", help="the experiment file (.yaml/.yml/.json)")
    parser.add_argument("--events", required=True,
                        help="folder with events.csv, exposures.csv and items.csv")
    parser.add_argument("--exposures", default=None, help="exposures file (default: in --events)")
    parser.add_argument("--out", default=None, help="report folder (default: --events/report)")
    parser.add_argument("--no-cuped", action="store_true", help="do not CUPED-adjust")
    args = parser.parse_args(argv)

    from experiments import analysis, exposure, report
    from experiments.config import load_experiment
    from shoprec import features

    config = load_experiment(args.experiment)
    out_dir = args.out or os.path.join(args.events, "report")
    os.makedirs(out_dir, exist_ok=True)
    requests = load_requests(config, args.events, args.exposures)
    plots: dict[str, str] = {}
    notes: list[str] = []
    if config.allocation != "fixed":
        plots, notes, adaptive_srm = bandit_sections(config, requests, args.events, out_dir)
        notes.append("bandit traffic is adaptive: per-arm means below are descriptive, not an"
                     " unbiased A/B comparison")
    # A bandit randomises requests, not users: then the request is the unit.
    unit = exposure.REQUEST_ID if config.allocation != "fixed" else features.USER_ID
    metrics, mixed = analysis.per_user_metrics(
        requests[unit].to_numpy(), requests[exposure.ARM].to_numpy(),
        requests["impressions"].to_numpy(), requests["clicks"].to_numpy(),
        requests["purchases"].to_numpy(), requests["revenue"].to_numpy(), config.arm_names)
    verdict = analysis.analyze(config, metrics, mixed, use_cuped=not args.no_cuped,
                               srm=adaptive_srm if config.allocation != "fixed" else None)
    plots["lift"] = report.plot_lifts(verdict, os.path.join(out_dir, f"{config.name}_lift.png"))
    report_path = os.path.join(out_dir, f"{config.name}.md")
    with open(report_path, "w", encoding="utf-8") as handle:
        handle.write(report.markdown(verdict, plots, tuple(notes)))
    print(f"{config.name}: {verdict.status}. {verdict.message}\nreport: {report_path}")
    return 2 if verdict.status == analysis.REFUSED else 0


if __name__ == "__main__":
    sys.exit(main())
