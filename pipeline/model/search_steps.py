"""Tensor steps the greedy and the beam search share (pipeline/model/decoding.py, beam.py).

Plain keras.ops on fixed-shape tensors, so that each search compiles into one loop under
TensorFlow (`tf.function`) and JAX (`jax.jit`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keras import ops

from pipeline.model.seq2seq import NEVER_LOG_PROB
from pipeline.tokenize import EOS_ID, PAD_ID


def length_penalty(lengths: Any, alpha: Any) -> Any:
    """GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al., 2016)."""
    return ops.power((5.0 + ops.cast(lengths, "float32")) / 6.0, alpha)


def max_target_lengths(source_ids: Any, ratio: Any, offset: Any) -> Any:
    """Per row: floor(ratio x non-pad source length) + offset, at least 1."""
    source_lengths = ops.sum(ops.cast(ops.not_equal(source_ids, PAD_ID), "float32"), axis=1)
    limits = ops.cast(ops.floor(ratio * source_lengths), "int32") + offset
    return ops.maximum(limits, 1)


def only_eos_where(at_limit: Any, log_probs: Any) -> Any:
    """Where `at_limit` (broadcastable to log_probs [..., V]) holds, only EOS stays possible."""
    return ops.where(at_limit, one_token_allowed(EOS_ID, log_probs), log_probs)


def one_token_allowed(token_id: int, log_probs: Any) -> Any:
    """[V] log-probabilities: 0 for `token_id`, NEVER_LOG_PROB for every other token."""
    tokens = ops.arange(ops.shape(log_probs)[-1])
    return ops.where(ops.equal(tokens, token_id), 0.0, NEVER_LOG_PROB)


def write_step(buffer: Any, step: Any, values: Any) -> Any:
    """`buffer` [T, ...] with row `step` replaced by `values` [...]."""
    start = (step,) + (0,) * (len(buffer.shape) - 1)
    return ops.slice_update(buffer, start, ops.expand_dims(values, 0))


def take_per_row(values: Any, indices: Any) -> Any:
    """values [B, N, ...], indices [B, K] -> [B, K, ...]: values[b, indices[b, k]]."""
    shape = ops.shape(values)
    rows = ops.expand_dims(ops.arange(shape[0], dtype="int32") * shape[1], 1) + indices
    return ops.take(ops.reshape(values, (-1, *shape[2:])), rows, axis=0)


def searching(max_steps: Any, finished_of: Callable[[tuple], Any]) -> Callable[..., Any]:
    """The loop condition: steps left and some hypothesis still open."""

    def condition(*loop_vars: Any) -> Any:
        still_open = ops.logical_not(ops.all(finished_of(loop_vars)))
        return ops.logical_and(loop_vars[0] < max_steps, still_open)

    return condition


def batch_major(attentions: Any) -> Any:
    """[T, B, S] -> [B, T, S]."""
    return ops.transpose(attentions, (1, 0, 2))
