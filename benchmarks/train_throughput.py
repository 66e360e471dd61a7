"""Training throughput: the configuration before issue 15 against today's, side by side.

    .venv/bin/python benchmarks/train_throughput.py [--project .] [--pairs 3000] [--epochs 2]
        [--variants before,now,...]

Trains each variant on the same first `--pairs` Multi30k training sentences (data/clean of a
project where `dvc repro clean` ran), each in its own subprocess so each peak-memory figure
(ru_maxrss) is that variant's alone. A variant tokenizes the sentences with its own vocabulary
(`mt tokenize` in a scratch project) and trains pipeline/model as `mt train` does:

  before         the defaults before issue 15: keras.layers.LSTM, joint unigram 8,000,
                 batches of 64 sentences, float32, TensorFlow
  now            params.yaml as it stands (ProjectedInputLSTM and the train/tokenize sections)
  projected      `before` with ProjectedInputLSTM only
  vocab_6000     `projected` with a 6,000-piece vocabulary
  batch_128      `projected` with batches of 128 sentences
  bfloat16       `projected` under Keras' mixed_bfloat16 policy
  jax            `projected` under KERAS_BACKEND=jax

The first epoch includes tracing (and JAX's compiling), so figures come from the last epoch.
A smaller vocabulary cuts sentences into more pieces, so sentences per CPU-second is shown
beside target tokens per CPU-second (the issue's measure). Prints a table and writes
benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "train_throughput.json"


@dataclasses.dataclass(frozen=True)
class Variant:
    """What a variant changes; None keeps params.yaml's value."""

    name: str
    keras_lstm: bool = False
    vocab_size: int | None = 8000
    batch_size: int | None = 64
    precision: str | None = "float32"
    backend: str = "tensorflow"


VARIANTS = {
    "before": Variant("before", keras_lstm=True),
    "now": Variant("now", vocab_size=None, batch_size=None, precision=None),
    "projected": Variant("projected"),
    "vocab_6000": Variant("vocab_6000", vocab_size=6000),
    "batch_128": Variant("batch_128", batch_size=128),
    "bfloat16": Variant("bfloat16", precision="mixed_bfloat16"),
    "jax": Variant("jax", backend="jax"),
}
DEFAULT_VARIANTS = "before,now,projected,vocab_6000,batch_128,bfloat16,jax"


# ------------------------------------------------------------------ scratch projects


def scratch_project(project: Path, variant: Variant, directory: Path) -> Path:
    """A project holding the variant's params.yaml and tokenizer, over `project`'s clean data."""
    root = directory / variant.name
    (root / "data").mkdir(parents=True)
    (root / "data" / "clean").symlink_to(project / "data" / "clean")
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    if variant.vocab_size is not None:
        params["tokenize"]["vocab_size"] = variant.vocab_size
    if variant.batch_size is not None:
        params["train"]["batch_size"] = variant.batch_size
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    env = {**os.environ, "MT_PROJECT_DIR": str(root)}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "tokenize"], env=env, capture_output=True
    )
    if done.returncode != 0:
        sys.exit(f"{variant.name}: mt tokenize failed:\n{done.stderr.decode()[-2000:]}")
    return root


# ------------------------------------------------------------------ the worker


class EpochTimer:
    """Wall and process-CPU seconds of each epoch, as a Keras callback."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def callback(self) -> Any:
        import keras

        timer = self

        class _Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.start = (time.perf_counter(), time.process_time())

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                timer.wall.append(time.perf_counter() - self.start[0])
                timer.cpu.append(time.process_time() - self.start[1])

        return _Timer()


def run_worker(variant: Variant, root: Path, pairs: int, epochs: int) -> dict[str, Any]:
    """Train the variant in this process (its backend is already fixed by the environment)."""
    import keras

    import pipeline.model.seq2seq
    from pipeline.config import load_config
    from pipeline.model.seq2seq import build_seq2seq
    from pipeline.paths import project_paths
    from pipeline.train import compile_for_training, dtype_policy, make_dataset, plan_devices
    from pipeline.training.data import TeacherForcingPairs, load_training_data
    from pipeline.training.devices import gpu_count

    config = load_config(root / "params.yaml")
    data = load_training_data(project_paths(root), config.train.max_tokens)
    train = data.train
    subset = TeacherForcingPairs(
        train.sources[:pairs], train.target_in[:pairs], train.target_out[:pairs]
    )
    if variant.keras_lstm:  # the benchmark's own switch: the graph builder looks it up by name
        pipeline.model.seq2seq.ProjectedInputLSTM = keras.layers.LSTM  # type: ignore[misc]
    plan = plan_devices(variant.precision or config.train.precision, gpu_count())
    keras.utils.set_random_seed(config.seed)
    with dtype_policy(plan.precision):
        model = build_seq2seq(config.model, data.src_vocab_size, data.tgt_vocab_size)
        compile_for_training(model, config.train, jit_compile=plan.jit_compile)
    dataset = make_dataset(
        subset, config.train.batch_size, config.train.bucket_boundaries, shuffle_seed=1
    )
    timer = EpochTimer()
    model.fit(dataset, epochs=epochs, callbacks=[timer.callback()], verbose=0)
    return {
        "variant": variant.name,
        "settings": dataclasses.asdict(variant),
        "vocab_size": data.tgt_vocab_size,
        "batch_size": config.train.batch_size,
        "precision": plan.precision,
        "jit_compile": plan.jit_compile,
        "parameters": model.count_params(),
        "pairs": len(subset),
        "target_tokens": subset.target_tokens,
        "epoch_wall_s": timer.wall,
        "epoch_cpu_s": timer.cpu,
        "tokens_per_s": subset.target_tokens / timer.wall[-1],
        "tokens_per_cpu_s": subset.target_tokens / timer.cpu[-1],
        "pairs_per_cpu_s": len(subset) / timer.cpu[-1],
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


# ------------------------------------------------------------------ the driver


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.variants.split(","):
            variant = VARIANTS[name]
            root = scratch_project(args.project, variant, Path(scratch))
            command = [sys.executable, __file__, "--worker", name, "--project", str(root)]
            command += ["--pairs", str(args.pairs), "--epochs", str(args.epochs)]
            env = {**os.environ, "CI": "true", "KERAS_BACKEND": variant.backend}
            done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  measured {name}", file=sys.stderr)
    return results


def print_table(results: list[dict[str, Any]]) -> None:
    before = next((r for r in results if r["variant"] == "before"), results[0])
    header = (
        f"{'variant':<11} {'vocab':>6} {'batch':>6} {'tok/s':>7} {'tok/cpu-s':>10} "
        f"{'pairs/cpu-s':>12} {'x before tok/cpu-s':>19} {'x before pairs/cpu-s':>21} "
        f"{'peak GiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['variant']:<11} {r['vocab_size']:>6} {r['batch_size']:>6} "
            f"{r['tokens_per_s']:>7.0f} {r['tokens_per_cpu_s']:>10.0f} "
            f"{r['pairs_per_cpu_s']:>12.1f} "
            f"{r['tokens_per_cpu_s'] / before['tokens_per_cpu_s']:>19.2f} "
            f"{r['pairs_per_cpu_s'] / before['pairs_per_cpu_s']:>21.2f} "
            f"{r['peak_rss_gib']:>9.2f}"
        )


def ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    """Issue 15's goal: today's defaults train >= 1.5x the target tokens per CPU-second."""
    by_name = {r["variant"]: r for r in results}
    if not {"before", "now"} <= set(by_name):
        return {}
    before, now = by_name["before"], by_name["now"]
    return {
        "now_over_before_tokens_per_cpu_s": now["tokens_per_cpu_s"] / before["tokens_per_cpu_s"],
        "now_over_before_pairs_per_cpu_s": now["pairs_per_cpu_s"] / before["pairs_per_cpu_s"],
        "now_over_before_tokens_per_s": now["tokens_per_s"] / before["tokens_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=REPO)
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = run_worker(VARIANTS[args.worker], args.project, args.pairs, args.epochs)
        print(json.dumps(result))
        return
    args.project = args.project.resolve()
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        sys.exit(f"--variants: unknown {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    results = measure(args)
    print_table(results)
    payload = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_1m": os.getloadavg()[0],
        },
        "project": str(args.project),
        "pairs": args.pairs,
        "epochs": args.epochs,
        "ratios": ratios(results),
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
