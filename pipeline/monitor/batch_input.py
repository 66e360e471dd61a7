"""The input of a batch translation: which files, their lines, and the checks they must pass.

Every file of a batch is read and checked before anything is translated or written, so bad
input (not UTF-8, empty, a line over the serving limit) fails with one line naming the file,
the line number and the fix, and leaves no output behind. Lines follow the stages' one line
rule (pipeline/aligned_text.py): a line ends at "\\n" and nowhere else.

Only regular files are read (a FIFO, a device such as /dev/zero or a socket is refused by name),
and never more than monitor.max_batch_mb bytes for the whole batch: each file's size is checked
on its open descriptor before it is read, and the read itself stops one byte past what is left.
A DAG request's files are opened without following a symlink (batch_paths.py says why).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pipeline.aligned_text import decode_utf8, text_lines
from pipeline.data.capped_io import BYTES_PER_MB, file_kind
from pipeline.errors import DataError

UTF8_FIX = "convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8`"
# A folder input is every file with this suffix in it (not its subfolders).
INPUT_GLOB = "*.txt"


@dataclass(frozen=True)
class InputLimits:
    """What a batch's input may be: lines within the serving limit (register.max_input_chars),
    at most monitor.max_batch_mb in all, and for a DAG request no symlink."""

    max_line_chars: int
    max_batch_mb: float
    follow_symlinks: bool = True

    @property
    def max_bytes(self) -> int:
        return int(self.max_batch_mb * BYTES_PER_MB)


@dataclass(frozen=True)
class BatchFile:
    """One input file, checked, with the output path it translates into."""

    source: Path
    output: Path
    lines: tuple[str, ...]
    sha256: str

    @property
    def manifest(self) -> Path:
        return manifest_path(self.output)

    @property
    def batch_id(self) -> str:
        """The drift check's name for this input: its file stem and content hash, file-safe."""
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", self.source.stem).strip("_")[:48] or "batch"
        return f"{stem}-{self.sha256[:12]}"


def manifest_path(output: Path) -> Path:
    """The manifest beside an output file: `<output>.manifest.json`."""
    return output.with_name(output.name + ".manifest.json")


def plan_files(input_path: Path, output_path: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs: a file to a file, or each *.txt of a folder to the same name in
    the output folder."""
    if input_path.is_dir():
        sources = sorted(path for path in input_path.glob(INPUT_GLOB) if path.is_file())
        if not sources:
            raise DataError(
                f"--input {input_path}: a folder with no {INPUT_GLOB} files; put the texts "
                f"to translate in {INPUT_GLOB} files there"
            )
        _refuse_same_place(input_path, output_path, "folder")
        if output_path.is_file():
            raise DataError(
                f"--output {output_path}: a file, but --input is a folder; give a folder"
            )
        return [(source, output_path / source.name) for source in sources]
    if not input_path.is_file():
        raise DataError(f"--input {input_path}: not found; give a text file or a folder")
    _refuse_same_place(input_path, output_path, "file")
    if output_path.is_dir():
        raise DataError(f"--output {output_path}: a folder, but --input is a file; give a file")
    return [(input_path, output_path)]


def _refuse_same_place(input_path: Path, output_path: Path, kind: str) -> None:
    if input_path.resolve() == output_path.resolve():
        raise DataError(
            f"--output {output_path}: the same {kind} as --input; the translation would "
            f"overwrite the source text, give another {kind}"
        )


def read_batch(input_path: Path, output_path: Path, limits: InputLimits) -> list[BatchFile]:
    """Every file of the batch, all checked before the caller translates any of them."""
    files: list[BatchFile] = []
    budget = limits.max_bytes
    for source, output in plan_files(input_path, output_path):
        data = read_within(source, budget, limits.follow_symlinks)
        if data is None:
            raise over_budget(input_path, source, limits)
        budget -= len(data)
        files.append(checked_file(source, output, data, limits.max_line_chars))
    return files


def read_within(source: Path, budget: int, follow_symlinks: bool) -> bytes | None:
    """The bytes of regular file `source`, or None when it holds more than `budget` bytes:
    the size is checked before reading, and the read stops one byte past the budget (a file
    growing meanwhile)."""
    with open_regular(source, follow_symlinks) as handle:
        if os.fstat(handle.fileno()).st_size > budget:
            return None
        data = handle.read(budget + 1)
    return None if len(data) > budget else data


def open_regular(source: Path, follow_symlinks: bool) -> BinaryIO:
    """`source` opened for reading when it is a regular file; O_NONBLOCK so that a FIFO
    without a writer is refused instead of hanging the open."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        descriptor = os.open(source, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise DataError(
                f"{source}: a symlink; a request's input must be the file itself, inside "
                "monitor.input_root"
            ) from None
        raise DataError(f"{source}: cannot be read ({error.strerror})") from None
    handle = os.fdopen(descriptor, "rb")  # buffered: read(n) returns n bytes unless at EOF
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        handle.close()
        raise DataError(f"{source}: {file_kind(mode)}, not a regular file; give a text file")
    return handle


def over_budget(input_path: Path, source: Path, limits: InputLimits) -> DataError:
    cap = f"monitor.max_batch_mb = {limits.max_batch_mb:g} ({limits.max_bytes} bytes)"
    fix = "or raise monitor.max_batch_mb in params.yaml"
    if source == input_path:
        return DataError(f"{source}: larger than {cap}; split it into smaller files, {fix}")
    return DataError(
        f"{input_path}: its {INPUT_GLOB} files hold more than {cap} together (passed at "
        f"{source.name}); translate them in smaller batches, {fix}"
    )


def checked_file(source: Path, output: Path, data: bytes, max_line_chars: int) -> BatchFile:
    """The checked lines of one input file, or a DataError naming the line and the fix."""
    lines = text_lines(decode_utf8(data, str(source), UTF8_FIX))
    if not any(line.strip() for line in lines):
        raise DataError(
            f"{source}: empty (no text to translate); give a file with one sentence per line"
        )
    for number, line in enumerate(lines, 1):
        if len(line) > max_line_chars:
            raise DataError(
                f"{source}: line {number}: {len(line)} characters, over the serving limit "
                f"register.max_input_chars={max_line_chars}; split that line into sentences"
            )
    return BatchFile(source, output, tuple(lines), hashlib.sha256(data).hexdigest())


def output_text(lines: list[str]) -> str:
    """An output file: one translation per line, each ended by "\\n" (line i is input line i).

    A translation holding "\\n" would shift every later line, so it is refused."""
    for number, line in enumerate(lines, 1):
        if "\n" in line:
            raise DataError(
                f"translation of line {number} contains a line break; the model's output "
                "cannot be written one line per input line"
            )
    return "".join(line + "\n" for line in lines)
