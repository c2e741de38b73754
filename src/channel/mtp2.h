/*
 * src/channel/mtp2 - the MTProto 2.0 encrypted envelope (cloud chats, server-client
 * encryption), byte-compatible with Telegram's, as a pure codec: no I/O, no clock,
 * randomness only from the pt_env passed in.
 *
 *   envelope  = auth_key_id(8) || msg_key(16) || AES-256-IGE(key, iv, plaintext)
 *   plaintext = salt(8) session_id(8) msg_id(8) seq_no(4) length(4) body padding
 *   msg_key   = SHA256(auth_key[88+x .. 120+x) || plaintext)[8 .. 24)
 *   a = SHA256(msg_key || auth_key[x .. 36+x)),  b = SHA256(auth_key[40+x .. 76+x) || msg_key)
 *   key = a[0..8) b[8..24) a[24..32),            iv = b[0..8) a[8..24) b[24..32)
 *
 * x is 0 for messages from client to server and 8 for server to client; any other
 * value is a caller bug and aborts. The codec checks framing, the key id, msg_key
 * and the length/padding rules; salt, session_id, msg_id and seq_no are the
 * session layer's business. Errors are 0 or a negative pt_err code.
 */
#ifndef PT_MTP2_H
#define PT_MTP2_H

#include <stddef.h>
#include <stdint.h>

#include "common/pt_common.h"

#define PT_MTP2_AUTH_KEY_LEN 256
#define PT_MTP2_KEY_ID_LEN 8
#define PT_MTP2_MSG_KEY_LEN 16
#define PT_MTP2_HDR_LEN 24       /* auth_key_id(8) + msg_key(16) */
#define PT_MTP2_INNER_HDR_LEN 32 /* salt, session_id, msg_id, seq_no, length */
#define PT_MTP2_LEN_OFFSET 28    /* the little-endian body length in the inner header */
#define PT_MTP2_PAD_MIN 12
#define PT_MTP2_PAD_MAX 1024
#define PT_MTP2_X_CLIENT 0 /* client to server */
#define PT_MTP2_X_SERVER 8 /* server to client */

/* One auth key; holds a copy of it in pt_secure_alloc memory. */
typedef struct pt_mtp2 pt_mtp2;

/* Copies auth_key (the caller may wipe its copy) and computes its auth_key_id.
 * NULL when memory or the crypto library fails. pt_init() must have run. */
pt_mtp2 *pt_mtp2_new(const uint8_t auth_key[static PT_MTP2_AUTH_KEY_LEN]);

/* Wipes and frees the key. NULL is a no-op. */
void pt_mtp2_free(pt_mtp2 *m);

/* auth_key_id: the low-order 64 bits of SHA1(auth_key), i.e. its last 8 bytes. */
void pt_mtp2_key_id(const pt_mtp2 *m, uint8_t out[static PT_MTP2_KEY_ID_LEN]);

/* Seals the inner plaintext (salt .. length field, then the body: inner_len =
 * PT_MTP2_INNER_HDR_LEN + body, the length field equal to the body length), adding
 * PT_MTP2_PAD_MIN..PT_MTP2_PAD_MAX random padding bytes from env so that the total is
 * a multiple of 16 (the minimum plus 0..15 extra random blocks), and appends
 * auth_key_id || msg_key || ciphertext to out. PT_ERR_INVAL when inner is shorter
 * than the header or its length field disagrees with inner_len, PT_ERR_NOMEM when out
 * cannot grow; out is unchanged on failure. */
int pt_mtp2_seal(pt_mtp2 *m, const pt_env *env, int x, pt_buf *out, const uint8_t *inner,
                 size_t inner_len) PT_WUR;

/* As pt_mtp2_seal, but padded is the exact plaintext to encrypt, padding included,
 * and nothing in it is checked except len (a positive multiple of 16, else
 * PT_ERR_INVAL): tests and interop use it to build well-formed and malformed
 * envelopes alike. */
int pt_mtp2_seal_padded(pt_mtp2 *m, int x, pt_buf *out, const uint8_t *padded, size_t len) PT_WUR;

/* Opens the envelope in[0..len). Checks the auth_key_id, derives key and iv from
 * msg_key, decrypts, recomputes msg_key over the whole plaintext and compares it in
 * constant time before reading any field of it; then requires length field + 32 +
 * padding == len - 24 with padding in PT_MTP2_PAD_MIN..PT_MTP2_PAD_MAX. On success
 * out[0..*out_len) holds the inner plaintext without padding (32 + body bytes).
 * Errors: PT_ERR_DECODE for bad framing (len - 24 not a positive multiple of 16),
 * PT_ERR_TOO_BIG when out_cap < len, PT_ERR_AUTH for an unknown key id, a msg_key
 * mismatch or a bad length/padding (one code for all three, by design). On failure
 * *out_len is 0 and out[0..min(out_cap, len)) is wiped. out must not overlap in. */
int pt_mtp2_open(pt_mtp2 *m, int x, uint8_t *out, size_t out_cap, size_t *out_len,
                 const uint8_t *in, size_t len) PT_WUR;

#endif /* PT_MTP2_H */
