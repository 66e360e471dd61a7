"""The data rules per task: validate's suites and clean's rules for summarization and dialogue,
and translation's exactly as they were before tasks existed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from pipeline import cli
from pipeline.config import CleanConfig, load_config
from pipeline.data.clean import RULES, clean_corpus, cleaning_report, rules_for, task_rules
from pipeline.data.expectations import bounds_report, clean_bounds, raw_bounds, suite_expectations
from pipeline.data.pair_frames import (
    LANGUAGE_SAMPLE_ROWS,
    build_pair_frame,
    identical_sides,
    language_sample,
    with_detected_languages,
)
from pipeline.data.validate_raw import run_validate_raw, validate_clean_pairs
from pipeline.errors import ValidationFailed
from pipeline.paths import project_paths
from tests.conftest import TINY_OVERRIDES, tiny_pairs, write_corpus, write_params

SIDES = ("en.src", "en.tgt")
SPLITS = ("train", "val", "test")
SAME_LANGUAGE = {"src_lang": "en", "tgt_lang": "en", "test_splits": ["test"]}
TINY_VALIDATE = {"min_rows": 5, "min_train_rows": 20, "min_language_share": 0.9}
SUMMARIZATION: dict[str, Any] = {
    **TINY_OVERRIDES,
    "task": "summarization",
    "data": SAME_LANGUAGE,
    "validate": {**TINY_VALIDATE, "min_source_tokens": 8, "max_compression": 1.0},
    "clean": {"min_source_tokens": 10, "max_compression": 0.5},
    "register": {**TINY_OVERRIDES["register"], "metric": "rouge_l"},
}
DIALOGUE: dict[str, Any] = {
    **TINY_OVERRIDES,
    "task": "dialogue",
    "data": SAME_LANGUAGE,
    "validate": TINY_VALIDATE,
}

# English texts py3langid identifies as `en` with their counters (checked for 600 rows each).
SUMMARY_SEEDS = [
    (
        "The dog runs along the beach every morning and then sleeps in the sun all day.",
        "The dog runs on the beach.",
    ),
    (
        "Two men are playing soccer in the park while their friends watch them from the bench.",
        "Two men are playing soccer.",
    ),
    (
        "A woman is reading a book in the garden because the weather is warm and quiet today.",
        "A woman is reading a book.",
    ),
    (
        "A child jumps into the water from the old wooden bridge while the other children laugh.",
        "A child jumps into the water.",
    ),
    (
        "The man is riding a bike through the city because his car broke down last week.",
        "The man is riding a bike.",
    ),
]
DIALOGUE_SEEDS = [
    ("How are you doing today?", "I am doing well, thank you for asking."),
    ("What is your favourite book?", "I really like reading old science fiction novels."),
    ("Where do you live?", "I live in a small house near the river."),
    ("Do you like music?", "Yes, I listen to music every evening after work."),
    ("What time is it now?", "It is almost time for dinner, I think."),
]


def numbered(seeds: list[tuple[str, str]], count: int, offset: int) -> list[tuple[str, str]]:
    """`count` distinct pairs: the seeds with a counter before their final punctuation."""
    pairs = []
    for i in range(offset, offset + count):
        source, target = seeds[i % len(seeds)]
        n = i // len(seeds)
        pairs.append((f"{source[:-1]} number {n}{source[-1]}", f"{target[:-1]} number {n}."))
    return pairs


def summary_pairs(count: int, offset: int = 0) -> list[tuple[str, str]]:
    """Sources of 17-18 tokens, targets of 7-8: compression about 0.4."""
    return numbered(SUMMARY_SEEDS, count, offset)


def dialogue_pairs(count: int, offset: int = 0) -> list[tuple[str, str]]:
    return numbered(DIALOGUE_SEEDS, count, offset)


def splits_of(make: Any) -> dict[str, list[tuple[str, str]]]:
    return {"train": make(60), "val": make(10, offset=100), "test": make(10, offset=200)}


def task_project(root: Path, overrides: dict[str, Any], splits: dict[str, Any]) -> Path:
    write_params(root, overrides)
    write_corpus(root / "data" / "raw", splits, SIDES)
    return root


def run_stage(root: Path) -> dict[str, Any]:
    return run_validate_raw(load_config(), project_paths(root))


def read_summary(root: Path) -> dict[str, Any]:
    path = root / "reports" / "validation" / "summary.json"
    summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return summary


def failed_rules(summary: dict[str, Any]) -> dict[str, list[str]]:
    return {split: details["failed_rules"] for split, details in summary["splits"].items()}


def rule_names(bounds: Any, langs: tuple[str, str] = ("en", "en")) -> list[str]:
    return [e.meta["rule"] for e in suite_expectations(bounds, langs)]


PER_SIDE = ["min_tokens", "valid_utf8", "no_control_chars", "max_tokens", "max_chars"]
SIDE_RULES = [f"{side}_{rule}" for side in ("source", "target") for rule in PER_SIDE]
LANGUAGE_RULES = ["source_detected_language", "target_detected_language"]


# ----------------------------------------------------------------------------- translation


def test_translation_suites_are_the_ones_before_tasks(project_dir: Path) -> None:
    config = load_config()
    langs = ("en", "de")
    pair = ["min_rows", "duplicate_pairs", "length_ratio", "source_language", "target_language"]
    assert rule_names(raw_bounds(config, "train"), langs) == pair + SIDE_RULES
    held_out = ["min_rows", "duplicate_pairs", "train_overlap", *pair[2:]]
    assert rule_names(raw_bounds(config, "val"), langs) == held_out + SIDE_RULES
    assert rule_names(clean_bounds(config, "train"), langs) == pair + SIDE_RULES
    unbounded = [f"{side}_{rule}" for side in ("source", "target") for rule in PER_SIDE[:3]]
    clean_test = ["min_rows", "duplicate_pairs", *pair[3:], *unbounded]
    assert rule_names(clean_bounds(config, "test_2016_flickr"), langs) == clean_test
    assert bounds_report(raw_bounds(config, "val")) == {
        "min_rows": 100,
        "min_tokens": 1,
        "max_tokens": 80,
        "max_length_ratio": 4.0,
        "mostly": 0.995,
        "max_duplicate_share": 0.05,
        "max_train_overlap": 0.01,
    }


def test_translation_cleaning_report_is_the_one_before_tasks() -> None:
    config = CleanConfig(
        max_tokens=8, max_length_ratio=2.0, min_tokens=1, min_source_tokens=5, max_compression=0.1
    )
    train = [("A dog runs.", "Ein Hund läuft."), ("A man is riding a bike.", "@@")]
    outcomes = clean_corpus({"train": train, "val": [], "test": []}, "train", "val", config)
    report = cleaning_report(outcomes, config)
    assert list(report) == ["params", "rules", "normalisations", "splits"]
    assert report["params"] == {"max_tokens": 8, "max_length_ratio": 2.0, "min_tokens": 1}
    assert report["rules"] == {
        "too_short": "Empty pairs, or a side with fewer than clean.min_tokens tokens.",
        "too_long": "A side with more than clean.max_tokens tokens.",
        "length_ratio": "Longer side / shorter side (in tokens) above clean.max_length_ratio: "
        "likely misaligned.",
        "duplicate": "A pair seen earlier in the same split (the first one is kept).",
        "leaked_pair": "The whole pair also occurs in val or a test split.",
        "leaked_source": "The source sentence also occurs in val or a test split (with another "
        "translation).",
    }
    dropped = {name: entry["rows"] for name, entry in report["splits"]["train"]["dropped"].items()}
    assert dropped == {name: int(name == "length_ratio") for name in report["rules"]}


# ----------------------------------------------------------------------------- suites per task


def test_summarization_suites_check_compression_not_length_ratio(project_dir: Path) -> None:
    write_params(project_dir, SUMMARIZATION)
    config = load_config()
    task = ["min_source_tokens", "max_compression"]
    train = ["min_rows", "duplicate_pairs", *task, *LANGUAGE_RULES, *SIDE_RULES]
    assert rule_names(raw_bounds(config, "train")) == train
    clean_val = ["min_rows", "duplicate_pairs", *task, *SIDE_RULES]
    assert rule_names(clean_bounds(config, "val")) == clean_val
    assert "max_compression" not in rule_names(clean_bounds(config, "test"))
    assert bounds_report(clean_bounds(config, "train")) == {
        "min_rows": 20,
        "min_tokens": 1,
        "max_tokens": 50,
        "max_length_ratio": None,
        "mostly": 1.0,
        "max_duplicate_share": 0.0,
        "max_train_overlap": None,
        "min_source_tokens": 10,
        "max_compression": 0.5,
    }


def test_dialogue_suites_check_echoes_and_no_length_rule(project_dir: Path) -> None:
    write_params(project_dir, DIALOGUE)
    config = load_config()
    train = ["min_rows", "duplicate_pairs", "identical_sides", *LANGUAGE_RULES, *SIDE_RULES]
    assert rule_names(raw_bounds(config, "train")) == train
    assert raw_bounds(config, "train").max_identical_share == 0.05
    assert clean_bounds(config, "train").max_identical_share == 0.0
    assert "identical_sides" not in rule_names(clean_bounds(config, "test"))
    assert "length_ratio" not in rule_names(clean_bounds(config, "train"))


# ----------------------------------------------------------------------------- frames


def test_same_language_frame_has_compression_and_echo_flags_but_no_foreign_words() -> None:
    frame = build_pair_frame(
        ["The dog runs on the beach.", "Hello there", "", "Hi"],
        ["A dog runs.", " hello\u200b  THERE ", "", "Hello, how are you today?"],
        ("en", "en"),
    )
    assert not any(column.endswith("_foreign_words") for column in frame.columns)
    assert frame["compression"].tolist() == [0.5, 1.0, 0.0, 5.0]
    assert frame["identical_sides"].tolist() == [False, True, False, False]


def test_identical_sides_compares_normalised_text_ignoring_case() -> None:
    assert identical_sides("You are cheating", "you  are cheating\u200b")
    assert not identical_sides("You are cheating.", "You are cheating!")
    assert not identical_sides("", " ")


def test_language_sample_is_all_rows_or_a_fixed_sample() -> None:
    assert language_sample(3) == [0, 1, 2]
    sample = language_sample(2_000)
    assert len(set(sample)) == LANGUAGE_SAMPLE_ROWS and sample == sorted(sample)
    assert language_sample(2_000) == sample and max(sample) < 2_000


def test_detected_languages_leave_blank_and_unsampled_rows_empty() -> None:
    frame = build_pair_frame(
        ["A dog runs on the beach.", "  ", "A woman is reading a book."],
        ["Ein Hund läuft am Strand.", "Ein Kind springt ins Wasser.", "Eine Frau liest."],
        ("en", "en"),
    )
    detected = with_detected_languages(frame)
    assert detected["source_detected_language"].tolist() == ["en", None, "en"]
    assert detected["target_detected_language"].tolist() == ["de", "de", "de"]
    rows = 2 * LANGUAGE_SAMPLE_ROWS
    big = with_detected_languages(
        build_pair_frame(["a dog"] * rows, ["a cat"] * rows, ("en", "en"))
    )
    assert int(big["source_detected_language"].notna().sum()) == LANGUAGE_SAMPLE_ROWS


# ----------------------------------------------------------------------------- validate_raw


def test_summarization_corpus_passes_and_records_its_task(project_dir: Path) -> None:
    task_project(project_dir, SUMMARIZATION, splits_of(summary_pairs))
    summary = run_stage(project_dir)
    assert summary["task"] == "summarization"
    assert failed_rules(summary) == {split: [] for split in SPLITS}
    train = summary["splits"]["train"]
    assert train["files"] == ["data/raw/train.en.src", "data/raw/train.en.tgt"]
    assert {name: train["rules"][name]["unexpected_rows"] for name in LANGUAGE_RULES} == {
        name: 0 for name in LANGUAGE_RULES
    }
    assert train["bounds"]["min_language_share"] == 0.9
    assert read_summary(project_dir) == summary


def _short_source(pairs: list[tuple[str, str]]) -> None:
    pairs[4] = ("Parses text files.", "Text parser.")  # 3 tokens < 8, compression 0.67


def _long_target(pairs: list[tuple[str, str]]) -> None:
    source = pairs[6][0]
    pairs[6] = (source, source + " It was a good day.")  # compression > 1


def _echo(pairs: list[tuple[str, str]]) -> None:
    for line in (3, 8, 13, 18):  # 4 of 60 > validate.max_duplicate_share (5%)
        prompt = pairs[line - 1][0]
        pairs[line - 1] = (prompt, f"  {prompt.upper()} ")


# case -> (overrides, pairs, breakage, the exact rules that fail on train, lines flagged)
BROKEN_ROWS: dict[str, tuple[dict[str, Any], Any, Any, list[str], list[int]]] = {
    "short_source": (SUMMARIZATION, summary_pairs, _short_source, ["min_source_tokens"], [5]),
    "long_target": (SUMMARIZATION, summary_pairs, _long_target, ["max_compression"], [7]),
    "echoed_prompts": (DIALOGUE, dialogue_pairs, _echo, ["identical_sides"], [3, 8, 13, 18]),
}


@pytest.mark.parametrize("case", sorted(BROKEN_ROWS))
def test_a_broken_row_fails_exactly_its_task_rule(project_dir: Path, case: str) -> None:
    overrides, make, breakage, rules, lines = BROKEN_ROWS[case]
    splits = splits_of(make)
    breakage(splits["train"])
    task_project(project_dir, overrides, splits)
    with pytest.raises(ValidationFailed) as failure:
        run_stage(project_dir)
    summary = read_summary(project_dir)
    assert failed_rules(summary) == {"train": rules, "val": [], "test": []}
    examples = summary["splits"]["train"]["rules"][rules[0]]["examples"]
    assert [row["line"] for row in examples] == lines
    where = "train (data/raw/train.en.src / data/raw/train.en.tgt)"
    assert f"{where}: rule {rules[0]} ({len(lines)} of 60 rows break" in str(failure.value)


def test_one_echo_in_sixty_is_rare_enough(project_dir: Path) -> None:
    splits = splits_of(dialogue_pairs)
    splits["train"][0] = (splits["train"][0][0], splits["train"][0][0])
    task_project(project_dir, DIALOGUE, splits)
    summary = run_stage(project_dir)
    assert summary["splits"]["train"]["rules"]["identical_sides"]["unexpected_rows"] == 1
    assert summary["task"] == "dialogue"


def test_a_reply_side_in_another_language_fails_its_sampled_share(project_dir: Path) -> None:
    prompts = [prompt for prompt, _ in dialogue_pairs(600)]
    splits = {
        "train": list(zip(prompts, [de for _, de in tiny_pairs(600)], strict=True)),
        "val": dialogue_pairs(10, offset=1000),
        "test": dialogue_pairs(10, offset=2000),
    }
    task_project(project_dir, DIALOGUE, splits)
    with pytest.raises(ValidationFailed) as failure:
        run_stage(project_dir)
    train = read_summary(project_dir)["splits"]["train"]
    assert train["failed_rules"] == ["target_detected_language"]
    rule = train["rules"]["target_detected_language"]
    assert (rule["unexpected_rows"], rule["checked_rows"]) == (500, 500)
    assert "checked_rows" not in train["rules"]["duplicate_pairs"]
    message = str(failure.value)
    assert (
        "rule target_detected_language (500 of 500 sampled rows break expect_column_values_to_"
        "be_in_set(column=target_detected_language, mostly=0.9, value_set=['en']))"
    ) in message
    assert "    fix: this side is not mostly in its declared language" in message


def run_mt(command: str, caplog: pytest.LogCaptureFixture) -> tuple[int, str]:
    """`mt COMMAND` as a user runs it: the exit code and the error it logged."""
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="pipeline.cli"):
        code = cli.main([command])
    return code, "\n".join(r.getMessage() for r in caplog.records if r.name == "pipeline.cli")


def test_summaries_longer_than_their_texts_are_refused_naming_rule_split_and_file(
    project_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad input: a TSV whose columns are swapped (synopsis<TAB>description)."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for split, pairs in splits_of(summary_pairs).items():
        text = "".join(f"{target}\t{source}\n" for source, target in pairs)
        (folder / f"{split}.tsv").write_text(text, encoding="utf-8")
    data = {**SAME_LANGUAGE, "source": "tsv", "path": str(folder)}
    write_params(project_dir, {**SUMMARIZATION, "data": data})
    assert run_mt("fetch", caplog) == (0, "")
    code, error = run_mt("validate", caplog)
    assert code == ValidationFailed.exit_code
    assert error.startswith("validate failed: suite raw_pairs failed")
    assert (
        "train (data/raw/train.en.src / data/raw/train.en.tgt): rule max_compression "
        "(60 of 60 rows break expect_column_values_to_be_between(column=compression, "
        "max_value=1.0, mostly=0.995))"
    ) in error
    assert (
        "    fix: targets this long are no summaries of their sources; are the columns " in error
    )
    summary = read_summary(project_dir)
    expected = ["max_compression", "min_source_tokens"]
    assert (summary["success"], failed_rules(summary)) == (
        False,
        {split: expected for split in SPLITS},
    )
    # The report is whole (one directory swap), nothing staged is left, nothing downstream.
    assert sorted(p.name for p in (project_dir / "reports").iterdir()) == ["validation"]
    assert not (project_dir / "data" / "clean").exists()


# ----------------------------------------------------------------------------- clean


CLEAN = CleanConfig(
    max_tokens=30, max_length_ratio=2.0, min_tokens=1, min_source_tokens=5, max_compression=0.5
)
TEXT = "one two three four five six seven eight nine ten"  # 10 tokens


def clean_train(task: Any, train: list[tuple[str, str]]) -> Any:
    return clean_corpus({"train": train, "val": [], "test": []}, "train", "val", CLEAN, task)


def test_each_task_applies_its_rules_in_order() -> None:
    shared_train = ["duplicate", "leaked_pair", "leaked_source"]
    summarization = ["too_short", "too_long", "source_too_short", "compression"]
    assert rules_for("train", "summarization") == summarization + shared_train
    assert rules_for("val", "summarization") == summarization
    dialogue = ["too_short", "too_long", "identical_sides", *shared_train]
    assert rules_for("train", "dialogue") == dialogue
    assert rules_for("test", "dialogue") == []
    every_task = {
        *task_rules("translation"),
        *task_rules("summarization"),
        *task_rules("dialogue"),
    }
    assert every_task == set(RULES)


def test_source_too_short_drops_a_short_source_and_keeps_one_at_the_limit() -> None:
    short = ("one two three four", "one")  # 4 tokens < 5
    at_limit = ("one two three four five", "one two")  # 5 tokens, compression 0.4
    outcome = clean_train("summarization", [short, at_limit])["train"]
    assert outcome.dropped["source_too_short"] == [(1, short)]
    assert outcome.pairs == [at_limit]


def test_compression_drops_a_long_summary_and_keeps_one_at_the_limit() -> None:
    too_long = (TEXT, "one two three four five six")  # 0.6 > 0.5
    at_limit = (TEXT, "one two three four five")  # 0.5
    outcome = clean_train("summarization", [too_long, at_limit])["train"]
    assert outcome.dropped["compression"] == [(1, too_long)]
    assert outcome.pairs == [at_limit]


def test_identical_sides_drops_an_echo_and_keeps_a_reply() -> None:
    echo = ("You are cheating", "you are  CHEATING")
    reply = ("You are cheating", "I am not cheating.")
    outcome = clean_train("dialogue", [echo, reply])["train"]
    assert outcome.dropped["identical_sides"] == [(1, ("You are cheating", "you are CHEATING"))]
    assert outcome.pairs == [reply]


@pytest.mark.parametrize("task", ["summarization", "dialogue"])
def test_no_length_ratio_rule_outside_translation(task: Any) -> None:
    lopsided = (TEXT, "one two")  # ratio 5 > clean.max_length_ratio 2
    outcome = clean_train(task, [lopsided])["train"]
    assert outcome.pairs == [lopsided]
    assert "length_ratio" not in outcome.dropped


def test_cleaning_report_names_the_task_its_rules_and_their_params() -> None:
    train = [(TEXT, "one two"), ("one two", "one"), (TEXT, TEXT)]
    report = cleaning_report(clean_train("summarization", train), CLEAN, "summarization")
    assert report["task"] == "summarization"
    assert report["params"] == {
        "max_tokens": 30,
        "min_tokens": 1,
        "min_source_tokens": 5,
        "max_compression": 0.5,
    }
    assert list(report["rules"]) == rules_for("train", "summarization")
    dropped = {name: entry["rows"] for name, entry in report["splits"]["train"]["dropped"].items()}
    assert (dropped["source_too_short"], dropped["compression"]) == (1, 1)
    dialogue = cleaning_report(clean_train("dialogue", train), CLEAN, "dialogue")
    assert (dialogue["task"], dialogue["params"]) == (
        "dialogue",
        {"max_tokens": 30, "min_tokens": 1},
    )
    assert dialogue["splits"]["train"]["dropped"]["identical_sides"]["rows"] == 1


@pytest.mark.parametrize(
    ("overrides", "make", "bad", "rule"),
    [
        (
            SUMMARIZATION,
            summary_pairs,
            (TEXT.rsplit(" ", 1)[0], "one two three"),
            "min_source_tokens",
        ),
        (SUMMARIZATION, summary_pairs, (TEXT, "one two three four five six"), "max_compression"),
        (DIALOGUE, dialogue_pairs, ("Hello there!", "hello  there!"), "identical_sides"),
    ],
)
def test_the_strict_suite_agrees_with_cleaning(
    project_dir: Path, overrides: dict[str, Any], make: Any, bad: tuple[str, str], rule: str
) -> None:
    """A pair clean drops fails the strict suite when left in; once cleaned, the suite passes."""
    write_params(project_dir, overrides)
    config = load_config()
    raw = splits_of(make)
    raw["train"].append(bad)
    with pytest.raises(ValidationFailed, match=f"train \\(cleaned train pairs\\): rule {rule} "):
        validate_clean_pairs(raw, config)
    data = config.data
    outcomes = clean_corpus(raw, data.train_split, data.val_split, config.clean, config.task)
    assert sum(len(rows) for rows in outcomes["train"].dropped.values()) == 1
    summary = validate_clean_pairs({split: o.pairs for split, o in outcomes.items()}, config)
    assert summary["success"] is True
    assert summary["task"] == config.task
