"""The dialogue corpus of chatterbot-corpus conversations (pipeline/data/dialogue_corpus.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import cli
from pipeline.data.dialogue_corpus import build, split_of, turn_pairs
from pipeline.errors import DataError


def read_pairs(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(first, second) for first, second in (line.split("\t") for line in lines)]


def test_consecutive_turns_with_text_on_both_sides_are_pairs() -> None:
    conversations = [
        ["Hi", "Hello", "How are you?"],
        ["  a\tb\n c ", "", "d"],
        "not a list",
        [7, 8],
    ]
    assert list(turn_pairs(conversations)) == [
        ("Hi", "Hello"),
        ("Hello", "How are you?"),
        ("7", "8"),
    ]


def test_the_split_follows_the_utterance_whatever_its_case_and_spacing() -> None:
    assert split_of("  how ARE you?") == split_of("How are   you?")
    assert [split_of(f"question {n}") for n in range(2000)].count("val") in range(160, 241)


def test_build_keeps_each_prompt_in_one_split_and_each_pair_once(tmp_path: Path) -> None:
    folder = tmp_path / "english"
    folder.mkdir()
    prompts = [f"prompt {n}" for n in range(60)]
    turns = "\n".join(f"- - {p}\n  - reply to {p}\n- - {p.upper()}\n  - other" for p in prompts)
    (folder / "a.yml").write_text(f"categories: [a]\nconversations:\n{turns}\n", encoding="utf-8")
    (folder / "b.yml").write_text("conversations:\n- - prompt 0\n  - reply to prompt 0\n")
    counts = build(tmp_path / "out", folder)
    assert sum(counts.values()) == 120  # b.yml's pair repeats one of a.yml's
    by_split = {split: read_pairs(tmp_path / "out" / f"{split}.tsv") for split in counts}
    for split, pairs in by_split.items():
        assert len(pairs) == counts[split]
        assert {split_of(utterance) for utterance, _ in pairs} == {split}


def test_a_folder_without_conversations_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"^{tmp_path}: no \\*.yml conversation files$"):
        build(tmp_path / "out", tmp_path)
    (tmp_path / "bad.yml").write_text("conversations: [unclosed\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"^{tmp_path / 'bad.yml'}: not readable YAML"):
        build(tmp_path / "out", tmp_path)
    (tmp_path / "bad.yml").write_text("categories: [a]\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"^{tmp_path / 'bad.yml'}: no `conversations:` list$"):
        build(tmp_path / "out", tmp_path)
    assert not (tmp_path / "out").exists()


def test_mt_dialogue_corpus_writes_the_packages_pairs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["dialogue-corpus", "--out", str(tmp_path / "chat")]) == 0
    out = tmp_path / "chat"
    assert capsys.readouterr().out == f"train 678, val 85, test 72 pairs in {out}\n"
    assert sorted(path.name for path in out.iterdir()) == ["test.tsv", "train.tsv", "val.tsv"]
    prompts = {
        split: {utterance.lower() for utterance, _ in read_pairs(out / f"{split}.tsv")}
        for split in ("train", "val", "test")
    }
    assert prompts["train"].isdisjoint(prompts["val"] | prompts["test"])
    assert prompts["val"].isdisjoint(prompts["test"])
    assert read_pairs(out / "val.tsv")[0] == (
        "Are you sapient?",
        "In all probability, I am not. I'm not that sophisticated.",
    )
