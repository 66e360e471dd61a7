"""sacreBLEU scoring, report pieces, and `mt evaluate` end to end on a tiny memorising model."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import sacrebleu

from pipeline import cli
from pipeline.config import _load_cached, load_config
from pipeline.errors import ConfigError, DataError
from pipeline.evaluate import (
    bleu_by_length,
    by_length_csv,
    choose_sample_rows,
    corpus_metrics,
    read_split,
    read_val_split,
)
from pipeline.paths import project_paths
from tests.conftest import TINY_OVERRIDES, write_params
from tests.tiny_translator import MEMORISED_PAIRS as TRAIN_PAIRS
from tests.tiny_translator import memorised_model_dir

VERSION = sacrebleu.__version__
# Memorised pairs the test split does not use: the val split's exact score is theirs.
VAL_PAIRS = TRAIN_PAIRS[10:14]
REFERENCES = [
    "Ein Hund läuft am Strand.",
    "Zwei Männer spielen Fußball.",
    "Eine Frau liest ein Buch.",
    "Ein Kind springt ins Wasser.",
]
METRIC_KEYS = {
    "bleu",
    "bleu_ci95",
    "bleu_lowercase",
    "chrf",
    "chrf_ci95",
    "ter",
    "ter_ci95",
    "sentences",
    "signatures",
}


def test_a_corpus_scored_against_itself_is_perfect_with_exact_signatures() -> None:
    metrics = corpus_metrics(REFERENCES, REFERENCES, resamples=50, seed=1234)
    assert set(metrics) == METRIC_KEYS
    assert metrics["bleu"] == 100.0 and metrics["bleu_ci95"] == [100.0, 100.0]
    assert metrics["bleu_lowercase"] == 100.0
    assert metrics["chrf"] == 100.0 and metrics["chrf_ci95"] == [100.0, 100.0]
    assert metrics["ter"] == 0.0 and metrics["ter_ci95"] == [0.0, 0.0]
    assert metrics["sentences"] == 4
    common = "nrefs:1|bs:50|seed:1234"
    assert metrics["signatures"] == {
        "bleu": f"{common}|case:mixed|eff:no|tok:13a|smooth:exp|version:{VERSION}",
        "bleu_lowercase": f"{common}|case:lc|eff:no|tok:13a|smooth:exp|version:{VERSION}",
        "chrf": f"{common}|case:mixed|eff:yes|nc:6|nw:0|space:no|version:{VERSION}",
        "ter": f"{common}|case:lc|tok:tercom|norm:no|punct:yes|asian:no|version:{VERSION}",
    }


def test_casing_errors_cost_cased_bleu_only() -> None:
    lowered = [line.lower() for line in REFERENCES]
    metrics = corpus_metrics(lowered, REFERENCES, resamples=50, seed=1234)
    assert metrics["bleu"] < 100.0
    assert metrics["bleu_lowercase"] == 100.0


def test_bootstrap_interval_is_seeded_and_brackets_the_score() -> None:
    hypotheses = ["Ein Hund läuft.", "Zwei Männer spielen.", "Eine Frau liest ein Buch.", "Kind"]
    first = corpus_metrics(hypotheses, REFERENCES, resamples=200, seed=7)
    again = corpus_metrics(hypotheses, REFERENCES, resamples=200, seed=7)
    assert first == again
    low, high = first["chrf_ci95"]
    assert low < first["chrf"] < high
    assert first["signatures"]["chrf"].startswith("nrefs:1|bs:200|seed:7|")


def test_a_single_bootstrap_resample_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"evaluate\.bootstrap_resamples"):
        corpus_metrics(REFERENCES, REFERENCES, resamples=1, seed=1)


def test_bleu_by_length_buckets_by_source_tokens_and_skips_empty_buckets() -> None:
    sources = ["a b c", "a b c d e", "one two three four five six seven", " ".join(["w"] * 30)]
    hypotheses = [REFERENCES[0], "völlig falsch", REFERENCES[2], REFERENCES[3]]
    rows = bleu_by_length(sources, hypotheses, REFERENCES)
    expected_short = round(sacrebleu.corpus_bleu(hypotheses[:2], [REFERENCES[:2]]).score, 4)
    assert rows == [
        {"source_length": "1-5", "bleu": expected_short, "sentences": 2},
        {"source_length": "6-10", "bleu": 100.0, "sentences": 1},
        {"source_length": "26+", "bleu": 100.0, "sentences": 1},
    ]
    assert 0.0 < expected_short < 100.0
    assert by_length_csv(rows[1:]) == "source_length,bleu,sentences\n6-10,100.0,1\n26+,100.0,1\n"


def test_sample_rows_are_distinct_sorted_and_reproducible() -> None:
    rows = choose_sample_rows(1000, 20, seed=3)
    assert len(set(rows)) == 20 and rows == sorted(rows)
    assert rows == choose_sample_rows(1000, 20, seed=3)
    assert rows != choose_sample_rows(1000, 20, seed=4)
    assert choose_sample_rows(3, 20, seed=3) == [0, 1, 2]


# ------------------------------------------------------------------------------ the stage


def write_test_split(
    root: Path,
    pairs: list[tuple[str, str]],
    split: str = "test_2016_flickr",
    val_pairs: list[tuple[str, str]] | None = None,
) -> None:
    """data/raw and data/clean for one test split (the clean side is already normalised), and
    the clean val split evaluate scores as well (`val_pairs`; default: the first 4 of `pairs`)."""
    for directory in (root / "data" / "raw", root / "data" / "clean"):
        write_pairs(directory, split, pairs)
    write_pairs(root / "data" / "clean", "val", pairs[:4] if val_pairs is None else val_pairs)


def write_pairs(directory: Path, split: str, pairs: list[tuple[str, str]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{split}.en").write_text("".join(s + "\n" for s, _ in pairs), "utf-8")
    (directory / f"{split}.de").write_text("".join(t + "\n" for _, t in pairs), "utf-8")


@pytest.fixture
def tiny_project(project_dir: Path) -> Path:
    write_params(project_dir, TINY_OVERRIDES)
    _load_cached.cache_clear()
    write_test_split(project_dir, TRAIN_PAIRS[:10], val_pairs=VAL_PAIRS)
    return project_dir


def test_a_missing_reference_is_a_data_error_naming_it(tiny_project: Path) -> None:
    reference = tiny_project / "data" / "raw" / "test_2016_flickr.de"
    reference.unlink()
    with pytest.raises(DataError, match=r"test_2016_flickr\.de: not found.*mt fetch"):
        read_split(project_paths(), load_config(), "test_2016_flickr")


def test_a_source_with_fewer_lines_than_its_reference_is_a_data_error(tiny_project: Path) -> None:
    source = tiny_project / "data" / "clean" / "test_2016_flickr.en"
    source.write_text("A dog.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test_2016_flickr\.en: 1 lines, but the reference"):
        read_split(project_paths(), load_config(), "test_2016_flickr")


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("test_2016_flickr.en", "test_2016_flickr.en: not found; evaluate needs"),
        ("val.de", "val.de: not found; evaluate scores the val split too"),
    ],
    ids=["test-split", "val-split"],
)
def test_mt_evaluate_fails_before_writing_anything_when_a_file_is_missing(
    tiny_project: Path, caplog: pytest.LogCaptureFixture, missing: str, message: str
) -> None:
    (tiny_project / "data" / "clean" / missing).unlink()
    assert cli.main(["evaluate"]) == 2
    assert message in caplog.text
    assert not (tiny_project / "metrics.json").exists()
    assert not (tiny_project / "reports").exists()


def test_the_val_split_is_read_from_data_clean_on_both_sides(tiny_project: Path) -> None:
    split = read_val_split(project_paths(), load_config())
    assert (split.name, split.sources, split.references) == (
        "val",
        [source for source, _ in VAL_PAIRS],
        [target for _, target in VAL_PAIRS],
    )
    (tiny_project / "data" / "clean" / "val.de").write_text("Ein Hund.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"val\.en: 4 lines, but .*val\.de has 1"):
        read_val_split(project_paths(), load_config())


@pytest.mark.slow
def test_mt_evaluate_scores_a_memorised_split_and_writes_every_report(
    tiny_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shutil.copytree(memorised_model_dir(tmp_path_factory), tiny_project / "models")
    assert cli.main(["evaluate"]) == 0

    metrics = json.loads((tiny_project / "metrics.json").read_text(encoding="utf-8"))
    assert list(metrics) == ["test_2016_flickr", "val"]
    val = metrics["val"]  # the split sweeps select by: all scores, no reports of its own
    assert set(val) == METRIC_KEYS
    assert (val["bleu"], val["chrf"], val["sentences"]) == (100.0, 100.0, len(VAL_PAIRS))
    split = metrics["test_2016_flickr"]
    assert set(split) == METRIC_KEYS
    assert (split["bleu"], split["chrf"], split["ter"], split["sentences"]) == (
        100.0,
        100.0,
        0.0,
        10,
    )
    assert split["signatures"]["bleu"].startswith("nrefs:1|bs:50|seed:1234|case:mixed")

    reports = tiny_project / "reports" / "eval"
    hypotheses = (reports / "hypotheses" / "test_2016_flickr.txt").read_text(encoding="utf-8")
    assert hypotheses == "".join(t + "\n" for _, t in TRAIN_PAIRS[:10])
    assert (reports / "bleu_by_length.csv").read_text() == (
        "source_length,bleu,sentences\n6-10,100.0,10\n"
    )
    samples = (reports / "samples.md").read_text(encoding="utf-8")
    assert samples.count("### Line ") == 3  # evaluate.samples in TINY_OVERRIDES
    assert sorted(path.name for path in (reports / "hypotheses").iterdir()) == [
        "test_2016_flickr.txt"
    ]
    pngs = sorted(path.name for path in (reports / "attention").iterdir())
    assert len(pngs) == 1 and pngs[0].startswith("test_2016_flickr_")
    assert (reports / "attention" / pngs[0]).read_bytes()[:4] == b"\x89PNG"
    report = (reports / "report.md").read_text(encoding="utf-8")
    for link in ("samples.md", "hypotheses/test_2016_flickr.txt", "bleu_by_length.csv"):
        assert f"]({link})" in report
    assert f"](attention/{pngs[0]})" in report

    provenance = json.loads((reports / "provenance.json").read_text(encoding="utf-8"))
    models = tiny_project / "models"
    assert provenance["model"]["model_sha256"] == sha256_of(models / "seq2seq.keras")
    assert provenance["model"]["decoding"]["beam_size"] == 2  # decode.beam_size in TINY
    assert provenance["metrics_sha256"] == sha256_of(tiny_project / "metrics.json")
    assert provenance["hypotheses_sha256"] == {
        "test_2016_flickr": sha256_of(reports / "hypotheses" / "test_2016_flickr.txt")
    }
    reference = tiny_project / "data" / "raw" / "test_2016_flickr.de"
    assert provenance["references_sha256"] == {"test_2016_flickr": sha256_of(reference)}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
