#include <stdio.h>
#include <stdlib.h>

#include "noise/pt_noise.h"

/* ---- patterns ------------------------------------------------------------------
 * Each message is a string of tokens; pre_i / pre_r say whether the initiator's /
 * responder's static key is a pre-message (known to the other side). */
typedef struct pattern_def {
    const char *name;
    bool pre_i, pre_r;
    const char *msgs[3];
} pattern_def;

static const pattern_def patterns[PT_NOISE_PATTERN_COUNT] = {
    [PT_NOISE_N] = {"N", false, true, {"e es"}},
    [PT_NOISE_K] = {"K", true, true, {"e es ss"}},
    [PT_NOISE_X] = {"X", false, true, {"e es s ss"}},
    [PT_NOISE_NN] = {"NN", false, false, {"e", "e ee"}},
    [PT_NOISE_NK] = {"NK", false, true, {"e es", "e ee"}},
    [PT_NOISE_NX] = {"NX", false, false, {"e", "e ee s es"}},
    [PT_NOISE_XN] = {"XN", false, false, {"e", "e ee", "s se"}},
    [PT_NOISE_XK] = {"XK", false, true, {"e es", "e ee", "s se"}},
    [PT_NOISE_XX] = {"XX", false, false, {"e", "e ee s es", "s se"}},
    [PT_NOISE_KN] = {"KN", true, false, {"e", "e ee se"}},
    [PT_NOISE_KK] = {"KK", true, true, {"e es ss", "e ee se"}},
    [PT_NOISE_KX] = {"KX", true, false, {"e", "e ee se s es"}},
    [PT_NOISE_IN] = {"IN", false, false, {"e s", "e ee se"}},
    [PT_NOISE_IK] = {"IK", false, true, {"e es s ss", "e ee se"}},
    [PT_NOISE_IX] = {"IX", false, false, {"e s", "e ee se s es"}},
};

static size_t pattern_msg_count(const pattern_def *p)
{
    size_t n = 0;
    while (n < 3 && p->msgs[n]) n++;
    return n;
}

int pt_noise_pattern_from_name(const char *name, pt_noise_pattern *out)
{
    for (int i = 0; i < PT_NOISE_PATTERN_COUNT; i++) {
        if (strcmp(patterns[i].name, name) == 0) {
            *out = (pt_noise_pattern)i;
            return 0;
        }
    }
    return PT_ERR_INVAL;
}

const char *pt_noise_pattern_name(pt_noise_pattern p)
{
    PT_ASSERT((unsigned)p < PT_NOISE_PATTERN_COUNT);
    return patterns[p].name;
}

static const char *next_token(const char *p, char tok[4]);

/* Does this side ever use its own static key: as a pre-message, an `s` token it
 * writes, or a DH token with its static half (ss; se for the initiator, es for
 * the responder)? */
static bool uses_static(const pattern_def *p, bool initiator)
{
    if (initiator ? p->pre_i : p->pre_r) return true;
    char tok[4];
    for (size_t i = 0; i < pattern_msg_count(p); i++) {
        bool mine = (i % 2 == 0) == initiator;
        for (const char *q = p->msgs[i]; (q = next_token(q, tok));) {
            if ((mine && strcmp(tok, "s") == 0) || strcmp(tok, "ss") == 0 ||
                strcmp(tok, initiator ? "se" : "es") == 0)
                return true;
        }
    }
    return false;
}

bool pt_noise_needs_local_static(pt_noise_pattern p, bool initiator)
{
    PT_ASSERT((unsigned)p < PT_NOISE_PATTERN_COUNT);
    return uses_static(&patterns[p], initiator);
}

bool pt_noise_needs_remote_static(pt_noise_pattern p, bool initiator)
{
    PT_ASSERT((unsigned)p < PT_NOISE_PATTERN_COUNT);
    return initiator ? patterns[p].pre_r : patterns[p].pre_i;
}

/* ---- CipherState ------------------------------------------------------------------ */

static void make_nonce(uint8_t nonce[PT_AEAD_NONCE_LEN], pt_noise_suite suite, uint64_t n)
{
    memset(nonce, 0, 4);
    if (suite == PT_NOISE_AESGCM_SHA256)
        pt_put_u64be(nonce + 4, n); /* AESGCM: 32 zero bits then big-endian n */
    else
        pt_put_u64le(nonce + 4, n); /* ChaChaPoly: 32 zero bits then little-endian n */
}

static int cs_init_key(pt_noise_cs *c, pt_noise_suite suite, const uint8_t key[32])
{
    pt_aead_alg alg = suite == PT_NOISE_AESGCM_SHA256 ? PT_AEAD_AESGCM : PT_AEAD_CHACHAPOLY;
    c->suite = suite;
    c->n = 0;
    if (c->aead) return pt_aead_rekey(c->aead, key);
    c->aead = pt_aead_new(alg, key);
    return c->aead ? 0 : PT_ERR_NOMEM;
}

int pt_noise_cs_encrypt(pt_noise_cs *c, uint8_t *out, const uint8_t *ad, size_t adlen,
                        const uint8_t *in, size_t len)
{
    if (!c->aead) return PT_ERR_STATE;
    if (c->n == UINT64_MAX) return PT_ERR_STATE; /* 2^64-1 is reserved */
    uint8_t nonce[PT_AEAD_NONCE_LEN];
    make_nonce(nonce, c->suite, c->n);
    int rc = pt_aead_seal(c->aead, out, nonce, ad, adlen, in, len);
    if (rc == 0) c->n++;
    return rc;
}

int pt_noise_cs_decrypt(pt_noise_cs *c, uint8_t *out, const uint8_t *ad, size_t adlen,
                        const uint8_t *in, size_t len)
{
    if (!c->aead) return PT_ERR_STATE;
    if (c->n == UINT64_MAX) return PT_ERR_STATE;
    uint8_t nonce[PT_AEAD_NONCE_LEN];
    make_nonce(nonce, c->suite, c->n);
    int rc = pt_aead_open(c->aead, out, nonce, ad, adlen, in, len);
    if (rc == 0) c->n++;
    return rc;
}

void pt_noise_cs_trim(pt_noise_cs *c) { pt_aead_trim(c->aead); }

void pt_noise_cs_clear(pt_noise_cs *c)
{
    pt_aead_free(c->aead);
    memset(c, 0, sizeof *c);
}

/* ---- HandshakeState ------------------------------------------------------------- */

struct pt_noise_hs {
    const pt_env *env;
    const pattern_def *pat;
    pt_noise_suite suite;
    pt_hash_alg hash;
    size_t hashlen;
    bool initiator;
    size_t msg_index;                   /* next message of the pattern */
    bool failed;                        /* a read failed: the handshake is dead */
    uint8_t ck[PT_NOISE_MAX_HASH];      /* chaining key */
    uint8_t h[PT_NOISE_MAX_HASH];       /* handshake hash */
    pt_noise_cs k;                      /* handshake CipherState (k unset until MixKey) */
    uint8_t s_sk[32], s_pk[32];         /* local static */
    uint8_t e_sk[32], e_pk[32];         /* local ephemeral */
    uint8_t rs[32], re[32];             /* remote static / ephemeral */
    bool has_s, has_e, has_rs, has_re;
};

static int mix_hash(pt_noise_hs *hs, const uint8_t *data, size_t len)
{
    return pt_hash2(hs->hash, hs->h, hs->h, hs->hashlen, data, len);
}

/* HKDF(ck, ikm) with two outputs: ck <- out1, key <- out2[0..32). */
static int mix_key(pt_noise_hs *hs, const uint8_t *ikm, size_t len)
{
    uint8_t out[2 * PT_NOISE_MAX_HASH];
    int rc = pt_hkdf(hs->hash, out, 2 * hs->hashlen, hs->ck, hs->hashlen, ikm, len, NULL, 0);
    if (rc == 0) {
        memcpy(hs->ck, out, hs->hashlen);
        rc = cs_init_key(&hs->k, hs->suite, out + hs->hashlen);
    }
    pt_wipe(out, sizeof out);
    return rc;
}

static int mix_dh(pt_noise_hs *hs, const uint8_t sk[32], const uint8_t pk[32])
{
    uint8_t shared[32];
    int rc = pt_x25519(shared, sk, pk);
    if (rc == 0) rc = mix_key(hs, shared, sizeof shared);
    pt_wipe(shared, sizeof shared);
    return rc;
}

/* EncryptAndHash: appends ciphertext (or plaintext before the first MixKey). */
static int encrypt_and_hash(pt_noise_hs *hs, pt_buf *out, const uint8_t *in, size_t len)
{
    size_t clen = len + (hs->k.aead ? PT_NOISE_TAG_LEN : 0);
    uint8_t *dst = pt_buf_extend(out, clen);
    if (!dst) return PT_ERR_NOMEM;
    int rc = 0;
    if (hs->k.aead)
        rc = pt_noise_cs_encrypt(&hs->k, dst, hs->h, hs->hashlen, in, len);
    else if (len)
        memcpy(dst, in, len);
    return rc ? rc : mix_hash(hs, dst, clen);
}

/* DecryptAndHash over exactly len bytes of input; plaintext to dst. */
static int decrypt_and_hash(pt_noise_hs *hs, uint8_t *dst, const uint8_t *in, size_t len)
{
    uint8_t h_before[PT_NOISE_MAX_HASH];
    memcpy(h_before, hs->h, hs->hashlen);
    int rc = mix_hash(hs, in, len);
    if (rc) return rc;
    if (!hs->k.aead) {
        if (len) memmove(dst, in, len);
        return 0;
    }
    return pt_noise_cs_decrypt(&hs->k, dst, h_before, hs->hashlen, in, len);
}

static const char *suite_tail(pt_noise_suite s)
{
    return s == PT_NOISE_AESGCM_SHA256 ? "_25519_AESGCM_SHA256" : "_25519_ChaChaPoly_BLAKE2b";
}

pt_noise_hs *pt_noise_hs_new(const pt_env *env, pt_noise_pattern pattern, pt_noise_suite suite,
                             bool initiator, const uint8_t *prologue, size_t prologue_len,
                             const uint8_t *local_sk, const uint8_t *remote_pk)
{
    return pt_noise_hs_new_kp(env, pattern, suite, initiator, prologue, prologue_len, local_sk,
                              NULL, remote_pk);
}

pt_noise_hs *pt_noise_hs_new_kp(const pt_env *env, pt_noise_pattern pattern, pt_noise_suite suite,
                                bool initiator, const uint8_t *prologue, size_t prologue_len,
                                const uint8_t *local_sk, const uint8_t *local_pk,
                                const uint8_t *remote_pk)
{
    PT_ASSERT((unsigned)pattern < PT_NOISE_PATTERN_COUNT);
    PT_ASSERT(suite == PT_NOISE_CHACHAPOLY_BLAKE2B || suite == PT_NOISE_AESGCM_SHA256);
    pt_noise_hs *hs = pt_secure_alloc(sizeof *hs);
    if (!hs) return NULL;
    memset(hs, 0, sizeof *hs);
    hs->env = env;
    hs->pat = &patterns[pattern];
    hs->suite = suite;
    hs->hash = suite == PT_NOISE_AESGCM_SHA256 ? PT_HASH_SHA256 : PT_HASH_BLAKE2B;
    hs->hashlen = pt_hash_len(hs->hash);
    hs->initiator = initiator;
    if (local_sk) {
        memcpy(hs->s_sk, local_sk, 32);
        if (local_pk)
            memcpy(hs->s_pk, local_pk, 32);
        else if (pt_x25519_base(hs->s_pk, hs->s_sk) != 0)
            goto fail;
        hs->has_s = true;
    }
    if (remote_pk) {
        memcpy(hs->rs, remote_pk, 32);
        hs->has_rs = true;
    }
    if (pt_noise_needs_local_static(pattern, initiator) && !hs->has_s) goto fail;
    if (pt_noise_needs_remote_static(pattern, initiator) && !hs->has_rs) goto fail;

    /* InitializeSymmetric(protocol_name) */
    char name[64];
    int n = snprintf(name, sizeof name, "Noise_%s%s", hs->pat->name, suite_tail(suite));
    PT_ASSERT(n > 0 && (size_t)n < sizeof name);
    if ((size_t)n <= hs->hashlen) {
        memcpy(hs->h, name, (size_t)n);
    } else if (pt_hash(hs->hash, hs->h, (const uint8_t *)name, (size_t)n) != 0) {
        goto fail;
    }
    memcpy(hs->ck, hs->h, hs->hashlen);
    if (mix_hash(hs, prologue, prologue_len) != 0) goto fail;
    /* Pre-messages: the initiator's first, then the responder's. */
    if (hs->pat->pre_i && mix_hash(hs, initiator ? hs->s_pk : hs->rs, 32) != 0) goto fail;
    if (hs->pat->pre_r && mix_hash(hs, initiator ? hs->rs : hs->s_pk, 32) != 0) goto fail;
    return hs;
fail:
    pt_noise_hs_free(hs);
    return NULL;
}

void pt_noise_hs_free(pt_noise_hs *hs)
{
    if (!hs) return;
    pt_noise_cs_clear(&hs->k);
    pt_secure_free(hs); /* sodium_free wipes */
}

static size_t msg_count(const pt_noise_hs *hs) { return pattern_msg_count(hs->pat); }

bool pt_noise_hs_done(const pt_noise_hs *hs) { return hs->msg_index >= msg_count(hs); }

bool pt_noise_hs_my_turn(const pt_noise_hs *hs)
{
    if (pt_noise_hs_done(hs) || hs->failed) return false;
    bool initiator_turn = hs->msg_index % 2 == 0;
    return initiator_turn == hs->initiator;
}

/* Iterates tokens of a message string: copies the next token into tok. */
static const char *next_token(const char *p, char tok[4])
{
    while (*p == ' ') p++;
    if (!*p) return NULL;
    size_t n = 0;
    while (p[n] && p[n] != ' ' && n < 3) {
        tok[n] = p[n];
        n++;
    }
    tok[n] = 0;
    return p + n;
}

/* The DH for a token from this side's point of view. */
static int token_dh(pt_noise_hs *hs, const char *tok)
{
    bool i = hs->initiator;
    if (strcmp(tok, "ee") == 0) return mix_dh(hs, hs->e_sk, hs->re);
    if (strcmp(tok, "ss") == 0) return mix_dh(hs, hs->s_sk, hs->rs);
    if (strcmp(tok, "es") == 0) return i ? mix_dh(hs, hs->e_sk, hs->rs) : mix_dh(hs, hs->s_sk, hs->re);
    if (strcmp(tok, "se") == 0) return i ? mix_dh(hs, hs->s_sk, hs->re) : mix_dh(hs, hs->e_sk, hs->rs);
    return PT_ERR_INVAL;
}

int pt_noise_hs_write(pt_noise_hs *hs, pt_buf *out, const uint8_t *payload, size_t len)
{
    if (!pt_noise_hs_my_turn(hs)) return PT_ERR_STATE;
    size_t start = out->len;
    int rc = 0;
    char tok[4];
    for (const char *p = hs->pat->msgs[hs->msg_index]; rc == 0 && (p = next_token(p, tok));) {
        if (strcmp(tok, "e") == 0) {
            pt_env_random(hs->env, hs->e_sk, 32);
            rc = pt_x25519_base(hs->e_pk, hs->e_sk);
            hs->has_e = true;
            if (rc == 0) rc = pt_buf_append(out, hs->e_pk, 32);
            if (rc == 0) rc = mix_hash(hs, hs->e_pk, 32);
        } else if (strcmp(tok, "s") == 0) {
            rc = encrypt_and_hash(hs, out, hs->s_pk, 32);
        } else {
            rc = token_dh(hs, tok);
        }
    }
    if (rc == 0) rc = encrypt_and_hash(hs, out, payload, len);
    if (rc == 0 && out->len - start > PT_NOISE_MAX_MSG) rc = PT_ERR_TOO_BIG;
    if (rc != 0) {
        out->len = start;
        hs->failed = true;
        return rc;
    }
    hs->msg_index++;
    return 0;
}

int pt_noise_hs_read(pt_noise_hs *hs, pt_buf *payload_out, const uint8_t *msg, size_t len)
{
    if (hs->failed || pt_noise_hs_done(hs) || pt_noise_hs_my_turn(hs)) return PT_ERR_STATE;
    if (len > PT_NOISE_MAX_MSG) {
        hs->failed = true;
        return PT_ERR_TOO_BIG;
    }
    size_t off = 0;
    int rc = 0;
    char tok[4];
    for (const char *p = hs->pat->msgs[hs->msg_index]; rc == 0 && (p = next_token(p, tok));) {
        if (strcmp(tok, "e") == 0) {
            if (len - off < 32) { rc = PT_ERR_DECODE; break; }
            memcpy(hs->re, msg + off, 32);
            hs->has_re = true;
            off += 32;
            rc = mix_hash(hs, hs->re, 32);
        } else if (strcmp(tok, "s") == 0) {
            size_t need = 32 + (hs->k.aead ? PT_NOISE_TAG_LEN : 0);
            if (len - off < need) { rc = PT_ERR_DECODE; break; }
            rc = decrypt_and_hash(hs, hs->rs, msg + off, need);
            hs->has_rs = rc == 0;
            off += need;
        } else {
            rc = token_dh(hs, tok);
        }
    }
    if (rc == 0) {
        size_t plen = len - off;
        if (hs->k.aead && plen < PT_NOISE_TAG_LEN) {
            rc = PT_ERR_DECODE;
        } else {
            size_t ptlen = plen - (hs->k.aead ? PT_NOISE_TAG_LEN : 0);
            size_t start = payload_out->len;
            uint8_t *dst = pt_buf_extend(payload_out, plen); /* room for in-place work */
            if (!dst) {
                rc = PT_ERR_NOMEM;
            } else {
                rc = decrypt_and_hash(hs, dst, msg + off, plen);
                payload_out->len = rc == 0 ? start + ptlen : start;
            }
        }
    }
    if (rc != 0) {
        hs->failed = true;
        return rc;
    }
    hs->msg_index++;
    return 0;
}

int pt_noise_hs_split_keys(pt_noise_hs *hs, uint8_t k1[static 32], uint8_t k2[static 32])
{
    if (!pt_noise_hs_done(hs) || hs->failed) return PT_ERR_STATE;
    uint8_t out[2 * PT_NOISE_MAX_HASH];
    int rc = pt_hkdf(hs->hash, out, 2 * hs->hashlen, hs->ck, hs->hashlen, NULL, 0, NULL, 0);
    if (rc == 0) {
        memcpy(k1, out, 32);
        memcpy(k2, out + hs->hashlen, 32);
    }
    pt_wipe(out, sizeof out);
    return rc;
}

int pt_noise_hs_split(pt_noise_hs *hs, pt_noise_cs *send, pt_noise_cs *recv)
{
    uint8_t k1[32], k2[32];
    int rc = pt_noise_hs_split_keys(hs, k1, k2);
    memset(send, 0, sizeof *send);
    memset(recv, 0, sizeof *recv);
    if (rc == 0) rc = cs_init_key(send, hs->suite, hs->initiator ? k1 : k2);
    if (rc == 0) rc = cs_init_key(recv, hs->suite, hs->initiator ? k2 : k1);
    pt_wipe(k1, sizeof k1);
    pt_wipe(k2, sizeof k2);
    if (rc != 0) {
        pt_noise_cs_clear(send);
        pt_noise_cs_clear(recv);
    }
    return rc;
}

const uint8_t *pt_noise_hs_hash(const pt_noise_hs *hs, size_t *len)
{
    *len = hs->hashlen;
    return hs->h;
}

const uint8_t *pt_noise_hs_remote_static(const pt_noise_hs *hs)
{
    return hs->has_rs ? hs->rs : NULL;
}
