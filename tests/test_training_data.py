"""pipeline/training/data.py's numpy batching: the plan both backends train on, fixed shapes.

The tf.data path (TensorFlow, the default backend) is tested through `make_dataset` in
tests/test_train.py; JAX trains on `TeacherForcingBatches(fixed_shapes=True)` (and
tests/test_jax_backend.py runs it).
"""

from __future__ import annotations

import numpy as np

from pipeline.tokenize import BOS_ID, EOS_ID, PAD_ID
from pipeline.training.data import TeacherForcingBatches, bucket_batches, teacher_forcing_pairs


def as_lists(batches: list[np.ndarray]) -> list[list[int]]:
    return [batch.tolist() for batch in batches]


def test_without_rng_batches_follow_bucket_then_row_order() -> None:
    # buckets (n <= 4, n <= 8, longer): rows 0, 2, 4 | 5 | 1, 3
    lengths = [3, 9, 4, 12, 2, 8]
    assert as_lists(bucket_batches(lengths, 2, [4, 8])) == [[0, 2], [4], [5], [1, 3]]


def test_with_rng_every_row_comes_once_in_a_batch_of_its_bucket() -> None:
    lengths = np.random.default_rng(0).integers(1, 20, 50)
    buckets = np.searchsorted([4, 8], lengths, side="left")
    plans = {
        seed: bucket_batches(lengths, 4, [4, 8], np.random.default_rng(seed)) for seed in (1, 2)
    }
    for batches in plans.values():
        assert sorted(np.concatenate(batches).tolist()) == list(range(50))
        assert all(len(batch) <= 4 and len(set(buckets[batch])) == 1 for batch in batches)
        assert len(batches) == len(bucket_batches(lengths, 4, [4, 8]))
    assert as_lists(plans[1]) != as_lists(plans[2])


def ids(length: int, start: int = 4) -> np.ndarray:
    return np.arange(start, start + length, dtype=np.int32)


# Longer sides (target_in counts BOS): 3, 4, 6, 7, 11 -> buckets n <= 4 (2 rows), n <= 8 (2),
# longer (1, as wide as the longest row).
PAIRS = teacher_forcing_pairs(
    [ids(3), ids(2), ids(6), ids(5), ids(11)], [ids(1), ids(3), ids(2), ids(6), ids(4)], 20
)


def test_fixed_shapes_pad_to_the_batch_size_and_the_bucket_bound() -> None:
    batches = TeacherForcingBatches(PAIRS, 3, [4, 8], fixed_shapes=True)
    shapes = [(batch["source"].shape, labels.shape) for batch, labels in batches]
    assert shapes == [((3, 4), (3, 4)), ((3, 8), (3, 8)), ((3, 11), (3, 11))]
    inputs, labels = batches[0]
    np.testing.assert_array_equal(inputs["source"][0], [4, 5, 6, PAD_ID])
    np.testing.assert_array_equal(inputs["target_in"][0], [BOS_ID, 4, PAD_ID, PAD_ID])
    np.testing.assert_array_equal(labels[0], [4, EOS_ID, PAD_ID, PAD_ID])
    # the third row only pads the batch to 3 rows: PAD everywhere, so the loss ignores it
    for array in (inputs["source"], inputs["target_in"], labels):
        assert (array[2] == PAD_ID).all()


def test_without_fixed_shapes_a_batch_is_as_wide_as_its_longest_row() -> None:
    batches = TeacherForcingBatches(PAIRS, 3, [4, 8])
    shapes = [(batch["source"].shape, labels.shape) for batch, labels in batches]
    assert shapes == [((2, 3), (2, 4)), ((2, 6), (2, 7)), ((1, 11), (1, 5))]


def test_each_pass_is_a_new_epoch_in_its_own_order_and_runs_repeat() -> None:
    pairs = teacher_forcing_pairs([ids(2, start) for start in range(4, 40)], [ids(2)] * 36, 20)

    def first_ids(batches: TeacherForcingBatches) -> list[int]:
        """The first source piece of each row, batch after batch, for one pass."""
        return [int(row[0]) for inputs, _ in batches.epoch_batches() for row in inputs["source"]]

    batches = TeacherForcingBatches(pairs, 4, [4], shuffle_seed=3)
    first, second = first_ids(batches), first_ids(batches)
    assert first != second
    assert sorted(first) == sorted(second) == list(range(4, 40))
    assert first_ids(TeacherForcingBatches(pairs, 4, [4], shuffle_seed=3)) == first
