"""`mt serve`: the registered model over REST, batched, following `@champion`.

MLflow's scoring server (`mlflow models serve`) resolves `models:/NAME@champion` once and decodes
one request at a time. `mt serve` speaks the same protocol (pipeline/serving_app.py) but follows
the alias as it moves (pipeline/serving_follow.py, every `register.serve_poll_s`) and decodes
concurrent requests together (pipeline/serving_batch.py). It points MLflow at the project's
tracking store (the same `MLFLOW_TRACKING_URI` default as every other command,
pipeline/tracking.py), loads the model and checks it answers before it listens, then runs
uvicorn in this process: Ctrl-C, `kill` or a supervisor's SIGTERM stop it gracefully (requests
in flight are answered first).
"""

from __future__ import annotations

import argparse
import logging

from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.paths import project_paths
from pipeline.serving_app import Following, ServerSettings, build_app, build_serving
from pipeline.serving_follow import AliasFollower, ServedModel, load_served, resolve
from pipeline.tracking import redact, redacted, tracking_uri

log = logging.getLogger(__name__)

DEFAULT_PORT = 5001  # MLflow's own default, 5000, is where a tracking server usually listens
DEFAULT_HOST = "127.0.0.1"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mt serve",
        description="Serve a registered model over REST (/invocations, /ping, /model, "
        "/metrics): MLflow's scoring protocol, concurrent requests batched, @champion followed.",
    )
    parser.add_argument(
        "--model",
        help="MLflow model URI (default: models:/<register.model_name>@champion)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}")
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"interface to listen on (default: {DEFAULT_HOST}; 0.0.0.0 for every interface)",
    )
    parser.add_argument(
        "--poll-s",
        type=float,
        help="look the alias up this often (default: register.serve_poll_s; 0: never)",
    )
    parser.add_argument(
        "--no-batching",
        action="store_true",
        help="decode each request alone (to compare; default: concurrent requests together)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65_535:
        raise PipelineError(f"--port {args.port}: not a TCP port; pick one from 1 to 65535")
    if args.poll_s is not None and not 0 <= args.poll_s <= 86_400:
        raise PipelineError(f"--poll-s {args.poll_s:g}: allowed from 0 (never) to 86400")
    return args


def default_model_uri() -> str:
    return f"models:/{load_config().register.model_name}@champion"


def load_first_model(model_uri: str, store_uri: str) -> ServedModel:
    """The model to serve at start; one line, before the server listens, when it cannot be
    found, loaded or does not answer."""
    from mlflow.exceptions import MlflowException

    from pipeline.registry.smoke import loaded_model_problem

    try:
        model = load_served(store_uri, resolve(store_uri, model_uri))
    except (MlflowException, OSError) as error:
        message = (getattr(error, "message", None) or str(error)).splitlines()[0][:300]
        message = redacted(message, store_uri)
        raise PipelineError(
            f"--model {model_uri}: not found in {redact(store_uri)}: {message}; run `mt "
            "register` (or `dvc repro`), or pass --model with a version that exists (`mt "
            "registry list`)"
        ) from None
    problem = loaded_model_problem(model.pyfunc)
    if problem is not None:
        raise PipelineError(
            f"--model {model.uri}: does not answer the canary sentences: {problem}"
        )
    return model


def main(argv: list[str]) -> int:
    import uvicorn

    args = parse_args(argv)
    model_uri = args.model or default_model_uri()
    store_uri = tracking_uri(project_paths())
    register = load_config().register
    model = load_first_model(model_uri, store_uri)
    poll_s = register.serve_poll_s if args.poll_s is None else args.poll_s
    following = None
    if poll_s > 0 and AliasFollower.follows(model_uri):
        following = Following(store_uri, model_uri, poll_s)
    settings = ServerSettings(register.serve_batch_window_ms / 1000, not args.no_batching)
    app = build_app(build_serving(model, settings, following))
    log.info("serving %s (%s) from %s on http://%s:%d%s", model.uri, model_uri,
             redact(store_uri), args.host, args.port,
             f", following the alias every {poll_s:g} s" if following else "")  # fmt: skip
    # log_config=None: uvicorn logs through the handlers `mt` configured, like every command.
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, timeout_graceful_shutdown=30)
    return 0
