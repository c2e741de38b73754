/* MSE (src/obfs/mse.c) in memory: both roles, RC4 and plaintext, resynchronisation
 * over the largest pads, every early-termination rule (fail-fast and deferred),
 * malformed, truncated and random streams, the look of the first bytes, and
 * deterministic transcripts. The legacy primitives are checked against published
 * vectors first. Randomness is the seeded pt_test_env; a failing property test
 * prints its seed. Interop with libtorrent is tests/interop/test_mse_libtorrent.c. */
#include <stdio.h>
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "crypto/pt_crypto_legacy.h"
#include "obfs/pt_mse.h"
#include "testutil.h"

static const uint8_t SKEY[20] = "0123456789abcdefghij";
static const uint8_t OTHER_SKEY[20] = "jihgfedcba9876543210";
static const uint8_t IA[] = "\x13" "BitTorrent protocol and the first Noise message";

/* ---- legacy primitives against published vectors ------------------------------------ */

static void test_sha1_vector(void **state)
{
    (void)state;
    uint8_t out[20];
    const uint8_t *parts[2] = {(const uint8_t *)"a", (const uint8_t *)"bc"};
    size_t lens[2] = {1, 2};
    assert_int_equal(pt_sha1_parts(out, parts, lens, 2), 0);
    size_t n;
    uint8_t *want = pt_test_unhex("a9993e364706816aba3e25717850c26c9cd0d89d", &n); /* FIPS 180 */
    assert_memory_equal(out, want, 20);
    free(want);
}

static void test_rc4_vectors(void **state)
{
    (void)state;
    /* The classic "Key"/"Plaintext" vector, and RFC 6229's key 0x0102030405 at
     * offset 1024 (so the drop is exercised). */
    pt_rc4 *r = pt_rc4_new((const uint8_t *)"Key", 3, 0);
    assert_non_null(r);
    uint8_t out[16];
    assert_int_equal(pt_rc4_xor(r, out, (const uint8_t *)"Plaintext", 9), 0);
    size_t n;
    uint8_t *want = pt_test_unhex("bbf316e8d940af0ad3", &n);
    assert_memory_equal(out, want, 9);
    free(want);
    pt_rc4_free(r);

    static const uint8_t key[5] = {1, 2, 3, 4, 5}, zero[16] = {0};
    r = pt_rc4_new(key, sizeof key, 1024);
    assert_non_null(r);
    assert_int_equal(pt_rc4_xor(r, out, zero, 16), 0);
    want = pt_test_unhex("30abbcc7c20b01609f23ee2d5f6bb7df", &n);
    assert_memory_equal(out, want, 16);
    free(want);
    pt_rc4_free(r);
}

static void test_dh_basics(void **state)
{
    (void)state;
    uint8_t priv[20] = {0}, pub[96], expect[96] = {0}, s1[96], s2[96];
    priv[19] = 1; /* 2^1 */
    assert_int_equal(pt_dh768_public(pub, priv), 0);
    expect[95] = 2;
    assert_memory_equal(pub, expect, 96);
    priv[19] = 10; /* 2^10 = 0x0400 */
    assert_int_equal(pt_dh768_public(pub, priv), 0);
    expect[95] = 0;
    expect[94] = 4;
    assert_memory_equal(pub, expect, 96);

    uint8_t xa[20], xb[20], ya[96], yb[96];
    for (int i = 0; i < 20; i++) xa[i] = (uint8_t)(i * 7 + 1), xb[i] = (uint8_t)(200 - i * 3);
    assert_int_equal(pt_dh768_public(ya, xa), 0);
    assert_int_equal(pt_dh768_public(yb, xb), 0);
    assert_int_equal(pt_dh768_shared(s1, xa, yb), 0);
    assert_int_equal(pt_dh768_shared(s2, xb, ya), 0);
    assert_memory_equal(s1, s2, 96);

    /* 0, 1, P-1, P and all-ones are refused. */
    uint8_t bad[96] = {0};
    assert_int_equal(pt_dh768_shared(s1, xa, bad), PT_ERR_WEAK_KEY);
    bad[95] = 1;
    assert_int_equal(pt_dh768_shared(s1, xa, bad), PT_ERR_WEAK_KEY);
    memcpy(bad, pt_dh768_prime, 96);
    assert_int_equal(pt_dh768_shared(s1, xa, bad), PT_ERR_WEAK_KEY);
    bad[95]--;
    assert_int_equal(pt_dh768_shared(s1, xa, bad), PT_ERR_WEAK_KEY);
    memset(bad, 0xff, 96);
    assert_int_equal(pt_dh768_shared(s1, xa, bad), PT_ERR_WEAK_KEY);
    bad[95] = 2;
    memset(bad, 0, 95);
    assert_int_equal(pt_dh768_shared(s1, xa, bad), 0);
}

/* ---- a pair of machines --------------------------------------------------------------- */

/* An environment that can force every 2-byte draw (pad lengths) to the maximum. */
typedef struct party {
    pt_test_env te;
    pt_env env;      /* wraps te.env */
    bool max_pads;   /* 2-byte draws return 0x0200 (= 512 of 0..512) */
    pt_mse *m;
    pt_buf out, payload;
    size_t sent;     /* bytes of out already delivered */
    int rc;
} party;

static void party_random(void *ctx, void *buf, size_t len)
{
    party *p = ctx;
    if (p->max_pads && len == 2) {
        ((uint8_t *)buf)[0] = 0x02;
        ((uint8_t *)buf)[1] = 0x00;
        return;
    }
    p->te.env.random(&p->te, buf, len);
}
static uint64_t party_now(void *ctx) { return ((party *)ctx)->te.now_ms; }
static uint64_t party_mono(void *ctx) { return ((party *)ctx)->te.mono_ms; }

static void party_init(party *p, uint64_t seed)
{
    memset(p, 0, sizeof *p);
    pt_test_env_init(&p->te, NULL, 0);
    p->te.counter = seed;
    p->env = (pt_env){.random = party_random, .now_ms = party_now, .mono_ms = party_mono, .ctx = p};
    pt_buf_init(&p->out);
    pt_buf_init(&p->payload);
}

static void party_new(party *p, const pt_mse_config *cfg)
{
    int err = -1;
    p->m = pt_mse_new(&p->env, cfg, &err);
    assert_int_equal(err, 0);
    assert_non_null(p->m);
    assert_int_equal(pt_mse_start(p->m, &p->out), 0);
}

static void party_free(party *p)
{
    pt_mse_free(p->m);
    pt_buf_free(&p->out);
    pt_buf_free(&p->payload);
}

/* Delivers what `from` has not yet delivered to `to`, in chunks of `chunk` bytes
 * (0 = all at once). Returns bytes moved. */
static size_t deliver(party *from, party *to, size_t chunk)
{
    size_t moved = 0;
    while (from->sent < from->out.len && to->rc >= 0) {
        size_t n = from->out.len - from->sent;
        if (chunk && n > chunk) n = chunk;
        to->rc = pt_mse_input(to->m, from->out.data + from->sent, n, &to->out, &to->payload);
        from->sent += n;
        moved += n;
    }
    return moved;
}

static void pump(party *a, party *b, size_t chunk)
{
    for (int i = 0; i < 10; i++) {
        size_t moved = deliver(a, b, chunk);
        moved += deliver(b, a, chunk);
        if (moved == 0) return;
    }
}

static void configs(pt_mse_config *ca, pt_mse_config *cb, const uint8_t *skey_b)
{
    static pt_mse_skey ka, kb;
    ka = (pt_mse_skey){SKEY, sizeof SKEY};
    kb = (pt_mse_skey){skey_b, 20};
    pt_mse_config_init(ca, true);
    pt_mse_config_init(cb, false);
    ca->skeys = &ka;
    ca->nskeys = 1;
    ca->ia = IA;
    ca->ia_len = sizeof IA - 1;
    cb->skeys = &kb;
    cb->nskeys = 1;
}

/* Runs a full handshake and a payload exchange both ways; returns the selection. */
static uint32_t handshake(party *a, party *b, const pt_mse_config *ca, const pt_mse_config *cb,
                          size_t chunk)
{
    party_new(a, ca);
    party_new(b, cb);
    pump(a, b, chunk);
    assert_int_equal(a->rc, PT_MSE_DONE);
    assert_int_equal(b->rc, PT_MSE_DONE);
    assert_true(pt_mse_done(a->m) && pt_mse_done(b->m));
    assert_int_equal(pt_mse_selected(a->m), pt_mse_selected(b->m));
    assert_int_equal(pt_mse_skey_index(b->m), 0);
    assert_int_equal(pt_mse_deadline_ms(a->m), UINT64_MAX);
    /* IA arrives first and intact. */
    assert_int_equal(b->payload.len, ca->ia_len);
    assert_memory_equal(b->payload.data, IA, ca->ia_len);

    static const char from_b[] = "the responder's Noise message", from_a[] = "and the third";
    size_t mark = b->out.len;
    assert_int_equal(pt_mse_seal(b->m, &b->out, (const uint8_t *)from_b, sizeof from_b), 0);
    if (pt_mse_selected(b->m) == PT_MSE_CRYPTO_PLAIN)
        assert_memory_equal(b->out.data + mark, from_b, sizeof from_b);
    else
        assert_memory_not_equal(b->out.data + mark, from_b, sizeof from_b);
    assert_int_equal(pt_mse_seal(a->m, &a->out, (const uint8_t *)from_a, sizeof from_a), 0);
    pump(a, b, chunk);
    assert_int_equal(a->payload.len, sizeof from_b);
    assert_memory_equal(a->payload.data, from_b, sizeof from_b);
    assert_int_equal(b->payload.len, ca->ia_len + sizeof from_a);
    assert_memory_equal(b->payload.data + ca->ia_len, from_a, sizeof from_a);
    return pt_mse_selected(a->m);
}

static void test_handshake_rc4(void **state)
{
    (void)state;
    party a, b;
    party_init(&a, 1);
    party_init(&b, 1000);
    pt_mse_config ca, cb;
    configs(&ca, &cb, SKEY);
    assert_int_equal(handshake(&a, &b, &ca, &cb, 0), PT_MSE_CRYPTO_RC4);
    assert_int_equal(pt_mse_provided(b.m), PT_MSE_CRYPTO_RC4 | PT_MSE_CRYPTO_PLAIN);
    party_free(&a);
    party_free(&b);
}

static void test_handshake_plaintext(void **state)
{
    (void)state;
    /* Receiver only accepts plaintext; then both allow both but B prefers it. */
    for (int variant = 0; variant < 2; variant++) {
        party a, b;
        party_init(&a, 2);
        party_init(&b, 2000);
        pt_mse_config ca, cb;
        configs(&ca, &cb, SKEY);
        if (variant == 0) cb.crypto = PT_MSE_CRYPTO_PLAIN;
        else cb.prefer_plaintext = true;
        assert_int_equal(handshake(&a, &b, &ca, &cb, 0), PT_MSE_CRYPTO_PLAIN);
        party_free(&a);
        party_free(&b);
    }
}

static void test_unknown_bits_ignored(void **state)
{
    (void)state;
    party a, b;
    party_init(&a, 3);
    party_init(&b, 3000);
    pt_mse_config ca, cb;
    configs(&ca, &cb, SKEY);
    ca.crypto = 0xfffffff0u | PT_MSE_CRYPTO_RC4; /* future bits set */
    cb.crypto = 0xffu;
    assert_int_equal(handshake(&a, &b, &ca, &cb, 0), PT_MSE_CRYPTO_RC4);
    party_free(&a);
    party_free(&b);
}

static void test_resync_max_pads(void **state)
{
    (void)state;
    /* PadA = PadB = 512 and PadC = PadD = 512, delivered 1, 7 and 1000 bytes at a
     * time: the hashes sit at the very limits (628 and 616). */
    size_t chunks[] = {1, 7, 1000};
    for (size_t i = 0; i < PT_ARRAY_LEN(chunks); i++) {
        party a, b;
        party_init(&a, 4 + i);
        party_init(&b, 4000 + i);
        a.max_pads = b.max_pads = true;
        pt_mse_config ca, cb;
        configs(&ca, &cb, SKEY);
        ca.pad_cd_max = cb.pad_cd_max = PT_MSE_PAD_MAX;
        party_new(&a, &ca);
        assert_int_equal(a.out.len, 96 + 512);
        party_new(&b, &cb);
        pump(&a, &b, chunks[i]);
        assert_int_equal(a.rc, PT_MSE_DONE);
        assert_int_equal(b.rc, PT_MSE_DONE);
        /* A: Ya PadA, then req1 req2^3 VC provide lenC PadC lenIA IA. */
        assert_int_equal(a.out.len, 608 + 20 + 20 + 14 + 512 + 2 + sizeof IA - 1);
        assert_int_equal(b.out.len, 608 + 14 + 512);
        assert_memory_equal(b.payload.data, IA, sizeof IA - 1);
        party_free(&a);
        party_free(&b);
    }
    /* Several random pads, a multi-SKEY receiver picking the second one. */
    for (uint64_t seed = 0; seed < 8; seed++) {
        party a, b;
        party_init(&a, 50 + seed * 7);
        party_init(&b, 5000 + seed * 7);
        pt_mse_config ca, cb;
        configs(&ca, &cb, SKEY);
        pt_mse_skey two[2] = {{OTHER_SKEY, 20}, {SKEY, 20}};
        cb.skeys = two;
        cb.nskeys = 2;
        ca.pad_cd_max = cb.pad_cd_max = 64;
        party_new(&a, &ca);
        party_new(&b, &cb);
        pump(&a, &b, 13);
        if (a.rc != PT_MSE_DONE || b.rc != PT_MSE_DONE) printf("seed %llu\n", (unsigned long long)seed);
        assert_int_equal(a.rc, PT_MSE_DONE);
        assert_int_equal(b.rc, PT_MSE_DONE);
        assert_int_equal(pt_mse_skey_index(b.m), 1);
        party_free(&a);
        party_free(&b);
    }
}

/* ---- early termination ----------------------------------------------------------------- */

static void expect_fail(party *p, int err, pt_mse_reason reason)
{
    assert_int_equal(p->rc, err);
    assert_int_equal(pt_mse_failure(p->m), reason);
    assert_false(pt_mse_done(p->m));
    /* Errors are final. */
    uint8_t x = 0;
    pt_buf o, pl;
    pt_buf_init(&o);
    pt_buf_init(&pl);
    assert_int_equal(pt_mse_input(p->m, &x, 1, &o, &pl), err);
    assert_int_equal(pt_mse_check_timeout(p->m), err);
    assert_int_equal(o.len + pl.len, 0);
    assert_int_equal(pt_mse_seal(p->m, &o, &x, 1), PT_ERR_STATE);
}

static void test_rule_short(void **state)
{
    (void)state;
    party a, b;
    party_init(&a, 6);
    party_init(&b, 6000);
    pt_mse_config ca, cb;
    configs(&ca, &cb, SKEY);
    cb.dh_timeout_ms = 5000;
    party_new(&a, &ca);
    party_new(&b, &cb);
    b.rc = pt_mse_input(b.m, a.out.data, 95, &b.out, &b.payload);
    assert_int_equal(b.rc, PT_MSE_NEED_MORE);
    assert_int_equal(pt_mse_deadline_ms(b.m), b.te.mono_ms + 5000);
    b.te.mono_ms += 4999;
    assert_int_equal(pt_mse_check_timeout(b.m), 0);
    b.te.mono_ms += 1;
    b.rc = pt_mse_check_timeout(b.m);
    expect_fail(&b, PT_ERR_TIMEOUT, PT_MSE_RULE_SHORT);
    assert_int_equal(b.out.len, 0); /* B never answered */
    party_free(&a);
    party_free(&b);
}

static void test_rule_long(void **state)
{
    (void)state;
    uint8_t junk[700];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 37 + 11);
    /* B: 609 bytes before its step 2. */
    party a, b;
    party_init(&a, 7);
    party_init(&b, 7000);
    pt_mse_config ca, cb;
    configs(&ca, &cb, SKEY);
    party_new(&a, &ca);
    party_new(&b, &cb);
    memcpy(junk, a.out.data, 96);
    b.rc = pt_mse_input(b.m, junk, 609, &b.out, &b.payload);
    expect_fail(&b, PT_ERR_TOO_BIG, PT_MSE_RULE_LONG);
    assert_int_equal(b.out.len, 0);
    party_free(&b);
    /* 608 is fine. */
    party_init(&b, 7001);
    party_new(&b, &cb);
    b.rc = pt_mse_input(b.m, junk, 608, &b.out, &b.payload);
    assert_int_equal(b.rc, PT_MSE_NEED_MORE);
    assert_true(b.out.len >= 96);
    /* A: B's key followed by 513 bytes. */
    memcpy(junk, b.out.data, 96);
    a.rc = pt_mse_input(a.m, junk, 609, &a.out, &a.payload);
    expect_fail(&a, PT_ERR_TOO_BIG, PT_MSE_RULE_LONG);
    party_free(&a);
    party_free(&b);
}

static void test_rule_sync(void **state)
{
    (void)state;
    uint8_t junk[1200];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 101 + 3);
    for (int side = 0; side < 2; side++) {
        party a, b;
        party_init(&a, 8);
        party_init(&b, 8000);
        pt_mse_config ca, cb;
        configs(&ca, &cb, SKEY);
        party_new(&a, &ca);
        party_new(&b, &cb);
        if (side == 0) { /* B: a valid Ya, then no req1 hash */
            b.rc = pt_mse_input(b.m, a.out.data, 96, &b.out, &b.payload);
            assert_int_equal(b.rc, PT_MSE_NEED_MORE);
            b.rc = pt_mse_input(b.m, junk, 531, &b.out, &b.payload);
            assert_int_equal(b.rc, PT_MSE_NEED_MORE); /* 627 bytes: not decided yet */
            b.rc = pt_mse_input(b.m, junk + 531, 1, &b.out, &b.payload);
            expect_fail(&b, PT_ERR_PROTO, PT_MSE_RULE_SYNC);
        } else { /* A: a valid Yb, then no ENCRYPT(VC) */
            deliver(&a, &b, 0);
            a.rc = pt_mse_input(a.m, b.out.data, 96, &a.out, &a.payload);
            assert_int_equal(a.rc, PT_MSE_NEED_MORE);
            a.rc = pt_mse_input(a.m, junk, 519, &a.out, &a.payload);
            assert_int_equal(a.rc, PT_MSE_NEED_MORE);
            a.rc = pt_mse_input(a.m, junk + 519, 1, &a.out, &a.payload);
            expect_fail(&a, PT_ERR_PROTO, PT_MSE_RULE_SYNC);
        }
        party_free(&a);
        party_free(&b);
    }
}

static void test_rule_skey(void **state)
{
    (void)state;
    party a, b;
    party_init(&a, 9);
    party_init(&b, 9000);
    pt_mse_config ca, cb;
    configs(&ca, &cb, OTHER_SKEY); /* wrong SKEY on B */
    party_new(&a, &ca);
    party_new(&b, &cb);
    pump(&a, &b, 0);
    expect_fail(&b, PT_ERR_AUTH, PT_MSE_RULE_SKEY);
    assert_int_equal(a.rc, PT_MSE_NEED_MORE); /* A waits: B sent only step 2 */
    assert_int_equal(b.payload.len, 0);
    party_free(&a);
    party_free(&b);
}

/* Runs A and B up to A's step 3, lets tamper() edit it, delivers it. */
static void run_tampered(party *a, party *b, pt_mse_config *ca, pt_mse_config *cb,
                         void (*tamper)(uint8_t *step, size_t len))
{
    party_new(a, ca);
    party_new(b, cb);
    deliver(a, b, 0);
    size_t step3 = a->out.len;
    deliver(b, a, 0);
    assert_true(a->out.len > step3 + 40);
    tamper(a->out.data + step3, a->out.len - step3);
    deliver(a, b, 0);
}

static void flip_vc(uint8_t *s, size_t len) { (void)len, s[40 + 3] ^= 0x20; }
static void zero_provide(uint8_t *s, size_t len) { (void)len, s[40 + 11] ^= 0x03; }
static void big_padc(uint8_t *s, size_t len) { (void)len, s[40 + 12] ^= 0x02, s[40 + 13] ^= 0x01; }
static void flip_req1(uint8_t *s, size_t len) { (void)len, s[0] ^= 1; }

static void test_rule_vc_provide_format(void **state)
{
    (void)state;
    struct {
        void (*tamper)(uint8_t *, size_t);
        int err;
        pt_mse_reason reason;
    } cases[] = {
        {flip_vc, PT_ERR_AUTH, PT_MSE_RULE_VC},
        {zero_provide, PT_ERR_NO_SUITE, PT_MSE_RULE_PROVIDE},
        {big_padc, PT_ERR_PROTO, PT_MSE_FAIL_FORMAT}, /* len(PadC) = 513 */
        {flip_req1, PT_ERR_PROTO, PT_MSE_RULE_SYNC},
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(cases); i++) {
        party a, b;
        party_init(&a, 10 + i);
        party_init(&b, 10000 + i);
        pt_mse_config ca, cb;
        configs(&ca, &cb, SKEY);
        ca.pad_ab_max = cb.pad_ab_max = 0; /* so that req1 misses sync at 628 at once */
        run_tampered(&a, &b, &ca, &cb, cases[i].tamper);
        if (cases[i].tamper == flip_req1) { /* B scans on until 628 bytes */
            uint8_t junk[600] = {0};
            b.rc = pt_mse_input(b.m, junk, sizeof junk, &b.out, &b.payload);
        }
        expect_fail(&b, cases[i].err, cases[i].reason);
        party_free(&a);
        party_free(&b);
    }
    /* No common method: A offers RC4 only, B accepts plaintext only. */
    party a, b;
    party_init(&a, 20);
    party_init(&b, 20000);
    pt_mse_config ca, cb;
    configs(&ca, &cb, SKEY);
    ca.crypto = PT_MSE_CRYPTO_RC4;
    cb.crypto = PT_MSE_CRYPTO_PLAIN;
    party_new(&a, &ca);
    party_new(&b, &cb);
    pump(&a, &b, 0);
    expect_fail(&b, PT_ERR_NO_SUITE, PT_MSE_RULE_PROVIDE);
    party_free(&a);
    party_free(&b);
}

static void test_rule_select(void **state)
{
    (void)state;
    /* B's step 4 altered so that it selects plaintext (not provided), both
     * methods, or only an unknown bit. */
    static const uint8_t flips[] = {0x03, 0x01, 0x06};
    for (size_t i = 0; i < sizeof flips; i++) {
        party a, b;
        party_init(&a, 21 + i);
        party_init(&b, 21000 + i);
        pt_mse_config ca, cb;
        configs(&ca, &cb, SKEY);
        ca.crypto = PT_MSE_CRYPTO_RC4;
        party_new(&a, &ca);
        party_new(&b, &cb);
        deliver(&a, &b, 0);
        deliver(&b, &a, 0);
        size_t step4 = b.out.len;
        deliver(&a, &b, 0);
        assert_int_equal(b.rc, PT_MSE_DONE);
        assert_int_equal(b.out.len, step4 + 14);
        b.out.data[step4 + 11] ^= flips[i]; /* 0x02 becomes 0x01, 0x03 or 0x04 */
        deliver(&b, &a, 0);
        expect_fail(&a, PT_ERR_NO_SUITE, PT_MSE_RULE_SELECT);
        party_free(&a);
        party_free(&b);
    }
}

static void test_deferred_rules(void **state)
{
    (void)state;
    /* With SKEY deferred, a wrong SKEY is answered by silence until the deadline. */
    party a, b;
    party_init(&a, 30);
    party_init(&b, 30000);
    pt_mse_config ca, cb;
    configs(&ca, &cb, OTHER_SKEY);
    cb.defer_rules = PT_MSE_RULE_SKEY | PT_MSE_RULE_SYNC;
    cb.timeout_ms = 10000;
    party_new(&a, &ca);
    party_new(&b, &cb);
    pump(&a, &b, 0);
    assert_int_equal(b.rc, PT_MSE_NEED_MORE);
    assert_int_equal(pt_mse_failure(b.m), PT_MSE_RULE_SKEY);
    size_t before = b.out.len;
    uint8_t junk[4000] = {1};
    assert_int_equal(pt_mse_input(b.m, junk, sizeof junk, &b.out, &b.payload), PT_MSE_NEED_MORE);
    assert_int_equal(b.out.len, before);
    assert_int_equal(b.payload.len, 0);
    assert_int_equal(pt_mse_check_timeout(b.m), 0);
    assert_int_equal(pt_mse_deadline_ms(b.m), b.te.mono_ms + 10000);
    b.te.mono_ms += 10000;
    assert_int_equal(pt_mse_check_timeout(b.m), PT_ERR_AUTH);
    b.rc = PT_ERR_AUTH;
    expect_fail(&b, PT_ERR_AUTH, PT_MSE_RULE_SKEY);
    party_free(&a);
    party_free(&b);
}

static void test_truncated_steps_time_out(void **state)
{
    (void)state;
    /* Step 3 missing its last byte: B waits, then times out. Same for A with
     * step 4 cut short. */
    for (int side = 0; side < 2; side++) {
        party a, b;
        party_init(&a, 40 + side);
        party_init(&b, 40000 + side);
        pt_mse_config ca, cb;
        configs(&ca, &cb, SKEY);
        ca.pad_cd_max = cb.pad_cd_max = 16;
        party_new(&a, &ca);
        party_new(&b, &cb);
        deliver(&a, &b, 0);
        deliver(&b, &a, 0);
        party *victim = side == 0 ? &b : &a;
        if (side == 0) {
            a.out.len--;
            deliver(&a, &b, 0);
        } else {
            deliver(&a, &b, 0);
            b.out.len--;
            deliver(&b, &a, 0);
        }
        assert_int_equal(victim->rc, PT_MSE_NEED_MORE);
        victim->te.mono_ms += PT_MSE_TIMEOUT_MS - 1;
        assert_int_equal(pt_mse_check_timeout(victim->m), 0);
        victim->te.mono_ms += 1;
        victim->rc = pt_mse_check_timeout(victim->m);
        expect_fail(victim, PT_ERR_TIMEOUT, PT_MSE_FAIL_TIMEOUT);
        party_free(&a);
        party_free(&b);
    }
}

static void test_garbage_streams(void **state)
{
    (void)state;
    /* Random streams of random lengths, split randomly, to both roles: each ends in
     * an error at once or at the deadline, never in success. */
    pt_test_env rng;
    pt_test_env_init(&rng, NULL, 0);
    rng.counter = 777;
    size_t immediate = 0;
    for (int round = 0; round < 200; round++) {
        uint8_t buf[3000], r[4];
        pt_env_random(&rng.env, r, sizeof r);
        size_t len = (size_t)(r[0] | r[1] << 8) % sizeof buf;
        pt_env_random(&rng.env, buf, len);
        party p, other;
        party_init(&p, 90000 + (uint64_t)round);
        party_init(&other, 1);
        pt_mse_config ca, cb;
        configs(&ca, &cb, SKEY);
        party_new(&p, round % 2 ? &ca : &cb);
        size_t off = 0;
        while (off < len && p.rc >= 0) {
            size_t n = 1 + r[2] % 200;
            if (n > len - off) n = len - off;
            p.rc = pt_mse_input(p.m, buf + off, n, &p.out, &p.payload);
            assert_true(p.rc == PT_MSE_NEED_MORE || p.rc < 0);
            off += n;
        }
        if (p.rc < 0) {
            immediate++;
        } else {
            p.te.mono_ms += PT_MSE_TIMEOUT_MS;
            assert_true(pt_mse_check_timeout(p.m) < 0);
        }
        assert_int_equal(p.payload.len, 0);
        assert_false(pt_mse_done(p.m));
        party_free(&p);
        party_free(&other);
    }
    assert_true(immediate > 50); /* long random streams fail on the sync rule at once */
}

/* ---- looks ------------------------------------------------------------------------------ */

/* Chi-square statistic of byte counts against the uniform distribution. */
static double chi_square(const size_t counts[256], size_t total)
{
    double expect = (double)total / 256, chi = 0;
    for (int i = 0; i < 256; i++) chi += ((double)counts[i] - expect) * ((double)counts[i] - expect) / expect;
    return chi;
}

static void test_first_bytes_look_random(void **state)
{
    (void)state;
    /* 100 handshakes: the first 96 bytes each side sends (its DH key) pooled, and
     * the lengths of the first packets. 255 degrees of freedom: mean 255, sd 22.6;
     * 400 is beyond six sd. Constant bytes would give ~2.4 million. */
    size_t ca_counts[256] = {0}, cb_counts[256] = {0};
    size_t distinct_a = 0, distinct_b = 0;
    size_t seen_a[1024] = {0}, seen_b[1024] = {0};
    for (int i = 0; i < 100; i++) {
        party a, b;
        party_init(&a, 100000 + (uint64_t)i * 1000);
        party_init(&b, 500000 + (uint64_t)i * 1000);
        pt_mse_config ca, cb;
        configs(&ca, &cb, SKEY);
        party_new(&a, &ca);
        party_new(&b, &cb);
        for (int k = 0; k < 96; k++) ca_counts[a.out.data[k]]++;
        size_t la = a.out.len;
        deliver(&a, &b, 0);
        for (int k = 0; k < 96; k++) cb_counts[b.out.data[k]]++;
        if (seen_a[la]++ == 0) distinct_a++;
        if (seen_b[b.out.len]++ == 0) distinct_b++;
        party_free(&a);
        party_free(&b);
    }
    double chi_a = chi_square(ca_counts, 9600), chi_b = chi_square(cb_counts, 9600);
    printf("chi-square of Ya bytes %.1f, Yb bytes %.1f; distinct lengths %zu / %zu\n", chi_a,
           chi_b, distinct_a, distinct_b);
    assert_true(chi_a < 400 && chi_b < 400);
    assert_true(distinct_a > 80 && distinct_b > 80);
}

static void test_deterministic_transcript(void **state)
{
    (void)state;
    /* The same seeds give the same bytes on the wire; other seeds differ. */
    uint8_t digest[3][32];
    for (int run = 0; run < 3; run++) {
        party a, b;
        party_init(&a, run == 2 ? 43 : 42);
        party_init(&b, 4242);
        pt_mse_config ca, cb;
        configs(&ca, &cb, SKEY);
        handshake(&a, &b, &ca, &cb, 0);
        assert_int_equal(pt_hash2(PT_HASH_SHA256, digest[run], a.out.data, a.out.len, b.out.data,
                                  b.out.len), 0);
        party_free(&a);
        party_free(&b);
    }
    assert_memory_equal(digest[0], digest[1], 32);
    assert_memory_not_equal(digest[0], digest[2], 32);
}

static void test_config_checks(void **state)
{
    (void)state;
    pt_mse_config c;
    pt_mse_skey k = {SKEY, 20};
    pt_test_env te;
    pt_test_env_init(&te, NULL, 0);
    int err = 0;
    pt_mse_config_init(&c, true);
    assert_null(pt_mse_new(&te.env, &c, &err)); /* no SKEY */
    assert_int_equal(err, PT_ERR_INVAL);
    c.skeys = &k;
    c.nskeys = 1;
    c.pad_ab_max = 513;
    assert_null(pt_mse_new(&te.env, &c, &err));
    c.pad_ab_max = 512;
    c.ia_len = 65536;
    c.ia = IA;
    assert_null(pt_mse_new(&te.env, &c, &err));
    c.ia_len = 0;
    c.crypto = 0;
    assert_null(pt_mse_new(&te.env, &c, &err));
    c.crypto = PT_MSE_CRYPTO_RC4;
    pt_mse *m = pt_mse_new(&te.env, &c, &err);
    assert_non_null(m);
    pt_buf o, pl;
    pt_buf_init(&o);
    pt_buf_init(&pl);
    assert_int_equal(pt_mse_input(m, NULL, 0, &o, &pl), PT_ERR_STATE); /* before start */
    assert_int_equal(pt_mse_seal(m, &o, IA, 1), PT_ERR_STATE);
    pt_mse_free(m);
    pt_mse_free(NULL);

    uint8_t sk1[20], sk2[20], nk[32] = {1, 2, 3};
    assert_int_equal(pt_mse_packtrack_skey(sk1, nk, sizeof nk, "chat.example.org"), 0);
    assert_int_equal(pt_mse_packtrack_skey(sk2, nk, sizeof nk, "other.example.org"), 0);
    assert_memory_not_equal(sk1, sk2, 20);
    assert_int_equal(pt_mse_packtrack_skey(sk2, nk, 8, "x"), PT_ERR_INVAL);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    pt_log_set_level(PT_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha1_vector),
        cmocka_unit_test(test_rc4_vectors),
        cmocka_unit_test(test_dh_basics),
        cmocka_unit_test(test_handshake_rc4),
        cmocka_unit_test(test_handshake_plaintext),
        cmocka_unit_test(test_unknown_bits_ignored),
        cmocka_unit_test(test_resync_max_pads),
        cmocka_unit_test(test_rule_short),
        cmocka_unit_test(test_rule_long),
        cmocka_unit_test(test_rule_sync),
        cmocka_unit_test(test_rule_skey),
        cmocka_unit_test(test_rule_vc_provide_format),
        cmocka_unit_test(test_rule_select),
        cmocka_unit_test(test_deferred_rules),
        cmocka_unit_test(test_truncated_steps_time_out),
        cmocka_unit_test(test_garbage_streams),
        cmocka_unit_test(test_first_bytes_look_random),
        cmocka_unit_test(test_deterministic_transcript),
        cmocka_unit_test(test_config_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
