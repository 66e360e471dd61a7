"""A version's evidence in MLflow: scores as numbers, test splits as datasets, reports as files.

Logged inside the run that holds the version's logged model, right after the model and before
the version exists (see registration.py), so a resumed registration never logs them twice:

- per test split, every number metrics.json holds as a metric `<split>.<name>`, whatever the
  task reports (translation: `bleu`, `bleu_ci95_low`, `bleu_ci95_high`, `bleu_lowercase`,
  `chrf`, ..., `sentences`; summarization: `rouge_l`, `rouge_l_ci95_low`, ...,
  `compression`; dialogue: `bleu`, `chrf`, `distinct_1`, ...) on the run AND on the
  LoggedModel, each linked to the split's dataset, so `mlflow.search_logged_models(order_by=
  ...)` can rank versions by any of them, `register.metric` included;
- each test split as an MLflow dataset (`mlflow.log_input`, context `testing`) whose digest is
  the references' sha256 as the gate computes it, cut to MLflow's 36-character digest limit
  (the whole hash is the input tag `mt.references_sha256`);
- the signatures (sacreBLEU's, rouge-score's) as tags `metrics.<split>.signature.<metric>`
  (the names the version tags use) on the run and on the LoggedModel;
- reports/eval under `evaluation/` with a chart of each by-length CSV evaluate wrote (BLEU for
  translation, register.metric for the other tasks), the GX summary under `validation/`, and
  the training curves as `training/curves.png`.
"""

from __future__ import annotations

import logging
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.data.pandas_dataset import PandasDataset, from_pandas
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis

from pipeline.registry.evidence_charts import by_length_chart, training_curves

log = logging.getLogger(__name__)

EVALUATION_ARTIFACTS = "evaluation"
VALIDATION_ARTIFACTS = "validation"
TRAINING_CURVES_ARTIFACT = "training/curves.png"
DATASET_CONTEXT = "testing"
REFERENCES_SHA256_TAG = "mt.references_sha256"
# MLflow stores a dataset digest in 36 characters (mlflow.utils.validation).
MAX_DIGEST_CHARS = 36


@dataclass(frozen=True)
class TestSet:
    """One test split as scored: raw references (and sources, when the file is there)."""

    split: str
    location: str  # the references file, relative to the project root
    references_sha256: str
    references: tuple[str, ...]
    sources: tuple[str, ...] | None = None


@dataclass(frozen=True)
class LengthBuckets:
    """A metric per source-length bucket of one split, as read from the CSV evaluate wrote
    (BLEU for translation, register.metric for the other tasks)."""

    split: str
    csv_name: str  # e.g. bleu_by_length.csv; the chart is logged beside it as .png
    rows: tuple[dict[str, Any], ...]
    metric: str = "bleu"


@dataclass(frozen=True)
class EvaluationEvidence:
    """What the version's MLflow pages show: metrics.json, the test sets, the report files and
    the rows of the charts (parsed before anything is logged: see evidence_files.py).

    `split_sizes` (split -> rows read, rows kept by cleaning) feeds the model card only.
    """

    metrics: Mapping[str, Any]
    test_sets: tuple[TestSet, ...] = ()
    eval_dir: Path | None = None
    validation_summary: Path | None = None
    training_history: tuple[dict[str, float], ...] = ()
    by_length: tuple[LengthBuckets, ...] = ()
    split_sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)


# ---------------------------------------------------------------------- pure: names, values


def split_metrics(split: str, scores: Mapping[str, Any]) -> dict[str, float]:
    """metrics.json's numbers of one split as MLflow metrics, whatever their names: `<split>.
    <name>` (`test.bleu`, `test.rouge_l`), a CI pair `<name>_ci95: [lo, hi]` as
    `<split>.<name>_ci95_low` and `<split>.<name>_ci95_high`; anything else is left out."""
    metrics: dict[str, float] = {}
    for name, value in scores.items():
        if _is_number(value):
            metrics[f"{split}.{name}"] = float(value)
        elif name.endswith("_ci95") and _is_pair_of_numbers(value):
            metrics[f"{split}.{name}_low"] = float(value[0])
            metrics[f"{split}.{name}_high"] = float(value[1])
    return metrics


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_pair_of_numbers(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2 and all(map(_is_number, value))


def signature_tags(metrics: Mapping[str, Any]) -> dict[str, str]:
    """`metrics.<split>.signature.<metric>`: how each number was computed (sacreBLEU,
    rouge-score)."""
    tags: dict[str, str] = {}
    for split, scores in metrics.items():
        signatures = scores.get("signatures") if isinstance(scores, Mapping) else None
        for metric, signature in (signatures or {}).items():
            tags[f"metrics.{split}.signature.{metric}"] = str(signature)
    return tags


def dataset_digest(references_sha256: str) -> str:
    return references_sha256[:MAX_DIGEST_CHARS]


def test_dataset(test_set: TestSet) -> PandasDataset:
    """The split as an MLflow dataset named after it, with the references' hash as digest."""
    columns: dict[str, tuple[str, ...]] = {"reference": test_set.references}
    if test_set.sources is not None:
        columns = {"source": test_set.sources, **columns}
    with warnings.catch_warnings():
        # A plain path matches both local-file dataset sources MLflow registers ("" and
        # "file" schemes, the same class); it warns and takes the first, which is right.
        warnings.filterwarnings("ignore", message="The specified dataset source can be")
        return from_pandas(
            pd.DataFrame(columns),
            source=test_set.location,
            name=test_set.split,
            digest=dataset_digest(test_set.references_sha256),
        )


# ------------------------------------------------------------------------------ logging


def log_evidence(evidence: EvaluationEvidence, run_id: str, model_id: str | None) -> None:
    """Log everything above into the active run `run_id`, linked to the logged model."""
    log_scores(evidence, run_id, model_id)
    log_reports(evidence)


def log_scores(evidence: EvaluationEvidence, run_id: str, model_id: str | None) -> None:
    """Datasets, then the numbers of each split linked to its dataset and the model."""
    test_sets = {test_set.split: test_set for test_set in evidence.test_sets}
    timestamp = get_current_time_millis()
    for split, scores in evidence.metrics.items():
        if not isinstance(scores, Mapping):
            continue
        dataset = None
        if split in test_sets:
            dataset = test_dataset(test_sets[split])
            mlflow.log_input(
                dataset,
                context=DATASET_CONTEXT,
                tags={REFERENCES_SHA256_TAG: test_sets[split].references_sha256},
            )
        # run_id given: log_metrics re-reads the run, so it sees the input just logged and the
        # model output, and logs neither again.
        mlflow.log_metrics(
            split_metrics(split, scores),
            run_id=run_id,
            timestamp=timestamp,
            model_id=model_id,
            dataset=dataset,
            synchronous=True,
        )
    tags = signature_tags(evidence.metrics)
    mlflow.set_tags(tags)
    if model_id is not None and tags:
        MlflowClient().set_logged_model_tags(model_id, tags)


def log_reports(evidence: EvaluationEvidence) -> None:
    """reports/eval (+ charts), the GX summary and the training curves, where they exist."""
    if evidence.eval_dir is not None and evidence.eval_dir.is_dir():
        mlflow.log_artifacts(str(evidence.eval_dir), EVALUATION_ARTIFACTS)
    for buckets in evidence.by_length:
        chart = by_length_chart(buckets.rows, buckets.split, buckets.metric)
        mlflow.log_figure(chart, f"{EVALUATION_ARTIFACTS}/{Path(buckets.csv_name).stem}.png")
    summary = evidence.validation_summary
    if summary is not None and summary.is_file():
        mlflow.log_artifact(str(summary), VALIDATION_ARTIFACTS)
    if evidence.training_history:
        curves = training_curves(evidence.training_history)
        mlflow.log_figure(curves, TRAINING_CURVES_ARTIFACT)
