/* Writes the seed corpora of fuzz_chan_server, fuzz_chan_client, fuzz_noise_read
 * and fuzz_sess_input into fuzz/corpus/<target>/ (files named seed-*; existing
 * files are overwritten, others left alone). Not part of the build: the seeds are
 * committed. It runs the real peers in the same deterministic fuzz_env as the
 * targets, so handshakes in the seeds meet the ephemeral keys the targets will
 * draw. Rerun it after changing fuzz_env.h, the wire format or the targets'
 * framing. From the repository root, after building build-fz:
 *
 *   cc -std=c17 -D_DEFAULT_SOURCE -Isrc -Iinclude -Ibuild-fz/gen -Ifuzz \
 *      fuzz/seeds/make_seeds.c build-fz/libptcore.a \
 *      $(pkg-config --libs libsodium libcrypto libuv zlib) -lpthread -o /tmp/make_seeds
 *   /tmp/make_seeds fuzz/corpus
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <zlib.h>

#include "channel/pt_chan.h"
#include "fuzz_env.h"
#include "noise/pt_noise.h"
#include "pt_tl.h"
#include "session/pt_sess.h"

static const char *root;
static int written;

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x)) {                                                            \
            fprintf(stderr, "make_seeds: %s:%d: %s failed\n", __FILE__, __LINE__, #x); \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

static void write_seed(const char *target, const char *name, const pt_buf *b)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, target);
    CHECK(mkdir(path, 0755) == 0 || errno == EEXIST);
    snprintf(path, sizeof path, "%s/%s/seed-%s", root, target, name);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(b->data, 1, b->len, f) == b->len && fclose(f) == 0);
    written++;
}

static void put(pt_buf *b, const void *p, size_t n) { CHECK(pt_buf_append(b, p, n) == 0); }
static void put_u8(pt_buf *b, uint8_t v) { put(b, &v, 1); }
static void put_u16(pt_buf *b, size_t v)
{
    CHECK(v <= 0xffff);
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put(b, x, 2);
}
static void put_u32(pt_buf *b, uint32_t v)
{
    uint8_t x[4];
    pt_put_u32le(x, v);
    put(b, x, 4);
}
static void put_u64(pt_buf *b, uint64_t v)
{
    uint8_t x[8];
    pt_put_u64le(x, v);
    put(b, x, 8);
}

/* Appends bytes as the chan targets' chunks (length byte + bytes), in sizes that
 * vary so that frames arrive split and glued. */
static void chunk(pt_buf *seed, const uint8_t *p, size_t n, unsigned *state)
{
    static const uint8_t sizes[] = {255, 5, 64, 255, 1, 200, 31, 255, 3, 128};
    while (n > 0) {
        size_t k = sizes[(*state)++ % sizeof sizes];
        if (k > n) k = n;
        put_u8(seed, (uint8_t)k);
        put(seed, p, k);
        p += k;
        n -= k;
    }
}

/* ---- channel ------------------------------------------------------------------ */

typedef struct side {
    pt_chan *c;
    fz_env env;
    pt_buf out;  /* bytes it sent, not yet delivered */
    pt_buf sent; /* everything it sent after its hello (the client's included) */
    int err;
} side;

static int ignore_record(void *ud, const uint8_t *rec, size_t len)
{
    (void)ud, (void)rec, (void)len;
    return 0;
}

static void deliver(side *from, side *to)
{
    if (from->out.len == 0 || to->err) return;
    put(&from->sent, from->out.data, from->out.len);
    to->err = pt_chan_input(to->c, from->out.data, from->out.len, &to->out, ignore_record, NULL);
    pt_buf_reset(&from->out);
}

/* A session-shaped record (the MTProto suite needs the inner header). */
static void seal_rec(side *s, uint64_t msg_id, size_t body)
{
    static uint8_t rec[32 + 2048];
    CHECK(body <= 2048);
    memset(rec, 0, sizeof rec);
    pt_put_u64le(rec + 16, msg_id);
    pt_put_u32le(rec + 28, (uint32_t)body);
    for (size_t i = 0; i < body; i++) rec[32 + i] = (uint8_t)(i * 7);
    CHECK(pt_chan_seal(s->c, &s->out, rec, 32 + body) == 0);
}

/* Client mode `mode` (fz_client_config) against a server with key `server_key`;
 * fills cl and sv, established unless the handshake is meant to fail. */
static void chan_pair(side *cl, side *sv, uint8_t mode, uint8_t server_key)
{
    static uint8_t csk[32], ssk[32], pin[32], suites[PT_SUITE_MAX];
    memset(cl, 0, sizeof *cl);
    memset(sv, 0, sizeof *sv);
    fz_key(csk, FZ_CLIENT_KEY);
    fz_key(ssk, server_key);
    fz_env_init(&cl->env, 1); /* the client target's stream */
    fz_env_init(&sv->env, 0); /* the server target's stream */
    pt_chan_config ccfg, scfg = {.is_server = true, .suites = fz_all_suites,
                                 .nsuites = PT_SUITE_MAX, .static_sk = ssk};
    fz_client_config(mode, &ccfg, suites, csk, pin);
    CHECK((cl->c = pt_chan_new(&cl->env.env, &ccfg, NULL)) != NULL);
    CHECK((sv->c = pt_chan_new(&sv->env.env, &scfg, NULL)) != NULL);
    pt_buf_init(&cl->out);
    pt_buf_init(&sv->out);
    pt_buf_init(&cl->sent);
    pt_buf_init(&sv->sent);
    CHECK(pt_chan_start(cl->c, &cl->out) == 0);
    for (int i = 0; i < 4; i++) {
        deliver(cl, sv);
        deliver(sv, cl);
    }
}

static void chan_free(side *s)
{
    pt_chan_free(s->c);
    pt_buf_free(&s->out);
    pt_buf_free(&s->sent);
}

static void chan_seeds(void)
{
    /* every variant x every single suite, plus "all suites" both orders */
    uint8_t modes[3 * 6 + 3];
    size_t nm = 0;
    for (uint8_t m = 0; m < 18; m++) modes[nm++] = m;
    for (uint8_t v = 0; v < 3; v++) modes[nm++] = (uint8_t)(144 + v); /* 144 / 3 % 6 == 0 */
    for (size_t i = 0; i < nm; i++) {
        uint8_t m = modes[i];
        side cl, sv;
        chan_pair(&cl, &sv, m, FZ_SERVER_KEY);
        CHECK(cl.err == 0 && sv.err == 0 && pt_chan_established(cl.c) && pt_chan_established(sv.c));
        int suite = pt_chan_suite(cl.c);
        uint64_t id = (uint64_t)1700000000 << 32;
        seal_rec(&cl, id + 4, 4);
        seal_rec(&cl, id + 8, 100);
        seal_rec(&cl, id + 12, 1500);
        seal_rec(&sv, id + 1, 8);
        seal_rec(&sv, id + 5, 1200);
        deliver(&cl, &sv);
        deliver(&sv, &cl);
        CHECK(cl.err == 0 && sv.err == 0);

        char name[64];
        unsigned st = m;
        pt_buf seed;
        pt_buf_init(&seed);
        chunk(&seed, cl.sent.data, cl.sent.len, &st);
        snprintf(name, sizeof name, "%s-suite%d-m%u", m % 3 == 2 ? "ik" : "xx", suite, m);
        write_seed("fuzz_chan_server", name, &seed);

        pt_buf_reset(&seed);
        put_u8(&seed, m);
        chunk(&seed, sv.sent.data, sv.sent.len, &st);
        write_seed("fuzz_chan_client", name, &seed);

        /* the client's records again, replayed: the MTProto msg_id check, the
         * CTR seq and the Noise nonce each refuse it */
        if (m >= 3 && m < 18 && m % 3 == 1) {
            pt_buf_reset(&seed);
            chunk(&seed, cl.sent.data, cl.sent.len, &st);
            /* the last record frame: skip frames from the client hello on */
            size_t off = 6 + (size_t)cl.sent.data[5], last = off;
            while (off < cl.sent.len) {
                last = off;
                off += 4 + pt_get_u32le(cl.sent.data + off);
            }
            chunk(&seed, cl.sent.data + last, cl.sent.len - last, &st);
            snprintf(name, sizeof name, "replay-suite%d", suite);
            write_seed("fuzz_chan_server", name, &seed);
        }
        pt_buf_free(&seed);
        chan_free(&cl);
        chan_free(&sv);
    }

    /* A pinned client meets another server key (mismatch); an unpinned one accepts it. */
    for (uint8_t m = 0; m < 3; m++) {
        side cl, sv;
        chan_pair(&cl, &sv, (uint8_t)(m + 3), FZ_OTHER_KEY);
        pt_buf seed;
        pt_buf_init(&seed);
        put_u8(&seed, (uint8_t)(m + 3));
        unsigned st = 0;
        chunk(&seed, sv.sent.data, sv.sent.len, &st);
        char name[64];
        snprintf(name, sizeof name, "other-key-m%u", m + 3);
        write_seed("fuzz_chan_client", name, &seed);
        pt_buf_free(&seed);
        chan_free(&cl);
        chan_free(&sv);
    }

    /* Hellos the server refuses, and bad framing after a good hello. */
    static const struct { const char *name; const char *hex; } bad_client[] = {
        {"garbage", "474554202f20485454502f312e310d0a"},
        {"bad-version", "50544b0201010102"},
        {"bad-pattern", "50544b01030101"},
        {"no-suite", "50544b01010209fe"},
        {"zero-suites", "50544b010100"},
        {"too-many-suites", "50544b010109010203040501020304"},
        {"zero-frame", "50544b0101010100000000"},
        {"huge-frame", "50544b01010101ffffff7f"},
        {"split-hello", "50544b"},
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(bad_client); i++) {
        size_t n = strlen(bad_client[i].hex) / 2;
        uint8_t raw[64];
        CHECK(pt_hex_decode(raw, n, bad_client[i].hex) == 0);
        pt_buf seed;
        pt_buf_init(&seed);
        put_u8(&seed, (uint8_t)n);
        put(&seed, raw, n);
        write_seed("fuzz_chan_server", bad_client[i].name, &seed);
        pt_buf_free(&seed);
    }
    static const struct { const char *name; const char *hex; } bad_server[] = {
        {"status-no-suite", "50544b010100"},
        {"status-version", "50544b010200"},
        {"status-pattern", "50544b010300"},
        {"not-offered", "50544b010009"},
        {"bad-magic", "48545450"},
        {"huge-frame", "50544b010001ffff0100"},
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(bad_server); i++) {
        size_t n = strlen(bad_server[i].hex) / 2;
        uint8_t raw[64];
        CHECK(pt_hex_decode(raw, n, bad_server[i].hex) == 0);
        pt_buf seed;
        pt_buf_init(&seed);
        put_u8(&seed, 0);
        put_u8(&seed, (uint8_t)n);
        put(&seed, raw, n);
        write_seed("fuzz_chan_client", bad_server[i].name, &seed);
        pt_buf_free(&seed);
    }
}

/* ---- noise ---------------------------------------------------------------------- */

static void noise_seeds(void)
{
    static const uint8_t prologue[] = "PackTrack fuzz prologue"; /* as fuzz_noise_read.c */
    for (unsigned pat = 0; pat < PT_NOISE_PATTERN_COUNT; pat++) {
        for (unsigned suite = 0; suite < 2; suite++) {
            for (unsigned role = 0; role < 2; role++) {
                bool ini = role == 1; /* the target's side */
                uint8_t mode = (uint8_t)(role | suite << 1 | pat << 2);
                fz_env me_env, peer_env;
                fz_env_init(&me_env, 0);
                fz_env_init(&peer_env, 1);
                uint8_t sk[32], peer_sk[32], pk[32], peer_pk[32];
                fz_key(sk, ini ? FZ_CLIENT_KEY : FZ_SERVER_KEY);
                fz_key(peer_sk, ini ? FZ_SERVER_KEY : FZ_CLIENT_KEY);
                CHECK(pt_x25519_base(pk, sk) == 0 && pt_x25519_base(peer_pk, peer_sk) == 0);
                pt_noise_hs *me = pt_noise_hs_new(
                    &me_env.env, pat, suite, ini, prologue, sizeof prologue, sk,
                    pt_noise_needs_remote_static(pat, ini) ? peer_pk : NULL);
                pt_noise_hs *peer = pt_noise_hs_new(
                    &peer_env.env, pat, suite, !ini, prologue, sizeof prologue, peer_sk,
                    pt_noise_needs_remote_static(pat, !ini) ? pk : NULL);
                CHECK(me && peer);
                pt_buf seed, msg, pl;
                pt_buf_init(&seed);
                pt_buf_init(&msg);
                pt_buf_init(&pl);
                put_u8(&seed, mode);
                int n = 0;
                while (!pt_noise_hs_done(me) || !pt_noise_hs_done(peer)) {
                    pt_buf_reset(&msg);
                    if (pt_noise_hs_my_turn(me)) {
                        CHECK(pt_noise_hs_write(me, &msg, NULL, 0) == 0);
                        CHECK(pt_noise_hs_read(peer, &pl, msg.data, msg.len) == 0);
                    } else {
                        static const char payload[] = "seed payload";
                        size_t plen = (size_t)n++ * 5 % sizeof payload;
                        CHECK(pt_noise_hs_write(peer, &msg, (const uint8_t *)payload, plen) == 0);
                        CHECK(pt_noise_hs_read(me, &pl, msg.data, msg.len) == 0);
                        put_u16(&seed, msg.len);
                        put(&seed, msg.data, msg.len);
                    }
                }
                char name[64];
                snprintf(name, sizeof name, "%s-%s-%s", pt_noise_pattern_name(pat),
                         suite ? "aesgcm" : "chachapoly", ini ? "initiator" : "responder");
                write_seed("fuzz_noise_read", name, &seed);
                pt_buf_free(&seed);
                pt_buf_free(&msg);
                pt_buf_free(&pl);
                pt_noise_hs_free(me);
                pt_noise_hs_free(peer);
            }
        }
    }
    /* A low-order ephemeral (all zeros) for the XX and IK responders. */
    for (unsigned pat = PT_NOISE_XX; pat <= PT_NOISE_IK; pat += PT_NOISE_IK - PT_NOISE_XX) {
        pt_buf seed;
        pt_buf_init(&seed);
        put_u8(&seed, (uint8_t)(pat << 2));
        size_t n = pat == PT_NOISE_IK ? 32 + 48 + 16 : 32;
        put_u16(&seed, n);
        for (size_t i = 0; i < n; i++) put_u8(&seed, 0);
        char name[64];
        snprintf(name, sizeof name, "%s-zero-e", pt_noise_pattern_name(pat));
        write_seed("fuzz_noise_read", name, &seed);
        pt_buf_free(&seed);
    }
}

/* ---- session ---------------------------------------------------------------------- */

#define T0 ((uint64_t)1700000000 << 32) /* msg_id at FZ_NOW_MS, low bits 0 */

static uint8_t secret[PT_SESS_SALT_SECRET_LEN];

/* A record: session header + body, appended to seed with its u16 length. */
static void rec(pt_buf *seed, uint64_t salt, uint64_t sid, uint64_t msg_id, uint32_t seqno,
                const pt_buf *body)
{
    put_u16(seed, PT_SESS_HDR_LEN + body->len);
    put_u64(seed, salt);
    put_u64(seed, sid);
    put_u64(seed, msg_id);
    put_u32(seed, seqno);
    put_u32(seed, (uint32_t)body->len);
    put(seed, body->data, body->len);
}

static void good(pt_buf *seed, uint64_t msg_id, uint32_t seqno, const pt_buf *body)
{
    rec(seed, pt_sess_salt_for(secret, FZ_NOW_MS), FZ_SESSION_ID, msg_id, seqno, body);
}

static void echo(pt_buf *b, const char *payload)
{
    pt_buf_reset(b);
    pt_tl_pt_echo e = {.payload = {(const uint8_t *)payload, (uint32_t)strlen(payload)}};
    CHECK(pt_tl_pt_echo_encode(b, &e) == 0);
}

static void echo_result(pt_buf *b, const char *payload)
{
    pt_buf_reset(b);
    pt_tl_pt_echoResult e = {.payload = {(const uint8_t *)payload, (uint32_t)strlen(payload)}};
    CHECK(pt_tl_pt_echoResult_encode(b, &e) == 0);
}

static void ping(pt_buf *b, int64_t id)
{
    pt_buf_reset(b);
    pt_tl_ping p = {.ping_id = id};
    CHECK(pt_tl_ping_encode(b, &p) == 0);
}

static void ids_vec(pt_buf *b, int which, const uint64_t *ids, uint32_t n)
{
    pt_buf_reset(b);
    pt_tl_vec_long v = {.n = n, .items = (int64_t *)ids};
    if (which == 0) {
        pt_tl_msgs_ack a = {.msg_ids = v};
        CHECK(pt_tl_msgs_ack_encode(b, &a) == 0);
    } else if (which == 1) {
        pt_tl_msgs_state_req a = {.msg_ids = v};
        CHECK(pt_tl_msgs_state_req_encode(b, &a) == 0);
    } else {
        pt_tl_msg_resend_req a = {.msg_ids = v};
        CHECK(pt_tl_msg_resend_req_encode(b, &a) == 0);
    }
}

static void gzip_packed(pt_buf *b, const uint8_t *in, size_t len)
{
    uint8_t z[8192];
    z_stream zs = {0};
    CHECK(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = z;
    zs.avail_out = sizeof z;
    CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END);
    size_t zlen = zs.total_out;
    deflateEnd(&zs);
    pt_buf_reset(b);
    pt_tl_gzip_packed g = {.packed_data = {z, (uint32_t)zlen}};
    CHECK(pt_tl_gzip_packed_encode(b, &g) == 0);
}

/* msg_container: id, count, then msg_id:u64 seqno:u32 len:u32 body each. */
typedef struct inner { uint64_t id; uint32_t seqno; const pt_buf *body; } inner;
static void container(pt_buf *b, const inner *in, size_t n)
{
    pt_buf_reset(b);
    put_u32(b, PT_SESS_CONTAINER_ID);
    put_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        put_u64(b, in[i].id);
        put_u32(b, in[i].seqno);
        put_u32(b, (uint32_t)in[i].body->len);
        put(b, in[i].body->data, in[i].body->len);
    }
}

static void sess_server_seeds(void)
{
    pt_buf s, a, b, c, d;
    pt_buf_init(&s);
    pt_buf_init(&a);
    pt_buf_init(&b);
    pt_buf_init(&c);
    pt_buf_init(&d);
    uint64_t salt = pt_sess_salt_for(secret, FZ_NOW_MS);
    /* The server's first reply is T0|1 (rpc_result), its first ack T0+4|1. */
    for (uint8_t mode = 0; mode < 8; mode += 2) {
        char name[64];
        /* echo, then ack its result, then a ping */
        pt_buf_reset(&s);
        put_u8(&s, mode);
        echo(&a, "hello");
        good(&s, T0 + 4, 1, &a);
        uint64_t ack1[] = {T0 | 1};
        ids_vec(&a, 0, ack1, 1);
        good(&s, T0 + 8, 2, &a);
        ping(&a, 77);
        good(&s, T0 + 12, 3, &a);
        snprintf(name, sizeof name, "server-echo-ack-ping-m%u", mode);
        write_seed("fuzz_sess_input", name, &s);
    }

    /* one container: two echoes, a ping, an ack, a state request, a resend request */
    pt_buf_reset(&s);
    put_u8(&s, 0);
    pt_buf e1, e2, p, ack, sreq, rreq;
    pt_buf_init(&e1), pt_buf_init(&e2), pt_buf_init(&p), pt_buf_init(&ack);
    pt_buf_init(&sreq), pt_buf_init(&rreq);
    echo(&e1, "first");
    echo(&e2, "second call");
    ping(&p, -1);
    uint64_t some[] = {T0 | 1, T0 + 4};
    ids_vec(&ack, 0, some, 1);
    ids_vec(&sreq, 1, some, 2);
    ids_vec(&rreq, 2, some, 1);
    inner in1[] = {{T0 + 4, 1, &e1}, {T0 + 8, 3, &e2}, {T0 + 12, 5, &p},
                   {T0 + 16, 6, &ack}, {T0 + 20, 6, &sreq}};
    container(&a, in1, PT_ARRAY_LEN(in1));
    good(&s, T0 + 24, 6, &a);
    inner in2[] = {{T0 + 28, 6, &rreq}, {T0 + 32, 6, &ack}};
    container(&a, in2, PT_ARRAY_LEN(in2));
    good(&s, T0 + 36, 6, &a);
    write_seed("fuzz_sess_input", "server-container", &s);

    /* gzip_packed echo (and a gzip bomb that inflates past PT_SESS_BODY_MAX) */
    pt_buf_reset(&s);
    put_u8(&s, 0);
    static uint8_t big[PT_SESS_BODY_MAX + 4096];
    memset(big, 'a', sizeof big);
    pt_tl_pt_echo eb = {.payload = {big, 2000}};
    pt_buf_reset(&b);
    CHECK(pt_tl_pt_echo_encode(&b, &eb) == 0);
    gzip_packed(&a, b.data, b.len);
    good(&s, T0 + 4, 1, &a);
    gzip_packed(&a, big, sizeof big);
    good(&s, T0 + 8, 3, &a);
    write_seed("fuzz_sess_input", "server-gzip", &s);

    /* rejections the server answers, then a malformed record */
    pt_buf_reset(&s);
    put_u8(&s, 0);
    echo(&a, "x");
    rec(&s, salt ^ 1, FZ_SESSION_ID, T0 + 4, 1, &a);                 /* bad salt */
    good(&s, T0 + 5, 1, &a);                                           /* parity */
    good(&s, T0 - ((uint64_t)400 << 32), 1, &a);                       /* too low */
    good(&s, T0 + ((uint64_t)60 << 32), 1, &a);                        /* too high */
    good(&s, T0 + 8, 1, &a);                                           /* accepted */
    good(&s, T0 + 8, 3, &a);                                           /* duplicate */
    good(&s, T0 + 12, 1, &a);                                          /* seqno low */
    good(&s, T0 + 16, 9, &a);                                          /* seqno high */
    good(&s, T0 + 20, 4, &a);                                          /* odd expected */
    ids_vec(&c, 0, some, 2);
    good(&s, T0 + 24, 5, &c);                                          /* even expected */
    inner bad[] = {{T0 + 28, 3, &a}};
    container(&d, bad, 1);
    put_u32(&d, 0); /* trailing bytes: bad container */
    good(&s, T0 + 32, 4, &d);
    rec(&s, salt, FZ_SESSION_ID + 1, T0 + 36, 3, &a);                  /* other session */
    write_seed("fuzz_sess_input", "server-rejections", &s);

    /* Mode 8 ("warm"): the window is full of ids T0 - 4096 .. T0 - 4; the first
     * record evicts the oldest quarter, then ids below, inside and above it. */
    pt_buf_reset(&s);
    put_u8(&s, 8);
    echo(&a, "warm");
    good(&s, T0 + 4, 1, &a);
    ids_vec(&c, 0, some, 1);
    good(&s, T0 - 4 * 1000, 0, &c); /* below the floor: too old */
    good(&s, T0 - 4 * 100, 0, &c);  /* a remembered id: a silent duplicate */
    good(&s, T0 - 4 * 50, 3, &a);   /* the same as content: notified duplicate */
    good(&s, T0 + 8, 3, &a);
    write_seed("fuzz_sess_input", "server-warm", &s);

    pt_buf_free(&s), pt_buf_free(&a), pt_buf_free(&b), pt_buf_free(&c), pt_buf_free(&d);
    pt_buf_free(&e1), pt_buf_free(&e2), pt_buf_free(&p), pt_buf_free(&ack);
    pt_buf_free(&sreq), pt_buf_free(&rreq);
}

static void sess_client_seeds(void)
{
    /* fuzz_sess_input's client opening: echo T0 (seqno 1), gzip echo T0+4 (3),
     * ping T0+8 (5), msgs_state_req T0+12 (6), in container T0+16 (6). */
    const uint64_t call0 = T0, call1 = T0 + 4, ping_id = T0 + 8, sreq = T0 + 12, cont = T0 + 16;
    pt_buf s, a, b, r1, r2, ack;
    pt_buf_init(&s), pt_buf_init(&a), pt_buf_init(&b);
    pt_buf_init(&r1), pt_buf_init(&r2), pt_buf_init(&ack);

    for (uint8_t mode = 1; mode < 8; mode += 2) {
        pt_buf_reset(&s);
        put_u8(&s, mode);
        /* new_session_created, rpc_result for call0, pong, ack of call1, state info */
        pt_tl_new_session_created ns = {.first_msg_id = (int64_t)call0, .unique_id = 99,
                                        .server_salt = 0x0123456789abcdefll};
        pt_buf_reset(&a);
        CHECK(pt_tl_new_session_created_encode(&a, &ns) == 0);
        good(&s, T0 + 3, 1, &a); /* content, as session.c counts it */
        echo_result(&b, "hello");
        pt_tl_rpc_result rr = {.req_msg_id = (int64_t)call0, .result = {b.data, (uint32_t)b.len}};
        pt_buf_reset(&a);
        CHECK(pt_tl_rpc_result_encode(&a, &rr) == 0);
        good(&s, T0 + 5, 3, &a);
        pt_tl_pong pg = {.msg_id = (int64_t)ping_id, .ping_id = 0x5052};
        pt_buf_reset(&a);
        CHECK(pt_tl_pong_encode(&a, &pg) == 0);
        good(&s, T0 + 9, 5, &a);
        uint64_t acked_ids[] = {call1};
        ids_vec(&a, 0, acked_ids, 1);
        good(&s, T0 + 13, 6, &a);
        static const uint8_t info[] = {4, 2};
        pt_tl_msgs_state_info si = {.req_msg_id = (int64_t)sreq, .info = {info, 2}};
        pt_buf_reset(&a);
        CHECK(pt_tl_msgs_state_info_encode(&a, &si) == 0);
        good(&s, T0 + 17, 6, &a);
        char name[64];
        snprintf(name, sizeof name, "client-answers-m%u", mode);
        write_seed("fuzz_sess_input", name, &s);
    }

    /* bad_server_salt for the container, bad_msg_notification (too high) for
     * call1, duplicate for call0, then a container with a result and an update */
    pt_buf_reset(&s);
    put_u8(&s, 1);
    pt_tl_bad_server_salt bs = {.bad_msg_id = (int64_t)cont, .bad_msg_seqno = 6,
                                .error_code = PT_BAD_MSG_SALT, .new_server_salt = 42};
    pt_buf_reset(&a);
    CHECK(pt_tl_bad_server_salt_encode(&a, &bs) == 0);
    good(&s, T0 + 1, 0, &a);
    pt_tl_bad_msg_notification bm = {.bad_msg_id = (int64_t)call1, .bad_msg_seqno = 3,
                                     .error_code = PT_BAD_MSG_ID_TOO_HIGH};
    pt_buf_reset(&a);
    CHECK(pt_tl_bad_msg_notification_encode(&a, &bm) == 0);
    good(&s, T0 + 5, 0, &a);
    bm.bad_msg_id = (int64_t)call0;
    bm.error_code = PT_BAD_MSG_DUPLICATE;
    pt_buf_reset(&a);
    CHECK(pt_tl_bad_msg_notification_encode(&a, &bm) == 0);
    good(&s, T0 + 9, 0, &a);
    echo_result(&b, "zzzz");
    pt_tl_rpc_result rr = {.req_msg_id = (int64_t)call1, .result = {b.data, (uint32_t)b.len}};
    pt_buf_reset(&r1);
    CHECK(pt_tl_rpc_result_encode(&r1, &rr) == 0);
    echo(&r2, "an update from the server");
    uint64_t resend_ids[] = {call0};
    ids_vec(&ack, 2, resend_ids, 1);
    inner in[] = {{T0 + 13, 1, &r1}, {T0 + 15, 3, &r2}, {T0 + 17, 4, &ack}};
    pt_buf_reset(&a);
    container(&a, in, PT_ARRAY_LEN(in));
    good(&s, T0 + 21, 4, &a);
    /* a gzip_packed update, and a msgs_state_req from the server */
    echo(&b, "a longer update, packed: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    gzip_packed(&a, b.data, b.len);
    good(&s, T0 + 27, 5, &a);
    uint64_t q[] = {T0 + 13, T0 + 99, 4};
    ids_vec(&a, 1, q, 3);
    good(&s, T0 + 29, 6, &a);
    write_seed("fuzz_sess_input", "client-bad-msgs-container", &s);

    /* Mode 9 ("warm", client): server ids T0 - 4095 .. T0 - 3 are remembered. */
    pt_buf_reset(&s);
    put_u8(&s, 9);
    echo(&r2, "update");
    good(&s, T0 + 3, 1, &r2);
    good(&s, T0 - 4 * 1000 + 1, 3, &r2); /* too old */
    good(&s, T0 - 4 * 10 + 1, 3, &r2);   /* duplicate */
    good(&s, T0 + 7, 3, &r2);
    write_seed("fuzz_sess_input", "client-warm", &s);

    pt_buf_free(&s), pt_buf_free(&a), pt_buf_free(&b);
    pt_buf_free(&r1), pt_buf_free(&r2), pt_buf_free(&ack);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds CORPUS_DIR (fuzz/corpus)\n");
        return 2;
    }
    root = argv[1];
    CHECK(pt_init() == 0);
    fz_salt_secret(secret);
    chan_seeds();
    noise_seeds();
    sess_server_seeds();
    sess_client_seeds();
    printf("make_seeds: %d seeds written under %s\n", written, root);
    return 0;
}
