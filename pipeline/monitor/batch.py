"""`mt translate-batch`: translate a file or a folder of *.txt files with the champion.

Order of work, so that bad input and a kill both leave nothing half made:
0. a DAG request only (`run_request`): its paths must lie inside monitor.input_root and
   output_root, outside the project checkout, with no symlink (batch_paths.py); a person
   running `mt translate-batch` names their own paths and is not confined;
1. read and check every input file (batch_input.py): regular files of at most
   monitor.max_batch_mb in all, checked before reading; a bad one fails the whole batch;
2. resolve `models:/<name>@champion` to a version and read its request limits and default
   beam (batch_model.py); every line must fit one request, checked now;
3. check each input for drift against the training corpus (pipeline/monitor/drift.py), once
   per input: a rerun reuses the recorded result (an input of fewer than
   monitor.min_drift_lines lines is recorded as too few lines to judge, `drifted` empty, and
   pooled with other small inputs);
4. per output: nothing to do when its manifest already records this input, version and
   decoding; a copy when another output already holds that translation; else translate in
   requests of at most monitor.batch_size lines (batch_manifest.py);
5. write the output atomically, then its manifest (pipeline/atomic.py), which records the
   sha256 of the bytes written (not of a re-read, which another writer could have changed).
The DAG dags/translate_batch.py calls `translate_batch`; the command prints one line per file.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write_bytes
from pipeline.config import Config, DecodeConfig, load_config
from pipeline.errors import PipelineError
from pipeline.monitor.batch_input import BatchFile, InputLimits, output_text, read_batch
from pipeline.monitor.batch_manifest import (
    BatchKey,
    recorded_output,
    up_to_date,
    write_manifest,
)
from pipeline.monitor.batch_model import (
    ModelChoice,
    ModelFacts,
    choose_model,
    load_version,
    model_facts,
    request_spans,
    translate_lines,
)
from pipeline.monitor.batch_paths import BatchRoots, batch_roots
from pipeline.param_rules import rule_of
from pipeline.paths import ProjectPaths, project_paths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one input file: `translated`, `copied` or `up_to_date`."""

    source: str
    output: str
    manifest: str
    action: str
    line_count: int
    model_version: str
    drifted: tuple[str, ...]

    def describe(self) -> str:
        what = {"translated": "translated", "copied": "copied (same translation exists)"}
        verb = what.get(self.action, "up to date, nothing translated")
        drift = f"; drift in {', '.join(self.drifted)}" if self.drifted else ""
        return (
            f"{self.output}: {verb}: {self.line_count} lines from {self.source} by version "
            f"{self.model_version}{drift}"
        )


@dataclass(frozen=True)
class PlannedFile:
    """One input with its key and, when it must be translated, its request spans."""

    file: BatchFile
    key: BatchKey
    action: str
    spans: tuple[tuple[int, int], ...] = ()
    copy_from: Path | None = None


def checked_beam_size(beam_size: int | None) -> int | None:
    """--beam-size within the range of params.yaml's decode.beam_size."""
    rule = rule_of(next(f for f in dataclasses.fields(DecodeConfig) if f.name == "beam_size"))
    if beam_size is not None and rule is not None and not rule.allows(beam_size):
        raise PipelineError(
            f"--beam-size {beam_size}: outside the allowed range {rule.describe()} of "
            "params.yaml `decode.beam_size`"
        )
    return beam_size


def translate_batch(
    paths: ProjectPaths,
    config: Config,
    input_path: Path,
    output_path: Path,
    beam_size: int | None = None,
    model: str | None = None,
    roots: BatchRoots | None = None,
) -> list[FileOutcome]:
    """Translate `input_path` (a file, or a folder of *.txt) into `output_path`; per file.

    `roots`: a DAG request's, whose paths must lie inside them; None for a person's command."""
    beam_size = checked_beam_size(beam_size)
    files = read_input(config, input_path, output_path, roots)
    choice = choose_model(paths, model, config.register.model_name)
    facts = model_facts(choice, config.monitor.batch_size)
    decoding = {"beam_size": beam_size or facts.default_beam_size}
    plans = [plan_file(paths, file, choice, facts, decoding) for file in files]
    drift = {plan.file.batch_id: incoming_drift(paths, config, plan.file) for plan in plans}
    pending = [plan for plan in plans if plan.action == "translated"]
    loaded = load_version(choice) if pending else None
    return [
        write_file(paths, plan, choice, config, loaded, drift[plan.file.batch_id])
        for plan in plans
    ]


def read_input(
    config: Config, input_path: Path, output_path: Path, roots: BatchRoots | None
) -> list[BatchFile]:
    """The checked files of the batch; with `roots`, every path inside them and no symlink."""
    limits = InputLimits(
        config.register.max_input_chars,
        config.monitor.max_batch_mb,
        follow_symlinks=roots is None,  # a person's own links, yes; a request's, no
    )
    if roots is None:
        return read_batch(input_path, output_path, limits)
    files = read_batch(roots.input_path(input_path), roots.output_path(output_path), limits)
    for file in files:  # a folder's outputs: no symlink in their place either
        roots.output_path(file.output)
    return files


def plan_file(
    paths: ProjectPaths,
    file: BatchFile,
    choice: ModelChoice,
    facts: ModelFacts,
    decoding: dict[str, Any],
) -> PlannedFile:
    """What one file needs; every line is checked against the model's limits now."""
    key = BatchKey(file.sha256, choice.name, choice.version, decoding)
    beam = int(decoding["beam_size"])
    spans = tuple(request_spans(file.lines, facts.limits, beam, str(file.source)))
    if up_to_date(file.manifest, file.output, key) is not None:
        return PlannedFile(file, key, "up_to_date")
    existing = recorded_output(paths.batch_manifests_dir, key)
    if existing is not None:
        return PlannedFile(file, key, "copied", copy_from=existing)
    return PlannedFile(file, key, "translated", spans)


def incoming_drift(paths: ProjectPaths, config: Config, file: BatchFile) -> dict[str, Any]:
    """The drift result of this input: recorded by an earlier run, else checked now."""
    from pipeline.monitor.drift import DriftResult, check_incoming

    report = paths.drift_dir / f"{file.batch_id}.json"
    if report.is_file():
        result = DriftResult.from_json(json.loads(report.read_text(encoding="utf-8")))
    else:
        result = check_incoming(file.lines, file.batch_id, paths, config)
    return {"batch_id": result.batch_id, "drifted": list(result.drifted), "report": str(report)}


def write_file(
    paths: ProjectPaths,
    plan: PlannedFile,
    choice: ModelChoice,
    config: Config,
    model: Any,
    drift: dict[str, Any],
) -> FileOutcome:
    """Translate (or copy) one file and write output then manifest; or leave it as it is."""
    file = plan.file
    if plan.action != "up_to_date":
        started = utc_now()
        text = produce_text(plan, model)
        data = text.encode("utf-8")
        file.manifest.unlink(missing_ok=True)  # a kill from here on leaves no stale manifest
        atomic_write_bytes(file.output, data)
        manifest = {
            **plan.key.fields(),
            "input": str(file.source),
            "output": str(file.output),
            "output_sha256": hashlib.sha256(data).hexdigest(),
            "line_count": len(file.lines),
            "model_run_id": choice.run_id,
            "model_uri": choice.requested,
            "batch_size": config.monitor.batch_size,
            "requests": len(plan.spans),
            "reused_from": str(plan.copy_from) if plan.copy_from else None,
            "drift": drift,
            "started_at": started,
            "finished_at": utc_now(),
        }
        write_manifest(file.manifest, paths.batch_manifests_dir, plan.key, manifest)
    outcome = FileOutcome(
        str(file.source),
        str(file.output),
        str(file.manifest),
        plan.action,
        len(file.lines),
        choice.version,
        tuple(drift["drifted"]),
    )
    log.info("%s", outcome.describe())
    return outcome


def produce_text(plan: PlannedFile, model: Any) -> str:
    if plan.copy_from is not None:
        return plan.copy_from.read_text(encoding="utf-8")
    beam = int(plan.key.decoding["beam_size"])
    progress = f"translating {plan.file.source.name}"
    return output_text(translate_lines(model, plan.file.lines, plan.spans, beam, progress))


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def run_request(root: Path, request: dict[str, Any]) -> dict[str, Any]:
    """One batch of a translate_batch DAG run; returns the `extra` of its Asset event.

    The request came through XCom: its paths are confined to the roots again here."""
    paths = project_paths(root)
    config = load_config(paths.params)
    outcomes = translate_batch(
        paths,
        config,
        Path(request["input_path"]),
        Path(request["output_path"]),
        request.get("beam_size"),
        roots=batch_roots(config, root),
    )
    return {
        "input_path": request["input_path"],
        "output_path": request["output_path"],
        "model_version": outcomes[0].model_version,
        "files": [
            {"output": o.output, "manifest": o.manifest, "action": o.action} for o in outcomes
        ],
    }


# ------------------------------------------------------------------------ mt translate-batch


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mt translate-batch",
        description="Translate a text file (one sentence per line), or every *.txt file of a "
        "folder, with the champion; writes each output atomically with a manifest beside it.",
    )
    parser.add_argument("--input", type=Path, required=True, help="a text file or a folder")
    parser.add_argument(
        "--output", type=Path, required=True, help="a file (for a file) or a folder"
    )
    parser.add_argument(
        "--beam-size", type=int, help="1 = greedy (default: the version's decode.beam_size)"
    )
    parser.add_argument(
        "--model",
        help="models:/<name>@<alias> or models:/<name>/<version> "
        "(default: models:/<register.model_name>@champion)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    paths = project_paths()
    config = load_config()
    outcomes = translate_batch(
        paths, config, args.input.absolute(), args.output.absolute(), args.beam_size, args.model
    )
    for outcome in outcomes:
        print(outcome.describe())
    return 0
