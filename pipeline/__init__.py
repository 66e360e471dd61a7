"""Neural machine translation pipeline: DVC stages, an LSTM translator, an MLflow registry."""

__version__ = "0.1.0"
