"""`make compose-check`: docker/compose.yaml's production stack started for real, end to end.

Where no Docker engine runs and no upstream image can be pulled, with Debian's podman:

1. bases: `debootstrap --variant=minbase bookworm`, `podman import`ed; then, through the
   check's compose override (docker/compose.check.yaml), local stand-ins built from it: Python
   3.11, uv, Airflow, PostgreSQL and Redis (docker/check/); then the project's three images from
   their Dockerfiles unchanged, on those bases through build arguments (CPU TensorFlow);
2. a podman network of the check's own; the whole stack `up`, service by service in the order
   of its `depends_on` (podman 4.3 runs no health checks by itself: the check runs them), the
   GPU worker left out (its queue served by the default worker), Flower on;
3. through public interfaces only (Airflow's and MLflow's REST APIs, the translator's HTTP port,
   all on 127.0.0.1): retrain_translation on a tiny corpus triggered with the Airflow admin's
   login until it succeeds; the version seen by `mt-promoter`; @champion moved by hand and the
   registry-webhooks receiver's record of it in the audit trail; a sentence translated;
4. `restart mlflow`, `restart postgres`: webhooks listed, a second run, the translator again;
5. `down` and `up`: versions, audit trail and DVC cache still there; finally `down --volumes`
   and the network removed (`--keep` leaves the stack up).

Every wait has a deadline. Writes benchmarks/results/compose_check.json (build times, time to
healthy, each step's time and outcome, image sizes), also when a step fails.

    python benchmarks/compose_check.py [--fresh] [--keep] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.machine import cpu_description  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "compose_check.json"
WORK_DIR = Path(
    os.environ.get("COMPOSE_CHECK_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mt-compose-check"
)
PROJECT = "mt-compose-check"
NETWORK = "mt-compose-check"
DEBIAN_IMAGE = "localhost/mt-check-debian:bookworm"
COMPOSE_FILES = ("docker/compose.yaml", "docker/compose.check.yaml")
PROFILES = ("flower", "serving")
BASES = ("check-python", "check-uv", "check-airflow", "postgres", "redis")
# The project's images, each built through one service of compose.yaml that uses it.
PROJECT_IMAGES = {
    "mt-mlflow": "mlflow",
    "mt-airflow": "airflow-apiserver",
    "mt-pipeline": "airflow-worker",
}
LATER = ("translator",)  # started once @champion exists
DAG_ID = "retrain_translation"
SENTENCE = "A man rides a bike."
# The tiny corpus: enough pairs for params.yaml's validate minimums (1000 train, 100 per split)
# and tokenize.vocab_size 8000 (SentencePiece needed about 5000 Multi30k train pairs).
CORPUS_SIZES = {"train": 6000, "val": 200, "test_2016_flickr": 200}
CORPUS_IN_VOLUME = "tiny"
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
RUN_TIMEOUT_S = 1800  # one retrain run on the tiny corpus
FOLLOW_TIMEOUT_S = 180  # the translator polls @champion every register.serve_poll_s (30 s)
MAX_RESTARTS = 5  # a service that crashes this often while starting will not come up
READY_TIMEOUT_S = 600  # one service, from `up` to healthy
DATA_ROOT = "/srv/mt/incoming"  # params.yaml orchestration.data_root; compose.check.yaml mounts
CONTAINERS_CONF = """\
# make compose-check's podman settings (CONTAINERS_CONF): the system defaults fail on this kind
# of host (setrlimit on default ulimits, systemd cgroups, the journald event log).
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


class CheckFailed(Exception):
    """A step that did not do what it should; the message is one line for the user."""


class Fatal(CheckFailed):
    """A failure no amount of waiting mends (a one-shot service that exited non-zero)."""


# --- running podman and podman-compose -------------------------------------------------------


@dataclass
class Check:
    work: Path
    env_file: Path
    ports: dict[str, int]
    secrets: dict[str, str]
    podman: str
    compose_cmd: list[str]
    services: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.work / "containers.conf")}

    def run(self, command: list[str], timeout_s: float, what: str) -> str:
        try:
            done = subprocess.run(
                command, env=self.env(), capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired as error:
            raise CheckFailed(f"{what}: no end after {timeout_s:.0f} s") from error
        if done.returncode != 0:
            tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
            raise CheckFailed(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}")
        return done.stdout

    def podman_out(self, *args: str, timeout_s: float = 120) -> str:
        return self.run([self.podman, *args], timeout_s, f"podman {args[0]}")

    def compose(self, *args: str, timeout_s: float = 600) -> str:
        what = " ".join(arg for arg in args if arg not in {"-d", "--no-deps"})
        return self.run([*self.compose_cmd, *args], timeout_s, f"podman-compose {what}")


def compose_command(podman_compose: str, env_file: Path) -> list[str]:
    files = [arg for path in COMPOSE_FILES for arg in ("-f", str(REPO / path))]
    profiles = [arg for name in PROFILES for arg in ("--profile", name)]
    return [podman_compose, "-p", PROJECT, *files, "--env-file", str(env_file), *profiles]


@contextmanager
def step(check: Check, name: str) -> Iterator[dict[str, Any]]:
    """Time one step and record its outcome; a failure is recorded, then raised."""
    record: dict[str, Any] = {"step": name}
    check.steps.append(record)
    started = time.monotonic()
    print(f"-- {name}", flush=True)
    try:
        yield record
    except Exception as error:
        message = str(error) if isinstance(error, CheckFailed) else repr(error)
        record.update(ok=False, error=message)
        raise
    finally:
        record["seconds"] = round(time.monotonic() - started, 1)
    record["ok"] = True
    print(f"   ok, {record['seconds']:.1f} s", flush=True)


def wait_until(probe: Callable[[], Any], timeout_s: float, what: str, every_s: float = 3) -> Any:
    """Call `probe` until it returns something truthy; CheckFailed after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            answer = probe()
        except Fatal:
            raise
        except (CheckFailed, OSError, ValueError, KeyError) as error:
            answer, last = None, str(error).splitlines()[0][:200] if str(error) else ""
        if answer:
            return answer
        time.sleep(every_s)
    raise CheckFailed(
        f"{what}: not within {timeout_s:.0f} s" + (f" (last: {last})" if last else "")
    )


# --- preparing: tools, secrets, ports, corpus -------------------------------------------------


def find_tools(work: Path) -> tuple[str, str]:
    """podman and podman-compose, or a one-line error naming `make compose-packages`."""
    podman = shutil.which("podman")
    compose = work / "venv" / "bin" / "podman-compose"
    missing = [name for name in ("runc", "debootstrap") if not shutil.which(name)]
    missing += [] if podman else ["podman"]
    missing += [] if compose.exists() else [str(compose)]
    if missing or podman is None:
        what = ", ".join(missing)
        raise CheckFailed(f"missing {what}: run `make compose-packages` (as root) first")
    return podman, str(compose)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def write_env_file(work: Path) -> tuple[Path, dict[str, int], dict[str, str]]:
    """docker/make-env.sh's fresh secrets, plus the check's own settings."""
    target = work / "check.env"
    target.unlink(missing_ok=True)
    subprocess.run([str(REPO / "docker" / "make-env.sh"), str(target)], check=True, timeout=30)
    names = ("AIRFLOW_PORT", "MLFLOW_PORT", "TRANSLATOR_PORT", "FLOWER_PORT")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    settings = {
        **{name: str(port) for name, port in ports.items()},
        "MT_BIND_ADDRESS": "127.0.0.1",
        "MT_IMAGE_TAG": "check",
        "MT_WORKER_QUEUES": "default,gpu",
        "MT_CHECK_DEBIAN_IMAGE": DEBIAN_IMAGE,
        "MT_CHECK_NETWORK": NETWORK,
    }
    lines = [
        line for line in target.read_text().splitlines() if line.split("=")[0] not in settings
    ]
    lines += [f"{name}={value}" for name, value in settings.items()]
    target.write_text("\n".join(lines) + "\n")
    secrets = dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")
    return target, ports, secrets


def tiny_corpus_tar(corpus: Path, work: Path) -> Path:
    """The first pairs of each Multi30k split, as `tiny/{split}.{lang}` in a tarball."""
    folder = work / "corpus" / CORPUS_IN_VOLUME
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in CORPUS_SIZES.items():
        for lang in ("en", "de"):
            source = corpus / f"{split}.{lang}.gz"
            if not source.is_file():
                raise CheckFailed(f"no {source}: put Multi30k's .gz files there or pass --corpus")
            with gzip.open(source, "rt", encoding="utf-8") as lines:
                head = [next(lines) for _ in range(count)]
            (folder / f"{split}.{lang}").write_text("".join(head), encoding="utf-8")
    archive = work / "corpus.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname=CORPUS_IN_VOLUME)
    return archive


# --- images -----------------------------------------------------------------------------------


def bootstrap_debian(check: Check, fresh: bool) -> str:
    """Debian 12 minbase from Debian's archive, imported as DEBIAN_IMAGE (kept between runs)."""
    exists = subprocess.run([check.podman, "image", "exists", DEBIAN_IMAGE], env=check.env())
    if exists.returncode == 0 and not fresh:
        return "reused"
    rootfs = check.work / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    check.run(
        [
            "debootstrap",
            "--variant=minbase",
            "bookworm",
            str(rootfs),
            "http://deb.debian.org/debian",
        ],
        900,
        "debootstrap",
    )
    trust_local_cas(rootfs)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        [check.podman, "import", "-q", "-", DEBIAN_IMAGE],
        stdin=tar.stdout,
        env=check.env(),
        capture_output=True,
        timeout=600,
    )
    tar.wait(timeout=60)
    if imported.returncode != 0:
        raise CheckFailed(f"podman import: {imported.stderr.decode().strip()[-300:]}")
    shutil.rmtree(rootfs, ignore_errors=True)
    return "bootstrapped"


def trust_local_cas(rootfs: Path) -> list[str]:
    """The host's local CAs (/usr/local/share/ca-certificates) for the builds: behind a proxy
    that re-signs TLS, pip and uv reach PyPI only with them. The bases' ca-certificates package
    adds them to the system store; the check's images are for the check only."""
    target = rootfs / "usr" / "local" / "share" / "ca-certificates"
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for certificate in sorted(LOCAL_CAS.glob("*.crt")):
        shutil.copy2(certificate, target / certificate.name)
        copied.append(certificate.name)
    return copied


def build_images(check: Check, fresh: bool) -> dict[str, float]:
    """The local bases, then the project's images; seconds per build."""
    extra = ["--no-cache"] if fresh else []
    seconds = {}
    for service in BASES:
        started = time.monotonic()
        check.compose("--profile", "check-bases", "build", *extra, service, timeout_s=3600)
        seconds[service] = round(time.monotonic() - started, 1)
    for image, service in PROJECT_IMAGES.items():
        started = time.monotonic()
        check.compose("build", *extra, service, timeout_s=3600)
        seconds[image] = round(time.monotonic() - started, 1)
    return seconds


def image_sizes(check: Check) -> dict[str, float]:
    """MB of each image the stack runs (and of the build-only bases)."""
    names = {service["image"] for service in check.services.values()}
    names |= {"mt-check-python:3.11", "mt-check-uv:0.13.9", "mt-check-airflow:3.3.2"}
    sizes = {}
    for name in sorted(names):
        local = name if name.startswith("localhost/") else f"localhost/{name}"
        size = check.podman_out("image", "inspect", "--format", "{{.Size}}", local)
        sizes[local.removeprefix("localhost/")] = round(int(size.strip()) / 1e6, 1)
    return sizes


# --- the stack --------------------------------------------------------------------------------


def load_services(check: Check) -> dict[str, Any]:
    merged = yaml.safe_load(check.compose("config", timeout_s=60))
    services: dict[str, Any] = merged["services"]
    return {name: s for name, s in services.items() if not name.startswith("check-")}


def start_order(services: dict[str, Any]) -> list[str]:
    """Service names so that each comes after everything it depends on."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise CheckFailed(f"compose: depends_on cycle {' -> '.join((*path, name))}")
        for dependency in services[name].get("depends_on") or {}:
            visit(dependency, (*path, name))
        order.append(name)

    for name in sorted(services):
        visit(name, ())
    return order


def container_of(check: Check, service: str) -> str:
    found = check.podman_out(
        "ps",
        "-a",
        "--format",
        "{{.ID}}",
        "--filter",
        f"label=io.podman.compose.project={PROJECT}",
        "--filter",
        f"label=com.docker.compose.service={service}",
    ).split()
    if not found:
        raise CheckFailed(f"no container for service {service}")
    return found[0]


def container_state(check: Check, container: str) -> tuple[str, int, int]:
    """Status, exit code and how often podman restarted it (restart: unless-stopped)."""
    state = check.podman_out(
        "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}", container
    )
    status, code, restarts = state.split()
    return status, int(code), int(restarts)


def logs_tail(check: Check, container: str, lines: int = 5) -> str:
    done = subprocess.run(
        [check.podman, "logs", "--tail", str(lines), container],
        env=check.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return " | ".join((done.stdout + done.stderr).strip().splitlines()[-lines:])


def wait_ready(check: Check, service: str, timeout_s: float) -> None:
    """Healthy (its health check run by the check), exited 0 (a one-shot), or running."""
    container = container_of(check, service)
    spec = check.services[service]
    one_shot = spec.get("restart") == "no"

    def ready() -> bool:
        status, code, restarts = container_state(check, container)
        if restarts > MAX_RESTARTS:
            raise Fatal(f"{service} restarted {restarts} times: {logs_tail(check, container)}")
        if status == "exited" and (one_shot or code != 0):
            if code == 0:
                return True
            raise Fatal(f"{service} exited {code}: {logs_tail(check, container)}")
        if "healthcheck" not in spec or one_shot:
            return status == "running" and not one_shot
        probe = subprocess.run(
            [check.podman, "healthcheck", "run", container],
            env=check.env(),
            capture_output=True,
            timeout=120,
        )
        return probe.returncode == 0

    try:
        wait_until(ready, timeout_s, f"{service} ready", every_s=5)
    except CheckFailed as error:
        raise CheckFailed(f"{error}; its log: {logs_tail(check, container)}") from error


def start_services(check: Check, names: list[str], timeout_s: float) -> dict[str, float]:
    """`up -d --no-deps` each service in dependency order, each ready before the next."""
    seconds = {}
    for name in names:
        started = time.monotonic()
        check.compose("up", "-d", "--no-deps", name, timeout_s=300)
        wait_ready(check, name, timeout_s)
        seconds[name] = round(time.monotonic() - started, 1)
        print(f"   {name}: ready after {seconds[name]:.0f} s", flush=True)
    return seconds


def service_users(check: Check) -> dict[str, str]:
    """The uid each running service's main process runs as; none may be root."""
    users = {}
    for service in check.services:
        found = subprocess.run(
            [check.podman, "ps", "-q", "--filter", f"label=io.podman.compose.project={PROJECT}",
             "--filter", f"label=com.docker.compose.service={service}"],
            env=check.env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if found.stdout.split():
            users[service] = check.podman_out("exec", found.stdout.split()[0], "id", "-u").strip()
    roots = sorted(name for name, uid in users.items() if uid == "0")
    if roots:
        raise CheckFailed(f"services running as root: {roots}")
    return users


def stack_services(check: Check) -> list[str]:
    return [name for name in start_order(check.services) if name not in LATER]


def load_corpus(check: Check, archive: Path) -> None:
    volume = f"{PROJECT}_mt-corpus"
    check.podman_out("volume", "create", volume)
    check.podman_out("volume", "import", volume, str(archive))


def remove_leftovers(check: Check) -> None:
    """A previous run's stack, volumes and network, if any (a failed run with --keep)."""
    check.compose("down", "--volumes", timeout_s=600)
    for volume in check.podman_out("volume", "ls", "--format", "{{.Name}}").split():
        if volume.startswith(f"{PROJECT}_"):
            check.podman_out("volume", "rm", "--force", volume)
    exists = subprocess.run([check.podman, "network", "exists", NETWORK], env=check.env())
    if exists.returncode == 0:
        check.podman_out("network", "rm", "--force", NETWORK)


# --- public interfaces: HTTP on 127.0.0.1 ----------------------------------------------------


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """One request; (status, headers, JSON body or text). Never raises on an HTTP status."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            status, raw, head = answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        status, raw, head = error.code, error.read(), dict(error.headers)
    try:
        return status, head, json.loads(raw or b"null")
    except json.JSONDecodeError:
        return status, head, raw.decode(errors="replace")


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def expect(answer: tuple[int, dict[str, str], Any], what: str) -> Any:
    status, _, body = answer
    if not 200 <= status < 300:
        raise CheckFailed(f"{what}: HTTP {status} {' '.join(str(body).split())[:200]}")
    return body


class Airflow:
    def __init__(self, check: Check) -> None:
        self.base = f"http://127.0.0.1:{check.ports['AIRFLOW_PORT']}"
        self.login = {
            "username": check.secrets.get("AIRFLOW_ADMIN_USER") or "admin",
            "password": check.secrets["AIRFLOW_ADMIN_PASSWORD"],
        }

    def api(self, method: str, path: str, body: Any = None) -> Any:
        token = expect(http("POST", f"{self.base}/auth/token", self.login), "Airflow login")
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        return expect(http(method, f"{self.base}/api/v2{path}", body, headers), f"{method} {path}")

    def trigger(self, conf: dict[str, Any]) -> str:
        wait_until(lambda: self.api("GET", f"/dags/{DAG_ID}"), 300, f"{DAG_ID} parsed")
        self.api("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
        run = self.api("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
        return str(run["dag_run_id"])

    def wait_for_run(self, run_id: str, timeout_s: float) -> str:
        path = f"/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"

        def finished() -> str | None:
            state = str(self.api("GET", path)["state"])
            return state if state in {"success", "failed"} else None

        state = wait_until(finished, timeout_s, f"run {run_id}", every_s=10)
        if state != "success":
            failed = [
                task["task_id"]
                for task in self.api("GET", f"{path}/taskInstances")["task_instances"]
                if task["state"] not in {"success", "skipped"}
            ]
            raise CheckFailed(f"run {run_id} {state}; tasks not successful: {failed}")
        return state


class Mlflow:
    def __init__(self, check: Check) -> None:
        self.base = f"http://127.0.0.1:{check.ports['MLFLOW_PORT']}"
        self.promoter = basic("mt-promoter", check.secrets["MT_PROMOTER_PASSWORD"])
        self.admin = basic("admin", check.secrets["MLFLOW_ADMIN_PASSWORD"])
        self.model = load_model_name()

    def call(self, method: str, path: str, body: Any = None, admin: bool = False) -> Any:
        headers = self.admin if admin else self.promoter
        return expect(http(method, f"{self.base}{path}", body, headers), f"MLflow {path}")

    def versions(self) -> list[str]:
        query = urllib.parse.urlencode({"filter": f"name='{self.model}'", "max_results": 100})
        found = self.call("GET", f"/api/2.0/mlflow/model-versions/search?{query}")
        return sorted((v["version"] for v in found.get("model_versions", [])), key=int)

    def champion(self) -> str | None:
        query = urllib.parse.urlencode({"name": self.model, "alias": "champion"})
        status, _, body = http(
            "GET",
            f"{self.base}/api/2.0/mlflow/registered-models/alias?{query}",
            None,
            self.promoter,
        )
        return str(body["model_version"]["version"]) if status == 200 else None

    def move_champion(self, version: str) -> None:
        body = {"name": self.model, "alias": "champion", "version": version}
        self.call("POST", "/api/2.0/mlflow/registered-models/alias", body)

    def webhook_moves(self, version: str) -> int:
        """Audit-trail runs the webhook receiver recorded for a move of @champion to `version`."""
        experiment = self.call(
            "GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=registry-audit"
        )["experiment"]["experiment_id"]
        filter_string = (
            f"tags.`mt.outside.source` = 'webhook' AND tags.`mt.to_version` = '{version}'"
        )
        body = {"experiment_ids": [experiment], "filter": filter_string, "max_results": 100}
        return len(self.call("POST", "/api/2.0/mlflow/runs/search", body).get("runs", []))

    def audit_runs(self) -> int:
        experiment = self.call(
            "GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=registry-audit"
        )["experiment"]["experiment_id"]
        body = {"experiment_ids": [experiment], "max_results": 1000}
        return len(self.call("POST", "/api/2.0/mlflow/runs/search", body).get("runs", []))

    def webhooks(self) -> list[dict[str, Any]]:
        found = self.call("GET", "/api/2.0/mlflow/webhooks", admin=True).get("webhooks", [])
        return [
            {"name": w.get("name"), "url": w.get("url"), "status": w.get("status")} for w in found
        ]


def load_model_name() -> str:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    return str(params["register"]["model_name"])


def translate(check: Check, sentence: str) -> dict[str, Any]:
    """A sentence through the translator: its translation and, where named, the version."""
    url = f"http://127.0.0.1:{check.ports['TRANSLATOR_PORT']}/invocations"
    body = {"dataframe_split": {"columns": ["text"], "data": [[sentence]]}}
    status, headers, answer = http("POST", url, body)
    if status != 200:
        raise CheckFailed(f"translator: HTTP {status} {str(answer)[:200]}")
    prediction = answer["predictions"][0]
    text = prediction.get("translation") if isinstance(prediction, dict) else prediction
    if not isinstance(text, str) or not text.strip():
        raise CheckFailed(f"translator: no translation in {str(answer)[:200]}")
    lowered = {name.lower(): value for name, value in headers.items()}
    version = lowered.get("x-model-version") or answer.get("model_version")
    return {"source": sentence, "translation": text, "model_version": version}


def dvc_cache_files(check: Check) -> int:
    out = check.podman_out(
        "exec", container_of(check, "airflow-worker"), "find", "/opt/mt/dvc-cache", "-type", "f"
    )
    return len(out.split())


def flower_workers(check: Check) -> list[str]:
    url = f"http://127.0.0.1:{check.ports['FLOWER_PORT']}/api/workers?refresh=1"
    user = check.secrets.get("AIRFLOW_ADMIN_USER") or "admin"
    headers = basic(user, check.secrets["AIRFLOW_ADMIN_PASSWORD"])
    return sorted(expect(http("GET", url, None, headers), "Flower /api/workers"))


# --- the scenario -----------------------------------------------------------------------------


def run_retrain(check: Check, airflow: Airflow, mlflow: Mlflow, epochs: int) -> dict[str, Any]:
    """One retrain_translation run on the tiny corpus; the versions it left."""
    before = mlflow.versions()
    conf = {"data_source": "dir", "data_path": f"{DATA_ROOT}/{CORPUS_IN_VOLUME}", "epochs": epochs}
    run_id = airflow.trigger(conf)
    started = time.monotonic()
    state = airflow.wait_for_run(run_id, RUN_TIMEOUT_S)
    new = wait_until(
        lambda: sorted(set(mlflow.versions()) - set(before), key=int), 120, "a new version"
    )
    seconds = round(time.monotonic() - started, 1)
    return {"run_id": run_id, "state": state, "seconds": seconds, "new_versions": new}


def move_and_see_webhook(mlflow: Mlflow, version: str) -> dict[str, Any]:
    """@champion moved to `version` as mt-promoter through MLflow's REST API (as the UI does),
    and the registry-webhooks receiver's new audit-trail record of that move."""
    before, champion = mlflow.webhook_moves(version), mlflow.champion()
    if champion == version:
        raise CheckFailed(f"@champion is already {version}: no move for the webhook to report")
    mlflow.move_champion(version)
    if mlflow.champion() != version:
        raise CheckFailed(f"@champion is {mlflow.champion()}, not {version}, after the move")
    wait_until(lambda: mlflow.webhook_moves(version) > before, 120, "the webhook's audit record")
    recorded = mlflow.webhook_moves(version) - before
    return {"champion_before": champion, "champion": version, "webhook_records": recorded}


def wait_for_translator_version(check: Check, version: str, timeout_s: float) -> dict[str, Any]:
    """The translator's answer once it names `version` (when it names none, its first answer)."""

    def answered() -> dict[str, Any] | None:
        answer = translate(check, SENTENCE)
        named = answer["model_version"]
        return answer if named is None or str(named) == version else None

    result: dict[str, Any] = wait_until(answered, timeout_s, f"translator on version {version}")
    return result


def scenario(check: Check, args: argparse.Namespace) -> None:
    check.results["fresh_build"] = args.fresh
    with step(check, "prepare: Debian base") as record:
        record["debian_base"] = bootstrap_debian(check, args.fresh)
    with step(check, "build images") as record:
        record["build_seconds"] = build_images(check, args.fresh)
        check.results["build_seconds"] = record["build_seconds"]
    check.services = load_services(check)
    check.results["image_sizes_mb"] = image_sizes(check)
    with step(check, "network and tiny corpus"):
        remove_leftovers(check)
        check.podman_out("network", "create", NETWORK)
        load_corpus(check, tiny_corpus_tar(args.corpus, check.work))
    with step(check, "up: every service ready") as record:
        record["services"] = start_services(check, stack_services(check), READY_TIMEOUT_S)
        check.results["time_to_healthy_s"] = round(sum(record["services"].values()), 1)
        record["uids"] = service_users(check)
    airflow, mlflow = Airflow(check), Mlflow(check)
    with step(check, "flower lists the worker") as record:
        record["workers"] = wait_until(lambda: flower_workers(check), 120, "a worker in Flower")
    with step(check, "retrain run 1 (Airflow REST API, admin login)") as record:
        record.update(run_retrain(check, airflow, mlflow, epochs=1))
    first = record["new_versions"][-1]
    with step(check, "version seen by mt-promoter") as record:
        record["versions"] = mlflow.versions()
        record["champion_before"] = mlflow.champion()
        if first not in record["versions"]:
            raise CheckFailed(f"mt-promoter does not see version {first}: {record['versions']}")
    with step(check, "@champion moved by hand; webhook recorded it") as record:
        record.update(move_and_see_webhook(mlflow, first))
    with step(check, "translator serves @champion") as record:
        record["services"] = start_services(check, list(LATER), READY_TIMEOUT_S)
        record["answer"] = wait_for_translator_version(check, first, 60)
    restarts(check, airflow, mlflow, first)
    down_and_up(check, mlflow)


def restarts(check: Check, airflow: Airflow, mlflow: Mlflow, first: str) -> None:
    for service in ("mlflow", "postgres"):
        with step(check, f"restart {service}"):
            check.compose("restart", service, timeout_s=300)
            wait_ready(check, service, READY_TIMEOUT_S)
    with step(check, "webhooks listed after the restarts") as record:
        record["webhooks"] = mlflow.webhooks()
        if not any(w["url"] == "http://registry-webhooks:8765/" for w in record["webhooks"]):
            raise CheckFailed(f"registry-webhooks' webhook not listed: {record['webhooks']}")
    with step(check, "translator after the restarts") as record:
        record["answer"] = translate(check, SENTENCE)
    with step(check, "retrain run 2 after the restarts") as record:
        record.update(run_retrain(check, airflow, mlflow, epochs=2))
    second = record["new_versions"][-1]
    with step(check, "translator follows @champion as it moves (gate, then by hand)") as record:
        # Whatever the gate did with run 2's version, the translator serves the champion...
        current = str(mlflow.champion())
        record["before_move"] = wait_for_translator_version(check, current, FOLLOW_TIMEOUT_S)
        # ...and a move by hand (to run 2's version, or back to run 1's when the gate promoted
        # it) is recorded by the webhook and followed by the translator.
        target = second if current != second else first
        record.update(move_and_see_webhook(mlflow, target))
        record["answer"] = wait_for_translator_version(check, target, FOLLOW_TIMEOUT_S)


@dataclass(frozen=True)
class KeptState:
    """What the stack's volumes must keep across `down` and `up`."""

    versions: list[str]
    audit_runs: int
    dvc_cache_files: int


def kept_state(check: Check, mlflow: Mlflow) -> KeptState:
    return KeptState(mlflow.versions(), mlflow.audit_runs(), dvc_cache_files(check))


def down_and_up(check: Check, mlflow: Mlflow) -> None:
    before = kept_state(check, mlflow)
    with step(check, "down, then up: state kept on the volumes") as record:
        check.compose("down", timeout_s=900)
        services = start_services(check, [*stack_services(check), *LATER], READY_TIMEOUT_S)
        record["time_to_healthy_s"] = round(sum(services.values()), 1)
        after = kept_state(check, mlflow)
        record.update(before=asdict(before), after=asdict(after))
        if after.versions != before.versions or after.audit_runs < before.audit_runs:
            raise CheckFailed(f"registry state changed across down/up: {before} -> {after}")
        if after.dvc_cache_files < before.dvc_cache_files or not before.dvc_cache_files:
            raise CheckFailed(f"DVC cache lost across down/up: {before} -> {after}")
        record["answer"] = translate(check, SENTENCE)


# --- entry point ------------------------------------------------------------------------------


def tool_versions(check: Check) -> dict[str, str]:
    podman = check.podman_out("--version").strip()
    compose = check.run([check.compose_cmd[0], "--version"], 60, "podman-compose --version")
    return {"podman": podman, "podman_compose": compose.strip().splitlines()[0]}


def write_results(check: Check, started: float, passed: bool) -> None:
    results = {
        "machine": {
            "cpu": cpu_description(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "gpu": "none",
            "os": platform.platform(),
        },
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "passed": passed,
        "total_seconds": round(time.monotonic() - started, 1),
        **check.results,
        "steps": check.steps,
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def print_table(check: Check) -> None:
    print(f"\n{'step':<66} {'result':>7} {'seconds':>8}")
    for record in check.steps:
        outcome = "ok" if record.get("ok") else "FAILED"
        print(f"{record['step']:<66} {outcome:>7} {record.get('seconds', 0):>8.1f}")
    for name, size in check.results.get("image_sizes_mb", {}).items():
        print(f"image {name:<60} {size:>8.0f} MB")


def teardown(check: Check, keep: bool) -> None:
    if keep:
        print(f"--keep: the stack stays up; remove it with: {' '.join(check.compose_cmd)} down -v")
        return
    try:
        remove_leftovers(check)
    except CheckFailed as error:
        print(f"compose-check: teardown: {error}", file=sys.stderr)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_corpus = os.environ.get("MT_DATA_DIR") or str(REPO.parent / "shared/data/multi30k")
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path(default_corpus),
        help="Multi30k's .gz files (default: $MT_DATA_DIR or ../shared)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="bootstrap Debian again and build without podman's layer cache",
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack up at the end")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    (WORK_DIR / "containers.conf").write_text(CONTAINERS_CONF, encoding="utf-8")
    try:
        if not (args.corpus / "train.en.gz").is_file():
            raise CheckFailed(
                f"no Multi30k in {args.corpus}: pass --corpus DIR or set MT_DATA_DIR"
            )
        podman, podman_compose = find_tools(WORK_DIR)
        env_file, ports, secrets = write_env_file(WORK_DIR)
        command = compose_command(podman_compose, env_file)
        check = Check(WORK_DIR, env_file, ports, secrets, podman, command)
    except CheckFailed as error:
        print(f"compose-check: {error}", file=sys.stderr)
        return 1
    passed = False
    try:
        check.results["tools"] = tool_versions(check)
        scenario(check, args)
        passed = True
    except CheckFailed as error:
        print(f"compose-check: FAILED: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("compose-check: interrupted; removing the stack", file=sys.stderr)
    finally:
        teardown(check, args.keep)
        write_results(check, started, passed)
        print_table(check)
    print(f"compose-check: {'passed' if passed else 'FAILED'}; wrote {RESULTS.relative_to(REPO)}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
