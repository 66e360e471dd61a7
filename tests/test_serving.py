"""The served pyfunc: input checks, loading in-process, and a real `mlflow models serve`."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from pipeline import cli
from pipeline.config import _load_cached, load_config
from pipeline.paths import project_paths
from pipeline.serving import InputLimits, texts_from_input
from pipeline.serving_body_cap import SCORING_SERVER_ENV, cap_scoring_server_body
from pipeline.tracking import tracking_uri
from tests.conftest import TINY_OVERRIDES, write_params
from tests.mlflow_server import (
    ModelServer,
    post_json,
    prepare_registry_project,
    reference_lines,
    register_standin,
    uppercase_spec,
)
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


def test_work_per_request_is_bounded_by_characters_times_beam() -> None:
    two_full_rows = ["x" * 10, "y" * 10]
    assert texts_from_input(two_full_rows, LIMITS, beam_size=1) == two_full_rows  # 20: at it
    with pytest.raises(MlflowException) as caught:
        texts_from_input(two_full_rows, LIMITS, beam_size=2)
    assert caught.value.message == (
        "request of 2 rows and 20 characters at beam 2 is 40 units of work (characters x "
        "beam), over register.max_request_work=20; send fewer or shorter rows"
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


def invocations(server: ModelServer, payload: object) -> tuple[int, dict[str, object]]:
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
    assert_body_is_capped(server, max_bytes=4 * (12 * 50 + 16) + 4096)


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


@pytest.mark.slow
def test_mt_register_logs_the_trained_translator_and_serves_it(
    project_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """evaluate → `mt register` on a tiny overfit model → `mlflow models serve` translates."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_RUN_ID", raising=False)
    write_params(project_dir, TINY_OVERRIDES)
    _load_cached.cache_clear()
    shutil.copytree(memorised_model_dir(tmp_path_factory), project_dir / "models")
    pairs = TRAIN_PAIRS[:10]
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
    server = ModelServer(
        f"models:/{name}@champion", tracking_uri(project_paths()), tmp_path / "serve.log", tmp_path
    )
    try:
        server.start()
        rows = {"inputs": {"text": [source for source, _ in pairs[:3]] + [""]}}
        status, body = invocations(server, rows)
        too_long = {"inputs": {"text": ["x" * 1001]}}  # register.max_input_chars is 1000
        bad_status, bad_body = invocations(server, too_long)
    finally:
        server.stop()
    assert status == 200
    expected = [target for _, target in pairs[:3]] + [""]
    assert [row["translation"] for row in body["predictions"]] == expected  # type: ignore[attr-defined]
    assert bad_status == 400 and "exceeds register.max_input_chars=1000" in str(bad_body)
