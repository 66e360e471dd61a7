"""params.yaml, read once into frozen, typed dataclasses.

Every section of params.yaml is a dataclass below; a key that is unknown, missing, of the wrong
type or outside its allowed values is rejected with its dotted name and what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import ConfigError
from pipeline.paths import project_paths


@dataclass(frozen=True)
class DataConfig:
    source: Literal["multi30k", "dir", "tsv"]
    url: str
    path: str
    src_lang: str
    tgt_lang: str
    train_split: str
    val_split: str
    test_splits: tuple[str, ...]
    timeout_s: float
    retries: int

    @property
    def splits(self) -> tuple[str, ...]:
        """Every split the pipeline reads, train first."""
        return (self.train_split, self.val_split, *self.test_splits)

    def __post_init__(self) -> None:
        _require(self.src_lang != self.tgt_lang, "data.tgt_lang", "must differ from src_lang")
        _require(len(self.test_splits) > 0, "data.test_splits", "must name at least one split")
        _require(self.retries >= 0, "data.retries", "must be >= 0")


@dataclass(frozen=True)
class ValidateConfig:
    min_rows: int
    min_train_rows: int
    max_tokens: int
    max_length_ratio: float
    max_duplicate_share: float
    mostly: float

    def __post_init__(self) -> None:
        _require(0.0 < self.mostly <= 1.0, "validate.mostly", "must be in (0, 1]")
        _require(self.max_length_ratio >= 1.0, "validate.max_length_ratio", "must be >= 1")


@dataclass(frozen=True)
class CleanConfig:
    max_tokens: int
    max_length_ratio: float
    min_tokens: int

    def __post_init__(self) -> None:
        _require(self.min_tokens >= 1, "clean.min_tokens", "must be >= 1")
        _require(self.max_tokens > self.min_tokens, "clean.max_tokens", "must be > min_tokens")
        _require(self.max_length_ratio >= 1.0, "clean.max_length_ratio", "must be >= 1")


@dataclass(frozen=True)
class TokenizeConfig:
    model_type: Literal["unigram", "bpe"]
    vocab_size: int
    joint: bool
    character_coverage: float
    max_sentencepiece_length: int

    def __post_init__(self) -> None:
        _require(self.vocab_size >= 64, "tokenize.vocab_size", "must be >= 64")


@dataclass(frozen=True)
class ModelConfig:
    embedding_dim: int
    hidden_units: int
    dropout: float
    tie_embeddings: bool

    def __post_init__(self) -> None:
        _require(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    label_smoothing: float
    clip_norm: float
    patience: int
    max_tokens: int
    precision: Literal["auto", "float32", "mixed_float16"]
    bucket_boundaries: tuple[int, ...]

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "train.epochs", "must be >= 1")
        _require(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _require(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", "must be in [0, 1)")
        bounds = list(self.bucket_boundaries)
        _require(bounds == sorted(set(bounds)), "train.bucket_boundaries", "must increase")


@dataclass(frozen=True)
class EvaluateConfig:
    beam_size: int
    length_penalty: float
    max_length_ratio: float
    max_length_offset: int
    batch_size: int
    bootstrap_resamples: int
    samples: int
    attention_maps: int

    def __post_init__(self) -> None:
        _require(self.beam_size >= 1, "evaluate.beam_size", "must be >= 1")


@dataclass(frozen=True)
class RegisterConfig:
    model_name: str
    policy: Literal["auto", "manual"]
    min_bleu: float
    min_delta: float
    significance: float
    bootstrap_resamples: int
    max_input_chars: int
    max_batch_rows: int

    def __post_init__(self) -> None:
        _require(0.0 < self.significance < 1.0, "register.significance", "must be in (0, 1)")


@dataclass(frozen=True)
class OrchestrationConfig:
    """Read by the Airflow DAG only; no DVC stage depends on it."""

    schedule: str
    timezone: str
    raw_data_asset: str
    retries: int
    retry_delay_s: int
    max_retry_delay_s: int
    stage_timeout_min: int
    train_timeout_min: int
    approval_timeout_h: int

    def __post_init__(self) -> None:
        _require(self.retries >= 0, "orchestration.retries", "must be >= 0")
        _require(self.retry_delay_s >= 1, "orchestration.retry_delay_s", "must be >= 1")
        _require(
            self.max_retry_delay_s >= self.retry_delay_s,
            "orchestration.max_retry_delay_s",
            "must be >= retry_delay_s",
        )
        _require(self.stage_timeout_min >= 1, "orchestration.stage_timeout_min", "must be >= 1")
        _require(self.train_timeout_min >= 1, "orchestration.train_timeout_min", "must be >= 1")


@dataclass(frozen=True)
class Config:
    seed: int
    data: DataConfig
    validate: ValidateConfig
    clean: CleanConfig
    tokenize: TokenizeConfig
    model: ModelConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    register: RegisterConfig
    orchestration: OrchestrationConfig


def _require(condition: bool, key: str, rule: str) -> None:
    if not condition:
        raise ConfigError(f"params.yaml: `{key}` {rule}")


def parse_config(raw: Any, source: str = "params.yaml") -> Config:
    """Build a Config from a parsed YAML mapping, naming the first offending key."""
    try:
        return typing.cast(Config, _build(Config, raw, ""))
    except ConfigError as error:
        raise ConfigError(str(error).replace("params.yaml", source, 1)) from None


@functools.cache
def _load_cached(path: Path) -> Config:
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the project root)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_config(raw, str(path))


def load_config(path: str | Path | None = None) -> Config:
    """The project's params.yaml (or `path`), parsed once per process."""
    return _load_cached(Path(path).resolve() if path else project_paths().params)


def config_as_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict (for MLflow params and lineage tags)."""
    return dataclasses.asdict(config)


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        where = prefix.rstrip(".") or "the top level"
        raise ConfigError(f"params.yaml: `{where}` must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(
            f"params.yaml: unknown key `{prefix}{unknown[0]}`; allowed keys: {', '.join(names)}"
        )
    missing = [name for name in names if name not in raw]
    if missing:
        raise ConfigError(f"params.yaml: missing key `{prefix}{missing[0]}`")
    values = {name: _coerce(hints[name], raw[name], f"{prefix}{name}") for name in names}
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type, hint), value, f"{key}.")
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            choices = ", ".join(repr(choice) for choice in allowed)
            raise ConfigError(f"params.yaml: `{key}` is {value!r}; allowed values: {choices}")
        return value
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError(f"params.yaml: `{key}` must be a list, got {value!r}")
        return tuple(_coerce(item_type, item, f"{key}[{i}]") for i, item in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config type for {key}: {hint}")
    return _coerce_scalar(hint, value, key)


def _coerce_scalar(hint: type, value: Any, key: str) -> Any:
    # bool is an int in Python; refuse it where a number is meant, and vice versa.
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(
        f"params.yaml: `{key}` must be of type {hint.__name__}, got {value!r} "
        f"({type(value).__name__})"
    )
