"""Keras, imported the way the pipeline's processes import it (without scikit-learn)."""

from __future__ import annotations

import importlib
import sys


def import_keras_without_scikit_learn() -> None:
    """Import Keras while scikit-learn is hidden, then make scikit-learn importable again.

    Keras 3 imports scikit-learn at start-up for `keras.wrappers` (its scikit-learn
    estimators), which nothing here uses; MLflow installs scikit-learn, and importing it cost
    each process ~1.1 of the ~6.3 CPU s of its Keras start (benchmarks/keras_import.py). With
    it hidden, Keras's wrappers fall back to their stand-in base classes, as where it is not
    installed. `mt` calls this before a command that always loads a model, and the translator
    pyfunc before it loads its model (the gate's smoke check, serving, the watch).
    """
    if "keras" in sys.modules or "sklearn" in sys.modules:
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # `import sklearn` fails
    try:
        importlib.import_module("keras")
    finally:
        del sys.modules["sklearn"]
