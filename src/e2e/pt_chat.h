/*
 * src/e2e/pt_chat - conversations between devices on top of Olm sessions: the
 * friend handshake (S2WMP chat request), and the client-to-client control messages
 * of the secure IM design (CLIENT-CONNECT, CLIENT-COM, CLIENT-DISCONNECT,
 * CLIENT-ACK). A sans-IO state machine: it makes and reads *envelopes*, the opaque
 * bytes that travel in messages.send; the server routes them without reading them.
 *
 * Envelope:  "PTE" ‖ version (1) ‖ kind (u8) ‖ sender Curve25519 identity (32) ‖ payload
 *   FRIEND_REQUEST  bundle (PT_OLM_BUNDLE_LEN) ‖ note length (u16 LE) ‖ note (UTF-8, clear:
 *                   the server relays it and can read it)
 *   FRIEND_ACCEPT   bundle ‖ message type (u8) ‖ Olm pre-key message holding CONNECT
 *   FRIEND_DENY     empty: nothing secret
 *   SECURE          message type (u8) ‖ Olm message holding one inner message
 *   CLEAR_ACK       BLAKE2b-128 of the envelope it answers ‖ code (u8): a receipt for
 *                   what could not be read, so it cannot be encrypted either
 * Inner messages (encrypted):
 *   CONNECT     kind ‖ suites offered (u8) ‖ suite chosen (u8)
 *   COM         kind ‖ msg_id (16) ‖ time ms (u64 LE) ‖ BLAKE2b-128(text) ‖ length (u32 LE) ‖ text
 *   DISCONNECT  kind ‖ reason (u8)
 *   ACK         kind ‖ msg_id (16) ‖ code (u8)
 *   ROOM_KEY    kind ‖ group id (16) ‖ length (u16 LE) ‖ Megolm session key: how a group
 *               sender gives its sender key to each member device, never in the clear
 *   MSG         kind ‖ msg_id (16) ‖ time ms (u64 LE) ‖ BLAKE2b-128(text) ‖ context (u8) ‖
 *               conversation (16) ‖ length (u32 LE) ‖ text: a COM that says which
 *               conversation it belongs to (pt_chat_ctx), with a caller-chosen msg_id so
 *               the copies of one message for several devices share it
 * ACK codes (S2WMP): 0 accepted, 1 user id not validated (no session with a known
 * friend), 2 hash mismatch (the text does not match its digest), 3 corrupted (the
 * envelope or inner message does not parse), 4 could not decrypt.
 */
#ifndef PT_CHAT_H
#define PT_CHAT_H

#include "e2e/pt_olm.h"

#define PT_CHAT_VERSION 1
#define PT_CHAT_HDR_LEN (3 + 1 + 1 + 32)
#define PT_CHAT_MSG_ID_LEN 16
#define PT_CHAT_NOTE_MAX 512
#define PT_CHAT_TEXT_MAX (PT_OLM_MAX_PLAINTEXT - 64)
#define PT_CHAT_MAX_PEERS 4096    /* conversations held at once */
#define PT_CHAT_SEEN_IDS 8192     /* message ids remembered for exactly-once delivery */
#define PT_CHAT_GROUP_ID_LEN 16
#define PT_CHAT_ROOM_KEY_MAX 1024 /* a Megolm session key is 229 bytes */

enum pt_chat_kind {
    PT_CHAT_FRIEND_REQUEST = 1,
    PT_CHAT_FRIEND_ACCEPT = 2,
    PT_CHAT_FRIEND_DENY = 3,
    PT_CHAT_SECURE = 4,
    PT_CHAT_CLEAR_ACK = 5,
};

enum pt_chat_ack_code {
    PT_CHAT_ACK_ACCEPTED = 0,
    PT_CHAT_ACK_NOT_VALIDATED = 1,
    PT_CHAT_ACK_HASH_MISMATCH = 2,
    PT_CHAT_ACK_CORRUPTED = 3,
    PT_CHAT_ACK_UNDECRYPTABLE = 4,
};

/* The conversation a MSG belongs to; conv is zero for DIRECT. */
typedef enum pt_chat_ctx {
    PT_CHAT_CTX_DIRECT = 0,     /* 1:1 with the sender */
    PT_CHAT_CTX_GROUP = 1,      /* conv: the group id */
    PT_CHAT_CTX_SENT_COPY = 2,  /* from another device of our own user; conv: the user it went to */
    PT_CHAT_CTX_GROUP_INFO = 3, /* conv: the group id; text: the group's name */
    PT_CHAT_CTX_SENT_GROUP = 4, /* a copy of our own group message; conv: the group id */
    PT_CHAT_CTX_RESEND = 5,     /* a message sent again after the receiver could not read it;
                                   conv: the id the receiver gave its placeholder (the
                                   msg_id of its ACK, i.e. the hash of what failed) */
    PT_CHAT_CTX_MAX = 5,
} pt_chat_ctx;

typedef struct pt_chat_msg {
    uint8_t ctx;                          /* pt_chat_ctx */
    uint8_t conv[PT_CHAT_GROUP_ID_LEN];   /* see pt_chat_ctx */
    uint8_t msg_id[PT_CHAT_MSG_ID_LEN];   /* chosen by the caller */
    uint64_t time_ms;                     /* the sender's clock */
    const uint8_t *text;                  /* UTF-8, at most PT_CHAT_TEXT_MAX - 17 bytes */
    size_t len;
} pt_chat_msg;

typedef enum pt_chat_ev_type {
    PT_CHAT_EV_NONE = 0,          /* nothing for the application (a duplicate, say) */
    PT_CHAT_EV_FRIEND_REQUEST,    /* note; answer with accept or deny */
    PT_CHAT_EV_FRIEND_ACCEPTED,   /* our request was accepted: the session is open */
    PT_CHAT_EV_FRIEND_DENIED,
    PT_CHAT_EV_CONNECTED,         /* a session was opened or refreshed (suite) */
    PT_CHAT_EV_MESSAGE,           /* msg_id, time_ms, text */
    PT_CHAT_EV_ACK,               /* msg_id (or envelope hash), code */
    PT_CHAT_EV_DISCONNECTED,      /* the peer ended the session; its keys are wiped */
    PT_CHAT_EV_REJECTED,          /* we could not accept an envelope: code says why */
    PT_CHAT_EV_ROOM_KEY,          /* group id in msg_id; text/len: the Megolm session key */
} pt_chat_ev_type;

typedef struct pt_chat_event {
    pt_chat_ev_type type;
    uint8_t peer[PT_OLM_KEY_LEN];         /* the sender's Curve25519 identity key */
    uint8_t peer_signing[PT_OLM_KEY_LEN]; /* FRIEND_*: its Ed25519 key from the bundle */
    uint8_t msg_id[PT_CHAT_MSG_ID_LEN];   /* MESSAGE, ACK (the envelope hash for clear acks) */
    uint64_t time_ms;                     /* MESSAGE: the sender's clock */
    int code;                             /* ACK, REJECTED: a pt_chat_ack_code */
    int suite;                            /* CONNECTED: the pt_olm_suite in use */
    uint8_t ctx;                          /* MESSAGE: pt_chat_ctx (DIRECT for a COM) */
    uint8_t conv[PT_CHAT_GROUP_ID_LEN];   /* MESSAGE: see pt_chat_ctx */
    const uint8_t *text;                  /* MESSAGE text, FRIEND_REQUEST note; valid until the next call */
    size_t len;
} pt_chat_event;

typedef struct pt_chat pt_chat;

/* acct is borrowed and must outlive the chat; env likewise. */
pt_chat *pt_chat_new(const pt_env *env, pt_olm_account *acct);
void pt_chat_free(pt_chat *c); /* NULL is a no-op; wipes every session */

/* A friend request offering our one-time (or fallback) key key_id; note may be NULL. */
int pt_chat_friend_request(pt_chat *c, uint32_t key_id, const char *note, pt_buf *out) PT_WUR;
/* Accepts a request envelope (as received): opens the session on the requester's
 * bundle (refusing a bad signature: PT_ERR_AUTH) and appends the FRIEND_ACCEPT. */
int pt_chat_friend_accept(pt_chat *c, const uint8_t *request, size_t len, pt_buf *out) PT_WUR;
int pt_chat_friend_deny(pt_chat *c, pt_buf *out) PT_WUR;

/* A text message to a peer with an open session (PT_ERR_NOT_FOUND otherwise).
 * text must be UTF-8 (PT_ERR_INVAL otherwise); msg_id receives its id. */
int pt_chat_send(pt_chat *c, const uint8_t peer[static PT_OLM_KEY_LEN], const uint8_t *text,
                 size_t len, uint8_t msg_id[static PT_CHAT_MSG_ID_LEN], pt_buf *out) PT_WUR;
/* Sends a group's Megolm session key (opaque bytes, at most PT_CHAT_ROOM_KEY_MAX)
 * to one member device over the 1:1 session with it. */
int pt_chat_send_room_key(pt_chat *c, const uint8_t peer[static PT_OLM_KEY_LEN],
                          const uint8_t group_id[static PT_CHAT_GROUP_ID_LEN], const uint8_t *key,
                          size_t len, pt_buf *out) PT_WUR;
/* Ends the session with peer: appends DISCONNECT, then wipes our side. */
int pt_chat_disconnect(pt_chat *c, const uint8_t peer[static PT_OLM_KEY_LEN], pt_buf *out) PT_WUR;

/* Reads one envelope. Fills ev; appends to reply what should go back to the sender
 * (an ACK for a message, a CLEAR_ACK for what could not be read), if anything.
 * Returns 0 when the envelope was handled (even if it was refused: ev says why),
 * or PT_ERR_NOMEM / PT_ERR_CRYPTO for local failures. */
int pt_chat_receive(pt_chat *c, const uint8_t *env, size_t len, pt_chat_event *ev,
                    pt_buf *reply) PT_WUR;

bool pt_chat_has_session(const pt_chat *c, const uint8_t peer[static PT_OLM_KEY_LEN]);

/* A MSG (see above) to a peer with an open session: PT_ERR_NOT_FOUND without one,
 * PT_ERR_INVAL for text that is not UTF-8 or too long or an unknown ctx. */
int pt_chat_send_msg(pt_chat *c, const uint8_t peer[static PT_OLM_KEY_LEN], const pt_chat_msg *m,
                     pt_buf *out) PT_WUR;

/* Opens an outbound session to a device known from a directory the caller trusts
 * (a prekey signed by its user's identity key): its Curve25519 identity and a
 * one-time or fallback key. Replaces (and wipes) an existing session with it. The
 * next pt_chat_send* to it makes a pre-key message. */
int pt_chat_open(pt_chat *c, pt_olm_suite suite, const uint8_t identity[static PT_OLM_KEY_LEN],
                 const uint8_t one_time[static PT_OLM_KEY_LEN]) PT_WUR;
/* Forgets the session with peer, wiping it (no message). */
void pt_chat_forget(pt_chat *c, const uint8_t peer[static PT_OLM_KEY_LEN]);

/* ---- multi-device envelopes ----------------------------------------------------------------
 * One message for all devices of a user (or group) travels as one envelope that the
 * server stores once: "PTM" ‖ version (1) ‖ count (u16 LE) ‖ count × (recipient
 * Curve25519 identity (32) ‖ length (u32 LE) ‖ a pt_chat envelope for it). Each
 * device takes its own entry. At most PT_CHAT_MULTI_MAX entries, unique recipients. */
#define PT_CHAT_MULTI_MAX 1024
#define PT_CHAT_MULTI_HDR 6
/* Starts a container in out (count 0); returns the offset to pass to _add. */
int pt_chat_multi_begin(pt_buf *out, size_t *at) PT_WUR;
/* Appends one entry (entry: a pt_chat envelope) to the container begun at `at`. */
int pt_chat_multi_add(pt_buf *out, size_t at, const uint8_t recipient[static PT_OLM_KEY_LEN],
                      const uint8_t *entry, size_t len) PT_WUR;
/* Finds the entry for recipient: 0 (entry, len set), PT_ERR_NOT_FOUND, or
 * PT_ERR_DECODE for a malformed container (checked whole, whatever the position). */
int pt_chat_multi_find(const uint8_t *env, size_t len, const uint8_t recipient[static PT_OLM_KEY_LEN],
                       const uint8_t **entry, size_t *elen) PT_WUR;
/* The sender identity an envelope claims (its header), or PT_ERR_DECODE. */
int pt_chat_envelope_sender(const uint8_t *env, size_t len, uint8_t sender[static PT_OLM_KEY_LEN]) PT_WUR;

/* Persistence: the caller saves each session it changed (after a send or receive)
 * sealed under key (at least PT_OLM_MIN_PICKLE_KEY bytes), and restores them when
 * it starts again. pickle: PT_ERR_NOT_FOUND without a session. restore: refuses a
 * wrong key or damaged bytes (PT_ERR_AUTH / PT_ERR_DECODE), keeping what it had. */
int pt_chat_pickle_session(const pt_chat *c, const uint8_t peer[static PT_OLM_KEY_LEN],
                           const uint8_t *key, size_t keylen, pt_buf *out) PT_WUR;
int pt_chat_restore_session(pt_chat *c, const uint8_t peer[static PT_OLM_KEY_LEN],
                            const uint8_t *key, size_t keylen, const uint8_t *in,
                            size_t len) PT_WUR;
/* The peer whose session the last pt_chat_receive used or opened (for saving it). */
bool pt_chat_last_peer(const pt_chat *c, uint8_t peer[static PT_OLM_KEY_LEN]);

#endif
