"""Drift of an incoming batch against the training corpus's profile (reports/monitoring/).

`check_incoming` measures one named statistic per feature against the `profile` stage's
corpus_profile.json and the thresholds in params.yaml `monitor:`:

    statistic        what                                           drifts when (monitor.*)
    length_psi       PSI of whitespace-token lengths (profile bins)  > length_psi
    length_ks        KS statistic of the same lengths                > length_ks
    char_class_psi   PSI of character-class shares                   > char_class_psi
    unknown_rate     <unk> pieces / pieces, source tokenizer         > max_unknown_rate
    language_share   share of lines identified as data.src_lang      < min_language_share

A feature beyond its threshold is "drifted". The batch is also checked by the GX suite built
from the profile (pipeline/monitor/drift_gx.py), whose Data Docs site is written to
reports/monitoring/drift/data_docs/ (one page per batch under validations/). The result goes to
reports/monitoring/drift/<batch_id>.json (DriftResult.to_json) and to one run in the MLflow
experiment `monitoring` (metrics: the statistics; tags: drifted features, GX verdict).

A verdict needs a sample. A batch of fewer than monitor.min_drift_lines lines is not judged:
its result has status `too_few_lines` (with its line count and the minimum), no statistics and
no GX suite, and is never a drift finding. Its lines join the pool of small batches
(pipeline/monitor/drift_pool.py); once the pool holds min_drift_lines lines, they are judged as
one batch, `pool-<12 hex>`, whose result names the batches in `pooled_from`, and the pool is
emptied. The minimum comes from benchmarks/drift_sample_size.py: below it, batches of the
training distribution itself trip the PSI/KS thresholds too often (docs/monitoring.md).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

from pipeline.atomic import atomic_write_json
from pipeline.config import Config
from pipeline.errors import DataError
from pipeline.monitor import drift_pool, drift_stats, text_features
from pipeline.monitor.monitoring_runs import log_monitoring_run
from pipeline.paths import ProjectPaths

# A batch id becomes a file name, a GX asset name and an MLflow run name.
BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
DOCS_FOLDER = "data_docs"
POOL_FOLDER = "pool"
# judged: statistics and GX suite measured; too_few_lines: fewer than monitor.min_drift_lines.
DriftStatus = Literal["judged", "too_few_lines"]
STATUSES: tuple[DriftStatus, ...] = ("judged", "too_few_lines")
# statistic -> (monitor.* threshold, whether a value above it (True) or below it drifts)
THRESHOLDS: dict[str, tuple[str, bool]] = {
    "length_psi": ("length_psi", True),
    "length_ks": ("length_ks", True),
    "char_class_psi": ("char_class_psi", True),
    "unknown_rate": ("max_unknown_rate", True),
    "language_share": ("min_language_share", False),
}


@dataclass(frozen=True)
class DriftResult:
    """What one drift check of one incoming batch (or of the pool of small ones) found."""

    batch_id: str
    checked_at: str  # ISO 8601, UTC
    statistics: dict[str, float]  # empty when too_few_lines
    thresholds: dict[str, float]  # empty when too_few_lines
    drifted: tuple[str, ...]  # statistics beyond their threshold, in THRESHOLDS order
    gx_success: bool | None  # None: no suite ran (too_few_lines)
    data_docs: str  # the batch's GX validation page, relative to the project root ("": none)
    gx_failed_rules: tuple[str, ...] = field(default=())
    status: DriftStatus = "judged"
    lines: int = 0  # lines checked (0 in results written before monitor.min_drift_lines)
    min_lines: int = 0  # monitor.min_drift_lines at the check (0: likewise)
    pooled_from: tuple[str, ...] = field(default=())  # a pool's verdict: its small batches

    @property
    def judged(self) -> bool:
        return self.status == "judged"

    @property
    def alarming(self) -> bool:
        """A verdict the watch reports: judged, and drifted or failed by its GX suite."""
        return self.judged and (bool(self.drifted) or self.gx_success is False)

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        for name in ("drifted", "gx_failed_rules", "pooled_from"):
            payload[name] = list(payload[name])
        return payload

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> DriftResult:
        gx_success = payload["gx_success"]
        return cls(
            batch_id=str(payload["batch_id"]),
            checked_at=str(payload["checked_at"]),
            statistics={key: float(value) for key, value in payload["statistics"].items()},
            thresholds={key: float(value) for key, value in payload["thresholds"].items()},
            drifted=tuple(payload["drifted"]),
            gx_success=None if gx_success is None else bool(gx_success),
            data_docs=str(payload["data_docs"]),
            gx_failed_rules=tuple(payload.get("gx_failed_rules", ())),
            status=_status(payload.get("status", "judged")),
            lines=int(payload.get("lines", 0)),
            min_lines=int(payload.get("min_lines", 0)),
            pooled_from=tuple(payload.get("pooled_from", ())),
        )


def _status(value: Any) -> DriftStatus:
    if value not in STATUSES:
        raise ValueError(f"status {value!r} is not one of {', '.join(STATUSES)}")
    return cast(DriftStatus, value)


def too_few_lines(batch_id: str, lines: int, minimum: int) -> DriftResult:
    """The result of a batch too small to judge: no statistics, no suite, never a finding."""
    return DriftResult(
        batch_id=batch_id,
        checked_at=_now(),
        statistics={},
        thresholds={},
        drifted=(),
        gx_success=None,
        data_docs="",
        status="too_few_lines",
        lines=lines,
        min_lines=minimum,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def thresholds_of(config: Config) -> dict[str, float]:
    return {name: float(getattr(config.monitor, key)) for name, (key, _) in THRESHOLDS.items()}


def drifted_features(statistics: Mapping[str, float], thresholds: Mapping[str, float]) -> tuple:
    """Names of the statistics beyond their threshold, in THRESHOLDS order."""
    return tuple(
        name
        for name, (_, above) in THRESHOLDS.items()
        if (statistics[name] > thresholds[name] if above else statistics[name] < thresholds[name])
    )


def load_profile(paths: ProjectPaths) -> dict[str, Any]:
    if not paths.corpus_profile.is_file():
        raise DataError(
            f"{paths.corpus_profile}: corpus profile not found; run `dvc repro profile` "
            "(or `mt profile`) before checking incoming text"
        )
    profile: dict[str, Any] = json.loads(paths.corpus_profile.read_text(encoding="utf-8"))
    return profile


def batch_statistics(
    lines: Sequence[str],
    profile: Mapping[str, Any],
    languages: Sequence[str],
    unknown: Sequence[tuple[int, int]],
) -> dict[str, float]:
    """The five drift statistics of a batch against the profile."""
    reference = {int(length): count for length, count in profile["length"]["counts"].items()}
    lengths = text_features.length_counts(lines)
    edges = profile["length"]["bin_edges"]
    classes = text_features.char_class_counts(lines)
    expected_classes = [profile["char_classes"][name] for name in text_features.CHAR_CLASSES]
    return {
        "length_psi": drift_stats.psi(
            profile["length"]["bin_shares"],
            drift_stats.shares(drift_stats.binned_counts(lengths, edges)),
        ),
        "length_ks": drift_stats.ks_statistic(reference, lengths),
        "char_class_psi": drift_stats.psi(
            expected_classes, drift_stats.shares(classes) if sum(classes) else [0.0] * len(classes)
        ),
        "unknown_rate": text_features.unknown_rate(unknown),
        "language_share": text_features.language_share(languages, profile["src_lang"]),
    }


def check_incoming(
    lines: Sequence[str],
    batch_id: str,
    paths: ProjectPaths,
    config: Config,
    tokenizer_dir: Path | None = None,
) -> DriftResult:
    """The drift result of one batch; writes its JSON (and Data Docs page), logs to MLflow.

    A batch of at least monitor.min_drift_lines lines is judged now. A smaller one is recorded
    as too few lines to judge, and its lines join the pool, which is judged once it is large
    enough (the module doc). `tokenizer_dir` holds the tokenizer of the model that will
    translate the batch (the champion's); default: the project's models/tokenizer.
    """
    _check_batch(lines, batch_id)
    profile = load_profile(paths)
    minimum = config.monitor.min_drift_lines
    if len(lines) >= minimum:
        return judge_batch(lines, batch_id, paths, config, profile, tokenizer_dir)
    pool_small_batch(lines, batch_id, paths, config, profile, tokenizer_dir)
    result = too_few_lines(batch_id, len(lines), minimum)
    _log_too_few(paths, result)
    atomic_write_json(paths.drift_dir / f"{batch_id}.json", result.to_json())
    return result


def pool_small_batch(
    lines: Sequence[str],
    batch_id: str,
    paths: ProjectPaths,
    config: Config,
    profile: Mapping[str, Any],
    tokenizer_dir: Path | None = None,
) -> DriftResult | None:
    """Add a small batch's lines to the pool; once the pool holds monitor.min_drift_lines lines,
    judge them as one batch and empty it. The pool's verdict, or None while it is too small."""
    with drift_pool.locked_pool(paths.drift_dir / POOL_FOLDER) as pool:
        pool.add(batch_id, lines)
        members = pool.members()
        pooled = pool.lines_of(members)
        if len(pooled) < config.monitor.min_drift_lines:
            return None
        pool_id = pool_batch_id(members)
        verdict = judge_batch(pooled, pool_id, paths, config, profile, tokenizer_dir, members)
        pool.remove(members)
        return verdict


def pool_batch_id(members: Sequence[str]) -> str:
    """The batch id of a pool's verdict: the same members always give the same id."""
    return "pool-" + hashlib.sha256("\n".join(members).encode("utf-8")).hexdigest()[:12]


def judge_batch(
    lines: Sequence[str],
    batch_id: str,
    paths: ProjectPaths,
    config: Config,
    profile: Mapping[str, Any],
    tokenizer_dir: Path | None = None,
    pooled_from: Sequence[str] = (),
) -> DriftResult:
    """Statistics and GX suite of a batch; writes its JSON and Data Docs page, logs to MLflow."""
    from pipeline.monitor import drift_gx

    languages = text_features.detected_languages(lines)
    unknown = text_features.unknown_piece_counts(lines, tokenizer_dir or paths.tokenizer_dir)
    statistics = batch_statistics(lines, profile, languages, unknown)
    thresholds = thresholds_of(config)
    frame = drift_gx.batch_frame(lines, languages, unknown)
    suite = drift_gx.batch_expectations(profile, config.monitor, sum(n for _, n in unknown))
    site = paths.drift_dir / DOCS_FOLDER
    site.parent.mkdir(parents=True, exist_ok=True)
    # GX builds a whole site per run (4 MB, nearly all static assets); only the batch's page
    # is kept, in one shared site whose static assets are copied once.
    with tempfile.TemporaryDirectory(dir=site.parent, prefix=".gx-") as staging:
        success, failed = drift_gx.run_batch_suite(frame, suite, batch_id, Path(staging))
        page = drift_gx.validation_page(Path(staging))
        result = DriftResult(
            batch_id=batch_id,
            checked_at=_now(),
            statistics=statistics,
            thresholds=thresholds,
            drifted=drifted_features(statistics, thresholds),
            gx_success=success,
            data_docs=str((site / page.relative_to(staging)).relative_to(paths.root)),
            gx_failed_rules=failed,
            lines=len(lines),
            min_lines=config.monitor.min_drift_lines,
            pooled_from=tuple(pooled_from),
        )
        _log_result(paths, result, page=page)
        drift_gx.publish_page(Path(staging), page, site)
    atomic_write_json(paths.drift_dir / f"{batch_id}.json", result.to_json())
    return result


def _check_batch(lines: Sequence[str], batch_id: str) -> None:
    if not BATCH_ID.fullmatch(batch_id):
        raise DataError(
            f"batch id {batch_id!r}: use letters, digits, . _ - only (it becomes a file name), "
            "starting with a letter or digit, at most 128 characters"
        )
    if not lines:
        raise DataError(f"batch {batch_id}: no lines to check; an incoming batch needs text")


def _log_result(paths: ProjectPaths, result: DriftResult, page: Path) -> None:
    pooled = {"monitor.pooled_from": ",".join(result.pooled_from)} if result.pooled_from else {}
    log_monitoring_run(
        paths,
        kind="drift",
        run_name=f"drift {result.batch_id}",
        metrics={**result.statistics, "lines": float(result.lines)},
        tags={
            "monitor.batch_id": result.batch_id,
            "monitor.status": result.status,
            "monitor.drifted": ",".join(result.drifted) or "none",
            "monitor.gx_success": str(result.gx_success).lower(),
            **pooled,
        },
        params={
            **{f"threshold.{name}": value for name, value in result.thresholds.items()},
            "min_drift_lines": result.min_lines,
        },
        artifacts={DOCS_FOLDER: page},
    )


def _log_too_few(paths: ProjectPaths, result: DriftResult) -> None:
    log_monitoring_run(
        paths,
        kind="drift",
        run_name=f"drift {result.batch_id}",
        metrics={"lines": float(result.lines)},
        tags={"monitor.batch_id": result.batch_id, "monitor.status": result.status},
        params={"min_drift_lines": result.min_lines},
    )


def drift_results_since(paths: ProjectPaths, since: str | None) -> list[DriftResult]:
    """Every batch's drift result checked after `since` (ISO UTC; None: all), oldest first."""
    results = [_read_result(path) for path in sorted(paths.drift_dir.glob("*.json"))]
    if since is not None:
        cutoff = _as_utc(datetime.fromisoformat(since))
        results = [item for item in results if datetime.fromisoformat(item.checked_at) > cutoff]
    return sorted(results, key=lambda item: item.checked_at)


def _as_utc(moment: datetime) -> datetime:
    """A time without zone is taken as UTC (what checked_at is written in)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _read_result(path: Path) -> DriftResult:
    try:
        return DriftResult.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(
            f"{path}: not a drift result ({type(error).__name__}: {error}); remove the file "
            "or check the batch again"
        ) from None
