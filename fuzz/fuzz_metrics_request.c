/* Fuzz target for pt_metrics_request(): arbitrary bytes as what a scraper sends to
 * the metrics endpoint. Properties, each abort()ing when broken:
 *  - the verdict is one of the six answers, with its own status, reason phrase and
 *    log reason (400 and 405 have one, nothing else does);
 *  - "read on" only while fewer than PT_METRICS_REQ_MAX bytes hold no NUL byte and no
 *    blank line; an answer once the blank line, a NUL or the limit has arrived;
 *  - splitting never changes the answer: every prefix is "read on" until the first
 *    answer, and every longer prefix gets that same answer (checked on every prefix
 *    of short inputs, on sampled ones of long inputs), and a simulated connection that
 *    reads the bytes in pseudo-random chunks into a PT_METRICS_REQ_MAX buffer answers
 *    what the whole input does;
 *  - 200 only for "GET /metrics" or "GET /healthz" followed by ' ' or '?', 404 only
 *    for another "GET " request, and the verdict is the same when the bytes after
 *    the blank line are dropped. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "server/pt_server_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fz_check_verdict(const pt_metrics_verdict *v, pt_metrics_answer a)
{
    if (v->answer != a) abort();
    switch (a) {
    case PT_METRICS_MORE:
        if (v->status != 0 || v->reason || v->why) abort();
        return;
    case PT_METRICS_SCRAPE:
    case PT_METRICS_HEALTHZ:
        if (v->status != 200 || strcmp(v->reason, "OK") != 0 || v->why) abort();
        return;
    case PT_METRICS_NOT_FOUND:
        if (v->status != 404 || strcmp(v->reason, "Not Found") != 0 || v->why) abort();
        return;
    case PT_METRICS_BAD_METHOD:
        if (v->status != 405 || strcmp(v->reason, "Method Not Allowed") != 0 || !v->why || !*v->why)
            abort();
        return;
    case PT_METRICS_BAD_REQUEST:
        if (v->status != 400 || strcmp(v->reason, "Bad Request") != 0 || !v->why || !*v->why)
            abort();
        return;
    }
    abort();
}

static pt_metrics_answer fz_judge(const char *req, size_t len, pt_metrics_verdict *v)
{
    memset(v, 0x55, sizeof *v);
    pt_metrics_answer a = pt_metrics_request(req, len, v);
    fz_check_verdict(v, a);
    return a;
}

static bool fz_same(const pt_metrics_verdict *a, const pt_metrics_verdict *b)
{
    return a->answer == b->answer && a->status == b->status && a->reason == b->reason &&
           a->why == b->why;
}

/* Where the blank line that ends the headers ends, or 0. */
static size_t fz_blank_line(const char *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (p[i] != '\n') continue;
        if (p[i + 1] == '\n') return i + 2;
        if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') return i + 3;
    }
    return 0;
}

static uint64_t fz_rng;

static size_t fz_next(size_t bound)
{
    fz_rng ^= fz_rng << 13;
    fz_rng ^= fz_rng >> 7;
    fz_rng ^= fz_rng << 17;
    return (size_t)(fz_rng % bound);
}

/* A connection: reads of at most the buffer's room, in chunks of 1 to max_chunk
 * bytes, judged after each read, until an answer or the end of the input. */
static void fz_connection(const char *in, size_t size, size_t max_chunk,
                          const pt_metrics_verdict *want)
{
    static char buf[PT_METRICS_REQ_MAX];
    size_t len = 0, off = 0;
    pt_metrics_verdict v;
    memset(&v, 0, sizeof v);
    while (off < size) {
        size_t room = sizeof buf - len; /* never 0: a full buffer is answered */
        if (room == 0) abort();
        size_t n = 1 + fz_next(max_chunk);
        if (n > size - off) n = size - off;
        if (n > room) n = room;
        memcpy(buf + len, in + off, n);
        len += n;
        off += n;
        if (fz_judge(buf, len, &v) != PT_METRICS_MORE) break;
    }
    if (size == 0) fz_judge(buf, 0, &v);
    if (!fz_same(&v, want)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    pt_metrics_verdict whole, v;
    pt_metrics_answer a = fz_judge(in, size, &whole);
    size_t held = size < PT_METRICS_REQ_MAX ? size : PT_METRICS_REQ_MAX;
    size_t end = fz_blank_line(in, held);

    /* read on: exactly while nothing decides */
    bool decided = end || memchr(in, 0, held) || held == PT_METRICS_REQ_MAX;
    if ((a == PT_METRICS_MORE) == decided) abort();

    /* the bytes after the blank line never count */
    if (end && (fz_judge(in, end, &v), !fz_same(&v, &whole))) abort();

    /* every prefix: read on, then the one answer */
    size_t first = 0; /* the shortest prefix answered, 0: none */
    size_t step = held <= 256 ? 1 : 1 + held / 128;
    for (size_t p = 0; p <= held; p += step) {
        if (fz_judge(in, p, &v) != PT_METRICS_MORE) {
            if (!fz_same(&v, &whole)) abort();
            if (!first) first = p ? p : 1;
        } else if (first) {
            abort(); /* an answer taken back */
        }
    }
    if (a != PT_METRICS_MORE && step > 1) { /* the decision point itself, found by halving */
        size_t lo = 0, hi = held;           /* prefix lo reads on, prefix hi answers */
        while (hi - lo > 1) {
            size_t mid = lo + (hi - lo) / 2;
            if (fz_judge(in, mid, &v) == PT_METRICS_MORE)
                lo = mid;
            else
                hi = mid;
        }
        for (size_t p = hi; p <= held && p < hi + 8; p++)
            if (fz_judge(in, p, &v) == PT_METRICS_MORE || !fz_same(&v, &whole)) abort();
    }

    /* a connection reading the bytes in chunks */
    fz_rng = 0x9E3779B97F4A7C15u ^ size;
    for (size_t i = 0; i < held; i++)
        fz_rng = (fz_rng ^ data[i]) * 0x100000001B3u;
    if (!fz_rng) fz_rng = 1;
    fz_connection(in, size, 1 + fz_next(64), &whole);
    fz_connection(in, size, 1 + fz_next(PT_METRICS_REQ_MAX * 2), &whole);

    /* what can be 200 or 404 */
    if ((a == PT_METRICS_SCRAPE || a == PT_METRICS_HEALTHZ)) {
        const char *path = a == PT_METRICS_SCRAPE ? "GET /metrics" : "GET /healthz";
        if (held < 13 || memcmp(in, path, 12) != 0 || (in[12] != ' ' && in[12] != '?')) abort();
    }
    if (a == PT_METRICS_NOT_FOUND && (held < 4 || memcmp(in, "GET ", 4) != 0)) abort();
    return 0;
}
