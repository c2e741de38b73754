/* MTProto 2.0 envelope; see mtp2.h for the formulas and the contract. */
#include "channel/mtp2.h"

#include "crypto/pt_crypto.h"

struct pt_mtp2 {
    uint8_t auth_key[PT_MTP2_AUTH_KEY_LEN]; /* the shared 2048-bit key */
    uint8_t key_id[PT_MTP2_KEY_ID_LEN];     /* SHA1(auth_key)[12..20), sent in clear */
};

pt_mtp2 *pt_mtp2_new(const uint8_t auth_key[static PT_MTP2_AUTH_KEY_LEN])
{
    pt_mtp2 *m = pt_secure_alloc(sizeof *m);
    if (!m) return NULL;
    uint8_t sha1[PT_SHA1_LEN];
    memcpy(m->auth_key, auth_key, PT_MTP2_AUTH_KEY_LEN);
    if (pt_hash(PT_HASH_SHA1, sha1, m->auth_key, PT_MTP2_AUTH_KEY_LEN) != 0) {
        pt_secure_free(m);
        return NULL;
    }
    memcpy(m->key_id, sha1 + PT_SHA1_LEN - PT_MTP2_KEY_ID_LEN, PT_MTP2_KEY_ID_LEN);
    return m;
}

void pt_mtp2_free(pt_mtp2 *m)
{
    if (m) pt_secure_free(m); /* sodium_free wipes */
}

void pt_mtp2_key_id(const pt_mtp2 *m, uint8_t out[static PT_MTP2_KEY_ID_LEN])
{
    PT_ASSERT(m);
    memcpy(out, m->key_id, PT_MTP2_KEY_ID_LEN);
}

static void check_direction(int x)
{
    PT_ASSERT(x == PT_MTP2_X_CLIENT || x == PT_MTP2_X_SERVER);
}

/* msg_key = SHA256(auth_key[88+x .. 120+x) || plaintext)[8 .. 24) */
static int msg_key_of(const pt_mtp2 *m, int x, uint8_t msg_key[static PT_MTP2_MSG_KEY_LEN],
                      const uint8_t *pt, size_t len)
{
    uint8_t large[PT_SHA256_LEN];
    int rc = pt_hash2(PT_HASH_SHA256, large, m->auth_key + 88 + x, 32, pt, len);
    memcpy(msg_key, large + 8, PT_MTP2_MSG_KEY_LEN);
    pt_wipe(large, sizeof large);
    return rc;
}

/* AES key and IGE iv from msg_key and 2 x 36 bytes of the auth key. */
static int derive(const pt_mtp2 *m, int x, const uint8_t msg_key[static PT_MTP2_MSG_KEY_LEN],
                  uint8_t key[static 32], uint8_t iv[static PT_IGE_IV_LEN])
{
    uint8_t a[PT_SHA256_LEN], b[PT_SHA256_LEN];
    int rc = pt_hash2(PT_HASH_SHA256, a, msg_key, PT_MTP2_MSG_KEY_LEN, m->auth_key + x, 36);
    if (rc == 0)
        rc = pt_hash2(PT_HASH_SHA256, b, m->auth_key + 40 + x, 36, msg_key, PT_MTP2_MSG_KEY_LEN);
    if (rc == 0) {
        memcpy(key, a, 8);
        memcpy(key + 8, b + 8, 16);
        memcpy(key + 24, a + 24, 8);
        memcpy(iv, b, 8);
        memcpy(iv + 8, a + 8, 16);
        memcpy(iv + 24, b + 24, 8);
    }
    pt_wipe(a, sizeof a);
    pt_wipe(b, sizeof b);
    return rc;
}

/* Encrypts env[24 .. 24+len), which holds the padded plaintext, in place, and fills
 * in env[0..24). */
static int seal_in_place(const pt_mtp2 *m, int x, uint8_t *env, size_t len)
{
    uint8_t key[32], iv[PT_IGE_IV_LEN];
    uint8_t *msg_key = env + PT_MTP2_KEY_ID_LEN, *body = env + PT_MTP2_HDR_LEN;
    memcpy(env, m->key_id, PT_MTP2_KEY_ID_LEN);
    int rc = msg_key_of(m, x, msg_key, body, len);
    if (rc == 0) rc = derive(m, x, msg_key, key, iv);
    if (rc == 0) rc = pt_aes256_ige_encrypt(body, body, len, key, iv);
    pt_wipe(key, sizeof key);
    pt_wipe(iv, sizeof iv);
    return rc;
}

int pt_mtp2_seal_padded(pt_mtp2 *m, int x, pt_buf *out, const uint8_t *padded, size_t len)
{
    PT_ASSERT(m && out && (padded || len == 0));
    check_direction(x);
    if (len == 0 || len % PT_AES_BLOCK) return PT_ERR_INVAL;
    if (len > SIZE_MAX - PT_MTP2_HDR_LEN) return PT_ERR_TOO_BIG;
    size_t old_len = out->len;
    uint8_t *env = pt_buf_extend(out, PT_MTP2_HDR_LEN + len);
    if (!env) return PT_ERR_NOMEM;
    memcpy(env + PT_MTP2_HDR_LEN, padded, len);
    int rc = seal_in_place(m, x, env, len);
    if (rc) {
        pt_wipe(env, PT_MTP2_HDR_LEN + len);
        out->len = old_len;
    }
    return rc;
}

int pt_mtp2_seal(pt_mtp2 *m, const pt_env *env, int x, pt_buf *out, const uint8_t *inner,
                 size_t inner_len)
{
    PT_ASSERT(m && env && out && inner);
    check_direction(x);
    if (inner_len < PT_MTP2_INNER_HDR_LEN) return PT_ERR_INVAL;
    if (pt_get_u32le(inner + PT_MTP2_LEN_OFFSET) != inner_len - PT_MTP2_INNER_HDR_LEN)
        return PT_ERR_INVAL;
    /* The smallest padding >= 12 that makes the total a multiple of 16, plus 0..15
     * random whole blocks (at most 27 + 240 < PT_MTP2_PAD_MAX) so that the length
     * on the wire does not pin the body length to 16 bytes. */
    uint8_t extra_blocks;
    pt_env_random(env, &extra_blocks, 1);
    size_t pad = PT_MTP2_PAD_MIN +
                 (PT_AES_BLOCK - (inner_len + PT_MTP2_PAD_MIN) % PT_AES_BLOCK) % PT_AES_BLOCK;
    pad += (size_t)(extra_blocks & 15) * PT_AES_BLOCK;
    if (inner_len > SIZE_MAX - PT_MTP2_HDR_LEN - pad) return PT_ERR_TOO_BIG;
    size_t total = inner_len + pad, old_len = out->len;
    uint8_t *e = pt_buf_extend(out, PT_MTP2_HDR_LEN + total);
    if (!e) return PT_ERR_NOMEM;
    memcpy(e + PT_MTP2_HDR_LEN, inner, inner_len);
    pt_env_random(env, e + PT_MTP2_HDR_LEN + inner_len, pad);
    int rc = seal_in_place(m, x, e, total);
    if (rc) {
        pt_wipe(e, PT_MTP2_HDR_LEN + total);
        out->len = old_len;
    }
    return rc;
}

int pt_mtp2_open(pt_mtp2 *m, int x, uint8_t *out, size_t out_cap, size_t *out_len,
                 const uint8_t *in, size_t len)
{
    PT_ASSERT(m && (out || out_cap == 0) && out_len && (in || len == 0));
    check_direction(x);
    uint8_t key[32], iv[PT_IGE_IV_LEN], msg_key[PT_MTP2_MSG_KEY_LEN];
    size_t n = len - PT_MTP2_HDR_LEN; /* ciphertext length, once framing holds */
    int rc;
    *out_len = 0;
    if (len < PT_MTP2_HDR_LEN + PT_AES_BLOCK || n % PT_AES_BLOCK) {
        rc = PT_ERR_DECODE;
        goto out;
    }
    if (out_cap < len) {
        rc = PT_ERR_TOO_BIG;
        goto out;
    }
    /* The key id travels in clear; comparing it in constant time costs nothing. */
    if (pt_ct_memcmp(in, m->key_id, PT_MTP2_KEY_ID_LEN) != 0) {
        rc = PT_ERR_AUTH;
        goto out;
    }
    const uint8_t *their_key = in + PT_MTP2_KEY_ID_LEN;
    if ((rc = derive(m, x, their_key, key, iv)) != 0) goto out;
    if ((rc = pt_aes256_ige_decrypt(out, in + PT_MTP2_HDR_LEN, n, key, iv)) != 0) goto out;
    if ((rc = msg_key_of(m, x, msg_key, out, n)) != 0) goto out;
    if (pt_ct_memcmp(msg_key, their_key, PT_MTP2_MSG_KEY_LEN) != 0) {
        rc = PT_ERR_AUTH;
        goto out;
    }
    /* Authenticated from here on: the fields may be read with ordinary branches. */
    rc = PT_ERR_AUTH;
    if (n < PT_MTP2_INNER_HDR_LEN) goto out;
    size_t body = pt_get_u32le(out + PT_MTP2_LEN_OFFSET);
    if (body > n - PT_MTP2_INNER_HDR_LEN) goto out;
    size_t pad = n - PT_MTP2_INNER_HDR_LEN - body;
    if (pad < PT_MTP2_PAD_MIN || pad > PT_MTP2_PAD_MAX) goto out;
    *out_len = PT_MTP2_INNER_HDR_LEN + body;
    pt_wipe(out + *out_len, pad); /* out holds exactly what the caller is told about */
    rc = 0;
out:
    if (rc && out) pt_wipe(out, out_cap < len ? out_cap : len);
    pt_wipe(key, sizeof key);
    pt_wipe(iv, sizeof iv);
    pt_wipe(msg_key, sizeof msg_key);
    return rc;
}
