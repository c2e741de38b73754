/* XChaCha20 keystream (libsodium crypto_stream_xchacha20_xor_ic). */
#include <sodium.h>

#include "crypto/pt_crypto_stream.h"

int pt_xchacha20_xor(uint8_t *out, const uint8_t *in, size_t len,
                     const uint8_t nonce[static PT_XCHACHA20_NONCE_LEN], uint64_t ic,
                     const uint8_t key[static PT_XCHACHA20_KEY_LEN])
{
    PT_ASSERT(len == 0 || (in && out));
    if (len == 0) return 0;
    return crypto_stream_xchacha20_xor_ic(out, in, len, nonce, ic, key) == 0 ? 0 : PT_ERR_CRYPTO;
}
