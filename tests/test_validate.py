"""validate_raw: the pure frame builders, the GX suites on tiny corpora, the report, the CLI."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.cli import main as mt
from pipeline.config import load_config
from pipeline.data.pair_frames import build_pair_frame, contains_words, decode_lines, sources_in
from pipeline.data.validate_raw import (
    clean_bounds,
    raw_bounds,
    run_validate_raw,
    suite_expectations,
    validate_clean_pairs,
)
from pipeline.errors import DataError, ValidationFailed
from pipeline.paths import project_paths
from tests.conftest import TINY_OVERRIDES, tiny_pairs, write_corpus, write_params

SPLITS = ("train", "val", "test_2016_flickr")
LANGS = ("en", "de")


def tiny_splits() -> dict[str, list[tuple[str, str]]]:
    return {
        "train": tiny_pairs(60),
        "val": tiny_pairs(10, offset=100),
        "test_2016_flickr": tiny_pairs(10, offset=200),
    }


@pytest.fixture
def tiny_project(project_dir: Path) -> Path:
    """A project with tiny params and a well-formed tiny corpus in data/raw."""
    write_params(project_dir, TINY_OVERRIDES)
    write_corpus(project_dir / "data" / "raw", tiny_splits())
    return project_dir


def raw_path(root: Path, split: str, lang: str) -> Path:
    return root / "data" / "raw" / f"{split}.{lang}"


def replace_line(path: Path, line: int, text: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = text
    path.write_bytes(b"\n".join(lines))


def run_stage(root: Path) -> dict[str, Any]:
    return run_validate_raw(load_config(), project_paths(root))


def read_summary(root: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(
        (root / "reports" / "validation" / "summary.json").read_text(encoding="utf-8")
    )
    return summary


# ----------------------------------------------------------------------------- pure core


def test_decode_lines_splits_on_newline_only_and_flags_bad_bytes() -> None:
    data = "one\u2028still one\nzwei\n".encode() + b"bad \xff byte\nlast"
    lines, valid = decode_lines(data)
    assert lines == ["one\u2028still one", "zwei", "bad \ufffd byte", "last"]
    assert valid == [True, True, False, True]


def test_decode_lines_of_empty_and_newline_terminated_files() -> None:
    assert decode_lines(b"") == ([], [])
    assert decode_lines(b"a\n\nb\n") == (["a", "", "b"], [True, True, True])


def test_contains_words_matches_whole_words_in_any_case() -> None:
    texts = pd.Series(["Die Frau liest.", "Diesel engine", "The theater", "Der Hund"])
    assert contains_words(texts, "de").tolist() == [True, False, False, True]
    assert contains_words(texts, "en").tolist() == [False, False, True, False]
    assert contains_words(texts, "xx").tolist() == [False, False, False, False]


def test_build_pair_frame_derives_the_checked_columns() -> None:
    frame = build_pair_frame(
        ["A dog runs.", "A dog runs.", "Ein Hund", ""],
        ["Ein Hund läuft.", "Ein Hund läuft.", "a b c d e f g h i", "x"],
        LANGS,
        ([True, True, True, True], [True, False, True, True]),
    )
    assert frame["line"].tolist() == [1, 2, 3, 4]
    assert frame["source_tokens"].tolist() == [3, 3, 2, 0]
    assert frame["target_tokens"].tolist() == [3, 3, 9, 1]
    assert frame["length_ratio"].tolist() == [1.0, 1.0, 4.5, 1.0]
    assert frame["is_duplicate"].tolist() == [False, True, False, False]
    assert frame["source_foreign_words"].tolist() == [False, False, True, False]
    assert frame["target_foreign_words"].tolist() == [False, False, False, False]
    assert frame["target_utf8_valid"].tolist() == [True, False, True, True]


def test_raw_suite_names_every_rule_once(project_dir: Path) -> None:
    config = load_config()
    rules = [e.meta["rule"] for e in suite_expectations(raw_bounds(config, "train"), LANGS)]
    per_side = ["min_tokens", "valid_utf8", "no_control_chars", "max_tokens", "max_chars"]
    assert sorted(rules) == sorted(
        ["min_rows", "duplicate_pairs", "length_ratio", "source_language", "target_language"]
        + [f"{side}_{rule}" for side in ("source", "target") for rule in per_side]
    )
    held_out = [e.meta["rule"] for e in suite_expectations(raw_bounds(config, "val"), LANGS)]
    assert sorted(held_out) == sorted([*rules, "train_overlap"])


def test_clean_suite_leaves_test_split_lengths_unbounded(project_dir: Path) -> None:
    config = load_config()
    test_bounds = clean_bounds(config, "test_2016_flickr")
    train_bounds = clean_bounds(config, "train")
    rules = {e.meta["rule"] for e in suite_expectations(test_bounds, LANGS)}
    assert "source_max_tokens" not in rules and "length_ratio" not in rules
    assert (train_bounds.max_tokens, train_bounds.mostly) == (config.clean.max_tokens, 1.0)
    assert train_bounds.max_duplicate_share == 0.0


# ----------------------------------------------------------------------------- the stage


def test_tiny_corpus_passes_and_writes_the_report(tiny_project: Path) -> None:
    summary = run_stage(tiny_project)
    report = tiny_project / "reports" / "validation"
    assert summary["success"] is True
    assert {split: d["failed_rules"] for split, d in summary["splits"].items()} == {
        split: [] for split in SPLITS
    }
    # Translation's summary is the one before tasks existed: no `task`, no task bounds.
    assert sorted(summary) == ["splits", "success", "suite", "train_overlap"]
    bounds = ["min_rows", "min_tokens", "max_tokens", "max_length_ratio", "mostly"]
    bounds += ["max_duplicate_share", "max_train_overlap"]
    assert sorted(summary["splits"]["train"]["bounds"]) == sorted(bounds)
    assert summary["splits"]["train"]["rows"] == 60
    assert summary["splits"]["train"]["files"] == ["data/raw/train.en", "data/raw/train.de"]
    none_in_train = {"rows": 0, "share": 0.0, "max_share": 0.01}
    assert summary["train_overlap"] == {"val": none_in_train, "test_2016_flickr": none_in_train}
    assert (report / "data_docs" / "index.html").is_file()
    assert sorted(p.name for p in (report / "results").iterdir()) == sorted(
        f"{split}.json" for split in SPLITS
    )
    assert read_summary(tiny_project) == summary


def test_summary_is_byte_identical_across_runs(tiny_project: Path) -> None:
    replace_line(raw_path(tiny_project, "train", "en"), 7, b"Ein Hund l\xc3\xa4uft \x1b.")
    summary_file = tiny_project / "reports" / "validation" / "summary.json"
    with pytest.raises(ValidationFailed):
        run_stage(tiny_project)
    first = summary_file.read_bytes()
    with pytest.raises(ValidationFailed):
        run_stage(tiny_project)
    assert summary_file.read_bytes() == first


def test_tab_inside_a_line_is_allowed(tiny_project: Path) -> None:
    replace_line(raw_path(tiny_project, "train", "de"), 3, b"Eine Frau\tliest.")
    assert run_stage(tiny_project)["success"] is True


def _long_line() -> bytes:
    return b" ".join([b"word"] * 20_000)


# (split, side file, line, new bytes) -> the exact rules that must fail on that split
BROKEN_INPUTS = {
    "empty_target": ("train", "de", 5, b"", {"target_min_tokens", "length_ratio"}),
    "control_char": ("val", "en", 2, b"A dog\x07 runs.", {"source_no_control_chars"}),
    "carriage_return": ("val", "de", 2, b"Ein Hund\r l\xc3\xa4uft.", {"target_no_control_chars"}),
    "invalid_utf8": ("train", "de", 9, b"Ein Hund l\xe4uft.", {"target_valid_utf8"}),
    "long_line": (
        "train",
        "en",
        4,
        _long_line(),
        {"source_max_tokens", "source_max_chars", "length_ratio"},
    ),
    "blob_without_spaces": (
        "train",
        "en",
        4,
        b"x" * 100_000,
        {"source_max_chars", "length_ratio"},
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_INPUTS))
def test_broken_line_fails_exactly_its_rules(tiny_project: Path, case: str) -> None:
    split, lang, line, text, rules = BROKEN_INPUTS[case]
    replace_line(raw_path(tiny_project, split, lang), line, text)
    with pytest.raises(ValidationFailed) as failure:
        run_stage(tiny_project)
    summary = read_summary(tiny_project)
    assert summary["success"] is False
    failed = {name: d["failed_rules"] for name, d in summary["splits"].items()}
    assert failed == {name: sorted(rules) if name == split else [] for name in SPLITS}
    for rule in rules:
        examples = summary["splits"][split]["rules"][rule]["examples"]
        assert [row["line"] for row in examples] == [line]
        assert f"{split} (data/raw/{split}.en / data/raw/{split}.de): rule {rule}" in str(
            failure.value
        )
    assert f"    line {line}: " in str(failure.value)


def test_swapped_languages_fail_the_language_rules(tiny_project: Path) -> None:
    swapped = [(de, en) for en, de in tiny_pairs(60)]
    write_corpus(tiny_project / "data" / "raw", {"train": swapped})
    with pytest.raises(ValidationFailed, match="train .*rule source_language"):
        run_stage(tiny_project)
    train = read_summary(tiny_project)["splits"]["train"]
    assert train["failed_rules"] == ["source_language", "target_language"]
    # "Zwei Männer spielen Fußball" has none of the listed German function words.
    assert train["rules"]["source_language"]["unexpected_rows"] == 54
    examples = train["rules"]["source_language"]["examples"]
    assert [row["line"] for row in examples] == [1, 3, 4, 5, 6]
    assert examples[0]["source"] == "Ein Hund läuft am Strand Nummer 0."


def test_duplicates_above_the_share_fail(tiny_project: Path) -> None:
    write_corpus(tiny_project / "data" / "raw", {"train": tiny_pairs(30) * 2})
    with pytest.raises(ValidationFailed, match="rule duplicate_pairs"):
        run_stage(tiny_project)
    train = read_summary(tiny_project)["splits"]["train"]
    assert train["failed_rules"] == ["duplicate_pairs"]
    assert train["rules"]["duplicate_pairs"]["unexpected_rows"] == 30
    assert train["rules"]["duplicate_pairs"]["examples"][0]["line"] == 31


def test_a_test_split_copied_from_train_fails_train_overlap(tiny_project: Path) -> None:
    write_corpus(tiny_project / "data" / "raw", {"test_2016_flickr": tiny_pairs(10)})
    with pytest.raises(ValidationFailed) as failure:
        run_stage(tiny_project)
    summary = read_summary(tiny_project)
    failed = {split: d["failed_rules"] for split, d in summary["splits"].items()}
    assert failed == {"train": [], "val": [], "test_2016_flickr": ["train_overlap"]}
    assert summary["train_overlap"]["test_2016_flickr"] == {
        "rows": 10,
        "share": 1.0,
        "max_share": 0.01,
    }
    message = str(failure.value)
    assert (
        "test_2016_flickr (data/raw/test_2016_flickr.en / data/raw/test_2016_flickr.de): rule "
        "train_overlap (10 of 10 rows break expect_column_values_to_be_in_set(column="
        "source_in_train, mostly=0.99, value_set=[False]))"
    ) in message
    assert "    fix: these val/test sources also occur in train" in message
    assert "    line 1: 'A dog runs on the beach number 0.'" in message


def test_overlap_flags_compare_normalised_non_empty_sources() -> None:
    flags = sources_in(["", "A  dog\u200b.", "A cat.", "a dog."], frozenset({"", "A dog."}))
    assert flags.tolist() == [False, True, False, False]


@pytest.mark.parametrize("max_overlap", [0.1, 0.09])
def test_train_overlap_fails_only_above_its_share(project_dir: Path, max_overlap: float) -> None:
    limits = {**TINY_OVERRIDES["validate"], "max_train_overlap": max_overlap}
    write_params(project_dir, {**TINY_OVERRIDES, "validate": limits})
    splits = tiny_splits()
    # The source of train line 4 once clean has normalised it, with another translation.
    splits["val"][6] = ("A  child jumps into\u200b the water number 0. ", "Ein Kind springt.")
    write_corpus(project_dir / "data" / "raw", splits)
    if max_overlap >= 0.1:
        assert run_stage(project_dir)["success"] is True
    else:
        with pytest.raises(ValidationFailed, match="val .*: rule train_overlap .1 of 10 rows"):
            run_stage(project_dir)
    summary = read_summary(project_dir)
    failed = {split: d["failed_rules"] for split, d in summary["splits"].items()}
    expected = [] if max_overlap >= 0.1 else ["train_overlap"]
    assert failed == {"train": [], "val": expected, "test_2016_flickr": []}
    assert summary["train_overlap"]["val"] == {"rows": 1, "share": 0.1, "max_share": max_overlap}
    assert summary["splits"]["val"]["rules"]["train_overlap"]["examples"] == (
        []
        if max_overlap >= 0.1
        else [{"line": 7, "source": splits["val"][6][0], "target": "Ein Kind springt."}]
    )


def test_too_few_rows_fail_min_rows(tiny_project: Path) -> None:
    write_corpus(tiny_project / "data" / "raw", {"train": tiny_pairs(19)})
    with pytest.raises(ValidationFailed, match=r"rule min_rows \(observed 19"):
        run_stage(tiny_project)
    assert read_summary(tiny_project)["splits"]["train"]["failed_rules"] == ["min_rows"]


def test_empty_split_fails_min_rows_only(tiny_project: Path) -> None:
    for lang in LANGS:
        raw_path(tiny_project, "val", lang).write_bytes(b"")
    with pytest.raises(ValidationFailed, match=r"rule min_rows \(observed 0"):
        run_stage(tiny_project)
    assert read_summary(tiny_project)["splits"]["val"]["failed_rules"] == ["min_rows"]


def test_unequal_line_counts_raise_before_any_report(tiny_project: Path) -> None:
    run_stage(tiny_project)
    target = raw_path(tiny_project, "val", "de")
    target.write_text(target.read_text(encoding="utf-8") + "Ein Satz zu viel.\n", "utf-8")
    with pytest.raises(DataError, match=r"val\.de: 11 lines, but .*val\.en has 10"):
        run_stage(tiny_project)
    # The stale success report is gone, so nothing can read it as a pass.
    assert not (tiny_project / "reports" / "validation").exists()


def test_missing_side_raises_data_error(tiny_project: Path) -> None:
    raw_path(tiny_project, "test_2016_flickr", "en").unlink()
    with pytest.raises(DataError, match=r"test_2016_flickr\.en: missing; rule: every split"):
        run_stage(tiny_project)


# ----------------------------------------------------------------------------- CLI


def test_cli_exit_codes(tiny_project: Path) -> None:
    assert mt(["validate"]) == 0
    replace_line(raw_path(tiny_project, "train", "en"), 1, b"")
    assert mt(["validate"]) == ValidationFailed.exit_code
    raw_path(tiny_project, "train", "en").unlink()
    assert mt(["validate"]) == DataError.exit_code


# ----------------------------------------------------------------------------- clean suite


def test_clean_suite_passes_on_clean_pairs(project_dir: Path) -> None:
    write_params(project_dir, TINY_OVERRIDES)
    summary = validate_clean_pairs(tiny_splits(), load_config())
    assert summary["success"] is True
    assert summary["suite"] == "clean_pairs"


def test_clean_suite_allows_no_duplicate_and_no_long_pair(project_dir: Path) -> None:
    write_params(project_dir, TINY_OVERRIDES)
    splits = tiny_splits()
    splits["train"] = [*splits["train"], splits["train"][0]]
    long_pair = (" ".join(["word"] * 51), " ".join(["Wort"] * 51))
    splits["val"] = [*splits["val"], long_pair]
    splits["test_2016_flickr"] = [*splits["test_2016_flickr"], long_pair]
    with pytest.raises(ValidationFailed) as failure:
        validate_clean_pairs(splits, load_config())
    message = str(failure.value)
    assert "train (cleaned train pairs): rule duplicate_pairs (1 of 61 rows" in message
    assert "val (cleaned val pairs): rule source_max_tokens (1 of 11 rows" in message
    assert "test_2016_flickr" not in message


# ----------------------------------------------------------------------------- real data


def _write_multi30k_raw(root: Path, multi30k_dir: Path, langs: tuple[str, str]) -> None:
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    for split in SPLITS:
        for lang in langs:
            packed = multi30k_dir / f"{split}.{lang}.gz"
            raw_path(root, split, lang).write_bytes(gzip.decompress(packed.read_bytes()))


@pytest.mark.slow
@pytest.mark.parametrize("tgt_lang", ["de", "fr"])
def test_real_multi30k_passes(project_dir: Path, multi30k_dir: Path, tgt_lang: str) -> None:
    write_params(project_dir, {"data": {"tgt_lang": tgt_lang}})
    _write_multi30k_raw(project_dir, multi30k_dir, ("en", tgt_lang))
    summary = run_stage(project_dir)
    assert summary["success"] is True
    assert [summary["splits"][split]["rows"] for split in SPLITS] == [29_000, 1_014, 1_000]
    # The real overlap the default validate.max_train_overlap (1%) leaves room for: one val
    # source of 1,014 also occurs in train, no test source does.
    assert summary["train_overlap"] == {
        "val": {"rows": 1, "share": round(1 / 1_014, 6), "max_share": 0.01},
        "test_2016_flickr": {"rows": 0, "share": 0.0, "max_share": 0.01},
    }
