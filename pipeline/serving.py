"""The registered model: an MLflow pyfunc that takes raw source text and returns translations.

`TranslationModel` is what `mt register` logs. Its artifacts are the Keras model, the
SentencePiece tokenizer directory and a JSON of decoding settings; `load_context` builds one
`Translator` from them, so a fresh process (`mlflow models serve`) needs nothing else.

`TextToTextModel` holds what every text-in/text-out model we serve shares: the input checks
and the `beam_size` request parameter (the signature's params schema, its default the logged
decode.beam_size). A bad request (non-string values, an empty batch, a text over
`max_input_chars`, more than `max_batch_rows` rows, more work than `max_request_work` (the beam
times the decoder steps its rows may take, `request_work`), a beam size outside
1..MAX_BEAM_SIZE) raises an MlflowException with INVALID_PARAMETER_VALUE, which
the scoring server answers with HTTP 400 and the message, never a stack trace. Inside
`mlflow models serve` the body is capped before it is parsed (HTTP 413, see
pipeline/serving_body_cap.py).
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from pipeline.config import MAX_BEAM_SIZE
from pipeline.text import normalize_text

log = logging.getLogger(__name__)

TEXT_COLUMN = "text"
TRANSLATION_COLUMN = "translation"

# Names of the pyfunc artifacts (keys of `context.artifacts`).
KERAS_MODEL_ARTIFACT = "keras_model"
TOKENIZER_ARTIFACT = "tokenizer"
DECODING_ARTIFACT = "decoding_settings"

# Packages the model imports at load and predict time; versions come from requirements.lock.
SERVING_PACKAGES = (
    "mlflow",
    "tensorflow-cpu",
    "keras",
    "sentencepiece",
    "numpy",
    "pandas",
    "pyyaml",
    "cloudpickle",
)

# The request parameter that picks the search: 1 = greedy, more = beam search.
BEAM_SIZE_PARAM = "beam_size"


def translation_signature(beam_size: int) -> ModelSignature:
    """Text in, text out, and `beam_size` as a request parameter defaulting to `beam_size`
    (for TranslationModel: the decode.beam_size it was evaluated and registered with)."""
    return ModelSignature(
        inputs=Schema([ColSpec("string", TEXT_COLUMN)]),
        outputs=Schema([ColSpec("string", TRANSLATION_COLUMN)]),
        params=ParamSchema([ParamSpec(BEAM_SIZE_PARAM, "long", default=beam_size)]),
    )


# For a model that keeps one hypothesis per text (the stand-ins of the tests and benchmarks).
SIGNATURE = translation_signature(beam_size=1)


# Worst case of one text character in a JSON body: an astral character escaped as two
# six-byte `\u` surrogate escapes. Plus quotes, brackets and a comma per row, and the keys
# around them.
JSON_BYTES_PER_CHAR = 12
JSON_BYTES_PER_ROW = 16
JSON_BYTES_OVERHEAD = 4096


@dataclass(frozen=True)
class StepBounds:
    """The most decoder steps a text can take, as pipeline/model/decoding.py bounds them.

    The search stops a row at floor(max_length_ratio x its source pieces) + max_length_offset
    steps, at least 1 (`max_target_lengths`), and the Translator cuts a source at
    max_source_length pieces. A text that normalises to nothing is not decoded at all. Pieces
    are counted without the tokenizer, so that a request is measured before anything loads:
    SentencePiece (nmt_nfkc) normalises the text with NFKC, which can lengthen it (U+FDFA
    becomes 18 characters), then emits at least one character per piece, plus at most one piece
    for the word-boundary mark it puts before the first word. So NFKC characters + 1 is never
    fewer than the pieces.

    The defaults stand for a model that is not our decoder (the test stand-ins): an output as
    long as its input.
    """

    max_length_ratio: float = 1.0
    max_length_offset: int = 0
    max_source_length: int | None = None

    @classmethod
    def of(cls, settings: Any) -> StepBounds:
        """The bounds of a `DecodingSettings` (duck-typed: decoding.py imports Keras)."""
        return cls(
            settings.max_length_ratio, settings.max_length_offset, settings.max_source_length
        )

    @classmethod
    def from_settings_json(cls, text: str) -> StepBounds:
        """The bounds of a decoding settings artifact, read as TranslationModel reads it."""
        from pipeline.model.decoding import DecodingSettings

        return cls.of(DecodingSettings(**json.loads(text)))

    def steps(self, text: str) -> int:
        """The most decoder steps `text` can take; 0 when it is not decoded."""
        normalised = normalize_text(text)
        if not normalised:
            return 0
        pieces = len(unicodedata.normalize("NFKC", normalised)) + 1
        if self.max_source_length is not None:
            pieces = min(pieces, self.max_source_length)
        # In float32, as the search computes it.
        scaled = np.floor(np.float32(self.max_length_ratio) * np.float32(pieces))
        return max(int(scaled) + self.max_length_offset, 1)


def request_work(texts: Sequence[str], beam_size: int, bounds: StepBounds) -> int:
    """What a request may cost: beam x the decoder steps of each row (hypothesis-steps)."""
    return beam_size * sum(bounds.steps(text) for text in texts)


@dataclass(frozen=True)
class InputLimits:
    """Request bounds, passed to the pyfunc as its `model_config`.

    `max_request_work` bounds what one request may cost, in `request_work`'s units: every
    hypothesis of the beam takes a decoder step at a time, and each row may take as many steps
    as its StepBounds allow, so even a one-character row costs max_length_offset steps or more.
    """

    max_input_chars: int
    max_batch_rows: int
    max_request_work: int

    @property
    def max_request_bytes(self) -> int:
        """The largest body a request within the row and character limits can need."""
        per_row = JSON_BYTES_PER_CHAR * self.max_input_chars + JSON_BYTES_PER_ROW
        return self.max_batch_rows * per_row + JSON_BYTES_OVERHEAD

    @classmethod
    def from_model_config(cls, model_config: dict[str, Any] | None) -> InputLimits:
        config = model_config or {}
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in config]
        if missing:
            raise MlflowException(
                f"model_config lacks {', '.join(missing)}; log the model with "
                "model_config=dataclasses.asdict(InputLimits(...))"
            )
        return cls(**{f.name: int(config[f.name]) for f in dataclasses.fields(cls)})


def _bad_request(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _column_values(model_input: Any) -> list[Any]:
    """The values of the text column, from a DataFrame, a Series, an array or a list."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN in model_input.columns:
            return list(model_input[TEXT_COLUMN])
        if len(model_input.columns) == 1:
            return list(model_input.iloc[:, 0])
        raise _bad_request(
            f"input has columns {list(model_input.columns)}; send one column named "
            f"{TEXT_COLUMN!r} with one text per row"
        )
    if isinstance(model_input, pd.Series | np.ndarray | list | tuple):
        return list(model_input)
    if isinstance(model_input, dict) and TEXT_COLUMN in model_input:
        return list(model_input[TEXT_COLUMN])
    raise _bad_request(
        f"input of type {type(model_input).__name__} is not supported; send a column "
        f"{TEXT_COLUMN!r} of strings"
    )


def requested_beam_size(params: dict[str, Any] | None, default: int) -> int:
    """The request's `beam_size` (MLflow has checked that it is an integer), within range."""
    value = (params or {}).get(BEAM_SIZE_PARAM, default)
    integer = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not integer or not 1 <= value <= MAX_BEAM_SIZE:
        raise _bad_request(
            f"params {BEAM_SIZE_PARAM}={value!r}: allowed an integer from 1 (greedy) to "
            f"{MAX_BEAM_SIZE}; leave it out for the model's default ({default})"
        )
    return int(value)


def texts_from_input(
    model_input: Any, limits: InputLimits, beam_size: int = 1, bounds: StepBounds = StepBounds()
) -> list[str]:
    """Check a request and return its texts, or raise a 400-worthy MlflowException."""
    texts = _checked_texts(_column_values(model_input), limits)
    work = request_work(texts, beam_size, bounds)
    if work > limits.max_request_work:
        raise _bad_request(
            f"request of {len(texts)} rows at beam {beam_size} is {work} units of work (beam x "
            f"{work // beam_size} decoder steps its rows may take), over "
            f"register.max_request_work={limits.max_request_work}; send fewer or shorter rows, "
            "or a smaller beam"
        )
    return texts


def _checked_texts(values: list[Any], limits: InputLimits) -> list[str]:
    """The rows as strings, each within the row and character limits."""
    if not values:
        raise _bad_request("empty batch: send at least one row in column 'text'")
    if len(values) > limits.max_batch_rows:
        raise _bad_request(
            f"batch of {len(values)} rows exceeds register.max_batch_rows="
            f"{limits.max_batch_rows}; split the request into smaller batches"
        )
    for row, value in enumerate(values):
        if not isinstance(value, str):
            # A parsed JSON number arrives as a NumPy scalar: named as the client sent it.
            shown = value.item() if isinstance(value, np.generic) else value
            raise _bad_request(
                f"row {row}: expected a string in column 'text', got "
                f"{type(shown).__name__} {shown!r}"
            )
        if len(value) > limits.max_input_chars:
            raise _bad_request(
                f"row {row}: text of {len(value)} characters exceeds register.max_input_chars="
                f"{limits.max_input_chars}; split it into sentences"
            )
    return [str(value) for value in values]


class TextToTextModel(PythonModel, abc.ABC):
    """A pyfunc with checked text in (column `text`) and text out (column `translation`)."""

    limits: InputLimits
    # The beam of a request that names none; the request-work bound multiplies by the beam.
    beam_size: int = 1
    # How many decoder steps a row may take (request_work); TranslationModel sets its own.
    step_bounds: StepBounds = StepBounds()

    def load_context(self, context: Any) -> None:
        from pipeline.serving_body_cap import cap_scoring_server_body

        self.limits = InputLimits.from_model_config(context.model_config)
        self.load_translator(context.artifacts)
        cap_scoring_server_body(self.limits.max_request_bytes)

    # MLflow inspects these hints: a DataFrame hint keeps the explicit SIGNATURE in force
    # (no type-hint signature, no warning), and the scoring server hands us a DataFrame.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        beam_size = requested_beam_size(params, self.beam_size)
        texts = texts_from_input(model_input, self.limits, beam_size, self.step_bounds)
        return pd.DataFrame({TRANSLATION_COLUMN: self.translate_texts(texts, beam_size)})

    @abc.abstractmethod
    def load_translator(self, artifacts: dict[str, str]) -> None:
        """Build whatever `translate_texts` needs from the logged artifacts (once)."""

    @abc.abstractmethod
    def translate_texts(self, texts: list[str], beam_size: int) -> list[str]:
        """One output per input text, same order; an empty text gives an empty string."""


def step_bounds_of(pyfunc: Any) -> StepBounds:
    """The step bounds a loaded pyfunc checks its requests with (StepBounds() for a model that
    is not a TextToTextModel: it checks none of ours)."""
    python_model = pyfunc.unwrap_python_model()
    return python_model.step_bounds if isinstance(python_model, TextToTextModel) else StepBounds()


class TranslationModel(TextToTextModel):
    """The LSTM translator: `pipeline.translator.Translator` over the logged artifacts."""

    def load_translator(self, artifacts: dict[str, str]) -> None:
        # Imported here: TensorFlow loads only in the serving process, not at logging time.
        from pipeline.keras_start import import_keras_without_scikit_learn

        import_keras_without_scikit_learn()
        from pipeline.model.decoding import DecodingSettings
        from pipeline.translator import Translator

        settings_json = json.loads(Path(artifacts[DECODING_ARTIFACT]).read_text("utf-8"))
        settings = DecodingSettings(**settings_json)
        self._translator = Translator.load(
            Path(artifacts[KERAS_MODEL_ARTIFACT]), Path(artifacts[TOKENIZER_ARTIFACT]), settings
        )
        self.beam_size = settings.beam_size
        self.step_bounds = StepBounds.of(settings)
        log.info("translator loaded with %s", settings)

    def translate_texts(self, texts: list[str], beam_size: int) -> list[str]:
        translator = self._translator
        if beam_size != translator.settings.beam_size:
            # Same model and tokenizers; decoding keeps one compiled search per beam size.
            settings = dataclasses.replace(translator.settings, beam_size=beam_size)
            translator = translator.with_settings(settings)
        return list(translator.translate(texts))
