"""What one registration logs and is judged on: the pyfunc to log and the evaluated candidate.

Shared by registration.py (which logs, versions and gates them) and registration_key.py (which
hashes them into the key that makes a rerun find the version it made).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel

from pipeline.eval_provenance import EvaluatedModel
from pipeline.registry.evidence_logging import EvaluationEvidence
from pipeline.registry.gate import GateEvidence
from pipeline.serving import SIGNATURE, TEXT_COLUMN


@dataclass(frozen=True)
class PyfuncSpec:
    """What to log: the pyfunc (an instance, or a models-from-code file) and its packaging."""

    python_model: PythonModel | Path
    artifacts: dict[str, str]
    model_config: dict[str, Any]
    pip_requirements: list[str]
    code_paths: list[str]
    input_example: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({TEXT_COLUMN: ["A dog runs on the beach."]})
    )
    # Text in, text out, `beam_size` as a request parameter; its default is the logged beam.
    signature: ModelSignature = field(default_factory=lambda: SIGNATURE)


@dataclass(frozen=True)
class Candidate:
    """A trained, evaluated model waiting for a version: its test evidence and lineage."""

    evidence: GateEvidence
    references: tuple[str, ...]
    hypotheses_dir: Path
    metrics_file: Path
    lineage: dict[str, str]
    training_run_id: str | None = None
    # The model, tokenizer and decoding settings evaluate measured (reports/eval/provenance.json).
    evaluated_model: EvaluatedModel | None = None
    # What the MLflow pages show beside the version: scores, test sets, reports (evidence_logging).
    evaluation: EvaluationEvidence | None = None
