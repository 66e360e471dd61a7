"""How a training run uses the machine: dtype policy, XLA, GPUs, and the hardware it ran on."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf


@dataclass(frozen=True)
class DevicePlan:
    """How this run uses the machine: dtype policy, XLA and the distribution strategy."""

    precision: str  # "float32" | "mixed_float16"
    jit_compile: bool
    gpus: int

    def strategy(self) -> tf.distribute.Strategy:
        if self.gpus > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()


def plan_devices(precision: str, gpus: int) -> DevicePlan:
    """`auto`: mixed precision + XLA on a GPU, float32 on CPU; explicit settings are obeyed.

    Keras turns XLA back off for cuDNN LSTMs (cuDNN kernels are not XLA-compilable), so on a
    GPU the LSTMs run cuDNN and XLA applies only where Keras allows it.
    """
    if precision == "auto":
        precision = "mixed_float16" if gpus else "float32"
    return DevicePlan(precision=precision, jit_compile=gpus > 0, gpus=gpus)


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
    gpus = tf.config.list_physical_devices("GPU")
    names = [
        tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus
    ]
    return {
        "hardware.cpu": _cpu_name(),
        "hardware.cpu_count": str(os.cpu_count() or 0),
        "hardware.gpus": ", ".join(names) or "none",
    }


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
