"""Process-wide tuning of ``ipnet serve``: the C allocator and the garbage collector.

Both are settings of the process, not of an app, so ``ipnet serve`` applies them once before it starts
uvicorn (tests that build many apps in one process are left alone).

- **Allocator.** A 1,000-agent frame works on numpy and torch temporaries of a few hundred KB each. glibc
  serves blocks that large from fresh ``mmap`` pages and gives them back on ``free``, so every such
  temporary page-faults anew; in this VM a page fault is expensive. Ad hoc on this machine, ``np.floor(d.copy())``
  of a 1.2 MB array took 1.1 ms with glibc's defaults and 0.06 ms with the options below. Raising the mmap
  threshold and keeping freed memory in the heap (trim threshold, top pad) makes such temporaries reuse
  warm pages. The cost is resident memory that is not returned to the system: at most ``keep_mb``
  of slack (``TRAJPRED_MALLOC_KEEP_MB``; 0 leaves glibc's defaults).
- **Garbage collector.** A frame allocates thousands of small container objects (observations, tuples,
  dicts) that die young, which with Python's default threshold of 700 allocations triggers a dozen
  young-generation collections per 1,000-agent request. A higher first threshold collects less often,
  over the same objects (``TRAJPRED_GC_GEN0_THRESHOLD``; 0 leaves Python's default).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys

log = logging.getLogger("service.process")

# mallopt(3) parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's upper bound on 64-bit (HEAP_MAX_SIZE / 2)


def tune_allocator(keep_mb: int) -> bool:
    """Keep up to ``keep_mb`` MB of freed memory in glibc's heap; False where there is no glibc ``mallopt``."""
    if keep_mb <= 0:
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, nothing to tune
        return False
    keep = keep_mb * 2**20
    ok = (
        mallopt(_M_MMAP_THRESHOLD, min(keep, _MMAP_THRESHOLD_MAX)) == 1
        and mallopt(_M_TRIM_THRESHOLD, 2 * keep) == 1
        and mallopt(_M_TOP_PAD, keep) == 1
    )
    if not ok:
        log.warning("mallopt refused the allocator settings; glibc defaults stay")
    return bool(ok)


def tune_gc(gen0_threshold: int) -> tuple[int, int, int]:
    """Set the garbage collector's first threshold (0: unchanged); returns the thresholds in force."""
    if gen0_threshold > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)
    return gc.get_threshold()
