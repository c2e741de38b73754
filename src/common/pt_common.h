/* Small shared pieces every layer uses: the environment (clock, randomness),
 * assertions, byte order helpers, and a growable byte buffer. */
#ifndef PT_COMMON_H
#define PT_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "packtrack.h"

/* Contract violations by the caller abort; bytes from peers never reach this. */
#define PT_ASSERT(cond)                                                           \
    do {                                                                          \
        if (!(cond)) pt_assert_fail(#cond, __FILE__, __LINE__);                   \
    } while (0)
_Noreturn void pt_assert_fail(const char *what, const char *file, int line);

#define PT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define PT_WUR __attribute__((warn_unused_result))

/* The environment a protocol state machine runs in. Injected so that tests,
 * fuzzers and simulations run on deterministic fakes. */
typedef struct pt_env {
    void (*random)(void *ctx, void *buf, size_t len); /* cryptographic randomness */
    uint64_t (*now_ms)(void *ctx);                    /* wall clock, ms since 1970 */
    uint64_t (*mono_ms)(void *ctx);                   /* monotonic clock, ms */
    void *ctx;                                        /* passed to every callback */
} pt_env;

/* The real environment: libsodium randomness and the system clocks. */
const pt_env *pt_env_default(void);

static inline void pt_env_random(const pt_env *env, void *buf, size_t len)
{
    env->random(env->ctx, buf, len);
}
static inline uint64_t pt_env_now_ms(const pt_env *env) { return env->now_ms(env->ctx); }
static inline uint64_t pt_env_mono_ms(const pt_env *env) { return env->mono_ms(env->ctx); }

/* Little-endian loads and stores (the wire is little-endian). */
static inline void pt_put_u32le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void pt_put_u64le(uint8_t *p, uint64_t v)
{
    pt_put_u32le(p, (uint32_t)v);
    pt_put_u32le(p + 4, (uint32_t)(v >> 32));
}
static inline uint32_t pt_get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t pt_get_u64le(const uint8_t *p)
{
    return (uint64_t)pt_get_u32le(p) | (uint64_t)pt_get_u32le(p + 4) << 32;
}
static inline void pt_put_u64be(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

/* A growable byte buffer. len bytes of data live at data[0..len). */
typedef struct pt_buf {
    uint8_t *data; /* heap storage, NULL when cap == 0 */
    size_t len;    /* bytes in use */
    size_t cap;    /* bytes allocated */
} pt_buf;

void pt_buf_init(pt_buf *b);
void pt_buf_free(pt_buf *b); /* also wipes the contents */
/* Makes room for extra more bytes (the slow path of pt_buf_reserve: a realloc). */
PT_WUR int pt_buf_grow(pt_buf *b, size_t extra);
/* The fast paths inline: the encoders call these a few times per field, and as
 * calls they were 2.4 % of a loaded server's CPU (with a libc memcpy call for every
 * 4- or 8-byte field, which inlined is a store). */
static inline PT_WUR int pt_buf_reserve(pt_buf *b, size_t extra)
{
    return extra <= b->cap - b->len ? 0 : pt_buf_grow(b, extra);
}
static inline PT_WUR int pt_buf_append(pt_buf *b, const void *p, size_t len)
{
    if (len == 0) return 0;
    int rc = pt_buf_reserve(b, len);
    if (rc) return rc;
    memcpy(b->data + b->len, p, len);
    b->len += len;
    return 0;
}
/* Grows len by n and returns a pointer to the new (uninitialised) bytes, or NULL. */
static inline uint8_t *pt_buf_extend(pt_buf *b, size_t n)
{
    if (pt_buf_reserve(b, n ? n : 1)) return NULL; /* never NULL for n == 0 */
    uint8_t *p = b->data + b->len;
    b->len += n;
    return p;
}
/* Drops the first n bytes. */
void pt_buf_consume(pt_buf *b, size_t n);
static inline void pt_buf_reset(pt_buf *b) { b->len = 0; }

/* Hex helpers for logs, fingerprints and tests. out must hold 2*len+1 chars. */
void pt_hex_encode(char *out, const uint8_t *in, size_t len);
/* Decodes exactly out_len bytes; returns 0 or PT_ERR_DECODE. */
PT_WUR int pt_hex_decode(uint8_t *out, size_t out_len, const char *hex);
/* "HOST:PORT", "[IPV6]:PORT" or "IPV6:PORT" (the last colon ends the host): host (the
 * brackets taken off) into host[hostlen], PORT (decimal, 0-65535) into *port. 0 or
 * PT_ERR_INVAL (no colon, no host, a host too long, a bad port). */
PT_WUR int pt_parse_hostport(const char *arg, char *host, size_t hostlen, uint16_t *port);
/* The reverse, for messages: "HOST:PORT", an IPv6 address in brackets; returns out. */
#define PT_HOSTPORT_LEN 264 /* a host of 255 bytes, brackets, ':65535' and NUL */
char *pt_hostport_format(char out[static PT_HOSTPORT_LEN], const char *host, uint16_t port);

/* Logging: one line per event to stderr, never secrets. */
typedef enum { PT_LOG_ERROR = 0, PT_LOG_WARN, PT_LOG_INFO, PT_LOG_DEBUG } pt_log_level;
void pt_log_set_level(pt_log_level lvl);
pt_log_level pt_log_get_level(void);
int pt_log_parse_level(const char *s, pt_log_level *out);
void pt_log(pt_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Where log lines go: a descriptor open for appending (default 2, stderr; a
 * negative fd means stderr again). Each line is one write(). */
void pt_log_set_fd(int fd);
#define pt_log_error(...) pt_log(PT_LOG_ERROR, __VA_ARGS__)
#define pt_log_warn(...) pt_log(PT_LOG_WARN, __VA_ARGS__)
#define pt_log_info(...) pt_log(PT_LOG_INFO, __VA_ARGS__)
#define pt_log_debug(...)                                                         \
    do {                                                                          \
        if (pt_log_get_level() >= PT_LOG_DEBUG) pt_log(PT_LOG_DEBUG, __VA_ARGS__); \
    } while (0)

#endif /* PT_COMMON_H */
