/* The interface of points_json.c. models/native_build.py declares the same to cffi, whose generated module
   includes this header: a declaration that drifts from it fails the package's build, not a run. */
#ifndef IPNET_POINTS_JSON_H
#define IPNET_POINTS_JSON_H

#include <stdint.h>

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

#endif
