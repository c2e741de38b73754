/*
 * Sessions: the triple-DH setup of libolm's session.cpp, pre-key wrapping until
 * the initiator hears back, suite choice, session ids and the sealed session
 * state. The ratchet itself is in olm_ratchet.c.
 *
 *   S = ECDH(I_A, E_B) ‖ ECDH(B_A, I_B) ‖ ECDH(B_A, E_B)
 *
 * with I the identity keys, B_A the initiator's base key and E_B the responder's
 * one-time (or fallback) key.
 */
#include "e2e/olm_int.h"

#define SECRET_LEN (3 * OLM_KEY)

static void set_err(pt_err *err, int rc)
{
    if (err) *err = (pt_err)rc;
}

static pt_olm_session *session_alloc(uint8_t suite)
{
    pt_olm_session *s = pt_secure_alloc(sizeof *s);
    if (!s) return NULL;
    memset(s, 0, sizeof *s);
    s->suite = suite;
    if (suite == PT_OLM_SUITE_OLM_V1 && !(s->cbc = pt_aes_cbc_new())) {
        pt_secure_free(s);
        return NULL;
    }
    return s;
}

void pt_olm_session_free(pt_olm_session *s)
{
    if (!s) return;
    olm_ratchet_clear(s);
    pt_aes_cbc_free(s->cbc);
    pt_secure_free(s); /* wipes */
}

static int dh3(uint8_t secret[static SECRET_LEN], const uint8_t *a_sk, const uint8_t *a_pk,
               const uint8_t *b_sk, const uint8_t *b_pk, const uint8_t *c_sk, const uint8_t *c_pk)
{
    int rc = pt_x25519(secret, a_sk, a_pk);
    if (rc == 0) rc = pt_x25519(secret + OLM_KEY, b_sk, b_pk);
    if (rc == 0) rc = pt_x25519(secret + 2 * OLM_KEY, c_sk, c_pk);
    return rc;
}

/* ---- outbound ------------------------------------------------------------------------------ */

pt_olm_session *pt_olm_session_new_outbound_raw(const pt_olm_account *a, const pt_env *env,
                                                pt_olm_suite suite,
                                                const uint8_t their_identity[static PT_OLM_KEY_LEN],
                                                const uint8_t their_one_time[static PT_OLM_KEY_LEN],
                                                pt_err *err)
{
    if (!olm_suite_get(suite)) {
        set_err(err, PT_ERR_INVAL);
        return NULL;
    }
    pt_olm_session *s = session_alloc((uint8_t)suite);
    if (!s) {
        set_err(err, PT_ERR_NOMEM);
        return NULL;
    }
    /* libolm's order: 32 bytes of base key, then 32 of the first ratchet key */
    uint8_t rnd[2 * OLM_KEY], secret[SECRET_LEN];
    pt_env_random(env, rnd, sizeof rnd);
    int rc = pt_x25519_base(s->alice_base, rnd);
    if (rc == 0)
        rc = dh3(secret, olm_account_curve_sk(a), their_one_time, rnd, their_identity, rnd,
                 their_one_time);
    if (rc == 0) rc = olm_ratchet_init_alice(s, secret, sizeof secret, rnd + OLM_KEY);
    pt_wipe(rnd, sizeof rnd);
    pt_wipe(secret, sizeof secret);
    if (rc != 0) {
        pt_olm_session_free(s);
        set_err(err, rc);
        return NULL;
    }
    s->outbound = true;
    memcpy(s->alice_identity, olm_account_curve_pk(a), OLM_KEY);
    memcpy(s->bob_one_time, their_one_time, OLM_KEY);
    memcpy(s->their_identity, their_identity, OLM_KEY);
    set_err(err, 0);
    return s;
}

pt_olm_session *pt_olm_session_new_outbound(const pt_olm_account *a, const pt_env *env,
                                            const pt_olm_bundle *bundle, pt_err *err)
{
    int rc = pt_olm_bundle_verify(bundle);
    if (rc != 0) {
        set_err(err, rc);
        return NULL;
    }
    uint8_t common = bundle->suites & pt_olm_account_suites(a);
    pt_olm_suite suite;
    if (common & PT_OLM_SUITE_PT_V1)
        suite = PT_OLM_SUITE_PT_V1;
    else if (common & PT_OLM_SUITE_OLM_V1)
        suite = PT_OLM_SUITE_OLM_V1;
    else {
        set_err(err, PT_ERR_NO_SUITE);
        return NULL;
    }
    return pt_olm_session_new_outbound_raw(a, env, suite, bundle->identity_key,
                                           bundle->one_time_key, err);
}

/* ---- inbound ------------------------------------------------------------------------------- */

pt_olm_session *pt_olm_session_new_inbound(pt_olm_account *a, const uint8_t *their_identity,
                                           const uint8_t *msg, size_t len, pt_buf *out, pt_err *err)
{
    pt_olm_prekey p;
    pt_olm_msg m;
    pt_olm_session *s = NULL;
    uint8_t secret[SECRET_LEN];
    bool is_fallback = false;
    int rc = pt_olm_prekey_suite(msg, len);
    if (rc < 0) goto out;
    pt_olm_suite suite = (pt_olm_suite)rc;
    rc = 0;
    if (!(pt_olm_account_suites(a) & suite)) {
        rc = PT_ERR_NO_SUITE;
        goto out;
    }
    if ((rc = pt_olm_prekey_decode(&p, suite, msg, len)) != 0) goto out;
    if ((rc = pt_olm_msg_decode(&m, suite, p.message, p.message_len)) != 0) goto out;
    if (their_identity && pt_ct_memcmp(their_identity, p.identity_key, OLM_KEY) != 0) {
        rc = PT_ERR_KEY_MISMATCH;
        goto out;
    }
    const uint8_t *otk_sk = olm_account_lookup(a, p.one_time_key, &is_fallback);
    if (!otk_sk) {
        rc = PT_ERR_NOT_FOUND;
        goto out;
    }
    if (!(s = session_alloc((uint8_t)suite))) {
        rc = PT_ERR_NOMEM;
        goto out;
    }
    rc = dh3(secret, otk_sk, p.identity_key, olm_account_curve_sk(a), p.base_key, otk_sk,
             p.base_key);
    if (rc == 0) rc = olm_ratchet_init_bob(s, secret, sizeof secret, m.ratchet_key);
    if (rc != 0) goto out;
    memcpy(s->alice_identity, p.identity_key, OLM_KEY);
    memcpy(s->alice_base, p.base_key, OLM_KEY);
    memcpy(s->bob_one_time, p.one_time_key, OLM_KEY);
    memcpy(s->their_identity, p.identity_key, OLM_KEY);
    rc = pt_olm_decrypt(s, PT_OLM_MSG_PREKEY, msg, len, out);
    if (rc == 0 && !is_fallback) olm_account_remove_key(a, p.one_time_key);
out:
    pt_wipe(secret, sizeof secret);
    if (rc != 0) {
        pt_olm_session_free(s);
        s = NULL;
    }
    set_err(err, rc);
    return s;
}

/* ---- queries ------------------------------------------------------------------------------- */

bool pt_olm_session_matches_inbound(const pt_olm_session *s, const uint8_t *msg, size_t len)
{
    pt_olm_prekey p;
    if (s->outbound || pt_olm_prekey_decode(&p, (pt_olm_suite)s->suite, msg, len) != 0)
        return false;
    return pt_ct_memcmp(p.identity_key, s->alice_identity, OLM_KEY) == 0 &&
           pt_ct_memcmp(p.base_key, s->alice_base, OLM_KEY) == 0 &&
           pt_ct_memcmp(p.one_time_key, s->bob_one_time, OLM_KEY) == 0;
}

void pt_olm_session_id(const pt_olm_session *s, uint8_t id[static PT_OLM_SESSION_ID_LEN])
{
    uint8_t in[3 * OLM_KEY];
    memcpy(in, s->alice_identity, OLM_KEY);
    memcpy(in + OLM_KEY, s->alice_base, OLM_KEY);
    memcpy(in + 2 * OLM_KEY, s->bob_one_time, OLM_KEY);
    (void)pt_hash(PT_HASH_SHA256, id, in, sizeof in);
}

pt_olm_suite pt_olm_session_suite(const pt_olm_session *s)
{
    return (pt_olm_suite)s->suite;
}
bool pt_olm_session_has_received(const pt_olm_session *s)
{
    return s->received;
}

pt_olm_msg_type pt_olm_session_next_type(const pt_olm_session *s)
{
    return s->outbound && !s->received ? PT_OLM_MSG_PREKEY : PT_OLM_MSG_NORMAL;
}

void pt_olm_session_their_identity(const pt_olm_session *s, uint8_t key[static PT_OLM_KEY_LEN])
{
    memcpy(key, s->their_identity, OLM_KEY);
}

/* ---- messages ------------------------------------------------------------------------------ */

int pt_olm_encrypt(pt_olm_session *s, const pt_env *env, const uint8_t *pt, size_t len, pt_buf *out,
                   pt_olm_msg_type *type)
{
    if (len > PT_OLM_MAX_PLAINTEXT) return PT_ERR_TOO_BIG;
    pt_olm_msg_type t = pt_olm_session_next_type(s);
    int rc = olm_ratchet_encrypt(s, env, pt, len, out, t == PT_OLM_MSG_PREKEY);
    if (rc == 0) *type = t;
    return rc;
}

int pt_olm_decrypt(pt_olm_session *s, pt_olm_msg_type type, const uint8_t *msg, size_t len,
                   pt_buf *out)
{
    pt_olm_suite suite = (pt_olm_suite)s->suite;
    const uint8_t *inner = msg;
    size_t inner_len = len;
    int rc;
    if (type == PT_OLM_MSG_PREKEY) {
        /* Pre-key messages only flow from the initiator, and only for this session. */
        pt_olm_prekey p;
        if ((rc = pt_olm_prekey_decode(&p, suite, msg, len)) != 0) return rc;
        if (s->outbound || !pt_olm_session_matches_inbound(s, msg, len)) return PT_ERR_PROTO;
        inner = p.message;
        inner_len = p.message_len;
    } else if (type != PT_OLM_MSG_NORMAL) {
        return PT_ERR_INVAL;
    }
    pt_olm_msg m;
    if ((rc = pt_olm_msg_decode(&m, suite, inner, inner_len)) != 0) return rc;
    /* pt.v1 authenticates the pre-key header together with the inner header */
    rc = olm_ratchet_decrypt(s, &m, msg, (size_t)(inner - msg) + m.authed_len, out);
    if (rc == 0) s->received = true;
    return rc;
}

/* ---- sealed serialisation ---------------------------------------------------------------- */

#define F_OUTBOUND 0x01
#define F_RECEIVED 0x02
#define F_SENDER 0x04

static void put_chain(pt_buf *b, int *rc, const olm_chain *c)
{
    olm_put(b, rc, c->ratchet_key, OLM_KEY);
    olm_put(b, rc, c->key, OLM_KEY);
    olm_put_u32(b, rc, c->index);
}

static void get_chain(olm_reader *r, olm_chain *c)
{
    olm_get(r, c->ratchet_key, OLM_KEY);
    olm_get(r, c->key, OLM_KEY);
    c->index = olm_get_u32(r);
}

int pt_olm_session_pickle(const pt_olm_session *s, const pt_env *env, const uint8_t *key,
                          size_t keylen, pt_buf *out)
{
    pt_buf body;
    pt_buf_init(&body);
    /* sized up front: no realloc leaves a copy of the state behind */
    int rc = pt_buf_reserve(&body, 512 + sizeof(olm_chain) * PT_OLM_MAX_RECEIVER_CHAINS +
                                       (size_t)s->n_skipped * sizeof(olm_skipped));
    uint8_t flags = (s->outbound ? F_OUTBOUND : 0) | (s->received ? F_RECEIVED : 0) |
                    (s->has_sender ? F_SENDER : 0);
    olm_put_u8(&body, &rc, s->suite);
    olm_put_u8(&body, &rc, flags);
    olm_put(&body, &rc, s->alice_identity, OLM_KEY);
    olm_put(&body, &rc, s->alice_base, OLM_KEY);
    olm_put(&body, &rc, s->bob_one_time, OLM_KEY);
    olm_put(&body, &rc, s->their_identity, OLM_KEY);
    olm_put(&body, &rc, s->root, OLM_KEY);
    if (s->has_sender) {
        olm_put(&body, &rc, s->sender_sk, OLM_KEY);
        put_chain(&body, &rc, &s->sender);
    }
    olm_put_u8(&body, &rc, (uint8_t)s->n_recv);
    for (size_t i = 0; i < s->n_recv; i++)
        put_chain(&body, &rc, &s->recv[i]);
    olm_put_u32(&body, &rc, s->n_skipped);
    for (size_t i = 0; i < s->n_skipped; i++) {
        olm_put(&body, &rc, s->skipped[i].ratchet_key, OLM_KEY);
        olm_put(&body, &rc, s->skipped[i].key, OLM_KEY);
        olm_put_u32(&body, &rc, s->skipped[i].index);
    }
    if (rc == 0) rc = olm_pickle_seal(out, env, OLM_PICKLE_SESSION, key, keylen, &body);
    pt_buf_free(&body);
    return rc;
}

pt_olm_session *pt_olm_session_unpickle(const uint8_t *key, size_t keylen, const uint8_t *in,
                                        size_t len, pt_err *err)
{
    pt_buf body;
    pt_buf_init(&body);
    pt_olm_session *s = NULL;
    int rc = pt_buf_reserve(&body, len);
    if (rc == 0) rc = olm_pickle_open(&body, OLM_PICKLE_SESSION, key, keylen, in, len);
    if (rc != 0) goto out;
    olm_reader r = {body.data, body.len, false};
    uint8_t suite = olm_get_u8(&r), flags = olm_get_u8(&r);
    if (!olm_suite_get(suite) || (flags & ~(F_OUTBOUND | F_RECEIVED | F_SENDER))) {
        rc = PT_ERR_DECODE;
        goto out;
    }
    if (!(s = session_alloc(suite))) {
        rc = PT_ERR_NOMEM;
        goto out;
    }
    s->outbound = flags & F_OUTBOUND;
    s->received = flags & F_RECEIVED;
    s->has_sender = flags & F_SENDER;
    olm_get(&r, s->alice_identity, OLM_KEY);
    olm_get(&r, s->alice_base, OLM_KEY);
    olm_get(&r, s->bob_one_time, OLM_KEY);
    olm_get(&r, s->their_identity, OLM_KEY);
    olm_get(&r, s->root, OLM_KEY);
    if (s->has_sender) {
        olm_get(&r, s->sender_sk, OLM_KEY);
        get_chain(&r, &s->sender);
    }
    s->n_recv = olm_get_u8(&r);
    if (s->n_recv > PT_OLM_MAX_RECEIVER_CHAINS || (s->n_recv == 0 && !s->has_sender)) r.bad = true;
    for (size_t i = 0; i < s->n_recv && !r.bad; i++)
        get_chain(&r, &s->recv[i]);
    uint32_t n = olm_get_u32(&r);
    if (n > PT_OLM_MAX_SKIPPED || (size_t)n * (2 * OLM_KEY + 4) != r.left) r.bad = true;
    if (!r.bad && n > 0 && (rc = olm_skipped_reserve(s, n)) != 0) goto out;
    for (size_t i = 0; i < n && !r.bad; i++) {
        olm_get(&r, s->skipped[i].ratchet_key, OLM_KEY);
        olm_get(&r, s->skipped[i].key, OLM_KEY);
        s->skipped[i].index = olm_get_u32(&r);
        s->n_skipped++;
    }
    if (r.bad || r.left != 0) rc = PT_ERR_DECODE;
out:
    pt_buf_free(&body);
    if (rc != 0) {
        pt_olm_session_free(s);
        s = NULL;
    }
    set_err(err, rc);
    return s;
}
