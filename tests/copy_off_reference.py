"""What the Seq2Seq model is with `copy_attention` off, as the code before copy attention built it.

`python -m tests.copy_off_reference` wrote tests/data/seq2seq_copy_off.json from the code before
pointer-generator copying existed (pipeline/model/copy_attention.py): this file run against
`git archive` of commit 93ce3c2. tests/test_copy_attention.py compares today's model with copy
off against it: the same layers wired the same way, the same weights created in the same order
with the same initial values, and the same outputs on fixed weights. Rerunning it against
today's code would compare today's code with itself: regenerate it only from that commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pipeline.config import ModelConfig
from pipeline.model.seq2seq import build_seq2seq
from pipeline.tokenize import BOS_ID

REFERENCE = Path(__file__).resolve().parent / "data" / "seq2seq_copy_off.json"
SRC_VOCAB, TGT_VOCAB, SEED = 11, 13, 7
SOURCE = np.array([[5, 6, 7, 8], [9, 10, 0, 0]], np.int32)
TARGET_IN = np.array([[BOS_ID, 11, 12], [BOS_ID, 4, 0]], np.int32)


def plain_config(tie: bool) -> ModelConfig:
    return ModelConfig(embedding_dim=8, hidden_units=6, dropout=0.1, tie_embeddings=tie)


def inbound_layers(layer_config: dict[str, Any]) -> list[str]:
    """Names of the layers whose outputs feed this layer, in the order its config lists them."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            history = node.get("config", {}).get("keras_history") if "config" in node else None
            if isinstance(history, list | tuple):
                found.append(str(history[0]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)

    walk(layer_config.get("inbound_nodes", []))
    return found


def fixed_weights(model: keras.Model) -> list[np.ndarray]:
    """Deterministic, non-trivial values for every weight, independent of any random seed."""
    return [
        0.3 * np.sin(np.arange(np.prod(w.shape), dtype=np.float64) * 0.37 + i).reshape(w.shape)
        for i, w in enumerate(model.weights)
    ]


def summary(model: keras.Model) -> dict[str, Any]:
    """Structure, initial weights (as sums) and outputs on fixed weights of a fresh model."""
    config = model.get_config()
    initial = [np.asarray(w.numpy(), np.float64) for w in model.weights]
    record = {
        "layers": [[layer.name, type(layer).__name__] for layer in model.layers],
        "inbound": {layer["name"]: inbound_layers(layer) for layer in config["layers"]},
        "weights": [[w.path, list(w.shape)] for w in model.weights],
        "initial_sums": [[float(v.sum()), float((v * v).sum())] for v in initial],
    }
    model.set_weights(fixed_weights(model))
    outputs = model({"source": SOURCE, "target_in": TARGET_IN}, training=False)
    record["outputs"] = np.asarray(outputs, np.float64).round(6).tolist()
    return record


def built(
    config: ModelConfig, vocab_sizes: tuple[int, int] = (SRC_VOCAB, TGT_VOCAB)
) -> keras.Model:
    """A fresh model, named as in a fresh process: weight paths hold Keras' generated names."""
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(SEED)
    return build_seq2seq(config, *vocab_sizes)


def main() -> int:
    reference = {str(tie): summary(built(plain_config(tie))) for tie in (True, False)}
    REFERENCE.write_text(json.dumps(reference, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
