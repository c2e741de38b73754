/* Unit and property tests for src/e2e/megolm: the ratchet (jumps equal single
 * steps, the spec's rehash rule), the message codec, round trips, replay
 * detection (including the fail-closed fold of old ranges), the index limit and
 * storage (round trip, every truncation and every flipped byte refused).
 * Byte compatibility with libolm is in tests/interop/test_megolm_interop.c.
 *
 * Seeded: the seed is printed and can be replayed with PT_TEST_SEED=<n>. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "testutil.h"
#include "crypto/pt_crypto.h"
#include "e2e/pt_megolm.h"

static uint64_t g_seed, g_state;

static uint64_t rnd(void)
{
    uint64_t z = (g_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rnd_bytes(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
}

static int setup(void **state)
{
    (void)state;
    g_state = g_seed;
    return 0;
}

/* An outbound session from seeded randomness; *rand_out (160 bytes) gets it. */
static pt_megolm_out *new_out(uint8_t random[160])
{
    static pt_test_env te; /* the script must outlive the call only */
    rnd_bytes(random, 160);
    pt_test_env_init(&te, random, 160);
    pt_err e;
    pt_megolm_out *s = pt_megolm_out_new(&te.env, &e);
    assert_non_null(s);
    assert_int_equal(e, 0);
    return s;
}

static pt_megolm_in *in_for(const pt_megolm_out *o)
{
    uint8_t key[PT_MEGOLM_SESSION_KEY_LEN];
    assert_int_equal(pt_megolm_out_session_key(o, key), 0);
    pt_err e;
    pt_megolm_in *s = pt_megolm_in_from_session_key(key, sizeof key, &e);
    assert_non_null(s);
    return s;
}

/* ---- the ratchet --------------------------------------------------------------------- */

static void hmac_part(uint8_t out[32], const uint8_t key[32], uint8_t seed)
{
    assert_int_equal(pt_hmac(PT_HASH_SHA256, out, key, 32, &seed, 1), 0);
}

/* The spec: when part h rolls, it and every part below it become H_j of the
 * value part h had before (R(i,j) = H_j(R(i-1,h)) for j >= h); from i = 0xff to
 * 0x100, R0 and R1 stay, R2' = H2(R2), R3' = H3(R2). */
static void test_ratchet_spec_rule(void **state)
{
    (void)state;
    pt_megolm_ratchet r, want;
    rnd_bytes(&r.data[0][0], sizeof r.data);
    r.counter = 0xff;
    want = r;
    hmac_part(want.data[2], r.data[2], 2);
    hmac_part(want.data[3], r.data[2], 3);
    want.counter = 0x100;
    assert_int_equal(pt_megolm_ratchet_advance(&r), 0);
    assert_int_equal(r.counter, 0x100);
    assert_memory_equal(r.data, want.data, sizeof r.data);
    /* 0x100 -> 0x101: only R3' = H3(R3). */
    want = r;
    hmac_part(want.data[3], r.data[3], 3);
    assert_int_equal(pt_megolm_ratchet_advance(&r), 0);
    assert_memory_equal(r.data, want.data, sizeof r.data);
    /* 0x00ffffff -> 0x01000000: R0 rolls, every other part reseeds from it. */
    r.counter = 0x00ffffff;
    want = r;
    hmac_part(want.data[0], r.data[0], 0);
    for (int j = 1; j < 4; j++)
        hmac_part(want.data[j], r.data[0], (uint8_t)j);
    assert_int_equal(pt_megolm_ratchet_advance(&r), 0);
    assert_int_equal(r.counter, 0x01000000);
    assert_memory_equal(r.data, want.data, sizeof r.data);
    /* UINT32_MAX wraps to 0 as libolm's does (only outbound sessions could get there,
     * and they refuse to). */
    r.counter = UINT32_MAX;
    assert_int_equal(pt_megolm_ratchet_advance(&r), 0);
    assert_int_equal(r.counter, 0);
}

/* A jump lands where single steps land, from starts just below every byte boundary. */
static void test_ratchet_jump_equals_steps(void **state)
{
    (void)state;
    static const uint32_t starts[] = {0,        1,          0xf0,        0xfff0,
                                      0xfffff0, 0x00ffff00, 0xfffff000u, 0x12345678u};
    for (size_t t = 0; t < PT_ARRAY_LEN(starts) + 6; t++) {
        pt_megolm_ratchet a, b;
        rnd_bytes(&a.data[0][0], sizeof a.data);
        a.counter = t < PT_ARRAY_LEN(starts) ? starts[t] : (uint32_t)rnd();
        uint32_t dist = (uint32_t)(rnd() % 1500);
        if ((uint64_t)a.counter + dist > UINT32_MAX) dist = UINT32_MAX - a.counter;
        b = a;
        for (uint32_t i = 0; i < dist; i++)
            assert_int_equal(pt_megolm_ratchet_advance(&a), 0);
        assert_int_equal(pt_megolm_ratchet_advance_to(&b, b.counter + dist), 0);
        assert_int_equal(a.counter, b.counter);
        assert_memory_equal(a.data, b.data, sizeof a.data);
        /* and in two jumps */
        pt_megolm_ratchet c = a;
        uint32_t half = (uint32_t)(rnd() % 600), c0 = c.counter;
        if ((uint64_t)c0 + 2 * half <= UINT32_MAX) {
            pt_megolm_ratchet d = c;
            assert_int_equal(pt_megolm_ratchet_advance_to(&c, c0 + half), 0);
            assert_int_equal(pt_megolm_ratchet_advance_to(&c, c0 + 2 * half), 0);
            assert_int_equal(pt_megolm_ratchet_advance_to(&d, c0 + 2 * half), 0);
            assert_memory_equal(c.data, d.data, sizeof c.data);
        }
    }
}

/* ---- the codec ------------------------------------------------------------------------ */

static size_t build(uint8_t *out, const uint8_t *payload, size_t n)
{
    out[0] = 3;
    memcpy(out + 1, payload, n);
    memset(out + 1 + n, 0xab, 72);
    return 1 + n + 72;
}

static void test_codec(void **state)
{
    (void)state;
    uint8_t buf[512], ct16[16] = {0};
    pt_megolm_msg m;
    /* canonical: index 300 (0xac 0x02), 16 bytes of ciphertext */
    uint8_t p1[4 + 2 + 16] = {0x08, 0xac, 0x02, 0x12, 16};
    size_t n = build(buf, p1, 5 + 16);
    assert_int_equal(pt_megolm_msg_decode(&m, buf, n), 0);
    assert_int_equal(m.index, 300);
    assert_int_equal(m.ciphertext_len, 16);
    assert_ptr_equal(m.ciphertext, buf + 6);
    assert_int_equal(m.mac_covered_len, n - 72);
    assert_int_equal(m.signed_len, n - 64);
    assert_ptr_equal(m.sig, buf + n - 64);
    /* every prefix refused */
    for (size_t k = 0; k < n; k++)
        assert_int_not_equal(pt_megolm_msg_decode(&m, buf, k), 0);
    /* fields in the other order, and unknown fields skipped (varint 0x18, bytes 0x22) */
    uint8_t p2[64], *q = p2;
    *q++ = 0x18;
    *q++ = 0xff;
    *q++ = 0x01;
    *q++ = 0x12;
    *q++ = 16;
    memcpy(q, ct16, 16);
    q += 16;
    *q++ = 0x22;
    *q++ = 3;
    *q++ = 1;
    *q++ = 2;
    *q++ = 3;
    *q++ = 0x08;
    *q++ = 0x05;
    n = build(buf, p2, (size_t)(q - p2));
    assert_int_equal(pt_megolm_msg_decode(&m, buf, n), 0);
    assert_int_equal(m.index, 5);
    assert_int_equal(m.ciphertext_len, 16);
    /* a duplicate field refused */
    uint8_t p3[] = {0x08, 1, 0x08, 2, 0x12, 16};
    memcpy(p2, p3, sizeof p3);
    memcpy(p2 + sizeof p3, ct16, 16);
    n = build(buf, p2, sizeof p3 + 16);
    assert_int_equal(pt_megolm_msg_decode(&m, buf, n), PT_ERR_DECODE);
    /* missing index, missing ciphertext */
    uint8_t p4[] = {0x12, 16};
    memcpy(p2, p4, 2);
    memcpy(p2 + 2, ct16, 16);
    assert_int_equal(pt_megolm_msg_decode(&m, buf, build(buf, p2, 18)), PT_ERR_DECODE);
    uint8_t p5[] = {0x08, 1};
    assert_int_equal(pt_megolm_msg_decode(&m, buf, build(buf, p5, 2)), PT_ERR_DECODE);
    /* index above 32 bits; an unterminated varint; a wire type we cannot skip */
    uint8_t p6[] = {0x08, 0x80, 0x80, 0x80, 0x80, 0x10, 0x12, 16};
    memcpy(p2, p6, sizeof p6);
    memcpy(p2 + sizeof p6, ct16, 16);
    assert_int_equal(pt_megolm_msg_decode(&m, buf, build(buf, p2, sizeof p6 + 16)), PT_ERR_DECODE);
    p2[5] = 0x0f; /* 0xffffffff fits */
    p2[1] = p2[2] = p2[3] = p2[4] = 0xff;
    assert_int_equal(pt_megolm_msg_decode(&m, buf, build(buf, p2, sizeof p6 + 16)), 0);
    assert_int_equal(m.index, UINT32_MAX);
    uint8_t p7[] = {0x08, 0x80};
    assert_int_equal(pt_megolm_msg_decode(&m, buf, build(buf, p7, 2)), PT_ERR_DECODE);
    uint8_t p8[] = {0x0d, 1, 2, 3, 4, 0x08, 1};
    assert_int_equal(pt_megolm_msg_decode(&m, buf, build(buf, p8, sizeof p8)), PT_ERR_DECODE);
    /* a ciphertext that is not whole blocks, or empty; a length past the end */
    uint8_t p9[] = {0x08, 1, 0x12, 15};
    memcpy(p2, p9, 4);
    assert_int_equal(pt_megolm_msg_decode(&m, buf, build(buf, p2, 4 + 15)), PT_ERR_DECODE);
    uint8_t p10[] = {0x08, 1, 0x12, 0};
    assert_int_equal(pt_megolm_msg_decode(&m, buf, build(buf, p10, 4)), PT_ERR_DECODE);
    uint8_t p11[] = {0x08, 1, 0x12, 17};
    memcpy(p2, p11, 4);
    assert_int_equal(pt_megolm_msg_decode(&m, buf, build(buf, p2, 4 + 16)), PT_ERR_DECODE);
    /* version, size */
    n = build(buf, p1, 5 + 16);
    buf[0] = 2;
    assert_int_equal(pt_megolm_msg_decode(&m, buf, n), PT_ERR_VERSION);
    uint8_t *big = calloc(1, PT_MEGOLM_MAX_MESSAGE + 1);
    big[0] = 3;
    assert_int_equal(pt_megolm_msg_decode(&m, big, PT_MEGOLM_MAX_MESSAGE + 1), PT_ERR_TOO_BIG);
    free(big);
}

/* ---- sessions ------------------------------------------------------------------------- */

static void test_roundtrip_and_limits(void **state)
{
    (void)state;
    uint8_t random[160];
    pt_megolm_out *o = new_out(random);
    pt_megolm_in *in = in_for(o);
    uint8_t ido[32], idi[32];
    pt_megolm_out_id(o, ido);
    pt_megolm_in_id(in, idi);
    assert_memory_equal(ido, idi, 32);
    pt_buf m, p;
    pt_buf_init(&m);
    pt_buf_init(&p);
    static const size_t sizes[] = {0, 1, 15, 16, 17, 1000, PT_MEGOLM_MAX_PLAINTEXT};
    uint8_t *pt = malloc(PT_MEGOLM_MAX_PLAINTEXT + 1);
    rnd_bytes(pt, PT_MEGOLM_MAX_PLAINTEXT + 1);
    for (size_t i = 0; i < PT_ARRAY_LEN(sizes); i++) {
        pt_buf_reset(&m);
        pt_buf_reset(&p);
        assert_int_equal(pt_megolm_out_encrypt(o, &m, pt, sizes[i]), 0);
        assert_true(m.len <= PT_MEGOLM_MAX_MESSAGE);
        uint32_t idx;
        assert_int_equal(pt_megolm_in_decrypt(in, &p, &idx, m.data, m.len, 0), 0);
        assert_int_equal(idx, i);
        assert_int_equal(p.len, sizes[i]);
        if (sizes[i]) assert_memory_equal(p.data, pt, sizes[i]);
    }
    pt_buf_reset(&m);
    assert_int_equal(pt_megolm_out_encrypt(o, &m, pt, PT_MEGOLM_MAX_PLAINTEXT + 1), PT_ERR_TOO_BIG);
    assert_int_equal(m.len, 0);
    assert_int_equal(pt_megolm_out_index(o), PT_ARRAY_LEN(sizes));

    /* key formats: wrong lengths and versions */
    uint8_t key[PT_MEGOLM_SESSION_KEY_LEN], ex[PT_MEGOLM_EXPORT_LEN];
    pt_err e;
    assert_int_equal(pt_megolm_out_session_key(o, key), 0);
    assert_null(pt_megolm_in_from_session_key(key, sizeof key - 1, &e));
    assert_int_equal(e, PT_ERR_DECODE);
    assert_null(pt_megolm_in_from_export(key, sizeof key, &e));
    assert_int_equal(e, PT_ERR_DECODE);
    assert_int_equal(pt_megolm_in_export(in, 3, ex), 0);
    assert_null(pt_megolm_in_from_session_key(ex, sizeof ex, &e));
    assert_int_equal(e, PT_ERR_DECODE);
    ex[0] = 2;
    assert_null(pt_megolm_in_from_export(ex, sizeof ex, &e));
    assert_int_equal(e, PT_ERR_VERSION);
    ex[0] = 1;
    pt_megolm_in *in3 = pt_megolm_in_from_export(ex, sizeof ex, &e);
    assert_non_null(in3);
    assert_int_equal(pt_megolm_in_export(in3, 2, ex), PT_ERR_NOT_FOUND);
    pt_megolm_in_free(in3);
    /* a session key signed by another key is refused */
    pt_megolm_out *o2 = new_out(random);
    uint8_t key2[PT_MEGOLM_SESSION_KEY_LEN];
    assert_int_equal(pt_megolm_out_session_key(o2, key2), 0);
    memcpy(key + PT_MEGOLM_EXPORT_LEN, key2 + PT_MEGOLM_EXPORT_LEN, 64);
    assert_null(pt_megolm_in_from_session_key(key, sizeof key, &e));
    assert_int_equal(e, PT_ERR_AUTH);
    /* a message from another session is refused */
    pt_buf_reset(&m);
    assert_int_equal(pt_megolm_out_encrypt(o2, &m, pt, 5), 0);
    assert_int_equal(pt_megolm_in_decrypt(in, &p, NULL, m.data, m.len, 0), PT_ERR_AUTH);
    pt_megolm_out_free(o2);
    free(pt);
    pt_buf_free(&m);
    pt_buf_free(&p);
    pt_megolm_in_free(in);
    pt_megolm_out_free(o);
}

/* Replays against a model set, with messages in a seeded order and duplicates. */
static void test_replay_property(void **state)
{
    (void)state;
    uint8_t random[160];
    pt_megolm_out *o = new_out(random);
    pt_megolm_in *in = in_for(o);
    enum { N = 400 };
    pt_buf msgs[N];
    bool seen[N] = {false};
    for (size_t i = 0; i < N; i++) {
        pt_buf_init(&msgs[i]);
        uint8_t b = (uint8_t)i;
        assert_int_equal(pt_megolm_out_encrypt(o, &msgs[i], &b, 1), 0);
    }
    pt_buf p;
    pt_buf_init(&p);
    for (size_t k = 0; k < 3 * N; k++) {
        /* mostly near the front of the stream, sometimes far back */
        size_t i = (size_t)(rnd() % 4 ? (k / 3 + rnd() % 20) % N : rnd() % N);
        uint32_t idx;
        pt_buf_reset(&p);
        int rc = pt_megolm_in_decrypt(in, &p, &idx, msgs[i].data, msgs[i].len, 0);
        assert_int_equal(idx, i);
        if (seen[i]) {
            assert_int_equal(rc, PT_ERR_REPLAY);
            assert_int_equal(p.len, 0);
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(p.len, 1);
            assert_int_equal(p.data[0], (uint8_t)i);
            seen[i] = true;
        }
        assert_int_equal(pt_megolm_in_seen(in, (uint32_t)i), true);
    }
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(pt_megolm_in_seen(in, (uint32_t)i), seen[i]);
        pt_buf_free(&msgs[i]);
    }
    pt_buf_free(&p);
    pt_megolm_in_free(in);
    pt_megolm_out_free(o);
}

/* Every other index of 1200: more ranges than the session keeps. The oldest fold
 * together; what falls in a folded gap is refused, never decrypted twice. */
static void test_replay_ranges_fail_closed(void **state)
{
    (void)state;
    uint8_t random[160];
    pt_megolm_out *o = new_out(random);
    pt_megolm_in *in = in_for(o);
    enum { N = 1200 };
    pt_buf *msgs = calloc(N, sizeof *msgs);
    for (size_t i = 0; i < N; i++) {
        pt_buf_init(&msgs[i]);
        assert_int_equal(pt_megolm_out_encrypt(o, &msgs[i], (const uint8_t *)"x", 1), 0);
    }
    pt_buf p;
    pt_buf_init(&p);
    for (size_t i = 0; i < N; i += 2)
        assert_int_equal(pt_megolm_in_decrypt(in, &p, NULL, msgs[i].data, msgs[i].len, 0), 0);
    size_t refused = 0, accepted = 0;
    for (size_t i = 0; i < N; i++) {
        int rc = pt_megolm_in_decrypt(in, &p, NULL, msgs[i].data, msgs[i].len, 0);
        if (i % 2 == 0) {
            assert_int_equal(rc, PT_ERR_REPLAY);
        } else if (rc == 0) {
            accepted++;
        } else {
            assert_int_equal(rc, PT_ERR_REPLAY);
            refused++;
        }
        /* whatever happened, a second try is a replay */
        assert_int_equal(pt_megolm_in_decrypt(in, &p, NULL, msgs[i].data, msgs[i].len, 0),
                         PT_ERR_REPLAY);
    }
    /* the newest gaps were remembered exactly, the oldest folded */
    assert_true(accepted >= PT_MEGOLM_MAX_RANGES - 2);
    assert_true(refused > 0);
    /* allowed on request */
    assert_int_equal(
        pt_megolm_in_decrypt(in, &p, NULL, msgs[1].data, msgs[1].len, PT_MEGOLM_ALLOW_REPLAY), 0);
    for (size_t i = 0; i < N; i++)
        pt_buf_free(&msgs[i]);
    free(msgs);
    pt_buf_free(&p);
    pt_megolm_in_free(in);
    pt_megolm_out_free(o);
}

/* Rewrites the trailing checksum of a state blob, as a careless editor (not the
 * checksum) would have to for a semantic check to be reached. */
static void fix_checksum(uint8_t *b, size_t len)
{
    assert_int_equal(pt_hash(PT_HASH_SHA256, b + len - 32, b, len - 32), 0);
}

static void test_storage(void **state)
{
    (void)state;
    uint8_t random[160];
    pt_megolm_out *o = new_out(random);
    pt_megolm_in *in = in_for(o);
    pt_buf m, p, so, si;
    pt_buf_init(&m);
    pt_buf_init(&p);
    pt_buf_init(&so);
    pt_buf_init(&si);
    pt_buf msgs[20];
    for (size_t i = 0; i < 20; i++) {
        pt_buf_init(&msgs[i]);
        assert_int_equal(pt_megolm_out_encrypt(o, &msgs[i], (const uint8_t *)"hello", 5), 0);
    }
    for (size_t i = 0; i < 20; i += 3)
        assert_int_equal(pt_megolm_in_decrypt(in, &p, NULL, msgs[i].data, msgs[i].len, 0), 0);
    assert_int_equal(pt_megolm_out_serialize(o, &so), 0);
    assert_int_equal(pt_megolm_in_serialize(in, &si), 0);
    pt_err e;
    pt_megolm_out *o2 = pt_megolm_out_restore(so.data, so.len, &e);
    pt_megolm_in *in2 = pt_megolm_in_restore(si.data, si.len, &e);
    assert_non_null(o2);
    assert_non_null(in2);
    /* The restored sender continues where it was, identical to the original. */
    pt_buf m2;
    pt_buf_init(&m2);
    assert_int_equal(pt_megolm_out_encrypt(o, &m, (const uint8_t *)"next", 4), 0);
    assert_int_equal(pt_megolm_out_encrypt(o2, &m2, (const uint8_t *)"next", 4), 0);
    assert_int_equal(m.len, m2.len);
    assert_memory_equal(m.data, m2.data, m.len);
    /* The restored receiver remembers what it decrypted. */
    for (size_t i = 0; i < 20; i++) {
        int rc = pt_megolm_in_decrypt(in2, &p, NULL, msgs[i].data, msgs[i].len, 0);
        assert_int_equal(rc, i % 3 == 0 ? PT_ERR_REPLAY : 0);
    }
    assert_int_equal(pt_megolm_in_decrypt(in2, &p, NULL, m.data, m.len, 0), 0);
    assert_true(pt_megolm_in_verified(in2));

    /* Every truncation and every flipped byte of both blobs is refused. */
    pt_buf *blobs[2] = {&so, &si};
    for (int w = 0; w < 2; w++) {
        pt_buf *b = blobs[w];
        for (size_t k = 0; k < b->len; k++) {
            void *s = w ? (void *)pt_megolm_in_restore(b->data, k, &e)
                        : (void *)pt_megolm_out_restore(b->data, k, &e);
            assert_null(s);
            assert_int_not_equal(e, 0);
        }
        for (size_t k = 0; k < b->len; k++) {
            b->data[k] ^= (uint8_t)(1u << (k % 8));
            void *s = w ? (void *)pt_megolm_in_restore(b->data, b->len, &e)
                        : (void *)pt_megolm_out_restore(b->data, b->len, &e);
            assert_null(s);
            b->data[k] ^= (uint8_t)(1u << (k % 8));
        }
    }
    /* Semantic checks behind the checksum: a latest ratchet that is not the first
     * one advanced; ranges out of order; unknown flags. */
    uint8_t *c = malloc(si.len);
    size_t latest_data = 4 + 1 + 4 + 128 + 4;
    memcpy(c, si.data, si.len);
    c[latest_data] ^= 1;
    fix_checksum(c, si.len);
    assert_null(pt_megolm_in_restore(c, si.len, &e));
    assert_int_equal(e, PT_ERR_DECODE);
    size_t flags_at = 5 + 2 * (4 + 128) + 32;
    memcpy(c, si.data, si.len);
    c[flags_at] |= 0x80;
    fix_checksum(c, si.len);
    assert_null(pt_megolm_in_restore(c, si.len, &e));
    memcpy(c, si.data, si.len);
    assert_true(c[flags_at + 1] >= 2);
    uint8_t r0[8];
    memcpy(r0, c + flags_at + 3, 8); /* swap the first two ranges */
    memcpy(c + flags_at + 3, c + flags_at + 11, 8);
    memcpy(c + flags_at + 11, r0, 8);
    fix_checksum(c, si.len);
    assert_null(pt_megolm_in_restore(c, si.len, &e));
    free(c);

    /* A sender at the last index refuses to wrap: start a new session instead. */
    pt_buf_reset(&so);
    assert_int_equal(pt_megolm_out_serialize(o, &so), 0);
    pt_put_u32le(so.data + 5, UINT32_MAX - 1);
    fix_checksum(so.data, so.len);
    pt_megolm_out *o3 = pt_megolm_out_restore(so.data, so.len, &e);
    assert_non_null(o3);
    pt_megolm_in *in3 = in_for(o3);
    pt_buf_reset(&m);
    assert_int_equal(pt_megolm_out_encrypt(o3, &m, (const uint8_t *)"last", 4), 0);
    assert_int_equal(pt_megolm_out_index(o3), UINT32_MAX);
    pt_buf_reset(&m2);
    assert_int_equal(pt_megolm_out_encrypt(o3, &m2, (const uint8_t *)"wrap", 4), PT_ERR_STATE);
    assert_int_equal(m2.len, 0);
    uint32_t idx;
    pt_buf_reset(&p);
    assert_int_equal(pt_megolm_in_decrypt(in3, &p, &idx, m.data, m.len, 0), 0);
    assert_int_equal(idx, UINT32_MAX - 1);

    pt_megolm_in_free(in3);
    pt_megolm_out_free(o3);
    for (size_t i = 0; i < 20; i++)
        pt_buf_free(&msgs[i]);
    pt_buf_free(&m);
    pt_buf_free(&m2);
    pt_buf_free(&p);
    pt_buf_free(&so);
    pt_buf_free(&si);
    pt_megolm_in_free(in2);
    pt_megolm_out_free(o2);
    pt_megolm_in_free(in);
    pt_megolm_out_free(o);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    const char *s = getenv("PT_TEST_SEED");
    g_seed = s ? strtoull(s, NULL, 0) : pt_random_u64();
    printf("test_megolm: seed %" PRIu64 " (replay with PT_TEST_SEED=%" PRIu64 ")\n", g_seed,
           g_seed);
    fflush(stdout);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_ratchet_spec_rule, setup),
        cmocka_unit_test_setup(test_ratchet_jump_equals_steps, setup),
        cmocka_unit_test_setup(test_codec, setup),
        cmocka_unit_test_setup(test_roundtrip_and_limits, setup),
        cmocka_unit_test_setup(test_replay_property, setup),
        cmocka_unit_test_setup(test_replay_ranges_fail_closed, setup),
        cmocka_unit_test_setup(test_storage, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
