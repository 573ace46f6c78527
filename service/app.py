"""The recommendation service's HTTP API (FastAPI on uvicorn): the endpoint a shop calls.

==================  ============================================================================
``POST /recommend`` a scene's list for a user: items with score, category, brand, price, the
                    route that produced each and a short reason, the model version, a request id
``POST /events``    one event or ``{"events": [...]}`` (impression, click, cart, purchase), logged
                    durably before the answer, then fed to the online feature store
``GET /healthz``    ``ok`` or ``degraded`` with the problems (always 200 while the process serves)
``GET /metrics``    Prometheus text
``GET /docs``       the OpenAPI UI (``/openapi.json``: the spec)
==================  ============================================================================

Run::

    python -m service.app --data_dir runs/local/data --model_url http://localhost:8501 \\
        [--redis_url redis://localhost:6379/0] [--event_log runs/service/events.sqlite] \\
        [--routing routing.json] [--denylist out_of_stock.txt] --port 8080

Errors are JSON ``{"error": "..."}``: 400 malformed JSON (not UTF-8, nested too deeply) or unknown
scene (with the valid scenes), 401 missing or wrong API key, 404 unknown path, 405 wrong method,
413 body or batch too large, 422 invalid fields, 429 rate limit (with ``Retry-After``), 503 event
log unwritable. See ``docs/service.md`` and ``docs/security.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from service.settings import (
    ENDPOINTS,
    LOOPBACK_HOSTS,
    ServiceSettings,
    build_parser,
    settings_from_args,
)

if TYPE_CHECKING:
    import fastapi

    from service.components import Components

# The web framework, the strategy layer and the model client are imported inside create_app and
# main, so that `python -m service.app --help` answers at once.

_log = logging.getLogger("service.app")


def create_app(components: Components) -> fastapi.FastAPI:
    """The FastAPI application over built components (see :func:`service.components.build_components`)."""
    import fastapi
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from service.components import replay_recent_events, retrieval_gateway
    from service.errors import (
        ApiError,
        BodyLimitAndMetrics,
        ErrorResponse,
        error_response,
        validation_message,
    )
    from service.experiments import build_live_experiments
    from service.routes import build_router
    from service.strategy.routing import UnknownSceneError
    from shoprec import features

    settings = components.settings
    metrics = components.metrics
    experiments = build_live_experiments(
        settings.experiments, components.service,
        new_gateway=lambda name: retrieval_gateway(settings, components.service.catalogue, name))
    gateways = [components.gateway, *([components.ranking_gateway] if components.ranking_gateway else []),
                *(experiments.gateways if experiments is not None else ())]

    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[None]:
        if components.feature_store.kind == "memory":
            replayed = replay_recent_events(components.event_log, components.feature_store, time.time())
            _log.info("replayed %d recent events from the event log into the in-process feature store", replayed)
        if experiments is not None and experiments.allocations():
            rebuilt = experiments.replay(components.event_log.exposures(),
                                         ((event.request_id, event.event_type) for event in
                                          components.event_log.events(event_type=features.CLICK)))
            _log.info("bandits rebuilt from the event log: %d trials, %d rewarded, %d exposures of arms or scenes "
                      "no longer in the experiment skipped", rebuilt.trials, rebuilt.rewards, rebuilt.skipped)
        for gateway in gateways:
            gateway.start_polling(settings.model_poll_seconds)
        yield
        for gateway in gateways:
            gateway.close()
        components.feature_store.close()
        components.event_log.close()

    app = fastapi.FastAPI(
        title="shoprec recommendation service",
        version="1.0",
        description=__doc__.split("\n\n")[0],
        lifespan=lifespan,
        responses={422: {"model": ErrorResponse}},
    )

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: fastapi.Request, error: RequestValidationError) -> JSONResponse:
        status_code, message = validation_message(error.errors())
        return error_response(status_code, message)

    @app.exception_handler(UnknownSceneError)
    async def on_unknown_scene(request: fastapi.Request, error: UnknownSceneError) -> JSONResponse:
        return error_response(400, str(error), valid_scenes=error.valid)

    @app.exception_handler(ApiError)
    async def on_api_error(request: fastapi.Request, error: ApiError) -> JSONResponse:
        return error_response(error.status_code, error.message, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: fastapi.Request, error: StarletteHTTPException) -> fastapi.Response:
        # Starlette's own answers: 404 unknown path, 405 wrong method (with Allow), body parse errors.
        if error.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}; endpoints: {', '.join(ENDPOINTS)}"
        elif error.status_code == 405:
            allowed = (error.headers or {}).get("Allow", "")
            message = f"method {request.method} not allowed on {request.url.path}" + (
                f"; allowed: {allowed}" if allowed else "")
        else:
            message = f"{request.method} {request.url.path}: {error.detail}"
        return error_response(error.status_code, message, headers=error.headers)

    app.include_router(build_router(components, experiments))
    app.add_middleware(BodyLimitAndMetrics, max_body_bytes=settings.max_body_bytes, metrics=metrics)
    return app


def check_exposure(settings: ServiceSettings) -> str:
    """The start-up line about who may write, or an error when the service would be exposed.

    Raises:
      SystemExit: keyless on a non-loopback address without ``--allow_unauthenticated``.
    """
    loopback = settings.host in LOOPBACK_HOSTS
    if settings.auth_required:
        return (f"POST /events requires an API key ({len(settings.api_keys)} configured); "
                f"{settings.rate_limit_per_second:g} writes/s per key, burst {settings.rate_limit_burst}")
    if loopback:
        return (f"no API key configured: POST /events accepts any local client; listening on loopback "
                f"{settings.host} only (configure --api_key_file or $SHOPREC_API_KEYS before exposing it)")
    if not settings.allow_unauthenticated:
        raise SystemExit(f"refusing to listen on {settings.host} without an API key: anyone who reaches the "
                         f"port could write training data. Configure --api_key_file or $SHOPREC_API_KEYS, "
                         f"listen on 127.0.0.1, or pass --allow_unauthenticated (see docs/security.md)")
    return (f"WARNING: no API key configured and listening on {settings.host}: ANY client that reaches "
            f"this port can post events (training data); --allow_unauthenticated was given")


def limit_blas_threads(threads: int) -> str:
    """Limits the process's BLAS libraries to ``threads`` threads; returns what they report after.

    The service's NumPy products are small (the ranking stage's retrieval scores are 200
    candidates x 64 dimensions): BLAS threads on them synchronise across the cores that the
    requests and the model server need. bench/ranking.py measured ``/recommend`` with ranking at
    concurrency 8 with 1 and with 2 threads in one run (docs/ranking.md).
    """
    import numpy  # noqa: F401  (loads its BLAS library first: the limit applies to loaded libraries)
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(threads, user_api="blas")
    pools = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    return ", ".join(f"{pool['internal_api']} {pool['num_threads']} thread(s)" for pool in pools) or "none loaded"


def main(argv: Sequence[str] | None = None) -> int:
    """Builds the service and serves until SIGINT or SIGTERM."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S")
    try:
        settings = settings_from_args(args)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err
    import uvicorn

    from experiments.config import ExperimentConfigError
    from service.components import build_components
    from service.experiments import load_experiment_configs

    try:  # a malformed experiment file stops the start at once, naming the file and the field
        configs = load_experiment_configs(settings.experiments)
    except ExperimentConfigError as err:
        raise SystemExit(f"error: {err}") from err

    exposure = check_exposure(settings)
    if exposure.startswith("WARNING"):
        _log.warning(exposure)
    else:
        _log.info(exposure)
    _log.info("BLAS: %s", limit_blas_threads(settings.blas_threads))
    components = build_components(settings)
    _log.info("catalogue: %d items; routing: %s; feature store: %s; event log: %s %s (%s)",
              len(components.service.catalogue), json.dumps(sorted(components.service.routing.scenes)),
              components.feature_store.kind, components.event_log.kind, components.event_log.location,
              components.event_log.durability())
    try:
        app = create_app(components)
    except ExperimentConfigError as err:  # e.g. an arm's routing table, a scene the table lacks
        raise SystemExit(f"error: {err}") from err
    if configs:
        _log.info("experiments: %s", "; ".join(f"{config.name} ({config.allocation}, arms "
                                              f"{', '.join(config.arm_names)}; {config.source})" for config in configs))
    server = uvicorn.Server(uvicorn.Config(
        app, host=args.host, port=args.port, log_config=None, log_level="warning",
        access_log=False, http="httptools", loop="uvloop"))
    _log.info("serving on http://%s:%d", args.host, args.port)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
