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

    precision: str  # "float32" | "mixed_float16" | "mixed_bfloat16"
    jit_compile: bool
    gpus: int

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """Where to build and compile the model: TensorFlow's MirroredStrategy on several GPUs."""
        if self.gpus > 1 and keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return tf.distribute.MirroredStrategy().scope()
        return contextlib.nullcontext()


def plan_devices(
    precision: str, gpus: int, backend: str | None = None, cpu_flags: set[str] | None = None
) -> DevicePlan:
    """`auto`: mixed_float16 + XLA on a GPU; on a CPU mixed_bfloat16 where the CPU has bfloat16
    matrix instructions (AMX or AVX-512 BF16) and TensorFlow's oneDNN kernels use them, else
    float32. Explicit settings are obeyed.

    On the 2-core Sapphire Rapids machine bfloat16 trains ~1.5x the target tokens per CPU-second
    with the same val NLL after four epochs (docs/training.md, *Where a step's time goes*);
    weights stay float32 (Keras' mixed policy) and the exported model is float32 either way.

    Keras turns XLA back off for cuDNN LSTMs under TensorFlow (cuDNN kernels are not
    XLA-compilable), so on a GPU the LSTMs run cuDNN and XLA applies only where Keras allows
    it. Under JAX the train step is always compiled (uncompiled, JAX runs op by op), and only
    one GPU is used: the model is not sharded.
    """
    backend = backend or keras.backend.backend()
    if precision == "auto":
        precision = "mixed_float16" if gpus else _cpu_precision(backend, cpu_flags)
    if backend == "jax" and gpus > 1:
        log.warning("the JAX backend trains on one of the %d GPUs", gpus)
    return DevicePlan(precision=precision, jit_compile=gpus > 0 or backend == "jax", gpus=gpus)


# /proc/cpuinfo flags of bfloat16 matrix instructions oneDNN uses (Sapphire Rapids: both).
BFLOAT16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def _cpu_precision(backend: str, cpu_flags: set[str] | None) -> str:
    # JAX's CPU compiler and TensorFlow without oneDNN emulate bfloat16 matmuls: slower.
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"
    flags = cpu_flags if cpu_flags is not None else read_cpu_flags()
    if backend == "tensorflow" and onednn and flags & BFLOAT16_CPU_FLAGS:
        return "mixed_bfloat16"
    return "float32"


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not readable)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


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
