"""Tiny translators for tests and benchmarks, and one memorised model shared per session.

Tests that need a model which reproduces its training pairs must not depend on how many steps
that takes on this CPU: oneDNN kernels, AVX-512 and thread counts change the rounding of every
step, so a fixed step count that memorises here may fall short elsewhere. `train_translator`
therefore trains in rounds and, when given a `memorised` check, stops as soon as the real
decoder (greedy and every beam size the tests use) reproduces every pair with a clear margin,
and fails with a message naming what is still wrong if the step cap comes first.

The initialisation seed is `MT_TEST_SEED` (default 1); the pytest header prints it, so a run
with another seed is a stand-in for another CPU's rounding.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import ModelConfig, TokenizeConfig
from pipeline.model.decoding import DecodingSettings, beam_search
from pipeline.tokenize import BOS_ID, EOS_ID, load_tokenizers, train_tokenizer_models
from pipeline.translator import Translator, pad_batch
from tests.conftest import tiny_pairs

Pairs = Sequence[tuple[str, str]]

MEMORISED_PAIRS = tiny_pairs(20)
MEMORISED_MODEL = ModelConfig(embedding_dim=64, hidden_units=64, dropout=0.0, tie_embeddings=True)
# The 20 pairs support at most 119 unigram pieces (joint en+de).
MEMORISED_TOKENIZER = TokenizeConfig("unigram", 119, True, 1.0, 16)
# Every beam size a test decodes the memorised pairs with (evaluate and serving use 2).
CHECKED_BEAMS = (1, 2, 4, 5)
# A memorised pair's whole-sentence log-probability must exceed this: every token then has
# probability > 0.6, so no rounding difference between batchings or kernels can flip it.
MIN_SENTENCE_LOG_PROB = -0.5
MAX_MEMORISE_STEPS = 3000


def session_seed() -> int:
    """The initialisation seed of every model trained here (env MT_TEST_SEED, default 1)."""
    return int(os.environ.get("MT_TEST_SEED", "1"))


class NotMemorisedError(AssertionError):
    """The step cap came before the model reproduced every training pair."""


@dataclass(frozen=True)
class TrainingRecipe:
    """How `train_translator` fits: full-batch Adam with clipping, checked every round."""

    learning_rate: float = 0.03
    clip_norm: float = 1.0
    batch_size: int = 32
    epochs_per_round: int = 25
    max_steps: int = MAX_MEMORISE_STEPS


def write_tokenizers(
    directory: Path, sources: list[str], targets: list[str], config: TokenizeConfig
) -> None:
    (directory / "tokenizer").mkdir(parents=True, exist_ok=True)
    models = train_tokenizer_models(sources, targets, config, seed=1234)
    for name, model_bytes in zip(("src.model", "tgt.model"), models, strict=True):
        (directory / "tokenizer" / name).write_bytes(model_bytes)


def teacher_forcing_batch(
    source_ids: list[list[int]], target_ids: list[list[int]]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    inputs = {
        "source": pad_batch(source_ids),
        "target_in": pad_batch([[BOS_ID, *ids] for ids in target_ids]),
    }
    return inputs, pad_batch([[*ids, EOS_ID] for ids in target_ids])


def memorisation_gaps(translator: Translator, pairs: Pairs) -> list[str]:
    """What keeps `translator` from reproducing `pairs`: the first beam size, narrowest first,
    that fails a check; empty when every check holds. (While training goes on, greedy search
    fails first, so each round's check costs one search, not one per beam size.)"""
    sources = pad_batch(translator.encode_sources([source for source, _ in pairs]))
    expected = translator.tokenizers.tgt.encode([target for _, target in pairs])
    for beam_size in CHECKED_BEAMS:
        result = beam_search(translator.model, sources, DecodingSettings(beam_size=beam_size))
        wrong = [row for row in range(len(pairs)) if result.token_ids(row) != expected[row]]
        if wrong:
            return [f"beam {beam_size}: {len(wrong)} of {len(pairs)} pairs wrong"]
        if (weakest := float(np.min(result.log_probs))) <= MIN_SENTENCE_LOG_PROB:
            return [f"beam {beam_size}: weakest log-probability {weakest:.3f}"]
    return []


def train_translator(
    directory: Path,
    pairs: Pairs,
    model_config: ModelConfig,
    tokenizer_config: TokenizeConfig,
    recipe: TrainingRecipe,
    seed: int,
    gaps_of: Callable[[Translator], list[str]] | None = None,
    verbose: int = 0,
) -> Path:
    """Write `directory`/seq2seq.keras + tokenizer/ trained on `pairs`.

    Without `gaps_of`, trains `recipe.max_steps` steps. With it, trains in rounds until
    `gaps_of(translator)` is empty (see `fit_until`).
    """
    import keras

    from pipeline.model.seq2seq import build_seq2seq

    sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
    write_tokenizers(directory, sources, targets, tokenizer_config)
    tokenizers = load_tokenizers(directory / "tokenizer")
    inputs, labels = teacher_forcing_batch(
        tokenizers.src.encode(sources), tokenizers.tgt.encode(targets)
    )
    keras.utils.set_random_seed(seed)
    model = build_seq2seq(model_config, tokenizers.src_vocab_size, tokenizers.tgt_vocab_size)
    optimizer = keras.optimizers.Adam(recipe.learning_rate, clipnorm=recipe.clip_norm)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    model.compile(optimizer=optimizer, loss=loss)
    translator_gaps = None
    if gaps_of is not None:
        check = gaps_of

        def translator_gaps(trained: Any) -> list[str]:
            return check(Translator(trained, tokenizers, DecodingSettings()))

    try:
        steps = fit_until(model, inputs, labels, recipe, translator_gaps, verbose)
    except NotMemorisedError as error:
        raise NotMemorisedError(f"initialisation seed {seed}: {error}") from None
    model.save(directory / "seq2seq.keras")
    record = {"seed": seed, "steps": steps, "pairs": len(pairs)}
    (directory / "training.json").write_text(json.dumps(record), encoding="utf-8")
    return directory


def fit_until(
    model: Any,
    inputs: dict[str, np.ndarray],
    labels: np.ndarray,
    recipe: TrainingRecipe,
    gaps_of: Callable[[Any], list[str]] | None,
    verbose: int = 0,
) -> int:
    """Fit in rounds until `gaps_of(model)` is empty; the number of optimiser steps taken.

    Without `gaps_of`, fits `recipe.max_steps` steps at once. Raises NotMemorisedError naming
    the remaining gaps when the step cap comes first.
    """
    steps_per_epoch = -(-len(labels) // recipe.batch_size)
    max_epochs = max(1, recipe.max_steps // steps_per_epoch)
    round_epochs = recipe.epochs_per_round if gaps_of else max_epochs
    epoch, gaps = 0, ["not trained yet"]
    while epoch < max_epochs:
        until = min(epoch + round_epochs, max_epochs)
        model.fit(
            inputs,
            labels,
            batch_size=recipe.batch_size,
            initial_epoch=epoch,
            epochs=until,
            verbose=verbose,
        )
        epoch = until
        if gaps_of is None or not (gaps := gaps_of(model)):
            return epoch * steps_per_epoch
    raise NotMemorisedError(
        f"the tiny model did not memorise its {len(labels)} training pairs within "
        f"{epoch * steps_per_epoch} steps: {'; '.join(gaps)}"
    )


def train_memorised_translator(directory: Path, seed: int) -> Path:
    """seq2seq.keras + tokenizer/ that reproduce MEMORISED_PAIRS with every checked beam."""
    return train_translator(
        directory,
        MEMORISED_PAIRS,
        MEMORISED_MODEL,
        MEMORISED_TOKENIZER,
        TrainingRecipe(),
        seed,
        gaps_of=lambda translator: memorisation_gaps(translator, MEMORISED_PAIRS),
    )


def read_gz_lines(path: Path) -> list[str]:
    """The lines of a gzipped corpus file (Multi30k's layout)."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.read().removesuffix("\n").split("\n")


def train_quick_model(data_dir: Path, directory: Path, pairs: int, epochs: int) -> Path:
    """A small model on the first `pairs` Multi30k training pairs, for benchmark timings.

    Fixed steps, no memorisation check: decoding and serving timings need a model that emits
    EOS like a trained one, not one that reproduces its data.
    """
    from pipeline.text import normalize_text

    sources = [normalize_text(s) for s in read_gz_lines(data_dir / "train.en.gz")[:pairs]]
    targets = [normalize_text(t) for t in read_gz_lines(data_dir / "train.de.gz")[:pairs]]
    batch_size = 64
    recipe = TrainingRecipe(
        learning_rate=0.005,
        clip_norm=1.0,
        batch_size=batch_size,
        max_steps=epochs * -(-len(sources) // batch_size),
    )
    return train_translator(
        directory,
        list(zip(sources, targets, strict=True)),
        ModelConfig(embedding_dim=128, hidden_units=128, dropout=0.1, tie_embeddings=True),
        TokenizeConfig("unigram", 1000, True, 1.0, 16),
        recipe,
        seed=session_seed(),
        verbose=2,
    )


def shared_test_dir(tmp_path_factory: Any) -> Path:
    """A folder every process of this test run sees: the run's base temp folder, which under
    pytest-xdist is the parent of each worker's own (`.../pytest-N/popen-gw0`)."""
    base = Path(tmp_path_factory.getbasetemp())
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def memorised_training_summary(tmp_path_factory: Any) -> list[str]:
    """One line per memorised model this run trained: its seed and steps to memorise."""
    lines = []
    records = shared_test_dir(tmp_path_factory).glob("memorised_seed*/training.json")
    for record_file in sorted(records):
        record = json.loads(record_file.read_text(encoding="utf-8"))
        lines.append(
            f"memorised model: seed {record['seed']}, {record['steps']} steps to reproduce "
            f"{record['pairs']} pairs (cap {MAX_MEMORISE_STEPS})"
        )
    return lines


def memorised_model_dir(tmp_path_factory: Any) -> Path:
    """The memorised model of this run's seed, trained once per test run.

    Under pytest-xdist the first worker that asks trains it while the others wait on a file
    lock, so the run pays for one training, not one per worker.
    """
    from filelock import FileLock

    seed = session_seed()
    shared = shared_test_dir(tmp_path_factory)
    directory = shared / f"memorised_seed{seed}"
    with FileLock(shared / f"memorised_seed{seed}.lock"):
        if not (directory / "training.json").is_file():
            partial = shared / f"memorised_seed{seed}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            train_memorised_translator(partial, seed)
            partial.rename(directory)
    return directory
