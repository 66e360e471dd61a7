"""What benchmarks/gpu_check.py runs on: the device, its peak memory, the package versions.

Each function asks only the active Keras backend's framework, so under jax nothing here imports
tensorflow (the lent GPU machine has none).
"""

from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class Accelerator:
    """What the run computes on, as the active Keras backend sees it."""

    backend: str
    platform: str  # "gpu" or "cpu" (jax's names; TensorFlow's GPUs are reported as "gpu")
    description: str
    gpus: int


def accelerator() -> Accelerator:
    """The backend's GPUs, else this machine's CPU (as `mt train` tags its MLflow run)."""
    from pipeline.training.devices import gpu_count, hardware_tags

    backend, tags, gpus = keras.backend.backend(), hardware_tags(), gpu_count()
    if gpus:
        return Accelerator(backend, "gpu", tags["hardware.gpus"], gpus)
    return Accelerator(backend, "cpu", f"{tags['hardware.cpu_count']} x {tags['hardware.cpu']}", 0)


def peak_memory_bytes(device: Accelerator) -> int | None:
    """Peak bytes in use on the first GPU since the process started; None on a CPU."""
    if device.platform != "gpu":
        return None
    if device.backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        return int(peak) if peak is not None else None
    import tensorflow as tf

    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])


def versions(backend: str) -> dict[str, str]:
    """Python and the packages this run's numbers depend on (the backend's own, not the other)."""
    modules = ["keras", "numpy", "sentencepiece", "sacrebleu"]
    modules += ["jax", "jaxlib"] if backend == "jax" else [backend]
    found = {"python": platform.python_version()}
    for name in modules:
        found[name] = str(getattr(importlib.import_module(name), "__version__", "unknown"))
    return found
