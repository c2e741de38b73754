/*
 * src/crypto raw stream cipher - XChaCha20 without a MAC, for the pt-obfs
 * obfuscation layer (src/obfs/ptobfs.c), which needs a keystream to hide header
 * fields that cannot carry a tag of their own. Anything needing integrity uses
 * the AEADs of pt_crypto.h. Same conventions as pt_crypto.h.
 */
#ifndef PT_CRYPTO_STREAM_H
#define PT_CRYPTO_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "common/pt_common.h"

#define PT_XCHACHA20_KEY_LEN 32
#define PT_XCHACHA20_NONCE_LEN 24

/* out = in XOR XChaCha20(key, nonce) starting at 64-byte block ic; out may equal in. */
int pt_xchacha20_xor(uint8_t *out, const uint8_t *in, size_t len,
                     const uint8_t nonce[static PT_XCHACHA20_NONCE_LEN], uint64_t ic,
                     const uint8_t key[static PT_XCHACHA20_KEY_LEN]);

#endif /* PT_CRYPTO_STREAM_H */
