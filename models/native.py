"""IPNet's MTJ layer as one compiled pass (``mtj_kernel.c``), a C extension built with the package.

The package's build compiles it, and the service's answer writer (``service/points_json.c``, see
``service.jsontext``), with cffi (``models/native_build.py``): the C declarations are checked by the compiler
then, not at the first call. :func:`load_extension` is the one way both are loaded.

Why: after its two matrix products, the MTJ layer is about twenty elementwise tensor operations per frame
(sigmoid, relaxation, the switching law, the layer norm of the temperatures). Each is a full pass over the
``(agents, neurons)`` block and, at small batches, mostly dispatch: at one agent the layer cost about three
times the GRU's cell, which torch runs as one native operation. The loop in ``mtj_kernel.c`` does all of it
in one pass, vectorised by the compiler with glibc's vector math. ``tests/models/test_native.py`` holds it to
the torch form (``MTJNeuronLayer`` + ``TrajectoryNet.update``), which stays the definition: training,
gradients and any configuration the kernel does not cover use it.

Why not numba (used elsewhere here): its LLVM has no vector math library, and scalar ``exp``/``log1p`` ran
slower than torch's vectorised passes. Why not ``torch.utils.cpp_extension``: compiling against torch's
headers takes a minute; this file needs only ``math.h`` and builds in well under a second.

Without the extension (a source tree used without installing the package, a CPU without AVX2/FMA)
:func:`load` returns None and the caller keeps the torch form, with one warning in the log. Whether to use
them is the caller's choice (``InferenceStep(use_native=)``, the service's ``TRAJPRED_NATIVE_KERNEL``), not
an environment switch of this module.
"""

from __future__ import annotations

import functools
import importlib
import logging
import platform
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)


class Extension(NamedTuple):
    """A loaded cffi extension: ``ffi`` (types, casts) and ``lib`` (the C functions)."""

    ffi: Any
    lib: Any


def cpu_supported() -> bool:
    """Whether this CPU runs the x86-64-v3 build of the MTJ kernel (elsewhere it is built for the compiler's
    default target)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return True
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return {"avx2", "fma", "bmi2", "movbe"} <= have


def load_extension(module: str, what: str, fallback: str, needs_x86_64_v3: bool = False) -> Extension | None:
    """The extension ``module`` imported; None, with one warning naming ``what`` and the ``fallback`` used
    instead, when it is not built or this CPU cannot run it (checked before the import: its code is
    compiled for x86-64-v3 and would fault on an older CPU)."""
    if needs_x86_64_v3 and not cpu_supported():
        log.warning("%s needs AVX2/FMA; using %s", what, fallback)
        return None
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        log.warning("%s is not built (%s: install the package); using %s", what, exc, fallback)
        return None
    return Extension(mod.ffi, mod.lib)


@functools.cache
def load() -> Extension | None:
    """The compiled MTJ kernel (``lib.mtj_frame``), or None (not built, or an unsupported CPU)."""
    return load_extension("models._mtj_native", "IPNet's compiled MTJ kernel", "the torch form", True)
