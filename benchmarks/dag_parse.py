"""Parse time of every DAG file in dags/, the way Airflow's dag-processor parses it.

Each measurement is a fresh Python process that imports Airflow's DagBag first (the
dag-processor has it loaded already; that import is reported apart), then parses one DAG file;
the parse time is the DagBag's own FileLoadStat.duration. The baseline, measured in the same
run, is a DAG file with the same Airflow imports and the same number of tasks as the
retraining DAG that does nothing else (EmptyOperators): the difference is what our DAGs cost on
top of Airflow itself. Target: median ≤ 0.5 s per parse for each DAG file. Also checks that
parsing imported no heavy library (TensorFlow, Keras, MLflow, DVC, SentencePiece, Great
Expectations).

Prints a table and writes benchmarks/results/dag_parse.json.

    python benchmarks/dag_parse.py [--repeats N] [--output PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pipeline.atomic import atomic_write_json  # noqa: E402

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "dag_parse.json"
TARGET_S = 0.5
HEAVY = ("tensorflow", "keras", "mlflow", "dvc", "sentencepiece", "great_expectations")

BASELINE_DAG = """
from datetime import datetime
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import chain, dag

@dag(dag_id="baseline_empty", schedule="@weekly", start_date=datetime(2026, 1, 1), catchup=False)
def baseline_empty():
    chain(*[EmptyOperator(task_id=f"task_{i}") for i in range(12)])

baseline_empty()
"""

PROBE = """
import json, sys, time
start = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
airflow_import_s = time.perf_counter() - start
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
stat = bag.dagbag_stats[0]
heavy = sorted(set(sys.argv[2].split(",")) & {name.split(".")[0] for name in sys.modules})
print("RESULT " + json.dumps({"parse_s": stat.duration.total_seconds(), "tasks": stat.task_num,
                              "airflow_import_s": airflow_import_s, "heavy": heavy}))
"""


def parse_once(dag_file: Path, home: Path) -> dict[str, Any]:
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(dag_file), ",".join(HEAVY)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return result


def summarise(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    parse = [run["parse_s"] for run in runs]
    return {
        "name": name,
        "tasks": runs[0]["tasks"],
        "parse_median_s": round(statistics.median(parse), 4),
        "parse_min_s": round(min(parse), 4),
        "parse_max_s": round(max(parse), 4),
        "airflow_import_median_s": round(
            statistics.median(r["airflow_import_s"] for r in runs), 3
        ),
        "heavy_imports": sorted({module for run in runs for module in run["heavy"]}),
    }


def meets_target(row: dict[str, Any]) -> bool:
    return bool(row["parse_median_s"] <= TARGET_S and not row["heavy_imports"])


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'dag file':<26} {'tasks':>5} {'parse med':>10} {'min':>8} {'max':>8} "
    print(header + f"{'airflow import':>15}  heavy imports")
    for row in rows:
        print(
            f"{row['name']:<26} {row['tasks']:>5} {row['parse_median_s']:>9.3f}s "
            f"{row['parse_min_s']:>7.3f}s {row['parse_max_s']:>7.3f}s "
            f"{row['airflow_import_median_s']:>14.2f}s  {','.join(row['heavy_imports']) or '-'}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        home, baseline = Path(scratch) / "home", Path(scratch) / "baseline"
        baseline.mkdir()
        (baseline / "baseline_empty.py").write_text(BASELINE_DAG, encoding="utf-8")
        ours = sorted((REPO_ROOT / "dags").glob("*.py"))
        rows = []
        for name, path in [("baseline_empty.py", baseline), *((dag.name, dag) for dag in ours)]:
            rows.append(summarise(name, [parse_once(path, home) for _ in range(args.repeats)]))
    print_table(rows)
    verdict = all(meets_target(row) for row in rows[1:])
    print(
        f"target: median parse <= {TARGET_S}s and no heavy import, for each DAG file: "
        f"{'met' if verdict else 'MISSED'}"
    )
    atomic_write_json(
        args.output,
        {
            "benchmark": "dag_parse",
            "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "repeats": args.repeats,
            "target_s": TARGET_S,
            "target_met": verdict,
            "load_average": list(os.getloadavg()),
            "cpu_count": os.cpu_count(),
            "results": rows,
            "note": "Shared 2-core machine: compare with the baseline row of the same run.",
        },
    )
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
