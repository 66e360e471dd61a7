"""Batched greedy and beam-search decoding over the trained Seq2Seq model.

Both searches run a whole padded batch at once inside one `tf.function`: a `tf.while_loop` over
time steps with fixed-shape loop variables, finished hypotheses masked rather than removed, and
the trained layers reused through `seq2seq.encode` / `seq2seq.decode_step`. There is no
per-sentence Python loop.

Every hypothesis ends in EOS: at its last allowed step (max length = ratio x source length +
offset, source length counted without padding) only EOS may be chosen. Beam search ranks
hypotheses by the GNMT length-normalised score log P / ((5 + length) / 6) ** alpha; with one beam
it picks the arg-max token at every step, so beam size 1 reproduces greedy decoding exactly.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from pipeline.config import DecodeConfig
from pipeline.model.seq2seq import decode_step, encode
from pipeline.tokenize import BOS_ID, EOS_ID, PAD_ID

log = logging.getLogger(__name__)

# Stands in for log(0): finite, so sums and divisions never produce NaN.
NEG_INF = -1e9


@dataclass(frozen=True)
class DecodingSettings:
    """How to search; `from_config` reads them from params.yaml's `decode:` section (the
    defaults here serve models without a project, e.g. a bare model directory)."""

    beam_size: int = 5
    length_penalty: float = 0.6
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


def length_penalty(lengths: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al., 2016)."""
    return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, alpha)


def max_target_lengths(source_ids: tf.Tensor, ratio: tf.Tensor, offset: tf.Tensor) -> tf.Tensor:
    """Per row: floor(ratio x non-pad source length) + offset, at least 1."""
    source_lengths = tf.reduce_sum(tf.cast(source_ids != PAD_ID, tf.float32), axis=1)
    limits = tf.cast(tf.floor(ratio * source_lengths), tf.int32) + offset
    return tf.maximum(limits, 1)


def _only_eos_where(at_limit: tf.Tensor, log_probs: tf.Tensor) -> tf.Tensor:
    """Where `at_limit` (broadcastable to log_probs [..., V]) holds, only EOS stays possible."""
    only_eos = tf.where(tf.range(tf.shape(log_probs)[-1]) == EOS_ID, 0.0, NEG_INF)
    return tf.where(at_limit, only_eos, log_probs)


def _greedy_graph(
    model: Any, source_ids: tf.Tensor, ratio: tf.Tensor, offset: tf.Tensor, alpha: tf.Tensor
) -> tuple[tf.Tensor, ...]:
    encoded = encode(model, source_ids)
    batch = tf.shape(source_ids)[0]
    limits = max_target_lengths(source_ids, ratio, offset)

    def step_fn(step, previous, state, finished, lengths, total, tokens_ta, attention_ta):
        log_probs, state, attention = decode_step(
            model, previous, state, encoded.memory, encoded.memory_mask
        )
        log_probs = _only_eos_where((step >= limits - 1)[:, None], log_probs)
        # Ranked on running totals with top_k, as beam search ranks them, so that one beam
        # reproduces these choices bit for bit (float rounding and tie-breaking included).
        chosen = tf.math.top_k(total[:, None] + log_probs, k=1).indices[:, 0]
        chosen_log_prob = tf.gather(log_probs, chosen, batch_dims=1)
        chosen = tf.where(finished, PAD_ID, chosen)
        total += tf.where(finished, 0.0, chosen_log_prob)
        lengths += tf.cast(~finished, tf.int32)
        attention = tf.where(finished[:, None], 0.0, attention)
        tokens_ta = tokens_ta.write(step, chosen)
        attention_ta = attention_ta.write(step, attention)
        finished = finished | (chosen == EOS_ID)
        return step + 1, chosen, state, finished, lengths, total, tokens_ta, attention_ta

    initial = (
        tf.constant(0),
        tf.fill([batch], BOS_ID),
        tuple(encoded.state),
        tf.zeros([batch], tf.bool),
        tf.zeros([batch], tf.int32),
        tf.zeros([batch], tf.float32),
        tf.TensorArray(tf.int32, size=0, dynamic_size=True),
        tf.TensorArray(tf.float32, size=0, dynamic_size=True),
    )
    max_steps = tf.reduce_max(limits)
    _, _, _, _, lengths, total, tokens_ta, attention_ta = tf.while_loop(
        lambda step, _p, _s, finished, *_: (step < max_steps) & ~tf.reduce_all(finished),
        step_fn,
        initial,
    )
    tokens = tf.transpose(tokens_ta.stack(), [1, 0])
    attention = tf.transpose(attention_ta.stack(), [1, 0, 2])
    return tokens, lengths, total, total / length_penalty(lengths, alpha), attention


class _Beams(NamedTuple):
    """The K hypotheses kept per source row, all [B, K]."""

    finished: tf.Tensor  # bool: EOS emitted
    lengths: tf.Tensor  # int32: tokens so far, EOS included
    log_probs: tf.Tensor  # float32: summed token log-probabilities


def _extend_beams(
    beams: _Beams, log_probs: tf.Tensor, step: tf.Tensor, alpha: tf.Tensor
) -> tuple[_Beams, tf.Tensor, tf.Tensor]:
    """Score every one-token extension [B, K, V] and keep the best K per row.

    Returns the new beams, each one's parent beam [B, K] and its new token [B, K].
    """
    batch, beam_size, vocab = (
        tf.shape(log_probs)[0],
        tf.shape(log_probs)[1],
        tf.shape(log_probs)[2],
    )
    # A finished hypothesis has one continuation, PAD, at no cost and no extra length.
    only_pad = tf.where(tf.range(vocab) == PAD_ID, 0.0, NEG_INF)
    log_probs = tf.where(beams.finished[:, :, None], only_pad, log_probs)
    totals = beams.log_probs[:, :, None] + log_probs
    keys = totals * _finished_rescale(beams.finished, beams.lengths, step, alpha)[:, :, None]
    _, flat_choice = tf.math.top_k(tf.reshape(keys, [batch, -1]), k=beam_size)
    parents, chosen = flat_choice // vocab, flat_choice % vocab
    parent_finished = tf.gather(beams.finished, parents, batch_dims=1)
    extended_lengths = beams.lengths + tf.cast(~beams.finished, tf.int32)
    extended = _Beams(
        finished=parent_finished | (chosen == EOS_ID),
        lengths=tf.gather(extended_lengths, parents, batch_dims=1),
        log_probs=tf.gather(tf.reshape(totals, [batch, -1]), flat_choice, batch_dims=1),
    )
    return extended, parents, chosen


def _beam_graph(
    model: Any,
    source_ids: tf.Tensor,
    ratio: tf.Tensor,
    offset: tf.Tensor,
    alpha: tf.Tensor,
    beam_size: int,
) -> tuple[tf.Tensor, ...]:
    """Beam search on [B*K] flattened rows; per step it records tokens, parents, attention."""
    encoded = encode(model, source_ids)
    batch = tf.shape(source_ids)[0]
    memory = tf.repeat(encoded.memory, beam_size, axis=0)
    memory_mask = tf.repeat(encoded.memory_mask, beam_size, axis=0)
    limits = max_target_lengths(source_ids, ratio, offset)
    row_starts = (tf.range(batch) * beam_size)[:, None]

    def step_fn(step, previous, state, beams, tokens_ta, parents_ta, attention_ta):
        log_probs, state, attention = decode_step(model, previous, state, memory, memory_mask)
        log_probs = tf.reshape(log_probs, [batch, beam_size, -1])
        log_probs = _only_eos_where((step >= limits - 1)[:, None, None], log_probs)
        extended, parents, chosen = _extend_beams(beams, log_probs, step, alpha)
        # Each kept hypothesis continues from its parent's decoder state.
        state = tuple(tf.gather(s, tf.reshape(parents + row_starts, [-1])) for s in state)
        attention = tf.reshape(attention, [batch, beam_size, -1])
        attention = tf.gather(attention, parents, batch_dims=1)
        parent_finished = tf.gather(beams.finished, parents, batch_dims=1)
        attention = tf.where(parent_finished[:, :, None], 0.0, attention)
        tokens_ta = tokens_ta.write(step, chosen)
        parents_ta = parents_ta.write(step, parents)
        attention_ta = attention_ta.write(step, attention)
        previous = tf.reshape(chosen, [-1])
        return step + 1, previous, state, extended, tokens_ta, parents_ta, attention_ta

    first_beam_only = tf.where(tf.range(beam_size) == 0, 0.0, NEG_INF)
    initial = (
        tf.constant(0),
        tf.fill([batch * beam_size], BOS_ID),
        tuple(tf.repeat(s, beam_size, axis=0) for s in encoded.state),
        _Beams(
            finished=tf.zeros([batch, beam_size], tf.bool),
            lengths=tf.zeros([batch, beam_size], tf.int32),
            log_probs=tf.tile(first_beam_only[None, :], [batch, 1]),
        ),
        tf.TensorArray(tf.int32, size=0, dynamic_size=True),
        tf.TensorArray(tf.int32, size=0, dynamic_size=True),
        tf.TensorArray(tf.float32, size=0, dynamic_size=True),
    )
    max_steps = tf.reduce_max(limits)
    _, _, _, beams, tokens_ta, parents_ta, attention_ta = tf.while_loop(
        lambda step, _p, _s, beams, *_: (step < max_steps) & ~tf.reduce_all(beams.finished),
        step_fn,
        initial,
    )
    scores = beams.log_probs / length_penalty(beams.lengths, alpha)
    best = tf.argmax(scores, axis=1, output_type=tf.int32)
    tokens, attention = _backtrack(
        best, tokens_ta.stack(), parents_ta.stack(), attention_ta.stack()
    )
    pick = lambda values: tf.gather(values, best, batch_dims=1)  # noqa: E731
    return tokens, pick(beams.lengths), pick(beams.log_probs), pick(scores), attention


def _finished_rescale(
    finished: tf.Tensor, lengths: tf.Tensor, step: tf.Tensor, alpha: tf.Tensor
) -> tf.Tensor:
    """Factor that puts finished hypotheses on the scale of the live ones' raw totals.

    Live candidates all have length step + 1, so ranking by normalised score equals ranking by
    log P for them and by log P x lp(step + 1) / lp(own length) for finished ones. Live totals
    stay unscaled: one beam then ranks exactly like greedy search.
    """
    live_penalty = length_penalty(step + 1, alpha)
    return tf.where(finished, live_penalty / length_penalty(lengths, alpha), 1.0)


def _backtrack(
    best: tf.Tensor, tokens: tf.Tensor, parents: tf.Tensor, attention: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Follow parent pointers from the last step back to the first for the chosen beams.

    tokens, parents: [T, B, K]; attention: [T, B, K, S]; returns [B, T] and [B, T, S].
    """

    def step_back(carry, step_values):
        beam, _, _ = carry
        step_tokens, step_parents, step_attention = step_values
        token = tf.gather(step_tokens, beam, batch_dims=1)
        weights = tf.gather(step_attention, beam, batch_dims=1)
        return tf.gather(step_parents, beam, batch_dims=1), token, weights

    initial = (best, tf.zeros_like(best), tf.zeros_like(attention[0, :, 0]))
    _, path_tokens, path_attention = tf.scan(
        step_back, (tokens, parents, attention), initializer=initial, reverse=True
    )
    return tf.transpose(path_tokens, [1, 0]), tf.transpose(path_attention, [1, 0, 2])


_SIGNATURE = [
    tf.TensorSpec([None, None], tf.int32, name="source_ids"),
    tf.TensorSpec([], tf.float32, name="max_length_ratio"),
    tf.TensorSpec([], tf.int32, name="max_length_offset"),
    tf.TensorSpec([], tf.float32, name="length_penalty"),
]

# One compiled search per (model, beam size); weak keys let unloaded models be collected.
_COMPILED: weakref.WeakKeyDictionary[Any, dict[int, Callable[..., Any]]] = (
    weakref.WeakKeyDictionary()
)


def _compiled_search(model: Any, beam_size: int) -> Callable[..., Any]:
    """beam_size 0 names greedy search; the graph is traced once per model and beam size."""
    searches = _COMPILED.setdefault(model, {})
    if beam_size not in searches:

        def search(
            source_ids: tf.Tensor, ratio: tf.Tensor, offset: tf.Tensor, alpha: tf.Tensor
        ) -> tuple[tf.Tensor, ...]:
            if beam_size == 0:
                return _greedy_graph(model, source_ids, ratio, offset, alpha)
            return _beam_graph(model, source_ids, ratio, offset, alpha, beam_size)

        # autograph=False: the loops are explicit tf.while_loop, nothing to convert.
        searches[beam_size] = tf.function(search, input_signature=_SIGNATURE, autograph=False)
    return searches[beam_size]


def _run(
    model: Any, source_ids: np.ndarray, settings: DecodingSettings, beam_size: int
) -> DecodeResult:
    source = np.asarray(source_ids, dtype=np.int32)
    if source.ndim != 2 or source.shape[0] == 0 or source.shape[1] == 0:
        raise ValueError(
            f"source_ids must be a non-empty [batch, length] array, got {source.shape}"
        )
    outputs = _compiled_search(model, beam_size)(
        tf.constant(source),
        tf.constant(settings.max_length_ratio, tf.float32),
        tf.constant(settings.max_length_offset, tf.int32),
        tf.constant(settings.length_penalty, tf.float32),
    )
    tokens, lengths, log_probs, scores, attention = (t.numpy() for t in outputs)
    return DecodeResult(tokens, lengths, log_probs, scores, attention)


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
