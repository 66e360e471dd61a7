"""What training minimises: label-smoothed masked cross-entropy, the NLL metric, the schedule.

The model's outputs are logits, or log-probabilities with `model.copy_attention`: the loss and
the metric take either (see `token_cross_entropy`).

Plain keras.ops, so any Keras backend trains the model.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from pipeline.config import TrainConfig
from pipeline.model.seq2seq import PACKAGE
from pipeline.tokenize import PAD_ID


def token_cross_entropy(labels: Any, logits: Any, label_smoothing: float = 0.0) -> Any:
    """Per-token cross-entropy [B, T] from float logits [B, T, V], smoothed toward uniform.

    -log p(label) = logsumexp(logits) - logit[label]; smoothing adds eps * (logsumexp - mean
    logit), the cross-entropy against a uniform target. Written out rather than through
    `ops.sparse_categorical_crossentropy`: on the 2-core CPU a training step then costs ~7%
    fewer CPU-seconds under TensorFlow than through its fused sparse-softmax kernel, and as
    many under JAX (whose version multiplies by a one-hot [B, T, V]); see docs/training.md.

    `logits` may be log-probabilities, which a copy-attention model outputs
    (pipeline/model/copy_attention.py): their logsumexp is log 1 = 0, so the same formula gives
    -log p(label) and the smoothing term -mean(log p); loss and metric need no second version.
    """
    logits = ops.cast(logits, "float32")
    labels = ops.cast(labels, "int32")
    log_normaliser = ops.logsumexp(logits, axis=-1)
    label_logits = ops.take_along_axis(logits, ops.expand_dims(labels, -1), axis=-1)[..., 0]
    nll = log_normaliser - label_logits
    if not label_smoothing:
        return nll
    uniform = log_normaliser - ops.mean(logits, axis=-1)
    return (1.0 - label_smoothing) * nll + label_smoothing * uniform


def padding_weights(labels: Any) -> Any:
    return ops.cast(ops.not_equal(ops.cast(labels, "int32"), PAD_ID), "float32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedSequenceCrossEntropy(keras.losses.Loss):
    """Mean label-smoothed cross-entropy over the real (non-PAD) label tokens of a batch."""

    def __init__(
        self, label_smoothing: float = 0.0, name: str = "masked_sequence_cross_entropy", **kw: Any
    ) -> None:
        super().__init__(name=name, **kw)
        self.label_smoothing = label_smoothing

    def call(self, y_true: Any, y_pred: Any) -> Any:
        weights = padding_weights(y_true)
        losses = token_cross_entropy(y_true, y_pred, self.label_smoothing)
        return ops.sum(losses * weights) / ops.maximum(ops.sum(weights), 1.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedTokenNLL(keras.metrics.Metric):
    """Negative log-likelihood per real label token over the epoch; exp() is perplexity.

    Separate from the loss because label smoothing inflates the loss above the true NLL.
    """

    def __init__(self, name: str = "nll", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        weights = padding_weights(y_true)
        self.total.assign_add(ops.sum(token_cross_entropy(y_true, y_pred) * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self) -> Any:
        return self.total / ops.maximum(self.count, 1.0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class WarmupInverseSqrt(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak_learning_rate`, then decay with 1/sqrt(step)."""

    def __init__(self, peak_learning_rate: float, warmup_steps: int) -> None:
        self.peak_learning_rate = peak_learning_rate
        self.warmup_steps = warmup_steps

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32") + 1.0
        warmup = float(max(self.warmup_steps, 1))
        return self.peak_learning_rate * ops.minimum(step / warmup, ops.sqrt(warmup / step))

    def get_config(self) -> dict[str, Any]:
        return {"peak_learning_rate": self.peak_learning_rate, "warmup_steps": self.warmup_steps}


def compile_for_training(model: keras.Model, config: TrainConfig, jit_compile: bool) -> None:
    """Adam on the warm-up schedule, clipped gradients, masked smoothed loss, NLL metric."""
    optimizer = keras.optimizers.Adam(
        learning_rate=WarmupInverseSqrt(config.learning_rate, config.warmup_steps),
        clipnorm=config.clip_norm,
    )
    model.compile(
        optimizer=optimizer,
        loss=MaskedSequenceCrossEntropy(config.label_smoothing),
        metrics=[MaskedTokenNLL()],
        jit_compile=jit_compile,
    )
