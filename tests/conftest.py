"""Shared fixtures: a throw-away project root, tiny corpora and tiny params."""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.model_naming import model_name_for_pair
from tests import scheduling
from tests.machine import machine_summary
from tests.mlflow_server import MlflowServer
from tests.postgres import postgres_database

REPO_ROOT = Path(__file__).resolve().parents[1]
MULTI30K_DIR = Path(os.environ.get("MT_DATA_DIR") or REPO_ROOT.parent / "shared/data/multi30k")

# Small enough that tokenize + train + evaluate of a tiny corpus take seconds on 2 cores.
TINY_OVERRIDES: dict[str, Any] = {
    "validate": {"min_rows": 5, "min_train_rows": 20},
    "tokenize": {"vocab_size": 120, "model_type": "unigram"},
    "model": {"embedding_dim": 32, "hidden_units": 32, "dropout": 0.0},
    # average_last 1: the tests that need checkpoint averaging ask for it (test_train.py)
    "train": {"epochs": 2, "batch_size": 8, "warmup_steps": 5, "patience": 2, "average_last": 1},
    "decode": {"beam_size": 2},
    "evaluate": {"bootstrap_resamples": 50, "samples": 3, "attention_maps": 1},
    "register": {"min_score": 0.0, "bootstrap_resamples": 50},
}


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Where this run happened: a failure on another machine then says which CPU and kernels."""
    return machine_summary()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How close the memorised fixtures came to their step cap on this machine."""
    from tests.tiny_translator import memorised_training_summary

    factory = terminalreporter.config._tmp_path_factory
    for line in memorised_training_summary(factory):
        terminalreporter.write_line(line)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The waiting modules first, then the costliest, the rest as collected (tests/scheduling.py).

    `make test` hands pytest-xdist whole modules (`--dist loadfile`), so a module's fixtures
    (its Airflow, its Celery stack) start once, on one worker."""
    items.sort(key=scheduling.cost_rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    return scheduling.make_scheduler(config, log)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    started = scheduling.Clock.now()
    yield
    scheduling.record_timeline(item, started)


# The shared server lets tests install webhooks to 127.0.0.1 and sees them at once.
SHARED_MLFLOW_ENV = {
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_CACHE_TTL": "0",
}


@pytest.fixture(scope="session")
def shared_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One `mlflow server` (PostgreSQL store, proxied artifacts) for the whole test run.

    For every test that needs a live server and leaves it running: starting one costs 15-30 s
    on 2 cores. A test using it names its registered models and experiments after itself
    (`request.node.name`), so tests never see each other's versions. Tests that kill, stop or
    reconfigure a server (faults, auth, other hosts) start their own.
    """
    directory = tmp_path_factory.mktemp("shared-mlflow")
    with postgres_database("mt_test_shared_mlflow") as backend_uri:
        server = MlflowServer(
            backend_uri, directory / "artifacts", directory / "server.log",
            extra_env=SHARED_MLFLOW_ENV,
        )  # fmt: skip
        server.start()
        try:
            yield server
        finally:
            server.stop()


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def named_to_fit(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides`, plus the register.model_name a user would set for the pair or task they
    change (params.yaml refuses a name of another pair or task), unless they name one."""
    if "model_name" in overrides.get("register", {}):
        return overrides
    merged = deep_merge(base, overrides)
    if merged["task"] != "translation":
        name = f"tiny-{merged['task']}-lstm"
    else:
        old = (base["data"]["src_lang"], base["data"]["tgt_lang"])
        new = (merged["data"]["src_lang"], merged["data"]["tgt_lang"])
        if new == old:
            return overrides
        name = model_name_for_pair(base["register"]["model_name"], old, new)
    return deep_merge(overrides, {"register": {"model_name": name}})


def fitting_params(overrides: dict[str, Any]) -> dict[str, Any]:
    """The repo's params with `overrides` merged in and the model name fitted to them."""
    base = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    return deep_merge(base, named_to_fit(base, overrides))


def write_params(root: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Write the repo's params.yaml into `root`, with `overrides` merged in (and the model name
    fitted to a changed pair or task, as a user would set it)."""
    params = fitting_params(overrides or {})
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


# Ten short, distinct en/de pairs; tiny corpora repeat them with a counter so rows stay unique.
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


def tiny_pairs(count: int, offset: int = 0) -> list[tuple[str, str]]:
    """`count` distinct, well-formed en/de pairs."""
    pairs = []
    for i in range(offset, offset + count):
        en, de = SEED_PAIRS[i % len(SEED_PAIRS)]
        n = i // len(SEED_PAIRS)
        pairs.append((f"{en[:-1]} number {n}.", f"{de[:-1]} Nummer {n}."))
    return pairs


def write_corpus(
    directory: Path,
    splits: dict[str, list[tuple[str, str]]],
    langs: tuple[str, str] = ("en", "de"),
) -> Path:
    """Write `{split}.{lang}` files, one sentence per line."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, pairs in splits.items():
        for side, lang in enumerate(langs):
            text = "".join(pair[side] + "\n" for pair in pairs)
            (directory / f"{split}.{lang}").write_text(text, encoding="utf-8")
    return directory


def write_tiny_corpus(directory: Path) -> Path:
    """A clean en/de corpus: 60 train, 10 val, 10 test_2016_flickr pairs, no overlaps."""
    return write_corpus(
        directory,
        {
            "train": tiny_pairs(60),
            "val": tiny_pairs(10, offset=100),
            "test_2016_flickr": tiny_pairs(10, offset=200),
        },
    )


@pytest.fixture
def tiny_corpus_dir(tmp_path: Path) -> Path:
    """write_tiny_corpus in the test's tmp dir."""
    return write_tiny_corpus(tmp_path / "corpus")


def git_commit_all(root: Path) -> str:
    """`git init` (once) and commit everything in `root`; the new commit."""
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    if not (root / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "params"], cwd=root, check=True)
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty project root with the repo's params.yaml; MT_PROJECT_DIR points at it."""
    root = tmp_path / "project"
    root.mkdir()
    write_params(root)
    monkeypatch.setenv("MT_PROJECT_DIR", str(root))
    monkeypatch.chdir(root)
    from pipeline.config import _load_cached

    _load_cached.cache_clear()
    yield root
    _load_cached.cache_clear()


@pytest.fixture
def multi30k_dir() -> Path:
    if not (MULTI30K_DIR / "train.en.gz").is_file():
        pytest.fail(f"Multi30k not found at {MULTI30K_DIR}; set MT_DATA_DIR")
    return MULTI30K_DIR


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Trainers a test starts; any still running at the end (a failed test) are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()
