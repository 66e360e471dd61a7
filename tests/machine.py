"""What a test run's numbers depend on: the CPU, TensorFlow's kernels, threads and the seed.

Printed in the pytest header (tests/conftest.py) and written into benchmark JSON, so a failure
or a timing from another machine says where it came from.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# CPU features that change which kernels TensorFlow/oneDNN run, and so the rounding of training.
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """'<model name>, <n> cores, <vector flags>' from /proc/cpuinfo, or the platform's name."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    present = [flag for flag in VECTOR_FLAGS if flag in flags] or ["no AVX2"]
    model = fields.get("model name", platform.machine())
    return f"{model}, {os.cpu_count()} cores, {' '.join(present)}"


def tensorflow_description() -> str:
    """TensorFlow's version and the kernel switches in force (oneDNN, XLA, CUDA)."""
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port as port

    switch = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")
    onednn = "on" if port.IsMklEnabled() else "off"
    cuda = "CUDA build" if tf.sysconfig.get_build_info().get("is_cuda_build") else "CPU build"
    xla = "XLA" if port.IsBuiltWithXLA() else "no XLA"
    build = f"TensorFlow {tf.__version__} ({cuda}, {xla})"
    return f"{build}, oneDNN {onednn} (TF_ENABLE_ONEDNN_OPTS={switch})"


def threads_description() -> str:
    values = [f"{name}={os.environ.get(name, 'default')}" for name in THREAD_VARIABLES]
    return " ".join(values)


def machine_summary() -> list[str]:
    from tests.tiny_translator import session_seed

    return [
        f"cpu: {cpu_description()}",
        f"kernels: {tensorflow_description()}",
        f"threads: {threads_description()}",
        f"seed: MT_TEST_SEED={session_seed()} (initialisation of every model the tests train)",
    ]
