"""Raw text in, translated text out: the trained model and its tokenizers behind one object.

`Translator.load` reads the Keras model and the SentencePiece models once. `translate`
normalises each text exactly as the clean stage did (pipeline.text.normalize_text), cuts
it into pieces, decodes the non-empty ones in length-sorted batches (similar lengths waste
little padding) and detokenises the result back into the input order. The MLflow pyfunc in
pipeline/serving.py wraps this class; `mt translate` is its command line, which shows its
progress on stderr (`with_progress`: a bar on a terminal, a line per tenth in a log).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from pipeline.aligned_text import decode_utf8, text_lines
from pipeline.atomic import atomic_write_text
from pipeline.config import DecodeConfig, load_config
from pipeline.errors import PipelineError
from pipeline.model.decoding import DecodeResult, DecodingSettings, decode
from pipeline.param_rules import rule_of
from pipeline.paths import project_paths
from pipeline.progress import with_progress
from pipeline.text import normalize_text
from pipeline.tokenize import PAD_ID, TokenizerPair, load_tokenizers

log = logging.getLogger(__name__)

MODEL_FILE, TOKENIZER_DIR = "seq2seq.keras", "tokenizer"
MLFLOW_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


@dataclass(frozen=True)
class Translation:
    """One translated text with what a report needs to draw its attention map.

    attention: float32 [len(target_pieces) + 1, len(source_pieces)], the last row for EOS.
    """

    source: str
    text: str
    source_pieces: list[str]
    target_pieces: list[str]
    attention: np.ndarray


@dataclass(frozen=True)
class _Hypothesis:
    ids: list[int]
    attention: np.ndarray


class Translator:
    """A loaded model plus tokenizers; `translate` is safe to call many times."""

    def __init__(self, model: Any, tokenizers: TokenizerPair, settings: DecodingSettings):
        self.model = model
        self.tokenizers = tokenizers
        self.settings = settings

    @classmethod
    def load(
        cls,
        model_path: str | Path,
        tokenizer_dir: str | Path,
        settings: DecodingSettings | None = None,
    ) -> Translator:
        """Load `seq2seq.keras` (safe mode) and the tokenizer directory beside it."""
        import keras

        # Registers the model's custom layers with Keras before deserialising.
        import pipeline.model.seq2seq  # noqa: F401

        model_path = Path(model_path)
        if not model_path.is_file():
            raise PipelineError(f"{model_path}: model file not found; run `mt train` first")
        tokenizers = load_tokenizers(Path(tokenizer_dir))  # cheap, so its errors come first
        try:
            model = keras.saving.load_model(model_path, safe_mode=True)
        except (ValueError, OSError, zipfile.BadZipFile) as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise PipelineError(
                f"{model_path}: not a loadable Keras model ({first_line}); run `mt train` to "
                "write it again"
            ) from None
        return cls(model, tokenizers, settings or DecodingSettings())

    def with_settings(self, settings: DecodingSettings) -> Translator:
        """The same model and tokenizers with other decoding settings (no reload)."""
        return Translator(self.model, self.tokenizers, settings)

    def translate(self, texts: Sequence[str], progress: bool = False) -> list[str]:
        """One detokenised translation per text, same order; empty text gives "".

        `progress`: show the batches done on stderr (`with_progress`).
        """
        hypotheses = self._translate_ids(self.encode_sources(texts), progress)
        return [self.tokenizers.tgt.decode(hypothesis.ids) for hypothesis in hypotheses]

    def translate_with_attention(
        self, texts: Sequence[str], progress: bool = False
    ) -> list[Translation]:
        """Like `translate`, keeping pieces and attention weights for reports."""
        sources = self.encode_sources(texts)
        hypotheses = self._translate_ids(sources, progress)
        return [
            self._translation(text, source, hypothesis)
            for text, source, hypothesis in zip(texts, sources, hypotheses, strict=True)
        ]

    def encode_sources(self, texts: Sequence[str]) -> list[list[int]]:
        """Normalised piece ids per text, cut to `settings.max_source_length` with a warning."""
        normalised = [normalize_text(text) for text in texts]
        encoded: list[list[int]] = self.tokenizers.src.encode(normalised, out_type=int)
        limit = self.settings.max_source_length
        for row, ids in enumerate(encoded):
            if len(ids) > limit:
                log.warning(
                    "input line %d has %d source pieces; translating only the first %d "
                    "(DecodingSettings.max_source_length)",
                    row + 1,
                    len(ids),
                    limit,
                )
                encoded[row] = ids[:limit]
        return encoded

    def _translation(self, text: str, source: list[int], hypothesis: _Hypothesis) -> Translation:
        return Translation(
            source=normalize_text(text),
            text=self.tokenizers.tgt.decode(hypothesis.ids),
            source_pieces=[self.tokenizers.src.id_to_piece(i) for i in source],
            target_pieces=[self.tokenizers.tgt.id_to_piece(i) for i in hypothesis.ids],
            attention=hypothesis.attention,
        )

    def _translate_ids(self, sources: list[list[int]], progress: bool) -> list[_Hypothesis]:
        """Decode every non-empty source in length-sorted batches; empty ones stay empty."""
        results = [_Hypothesis([], np.zeros((0, 0), np.float32)) for _ in sources]
        batches = list(self._length_sorted_batches(sources))
        for rows in with_progress(batches, "translating", "batch") if progress else batches:
            batch = pad_batch([sources[row] for row in rows])
            decoded = decode(self.model, batch, self.settings)
            for position, row in enumerate(rows):
                results[row] = _hypothesis(decoded, position, len(sources[row]))
        return results

    def _length_sorted_batches(self, sources: list[list[int]]) -> Iterator[list[int]]:
        rows = sorted(
            (row for row, ids in enumerate(sources) if ids), key=lambda r: len(sources[r])
        )
        size = self.settings.batch_size
        for start in range(0, len(rows), size):
            yield rows[start : start + size]


def _hypothesis(decoded: DecodeResult, position: int, source_length: int) -> _Hypothesis:
    length = int(decoded.lengths[position])
    attention = decoded.attention[position, :length, :source_length]
    return _Hypothesis(decoded.token_ids(position), attention)


def pad_batch(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """int32 [len(rows), longest] with PAD_ID after each row."""
    batch = np.full((len(rows), max(len(row) for row in rows)), PAD_ID, dtype=np.int32)
    for index, row in enumerate(rows):
        batch[index, : len(row)] = row
    return batch


# ------------------------------------------------------------------------------ mt translate


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mt translate",
        description="Translate one sentence per line from stdin (or --input) to stdout.",
    )
    parser.add_argument("--input", type=Path, help="text file to translate (default: stdin)")
    parser.add_argument("--output", type=Path, help="where to write (default: stdout)")
    parser.add_argument(
        "--beam-size",
        "--beam",
        dest="beam",
        type=int,
        help="beam size, 1 = greedy (default: decode.beam_size; for an MLflow model, the "
        "decode.beam_size it was registered with)",
    )
    parser.add_argument("--batch-size", type=int, help="sentences decoded together")
    parser.add_argument(
        "--model",
        help="a directory holding seq2seq.keras and tokenizer/ (or a project root), an MLflow "
        "model URI such as models:/<name>@champion, or a saved MLflow model directory "
        "(default: this project's models/)",
    )
    return parser.parse_args(argv)


# Flags that override a param: (flag, argparse attribute, params.yaml `decode:` key).
PARAM_FLAGS = (
    ("--beam-size", "beam", "beam_size"),
    ("--batch-size", "batch_size", "batch_size"),
)


def check_param_flags(args: argparse.Namespace) -> None:
    """Each flag within the allowed range of the `decode:` param it overrides."""
    rules = {field.name: rule_of(field) for field in dataclasses.fields(DecodeConfig)}
    for flag, attribute, key in PARAM_FLAGS:
        value, rule = getattr(args, attribute), rules[key]
        if value is not None and rule is not None and not rule.allows(value):
            raise PipelineError(
                f"{flag} {value}: outside the allowed range {rule.describe()} of params.yaml "
                f"`decode.{key}`"
            )


def settings_from_args(args: argparse.Namespace) -> DecodingSettings:
    """params.yaml's decode section when the project has one, with the flags on top."""
    check_param_flags(args)
    paths = project_paths()
    base = (
        DecodingSettings.from_config(load_config().decode)
        if paths.params.is_file()
        else DecodingSettings()
    )
    overrides = {"beam_size": args.beam, "batch_size": args.batch_size}
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def local_model_dir(model: str | None) -> Path:
    """The directory with seq2seq.keras and tokenizer/ for --model (a dir or project root)."""
    if model is None:
        candidates = [project_paths().models_dir]
    else:
        candidates = [Path(model), Path(model) / "models"]
    for directory in candidates:
        if (directory / MODEL_FILE).is_file():
            return directory
    raise PipelineError(
        f"--model {model or candidates[0]}: no {MODEL_FILE} found there (nor in models/ below "
        "it); run `mt train`, or pass a model directory or an MLflow URI like "
        "models:/<name>@champion"
    )


def is_mlflow_model(model: str) -> bool:
    """An MLflow model URI, or a local directory holding a saved MLflow model (MLmodel)."""
    return model.startswith(MLFLOW_URI_SCHEMES) or (Path(model) / "MLmodel").is_file()


UTF8_FIX = "convert the input to UTF-8, e.g. `iconv -f latin1 -t utf-8`"


def read_input_lines(source: TextIO | Path) -> list[str]:
    """One text per "\\n"-separated line (the stages' one line rule, pipeline/aligned_text.py);
    a file's bytes are decoded as strict UTF-8 with a line-numbered error."""
    if isinstance(source, Path):
        if not source.is_file():
            raise PipelineError(f"--input {source}: file not found")
        return text_lines(decode_utf8(source.read_bytes(), f"--input {source}", UTF8_FIX))
    return text_lines(source.read())


def read_stdin_lines() -> list[str]:
    """stdin's lines, its bytes decoded as strict UTF-8 (Python's own stdin would turn a bad
    byte into a lone surrogate under a C locale, and fail later with a traceback)."""
    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:  # a text stream with no bytes underneath (a test's StringIO)
        return read_input_lines(sys.stdin)
    return text_lines(decode_utf8(raw.read(), "stdin", UTF8_FIX))


def load_mlflow_model(uri: str) -> Any:
    """The pyfunc at `uri`, or a PipelineError naming it (not found, server unreachable)."""
    from mlflow.exceptions import MlflowException

    from pipeline.tracking import load_pyfunc, redact, redacted, tracking_uri

    uri_in_force = tracking_uri()
    try:
        return load_pyfunc(uri_in_force, uri)
    except (MlflowException, OSError) as error:
        message = (getattr(error, "message", None) or str(error)).splitlines()[0][:300]
        message = redacted(message, uri_in_force)
        raise PipelineError(
            f"--model {uri}: cannot load this MLflow model from {redact(uri_in_force)}: {message}"
        ) from None


def beam_params(uri: str, model: Any, beam_size: int | None) -> dict[str, int] | None:
    """The request parameters that ask `model` for `beam_size` (None: its own default).

    A version logged before the beam size became a signature parameter would ignore it with a
    mere warning from MLflow, so it is refused here instead.
    """
    if beam_size is None:
        return None
    schema = model.metadata.get_params_schema()
    if schema is None or "beam_size" not in {param.name for param in schema.params}:
        raise PipelineError(
            f"--model {uri}: this model takes no beam_size parameter (logged before serving "
            "took decoding options); drop --beam-size, or register the model again"
        )
    return {"beam_size": beam_size}


def translate_with_mlflow(
    uri: str, texts: list[str], batch_size: int, beam_size: int | None = None
) -> list[str]:
    """Translate through a registered pyfunc (the served model) in request-sized chunks."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    model = load_mlflow_model(uri)
    params = beam_params(uri, model, beam_size)
    outputs: list[str] = []
    for start in with_progress(range(0, len(texts), batch_size), "translating", "request"):
        chunk = texts[start : start + batch_size]
        try:
            predicted = model.predict(pd.DataFrame({"text": chunk}), params=params)
        except MlflowException as error:  # the model's request checks (pipeline/serving.py)
            raise PipelineError(
                f"input lines {start + 1}-{start + len(chunk)} (one request of --batch-size "
                f"{batch_size}): {error.message}"
            ) from None
        outputs.extend(str(text) for text in predicted["translation"])
    return outputs


def write_output(path: Path | None, text: str) -> None:
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        atomic_write_text(path, text)
    except OSError as error:
        raise PipelineError(f"--output {path}: cannot write it: {error.strerror}") from None


def main(argv: list[str]) -> int | None:
    args = parse_args(argv)
    settings = settings_from_args(args)
    texts = read_input_lines(args.input) if args.input else read_stdin_lines()
    if args.model and is_mlflow_model(args.model):
        outputs = translate_with_mlflow(args.model, texts, settings.batch_size, args.beam)
    else:
        directory = local_model_dir(args.model)
        translator = Translator.load(directory / MODEL_FILE, directory / TOKENIZER_DIR, settings)
        outputs = translator.translate(texts, progress=True)
    write_output(args.output, "".join(line + "\n" for line in outputs))
    log.info("translated %d lines", len(texts))
    return 0
