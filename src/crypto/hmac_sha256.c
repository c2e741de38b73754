/*
 * HMAC-SHA-256 and HKDF-SHA-256 over OpenSSL's low-level SHA-256.
 *
 * The Olm ratchet runs one HKDF and three HMACs per message on 32-byte keys: with
 * an EVP context per call (pt_hkdf) that costs about 3 us, with libsodium's
 * portable SHA-256 about 1 us per HMAC. SHA256_Init/Update/Final use the CPU's
 * SHA extensions, need no allocation, and a keyed state (the inner and outer pad
 * blocks already compressed) is a plain struct copy, so an HMAC of a short message
 * is two compressions. The low-level SHA-256 API is deprecated in OpenSSL 3 but
 * remains in every build of it that Debian ships; only this file uses it.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#include <pthread.h>

#include "crypto/pt_crypto.h"

#define BLOCK 64

typedef struct keyed {
    SHA256_CTX inner; /* ipad block compressed */
    SHA256_CTX outer; /* opad block compressed */
} keyed;

static void keyed_init(keyed *k, const uint8_t *key, size_t keylen)
{
    uint8_t block[BLOCK] = {0}, pad[BLOCK];
    if (keylen > BLOCK)
        SHA256(key, keylen, block);
    else if (keylen)
        memcpy(block, key, keylen);
    for (int i = 0; i < BLOCK; i++)
        pad[i] = block[i] ^ 0x36;
    SHA256_Init(&k->inner);
    SHA256_Update(&k->inner, pad, BLOCK);
    for (int i = 0; i < BLOCK; i++)
        pad[i] = block[i] ^ 0x5c;
    SHA256_Init(&k->outer);
    SHA256_Update(&k->outer, pad, BLOCK);
    pt_wipe(block, sizeof block);
    pt_wipe(pad, sizeof pad);
}

/* Scratch space of keyed_mac(), wiped once per public call rather than per MAC. */
typedef struct scratch {
    SHA256_CTX ctx;
    uint8_t ih[PT_SHA256_LEN]; /* inner hash */
} scratch;

/* HMAC over the concatenation a || b || c (any may be empty); out may alias a. */
static void keyed_mac(const keyed *k, scratch *t, uint8_t out[PT_SHA256_LEN], const uint8_t *a,
                      size_t alen, const uint8_t *b, size_t blen, const uint8_t *c, size_t clen)
{
    t->ctx = k->inner;
    if (alen) SHA256_Update(&t->ctx, a, alen);
    if (blen) SHA256_Update(&t->ctx, b, blen);
    if (clen) SHA256_Update(&t->ctx, c, clen);
    SHA256_Final(t->ih, &t->ctx);
    t->ctx = k->outer;
    SHA256_Update(&t->ctx, t->ih, sizeof t->ih);
    SHA256_Final(out, &t->ctx);
}

int pt_hmac_sha256_multi(uint8_t (*out)[PT_SHA256_LEN], const uint8_t *key, size_t keylen,
                         const uint8_t *const msgs[], const size_t lens[], size_t n)
{
    keyed k;
    scratch t;
    keyed_init(&k, key, keylen);
    for (size_t i = 0; i < n; i++)
        keyed_mac(&k, &t, out[i], msgs[i], lens[i], NULL, 0, NULL, 0);
    pt_wipe(&k, sizeof k);
    pt_wipe(&t, sizeof t);
    return 0;
}

/* HKDF-Extract with an empty salt keys HMAC with a block of zeros: the same
 * state for every call, made once. */
static keyed zero_salt;
static pthread_once_t zero_salt_once = PTHREAD_ONCE_INIT;
static void zero_salt_init(void)
{
    keyed_init(&zero_salt, NULL, 0);
}

/* T(1) ‖ T(2) ‖ ... under the keyed PRK state k. */
static void expand(keyed *k, scratch *s, uint8_t *out, size_t outlen, const uint8_t *info,
                   size_t infolen)
{
    uint8_t t[PT_SHA256_LEN];
    size_t tlen = 0;
    for (uint8_t ctr = 1; outlen > 0; ctr++) {
        keyed_mac(k, s, t, t, tlen, info, infolen, &ctr, 1);
        tlen = sizeof t;
        size_t n = outlen < tlen ? outlen : tlen;
        memcpy(out, t, n);
        out += n;
        outlen -= n;
    }
    pt_wipe(t, sizeof t);
}

int pt_hkdf_sha256_expand(uint8_t *out, size_t outlen, const uint8_t *prk, size_t prklen,
                          const uint8_t *info, size_t infolen)
{
    if (outlen == 0 || outlen > 255 * PT_SHA256_LEN) return PT_ERR_INVAL;
    keyed k;
    scratch s;
    keyed_init(&k, prk, prklen);
    expand(&k, &s, out, outlen, info, infolen);
    pt_wipe(&k, sizeof k);
    pt_wipe(&s, sizeof s);
    return 0;
}

int pt_hkdf_sha256(uint8_t *out, size_t outlen, const uint8_t *salt, size_t saltlen,
                   const uint8_t *ikm, size_t ikmlen, const uint8_t *info, size_t infolen)
{
    if (outlen == 0 || outlen > 255 * PT_SHA256_LEN) return PT_ERR_INVAL;
    keyed k;
    scratch s;
    uint8_t prk[PT_SHA256_LEN];
    if (saltlen == 0) {
        pthread_once(&zero_salt_once, zero_salt_init);
        keyed_mac(&zero_salt, &s, prk, ikm, ikmlen, NULL, 0, NULL, 0);
    } else {
        keyed_init(&k, salt, saltlen);
        keyed_mac(&k, &s, prk, ikm, ikmlen, NULL, 0, NULL, 0);
    }
    keyed_init(&k, prk, sizeof prk);
    expand(&k, &s, out, outlen, info, infolen);
    pt_wipe(&k, sizeof k);
    pt_wipe(&s, sizeof s);
    pt_wipe(prk, sizeof prk);
    return 0;
}
