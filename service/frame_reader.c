/* A predict request's body, JSON or MessagePack, read in one pass: each observation's agent id (where it lies
   in the body), timestamp, position (x, y side by side) and agent type, as columns.

   Only bodies that the schema (service/schemas.py, PredictRequest) accepts as they are and that read the same
   way everywhere are taken: one map with the one key "observations", a non-empty list of maps with the keys
   agent_id, timestamp, x, y and optionally agent_type, each at most once; ids of 1 to 128 printable ASCII
   characters (in JSON without escapes); finite numbers, timestamps not negative; agent_type one of the four
   names, or null. Anything else (an error to report, an escape, a non-ASCII character, a duplicate key, a
   JSON number of 64 characters or more, a boolean) returns 0 and the caller validates the body the general
   way, which then gives the same observations or names what is wrong. So this reader never decides an
   error, and it need not know any.

   Numbers are read as the general way reads them (orjson or msgpack, then the schema's float). JSON's are
   correctly rounded: a decimal of at most 2^53 with a power of ten within 10^22 either way is one exact
   integer times or over one exact power of ten, a single IEEE operation, so correctly rounded (Clinger's
   fast path); other numbers go to strtod (glibc's is correctly rounded). An integer is an int to orjson and
   becomes a float without a sign, so "-0" is +0.0 here too. MessagePack's are its floats (a float32 widened
   exactly) and its integers converted as Python's float(int) does (IEEE conversion, round to nearest).
   tests/service/test_frame_reader.py holds every observation to the general way's. */
#include "frame_reader.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const unsigned char *p, *end;
} cursor;

static inline void skip_ws(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) c->p++;
}

static inline int take(cursor *c, unsigned char ch) {
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* a string of printable ASCII without escapes: its characters are [*at, *at + *n) */
static int plain_string(cursor *c, const unsigned char **at, int64_t *n) {
    if (!take(c, '"')) return 0;
    const unsigned char *start = c->p;
    while (c->p < c->end) {
        unsigned char ch = *c->p;
        if (ch == '"') {
            *at = start;
            *n = c->p - start;
            c->p++;
            return 1;
        }
        if (ch < 0x20 || ch > 0x7e || ch == '\\') return 0;
        c->p++;
    }
    return 0;
}

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static inline int is_digit(const cursor *c) { return c->p < c->end && *c->p >= '0' && *c->p <= '9'; }

/* a JSON number (RFC 8259 grammar), finite */
static int number(cursor *c, double *out) {
    const unsigned char *start = c->p;
    int negative = take(c, '-'), integer = 1, digits = 0;
    uint64_t mantissa = 0;
    int64_t exp10 = 0;
    if (!is_digit(c)) return 0;
    if (*c->p == '0') {
        c->p++;
    } else {
        while (is_digit(c)) {
            if (digits < 19) mantissa = mantissa * 10 + (uint64_t)(*c->p - '0');
            else exp10++;  /* past 19 digits the fast path is off anyway (mantissa > 2^53) */
            digits++;
            c->p++;
        }
    }
    if (take(c, '.')) {
        integer = 0;
        if (!is_digit(c)) return 0;
        while (is_digit(c)) {
            if (digits < 19) {
                mantissa = mantissa * 10 + (uint64_t)(*c->p - '0');
                exp10--;
                if (mantissa != 0) digits++;  /* leading zeros of "0.000123" are not significant */
            } else {
                digits++;
            }
            c->p++;
        }
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        integer = 0;
        c->p++;
        int exp_negative = 0;
        if (!take(c, '+')) exp_negative = take(c, '-');
        if (!is_digit(c)) return 0;
        int64_t e = 0;
        while (is_digit(c)) {
            if (e < 100000) e = e * 10 + (*c->p - '0');
            c->p++;
        }
        exp10 += exp_negative ? -e : e;
    }
    int64_t n = c->p - start;
    if (n >= 64) return 0;
    double v;
    if (digits < 19 && mantissa <= (1ULL << 53) && exp10 >= -22 && exp10 <= 22) {
        v = (double)mantissa;
        v = exp10 < 0 ? v / POW10[-exp10] : v * POW10[exp10];
        if (negative) v = -v;
    } else {
        char text[64];
        char *stop;
        memcpy(text, start, (size_t)n);
        text[n] = 0;
        v = strtod(text, &stop);
        if (stop != text + n) return 0; /* a locale with another decimal point: not ours to read */
    }
    if (!isfinite(v)) return 0;
    if (integer && v == 0.0) v = 0.0;
    *out = v;
    return 1;
}

static int key_is(const unsigned char *at, int64_t n, const char *name, int64_t len) {
    return n == len && memcmp(at, name, (size_t)len) == 0;
}

/* how an encoding writes a string, a number and a null */
typedef struct {
    int (*string)(cursor *c, const unsigned char **at, int64_t *n);
    int (*number)(cursor *c, double *out);
    int (*null)(cursor *c);
} encoding;

/* where the reader puts one observation's fields */
typedef struct {
    int64_t *id_at, *id_len;
    double *t, *x, *y;
    int8_t *kind;
} row;

enum { SEEN_ID = 1, SEEN_T = 2, SEEN_X = 4, SEEN_Y = 8, SEEN_TYPE = 16, REQUIRED = 15 };

/* the value of the observation's key [key, key + n), into its field; *seen gains the key's bit. 0: a key the
   schema does not know, a key twice (which one counts is the general way's to say), or a value this reader
   does not take */
static int field(cursor *c, const encoding *e, const unsigned char *body, const unsigned char *key, int64_t n,
                 const row *r, int *seen) {
    static const char *TYPES[4] = {"vehicle", "pedestrian", "cyclist", "unknown"}; /* AGENT_TYPES' order */
    int bit;
    if (key_is(key, n, "agent_id", 8)) {
        const unsigned char *at;
        int64_t len;
        if (!e->string(c, &at, &len) || len < 1 || len > 128) return 0;
        *r->id_at = at - body;
        *r->id_len = len;
        bit = SEEN_ID;
    } else if (key_is(key, n, "timestamp", 9)) {
        if (!e->number(c, r->t) || !(*r->t >= 0.0)) return 0;
        bit = SEEN_T;
    } else if (key_is(key, n, "x", 1)) {
        if (!e->number(c, r->x)) return 0;
        bit = SEEN_X;
    } else if (key_is(key, n, "y", 1)) {
        if (!e->number(c, r->y)) return 0;
        bit = SEEN_Y;
    } else if (key_is(key, n, "agent_type", 10)) {
        if (e->null(c)) {
            *r->kind = -1;
        } else {
            const unsigned char *at;
            int64_t len;
            if (!e->string(c, &at, &len)) return 0;
            int8_t i = 0;
            while (i < 4 && !key_is(at, len, TYPES[i], (int64_t)strlen(TYPES[i]))) i++;
            if (i == 4) return 0;
            *r->kind = i;
        }
        bit = SEEN_TYPE;
    } else {
        return 0;
    }
    if (*seen & bit) return 0;
    *seen |= bit;
    return 1;
}

static int json_null(cursor *c) {
    if (c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0) {
        c->p += 4;
        return 1;
    }
    return 0;
}

static const encoding JSON = {plain_string, number, json_null};

static int observation(cursor *c, const unsigned char *body, const row *r) {
    int seen = 0;
    *r->kind = -1;
    if (!take(c, '{')) return 0;
    for (;;) {
        skip_ws(c);
        const unsigned char *key;
        int64_t n;
        if (!plain_string(c, &key, &n)) return 0;
        skip_ws(c);
        if (!take(c, ':')) return 0;
        skip_ws(c);
        if (!field(c, &JSON, body, key, n, r, &seen)) return 0;
        skip_ws(c);
        if (take(c, ',')) continue;
        if (take(c, '}')) break;
        return 0;
    }
    return (seen & REQUIRED) == REQUIRED;
}

int64_t frame_observations_json(const char *text, int64_t len, int64_t cap, int64_t *id_at, int64_t *id_len,
                                double *t, double *xy, int8_t *kind) {
    const unsigned char *body = (const unsigned char *)text;
    cursor c = {body, body + len};
    const unsigned char *key;
    int64_t n;
    skip_ws(&c);
    if (!take(&c, '{')) return 0;
    skip_ws(&c);
    if (!plain_string(&c, &key, &n) || !key_is(key, n, "observations", 12)) return 0;
    skip_ws(&c);
    if (!take(&c, ':')) return 0;
    skip_ws(&c);
    if (!take(&c, '[')) return 0;
    int64_t count = 0;
    for (;;) {
        skip_ws(&c);
        if (count >= cap) return 0;
        row r = {&id_at[count], &id_len[count], &t[count], &xy[2 * count], &xy[2 * count + 1], &kind[count]};
        if (!observation(&c, body, &r)) return 0;
        count++;
        skip_ws(&c);
        if (take(&c, ',')) continue;
        if (take(&c, ']')) break;
        return 0;
    }
    skip_ws(&c);
    if (!take(&c, '}')) return 0;
    skip_ws(&c);
    return c.p == c.end ? count : 0;
}

/* --- MessagePack ----------------------------------------------------------------------------------------- */

static inline int need(const cursor *c, int64_t n) { return c->end - c->p >= n; }

static inline uint64_t big_endian(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* a length of n bytes after the type byte */
static int length(cursor *c, int n, int64_t *out) {
    if (!need(c, n)) return 0;
    *out = (int64_t)big_endian(c->p, n);
    c->p += n;
    return 1;
}

/* a map's or an array's header: its count. fix: the type's fix form (count in the low nibble); wide: its
   16-bit form, the 32-bit form next to it */
static int mp_count(cursor *c, unsigned char fix, unsigned char wide, int64_t *n) {
    if (!need(c, 1)) return 0;
    unsigned char b = *c->p++;
    if ((b & 0xf0) == fix) {
        *n = b & 0x0f;
        return 1;
    }
    if (b == wide) return length(c, 2, n);
    if (b == wide + 1) return length(c, 4, n);
    return 0;
}

static int mp_map(cursor *c, int64_t *n) { return mp_count(c, 0x80, 0xde, n); }

static int mp_array(cursor *c, int64_t *n) { return mp_count(c, 0x90, 0xdc, n); }

/* a str of printable ASCII: its characters are [*at, *at + *n) */
static int mp_string(cursor *c, const unsigned char **at, int64_t *n) {
    if (!need(c, 1)) return 0;
    unsigned char b = *c->p++;
    int64_t len;
    if ((b & 0xe0) == 0xa0) len = b & 0x1f;
    else if (b == 0xd9) { if (!length(c, 1, &len)) return 0; }
    else if (b == 0xda) { if (!length(c, 2, &len)) return 0; }
    else if (b == 0xdb) { if (!length(c, 4, &len)) return 0; }
    else return 0;
    if (!need(c, len)) return 0;
    for (int64_t i = 0; i < len; i++) {
        if (c->p[i] < 0x20 || c->p[i] > 0x7e) return 0;
    }
    *at = c->p;
    *n = len;
    c->p += len;
    return 1;
}

/* an integer or a float, finite */
static int mp_number(cursor *c, double *out) {
    if (!need(c, 1)) return 0;
    unsigned char b = *c->p++;
    double v;
    if (b <= 0x7f) {
        v = (double)b;
    } else if (b >= 0xe0) {
        v = (double)(int8_t)b;
    } else if (b == 0xca || b == 0xcb) {
        int n = b == 0xca ? 4 : 8;
        if (!need(c, n)) return 0;
        uint64_t bits = big_endian(c->p, n);
        c->p += n;
        if (n == 4) {
            uint32_t u = (uint32_t)bits;
            float f;
            memcpy(&f, &u, 4);
            v = (double)f;
        } else {
            memcpy(&v, &bits, 8);
        }
    } else if (b >= 0xcc && b <= 0xcf) {
        int n = 1 << (b - 0xcc);
        if (!need(c, n)) return 0;
        v = (double)big_endian(c->p, n);
        c->p += n;
    } else if (b >= 0xd0 && b <= 0xd3) {
        int n = 1 << (b - 0xd0);
        if (!need(c, n)) return 0;
        uint64_t u = big_endian(c->p, n);
        c->p += n;
        int shift = 64 - 8 * n; /* sign-extend from n bytes */
        v = (double)((int64_t)(u << shift) >> shift);
    } else {
        return 0;
    }
    if (!isfinite(v)) return 0;
    *out = v;
    return 1;
}

static int mp_null(cursor *c) {
    if (need(c, 1) && *c->p == 0xc0) {
        c->p++;
        return 1;
    }
    return 0;
}

static const encoding MSGPACK = {mp_string, mp_number, mp_null};

static int mp_observation(cursor *c, const unsigned char *body, const row *r) {
    int64_t entries;
    int seen = 0;
    *r->kind = -1;
    if (!mp_map(c, &entries)) return 0;
    for (int64_t e = 0; e < entries; e++) {
        const unsigned char *key;
        int64_t n;
        if (!mp_string(c, &key, &n) || !field(c, &MSGPACK, body, key, n, r, &seen)) return 0;
    }
    return (seen & REQUIRED) == REQUIRED;
}

int64_t frame_observations_msgpack(const char *text, int64_t len, int64_t cap, int64_t *id_at, int64_t *id_len,
                                   double *t, double *xy, int8_t *kind) {
    const unsigned char *body = (const unsigned char *)text;
    cursor c = {body, body + len};
    const unsigned char *key;
    int64_t n, count;
    if (!mp_map(&c, &n) || n != 1) return 0;
    if (!mp_string(&c, &key, &n) || !key_is(key, n, "observations", 12)) return 0;
    if (!mp_array(&c, &count) || count < 1 || count > cap) return 0;
    for (int64_t i = 0; i < count; i++) {
        row r = {&id_at[i], &id_len[i], &t[i], &xy[2 * i], &xy[2 * i + 1], &kind[i]};
        if (!mp_observation(&c, body, &r)) return 0;
    }
    return c.p == c.end ? count : 0;
}
