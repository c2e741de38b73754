/*
 * The Double Ratchet as libolm runs it (src/ratchet.cpp), for both suites:
 *
 *   R0 ‖ C(0,0)   = HKDF(salt = none, S = triple DH, info = root label, 64)
 *   R(i) ‖ C(i,0) = HKDF(salt = R(i-1), ECDH(T(i-1), T(i)), info = ratchet label, 64)
 *   M(i,j)   = HMAC-SHA-256(C(i,j), 0x01)      C(i,j+1) = HMAC-SHA-256(C(i,j), 0x02)
 *   olm.v1:  AES key ‖ MAC key ‖ IV = HKDF(salt = none, M(i,j), "OLM_KEYS", 80)
 *   pt.v1:   key ‖ nonce          = HKDF-Expand(PRK = M(i,j), "PT1_KEYS", 56)
 *
 * (M is an HMAC output, already a uniform key: pt.v1 skips the Extract step.)
 *
 * A sender makes a new ratchet key T the first time it sends after receiving on
 * a new chain. Decryption works on copies and commits only once the message
 * verifies, so a forged or replayed message leaves the state as it was. Message
 * keys skipped on the way to a later message are kept (bounded per chain and per
 * session, the oldest dropped first) and deleted when used.
 */
#include "e2e/olm_int.h"

static const uint8_t OLM_ROOT[] = "OLM_ROOT", OLM_RATCHET[] = "OLM_RATCHET",
                     OLM_KEYS[] = "OLM_KEYS";
static const uint8_t PT1_ROOT[] = "PT1_ROOT", PT1_RATCHET[] = "PT1_RATCHET",
                     PT1_KEYS[] = "PT1_KEYS";

#define LABEL(s) (s), (sizeof(s) - 1)
static const olm_suite_params suite_olm_v1 = {LABEL(OLM_ROOT), LABEL(OLM_RATCHET), LABEL(OLM_KEYS)};
static const olm_suite_params suite_pt_v1 = {LABEL(PT1_ROOT), LABEL(PT1_RATCHET), LABEL(PT1_KEYS)};

const olm_suite_params *olm_suite_get(unsigned suite)
{
    switch (suite) {
    case PT_OLM_SUITE_OLM_V1:
        return &suite_olm_v1;
    case PT_OLM_SUITE_PT_V1:
        return &suite_pt_v1;
    }
    return NULL;
}

/* ---- key derivation ------------------------------------------------------------------ */

/* M(i,j) and C(i,j+1) from C(i,j); next may equal ck. */
static void chain_step(const uint8_t ck[static OLM_KEY], uint8_t mk[static OLM_KEY],
                       uint8_t next[static OLM_KEY])
{
    static const uint8_t message_seed = 0x01, chain_seed = 0x02;
    const uint8_t *msgs[2] = {&message_seed, &chain_seed};
    const size_t lens[2] = {1, 1};
    uint8_t out[2][PT_SHA256_LEN];
    (void)pt_hmac_sha256_multi(out, ck, OLM_KEY, msgs, lens, 2);
    memcpy(mk, out[0], OLM_KEY);
    memcpy(next, out[1], OLM_KEY);
    pt_wipe(out, sizeof out);
}

/* R(i), C(i,0) from R(i-1) and a DH of ratchet keys. */
static int root_step(const olm_suite_params *sp, const uint8_t root[static OLM_KEY],
                     const uint8_t our_sk[static OLM_KEY], const uint8_t their_pk[static OLM_KEY],
                     uint8_t new_root[static OLM_KEY], uint8_t new_ck[static OLM_KEY])
{
    uint8_t dh[OLM_KEY], d[2 * OLM_KEY];
    int rc = pt_x25519(dh, our_sk, their_pk);
    if (rc == 0)
        rc = pt_hkdf_sha256(d, sizeof d, root, OLM_KEY, dh, sizeof dh, sp->ratchet_info,
                            sp->ratchet_info_len);
    if (rc == 0) {
        memcpy(new_root, d, OLM_KEY);
        memcpy(new_ck, d + OLM_KEY, OLM_KEY);
    }
    pt_wipe(dh, sizeof dh);
    pt_wipe(d, sizeof d);
    return rc;
}

static int init_root(pt_olm_session *s, const uint8_t *secret, size_t len,
                     uint8_t ck[static OLM_KEY])
{
    const olm_suite_params *sp = olm_suite_get(s->suite);
    uint8_t d[2 * OLM_KEY];
    int rc = pt_hkdf_sha256(d, sizeof d, NULL, 0, secret, len, sp->root_info, sp->root_info_len);
    if (rc == 0) {
        memcpy(s->root, d, OLM_KEY);
        memcpy(ck, d + OLM_KEY, OLM_KEY);
    }
    pt_wipe(d, sizeof d);
    return rc;
}

int olm_ratchet_init_alice(pt_olm_session *s, const uint8_t *secret, size_t len,
                           const uint8_t ratchet_sk[static OLM_KEY])
{
    int rc = init_root(s, secret, len, s->sender.key);
    if (rc == 0) rc = pt_x25519_base(s->sender.ratchet_key, ratchet_sk);
    if (rc != 0) return rc;
    memcpy(s->sender_sk, ratchet_sk, OLM_KEY);
    s->sender.index = 0;
    s->has_sender = true;
    return 0;
}

int olm_ratchet_init_bob(pt_olm_session *s, const uint8_t *secret, size_t len,
                         const uint8_t their_ratchet[static OLM_KEY])
{
    int rc = init_root(s, secret, len, s->recv[0].key);
    if (rc != 0) return rc;
    memcpy(s->recv[0].ratchet_key, their_ratchet, OLM_KEY);
    s->recv[0].index = 0;
    s->n_recv = 1;
    return 0;
}

/* ---- the two ciphers --------------------------------------------------------------------- */

#define V1_KEYS_LEN (32 + 32 + PT_AES_BLOCK) /* AES key, MAC key, IV */
#define PT1_KEYS_LEN (PT_AEAD_KEY_LEN + PT_XCHACHA_NONCE_LEN)

/* olm.v1: out holds the message header from msg_start; appends the CBC ciphertext
 * and the MAC of everything from msg_start. */
static int v1_seal(const pt_olm_session *s, const uint8_t mk[static OLM_KEY], pt_buf *out,
                   size_t msg_start, const uint8_t *pt, size_t len)
{
    const olm_suite_params *sp = olm_suite_get(s->suite);
    uint8_t k[V1_KEYS_LEN], mac[1][PT_SHA256_LEN];
    int rc = pt_hkdf_sha256(k, sizeof k, NULL, 0, mk, OLM_KEY, sp->keys_info, sp->keys_info_len);
    if (rc == 0) rc = pt_aes_cbc_encrypt(s->cbc, out, pt, len, k, k + 64);
    if (rc == 0) {
        const uint8_t *msgs[1] = {out->data + msg_start};
        size_t lens[1] = {out->len - msg_start};
        rc = pt_hmac_sha256_multi(mac, k + 32, 32, msgs, lens, 1);
    }
    if (rc == 0) rc = pt_buf_append(out, mac[0], PT_OLM_V1_MAC_LEN);
    pt_wipe(k, sizeof k);
    pt_wipe(mac, sizeof mac);
    return rc;
}

static int v1_open(const pt_olm_session *s, const uint8_t mk[static OLM_KEY], const pt_olm_msg *m,
                   pt_buf *out)
{
    const olm_suite_params *sp = olm_suite_get(s->suite);
    uint8_t k[V1_KEYS_LEN], mac[1][PT_SHA256_LEN];
    int rc = pt_hkdf_sha256(k, sizeof k, NULL, 0, mk, OLM_KEY, sp->keys_info, sp->keys_info_len);
    if (rc == 0) {
        const uint8_t *msgs[1] = {m->mac - m->authed_len};
        size_t lens[1] = {m->authed_len};
        rc = pt_hmac_sha256_multi(mac, k + 32, 32, msgs, lens, 1);
    }
    if (rc == 0 && pt_ct_memcmp(mac[0], m->mac, PT_OLM_V1_MAC_LEN) != 0) rc = PT_ERR_AUTH;
    /* A bad padding under a good MAC is a broken sender; the state stays as it is. */
    if (rc == 0) rc = pt_aes_cbc_decrypt(s->cbc, out, m->ciphertext, m->ciphertext_len, k, k + 64);
    pt_wipe(k, sizeof k);
    pt_wipe(mac, sizeof mac);
    return rc;
}

/* pt.v1: out holds the authenticated header bytes from ad_start; appends the
 * ciphertext and tag. */
static int pt1_seal(const olm_suite_params *sp, const uint8_t mk[static OLM_KEY], pt_buf *out,
                    size_t ad_start, const uint8_t *pt, size_t len)
{
    uint8_t k[PT1_KEYS_LEN];
    size_t adlen = out->len - ad_start;
    int rc = pt_hkdf_sha256_expand(k, sizeof k, mk, OLM_KEY, sp->keys_info, sp->keys_info_len);
    uint8_t *dst = rc == 0 ? pt_buf_extend(out, len + PT_OLM_PT1_TAG_LEN) : NULL;
    if (rc == 0 && !dst) rc = PT_ERR_NOMEM;
    if (rc == 0) {
        rc = pt_xchacha_seal(dst, pt, len, out->data + ad_start, adlen, k + PT_AEAD_KEY_LEN, k);
        if (rc != 0) out->len -= len + PT_OLM_PT1_TAG_LEN;
    }
    pt_wipe(k, sizeof k);
    return rc;
}

static int pt1_open(const olm_suite_params *sp, const uint8_t mk[static OLM_KEY],
                    const pt_olm_msg *m, const uint8_t *ad, size_t adlen, pt_buf *out)
{
    uint8_t k[PT1_KEYS_LEN];
    size_t n = m->ciphertext_len - PT_OLM_PT1_TAG_LEN;
    int rc = pt_hkdf_sha256_expand(k, sizeof k, mk, OLM_KEY, sp->keys_info, sp->keys_info_len);
    uint8_t *dst = rc == 0 ? pt_buf_extend(out, n) : NULL;
    if (rc == 0 && !dst) rc = PT_ERR_NOMEM;
    if (rc == 0) {
        rc = pt_xchacha_open(dst, m->ciphertext, m->ciphertext_len, ad, adlen, k + PT_AEAD_KEY_LEN,
                             k);
        if (rc != 0) out->len -= n;
    }
    pt_wipe(k, sizeof k);
    return rc;
}

static int open_with(const pt_olm_session *s, const uint8_t mk[static OLM_KEY], const pt_olm_msg *m,
                     const uint8_t *ad, size_t adlen, pt_buf *out)
{
    const olm_suite_params *sp = olm_suite_get(s->suite);
    if (s->suite == PT_OLM_SUITE_PT_V1) return pt1_open(sp, mk, m, ad, adlen, out);
    return v1_open(s, mk, m, out);
}

/* ---- encryption ------------------------------------------------------------------------ */

int olm_ratchet_encrypt(pt_olm_session *s, const pt_env *env, const uint8_t *pt, size_t len,
                        pt_buf *out, bool prekey)
{
    const olm_suite_params *sp = olm_suite_get(s->suite);
    uint8_t sk[OLM_KEY], root[OLM_KEY], mk[OLM_KEY], next[OLM_KEY];
    olm_chain ch;
    bool fresh = !s->has_sender;
    size_t start = out->len;
    int rc = 0;

    if (fresh) {
        /* the direction changed: a new ratchet key and a DH step */
        if (s->n_recv == 0) return PT_ERR_STATE;
        pt_env_random(env, sk, sizeof sk);
        ch.index = 0;
        rc = pt_x25519_base(ch.ratchet_key, sk);
        if (rc == 0) rc = root_step(sp, s->root, sk, s->recv[0].ratchet_key, root, ch.key);
        if (rc != 0) goto out;
    } else {
        ch = s->sender;
    }
    if (ch.index == UINT32_MAX) {
        rc = PT_ERR_TOO_BIG;
        goto out;
    }
    chain_step(ch.key, mk, next);

    if (s->suite == PT_OLM_SUITE_OLM_V1) {
        size_t ctlen = (len / PT_AES_BLOCK + 1) * PT_AES_BLOCK;
        size_t hlen = olm_v1_header_len(ch.index, ctlen);
        size_t inner = hlen + ctlen + PT_OLM_V1_MAC_LEN;
        size_t plen = prekey ? olm_prekey_header_len(PT_OLM_SUITE_OLM_V1, inner) : 0;
        uint8_t *p =
            pt_buf_reserve(out, plen + inner) == 0 ? pt_buf_extend(out, plen + hlen) : NULL;
        if (!p) {
            rc = PT_ERR_NOMEM;
            goto out;
        }
        if (prekey)
            olm_prekey_header_write(p, PT_OLM_SUITE_OLM_V1, s->bob_one_time, s->alice_base,
                                    s->alice_identity, inner);
        olm_v1_header_write(p + plen, ch.ratchet_key, ch.index, ctlen);
        rc = v1_seal(s, mk, out, start + plen, pt, len);
    } else {
        size_t plen = prekey ? PT_OLM_PT1_PREKEY_HEADER_LEN : 0;
        size_t total = plen + PT_OLM_PT1_HEADER_LEN + len + PT_OLM_PT1_TAG_LEN;
        uint8_t *p = pt_buf_reserve(out, total) == 0
                         ? pt_buf_extend(out, plen + PT_OLM_PT1_HEADER_LEN)
                         : NULL;
        if (!p) {
            rc = PT_ERR_NOMEM;
            goto out;
        }
        if (prekey)
            olm_prekey_header_write(p, PT_OLM_SUITE_PT_V1, s->bob_one_time, s->alice_base,
                                    s->alice_identity, 0);
        p += plen;
        p[0] = PT_OLM_PT1_NORMAL;
        memcpy(p + 1, ch.ratchet_key, OLM_KEY);
        pt_put_u32le(p + 1 + OLM_KEY, ch.index);
        rc = pt1_seal(sp, mk, out, start, pt, len);
    }
    if (rc != 0) goto out;

    if (fresh) {
        memcpy(s->sender_sk, sk, OLM_KEY);
        memcpy(s->root, root, OLM_KEY);
        s->has_sender = true;
    }
    s->sender = ch;
    memcpy(s->sender.key, next, OLM_KEY);
    s->sender.index = ch.index + 1;
out:
    if (rc != 0) {
        if (out->len > start) pt_wipe(out->data + start, out->len - start);
        out->len = start;
    }
    pt_wipe(sk, sizeof sk);
    pt_wipe(root, sizeof root);
    pt_wipe(mk, sizeof mk);
    pt_wipe(next, sizeof next);
    pt_wipe(&ch, sizeof ch);
    return rc;
}

/* ---- skipped message keys ----------------------------------------------------------------- */

int olm_skipped_reserve(pt_olm_session *s, size_t n)
{
    if (n <= s->cap_skipped) return 0;
    size_t cap = s->cap_skipped ? s->cap_skipped : 16;
    while (cap < n)
        cap *= 2;
    olm_skipped *p = pt_secure_alloc(cap * sizeof *p);
    if (!p) return PT_ERR_NOMEM;
    if (s->n_skipped) memcpy(p, s->skipped, s->n_skipped * sizeof *p);
    pt_secure_free(s->skipped); /* wipes */
    s->skipped = p;
    s->cap_skipped = (uint32_t)cap;
    return 0;
}

void olm_ratchet_clear(pt_olm_session *s)
{
    pt_secure_free(s->skipped);
    s->skipped = NULL;
    s->n_skipped = s->cap_skipped = 0;
}

static void skipped_remove(pt_olm_session *s, size_t i)
{
    memmove(&s->skipped[i], &s->skipped[i + 1], (s->n_skipped - i - 1) * sizeof *s->skipped);
    s->n_skipped--;
    pt_wipe(&s->skipped[s->n_skipped], sizeof *s->skipped);
}

/* Drops the oldest keys of the chain beyond PT_OLM_MAX_SKIP_PER_CHAIN, then the
 * oldest of the session beyond PT_OLM_MAX_SKIPPED, in one compaction pass. */
static void skipped_enforce(pt_olm_session *s, const uint8_t rk[static OLM_KEY])
{
    size_t mine = 0, n = s->n_skipped;
    for (size_t i = 0; i < n; i++)
        if (memcmp(s->skipped[i].ratchet_key, rk, OLM_KEY) == 0) mine++;
    size_t drop_mine = mine > PT_OLM_MAX_SKIP_PER_CHAIN ? mine - PT_OLM_MAX_SKIP_PER_CHAIN : 0;
    size_t left = n - drop_mine;
    size_t drop_old = left > PT_OLM_MAX_SKIPPED ? left - PT_OLM_MAX_SKIPPED : 0;
    if (drop_mine == 0 && drop_old == 0) return;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        bool is_mine = memcmp(s->skipped[i].ratchet_key, rk, OLM_KEY) == 0;
        if (is_mine && drop_mine) {
            drop_mine--;
            continue;
        }
        if (drop_old) {
            drop_old--;
            continue;
        }
        if (w != i) s->skipped[w] = s->skipped[i];
        w++;
    }
    pt_wipe(&s->skipped[w], (n - w) * sizeof *s->skipped);
    s->n_skipped = (uint32_t)w;
}

/* ---- decryption --------------------------------------------------------------------------- */

int olm_ratchet_decrypt(pt_olm_session *s, const pt_olm_msg *m, const uint8_t *ad, size_t adlen,
                        pt_buf *out)
{
    const olm_suite_params *sp = olm_suite_get(s->suite);
    uint8_t new_root[OLM_KEY], mk[OLM_KEY], next[OLM_KEY];
    olm_chain ch;
    size_t gap = 0, base = s->n_skipped;
    int rc;

    olm_chain *found = NULL;
    for (size_t i = 0; i < s->n_recv && !found; i++)
        if (memcmp(s->recv[i].ratchet_key, m->ratchet_key, OLM_KEY) == 0) found = &s->recv[i];

    /* A key kept for this message: used once, then gone. Kept keys lie below their
     * chain's index, or belong to a chain no longer among the five. */
    for (size_t i = 0; (!found || m->counter < found->index) && i < s->n_skipped; i++) {
        olm_skipped *k = &s->skipped[i];
        if (k->index == m->counter && memcmp(k->ratchet_key, m->ratchet_key, OLM_KEY) == 0) {
            rc = open_with(s, k->key, m, ad, adlen, out);
            if (rc == 0) skipped_remove(s, i);
            return rc;
        }
    }
    if (m->counter == UINT32_MAX) return PT_ERR_TOO_BIG;
    if (found) {
        /* its key was used (a duplicate or replay) or dropped */
        if (m->counter < found->index) return PT_ERR_AUTH;
        if (m->counter - found->index > PT_OLM_MAX_SKIP_PER_CHAIN) return PT_ERR_TOO_BIG;
        ch = *found;
    } else {
        /* A new chain of theirs answers our current ratchet key; they cannot have
         * moved on without hearing from us. */
        if (!s->has_sender) return PT_ERR_PROTO;
        if (m->counter > PT_OLM_MAX_SKIP_PER_CHAIN) return PT_ERR_TOO_BIG;
        memcpy(ch.ratchet_key, m->ratchet_key, OLM_KEY);
        ch.index = 0;
        rc = root_step(sp, s->root, s->sender_sk, m->ratchet_key, new_root, ch.key);
        if (rc != 0) goto out;
    }

    rc = olm_skipped_reserve(s, base + (m->counter - ch.index));
    if (rc != 0) goto out;
    gap = m->counter - ch.index; /* tentative entries past n_skipped, wiped on failure */
    for (size_t i = 0; i < gap; i++) {
        olm_skipped *k = &s->skipped[base + i];
        memcpy(k->ratchet_key, ch.ratchet_key, OLM_KEY);
        k->index = ch.index++;
        chain_step(ch.key, k->key, ch.key);
    }
    chain_step(ch.key, mk, next);
    rc = open_with(s, mk, m, ad, adlen, out);
    if (rc != 0) goto out;

    /* verified: commit */
    if (!found) {
        if (s->n_recv == PT_OLM_MAX_RECEIVER_CHAINS) s->n_recv--;
        memmove(&s->recv[1], &s->recv[0], s->n_recv * sizeof s->recv[0]);
        pt_wipe(&s->recv[s->n_recv + 1],
                (PT_OLM_MAX_RECEIVER_CHAINS - s->n_recv - 1) * sizeof s->recv[0]);
        s->n_recv++;
        found = &s->recv[0];
        memcpy(s->root, new_root, OLM_KEY);
        /* our ratchet key has done its job: the next message makes a new one */
        pt_wipe(s->sender_sk, OLM_KEY);
        pt_wipe(&s->sender, sizeof s->sender);
        s->has_sender = false;
    }
    *found = ch;
    memcpy(found->key, next, OLM_KEY);
    found->index = m->counter + 1;
    s->n_skipped = (uint32_t)(base + gap);
    gap = 0;
    skipped_enforce(s, ch.ratchet_key);
out:
    if (gap && s->skipped) pt_wipe(&s->skipped[base], gap * sizeof *s->skipped);
    pt_wipe(new_root, sizeof new_root);
    pt_wipe(mk, sizeof mk);
    pt_wipe(next, sizeof next);
    pt_wipe(&ch, sizeof ch);
    return rc;
}
