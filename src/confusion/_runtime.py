"""Process set-up that makes small-model training fast and safe on a CPU.

Measured on the project machines (bench/train.py, PERF-NOTES.md): the memory allocator
decides a large share of CPU training time (glibc's malloc page-faults fresh activation
buffers; tcmalloc does not), one single-threaded process per member beats one process with
all threads, and bf16 autocast only pays where the CPU has bf16 instructions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from pathlib import Path

TCMALLOC_CANDIDATES = [
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
]


def tcmalloc_path() -> str | None:
    for candidate in TCMALLOC_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return None


def worker_environment(threads: int) -> dict[str, str]:
    """Environment for a spawned training process: tcmalloc preloaded, `threads` OpenMP threads."""
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    library = tcmalloc_path()
    if library and os.environ.get("CONFUSION_ALLOCATOR", "tcmalloc") == "tcmalloc":
        preload = os.environ.get("LD_PRELOAD", "")
        if library not in preload:
            env["LD_PRELOAD"] = f"{library}:{preload}" if preload else library
    else:
        # glibc fallback measured to remove most page faults: keep freed memory mapped.
        env.update(MALLOC_MMAP_THRESHOLD_="33554432", MALLOC_TRIM_THRESHOLD_="4294967296", MALLOC_TOP_PAD_="536870912")
    return env


def die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (kill -9 of the coordinator), and
    exit now if `parent` (the pid that started it) is gone already: a parent killed while this
    process was still starting (importing, unpickling its job) left it an orphan that the
    death signal, armed too late, would never reach."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        try:
            libc = ctypes.CDLL(libc_name, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # checked after arming: a parent dying in between is caught either way
        os._exit(1)


# oneDNN's instruction-set caps (ONEDNN_MAX_CPU_ISA) below which it has no bf16 arithmetic.
_ONEDNN_CAPS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_MIC", "AVX512_MIC_4OPS"}


def onednn_isa_cap() -> str | None:
    """The instruction set oneDNN (PyTorch's CPU convolutions) is capped at, when a user set one."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return cap.strip().upper() if cap and cap.strip() else None


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX) and oneDNN may use it;
    only then does bf16 pay."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and onednn_isa_cap() not in _ONEDNN_CAPS_WITHOUT_BF16


def cpu_description() -> str:
    """'2 CPUs (AMD EPYC; avx2, avx512f, avx512_bf16)': what every bench prints about its machine."""
    import platform

    try:
        info = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        info = ""
    model = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), platform.processor() or "unknown CPU"
    )
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    features = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "no AVX2"
    cap = onednn_isa_cap()
    capped = f"; oneDNN capped at {cap}" if cap else ""
    if os.environ.get("NUMBA_CPU_NAME"):  # the scoring kernels' target (bench/README.md)
        extra = "" if os.environ.get("NUMBA_CPU_FEATURES") else ", host features"
        capped += f"; numba targets {os.environ['NUMBA_CPU_NAME']}{extra}"
    return f"{os.cpu_count()} CPUs ({model}; {features}{capped})"
