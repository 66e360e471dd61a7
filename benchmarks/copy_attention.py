"""Copy attention against plain attention, at the same budget, on a task's corpus.

Starts from a project where the plain model was trained (a clone kept by
`fresh_clone.py --task summarization --keep`): same data, tokenizer, seed and epochs. A copy of it
gets `model.copy_attention: true`, trains (`mt train`) and is evaluated (`mt evaluate`); the
table compares the two on val (the split the choice is made on) and test, with seconds per
epoch. Writes benchmarks/results/copy_attention-<task>-<machine>.json.

    python benchmarks/fresh_clone.py --task summarization --keep
    python benchmarks/copy_attention.py --project /tmp/mt-fresh-clone-XXXX/main
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path
from typing import Any

import yaml
from fresh_clone import RESULTS, cpu_description, machine_slug

from pipeline.params_edit import with_overrides
from pipeline.tasks import TASK_METRICS, Task

EPOCH_LINE = re.compile(r"^\s*\d+/\d+ - (\d+)s ")


def copy_project(plain: Path) -> Path:
    """The plain project's data, tokenizer and params in a temp folder: its code, git, DVC cache
    and virtualenv left out, so `mt` runs this checkout's code (the plain clone may predate
    copy attention; with it off, the model is the same: tests/test_copy_attention.py)."""
    target = Path(tempfile.mkdtemp(prefix="mt-copy-attention-")) / "project"
    ignored = shutil.ignore_patterns(
        ".git", ".dvc", ".venv", "pipeline", "mlruns.db", "mlartifacts"
    )
    shutil.copytree(plain, target, ignore=ignored, symlinks=True)
    return target


def switch_copy_on(project: Path) -> None:
    params = project / "params.yaml"
    text = params.read_text(encoding="utf-8")
    params.write_text(with_overrides(text, {"model": {"copy_attention": True}}), encoding="utf-8")


def run_stage(project: Path, stage: str, log: Path) -> str:
    """`mt <stage>` in `project` with the plain project's virtualenv; its output."""
    env = {**os.environ, "MT_PROJECT_DIR": str(project), "CI": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("ab") as sink:
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", stage], cwd=project, env=env,
            stdout=sink, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    text = log.read_text(errors="replace")
    if done.returncode != 0:
        raise SystemExit(f"mt {stage} failed ({done.returncode}); see {log}")
    return text


def epoch_seconds(log_text: str) -> list[int]:
    """Seconds of each epoch, from Keras's one line per epoch."""
    return [int(m.group(1)) for line in log_text.splitlines() if (m := EPOCH_LINE.match(line))]


def arm(project: Path, task: Task, log_text: str) -> dict[str, Any]:
    """One variant's scores (task metrics of val and each test split) and epoch seconds."""
    metrics = json.loads((project / "metrics.json").read_text())
    keys = [*TASK_METRICS[task], "mean_output_words"]
    train = json.loads((project / "reports" / "train" / "metrics.json").read_text())
    return {
        "scores": {
            split: {key: values[key] for key in keys if key in values}
            for split, values in metrics.items()
        },
        "epoch_seconds": epoch_seconds(log_text),
        "epochs": train.get("epochs"),
        "val_nll_best_epoch": train.get("val_nll_best_epoch"),
    }


def print_table(result: dict[str, Any], metric: str) -> None:
    splits = list(result["plain"]["scores"])
    print(f"{'variant':<8}" + "".join(f" {split[:10] + ' ' + metric:>20}" for split in splits))
    for name in ("plain", "copy"):
        scores = result[name]["scores"]
        print(f"{name:<8}" + "".join(f" {scores[split][metric]:>20.2f}" for split in splits))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="the plain model's project")
    args = parser.parse_args(argv)
    plain = args.project.resolve()
    task = typing.cast(Task, _params(plain)["task"])
    metric = TASK_METRICS[task][0]
    project = copy_project(plain)
    switch_copy_on(project)
    started = time.time()
    text = run_stage(project, "train", project.parent / "train.log")
    run_stage(project, "evaluate", project.parent / "evaluate.log")
    plain_log = (plain.parent / "repro.log").read_text(errors="replace")
    result = {
        "machine": {"cpu": cpu_description(), "cores": len(os.sched_getaffinity(0))},
        "task": task,
        "metric": metric,
        "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
        "load_average_after": round(os.getloadavg()[0], 2),
        "plain": arm(plain, task, plain_log),
        "copy": arm(project, task, text),
    }
    slug = machine_slug(result["machine"]["cpu"])
    out = RESULTS / f"copy_attention-{task}-{slug}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result, metric)
    print(f"wrote {out}")
    return 0


def _params(project: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((project / "params.yaml").read_text())
    return loaded


if __name__ == "__main__":
    sys.exit(main())
