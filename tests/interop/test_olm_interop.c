/*
 * olm.v1 against libolm (linked here only), in both directions.
 *
 * Every one of our endpoints runs beside a libolm "twin" made from the same random
 * bytes (account, one-time keys, base and ratchet keys): each message we encrypt
 * must be byte-identical to the twin's (base64-decoded), each message we are given
 * must decrypt (or be refused) exactly as the twin decrypts (or refuses) it, and
 * the session ids must agree. The other end is a plain libolm endpoint with its own
 * randomness; keys travel as libolm prints them (JSON, unpadded base64).
 *
 * The conversations run 200 messages with alternating senders (turns of 1 to 3
 * messages), some messages dropped, some held back up to two turns (reordering),
 * some delivered again later (a duplicate must be refused by both, as libolm
 * refuses to reuse a message key), and our session serialised and restored in the
 * middle. The schedule is seeded: PT_TEST_SEED=<n> replays one; the seed is printed
 * on failure.
 *
 * libolm functions used: olm_account, olm_create_account, olm_account_identity_keys,
 * olm_account_generate_one_time_keys, olm_account_one_time_keys,
 * olm_account_mark_keys_as_published, olm_account_generate_fallback_key,
 * olm_account_unpublished_fallback_key, olm_session, olm_create_outbound_session,
 * olm_create_inbound_session, olm_matches_inbound_session, olm_remove_one_time_keys,
 * olm_session_id, olm_encrypt_message_type, olm_encrypt_random_length,
 * olm_encrypt_message_length, olm_encrypt, olm_decrypt_max_plaintext_length,
 * olm_decrypt, olm_session_last_error, olm_clear_session, olm_clear_account.
 */
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>
#include <olm/olm.h>

#include "crypto/pt_crypto.h"
#include "e2e/pt_olm.h"
#include "testutil.h"

#define MAXMSG 4096
static uint64_t g_seed;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            print_error("seed %llu (PT_TEST_SEED=%llu to replay): ", (unsigned long long)g_seed,   \
                        (unsigned long long)g_seed);                                               \
            print_error(__VA_ARGS__);                                                              \
            print_error("\n");                                                                     \
            fail();                                                                                \
        }                                                                                          \
    } while (0)

/* ---- seeded randomness; the env records what it hands out ------------------------------ */

typedef struct rng {
    uint64_t label, counter;
} rng;

static void rng_bytes(rng *r, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        uint8_t blk[32], in[24];
        pt_put_u64le(in, g_seed);
        pt_put_u64le(in + 8, r->label);
        pt_put_u64le(in + 16, r->counter++);
        assert_int_equal(pt_blake2b(blk, sizeof blk, in, sizeof in, NULL, 0), 0);
        size_t k = len < sizeof blk ? len : sizeof blk;
        memcpy(p, blk, k);
        p += k;
        len -= k;
    }
}

static uint32_t rng_u32(rng *r, uint32_t n)
{
    uint32_t v;
    rng_bytes(r, &v, sizeof v);
    return v % n;
}

typedef struct rec_env {
    pt_env env;
    rng r;
    uint8_t log[256]; /* the bytes handed out since the last reset */
    size_t n;
} rec_env;

static void rec_random(void *ctx, void *buf, size_t len)
{
    rec_env *e = ctx;
    rng_bytes(&e->r, buf, len);
    assert_true(e->n + len <= sizeof e->log);
    memcpy(e->log + e->n, buf, len);
    e->n += len;
}
static uint64_t rec_clock(void *ctx)
{
    return (void)ctx, 1700000000000ull;
}

static void rec_init(rec_env *e, uint64_t label)
{
    e->env = (pt_env){rec_random, rec_clock, rec_clock, e};
    e->r = (rng){label, 0};
    e->n = 0;
}

/* ---- libolm helpers ------------------------------------------------------------------------ */

static OlmAccount *lo_account(const uint8_t *rnd, size_t n)
{
    OlmAccount *a = olm_account(malloc(olm_account_size()));
    assert_int_equal(olm_create_account_random_length(a), n);
    uint8_t tmp[64];
    memcpy(tmp, rnd, n);
    assert_int_not_equal(olm_create_account(a, tmp, n), olm_error());
    return a;
}

static void lo_account_free(OlmAccount *a)
{
    if (!a) return;
    olm_clear_account(a);
    free(a);
}

static void b64_key(uint8_t out[32], const char *b64)
{
    size_t n = 0;
    assert_int_equal(pt_base64_decode(out, 32, &n, b64, strlen(b64)), 0);
    assert_int_equal(n, 32);
}

static void lo_identity(OlmAccount *a, uint8_t curve[32], uint8_t ed[32])
{
    char buf[256] = {0};
    assert_int_not_equal(olm_account_identity_keys(a, buf, sizeof buf - 1), olm_error());
    cJSON *j = cJSON_Parse(buf);
    assert_non_null(j);
    b64_key(curve, cJSON_GetObjectItem(j, "curve25519")->valuestring);
    b64_key(ed, cJSON_GetObjectItem(j, "ed25519")->valuestring);
    cJSON_Delete(j);
}

/* The unpublished one-time keys, oldest first as our account lists them. */
static size_t lo_one_time_keys(OlmAccount *a, uint8_t (*keys)[32], size_t cap)
{
    char buf[8192] = {0};
    assert_int_not_equal(olm_account_one_time_keys(a, buf, sizeof buf - 1), olm_error());
    cJSON *j = cJSON_Parse(buf);
    assert_non_null(j);
    cJSON *c = cJSON_GetObjectItem(j, "curve25519"), *it;
    size_t n = 0;
    cJSON_ArrayForEach(it, c)
    {
        assert_true(n < cap);
        b64_key(keys[n++], it->valuestring);
    }
    cJSON_Delete(j);
    return n;
}

static OlmSession *lo_session(void)
{
    return olm_session(malloc(olm_session_size()));
}

static void lo_session_free(OlmSession *s)
{
    if (!s) return;
    olm_clear_session(s);
    free(s);
}

/* olm_encrypt with the given random bytes; returns the raw (base64-decoded) message. */
static size_t lo_encrypt(OlmSession *s, const uint8_t *rnd, size_t rndlen, const uint8_t *pt,
                         size_t len, uint8_t *out, size_t *type)
{
    size_t need = olm_encrypt_random_length(s);
    CHECK(need == rndlen, "libolm wants %zu random bytes, we used %zu", need, rndlen);
    *type = olm_encrypt_message_type(s);
    size_t blen = olm_encrypt_message_length(s, len);
    char *b64 = malloc(blen + 1);
    uint8_t r[64];
    memcpy(r, rnd, rndlen);
    size_t n = olm_encrypt(s, pt, len, r, rndlen, b64, blen);
    CHECK(n != olm_error(), "olm_encrypt: %s", olm_session_last_error(s));
    size_t raw = 0;
    assert_int_equal(pt_base64_decode(out, MAXMSG, &raw, b64, n), 0);
    free(b64);
    return raw;
}

/* olm_decrypt of raw bytes; returns the plaintext length or -1 (error in *why). */
static long lo_decrypt(OlmSession *s, size_t type, const uint8_t *msg, size_t len, uint8_t *pt,
                       const char **why)
{
    char *b64 = malloc(PT_BASE64_LEN(len) + 1);
    pt_base64_encode(b64, msg, len);
    size_t blen = strlen(b64);
    char *copy = malloc(blen);
    memcpy(copy, b64, blen);
    size_t max = olm_decrypt_max_plaintext_length(s, type, copy, blen);
    long rc = -1;
    if (max != olm_error()) {
        assert_true(max <= MAXMSG);
        size_t n = olm_decrypt(s, type, b64, blen, pt, MAXMSG);
        if (n != olm_error()) rc = (long)n;
    }
    *why = olm_session_last_error(s);
    free(b64);
    free(copy);
    return rc;
}

/* A pre-key message for a libolm session: matches it? */
static bool lo_matches(OlmSession *s, const uint8_t *msg, size_t len)
{
    char *b64 = malloc(PT_BASE64_LEN(len) + 1);
    pt_base64_encode(b64, msg, len);
    size_t r = olm_matches_inbound_session(s, b64, strlen(b64));
    free(b64);
    return r == 1;
}

static OlmSession *lo_inbound(OlmAccount *a, const uint8_t *msg, size_t len)
{
    char *b64 = malloc(PT_BASE64_LEN(len) + 1);
    pt_base64_encode(b64, msg, len);
    OlmSession *s = lo_session();
    size_t r = olm_create_inbound_session(s, a, b64, strlen(b64));
    free(b64);
    if (r == olm_error()) {
        lo_session_free(s);
        return NULL;
    }
    assert_int_not_equal(olm_remove_one_time_keys(a, s), olm_error());
    return s;
}

static void lo_session_id(OlmSession *s, uint8_t id[32])
{
    char b64[64] = {0};
    size_t n = olm_session_id(s, b64, sizeof b64 - 1);
    assert_int_not_equal(n, olm_error());
    b64_key(id, b64);
}

/* ---- endpoints: ours (with its libolm twin), or plain libolm ---------------------------- */

typedef struct ep {
    bool ours;
    rec_env env; /* ours: its randomness, recorded for the twin */
    rng lr;      /* plain libolm: its randomness */
    pt_olm_account *acct;
    pt_olm_session *s;
    OlmAccount *la; /* ours: the twin's account; libolm: the account */
    OlmSession *ls; /* ours: the twin's session; libolm: the session */
} ep;

static const uint8_t PICKLE_KEY[32] = "interop pickle key, 32 bytes...";

static void ep_init(ep *e, bool ours, uint64_t label)
{
    memset(e, 0, sizeof *e);
    e->ours = ours;
    uint8_t rnd[64];
    if (ours) {
        rec_init(&e->env, label);
        pt_err err;
        e->acct = pt_olm_account_new(&e->env.env, PT_OLM_SUITE_OLM_V1, &err);
        assert_non_null(e->acct);
        e->la = lo_account(e->env.log, 64);
        uint8_t c1[32], e1[32], c2[32], e2[32];
        pt_olm_account_identity(e->acct, c1, e1);
        lo_identity(e->la, c2, e2);
        CHECK(memcmp(c1, c2, 32) == 0 && memcmp(e1, e2, 32) == 0,
              "identity keys differ from libolm's for the same random bytes");
    } else {
        e->lr = (rng){label, 0};
        rng_bytes(&e->lr, rnd, 64);
        e->la = lo_account(rnd, 64);
    }
}

static void ep_free(ep *e)
{
    pt_olm_session_free(e->s);
    pt_olm_account_free(e->acct);
    lo_session_free(e->ls);
    lo_account_free(e->la);
}

static void ep_identity(ep *e, uint8_t curve[32])
{
    uint8_t ed[32];
    lo_identity(e->la, curve, ed);
}

/* n fresh one-time keys; returns the first as libolm lists it. */
static void ep_one_time_key(ep *e, uint8_t key[32])
{
    uint8_t keys[8][32];
    if (e->ours) {
        e->env.n = 0;
        assert_int_equal(pt_olm_account_generate_one_time_keys(e->acct, &e->env.env, 2), 0);
        uint8_t r[64];
        memcpy(r, e->env.log, 64);
        assert_int_not_equal(olm_account_generate_one_time_keys(e->la, 2, r, 64), olm_error());
        pt_olm_key ours[2];
        assert_int_equal(pt_olm_account_unpublished_keys(e->acct, ours, 2), 2);
        size_t n = lo_one_time_keys(e->la, keys, 8);
        assert_int_equal(n, 2);
        /* the same keys (libolm lists the newest first, we the oldest) */
        for (int i = 0; i < 2; i++)
            CHECK(memcmp(ours[i].key, keys[0], 32) == 0 || memcmp(ours[i].key, keys[1], 32) == 0,
                  "one-time keys differ from libolm's for the same random bytes");
        pt_olm_account_mark_published(e->acct);
    } else {
        uint8_t r[64];
        rng_bytes(&e->lr, r, 64);
        assert_int_not_equal(olm_account_generate_one_time_keys(e->la, 2, r, 64), olm_error());
        assert_int_equal(lo_one_time_keys(e->la, keys, 8), 2);
    }
    assert_int_not_equal(olm_account_mark_keys_as_published(e->la), olm_error());
    memcpy(key, keys[1], 32);
}

static void ep_outbound(ep *e, const uint8_t their_ik[32], const uint8_t their_otk[32])
{
    uint8_t r[64];
    e->ls = lo_session();
    if (e->ours) {
        e->env.n = 0;
        pt_err err;
        e->s = pt_olm_session_new_outbound_raw(e->acct, &e->env.env, PT_OLM_SUITE_OLM_V1, their_ik,
                                               their_otk, &err);
        assert_non_null(e->s);
        assert_int_equal(e->env.n, 64);
        memcpy(r, e->env.log, 64);
    } else {
        rng_bytes(&e->lr, r, 64);
    }
    char ik64[64], otk64[64];
    pt_base64_encode(ik64, their_ik, 32);
    pt_base64_encode(otk64, their_otk, 32);
    assert_int_equal(olm_create_outbound_session_random_length(e->ls), 64);
    CHECK(olm_create_outbound_session(e->ls, e->la, ik64, 43, otk64, 43, r, 64) != olm_error(),
          "olm_create_outbound_session: %s", olm_session_last_error(e->ls));
}

static bool ep_has_session(const ep *e)
{
    return e->ours ? e->s != NULL : e->ls != NULL;
}

/* Encrypts; for ours, checks the twin's message is the same bytes. */
static size_t ep_send(ep *e, const uint8_t *pt, size_t len, uint8_t *out, size_t *type)
{
    if (!e->ours) {
        uint8_t r[32];
        size_t need = olm_encrypt_random_length(e->ls);
        rng_bytes(&e->lr, r, need);
        return lo_encrypt(e->ls, r, need, pt, len, out, type);
    }
    pt_buf b;
    pt_buf_init(&b);
    pt_olm_msg_type t;
    e->env.n = 0;
    assert_int_equal(pt_olm_encrypt(e->s, &e->env.env, pt, len, &b, &t), 0);
    uint8_t twin[MAXMSG];
    size_t ttype, tn = lo_encrypt(e->ls, e->env.log, e->env.n, pt, len, twin, &ttype);
    CHECK(ttype == (size_t)t, "message type %d, libolm's %zu", (int)t, ttype);
    CHECK(tn == b.len && memcmp(twin, b.data, tn) == 0,
          "our message (%zu bytes) differs from libolm's (%zu bytes)", b.len, tn);
    memcpy(out, b.data, b.len);
    size_t n = b.len;
    *type = t;
    pt_buf_free(&b);
    return n;
}

/* Delivers a message; returns the plaintext length or -1. For ours, the twin must
 * agree on success and plaintext. */
static long ep_recv(ep *e, size_t type, const uint8_t *msg, size_t len, uint8_t *pt)
{
    const char *why = "";
    long lo;
    uint8_t lpt[MAXMSG];
    /* libolm's side (the endpoint itself, or our twin) */
    if (!e->ls) {
        if (type != OLM_MESSAGE_TYPE_PRE_KEY) return -1;
        e->ls = lo_inbound(e->la, msg, len);
        CHECK(e->ls != NULL || e->ours, "libolm refused the first pre-key message");
        lo = e->ls ? lo_decrypt(e->ls, type, msg, len, lpt, &why) : -1;
    } else if (type == OLM_MESSAGE_TYPE_PRE_KEY && !lo_matches(e->ls, msg, len)) {
        lo = -1;
        why = "pre-key message for another session";
    } else {
        lo = lo_decrypt(e->ls, type, msg, len, lpt, &why);
    }
    if (!e->ours) {
        if (lo >= 0) memcpy(pt, lpt, (size_t)lo);
        return lo;
    }
    /* ours */
    pt_buf b;
    pt_buf_init(&b);
    int rc;
    if (!e->s) {
        pt_err err;
        e->s = pt_olm_session_new_inbound(e->acct, NULL, msg, len, &b, &err);
        rc = e->s ? 0 : err;
    } else if (type == OLM_MESSAGE_TYPE_PRE_KEY &&
               !pt_olm_session_matches_inbound(e->s, msg, len)) {
        rc = PT_ERR_PROTO;
    } else {
        rc = pt_olm_decrypt(e->s, (pt_olm_msg_type)type, msg, len, &b);
    }
    CHECK((rc == 0) == (lo >= 0), "we say %s, libolm says %s", rc == 0 ? "ok" : pt_strerror(rc),
          lo >= 0 ? "ok" : why);
    long n = -1;
    if (rc == 0) {
        CHECK((size_t)lo == b.len && memcmp(lpt, b.data, b.len) == 0, "plaintexts differ");
        memcpy(pt, b.data, b.len);
        n = (long)b.len;
    }
    pt_buf_free(&b);
    return n;
}

static void ep_check_ids(ep *e)
{
    if (!e->ours || !e->s || !e->ls) return;
    uint8_t a[32], b[32];
    pt_olm_session_id(e->s, a);
    lo_session_id(e->ls, b);
    CHECK(memcmp(a, b, 32) == 0, "session ids differ");
}

/* Our session through its sealed state and back. */
static void ep_restore(ep *e)
{
    if (!e->ours || !e->s) return;
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_olm_session_pickle(e->s, &e->env.env, PICKLE_KEY, 32, &b), 0);
    pt_olm_session_free(e->s);
    pt_err err;
    e->s = pt_olm_session_unpickle(PICKLE_KEY, 32, b.data, b.len, &err);
    assert_non_null(e->s);
    pt_buf_free(&b);
}

/* ---- the conversation -------------------------------------------------------------------------
 */

typedef struct flight {
    int to; /* receiving endpoint */
    size_t type;
    size_t len;
    uint8_t data[512];
    char text[48];
    int due;        /* turn at which it is delivered */
    bool duplicate; /* already delivered once: must be refused */
} flight;

typedef struct stats {
    int sent, delivered, dropped, late, duplicates;
} stats;

/* Runs 200 messages between ep[0] (the initiator) and ep[1]. */
static void converse(ep *e[2], rng *sched, stats *st)
{
    flight *q = calloc(600, sizeof *q);
    size_t nq = 0;
    int sender = 0, restored = 0;
    uint8_t otk[32], ik[32];
    ep_one_time_key(e[1], otk);
    ep_identity(e[1], ik);
    ep_outbound(e[0], ik, otk);
    for (int turn = 0; st->sent < 200; turn++) {
        /* the responder cannot speak before it has a session */
        if (sender == 1 && !ep_has_session(e[1])) sender = 0;
        int burst = 1 + (int)rng_u32(sched, 3);
        for (int k = 0; k < burst && st->sent < 200; k++) {
            flight *f = &q[nq++];
            snprintf(f->text, sizeof f->text, "message %d from %d (turn %d)", st->sent, sender,
                     turn);
            uint8_t raw[MAXMSG];
            f->len = ep_send(e[sender], (const uint8_t *)f->text, strlen(f->text), raw, &f->type);
            assert_true(f->len <= sizeof f->data);
            memcpy(f->data, raw, f->len);
            f->to = 1 - sender;
            st->sent++;
            uint32_t fate = rng_u32(sched, 100);
            if (fate < 8) { /* dropped */
                f->due = -1;
                st->dropped++;
            } else if (fate < 30) { /* held back one or two turns */
                f->due = turn + 1 + (int)rng_u32(sched, 2);
                st->late++;
            } else {
                f->due = turn;
            }
        }
        /* deliver what is due, in a shuffled order */
        for (size_t i = nq; i > 1; i--) {
            size_t j = rng_u32(sched, (uint32_t)i);
            if (q[i - 1].due == turn && q[j].due == turn) {
                flight t = q[i - 1];
                q[i - 1] = q[j];
                q[j] = t;
            }
        }
        for (size_t i = 0; i < nq; i++) {
            flight *f = &q[i];
            if (f->due != turn) continue;
            uint8_t pt[MAXMSG];
            long n = ep_recv(e[f->to], f->type, f->data, f->len, pt);
            if (f->duplicate) {
                CHECK(n < 0, "a duplicate of \"%s\" was accepted", f->text);
                st->duplicates++;
                f->due = -1;
                continue;
            }
            CHECK(n >= 0, "\"%s\" (type %zu) was refused", f->text, f->type);
            CHECK((size_t)n == strlen(f->text) && memcmp(pt, f->text, (size_t)n) == 0,
                  "\"%s\" decrypted to something else", f->text);
            st->delivered++;
            if (rng_u32(sched, 100) < 10) { /* delivered again later */
                f->duplicate = true;
                f->due = turn + 1 + (int)rng_u32(sched, 3);
            } else {
                f->due = -1;
            }
        }
        ep_check_ids(e[0]);
        ep_check_ids(e[1]);
        if (!restored && st->sent >= 100) {
            ep_restore(e[0]);
            ep_restore(e[1]);
            restored = 1;
        }
        sender = 1 - sender;
    }
    free(q);
}

static void run_direction(bool ours_first)
{
    const char *env_seed = getenv("PT_TEST_SEED");
    uint64_t first = env_seed ? strtoull(env_seed, NULL, 10) : 1, last = env_seed ? first : 8;
    for (g_seed = first; g_seed <= last; g_seed++) {
        ep a, b;
        ep_init(&a, ours_first, 1);
        ep_init(&b, !ours_first, 2);
        ep *e[2] = {&a, &b};
        rng sched = {99, 0};
        stats st = {0};
        converse(e, &sched, &st);
        if (g_seed == first)
            printf("  seed %llu, %s first: %d sent, %d delivered, %d dropped, %d held back, "
                   "%d duplicates refused\n",
                   (unsigned long long)g_seed, ours_first ? "ours" : "libolm", st.sent,
                   st.delivered, st.dropped, st.late, st.duplicates);
        CHECK(st.dropped > 0 && st.late > 0 && st.duplicates > 0,
              "schedule too tame: %d dropped, %d late, %d duplicates", st.dropped, st.late,
              st.duplicates);
        ep_free(&a);
        ep_free(&b);
    }
}

/* Our outbound session to a libolm inbound one. */
static void test_ours_to_libolm(void **state)
{
    (void)state;
    run_direction(true);
}

/* A libolm outbound session to our inbound one. */
static void test_libolm_to_ours(void **state)
{
    (void)state;
    run_direction(false);
}

/* The fallback key: a libolm initiator reaches our account through it, and ours a
 * libolm account through libolm's; the key survives use in both. */
static void test_fallback_keys(void **state)
{
    (void)state;
    g_seed = 77;
    for (int dir = 0; dir < 2; dir++) {
        ep ours, lo;
        ep_init(&ours, true, 5);
        ep_init(&lo, false, 6);
        uint8_t fk[32], ik[32];
        if (dir == 0) { /* libolm -> our fallback key */
            ours.env.n = 0;
            assert_int_equal(pt_olm_account_generate_fallback_key(ours.acct, &ours.env.env), 0);
            uint8_t r[32];
            memcpy(r, ours.env.log, 32);
            assert_int_not_equal(olm_account_generate_fallback_key(ours.la, r, 32), olm_error());
            pt_olm_key k;
            assert_int_equal(pt_olm_account_fallback_key(ours.acct, &k), 0);
            char buf[256] = {0};
            assert_int_not_equal(olm_account_unpublished_fallback_key(ours.la, buf, sizeof buf - 1),
                                 olm_error());
            cJSON *j = cJSON_Parse(buf);
            cJSON *c = cJSON_GetObjectItem(j, "curve25519");
            b64_key(fk, c->child->valuestring);
            cJSON_Delete(j);
            CHECK(memcmp(fk, k.key, 32) == 0, "fallback keys differ");
            ep_identity(&ours, ik);
            for (int round = 0; round < 2; round++) {
                lo_session_free(lo.ls);
                ep_outbound(&lo, ik, fk);
                uint8_t raw[MAXMSG], pt[MAXMSG];
                size_t type, n = ep_send(&lo, (const uint8_t *)"via fallback", 12, raw, &type);
                pt_olm_session_free(ours.s);
                ours.s = NULL;
                lo_session_free(ours.ls);
                ours.ls = NULL;
                CHECK(ep_recv(&ours, type, raw, n, pt) == 12, "fallback pre-key message refused");
            }
        } else { /* ours -> libolm's fallback key */
            uint8_t r[32];
            rng_bytes(&lo.lr, r, 32);
            assert_int_not_equal(olm_account_generate_fallback_key(lo.la, r, 32), olm_error());
            char buf[256] = {0};
            assert_int_not_equal(olm_account_unpublished_fallback_key(lo.la, buf, sizeof buf - 1),
                                 olm_error());
            cJSON *j = cJSON_Parse(buf);
            b64_key(fk, cJSON_GetObjectItem(j, "curve25519")->child->valuestring);
            cJSON_Delete(j);
            ep_identity(&lo, ik);
            ep_outbound(&ours, ik, fk);
            uint8_t raw[MAXMSG], pt[MAXMSG];
            size_t type, n = ep_send(&ours, (const uint8_t *)"to fallback", 11, raw, &type);
            CHECK(ep_recv(&lo, type, raw, n, pt) == 11, "libolm refused our fallback message");
            n = ep_send(&lo, (const uint8_t *)"reply", 5, raw, &type);
            CHECK(ep_recv(&ours, type, raw, n, pt) == 5, "reply refused");
        }
        ep_free(&ours);
        ep_free(&lo);
    }
}

int main(void)
{
    if (pt_init() != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ours_to_libolm),
        cmocka_unit_test(test_libolm_to_ours),
        cmocka_unit_test(test_fallback_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
