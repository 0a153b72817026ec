"""Where a figure came from, and the CPU kernels that make LeTI's CPU runs the same on every x86 machine.

A run's ``config.json`` records ``machine_record()``: the CPU and the instruction sets torch may use, torch's
build (its BLAS and oneDNN), the kernel path and the thread count. A default model's record carries it too.

``portable_cpu_kernels()`` is what ``leti train`` sets before torch computes anything, unless told
``--cpu_kernels native``: ATen's vectorized kernels at their AVX2 width (``ATEN_CPU_CAPABILITY``) and MKL's
AVX2 code path in its conditional-numerical-reproducibility mode (``MKL_CBWR``). CPUs with and without
AVX-512 then compute LeTI's CPU runs the same way; ``benchmarks/reproducibility.py`` measures what differs
and what it costs.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

# The flags that choose a kernel path in torch, MKL, oneDNN or bitsandbytes (x86) and on Arm
KERNEL_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2", "bf16")
# ATEN_CPU_CAPABILITY and MKL_CBWR values of portable_cpu_kernels()
PORTABLE_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}


def cpu_description() -> tuple[str, list[str]]:
    """The CPU's model name and which of ``KERNEL_FLAGS`` it has (Linux's ``/proc/cpuinfo``; elsewhere what
    ``platform`` knows, and no flags)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "CPU part") and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags = set(value.split())
                    if model not in ("", platform.machine()):
                        break
    except OSError:
        pass
    return model, [f for f in KERNEL_FLAGS if f in flags]


def portable_cpu_kernels(environ: dict | None = None) -> dict[str, str]:
    """Set ``PORTABLE_KERNELS`` in ``environ`` (default ``os.environ``) where the CPU has AVX2 and the user has
    not set them; returns what was set. Must run before torch computes anything (both are read once).

    Why these two: torch's CPU kernels are chosen by instruction set (AVX2 or AVX-512 widths round sums and
    softmaxes differently) and MKL's matrix products by CPU as well; pinned to AVX2, which every x86 CPU of
    the last decade has, a run gives the same bits on CPUs with and without AVX-512 (measured in
    ``benchmarks/reproducibility.py``, with its cost)."""
    environ = os.environ if environ is None else environ
    if platform.machine().lower() not in ("x86_64", "amd64") or "avx2" not in cpu_description()[1]:
        return {}
    applied = {k: v for k, v in PORTABLE_KERNELS.items() if k not in environ}
    environ.update(applied)
    return applied


def requested_cpu_kernels(argv: list[str]) -> str:
    """``--cpu_kernels`` of a training command line (``leti train``'s flags), else from its ``--config`` YAML,
    else portable: read before the parser imports torch, since torch reads its kernel settings once. A
    training script of your own: ``if requested_cpu_kernels(sys.argv[1:]) == "portable":
    portable_cpu_kernels()`` before it imports torch (``examples/train_leti.py`` does)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--cpu_kernels="):
            return arg.split("=", 1)[1]
        if arg == "--cpu_kernels" and i + 1 < len(argv):
            return argv[i + 1]
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        try:
            import yaml

            with open(argv[argv.index("--config") + 1]) as f:
                recipe = yaml.safe_load(f)
            if isinstance(recipe, dict) and recipe.get("cpu_kernels"):
                return str(recipe["cpu_kernels"])
        except Exception:  # unreadable or not YAML: the parser reports it, with the fix
            pass
    return "portable"


def machine_record() -> dict[str, Any]:
    """The machine a run computed on, for its ``config.json``: a figure always says where it came from."""
    model, flags = cpu_description()
    record: dict[str, Any] = {
        "cpu": model, "cpu_flags": flags, "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(),
        "env": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                if k in os.environ},
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        config = torch.__config__.show()
        record["torch"] = {
            "version": torch.__version__, "cuda": torch.version.cuda,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "build": [line.strip(" -") for line in config.splitlines()
                      if any(k in line for k in ("Math Kernel Library", "MKL-DNN", "OpenMP", "BLAS_INFO"))
                      and "Build settings" not in line],
        }
    return record
