"""Run by tests/test_jax_backend.py as `KERAS_BACKEND=jax python -m tests.jax_copy_check DIR`.

A tiny copy-attention model (pipeline/model/copy_attention.py) under JAX, without TensorFlow:
a forward pass on fixed weights (the test compares it with TensorFlow's), one XLA-compiled
training step, greedy and beam search (beam 1 must equal greedy; with the gate closed every
piece comes from its own source row) and a save/load round trip. Prints one JSON line.
"""

from __future__ import annotations

import sys

# `import tensorflow` now raises ImportError, as where it is not installed.
sys.modules["tensorflow"] = None  # type: ignore[assignment]

import dataclasses  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.config import ModelConfig, TrainConfig  # noqa: E402
from pipeline.model.copy_attention import COPY_GATE  # noqa: E402
from pipeline.model.decoding import DecodingSettings, beam_search, greedy_decode  # noqa: E402
from pipeline.model.losses import compile_for_training  # noqa: E402
from pipeline.tokenize import BOS_ID, EOS_ID  # noqa: E402
from tests.copy_off_reference import built, fixed_weights  # noqa: E402

VOCAB = 20
CONFIG = ModelConfig(8, 6, 0.0, tie_embeddings=True, copy_attention=True)
SOURCE = [[5, 7, 9, 7, 11], [12, 13, 14, 0, 0]]
TARGET_IN = [[BOS_ID, 7, 9, 5], [BOS_ID, 13, 0, 0]]
LABELS = [[7, 9, 5, EOS_ID], [13, EOS_ID, 0, 0]]
TRAIN = TrainConfig(1, 2, 0.01, 1, 0.1, 1.0, 1, 10, "float32", (4,))


def forward(model: keras.Model) -> np.ndarray:
    inputs = {"source": np.array(SOURCE, np.int32), "target_in": np.array(TARGET_IN, np.int32)}
    return np.asarray(model(inputs, training=False))


def searches(model: keras.Model) -> dict[str, Any]:
    """Greedy and beam-1 tokens, open and with the gate closed (p_gen = sigmoid(-80))."""
    sources = np.array(SOURCE, np.int32)
    settings = DecodingSettings(beam_size=1, max_length_offset=3)
    found: dict[str, Any] = {}
    for name in ("open", "closed"):
        if name == "closed":
            gate = model.get_layer(COPY_GATE)
            gate.kernel.assign(np.zeros(gate.kernel.shape, np.float32))
            gate.bias.assign(np.full(gate.bias.shape, -80.0, np.float32))
        found[name] = {
            "greedy": greedy_decode(model, sources, settings).tokens.tolist(),
            "beam1": beam_search(model, sources, settings).tokens.tolist(),
        }
    return found


def training_loss() -> float:
    keras.utils.set_random_seed(7)
    model = built(CONFIG, (VOCAB, VOCAB))
    compile_for_training(model, TRAIN, jit_compile=True)
    inputs = {"source": np.array(SOURCE, np.int32), "target_in": np.array(TARGET_IN, np.int32)}
    loss = model.train_on_batch(inputs, np.array(LABELS, np.int32))
    return float(np.ravel(loss)[0])


def main(argv: list[str]) -> int:
    model = built(CONFIG, (VOCAB, VOCAB))
    model.set_weights(fixed_weights(model))
    outputs = forward(model)
    path = Path(argv[0]) / "copy.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    report = {
        "backend": keras.backend.backend(),
        "config": dataclasses.asdict(CONFIG),
        "vocab": VOCAB,
        "source": SOURCE,
        "target_in": TARGET_IN,
        "outputs": outputs.tolist(),
        "reloaded_equal": bool(np.array_equal(forward(reloaded), outputs)),
        "searches": searches(model),
        "training_loss": training_loss(),
        "tensorflow_modules": sorted(
            name
            for name, module in sys.modules.items()
            if name.split(".")[0] == "tensorflow" and module is not None
        ),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
