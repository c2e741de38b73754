/*
 * src/e2e - the 1:1 end-to-end layer: Olm's construction (triple-DH session setup,
 * Double Ratchet) with two message suites chosen per session by the initiator:
 *
 *   olm.v1  byte-compatible with libolm (version byte 3, protobuf-style fields,
 *           AES-256-CBC + HMAC-SHA-256/8, KDF labels OLM_ROOT / OLM_RATCHET /
 *           OLM_KEYS): our sessions talk to libolm's.
 *   pt.v1   the same ratchet under labels PT1_ROOT / PT1_RATCHET / PT1_KEYS,
 *           messages sealed with XChaCha20-Poly1305 (full 16-byte tag) with the
 *           header as associated data; version bytes 0x50 / 0x51. The default.
 *
 * docs/PROTOCOL.md §8.1 is the byte-level spec. Conventions: functions return 0 or a
 * negative pt_err; constructors return NULL and write *err (which may be NULL).
 * Bytes from peers (messages, bundles, pickles) are validated and answered with an
 * error code, never an assert; on any error the state is unchanged. Randomness
 * comes only from the pt_env passed in. Handles are used by one thread at a time.
 */
#ifndef PT_OLM_H
#define PT_OLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pt_common.h"

#define PT_OLM_KEY_LEN 32        /* Curve25519 / Ed25519 public keys, chain keys */
#define PT_OLM_SIG_LEN 64        /* Ed25519 signature */
#define PT_OLM_SESSION_ID_LEN 32 /* SHA-256(alice identity ‖ alice base ‖ bob one-time key) */
#define PT_OLM_MAX_ONE_TIME_KEYS 100   /* as libolm; generating more drops the oldest */
#define PT_OLM_MAX_RECEIVER_CHAINS 5   /* as libolm: older chains are forgotten */
#define PT_OLM_MAX_SKIP_PER_CHAIN 1000 /* skipped message keys kept per chain (and max gap) */
#define PT_OLM_MAX_SKIPPED 5000        /* skipped message keys kept per session */
#define PT_OLM_MAX_PLAINTEXT 65536     /* largest message we encrypt or accept */
#define PT_OLM_MIN_PICKLE_KEY 16       /* shortest pickle key accepted */

/* Message suites; a set of suites is their bitwise OR. */
typedef enum pt_olm_suite {
    PT_OLM_SUITE_OLM_V1 = 0x01,
    PT_OLM_SUITE_PT_V1 = 0x02,
} pt_olm_suite;
#define PT_OLM_SUITES_ALL (PT_OLM_SUITE_OLM_V1 | PT_OLM_SUITE_PT_V1)

/* Message types, numbered as libolm's OLM_MESSAGE_TYPE_*. */
typedef enum pt_olm_msg_type {
    PT_OLM_MSG_PREKEY = 0, /* the initiator's messages until it hears back */
    PT_OLM_MSG_NORMAL = 1,
} pt_olm_msg_type;

/* ---- bundles ------------------------------------------------------------------------ */

/* What a device publishes so others can start sessions with it: its identity keys,
 * one one-time (or fallback) key and the suites it accepts, signed by its Ed25519
 * key. The signature covers the suites, so a relay cannot downgrade pt.v1 away. */
#define PT_OLM_BUNDLE_VERSION 1
#define PT_OLM_BUNDLE_LEN 167
#define PT_OLM_BUNDLE_FALLBACK 0x01 /* flags: the key is the fallback key */
typedef struct pt_olm_bundle {
    uint8_t identity_key[PT_OLM_KEY_LEN]; /* Curve25519 identity key */
    uint8_t signing_key[PT_OLM_KEY_LEN];  /* Ed25519 identity (signing) key */
    uint8_t suites;                       /* pt_olm_suite set; unknown bits kept and signed */
    uint8_t flags;                        /* PT_OLM_BUNDLE_FALLBACK or 0 */
    uint32_t key_id;                      /* the account's id for one_time_key */
    uint8_t one_time_key[PT_OLM_KEY_LEN]; /* Curve25519 one-time or fallback key */
    uint8_t signature[PT_OLM_SIG_LEN];    /* Ed25519 over the domain label and bytes 0..102 */
} pt_olm_bundle;

/* Fixed layout, PT_OLM_BUNDLE_LEN bytes. */
void pt_olm_bundle_encode(uint8_t out[static PT_OLM_BUNDLE_LEN], const pt_olm_bundle *b);
/* Structure only (exact length, version, flags); PT_ERR_DECODE / PT_ERR_VERSION. */
int pt_olm_bundle_decode(pt_olm_bundle *out, const uint8_t *buf, size_t len) PT_WUR;
/* 0 when the signature verifies under b->signing_key, else PT_ERR_AUTH. */
int pt_olm_bundle_verify(const pt_olm_bundle *b) PT_WUR;

/* ---- accounts ----------------------------------------------------------------------- */

typedef struct pt_olm_account pt_olm_account;

typedef struct pt_olm_key {
    uint32_t id;                 /* account-local id, increasing from 1 */
    uint8_t key[PT_OLM_KEY_LEN]; /* Curve25519 public key */
} pt_olm_key;

/* A new device identity: 64 bytes of env randomness, the first 32 the Ed25519 seed
 * and the next 32 the Curve25519 private key (libolm's olm_create_account order,
 * so the same bytes give the same keys). suites: what this device accepts as a
 * responder and offers as an initiator (non-empty subset of PT_OLM_SUITES_ALL). */
pt_olm_account *pt_olm_account_new(const pt_env *env, uint8_t suites, pt_err *err);
void pt_olm_account_free(pt_olm_account *a); /* NULL is a no-op; wipes */

void pt_olm_account_identity(const pt_olm_account *a, uint8_t curve[static PT_OLM_KEY_LEN],
                             uint8_t ed[static PT_OLM_KEY_LEN]);
uint8_t pt_olm_account_suites(const pt_olm_account *a);
int pt_olm_account_sign(const pt_olm_account *a, uint8_t sig[static PT_OLM_SIG_LEN],
                        const uint8_t *msg, size_t len);

/* Makes n one-time keys (32 env bytes each); beyond PT_OLM_MAX_ONE_TIME_KEYS the
 * oldest are dropped, as libolm does. */
int pt_olm_account_generate_one_time_keys(pt_olm_account *a, const pt_env *env, size_t n) PT_WUR;
/* Copies up to cap unpublished one-time keys (oldest first); returns how many. */
size_t pt_olm_account_unpublished_keys(const pt_olm_account *a, pt_olm_key *out, size_t cap);
/* The number of one-time keys held (published or not). */
size_t pt_olm_account_one_time_key_count(const pt_olm_account *a);
/* Marks every one-time key and the fallback key published. */
void pt_olm_account_mark_published(pt_olm_account *a);
/* A new fallback key; the previous one is kept until forgotten (as libolm). */
int pt_olm_account_generate_fallback_key(pt_olm_account *a, const pt_env *env) PT_WUR;
/* The current fallback key, or PT_ERR_NOT_FOUND. */
int pt_olm_account_fallback_key(const pt_olm_account *a, pt_olm_key *out) PT_WUR;
void pt_olm_account_forget_old_fallback_key(pt_olm_account *a);
/* A signed bundle for the one-time or fallback key with this id (PT_ERR_NOT_FOUND). */
int pt_olm_account_bundle(const pt_olm_account *a, uint32_t key_id, pt_olm_bundle *out) PT_WUR;

/* Sealed serialisation (format in docs/PROTOCOL.md §8.1): appends to out. The key is
 * any caller secret of at least PT_OLM_MIN_PICKLE_KEY bytes; 24 env bytes. */
int pt_olm_account_pickle(const pt_olm_account *a, const pt_env *env, const uint8_t *key,
                          size_t keylen, pt_buf *out) PT_WUR;
/* PT_ERR_AUTH for a wrong key or any change to the bytes, PT_ERR_DECODE for a
 * malformed body, PT_ERR_VERSION for another format; nothing half-loaded. */
pt_olm_account *pt_olm_account_unpickle(const uint8_t *key, size_t keylen, const uint8_t *in,
                                        size_t len, pt_err *err);

/* ---- sessions ----------------------------------------------------------------------- */

typedef struct pt_olm_session pt_olm_session;

/* Starts a session to the device of a bundle: verifies its signature, then picks
 * pt.v1 when both sides have it, else olm.v1 (PT_ERR_NO_SUITE when none). Uses 64
 * env bytes (base key, first ratchet key). `a` is borrowed for the call only. */
pt_olm_session *pt_olm_session_new_outbound(const pt_olm_account *a, const pt_env *env,
                                            const pt_olm_bundle *bundle, pt_err *err);
/* The same from bare keys and a chosen suite: what Olm users exchange (and how
 * the interop tests meet libolm). No signature to check: the caller vouches. */
pt_olm_session *pt_olm_session_new_outbound_raw(const pt_olm_account *a, const pt_env *env,
                                                pt_olm_suite suite,
                                                const uint8_t their_identity[static PT_OLM_KEY_LEN],
                                                const uint8_t their_one_time[static PT_OLM_KEY_LEN],
                                                pt_err *err);
/* Answers a pre-key message: finds our one-time (or fallback) key, runs the triple
 * DH, decrypts the message into out (appended) and only then removes the one-time
 * key from the account and returns the session. The suite is the message's, and
 * must be one the account accepts. their_identity may be NULL; when given, the
 * message must come from it (PT_ERR_KEY_MISMATCH). On error the account is
 * unchanged and nothing is appended. */
pt_olm_session *pt_olm_session_new_inbound(pt_olm_account *a, const uint8_t *their_identity,
                                           const uint8_t *msg, size_t len, pt_buf *out,
                                           pt_err *err);
void pt_olm_session_free(pt_olm_session *s); /* NULL is a no-op; wipes */

/* True when a pre-key message belongs to this (inbound) session: later pre-key
 * messages of an initiator that has not heard back go to the session they made. */
bool pt_olm_session_matches_inbound(const pt_olm_session *s, const uint8_t *msg, size_t len);
void pt_olm_session_id(const pt_olm_session *s, uint8_t id[static PT_OLM_SESSION_ID_LEN]);
pt_olm_suite pt_olm_session_suite(const pt_olm_session *s);
bool pt_olm_session_has_received(const pt_olm_session *s);
/* The type the next pt_olm_encrypt() will produce. */
pt_olm_msg_type pt_olm_session_next_type(const pt_olm_session *s);
/* The peer's Curve25519 identity key. */
void pt_olm_session_their_identity(const pt_olm_session *s, uint8_t key[static PT_OLM_KEY_LEN]);

/* Encrypts len bytes (at most PT_OLM_MAX_PLAINTEXT) and appends the message to out;
 * *type receives its pt_olm_msg_type. Takes 32 env bytes when the sending direction
 * has changed (a new ratchet key), none otherwise. */
int pt_olm_encrypt(pt_olm_session *s, const pt_env *env, const uint8_t *pt, size_t len, pt_buf *out,
                   pt_olm_msg_type *type) PT_WUR;
/* Decrypts and appends the plaintext to out. PT_ERR_DECODE / PT_ERR_VERSION for a
 * malformed message or the other suite's, PT_ERR_AUTH when it does not verify
 * (including a message key already used: duplicates and replays),
 * PT_ERR_TOO_BIG when it lies more than PT_OLM_MAX_SKIP_PER_CHAIN ahead,
 * PT_ERR_PROTO for a pre-key message that does not belong to the session or a new
 * chain of theirs before we have answered their last. */
int pt_olm_decrypt(pt_olm_session *s, pt_olm_msg_type type, const uint8_t *msg, size_t len,
                   pt_buf *out) PT_WUR;

/* Sealed serialisation of the whole session state, as for accounts. */
int pt_olm_session_pickle(const pt_olm_session *s, const pt_env *env, const uint8_t *key,
                          size_t keylen, pt_buf *out) PT_WUR;
pt_olm_session *pt_olm_session_unpickle(const uint8_t *key, size_t keylen, const uint8_t *in,
                                        size_t len, pt_err *err);

/* ---- message codecs (pure; each is a fuzz target) -------------------------------------- */

#define PT_OLM_V1_VERSION 3             /* olm.v1: both message types */
#define PT_OLM_PT1_PREKEY 0x50          /* pt.v1 pre-key message */
#define PT_OLM_PT1_NORMAL 0x51          /* pt.v1 normal message */
#define PT_OLM_V1_MAC_LEN 8             /* Olm's truncated HMAC-SHA-256 */
#define PT_OLM_PT1_TAG_LEN 16           /* Poly1305 */
#define PT_OLM_PT1_HEADER_LEN 37        /* version, ratchet key, counter (u32 LE) */
#define PT_OLM_PT1_PREKEY_HEADER_LEN 97 /* version, one-time, base, identity keys */

/* A normal message, decoded in place: pointers into the input. */
typedef struct pt_olm_msg {
    uint8_t version;
    const uint8_t *ratchet_key; /* PT_OLM_KEY_LEN bytes */
    uint32_t counter;           /* chain index of the message key */
    const uint8_t *ciphertext;  /* AES-CBC ciphertext (olm.v1) or ciphertext ‖ tag (pt.v1) */
    size_t ciphertext_len;
    const uint8_t *mac; /* olm.v1: the PT_OLM_V1_MAC_LEN bytes at the end; pt.v1: NULL */
    size_t authed_len;  /* olm.v1: bytes under the MAC; pt.v1: header (AD) length */
} pt_olm_msg;

/* A pre-key message, decoded in place. */
typedef struct pt_olm_prekey {
    uint8_t version;
    const uint8_t *one_time_key; /* the responder's key it was sent to */
    const uint8_t *base_key;     /* the initiator's ephemeral key */
    const uint8_t *identity_key; /* the initiator's Curve25519 identity key */
    const uint8_t *message;      /* the normal message inside */
    size_t message_len;
} pt_olm_prekey;

/* Decodes a normal message of the suite: PT_ERR_VERSION for another version byte
 * (another suite's message included), PT_ERR_DECODE for anything malformed. */
int pt_olm_msg_decode(pt_olm_msg *m, pt_olm_suite suite, const uint8_t *buf, size_t len) PT_WUR;
int pt_olm_prekey_decode(pt_olm_prekey *p, pt_olm_suite suite, const uint8_t *buf,
                         size_t len) PT_WUR;
/* The suite a pre-key message claims (by its version byte), or PT_ERR_VERSION. */
int pt_olm_prekey_suite(const uint8_t *buf, size_t len) PT_WUR;
/* Re-encodes a decoded message canonically (appends): the decoders' round-trip
 * check; for olm.v1 the MAC bytes follow the ciphertext in the input. */
int pt_olm_msg_encode(pt_buf *out, pt_olm_suite suite, const pt_olm_msg *m) PT_WUR;
int pt_olm_prekey_encode(pt_buf *out, pt_olm_suite suite, const pt_olm_prekey *p) PT_WUR;

#endif /* PT_OLM_H */
