"""Cap the request body of `mlflow models serve` before MLflow reads and parses it (HTTP 413).

MLflow 3.17's scoring server (mlflow/pyfunc/scoring_server) reads a whole body with
`await request.body()` and parses it before the model sees a row, and it has no size setting:
its only knob is MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT, and uvicorn, which runs it, has none
either. Starlette, which FastAPI is built on, ships the limit (`RequestBodyLimitMiddleware`);
what is missing is a way in. The server builds its app as
`scoring_server.init(load_model(...))`: the pyfunc's `load_context` runs first, and `init`
imports `fastapi.FastAPI` when it runs. So `load_context` calls `cap_scoring_server_body`,
which swaps `fastapi.FastAPI` for a subclass that adds the cap to the one app built next and
puts the original class back at once.

A body whose Content-Length is over the cap gets a JSON 413 naming the limit without a byte
of it being read; a body without a length (chunked) is cut off at the same limit by
Starlette's middleware, whose 413 gets the same JSON message.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

# Set by `mlflow models serve` (mlflow.pyfunc.scoring_server._SERVER_MODEL_PATH) for the
# uvicorn process it starts; absent when a model is loaded anywhere else.
SCORING_SERVER_ENV = "__pyfunc_model_path__"


class RequestBodyCap:
    """ASGI middleware: refuse request bodies over `max_bytes` with HTTP 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.app = RequestBodyLimitMiddleware(app, max_body_size=max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _declared_length(scope) if scope["type"] == "http" else None
        if declared is not None and declared > self.max_bytes:
            await too_large(self.max_bytes, declared)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def too_large(max_bytes: int, declared: int | None = None) -> JSONResponse:
    """The 413 answer, in MLflow's error format, naming the limit and where it comes from."""
    size = "" if declared is None else f"of {declared} bytes "
    message = (
        f"request body {size}exceeds the limit of {max_bytes} bytes (register.max_batch_rows "
        "x register.max_input_chars, as JSON); send fewer or shorter rows per request"
    )
    return JSONResponse(
        {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": message}, status_code=413
    )


def _declared_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    return int(value) if value is not None and value.isdigit() else None


def cap_scoring_server_body(max_bytes: int) -> bool:
    """Inside `mlflow models serve`, make the app it builds next refuse bodies over `max_bytes`.

    Returns False (and changes nothing) in any other process: `mt translate`, tests, notebooks.
    """
    if SCORING_SERVER_ENV not in os.environ:
        return False
    import fastapi

    original = fastapi.FastAPI

    class CappedFastAPI(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # Only the scoring server's own app gets the cap.
            fastapi.FastAPI = original  # type: ignore[misc]
            super().__init__(*args, **kwargs)
            self.add_middleware(RequestBodyCap, max_bytes=max_bytes)
            # A chunked body over the cap surfaces inside the app as Starlette's HTTP 413.
            self.add_exception_handler(413, lambda _request, _error: too_large(max_bytes))
            log.info("request bodies over %d bytes are refused with HTTP 413", max_bytes)

    fastapi.FastAPI = CappedFastAPI  # type: ignore[misc]
    return True
