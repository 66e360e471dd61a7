"""`mt register` and `mt registry list|history|promote|rollback`.

These read the project's files (metrics.json, hypotheses, references, run.json, dvc.lock),
build the pyfunc to log, call the registration core and print what changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.aligned_text import read_aligned_lines
from pipeline.atomic import atomic_write_json
from pipeline.config import Config, config_as_dict, load_config
from pipeline.eval_provenance import EvaluatedModel, check_model_matches, verified_evaluation
from pipeline.paths import ProjectPaths, project_paths, raw_file
from pipeline.registry.audit import OUTSIDE
from pipeline.registry.errors import RegistryError
from pipeline.registry.evidence_files import evaluation_evidence
from pipeline.registry.gate import GateEvidence, GateRules
from pipeline.registry.lineage import lineage_tags
from pipeline.registry.registration import (
    EVIDENCE_PREFIX,
    Candidate,
    PyfuncSpec,
    RegistrationResult,
    register_candidate,
    sha256_lines,
    task_and_metric,
)
from pipeline.registry.registration_key import CREATED, STATE_TAG
from pipeline.registry.store import (
    ANY_CHAMPION,
    CHAMPION,
    ExpectedChampion,
    Registry,
    champion_stack,
    current_actor,
)
from pipeline.serving import (
    DECODING_ARTIFACT,
    KERAS_MODEL_ARTIFACT,
    SERVING_PACKAGES,
    TOKENIZER_ARTIFACT,
    InputLimits,
    TranslationModel,
    translation_signature,
)
from pipeline.tasks import SACREBLEU_METRICS, metric_label
from pipeline.text import remove_invisible

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the `pipeline` package
LOCK_FILE = PACKAGE_DIR.parent / "requirements.lock"


def pinned_requirements(lock_file: Path = LOCK_FILE) -> list[str]:
    """`name==version` for each package the served model imports, as requirements.lock pins."""
    if not lock_file.is_file():
        raise RegistryError(f"{lock_file}: missing; the model's pip requirements are pinned there")
    pins: dict[str, str] = {}
    for line in lock_file.read_text(encoding="utf-8").splitlines():
        requirement = line.split(";")[0].split("#")[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    missing = [name for name in SERVING_PACKAGES if name not in pins]
    if missing:
        raise RegistryError(f"{lock_file}: no `{missing[0]}==` pin; re-lock requirements")
    return [f"{name}=={pins[name]}" for name in SERVING_PACKAGES]


def _read_json(path: Path, fix: str) -> Any:
    if not path.is_file():
        raise RegistryError(f"{path}: missing; {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RegistryError(f"{path}: line {error.lineno}: not valid JSON; {fix}") from None


def _read_lines(path: Path, fix: str) -> tuple[str, ...]:
    """Hypotheses or references as evaluate scored them: cut into lines as every stage cuts
    them (a U+2028 inside a sentence is no line end) and without invisible characters."""
    if not path.is_file():
        raise RegistryError(f"{path}: missing; {fix}")
    return tuple(remove_invisible(line) for line in read_aligned_lines(path, fix))


def gate_evidence(
    paths: ProjectPaths, config: Config, metrics: Any
) -> tuple[GateEvidence, tuple[str, ...]]:
    """The gate split's evidence (metrics.json + hypotheses) and its reference lines: its
    `register.metric` score, with that metric's sacreBLEU signature for BLEU and chrF."""
    split, metric = config.data.test_splits[0], config.metric
    scores = metrics.get(split) if isinstance(metrics, dict) else None
    sacrebleu = metric in SACREBLEU_METRICS
    signatures = scores.get("signatures") if isinstance(scores, dict) else None
    if (
        not isinstance(scores, dict)
        or not _is_number(scores.get(metric))
        or (sacrebleu and not (isinstance(signatures, dict) and metric in signatures))
    ):
        wanted = f"{metric} and signatures" if sacrebleu else metric
        raise RegistryError(
            f"{paths.metrics_file}: no {wanted} for split {split!r} (the gate's split is "
            f"data.test_splits[0], its metric register.metric {metric!r}); run `mt evaluate`"
        )
    hypotheses_file = paths.eval_reports_dir / "hypotheses" / f"{split}.txt"
    hypotheses = _read_lines(hypotheses_file, "run `mt evaluate`")
    references_file = raw_file(paths.raw_dir, split, config.data.sides[1])
    references = _read_lines(references_file, "run `mt fetch`")
    if len(hypotheses) != len(references):
        raise RegistryError(
            f"{hypotheses_file}: {len(hypotheses)} lines but {references_file} has "
            f"{len(references)}; one hypothesis per reference line is required (re-run "
            "`mt evaluate`)"
        )
    evidence = GateEvidence(
        src_lang=config.data.src_lang,
        tgt_lang=config.data.tgt_lang,
        split=split,
        references_sha256=sha256_lines(references),
        signature=str(signatures[metric]) if sacrebleu and signatures else None,
        score=float(scores[metric]),
        hypotheses=hypotheses,
        task=config.task,
        metric=metric,
    )
    return evidence, references


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def training_run_id(paths: ProjectPaths) -> str | None:
    run_file = paths.train_reports_dir / "run.json"
    if not run_file.is_file():
        return None
    run_id = _read_json(run_file, "re-run `mt train`").get("run_id")
    return str(run_id) if run_id else None


def build_candidate(paths: ProjectPaths, config: Config) -> Candidate:
    """The evaluated model's evidence, once evaluate's outputs are shown to belong together."""
    record = verified_evaluation(paths, config.data.sides[1])
    metrics = _read_json(paths.metrics_file, "run `mt evaluate`")
    evidence, references = gate_evidence(paths, config, metrics)
    return Candidate(
        evidence=evidence,
        references=references,
        hypotheses_dir=paths.eval_reports_dir / "hypotheses",
        metrics_file=paths.metrics_file,
        lineage=lineage_tags(paths.root, config_as_dict(config), metrics),
        training_run_id=training_run_id(paths),
        evaluated_model=record.model,
        evaluation=evaluation_evidence(paths, config, metrics, record.hypotheses_sha256),
    )


def snapshot_model(paths: ProjectPaths, scratch: Path) -> tuple[Path, Path]:
    """Copies of models/seq2seq.keras and models/tokenizer: what is checked is what is logged,
    even if a training run replaces the originals meanwhile."""
    for required in (paths.model_file, paths.tokenizer_dir):
        if not required.exists():
            raise RegistryError(f"{required}: missing; run `dvc repro train` first")
    model_file = scratch / "model" / paths.model_file.name
    model_file.parent.mkdir()
    shutil.copyfile(paths.model_file, model_file)
    tokenizer_dir = shutil.copytree(paths.tokenizer_dir, scratch / "model" / "tokenizer")
    return model_file, Path(tokenizer_dir)


def translation_spec(
    paths: ProjectPaths, config: Config, scratch: Path, candidate: Candidate
) -> PyfuncSpec:
    """The real model: TranslationModel over the Keras model, tokenizer and decoding JSON,
    refused unless they are the ones metrics.json and reports/eval were computed from."""
    from pipeline.model.decoding import DecodingSettings

    model_file, tokenizer_dir = snapshot_model(paths, scratch)
    settings = DecodingSettings.from_config(config.decode)
    if candidate.evaluated_model is None:
        raise RegistryError(
            "the candidate carries no evaluated model; build it with build_candidate"
        )
    check_model_matches(
        candidate.evaluated_model, EvaluatedModel.of(model_file, tokenizer_dir, settings)
    )
    settings_file = scratch / "decoding_settings.json"
    settings_file.write_text(json.dumps(dataclasses.asdict(settings), indent=2), "utf-8")
    register = config.register
    limits = InputLimits(
        register.max_input_chars, register.max_batch_rows, register.max_request_work
    )
    return PyfuncSpec(
        python_model=TranslationModel(),
        artifacts={
            KERAS_MODEL_ARTIFACT: str(model_file),
            TOKENIZER_ARTIFACT: str(tokenizer_dir),
            DECODING_ARTIFACT: str(settings_file),
        },
        model_config=dataclasses.asdict(limits),
        pip_requirements=pinned_requirements(),
        code_paths=[str(PACKAGE_DIR)],
        signature=translation_signature(settings.beam_size),
    )


def print_registration(result: RegistrationResult) -> None:
    decision = result.decision
    if result.action == "unchanged":
        print(
            f"{result.model_name} version {result.version} was registered from these outputs "
            "already; nothing changed"
        )
    elif result.action == "resumed":
        print(f"finished {result.model_name} version {result.version}, left by an interrupted run")
    else:
        print(f"registered {result.model_name} version {result.version} (@challenger)")
    print(f"gate: {decision.outcome}: {decision.reason}")
    if result.champion_after != result.champion_before:
        print(f"@champion: v{result.champion_before} -> v{result.champion_after}")
    else:
        print(f"@champion unchanged: v{result.champion_before}")


def main(argv: list[str]) -> int:
    """`mt register`: log the model, create a tagged version, alias it, run the gate."""
    argparse.ArgumentParser(prog="mt register", description=main.__doc__).parse_args(argv)
    config, paths = load_config(), project_paths()
    candidate = build_candidate(paths, config)
    rules = GateRules.from_config(config.register, config.seed)
    with tempfile.TemporaryDirectory() as scratch:
        spec = translation_spec(paths, config, Path(scratch), candidate)
        registry = Registry.connect(paths, config.register.model_name)
        result = register_candidate(registry, spec, candidate, rules, current_actor("mt register"))
    atomic_write_json(paths.registration_report, result.as_report())
    print_registration(result)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mt registry", description="the model registry")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="versions, aliases, gate outcome and score")
    commands.add_parser("history", help="every move of @champion, outside mt included")
    promote = commands.add_parser("promote", help="point @champion at VERSION")
    promote.add_argument("version")
    promote.add_argument("--reason", default="", help="why (kept in the audit trail)")
    rollback = commands.add_parser("rollback", help="put the previous champion back")
    rollback.add_argument("--reason", default="", help="why (kept in the audit trail)")
    webhook = commands.add_parser(
        "webhook", help="record @champion moves made outside mt (MLflow registry webhooks)"
    )
    hooks = webhook.add_subparsers(dest="webhook_command", required=True)
    serve = hooks.add_parser("serve", help="run the receiver that records MLflow's deliveries")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    install = hooks.add_parser("install", help="create or update the webhook in MLflow")
    install.add_argument("--url", required=True, help="where the receiver listens")
    return parser


def list_versions(registry: Registry) -> None:
    """One line per version: its aliases, gate outcome and gate score (in the metric its
    register.metric tag names; BLEU for a version older than that tag)."""
    print(
        f"{'version':>7}  {'aliases':<22} {'gate':<18} {'metric':<7} {'score':>6}  "
        f"{'git':<10} created"
    )
    for version in registry.versions():
        tags = version.tags
        aliases = ",".join(f"@{alias}" for alias in version.aliases) or "-"
        if tags.get(STATE_TAG) == CREATED:  # a run died before its aliases were set
            aliases = "(unfinished: rerun)"
        created = _iso(version.creation_timestamp)
        metric = task_and_metric(tags)[1]
        score = tags.get(f"{EVIDENCE_PREFIX}{metric}", "-")[:6]
        print(
            f"{version.version:>7}  {aliases:<22} {tags.get('gate.outcome', '-'):<18} "
            f"{metric_label(metric):<7} {score:>6}  {tags.get('git.commit', '-')[:10]:<10} "
            f"{created}"
        )


def _iso(timestamp_ms: int | None) -> str:
    if timestamp_ms is None:
        return "-"
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="seconds")


def print_history(registry: Registry) -> None:
    moves = registry.champion_moves()
    if not moves:
        print(f"@{CHAMPION} of {registry.name} has never moved")
    for move in moves:
        where = "outside mt, " if move.action == OUTSIDE else ""
        print(
            f"{move.when}  {move.action:<8} v{move.from_version or '-'} -> "
            f"v{move.to_version or '-'}  [{move.status}]  {where}by {move.actor}: {move.reason}"
        )


def promote(
    registry: Registry,
    version: str,
    reason: str,
    expected_from: ExpectedChampion = ANY_CHAMPION,
) -> None:
    """Point @champion at VERSION; with `expected_from`, only while it is still there."""
    actor = current_actor("mt registry promote")
    move = registry.move_champion(version, "promote", actor, reason, expected_from)
    print(f"@{CHAMPION} of {registry.name}: v{move.from_version or '-'} -> v{move.to_version}")


def rollback(registry: Registry, reason: str) -> None:
    """Put back the champion that was in force before the current one, moves made outside mt
    included (the trail is reconciled with the alias first)."""
    stack = champion_stack(registry.champion_moves())
    if len(stack) < 2:
        first = f"v{stack[-1]} is the first" if stack else "@champion has never moved"
        raise RegistryError(
            f"no previous champion to roll back to ({first}); "
            "`mt registry promote VERSION` picks one by hand"
        )
    current, previous = stack[-1], stack[-2]
    if previous is None:
        raise RegistryError(
            f"before v{current}, @{CHAMPION} was unset (deleted outside mt): nothing to roll "
            "back to; `mt registry promote VERSION` picks one by hand"
        )
    move = registry.move_champion(
        previous,
        "rollback",
        current_actor("mt registry rollback"),
        reason,
        expected_from=current,
    )
    print(
        f"@{CHAMPION} of {registry.name} rolled back: v{move.from_version or '-'} -> "
        f"v{move.to_version}"
    )


def webhook_command(args: argparse.Namespace, paths: ProjectPaths, model_name: str) -> None:
    """`mt registry webhook serve|install`: MLflow's alias events into the audit trail."""
    from pipeline.registry import webhooks

    if args.webhook_command == "serve":
        webhooks.serve(paths, args.host, args.port)
        return
    secret = webhooks.webhook_secret()  # refused before the store is opened
    done = webhooks.install(Registry.connect(paths, model_name), args.url, secret)
    print(f"webhook {webhooks.WEBHOOK_NAME} {done}: @champion alias events -> {args.url}")


def registry_main(argv: list[str]) -> int:
    """`mt registry list | history | promote VERSION [--reason] | rollback [--reason] |
    webhook serve [--host] [--port] | webhook install --url URL`."""
    args = _parser().parse_args(argv)
    config, paths = load_config(), project_paths()
    if args.command == "webhook":
        webhook_command(args, paths, config.register.model_name)
        return 0
    registry = Registry.connect(paths, config.register.model_name)
    if args.command == "list":
        list_versions(registry)
    elif args.command == "history":
        print_history(registry)
    elif args.command == "promote":
        promote(registry, args.version, args.reason)
    else:
        rollback(registry, args.reason)
    return 0
