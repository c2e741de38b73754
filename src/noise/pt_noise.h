/*
 * src/noise - the Noise Protocol Framework (revision 34) handshake engine.
 *
 * Supports the fundamental one-way and interactive patterns (N K X NN NK NX XN XK
 * XX KN KK KX IN IK IX) with DH = 25519 and two cipher/hash pairs:
 * ChaChaPoly_BLAKE2b and AESGCM_SHA256. Ephemeral keys come from env->random, so
 * test vectors inject them through the environment. The engine is a pure state
 * machine: bytes in, bytes out; it never touches the network or a clock.
 */
#ifndef PT_NOISE_H
#define PT_NOISE_H

#include <stdbool.h>

#include "common/pt_common.h"
#include "crypto/pt_crypto.h"

#define PT_NOISE_MAX_MSG 65535  /* Noise's limit on one handshake or transport message */
#define PT_NOISE_KEY_LEN 32
#define PT_NOISE_TAG_LEN 16
#define PT_NOISE_MAX_HASH 64

typedef enum pt_noise_pattern {
    PT_NOISE_N = 0, PT_NOISE_K, PT_NOISE_X,
    PT_NOISE_NN, PT_NOISE_NK, PT_NOISE_NX,
    PT_NOISE_XN, PT_NOISE_XK, PT_NOISE_XX,
    PT_NOISE_KN, PT_NOISE_KK, PT_NOISE_KX,
    PT_NOISE_IN, PT_NOISE_IK, PT_NOISE_IX,
    PT_NOISE_PATTERN_COUNT
} pt_noise_pattern;

typedef enum pt_noise_suite {
    PT_NOISE_CHACHAPOLY_BLAKE2B = 0, /* Noise_*_25519_ChaChaPoly_BLAKE2b */
    PT_NOISE_AESGCM_SHA256 = 1,      /* Noise_*_25519_AESGCM_SHA256 */
} pt_noise_suite;

/* Pattern name ("XX") to enum; 0 or PT_ERR_INVAL. */
int pt_noise_pattern_from_name(const char *name, pt_noise_pattern *out);
const char *pt_noise_pattern_name(pt_noise_pattern p);
/* Whether the pattern needs the initiator's / responder's static key up front. */
bool pt_noise_needs_local_static(pt_noise_pattern p, bool initiator);
bool pt_noise_needs_remote_static(pt_noise_pattern p, bool initiator);

/* A CipherState: one direction of a transport session after Split(). */
typedef struct pt_noise_cs {
    pt_aead *aead;       /* NULL until a key is set */
    pt_noise_suite suite;
    uint64_t n;          /* next nonce */
} pt_noise_cs;

/* Encrypts len bytes; out receives len + 16 bytes (out may equal in). */
int pt_noise_cs_encrypt(pt_noise_cs *c, uint8_t *out, const uint8_t *ad, size_t adlen,
                        const uint8_t *in, size_t len) PT_WUR;
/* Decrypts len bytes (incl. tag); out receives len - 16 bytes. The nonce only
 * advances on success, so a forged message does not desynchronise the session. */
int pt_noise_cs_decrypt(pt_noise_cs *c, uint8_t *out, const uint8_t *ad, size_t adlen,
                        const uint8_t *in, size_t len) PT_WUR;
void pt_noise_cs_clear(pt_noise_cs *c); /* frees and wipes the key */
/* Gives back what the next use makes again from the key (pt_aead_trim). */
void pt_noise_cs_trim(pt_noise_cs *c);

typedef struct pt_noise_hs pt_noise_hs;

/* Starts a handshake. local_sk (32 bytes) is required when the pattern sends or
 * pre-shares our static key; remote_pk when it pre-shares theirs (IK, NK, KK, ...).
 * Both are copied. env is borrowed and must outlive the handshake. */
pt_noise_hs *pt_noise_hs_new(const pt_env *env, pt_noise_pattern pattern, pt_noise_suite suite,
                             bool initiator, const uint8_t *prologue, size_t prologue_len,
                             const uint8_t *local_sk, const uint8_t *remote_pk);
/* As pt_noise_hs_new with the static public key given (it must belong to
 * local_sk): a server saves one X25519 base multiplication per handshake. */
pt_noise_hs *pt_noise_hs_new_kp(const pt_env *env, pt_noise_pattern pattern, pt_noise_suite suite,
                                bool initiator, const uint8_t *prologue, size_t prologue_len,
                                const uint8_t *local_sk, const uint8_t *local_pk,
                                const uint8_t *remote_pk);
void pt_noise_hs_free(pt_noise_hs *hs); /* NULL is a no-op; wipes every secret */

bool pt_noise_hs_my_turn(const pt_noise_hs *hs); /* true when the next step is a write */
bool pt_noise_hs_done(const pt_noise_hs *hs);    /* all handshake messages processed */

/* Writes the next handshake message carrying payload; appends it to out. */
int pt_noise_hs_write(pt_noise_hs *hs, pt_buf *out, const uint8_t *payload, size_t len) PT_WUR;
/* Reads the next handshake message; appends its payload to payload_out. Any
 * failure (bad length, bad tag, weak key) is final: the handshake is dead. */
int pt_noise_hs_read(pt_noise_hs *hs, pt_buf *payload_out, const uint8_t *msg,
                     size_t len) PT_WUR;
/* After done: the two transport CipherStates (send, recv) for this side. */
int pt_noise_hs_split(pt_noise_hs *hs, pt_noise_cs *send, pt_noise_cs *recv) PT_WUR;
/* After done: raw split keys (initiator->responder, responder->initiator), for
 * suites that derive their own record keys. Each 32 bytes. */
int pt_noise_hs_split_keys(pt_noise_hs *hs, uint8_t k1[static 32], uint8_t k2[static 32]) PT_WUR;
/* The handshake hash h (channel binding); *len receives its length. */
const uint8_t *pt_noise_hs_hash(const pt_noise_hs *hs, size_t *len);
/* The peer's static public key once known (after the message carrying it), else NULL. */
const uint8_t *pt_noise_hs_remote_static(const pt_noise_hs *hs);

#endif /* PT_NOISE_H */
