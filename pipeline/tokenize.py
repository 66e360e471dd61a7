"""`mt tokenize`: train SentencePiece on the cleaned train split and encode train/val.

Special tokens are defined here and nowhere else; every model we train reserves the same ids,
so training, decoding and serving agree on them. The tokenizer models are artifacts saved next
to the model (models/tokenizer/) and are never retrained at inference.

Outputs (both directories swapped in atomically, together):
- models/tokenizer/: `src.model`, `tgt.model` (identical bytes when `tokenize.joint`), `meta.json`
- data/tokens/: `train.npz`, `val.npz`, ragged int32 id arrays without BOS/EOS
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import itertools
import logging
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from pipeline.aligned_text import read_pairs
from pipeline.atomic import atomic_directory, atomic_write_json
from pipeline.config import Config, TokenizeConfig, load_config
from pipeline.errors import ConfigError, DataError
from pipeline.paths import ProjectPaths, project_paths

log = logging.getLogger(__name__)

PAD_ID, PAD_PIECE = 0, "<pad>"
UNK_ID, UNK_PIECE = 1, "<unk>"
BOS_ID, BOS_PIECE = 2, "<s>"
EOS_ID, EOS_PIECE = 3, "</s>"
SPECIAL_TOKENS: dict[int, str] = {
    PAD_ID: PAD_PIECE,
    UNK_ID: UNK_PIECE,
    BOS_ID: BOS_PIECE,
    EOS_ID: EOS_PIECE,
}

SOURCE_MODEL, TARGET_MODEL, META_FILE = "src.model", "tgt.model", "meta.json"
ENCODED_SPLIT_KEYS = ("source_ids", "source_offsets", "target_ids", "target_offsets")
# The trainer stores its thread count in the model proto, so a machine-dependent value
# (os.cpu_count()) would make the same corpus give different model bytes on different hosts.
TRAINING_THREADS = 4
ENCODING_THREADS = -1  # encoding output does not depend on threads: use them all
_VOCAB_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\).*<= (\d+)")


@dataclass(frozen=True)
class TokenizerPair:
    """The source and target SentencePiece processors (the same model when joint)."""

    src: spm.SentencePieceProcessor
    tgt: spm.SentencePieceProcessor

    @property
    def src_vocab_size(self) -> int:
        return int(self.src.get_piece_size())

    @property
    def tgt_vocab_size(self) -> int:
        return int(self.tgt.get_piece_size())


@dataclass(frozen=True)
class EncodedSplit:
    """One encoded split: row i is `sources[i]` → `targets[i]`, int32 piece ids, no BOS/EOS."""

    sources: list[np.ndarray]
    targets: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.sources)


def trainer_options(config: TokenizeConfig) -> dict[str, Any]:
    """SentencePieceTrainer arguments: the `tokenize.*` params plus our fixed special ids."""
    return {
        "model_type": config.model_type,
        "vocab_size": config.vocab_size,
        "character_coverage": config.character_coverage,
        "max_sentencepiece_length": config.max_sentencepiece_length,
        # nmt_nfkc also folds what a user may paste at serving time (full-width forms, odd
        # spaces) into the forms the cleaned training text uses.
        "normalization_rule_name": "nmt_nfkc",
        "pad_id": PAD_ID,
        "pad_piece": PAD_PIECE,
        "unk_id": UNK_ID,
        "unk_piece": UNK_PIECE,
        "bos_id": BOS_ID,
        "bos_piece": BOS_PIECE,
        "eos_id": EOS_ID,
        "eos_piece": EOS_PIECE,
        "num_threads": TRAINING_THREADS,
        "minloglevel": 1,
    }


def train_sentencepiece(
    sentences: Iterable[str], config: TokenizeConfig, seed: int, corpus: str = "train text"
) -> bytes:
    """Train in-process and return the serialized model; same input and seed → same bytes.

    `corpus` names the sentences in the error raised when the vocabulary cannot be filled.
    """
    spm.set_random_generator_seed(seed)
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=buffer, **trainer_options(config)
        )
    except RuntimeError as error:
        match = _VOCAB_TOO_HIGH.search(str(error))
        if match is None:
            raise
        raise ConfigError(
            f"params.yaml: `tokenize.vocab_size` is {config.vocab_size}, but the cleaned "
            f"{corpus} supports at most {match.group(2)} pieces ({config.model_type}); "
            f"set tokenize.vocab_size <= {match.group(2)}"
        ) from None
    return buffer.getvalue()


def train_tokenizer_models(
    sources: Sequence[str], targets: Sequence[str], config: TokenizeConfig, seed: int
) -> tuple[bytes, bytes]:
    """(source model, target model): one joint model trained on both sides, or one per side."""
    if config.joint:
        joint = train_sentencepiece([*sources, *targets], config, seed, "train text")
        return joint, joint
    return (
        train_sentencepiece(sources, config, seed, "train sources"),
        train_sentencepiece(targets, config, seed, "train targets"),
    )


def processor_from_bytes(model: bytes) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_proto=model, num_threads=ENCODING_THREADS)


def encode_ragged(
    processor: spm.SentencePieceProcessor, texts: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, offsets) for `texts` in one batched, multi-threaded encode call.

    Row i is ids[offsets[i]:offsets[i + 1]]; no BOS/EOS (the model adds them where it needs).
    """
    rows = processor.encode(list(texts), out_type=int)
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=total)
    return ids, offsets.astype(np.int32)


def encode_pairs(tokenizers: TokenizerPair, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The arrays of one encoded split, keyed as in `ENCODED_SPLIT_KEYS`."""
    source_ids, source_offsets = encode_ragged(tokenizers.src, [s for s, _ in pairs])
    target_ids, target_offsets = encode_ragged(tokenizers.tgt, [t for _, t in pairs])
    return {
        "source_ids": source_ids,
        "source_offsets": source_offsets,
        "target_ids": target_ids,
        "target_offsets": target_offsets,
    }


def rows_from_ragged(ids: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """Row views of a ragged array (works for zero rows too, unlike np.split)."""
    bounds = offsets.tolist()
    return [ids[start:end] for start, end in itertools.pairwise(bounds)]


def write_encoded_split(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz that `np.load` reads, with fixed member timestamps.

    `np.savez` stamps each member with the current time, so identical arrays would give new
    bytes (and a new DVC hash that reruns training) on every run.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in ENCODED_SPLIT_KEYS:
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]))


def load_encoded_split(path: str | Path) -> EncodedSplit:
    """Read an encoded split written by `mt tokenize` (data/tokens/{train,val}.npz)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: encoded split not found; run `mt tokenize` first")
    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in ENCODED_SPLIT_KEYS if key not in archive.files]
        if missing:
            raise DataError(
                f"{path}: missing arrays {', '.join(missing)}; re-run `mt tokenize` to rewrite it"
            )
        arrays = {key: archive[key] for key in ENCODED_SPLIT_KEYS}
    sources = _checked_rows(path, "source", arrays["source_ids"], arrays["source_offsets"])
    targets = _checked_rows(path, "target", arrays["target_ids"], arrays["target_offsets"])
    if len(sources) != len(targets):
        raise DataError(
            f"{path}: {len(sources)} source rows but {len(targets)} target rows; "
            "re-run `mt tokenize` to rewrite it"
        )
    return EncodedSplit(sources, targets)


def _checked_rows(path: Path, side: str, ids: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """Rows of one side, after checking that its offsets really index its ids."""
    valid = (
        offsets.ndim == 1
        and len(offsets) >= 1
        and offsets[0] == 0
        and offsets[-1] == len(ids)
        and bool(np.all(np.diff(offsets) >= 0))
    )
    if not valid:
        raise DataError(
            f"{path}: `{side}_offsets` must start at 0, never decrease and end at "
            f"len({side}_ids) = {len(ids)}; re-run `mt tokenize` to rewrite it"
        )
    return rows_from_ragged(ids.astype(np.int32, copy=False), offsets)


def load_tokenizers(tokenizer_dir: str | Path) -> TokenizerPair:
    """The source and target processors saved by `mt tokenize` (models/tokenizer/)."""
    directory = Path(tokenizer_dir)
    return TokenizerPair(
        _load_processor(directory / SOURCE_MODEL), _load_processor(directory / TARGET_MODEL)
    )


def _load_processor(path: Path) -> spm.SentencePieceProcessor:
    if not path.is_file():
        raise DataError(f"{path}: tokenizer model not found; run `mt tokenize` first")
    try:
        processor = processor_from_bytes(path.read_bytes())
    except RuntimeError:
        raise DataError(
            f"{path}: not a SentencePiece model; re-run `mt tokenize` to write it again"
        ) from None
    for token_id, piece in SPECIAL_TOKENS.items():
        if token_id >= processor.get_piece_size() or processor.id_to_piece(token_id) != piece:
            raise DataError(
                f"{path}: id {token_id} must be the special piece {piece!r}; this model was not "
                "written by `mt tokenize` - re-run it to train a compatible tokenizer"
            )
    return processor


def tokenizer_meta(
    config: Config,
    models: tuple[bytes, bytes],
    tokenizers: TokenizerPair,
    encoded: dict[str, dict[str, np.ndarray]],
) -> dict[str, Any]:
    """meta.json: how the tokenizer was trained and what the encoded splits hold."""
    return {
        "tokenize": dataclasses.asdict(config.tokenize),
        "seed": config.seed,
        "src_lang": config.data.src_lang,
        "tgt_lang": config.data.tgt_lang,
        "src_vocab_size": tokenizers.src_vocab_size,
        "tgt_vocab_size": tokenizers.tgt_vocab_size,
        "special_tokens": {piece: token_id for token_id, piece in SPECIAL_TOKENS.items()},
        "normalization_rule_name": trainer_options(config.tokenize)["normalization_rule_name"],
        "sha256": {
            SOURCE_MODEL: hashlib.sha256(models[0]).hexdigest(),
            TARGET_MODEL: hashlib.sha256(models[1]).hexdigest(),
        },
        "splits": {split: split_stats(arrays) for split, arrays in encoded.items()},
    }


def split_stats(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Rows, pieces per side and the share of <unk> pieces (high means too small a vocab)."""
    stats: dict[str, Any] = {"rows": len(arrays["source_offsets"]) - 1}
    for side in ("source", "target"):
        ids = arrays[f"{side}_ids"]
        stats[f"{side}_pieces"] = len(ids)
        stats[f"{side}_unk_rate"] = round(float(np.mean(ids == UNK_ID)), 6) if len(ids) else 0.0
    return stats


def read_clean_split(paths: ProjectPaths, config: Config, split: str) -> list[tuple[str, str]]:
    return read_pairs(paths.clean_dir, split, config.data.sides, producer="mt clean")


def run_tokenize(config: Config, paths: ProjectPaths) -> dict[str, Any]:
    """Train on clean train, encode train and val, write both output dirs; returns meta."""
    data = config.data
    splits = {
        split: read_clean_split(paths, config, split)
        for split in (data.train_split, data.val_split)
    }
    train = splits[data.train_split]
    if not train:
        raise DataError(f"{paths.clean_dir}: the train split is empty; check `mt clean`'s report")
    models = train_tokenizer_models(
        [s for s, _ in train], [t for _, t in train], config.tokenize, config.seed
    )
    tokenizers = TokenizerPair(*(processor_from_bytes(model) for model in models))
    encoded = {split: encode_pairs(tokenizers, pairs) for split, pairs in splits.items()}
    meta = tokenizer_meta(config, models, tokenizers, encoded)
    write_outputs(paths, models, meta, encoded)
    log.info("vocab %d/%d; %s", meta["src_vocab_size"], meta["tgt_vocab_size"], meta["splits"])
    return meta


def write_outputs(
    paths: ProjectPaths,
    models: tuple[bytes, bytes],
    meta: dict[str, Any],
    encoded: dict[str, dict[str, np.ndarray]],
) -> None:
    """models/tokenizer/ and data/tokens/, each swapped in whole; a failure keeps both old."""
    with (
        atomic_directory(paths.tokenizer_dir) as tokenizer_staging,
        atomic_directory(paths.tokens_dir) as tokens_staging,
    ):
        (tokenizer_staging / SOURCE_MODEL).write_bytes(models[0])
        (tokenizer_staging / TARGET_MODEL).write_bytes(models[1])
        atomic_write_json(tokenizer_staging / META_FILE, meta)
        for split, arrays in encoded.items():
            write_encoded_split(tokens_staging / f"{split}.npz", arrays)


def main(argv: list[str]) -> int | None:
    parser = argparse.ArgumentParser(
        prog="mt tokenize",
        description="Train SentencePiece on data/clean train; encode train/val to data/tokens.",
    )
    parser.parse_args(argv)
    run_tokenize(load_config(), project_paths())
    return 0
