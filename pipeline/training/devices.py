"""How a training run uses the machine: dtype policy, XLA, GPUs, and the hardware it ran on.

TensorFlow is imported only when it is the Keras backend: the GPU machine runs JAX without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DevicePlan:
    """How this run uses the machine: dtype policy, XLA and the distribution strategy."""

    precision: str  # "float32" | "mixed_float16"
    jit_compile: bool
    gpus: int

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """Where to build and compile the model: TensorFlow's MirroredStrategy on several GPUs."""
        if self.gpus > 1 and keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return tf.distribute.MirroredStrategy().scope()
        return contextlib.nullcontext()


def plan_devices(precision: str, gpus: int, backend: str | None = None) -> DevicePlan:
    """`auto`: mixed precision + XLA on a GPU, float32 on CPU; explicit settings are obeyed.

    Keras turns XLA back off for cuDNN LSTMs under TensorFlow (cuDNN kernels are not
    XLA-compilable), so on a GPU the LSTMs run cuDNN and XLA applies only where Keras allows
    it. Under JAX the train step is always compiled (uncompiled, JAX runs op by op), and only
    one GPU is used: the model is not sharded.
    """
    backend = backend or keras.backend.backend()
    if precision == "auto":
        precision = "mixed_float16" if gpus else "float32"
    if backend == "jax" and gpus > 1:
        log.warning("the JAX backend trains on one of the %d GPUs", gpus)
    return DevicePlan(precision=precision, jit_compile=gpus > 0 or backend == "jax", gpus=gpus)


def gpu_count() -> int:
    """GPUs the Keras backend sees."""
    return len(_gpu_names())


def _gpu_names() -> list[str]:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        details = tf.config.experimental.get_device_details
        return [details(gpu).get("device_name", gpu.name) for gpu in gpus]
    if backend == "jax":
        import jax

        return [device.device_kind for device in jax.devices() if device.platform == "gpu"]
    return []


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Set Keras' global dtype policy for the block, then restore the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def hardware_tags() -> dict[str, str]:
    return {
        "hardware.cpu": _cpu_name(),
        "hardware.cpu_count": str(os.cpu_count() or 0),
        "hardware.gpus": ", ".join(_gpu_names()) or "none",
    }


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
