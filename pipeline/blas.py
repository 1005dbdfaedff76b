"""Which BLAS kernels NumPy runs here, and one warning when they are the slow generic ones.

An OpenBLAS older than the CPU does not recognise it and falls back to generic kernels
(``Prescott``, ``Core2``…): a float64 matmul then runs about 8x slower. Benchmarks print
``describe()``; training calls ``warn_if_generic()`` once at its start.
"""

from __future__ import annotations

import functools
import logging
import platform
from importlib import metadata

log = logging.getLogger(__name__)
GENERIC = {"prescott", "core2", "atom", "generic", "katmai", "coppermine", "northwood", "banias", "penryn", "dunnington",
           "nehalem"}


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def blas_info() -> list[dict]:
    """threadpoolctl's view of the BLAS libraries loaded in this process (import numpy first)."""
    from threadpoolctl import threadpool_info

    return [i for i in threadpool_info() if i.get("user_api") == "blas"]


def describe() -> str:
    """One line for benchmark output: Python, NumPy and BLAS versions and kernels, CPU features."""
    import numpy

    libs = ", ".join(f"{i['internal_api']} {i.get('version')} ({i.get('architecture')}, {i.get('num_threads')} threads, "
                     f"{i['filepath'].split('/site-packages/')[-1]})" for i in blas_info())
    flags = cpu_flags()
    simd = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "no avx2"
    extra = []
    for name in ("mindspore", "mindquantum", "torch", "pyarrow"):
        try:
            extra.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return (f"python {platform.python_version()}, numpy {numpy.__version__}, {', '.join(extra)}; BLAS: {libs or 'none'}; "
            f"CPU: {platform.machine()} {simd}{' amx' if 'amx_bf16' in flags else ''}")


@functools.cache
def warn_if_generic() -> bool:
    """Log one warning if NumPy's OpenBLAS runs generic kernels on a CPU with AVX2/AVX-512; True when it does."""
    import numpy  # noqa: F401  (loads the BLAS so threadpoolctl sees it)

    flags = cpu_flags()
    if not flags & {"avx2", "avx512f"}:
        return False
    slow = [i for i in blas_info() if i["internal_api"] == "openblas" and str(i.get("architecture")).lower() in GENERIC]
    for i in slow[:1]:
        core = "SkylakeX" if "avx512f" in flags else "Haswell"
        log.warning("NumPy's OpenBLAS %s does not recognise this CPU and runs its generic %s kernels (about 8x slower "
                    "matmul); set OPENBLAS_CORETYPE=%s before starting, or install NumPy 2.4 or newer.",
                    i.get("version"), i.get("architecture"), core)
    return bool(slow)
