/* Fuzz target for pt_sess_input (src/session): a session in the deterministic
 * fuzz_env (fixed clock, salt secret and session id from fuzz_env.h) fed records
 * carved from the input. The first byte picks the variant:
 *   bit 0: 0 = server session (answers every call with rpc_result(pt.echoResult)
 *          or rpc_error); 1 = client session, which first queues and flushes two
 *          pt.echo calls (one gzip_packed), a ping and a msgs_state_req, so that
 *          the server's answers in the input find them (fuzz/seeds/make_seeds.c
 *          knows their ids);
 *   bit 1: "reconnect" (pt_sess_resume) before every flush: resends everything;
 *   bit 2: every third emitted record is refused by the emit callback;
 *   bit 3: "warm": first a container of PT_SESS_WINDOW - 1 empty msgs_acks fills
 *          the replay window (ids below the seeds' ones, no content), so that the
 *          input's ids start the window's eviction and "too old" paths, which
 *          4 KB inputs cannot reach on their own.
 * The rest is records, each a u16le length then that many bytes (the last may be
 * short). After each record the session is flushed; a failed record is treated
 * as a closed connection (pt_sess_resume), as the daemon would. Properties, each
 * abort()ing when broken:
 *  - pt_sess_input fails only with PT_ERR_DECODE, PT_ERR_PROTO or PT_ERR_TOO_BIG, or
 *    with PT_ERR_CLOSED exactly when a client session renewed itself (then its
 *    records carry the new session id);
 *  - events fit the role, and their bodies are readable;
 *  - every emitted record is <= PT_CHAN_RECORD_MAX and parses: header with our
 *    salt and session id, length matching, msg_id parity of our role, seqno odd
 *    exactly for content messages, containers laid out exactly with inner ids
 *    below the container's, and every known constructor decoding;
 *  - after a flush that succeeded nothing is left to send. */
#include <stdlib.h>

#include "fuzz_env.h"
#include "pt_tl.h"
#include "session/pt_sess.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CALLS 64
#define MAX_ECHO 512

typedef struct fz_sess {
    pt_sess *s;
    uint64_t expect_sid;       /* the session id records must carry */
    bool server;
    uint8_t secret[PT_SESS_SALT_SECRET_LEN];
    bool refuse_some;          /* bit 2 of the mode byte */
    unsigned emitted;          /* records offered to on_emit */
    size_t ncalls;             /* calls to answer after the record */
    uint64_t call_id[MAX_CALLS];
    size_t echo_len[MAX_CALLS]; /* SIZE_MAX: not a pt.echo, answer rpc_error */
    uint8_t echo[MAX_CALLS][MAX_ECHO];
} fz_sess;

static uint8_t arena_mem[PT_CHAN_RECORD_MAX + 4096];

/* The session layer's rule (session.c): service messages are not content. */
static bool is_content(uint32_t ctor)
{
    switch (ctor) {
    case PT_SESS_CONTAINER_ID:
    case PT_TL_MSGS_ACK_ID:
    case PT_TL_BAD_MSG_NOTIFICATION_ID:
    case PT_TL_BAD_SERVER_SALT_ID:
    case PT_TL_MSGS_STATE_REQ_ID:
    case PT_TL_MSGS_STATE_INFO_ID:
    case PT_TL_MSG_RESEND_REQ_ID:
        return false;
    default:
        return true;
    }
}

static void on_event(void *ud, const pt_sess_event *ev)
{
    fz_sess *f = ud;
    volatile uint8_t sink = 0;
    if (ev->len && !ev->body) abort();
    for (size_t i = 0; i < ev->len; i++) sink ^= ev->body[i];
    (void)sink;
    switch (ev->type) {
    case PT_SESS_EV_CALL: {
        if (!f->server || ev->len < 4 || ev->len % 4) abort();
        if (f->ncalls == MAX_CALLS) return;
        pt_arena a;
        pt_tl_pt_echo e;
        pt_arena_init(&a, arena_mem, sizeof arena_mem);
        size_t k = f->ncalls++;
        f->call_id[k] = ev->msg_id;
        f->echo_len[k] = SIZE_MAX;
        if (pt_tl_pt_echo_decode(&e, ev->body, ev->len, &a) == 0 && e.payload.len <= MAX_ECHO) {
            f->echo_len[k] = e.payload.len;
            if (e.payload.len) memcpy(f->echo[k], e.payload.data, e.payload.len);
        }
        return;
    }
    case PT_SESS_EV_UPDATE:
        if (f->server || ev->len < 4 || ev->len % 4) abort();
        return;
    case PT_SESS_EV_RESULT:
        if (f->server) abort();
        return;
    case PT_SESS_EV_PONG:
    case PT_SESS_EV_ACKED:
    case PT_SESS_EV_BAD_MSG:
    case PT_SESS_EV_NEW_SESSION:
        return;
    }
    abort(); /* no such event type */
}

/* One message (outer or inner) as our peer would check it. */
static void check_msg(const fz_sess *f, uint64_t msg_id, uint32_t seqno, const uint8_t *body,
                      size_t len, bool inner)
{
    unsigned low = (unsigned)(msg_id & 3);
    if (f->server ? (low != 1 && low != 3) : low != 0) abort();
    if (len < 4 || len % 4) abort();
    uint32_t ctor = pt_get_u32le(body);
    if ((seqno & 1) != is_content(ctor)) abort();
    if (ctor == PT_SESS_CONTAINER_ID) {
        if (inner || len < PT_SESS_CONTAINER_HDR) abort();
        uint32_t count = pt_get_u32le(body + 4);
        if (count == 0 || count > PT_SESS_CONTAINER_MAX_MSGS) abort();
        size_t off = PT_SESS_CONTAINER_HDR;
        for (uint32_t i = 0; i < count; i++) {
            if (len - off < PT_SESS_INNER_HDR) abort();
            const uint8_t *h = body + off;
            uint64_t id = pt_get_u64le(h);
            uint32_t ilen = pt_get_u32le(h + 12);
            if (len - off - PT_SESS_INNER_HDR < ilen || id >= msg_id) abort();
            check_msg(f, id, pt_get_u32le(h + 8), h + PT_SESS_INNER_HDR, ilen, true);
            off += PT_SESS_INNER_HDR + ilen;
        }
        if (off != len) abort();
        return;
    }
    if (pt_tl_name(ctor)) {
        pt_arena a;
        pt_tl_obj o;
        pt_arena_init(&a, arena_mem, sizeof arena_mem);
        if (pt_tl_decode_any(&o, body, len, &a) != 0) abort();
    }
}

static int on_emit(void *ud, const uint8_t *rec, size_t len)
{
    fz_sess *f = ud;
    if (len > PT_CHAN_RECORD_MAX || len < PT_SESS_HDR_LEN + 4) abort();
    if (pt_get_u64le(rec) != pt_sess_salt_now(f->s)) abort();
    if (f->server && pt_get_u64le(rec) != pt_sess_salt_for(f->secret, FZ_NOW_MS)) abort();
    if (pt_get_u64le(rec + 8) != f->expect_sid) abort(); /* FZ_SESSION_ID until a renewal */
    if (pt_get_u32le(rec + 28) != len - PT_SESS_HDR_LEN) abort();
    check_msg(f, pt_get_u64le(rec + 16), pt_get_u32le(rec + 24), rec + PT_SESS_HDR_LEN,
              len - PT_SESS_HDR_LEN, false);
    return f->refuse_some && ++f->emitted % 3 == 0 ? 1 : 0;
}

static void flush(fz_sess *f)
{
    int rc = pt_sess_flush(f->s, on_emit, f);
    if (rc == 0 && pt_sess_has_output(f->s)) abort();
    if (rc != 0 && rc != 1) abort(); /* 1: our refusal */
}

static void answer_calls(fz_sess *f)
{
    pt_buf b;
    pt_buf_init(&b);
    for (size_t i = 0; i < f->ncalls; i++) {
        int rc;
        if (f->echo_len[i] != SIZE_MAX) {
            pt_tl_pt_echoResult r = {.payload = {f->echo[i], (uint32_t)f->echo_len[i]}};
            rc = pt_tl_pt_echoResult_encode(&b, &r);
        } else {
            static const char msg[] = "BAD_REQUEST";
            pt_tl_rpc_error r = {.error_code = 400,
                                 .error_message = {(const uint8_t *)msg, sizeof msg - 1}};
            rc = pt_tl_rpc_error_encode(&b, &r);
        }
        if (rc != 0 || pt_sess_reply(f->s, f->call_id[i], b.data, b.len) != 0) abort();
        pt_buf_reset(&b);
    }
    f->ncalls = 0;
    pt_buf_free(&b);
}

/* The warm-up record: a container of PT_SESS_WINDOW - 1 msgs_ack([]) with ids
 * (ours to receive: 0 mod 4 for the server, 1 for the client) just below
 * fuzz_env's now, then its own id: PT_SESS_WINDOW ids in all. */
static const uint8_t *warm_record(bool server, size_t *len)
{
    enum { N = PT_SESS_WINDOW - 1, BODY = 12 };
    static uint8_t rec[2][PT_SESS_HDR_LEN + PT_SESS_CONTAINER_HDR + N * (PT_SESS_INNER_HDR + BODY)];
    uint8_t *r = rec[server];
    uint64_t t0 = (FZ_NOW_MS / 1000) << 32, low = server ? 0 : 1;
    *len = sizeof rec[0];
    if (pt_get_u32le(r + 28) != 0) return r;
    uint8_t secret[PT_SESS_SALT_SECRET_LEN];
    fz_salt_secret(secret);
    pt_put_u64le(r, pt_sess_salt_for(secret, FZ_NOW_MS));
    pt_put_u64le(r + 8, FZ_SESSION_ID);
    pt_put_u64le(r + 16, t0 - 4 + low);
    pt_put_u32le(r + 24, 0);
    pt_put_u32le(r + 28, (uint32_t)(*len - PT_SESS_HDR_LEN));
    uint8_t *p = r + PT_SESS_HDR_LEN;
    pt_put_u32le(p, PT_SESS_CONTAINER_ID);
    pt_put_u32le(p + 4, N);
    p += PT_SESS_CONTAINER_HDR;
    for (uint64_t i = 0; i < N; i++, p += PT_SESS_INNER_HDR + BODY) {
        pt_put_u64le(p, t0 - 4 * (N + 1 - i) + low);
        pt_put_u32le(p + 8, 0);
        pt_put_u32le(p + 12, BODY);
        pt_put_u32le(p + 16, PT_TL_MSGS_ACK_ID);
        pt_put_u32le(p + 20, 0x1cb5c415u); /* Vector */
        pt_put_u32le(p + 24, 0);
    }
    return r;
}

/* The client's opening messages; make_seeds.c relies on their ids and seqnos. */
static void client_opening(fz_sess *f)
{
    pt_buf b;
    pt_buf_init(&b);
    static uint8_t big[1024];
    memset(big, 'z', sizeof big);
    pt_tl_pt_echo e1 = {.payload = {(const uint8_t *)"hello", 5}};
    pt_tl_pt_echo e2 = {.payload = {big, sizeof big}};
    uint64_t ids[3];
    if (pt_tl_pt_echo_encode(&b, &e1) != 0 || pt_sess_send(f->s, b.data, b.len, false, &ids[0]) != 0)
        abort();
    pt_buf_reset(&b);
    if (pt_tl_pt_echo_encode(&b, &e2) != 0 || pt_sess_send(f->s, b.data, b.len, true, &ids[1]) != 0)
        abort();
    if (pt_sess_ping(f->s, 0x5052, &ids[2]) != 0) abort();
    if (pt_sess_state_req(f->s, ids, 2) != 0) abort();
    pt_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    if (!inited) {
        if (pt_init() != 0) abort();
        inited = 1;
    }
    if (size < 1) return 0;
    static fz_sess f; /* static: the echo copies are large */
    memset(&f, 0, sizeof f);
    fz_env env;
    fz_env_init(&env, 0);
    f.server = !(data[0] & 1);
    f.refuse_some = data[0] & 4;
    bool reconnect = data[0] & 2;
    fz_salt_secret(f.secret);
    pt_sess_config cfg = {.role = f.server ? PT_SESS_SERVER : PT_SESS_CLIENT,
                          .session_id = FZ_SESSION_ID,
                          .salt_secret = f.server ? f.secret : NULL,
                          .salt = pt_sess_salt_for(f.secret, FZ_NOW_MS)};
    if (!(f.s = pt_sess_new(&env.env, &cfg))) abort();
    f.expect_sid = FZ_SESSION_ID;
    if (!f.server) {
        client_opening(&f);
        flush(&f);
    }

    if (data[0] & 8) {
        size_t wlen;
        const uint8_t *w = warm_record(f.server, &wlen);
        if (pt_sess_input(f.s, w, wlen, on_event, &f) != 0 || f.ncalls) abort();
        flush(&f);
    }

    size_t off = 1;
    while (size - off >= 2) {
        size_t len = (size_t)data[off] | (size_t)data[off + 1] << 8;
        off += 2;
        if (len > size - off) len = size - off;
        uint64_t renewals = pt_sess_renewals(f.s);
        int rc = pt_sess_input(f.s, data + off, len, on_event, &f);
        off += len;
        /* a client renews its session (PT_ERR_CLOSED) after a clock correction that
         * would take its ids down, and only then */
        bool renewed = pt_sess_renewals(f.s) != renewals;
        if (renewed != (rc == PT_ERR_CLOSED) || (renewed && f.server)) abort();
        if (renewed) { /* a new id, and records carry it from now on */
            if (pt_sess_id(f.s) == f.expect_sid) abort();
            f.expect_sid = pt_sess_id(f.s);
        }
        bool allowed = rc == 0 || rc == PT_ERR_DECODE || rc == PT_ERR_PROTO || rc == PT_ERR_TOO_BIG;
        if (!allowed && !renewed) abort();
        answer_calls(&f);
        if (rc != 0 || reconnect) pt_sess_resume(f.s); /* a new connection */
        flush(&f);
    }
    pt_sess_free(f.s);
    return 0;
}
