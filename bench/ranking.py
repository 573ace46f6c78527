"""Benchmark of the ranking layer, on what a pipeline run pushed (docs/ranking.md).

    python -m bench.ranking --run_dir runs/local [--seconds 20] [--out bench/results/ranking.json]

``--run_dir`` is a ``python -m pipeline.local_runner --output_dir`` of a generated shop. Measured:

* **Click AUC on the held-out impressions** (RankingExampleGen's eval split, the period after the
  time cutoff) of the *pushed* ranking model (``serving/shoprec_ranking/<version>``, its
  ``score_examples`` signature: what TFMA scored), of the logistic regression on the same raw
  features that the same RankingTrainer run trained and exported beside it, of the retrieval
  score alone, and of the true click probability (the ceiling). Also log loss and calibration
  (mean prediction / click rate), and a calibration plot (``ranking_calibration.png``).
* **NDCG@10 per slate** of the held-out impressions (slates with a click; gain = clicked): the
  slate ordered by the retrieval score (retrieval alone) against the same slate re-ordered by the
  pushed ranking model, scored as the service scores (``serving_default``, position 0). Also
  with the true position-0 click probability as the gain (no position bias in the labels).
* **Margins with 95% intervals**: click AUC of the pushed model minus the logistic regression's,
  and per-slate NDCG@10 of retrieval + ranking minus retrieval alone, each by a paired bootstrap
  over slates (500 resamples): the held-out set has a few hundred clicked slates, so a margin
  whose interval holds 0 is noise.
* **``POST /recommend`` latency** at concurrency 8 (home scene, k 10, 200 candidates ranked):
  the model server serving both models (``models.config``, batching as deployed) and the service
  with the ranking model, then the same service without it (``--ranking_model_name ''``), in the
  same run: p50/p99 and QPS of each, and the difference (the cost of the ranking call). Then the
  service with ranking and 2 BLAS threads (``--blas_threads 2``, NumPy's default here) against
  the default of 1.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import portpicker

from bench import recommend
from bench.generate import machine_info, write_report
from serving import model_config
from shoprec import config, features
from shoprec.data import canonical, generate

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BASELINE_DIR = "Format-Baseline-LogisticRegression"  # ranking_trainer_module.BASELINE_DIR
NDCG_K = 10
CALIBRATION_BINS = 20
BOOTSTRAP_REPS = 500


# ---------------------------------------------------------------------------------------------
# The run's artifacts.
# ---------------------------------------------------------------------------------------------
def _latest(pattern: str) -> str:
    """The artifact folder matching ``pattern`` with the highest MLMD id (the newest)."""
    matches = glob.glob(pattern)
    if not matches:
        raise FileNotFoundError(f"nothing matches {pattern}: run the pipeline with the ranking branch first")
    return max(matches, key=lambda path: int(os.path.basename(path)))


def pushed_ranking_model(run_dir: str) -> tuple[str, str]:
    """``(pushed version dir, the RankingTrainer artifact it came from)``; matched by saved_model.pb bytes."""
    base = os.path.join(run_dir, "serving", config.RANKING_MODEL_NAME)
    version = max(os.listdir(base), key=int)
    pushed = os.path.join(base, version)
    with open(os.path.join(pushed, "saved_model.pb"), "rb") as f:
        pushed_bytes = f.read()
    for artifact in sorted(glob.glob(os.path.join(run_dir, "pipeline_root", "RankingTrainer", "model", "*")),
                           key=lambda path: -int(os.path.basename(path))):
        candidate = os.path.join(artifact, "Format-Serving", "saved_model.pb")
        if os.path.exists(candidate):
            with open(candidate, "rb") as f:
                if f.read() == pushed_bytes:
                    return pushed, artifact
    raise FileNotFoundError(f"no RankingTrainer artifact of {run_dir} matches the pushed model {pushed}")


def eval_impressions(run_dir: str) -> tuple[list[bytes], pd.DataFrame]:
    """The serialized held-out ranking examples and their columns (features, labels, extras)."""
    import tensorflow as tf

    examples_dir = _latest(os.path.join(run_dir, "pipeline_root", "RankingExampleGen", "examples", "*"))
    files = sorted(glob.glob(os.path.join(examples_dir, "Split-eval", "*.gz")))
    records = [record.numpy() for record in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    names = [f.name for f in features.RANKING_FEATURES] + list(features.RANKING_LABELS) + [
        features.REQUEST_ID, features.USER_SEGMENT]
    columns: dict[str, list] = {name: [] for name in names}
    for record in records:
        example = tf.train.Example.FromString(record).features.feature
        for name in names:
            kind = example[name].WhichOneof("kind")
            value = getattr(example[name], kind).value[0]
            columns[name].append(value.decode() if isinstance(value, bytes) else value)
    return records, pd.DataFrame(columns)


def true_click_probability(run_dir: str, rows: pd.DataFrame) -> np.ndarray:
    """``[N]`` the generator's true click probability of each held-out impression (slate, item)."""
    data_dir = os.path.join(run_dir, "data")
    impressions = pd.read_csv(os.path.join(data_dir, features.IMPRESSIONS_FILE), dtype=str, keep_default_na=False)
    truth = pd.read_csv(os.path.join(data_dir, features.TRUTH_DIR, generate.IMPRESSION_TRUTH_FILE), dtype={
        features.EVENT_ID: str})
    joined = impressions[[features.EVENT_ID, features.REQUEST_ID, features.ITEM_ID]].merge(truth, on=features.EVENT_ID)
    keyed = joined.set_index([features.REQUEST_ID, features.ITEM_ID])[generate.CLICK_PROBABILITY]
    return keyed.reindex(pd.MultiIndex.from_arrays([rows[features.REQUEST_ID], rows[features.ITEM_ID]])).to_numpy()


# ---------------------------------------------------------------------------------------------
# Metrics.
# ---------------------------------------------------------------------------------------------
def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (ties count half)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities."""
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def slate_ndcgs(slates: np.ndarray, gains: np.ndarray, scores: np.ndarray, k: int = NDCG_K) -> pd.Series:
    """NDCG@k of each slate with a positive gain, its items ordered by ``scores``; indexed by slate.

    Args:
      slates: ``[N]`` slate id of each row.
      gains: ``[N]`` relevance of each row (click label, or a probability).
      scores: ``[N]`` the ordering's score (higher first; ties keep the row order).
    """
    frame = pd.DataFrame({"slate": slates, "gain": gains, "score": scores, "row": np.arange(len(slates))})
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values = {}
    for slate_id, slate in frame.groupby("slate", sort=False):
        ideal = np.sort(slate["gain"].to_numpy())[::-1][:k]
        if ideal.sum() <= 0:
            continue
        ordered = slate.sort_values(["score", "row"], ascending=[False, True])["gain"].to_numpy()[:k]
        values[slate_id] = float((ordered * discounts[:len(ordered)]).sum() / (ideal * discounts[:len(ideal)]).sum())
    return pd.Series(values, dtype=np.float64)


def ndcg_at_k(slates: np.ndarray, gains: np.ndarray, scores: np.ndarray, k: int = NDCG_K) -> float:
    """Mean NDCG@k over slates with a positive gain (:func:`slate_ndcgs`)."""
    return float(slate_ndcgs(slates, gains, scores, k).mean())


def paired_bootstrap(slates: np.ndarray, statistic: Callable[[np.ndarray], float], reps: int = BOOTSTRAP_REPS,
                     seed: int = 0) -> dict[str, float]:
    """95% interval of ``statistic`` (a difference of two orderings on the same rows) over
    resampled slates: the slates are the independent units (a slate's rows share a user and a page).

    Args:
      slates: ``[N]`` slate id of each row.
      statistic: rows ``[M]`` (indices into the N, slates drawn with replacement) -> the difference.
    """
    codes = pd.factorize(slates)[0]
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(codes.max() + 1))
    ends = np.r_[starts[1:], len(codes)]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(reps):
        chosen = rng.integers(0, len(starts), len(starts))
        draws.append(statistic(np.concatenate([order[starts[c]:ends[c]] for c in chosen])))
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"difference": round(statistic(np.arange(len(slates))), 4), "ci95_low": round(float(low), 4),
            "ci95_high": round(float(high), 4), "bootstrap_reps": reps, "unit": "slate"}


def calibration_curve(labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS
                      ) -> list[dict[str, float]]:
    """Equal-count bins: mean prediction and click rate of each."""
    order = np.argsort(probabilities)
    return [{"mean_prediction": float(probabilities[chunk].mean()), "click_rate": float(labels[chunk].mean()),
             "count": int(len(chunk))} for chunk in np.array_split(order, bins) if len(chunk)]


def plot_calibration(curves: dict[str, list[dict[str, float]]], path: str, title: str) -> None:
    """Writes the reliability diagram of each model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 5))
    top = max(max(point["mean_prediction"], point["click_rate"]) for curve in curves.values() for point in curve)
    axis.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, curve in curves.items():
        axis.plot([p["mean_prediction"] for p in curve], [p["click_rate"] for p in curve], marker="o", markersize=3,
                  label=name)
    axis.set_xlabel("mean predicted click probability (bin)")
    axis.set_ylabel("observed click rate (bin)")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------
# The benchmark.
# ---------------------------------------------------------------------------------------------
def _predict(model: object, signature: str, inputs: dict[str, object], batch: int = 4096) -> np.ndarray:
    import tensorflow as tf

    function = model.signatures[signature]  # type: ignore[attr-defined]
    # Lists as object arrays: a fixed-width bytes array ("S") would strip a serialized example's
    # trailing NUL bytes (a last int64 feature of 0), and the example would no longer parse.
    arrays = {name: np.asarray(values, dtype=object) if isinstance(values, list) else np.asarray(values)
              for name, values in inputs.items()}
    size = len(next(iter(arrays.values())))
    out = []
    for start in range(0, size, batch):
        chunk = {name: tf.constant(values[start:start + batch]) for name, values in arrays.items()}
        out.append(function(**chunk)[features.OUTPUT_CLICK_PROBABILITY].numpy())
    return np.concatenate(out).astype(np.float64)


def quality(run_dir: str, plot_path: str) -> dict[str, object]:
    """AUC, log loss, calibration and NDCG@10 on the held-out impressions; writes the plot."""
    import tensorflow as tf

    pushed, trainer_artifact = pushed_ranking_model(run_dir)
    records, rows = eval_impressions(run_dir)
    labels = rows[features.CLICKED].to_numpy(np.float64)
    models = {"dcn_v2 (pushed)": tf.saved_model.load(pushed),
              "logistic_regression": tf.saved_model.load(os.path.join(trainer_artifact, BASELINE_DIR))}
    # As TFMA scored them: the shown position is a feature.
    probabilities = {name: _predict(model, features.SIGNATURE_RANK_EXAMPLES, {"examples": records})
                     for name, model in models.items()}
    truth = true_click_probability(run_dir, rows)
    scores = {**probabilities, "retrieval_score_only": rows[features.RETRIEVAL_SCORE].to_numpy(np.float64),
              "true_click_probability (ceiling)": truth}
    auc_by = {name: round(auc(labels, value), 4) for name, value in scores.items()}
    calibrated = {**probabilities, "true_click_probability (ceiling)": truth}
    calibration = {name: {"log_loss": round(log_loss(labels, value), 4),
                          "calibration": round(float(value.mean() / labels.mean()), 4)}
                   for name, value in calibrated.items()}
    curves = {name: calibration_curve(labels, value) for name, value in probabilities.items()}
    plot_calibration(curves, plot_path, f"held-out impressions ({len(labels):,}, click rate {labels.mean():.3f})")
    # Re-ranking a slate as the service does: every candidate at position 0.
    at_top = {f.name: rows[f.name].to_numpy() for f in features.RANKING_REQUEST_FEATURES}
    at_top[features.POSITION] = np.zeros(len(rows), np.int64)
    at_top[features.RETRIEVAL_SCORE] = at_top[features.RETRIEVAL_SCORE].astype(np.float32)
    reranked = {name: _predict(model, features.SIGNATURE_RANK, at_top) for name, model in models.items()}
    bias = (rows[features.POSITION].to_numpy(np.float64) + 1.0) ** -generate.truth_lib.ProcessParams.position_bias_exponent
    relevance = truth / bias  # the true click probability at position 0
    slates = rows[features.REQUEST_ID].to_numpy()
    orders = {"retrieval alone (retrieval score)": rows[features.RETRIEVAL_SCORE].to_numpy(np.float64),
              **{f"retrieval + ranking ({name})": value for name, value in reranked.items()},
              "logging policy (shown order)": -rows[features.POSITION].to_numpy(np.float64)}
    ndcg = {name: {"clicks": round(ndcg_at_k(slates, labels, value), 4),
                   "true_relevance": round(ndcg_at_k(slates, relevance, value), 4)}
            for name, value in orders.items()}
    # Is the pushed model's margin more than the held-out set's noise? Paired, resampling slates.
    dcn, baseline = probabilities["dcn_v2 (pushed)"], probabilities["logistic_regression"]
    per_slate = {gain: (slate_ndcgs(slates, values, orders["retrieval + ranking (dcn_v2 (pushed))"])
                        - slate_ndcgs(slates, values, orders["retrieval alone (retrieval score)"]))
                 for gain, values in (("clicks", labels), ("true_relevance", relevance))}
    first_row = ~pd.Series(slates).duplicated().to_numpy()  # one row stands for its slate

    def mean_slate_difference(difference: pd.Series) -> Callable[[np.ndarray], float]:
        by_row = difference.reindex(slates).to_numpy()  # NaN on slates without a positive gain
        return lambda rows: float(np.nanmean(by_row[rows[first_row[rows]]]))

    margins = {
        "click_auc_dcn_minus_logistic": paired_bootstrap(
            slates, lambda rows: auc(labels[rows], dcn[rows]) - auc(labels[rows], baseline[rows])),
        **{f"ndcg_at_10_{gain}_ranking_minus_retrieval": paired_bootstrap(slates, mean_slate_difference(difference))
           for gain, difference in per_slate.items()},
    }
    return {
        "pushed_model": pushed,
        "baseline_model": os.path.join(trainer_artifact, BASELINE_DIR),
        "held_out": {"impressions": int(len(labels)), "clicks": int(labels.sum()),
                     "slates": int(pd.Series(slates).nunique()),
                     "slates_with_a_click": int(pd.Series(slates[labels > 0]).nunique())},
        "click_auc": auc_by,
        "calibration": calibration,
        "calibration_curves": curves,
        "ndcg_at_10": ndcg,
        "margins": margins,
        "calibration_plot": os.path.basename(plot_path),  # beside the report
    }


def _models_config(run_dir: str, path: str) -> str:
    return model_config.write_model_config_file(path, {name: os.path.join(run_dir, "serving", name)
                                                       for name in (config.MODEL_NAME, config.RANKING_MODEL_NAME)})


def latency(run_dir: str, seconds: float, concurrency: int, warmup_seconds: float) -> dict[str, object]:
    """``/recommend`` at ``concurrency``: with the ranking model, then without, same model server."""
    import requests

    data_dir = os.path.join(run_dir, "data")
    work = tempfile.mkdtemp(prefix="bench_ranking_")
    grpc_port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    server = [sys.executable, "-m", "serving.model_server",
              f"--model_config_file={_models_config(run_dir, os.path.join(work, 'models.config'))}",
              f"--port={grpc_port}", f"--rest_api_port={rest_port}", "--bind_address=127.0.0.1",
              "--log_level=WARNING", "--enable_batching", f"--batching_parameters_file={recommend.BATCHING_PARAMETERS}"]
    bodies = recommend.request_bodies(data_dir, "home", 10, 5000, seed=0)
    results = {}
    ready = f"http://127.0.0.1:{rest_port}/v1/models/{config.RANKING_MODEL_NAME}"
    with recommend.running(server, os.path.join(work, "model_server.log"), ready, "AVAILABLE"):
        recommend._wait_for(f"http://127.0.0.1:{rest_port}/v1/models/{config.MODEL_NAME}",
                            _NeverExits(), os.path.join(work, "model_server.log"), "AVAILABLE")
        for name, extra in (("retrieval_only", ["--ranking_model_name", ""]), ("with_ranking", []),
                            ("with_ranking_2_blas_threads", ["--blas_threads", "2"])):
            api_port = portpicker.pick_unused_port()
            service = [sys.executable, "-m", "service.app", "--data_dir", data_dir,
                       "--model_url", f"grpc://127.0.0.1:{grpc_port}", "--event_log",
                       os.path.join(work, f"events_{name}.sqlite"), "--port", str(api_port), "--log_level", "WARNING",
                       *extra]
            with recommend.running(service, os.path.join(work, f"service_{name}.log"),
                                   f"http://127.0.0.1:{api_port}/healthz", '"ok"'):
                sample = requests.post(f"http://127.0.0.1:{api_port}/recommend", data=bodies[0],
                                       headers={"Content-Type": "application/json"}, timeout=10).json()
                if name.startswith("with_ranking") and sample.get("ranking_model_version") is None:
                    raise RuntimeError(f"the service did not rank: {sample.get('warnings')}")
                recommend.drive(api_port, bodies, concurrency, warmup_seconds)
                summary = recommend.summarise(recommend.drive(api_port, bodies, concurrency, seconds), concurrency)
                summary["ranking_model_version"] = sample.get("ranking_model_version")
                results[name] = summary
                print(name, json.dumps(summary), flush=True)
    ranked, plain, threaded = results["with_ranking"], results["retrieval_only"], results["with_ranking_2_blas_threads"]
    return {"scene": "home", "k": 10, "candidates_ranked": config.RANKING_CANDIDATES,
            "pool_size": 200, "concurrency": concurrency, "seconds": seconds, "results": results,
            "ranking_cost": {"p50_ms": round(ranked["p50_ms"] - plain["p50_ms"], 2),
                             "p99_ms": round(ranked["p99_ms"] - plain["p99_ms"], 2),
                             "qps_ratio": round(ranked["qps"] / plain["qps"], 3)},
            "blas_threads_1_over_2": {"p99_ratio": round(ranked["p99_ms"] / threaded["p99_ms"], 3),
                                      "qps_ratio": round(ranked["qps"] / threaded["qps"], 3)},
            "note": "model server, service and load generator share the machine's cores"}


class _NeverExits:
    """A stand-in process for :func:`bench.recommend._wait_for` (the server is already watched)."""

    args = "model server"
    returncode = None

    def poll(self) -> None:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ranking", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", default="runs/local", help="a pipeline --output_dir with both models pushed")
    parser.add_argument("--seconds", type=float, default=20.0, help="load per configuration")
    parser.add_argument("--warmup_seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--skip_latency", action="store_true")
    parser.add_argument("--out", default=os.path.join(RESULTS, "ranking.json"))
    args = parser.parse_args(argv)
    run_dir = os.path.abspath(args.run_dir)
    data_dir = os.path.join(run_dir, "data")
    # ranking.json -> ranking_calibration.png, ranking_rerun.json -> ranking_rerun_calibration.png
    plot_path = os.path.splitext(os.path.abspath(args.out))[0] + "_calibration.png"
    report: dict[str, object] = {
        "benchmark": "ranking",
        "machine": machine_info(),
        "scale": {name: len(canonical.read_table(os.path.join(data_dir, file_name)))
                  for name, file_name in (("events", features.EVENTS_FILE), ("items", features.ITEMS_FILE),
                                          ("users", features.USERS_FILE))},
        "run_dir": run_dir,
        "load_average_1m_before": round(os.getloadavg()[0], 2),
        "quality": quality(run_dir, plot_path),
    }
    summary_path = os.path.join(run_dir, "run_summary.json")
    if os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
        report["pipeline"] = {"wall_seconds": summary.get("wall_seconds"),
                              "ranking_tfma_overall": ((summary.get("ranking") or {}).get("evaluation") or {}).get(
                                  "overall")}
    if not args.skip_latency:
        report["latency"] = latency(run_dir, args.seconds, args.concurrency, args.warmup_seconds)
    report["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    write_report(report, args.out)
    print(json.dumps({key: report[key] for key in ("quality",) if key in report}, indent=1)[:3000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
