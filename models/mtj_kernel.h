/* The interface of mtj_kernel.c. models/native_build.py declares the same to cffi, whose generated module
   includes this header: a declaration that drifts from it fails the package's build, not a run. */
#ifndef IPNET_MTJ_KERNEL_H
#define IPNET_MTJ_KERNEL_H

#include <stdint.h>

typedef struct {
    float t0, t_max, c_ss;
    float a, c_i, bl, log2_rate, kz, log2e;
    float ln_eps;
    int32_t clamp;
} mtj_params;

void mtj_frame(const mtj_params *restrict p, int64_t n_agents, int64_t n,
               const float *restrict pre, int64_t pre_stride,
               const float *restrict temp, int64_t temp_stride,
               const float *restrict decay, const float *restrict heat,
               const float *restrict gamma, const float *restrict beta,
               float *restrict temp_out,
               float *restrict p_out, float *restrict sensed_out, int64_t out_stride,
               float *restrict drive_sq_sum);

#endif
