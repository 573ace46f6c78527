"""Simulate shoppers for an experiment, in process or against the running service.

    python -m experiments.simulate EXPERIMENT_FILE --out DIR [--mode inprocess|http]
        [--shop-dir SHOP | --users N --items N --seed S] [--url URL --api-key KEY]
        [--periods 7 --visits-per-period 5000 --k 10 --click-model position|cascade]
        [--drift 0.01] [--lift ARM=1.05 ...]

In-process, each arm's ``value`` names a simulator strategy (popularity, random, category,
personalized) and the file's ``allocation`` (fixed split or bandit) chooses arms. Over HTTP the
service chooses. Writes ``events.csv`` (with request ids), ``exposures.csv``, ``items.csv``
and ``truth.json`` (true expected CTR of the slates each arm served; for bandits the true
P(click) per scene and arm) to ``--out``; then run ``python -m experiments.analyze``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

STRATEGIES = ("popularity", "random", "category", "personalized")


def build_parser() -> argparse.ArgumentParser:
    """The command line (no heavy imports, so --help is instant)."""
    parser = argparse.ArgumentParser(prog="python -m experiments.simulate",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("experiment", help="experiment file (.yaml/.yml/.json)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--mode", choices=("inprocess", "http"), default="inprocess")
    parser.add_argument("--shop-dir", default=None,
                        help="generated shop folder (its truth/); needed for --mode http")
    parser.add_argument("--users", type=int, default=20_000, help="in-process shop users")
    parser.add_argument("--items", type=int, default=2_000, help="in-process shop items")
    parser.add_argument("--seed", type=int, default=42, help="shop and simulation seed")
    parser.add_argument("--url", default="http://localhost:8000", help="service base URL")
    parser.add_argument("--api-key", default=None, help="bearer API key for the service")
    parser.add_argument("--periods", type=int, default=7, help="days")
    parser.add_argument("--visits-per-period", type=int, default=5_000)
    parser.add_argument("--k", type=int, default=10, help="slate length")
    parser.add_argument("--click-model", choices=("position", "cascade"), default="position")
    parser.add_argument("--drift", type=float, default=0.01, help="taste drift per day")
    parser.add_argument("--lift", action="append", default=[], metavar="ARM=MULTIPLIER",
                        help="inject a lift: multiply the arm's attraction (in-process)")
    return parser


def _parse_lifts(values: Sequence[str]) -> dict[str, float]:
    lifts = {}
    for value in values:
        arm, _, multiplier = value.partition("=")
        try:
            lifts[arm] = float(multiplier)
        except ValueError as error:
            raise SystemExit(f"--lift {value!r}: expected ARM=MULTIPLIER") from error
    return lifts


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the simulation; returns 0."""
    args = build_parser().parse_args(argv)
    import dataclasses

    import numpy as np

    from experiments import policies, traffic
    from experiments import simulator as sim_lib
    from experiments.assignment import Assigner
    from experiments.bandits import StrategyBandit
    from experiments.config import load_experiment
    from shoprec.config import ShopConfig

    config = load_experiment(args.experiment)
    click_model = sim_lib.ClickModel(kind=args.click_model)
    if args.shop_dir:
        sim = sim_lib.ShopSimulator.from_shop_dir(args.shop_dir, click_model=click_model,
                                                  drift_rate=args.drift)
    elif args.mode == "http":
        raise SystemExit("--mode http needs --shop-dir: the shop the service was trained on")
    else:
        sim = sim_lib.ShopSimulator(sim_lib.draw_shop_truth(dataclasses.replace(
            ShopConfig(), users=args.users, items=args.items, seed=args.seed)),
            click_model=click_model, drift_rate=args.drift)
    if config.scenes and args.mode == "inprocess":  # visit only the experiment's scenes
        unknown = sorted(set(config.scenes) - set(sim_lib.SCENES))
        if unknown:
            raise SystemExit(f"{config.source}: scenes {unknown} are not simulated"
                             f" ({sim_lib.SCENES})")
        sim.scene_weights = np.where(np.isin(sim_lib.SCENES, config.scenes), sim.scene_weights, 0.0)
        sim.scene_weights /= sim.scene_weights.sum()
    rng = np.random.default_rng(args.seed)
    if args.mode == "http":
        from experiments.http_backend import HttpBackend

        backend = HttpBackend(sim, args.url, api_key=args.api_key)
    else:
        wrong = [arm.name for arm in config.arms
                 if arm.kind != "strategy" or arm.value not in STRATEGIES]
        if wrong:
            raise SystemExit(f"{config.source}: in-process arms must be strategies among"
                             f" {STRATEGIES}; not: {wrong}")
        makers = {"popularity": policies.PopularityPolicy, "random": policies.RandomPolicy,
                  "category": policies.CategoryPolicy, "personalized": policies.PersonalizedPolicy}
        built = {value: makers[value](sim) for value in {arm.value for arm in config.arms}}
        arm_policies = {arm.name: built[arm.value] for arm in config.arms}
        if config.allocation == "fixed":
            backend = traffic.InProcessBackend(sim, config.name, arm_policies,
                                               assigner=Assigner.from_config(config))
        else:
            backend = traffic.InProcessBackend(sim, config.name, arm_policies, bandit=StrategyBandit(
                config.arm_names, algorithm=config.allocation, floor=0.02, seed=args.seed))
    log = traffic.run_traffic(sim, backend, rng, [args.visits_per_period] * args.periods,
                              k=args.k, click_multiplier_by_arm=_parse_lifts(args.lift),
                              send_events=args.mode == "http")
    paths = log.write(args.out, sim)
    truth: dict[str, object] = {"expected_ctr_of_served_slates": {}}
    shown = (log.served.slates != sim_lib.NO_ITEM).sum(axis=1)
    for arm in np.unique(log.served.arm).tolist():
        rows = log.served.arm == arm
        truth["expected_ctr_of_served_slates"][arm or "(none)"] = float(  # type: ignore[index]
            log.expected[rows].sum() / max(shown[rows].sum(), 1))
    if args.mode == "inprocess" and config.allocation != "fixed":
        visits, weights = sim.population_visits(np.random.default_rng(args.seed + 1))
        for s, scene in enumerate(sim_lib.SCENES):
            rows = visits.scene == s
            truth[scene] = {arm.name: float(np.average(sim.expected(
                visits.user[rows], arm_policies[arm.name](visits.subset(rows), args.k)).any_click,
                weights=weights[rows])) for arm in config.arms}
    with open(os.path.join(args.out, "truth.json"), "w", encoding="utf-8") as handle:
        json.dump(truth, handle, indent=2)
    print(f"{len(log.visits):,} requests, {int(log.outcome.clicks.sum()):,} clicks;"
          f" wrote {', '.join(sorted(paths))}, truth.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
