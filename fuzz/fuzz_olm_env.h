/* The fixed Olm world of the fuzz_olm_* targets and of fuzz/seeds/make_olm_seeds.c,
 * built in the deterministic fuzz_env so that the seeds are messages the targets'
 * sessions can decrypt:
 *
 *   A and B (accounts, all suites); B has three one-time keys and a fallback key.
 *   Session sa: A -> B on B's first one-time key; A sent m0 (B decrypted it, so sb
 *   exists), then m1 and m2, still in flight (pre-key messages). B sent r0 and r1,
 *   in flight to A (normal messages on a new chain). Session A -> B on B's second
 *   one-time key: n0 in flight (starts a new inbound session); and one on B's
 *   fallback key: f0.
 *
 * Each target input restores sa, sb and B's account from the sealed states kept
 * here, so inputs do not affect each other. Not random: never outside fuzz/. */
#ifndef PT_FUZZ_OLM_ENV_H
#define PT_FUZZ_OLM_ENV_H

#include <stdio.h>
#include <stdlib.h>

#include "e2e/olm_int.h"
#include "e2e/pt_olm.h"
#include "fuzz_env.h"

#define FZ_OLM_CHECK(x)                                                                            \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "fuzz_olm: %s:%d: %s\n", __FILE__, __LINE__, #x);                      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const uint8_t FZ_OLM_PICKLE_KEY[32] = "fuzz pickle key: not a secret..";

enum { FZ_M1, FZ_M2, FZ_R0, FZ_R1, FZ_N0, FZ_F0, FZ_OLM_MSGS };

typedef struct fz_olm {
    pt_olm_suite suite;
    pt_buf sa, sb, acct_b, acct_a; /* sealed states */
    pt_buf msg[FZ_OLM_MSGS];       /* the messages in flight */
    pt_olm_msg_type type[FZ_OLM_MSGS];
    pt_olm_bundle bundle; /* B's signed bundle for its third one-time key */
} fz_olm;

static inline void fz_olm_send(pt_olm_session *s, fz_env *e, const char *text, pt_buf *out,
                               pt_olm_msg_type *type)
{
    FZ_OLM_CHECK(pt_olm_encrypt(s, &e->env, (const uint8_t *)text, strlen(text), out, type) == 0);
}

static inline void fz_olm_seal_session(const pt_olm_session *s, pt_buf *out)
{
    fz_env e;
    fz_env_init(&e, 0x5e);
    FZ_OLM_CHECK(pt_olm_session_pickle(s, &e.env, FZ_OLM_PICKLE_KEY, 32, out) == 0);
}

static inline void fz_olm_seal_account(const pt_olm_account *a, pt_buf *out)
{
    fz_env e;
    fz_env_init(&e, 0x5e);
    FZ_OLM_CHECK(pt_olm_account_pickle(a, &e.env, FZ_OLM_PICKLE_KEY, 32, out) == 0);
}

static inline void fz_olm_build(fz_olm *w, pt_olm_suite suite)
{
    memset(w, 0, sizeof *w);
    w->suite = suite;
    FZ_OLM_CHECK(pt_init() == 0);
    fz_env ea, eb;
    fz_env_init(&ea, (uint8_t)(0xa0 + suite));
    fz_env_init(&eb, (uint8_t)(0xb0 + suite));
    pt_olm_account *a = pt_olm_account_new(&ea.env, PT_OLM_SUITES_ALL, NULL);
    pt_olm_account *b = pt_olm_account_new(&eb.env, PT_OLM_SUITES_ALL, NULL);
    FZ_OLM_CHECK(a && b);
    FZ_OLM_CHECK(pt_olm_account_generate_one_time_keys(b, &eb.env, 3) == 0);
    FZ_OLM_CHECK(pt_olm_account_generate_fallback_key(b, &eb.env) == 0);
    pt_olm_key k[3], fk;
    FZ_OLM_CHECK(pt_olm_account_unpublished_keys(b, k, 3) == 3);
    FZ_OLM_CHECK(pt_olm_account_fallback_key(b, &fk) == 0);
    FZ_OLM_CHECK(pt_olm_account_bundle(b, k[2].id, &w->bundle) == 0);
    uint8_t ik[32], ed[32];
    pt_olm_account_identity(b, ik, ed);

    pt_olm_session *sa = pt_olm_session_new_outbound_raw(a, &ea.env, suite, ik, k[0].key, NULL);
    FZ_OLM_CHECK(sa);
    pt_buf m0, pt;
    pt_buf_init(&m0);
    pt_buf_init(&pt);
    pt_olm_msg_type t;
    fz_olm_send(sa, &ea, "m0: the first", &m0, &t);
    pt_olm_session *sb = pt_olm_session_new_inbound(b, NULL, m0.data, m0.len, &pt, NULL);
    FZ_OLM_CHECK(sb);
    for (int i = 0; i < FZ_OLM_MSGS; i++)
        pt_buf_init(&w->msg[i]);
    fz_olm_send(sa, &ea, "m1: in flight", &w->msg[FZ_M1], &w->type[FZ_M1]);
    fz_olm_send(sa, &ea, "m2: in flight too", &w->msg[FZ_M2], &w->type[FZ_M2]);
    fz_olm_send(sb, &eb, "r0: B answers", &w->msg[FZ_R0], &w->type[FZ_R0]);
    fz_olm_send(sb, &eb, "r1: and again", &w->msg[FZ_R1], &w->type[FZ_R1]);
    pt_olm_session *s2 = pt_olm_session_new_outbound_raw(a, &ea.env, suite, ik, k[1].key, NULL);
    pt_olm_session *s3 = pt_olm_session_new_outbound_raw(a, &ea.env, suite, ik, fk.key, NULL);
    FZ_OLM_CHECK(s2 && s3);
    fz_olm_send(s2, &ea, "n0: another session", &w->msg[FZ_N0], &w->type[FZ_N0]);
    fz_olm_send(s3, &ea, "f0: via the fallback key", &w->msg[FZ_F0], &w->type[FZ_F0]);

    pt_buf_init(&w->sa);
    pt_buf_init(&w->sb);
    pt_buf_init(&w->acct_a);
    pt_buf_init(&w->acct_b);
    fz_olm_seal_session(sa, &w->sa);
    fz_olm_seal_session(sb, &w->sb);
    fz_olm_seal_account(a, &w->acct_a);
    fz_olm_seal_account(b, &w->acct_b);
    pt_olm_session_free(sa);
    pt_olm_session_free(sb);
    pt_olm_session_free(s2);
    pt_olm_session_free(s3);
    pt_olm_account_free(a);
    pt_olm_account_free(b);
    pt_buf_free(&m0);
    pt_buf_free(&pt);
}

static inline pt_olm_session *fz_olm_session(const pt_buf *sealed)
{
    pt_olm_session *s =
        pt_olm_session_unpickle(FZ_OLM_PICKLE_KEY, 32, sealed->data, sealed->len, NULL);
    FZ_OLM_CHECK(s);
    return s;
}

static inline pt_olm_account *fz_olm_account(const pt_buf *sealed)
{
    pt_olm_account *a =
        pt_olm_account_unpickle(FZ_OLM_PICKLE_KEY, 32, sealed->data, sealed->len, NULL);
    FZ_OLM_CHECK(a);
    return a;
}

/* The same state gives the same sealed bytes (fixed env): the check that a refused
 * message changed nothing. */
static inline void fz_olm_same_state(const pt_olm_session *s, const pt_buf *before)
{
    pt_buf now;
    pt_buf_init(&now);
    fz_olm_seal_session(s, &now);
    FZ_OLM_CHECK(now.len == before->len && memcmp(now.data, before->data, now.len) == 0);
    pt_buf_free(&now);
}

/* Decode -> encode -> decode of whatever decodes, as a normal and as a pre-key
 * message of the suite: the second decode must succeed and agree, the re-encoding
 * be stable. */
static inline void fz_olm_roundtrips(pt_olm_suite suite, const uint8_t *buf, size_t len)
{
    pt_olm_msg m, m2;
    pt_buf e1, e2;
    pt_buf_init(&e1);
    pt_buf_init(&e2);
    if (pt_olm_msg_decode(&m, suite, buf, len) == 0) {
        FZ_OLM_CHECK(pt_olm_msg_encode(&e1, suite, &m) == 0);
        FZ_OLM_CHECK(pt_olm_msg_decode(&m2, suite, e1.data, e1.len) == 0);
        FZ_OLM_CHECK(m2.counter == m.counter && m2.ciphertext_len == m.ciphertext_len &&
                     memcmp(m2.ratchet_key, m.ratchet_key, 32) == 0 &&
                     memcmp(m2.ciphertext, m.ciphertext, m.ciphertext_len) == 0);
        FZ_OLM_CHECK(pt_olm_msg_encode(&e2, suite, &m2) == 0);
        FZ_OLM_CHECK(e1.len == e2.len && memcmp(e1.data, e2.data, e1.len) == 0);
        FZ_OLM_CHECK(e1.len <= len); /* canonical is shortest */
    }
    pt_buf_reset(&e1);
    pt_buf_reset(&e2);
    pt_olm_prekey p, p2;
    if (pt_olm_prekey_decode(&p, suite, buf, len) == 0) {
        FZ_OLM_CHECK(pt_olm_prekey_suite(buf, len) == (int)suite);
        FZ_OLM_CHECK(pt_olm_prekey_encode(&e1, suite, &p) == 0);
        FZ_OLM_CHECK(pt_olm_prekey_decode(&p2, suite, e1.data, e1.len) == 0);
        FZ_OLM_CHECK(memcmp(p2.one_time_key, p.one_time_key, 32) == 0 &&
                     memcmp(p2.base_key, p.base_key, 32) == 0 &&
                     memcmp(p2.identity_key, p.identity_key, 32) == 0 &&
                     p2.message_len == p.message_len &&
                     memcmp(p2.message, p.message, p.message_len) == 0);
        FZ_OLM_CHECK(pt_olm_prekey_encode(&e2, suite, &p2) == 0);
        FZ_OLM_CHECK(e1.len == e2.len && memcmp(e1.data, e2.data, e1.len) == 0);
    }
    pt_buf_free(&e1);
    pt_buf_free(&e2);
}

/* One decrypt attempt: on failure nothing appended and the state unchanged; on
 * success the same message is refused the second time. */
static inline void fz_olm_try(pt_olm_session *s, pt_olm_msg_type type, const uint8_t *buf,
                              size_t len)
{
    pt_buf before, out;
    pt_buf_init(&before);
    pt_buf_init(&out);
    fz_olm_seal_session(s, &before);
    int rc = pt_olm_decrypt(s, type, buf, len, &out);
    if (rc != 0) {
        FZ_OLM_CHECK(rc < 0 && out.len == 0);
        fz_olm_same_state(s, &before);
    } else {
        FZ_OLM_CHECK(out.len <= PT_OLM_MAX_PLAINTEXT);
        pt_buf_reset(&out);
        FZ_OLM_CHECK(pt_olm_decrypt(s, type, buf, len, &out) != 0 && out.len == 0);
    }
    pt_buf_free(&before);
    pt_buf_free(&out);
}

/* The message targets: data[0] picks where the rest goes.
 *   0: a normal message to sb      1: a pre-key message to sb
 *   2: a pre-key message starting a new session on B's account (which must be
 *      left unchanged when it fails)
 *   3: a normal message to sa      */
static inline int fz_olm_message_target(fz_olm *w, const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t *msg = data + 1;
    size_t len = size - 1;
    fz_olm_roundtrips(w->suite, msg, len);
    switch (data[0] & 3) {
    case 0:
    case 1: {
        pt_olm_session *sb = fz_olm_session(&w->sb);
        fz_olm_try(sb, (data[0] & 3) ? PT_OLM_MSG_PREKEY : PT_OLM_MSG_NORMAL, msg, len);
        pt_olm_session_free(sb);
        break;
    }
    case 2: {
        pt_olm_account *b = fz_olm_account(&w->acct_b);
        pt_buf out;
        pt_buf_init(&out);
        pt_err err = 0;
        pt_olm_session *s = pt_olm_session_new_inbound(b, NULL, msg, len, &out, &err);
        if (s) {
            FZ_OLM_CHECK(err == 0 && (int)pt_olm_session_suite(s) == pt_olm_prekey_suite(msg, len));
            fz_olm_try(s, PT_OLM_MSG_PREKEY, msg, len); /* now a replay */
            pt_olm_session_free(s);
        } else {
            FZ_OLM_CHECK(err < 0 && out.len == 0);
            pt_buf same;
            pt_buf_init(&same);
            fz_olm_seal_account(b, &same);
            FZ_OLM_CHECK(same.len == w->acct_b.len &&
                         memcmp(same.data, w->acct_b.data, same.len) == 0);
            pt_buf_free(&same);
        }
        pt_buf_free(&out);
        pt_olm_account_free(b);
        break;
    }
    default: {
        pt_olm_session *sa = fz_olm_session(&w->sa);
        fz_olm_try(sa, PT_OLM_MSG_NORMAL, msg, len);
        pt_olm_session_free(sa);
        break;
    }
    }
    return 0;
}

#endif /* PT_FUZZ_OLM_ENV_H */
