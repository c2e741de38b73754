/*
 * src/session - the MTProto-style session layer, inside channel records.
 *
 * A session belongs to a device, not to a connection: it survives reconnects, and
 * everything not yet acknowledged in either direction is resent on the next
 * connection and deduplicated by msg_id. Each record carries one message:
 *   salt:u64 session_id:u64 msg_id:u64 seqno:u32 length:u32 body[length]
 * (all little-endian; body 4-byte aligned and starting with a constructor id).
 * A pure state machine: records in, events out; records to send come out of
 * pt_sess_flush(). Time and randomness come from the pt_env.
 */
#ifndef PT_SESS_H
#define PT_SESS_H

#include <stdbool.h>

#include "channel/pt_chan.h"
#include "common/pt_common.h"

#define PT_SESS_HDR_LEN 32
#define PT_SESS_CONTAINER_ID 0x73f1f8dcu
#define PT_SESS_CONTAINER_HDR 8           /* id + count */
#define PT_SESS_INNER_HDR 16              /* msg_id + seqno + length */
#define PT_SESS_CONTAINER_MAX_MSGS 1024
/* Largest body one message may have: it must fit a record even inside a container. */
#define PT_SESS_BODY_MAX (PT_CHAN_RECORD_MAX - PT_SESS_HDR_LEN - PT_SESS_CONTAINER_HDR - PT_SESS_INNER_HDR)
#define PT_SESS_WINDOW 1024               /* received msg_ids remembered for dedupe */
#define PT_SESS_MAX_QUEUED 4096           /* outgoing messages queued or awaiting ack */
#define PT_SESS_MAX_PENDING_ACKS 8192
#define PT_SESS_ACK_DELAY_MS 50           /* an ack waits this long for output to ride with */
#define PT_SESS_ACK_BATCH 256             /* ... or until this many are pending */
#define PT_SESS_PROBE_EVERY_MS 5000       /* pt_sess_probe pings at most this often */
#define PT_SESS_RENAMED 256               /* renewed ids remembered after their ack */
#define PT_SESS_PAST_S 300                /* server: msg_id older than this is "too low" */
#define PT_SESS_FUTURE_S 30               /* server: msg_id newer than this is "too high" */
#define PT_SESS_SALT_PERIOD_S 3600        /* server salts rotate every hour */
#define PT_SESS_SALT_GRACE_S 1800         /* the previous salt stays valid this long */
#define PT_SESS_SALT_SECRET_LEN 32

/* bad_msg_notification error codes (MTProto's numbering). */
#define PT_BAD_MSG_ID_TOO_LOW 16
#define PT_BAD_MSG_ID_TOO_HIGH 17
#define PT_BAD_MSG_ID_PARITY 18
#define PT_BAD_MSG_DUPLICATE 19   /* PackTrack: any msg_id already received */
#define PT_BAD_MSG_TOO_OLD 20     /* below the replay window: cannot tell if received */
#define PT_BAD_MSG_SEQNO_LOW 32
#define PT_BAD_MSG_SEQNO_HIGH 33
#define PT_BAD_MSG_EVEN_EXPECTED 34
#define PT_BAD_MSG_ODD_EXPECTED 35
#define PT_BAD_MSG_SALT 48
#define PT_BAD_MSG_CONTAINER 64

typedef enum pt_sess_role { PT_SESS_CLIENT = 0, PT_SESS_SERVER = 1 } pt_sess_role;

typedef struct pt_sess_config {
    pt_sess_role role;
    uint64_t session_id;       /* chosen by the client per device */
    const uint8_t *salt_secret;/* server: PT_SESS_SALT_SECRET_LEN bytes, borrowed */
    uint64_t salt;             /* client: the server salt to start with */
    int64_t time_offset_ms;    /* client: server clock minus ours */
} pt_sess_config;

typedef enum pt_sess_ev_type {
    PT_SESS_EV_CALL = 1,  /* server: an application call; answer with pt_sess_reply(msg_id) */
    PT_SESS_EV_UPDATE,    /* client: a server-initiated application message */
    PT_SESS_EV_RESULT,    /* client: the rpc_result of call req_msg_id; body = result.
                           * Ids in events are always those pt_sess_send returned,
                           * even when a resend had to renew the id on the wire. */
    PT_SESS_EV_PONG,      /* a pong: req_msg_id = the ping's msg_id, value = ping_id */
    PT_SESS_EV_ACKED,     /* one of our content messages (msg_id) was acknowledged */
    PT_SESS_EV_BAD_MSG,   /* the peer rejected msg_id with code value; see docs */
    PT_SESS_EV_NEW_SESSION, /* client: the server created the session (value = salt) */
} pt_sess_ev_type;

typedef struct pt_sess_event {
    pt_sess_ev_type type;
    uint64_t msg_id;       /* the message carrying the event */
    uint64_t req_msg_id;   /* RESULT, PONG: the message answered */
    int64_t value;         /* PONG: ping_id; BAD_MSG: error code; NEW_SESSION: salt */
    const uint8_t *body;   /* CALL, UPDATE, RESULT: the object, valid during the callback */
    size_t len;
} pt_sess_event;

typedef void (*pt_sess_event_cb)(void *ud, const pt_sess_event *ev);
/* Receives one record plaintext to seal and send; non-zero aborts the flush. */
typedef int (*pt_sess_emit_cb)(void *ud, const uint8_t *rec, size_t len);

typedef struct pt_sess pt_sess;

pt_sess *pt_sess_new(const pt_env *env, const pt_sess_config *cfg);
void pt_sess_free(pt_sess *s); /* NULL is a no-op */
/* Gives back the memory of empty buffers (an idle session). */
void pt_sess_trim(pt_sess *s);

/* Reads salt and session_id of a record without processing it (the server uses
 * it to find the session). PT_ERR_DECODE when shorter than a header. */
int pt_sess_peek(const uint8_t *rec, size_t len, uint64_t *salt, uint64_t *session_id);

/* Processes one record. Bad messages are answered (bad_msg_notification,
 * bad_server_salt) on the next flush and are not delivered; a malformed record
 * returns PT_ERR_DECODE / PT_ERR_PROTO and the connection should close.
 * Client: PT_ERR_CLOSED when the server rejected our ids as too far ahead of its
 * clock (code 17, or 16 after a jump) and ids from the corrected clock would go
 * down: the session was renewed (pt_sess_renewals() counts up, pt_sess_id()
 * changes, unacknowledged messages keep the ids the caller knows) and must be
 * carried by a new connection. */
int pt_sess_input(pt_sess *s, const uint8_t *rec, size_t len, pt_sess_event_cb cb,
                  void *ud) PT_WUR;

/* Queues an application message (client: a call; server: an update). body is
 * copied; *msg_id receives its id. PT_ERR_TOO_BIG over PT_SESS_BODY_MAX,
 * PT_ERR_AGAIN when PT_SESS_MAX_QUEUED messages are already outstanding. With
 * gzip, the body is sent gzip_packed when that makes it smaller. */
int pt_sess_send(pt_sess *s, const uint8_t *body, size_t len, bool gzip, uint64_t *msg_id) PT_WUR;
/* Server: queues rpc_result(req_msg_id, result). */
int pt_sess_reply(pt_sess *s, uint64_t req_msg_id, const uint8_t *result, size_t len) PT_WUR;
int pt_sess_ping(pt_sess *s, int64_t ping_id, uint64_t *msg_id) PT_WUR;
/* A content message of ours made more than age_ms ago (by its msg_id), sent, and still
 * not acknowledged: queues a ping and returns 1; 0 when there is nothing to probe, or
 * the last probe's ping is still unanswered, or it went less than
 * PT_SESS_PROBE_EVERY_MS ago. For a quiet connection: a record lost on the way
 * (dropped by a middlebox; TCP itself would not) leaves the peer waiting with nothing
 * left to show the gap. The probe's record shows it: the channel's skipped nonce
 * (suites 1-4), or the session's seqno (every suite; the peer answers
 * bad_msg_notification 33, PT_BAD_MSG_SEQNO_HIGH). A peer that is only slow answers
 * the ping with a pong. */
int pt_sess_probe(pt_sess *s, uint64_t age_ms) PT_WUR;
/* Server: queues new_session_created for a session just made for first_msg_id. */
int pt_sess_created(pt_sess *s, uint64_t first_msg_id) PT_WUR;
/* Client: asks for the state of msg_ids (answered with msgs_state_info as UPDATE). */
int pt_sess_state_req(pt_sess *s, const uint64_t *ids, size_t n) PT_WUR;

/* A new connection now carries the session: everything unacknowledged is
 * resent on the next flush. */
void pt_sess_resume(pt_sess *s);
/* Emits every queued message as records (containers when several). Acknowledgements
 * of received messages go with them; with nothing else to send they wait until due
 * (PT_SESS_ACK_DELAY_MS after the first, or PT_SESS_ACK_BATCH of them), and a reply
 * or pong acknowledges its request without one: whoever drives the session flushes
 * it again when pt_sess_ack_wait_ms() says so. */
int pt_sess_flush(pt_sess *s, pt_sess_emit_cb emit, void *ud) PT_WUR;
/* Whether a flush now would emit something (acks only when due). */
bool pt_sess_has_output(const pt_sess *s);
/* Whether acknowledgements wait to be sent (no clock read). */
bool pt_sess_acks_pending(const pt_sess *s);
/* Makes the waiting acknowledgements due: the next flush sends them (before a
 * connection is closed on purpose). */
void pt_sess_acks_now(pt_sess *s);
/* Milliseconds until the waiting acknowledgements are due: 0 when they are, -1 when
 * none waits. */
int64_t pt_sess_ack_wait_ms(const pt_sess *s);

uint64_t pt_sess_id(const pt_sess *s);
uint64_t pt_sess_renewals(const pt_sess *s); /* client: restarts after a clock correction */
int64_t pt_sess_time_offset_ms(const pt_sess *s); /* client: server clock minus ours */
/* Messages received so far (every message inside a container counts): for rate limits. */
uint64_t pt_sess_messages_in(const pt_sess *s);
size_t pt_sess_unacked(const pt_sess *s); /* content messages sent, not yet acked */
uint64_t pt_sess_salt_now(pt_sess *s); /* server: the current period's (kept) */

/* The server salt for the hour containing now_ms (deterministic from secret). */
uint64_t pt_sess_salt_for(const uint8_t secret[static PT_SESS_SALT_SECRET_LEN], uint64_t now_ms);
/* Whether salt is the current one or the previous one within its grace period. */
bool pt_sess_salt_valid(const uint8_t secret[static PT_SESS_SALT_SECRET_LEN], uint64_t salt,
                        uint64_t now_ms);

#endif /* PT_SESS_H */
