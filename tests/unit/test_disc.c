/* src/discovery: the LAN discovery codec, record signatures, freshness, addresses,
 * the reply limiter and the peer-to-peer record codec. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>

#include "testutil.h"
#include "crypto/pt_crypto.h"
#include "discovery/pt_disc.h"

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed + 7 * i + 1);
}

/* A packet of each type with every field set (so a field left out of the codec shows). */
static pt_disc_pkt sample(uint8_t type)
{
    pt_disc_pkt p;
    memset(&p, 0, sizeof p);
    p.type = type;
    fill(p.nonce, 16, 0x10 + type);
    if (type == PT_DISC_BSR) {
        fill(p.server_key, 32, 0x40);
        p.port = 0xBEEF;
        p.obfs = PT_DISC_OBFS_PLAIN | PT_DISC_OBFS_MSE;
    }
    if (type == PT_DISC_BPM) p.flags = PT_DISC_FLAG_RECORD;
    if (type == PT_DISC_BPM || type == PT_DISC_BPR) {
        fill(p.rec.user_id, 16, 0x60);
        fill(p.rec.device, 32, 0x70);
        fill(p.rec.addr, 16, 0x80);
        p.rec.port = 0x1234;
        p.rec.ts_ms = 0x0102030405060708ull;
        fill(p.rec.sig, 64, 0x90);
    }
    return p;
}

static void assert_pkt_equal(const pt_disc_pkt *a, const pt_disc_pkt *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->flags, b->flags);
    assert_memory_equal(a->nonce, b->nonce, 16);
    assert_memory_equal(a->server_key, b->server_key, 32);
    assert_int_equal(a->port, b->port);
    assert_int_equal(a->obfs, b->obfs);
    assert_memory_equal(a->rec.user_id, b->rec.user_id, 16);
    assert_memory_equal(a->rec.device, b->rec.device, 32);
    assert_memory_equal(a->rec.addr, b->rec.addr, 16);
    assert_int_equal(a->rec.port, b->rec.port);
    assert_int_equal(a->rec.ts_ms, b->rec.ts_ms);
    assert_memory_equal(a->rec.sig, b->rec.sig, 64);
}

static size_t encode(const pt_disc_pkt *p, uint8_t out[PT_DISC_MAX_LEN])
{
    size_t n = 0;
    assert_int_equal(pt_disc_encode(p, out, PT_DISC_MAX_LEN, &n), 0);
    return n;
}

static void test_roundtrip(void **state)
{
    (void)state;
    static const size_t lens[5] = {0, 64, 64, 162, 162};
    for (uint8_t t = PT_DISC_BSM; t <= PT_DISC_BPR; t++) {
        pt_disc_pkt p = sample(t), q;
        uint8_t buf[PT_DISC_MAX_LEN], again[PT_DISC_MAX_LEN];
        size_t n = encode(&p, buf);
        assert_int_equal(n, lens[t]);
        assert_memory_equal(buf, "PTD\x01", 4);
        assert_int_equal(buf[4], t);
        assert_int_equal(pt_disc_decode(buf, n, &q), 0);
        assert_pkt_equal(&p, &q);
        assert_int_equal(encode(&q, again), n);
        assert_memory_equal(buf, again, n);
    }
    /* BSR field positions, little-endian */
    pt_disc_pkt p = sample(PT_DISC_BSR);
    uint8_t buf[PT_DISC_MAX_LEN];
    encode(&p, buf);
    assert_int_equal(buf[56], 0xEF);
    assert_int_equal(buf[57], 0xBE);
    assert_int_equal(buf[58], PT_DISC_OBFS_PLAIN | PT_DISC_OBFS_MSE);
    /* record positions: port then ts at 24+64 */
    p = sample(PT_DISC_BPR);
    encode(&p, buf);
    assert_int_equal(buf[24 + 64], 0x34);
    assert_int_equal(buf[24 + 65], 0x12);
    assert_int_equal(buf[24 + 66], 0x08);
    assert_int_equal(buf[24 + 73], 0x01);
    /* an anonymous BPM: the record is zero whatever the struct holds */
    p = sample(PT_DISC_BPM);
    p.flags = 0;
    pt_disc_pkt q;
    size_t n = encode(&p, buf);
    assert_int_equal(n, PT_DISC_BPM_LEN);
    for (size_t i = 24; i < n; i++) assert_int_equal(buf[i], 0);
    assert_int_equal(pt_disc_decode(buf, n, &q), 0);
    assert_int_equal(q.flags, 0);
    pt_disc_pkt anon = sample(PT_DISC_BPM);
    memset(&anon.rec, 0, sizeof anon.rec);
    anon.flags = 0;
    assert_pkt_equal(&anon, &q);
    /* encode refuses an unknown type and a short buffer */
    p.type = 9;
    assert_int_equal(pt_disc_encode(&p, buf, sizeof buf, &n), PT_ERR_INVAL);
    p = sample(PT_DISC_BPR);
    assert_int_equal(pt_disc_encode(&p, buf, PT_DISC_BPR_LEN - 1, &n), PT_ERR_INVAL);
}

static void expect_reject(const uint8_t *buf, size_t n, int want)
{
    pt_disc_pkt q;
    assert_int_equal(pt_disc_decode(buf, n, &q), want);
}

static void test_malformed(void **state)
{
    (void)state;
    for (uint8_t t = PT_DISC_BSM; t <= PT_DISC_BPR; t++) {
        pt_disc_pkt p = sample(t);
        uint8_t buf[PT_DISC_MAX_LEN + 1], bad[PT_DISC_MAX_LEN + 1];
        size_t n = encode(&p, buf);
        buf[n] = 0;
        expect_reject(buf, n - 1, PT_ERR_DECODE); /* short by one */
        expect_reject(buf, n + 1, PT_ERR_DECODE); /* long by one (a zero byte) */
        expect_reject(buf, 0, PT_ERR_DECODE);
        expect_reject(buf, PT_DISC_HDR_LEN, PT_ERR_DECODE);
        for (int i = 0; i < 3; i++) { /* magic */
            memcpy(bad, buf, n);
            bad[i] ^= 0x20;
            expect_reject(bad, n, PT_ERR_DECODE);
        }
        memcpy(bad, buf, n);
        bad[3] = 2; /* version */
        expect_reject(bad, n, PT_ERR_VERSION);
        bad[3] = 0;
        expect_reject(bad, n, PT_ERR_VERSION);
        memcpy(bad, buf, n);
        bad[4] = 5; /* type */
        expect_reject(bad, n, PT_ERR_DECODE);
        bad[4] = 0;
        expect_reject(bad, n, PT_ERR_DECODE);
        for (int i = 6; i < 8; i++) { /* reserved */
            memcpy(bad, buf, n);
            bad[i] = 1;
            expect_reject(bad, n, PT_ERR_DECODE);
        }
        for (int f = 1; f < 256; f <<= 1) { /* flags */
            memcpy(bad, buf, n);
            bad[5] = (uint8_t)(buf[5] ^ f);
            if (t == PT_DISC_BPM && f == PT_DISC_FLAG_RECORD) {
                /* clearing the record flag with a record present */
                expect_reject(bad, n, PT_ERR_DECODE);
                continue;
            }
            expect_reject(bad, n, PT_ERR_DECODE);
        }
    }
    /* padding of BSM (40 bytes) and BSR (5 bytes): each byte */
    pt_disc_pkt p = sample(PT_DISC_BSM);
    uint8_t buf[PT_DISC_MAX_LEN];
    size_t n = encode(&p, buf);
    for (size_t i = 24; i < n; i++) {
        buf[i] = 0x80;
        expect_reject(buf, n, PT_ERR_DECODE);
        buf[i] = 0;
    }
    expect_reject(buf, n, 0);
    p = sample(PT_DISC_BSR);
    n = encode(&p, buf);
    for (size_t i = 59; i < n; i++) {
        buf[i] = 1;
        expect_reject(buf, n, PT_ERR_DECODE);
        buf[i] = 0;
    }
    expect_reject(buf, n, 0);
    /* BPM without the record flag: every record byte must be zero */
    p = sample(PT_DISC_BPM);
    p.flags = 0;
    n = encode(&p, buf);
    for (size_t i = 24; i < n; i++) {
        buf[i] = 0xFF;
        expect_reject(buf, n, PT_ERR_DECODE);
        buf[i] = 0;
    }
    expect_reject(buf, n, 0);
    /* the record flag on a BPR is not allowed either (a BPR always has one) */
    p = sample(PT_DISC_BPR);
    n = encode(&p, buf);
    buf[5] = PT_DISC_FLAG_RECORD;
    expect_reject(buf, n, PT_ERR_DECODE);
    /* a BPM-sized BSM, a BSM-sized BPM */
    p = sample(PT_DISC_BPM);
    n = encode(&p, buf);
    buf[4] = PT_DISC_BSM;
    expect_reject(buf, n, PT_ERR_DECODE);
    p = sample(PT_DISC_BSM);
    n = encode(&p, buf);
    buf[4] = PT_DISC_BPM;
    expect_reject(buf, n, PT_ERR_DECODE);
}

/* ---- signatures ------------------------------------------------------------------------------ */

static void test_sign_verify(void **state)
{
    (void)state;
    uint8_t pk[32], sk[64], pk2[32], sk2[64];
    pt_ed25519_keypair(pk, sk);
    pt_ed25519_keypair(pk2, sk2);
    pt_disc_pkt p = sample(PT_DISC_BPR);
    assert_int_equal(pt_disc_record_sign(&p.rec, PT_DISC_BPR, p.nonce, sk), 0);
    assert_int_equal(pt_disc_record_verify(&p.rec, PT_DISC_BPR, p.nonce, pk), 0);
    /* it survives the wire */
    uint8_t buf[PT_DISC_MAX_LEN];
    pt_disc_pkt q;
    size_t n = encode(&p, buf);
    assert_int_equal(pt_disc_decode(buf, n, &q), 0);
    assert_int_equal(pt_disc_record_verify(&q.rec, q.type, q.nonce, pk), 0);
    /* wrong key, type, nonce */
    assert_int_equal(pt_disc_record_verify(&p.rec, PT_DISC_BPR, p.nonce, pk2), PT_ERR_AUTH);
    assert_int_equal(pt_disc_record_verify(&p.rec, PT_DISC_BPM, p.nonce, pk), PT_ERR_AUTH);
    uint8_t nonce[16];
    memcpy(nonce, p.nonce, 16);
    nonce[15] ^= 1;
    assert_int_equal(pt_disc_record_verify(&p.rec, PT_DISC_BPR, nonce, pk), PT_ERR_AUTH);
    /* any flipped bit of the signed fields or the signature */
    for (size_t i = PT_DISC_HDR_LEN + 16; i < n; i++) {
        for (int b = 0; b < 8; b += 7) {
            uint8_t bad[PT_DISC_MAX_LEN];
            memcpy(bad, buf, n);
            bad[i] ^= (uint8_t)(1 << b);
            assert_int_equal(pt_disc_decode(bad, n, &q), 0);
            assert_int_equal(pt_disc_record_verify(&q.rec, q.type, q.nonce, pk), PT_ERR_AUTH);
        }
    }
    /* a record signed for a BPM is not valid in a BPR with the same nonce */
    pt_disc_pkt m = sample(PT_DISC_BPM);
    assert_int_equal(pt_disc_record_sign(&m.rec, PT_DISC_BPM, m.nonce, sk), 0);
    assert_int_equal(pt_disc_record_verify(&m.rec, PT_DISC_BPM, m.nonce, pk), 0);
    assert_int_equal(pt_disc_record_verify(&m.rec, PT_DISC_BPR, m.nonce, pk), PT_ERR_AUTH);
    /* the signed message is the documented one */
    uint8_t msg[99], *w = msg;
    memcpy(w, "PTD-REC1", 8), w += 8;
    *w++ = PT_DISC_BPR;
    memcpy(w, p.nonce, 16), w += 16;
    memcpy(w, p.rec.user_id, 16), w += 16;
    memcpy(w, p.rec.device, 32), w += 32;
    memcpy(w, p.rec.addr, 16), w += 16;
    *w++ = 0x34, *w++ = 0x12;
    pt_put_u64le(w, p.rec.ts_ms);
    assert_int_equal(pt_ed25519_verify(p.rec.sig, msg, sizeof msg, pk), 0);
}

static void test_fresh(void **state)
{
    (void)state;
    uint64_t now = 1700000000000ull;
    assert_true(pt_disc_fresh(now, now));
    assert_true(pt_disc_fresh(now - PT_DISC_MAX_SKEW_MS, now));
    assert_true(pt_disc_fresh(now + PT_DISC_MAX_SKEW_MS, now));
    assert_false(pt_disc_fresh(now - PT_DISC_MAX_SKEW_MS - 1, now));
    assert_false(pt_disc_fresh(now + PT_DISC_MAX_SKEW_MS + 1, now));
    assert_false(pt_disc_fresh(0, now));
    assert_false(pt_disc_fresh(UINT64_MAX, now));
    assert_true(pt_disc_fresh(0, 5)); /* no underflow near zero */
}

static void test_addr(void **state)
{
    (void)state;
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(7001)};
    inet_pton(AF_INET, "192.168.1.20", &in.sin_addr);
    uint8_t a[16];
    uint16_t port = 0;
    assert_int_equal(pt_disc_addr_from_sockaddr((struct sockaddr *)&in, a, &port), 0);
    assert_int_equal(port, 7001);
    static const uint8_t want[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 20};
    assert_memory_equal(a, want, 16);
    char text[64];
    pt_disc_addr_format(a, text, sizeof text);
    assert_string_equal(text, "192.168.1.20");
    struct sockaddr_storage ss;
    socklen_t sl;
    pt_disc_addr_to_sockaddr(a, 7002, 3, &ss, &sl);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(sl, sizeof(struct sockaddr_in));
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 7002);
    assert_memory_equal(&((struct sockaddr_in *)&ss)->sin_addr, &in.sin_addr, 4);

    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(9), .sin6_scope_id = 2};
    inet_pton(AF_INET6, "fe80::1", &in6.sin6_addr);
    assert_int_equal(pt_disc_addr_from_sockaddr((struct sockaddr *)&in6, a, &port), 0);
    assert_int_equal(port, 9);
    assert_memory_equal(a, &in6.sin6_addr, 16);
    pt_disc_addr_format(a, text, sizeof text);
    assert_string_equal(text, "fe80::1");
    pt_disc_addr_to_sockaddr(a, 9, 2, &ss, &sl);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(sl, sizeof(struct sockaddr_in6));
    assert_int_equal(((struct sockaddr_in6 *)&ss)->sin6_scope_id, 2);
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 9);
    assert_memory_equal(&((struct sockaddr_in6 *)&ss)->sin6_addr, a, 16);

    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_int_equal(pt_disc_addr_from_sockaddr(&un, a, &port), PT_ERR_INVAL);
}

/* ---- the limiter -------------------------------------------------------------------------------- */

static void src_addr(uint8_t a[16], uint32_t i)
{
    memset(a, 0, 16);
    a[10] = a[11] = 0xff;
    pt_put_u32le(a + 12, i);
}

static unsigned allow_n(pt_disc_limiter *l, const uint8_t a[16], unsigned tries, uint64_t now)
{
    unsigned ok = 0;
    for (unsigned i = 0; i < tries; i++) ok += pt_disc_limiter_allow(l, a, now);
    return ok;
}

static void test_limiter_source(void **state)
{
    (void)state;
    pt_disc_limiter *l = pt_disc_limiter_new(4, 2, 1000, 16);
    assert_non_null(l);
    uint8_t a[16], b[16];
    src_addr(a, 1);
    src_addr(b, 2);
    uint64_t t = 5000;
    assert_int_equal(allow_n(l, a, 10, t), 4);     /* the burst, then refusals */
    assert_int_equal(allow_n(l, b, 10, t), 4);     /* another source is independent */
    assert_false(pt_disc_limiter_allow(l, a, t + 499)); /* 2/s: not yet one token */
    assert_true(pt_disc_limiter_allow(l, a, t + 500));
    assert_false(pt_disc_limiter_allow(l, a, t + 500));
    assert_int_equal(allow_n(l, a, 10, t + 1500), 2); /* one more second: two tokens */
    assert_int_equal(allow_n(l, a, 10, t + 100000), 4); /* a long pause refills to the burst only */
    /* a clock that goes back gives nothing */
    assert_int_equal(allow_n(l, a, 10, t), 0);
    /* a huge jump does not overflow */
    assert_int_equal(allow_n(l, a, 10, UINT64_MAX / 2), 4);
    pt_disc_limiter_free(l);
    pt_disc_limiter_free(NULL);

    /* the defaults: a flood from one source over 10 s gets burst + rate * 10 */
    l = pt_disc_limiter_new(PT_DISC_LIMIT_BURST, PT_DISC_LIMIT_PER_S, PT_DISC_LIMIT_GLOBAL_PER_S,
                            PT_DISC_LIMIT_SLOTS);
    unsigned ok = 0;
    for (uint64_t ms = 0; ms <= 10000; ms++) ok += pt_disc_limiter_allow(l, a, 1000 + ms);
    assert_int_equal(ok, PT_DISC_LIMIT_BURST + PT_DISC_LIMIT_PER_S * 10);
    pt_disc_limiter_free(l);
}

static void test_limiter_global(void **state)
{
    (void)state;
    pt_disc_limiter *l = pt_disc_limiter_new(4, 2, 10, 64);
    uint8_t a[16];
    unsigned ok = 0;
    for (uint32_t i = 0; i < 50; i++) {
        src_addr(a, i);
        ok += pt_disc_limiter_allow(l, a, 1000);
    }
    assert_int_equal(ok, 10); /* the global bucket: one second's worth */
    /* refused sources kept their own tokens: after 100 ms one global token is back */
    src_addr(a, 49);
    assert_true(pt_disc_limiter_allow(l, a, 1100));
    assert_false(pt_disc_limiter_allow(l, a, 1100));
    ok = 0;
    for (uint32_t i = 100; i < 200; i++) {
        src_addr(a, i);
        ok += pt_disc_limiter_allow(l, a, 2100);
    }
    assert_int_equal(ok, 10);
    pt_disc_limiter_free(l);
}

static void test_limiter_lru(void **state)
{
    (void)state;
    pt_disc_limiter *l = pt_disc_limiter_new(2, 0, 100000, 4); /* no refill: a fresh slot is the only way back */
    uint8_t a[16];
    for (uint32_t i = 0; i < 4; i++) {
        src_addr(a, i);
        assert_int_equal(allow_n(l, a, 5, 1000), 2);
    }
    /* all four remembered: still empty */
    for (uint32_t i = 0; i < 4; i++) {
        src_addr(a, i);
        assert_false(pt_disc_limiter_allow(l, a, 1000));
    }
    /* a fifth source evicts the least recently used one (0, touched first above) */
    src_addr(a, 4);
    assert_int_equal(allow_n(l, a, 5, 1000), 2);
    src_addr(a, 1);
    assert_false(pt_disc_limiter_allow(l, a, 1000)); /* still remembered, now most recent */
    src_addr(a, 0);
    assert_int_equal(allow_n(l, a, 5, 1000), 2); /* forgotten: a new bucket (evicts 2) */
    src_addr(a, 2);
    assert_int_equal(allow_n(l, a, 5, 1000), 2); /* forgotten too (evicts 3) */
    src_addr(a, 4);
    assert_false(pt_disc_limiter_allow(l, a, 1000));
    /* many more sources than slots: the table stays consistent */
    for (uint32_t i = 1000; i < 5000; i++) {
        src_addr(a, i);
        assert_int_equal(allow_n(l, a, 3, 1000), 2);
    }
    for (uint32_t i = 4996; i < 5000; i++) {
        src_addr(a, i);
        assert_false(pt_disc_limiter_allow(l, a, 1000));
    }
    pt_disc_limiter_free(l);
}

/* ---- peer-to-peer records ---------------------------------------------------------------------- */

static void p2p_roundtrip(const pt_p2p_rec *r, size_t want_len)
{
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_p2p_encode(r, &b), 0);
    assert_int_equal(b.len, want_len);
    pt_p2p_rec q;
    assert_int_equal(pt_p2p_decode(b.data, b.len, &q), 0);
    assert_int_equal(q.type, r->type);
    assert_memory_equal(q.user_id, r->user_id, 16);
    assert_memory_equal(q.hash, r->hash, 16);
    assert_int_equal(q.has_group, r->has_group);
    assert_memory_equal(q.group_id, r->group_id, 16);
    assert_int_equal(q.env_len, r->env_len);
    if (r->env_len) assert_memory_equal(q.env, r->env, r->env_len);
    assert_memory_equal(q.identity_key, r->identity_key, 32);
    assert_int_equal(q.name_len, r->name_len);
    if (r->name_len) assert_memory_equal(q.name, r->name, r->name_len);
    assert_int_equal(q.key_id, r->key_id);
    assert_memory_equal(q.signed_key, r->signed_key, 64);
    assert_memory_equal(q.sig, r->sig, 64);
    pt_buf c;
    pt_buf_init(&c);
    assert_int_equal(pt_p2p_encode(&q, &c), 0);
    assert_int_equal(c.len, b.len);
    assert_memory_equal(c.data, b.data, b.len);
    /* short by one, long by one */
    assert_int_equal(pt_p2p_decode(b.data, b.len - 1, &q), PT_ERR_DECODE);
    assert_int_equal(pt_buf_append(&b, "", 1), 0);
    assert_int_not_equal(pt_p2p_decode(b.data, b.len, &q), 0);
    pt_buf_free(&b);
    pt_buf_free(&c);
}

static void test_p2p(void **state)
{
    (void)state;
    pt_p2p_rec r;
    memset(&r, 0, sizeof r);
    r.type = PT_P2P_HELLO;
    fill(r.user_id, 16, 3);
    p2p_roundtrip(&r, 17);
    memset(&r, 0, sizeof r);
    r.type = PT_P2P_ACK;
    fill(r.hash, 16, 4);
    p2p_roundtrip(&r, 17);
    for (uint8_t t = PT_P2P_BYE; t <= PT_P2P_PONG; t++) {
        memset(&r, 0, sizeof r);
        r.type = t;
        p2p_roundtrip(&r, 1);
    }
    static uint8_t env[PT_P2P_ENV_MAX + 1];
    fill(env, sizeof env, 9);
    memset(&r, 0, sizeof r);
    r.type = PT_P2P_MSG;
    r.env = env;
    r.env_len = 300;
    p2p_roundtrip(&r, 22 + 300);
    r.has_group = true;
    fill(r.group_id, 16, 5);
    p2p_roundtrip(&r, 22 + 300);
    r.env_len = PT_P2P_ENV_MAX;
    p2p_roundtrip(&r, 22 + PT_P2P_ENV_MAX);
    r.env_len = 0;
    p2p_roundtrip(&r, 22);

    pt_buf b;
    pt_buf_init(&b);
    r.env_len = PT_P2P_ENV_MAX + 1;
    assert_int_equal(pt_p2p_encode(&r, &b), PT_ERR_TOO_BIG);
    r.type = 0;
    assert_int_equal(pt_p2p_encode(&r, &b), PT_ERR_INVAL);
    r.type = 10;
    assert_int_equal(pt_p2p_encode(&r, &b), PT_ERR_INVAL);
    assert_int_equal(b.len, 0);
    /* no group: the group id goes out as zero */
    memset(&r, 0, sizeof r);
    r.type = PT_P2P_MSG;
    fill(r.group_id, 16, 5);
    r.env = env;
    r.env_len = 2;
    assert_int_equal(pt_p2p_encode(&r, &b), 0);
    for (size_t i = 2; i < 18; i++) assert_int_equal(b.data[i], 0);

    pt_p2p_rec q;
    uint8_t m[22 + 4] = {PT_P2P_MSG, 0};
    pt_put_u32le(m + 18, 4);
    assert_int_equal(pt_p2p_decode(m, sizeof m, &q), 0);
    m[1] = 2; /* has_group is 0 or 1 */
    assert_int_equal(pt_p2p_decode(m, sizeof m, &q), PT_ERR_DECODE);
    m[1] = 0;
    m[9] = 1; /* no group but a group id */
    assert_int_equal(pt_p2p_decode(m, sizeof m, &q), PT_ERR_DECODE);
    m[9] = 0;
    pt_put_u32le(m + 18, 5); /* length beyond the record */
    assert_int_equal(pt_p2p_decode(m, sizeof m, &q), PT_ERR_DECODE);
    pt_put_u32le(m + 18, 3); /* trailing byte */
    assert_int_equal(pt_p2p_decode(m, sizeof m, &q), PT_ERR_DECODE);
    pt_put_u32le(m + 18, PT_P2P_ENV_MAX + 1);
    assert_int_equal(pt_p2p_decode(m, sizeof m, &q), PT_ERR_TOO_BIG);
    pt_put_u32le(m + 18, UINT32_MAX);
    assert_int_equal(pt_p2p_decode(m, sizeof m, &q), PT_ERR_TOO_BIG);
    assert_int_equal(pt_p2p_decode(m, 21, &q), PT_ERR_DECODE); /* header cut */
    assert_int_equal(pt_p2p_decode(m, 0, &q), PT_ERR_DECODE);
    for (int t = 0; t < 256; t++) {
        if (t >= PT_P2P_HELLO && t <= PT_P2P_FRIEND_ACCEPT) continue;
        uint8_t one[17] = {(uint8_t)t};
        assert_int_equal(pt_p2p_decode(one, 1, &q), PT_ERR_DECODE);
        assert_int_equal(pt_p2p_decode(one, 17, &q), PT_ERR_DECODE);
    }
    pt_buf_free(&b);
}

/* The stranger's records: INTRO, FRIEND_REQ, FRIEND_ACCEPT. */
static void test_p2p_intro(void **state)
{
    (void)state;
    pt_p2p_rec r;
    memset(&r, 0, sizeof r);
    r.type = PT_P2P_INTRO;
    fill(r.identity_key, 32, 1);
    r.name = (const uint8_t *)"alice";
    r.name_len = 5;
    r.key_id = 0x01020304;
    fill(r.signed_key, 64, 2);
    fill(r.sig, 64, 3);
    p2p_roundtrip(&r, 1 + 32 + 1 + 5 + 4 + 64 + 64);
    static uint8_t name[PT_P2P_NAME_MAX + 1];
    fill(name, sizeof name, 'a');
    r.name = name;
    r.name_len = PT_P2P_NAME_MAX;
    p2p_roundtrip(&r, 1 + 32 + 1 + PT_P2P_NAME_MAX + 4 + 64 + 64);
    pt_buf b;
    pt_buf_init(&b);
    r.name_len = PT_P2P_NAME_MAX + 1;
    assert_int_equal(pt_p2p_encode(&r, &b), PT_ERR_INVAL);
    r.name_len = 0;
    assert_int_equal(pt_p2p_encode(&r, &b), PT_ERR_INVAL);
    assert_int_equal(b.len, 0);
    r.name_len = 5;
    assert_int_equal(pt_p2p_encode(&r, &b), 0);
    pt_p2p_rec q;
    b.data[33] = 0; /* an empty name */
    assert_int_equal(pt_p2p_decode(b.data, b.len, &q), PT_ERR_DECODE);
    b.data[33] = 6; /* a name longer than the record holds */
    assert_int_equal(pt_p2p_decode(b.data, b.len, &q), PT_ERR_DECODE);
    b.data[33] = 200;
    assert_int_equal(pt_p2p_decode(b.data, b.len, &q), PT_ERR_DECODE);
    assert_int_equal(pt_p2p_decode(b.data, 33, &q), PT_ERR_DECODE);
    pt_buf_reset(&b);

    memset(&r, 0, sizeof r);
    r.type = PT_P2P_FRIEND_REQ;
    p2p_roundtrip(&r, 3);
    static uint8_t note[PT_P2P_NOTE_MAX + 1];
    fill(note, sizeof note, 7);
    r.env = note;
    r.env_len = PT_P2P_NOTE_MAX;
    p2p_roundtrip(&r, 3 + PT_P2P_NOTE_MAX);
    r.env_len = PT_P2P_NOTE_MAX + 1;
    assert_int_equal(pt_p2p_encode(&r, &b), PT_ERR_TOO_BIG);
    uint8_t big[3 + PT_P2P_NOTE_MAX + 1] = {PT_P2P_FRIEND_REQ, (PT_P2P_NOTE_MAX + 1) & 0xff, (PT_P2P_NOTE_MAX + 1) >> 8};
    assert_int_equal(pt_p2p_decode(big, sizeof big, &q), PT_ERR_TOO_BIG);
    uint8_t two[5] = {PT_P2P_FRIEND_REQ, 3, 0, 'h', 'i'}; /* says 3, has 2 */
    assert_int_equal(pt_p2p_decode(two, sizeof two, &q), PT_ERR_DECODE);
    assert_int_equal(pt_p2p_decode(two, 2, &q), PT_ERR_DECODE);

    memset(&r, 0, sizeof r);
    r.type = PT_P2P_FRIEND_ACCEPT;
    p2p_roundtrip(&r, 1);
    pt_buf_free(&b);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_fresh),
        cmocka_unit_test(test_addr),
        cmocka_unit_test(test_limiter_source),
        cmocka_unit_test(test_limiter_global),
        cmocka_unit_test(test_limiter_lru),
        cmocka_unit_test(test_p2p),
        cmocka_unit_test(test_p2p_intro),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
