/*
 * src/obfs MSE - BitTorrent Message Stream Encryption (PHE) v1.0, byte-exact
 * (docs/PROTOCOL.md §10; the frozen spec in ../shared/seeds/003_*).
 *
 * A sans-IO state machine: the caller feeds the bytes it read and sends the bytes
 * the machine appends to `out`; once the handshake is done the inbound payload
 * stream (first the initiator's IA, then everything after it) is appended,
 * decrypted, to `payload`, and pt_mse_seal() encrypts what the caller sends.
 *
 * It is obfuscation, not security: 768-bit DH, SHA-1 and RC4 keep a passive
 * observer from recognising the protocol, nothing more. The Noise channel carried
 * inside (its first message travels as IA) provides the security.
 *
 * Timeouts: the machine never reads a clock on its own initiative except in
 * pt_mse_input() and pt_mse_check_timeout(); the caller must call the latter at
 * pt_mse_deadline_ms() (monotonic, pt_env) at the latest, or a peer that goes
 * quiet would hold the handshake open forever.
 */
#ifndef PT_MSE_H
#define PT_MSE_H

#include <stdbool.h>

#include "common/pt_common.h"

#define PT_MSE_DH_LEN 96           /* Ya, Yb */
#define PT_MSE_PAD_MAX 512         /* PadA..PadD */
#define PT_MSE_IA_MAX 65535        /* len(IA) is 16 bits */
#define PT_MSE_SKEY_MAX 64         /* longest SKEY we take (BitTorrent: 20) */
#define PT_MSE_SKEYS_MAX 16        /* streams one receiver serves */
#define PT_MSE_EARLY_MAX 608       /* 96 + 512: most bytes before the peer's DH step is answered */
#define PT_MSE_SYNC_B 628          /* HASH('req1', S) ends within this many bytes */
#define PT_MSE_SYNC_A 616          /* ENCRYPT(VC) ends within this many bytes */
#define PT_MSE_TIMEOUT_MS 30000    /* default handshake timeout */
#define PT_MSE_RC4_DROP 1024       /* keystream bytes discarded */

#define PT_MSE_CRYPTO_PLAIN 0x01u
#define PT_MSE_CRYPTO_RC4 0x02u
#define PT_MSE_CRYPTO_KNOWN 0x03u

/* pt_mse_input() results besides negative errors. */
#define PT_MSE_NEED_MORE 0
#define PT_MSE_DONE 1

/* Why a handshake failed. The first seven are the spec's optional
 * early-termination rules; each may be deferred (config.defer_rules): the
 * machine then stops answering, swallows input and reports the failure only at
 * the deadline, which is less recognisable than closing at once. */
typedef enum pt_mse_reason {
    PT_MSE_OK = 0,
    PT_MSE_RULE_SHORT = 1u << 0,   /* fewer than 96 bytes within dh_timeout_ms (PT_ERR_TIMEOUT) */
    PT_MSE_RULE_LONG = 1u << 1,    /* more than 608 bytes before our DH step (PT_ERR_TOO_BIG) */
    PT_MSE_RULE_SYNC = 1u << 2,    /* no req1 hash in 628 / no VC in 616 bytes (PT_ERR_PROTO) */
    PT_MSE_RULE_SKEY = 1u << 3,    /* receiver: SKEY hash names no stream of ours (PT_ERR_AUTH) */
    PT_MSE_RULE_VC = 1u << 4,      /* receiver: VC wrong after the SKEY hash (PT_ERR_AUTH) */
    PT_MSE_RULE_PROVIDE = 1u << 5, /* receiver: no acceptable method offered (PT_ERR_NO_SUITE) */
    PT_MSE_RULE_SELECT = 1u << 6,  /* initiator: method selected that we did not provide (PT_ERR_NO_SUITE) */
    PT_MSE_RULES_ALL = 0x7fu,
    PT_MSE_FAIL_FORMAT = 1u << 8,  /* pad length > 512 or a degenerate DH key (PT_ERR_PROTO, PT_ERR_WEAK_KEY) */
    PT_MSE_FAIL_TIMEOUT = 1u << 9, /* handshake not done by the deadline (PT_ERR_TIMEOUT) */
    PT_MSE_FAIL_INTERNAL = 1u << 10, /* crypto library or allocation failure */
} pt_mse_reason;

typedef struct pt_mse_skey {
    const uint8_t *data; /* the shared secret (BitTorrent: the 20-byte info-hash) */
    size_t len;          /* 1..PT_MSE_SKEY_MAX */
} pt_mse_skey;

typedef struct pt_mse_config {
    bool initiator;            /* A (opened the TCP connection) or B */
    const pt_mse_skey *skeys;  /* initiator: exactly one; receiver: the streams it serves */
    size_t nskeys;             /* 1..PT_MSE_SKEYS_MAX */
    uint32_t crypto;           /* initiator: crypto_provide; receiver: methods it accepts */
    bool prefer_plaintext;     /* receiver: select plaintext when both are possible */
    const uint8_t *ia;         /* initiator: initial payload, copied; may be NULL */
    size_t ia_len;             /* 0..PT_MSE_IA_MAX */
    uint16_t pad_ab_max;       /* PadA / PadB length drawn uniformly from 0..this (<= 512) */
    uint16_t pad_cd_max;       /* PadC / PadD length (zeros) from 0..this (<= 512) */
    uint32_t timeout_ms;       /* whole handshake; 0 = PT_MSE_TIMEOUT_MS */
    uint32_t dh_timeout_ms;    /* rule SHORT: peer's 96 DH bytes; 0 = PT_MSE_TIMEOUT_MS */
    unsigned defer_rules;      /* PT_MSE_RULE_* bits handled late instead of fail-fast */
} pt_mse_config;

/* Fills cfg with the defaults: both methods, RC4 preferred, pads 0..512 for
 * PadA/PadB and none for PadC/PadD, 30 s timeouts, every rule fail-fast. */
void pt_mse_config_init(pt_mse_config *cfg, bool initiator);

typedef struct pt_mse pt_mse;

/* The config (SKEYs and IA included) is copied. env is borrowed and must outlive
 * the handle; the deadline starts now. *err (may be NULL) gets 0 or PT_ERR_INVAL
 * / PT_ERR_NOMEM / PT_ERR_CRYPTO. */
pt_mse *pt_mse_new(const pt_env *env, const pt_mse_config *cfg, int *err);
void pt_mse_free(pt_mse *m); /* NULL is a no-op; wipes keys */

/* Initiator: appends step 1 (Ya, PadA) to out. Receiver: appends nothing (B
 * answers only once A's key has arrived). Call once, before pt_mse_input. */
int pt_mse_start(pt_mse *m, pt_buf *out) PT_WUR;

/* Feeds received bytes. Handshake bytes to send are appended to out; inbound
 * payload, decrypted, to payload. Returns PT_MSE_NEED_MORE, PT_MSE_DONE (on the
 * call that finishes the handshake and every later successful call) or a final
 * negative error (see pt_mse_reason for which): close the connection. */
int pt_mse_input(pt_mse *m, const uint8_t *in, size_t len, pt_buf *out, pt_buf *payload) PT_WUR;

/* Once done: appends ENCRYPT2(data) (RC4 or plaintext, as selected) to out.
 * PT_ERR_STATE before then. */
int pt_mse_seal(pt_mse *m, pt_buf *out, const uint8_t *data, size_t len) PT_WUR;

/* 0 while the handshake may still finish (or has), else its final error:
 * PT_ERR_TIMEOUT past the deadline, or a deferred rule's error. */
int pt_mse_check_timeout(pt_mse *m) PT_WUR;
/* Monotonic ms (pt_env) at which pt_mse_check_timeout must be called next;
 * UINT64_MAX once done or failed. */
uint64_t pt_mse_deadline_ms(const pt_mse *m);

bool pt_mse_done(const pt_mse *m);
uint32_t pt_mse_selected(const pt_mse *m);   /* PT_MSE_CRYPTO_RC4 / _PLAIN, 0 before done */
uint32_t pt_mse_provided(const pt_mse *m);   /* receiver: the peer's crypto_provide */
int pt_mse_skey_index(const pt_mse *m);      /* receiver: matching SKEY, -1 before */
pt_mse_reason pt_mse_failure(const pt_mse *m); /* PT_MSE_OK unless failed or doomed */
const char *pt_mse_reason_name(pt_mse_reason r);

/* PackTrack's SKEY: BLAKE2b-160 keyed with the network key (16..64 bytes) over
 * "PackTrack MSE SKEY v1" || 0x00 || server_id (docs/PROTOCOL.md §10). */
#define PT_MSE_PT_SKEY_LEN 20
int pt_mse_packtrack_skey(uint8_t out[static PT_MSE_PT_SKEY_LEN], const uint8_t *network_key,
                          size_t nklen, const char *server_id) PT_WUR;

#endif /* PT_MSE_H */
