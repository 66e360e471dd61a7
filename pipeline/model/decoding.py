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
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from pipeline.config import DecodeConfig
from pipeline.model.seq2seq import NEVER_LOG_PROB, decode_step, encode
from pipeline.tokenize import BOS_ID, EOS_ID, PAD_ID

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


def length_penalty(lengths: Any, alpha: Any) -> Any:
    """GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al., 2016)."""
    return ops.power((5.0 + ops.cast(lengths, "float32")) / 6.0, alpha)


def max_target_lengths(source_ids: Any, ratio: Any, offset: Any) -> Any:
    """Per row: floor(ratio x non-pad source length) + offset, at least 1."""
    source_lengths = ops.sum(ops.cast(ops.not_equal(source_ids, PAD_ID), "float32"), axis=1)
    limits = ops.cast(ops.floor(ratio * source_lengths), "int32") + offset
    return ops.maximum(limits, 1)


def step_budget(source_length: int, settings: DecodingSettings) -> int:
    """Rows the step buffers need: at least `max_target_lengths` of any row of that width.

    Worked out in Python, so that JAX can size the buffers at trace time; the extra row covers
    the graph computing the limits in float32.
    """
    longest = math.floor(settings.max_length_ratio * source_length) + settings.max_length_offset
    return max(longest, 1) + 1


def _only_eos_where(at_limit: Any, log_probs: Any) -> Any:
    """Where `at_limit` (broadcastable to log_probs [..., V]) holds, only EOS stays possible."""
    return ops.where(at_limit, _one_token_allowed(EOS_ID, log_probs), log_probs)


def _one_token_allowed(token_id: int, log_probs: Any) -> Any:
    """[V] log-probabilities: 0 for `token_id`, NEVER_LOG_PROB for every other token."""
    tokens = ops.arange(ops.shape(log_probs)[-1])
    return ops.where(ops.equal(tokens, token_id), 0.0, NEVER_LOG_PROB)


def _write_step(buffer: Any, step: Any, values: Any) -> Any:
    """`buffer` [T, ...] with row `step` replaced by `values` [...]."""
    start = (step,) + (0,) * (len(buffer.shape) - 1)
    return ops.slice_update(buffer, start, ops.expand_dims(values, 0))


def _take_per_row(values: Any, indices: Any) -> Any:
    """values [B, N, ...], indices [B, K] -> [B, K, ...]: values[b, indices[b, k]]."""
    shape = ops.shape(values)
    rows = ops.expand_dims(ops.arange(shape[0], dtype="int32") * shape[1], 1) + indices
    return ops.take(ops.reshape(values, (-1, *shape[2:])), rows, axis=0)


def _greedy_graph(
    model: Any, source_ids: Any, ratio: Any, offset: Any, alpha: Any, budget: Any
) -> tuple[Any, ...]:
    encoded = encode(model, source_ids)
    batch, source_length = ops.shape(source_ids)[0], ops.shape(source_ids)[1]
    limits = max_target_lengths(source_ids, ratio, offset)

    def step_fn(step, previous, state, finished, lengths, total, tokens, attentions):
        log_probs, state, attention = decode_step(
            model, previous, state, encoded.memory, encoded.memory_mask
        )
        log_probs = _only_eos_where(ops.expand_dims(step >= limits - 1, 1), log_probs)
        # Ranked on running totals with top_k, as beam search ranks them, so that one beam
        # reproduces these choices bit for bit (float rounding and tie-breaking included).
        chosen = ops.top_k(ops.expand_dims(total, 1) + log_probs, k=1)[1][:, 0]
        chosen_log_prob = _take_per_row(log_probs, ops.expand_dims(chosen, 1))[:, 0]
        chosen = ops.where(finished, PAD_ID, chosen)
        total = total + ops.where(finished, 0.0, chosen_log_prob)
        lengths = lengths + ops.cast(ops.logical_not(finished), "int32")
        attention = ops.where(ops.expand_dims(finished, 1), 0.0, attention)
        tokens = _write_step(tokens, step, chosen)
        attentions = _write_step(attentions, step, attention)
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
        _searching(ops.max(limits), lambda loop_vars: loop_vars[3]), step_fn, initial
    )
    scores = total / length_penalty(lengths, alpha)
    return steps, ops.transpose(tokens), lengths, total, scores, _batch_major(attentions)


def _searching(max_steps: Any, finished_of: Callable[[tuple], Any]) -> Callable[..., Any]:
    """The loop condition: steps left and some hypothesis still open."""

    def condition(*loop_vars: Any) -> Any:
        still_open = ops.logical_not(ops.all(finished_of(loop_vars)))
        return ops.logical_and(loop_vars[0] < max_steps, still_open)

    return condition


def _batch_major(attentions: Any) -> Any:
    """[T, B, S] -> [B, T, S]."""
    return ops.transpose(attentions, (1, 0, 2))


class _Beams(NamedTuple):
    """The K hypotheses kept per source row, all [B, K]."""

    finished: Any  # bool: EOS emitted
    lengths: Any  # int32: tokens so far, EOS included
    log_probs: Any  # float32: summed token log-probabilities


class _BeamHistory(NamedTuple):
    """What each step chose, preallocated for the step budget and written at row `step`."""

    tokens: Any  # int32 [T, B, K]: each kept hypothesis' new token (PAD after the search)
    parents: Any  # int32 [T, B, K]: the beam it extends (identity after the search)
    attention: Any  # float32 [T, B, K, S]: attention when the token was produced

    def write(self, step: Any, tokens: Any, parents: Any, attention: Any) -> _BeamHistory:
        return _BeamHistory(
            _write_step(self.tokens, step, tokens),
            _write_step(self.parents, step, parents),
            _write_step(self.attention, step, attention),
        )


def _extend_beams(beams: _Beams, log_probs: Any, step: Any, alpha: Any) -> tuple[_Beams, Any, Any]:
    """Score every one-token extension [B, K, V] and keep the best K per row.

    Returns the new beams, each one's parent beam [B, K] and its new token [B, K].
    """
    batch, beam_size, vocab = ops.shape(log_probs)
    # A finished hypothesis has one continuation, PAD, at no cost and no extra length.
    only_pad = _one_token_allowed(PAD_ID, log_probs)
    log_probs = ops.where(ops.expand_dims(beams.finished, 2), only_pad, log_probs)
    totals = ops.expand_dims(beams.log_probs, 2) + log_probs
    rescale = _finished_rescale(beams.finished, beams.lengths, step, alpha)
    keys = totals * ops.expand_dims(rescale, 2)
    _, flat_choice = ops.top_k(ops.reshape(keys, (batch, -1)), k=beam_size)
    parents, chosen = flat_choice // vocab, flat_choice % vocab
    extended_lengths = beams.lengths + ops.cast(ops.logical_not(beams.finished), "int32")
    extended = _Beams(
        finished=ops.logical_or(_take_per_row(beams.finished, parents), ops.equal(chosen, EOS_ID)),
        lengths=_take_per_row(extended_lengths, parents),
        log_probs=_take_per_row(ops.reshape(totals, (batch, -1)), flat_choice),
    )
    return extended, parents, chosen


def _beam_graph(
    model: Any,
    source_ids: Any,
    ratio: Any,
    offset: Any,
    alpha: Any,
    budget: Any,
    beam_size: int,
) -> tuple[Any, ...]:
    """Beam search on [B*K] flattened rows; per step it records tokens, parents, attention."""
    encoded = encode(model, source_ids)
    batch, source_length = ops.shape(source_ids)[0], ops.shape(source_ids)[1]
    memory = ops.repeat(encoded.memory, beam_size, axis=0)
    memory_mask = ops.repeat(encoded.memory_mask, beam_size, axis=0)
    limits = max_target_lengths(source_ids, ratio, offset)
    row_starts = ops.expand_dims(ops.arange(batch, dtype="int32") * beam_size, 1)

    def step_fn(step, previous, state, beams, history):
        log_probs, state, attention = decode_step(model, previous, state, memory, memory_mask)
        vocab = ops.shape(log_probs)[-1]  # static: shapes [B, K, V] in every backend's graph
        log_probs = ops.reshape(log_probs, (batch, beam_size, vocab))
        at_limit = ops.reshape(step >= limits - 1, (-1, 1, 1))
        extended, parents, chosen = _extend_beams(
            beams, _only_eos_where(at_limit, log_probs), step, alpha
        )
        # Each kept hypothesis continues from its parent's decoder state.
        parent_rows = ops.reshape(parents + row_starts, (-1,))
        state = tuple(ops.take(part, parent_rows, axis=0) for part in state)
        attention = _take_per_row(ops.reshape(attention, (batch, beam_size, -1)), parents)
        parent_finished = _take_per_row(beams.finished, parents)
        attention = ops.where(ops.expand_dims(parent_finished, 2), 0.0, attention)
        history = history.write(step, chosen, parents, attention)
        previous = ops.reshape(chosen, (-1,))
        return step + 1, previous, state, extended, history

    first_beam_only = ops.where(ops.arange(beam_size) == 0, 0.0, NEVER_LOG_PROB)
    initial = (
        ops.convert_to_tensor(0, "int32"),
        ops.full((batch * beam_size,), BOS_ID, "int32"),
        tuple(ops.repeat(part, beam_size, axis=0) for part in encoded.state),
        _Beams(
            finished=ops.zeros((batch, beam_size), "bool"),
            lengths=ops.zeros((batch, beam_size), "int32"),
            log_probs=ops.tile(ops.expand_dims(first_beam_only, 0), (batch, 1)),
        ),
        _BeamHistory(
            tokens=ops.full((budget, batch, beam_size), PAD_ID, "int32"),
            # Rows past the last step keep each beam its own parent: backtracking from the
            # end of the buffer passes through them unchanged.
            parents=ops.broadcast_to(
                ops.arange(beam_size, dtype="int32"), (budget, batch, beam_size)
            ),
            attention=ops.zeros((budget, batch, beam_size, source_length), "float32"),
        ),
    )
    steps, _, _, beams, history = ops.while_loop(
        _searching(ops.max(limits), lambda loop_vars: loop_vars[3].finished), step_fn, initial
    )
    scores = beams.log_probs / length_penalty(beams.lengths, alpha)
    best = ops.cast(ops.argmax(scores, axis=1), "int32")
    tokens, attention = _backtrack(best, history)

    def pick(values: Any) -> Any:
        return _take_per_row(values, ops.expand_dims(best, 1))[:, 0]

    return steps, tokens, pick(beams.lengths), pick(beams.log_probs), pick(scores), attention


def _finished_rescale(finished: Any, lengths: Any, step: Any, alpha: Any) -> Any:
    """Factor that puts finished hypotheses on the scale of the live ones' raw totals.

    Live candidates all have length step + 1, so ranking by normalised score equals ranking by
    log P for them and by log P x lp(step + 1) / lp(own length) for finished ones. Live totals
    stay unscaled: one beam then ranks exactly like greedy search.
    """
    live_penalty = length_penalty(step + 1, alpha)
    return ops.where(finished, live_penalty / length_penalty(lengths, alpha), 1.0)


def _backtrack(best: Any, history: _BeamHistory) -> tuple[Any, Any]:
    """Follow parent pointers from the last buffer row back to the first for the chosen beams.

    best: [B]; history: tokens, parents [T, B, K], attention [T, B, K, S]; returns the chosen
    hypotheses' tokens [B, T] and attention [B, T, S].
    """

    def step_back(step, beam, tokens, attention):
        chosen = ops.expand_dims(beam, 1)
        tokens = _write_step(tokens, step, _take_per_row(history.tokens[step], chosen)[:, 0])
        weights = _take_per_row(history.attention[step], chosen)[:, 0]
        attention = _write_step(attention, step, weights)
        return step - 1, _take_per_row(history.parents[step], chosen)[:, 0], tokens, attention

    initial = (
        ops.cast(ops.shape(history.tokens)[0] - 1, "int32"),
        best,
        ops.zeros_like(history.tokens[:, :, 0]),
        ops.zeros_like(history.attention[:, :, 0]),
    )
    _, _, tokens, attention = ops.while_loop(lambda step, *_: step >= 0, step_back, initial)
    return ops.transpose(tokens), _batch_major(attention)


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
            return _beam_graph(model, source_ids, ratio, offset, alpha, budget, beam_size)

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
