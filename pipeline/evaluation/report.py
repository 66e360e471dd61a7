"""reports/eval/: what a person reads of an evaluation, per task (docs/tasks.md).

- report.md: per test split, the task's scores with their 95% CIs and signatures; for
  summarization the model against the extractive baselines (first sentence, first 6/8/10
  words: the floor), for dialogue the ten most frequent responses (generic replies); then the
  primary metric by source length and the attention maps. Its headline names the primary
  metric (register.metric), except translation's, which is kept byte for byte as it was.
- samples.md: seeded sample rows (source, reference, output).
- hypotheses/<split>.txt, <metric>_by_length[_<split>].csv (pipeline/evaluation/by_length.py),
  attention/<split>_<line>.png.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.evaluation.by_length import by_length_csv, by_length_filename, length_metric
from pipeline.evaluation.scores import ROUGE_METRICS, TOP_SHARE
from pipeline.evaluation.splits import SplitEvaluation
from pipeline.metrics.text_stats import TOP_RESPONSES
from pipeline.tasks import Task, metric_label

SAMPLE_TITLES: dict[Task, str] = {
    "translation": "Sample translations",
    "summarization": "Sample summaries",
    "dialogue": "Sample replies",
}


def samples_markdown(evaluations: Sequence[SplitEvaluation], task: Task = "translation") -> str:
    lines = [f"# {SAMPLE_TITLES[task]}", ""]
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


def decoding_description(decoding: dict[str, Any], task: Task = "translation") -> str:
    """The decoding settings in words; summaries and replies also say where sources are cut."""
    description = (
        f"beam {decoding['beam_size']}, length penalty {decoding['length_penalty']}, max length "
        f"{decoding['max_length_ratio']} × source + {decoding['max_length_offset']}"
    )
    if task != "translation" and "max_source_length" in decoding:
        description += f", sources cut to their first {decoding['max_source_length']} pieces"
    return description


# ------------------------------------------------------------------------------ score tables


def _score_row(label: str, metrics: dict[str, Any], key: str) -> str:
    low, high = metrics[f"{key}_ci95"]
    return f"| {label} | {metrics[key]:.2f} | {low:.2f} – {high:.2f} |"


def metrics_table(metrics: dict[str, Any]) -> list[str]:
    """Translation's scores (BLEU, chrF, TER, lowercased BLEU)."""
    lines = ["| metric | score | 95% CI |", "| --- | --- | --- |"]
    for key, label in (("bleu", "BLEU"), ("chrf", "chrF"), ("ter", "TER")):
        lines.append(_score_row(label, metrics, key))
    lines.append(f"| BLEU (lowercased) | {metrics['bleu_lowercase']:.2f} | |")
    return lines


def summarization_table(metrics: dict[str, Any]) -> list[str]:
    lines = ["| metric | score | 95% CI |", "| --- | --- | --- |"]
    lines += [_score_row(metric_label(key), metrics, key) for key in ROUGE_METRICS]
    return [
        *lines,
        f"| mean output words | {metrics['mean_output_words']:.2f} | |",
        f"| mean reference words | {metrics['mean_reference_words']:.2f} | |",
        f"| compression (output / source words) | {metrics['compression']:.2f} | |",
    ]


def dialogue_table(metrics: dict[str, Any]) -> list[str]:
    lines = ["| metric | score | 95% CI |", "| --- | --- | --- |"]
    lines += [_score_row(metric_label(key), metrics, key) for key in ("bleu", "chrf")]
    return [
        *lines,
        f"| distinct-1 | {metrics['distinct_1']:.4f} | |",
        f"| distinct-2 | {metrics['distinct_2']:.4f} | |",
        f"| top-{TOP_RESPONSES} response share | {metrics[TOP_SHARE]:.4f} | |",
        f"| mean output words | {metrics['mean_output_words']:.2f} | |",
    ]


def scores_table(task: Task, metrics: dict[str, Any]) -> list[str]:
    if task == "summarization":
        return summarization_table(metrics)
    if task == "dialogue":
        return dialogue_table(metrics)
    return metrics_table(metrics)


def baselines_table(
    metrics: dict[str, Any], baselines: dict[str, dict[str, float]], metric: str
) -> list[str]:
    """The model's ROUGE against each extractive baseline's, and its margin over the best."""
    columns = [*ROUGE_METRICS, "mean_output_words", "compression"]
    header = [metric_label(key) for key in ROUGE_METRICS] + ["mean words", "compression"]
    lines = [
        "Against the extractive baselines (the floor a summariser must beat):",
        "",
        f"| summary | {' | '.join(header)} |",
        f"| --- | {' | '.join('---' for _ in header)} |",
    ]
    for name, scores in [("model", metrics), *baselines.items()]:
        lines.append(f"| {name} | {' | '.join(f'{scores[key]:.2f}' for key in columns)} |")
    best = max(baselines, key=lambda name: baselines[name][metric])
    margin = metrics[metric] - baselines[best][metric]
    lines += [
        "",
        f"The model is {margin:+.2f} {metric_label(metric)} points from the best baseline "
        f"({best}, {baselines[best][metric]:.2f}).",
    ]
    return lines


def responses_table(responses: Sequence[tuple[str, int]], total: int) -> list[str]:
    """The most frequent responses (case and spacing folded) with their counts and shares."""
    lines = [
        f"The {TOP_RESPONSES} most frequent responses (generic replies), case and spacing folded:",
        "",
        "| response | count | share |",
        "| --- | --- | --- |",
    ]
    for response, count in responses:
        text = response.replace("|", "\\|") if response else "*(empty)*"
        lines.append(f"| {text} | {count} | {count / max(total, 1):.2%} |")
    return lines


# ----------------------------------------------------------------------------------- report


def report_title(task: Task, metric: str) -> str:
    """Names the primary metric; translation's headline is kept as it was (reports/eval's
    DVC hash), its first score row and its length breakdown name BLEU."""
    if task == "translation":
        return "# Evaluation report"
    return f"# Evaluation report: {metric_label(metric)} ({task})"


def report_markdown(
    evaluations: Sequence[SplitEvaluation],
    decoding: str,
    task: Task = "translation",
    metric: str = "bleu",
) -> str:
    by_length_key = length_metric(task, metric)
    by_length_label = metric_label(by_length_key)
    lines = [report_title(task, metric), "", f"Decoding: {decoding}.", "", "[Samples](samples.md)"]
    lines.append("")
    for index, evaluation in enumerate(evaluations):
        name, metrics = evaluation.split.name, evaluation.metrics
        lines += [f"## {name} ({metrics['sentences']} sentences)", ""]
        lines += scores_table(task, metrics)
        if evaluation.baselines:
            lines += ["", *baselines_table(metrics, evaluation.baselines, metric)]
        if evaluation.frequent_responses:
            lines += [
                "",
                *responses_table(evaluation.frequent_responses, len(evaluation.hypotheses)),
            ]
        lines += ["", "Signatures:", ""]
        lines += [f"- {key}: `{value}`" for key, value in metrics["signatures"].items()]
        csv_name = by_length_filename(index, name, by_length_key)
        lines += ["", f"- Hypotheses: [hypotheses/{name}.txt](hypotheses/{name}.txt)"]
        lines += [f"- {by_length_label} by source length: [{csv_name}]({csv_name})", ""]
        lines += [f"| source length | {by_length_label} | sentences |", "| --- | --- | --- |"]
        lines += [
            f"| {row['source_length']} | {row[by_length_key]:.2f} | {row['sentences']} |"
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
    directory: Path,
    evaluations: Sequence[SplitEvaluation],
    decoding: str,
    task: Task = "translation",
    metric: str = "bleu",
) -> None:
    """Fill an (empty, staging) reports/eval directory."""
    by_length_key = length_metric(task, metric)
    (directory / "hypotheses").mkdir()
    (directory / "attention").mkdir()
    for index, evaluation in enumerate(evaluations):
        name = evaluation.split.name
        hypotheses = "".join(line + "\n" for line in evaluation.hypotheses)
        (directory / "hypotheses" / f"{name}.txt").write_text(hypotheses, encoding="utf-8")
        csv_text = by_length_csv(evaluation.by_length, by_length_key)
        csv_name = by_length_filename(index, name, by_length_key)
        (directory / csv_name).write_text(csv_text, encoding="utf-8")
        for row, figure in evaluation.attention_maps.items():
            figure.savefig(directory / attention_filename(name, row), dpi=100, bbox_inches="tight")
    (directory / "samples.md").write_text(samples_markdown(evaluations, task), encoding="utf-8")
    report = report_markdown(evaluations, decoding, task, metric)
    (directory / "report.md").write_text(report, encoding="utf-8")
