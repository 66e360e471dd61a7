"""pipeline/data/clean.py: normalisation, one test per rule, the report and `mt clean`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.aligned_text import read_aligned_lines, read_pairs
from pipeline.cli import main as mt
from pipeline.config import CleanConfig
from pipeline.data.clean import (
    NORMALISATIONS,
    RULES,
    clean_corpus,
    cleaning_report,
    rules_for,
)
from pipeline.errors import DataError, ValidationFailed
from pipeline.text import INVISIBLE_CHARS, normalize_text, remove_invisible
from tests.conftest import TINY_OVERRIDES, tiny_pairs, write_corpus, write_params

CONFIG = CleanConfig(
    max_tokens=8, max_length_ratio=2.0, min_tokens=1, min_source_tokens=1, max_compression=1.0
)
GOOD = ("A dog runs.", "Ein Hund läuft.")


def clean_train(
    train: list[tuple[str, str]],
    val: list[tuple[str, str]] | None = None,
    test: list[tuple[str, str]] | None = None,
):
    raw = {"train": train, "val": val or [], "test": test or []}
    return clean_corpus(raw, "train", "val", CONFIG)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Cafe\u0301 au lait", "Café au lait"),  # decomposed accent → NFC
        ("A\u00a0dog\u202fruns", "A dog runs"),  # no-break and narrow no-break space
        ("A\tdog\t\truns", "A dog runs"),  # tabs inside the line
        ("A  dog   runs", "A dog runs"),  # doubled spaces collapse
        ("  A dog runs \u3000", "A dog runs"),  # stripped, ideographic space included
        ("", ""),
        ("Ein Hund\u200b läuft", "Ein Hund läuft"),  # zero-width space
        ("Ein\u200c Hund\u200d läuft\u2060.", "Ein Hund läuft."),  # joiners, word joiner
        ("\ufeffA dog, a\ufeff cat", "A dog, a cat"),  # byte-order marks in a line
        ("A dog\u2028runs\u2029fast", "A dog runs fast"),  # line/paragraph separators
        ("\u200b\u2028\ufeff", ""),  # nothing visible: an empty line
    ],
)
def test_normalize_text_repairs_unicode_and_whitespace(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_remove_invisible_touches_nothing_else() -> None:
    assert remove_invisible("Ein\u200bHund\u2029\u00a0läuft  \t!") == "EinHund \u00a0läuft  \t!"
    assert set(INVISIBLE_CHARS) == set("\u200b\u200c\u200d\u2060\ufeff\u2028\u2029")


def test_invisible_chars_are_counted_per_split_under_their_rule() -> None:
    test = [("A\u200b cat.", "Eine Katze\u2028sitzt."), GOOD, ("A dog.", "Ein\ufeff Hund.")]
    outcomes = clean_train([("A\u2060 bird.", "Ein Vogel."), ("A man.", "Ein Mann.")], test=test)
    report = cleaning_report(outcomes, CONFIG)
    assert report["normalisations"] == NORMALISATIONS
    assert report["splits"]["test"]["normalised"] == {
        "invisible_chars": {
            "rows": 2,
            "examples": [
                {
                    "line": 1,
                    "found": ["U+200B ZERO WIDTH SPACE", "U+2028 LINE SEPARATOR"],
                    "source": "A cat.",
                    "target": "Eine Katze sitzt.",
                },
                {
                    "line": 3,
                    "found": ["U+FEFF ZERO WIDTH NO-BREAK SPACE"],
                    "source": "A dog.",
                    "target": "Ein Hund.",
                },
            ],
        }
    }
    train = report["splits"]["train"]
    assert train["normalised"]["invisible_chars"]["rows"] == 1
    assert (train["rows_normalised"], outcomes["train"].pairs) == (
        1,
        [("A bird.", "Ein Vogel."), ("A man.", "Ein Mann.")],
    )
    assert report["splits"]["val"]["normalised"] == {
        "invisible_chars": {"rows": 0, "examples": []}
    }


def test_too_short_drops_a_pair_with_an_empty_side() -> None:
    outcome = clean_train([GOOD, ("A cat.", "   ")])["train"]
    assert outcome.dropped["too_short"] == [(2, ("A cat.", ""))]
    assert outcome.pairs == [GOOD]


def test_too_long_drops_a_side_over_max_tokens() -> None:
    long_source = "one two three four five six seven eight nine"  # 9 tokens > 8
    outcome = clean_train([(long_source, "eins zwei drei vier fünf sechs"), GOOD])["train"]
    assert outcome.dropped["too_long"] == [(1, (long_source, "eins zwei drei vier fünf sechs"))]
    assert outcome.pairs == [GOOD]


def test_length_ratio_drops_a_misaligned_pair() -> None:
    outcome = clean_train([GOOD, ("A man is riding a bike.", "@@")])["train"]
    assert outcome.dropped["length_ratio"] == [(2, ("A man is riding a bike.", "@@"))]
    assert outcome.pairs == [GOOD]


def test_length_ratio_keeps_a_pair_at_the_limit() -> None:
    at_limit = ("A man runs fast.", "Läuft schnell.")  # 4 / 2 tokens = 2.0, not above
    assert clean_train([at_limit])["train"].pairs == [at_limit]


def test_duplicate_keeps_the_first_occurrence_after_normalisation() -> None:
    outcome = clean_train([GOOD, ("A cat.", "Eine Katze."), ("A  dog runs.", "Ein Hund\tläuft.")])
    assert outcome["train"].dropped["duplicate"] == [(3, GOOD)]
    assert outcome["train"].pairs == [GOOD, ("A cat.", "Eine Katze.")]


def test_leaked_pair_drops_a_train_pair_that_is_also_in_test() -> None:
    outcome = clean_train([GOOD, ("A cat.", "Eine Katze.")], test=[("A cat.", "Eine Katze.")])
    assert outcome["train"].dropped["leaked_pair"] == [(2, ("A cat.", "Eine Katze."))]
    assert outcome["train"].dropped["leaked_source"] == []


def test_leaked_source_drops_a_train_source_that_is_also_in_val() -> None:
    outcome = clean_train([("A cat.", "Die Katze."), GOOD], val=[("A cat.", "Eine Katze.")])
    assert outcome["train"].dropped["leaked_source"] == [(1, ("A cat.", "Die Katze."))]
    assert outcome["train"].pairs == [GOOD]


# Translation's rules before tasks existed: the names, the order, the report must not change.
TRANSLATION_RULES = [
    "too_short",
    "too_long",
    "length_ratio",
    "duplicate",
    "leaked_pair",
    "leaked_source",
]


def test_every_rule_is_applied_to_train_and_only_row_rules_to_val() -> None:
    assert rules_for("train") == TRANSLATION_RULES
    assert rules_for("train", "translation") == TRANSLATION_RULES
    assert rules_for("val") == ["too_short", "too_long", "length_ratio"]
    assert rules_for("test") == []
    assert set(RULES) >= set(TRANSLATION_RULES)


def test_val_keeps_its_duplicates() -> None:
    outcome = clean_train([GOOD], val=[("A cat.", "Eine Katze.")] * 2)
    assert outcome["val"].pairs == [("A cat.", "Eine Katze.")] * 2


def test_test_split_is_normalised_but_keeps_every_line() -> None:
    test = [("A\u00a0cat.", "Eine Katze."), ("", ""), ("A cat.", "Eine Katze."), ("a b c d", "x")]
    outcome = clean_train([GOOD], test=test)["test"]
    assert outcome.pairs == [
        ("A cat.", "Eine Katze."),
        ("", ""),
        ("A cat.", "Eine Katze."),
        ("a b c d", "x"),
    ]
    assert (outcome.rows_in, outcome.rows_normalised, outcome.dropped) == (4, 1, {})


def test_cleaning_report_counts_rows_per_rule_with_at_most_three_examples() -> None:
    train = [GOOD, *[("", "")] * 4, ("A cat.", "Eine Katze.")]
    report = cleaning_report(clean_train(train), CONFIG)
    too_short = report["splits"]["train"]["dropped"]["too_short"]
    assert too_short == {
        "rows": 4,
        "examples": [{"line": line, "source": "", "target": ""} for line in (2, 3, 4)],
    }
    assert report["splits"]["train"]["rows_in"] == 6
    assert report["splits"]["train"]["rows_out"] == 2
    assert report["params"] == {"max_tokens": 8, "max_length_ratio": 2.0, "min_tokens": 1}
    assert list(report["rules"]) == TRANSLATION_RULES
    assert "task" not in report


def test_read_pairs_rejects_sides_of_different_length(tmp_path: Path) -> None:
    (tmp_path / "val.en").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "val.de").write_text("a\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"val\.de: 1 lines, but .*val\.en has 2"):
        read_pairs(tmp_path, "val", ("en", "de"))


def make_raw_project(root: Path) -> None:
    write_params(root, TINY_OVERRIDES)
    train = [*tiny_pairs(30), ("", "Leer."), tiny_pairs(1)[0], tiny_pairs(1, offset=200)[0]]
    # Looks like train's first pair; only the invisible characters made it differ.
    train.append(
        ("A dog runs on the\u200b beach number 0.", "Ein Hund läuft am\u2028Strand Nummer 0.")
    )
    write_corpus(
        root / "data" / "raw",
        {
            "train": train,
            "val": tiny_pairs(10, offset=100),
            "test_2016_flickr": [
                *tiny_pairs(8, offset=200),
                ("A\u00a0cat.", "Eine\tKatze."),
                ("\ufeffA cat\u200b sleeps.", "Eine Katze\u2060 schläft."),
            ],
        },
    )


@pytest.mark.slow  # the strict GX suite: importing Great Expectations takes seconds
def test_mt_clean_writes_clean_splits_and_the_report(project_dir: Path) -> None:
    make_raw_project(project_dir)
    assert mt(["clean"]) == 0
    clean_dir = project_dir / "data" / "clean"
    splits = ("train", "val", "test_2016_flickr")
    expected_files = sorted(f"{split}.{lang}" for split in splits for lang in ("en", "de"))
    assert sorted(p.name for p in clean_dir.iterdir()) == expected_files
    assert read_aligned_lines(clean_dir / "train.en", "") == [s for s, _ in tiny_pairs(30)]
    test_sources = read_aligned_lines(clean_dir / "test_2016_flickr.en", "")
    assert test_sources[-2:] == ["A cat.", "A cat sleeps."]
    assert read_aligned_lines(clean_dir / "test_2016_flickr.de", "")[-1] == "Eine Katze schläft."
    clean_text = "".join(path.read_text(encoding="utf-8") for path in clean_dir.iterdir())
    assert set(clean_text) & set(INVISIBLE_CHARS) == set()
    report = json.loads((project_dir / "reports" / "cleaning.json").read_text(encoding="utf-8"))
    counts = {rule: entry["rows"] for rule, entry in report["splits"]["train"]["dropped"].items()}
    assert counts == {
        "too_short": 1,
        "too_long": 0,
        "length_ratio": 0,
        "duplicate": 2,
        "leaked_pair": 1,
        "leaked_source": 0,
    }
    assert report["splits"]["train"]["dropped"]["duplicate"]["examples"][1]["line"] == 34
    invisible = {
        s: d["normalised"]["invisible_chars"]["rows"] for s, d in report["splits"].items()
    }
    assert invisible == {"train": 1, "val": 0, "test_2016_flickr": 1}
    assert report["splits"]["train"]["dropped"]["duplicate"]["examples"][0]["line"] == 32
    validation = report["validation"]
    assert (validation["suite"], validation["success"]) == ("clean_pairs", True)


def test_mt_clean_fails_on_misaligned_raw_data_and_writes_nothing(project_dir: Path) -> None:
    make_raw_project(project_dir)
    with (project_dir / "data" / "raw" / "val.de").open("a", encoding="utf-8") as handle:
        handle.write("Eine Zeile zu viel.\n")
    assert mt(["clean"]) == DataError.exit_code
    assert not (project_dir / "data" / "clean").exists()
    assert not (project_dir / "reports" / "cleaning.json").exists()


@pytest.mark.slow  # the strict GX suite: importing Great Expectations takes seconds
def test_mt_clean_fails_when_the_strict_suite_fails_and_writes_nothing(
    project_dir: Path,
) -> None:
    make_raw_project(project_dir)
    raw_en = project_dir / "data" / "raw" / "train.en"
    # A control character survives normalisation; the strict GX suite rejects it.
    raw_en.write_text(raw_en.read_text(encoding="utf-8").replace("beach", "be\x07ach", 1))
    assert mt(["clean"]) == ValidationFailed.exit_code
    assert not (project_dir / "data" / "clean").exists()
    assert not (project_dir / "reports" / "cleaning.json").exists()
