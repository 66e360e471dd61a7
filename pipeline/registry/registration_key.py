"""What makes two registrations the same one: the `registration.key` tag of a version.

A registration is a function of what it logs (artifacts, pyfunc code, model_config, pinned
requirements), the evidence it is judged on (metrics.json, hypotheses, references, signature)
and the gate's rules. `registration_key` hashes all of them. A version carries the key from
creation, and `registration.state` = `created` until its aliases are set, then `complete`.

So a rerun after a failure (the tracking store or its database down half way, an Airflow retry)
finds the version it already made and finishes it instead of making a second one, and a rerun
after success changes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from pipeline.eval_provenance import file_sha256, tree_sha256
from pipeline.registry.candidate import Candidate, PyfuncSpec
from pipeline.registry.gate import GateRules

KEY_TAG = "registration.key"
STATE_TAG = "registration.state"
CREATED, COMPLETE = "created", "complete"


def content_sha256(path: Path) -> str:
    """sha256 of a file, or of a directory's files (see eval_provenance.tree_sha256)."""
    return file_sha256(path) if path.is_file() else tree_sha256(path)


def python_sources_sha256(directory: Path) -> str:
    """sha256 over the .py files of a package (its bytecode caches change on every import)."""
    return tree_sha256(directory, "*.py")


def evidence_part(candidate: Candidate) -> dict[str, str | None]:
    """The evidence's share of the key. A translation judged by BLEU hashes the fields it
    hashed before tasks existed (its signature under `bleu_signature`), so a rerun still finds
    the versions registered then; any other task or metric adds both."""
    evidence = candidate.evidence
    part = {
        "split": evidence.split,
        "references_sha256": evidence.references_sha256,
        "bleu_signature": evidence.signature,
        "hypotheses": content_sha256(candidate.hypotheses_dir),
        "metrics": content_sha256(candidate.metrics_file),
    }
    if (evidence.task, evidence.metric) != ("translation", "bleu"):
        part.update(task=evidence.task, metric=evidence.metric)
    return part


def registration_key(spec: PyfuncSpec, candidate: Candidate, rules: GateRules) -> str:
    """sha256 of what is logged, what it is judged on and the rules, as canonical JSON."""
    python_model = spec.python_model
    parts = {
        "python_model": (
            content_sha256(python_model)
            if isinstance(python_model, Path)
            else f"{type(python_model).__module__}.{type(python_model).__qualname__}"
        ),
        "artifacts": {name: content_sha256(Path(path)) for name, path in spec.artifacts.items()},
        "code": [python_sources_sha256(Path(path)) for path in spec.code_paths],
        "model_config": spec.model_config,
        "pip_requirements": spec.pip_requirements,
        "evidence": evidence_part(candidate),
        "rules": dataclasses.asdict(rules),
    }
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
