"""`mt fetch` (pipeline/data/fetch.py): a real HTTP server, the real Multi30k mirror, tiny
exact corpora, and every data error with its message and an untouched data/raw."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import cli
from pipeline.config import DataConfig, _load_cached, parse_config
from pipeline.data.fetch import MULTI30K_SHA256, fetch
from pipeline.errors import DataError
from tests.conftest import tiny_pairs, write_corpus, write_params

SPLITS = ("train", "val", "test_2016_flickr")
URL_PREFIX = "/multi30k/data/task1/raw"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # mtime=0: the same bytes, the same sum, every run


def data_config(root: Path, **overrides: Any) -> DataConfig:
    """params.yaml in `root` with `data.*` overrides, parsed like the stage parses it."""
    path = write_params(root, {"data": overrides})
    _load_cached.cache_clear()
    return parse_config(yaml.safe_load(path.read_text(encoding="utf-8"))).data


def raw_snapshot(raw_dir: Path) -> dict[str, bytes] | None:
    if not raw_dir.exists():
        return None
    return {path.name: path.read_bytes() for path in sorted(raw_dir.iterdir())}


# --- a real HTTP server on 127.0.0.1 ---------------------------------------------------------


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    # name -> planned failures, consumed one per request: an HTTP status, or "truncate"
    failures: dict[str, list[int | str]] = field(default_factory=dict)
    delay_s: float = 0.0
    requests: list[str] = field(default_factory=list)
    url: str = ""


class CorpusHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        name = self.path.rsplit("/", 1)[-1]
        state.requests.append(name)
        time.sleep(state.delay_s)
        planned = state.failures.get(name)
        failure = planned.pop(0) if planned else None
        body = state.files.get(name) if self.path.startswith(URL_PREFIX) else None
        if isinstance(failure, int) or body is None:
            self.send_error(failure if isinstance(failure, int) else 404)
            return
        if failure in ("endless", "announce_a_terabyte"):
            self.send_oversized(failure)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # "truncate": promise the whole body, send half, close (HTTP/1.0 closes per request)
        self.wfile.write(body[: len(body) // 2] if failure == "truncate" else body)

    def send_oversized(self, failure: str) -> None:
        """ "endless": no Content-Length, NUL bytes until the client hangs up (HTTP/1.0 ends a
        body by closing). "announce_a_terabyte": a Content-Length of 1 TB, then nothing."""
        self.send_response(200)
        if failure == "announce_a_terabyte":
            self.send_header("Content-Length", str(10**12))
        self.end_headers()
        while failure == "endless":
            self.wfile.write(bytes(1 << 16))

    def log_message(self, format: str, *args: Any) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is part of the test, not a failure


@pytest.fixture
def server() -> Iterator[ServerState]:
    state = ServerState()
    httpd = QuietServer(("127.0.0.1", 0), CorpusHandler)
    httpd.state = state  # type: ignore[attr-defined]
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}{URL_PREFIX}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def archives(tiny_corpus_dir: Path) -> dict[str, bytes]:
    """The tiny en/de corpus as Multi30k-style `{split}.{lang}.gz` archives."""
    return {f"{p.name}.gz": gz(p.read_bytes()) for p in sorted(tiny_corpus_dir.iterdir())}


@pytest.fixture
def pinned(archives: dict[str, bytes]) -> dict[str, str]:
    return {name: sha256(data) for name, data in archives.items()}


@pytest.fixture
def serving(server: ServerState, archives: dict[str, bytes]) -> ServerState:
    server.files.update(archives)
    return server


def fetch_from(server: ServerState, root: Path, pinned: dict[str, str], **data: Any) -> dict:
    config = data_config(root, url=server.url, **data)
    return fetch(config, root, root / "data/raw", pinned=pinned, backoff_s=0.01)


# --- multi30k over HTTP ----------------------------------------------------------------------


def test_download_writes_decompressed_files_and_checksums(
    project_dir: Path, serving: ServerState, tiny_corpus_dir: Path, pinned: dict[str, str]
) -> None:
    checksums = fetch_from(serving, project_dir, pinned)

    raw_dir = project_dir / "data/raw"
    expected = {p.name: p.read_bytes() for p in tiny_corpus_dir.iterdir()}
    written = raw_snapshot(raw_dir)
    assert written is not None
    assert written.pop("checksums.json") == (
        json.dumps(checksums, indent=2, sort_keys=True).encode() + b"\n"
    )
    assert written == expected
    assert written["train.en"].splitlines()[0] == b"A dog runs on the beach number 0."
    assert checksums == {
        **{name: sha256(text) for name, text in expected.items()},
        "lines": {
            "train.en": 60,
            "train.de": 60,
            "val.en": 10,
            "val.de": 10,
            "test_2016_flickr.en": 10,
            "test_2016_flickr.de": 10,
        },
        "source": {
            "kind": "multi30k",
            "url": serving.url,
            "archives": {name: {"sha256": pinned[name], "status": "verified"} for name in pinned},
        },
    }
    assert sorted(serving.requests) == sorted(pinned)


def test_transient_server_error_is_retried(
    project_dir: Path, serving: ServerState, pinned: dict[str, str]
) -> None:
    serving.failures["train.de.gz"] = [500, 503]
    serving.failures["val.en.gz"] = ["truncate"]

    fetch_from(serving, project_dir, pinned, retries=2)

    assert serving.requests.count("train.de.gz") == 3
    assert serving.requests.count("val.en.gz") == 2
    assert (project_dir / "data/raw/train.de").read_bytes().count(b"\n") == 60


def test_checksum_mismatch_names_both_sums_and_keeps_old_raw(
    project_dir: Path, serving: ServerState, pinned: dict[str, str]
) -> None:
    raw_dir = project_dir / "data/raw"
    raw_dir.mkdir(parents=True)
    (raw_dir / "train.en").write_text("previous data\n", encoding="utf-8")
    wrong = dict(pinned, **{"val.de.gz": "0" * 64})

    with pytest.raises(DataError) as caught:
        fetch_from(serving, project_dir, wrong)

    got = pinned["val.de.gz"]
    assert str(caught.value).startswith(
        f"{serving.url}/val.de.gz: checksum mismatch for val.de.gz: "
        f"expected sha256 {'0' * 64}, got {got}."
    )
    assert raw_snapshot(raw_dir) == {"train.en": b"previous data\n"}
    assert [p.name for p in raw_dir.parent.iterdir()] == ["raw"]  # no staging dir left


def test_dead_server_fails_after_retries(project_dir: Path, pinned: dict[str, str]) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and is now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = ServerState(url=f"http://127.0.0.1:{port}/data")

    with pytest.raises(DataError) as caught:
        fetch_from(dead, project_dir, pinned, retries=2)

    message = str(caught.value)
    assert message.startswith(
        f"http://127.0.0.1:{port}/data/train.en.gz: download failed after 2 retries "
        "(3 attempts, timeout 30s each); last error: ConnectionRefusedError"
    )
    assert "set MT_DATA_DIR" in message
    assert not (project_dir / "data/raw").exists()


def test_slow_server_times_out_after_retries(
    project_dir: Path, serving: ServerState, pinned: dict[str, str]
) -> None:
    serving.delay_s = 1.0

    with pytest.raises(DataError) as caught:
        fetch_from(serving, project_dir, pinned, retries=1, timeout_s=0.2)

    assert str(caught.value).startswith(
        f"{serving.url}/train.en.gz: download failed after 1 retry (2 attempts, "
        "timeout 0.2s each); last error: timed out."
    )
    assert not (project_dir / "data/raw").exists()


def test_http_404_fails_at_once(
    project_dir: Path, serving: ServerState, pinned: dict[str, str]
) -> None:
    del serving.files["test_2016_flickr.de.gz"]

    with pytest.raises(DataError) as caught:
        fetch_from(serving, project_dir, pinned, retries=3)

    assert str(caught.value).startswith(
        f"{serving.url}/test_2016_flickr.de.gz: HTTP 404 Not Found; "
        "the server has no such file for us. Fix: check data.url"
    )
    assert serving.requests.count("test_2016_flickr.de.gz") == 1
    assert not (project_dir / "data/raw").exists()


def test_unpinned_archive_is_fetched_with_a_warning(
    project_dir: Path,
    serving: ServerState,
    pinned: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    without_val_en = {k: v for k, v in pinned.items() if k != "val.en.gz"}

    with caplog.at_level(logging.WARNING, logger="pipeline.data.fetch"):
        checksums = fetch_from(serving, project_dir, without_val_en)

    archives = checksums["source"]["archives"]
    assert archives["val.en.gz"] == {"sha256": pinned["val.en.gz"], "status": "unpinned"}
    assert archives["val.de.gz"]["status"] == "verified"
    assert [r.getMessage() for r in caplog.records] == [
        f"{serving.url}/val.en.gz: no pinned sha256 for val.en.gz "
        f"(got {pinned['val.en.gz']}); recorded as unpinned"
    ]


def test_truncated_archive_without_pinned_sum_is_a_gzip_error(
    project_dir: Path, serving: ServerState, archives: dict[str, bytes]
) -> None:
    serving.files["val.en.gz"] = archives["val.en.gz"][:-20]

    with pytest.raises(DataError) as caught:
        fetch_from(serving, project_dir, {})

    assert str(caught.value).startswith(
        f"{serving.url}/val.en.gz: not a complete gzip file (Compressed file ended before the "
        "end-of-stream marker was reached); it is truncated or corrupt."
    )


@pytest.mark.parametrize(
    ("failure", "origin"),
    [("endless", ""), ("announce_a_terabyte", " (Content-Length 1000000000000)")],
    ids=["endless", "announce_a_terabyte"],
)
def test_an_oversized_download_is_refused_at_the_cap_without_retries(
    project_dir: Path, serving: ServerState, pinned: dict[str, str], failure: str, origin: str
) -> None:
    serving.failures["val.en.gz"] = [failure]

    with pytest.raises(DataError) as caught:
        fetch_from(serving, project_dir, pinned, retries=3, max_file_mb=1)

    assert str(caught.value).startswith(
        f"{serving.url}/val.en.gz{origin}: larger than data.max_file_mb (1 MB); reading stopped "
        "after 1000000 bytes."
    )
    assert serving.requests.count("val.en.gz") == 1
    assert not (project_dir / "data/raw").exists()


# --- multi30k from the MT_DATA_DIR mirror (the real corpus) -----------------------------------


def test_mirror_reads_real_multi30k_through_the_cli(
    project_dir: Path, multi30k_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MT_DATA_DIR", str(multi30k_dir))

    assert cli.main(["fetch"]) == 0

    raw_dir = project_dir / "data/raw"
    checksums = json.loads((raw_dir / "checksums.json").read_text(encoding="utf-8"))
    counts = {"train": 29_000, "val": 1_014, "test_2016_flickr": 1_000}
    names = [f"{split}.{lang}" for split in counts for lang in ("en", "de")]
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted([*names, "checksums.json"])
    assert checksums["lines"] == {name: counts[name.split(".")[0]] for name in names}
    for name in names:
        text = (raw_dir / name).read_bytes()
        assert text == gzip.decompress((multi30k_dir / f"{name}.gz").read_bytes())
        assert checksums[name] == sha256(text)
    assert checksums["source"] == {
        "kind": "multi30k",
        "url": "https://github.com/multi30k/dataset/raw/master/data/task1/raw",
        "archives": {
            f"{name}.gz": {"sha256": MULTI30K_SHA256[f"{name}.gz"], "status": "verified"}
            for name in names
        },
    }
    assert checksums["train.en"] == (
        "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6"
    )


def test_en_fr_is_a_params_change_only(
    project_dir: Path, multi30k_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_config(project_dir, tgt_lang="fr")
    monkeypatch.setenv("MT_DATA_DIR", str(multi30k_dir))

    assert cli.main(["fetch"]) == 0

    raw_dir = project_dir / "data/raw"
    fr_files = sorted(p.name for p in raw_dir.glob("*.fr"))
    assert fr_files == ["test_2016_flickr.fr", "train.fr", "val.fr"]
    assert not list(raw_dir.glob("*.de"))
    assert (raw_dir / "train.fr").read_bytes().count(b"\n") == 29_000
    checksums = json.loads((raw_dir / "checksums.json").read_text(encoding="utf-8"))
    assert checksums["source"]["archives"]["val.fr.gz"] == {
        "sha256": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
        "status": "verified",
    }


def test_mirror_missing_a_file_is_an_error(
    project_dir: Path, tmp_path: Path, archives: dict[str, bytes], pinned: dict[str, str]
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, data in archives.items():
        if name != "val.de.gz":
            (mirror / name).write_bytes(data)
    config = data_config(project_dir)

    with pytest.raises(DataError) as caught:
        fetch(config, project_dir, project_dir / "data/raw", pinned=pinned, mirror=mirror)

    assert str(caught.value) == (
        f"{mirror}/val.de.gz: missing (MT_DATA_DIR={mirror}); every split in params data.* "
        "needs val.de.gz. Fix: add the file to that folder or unset MT_DATA_DIR to download."
    )
    assert not (project_dir / "data/raw").exists()


def test_mirror_applies_the_pinned_checksums(
    project_dir: Path, tmp_path: Path, archives: dict[str, bytes]
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, data in archives.items():
        (mirror / name).write_bytes(data)
    config = data_config(project_dir)

    with pytest.raises(DataError) as caught:  # the tiny corpus is not the real Multi30k
        fetch(config, project_dir, project_dir / "data/raw", mirror=mirror)

    assert str(caught.value).startswith(
        f"{mirror}/train.en.gz: checksum mismatch for train.en.gz: expected sha256 "
        f"{MULTI30K_SHA256['train.en.gz']}, got {sha256(archives['train.en.gz'])}."
    )


def test_mirror_refuses_a_symlink_to_a_device(
    project_dir: Path, tmp_path: Path, archives: dict[str, bytes], pinned: dict[str, str]
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, data in archives.items():
        (mirror / name).write_bytes(data)
    (mirror / "val.de.gz").unlink()
    (mirror / "val.de.gz").symlink_to("/dev/zero")

    with pytest.raises(DataError) as caught:
        fetch(
            data_config(project_dir),
            project_dir,
            project_dir / "raw",
            pinned=pinned,
            mirror=mirror,
        )

    assert str(caught.value) == (
        f"{mirror}/val.de.gz (a symlink to /dev/zero): a character device, not a regular file; "
        "corpus files must be regular files (a symlink must end at one). Fix: point "
        "MT_DATA_DIR at a folder of the real Multi30k .gz files."
    )


# --- dir and tsv sources ---------------------------------------------------------------------


def fetch_local(root: Path, source: str, folder: Path, **data: Any) -> dict:
    config = data_config(root, source=source, path=str(folder), **data)
    return fetch(config, root, root / "data/raw")


def test_dir_source_reads_plain_and_gz_files(project_dir: Path, tiny_corpus_dir: Path) -> None:
    expected = {p.name: p.read_bytes() for p in tiny_corpus_dir.iterdir()}
    packed = tiny_corpus_dir / "val.de"
    packed.with_name("val.de.gz").write_bytes(gz(packed.read_bytes()))
    packed.unlink()

    checksums = fetch_local(project_dir, "dir", tiny_corpus_dir)

    written = raw_snapshot(project_dir / "data/raw")
    assert written is not None
    del written["checksums.json"]
    assert written == expected
    assert checksums["source"] == {"kind": "dir", "path": str(tiny_corpus_dir)}
    assert checksums["val.de"] == sha256(expected["val.de"])


def test_dir_source_path_is_relative_to_the_project_root(
    project_dir: Path, tiny_corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_corpus(project_dir / "corpus", {s: tiny_pairs(3) for s in SPLITS})
    monkeypatch.chdir(tiny_corpus_dir)  # the cwd must not matter

    checksums = fetch_local(project_dir, "dir", Path("corpus"))

    assert checksums["lines"]["test_2016_flickr.de"] == 3
    assert checksums["source"] == {"kind": "dir", "path": "corpus"}


def test_fetch_replaces_stale_raw_files(project_dir: Path, tiny_corpus_dir: Path) -> None:
    raw_dir = project_dir / "data/raw"
    raw_dir.mkdir(parents=True)
    (raw_dir / "old_split.en").write_text("stale\n", encoding="utf-8")

    fetch_local(project_dir, "dir", tiny_corpus_dir)

    assert not (raw_dir / "old_split.en").exists()
    assert (raw_dir / "train.en").is_file()


def test_crlf_line_ends_and_missing_final_newline_are_normalised(
    project_dir: Path, tiny_corpus_dir: Path
) -> None:
    (tiny_corpus_dir / "val.en").write_bytes(
        b"A dog\xc2\xa0 runs.\r\nTwo  men.\r\n" + b"x\n" * 7 + b"last line"
    )

    fetch_local(project_dir, "dir", tiny_corpus_dir)

    assert (project_dir / "data/raw/val.en").read_bytes() == (
        b"A dog\xc2\xa0 runs.\nTwo  men.\n" + b"x\n" * 7 + b"last line\n"
    )


@pytest.mark.parametrize("packed", [False, True], ids=["tsv", "tsv.gz"])
def test_tsv_source_splits_columns(project_dir: Path, tmp_path: Path, packed: bool) -> None:
    folder = tmp_path / "tsv"
    folder.mkdir()
    for split in SPLITS:
        text = b"Hello there.\tBonjour.\r\nA cat.\tUn chat."
        name = f"{split}.tsv.gz" if packed else f"{split}.tsv"
        (folder / name).write_bytes(gzip.compress(text) if packed else text)

    checksums = fetch_local(project_dir, "tsv", folder, tgt_lang="fr")

    raw_dir = project_dir / "data/raw"
    assert (raw_dir / "val.en").read_bytes() == b"Hello there.\nA cat.\n"
    assert (raw_dir / "val.fr").read_bytes() == b"Bonjour.\nUn chat.\n"
    assert checksums["source"] == {"kind": "tsv", "path": str(folder)}
    assert checksums["lines"]["train.fr"] == 2


def test_a_tsv_split_missing_or_given_twice_is_named(project_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tsv"
    folder.mkdir()
    for split in SPLITS:
        (folder / f"{split}.tsv").write_bytes(b"a\tb\n")
    (folder / "val.tsv.gz").write_bytes(gzip.compress(b"a\tb\n"))
    with pytest.raises(DataError) as twice:
        fetch_local(project_dir, "tsv", folder)
    assert str(twice.value) == (
        f"{folder}: both val.tsv and val.tsv.gz exist; it is unclear which one to use. Fix: "
        "keep only one of them."
    )
    (folder / "val.tsv").unlink()
    (folder / "val.tsv.gz").unlink()
    with pytest.raises(DataError) as missing:
        fetch_local(project_dir, "tsv", folder)
    assert str(missing.value) == (
        f"{folder}/val.tsv: missing (nor val.tsv.gz); split 'val' needs a `source<TAB>target` "
        "file. Fix: add it, or change data.train_split / data.val_split / data.test_splits."
    )


@pytest.mark.parametrize(
    ("bad_lines", "found"),
    [(b"no tab here\n", "found 0"), (b"a\tb\tc\nx\t\ty\n", "found 2 (1 more such lines)")],
)
def test_tsv_line_without_exactly_one_tab_is_an_error(
    project_dir: Path, tmp_path: Path, bad_lines: bytes, found: str
) -> None:
    folder = tmp_path / "tsv"
    folder.mkdir()
    for split in SPLITS:
        (folder / f"{split}.tsv").write_bytes(b"a\tb\nc\td\n")
    (folder / "val.tsv").write_bytes(b"a\tb\nc\td\n" + bad_lines)

    with pytest.raises(DataError) as caught:
        fetch_local(project_dir, "tsv", folder)

    assert str(caught.value).startswith(
        f"{folder}/val.tsv: line 3: expected exactly one tab (source<TAB>target), {found}."
    )
    assert not (project_dir / "data/raw").exists()


def test_a_leading_byte_order_mark_is_dropped_and_nothing_else(
    project_dir: Path, tiny_corpus_dir: Path, tmp_path: Path
) -> None:
    val_en = tiny_corpus_dir / "val.en"
    original = val_en.read_bytes()
    val_en.write_bytes(b"\xef\xbb\xbf" + original)
    (tiny_corpus_dir / "val.de").write_bytes(  # a BOM inside a line is clean's job, not fetch's
        b"\xef\xbb\xbf"
        + (tiny_corpus_dir / "val.de").read_bytes().replace(b"\n", b"\xef\xbb\xbf\n", 1)
    )

    fetch_local(project_dir, "dir", tiny_corpus_dir)

    assert (project_dir / "data/raw/val.en").read_bytes() == original
    assert (
        (project_dir / "data/raw/val.de")
        .read_bytes()
        .startswith("Ein Hund läuft am Strand Nummer 10.\ufeff\n".encode())
    )


def test_a_tsv_byte_order_mark_does_not_reach_the_first_source(
    project_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "tsv"
    folder.mkdir()
    for split in SPLITS:
        (folder / f"{split}.tsv").write_bytes(b"\xef\xbb\xbfHello there.\tBonjour.\n")

    fetch_local(project_dir, "tsv", folder, tgt_lang="fr")

    assert (project_dir / "data/raw/train.en").read_bytes() == b"Hello there.\n"


# --- every data error: message text, and data/raw untouched ----------------------------------


def break_file(corpus: Path, name: str, content: bytes) -> Path:
    path = corpus / name
    path.write_bytes(content)
    return path


BAD_INPUTS = {
    "invalid utf-8": (
        "val.de",
        b"Ein Hund.\nGro\xdfe Katze.\n",
        "{path}: line 2: invalid UTF-8 at byte offset 13 (column 4): invalid continuation byte. "
        "Fix: re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`.",
    ),
    "binary file": (
        "train.en",
        b"ok\nPK\x03\x04\x00\x00",
        "{path}: line 2: NUL byte at byte offset 7 (column 5); this is a binary file, not "
        "UTF-8 text. Fix: use the plain-text corpus file (or its .gz when the source accepts "
        "one).",
    ),
    "empty file": (
        "test_2016_flickr.en",
        b"",
        "{path}: the file is empty (0 bytes); every split needs one sentence per line. "
        "Fix: point the source at the complete file.",
    ),
    "only a byte-order mark": (
        "val.de",
        b"\xef\xbb\xbf",
        "{path}: the file is empty (only a UTF-8 byte-order mark); every split needs one "
        "sentence per line. Fix: point the source at the complete file.",
    ),
    "invalid utf-8 after a byte-order mark": (
        "val.de",
        b"\xef\xbb\xbfGro\xdfe Katze.\n",
        "{path}: line 1: invalid UTF-8 at byte offset 6 (column 7): invalid continuation byte. "
        "Fix: re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`.",
    ),
    "corrupt gzip": (
        "val.en.gz",
        b"this is not gzip\n",
        "{path}: not a complete gzip file (Not a gzipped file (b'th')); it is truncated or "
        "corrupt. Fix: download or copy the file again.",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_file_is_named_and_raw_is_untouched(
    project_dir: Path, tiny_corpus_dir: Path, case: str
) -> None:
    name, content, template = BAD_INPUTS[case]
    if name.endswith(".gz"):
        (tiny_corpus_dir / name.removesuffix(".gz")).unlink()
    path = break_file(tiny_corpus_dir, name, content)
    raw_dir = project_dir / "data/raw"
    raw_dir.mkdir(parents=True)
    (raw_dir / "keep.en").write_bytes(b"old\n")

    with pytest.raises(DataError) as caught:
        fetch_local(project_dir, "dir", tiny_corpus_dir)

    assert str(caught.value) == template.format(path=path)
    assert raw_snapshot(raw_dir) == {"keep.en": b"old\n"}


def make_symlink_to_dev_zero(path: Path) -> str:
    path.symlink_to("/dev/zero")
    return " (a symlink to /dev/zero): a character device"


def make_fifo(path: Path) -> str:
    os.mkfifo(path)  # nobody ever writes to it: reading it would block forever
    return ": a FIFO (named pipe)"


def make_socket(path: Path) -> str:
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))  # the socket file stays after the socket is closed
    return ": a socket"


def make_directory(path: Path) -> str:
    path.mkdir()
    return ": a directory"


SPECIAL_FILES = {
    "symlink_to_dev_zero": make_symlink_to_dev_zero,
    "fifo": make_fifo,
    "socket": make_socket,
    "directory": make_directory,
}


@pytest.mark.parametrize("kind", sorted(SPECIAL_FILES))
def test_a_special_file_under_a_corpus_name_is_refused_by_name(
    project_dir: Path, tiny_corpus_dir: Path, kind: str
) -> None:
    path = tiny_corpus_dir / "val.de"
    path.unlink()
    what = SPECIAL_FILES[kind](path)
    raw_dir = project_dir / "data/raw"
    raw_dir.mkdir(parents=True)
    (raw_dir / "keep.en").write_bytes(b"old\n")

    with pytest.raises(DataError) as caught:
        fetch_local(project_dir, "dir", tiny_corpus_dir)

    assert str(caught.value) == (
        f"{path}{what}, not a regular file; corpus files must be regular files (a symlink must "
        "end at one). Fix: point data.path at the folder of the real corpus files."
    )
    assert raw_snapshot(raw_dir) == {"keep.en": b"old\n"}


def test_a_tsv_source_that_is_a_fifo_is_refused(project_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tsv"
    folder.mkdir()
    for split in SPLITS:
        (folder / f"{split}.tsv").write_bytes(b"a\tb\n")
    (folder / "val.tsv").unlink()
    os.mkfifo(folder / "val.tsv")

    with pytest.raises(DataError, match=r"val\.tsv: a FIFO \(named pipe\), not a regular file"):
        fetch_local(project_dir, "tsv", folder)


def gzip_bomb(decompressed_mb: int) -> bytes:
    """`decompressed_mb` MB of NUL bytes in ~1/1000 of that: gzip members of 10 MB each."""
    member = gzip.compress(bytes(10_000_000), compresslevel=9, mtime=0)
    return member * (decompressed_mb // 10)


def test_a_gzip_bomb_is_refused_once_it_passes_the_cap(
    project_dir: Path, tiny_corpus_dir: Path
) -> None:
    bomb = gzip_bomb(decompressed_mb=1000)  # 1 GB of NUL bytes in ~1 MB
    assert len(bomb) < 1_100_000
    (tiny_corpus_dir / "train.en").unlink()
    packed = break_file(tiny_corpus_dir, "train.en.gz", bomb)

    with pytest.raises(DataError) as caught:
        fetch_local(project_dir, "dir", tiny_corpus_dir, max_file_mb=2)

    assert str(caught.value).startswith(
        f"{packed}: larger than data.max_file_mb (2 MB) once decompressed; reading stopped after "
        "2000000 bytes."
    )
    assert not (project_dir / "data/raw").exists()


def test_a_plain_file_over_the_cap_is_refused(project_dir: Path, tiny_corpus_dir: Path) -> None:
    val_en = tiny_corpus_dir / "val.en"
    val_en.write_bytes(b"A dog runs on the beach.\n" * 50_000)  # 1.25 MB

    with pytest.raises(DataError) as caught:
        fetch_local(project_dir, "dir", tiny_corpus_dir, max_file_mb=1)

    assert str(caught.value).startswith(f"{val_en}: larger than data.max_file_mb (1 MB); ")
    assert str(caught.value).endswith(
        "Fix: check the file, or raise data.max_file_mb in params.yaml if the corpus really is "
        "that large."
    )


def test_sides_with_different_line_counts_name_both_counts(
    project_dir: Path, tiny_corpus_dir: Path
) -> None:
    val_de = tiny_corpus_dir / "val.de"
    val_de.write_bytes(b"".join(val_de.read_bytes().splitlines(keepends=True)[:8]))

    with pytest.raises(DataError) as caught:
        fetch_local(project_dir, "dir", tiny_corpus_dir)

    assert str(caught.value) == (
        f"split 'val': {tiny_corpus_dir}/val.en has 10 lines but {val_de} has 8; line i of "
        "both sides must be one sentence pair. Fix: supply aligned files with equal line "
        "counts."
    )
    assert not (project_dir / "data/raw").exists()


def test_missing_split_file_is_an_error(project_dir: Path, tiny_corpus_dir: Path) -> None:
    (tiny_corpus_dir / "test_2016_flickr.de").unlink()

    with pytest.raises(DataError) as caught:
        fetch_local(project_dir, "dir", tiny_corpus_dir)

    assert str(caught.value).startswith(
        f"{tiny_corpus_dir}/test_2016_flickr.de: missing (nor test_2016_flickr.de.gz); "
        "split 'test_2016_flickr' needs a 'de' side."
    )


def test_plain_and_gz_of_one_side_are_ambiguous(project_dir: Path, tiny_corpus_dir: Path) -> None:
    (tiny_corpus_dir / "val.en.gz").write_bytes(gz((tiny_corpus_dir / "val.en").read_bytes()))

    with pytest.raises(DataError, match=r"both val\.en and val\.en\.gz exist"):
        fetch_local(project_dir, "dir", tiny_corpus_dir)


def test_local_source_needs_a_folder(project_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.source is 'tsv' but data\.path is empty"):
        fetch(data_config(project_dir, source="tsv", path=""), project_dir, project_dir / "raw")
    with pytest.raises(DataError) as caught:
        fetch_local(project_dir, "dir", tmp_path / "nowhere")
    assert str(caught.value).startswith(f"{tmp_path}/nowhere: not a folder (params data.path)")


# --- through `mt` ----------------------------------------------------------------------------


def test_cli_fetch_fails_non_zero_and_keeps_raw(
    project_dir: Path, tiny_corpus_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    break_file(tiny_corpus_dir, "val.en", b"\xff\xfe\n")
    data_config(project_dir, source="dir", path=str(tiny_corpus_dir))
    raw_dir = project_dir / "data/raw"
    raw_dir.mkdir(parents=True)
    (raw_dir / "train.en").write_bytes(b"old\n")

    with caplog.at_level(logging.ERROR, logger="pipeline.cli"):
        assert cli.main(["fetch"]) == 2

    assert f"fetch failed: {tiny_corpus_dir}/val.en: line 1: invalid UTF-8" in caplog.text
    assert raw_snapshot(raw_dir) == {"train.en": b"old\n"}


def test_cli_fetch_from_dir_source(project_dir: Path, tiny_corpus_dir: Path) -> None:
    data_config(project_dir, source="dir", path=str(tiny_corpus_dir))

    assert cli.main(["fetch"]) == 0

    checksums = json.loads((project_dir / "data/raw/checksums.json").read_text("utf-8"))
    assert checksums["lines"]["train.de"] == 60
    assert sorted(p.name for p in (project_dir / "data/raw").iterdir()) == sorted(
        [f"{split}.{lang}" for split in SPLITS for lang in ("en", "de")] + ["checksums.json"]
    )
