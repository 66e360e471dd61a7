"""pipeline/aligned_text.py: one definition of a line, and every reader of aligned files using it.

The readers (aligned_text's `read_pairs`, validate's `decode_lines`, evaluate's `read_split`,
the registry's gate evidence) must agree on the line count of the same file, whatever Unicode
line-break characters its sentences hold; the registry used `str.splitlines` and did not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.aligned_text import (
    byte_lines,
    decode_utf8,
    join_lines,
    read_aligned_lines,
    read_pairs,
    text_lines,
)
from pipeline.config import load_config
from pipeline.data.pair_frames import decode_lines
from pipeline.errors import DataError
from pipeline.evaluate import read_split
from pipeline.paths import project_paths
from pipeline.registry.commands import gate_evidence
from tests.conftest import TINY_OVERRIDES, tiny_pairs, write_params

# Every character `str.splitlines` breaks at, other than "\n": a sentence may hold any of them.
SPLITLINES_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
TRICKY_LINES = [f"Satz{char}mit Umbruch {i}" for i, char in enumerate(SPLITLINES_BREAKS)]
# As BLEU references (evaluate and registry alike): line/paragraph separators become a space.
TRICKY_REFERENCES = [*TRICKY_LINES[:7], "Satz mit Umbruch 7", "Satz mit Umbruch 8"]


def test_text_lines_split_on_newline_only() -> None:
    text = "".join(line + "\n" for line in TRICKY_LINES)
    assert len(text.splitlines()) > len(TRICKY_LINES)  # what the registry used to count
    assert text_lines(text) == TRICKY_LINES


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("", []),
        ("\n", [""]),
        ("a", ["a"]),
        ("a\nb", ["a", "b"]),
        ("a\nb\n", ["a", "b"]),
        ("a\n\n", ["a", ""]),
        ("\na\n", ["", "a"]),
    ],
)
def test_a_final_newline_ends_the_last_line(text: str, lines: list[str]) -> None:
    assert text_lines(text) == lines
    assert byte_lines(text.encode()) == [line.encode() for line in lines]


def test_byte_lines_cut_where_text_lines_cut() -> None:
    text = "Ein Hund\u2028läuft.\n\nÜber\x85alles\n"
    assert [line.decode() for line in byte_lines(text.encode())] == text_lines(text)


def test_invalid_utf8_names_file_line_column_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "train.de"
    path.write_bytes(b"gut\nauch gut\nkaputt \xff\n")
    with pytest.raises(DataError) as caught:
        read_aligned_lines(path, "run `mt fetch`")
    assert str(caught.value) == (
        f"{path}: line 3: invalid UTF-8 at byte offset 20 (column 8): invalid start byte. "
        "Fix: run `mt fetch`."
    )


def test_decode_utf8_refuses_rather_than_replaces() -> None:
    with pytest.raises(DataError, match=r"^hyp\.txt: line 1: invalid UTF-8 .*: unexpected end"):
        decode_utf8("Straße".encode()[:-2], "hyp.txt", "re-run `mt evaluate`")


def test_a_missing_file_is_named_with_the_command_that_makes_it(tmp_path: Path) -> None:
    path = tmp_path / "test.en"
    with pytest.raises(DataError) as caught:
        read_aligned_lines(path, "run `mt clean`")
    assert str(caught.value) == f"{path}: not found; run `mt clean`"


def test_join_lines_round_trips_and_refuses_an_embedded_newline() -> None:
    assert text_lines(join_lines(TRICKY_LINES)) == TRICKY_LINES
    assert join_lines([]) == ""
    with pytest.raises(ValueError, match=r"line 2 contains a newline: 'b\\nc'"):
        join_lines(["a", "b\nc"])


# ----------------------------------------------------------------------------- every reader


@pytest.fixture
def tricky_project(project_dir: Path) -> Path:
    """raw, clean and hypotheses files of one test split whose sentences hold line breaks."""
    write_params(project_dir, TINY_OVERRIDES)
    targets = join_lines(TRICKY_LINES)
    sources = join_lines(s for s, _ in tiny_pairs(len(TRICKY_LINES)))
    for folder in ("raw", "clean"):
        (project_dir / "data" / folder).mkdir(parents=True)
        (project_dir / "data" / folder / "test_2016_flickr.en").write_text(sources, "utf-8")
        (project_dir / "data" / folder / "test_2016_flickr.de").write_text(targets, "utf-8")
    hypotheses = project_dir / "reports" / "eval" / "hypotheses"
    hypotheses.mkdir(parents=True)
    (hypotheses / "test_2016_flickr.txt").write_text(targets, "utf-8")
    return project_dir


def test_every_reader_counts_the_same_lines(tricky_project: Path) -> None:
    raw = tricky_project / "data" / "raw"
    pairs = read_pairs(raw, "test_2016_flickr", ("en", "de"))
    validate_lines, _ = decode_lines((raw / "test_2016_flickr.de").read_bytes())
    split = read_split(project_paths(), load_config(), "test_2016_flickr")
    assert [target for _, target in pairs] == TRICKY_LINES
    assert validate_lines == TRICKY_LINES
    assert split.references == TRICKY_REFERENCES


def test_registry_gate_reads_references_and_hypotheses_line_for_line(
    tricky_project: Path,
) -> None:
    metrics = {"test_2016_flickr": {"bleu": 100.0, "signatures": {"bleu": "nrefs:1|bs:50"}}}
    (tricky_project / "metrics.json").write_text(json.dumps(metrics), "utf-8")
    evidence, references = gate_evidence(project_paths(), load_config(), metrics)
    assert list(references) == TRICKY_REFERENCES
    assert list(evidence.hypotheses) == TRICKY_REFERENCES
    split = read_split(project_paths(), load_config(), "test_2016_flickr")
    assert list(references) == split.references  # the gate scores what evaluate scored


def test_bleu_references_lose_invisible_chars_in_evaluate_and_registry(
    tricky_project: Path,
) -> None:
    reference = "Ein\u200b Hund\u200c läuft\u2060 am\ufeff Strand\u200d."
    for path in (
        tricky_project / "data" / "raw" / "test_2016_flickr.de",
        tricky_project / "reports" / "eval" / "hypotheses" / "test_2016_flickr.txt",
    ):
        path.write_text(join_lines([reference, *TRICKY_LINES[1:]]), "utf-8")
    metrics = {"test_2016_flickr": {"bleu": 100.0, "signatures": {"bleu": "nrefs:1|bs:50"}}}
    split = read_split(project_paths(), load_config(), "test_2016_flickr")
    evidence, references = gate_evidence(project_paths(), load_config(), metrics)
    assert split.references[0] == references[0] == evidence.hypotheses[0]
    assert references[0] == "Ein Hund läuft am Strand."
