"""An LSTM layer that multiplies its inputs by the input kernel once per sequence, not per step.

Keras' own LSTM, off cuDNN, computes `x_t @ W + h_{t-1} @ U + b` at every step of its loop: on a
CPU that is two small matrix products per step where one large one (`X @ W + b` for all steps at
once, before the loop) and one small one would do. `ProjectedInputLSTM` keeps everything else
of `keras.layers.LSTM` — the same cell, weights, names, masking, `go_backwards` and the cuDNN
kernel where the backend offers one — and only moves the input product out of the loop.
Its weights are interchangeable with `keras.layers.LSTM`'s, and `layer.cell` still steps it one
token at a time (decoding does).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

# The backend's recurrent loop and cuDNN entry point; Keras exposes them only under keras.src.
from keras.src import backend as keras_backend

# The registration package of every custom object the saved model refers to.
PACKAGE = "mt_pipeline"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ProjectedInputLSTM(keras.layers.LSTM):
    """`keras.layers.LSTM` with the input projection hoisted out of the time loop."""

    def inner_loop(
        self, sequences: Any, initial_state: Any, mask: Any, training: bool = False
    ) -> Any:
        if self.dropout or self.recurrent_dropout:
            # Per-step dropout masks belong inside the loop: keep Keras' own implementation.
            return super().inner_loop(sequences, initial_state, mask, training=training)
        if isinstance(mask, list | tuple):
            mask = mask[0]
        try:
            return self._fused_kernel(sequences, initial_state, mask)
        except NotImplementedError:  # no cuDNN here: the hoisted loop below
            return self._hoisted_loop(sequences, initial_state, mask)

    def _fused_kernel(self, sequences: Any, initial_state: Any, mask: Any) -> Any:
        cell = self.cell
        output = keras_backend.lstm(
            sequences,
            initial_state[0],
            initial_state[1],
            mask,
            kernel=cell.kernel,
            recurrent_kernel=cell.recurrent_kernel,
            bias=cell.bias,
            activation=cell.activation,
            recurrent_activation=cell.recurrent_activation,
            return_sequences=self.return_sequences,
            go_backwards=self.go_backwards,
            unroll=self.unroll,
        )
        if keras_backend.backend() == "tensorflow":
            self.supports_jit = False  # cuDNN ops do not compile with XLA
        return output

    def _hoisted_loop(self, sequences: Any, initial_state: Any, mask: Any) -> Any:
        cell = self.cell
        projected = ops.matmul(sequences, cell.kernel)
        if cell.use_bias:
            projected = projected + cell.bias

        def step(projected_t: Any, states: Any) -> tuple[Any, list[Any]]:
            hidden, carry = states
            z = projected_t + ops.matmul(hidden, cell.recurrent_kernel)
            gate_in, gate_forget, candidate, gate_out = ops.split(z, 4, axis=-1)
            carry = cell.recurrent_activation(gate_forget) * carry + cell.recurrent_activation(
                gate_in
            ) * cell.activation(candidate)
            hidden = cell.recurrent_activation(gate_out) * cell.activation(carry)
            return hidden, [hidden, carry]

        return keras_backend.rnn(
            step,
            projected,
            list(initial_state),
            go_backwards=self.go_backwards,
            mask=mask,
            unroll=self.unroll,
            input_length=sequences.shape[1],
            zero_output_for_mask=self.zero_output_for_mask,
            return_all_outputs=self.return_sequences,
        )
