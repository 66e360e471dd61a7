"""`make repro` on a fresh clone, as a new user runs it: where the README's figures come from.

For each seed: clone this repository's HEAD into a temporary directory (with `../shared` beside it
as a link, so the Makefile finds the team's Multi30k mirror there), set params.yaml's `seed`, run
`make repro` under `/usr/bin/time -v`, and read back what it did: wall time, peak RSS, the CPU
(model and the flags that choose `train.precision: auto`), the precision used, epochs and seconds
per epoch (from the one-line-per-epoch log), and the val and test scores of metrics.json.

Writes benchmarks/results/fresh_clone-<machine>.json (the run with params.yaml's own seed: the
defaults) and, with more than one seed, benchmarks/results/seed_spread-<machine>.json (every
seed and mean ± sd of each score). Each seed's result is written as soon as it is known, so an
interrupted run keeps what it measured; `--add` measures more seeds of the same commit beside
the recorded ones.

    python benchmarks/fresh_clone.py                       # the defaults, one fresh clone
    python benchmarks/fresh_clone.py --seeds 1234 1 2      # the spread over three seeds
    python benchmarks/fresh_clone.py --seeds 2 --add       # one more seed, same commit
    python benchmarks/fresh_clone.py --task summarization  # `mt task use summarization` first

With `--task` other than translation the clone is switched to that task's preset before
`make repro` (as docs/tasks.md tells a user; for dialogue its corpus is built first, as
`mt dialogue-corpus --out data/dialogue-corpus` does), and the files are named
fresh_clone-<task>-<machine>.json / seed_spread-<task>-<machine>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fresh_checkout import REPO, clone_head, run_timed, time_report

from pipeline.data.dialogue_corpus import build as build_dialogue_corpus
from pipeline.task_presets import use_task
from pipeline.tasks import TASK_METRICS, TASKS, Task

RESULTS = REPO / "benchmarks" / "results"
# The flags pipeline/training/devices.py reads to choose mixed_bfloat16 on a CPU.
PRECISION_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")
EPOCH_LINE = re.compile(r"^\s*\d+/\d+ - (\d+)s ")


def cpu_description() -> dict[str, Any]:
    """The CPU's model name and the precision-relevant flags it has."""
    model, flags = platform.processor() or "unknown", set[str]()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return {"model": model, "flags": [f for f in PRECISION_FLAGS if f in flags]}


def machine_slug(cpu: dict[str, Any]) -> str:
    """The kind of machine in a file name: vendor, family and the widest bf16 path it has
    (`intel-xeon-amx`, `amd-epyc-avx512bf16`): the numeric path training takes on it."""
    words = re.sub(r"\(r\)|\(tm\)|processor|\d+-core", " ", cpu["model"].lower()).split()
    flags = set(cpu["flags"])
    path = "amx" if "amx_bf16" in flags else "avx512bf16" if "avx512_bf16" in flags else "avx2"
    return "-".join([*words[:2], path])


def set_seed(checkout: Path, seed: int) -> None:
    """Rewrite the top-level `seed:` line, leaving every other line (and comment) as it is."""
    params = checkout / "params.yaml"
    text, count = re.subn(r"(?m)^seed: \d+$", f"seed: {seed}", params.read_text())
    if count != 1:
        raise SystemExit(f"{params}: expected one top-level `seed:` line, found {count}")
    params.write_text(text)


def precision_used(log: str) -> str | None:
    match = re.search(r"precision (\w+), XLA", log)
    return match.group(1) if match else None


# What each task's summary keeps of a split's metrics.json entry.
SCORE_KEYS: dict[str, tuple[str, ...]] = {
    "translation": ("bleu", "bleu_ci95", "bleu_lowercase", "chrf", "ter"),
    "summarization": ("rouge_1", "rouge_2", "rouge_l", "rouge_l_ci95", "compression"),
    "dialogue": ("bleu", "chrf", "chrf_ci95", "distinct_1", "distinct_2"),
}


def scores(checkout: Path, task: Task) -> dict[str, Any]:
    metrics = json.loads((checkout / "metrics.json").read_text())
    train = json.loads((checkout / "reports" / "train" / "metrics.json").read_text())
    primary = TASK_METRICS[task][0]
    summary = {
        split: {k: values[k] for k in SCORE_KEYS[task] if k in values}
        for split, values in metrics.items()
        if isinstance(values, dict) and primary in values
    }
    summary["train"] = {
        k: train.get(k) for k in ("epochs", "best_epoch", "val_nll_best_epoch", "exported_weights")
    }
    return summary


def default_seed() -> int:
    """params.yaml's top-level seed: the run that fresh_clone-<machine>.json records."""
    match = re.search(r"(?m)^seed: (\d+)$", (REPO / "params.yaml").read_text())
    if match is None:
        raise SystemExit(f"{REPO / 'params.yaml'}: no top-level `seed:` line")
    return int(match.group(1))


# What `make repro` runs: a recorded run of a commit that differs from HEAD only elsewhere (docs,
# tests, benchmarks) measured the same pipeline.
PIPELINE_FILES = (
    "pipeline",
    "dvc.yaml",
    "params.yaml",
    "requirements.lock",
    "pyproject.toml",
    "Makefile",
)


def same_pipeline(commit: str) -> bool:
    """Whether `make repro` at `commit` runs what it runs at HEAD."""
    diff = ["git", "diff", "--quiet", commit, "HEAD", "--", *PIPELINE_FILES]
    return subprocess.run(diff, cwd=REPO, capture_output=True, check=False).returncode == 0


def result_slug(task: Task, machine: dict[str, Any]) -> str:
    """`<machine>` for translation (the defaults), `<task>-<machine>` for another task."""
    slug = machine_slug(machine["cpu"])
    return slug if task == "translation" else f"{task}-{slug}"


def earlier_runs(machine: dict[str, Any], task: Task) -> list[dict[str, Any]]:
    """The runs already recorded (fresh_clone-, seed_spread-<machine>.json) of this pipeline on
    this kind of machine, one per seed."""
    by_seed: dict[int, dict[str, Any]] = {}
    slug = result_slug(task, machine)
    for name in (f"seed_spread-{slug}.json", f"fresh_clone-{slug}.json"):
        path = RESULTS / name
        recorded = json.loads(path.read_text()) if path.is_file() else {}
        runs = recorded.get("runs") or ([recorded] if "seed" in recorded else [])
        for run in runs:
            if recorded.get("machine") == machine and same_pipeline(run["commit"]):
                by_seed[run["seed"]] = {k: v for k, v in run.items() if k != "machine"}
    return list(by_seed.values())


def run_once(seed: int, keep: bool, task: Task) -> dict[str, Any]:
    """One fresh clone, one `make repro`; its measurements."""
    workdir = Path(tempfile.mkdtemp(prefix="mt-fresh-clone-"))
    checkout = clone_head(workdir)
    if task != "translation":
        use_task(checkout, task)
    if task == "dialogue":  # the preset's corpus: `mt dialogue-corpus --out data/dialogue-corpus`
        build_dialogue_corpus(checkout / "data" / "dialogue-corpus")
    set_seed(checkout, seed)
    log_path = workdir / "repro.log"
    print(f"seed {seed}: make repro in {checkout} (log: {log_path})", flush=True)
    started, load_before = time.time(), os.getloadavg()[0]
    code, text = run_timed(["make", "repro"], checkout, log_path)
    if code != 0:
        raise SystemExit(f"seed {seed}: make repro failed ({code}); see {log_path}")
    timing = time_report(text[-4000:])
    epochs = [int(m.group(1)) for line in text.splitlines() if (m := EPOCH_LINE.match(line))]
    result = {
        "seed": seed,
        "task": task,
        "commit": subprocess.check_output(
            ["git", "rev-parse", "HEAD"], cwd=checkout, text=True
        ).strip(),
        "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
        "wall_s": timing.get("wall_s"),
        "peak_rss_gib": round(timing.get("peak_rss_kb", 0) / 2**20, 2),
        "precision": precision_used(text),
        "epoch_seconds": epochs,
        "log_bytes": len(text.encode()),
        # A wall time is the machine's only when nothing else ran: the 1-minute load average
        # before and after says whether something did (2 cores: ~2 is this run alone).
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "scores": scores(checkout, task),
    }
    if not keep:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return result


def spread(runs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Mean, sd, min and max of each split's primary metric over the seeds."""
    table: dict[str, Any] = {}
    splits = [split for split in runs[0]["scores"] if split != "train"]
    for split in splits:
        values = [r["scores"][split][metric] for r in runs if split in r["scores"]]
        if values:
            table[split] = {
                "mean": round(statistics.mean(values), 2),
                "sd": round(statistics.stdev(values), 2) if len(values) > 1 else None,
                "min": min(values),
                "max": max(values),
            }
    return table


def write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def print_table(runs: list[dict[str, Any]], metric: str) -> None:
    splits = [split for split in runs[0]["scores"] if split != "train"]
    header = "".join(f" {split[:12] + ' ' + metric:>22}" for split in splits)
    print(f"{'seed':>6} {'wall':>8} {'rss GiB':>8} {'epochs':>6} {'s/epoch':>8}{header}")
    for r in runs:
        per_epoch = statistics.mean(r["epoch_seconds"]) if r["epoch_seconds"] else 0
        wall = f"{int(r['wall_s'] // 60)}:{int(r['wall_s'] % 60):02d}" if r["wall_s"] else "?"
        values = "".join(f" {r['scores'][split][metric]:>22.2f}" for split in splits)
        print(
            f"{r['seed']:>6} {wall:>8} {r['peak_rss_gib']:>8} {len(r['epoch_seconds']):>6} "
            f"{per_epoch:>8.0f}{values}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[1234],
        help="params.yaml seed of each fresh clone (its own seed's run is fresh_clone-*.json)",
    )
    parser.add_argument("--keep", action="store_true", help="keep each clone and its log")
    parser.add_argument(
        "--task", choices=TASKS, default="translation", help="`mt task use TASK` before repro"
    )
    parser.add_argument(
        "--add",
        action="store_true",
        help="keep the recorded runs of the same pipeline and machine beside these (a seed run "
        "again replaces its earlier run)",
    )
    args = parser.parse_args(argv)
    machine = {
        "cpu": cpu_description(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
    }
    task: Task = args.task
    metric = TASK_METRICS[task][0]
    runs = earlier_runs(machine, task) if args.add else []
    slug = result_slug(task, machine)
    for seed in args.seeds:
        run = run_once(seed, args.keep, task)
        runs = [r for r in runs if r["seed"] != seed] + [run]
        if seed == default_seed():
            write(RESULTS / f"fresh_clone-{slug}.json", {"machine": machine, **run})
        if len(runs) > 1:
            seeds = [r["seed"] for r in runs]
            write(
                RESULTS / f"seed_spread-{slug}.json",
                {"machine": machine, "seeds": seeds, "runs": runs, metric: spread(runs, metric)},
            )
        print_table(runs, metric)
    return 0


if __name__ == "__main__":
    sys.exit(main())
