"""Drift of incoming text: the statistics (exact values on tiny inputs), language identification
on real Multi30k text, and `check_incoming` end to end (JSON, GX Data Docs page, MLflow run)."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import DataError
from pipeline.monitor import drift_stats
from pipeline.monitor.drift import (
    DriftResult,
    check_incoming,
    drift_results_since,
    drifted_features,
)
from pipeline.monitor.monitoring_runs import MONITORING_EXPERIMENT
from pipeline.monitor.profile import profile_corpus
from pipeline.monitor.text_features import detected_languages, language_share
from pipeline.paths import project_paths
from tests.conftest import tiny_pairs
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


@pytest.fixture
def monitored_project(
    project_dir: Path,
    tokenizer_dir: Path,  # noqa: F811  (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """A project with the tiny tokenizer, the profile of ENGLISH and a local MLflow store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = project_paths()
    paths.tokenizer_dir.parent.mkdir(parents=True)
    paths.tokenizer_dir.symlink_to(tokenizer_dir)
    paths.monitoring_dir.mkdir(parents=True)
    profile = profile_corpus(ENGLISH, tokenizer_dir, "en")
    paths.corpus_profile.write_text(json.dumps(profile), encoding="utf-8")
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


def test_check_incoming_without_a_profile_names_the_stage_to_run(project_dir: Path) -> None:
    paths = project_paths()
    with pytest.raises(DataError) as error:
        check_incoming(ENGLISH, "clean-1", paths, load_config())
    assert str(error.value) == (
        f"{paths.corpus_profile}: corpus profile not found; run `dvc repro profile` "
        "(or `mt profile`) before checking incoming text"
    )
