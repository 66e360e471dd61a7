"""The input of a batch translation: which files, their lines, and the checks they must pass.

Every file of a batch is read and checked before anything is translated or written, so bad
input (not UTF-8, empty, a line over the serving limit) fails with one line naming the file,
the line number and the fix, and leaves no output behind. Lines follow the stages' one line
rule (pipeline/aligned_text.py): a line ends at "\\n" and nowhere else.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.aligned_text import decode_utf8, text_lines
from pipeline.errors import DataError

UTF8_FIX = "convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8`"
# A folder input is every file with this suffix in it (not its subfolders).
INPUT_GLOB = "*.txt"


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


def read_batch_file(source: Path, output: Path, max_input_chars: int) -> BatchFile:
    """The checked lines of one input file, or a DataError naming the line and the fix."""
    data = source.read_bytes()
    lines = text_lines(decode_utf8(data, str(source), UTF8_FIX))
    if not any(line.strip() for line in lines):
        raise DataError(
            f"{source}: empty (no text to translate); give a file with one sentence per line"
        )
    for number, line in enumerate(lines, 1):
        if len(line) > max_input_chars:
            raise DataError(
                f"{source}: line {number}: {len(line)} characters, over the serving limit "
                f"register.max_input_chars={max_input_chars}; split that line into sentences"
            )
    return BatchFile(source, output, tuple(lines), hashlib.sha256(data).hexdigest())


def read_batch(input_path: Path, output_path: Path, max_input_chars: int) -> list[BatchFile]:
    """Every file of the batch, all checked before the caller translates any of them."""
    pairs = plan_files(input_path, output_path)
    return [read_batch_file(source, output, max_input_chars) for source, output in pairs]


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
