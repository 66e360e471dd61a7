"""`mt evaluate`: run the trained model on each test split, and the val split, and score the
outputs as the task is scored (params.yaml `task:`, pipeline/tasks.py).

For every split in `data.test_splits` the normalised, unfiltered source (data/clean/) is run
through the model and scored against the RAW reference (data/raw/), so the numbers compare with
published results (pipeline/evaluation/scores.py has each task's metrics):
- translation: cased detokenised BLEU (13a), lowercased BLEU, chrF and TER, each with its
  sacreBLEU signature and a 95% bootstrap confidence interval (sacreBLEU's own resampling,
  `evaluate.bootstrap_resamples` samples, seeded with the project `seed`);
- summarization: ROUGE-1/2/L F1 (rouge-score, Porter-stemmed) with bootstrap CIs over the
  sentence scores, mean output and reference words, and compression (output / source words);
- dialogue: BLEU and chrF as translation has them, distinct-1/2 and the share of the ten most
  frequent responses (generic replies), and mean output words.

Outputs, all written atomically:
- metrics.json: {split: the task's entry} for `dvc metrics`, each test split first, then
  `data.val_split` (e.g. `val.bleu`, `val.rouge_l`): the score sweeps choose by
  (`val.<register.metric>`), so the test splits stay for the gate. The val split is scored from
  data/clean on both sides (clean drops val pairs, so the raw references no longer line up);
  the registry and the gate read only the test splits' entries. Translation's entry is
  {bleu, bleu_ci95, bleu_lowercase, chrf, chrf_ci95, ter, ter_ci95, sentences, signatures}.
- reports/eval/ (pipeline/evaluation/report.py): hypotheses/<split>.txt (one line per test
  sentence, the registry's paired bootstrap reads it), samples.md, the primary metric by
  source length (translation: bleu_by_length.csv, the DVC plot, first test split; other
  splits get bleu_by_length_<split>.csv; other tasks: <register.metric>_by_length.csv),
  attention/<split>_<line>.png, report.md, and provenance.json: the sha256 of the model,
  tokenizer, references, hypotheses and metrics.json of this run, so `mt register` can refuse
  outputs that do not belong together (pipeline/eval_provenance.py)

The names other modules import from here (sacrebleu_seed, read_split, choose_sample_rows,
by_length_filename, ...) live in pipeline/evaluation/ and stay importable from this module.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

from pipeline.atomic import atomic_directory, atomic_write_text, json_text
from pipeline.config import Config, load_config
from pipeline.errors import DataError
from pipeline.eval_provenance import EvaluatedModel, references_of, write_record
from pipeline.evaluation.by_length import (
    LENGTH_BUCKETS,
    bleu_by_length,
    bucket_label,
    by_length_csv,
    by_length_filename,
    length_buckets,
    length_metric,
    metric_by_length,
)
from pipeline.evaluation.report import (
    decoding_description,
    plot_attention,
    report_markdown,
    samples_markdown,
    write_eval_reports,
)
from pipeline.evaluation.scores import (
    MetricResult,
    baseline_scores,
    corpus_metrics,
    headline,
    sacrebleu_seed,
    score_with_ci,
    split_metrics,
)
from pipeline.evaluation.splits import (
    SplitData,
    SplitEvaluation,
    choose_sample_rows,
    read_split,
    read_val_split,
)
from pipeline.metrics.text_stats import frequent_responses
from pipeline.paths import ProjectPaths, project_paths
from pipeline.pause_points import pause_point

__all__ = [
    "LENGTH_BUCKETS",
    "MetricResult",
    "SplitData",
    "SplitEvaluation",
    "bleu_by_length",
    "bucket_label",
    "by_length_csv",
    "by_length_filename",
    "choose_sample_rows",
    "corpus_metrics",
    "evaluate_and_write",
    "evaluate_split",
    "main",
    "plot_attention",
    "read_split",
    "read_val_split",
    "report_markdown",
    "run_evaluate",
    "sacrebleu_seed",
    "samples_markdown",
    "score_val_split",
    "score_with_ci",
    "write_outputs",
]

log = logging.getLogger(__name__)


def score_val_split(translator: Any, split: SplitData, config: Config) -> dict[str, Any]:
    """The val split's metrics.json entry: the scores only (no samples, plots or maps)."""
    hypotheses = translator.translate(split.sources, progress=True)
    metrics = split_metrics(
        config.task,
        split.sources,
        hypotheses,
        split.references,
        config.evaluate.bootstrap_resamples,
        config.seed,
    )
    log.info("%s (the val split): %s", split.name, headline(config.task, metrics))
    return metrics


def evaluate_split(translator: Any, split: SplitData, config: Config) -> SplitEvaluation:
    """Run the model on a split, score it, and pick the rows the reports show."""
    settings, task = config.evaluate, config.task
    translations = translator.translate_with_attention(split.sources, progress=True)
    hypotheses = [translation.text for translation in translations]
    metrics = split_metrics(
        task,
        split.sources,
        hypotheses,
        split.references,
        settings.bootstrap_resamples,
        config.seed,
    )
    evaluation = SplitEvaluation(
        split=split,
        hypotheses=hypotheses,
        metrics=metrics,
        by_length=metric_by_length(
            length_metric(task, config.metric),
            split.sources,
            hypotheses,
            split.references,
            length_buckets(task),
        ),
        sample_rows=choose_sample_rows(len(hypotheses), settings.samples, config.seed),
    )
    if task == "summarization":
        evaluation.baselines = baseline_scores(split.sources, split.references)
    elif task == "dialogue":
        evaluation.frequent_responses = frequent_responses(hypotheses)
    drawable = [row for row in evaluation.sample_rows if translations[row].source_pieces]
    for row in drawable[: settings.attention_maps]:
        translation = translations[row]
        evaluation.attention_maps[row] = plot_attention(
            translation.source_pieces, [*translation.target_pieces, "</s>"], translation.attention
        )
    log.info("%s: %s", split.name, headline(task, metrics))
    return evaluation


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
    return evaluate_and_write(translator, evaluated, config, paths, splits, val_split)


def evaluate_and_write(
    translator: Any,
    evaluated: EvaluatedModel,
    config: Config,
    paths: ProjectPaths,
    splits: Sequence[SplitData],
    val_split: SplitData,
) -> dict[str, Any]:
    """Score the read splits with `translator` (a Translator, or a stand-in with its
    `translate` and `translate_with_attention`) and write every output."""
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
    description = decoding_description(evaluated.decoding, config.task)
    metrics = {evaluation.split.name: evaluation.metrics for evaluation in evaluations}
    metrics |= selection
    metrics_text = json_text(metrics)
    references = references_of(paths, config.data.test_splits, config.data.sides[1])
    with atomic_directory(paths.eval_reports_dir) as staging:
        write_eval_reports(staging, evaluations, description, config.task, config.metric)
        write_record(staging, evaluated, references, metrics_text)
    pause_point("evaluate.between_outputs")
    atomic_write_text(paths.metrics_file, metrics_text)
    return metrics


def main(argv: list[str]) -> int | None:
    parser = argparse.ArgumentParser(
        prog="mt evaluate",
        description=(
            "Score the trained model on the test splits and the val split as the task is "
            "scored: BLEU/chrF/TER (translation), ROUGE-1/2/L (summarization), BLEU/chrF and "
            "distinct-n (dialogue)."
        ),
    )
    parser.parse_args(argv)
    run_evaluate(load_config(), project_paths())
    return 0
