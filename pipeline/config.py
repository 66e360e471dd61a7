"""params.yaml, read once into frozen, typed dataclasses.

Every section of params.yaml is a dataclass below; a key that is unknown, missing, of the wrong
type or outside its allowed values is rejected with its dotted name and what is allowed. Each
field declares its allowed range (pipeline/param_rules.py); docs/params.md lists them all.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
import urllib.parse
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.config_reader import build_dataclass, dataclass_specs
from pipeline.errors import ConfigError
from pipeline.param_rules import ParamSpec, matching, ranged, satisfying
from pipeline.paths import project_paths
from pipeline.tasks import SACREBLEU_METRICS, TASK_METRICS, Task, allows_same_language

# Airflow's cron presets (airflow.utils.dates.cron_presets), which CronTriggerTimetable accepts.
SCHEDULE_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")


def is_schedule(value: str) -> bool:
    """`none` (data and manual runs only), an Airflow preset, or a 5-field cron expression."""
    if value.lower() in {"none", ""} or value in SCHEDULE_PRESETS:
        return True
    from croniter import croniter  # Airflow's own cron parser; only needed for a cron string

    return len(value.split()) == 5 and bool(croniter.is_valid(value))


def is_time_zone(value: str) -> bool:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


# A language code becomes part of file names ({split}.{lang}) and model names: letters only.
LANGUAGE_CODE = matching(r"[a-z]{2,3}", "an ISO 639 language code, 2-3 lowercase letters")
# A split name becomes a file name: no path separators, no dots, no spaces.
SPLIT_NAME = matching(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", "a split name: letters, digits, _ and -")
# MLflow refuses / and :, and models:/<name>@<alias> URIs break on @ and spaces.
MODEL_NAME = matching(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", "a model name: letters, digits, . _ -")
# An empty string switches the webhook notifier off.
WEBHOOK_URL = matching(r"(https?://\S+)?", "an http(s) URL, or empty for no webhook")
EMAIL_ADDRESS = matching(r"[^@\s]+@[^@\s]+\.[^@\s]+", "an e-mail address (name@host.domain)")
# Airflow connection ids are free text, but a space or a slash breaks `airflow connections get`.
CONNECTION_ID = matching(
    r"[A-Za-z0-9_.-]{1,250}", "an Airflow connection id: letters, digits, _ . -"
)
ASSET_URI = matching(r"[a-z][a-z0-9+.-]*://\S+", "a URI (scheme://...)")
CELERY_QUEUE = matching(r"[A-Za-z0-9_.-]{1,64}", "a Celery queue name (letters, digits, _ . -)")
# The widest beam decode.beam_size and a request's `beam_size` (pipeline/serving.py) may ask for.
MAX_BEAM_SIZE = 64


@dataclass(frozen=True)
class DataConfig:
    source: Literal["multi30k", "dir", "tsv"]
    url: str = field(metadata=matching(r"https?://\S+", "an http(s) URL"))
    path: str = field(metadata=matching(r"[^\x00\r\n]*", "a folder on the worker, or empty"))
    src_lang: str = field(metadata=LANGUAGE_CODE)
    tgt_lang: str = field(metadata=LANGUAGE_CODE)
    train_split: str = field(metadata=SPLIT_NAME)
    val_split: str = field(metadata=SPLIT_NAME)
    test_splits: tuple[str, ...] = field(metadata=SPLIT_NAME)
    timeout_s: float = field(metadata=ranged(gt=0, le=3600))
    retries: int = field(metadata=ranged(ge=0, le=20))
    max_file_mb: float = field(metadata=ranged(gt=0, le=1_000_000))

    @property
    def splits(self) -> tuple[str, ...]:
        """Every split the pipeline reads, train first."""
        return (self.train_split, self.val_split, *self.test_splits)

    @property
    def pair(self) -> tuple[str, str]:
        return (self.src_lang, self.tgt_lang)

    @property
    def sides(self) -> tuple[str, str]:
        """The file suffix of each side ({split}.{side}): its language code, or, when both
        sides share one language (a summary, a reply), `{lang}.src` and `{lang}.tgt`."""
        if self.src_lang != self.tgt_lang:
            return self.pair
        return (f"{self.src_lang}.src", f"{self.tgt_lang}.tgt")

    def __post_init__(self) -> None:
        _require(len(self.test_splits) > 0, "data.test_splits", "must name at least one split")
        _require_distinct_splits(self)


@dataclass(frozen=True)
class ValidateConfig:
    min_rows: int = field(metadata=ranged(ge=1))
    min_train_rows: int = field(metadata=ranged(ge=1))
    max_tokens: int = field(metadata=ranged(ge=1, le=10_000))
    max_length_ratio: float = field(metadata=ranged(ge=1))
    max_duplicate_share: float = field(metadata=ranged(ge=0, le=1))
    max_train_overlap: float = field(metadata=ranged(ge=0, le=1))
    mostly: float = field(metadata=ranged(gt=0, le=1))
    # Summarization only (pipeline/tasks.py): a source worth summarising, and a target shorter
    # than its source (target tokens / source tokens).
    min_source_tokens: int = field(metadata=ranged(ge=1, le=10_000))
    max_compression: float = field(metadata=ranged(gt=0, le=10))
    # Summarization and dialogue: share of sampled lines of each side identified as its
    # declared language (py3langid); translation keeps its rules without it.
    min_language_share: float = field(metadata=ranged(ge=0, le=1))


@dataclass(frozen=True)
class CleanConfig:
    max_tokens: int = field(metadata=ranged(ge=1, le=10_000))
    max_length_ratio: float = field(metadata=ranged(ge=1))
    min_tokens: int = field(metadata=ranged(ge=1, le=10_000))
    # Summarization only: train/val pairs outside these are dropped (see ValidateConfig).
    min_source_tokens: int = field(metadata=ranged(ge=1, le=10_000))
    max_compression: float = field(metadata=ranged(gt=0, le=10))

    def __post_init__(self) -> None:
        _require(self.max_tokens > self.min_tokens, "clean.max_tokens", "must be > min_tokens")


@dataclass(frozen=True)
class TokenizeConfig:
    model_type: Literal["unigram", "bpe"]
    vocab_size: int = field(metadata=ranged(ge=64, le=1_000_000))
    joint: bool
    # SentencePiece's own limits: it refuses anything outside them at training time.
    character_coverage: float = field(metadata=ranged(ge=0.98, le=1))
    max_sentencepiece_length: int = field(metadata=ranged(ge=1, le=512))


@dataclass(frozen=True)
class ModelConfig:
    embedding_dim: int = field(metadata=ranged(ge=1, le=8192))
    hidden_units: int = field(metadata=ranged(ge=1, le=8192))
    dropout: float = field(metadata=ranged(ge=0, lt=1))
    tie_embeddings: bool
    # Pointer-generator copying (pipeline/model/copy_attention.py): each step may also copy a
    # source piece by its attention weight, for summaries that reuse the source's names and
    # terms. Off by default: not yet measured against plain attention at the same budget.
    copy_attention: bool = False


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(metadata=ranged(ge=1, le=500))
    batch_size: int = field(metadata=ranged(ge=1, le=65_536))
    learning_rate: float = field(metadata=ranged(gt=0, le=1))
    warmup_steps: int = field(metadata=ranged(ge=0, le=1_000_000))
    label_smoothing: float = field(metadata=ranged(ge=0, lt=1))
    clip_norm: float = field(metadata=ranged(ge=0, le=1000))  # 0: no clipping (Keras skips it)
    patience: int = field(metadata=ranged(ge=0, le=1000))
    max_tokens: int = field(metadata=ranged(ge=1, le=10_000))
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"]
    bucket_boundaries: tuple[int, ...] = field(metadata=ranged(ge=1, le=10_000))
    # Export the mean of the best epoch's weights and those of the epochs just before it.
    average_last: int = field(default=1, metadata=ranged(ge=1, le=100))

    def __post_init__(self) -> None:
        bounds = list(self.bucket_boundaries)
        _require(bounds == sorted(set(bounds)), "train.bucket_boundaries", "must increase")


@dataclass(frozen=True)
class DecodeConfig:
    """How every translation is searched: evaluate, `mt translate` and the served model."""

    beam_size: int = field(metadata=ranged(ge=1, le=MAX_BEAM_SIZE))
    length_penalty: float = field(metadata=ranged(ge=0, le=5))
    max_length_ratio: float = field(metadata=ranged(gt=0, le=10))
    max_length_offset: int = field(metadata=ranged(ge=0, le=1000))
    max_source_length: int = field(metadata=ranged(ge=1, le=10_000))  # in pieces
    batch_size: int = field(metadata=ranged(ge=1, le=65_536))


@dataclass(frozen=True)
class EvaluateConfig:
    bootstrap_resamples: int = field(metadata=ranged(ge=10, le=100_000))
    samples: int = field(metadata=ranged(ge=0, le=10_000))
    attention_maps: int = field(metadata=ranged(ge=0, le=1000))


@dataclass(frozen=True)
class RegisterConfig:
    model_name: str = field(metadata=MODEL_NAME)
    policy: Literal["auto", "manual"]
    # The gate's, the canary's and the model card's headline; one of the task's metrics
    # (pipeline/tasks.py TASK_METRICS). min_score and min_delta are in its points (0-100).
    metric: Literal["bleu", "chrf", "rouge_1", "rouge_2", "rouge_l"]
    min_score: float = field(metadata=ranged(ge=0, le=100))
    min_delta: float = field(metadata=ranged(ge=0, le=100))
    significance: float = field(metadata=ranged(gt=0, lt=1))
    bootstrap_resamples: int = field(metadata=ranged(ge=10, le=100_000))
    # Upper bounds keep a request within one host: the body cap they imply (serving.py
    # max_request_bytes) stays under 118 MB (1.2 TB before); a text is a sentence, 10x the
    # default; 1_024 rows at beam 5 take ~14 s on 2 cores (75/s,
    # benchmarks/results/decode_speed.json), inside the scoring server's 60 s timeout; 10^7
    # units (beam x decoder steps) are ~15 min of that host's ~11_000 hypothesis-steps a second.
    max_input_chars: int = field(metadata=ranged(ge=1, le=10_000))
    max_batch_rows: int = field(metadata=ranged(ge=1, le=1_024))
    max_request_work: int = field(metadata=ranged(ge=1, le=10_000_000))
    # `mt serve` of an alias (models:/NAME@champion) looks it up this often and switches to the
    # version it names (pipeline/serving_follow.py); 0 serves the version found at start.
    serve_poll_s: float = field(metadata=ranged(ge=0, le=86_400))
    # How long a batch of concurrent requests waits for more while clients are many
    # (pipeline/serving_batch.py); a lone client's request starts at once.
    serve_batch_window_ms: float = field(metadata=ranged(ge=0, le=1_000))


@dataclass(frozen=True)
class OrchestrationConfig:
    """Read by the Airflow DAG only; no DVC stage depends on it."""

    schedule: str = field(
        metadata=satisfying(
            is_schedule,
            f"none, a preset ({', '.join(SCHEDULE_PRESETS)}) or a 5-field cron expression",
        )
    )
    timezone: str = field(
        metadata=satisfying(is_time_zone, "an IANA time zone name, e.g. UTC or Europe/Berlin")
    )
    raw_data_asset: str = field(metadata=ASSET_URI)
    retries: int = field(metadata=ranged(ge=0, le=20))
    retry_delay_s: int = field(metadata=ranged(ge=1, le=86_400))
    max_retry_delay_s: int = field(metadata=ranged(ge=1, le=604_800))
    stage_timeout_min: int = field(metadata=ranged(ge=1, le=10_080))
    train_timeout_min: int = field(metadata=ranged(ge=1, le=10_080))
    approval_timeout_h: int = field(metadata=ranged(ge=1, le=8760))
    queue: str = field(metadata=CELERY_QUEUE)
    train_queue: str = field(metadata=CELERY_QUEUE)
    # "" = one host (a run's tasks share its workspace); env MT_DVC_REMOTE overrides per worker.
    dvc_remote: str = field(metadata=matching(r"(\S+)?", "a DVC remote URL, or empty"))
    # Where a run's `data_path` (Trigger form, asset event) may point: inside this folder.
    data_root: str = field(metadata=matching(r"\S+", "a folder path"))
    # Runs of retrain_translation at once: each has its own workspace (pipeline/workspaces.py).
    max_active_runs: int = field(metadata=ranged(ge=1, le=16))
    keep_failed_days: float = field(metadata=ranged(ge=0, le=365))

    def __post_init__(self) -> None:
        _require(
            self.max_retry_delay_s >= self.retry_delay_s,
            "orchestration.max_retry_delay_s",
            "must be >= retry_delay_s",
        )


@dataclass(frozen=True)
class MonitorConfig:
    """Read by translate_batch, watch_champion and `mt monitor ...`; no training stage uses it."""

    incoming_asset: str = field(metadata=ASSET_URI)
    translated_asset: str = field(metadata=ASSET_URI)
    # Where a translate_batch request (form, asset event) may read and write; "": the folder of
    # orchestration.data_root (inputs) and of translated_asset (outputs). `mt translate-batch`,
    # run by a person at the shell, is not confined (docs/monitoring.md).
    input_root: str = field(metadata=matching(r"(/\S*)?", "an absolute folder path, or empty"))
    output_root: str = field(metadata=matching(r"(/\S*)?", "an absolute folder path, or empty"))
    # Bytes one batch (a file, or a folder's *.txt together) may hold, checked before reading.
    max_batch_mb: float = field(metadata=ranged(gt=0, le=10_000))
    batch_size: int = field(metadata=ranged(ge=1, le=65_536))
    canary_size: int = field(metadata=ranged(ge=1, le=100_000))
    max_canary_drop: float = field(metadata=ranged(ge=0, le=100))
    min_canary_score: float = field(metadata=ranged(ge=0, le=100))
    length_psi: float = field(metadata=ranged(gt=0, le=100))
    length_ks: float = field(metadata=ranged(gt=0, le=1))
    char_class_psi: float = field(metadata=ranged(gt=0, le=100))
    max_unknown_rate: float = field(metadata=ranged(ge=0, le=1))
    min_language_share: float = field(metadata=ranged(ge=0, le=1))
    min_drift_lines: int = field(metadata=ranged(ge=1, le=1_000_000))
    retrain_on_alert: bool
    watch_schedule: str = field(
        metadata=satisfying(
            is_schedule,
            f"none, a preset ({', '.join(SCHEDULE_PRESETS)}) or a 5-field cron expression",
        )
    )
    alert_emails: tuple[str, ...] = field(metadata=EMAIL_ADDRESS)
    smtp_conn_id: str = field(metadata=CONNECTION_ID)
    alert_webhook_url: str = field(metadata=WEBHOOK_URL)

    def __post_init__(self) -> None:
        _require(
            self.incoming_asset != self.translated_asset,
            "monitor.translated_asset",
            "must differ from incoming_asset (the batch DAG would trigger itself)",
        )
        translated = local_folder_of(self.translated_asset)
        _require(
            not self.output_root
            or translated is None
            or translated.is_relative_to(self.output_root),
            "monitor.output_root",
            f"is {self.output_root!r}, which does not hold {translated}, the folder of "
            "monitor.translated_asset where an asset-event run writes its outputs; make one hold "
            "the other",
        )


def local_folder_of(uri: str) -> Path | None:
    """The folder a local file:// URI names, or None for any other URI."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme != "file" or parsed.netloc not in {"", "localhost"}:
        return None
    return Path(urllib.parse.unquote(parsed.path))


@dataclass(frozen=True)
class Config:
    seed: int = field(metadata=ranged(ge=0, le=2**32 - 1))  # NumPy's seed range
    task: Task
    data: DataConfig
    validate: ValidateConfig
    clean: CleanConfig
    tokenize: TokenizeConfig
    model: ModelConfig
    train: TrainConfig
    decode: DecodeConfig
    evaluate: EvaluateConfig
    register: RegisterConfig
    orchestration: OrchestrationConfig
    monitor: MonitorConfig

    def __post_init__(self) -> None:
        _check_task(self)
        _check_copy_attention(self)

    @property
    def metric(self) -> str:
        """The task's primary metric (register.metric)."""
        return self.register.metric

    @property
    def sacrebleu_metric(self) -> bool:
        return self.register.metric in SACREBLEU_METRICS


def _check_task(config: Config) -> None:
    """What `task:` implies for the other sections (docs/tasks.md)."""
    task, data = config.task, config.data
    if data.src_lang == data.tgt_lang:
        _require(
            allows_same_language(task),
            "data.tgt_lang",
            f"must differ from src_lang for task {task} (summarization and dialogue allow "
            "the same language on both sides)",
        )
    metrics = TASK_METRICS[task]
    _require(
        config.register.metric in metrics,
        "register.metric",
        f"is {config.register.metric!r}, which task {task} does not report; one of "
        f"{', '.join(metrics)}",
    )
    from pipeline.model_naming import check_model_name  # light: no stage imports

    check_model_name(config.register.model_name, task, data.pair)


def _check_copy_attention(config: Config) -> None:
    """A copied source piece's id is used as a target id: both sides need one vocabulary."""
    _require(
        config.tokenize.joint or not config.model.copy_attention,
        "model.copy_attention",
        "needs `tokenize.joint: true` (a copied source piece must have the same id as a target "
        "piece)",
    )


def _require(condition: bool, key: str, rule: str) -> None:
    if not condition:
        raise ConfigError(f"params.yaml: `{key}` {rule}")


def _require_distinct_splits(data: DataConfig) -> None:
    """BLEU on a split the model trained or early-stopped on measures memory, not translation."""
    seen = {data.train_split: "data.train_split"}
    named = [("data.val_split", data.val_split)]
    named += [(f"data.test_splits[{i}]", split) for i, split in enumerate(data.test_splits)]
    for key, split in named:
        if split in seen:
            raise ConfigError(
                f"params.yaml: `{key}` is {split!r}, the same split as `{seen[split]}`; train, "
                "val and test splits must be distinct (a score on seen data measures nothing)"
            )
        seen[split] = key


def parse_config(raw: Any, source: str = "params.yaml") -> Config:
    """Build a Config from a parsed YAML mapping, naming the first offending key."""
    try:
        return typing.cast(Config, build_dataclass(Config, raw, ""))
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
    """The project's params.yaml (or `path`), parsed once per process.

    Stage commands are refused while another DAG run holds params.yaml before they get here
    (pipeline/cli.py, STAGE_COMMANDS).
    """
    if path:
        return _load_cached(Path(path).resolve())
    return _load_cached(project_paths().params)


def param_specs(cls: type = Config, prefix: str = "") -> dict[str, ParamSpec]:
    """Every key of params.yaml (dotted) with its type and allowed range, in file order."""
    return dataclass_specs(cls, prefix)


def config_as_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict (for MLflow params and lineage tags)."""
    return dataclasses.asdict(config)
