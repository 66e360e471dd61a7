"""`mt evaluate`: translate each test split, and the val split, and score them with sacreBLEU.

For every split in `data.test_splits` the normalised, unfiltered source (data/clean/) is
translated and scored against the RAW reference (data/raw/), so the numbers compare with
published Multi30k results: cased detokenised BLEU (13a), lowercased BLEU, chrF and TER, each
with its sacreBLEU signature and a 95% bootstrap confidence interval (sacreBLEU's own resampling,
`evaluate.bootstrap_resamples` samples, seeded with the project `seed`).

Outputs, all written atomically:
- metrics.json: {split: {bleu, bleu_ci95, bleu_lowercase, chrf, chrf_ci95, ter, ter_ci95,
  sentences, signatures}} for `dvc metrics`, each test split first, then `data.val_split`
  (e.g. `val.bleu`): the score sweeps choose by, so the test splits stay for the gate. The val
  split is scored from data/clean on both sides (clean drops val pairs, so the raw references
  no longer line up); the registry and the gate read only the test splits' entries.
- reports/eval/: hypotheses/<split>.txt (one line per test sentence, the registry's paired
  bootstrap reads it), samples.md, bleu_by_length.csv (the DVC plot, first test split; other
  splits get bleu_by_length_<split>.csv), attention/<split>_<line>.png, report.md, and
  provenance.json: the sha256 of the model, tokenizer, references, hypotheses and metrics.json
  of this run, so `mt register` can refuse outputs that do not belong together
  (pipeline/eval_provenance.py)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.metrics.base import Metric

from pipeline.aligned_text import read_aligned_lines
from pipeline.atomic import atomic_directory, atomic_write_text, json_text
from pipeline.config import Config, load_config
from pipeline.errors import ConfigError, DataError
from pipeline.eval_provenance import EvaluatedModel, references_of, write_record
from pipeline.paths import ProjectPaths, project_paths, raw_file
from pipeline.pause_points import pause_point
from pipeline.text import remove_invisible

log = logging.getLogger(__name__)

# Source-length buckets (whitespace tokens, inclusive) for bleu_by_length.csv.
LENGTH_BUCKETS: tuple[tuple[int, int | None], ...] = (
    (1, 5),
    (6, 10),
    (11, 15),
    (16, 20),
    (21, 25),
    (26, None),
)


@dataclass(frozen=True)
class MetricResult:
    score: float
    ci95: tuple[float, float]
    signature: str


@dataclass(frozen=True)
class SplitData:
    """One test split: normalised sources and raw references, line-aligned."""

    name: str
    sources: list[str]
    references: list[str]


@dataclass
class SplitEvaluation:
    split: SplitData
    hypotheses: list[str]
    metrics: dict[str, Any]
    by_length: list[dict[str, Any]]
    sample_rows: list[int]
    attention_maps: dict[int, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- scoring core


@contextlib.contextmanager
def sacrebleu_seed(seed: int) -> Iterator[None]:
    """sacreBLEU seeds its bootstrap from $SACREBLEU_SEED; set it to ours for the block."""
    previous = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SACREBLEU_SEED"]
        else:
            os.environ["SACREBLEU_SEED"] = previous


def score_with_ci(
    metric: Metric, hypotheses: Sequence[str], references: Sequence[str], resamples: int, seed: int
) -> MetricResult:
    """Corpus score, bootstrap 95% CI (mean ± half the 2.5-97.5 percentile range, as sacreBLEU
    reports it) and the signature, which records the resamples and the seed."""
    if resamples < 2:
        raise ConfigError(
            f"params.yaml: `evaluate.bootstrap_resamples` is {resamples}; a confidence "
            "interval needs at least 2 resamples (1000 is usual)"
        )
    with sacrebleu_seed(seed):
        result = metric.corpus_score(list(hypotheses), [list(references)], n_bootstrap=resamples)
    # sacreBLEU keeps the bootstrap mean and half-width on these two attributes.
    low, high = result._mean - result._ci, result._mean + result._ci
    return MetricResult(
        score=_rounded(result.score),
        ci95=(_rounded(low), _rounded(high)),
        signature=str(metric.get_signature()),
    )


def _rounded(value: float) -> float:
    return round(float(value), 4)


def corpus_metrics(
    hypotheses: Sequence[str], references: Sequence[str], resamples: int, seed: int
) -> dict[str, Any]:
    """The metrics.json entry of one split."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    scored = {
        "bleu": score_with_ci(BLEU(), hypotheses, references, resamples, seed),
        "bleu_lowercase": score_with_ci(
            BLEU(lowercase=True), hypotheses, references, resamples, seed
        ),
        "chrf": score_with_ci(CHRF(), hypotheses, references, resamples, seed),
        "ter": score_with_ci(TER(), hypotheses, references, resamples, seed),
    }
    entry: dict[str, Any] = {
        "bleu": scored["bleu"].score,
        "bleu_ci95": list(scored["bleu"].ci95),
        "bleu_lowercase": scored["bleu_lowercase"].score,
        "chrf": scored["chrf"].score,
        "chrf_ci95": list(scored["chrf"].ci95),
        "ter": scored["ter"].score,
        "ter_ci95": list(scored["ter"].ci95),
        "sentences": len(hypotheses),
        "signatures": {name: result.signature for name, result in scored.items()},
    }
    return entry


def bucket_label(low: int, high: int | None) -> str:
    return f"{low}+" if high is None else f"{low}-{high}"


def bleu_by_length(
    sources: Sequence[str], hypotheses: Sequence[str], references: Sequence[str]
) -> list[dict[str, Any]]:
    """Corpus BLEU per source-length bucket (whitespace tokens); empty buckets are left out."""
    rows = []
    lengths = [len(source.split()) for source in sources]
    for low, high in LENGTH_BUCKETS:
        members = [i for i, n in enumerate(lengths) if n >= low and (high is None or n <= high)]
        if not members:
            continue
        score = BLEU().corpus_score(
            [hypotheses[i] for i in members], [[references[i] for i in members]]
        )
        rows.append(
            {
                "source_length": bucket_label(low, high),
                "bleu": _rounded(score.score),
                "sentences": len(members),
            }
        )
    return rows


def choose_sample_rows(total: int, count: int, seed: int) -> list[int]:
    """`count` distinct row indices, seeded, in file order."""
    chosen = np.random.default_rng(seed).choice(total, size=min(count, total), replace=False)
    return sorted(int(row) for row in chosen)


# ------------------------------------------------------------------------------- reports


def samples_markdown(evaluations: Sequence[SplitEvaluation]) -> str:
    lines = ["# Sample translations", ""]
    for evaluation in evaluations:
        split = evaluation.split
        lines += [f"## {split.name}", ""]
        for row in evaluation.sample_rows:
            lines += [
                f"### Line {row + 1}",
                "",
                f"- **Source:** {split.sources[row]}",
                f"- **Reference:** {split.references[row]}",
                f"- **Hypothesis:** {evaluation.hypotheses[row]}",
                "",
            ]
    return "\n".join(lines)


def by_length_csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=["source_length", "bleu", "sentences"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def by_length_filename(split_index: int, split: str) -> str:
    """The first test split feeds the DVC plot in dvc.yaml; the others get their own file."""
    return "bleu_by_length.csv" if split_index == 0 else f"bleu_by_length_{split}.csv"


def attention_filename(split: str, row: int) -> str:
    return f"attention/{split}_{row + 1}.png"


def plot_attention(source_pieces: list[str], target_pieces: list[str], weights: Any) -> Any:
    """A heat map (target rows, source columns) as a matplotlib Figure, no pyplot state."""
    from matplotlib.figure import Figure

    rows, columns = weights.shape
    figure = Figure(figsize=(2 + 0.35 * columns, 1.5 + 0.3 * rows))
    axes = figure.add_subplot()
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(columns), labels=source_pieces, rotation=90)
    axes.set_yticks(range(rows), labels=target_pieces)
    axes.set_xlabel("source pieces")
    axes.set_ylabel("output pieces")
    figure.colorbar(image, ax=axes)
    return figure


def metrics_table(metrics: dict[str, Any]) -> list[str]:
    lines = ["| metric | score | 95% CI |", "| --- | --- | --- |"]
    for key, label in (("bleu", "BLEU"), ("chrf", "chrF"), ("ter", "TER")):
        low, high = metrics[f"{key}_ci95"]
        lines.append(f"| {label} | {metrics[key]:.2f} | {low:.2f} – {high:.2f} |")
    lines.append(f"| BLEU (lowercased) | {metrics['bleu_lowercase']:.2f} | |")
    return lines


def report_markdown(evaluations: Sequence[SplitEvaluation], decoding: str) -> str:
    lines = ["# Evaluation report", "", f"Decoding: {decoding}.", "", "[Samples](samples.md)", ""]
    for index, evaluation in enumerate(evaluations):
        name, metrics = evaluation.split.name, evaluation.metrics
        lines += [f"## {name} ({metrics['sentences']} sentences)", "", *metrics_table(metrics)]
        lines += ["", "Signatures:", ""]
        lines += [f"- {key}: `{value}`" for key, value in metrics["signatures"].items()]
        csv_name = by_length_filename(index, name)
        lines += ["", f"- Hypotheses: [hypotheses/{name}.txt](hypotheses/{name}.txt)"]
        lines += [f"- BLEU by source length: [{csv_name}]({csv_name})", ""]
        lines += ["| source length | BLEU | sentences |", "| --- | --- | --- |"]
        lines += [
            f"| {row['source_length']} | {row['bleu']:.2f} | {row['sentences']} |"
            for row in evaluation.by_length
        ]
        lines += ["", "Attention maps:", ""]
        lines += [
            f"![{name} line {row + 1}]({attention_filename(name, row)})"
            for row in evaluation.attention_maps
        ]
        lines.append("")
    return "\n".join(lines)


def write_eval_reports(
    directory: Path, evaluations: Sequence[SplitEvaluation], decoding: str
) -> None:
    """Fill an (empty, staging) reports/eval directory."""
    (directory / "hypotheses").mkdir()
    (directory / "attention").mkdir()
    for index, evaluation in enumerate(evaluations):
        name = evaluation.split.name
        hypotheses = "".join(line + "\n" for line in evaluation.hypotheses)
        (directory / "hypotheses" / f"{name}.txt").write_text(hypotheses, encoding="utf-8")
        csv_text = by_length_csv(evaluation.by_length)
        (directory / by_length_filename(index, name)).write_text(csv_text, encoding="utf-8")
        for row, figure in evaluation.attention_maps.items():
            figure.savefig(directory / attention_filename(name, row), dpi=100, bbox_inches="tight")
    (directory / "samples.md").write_text(samples_markdown(evaluations), encoding="utf-8")
    report = report_markdown(evaluations, decoding)
    (directory / "report.md").write_text(report, encoding="utf-8")


# ---------------------------------------------------------------------------------- stage


def read_split(paths: ProjectPaths, config: Config, split: str) -> SplitData:
    """Normalised sources from data/clean/, raw references from data/raw/, line-aligned.

    The references lose their invisible characters (`pipeline.text.remove_invisible`, the same
    function the registry applies): hypotheses never contain them, since the model learnt from
    data/clean, so a "Hund\u200b" in a reference would otherwise count as a wrong word. Nothing
    else is changed, so scores stay comparable with published results on the raw references.
    """
    source_path = raw_file(paths.clean_dir, split, config.data.sides[0])
    reference_path = raw_file(paths.raw_dir, split, config.data.sides[1])
    for path, stage in ((source_path, "clean"), (reference_path, "fetch")):
        if not path.is_file():
            raise DataError(
                f"{path}: not found; evaluate needs the {split} source (data/clean) and "
                f"reference (data/raw) - run `mt {stage}` (or `dvc repro {stage}`) first"
            )
    sources = read_aligned_lines(source_path, "run `mt clean`")
    raw_references = read_aligned_lines(reference_path, "run `mt fetch`")
    references = [remove_invisible(line) for line in raw_references]
    if len(sources) != len(references):
        raise DataError(
            f"{source_path}: {len(sources)} lines, but the reference {reference_path} has "
            f"{len(references)}; test splits must keep every line - re-run `mt clean`"
        )
    return SplitData(split, sources, references)


def read_val_split(paths: ProjectPaths, config: Config) -> SplitData:
    """The cleaned val pairs (data/clean, both sides): what sweeps select on."""
    split, data = config.data.val_split, config.data
    sides = [raw_file(paths.clean_dir, split, lang) for lang in data.sides]
    for path in sides:
        if not path.is_file():
            raise DataError(
                f"{path}: not found; evaluate scores the val split too (data.val_split) - run "
                "`mt clean` (or `dvc repro clean`) first"
            )
    sources, references = (read_aligned_lines(path, "run `mt clean`") for path in sides)
    if len(sources) != len(references):
        raise DataError(
            f"{sides[0]}: {len(sources)} lines, but {sides[1]} has {len(references)}; "
            "re-run `mt clean`"
        )
    return SplitData(split, sources, references)


def score_val_split(translator: Any, split: SplitData, config: Config) -> dict[str, Any]:
    """The val split's metrics.json entry: the scores only (no samples, plots or maps)."""
    hypotheses = translator.translate(split.sources, progress=True)
    metrics = corpus_metrics(
        hypotheses, split.references, config.evaluate.bootstrap_resamples, config.seed
    )
    log.info("%s (the val split): BLEU %.2f, chrF %.2f, TER %.2f", split.name, *_headline(metrics))
    return metrics


def evaluate_split(translator: Any, split: SplitData, config: Config) -> SplitEvaluation:
    """Translate a split, score it, and pick the rows the reports show."""
    settings = config.evaluate
    translations = translator.translate_with_attention(split.sources, progress=True)
    hypotheses = [translation.text for translation in translations]
    metrics = corpus_metrics(
        hypotheses, split.references, settings.bootstrap_resamples, config.seed
    )
    evaluation = SplitEvaluation(
        split=split,
        hypotheses=hypotheses,
        metrics=metrics,
        by_length=bleu_by_length(split.sources, hypotheses, split.references),
        sample_rows=choose_sample_rows(len(hypotheses), settings.samples, config.seed),
    )
    drawable = [row for row in evaluation.sample_rows if translations[row].source_pieces]
    for row in drawable[: settings.attention_maps]:
        translation = translations[row]
        evaluation.attention_maps[row] = plot_attention(
            translation.source_pieces, [*translation.target_pieces, "</s>"], translation.attention
        )
    log.info("%s: BLEU %.2f, chrF %.2f, TER %.2f", split.name, *_headline(metrics))
    return evaluation


def _headline(metrics: dict[str, Any]) -> tuple[float, float, float]:
    return metrics["bleu"], metrics["chrf"], metrics["ter"]


def run_evaluate(config: Config, paths: ProjectPaths) -> dict[str, Any]:
    """Read every test split first (fail fast on a missing file), then translate and score."""
    from pipeline.model.decoding import DecodingSettings
    from pipeline.translator import Translator

    splits = [read_split(paths, config, split) for split in config.data.test_splits]
    val_split = read_val_split(paths, config)
    settings = DecodingSettings.from_config(config.decode)
    if not paths.model_file.is_file():
        raise DataError(f"{paths.model_file}: model file not found; run `dvc repro train` first")
    evaluated = EvaluatedModel.of(paths.model_file, paths.tokenizer_dir, settings)
    translator = Translator.load(paths.model_file, paths.tokenizer_dir, settings)
    evaluations = [evaluate_split(translator, split, config) for split in splits]
    val_metrics = score_val_split(translator, val_split, config)
    return write_outputs(paths, config, evaluations, evaluated, {val_split.name: val_metrics})


def write_outputs(
    paths: ProjectPaths,
    config: Config,
    evaluations: Sequence[SplitEvaluation],
    evaluated: EvaluatedModel,
    selection: dict[str, Any],
) -> dict[str, Any]:
    """reports/eval/ (with provenance.json naming the metrics.json to come), then metrics.json
    with the test splits' entries followed by `selection` (the val split's).

    Two renames: a kill between them leaves outputs whose provenance does not match, which
    `mt register` refuses (pipeline/eval_provenance.py).
    """
    decoding = evaluated.decoding
    description = (
        f"beam {decoding['beam_size']}, length penalty {decoding['length_penalty']}, max length "
        f"{decoding['max_length_ratio']} × source + {decoding['max_length_offset']}"
    )
    metrics = {evaluation.split.name: evaluation.metrics for evaluation in evaluations}
    metrics |= selection
    metrics_text = json_text(metrics)
    references = references_of(paths, config.data.test_splits, config.data.sides[1])
    with atomic_directory(paths.eval_reports_dir) as staging:
        write_eval_reports(staging, evaluations, description)
        write_record(staging, evaluated, references, metrics_text)
    pause_point("evaluate.between_outputs")
    atomic_write_text(paths.metrics_file, metrics_text)
    return metrics


def main(argv: list[str]) -> int | None:
    parser = argparse.ArgumentParser(
        prog="mt evaluate",
        description="BLEU/chrF/TER of the trained model on the test splits and the val split.",
    )
    parser.parse_args(argv)
    run_evaluate(load_config(), project_paths())
    return 0
