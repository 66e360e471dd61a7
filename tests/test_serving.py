"""The served pyfunc: input checks, loading in-process, and a real `mlflow models serve`."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException

from pipeline import cli
from pipeline.config import RegisterConfig, _load_cached, load_config, parse_config
from pipeline.monitor.batch_model import choose_model, load_version, model_facts
from pipeline.param_rules import rule_of
from pipeline.paths import project_paths
from pipeline.serving import (
    InputLimits,
    StepBounds,
    request_work,
    requested_beam_size,
    step_bounds_of,
    texts_from_input,
)
from pipeline.serving_body_cap import SCORING_SERVER_ENV, cap_scoring_server_body
from pipeline.text import normalize_text
from pipeline.tokenize import load_tokenizers
from pipeline.tracking import model_metadata, tracking_uri
from tests.conftest import REPO_ROOT, TINY_OVERRIDES, tiny_pairs, write_params
from tests.mlflow_server import (
    BIN_DIR,
    ModelServer,
    free_port,
    post_json,
    prepare_registry_project,
    reference_lines,
    register_standin,
    uppercase_spec,
    wait_until_healthy,
)
from tests.mlflow_server import _stop as stop_process_group
from tests.test_evaluate import write_test_split
from tests.tiny_translator import MEMORISED_PAIRS as TRAIN_PAIRS
from tests.tiny_translator import memorised_model_dir

LIMITS = InputLimits(max_input_chars=10, max_batch_rows=3, max_request_work=20)


@pytest.mark.parametrize(
    "model_input",
    [
        pd.DataFrame({"text": ["a", "b"]}),
        pd.DataFrame({"other": ["a", "b"]}),  # one column: whatever its name
        pd.Series(["a", "b"]),
        np.array(["a", "b"]),
        ["a", "b"],
        {"text": ["a", "b"]},
    ],
)
def test_texts_from_input_accepts_one_text_column(model_input: object) -> None:
    assert texts_from_input(model_input, LIMITS) == ["a", "b"]


@pytest.mark.parametrize(
    ("model_input", "message"),
    [
        (pd.DataFrame({"text": []}), "empty batch: send at least one row in column 'text'"),
        (
            pd.DataFrame({"text": ["a"] * 4}),
            "batch of 4 rows exceeds register.max_batch_rows=3; split the request into "
            "smaller batches",
        ),
        (["ok", 7], "row 1: expected a string in column 'text', got int 7"),
        (["ok", None], "row 1: expected a string in column 'text', got NoneType None"),
        (
            ["x" * 11],
            "row 0: text of 11 characters exceeds register.max_input_chars=10; split it into "
            "sentences",
        ),
        (
            pd.DataFrame({"source": ["a"], "extra": ["b"]}),
            "input has columns ['source', 'extra']; send one column named 'text' with one text "
            "per row",
        ),
        ("just a string", "input of type str is not supported; send a column 'text' of strings"),
    ],
)
def test_bad_requests_raise_invalid_parameter_value(model_input: object, message: str) -> None:
    with pytest.raises(MlflowException) as caught:
        texts_from_input(model_input, LIMITS)
    assert caught.value.message == message
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert caught.value.get_http_status_code() == 400


def repo_register_and_decode() -> tuple[InputLimits, StepBounds]:
    """params.yaml's request limits and the step bounds of its decode settings."""
    config = parse_config(yaml.safe_load((REPO_ROOT / "params.yaml").read_text("utf-8")))
    register = config.register
    limits = InputLimits(
        register.max_input_chars, register.max_batch_rows, register.max_request_work
    )
    return limits, StepBounds.of(config.decode)


def test_a_request_of_many_short_rows_is_refused_for_the_decoder_steps_they_may_take() -> None:
    """Issue 25: work counted characters x beam, so 256 one-character rows at beam 64 were 16_384
    units against register.max_request_work=200_000; each row may take 13 decoder steps
    (floor(1.5 x 2) + 10), 212_992 hypothesis-steps in all."""
    limits, bounds = repo_register_and_decode()
    short_rows = ["a"] * limits.max_batch_rows
    assert (limits.max_batch_rows, limits.max_request_work) == (256, 200_000)
    assert bounds == StepBounds(max_length_ratio=1.5, max_length_offset=10, max_source_length=200)
    assert texts_from_input(short_rows, limits, 60, bounds) == short_rows  # 199_680 units
    with pytest.raises(MlflowException) as caught:
        texts_from_input(short_rows, limits, 64, bounds)
    assert caught.value.message == (
        "request of 256 rows at beam 64 is 212992 units of work (beam x 3328 decoder steps its "
        "rows may take), over register.max_request_work=200000; send fewer or shorter rows, or "
        "a smaller beam"
    )
    assert caught.value.get_http_status_code() == 400


def test_a_model_without_decoding_settings_counts_one_step_per_character_and_a_mark() -> None:
    two_rows = ["x" * 9, "y" * 9]  # the stand-ins: an output as long as the input
    assert texts_from_input(two_rows, LIMITS, beam_size=1) == two_rows  # 20 units: at it
    with pytest.raises(MlflowException) as caught:
        texts_from_input(two_rows, LIMITS, beam_size=2)
    assert caught.value.message == (
        "request of 2 rows at beam 2 is 40 units of work (beam x 20 decoder steps its rows may "
        "take), over register.max_request_work=20; send fewer or shorter rows, or a smaller beam"
    )


@pytest.fixture(scope="module")
def source_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny SentencePiece model trained as `mt tokenize` trains one (params.yaml's options)."""
    from pipeline.tokenize import SOURCE_MODEL, TARGET_MODEL, train_tokenizer_models

    pairs = tiny_pairs(60)
    config = parse_config(yaml.safe_load((REPO_ROOT / "params.yaml").read_text("utf-8")))
    tiny = dataclasses.replace(config.tokenize, vocab_size=120)
    models = train_tokenizer_models([s for s, _ in pairs], [t for _, t in pairs], tiny, 1234)
    directory = tmp_path_factory.mktemp("tokenizer")
    (directory / SOURCE_MODEL).write_bytes(models[0])
    (directory / TARGET_MODEL).write_bytes(models[1])
    return load_tokenizers(directory).src


@pytest.mark.parametrize("max_source_length", [200, 8])
def test_the_step_bound_is_the_decoders_own_limit_or_above(
    source_tokenizer: Any, max_source_length: int
) -> None:
    """Each text's bound against `max_target_lengths` of the decoder on its real pieces, cut as
    the Translator cuts them: never below ("Ö" is two pieces, "▁" and <unk>; "ﬃ ﬃ" is eight
    after NFKC: both exactly at the bound), equal once the cut decides the length."""
    import keras

    from pipeline.model.decoding import max_target_lengths
    from pipeline.translator import pad_batch

    bounds = StepBounds(1.5, 10, max_source_length)
    texts = [
        "A dog runs.", "Ö", "\ufdfa", "\ufdfa" * 3, "ﬃ ﬃ", "x" * 1000, "😀 hi",
        "a " * 500, "  ", "",
    ]  # fmt: skip
    pieces = source_tokenizer.encode([normalize_text(text) for text in texts])
    decoded = {
        text: ids[:max_source_length] for text, ids in zip(texts, pieces, strict=True) if ids
    }
    limits = max_target_lengths(pad_batch(list(decoded.values())), 1.5, 10)
    decoder_limit = dict(zip(decoded, keras.ops.convert_to_numpy(limits).tolist(), strict=True))
    bound = {text: bounds.steps(text) for text in decoded}
    assert all(bound[text] >= decoder_limit[text] for text in decoded), (bound, decoder_limit)
    assert [bound[text] - decoder_limit[text] for text in ("Ö", "ﬃ ﬃ")] == [0, 0]
    longest = "a " * 500  # 500 pieces "▁a", cut to max_source_length
    assert bound[longest] == decoder_limit[longest] == math.floor(1.5 * max_source_length) + 10
    assert [bounds.steps(text) for text in ("  ", "")] == [0, 0]  # not decoded at all


@pytest.mark.parametrize(
    ("params", "beam"), [(None, 5), ({}, 5), ({"beam_size": 1}, 1), ({"beam_size": 64}, 64)]
)
def test_a_request_picks_its_beam_or_gets_the_model_default(
    params: dict[str, int] | None, beam: int
) -> None:
    assert requested_beam_size(params, default=5) == beam


@pytest.mark.parametrize("value", [0, 65, -1, True])
def test_a_beam_outside_1_to_64_is_a_bad_request_naming_the_parameter(value: object) -> None:
    with pytest.raises(MlflowException) as caught:
        requested_beam_size({"beam_size": value}, default=5)
    assert caught.value.message == (
        f"params beam_size={value!r}: allowed an integer from 1 (greedy) to 64; leave it out "
        "for the model's default (5)"
    )
    assert caught.value.get_http_status_code() == 400


def test_limits_come_from_model_config() -> None:
    config = {"max_input_chars": 5, "max_batch_rows": 2, "max_request_work": 9}
    assert InputLimits.from_model_config(config) == InputLimits(5, 2, 9)
    with pytest.raises(MlflowException, match="model_config lacks max_batch_rows"):
        InputLimits.from_model_config({"max_input_chars": 5, "max_request_work": 9})


def test_body_cap_admits_the_largest_request_the_limits_allow() -> None:
    astral = "\U0001f600" * LIMITS.max_input_chars  # 12 bytes each once JSON-escaped
    rows = [[astral] for _ in range(LIMITS.max_batch_rows)]
    body = json.dumps({"dataframe_split": {"columns": ["text"], "data": rows}})
    assert len(body.encode()) <= LIMITS.max_request_bytes == 3 * (12 * 10 + 16) + 4096


def test_body_cap_at_the_largest_allowed_limits_stays_under_118_mb() -> None:
    """Issue 25: at the old maxima (1_000_000 characters, 100_000 rows) it was 1.2 TB."""
    fields = {field.name: field for field in dataclasses.fields(RegisterConfig)}
    largest = {name: rule_of(fields[name]).le for name in ("max_input_chars", "max_batch_rows")}
    assert largest == {"max_input_chars": 10_000, "max_batch_rows": 1_024}
    cap = InputLimits(10_000, 1_024, 10_000_000).max_request_bytes
    assert cap == 1_024 * (12 * 10_000 + 16) + 4096 == 122_900_480


@pytest.fixture
def capped_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A FastAPI app built the way MLflow's scoring server builds it, after the cap is armed."""
    import fastapi

    monkeypatch.setenv(SCORING_SERVER_ENV, "/models/x")
    original = fastapi.FastAPI
    assert cap_scoring_server_body(max_bytes=100)
    app = fastapi.FastAPI()
    assert fastapi.FastAPI is original  # armed for one app only

    async def read_body(request: Any) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse({"read": len(await request.body())})

    app.add_route("/invocations", read_body, methods=["POST"])
    yield app
    fastapi.FastAPI = original


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_body_over_the_cap_is_refused_with_413_before_it_is_read(capped_app: Any) -> None:
    from starlette.testclient import TestClient

    client = TestClient(capped_app)
    assert client.post("/invocations", content=b"x" * 100).json() == {"read": 100}
    refused = client.post("/invocations", content=b"x" * 101)
    assert refused.status_code == 413
    assert refused.json() == {
        "error_code": "REQUEST_LIMIT_EXCEEDED",
        "message": "request body of 101 bytes exceeds the limit of 100 bytes "
        "(register.max_batch_rows x register.max_input_chars, as JSON); send fewer or shorter "
        "rows per request",
    }
    chunked = client.post("/invocations", content=iter([b"x" * 60, b"x" * 60]))
    assert chunked.status_code == 413
    assert chunked.json()["message"].startswith("request body exceeds the limit of 100 bytes")


def test_cap_is_not_armed_outside_the_scoring_server(monkeypatch: pytest.MonkeyPatch) -> None:
    import fastapi

    monkeypatch.delenv(SCORING_SERVER_ENV, raising=False)
    original = fastapi.FastAPI
    assert not cap_scoring_server_body(max_bytes=100)
    assert fastapi.FastAPI is original


@pytest.mark.slow
def test_saved_pyfunc_loads_and_checks_input(tmp_path: Path) -> None:
    spec = uppercase_spec(tmp_path / "standin", max_input_chars=20, max_batch_rows=2)
    mlflow.pyfunc.save_model(
        tmp_path / "model",
        python_model=str(spec.python_model),
        artifacts=spec.artifacts,
        model_config=spec.model_config,
        code_paths=spec.code_paths,
    )
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    output = model.predict(pd.DataFrame({"text": ["a dog", ""]}))
    assert output["translation"].tolist() == ["A DOG", ""]
    with pytest.raises(MlflowException, match="exceeds register.max_batch_rows=2"):
        model.predict(pd.DataFrame({"text": ["a", "b", "c"]}))


def invocations(server: ModelServer | MtServe, payload: object) -> tuple[int, dict[str, Any]]:
    status, body = post_json(f"{server.url}/invocations", json.dumps(payload).encode())
    return status, json.loads(body)


def assert_serves_champion(server: ModelServer) -> None:
    """Translations for a good request; 400 with a clear message for bad ones."""
    rows = {"dataframe_split": {"columns": ["text"], "data": [["a dog"], [""]]}}
    assert invocations(server, rows) == (
        200,
        {"predictions": [{"translation": "A DOG"}, {"translation": ""}]},
    )
    too_long = {"dataframe_split": {"columns": ["text"], "data": [["x" * 51]]}}
    status, body = invocations(server, too_long)
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "row 0: text of 51 characters exceeds register.max_input_chars=50" in str(body)
    too_many = {"inputs": {"text": ["a", "b", "c", "d", "e"]}}
    status, body = invocations(server, too_many)
    assert status == 400
    assert "batch of 5 rows exceeds register.max_batch_rows=4" in str(body["message"])
    status, body = invocations(server, {"dataframe_split": {"columns": ["text"], "data": []}})
    assert status == 400 and "empty batch" in str(body["message"])
    status, body = invocations(server, {"dataframe_split": {"columns": ["text"], "data": [[7]]}})
    assert status == 400 and "text" in str(body["message"])
    assert "Traceback" not in str(body)
    status, body_text = post_json(f"{server.url}/invocations", b"{not json")
    assert status == 400 and "Traceback" not in body_text
    too_much_work = {"inputs": {"text": ["x" * 50, "y" * 50, "z" * 50]}}  # 150 > 120
    status, body = invocations(server, too_much_work)
    assert status == 400 and "over register.max_request_work=120" in str(body["message"])
    assert_beam_is_a_request_parameter(server)
    assert_body_is_capped(server, max_bytes=4 * (12 * 50 + 16) + 4096)


def assert_beam_is_a_request_parameter(server: ModelServer) -> None:
    """`params.beam_size` reaches the model: the work bound counts the requested beam."""
    rows = {"inputs": {"text": ["x" * 39] * 3}}  # 3 x (39 + 1) steps: work 120 at beam 1
    status, body = invocations(server, {**rows, "params": {"beam_size": 1}})
    assert (status, body) == (200, {"predictions": [{"translation": "X" * 39}] * 3})
    assert_bad_request(
        invocations(server, {**rows, "params": {"beam_size": 2}}),
        "request of 3 rows at beam 2 is 240 units of work (beam x 120 decoder steps its rows may "
        "take), over register.max_request_work=120; send fewer or shorter rows, or a smaller "
        "beam",
    )
    assert_bad_request(
        invocations(server, {**rows, "params": {"beam_size": 0}}),
        "params beam_size=0: allowed an integer from 1 (greedy) to 64; leave it out for the "
        "model's default (1)",
    )
    status, body = invocations(server, {**rows, "params": {"beam_size": "wide"}})
    assert status == 400 and "Invalid parameters found: {('beam_size'" in str(body["message"])


def assert_bad_request(answer: tuple[int, dict[str, Any]], message: str) -> None:
    """HTTP 400 whose message ends with ours (the server puts the request in front of it)."""
    status, body = answer
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert str(body["message"]).endswith(message)


def assert_body_is_capped(server: ModelServer, max_bytes: int) -> None:
    """413 before parsing, for a declared length and for a chunked body alike."""
    oversized = json.dumps({"inputs": {"text": ["a" * max_bytes]}}).encode()
    status, body_text = post_json(f"{server.url}/invocations", oversized)
    assert status == 413
    assert json.loads(body_text)["message"].startswith(
        f"request body of {len(oversized)} bytes exceeds the limit of {max_bytes} bytes"
    )
    chunks = iter([oversized[: max_bytes // 2], oversized[max_bytes // 2 :]])
    request = urllib.request.Request(
        f"{server.url}/invocations",
        data=chunks,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["message"].startswith(
        f"request body exceeds the limit of {max_bytes} bytes"
    )


@pytest.mark.slow
def test_mlflow_models_serve_answers_from_the_sqlite_registry(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prepare_registry_project(project_dir, monkeypatch)
    references = reference_lines()
    register_standin(project_dir, references, references)
    name = load_config().register.model_name
    server = ModelServer(
        f"models:/{name}@champion",
        tracking_uri(project_paths()),
        tmp_path / "serve.log",
        cwd=tmp_path,
    )
    try:
        assert_serves_champion(server.start())
    finally:
        server.stop()


@dataclass
class MtServe:
    """`mt serve` as a user runs it without activating the venv: `.venv/bin/mt` by its path,
    PATH of /usr/bin:/bin only, the project's own tracking store and default model."""

    project: Path
    log_file: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 240) -> MtServe:
        command = [str(BIN_DIR / "mt"), "serve", "--port", str(self.port)]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.project), "CI": "true",
               "MT_PROJECT_DIR": str(self.project)}  # fmt: skip
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.project,
                start_new_session=True,
            )  # fmt: skip
        wait_until_healthy(f"{self.url}/ping", self.process, self.log_file, timeout_s)
        return self

    def command_line(self) -> list[str]:
        """What runs under the pid `mt serve` started with (the server, in-process)."""
        assert self.process is not None
        return Path(f"/proc/{self.process.pid}/cmdline").read_bytes().decode().split("\0")

    def terminate_like_a_supervisor(self) -> None:
        """SIGTERM to the one pid we started, as systemd or `kill PID` would send it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        stop_process_group(self.process, signal.SIGTERM)


def refuses_connections(url: str, timeout_s: float = 30) -> bool:
    """True once nothing listens at `url` any more (the server's workers are gone too)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
        except urllib.error.URLError as error:
            if isinstance(error.reason, ConnectionRefusedError):
                return True
        time.sleep(0.5)
    return False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "--port 0: not a TCP port; pick one from 1 to 65535"),
        (
            ["--model", "models:/absent@champion"],
            "--model models:/absent@champion: not found in sqlite:///{root}/mlruns.db: "
            "Registered Model with name=absent not found; run `mt register` (or `dvc repro`), "
            "or pass --model with a version that exists (`mt registry list`)",
        ),
    ],
    ids=["port", "model"],
)
def test_mt_serve_refuses_a_bad_port_or_an_absent_model_in_one_line(
    project_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with caplog.at_level(logging.ERROR, logger="pipeline.cli"):
        assert cli.main(["serve", *args]) == 2
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert line == "serve failed: " + message.format(root=project_dir)


@pytest.mark.slow
def test_mt_register_logs_the_trained_translator_and_mt_serve_serves_it(
    project_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """evaluate → `mt register` on a tiny overfit model → `mt serve` without the venv on PATH
    translates, with the logged beam (decode.beam_size 2) or the one a request asks for."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_RUN_ID", raising=False)
    pairs = TRAIN_PAIRS[:10]
    sources = [source for source, _ in pairs]
    # Work bound = the decoder steps these rows may take: a request for them passes at beam 1
    # only (and the smoke check's canary sentences, fewer, still pass at the logged beam 2).
    write_params(project_dir, TINY_OVERRIDES)
    _load_cached.cache_clear()
    work = request_work(sources, 1, StepBounds.of(load_config().decode))
    register = {**TINY_OVERRIDES["register"], "max_request_work": work}
    write_params(project_dir, {**TINY_OVERRIDES, "register": register})
    _load_cached.cache_clear()
    shutil.copytree(memorised_model_dir(tmp_path_factory), project_dir / "models")
    write_test_split(project_dir, pairs)
    assert cli.main(["evaluate"]) == 0
    assert cli.main(["register"]) == 0

    report = json.loads((project_dir / "reports" / "registration.json").read_text("utf-8"))
    assert (report["version"], report["decision"], report["champion_after"]) == (
        "1",
        "promoted",
        "1",
    )
    name = load_config().register.model_name
    assert report["registry_uri"] == f"models:/{name}/1"
    signature = model_metadata(tracking_uri(), f"models:/{name}/1").signature
    assert signature is not None
    assert signature.params.to_dict() == [
        {"name": "beam_size", "type": "long", "default": 2, "shape": None}
    ]
    # Batch translation (before loading) and the champion watch (loaded) split requests by
    # the version's own step bounds, those the served model checks with.
    logged_bounds = StepBounds.of(load_config().decode)
    choice = choose_model(project_paths(), None, name)
    assert model_facts(choice, batch_size=64).limits.step_bounds == logged_bounds
    assert step_bounds_of(load_version(choice)) == logged_bounds
    server = MtServe(project_dir, tmp_path / "serve.log")
    try:
        server.start()
        assert server.command_line()[1:3] == [str(BIN_DIR / "mt"), "serve"]  # in-process
        greedy = invocations(
            server, {"inputs": {"text": [*sources, ""]}, "params": {"beam_size": 1}}
        )
        logged_beam = invocations(server, {"inputs": {"text": sources}})
        too_wide = invocations(server, {"inputs": {"text": sources}, "params": {"beam_size": 65}})
        too_long = invocations(server, {"inputs": {"text": ["x" * 1001]}})  # max_input_chars 1000
        server.terminate_like_a_supervisor()
        assert refuses_connections(f"{server.url}/ping")
    finally:
        server.stop()
    expected = [target for _, target in pairs] + [""]
    assert greedy == (200, {"predictions": [{"translation": text} for text in expected]})
    assert_bad_request(
        logged_beam,
        f"request of 10 rows at beam 2 is {2 * work} units of work (beam x {work} decoder steps "
        f"its rows may take), over register.max_request_work={work}; send fewer or shorter "
        "rows, or a smaller beam",
    )
    assert_bad_request(
        too_wide,
        "params beam_size=65: allowed an integer from 1 (greedy) to 64; leave it out for the "
        "model's default (2)",
    )
    assert_bad_request(
        too_long,
        "row 0: text of 1001 characters exceeds register.max_input_chars=1000; split it into "
        "sentences",
    )
