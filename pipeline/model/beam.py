"""Beam search as one compiled graph: K hypotheses per source row, [B*K] flattened rows.

`beam_graph` is the search pipeline/model/decoding.py compiles for beam sizes above 0; see its
module doc for what both searches share (the length limit, EOS, the GNMT score).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from keras import ops

from pipeline.model.search_steps import (
    batch_major,
    length_penalty,
    max_target_lengths,
    one_token_allowed,
    only_eos_where,
    searching,
    take_per_row,
    write_step,
)
from pipeline.model.seq2seq import NEVER_LOG_PROB, decode_step, encode
from pipeline.tokenize import BOS_ID, EOS_ID, PAD_ID


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
            write_step(self.tokens, step, tokens),
            write_step(self.parents, step, parents),
            write_step(self.attention, step, attention),
        )


def _extend_beams(beams: _Beams, log_probs: Any, step: Any, alpha: Any) -> tuple[_Beams, Any, Any]:
    """Score every one-token extension [B, K, V] and keep the best K per row.

    Returns the new beams, each one's parent beam [B, K] and its new token [B, K].
    """
    batch, beam_size, vocab = ops.shape(log_probs)
    # A finished hypothesis has one continuation, PAD, at no cost and no extra length.
    only_pad = one_token_allowed(PAD_ID, log_probs)
    log_probs = ops.where(ops.expand_dims(beams.finished, 2), only_pad, log_probs)
    totals = ops.expand_dims(beams.log_probs, 2) + log_probs
    rescale = _finished_rescale(beams.finished, beams.lengths, step, alpha)
    keys = totals * ops.expand_dims(rescale, 2)
    _, flat_choice = ops.top_k(ops.reshape(keys, (batch, -1)), k=beam_size)
    parents, chosen = flat_choice // vocab, flat_choice % vocab
    extended_lengths = beams.lengths + ops.cast(ops.logical_not(beams.finished), "int32")
    extended = _Beams(
        finished=ops.logical_or(take_per_row(beams.finished, parents), ops.equal(chosen, EOS_ID)),
        lengths=take_per_row(extended_lengths, parents),
        log_probs=take_per_row(ops.reshape(totals, (batch, -1)), flat_choice),
    )
    return extended, parents, chosen


def beam_graph(
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
    source_rows = ops.repeat(encoded.source_ids, beam_size, axis=0)  # what copying copies
    limits = max_target_lengths(source_ids, ratio, offset)
    row_starts = ops.expand_dims(ops.arange(batch, dtype="int32") * beam_size, 1)

    def step_fn(step, previous, state, beams, history):
        log_probs, state, attention = decode_step(
            model, previous, state, memory, memory_mask, source_rows
        )
        vocab = ops.shape(log_probs)[-1]  # static: shapes [B, K, V] in every backend's graph
        log_probs = ops.reshape(log_probs, (batch, beam_size, vocab))
        at_limit = ops.reshape(step >= limits - 1, (-1, 1, 1))
        extended, parents, chosen = _extend_beams(
            beams, only_eos_where(at_limit, log_probs), step, alpha
        )
        # Each kept hypothesis continues from its parent's decoder state.
        parent_rows = ops.reshape(parents + row_starts, (-1,))
        state = tuple(ops.take(part, parent_rows, axis=0) for part in state)
        attention = take_per_row(ops.reshape(attention, (batch, beam_size, -1)), parents)
        parent_finished = take_per_row(beams.finished, parents)
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
        searching(ops.max(limits), lambda loop_vars: loop_vars[3].finished), step_fn, initial
    )
    scores = beams.log_probs / length_penalty(beams.lengths, alpha)
    best = ops.cast(ops.argmax(scores, axis=1), "int32")
    tokens, attention = _backtrack(best, history)

    def pick(values: Any) -> Any:
        return take_per_row(values, ops.expand_dims(best, 1))[:, 0]

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
        tokens = write_step(tokens, step, take_per_row(history.tokens[step], chosen)[:, 0])
        weights = take_per_row(history.attention[step], chosen)[:, 0]
        attention = write_step(attention, step, weights)
        return step - 1, take_per_row(history.parents[step], chosen)[:, 0], tokens, attention

    initial = (
        ops.cast(ops.shape(history.tokens)[0] - 1, "int32"),
        best,
        ops.zeros_like(history.tokens[:, :, 0]),
        ops.zeros_like(history.attention[:, :, 0]),
    )
    _, _, tokens, attention = ops.while_loop(lambda step, *_: step >= 0, step_back, initial)
    return ops.transpose(tokens), batch_major(attention)
