/* The interface of frame_reader.c. models/native_build.py declares the same to cffi, whose generated module
   includes this header: a declaration that drifts from it fails the package's build, not a run. */
#ifndef IPNET_FRAME_READER_H
#define IPNET_FRAME_READER_H

#include <stdint.h>

int64_t frame_observations_json(const char *body, int64_t len, int64_t cap, int64_t *id_at, int64_t *id_len,
                                double *t, double *xy, int8_t *kind);
int64_t frame_observations_msgpack(const char *body, int64_t len, int64_t cap, int64_t *id_at,
                                   int64_t *id_len, double *t, double *xy, int8_t *kind);

#endif
