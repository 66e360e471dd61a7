"""Real MLflow processes for tests: a tracking server, a scoring server, a throw-away database.

`MlflowServer` runs `mlflow server` with a given backend store and artifact directory on a free
port of 127.0.0.1 (or of `host`); `kill()` sends SIGKILL (a crash, not a shutdown) and `start()`
brings it back on the same port and stores. With `auth=BasicAuth.write(...)` it runs
`--app-name basic-auth`.
`ModelServer` runs `mlflow models serve --env-manager local`.
Throw-away PostgreSQL databases come from `tests.postgres.postgres_database()`.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN_DIR = Path(sys.executable).parent


# MLflow 3's server starts ~8 Huey job consumers (GenAI jobs, trace rollups) unless told not
# to: ~250 MB and a full `import mlflow` each, most of a server's start-up on 2 cores. The
# pipeline runs no server jobs.
NO_SERVER_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def venv_environ() -> dict[str, str]:
    """This environment with the venv's bin first: MLflow execs uvicorn/gunicorn by name."""
    path = f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, **NO_SERVER_JOBS, "PATH": path}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(
    url: str, process: subprocess.Popen[bytes], log_file: Path, timeout_s: float
) -> None:
    """Poll `url` until it answers 200; fail with the process log if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = _tail(log_file)
            raise RuntimeError(f"{url}: process exited ({process.returncode}):\n{log}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(url, timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url}: not healthy after {timeout_s:.0f}s:\n{_tail(log_file)}")


def _tail(log_file: Path, lines: int = 40) -> str:
    if not log_file.is_file():
        return "(no log)"
    return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes] | None, sig: int) -> None:
    """Signal the process group we started (server plus its workers) and reap it."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@dataclass(frozen=True)
class BasicAuth:
    """MLflow's basic-auth app: its config file (`MLFLOW_AUTH_CONFIG_PATH`), the password the
    server gives the admin user on its first start, and the Flask secret it insists on."""

    config_file: Path
    admin_username: str
    admin_password: str
    secret_key: str = "flask-secret-for-this-test-server"

    @classmethod
    def write(
        cls, directory: Path, admin_password: str, template: Path | None = None
    ) -> BasicAuth:
        """A config like `template` (MLflow's own basic_auth.ini when None) whose user
        database is a SQLite file in `directory`."""
        from mlflow.server.auth import config as auth_config

        config = configparser.ConfigParser()
        config.read(template or Path(auth_config.__file__).with_name("basic_auth.ini"))
        config["mlflow"]["database_uri"] = f"sqlite:///{directory / 'basic_auth.db'}"
        directory.mkdir(parents=True, exist_ok=True)
        config_file = directory / "basic_auth.ini"
        with config_file.open("w", encoding="utf-8") as handle:
            config.write(handle)
        return cls(config_file, config["mlflow"]["admin_username"], admin_password)

    def environ(self) -> dict[str, str]:
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(self.config_file),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secret_key,
        }


@dataclass
class MlflowServer:
    """`mlflow server` over `backend_uri`, proxying artifacts into `artifacts_dir`.

    `host` may be a veth address (tests/netns.py): MLflow's default allowed Host headers
    include the private ranges, and clients reach artifacts as `mlflow-artifacts:` over HTTP.
    """

    backend_uri: str
    artifacts_dir: Path
    log_file: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    auth: BasicAuth | None = None
    host: str = "127.0.0.1"
    extra_env: dict[str, str] = field(default_factory=dict)  # the server's own settings
    workers: int = 1

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 180) -> MlflowServer:
        command = [
            str(BIN_DIR / "mlflow"), "server",
            "--backend-store-uri", self.backend_uri,
            "--artifacts-destination", self.artifacts_dir.as_uri(),
            "--host", self.host, "--port", str(self.port), "--workers", str(self.workers),
        ]  # fmt: skip
        env = venv_environ() | self.extra_env
        if self.auth is not None:
            command += ["--app-name", "basic-auth"]
            env |= self.auth.environ()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        wait_until_healthy(f"{self.url}/health", self.process, self.log_file, timeout_s)
        return self

    def kill(self) -> None:
        """SIGKILL, like a crashed host: no graceful shutdown."""
        _stop(self.process, signal.SIGKILL)

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)


@dataclass
class ModelServer:
    """`mlflow models serve -m MODEL_URI --env-manager local` on a free port."""

    model_uri: str
    tracking_uri: str
    log_file: Path
    cwd: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 240) -> ModelServer:
        command = [
            str(BIN_DIR / "mlflow"), "models", "serve", "-m", self.model_uri,
            "--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port), "-w", "1",
        ]  # fmt: skip
        env = {**venv_environ(), "MLFLOW_TRACKING_URI": self.tracking_uri}
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
                start_new_session=True,
            )  # fmt: skip
        wait_until_healthy(f"{self.url}/ping", self.process, self.log_file, timeout_s)
        return self

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)


def post_json(url: str, payload: bytes, timeout_s: float = 60) -> tuple[int, str]:
    """POST a JSON body; returns (status, body) for 2xx and 4xx/5xx alike."""
    request = urllib.request.Request(
        url, data=payload, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8")


# --- stand-in registrations: a real pyfunc (upper-cases text) and its evaluation files -----

UPPERCASE_MODEL_CODE = '''\
from mlflow.models import set_model

from pipeline.serving import TextToTextModel


class UppercaseModel(TextToTextModel):
    """Stand-in translator for registry tests: upper-cases, reads its one artifact."""

    def load_translator(self, artifacts):
        with open(artifacts["prefix"], encoding="utf-8") as handle:
            self.prefix = handle.read()

    def translate_texts(self, texts, beam_size):
        return [self.prefix + text.upper() if text else "" for text in texts]


set_model(UppercaseModel())
'''

GATE_SPLIT = "test_2016_flickr"


def uppercase_spec(
    directory: Path,
    max_input_chars: int = 50,
    max_batch_rows: int = 4,
    max_request_work: int = 120,
) -> Any:
    """A PyfuncSpec for the upper-casing stand-in (models-from-code, prefix artifact "")."""
    from pipeline.registry.commands import PACKAGE_DIR, pinned_requirements
    from pipeline.registry.registration import PyfuncSpec

    directory.mkdir(parents=True, exist_ok=True)
    code = directory / "uppercase_model.py"
    code.write_text(UPPERCASE_MODEL_CODE, encoding="utf-8")
    prefix = directory / "prefix.txt"
    prefix.write_text("", encoding="utf-8")
    return PyfuncSpec(
        python_model=code,
        artifacts={"prefix": str(prefix)},
        model_config={
            "max_input_chars": max_input_chars,
            "max_batch_rows": max_batch_rows,
            "max_request_work": max_request_work,
        },
        pip_requirements=pinned_requirements(),
        code_paths=[str(PACKAGE_DIR)],
    )


def reference_lines(count: int = 40) -> list[str]:
    from tests.conftest import tiny_pairs

    return [de for _, de in tiny_pairs(count, offset=200)]


def wrong_every_other(references: list[str], wrong_parity: int) -> list[str]:
    """References with every other line (those of `wrong_parity`) replaced by a bad guess."""
    return [
        "Ein Hund." if index % 2 == wrong_parity else line for index, line in enumerate(references)
    ]


def write_evaluation(root: Path, hypotheses: list[str], references: list[str]) -> float:
    """What `mt fetch` and `mt evaluate` leave for the gate split; returns the BLEU."""
    import json

    from sacrebleu.metrics import BLEU

    from pipeline.eval_provenance import EvaluatedModel, write_record

    raw = root / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / f"{GATE_SPLIT}.de").write_text("".join(f"{r}\n" for r in references), "utf-8")
    hypotheses_dir = root / "reports" / "eval" / "hypotheses"
    hypotheses_dir.mkdir(parents=True, exist_ok=True)
    (hypotheses_dir / f"{GATE_SPLIT}.txt").write_text(
        "".join(f"{h}\n" for h in hypotheses), "utf-8"
    )
    bleu = BLEU()
    score = bleu.corpus_score(hypotheses, [references]).score
    metrics = {
        GATE_SPLIT: {
            "bleu": score,
            "sentences": len(hypotheses),
            "signatures": {"bleu": bleu.get_signature().format()},
        }
    }
    metrics_text = json.dumps(metrics)
    (root / "metrics.json").write_text(metrics_text, "utf-8")
    standin = EvaluatedModel("stand-in", "stand-in", {})
    write_record(
        hypotheses_dir.parent, standin, {GATE_SPLIT: raw / f"{GATE_SPLIT}.de"}, metrics_text
    )
    return float(score)


def prepare_registry_project(
    project_dir: Path, monkeypatch: Any, model_name: str = "multi30k-en-de-lstm"
) -> Path:
    """The `project_dir` fixture's project on the default SQLite store, gate floor 20 BLEU."""
    from pipeline.config import _load_cached
    from tests.conftest import write_params

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for var in ("AIRFLOW_CTX_DAG_RUN_ID", "AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    overrides = {"min_score": 20.0, "bootstrap_resamples": 200, "model_name": model_name}
    write_params(project_dir, {"register": overrides})
    _load_cached.cache_clear()
    return project_dir


def register_standin(
    root: Path,
    hypotheses: list[str],
    references: list[str],
    actor: str = "pytest",
    on_step: Any = None,
) -> Any:
    """Register the upper-casing stand-in with these evaluation outputs; the result.

    `on_step(name)` runs after the registration steps "logged" and "versioned".
    """
    from pipeline.config import load_config
    from pipeline.paths import project_paths
    from pipeline.registry.commands import build_candidate
    from pipeline.registry.gate import GateRules
    from pipeline.registry.registration import register_candidate
    from pipeline.registry.store import Registry

    write_evaluation(root, hypotheses, references)
    config, paths = load_config(), project_paths()
    registry = Registry.connect(paths, config.register.model_name)
    candidate = build_candidate(paths, config)
    rules = GateRules.from_config(config.register, config.seed)
    spec = uppercase_spec(root.parent / "standin")
    return register_candidate(registry, spec, candidate, rules, actor, on_step=on_step)
