"""Wall time and peak RSS of the data stages (fetch → validate_raw → clean → tokenize).

Runs in a scratch copy of the project (pipeline/, dvc.yaml, params.yaml, .dvc/config; `git init`
+ `dvc init`) on Multi30k from MT_DATA_DIR (default: ../shared/data/multi30k):

1. `dvc repro tokenize` from nothing (the whole data pipeline, DVC overhead included);
2. each stage's own command (`mt <stage>`, read from dvc.yaml), in order;
3. `dvc repro tokenize` again: outputs were rewritten by step 2, so DVC re-hashes them; only a
   stage whose outputs changed bytes reruns;
4. `dvc repro tokenize` once more: the pure no-op (target ≤ 3 s), then again the way this
   machine runs it by default, with no bytecode cache (see `scratch_env`);
5. the raw GX suite over the 29,000 train pairs alone, in its own process (target ≤ 5 s for
   building the frame and running the suite; the library import is reported apart);
6. baselines measured in the same run, to read the numbers against on a busy machine: process
   start-up of `mt --help` and `dvc --version`;
7. a check that changing `tokenize.vocab_size` makes `dvc status` report tokenize, not clean.

Peak RSS comes from `os.wait4` on each child: the largest resident set of the child and every
process it waited for (DVC's `mt` subprocess included). Prints a table and writes
benchmarks/results/data_stages.json.

    python benchmarks/data_stages.py [--keep] [--output PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.atomic import atomic_write_json

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "data_stages.json"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "multi30k"
STAGES = ("fetch", "validate_raw", "clean", "tokenize")
REPRO = ["dvc", "repro", "tokenize"]
NOOP_TARGET_S = 3.0
GX_TRAIN_TARGET_S = 5.0
NOISE_NOTE = (
    "Measured on a shared machine (2 CPU cores, several engineers' jobs running at once): "
    "wall times are noisy, compare them with the baselines and load averages of the same run."
)
BYTECODE_NOTE = (
    "Every process here writes and reads .pyc in a private PYTHONPYCACHEPREFIX, as an installed "
    "environment would. This machine sets PYTHONDONTWRITEBYTECODE=1 and the shared venv holds "
    "no .pyc, so by default each process recompiles its imports; the '(no-op, no .pyc)' row "
    "shows that cost. Installing with `uv pip sync --compile-bytecode` removes it."
)


@dataclass
class Measurement:
    name: str
    command: str
    wall_s: float
    peak_rss_mb: float
    returncode: int
    target_s: float | None = None

    @property
    def meets_target(self) -> bool | None:
        return None if self.target_s is None else self.wall_s <= self.target_s


def measure(
    name: str, command: list[str], cwd: Path, env: dict[str, str], log_dir: Path
) -> tuple[Measurement, str]:
    """Run `command` to completion; (measurement, its combined output)."""
    log_path = log_dir / f"{len(list(log_dir.iterdir())):02d}-{name.replace(' ', '_')}.log"
    with log_path.open("w", encoding="utf-8") as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    measurement = Measurement(
        name,
        " ".join(command),
        round(wall, 2),
        round(usage.ru_maxrss / 1024, 1),
        process.returncode,
    )
    return measurement, log_path.read_text(encoding="utf-8", errors="replace")


def make_scratch_project(scratch: Path, env: dict[str, str]) -> None:
    """Copy what the data stages need and make it a git + DVC repository."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT / "pipeline", scratch / "pipeline", ignore=ignore)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy2(REPO_ROOT / name, scratch / name)
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(command, cwd=scratch, env=env, check=True)
    shutil.copy2(REPO_ROOT / ".dvc" / "config", scratch / ".dvc" / "config")
    subprocess.run(["dvc", "config", "core.analytics", "false"], cwd=scratch, env=env, check=True)


def scratch_env(project: Path, data_dir: Path, pycache: Path) -> dict[str, str]:
    """The scratch copy's code first on PYTHONPATH, the venv's `mt` and `dvc` first on PATH.

    Bytecode goes to a private cache: this team's machines set PYTHONDONTWRITEBYTECODE=1 and the
    shared venv holds no .pyc, so every process would recompile DVC, GX and TF from source
    (seconds each), which an installed environment does not do.
    """
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(project),
        PYTHONPYCACHEPREFIX=str(pycache),
        MT_PROJECT_DIR=str(project),
        MT_DATA_DIR=str(data_dir),
        CI="true",
        DVC_NO_ANALYTICS="1",
    )
    return env


def stage_commands(scratch: Path) -> dict[str, list[str]]:
    """Each data stage's command as dvc.yaml declares it."""
    stages = yaml.safe_load((scratch / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return {stage: stages[stage]["cmd"].split() for stage in STAGES}


def stages_run(output: str) -> list[str]:
    """Stages that `dvc repro` actually ran, from its log."""
    return re.findall(r"Running stage '([^']+)'", output)


def gx_train_timings(project: Path) -> dict[str, Any]:
    """The raw GX suite over the train split alone (runs in the child process)."""
    sys.path.insert(0, str(project))  # the scratch copy's code, as its `mt` runs it
    start = time.perf_counter()
    from pipeline.config import load_config
    from pipeline.data import validate_raw

    imported = time.perf_counter()
    config = load_config(project / "params.yaml")
    train, langs = config.data.train_split, (config.data.src_lang, config.data.tgt_lang)
    frame = validate_raw.read_split_frame(project / "data" / "raw", train, config.data)
    framed = time.perf_counter()
    expectations = validate_raw.suite_expectations(validate_raw.raw_bounds(config, train), langs)
    results = validate_raw.run_suites({train: frame}, {train: expectations}, "benchmark")
    validated = time.perf_counter()
    return {
        "rows": len(frame),
        "success": bool(results[train].success),
        "import_s": round(imported - start, 2),
        "frame_s": round(framed - imported, 2),
        "suite_s": round(validated - framed, 2),
        "validation_s": round(validated - imported, 2),
    }


def vocab_change_check(scratch: Path, env: dict[str, str]) -> dict[str, Any]:
    """Change tokenize.vocab_size; `dvc status tokenize` must name tokenize and not clean."""
    params_path = scratch / "params.yaml"
    original = params_path.read_text(encoding="utf-8")
    params = yaml.safe_load(original)
    params["tokenize"]["vocab_size"] -= 1
    params_path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    try:
        status = subprocess.run(
            ["dvc", "status", "tokenize", "--json"],
            cwd=scratch,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        params_path.write_text(original, encoding="utf-8")
    changed = sorted(json.loads(status.stdout or "{}"))
    return {
        "change": f"tokenize.vocab_size -> {params['tokenize']['vocab_size']}",
        "stages_out_of_date": changed,
        "tokenize_reruns": "tokenize" in changed,
        "clean_reruns": "clean" in changed,
        "ok": "tokenize" in changed and "clean" not in changed,
    }


class StepRunner:
    """Runs and records benchmark steps in the scratch project; stops at the first failure."""

    def __init__(self, project: Path, env: dict[str, str], log_dir: Path) -> None:
        self.project, self.env, self.log_dir = project, env, log_dir
        self.rows: list[Measurement] = []

    def step(
        self,
        name: str,
        command: list[str],
        target_s: float | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        """Measure one command; returns its output."""
        measurement, output = measure(name, command, self.project, env or self.env, self.log_dir)
        measurement.target_s = target_s
        self.rows.append(measurement)
        print(f"  {name}: {measurement.wall_s:.2f} s", file=sys.stderr, flush=True)
        if measurement.returncode != 0:
            raise SystemExit(f"{name} failed ({measurement.returncode}):\n{output[-3000:]}")
        return output


def without_bytecode_cache(env: dict[str, str]) -> dict[str, str]:
    """This machine's default: no .pyc in the venv and PYTHONDONTWRITEBYTECODE=1."""
    plain = {key: value for key, value in env.items() if key != "PYTHONPYCACHEPREFIX"}
    return {**plain, "PYTHONDONTWRITEBYTECODE": "1"}


def run_benchmark(workdir: Path, data_dir: Path) -> dict[str, Any]:
    project, logs = workdir / "project", workdir / "logs"
    project.mkdir()
    logs.mkdir()
    env = scratch_env(project, data_dir, workdir / "pycache")
    make_scratch_project(project, env)
    load_start = os.getloadavg()
    runner = StepRunner(project, env, logs)
    runs = {"first repro": stages_run(runner.step("dvc repro tokenize (from nothing)", REPRO))}
    for stage, command in stage_commands(project).items():
        runner.step(f"stage {stage}", command)
    after = runner.step("dvc repro tokenize (after reruns)", REPRO)
    runs["after hand reruns"] = stages_run(after)
    runs["no-op"] = stages_run(runner.step("dvc repro tokenize (no-op)", REPRO, NOOP_TARGET_S))
    cold = without_bytecode_cache(env)
    runner.step("dvc repro tokenize (no-op, no .pyc)", REPRO, env=cold)
    runner.step("baseline: mt --help", ["mt", "--help"])
    runner.step("baseline: dvc --version", ["dvc", "--version"])
    gx_output = runner.step(
        "GX raw suite, train only", [sys.executable, __file__, "--gx-train", "."]
    )
    gx = json.loads(gx_output.strip().splitlines()[-1])
    gx.update(target_s=GX_TRAIN_TARGET_S, ok=gx["validation_s"] <= GX_TRAIN_TARGET_S)
    return {
        "rows": runner.rows,
        "stages_run": runs,
        "gx_train": gx,
        "vocab_size_change": vocab_change_check(project, env),
        "loadavg": {"start": load_start, "end": os.getloadavg()},
    }


def print_table(result: dict[str, Any]) -> None:
    header = f"{'step':<36} {'wall s':>8} {'peak RSS MB':>12} {'target s':>9}  ok"
    print(header)
    print("-" * len(header))
    for row in result["rows"]:
        target = "" if row.target_s is None else f"{row.target_s:.1f}"
        ok = {None: "", True: "yes", False: "NO"}[row.meets_target]
        print(f"{row.name:<36} {row.wall_s:>8.2f} {row.peak_rss_mb:>12.1f} {target:>9}  {ok}")
    gx = result["gx_train"]
    print(
        f"\nGX raw suite on {gx['rows']} train pairs: frame {gx['frame_s']} s + suite "
        f"{gx['suite_s']} s = {gx['validation_s']} s (target {gx['target_s']} s; "
        f"import {gx['import_s']} s apart)"
    )
    for name, stages in result["stages_run"].items():
        print(f"dvc repro {name}: ran {', '.join(stages) or 'nothing'}")
    check = result["vocab_size_change"]
    print(f"{check['change']}: dvc status out of date: {check['stages_out_of_date']}")
    print(f"load average start {result['loadavg']['start']} end {result['loadavg']['end']}")


def as_json(result: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    rows = [{**asdict(row), "meets_target": row.meets_target} for row in result["rows"]]
    return {
        "benchmark": "data_stages",
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "data_dir": str(data_dir),
        "machine": {"cpus": os.cpu_count(), "loadavg": result["loadavg"]},
        "note": NOISE_NOTE,
        "bytecode_note": BYTECODE_NOTE,
        "measurements": rows,
        "stages_run": result["stages_run"],
        "gx_train": result["gx_train"],
        "vocab_size_change": result["vocab_size_change"],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep", action="store_true", help="keep the scratch project and logs")
    parser.add_argument("--gx-train", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.gx_train is not None:
        print(json.dumps(gx_train_timings(args.gx_train.resolve())))
        return 0
    data_dir = Path(os.environ.get("MT_DATA_DIR") or DEFAULT_DATA_DIR).resolve()
    workdir = Path(tempfile.mkdtemp(prefix="mt-data-stages-"))
    try:
        result = run_benchmark(workdir, data_dir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(result)
    atomic_write_json(args.output, as_json(result, data_dir))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
