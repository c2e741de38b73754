/* The session layer, client and server in memory (records passed directly). */
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

#include "pt_tl.h"
#include "session/pt_sess.h"
#include "testutil.h"

#define MAX_EVENTS 4096

typedef struct peer {
    pt_sess *s;
    pt_buf recs[512];    /* records emitted by the last flush(es), not yet delivered */
    size_t nrecs;
    pt_sess_event ev[MAX_EVENTS];
    uint8_t *bodies[MAX_EVENTS];
    size_t nev;
} peer;

static uint8_t secret[PT_SESS_SALT_SECRET_LEN];
static pt_test_env tenv;

static void on_event(void *ud, const pt_sess_event *ev)
{
    peer *p = ud;
    assert_true(p->nev < MAX_EVENTS);
    p->ev[p->nev] = *ev;
    p->bodies[p->nev] = NULL;
    if (ev->len) {
        p->bodies[p->nev] = malloc(ev->len);
        memcpy(p->bodies[p->nev], ev->body, ev->len);
        p->ev[p->nev].body = p->bodies[p->nev];
    }
    p->nev++;
}

static int on_emit(void *ud, const uint8_t *rec, size_t len)
{
    peer *p = ud;
    assert_true(p->nrecs < PT_ARRAY_LEN(p->recs));
    pt_buf_init(&p->recs[p->nrecs]);
    assert_int_equal(pt_buf_append(&p->recs[p->nrecs], rec, len), 0);
    p->nrecs++;
    return 0;
}

static void peer_clear_events(peer *p)
{
    for (size_t i = 0; i < p->nev; i++) free(p->bodies[i]);
    p->nev = 0;
}

static void peer_drop_records(peer *p)
{
    for (size_t i = 0; i < p->nrecs; i++) pt_buf_free(&p->recs[i]);
    p->nrecs = 0;
}

static void peers_new(peer *cl, peer *sv, uint64_t sid)
{
    memset(cl, 0, sizeof *cl);
    memset(sv, 0, sizeof *sv);
    pt_sess_config cc = {.role = PT_SESS_CLIENT, .session_id = sid,
                         .salt = pt_sess_salt_for(secret, tenv.now_ms)};
    pt_sess_config sc = {.role = PT_SESS_SERVER, .session_id = sid, .salt_secret = secret};
    cl->s = pt_sess_new(&tenv.env, &cc);
    sv->s = pt_sess_new(&tenv.env, &sc);
    assert_non_null(cl->s);
    assert_non_null(sv->s);
}

static void peers_free(peer *cl, peer *sv)
{
    peer *ps[2] = {cl, sv};
    for (int i = 0; i < 2; i++) {
        peer_clear_events(ps[i]);
        peer_drop_records(ps[i]);
        pt_sess_free(ps[i]->s);
    }
}

/* Flushes a and delivers its records to b (the first `limit` of them; the rest are lost). */
static void deliver(peer *a, peer *b, size_t limit)
{
    assert_int_equal(pt_sess_flush(a->s, on_emit, a), 0);
    for (size_t i = 0; i < a->nrecs && i < limit; i++)
        assert_int_equal(pt_sess_input(b->s, a->recs[i].data, a->recs[i].len, on_event, b), 0);
    peer_drop_records(a);
}

static void exchange(peer *cl, peer *sv, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        deliver(cl, sv, SIZE_MAX);
        deliver(sv, cl, SIZE_MAX);
    }
}

static size_t count(const peer *p, pt_sess_ev_type t)
{
    size_t n = 0;
    for (size_t i = 0; i < p->nev; i++) n += p->ev[i].type == t;
    return n;
}

static const pt_sess_event *find_bad(const peer *p, int code)
{
    for (size_t i = 0; i < p->nev; i++)
        if (p->ev[i].type == PT_SESS_EV_BAD_MSG && p->ev[i].value == code) return &p->ev[i];
    return NULL;
}

static void encode_echo(pt_buf *b, uint32_t n)
{
    uint8_t payload[8];
    pt_put_u32le(payload, n);
    pt_put_u32le(payload + 4, ~n);
    pt_tl_pt_echo e = {.payload = {payload, sizeof payload}};
    pt_buf_reset(b);
    assert_int_equal(pt_tl_pt_echo_encode(b, &e), 0);
}

/* The server answers every CALL with rpc_result(echoResult(payload)). */
static void serve_calls(peer *sv)
{
    pt_buf out;
    pt_buf_init(&out);
    for (size_t i = 0; i < sv->nev; i++) {
        if (sv->ev[i].type != PT_SESS_EV_CALL) continue;
        uint8_t arena_mem[1024];
        pt_arena a;
        pt_arena_init(&a, arena_mem, sizeof arena_mem);
        pt_tl_pt_echo e;
        assert_int_equal(pt_tl_pt_echo_decode(&e, sv->ev[i].body, sv->ev[i].len, &a), 0);
        pt_tl_pt_echoResult r = {.payload = e.payload};
        pt_buf_reset(&out);
        assert_int_equal(pt_tl_pt_echoResult_encode(&out, &r), 0);
        assert_int_equal(pt_sess_reply(sv->s, sv->ev[i].msg_id, out.data, out.len), 0);
    }
    pt_buf_free(&out);
    peer_clear_events(sv);
}

static void test_call_result_ack(void **state)
{
    (void)state;
    peer cl, sv;
    peers_new(&cl, &sv, 0x1122334455667788ull);
    pt_buf b;
    pt_buf_init(&b);
    uint64_t ids[10];
    for (uint32_t i = 0; i < 10; i++) {
        encode_echo(&b, i);
        assert_int_equal(pt_sess_send(cl.s, b.data, b.len, false, &ids[i]), 0);
        assert_int_equal(ids[i] % 4, 0);
        if (i) assert_true(ids[i] > ids[i - 1]);
    }
    assert_int_equal(pt_sess_flush(cl.s, on_emit, &cl), 0);
    assert_int_equal(cl.nrecs, 1); /* ten messages, one container */
    for (size_t i = 0; i < cl.nrecs; i++)
        assert_int_equal(pt_sess_input(sv.s, cl.recs[i].data, cl.recs[i].len, on_event, &sv), 0);
    peer_drop_records(&cl);
    assert_int_equal(count(&sv, PT_SESS_EV_CALL), 10);
    for (uint32_t i = 0; i < 10; i++) assert_int_equal(sv.ev[i].msg_id, ids[i]);
    serve_calls(&sv);
    deliver(&sv, &cl, SIZE_MAX);
    assert_int_equal(count(&cl, PT_SESS_EV_RESULT), 10);
    assert_int_equal(pt_sess_unacked(cl.s), 0); /* results imply acks */
    for (size_t i = 0; i < cl.nev; i++) {
        if (cl.ev[i].type != PT_SESS_EV_RESULT) continue;
        assert_int_equal(cl.ev[i].msg_id % 4, 1);
    }
    tenv.now_ms += PT_SESS_ACK_DELAY_MS; /* the client's acks, due now */
    deliver(&cl, &sv, SIZE_MAX);
    assert_int_equal(pt_sess_unacked(sv.s), 0);
    pt_buf_free(&b);
    peers_free(&cl, &sv);
}

/* Replies in another order than the calls, and calls queued between them: each
 * result names its call, and every acknowledgement (a result, or the server's
 * msgs_ack) finds its message in the queue (a binary search over the ids in queue
 * order); a reply naming no call of ours changes nothing. */
static void test_results_out_of_order(void **state)
{
    (void)state;
    peer cl, sv;
    peers_new(&cl, &sv, 0x2233445566778899ull);
    pt_buf b, out;
    pt_buf_init(&b);
    pt_buf_init(&out);
    enum { N = 300 };
    uint64_t ids[N], req[N];
    for (uint32_t i = 0; i < N; i++) {
        encode_echo(&b, i);
        assert_int_equal(pt_sess_send(cl.s, b.data, b.len, false, &ids[i]), 0);
        if (i % 100 == 99) deliver(&cl, &sv, SIZE_MAX); /* three flushes */
    }
    assert_int_equal(count(&sv, PT_SESS_EV_CALL), N);
    for (uint32_t i = 0; i < N; i++) req[i] = sv.ev[i].msg_id;
    peer_clear_events(&sv);
    assert_int_equal(pt_sess_unacked(cl.s), N);
    /* the server answers every 7th call of a permutation (7 and 300 are coprime),
     * two hundred in all, then a call that is no call of the client's */
    pt_tl_pt_echoResult r = {.payload = {(const uint8_t *)"x", 1}};
    assert_int_equal(pt_tl_pt_echoResult_encode(&out, &r), 0);
    for (uint32_t k = 0; k < 200; k++)
        assert_int_equal(pt_sess_reply(sv.s, req[(k * 7) % N], out.data, out.len), 0);
    assert_int_equal(pt_sess_reply(sv.s, ids[N - 1] + 4, out.data, out.len), 0);
    deliver(&sv, &cl, SIZE_MAX);
    assert_int_equal(count(&cl, PT_SESS_EV_RESULT), 201);
    assert_int_equal(pt_sess_unacked(cl.s), 0); /* results, and the server's acks of the rest */
    bool answered[N] = {false};
    for (size_t i = 0; i < cl.nev; i++) {
        if (cl.ev[i].type != PT_SESS_EV_RESULT || cl.ev[i].req_msg_id == ids[N - 1] + 4) continue;
        size_t j = 0;
        while (j < N && ids[j] != cl.ev[i].req_msg_id) j++;
        assert_true(j < N);
        assert_false(answered[j]);
        answered[j] = true;
    }
    for (uint32_t k = 0; k < 200; k++) assert_true(answered[(k * 7) % N]);
    peer_clear_events(&cl);
    /* more calls queued behind the hundred left, then the rest answered */
    uint64_t more[10];
    for (uint32_t i = 0; i < 10; i++) {
        encode_echo(&b, N + i);
        assert_int_equal(pt_sess_send(cl.s, b.data, b.len, false, &more[i]), 0);
        assert_true(more[i] > ids[N - 1]);
    }
    deliver(&cl, &sv, SIZE_MAX);
    assert_int_equal(count(&sv, PT_SESS_EV_CALL), 10);
    serve_calls(&sv);
    for (uint32_t k = 200; k < N; k++)
        assert_int_equal(pt_sess_reply(sv.s, req[(k * 7) % N], out.data, out.len), 0);
    deliver(&sv, &cl, SIZE_MAX);
    assert_int_equal(count(&cl, PT_SESS_EV_RESULT), 110);
    assert_int_equal(pt_sess_unacked(cl.s), 0);
    pt_buf_free(&b);
    pt_buf_free(&out);
    peers_free(&cl, &sv);
}

/* The messages of one record: 1, or a container's count. Sets *acks to the number of
 * msgs_ack among them and *results to the rpc_results. */
static uint32_t record_messages(const pt_buf *r, uint32_t *acks, uint32_t *results)
{
    const uint8_t *body = r->data + PT_SESS_HDR_LEN;
    size_t len = r->len - PT_SESS_HDR_LEN;
    *acks = *results = 0;
    if (pt_get_u32le(body) != PT_SESS_CONTAINER_ID) {
        *acks = pt_get_u32le(body) == PT_TL_MSGS_ACK_ID;
        *results = pt_get_u32le(body) == PT_TL_RPC_RESULT_ID;
        return 1;
    }
    uint32_t n = pt_get_u32le(body + 4);
    size_t off = PT_SESS_CONTAINER_HDR;
    for (uint32_t i = 0; i < n; i++) {
        assert_true(off + PT_SESS_INNER_HDR + 4 <= len);
        uint32_t ctor = pt_get_u32le(body + off + PT_SESS_INNER_HDR);
        *acks += ctor == PT_TL_MSGS_ACK_ID;
        *results += ctor == PT_TL_RPC_RESULT_ID;
        off += PT_SESS_INNER_HDR + pt_get_u32le(body + off + 12);
    }
    return n;
}

/* A server message whose record was lost on a quiet connection: once it is older
 * than the probe's age the server queues a ping, whose record shows the client the
 * gap (here its seqno; on a channel first the skipped nonce), at most one per
 * PT_SESS_PROBE_EVERY_MS. A client that only had not acknowledged yet answers the
 * ping with the acknowledgement; acknowledged output is never probed. */
static void test_probe_unacked(void **state)
{
    (void)state;
    peer cl, sv;
    peers_new(&cl, &sv, 78);
    pt_buf b;
    pt_buf_init(&b);
    encode_echo(&b, 1);
    assert_int_equal(pt_sess_send(sv.s, b.data, b.len, false, NULL), 0);
    tenv.now_ms += 5000;
    assert_int_equal(pt_sess_probe(sv.s, 1000), 0); /* queued, never sent: nothing lost */
    deliver(&sv, &cl, 0);                             /* sent; its record is lost */
    assert_int_equal(pt_sess_unacked(sv.s), 1);
    /* its id is 5 s old (ids carry the clock they were made at) */
    assert_int_equal(pt_sess_probe(sv.s, 1000), 1);
    assert_int_equal(pt_sess_probe(sv.s, 1000), 0); /* one per PT_SESS_PROBE_EVERY_MS */
    deliver(&sv, &cl, SIZE_MAX);                      /* the ping */
    deliver(&cl, &sv, SIZE_MAX);
    assert_non_null(find_bad(&sv, PT_BAD_MSG_SEQNO_HIGH)); /* the gap, seen (packtrackd closes) */
    assert_int_equal(count(&sv, PT_SESS_EV_PONG), 0);
    assert_int_equal(pt_sess_unacked(sv.s), 2);           /* the message and the ping */
    tenv.now_ms += 60000;
    assert_int_equal(pt_sess_probe(sv.s, 1000), 0); /* its ping is still out: no other */
    peers_free(&cl, &sv);

    /* delivered, not acknowledged yet: a message made now is young until age_ms; the
     * client answers the ping with a pong and acknowledges both */
    peers_new(&cl, &sv, 79);
    encode_echo(&b, 2);
    assert_int_equal(pt_sess_send(sv.s, b.data, b.len, false, NULL), 0);
    deliver(&sv, &cl, SIZE_MAX);
    assert_int_equal(count(&cl, PT_SESS_EV_UPDATE), 1);
    tenv.now_ms += 999;
    assert_int_equal(pt_sess_probe(sv.s, 1000), 0);
    tenv.now_ms += 2;
    assert_int_equal(pt_sess_probe(sv.s, 1000), 1);
    deliver(&sv, &cl, SIZE_MAX);
    deliver(&cl, &sv, SIZE_MAX); /* the pong, with the pending ack */
    assert_int_equal(count(&sv, PT_SESS_EV_PONG), 1);
    assert_int_equal(pt_sess_unacked(sv.s), 0);
    tenv.now_ms += 60000;
    assert_int_equal(pt_sess_probe(sv.s, 1000), 0); /* nothing left to probe */
    /* the ping answered, the next unacknowledged message is probed again */
    encode_echo(&b, 3);
    assert_int_equal(pt_sess_send(sv.s, b.data, b.len, false, NULL), 0);
    deliver(&sv, &cl, 0);
    tenv.now_ms += 1001;
    assert_int_equal(pt_sess_probe(sv.s, 1000), 1);
    pt_buf_free(&b);
    peers_free(&cl, &sv);
}

/* Acknowledgements wait for other output: an answer acknowledges its request without a
 * msgs_ack, acks ride in the records of other messages, and go alone only once due. */
static void test_acks_wait_for_output(void **state)
{
    (void)state;
    peer cl, sv;
    peers_new(&cl, &sv, 77);
    pt_buf b;
    pt_buf_init(&b);
    uint32_t acks, results;
    for (uint32_t i = 0; i < 3; i++) {
        encode_echo(&b, i);
        assert_int_equal(pt_sess_send(cl.s, b.data, b.len, false, NULL), 0);
    }
    deliver(&cl, &sv, SIZE_MAX);
    assert_int_equal(count(&sv, PT_SESS_EV_CALL), 3);
    /* the calls are not answered yet: their acks wait */
    assert_true(pt_sess_acks_pending(sv.s));
    assert_false(pt_sess_has_output(sv.s));
    assert_int_equal(pt_sess_ack_wait_ms(sv.s), PT_SESS_ACK_DELAY_MS);
    assert_int_equal(pt_sess_flush(sv.s, on_emit, &sv), 0);
    assert_int_equal(sv.nrecs, 0);
    tenv.now_ms += PT_SESS_ACK_DELAY_MS - 1;
    assert_int_equal(pt_sess_ack_wait_ms(sv.s), 1);
    /* answered in time: the results are the acks, no msgs_ack goes */
    serve_calls(&sv);
    assert_false(pt_sess_acks_pending(sv.s));
    assert_int_equal(pt_sess_ack_wait_ms(sv.s), -1);
    assert_int_equal(pt_sess_flush(sv.s, on_emit, &sv), 0);
    assert_int_equal(sv.nrecs, 1);
    assert_int_equal(record_messages(&sv.recs[0], &acks, &results), 3);
    assert_int_equal(acks, 0);
    assert_int_equal(results, 3);
    for (size_t i = 0; i < sv.nrecs; i++)
        assert_int_equal(pt_sess_input(cl.s, sv.recs[i].data, sv.recs[i].len, on_event, &cl), 0);
    peer_drop_records(&sv);
    assert_int_equal(count(&cl, PT_SESS_EV_RESULT), 3);
    assert_int_equal(pt_sess_unacked(cl.s), 0);
    /* the client's acks of the results wait too, and ride with its next call */
    assert_int_equal(pt_sess_flush(cl.s, on_emit, &cl), 0);
    assert_int_equal(cl.nrecs, 0);
    encode_echo(&b, 3);
    assert_int_equal(pt_sess_send(cl.s, b.data, b.len, false, NULL), 0);
    assert_int_equal(pt_sess_flush(cl.s, on_emit, &cl), 0);
    assert_int_equal(cl.nrecs, 1);
    assert_int_equal(record_messages(&cl.recs[0], &acks, &results), 2); /* the call + msgs_ack */
    assert_int_equal(acks, 1);
    assert_false(pt_sess_acks_pending(cl.s));
    for (size_t i = 0; i < cl.nrecs; i++)
        assert_int_equal(pt_sess_input(sv.s, cl.recs[i].data, cl.recs[i].len, on_event, &sv), 0);
    peer_drop_records(&cl);
    assert_int_equal(pt_sess_unacked(sv.s), 0); /* the three results were acknowledged */
    /* not answered: the ack goes alone once due */
    peer_clear_events(&sv);
    assert_int_equal(pt_sess_flush(sv.s, on_emit, &sv), 0);
    assert_int_equal(sv.nrecs, 0);
    tenv.now_ms += PT_SESS_ACK_DELAY_MS;
    assert_true(pt_sess_has_output(sv.s));
    assert_int_equal(pt_sess_ack_wait_ms(sv.s), 0);
    assert_int_equal(pt_sess_flush(sv.s, on_emit, &sv), 0);
    assert_int_equal(sv.nrecs, 1);
    assert_int_equal(record_messages(&sv.recs[0], &acks, &results), 1);
    assert_int_equal(acks, 1);
    for (size_t i = 0; i < sv.nrecs; i++)
        assert_int_equal(pt_sess_input(cl.s, sv.recs[i].data, sv.recs[i].len, on_event, &cl), 0);
    peer_drop_records(&sv);
    assert_int_equal(pt_sess_unacked(cl.s), 0);
    /* a burst of PT_SESS_ACK_BATCH is due at once */
    for (uint32_t i = 0; i < PT_SESS_ACK_BATCH; i++) {
        encode_echo(&b, 100 + i);
        assert_int_equal(pt_sess_send(cl.s, b.data, b.len, false, NULL), 0);
    }
    deliver(&cl, &sv, SIZE_MAX);
    peer_clear_events(&sv);
    assert_int_equal(pt_sess_ack_wait_ms(sv.s), 0);
    deliver(&sv, &cl, SIZE_MAX);
    assert_int_equal(pt_sess_unacked(cl.s), 0);
    pt_buf_free(&b);
    peers_free(&cl, &sv);
}

/* Records lost in both directions; both sides resume on a "new connection". */
static void test_resume_exactly_once(void **state)
{
    (void)state;
    peer cl, sv;
    peers_new(&cl, &sv, 42);
    pt_buf b;
    pt_buf_init(&b);
    size_t calls = 0, results = 0;
    uint32_t next = 0;
    for (int round = 0; round < 20; round++) {
        for (int k = 0; k < 7; k++) {
            encode_echo(&b, next++);
            assert_int_equal(pt_sess_send(cl.s, b.data, b.len, false, NULL), 0);
            deliver(&cl, &sv, (size_t)(round + k) % 3 == 0 ? 0 : SIZE_MAX); /* some lost */
        }
        calls += count(&sv, PT_SESS_EV_CALL);
        serve_calls(&sv);
        deliver(&sv, &cl, (size_t)round % 2); /* the server's first record only, or none */
        results += count(&cl, PT_SESS_EV_RESULT);
        peer_clear_events(&cl);
        /* the connection drops; a new one carries the same session */
        pt_sess_resume(cl.s);
        pt_sess_resume(sv.s);
        for (int k = 0; k < 3; k++) {
            deliver(&cl, &sv, SIZE_MAX);
            calls += count(&sv, PT_SESS_EV_CALL);
            serve_calls(&sv);
            deliver(&sv, &cl, SIZE_MAX);
            results += count(&cl, PT_SESS_EV_RESULT);
            peer_clear_events(&cl);
        }
    }
    assert_int_equal(calls, next);   /* every call reached the server exactly once */
    assert_int_equal(results, next); /* every result reached the client exactly once */
    assert_int_equal(pt_sess_unacked(cl.s), 0);
    tenv.now_ms += PT_SESS_ACK_DELAY_MS; /* the client's last acks are due */
    exchange(&cl, &sv, 2);
    assert_int_equal(pt_sess_unacked(sv.s), 0);
    pt_buf_free(&b);
    peers_free(&cl, &sv);
}

/* Builds a raw client record. */
static void raw_record(pt_buf *r, uint64_t salt, uint64_t sid, uint64_t msg_id, uint32_t seqno,
                       const uint8_t *body, size_t len)
{
    pt_buf_reset(r);
    uint8_t *h = pt_buf_extend(r, 32);
    pt_put_u64le(h, salt);
    pt_put_u64le(h + 8, sid);
    pt_put_u64le(h + 16, msg_id);
    pt_put_u32le(h + 24, seqno);
    pt_put_u32le(h + 28, (uint32_t)len);
    assert_int_equal(pt_buf_append(r, body, len), 0);
}

static uint64_t id_at(uint64_t ms) { return ((ms / 1000) << 32 | ((ms % 1000) << 32) / 1000) & ~3ull; }

static void expect_bad(peer *sv, peer *cl, const pt_buf *rec, int code)
{
    peer_clear_events(cl);
    peer_clear_events(sv);
    assert_int_equal(pt_sess_input(sv->s, rec->data, rec->len, on_event, sv), 0);
    assert_int_equal(count(sv, PT_SESS_EV_CALL), 0);
    deliver(sv, cl, SIZE_MAX);
    const pt_sess_event *e = find_bad(cl, code);
    if (!e) fail_msg("expected bad_msg_notification code %d", code);
}

static void test_bad_msg_notifications(void **state)
{
    (void)state;
    peer cl, sv;
    peers_new(&cl, &sv, 7);
    pt_buf b, r;
    pt_buf_init(&b);
    pt_buf_init(&r);
    encode_echo(&b, 1);
    uint64_t salt = pt_sess_salt_for(secret, tenv.now_ms), now = tenv.now_ms;

    raw_record(&r, salt, 7, id_at(now - 301000), 1, b.data, b.len);
    expect_bad(&sv, &cl, &r, PT_BAD_MSG_ID_TOO_LOW);
    raw_record(&r, salt, 7, id_at(now + 31000), 1, b.data, b.len);
    expect_bad(&sv, &cl, &r, PT_BAD_MSG_ID_TOO_HIGH);
    raw_record(&r, salt, 7, id_at(now) | 1, 1, b.data, b.len);
    expect_bad(&sv, &cl, &r, PT_BAD_MSG_ID_PARITY);
    raw_record(&r, salt, 7, id_at(now), 2, b.data, b.len);
    expect_bad(&sv, &cl, &r, PT_BAD_MSG_ODD_EXPECTED);
    raw_record(&r, salt, 7, id_at(now), 5, b.data, b.len);
    expect_bad(&sv, &cl, &r, PT_BAD_MSG_SEQNO_HIGH);
    raw_record(&r, salt ^ 1, 7, id_at(now), 1, b.data, b.len);
    expect_bad(&sv, &cl, &r, PT_BAD_MSG_SALT);

    /* accepted once, then the same message again is a duplicate */
    raw_record(&r, salt, 7, id_at(now), 1, b.data, b.len);
    peer_clear_events(&sv);
    assert_int_equal(pt_sess_input(sv.s, r.data, r.len, on_event, &sv), 0);
    assert_int_equal(count(&sv, PT_SESS_EV_CALL), 1);
    expect_bad(&sv, &cl, &r, PT_BAD_MSG_DUPLICATE);
    /* a lower seqno than expected */
    raw_record(&r, salt, 7, id_at(now) + 4, 1, b.data, b.len);
    expect_bad(&sv, &cl, &r, PT_BAD_MSG_SEQNO_LOW);
    /* a non-content message with an odd seqno */
    pt_tl_msgs_ack ack = {.msg_ids = {.n = 0, .items = NULL}};
    pt_buf_reset(&b);
    assert_int_equal(pt_tl_msgs_ack_encode(&b, &ack), 0);
    raw_record(&r, salt, 7, id_at(now) + 8, 3, b.data, b.len);
    expect_bad(&sv, &cl, &r, PT_BAD_MSG_EVEN_EXPECTED);
    /* a container inside a container */
    uint8_t cont[8 + 16 + 8];
    pt_put_u32le(cont, PT_SESS_CONTAINER_ID);
    pt_put_u32le(cont + 4, 1);
    pt_put_u64le(cont + 8, id_at(now) + 12);
    pt_put_u32le(cont + 16, 2);
    pt_put_u32le(cont + 20, 8);
    pt_put_u32le(cont + 24, PT_SESS_CONTAINER_ID);
    pt_put_u32le(cont + 28, 0);
    raw_record(&r, salt, 7, id_at(now) + 16, 2, cont, sizeof cont);
    expect_bad(&sv, &cl, &r, PT_BAD_MSG_CONTAINER);
    /* a container whose inner length overruns it */
    pt_put_u32le(cont + 20, 100);
    raw_record(&r, salt, 7, id_at(now) + 20, 2, cont, sizeof cont);
    expect_bad(&sv, &cl, &r, PT_BAD_MSG_CONTAINER);
    /* malformed records close the connection */
    assert_int_equal(pt_sess_input(sv.s, r.data, 20, on_event, &sv), PT_ERR_DECODE);
    raw_record(&r, salt, 7, id_at(now) + 24, 3, b.data, b.len);
    pt_put_u32le(r.data + 28, 999);
    assert_int_equal(pt_sess_input(sv.s, r.data, r.len, on_event, &sv), PT_ERR_DECODE);
    raw_record(&r, salt, 8, id_at(now) + 24, 3, b.data, b.len);
    assert_int_equal(pt_sess_input(sv.s, r.data, r.len, on_event, &sv), PT_ERR_PROTO);
    pt_buf_free(&b);
    pt_buf_free(&r);
    peers_free(&cl, &sv);
}

/* A message renewed by a bad_msg_notification keeps its place in the queue (and its
 * seqno, which the server checks in order) with an id above those queued after it:
 * its result still finds it and names the id the application was given, and nothing
 * stays unacknowledged. */
static void test_renewed_in_the_middle(void **state)
{
    (void)state;
    peer cl, sv;
    peers_new(&cl, &sv, 0x3344556677889900ull);
    pt_buf b;
    pt_buf_init(&b);
    uint64_t ids[10];
    encode_echo(&b, 0);
    assert_int_equal(pt_sess_send(cl.s, b.data, b.len, false, &ids[0]), 0);
    assert_int_equal(pt_sess_flush(cl.s, on_emit, &cl), 0); /* its record waits... */
    assert_int_equal(cl.nrecs, 1);
    tenv.now_ms += 301000; /* ...until its id is too old for the server */
    for (uint32_t i = 1; i < 10; i++) {
        encode_echo(&b, i);
        assert_int_equal(pt_sess_send(cl.s, b.data, b.len, false, &ids[i]), 0);
        assert_true(ids[i] > ids[i - 1]);
    }
    assert_int_equal(pt_sess_input(sv.s, cl.recs[0].data, cl.recs[0].len, on_event, &sv), 0);
    peer_drop_records(&cl);
    assert_int_equal(count(&sv, PT_SESS_EV_CALL), 0);
    deliver(&sv, &cl, SIZE_MAX);
    assert_non_null(find_bad(&cl, PT_BAD_MSG_ID_TOO_LOW)); /* the client renews its id */
    peer_clear_events(&cl);
    deliver(&cl, &sv, SIZE_MAX); /* all ten, the renewed one first */
    assert_int_equal(count(&sv, PT_SESS_EV_CALL), 10);
    serve_calls(&sv);
    deliver(&sv, &cl, SIZE_MAX);
    assert_int_equal(count(&cl, PT_SESS_EV_RESULT), 10);
    bool seen[10] = {false};
    for (size_t i = 0; i < cl.nev; i++) {
        if (cl.ev[i].type != PT_SESS_EV_RESULT) continue;
        size_t j = 0;
        while (j < 10 && ids[j] != cl.ev[i].req_msg_id) j++;
        assert_true(j < 10);
        assert_false(seen[j]);
        seen[j] = true;
    }
    assert_int_equal(pt_sess_unacked(cl.s), 0);
    pt_buf_free(&b);
    peers_free(&cl, &sv);
}

/* A client with a stale salt and a skewed clock recovers by itself. */
static void test_salt_and_clock_recovery(void **state)
{
    (void)state;
    peer cl, sv;
    memset(&cl, 0, sizeof cl);
    memset(&sv, 0, sizeof sv);
    pt_sess_config cc = {.role = PT_SESS_CLIENT, .session_id = 9, .salt = 12345,
                         .time_offset_ms = -3600 * 1000};
    pt_sess_config sc = {.role = PT_SESS_SERVER, .session_id = 9, .salt_secret = secret};
    cl.s = pt_sess_new(&tenv.env, &cc);
    sv.s = pt_sess_new(&tenv.env, &sc);
    pt_buf b;
    pt_buf_init(&b);
    encode_echo(&b, 77);
    assert_int_equal(pt_sess_send(cl.s, b.data, b.len, false, NULL), 0);
    for (int i = 0; i < 4; i++) {
        deliver(&cl, &sv, SIZE_MAX);
        serve_calls(&sv);
        deliver(&sv, &cl, SIZE_MAX);
    }
    assert_non_null(find_bad(&cl, PT_BAD_MSG_SALT));
    assert_non_null(find_bad(&cl, PT_BAD_MSG_ID_TOO_LOW));
    assert_int_equal(count(&cl, PT_SESS_EV_RESULT), 1);
    assert_int_equal(pt_sess_salt_now(cl.s), pt_sess_salt_for(secret, tenv.now_ms));
    pt_buf_free(&b);
    peers_free(&cl, &sv);
}

/* The server's records carry the salt of the period they are sent in: the session
 * keeps the period's salt, and takes the next one when the clock moves on. */
static uint64_t clock_saved; /* restored by restore_clock, even after a failure */

static int restore_clock(void **state)
{
    (void)state;
    tenv.now_ms = clock_saved;
    return 0;
}

static void test_server_salt_follows_the_clock(void **state)
{
    (void)state;
    clock_saved = tenv.now_ms;
    peer cl, sv;
    peers_new(&cl, &sv, 12);
    uint64_t salts[3];
    for (int k = 0; k < 3; k++) {
        assert_int_equal(pt_sess_created(sv.s, 1000 + (uint64_t)k), 0);
        assert_int_equal(pt_sess_flush(sv.s, on_emit, &sv), 0);
        assert_int_equal(sv.nrecs, 1);
        salts[k] = pt_get_u64le(sv.recs[0].data);
        assert_int_equal(salts[k], pt_sess_salt_for(secret, tenv.now_ms));
        assert_int_equal(pt_sess_salt_now(sv.s), salts[k]);
        peer_drop_records(&sv);
        tenv.now_ms += PT_SESS_SALT_PERIOD_S * 1000ull; /* the next period */
    }
    assert_true(salts[0] != salts[1] && salts[1] != salts[2]);
    peers_free(&cl, &sv);
}

/* Defect 9 (docs/RELIABILITY.md): a client clock more than PT_SESS_FUTURE_S ahead.
 * Renewing the rejected ids could not bring them down (ids increase per session), so
 * before the fix every resend was rejected again until the real clock caught up.
 * Now the first rejection renews the session: new id, ids from the corrected clock,
 * the calls resent under the ids the caller knows, answered once each. */
static void test_clock_ahead_renews_session(void **state)
{
    (void)state;
    int64_t skews_ms[] = {301 * 1000, 31 * 1000, 3600 * 1000};
    for (size_t k = 0; k < PT_ARRAY_LEN(skews_ms); k++) {
        peer cl, sv;
        memset(&cl, 0, sizeof cl);
        memset(&sv, 0, sizeof sv);
        pt_sess_config cc = {.role = PT_SESS_CLIENT, .session_id = 41,
                             .salt = pt_sess_salt_for(secret, tenv.now_ms),
                             .time_offset_ms = skews_ms[k]};
        pt_sess_config sc = {.role = PT_SESS_SERVER, .session_id = 41, .salt_secret = secret};
        cl.s = pt_sess_new(&tenv.env, &cc);
        sv.s = pt_sess_new(&tenv.env, &sc);
        pt_buf b;
        pt_buf_init(&b);
        uint64_t ids[3];
        for (uint32_t i = 0; i < 3; i++) {
            encode_echo(&b, 100 + i);
            assert_int_equal(pt_sess_send(cl.s, b.data, b.len, false, &ids[i]), 0);
        }
        deliver(&cl, &sv, SIZE_MAX);
        assert_int_equal(count(&sv, PT_SESS_EV_CALL), 0); /* all three too new */
        assert_int_equal(pt_sess_flush(sv.s, on_emit, &sv), 0);
        int rc = 0;
        for (size_t i = 0; i < sv.nrecs && rc == 0; i++)
            rc = pt_sess_input(cl.s, sv.recs[i].data, sv.recs[i].len, on_event, &cl);
        peer_drop_records(&sv);
        assert_int_equal(rc, PT_ERR_CLOSED); /* reconnect: the old connection has the old session */
        assert_non_null(find_bad(&cl, PT_BAD_MSG_ID_TOO_HIGH));
        assert_int_equal(pt_sess_renewals(cl.s), 1);
        assert_int_not_equal(pt_sess_id(cl.s), 41);
        int64_t off = pt_sess_time_offset_ms(cl.s);
        assert_true(off > -1000 && off < 1000); /* the server's clock is the test's */
        assert_int_equal(pt_sess_unacked(cl.s), 3);
        peer_clear_events(&cl);

        /* the new connection: the server makes the session the client names */
        pt_sess_free(sv.s);
        sc.session_id = pt_sess_id(cl.s);
        sv.s = pt_sess_new(&tenv.env, &sc);
        pt_sess_resume(cl.s);
        for (int r = 0; r < 3; r++) {
            deliver(&cl, &sv, SIZE_MAX);
            serve_calls(&sv);
            deliver(&sv, &cl, SIZE_MAX);
        }
        assert_null(find_bad(&cl, PT_BAD_MSG_ID_TOO_HIGH)); /* one round trip, no more */
        assert_int_equal(count(&cl, PT_SESS_EV_RESULT), 3);
        for (size_t i = 0; i < cl.nev; i++)
            if (cl.ev[i].type == PT_SESS_EV_RESULT)
                assert_true(cl.ev[i].req_msg_id == ids[0] || cl.ev[i].req_msg_id == ids[1] ||
                            cl.ev[i].req_msg_id == ids[2]);
        assert_int_equal(pt_sess_unacked(cl.s), 0);
        assert_int_equal(pt_sess_renewals(cl.s), 1);
        pt_buf_free(&b);
        peers_free(&cl, &sv);
    }
}

static void test_salt_rotation(void **state)
{
    (void)state;
    uint64_t t0 = 1700000000000ull - 1700000000000ull % 3600000ull; /* an hour boundary */
    uint64_t s0 = pt_sess_salt_for(secret, t0), s1 = pt_sess_salt_for(secret, t0 + 3600000);
    assert_true(s0 != s1);
    assert_true(pt_sess_salt_valid(secret, s0, t0 + 3599000));
    assert_true(pt_sess_salt_valid(secret, s0, t0 + 3600000 + 1799000)); /* grace */
    assert_false(pt_sess_salt_valid(secret, s0, t0 + 3600000 + 1800000));
    assert_true(pt_sess_salt_valid(secret, s1, t0 + 3600000));
    assert_false(pt_sess_salt_valid(secret, s1, t0 + 3599000)); /* not before its hour */
}

static void test_gzip_and_bomb(void **state)
{
    (void)state;
    peer cl, sv;
    peers_new(&cl, &sv, 11);
    static uint8_t big[60000];
    pt_tl_pt_echo e = {.payload = {big, sizeof big}};
    memset(big, 'a', sizeof big);
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_tl_pt_echo_encode(&b, &e), 0);
    assert_int_equal(pt_sess_send(cl.s, b.data, b.len, true, NULL), 0);
    assert_int_equal(pt_sess_flush(cl.s, on_emit, &cl), 0);
    assert_true(cl.recs[0].len < 1000); /* it travelled compressed */
    assert_int_equal(pt_sess_input(sv.s, cl.recs[0].data, cl.recs[0].len, on_event, &sv), 0);
    peer_drop_records(&cl);
    assert_int_equal(count(&sv, PT_SESS_EV_CALL), 1);
    assert_int_equal(sv.ev[0].len, b.len);
    assert_memory_equal(sv.ev[0].body, b.data, b.len);
    peer_clear_events(&sv);

    /* 16 MiB of zeros gzip to ~16 KiB: must be refused, not inflated */
    size_t n = 16u << 20;
    uint8_t *zeros = calloc(1, n);
    uLongf zl = compressBound((uLong)n) + 64;
    uint8_t *z = malloc(zl);
    z_stream zs = {0};
    assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = zeros;
    zs.avail_in = (uInt)n;
    zs.next_out = z;
    zs.avail_out = (uInt)zl;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    deflateEnd(&zs);
    pt_tl_gzip_packed g = {.packed_data = {z, (uint32_t)zs.total_out}};
    pt_buf_reset(&b);
    assert_int_equal(pt_tl_gzip_packed_encode(&b, &g), 0);
    pt_buf r;
    pt_buf_init(&r);
    raw_record(&r, pt_sess_salt_for(secret, tenv.now_ms), 11, id_at(tenv.now_ms) + 400, 3, b.data, b.len);
    assert_int_equal(pt_sess_input(sv.s, r.data, r.len, on_event, &sv), PT_ERR_TOO_BIG);
    assert_int_equal(count(&sv, PT_SESS_EV_CALL), 0);
    free(zeros);
    free(z);
    pt_buf_free(&b);
    pt_buf_free(&r);
    peers_free(&cl, &sv);
}

static void test_ping_state_resend(void **state)
{
    (void)state;
    peer cl, sv;
    peers_new(&cl, &sv, 12);
    uint64_t ping_id;
    assert_int_equal(pt_sess_ping(cl.s, 0x5eed, &ping_id), 0);
    exchange(&cl, &sv, 1);
    assert_int_equal(count(&cl, PT_SESS_EV_PONG), 1);
    assert_int_equal(count(&cl, PT_SESS_EV_ACKED), 1); /* the pong acknowledged the ping */
    const pt_sess_event *pong = cl.ev[0].type == PT_SESS_EV_PONG ? &cl.ev[0] : &cl.ev[1];
    assert_int_equal(pong->value, 0x5eed);
    assert_int_equal(pong->req_msg_id, ping_id);
    assert_int_equal(pt_sess_unacked(cl.s), 0);
    peer_clear_events(&cl);

    /* msgs_state_req: the ping is known (4), an id in range is not (2), a future one (3) */
    uint64_t ids[3] = {ping_id, ping_id + 2, ping_id + (1000ull << 32)};
    pt_buf b;
    pt_buf_init(&b);
    encode_echo(&b, 3);
    assert_int_equal(pt_sess_send(cl.s, b.data, b.len, false, NULL), 0);
    exchange(&cl, &sv, 1);
    peer_clear_events(&cl);
    assert_int_equal(pt_sess_state_req(cl.s, ids, 3), 0);
    exchange(&cl, &sv, 1);
    assert_int_equal(count(&cl, PT_SESS_EV_UPDATE), 1);
    uint8_t am[256];
    pt_arena a;
    pt_arena_init(&a, am, sizeof am);
    pt_tl_msgs_state_info info;
    assert_int_equal(pt_tl_msgs_state_info_decode(&info, cl.ev[0].body, cl.ev[0].len, &a), 0);
    assert_int_equal(info.info.len, 3);
    assert_int_equal(info.info.data[0], 4);
    assert_int_equal(info.info.data[1], 2);
    assert_int_equal(info.info.data[2], 3);

    /* msg_resend_req: the server asks again for a call it did get: a duplicate */
    peer_clear_events(&cl);
    peer_clear_events(&sv);
    uint64_t call_id;
    assert_int_equal(pt_sess_send(cl.s, b.data, b.len, false, &call_id), 0);
    deliver(&cl, &sv, SIZE_MAX);
    pt_tl_msg_resend_req rr = {.msg_ids = {.n = 1, .items = (int64_t *)&call_id}};
    pt_buf_reset(&b);
    assert_int_equal(pt_tl_msg_resend_req_encode(&b, &rr), 0);
    pt_buf r;
    pt_buf_init(&r);
    uint64_t sid;
    pt_buf_reset(&r);
    raw_record(&r, 0, 12, id_at(tenv.now_ms + 5000) | 1, 0, b.data, b.len);
    (void)sid;
    assert_int_equal(pt_sess_input(cl.s, r.data, r.len, on_event, &cl), 0);
    assert_int_equal(pt_sess_flush(cl.s, on_emit, &cl), 0);
    assert_int_equal(cl.nrecs, 1);
    peer_clear_events(&sv);
    assert_int_equal(pt_sess_input(sv.s, cl.recs[0].data, cl.recs[0].len, on_event, &sv), 0);
    assert_int_equal(count(&sv, PT_SESS_EV_CALL), 0); /* not delivered twice */
    peer_drop_records(&cl);
    pt_buf_free(&b);
    pt_buf_free(&r);
    peers_free(&cl, &sv);
}

static void test_window_too_old(void **state)
{
    (void)state;
    peer cl, sv;
    peers_new(&cl, &sv, 13);
    pt_buf b, r;
    pt_buf_init(&b);
    pt_buf_init(&r);
    pt_tl_msgs_ack ack = {.msg_ids = {.n = 0, .items = NULL}};
    assert_int_equal(pt_tl_msgs_ack_encode(&b, &ack), 0);
    uint64_t base = id_at(tenv.now_ms), salt = pt_sess_salt_for(secret, tenv.now_ms);
    for (uint64_t i = 1; i <= PT_SESS_WINDOW + 1; i++) {
        raw_record(&r, salt, 13, base + 4 * i, 0, b.data, b.len);
        assert_int_equal(pt_sess_input(sv.s, r.data, r.len, on_event, &sv), 0);
    }
    encode_echo(&b, 5);
    raw_record(&r, salt, 13, base + 4, 1, b.data, b.len); /* forgotten id */
    expect_bad(&sv, &cl, &r, PT_BAD_MSG_TOO_OLD);
    pt_buf_free(&b);
    pt_buf_free(&r);
    peers_free(&cl, &sv);
}

static void test_limits(void **state)
{
    (void)state;
    peer cl, sv;
    peers_new(&cl, &sv, 14);
    static uint8_t big[PT_SESS_BODY_MAX + 4];
    assert_int_equal(pt_sess_send(cl.s, big, sizeof big, false, NULL), PT_ERR_TOO_BIG);
    assert_int_equal(pt_sess_send(cl.s, big, 6, false, NULL), PT_ERR_INVAL);
    pt_put_u32le(big, PT_TL_PT_ECHO_ID);
    int rc = 0;
    size_t n = 0;
    while ((rc = pt_sess_send(cl.s, big, 8, false, NULL)) == 0) n++;
    assert_int_equal(rc, PT_ERR_AGAIN);
    assert_int_equal(n, PT_SESS_MAX_QUEUED);
    /* the biggest body still fits a record, even as a resend inside a container */
    peers_free(&cl, &sv);
    peers_new(&cl, &sv, 15);
    memset(big, 0, sizeof big);
    pt_put_u32le(big, PT_TL_PT_ECHO_ID);
    assert_int_equal(pt_sess_send(cl.s, big, PT_SESS_BODY_MAX, false, NULL), 0);
    assert_int_equal(pt_sess_flush(cl.s, on_emit, &cl), 0);
    pt_sess_resume(cl.s);
    peer_drop_records(&cl);
    assert_int_equal(pt_sess_flush(cl.s, on_emit, &cl), 0);
    assert_int_equal(cl.nrecs, 1);
    assert_true(cl.recs[0].len <= PT_CHAN_RECORD_MAX);
    assert_int_equal(pt_sess_input(sv.s, cl.recs[0].data, cl.recs[0].len, on_event, &sv), 0);
    assert_int_equal(count(&sv, PT_SESS_EV_CALL), 1);
    peers_free(&cl, &sv);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    pt_random(secret, sizeof secret);
    pt_test_env_init(&tenv, NULL, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_result_ack),
        cmocka_unit_test(test_results_out_of_order),
        cmocka_unit_test(test_renewed_in_the_middle),
        cmocka_unit_test(test_resume_exactly_once),
        cmocka_unit_test(test_acks_wait_for_output),
        cmocka_unit_test(test_probe_unacked),
        cmocka_unit_test(test_bad_msg_notifications),
        cmocka_unit_test(test_salt_and_clock_recovery),
        cmocka_unit_test_teardown(test_server_salt_follows_the_clock, restore_clock),
        cmocka_unit_test(test_clock_ahead_renews_session),
        cmocka_unit_test(test_salt_rotation),
        cmocka_unit_test(test_gzip_and_bomb),
        cmocka_unit_test(test_ping_state_resend),
        cmocka_unit_test(test_window_too_old),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
