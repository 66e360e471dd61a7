"""Sentence-aligned text files: the one definition of a line for every stage and the registry.

Line i of a corpus side, a test reference or a hypotheses file is sentence i, so every reader
must cut lines the same way:

- a line ends at "\\n" and nowhere else. `str.splitlines` also breaks at "\\r", U+0085,
  U+2028, U+2029 and more, so one such character inside a sentence would shift every later
  line out of alignment with the other side (and make the registry's gate miscount);
- a final "\\n" ends the last line, it does not start an empty one; a missing final "\\n" is
  tolerated; an empty file has no lines;
- the bytes are strict UTF-8: a bad byte is an error naming the file, the line and the column,
  never a U+FFFD that silently changes a sentence;
- the two sides of a split (`{split}.{lang}`, raw or clean) have as many lines as each other.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import DataError
from pipeline.paths import raw_file

LINE_END = "\n"


def text_lines(text: str) -> list[str]:
    """The lines of decoded aligned text."""
    if not text:
        return []
    return text.removesuffix(LINE_END).split(LINE_END)


def byte_lines(data: bytes) -> list[bytes]:
    """The lines of undecoded aligned text (for a reader that must report bad bytes per line).

    The same cut as `text_lines`: in UTF-8 the byte 0x0A only ever encodes "\\n".
    """
    if not data:
        return []
    return data.removesuffix(b"\n").split(b"\n")


def line_and_column(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line number and 1-based byte column of byte `offset` in `data`."""
    line = data.count(b"\n", 0, offset) + 1
    line_start = data.rfind(b"\n", 0, offset) + 1
    return line, offset - line_start + 1


def decode_utf8(data: bytes, origin: str, fix: str) -> str:
    """`data` as text; a DataError naming `origin`, the line and the column of a bad byte.

    `fix` is the action that repairs the file, e.g. "re-run `mt fetch`".
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line, column = line_and_column(data, error.start)
        raise DataError(
            f"{origin}: line {line}: invalid UTF-8 at byte offset {error.start} "
            f"(column {column}): {error.reason}. Fix: {fix}."
        ) from None


def read_aligned_lines(path: Path, fix: str) -> list[str]:
    """The lines of an aligned text file; DataError when it is missing or not UTF-8.

    `fix` is the action that (re)creates the file, e.g. "run `mt clean`".
    """
    if not path.is_file():
        raise DataError(f"{path}: not found; {fix}")
    return text_lines(decode_utf8(path.read_bytes(), str(path), fix))


def read_pairs(
    directory: Path, split: str, langs: tuple[str, str], producer: str = "mt fetch"
) -> list[tuple[str, str]]:
    """The aligned pairs of one split (`{split}.{lang}` files in `directory`, raw or clean)."""
    source_path = raw_file(directory, split, langs[0])
    target_path = raw_file(directory, split, langs[1])
    fix = f"run `{producer}`"
    sources = read_aligned_lines(source_path, fix)
    targets = read_aligned_lines(target_path, fix)
    if len(sources) != len(targets):
        raise DataError(
            f"{target_path}: {len(targets)} lines, but {source_path} has {len(sources)}; "
            f"sentence-aligned files need one line per pair on both sides - re-run `{producer}`"
        )
    return list(zip(sources, targets, strict=True))


def join_lines(lines: Iterable[str]) -> str:
    """The text of an aligned file: each line ended by "\\n".

    A line holding "\\n" would become two and misalign every later line, so it is refused.
    """
    chunks = []
    for number, line in enumerate(lines, 1):
        if LINE_END in line:
            raise ValueError(f"line {number} contains a newline: {line[:80]!r}")
        chunks.append(line + LINE_END)
    return "".join(chunks)
