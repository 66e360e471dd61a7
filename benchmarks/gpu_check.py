"""GPU check: train the GPU preset on Multi30k for a fixed time, then decode and score test2016.

One prepared run for the lent GPU machine (docs/training.md, "GPU preset"), which has JAX but no
TensorFlow: the Keras backend defaults to jax here (set KERAS_BACKEND to choose another), and
nothing on this path imports tensorflow, mlflow, dvc, airflow or great_expectations under jax.
It reuses the pipeline's own steps in-process, without DVC stages or MLflow:

    {split}.{lang}[.gz] ─► fetch's reader ─► clean's rules ─► SentencePiece (tokenize)
        ─► teacher-forcing batches ─► build_seq2seq + compile_for_training (the GPU preset)
        ─► fit for --minutes (early stopping on val_loss, best weights kept)
        ─► float32 export ─► Translator (params.yaml `decode:`) ─► sacreBLEU as evaluate scores

Prints a table and writes benchmarks/results/gpu_check.json: BLEU cased and lowercased on
test_2016_flickr, target tokens/s, seconds per epoch, epochs done, peak accelerator memory (null
on a CPU), the device and the versions. The JSON is also written once training ends (with
"evaluation": null), so a run stopped during decoding still leaves its training numbers.

    .venv/bin/python benchmarks/gpu_check.py                 # make gpu-check: this machine
    bash benchmarks/gpu_carry.sh                             # the call for the lent GPU machine
"""

from __future__ import annotations

import os

# Before anything imports Keras: the backend is fixed at its first import.
os.environ.setdefault("KERAS_BACKEND", "jax")

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

# Beside this script, so on sys.path when it runs.
from gpu_check_device import Accelerator, accelerator, peak_memory_bytes, versions  # noqa: E402
from gpu_check_training import TrainedModel, train, training_summary  # noqa: E402

from pipeline.aligned_text import text_lines  # noqa: E402
from pipeline.config import Config, parse_config  # noqa: E402
from pipeline.data.clean import Pair, clean_corpus  # noqa: E402
from pipeline.data.fetch import read_dir_source  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.text import remove_invisible  # noqa: E402
from pipeline.tokenize import (  # noqa: E402
    TokenizerPair,
    processor_from_bytes,
    train_tokenizer_models,
)
from pipeline.training.data import (  # noqa: E402
    TeacherForcingPairs,
    TrainingData,
    teacher_forcing_pairs,
)

log = logging.getLogger("gpu_check")

RESULTS = REPO_ROOT / "benchmarks" / "results" / "gpu_check.json"
# The team's Multi30k mirror (the Makefile exports it), else what `dvc repro fetch` wrote.
DEFAULT_DATA = Path(os.environ.get("MT_DATA_DIR") or REPO_ROOT / "data" / "raw")
# Issue 15's target for the preset; the best published single RNN on this data has 39.0.
TARGET_BLEU_LOWERCASE = 40.0
# Training minutes that leave room, inside one 10-minute device call, for installing the
# carried wheels, starting JAX, tokenizing (~1 min together) and beam-decoding test2016 (~2 min).
DEFAULT_MINUTES = 5.0

# The GPU preset: params.yaml overrides, one dotted key a line.
PRESET_FILE = REPO_ROOT / "benchmarks" / "gpu_preset.yaml"


# ----------------------------------------------------------------------------------- config


def parse_override(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` (VALUE in YAML, as `dvc exp run -S` reads it) -> (dotted key, value)."""
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise PipelineError(f"--set {text!r}: expected KEY=VALUE, e.g. train.batch_size=128")
    return key.strip(), yaml.safe_load(value)


def set_dotted(raw: dict[str, Any], key: str, value: Any, origin: str) -> None:
    """raw[a][b] = value for key "a.b"; a key params.yaml lacks is refused, naming `origin`."""
    *sections, name = key.split(".")
    node: Any = raw
    for section in sections:
        node = node.get(section) if isinstance(node, dict) else None
    if not isinstance(node, dict) or name not in node:
        raise PipelineError(f"{origin}: `{key}` is not a key of params.yaml (docs/params.md)")
    node[name] = value


def read_preset(path: Path = PRESET_FILE) -> dict[str, Any]:
    """The GPU preset: {dotted params.yaml key: value}."""
    preset = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(preset, dict):
        raise PipelineError(f"{path}: expected a mapping of dotted params.yaml keys to values")
    return preset


def preset_config(
    params: Path, preset: dict[str, Any], data_dir: Path, overrides: Sequence[str]
) -> Config:
    """params.yaml + the GPU preset + data from `data_dir` + `--set` overrides, validated."""
    if not params.is_file():
        raise PipelineError(f"{params}: params file not found (--params)")
    raw = yaml.safe_load(params.read_text(encoding="utf-8"))
    for key, value in preset.items():
        set_dotted(raw, key, value, str(PRESET_FILE))
    set_dotted(raw, "data.source", "dir", "gpu_check")
    set_dotted(raw, "data.path", str(data_dir), "gpu_check")
    for text in overrides:
        set_dotted(raw, *parse_override(text), f"--set {text}")
    return parse_config(raw, f"{params} with the GPU preset and --set")


# ------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Corpus:
    """Cleaned train/val pairs, and the test split as evaluate reads it."""

    train: list[Pair]
    val: list[Pair]
    test_sources: list[str]  # normalised, every line kept
    test_references: list[str]  # raw, without invisible characters


def read_corpus(config: Config) -> Corpus:
    """The splits through fetch's reader and clean's rules (no GX suite: not on the device)."""
    data = config.data
    sides = read_dir_source(data, Path(data.path)).sides
    lines = {(side.split, side.lang): text_lines(side.text.decode("utf-8")) for side in sides}
    raw = {
        split: list(zip(lines[split, data.src_lang], lines[split, data.tgt_lang], strict=True))
        for split in data.splits
    }
    cleaned = clean_corpus(raw, data.train_split, data.val_split, config.clean)
    test = data.test_splits[0]
    return Corpus(
        train=cleaned[data.train_split].pairs,
        val=cleaned[data.val_split].pairs,
        test_sources=[source for source, _ in cleaned[test].pairs],
        test_references=[remove_invisible(line) for line in lines[test, data.tgt_lang]],
    )


def tokenize(corpus: Corpus, config: Config) -> tuple[TokenizerPair, TrainingData]:
    """SentencePiece as `mt tokenize` trains it, then the teacher-forcing rows `mt train` uses."""
    models = train_tokenizer_models(
        [s for s, _ in corpus.train], [t for _, t in corpus.train], config.tokenize, config.seed
    )
    tokenizers = TokenizerPair(*(processor_from_bytes(model) for model in models))

    def rows(pairs: list[Pair]) -> TeacherForcingPairs:
        sources = tokenizers.src.encode([s for s, _ in pairs], out_type=int)
        targets = tokenizers.tgt.encode([t for _, t in pairs], out_type=int)
        return teacher_forcing_pairs(sources, targets, config.train.max_tokens)

    data = TrainingData(
        rows(corpus.train), rows(corpus.val), tokenizers.src_vocab_size, tokenizers.tgt_vocab_size
    )
    return tokenizers, data


@dataclass(frozen=True)
class Prepared:
    """Everything training needs, read and tokenized."""

    preset: dict[str, Any]
    config: Config
    device: Accelerator
    corpus: Corpus
    tokenizers: TokenizerPair
    data: TrainingData


def prepare(args: argparse.Namespace) -> Prepared:
    """The config (params.yaml + preset + --set), the device, the corpus and its tokens."""
    if not args.data_dir.is_dir():
        raise PipelineError(
            f"{args.data_dir}: not a folder; --data-dir must hold Multi30k's "
            "{split}.{lang}[.gz] files (train, val, test_2016_flickr; en and de), or run "
            "`dvc repro fetch` to fill data/raw"
        )
    preset = read_preset()
    config = preset_config(args.params, preset, args.data_dir, args.set)
    device = accelerator()
    log.info("training on %s, Keras backend %s", device.description, device.backend)
    corpus = read_corpus(config)
    tokenizers, data = tokenize(corpus, config)
    return Prepared(preset, config, device, corpus, tokenizers, data)


# ------------------------------------------------------------------------------- evaluation


def translate_and_score(model: Any, prepared: Prepared) -> dict[str, Any]:
    """Decode the test split with params.yaml's `decode:` settings; BLEU as evaluate scores it."""
    from sacrebleu.metrics import BLEU

    from pipeline.evaluate import score_with_ci
    from pipeline.model.decoding import DecodingSettings
    from pipeline.translator import Translator

    config, corpus = prepared.config, prepared.corpus
    settings = DecodingSettings.from_config(config.decode)
    started = time.monotonic()
    hypotheses = Translator(model, prepared.tokenizers, settings).translate(corpus.test_sources)
    seconds = time.monotonic() - started
    resamples, seed = config.evaluate.bootstrap_resamples, config.seed
    scores = {
        name: score_with_ci(metric, hypotheses, corpus.test_references, resamples, seed)
        for name, metric in (("bleu", BLEU()), ("bleu_lowercase", BLEU(lowercase=True)))
    }
    return {
        "split": config.data.test_splits[0],
        "sentences": len(hypotheses),
        "beam_size": settings.beam_size,
        "length_penalty": settings.length_penalty,
        "decode_seconds": round(seconds, 3),
        "sentences_per_second": round(len(hypotheses) / seconds, 2),
        "bleu": scores["bleu"].score,
        "bleu_ci95": list(scores["bleu"].ci95),
        "bleu_lowercase": scores["bleu_lowercase"].score,
        "signatures": {name: result.signature for name, result in scores.items()},
    }


# ----------------------------------------------------------------------------------- report


def result_record(
    args: argparse.Namespace,
    prepared: Prepared,
    trained: TrainedModel,
    timings: dict[str, float],
    evaluation: dict[str, Any] | None,
) -> dict[str, Any]:
    device, data = prepared.device, prepared.data
    lowercased = evaluation["bleu_lowercase"] if evaluation else None
    return {
        "benchmark": "gpu_check",
        "preset": prepared.preset,
        "overrides": list(args.set),
        "backend": device.backend,
        "tensorflow_loaded": "tensorflow" in sys.modules,
        "device": {"platform": device.platform, "description": device.description},
        "gpus": device.gpus,
        "peak_gpu_memory_bytes": peak_memory_bytes(device),
        "versions": versions(device.backend),
        "data": {
            "train_pairs": len(data.train),
            "val_pairs": len(data.val),
            "train_target_tokens": data.train.target_tokens,
            "src_vocab_size": data.src_vocab_size,
            "tgt_vocab_size": data.tgt_vocab_size,
        },
        "timings_seconds": {name: round(seconds, 1) for name, seconds in timings.items()},
        "training": training_summary(trained, args.minutes, args.max_steps),
        "evaluation": evaluation,
        "target_bleu_lowercase": TARGET_BLEU_LOWERCASE,
        "meets_target": None if lowercased is None else lowercased >= TARGET_BLEU_LOWERCASE,
    }


def print_table(result: dict[str, Any]) -> None:
    training, evaluation = result["training"], result["evaluation"] or {}
    peak = result["peak_gpu_memory_bytes"]
    rows = [
        ("device", f"{result['device']['description']} ({result['backend']})"),
        ("precision", training["precision"]),
        ("epochs done", f"{training['epochs_done']} (stopped by {training['stopped_by']})"),
        ("first epoch (compiles)", f"{training['first_epoch_seconds']} s"),
        ("seconds per epoch", training["seconds_per_epoch"]),
        ("target tokens/s", training["target_tokens_per_second"]),
        ("peak GPU memory", "n/a (no GPU)" if peak is None else f"{peak / 2**30:.2f} GiB"),
        ("test BLEU", evaluation.get("bleu")),
        ("test BLEU lowercased", evaluation.get("bleu_lowercase")),
        ("decode sentences/s", evaluation.get("sentences_per_second")),
        ("total seconds", result["timings_seconds"]["total"]),
    ]
    print(f"\nGPU check: the GPU preset on {evaluation.get('split', 'test')}")
    for name, value in rows:
        print(f"{name:<24} {value}")
    print(f"target: lowercased BLEU >= {TARGET_BLEU_LOWERCASE}; met: {result['meets_target']}")


# ------------------------------------------------------------------------------------- main


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="Multi30k folder")
    parser.add_argument("--minutes", type=positive_float, default=DEFAULT_MINUTES)
    parser.add_argument("--max-steps", type=positive_int, help="stop after this many steps")
    parser.add_argument("--params", type=Path, default=REPO_ROOT / "params.yaml")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override the preset"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


class Stopwatch:
    """Wall-clock seconds of each phase of the run."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()

    def lap(self) -> float:
        """Seconds since the previous lap (or the start)."""
        now = time.monotonic()
        seconds, self.last = now - self.last, now
        return seconds

    def total(self) -> float:
        return time.monotonic() - self.started


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.atomic import atomic_write_json

    clock = Stopwatch()
    prepared = prepare(args)
    timings = {"prepare": clock.lap()}
    trained = train(prepared.config, prepared.data, prepared.device, args.minutes, args.max_steps)
    timings["train"] = clock.lap()
    timings["total"] = clock.total()
    # Written now, so a run cut off while decoding still leaves its training numbers.
    atomic_write_json(args.output, result_record(args, prepared, trained, timings, None))
    evaluation = translate_and_score(trained.model, prepared)
    timings["evaluate"] = clock.lap()
    timings["total"] = clock.total()
    result = result_record(args, prepared, trained, timings, evaluation)
    atomic_write_json(args.output, result)
    return result


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        result = run(args)
    except PipelineError as error:
        print(f"gpu_check: {error}", file=sys.stderr)
        return error.exit_code
    print_table(result)
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
