"""Run by tests/test_jax_backend.py as `KERAS_BACKEND=jax python -m tests.jax_memorise DIR`.

Without TensorFlow, as on the GPU machine (an import of it fails here), trains the pipeline's own
model, loss, schedule and batches (`compile_for_training`, `make_dataset`) on the memorised
pairs until greedy search and every checked beam size reproduce them (capped), then prints one
JSON line: the backend, the steps taken, the translations, the loss of a fixed example, and
every TensorFlow module that got loaded.
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

from pipeline.config import load_config  # noqa: E402
from pipeline.model.decoding import DecodingSettings  # noqa: E402
from pipeline.model.losses import compile_for_training, token_cross_entropy  # noqa: E402
from pipeline.model.seq2seq import build_seq2seq  # noqa: E402
from pipeline.tokenize import load_tokenizers  # noqa: E402
from pipeline.training.data import make_dataset, teacher_forcing_pairs  # noqa: E402
from pipeline.translator import Translator  # noqa: E402
from tests.conftest import REPO_ROOT  # noqa: E402
from tests.tiny_translator import (  # noqa: E402
    MAX_MEMORISE_STEPS,
    MEMORISED_MODEL,
    MEMORISED_PAIRS,
    MEMORISED_TOKENIZER,
    memorisation_gaps,
    session_seed,
    write_tokenizers,
)

# Two length buckets of the 20 pairs, each padded to 32 rows: two shapes, rows of PAD only.
BATCH_SIZE, BUCKETS = 32, (12,)
# A fixed example for the loss: logits [1, 2, 4] and labels [1, 2] (the second one PAD).
LOSS_LOGITS = [[[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4]]]
LOSS_LABELS = [[2, 0]]


def train_until_memorised(directory: Path) -> tuple[Translator, int]:
    sources, targets = [s for s, _ in MEMORISED_PAIRS], [t for _, t in MEMORISED_PAIRS]
    write_tokenizers(directory, sources, targets, MEMORISED_TOKENIZER)
    tokenizers = load_tokenizers(directory / "tokenizer")
    pairs = teacher_forcing_pairs(
        [np.array(ids) for ids in tokenizers.src.encode(sources)],
        [np.array(ids) for ids in tokenizers.tgt.encode(targets)],
        max_tokens=50,
    )
    dataset = make_dataset(pairs, BATCH_SIZE, BUCKETS, shuffle_seed=session_seed())
    train_config = dataclasses.replace(
        load_config(REPO_ROOT / "params.yaml").train,
        learning_rate=0.03,  # the memorising recipe of tests/tiny_translator.py
        warmup_steps=100,
        label_smoothing=0.0,
        clip_norm=1.0,
    )
    keras.utils.set_random_seed(session_seed())
    model = build_seq2seq(MEMORISED_MODEL, tokenizers.src_vocab_size, tokenizers.tgt_vocab_size)
    compile_for_training(model, train_config, jit_compile=True)
    translator = Translator(model, tokenizers, DecodingSettings())
    epoch, round_epochs = 0, 25
    while epoch * len(dataset) < MAX_MEMORISE_STEPS:
        model.fit(dataset, initial_epoch=epoch, epochs=epoch + round_epochs, verbose=0)
        epoch += round_epochs
        if not memorisation_gaps(translator, MEMORISED_PAIRS):
            return translator, epoch * len(dataset)
    gaps = "; ".join(memorisation_gaps(translator, MEMORISED_PAIRS))
    raise SystemExit(f"not memorised within {MAX_MEMORISE_STEPS} steps: {gaps}")


def report(translator: Translator, steps: int) -> dict[str, Any]:
    sources = [source for source, _ in MEMORISED_PAIRS]
    greedy = translator.with_settings(DecodingSettings(beam_size=1))
    beam = translator.with_settings(DecodingSettings(beam_size=5))
    return {
        "backend": keras.backend.backend(),
        "steps": steps,
        "greedy": greedy.translate(sources),
        "beam5": beam.translate(sources),
        "loss": {
            str(smoothing): np.asarray(
                token_cross_entropy(np.array(LOSS_LABELS), np.array(LOSS_LOGITS), smoothing)
            ).tolist()
            for smoothing in (0.0, 0.1)
        },
        "tensorflow_modules": sorted(
            name
            for name, module in sys.modules.items()
            if name.split(".")[0] == "tensorflow" and module is not None
        ),
    }


def main(argv: list[str]) -> int:
    translator, steps = train_until_memorised(Path(argv[0]))
    print(json.dumps(report(translator, steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
