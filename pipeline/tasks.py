"""The sequence-to-sequence tasks one pipeline serves, and what each one changes (docs/tasks.md).

`task:` in params.yaml picks one. The model, tokenizer, training and registry are the same for
all three; what differs is which pairs are valid (validate, clean), which metrics measure a
model (evaluate, the gate, the watch) and how a registered model is named. Each difference is
read from here, so a stage asks "what does this task score by", never "is this translation".

Only light imports: the DAG files read params at parse time.
"""

from __future__ import annotations

from typing import Literal

Task = Literal["translation", "summarization", "dialogue"]
TASKS: tuple[Task, ...] = ("translation", "summarization", "dialogue")

# The metrics evaluate reports for each task, primary candidates first; `register.metric`
# (the gate's, the watch's canary's and the model card's headline) must be one of them.
TASK_METRICS: dict[Task, tuple[str, ...]] = {
    "translation": ("bleu", "chrf"),
    "summarization": ("rouge_l", "rouge_1", "rouge_2"),
    "dialogue": ("bleu", "chrf"),
}

# How a person reads each metric's name (reports, model cards, approval texts, alerts).
METRIC_LABELS: dict[str, str] = {
    "bleu": "BLEU",
    "chrf": "chrF",
    "rouge_1": "ROUGE-1",
    "rouge_2": "ROUGE-2",
    "rouge_l": "ROUGE-L",
}

# Metrics sacreBLEU computes from corpus statistics (its own paired bootstrap); the others are
# means of per-sentence scores (pipeline/metrics/bootstrap.py resamples those).
SACREBLEU_METRICS = frozenset({"bleu", "chrf"})


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def allows_same_language(task: Task) -> bool:
    """Summaries and replies are written in the language of their source; translations never."""
    return task != "translation"


def task_token(task: Task) -> str:
    """The word a registered model's name carries for its task (translation names a pair)."""
    return task
