"""`.ci/run` on a fresh clone, as CI runs it: where the suite's time goes, against its budget.

Clones this repository's HEAD into a temporary directory (with `../shared` beside it as a link,
as on the team's machines and in CI), runs `bash .ci/run` there under `/usr/bin/time -v` with
CI=true and no stdin, and reads back: the wall time against the 20-minute budget, peak RSS, the
pytest summary of each pass, the seconds of each phase (install, lint and types, the suite, the
second pass), and `--durations` summed per test module, slowest first. The 1-minute load average
before and after says whether anything else ran (2 cores: ~2 is this run alone).

Writes benchmarks/results/ci_time.json and prints the table.

    python benchmarks/ci_time.py            # one fresh-clone `.ci/run`
    python benchmarks/ci_time.py --keep     # and keep the clone and its log
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

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BUDGET_S = 20 * 60
DURATION_LINE = re.compile(r"^([\d.]+)s (call|setup|teardown)\s+(tests/\S+?)::")
SUMMARY_LINE = re.compile(r"^=+ (\d+ passed.*) in ([\d.]+)s")
WALL_LINE = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)")
RSS_LINE = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")
# The line that starts each phase (its nth occurrence: both pytest passes print the same header);
# a phase lasts until the next one starts. Make echoes its commands; .ci/run does not.
PHASE_MARKERS = (
    ("install", "python3.11 -m venv", 1),
    ("lint, types, browser", ".venv/bin/ruff check", 1),
    ("suite", "platform linux", 1),
    ("second pass", "platform linux", 2),
)


def clone(workdir: Path) -> Path:
    """A clone of HEAD at workdir/main; workdir/shared links to the team's shared folder."""
    checkout = workdir / "main"
    subprocess.run(["git", "clone", "-q", str(REPO), str(checkout)], check=True)
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (workdir / "shared").symlink_to(shared)
    return checkout


def run_ci(checkout: Path, log_path: Path) -> tuple[int, list[tuple[float, str]]]:
    """`.ci/run` under /usr/bin/time -v; its exit code and each output line with its time."""
    env = {**os.environ, "CI": "true"}
    env.pop("VIRTUAL_ENV", None)
    stamped: list[tuple[float, str]] = []
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["/usr/bin/time", "-v", "bash", ".ci/run"],
            cwd=checkout,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        assert process.stdout is not None
        for line in process.stdout:
            stamped.append((time.monotonic() - started, line.rstrip("\n")))
            log.write(line)
        return process.wait(), stamped


def phase_seconds(stamped: list[tuple[float, str]], wall_s: float) -> dict[str, float]:
    """Seconds from each phase's first line to the next phase's (the last to the end)."""
    starts: dict[str, float] = {}
    for phase, marker, occurrence in PHASE_MARKERS:
        found = [at for at, line in stamped if marker in line]
        if len(found) >= occurrence:
            starts[phase] = found[occurrence - 1]
    ordered = sorted(starts.items(), key=lambda item: item[1])
    ends = [at for _, at in ordered[1:]] + [wall_s]
    return {phase: round(end - at, 1) for (phase, at), end in zip(ordered, ends, strict=True)}


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


def summarise(code: int, stamped: list[tuple[float, str]]) -> dict[str, Any]:
    lines = [line for _, line in stamped]
    text = "\n".join(lines)
    wall = WALL_LINE.search(text)
    rss = RSS_LINE.search(text)
    wall_s = wall_seconds(wall.group(1)) if wall else stamped[-1][0]
    return {
        "exit_code": code,
        "wall_s": round(wall_s, 1),
        "budget_s": BUDGET_S,
        "within_budget": code == 0 and wall_s <= BUDGET_S,
        "peak_rss_gib": round(int(rss.group(1)) / 2**20, 2) if rss else None,
        "pytest_passes": [
            {"summary": m.group(1), "seconds": float(m.group(2))}
            for line in lines
            if (m := SUMMARY_LINE.match(line))
        ],
        "phases_s": phase_seconds(stamped, wall_s),
        "modules_s": module_seconds(lines),
    }


def wall_seconds(value: str) -> float:
    """/usr/bin/time's h:mm:ss or m:ss.ss as seconds."""
    seconds = 0.0
    for part in value.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


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
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mt-ci-time-"))
    checkout = clone(workdir)
    log_path = workdir / "ci.log"
    print(f".ci/run in {checkout} (log: {log_path})", flush=True)
    load_before = os.getloadavg()[0]
    code, stamped = run_ci(checkout, log_path)
    result = {
        "commit": subprocess.check_output(
            ["git", "rev-parse", "HEAD"], cwd=checkout, text=True
        ).strip(),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0))},
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        **summarise(code, stamped),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ci_time.json").write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    if not args.keep:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
