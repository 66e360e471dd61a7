"""The smoke check a version passes before it may become `@champion`.

The version's pyfunc is loaded the way serving loads it (`models:/<name>/<version>`) and is
given a fixed set of canary sentences; it must give one string per sentence and raise nothing.
A version that cannot do that would answer every request of the serving endpoint with an
error, whatever its score. The check asks nothing of the output's language or content, so it
is the same for every task (a translator, a summariser, a dialogue model: one text in, one
text out, the same language on both sides or not). An empty output passes: it is a (bad)
translation, summary or reply, not a broken endpoint, and judging quality is the gate's job
(an undertrained model, like the tests' tiny ones, legitimately says nothing for a sentence it
never saw). The sentences are short English captions, well inside every version's request
limits (the stand-in test model's are the tightest: 4 rows, 120 characters of work).
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from pipeline.registry.errors import RegistryError
from pipeline.serving import TEXT_COLUMN, TRANSLATION_COLUMN
from pipeline.tracking import load_pyfunc

log = logging.getLogger(__name__)

CANARY_SENTENCES = (
    "A dog runs on the grass.",
    "Two men are talking.",
    "A girl is smiling.",
)


def smoke_check(registry_uri: str, model_name: str, version: str) -> None:
    """Raise RegistryError unless the version loads and answers every canary sentence."""
    uri = f"models:/{model_name}/{version}"
    try:
        model = load_pyfunc(registry_uri, uri)  # `models:/` resolves against this store
    except Exception as error:  # a broken model can raise anything: each is a failed check
        _fail(model_name, version, f"{type(error).__name__}: {_first_line(error)}")
    problem = loaded_model_problem(model)
    if problem is not None:
        _fail(model_name, version, problem)
    log.info("%s version %s passed the smoke check (%s)", model_name, version, uri)


def loaded_model_problem(model: Any) -> str | None:
    """Why a loaded pyfunc fails the canary sentences, or None when it answers each one.

    The gate checks a version with it before it becomes @champion, and the server
    (pipeline/serving_follow.py) before it switches to a new @champion."""
    try:
        output = model.predict(pd.DataFrame({TEXT_COLUMN: list(CANARY_SENTENCES)}))
    except Exception as error:  # a broken model can raise anything: each is a failed check
        return f"{type(error).__name__}: {_first_line(error)}"
    return output_problem(output, len(CANARY_SENTENCES))


def output_problem(output: Any, expected_rows: int) -> str | None:
    """Why `output` is not one string per input row, or None when it is."""
    outputs = _as_list(output)
    if outputs is None:
        return f"predict returned {type(output).__name__}, not a list of texts"
    if len(outputs) != expected_rows:
        return f"predict returned {len(outputs)} outputs for {expected_rows} inputs"
    for row, text in enumerate(outputs):
        if not isinstance(text, str):
            return f"output {row} of {CANARY_SENTENCES[row]!r} is {text!r}, not a string"
    return None


def _as_list(output: Any) -> list[Any] | None:
    if isinstance(output, pd.DataFrame):
        if TRANSLATION_COLUMN in output.columns:
            return list(output[TRANSLATION_COLUMN])
        return list(output.iloc[:, 0]) if output.shape[1] == 1 else None
    if isinstance(output, np.ndarray) and output.ndim == 1:
        return output.tolist()
    if isinstance(output, pd.Series | list | tuple):
        return list(output)
    return None


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "message", None) or error).strip()
    return (text.splitlines() or ["(no message)"])[0][:300]


def _fail(model_name: str, version: str, problem: str) -> NoReturn:
    raise RegistryError(
        f"{model_name} version {version} failed the smoke check, so it does not become "
        f"@champion: {problem} (fix: register a version whose pyfunc loads and answers; "
        "`mlflow.pyfunc.load_model` on models:/NAME/VERSION shows the error)"
    )
