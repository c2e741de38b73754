/*
 * src/channel - the secure channel between a client and packtrackd.
 *
 * A sans-IO state machine: the caller feeds bytes read from the socket and sends
 * the bytes the channel appends to its output buffer. The wire (docs/PROTOCOL.md):
 *   client hello (clear)  "PTK" ver=1 pattern nsuites suite[nsuites]
 *   server hello (clear)  "PTK" ver=1 status suite
 *   frames                u32le length ‖ bytes   (Noise handshake messages, then records)
 * Both hellos are bound into the Noise prologue, so tampering with the
 * negotiation (a downgrade) makes the handshake fail.
 */
#ifndef PT_CHAN_H
#define PT_CHAN_H

#include <stdbool.h>

#include "common/pt_common.h"
#include "noise/pt_noise.h"

#define PT_CHAN_VERSION 1
#define PT_CHAN_MAX_SUITES 8
#define PT_CHAN_HELLO_MAX (6 + PT_CHAN_MAX_SUITES)
#define PT_CHAN_SERVER_HELLO_LEN 6
#define PT_CHAN_FRAME_HDR 4
/* Largest record plaintext: a 64 KiB end-to-end envelope plus RPC and session
 * headers and containers. Frames above PT_CHAN_FRAME_MAX close the connection
 * before anything is allocated for them. */
#define PT_CHAN_RECORD_MAX (128 * 1024)
#define PT_CHAN_FRAME_MAX (PT_CHAN_RECORD_MAX + 2048)

/* Channel-cipher suites; the byte is the wire id. */
typedef enum pt_suite {
    PT_SUITE_CHACHAPOLY_BLAKE2B = 1, /* PT1-CHACHAPOLY-BLAKE2B */
    PT_SUITE_AESGCM_SHA256 = 2,      /* PT1-AESGCM-SHA256 */
    PT_SUITE_AES128CTR_SHA256 = 3,   /* ECDHE-AES128_CTR-SHA256 */
    PT_SUITE_AES256CTR_SHA384 = 4,   /* ECDHE-AES256_CTR-SHA384 */
    PT_SUITE_MTPROTO2 = 5,           /* MTPROTO2-AES256IGE */
} pt_suite;
#define PT_SUITE_MIN 1
#define PT_SUITE_MAX 5

const char *pt_suite_name(int suite); /* NULL when unknown */
int pt_suite_from_name(const char *name); /* suite id, or PT_ERR_INVAL */
/* Parses "A,B,C" into ids (at most max); returns the count or PT_ERR_INVAL. */
int pt_suite_list_parse(const char *list, uint8_t *out, size_t max);
/* The default preference order, written to out; returns the count (all five suites, or
 * the two AEAD suites with aead_only). The AEAD suites come first: PT1-AESGCM-SHA256
 * ahead of PT1-CHACHAPOLY-BLAKE2B when aes_hw (pt_suite_defaults: when the CPU has
 * AES instructions, pt_aead_aesgcm_hw), ChaCha20 first otherwise. */
size_t pt_suite_defaults_for(bool aes_hw, bool aead_only, uint8_t out[static PT_CHAN_MAX_SUITES]);
size_t pt_suite_defaults(bool aead_only, uint8_t out[static PT_CHAN_MAX_SUITES]);

/* Handshake pattern byte in the client hello. */
#define PT_CHAN_PATTERN_XX 1
#define PT_CHAN_PATTERN_IK 2

/* Server hello status. */
#define PT_CHAN_STATUS_OK 0
#define PT_CHAN_STATUS_NO_SUITE 1
#define PT_CHAN_STATUS_VERSION 2
#define PT_CHAN_STATUS_PATTERN 3

typedef struct pt_chan_config {
    bool is_server;
    const uint8_t *suites;     /* preference order; client: offered, server: allowed */
    size_t nsuites;
    const uint8_t *static_sk;  /* our X25519 static private key (32 bytes) */
    const uint8_t *static_pk;  /* its public key, or NULL to derive it here */
    const uint8_t *server_pk;  /* client: the pinned server key, or NULL (first use) */
    bool use_ik;               /* client: IK (needs server_pk) instead of XX */
} pt_chan_config;

typedef struct pt_chan pt_chan;

/* Called once per authenticated record with its plaintext (valid during the call).
 * A non-zero return stops input processing and is returned by pt_chan_input. */
typedef int (*pt_chan_record_cb)(void *ud, const uint8_t *rec, size_t len);

/* The config is copied. env is borrowed and must outlive the channel. */
pt_chan *pt_chan_new(const pt_env *env, const pt_chan_config *cfg, int *err);
void pt_chan_free(pt_chan *c); /* NULL is a no-op; wipes keys */
/* Gives back the memory of empty buffers (an idle connection); not inside input. */
void pt_chan_trim(pt_chan *c);

/* Client: appends the client hello to out. */
int pt_chan_start(pt_chan *c, pt_buf *out) PT_WUR;
/* Feeds received bytes. Handshake replies are appended to out; each record is
 * passed to cb. Errors are final (PT_ERR_AUTH, PT_ERR_DECODE, PT_ERR_TOO_BIG,
 * PT_ERR_NO_SUITE, PT_ERR_VERSION, PT_ERR_PROTO, PT_ERR_REPLAY,
 * PT_ERR_KEY_MISMATCH): close the connection. The server may still have appended
 * a server hello with an error status to out, which should be sent first. */
int pt_chan_input(pt_chan *c, const uint8_t *data, size_t len, pt_buf *out, pt_chan_record_cb cb,
                  void *ud) PT_WUR;
/* Appends one framed, encrypted record holding plaintext[0..len) to out. */
int pt_chan_seal(pt_chan *c, pt_buf *out, const uint8_t *plaintext, size_t len) PT_WUR;

bool pt_chan_established(const pt_chan *c);
int pt_chan_suite(const pt_chan *c);          /* 0 before the server hello */
/* The peer's static key (32 bytes) once authenticated, else NULL. */
const uint8_t *pt_chan_remote_static(const pt_chan *c);
/* The static key the peer presented, even when it was refused with
 * PT_ERR_KEY_MISMATCH (for the error message); NULL before it was received. */
const uint8_t *pt_chan_presented_static(const pt_chan *c);
/* The Noise handshake hash once established (channel binding), else NULL. */
const uint8_t *pt_chan_handshake_hash(const pt_chan *c, size_t *len);
/* Bytes buffered but not yet a whole frame (for idle/slowloris accounting). */
size_t pt_chan_pending_input(const pt_chan *c);

#endif /* PT_CHAN_H */
