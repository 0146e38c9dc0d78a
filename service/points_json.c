/* The trajectories of an answer, every row in one pass: as JSON text, the points layout (a list of
   {"timestamp", "x", "y"}, and "std_x", "std_y" when given) or the columns layout (a dict of lists), with
   each agent's modes and their probabilities when asked, and as MessagePack of the same objects.

   service/jsontext.py calls it and says why (through cffi: the package's build compiles it, see
   models/native_build.py); the tests hold it to orjson's and msgpack's bytes (tests/service/test_jsontext.py,
   test_stream.py, test_answers.py). No -ffast-math here: the rounding below must be numpy's, IEEE
   multiplication and round-to-nearest-even rint. */
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
/* the writer is one loop per layout: every helper inlined in it (gcc left some out once the loops were
   several) */
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define MAX_SCALED 2251799813685248.0 /* 2**51: below it, rint(v * 10**d) is the integer np.round divided */

/* n as exactly `width` decimal digits (zero-padded) ending at p + width, two at a time. */
ALWAYS_INLINE void digits(uint64_t n, int width, char *p) {
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

ALWAYS_INLINE int width_of(uint64_t n) {
    int w = 1;
    for (uint64_t p = 10; w < 20 && n >= p; p *= 10) w++;
    return w;
}

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the integer parts are assembled in registers for a little-endian store (x86-64, arm64)"
#endif

ALWAYS_INLINE uint64_t pair(uint32_t n) { /* n < 100 as two ASCII digits, the first in the low byte */
    uint16_t d;
    memcpy(&d, PAIRS + 2 * n, 2);
    return d;
}

/* An integer part of 5 to 8 digits at p: its 8 digits (zero-padded) assembled in a register, shifted so
   that the first significant one is in the low byte, and stored by one 8-byte move (up to 3 bytes past
   the digits, which the text after them overwrites: the buffer is sized for the longest number, see
   json_rows_size). */
ALWAYS_INLINE char *whole8(uint32_t n, char *p) {
    uint32_t hi = n / 10000, lo = n - hi * 10000;
    uint64_t u = pair(hi / 100) | pair(hi % 100) << 16 | pair(lo / 100) << 32 | pair(lo % 100) << 48;
    int w = 5 + (n >= 100000) + (n >= 1000000) + (n >= 10000000);
    u >>= 8 * (8 - w);
    memcpy(p, &u, 8);
    return p + w;
}

/* Four decimals (0 <= n < 10**4) at p without their trailing zeros (one kept): the end. The four digits
   are computed side by side in one register (two 16-bit lanes of n / 100 and n % 100, then the tens and
   ones of each in bytes), stored by one 4-byte move, and the trailing zeros counted from the register's
   zero bytes, not by a loop over the text: the positions' and deviations' decimals, the most numbers of
   an answer (100 agents with six futures and deviations: 0.59 -> 0.53 ms). */
ALWAYS_INLINE char *frac4(uint32_t n, char *p) {
    uint32_t hi = (n * 5243) >> 19; /* n / 100 for n < 43,699 */
    uint32_t v = hi | (n - hi * 100) << 16;
    uint32_t tens = ((v * 103) >> 10) & 0x000F000F; /* each lane / 10, lanes below 100 */
    v = tens | (v - tens * 10) << 8;                /* the digits in bytes, the first in the low byte */
    uint32_t text = v | 0x30303030u;
    memcpy(p, &text, 4);
    /* the digits after the last non-zero one are zero bytes at the top; at least one digit stays */
    int keep = v ? 4 - (__builtin_clz(v) >> 3) : 1;
    return p + keep;
}

/* np.round(v, decimals) as orjson writes it, at p: the end, or NULL outside the range where that text is
   this one: not finite, 2**51 or more once scaled, or small enough (not zero) for orjson's exponent notation.
   The rounding is numpy's (multiply by 10**decimals, rint, divide), written as the decimal n / 10**decimals,
   trailing zeros dropped (one kept after the point). That decimal is orjson's shortest text of the quotient:
   the quotient is the double nearest to it, and below 2**51 a double's rounding interval is narrower than
   10**-decimals, so no other decimal of as many digits or fewer reads back as it. Values already rounded
   come out as they are (rounding them again gives the same n). Decimals are a compile-time constant in the
   rows' loops below, so the divisions by 10**decimals are multiplications and the decimals' loops unroll.
   The integer part takes a way by its number of digits, each without a loop (a digit loop's branches,
   and a stack buffer read back as a whole, cost more than the rest of the number). A 100-agent answer
   with six futures and deviations (18,000 points): 0.73 -> 0.52 ms with positions within 100 m of the
   origin, 0.84 -> 0.59 ms within a city's frame (thousands of metres). */
ALWAYS_INLINE char *number(double v, const int decimals, char *p) {
    double scale = 1.0;
    uint64_t iscale = 1;
    for (int i = 0; i < decimals; i++) scale *= 10.0, iscale *= 10;
    double a = rint(fabs(v) * scale); /* |np.round(v)| * scale: multiply and rint are symmetric in sign */
    if (!(a < MAX_SCALED)) return NULL; /* also NaN */
    if (a > 0.0 && a < scale * 1e-5) return NULL;
    *p = '-';
    p += signbit(v) != 0; /* -0.0 too (and v that rounds to it): orjson writes "-0.0" */
    uint64_t n = (uint64_t)a;
    uint64_t whole = n / iscale;
    uint64_t frac = n - whole * iscale;
    if (whole < 100) { /* most positions near an agent, and every deviation */
        int two = whole >= 10;
        memcpy(p, PAIRS + 2 * whole + 1 - two, 2);
        p += 1 + two;
    } else if (whole < 10000) { /* positions in a city's frame */
        uint32_t n4 = (uint32_t)whole;
        uint32_t u = (uint32_t)(pair(n4 / 100) | pair(n4 % 100) << 16);
        int w = 3 + (n4 >= 1000);
        u >>= 8 * (4 - w);
        memcpy(p, &u, 4);
        p += w;
    } else if (whole < 100000000) { /* a timestamp in seconds has 10: the way below */
        p = whole8((uint32_t)whole, p);
    } else {
        int w = width_of(whole);
        digits(whole, w, p);
        p += w;
    }
    *p++ = '.';
    if (decimals == 4) return frac4((uint32_t)frac, p);
    digits(frac, decimals, p);
    /* without trailing zeros, at least one decimal: each further zero from the end drops one more */
    int keep = decimals, zeros = 1;
    for (int i = decimals - 1; i > 0; i--) {
        zeros &= p[i] == '0';
        keep -= zeros;
    }
    return p + keep;
}

/* 32 bytes from src to dst, which may overlap: loaded whole, then stored (inlined as vector moves) */
ALWAYS_INLINE void move32(char *dst, const char *src) {
    char tmp[32];
    memcpy(tmp, src, 32);
    memcpy(dst, tmp, 32);
}

ALWAYS_INLINE char *put(char *p, const char *text, size_t n) {
    memcpy(p, text, n);
    return p + n;
}

/* Row i of (a, k) in the points layout at p: the end, or NULL. A frame's agents mostly share their
   timestamps: one equal to the one above it in the previous row is copied from that row's text (t_at and
   t_len: where the previous row wrote each, and its length). */
ALWAYS_INLINE char *points_row(const double *t, const double *x, const double *y, const double *sx,
                               const double *sy, const int64_t *s, int64_t i, int64_t k, const int t_decimals,
                               const int xy_decimals, char *out, char *p, int64_t *t_at, int64_t *t_len) {
    /* this row's values and their point strides, as locals: the text's stores cannot alias them */
    /* (tb: the previous row's times; the first row has none, and compares with no row) */
    const double *tr = t + i * s[0], *tb = i ? tr - s[0] : tr, *xr = x + i * s[2], *yr = y + i * s[4];
    const int64_t tp = s[1], xp = s[3], yp = s[5];
    const double *sxr = sx ? sx + i * s[6] : NULL, *syr = sy ? sy + i * s[8] : NULL;
    const int64_t sxp = s[7], syp = s[9];
    *p++ = '[';
    for (int64_t j = 0; j < k; j++) {
        if (j) *p++ = ',';
        p = put(p, HEAD, sizeof HEAD - 1);
        if (i && tr[j * tp] == tb[j * tp]) {
            /* a fixed-size move: what it writes past the timestamp the text after it overwrites. Both
               halves are loaded before either is stored (a row of one short point is nearer than 32
               bytes); a memmove here stayed a call into libc per point (objdump): 0.65 -> 0.59 ms for a
               100-agent answer with six futures and deviations */
            if (t_len[j] <= 32)
                move32(p, out + t_at[j]);
            else
                memcpy(p, out + t_at[j], (size_t)t_len[j]);
            t_at[j] = p - out;
            p += t_len[j];
        } else {
            char *end = number(tr[j * tp], t_decimals, p);
            if (!end) return NULL;
            t_at[j] = p - out;
            t_len[j] = end - p;
            p = end;
        }
        p = put(p, X_KEY, sizeof X_KEY - 1);
        if (!(p = number(xr[j * xp], xy_decimals, p))) return NULL;
        p = put(p, Y_KEY, sizeof Y_KEY - 1);
        if (!(p = number(yr[j * yp], xy_decimals, p))) return NULL;
        if (sxr && syr) {
            p = put(p, SX_KEY, sizeof SX_KEY - 1);
            if (!(p = number(sxr[j * sxp], xy_decimals, p))) return NULL;
            p = put(p, SY_KEY, sizeof SY_KEY - 1);
            if (!(p = number(syr[j * syp], xy_decimals, p))) return NULL;
        }
        *p++ = '}';
    }
    *p++ = ']';
    return p;
}

static const char *const COLUMN_KEYS[5] = {"{\"timestamp\":[", "],\"x\":[", "],\"y\":[", "],\"std_x\":[",
                                           "],\"std_y\":["};
static const size_t COLUMN_KEY_LEN[5] = {14, 7, 7, 11, 11};

/* Row i of (a, k) in the columns layout at p: the end, or NULL. */
ALWAYS_INLINE char *columns_row(const double *t, const double *x, const double *y, const double *sx,
                                const double *sy, const int64_t *s, int64_t i, int64_t k,
                                const int t_decimals, const int xy_decimals, char *p) {
    const double *cols[5] = {t, x, y, sx, sy};
    int c = (sx && sy) ? 5 : 3;
    for (int j = 0; j < c; j++) {
        p = put(p, COLUMN_KEYS[j], COLUMN_KEY_LEN[j]);
        const double *v = cols[j] + i * s[2 * j];
        const int64_t step = s[2 * j + 1];
        for (int64_t q = 0; q < k; q++) {
            if (q) *p++ = ',';
            p = j ? number(v[q * step], xy_decimals, p) : number(v[q * step], t_decimals, p);
            if (!p) return NULL;
        }
    }
    *p++ = ']';
    *p++ = '}';
    return p;
}

static const char TRAJECTORY_KEY[] = ",\"trajectory\":";
static const char MODES_KEY[] = ",\"modes\":[";
static const char PROBABILITY_KEY[] = "{\"probability\":";

/* Answer u's fields before its trajectory (heads[head_ends[u - 1]:head_ends[u]], from 0 for the first),
   after a comma from the answer before it. */
ALWAYS_INLINE char *json_head(const char *heads, const int64_t *head_ends, int64_t u, char *p) {
    int64_t start = u ? head_ends[u - 1] : 0;
    if (u) *p++ = ',';
    return put(p, heads + start, (size_t)(head_ends[u] - start));
}

ALWAYS_INLINE int64_t json_rows(const double *t, const double *x, const double *y, const double *sx,
                                const double *sy, const int64_t *s, int64_t a, int64_t k,
                                const int t_decimals, const int xy_decimals, int columns, int64_t group,
                                const char *probs, int64_t probs_len, const char *heads,
                                const int64_t *head_ends, char *out, int64_t *ends, int64_t *t_at,
                                int64_t *t_len) {
#define ROW(i)                                                                                               \
    (columns ? columns_row(t, x, y, sx, sy, s, (i), k, t_decimals, xy_decimals, p)                          \
             : points_row(t, x, y, sx, sy, s, (i), k, t_decimals, xy_decimals, out, p, t_at, t_len))
    char *p = out;
    if (group <= 0) {
        for (int64_t i = 0; i < a; i++) {
            if (heads) {
                p = json_head(heads, head_ends, i, p);
                p = put(p, TRAJECTORY_KEY, sizeof TRAJECTORY_KEY - 1);
            }
            if (!(p = ROW(i))) return -1;
            if (heads) *p++ = '}';
            ends[i] = p - out;
        }
        return p - out;
    }
    const char *prob = probs, *probs_end = probs + probs_len;
    for (int64_t g = 0; g * group < a; g++) {
        if (heads) p = json_head(heads, head_ends, g, p);
        p = put(p, TRAJECTORY_KEY, sizeof TRAJECTORY_KEY - 1);
        char *first = p;
        if (!(p = ROW(g * group))) return -1;
        size_t first_len = (size_t)(p - first);
        p = put(p, MODES_KEY, sizeof MODES_KEY - 1);
        for (int64_t j = 0; j < group; j++) {
            if (j) *p++ = ',';
            p = put(p, PROBABILITY_KEY, sizeof PROBABILITY_KEY - 1);
            const char *comma = memchr(prob, ',', (size_t)(probs_end - prob));
            const char *stop = comma ? comma : probs_end;
            if (stop == prob) return -1; /* fewer probabilities than rows */
            p = put(p, prob, (size_t)(stop - prob));
            prob = comma ? comma + 1 : probs_end;
            p = put(p, TRAJECTORY_KEY, sizeof TRAJECTORY_KEY - 1);
            if (j == 0) {
                p = put(p, first, first_len);
            } else if (!(p = ROW(g * group + j))) {
                return -1;
            }
            *p++ = '}';
        }
        *p++ = ']';
        if (heads) *p++ = '}';
        ends[g] = p - out;
    }
    return p - out;
#undef ROW
}

/* Rows of t, x, y ((a, k) float64 each) back to back in out: in the points layout (columns == 0, a list
   of {"timestamp", "x", "y"}) or the columns layout (a dict of lists); the length, or -1. Each value is
   written as np.round(value, decimals) (t_decimals for t, xy_decimals for the rest). sx and sy (the same
   shape) are written as "std_x" and "std_y" after them, or left out when NULL. Value (i, q) of column c
   (t, x, y, sx, sy) is at c[i * strides[2c] + q * strides[2c + 1]] (in doubles): x and y can be the two
   components of one (a, k, 2) array, and the served horizons a leading slice of longer rows, with no copy.

   Without groups (group == 0) row i ends at ends[i]. With groups, rows are taken `group` at a time as one
   agent's futures, most probable first, and each group is written as
   ,"trajectory":<first row>,"modes":[{"probability":<p>,"trajectory":<row>},...] ending at ends[g]:
   `probs` holds the probabilities' JSON text, one per row, separated by commas (probs_len bytes).

   With heads (not NULL), each row (or group) is one whole answer of the list, the text between its
   brackets: a comma after the answer before it, the answer's fields (heads[head_ends[u - 1]:head_ends[u]],
   from 0 for the first: a JSON object's text up to its last field, without the closing brace), the
   trajectory (and the modes) as above, then the closing brace; ends[u] is after it.

   out holds json_rows_size() bytes; t_at and t_len k int64 each (scratch). The service's decimals (6 for
   times, 4 for positions) have their own compiled loop; the rest the same loop with the decimals as
   variables (2.3x slower). */
int64_t answer_json_rows(const double *t, const double *x, const double *y, const double *sx,
                         const double *sy, const int64_t *strides, int64_t a, int64_t k, int t_decimals,
                         int xy_decimals, int columns, int64_t group, const char *probs, int64_t probs_len,
                         const char *heads, const int64_t *head_ends, char *out, int64_t *ends, int64_t *t_at,
                         int64_t *t_len) {
    if (t_decimals < 1 || t_decimals > 16 || xy_decimals < 1 || xy_decimals > 16) return -1;
    if (group > 0 && a % group) return -1;
    if (t_decimals == 6 && xy_decimals == 4)
        return json_rows(t, x, y, sx, sy, strides, a, k, 6, 4, columns, group, probs, probs_len, heads,
                         head_ends, out, ends, t_at, t_len);
    return json_rows(t, x, y, sx, sy, strides, a, k, t_decimals, xy_decimals, columns, group, probs,
                     probs_len, heads, head_ends, out, ends, t_at, t_len);
}

/* The bytes out must hold for answer_json_rows (and msgpack_rows, without groups): every row at its
   longest (keys, brackets, and numbers of sign, 20 integer digits, a point and 16 decimals), and with
   groups the first row again, each group's keys and the probabilities' text; with heads (heads_len
   bytes in all), the heads and what joins each to its trajectory. */
int64_t json_rows_size(int64_t a, int64_t k, int64_t group, int64_t probs_len, int64_t heads_len) {
    int64_t point = (int64_t)(sizeof HEAD - 1 + sizeof X_KEY - 1 + sizeof Y_KEY - 1 + sizeof SX_KEY - 1 +
                              sizeof SY_KEY - 1 + 2 + 5 * (1 + 20 + 1 + 16));
    int64_t row = k * point + 64; /* a columns row's keys and brackets are 52 at most */
    int64_t size = a * row;
    if (group > 0)
        size += (a / group) * (row + sizeof TRAJECTORY_KEY + sizeof MODES_KEY + 2) +
                a * (sizeof PROBABILITY_KEY + sizeof TRAJECTORY_KEY + 2) + probs_len;
    size += heads_len + a * (int64_t)(sizeof TRAJECTORY_KEY + 2);
    return size + 64; /* the last number's moves write a few bytes past its text */
}

static const char MP_KEYS[5][10] = {"\xa9timestamp", "\xa1x", "\xa1y", "\xa5std_x", "\xa5std_y"};
static const int MP_KEY_LEN[5] = {10, 2, 2, 6, 6};

/* v as a MessagePack float 64: 0xcb and its bits big-endian (what msgpack writes for every Python float). */
ALWAYS_INLINE char *mp_float(double v, char *p) {
    uint64_t u;
    memcpy(&u, &v, 8);
    u = __builtin_bswap64(u);
    *p++ = (char)0xcb;
    memcpy(p, &u, 8);
    return p + 8;
}

ALWAYS_INLINE char *mp_array(int64_t n, char *p) {
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

/* v rounded as np.round(v, decimals) rounds it (multiply, rint, divide: the same operations, so the same
   bits, NaN and infinities included); decimals 0: v as it is. */
ALWAYS_INLINE double mp_round(double v, int decimals, double scale) {
    return decimals ? rint(v * scale) / scale : v;
}

/* One row (row i of (a, k)) as MessagePack at p. */
ALWAYS_INLINE char *mp_row(const double *const *cols, const int64_t *s, int c, int64_t i, int64_t k,
                           int columns, int xy_decimals, double scale, char *p) {
    if (columns) {
        *p++ = (char)(0x80 | c);
        for (int j = 0; j < c; j++) {
            p = put(p, MP_KEYS[j], (size_t)MP_KEY_LEN[j]);
            p = mp_array(k, p);
            const double *v = cols[j] + i * s[2 * j];
            const int64_t step = s[2 * j + 1];
            for (int64_t q = 0; q < k; q++) {
                double u = v[q * step];
                p = mp_float(j ? mp_round(u, xy_decimals, scale) : u, p);
            }
        }
        return p;
    }
    p = mp_array(k, p);
    for (int64_t q = 0; q < k; q++) {
        *p++ = (char)(0x80 | c);
        for (int j = 0; j < c; j++) {
            double v = cols[j][i * s[2 * j] + q * s[2 * j + 1]];
            p = put(p, MP_KEYS[j], (size_t)MP_KEY_LEN[j]);
            p = mp_float(j ? mp_round(v, xy_decimals, scale) : v, p);
        }
    }
    return p;
}

/* Answer u's packed fields before its trajectory (heads[head_ends[u - 1]:head_ends[u]], from 0 for the
   first). */
ALWAYS_INLINE char *mp_head(const char *heads, const int64_t *head_ends, int64_t u, char *p) {
    int64_t start = u ? head_ends[u - 1] : 0;
    return put(p, heads + start, (size_t)(head_ends[u] - start));
}

/* {"probability": p, "trajectory": ...} up to the trajectory's value: a fixmap of 2, each key a fixstr */
static const char MP_PROBABILITY[] = "\x82\xabprobability";
static const char MP_TRAJECTORY[] = "\xaatrajectory";
static const char MP_MODES[] = "\xa5modes";

/* MessagePack of the rows as msgpack packs the JSON objects: the points layout (columns == 0) or the
   columns layout; the length. Every double is written (NaN and infinities too: MessagePack has them), x, y
   and the deviations rounded to xy_decimals (0: as they are; times as they are). The columns' strides are
   answer_json_rows's.

   Without groups (group == 0) rows are back to back in out, row i ending at ends[i]. With groups, rows are
   taken `group` at a time as one agent's futures, most probable first, and each group is written as the
   values that end its answer's map: <first row>, "modes", [{"probability": probs[row], "trajectory": <row>},
   ...], ending at ends[g]. With heads (not NULL), each row (or group) starts with its answer's packed
   fields before the trajectory (heads[head_ends[u - 1]:head_ends[u]], from 0 for the first): the list's
   answers back to back. out holds json_rows_size(a, k, group, 0, heads_len) bytes. */
int64_t msgpack_rows(const double *t, const double *x, const double *y, const double *sx, const double *sy,
                     const int64_t *strides, int64_t a, int64_t k, int columns, int xy_decimals,
                     int64_t group, const double *probs, const char *heads, const int64_t *head_ends,
                     char *out, int64_t *ends) {
    if (xy_decimals < 0 || xy_decimals > 16 || (group > 0 && a % group)) return -1;
    const double *cols[5] = {t, x, y, sx, sy};
    int c = (sx && sy) ? 5 : 3;
    double scale = 1.0;
    for (int i = 0; i < xy_decimals; i++) scale *= 10.0;
    char *p = out;
    if (group <= 0) {
        for (int64_t i = 0; i < a; i++) {
            if (heads) p = mp_head(heads, head_ends, i, p);
            p = mp_row(cols, strides, c, i, k, columns, xy_decimals, scale, p);
            ends[i] = p - out;
        }
        return p - out;
    }
    for (int64_t g = 0; g * group < a; g++) {
        if (heads) p = mp_head(heads, head_ends, g, p);
        char *first = p;
        p = mp_row(cols, strides, c, g * group, k, columns, xy_decimals, scale, p);
        size_t first_len = (size_t)(p - first);
        p = put(p, MP_MODES, sizeof MP_MODES - 1);
        p = mp_array(group, p);
        for (int64_t j = 0; j < group; j++) {
            p = put(p, MP_PROBABILITY, sizeof MP_PROBABILITY - 1);
            p = mp_float(probs[g * group + j], p);
            p = put(p, MP_TRAJECTORY, sizeof MP_TRAJECTORY - 1);
            if (j == 0)
                p = put(p, first, first_len);
            else
                p = mp_row(cols, strides, c, g * group + j, k, columns, xy_decimals, scale, p);
        }
        ends[g] = p - out;
    }
    return p - out;
}
