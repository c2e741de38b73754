/*
 * libpacktrack internals shared by the files of src/api. See include/packtrack.h for the
 * contract and docs/ARCHITECTURE.md ("libpacktrack") for the design.
 */
#ifndef PT_API_INT_H
#define PT_API_INT_H

#include <sqlite3.h>

#include "api/lstore.h"
#include "client/pt_client.h"
#include "common/pt_common.h"
#include "e2e/pt_chat.h"
#include "e2e/pt_olm.h"
#include "pt_tl.h"

#define PT_API_DEFAULT_TIMEOUT_MS 10000
#define PT_API_OTK_BATCH 50          /* one-time keys published at a time */
#define PT_API_MAX_DEVICES 64        /* devices of one user we encrypt for */
#define PT_API_BACKOFF_MIN_MS 500
#define PT_API_MAX_NESTED 8 /* calls waiting inside one another (a reconnect's own calls) */
#define PT_API_BACKOFF_MAX_MS 30000
#define PT_API_STORE_BACKOFF_MAX_MS 8000 /* resending after STORE_FAILED */
#define PT_API_LAN_WAIT_MS 2500   /* a send without a server waits this long for the friend nearby */
#define PT_API_SEEN_KEEP_MS (30LL * 24 * 3600 * 1000) /* envelope hashes kept this long */

/* ---- records: the bytes sealed in the local store ------------------------------------------- */

typedef struct pt_rd {
    const uint8_t *p;
    size_t n;
    bool bad; /* a read ran past the end: the record is damaged */
} pt_rd;

uint8_t pt_rd_u8(pt_rd *r);
uint32_t pt_rd_u32(pt_rd *r);
uint64_t pt_rd_u64(pt_rd *r);
void pt_rd_fixed(pt_rd *r, uint8_t *out, size_t n);
const uint8_t *pt_rd_bytes(pt_rd *r, size_t *len);
void pt_rd_str(pt_rd *r, char *out, size_t cap);

int pt_wr_u8(pt_buf *b, uint8_t v) PT_WUR;
int pt_wr_u32(pt_buf *b, uint32_t v) PT_WUR;
int pt_wr_u64(pt_buf *b, uint64_t v) PT_WUR;
int pt_wr_bytes(pt_buf *b, const void *p, size_t len) PT_WUR; /* u32 length ‖ bytes */
int pt_wr_str(pt_buf *b, const char *s) PT_WUR;

/* A device of a user, as its signed prekey (checked under the user's identity key) told. */
typedef struct pt_api_dev {
    uint8_t device[32]; /* the Noise static key the server routes by */
    uint8_t curve[32];  /* its Olm Curve25519 identity */
    uint8_t fallback[32];
    uint8_t known;      /* seen first, trusted or verified; a device that is not stops sending */
    uint8_t pad[7];
} pt_api_dev;

/* A person we know of: a contact, a group co-member, or ourselves. */
typedef struct pt_api_contact {
    uint8_t user_id[16];
    char name[PT_NAME_MAX];
    uint8_t identity_key[32];
    uint8_t state;              /* pt_contact_state */
    uint8_t status;             /* pt_status as last pushed */
    uint8_t verified;
    uint8_t key_changed;        /* the device set differs from known_hash */
    uint8_t known_hash[16];     /* BLAKE2b of the device set first seen, trusted or verified; zero: none yet */
    size_t ndev;
    pt_api_dev dev[PT_API_MAX_DEVICES];
    uint8_t lan;                /* PT_API_LAN_*: met on the local network */
} pt_api_contact;

#define PT_API_LAN_MET 0x01          /* introduced on the local network, not by a server */
#define PT_API_LAN_SERVER_OWED 0x02  /* the friendship is still to be told to the server */
#define PT_API_LAN_ACCEPT_OWED 0x04  /* our FRIEND_ACCEPT is still to reach them directly */

typedef struct pt_api_group {
    uint8_t group_id[16];
    char name[PT_NAME_MAX];
    uint8_t joined;
} pt_api_group;

/* A message row (sealed part). */
typedef struct pt_api_msg {
    uint8_t msg_id[16];
    uint8_t outgoing;
    uint8_t delivery;           /* pt_delivery */
    uint8_t code;
    uint8_t group_id[16];       /* zero: 1:1 */
    uint8_t peer[16];           /* 1:1: the other user; group: the sender */
    char from[PT_NAME_MAX], to[PT_NAME_MAX], group[PT_NAME_MAX];
    uint64_t time_ms;
    int64_t server_id;          /* outgoing: the server's id once stored; incoming: as delivered */
    uint8_t undecryptable;      /* incoming placeholder: could not be read (code says why) */
    uint8_t resent;             /* outgoing: already sent again once after a failure */
    pt_buf text;                /* NUL-terminated */
} pt_api_msg;

/* What the outbox holds: one send to the server, encrypted once (exactly once). */
enum { PT_OUT_DIRECT = 0, PT_OUT_COPY = 1, PT_OUT_GROUP = 2, PT_OUT_INFO = 3, PT_OUT_RESEND = 4 };

typedef struct pt_api_result {
    uint64_t req;
    pt_buf body;
} pt_api_result;

typedef struct pt_lan pt_lan; /* lan.c */

struct pt_ctx {
    char home[1024], host[256], server_fp[80];
    char obfuscation[16], network_key[130]; /* pt_options' obfuscation, "" when off */
    uint16_t port;
    int timeout_ms;
    const pt_env *env;
    pt_lstore *st;
    pt_client *cl;
    pt_olm_account *acct;
    pt_chat *chat;
    uint8_t pickle_key[32];
    uint8_t id_pk[32];
    uint8_t *id_sk;             /* secure memory, 64 bytes */
    uint8_t dev_sk[32], dev_pk[32];
    uint8_t my_curve[32], my_ed[32];
    uint8_t user_id[16];
    char user_hex[PT_ID_HEX_LEN], username[PT_NAME_MAX], id_fp[PT_FINGERPRINT_MAX];
    pt_status status;
    bool no_read_receipts;      /* setting: send no read receipts */
    bool no_typing;             /* setting: no typing notifications, either way */
    pt_event_cb cb;
    void *ud;
    char last_error[256];
    /* users whose device lists were read during the current send: it checks the
     * recipient's keys and then encrypts for them, and one read serves both. Empty
     * outside pt_send/pt_group_send, so no other check ever sees an older list. */
    bool in_send;
    uint8_t fresh[8][16];
    size_t nfresh;
    pt_lan *lan;                /* the local network, once pt_lan_start() ran; else NULL */
    bool online;                /* the channel is up */
    bool bound;                 /* the server knows our device (profile complete) */
    bool in_updates;            /* process_updates is running */
    bool flushing_outbox;       /* pt_api_flush_outbox is running (not reentrant) */
    bool sending_receipts;      /* pt_api_send_read_receipts is running */
    uint64_t next_try_ms;
    int backoff_ms;
    int renew_reconnects;      /* nesting of reconnects after a session restart (pt_api_call) */
    uint64_t awaiting[PT_API_MAX_NESTED]; /* calls waiting for results, outermost first */
    size_t nawait;
    /* the server answered STORE_FAILED (its disk full or failing): the outbox keeps
     * its rows and is sent again from this time on, with its own backoff */
    uint64_t store_retry_ms;
    char store_reason[32];      /* why the last send was kept: STORE_FAILED or a full queue */
    int store_backoff_ms;
    /* what the pump collected: call results, and updates to handle */
    pt_api_result *res;
    size_t nres, capres;
    pt_buf *upd;
    size_t nupd, capupd;
};

/* api.c */
int pt_api_fail(pt_ctx *x, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void pt_api_emit(pt_ctx *x, const pt_event *ev);
/* A decoded answer: o borrows from body and arena; pt_api_reply_free() releases. */
typedef struct pt_api_reply {
    pt_tl_obj o;
    pt_buf body;
    void *arena;
} pt_api_reply;
void pt_api_reply_free(pt_api_reply *r);
/* Sends an encoded call (req is consumed: reset) and waits for its result. An
 * rpc_error becomes PT_ERR_REFUSED with its message in last_error. r may be NULL. */
int pt_api_call(pt_ctx *x, pt_buf *req, pt_api_reply *r) PT_WUR;
/* Sends a notice (messages.confirm): nothing answers it, so nothing is awaited; it is
 * written at once. PT_ERR_OFFLINE when not connected (what it confirms comes again). */
int pt_api_notice(pt_ctx *x, pt_buf *req) PT_WUR;
/* Encodes a pt_tl_TYPE q (fields set by the trailing statements) into b_ and sends it
 * with `send`, an expression that may use b_. */
#define PT_API_ENCODED(rc, type, send, ...)                                                        \
    do {                                                                                           \
        pt_tl_##type q = {0};                                                                      \
        __VA_ARGS__;                                                                               \
        pt_buf b_;                                                                                 \
        pt_buf_init(&b_);                                                                          \
        (rc) = pt_tl_##type##_encode(&b_, &q);                                                     \
        if ((rc) == 0) (rc) = (send);                                                              \
        pt_buf_free(&b_);                                                                          \
    } while (0)
/* A call of TL type `type`, with fields set by the trailing statements on q. */
#define PT_API_CALL(rc, x, r, type, ...)                                                           \
    PT_API_ENCODED(rc, type, pt_api_call((x), &b_, (r)), __VA_ARGS__)
/* A notice (messages.confirm) likewise. */
#define PT_API_NOTICE(rc, x, type, ...)                                                            \
    PT_API_ENCODED(rc, type, pt_api_notice((x), &b_), __VA_ARGS__)
int pt_api_ensure_online(pt_ctx *x) PT_WUR;
void pt_api_process_updates(pt_ctx *x);
/* Puts the pending updates of stored items in server-id order (after a sync): the
 * items of each node (server_id >> 40) among themselves; those of different nodes
 * keep the order they came in. */
void pt_api_order_updates(pt_ctx *x);
void pt_api_order_by_server(pt_buf *upd, size_t n);
int pt_api_save_account(pt_ctx *x) PT_WUR;
int pt_api_save_session(pt_ctx *x, const uint8_t peer[32]) PT_WUR;

/* people.c */
int pt_api_contact_load(pt_ctx *x, const uint8_t user_id[16], pt_api_contact *c) PT_WUR;
int pt_api_contact_by_name(pt_ctx *x, const char *name, pt_api_contact *c) PT_WUR;
int pt_api_contact_save(pt_ctx *x, const pt_api_contact *c) PT_WUR;
/* Loads (or creates, asking the server) the record of user_id; refreshes its
 * device list from the server when `refresh` (verifying every signature). */
int pt_api_person(pt_ctx *x, const uint8_t user_id[16], bool refresh, pt_api_contact *c) PT_WUR;
/* Forgets that user's device list was read recently: the next refresh asks the server
 * (a message from a device we do not know yet must never be judged on a stale list). */
void pt_api_stale(pt_ctx *x, const uint8_t user_id[16]);
/* users.resolve + identity check. */
int pt_api_resolve(pt_ctx *x, const char *name, pt_api_contact *c) PT_WUR;
int pt_api_upload_keys(pt_ctx *x, bool signed_too) PT_WUR;
int pt_api_own_bundle(pt_ctx *x, uint32_t *key_id, uint8_t spk[64], uint8_t sig[64]) PT_WUR;
int pt_api_contact_from_intro(pt_ctx *x, const uint8_t identity_key[32], const char *name, const uint8_t device[32],
                              uint32_t key_id, const uint8_t spk[64], const uint8_t sig[64], pt_api_contact *c) PT_WUR;
int pt_api_sync_lan_friends(pt_ctx *x) PT_WUR;
/* Contact states and presence from the server into our records. */
int pt_api_sync_contacts(pt_ctx *x) PT_WUR;
void pt_api_on_contact(pt_ctx *x, const pt_tl_updates_contact *u);
void pt_api_on_status(pt_ctx *x, const pt_tl_updates_userStatus *u);
void pt_api_on_typing(pt_ctx *x, const pt_tl_updates_typing *u);

/* msg.c */
int pt_api_flush_outbox(pt_ctx *x) PT_WUR;
int pt_api_send_read_receipts(pt_ctx *x) PT_WUR;
void pt_api_on_message(pt_ctx *x, int64_t server_id, const uint8_t from[16], const uint8_t dev[32],
                       const uint8_t *group_id, const pt_tl_bytes *env);
void pt_api_on_receipt(pt_ctx *x, const pt_tl_updates_receipt *u);
void pt_api_on_group_event(pt_ctx *x, const pt_tl_updates_groupEvent *u);
int pt_api_group_load(pt_ctx *x, const uint8_t gid[16], pt_api_group *g) PT_WUR;
/* The envelope with this hash was taken (exactly once) already. */
bool pt_api_envelope_seen(pt_ctx *x, const uint8_t hash[16]);
/* Direct delivery: fn gets each outbox row that may go directly to `user` (see msg.c);
 * a non-zero return stops the walk and is returned. */
typedef int (*pt_api_direct_fn)(pt_ctx *x, void *ud, const uint8_t *env, size_t len, const uint8_t hash[16]);
int pt_api_outbox_direct(pt_ctx *x, const uint8_t user[16], pt_api_direct_fn fn, void *ud);
int pt_api_outbox_direct_peek(pt_ctx *x, const uint8_t user[16], pt_api_direct_fn fn, void *ud);
int pt_api_outbox_direct_acked(pt_ctx *x, const uint8_t hash[16]) PT_WUR;

/* lan.c */
/* Services the local-network sockets for up to timeout_ms; extra_fd (or -1) is
 * polled with them and *extra_ready says whether it became readable. */
int pt_api_lan_service(pt_ctx *x, int timeout_ms, int extra_fd, bool *extra_ready) PT_WUR;
/* Sends the outbox rows for `user` directly, looking for them first if needed; 0 once
 * none waits, PT_ERR_OFFLINE when they were not reached within wait_ms. */
int pt_api_lan_deliver(pt_ctx *x, const uint8_t user_id[16], int wait_ms);
bool pt_api_lan_reaches(pt_ctx *x, const uint8_t user_id[16]);
void pt_api_lan_free(pt_ctx *x);
/* REG/LP with the server when connected (rate-limited inside); the server went away. */
void pt_api_lan_server_exchange(pt_ctx *x);
void pt_api_lan_server_lost(pt_ctx *x);
/* Accepts a request made on the local network: FRIEND here, FRIEND_ACCEPT to them directly
 * (now if they are nearby, else when they next are). */
int pt_api_lan_accept(pt_ctx *x, pt_api_contact *c) PT_WUR;

int pt_api_msg_load(pt_ctx *x, sqlite3_stmt *st, pt_api_msg *m) PT_WUR; /* cols: seq?, msg_id, server_id, v */

/* TEST ONLY (tests/integration/test_collision.c forces a profile's first identity to
 * collide with another user's): zero in every program, and not exported from the
 * shared library. */
typedef struct pt_api_test_hooks {
    int (*identity)(uint8_t pk[32], uint8_t sk[64]); /* set: new identity key pairs from it */
    unsigned user_id_bits; /* 1..127: user ids keep only these leading bits, as the server's
                            * pt_server_config.test_user_id_bits */
} pt_api_test_hooks;
extern pt_api_test_hooks pt_api_test;

#endif
