"""Latency and throughput of the served translator on loopback: batching on against off.

    .venv/bin/python benchmarks/serving.py                    # trains a small model first
    .venv/bin/python benchmarks/serving.py --project .        # this project's models/
    .venv/bin/python benchmarks/serving.py --model DIR        # DIR/seq2seq.keras + tokenizer/

The model is saved as the pyfunc `mt register` logs (pipeline.serving.TranslationModel, decoding
and request limits from params.yaml) and served, one after the other in the same run, by each of
--servers (default all three):
- `mlflow`: `mlflow models serve --env-manager local -w 1`, MLflow's scoring server (one request
  decoded at a time), what `mt serve` ran before issue 27;
- `mt-unbatched`: `mt serve --no-batching` (pipeline/serving_app.py, each request alone);
- `mt`: `mt serve`, concurrent requests decoded together (pipeline/serving_batch.py).
For 1, 8 and 32 concurrent clients (threads, one keep-alive connection each) and each workload,
clients send requests back to back for --seconds; p50/p95 latency and throughput are over the
requests that finished in that window. Workloads:
- ping: GET /ping, the baseline in the same run (HTTP and server overhead, no model);
- 1 sentence: POST /invocations with one Multi30k test2016 source, a new one each request;
- N sentences: one request of --batch-rows sources.
Each cell is bounded in time: --seconds plus at most one request in flight per client.
Prints a table and the batching speed-up (`mt` over `mt-unbatched`: 1-sentence sentences/s at
8 and 32 clients, p50 at 1 client) and writes benchmarks/results/serving.json (--output).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import http.client
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pipeline.atomic import atomic_write_json  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from tests.tiny_translator import read_gz_lines, train_quick_model  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "serving.json"
DEFAULT_DATA = Path(os.environ.get("MT_DATA_DIR") or REPO_ROOT.parent / "shared/data/multi30k")
TEST_SPLIT = "test_2016_flickr"
CONCURRENCY = (1, 8, 32)
REQUEST_TIMEOUT_S = 120


def save_pyfunc(model_dir: Path, destination: Path) -> dict[str, Any]:
    """The pyfunc as `mt register` logs it; returns the decoding settings and limits used."""
    import mlflow.pyfunc

    from pipeline.model.decoding import DecodingSettings
    from pipeline.registry.commands import PACKAGE_DIR
    from pipeline.serving import (
        DECODING_ARTIFACT,
        KERAS_MODEL_ARTIFACT,
        TOKENIZER_ARTIFACT,
        InputLimits,
        TranslationModel,
        translation_signature,
    )

    config = load_config(REPO_ROOT / "params.yaml")
    settings = DecodingSettings.from_config(config.decode)
    register = config.register
    limits = InputLimits(
        register.max_input_chars, register.max_batch_rows, register.max_request_work
    )
    settings_file = destination.parent / "decoding_settings.json"
    settings_file.write_text(json.dumps(dataclasses.asdict(settings)), encoding="utf-8")
    mlflow.pyfunc.save_model(
        destination,
        python_model=TranslationModel(),
        artifacts={
            KERAS_MODEL_ARTIFACT: str(model_dir / "seq2seq.keras"),
            TOKENIZER_ARTIFACT: str(model_dir / "tokenizer"),
            DECODING_ARTIFACT: str(settings_file),
        },
        model_config=dataclasses.asdict(limits),
        code_paths=[str(PACKAGE_DIR)],
        signature=translation_signature(settings.beam_size),
        pip_requirements=[],
    )
    return {"decoding": dataclasses.asdict(settings), "limits": dataclasses.asdict(limits)}


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    method: str
    path: str
    rows: int  # sentences per request (0: no model work)


def request_body(sources: list[str], start: int, rows: int) -> bytes:
    texts = [sources[(start + i) % len(sources)] for i in range(rows)]
    return json.dumps({"inputs": {"text": texts}}).encode("utf-8")


def client_loop(
    port: int, workload: Workload, sources: list[str], deadline: float, seed: int
) -> tuple[list[float], int]:
    """Requests back to back until `deadline`: latencies of the answered ones, and errors."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    headers = {"Content-Type": "application/json"}
    latencies, errors, sent = [], 0, 0
    while time.monotonic() < deadline:
        body = request_body(sources, seed * 997 + sent * workload.rows, workload.rows)
        started = time.perf_counter()
        try:
            connection.request(
                workload.method,
                workload.path,
                body=body if workload.rows else None,
                headers=headers,
            )
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        if ok:
            latencies.append(time.perf_counter() - started)
        else:
            errors += 1
        sent += 1
    connection.close()
    return latencies, errors


def measure(
    port: int, workload: Workload, sources: list[str], clients: int, seconds: float
) -> dict[str, Any]:
    results: list[tuple[list[float], int]] = [([], 0)] * clients
    deadline = time.monotonic() + seconds

    def run(index: int) -> Callable[[], None]:
        def target() -> None:
            results[index] = client_loop(port, workload, sources, deadline, index)

        return target

    threads = [threading.Thread(target=run(i)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies = sorted(latency for client, _ in results for latency in client)
    errors = sum(count for _, count in results)
    return summarise(workload, clients, latencies, errors, elapsed)


def percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summarise(
    workload: Workload, clients: int, latencies: list[float], errors: int, elapsed: float
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "workload": workload.name,
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "sentences_per_s": round(len(latencies) * workload.rows / elapsed, 2),
    }
    if latencies:
        row["p50_ms"] = round(1000 * statistics.median(latencies), 1)
        row["p95_ms"] = round(1000 * percentile(latencies, 0.95), 1)
    return row


def warm_up(port: int, workloads: list[Workload], sources: list[str]) -> None:
    """Trace the decoder's tf.functions for each request shape before timing anything."""
    for workload in workloads:
        client_loop(port, workload, sources, time.monotonic() + 0.1, seed=0)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'server':<13} {'workload':<14} {'clients':>7} {'requests':>8} {'errors':>6} "
        f"{'p50 ms':>9} ",
        end="",
    )
    print(f"{'p95 ms':>9} {'req/s':>8} {'sent/s':>8}")
    for row in rows:
        print(
            f"{row['server']:<13} {row['workload']:<14} {row['clients']:>7} "
            f"{row['requests']:>8} {row['errors']:>6} "
            f"{row.get('p50_ms', float('nan')):>9.1f} {row.get('p95_ms', float('nan')):>9.1f} "
            f"{row['requests_per_s']:>8.2f} {row['sentences_per_s']:>8.2f}"
        )


SERVERS = ("mlflow", "mt-unbatched", "mt")


@dataclasses.dataclass
class ServerProcess:
    """One server of the model at `pyfunc` on a free port, by name (SERVERS)."""

    name: str
    pyfunc: Path
    scratch: Path
    process: Any = None

    def start(self) -> int:
        from tests.mlflow_server import BIN_DIR, free_port, venv_environ, wait_until_healthy

        port = free_port()
        if self.name == "mlflow":
            command = [
                str(BIN_DIR / "mlflow"),
                "models",
                "serve",
                "-m",
                str(self.pyfunc),
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                "1",
            ]
        else:
            command = [
                str(BIN_DIR / "mt"),
                "serve",
                "--model",
                str(self.pyfunc),
                "--port",
                str(port),
            ]
            command += ["--no-batching"] if self.name == "mt-unbatched" else []  # fmt: skip
        env = {**venv_environ(), "MT_PROJECT_DIR": str(REPO_ROOT),
               "MLFLOW_TRACKING_URI": f"sqlite:///{self.scratch / 'mlruns.db'}"}  # fmt: skip
        log_file = self.scratch / f"{self.name}.log"
        with log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.scratch,
                start_new_session=True,
            )  # fmt: skip
        wait_until_healthy(f"http://127.0.0.1:{port}/ping", self.process, log_file, 300)
        return port

    def stop(self) -> None:
        from tests.mlflow_server import _stop

        _stop(self.process, signal.SIGTERM)


def serve_and_measure(
    pyfunc: Path, scratch: Path, sources: list[str], args: argparse.Namespace
) -> list[dict[str, Any]]:
    workloads = [
        Workload("ping", "GET", "/ping", 0),
        Workload("1 sentence", "POST", "/invocations", 1),
        Workload(f"{args.batch_rows} sentences", "POST", "/invocations", args.batch_rows),
    ]
    rows = []
    for name in args.servers:
        server = ServerProcess(name, pyfunc, scratch)
        port = server.start()
        try:
            warm_up(port, workloads, sources)
            for workload in workloads:
                for clients in CONCURRENCY:
                    row = measure(port, workload, sources, clients, args.seconds)
                    rows.append({"server": name, **row})
        finally:
            server.stop()
    return rows


def batching_gain(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """`mt` over `mt-unbatched`: 1-sentence sentences/s at 8 and 32 clients, p50 at 1."""
    cells = {(row["server"], row["workload"], row["clients"]): row for row in rows}
    if ("mt", "1 sentence", 1) not in cells or ("mt-unbatched", "1 sentence", 1) not in cells:
        return None
    gain = {}
    for clients in CONCURRENCY[1:]:
        on, off = cells["mt", "1 sentence", clients], cells["mt-unbatched", "1 sentence", clients]
        gain[f"sentences_per_s_x_at_{clients}"] = round(
            on["sentences_per_s"] / off["sentences_per_s"], 2
        )
    on, off = cells["mt", "1 sentence", 1], cells["mt-unbatched", "1 sentence", 1]
    gain["p50_at_1_client_x"] = round(on["p50_ms"] / off["p50_ms"], 3)
    return gain


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="directory with seq2seq.keras + tokenizer/")
    parser.add_argument("--project", type=Path, help="project root whose models/ to use")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seconds", type=float, default=10.0, help="per (workload, clients)")
    parser.add_argument("--batch-rows", type=int, default=16)
    parser.add_argument("--train-pairs", type=int, default=6000)
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--servers", nargs="+", choices=SERVERS, default=list(SERVERS), help="in this order"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    sources = read_gz_lines(args.data_dir / f"{TEST_SPLIT}.en.gz")
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        if args.model or args.project:
            model_dir = args.model or args.project / "models"
            model = str(model_dir)
        else:
            model_dir = train_quick_model(
                args.data_dir, scratch / "model", args.train_pairs, args.train_epochs
            )
            model = (
                f"quick model: emb 128, hidden 128, {args.train_pairs} pairs, "
                f"{args.train_epochs} epochs"
            )
        served = save_pyfunc(model_dir, scratch / "pyfunc")
        rows = serve_and_measure(scratch / "pyfunc", scratch, sources, args)
    print_table(rows)
    gain = batching_gain(rows)
    print(f"batching (mt over mt-unbatched): {gain}")
    atomic_write_json(
        args.output,
        {
            "benchmark": "serving",
            "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "servers": {
                "mlflow": "mlflow models serve --env-manager local -w 1 (uvicorn), 127.0.0.1",
                "mt-unbatched": "mt serve --no-batching (uvicorn, one process), 127.0.0.1",
                "mt": "mt serve (uvicorn, one process), 127.0.0.1, batch window from params",
            },
            "batch_window_ms": load_config(
                REPO_ROOT / "params.yaml"
            ).register.serve_batch_window_ms,
            "batching_gain": gain,
            "model": model,
            **served,
            "seconds_per_cell": args.seconds,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "load_average": list(os.getloadavg()),
            "results": rows,
            "note": "Shared 2-core machine: compare rows with the ping baseline of the same run.",
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
