"""Decoding speed on Multi30k test2016: the seed's per-token eager loop vs batched search.

    .venv/bin/python benchmarks/decode_speed.py                   # trains a small model first
    .venv/bin/python benchmarks/decode_speed.py --project .       # this project's models/
    .venv/bin/python benchmarks/decode_speed.py --model DIR       # DIR/seq2seq.keras + tokenizer/

Three ways, one run, same model and machine:
- seed: one sentence at a time, one eager `model(...)` call per output token on the growing
  prefix (how the project's seed script decoded); timed on --seed-sentences sentences
- greedy: pipeline.translator.Translator, batched greedy search in one tf.function
- beam5: the same with beam size 5
Prints a table and writes benchmarks/results/decode_speed.json, including BLEU of greedy and
beam 5 against the raw references. Target: batched greedy >= 10x the seed's sentences/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pipeline.model.decoding import DecodingSettings  # noqa: E402
from pipeline.text import normalize_text  # noqa: E402
from pipeline.tokenize import BOS_ID, EOS_ID  # noqa: E402
from pipeline.translator import Translator  # noqa: E402
from tests.tiny_translator import read_gz_lines, train_quick_model  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "decode_speed.json"
DEFAULT_DATA = Path(os.environ.get("MT_DATA_DIR") or REPO_ROOT.parent / "shared/data/multi30k")
TEST_SPLIT = "test_2016_flickr"


def seed_style_translate(translator: Translator, text: str, settings: DecodingSettings) -> str:
    """The seed's decoder: re-run the whole model eagerly on the prefix for every token."""
    source = translator.encode_sources([text])[0]
    if not source:
        return ""
    limit = int(settings.max_length_ratio * len(source)) + settings.max_length_offset
    prefix = [BOS_ID]
    for _ in range(limit):
        logits = translator.model(
            {"source": np.array([source], np.int32), "target_in": np.array([prefix], np.int32)},
            training=False,
        )
        token = int(np.argmax(np.asarray(logits)[0, -1]))
        if token == EOS_ID:
            break
        prefix.append(token)
    return str(translator.tokenizers.tgt.decode(prefix[1:]))


def timed(function: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def measure(translator: Translator, sources: list[str], seed_count: int) -> dict[str, Any]:
    greedy = translator.with_settings(
        DecodingSettings(beam_size=1, batch_size=translator.settings.batch_size)
    )
    beam = translator.with_settings(
        DecodingSettings(beam_size=5, batch_size=translator.settings.batch_size)
    )
    for warm in (greedy, beam):  # trace the tf.functions outside the timed runs
        warm.translate(sources[:8])
    warm_input = np.array([[BOS_ID + 2, BOS_ID + 3]], np.int32)  # first eager call builds state
    translator.model({"source": warm_input, "target_in": warm_input}, training=False)
    seed_sources = sources[:seed_count]
    settings = greedy.settings
    seed_out, seed_seconds = timed(
        lambda: [seed_style_translate(translator, text, settings) for text in seed_sources]
    )
    greedy_out, greedy_seconds = timed(greedy.translate, sources)
    beam_out, beam_seconds = timed(beam.translate, sources)
    rows = {
        "seed (eager, per sentence, per token)": (seed_out, seed_seconds),
        f"batched greedy (batch {settings.batch_size})": (greedy_out, greedy_seconds),
        f"batched beam 5 (batch {settings.batch_size})": (beam_out, beam_seconds),
    }
    agreement = sum(a == b for a, b in zip(seed_out, greedy_out, strict=False))
    return {"rows": rows, "seed_greedy_agreement": agreement}


def mean_pieces(translator: Translator, texts: list[str]) -> float:
    """Average output length in target pieces: equal work per sentence is what makes the
    sentences/s of the three methods comparable."""
    return float(np.mean([len(ids) for ids in translator.tokenizers.tgt.encode(texts)]))


def method_row(
    translator: Translator, name: str, outputs: list[str], seconds: float
) -> dict[str, Any]:
    return {
        "method": name,
        "sentences": len(outputs),
        "seconds": round(seconds, 3),
        "sentences_per_s": len(outputs) / seconds,
        "mean_output_pieces": round(mean_pieces(translator, outputs), 2),
    }


def report(
    translator: Translator, measured: dict[str, Any], references: list[str], model: str
) -> dict[str, Any]:
    import sacrebleu

    methods = [
        method_row(translator, name, outputs, seconds)
        for name, (outputs, seconds) in measured["rows"].items()
    ]
    seed_rate = methods[0]["sentences_per_s"]
    for row in methods:
        row["speedup_vs_seed"] = round(row["sentences_per_s"] / seed_rate, 2)
        row["sentences_per_s"] = round(row["sentences_per_s"], 2)
    outputs = [outputs for outputs, _ in measured["rows"].values()]
    return {
        "benchmark": "decode_speed",
        "split": TEST_SPLIT,
        "model": model,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "methods": methods,
        "bleu": {
            "greedy": round(sacrebleu.corpus_bleu(outputs[1], [references]).score, 2),
            "beam5": round(sacrebleu.corpus_bleu(outputs[2], [references]).score, 2),
        },
        "seed_sentences_identical_to_greedy": measured["seed_greedy_agreement"],
        "greedy_speedup_target": 10.0,
        "greedy_speedup": methods[1]["speedup_vs_seed"],
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"\nDecoding {result['split']} with {result['model']}")
    header = f"{'method':<40} {'sentences':>9} {'seconds':>9} {'sent/s':>9} {'pieces':>7}"
    print(f"{header} {'speedup':>8}")
    for row in result["methods"]:
        print(
            f"{row['method']:<40} {row['sentences']:>9} {row['seconds']:>9.2f} "
            f"{row['sentences_per_s']:>9.2f} {row['mean_output_pieces']:>7.1f} "
            f"{row['speedup_vs_seed']:>7.1f}x"
        )
    seed_rows = result["methods"][0]["sentences"]
    same = result["seed_sentences_identical_to_greedy"]
    print(f"seed and batched greedy agree on {same} of {seed_rows} sentences")
    print(f"BLEU greedy {result['bleu']['greedy']:.2f}, beam 5 {result['bleu']['beam5']:.2f}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="directory with seq2seq.keras + tokenizer/")
    parser.add_argument("--project", type=Path, help="project root whose models/ to use")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--seed-sentences", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-pairs", type=int, default=12000)
    parser.add_argument("--train-epochs", type=int, default=5)
    parser.add_argument("--save-model", type=Path, help="keep the quickly trained model here")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    sources = [normalize_text(s) for s in read_gz_lines(args.data_dir / f"{TEST_SPLIT}.en.gz")]
    references = read_gz_lines(args.data_dir / f"{TEST_SPLIT}.de.gz")
    sources, references = sources[: args.sentences], references[: args.sentences]
    with tempfile.TemporaryDirectory() as scratch:
        if args.model or args.project:
            directory = args.model or args.project / "models"
            model_name = str(directory)
        else:
            directory = train_quick_model(
                args.data_dir,
                args.save_model or Path(scratch),
                args.train_pairs,
                args.train_epochs,
            )
            model_name = (
                f"quick model: emb 128, hidden 128, {args.train_pairs} pairs, "
                f"{args.train_epochs} epochs"
            )
        settings = DecodingSettings(batch_size=args.batch_size)
        translator = Translator.load(
            directory / "seq2seq.keras", directory / "tokenizer", settings
        )
        measured = measure(translator, sources, args.seed_sentences)
        result = report(translator, measured, references, model_name)
    print_table(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
