"""`mt serve`'s HTTP app: MLflow's scoring protocol, batched, following `@champion`.

Endpoints:
- `POST /invocations`: MLflow's request formats (`dataframe_split`, `dataframe_records`,
  `inputs`, `instances`, optional `params.beam_size`) and its answer,
  `{"predictions": [{"translation": ...}, ...]}`, so clients of `mlflow models serve` work
  unchanged. Each answer names the version that produced it: headers `X-Model-Version` (the
  registry version; absent for a model outside the registry) and `X-Model-Uri`.
- `GET /ping`: 200 once a model is loaded (it is, before the server listens).
- `GET /model`: JSON of the model serving now and the alias followed.
- `GET /metrics`: Prometheus text (serving_metrics.py).

Requests are checked against the serving model's limits before they queue (the same checks and
messages as the pyfunc's, pipeline/serving.py), bodies are capped before they are read
(serving_body_cap.py), and a request the model does not answer within `request_timeout_s`
gets 504. A bad request is a 400 with a one-line message, never a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from mlflow.exceptions import MlflowException
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pipeline.serving import (
    BEAM_SIZE_PARAM,
    TRANSLATION_COLUMN,
    request_work,
    requested_beam_size,
    texts_from_input,
)
from pipeline.serving_batch import BatchLimits, RequestBatcher
from pipeline.serving_body_cap import RequestBodyCap, too_large
from pipeline.serving_follow import AliasFollower, ModelSlot, ServedModel
from pipeline.serving_metrics import CONTENT_TYPE, ServingMetrics

log = logging.getLogger(__name__)

INPUT_FORMATS = ("dataframe_split", "dataframe_records", "inputs", "instances")
VERSION_HEADER = "X-Model-Version"
URI_HEADER = "X-Model-Uri"


class BadRequest(Exception):
    """A request the server refuses with HTTP 400 and this message."""


@dataclass(frozen=True)
class ServerSettings:
    """How the server batches and how long a request may wait for its answer."""

    batch_window_s: float
    batching: bool = True
    request_timeout_s: float = 60.0


@dataclass
class Serving:
    """Everything the endpoints share: the slot, the batcher, the follower, the metrics."""

    slot: ModelSlot
    batcher: RequestBatcher[ServedModel]
    metrics: ServingMetrics
    follower: AliasFollower | None
    followed_uri: str | None
    settings: ServerSettings


@dataclass(frozen=True)
class Following:
    """The alias to follow: `uri` (models:/NAME@ALIAS) in the store at `store_uri`."""

    store_uri: str
    uri: str
    poll_s: float


def build_serving(
    model: ServedModel, settings: ServerSettings, following: Following | None = None
) -> Serving:
    """The slot holding `model`, a batcher bounded by its limits, and the follower (if any)."""
    slot, metrics = ModelSlot(model), ServingMetrics()
    metrics.serving(model)
    limits = BatchLimits(
        max_rows=model.limits.max_batch_rows,
        max_work=model.limits.max_request_work,
        window_s=settings.batch_window_s if settings.batching else 0.0,
        max_requests=1_000_000 if settings.batching else 1,
    )
    batcher = RequestBatcher(
        slot.current, lambda served, texts, beam: served.predict(texts, beam), limits,
        on_batch=metrics.batch,
    )  # fmt: skip
    follower = None
    if following is not None:
        follower = AliasFollower(
            following.store_uri, following.uri, slot, following.poll_s,
            on_switch=metrics.serving, on_failure=metrics.refused,
        )  # fmt: skip
    followed = following.uri if following is not None else None
    return Serving(slot, batcher, metrics, follower, followed, settings)


def build_app(serving: Serving) -> Any:
    """The ASGI app: routes, the body cap, and the batcher/follower threads as its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        serving.batcher.start()
        if serving.follower is not None:
            serving.follower.start()
        try:
            yield
        finally:
            if serving.follower is not None:
                serving.follower.stop()
            serving.batcher.stop()

    max_bytes = serving.slot.current().limits.max_request_bytes
    app = Starlette(
        routes=[
            Route("/invocations", _invocations_endpoint(serving), methods=["POST"]),
            Route("/ping", _ping, methods=["GET"]),
            Route("/model", _model_endpoint(serving), methods=["GET"]),
            Route("/metrics", _metrics_endpoint(serving), methods=["GET"]),
        ],
        lifespan=lifespan,
        # A chunked body over the cap surfaces inside the app as Starlette's HTTP 413.
        exception_handlers={413: lambda _request, _error: too_large(max_bytes)},
    )
    return RequestBodyCap(app, max_bytes)


async def _ping(_request: Request) -> Response:
    return PlainTextResponse("\n")


def _model_endpoint(serving: Serving) -> Any:
    async def model(_request: Request) -> Response:
        served = serving.slot.current()
        return JSONResponse(
            {"uri": served.uri, "version": served.version, "follows": serving.followed_uri}
        )

    return model


def _metrics_endpoint(serving: Serving) -> Any:
    async def metrics(_request: Request) -> Response:
        return Response(serving.metrics.exposition(), media_type=CONTENT_TYPE)

    return metrics


def _invocations_endpoint(serving: Serving) -> Any:
    async def invocations(request: Request) -> Response:
        started = time.monotonic()
        response = await _answer(serving, request)
        serving.metrics.answered(response.status_code, time.monotonic() - started)
        return response

    return invocations


async def _answer(serving: Serving, request: Request) -> Response:
    try:
        body = await request.body()
        model = serving.slot.current()
        texts, beam = checked_request(body, request.headers.get("content-type", ""), model)
    except HTTPException:
        raise  # the body cap's 413
    except BadRequest as error:
        return _error(400, "INVALID_PARAMETER_VALUE", str(error))
    pending = serving.batcher.submit(texts, beam, request_work(texts, beam, model.step_bounds))
    try:
        served, outputs = await asyncio.wait_for(
            asyncio.wrap_future(pending.done), serving.settings.request_timeout_s
        )
    except TimeoutError:
        return _error(504, "DEADLINE_EXCEEDED", _timeout_message(serving.settings))
    except (
        Exception
    ) as error:  # the model failed on this batch: the server's fault, not the client's
        log.error("the model failed on a batch: %s: %s", type(error).__name__, error)
        return _error(500, "INTERNAL_ERROR", f"the model failed: {type(error).__name__}")
    return JSONResponse(
        {"predictions": [{TRANSLATION_COLUMN: text} for text in outputs]},
        headers=_version_headers(served),
    )


def _timeout_message(settings: ServerSettings) -> str:
    return (
        f"no answer within {settings.request_timeout_s:g} s; the server is overloaded, send "
        "fewer or shorter rows or try again later"
    )


def _version_headers(served: ServedModel) -> dict[str, str]:
    headers = {URI_HEADER: served.uri}
    if served.version is not None:
        headers[VERSION_HEADER] = served.version
    return headers


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


def checked_request(body: bytes, content_type: str, model: ServedModel) -> tuple[list[str], int]:
    """The texts and beam of a request body, checked against `model`'s limits; BadRequest
    (with the same messages as the pyfunc's own checks) otherwise."""
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise BadRequest(
            f"content type {content_type or '(none)'!r} is not supported; send application/json"
        )
    request = _json_object(body)
    try:
        beam = requested_beam_size(_params(request), model.default_beam)
        texts = texts_from_input(_model_input(request), model.limits, beam, model.step_bounds)
    except MlflowException as error:
        raise BadRequest(error.message) from None
    return texts, beam


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None
    if not isinstance(request, dict):
        raise BadRequest(
            f"the body is a JSON {type(request).__name__}; send an object with one of "
            f"{', '.join(INPUT_FORMATS)}"
        )
    return request


def _params(request: dict[str, Any]) -> dict[str, Any]:
    params = request.get("params") or {}
    if not isinstance(params, dict):
        raise BadRequest(f"params: expected an object, got {type(params).__name__}")
    unknown = sorted(set(params) - {BEAM_SIZE_PARAM})
    if unknown:
        raise BadRequest(
            f"params {', '.join(map(str, unknown))}: not a parameter of this model; it takes "
            f"{BEAM_SIZE_PARAM}"
        )
    return params


def _model_input(request: dict[str, Any]) -> Any:
    """The request's data, parsed as MLflow's scoring server parses it."""
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    formats = [key for key in INPUT_FORMATS if key in request]
    if len(formats) != 1:
        raise BadRequest(
            f"the body has {sorted(request)}; send exactly one of {', '.join(INPUT_FORMATS)}"
        )
    try:
        return infer_and_parse_data({formats[0]: request[formats[0]]})
    except MlflowException as error:
        raise BadRequest(error.message.splitlines()[0]) from None
    except (ValueError, TypeError, KeyError) as error:
        raise BadRequest(f"{formats[0]}: {error}") from None
