"""`.ci/run` on a fresh clone, as CI runs it: where the suite's time goes, against its budget.

Clones this repository's HEAD into a temporary directory (with `../shared` beside it as a link,
as on the team's machines and in CI), runs `bash .ci/run` there under `/usr/bin/time -v` with
CI=true and no stdin, and reads back: the wall time against the 20-minute budget, peak RSS, the
pytest summary of each pass, the seconds of each phase (install, lint, types and the browser;
the suite; the second pass), and `--durations` summed per test module, slowest first. The
1-minute load average before and after says whether anything else ran (2 cores: ~2 is this run
alone).

Writes benchmarks/results/ci_time.json and prints the table.

    python benchmarks/ci_time.py            # one fresh-clone `.ci/run`
    python benchmarks/ci_time.py --keep     # and keep the clone and its log
    python benchmarks/ci_time.py --from-log /tmp/mt-ci-time-XXXX   # summarise a kept run again
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fresh_checkout import REPO, clone_head, run_timed, time_report

RESULTS = REPO / "benchmarks" / "results"
BUDGET_S = 20 * 60
DURATION_LINE = re.compile(r"^([\d.]+)s (call|setup|teardown)\s+(tests/\S+?)::")
SUMMARY_LINE = re.compile(r"^=+ (\d+ passed.*) in ([\d.]+)s")


def run_ci(checkout: Path, log_path: Path) -> tuple[int, list[str]]:
    """`.ci/run` under /usr/bin/time -v; its exit code and its output lines (also in the log)."""
    env = {**os.environ, "CI": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("VIRTUAL_ENV", None)
    code, text = run_timed(["bash", ".ci/run"], checkout, log_path, env)
    return code, text.splitlines()


# .ci/run's header line of a second pass that ran beside the suite, not after it.
BESIDE_LINE = "== second pass (beside the suite)"


def phase_seconds(
    passes: list[dict[str, Any]], wall_s: float, second_beside: bool
) -> dict[str, float]:
    """The two pytest passes by their own clocks; the rest (install, ruff, mypy, the browser
    check) is what remains of the wall time, less the second pass where it ran after the suite
    (where it ran beside it, its time is not the run's). Pytest's clock, not the arrival of its
    lines: its output reaches the pipe in blocks."""
    suite = passes[0]["seconds"] if passes else 0.0
    second = passes[1]["seconds"] if len(passes) > 1 else 0.0
    after_suite = 0.0 if second_beside else second
    return {
        "install, lint, types, browser": round(wall_s - suite - after_suite, 1),
        "suite": suite,
        "second pass (beside the suite)" if second_beside else "second pass": second,
    }


def module_seconds(lines: list[str]) -> dict[str, float]:
    """`--durations` summed per test module (setup, call and teardown), slowest first; .ci/run
    lists every phase of 1 s or more."""
    totals: dict[str, float] = collections.defaultdict(float)
    for line in lines:
        match = DURATION_LINE.match(line)
        if match:
            totals[match.group(3)] += float(match.group(1))
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)
    return {module: round(seconds, 1) for module, seconds in ranked}


def summarise(code: int, lines: list[str]) -> dict[str, Any]:
    timing = time_report("\n".join(lines[-60:]))
    wall_s = timing.get("wall_s", 0.0)
    passes = [
        {"summary": m.group(1), "seconds": float(m.group(2))}
        for line in lines
        if (m := SUMMARY_LINE.match(line))
    ]
    return {
        "exit_code": code,
        "wall_s": round(wall_s, 1),
        "budget_s": BUDGET_S,
        "within_budget": code == 0 and 0 < wall_s <= BUDGET_S,
        "peak_rss_gib": round(timing["peak_rss_kb"] / 2**20, 2)
        if "peak_rss_kb" in timing
        else None,
        "pytest_passes": passes,
        "phases_s": phase_seconds(
            passes, wall_s, any(line.startswith(BESIDE_LINE) for line in lines)
        ),
        "modules_s": module_seconds(lines),
    }


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown"


def print_table(result: dict[str, Any]) -> None:
    wall = result["wall_s"]
    verdict = "within" if result["within_budget"] else "OVER"
    print(
        f"`.ci/run` exit {result['exit_code']}: {wall / 60:.1f} min, {verdict} the 20-min budget"
    )
    for phase, seconds in result["phases_s"].items():
        print(f"  {phase:<16} {seconds:>7.1f} s")
    print(f"{'module':<44} {'s':>7}")
    for module, seconds in list(result["modules_s"].items())[:15]:
        print(f"{module:<44} {seconds:>7.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the clone and its log")
    parser.add_argument(
        "--from-log",
        type=Path,
        metavar="DIR",
        help="summarise a kept run again (DIR holds main/ and ci.log) instead of running one",
    )
    args = parser.parse_args(argv)
    if args.from_log:
        workdir, code, load = args.from_log, None, None
        lines = (workdir / "ci.log").read_text(errors="replace").splitlines()
    else:
        workdir = Path(tempfile.mkdtemp(prefix="mt-ci-time-"))
        clone_head(workdir)
        print(f".ci/run in {workdir / 'main'} (log: {workdir / 'ci.log'})", flush=True)
        load_before = os.getloadavg()[0]
        code, lines = run_ci(workdir / "main", workdir / "ci.log")
        load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result = record(workdir / "main", code, lines, load)
    if args.from_log:
        result["load_average"] = recorded_load(result["commit"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ci_time.json").write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    if not (args.keep or args.from_log):
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return 0 if result["exit_code"] == 0 else 1


def recorded_load(commit: str) -> list[float] | None:
    """The load average ci_time.json recorded for `commit` (when it holds that run)."""
    path = RESULTS / "ci_time.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    return earlier.get("load_average") if earlier.get("commit") == commit else None


def record(
    checkout: Path, code: int | None, lines: list[str], load: list[float] | None
) -> dict[str, Any]:
    """What ci_time.json holds; a summarised log's exit code is read from its last words."""
    if code is None:
        code = int(time_report("\n".join(lines[-60:])).get("exit_status", -1))
    commit = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=checkout, text=True)
    return {
        "commit": commit.strip(),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0))},
        "load_average": load,
        **summarise(code, lines),
    }


if __name__ == "__main__":
    sys.exit(main())
