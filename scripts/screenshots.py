"""The screenshots in docs/img: the MLflow UI over a real trained project, the Airflow UI running
a tiny retrain.

    .venv/bin/python scripts/screenshots.py [--project DIR] [--only mlflow|airflow] [--out DIR]

MLflow: `mlflow server` on a free port of 127.0.0.1 over a copy of `--project`'s store (a project
where `make repro` ran: `mlruns.db`, `mlartifacts/`, `reports/registration.json`); the copy keeps
the server from writing into that project (SQLite journals, schema upgrades). Pages: the
registered model, the version `make repro` registered (model card), its training run and its
logged model.

Airflow: `airflow standalone` in a scratch AIRFLOW_HOME (SQLite metadata DB) with the repo's
dags/ and MT_PROJECT_DIR at a tiny throw-away project (a few sentences, one epoch of a tiny
model), so the run it triggers from the form never touches a real project. Pages: the DAG list,
the trigger form, and the finished run's grid.

Debian's Chromium (`make browser`) through Playwright. The pictures are written to a scratch
folder first and copied into `--out` only when every page of the chosen part was taken, so a
failure leaves docs/img as it was. `make screenshots` runs this with the defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml
from playwright.sync_api import Page, ViewportSize, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

log = logging.getLogger("screenshots")

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-sync",
    "--disable-background-networking", "--disable-component-update",
]  # fmt: skip
VIEWPORT = ViewportSize(width=1400, height=1000)
UI_TIMEOUT_MS = 120_000  # both UIs are slow to render on a loaded 2-core machine
# Both UIs poll their APIs, so the network is never idle: after the text we wait for appears,
# give the rest of the page (tables, charts, icons) a moment to render.
SETTLE_MS = 3000
SERVER_START_S = 300  # Airflow takes 60+ s to come up on a loaded 2-core machine
RUN_DEADLINE_S = 15 * 60  # the tiny retrain takes 2-4 minutes
DAG_ID = "retrain_translation"
API_TIMEOUT_S, API_TRIES = 60, 5


class ScreenshotError(RuntimeError):
    """A reason this script cannot take its pictures, said in one line."""


# --- servers: one process group each, stopped whatever happens ------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def process_group(command: list[str], env: dict[str, str], cwd: Path) -> Iterator[Path]:
    """Run `command` in its own session, output to cwd/server.log; yields the log's path.
    On exit the whole group (the server and the workers it forked) is stopped."""
    log_file = cwd / "server.log"
    with log_file.open("wb") as sink:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield log_file
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def wait_for(url: str, is_ready: Any, log_file: Path, timeout_s: float = SERVER_START_S) -> None:
    """Poll `url` until `is_ready(response)`; a server that never answers names its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException, ValueError):
            if is_ready(requests.get(url, timeout=5)):
                return
        time.sleep(2)
    raise ScreenshotError(f"{url} not ready after {timeout_s:.0f} s; see {log_file}")


def server_environ(extra: dict[str, str]) -> dict[str, str]:
    """This environment without MLflow/Airflow settings, the venv first on PATH (MLflow and
    Airflow exec their helpers by name), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env | extra


# --- the browser ---------------------------------------------------------------------------


@contextlib.contextmanager
def chromium_page(scratch: Path) -> Iterator[Page]:
    """One headless Chromium tab (Playwright's sync API). A page that never shows what we wait
    for ends the script with its address, and what it did show is kept as failed-page.png."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(UI_TIMEOUT_MS)
        try:
            yield page
        except PlaywrightTimeoutError as error:
            page.screenshot(path=scratch / "failed-page.png")
            waited = str(error).splitlines()[0]
            raise ScreenshotError(f"{page.url}: {waited} (see failed-page.png)") from error
        finally:
            browser.close()


def shoot(page: Page, path: Path, height: int = VIEWPORT["height"]) -> Path:
    """Screenshot the page; `height` makes the window that tall first. Both UIs scroll inside
    a panel, so a full-page shot shows no more than the window: a long page needs a tall one."""
    page.set_viewport_size(ViewportSize(width=VIEWPORT["width"], height=height))
    page.wait_for_timeout(SETTLE_MS)
    page.screenshot(path=path)
    page.set_viewport_size(VIEWPORT)
    log.info("took %s", path.name)
    return path


def wait_for_text(page: Page, *texts: str) -> None:
    for text in texts:
        page.get_by_text(text).first.wait_for()


# --- MLflow: the registered version of a real project --------------------------------------


@dataclass(frozen=True)
class Registered:
    """Where the project's registered version lives in its MLflow store."""

    model_name: str
    version: str
    experiment_id: str
    run_id: str
    model_id: str


def read_registration(project: Path) -> dict[str, Any]:
    """reports/registration.json, which the register stage writes; refuses a project without
    it, or one registered on a tracking server rather than in its own SQLite store."""
    report = project / "reports" / "registration.json"
    store = project / "mlruns.db"
    missing = [str(path.relative_to(project)) for path in (store, report) if not path.is_file()]
    if missing:
        raise ScreenshotError(
            f"{project} has no registered model (no {' or '.join(missing)}): "
            "run `make repro` there first, or pass --project DIR"
        )
    registration: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    if registration.get("tracking_uri") != f"sqlite:///{store}":
        raise ScreenshotError(
            f"{report} names the store {registration.get('tracking_uri')}, not {store}: "
            "this script shows a project's own SQLite store (MLFLOW_TRACKING_URI unset)"
        )
    return registration


def copy_store(project: Path, scratch: Path) -> Path:
    """A consistent copy of mlruns.db (SQLite's backup API, safe while others read it)."""
    copy = scratch / "mlruns.db"
    source = sqlite3.connect(f"file:{project / 'mlruns.db'}?mode=ro", uri=True)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return copy


def find_registered(store: Path, registration: dict[str, Any]) -> Registered:
    """The version registration.json names, with its run's experiment and its logged model."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{store}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name, version = registration["model_name"], str(registration["version"])
    model_version = client.get_model_version(name, version)
    run_id = str(model_version.run_id or registration["run_id"])
    return Registered(
        model_name=name,
        version=version,
        experiment_id=str(client.get_run(run_id).info.experiment_id),
        run_id=run_id,
        model_id=str(model_version.source).removeprefix("models:/"),
    )


@contextlib.contextmanager
def mlflow_server(store: Path) -> Iterator[str]:
    """`mlflow server` over the copied store; artifacts stay where the project logged them
    (absolute file: URIs into its mlartifacts/), which the server only reads."""
    port = free_port()
    command = [
        str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{store}",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    # No job runner (huey consumers and their workers): a UI over a copy runs no jobs.
    env = server_environ({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    with process_group(command, env, store.parent) as log_file:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/health", lambda response: response.status_code == 200, log_file)
        yield url


def close_assistant_panel(page: Page) -> None:
    """MLflow 3 opens its "Assistant" side panel on a first visit; it would hide half of every
    page. Closed once, it stays closed for the session."""
    close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    close.first.click()
    close.first.wait_for(state="hidden")


def shoot_mlflow(page: Page, url: str, model: Registered, shots: Path) -> list[Path]:
    name, experiment = model.model_name, model.experiment_id
    page.goto(f"{url}/#/models/{name}")
    close_assistant_panel(page)
    wait_for_text(page, f"Version {model.version}")
    taken = [shoot(page, shots / "mlflow-model.png")]
    page.goto(f"{url}/#/models/{name}/versions/{model.version}")
    wait_for_text(page, "Test scores", "Gate verdict", "Known limits")
    taken.append(shoot(page, shots / "mlflow-version.png", height=2400))
    page.goto(f"{url}/#/experiments/{experiment}/runs/{model.run_id}")
    show_bleu_metrics(page)
    taken.append(shoot(page, shots / "mlflow-run.png", height=1400))
    page.goto(f"{url}/#/experiments/{experiment}/models/{model.model_id}")
    show_bleu_metrics(page)
    taken.append(shoot(page, shots / "mlflow-logged-model.png", height=1250))
    return taken


def show_bleu_metrics(page: Page) -> None:
    """Narrow the metrics table to BLEU: it lists training curves first, and the test scores
    would be scrolled out of the picture."""
    wait_for_text(page, "Metrics (")
    page.get_by_placeholder("Search metrics").fill("bleu")
    page.get_by_role("row").filter(has_text=".bleu").first.wait_for()


def take_mlflow(project: Path, scratch: Path) -> list[Path]:
    registration = read_registration(project)
    store = copy_store(project, scratch)
    model = find_registered(store, registration)
    log.info("MLflow: %s version %s of %s", model.model_name, model.version, project)
    with mlflow_server(store) as url, chromium_page(scratch) as page:
        return shoot_mlflow(page, url, model, scratch)


# --- Airflow: a tiny retrain, triggered from the form ---------------------------------------

# Small enough that the whole DAG runs in a few minutes on 2 cores: tests/conftest.py's sizes
# and sentences (fewer sentences would not support the 120-piece vocabulary).
TINY_PARAMS: dict[str, Any] = {
    "validate": {"min_rows": 5, "min_train_rows": 20},
    "tokenize": {"vocab_size": 120, "model_type": "unigram"},
    "model": {"embedding_dim": 32, "hidden_units": 32, "dropout": 0.0},
    "train": {"epochs": 1, "batch_size": 8, "warmup_steps": 5, "patience": 2, "average_last": 1},
    "decode": {"beam_size": 2},
    "evaluate": {"bootstrap_resamples": 50, "samples": 3, "attention_maps": 1},
    "register": {"min_score": 0.0, "bootstrap_resamples": 50},
    # No schedule: unpausing a weekly DAG would start the latest missed interval at once.
    "orchestration": {"schedule": "none"},
}
SEED_PAIRS = [
    ("A dog runs on the beach.", "Ein Hund läuft am Strand."),
    ("Two men are playing soccer.", "Zwei Männer spielen Fußball."),
    ("A woman is reading a book.", "Eine Frau liest ein Buch."),
    ("A child jumps into the water.", "Ein Kind springt ins Wasser."),
    ("The man is riding a bike.", "Der Mann fährt Fahrrad."),
    ("A girl is eating an apple.", "Ein Mädchen isst einen Apfel."),
    ("People walk down the street.", "Leute gehen die Straße entlang."),
    ("A cat sleeps on the sofa.", "Eine Katze schläft auf dem Sofa."),
    ("The boy throws a red ball.", "Der Junge wirft einen roten Ball."),
    ("A band plays music outside.", "Eine Band spielt draußen Musik."),
]
CORPUS_SPLITS = {"train": (60, 0), "val": (10, 100), "test_2016_flickr": (10, 200)}


def tiny_pairs(count: int, offset: int) -> list[tuple[str, str]]:
    """`count` distinct pairs: the seed sentences numbered, so no row repeats across splits."""
    pairs = []
    for i in range(offset, offset + count):
        en, de = SEED_PAIRS[i % len(SEED_PAIRS)]
        number = i // len(SEED_PAIRS)
        pairs.append((f"{en[:-1]} number {number}.", f"{de[:-1]} Nummer {number}."))
    return pairs


def write_corpus(directory: Path) -> Path:
    """`{split}.en` / `{split}.de`, one sentence a line: what a `dir` data source reads."""
    directory.mkdir(parents=True)
    for split, (count, offset) in CORPUS_SPLITS.items():
        pairs = tiny_pairs(count, offset)
        for side, lang in enumerate(("en", "de")):
            text = "".join(pair[side] + "\n" for pair in pairs)
            (directory / f"{split}.{lang}").write_text(text, encoding="utf-8")
    return directory


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def make_tiny_project(root: Path, corpus: Path) -> Path:
    """A git + DVC project with this repo's pipeline and the tiny params; `.venv` links to the
    repo's, where the DAG looks for `dvc` and `mt`."""
    root.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", "requirements.lock", "pyproject.toml"):
        shutil.copy2(REPO_ROOT / name, root / name)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO_ROOT / "pipeline", root / "pipeline", ignore=ignore)
    (root / ".venv").symlink_to(REPO_ROOT / ".venv")
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    params = deep_merge(params, TINY_PARAMS | {"data": {"source": "dir", "path": str(corpus)}})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    (root / ".gitignore").write_text(".venv\nmlruns.db\nmlartifacts/\n", encoding="utf-8")
    git = ["git", "-c", "user.name=screenshots", "-c", "user.email=screenshots@localhost"]
    commands = [
        ["git", "init", "-q"],
        [str(VENV_BIN / "dvc"), "init", "-q"],
        ["git", "add", "-A"],
        [*git, "commit", "-q", "-m", "tiny project"],
    ]
    for command in commands:
        subprocess.run(command, cwd=root, check=True, capture_output=True)
    return root


def airflow_environ(home: Path, project: Path, port: int) -> dict[str, str]:
    """`airflow standalone` on 127.0.0.1:`port` with its own home and SQLite DB, our DAGs and
    the tiny project (tests/airflow_harness.py runs it the same way)."""
    base_url = f"http://127.0.0.1:{port}"
    return server_environ({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        # A loaded machine can take longer than the default 5 s to answer a task's calls.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "MT_PROJECT_DIR": str(project),
        "CI": "true",
        "DVC_NO_ANALYTICS": "1",
    })  # fmt: skip


@dataclass
class Airflow:
    """A running `airflow standalone`: its UI address, admin login and a REST API v2 client."""

    url: str
    password: str
    log_file: Path
    token: str = ""

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """An idempotent REST call (GET, PATCH), retried when it times out: on a loaded 2-core
        machine the one api-server worker, which also answers the running tasks, can stall."""
        for attempt in range(1, API_TRIES + 1):
            try:
                return self._request(method, path, **kwargs)
            except (requests.Timeout, requests.ConnectionError) as error:
                log.info("Airflow: %s %s, try %d: %s", method, path, attempt, error)
        raise ScreenshotError(f"Airflow did not answer {method} {path}; see {self.log_file}")

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        if not self.token:
            login = {"username": "admin", "password": self.password}
            response = requests.post(f"{self.url}/auth/token", json=login, timeout=API_TIMEOUT_S)
            response.raise_for_status()
            self.token = response.json()["access_token"]
        headers = {"Authorization": f"Bearer {self.token}"}
        response = requests.request(
            method, f"{self.url}/api/v2{path}", headers=headers, timeout=API_TIMEOUT_S, **kwargs
        )
        response.raise_for_status()
        return response.json() if response.content else None


def scheduler_healthy(response: requests.Response) -> bool:
    return bool(response.json().get("scheduler", {}).get("status") == "healthy")


@contextlib.contextmanager
def airflow_standalone(home: Path, project: Path) -> Iterator[Airflow]:
    home.mkdir()
    port = free_port()
    env = airflow_environ(home, project, port)
    with process_group([str(VENV_BIN / "airflow"), "standalone"], env, home) as log_file:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/api/v2/monitor/health", scheduler_healthy, log_file)
        passwords = home / "simple_auth_manager_passwords.json.generated"
        yield Airflow(url, json.loads(passwords.read_text(encoding="utf-8"))["admin"], log_file)


def raise_on_import_error(airflow: Airflow) -> None:
    """A DAG that stops importing leaves its tasks rescheduled forever: fail at once instead."""
    errors = airflow.api("GET", "/importErrors")["import_errors"]
    if errors:
        last_line = errors[0]["stack_trace"].strip().splitlines()[-1]
        raise ScreenshotError(f"DAG import error in {errors[0]['filename']}: {last_line}")


def wait_for_dag(airflow: Airflow, timeout_s: float = 300) -> None:
    """Until the dag-processor has parsed the DAG."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        raise_on_import_error(airflow)
        with contextlib.suppress(requests.HTTPError):
            airflow.api("GET", f"/dags/{DAG_ID}")
            return
        time.sleep(3)
    raise ScreenshotError(f"{DAG_ID} not parsed within {timeout_s:.0f} s; see {airflow.log_file}")


def wait_for_run(airflow: Airflow, run_id: str) -> None:
    """Until the run ends; a failed run names its failed tasks (their logs are in the UI)."""
    deadline = time.monotonic() + RUN_DEADLINE_S
    while time.monotonic() < deadline:
        raise_on_import_error(airflow)
        state = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        if state == "success":
            return
        if state == "failed":
            found = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
            failed = [ti["task_id"] for ti in found["task_instances"] if ti["state"] == "failed"]
            raise ScreenshotError(f"the tiny run {run_id} failed at {', '.join(failed)}")
        time.sleep(5)
    raise ScreenshotError(f"the tiny run {run_id} still running after {RUN_DEADLINE_S} s")


def log_in(page: Page, airflow: Airflow) -> None:
    page.goto(f"{airflow.url}/")
    page.locator("input[name=username]").fill("admin")
    page.locator("input[name=password]").fill(airflow.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"))


def trigger_from_form(page: Page, airflow: Airflow, shots: Path) -> tuple[Path, str]:
    """Open the DAG's trigger form, set Epochs to 1, screenshot it and trigger the run."""
    page.goto(f"{airflow.url}/dags/{DAG_ID}")
    page.get_by_test_id("trigger-dag-button").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    dialog.get_by_label("Epochs").fill("1")
    form = shoot(page, shots / "airflow-trigger-form.png", height=1450)
    dialog.get_by_test_id("trigger-dag-submit").click()
    dialog.wait_for(state="hidden")
    runs = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
    if len(runs) != 1:
        raise ScreenshotError(f"expected the form's one run of {DAG_ID}, found {len(runs)}")
    return form, str(runs[0]["dag_run_id"])


def shoot_airflow(page: Page, airflow: Airflow, shots: Path) -> list[Path]:
    """The form and, once its run has finished, the run's grid and the DAG list."""
    log_in(page, airflow)
    form, run_id = trigger_from_form(page, airflow, shots)
    log.info("Airflow: waiting for run %s (up to %d min)", run_id, RUN_DEADLINE_S // 60)
    wait_for_run(airflow, run_id)
    page.goto(f"{airflow.url}/dags/{DAG_ID}/runs/{run_id}")
    page.get_by_test_id(f"grid-{run_id}-promote_challenger").wait_for()
    page.get_by_test_id("table-cell-state").first.wait_for()
    grid = shoot(page, shots / "airflow-run-grid.png", height=1100)
    page.goto(f"{airflow.url}/dags")
    page.get_by_role("link", name=DAG_ID).first.wait_for()
    return [shoot(page, shots / "airflow-dags.png"), form, grid]


def take_airflow(scratch: Path) -> list[Path]:
    project = make_tiny_project(scratch / "project", write_corpus(scratch / "corpus"))
    with airflow_standalone(scratch / "airflow_home", project) as airflow:
        wait_for_dag(airflow)
        airflow.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        with chromium_page(scratch) as page:
            return shoot_airflow(page, airflow, scratch)


# --- the command ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--project", type=Path, default=REPO_ROOT,
        help="a project where `make repro` ran (default: this repository)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "docs" / "img",
        help="where the pictures go (default: docs/img)",
    )  # fmt: skip
    parser.add_argument(
        "--only", choices=("mlflow", "airflow"), help="take one UI's pictures (default: both)"
    )
    return parser.parse_args(argv)


def check_ready(args: argparse.Namespace) -> None:
    """What would stop us is said before any server starts."""
    if not CHROMIUM.is_file():
        raise ScreenshotError(f"no {CHROMIUM}: run `make browser` (apt-get install chromium)")
    if args.only in (None, "mlflow"):
        read_registration(args.project)


def take_all(args: argparse.Namespace, scratch: Path) -> list[Path]:
    taken = []
    if args.only in (None, "mlflow"):
        (scratch / "mlflow").mkdir()
        taken += take_mlflow(args.project, scratch / "mlflow")
    if args.only in (None, "airflow"):
        (scratch / "airflow").mkdir()
        taken += take_airflow(scratch / "airflow")
    return taken


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    args.project = args.project.resolve()
    # A SIGTERM (a CI job's timeout) unwinds like Ctrl-C, so the servers' groups are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    try:
        check_ready(args)
    except ScreenshotError as error:
        print(f"screenshots: {error}", file=sys.stderr)
        return 1
    scratch = Path(tempfile.mkdtemp(prefix="mt-screenshots-"))
    try:
        taken = take_all(args, scratch)
    except ScreenshotError as error:
        print(f"screenshots: {error} (logs and pages kept in {scratch})", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for picture in taken:
        print(shutil.copy2(picture, args.out / picture.name))
    shutil.rmtree(scratch)
    log.info("done in %.0f s", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
