"""IPNet's MTJ layer as one compiled pass (``mtj_kernel.c``), built by the system C compiler on first use.

The same builder (:class:`CSource`, :func:`build`, :func:`load_library`) serves the service's answer writer
(``service/points_json.c``, see ``service.jsontext``).

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

Each shared library is cached under ``IPNET_KERNEL_DIR`` (default ``$XDG_CACHE_HOME/ipnet-traj`` or
``~/.cache/ipnet-traj``), named by a hash of the source and the compiler flags, and written atomically, so
concurrent processes share one build. Without a compiler :func:`load` returns None and the caller keeps the
torch form (one warning in the log). Whether to use them is the caller's choice (``InferenceStep(use_native=)``,
the service's ``TRAJPRED_NATIVE_KERNEL``), not an environment switch of this module.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# -ffast-math lets gcc call libmvec's vector expf/exp2f/log1pf; it is given to the compile step only: linking
# a shared library with it would pull in crtfastmath.o, which sets flush-to-zero for the whole process.
# x86-64-v3 (AVX2 + FMA, servers since 2013) rather than -march=native: the same build is valid on every such
# machine (a Docker image built on one runs on another); :func:`_cpu_supported` checks before loading.
_X86_FLAGS = ("-march=x86-64-v3", "-mtune=generic")
#: the flags every C file of the project is compiled with (each source adds its own)
BASE_FLAGS = ("-O3", "-fPIC", "-std=c11")


@dataclass(frozen=True)
class CSource:
    """One C file of the project, built into its own shared library with its own flags."""

    path: Path
    flags: tuple[str, ...]  # compile step only
    needs_x86_64_v3: bool  # whether the flags target x86-64-v3 (then loading checks the CPU)

    def all_flags(self) -> list[str]:
        return list(self.flags) + (
            list(_X86_FLAGS) if self.needs_x86_64_v3 and platform.machine() in ("x86_64", "AMD64") else []
        )


MTJ = CSource(Path(__file__).with_name("mtj_kernel.c"), (*BASE_FLAGS, "-ffast-math"), needs_x86_64_v3=True)


class MTJParamsC(ctypes.Structure):
    """``mtj_params`` of ``mtj_kernel.c`` (same field order and types)."""

    _fields_ = [
        ("t0", ctypes.c_float),
        ("t_max", ctypes.c_float),
        ("c_ss", ctypes.c_float),
        ("a", ctypes.c_float),
        ("c_i", ctypes.c_float),
        ("bl", ctypes.c_float),
        ("log2_rate", ctypes.c_float),
        ("kz", ctypes.c_float),
        ("log2e", ctypes.c_float),
        ("ln_eps", ctypes.c_float),
        ("clamp", ctypes.c_int32),
    ]


def cache_dir() -> Path:
    """Where built kernels are kept (``IPNET_KERNEL_DIR``, else the user's cache directory)."""
    if env := os.environ.get("IPNET_KERNEL_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ipnet-traj"


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _cpu_supported() -> bool:
    """Whether this CPU runs the x86-64-v3 build (elsewhere the flags are the compiler's defaults)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return True
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return {"avx2", "fma", "bmi2", "movbe"} <= have


def library_path(directory: Path | None = None, source: CSource = MTJ) -> Path:
    """Where this source, built with these flags, is (or would be) cached."""
    key = hashlib.sha256(source.path.read_bytes() + b"\0" + " ".join(source.all_flags()).encode())
    return (directory or cache_dir()) / f"{source.path.stem}-{platform.machine()}-{key.hexdigest()[:16]}.so"


def build(directory: Path | None = None, source: CSource = MTJ) -> Path:
    """The built shared library's path, compiling it first if this source and these flags have none yet.

    A cached build needs no compiler (the Docker image's runtime stage has none: it copies the build stage's).

    Raises:
        RuntimeError: not built yet and no C compiler, or the compile failed (its output in the message).
    """
    target = library_path(directory, source)
    if target.is_file():
        return target
    cc = _compiler()
    if cc is None:
        raise RuntimeError("not built yet and no C compiler (cc or gcc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        obj, lib = Path(tmp) / "k.o", Path(tmp) / "k.so"
        for cmd in (
            [cc, *source.all_flags(), "-c", str(source.path), "-o", str(obj)],
            [cc, "-shared", str(obj), "-o", str(lib), "-lm"],
        ):
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            except OSError as exc:  # the compiler named by CC does not exist or cannot run
                raise RuntimeError(f"{cc}: {exc}") from exc
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-2000:]}")
        os.replace(lib, target)  # atomic: a concurrent builder's identical file is simply replaced
    return target


def load_library(source: CSource, what: str, fallback: str) -> ctypes.CDLL | None:
    """``source`` built (or its cached build) and loaded; None, with one warning naming ``what`` and the
    ``fallback`` used instead, when it cannot be (no compiler, a failed build, an unsupported CPU)."""
    if source.needs_x86_64_v3 and not _cpu_supported():
        log.warning("%s needs AVX2/FMA; using %s", what, fallback)
        return None
    try:
        return ctypes.CDLL(str(build(source=source)))
    except (RuntimeError, OSError) as exc:
        log.warning("%s is unavailable (%s); using %s", what, exc, fallback)
        return None


@functools.cache
def load() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """The compiled ``mtj_frame`` function, or None (no compiler, or an unsupported CPU)."""
    lib = load_library(MTJ, "IPNet's compiled MTJ kernel", "the torch form")
    if lib is None:
        return None
    fn = lib.mtj_frame
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [ptr, i64, i64, ptr, i64, ptr, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, ptr]
    fn.restype = None
    return fn
