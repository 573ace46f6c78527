"""A/A and A/B experiments end to end through the real HTTP service, analysed from its own log.

    python -m bench.experiments_http --run_dir RUN [--experiment FILE ...] \\
        [--periods 3 --visits-per-period 3000] [--out bench/results/experiments_http.json]

``RUN`` is a ``python -m pipeline.local_runner`` output folder: its generated shop (``data/``,
whose hidden ``truth/`` drives the simulated users) and its pushed model (``serving/``). Per
experiment file (default: ``experiments/examples/home_aa.json`` and
``experiments/examples/home_model_vs_popularity.yaml``):

1. ``python -m serving.model_server`` serves the pushed model (once, for every experiment);
2. ``python -m service.app --experiments FILE`` starts over gRPC with a fresh SQLite event log;
3. simulated users (``experiments.simulator`` over the shop's truth) visit the experiment's
   scenes, call ``POST /recommend``, react to the slate by the click model and post their
   impressions, clicks, carts and purchases with the request id to ``POST /events``;
4. the service stops; ``python -m service.event_log export`` writes the log (events, the
   exposures the service logged, every event with its request id) beside the shop's files;
5. ``python -m experiments.analyze FILE --events EXPORT`` analyses the service's own log; the
   verdict is checked against the truth: each arm's true expected CTR of the slates it served.

Writes the JSON (machine, command, commit, scale, verdicts, truth) and copies each report's
PNG and markdown next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
DEFAULT_OUT = os.path.join(RESULTS, "experiments_http.json")
DEFAULT_EXPERIMENTS = (os.path.join("experiments", "examples", "home_aa.json"),
                       os.path.join("experiments", "examples", "home_model_vs_popularity.yaml"))
START_TIMEOUT_S = 240


def _free_port() -> int:
    import portpicker

    return portpicker.pick_unused_port()


def _start(args: list[str], log_path: str, ready_url: str, ready_text: str = "") -> subprocess.Popen:
    """Starts ``python <args>`` from the repository root; returns once ``ready_url`` answers."""
    import requests

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{args} exited with {process.returncode}; see {log_path}")
        try:
            reply = requests.get(ready_url, timeout=2)
            if reply.status_code == 200 and ready_text in reply.text:
                return process
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    _stop(process)
    raise RuntimeError(f"{args} did not become ready in {START_TIMEOUT_S} s; see {log_path}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(url: str) -> None:
    import requests

    deadline = time.monotonic() + START_TIMEOUT_S
    while requests.get(url + "/healthz", timeout=5).json()["status"] != "ok":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never became healthy")
        time.sleep(0.3)


def run_experiment(experiment_file: str, run_dir: str, model_url: str, work_dir: str, periods: int,
                   visits_per_period: int, seed: int) -> dict[str, object]:
    """One experiment through the service; its verdict from the service's log and its truth."""
    import numpy as np

    from experiments import analysis, analyze, traffic
    from experiments import simulator as sim_lib
    from experiments.config import load_experiment
    from experiments.http_backend import HttpBackend
    from service.event_log import export

    config = load_experiment(experiment_file)
    data_dir = os.path.join(run_dir, "data")
    os.makedirs(work_dir, exist_ok=True)
    event_log = os.path.join(work_dir, "events.sqlite")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    service = _start(["-m", "service.app", "--data_dir", data_dir, "--model_url", model_url,
                      "--event_log", event_log, "--experiments", experiment_file, "--port", str(port)],
                     os.path.join(work_dir, "service.log"), url + "/healthz")
    try:
        _wait_healthy(url)
        sim = sim_lib.ShopSimulator.from_shop_dir(data_dir, drift_rate=0.01)
        if config.scenes:  # visit only the experiment's scenes
            sim.scene_weights = np.where(np.isin(sim_lib.SCENES, config.scenes), sim.scene_weights, 0.0)
            sim.scene_weights /= sim.scene_weights.sum()
        rng = np.random.default_rng(seed)
        began = time.perf_counter()
        log = traffic.run_traffic(sim, HttpBackend(sim, url), rng, [visits_per_period] * periods,
                                  k=10, send_events=True)
        seconds = time.perf_counter() - began
    finally:
        _stop(service)
    export_dir = os.path.join(work_dir, "export")
    summary = export(event_log, export_dir, base_data_dir=data_dir)
    report_dir = os.path.join(work_dir, "report")
    command = [sys.executable, "-m", "experiments.analyze", experiment_file, "--events", export_dir,
               "--out", report_dir]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if completed.returncode not in (0, 2):
        raise RuntimeError(f"experiments.analyze failed:\n{completed.stdout}\n{completed.stderr}")
    # The same analysis in process, for the figures of the JSON.
    requests_frame = analyze.load_requests(config, export_dir)
    metrics, mixed = analysis.per_user_metrics(
        requests_frame["user_id"].to_numpy(), requests_frame["arm"].to_numpy(),
        requests_frame["impressions"].to_numpy(), requests_frame["clicks"].to_numpy(),
        requests_frame["purchases"].to_numpy(), requests_frame["revenue"].to_numpy(), config.arm_names)
    bandit = config.allocation != "fixed"  # adaptive: the CLI's report (adaptive SRM) is its analysis
    verdict = None if bandit else analysis.analyze(config, metrics, mixed)
    shown = (log.served.slates != sim_lib.NO_ITEM).sum(axis=1)
    truth = {}
    client_counts = {}
    for arm in config.arm_names:
        rows = log.served.arm == arm
        truth[arm] = float(log.expected[rows].sum() / max(shown[rows].sum(), 1))
        client_counts[arm] = {"requests": int(rows.sum()), "impressions": int(shown[rows].sum()),
                              "clicks": int(log.outcome.clicks[rows].sum())}
    logged_counts = {arm: {"requests": int((group := requests_frame[requests_frame["arm"] == arm]).shape[0]),
                           "impressions": int(group["impressions"].sum()), "clicks": int(group["clicks"].sum())}
                     for arm in config.arm_names}
    comparisons = [{"arm": c.arm, "metric": c.metric, "role": c.role, "difference": c.result.difference,
                    "ci95": [c.result.ci_low, c.result.ci_high], "relative_lift": c.result.relative_lift,
                    "relative_ci95": [c.result.relative_ci_low, c.result.relative_ci_high],
                    "p_value": c.result.p_value, "holm_p": c.adjusted_p,
                    "ci_excludes_0": bool(c.result.ci_low > 0 or c.result.ci_high < 0)}
                   for c in (verdict.comparisons if verdict is not None else ())]
    treatment = config.arm_names[1]
    true_difference = truth[treatment] - truth[config.control.name]
    primary = verdict.primary(treatment) if verdict is not None and verdict.comparisons else None
    result: dict[str, object] = {
        "experiment": config.name, "file": os.path.relpath(experiment_file, REPO),
        "arms": {arm.name: f"{arm.kind}:{arm.value}" for arm in config.arms},
        "scale": {"requests": len(log.visits), "users": int(np.unique(log.visits.user).size),
                  "shop_users": sim.truth.n_users, "shop_items": sim.truth.n_items,
                  "impressions": int(shown.sum()), "clicks": int(log.outcome.clicks.sum()),
                  "purchases": int(log.outcome.purchases.sum()), "logged_events": summary["logged_events"],
                  "logged_exposures": summary.get("exposures", 0), "periods": periods,
                  "visits_per_period": visits_per_period, "slate_k": 10},
        "simulation_seconds": round(seconds, 1),
        "requests_per_second": round(len(log.visits) / seconds, 1),
        "analyze_command": " ".join(["python", *command[1:]]).replace(work_dir, "<work>"),
        "analyze_output": completed.stdout.strip().replace(work_dir, "<work>"),
        "status": verdict.status if verdict else "bandit", "message": verdict.message if verdict else "",
        "srm_p": verdict.srm.p_value if verdict else None,
        "users_per_arm": dict(verdict.users) if verdict else None,
        "mixed_users": verdict.mixed_users if verdict else None,
        "comparisons": comparisons,
        "true_expected_ctr_of_served_slates": truth,
        "true_ctr_difference": true_difference,
        "client_side_counts": client_counts, "service_log_counts": logged_counts,
        "service_log_matches_client": client_counts == logged_counts,
    }
    if bandit:
        order = requests_frame.sort_values("timestamp", kind="stable")
        thirds = np.array_split(order, 3)
        result["bandit"] = {
            "share_of_requests_per_arm_by_third": [part["arm"].value_counts(normalize=True).reindex(
                list(config.arm_names), fill_value=0.0).round(4).to_dict() for part in thirds],
            "mean_logged_propensity_by_third": [round(float(part["propensity"].mean()), 4) for part in thirds],
            "best_arm_by_truth": max(truth, key=truth.get),
            "note": "per-arm comparisons of bandit traffic are descriptive (adaptive allocation)",
        }
    if primary is not None and not bandit:
        result["verdict_agrees_with_truth"] = bool(
            (primary.adjusted_p < config.alpha and np.sign(primary.result.difference) == np.sign(true_difference))
            or (primary.adjusted_p >= config.alpha and primary.result.ci_low <= true_difference
                <= primary.result.ci_high))
        result["true_difference_in_ci"] = bool(primary.result.ci_low <= true_difference <= primary.result.ci_high)
    for name in os.listdir(report_dir):
        if name.endswith(".png"):
            shutil.copy(os.path.join(report_dir, name), os.path.join(RESULTS, f"experiments_http_{name}"))
        elif name.endswith(".md"):  # its images are copied under the prefix too
            with open(os.path.join(report_dir, name), encoding="utf-8") as handle:
                text = re.sub(r"\]\(([^)/]+\.png)\)", r"](experiments_http_\1)", handle.read())
            with open(os.path.join(RESULTS, f"experiments_http_{name}"), "w", encoding="utf-8") as handle:
                handle.write(text)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Runs every experiment; returns 0."""
    parser = argparse.ArgumentParser(prog="python -m bench.experiments_http", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, help="a pipeline output folder (data/ with truth/, serving/)")
    parser.add_argument("--experiment", action="append", default=None,
                        help=f"experiment file, repeatable (default: {', '.join(DEFAULT_EXPERIMENTS)})")
    parser.add_argument("--periods", type=int, default=3, help="simulated days")
    parser.add_argument("--visits-per-period", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--pipeline_command", default="",
                        help="the command that made --run_dir, recorded with the results")
    args = parser.parse_args(argv)

    from bench.experiments import _commit
    from bench.generate import machine_info, write_report
    from shoprec import config as shop_config

    commit = _commit()  # the code that runs (HEAD may move on while it does)
    experiments = [os.path.abspath(path) for path in (args.experiment or DEFAULT_EXPERIMENTS)]
    run_dir = os.path.abspath(args.run_dir)
    work = tempfile.mkdtemp(prefix="experiments_http-")
    grpc_port, rest_port = _free_port(), _free_port()
    model_base = os.path.join(run_dir, "serving", shop_config.MODEL_NAME)
    began = time.perf_counter()
    model_server = _start(["-m", "serving.model_server", f"--model_name={shop_config.MODEL_NAME}",
                           f"--model_base_path={model_base}", f"--port={grpc_port}",
                           f"--rest_api_port={rest_port}", "--bind_address=127.0.0.1"],
                          os.path.join(work, "model_server.log"),
                          f"http://127.0.0.1:{rest_port}/v1/models/{shop_config.MODEL_NAME}", "AVAILABLE")
    results = []
    try:
        for index, path in enumerate(experiments):
            results.append(run_experiment(path, run_dir, f"grpc://127.0.0.1:{grpc_port}",
                                          os.path.join(work, f"experiment{index}"), args.periods,
                                          args.visits_per_period, args.seed + index))
            print(f"{results[-1]['experiment']}: {results[-1]['status']}; {results[-1]['message']}; "
                  f"truth {results[-1]['true_expected_ctr_of_served_slates']}", flush=True)
    finally:
        _stop(model_server)
    with open(os.path.join(run_dir, "run_summary.json"), encoding="utf-8") as handle:
        run_summary = json.load(handle)
    with open(os.path.join(run_dir, "data", "shop_config.json"), encoding="utf-8") as handle:
        shop = json.load(handle)
    report = {
        "benchmark": "experiments end to end through the HTTP service, analysed from its own event log (issue 15)",
        "command": "python -m bench.experiments_http " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": commit,
        "machine": machine_info(),
        "shop": shop,
        "model": {"run_dir": run_dir, "pushed_version": run_summary.get("pushed_version"),
                  "blessed": run_summary.get("blessed"), "pipeline_command": args.pipeline_command,
                  "offline_metrics": run_summary.get("metrics")},
        "total_seconds": round(time.perf_counter() - began, 1),
        "experiments": results,
        "work_dir": work,
    }
    write_report(report, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
