"""`mt serve models:/NAME@champion` follows the alias while clients keep asking (issue 27).

Against the test run's real `mlflow server` (tests/conftest.py `shared_mlflow`): three versions
of the upper-casing stand-in, each prefixing its answers with its own tag, and a fourth that
loads but fails every request. The alias is moved as an MLflow user moves it (the client's
`set_registered_model_alias`, the REST API the UI calls) while four clients send requests back
to back to a live `mt serve` process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from pipeline.tracking import fluent_store
from tests.mlflow_server import (
    BIN_DIR,
    UPPERCASE_MODEL_CODE,
    MlflowServer,
    free_port,
    prepare_registry_project,
    venv_environ,
    wait_until_healthy,
)
from tests.mlflow_server import _stop as stop_process_group

pytestmark = pytest.mark.slow

WAIT_S = 90
POLL_S = 0.5
CLIENTS = 4

BROKEN_MODEL_CODE = '''\
from mlflow.models import set_model

from pipeline.serving import TextToTextModel


class BrokenModel(TextToTextModel):
    """Loads, then fails every request: the smoke check must keep it from serving."""

    def load_translator(self, artifacts):
        pass

    def translate_texts(self, texts, beam_size):
        raise RuntimeError("this version is broken")


set_model(BrokenModel())
'''


def log_standin(directory: Path, code: str, prefix: str) -> tuple[str, str]:
    """Log a stand-in pyfunc answering `prefix + TEXT`; its model URI and id."""
    directory.mkdir(parents=True)
    (directory / "model.py").write_text(code, encoding="utf-8")
    (directory / "prefix.txt").write_text(prefix, encoding="utf-8")
    info = mlflow.pyfunc.log_model(
        name="translator",
        python_model=str(directory / "model.py"),
        artifacts={"prefix": str(directory / "prefix.txt")},
        model_config={"max_input_chars": 50, "max_batch_rows": 4, "max_request_work": 120},
        pip_requirements=["mlflow"],
    )
    return str(info.model_uri), str(info.model_id)


@pytest.fixture
def versions(
    request: pytest.FixtureRequest, shared_mlflow: MlflowServer, tmp_path: Path
) -> tuple[MlflowClient, str]:
    """The test's registered model: versions 1-3 answer `vN:TEXT`, version 4 is broken;
    @champion on 1."""
    client, name = MlflowClient(shared_mlflow.url), request.node.name[:60]
    experiment = client.create_experiment(name)
    codes = [UPPERCASE_MODEL_CODE] * 3 + [BROKEN_MODEL_CODE]
    client.create_registered_model(name)
    with fluent_store(shared_mlflow.url), mlflow.start_run(experiment_id=experiment) as run:
        for number, code in enumerate(codes, start=1):
            uri, model_id = log_standin(tmp_path / f"v{number}", code, f"v{number}:")
            client.create_model_version(name, uri, run.info.run_id, model_id=model_id)
    client.set_registered_model_alias(name, "champion", "1")
    return client, name


@dataclass
class Answer:
    status: int
    version: str | None
    text: str


@dataclass
class Clients:
    """Threads sending one-sentence requests back to back until stopped."""

    url: str
    answers: list[list[Answer]] = field(default_factory=lambda: [[] for _ in range(CLIENTS)])
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Clients:
        for number in range(CLIENTS):
            thread = threading.Thread(target=self._send, args=(number,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(WAIT_S)

    def _send(self, number: int) -> None:
        body = json.dumps({"inputs": [f"client {number}"]}).encode()
        while not self.stopping.is_set():
            request = urllib.request.Request(
                f"{self.url}/invocations", data=body,
                headers={"Content-Type": "application/json"}, method="POST",
            )  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=WAIT_S) as response:
                    text = json.loads(response.read())["predictions"][0]["translation"]
                    version = response.headers.get("X-Model-Version")
                    self.answers[number].append(Answer(response.status, version, text))
            except OSError as error:  # an HTTP error or a refused connection: a failed request
                self.answers[number].append(Answer(getattr(error, "code", 0), None, str(error)))

    def latest_version(self) -> str | None:
        latest = [answers[-1].version for answers in self.answers if answers]
        return latest[0] if len(latest) == CLIENTS and len(set(latest)) == 1 else None


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S} s"
        time.sleep(0.1)


@pytest.fixture
def serve(
    versions: tuple[MlflowClient, str],
    shared_mlflow: MlflowServer,
    project_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[str]:
    """`mt serve` of NAME@champion polling every POLL_S; its URL."""
    prepare_registry_project(project_dir, monkeypatch)
    port, log_file = free_port(), tmp_path / "serve.log"
    command = [str(BIN_DIR / "mt"), "serve", "--model", f"models:/{versions[1]}@champion",
               "--port", str(port), "--poll-s", str(POLL_S)]  # fmt: skip
    env = {**venv_environ(), "MLFLOW_TRACKING_URI": shared_mlflow.url,
           "MT_PROJECT_DIR": str(project_dir)}  # fmt: skip
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=project_dir,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/ping", process, log_file, WAIT_S * 2)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(process, signal.SIGTERM)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=WAIT_S) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def served_model(url: str) -> dict[str, str]:
    with urllib.request.urlopen(f"{url}/model", timeout=WAIT_S) as response:
        return dict(json.loads(response.read()))


def test_the_server_follows_champion_without_a_failed_request(
    versions: tuple[MlflowClient, str], serve: str
) -> None:
    client, name = versions
    clients = Clients(serve).start()
    try:
        for version in ("1", "2", "3"):
            client.set_registered_model_alias(name, "champion", version)
            wait_for(lambda v=version: clients.latest_version() == v, f"answers of v{version}")
        client.set_registered_model_alias(name, "champion", "4")  # loads, fails the canary
        failures = ("mt_serve_model_switch_failures_total", (("version", "4"),))
        wait_for(lambda: scrape(serve).get(failures) == 1, "refusal of v4")
        before = sum(len(answers) for answers in clients.answers)
        wait_for(lambda: sum(map(len, clients.answers)) > before + CLIENTS, "answers after v4")
    finally:
        clients.stop()

    for answers in clients.answers:
        assert {answer.status for answer in answers} == {200}
        # Each answer is the work of the version its header names, and versions only advance.
        assert all(answer.text.startswith(f"v{answer.version}:") for answer in answers)
        seen = [answer.version for answer in answers]
        assert sorted(seen, key=int) == seen and set(seen) == {"1", "2", "3"}
    metrics = scrape(serve)
    assert metrics[("mt_serve_model_switches_total", ())] == 2
    uri = f"models:/{name}/"
    info = {labels: value for (metric, labels), value in metrics.items()
            if metric == "mt_serve_model_info"}  # fmt: skip
    assert info == {
        (("uri", f"{uri}{v}"), ("version", v)): float(v == "3") for v in ("1", "2", "3")
    }
    assert served_model(serve) == {
        "uri": f"{uri}3", "version": "3", "follows": f"models:/{name}@champion",
    }  # fmt: skip
