"""What one `mt evaluate` run measured, and with what: reports/eval/provenance.json.

Evaluate has two outputs that no single rename can replace together: reports/eval/ (the
hypotheses the gate re-tests) and metrics.json (the scores the version is tagged with). A run
killed between the two renames leaves one new and one old, and a model trained after the last
evaluate leaves both describing another model. So evaluate records, inside reports/eval/, the
sha256 of everything the numbers depend on and of the metrics.json it writes next:

- `model_sha256`, `tokenizer_sha256`: models/seq2seq.keras and models/tokenizer/ as loaded
- `decoding`: the decoding settings (params.yaml `decode:`) the hypotheses were made with
- `references_sha256`: data/raw/<split>.<tgt_lang> per test split, as scored against
- `hypotheses_sha256`: reports/eval/hypotheses/<split>.txt per test split, as written
- `metrics_sha256`: metrics.json, as written after reports/eval/

`mt register` checks all of them before anything is registered and names the stage to rerun.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.atomic import json_text
from pipeline.errors import PipelineError
from pipeline.paths import ProjectPaths, raw_file

PROVENANCE_FILE = "provenance.json"
RERUN = "rerun `dvc repro evaluate` (or `mt evaluate`); nothing was registered"


class StaleEvaluationError(PipelineError):
    """Evaluate's outputs do not belong together, or not to the model about to be registered."""


@dataclass(frozen=True)
class EvaluatedModel:
    """The model, tokenizer and decoding settings one evaluate run used."""

    model_sha256: str
    tokenizer_sha256: str
    decoding: dict[str, Any]

    @classmethod
    def of(cls, model_file: Path, tokenizer_dir: Path, decoding: Any) -> EvaluatedModel:
        """Fingerprint the files as they are now; `decoding` is a DecodingSettings."""
        return cls(
            file_sha256(model_file), tree_sha256(tokenizer_dir), dataclasses.asdict(decoding)
        )


@dataclass(frozen=True)
class EvaluationRecord:
    model: EvaluatedModel
    references_sha256: dict[str, str]
    hypotheses_sha256: dict[str, str]
    metrics_sha256: str

    def as_json(self) -> str:
        return json_text(dataclasses.asdict(self))

    @classmethod
    def from_file(cls, path: Path) -> EvaluationRecord:
        if not path.is_file():
            raise StaleEvaluationError(
                f"{path}: missing, so nothing says which model and which metrics.json these "
                f"evaluation outputs belong to; {RERUN}"
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(EvaluatedModel(**raw.pop("model")), **raw)
        except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as error:
            raise StaleEvaluationError(f"{path}: unreadable ({error}); {RERUN}") from None


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def tree_sha256(directory: Path, pattern: str = "*") -> str:
    """sha256 over the sorted (relative path, file sha256) list of the files matching `pattern`."""
    listing = "".join(
        f"{path.relative_to(directory).as_posix()}\t{file_sha256(path)}\n"
        for path in sorted(directory.rglob(pattern))
        if path.is_file()
    )
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def references_of(
    paths: ProjectPaths, splits: tuple[str, ...], target_side: str
) -> dict[str, Path]:
    """Each split's reference file: `target_side` is data.sides[1] (its file suffix)."""
    return {split: raw_file(paths.raw_dir, split, target_side) for split in splits}


def hypotheses_of(eval_dir: Path, splits: tuple[str, ...]) -> dict[str, Path]:
    return {split: eval_dir / "hypotheses" / f"{split}.txt" for split in splits}


def write_record(
    eval_dir: Path,
    model: EvaluatedModel,
    references: Mapping[str, Path],
    metrics_text: str,
) -> None:
    """provenance.json in a (staging) reports/eval whose hypotheses are already written."""
    record = EvaluationRecord(
        model=model,
        references_sha256={split: file_sha256(path) for split, path in references.items()},
        hypotheses_sha256={
            split: file_sha256(path)
            for split, path in hypotheses_of(eval_dir, tuple(references)).items()
        },
        metrics_sha256=text_sha256(metrics_text),
    )
    (eval_dir / PROVENANCE_FILE).write_text(record.as_json(), encoding="utf-8")


def verified_evaluation(paths: ProjectPaths, target_side: str) -> EvaluationRecord:
    """The record of reports/eval, once metrics.json, hypotheses and references match it."""
    record = EvaluationRecord.from_file(paths.eval_reports_dir / PROVENANCE_FILE)
    _check(
        paths.metrics_file,
        record.metrics_sha256,
        f"not the metrics.json written with {paths.eval_reports_dir}: the two come from "
        "different evaluate runs (one was interrupted between its two outputs)",
    )
    splits = tuple(record.hypotheses_sha256)
    for split, path in hypotheses_of(paths.eval_reports_dir, splits).items():
        _check(path, record.hypotheses_sha256[split], "changed since evaluate wrote it")
    for split, path in references_of(paths, splits, target_side).items():
        expected = record.references_sha256.get(split, "")
        _check(path, expected, f"changed since evaluate scored {split} against it")
    return record


def _check(path: Path, expected: str, problem: str) -> None:
    if not path.is_file():
        raise StaleEvaluationError(f"{path}: missing; {RERUN}")
    actual = file_sha256(path)
    if actual != expected:
        raise StaleEvaluationError(
            f"{path} (sha256 {actual[:12]}) is {problem} (recorded sha256 {expected[:12]}); "
            f"{RERUN}"
        )


def check_model_matches(evaluated: EvaluatedModel, model: EvaluatedModel) -> None:
    """Refuse to register a model, tokenizer or decoding that evaluate did not measure."""
    for name, now, then in (
        ("models/seq2seq.keras", model.model_sha256, evaluated.model_sha256),
        ("models/tokenizer", model.tokenizer_sha256, evaluated.tokenizer_sha256),
    ):
        if now != then:
            raise StaleEvaluationError(
                f"{name} (sha256 {now[:12]}) is not what metrics.json and reports/eval "
                f"were computed from (sha256 {then[:12]}); {RERUN}"
            )
    changed = sorted(
        key for key in model.decoding if model.decoding[key] != evaluated.decoding.get(key)
    )
    if changed:
        detail = ", ".join(
            f"{key} {evaluated.decoding.get(key)} -> {model.decoding[key]}" for key in changed
        )
        raise StaleEvaluationError(
            f"params.yaml `decode:` changed since evaluate ran ({detail}); {RERUN}"
        )
