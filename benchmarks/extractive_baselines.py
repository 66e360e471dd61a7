"""The floor a summariser must beat: extractive baselines on the summarisation corpus.

Scores `first k words` and `first sentence` (pipeline/metrics/baselines.py) with the pipeline's
own ROUGE (pipeline/metrics/rouge.py: rouge-score, stemmed, mean F1 with a bootstrap 95% CI),
against the figures in the corpus's README (rouge-score's BootstrapAggregator, so they may
differ from a plain mean in the second decimal). Prints a table; writes
benchmarks/results/extractive_baselines.json.

    .venv/bin/python benchmarks/extractive_baselines.py [--data ../shared/data/debian-descriptions]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.metrics.baselines import extractive_baselines  # noqa: E402
from pipeline.metrics.rouge import corpus_rouge  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "debian-descriptions"
RESULT = REPO / "benchmarks" / "results" / "extractive_baselines.json"
RESAMPLES = 1000
SEED = 1234
# The corpus README's ROUGE-1 / ROUGE-2 / ROUGE-L on test.
README = {
    "first 6 words": (26.97, 11.43, 24.41),
    "first 8 words": (30.65, 13.51, 27.10),
    "first 10 words": (31.73, 14.15, 27.67),
    "first sentence": (33.15, 15.91, 28.39),
}


def read_pairs(path: Path) -> tuple[list[str], list[str]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        pairs = [line.rstrip("\n").split("\t") for line in handle]
    return [source for source, _ in pairs], [target for _, target in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    sources, references = read_pairs(args.data / f"{args.split}.tsv.gz")
    started = time.perf_counter()
    rows = []
    for name, summaries in extractive_baselines(sources).items():
        scores = corpus_rouge(summaries, references, RESAMPLES, SEED)
        rows.append({"baseline": name, **{kind: vars(score) for kind, score in scores.items()}})
    seconds = round(time.perf_counter() - started, 1)
    print(f"{args.split}: {len(sources)} pairs, {RESAMPLES} resamples, {seconds} s")
    print(f"{'baseline':<16} {'ROUGE-1':>14} {'ROUGE-2':>14} {'ROUGE-L':>14}  README (1/2/L)")
    for row in rows:
        cells = [
            f"{row[k]['score']:6.2f} ± {row[k]['ci']:4.2f}" for k in ("rouge1", "rouge2", "rougeL")
        ]
        readme = "/".join(f"{value:.2f}" for value in README.get(row["baseline"], ()))
        print(f"{row['baseline']:<16} {cells[0]:>14} {cells[1]:>14} {cells[2]:>14}  {readme}")
    RESULT.write_text(
        json.dumps(
            {
                "split": args.split,
                "pairs": len(sources),
                "resamples": RESAMPLES,
                "seed": SEED,
                "seconds": seconds,
                "rows": rows,
                "readme": README,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
