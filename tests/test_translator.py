"""Translator and `mt translate` on a tiny model that memorised 20 pairs (tiny_translator)."""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import cli
from pipeline.model.decoding import DecodingSettings
from pipeline.progress import with_progress
from pipeline.translator import Translator, pad_batch, read_input_lines
from tests.conftest import REPO_ROOT
from tests.tiny_translator import MEMORISED_PAIRS, memorised_model_dir

TRAIN_PAIRS = MEMORISED_PAIRS


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return memorised_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def translator(model_dir: Path) -> Translator:
    settings = DecodingSettings(beam_size=1, batch_size=8)
    return Translator.load(model_dir / "seq2seq.keras", model_dir / "tokenizer", settings)


@pytest.mark.slow
def test_overfit_model_translates_its_training_pairs_exactly_with_greedy_search(
    translator: Translator,
) -> None:
    outputs = translator.translate([source for source, _ in TRAIN_PAIRS])
    assert outputs == [target for _, target in TRAIN_PAIRS]


@pytest.mark.slow
def test_overfit_model_translates_its_training_pairs_exactly_with_beam_search(
    translator: Translator,
) -> None:
    beam = translator.with_settings(DecodingSettings(beam_size=4, batch_size=8))
    outputs = beam.translate([source for source, _ in TRAIN_PAIRS])
    assert outputs == [target for _, target in TRAIN_PAIRS]


@pytest.mark.slow
def test_raw_input_is_normalised_like_the_clean_stage(translator: Translator) -> None:
    messy = "  A dog runs\u00a0on the   beach number 0.\t"
    assert translator.translate([messy]) == ["Ein Hund läuft am Strand Nummer 0."]


@pytest.mark.slow
def test_empty_and_blank_lines_stay_empty_in_place(translator: Translator) -> None:
    texts = ["", TRAIN_PAIRS[0][0], "   ", TRAIN_PAIRS[1][0], ""]
    assert translator.translate(texts) == ["", TRAIN_PAIRS[0][1], "", TRAIN_PAIRS[1][1], ""]
    assert translator.translate([]) == []


@pytest.mark.slow
def test_length_sorted_batches_keep_input_order(translator: Translator) -> None:
    texts = [source for source, _ in reversed(TRAIN_PAIRS)]
    one_by_one = translator.with_settings(DecodingSettings(beam_size=1, batch_size=1))
    assert one_by_one.translate(texts[:6]) == [target for _, target in reversed(TRAIN_PAIRS)][:6]
    assert translator.translate(texts) == [target for _, target in reversed(TRAIN_PAIRS)]


@pytest.mark.slow
def test_over_long_input_is_truncated_with_a_warning(
    translator: Translator, caplog: pytest.LogCaptureFixture
) -> None:
    short = translator.with_settings(DecodingSettings(beam_size=1, max_source_length=5))
    long_text = " ".join(source for source, _ in TRAIN_PAIRS)
    with caplog.at_level(logging.WARNING, logger="pipeline.translator"):
        encoded = short.encode_sources(["A dog.", long_text])
        outputs = short.translate([long_text])
    assert len(encoded[1]) == 5
    assert encoded[0] == translator.tokenizers.src.encode("A dog.")
    assert len(outputs) == 1 and isinstance(outputs[0], str)
    assert "input line 2 has" in caplog.text
    assert "translating only the first 5" in caplog.text


@pytest.mark.slow
def test_translate_with_attention_has_one_row_per_output_piece_plus_eos(
    translator: Translator,
) -> None:
    [translation] = translator.translate_with_attention([TRAIN_PAIRS[2][0]])
    assert translation.text == TRAIN_PAIRS[2][1]
    assert translation.source == TRAIN_PAIRS[2][0]
    assert translation.target_pieces == translator.tokenizers.tgt.encode(
        TRAIN_PAIRS[2][1], out_type=str
    )
    rows, columns = len(translation.target_pieces) + 1, len(translation.source_pieces)
    assert translation.attention.shape == (rows, columns)
    np.testing.assert_allclose(translation.attention.sum(axis=1), np.ones(rows), atol=1e-5)


def test_pad_batch_right_pads_with_pad_id() -> None:
    batch = pad_batch([[5, 6, 7], [8]])
    assert batch.dtype == np.int32
    assert batch.tolist() == [[5, 6, 7], [8, 0, 0]]


def test_read_input_lines_splits_on_newline_only() -> None:
    assert read_input_lines(io.StringIO("a\u2028b\n\nc\n")) == ["a\u2028b", "", "c"]
    assert read_input_lines(io.StringIO("")) == []


def test_load_without_a_model_file_names_it(tmp_path: Path) -> None:
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match=r"seq2seq\.keras: model file not found"):
        Translator.load(tmp_path / "seq2seq.keras", tmp_path / "tokenizer")


# --------------------------------------------------------------------- progress on stderr


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def progress_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What `mt translate` tells a log: its progress lines and its own summary."""
    loggers = ("pipeline.progress", "pipeline.translator")
    return [r.getMessage() for r in caplog.records if r.name in loggers]


def test_progress_off_a_terminal_is_one_log_line_per_tenth_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CI", raising=False)
    stderr = io.StringIO()  # a log file: no terminal
    monkeypatch.setattr("sys.stderr", stderr)
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        assert list(with_progress(range(25), "translating", "batch")) == list(range(25))
        assert list(with_progress(["a", "b", "c"], "translating", "request")) == ["a", "b", "c"]
    assert progress_lines(caplog) == [
        "translating: batch 3 of 25 (12%)",
        "translating: batch 5 of 25 (20%)",
        "translating: batch 8 of 25 (32%)",
        "translating: batch 10 of 25 (40%)",
        "translating: batch 13 of 25 (52%)",
        "translating: batch 15 of 25 (60%)",
        "translating: batch 18 of 25 (72%)",
        "translating: batch 20 of 25 (80%)",
        "translating: batch 23 of 25 (92%)",
        "translating: batch 25 of 25 (100%)",
        "translating: request 1 of 3 (33%)",
        "translating: request 2 of 3 (66%)",
        "translating: request 3 of 3 (100%)",
    ]
    assert stderr.getvalue() == ""  # no bar frames


def test_progress_on_a_terminal_is_a_tqdm_bar_and_under_ci_plain_lines(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CI", raising=False)
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        assert list(with_progress(range(4), "translating", "batch")) == list(range(4))
        assert progress_lines(caplog) == []
        assert "\r" in terminal.getvalue() and "translating: 100%" in terminal.getvalue()
        assert "4/4" in terminal.getvalue()

        monkeypatch.setenv("CI", "true")
        before = terminal.getvalue()
        assert list(with_progress(range(2), "translating", "batch")) == [0, 1]
    assert terminal.getvalue() == before
    assert progress_lines(caplog) == [
        "translating: batch 1 of 2 (50%)",
        "translating: batch 2 of 2 (100%)",
    ]


class UpperCasing:
    """A stand-in pyfunc: each text in capitals."""

    def predict(self, frame: Any, params: Any = None) -> dict[str, list[str]]:
        return {"translation": [text.upper() for text in frame["text"]]}


def test_mt_translate_off_a_terminal_logs_its_requests_by_the_tenth(
    project_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr("pipeline.translator.load_mlflow_model", lambda uri: UpperCasing())
    (project_dir / "in.txt").write_text("a dog.\na cat.\n\na bird.\na fish.\n", encoding="utf-8")
    args = ["--model", "models:/stand-in@champion", "--input", "in.txt", "--batch-size", "2"]
    assert cli.main(["translate", *args]) == 0
    assert capsys.readouterr().out == "A DOG.\nA CAT.\n\nA BIRD.\nA FISH.\n"
    assert progress_lines(caplog) == [
        "translating: request 1 of 3 (33%)",
        "translating: request 2 of 3 (66%)",
        "translating: request 3 of 3 (100%)",
        "translated 5 lines",
    ]


# --------------------------------------------------------------------------- mt translate


@pytest.mark.slow
def test_mt_translate_reads_stdin_and_writes_one_line_per_input_line(
    model_dir: Path,
    project_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stdin = f"{TRAIN_PAIRS[3][0]}\n\n{TRAIN_PAIRS[4][0]}\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = cli.main(["translate", "--model", str(model_dir), "--beam", "2"])
    assert code == 0
    assert capsys.readouterr().out == f"{TRAIN_PAIRS[3][1]}\n\n{TRAIN_PAIRS[4][1]}\n"


@pytest.mark.slow
def test_mt_translate_uses_the_project_models_by_default_and_writes_output_file(
    model_dir: Path,
    project_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CI", "true")
    shutil.copytree(model_dir, project_dir / "models")
    (project_dir / "in.txt").write_text(f"{TRAIN_PAIRS[5][0]}\n", encoding="utf-8")
    code = cli.main(["translate", "--input", "in.txt", "--output", "out.txt", "--batch-size", "1"])
    assert code == 0
    assert (project_dir / "out.txt").read_text(encoding="utf-8") == f"{TRAIN_PAIRS[5][1]}\n"
    assert progress_lines(caplog) == ["translating: batch 1 of 1 (100%)", "translated 1 lines"]


def test_mt_translate_without_a_model_exits_non_zero_naming_it(
    project_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    code = cli.main(["translate", "--input", "missing.txt"])
    assert code == 2
    assert "--input missing.txt: file not found" in caplog.text
    (project_dir / "in.txt").write_text("A dog.\n", encoding="utf-8")
    assert cli.main(["translate", "--input", "in.txt"]) == 2
    assert "no seq2seq.keras found" in caplog.text


@pytest.mark.slow
def test_mt_translate_through_a_saved_mlflow_pyfunc(
    model_dir: Path,
    project_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The registry's pyfunc wraps this Translator; `mt translate` loads it through MLflow."""
    import mlflow.pyfunc

    from pipeline.serving import (
        DECODING_ARTIFACT,
        KERAS_MODEL_ARTIFACT,
        TOKENIZER_ARTIFACT,
        TranslationModel,
    )

    settings_file = tmp_path / "decoding.json"
    settings_file.write_text('{"beam_size": 2, "batch_size": 4}', encoding="utf-8")
    saved = tmp_path / "pyfunc"
    mlflow.pyfunc.save_model(
        saved,
        python_model=TranslationModel(),
        artifacts={
            KERAS_MODEL_ARTIFACT: str(model_dir / "seq2seq.keras"),
            TOKENIZER_ARTIFACT: str(model_dir / "tokenizer"),
            DECODING_ARTIFACT: str(settings_file),
        },
        model_config={"max_input_chars": 1000, "max_batch_rows": 8, "max_request_work": 10_000},
        pip_requirements=[],
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{TRAIN_PAIRS[6][0]}\n\n"))
    assert cli.main(["translate", "--model", str(saved), "--batch-size", "8"]) == 0
    assert capsys.readouterr().out == f"{TRAIN_PAIRS[6][1]}\n\n"

    monkeypatch.setattr("sys.stdin", io.StringIO(f"{TRAIN_PAIRS[6][0]}\n{'x' * 1001}\n"))
    assert cli.main(["translate", "--model", str(saved), "--batch-size", "8"]) == 2
    assert capsys.readouterr().out == ""
    assert (
        "translate failed: input lines 1-2 (one request of --batch-size 8): row 1: text of 1001 "
        "characters exceeds register.max_input_chars=1000; split it into sentences"
    ) in caplog.text

    # Saved without the beam_size parameter (as versions logged before it): refused, not
    # silently decoded with the model's own beam.
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{TRAIN_PAIRS[6][0]}\n"))
    assert cli.main(["translate", "--model", str(saved), "--beam-size", "1"]) == 2
    assert (
        f"translate failed: --model {saved}: this model takes no beam_size parameter (logged "
        "before serving took decoding options); drop --beam-size, or register the model again"
    ) in caplog.text


# ------------------------------------------------------------- mt translate: bad input, exit 2


def translate_error(caplog: pytest.LogCaptureFixture) -> str:
    """The one line `mt` logged for a failed translate."""
    [error] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert error.startswith("translate failed: ") and "\n" not in error
    return error.removeprefix("translate failed: ")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--beam-size", "0"], "--beam-size 0: outside the allowed range [1, 64] of "
         "params.yaml `decode.beam_size`"),
        (["--beam", "100000"], "--beam-size 100000: outside the allowed range [1, 64] of "
         "params.yaml `decode.beam_size`"),
        (["--batch-size", "0"], "--batch-size 0: outside the allowed range [1, 65_536] of "
         "params.yaml `decode.batch_size`"),
    ],
    ids=["beam-0", "beam-100000", "batch-size-0"],
)  # fmt: skip
def test_mt_translate_flags_outside_their_param_range_exit_2(
    project_dir: Path, caplog: pytest.LogCaptureFixture, flags: list[str], message: str
) -> None:
    assert cli.main(["translate", *flags]) == 2
    assert translate_error(caplog) == message


def test_mt_translate_refuses_stdin_that_is_not_utf8(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"A dog.\nA \xff cat.\n")))
    assert cli.main(["translate"]) == 2
    assert translate_error(caplog) == (
        "stdin: line 2: invalid UTF-8 at byte offset 9 (column 3): invalid start byte. Fix: "
        "convert the input to UTF-8, e.g. `iconv -f latin1 -t utf-8`."
    )


def test_mt_translate_refuses_an_input_file_that_is_not_utf8(
    project_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (project_dir / "in.txt").write_bytes("A dog.\nEin Mädchen.\n".encode("latin-1"))
    assert cli.main(["translate", "--input", "in.txt"]) == 2
    assert translate_error(caplog) == (
        "--input in.txt: line 2: invalid UTF-8 at byte offset 12 (column 6): invalid "
        "continuation byte. Fix: convert the input to UTF-8, e.g. `iconv -f latin1 -t utf-8`."
    )


@pytest.mark.slow
def test_mt_translate_of_latin1_stdin_exits_2_without_a_traceback(tmp_path: Path) -> None:
    """A real process: under a C locale Python's own stdin would let the byte through."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "translate"],
        input="Ein Mädchen.\n".encode("latin-1"),
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "LC_ALL": "C",
             "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        check=False,
    )  # fmt: skip
    stderr = done.stderr.decode()
    assert done.returncode == 2 and done.stdout == b""
    assert "translate failed: stdin: line 1: invalid UTF-8 at byte offset 5" in stderr
    assert "Traceback" not in stderr


def test_mt_translate_with_an_unknown_registered_model_exits_2(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project_dir / 'mlruns.db'}")
    monkeypatch.setattr("sys.stdin", io.StringIO("A dog.\n"))
    assert cli.main(["translate", "--model", "models:/absent@champion"]) == 2
    assert translate_error(caplog) == (
        "--model models:/absent@champion: cannot load this MLflow model from "
        f"sqlite:///{project_dir / 'mlruns.db'}: Registered Model with name=absent not found"
    )


@pytest.mark.slow
def test_mt_translate_with_a_broken_model_file_or_output_path_exits_2(
    model_dir: Path,
    project_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = project_dir / "broken"
    shutil.copytree(model_dir / "tokenizer", broken / "tokenizer")
    (broken / "seq2seq.keras").write_text("not a zip\n", encoding="utf-8")
    monkeypatch.setattr("sys.stdin", io.StringIO("A dog.\n"))
    assert cli.main(["translate", "--model", str(broken)]) == 2
    assert translate_error(caplog).startswith(
        f"{broken / 'seq2seq.keras'}: not a loadable Keras model ("
    )
    assert translate_error(caplog).endswith("); run `mt train` to write it again")
    caplog.clear()
    (project_dir / "out").mkdir()
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{TRAIN_PAIRS[0][0]}\n"))
    assert cli.main(["translate", "--model", str(model_dir), "--output", "out"]) == 2
    assert translate_error(caplog) == "--output out: cannot write it: Is a directory"
