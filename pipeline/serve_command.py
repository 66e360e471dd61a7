"""`mt serve`: MLflow's scoring server for a registered model, in the project's environment.

`mlflow models serve` starts uvicorn by name, so `.venv/bin/mlflow models serve` fails with
exit 127 unless the venv is activated. `mt serve` puts the directory of the Python running it
(the venv's bin) first on PATH, points MLflow at the project's tracking store (the same
`MLFLOW_TRACKING_URI` default as every other command, pipeline/tracking.py), checks that the
model can be found, then replaces itself with `mlflow models serve --env-manager local`: the
server gets this process's id, so Ctrl-C, `kill` or a supervisor's SIGTERM reach it directly.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.paths import project_paths
from pipeline.tracking import model_metadata, redact, redacted, tracking_uri

log = logging.getLogger(__name__)

DEFAULT_PORT = 5001  # MLflow's own default, 5000, is where a tracking server usually listens
DEFAULT_HOST = "127.0.0.1"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mt serve",
        description="Serve a registered model over REST (/ping, /invocations) with MLflow's "
        "scoring server.",
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
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65_535:
        raise PipelineError(f"--port {args.port}: not a TCP port; pick one from 1 to 65535")
    return args


def default_model_uri() -> str:
    return f"models:/{load_config().register.model_name}@champion"


def serving_environ(uri: str, bin_dir: Path) -> dict[str, str]:
    """This environment with `bin_dir` first on PATH and the tracking store named."""
    path = os.environ.get("PATH", "")
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{path}" if path else str(bin_dir),
        "MLFLOW_TRACKING_URI": uri,
    }


def check_model_found(model_uri: str, store_uri: str) -> None:
    """Fail with one line, before the server starts, when the model cannot be found."""
    from mlflow.exceptions import MlflowException

    try:
        model_metadata(store_uri, model_uri)
    except (MlflowException, OSError) as error:
        message = (getattr(error, "message", None) or str(error)).splitlines()[0][:300]
        message = redacted(message, store_uri)
        raise PipelineError(
            f"--model {model_uri}: not found in {redact(store_uri)}: {message}; run `mt "
            "register` (or `dvc repro`), or pass --model with a version that exists (`mt "
            "registry list`)"
        ) from None


def serve_command(model_uri: str, host: str, port: int, bin_dir: Path) -> list[str]:
    mlflow = bin_dir / "mlflow"
    if not mlflow.is_file():
        raise PipelineError(f"{mlflow}: not found; install the project (`make install`)")
    return [
        str(mlflow), "models", "serve", "-m", model_uri,
        "--env-manager", "local", "-h", host, "-p", str(port),
    ]  # fmt: skip


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    model_uri = args.model or default_model_uri()
    store_uri = tracking_uri(project_paths())
    check_model_found(model_uri, store_uri)
    bin_dir = Path(sys.executable).parent  # the venv's bin, even when it is not on PATH
    command = serve_command(model_uri, args.host, args.port, bin_dir)
    log.info("serving %s from %s on http://%s:%d", model_uri, store_uri, args.host, args.port)
    sys.stdout.flush()
    sys.stderr.flush()
    # The venv's own mlflow by absolute path with arguments built here: no shell, no lookup.
    os.execve(command[0], command, serving_environ(store_uri, bin_dir))  # noqa: S606
