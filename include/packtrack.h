/*
 * packtrack.h - the public API of libpacktrack.
 *
 * Contract, stated once for the whole header:
 *  - Errors: functions return 0 on success and a negative pt_err code on failure;
 *    pt_strerror() names every code. No function prints or calls exit().
 *  - Threads: a handle is used by one thread at a time; distinct handles are
 *    independent. pt_init() must be called once before any other function.
 *  - Memory: buffers passed in are borrowed for the duration of the call unless a
 *    comment says otherwise.
 *  - ABI: handles are opaque; only the functions and enums below are stable.
 */
#ifndef PACKTRACK_H
#define PACKTRACK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PT_API __attribute__((visibility("default")))
#else
#define PT_API
#endif

#define PT_VERSION_STRING "0.1.0"

/* Error codes, shared by every layer. Always negative; 0 is success. */
typedef enum pt_err {
    PT_OK = 0,
    PT_ERR_NOMEM = -1,        /* allocation failed */
    PT_ERR_INVAL = -2,        /* invalid argument or configuration */
    PT_ERR_DECODE = -3,       /* malformed bytes from a peer, file or user */
    PT_ERR_TOO_BIG = -4,      /* a length exceeds its named limit */
    PT_ERR_AUTH = -5,         /* authentication / decryption failed */
    PT_ERR_CRYPTO = -6,       /* the crypto library reported an internal failure */
    PT_ERR_PROTO = -7,        /* the peer broke the protocol */
    PT_ERR_AGAIN = -8,        /* more input is needed */
    PT_ERR_KEY_MISMATCH = -9, /* the server key differs from the pinned one */
    PT_ERR_NO_SUITE = -10,    /* no common channel-cipher suite */
    PT_ERR_IO = -11,          /* socket or file error */
    PT_ERR_TIMEOUT = -12,     /* the operation timed out */
    PT_ERR_CLOSED = -13,      /* the connection is closed */
    PT_ERR_REPLAY = -14,      /* replayed, duplicate or out-of-order message */
    PT_ERR_VERSION = -15,     /* unsupported protocol version */
    PT_ERR_STATE = -16,       /* call not valid in the current state */
    PT_ERR_WEAK_KEY = -17,    /* low-order / all-zero Diffie-Hellman result */
    PT_ERR_NOT_FOUND = -18,   /* no such object */
    PT_ERR_EXISTS = -19,      /* already exists (a profile in this home, a name) */
    PT_ERR_PASSWORD = -20,    /* wrong password for the local store */
    PT_ERR_REFUSED = -21,     /* the server refused; pt_last_error() has its reason */
    PT_ERR_OFFLINE = -22,     /* no server reachable; the operation is kept for later */
} pt_err;

/* Initialises the crypto libraries. Idempotent; returns 0 or PT_ERR_CRYPTO. */
PT_API int pt_init(void);

/* A static English description of an error code; never NULL. */
PT_API const char *pt_strerror(int err);

/* The library version, e.g. "0.1.0". */
PT_API const char *pt_version(void);

/* =====================================================================================
 * libpacktrack: one user's device. A pt_ctx is a profile directory (the "home")
 * holding an encrypted local store, and a connection to one packtrackd.
 *
 *  - Thread rules: a pt_ctx is used by one thread at a time. Callbacks run on the
 *    thread that called pt_poll() (or any call that waits for the server), inside
 *    that call; they must not call back into the same pt_ctx.
 *  - Event loop: call pt_poll(ctx, 0) when pt_fd() is readable, and at least every
 *    second or so (reconnecting and resending are driven from there); or let
 *    pt_poll() block. Calls that need an answer from
 *    the server (pt_send(), pt_friend_add(), ...) run the loop themselves until the
 *    answer arrives or the timeout passes, delivering other events on the way.
 *  - Reliability: pt_send() first writes the encrypted message to the local store,
 *    then sends it. If the server cannot be reached (PT_ERR_OFFLINE) or the process
 *    dies, the message is sent by a later pt_connect()/pt_poll(); the receiver
 *    sees it exactly once. Incoming messages are stored before the server is told
 *    to delete them, and each reaches the application once (by message id).
 *  - Logging: one line per event on stderr; the level comes from $PT_LOG_LEVEL
 *    (error, warn, info, debug; default info), read by pt_init().
 *  - Strings are NUL-terminated UTF-8. Strings inside events are valid during the
 *    callback only; arrays returned by pt_*_list() functions are freed with
 *    pt_free().
 * ===================================================================================== */

#define PT_ID_HEX_LEN 33        /* 32 hex digits + NUL: user ids and message ids */
#define PT_NAME_MAX 128         /* a username or group name, bytes incl. NUL */
#define PT_FINGERPRINT_MAX 80   /* "xxxxxxxx:xxxxxxxx:..." + NUL */
#define PT_SAFETY_MAX 80        /* 60 digits in 12 groups of 5 + NUL */
#define PT_LINK_CODE_MAX 80     /* a device-link code + NUL */
#define PT_SAFETY_QR_MAX 140    /* "PTSN0:" + two keys in hex + NUL */
#define PT_TEXT_MAX 60000       /* a message text, bytes */

typedef struct pt_ctx pt_ctx;

typedef struct pt_options {
    const char *home;               /* profile directory; NULL: $HOME/.packtrack */
    const char *server;             /* "HOST:PORT"; NULL: 127.0.0.1:7000 */
    const char *server_fingerprint; /* expected server key; NULL: pinned on first use */
    int timeout_ms;                 /* for each call that waits for the server; 0: 10000 */
    const char *obfuscation;        /* NULL/"off", "mse", "mse-prefer", "pt-obfs" */
    const char *network_key;        /* hex */
} pt_options;

typedef enum pt_status {
    PT_PRESENCE_OFFLINE = 0, /* as others see an offline or invisible user */
    PT_PRESENCE_ONLINE = 1,
    PT_PRESENCE_BUSY = 2,
    PT_PRESENCE_AWAY = 3,
    PT_PRESENCE_INVISIBLE = 4, /* our own setting only */
} pt_status;

/* Where a message we sent is. Only moves forward. */
typedef enum pt_delivery {
    PT_DELIVERY_QUEUED = 0,    /* in the local store, not yet on the server */
    PT_DELIVERY_STORED = 1,    /* the server has it durably */
    PT_DELIVERY_DELIVERED = 2, /* a device of the recipient decrypted it */
    PT_DELIVERY_READ = 3,      /* the recipient displayed it */
    PT_DELIVERY_FAILED = 4,    /* the recipient could not decrypt it (see pt_message.code) */
} pt_delivery;

typedef enum pt_contact_state {
    PT_CONTACT_STATE_NONE = 0,
    PT_CONTACT_STATE_REQUEST_SENT = 1,
    PT_CONTACT_STATE_REQUEST_RECEIVED = 2,
    PT_CONTACT_STATE_FRIEND = 3,
    PT_CONTACT_STATE_BLOCKED = 4,
} pt_contact_state;

typedef struct pt_message {
    char id[PT_ID_HEX_LEN];  /* the message id, the same on every device */
    char from[PT_NAME_MAX];  /* sender's username */
    char to[PT_NAME_MAX];    /* recipient's username; "" for a group message */
    char group[PT_NAME_MAX]; /* the group's name; "" for a 1:1 message */
    int64_t time_ms;         /* the sender's clock, ms since 1970 */
    int outgoing;            /* 1: sent by this user (from this or another device) */
    pt_delivery delivery;    /* outgoing: the furthest state reached */
    int code;                /* FAILED: the S2WMP code (1 not validated .. 4 undecryptable) */
    const char *text;        /* UTF-8, NUL-terminated; "" for a placeholder */
    int undecryptable;       /* 1: a placeholder for a message that could not be read; code
                                says why (1 unknown session or key changed, 2-3 corrupted,
                                4 could not decrypt). The sender's device is asked to send it
                                again over a new session; it then replaces the placeholder
                                (a PT_EVENT_MESSAGE with the same id). */
} pt_message;

typedef struct pt_contact {
    char name[PT_NAME_MAX];
    char user_id[PT_ID_HEX_LEN];
    pt_contact_state state;
    pt_status status;        /* friends only; offline otherwise */
    int verified;            /* 1: the safety number was confirmed (pt_contact_verify) */
    int key_changed;         /* 1: a device appeared, went or was re-keyed since the keys
                                were first seen, trusted or verified: sending is refused
                                until pt_contact_trust() or pt_contact_verify() */
} pt_contact;

typedef struct pt_user {
    char name[PT_NAME_MAX];
    char user_id[PT_ID_HEX_LEN];
    pt_status status;
} pt_user;

typedef struct pt_device {
    char id[PT_ID_HEX_LEN];           /* first 16 bytes of the device key, hex */
    char fingerprint[PT_FINGERPRINT_MAX];
    int this_device;                  /* 1 for the device running this pt_ctx */
} pt_device;

typedef enum pt_event_type {
    PT_EVENT_MESSAGE = 1,        /* message: new (incoming, or sent by another of our devices) */
    PT_EVENT_DELIVERY,           /* message: one of ours moved on (delivery, code) */
    PT_EVENT_PRESENCE,           /* user, status */
    PT_EVENT_FRIEND_REQUEST,     /* user, text (the note, maybe "") */
    PT_EVENT_FRIEND_ACCEPTED,    /* user */
    PT_EVENT_FRIEND_DENIED,      /* user */
    PT_EVENT_GROUP,              /* group, user, text: "invited", "joined", "left", "removed" */
    PT_EVENT_CONNECTION,         /* status: ONLINE when connected, OFFLINE when the link dropped */
    PT_EVENT_TYPING,             /* user; typing: 1 started, 0 stopped (friends only) */
} pt_event_type;

typedef struct pt_event {
    pt_event_type type;
    const pt_message *message; /* MESSAGE, DELIVERY */
    const char *user;          /* PRESENCE, FRIEND_*, GROUP: a username */
    const char *group;         /* GROUP: the group's name */
    const char *text;          /* FRIEND_REQUEST: the note; GROUP: what happened */
    pt_status status;          /* PRESENCE, CONNECTION */
    int typing;                /* TYPING */
} pt_event;

typedef void (*pt_event_cb)(void *ud, const pt_event *ev);

/* ---- profiles ---------------------------------------------------------------------------- */

/* Creates a profile in o->home (which must not hold one: PT_ERR_EXISTS): a new
 * identity, device and local store sealed under password; connects and claims
 * username (PT_ERR_REFUSED with pt_last_error() saying why and ending with the
 * server's code, "... (USERNAME_TAKEN)", "USERNAME_CONFUSABLE" or "USERNAME_INVALID";
 * nothing is left behind then). An identity whose user id another identity already
 * has is replaced by a new one, up to twice (S2WMP's ID-change rule). Returns NULL
 * on failure with *err set (err may be NULL). */
PT_API pt_ctx *pt_create(const pt_options *o, const char *password, const char *username,
                         pt_err *err);
/* Adds this home as a new device of an existing user: code comes from
 * pt_device_link_code() on one of the user's devices (valid 10 minutes, once). */
PT_API pt_ctx *pt_create_linked(const pt_options *o, const char *password, const char *code,
                                pt_err *err);
/* Unlocks an existing profile: PT_ERR_NOT_FOUND (no profile in home),
 * PT_ERR_PASSWORD (wrong password; nothing is changed). Does not connect. */
PT_API pt_ctx *pt_open(const pt_options *o, const char *password, pt_err *err);
/* Closes the connection and the store; wipes keys. NULL is a no-op. */
PT_API void pt_close(pt_ctx *ctx);
/* Re-seals the store under a new password (atomic: the old one works until this returns 0). */
PT_API int pt_change_password(pt_ctx *ctx, const char *new_password);

/* A sentence saying what went wrong in the last failed call on ctx and what to
 * do, e.g. "that username is taken; choose another (USERNAME_TAKEN)"; never NULL.
 * With ctx NULL: the last failed pt_create/pt_create_linked/pt_open of this thread. */
PT_API const char *pt_last_error(const pt_ctx *ctx);
/* Frees what a pt_*_list() call returned. NULL is a no-op. */
PT_API void pt_free(void *p);

/* ---- connection and events ------------------------------------------------------------------ */

PT_API void pt_set_event_cb(pt_ctx *ctx, pt_event_cb cb, void *ud);
/* Connects (if needed), authenticates with the pinned server key, uploads keys the
 * server lacks, sends what the outbox holds and fetches what waits on the server.
 * PT_ERR_OFFLINE when no server answered; PT_ERR_KEY_MISMATCH when its key changed. */
PT_API int pt_connect(pt_ctx *ctx);
/* Runs the library for up to timeout_ms (0: only what is ready): reads, decrypts,
 * stores and reports events; reconnects with backoff when the link dropped. */
PT_API int pt_poll(pt_ctx *ctx, int timeout_ms);
/* The socket to watch for reading (-1 while disconnected). */
PT_API int pt_fd(const pt_ctx *ctx);
PT_API int pt_connected(const pt_ctx *ctx);

/* ---- identity ------------------------------------------------------------------------------ */

PT_API const char *pt_username(const pt_ctx *ctx);
PT_API const char *pt_user_id(const pt_ctx *ctx);        /* 32 hex digits */
PT_API const char *pt_identity_fingerprint(const pt_ctx *ctx); /* of the identity key */
PT_API int pt_set_status(pt_ctx *ctx, pt_status status);
PT_API pt_status pt_get_status(const pt_ctx *ctx);

/* ---- people -------------------------------------------------------------------------------- */

/* Users online and visible on the server. *out is freed with pt_free(). */
PT_API int pt_users_online(pt_ctx *ctx, pt_user **out, size_t *n);
/* A friend request with an optional note (NULL; at most 256 bytes, else PT_ERR_TOO_BIG). */
PT_API int pt_friend_add(pt_ctx *ctx, const char *name, const char *note);
PT_API int pt_friend_accept(pt_ctx *ctx, const char *name);
PT_API int pt_friend_deny(pt_ctx *ctx, const char *name);
/* Contacts in every state, with presence; from the server when connected. */
PT_API int pt_contacts(pt_ctx *ctx, pt_contact **out, size_t *n);
/* The 60-digit safety number with name, as 12 groups of 5 digits. */
PT_API int pt_contact_safety_number(pt_ctx *ctx, const char *name, char out[PT_SAFETY_MAX]);
/* Marks name's current keys as verified (after comparing safety numbers). */
PT_API int pt_contact_verify(pt_ctx *ctx, const char *name);
/* What to show as a QR code for name's safety number (both identity keys). */
PT_API int pt_contact_safety_qr(pt_ctx *ctx, const char *name, char out[PT_SAFETY_QR_MAX]);
/* Accepts name's current keys after a key change without verifying them. */
PT_API int pt_contact_trust(pt_ctx *ctx, const char *name);
/* One contact's state, trust and presence (refreshing its keys when connected). */
PT_API int pt_contact_info(pt_ctx *ctx, const char *name, pt_contact *out);

/* ---- messages ------------------------------------------------------------------------------- */

/* Encrypts text for every device of `to` (a friend) and for our other devices,
 * stores it, and sends it. id receives the message id. Returns 0 once the server
 * stored it; PT_ERR_OFFLINE / PT_ERR_TIMEOUT when it is kept in the outbox (sent
 * later, exactly once); PT_ERR_INVAL when text is not UTF-8 or too long. */
PT_API int pt_send(pt_ctx *ctx, const char *to, const char *text, char id[PT_ID_HEX_LEN]);
/* Fetches what waits on the server and waits up to wait_ms for something new. */
PT_API int pt_sync(pt_ctx *ctx, int wait_ms);
/* Messages not yet marked seen, oldest first (incoming, and sent by our other
 * devices). *out is freed with pt_free(). */
PT_API int pt_unseen(pt_ctx *ctx, pt_message **out, size_t *n);
/* Marks messages seen; incoming ones get a read receipt (now, or once connected). */
PT_API int pt_mark_seen(pt_ctx *ctx, const pt_message *msgs, size_t n);
/* The last `limit` messages of a conversation (a username or "#group"; NULL: all
 * conversations), oldest first. */
PT_API int pt_history(pt_ctx *ctx, const char *conversation, size_t limit, pt_message **out,
                      size_t *n);

/* Messages whose text contains `text` (case-insensitively, after Unicode case
 * folding), newest `limit` of them, oldest first; conversation as for pt_history.
 * Searching opens the sealed history in memory: no index or text is written. */
PT_API int pt_search(pt_ctx *ctx, const char *conversation, const char *text, size_t limit,
                     pt_message **out, size_t *n);
/* Tells friend `to` we are typing (1) or stopped (0). Unless typing notifications
 * are off, in which case nothing is sent (and 0 is returned). Not stored anywhere:
 * if `to` is offline it is simply lost. Call it at most every few seconds. */
PT_API int pt_send_typing(pt_ctx *ctx, const char *to, int typing);
/* Typing notifications: on by default; off means we neither send nor report them. */
PT_API int pt_set_typing_notifications(pt_ctx *ctx, int on);
PT_API int pt_get_typing_notifications(const pt_ctx *ctx);
/* Read receipts: sent by default; off means none is sent for what this device shows. */
PT_API int pt_set_read_receipts(pt_ctx *ctx, int on);
PT_API int pt_get_read_receipts(const pt_ctx *ctx);

/* ---- groups --------------------------------------------------------------------------------- */

/* Creates a group named name (unique among our groups) with these friends. */
PT_API int pt_group_create(pt_ctx *ctx, const char *name, const char *const *members, size_t n);
PT_API int pt_group_send(pt_ctx *ctx, const char *group, const char *text, char id[PT_ID_HEX_LEN]);
/* Our groups: name, and the group id (32 hex) in user_id. *out is freed with pt_free(). */
PT_API int pt_groups(pt_ctx *ctx, pt_user **out, size_t *n);
/* Members' usernames. *out is freed with pt_free(). */
PT_API int pt_group_members(pt_ctx *ctx, const char *group, pt_user **out, size_t *n);

/* ---- the local network (S2WMP discovery; chat without a server) ------------------------------ */

/* Turns the local network on: answers friends' broadcasts on UDP discovery_port (0:
 * 7001), accepts direct connections from friends' devices (on a TCP port of its own,
 * which the signed announcements name) and announces this device. From then on
 * pt_poll(), pt_sync() and pt_send() also work without a server: a message to a
 * friend found nearby goes to them directly (it still goes to the server too once one
 * is reachable, for their other devices; they take it once). Friends are told we are
 * here unless our status is invisible. PT_ERR_IO when the sockets cannot be opened. */
PT_API int pt_lan_start(pt_ctx *ctx, uint16_t discovery_port);
PT_API int pt_lan_active(const pt_ctx *ctx);
/* Broadcasts "is there a server here?" (BSM) and "who is here?" (BPM) and collects the
 * answers for wait_ms. PT_ERR_STATE before pt_lan_start(). */
PT_API int pt_lan_scan(pt_ctx *ctx, int wait_ms);

typedef enum pt_nearby_kind {
    PT_NEARBY_SERVER = 1,   /* a packtrackd that answered; fingerprint is its key */
    PT_NEARBY_FRIEND = 2,   /* a friend's device (signed by their identity key) */
    PT_NEARBY_STRANGER = 3, /* someone we cannot vouch for: nothing but an address */
} pt_nearby_kind;

typedef struct pt_nearby {
    pt_nearby_kind kind;
    char name[PT_NAME_MAX];               /* FRIEND: the username; STRANGER: "someone nearby" */
    char addr[64];                        /* the address it answered from */
    uint16_t port;                        /* SERVER: its TCP port; FRIEND: its direct port */
    char fingerprint[PT_FINGERPRINT_MAX]; /* SERVER: server key; FRIEND: device key */
    int obfs;                             /* SERVER: 1 plain, 2 MSE, 4 required, 8 pt-obfs */
    int connected;                        /* FRIEND: a direct connection is up */
    int64_t seen_ms_ago;
} pt_nearby;

/* What discovery saw so far (servers, then friends, then strangers). Free with pt_free(). */
PT_API int pt_nearby_list(pt_ctx *ctx, pt_nearby **out, size_t *n);

/* Someone nearby who introduced themselves: a name they chose (no server vouches for
 * it) and their identity key's fingerprint, which the user must compare with the one
 * that person's own device shows before asking to be friends. */
typedef struct pt_stranger {
    char name[PT_NAME_MAX];
    char user_id[PT_ID_HEX_LEN];          /* 32 hex digits: BLAKE2b-128 of the identity key */
    char fingerprint[PT_FINGERPRINT_MAX]; /* of the identity key, as pt_identity_fingerprint() */
    char addr[64];
} pt_stranger;

/* Asks every stranger nearby (their devices announce themselves) to introduce
 * themselves, and lists those whose introduction checks out (the device key is
 * signed by the identity key) after wait_ms. Free with pt_free(). */
PT_API int pt_lan_strangers(pt_ctx *ctx, int wait_ms, pt_stranger **out, size_t *n);
/* Sends a friend request (note may be NULL) to a stranger listed by
 * pt_lan_strangers(), by user id, directly. Call it only after the user compared the
 * fingerprint. 0 once their device stored it; the contact is then "request sent".
 * They accept with pt_friend_accept(), which answers directly too; the friendship is
 * told to the server when one is reachable. */
PT_API int pt_lan_friend_request(pt_ctx *ctx, const char *user_id, const char *note);

/* ---- devices -------------------------------------------------------------------------------- */

/* A one-time code for pt_create_linked() on a new device (valid 10 minutes). */
PT_API int pt_device_link_code(pt_ctx *ctx, char code[PT_LINK_CODE_MAX]);
PT_API int pt_devices(pt_ctx *ctx, pt_device **out, size_t *n);
/* Removes another device of ours (by pt_device.id or a unique prefix of it). */
PT_API int pt_device_revoke(pt_ctx *ctx, const char *id);

/* ---- direct addresses (S2WMP REG/LP) ---- */

/* One address at which a device of a user can be reached peer to peer. */
typedef struct pt_peer_addr {
    char device[65];          /* the device's key (64 hex digits): pin it when connecting */
    char addr[64];            /* "a.b.c.d" or an IPv6 address, as text */
    uint16_t port;            /* TCP port of the device's peer-to-peer listener */
    int64_t registered_at_ms; /* when the device registered it (server clock, ms since 1970) */
} pt_peer_addr;

/* Tells the server where this device can be reached directly: n addresses (1..8,
 * each "a.b.c.d" or IPv6 text) and one port (1..65535). Opt-in: nothing is
 * registered until this is called. The server shows them only to our friends and
 * our other devices, keeps them in memory only, replaces them with the next call
 * and forgets them when this device disconnects; n == 0 withdraws them now (addrs
 * may then be NULL). At most one call a second: PT_ERR_REFUSED (FLOOD_WAIT_1)
 * otherwise. PT_ERR_INVAL when an address does not parse, n > 8 or port is 0. */
PT_API int pt_addr_register(pt_ctx *ctx, const char *const *addrs, size_t n, uint16_t port);
/* The direct addresses that the devices of user `name` registered, one entry per
 * device and address, only for devices on name's signed device list. Empty
 * (0, *n == 0) when there is nothing we may see: name is not a friend, is
 * invisible or offline, or registered nothing. name may be our own username: our
 * other devices. PT_ERR_NOT_FOUND when there is no such user. *out is freed with
 * pt_free(). */
PT_API int pt_addr_lookup(pt_ctx *ctx, const char *name, pt_peer_addr **out, size_t *n);

#ifdef __cplusplus
}
#endif
#endif /* PACKTRACK_H */
