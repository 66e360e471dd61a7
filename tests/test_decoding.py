"""Batched greedy and beam search: exact invariants on a tiny trained and an untrained model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.config import DecodeConfig, ModelConfig
from pipeline.model.decoding import (
    DecodeResult,
    DecodingSettings,
    beam_search,
    decode,
    greedy_decode,
    length_penalty,
    max_target_lengths,
)
from pipeline.model.seq2seq import build_seq2seq
from pipeline.tokenize import EOS_ID, PAD_ID
from pipeline.translator import Translator, pad_batch
from tests.conftest import tiny_pairs
from tests.tiny_translator import MEMORISED_PAIRS as TRAIN_PAIRS
from tests.tiny_translator import memorised_model_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Translator:
    directory = memorised_model_dir(tmp_path_factory)
    return Translator.load(directory / "seq2seq.keras", directory / "tokenizer")


@pytest.fixture(scope="module")
def untrained() -> keras.Model:
    keras.utils.set_random_seed(7)
    return build_seq2seq(ModelConfig(16, 16, 0.0, True), 40, 40)


def random_sources(rows: int, seed: int = 0) -> np.ndarray:
    """Padded [rows, <=9] id batch of varied lengths, ids 4..39 (no specials)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 10, size=rows)
    return pad_batch([rng.integers(4, 40, size=n).tolist() for n in lengths])


def test_settings_from_config_copy_the_decode_section() -> None:
    config = DecodeConfig(
        beam_size=3,
        length_penalty=0.8,
        max_length_ratio=2.0,
        max_length_offset=7,
        max_source_length=40,
        batch_size=16,
    )
    assert DecodingSettings.from_config(config) == DecodingSettings(
        beam_size=3,
        length_penalty=0.8,
        max_length_ratio=2.0,
        max_length_offset=7,
        batch_size=16,
        max_source_length=40,
    )


def test_settings_reject_a_zero_beam() -> None:
    with pytest.raises(ValueError, match="beam_size"):
        DecodingSettings(beam_size=0)


def test_gnmt_length_penalty() -> None:
    values = length_penalty(tf.constant([1, 7, 13]), tf.constant(0.5)).numpy()
    np.testing.assert_allclose(values, [1.0, np.sqrt(2.0), np.sqrt(3.0)], rtol=1e-6)
    assert length_penalty(tf.constant([9]), tf.constant(0.0)).numpy().tolist() == [1.0]


def test_max_target_length_is_ratio_times_unpadded_source_plus_offset() -> None:
    sources = tf.constant([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9], [0, 0, 0, 0, 0]])
    limits = max_target_lengths(sources, tf.constant(1.5), tf.constant(2))
    assert limits.numpy().tolist() == [6, 9, 2]
    assert max_target_lengths(sources, tf.constant(0.0), tf.constant(0)).numpy().tolist() == [
        1,
        1,
        1,
    ]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_every_hypothesis_ends_in_eos_within_its_max_length(
    untrained: keras.Model, beam_size: int
) -> None:
    sources = random_sources(12)
    settings = DecodingSettings(beam_size=beam_size, max_length_ratio=1.0, max_length_offset=2)
    result = beam_search(untrained, sources, settings)
    limits = (sources != PAD_ID).sum(axis=1) + 2
    for row in range(len(sources)):
        length = result.lengths[row]
        assert 1 <= length <= limits[row]
        assert result.tokens[row, length - 1] == EOS_ID
        assert (result.tokens[row, length:] == PAD_ID).all()
        assert EOS_ID not in result.token_ids(row)


def test_attention_covers_real_source_positions_only(untrained: keras.Model) -> None:
    sources = random_sources(6, seed=3)
    result = greedy_decode(untrained, sources, DecodingSettings(beam_size=1))
    assert result.attention.shape == (*result.tokens.shape, sources.shape[1])
    for row in range(len(sources)):
        length, real = result.lengths[row], sources[row] != PAD_ID
        weights = result.attention[row]
        np.testing.assert_allclose(weights[:length].sum(axis=1), np.ones(length), atol=1e-5)
        assert (weights[:, ~real] == 0).all()
        assert (weights[length:] == 0).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_beam_one_equals_greedy_on_an_untrained_model(untrained: keras.Model, seed: int) -> None:
    sources = random_sources(40, seed=seed)
    settings = DecodingSettings(beam_size=1, max_length_offset=4)
    assert_same_result(
        greedy_decode(untrained, sources, settings), beam_search(untrained, sources, settings)
    )


@pytest.mark.slow
def test_beam_one_equals_greedy_on_the_trained_model(trained: Translator) -> None:
    texts = [s for s, _ in TRAIN_PAIRS] + [s for s, _ in tiny_pairs(30, offset=300)]
    sources = pad_batch(trained.encode_sources(texts))
    settings = DecodingSettings(beam_size=1)
    greedy = greedy_decode(trained.model, sources, settings)
    assert_same_result(greedy, beam_search(trained.model, sources, settings))
    assert_same_result(greedy, decode(trained.model, sources, settings))


@pytest.mark.slow
def test_beam_search_finds_the_memorised_translations(trained: Translator) -> None:
    sources = pad_batch(trained.encode_sources([s for s, _ in TRAIN_PAIRS]))
    result = beam_search(trained.model, sources, DecodingSettings(beam_size=5, length_penalty=0.6))
    expected = trained.tokenizers.tgt.encode([t for _, t in TRAIN_PAIRS])
    assert [result.token_ids(row) for row in range(len(TRAIN_PAIRS))] == expected
    # a memorised pair is near-certain: its log-probability is close to 0
    assert (result.log_probs > -1.0).all()
    np.testing.assert_allclose(
        result.scores,
        result.log_probs / ((5.0 + result.lengths) / 6.0) ** 0.6,
        rtol=1e-5,
    )


def test_empty_batch_is_rejected(untrained: keras.Model) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        greedy_decode(untrained, np.zeros((0, 3), np.int32), DecodingSettings())


def assert_same_result(left: DecodeResult, right: DecodeResult) -> None:
    np.testing.assert_array_equal(left.tokens, right.tokens)
    np.testing.assert_array_equal(left.lengths, right.lengths)
    np.testing.assert_allclose(left.log_probs, right.log_probs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(left.scores, right.scores, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(left.attention, right.attention, atol=1e-6)
