/*
 * Unit tests of the 1:1 end-to-end layer (src/e2e/olm_*.c): accounts and bundles,
 * both message suites, the skipped-key bounds, refusal of duplicates and of the
 * other suite's messages, and the sealed state. Byte compatibility with libolm is
 * tested in tests/interop/test_olm_interop.c, random schedules in test_olm_props.c.
 */
#include <stdio.h>
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "e2e/olm_int.h"
#include "e2e/pt_olm.h"
#include "testutil.h"

/* ---- a deterministic environment per party ---------------------------------------------- */

typedef struct tenv {
    pt_env env;
    uint64_t label, counter;
} tenv;

static void tenv_random(void *ctx, void *buf, size_t len)
{
    tenv *t = ctx;
    uint8_t *p = buf;
    while (len > 0) {
        uint8_t blk[32], in[16];
        pt_put_u64le(in, t->label);
        pt_put_u64le(in + 8, t->counter++);
        assert_int_equal(pt_blake2b(blk, sizeof blk, in, sizeof in, NULL, 0), 0);
        size_t k = len < sizeof blk ? len : sizeof blk;
        memcpy(p, blk, k);
        p += k;
        len -= k;
    }
}
static uint64_t tenv_clock(void *ctx)
{
    return (void)ctx, 1700000000000ull;
}

static void tenv_init(tenv *t, uint64_t label)
{
    t->env = (pt_env){tenv_random, tenv_clock, tenv_clock, t};
    t->label = label;
    t->counter = 0;
}

static const uint8_t PICKLE_KEY[32] = "pickle key for the unit tests..";

/* ---- a two-party fixture -------------------------------------------------------------------- */

typedef struct party {
    tenv e;
    pt_olm_account *acct;
    pt_olm_session *s;
} party;

typedef struct pair {
    party a, b; /* a starts the session */
    pt_buf msg, pt;
} pair;

static void party_init(party *p, uint64_t label, uint8_t suites)
{
    tenv_init(&p->e, label);
    pt_err err = PT_ERR_INVAL;
    p->acct = pt_olm_account_new(&p->e.env, suites, &err);
    assert_non_null(p->acct);
    assert_int_equal(err, 0);
    p->s = NULL;
}

/* A and B with their sessions, after B has answered A's first (pre-key) message. */
static void pair_init(pair *x, pt_olm_suite suite, bool answered)
{
    party_init(&x->a, 1, PT_OLM_SUITES_ALL);
    party_init(&x->b, 2, PT_OLM_SUITES_ALL);
    pt_buf_init(&x->msg);
    pt_buf_init(&x->pt);
    assert_int_equal(pt_olm_account_generate_one_time_keys(x->b.acct, &x->b.e.env, 1), 0);
    pt_olm_key k;
    assert_int_equal(pt_olm_account_unpublished_keys(x->b.acct, &k, 1), 1);
    uint8_t ik[32], ed[32];
    pt_olm_account_identity(x->b.acct, ik, ed);
    pt_err err;
    x->a.s = pt_olm_session_new_outbound_raw(x->a.acct, &x->a.e.env, suite, ik, k.key, &err);
    assert_non_null(x->a.s);
    pt_olm_msg_type t;
    assert_int_equal(pt_olm_encrypt(x->a.s, &x->a.e.env, (const uint8_t *)"hello", 5, &x->msg, &t),
                     0);
    assert_int_equal(t, PT_OLM_MSG_PREKEY);
    x->b.s = pt_olm_session_new_inbound(x->b.acct, NULL, x->msg.data, x->msg.len, &x->pt, &err);
    assert_non_null(x->b.s);
    assert_int_equal(err, 0);
    assert_int_equal(x->pt.len, 5);
    assert_memory_equal(x->pt.data, "hello", 5);
    if (answered) {
        pt_buf_reset(&x->msg);
        pt_buf_reset(&x->pt);
        assert_int_equal(pt_olm_encrypt(x->b.s, &x->b.e.env, (const uint8_t *)"hi", 2, &x->msg, &t),
                         0);
        assert_int_equal(t, PT_OLM_MSG_NORMAL);
        assert_int_equal(pt_olm_decrypt(x->a.s, t, x->msg.data, x->msg.len, &x->pt), 0);
        assert_int_equal(pt_olm_session_next_type(x->a.s), PT_OLM_MSG_NORMAL);
    }
    pt_buf_reset(&x->msg);
    pt_buf_reset(&x->pt);
}

static void pair_free(pair *x)
{
    pt_olm_session_free(x->a.s);
    pt_olm_session_free(x->b.s);
    pt_olm_account_free(x->a.acct);
    pt_olm_account_free(x->b.acct);
    pt_buf_free(&x->msg);
    pt_buf_free(&x->pt);
}

/* A message from one party, kept whole. */
typedef struct sent {
    pt_olm_msg_type type;
    size_t len;
    uint8_t *data;
    char text[32];
} sent;

static sent send_msg(party *from, const char *tag, int i)
{
    sent m;
    pt_buf b;
    pt_buf_init(&b);
    snprintf(m.text, sizeof m.text, "%s%d", tag, i);
    assert_int_equal(
        pt_olm_encrypt(from->s, &from->e.env, (const uint8_t *)m.text, strlen(m.text), &b, &m.type),
        0);
    m.len = b.len;
    m.data = malloc(b.len);
    assert_non_null(m.data);
    memcpy(m.data, b.data, b.len);
    pt_buf_free(&b);
    return m;
}

static int recv_msg(party *to, const sent *m)
{
    pt_buf b;
    pt_buf_init(&b);
    int rc = pt_olm_decrypt(to->s, m->type, m->data, m->len, &b);
    if (rc == 0) {
        assert_int_equal(b.len, strlen(m->text));
        assert_memory_equal(b.data, m->text, b.len);
    } else {
        assert_int_equal(b.len, 0); /* nothing appended on failure */
    }
    pt_buf_free(&b);
    return rc;
}

static void sent_free(sent *m)
{
    free(m->data);
}

static const pt_olm_suite suites[2] = {PT_OLM_SUITE_OLM_V1, PT_OLM_SUITE_PT_V1};

/* ---- accounts and bundles --------------------------------------------------------------- */

static void test_account_deterministic(void **state)
{
    (void)state;
    party p, q;
    party_init(&p, 7, PT_OLM_SUITES_ALL);
    party_init(&q, 7, PT_OLM_SUITE_OLM_V1);
    uint8_t c1[32], e1[32], c2[32], e2[32];
    pt_olm_account_identity(p.acct, c1, e1);
    pt_olm_account_identity(q.acct, c2, e2);
    assert_memory_equal(c1, c2, 32);
    assert_memory_equal(e1, e2, 32);
    /* the Curve25519 private key is the second half of the 64 random bytes */
    tenv t;
    tenv_init(&t, 7);
    uint8_t rnd[64], pk[32];
    tenv_random(&t, rnd, 64);
    assert_int_equal(pt_x25519_base(pk, rnd + 32), 0);
    assert_memory_equal(pk, c1, 32);
    assert_null(pt_olm_account_new(&t.env, 0, NULL));
    assert_null(pt_olm_account_new(&t.env, 0x84, NULL));
    /* one-time keys: ids from 1, newest dropped past 100 oldest-first, publish state */
    assert_int_equal(pt_olm_account_generate_one_time_keys(p.acct, &p.e.env, 3), 0);
    pt_olm_key keys[PT_OLM_MAX_ONE_TIME_KEYS];
    assert_int_equal(pt_olm_account_unpublished_keys(p.acct, keys, 100), 3);
    assert_int_equal(keys[0].id, 1);
    assert_int_equal(keys[2].id, 3);
    pt_olm_account_mark_published(p.acct);
    assert_int_equal(pt_olm_account_unpublished_keys(p.acct, keys, 100), 0);
    assert_int_equal(pt_olm_account_generate_one_time_keys(p.acct, &p.e.env, 120), 0);
    assert_int_equal(pt_olm_account_one_time_key_count(p.acct), PT_OLM_MAX_ONE_TIME_KEYS);
    assert_int_equal(pt_olm_account_unpublished_keys(p.acct, keys, 100), 100);
    assert_int_equal(keys[0].id, 24); /* 1..23 dropped */
    uint8_t sig[64];
    assert_int_equal(pt_olm_account_sign(p.acct, sig, (const uint8_t *)"m", 1), 0);
    assert_int_equal(pt_ed25519_verify(sig, (const uint8_t *)"m", 1, e1), 0);
    pt_olm_account_free(p.acct);
    pt_olm_account_free(q.acct);
}

static void test_bundle(void **state)
{
    (void)state;
    party p;
    party_init(&p, 3, PT_OLM_SUITES_ALL);
    assert_int_equal(pt_olm_account_generate_one_time_keys(p.acct, &p.e.env, 2), 0);
    assert_int_equal(pt_olm_account_generate_fallback_key(p.acct, &p.e.env), 0);
    pt_olm_bundle b, d;
    assert_int_equal(pt_olm_account_bundle(p.acct, 2, &b), 0);
    assert_int_equal(b.flags, 0);
    assert_int_equal(b.suites, PT_OLM_SUITES_ALL);
    assert_int_equal(pt_olm_bundle_verify(&b), 0);
    assert_int_equal(pt_olm_account_bundle(p.acct, 99, &d), PT_ERR_NOT_FOUND);
    uint8_t enc[PT_OLM_BUNDLE_LEN], enc2[PT_OLM_BUNDLE_LEN];
    pt_olm_bundle_encode(enc, &b);
    assert_int_equal(pt_olm_bundle_decode(&d, enc, sizeof enc), 0);
    assert_int_equal(pt_olm_bundle_verify(&d), 0);
    pt_olm_bundle_encode(enc2, &d);
    assert_memory_equal(enc, enc2, sizeof enc);
    /* every single-bit change is refused by the decoder or the signature */
    for (size_t i = 0; i < sizeof enc; i++) {
        for (int bit = 0; bit < 8; bit++) {
            enc[i] ^= (uint8_t)(1 << bit);
            int rc = pt_olm_bundle_decode(&d, enc, sizeof enc);
            if (rc == 0) rc = pt_olm_bundle_verify(&d);
            assert_true(rc < 0);
            enc[i] ^= (uint8_t)(1 << bit);
        }
    }
    for (size_t n = 0; n < sizeof enc; n++)
        assert_true(pt_olm_bundle_decode(&d, enc, n) < 0);
    enc[0] = 2;
    assert_int_equal(pt_olm_bundle_decode(&d, enc, sizeof enc), PT_ERR_VERSION);
    /* the fallback key's bundle says so */
    pt_olm_key fk;
    assert_int_equal(pt_olm_account_fallback_key(p.acct, &fk), 0);
    assert_int_equal(pt_olm_account_bundle(p.acct, fk.id, &b), 0);
    assert_int_equal(b.flags, PT_OLM_BUNDLE_FALLBACK);
    assert_memory_equal(b.one_time_key, fk.key, 32);
    assert_int_equal(pt_olm_bundle_verify(&b), 0);
    pt_olm_account_free(p.acct);
}

/* The initiator takes pt.v1 when both have it, else olm.v1; the suites are signed. */
static void test_bundle_suite_choice(void **state)
{
    (void)state;
    static const struct {
        uint8_t mine, theirs;
        int want; /* suite, or an error */
    } cases[] = {
        {PT_OLM_SUITES_ALL, PT_OLM_SUITES_ALL, PT_OLM_SUITE_PT_V1},
        {PT_OLM_SUITES_ALL, PT_OLM_SUITE_OLM_V1, PT_OLM_SUITE_OLM_V1},
        {PT_OLM_SUITE_OLM_V1, PT_OLM_SUITES_ALL, PT_OLM_SUITE_OLM_V1},
        {PT_OLM_SUITE_PT_V1, PT_OLM_SUITE_PT_V1, PT_OLM_SUITE_PT_V1},
        {PT_OLM_SUITE_PT_V1, PT_OLM_SUITE_OLM_V1, PT_ERR_NO_SUITE},
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(cases); i++) {
        party a, b;
        party_init(&a, 10, cases[i].mine);
        party_init(&b, 11, cases[i].theirs);
        assert_int_equal(pt_olm_account_generate_one_time_keys(b.acct, &b.e.env, 1), 0);
        pt_olm_key k;
        assert_int_equal(pt_olm_account_unpublished_keys(b.acct, &k, 1), 1);
        pt_olm_bundle bun;
        assert_int_equal(pt_olm_account_bundle(b.acct, k.id, &bun), 0);
        pt_err err = 0;
        pt_olm_session *s = pt_olm_session_new_outbound(a.acct, &a.e.env, &bun, &err);
        if (cases[i].want < 0) {
            assert_null(s);
            assert_int_equal(err, cases[i].want);
        } else {
            assert_non_null(s);
            assert_int_equal(pt_olm_session_suite(s), cases[i].want);
            /* and the responder takes the suite from the message */
            pt_buf m, p;
            pt_buf_init(&m);
            pt_buf_init(&p);
            pt_olm_msg_type t;
            assert_int_equal(pt_olm_encrypt(s, &a.e.env, (const uint8_t *)"x", 1, &m, &t), 0);
            pt_olm_session *r = pt_olm_session_new_inbound(b.acct, NULL, m.data, m.len, &p, &err);
            assert_non_null(r);
            assert_int_equal(pt_olm_session_suite(r), cases[i].want);
            pt_olm_session_free(r);
            pt_buf_free(&m);
            pt_buf_free(&p);
        }
        /* a relay that strips pt.v1 from the bundle breaks the signature */
        bun.suites = PT_OLM_SUITE_OLM_V1;
        if (cases[i].theirs != PT_OLM_SUITE_OLM_V1) {
            assert_null(pt_olm_session_new_outbound(a.acct, &a.e.env, &bun, &err));
            assert_int_equal(err, PT_ERR_AUTH);
        }
        pt_olm_session_free(s);
        pt_olm_account_free(a.acct);
        pt_olm_account_free(b.acct);
    }
}

/* ---- sessions ------------------------------------------------------------------------------ */

static void test_conversation(void **state)
{
    (void)state;
    for (int si = 0; si < 2; si++) {
        pair x;
        pair_init(&x, suites[si], false);
        /* A keeps sending pre-key messages until B answers */
        sent m1 = send_msg(&x.a, "a", 1);
        assert_int_equal(m1.type, PT_OLM_MSG_PREKEY);
        assert_true(pt_olm_session_matches_inbound(x.b.s, m1.data, m1.len));
        assert_int_equal(recv_msg(&x.b, &m1), 0);
        uint8_t id1[32], id2[32];
        pt_olm_session_id(x.a.s, id1);
        pt_olm_session_id(x.b.s, id2);
        assert_memory_equal(id1, id2, 32);
        uint8_t ik[32], ed[32], their[32];
        pt_olm_account_identity(x.a.acct, ik, ed);
        pt_olm_session_their_identity(x.b.s, their);
        assert_memory_equal(ik, their, 32);
        for (int i = 0; i < 40; i++) {
            /* bursts of 1..3 each way */
            for (int k = 0; k <= i % 3; k++) {
                sent m = send_msg(&x.b, "b", i * 10 + k);
                assert_int_equal(m.type, PT_OLM_MSG_NORMAL);
                assert_int_equal(recv_msg(&x.a, &m), 0);
                sent_free(&m);
            }
            for (int k = 0; k <= (i + 1) % 3; k++) {
                sent m = send_msg(&x.a, "a", i * 10 + k);
                assert_int_equal(m.type, PT_OLM_MSG_NORMAL);
                assert_int_equal(recv_msg(&x.b, &m), 0);
                sent_free(&m);
            }
        }
        assert_true(pt_olm_session_has_received(x.a.s));
        /* the largest plaintext and one byte more */
        uint8_t *big = calloc(1, PT_OLM_MAX_PLAINTEXT + 1);
        assert_non_null(big);
        pt_olm_msg_type t;
        assert_int_equal(
            pt_olm_encrypt(x.a.s, &x.a.e.env, big, PT_OLM_MAX_PLAINTEXT + 1, &x.msg, &t),
            PT_ERR_TOO_BIG);
        assert_int_equal(pt_olm_encrypt(x.a.s, &x.a.e.env, big, PT_OLM_MAX_PLAINTEXT, &x.msg, &t),
                         0);
        assert_int_equal(pt_olm_decrypt(x.b.s, t, x.msg.data, x.msg.len, &x.pt), 0);
        assert_int_equal(x.pt.len, PT_OLM_MAX_PLAINTEXT);
        free(big);
        sent_free(&m1);
        pair_free(&x);
    }
}

/* A duplicate is refused and changes nothing; so is any single-bit change. */
static void test_duplicates_and_tampering(void **state)
{
    (void)state;
    for (int si = 0; si < 2; si++) {
        pair x;
        pair_init(&x, suites[si], true);
        sent m[3];
        for (int i = 0; i < 3; i++)
            m[i] = send_msg(&x.a, "m", i);
        assert_int_equal(recv_msg(&x.b, &m[1]), 0);
        assert_int_equal(recv_msg(&x.b, &m[1]), PT_ERR_AUTH);
        assert_int_equal(recv_msg(&x.b, &m[0]), 0); /* skipped key, used once */
        assert_int_equal(recv_msg(&x.b, &m[0]), PT_ERR_AUTH);
        for (size_t i = 0; i < m[2].len; i++) {
            for (int bit = 0; bit < 8; bit++) {
                m[2].data[i] ^= (uint8_t)(1 << bit);
                assert_true(recv_msg(&x.b, &m[2]) < 0);
                m[2].data[i] ^= (uint8_t)(1 << bit);
            }
        }
        for (size_t n = 0; n < m[2].len; n++) {
            sent c = m[2];
            c.len = n;
            assert_true(recv_msg(&x.b, &c) < 0);
        }
        /* the wrong type is refused too */
        sent c = m[2];
        c.type = PT_OLM_MSG_PREKEY;
        assert_true(recv_msg(&x.b, &c) < 0);
        assert_int_equal(recv_msg(&x.b, &m[2]), 0);
        assert_int_equal(recv_msg(&x.b, &m[2]), PT_ERR_AUTH);
        /* B's first answer after a new chain: a fresh ratchet key each time the direction changes
         */
        sent r1 = send_msg(&x.b, "r", 1), r2 = send_msg(&x.b, "r", 2);
        assert_int_equal(recv_msg(&x.a, &r2), 0);
        assert_int_equal(recv_msg(&x.a, &r1), 0);
        sent a1 = send_msg(&x.a, "a", 1);
        assert_int_equal(recv_msg(&x.b, &a1), 0);
        sent r3 = send_msg(&x.b, "r", 3);
        pt_olm_msg d1, d3;
        pt_olm_suite su = suites[si];
        assert_int_equal(pt_olm_msg_decode(&d1, su, r1.data, r1.len), 0);
        assert_int_equal(pt_olm_msg_decode(&d3, su, r3.data, r3.len), 0);
        assert_memory_not_equal(d1.ratchet_key, d3.ratchet_key, 32);
        assert_int_equal(d3.counter, 0);
        assert_int_equal(recv_msg(&x.a, &r3), 0);
        for (int i = 0; i < 3; i++)
            sent_free(&m[i]);
        sent_free(&r1);
        sent_free(&r2);
        sent_free(&r3);
        sent_free(&a1);
        pair_free(&x);
    }
}

/* Skipped keys: the gap limit, the per-chain bound, the session bound. */
static void test_skipped_bounds(void **state)
{
    (void)state;
    for (int si = 0; si < 2; si++) {
        pair x;
        pair_init(&x, suites[si], true);
        /* 1001 ahead is too far; 1000 ahead is fine */
        sent m[1003];
        for (int i = 0; i < 1003; i++)
            m[i] = send_msg(&x.a, "m", i);
        assert_int_equal(recv_msg(&x.b, &m[1001]), PT_ERR_TOO_BIG);
        assert_int_equal(x.b.s->n_skipped, 0);
        assert_int_equal(recv_msg(&x.b, &m[1000]), 0);
        assert_int_equal(x.b.s->n_skipped, 1000);
        /* m[1002] skips one more key of the same chain: the chain's oldest goes */
        assert_int_equal(recv_msg(&x.b, &m[1002]), 0);
        assert_int_equal(x.b.s->n_skipped, 1000);
        assert_int_equal(recv_msg(&x.b, &m[0]), PT_ERR_AUTH);
        assert_int_equal(recv_msg(&x.b, &m[1]), 0);
        assert_int_equal(recv_msg(&x.b, &m[1001]), 0);
        assert_int_equal(x.b.s->n_skipped, 998);
        assert_int_equal(recv_msg(&x.b, &m[1001]), PT_ERR_AUTH);
        for (int i = 0; i < 1003; i++)
            sent_free(&m[i]);

        /* six chains with 1000 skipped keys each: the session keeps the newest 5000 */
        sent lates[6];
        for (int c = 0; c < 6; c++) {
            sent a = send_msg(&x.a, "ping", c);
            assert_int_equal(recv_msg(&x.b, &a), 0);
            sent_free(&a);
            lates[c] = send_msg(&x.b, "late", c);
            for (int i = 1; i < 1000; i++) {
                sent s = send_msg(&x.b, "b", i);
                sent_free(&s);
            }
            sent last = send_msg(&x.b, "last", c);
            assert_int_equal(recv_msg(&x.a, &last), 0);
            sent_free(&last);
        }
        assert_int_equal(x.a.s->n_skipped, PT_OLM_MAX_SKIPPED);
        assert_int_equal(x.a.s->n_recv, PT_OLM_MAX_RECEIVER_CHAINS);
        /* the first chain's keys were the oldest: gone; the second's are kept, and
         * decrypt even though that chain itself has been forgotten */
        assert_true(recv_msg(&x.a, &lates[0]) < 0);
        assert_int_equal(recv_msg(&x.a, &lates[1]), 0);
        assert_int_equal(recv_msg(&x.a, &lates[5]), 0);
        assert_int_equal(x.a.s->n_skipped, PT_OLM_MAX_SKIPPED - 2);
        for (int c = 0; c < 6; c++)
            sent_free(&lates[c]);
        pair_free(&x);
    }
}

/* A new chain while we have not answered the last one, and a late message of a chain
 * that has been forgotten, are refused. */
static void test_chain_rules(void **state)
{
    (void)state;
    for (int si = 0; si < 2; si++) {
        pair x;
        pair_init(&x, suites[si], true);
        sent b1 = send_msg(&x.b, "b", 1);
        assert_int_equal(recv_msg(&x.a, &b1), 0);
        /* B's chain from before: a message it sends later on it still decrypts */
        sent b2 = send_msg(&x.b, "b", 2);
        /* six direction changes push that chain out of A's five */
        for (int i = 0; i < 6; i++) {
            sent a = send_msg(&x.a, "a", i);
            assert_int_equal(recv_msg(&x.b, &a), 0);
            sent b3 = send_msg(&x.b, "b", 200 + i);
            assert_int_equal(recv_msg(&x.a, &b3), 0);
            sent_free(&a);
            sent_free(&b3);
        }
        assert_int_equal(x.a.s->n_skipped, 0);
        assert_true(recv_msg(&x.a, &b2) < 0);
        sent_free(&b1);
        sent_free(&b2);
        pair_free(&x);

        /* Bob, who has not sent yet, gets a "new chain": refused */
        pair y;
        pair_init(&y, suites[si], false);
        pair z;
        pair_init(&z, suites[si], true);
        sent foreign = send_msg(&z.a, "f", 0);
        /* re-target z's message at y's session: a ratchet key y.b never saw */
        assert_true(recv_msg(&y.b, &foreign) < 0);
        sent_free(&foreign);
        pair_free(&y);
        pair_free(&z);
    }
}

/* ---- suites never mix ------------------------------------------------------------------- */

static void test_suite_separation(void **state)
{
    (void)state;
    pair o, p;
    pair_init(&o, PT_OLM_SUITE_OLM_V1, true);
    pair_init(&p, PT_OLM_SUITE_PT_V1, true);
    /* the same randomness on both: different root keys (labels) */
    assert_memory_not_equal(o.a.s->root, p.a.s->root, 32);
    sent mo = send_msg(&o.a, "o", 0), mp = send_msg(&p.a, "p", 0);
    assert_int_equal(recv_msg(&p.b, &mo), PT_ERR_VERSION);
    assert_int_equal(recv_msg(&o.b, &mp), PT_ERR_VERSION);
    /* the version byte swapped in: still refused, by the decoder or the keys */
    mp.data[0] = PT_OLM_V1_VERSION;
    assert_true(recv_msg(&o.b, &mp) < 0);
    mo.data[0] = PT_OLM_PT1_NORMAL;
    assert_true(recv_msg(&p.b, &mo) < 0);
    sent_free(&mo);
    sent_free(&mp);
    pair_free(&o);
    pair_free(&p);

    /* a responder that only accepts olm.v1 refuses a pt.v1 pre-key message */
    party a, b;
    party_init(&a, 20, PT_OLM_SUITES_ALL);
    party_init(&b, 21, PT_OLM_SUITE_OLM_V1);
    assert_int_equal(pt_olm_account_generate_one_time_keys(b.acct, &b.e.env, 1), 0);
    pt_olm_key k;
    assert_int_equal(pt_olm_account_unpublished_keys(b.acct, &k, 1), 1);
    uint8_t ik[32], ed[32];
    pt_olm_account_identity(b.acct, ik, ed);
    a.s = pt_olm_session_new_outbound_raw(a.acct, &a.e.env, PT_OLM_SUITE_PT_V1, ik, k.key, NULL);
    assert_non_null(a.s);
    sent m = send_msg(&a, "x", 0);
    pt_buf out;
    pt_buf_init(&out);
    pt_err err = 0;
    assert_null(pt_olm_session_new_inbound(b.acct, NULL, m.data, m.len, &out, &err));
    assert_int_equal(err, PT_ERR_NO_SUITE);
    assert_int_equal(pt_olm_account_one_time_key_count(b.acct), 1);
    sent_free(&m);
    pt_buf_free(&out);
    pt_olm_session_free(a.s);
    pt_olm_account_free(a.acct);
    pt_olm_account_free(b.acct);
}

/* ---- inbound sessions and the account's keys ---------------------------------------------- */

static void test_inbound_keys(void **state)
{
    (void)state;
    for (int si = 0; si < 2; si++) {
        party a, b, c;
        party_init(&a, 30, PT_OLM_SUITES_ALL);
        party_init(&b, 31, PT_OLM_SUITES_ALL);
        party_init(&c, 32, PT_OLM_SUITES_ALL);
        assert_int_equal(pt_olm_account_generate_one_time_keys(b.acct, &b.e.env, 2), 0);
        assert_int_equal(pt_olm_account_generate_fallback_key(b.acct, &b.e.env), 0);
        pt_olm_key k[2], fk;
        assert_int_equal(pt_olm_account_unpublished_keys(b.acct, k, 2), 2);
        assert_int_equal(pt_olm_account_fallback_key(b.acct, &fk), 0);
        uint8_t ik[32], ed[32], aik[32], cik[32];
        pt_olm_account_identity(b.acct, ik, ed);
        pt_olm_account_identity(a.acct, aik, ed);
        pt_olm_account_identity(c.acct, cik, ed);
        a.s = pt_olm_session_new_outbound_raw(a.acct, &a.e.env, suites[si], ik, k[0].key, NULL);
        sent m = send_msg(&a, "x", 0);
        pt_buf out;
        pt_buf_init(&out);
        pt_err err = 0;
        /* a tampered pre-key message costs the responder nothing */
        m.data[m.len - 1] ^= 1;
        assert_null(pt_olm_session_new_inbound(b.acct, NULL, m.data, m.len, &out, &err));
        assert_int_equal(err, PT_ERR_AUTH);
        assert_int_equal(out.len, 0);
        assert_int_equal(pt_olm_account_one_time_key_count(b.acct), 2);
        m.data[m.len - 1] ^= 1;
        /* from someone else than expected */
        assert_null(pt_olm_session_new_inbound(b.acct, cik, m.data, m.len, &out, &err));
        assert_int_equal(err, PT_ERR_KEY_MISMATCH);
        b.s = pt_olm_session_new_inbound(b.acct, aik, m.data, m.len, &out, &err);
        assert_non_null(b.s);
        assert_int_equal(pt_olm_account_one_time_key_count(b.acct), 1);
        /* the key is gone: the same message cannot start a second session */
        assert_null(pt_olm_session_new_inbound(b.acct, NULL, m.data, m.len, &out, &err));
        assert_int_equal(err, PT_ERR_NOT_FOUND);
        /* the fallback key stays after use, until forgotten after a rotation */
        for (int round = 0; round < 2; round++) {
            pt_olm_session *cs =
                pt_olm_session_new_outbound_raw(c.acct, &c.e.env, suites[si], ik, fk.key, NULL);
            c.s = cs;
            sent f = send_msg(&c, "f", round);
            pt_buf_reset(&out);
            pt_olm_session *bs =
                pt_olm_session_new_inbound(b.acct, NULL, f.data, f.len, &out, &err);
            assert_non_null(bs);
            assert_int_equal(out.len, 2);
            pt_olm_session_free(bs);
            if (round == 1) {
                /* rotate twice: the old fallback key is forgotten */
                assert_int_equal(pt_olm_account_generate_fallback_key(b.acct, &b.e.env), 0);
                pt_buf_reset(&out);
                bs = pt_olm_session_new_inbound(b.acct, NULL, f.data, f.len, &out, &err);
                assert_non_null(bs);
                pt_olm_session_free(bs);
                pt_olm_account_forget_old_fallback_key(b.acct);
                assert_null(pt_olm_session_new_inbound(b.acct, NULL, f.data, f.len, &out, &err));
                assert_int_equal(err, PT_ERR_NOT_FOUND);
            }
            sent_free(&f);
            pt_olm_session_free(cs);
        }
        /* garbage */
        static const uint8_t junk[][4] = {{0}, {3}, {0x50}, {0x51, 0, 0, 0}};
        for (size_t i = 0; i < PT_ARRAY_LEN(junk); i++) {
            assert_null(pt_olm_session_new_inbound(b.acct, NULL, junk[i], i + 1, &out, &err));
            assert_true(err < 0);
        }
        assert_null(pt_olm_session_new_inbound(b.acct, NULL, junk[0], 0, &out, &err));
        sent_free(&m);
        pt_buf_free(&out);
        pt_olm_session_free(a.s);
        pt_olm_session_free(b.s);
        pt_olm_account_free(a.acct);
        pt_olm_account_free(b.acct);
        pt_olm_account_free(c.acct);
    }
}

/* ---- codecs ----------------------------------------------------------------------------- */

static void test_codec_olm_v1(void **state)
{
    (void)state;
    pair x;
    pair_init(&x, PT_OLM_SUITE_OLM_V1, false);
    sent pk = send_msg(&x.a, "pre", 0);
    pt_olm_prekey p;
    assert_int_equal(pt_olm_prekey_decode(&p, PT_OLM_SUITE_OLM_V1, pk.data, pk.len), 0);
    assert_int_equal(pt_olm_prekey_suite(pk.data, pk.len), PT_OLM_SUITE_OLM_V1);
    pt_olm_msg m;
    assert_int_equal(pt_olm_msg_decode(&m, PT_OLM_SUITE_OLM_V1, p.message, p.message_len), 0);
    assert_int_equal(m.counter, 1);
    assert_int_equal(m.ciphertext_len, 16);
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_olm_prekey_encode(&b, PT_OLM_SUITE_OLM_V1, &p), 0);
    assert_int_equal(b.len, pk.len);
    assert_memory_equal(b.data, pk.data, pk.len);
    pt_buf_reset(&b);
    assert_int_equal(pt_olm_msg_encode(&b, PT_OLM_SUITE_OLM_V1, &m), 0);
    assert_int_equal(b.len, p.message_len);
    assert_memory_equal(b.data, p.message, b.len);

    /* hand-made messages: unknown fields are skipped (as libolm does), the rest refused */
    uint8_t rk[32];
    memset(rk, 0x11, 32);
    struct {
        const char *what;
        uint8_t bytes[96];
        size_t len;
        int want;
    } v[12];
    size_t n = 0;
#define ADD(w, want_rc, ...)                                                                       \
    do {                                                                                           \
        const uint8_t tmp_[] = {__VA_ARGS__};                                                      \
        v[n].what = w;                                                                             \
        v[n].want = want_rc;                                                                       \
        v[n].len = 0;                                                                              \
        v[n].bytes[v[n].len++] = 3;                                                                \
        v[n].bytes[v[n].len++] = 0x0a;                                                             \
        v[n].bytes[v[n].len++] = 32;                                                               \
        memcpy(v[n].bytes + v[n].len, rk, 32);                                                     \
        v[n].len += 32;                                                                            \
        memcpy(v[n].bytes + v[n].len, tmp_, sizeof tmp_);                                          \
        v[n].len += sizeof tmp_;                                                                   \
        memset(v[n].bytes + v[n].len, 0xee, 8); /* MAC */                                          \
        v[n].len += 8;                                                                             \
        n++;                                                                                       \
    } while (0)
#define CT16 0x22, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
    ADD("plain", 0, 0x10, 5, CT16);
    ADD("unknown varint and string fields", 0, 0x18, 0x81, 0x01, 0x10, 5, 0x2a, 2, 9, 9, CT16);
    ADD("counter after ciphertext", 0, CT16, 0x10, 0xff, 0xff, 0xff, 0xff, 0x0f);
    ADD("no counter", PT_ERR_DECODE, CT16);
    ADD("duplicate counter", PT_ERR_DECODE, 0x10, 1, 0x10, 2, CT16);
    ADD("counter past 32 bits", PT_ERR_DECODE, 0x10, 0x80, 0x80, 0x80, 0x80, 0x10, CT16);
    ADD("counter as a string", PT_ERR_DECODE, 0x12, 1, 5, CT16);
    ADD("wire type 5", PT_ERR_DECODE, 0x10, 5, 0x1d, 1, 2, 3, 4, CT16);
    ADD("ciphertext not whole blocks", PT_ERR_DECODE, 0x10, 5, 0x22, 3, 1, 2, 3);
    ADD("string runs past the end", PT_ERR_DECODE, 0x10, 5, 0x22, 40, 1, 2, 3);
    ADD("varint runs past the end", PT_ERR_DECODE, CT16, 0x10, 0x80);
    ADD("field number 0", PT_ERR_DECODE, 0x00, 1, 0x10, 5, CT16);
    for (size_t i = 0; i < n; i++) {
        int rc = pt_olm_msg_decode(&m, PT_OLM_SUITE_OLM_V1, v[i].bytes, v[i].len);
        if (rc != v[i].want) print_error("%s: got %d want %d\n", v[i].what, rc, v[i].want);
        assert_int_equal(rc, v[i].want);
    }
    assert_int_equal(pt_olm_msg_decode(&m, PT_OLM_SUITE_OLM_V1, v[2].bytes, v[2].len), 0);
    assert_int_equal(m.counter, UINT32_MAX);
    /* the ratchet key must be 32 bytes */
    v[0].bytes[2] = 31;
    assert_int_equal(pt_olm_msg_decode(&m, PT_OLM_SUITE_OLM_V1, v[0].bytes, v[0].len),
                     PT_ERR_DECODE);
    v[0].bytes[0] = 4;
    assert_int_equal(pt_olm_msg_decode(&m, PT_OLM_SUITE_OLM_V1, v[0].bytes, v[0].len),
                     PT_ERR_VERSION);
    sent_free(&pk);
    pt_buf_free(&b);
    pair_free(&x);
#undef ADD
#undef CT16
}

static void test_codec_pt_v1(void **state)
{
    (void)state;
    pair x;
    pair_init(&x, PT_OLM_SUITE_PT_V1, false);
    sent pk = send_msg(&x.a, "pre", 0);
    assert_int_equal(pk.data[0], PT_OLM_PT1_PREKEY);
    assert_int_equal(pk.len, PT_OLM_PT1_PREKEY_HEADER_LEN + PT_OLM_PT1_HEADER_LEN + 4 + 16);
    assert_int_equal(pt_olm_prekey_suite(pk.data, pk.len), PT_OLM_SUITE_PT_V1);
    pt_olm_prekey p;
    pt_olm_msg m;
    assert_int_equal(pt_olm_prekey_decode(&p, PT_OLM_SUITE_PT_V1, pk.data, pk.len), 0);
    assert_int_equal(pt_olm_msg_decode(&m, PT_OLM_SUITE_PT_V1, p.message, p.message_len), 0);
    assert_int_equal(m.counter, 1);
    assert_int_equal(m.authed_len, PT_OLM_PT1_HEADER_LEN);
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_olm_prekey_encode(&b, PT_OLM_SUITE_PT_V1, &p), 0);
    assert_memory_equal(b.data, pk.data, pk.len);
    for (size_t n = 0; n < PT_OLM_PT1_HEADER_LEN + 16; n++)
        assert_true(pt_olm_msg_decode(&m, PT_OLM_SUITE_PT_V1, p.message, n) < 0);
    for (size_t n = 0; n <= PT_OLM_PT1_PREKEY_HEADER_LEN; n++)
        assert_true(pt_olm_prekey_decode(&p, PT_OLM_SUITE_PT_V1, pk.data, n) < 0);
    /* the pre-key header is authenticated: a changed one-time key field fails even
     * for a session that would otherwise accept the inner message */
    sent again = send_msg(&x.a, "pre", 1);
    assert_int_equal(recv_msg(&x.b, &again), 0);
    sent third = send_msg(&x.a, "pre", 2);
    assert_int_equal(third.type, PT_OLM_MSG_PREKEY);
    sent inner = third;
    inner.type = PT_OLM_MSG_NORMAL;
    inner.data = third.data + PT_OLM_PT1_PREKEY_HEADER_LEN;
    inner.len = third.len - PT_OLM_PT1_PREKEY_HEADER_LEN;
    assert_int_equal(recv_msg(&x.b, &inner), PT_ERR_AUTH); /* AD differs without the header */
    assert_int_equal(recv_msg(&x.b, &third), 0);
    sent_free(&pk);
    sent_free(&again);
    sent_free(&third);
    pt_buf_free(&b);
    pair_free(&x);
}

/* ---- sealed state ----------------------------------------------------------------------- */

static pt_olm_session *reload(const pt_olm_session *s, uint64_t label)
{
    tenv t;
    tenv_init(&t, label);
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_olm_session_pickle(s, &t.env, PICKLE_KEY, sizeof PICKLE_KEY, &b), 0);
    pt_err err = PT_ERR_INVAL;
    pt_olm_session *r = pt_olm_session_unpickle(PICKLE_KEY, sizeof PICKLE_KEY, b.data, b.len, &err);
    assert_non_null(r);
    assert_int_equal(err, 0);
    /* restored exactly: the same env gives the same pickle bytes */
    pt_buf c;
    pt_buf_init(&c);
    tenv_init(&t, label);
    assert_int_equal(pt_olm_session_pickle(r, &t.env, PICKLE_KEY, sizeof PICKLE_KEY, &c), 0);
    assert_int_equal(b.len, c.len);
    assert_memory_equal(b.data, c.data, b.len);
    pt_buf_free(&b);
    pt_buf_free(&c);
    return r;
}

static void test_session_pickle(void **state)
{
    (void)state;
    for (int si = 0; si < 2; si++) {
        pair x;
        pair_init(&x, suites[si], false);
        /* A before any answer, B with skipped keys */
        sent m[4];
        for (int i = 0; i < 4; i++)
            m[i] = send_msg(&x.a, "m", i);
        assert_int_equal(recv_msg(&x.b, &m[3]), 0);
        pt_olm_session *a2 = reload(x.a.s, 5), *b2 = reload(x.b.s, 6);
        assert_int_equal(b2->n_skipped, 3);
        /* the reloaded pair behaves exactly as the original: same bytes out given
         * the same randomness (each copy draws from its own copy of the env) */
        party a_copy = x.a, b_copy = x.b;
        a_copy.s = a2;
        b_copy.s = b2;
        a_copy.e.env.ctx = &a_copy.e;
        b_copy.e.env.ctx = &b_copy.e;
        assert_int_equal(recv_msg(&b_copy, &m[1]), 0);
        assert_int_equal(recv_msg(&x.b, &m[1]), 0);
        sent r1 = send_msg(&x.b, "r", 1), r2 = send_msg(&b_copy, "r", 1);
        assert_int_equal(r1.len, r2.len);
        assert_memory_equal(r1.data, r2.data, r1.len);
        assert_int_equal(recv_msg(&a_copy, &r2), 0);
        assert_int_equal(recv_msg(&x.a, &r1), 0);
        sent s1 = send_msg(&x.a, "s", 1), s2 = send_msg(&a_copy, "s", 1);
        assert_memory_equal(s1.data, s2.data, s1.len);

        /* refused whole: wrong key, short key, every truncation, every bit flip, wrong kind */
        tenv t;
        tenv_init(&t, 9);
        pt_buf b;
        pt_buf_init(&b);
        assert_int_equal(pt_olm_session_pickle(b2, &t.env, PICKLE_KEY, sizeof PICKLE_KEY, &b), 0);
        pt_err err = 0;
        uint8_t other[32];
        memcpy(other, PICKLE_KEY, 32);
        other[31] ^= 1;
        assert_null(pt_olm_session_unpickle(other, 32, b.data, b.len, &err));
        assert_int_equal(err, PT_ERR_AUTH);
        assert_null(pt_olm_session_unpickle(PICKLE_KEY, 15, b.data, b.len, &err));
        assert_int_equal(err, PT_ERR_INVAL);
        for (size_t n = 0; n < b.len; n++) {
            assert_null(pt_olm_session_unpickle(PICKLE_KEY, 32, b.data, n, &err));
            assert_true(err < 0);
        }
        for (size_t i = 0; i < b.len; i += (i < 40 ? 1 : 7)) {
            b.data[i] ^= 0x20;
            assert_null(pt_olm_session_unpickle(PICKLE_KEY, 32, b.data, b.len, &err));
            assert_true(err < 0);
            b.data[i] ^= 0x20;
        }
        pt_buf acc;
        pt_buf_init(&acc);
        assert_int_equal(pt_olm_account_pickle(x.a.acct, &t.env, PICKLE_KEY, 32, &acc), 0);
        assert_null(pt_olm_session_unpickle(PICKLE_KEY, 32, acc.data, acc.len, &err));
        assert_int_equal(err, PT_ERR_DECODE);
        assert_null(pt_olm_account_unpickle(PICKLE_KEY, 32, b.data, b.len, &err));
        assert_int_equal(err, PT_ERR_DECODE);
        b.data[4] = 2;
        assert_null(pt_olm_session_unpickle(PICKLE_KEY, 32, b.data, b.len, &err));
        assert_int_equal(err, PT_ERR_VERSION);

        for (int i = 0; i < 4; i++)
            sent_free(&m[i]);
        sent_free(&r1);
        sent_free(&r2);
        sent_free(&s1);
        sent_free(&s2);
        pt_buf_free(&b);
        pt_buf_free(&acc);
        pt_olm_session_free(a2);
        pt_olm_session_free(b2);
        pair_free(&x);
    }
}

static void test_account_pickle(void **state)
{
    (void)state;
    party b;
    party_init(&b, 40, PT_OLM_SUITES_ALL);
    assert_int_equal(pt_olm_account_generate_one_time_keys(b.acct, &b.e.env, 5), 0);
    pt_olm_account_mark_published(b.acct);
    assert_int_equal(pt_olm_account_generate_one_time_keys(b.acct, &b.e.env, 2), 0);
    assert_int_equal(pt_olm_account_generate_fallback_key(b.acct, &b.e.env), 0);
    assert_int_equal(pt_olm_account_generate_fallback_key(b.acct, &b.e.env), 0);
    tenv t;
    tenv_init(&t, 41);
    pt_buf p1, p2;
    pt_buf_init(&p1);
    pt_buf_init(&p2);
    assert_int_equal(pt_olm_account_pickle(b.acct, &t.env, PICKLE_KEY, 32, &p1), 0);
    pt_err err = PT_ERR_INVAL;
    pt_olm_account *r = pt_olm_account_unpickle(PICKLE_KEY, 32, p1.data, p1.len, &err);
    assert_non_null(r);
    tenv_init(&t, 41);
    assert_int_equal(pt_olm_account_pickle(r, &t.env, PICKLE_KEY, 32, &p2), 0);
    assert_int_equal(p1.len, p2.len);
    assert_memory_equal(p1.data, p2.data, p1.len);
    pt_olm_key k1[10], k2[10];
    assert_int_equal(pt_olm_account_unpublished_keys(r, k1, 10), 2);
    assert_int_equal(pt_olm_account_unpublished_keys(b.acct, k2, 10), 2);
    assert_memory_equal(k1, k2, sizeof k1[0] * 2);
    for (size_t n = 0; n < p1.len; n += 3) {
        assert_null(pt_olm_account_unpickle(PICKLE_KEY, 32, p1.data, n, &err));
        assert_true(err < 0);
    }
    pt_olm_account_free(r);
    pt_olm_account_free(b.acct);
    pt_buf_free(&p1);
    pt_buf_free(&p2);
}

int main(void)
{
    if (pt_init() != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_account_deterministic),
        cmocka_unit_test(test_bundle),
        cmocka_unit_test(test_bundle_suite_choice),
        cmocka_unit_test(test_conversation),
        cmocka_unit_test(test_duplicates_and_tampering),
        cmocka_unit_test(test_skipped_bounds),
        cmocka_unit_test(test_chain_rules),
        cmocka_unit_test(test_suite_separation),
        cmocka_unit_test(test_inbound_keys),
        cmocka_unit_test(test_codec_olm_v1),
        cmocka_unit_test(test_codec_pt_v1),
        cmocka_unit_test(test_session_pickle),
        cmocka_unit_test(test_account_pickle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
