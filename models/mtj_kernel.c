/* One frame of a layer of MTJ neurons, everything after the drive's matrix products, in one pass.

   The same law as models/nets.py (MTJNeuronLayer.forward with FusedSwitching, then the readout's
   normalised temperatures of TrajectoryNet.update), written once more as a loop so that a compiler fuses the
   twenty-odd elementwise tensor passes into one: models/native.py loads it and says why; the tests hold it
   to the torch form. Built with -ffast-math, which lets the compiler call glibc's vector math (libmvec)
   for expf/exp2f/log1pf; every argument here is finite and bounded (temperatures in [T0, T_max]).
   Each transcendental has a loop of its own over a chunk of the row (kept in L1): fused into one loop body,
   the five vector calls, which clobber every vector register, ran at about half the speed (measured once,
   ad hoc, with a C harness timing this function alone; the issue 5 note has the figures).

   For each agent b and neuron j (row-major, N neurons per agent), after a cooling T = T0 + decay_b (T - T0)
   when ``decay`` is not NULL (a gap that outlasts the drive window):
     d    = sigmoid(pre)                                   drive voltage / v_max
     T'   = lerp(T, T0 + c_ss d^2, heat_b)                 relaxation towards the steady state
     m    = 1 - a T'^1.5,   m2 = m^2                        magnetisation (Callen-Callen, n = 2)
     bu   = log1p(2^(bl (1 - c_i d / m2)))                 softplus-clamped 1 - I/I_c0(T), times beta
     z2   = L + kz (m2 / T') bu^2                          log2 of t_sense / tau_sw
     P    = 1 - 2^(-log2(e) 2^z2)                          switching probability
   then per agent: the energy sum of d^2 and the layer norm of T' - T0 (eps already scaled). With ``p_out``
   NULL (a readout of the temperatures alone) the switching probabilities are not computed. */

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "mtj_kernel.h"

#define CHUNK 64

void mtj_frame(const mtj_params *restrict p, int64_t n_agents, int64_t n,
               const float *restrict pre, int64_t pre_stride,
               const float *restrict temp, int64_t temp_stride,
               const float *restrict decay, const float *restrict heat,
               const float *restrict gamma, const float *restrict beta,
               float *restrict temp_out,
               float *restrict p_out, float *restrict sensed_out, int64_t out_stride,
               float *restrict drive_sq_sum)
{
    const float t0 = p->t0, c_ss = p->c_ss, a = p->a, bl = p->bl, blc = p->bl * p->c_i;
    const float log2_rate = p->log2_rate, kz = p->kz, log2e = p->log2e;
    /* no clamp: bounds no temperature reaches, so one loop serves both */
    const float lo = p->clamp ? t0 : -FLT_MAX, hi = p->clamp ? p->t_max : FLT_MAX;
    float d[CHUNK], m2[CHUNK], w[CHUNK];
    for (int64_t b = 0; b < n_agents; b++) {
        const float *xr = pre + b * pre_stride;
        const float *tr = temp + b * temp_stride;
        float *tn = temp_out + b * n;
        float *po = p_out ? p_out + b * out_stride : NULL;
        float *so = sensed_out + b * out_stride;
        const float h = heat[b];
        const float dec = decay ? decay[b] : 1.0f; /* t0 + (t - t0) is t exactly for t in [t0/2, 2 t0] */
        float d2_sum = 0.0f, rise_sum = 0.0f;
        for (int64_t j0 = 0; j0 < n; j0 += CHUNK) {
            const int64_t k = n - j0 < CHUNK ? n - j0 : CHUNK;
            const float *x = xr + j0, *t = tr + j0;
            float *tt = tn + j0, *pp = po ? po + j0 : NULL;
            for (int64_t j = 0; j < k; j++) {
                const float xj = x[j] < -80.0f ? -80.0f : x[j]; /* expf(80) is still finite */
                d[j] = 1.0f / (1.0f + expf(-xj));
            }
            for (int64_t j = 0; j < k; j++) {
                const float d2 = d[j] * d[j];
                /* a gap longer than the drive window first cools without drive: T0 + decay (T - T0) */
                const float ts = t0 + (t[j] - t0) * dec;
                float tj = ts + h * ((t0 + c_ss * d2) - ts);
                tj = tj < lo ? lo : (tj > hi ? hi : tj);
                const float m = 1.0f - a * tj * sqrtf(tj);
                m2[j] = m * m;
                tt[j] = tj;
                d2_sum += d2;
                rise_sum += tj - t0;
            }
            if (!p_out) continue; /* a readout of the temperatures alone: no switching probabilities */
            for (int64_t j = 0; j < k; j++) w[j] = exp2f(bl - blc * d[j] / m2[j]);
            for (int64_t j = 0; j < k; j++) w[j] = log1pf(w[j]); /* beta u */
            for (int64_t j = 0; j < k; j++) w[j] = exp2f(log2_rate + kz * (m2[j] / tt[j]) * (w[j] * w[j]));
            for (int64_t j = 0; j < k; j++) pp[j] = 1.0f - exp2f(-log2e * w[j]);
        }
        drive_sq_sum[b] = d2_sum;
        /* the variance of the deviations from the mean (two passes, as torch), over the row still in L1 */
        const float mean = rise_sum / (float)n;
        float var = 0.0f;
        for (int64_t j = 0; j < n; j++) {
            const float dev = (tn[j] - t0) - mean;
            var += dev * dev;
        }
        const float inv = 1.0f / sqrtf(var / (float)n + p->ln_eps);
        for (int64_t j = 0; j < n; j++) so[j] = ((tn[j] - t0) - mean) * inv * gamma[j] + beta[j];
    }
}
