"""Reading corpus bytes that may be hostile: regular files only, never more than a size cap.

A corpus path that is a symlink to /dev/zero, a FIFO nobody writes to, or a gzip bomb (a few
kB that expand to many GB) would hang `mt fetch` or exhaust the machine's memory. Every byte
fetch takes from a file, an archive or a download goes through here:

- only regular files are opened (a symlink is followed and must end at one); a device, FIFO,
  socket or directory is refused by name, and the check is made on the opened descriptor
  too, so a file swapped after the first look cannot slip through;
- reading stops one chunk past `data.max_file_mb` (decompressed size for .gz), so memory stays
  bounded by the cap whatever the input claims to be.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from pipeline.errors import DataError

CHUNK_BYTES = 1 << 20
BYTES_PER_MB = 1_000_000
# What a regular corpus file is compared with in the "too large" message.
LARGEST_MULTI30K_SIDE_MB = 2.1

_SPECIAL_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class SizeCap:
    """The most bytes one corpus file (or archive, or its decompressed text) may have."""

    max_mb: float

    @property
    def bytes(self) -> int:
        return int(self.max_mb * BYTES_PER_MB)

    def too_large(self, origin: str, decompressed: bool = False) -> DataError:
        state = " once decompressed" if decompressed else ""
        return DataError(
            f"{origin}: larger than data.max_file_mb ({self.max_mb:g} MB){state}; reading "
            f"stopped after {self.bytes} bytes. Real corpus files are far smaller (Multi30k's "
            f"largest side is {LARGEST_MULTI30K_SIDE_MB} MB); this looks like an endless "
            "stream or a gzip bomb. Fix: check the file, or raise data.max_file_mb in "
            "params.yaml if the corpus really is that large."
        )


def file_kind(mode: int) -> str:
    """ "a regular file", or what else a stat mode says the path is."""
    for test, kind in _SPECIAL_KINDS:
        if test(mode):
            return kind
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def _not_regular(path: Path, mode: int, fix: str) -> DataError:
    link = f" (a symlink to {os.path.realpath(path)})" if path.is_symlink() else ""
    return DataError(
        f"{path}{link}: {file_kind(mode)}, not a regular file; corpus files must be regular "
        f"files (a symlink must end at one). Fix: {fix}."
    )


def open_regular_file(path: Path, fix: str) -> BinaryIO:
    """`path` opened for reading, after making sure it is (a symlink to) a regular file.

    O_NONBLOCK: opening a FIFO without a writer would otherwise block forever, before the
    descriptor could be checked. It changes nothing for a regular file.
    """
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode, fix)
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise DataError(f"{path}: cannot be opened ({error.strerror}). Fix: {fix}.") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise _not_regular(path, mode, fix)
    return os.fdopen(descriptor, "rb")


def read_capped(stream: Readable, cap: SizeCap, origin: str, decompressed: bool = False) -> bytes:
    """Everything `stream` holds, or a DataError as soon as it passes `cap`."""
    buffer = bytearray()
    while chunk := stream.read(CHUNK_BYTES):
        buffer += chunk
        if len(buffer) > cap.bytes:
            raise cap.too_large(origin, decompressed)
    return bytes(buffer)


def gunzip_capped(packed: BinaryIO, cap: SizeCap, origin: str) -> bytes:
    """Decompress a gzip stream, at most `cap` bytes of it; names a truncated or corrupt file."""
    try:
        with gzip.GzipFile(fileobj=packed, mode="rb") as unpacked:
            return read_capped(unpacked, cap, origin, decompressed=True)
    except (EOFError, OSError, zlib.error) as error:
        raise DataError(
            f"{origin}: not a complete gzip file ({error}); it is truncated or corrupt. "
            "Fix: download or copy the file again."
        ) from None


def gunzip_bytes(data: bytes, cap: SizeCap, origin: str) -> bytes:
    """`gunzip_capped` of an archive already in memory (a download, a checksummed mirror file)."""
    return gunzip_capped(io.BytesIO(data), cap, origin)


def read_regular_file(path: Path, cap: SizeCap, fix: str) -> bytes:
    """The bytes of a regular file, at most `cap` of them."""
    with open_regular_file(path, fix) as handle:
        return read_capped(handle, cap, str(path))


def read_corpus_file(path: Path, cap: SizeCap, fix: str) -> bytes:
    """A plain or `.gz` corpus file's text bytes, decompressed, at most `cap` of them."""
    with open_regular_file(path, fix) as handle:
        if path.suffix == ".gz":
            return gunzip_capped(handle, cap, str(path))
        return read_capped(handle, cap, str(path))
