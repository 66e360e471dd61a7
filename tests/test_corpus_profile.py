"""The `profile` stage: the training corpus's profile that drift compares incoming text with."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.config import load_config
from pipeline.monitor.profile import profile_corpus
from pipeline.orchestration.tasks import STAGES
from pipeline.paths import project_paths
from pipeline.tokenize import SOURCE_MODEL, TARGET_MODEL, train_tokenizer_models
from tests.conftest import REPO_ROOT, tiny_pairs, write_corpus

LINES = ["A dog runs.", "Two men play soccer now.", "Ein Hund läuft am Strand 2."]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny joint SentencePiece model trained on the conftest en/de pairs (as `mt tokenize`)."""
    pairs = tiny_pairs(60)
    config = load_config(REPO_ROOT / "params.yaml").tokenize
    tiny = dataclasses.replace(config, vocab_size=120)
    models = train_tokenizer_models([s for s, _ in pairs], [t for _, t in pairs], tiny, 1234)
    directory = tmp_path_factory.mktemp("tokenizer")
    (directory / SOURCE_MODEL).write_bytes(models[0])
    (directory / TARGET_MODEL).write_bytes(models[1])
    return directory


def test_profile_has_exact_lengths_bins_and_character_classes(tokenizer_dir: Path) -> None:
    profile = profile_corpus(LINES, tokenizer_dir, "en")
    assert profile["length"] == {
        "unit": "whitespace tokens",
        "counts": {"3": 1, "5": 1, "6": 1},
        "min": 3,
        "max": 6,
        "mean": 14 / 3,
        "bin_edges": [3, 5],
        "bin_shares": [1 / 3, 1 / 3, 1 / 3],
    }
    # 62 characters: 46 ASCII letters, 1 other letter (ä), 1 digit, 11 spaces, 3 full stops.
    total = sum(len(line) for line in LINES)
    assert total == 62
    expected = {"ascii_letter": 46, "other_letter": 1, "digit": 1, "space": 11, "other": 3}
    assert profile["char_classes"] == {name: count / total for name, count in expected.items()}
    assert profile["src_lang"] == "en"
    assert profile["language_identifier"] == "py3langid 0.4.0"


def test_profile_language_share_and_unknown_rate(tokenizer_dir: Path) -> None:
    english = [source for source, _ in tiny_pairs(20)]
    profile = profile_corpus(english, tokenizer_dir, "en")
    assert profile["language_share"] == 1.0
    assert profile["unknown_rate"] == 0.0  # every character was in the tokenizer's corpus
    cyrillic = profile_corpus(["Собака бежит по пляжу."] * 4, tokenizer_dir, "en")
    assert cyrillic["language_share"] == 0.0
    # Per line: each of the 4 words is "▁" + one <unk> piece for its unseen letters, then ".".
    assert cyrillic["unknown_rate"] == 4 / 9


def test_mt_profile_writes_the_profile_of_clean_train_sources(
    project_dir: Path, tokenizer_dir: Path
) -> None:
    paths = project_paths()
    write_corpus(paths.clean_dir, {"train": [(line, "x") for line in LINES]})
    paths.tokenizer_dir.parent.mkdir(parents=True)
    paths.tokenizer_dir.symlink_to(tokenizer_dir)
    assert cli.main(["profile"]) == 0
    written = json.loads(paths.corpus_profile.read_text("utf-8"))
    assert written["source"] == {"file": "data/clean/train.en", "lines": 3}
    assert written["length"]["counts"] == {"3": 1, "5": 1, "6": 1}
    assert math.isclose(written["length"]["mean"], 14 / 3)
    first = paths.corpus_profile.read_bytes()
    assert cli.main(["profile"]) == 0
    assert paths.corpus_profile.read_bytes() == first  # deterministic: DVC sees no change


def test_mt_profile_without_a_tokenizer_fails_in_one_line_and_writes_nothing(
    project_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = project_paths()
    write_corpus(paths.clean_dir, {"train": [(line, "x") for line in LINES]})
    assert cli.main(["profile"]) == 2
    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == [
        f"profile failed: {paths.tokenizer_dir / SOURCE_MODEL}: tokenizer model not found; "
        "run `mt tokenize` first"
    ]
    assert not paths.corpus_profile.exists()


def test_profile_is_a_dvc_stage_after_tokenize_and_a_dag_task() -> None:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text("utf-8"))["stages"]
    assert list(stages)[list(stages).index("tokenize") + 1] == "profile"
    profile = stages["profile"]
    assert profile["cmd"] == "mt profile"
    assert {"data/clean", "models/tokenizer"} <= set(profile["deps"])
    assert profile["outs"] == [{"reports/monitoring/corpus_profile.json": {"cache": False}}]
    assert STAGES.index("profile") == STAGES.index("tokenize") + 1
