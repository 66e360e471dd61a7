"""The served model and how `mt serve` follows `@champion` as it moves.

MLflow's scoring server resolves `models:/NAME@champion` once, at start, and serves that
version until it is restarted, however often the alias moves. Here the alias is polled every
`register.serve_poll_s`: when it names another version, that version is loaded beside the one
serving, must answer the canary sentences the gate's smoke check uses, and only then replaces
it in one assignment. The request batcher (serving_batch.py) reads the model once per batch, so
requests in flight finish on the version they started with and the old version is freed when
its last batch ends. A version that fails to load or to answer is not served, is logged once,
and is tried again only when the alias moves again; an unreachable registry keeps the current
version serving.

A URI that is not an alias (`models:/NAME/3`, `runs:/…`, a folder) is served as it is, and not
polled.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import PipelineError
from pipeline.serving import InputLimits, StepBounds, TextToTextModel
from pipeline.tracking import load_pyfunc, redacted, store_client

log = logging.getLogger(__name__)

ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


@dataclass(frozen=True)
class ServedModel:
    """A loaded pyfunc with what the server checks its requests with, and where it came from."""

    pyfunc: Any
    uri: str  # what was loaded: models:/NAME/VERSION for a registry model
    version: str | None  # None for a model outside the registry
    limits: InputLimits
    step_bounds: StepBounds
    default_beam: int

    def predict(self, texts: list[str], beam_size: int) -> list[str]:
        """One output per text, at this beam (the texts are checked already)."""
        import pandas as pd

        from pipeline.serving import BEAM_SIZE_PARAM, TEXT_COLUMN, TRANSLATION_COLUMN

        frame = self.pyfunc.predict(
            pd.DataFrame({TEXT_COLUMN: texts}), params={BEAM_SIZE_PARAM: beam_size}
        )
        return [str(text) for text in frame[TRANSLATION_COLUMN]]


@dataclass(frozen=True)
class ModelRef:
    """What `--model` names: the URI to load now, and the alias to follow (None: fixed)."""

    uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None


def load_served(store_uri: str, ref: ModelRef) -> ServedModel:
    """Load the pyfunc at `ref.uri`; it must be one of ours (a TextToTextModel)."""
    pyfunc = load_pyfunc(store_uri, ref.uri)
    python_model = pyfunc.unwrap_python_model()
    if not isinstance(python_model, TextToTextModel):
        raise PipelineError(
            f"{ref.uri}: {type(python_model).__name__} is not a model `mt register` logs "
            "(pipeline.serving.TextToTextModel); serve it with `mlflow models serve`"
        )
    return ServedModel(
        pyfunc,
        ref.uri,
        ref.version,
        python_model.limits,
        python_model.step_bounds,
        python_model.beam_size,
    )


def resolve(store_uri: str, uri: str) -> ModelRef:
    """The version an alias names now (registry lookup); other URIs as they are."""
    alias = ALIAS_URI.match(uri)
    if alias is not None:
        name = alias["name"]
        found = store_client(store_uri).get_model_version_by_alias(name, alias["alias"])
        return ModelRef(
            f"models:/{name}/{found.version}", name, str(found.version), alias["alias"]
        )
    fixed = VERSION_URI.match(uri)
    if fixed is not None:
        return ModelRef(uri, fixed["name"], fixed["version"])
    return ModelRef(uri)


class ModelSlot:
    """The model serving now; replaced in one assignment (readers never see half a switch)."""

    def __init__(self, model: ServedModel) -> None:
        self._model = model

    def current(self) -> ServedModel:
        return self._model

    def replace(self, model: ServedModel) -> None:
        self._model = model


SwitchListener = Callable[[ServedModel, ServedModel], None]  # (new, old)
FailureListener = Callable[[str], None]


class AliasFollower:
    """Polls the alias of `uri` every `poll_s` and switches `slot` to the version it names."""

    def __init__(
        self,
        store_uri: str,
        uri: str,
        slot: ModelSlot,
        poll_s: float,
        on_switch: SwitchListener = lambda new, old: None,
        on_failure: FailureListener = lambda version: None,
    ) -> None:
        self._store_uri = store_uri
        self._uri = uri
        self._slot = slot
        self._poll_s = poll_s
        self._on_switch = on_switch
        self._on_failure = on_failure
        self._refused: str | None = None  # a version that failed: not retried until it moves
        self._registry_down = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alias-follower", daemon=True)

    @staticmethod
    def follows(uri: str) -> bool:
        return ALIAS_URI.match(uri) is not None

    def start(self) -> AliasFollower:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            self.poll_once()

    def poll_once(self) -> None:
        """Look the alias up once; switch when it names a new, working version."""
        ref = self._lookup()
        if ref is None or ref.version in (self._slot.current().version, self._refused):
            return
        log.info("%s now names version %s: loading it beside %s", self._uri, ref.version,
                 self._slot.current().uri)  # fmt: skip
        problem, model = self._load_and_check(ref)
        if model is None:
            self._refused = ref.version
            log.error("not switching to %s: %s; still serving %s", ref.uri, problem,
                      self._slot.current().uri)  # fmt: skip
            self._on_failure(str(ref.version))
            return
        old = self._slot.current()
        self._slot.replace(model)
        self._refused = None
        log.info("switched to %s", model.uri)
        self._on_switch(model, old)
        del old
        gc.collect()  # the old version goes as soon as its last batch has answered

    def _lookup(self) -> ModelRef | None:
        try:
            ref = resolve(self._store_uri, self._uri)
        except Exception as error:  # a registry outage: keep serving what we have
            if not self._registry_down:
                message = redacted(str(error).splitlines()[0][:300], self._store_uri)
                log.warning("cannot look up %s (%s); still serving %s", self._uri, message,
                            self._slot.current().uri)  # fmt: skip
            self._registry_down = True
            return None
        if self._registry_down:
            log.info("registry answers again; following %s", self._uri)
        self._registry_down = False
        return ref

    def _load_and_check(self, ref: ModelRef) -> tuple[str | None, ServedModel | None]:
        from pipeline.registry.smoke import loaded_model_problem

        try:
            model = load_served(self._store_uri, ref)
        except Exception as error:  # a broken version can raise anything: it is not served
            return f"{type(error).__name__}: {str(error).splitlines()[0][:300]}", None
        problem = loaded_model_problem(model.pyfunc)
        return (problem, None) if problem is not None else (None, model)
