/*
 * src/crypto legacy primitives - only for BitTorrent Message Stream Encryption
 * (src/obfs/mse.c), which mandates them: SHA-1, RC4 and 768-bit Diffie-Hellman.
 * None of them is secure by today's standards; MSE is obfuscation, and the Noise
 * channel inside it provides the security. Nothing else in PackTrack may use them.
 *
 * Same conventions as pt_crypto.h: 0 or a negative pt_err code. RC4 comes from
 * OpenSSL's legacy provider, which legacy.c loads explicitly (with the default
 * provider next to it) the first time an RC4 context is made; PT_ERR_CRYPTO when
 * the provider is not installed.
 */
#ifndef PT_CRYPTO_LEGACY_H
#define PT_CRYPTO_LEGACY_H

#include <stddef.h>
#include <stdint.h>

#include "common/pt_common.h"

#define PT_SHA1_OUT_LEN 20
#define PT_DH768_LEN 96       /* P, Y and S, big-endian */
#define PT_DH768_PRIV_LEN 20  /* 160-bit private exponents, as MSE recommends */

/* out = SHA-1(parts[0] || ... || parts[n-1]). */
int pt_sha1_parts(uint8_t out[static PT_SHA1_OUT_LEN], const uint8_t *const parts[],
                  const size_t lens[], size_t n);

/* ---- RC4 (OpenSSL legacy provider) ---------------------------------------------- */
typedef struct pt_rc4 pt_rc4;
/* A keystream keyed with key[0..keylen) (1..256 bytes) whose first `drop` bytes
 * are generated and thrown away (MSE drops 1024). NULL on failure. */
pt_rc4 *pt_rc4_new(const uint8_t *key, size_t keylen, size_t drop);
void pt_rc4_free(pt_rc4 *r); /* NULL is a no-op */
/* out = in XOR the next len keystream bytes; out may equal in. */
int pt_rc4_xor(pt_rc4 *r, uint8_t *out, const uint8_t *in, size_t len);

/* ---- Diffie-Hellman over MSE's 768-bit safe prime, G = 2 ------------------------ */
/* The prime P, big-endian (for tests and documentation). */
extern const uint8_t pt_dh768_prime[PT_DH768_LEN];
/* pub = 2^priv mod P. priv is a big-endian 160-bit exponent chosen by the caller
 * (from its pt_env). Constant-time exponentiation. */
int pt_dh768_public(uint8_t pub[static PT_DH768_LEN], const uint8_t priv[static PT_DH768_PRIV_LEN]);
/* shared = peer^priv mod P. PT_ERR_WEAK_KEY when peer is not in [2, P-2] (0, 1, P-1
 * and values >= P give a trivial or invalid secret). */
int pt_dh768_shared(uint8_t shared[static PT_DH768_LEN],
                    const uint8_t priv[static PT_DH768_PRIV_LEN],
                    const uint8_t peer[static PT_DH768_LEN]) PT_WUR;

#endif /* PT_CRYPTO_LEGACY_H */
