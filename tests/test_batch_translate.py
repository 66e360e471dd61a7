"""`mt translate-batch` (pipeline/monitor/batch*.py) against a real SQLite registry.

The champion is the upper-casing stand-in pyfunc (tests/mlflow_server.py, limits: 50
characters a line, 4 rows and 120 units of work a request: beam x the decoder steps its rows
may take, one per character and a word mark for this stand-in), registered once for the
module; its translation of a line is the line in capitals, so every output is known exactly.
The project has a tiny tokenizer and corpus profile, so the drift check runs for real.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import cli
from pipeline.atomic import atomic_write_json
from pipeline.config import TokenizeConfig, _load_cached, load_config
from pipeline.errors import ConfigError, DataError
from pipeline.monitor.batch import run_request
from pipeline.monitor.batch_manifest import BatchKey
from pipeline.monitor.batch_model import translate_lines
from pipeline.monitor.batch_paths import BatchRoots, batch_roots
from pipeline.monitor.drift import check_incoming
from pipeline.monitor.profile import profile_corpus
from pipeline.orchestration.batch_request import batch_requests
from pipeline.paths import project_paths
from pipeline.pause_points import PAUSE_AT_ENV, PAUSE_DIR_ENV
from pipeline.tokenize import train_tokenizer_models
from tests.conftest import deep_merge, tiny_pairs, write_params
from tests.mlflow_server import reference_lines, register_standin, venv_environ

MODEL = "multi30k-en-de-lstm"
PARAMS = {
    "register": {"min_score": 20.0, "bootstrap_resamples": 200, "max_input_chars": 40},
    # min_drift_lines 3: the 3-line French batch is judged (the minimum's own rule and its
    # measured value are tests/test_drift.py's). max_batch_mb 0.01: 10,000 bytes a batch.
    "monitor": {"batch_size": 3, "min_drift_lines": 3, "max_batch_mb": 0.01},
}
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project whose @champion is the stand-in (version 1), with a corpus profile; a DAG
    request's roots are srv/incoming and srv/outgoing beside it."""
    root = tmp_path_factory.mktemp("batch") / "project"
    root.mkdir()
    srv = {name: root.parent / "srv" / name for name in ("incoming", "outgoing")}
    for folder in srv.values():
        folder.mkdir(parents=True)
    roots = {
        "input_root": str(srv["incoming"]),
        "output_root": str(srv["outgoing"]),
        "translated_asset": (srv["outgoing"] / "translated").as_uri(),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        for var in ("AIRFLOW_CTX_DAG_RUN_ID", "AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_TASK_ID"):
            patch.delenv(var, raising=False)
        patch.setenv("MT_PROJECT_DIR", str(root))
        patch.chdir(root)
        write_params(root, deep_merge(PARAMS, {"monitor": roots}))
        _load_cached.cache_clear()
        write_profile(root)
        references = reference_lines()
        assert register_standin(root, references, references).decision.outcome == "promoted"
        yield root
    _load_cached.cache_clear()


def write_profile(root: Path) -> None:
    """A tokenizer in models/tokenizer and the corpus profile of the tiny train sources."""
    pairs = tiny_pairs(60)
    config = TokenizeConfig("unigram", 120, True, 1.0, 16)
    model, _ = train_tokenizer_models([en for en, _ in pairs], [de for _, de in pairs], config, 1)
    paths = project_paths(root)
    paths.tokenizer_dir.mkdir(parents=True)
    for name in ("src.model", "tgt.model"):
        (paths.tokenizer_dir / name).write_bytes(model)
    profile = profile_corpus([en for en, _ in pairs], paths.tokenizer_dir, "en")
    atomic_write_json(paths.corpus_profile, profile)


def mt(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """`mt translate-batch ARGS` in this process: exit code, stdout, the error line (the
    command's log stays in `caplog`)."""
    caplog.clear()
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="pipeline"):
        code = cli.main(["translate-batch", *args])
    errors = [r.getMessage() for r in caplog.records if r.name == "pipeline.cli"]
    return code, capsys.readouterr().out, "\n".join(errors)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def manifest_of(output: Path) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(
        output.with_name(output.name + ".manifest.json").read_text("utf-8")
    )
    return payload


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# The training sources themselves: a batch that cannot drift from the corpus profile.
TRAIN_SOURCES = [en for en, _ in tiny_pairs(60)]


def without_drift(out: str) -> str:
    """The command's lines without their "; drift in ..." ends (tests/test_drift.py checks
    the statistics; here only that the batch was checked)."""
    return re.sub(r"; drift in [a-z_, ]+$", "", out, flags=re.MULTILINE)


# ---- a file --------------------------------------------------------------------------------


def test_a_file_is_translated_by_the_champion_with_a_manifest(
    project: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")  # progress as log lines, even on a terminal
    source = write_lines(tmp_path / "in" / "news.txt", TRAIN_SOURCES)
    output = tmp_path / "out" / "news.de.txt"
    code, out, error = mt(caplog, capsys, "--input", str(source), "--output", str(output))
    assert (code, error) == (0, "")
    assert out == f"{output}: translated: 60 lines from {source} by version 1\n"
    assert progress_lines(caplog) == [
        f"translating news.txt: request {done} of 20 ({done * 5}%)" for done in range(2, 21, 2)
    ]
    assert output.read_text("utf-8") == "".join(f"{line.upper()}\n" for line in TRAIN_SOURCES)
    manifest = manifest_of(output)
    started, finished = manifest.pop("started_at"), manifest.pop("finished_at")
    assert TIMESTAMP.fullmatch(started) and TIMESTAMP.fullmatch(finished) and started <= finished
    batch_id = f"news-{sha256(source)[:12]}"
    drift_report = project / "reports" / "monitoring" / "drift" / f"{batch_id}.json"
    assert json.loads(drift_report.read_text("utf-8"))["drifted"] == []
    assert manifest == {
        "input": str(source),
        "input_sha256": sha256(source),
        "output": str(output),
        "output_sha256": sha256(output),
        "line_count": 60,
        "model_name": MODEL,
        "model_version": "1",
        "model_run_id": manifest["model_run_id"],
        "model_uri": f"models:/{MODEL}@champion",
        "decoding": {"beam_size": 1},
        "batch_size": 3,
        "requests": 20,  # monitor.batch_size 3 (the model would take 4 rows a request)
        "reused_from": None,
        "drift": {"batch_id": batch_id, "drifted": [], "report": str(drift_report)},
    }
    assert re.fullmatch(r"[0-9a-f]{32}", manifest["model_run_id"])
    key = BatchKey(sha256(source), MODEL, "1", {"beam_size": 1})
    record = project / "reports" / "monitoring" / "batches" / f"{key.digest}.json"
    assert json.loads(record.read_text("utf-8")) == manifest_of(output)


def test_the_same_input_and_champion_is_not_translated_twice(
    project: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = write_lines(tmp_path / "again.txt", ["The man rides.", "A girl eats."])
    output = tmp_path / "out" / "again.txt"
    assert mt(caplog, capsys, "--input", str(source), "--output", str(output))[0] == 0
    manifest_bytes = output.with_name("again.txt.manifest.json").read_bytes()
    written_at = output.stat().st_mtime_ns

    code, out, _ = mt(caplog, capsys, "--input", str(source), "--output", str(output))
    assert code == 0
    assert (
        without_drift(out)
        == f"{output}: up to date, nothing translated: 2 lines from {source} by version 1\n"
    )
    assert output.stat().st_mtime_ns == written_at
    assert output.with_name("again.txt.manifest.json").read_bytes() == manifest_bytes

    elsewhere = tmp_path / "elsewhere" / "again.txt"
    code, out, _ = mt(caplog, capsys, "--input", str(source), "--output", str(elsewhere))
    assert (
        without_drift(out)
        == f"{elsewhere}: copied (same translation exists): 2 lines from {source} by version 1\n"
    )
    assert elsewhere.read_text("utf-8") == "THE MAN RIDES.\nA GIRL EATS.\n"
    assert manifest_of(elsewhere)["reused_from"] == str(output)
    assert manifest_of(elsewhere)["requests"] == 0

    code, out, _ = mt(
        caplog, capsys, "--input", str(source), "--output", str(output), "--beam-size", "2"
    )
    assert without_drift(out) == f"{output}: translated: 2 lines from {source} by version 1\n"
    assert manifest_of(output)["decoding"] == {"beam_size": 2}


def test_an_edited_output_is_translated_again(
    project: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = write_lines(tmp_path / "edited.txt", ["People walk."])
    output = tmp_path / "edited.de.txt"
    assert mt(caplog, capsys, "--input", str(source), "--output", str(output))[0] == 0
    output.write_text("PEOPLE WALK.\nsomething appended\n", encoding="utf-8")
    code, out, _ = mt(caplog, capsys, "--input", str(source), "--output", str(output))
    assert code == 0
    assert without_drift(out) == f"{output}: translated: 1 lines from {source} by version 1\n"
    assert output.read_text("utf-8") == "PEOPLE WALK.\n"


def test_a_batch_unlike_the_training_corpus_is_translated_and_its_drift_recorded(
    project: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    french = ["Un chien court sur la plage.", "Deux hommes jouent au football.", "Une femme lit."]
    source = write_lines(tmp_path / "french.txt", french)
    output = tmp_path / "french.de.txt"
    code, out, _ = mt(caplog, capsys, "--input", str(source), "--output", str(output))
    drift = manifest_of(output)["drift"]
    report = json.loads(Path(drift["report"]).read_text("utf-8"))
    assert code == 0 and "language_share" in drift["drifted"]
    assert drift["drifted"] == report["drifted"]
    assert drift["batch_id"] == report["batch_id"] == f"french-{sha256(source)[:12]}"
    assert out == (
        f"{output}: translated: 3 lines from {source} by version 1; drift in "
        f"{', '.join(drift['drifted'])}\n"
    )
    assert output.read_text("utf-8") == "".join(f"{line.upper()}\n" for line in french)


# ---- a folder ------------------------------------------------------------------------------


def test_a_folder_translates_each_txt_file_into_the_output_folder(
    project: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "incoming"
    write_lines(folder / "b.txt", ["A band plays."])
    write_lines(folder / "a.txt", ["A woman reads.", "A child jumps."])
    write_lines(folder / "notes.md", ["not a batch"])
    output = tmp_path / "translated"
    code, out, _ = mt(caplog, capsys, "--input", str(folder), "--output", str(output))
    assert code == 0
    assert without_drift(out).splitlines() == [
        f"{output / 'a.txt'}: translated: 2 lines from {folder / 'a.txt'} by version 1",
        f"{output / 'b.txt'}: translated: 1 lines from {folder / 'b.txt'} by version 1",
    ]
    assert sorted(path.name for path in output.iterdir()) == [
        "a.txt", "a.txt.manifest.json", "b.txt", "b.txt.manifest.json",
    ]  # fmt: skip
    assert (output / "a.txt").read_text("utf-8") == "A WOMAN READS.\nA CHILD JUMPS.\n"
    assert manifest_of(output / "b.txt")["input"] == str(folder / "b.txt")


# ---- bad input -----------------------------------------------------------------------------


def bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (input, the one error line expected)."""
    folder.mkdir(parents=True)
    latin1 = folder / "latin1.txt"
    latin1.write_bytes("A dog.\nSch\u00f6n.\n".encode("latin-1"))
    empty = folder / "empty.txt"
    empty.write_bytes(b"")
    blank = write_lines(folder / "blank.txt", ["", "  "])
    long = write_lines(folder / "long.txt", ["Short.", "Also short.", "x" * 41])
    wide = write_lines(folder / "mixed" / "a.txt", ["Fine."])
    write_lines(folder / "mixed" / "b.txt", ["Fine too.", "y" * 41])
    fix = "convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8`"
    too_long = "characters, over the serving limit register.max_input_chars=40; split that line"
    return {
        "not_utf8": (
            latin1,
            f"{latin1}: line 2: invalid UTF-8 at byte offset 10 (column 4): invalid start "
            f"byte. Fix: {fix}.",
        ),
        "empty": (
            empty,
            f"{empty}: empty (no text to translate); give a file with one sentence per line",
        ),
        "blank_lines_only": (
            blank,
            f"{blank}: empty (no text to translate); give a file with one sentence per line",
        ),
        "line_too_long": (long, f"{long}: line 3: 41 {too_long} into sentences"),
        "one_bad_file_in_a_folder": (
            wide.parent,
            f"{wide.parent / 'b.txt'}: line 2: 41 {too_long} into sentences",
        ),
    }


@pytest.mark.parametrize(
    "case", ["not_utf8", "empty", "blank_lines_only", "line_too_long", "one_bad_file_in_a_folder"]
)
def test_bad_input_fails_with_the_line_and_leaves_nothing(
    project: Path,
    tmp_path: Path,
    case: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, message = bad_inputs(tmp_path / "bad")[case]
    output = tmp_path / "out" / ("folder" if source.is_dir() else "out.txt")
    records = project_paths(project).batch_manifests_dir
    before = sorted(records.iterdir()) if records.is_dir() else []
    code, out, error = mt(caplog, capsys, "--input", str(source), "--output", str(output))
    assert (code, out, error) == (2, "", f"translate-batch failed: {message}")
    assert not (tmp_path / "out").exists()
    assert (sorted(records.iterdir()) if records.is_dir() else []) == before


def test_a_line_over_the_models_own_request_limit_is_refused_before_any_output(
    project: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 30 characters pass register.max_input_chars=40, but at beam 5 their 31 decoder steps are
    # 155 units of work, over the stand-in's max_request_work=120.
    write_lines(tmp_path / "first.txt", ["Fine."])
    write_lines(tmp_path / "second.txt", ["z" * 30])
    code, _, error = mt(
        caplog,
        capsys,
        "--input",
        str(tmp_path),
        "--output",
        str(tmp_path / "out"),
        "--beam-size",
        "5",
    )
    assert (code, error) == (
        2,
        f"translate-batch failed: {tmp_path / 'second.txt'}: line 1: 30 characters may take 31 "
        "decoder steps: 155 units of work at beam 5, over this model's max_request_work=120; "
        "split that line or use a smaller beam",
    )
    assert not (tmp_path / "out").exists()


def test_bad_arguments_are_refused_in_one_line(
    project: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = write_lines(tmp_path / "in.txt", ["Fine."])
    cases = {
        ("--output", str(source)): f"--output {source}: the same file as --input; the "
        "translation would overwrite the source text, give another file",
        ("--output", str(tmp_path / "o.txt"), "--beam-size", "0"): "--beam-size 0: outside the "
        "allowed range [1, 64] of params.yaml `decode.beam_size`",
        ("--output", str(tmp_path / "o.txt"), "--model", "runs:/abc/model"): "--model "
        "runs:/abc/model: batch translation records the registered version it used; give "
        "models:/<name>@<alias> or models:/<name>/<version>",
        ("--output", str(tmp_path / "o.txt"), "--model", f"models:/{MODEL}@nobody"): f"--model "
        f"models:/{MODEL}@nobody: {MODEL} has no @nobody; register and promote a version first "
        "(`mt registry list` shows the versions)",
    }
    for args, message in cases.items():
        assert mt(caplog, capsys, "--input", str(source), *args) == (
            2,
            "",
            f"translate-batch failed: {message}",
        )
    assert not (tmp_path / "o.txt").exists()


CAP = "monitor.max_batch_mb = 0.01 (10000 bytes)"
RAISE_CAP = "or raise monitor.max_batch_mb in params.yaml"


def test_a_batch_over_max_batch_mb_is_refused_before_it_is_read(
    project: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Issue 25 §3: an input was read whole, whatever its size. Each line is 25 bytes.
    big = write_lines(tmp_path / "big.txt", ["A dog runs on the beach."] * 401)
    folder = tmp_path / "folder"
    write_lines(folder / "a.txt", ["A dog runs on the beach."] * 200)
    write_lines(folder / "b.txt", ["A dog runs on the beach."] * 201)
    out = tmp_path / "out"
    cases = {
        (big, out / "big.txt"): f"{big}: larger than {CAP}; split it into smaller files, "
        f"{RAISE_CAP}",
        (folder, out): f"{folder}: its *.txt files hold more than {CAP} together (passed at "
        f"b.txt); translate them in smaller batches, {RAISE_CAP}",
    }
    for (source, output), message in cases.items():
        assert mt(caplog, capsys, "--input", str(source), "--output", str(output)) == (
            2,
            "",
            f"translate-batch failed: {message}",
        )
    assert not out.exists()


def test_the_manifest_records_the_bytes_written_not_a_later_edit(
    project: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Issue 25 §9: the manifest hashed the output by reading it back after the rename, so an
    # edit landing in between was recorded as the translation and reruns kept the edit.
    source = write_lines(tmp_path / "raced.txt", ["A cat sleeps."])
    output = tmp_path / "out" / "raced.txt"
    args = ("--input", str(source), "--output", str(output))
    rename = os.replace

    def rename_then_edit(src: Any, dst: Any) -> None:
        rename(src, dst)
        if Path(dst) == output:  # another writer appends the moment the output lands
            with output.open("a", encoding="utf-8") as handle:
                handle.write("edited by another writer\n")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", rename_then_edit)
        assert mt(caplog, capsys, *args)[0] == 0
    assert manifest_of(output)["output_sha256"] == hashlib.sha256(b"A CAT SLEEPS.\n").hexdigest()
    code, out, _ = mt(caplog, capsys, *args)
    assert code == 0
    assert without_drift(out) == f"{output}: translated: 1 lines from {source} by version 1\n"
    assert output.read_text("utf-8") == "A CAT SLEEPS.\n"


# ---- progress ------------------------------------------------------------------------------


def progress_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pipeline.progress"]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class UpperCasing:
    """The stand-in's translation without MLflow: each text in capitals."""

    def predict(self, frame: Any, params: dict[str, Any]) -> dict[str, list[str]]:
        return {"translation": [text.upper() for text in frame["text"]]}


def test_requests_off_a_terminal_log_a_line_per_tenth_and_on_one_draw_a_bar(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lines = ["a dog.", "a cat.", "a bird.", "a fish.", "a cow."]
    spans = [(0, 2), (2, 4), (4, 5)]
    monkeypatch.delenv("CI", raising=False)
    stderr = io.StringIO()  # a log file: no terminal
    monkeypatch.setattr("sys.stderr", stderr)
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        translated = translate_lines(UpperCasing(), lines, spans, 1, "translating in.txt")
        assert translate_lines(UpperCasing(), lines, spans, 1) == translated  # no progress
    assert translated == [line.upper() for line in lines]
    assert progress_lines(caplog) == [
        "translating in.txt: request 1 of 3 (33%)",
        "translating in.txt: request 2 of 3 (66%)",
        "translating in.txt: request 3 of 3 (100%)",
    ]
    assert stderr.getvalue() == ""

    caplog.clear()
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        translate_lines(UpperCasing(), lines, spans, 1, "translating in.txt")
    assert progress_lines(caplog) == []
    assert "\r" in terminal.getvalue() and "translating in.txt: 100%" in terminal.getvalue()


# ---- killed runs ---------------------------------------------------------------------------


def run_until_paused(
    project: Path, point: str, pause_dir: Path, *args: str
) -> subprocess.Popen[bytes]:
    """`mt translate-batch ARGS` in its own process, held at pause point `point`."""
    env = {
        **venv_environ(),
        PAUSE_AT_ENV: point,
        PAUSE_DIR_ENV: str(pause_dir),
        "MT_PROJECT_DIR": str(project),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "translate-batch", *args],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (pause_dir / f"{point}.paused").exists():
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, f"never reached {point}"
        time.sleep(0.05)
    return process


def test_a_run_killed_mid_batch_leaves_no_output_and_the_rerun_completes_it(
    project: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = ["One.", "Two.", "Three.", "Four."]
    source = write_lines(tmp_path / "killed.txt", lines)
    output = tmp_path / "out" / "killed.txt"
    args = ("--input", str(source), "--output", str(output))
    # Checked here first, so the killed process reuses the result (and skips GX's start-up).
    check_incoming(lines, f"killed-{sha256(source)[:12]}", project_paths(project), load_config())
    process = run_until_paused(project, "batch.request_translated", tmp_path, *args)
    os.kill(process.pid, signal.SIGKILL)  # after the first request of 3 lines, before any write
    process.wait(timeout=30)
    assert not output.parent.exists() or list(output.parent.iterdir()) == []

    code, out, _ = mt(caplog, capsys, *args)
    assert code == 0
    assert without_drift(out) == f"{output}: translated: 4 lines from {source} by version 1\n"
    assert output.read_text("utf-8") == "ONE.\nTWO.\nTHREE.\nFOUR.\n"
    assert sorted(path.name for path in output.parent.iterdir()) == [
        "killed.txt",
        "killed.txt.manifest.json",
    ]


# ---- what a DAG run translates (pipeline/orchestration/batch_request.py) ------------------


@pytest.fixture
def srv(tmp_path: Path) -> Path:
    """incoming/ (the input root), outgoing/ (the output root) and a project/ side by side."""
    for name in ("incoming", "outgoing", "project"):
        (tmp_path / "srv" / name).mkdir(parents=True)
    return tmp_path / "srv"


def roots_of(srv: Path) -> BatchRoots:
    return BatchRoots(srv / "incoming", srv / "outgoing", srv / "project")


def translated(srv: Path) -> str:
    return (srv / "outgoing" / "translated").as_uri()


def test_a_form_run_translates_what_its_form_names(srv: Path) -> None:
    write_lines(srv / "incoming" / "a.txt", ["Fine."])
    form = {"input_path": "a.txt", "output_path": "de/out.txt", "beam_size": 3}  # under roots
    assert batch_requests(form, [], roots_of(srv), translated(srv)) == [
        {
            "input_path": str(srv / "incoming" / "a.txt"),
            "output_path": str(srv / "outgoing" / "de" / "out.txt"),
            "beam_size": 3,
        }
    ]


def test_an_event_run_translates_one_batch_per_event_into_the_translated_asset(
    srv: Path,
) -> None:
    one = write_lines(srv / "incoming" / "one.txt", ["Fine."])
    folder = write_lines(srv / "incoming" / "folder" / "a.txt", ["Fine."]).parent
    extras: list[dict[str, Any]] = [
        {"input_path": str(one), "from_rest_api": True},
        {"input_path": str(folder), "beam_size": 2},
        {"input_path": "one.txt"},  # the same batch twice: translated once
    ]
    assert batch_requests(
        {"input_path": None, "output_path": None, "beam_size": None},
        extras,
        roots_of(srv),
        translated(srv),
    ) == [
        {
            "input_path": str(one),
            "output_path": str(srv / "outgoing" / "translated" / "one.txt"),
            "beam_size": None,
        },
        {
            "input_path": str(folder),
            "output_path": str(srv / "outgoing" / "translated" / "folder"),
            "beam_size": 2,
        },
    ]


@pytest.mark.parametrize(
    ("form", "extras", "asset", "message"),
    [
        (
            {},
            [],
            "",
            "translate_batch: nothing to translate; set `input_path` in the Trigger form, or emit "
            'an event on monitor.incoming_asset with extra {"input_path": "<file or folder>"}',
        ),
        (
            {},
            [{"input_path": "a.txt"}, {"path": "b.txt"}],
            "",
            "asset event 2's extra has no `input_path`; name the file or folder to translate, "
            'e.g. {"input_path": "/srv/mt/incoming/to-translate/batch-01.txt"}',
        ),
        (
            {},
            [{"input_path": "a.txt", "beam_size": 65}],
            "",
            "asset event 1's extra `beam_size` is 65: 65 is greater than the maximum of 64 "
            "(the form's rule)",
        ),
        (
            {"input_path": ""},
            [{"input_path": 7}],
            "",
            "asset event 1's extra `input_path` is 7: 7 is not of type 'null', 'string' "
            "(the form's rule)",
        ),
        (
            {"input_path": "a.txt"},
            [],
            "s3://bucket/out",
            "monitor.translated_asset is 's3://bucket/out', not a local file:// URI, so there is "
            "no default output folder; set `output_path` in the form or the event's extra",
        ),
    ],
    ids=[
        "no_input",
        "event_without_input",
        "beam_too_wide",
        "input_not_text",
        "no_default_output",
    ],
)
def test_bad_requests_fail_the_planning_task_in_one_line(
    srv: Path, form: dict[str, Any], extras: list[dict[str, Any]], asset: str, message: str
) -> None:
    write_lines(srv / "incoming" / "a.txt", ["Fine."])
    with pytest.raises(ConfigError) as error:
        batch_requests(form, extras, roots_of(srv), asset or translated(srv))
    assert str(error.value) == message


def outside(what: str, path: Path | str, root: Path, key: str) -> str:
    return (
        f"{what} {path}: outside {key} ({root}); put the file under it, or change {key} in "
        "params.yaml"
    )


def symlinked(what: str, path: Path, link: Path, root: Path, key: str) -> str:
    return (
        f"{what} {path}: {link} is a symlink; give a path with no symlink, inside {key} ({root})"
    )


def in_project(what: str, path: Path, project: Path, key: str) -> str:
    return (
        f"{what} {path}: inside the project checkout ({project}); a request may not read or "
        f"write the project's files, use a path under {key} outside it"
    )


def confinement_cases(srv: Path) -> dict[str, tuple[dict[str, Any], BatchRoots, str, str]]:
    """name -> (the form, the roots, monitor.translated_asset, the one error line)."""
    incoming, outgoing, project = srv / "incoming", srv / "outgoing", srv / "project"
    roots = roots_of(srv)
    shared = BatchRoots(srv, srv, project)  # one folder for both roots, the project inside it
    write_lines(incoming / "a.txt", ["Fine."])
    private = write_lines(project / ".dvc" / "config.local", ["['remote \"store\"']"])
    secret = write_lines(srv / "secret.txt", ["password"])
    (incoming / "link.txt").symlink_to(secret)
    (incoming / "linked").symlink_to(srv)
    (outgoing / "linked").symlink_to(project)
    key_in, key_out = "monitor.input_root", "monitor.output_root"
    asset = translated(srv)
    climbing = incoming / "../project/.dvc/config.local"
    return {
        "input_elsewhere": (
            {"input_path": "/etc/passwd"},
            roots,
            asset,
            outside("input", "/etc/passwd", incoming, key_in),
        ),
        "input_climbing_out": (
            {"input_path": "../project/.dvc/config.local"},
            roots,
            asset,
            outside("input", climbing, incoming, key_in),
        ),
        "input_in_the_project": (
            {"input_path": str(private)},
            shared,
            asset,
            in_project("input", private, project, key_in),
        ),
        "input_a_symlink": (
            {"input_path": "link.txt"},
            roots,
            asset,
            symlinked("input", incoming / "link.txt", incoming / "link.txt", incoming, key_in),
        ),
        "input_under_a_linked_folder": (
            {"input_path": "linked/secret.txt"},
            roots,
            asset,
            symlinked(
                "input", incoming / "linked/secret.txt", incoming / "linked", incoming, key_in
            ),
        ),
        "input_missing": (
            {"input_path": "missing.txt"},
            roots,
            asset,
            f"input {incoming / 'missing.txt'}: not found; give a text file or a folder",
        ),
        "output_elsewhere": (
            {"input_path": "a.txt", "output_path": str(project / "params.yaml")},
            roots,
            asset,
            outside("output", project / "params.yaml", outgoing, key_out),
        ),
        "output_in_the_project": (
            {"input_path": str(incoming / "a.txt"), "output_path": str(project / "dvc.lock")},
            shared,
            asset,
            in_project("output", project / "dvc.lock", project, key_out),
        ),
        "output_under_a_linked_folder": (
            {"input_path": "a.txt", "output_path": "linked/dvc.lock"},
            roots,
            asset,
            symlinked(
                "output", outgoing / "linked/dvc.lock", outgoing / "linked", outgoing, key_out
            ),
        ),
        "default_output_outside": (
            {"input_path": "a.txt"},
            roots,
            (srv / "elsewhere").as_uri(),
            outside("output", srv / "elsewhere" / "a.txt", outgoing, key_out),
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "input_elsewhere",
        "input_climbing_out",
        "input_in_the_project",
        "input_a_symlink",
        "input_under_a_linked_folder",
        "input_missing",
        "output_elsewhere",
        "output_in_the_project",
        "output_under_a_linked_folder",
        "default_output_outside",
    ],
)
def test_a_request_outside_its_roots_fails_the_planning_task_in_one_line(
    srv: Path, case: str
) -> None:
    # Issue 25 §3: a form or an asset event could read /etc/passwd or .dvc/config.local and
    # overwrite params.yaml, dvc.lock or a DAG file.
    form, roots, asset, message = confinement_cases(srv)[case]
    with pytest.raises(ConfigError) as error:
        batch_requests(form, [], roots, asset)
    assert str(error.value) == message


def test_the_roots_come_from_params_yaml_and_must_exist(tmp_path: Path) -> None:
    project, incoming, translated_dir = tmp_path / "p", tmp_path / "in", tmp_path / "out"
    for folder in (project, incoming, translated_dir):
        folder.mkdir()
    asset = {"translated_asset": translated_dir.as_uri()}

    def roots(orchestration: dict[str, Any], monitor: dict[str, Any]) -> BatchRoots:
        write_params(project, {"orchestration": orchestration, "monitor": monitor})
        _load_cached.cache_clear()
        return batch_roots(load_config(project / "params.yaml"), project)

    # Empty roots: orchestration.data_root, and the folder of monitor.translated_asset.
    assert roots({"data_root": str(incoming)}, asset) == BatchRoots(
        incoming, translated_dir, project
    )
    # The output root is made when missing, like any output folder; the input root is not.
    made = tmp_path / "made" / "here"
    held = {"translated_asset": (made / "translated").as_uri(), "output_root": str(made)}
    assert roots({"data_root": str(incoming)}, held).outputs == made
    assert made.is_dir()
    # An output root that does not hold the translated asset's folder: event runs, which write
    # there, would all fail, so params.yaml is refused when it is read.
    with pytest.raises(ConfigError) as error:
        roots({"data_root": str(incoming)}, {**asset, "output_root": str(made)})
    assert str(error.value) == (
        f"{project / 'params.yaml'}: `monitor.output_root` is {str(made)!r}, which does not hold "
        f"{translated_dir}, the folder of monitor.translated_asset where an asset-event run "
        "writes its outputs; make one hold the other"
    )
    missing, a_file = tmp_path / "missing", write_lines(tmp_path / "a-file", ["not a folder"])
    bad = {
        (str(missing), ""): f"monitor.input_root {missing}: not a folder on this worker; create "
        "it, or set monitor.input_root in params.yaml",
        ("", str(a_file)): f"monitor.output_root {a_file}: not a folder on this worker; "
        "create it, or set monitor.output_root in params.yaml",
    }
    for (input_root, output_root), message in bad.items():
        monitor = {"input_root": input_root, "output_root": output_root}
        if output_root:  # an output root that holds the translated asset's folder
            monitor["translated_asset"] = (Path(output_root) / "translated").as_uri()
        with pytest.raises(ConfigError) as error:
            roots({"data_root": str(incoming)}, {**asset, **monitor})
        assert str(error.value) == message
    with pytest.raises(ConfigError) as error:
        roots({"data_root": str(incoming)}, {"translated_asset": "s3://bucket/out"})
    assert str(error.value) == (
        "monitor.output_root is empty and monitor.translated_asset 's3://bucket/out' is not a "
        "local file:// URI, so there is no output root; set monitor.output_root"
    )


def test_the_translate_task_confines_its_request_again(project: Path) -> None:
    # The request reaches `translate` through XCom, which any task can write: run_request
    # checks it against params.yaml's roots itself, and opens no symlink in a folder input.
    srv = project.parent / "srv"
    incoming, outgoing = srv / "incoming", srv / "outgoing"
    forged = {
        "input_path": str(project / "params.yaml"),
        "output_path": str(outgoing / "params.txt"),
        "beam_size": None,
    }
    with pytest.raises(ConfigError) as error:
        run_request(project, forged)
    assert str(error.value) == outside(
        "input", project / "params.yaml", incoming, "monitor.input_root"
    )
    folder = write_lines(incoming / "mixed" / "a.txt", ["Fine."]).parent
    (folder / "b.txt").symlink_to(project / "params.yaml")
    request = {
        "input_path": str(folder),
        "output_path": str(outgoing / "mixed"),
        "beam_size": None,
    }
    with pytest.raises(DataError) as data_error:
        run_request(project, request)
    assert str(data_error.value) == (
        f"{folder / 'b.txt'}: a symlink; a request's input must be the file itself, inside "
        "monitor.input_root"
    )
    (folder / "b.txt").unlink()
    extra = run_request(project, request)
    assert [item["action"] for item in extra["files"]] == ["translated"]
    assert (outgoing / "mixed" / "a.txt").read_text("utf-8") == "FINE.\n"
