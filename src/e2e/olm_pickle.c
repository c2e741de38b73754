/*
 * Sealed state: "PTOL" ‖ format version (1) ‖ kind ('A' account, 'S' session) ‖
 * 24-byte nonce ‖ XChaCha20-Poly1305(body) with the first six bytes as associated
 * data, under HKDF-SHA-256(salt none, caller key, "PT-OLM-PICKLE-V1" ‖ kind). Any
 * change, truncation or wrong key fails the tag; the body parsers then insist on
 * exact lengths and bounded counts, so a state is loaded whole or not at all.
 */
#include "e2e/olm_int.h"

#define MAGIC "PTOL"
#define PICKLE_VERSION 1
#define PREFIX_LEN 6
#define OVERHEAD (PREFIX_LEN + PT_XCHACHA_NONCE_LEN + PT_AEAD_TAG_LEN)

static const uint8_t LABEL[] = "PT-OLM-PICKLE-V1";

static int pickle_key(uint8_t out[static PT_AEAD_KEY_LEN], uint8_t kind, const uint8_t *key,
                      size_t keylen)
{
    uint8_t info[sizeof LABEL];
    memcpy(info, LABEL, sizeof LABEL - 1);
    info[sizeof LABEL - 1] = kind;
    return pt_hkdf_sha256(out, PT_AEAD_KEY_LEN, NULL, 0, key, keylen, info, sizeof info);
}

int olm_pickle_seal(pt_buf *out, const pt_env *env, uint8_t kind, const uint8_t *key, size_t keylen,
                    const pt_buf *body)
{
    if (keylen < PT_OLM_MIN_PICKLE_KEY) return PT_ERR_INVAL;
    uint8_t k[PT_AEAD_KEY_LEN];
    size_t start = out->len;
    int rc = pickle_key(k, kind, key, keylen);
    uint8_t *p = rc == 0 ? pt_buf_extend(out, OVERHEAD + body->len) : NULL;
    if (rc == 0 && !p) rc = PT_ERR_NOMEM;
    if (rc == 0) {
        memcpy(p, MAGIC, 4);
        p[4] = PICKLE_VERSION;
        p[5] = kind;
        pt_env_random(env, p + PREFIX_LEN, PT_XCHACHA_NONCE_LEN);
        rc = pt_xchacha_seal(p + PREFIX_LEN + PT_XCHACHA_NONCE_LEN, body->data, body->len, p,
                             PREFIX_LEN, p + PREFIX_LEN, k);
        if (rc != 0) out->len = start;
    }
    pt_wipe(k, sizeof k);
    return rc;
}

int olm_pickle_open(pt_buf *body, uint8_t kind, const uint8_t *key, size_t keylen,
                    const uint8_t *in, size_t len)
{
    if (keylen < PT_OLM_MIN_PICKLE_KEY) return PT_ERR_INVAL;
    if (len < PREFIX_LEN || memcmp(in, MAGIC, 4) != 0) return PT_ERR_DECODE;
    if (in[4] != PICKLE_VERSION) return PT_ERR_VERSION;
    if (in[5] != kind) return PT_ERR_DECODE;
    if (len < OVERHEAD) return PT_ERR_AUTH;
    uint8_t k[PT_AEAD_KEY_LEN];
    size_t n = len - OVERHEAD;
    int rc = pickle_key(k, kind, key, keylen);
    uint8_t *p = rc == 0 ? pt_buf_extend(body, n) : NULL;
    if (rc == 0 && !p) rc = PT_ERR_NOMEM;
    if (rc == 0) {
        rc = pt_xchacha_open(p, in + PREFIX_LEN + PT_XCHACHA_NONCE_LEN, n + PT_AEAD_TAG_LEN, in,
                             PREFIX_LEN, in + PREFIX_LEN, k);
        if (rc != 0) body->len -= n;
    }
    pt_wipe(k, sizeof k);
    return rc;
}

void olm_get(olm_reader *r, void *dst, size_t n)
{
    if (r->bad || n > r->left) {
        r->bad = true;
        memset(dst, 0, n);
        return;
    }
    memcpy(dst, r->p, n);
    r->p += n;
    r->left -= n;
}

uint8_t olm_get_u8(olm_reader *r)
{
    uint8_t v;
    olm_get(r, &v, 1);
    return v;
}

uint32_t olm_get_u32(olm_reader *r)
{
    uint8_t b[4];
    olm_get(r, b, 4);
    return pt_get_u32le(b);
}

void olm_put(pt_buf *b, int *rc, const void *src, size_t n)
{
    if (*rc == 0) *rc = pt_buf_append(b, src, n);
}

void olm_put_u8(pt_buf *b, int *rc, uint8_t v)
{
    olm_put(b, rc, &v, 1);
}

void olm_put_u32(pt_buf *b, int *rc, uint32_t v)
{
    uint8_t x[4];
    pt_put_u32le(x, v);
    olm_put(b, rc, x, 4);
}
