"""Neural machine translation pipeline: DVC stages, an LSTM translator, an MLflow registry."""

from importlib import metadata

# One source for the version: pyproject.toml, as installed (`mt --version` reads the same).
try:
    __version__ = metadata.version("mt-pipeline")
except metadata.PackageNotFoundError:  # the code on PYTHONPATH without `pip install -e .`
    __version__ = "unknown"
