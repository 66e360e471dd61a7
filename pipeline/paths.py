"""Every path the pipeline reads or writes, declared once, relative to the project root.

The root is `MT_PROJECT_DIR` when set (Airflow workers, tests), else the current directory,
which is where `dvc repro` runs stages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectPaths:
    root: Path

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def raw_dir(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def clean_dir(self) -> Path:
        return self.root / "data" / "clean"

    @property
    def tokens_dir(self) -> Path:
        return self.root / "data" / "tokens"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def tokenizer_dir(self) -> Path:
        return self.models_dir / "tokenizer"

    @property
    def model_file(self) -> Path:
        return self.models_dir / "seq2seq.keras"

    @property
    def checkpoints_dir(self) -> Path:
        return self.models_dir / "checkpoints"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def validation_dir(self) -> Path:
        return self.reports_dir / "validation"

    @property
    def cleaning_report(self) -> Path:
        return self.reports_dir / "cleaning.json"

    @property
    def train_reports_dir(self) -> Path:
        return self.reports_dir / "train"

    @property
    def eval_reports_dir(self) -> Path:
        return self.reports_dir / "eval"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.json"

    @property
    def registration_report(self) -> Path:
        return self.reports_dir / "registration.json"

    @property
    def monitoring_dir(self) -> Path:
        return self.reports_dir / "monitoring"

    @property
    def corpus_profile(self) -> Path:
        """The training corpus's profile, written by the `profile` stage; drift compares to it."""
        return self.monitoring_dir / "corpus_profile.json"

    @property
    def drift_dir(self) -> Path:
        """One `<batch_id>.json` per incoming batch checked for drift."""
        return self.monitoring_dir / "drift"

    @property
    def watch_dir(self) -> Path:
        """The champion watch's history.jsonl, report.md and canary_bleu.png."""
        return self.monitoring_dir / "watch"

    @property
    def batch_manifests_dir(self) -> Path:
        """Batch translation's idempotency records."""
        return self.monitoring_dir / "batches"

    @property
    def mlruns_db(self) -> Path:
        return self.root / "mlruns.db"

    @property
    def mlartifacts_dir(self) -> Path:
        return self.root / "mlartifacts"


def project_paths(root: str | Path | None = None) -> ProjectPaths:
    """Paths under `root`, or under MT_PROJECT_DIR / the current directory."""
    chosen = root if root is not None else os.environ.get("MT_PROJECT_DIR") or Path.cwd()
    return ProjectPaths(Path(chosen).resolve())


def raw_file(directory: Path, split: str, side: str) -> Path:
    """The one naming rule for a side of a split: `{split}.{side}` (raw, clean); a side is its
    language code, or `{lang}.src` / `{lang}.tgt` when both share one (DataConfig.sides)."""
    return directory / f"{split}.{side}"
