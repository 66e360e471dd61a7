"""Training rows: token pairs -> teacher-forcing rows -> bucketed, padded batches.

The batching is numpy (`bucket_batches`, `TeacherForcingBatches`), so every Keras backend trains
on the same batches; under TensorFlow they reach `model.fit` through `tf.data`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from pipeline.errors import DataError
from pipeline.paths import ProjectPaths
from pipeline.tokenize import BOS_ID, EOS_ID, PAD_ID

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherForcingPairs:
    """Training rows: source ids, decoder input (BOS + target), decoder labels (target + EOS)."""

    sources: list[np.ndarray]
    target_in: list[np.ndarray]
    target_out: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def target_tokens(self) -> int:
        """Label tokens per epoch (the unit of tokens/s)."""
        return sum(len(row) for row in self.target_out)


def teacher_forcing_pairs(
    sources: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    max_tokens: int,
    max_source_length: int | None = None,
) -> TeacherForcingPairs:
    """Cut each source to its first `max_source_length` pieces, as decoding does
    (decode.max_source_length), then keep pairs whose source and target have 1..max_tokens
    pieces; add BOS / EOS.

    The model learns from the heads it will be given: a long document's first paragraph is
    what a summary is usually made of. An empty source gives the encoder nothing to attend to,
    and an over-long pair costs padding for a whole batch, so both are dropped (and counted in
    the log).
    """
    if max_source_length is not None:
        sources = [source[:max_source_length] for source in sources]
    kept = [
        index
        for index, (source, target) in enumerate(zip(sources, targets, strict=True))
        if 0 < len(source) <= max_tokens and len(target) <= max_tokens
    ]
    if len(kept) < len(sources):
        log.info(
            "dropped %d of %d pairs (empty source or > %d pieces)",
            len(sources) - len(kept),
            len(sources),
            max_tokens,
        )
    bos, eos = np.array([BOS_ID], np.int32), np.array([EOS_ID], np.int32)
    return TeacherForcingPairs(
        sources=[np.asarray(sources[i], np.int32) for i in kept],
        target_in=[np.concatenate([bos, np.asarray(targets[i], np.int32)]) for i in kept],
        target_out=[np.concatenate([np.asarray(targets[i], np.int32), eos]) for i in kept],
    )


def bucket_batches(
    lengths: Sequence[int] | np.ndarray,
    batch_size: int,
    bucket_boundaries: Sequence[int],
    rng: np.random.Generator | None = None,
) -> list[np.ndarray]:
    """Row indices per batch: rows of one length bucket together, at most `batch_size` a batch.

    A row of length n sits in the first bucket with n <= bound (the last bucket takes the
    rest). With `rng` the rows are shuffled before they are cut into batches and the batches
    are shuffled too; without it both keep their order (validation).
    """
    lengths = np.asarray(lengths)
    buckets = np.searchsorted(np.asarray(bucket_boundaries), lengths, side="left")
    order = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    batches = []
    for bucket in range(len(bucket_boundaries) + 1):
        rows = order[buckets[order] == bucket]
        batches += [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    if rng is not None:
        batches = [batches[index] for index in rng.permutation(len(batches))]
    return batches


def row_lengths(pairs: TeacherForcingPairs) -> np.ndarray:
    """What a row is bucketed by: its longer side (the decoder side counts BOS)."""
    sides = zip(pairs.sources, pairs.target_in, strict=True)
    return np.array([max(len(source), len(target)) for source, target in sides], np.int64)


def batch_count(
    pairs: TeacherForcingPairs, batch_size: int, bucket_boundaries: Sequence[int]
) -> int:
    """Batches per epoch, the same whatever the shuffle.

    Known up front, so Keras shows a progress total from the first epoch on.
    """
    return len(bucket_batches(row_lengths(pairs), batch_size, bucket_boundaries))


def pad_rows(rows: Sequence[np.ndarray], shape: tuple[int, int] | None = None) -> np.ndarray:
    """int32 rows left-aligned in a PAD-filled array, by default [len(rows), longest row]."""
    shape = shape or (len(rows), max(len(row) for row in rows))
    padded = np.full(shape, PAD_ID, np.int32)
    for index, row in enumerate(rows):
        padded[index, : len(row)] = row
    return padded


Batch = tuple[dict[str, np.ndarray], np.ndarray]


class TeacherForcingBatches(keras.utils.PyDataset):
    """Bucketed, padded numpy batches ({"source", "target_in"}, target_out), one epoch each.

    Each epoch has its own order from (`shuffle_seed`, epoch): epochs differ, runs repeat.
    No seed: the order is fixed (validation).

    `fixed_shapes` (for JAX, which compiles the train step once per input shape) pads every
    batch to `batch_size` rows (all PAD, which the loss and metric ignore) and to its bucket's
    bound, so there is one shape per bucket; otherwise a batch is as wide as its longest row
    and the last batch of a bucket may have fewer rows.
    """

    def __init__(
        self,
        pairs: TeacherForcingPairs,
        batch_size: int,
        bucket_boundaries: Sequence[int],
        shuffle_seed: int | None = None,
        fixed_shapes: bool = False,
    ) -> None:
        super().__init__()
        self.pairs = pairs
        self.batch_size = batch_size
        self.bucket_boundaries = tuple(bucket_boundaries)
        self.shuffle_seed = shuffle_seed
        self.fixed_shapes = fixed_shapes
        self.epoch = 0
        self._lengths = row_lengths(pairs)
        # Each bucket's width under fixed shapes: its bound, the longest row for the last one.
        longest = int(self._lengths.max(initial=1))
        self._widths = [bound for bound in self.bucket_boundaries if bound < longest] + [longest]
        self._plan = self._plan_for(self.epoch)

    def _plan_for(self, epoch: int) -> list[np.ndarray]:
        seed = self.shuffle_seed
        rng = None if seed is None else np.random.default_rng([seed, epoch])
        return bucket_batches(self._lengths, self.batch_size, self.bucket_boundaries, rng)

    def _fixed_shape(self, rows: np.ndarray) -> tuple[int, int]:
        """[batch_size, the width of the rows' bucket]."""
        bucket = int(np.searchsorted(self._widths, self._lengths[rows[0]], side="left"))
        return self.batch_size, self._widths[bucket]

    def __len__(self) -> int:
        return len(self._plan)

    def __getitem__(self, index: int) -> Batch:
        rows = self._plan[index]
        shape = self._fixed_shape(rows) if self.fixed_shapes else None
        source, target_in, target_out = (
            pad_rows([column[row] for row in rows], shape)
            for column in (self.pairs.sources, self.pairs.target_in, self.pairs.target_out)
        )
        return {"source": source, "target_in": target_in}, target_out

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._plan = self._plan_for(self.epoch)

    def epoch_batches(self) -> Iterator[Batch]:
        """One pass of the tf.data pipeline: every batch of the next epoch, in its order.

        The order is drawn before the first batch, not after the last, so a pass that Keras
        stops at the epoch's last batch still leaves the next pass a new order.
        """
        self.on_epoch_end()
        for index in range(len(self)):
            yield self[index]


def make_dataset(
    pairs: TeacherForcingPairs,
    batch_size: int,
    bucket_boundaries: Sequence[int],
    shuffle_seed: int | None = None,
) -> Any:
    """What `model.fit` reads: padded batches of similar length, ({"source", "target_in"},
    target_out), in a new order each epoch from `shuffle_seed` (no seed: a fixed order).

    Bucketing by the longer side keeps padding (wasted LSTM steps) low. Under TensorFlow a
    `tf.data.Dataset` over `TeacherForcingBatches` (prefetched in the background); under any
    other backend the `TeacherForcingBatches` itself, with fixed shapes.
    """
    tensorflow = keras.backend.backend() == "tensorflow"
    batches = TeacherForcingBatches(
        pairs, batch_size, bucket_boundaries, shuffle_seed, fixed_shapes=not tensorflow
    )
    return _tf_dataset(batches) if tensorflow else batches


def _tf_dataset(batches: TeacherForcingBatches) -> Any:
    """The batches as a tf.data pipeline; each pass over it is the next epoch."""
    import tensorflow as tf

    ids = tf.TensorSpec([None, None], tf.int32)
    dataset = tf.data.Dataset.from_generator(
        batches.epoch_batches, output_signature=({"source": ids, "target_in": ids}, ids)
    )
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(batches)))
    return dataset.prefetch(tf.data.AUTOTUNE)


@dataclass(frozen=True)
class TrainingData:
    train: TeacherForcingPairs
    val: TeacherForcingPairs
    src_vocab_size: int
    tgt_vocab_size: int


def load_training_data(
    paths: ProjectPaths, max_tokens: int, max_source_length: int | None = None
) -> TrainingData:
    """data/tokens/{train,val}.npz (sources cut to `max_source_length` pieces) and the
    vocabulary sizes of models/tokenizer/."""
    from pipeline.tokenize import load_encoded_split, load_tokenizers

    tokenizers = load_tokenizers(paths.tokenizer_dir)
    splits = {
        name: load_encoded_split(paths.tokens_dir / f"{name}.npz") for name in ("train", "val")
    }
    pairs = {
        name: teacher_forcing_pairs(split.sources, split.targets, max_tokens, max_source_length)
        for name, split in splits.items()
    }
    for name, kept in pairs.items():
        if not len(kept):
            raise DataError(
                f"{paths.tokens_dir / (name + '.npz')}: no pair has 1..{max_tokens} pieces per "
                "side (rule train.max_tokens); raise train.max_tokens or check `mt tokenize`"
            )
    return TrainingData(
        pairs["train"], pairs["val"], tokenizers.src_vocab_size, tokenizers.tgt_vocab_size
    )


def input_hashes(paths: ProjectPaths) -> dict[str, str]:
    """sha256 of every file training reads, keyed by its path under the project root."""
    files = sorted(paths.tokens_dir.glob("*.npz")) + sorted(paths.tokenizer_dir.glob("*"))
    return {
        str(path.relative_to(paths.root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in files
        if path.is_file()
    }
