#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "common/pt_common.h"
#include "crypto/pt_crypto.h"

_Noreturn void pt_assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "packtrack: assertion failed: %s (%s:%d)\n", what, file, line);
    abort();
}

static void env_random(void *ctx, void *buf, size_t len)
{
    (void)ctx;
    pt_random(buf, len);
}

static uint64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t env_now_ms(void *ctx)
{
    (void)ctx;
    return clock_ms(CLOCK_REALTIME);
}

static uint64_t env_mono_ms(void *ctx)
{
    (void)ctx;
    return clock_ms(CLOCK_MONOTONIC);
}

const pt_env *pt_env_default(void)
{
    static const pt_env env = {env_random, env_now_ms, env_mono_ms, NULL};
    return &env;
}

/* ---- pt_buf ---------------------------------------------------------------- */

void pt_buf_init(pt_buf *b) { memset(b, 0, sizeof *b); }

void pt_buf_free(pt_buf *b)
{
    if (b->data) {
        sodium_memzero(b->data, b->cap);
        free(b->data);
    }
    pt_buf_init(b);
}

int pt_buf_grow(pt_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len) return PT_ERR_NOMEM;
    size_t need = b->len + extra;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) return PT_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

void pt_buf_consume(pt_buf *b, size_t n)
{
    PT_ASSERT(n <= b->len);
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

/* ---- hex ------------------------------------------------------------------- */

void pt_hex_encode(char *out, const uint8_t *in, size_t len)
{
    sodium_bin2hex(out, 2 * len + 1, in, len);
}

int pt_hex_decode(uint8_t *out, size_t out_len, const char *hex)
{
    size_t got = 0;
    const char *end = NULL;
    if (sodium_hex2bin(out, out_len, hex, strlen(hex), NULL, &got, &end) != 0 ||
        got != out_len || *end != '\0')
        return PT_ERR_DECODE;
    return 0;
}

int pt_parse_hostport(const char *arg, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon = strrchr(arg, ':');
    if (!colon || colon == arg) return PT_ERR_INVAL;
    size_t hl = (size_t)(colon - arg);
    const char *h = arg;
    if (arg[0] == '[') {
        if (hl < 3 || arg[hl - 1] != ']') return PT_ERR_INVAL;
        h++;
        hl -= 2;
    }
    const char *d = colon + 1;
    if (hl >= hostlen || *d < '0' || *d > '9' || strlen(d) > 5) return PT_ERR_INVAL;
    unsigned long v = 0;
    for (; *d; d++) {
        if (*d < '0' || *d > '9') return PT_ERR_INVAL;
        v = v * 10 + (unsigned long)(*d - '0');
    }
    if (v > 65535) return PT_ERR_INVAL;
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = (uint16_t)v;
    return 0;
}

char *pt_hostport_format(char out[static PT_HOSTPORT_LEN], const char *host, uint16_t port)
{
    bool v6 = strchr(host, ':') != NULL;
    snprintf(out, PT_HOSTPORT_LEN, "%s%.255s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", port);
    return out;
}

/* ---- logging ---------------------------------------------------------------- */

static _Atomic pt_log_level g_log_level = PT_LOG_INFO; /* read by every thread */
static int g_log_fd = 2; /* stderr unless pt_log_set_fd() */

void pt_log_set_fd(int fd) { g_log_fd = fd >= 0 ? fd : 2; }

void pt_log_set_level(pt_log_level lvl) { g_log_level = lvl; }
pt_log_level pt_log_get_level(void) { return g_log_level; }

int pt_log_parse_level(const char *s, pt_log_level *out)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (size_t i = 0; i < PT_ARRAY_LEN(names); i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (pt_log_level)i;
            return 0;
        }
    }
    return PT_ERR_INVAL;
}

void pt_log(pt_log_level lvl, const char *fmt, ...)
{
    static const char *tags[] = {"error", "warn", "info", "debug"};
    if (lvl > g_log_level) return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof line - (size_t)n, ".%03ldZ %s ", ts.tv_nsec / 1000000L,
                  tags[lvl]);
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    size_t tl = m < 0 ? 0 : (size_t)m < sizeof text ? (size_t)m : sizeof text - 1;
    /* one line per event, whatever it quotes (a name, a server's or a peer's text): a
     * control character (C0, DEL, C1) is written as \xNN, so none can break the line or
     * reach a terminal that shows the log */
    size_t len = (size_t)n;
    for (size_t i = 0; i < tl && len < sizeof line - 1; i++) {
        unsigned char c = (unsigned char)text[i];
        bool c1 = c == 0xc2 && i + 1 < tl && (unsigned char)text[i + 1] >= 0x80 &&
                  (unsigned char)text[i + 1] <= 0x9f;
        if (c >= 0x20 && c != 0x7f && !c1) {
            line[len++] = (char)c;
            continue;
        }
        if (c1) c = (unsigned char)text[++i];
        if (len + 4 > sizeof line - 1) break;
        static const char hex[] = "0123456789abcdef";
        line[len++] = '\\';
        line[len++] = 'x';
        line[len++] = hex[c >> 4];
        line[len++] = hex[c & 15];
    }
    line[len++] = '\n';
    /* one write per line: lines from the loop and the store's writer never mix, and
     * an O_APPEND log file gets whole lines even while it is being rotated */
    ssize_t w = write(g_log_fd, line, len);
    (void)w;
}

/* ---- public basics ----------------------------------------------------------- */

int pt_init(void)
{
    /* an application (or a user debugging one) can turn library logging up or down */
    const char *l = getenv("PT_LOG_LEVEL");
    pt_log_level lvl;
    if (l && pt_log_parse_level(l, &lvl) == 0) pt_log_set_level(lvl);
    return pt_crypto_init();
}

const char *pt_version(void) { return PT_VERSION_STRING; }

const char *pt_strerror(int err)
{
    switch ((pt_err)err) {
    case PT_OK: return "success";
    case PT_ERR_NOMEM: return "out of memory";
    case PT_ERR_INVAL: return "invalid argument";
    case PT_ERR_DECODE: return "malformed input";
    case PT_ERR_TOO_BIG: return "length exceeds limit";
    case PT_ERR_AUTH: return "authentication failed";
    case PT_ERR_CRYPTO: return "crypto library failure";
    case PT_ERR_PROTO: return "protocol violation";
    case PT_ERR_AGAIN: return "more input needed";
    case PT_ERR_KEY_MISMATCH: return "server key does not match the pinned key";
    case PT_ERR_NO_SUITE: return "no common cipher suite";
    case PT_ERR_IO: return "I/O error";
    case PT_ERR_TIMEOUT: return "timed out";
    case PT_ERR_CLOSED: return "connection closed";
    case PT_ERR_REPLAY: return "replayed or out-of-order message";
    case PT_ERR_VERSION: return "unsupported protocol version";
    case PT_ERR_STATE: return "invalid state for this call";
    case PT_ERR_WEAK_KEY: return "weak (low-order) public key";
    case PT_ERR_NOT_FOUND: return "not found";
    case PT_ERR_EXISTS: return "already exists";
    case PT_ERR_PASSWORD: return "wrong password";
    case PT_ERR_REFUSED: return "refused by the server";
    case PT_ERR_OFFLINE: return "server not reachable";
    }
    return "unknown error";
}
