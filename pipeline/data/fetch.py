"""`mt fetch`: bring the raw parallel corpus into data/raw/, checked and untouched.

Three sources (params `data.source`):
- `multi30k`: `{data.url}/{split}.{lang}.gz`, verified against the sha256 sums pinned below.
  With env `MT_DATA_DIR` the same `.gz` files are read from that folder instead (offline); the
  sums still apply and checksums.json records the URL, not the folder, so the output is
  byte-identical to a download.
- `dir`: `data.path` holds `{split}.{lang}` or `{split}.{lang}.gz` files.
- `tsv`: `data.path` holds `{split}.tsv` (or `{split}.tsv.gz`) files, one `source<TAB>target`
  per line.

Every split named by `data.*_split(s)` must exist for both languages. The output is
`data/raw/{split}.{lang}` (decompressed UTF-8, "\\n" line ends, final newline, no leading
byte-order mark; nothing else is changed: data/raw is never cleaned) plus
`data/raw/checksums.json`. The whole directory is swapped in at once, so a failed fetch leaves
the previous data/raw (or none).

Hostile inputs (pipeline/data/capped_io.py): only regular files are read, a device, FIFO or
socket under a corpus name is refused by name, and no file, archive, download or decompressed
text may pass `data.max_file_mb`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.aligned_text import decode_utf8, line_and_column
from pipeline.atomic import atomic_directory, atomic_write_json
from pipeline.config import DataConfig, load_config
from pipeline.data.capped_io import SizeCap, gunzip_bytes, read_corpus_file, read_regular_file
from pipeline.data.download import MIRROR_ENV, download, mirror_from_env
from pipeline.errors import DataError
from pipeline.paths import project_paths, raw_file

log = logging.getLogger(__name__)

CHECKSUMS_FILE = "checksums.json"
UTF8_BOM = b"\xef\xbb\xbf"
REENCODE_FIX = "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
LOCAL_FILE_FIX = "point data.path at the folder of the real corpus files"

# sha256 of the public Multi30k task1 raw archives (github.com/multi30k/dataset,
# data/task1/raw), computed from an exact mirror of that download. Archives not listed here
# (test_2017_*, test_2018_flickr, cs) are fetched but recorded as "unpinned".
MULTI30K_SHA256: dict[str, str] = {
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
}

DEFAULT_BACKOFF_S = 1.0


@dataclass(frozen=True)
class CorpusSide:
    """One language of one split, validated and ready to write."""

    split: str
    lang: str
    origin: str  # the URL or file it came from, for error messages
    text: bytes  # UTF-8, "\n" line ends, final newline


@dataclass
class FetchedCorpus:
    sides: list[CorpusSide]
    source: dict[str, Any] = field(default_factory=dict)  # provenance for checksums.json


# ---------------------------------------------------------------------------------------------
# Pure core: bytes in, checked bytes out.


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def count_lines(text: bytes) -> int:
    return text.count(b"\n")


def normalise_text(data: bytes, origin: str) -> bytes:
    """Check that `data` is non-empty UTF-8 text; return it with "\\n" line ends.

    Only the encoding's framing changes: a leading UTF-8 byte-order mark is dropped (it is no
    part of the first sentence), "\\r\\n" becomes "\\n" and a final newline is added. The
    sentences are kept byte for byte.
    """
    text = data.removeprefix(UTF8_BOM)
    if not text:
        what = "0 bytes" if not data else "only a UTF-8 byte-order mark"
        raise DataError(
            f"{origin}: the file is empty ({what}); every split needs one sentence per line. "
            "Fix: point the source at the complete file."
        )
    # Checked on `data` as given, so offsets and columns count the byte-order mark too.
    _refuse_nul_bytes(data, origin)
    decode_utf8(data, origin, REENCODE_FIX)
    if len(text) < len(data):
        log.info("%s: dropped the UTF-8 byte-order mark at the start", origin)
    text = text.replace(b"\r\n", b"\n")
    return text if text.endswith(b"\n") else text + b"\n"


def _refuse_nul_bytes(data: bytes, origin: str) -> None:
    nul_at = data.find(b"\x00")
    if nul_at >= 0:
        line, column = line_and_column(data, nul_at)
        raise DataError(
            f"{origin}: line {line}: NUL byte at byte offset {nul_at} (column {column}); this "
            "is a binary file, not UTF-8 text. Fix: use the plain-text corpus file (or its "
            ".gz when the source accepts one)."
        )


def verify_archive(name: str, data: bytes, origin: str, pinned: Mapping[str, str]) -> str:
    """Check `data` against the pinned sha256 for `name`; return "verified" or "unpinned"."""
    actual = sha256_hex(data)
    expected = pinned.get(name)
    if expected is None:
        log.warning(
            "%s: no pinned sha256 for %s (got %s); recorded as unpinned", origin, name, actual
        )
        return "unpinned"
    if actual != expected:
        raise DataError(
            f"{origin}: checksum mismatch for {name}: expected sha256 {expected}, got {actual}. "
            "The file is corrupt, truncated or not the pinned Multi30k release. Fix: fetch it "
            "again; if upstream changed on purpose, update MULTI30K_SHA256 in "
            "pipeline/data/fetch.py."
        )
    return "verified"


def split_tsv(text: bytes, origin: str) -> tuple[bytes, bytes]:
    """Split normalised `source<TAB>target` lines into the two sides' texts."""
    lines = text.split(b"\n")[:-1]
    bad = [number for number, line in enumerate(lines, 1) if line.count(b"\t") != 1]
    if bad:
        first = bad[0]
        tabs = lines[first - 1].count(b"\t")
        more = f" ({len(bad) - 1} more such lines)" if len(bad) > 1 else ""
        raise DataError(
            f"{origin}: line {first}: expected exactly one tab (source<TAB>target), found "
            f"{tabs}{more}. Fix: write each pair as one `source<TAB>target` line, with no "
            "tab inside a sentence."
        )
    pairs = [line.split(b"\t") for line in lines]
    sources = b"".join(source + b"\n" for source, _ in pairs)
    targets = b"".join(target + b"\n" for _, target in pairs)
    return sources, targets


def check_alignment(sides: list[CorpusSide]) -> None:
    """Line i of every language of a split is one sentence pair: the counts must match."""
    by_split: dict[str, list[CorpusSide]] = {}
    for side in sides:
        by_split.setdefault(side.split, []).append(side)
    for split, group in by_split.items():
        first, *others = group
        for other in others:
            if count_lines(first.text) != count_lines(other.text):
                raise DataError(
                    f"split {split!r}: {first.origin} has {count_lines(first.text)} lines but "
                    f"{other.origin} has {count_lines(other.text)}; line i of both sides must "
                    "be one sentence pair. Fix: supply aligned files with equal line counts."
                )


def build_checksums(corpus: FetchedCorpus) -> dict[str, Any]:
    """checksums.json: {"{split}.{lang}": sha256, ...} plus "lines" and "source" provenance."""
    checksums: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for side in corpus.sides:
        name = f"{side.split}.{side.lang}"
        checksums[name] = sha256_hex(side.text)
        lines[name] = count_lines(side.text)
    checksums["lines"] = lines
    checksums["source"] = corpus.source
    return checksums


# ---------------------------------------------------------------------------------------------
# Sources: each returns the validated sides of every split and its provenance.


def _wanted(data: DataConfig) -> list[tuple[str, str]]:
    return [(split, side) for split in data.splits for side in data.sides]


def size_cap(data: DataConfig) -> SizeCap:
    """data.max_file_mb: the most bytes any one file, archive or download may have."""
    return SizeCap(data.max_file_mb)


def read_multi30k(
    data: DataConfig,
    *,
    pinned: Mapping[str, str] = MULTI30K_SHA256,
    mirror: Path | None = None,
    backoff_s: float = DEFAULT_BACKOFF_S,
) -> FetchedCorpus:
    """Multi30k archives from `data.url` (or the `mirror` folder), checksum-verified."""
    archives: dict[str, dict[str, str]] = {}
    sides = []
    with tempfile.TemporaryDirectory(prefix="mt-fetch-") as scratch:
        for split, lang in _wanted(data):
            name = f"{split}.{lang}.gz"
            archive, origin = _multi30k_archive(data, name, mirror, Path(scratch), backoff_s)
            status = verify_archive(name, archive, origin, pinned)
            archives[name] = {"sha256": sha256_hex(archive), "status": status}
            text = normalise_text(gunzip_bytes(archive, size_cap(data), origin), origin)
            sides.append(CorpusSide(split, lang, origin, text))
            log.info("%s: %d lines (%s)", origin, count_lines(text), status)
    source = {"kind": "multi30k", "url": data.url, "archives": archives}
    return FetchedCorpus(sides, source)


def _multi30k_archive(
    data: DataConfig, name: str, mirror: Path | None, scratch: Path, backoff_s: float
) -> tuple[bytes, str]:
    if mirror is not None:
        path = mirror / name
        if not path.exists():
            raise DataError(
                f"{path}: missing ({MIRROR_ENV}={mirror}); every split in params data.* needs "
                f"{name}. Fix: add the file to that folder or unset {MIRROR_ENV} to download."
            )
        mirror_fix = f"point {MIRROR_ENV} at a folder of the real Multi30k .gz files"
        return read_regular_file(path, size_cap(data), mirror_fix), str(path)
    url = f"{data.url.rstrip('/')}/{name}"
    destination = scratch / name
    download(url, destination, data.timeout_s, data.retries, backoff_s, size_cap(data))
    return destination.read_bytes(), url


def read_dir_source(data: DataConfig, folder: Path) -> FetchedCorpus:
    """`{split}.{lang}` or `{split}.{lang}.gz` files from a local folder."""
    _require_folder(folder, "`{split}.{lang}` or `{split}.{lang}.gz` files")
    sides = []
    for split, lang in _wanted(data):
        path = _find_side_file(folder, split, lang)
        raw = read_corpus_file(path, size_cap(data), LOCAL_FILE_FIX)
        sides.append(CorpusSide(split, lang, str(path), normalise_text(raw, str(path))))
    return FetchedCorpus(sides, {"kind": "dir", "path": data.path})


def _find_side_file(folder: Path, split: str, lang: str) -> Path:
    need = f"split {split!r} needs a {lang!r} side"
    fix = "add the file, or change data.*_split(s) / data.src_lang / data.tgt_lang"
    return _plain_or_packed(folder, raw_file(folder, split, lang), need, fix)


def _plain_or_packed(folder: Path, plain: Path, need: str, fix: str) -> Path:
    """`plain` or `plain.gz`, whichever exists; neither or both is one line naming them."""
    packed = plain.with_name(plain.name + ".gz")
    # exists(), not is_file(): a device or FIFO under the corpus name is refused by name when
    # it is opened, rather than reported as missing.
    found = [path for path in (plain, packed) if path.exists()]
    if not found:
        raise DataError(f"{plain}: missing (nor {packed.name}); {need}. Fix: {fix}.")
    if len(found) == 2:
        raise DataError(
            f"{folder}: both {plain.name} and {packed.name} exist; it is unclear which one "
            "to use. Fix: keep only one of them."
        )
    return found[0]


def read_tsv_source(data: DataConfig, folder: Path) -> FetchedCorpus:
    """`{split}.tsv` or `{split}.tsv.gz` files of `source<TAB>target` lines from a folder."""
    _require_folder(folder, "`{split}.tsv` or `{split}.tsv.gz` files")
    sides = []
    for split in data.splits:
        need = f"split {split!r} needs a `source<TAB>target` file"
        fix = "add it, or change data.train_split / data.val_split / data.test_splits"
        path = _plain_or_packed(folder, folder / f"{split}.tsv", need, fix)
        raw = read_corpus_file(path, size_cap(data), LOCAL_FILE_FIX)
        text = normalise_text(raw, str(path))
        sources, targets = split_tsv(text, str(path))
        sides.append(CorpusSide(split, data.sides[0], f"{path} (column 1)", sources))
        sides.append(CorpusSide(split, data.sides[1], f"{path} (column 2)", targets))
    return FetchedCorpus(sides, {"kind": "tsv", "path": data.path})


def _require_folder(folder: Path, holding: str) -> None:
    if not folder.is_dir():
        raise DataError(
            f"{folder}: not a folder (params data.path); the source needs a folder of "
            f"{holding}. Fix: set data.path in params.yaml to that folder."
        )


# ---------------------------------------------------------------------------------------------
# Stage: choose the source, validate, write data/raw as a whole.


def read_source(
    data: DataConfig,
    root: Path,
    *,
    pinned: Mapping[str, str] = MULTI30K_SHA256,
    mirror: Path | None = None,
    backoff_s: float = DEFAULT_BACKOFF_S,
) -> FetchedCorpus:
    """Read and validate every side of every split from the source `data.source` names."""
    if data.source == "multi30k":
        corpus = read_multi30k(data, pinned=pinned, mirror=mirror, backoff_s=backoff_s)
    elif not data.path:
        raise DataError(
            f"params.yaml: data.source is {data.source!r} but data.path is empty. Fix: set "
            "data.path to the folder holding the corpus files."
        )
    elif data.source == "dir":
        corpus = read_dir_source(data, _resolve(root, data.path))
    else:
        corpus = read_tsv_source(data, _resolve(root, data.path))
    check_alignment(corpus.sides)
    return corpus


def _resolve(root: Path, configured: str) -> Path:
    """data.path as given when absolute, else relative to the project root (not the cwd)."""
    path = Path(configured).expanduser()
    return path if path.is_absolute() else root / path


def write_raw(corpus: FetchedCorpus, raw_dir: Path) -> dict[str, Any]:
    """Replace `raw_dir` with the corpus files and checksums.json in one swap."""
    checksums = build_checksums(corpus)
    with atomic_directory(raw_dir) as staging:
        for side in corpus.sides:
            raw_file(staging, side.split, side.lang).write_bytes(side.text)
        atomic_write_json(staging / CHECKSUMS_FILE, checksums)
    return checksums


def fetch(
    data: DataConfig,
    root: Path,
    raw_dir: Path,
    *,
    pinned: Mapping[str, str] = MULTI30K_SHA256,
    mirror: Path | None = None,
    backoff_s: float = DEFAULT_BACKOFF_S,
) -> dict[str, Any]:
    """Fetch, check and write the corpus; returns the checksums.json content."""
    corpus = read_source(data, root, pinned=pinned, mirror=mirror, backoff_s=backoff_s)
    return write_raw(corpus, raw_dir)


def main(argv: list[str]) -> int | None:
    parser = argparse.ArgumentParser(
        prog="mt fetch",
        description="Download (or copy) the raw corpus named by params data.* into data/raw/. "
        f"Env {MIRROR_ENV}: read the Multi30k .gz files from this folder instead of the URL.",
    )
    parser.parse_args(argv)
    config = load_config()
    paths = project_paths()
    mirror = mirror_from_env() if config.data.source == "multi30k" else None
    if mirror is not None:
        log.info("reading Multi30k from %s=%s instead of %s", MIRROR_ENV, mirror, config.data.url)
    checksums = fetch(config.data, paths.root, paths.raw_dir, mirror=mirror)
    log.info("wrote %d files to %s", len(checksums["lines"]), paths.raw_dir)
    return 0
