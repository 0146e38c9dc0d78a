/* The trajectories of an answer, every row in one pass: as JSON text, the points layout (a list of
   {"timestamp", "x", "y"}, and "std_x", "std_y" when given) or the columns layout (a dict of lists), and as
   MessagePack of the same objects.

   service/jsontext.py calls it and says why (through cffi: the package's build compiles it, see
   models/native_build.py); the tests hold it to orjson's and msgpack's bytes (tests/service/test_jsontext.py,
   test_stream.py, test_answers.py). No -ffast-math here: the exactness checks below need IEEE division and
   round-to-nearest-even rint, as numpy's round gives them. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "points_json.h"

static const char PAIRS[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static const char HEAD[] = "{\"timestamp\":";
static const char X_KEY[] = ",\"x\":";
static const char Y_KEY[] = ",\"y\":";
static const char SX_KEY[] = ",\"std_x\":";
static const char SY_KEY[] = ",\"std_y\":";
#define MAX_SCALED 2251799813685248.0 /* 2**51: below it, rint(v * 10**d) is the integer np.round divided */

/* n as exactly `width` decimal digits (zero-padded) ending at p + width, two at a time. */
static inline void digits(uint64_t n, int width, char *p) {
    char *e = p + width;
    while (width >= 2) {
        uint64_t q = n / 100;
        unsigned r = (unsigned)(n - q * 100) * 2;
        e[-2] = PAIRS[r];
        e[-1] = PAIRS[r + 1];
        n = q;
        e -= 2;
        width -= 2;
    }
    if (width) e[-1] = (char)('0' + n);
}

static inline int width_of(uint64_t n) {
    int w = 1;
    for (uint64_t p = 10; w < 20 && n >= p; p *= 10) w++;
    return w;
}

/* v as orjson writes it, at p: the end, or NULL outside the range where that text is this one: not finite,
   2**51 or more once scaled, not rounded to `decimals`, or small enough for orjson's exponent notation. */
static inline char *number(double v, int decimals, double scale, uint64_t iscale, char *p) {
    double av = fabs(v);
    double a = av * scale;
    if (!(a < MAX_SCALED)) return NULL; /* also NaN */
    double af = rint(a);
    if (af / scale != av) return NULL; /* orjson's shortest text would be longer */
    if (af > 0.0 && af < scale * 1e-5) return NULL;
    if (signbit(v)) *p++ = '-'; /* -0.0 too: orjson writes "-0.0" */
    /* av is af / scale exactly, and af / scale is at least 1 / scale from the next integer (af < 2**51),
       far above the quotient's rounding error: its floor is the integer part */
    uint64_t whole = (uint64_t)av;
    uint64_t frac = (uint64_t)af - whole * iscale;
    int w = width_of(whole);
    digits(whole, w, p);
    p += w;
    *p++ = '.';
    digits(frac, decimals, p);
    int keep = decimals; /* without trailing zeros, at least one decimal */
    while (keep > 1 && p[keep - 1] == '0') keep--;
    return p + keep;
}

static inline char *put(char *p, const char *text, size_t n) {
    memcpy(p, text, n);
    return p + n;
}

/* Rows of t, x, y ((a, k) row-major float64) back to back in out, row i ending at ends[i]; the length,
   or -1. sx and sy (the same shape, rounded like x and y) are written as "std_x" and "std_y" after them, or
   left out when NULL. out holds a * (k * points_json_max_point() + 2) bytes; t_at and t_len k int64 each
   (scratch).
   A frame's agents mostly share their timestamps: one equal to the one above it in the previous row is
   copied from that row's text. */
int64_t points_json_rows(const double *t, const double *x, const double *y, const double *sx,
                         const double *sy, int64_t a, int64_t k, int t_decimals, int xy_decimals, char *out,
                         int64_t *ends, int64_t *t_at, int64_t *t_len) {
    if (t_decimals < 1 || t_decimals > 16 || xy_decimals < 1 || xy_decimals > 16) return -1;
    double t_scale = 1.0, xy_scale = 1.0;
    uint64_t t_iscale = 1, xy_iscale = 1;
    for (int i = 0; i < t_decimals; i++) t_scale *= 10.0, t_iscale *= 10;
    for (int i = 0; i < xy_decimals; i++) xy_scale *= 10.0, xy_iscale *= 10;
    char *p = out;
    for (int64_t i = 0; i < a; i++) {
        *p++ = '[';
        for (int64_t j = 0; j < k; j++) {
            int64_t at = i * k + j;
            if (j) *p++ = ',';
            p = put(p, HEAD, sizeof HEAD - 1);
            if (i && t[at] == t[at - k]) {
                memcpy(p, out + t_at[j], (size_t)t_len[j]);
                t_at[j] = p - out;
                p += t_len[j];
            } else {
                char *end = number(t[at], t_decimals, t_scale, t_iscale, p);
                if (!end) return -1;
                t_at[j] = p - out;
                t_len[j] = end - p;
                p = end;
            }
            p = put(p, X_KEY, sizeof X_KEY - 1);
            if (!(p = number(x[at], xy_decimals, xy_scale, xy_iscale, p))) return -1;
            p = put(p, Y_KEY, sizeof Y_KEY - 1);
            if (!(p = number(y[at], xy_decimals, xy_scale, xy_iscale, p))) return -1;
            if (sx && sy) {
                p = put(p, SX_KEY, sizeof SX_KEY - 1);
                if (!(p = number(sx[at], xy_decimals, xy_scale, xy_iscale, p))) return -1;
                p = put(p, SY_KEY, sizeof SY_KEY - 1);
                if (!(p = number(sy[at], xy_decimals, xy_scale, xy_iscale, p))) return -1;
            }
            *p++ = '}';
        }
        *p++ = ']';
        ends[i] = p - out;
    }
    return p - out;
}

static const char *const COLUMN_KEYS[5] = {"{\"timestamp\":[", "],\"x\":[", "],\"y\":[", "],\"std_x\":[",
                                           "],\"std_y\":["};

/* The columns layout: row i as {"timestamp": [...], "x": [...], "y": [...]} (and "std_x", "std_y" when sx
   and sy are given), rows back to back in out as points_json_rows writes them; the length, or -1. out holds
   a * (k * points_json_max_point() + 64) bytes (a row's keys and brackets are 52 at most). */
int64_t columns_json_rows(const double *t, const double *x, const double *y, const double *sx,
                          const double *sy, int64_t a, int64_t k, int t_decimals, int xy_decimals, char *out,
                          int64_t *ends) {
    if (t_decimals < 1 || t_decimals > 16 || xy_decimals < 1 || xy_decimals > 16) return -1;
    double t_scale = 1.0, xy_scale = 1.0;
    uint64_t t_iscale = 1, xy_iscale = 1;
    for (int i = 0; i < t_decimals; i++) t_scale *= 10.0, t_iscale *= 10;
    for (int i = 0; i < xy_decimals; i++) xy_scale *= 10.0, xy_iscale *= 10;
    const double *cols[5] = {t, x, y, sx, sy};
    size_t key_len[5];
    for (int j = 0; j < 5; j++) key_len[j] = strlen(COLUMN_KEYS[j]);
    int c = (sx && sy) ? 5 : 3;
    char *p = out;
    for (int64_t i = 0; i < a; i++) {
        for (int j = 0; j < c; j++) {
            p = put(p, COLUMN_KEYS[j], key_len[j]);
            const double *v = cols[j] + i * k;
            double scale = j ? xy_scale : t_scale;
            uint64_t iscale = j ? xy_iscale : t_iscale;
            int decimals = j ? xy_decimals : t_decimals;
            for (int64_t q = 0; q < k; q++) {
                if (q) *p++ = ',';
                if (!(p = number(v[q], decimals, scale, iscale, p))) return -1;
            }
        }
        *p++ = ']';
        *p++ = '}';
        ends[i] = p - out;
    }
    return p - out;
}

static const char MP_KEYS[5][10] = {"\xa9timestamp", "\xa1x", "\xa1y", "\xa5std_x", "\xa5std_y"};
static const int MP_KEY_LEN[5] = {10, 2, 2, 6, 6};

/* v as a MessagePack float 64: 0xcb and its bits big-endian (what msgpack writes for every Python float). */
static inline char *mp_float(double v, char *p) {
    uint64_t u;
    memcpy(&u, &v, 8);
    u = __builtin_bswap64(u);
    *p++ = (char)0xcb;
    memcpy(p, &u, 8);
    return p + 8;
}

static inline char *mp_array(int64_t n, char *p) {
    if (n < 16) {
        *p++ = (char)(0x90 | n);
    } else if (n < 65536) {
        *p++ = (char)0xdc;
        *p++ = (char)(n >> 8);
        *p++ = (char)n;
    } else {
        *p++ = (char)0xdd;
        for (int s = 24; s >= 0; s -= 8) *p++ = (char)(n >> s);
    }
    return p;
}

/* MessagePack of the rows as msgpack packs the JSON objects: the points layout (columns == 0) or the
   columns layout, rows back to back in out, row i ending at ends[i]; the length. Every double is written
   (NaN and infinities too: MessagePack has them). out holds a * (k * points_json_max_point() + 64) bytes. */
int64_t msgpack_rows(const double *t, const double *x, const double *y, const double *sx, const double *sy,
                     int64_t a, int64_t k, int columns, char *out, int64_t *ends) {
    const double *cols[5] = {t, x, y, sx, sy};
    int c = (sx && sy) ? 5 : 3;
    char *p = out;
    for (int64_t i = 0; i < a; i++) {
        if (columns) {
            *p++ = (char)(0x80 | c);
            for (int j = 0; j < c; j++) {
                p = put(p, MP_KEYS[j], (size_t)MP_KEY_LEN[j]);
                p = mp_array(k, p);
                const double *v = cols[j] + i * k;
                for (int64_t q = 0; q < k; q++) p = mp_float(v[q], p);
            }
        } else {
            p = mp_array(k, p);
            for (int64_t q = 0; q < k; q++) {
                *p++ = (char)(0x80 | c);
                for (int j = 0; j < c; j++) {
                    p = put(p, MP_KEYS[j], (size_t)MP_KEY_LEN[j]);
                    p = mp_float(cols[j][i * k + q], p);
                }
            }
        }
        ends[i] = p - out;
    }
    return p - out;
}

/* Bytes one point takes at most: keys, braces, a comma, and five numbers of sign, 20 integer digits, a
   point and 16 decimals. */
int64_t points_json_max_point(void) {
    return (int64_t)(sizeof HEAD - 1 + sizeof X_KEY - 1 + sizeof Y_KEY - 1 + sizeof SX_KEY - 1 +
                     sizeof SY_KEY - 1 + 2 + 5 * (1 + 20 + 1 + 16));
}
