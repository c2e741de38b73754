/*
 * Thin wrappers over libsodium and OpenSSL 3. Choices:
 *  - X25519, Ed25519, ChaCha20-Poly1305, SHA-256/512, BLAKE2b, HMAC-SHA-256/512,
 *    Argon2id and randomness come from libsodium.
 *  - AES (GCM, CTR, ECB for IGE), SHA-384, SHA-1, HMAC over other digests and HKDF
 *    come from OpenSSL; algorithm objects are fetched once in pt_crypto_init() so
 *    the per-call cost is a context, not a provider lookup.
 */
#include <pthread.h>
#include <stdlib.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <sodium.h>

#include "crypto/pt_crypto.h"

static struct {
    int ready;
    EVP_MD *md[5];              /* indexed by pt_hash_alg */
    EVP_MAC *hmac;
    EVP_KDF *hkdf;
    EVP_MAC_CTX *hmac_tmpl[5];  /* HMAC contexts with the digest already set */
    EVP_CIPHER *aes256gcm, *aes128ctr, *aes256ctr, *aes256ecb, *aes256cbc;
    bool gcm_sodium;            /* AES-GCM through libsodium (the CPU has AES-NI) */
} g;

static const char *const md_names[5] = {"SHA2-256", "SHA2-384", "SHA2-512", "BLAKE2B-512",
                                         "SHA1"};

int pt_crypto_init(void)
{
    if (g.ready) return 0;
    if (sodium_init() < 0) return PT_ERR_CRYPTO;
    for (int i = 0; i < 5; i++)
        if (!(g.md[i] = EVP_MD_fetch(NULL, md_names[i], NULL))) return PT_ERR_CRYPTO;
    if (!(g.hmac = EVP_MAC_fetch(NULL, "HMAC", NULL))) return PT_ERR_CRYPTO;
    if (!(g.hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL))) return PT_ERR_CRYPTO;
    for (int i = 0; i < 5; i++) {
        OSSL_PARAM q[2] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)md_names[i], 0),
            OSSL_PARAM_construct_end()};
        g.hmac_tmpl[i] = EVP_MAC_CTX_new(g.hmac);
        if (!g.hmac_tmpl[i] || EVP_MAC_CTX_set_params(g.hmac_tmpl[i], q) != 1) return PT_ERR_CRYPTO;
    }
    g.aes256gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    g.aes128ctr = EVP_CIPHER_fetch(NULL, "AES-128-CTR", NULL);
    g.aes256ctr = EVP_CIPHER_fetch(NULL, "AES-256-CTR", NULL);
    g.aes256ecb = EVP_CIPHER_fetch(NULL, "AES-256-ECB", NULL);
    g.aes256cbc = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    if (!g.aes256gcm || !g.aes128ctr || !g.aes256ctr || !g.aes256ecb || !g.aes256cbc)
        return PT_ERR_CRYPTO;
    g.gcm_sodium = pt_aead_aesgcm_hw();
    g.ready = 1;
    return 0;
}

/* ---- randomness, comparison, wiping ----------------------------------------- */

void pt_random(void *buf, size_t len) { randombytes_buf(buf, len); }

uint64_t pt_random_u64(void)
{
    uint64_t v;
    randombytes_buf(&v, sizeof v);
    return v;
}

int pt_ct_memcmp(const void *a, const void *b, size_t len) { return sodium_memcmp(a, b, len); }

int pt_ct_is_zero(const void *p, size_t len) { return sodium_is_zero(p, len); }

void pt_wipe(void *p, size_t len) { sodium_memzero(p, len); }

/* sodium_malloc() maps guard pages, mprotects and mlocks them, and sodium_free()
 * undoes it all: about ten system calls, which cost more than an X25519
 * multiplication, and a server handshake makes five such blocks (channel,
 * handshake, three cipher states). So a freed block is wiped and kept, still
 * guarded and locked, for the next request of the same size. Each block starts
 * with a header holding that size; the caller's bytes end at the guard page as
 * before. Sanitizer builds keep nothing, so a use after free still faults. */
#define SECURE_HDR 16
#define SECURE_CACHE_SLOTS 64
#ifdef PT_SANITIZE_BUILD
#define SECURE_CACHE_ON 0
#else
#define SECURE_CACHE_ON 1
#endif

static struct {
    pthread_mutex_t lock;
    size_t n; /* blocks kept */
    struct {
        size_t len;    /* the size the block was made for */
        uint8_t *base; /* the block, header included */
    } slot[SECURE_CACHE_SLOTS];
} secure_cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static _Atomic size_t secure_heap_size; /* set once; 0 without a secure heap */
static _Atomic size_t secure_heap_limit; /* ours stop there: the rest is OpenSSL's */
static _Atomic uint64_t secure_spilled;

/* OpenSSL keeps secrets of its own in the same heap once it exists (BN_secure_new for
 * MSE's DH, each thread's DRBG, ...) and has no fallback when it is full: MSE
 * handshakes and RAND_bytes failed with a full heap. So our blocks stop short of it. */
#define SECURE_HEAP_RESERVE(size) ((size) / 8 > 256 * 1024 ? 256 * 1024 : (size) / 8)

int pt_secure_heap_init(size_t bytes, size_t *actual, bool *locked)
{
#ifdef PT_SANITIZE_BUILD
    (void)bytes, (void)actual, (void)locked;
    return PT_ERR_REFUSED;
#else
    if (CRYPTO_secure_malloc_initialized()) return PT_ERR_EXISTS;
    size_t size = 64 * 1024;
    while (size < bytes && size <= SIZE_MAX / 4) size *= 2;
    /* 64-byte blocks: a transport cipher state (56 bytes) takes one */
    int rc = CRYPTO_secure_malloc_init(size, 64);
    if (rc == 0) return PT_ERR_NOMEM; /* no mapping, or no secure memory in this OpenSSL */
    secure_heap_limit = size - SECURE_HEAP_RESERVE(size);
    secure_heap_size = size;
    if (actual) *actual = size;
    if (locked) *locked = rc == 1; /* 2: made, but mlock() (or a guard page) was refused */
    return 0;
#endif
}

void pt_secure_get_stats(pt_secure_stats *out)
{
    out->heap_size = secure_heap_size;
    out->heap_used = secure_heap_size ? CRYPTO_secure_used() : 0;
    out->spilled = secure_spilled;
}

void *pt_secure_alloc(size_t len)
{
    if (len > SIZE_MAX - SECURE_HDR) return NULL;
    if (secure_heap_size && CRYPTO_secure_malloc_initialized()) { /* (gone at exit) */
        void *p = NULL;
        if (CRYPTO_secure_used() + len <= secure_heap_limit)
            p = CRYPTO_secure_zalloc(len ? len : 1, NULL, 0); /* no file: no error queued */
        if (p && CRYPTO_secure_allocated(p)) return p;
        if (p) OPENSSL_clear_free(p, len ? len : 1); /* not from the heap after all */
        secure_spilled++; /* full: a block of its own, as without a heap */
    }
    uint8_t *base = NULL;
    pthread_mutex_lock(&secure_cache.lock);
    for (size_t i = secure_cache.n; i-- > 0;) {
        if (secure_cache.slot[i].len == len) {
            base = secure_cache.slot[i].base;
            secure_cache.slot[i] = secure_cache.slot[--secure_cache.n];
            break;
        }
    }
    pthread_mutex_unlock(&secure_cache.lock);
    if (!base) {
        if (!(base = sodium_malloc(SECURE_HDR + len))) return NULL;
        memcpy(base, &len, sizeof len);
    }
    sodium_memzero(base + SECURE_HDR, len);
    return base + SECURE_HDR;
}

void pt_secure_free(void *p)
{
    if (!p) return;
    if (secure_heap_size && CRYPTO_secure_allocated(p)) {
        OPENSSL_secure_clear_free(p, 0); /* wipes the whole block it had */
        return;
    }
    uint8_t *base = (uint8_t *)p - SECURE_HDR;
    size_t len;
    memcpy(&len, base, sizeof len);
    sodium_memzero(p, len);
    pthread_mutex_lock(&secure_cache.lock);
    bool keep = SECURE_CACHE_ON && secure_cache.n < SECURE_CACHE_SLOTS;
    if (keep) {
        secure_cache.slot[secure_cache.n].len = len;
        secure_cache.slot[secure_cache.n++].base = base;
    }
    pthread_mutex_unlock(&secure_cache.lock);
    if (!keep) sodium_free(base);
}

/* ---- base64 -------------------------------------------------------------------------- */

void pt_base64_encode(char *out, const uint8_t *in, size_t len)
{
    sodium_bin2base64(out, PT_BASE64_LEN(len) + 1, in, len, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
}

int pt_base64_decode(uint8_t *out, size_t out_cap, size_t *out_len, const char *in, size_t inlen)
{
    if (inlen % 4 == 1) return PT_ERR_DECODE;
    size_t need = inlen / 4 * 3 + (inlen % 4 ? inlen % 4 - 1 : 0);
    if (need > out_cap) return PT_ERR_TOO_BIG;
    const char *end = NULL;
    size_t n = 0;
    if (sodium_base642bin(out, out_cap, in, inlen, NULL, &n, &end,
                          sodium_base64_VARIANT_ORIGINAL_NO_PADDING) != 0 ||
        end != in + inlen || n != need)
        return PT_ERR_DECODE;
    *out_len = n;
    return 0;
}

/* ---- X25519 ------------------------------------------------------------------ */

int pt_x25519_keypair(uint8_t pk[static PT_X25519_LEN], uint8_t sk[static PT_X25519_LEN])
{
    randombytes_buf(sk, PT_X25519_LEN);
    return pt_x25519_base(pk, sk);
}

int pt_x25519_base(uint8_t pk[static PT_X25519_LEN], const uint8_t sk[static PT_X25519_LEN])
{
    return crypto_scalarmult_base(pk, sk) == 0 ? 0 : PT_ERR_CRYPTO;
}

int pt_x25519(uint8_t shared[static PT_X25519_LEN], const uint8_t sk[static PT_X25519_LEN],
              const uint8_t pk[static PT_X25519_LEN])
{
    /* libsodium returns -1 exactly when the result is all zeros (low-order point). */
    if (crypto_scalarmult(shared, sk, pk) != 0) {
        sodium_memzero(shared, PT_X25519_LEN);
        return PT_ERR_WEAK_KEY;
    }
    return 0;
}

/* ---- Ed25519 ------------------------------------------------------------------ */

int pt_ed25519_keypair(uint8_t pk[static PT_ED25519_PK_LEN], uint8_t sk[static PT_ED25519_SK_LEN])
{
    return crypto_sign_keypair(pk, sk) == 0 ? 0 : PT_ERR_CRYPTO;
}

int pt_ed25519_seed_keypair(uint8_t pk[static PT_ED25519_PK_LEN],
                            uint8_t sk[static PT_ED25519_SK_LEN],
                            const uint8_t seed[static PT_ED25519_SEED_LEN])
{
    return crypto_sign_seed_keypair(pk, sk, seed) == 0 ? 0 : PT_ERR_CRYPTO;
}

int pt_ed25519_sign(uint8_t sig[static PT_ED25519_SIG_LEN], const uint8_t *msg, size_t len,
                    const uint8_t sk[static PT_ED25519_SK_LEN])
{
    return crypto_sign_detached(sig, NULL, msg, len, sk) == 0 ? 0 : PT_ERR_CRYPTO;
}

int pt_ed25519_verify(const uint8_t sig[static PT_ED25519_SIG_LEN], const uint8_t *msg,
                      size_t len, const uint8_t pk[static PT_ED25519_PK_LEN])
{
    /* libsodium rejects S >= L, non-canonical and small-order keys and R. */
    return crypto_sign_verify_detached(sig, msg, len, pk) == 0 ? 0 : PT_ERR_AUTH;
}

/* ---- hashes ---------------------------------------------------------------------- */

size_t pt_hash_len(pt_hash_alg alg)
{
    static const size_t lens[] = {32, 48, 64, 64, 20};
    PT_ASSERT((unsigned)alg < PT_ARRAY_LEN(lens));
    return lens[alg];
}

size_t pt_hash_block_len(pt_hash_alg alg)
{
    static const size_t lens[] = {64, 128, 128, 128, 64};
    PT_ASSERT((unsigned)alg < PT_ARRAY_LEN(lens));
    return lens[alg];
}

static int evp_hash2(pt_hash_alg alg, uint8_t *out, const uint8_t *a, size_t alen,
                     const uint8_t *b, size_t blen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex2(ctx, g.md[alg], NULL) == 1 &&
             EVP_DigestUpdate(ctx, a, alen) == 1 && (blen == 0 || EVP_DigestUpdate(ctx, b, blen) == 1) &&
             EVP_DigestFinal_ex(ctx, out, NULL) == 1;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : PT_ERR_CRYPTO;
}

int pt_hash2(pt_hash_alg alg, uint8_t *out, const uint8_t *a, size_t alen, const uint8_t *b,
             size_t blen)
{
    switch (alg) {
    case PT_HASH_SHA256: {
        crypto_hash_sha256_state st;
        crypto_hash_sha256_init(&st);
        crypto_hash_sha256_update(&st, a, alen);
        if (blen) crypto_hash_sha256_update(&st, b, blen);
        crypto_hash_sha256_final(&st, out);
        return 0;
    }
    case PT_HASH_SHA512: {
        crypto_hash_sha512_state st;
        crypto_hash_sha512_init(&st);
        crypto_hash_sha512_update(&st, a, alen);
        if (blen) crypto_hash_sha512_update(&st, b, blen);
        crypto_hash_sha512_final(&st, out);
        return 0;
    }
    case PT_HASH_BLAKE2B: {
        crypto_generichash_state st;
        crypto_generichash_init(&st, NULL, 0, PT_BLAKE2B_LEN);
        crypto_generichash_update(&st, a, alen);
        if (blen) crypto_generichash_update(&st, b, blen);
        crypto_generichash_final(&st, out, PT_BLAKE2B_LEN);
        return 0;
    }
    case PT_HASH_SHA384:
    case PT_HASH_SHA1:
        return evp_hash2(alg, out, a, alen, b, blen);
    }
    return PT_ERR_INVAL;
}

int pt_blake2b(uint8_t *out, size_t outlen, const uint8_t *in, size_t len, const uint8_t *key,
               size_t keylen)
{
    if (outlen < crypto_generichash_BYTES_MIN || outlen > crypto_generichash_BYTES_MAX ||
        keylen > crypto_generichash_KEYBYTES_MAX)
        return PT_ERR_INVAL;
    return crypto_generichash(out, outlen, in, len, key, keylen) == 0 ? 0 : PT_ERR_CRYPTO;
}

/* ---- HMAC ------------------------------------------------------------------------ */

struct pt_mac {
    pt_hash_alg alg;
    union {
        crypto_auth_hmacsha256_state s256; /* keyed state, copied per MAC */
        crypto_auth_hmacsha512_state s512;
        EVP_MAC_CTX *evp;                  /* keyed context, duplicated per MAC */
    } u;
};

pt_mac *pt_mac_new(pt_hash_alg alg, const uint8_t *key, size_t keylen)
{
    PT_ASSERT((unsigned)alg < PT_ARRAY_LEN(g.hmac_tmpl));
    /* An empty key may arrive as NULL. libsodium declares the key nonnull, and
     * EVP_MAC_init() reads NULL as "keep the previous key" and fails on a fresh context,
     * so both get a valid pointer to zero bytes. */
    static const uint8_t empty_key[1];
    if (keylen == 0) key = empty_key;
    pt_mac *m = pt_secure_alloc(sizeof *m);
    if (!m) return NULL;
    m->alg = alg;
    switch (alg) {
    case PT_HASH_SHA256:
        crypto_auth_hmacsha256_init(&m->u.s256, key, keylen);
        return m;
    case PT_HASH_SHA512:
        crypto_auth_hmacsha512_init(&m->u.s512, key, keylen);
        return m;
    default:
        m->u.evp = EVP_MAC_CTX_dup(g.hmac_tmpl[alg]);
        if (m->u.evp && EVP_MAC_init(m->u.evp, key, keylen, NULL) == 1) return m;
        EVP_MAC_CTX_free(m->u.evp);
        pt_secure_free(m);
        return NULL;
    }
}

void pt_mac_free(pt_mac *m)
{
    if (!m) return;
    if (m->alg != PT_HASH_SHA256 && m->alg != PT_HASH_SHA512) EVP_MAC_CTX_free(m->u.evp);
    pt_secure_free(m); /* wipes the keyed state */
}

int pt_mac_compute(pt_mac *m, uint8_t *out, const uint8_t *const parts[], const size_t lens[],
                   size_t n)
{
    if (m->alg == PT_HASH_SHA256) {
        crypto_auth_hmacsha256_state st = m->u.s256;
        for (size_t i = 0; i < n; i++) crypto_auth_hmacsha256_update(&st, parts[i], lens[i]);
        crypto_auth_hmacsha256_final(&st, out);
        sodium_memzero(&st, sizeof st);
        return 0;
    }
    if (m->alg == PT_HASH_SHA512) {
        crypto_auth_hmacsha512_state st = m->u.s512;
        for (size_t i = 0; i < n; i++) crypto_auth_hmacsha512_update(&st, parts[i], lens[i]);
        crypto_auth_hmacsha512_final(&st, out);
        sodium_memzero(&st, sizeof st);
        return 0;
    }
    /* With no key, EVP_MAC_init() restarts from the keyed state it holds: no copy of
     * the context (three digest contexts and their allocations) per MAC. */
    int ok = EVP_MAC_init(m->u.evp, NULL, 0, NULL) == 1;
    for (size_t i = 0; ok && i < n; i++)
        ok = EVP_MAC_update(m->u.evp, parts[i], lens[i]) == 1;
    size_t outl = 0;
    ok = ok && EVP_MAC_final(m->u.evp, out, &outl, PT_HASH_MAX_LEN) == 1;
    return ok ? 0 : PT_ERR_CRYPTO;
}

int pt_hmac2(pt_hash_alg alg, uint8_t *out, const uint8_t *key, size_t keylen, const uint8_t *a,
             size_t alen, const uint8_t *b, size_t blen)
{
    pt_mac *m = pt_mac_new(alg, key, keylen);
    if (!m) return PT_ERR_CRYPTO;
    const uint8_t *parts[2] = {a, b};
    size_t lens[2] = {alen, blen};
    int rc = pt_mac_compute(m, out, parts, lens, blen ? 2 : 1);
    pt_mac_free(m);
    return rc;
}

/* ---- HKDF ------------------------------------------------------------------------ */

int pt_hkdf(pt_hash_alg alg, uint8_t *out, size_t outlen, const uint8_t *salt, size_t saltlen,
            const uint8_t *ikm, size_t ikmlen, const uint8_t *info, size_t infolen)
{
    if ((unsigned)alg >= 5 || outlen == 0 || outlen > 255 * pt_hash_len(alg)) return PT_ERR_INVAL;
    static const uint8_t empty[1];
    /* OpenSSL 3.0's HKDF cannot duplicate a context, so each call makes one. */
    OSSL_PARAM p[5], *q = p;
    *q++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)md_names[alg], 0);
    *q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)(ikm ? ikm : empty), ikmlen);
    if (saltlen)
        *q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen);
    *q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)(info ? info : empty),
                                             infolen);
    *q = OSSL_PARAM_construct_end();
    EVP_KDF_CTX *c = EVP_KDF_CTX_new(g.hkdf);
    int ok = c && EVP_KDF_derive(c, out, outlen, p) == 1;
    EVP_KDF_CTX_free(c);
    return ok ? 0 : PT_ERR_CRYPTO;
}

/* ---- AEAD ------------------------------------------------------------------------- */

/* AES-GCM, two implementations. Where the CPU has AES-NI and PCLMULQDQ (then
 * PT1-AESGCM-SHA256 is the default suite), libsodium's for messages under
 * GCM_SODIUM_MAX bytes: each seal or open expands the key into a state on the stack
 * (about 50 ns) and wipes it after, so an object holds only its 32-byte key, in the
 * secure heap, as ChaCha20 does. Longer ones through OpenSSL's EVP with a context
 * made for that one message and freed after it (EVP_CIPHER_CTX_free wipes the key
 * schedule), the same footprint: where OpenSSL has its VAES/AVX-512 code, the two
 * cross at about 1 KB (685 ns for 1,000 bytes against libsodium's 697), then OpenSSL
 * pulls ahead: 881 against 1,214 ns for 2,000 (the server's records under load are
 * 1-2 KB) and 3.9 against 8.7 us for 16,000 (BENCHMARKS.md, "AES-GCM by size").
 * Where libsodium has no AES-GCM, OpenSSL's EVP for every message, with a context of
 * about 1.1 KiB on the ordinary heap per direction used, made at first use and given
 * back by pt_aead_trim (the server trims idle connections). */
#define GCM_SODIUM_MAX 1024
struct pt_aead {
    pt_aead_alg alg;
    uint8_t key[PT_AEAD_KEY_LEN];
    EVP_CIPHER_CTX *enc, *dec;     /* OpenSSL's AES-GCM: NULL until used */
};

static bool gcm_openssl_forced; /* pt_aead_force_openssl, for the tests */

/* libsodium's AES-GCM is there (and not turned off by a test) */
static bool gcm_sodium_usable(void) { return g.gcm_sodium && !gcm_openssl_forced; }

static bool gcm_sodium(size_t len) { return gcm_sodium_usable() && len < GCM_SODIUM_MAX; }

void pt_aead_force_openssl(bool on) { gcm_openssl_forced = on; }

bool pt_aead_gcm_openssl(size_t len) { return !gcm_sodium(len); }

pt_aead *pt_aead_new(pt_aead_alg alg, const uint8_t key[static PT_AEAD_KEY_LEN])
{
    pt_aead *a = pt_secure_alloc(sizeof *a);
    if (!a) return NULL;
    memset(a, 0, sizeof *a);
    a->alg = alg;
    memcpy(a->key, key, PT_AEAD_KEY_LEN);
    return a;
}

/* EVP_CIPHER_CTX_free wipes the key schedule (the provider's OPENSSL_clear_free). */
void pt_aead_trim(pt_aead *a)
{
    if (!a) return;
    EVP_CIPHER_CTX_free(a->enc);
    EVP_CIPHER_CTX_free(a->dec);
    a->enc = a->dec = NULL;
}

void pt_aead_free(pt_aead *a)
{
    if (!a) return;
    pt_aead_trim(a);
    pt_secure_free(a); /* wipes the key */
}

int pt_aead_rekey(pt_aead *a, const uint8_t key[static PT_AEAD_KEY_LEN])
{
    pt_aead_trim(a); /* OpenSSL's contexts are made again with the new key */
    memcpy(a->key, key, PT_AEAD_KEY_LEN);
    return 0;
}

/* An OpenSSL AES-GCM context keyed with a's key. */
static EVP_CIPHER_CTX *gcm_new_ctx(const pt_aead *a, bool enc)
{
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    if (!x) return NULL;
    if ((enc ? EVP_EncryptInit_ex2(x, g.aes256gcm, a->key, NULL, NULL)
             : EVP_DecryptInit_ex2(x, g.aes256gcm, a->key, NULL, NULL)) != 1) {
        EVP_CIPHER_CTX_free(x);
        return NULL;
    }
    return x;
}

/* The OpenSSL context for one message: where libsodium has AES-GCM (a long message),
 * one for it alone, which the caller frees (*once); elsewhere the direction's kept
 * context, made at its first use. */
static EVP_CIPHER_CTX *gcm_ctx(pt_aead *a, bool enc, bool *once)
{
    *once = gcm_sodium_usable();
    if (*once) return gcm_new_ctx(a, enc);
    EVP_CIPHER_CTX **slot = enc ? &a->enc : &a->dec;
    if (!*slot) *slot = gcm_new_ctx(a, enc);
    return *slot;
}

int pt_aead_seal(pt_aead *a, uint8_t *out, const uint8_t nonce[static PT_AEAD_NONCE_LEN],
                 const uint8_t *ad, size_t adlen, const uint8_t *in, size_t len)
{
    if (a->alg == PT_AEAD_CHACHAPOLY) {
        return crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, in, len, ad, adlen, NULL,
                                                         nonce, a->key) == 0
                   ? 0
                   : PT_ERR_CRYPTO;
    }
    if (len > INT32_MAX || adlen > INT32_MAX) return PT_ERR_TOO_BIG;
    if (gcm_sodium(len)) {
        crypto_aead_aes256gcm_state st;
        int rc = crypto_aead_aes256gcm_beforenm(&st, a->key) == 0 &&
                         crypto_aead_aes256gcm_encrypt_afternm(out, NULL, in, len, ad, adlen, NULL,
                                                               nonce, &st) == 0
                     ? 0
                     : PT_ERR_CRYPTO;
        sodium_memzero(&st, sizeof st);
        return rc;
    }
    bool once;
    EVP_CIPHER_CTX *x = gcm_ctx(a, true, &once);
    int outl = 0;
    bool ok = x && EVP_EncryptInit_ex2(x, NULL, NULL, nonce, NULL) == 1 &&
              (adlen == 0 || EVP_EncryptUpdate(x, NULL, &outl, ad, (int)adlen) == 1) &&
              (len == 0 || EVP_EncryptUpdate(x, out, &outl, in, (int)len) == 1) &&
              EVP_EncryptFinal_ex(x, out + len, &outl) == 1 &&
              EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, PT_AEAD_TAG_LEN, out + len) == 1;
    if (once) EVP_CIPHER_CTX_free(x);
    return ok ? 0 : PT_ERR_CRYPTO;
}

int pt_aead_open(pt_aead *a, uint8_t *out, const uint8_t nonce[static PT_AEAD_NONCE_LEN],
                 const uint8_t *ad, size_t adlen, const uint8_t *in, size_t len)
{
    if (len < PT_AEAD_TAG_LEN) return PT_ERR_AUTH;
    size_t mlen = len - PT_AEAD_TAG_LEN;
    if (a->alg == PT_AEAD_CHACHAPOLY) {
        if (crypto_aead_chacha20poly1305_ietf_decrypt(out, NULL, NULL, in, len, ad, adlen, nonce,
                                                      a->key) != 0) {
            sodium_memzero(out, mlen); /* the contract, not left to libsodium's internals */
            return PT_ERR_AUTH;
        }
        return 0;
    }
    if (mlen > INT32_MAX || adlen > INT32_MAX) return PT_ERR_TOO_BIG;
    bool ok;
    if (gcm_sodium(mlen)) {
        crypto_aead_aes256gcm_state st;
        if (crypto_aead_aes256gcm_beforenm(&st, a->key) != 0) return PT_ERR_CRYPTO;
        ok = crypto_aead_aes256gcm_decrypt_afternm(out, NULL, NULL, in, len, ad, adlen, nonce,
                                                   &st) == 0;
        sodium_memzero(&st, sizeof st);
    } else {
        bool once;
        EVP_CIPHER_CTX *x = gcm_ctx(a, false, &once);
        if (!x) return PT_ERR_CRYPTO;
        uint8_t tag[PT_AEAD_TAG_LEN];
        memcpy(tag, in + mlen, sizeof tag);
        int outl = 0;
        ok = EVP_DecryptInit_ex2(x, NULL, NULL, nonce, NULL) == 1 &&
             (adlen == 0 || EVP_DecryptUpdate(x, NULL, &outl, ad, (int)adlen) == 1) &&
             (mlen == 0 || EVP_DecryptUpdate(x, out, &outl, in, (int)mlen) == 1) &&
             EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_TAG, PT_AEAD_TAG_LEN, tag) == 1 &&
             EVP_DecryptFinal_ex(x, out + mlen, &outl) == 1;
        if (once) EVP_CIPHER_CTX_free(x);
    }
    if (!ok) {
        sodium_memzero(out, mlen);
        return PT_ERR_AUTH;
    }
    return 0;
}

bool pt_aead_aesgcm_hw(void)
{
    /* libsodium reads the CPU's features in sodium_init (idempotent, thread-safe);
     * --check-config gets here before pt_crypto_init */
    return sodium_init() >= 0 && crypto_aead_aes256gcm_is_available() == 1;
}

/* ---- XChaCha20-Poly1305 --------------------------------------------------------------- */

int pt_xchacha_seal(uint8_t *out, const uint8_t *in, size_t len, const uint8_t *ad, size_t adlen,
                    const uint8_t nonce[static PT_XCHACHA_NONCE_LEN],
                    const uint8_t key[static PT_AEAD_KEY_LEN])
{
    return crypto_aead_xchacha20poly1305_ietf_encrypt(out, NULL, in, len, ad, adlen, NULL, nonce,
                                                      key) == 0
               ? 0
               : PT_ERR_CRYPTO;
}

int pt_xchacha_open(uint8_t *out, const uint8_t *in, size_t len, const uint8_t *ad, size_t adlen,
                    const uint8_t nonce[static PT_XCHACHA_NONCE_LEN],
                    const uint8_t key[static PT_AEAD_KEY_LEN])
{
    if (len < PT_AEAD_TAG_LEN) return PT_ERR_AUTH;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(out, NULL, NULL, in, len, ad, adlen, nonce,
                                                   key) != 0) {
        sodium_memzero(out, len - PT_AEAD_TAG_LEN);
        return PT_ERR_AUTH;
    }
    return 0;
}

/* ---- AES-256-CBC ------------------------------------------------------------------------ */

static int cbc(pt_buf *out, const uint8_t *in, size_t len, const uint8_t key[static 32],
               const uint8_t iv[static PT_AES_BLOCK], int enc)
{
    if (len > INT32_MAX - 2 * PT_AES_BLOCK) return PT_ERR_TOO_BIG;
    if (!enc && (len == 0 || len % PT_AES_BLOCK)) return PT_ERR_DECODE;
    size_t start = out->len;
    uint8_t *dst = pt_buf_extend(out, len + PT_AES_BLOCK);
    if (!dst) return PT_ERR_NOMEM;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n1 = 0, n2 = 0;
    int ok = ctx && EVP_CipherInit_ex2(ctx, g.aes256cbc, key, iv, enc, NULL) == 1 &&
             EVP_CipherUpdate(ctx, dst, &n1, in, (int)len) == 1 &&
             EVP_CipherFinal_ex(ctx, dst + n1, &n2) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        sodium_memzero(dst, len + PT_AES_BLOCK);
        out->len = start;
        return enc ? PT_ERR_CRYPTO : PT_ERR_DECODE;
    }
    out->len = start + (size_t)n1 + (size_t)n2;
    return 0;
}

int pt_aes256_cbc_encrypt(pt_buf *out, const uint8_t *in, size_t len, const uint8_t key[static 32],
                          const uint8_t iv[static PT_AES_BLOCK])
{
    return cbc(out, in, len, key, iv, 1);
}

int pt_aes256_cbc_decrypt(pt_buf *out, const uint8_t *in, size_t len, const uint8_t key[static 32],
                          const uint8_t iv[static PT_AES_BLOCK])
{
    return cbc(out, in, len, key, iv, 0);
}

struct pt_aes_cbc {
    EVP_CIPHER_CTX *ctx[2]; /* [1] encrypts, [0] decrypts; the cipher set once */
};

pt_aes_cbc *pt_aes_cbc_new(void)
{
    pt_aes_cbc *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    for (int enc = 0; enc < 2; enc++) {
        c->ctx[enc] = EVP_CIPHER_CTX_new();
        if (!c->ctx[enc] || EVP_CipherInit_ex2(c->ctx[enc], g.aes256cbc, NULL, NULL, enc, NULL) != 1) {
            pt_aes_cbc_free(c);
            return NULL;
        }
    }
    return c;
}

void pt_aes_cbc_free(pt_aes_cbc *c)
{
    if (!c) return;
    EVP_CIPHER_CTX_free(c->ctx[0]); /* cleanses the key schedule */
    EVP_CIPHER_CTX_free(c->ctx[1]);
    free(c);
}

/* cbc() on a context whose cipher is already set: re-keying it skips the context
 * allocation and the cipher's parameter handling, a third of a 100-byte call. */
static int cbc_ctx(EVP_CIPHER_CTX *ctx, pt_buf *out, const uint8_t *in, size_t len,
                   const uint8_t key[static 32], const uint8_t iv[static PT_AES_BLOCK], int enc)
{
    if (len > INT32_MAX - 2 * PT_AES_BLOCK) return PT_ERR_TOO_BIG;
    if (!enc && (len == 0 || len % PT_AES_BLOCK)) return PT_ERR_DECODE;
    size_t start = out->len;
    uint8_t *dst = pt_buf_extend(out, len + PT_AES_BLOCK);
    if (!dst) return PT_ERR_NOMEM;
    int n1 = 0, n2 = 0;
    int ok = EVP_CipherInit_ex2(ctx, NULL, key, iv, enc, NULL) == 1 &&
             EVP_CipherUpdate(ctx, dst, &n1, in, (int)len) == 1 &&
             EVP_CipherFinal_ex(ctx, dst + n1, &n2) == 1;
    if (!ok) {
        sodium_memzero(dst, len + PT_AES_BLOCK);
        out->len = start;
        return enc ? PT_ERR_CRYPTO : PT_ERR_DECODE;
    }
    out->len = start + (size_t)n1 + (size_t)n2;
    return 0;
}

int pt_aes_cbc_encrypt(pt_aes_cbc *c, pt_buf *out, const uint8_t *in, size_t len,
                       const uint8_t key[static 32], const uint8_t iv[static PT_AES_BLOCK])
{
    return cbc_ctx(c->ctx[1], out, in, len, key, iv, 1);
}

int pt_aes_cbc_decrypt(pt_aes_cbc *c, pt_buf *out, const uint8_t *in, size_t len,
                       const uint8_t key[static 32], const uint8_t iv[static PT_AES_BLOCK])
{
    return cbc_ctx(c->ctx[0], out, in, len, key, iv, 0);
}

/* ---- AES-CTR ---------------------------------------------------------------------- */

struct pt_aes_ctr {
    EVP_CIPHER_CTX *ctx; /* holds the key schedule; the IV is set per call */
};

pt_aes_ctr *pt_aes_ctr_new(const uint8_t *key, size_t keylen)
{
    const EVP_CIPHER *c = keylen == 16 ? g.aes128ctr : keylen == 32 ? g.aes256ctr : NULL;
    if (!c) return NULL;
    pt_aes_ctr *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->ctx = EVP_CIPHER_CTX_new();
    if (!a->ctx || EVP_EncryptInit_ex2(a->ctx, c, key, NULL, NULL) != 1) {
        pt_aes_ctr_free(a);
        return NULL;
    }
    return a;
}

void pt_aes_ctr_free(pt_aes_ctr *c)
{
    if (!c) return;
    EVP_CIPHER_CTX_free(c->ctx); /* OpenSSL cleanses the key schedule */
    free(c);
}

int pt_aes_ctr_xor(pt_aes_ctr *c, uint8_t *out, const uint8_t iv[static PT_AES_BLOCK],
                   const uint8_t *in, size_t len)
{
    if (len > INT32_MAX) return PT_ERR_TOO_BIG;
    int outl = 0;
    if (EVP_EncryptInit_ex2(c->ctx, NULL, NULL, iv, NULL) != 1) return PT_ERR_CRYPTO;
    if (len && EVP_EncryptUpdate(c->ctx, out, &outl, in, (int)len) != 1) return PT_ERR_CRYPTO;
    return 0;
}

/* ---- AES-256-IGE --------------------------------------------------------------------
 * OpenSSL's AES_ige_encrypt() is deprecated and runs the table-based (not
 * constant-time, no AES-NI) AES, so the IGE chaining is done here over the EVP
 * AES-256 block cipher: c_i = E(p_i ^ c_{i-1}) ^ p_{i-1}, with c_{-1} = iv[0..16)
 * and p_{-1} = iv[16..32), the convention MTProto and OpenSSL use. */

static int ige(uint8_t *out, const uint8_t *in, size_t len, const uint8_t key[static 32],
               const uint8_t iv[static PT_IGE_IV_LEN], int enc)
{
    if (len % PT_AES_BLOCK) return PT_ERR_INVAL;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) return PT_ERR_NOMEM;
    int ok = (enc ? EVP_EncryptInit_ex2(ctx, g.aes256ecb, key, NULL, NULL)
                  : EVP_DecryptInit_ex2(ctx, g.aes256ecb, key, NULL, NULL)) == 1 &&
             EVP_CIPHER_CTX_set_padding(ctx, 0) == 1;
    /* enc: x = previous ciphertext, y = previous plaintext; dec: the reverse. */
    uint8_t x[PT_AES_BLOCK], y[PT_AES_BLOCK], blk[PT_AES_BLOCK], cur[PT_AES_BLOCK];
    memcpy(enc ? x : y, iv, PT_AES_BLOCK);
    memcpy(enc ? y : x, iv + PT_AES_BLOCK, PT_AES_BLOCK);
    for (size_t off = 0; ok && off < len; off += PT_AES_BLOCK) {
        int outl = 0;
        memcpy(cur, in + off, PT_AES_BLOCK);
        for (int i = 0; i < PT_AES_BLOCK; i++) blk[i] = cur[i] ^ x[i];
        ok = (enc ? EVP_EncryptUpdate(ctx, blk, &outl, blk, PT_AES_BLOCK)
                  : EVP_DecryptUpdate(ctx, blk, &outl, blk, PT_AES_BLOCK)) == 1 &&
             outl == PT_AES_BLOCK;
        for (int i = 0; i < PT_AES_BLOCK; i++) blk[i] ^= y[i];
        memcpy(out + off, blk, PT_AES_BLOCK);
        memcpy(x, blk, PT_AES_BLOCK); /* enc: new c_{i}; dec: new p_{i} */
        memcpy(y, cur, PT_AES_BLOCK); /* enc: new p_{i}; dec: new c_{i} */
    }
    EVP_CIPHER_CTX_free(ctx);
    sodium_memzero(blk, sizeof blk);
    sodium_memzero(cur, sizeof cur);
    sodium_memzero(x, sizeof x);
    sodium_memzero(y, sizeof y);
    return ok ? 0 : PT_ERR_CRYPTO;
}

int pt_aes256_ige_encrypt(uint8_t *out, const uint8_t *in, size_t len,
                          const uint8_t key[static 32], const uint8_t iv[static PT_IGE_IV_LEN])
{
    return ige(out, in, len, key, iv, 1);
}

int pt_aes256_ige_decrypt(uint8_t *out, const uint8_t *in, size_t len,
                          const uint8_t key[static 32], const uint8_t iv[static PT_IGE_IV_LEN])
{
    return ige(out, in, len, key, iv, 0);
}

/* ---- Argon2id ---------------------------------------------------------------------- */

int pt_argon2id(uint8_t *out, size_t outlen, const char *pw, size_t pwlen,
                const uint8_t salt[static PT_ARGON2_SALT_LEN], uint64_t opslimit, size_t memlimit)
{
    /* Both bounds are checked here: libsodium reports an out-of-range parameter with the
     * same -1 as an allocation failure, which would surface as PT_ERR_NOMEM. */
    if (outlen < crypto_pwhash_argon2id_BYTES_MIN || outlen > crypto_pwhash_argon2id_BYTES_MAX ||
        pwlen > crypto_pwhash_argon2id_PASSWD_MAX ||
        opslimit < crypto_pwhash_argon2id_OPSLIMIT_MIN ||
        opslimit > crypto_pwhash_argon2id_OPSLIMIT_MAX ||
        memlimit < crypto_pwhash_argon2id_MEMLIMIT_MIN ||
        memlimit > crypto_pwhash_argon2id_MEMLIMIT_MAX)
        return PT_ERR_INVAL;
    return crypto_pwhash(out, outlen, pw, pwlen, salt, opslimit, memlimit,
                         crypto_pwhash_ALG_ARGON2ID13) == 0
               ? 0
               : PT_ERR_NOMEM;
}
