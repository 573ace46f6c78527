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

Errors are JSON ``{"error": "..."}``: 400 malformed JSON or unknown scene (with the valid scenes),
413 body or batch too large, 422 invalid fields, 503 event log unwritable. See ``docs/service.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Sequence

import fastapi
import uvicorn
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.components import Components, build_components, replay_recent_events
from service.errors import (
    ApiError,
    BodyLimitAndMetrics,
    ErrorResponse,
    error_response,
    validation_message,
)
from service.routes import build_router
from service.settings import build_parser, settings_from_args
from service.strategy.routing import UnknownSceneError

_log = logging.getLogger("service.app")


def create_app(components: Components) -> fastapi.FastAPI:
    """The FastAPI application over built components (see :func:`build_components`)."""
    settings = components.settings
    metrics = components.metrics

    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[None]:
        if components.feature_store.kind == "memory":
            replayed = replay_recent_events(components.event_log, components.feature_store, time.time())
            _log.info("replayed %d recent events from the event log into the in-process feature store", replayed)
        components.gateway.start_polling(settings.model_poll_seconds)
        yield
        components.gateway.close()
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
        return error_response(error.status_code, error.message)

    app.include_router(build_router(components))
    app.add_middleware(BodyLimitAndMetrics, max_body_bytes=settings.max_body_bytes, metrics=metrics)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Builds the service and serves until SIGINT or SIGTERM."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S")
    components = build_components(settings_from_args(args))
    _log.info("catalogue: %d items; routing: %s; feature store: %s; event log: %s",
              len(components.service.catalogue), json.dumps(sorted(components.service.routing.scenes)),
              components.feature_store.kind, args.event_log)
    server = uvicorn.Server(uvicorn.Config(
        create_app(components), host=args.host, port=args.port, log_config=None, log_level="warning",
        access_log=False, http="httptools", loop="uvloop"))
    _log.info("serving on http://%s:%d", args.host, args.port)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
