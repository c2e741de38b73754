/*
 * Property tests of the 1:1 sessions, both suites, on seeded random schedules.
 *
 * Two scenarios: two devices with one session, and three devices with a session
 * per pair. Each step sends, delivers a message in flight (in random order: that
 * is the reordering), drops one, delivers one again, delivers one to the wrong
 * session, serialises a session and carries on with the copy, checks forward
 * secrecy on a copy of a state, or steals a copy of a state. A small model that
 * restates the spec's bookkeeping (receiver chains, skipped keys, when a sender
 * makes a new ratchet key) predicts every outcome, and the properties are:
 *
 *   - every message delivered for the first time decrypts, to its plaintext, unless
 *     the model says its keys are out of reach (never, within these bounds, except a
 *     chain pushed out of the five kept); a second delivery is refused;
 *   - a message given to another session is refused and changes nothing;
 *   - forward secrecy: a copy of a state taken after a message was decrypted cannot
 *     decrypt it again (its key is gone);
 *   - post-compromise security: a stolen copy of a state, fed every later message
 *     in order like its owner, decrypts exactly those on chains that do not depend
 *     on a ratchet key the owner made after the theft; once the peer ratchets
 *     against such a key, nothing more.
 *
 * PT_TEST_SEED=<n> runs that seed only; a failure prints its seed.
 */
#include <stdio.h>
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "e2e/olm_int.h"
#include "e2e/pt_olm.h"
#include "testutil.h"

#define SEEDS 40  /* per suite and scenario */
#define STEPS 500 /* per run */
#define MAXMSG 1200
#define MAXCHAIN 600
#define MAXPARTY 3
#define MAXSESS 3

static uint64_t g_seed;
static const char *g_what;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            print_error("%s, seed %llu (PT_TEST_SEED=%llu to replay): ", g_what,                   \
                        (unsigned long long)g_seed, (unsigned long long)g_seed);                   \
            print_error(__VA_ARGS__);                                                              \
            print_error("\n");                                                                     \
            fail();                                                                                \
        }                                                                                          \
    } while (0)

/* ---- seeded randomness ------------------------------------------------------------------ */

typedef struct rng {
    pt_env env;
    uint64_t label, counter;
} rng;

static void rng_bytes(void *ctx, void *buf, size_t len)
{
    rng *r = ctx;
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
static uint64_t rng_clock(void *ctx)
{
    return (void)ctx, 1700000000000ull;
}

static void rng_init(rng *r, uint64_t label)
{
    r->env = (pt_env){rng_bytes, rng_clock, rng_clock, r};
    r->label = label;
    r->counter = 0;
}

static uint32_t pick(rng *r, uint32_t n)
{
    uint32_t v;
    rng_bytes(r, &v, sizeof v);
    return v % n;
}

static const uint8_t PICKLE_KEY[32] = "property tests pickle key......";

/* ---- the world ---------------------------------------------------------------------------- */

typedef struct chain_info {
    uint8_t rk[32];
    int sess, side; /* whose ratchet key */
    int created;    /* step */
    int against;    /* the receiver's chain it was derived against; -1: the first chain */
} chain_info;

typedef struct msg {
    int sess, from; /* from: side 0 (initiator) or 1 */
    pt_olm_msg_type type;
    uint8_t *data;
    size_t len;
    int chain;
    uint32_t counter;
    char text[40];
    bool in_flight, delivered;
} msg;

typedef struct skipped {
    int chain;
    uint32_t index;
} skipped;

/* One end of a session and its model. */
typedef struct side {
    pt_olm_session *s;
    bool has_sender;
    int send_chain;
    uint32_t send_next;
    int n_recv, recv[PT_OLM_MAX_RECEIVER_CHAINS]; /* newest first */
    uint32_t recv_next[PT_OLM_MAX_RECEIVER_CHAINS];
    skipped *sk;
    size_t n_sk;
    /* the thief's copy */
    pt_olm_session *eve;
    int eve_step;
    int decrypted[16]; /* last messages decrypted, for forward secrecy checks */
    int n_dec;
} side;

typedef struct session {
    int party[2];
    side end[2];
} session;

typedef struct world {
    pt_olm_suite suite;
    int n_party, n_sess;
    pt_olm_account *acct[MAXPARTY];
    rng env[MAXPARTY];
    session sess[MAXSESS];
    chain_info chains[MAXCHAIN];
    int n_chains;
    msg msgs[MAXMSG];
    int n_msgs;
    int step;
    int stats_first, stats_refused, stats_dup, stats_wrong, stats_fs, stats_eve_ok, stats_eve_no;
} world;

static int find_chain(world *w, const uint8_t rk[32])
{
    for (int i = 0; i < w->n_chains; i++)
        if (memcmp(w->chains[i].rk, rk, 32) == 0) return i;
    return -1;
}

static int add_chain(world *w, const uint8_t rk[32], int sess, int sd, int against)
{
    CHECK(find_chain(w, rk) < 0, "a ratchet key was used twice");
    assert_true(w->n_chains < MAXCHAIN);
    chain_info *c = &w->chains[w->n_chains];
    memcpy(c->rk, rk, 32);
    c->sess = sess;
    c->side = sd;
    c->created = w->step;
    c->against = against;
    return w->n_chains++;
}

/* ---- the model of a receiving end ----------------------------------------------------------- */

static void model_skip(side *d, int chain, uint32_t from, uint32_t to)
{
    for (uint32_t i = from; i < to; i++) {
        d->sk = realloc(d->sk, (d->n_sk + 1) * sizeof *d->sk);
        d->sk[d->n_sk++] = (skipped){chain, i};
    }
    /* the bounds: per chain, then per session, oldest first */
    size_t mine = 0;
    for (size_t i = 0; i < d->n_sk; i++)
        mine += d->sk[i].chain == chain;
    size_t drop_mine = mine > PT_OLM_MAX_SKIP_PER_CHAIN ? mine - PT_OLM_MAX_SKIP_PER_CHAIN : 0;
    size_t left = d->n_sk - drop_mine,
           drop_old = left > PT_OLM_MAX_SKIPPED ? left - PT_OLM_MAX_SKIPPED : 0;
    size_t w = 0;
    for (size_t i = 0; i < d->n_sk; i++) {
        if (d->sk[i].chain == chain && drop_mine) {
            drop_mine--;
            continue;
        }
        if (drop_old) {
            drop_old--;
            continue;
        }
        d->sk[w++] = d->sk[i];
    }
    d->n_sk = w;
}

/* Whether the end can decrypt the message, and if so the model moves on. */
static bool model_recv(const world *w, side *d, const msg *m)
{
    for (size_t i = 0; i < d->n_sk; i++) {
        if (d->sk[i].chain == m->chain && d->sk[i].index == m->counter) {
            memmove(&d->sk[i], &d->sk[i + 1], (d->n_sk - i - 1) * sizeof *d->sk);
            d->n_sk--;
            return true;
        }
    }
    for (int i = 0; i < d->n_recv; i++) {
        if (d->recv[i] != m->chain) continue;
        if (m->counter < d->recv_next[i] ||
            m->counter - d->recv_next[i] > PT_OLM_MAX_SKIP_PER_CHAIN)
            return false;
        model_skip(d, m->chain, d->recv_next[i], m->counter);
        d->recv_next[i] = m->counter + 1;
        return true;
    }
    /* a new chain must answer our current ratchet key (a chain forgotten and seen
     * again answers an older one) */
    if (!d->has_sender || w->chains[m->chain].against != d->send_chain ||
        m->counter > PT_OLM_MAX_SKIP_PER_CHAIN)
        return false;
    if (d->n_recv == PT_OLM_MAX_RECEIVER_CHAINS) d->n_recv--;
    memmove(&d->recv[1], &d->recv[0], d->n_recv * sizeof d->recv[0]);
    memmove(&d->recv_next[1], &d->recv_next[0], d->n_recv * sizeof d->recv_next[0]);
    d->n_recv++;
    d->recv[0] = m->chain;
    d->recv_next[0] = m->counter + 1;
    model_skip(d, m->chain, 0, m->counter);
    d->has_sender = false;
    return true;
}

/* ---- actions --------------------------------------------------------------------------------- */

static void world_init(world *w, pt_olm_suite suite, int n_party)
{
    memset(w, 0, sizeof *w);
    w->suite = suite;
    w->n_party = n_party;
    for (int p = 0; p < n_party; p++) {
        rng_init(&w->env[p], (uint64_t)p + 1);
        w->acct[p] = pt_olm_account_new(&w->env[p].env, PT_OLM_SUITES_ALL, NULL);
        assert_non_null(w->acct[p]);
        assert_int_equal(pt_olm_account_generate_one_time_keys(w->acct[p], &w->env[p].env, 4), 0);
    }
    /* a session per pair, each on its own one-time key; the lower-numbered party starts it */
    int used[MAXPARTY] = {0};
    for (int a = 0; a < n_party; a++) {
        for (int b = a + 1; b < n_party; b++) {
            session *s = &w->sess[w->n_sess];
            s->party[0] = a;
            s->party[1] = b;
            pt_olm_key k[4];
            size_t n = pt_olm_account_unpublished_keys(w->acct[b], k, 4);
            assert_true(n > (size_t)used[b]);
            uint8_t ik[32], ed[32];
            pt_olm_account_identity(w->acct[b], ik, ed);
            s->end[0].s = pt_olm_session_new_outbound_raw(w->acct[a], &w->env[a].env, suite, ik,
                                                          k[used[b]++].key, NULL);
            assert_non_null(s->end[0].s);
            /* our first chain: nobody else knows it yet */
            s->end[0].has_sender = true;
            s->end[0].send_chain = add_chain(w, s->end[0].s->sender.ratchet_key, w->n_sess, 0, -1);
            w->n_sess++;
        }
    }
}

static void world_free(world *w)
{
    for (int i = 0; i < w->n_sess; i++) {
        for (int e = 0; e < 2; e++) {
            pt_olm_session_free(w->sess[i].end[e].s);
            pt_olm_session_free(w->sess[i].end[e].eve);
            free(w->sess[i].end[e].sk);
        }
    }
    for (int p = 0; p < w->n_party; p++)
        pt_olm_account_free(w->acct[p]);
    for (int i = 0; i < w->n_msgs; i++)
        free(w->msgs[i].data);
}

static void do_send(world *w, int si, int from)
{
    session *s = &w->sess[si];
    side *d = &s->end[from];
    if (!d->s || w->n_msgs == MAXMSG) return;
    msg *m = &w->msgs[w->n_msgs];
    snprintf(m->text, sizeof m->text, "msg %d s%d side%d", w->n_msgs, si, from);
    pt_buf b;
    pt_buf_init(&b);
    int rc = pt_olm_encrypt(d->s, &w->env[s->party[from]].env, (const uint8_t *)m->text,
                            strlen(m->text), &b, &m->type);
    CHECK(rc == 0, "encrypt: %s", pt_strerror(rc));
    m->sess = si;
    m->from = from;
    m->len = b.len;
    m->data = malloc(b.len);
    memcpy(m->data, b.data, b.len);
    pt_buf_free(&b);
    /* which chain: the model knows whether a new ratchet key was due */
    pt_olm_msg dm;
    const uint8_t *inner = m->data;
    size_t inner_len = m->len;
    if (m->type == PT_OLM_MSG_PREKEY) {
        pt_olm_prekey p;
        assert_int_equal(pt_olm_prekey_decode(&p, w->suite, m->data, m->len), 0);
        inner = p.message;
        inner_len = p.message_len;
    }
    assert_int_equal(pt_olm_msg_decode(&dm, w->suite, inner, inner_len), 0);
    if (!d->has_sender) {
        d->send_chain = add_chain(w, dm.ratchet_key, si, from, d->recv[0]);
        d->send_next = 0;
        d->has_sender = true;
    }
    CHECK(memcmp(w->chains[d->send_chain].rk, dm.ratchet_key, 32) == 0,
          "a new ratchet key without a change of direction");
    CHECK(dm.counter == d->send_next, "counter %u, expected %u", dm.counter, d->send_next);
    CHECK((m->type == PT_OLM_MSG_PREKEY) == (from == 0 && !pt_olm_session_has_received(d->s)),
          "wrong message type");
    d->send_next++;
    m->chain = d->send_chain;
    m->counter = dm.counter;
    m->in_flight = true;
    w->n_msgs++;
}

static int decrypt_on(pt_olm_session *s, const msg *m, pt_buf *out)
{
    return pt_olm_decrypt(s, m->type, m->data, m->len, out);
}

/* The first delivery of m, or a repeated one. */
static void do_deliver(world *w, int mi, bool again)
{
    msg *m = &w->msgs[mi];
    session *s = &w->sess[m->sess];
    side *d = &s->end[1 - m->from];
    int party = s->party[1 - m->from];
    pt_buf out;
    pt_buf_init(&out);
    int rc;
    bool expect;
    if (!d->s) {
        /* the responder's session starts with the first pre-key message it gets */
        pt_err err = 0;
        d->s = pt_olm_session_new_inbound(w->acct[party], NULL, m->data, m->len, &out, &err);
        rc = d->s ? 0 : err;
        expect = !again;
        if (d->s) {
            d->n_recv = 1;
            d->recv[0] = m->chain;
            d->recv_next[0] = 0;
            d->has_sender = false;
            model_recv(w, d, m);
        }
    } else {
        rc = decrypt_on(d->s, m, &out);
        expect = model_recv(w, d, m);
    }
    if (again) {
        CHECK(rc != 0, "a second delivery of \"%s\" decrypted", m->text);
        CHECK(!expect, "the model accepts a replay");
        w->stats_dup++;
    } else {
        CHECK((rc == 0) == expect, "\"%s\": %s, the model expected %s", m->text,
              rc == 0 ? "decrypted" : pt_strerror(rc), expect ? "success" : "refusal");
        if (rc == 0) {
            CHECK(out.len == strlen(m->text) && memcmp(out.data, m->text, out.len) == 0,
                  "\"%s\" decrypted to other bytes", m->text);
            w->stats_first++;
            d->decrypted[d->n_dec++ % 16] = mi;
        } else {
            w->stats_refused++;
        }
        m->delivered = true;
        m->in_flight = false;
    }
    /* the thief's copy sees what its owner sees */
    if (d->eve && !again) {
        pt_buf_reset(&out);
        int erc = decrypt_on(d->eve, m, &out);
        /* healed: the chain answers a ratchet key its owner made after the theft */
        const chain_info *c = &w->chains[m->chain];
        bool healed = c->against >= 0 && w->chains[c->against].created > d->eve_step;
        if (rc == 0) {
            CHECK((erc == 0) == !healed, "stolen state %s \"%s\" (chain %s)",
                  erc == 0 ? "decrypted" : "could not decrypt", m->text,
                  healed ? "made after a new key of the victim" : "known at the theft");
            if (erc == 0)
                w->stats_eve_ok++;
            else
                w->stats_eve_no++;
        }
    }
    pt_buf_free(&out);
}

/* A message for one session given to another session of the same party. */
static void do_wrong_session(world *w, int mi)
{
    msg *m = &w->msgs[mi];
    session *s = &w->sess[m->sess];
    int party = s->party[1 - m->from];
    for (int si = 0; si < w->n_sess; si++) {
        if (si == m->sess) continue;
        for (int e = 0; e < 2; e++) {
            if (w->sess[si].party[e] != party || !w->sess[si].end[e].s) continue;
            pt_buf out;
            pt_buf_init(&out);
            int rc = decrypt_on(w->sess[si].end[e].s, m, &out);
            CHECK(rc != 0, "\"%s\" decrypted in another session", m->text);
            CHECK(out.len == 0, "a refused message left bytes behind");
            pt_buf_free(&out);
            w->stats_wrong++;
        }
    }
}

static pt_olm_session *copy_state(world *w, pt_olm_session *s)
{
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_olm_session_pickle(s, &w->env[0].env, PICKLE_KEY, 32, &b), 0);
    pt_olm_session *c = pt_olm_session_unpickle(PICKLE_KEY, 32, b.data, b.len, NULL);
    assert_non_null(c);
    pt_buf_free(&b);
    return c;
}

/* Forward secrecy: a copy of the state now cannot decrypt what it decrypted before. */
static void do_fs_check(world *w, side *d)
{
    if (!d->s || d->n_dec == 0) return;
    pt_olm_session *c = copy_state(w, d->s);
    int n = d->n_dec < 16 ? d->n_dec : 16;
    for (int i = 0; i < n; i++) {
        msg *m = &w->msgs[d->decrypted[i]];
        pt_buf out;
        pt_buf_init(&out);
        CHECK(decrypt_on(c, m, &out) != 0, "a later copy of the state decrypted \"%s\" again",
              m->text);
        pt_buf_free(&out);
        w->stats_fs++;
    }
    pt_olm_session_free(c);
}

static long totals[7];

static void run(pt_olm_suite suite, int n_party, uint64_t seed)
{
    g_seed = seed;
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    world_init(w, suite, n_party);
    rng sched;
    rng_init(&sched, 1000);
    for (w->step = 0; w->step < STEPS; w->step++) {
        uint32_t a = pick(&sched, 100);
        int si = (int)pick(&sched, (uint32_t)w->n_sess);
        session *s = &w->sess[si];
        if (a < 35) {
            /* bursts: the same side often sends several */
            int from = (int)pick(&sched, 2), n = 1 + (int)pick(&sched, 3);
            for (int k = 0; k < n; k++)
                do_send(w, si, from);
        } else if (a < 90) {
            /* deliver a random message in flight (any session) */
            int cand[MAXMSG], nc = 0;
            for (int i = 0; i < w->n_msgs; i++)
                if (w->msgs[i].in_flight) cand[nc++] = i;
            if (!nc) continue;
            int mi = cand[pick(&sched, (uint32_t)nc)];
            if (a >= 75 && a < 80) {
                /* dropped instead */
                w->msgs[mi].in_flight = false;
            } else if (a >= 80 && a < 85) {
                do_wrong_session(w, mi);
            } else {
                do_deliver(w, mi, false);
            }
        } else if (a < 92) {
            /* a delivered message, again */
            int cand[MAXMSG], nc = 0;
            for (int i = 0; i < w->n_msgs; i++)
                if (w->msgs[i].delivered) cand[nc++] = i;
            if (nc) do_deliver(w, cand[pick(&sched, (uint32_t)nc)], true);
        } else if (a < 95) {
            do_fs_check(w, &s->end[pick(&sched, 2)]);
        } else if (a < 97) {
            /* a thief copies one end's state, once */
            side *d = &s->end[pick(&sched, 2)];
            if (d->s && !d->eve) {
                d->eve = copy_state(w, d->s);
                d->eve_step = w->step;
            }
        } else {
            /* the owner goes through its sealed state */
            side *d = &s->end[pick(&sched, 2)];
            if (d->s) {
                pt_olm_session *c = copy_state(w, d->s);
                pt_olm_session_free(d->s);
                d->s = c;
            }
        }
    }
    /* deliver everything still in flight, then check forward secrecy everywhere */
    for (int i = 0; i < w->n_msgs; i++)
        if (w->msgs[i].in_flight) do_deliver(w, i, false);
    for (int si = 0; si < w->n_sess; si++)
        for (int e = 0; e < 2; e++)
            do_fs_check(w, &w->sess[si].end[e]);
    CHECK(w->stats_first > 50, "only %d messages delivered", w->stats_first);
    totals[0] += w->stats_first;
    totals[1] += w->stats_refused;
    totals[2] += w->stats_dup;
    totals[3] += w->stats_wrong;
    totals[4] += w->stats_fs;
    totals[5] += w->stats_eve_ok;
    totals[6] += w->stats_eve_no;
    world_free(w);
    free(w);
}

static void run_seeds(pt_olm_suite suite, int n_party)
{
    static char what[64];
    snprintf(what, sizeof what, "%s, %d devices", suite == PT_OLM_SUITE_PT_V1 ? "pt.v1" : "olm.v1",
             n_party);
    g_what = what;
    const char *env = getenv("PT_TEST_SEED");
    uint64_t first = env ? strtoull(env, NULL, 10) : 1, last = env ? first : SEEDS;
    memset(totals, 0, sizeof totals);
    for (uint64_t seed = first; seed <= last; seed++)
        run(suite, n_party, seed);
    printf("  %s, seeds %llu..%llu: %ld decrypted, %ld refused as the model said, %ld replays "
           "refused, %ld wrong-session refused, %ld forward-secrecy probes refused, stolen states "
           "decrypted %ld (before healing) and failed %ld (after)\n",
           what, (unsigned long long)first, (unsigned long long)last, totals[0], totals[1],
           totals[2], totals[3], totals[4], totals[5], totals[6]);
}

static void test_two_devices_olm(void **state)
{
    (void)state;
    run_seeds(PT_OLM_SUITE_OLM_V1, 2);
}
static void test_two_devices_pt(void **state)
{
    (void)state;
    run_seeds(PT_OLM_SUITE_PT_V1, 2);
}
static void test_three_devices_olm(void **state)
{
    (void)state;
    run_seeds(PT_OLM_SUITE_OLM_V1, 3);
}
static void test_three_devices_pt(void **state)
{
    (void)state;
    run_seeds(PT_OLM_SUITE_PT_V1, 3);
}

int main(void)
{
    if (pt_init() != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_devices_olm),
        cmocka_unit_test(test_two_devices_pt),
        cmocka_unit_test(test_three_devices_olm),
        cmocka_unit_test(test_three_devices_pt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
