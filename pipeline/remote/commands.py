"""`mt stage run STAGE --inputs FILE` and `mt stage sync --inputs FILE`: what a DAG task runs
on a worker of a multi-host deployment (pipeline/remote/stage_runner.py).

FILE holds the run's carried inputs (JSON, pipeline/remote/carried.py). `run` prints the
stage's result as the last line of stdout, which Airflow's bash task keeps as its XCom.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.params_lock import RunRef
from pipeline.paths import project_paths
from pipeline.remote.carried import RunInputs
from pipeline.remote.stage_runner import run_stage, sync_checkout


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mt stage", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="pull, reproduce and push one stage")
    run.add_argument("stage")
    run.add_argument("--inputs", type=Path, required=True, help="the run's carried inputs")
    sync = actions.add_parser("sync", help="bring this checkout to the run's end state")
    sync.add_argument("--inputs", type=Path, required=True, help="the run's carried inputs")
    return parser


def _read_inputs(path: Path) -> RunInputs:
    try:
        return RunInputs.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: the run's inputs file is missing") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path}: not a run's inputs file ({error})") from None


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    root = project_paths().root
    inputs = _read_inputs(args.inputs)
    run = RunRef.from_airflow_env()
    if args.action == "sync":
        print(sync_checkout(root, inputs, run))
        return 0
    if run is None:
        raise ConfigError("`mt stage run` runs inside an Airflow task (AIRFLOW_CTX_* unset)")
    result = run_stage(root, args.stage, inputs, run)
    sys.stdout.flush()
    print(result.to_json())
    return 0
