/*
 * src/obfs pt-obfs - PackTrack's probe-resistant obfuscation, keyed by a network
 * key shared by the servers and clients of one deployment (docs/PROTOCOL.md §10
 * gives the exact formats and KDFs).
 *
 *   client first flight  nonce(24) ‖ XChaCha20(K_hdr, nonce)^(payload(32) ‖ u16be padlen)
 *                        ‖ pad(padlen) ‖ tag(32) = BLAKE2b(K_mac, label ‖ minute ‖ all before)
 *   then, both ways      records: u16be len ^ mask ‖ XChaCha20-Poly1305(data ‖ padding)
 *
 * A server accepts a first flight only when its tag verifies for the current
 * minute ±1 and its nonce is not in the replay cache. Anything else (wrong key,
 * random bytes, a replay, a stale clock, too few bytes before the deadline) gets
 * a reject verdict and no byte in answer: the caller stays silent or hands the
 * bytes received so far to a decoy service.
 *
 * It is obfuscation, not security: anyone holding the network key can read and
 * forge it. The Noise channel carried inside provides the security; the 32-byte
 * payload of the first flight is the client's Noise ephemeral key.
 *
 * Sans-IO like pt_chan; clocks and randomness come from the pt_env.
 */
#ifndef PT_PTOBFS_H
#define PT_PTOBFS_H

#include <stdbool.h>

#include "common/pt_common.h"

#define PT_OBFS_KEY_LEN 32          /* network key */
#define PT_OBFS_NONCE_LEN 24
#define PT_OBFS_PAYLOAD_LEN 32      /* the opaque first-flight payload */
#define PT_OBFS_TAG_LEN 32
#define PT_OBFS_HDR_LEN (PT_OBFS_NONCE_LEN + PT_OBFS_PAYLOAD_LEN + 2) /* 58 */
#define PT_OBFS_FLIGHT_PAD_MAX 1024 /* first-flight padding limit */
#define PT_OBFS_FLIGHT_MAX (PT_OBFS_HDR_LEN + PT_OBFS_FLIGHT_PAD_MAX + PT_OBFS_TAG_LEN)
#define PT_OBFS_WINDOW_MS 60000     /* timestamp granularity: one minute, ±1 accepted */
#define PT_OBFS_RECORD_DATA_MAX 16384 /* data bytes per record */
#define PT_OBFS_RECORD_PAD_MAX 4096 /* padding bytes per record */
#define PT_OBFS_RECORD_OVERHEAD (2 + 2 + 16) /* length, data length, tag */
#define PT_OBFS_RECORD_MAX (PT_OBFS_RECORD_OVERHEAD + PT_OBFS_RECORD_DATA_MAX + PT_OBFS_RECORD_PAD_MAX)
#define PT_OBFS_TIMEOUT_MS 30000

/* pt_obfs_input() results besides negative errors. */
#define PT_OBFS_NEED_MORE 0 /* nothing decided yet (server) / fine (established) */
#define PT_OBFS_ACCEPT 1    /* server: the first flight verified (once) */
#define PT_OBFS_SILENT 2    /* server: rejected, stay silent (final) */
#define PT_OBFS_DECOY 3     /* server: rejected, forward to the decoy (final) */

/* ---- replay cache, shared by all server connections of one thread ----------------- */
typedef struct pt_obfs_replay pt_obfs_replay;
/* Remembers up to capacity nonces, each until its minute has left the acceptance
 * window. When full of live entries, new first flights are refused (fail closed). */
pt_obfs_replay *pt_obfs_replay_new(size_t capacity);
void pt_obfs_replay_free(pt_obfs_replay *r); /* NULL is a no-op */
size_t pt_obfs_replay_count(pt_obfs_replay *r);

typedef struct pt_obfs_config {
    bool is_server;
    const uint8_t *network_key;   /* PT_OBFS_KEY_LEN bytes, copied */
    uint16_t flight_pad_max;      /* client: first-flight padding 0..this (<= 1024) */
    uint16_t record_pad_max;      /* records: padding 0..this per record (<= 4096) */
    uint32_t timeout_ms;          /* server: first flight; client: first record; 0 = 30 s */
    bool reject_to_decoy;         /* server: PT_OBFS_DECOY instead of PT_OBFS_SILENT */
    pt_obfs_replay *replay;       /* server: required, borrowed */
} pt_obfs_config;

/* Defaults: padding 0..512 in the first flight and 0..255 per record, 30 s. */
void pt_obfs_config_init(pt_obfs_config *cfg, bool is_server);

typedef struct pt_obfs pt_obfs;

/* env and cfg->replay are borrowed and must outlive the handle. *err may be NULL. */
pt_obfs *pt_obfs_new(const pt_env *env, const pt_obfs_config *cfg, int *err);
void pt_obfs_free(pt_obfs *o); /* NULL is a no-op; wipes keys */

/* Client: appends the first flight carrying payload to out. Records may be
 * sealed right after it. */
int pt_obfs_client_start(pt_obfs *o, const uint8_t payload[static PT_OBFS_PAYLOAD_LEN],
                         pt_buf *out) PT_WUR;

/* Feeds received bytes; record data is appended to `data`. Server: returns
 * PT_OBFS_NEED_MORE until it decides, then PT_OBFS_ACCEPT once (records that
 * followed the flight are already processed) and PT_OBFS_NEED_MORE afterwards; or
 * PT_OBFS_SILENT / PT_OBFS_DECOY, repeated for every later call. Negative errors
 * (PT_ERR_AUTH, PT_ERR_DECODE) come only from records after a verified flight
 * and are final; when such a record arrives in the same call as the flight, the
 * error is returned instead of PT_OBFS_ACCEPT. */
int pt_obfs_input(pt_obfs *o, const uint8_t *in, size_t len, pt_buf *data) PT_WUR;

/* Appends one record holding data[0..len) (len <= PT_OBFS_RECORD_DATA_MAX, 0 for
 * padding only) and pt_env-random padding. Client: after start; server: after
 * accept. PT_ERR_STATE otherwise. */
int pt_obfs_seal(pt_obfs *o, pt_buf *out, const uint8_t *data, size_t len) PT_WUR;

/* Server: PT_OBFS_SILENT / PT_OBFS_DECOY once the deadline has passed without a
 * decision; client: PT_ERR_TIMEOUT when no record arrived in time; else 0. */
int pt_obfs_check_timeout(pt_obfs *o) PT_WUR;
uint64_t pt_obfs_deadline_ms(const pt_obfs *o); /* monotonic; UINT64_MAX when none */

bool pt_obfs_accepted(const pt_obfs *o);
/* Server, after accept: the client's 32-byte payload. NULL before. */
const uint8_t *pt_obfs_client_payload(const pt_obfs *o);
/* Server, after a reject: why (PT_ERR_AUTH bad tag or stale minute, PT_ERR_REPLAY,
 * PT_ERR_TOO_BIG padding length, PT_ERR_TIMEOUT, PT_ERR_NOMEM cache full). */
int pt_obfs_reject_reason(const pt_obfs *o);
/* Server, after PT_OBFS_DECOY: the bytes received up to the verdict, to replay to
 * the decoy; later input is not kept (the caller forwards it as it comes).
 * Valid until the handle is freed. */
const uint8_t *pt_obfs_held(const pt_obfs *o, size_t *len);

#endif /* PT_PTOBFS_H */
