"""Batched greedy and beam-search decoding over the trained Seq2Seq model.

Both searches run a whole padded batch at once in one compiled function (`tf.function` under
TensorFlow, `jax.jit` under JAX; plain keras.ops either way): an `ops.while_loop` over time
steps with fixed-shape loop variables, finished hypotheses masked rather than removed, what each
step chose written into a buffer preallocated for the longest possible output, and the trained
layers reused through `seq2seq.encode` / `seq2seq.decode_step`. There is no per-sentence Python
loop.

Every hypothesis ends in EOS: at its last allowed step (max length = ratio x source length +
offset, source length counted without padding) only EOS may be chosen. Beam search ranks
hypotheses by the GNMT length-normalised score log P / ((5 + length) / 6) ** alpha; with one beam
it picks the arg-max token at every step, so beam size 1 reproduces greedy decoding exactly.

Each step's log-probabilities come from `decode_step`: the log-softmax of the logits, or, for a
model built with `copy_attention`, the log of the pointer-generator mixture, for which the step
also reads the source ids (`EncoderOutput.source_ids`, repeated per beam). The searches rank
either the same way. The beam search graph is in pipeline/model/beam.py, the tensor steps both
searches share in pipeline/model/search_steps.py.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from pipeline.config import DecodeConfig
from pipeline.model.beam import beam_graph
from pipeline.model.search_steps import (
    batch_major,
    length_penalty,
    max_target_lengths,
    only_eos_where,
    searching,
    take_per_row,
    write_step,
)
from pipeline.model.seq2seq import decode_step, encode
from pipeline.tokenize import BOS_ID, EOS_ID, PAD_ID

# What tests, benchmarks and pipeline/serving.py import from here (length_penalty and
# max_target_lengths live in search_steps, shared with beam.py).
__all__ = [
    "DecodeResult",
    "DecodingSettings",
    "beam_search",
    "decode",
    "greedy_decode",
    "length_penalty",
    "max_target_lengths",
    "step_budget",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodingSettings:
    """How to search; `from_config` reads them from params.yaml's `decode:` section.

    The defaults here serve a model used without a project (a bare model directory) and equal
    params.yaml's: tests/test_defaults.py fails when the two disagree.
    """

    beam_size: int = 5
    length_penalty: float = 1.0
    max_length_ratio: float = 1.5
    max_length_offset: int = 10
    batch_size: int = 128
    # Longer sources (in SentencePiece pieces) are cut to this length by the Translator.
    max_source_length: int = 200

    def __post_init__(self) -> None:
        if self.beam_size < 1 or self.batch_size < 1 or self.max_source_length < 1:
            raise ValueError(f"beam_size, batch_size and max_source_length must be >= 1: {self}")

    @classmethod
    def from_config(cls, config: DecodeConfig) -> DecodingSettings:
        return cls(
            beam_size=config.beam_size,
            length_penalty=config.length_penalty,
            max_length_ratio=config.max_length_ratio,
            max_length_offset=config.max_length_offset,
            batch_size=config.batch_size,
            max_source_length=config.max_source_length,
        )


@dataclass(frozen=True)
class DecodeResult:
    """One best hypothesis per source row.

    tokens: int32 [B, T], EOS included, PAD after it. lengths: int32 [B], tokens up to and
    including EOS. log_probs: float32 [B], summed token log-probabilities. scores: float32 [B],
    log_probs divided by the GNMT length penalty. attention: float32 [B, T, S], the attention
    over the source when each token was produced (zero rows after EOS).
    """

    tokens: np.ndarray
    lengths: np.ndarray
    log_probs: np.ndarray
    scores: np.ndarray
    attention: np.ndarray

    def token_ids(self, row: int) -> list[int]:
        """The pieces of hypothesis `row`, without EOS and padding."""
        ids = self.tokens[row, : self.lengths[row]].tolist()
        return ids[:-1] if ids and ids[-1] == EOS_ID else ids


def step_budget(source_length: int, settings: DecodingSettings) -> int:
    """Rows the step buffers need: at least `max_target_lengths` of any row of that width.

    Worked out in Python, so that JAX can size the buffers at trace time; the extra row covers
    the graph computing the limits in float32.
    """
    longest = math.floor(settings.max_length_ratio * source_length) + settings.max_length_offset
    return max(longest, 1) + 1


def _greedy_graph(
    model: Any, source_ids: Any, ratio: Any, offset: Any, alpha: Any, budget: Any
) -> tuple[Any, ...]:
    encoded = encode(model, source_ids)
    batch, source_length = ops.shape(source_ids)[0], ops.shape(source_ids)[1]
    limits = max_target_lengths(source_ids, ratio, offset)

    def step_fn(step, previous, state, finished, lengths, total, tokens, attentions):
        log_probs, state, attention = decode_step(
            model, previous, state, encoded.memory, encoded.memory_mask, encoded.source_ids
        )
        log_probs = only_eos_where(ops.expand_dims(step >= limits - 1, 1), log_probs)
        # Ranked on running totals with top_k, as beam search ranks them, so that one beam
        # reproduces these choices bit for bit (float rounding and tie-breaking included).
        chosen = ops.top_k(ops.expand_dims(total, 1) + log_probs, k=1)[1][:, 0]
        chosen_log_prob = take_per_row(log_probs, ops.expand_dims(chosen, 1))[:, 0]
        chosen = ops.where(finished, PAD_ID, chosen)
        total = total + ops.where(finished, 0.0, chosen_log_prob)
        lengths = lengths + ops.cast(ops.logical_not(finished), "int32")
        attention = ops.where(ops.expand_dims(finished, 1), 0.0, attention)
        tokens = write_step(tokens, step, chosen)
        attentions = write_step(attentions, step, attention)
        finished = ops.logical_or(finished, ops.equal(chosen, EOS_ID))
        return step + 1, chosen, state, finished, lengths, total, tokens, attentions

    initial = (
        ops.convert_to_tensor(0, "int32"),
        ops.full((batch,), BOS_ID, "int32"),
        tuple(encoded.state),
        ops.zeros((batch,), "bool"),
        ops.zeros((batch,), "int32"),
        ops.zeros((batch,), "float32"),
        ops.full((budget, batch), PAD_ID, "int32"),
        ops.zeros((budget, batch, source_length), "float32"),
    )
    steps, _, _, _, lengths, total, tokens, attentions = ops.while_loop(
        searching(ops.max(limits), lambda loop_vars: loop_vars[3]), step_fn, initial
    )
    scores = total / length_penalty(lengths, alpha)
    return steps, ops.transpose(tokens), lengths, total, scores, batch_major(attentions)


# One compiled search per (model, beam size); weak keys let unloaded models be collected.
_COMPILED: weakref.WeakKeyDictionary[Any, dict[int, Callable[..., Any]]] = (
    weakref.WeakKeyDictionary()
)


def _compiled_search(model: Any, beam_size: int) -> Callable[..., Any]:
    """beam_size 0 names greedy search; compiled once per model and beam size."""
    searches = _COMPILED.setdefault(model, {})
    if beam_size not in searches:

        def search(
            source_ids: Any, ratio: Any, offset: Any, alpha: Any, budget: Any
        ) -> tuple[Any, ...]:
            if beam_size == 0:
                return _greedy_graph(model, source_ids, ratio, offset, alpha, budget)
            return beam_graph(model, source_ids, ratio, offset, alpha, budget, beam_size)

        searches[beam_size] = _compile(model, search)
    return searches[beam_size]


def _compile(model: Any, search: Callable[..., Any]) -> Callable[..., Any]:
    """The search compiled for the Keras backend; other backends run it eagerly."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf_function(search)
    if backend == "jax":
        return _jax_jit(model, search)
    return search


def _tf_function(search: Callable[..., Any]) -> Callable[..., Any]:
    """One graph for every batch shape: the step budget is a tensor, the buffers are dynamic."""
    import tensorflow as tf

    signature = [
        tf.TensorSpec([None, None], tf.int32, name="source_ids"),
        tf.TensorSpec([], tf.float32, name="max_length_ratio"),
        tf.TensorSpec([], tf.int32, name="max_length_offset"),
        tf.TensorSpec([], tf.float32, name="length_penalty"),
        tf.TensorSpec([], tf.int32, name="step_budget"),
    ]
    # autograph=False: the loops are explicit ops.while_loop, nothing to convert.
    return tf.function(search, input_signature=signature, autograph=False)


def _jax_jit(model: Any, search: Callable[..., Any]) -> Callable[..., Any]:
    """jax.jit with the model's weights as an argument, so that later training is seen.

    JAX needs static shapes, so each source shape and step budget is traced once.
    """
    import jax

    def stateless(weights: list[Any], *args: Any) -> tuple[Any, ...]:
        with keras.StatelessScope(state_mapping=list(zip(model.variables, weights, strict=True))):
            return search(*args)

    jitted = jax.jit(stateless, static_argnums=5)
    return lambda *args: jitted([variable.value for variable in model.variables], *args)


def _run(
    model: Any, source_ids: np.ndarray, settings: DecodingSettings, beam_size: int
) -> DecodeResult:
    source = np.asarray(source_ids, dtype=np.int32)
    if source.ndim != 2 or source.shape[0] == 0 or source.shape[1] == 0:
        raise ValueError(
            f"source_ids must be a non-empty [batch, length] array, got {source.shape}"
        )
    outputs = _compiled_search(model, beam_size)(
        source,
        np.float32(settings.max_length_ratio),
        np.int32(settings.max_length_offset),
        np.float32(settings.length_penalty),
        step_budget(source.shape[1], settings),
    )
    steps, tokens, lengths, log_probs, scores, attention = (
        ops.convert_to_numpy(output) for output in outputs
    )
    # The buffers hold the step budget; the search ran `steps` of them.
    return DecodeResult(tokens[:, :steps], lengths, log_probs, scores, attention[:, :steps])


def greedy_decode(model: Any, source_ids: np.ndarray, settings: DecodingSettings) -> DecodeResult:
    """Arg-max decoding of a padded int32 [B, S] batch of source piece ids."""
    return _run(model, source_ids, settings, beam_size=0)


def beam_search(model: Any, source_ids: np.ndarray, settings: DecodingSettings) -> DecodeResult:
    """Beam search with `settings.beam_size` beams; returns the best hypothesis per row."""
    return _run(model, source_ids, settings, beam_size=settings.beam_size)


def decode(model: Any, source_ids: np.ndarray, settings: DecodingSettings) -> DecodeResult:
    """Greedy search for beam size 1 (same output, less work), beam search otherwise."""
    if settings.beam_size == 1:
        return greedy_decode(model, source_ids, settings)
    return beam_search(model, source_ids, settings)
