"""pipeline/model/seq2seq.py: graph, masks, serialisation and the step API decoding uses."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.config import ModelConfig, TrainConfig
from pipeline.model.seq2seq import (
    NEVER_LOG_PROB,
    EncoderOutput,
    build_seq2seq,
    decode_step,
    encode,
)
from pipeline.tokenize import BOS_ID, EOS_ID, PAD_ID
from pipeline.train import MaskedSequenceCrossEntropy, compile_for_training, dtype_policy
from tests.tiny_translator import TrainingRecipe, fit_until, session_seed

SRC_VOCAB, TGT_VOCAB = 23, 29
TINY = ModelConfig(embedding_dim=16, hidden_units=12, dropout=0.0, tie_embeddings=True)

# Two sources and teacher-forced targets, right-padded with PAD_ID.
SOURCE = np.array([[5, 6, 7, 8], [9, 10, 0, 0]], np.int32)
TARGET_IN = np.array([[BOS_ID, 11, 12, 13], [BOS_ID, 14, 0, 0]], np.int32)
SOURCE_LENGTHS, TARGET_LENGTHS = (4, 2), (4, 2)


def tiny_model(config: ModelConfig = TINY) -> keras.Model:
    keras.utils.set_random_seed(7)
    return build_seq2seq(config, SRC_VOCAB, TGT_VOCAB)


def logits_of(model: keras.Model, source: np.ndarray, target_in: np.ndarray) -> np.ndarray:
    return np.asarray(model({"source": source, "target_in": target_in}, training=False))


def test_output_is_float32_logits_over_the_target_vocabulary() -> None:
    logits = tiny_model()({"source": SOURCE, "target_in": TARGET_IN})
    assert tuple(logits.shape) == (2, 4, TGT_VOCAB)
    assert logits.dtype == tf.float32


@pytest.mark.parametrize("copy", [False, True])
@pytest.mark.parametrize("tie", [True, False])
def test_layers_are_named(tie: bool, copy: bool) -> None:
    config = ModelConfig(16, 12, 0.1, tie_embeddings=tie, copy_attention=copy)
    model = build_seq2seq(config, TGT_VOCAB, TGT_VOCAB)  # copying: one vocabulary
    expected = {
        "source",
        "target_in",
        "source_mask",
        "source_embedding",
        "source_dropout",
        "encoder",
        "encoder_final_h",
        "encoder_final_c",
        "bridge_h",
        "bridge_c",
        "target_embedding",
        "target_dropout",
        "decoder",
        "attention",
        "attention_concat",
        "attentional",
        "attentional_dropout",
    }
    names = {layer.name for layer in model.layers}
    expected |= set() if tie else {"output_projection"}
    # pipeline/model/copy_attention.py: the pointer-generator's gate and mixture
    assert names == expected | (
        {"copy_gate_inputs", "copy_gate", "copy_mixture"} if copy else set()
    )
    assert isinstance(model.get_layer("encoder"), keras.layers.Bidirectional)
    assert model.get_layer("decoder").units == 2 * 12


def test_tied_model_has_no_separate_output_matrix() -> None:
    tied = tiny_model(TINY)
    untied = tiny_model(ModelConfig(16, 12, 0.0, tie_embeddings=False))
    # Untied: a Dense(Dd -> V) projection (its bias replaces the tied layer's output bias), and
    # the attentional layer [Dd; Dm] -> Dd instead of [Dd; Dm] -> E.  Dd = Dm = 24, E = 16.
    assert untied.count_params() - tied.count_params() == 24 * TGT_VOCAB + 48 * (24 - 16)


@pytest.mark.parametrize("tie", [True, False])
def test_save_and_load_with_safe_mode_gives_identical_outputs(tmp_path: Path, tie: bool) -> None:
    model = tiny_model(ModelConfig(16, 12, 0.2, tie_embeddings=tie))
    path = tmp_path / "seq2seq.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(
        logits_of(loaded, SOURCE, TARGET_IN), logits_of(model, SOURCE, TARGET_IN)
    )


def test_padding_does_not_change_real_positions() -> None:
    model = tiny_model()
    extra = np.zeros((2, 3), np.int32)
    padded = logits_of(
        model, np.concatenate([SOURCE, extra], 1), np.concatenate([TARGET_IN, extra], 1)
    )
    plain = logits_of(model, SOURCE, TARGET_IN)
    for row, length in enumerate(TARGET_LENGTHS):
        np.testing.assert_allclose(padded[row, :length], plain[row, :length], atol=1e-5)
    # and a row alone gives what it gives inside a batch with a longer neighbour
    alone = logits_of(model, SOURCE[1:, :2], TARGET_IN[1:, :2])
    np.testing.assert_allclose(alone[0], plain[1, :2], atol=1e-5)


def test_encode_masks_padding_and_shapes_the_state() -> None:
    model = tiny_model()
    encoded = encode(model, tf.constant(SOURCE))
    assert isinstance(encoded, EncoderOutput)
    assert tuple(encoded.memory.shape) == (2, 4, 24)
    assert encoded.memory.dtype == tf.float32
    np.testing.assert_array_equal(encoded.memory_mask.numpy(), SOURCE != PAD_ID)
    assert [tuple(part.shape) for part in encoded.state] == [(2, 24), (2, 24)]


def test_step_api_reproduces_the_teacher_forced_model() -> None:
    model = tiny_model()
    full = tf.nn.log_softmax(logits_of(model, SOURCE, TARGET_IN), axis=-1).numpy()
    encoded = encode(model, tf.constant(SOURCE))
    state = encoded.state
    for step in range(TARGET_IN.shape[1]):
        log_probs, state, attention = decode_step(
            model, tf.constant(TARGET_IN[:, step]), state, encoded.memory, encoded.memory_mask
        )
        for row, length in enumerate(TARGET_LENGTHS):
            if step < length:
                allowed = [i for i in range(TGT_VOCAB) if i not in (PAD_ID, BOS_ID)]
                np.testing.assert_allclose(
                    log_probs.numpy()[row, allowed], full[row, step, allowed], atol=1e-5
                )
        np.testing.assert_allclose(attention.numpy().sum(axis=1), [1.0, 1.0], atol=1e-6)
        assert np.all(attention.numpy()[1, 2:] == 0.0)  # padded source positions


def test_decode_step_never_proposes_pad_or_bos() -> None:
    model = tiny_model()
    encoded = encode(model, tf.constant(SOURCE))
    log_probs, _, _ = decode_step(
        model, tf.constant([BOS_ID, BOS_ID]), encoded.state, encoded.memory, encoded.memory_mask
    )
    assert np.all(log_probs.numpy()[:, [PAD_ID, BOS_ID]] == NEVER_LOG_PROB)
    assert log_probs.numpy()[:, EOS_ID].max() < 0.0


@pytest.mark.slow
def test_step_api_runs_inside_tf_function() -> None:
    model = tiny_model()

    @tf.function
    def first_step(source: tf.Tensor) -> tf.Tensor:
        encoded = encode(model, source)
        start = tf.fill([tf.shape(source)[0]], BOS_ID)
        log_probs, _, _ = decode_step(
            model, start, encoded.state, encoded.memory, encoded.memory_mask
        )
        return log_probs

    eager_encoded = encode(model, tf.constant(SOURCE))
    eager, _, _ = decode_step(
        model,
        tf.constant([BOS_ID, BOS_ID]),
        eager_encoded.state,
        eager_encoded.memory,
        eager_encoded.memory_mask,
    )
    np.testing.assert_allclose(first_step(tf.constant(SOURCE)).numpy(), eager.numpy(), atol=1e-6)


def overfit_data() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """20 random pairs, lengths 3..6, right-padded; labels are target + EOS."""
    rng = np.random.default_rng(0)
    sources = np.zeros((20, 6), np.int32)
    target_in = np.zeros((20, 7), np.int32)
    target_out = np.zeros((20, 7), np.int32)
    for row in range(20):
        source = rng.integers(4, SRC_VOCAB, rng.integers(3, 7))
        target = rng.integers(4, TGT_VOCAB, rng.integers(3, 7))
        sources[row, : len(source)] = source
        target_in[row, : len(target) + 1] = np.r_[BOS_ID, target]
        target_out[row, : len(target) + 1] = np.r_[target, EOS_ID]
    return {"source": sources, "target_in": target_in}, target_out


def teacher_forcing_errors(
    model: keras.Model, inputs: dict[str, np.ndarray], labels: np.ndarray
) -> int:
    """Real label positions where the model's most likely token is not the label."""
    predicted = np.argmax(logits_of(model, inputs["source"], inputs["target_in"]), axis=-1)
    real = labels != PAD_ID
    return int(np.sum(predicted[real] != labels[real]))


@pytest.mark.slow
def test_model_overfits_twenty_pairs() -> None:
    """Trained until every label is the argmax (capped); the loss must have fallen with it."""
    config = ModelConfig(embedding_dim=32, hidden_units=32, dropout=0.0, tie_embeddings=True)
    recipe = TrainingRecipe(batch_size=20)
    keras.utils.set_random_seed(session_seed())
    model = build_seq2seq(config, SRC_VOCAB, TGT_VOCAB)
    model.compile(
        optimizer=keras.optimizers.Adam(recipe.learning_rate, clipnorm=recipe.clip_norm),
        loss=MaskedSequenceCrossEntropy(0.0),
    )
    inputs, labels = overfit_data()
    first_loss = float(model.evaluate(inputs, labels, verbose=0))

    def gaps(trained: keras.Model) -> list[str]:
        errors = teacher_forcing_errors(trained, inputs, labels)
        return [f"{errors} of {int(np.sum(labels != PAD_ID))} tokens wrong"] if errors else []

    fit_until(model, inputs, labels, recipe, gaps)
    assert teacher_forcing_errors(model, inputs, labels) == 0
    assert float(model.evaluate(inputs, labels, verbose=0)) < first_loss / 10


TRAIN = TrainConfig(
    epochs=1,
    batch_size=2,
    learning_rate=0.01,
    warmup_steps=1,
    label_smoothing=0.1,
    clip_norm=1.0,
    patience=1,
    max_tokens=10,
    precision="mixed_float16",
    bucket_boundaries=(4,),
)


@pytest.mark.slow
@pytest.mark.parametrize(("policy", "jit_compile"), [("mixed_float16", False), ("float32", True)])
def test_one_training_step_under_mixed_precision_and_xla(policy: str, jit_compile: bool) -> None:
    with dtype_policy(policy):
        model = tiny_model()
        compile_for_training(model, TRAIN, jit_compile=jit_compile)
    assert model.get_layer("decoder").compute_dtype == policy.replace("mixed_", "")
    assert model.jit_compile is jit_compile
    labels = np.array([[11, 12, 13, EOS_ID], [14, EOS_ID, 0, 0]], np.int32)
    before = [weight.numpy().copy() for weight in model.trainable_weights]
    loss = model.train_on_batch({"source": SOURCE, "target_in": TARGET_IN}, labels)
    loss_value = float(np.ravel(loss)[0])
    assert np.isfinite(loss_value) and loss_value > 0.0
    changed = [
        not np.array_equal(old, new.numpy())
        for old, new in zip(before, model.trainable_weights, strict=True)
    ]
    assert all(changed)
    assert logits_of(model, SOURCE, TARGET_IN).dtype == np.float32
