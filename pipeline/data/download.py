"""HTTP downloads for `mt fetch`: timeout, retries with exponential backoff, a size cap.

The body is streamed to a file and never grows past `data.max_file_mb`: a server that sends
an endless body, or announces a huge one, is refused at once (a retry would only repeat it).
"""

from __future__ import annotations

import http.client
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from pipeline.data.capped_io import CHUNK_BYTES, SizeCap
from pipeline.errors import DataError

log = logging.getLogger(__name__)

MIRROR_ENV = "MT_DATA_DIR"
# Server-side or transient statuses worth another attempt; any other HTTP error is final.
RETRYABLE_HTTP_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "mt-pipeline-fetch/1.0"
# urllib would also open file: and ftp: URLs; a corpus comes over HTTP(S) only.
HTTP_SCHEMES = frozenset({"http", "https"})


def mirror_from_env() -> Path | None:
    """The local folder of Multi30k's .gz files named by MT_DATA_DIR, if set."""
    configured = os.environ.get(MIRROR_ENV)
    return Path(configured).expanduser().resolve() if configured else None


class _IncompleteDownload(Exception):
    """The server closed the connection before sending Content-Length bytes."""


def _download_once(url: str, destination: Path, timeout_s: float, cap: SizeCap) -> None:
    if urllib.parse.urlsplit(url).scheme not in HTTP_SCHEMES:
        raise DataError(f"{url}: not an http(s) URL; data.url must start with https://")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310 (scheme checked above)
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (same)
        expected = response.headers.get("Content-Length")
        if expected is not None and int(expected) > cap.bytes:
            raise cap.too_large(f"{url} (Content-Length {expected})")
        with destination.open("wb") as handle:
            _copy_capped(response, handle, cap, url)
    received = destination.stat().st_size
    if expected is not None and received != int(expected):
        raise _IncompleteDownload(f"received {received} of {expected} bytes")


def _copy_capped(body: BinaryIO, target: BinaryIO, cap: SizeCap, url: str) -> None:
    written = 0
    while chunk := body.read(CHUNK_BYTES):
        written += len(chunk)
        if written > cap.bytes:
            raise cap.too_large(url)
        target.write(chunk)


def download(
    url: str, destination: Path, timeout_s: float, retries: int, backoff_s: float, cap: SizeCap
) -> None:
    """Fetch `url` into `destination`, retrying transient failures `retries` times.

    The wait doubles after each failed attempt (backoff_s, 2*backoff_s, ...). HTTP errors that
    a retry cannot fix (404, 403, ...) and a body over `cap` fail at once.
    """
    attempts = retries + 1
    reason = ""
    for attempt in range(1, attempts + 1):
        reason = _try_download(url, destination, timeout_s, cap)
        if not reason:
            return
        if attempt < attempts:
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.2gs",
                *(url, attempt, attempts, reason, delay),
            )
            time.sleep(delay)
    raise DataError(
        f"{url}: download failed after {retries} {'retry' if retries == 1 else 'retries'} "
        f"({attempts} attempts, timeout {timeout_s:g}s each); last error: {reason}. Fix: check "
        "the network and data.url, raise data.retries / data.timeout_s, or set "
        f"{MIRROR_ENV} to a folder holding the same .gz files."
    )


def _try_download(url: str, destination: Path, timeout_s: float, cap: SizeCap) -> str:
    """One attempt: "" on success, else why it failed when a retry may help."""
    try:
        _download_once(url, destination, timeout_s, cap)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code not in RETRYABLE_HTTP_STATUS:
            raise _http_error(url, error) from None
        return f"HTTP {error.code} {error.reason}"
    except (OSError, http.client.HTTPException, _IncompleteDownload) as error:
        return _describe_network_error(error)
    return ""


def _http_error(url: str, error: urllib.error.HTTPError) -> DataError:
    return DataError(
        f"{url}: HTTP {error.code} {error.reason}; the server has no such file for us. Fix: "
        "check data.url and that every split (data.train_split, data.val_split, "
        "data.test_splits) exists there in both languages (data.src_lang, data.tgt_lang)."
    )


def _describe_network_error(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and not isinstance(error.reason, str):
        error = error.reason
    if isinstance(error, TimeoutError):
        return "timed out"
    return f"{type(error).__name__}: {error}"
