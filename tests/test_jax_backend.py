"""The model, loss, batches and decoding under KERAS_BACKEND=jax, with TensorFlow unavailable.

A copy-attention model (pipeline/model/copy_attention.py) gets its own, smaller run
(tests/jax_copy_check.py): no memorising, a forward pass compared with TensorFlow's.

The GPU machine has JAX and Keras but no TensorFlow, so the GPU run must never be the first run
of this backend. Keras fixes its backend at first import, hence a subprocess
(tests/jax_memorise.py), which also makes `import tensorflow` fail there as it would on that
machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline.tokenize import EOS_ID, PAD_ID
from tests.conftest import REPO_ROOT
from tests.tiny_translator import MEMORISED_PAIRS


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    directory = tmp_path_factory.mktemp("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.jax_memorise", str(directory)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_jax_training_memorises_and_both_searches_reproduce_the_pairs(jax_run: dict) -> None:
    assert jax_run["backend"] == "jax"
    targets = [target for _, target in MEMORISED_PAIRS]
    assert jax_run["greedy"] == targets
    assert jax_run["beam5"] == targets


@pytest.mark.slow
def test_nothing_on_the_jax_path_imports_tensorflow(jax_run: dict) -> None:
    assert jax_run["tensorflow_modules"] == []


@pytest.mark.slow
def test_the_loss_under_jax_matches_the_definition(jax_run: dict) -> None:
    """jax_memorise's fixed example: labels [2, PAD] for two rows of logits."""
    logits = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    for smoothing in (0.0, 0.1):
        expected = [
            -(1 - smoothing) * log_probs[row, label] - smoothing * log_probs[row].mean()
            for row, label in enumerate([2, 0])
        ]
        assert jax_run["loss"][str(smoothing)][0] == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def jax_copy_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """tests/jax_copy_check.py's report: a tiny copy-attention model under JAX."""
    directory = tmp_path_factory.mktemp("jax_copy")
    done = subprocess.run(
        [sys.executable, "-m", "tests.jax_copy_check", str(directory)],
        cwd=REPO_ROOT,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_a_copy_model_trains_decodes_and_reloads_under_jax(jax_copy_run: dict) -> None:
    assert jax_copy_run["backend"] == "jax"
    assert jax_copy_run["tensorflow_modules"] == []
    assert jax_copy_run["reloaded_equal"]
    assert np.isfinite(jax_copy_run["training_loss"]) and jax_copy_run["training_loss"] > 0
    outputs = np.array(jax_copy_run["outputs"], np.float64)
    np.testing.assert_allclose(np.exp(outputs).sum(axis=-1), 1.0, atol=1e-5)
    for gate, found in jax_copy_run["searches"].items():
        assert found["greedy"] == found["beam1"], gate
    # Gate closed: every piece is copied from the row's own source (EOS and PAD aside).
    for source, tokens in zip(
        jax_copy_run["source"], jax_copy_run["searches"]["closed"]["greedy"], strict=True
    ):
        assert set(tokens) <= {*source, EOS_ID, PAD_ID}


@pytest.mark.slow
def test_jax_and_tensorflow_give_a_copy_model_the_same_outputs(jax_copy_run: dict) -> None:
    """The same fixed weights and inputs: the JAX report's log-probabilities, here under TF."""
    from pipeline.config import ModelConfig
    from tests.copy_off_reference import built, fixed_weights

    vocab = jax_copy_run["vocab"]
    model = built(ModelConfig(**jax_copy_run["config"]), (vocab, vocab))
    model.set_weights(fixed_weights(model))
    inputs = {
        "source": np.array(jax_copy_run["source"], np.int32),
        "target_in": np.array(jax_copy_run["target_in"], np.int32),
    }
    outputs = np.asarray(model(inputs, training=False))
    np.testing.assert_allclose(outputs, np.array(jax_copy_run["outputs"]), atol=1e-5)
