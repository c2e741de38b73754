/*
 * src/crypto - the only code in PackTrack that calls libsodium or OpenSSL.
 *
 * Every function returns 0 on success or a negative pt_err code: PT_ERR_AUTH when
 * a tag does not verify, PT_ERR_WEAK_KEY for an all-zero X25519 result,
 * PT_ERR_INVAL for a bad length, PT_ERR_CRYPTO when the library itself fails.
 * pt_crypto_init() must run once (pt_init() does it) before any other call and
 * before threads start. Objects (pt_aead, pt_aes_ctr, pt_mac) are per-thread.
 */
#ifndef PT_CRYPTO_H
#define PT_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "common/pt_common.h"

#define PT_X25519_LEN 32
#define PT_ED25519_PK_LEN 32
#define PT_ED25519_SK_LEN 64
#define PT_ED25519_SEED_LEN 32
#define PT_ED25519_SIG_LEN 64
#define PT_AEAD_KEY_LEN 32
#define PT_AEAD_NONCE_LEN 12
#define PT_AEAD_TAG_LEN 16
#define PT_SHA1_LEN 20
#define PT_SHA256_LEN 32
#define PT_SHA384_LEN 48
#define PT_SHA512_LEN 64
#define PT_BLAKE2B_LEN 64
#define PT_HASH_MAX_LEN 64
#define PT_AES_BLOCK 16
#define PT_IGE_IV_LEN 32

int pt_crypto_init(void);

/* ---- randomness, comparison, wiping --------------------------------------- */
void pt_random(void *buf, size_t len);
uint64_t pt_random_u64(void);
/* Constant-time comparison: 0 when equal, -1 otherwise. */
int pt_ct_memcmp(const void *a, const void *b, size_t len);
/* Constant-time: 1 when all len bytes are zero. */
int pt_ct_is_zero(const void *p, size_t len);
void pt_wipe(void *p, size_t len);
/* Locked, guarded memory for long-lived secrets, zeroed; pt_secure_free wipes.
 * Without a secure heap each block is its own sodium_malloc() mapping group (guard
 * pages on both sides, about 8 KiB resident and 4 mappings however small); with one,
 * blocks come from that heap and only spill over to sodium_malloc() when it is full. */
void *pt_secure_alloc(size_t len);
void pt_secure_free(void *p);

/* The secure heap: OpenSSL's (CRYPTO_secure_malloc_init), one arena of `bytes`
 * (rounded up to a power of two, at least 64 KiB) between guard pages, excluded
 * from core dumps, locked in memory when RLIMIT_MEMLOCK allows, split in blocks of
 * 64 bytes and up (buddy allocator). For processes that hold many secrets at once
 * (packtrackd: three per connection); once per process, before the first
 * pt_secure_alloc. Returns 0, PT_ERR_EXISTS when one exists already,
 * PT_ERR_REFUSED in sanitizer builds (whose block per mapping catches overflows),
 * PT_ERR_NOMEM when it cannot be made. *locked: whether mlock() worked. */
int pt_secure_heap_init(size_t bytes, size_t *actual, bool *locked) PT_WUR;
typedef struct pt_secure_stats {
    size_t heap_size;      /* 0 without a secure heap */
    size_t heap_used;      /* bytes handed out of it */
    uint64_t spilled;      /* blocks that did not fit and went to sodium_malloc */
} pt_secure_stats;
void pt_secure_get_stats(pt_secure_stats *out);

/* ---- base64 (standard alphabet, no padding: the encoding Olm and Megolm use) --- */
/* Encoded length of n bytes, without the NUL. */
#define PT_BASE64_LEN(n) (((n) / 3) * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))
/* out must hold PT_BASE64_LEN(len) + 1 chars; NUL-terminated. */
void pt_base64_encode(char *out, const uint8_t *in, size_t len);
/* Decodes exactly inlen chars (no padding, no whitespace). PT_ERR_DECODE on a bad
 * character or length, PT_ERR_TOO_BIG when out_cap is too small. */
int pt_base64_decode(uint8_t *out, size_t out_cap, size_t *out_len, const char *in,
                     size_t inlen) PT_WUR;

/* ---- X25519 (RFC 7748) ------------------------------------------------------ */
int pt_x25519_keypair(uint8_t pk[static PT_X25519_LEN], uint8_t sk[static PT_X25519_LEN]);
/* pk = sk * basepoint */
int pt_x25519_base(uint8_t pk[static PT_X25519_LEN], const uint8_t sk[static PT_X25519_LEN]);
/* PT_ERR_WEAK_KEY when the shared secret is all zeros (low-order point). */
int pt_x25519(uint8_t shared[static PT_X25519_LEN], const uint8_t sk[static PT_X25519_LEN],
              const uint8_t pk[static PT_X25519_LEN]) PT_WUR;

/* ---- Ed25519 (RFC 8032), strict: non-canonical / malleable signatures fail ---- */
int pt_ed25519_keypair(uint8_t pk[static PT_ED25519_PK_LEN], uint8_t sk[static PT_ED25519_SK_LEN]);
int pt_ed25519_seed_keypair(uint8_t pk[static PT_ED25519_PK_LEN],
                            uint8_t sk[static PT_ED25519_SK_LEN],
                            const uint8_t seed[static PT_ED25519_SEED_LEN]);
int pt_ed25519_sign(uint8_t sig[static PT_ED25519_SIG_LEN], const uint8_t *msg, size_t len,
                    const uint8_t sk[static PT_ED25519_SK_LEN]);
int pt_ed25519_verify(const uint8_t sig[static PT_ED25519_SIG_LEN], const uint8_t *msg,
                      size_t len, const uint8_t pk[static PT_ED25519_PK_LEN]) PT_WUR;

/* ---- hashes ---------------------------------------------------------------- */
typedef enum pt_hash_alg {
    PT_HASH_SHA256 = 0,
    PT_HASH_SHA384,
    PT_HASH_SHA512,
    PT_HASH_BLAKE2B, /* BLAKE2b-512 */
    PT_HASH_SHA1,    /* only for protocols that mandate it (MSE, MTProto key ids) */
} pt_hash_alg;

size_t pt_hash_len(pt_hash_alg alg);
size_t pt_hash_block_len(pt_hash_alg alg);
/* out receives pt_hash_len(alg) bytes of H(a || b); b may be NULL with blen 0. */
int pt_hash2(pt_hash_alg alg, uint8_t *out, const uint8_t *a, size_t alen, const uint8_t *b,
             size_t blen);
static inline int pt_hash(pt_hash_alg alg, uint8_t *out, const uint8_t *in, size_t len)
{
    return pt_hash2(alg, out, in, len, NULL, 0);
}
/* Keyed or unkeyed BLAKE2b with 1..64 bytes of output (libsodium generichash). */
int pt_blake2b(uint8_t *out, size_t outlen, const uint8_t *in, size_t len, const uint8_t *key,
               size_t keylen);

/* ---- HMAC (RFC 2104) and HKDF (RFC 5869) ----------------------------------- */
/* out receives pt_hash_len(alg) bytes of HMAC(key, a || b); b may be NULL. */
int pt_hmac2(pt_hash_alg alg, uint8_t *out, const uint8_t *key, size_t keylen,
             const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);
static inline int pt_hmac(pt_hash_alg alg, uint8_t *out, const uint8_t *key, size_t keylen,
                          const uint8_t *msg, size_t len)
{
    return pt_hmac2(alg, out, key, keylen, msg, len, NULL, 0);
}
/* A keyed HMAC context for per-record MACs: the key schedule is computed once. */
typedef struct pt_mac pt_mac;
pt_mac *pt_mac_new(pt_hash_alg alg, const uint8_t *key, size_t keylen);
void pt_mac_free(pt_mac *m); /* NULL is a no-op */
/* HMAC over the concatenation of n parts; out receives pt_hash_len(alg) bytes. */
int pt_mac_compute(pt_mac *m, uint8_t *out, const uint8_t *const parts[],
                   const size_t lens[], size_t n);

/* HKDF-Extract+Expand. salt may be NULL (zero-length). outlen <= 255*HashLen. */
int pt_hkdf(pt_hash_alg alg, uint8_t *out, size_t outlen, const uint8_t *salt, size_t saltlen,
            const uint8_t *ikm, size_t ikmlen, const uint8_t *info, size_t infolen) PT_WUR;

/* ---- HMAC-SHA-256 and HKDF-SHA-256 for per-message key schedules ----------- */
/* The same functions as pt_hmac(PT_HASH_SHA256) and pt_hkdf(PT_HASH_SHA256) (same
 * results), for callers that derive keys per message (the Olm ratchet): they run
 * OpenSSL's SHA-256 compression directly (SHA extensions where the CPU has them),
 * with no context allocation, and compute the padded key states once per key.
 * out[i] = HMAC-SHA-256(key, msgs[i]) for i < n. */
int pt_hmac_sha256_multi(uint8_t (*out)[PT_SHA256_LEN], const uint8_t *key, size_t keylen,
                         const uint8_t *const msgs[], const size_t lens[], size_t n);
/* HKDF-SHA-256 (RFC 5869). salt may be NULL (zero-length); outlen <= 255*32. */
int pt_hkdf_sha256(uint8_t *out, size_t outlen, const uint8_t *salt, size_t saltlen,
                   const uint8_t *ikm, size_t ikmlen, const uint8_t *info, size_t infolen) PT_WUR;
/* HKDF-Expand alone (RFC 5869 2.3), for a PRK that is already a uniform key. */
int pt_hkdf_sha256_expand(uint8_t *out, size_t outlen, const uint8_t *prk, size_t prklen,
                          const uint8_t *info, size_t infolen) PT_WUR;

/* ---- AEAD: ChaCha20-Poly1305 (RFC 8439) and AES-256-GCM ----------------------- */
typedef enum pt_aead_alg { PT_AEAD_CHACHAPOLY = 0, PT_AEAD_AESGCM } pt_aead_alg;
typedef struct pt_aead pt_aead;
/* The key is copied into guarded memory; the caller may wipe its copy. */
pt_aead *pt_aead_new(pt_aead_alg alg, const uint8_t key[static PT_AEAD_KEY_LEN]);
void pt_aead_free(pt_aead *a); /* NULL is a no-op; wipes the key */
int pt_aead_rekey(pt_aead *a, const uint8_t key[static PT_AEAD_KEY_LEN]);
/* Gives back what the next seal or open can make again from the key (OpenSSL's AES-GCM
 * contexts, used where the CPU lacks AES instructions); for objects left unused a
 * while. NULL is a no-op. */
void pt_aead_trim(pt_aead *a);
/* Tests: AES-GCM through OpenSSL even where libsodium's (AES-NI) would be used; and
 * whether a message of len bytes goes through OpenSSL now. */
void pt_aead_force_openssl(bool on);
bool pt_aead_gcm_openssl(size_t len);
/* out receives len + PT_AEAD_TAG_LEN bytes; out may equal in. */
int pt_aead_seal(pt_aead *a, uint8_t *out, const uint8_t nonce[static PT_AEAD_NONCE_LEN],
                 const uint8_t *ad, size_t adlen, const uint8_t *in, size_t len);
/* in holds len bytes including the tag; out receives len - 16 bytes. PT_ERR_AUTH on a
 * bad tag, in which case out is wiped. out may equal in. */
int pt_aead_open(pt_aead *a, uint8_t *out, const uint8_t nonce[static PT_AEAD_NONCE_LEN],
                 const uint8_t *ad, size_t adlen, const uint8_t *in, size_t len) PT_WUR;
/* True when this CPU does AES and carry-less multiplication in hardware (libsodium's
 * test: x86 AES-NI and PCLMULQDQ in the Debian 12 version): AES-GCM is then faster than
 * ChaCha20-Poly1305 and runs in libsodium, without secret-dependent table lookups. */
bool pt_aead_aesgcm_hw(void);

/* ---- XChaCha20-Poly1305 (192-bit nonce; libsodium's IETF construction) ------- */
#define PT_XCHACHA_NONCE_LEN 24
/* out receives len + 16 bytes; out may equal in. */
int pt_xchacha_seal(uint8_t *out, const uint8_t *in, size_t len, const uint8_t *ad, size_t adlen,
                    const uint8_t nonce[static PT_XCHACHA_NONCE_LEN],
                    const uint8_t key[static PT_AEAD_KEY_LEN]);
/* in holds len bytes incl. the tag; out receives len - 16. PT_ERR_AUTH (out wiped). */
int pt_xchacha_open(uint8_t *out, const uint8_t *in, size_t len, const uint8_t *ad, size_t adlen,
                    const uint8_t nonce[static PT_XCHACHA_NONCE_LEN],
                    const uint8_t key[static PT_AEAD_KEY_LEN]) PT_WUR;

/* ---- AES-256-CBC with PKCS#7 padding (as Olm and Megolm specify) ------------ */
/* Appends the ciphertext (len rounded up to the next multiple of 16, always at
 * least one byte of padding) to out. */
int pt_aes256_cbc_encrypt(pt_buf *out, const uint8_t *in, size_t len, const uint8_t key[static 32],
                          const uint8_t iv[static PT_AES_BLOCK]) PT_WUR;
/* Appends the plaintext to out. PT_ERR_DECODE when len is not a positive multiple
 * of 16 or the padding is invalid (callers authenticate before decrypting). */
int pt_aes256_cbc_decrypt(pt_buf *out, const uint8_t *in, size_t len, const uint8_t key[static 32],
                          const uint8_t iv[static PT_AES_BLOCK]) PT_WUR;

/* The same two functions on a reusable context (per thread, like the other
 * objects): for callers with a new key per message (the Olm ratchet), it saves the
 * context allocation and cipher set-up of every call. Results are identical. */
typedef struct pt_aes_cbc pt_aes_cbc;
pt_aes_cbc *pt_aes_cbc_new(void);
void pt_aes_cbc_free(pt_aes_cbc *c); /* NULL is a no-op */
int pt_aes_cbc_encrypt(pt_aes_cbc *c, pt_buf *out, const uint8_t *in, size_t len,
                       const uint8_t key[static 32], const uint8_t iv[static PT_AES_BLOCK]) PT_WUR;
int pt_aes_cbc_decrypt(pt_aes_cbc *c, pt_buf *out, const uint8_t *in, size_t len,
                       const uint8_t key[static 32], const uint8_t iv[static PT_AES_BLOCK]) PT_WUR;

/* ---- AES-CTR (16- or 32-byte keys; 16-byte big-endian counter block) --------- */
typedef struct pt_aes_ctr pt_aes_ctr;
pt_aes_ctr *pt_aes_ctr_new(const uint8_t *key, size_t keylen);
void pt_aes_ctr_free(pt_aes_ctr *c); /* NULL is a no-op */
/* out = in XOR keystream(iv); out may equal in. */
int pt_aes_ctr_xor(pt_aes_ctr *c, uint8_t *out, const uint8_t iv[static PT_AES_BLOCK],
                   const uint8_t *in, size_t len);

/* ---- AES-256-IGE (as used by MTProto): len must be a multiple of 16 ---------- */
int pt_aes256_ige_encrypt(uint8_t *out, const uint8_t *in, size_t len,
                          const uint8_t key[static 32], const uint8_t iv[static PT_IGE_IV_LEN]);
int pt_aes256_ige_decrypt(uint8_t *out, const uint8_t *in, size_t len,
                          const uint8_t key[static 32], const uint8_t iv[static PT_IGE_IV_LEN]);

/* ---- Argon2id password hashing -> key ---------------------------------------- */
#define PT_ARGON2_SALT_LEN 16
int pt_argon2id(uint8_t *out, size_t outlen, const char *pw, size_t pwlen,
                const uint8_t salt[static PT_ARGON2_SALT_LEN], uint64_t opslimit,
                size_t memlimit) PT_WUR;

#endif /* PT_CRYPTO_H */
