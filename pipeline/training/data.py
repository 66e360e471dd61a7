"""Training rows: token pairs -> teacher-forcing rows -> bucketed, padded `tf.data` batches."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

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
    sources: Sequence[np.ndarray], targets: Sequence[np.ndarray], max_tokens: int
) -> TeacherForcingPairs:
    """Keep pairs whose source and target have 1..max_tokens pieces; add BOS / EOS.

    An empty source gives the encoder nothing to attend to, and an over-long pair costs
    padding for a whole batch, so both are dropped (and counted in the log).
    """
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


def _row_lookup(rows: list[np.ndarray]) -> Callable[[Any], Any]:
    """index -> that row as a dense int32 tensor, from one flat array plus offsets."""
    offsets = np.zeros(len(rows) + 1, np.int64)
    offsets[1:] = np.cumsum([len(row) for row in rows])
    flat = tf.constant(np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32))
    starts = tf.constant(offsets)
    return lambda index: flat[starts[index] : starts[index + 1]]


def make_dataset(
    pairs: TeacherForcingPairs,
    batch_size: int,
    bucket_boundaries: Sequence[int],
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """Padded batches of similar length: ({"source", "target_in"}, target_out).

    Bucketing by the longer side keeps padding (wasted LSTM steps) low; shuffling happens
    before bucketing, with `shuffle_seed`, so epochs differ but runs repeat. No seed: the order
    is fixed (validation).
    """
    columns = {
        "source": _row_lookup(pairs.sources),
        "target_in": _row_lookup(pairs.target_in),
        "target_out": _row_lookup(pairs.target_out),
    }
    dataset = tf.data.Dataset.range(len(pairs))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(pairs), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.map(
        lambda index: {name: lookup(index) for name, lookup in columns.items()},
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda row: tf.maximum(
            tf.shape(row["source"])[0], tf.shape(row["target_in"])[0]
        ),
        bucket_boundaries=[bound + 1 for bound in bucket_boundaries],
        bucket_batch_sizes=[batch_size] * (len(bucket_boundaries) + 1),
        padding_values=PAD_ID,
    )
    dataset = dataset.map(
        lambda row: ({"source": row["source"], "target_in": row["target_in"]}, row["target_out"]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    batches = batch_count(pairs, batch_size, bucket_boundaries)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return dataset.prefetch(tf.data.AUTOTUNE)


def batch_count(
    pairs: TeacherForcingPairs, batch_size: int, bucket_boundaries: Sequence[int]
) -> int:
    """Batches per epoch: whatever the shuffle, each bucket yields ceil(rows / batch_size).

    Known up front, so Keras shows a progress total from the first epoch on.
    """
    lengths = [
        max(len(source), len(target))
        for source, target in zip(pairs.sources, pairs.target_in, strict=True)
    ]
    buckets = np.searchsorted(np.asarray(bucket_boundaries), lengths, side="left")
    rows_per_bucket = np.bincount(buckets, minlength=len(bucket_boundaries) + 1)
    return int(sum(math.ceil(rows / batch_size) for rows in rows_per_bucket))


@dataclass(frozen=True)
class TrainingData:
    train: TeacherForcingPairs
    val: TeacherForcingPairs
    src_vocab_size: int
    tgt_vocab_size: int


def load_training_data(paths: ProjectPaths, max_tokens: int) -> TrainingData:
    """data/tokens/{train,val}.npz and the vocabulary sizes of models/tokenizer/."""
    from pipeline.tokenize import load_encoded_split, load_tokenizers

    tokenizers = load_tokenizers(paths.tokenizer_dir)
    splits = {
        name: load_encoded_split(paths.tokens_dir / f"{name}.npz") for name in ("train", "val")
    }
    pairs = {
        name: teacher_forcing_pairs(split.sources, split.targets, max_tokens)
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
