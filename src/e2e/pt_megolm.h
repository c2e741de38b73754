/*
 * src/e2e/megolm - Megolm group sender-key sessions (`megolm.v1`), byte-compatible
 * with libolm: the four-part HMAC-SHA-256 ratchet, version-3 group messages
 * (AES-256-CBC + HMAC-SHA-256 truncated to 8 bytes, keys from HKDF-SHA-256
 * "MEGOLM_KEYS", then an Ed25519 signature over everything), the version-2
 * session key (signed) and the version-1 exported key (unsigned).
 * Spec: docs/PROTOCOL.md §8.2.
 *
 * One sender owns a pt_megolm_out and shares its session key over a 1:1 channel;
 * every receiver builds a pt_megolm_in from it. Unlike libolm, an inbound session
 * refuses a message index it has already decrypted (PT_ERR_REPLAY) unless the
 * caller asks for PT_MEGOLM_ALLOW_REPLAY (re-reading stored history).
 *
 * Error convention (internal layer): 0 or a negative pt_err; constructors return
 * NULL and write *err (err may be NULL). Bytes from peers never reach an assert.
 * Handles are used by one thread at a time.
 */
#ifndef PT_MEGOLM_H
#define PT_MEGOLM_H

#include <stdbool.h>

#include "common/pt_common.h"
#include "crypto/pt_crypto.h"

#define PT_MEGOLM_PARTS 4          /* R0..R3 */
#define PT_MEGOLM_PART_LEN 32      /* one HMAC-SHA-256 output */
#define PT_MEGOLM_RATCHET_LEN 128  /* PARTS * PART_LEN */
#define PT_MEGOLM_MSG_VERSION 3    /* group message version byte */
#define PT_MEGOLM_KEY_VERSION 2    /* session key (signed) version byte */
#define PT_MEGOLM_EXPORT_VERSION 1 /* exported key (unsigned) version byte */
#define PT_MEGOLM_MAC_LEN 8        /* HMAC-SHA-256 truncated */
#define PT_MEGOLM_SIG_LEN 64       /* Ed25519 */
#define PT_MEGOLM_ID_LEN 32        /* session id: the Ed25519 public key */
#define PT_MEGOLM_EXPORT_LEN (1 + 4 + PT_MEGOLM_RATCHET_LEN + PT_MEGOLM_ID_LEN) /* 165 */
#define PT_MEGOLM_SESSION_KEY_LEN (PT_MEGOLM_EXPORT_LEN + PT_MEGOLM_SIG_LEN)    /* 229 */
/* Largest plaintext we encrypt or accept; a named limit, not a Megolm one. */
#define PT_MEGOLM_MAX_PLAINTEXT 65536
/* Largest ciphertext: the plaintext padded to the next block (PKCS#7 always pads). */
#define PT_MEGOLM_MAX_CIPHERTEXT (PT_MEGOLM_MAX_PLAINTEXT + PT_AES_BLOCK)
/* Largest message: version, index field (tag + 5-byte varint), ciphertext field
 * (tag + 3-byte length), ciphertext, MAC, signature. */
#define PT_MEGOLM_MAX_MESSAGE                                                                      \
    (1 + 1 + 5 + 1 + 3 + PT_MEGOLM_MAX_CIPHERTEXT + PT_MEGOLM_MAC_LEN + PT_MEGOLM_SIG_LEN)
/* Disjoint index ranges an inbound session remembers for replay detection. When
 * more would be needed the two oldest ranges merge: the indices between them then
 * count as seen (refused), never as unseen. */
#define PT_MEGOLM_MAX_RANGES 256

/* ---- the ratchet ------------------------------------------------------------- */

typedef struct pt_megolm_ratchet {
    uint8_t data[PT_MEGOLM_PARTS][PT_MEGOLM_PART_LEN]; /* R(i,0) .. R(i,3) */
    uint32_t counter;                                  /* i */
} pt_megolm_ratchet;

/* One step: i -> i + 1, rehashing R(h)..R(3) where h is the highest part whose
 * byte of the counter changed. A counter at UINT32_MAX wraps to 0, as libolm's. */
int pt_megolm_ratchet_advance(pt_megolm_ratchet *r) PT_WUR;
/* Jumps to index `to` (>= r->counter, a contract) with at most 255 rehashes of
 * each part: O(1024) HMACs whatever the distance, the same result as stepping. */
int pt_megolm_ratchet_advance_to(pt_megolm_ratchet *r, uint32_t to) PT_WUR;

/* ---- the group message codec -------------------------------------------------- */

/* A decoded group message; pointers borrow the input buffer. */
typedef struct pt_megolm_msg {
    uint8_t version;           /* PT_MEGOLM_MSG_VERSION after a successful decode */
    uint32_t index;            /* Message-Index (tag 0x08) */
    const uint8_t *ciphertext; /* Cipher-Text (tag 0x12) */
    size_t ciphertext_len;     /* a positive multiple of 16 */
    const uint8_t *mac;        /* PT_MEGOLM_MAC_LEN bytes */
    const uint8_t *sig;        /* PT_MEGOLM_SIG_LEN bytes */
    size_t mac_covered_len;    /* bytes the MAC covers: version + payload */
    size_t signed_len;         /* bytes the signature covers: all but the signature */
} pt_megolm_msg;

/* Parses version || payload || MAC || signature without checking either tag. The
 * payload is protobuf-like: both known fields exactly once, unknown varint (wire
 * type 0) and length-delimited (2) fields skipped as libolm does. PT_ERR_TOO_BIG
 * above PT_MEGOLM_MAX_MESSAGE, PT_ERR_VERSION for another version byte,
 * PT_ERR_DECODE for anything malformed. A pure function: a fuzz target. */
int pt_megolm_msg_decode(pt_megolm_msg *m, const uint8_t *buf, size_t len) PT_WUR;

/* ---- outbound sessions -------------------------------------------------------- */

typedef struct pt_megolm_out pt_megolm_out;

/* A new session: 128 random bytes for the ratchet then a 32-byte Ed25519 seed,
 * read from env in libolm's order (same randomness, same session). Index 0. */
pt_megolm_out *pt_megolm_out_new(const pt_env *env, pt_err *err);
void pt_megolm_out_free(pt_megolm_out *s); /* NULL is a no-op; wipes every secret */

/* The index the next message will carry. */
uint32_t pt_megolm_out_index(const pt_megolm_out *s);
/* The session id (the signing public key; libolm shows it base64). */
void pt_megolm_out_id(const pt_megolm_out *s, uint8_t id[static PT_MEGOLM_ID_LEN]);
/* The session key at the current index, signed: give it (over a 1:1 channel) to
 * every member allowed to read from this index on. */
int pt_megolm_out_session_key(const pt_megolm_out *s,
                              uint8_t key[static PT_MEGOLM_SESSION_KEY_LEN]) PT_WUR;
/* Encrypts len (<= PT_MEGOLM_MAX_PLAINTEXT) bytes into one message appended to
 * out and advances the ratchet. PT_ERR_STATE when the index would wrap past
 * UINT32_MAX: start a new session. PT_ERR_TOO_BIG for a long plaintext. */
int pt_megolm_out_encrypt(pt_megolm_out *s, pt_buf *out, const uint8_t *pt, size_t len) PT_WUR;

/* Storage: "PTMO" || 1 || u32le index || ratchet || Ed25519 seed || SHA-256 of
 * the rest. The checksum catches corruption, not an attacker: the client store
 * seals the blob. Restore refuses any other length, version or checksum. */
int pt_megolm_out_serialize(const pt_megolm_out *s, pt_buf *out) PT_WUR;
pt_megolm_out *pt_megolm_out_restore(const uint8_t *buf, size_t len, pt_err *err);

/* ---- inbound sessions --------------------------------------------------------- */

typedef struct pt_megolm_in pt_megolm_in;

/* From a session key (version 2): the signature must verify. PT_ERR_DECODE for a
 * wrong length, PT_ERR_VERSION for another version, PT_ERR_AUTH for a bad
 * signature. */
pt_megolm_in *pt_megolm_in_from_session_key(const uint8_t *key, size_t len, pt_err *err);
/* From an exported key (version 1, unsigned): the session counts as verified only
 * once a message decrypts under it. */
pt_megolm_in *pt_megolm_in_from_export(const uint8_t *key, size_t len, pt_err *err);
void pt_megolm_in_free(pt_megolm_in *s); /* NULL is a no-op; wipes every secret */

void pt_megolm_in_id(const pt_megolm_in *s, uint8_t id[static PT_MEGOLM_ID_LEN]);
/* The earliest index this session can decrypt. */
uint32_t pt_megolm_in_first_index(const pt_megolm_in *s);
/* True when the key came signed or a message has decrypted under it. */
bool pt_megolm_in_verified(const pt_megolm_in *s);
/* True when a message with this index has been decrypted (or counts as seen after
 * a merge of replay ranges). */
bool pt_megolm_in_seen(const pt_megolm_in *s, uint32_t index);

#define PT_MEGOLM_ALLOW_REPLAY 1u /* decrypt an index already decrypted */

/* Verifies and decrypts one message, appending the plaintext to out. *index (may
 * be NULL) receives the message index as soon as the message parses.
 * PT_ERR_DECODE / PT_ERR_VERSION / PT_ERR_TOO_BIG: malformed; PT_ERR_AUTH: bad
 * signature, MAC or padding; PT_ERR_NOT_FOUND: index below the first known one;
 * PT_ERR_REPLAY: index already decrypted (unless flags has
 * PT_MEGOLM_ALLOW_REPLAY). On any error out is left as it was. */
int pt_megolm_in_decrypt(pt_megolm_in *s, pt_buf *out, uint32_t *index, const uint8_t *msg,
                         size_t len, unsigned flags) PT_WUR;
/* The exported key (version 1) at `index` (>= the first known one, else
 * PT_ERR_NOT_FOUND), for backup or for a member who may read from there on. */
int pt_megolm_in_export(pt_megolm_in *s, uint32_t index,
                        uint8_t key[static PT_MEGOLM_EXPORT_LEN]) PT_WUR;

/* Storage: "PTMI" || 1 || u32le first || R(first) || u32le latest || R(latest) ||
 * public key || flags || u16le n || n * (u32le lo, u32le hi) || SHA-256 of the
 * rest. Restore refuses wrong lengths, versions, flags, checksums, unordered or
 * overlapping ranges, and a latest ratchet that is not the first one advanced. */
int pt_megolm_in_serialize(const pt_megolm_in *s, pt_buf *out) PT_WUR;
pt_megolm_in *pt_megolm_in_restore(const uint8_t *buf, size_t len, pt_err *err);

#endif /* PT_MEGOLM_H */
