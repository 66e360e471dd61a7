"""Pointer-generator copying (See et al., 2017), on when `model.copy_attention` is true.

At each target step a gate decides between generating a piece from the vocabulary and copying
one from the source:

    p_gen = sigmoid(w · [context; decoder output; decoder input embedding] + b)
    P(v)  = p_gen · softmax(logits)(v) + (1 − p_gen) · Σ_{i: source_i = v} attention_i

The copy term scatters each source position's attention weight onto its piece id, so the
source and target must share one vocabulary (`tokenize.joint: true`, checked by the config).
Padded source positions carry no attention weight (LuongAttention masks them), so PAD gets
no copy mass.

The model then outputs log P, not logits. Computed in log space (log-sigmoid gates, log-softmax,
logaddexp), so a vocabulary probability too small for float32 stays finite; only the copy term
is floored (at COPY_FLOOR) before its log, which keeps log 0 and its infinite gradient out.
Log-softmax leaves log-probabilities unchanged, so the loss (pipeline/model/losses.py) and the
searches (pipeline/model/decoding.py) take them as they take logits.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from pipeline.model.recurrent import PACKAGE

# Layer names: decoding fetches the trained layers by name (pipeline/model/seq2seq.py).
COPY_GATE_INPUTS, COPY_GATE, COPY_MIXTURE = "copy_gate_inputs", "copy_gate", "copy_mixture"
# Smallest copy probability taken the log of: float32-normal (XLA flushes subnormals), and far
# below any probability a search or the loss can tell from zero.
COPY_FLOOR = 1.0e-30


def copy_gate_layers() -> dict[str, keras.layers.Layer]:
    """The gate's layers: [context; decoder output; embedding] -> the logit of p_gen [.., 1].

    float32 like the output projection: the gate's logit feeds float32 log-probabilities.
    """
    return {
        COPY_GATE_INPUTS: keras.layers.Concatenate(name=COPY_GATE_INPUTS),
        COPY_GATE: keras.layers.Dense(1, dtype="float32", name=COPY_GATE),
    }


def copy_distribution(attention: Any, source_ids: Any, vocab_size: int) -> Any:
    """[B, T, S] attention and [B, S] source ids -> [B, T, V]: attention mass per piece id.

    A segment sum over (row, piece id), each source position carrying its weights at all T
    steps: a piece found at several positions gets the sum of their weights. B·S·T additions,
    where a one-hot [B, S, V] product would cost B·T·S·V multiplications and a [B, S, V]
    tensor. Segment ids are row x V + id, so B x V must stay below 2^31 (int32).
    """
    shape = ops.shape(attention)
    batch, steps = shape[0], shape[1]
    by_position = ops.reshape(
        ops.transpose(ops.cast(attention, "float32"), (0, 2, 1)), (-1, steps)
    )
    rows = ops.expand_dims(ops.arange(batch, dtype="int32") * vocab_size, 1)
    segments = ops.reshape(rows + ops.cast(source_ids, "int32"), (-1,))
    copied = ops.segment_sum(by_position, segments, num_segments=batch * vocab_size)
    return ops.transpose(ops.reshape(copied, (batch, vocab_size, steps)), (0, 2, 1))


def mixture_log_probs(logits: Any, gate_logit: Any, attention: Any, source_ids: Any) -> Any:
    """log(p_gen · softmax(logits) + (1 − p_gen) · copy distribution), float32 [B, T, V].

    logits [B, T, V]; gate_logit [B, T, 1], the logit of p_gen; attention [B, T, S]; source_ids
    [B, S] in the target vocabulary.
    """
    logits = ops.cast(logits, "float32")
    gate_logit = ops.cast(gate_logit, "float32")
    copied = copy_distribution(attention, source_ids, logits.shape[-1])
    generate = ops.log_sigmoid(gate_logit) + ops.log_softmax(logits, axis=-1)
    copy = ops.log_sigmoid(-gate_logit) + ops.log(ops.maximum(copied, COPY_FLOOR))
    return ops.logaddexp(generate, copy)


@keras.saving.register_keras_serializable(package=PACKAGE)
class CopyMixture(keras.layers.Layer):
    """(logits, gate logit, attention, source ids) -> log-probabilities; see the module doc.

    No weights: the gate's weights are the `copy_gate` Dense layer's.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")  # mixed precision: the mixture stays float32
        super().__init__(**kwargs)

    def call(self, logits: Any, gate_logit: Any, attention: Any, source_ids: Any) -> Any:
        return mixture_log_probs(logits, gate_logit, attention, source_ids)

    def compute_output_spec(
        self, logits: Any, gate_logit: Any, attention: Any, source_ids: Any
    ) -> Any:
        return keras.KerasTensor(logits.shape, dtype="float32")


def has_copy_attention(model: keras.Model) -> bool:
    """Whether `model` was built with `copy_attention` (its outputs are then log-probabilities)."""
    return any(layer.name == COPY_MIXTURE for layer in model.layers)
