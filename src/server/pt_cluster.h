/*
 * Cluster mode: what several packtrackd nodes share, behind one interface.
 *
 * Two implementations:
 *  - local: s->cluster == NULL. One node with its SQLite store; every hook below is
 *    behind an `if (s->cluster)` test, so local mode runs today's code path and pays
 *    one pointer test on the paths that have a hook (routing a push, sync, received,
 *    bind, a directory miss).
 *  - nats (cluster_nats.c, built when pkg-config finds libnats): NATS core subjects
 *    carry live traffic between nodes, a JetStream key-value bucket holds the
 *    cluster-wide username directory. Without libnats, cluster_none.c refuses to
 *    start in cluster mode with a clear message.
 *
 * Subjects (docs/ARCHITECTURE.md "Cluster mode"):
 *   pt.dev.<device hex>   an encoded updates.* object for that device; a node
 *                         subscribes while the device has a connection to it
 *   pt.sync               device[32] || node_id u32le: "this device asked for its
 *                         queue"; each other node that holds rows for it resends them
 *   pt.rcv.<node_id>      device[32] || server_id i64le...: the device confirmed these
 *                         items of that node's queue
 *   pt.pres               node_id u32le | kind | ...: presence of each node's users
 *                         (user[16] | status | name len | name), heartbeats every 2 s,
 *                         and a hello at start (the others announce their users)
 * KV bucket pt_users (history 1, file storage, `replicas` copies):
 *   n.<hex of the username key>  user_id[16]; created with kvStore_Create, so one user
 *                                per name cluster-wide
 *   s.<hex of the skeleton>      user_id[16]; likewise (confusable names)
 *   u.<user hex>                 the user record (identity key, name), created once
 *   v.<user hex>.<device hex>    empty: the device is the user's (create-only; listed
 *                                with a watch on v.<user hex>.*)
 *   d.<device hex>               user_id[16]; created at the device's bind, so a device
 *                                bound on one node is bound on every node
 *   i.<node_id>                  u64le: the end of the server ids reserved by that node
 *   x.salt                       the session layer's salt secret (32 bytes), shared
 *   p.<device hex>               the device's prekeys: its signed prekey, its one-time
 *                                prekeys and the floor of their ids (format 2), in one
 *                                value, rewritten by its uploads only
 *   r.<device hex>               user_id[16]: the device is revoked (create-only; a bind of
 *                                it is refused on every node)
 *   c.<device hex>.<key id>      node_id u32le: that one-time key was handed out; a fetch
 *                                creates it (kvStore_Create), so one fetch in the whole
 *                                cluster gets each key; the next upload drops the key
 *                                from p.<device hex>, and this key goes 60 s later
 *   k.<lo user>.<hi user>        version u32 and the relation of two users: the state of
 *                                each towards the other (request sent / received,
 *                                friends, blocked) and the request's note; versioned like
 *                                g.<group hex>; every node copies it into its store
 *   o.<user hex>                 u8: the status the user chose (online, busy, away,
 *                                invisible), through whichever node
 *   g.<group hex>                version u32 and the group: its members with their roles
 *                                and its pending invitations, in one value; a change
 *                                publishes version n + 1 with message id
 *                                "g.<group hex>.<n + 1>" (pt_cluster_group_put), so of
 *                                two changes made on version n one is made again on n + 1
 *
 * Stream PT_QUEUE (work queue, file storage, `replicas` copies): pt.q.<device hex>, the
 * device's durable queue of items sent through pt_srv_forward (messages, receipts,
 * group messages), at most queue_quota items each (the stream's per-subject limit);
 * consumer d<device hex> delivers to pt.qd.<device hex>, to whichever node the device
 * is connected to, is acked when the device confirms, and is deleted by JetStream
 * after [cluster] consumer_idle without the device (made again when it comes back).
 * Contact notices and group events go to the same queues (pt_srv_item_enqueue); rows
 * an earlier version kept in a node's SQLite are still served through pt.sync / pt.rcv
 * above; group membership is the bucket's (g.<group hex>). server_ids are node_id << 40 | n, from blocks reserved in the bucket.
 */
#ifndef PT_CLUSTER_H
#define PT_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include "server/pt_server.h"
#include "server/pt_username.h"

typedef struct pt_cluster pt_cluster;
struct pt_srv_devlist;
struct pt_srv_sess;
struct pt_buf;

#define PT_CLUSTER_SERVER_ID_SHIFT 40

/* Whether this build has the nats implementation. */
bool pt_cluster_available(void);
/* 0 when list is a comma-separated list of nats:// / tls:// URLs, else PT_ERR_INVAL. */
int pt_cluster_urls_check(const char *list);
/* NULL when cfg is a usable cluster configuration (or local mode), else a sentence
 * saying what is wrong (static storage). */
const char *pt_cluster_config_error(const pt_cluster_config *cfg);

/* The node that assigned server_id (0: a local-mode id). */
static inline uint32_t pt_cluster_node_of(int64_t server_id)
{
    return (uint32_t)((uint64_t)server_id >> PT_CLUSTER_SERVER_ID_SHIFT);
}

/* Connects to NATS, opens (or creates) the bucket and subscribes to the node's
 * subjects; s->cluster is set on success. Loop thread, before the loop runs. 0, or
 * PT_ERR_IO / PT_ERR_INVAL with the reason logged. */
int pt_cluster_start(pt_server *s);
/* Closes the loop handles (the loop must run afterwards to finish closing them). */
void pt_cluster_stop(pt_server *s);
/* Closes the NATS connection and frees everything; after the loop ended. NULL no-op. */
void pt_cluster_free(pt_server *s);

/* ---- loop thread, non-blocking (a publish is buffered by libnats) -------------------- */

/* Device `pk` has its first connection here (up) / lost its last one (down). */
void pt_cluster_device_up(pt_cluster *c, const uint8_t pk[32], void **sub);
void pt_cluster_device_down(pt_cluster *c, void **sub);
/* Durable queues (stream PT_QUEUE, subjects pt.q.<device hex>): publishes the encoded
 * update of item server_id once per device of `to`, with Nats-Msg-Id
 * "k<key hex>.<device hex>" (key: 16 bytes, the identity of the request that made the
 * item, the same on whichever node it is made again), so a retried publish, or the
 * same request made again through another node, is stored once (within JetStream's 2-minute duplicate window); cb(arg, 0, id) on the loop once
 * JetStream acknowledged every one (a quorum of the replicas has it), where id is the
 * server id the item is queued under: server_id, or that of the copy an earlier try of
 * the request stored when find_id (server_id when that copy has left the queue
 * already; without find_id always server_id),
 * cb(arg, PT_ERR_IO) once one failed Q_PUB_TRIES times, cb(arg, PT_ERR_TOO_BIG) when a
 * device's queue held the queue quota of items (that device does not get it; the others
 * do). The device's durable consumer
 * delivers it to the node the device is connected to, which pushes it and acks it to
 * JetStream when the device confirms it (messages.received -> pt_cluster_received).
 * 0 (cb will be called), or an error (it will not). */
typedef void (*pt_cluster_queued_cb)(void *arg, int rc, int64_t id);
int pt_cluster_enqueue(pt_cluster *c, int64_t server_id, const uint8_t *key, bool find_id,
                       const struct pt_srv_devlist *to, const struct pt_buf *update, pt_cluster_queued_cb cb,
                       void *arg);
/* Whether the queue of a device of `to` holds quota items or more: 1, 0, PT_ERR_IO.
 * Blocking: one JetStream round trip per device (the store's writer). */
int pt_cluster_queues_full(pt_cluster *c, const struct pt_srv_devlist *to, uint32_t quota);
/* The session layer's salt secret, the same on every node (bucket key x.salt, created
 * by the first node with random bytes), so that a session moving to another node
 * keeps a valid server salt. 0, or PT_ERR_IO (secret unchanged). Blocking, at start. */
int pt_cluster_salt_secret(pt_cluster *c, uint8_t *secret, size_t len);
/* Reserves PT_CLUSTER_ID_BLOCK server ids for this node in the bucket (key i.<node_id>,
 * compare-and-set), at or above *next: [*next, *limit). Ids are never given twice, even
 * when the node's own store kept none of them (the queue is JetStream's). Blocking. */
#define PT_CLUSTER_ID_BLOCK (INT64_C(1) << 24)
int pt_cluster_reserve_ids(pt_cluster *c, int64_t *next, int64_t *limit);
/* Asks for queue quota `quota` (items per device queue, cluster-wide: the stream's
 * limit of messages per subject): raised when the stream's is lower, never lowered
 * (JetStream would trim queued items); done on a worker thread, logged. 0, or
 * PT_ERR_NOMEM. Returns at once (at reload, on the loop). */
int pt_cluster_set_queue_quota(pt_cluster *c, uint32_t quota);

/* Presence: user, connected here, now has status (PT_STATUS_ONLINE ..
 * PT_STATUS_INVISIBLE; PT_STATUS_OFFLINE: no connection here any more) and display
 * name `name`; told to every other node (subject pt.pres). */
void pt_cluster_presence(pt_cluster *c, const uint8_t user[16], int status, const char *name);
/* The status user chose, for every node (key o.<user hex>; every node watches them).
 * 0 or PT_ERR_IO. Blocking: the store's writer thread. */
int pt_cluster_status_put(pt_cluster *c, const uint8_t user[16], int status);
/* Sends an encoded update to a device connected to another node, if any is. */
void pt_cluster_route(pt_cluster *c, const uint8_t pk[32], const struct pt_buf *update);
/* Session e of device pk now has a connection: pushes it what device pk's durable
 * queue delivered here and it did not confirm, in delivery order, before anything
 * delivered later can be pushed live. */
void pt_cluster_attached(pt_cluster *c, const uint8_t pk[32], struct pt_srv_sess *e);
/* Pushes again what device pk's durable queue delivered here and it did not confirm,
 * and asks the other nodes to resend what they hold queued for it in their SQLite. */
void pt_cluster_sync(pt_cluster *c, const uint8_t pk[32]);
/* Acks to JetStream the deliveries of device pk's durable queue that it confirmed here,
 * and forwards its confirmations of items other nodes queued in their SQLite (ids of
 * this node's own are skipped; the local path deletes those). */
void pt_cluster_received(pt_cluster *c, const uint8_t pk[32], const int64_t *ids, uint32_t n);

/* ---- the directory: blocking round trips to JetStream (about 1 ms on a LAN) ----------- */

/* Claims name `key` (and its confusable skeleton) for user and records the user's
 * device: 0; PT_ERR_EXISTS with *why "USERNAME_TAKEN", "USERNAME_CONFUSABLE" or
 * "USER_HAS_ANOTHER_USERNAME"; PT_ERR_IO when JetStream did not answer (*why
 * "CLUSTER_UNAVAILABLE"). The same user claiming its own name again is 0. Any thread
 * (the store's writer runs it inside the bind transaction). */
int pt_cluster_bind(pt_cluster *c, const uint8_t user_id[16], const uint8_t identity[32],
                    const char *display, const char *key, const char *skeleton,
                    const uint8_t device[32], const char **why);
/* A user bound on any node: identity key, display name (size PT_CLUSTER_NAME_SIZE) and
 * devices (appended to devs, which may be NULL). 0, PT_ERR_NOT_FOUND or PT_ERR_IO. */
#define PT_CLUSTER_NAME_SIZE 256
/* The display name alone, from a cache of NAME_CACHE names on the loop thread (a user's
 * name never changes): one bucket read per user and node. Loop thread. */
int pt_cluster_user_name(pt_cluster *c, const uint8_t user_id[16], char display[PT_CLUSTER_NAME_SIZE]);
int pt_cluster_user(pt_cluster *c, const uint8_t user_id[16], uint8_t identity[32],
                    char display[PT_CLUSTER_NAME_SIZE], struct pt_srv_devlist *devs);
/* The user device is bound to, on any node (key d.<device hex>, created at its bind):
 * 0, PT_ERR_NOT_FOUND or PT_ERR_IO. Blocking. */
int pt_cluster_device_user(pt_cluster *c, const uint8_t device[32], uint8_t user_id[16]);
/* The user owning username key: 0, PT_ERR_NOT_FOUND or PT_ERR_IO. */
int pt_cluster_resolve(pt_cluster *c, const char *key, uint8_t user_id[16]);

/* ---- the prekey directory (key p.<device hex>): blocking, the store's writer thread -------- */

typedef struct pt_cluster_prekey {
    int32_t id;
    uint8_t len;
    uint8_t key[PT_SERVER_PREKEY_MAX];
} pt_cluster_prekey;

typedef struct pt_cluster_signed {
    bool has;
    int32_t id;
    uint8_t len;
    uint8_t key[PT_SERVER_PREKEY_MAX];
    uint8_t signature[64];
} pt_cluster_signed;

/* Stores a device's upload: replaces the signed prekey when sig->has, adds the n
 * one-time keys whose ids it does not hold yet. *count = one-time keys stored after.
 * 0; PT_ERR_TOO_BIG when that would exceed PT_SERVER_PREKEY_STORED_MAX (nothing
 * stored); PT_ERR_IO when JetStream did not answer or kept changing it. */
int pt_cluster_prekeys_put(pt_cluster *c, const uint8_t device[32], const pt_cluster_signed *sig,
                           const pt_cluster_prekey *keys, uint32_t n, int *count);
/* A bundle of device: its signed prekey and, when it has one left, the unclaimed
 * one-time key with the smallest id, claimed for this fetch (*otk->len = 0: none).
 * 1 with a bundle, 0 when the device has no signed prekey, PT_ERR_IO. *left = the
 * one-time keys left. */
int pt_cluster_prekeys_take(pt_cluster *c, const uint8_t device[32], pt_cluster_signed *sig,
                            pt_cluster_prekey *otk, int *left);
/* The signed prekey of device, consuming nothing (prekeys.list): 1, 0 when it has none,
 * PT_ERR_IO. Any thread. */
int pt_cluster_prekeys_signed(pt_cluster *c, const uint8_t device[32], pt_cluster_signed *sig);

/* devices.revoke in cluster mode: marks device revoked (r.<device hex>), removes it from
 * the user's devices (v.<user>.<device>) and its prekeys (p.<device>), so no node lists
 * it or hands out its bundle again, and drops its queue (the items and the consumer). 0, PT_ERR_NOT_FOUND (not that user's device),
 * PT_ERR_IO. Blocking (the store's writer). */
int pt_cluster_revoke(pt_cluster *c, const uint8_t user_id[16], const uint8_t device[32]);
/* 1 revoked, 0 not, PT_ERR_IO. */
int pt_cluster_revoked(pt_cluster *c, const uint8_t device[32]);

/* ---- versioned records (groups, contacts): blocking round trips, any thread -------------- */

/* What a read of a versioned record saw, for the write that follows it. */
typedef struct pt_cluster_vref {
    int64_t version;                /* 0: no record */
    uint64_t rev;                   /* the bucket's revision of it */
    uint64_t read_ms;               /* when (uv_hrtime, ms) */
    uint8_t change[8];              /* read: the change id of the version read */
    const uint8_t *mine;            /* put: the change id to write (8 bytes: the first of
                                       the request's key, so that the request made again
                                       finds it applied), NULL: random */
} pt_cluster_vref;

/* ---- groups (key g.<group hex>) ---------------------------------------------------------- */

typedef struct pt_cluster_group {
    uint32_t nm, ni;                /* members, pending invitations (nm + ni <= the max) */
    struct {
        uint8_t user[16];
        uint8_t role;               /* 0 member, 1 admin, 2 creator */
    } m[PT_SERVER_GROUP_MAX_MEMBERS];
    struct {
        uint8_t user[16], inviter[16];
    } inv[PT_SERVER_GROUP_MAX_MEMBERS];
} pt_cluster_group;

/* Reads group into *g: its version (> 0), 0 when there is no such group (*g empty; a
 * group whose last member left reads as none), PT_ERR_IO or PT_ERR_DECODE. ref (may
 * be NULL) is what a pt_cluster_group_put after it needs. */
int64_t pt_cluster_group_get(pt_cluster *c, const uint8_t group[16], pt_cluster_group *g, pt_cluster_vref *ref);
/* Writes *g as the version after the one read into ref (version 0: a new group),
 * unless another change made that version first: 0 written; 1 when another change
 * came first, or more than a minute passed since the read (read again and retry);
 * PT_ERR_IO. Message-id deduplication, not compare-and-set (cluster_nats.c says why). */
int pt_cluster_group_put(pt_cluster *c, const uint8_t group[16], const pt_cluster_group *g,
                         const pt_cluster_vref *ref);

/* ---- contacts (key k.<lo user hex>.<hi user hex>, lo < hi) -------------------------------- */

typedef struct pt_cluster_contact {
    int lo_state, hi_state;         /* PT_CONTACT_* of lo towards hi, of hi towards lo; 0 none */
    uint16_t note_len;
    uint8_t note[PT_SERVER_NOTE_MAX]; /* the request's note */
} pt_cluster_contact;

/* The relation of me and peer: its version (0: none; *mine = *theirs = 0), PT_ERR_IO or
 * PT_ERR_DECODE; *mine = me's state towards peer, *theirs = peer's towards me. */
int64_t pt_cluster_contact_get(pt_cluster *c, const uint8_t me[16], const uint8_t peer[16], int *mine,
                               int *theirs, pt_cluster_vref *ref);
/* Writes the version after ref's (as pt_cluster_group_put). */
int pt_cluster_contact_put(pt_cluster *c, const uint8_t me[16], const uint8_t peer[16], int mine, int theirs,
                           const void *note, size_t note_len, const pt_cluster_vref *ref);

/* ---- the records (cluster_rec.c: every build; fuzz/fuzz_cluster_record.c) --------------- */

/* u.<user hex>: identity[32] | u16 display len | display | u16 key len | key |
 * u8 devices | devices[32 each] (devices: records written before v.<user>.<device> keys) */
typedef struct pt_cluster_user_rec {
    uint8_t identity[32];
    char display[PT_CLUSTER_NAME_SIZE];
    char key[PT_USERNAME_KEY_SIZE];
    uint8_t ndev;
    uint8_t dev[PT_SERVER_USER_DEVICES_MAX][32];
} pt_cluster_user_rec;
#define PT_CLUSTER_USER_REC_MAX \
    (32 + 2 + PT_CLUSTER_NAME_SIZE + 2 + PT_USERNAME_KEY_SIZE + 1 + 32 * PT_SERVER_USER_DEVICES_MAX)
/* 0 or PT_ERR_DECODE */
int pt_cluster_user_rec_decode(pt_cluster_user_rec *r, const uint8_t *p, size_t len);
/* out: PT_CLUSTER_USER_REC_MAX bytes; returns the length */
size_t pt_cluster_user_rec_encode(uint8_t *out, const pt_cluster_user_rec *r);

/* p.<device hex>: the device's signed prekey and its one-time prekeys */
typedef struct pt_cluster_prekeys {
    pt_cluster_signed sig;
    int32_t floor;                  /* one-time key ids up to it are not taken (ids only grow:
                                       every id stored before; INT32_MIN: none) */
    uint32_t n;
    pt_cluster_prekey k[PT_SERVER_PREKEY_STORED_MAX];
} pt_cluster_prekeys;
#define PT_CLUSTER_PREKEYS_MAX \
    (2 + 4 + 1 + PT_SERVER_PREKEY_MAX + 64 + 2 + PT_SERVER_PREKEY_STORED_MAX * (4 + 1 + PT_SERVER_PREKEY_MAX) + 4)
int pt_cluster_prekeys_decode(pt_cluster_prekeys *r, const uint8_t *p, size_t len);
/* Whether uploaded keys[i] is to be stored (both modes): its id is above floor (one-time
 * key ids only grow: every id stored before is at most floor) and not earlier in keys. */
bool pt_cluster_prekey_new(const pt_cluster_prekey *keys, uint32_t i, int64_t floor);
size_t pt_cluster_prekeys_encode(uint8_t *out, const pt_cluster_prekeys *r);

/* Versioned records (groups, contacts) start with format 1 | version u32 | change id[8]. */
#define PT_CLUSTER_VREC_HEAD 13
#define PT_CLUSTER_GROUP_REC_MAX (PT_CLUSTER_VREC_HEAD + 2 + 2 + PT_SERVER_GROUP_MAX_MEMBERS * 32)
#define PT_CLUSTER_CONTACT_REC_MAX (PT_CLUSTER_VREC_HEAD + 2 + 2 + PT_SERVER_NOTE_MAX)
/* Decode a whole record (head included, not checked here); encode from the head on
 * (the head is the writer's). 0 or PT_ERR_DECODE; the length. */
int pt_cluster_group_decode(pt_cluster_group *g, const uint8_t *p, size_t len);
size_t pt_cluster_group_encode(uint8_t *out, const pt_cluster_group *g);
int pt_cluster_contact_decode(pt_cluster_contact *k, const uint8_t *p, size_t len);
size_t pt_cluster_contact_encode(uint8_t *out, const pt_cluster_contact *k);

#endif
