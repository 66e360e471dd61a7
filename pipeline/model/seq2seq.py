"""The Seq2Seq LSTM translator, readable top to bottom.

    source ids ─► source_embedding ─► source_dropout ─► encoder (bidirectional LSTM) ─► memory
                                                             │ final states (fw, bw)
                                                             ▼
                                                   bridge_h / bridge_c (Dense)
                                                             │ decoder initial state
    target_in ─► target_embedding ─► target_dropout ─► decoder (LSTM) ─► attention (Luong) ─►
        attention_concat [decoder output; context] ─► attentional (Dense, tanh) ─►
        attentional_dropout ─► output projection (tied to target_embedding, or output_projection)
        ─► logits [B, T, V]

With `model.copy_attention` (pipeline/model/copy_attention.py) a gate mixes a copy of the source
into that distribution, and the model outputs log-probabilities instead of logits:

    [context; decoder output; target embedding] ─► copy_gate_inputs ─► copy_gate (Dense 1)
    logits, copy_gate, attention weights, source ids ─► copy_mixture ─► log P [B, T, V]

Luong attention is applied AFTER the decoder LSTM (no input feeding), so both LSTMs keep the
defaults that let TensorFlow pick the cuDNN kernel on a GPU: tanh/sigmoid activations, no
recurrent dropout, use_bias, unroll=False. Off cuDNN (a CPU, or JAX) both are
`ProjectedInputLSTM` (pipeline/model/recurrent.py): Keras' LSTM with the input product taken
once per sequence instead of once per step. Padding (PAD_ID = 0) is masked explicitly: the
encoder skips it, attention never looks at it, and the loss (pipeline/train.py) ignores it.

Training runs the whole graph at once (teacher forcing). Decoding (pipeline/model/decoding.py)
runs it one target token at a time through `encode` and `decode_step`, which call the very same
trained layers, fetched by name.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
from keras import ops

from pipeline.config import ModelConfig
from pipeline.model.copy_attention import (
    COPY_GATE,
    COPY_GATE_INPUTS,
    COPY_MIXTURE,
    CopyMixture,
    copy_gate_layers,
    has_copy_attention,
)
from pipeline.model.recurrent import PACKAGE, ProjectedInputLSTM
from pipeline.tokenize import BOS_ID, PAD_ID

# Log-probability of a choice that must never be made: PAD or BOS as a next token here, and in
# pipeline/model/decoding.py every token but EOS at the length limit, every continuation of a
# finished hypothesis but PAD, the empty initial beams. Finite, so beam arithmetic never meets
# inf - inf.
NEVER_LOG_PROB = -1.0e9


# ---------------------------------------------------------------------------- custom layers


@keras.saving.register_keras_serializable(package=PACKAGE)
class PaddingMask(keras.layers.Layer):
    """True where a token id is a real token, False on PAD."""

    def __init__(self, pad_id: int = PAD_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pad_id = pad_id

    def call(self, token_ids: Any) -> Any:
        return ops.not_equal(token_ids, self.pad_id)

    def compute_output_spec(self, token_ids: Any) -> Any:
        return keras.KerasTensor(token_ids.shape, dtype="bool")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package=PACKAGE)
class LuongAttention(keras.layers.Layer):
    """Luong "general" attention: score(h_t, h_s) = h_t^T W_a h_s.

    W_a is applied to the query (h_t W_a), not to the memory, so a decoding step costs
    B·Dd·Dm instead of re-projecting the whole memory each step. Returns the context vectors
    [B, T, Dm] and the attention weights [B, T, S]; masked source positions get weight 0.
    """

    def build(self, query_shape: Any, memory_shape: Any, memory_mask_shape: Any = None) -> None:
        self.query_kernel = self.add_weight(
            name="query_kernel",
            shape=(query_shape[-1], memory_shape[-1]),
            initializer="glorot_uniform",
        )

    def call(self, query: Any, memory: Any, memory_mask: Any) -> tuple[Any, Any]:
        projected = ops.matmul(query, self.query_kernel)
        scores = ops.einsum("btd,bsd->bts", projected, memory)
        # float16-safe "minus infinity" for padded source positions
        scores = ops.where(memory_mask[:, None, :], scores, ops.cast(-6.0e4, scores.dtype))
        weights = ops.softmax(scores, axis=-1)
        context = ops.einsum("bts,bsd->btd", weights, memory)
        return context, weights

    def compute_output_spec(self, query: Any, memory: Any, memory_mask: Any) -> Any:
        batch, steps, sources = query.shape[0], query.shape[1], memory.shape[1]
        return (
            keras.KerasTensor((batch, steps, memory.shape[-1]), dtype=self.compute_dtype),
            keras.KerasTensor((batch, steps, sources), dtype=self.compute_dtype),
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class TiedEmbedding(keras.layers.Layer):
    """Target embedding that doubles as the output projection (weight tying).

    `layer(ids)` looks ids up; `layer(hidden, project=True)` returns float32 logits
    `hidden @ embeddings^T + bias`. Sharing the matrix halves the largest weights of the model
    and regularises the softmax on a small corpus.
    """

    def __init__(self, vocab_size: int, output_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.output_dim = output_dim

    def build(self, input_shape: Any) -> None:
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocab_size, self.output_dim),
            initializer=keras.initializers.RandomUniform(-0.05, 0.05),
        )
        self.output_bias = self.add_weight(
            name="output_bias", shape=(self.vocab_size,), initializer="zeros"
        )

    def call(self, inputs: Any, project: bool = False) -> Any:
        if project:
            embeddings = ops.cast(self.embeddings, inputs.dtype)
            logits = ops.matmul(inputs, ops.transpose(embeddings))
            return ops.cast(logits, "float32") + ops.cast(self.output_bias, "float32")
        return ops.take(self.embeddings, ops.cast(inputs, "int32"), axis=0)

    def compute_output_spec(self, inputs: Any, project: bool = False) -> Any:
        if project:
            return keras.KerasTensor((*inputs.shape[:-1], self.vocab_size), dtype="float32")
        return keras.KerasTensor((*inputs.shape, self.output_dim), dtype=self.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "output_dim": self.output_dim,
        }


# ------------------------------------------------------------------------------ the model


def decoder_units(config: ModelConfig) -> int:
    """The decoder LSTM is as wide as the bidirectional encoder's output (2 x hidden)."""
    return 2 * config.hidden_units


def build_seq2seq(config: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> keras.Model:
    """The training graph: {"source": [B,S], "target_in": [B,T]} int32 -> logits [B,T,V]
    (log-probabilities with `copy_attention`)."""
    if config.copy_attention and src_vocab_size != tgt_vocab_size:
        raise ValueError(
            f"copy_attention needs one vocabulary for both sides (tokenize.joint: true), got "
            f"{src_vocab_size} source and {tgt_vocab_size} target pieces"
        )
    source = keras.Input(shape=(None,), dtype="int32", name="source")
    target_in = keras.Input(shape=(None,), dtype="int32", name="target_in")

    memory, memory_mask, initial_state = _encoder_graph(config, source, src_vocab_size)
    decoder = _decoder_graph(config, target_in, memory, memory_mask, initial_state, tgt_vocab_size)
    outputs = _copy_graph(decoder, source) if config.copy_attention else decoder.logits
    return keras.Model(
        inputs={"source": source, "target_in": target_in}, outputs=outputs, name="seq2seq"
    )


def _encoder_graph(config: ModelConfig, source: Any, vocab_size: int) -> tuple[Any, Any, list]:
    source_mask = PaddingMask(name="source_mask")(source)
    embedded = keras.layers.Embedding(vocab_size, config.embedding_dim, name="source_embedding")(
        source
    )
    embedded = keras.layers.Dropout(config.dropout, name="source_dropout")(embedded)
    encoder = keras.layers.Bidirectional(
        ProjectedInputLSTM(config.hidden_units, return_sequences=True, return_state=True),
        merge_mode="concat",
        name="encoder",
    )
    memory, forward_h, forward_c, backward_h, backward_c = encoder(embedded, mask=source_mask)
    final_h = keras.layers.Concatenate(name="encoder_final_h")([forward_h, backward_h])
    final_c = keras.layers.Concatenate(name="encoder_final_c")([forward_c, backward_c])
    units = decoder_units(config)
    state_h = keras.layers.Dense(units, activation="tanh", name="bridge_h")(final_h)
    state_c = keras.layers.Dense(units, name="bridge_c")(final_c)
    return memory, source_mask, [state_h, state_c]


class _DecoderTensors(NamedTuple):
    """The decoder's tensors, [B, T, ...] each (T = 1 in a decoding step); copying reads them."""

    logits: Any  # float32 [B, T, V]
    embedded: Any  # the decoder's inputs (target embeddings after dropout)
    outputs: Any  # the decoder LSTM's outputs
    context: Any  # attention's context vectors
    attention: Any  # attention weights [B, T, S]


def _decoder_graph(
    config: ModelConfig,
    target_in: Any,
    memory: Any,
    memory_mask: Any,
    initial_state: list,
    vocab_size: int,
) -> _DecoderTensors:
    embedding = _target_embedding(config, vocab_size)
    embedded = embedding(target_in)
    embedded = keras.layers.Dropout(config.dropout, name="target_dropout")(embedded)
    decoder = ProjectedInputLSTM(
        decoder_units(config), return_sequences=True, return_state=True, name="decoder"
    )
    # No mask here: target padding only trails the real tokens, so it cannot change their
    # outputs, and the loss ignores padded positions.
    outputs, _, _ = decoder(embedded, initial_state=initial_state)
    context, weights = LuongAttention(name="attention")(outputs, memory, memory_mask)
    attentional = _attentional_layers(config)
    hidden = attentional["attentional"](attentional["attention_concat"]([outputs, context]))
    hidden = keras.layers.Dropout(config.dropout, name="attentional_dropout")(hidden)
    if config.tie_embeddings:
        logits = embedding(hidden, project=True)
    else:
        output_projection = keras.layers.Dense(
            vocab_size, dtype="float32", name="output_projection"
        )
        logits = output_projection(hidden)
    return _DecoderTensors(logits, embedded, outputs, context, weights)


def _copy_graph(decoder: _DecoderTensors, source: Any) -> Any:
    """The pointer-generator's log-probabilities [B, T, V] (pipeline/model/copy_attention.py).

    Its layers are created after every other layer, so that the rest of the model is built,
    named and initialised exactly as without copying.
    """
    gate = copy_gate_layers()
    gate_inputs = gate[COPY_GATE_INPUTS]([decoder.context, decoder.outputs, decoder.embedded])
    gate_logit = gate[COPY_GATE](gate_inputs)
    return CopyMixture(name=COPY_MIXTURE)(decoder.logits, gate_logit, decoder.attention, source)


def _target_embedding(config: ModelConfig, vocab_size: int) -> keras.layers.Layer:
    if config.tie_embeddings:
        return TiedEmbedding(vocab_size, config.embedding_dim, name="target_embedding")
    return keras.layers.Embedding(vocab_size, config.embedding_dim, name="target_embedding")


def _attentional_layers(config: ModelConfig) -> dict[str, keras.layers.Layer]:
    # With tied weights the attentional vector lives in the embedding space it is scored in.
    width = config.embedding_dim if config.tie_embeddings else decoder_units(config)
    return {
        "attention_concat": keras.layers.Concatenate(name="attention_concat"),
        "attentional": keras.layers.Dense(
            width, activation="tanh", use_bias=False, name="attentional"
        ),
    }


# ----------------------------------------------------------- step API used by decoding
# Plain keras.ops on any backend: fine inside tf.function (TensorFlow) and jax.jit (JAX).


class EncoderOutput(NamedTuple):
    memory: Any  # [B, S, Dm] float32: encoder outputs attention reads
    memory_mask: Any  # [B, S] bool: False on PAD
    state: tuple[Any, ...]  # decoder initial state (h, c), each [B, Dd] float32
    source_ids: Any = None  # [B, S] int32: the pieces a copy-attention model copies from


def encode(model: keras.Model, source_ids: Any) -> EncoderOutput:
    """Run the trained encoder and bridge on padded source ids [B, S] (inference mode)."""
    source_ids = ops.cast(source_ids, "int32")
    memory_mask = model.get_layer("source_mask")(source_ids)
    embedded = model.get_layer("source_embedding")(source_ids)
    memory, forward_h, forward_c, backward_h, backward_c = model.get_layer("encoder")(
        embedded, mask=memory_mask, training=False
    )
    final_h = model.get_layer("encoder_final_h")([forward_h, backward_h])
    final_c = model.get_layer("encoder_final_c")([forward_c, backward_c])
    state_h = model.get_layer("bridge_h")(final_h)
    state_c = model.get_layer("bridge_c")(final_c)
    return EncoderOutput(
        memory=ops.cast(memory, "float32"),
        memory_mask=memory_mask,
        state=(ops.cast(state_h, "float32"), ops.cast(state_c, "float32")),
        source_ids=source_ids,
    )


def decode_step(
    model: keras.Model,
    token_ids: Any,
    state: tuple[Any, ...],
    memory: Any,
    memory_mask: Any,
    source_ids: Any = None,
) -> tuple[Any, tuple[Any, ...], Any]:
    """One decoder step for the previous tokens [B]: (log_probs [B,V], new state, attention [B,S]).

    Uses the decoder LSTM's cell directly: the same weights and gates as the full LSTM layer,
    without a scan over a one-step sequence. `source_ids` [B, S] (the rows `memory` encodes)
    are needed by a copy-attention model only.
    """
    step, (new_h, new_c) = _decoder_tensors_of_step(model, token_ids, state, memory, memory_mask)
    log_probs = _forbid_special_tokens(_step_log_probs(model, step, source_ids))
    new_state = (ops.cast(new_h, "float32"), ops.cast(new_c, "float32"))
    return log_probs, new_state, ops.cast(step.attention[:, 0, :], "float32")


def _decoder_tensors_of_step(
    model: keras.Model, token_ids: Any, state: tuple[Any, ...], memory: Any, memory_mask: Any
) -> tuple[_DecoderTensors, tuple[Any, Any]]:
    """The trained decoder layers on one step ([B, 1, ...] tensors) and the new LSTM state."""
    compute_dtype = model.get_layer("decoder").compute_dtype
    embedded = model.get_layer("target_embedding")(ops.cast(token_ids, "int32"))
    cell = model.get_layer("decoder").cell
    cast_state = [ops.cast(part, compute_dtype) for part in state]
    output, (new_h, new_c) = cell(embedded, cast_state, training=False)
    memory = ops.cast(memory, compute_dtype)
    context, weights = model.get_layer("attention")(output[:, None, :], memory, memory_mask)
    hidden = model.get_layer("attentional")(
        model.get_layer("attention_concat")([output[:, None, :], context])
    )
    logits = project_to_vocab(model, hidden)
    step = _DecoderTensors(logits, embedded[:, None, :], output[:, None, :], context, weights)
    return step, (new_h, new_c)


def _step_log_probs(model: keras.Model, step: _DecoderTensors, source_ids: Any) -> Any:
    """float32 [B, V]: log-softmax of the logits, or the pointer-generator's mixture."""
    if not has_copy_attention(model):
        return ops.log_softmax(ops.cast(step.logits[:, 0, :], "float32"), axis=-1)
    if source_ids is None:
        raise ValueError("a copy-attention model needs the source ids to decode: pass source_ids")
    gate_inputs = model.get_layer(COPY_GATE_INPUTS)([step.context, step.outputs, step.embedded])
    gate_logit = model.get_layer(COPY_GATE)(gate_inputs)
    mixture = model.get_layer(COPY_MIXTURE)(step.logits, gate_logit, step.attention, source_ids)
    return mixture[:, 0, :]


def project_to_vocab(model: keras.Model, hidden: Any) -> Any:
    """Attentional vectors [..., A] -> float32 logits [..., V] with the model's output layer."""
    embedding = model.get_layer("target_embedding")
    if isinstance(embedding, TiedEmbedding):
        return embedding(hidden, project=True)
    return model.get_layer("output_projection")(hidden)


def _forbid_special_tokens(log_probs: Any) -> Any:
    """PAD and BOS are never a next token; EOS and every subword stay allowed."""
    token = ops.arange(ops.shape(log_probs)[-1])
    forbidden = ops.logical_or(ops.equal(token, PAD_ID), ops.equal(token, BOS_ID))
    never = ops.convert_to_tensor(NEVER_LOG_PROB, log_probs.dtype)
    return ops.where(forbidden[None, :], never, log_probs)
