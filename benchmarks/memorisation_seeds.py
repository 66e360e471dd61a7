"""Do the memorising test fixtures converge whatever the rounding? Five seeds, oneDNN on and off.

The tests that need a model reproducing its training pairs (tests/tiny_translator.py, and the
teacher-forced overfit test in tests/test_seq2seq.py) train until they do, up to a step cap.
Another CPU rounds differently; a different initialisation seed is the stand-in. For every seed
and both TF_ENABLE_ONEDNN_OPTS settings this runs those tests in a fresh pytest process (the
switch is read when TensorFlow loads) and records pass/fail, the steps the shared memorised
model needed against its cap, and the wall time.

Prints a table and writes benchmarks/results/memorisation_seeds.json.

    .venv/bin/python benchmarks/memorisation_seeds.py [--seeds 1 2 3 4 5] [--onednn 1 0]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pipeline.atomic import atomic_write_json  # noqa: E402
from tests.machine import cpu_description  # noqa: E402
from tests.tiny_translator import MAX_MEMORISE_STEPS  # noqa: E402

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "memorisation_seeds.json"
MEMORISING_TESTS = [
    "tests/test_seq2seq.py::test_model_overfits_twenty_pairs",
    "tests/test_translator.py::test_overfit_model_translates_its_training_pairs_exactly_with_greedy_search",
    "tests/test_translator.py::test_overfit_model_translates_its_training_pairs_exactly_with_beam_search",
    "tests/test_decoding.py::test_beam_search_finds_the_memorised_translations",
]
STEPS_LINE = re.compile(r"memorised model: seed (\d+), (\d+) steps")
OUTCOME_LINE = re.compile(r"(\d+) (passed|failed|error)")


def run_memorising_tests(seed: int, onednn: str) -> dict[str, Any]:
    env = {**os.environ, "MT_TEST_SEED": str(seed), "TF_ENABLE_ONEDNN_OPTS": onednn}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *MEMORISING_TESTS]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    counts = {kind: int(n) for n, kind in OUTCOME_LINE.findall(done.stdout.splitlines()[-1])}
    steps = STEPS_LINE.search(done.stdout)
    return {
        "seed": seed,
        "onednn": onednn,
        "passed": counts.get("passed", 0),
        "failed": counts.get("failed", 0) + counts.get("error", 0),
        "memorised_steps": int(steps.group(2)) if steps else None,
        "seconds": round(seconds, 1),
        "output_tail": "" if done.returncode == 0 else done.stdout[-2000:],
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'oneDNN':>6} {'seed':>4} {'passed':>6} {'failed':>6}"
    print(f"{header} {'steps':>6} {'cap':>5} {'wall':>7}")
    for row in rows:
        steps = row["memorised_steps"] if row["memorised_steps"] is not None else "-"
        print(
            f"{row['onednn']:>6} {row['seed']:>4} {row['passed']:>6} {row['failed']:>6} "
            f"{steps:>6} {MAX_MEMORISE_STEPS:>5} {row['seconds']:>6.1f}s"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--onednn", nargs="+", default=["1", "0"], choices=["0", "1"])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    rows = []
    for onednn in args.onednn:
        for seed in args.seeds:
            rows.append(run_memorising_tests(seed, onednn))
            print_table(rows[-1:])
    print()
    print_table(rows)
    all_passed = all(row["failed"] == 0 and row["passed"] == len(MEMORISING_TESTS) for row in rows)
    print(f"every seed memorised under every setting: {'yes' if all_passed else 'NO'}")
    atomic_write_json(
        args.output,
        {
            "benchmark": "memorisation_seeds",
            "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "cpu": cpu_description(),
            "step_cap": MAX_MEMORISE_STEPS,
            "tests": MEMORISING_TESTS,
            "all_passed": all_passed,
            "results": rows,
        },
    )
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
