"""Static checks of docker/: nothing here builds an image or starts a container.

Dockerfiles are linted with hadolint, compose.yaml is validated against the Compose
specification's JSON schema (the copy check-jsonschema ships), and the deployment is checked
against the code: every env var the code reads is set where the code runs, every ${VAR} has a
line in .env.example, the image locks agree with requirements.lock. The PostgreSQL init script
runs for real against the local server.
"""

from __future__ import annotations

import ast
import base64
import configparser
import fnmatch
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pipeline.config import load_config
from tests.conftest import git_commit_all

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
# make compose-check's stand-ins for the upstream bases (docker/compose.check.yaml).
CHECK_DOCKERFILES = sorted((DOCKER / "check").glob("*.Dockerfile"))
COMPOSE_FILE = DOCKER / "compose.yaml"
CHECK_COMPOSE_FILE = DOCKER / "compose.check.yaml"

# The services architecture.md and docker/README.md promise.
REQUIRED_SERVICES = {
    "postgres",
    "redis",
    "mlflow",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "mlflow-users",
}
# The pipeline image's services that talk to MLflow, and whom they log in as (basic-auth).
PIPELINE_LOGINS = {
    "airflow-worker": ("mt-pipeline", "MT_PIPELINE_PASSWORD"),
    "airflow-worker-gpu": ("mt-pipeline", "MT_PIPELINE_PASSWORD"),
    "mt": ("mt-pipeline", "MT_PIPELINE_PASSWORD"),
    "translator": ("mt-pipeline", "MT_PIPELINE_PASSWORD"),
    "registry-webhooks": ("mt-pipeline", "MT_PIPELINE_PASSWORD"),
    "mlflow-users": ("admin", "MLFLOW_ADMIN_PASSWORD"),
}
ONE_SHOT_SERVICES = {"airflow-init", "mlflow-users", "mt"}
ENV_PREFIXES = ("MT_", "MLFLOW_", "AIRFLOW")
# Airflow's task runner exports these into every task's environment; no deployment sets them.
SET_BY_AIRFLOW_AT_RUNTIME = "AIRFLOW_CTX_"
# Test-only hooks (pipeline/pause_points.py): never set in a deployment.
TEST_HOOKS = "MT_TEST_"
# What the Airflow image has besides the standard library: the DAG's parse-time imports must
# stay within it (TensorFlow, DVC, MLflow live only in the pipeline image).
AIRFLOW_IMAGE_PACKAGES = {"airflow", "yaml", "pendulum", "pipeline"}
VAR_REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?][^}]*)?\}")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.MULTILINE)


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return loaded


def compose_schema_validator() -> jsonschema.Draft202012Validator:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendored / "compose-spec.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def hadolint_findings(dockerfile: Path) -> list[dict[str, Any]]:
    binary = Path(sys.executable).parent / "hadolint"
    command = [str(binary) if binary.exists() else shutil.which("hadolint") or "hadolint"]
    command += ["--format", "json", "--no-fail", "--no-color"]
    command += ["--trusted-registry", "docker.io", "--trusted-registry", "ghcr.io"]
    result = subprocess.run(
        [*command, str(dockerfile)], capture_output=True, text=True, check=True, timeout=60
    )
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    return findings


def env_reads(source: str) -> set[str]:
    """Names of env vars `source` reads with a literal or module-constant name.

    Counts os.environ.get / os.getenv / os.environ[...] / `in os.environ`; setdefault is a
    default the code provides itself, so it is not a read that needs a value.
    """
    tree = ast.parse(source)
    constants = _module_string_constants(tree)
    names = set()
    for node in ast.walk(tree):
        argument = _env_read_argument(node)
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            names.add(argument.value)
        elif isinstance(argument, ast.Name) and argument.id in constants:
            names.add(constants[argument.id])
    return names


def _module_string_constants(tree: ast.Module) -> dict[str, str]:
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    constants[target.id] = node.value.value
    return constants


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _env_read_argument(node: ast.AST) -> ast.AST | None:
    if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
        func = node.func
        if func.attr == "get" and _is_environ(func.value):
            return node.args[0]
        if func.attr == "getenv":
            return node.args[0]
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
        return node.slice if _is_environ(node.value) else None
    if isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In):
        return node.left if _is_environ(node.comparators[0]) else None
    return None


def code_env_reads() -> set[str]:
    """Env vars with our prefixes read anywhere in pipeline/ and dags/."""
    names: set[str] = set()
    for folder in ("pipeline", "dags"):
        for path in sorted((REPO / folder).rglob("*.py")):
            names |= env_reads(path.read_text(encoding="utf-8"))
    return {
        name
        for name in names
        if name.startswith(ENV_PREFIXES)
        and not name.startswith((SET_BY_AIRFLOW_AT_RUNTIME, TEST_HOOKS))
    }


def dockerfile_env(dockerfile: Path) -> set[str]:
    """Names the Dockerfile's final stage sets with ENV."""
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    final_stage = re.split(r"^FROM ", text, flags=re.MULTILINE)[-1]
    names = set()
    for line in final_stage.splitlines():
        if line.startswith("ENV "):
            names |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", line))
    return names


def dockerfile_for_image(compose: dict[str, Any], image: str) -> Path:
    for service in compose["services"].values():
        if service["image"] == image and "build" in service:
            return DOCKER.joinpath(service["build"]["context"], service["build"]["dockerfile"])
    raise AssertionError(f"no service builds {image}")


def pins(path: Path) -> dict[str, str]:
    return {name.lower(): version for name, version in PIN.findall(path.read_text())}


def arg_defaults(dockerfile: Path) -> dict[str, str]:
    """ARG NAME=default lines of a Dockerfile (any stage)."""
    return dict(re.findall(r"^ARG ([A-Za-z_][A-Za-z0-9_]*)=(\S+)", dockerfile.read_text(), re.M))


def with_arg_defaults(text: str, dockerfile: Path) -> str:
    """`text` with each ${NAME} replaced by the ARG default the Dockerfile gives it."""
    defaults = arg_defaults(dockerfile)
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: defaults[m.group(1)], text)


def from_lines(dockerfile: Path) -> list[str]:
    """The image each FROM names, as written, stages included."""
    return re.findall(r"^FROM (\S+)", dockerfile.read_text(), re.MULTILINE)


def from_images(dockerfile: Path) -> list[str]:
    """The base images a default build pulls: FROM lines with their ARG defaults, no stages."""
    stages = {m.lower() for m in re.findall(r"^FROM \S+ AS (\S+)", dockerfile.read_text(), re.M)}
    images = [with_arg_defaults(image, dockerfile) for image in from_lines(dockerfile)]
    return [image for image in images if image.lower() not in stages]


def compose_vars(text: str) -> dict[str, str]:
    """${VAR...} references in compose text -> their operator ('', ':-', ':?', ...)."""
    found: dict[str, str] = {}
    for name, operator in VAR_REFERENCE.findall(text):
        if found.get(name, "") == "" or operator.startswith(":?"):
            found[name] = operator[:2]
    return found


def env_file(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {name: value for name, value in pairs}


# --- Dockerfiles ----------------------------------------------------------------------------


def test_the_three_images_have_dockerfiles() -> None:
    names = [path.name for path in DOCKERFILES]
    assert names == ["airflow.Dockerfile", "mlflow.Dockerfile", "pipeline.Dockerfile"]


@pytest.mark.parametrize(
    "dockerfile", DOCKERFILES + CHECK_DOCKERFILES, ids=lambda path: path.parent.name + path.name
)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    findings = hadolint_findings(dockerfile)
    assert [f"{f['line']}: {f['code']} {f['message']}" for f in findings] == []


def test_hadolint_reports_a_known_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n", encoding="utf-8")
    assert {finding["code"] for finding in hadolint_findings(bad)} == {
        "DL3007",  # latest tag
        "DL3013",  # unpinned pip package
        "DL3042",  # pip cache in the layer
    }


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_base_images_are_pinned_to_a_release(dockerfile: Path) -> None:
    for image in from_images(dockerfile):
        _, _, tag = image.rpartition(":")
        assert re.match(r"\d+\.\d+", tag), f"{dockerfile.name}: FROM {image} needs a version tag"
    syntax = re.match(r"# syntax=docker/dockerfile:(\S+)", dockerfile.read_text())
    assert syntax and re.fullmatch(r"\d+\.\d+", syntax.group(1))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_images_run_as_a_non_root_user(dockerfile: Path) -> None:
    users = re.findall(r"^USER (\S+)", dockerfile.read_text(), re.MULTILINE)
    assert users, f"{dockerfile.name} never switches away from root"
    assert users[-1] not in {"root", "0", "0:0"}


@pytest.mark.parametrize(
    "dockerfile", DOCKERFILES + CHECK_DOCKERFILES, ids=lambda path: path.parent.name + path.name
)
def test_every_base_image_is_a_build_argument_with_an_upstream_default(dockerfile: Path) -> None:
    """So `make compose-check` can build the same Dockerfile on local bases, while a plain build
    pulls what users pull today."""
    text = dockerfile.read_text()
    stages = {m.lower() for m in re.findall(r"^FROM \S+ AS (\S+)", text, re.MULTILINE)}
    global_args = arg_defaults_in(text.split("\nFROM ", 1)[0])
    for image in from_lines(dockerfile):
        if image.lower() in stages:
            continue
        argument = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", image)
        assert argument, f"{dockerfile.name}: FROM {image} is not a build argument"
        default = global_args.get(argument.group(1), "")
        assert re.fullmatch(r"[a-z0-9._-]+(/[a-z0-9._-]+)*:\d+\.\d+[A-Za-z0-9._-]*", default), (
            f"{dockerfile.name}: ARG {argument.group(1)} needs an upstream image:version default"
        )
        assert not default.startswith("localhost/"), default


def arg_defaults_in(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG ([A-Za-z_][A-Za-z0-9_]*)=(\S+)", text, re.MULTILINE))


@pytest.mark.parametrize(
    "dockerfile",
    [path for path in CHECK_DOCKERFILES if path.stem in {"airflow", "postgres", "redis"}],
    ids=lambda path: path.name,
)
def test_check_stand_ins_that_run_in_the_stack_are_not_root(dockerfile: Path) -> None:
    users = re.findall(r"^USER (\S+)", dockerfile.read_text(), re.MULTILINE)
    assert users and users[-1] not in {"root", "0", "0:0"}, dockerfile.name


def test_pipeline_image_runs_mt_and_explains_its_health_check() -> None:
    text = (DOCKER / "pipeline.Dockerfile").read_text()
    assert 'ENTRYPOINT ["mt-project-init", "mt"]' in text
    assert "COPY docker/project-init.sh /usr/local/bin/mt-project-init" in text
    assert "git clone --quiet --bare --no-local /tmp/source.git /opt/mt/repo.git" in text
    assert "HEALTHCHECK NONE" in text
    assert "uv pip sync" in text and "requirements-gpu.lock" in text
    # The bare clone is root's; git run as mt refuses it unless trusted (found by compose-check).
    assert "git config --system --add safe.directory /opt/mt/repo.git" in text


def dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_dockerignore_keeps_secrets_and_caches_out() -> None:
    patterns = dockerignore_patterns()
    never = [
        "docker/.env",  # the stack's secrets
        ".env",
        ".venv/lib/python3.11/site-packages/mlflow/__init__.py",
        ".git/config",  # remote URLs, credential helpers
        ".git/hooks/pre-commit",
        "mlruns/0/meta.yaml",
        "mlruns.db",
        "mlartifacts/1/model.keras",
        "data/raw/train.en",
        "data/tokens/train.npz",
        "models/seq2seq.keras",
        "models/checkpoints/latest.weights.h5",
        ".dvc/cache/files/md5/ab/cdef",
        ".dvc/tmp/runs/x/params.yaml",
        "airflow_home/airflow.cfg",
        "pipeline/__pycache__/cli.cpython-311.pyc",
        ".mypy_cache/3.11/cache.db",
        ".gpu-carry/wheels/x.whl",
    ]
    assert [path for path in never if sent_to_daemon(path, patterns)] == []
    # ...while what the builds need is sent, the CPU lock for compose-check's pipeline image too.
    for needed in ("pipeline/cli.py", "requirements.lock", "docker/requirements-gpu.lock"):
        assert sent_to_daemon(needed, patterns), needed


def test_dockerfile_copy_sources_exist_and_pass_dockerignore() -> None:
    patterns = dockerignore_patterns()
    for dockerfile in DOCKERFILES:
        for source in copy_sources(dockerfile):
            matches = list(REPO.glob(source))
            assert matches or source.endswith("*"), f"{dockerfile.name}: COPY {source} missing"
            assert sent_to_daemon(source.rstrip("*"), patterns), f".dockerignore drops {source}"
    assert sent_to_daemon(".git/objects/pack/x.pack", patterns)  # the image's repository
    assert sent_to_daemon(".git/HEAD", patterns) and sent_to_daemon(
        ".git/refs/heads/main", patterns
    )
    never = (".venv/bin/python", ".git/config", ".git/hooks/pre-commit", ".git/logs/HEAD")
    for never_sent in (*never, ".git/index", "data/raw/train.en", "docker/.env"):
        assert not sent_to_daemon(never_sent, patterns), never_sent


def copy_sources(dockerfile: Path) -> list[str]:
    """What the COPY lines (not --from a stage) send, build arguments at their defaults."""
    sources = []
    text = dockerfile.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = with_arg_defaults(line, dockerfile).split() if line.startswith("COPY ") else []
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w.rstrip("/") for w in words[1:-1] if not w.startswith("--")]
    return sources


def sent_to_daemon(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch(candidate, glob) for candidate in candidates):
            included = negated
    return included


# --- compose.yaml ---------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in compose_schema_validator().iter_errors(compose)
    ]
    assert errors == []


def test_compose_schema_check_rejects_a_broken_service(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["imagee"] = "redis:7.2.10-bookworm"
    broken["services"]["mlflow"]["restart"] = ["always"]
    paths = {
        "/".join(map(str, error.absolute_path))
        for error in compose_schema_validator().iter_errors(broken)
    }
    assert paths == {"services/redis", "services/mlflow/restart"}


def test_every_promised_service_exists(compose: dict[str, Any]) -> None:
    missing = REQUIRED_SERVICES - set(compose["services"])
    assert missing == set()


def test_readme_documents_exactly_the_compose_services(compose: dict[str, Any]) -> None:
    readme = (DOCKER / "README.md").read_text(encoding="utf-8")
    table_rows = re.findall(r"^\| `([a-z0-9-]+)` \|", readme, re.MULTILINE)
    assert sorted(table_rows) == sorted(compose["services"])


def test_long_running_services_have_health_checks_and_restart(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in ONE_SHOT_SERVICES:
            assert service.get("restart") == "no", name
            continue
        assert service["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert service["restart"] == "unless-stopped", name


def test_depends_on_conditions_match_what_the_target_offers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}'s health"
            else:
                assert rule["condition"] == "service_completed_successfully"
                assert target in ONE_SHOT_SERVICES, f"{name} waits for {target} to exit"


def test_state_lives_on_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used, binds = set(), []
    for service in compose["services"].values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                binds.append(mount)
            else:
                used.add(source)
    assert used == declared
    assert sorted(binds) == [
        "./mlflow-basic-auth.ini:/etc/mlflow/basic_auth.ini:ro",
        "./postgres-init.sh:/docker-entrypoint-initdb.d/10-create-databases.sh:ro",
    ]
    data_paths = {"postgres": "/var/lib/postgresql/data", "redis": "/data"}
    data_paths |= {"mlflow": "/mlflow/artifacts", "airflow-worker": "/opt/mt/dvc-cache"}
    data_paths |= {"airflow-worker-gpu": "/opt/mt/project", "mt": "/opt/mt/project"}
    for name, path in data_paths.items():
        targets = [mount.split(":")[1] for mount in compose["services"][name]["volumes"]]
        assert path in targets, f"{name} keeps {path} in the container"
    for worker in ("airflow-worker", "airflow-worker-gpu"):
        assert compose["services"][worker]["entrypoint"][0] == "mt-project-init"
    # basic-auth's user database lives where the config says, on its own volume.
    auth = configparser.ConfigParser()
    auth.read(DOCKER / "mlflow-basic-auth.ini")
    assert auth["mlflow"]["database_uri"] == "sqlite:////mlflow/auth/basic_auth.db"
    assert "mlflow-auth:/mlflow/auth" in compose["services"]["mlflow"]["volumes"]


def test_no_latest_tags_and_every_image_versioned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        tag = image.rpartition(":")[2]
        assert ":" in image and "latest" not in tag, f"{name}: {image}"
        assert re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"


def test_one_worker_per_queue_and_the_gpu_for_the_train_worker(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gpu_worker, worker = services["airflow-worker-gpu"], services["airflow-worker"]
    devices = gpu_worker["deploy"]["resources"]["reservations"]
    assert devices["devices"] == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "deploy" not in worker
    assert gpu_worker["image"] == worker["image"]
    assert worker["image"].startswith("mt-pipeline:")
    settings = load_config(REPO / "params.yaml").orchestration
    assert worker["command"][:2] == ["--queues", f"${{MT_WORKER_QUEUES:-{settings.queue}}}"]
    assert gpu_worker["command"][:2] == [
        "--queues",
        f"${{MT_GPU_WORKER_QUEUES:-{settings.train_queue}}}",
    ]


def test_translator_runs_mt_serve_of_the_champion(compose: dict[str, Any]) -> None:
    translator = compose["services"]["translator"]
    assert "entrypoint" not in translator, "the image's entrypoint runs mt"
    assert 'ENTRYPOINT ["mt-project-init", "mt"]' in (DOCKER / "pipeline.Dockerfile").read_text()
    model = load_config(REPO / "params.yaml").register.model_name
    assert translator["command"] == [
        "serve",
        f"--model=${{MT_SERVE_MODEL_URI:-models:/{model}@champion}}",
        "--host=0.0.0.0",
        "--port=8000",
    ]
    assert translator["profiles"] == ["serving"]


def test_flower_is_a_profile_behind_the_airflow_admin_login(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    assert flower["profiles"] == ["flower"]
    assert flower["image"].startswith("mt-airflow:") and flower["command"] == ["celery", "flower"]
    assert flower["environment"]["AIRFLOW__CELERY__FLOWER_BASIC_AUTH"] == (
        "${AIRFLOW_ADMIN_USER:-admin}:${AIRFLOW_ADMIN_PASSWORD}"
    )
    assert flower["ports"] == ["${MT_BIND_ADDRESS:-127.0.0.1}:${FLOWER_PORT:-5555}:5555"]


def test_no_usage_telemetry_leaves_the_stack(compose: dict[str, Any]) -> None:
    off = {"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        if service["image"].startswith(("mt-airflow:", "mt-pipeline:", "mt-mlflow:")):
            assert {key: env.get(key) for key in off} == off, name
        if service["image"].startswith(("mt-airflow:", "mt-pipeline:")):
            assert env["GX_ANALYTICS_ENABLED"] == "false", name
            assert env["AIRFLOW__USAGE_DATA_COLLECTION__ENABLED"] == "false", name


def test_check_override_builds_the_same_dockerfiles_on_local_bases(
    compose: dict[str, Any],
) -> None:
    """docker/compose.check.yaml changes bases, build arguments, the GPU worker's profile and
    the network, never how a service of compose.yaml runs."""
    check = yaml.safe_load(CHECK_COMPOSE_FILE.read_text(encoding="utf-8"))
    allowed = {"build", "image", "profiles", "volumes"}
    for name, service in check["services"].items():
        if name.startswith("check-"):
            assert service["profiles"] == ["check-bases"], name
            continue
        assert set(service) <= allowed, f"{name} changes {set(service) - allowed}"
        build, original = service["build"], compose["services"][name].get("build")
        dockerfile = DOCKER.joinpath(build["context"], build["dockerfile"])
        if original:
            assert build["dockerfile"] == original["dockerfile"], name
            assert "image" not in service, f"{name}: the project's image keeps its name"
        unknown = set(build.get("args", {})) - set(arg_defaults(dockerfile))
        assert unknown == set(), f"{name}: {dockerfile.name} has no ARG {unknown}"
    assert check["services"]["airflow-worker-gpu"]["profiles"] == ["gpu"]
    assert check["networks"]["default"]["external"] is True
    assert check["x-podman"] == {"in_pod": False}


def test_check_stand_ins_pin_what_the_lock_pins() -> None:
    lock = pins(REPO / "requirements.lock")
    airflow = pins(DOCKER / "check" / "requirements-airflow.txt")
    assert {name: v for name, v in airflow.items() if lock.get(name, v) != v} == {}
    assert airflow["apache-airflow"] == lock["apache-airflow"]
    uv_pin = re.search(r"uv==(\S+)", (REPO / "Makefile").read_text())
    assert uv_pin and arg_defaults(DOCKER / "check" / "uv.Dockerfile")["UV_VERSION"] == uv_pin[1]


def test_airflow_runs_celery_with_postgres_and_redis(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        if not service["image"].startswith(("mt-airflow:", "mt-pipeline:")):
            continue
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert "@postgres:5432/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:"), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql"), name
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
    mlflow_env = compose["services"]["mlflow"]["environment"]
    assert "@postgres:5432/mlflow" in mlflow_env["MLFLOW_BACKEND_STORE_URI"]


def test_mlflow_runs_basic_auth_with_the_config_from_docker(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    env = mlflow["environment"]
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow/basic_auth.ini"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("${MLFLOW_FLASK_SECRET_KEY:?")
    auth = configparser.ConfigParser()
    auth.read(DOCKER / "mlflow-basic-auth.ini")
    settings = dict(auth["mlflow"])
    assert "admin_password" not in settings, "the admin's password comes from docker/.env"
    assert settings["default_permission"] == "READ"
    assert settings["admin_username"] == "admin"
    assert settings["authorization_function"] == (
        "mlflow.server.auth:authenticate_request_basic_auth"
    )
    assert pins(DOCKER / "requirements-mlflow.lock")["flask-wtf"], "basic-auth needs Flask-WTF"


def test_pipeline_services_log_in_and_wait_for_their_accounts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, (user, password_var) in PIPELINE_LOGINS.items():
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_USERNAME"] == user, name
        assert re.fullmatch(
            rf"\$\{{{password_var}(:\?[^}}]*)?\}}", env["MLFLOW_TRACKING_PASSWORD"]
        )
        if name != "mlflow-users":
            rule = services[name]["depends_on"]["mlflow-users"]
            assert rule == {"condition": "service_completed_successfully"}, name
    users = services["mlflow-users"]
    assert users["image"].startswith("mt-pipeline:")
    assert (users["entrypoint"], users["command"]) == (
        ["bash", "-c"],
        ["mt mlflow-users && mt registry webhook install --url http://registry-webhooks:8765/"],
    )
    webhooks = services["registry-webhooks"]
    assert webhooks["command"] == ["registry", "webhook", "serve", "--host", "0.0.0.0",
                                   "--port", "8765"]  # fmt: skip
    assert services["mlflow"]["environment"]["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"] == "http,https"
    secret_holders = {
        name
        for name, service in services.items()
        if "MT_REGISTRY_WEBHOOK_SECRET" in service.get("environment", {})
    }
    assert secret_holders == {"mlflow-users", "registry-webhooks"}
    # `mt mlflow-users` reads the accounts' passwords; only this service holds them.
    for var in ("MT_PIPELINE_PASSWORD", "MT_PROMOTER_PASSWORD"):
        assert users["environment"][var].startswith(f"${{{var}"), var
    holders = {
        name for name, s in services.items() if "MT_PROMOTER_PASSWORD" in s.get("environment", {})
    }
    assert holders == {"mlflow-users"}
    talks_to_mlflow = {
        name
        for name, service in services.items()
        if service["image"].startswith("mt-pipeline:") and name != "mlflow-users"
    }
    assert talks_to_mlflow == set(PIPELINE_LOGINS) - {"mlflow-users"}


# --- env vars: code, compose, .env.example --------------------------------------------------


def test_env_scan_finds_reads_by_literal_and_by_constant() -> None:
    source = (
        "import os\n"
        'MIRROR = "MT_MIRROR"\n'
        "os.environ.get(MIRROR)\n"
        'os.getenv("MLFLOW_URI")\n'
        'x = os.environ["AIRFLOW__CORE__X"]\n'
        '"MT_FLAG" in os.environ\n'
        'os.environ.setdefault("MT_DEFAULTED", "1")\n'
        'os.environ["MT_WRITTEN"] = "1"\n'
    )
    assert env_reads(source) == {"MT_MIRROR", "MLFLOW_URI", "AIRFLOW__CORE__X", "MT_FLAG"}


# Secrets only the commands that use them get: the webhook's HMAC secret is read by
# `mt registry webhook install|serve` (the mlflow-users and registry-webhooks services).
NEEDED_ONLY_WHERE_USED = {"MT_REGISTRY_WEBHOOK_SECRET"}


def test_every_env_var_the_code_reads_is_set_where_code_runs(compose: dict[str, Any]) -> None:
    needed = code_env_reads() - NEEDED_ONLY_WHERE_USED
    assert {"MT_PROJECT_DIR", "MT_DATA_DIR", "MT_LOG_LEVEL", "MLFLOW_TRACKING_URI"} <= needed
    for name, service in compose["services"].items():
        image = service["image"].split(":")[0]
        if image not in {"mt-pipeline", "mt-airflow"}:
            continue
        available = set(service["environment"]) | dockerfile_env(
            dockerfile_for_image(compose, service["image"])
        )
        assert sorted(needed - available) == [], f"{name} lacks these env vars"


def test_env_example_covers_every_compose_variable() -> None:
    used = compose_vars(COMPOSE_FILE.read_text(encoding="utf-8"))
    example = env_file(DOCKER / ".env.example")
    assert sorted(set(used) - set(example)) == [], "add these to docker/.env.example"
    assert sorted(set(example) - set(used)) == [], "docker/.env.example lists unused variables"
    required = sorted(name for name, operator in used.items() if operator == ":?")
    assert [name for name in required if example[name]] == [], "never ship a secret"
    assert len(required) == 14  # 12, the webhook secret and its encryption key


def test_env_example_values_equal_the_compose_defaults() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    defaults = dict(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}", text))
    example = env_file(DOCKER / ".env.example")
    assert {name: example[name] for name in defaults} == defaults


def test_readme_brings_the_stack_up_with_one_command(compose: dict[str, Any]) -> None:
    readme = (DOCKER / "README.md").read_text(encoding="utf-8")
    assert "docker compose -f docker/compose.yaml --env-file docker/.env up -d" in readme
    for service in ("airflow-apiserver", "mlflow"):
        port = re.search(r":-(\d+)\}:\d+$", compose["services"][service]["ports"][0])
        assert port and f"http://localhost:{port.group(1)}" in readme, service


def compose_service_env(name: str) -> dict[str, str]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in raw["services"][name]["environment"].items()}


def test_make_env_fills_every_required_secret(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    subprocess.run([str(DOCKER / "make-env.sh"), str(target)], check=True, capture_output=True)
    env = env_file(target)
    used = compose_vars(COMPOSE_FILE.read_text(encoding="utf-8"))
    required = [name for name, operator in used.items() if operator == ":?"]
    assert all(re.fullmatch(r"[A-Za-z0-9_=-]{32,}", env[name]) for name in required), env
    for fernet in ("AIRFLOW_FERNET_KEY", "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"):
        assert len(base64.urlsafe_b64decode(env[fernet])) == 32, fernet
    mlflow = compose_service_env("mlflow")
    assert mlflow["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"].startswith(
        "${MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY:?"
    )
    assert env["MT_BIND_ADDRESS"] == "127.0.0.1"
    assert target.stat().st_mode & 0o777 == 0o600
    again = subprocess.run([str(DOCKER / "make-env.sh"), str(target)], capture_output=True)
    assert again.returncode == 1 and b"exists" in again.stderr


# --- locks and versions ---------------------------------------------------------------------


def test_gpu_lock_is_requirements_lock_with_the_cuda_tensorflow() -> None:
    lock, gpu = pins(REPO / "requirements.lock"), pins(DOCKER / "requirements-gpu.lock")
    fix = "re-run docker/lock.sh after re-locking requirements.lock"
    assert "tensorflow-cpu" not in gpu
    assert gpu["tensorflow"] == lock["tensorflow-cpu"], fix
    differing = {name for name, version in gpu.items() if lock.get(name) != version}
    assert {name for name in differing if not name.startswith("nvidia-")} == {"tensorflow"}, fix
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-nccl-cu12"} <= differing
    for runtime in ("keras", "mlflow", "dvc", "apache-airflow", "sentencepiece", "sacrebleu"):
        assert gpu[runtime] == lock[runtime], fix
    assert "pytest" not in gpu and "ruff" not in gpu
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = {re.split(r"[\s<>=!~;\[]", spec)[0].lower() for spec in project["dependencies"]}
    assert sorted(direct - set(gpu) - {"tensorflow-cpu"}) == [], fix


def test_mlflow_lock_matches_requirements_lock() -> None:
    lock, server = pins(REPO / "requirements.lock"), pins(DOCKER / "requirements-mlflow.lock")
    assert {name for name, version in server.items() if lock.get(name) != version} == set()
    assert server["mlflow"] == lock["mlflow"] and "psycopg2-binary" in server


def test_image_versions_agree_with_the_lock() -> None:
    lock = pins(REPO / "requirements.lock")
    airflow_from = from_images(DOCKER / "airflow.Dockerfile")
    assert airflow_from == [f"apache/airflow:{lock['apache-airflow']}-python3.11"]
    pipeline = (DOCKER / "pipeline.Dockerfile").read_text()
    uv_pin = re.search(r"uv==(\S+)", (REPO / "Makefile").read_text())
    assert uv_pin and f"ghcr.io/astral-sh/uv:{uv_pin.group(1)}" in pipeline
    cuda = pins(DOCKER / "requirements-gpu.lock")["nvidia-cuda-runtime-cu12"]
    cuda_major_minor = ".".join(cuda.split(".")[:2])
    assert f"nvidia/cuda:{cuda_major_minor}." in pipeline, "CUDA base and wheels differ"
    assert re.search(r"PYTHON_VERSION=3\.11\.\d+", pipeline)
    assert "python:3.11." in (DOCKER / "mlflow.Dockerfile").read_text()


# --- scripts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script", sorted(DOCKER.glob("*.sh")) + sorted(DOCKER.glob("check/*.sh")), ids=lambda p: p.name
)
def test_scripts_are_executable_bash(script: Path) -> None:
    assert os.access(script, os.X_OK), f"chmod +x {script}"
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_dag_parse_imports_fit_the_airflow_image() -> None:
    heavy = {}
    for dag_file in sorted((REPO / "dags").glob("*.py")):
        for module in parse_time_imports(dag_file):
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in AIRFLOW_IMAGE_PACKAGES:
                heavy[module] = dag_file.name
    assert heavy == {}, "the Airflow image lacks these; import them inside the task"


def parse_time_imports(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Modules imported at module level by `path`, following our own pipeline modules."""
    seen = seen if seen is not None else set()
    seen.add(path)
    modules = set()
    for node in module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        for name in names:
            modules.add(name)
            for source in pipeline_sources(name):
                if source not in seen:
                    modules |= parse_time_imports(source, seen)
    return modules


def module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            pending += node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body


def pipeline_sources(module: str) -> list[Path]:
    """The files Python runs for `module` (its package __init__ files too), if it is ours."""
    parts = module.split(".")
    if parts[0] != "pipeline":
        return []
    sources = []
    for depth in range(1, len(parts) + 1):
        base = REPO.joinpath(*parts[:depth])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                sources.append(candidate)
    return sources


# --- PostgreSQL init script, against the real server ----------------------------------------


def psql(*args: str, user: str = "postgres", db: str = "postgres") -> subprocess.CompletedProcess:
    command = ["psql", "-h", "127.0.0.1", "-U", user, "-d", db, "-Atq", "-v", "ON_ERROR_STOP=1"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def postgres_names() -> Iterator[dict[str, str]]:
    if shutil.which("psql") is None or psql("-c", "select 1").returncode != 0:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432 (user postgres)")
    suffix = uuid.uuid4().hex[:8]
    names = {
        "AIRFLOW_DB_NAME": f"t_airflow_{suffix}",
        "AIRFLOW_DB_USER": f"t_airflow_{suffix}",
        "MLFLOW_DB_NAME": f"t_mlflow_{suffix}",
        "MLFLOW_DB_USER": f"t_mlflow_{suffix}",
    }
    yield names
    drops = [
        f'DROP DATABASE IF EXISTS "{names[key]}"' for key in ("AIRFLOW_DB_NAME", "MLFLOW_DB_NAME")
    ]
    drops += [
        f'DROP ROLE IF EXISTS "{names[key]}"' for key in ("AIRFLOW_DB_USER", "MLFLOW_DB_USER")
    ]
    psql(*[arg for statement in drops for arg in ("-c", statement)])


def run_init_script(names: dict[str, str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PGHOST="127.0.0.1", PGUSER="postgres", **names)
    env |= {"AIRFLOW_DB_PASSWORD": "it's-a-secret", "MLFLOW_DB_PASSWORD": "another-secret"}
    script = str(DOCKER / "postgres-init.sh")
    return subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)


def test_init_script_creates_one_private_database_per_service(
    postgres_names: dict[str, str],
) -> None:
    assert run_init_script(postgres_names).returncode == 0
    airflow_db, mlflow_db = postgres_names["AIRFLOW_DB_NAME"], postgres_names["MLFLOW_DB_NAME"]
    owners = psql(
        "-c",
        "select datname, pg_get_userbyid(datdba) from pg_database "
        f"where datname in ('{airflow_db}', '{mlflow_db}') order by datname",
    )
    expected = f"{airflow_db}|{postgres_names['AIRFLOW_DB_USER']}\n"
    expected += f"{mlflow_db}|{postgres_names['MLFLOW_DB_USER']}\n"
    assert owners.stdout == expected
    own = psql("-c", "create table t (x int)", user=postgres_names["MLFLOW_DB_USER"], db=mlflow_db)
    assert own.returncode == 0, own.stderr
    other = psql("-c", "select 1", user=postgres_names["MLFLOW_DB_USER"], db=airflow_db)
    assert other.returncode != 0 and "permission denied" in other.stderr


def test_init_script_is_idempotent_and_needs_its_passwords(
    postgres_names: dict[str, str],
) -> None:
    assert run_init_script(postgres_names).returncode == 0
    second = run_init_script(postgres_names)
    assert second.returncode == 0, second.stderr
    env = dict(os.environ, PGHOST="127.0.0.1", **postgres_names)
    env.pop("AIRFLOW_DB_PASSWORD", None)
    missing = subprocess.run(
        [str(DOCKER / "postgres-init.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode != 0 and "AIRFLOW_DB_PASSWORD" in missing.stderr


# --- docker/project-init.sh, for real on a tiny repository -----------------------------------


def init_project(project: Path, image_repo: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MT_PROJECT_DIR": str(project), "MT_IMAGE_REPO": str(image_repo)}
    return subprocess.run(
        ["sh", str(DOCKER / "project-init.sh"), "echo", "the worker starts"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )


def image_of(source: Path, target: Path) -> Path:
    """What the pipeline image carries: a bare clone of the source at its HEAD."""
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(target)], check=True)
    return target


def commit(repo: Path, text: str) -> str:
    (repo / "params.yaml").write_text(text, encoding="utf-8")
    return git_commit_all(repo)


def head_of(repo: Path) -> str:
    return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=repo, text=True).strip()


def test_the_project_volume_becomes_the_images_commit_and_follows_a_new_image(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    first = commit(source, "seed: 1\n")
    project = tmp_path / "volume"
    project.mkdir()
    (project / "params.yaml").write_text("seed: 1\n", encoding="utf-8")  # the image's files
    done = init_project(project, image_of(source, tmp_path / "repo.git"))
    assert done.stdout == "the worker starts\n"
    assert head_of(project) == first
    status = subprocess.check_output(["git", "status", "--porcelain"], cwd=project, text=True)
    assert status == "?? .dvc/\n"  # the init lock's folder (a DVC project's .gitignore hides it)

    second = commit(source, "seed: 2\n")
    init_project(project, image_of(source, tmp_path / "repo.git"))
    assert head_of(project) == second
    assert (project / "params.yaml").read_text("utf-8") == "seed: 2\n"

    (project / "params.yaml").write_text("seed: 99\n", encoding="utf-8")  # changed by hand
    commit(source, "seed: 3\n")
    done = init_project(project, image_of(source, tmp_path / "repo.git"))
    assert head_of(project) == second
    assert (project / "params.yaml").read_text("utf-8") == "seed: 99\n"
    assert f"WARNING {project} has changes of its own at {second}; left as it is" in done.stderr
