"""The project's C code as cffi extension modules, compiled when the package is built (``setup.py``).

API mode: cffi generates a module that includes each C file's header and calls its functions with the
types declared below, so a declaration that drifts from the C (a parameter added, a type changed, a struct
field renamed) fails the build with the compiler's error, instead of a wrong call at run time; the struct's
layout (``...``) is the compiler's, not the declaration's order. Each module
carries its own flags:

- ``models._mtj_native``: IPNet's MTJ layer (``mtj_kernel.c``), with ``-ffast-math`` at the compile step
  only (linking a shared library with it would pull in crtfastmath.o, which sets flush-to-zero for the
  whole process) so that gcc calls glibc's vector math, and for x86-64-v3 (AVX2 + FMA, servers since
  2013) rather than ``-march=native``, so that one build is valid on every such machine (a Docker image
  built on one runs on another); :func:`models.native.cpu_supported` checks before the import.
- ``service._points_json_native``: the answer writer (``points_json.c``: JSON text and MessagePack), no
  ``-ffast-math``: its rounding must be numpy's (IEEE multiplication, rint).
- ``service._frame_reader_native``: the reader of a request's observations, JSON or MessagePack
  (``frame_reader.c``), no ``-ffast-math``: its numbers must be the correctly rounded ones any parser reads.

Not imported at run time (cffi's setuptools hook runs this file by path, from the project's root).
"""

from __future__ import annotations

import platform

from cffi import FFI

#: every C file of the project: optimised, C11, and a pointer or declaration mismatch is an error
BASE_FLAGS = [
    "-O3",
    "-std=c11",
    "-Werror=incompatible-pointer-types",
    "-Werror=implicit-function-declaration",
    "-Werror=int-conversion",
]
X86_64_V3 = ["-march=x86-64-v3", "-mtune=generic"] if platform.machine() in ("x86_64", "AMD64") else []

mtj_builder = FFI()
mtj_builder.cdef(
    """
    typedef struct {
        float t0, t_max, c_ss;
        float a, c_i, bl, log2_rate, kz, log2e;
        float ln_eps;
        int32_t clamp;
        ...;
    } mtj_params;
    void mtj_frame(const mtj_params *p, int64_t n_agents, int64_t n,
                   const float *pre, int64_t pre_stride,
                   const float *temp, int64_t temp_stride,
                   const float *decay, const float *heat,
                   const float *gamma, const float *beta,
                   float *temp_out,
                   float *p_out, float *sensed_out, int64_t out_stride,
                   float *drive_sq_sum);
    """
)
mtj_builder.set_source(
    "models._mtj_native",
    '#include "mtj_kernel.h"',
    sources=["models/mtj_kernel.c"],
    include_dirs=["models"],
    libraries=["m"],
    extra_compile_args=[*BASE_FLAGS, "-ffast-math", *X86_64_V3],
)

writer_builder = FFI()
writer_builder.cdef(
    """
    int64_t answer_json_rows(const double *t, const double *x, const double *y, const double *sx,
                             const double *sy, const int64_t *strides, int64_t a, int64_t k, int t_decimals,
                             int xy_decimals, int columns, int64_t group, const char *probs, int64_t probs_len,
                             const char *heads, const int64_t *head_ends, char *out, int64_t *ends,
                             int64_t *t_at, int64_t *t_len);
    int64_t msgpack_rows(const double *t, const double *x, const double *y, const double *sx, const double *sy,
                         const int64_t *strides, int64_t a, int64_t k, int columns, int xy_decimals,
                         int64_t group, const double *probs, const char *heads, const int64_t *head_ends,
                         char *out, int64_t *ends);
    int64_t json_rows_size(int64_t a, int64_t k, int64_t group, int64_t probs_len, int64_t heads_len);
    """
)
writer_builder.set_source(
    "service._points_json_native",
    '#include "points_json.h"',
    sources=["service/points_json.c"],
    include_dirs=["service"],
    libraries=["m"],
    extra_compile_args=BASE_FLAGS,
)

reader_builder = FFI()
reader_builder.cdef(
    """
    int64_t frame_observations_json(const char *body, int64_t len, int64_t cap, int64_t *id_at,
                                    int64_t *id_len, double *t, double *xy, int8_t *kind);
    int64_t frame_observations_msgpack(const char *body, int64_t len, int64_t cap, int64_t *id_at,
                                       int64_t *id_len, double *t, double *xy, int8_t *kind);
    """
)
reader_builder.set_source(
    "service._frame_reader_native",
    '#include "frame_reader.h"',
    sources=["service/frame_reader.c"],
    include_dirs=["service"],
    libraries=["m"],
    extra_compile_args=BASE_FLAGS,
)
