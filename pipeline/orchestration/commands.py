"""`mt stage run STAGE --inputs FILE` and `mt stage save --inputs FILE`: what a DAG task runs
on a worker, in the run's workspace (pipeline/orchestration/stage_runner.py).

FILE holds the run's inputs (JSON, pipeline/orchestration/carried.py). Each prints its result
as the last line of stdout, which Airflow's bash task keeps as its XCom.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.orchestration.carried import RunInputs
from pipeline.orchestration.stage_runner import run_stage, save_run
from pipeline.paths import project_paths


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mt stage", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="reproduce one stage in the run's workspace")
    run.add_argument("stage")
    run.add_argument("--inputs", type=Path, required=True, help="the run's inputs")
    save = actions.add_parser("save", help="save the run's workspace as its DVC experiment")
    save.add_argument("--inputs", type=Path, required=True, help="the run's inputs")
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
    if args.action == "save":
        outcome = json.dumps(save_run(root, inputs))
    else:
        outcome = run_stage(root, args.stage, inputs).to_json()
    sys.stdout.flush()
    print(outcome)
    return 0
