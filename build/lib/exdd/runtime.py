"""Process-wide settings that decide how fast torch and faiss run on a CPU.

They must take effect before torch or faiss start, so each entry point calls
:func:`configure` first (``exdd.cli.main``, the DAG's tasks, the pyfunc's ``load_context``,
``bench/``); ``import exdd`` alone changes nothing. Each one leaves a user's own choice (an
environment variable) alone.

- OpenMP waiting: torch and faiss each bring their own OpenMP runtime. With the default
  active waiting, the idle threads of one spin on the cores the other is computing on
  (predict ran at a third of its speed), so waiting is passive unless the user says otherwise.
- glibc malloc: by default glibc serves every block above a dynamic threshold (128 KiB to
  32 MiB) with a fresh ``mmap`` and gives it back on ``free``. A backbone forward allocates
  and frees its activation tensors (tens of MB each) on every batch, so every batch
  page-faults its activations in again: on the development machine half of the forward's
  CPU time was kernel page-fault handling (5.8 M faults per 520 images) and the backbone ran
  at a third of its speed. Keeping freed memory in the heap for reuse removes the faults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the reusable heap; larger ones (the bank builder's
# streaming buffer, allocated once) still get their own mapping. Lite0's expanded early
# activations are about 50 MB per batch of 8: at glibc's 32 MiB ceiling for its own dynamic
# threshold they kept faulting (predict with HNSW ran at 46 instead of 76 images/s).
MMAP_THRESHOLD_BYTES = 256 << 20
# Free memory at the top of the heap is returned to the system only beyond this much.
TRIM_THRESHOLD_BYTES = 512 << 20
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def configure_openmp() -> None:
    """Passive OpenMP waiting unless ``OMP_WAIT_POLICY`` is already set."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def configure_malloc() -> bool:
    """Keep freed blocks for reuse (glibc only); returns whether the settings were applied.

    Nothing is changed when the user tunes malloc through its environment variables, or on
    a C library that is not glibc.
    """
    if not sys.platform.startswith("linux") or any(v in os.environ for v in _MALLOC_ENV):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def configure() -> None:
    """Apply both settings; call before torch or faiss is imported."""
    configure_openmp()
    configure_malloc()
