"""``ipnet serve``'s process tuning: glibc keeps large temporaries in its heap, the GC runs less often."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

import pytest
from pydantic import ValidationError

from service.process import tune_gc
from service.settings import Settings

# In a fresh interpreter (the allocator setting is process-wide): how many blocks glibc serves by mmap
# while a 16 MB numpy array is alive, with and without the tuning. 16 MB: far above any block freed during
# the imports, which could have raised glibc's dynamic mmap threshold, and below the tuned threshold (32 MB).
_PROBE = textwrap.dedent(
    """
    import ctypes, sys
    import numpy as np
    from service.process import tune_allocator

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
            "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    applied = tune_allocator(int(sys.argv[1]))
    before = libc.mallinfo2().hblks
    a = np.ones(2**21)  # 16 MB
    print(applied, libc.mallinfo2().hblks - before, float(a.sum()))
    """
)


def _probe(keep_mb: int) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(keep_mb)], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out[2] == str(float(2**21))
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_keeps_large_temporaries_in_the_heap():
    try:
        untuned = _probe(0)
    except subprocess.CalledProcessError as e:  # no mallinfo2 (glibc < 2.33, musl): nothing to observe
        pytest.skip(f"mallinfo2 unavailable: {e.stderr[-200:]}")
    assert untuned == (False, 1)  # glibc's default: a 16 MB block is a fresh mmap
    assert _probe(64) == (True, 0)  # tuned: served from the heap


def test_gc_threshold_is_set_and_zero_leaves_it():
    before = gc.get_threshold()
    try:
        assert tune_gc(0) == before
        assert tune_gc(20_000) == (20_000, *before[1:])
    finally:
        gc.set_threshold(*before)


@pytest.mark.parametrize("field,value", [("malloc_keep_mb", "-1"), ("gc_gen0_threshold", "-5")])
def test_invalid_process_settings_are_refused(monkeypatch: pytest.MonkeyPatch, field: str, value: str):
    monkeypatch.setenv(f"TRAJPRED_{field.upper()}", value)
    with pytest.raises(ValidationError):
        Settings()
