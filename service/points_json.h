/* The interface of points_json.c. models/native_build.py declares the same to cffi, whose generated module
   includes this header: a declaration that drifts from it fails the package's build, not a run. */
#ifndef IPNET_POINTS_JSON_H
#define IPNET_POINTS_JSON_H

#include <stdint.h>

int64_t points_json_rows(const double *t, const double *x, const double *y, const double *sx,
                         const double *sy, int64_t a, int64_t k, int t_decimals, int xy_decimals, char *out,
                         int64_t *ends, int64_t *t_at, int64_t *t_len);
int64_t columns_json_rows(const double *t, const double *x, const double *y, const double *sx,
                          const double *sy, int64_t a, int64_t k, int t_decimals, int xy_decimals, char *out,
                          int64_t *ends);
int64_t msgpack_rows(const double *t, const double *x, const double *y, const double *sx, const double *sy,
                     int64_t a, int64_t k, int columns, char *out, int64_t *ends);
int64_t points_json_max_point(void);

#endif
