"""pipeline/tokenize.py: special ids, round trip, determinism, modes, npz layout, `mt tokenize`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from pipeline.cli import main as mt
from pipeline.config import TokenizeConfig
from pipeline.errors import ConfigError, DataError
from pipeline.tokenize import (
    BOS_ID,
    ENCODED_SPLIT_KEYS,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    TokenizerPair,
    encode_pairs,
    load_encoded_split,
    load_tokenizers,
    processor_from_bytes,
    train_sentencepiece,
    train_tokenizer_models,
    write_encoded_split,
)
from tests.conftest import TINY_OVERRIDES, tiny_pairs, write_corpus, write_params

CONFIG = TokenizeConfig(
    model_type="unigram",
    vocab_size=120,
    joint=True,
    character_coverage=1.0,
    max_sentencepiece_length=16,
)
PAIRS = tiny_pairs(60)
SOURCES = [s for s, _ in PAIRS]
TARGETS = [t for _, t in PAIRS]


@pytest.fixture(scope="module")
def joint_model() -> bytes:
    return train_sentencepiece([*SOURCES, *TARGETS], CONFIG, seed=7)


def test_special_tokens_have_the_contract_ids(joint_model: bytes) -> None:
    processor = processor_from_bytes(joint_model)
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert [processor.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id()) == (
        0,
        1,
        2,
        3,
    )
    assert SPECIAL_TOKENS == {0: "<pad>", 1: "<unk>", 2: "<s>", 3: "</s>"}


def test_decode_of_encode_gives_back_the_normalised_text(joint_model: bytes) -> None:
    processor = processor_from_bytes(joint_model)
    texts = [*SOURCES[:10], *TARGETS[:10], "Ein Mädchen isst einen Apfel."]
    assert processor.decode(processor.encode(texts)) == texts


def test_training_is_deterministic_for_the_same_input_and_seed(joint_model: bytes) -> None:
    assert train_sentencepiece([*SOURCES, *TARGETS], CONFIG, seed=7) == joint_model


def test_bpe_model_type_trains_with_the_same_special_ids() -> None:
    bpe = dataclasses.replace(CONFIG, model_type="bpe")
    processor = processor_from_bytes(train_sentencepiece([*SOURCES, *TARGETS], bpe, seed=7))
    assert processor.get_piece_size() == 120
    assert [processor.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert processor.decode(processor.encode(SOURCES[0])) == SOURCES[0]


def test_joint_mode_gives_one_model_for_both_sides() -> None:
    source_model, target_model = train_tokenizer_models(SOURCES, TARGETS, CONFIG, seed=7)
    assert source_model == target_model


def test_per_language_mode_trains_one_model_per_side() -> None:
    config = dataclasses.replace(CONFIG, joint=False, vocab_size=64)
    source_model, target_model = train_tokenizer_models(SOURCES, TARGETS, config, seed=7)
    source, target = processor_from_bytes(source_model), processor_from_bytes(target_model)
    assert source_model != target_model
    assert (source.get_piece_size(), target.get_piece_size()) == (64, 64)
    # "ä" and "ß" occur only in the German side, so only the target model knows them.
    assert source.encode("ä") == [source.piece_to_id("▁"), UNK_ID]
    assert UNK_ID not in target.encode("läuft Fußball")


def test_too_large_vocab_size_is_a_config_error_naming_the_maximum() -> None:
    config = dataclasses.replace(CONFIG, vocab_size=5000)
    with pytest.raises(
        ConfigError, match=r"tokenize\.vocab_size` is 5000.*at most (\d+)"
    ) as error:
        train_sentencepiece(SOURCES, config, seed=7, corpus="train sources")
    maximum = int(error.value.args[0].rsplit("<= ", 1)[1])
    assert 64 < maximum < 5000
    fitting = dataclasses.replace(CONFIG, vocab_size=maximum)
    assert processor_from_bytes(train_sentencepiece(SOURCES, fitting, 7)).get_piece_size() == (
        maximum
    )


def test_encoded_split_layout_and_load_round_trip(joint_model: bytes, tmp_path: Path) -> None:
    processor = processor_from_bytes(joint_model)
    pairs = [*PAIRS[:3], ("", "")]
    arrays = encode_pairs(TokenizerPair(processor, processor), pairs)
    assert sorted(arrays) == sorted(ENCODED_SPLIT_KEYS)
    assert {array.dtype for array in arrays.values()} == {np.dtype(np.int32)}
    assert arrays["source_offsets"][0] == 0
    assert len(arrays["source_offsets"]) == len(arrays["target_offsets"]) == len(pairs) + 1
    assert arrays["source_offsets"][-1] == len(arrays["source_ids"])
    # No BOS/EOS/PAD in the stored ids: the model adds BOS/EOS itself.
    assert not np.isin(arrays["source_ids"], [PAD_ID, BOS_ID, EOS_ID]).any()
    path = tmp_path / "split.npz"
    write_encoded_split(path, arrays)
    loaded = load_encoded_split(path)
    assert len(loaded) == 4
    assert [row.tolist() for row in loaded.sources] == [
        *(processor.encode(s) for s, _ in pairs[:3]),
        [],
    ]
    assert [processor.decode(row.tolist()) for row in loaded.targets[:3]] == [
        t for _, t in pairs[:3]
    ]
    with np.load(path) as archive:
        assert sorted(archive.files) == sorted(ENCODED_SPLIT_KEYS)


def test_encoded_split_bytes_do_not_depend_on_the_time(tmp_path: Path) -> None:
    arrays = {key: np.arange(3, dtype=np.int32) for key in ENCODED_SPLIT_KEYS}
    arrays["source_offsets"] = arrays["target_offsets"] = np.array([0, 1, 3], dtype=np.int32)
    write_encoded_split(tmp_path / "a.npz", arrays)
    write_encoded_split(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_load_encoded_split_rejects_offsets_that_do_not_index_the_ids(tmp_path: Path) -> None:
    arrays = {key: np.arange(3, dtype=np.int32) for key in ENCODED_SPLIT_KEYS}
    arrays["source_offsets"] = np.array([0, 1, 5], dtype=np.int32)
    arrays["target_offsets"] = np.array([0, 1, 3], dtype=np.int32)
    write_encoded_split(tmp_path / "bad.npz", arrays)
    with pytest.raises(DataError, match=r"bad\.npz: `source_offsets` must start at 0"):
        load_encoded_split(tmp_path / "bad.npz")


def test_load_tokenizers_names_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"src\.model: tokenizer model not found"):
        load_tokenizers(tmp_path)


@pytest.mark.parametrize(
    ("content", "error"),
    [(b"not a model", "not a SentencePiece model"), (b"", "id 0 must be the special piece")],
)
def test_load_tokenizers_rejects_a_file_that_is_not_a_model(
    tmp_path: Path, content: bytes, error: str
) -> None:
    (tmp_path / "src.model").write_bytes(content)
    with pytest.raises(DataError, match=rf"src\.model: {error}"):
        load_tokenizers(tmp_path)


def test_load_tokenizers_rejects_a_model_with_other_special_ids(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SOURCES), model_prefix=str(foreign), vocab_size=60, minloglevel=2
    )
    (tmp_path / "src.model").write_bytes(foreign.with_suffix(".model").read_bytes())
    (tmp_path / "tgt.model").write_bytes(foreign.with_suffix(".model").read_bytes())
    with pytest.raises(DataError, match=r"src\.model: id 0 must be the special piece '<pad>'"):
        load_tokenizers(tmp_path)


def make_clean_project(root: Path, overrides: dict | None = None) -> None:
    write_params(root, {**TINY_OVERRIDES, **(overrides or {})})
    write_corpus(
        root / "data" / "clean",
        {
            "train": PAIRS,
            "val": tiny_pairs(10, offset=100),
            "test_2016_flickr": tiny_pairs(10, offset=200),
        },
    )


def test_mt_tokenize_writes_models_meta_and_encoded_splits(project_dir: Path) -> None:
    make_clean_project(project_dir)
    assert mt(["tokenize"]) == 0
    tokenizer_dir = project_dir / "models" / "tokenizer"
    assert sorted(p.name for p in tokenizer_dir.iterdir()) == [
        "meta.json",
        "src.model",
        "tgt.model",
    ]
    assert (tokenizer_dir / "src.model").read_bytes() == (tokenizer_dir / "tgt.model").read_bytes()
    tokenizers = load_tokenizers(tokenizer_dir)
    assert (tokenizers.src_vocab_size, tokenizers.tgt_vocab_size) == (120, 120)
    meta = json.loads((tokenizer_dir / "meta.json").read_text(encoding="utf-8"))
    assert meta["special_tokens"] == {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}
    assert (meta["splits"]["train"]["rows"], meta["splits"]["val"]["rows"]) == (60, 10)
    tokens_dir = project_dir / "data" / "tokens"
    assert sorted(p.name for p in tokens_dir.iterdir()) == ["train.npz", "val.npz"]
    val = load_encoded_split(tokens_dir / "val.npz")
    decoded = [tokenizers.tgt.decode(row.tolist()) for row in val.targets]
    assert decoded == [t for _, t in tiny_pairs(10, offset=100)]


def test_mt_tokenize_twice_gives_identical_output_bytes(project_dir: Path) -> None:
    make_clean_project(project_dir)
    outputs = ["models/tokenizer/src.model", "models/tokenizer/meta.json", "data/tokens/train.npz"]
    assert mt(["tokenize"]) == 0
    first = [(project_dir / name).read_bytes() for name in outputs]
    assert mt(["tokenize"]) == 0
    assert [(project_dir / name).read_bytes() for name in outputs] == first


def test_mt_tokenize_per_language_writes_two_models(project_dir: Path) -> None:
    make_clean_project(project_dir, {"tokenize": {"vocab_size": 64, "joint": False}})
    assert mt(["tokenize"]) == 0
    tokenizer_dir = project_dir / "models" / "tokenizer"
    assert (tokenizer_dir / "src.model").read_bytes() != (tokenizer_dir / "tgt.model").read_bytes()
    assert load_tokenizers(tokenizer_dir).tgt_vocab_size == 64


def test_mt_tokenize_with_too_large_vocab_fails_and_writes_nothing(project_dir: Path) -> None:
    make_clean_project(project_dir, {"tokenize": {"vocab_size": 5000}})
    assert mt(["tokenize"]) == ConfigError.exit_code
    assert not (project_dir / "models").exists()
    assert not (project_dir / "data" / "tokens").exists()
