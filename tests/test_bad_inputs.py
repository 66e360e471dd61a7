"""The bad-input catalogue: broken corpora run end to end as a user runs them.

Each case points `data.source: dir` at a broken copy of the tiny corpus and runs `mt fetch`,
then `mt validate`, through the real CLI. Whichever stage refuses must exit non-zero with a
message that names the file (and the line where there is one) and the rule it broke, and leave
nothing downstream: never data/clean, no data/raw when fetch refuses, and a report that says
success=false when validate refuses. One well-formed but quirky corpus must pass both, so the
catalogue cannot pass by refusing everything.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.errors import DataError, ValidationFailed
from tests.conftest import (
    TINY_OVERRIDES,
    tiny_pairs,
    write_corpus,
    write_params,
    write_tiny_corpus,
)

# Breaks a copy of the good corpus in place; the fixture turns it into a project root.
Breakage = Callable[[Path], None]
MakeProject = Callable[[Breakage], Path]


def good_corpus(folder: Path) -> Path:
    return write_tiny_corpus(folder)


def set_line(path: Path, line: int, text: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = text
    path.write_bytes(b"\n".join(lines))


# ----------------------------------------------------------------------------- the breakages


def drop_last_line(folder: Path) -> None:
    path = folder / "val.de"
    path.write_bytes(path.read_bytes().removesuffix(b"\n").rsplit(b"\n", 1)[0] + b"\n")


def truncated_gzip(folder: Path) -> None:
    packed = gzip.compress((folder / "train.en").read_bytes(), mtime=0)
    (folder / "train.en").unlink()
    (folder / "train.en.gz").write_bytes(packed[: len(packed) // 2])


def latin1_line(folder: Path) -> None:
    set_line(folder / "train.de", 3, "Eine Frau liest ein Buch, schön.".encode("latin-1"))


def binary_file(folder: Path) -> None:
    # An image saved under the corpus name: a PNG header, NUL bytes and newlines in it.
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
    (folder / "test_2016_flickr.de").write_bytes(png)


def empty_target_lines(folder: Path) -> None:
    for line in (5, 6):
        set_line(folder / "train.de", line, b"")


def huge_line(folder: Path) -> None:
    set_line(folder / "val.en", 4, b" ".join([b"word"] * 20_000))  # 100 kB


def all_duplicates(folder: Path) -> None:
    write_corpus(folder, {"train": [tiny_pairs(1)[0]] * 60})


def missing_split(folder: Path) -> None:
    (folder / "val.en").unlink()
    (folder / "val.de").unlink()


def swapped_languages(folder: Path) -> None:
    write_corpus(folder, {"train": [(de, en) for en, de in tiny_pairs(60)]})


def empty_file(folder: Path) -> None:
    (folder / "test_2016_flickr.en").write_bytes(b"")


def escape_sequences(folder: Path) -> None:
    set_line(folder / "train.en", 8, b"\x1b[31mA cat sleeps on the sofa number 0.\x1b[0m")


def lone_carriage_return(folder: Path) -> None:
    set_line(folder / "val.de", 2, "Zwei Männer\rspielen Fußball Nummer 10.".encode())


def too_few_rows(folder: Path) -> None:
    write_corpus(folder, {"train": tiny_pairs(12)})


def train_pairs_as_test_split(folder: Path) -> None:
    write_corpus(folder, {"test_2016_flickr": tiny_pairs(60)[20:30]})


def symlink_to_dev_zero(folder: Path) -> None:
    (folder / "train.en").unlink()
    (folder / "train.en").symlink_to("/dev/zero")


def named_pipe(folder: Path) -> None:
    (folder / "val.de").unlink()
    os.mkfifo(folder / "val.de")  # no writer: opening it to read would wait forever


def directory_under_a_corpus_name(folder: Path) -> None:
    (folder / "val.en").unlink()
    (folder / "val.en").mkdir()


def gzip_bomb(folder: Path) -> None:
    """1 GB of NUL bytes in 1 MB: gzip members of 10 MB each, 100 times."""
    member = gzip.compress(bytes(10_000_000), compresslevel=9, mtime=0)
    (folder / "train.de").unlink()
    (folder / "train.de.gz").write_bytes(member * 100)


@dataclass(frozen=True)
class BrokenCorpus:
    breakage: Breakage
    refused_by: str  # "fetch" or "validate"
    # Fragments of the error message: the file (with its line) and the rule.
    message: tuple[str, ...]


CATALOGUE: dict[str, BrokenCorpus] = {
    "different_line_counts": BrokenCorpus(
        drop_last_line, "fetch", ("val.en has 10 lines but", "val.de has 9", "one sentence pair")
    ),
    "truncated_gzip": BrokenCorpus(
        truncated_gzip, "fetch", ("train.en.gz: not a complete gzip file", "truncated")
    ),
    "invalid_utf8": BrokenCorpus(
        latin1_line, "fetch", ("train.de: line 3: invalid UTF-8 at byte offset",)
    ),
    "binary_file": BrokenCorpus(
        binary_file, "fetch", ("test_2016_flickr.de: line 3: NUL byte", "binary file")
    ),
    "empty_lines_on_one_side": BrokenCorpus(
        empty_target_lines,
        "validate",
        ("data/raw/train.de): rule target_min_tokens (2 of 60 rows", "    line 5: ", "line 6: "),
    ),
    "line_of_100_kB": BrokenCorpus(
        huge_line,
        "validate",
        ("data/raw/val.en / data/raw/val.de): rule source_max_tokens (1 of 10", "    line 4: "),
    ),
    "file_of_duplicates": BrokenCorpus(
        all_duplicates,
        "validate",
        ("data/raw/train.de): rule duplicate_pairs (59 of 60 rows", "    line 2: "),
    ),
    "missing_split": BrokenCorpus(
        missing_split, "fetch", ("val.en: missing", "split 'val' needs a 'en' side")
    ),
    "languages_swapped": BrokenCorpus(
        swapped_languages,
        "validate",
        ("data/raw/train.en / data/raw/train.de): rule source_language (54 of 60", "line 1: "),
    ),
    "empty_file": BrokenCorpus(
        empty_file, "fetch", ("test_2016_flickr.en: the file is empty (0 bytes)",)
    ),
    "terminal_escape_codes": BrokenCorpus(
        escape_sequences,
        "validate",
        ("data/raw/train.de): rule source_no_control_chars (1 of 60", "    line 8: "),
    ),
    "lone_carriage_return": BrokenCorpus(
        lone_carriage_return,
        "validate",
        ("data/raw/val.de): rule target_no_control_chars (1 of 10", "    line 2: "),
    ),
    "too_few_rows": BrokenCorpus(
        too_few_rows,
        "validate",
        ("data/raw/train.de): rule min_rows (observed 12", "min_value=20"),
    ),
    "test_split_copied_from_train": BrokenCorpus(
        train_pairs_as_test_split,
        "validate",
        (
            "data/raw/test_2016_flickr.de): rule train_overlap (10 of 10 rows",
            "fix: these val/test sources also occur in train",
            "    line 1: 'A dog runs on the beach number 2.'",
        ),
    ),
    "symlink_to_dev_zero": BrokenCorpus(
        symlink_to_dev_zero,
        "fetch",
        ("train.en (a symlink to /dev/zero): a character device, not a regular file",),
    ),
    "named_pipe": BrokenCorpus(
        named_pipe, "fetch", ("val.de: a FIFO (named pipe), not a regular file",)
    ),
    "directory_under_a_corpus_name": BrokenCorpus(
        directory_under_a_corpus_name, "fetch", ("val.en: a directory, not a regular file",)
    ),
    "gzip_bomb": BrokenCorpus(
        gzip_bomb,
        "fetch",
        ("train.de.gz: larger than data.max_file_mb (2 MB) once decompressed", "gzip bomb"),
    ),
}

EXIT_CODES = {"fetch": DataError.exit_code, "validate": ValidationFailed.exit_code}


@pytest.fixture
def broken_project(project_dir: Path, tmp_path: Path) -> MakeProject:
    """Break a copy of the tiny corpus and point the project's params at it."""

    def make(breakage: Breakage) -> Path:
        folder = good_corpus(tmp_path / "broken")
        breakage(folder)
        # A 2 MB cap: the tiny corpus is ~2 kB, and the gzip bomb stops after 2 MB of memory.
        data = {"source": "dir", "path": str(folder), "max_file_mb": 2}
        write_params(project_dir, {**TINY_OVERRIDES, "data": data})
        return project_dir

    return make


def run_mt(command: str, caplog: pytest.LogCaptureFixture) -> tuple[int, str]:
    """`mt COMMAND` as a user runs it: the exit code and the error line it logged."""
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="pipeline.cli"):
        code = cli.main([command])
    errors = [r.getMessage() for r in caplog.records if r.name == "pipeline.cli"]
    return code, "\n".join(errors)


@pytest.mark.parametrize("case", sorted(CATALOGUE))
def test_broken_corpus_is_refused_with_file_line_and_rule(
    case: str,
    broken_project: MakeProject,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = CATALOGUE[case]
    root = broken_project(broken.breakage)
    fetch_code, fetch_error = run_mt("fetch", caplog)
    validate_code, validate_error = run_mt("validate", caplog)
    if broken.refused_by == "fetch":
        assert (fetch_code, fetch_error.startswith("fetch failed: ")) == (
            EXIT_CODES["fetch"],
            True,
        )
        assert not (root / "data" / "raw").exists()
        # Run by hand anyway, validate refuses too: it finds no raw files.
        assert validate_code == DataError.exit_code
        assert "data/raw/train.en: missing" in validate_error
        assert not (root / "reports" / "validation").exists()
        error = fetch_error
    else:
        assert (fetch_code, fetch_error) == (0, "")
        assert validate_code == EXIT_CODES["validate"]
        summary = json.loads((root / "reports" / "validation" / "summary.json").read_text())
        assert summary["success"] is False
        error = validate_error
    for fragment in broken.message:
        assert fragment in error
    assert not (root / "data" / "clean").exists()


def quirky_but_valid(folder: Path) -> None:
    """CRLF line ends, a gzip side, a tab inside a sentence, byte-order marks, zero-width and
    line-separator characters inside sentences: fetch repairs or accepts them."""
    train_en = folder / "train.en"
    train_en.write_bytes(b"\xef\xbb\xbf" + train_en.read_bytes().replace(b"\n", b"\r\n"))
    set_line(folder / "val.en", 5, "The man\u200b is riding\u2028a bike number 10.".encode())
    set_line(folder / "val.de", 5, "Der Mann\ufeff fährt\u2029Fahrrad Nummer 10.".encode())
    (folder / "val.de.gz").write_bytes(gzip.compress((folder / "val.de").read_bytes(), mtime=0))
    (folder / "val.de").unlink()
    set_line(folder / "test_2016_flickr.de", 3, b"Eine Frau\tliest ein Buch Nummer 20.")


def test_quirky_but_valid_corpus_passes_both_stages(
    broken_project: MakeProject, caplog: pytest.LogCaptureFixture
) -> None:
    root = broken_project(quirky_but_valid)
    assert run_mt("fetch", caplog) == (0, "")
    assert run_mt("validate", caplog) == (0, "")
    summary = json.loads((root / "reports" / "validation" / "summary.json").read_text())
    assert summary["success"] is True
    train_en = (root / "data" / "raw" / "train.en").read_bytes()
    assert train_en.count(b"\r") == 0
    assert train_en.startswith(b"A dog runs on the beach number 0.\n")  # no byte-order mark
    checksums = json.loads((root / "data" / "raw" / "checksums.json").read_text())
    assert checksums["lines"]["val.en"] == checksums["lines"]["val.de"] == 10
