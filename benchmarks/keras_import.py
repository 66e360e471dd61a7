"""CPU seconds a stage process spends importing Keras, with and without scikit-learn.

Every `mt train`, `mt evaluate`, `mt translate`, `mt serve` and `mt translate-batch`, and every
loaded translator pyfunc (the gate's smoke check, serving, the watch), imports Keras (TensorFlow
backend), and the test suite starts dozens of them. Keras 3 imports scikit-learn for
`keras.wrappers`, which the pipeline never uses; the pipeline imports Keras with scikit-learn
hidden (pipeline/keras_start.py). Each measurement is a fresh Python process, CPU time (user +
system) from `getrusage` of the child, the two variants alternating so that a busy moment hits
both alike; the baseline is plain `import keras`, measured in the same run.

Prints a table and writes benchmarks/results/keras_import.json.

    python benchmarks/keras_import.py [--repeats N] [--output PATH]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pipeline.atomic import atomic_write_json  # noqa: E402

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "keras_import.json"
VARIANTS = {
    "import keras (baseline)": "import keras",
    "mt's import, scikit-learn hidden": (
        "from pipeline.keras_start import import_keras_without_scikit_learn as start\nstart()"
    ),
}
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}


def child_cpu_seconds(code: str) -> float:
    """User + system CPU seconds of one fresh interpreter running `code`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, **QUIET_ENV},
        check=True,
        capture_output=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(repeats: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name, code in VARIANTS.items():
            samples[name].append(child_cpu_seconds(code))
    return samples


def summarise(samples: dict[str, list[float]]) -> list[dict[str, Any]]:
    baseline = statistics.median(next(iter(samples.values())))
    rows = []
    for name, values in samples.items():
        median = statistics.median(values)
        rows.append(
            {
                "variant": name,
                "cpu_median_s": round(median, 3),
                "cpu_min_s": round(min(values), 3),
                "cpu_max_s": round(max(values), 3),
                "saved_vs_baseline_s": round(baseline - median, 3),
            }
        )
    return rows


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    rows = summarise(measure(args.repeats))
    print(f"{'variant':36s} {'CPU median':>10s} {'min':>6s} {'max':>6s} {'saved':>6s}")
    for row in rows:
        print(
            f"{row['variant']:36s} {row['cpu_median_s']:9.2f}s {row['cpu_min_s']:5.2f}s "
            f"{row['cpu_max_s']:5.2f}s {row['saved_vs_baseline_s']:5.2f}s"
        )
    record = {
        "benchmark": "keras_import",
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "repeats": args.repeats,
        "note": "CPU seconds of a fresh process; compare with the baseline row of the same run.",
        "results": rows,
    }
    atomic_write_json(args.output, record)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
