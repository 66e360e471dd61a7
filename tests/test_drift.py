"""Drift of incoming text: the statistics (exact values on tiny inputs), language identification
on real Multi30k text, `check_incoming` end to end (JSON, GX Data Docs page, MLflow run), and
the minimum sample of a verdict (monitor.min_drift_lines): small batches are recorded as too few
lines to judge and pooled, on tiny text and on real Multi30k val batches."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import math
import re
from pathlib import Path

import pytest

from pipeline.aligned_text import text_lines
from pipeline.config import _load_cached, load_config
from pipeline.errors import DataError
from pipeline.monitor import drift_stats
from pipeline.monitor.drift import (
    POOL_FOLDER,
    DriftResult,
    check_incoming,
    drift_results_since,
    drifted_features,
    pool_batch_id,
)
from pipeline.monitor.findings import Finding, drift_findings
from pipeline.monitor.monitoring_runs import MONITORING_EXPERIMENT
from pipeline.monitor.profile import profile_corpus
from pipeline.monitor.text_features import detected_languages, language_share
from pipeline.paths import project_paths
from pipeline.tokenize import SOURCE_MODEL, TARGET_MODEL, train_tokenizer_models
from tests.conftest import MULTI30K_DIR, REPO_ROOT, tiny_pairs, write_params
from tests.test_corpus_profile import tokenizer_dir  # noqa: F401  (module-scoped fixture)

# ---- statistics: pure functions, exact values ----------------------------------------------


def test_psi_of_two_share_vectors() -> None:
    # (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5) = 0.25 (ln 2 + ln 1.5) = 0.25 ln 3
    assert drift_stats.psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(3), 1e-12)
    assert drift_stats.psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_psi_raises_an_empty_bin_to_the_share_floor() -> None:
    floor = drift_stats.SHARE_FLOOR
    expected = (0.5 - 1.0) * math.log(0.5) + (0.5 - floor) * math.log(0.5 / floor)
    assert drift_stats.psi([1.0, 0.0], [0.5, 0.5]) == pytest.approx(expected, 1e-12)


def test_psi_refuses_vectors_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="one length, got 2 and 3"):
        drift_stats.psi([0.5, 0.5], [0.2, 0.3, 0.5])


def test_ks_statistic_of_count_tables() -> None:
    uniform = {1: 1, 2: 1, 3: 1, 4: 1}
    assert drift_stats.ks_statistic(uniform, {3: 1, 4: 1, 5: 1, 6: 1}) == 0.5
    assert drift_stats.ks_statistic(uniform, {10: 5}) == 1.0
    assert drift_stats.ks_statistic(uniform, {1: 2, 2: 2, 3: 2, 4: 2}) == 0.0
    assert drift_stats.ks_statistic({1: 3, 2: 1}, {1: 1, 2: 1}) == 0.25
    with pytest.raises(ValueError, match="empty distribution"):
        drift_stats.ks_statistic(uniform, {})


def test_quantile_edges_and_binned_counts() -> None:
    uniform = {1: 1, 2: 1, 3: 1, 4: 1}
    assert drift_stats.quantile_edges(uniform, bins=2) == [2]
    assert drift_stats.quantile_edges(uniform, bins=4) == [1, 2, 3]
    assert drift_stats.quantile_edges({1: 8, 2: 1, 3: 1}, bins=10) == [1, 2]
    assert drift_stats.quantile_edges({5: 10}) == []
    assert drift_stats.binned_counts({1: 2, 2: 1, 3: 1, 7: 4}, [2, 5]) == [3, 1, 4]
    assert drift_stats.shares([3, 1, 4]) == [3 / 8, 1 / 8, 4 / 8]


def test_a_statistic_drifts_only_beyond_its_threshold() -> None:
    thresholds = {
        "length_psi": 0.2,
        "length_ks": 0.2,
        "char_class_psi": 0.2,
        "unknown_rate": 0.02,
        "language_share": 0.9,
    }
    at_threshold = dict(thresholds)
    assert drifted_features(at_threshold, thresholds) == ()
    beyond = thresholds | {"length_ks": 0.21, "unknown_rate": 0.03, "language_share": 0.89}
    assert drifted_features(beyond, thresholds) == ("length_ks", "unknown_rate", "language_share")


# ---- language identification on real text ---------------------------------------------------


def multi30k_lines(directory: Path, lang: str, count: int = 200) -> list[str]:
    with gzip.open(directory / f"test_2016_flickr.{lang}.gz", "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()[:count]


def test_english_batch_passes_the_language_share_and_french_does_not(
    multi30k_dir: Path,
) -> None:
    threshold = load_config(Path(__file__).parents[1] / "params.yaml").monitor.min_language_share
    english = language_share(detected_languages(multi30k_lines(multi30k_dir, "en")), "en")
    french = language_share(detected_languages(multi30k_lines(multi30k_dir, "fr")), "en")
    assert english >= threshold
    assert english == 1.0  # all 200 lines of test_2016_flickr.en
    assert french < threshold
    assert french == 0.0


# ---- check_incoming end to end --------------------------------------------------------------

ENGLISH = [source for source, _ in tiny_pairs(40)]
FRENCH = [
    "Un chien court sur la plage.",
    "Deux hommes jouent au football.",
    "Une femme lit un livre dans le parc.",
    "Un enfant saute dans l'eau.",
] * 10


# The tiny project judges batches from 20 lines on, so that ENGLISH and FRENCH (40 lines each)
# are judged and their statistics can be computed by hand.
TINY_MIN_DRIFT_LINES = 20


def install_reference(project_dir: Path, tokenizer: Path, profile: dict[str, object]) -> None:
    """The tokenizer in models/tokenizer and the corpus profile, as the profile stage leaves."""
    paths = project_paths()
    paths.tokenizer_dir.parent.mkdir(parents=True)
    paths.tokenizer_dir.symlink_to(tokenizer)
    paths.monitoring_dir.mkdir(parents=True)
    paths.corpus_profile.write_text(json.dumps(profile), encoding="utf-8")


@pytest.fixture
def monitored_project(
    project_dir: Path,
    tokenizer_dir: Path,  # noqa: F811  (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """A project with the tiny tokenizer, the profile of ENGLISH, a local MLflow store and
    monitor.min_drift_lines = TINY_MIN_DRIFT_LINES."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_params(project_dir, {"monitor": {"min_drift_lines": TINY_MIN_DRIFT_LINES}})
    _load_cached.cache_clear()
    install_reference(project_dir, tokenizer_dir, profile_corpus(ENGLISH, tokenizer_dir, "en"))
    return project_dir


def monitoring_runs(root: Path) -> dict[str, object]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns.db'}")
    experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    return {run.data.tags["monitor.batch_id"]: run for run in runs}


def test_check_incoming_writes_json_docs_and_an_mlflow_run(monitored_project: Path) -> None:
    paths, config = project_paths(), load_config()
    clean = check_incoming(ENGLISH, "clean-1", paths, config)
    assert clean.statistics == {
        "length_psi": 0.0,
        "length_ks": 0.0,
        "char_class_psi": 0.0,
        "unknown_rate": 0.0,
        "language_share": 1.0,
    }
    assert (clean.drifted, clean.gx_success, clean.gx_failed_rules) == ((), True, ())
    assert (clean.status, clean.lines, clean.min_lines, clean.pooled_from) == (
        "judged",
        40,
        TINY_MIN_DRIFT_LINES,
        (),
    )
    assert clean.thresholds["language_share"] == config.monitor.min_language_share
    written = json.loads((paths.drift_dir / "clean-1.json").read_text("utf-8"))
    assert DriftResult.from_json(written) == clean
    page = monitored_project / clean.data_docs
    assert page.is_file() and page.suffix == ".html"
    assert (paths.drift_dir / "data_docs" / "static").is_dir()

    french = check_incoming(FRENCH, "french-1", paths, config)
    assert french.statistics["language_share"] == 0.0
    # Profile lengths {7: 12, 8: 28} -> one bin edge at 7, shares (0.3, 0.7); FRENCH lengths
    # {5: 20, 6: 10, 8: 10} -> shares (0.75, 0.25); PSI = 0.45 ln 2.5 + 0.45 ln 2.8 = 0.45 ln 7.
    # The CDFs differ most at 6: 0 against 0.75.
    assert french.statistics["length_psi"] == pytest.approx(0.45 * math.log(7), 1e-12)
    assert french.statistics["length_ks"] == 0.75
    # The tiny tokenizer never saw é or ç: French also brings unknown pieces.
    assert french.drifted == ("length_psi", "length_ks", "unknown_rate", "language_share")
    assert (french.gx_success, french.gx_failed_rules) == (False, ("language", "unknown_rate"))
    french_page = (monitored_project / french.data_docs).read_text("utf-8")
    assert "values must belong to this set" in french_page  # the `language` rule, failed
    assert "unknown_pieces" in french_page

    runs = monitoring_runs(monitored_project)
    assert set(runs) == {"clean-1", "french-1"}
    french_run = runs["french-1"]
    assert french_run.data.metrics["language_share"] == 0.0  # type: ignore[attr-defined]
    assert french_run.data.metrics["lines"] == 40.0  # type: ignore[attr-defined]
    assert french_run.data.tags["monitor.kind"] == "drift"  # type: ignore[attr-defined]
    assert french_run.data.tags["monitor.drifted"] == ",".join(french.drifted)  # type: ignore[attr-defined]
    assert french_run.data.params["threshold.language_share"] == "0.9"  # type: ignore[attr-defined]
    assert french_run.data.tags["monitor.status"] == "judged"  # type: ignore[attr-defined]

    assert drift_results_since(paths, None) == [clean, french]
    assert drift_results_since(paths, clean.checked_at) == [french]
    assert drift_results_since(paths, french.checked_at) == []


@pytest.mark.parametrize(
    ("lines", "batch_id", "message"),
    [
        (ENGLISH, "../escape", "batch id '../escape': use letters, digits, . _ - only"),
        ([], "empty-1", "batch empty-1: no lines to check"),
    ],
)
def test_a_bad_batch_is_refused_and_nothing_is_written(
    monitored_project: Path, lines: list[str], batch_id: str, message: str
) -> None:
    paths = project_paths()
    with pytest.raises(DataError, match="^" + message.replace(".", r"\.")):
        check_incoming(lines, batch_id, paths, load_config())
    assert not paths.drift_dir.exists()
    assert not (monitored_project / "mlruns.db").exists()


def test_the_drift_page_and_its_mlflow_copy_show_counts_never_the_lines(
    monitored_project: Path,
) -> None:
    # Issue 25 §3: a line with control characters was listed verbatim among the GX rule's
    # unexpected values, on a page uploaded to MLflow where every logged-in user reads it.
    from mlflow import MlflowClient

    secret = "api_key=sk-live-4242"
    lines = [*ENGLISH[:39], f"A dog runs. {secret}\x1b]0;owned\x07"]
    result = check_incoming(lines, "leaky-1", project_paths(), load_config())
    assert (result.gx_success, result.gx_failed_rules) == (False, ("no_control_chars",))
    run = monitoring_runs(monitored_project)["leaky-1"]
    client = MlflowClient(tracking_uri=f"sqlite:///{monitored_project / 'mlruns.db'}")
    run_id = run.info.run_id  # type: ignore[attr-defined]
    copy = client.download_artifacts(run_id, "data_docs", str(monitored_project.parent))
    [page] = Path(copy).rglob("*.html")
    text = page.read_text("utf-8")
    plain = " ".join(re.sub(r"<[^>]+>", " ", text).split())  # the page's words, no markup
    rule = "values must be greater than or equal to 0.0 and less than or equal to 0.0"
    assert f"control_chars Status Expectation Observed Value {rule} . 1 unexpected" in plain
    written = [path for path in monitored_project.parent.rglob("*") if path.is_file()]
    assert [path for path in written if secret.encode() in path.read_bytes()] == []


def test_check_incoming_without_a_profile_names_the_stage_to_run(project_dir: Path) -> None:
    paths = project_paths()
    with pytest.raises(DataError) as error:
        check_incoming(ENGLISH, "clean-1", paths, load_config())
    assert str(error.value) == (
        f"{paths.corpus_profile}: corpus profile not found; run `dvc repro profile` "
        "(or `mt profile`) before checking incoming text"
    )


def test_a_result_written_before_the_minimum_existed_reads_as_a_judged_verdict() -> None:
    older = {
        "batch_id": "old-1",
        "checked_at": "2026-03-01T10:00:00+00:00",
        "statistics": {"length_psi": 0.5},
        "thresholds": {"length_psi": 0.2},
        "drifted": ["length_psi"],
        "gx_success": True,
        "data_docs": "reports/monitoring/drift/data_docs/validations/old-1.html",
    }
    result = DriftResult.from_json(older)
    assert (result.status, result.lines, result.min_lines, result.pooled_from) == (
        "judged",
        0,
        0,
        (),
    )
    assert result.alarming


# ---- a verdict needs a sample (monitor.min_drift_lines) -------------------------------------


def test_a_batch_below_the_minimum_is_recorded_as_too_few_lines_to_judge(
    monitored_project: Path,
) -> None:
    paths, config = project_paths(), load_config()
    lines = ENGLISH[:3]
    result = check_incoming(lines, "small-1", paths, config)
    assert result == DriftResult(
        batch_id="small-1",
        checked_at=result.checked_at,
        statistics={},
        thresholds={},
        drifted=(),
        gx_success=None,
        data_docs="",
        status="too_few_lines",
        lines=3,
        min_lines=TINY_MIN_DRIFT_LINES,
    )
    assert not result.alarming and drift_findings([result]) == []
    written = json.loads((paths.drift_dir / "small-1.json").read_text("utf-8"))
    assert DriftResult.from_json(written) == result
    assert not (paths.drift_dir / "data_docs").exists()  # no GX suite ran
    # Its lines wait in the pool for more small batches.
    waiting = json.loads((paths.drift_dir / POOL_FOLDER / "small-1.json").read_text("utf-8"))
    assert waiting == {"lines": lines}
    run = monitoring_runs(monitored_project)["small-1"]
    assert run.data.metrics == {"lines": 3.0}  # type: ignore[attr-defined]
    assert run.data.params == {"min_drift_lines": "20"}  # type: ignore[attr-defined]
    assert run.data.tags["monitor.status"] == "too_few_lines"  # type: ignore[attr-defined]


def test_small_batches_are_pooled_and_judged_together_once_they_reach_the_minimum(
    monitored_project: Path,
) -> None:
    paths, config = project_paths(), load_config()
    # Three cycles of FRENCH's four sentences: 8 + 8 + 8 lines, the last one reaches 20.
    parts = {"fr-a": FRENCH[:8], "fr-b": FRENCH[8:16], "fr-c": FRENCH[16:24]}
    results = [check_incoming(lines, batch_id, paths, config) for batch_id, lines in parts.items()]
    assert [(r.status, r.lines) for r in results] == [("too_few_lines", 8)] * 3
    pool_id = pool_batch_id(["fr-a", "fr-b", "fr-c"])
    assert pool_id == "pool-" + hashlib.sha256(b"fr-a\nfr-b\nfr-c").hexdigest()[:12]
    collected = drift_results_since(paths, None)
    # The pool is judged while fr-c is checked, before fr-c's own result is written.
    assert [r.batch_id for r in collected] == ["fr-a", "fr-b", pool_id, "fr-c"]
    pooled = collected[2]
    assert (pooled.status, pooled.lines, pooled.pooled_from) == (
        "judged",
        24,
        ("fr-a", "fr-b", "fr-c"),
    )
    # Six cycles of the sentences, so the same shares as FRENCH: the same drift.
    assert pooled.drifted == ("length_psi", "length_ks", "unknown_rate", "language_share")
    assert pooled.statistics["length_psi"] == pytest.approx(0.45 * math.log(7), 1e-12)
    assert (pooled.gx_success, pooled.gx_failed_rules) == (False, ("language", "unknown_rate"))
    assert list((paths.drift_dir / POOL_FOLDER).glob("*.json")) == []  # judged once, emptied
    [finding] = drift_findings(collected)
    assert finding.kind == "drift"
    assert finding.message.startswith(
        f"pool {pool_id} of 24 lines from the small incoming batches fr-a, fr-b, fr-c (checked "
        f"{pooled.checked_at}) drifted from the training corpus: length_psi "
        f"{0.45 * math.log(7):.3f} (threshold 0.2); length_ks 0.750 (threshold 0.2); "
    )
    assert finding.message.endswith(
        "; its Great Expectations suite failed (language, unknown_rate); Data Docs: "
        f"{pooled.data_docs}"
    )
    run = monitoring_runs(monitored_project)[pool_id]
    assert run.data.tags["monitor.pooled_from"] == "fr-a,fr-b,fr-c"  # type: ignore[attr-defined]
    assert run.data.metrics["lines"] == 24.0  # type: ignore[attr-defined]


# Real Multi30k: a reference built as `mt tokenize` and `mt profile` build it, from the first
# REFERENCE_LINES train sources (a third of train: the same distribution, a third of the time)
# and a smaller vocabulary trained on the first TOKENIZER_PAIRS pairs.
REFERENCE_LINES = 10_000
TOKENIZER_PAIRS = 2_000
# The sizes the val batches are chosen around (params.yaml, benchmarks/drift_sample_size.py).
REPO_MIN_DRIFT_LINES = 125


def multi30k_split(directory: Path, split: str, lang: str) -> list[str]:
    with gzip.open(directory / f"{split}.{lang}.gz", "rt", encoding="utf-8") as handle:
        return text_lines(handle.read())


@pytest.fixture(scope="module")
def multi30k_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """(tokenizer folder, corpus profile) of Multi30k train, for the module."""
    if not (MULTI30K_DIR / "train.en.gz").is_file():
        pytest.fail(f"Multi30k not found at {MULTI30K_DIR}; set MT_DATA_DIR")
    english = multi30k_split(MULTI30K_DIR, "train", "en")
    german = multi30k_split(MULTI30K_DIR, "train", "de")[:TOKENIZER_PAIRS]
    config = load_config(REPO_ROOT / "params.yaml")
    small = dataclasses.replace(config.tokenize, vocab_size=1000)
    models = train_tokenizer_models(english[:TOKENIZER_PAIRS], german, small, config.seed)
    directory = tmp_path_factory.mktemp("multi30k-tokenizer")
    (directory / SOURCE_MODEL).write_bytes(models[0])
    (directory / TARGET_MODEL).write_bytes(models[1])
    return directory, profile_corpus(english[:REFERENCE_LINES], directory, "en")


@pytest.fixture
def multi30k_project(
    project_dir: Path,
    multi30k_reference: tuple[Path, dict[str, object]],
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """A project with the repo's params.yaml and the Multi30k reference."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    install_reference(project_dir, *multi30k_reference)
    assert load_config().monitor.min_drift_lines == REPO_MIN_DRIFT_LINES
    return project_dir


def test_val_batches_below_at_and_above_the_minimum_give_no_finding(
    multi30k_project: Path, multi30k_dir: Path
) -> None:
    paths, config = project_paths(), load_config()
    val = iter(multi30k_split(multi30k_dir, "val", "en"))
    # Disjoint runs of val lines; the first, 3 lines, is issue 23 §5's batch: three ordinary
    # Multi30k-like sentences whose length PSI (5.8) and KS (0.71) were reported as drift.
    sizes = {"val-3": 3, "val-124": 124, "val-125": 125, "val-500": 500}
    results = {
        batch_id: check_incoming([next(val) for _ in range(size)], batch_id, paths, config)
        for batch_id, size in sizes.items()
    }
    assert {batch_id: (r.status, r.lines) for batch_id, r in results.items()} == {
        "val-3": ("too_few_lines", 3),
        "val-124": ("too_few_lines", 124),
        "val-125": ("judged", 125),
        "val-500": ("judged", 500),
    }
    pool_id = pool_batch_id(["val-124", "val-3"])  # 127 lines: judged when val-124 arrives
    collected = drift_results_since(paths, None)
    assert [r.batch_id for r in collected] == ["val-3", pool_id, "val-124", "val-125", "val-500"]
    verdicts = {r.batch_id: (r.lines, r.drifted, r.gx_success) for r in collected if r.judged}
    assert verdicts == {
        pool_id: (127, (), True),
        "val-125": (125, (), True),
        "val-500": (500, (), True),
    }
    assert drift_findings(collected) == []


def test_a_french_val_batch_at_the_minimum_still_drifts(
    multi30k_project: Path, multi30k_dir: Path
) -> None:
    paths, config = project_paths(), load_config()
    french = multi30k_split(multi30k_dir, "val", "fr")[:REPO_MIN_DRIFT_LINES]
    result = check_incoming(french, "val-fr-125", paths, config)
    assert (result.status, result.lines) == ("judged", 125)
    assert result.drifted == ("language_share",)
    assert result.statistics["language_share"] == 0.0
    assert (result.gx_success, result.gx_failed_rules) == (False, ("language",))
    [finding] = drift_findings([result])
    assert finding == Finding(
        "drift",
        f"incoming batch val-fr-125 (checked {result.checked_at}) drifted from the training "
        "corpus: language_share 0.000 (threshold 0.9); its Great Expectations suite failed "
        f"(language); Data Docs: {result.data_docs}",
    )
