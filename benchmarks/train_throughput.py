"""Training throughput: the naive seed baseline vs our Seq2Seq model, on the same pairs.

    .venv/bin/python benchmarks/train_throughput.py [--project .] [--pairs 3000] [--epochs 2]

Reads the first `--pairs` pairs of a tokenized project (data/clean/train.* for the baseline's
words, data/tokens/train.npz for our subwords: the same sentences) and trains each variant in
its own subprocess, so each peak-memory figure (ru_maxrss) is that variant's alone:

  a_naive_baseline  one-hot inputs over a 1,000-word vocabulary, 256-unit LSTM encoder and
                    decoder, no attention, RMSprop, categorical cross-entropy, batch 64, every
                    sentence padded to the longest (the original seed script)
  b_ours_hidden256  pipeline/model at hidden_units 256 (per encoder direction; decoder 512),
                    batch 64 like the baseline, the rest as params.yaml configures it
  c_ours_default    pipeline/model and train settings exactly as params.yaml configures them

The first epoch includes graph tracing, so throughput is taken from the last epoch.
Target tokens are words for the baseline and subwords for ours, so pairs/s is reported too.
Prints a table and writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gzip
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "train_throughput.json"
VARIANTS = ("a_naive_baseline", "b_ours_hidden256", "c_ours_default")
BASELINE_VOCAB, BASELINE_UNITS, BASELINE_BATCH = 1000, 256, 64
PAD, UNK, BOS, EOS = 0, 1, 2, 3


# ------------------------------------------------------------------ shared data


def read_lines(path: Path, count: int) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n") for _, line in zip(range(count), handle, strict=False)]


def word_ids(sentences: list[str]) -> list[list[int]]:
    """Whitespace words -> ids over the 1,000-word vocabulary (4 specials + 996 commonest)."""
    counts = collections.Counter(word for line in sentences for word in line.split())
    vocab = {word: i + 4 for i, (word, _) in enumerate(counts.most_common(BASELINE_VOCAB - 4))}
    return [[vocab.get(word, UNK) for word in line.split()] for line in sentences]


def write_shared_data(project: Path, pairs: int, directory: Path) -> Path:
    """One npz with both token views of the same `pairs` sentences."""
    from pipeline.config import load_config
    from pipeline.tokenize import load_encoded_split

    config = load_config(project / "params.yaml")
    lang_src, lang_tgt = config.data.src_lang, config.data.tgt_lang
    clean = project / "data" / "clean"
    sources = word_ids(read_lines(clean / f"train.{lang_src}", pairs))
    targets = word_ids(read_lines(clean / f"train.{lang_tgt}", pairs))
    split = load_encoded_split(project / "data" / "tokens" / "train.npz")
    path = directory / "pairs.npz"
    np.savez(
        path,
        **_ragged("word_src", sources),
        **_ragged("word_tgt", targets),
        **_ragged("piece_src", [row.tolist() for row in split.sources[:pairs]]),
        **_ragged("piece_tgt", [row.tolist() for row in split.targets[:pairs]]),
    )
    return path


def vocab_sizes(project: Path) -> tuple[int, int]:
    from pipeline.tokenize import load_tokenizers

    tokenizers = load_tokenizers(project / "models" / "tokenizer")
    return tokenizers.src_vocab_size, tokenizers.tgt_vocab_size


def _ragged(name: str, rows: list[list[int]]) -> dict[str, np.ndarray]:
    offsets = np.zeros(len(rows) + 1, np.int64)
    offsets[1:] = np.cumsum([len(row) for row in rows])
    flat = np.array([i for row in rows for i in row], np.int32)
    return {f"{name}_ids": flat, f"{name}_offsets": offsets}


def _rows(archive: Any, name: str) -> list[np.ndarray]:
    ids, offsets = archive[f"{name}_ids"], archive[f"{name}_offsets"]
    return [ids[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


# ------------------------------------------------------------------ the workers


@dataclasses.dataclass
class EpochTimer:
    """Wall and process-CPU seconds of each epoch (CPU time is steadier on a shared machine)."""

    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)

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


def naive_baseline(data: Any, epochs: int) -> tuple[EpochTimer, int, int]:
    """The seed script: one-hot everything, pad to the longest sentence, no attention."""
    import keras

    sources, targets = _rows(data, "word_src"), _rows(data, "word_tgt")
    source_len = max(len(row) for row in sources)
    target_len = max(len(row) for row in targets) + 1
    encoder_x = _one_hot_padded(sources, source_len)
    decoder_x = _one_hot_padded([np.r_[BOS, row] for row in targets], target_len)
    decoder_y = _one_hot_padded([np.r_[row, EOS] for row in targets], target_len)

    encoder_in = keras.Input((None, BASELINE_VOCAB))
    _, state_h, state_c = keras.layers.LSTM(BASELINE_UNITS, return_state=True)(encoder_in)
    decoder_in = keras.Input((None, BASELINE_VOCAB))
    decoded = keras.layers.LSTM(BASELINE_UNITS, return_sequences=True)(
        decoder_in, initial_state=[state_h, state_c]
    )
    probs = keras.layers.Dense(BASELINE_VOCAB, activation="softmax")(decoded)
    model = keras.Model([encoder_in, decoder_in], probs)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    timer = EpochTimer()
    model.fit(
        [encoder_x, decoder_x],
        decoder_y,
        batch_size=BASELINE_BATCH,
        epochs=epochs,
        callbacks=[timer.callback()],
        verbose=0,
    )
    return timer, sum(len(row) + 1 for row in targets), model.count_params()


def _one_hot_padded(rows: list[np.ndarray], length: int) -> np.ndarray:
    array = np.zeros((len(rows), length, BASELINE_VOCAB), np.float32)
    for i, row in enumerate(rows):
        array[i, np.arange(len(row)), row] = 1.0
    return array


def ours(data: Any, epochs: int, at_baseline_size: bool) -> tuple[EpochTimer, int, int]:
    """pipeline/model + pipeline/train's dataset and compile, as `mt train` runs them."""
    import keras

    from pipeline.config import load_config
    from pipeline.model.seq2seq import build_seq2seq
    from pipeline.train import compile_for_training, make_dataset, teacher_forcing_pairs

    config = load_config(Path(os.environ["BENCH_PARAMS"]))
    model_config, train_config = config.model, config.train
    if at_baseline_size:
        model_config = dataclasses.replace(model_config, hidden_units=BASELINE_UNITS)
        train_config = dataclasses.replace(train_config, batch_size=BASELINE_BATCH)
    sources, targets = _rows(data, "piece_src"), _rows(data, "piece_tgt")
    pairs = teacher_forcing_pairs(sources, targets, train_config.max_tokens)
    src_vocab, tgt_vocab = (int(size) for size in os.environ["BENCH_VOCAB"].split(","))
    keras.utils.set_random_seed(config.seed)
    model = build_seq2seq(model_config, src_vocab, tgt_vocab)
    compile_for_training(model, train_config, jit_compile=False)
    dataset = make_dataset(
        pairs, train_config.batch_size, train_config.bucket_boundaries, shuffle_seed=config.seed
    )
    timer = EpochTimer()
    model.fit(dataset, epochs=epochs, callbacks=[timer.callback()], verbose=0)
    return timer, pairs.target_tokens, model.count_params()


def run_worker(variant: str, data_path: Path, epochs: int) -> dict[str, Any]:
    data = np.load(data_path)
    if variant == "a_naive_baseline":
        timer, tokens, params = naive_baseline(data, epochs)
    else:
        timer, tokens, params = ours(data, epochs, at_baseline_size=variant == "b_ours_hidden256")
    pairs = len(data["word_src_offsets"]) - 1
    return {
        "variant": variant,
        "parameters": params,
        "pairs": pairs,
        "target_tokens": tokens,
        "epoch_wall_s": timer.wall,
        "epoch_cpu_s": timer.cpu,
        "tokens_per_s": tokens / timer.wall[-1],
        "pairs_per_s": pairs / timer.wall[-1],
        "tokens_per_cpu_s": tokens / timer.cpu[-1],
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


# ------------------------------------------------------------------ the driver


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as scratch:
        data_path = write_shared_data(args.project, args.pairs, Path(scratch))
        env = {
            **os.environ,
            "BENCH_PARAMS": str(args.project / "params.yaml"),
            "CI": "true",
            "BENCH_VOCAB": ",".join(str(size) for size in vocab_sizes(args.project)),
        }
        results = []
        for variant in args.variants.split(","):
            command = [
                sys.executable,
                __file__,
                "--worker",
                variant,
                "--data",
                str(data_path),
                "--epochs",
                str(args.epochs),
            ]
            done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  measured {variant}", file=sys.stderr)
    return results


def print_table(results: list[dict[str, Any]]) -> None:
    baseline = next((r for r in results if r["variant"] == "a_naive_baseline"), results[0])
    header = (
        f"{'variant':<18} {'params':>10} {'tok/s':>9} {'pairs/s':>8} {'tok/cpu-s':>10} "
        f"{'x base tok/s':>12} {'x base pairs/s':>14} {'peak GiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['variant']:<18} {r['parameters']:>10,} {r['tokens_per_s']:>9.0f} "
            f"{r['pairs_per_s']:>8.1f} {r['tokens_per_cpu_s']:>10.0f} "
            f"{r['tokens_per_s'] / baseline['tokens_per_s']:>12.2f} "
            f"{r['pairs_per_s'] / baseline['pairs_per_s']:>14.2f} {r['peak_rss_gib']:>9.2f}"
        )


def targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 4's targets: (b) >= 3x (a) target tokens/s; peak training memory <= 4 GiB."""
    by_name = {r["variant"]: r for r in results}
    summary: dict[str, Any] = {}
    if {"a_naive_baseline", "b_ours_hidden256"} <= set(by_name):
        a, b = by_name["a_naive_baseline"], by_name["b_ours_hidden256"]
        summary["b_over_a_tokens_per_s"] = b["tokens_per_s"] / a["tokens_per_s"]
        summary["b_over_a_tokens_per_cpu_s"] = b["tokens_per_cpu_s"] / a["tokens_per_cpu_s"]
        summary["b_over_a_pairs_per_s"] = b["pairs_per_s"] / a["pairs_per_s"]
        summary["b_at_least_3x_a"] = summary["b_over_a_tokens_per_s"] >= 3.0
    ours = [r for r in results if r["variant"] != "a_naive_baseline"]
    summary["ours_peak_rss_gib"] = max((r["peak_rss_gib"] for r in ours), default=None)
    summary["ours_within_4_gib"] = all(r["peak_rss_gib"] <= 4.0 for r in ours)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=REPO)
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.data, args.epochs)))
        return
    args.project = args.project.resolve()
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
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
