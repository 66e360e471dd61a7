"""`mt serve`'s app in-process (pipeline/serving_app.py): the protocol, its refusals, /metrics.

The model is a stand-in pyfunc (upper-cases); the live server, the registry and the alias it
follows are in tests/test_serving_follow.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from pipeline.serving import InputLimits, StepBounds
from pipeline.serving_app import ServerSettings, build_app, build_serving
from pipeline.serving_follow import ServedModel

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

LIMITS = InputLimits(max_input_chars=50, max_batch_rows=4, max_request_work=120)


class UppercasePyfunc:
    """What the app calls on a loaded pyfunc: predict(DataFrame, params) -> DataFrame."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def predict(self, frame: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        if self.fail:
            raise ValueError("weights are missing")
        texts = [f"{text.upper()}@{params['beam_size']}" if text else "" for text in frame["text"]]
        return pd.DataFrame({"translation": texts})


def served(fail: bool = False, version: str | None = "7") -> ServedModel:
    return ServedModel(
        UppercasePyfunc(fail), "models:/m/7", version, LIMITS, StepBounds(), default_beam=2
    )


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = build_app(build_serving(served(), ServerSettings(batch_window_s=0.0)))
    with TestClient(app) as test_client:
        yield test_client


def post(client: TestClient, body: Any, content_type: str = "application/json") -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/invocations", content=data, headers={"Content-Type": content_type})


def test_a_request_is_answered_with_the_version_that_produced_it(client: TestClient) -> None:
    rows = {"dataframe_split": {"columns": ["text"], "data": [["a dog"], [""]]}}
    answer = post(client, rows)
    assert answer.status_code == 200
    assert answer.json() == {"predictions": [{"translation": "A DOG@2"}, {"translation": ""}]}
    assert (answer.headers["X-Model-Version"], answer.headers["X-Model-Uri"]) == (
        "7",
        "models:/m/7",
    )
    records = post(client, {"dataframe_records": [{"text": "cat"}], "params": {"beam_size": 1}})
    assert records.json() == {"predictions": [{"translation": "CAT@1"}]}
    assert post(client, {"inputs": {"text": ["x"]}}).json() == {
        "predictions": [{"translation": "X@2"}]
    }
    assert post(client, {"instances": ["y"]}).json() == {"predictions": [{"translation": "Y@2"}]}
    assert client.get("/model").json() == {"uri": "models:/m/7", "version": "7", "follows": None}
    assert (client.get("/ping").status_code, client.get("/ping").text) == (200, "\n")


JSON = "application/json"
FORMATS = "dataframe_split, dataframe_records, inputs, instances"
BAD_REQUESTS = {
    "not-json": (
        b"{not json",
        JSON,
        "the body is not valid JSON: Expecting property name enclosed in double quotes: line 1 "
        "column 2 (char 1)",
    ),
    "list": (
        [["a"]],
        JSON,
        "the body is a JSON list; send an object with one of dataframe_split, dataframe_records, "
        "inputs, instances",
    ),
    "two-formats": (
        {"inputs": ["a"], "instances": ["b"]},
        JSON,
        "the body has ['inputs', 'instances']; send exactly one of dataframe_split, "
        "dataframe_records, inputs, instances",
    ),
    "unknown-param": (
        {"inputs": ["a"], "params": {"temperature": 1}},
        JSON,
        "params temperature: not a parameter of this model; it takes beam_size",
    ),
    "beam-0": (
        {"inputs": ["a"], "params": {"beam_size": 0}},
        JSON,
        "params beam_size=0: allowed an integer from 1 (greedy) to 64; leave it out for the "
        "model's default (2)",
    ),
    "beam-text": (
        {"inputs": ["a"], "params": {"beam_size": "wide"}},
        JSON,
        "params beam_size='wide': allowed an integer from 1 (greedy) to 64; leave it out for the "
        "model's default (2)",
    ),
    "rows": (
        {"inputs": ["a", "b", "c", "d", "e"]},
        JSON,
        "batch of 5 rows exceeds register.max_batch_rows=4; split the request into smaller "
        "batches",
    ),
    "not-a-string": (
        {"inputs": {"text": [7]}},
        JSON,
        "row 0: expected a string in column 'text', got int 7",
    ),
    "chars": (
        {"inputs": ["x" * 51]},
        JSON,
        "row 0: text of 51 characters exceeds register.max_input_chars=50; split it into "
        "sentences",
    ),
    "work": (
        {"inputs": ["x" * 39] * 2},
        JSON,
        "request of 2 rows at beam 2 is 160 units of work (beam x 80 decoder steps its rows may "
        "take), over register.max_request_work=120; send fewer or shorter rows, or a smaller "
        "beam",
    ),
    "csv": (
        {"inputs": ["a"]},
        "text/csv",
        "content type 'text/csv' is not supported; send application/json",
    ),
}


@pytest.mark.parametrize(
    ("body", "content_type", "message"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys()
)
def test_a_bad_request_is_a_400_with_one_line_naming_the_limit(
    client: TestClient, body: Any, content_type: str, message: str
) -> None:
    answer = post(client, body, content_type)
    assert (answer.status_code, answer.json()) == (
        400,
        {"error_code": "INVALID_PARAMETER_VALUE", "message": message},
    )


def test_a_body_over_the_cap_is_refused_before_it_is_read(client: TestClient) -> None:
    max_bytes = LIMITS.max_request_bytes
    oversized = json.dumps({"inputs": ["a" * max_bytes]}).encode()
    answer = post(client, oversized)
    assert answer.status_code == 413
    assert answer.json()["message"].startswith(
        f"request body of {len(oversized)} bytes exceeds the limit of {max_bytes} bytes"
    )


def test_a_model_failure_is_a_500_without_a_traceback() -> None:
    app = build_app(build_serving(served(fail=True), ServerSettings(batch_window_s=0.0)))
    with TestClient(app) as client:
        answer = post(client, {"inputs": ["a"]})
    assert (answer.status_code, answer.json()) == (
        500,
        {"error_code": "INTERNAL_ERROR", "message": "the model failed: ValueError"},
    )


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, labels)."""
    answer = client.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_metrics_count_answers_by_status_batches_and_the_version_serving(
    client: TestClient,
) -> None:
    for texts in (["a"], ["b", "c"], ["d"] * 5):  # the last: too many rows, 400
        post(client, {"inputs": texts})
    metrics = scrape(client)
    assert metrics[("mt_serve_requests_total", (("status", "200"),))] == 2
    assert metrics[("mt_serve_requests_total", (("status", "400"),))] == 1
    assert metrics[("mt_serve_request_seconds_count", ())] == 3
    assert metrics[("mt_serve_batch_requests_count", ())] == 2  # one client: a batch each
    assert metrics[("mt_serve_batch_rows_sum", ())] == 3
    assert metrics[("mt_serve_model_info", (("uri", "models:/m/7"), ("version", "7")))] == 1
    assert metrics[("mt_serve_model_switches_total", ())] == 0
