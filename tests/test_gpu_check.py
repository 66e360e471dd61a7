"""benchmarks/gpu_check.py: the GPU preset's time-boxed run, here on the tiny corpus and a CPU.

The script runs in a subprocess set up like the lent GPU machine: the Keras backend is jax (it is
fixed when Keras is first imported) and TensorFlow cannot be imported, as it is not installed
there. Keras itself imports TensorFlow wherever it can (`keras.utils.set_random_seed` seeds it),
so the subprocess finds a `tensorflow` that refuses to load, first on its path.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import load_config
from tests.conftest import REPO_ROOT, write_tiny_corpus

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"
PRESET_FILE = REPO_ROOT / "benchmarks" / "gpu_preset.yaml"
TRAINING_DOC = REPO_ROOT / "docs" / "training.md"
BACKEND = "jax"
# The preset scaled down to what the 60 tiny pairs support and a CPU trains in seconds.
TINY_OVERRIDES = (
    "tokenize.vocab_size=100",
    "model.embedding_dim=16",
    "model.hidden_units=16",
    "train.batch_size=16",
    "train.warmup_steps=2",
    # One length bucket, so one input shape: JAX compiles the train step once per shape.
    "train.bucket_boundaries=[40]",
)
MAX_STEPS = 6
# evaluate's BLEU signatures (pipeline/evaluate.py: sacreBLEU defaults, 1000 resamples, seed).
CASED_SIGNATURE = "nrefs:1|bs:1000|seed:1234|case:mixed|eff:no|tok:13a|smooth:exp|version:"
LOWERCASED_SIGNATURE = "nrefs:1|bs:1000|seed:1234|case:lc|eff:no|tok:13a|smooth:exp|version:"


def without_tensorflow(directory: Path) -> str:
    """A PYTHONPATH entry whose `tensorflow` raises ImportError, as a missing package does."""
    package = directory / "tensorflow"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(
        'raise ImportError("tensorflow is not installed on the GPU machine")\n', encoding="utf-8"
    )
    return str(directory)


def run_gpu_check(scratch: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(
        filter(None, [without_tensorflow(scratch / "no-tf"), os.environ.get("PYTHONPATH")])
    )
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "PYTHONPATH": path, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def tiny_run(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    corpus = write_tiny_corpus(tmp_path / "corpus")
    output = tmp_path / "gpu_check.json"
    arguments = ["--data-dir", str(corpus), "--output", str(output)]
    arguments += ["--max-steps", str(MAX_STEPS)]
    arguments += [part for key in TINY_OVERRIDES for part in ("--set", key)]
    return run_gpu_check(tmp_path, *arguments), output


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    done, output = tiny_run(tmp_path_factory.mktemp("gpu_check"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "target tokens/s" in done.stdout
    return dict(json.loads(output.read_text(encoding="utf-8")))


@pytest.mark.slow
def test_tiny_run_records_the_device_and_backend(tiny_result: dict[str, Any]) -> None:
    assert tiny_result["benchmark"] == "gpu_check"
    assert tiny_result["backend"] == BACKEND
    assert tiny_result["tensorflow_loaded"] is False
    assert tiny_result["device"]["platform"] == "cpu"
    assert isinstance(tiny_result["device"]["description"], str)
    assert tiny_result["gpus"] == 0
    assert tiny_result["peak_gpu_memory_bytes"] is None  # no GPU memory on a CPU
    assert {"python", "keras", "jax", "jaxlib", "numpy"} <= set(tiny_result["versions"])
    assert "tensorflow" not in tiny_result["versions"]
    assert tiny_result["preset"] == yaml.safe_load(PRESET_FILE.read_text(encoding="utf-8"))
    assert tiny_result["overrides"] == list(TINY_OVERRIDES)


@pytest.mark.slow
def test_tiny_run_records_training(tiny_result: dict[str, Any]) -> None:
    data, training = tiny_result["data"], tiny_result["training"]
    assert (data["train_pairs"], data["val_pairs"]) == (60, 10)
    assert data["src_vocab_size"] == data["tgt_vocab_size"] == 100
    assert training["stopped_by"] == "max steps"
    assert training["steps"] == MAX_STEPS
    epochs = training["epochs"]
    assert sum(epoch["steps"] for epoch in epochs) == MAX_STEPS
    assert training["epochs_done"] == sum(epoch["complete"] for epoch in epochs)
    assert [epoch["epoch"] for epoch in epochs] == list(range(1, len(epochs) + 1))
    assert 1 <= training["best_epoch"] <= len(epochs)
    assert training["precision"] == "float32"  # `auto` on a CPU
    assert training["first_epoch_seconds"] == epochs[0]["seconds"] > 0
    assert all(0 < epoch["train_seconds"] <= epoch["seconds"] for epoch in epochs)
    assert isinstance(training["target_tokens_per_second"], float)
    assert training["target_tokens_per_second"] > 0
    per_epoch = training["seconds_per_epoch"]
    assert per_epoch is None or per_epoch > 0  # None unless a second epoch completed


@pytest.mark.slow
def test_tiny_run_scores_test2016_as_evaluate_does(tiny_result: dict[str, Any]) -> None:
    evaluation = tiny_result["evaluation"]
    assert evaluation["split"] == "test_2016_flickr"
    assert evaluation["sentences"] == 10
    decode = load_config(REPO_ROOT / "params.yaml").decode
    assert (evaluation["beam_size"], evaluation["length_penalty"]) == (
        decode.beam_size,
        decode.length_penalty,
    )
    for key in ("bleu", "bleu_lowercase"):
        assert isinstance(evaluation[key], float)
        assert 0.0 <= evaluation[key] <= 100.0
    assert evaluation["signatures"]["bleu"].startswith(CASED_SIGNATURE)
    assert evaluation["signatures"]["bleu_lowercase"].startswith(LOWERCASED_SIGNATURE)
    assert tiny_result["meets_target"] is (evaluation["bleu_lowercase"] >= 40.0)
    assert set(tiny_result["timings_seconds"]) == {"prepare", "train", "evaluate", "total"}


@pytest.mark.slow
def test_an_unknown_override_is_refused_in_one_line(tmp_path: Path) -> None:
    corpus = write_tiny_corpus(tmp_path / "corpus")
    output = tmp_path / "gpu_check.json"
    done = run_gpu_check(
        tmp_path, "--data-dir", str(corpus), "--output", str(output), "--set", "train.x=1"
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "gpu_check: --set train.x=1: `train.x` is not a key of params.yaml (docs/params.md)"
    )
    assert "Traceback" not in done.stderr
    assert not output.exists()


def docs_preset_command() -> dict[str, Any]:
    """The `dvc exp run -S key=value ...` command of docs/training.md's "GPU preset" section."""
    section = TRAINING_DOC.read_text(encoding="utf-8").split("## GPU preset", 1)[1]
    command = re.search(r"```bash\n(dvc exp run .*?)```", section, re.DOTALL)
    assert command is not None, "no `dvc exp run` block under ## GPU preset"
    pairs = re.findall(r"-S (\S+?)=(\S+)", command.group(1))
    return {key: yaml.safe_load(value) for key, value in pairs}


def test_the_docs_command_is_the_preset_file() -> None:
    preset = yaml.safe_load(PRESET_FILE.read_text(encoding="utf-8"))
    assert docs_preset_command() == preset
