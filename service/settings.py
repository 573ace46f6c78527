"""The service's settings: one dataclass, filled from the command line (``build_parser``)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping

from service.feature_store import StoreSettings
from shoprec import config

MAX_K = 100
MAX_CART_ITEMS = 100
MAX_EXCLUDE_IDS = 1000
DEFAULT_MAX_BATCH_EVENTS = 1000
DEFAULT_MAX_BODY_BYTES = 1 << 20
MAX_ID_CHARS = 128
MAX_TIMESTAMP = 4_102_444_800  # 2100-01-01T00:00:00Z, Unix seconds: the schema's upper bound too
DEFAULT_MAX_FUTURE_SKEW_SECONDS = 24 * 3600
ENDPOINTS = ("/recommend", "/events", "/healthz", "/metrics")
API_KEY_ENV = "SHOPREC_API_KEYS"  # comma-separated API keys (alternative to --api_key_file)
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
EXPERIMENTS_ENV = "SHOPREC_EXPERIMENTS"  # experiment file or folder (alternative to --experiments)


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """Everything the service is configured with (the command line fills it)."""

    data_dir: str
    model_url: str = "http://localhost:8501"
    model_name: str = config.MODEL_NAME
    ranking_model_name: str = config.RANKING_MODEL_NAME  # "": no ranking model (retrieval order)
    ranking_model_url: str | None = None  # None: the retrieval model's server (model_url)
    ranking_candidates: int = config.RANKING_CANDIDATES
    redis_url: str | None = None
    event_log: str = "runs/service/events.sqlite"
    routing_file: str | None = None
    denylist_file: str | None = None
    history_length: int = config.SplitConfig.history_length
    store: StoreSettings = StoreSettings()
    model_poll_seconds: float = 10.0
    model_timeout_seconds: float = 0.5
    max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_future_skew_seconds: int = DEFAULT_MAX_FUTURE_SKEW_SECONDS
    host: str = "127.0.0.1"
    api_keys: tuple[str, ...] = ()
    rate_limit_per_second: float = 200.0
    rate_limit_burst: int = 400
    allow_unauthenticated: bool = False
    experiments: str | None = None
    # Requests are the service's concurrency: BLAS threads on its small products (200 candidates x
    # 64 dimensions) only wait on each other beside the model server (docs/service.md).
    blas_threads: int = 1

    @property
    def auth_required(self) -> bool:
        """Whether writes need an API key."""
        return bool(self.api_keys)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    defaults = ServiceSettings(data_dir="")
    parser = argparse.ArgumentParser(
        prog="python -m service.app",
        description="The shoprec recommendation service: POST /recommend, POST /events, GET /healthz, "
                    "GET /metrics, OpenAPI at /docs and /openapi.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", required=True,
                        help="the shop's canonical files (items.csv, events.csv) the model was trained on")
    parser.add_argument("--model_url", default=defaults.model_url,
                        help="TF Serving (or python -m serving.model_server): http://host:port (REST) "
                             "or grpc://host:port")
    parser.add_argument("--model_name", default=defaults.model_name, help="the served model's name")
    parser.add_argument("--ranking_model_name", default=defaults.ranking_model_name,
                        help="the ranking model's name on the model server; empty: keep the retrieval order")
    parser.add_argument("--ranking_model_url", default=None,
                        help="the ranking model's server, if not --model_url's")
    parser.add_argument("--ranking_candidates", type=int, default=defaults.ranking_candidates,
                        help="candidates sent to the ranking model per request")
    parser.add_argument("--redis_url", default=None,
                        help="online feature store, e.g. redis://localhost:6379/0; default: in-process store")
    parser.add_argument("--event_log", default=defaults.event_log,
                        help="durable event log: a SQLite file, or redis://host:port/db for Redis Streams "
                             "(the server must run with appendonly yes, appendfsync always)")
    parser.add_argument("--routing", default=None, help="routing table (JSON); default: the built-in table")
    parser.add_argument("--denylist", default=None, help="item ids never to recommend, one per line "
                                                         "(re-read when it changes)")
    parser.add_argument("--host", default=defaults.host,
                        help="address to listen on; a non-loopback address needs an API key (or "
                             "--allow_unauthenticated)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--history_length", type=int, default=defaults.history_length,
                        help="items passed to the user tower")
    parser.add_argument("--recent_events", type=int, default=defaults.store.history_length,
                        help="recent events kept per user in the feature store")
    parser.add_argument("--session_ttl_seconds", type=int, default=defaults.store.session_ttl_seconds,
                        help="recent events expire this long after the user's last event")
    parser.add_argument("--purchase_ttl_seconds", type=int, default=defaults.store.purchase_ttl_seconds,
                        help="live purchases expire from the feature store after this long")
    parser.add_argument("--model_poll_seconds", type=float, default=defaults.model_poll_seconds,
                        help="how often to look for a new model version")
    parser.add_argument("--model_timeout_seconds", type=float, default=defaults.model_timeout_seconds,
                        help="deadline of each model server request")
    parser.add_argument("--max_batch_events", type=int, default=defaults.max_batch_events,
                        help="most events per POST /events")
    parser.add_argument("--max_body_bytes", type=int, default=defaults.max_body_bytes,
                        help="largest request body")
    parser.add_argument("--max_future_skew_seconds", type=int, default=defaults.max_future_skew_seconds,
                        help="how far in the future an event's timestamp may lie")
    parser.add_argument("--api_key_file", default=None,
                        help=f"file of API keys, one per line ('#' comments); POST /events then needs "
                             f"'Authorization: Bearer <key>'. Alternatively ${API_KEY_ENV} (comma-separated)")
    parser.add_argument("--rate_limit_per_second", type=float, default=defaults.rate_limit_per_second,
                        help="authenticated writes per second per API key (per client address when keyless)")
    parser.add_argument("--rate_limit_burst", type=int, default=defaults.rate_limit_burst,
                        help="writes a key may make at once before the rate limit applies")
    parser.add_argument("--allow_unauthenticated", action="store_true",
                        help="serve writes without an API key on a non-loopback address (not recommended)")
    parser.add_argument("--experiments", default=None,
                        help=f"an experiment file or a folder of them (*.yaml, *.yml, *.json; see "
                             f"docs/experiments.md): /recommend then assigns arms and logs exposures. "
                             f"Alternatively ${EXPERIMENTS_ENV}")
    parser.add_argument("--blas_threads", type=int, default=defaults.blas_threads,
                        help="BLAS (NumPy) threads of the process; requests are the concurrency, and more "
                             "threads on the service's small products wait on each other")
    parser.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServiceSettings:
    """ServiceSettings from parsed flags (and the API keys from ``$SHOPREC_API_KEYS``).

    Raises:
      OSError: the API key file cannot be read.
      ValueError: the API key file holds no key, or ``--blas_threads`` is below 1.
    """
    from service.auth import load_api_keys

    if args.blas_threads < 1:
        raise ValueError(f"--blas_threads must be >= 1, got {args.blas_threads}")
    return ServiceSettings(
        data_dir=args.data_dir, model_url=args.model_url, model_name=args.model_name, redis_url=args.redis_url,
        event_log=args.event_log, routing_file=args.routing, denylist_file=args.denylist,
        history_length=args.history_length,
        store=StoreSettings(history_length=args.recent_events, session_ttl_seconds=args.session_ttl_seconds,
                            purchase_ttl_seconds=args.purchase_ttl_seconds),
        model_poll_seconds=args.model_poll_seconds, model_timeout_seconds=args.model_timeout_seconds,
        max_batch_events=args.max_batch_events, max_body_bytes=args.max_body_bytes,
        max_future_skew_seconds=args.max_future_skew_seconds, host=args.host,
        api_keys=load_api_keys(args.api_key_file, os.environ if environ is None else environ),
        rate_limit_per_second=args.rate_limit_per_second, rate_limit_burst=args.rate_limit_burst,
        allow_unauthenticated=args.allow_unauthenticated, ranking_model_name=args.ranking_model_name,
        ranking_model_url=args.ranking_model_url, ranking_candidates=args.ranking_candidates,
        experiments=args.experiments or (os.environ if environ is None else environ).get(EXPERIMENTS_ENV) or None,
        blas_threads=args.blas_threads)
