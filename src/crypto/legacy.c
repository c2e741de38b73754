/*
 * SHA-1, RC4 and 768-bit DH for MSE, as thin OpenSSL 3 wrappers.
 *  - RC4 lives in the legacy provider. Loading a provider explicitly into the
 *    default library context switches off the implicit loading of "default", so
 *    both are loaded, once, and kept for the life of the process.
 *  - The DH exponentiation is BN_mod_exp_mont_consttime with BN_FLG_CONSTTIME on
 *    the exponent, over a Montgomery context for P computed once.
 */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/provider.h>

#include "crypto/pt_crypto.h"
#include "crypto/pt_crypto_legacy.h"

const uint8_t pt_dh768_prime[PT_DH768_LEN] = {
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC9, 0x0F, 0xDA, 0xA2, 0x21, 0x68, 0xC2, 0x34,
    0xC4, 0xC6, 0x62, 0x8B, 0x80, 0xDC, 0x1C, 0xD1, 0x29, 0x02, 0x4E, 0x08, 0x8A, 0x67, 0xCC, 0x74,
    0x02, 0x0B, 0xBE, 0xA6, 0x3B, 0x13, 0x9B, 0x22, 0x51, 0x4A, 0x08, 0x79, 0x8E, 0x34, 0x04, 0xDD,
    0xEF, 0x95, 0x19, 0xB3, 0xCD, 0x3A, 0x43, 0x1B, 0x30, 0x2B, 0x0A, 0x6D, 0xF2, 0x5F, 0x14, 0x37,
    0x4F, 0xE1, 0x35, 0x6D, 0x6D, 0x51, 0xC2, 0x45, 0xE4, 0x85, 0xB5, 0x76, 0x62, 0x5E, 0x7E, 0xC6,
    0xF4, 0x4C, 0x42, 0xE9, 0xA6, 0x3A, 0x36, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x05, 0x63};

static struct {
    pthread_once_t once;
    int ok;
    EVP_MD *sha1;
    EVP_CIPHER *rc4;
    BIGNUM *p, *p_minus_1;
    BN_MONT_CTX *mont;
} g = {.once = PTHREAD_ONCE_INIT};

static void legacy_init(void)
{
    /* "default" first: once any provider is loaded explicitly, it is no longer
     * loaded implicitly for the rest of the library. */
    if (!OSSL_PROVIDER_load(NULL, "default") || !OSSL_PROVIDER_load(NULL, "legacy")) {
        pt_log_error("crypto: cannot load OpenSSL's legacy provider (RC4 for MSE)");
        return;
    }
    g.sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
    g.rc4 = EVP_CIPHER_fetch(NULL, "RC4", "provider=legacy");
    BN_CTX *ctx = BN_CTX_new();
    g.p = BN_bin2bn(pt_dh768_prime, PT_DH768_LEN, NULL);
    g.p_minus_1 = g.p ? BN_dup(g.p) : NULL;
    g.mont = BN_MONT_CTX_new();
    if (!g.sha1 || !g.rc4 || !ctx || !g.p || !g.p_minus_1 || !g.mont ||
        !BN_sub_word(g.p_minus_1, 1) || !BN_MONT_CTX_set(g.mont, g.p, ctx)) {
        pt_log_error("crypto: cannot set up SHA-1, RC4 or the 768-bit DH group");
        BN_CTX_free(ctx);
        return;
    }
    BN_CTX_free(ctx);
    g.ok = 1;
}

static int ready(void)
{
    pthread_once(&g.once, legacy_init);
    return g.ok;
}

/* ---- SHA-1 ---------------------------------------------------------------------- */

int pt_sha1_parts(uint8_t out[static PT_SHA1_OUT_LEN], const uint8_t *const parts[],
                  const size_t lens[], size_t n)
{
    if (!ready()) return PT_ERR_CRYPTO;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c && EVP_DigestInit_ex2(c, g.sha1, NULL) == 1;
    for (size_t i = 0; ok && i < n; i++)
        ok = lens[i] == 0 || EVP_DigestUpdate(c, parts[i], lens[i]) == 1;
    unsigned int olen = 0;
    ok = ok && EVP_DigestFinal_ex(c, out, &olen) == 1 && olen == PT_SHA1_OUT_LEN;
    EVP_MD_CTX_free(c);
    return ok ? 0 : PT_ERR_CRYPTO;
}

/* ---- RC4 ------------------------------------------------------------------------ */

struct pt_rc4 {
    EVP_CIPHER_CTX *ctx; /* holds the RC4 state (OpenSSL wipes it on free) */
};

int pt_rc4_xor(pt_rc4 *r, uint8_t *out, const uint8_t *in, size_t len)
{
    PT_ASSERT(r && (len == 0 || (in && out)));
    while (len > 0) {
        int n = len > INT_MAX / 2 ? INT_MAX / 2 : (int)len, got = 0;
        if (EVP_EncryptUpdate(r->ctx, out, &got, in, n) != 1 || got != n) return PT_ERR_CRYPTO;
        in += n;
        out += n;
        len -= (size_t)n;
    }
    return 0;
}

pt_rc4 *pt_rc4_new(const uint8_t *key, size_t keylen, size_t drop)
{
    PT_ASSERT(key && keylen >= 1 && keylen <= 256);
    if (!ready()) return NULL;
    pt_rc4 *r = calloc(1, sizeof *r);
    if (!r || !(r->ctx = EVP_CIPHER_CTX_new())) goto fail;
    if (EVP_EncryptInit_ex2(r->ctx, g.rc4, NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_set_key_length(r->ctx, (int)keylen) != 1 ||
        EVP_EncryptInit_ex2(r->ctx, NULL, key, NULL, NULL) != 1)
        goto fail;
    uint8_t scratch[256] = {0};
    while (drop > 0) {
        size_t k = drop < sizeof scratch ? drop : sizeof scratch;
        if (pt_rc4_xor(r, scratch, scratch, k) != 0) goto fail;
        drop -= k;
    }
    pt_wipe(scratch, sizeof scratch);
    return r;
fail:
    pt_rc4_free(r);
    return NULL;
}

void pt_rc4_free(pt_rc4 *r)
{
    if (!r) return;
    EVP_CIPHER_CTX_free(r->ctx);
    free(r);
}

/* ---- 768-bit DH ----------------------------------------------------------------- */

/* out = base^priv mod P, with base a BIGNUM in [0, P). */
static int mod_exp(uint8_t out[static PT_DH768_LEN], const BIGNUM *base,
                   const uint8_t priv[static PT_DH768_PRIV_LEN], BN_CTX *ctx)
{
    int ret = PT_ERR_CRYPTO;
    BIGNUM *x = BN_secure_new(), *r = BN_secure_new();
    if (!x || !r || !BN_bin2bn(priv, PT_DH768_PRIV_LEN, x)) goto out;
    BN_set_flags(x, BN_FLG_CONSTTIME);
    if (!BN_mod_exp_mont_consttime(r, base, x, g.p, ctx, g.mont)) goto out;
    if (BN_bn2binpad(r, out, PT_DH768_LEN) != PT_DH768_LEN) goto out;
    ret = 0;
out:
    BN_clear_free(x);
    BN_clear_free(r);
    return ret;
}

int pt_dh768_public(uint8_t pub[static PT_DH768_LEN], const uint8_t priv[static PT_DH768_PRIV_LEN])
{
    if (!ready()) return PT_ERR_CRYPTO;
    BN_CTX *ctx = BN_CTX_secure_new();
    BIGNUM *two = BN_new();
    int ret = ctx && two && BN_set_word(two, 2) ? mod_exp(pub, two, priv, ctx) : PT_ERR_CRYPTO;
    BN_free(two);
    BN_CTX_free(ctx);
    return ret;
}

int pt_dh768_shared(uint8_t shared[static PT_DH768_LEN],
                    const uint8_t priv[static PT_DH768_PRIV_LEN],
                    const uint8_t peer[static PT_DH768_LEN])
{
    if (!ready()) return PT_ERR_CRYPTO;
    int ret = PT_ERR_CRYPTO;
    BN_CTX *ctx = BN_CTX_secure_new();
    BIGNUM *y = BN_bin2bn(peer, PT_DH768_LEN, NULL);
    if (!ctx || !y) goto out;
    if (BN_cmp(y, BN_value_one()) <= 0 || BN_cmp(y, g.p_minus_1) >= 0) {
        ret = PT_ERR_WEAK_KEY;
        goto out;
    }
    ret = mod_exp(shared, y, priv, ctx);
out:
    BN_free(y);
    BN_CTX_free(ctx);
    return ret;
}
