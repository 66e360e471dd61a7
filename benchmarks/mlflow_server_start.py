"""What starting an `mlflow server` costs, with MLflow 3's job consumers and without them.

The test suite starts a dozen servers (and restarts some after killing them). MLflow 3's
server also starts Huey job consumers (GenAI jobs, trace rollups) unless
MLFLOW_SERVER_ENABLE_JOB_EXECUTION is false; the pipeline runs no server jobs, so
tests/mlflow_server.py turns them off. This measures both ways in one run, alternating:
seconds until /health answers, CPU seconds of the whole process tree 10 s after that
(start-up work, not serving), its processes and their memory.

    python benchmarks/mlflow_server_start.py [--rounds 2]

Writes benchmarks/results/mlflow_server_start.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results" / "mlflow_server_start.json"
BIN = Path(sys.executable).parent
SETTLE_S = 10  # after /health: the consumers finish importing in the background


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_health(url: str, deadline_s: float = 300) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {deadline_s}s")


def tree_usage(root: psutil.Process) -> tuple[float, int, float]:
    """CPU seconds (user + system, children reaped included), process count, RSS in MiB."""
    processes = [root, *root.children(recursive=True)]
    cpu = rss = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            cpu += times.user + times.system + times.children_user + times.children_system
            rss += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return cpu, len(processes), rss / 2**20


def one_start(jobs: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        port = free_port()
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if jobs else "false"}
        command = [
            str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{scratch}/m.db",
            "--artifacts-destination", Path(scratch, "a").as_uri(),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        started = time.monotonic()
        server = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_for_health(f"http://127.0.0.1:{port}/health")
            healthy_s = time.monotonic() - started
            time.sleep(SETTLE_S)
            cpu, count, rss = tree_usage(psutil.Process(server.pid))
        finally:
            os.killpg(server.pid, 9)
            server.wait()
    return {"jobs": jobs, "health_s": round(healthy_s, 1), "cpu_s": round(cpu, 1),
            "processes": count, "rss_mib": round(rss)}  # fmt: skip


def summary(runs: list[dict[str, Any]], jobs: bool) -> dict[str, float]:
    chosen = [r for r in runs if r["jobs"] == jobs]
    return {key: statistics.median(r[key] for r in chosen)
            for key in ("health_s", "cpu_s", "processes", "rss_mib")}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    runs = [one_start(jobs) for _ in range(args.rounds) for jobs in (True, False)]
    table = {"with jobs (MLflow's default)": summary(runs, True), "without": summary(runs, False)}
    print(f"{'server':<30} {'to /health s':>13} {'CPU s':>7} {'processes':>10} {'RSS MiB':>8}")
    for name, row in table.items():
        print(f"{name:<30} {row['health_s']:>13} {row['cpu_s']:>7} {row['processes']:>10} "
              f"{row['rss_mib']:>8}")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "medians": table, "runs": runs,
    }, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
