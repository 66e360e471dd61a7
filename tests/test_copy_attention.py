"""Pointer-generator copying (pipeline/model/copy_attention.py); without it, the model unchanged.

Tiny models (a joint vocabulary of 20, widths 6-16): every test takes seconds.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.config import ModelConfig, load_config
from pipeline.errors import ConfigError
from pipeline.model.copy_attention import (
    COPY_FLOOR,
    COPY_GATE,
    copy_distribution,
    has_copy_attention,
    mixture_log_probs,
)
from pipeline.model.decoding import DecodingSettings, beam_search, greedy_decode
from pipeline.model.seq2seq import build_seq2seq, decode_step, encode
from pipeline.serving import (
    DECODING_ARTIFACT,
    KERAS_MODEL_ARTIFACT,
    TOKENIZER_ARTIFACT,
    TranslationModel,
)
from pipeline.tokenize import BOS_ID, EOS_ID, PAD_ID, load_tokenizers
from pipeline.train import MaskedSequenceCrossEntropy, compile_for_training, dtype_policy
from pipeline.training.outputs import export_float32
from pipeline.translator import Translator, pad_batch
from tests.conftest import REPO_ROOT, tiny_pairs
from tests.copy_off_reference import REFERENCE, built, plain_config, summary
from tests.test_decoding import assert_same_result
from tests.test_seq2seq import TRAIN as SEQ2SEQ_TRAIN
from tests.tiny_translator import (
    MEMORISED_TOKENIZER,
    TrainingRecipe,
    fit_until,
    session_seed,
    teacher_forcing_batch,
    write_tokenizers,
)

VOCAB = 20
COPY = ModelConfig(embedding_dim=8, hidden_units=6, dropout=0.0, tie_embeddings=True)
# Sources with a repeated piece (7) and padding; teacher-forced targets, labels with EOS.
SOURCE = np.array([[5, 7, 9, 7, 11], [12, 13, 14, 0, 0]], np.int32)
TARGET_IN = np.array([[BOS_ID, 7, 9, 5], [BOS_ID, 13, 0, 0]], np.int32)
LABELS = np.array([[7, 9, 5, EOS_ID], [13, EOS_ID, 0, 0]], np.int32)
TARGET_LENGTHS = (4, 2)


def copy_model(config: ModelConfig = COPY) -> keras.Model:
    return built(dataclasses.replace(config, copy_attention=True), (VOCAB, VOCAB))


def outputs_of(model: keras.Model) -> np.ndarray:
    return np.asarray(model({"source": SOURCE, "target_in": TARGET_IN}, training=False))


def set_gate(model: keras.Model, bias: float) -> None:
    """p_gen = sigmoid(bias) at every step: the gate's kernel is zeroed."""
    gate = model.get_layer(COPY_GATE)
    gate.kernel.assign(np.zeros(gate.kernel.shape, np.float32))
    gate.bias.assign(np.full(gate.bias.shape, bias, np.float32))


def scattered(attention: np.ndarray, source: np.ndarray) -> np.ndarray:
    """[B, S] attention and [B, S] ids -> [B, V]: each id's summed attention (NumPy)."""
    mass = np.zeros((len(source), VOCAB))
    for row in range(len(source)):
        np.add.at(mass[row], source[row], attention[row])
    return mass


# ------------------------------------------------------------- copy off: nothing changes


@pytest.mark.parametrize("tie", [True, False])
def test_copy_off_model_is_the_model_before_copy_attention(tie: bool) -> None:
    """Same layers and wiring, weights created in the same order with the same initial values,
    same outputs: against tests/data/seq2seq_copy_off.json, written by the code before copying
    existed (tests/copy_off_reference.py)."""
    reference = json.loads(REFERENCE.read_text("utf-8"))[str(tie)]
    model = built(plain_config(tie))
    assert not has_copy_attention(model)
    now = summary(model)
    for key in ("layers", "inbound", "weights"):
        assert now[key] == reference[key], key
    np.testing.assert_allclose(now["initial_sums"], reference["initial_sums"], rtol=1e-6)
    np.testing.assert_allclose(now["outputs"], reference["outputs"], atol=2e-6)


def test_copy_on_adds_only_the_gate_and_keeps_every_other_initial_weight() -> None:
    plain = built(COPY, (VOCAB, VOCAB))
    copying = copy_model()  # the same seed and generated names
    plain_weights = {w.path: w.numpy() for w in plain.weights}
    copy_weights = {w.path: w.numpy() for w in copying.weights}
    assert set(copy_weights) - set(plain_weights) == {"copy_gate/kernel", "copy_gate/bias"}
    # [context (2 x 6); decoder output (12); target embedding (8)] -> 1
    assert copy_weights["copy_gate/kernel"].shape == (12 + 12 + 8, 1)
    for path, values in plain_weights.items():
        np.testing.assert_array_equal(copy_weights[path], values, err_msg=path)


# ------------------------------------------------------------------------ the mixture


def test_copy_distribution_sums_the_attention_of_repeated_pieces() -> None:
    attention = np.array([[[0.1, 0.2, 0.3, 0.4, 0.0]]], np.float32)
    source = np.array([[5, 7, 9, 7, 0]], np.int32)
    copied = np.asarray(copy_distribution(attention, source, VOCAB))
    expected = np.zeros((1, 1, VOCAB))
    expected[0, 0, [5, 7, 9]] = [0.1, 0.6, 0.3]
    np.testing.assert_allclose(copied, expected, atol=1e-7)


def test_mixture_is_a_distribution_at_every_step_padding_included() -> None:
    probabilities = np.exp(outputs_of(copy_model()).astype(np.float64))
    np.testing.assert_allclose(probabilities.sum(axis=-1), np.ones((2, 4)), atol=1e-5)


def test_mixture_stays_finite_where_the_softmax_underflows() -> None:
    logits = np.array([[[0.0, 200.0, -200.0, 0.0]]], np.float32)
    log_probs = np.asarray(
        mixture_log_probs(logits, np.zeros((1, 1, 1), np.float32), np.ones((1, 1, 1)), [[3]])
    )
    assert np.isfinite(log_probs).all()
    np.testing.assert_allclose(log_probs[0, 0, [1, 3]], np.log([0.5, 0.5]), atol=1e-6)
    # exp(-400) is 0 in float32: the floored copy term (1 - p_gen) x COPY_FLOOR stands in
    assert log_probs[0, 0, 2] == pytest.approx(np.log(0.5 * COPY_FLOOR), rel=1e-5)


def test_a_closed_gate_gives_the_attention_mass_on_the_source_ids() -> None:
    """p_gen = 0: each next piece is a source piece, with its summed attention weight."""
    model = copy_model()
    set_gate(model, -80.0)
    encoded = encode(model, tf.constant(SOURCE))
    state, previous = encoded.state, tf.constant([BOS_ID, BOS_ID])
    for _ in range(3):
        log_probs, state, attention = decode_step(
            model, previous, state, encoded.memory, encoded.memory_mask, encoded.source_ids
        )
        probabilities = np.exp(log_probs.numpy().astype(np.float64))
        expected = scattered(attention.numpy(), SOURCE)
        np.testing.assert_allclose(probabilities, expected, atol=1e-6)
        previous = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
    # Only a row's own pieces get mass, never PAD (its padded positions have no attention).
    assert (expected[1, [PAD_ID, 5, 7, 9, 11]] == 0).all()
    assert (attention.numpy()[1, 3:] == 0).all()


def test_an_open_gate_gives_the_plain_models_softmax() -> None:
    """p_gen = 1: the copy model is the plain model with the same weights, log-softmaxed."""
    plain = built(COPY, (VOCAB, VOCAB))
    copying = copy_model()
    set_gate(copying, 80.0)
    weights = {w.path: w.numpy() for w in copying.weights}
    plain.set_weights([weights[w.path] for w in plain.weights])
    expected = tf.nn.log_softmax(outputs_of(plain), axis=-1).numpy()
    np.testing.assert_allclose(outputs_of(copying), expected, atol=1e-5)


def test_step_api_reproduces_the_teacher_forced_copy_model() -> None:
    model = copy_model()
    full = outputs_of(model)
    encoded = encode(model, tf.constant(SOURCE))
    state = encoded.state
    allowed = [i for i in range(VOCAB) if i not in (PAD_ID, BOS_ID)]
    for step in range(TARGET_IN.shape[1]):
        log_probs, state, _ = decode_step(
            model,
            tf.constant(TARGET_IN[:, step]),
            state,
            encoded.memory,
            encoded.memory_mask,
            encoded.source_ids,
        )
        for row, length in enumerate(TARGET_LENGTHS):
            if step < length:
                np.testing.assert_allclose(
                    log_probs.numpy()[row, allowed], full[row, step, allowed], atol=1e-5
                )


def test_decode_step_of_a_copy_model_needs_the_source_ids() -> None:
    model = copy_model()
    encoded = encode(model, tf.constant(SOURCE))
    with pytest.raises(ValueError, match="source ids"):
        decode_step(
            model,
            tf.constant([BOS_ID, BOS_ID]),
            encoded.state,
            encoded.memory,
            encoded.memory_mask,
        )


# ------------------------------------------------------------------------- training


def test_the_loss_is_the_smoothed_nll_of_the_mixture() -> None:
    log_probs = outputs_of(copy_model()).astype(np.float64)
    real = LABELS != PAD_ID
    label_log_probs = np.take_along_axis(log_probs, LABELS[..., None], axis=-1)[..., 0]
    smoothing = 0.1
    per_token = -(1 - smoothing) * label_log_probs - smoothing * log_probs.mean(axis=-1)
    loss = MaskedSequenceCrossEntropy(smoothing)(LABELS, log_probs.astype(np.float32))
    assert float(loss) == pytest.approx(per_token[real].mean(), rel=1e-5)


# test_seq2seq's one-step recipe; the precision is each test's own (dtype_policy).
TRAIN = dataclasses.replace(SEQ2SEQ_TRAIN, precision="float32")


@pytest.mark.slow
@pytest.mark.parametrize(("policy", "jit_compile"), [("mixed_float16", False), ("float32", True)])
def test_one_training_step_moves_every_weight_the_gate_included(
    policy: str, jit_compile: bool
) -> None:
    with dtype_policy(policy):  # not `copy_model`: clearing the session resets the policy
        keras.utils.set_random_seed(7)
        config = dataclasses.replace(COPY, dropout=0.1, copy_attention=True)
        model = build_seq2seq(config, VOCAB, VOCAB)
        compile_for_training(model, TRAIN, jit_compile=jit_compile)
    assert model.get_layer("decoder").compute_dtype == policy.replace("mixed_", "")
    before = {w.path: w.numpy().copy() for w in model.trainable_weights}
    loss = float(
        np.ravel(model.train_on_batch({"source": SOURCE, "target_in": TARGET_IN}, LABELS))[0]
    )
    assert np.isfinite(loss) and loss > 0.0
    unchanged = [
        w.path for w in model.trainable_weights if np.array_equal(before[w.path], w.numpy())
    ]
    assert unchanged == []
    assert all(np.isfinite(w.numpy()).all() for w in model.trainable_weights)  # no NaN gradient
    assert outputs_of(model).dtype == np.float32


# --------------------------------------------------------------------- decoding


def random_sources(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return pad_batch([rng.integers(4, VOCAB, size=n).tolist() for n in rng.integers(1, 8, rows)])


@pytest.mark.parametrize("gate_bias", [None, -80.0])
def test_beam_one_equals_greedy_with_copying(gate_bias: float | None) -> None:
    """Untrained, and with a closed gate (every piece copied from its own source row)."""
    model = copy_model()
    if gate_bias is not None:
        set_gate(model, gate_bias)
    sources = random_sources(16, seed=0)
    settings = DecodingSettings(beam_size=1, max_length_offset=3)
    greedy = greedy_decode(model, sources, settings)
    assert_same_result(greedy, beam_search(model, sources, settings))
    if gate_bias is not None:
        for row in range(len(sources)):
            assert set(greedy.token_ids(row)) <= set(sources[row].tolist())


def test_beam_search_with_copying_ends_every_hypothesis_in_eos() -> None:
    sources = random_sources(8, seed=1)
    settings = DecodingSettings(beam_size=3, max_length_ratio=1.0, max_length_offset=2)
    result = beam_search(copy_model(), sources, settings)
    limits = (sources != PAD_ID).sum(axis=1) + 2
    for row in range(len(sources)):
        assert 1 <= result.lengths[row] <= limits[row]
        assert result.tokens[row, result.lengths[row] - 1] == EOS_ID


# --------------------------------------------------------- saving, export and serving


def test_save_and_load_with_safe_mode_gives_identical_outputs(tmp_path: Path) -> None:
    model = copy_model(dataclasses.replace(COPY, tie_embeddings=False, dropout=0.2))
    model.save(tmp_path / "seq2seq.keras")
    loaded = keras.saving.load_model(tmp_path / "seq2seq.keras", safe_mode=True)
    assert has_copy_attention(loaded)
    np.testing.assert_array_equal(outputs_of(loaded), outputs_of(model))
    settings = DecodingSettings(beam_size=2)
    sources = random_sources(4, seed=2)
    assert_same_result(
        beam_search(loaded, sources, settings), beam_search(model, sources, settings)
    )


def test_the_exported_model_serves_through_the_translator_and_the_pyfunc(tmp_path: Path) -> None:
    """export_float32 (what `mt train` saves) -> Translator.load -> the MLflow pyfunc's loader."""
    pairs = tiny_pairs(20)
    write_tokenizers(tmp_path, [s for s, _ in pairs], [t for _, t in pairs], MEMORISED_TOKENIZER)
    tokenizers = load_tokenizers(tmp_path / "tokenizer")
    config = dataclasses.replace(
        load_config(REPO_ROOT / "params.yaml"),
        model=dataclasses.replace(COPY, copy_attention=True),
    )
    vocab = tokenizers.src_vocab_size  # joint: the same pieces on both sides
    data = SimpleNamespace(src_vocab_size=vocab, tgt_vocab_size=vocab)
    keras.utils.set_random_seed(3)
    source_model = build_seq2seq(config.model, vocab, vocab)
    exported = export_float32(source_model.get_weights(), config, data)  # type: ignore[arg-type]
    exported.save(tmp_path / "seq2seq.keras")
    settings = DecodingSettings(beam_size=2, max_length_offset=3)
    texts = [source for source, _ in pairs[:4]]
    expected = Translator(source_model, tokenizers, settings).translate(texts)
    loaded = Translator.load(tmp_path / "seq2seq.keras", tmp_path / "tokenizer", settings)
    assert loaded.translate(texts) == expected
    (tmp_path / "decoding.json").write_text(json.dumps(dataclasses.asdict(settings)), "utf-8")
    served = TranslationModel()
    served.load_translator(
        {
            KERAS_MODEL_ARTIFACT: str(tmp_path / "seq2seq.keras"),
            TOKENIZER_ARTIFACT: str(tmp_path / "tokenizer"),
            DECODING_ARTIFACT: str(tmp_path / "decoding.json"),
        }
    )
    assert served.translate_texts(texts, beam_size=2) == expected


# --------------------------------------------------------------------------- config


def test_copy_attention_needs_a_joint_vocabulary() -> None:
    config = load_config(REPO_ROOT / "params.yaml")
    assert config.model.copy_attention is False  # off by default
    with pytest.raises(ConfigError, match=r"`model.copy_attention` needs `tokenize.joint: true`"):
        dataclasses.replace(
            config,
            model=dataclasses.replace(config.model, copy_attention=True),
            tokenize=dataclasses.replace(config.tokenize, joint=False),
        )
    with pytest.raises(ValueError, match="one vocabulary"):
        build_seq2seq(dataclasses.replace(COPY, copy_attention=True), VOCAB, VOCAB + 1)


# ------------------------------------------------------------------ what copying is for

COPY_TASK_VOCAB, UNSEEN_FROM = 200, 188  # pieces 188-199 never occur in training


def copy_task(seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """64 training sequences of pieces 4-187 (each piece seen ~1.5 times), and 32 more, each
    with one piece the model never saw inserted. The target is the source."""
    rng = np.random.default_rng(seed)

    def sequence() -> list[int]:
        return rng.integers(4, UNSEEN_FROM, size=rng.integers(3, 6)).tolist()

    train = [sequence() for _ in range(64)]
    unseen = []
    for _ in range(32):
        ids = sequence()
        ids.insert(int(rng.integers(0, len(ids) + 1)), int(rng.integers(UNSEEN_FROM, 200)))
        unseen.append(ids)
    return train, unseen


def copy_task_model(copy_attention: bool, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    config = ModelConfig(16, 16, 0.0, tie_embeddings=True, copy_attention=copy_attention)
    model = build_seq2seq(config, COPY_TASK_VOCAB, COPY_TASK_VOCAB)
    optimizer = keras.optimizers.Adam(0.01, clipnorm=1.0)
    model.compile(optimizer=optimizer, loss=MaskedSequenceCrossEntropy(0.0))
    return model


def greedy_outputs(model: keras.Model, sources: list[list[int]]) -> list[list[int]]:
    result = greedy_decode(model, pad_batch(sources), DecodingSettings(max_length_offset=3))
    return [result.token_ids(row) for row in range(len(sources))]


@pytest.mark.slow
def test_copying_learns_a_copy_task_faster_and_copies_pieces_it_never_saw() -> None:
    """The copy model is trained until it reproduces its 64 sequences (capped; ~50 steps here,
    where the plain one needs >300 with seed 1); the plain one gets as many steps. Then, on
    sequences with one unseen piece, the copy model outputs that piece in 34-56% of them here
    (seeds 1-5), the plain model, which never saw it as a label, in none."""
    seed = session_seed()
    train, unseen = copy_task(seed)
    inputs, labels = teacher_forcing_batch(train, train)
    copying = copy_task_model(True, seed)
    recipe = TrainingRecipe(learning_rate=0.01, batch_size=64, max_steps=400)

    def gaps(model: keras.Model) -> list[str]:
        wrong = sum(
            out != ids for out, ids in zip(greedy_outputs(model, train), train, strict=True)
        )
        return [f"{wrong} of {len(train)} sequences not reproduced"] if wrong else []

    steps = fit_until(copying, inputs, labels, recipe, gaps)
    plain = copy_task_model(False, seed)
    fit_until(plain, inputs, labels, dataclasses.replace(recipe, max_steps=steps), None)
    assert gaps(plain), f"the plain model reproduced every sequence within {steps} steps too"

    def unseen_copied(model: keras.Model) -> int:
        outputs = greedy_outputs(model, unseen)
        # max(ids): the unseen piece, the only id >= UNSEEN_FROM
        return sum(max(ids) in out for out, ids in zip(outputs, unseen, strict=True))

    copied, plain_copied = unseen_copied(copying), unseen_copied(plain)
    assert copied >= 7 and copied > plain_copied, (copied, plain_copied)
