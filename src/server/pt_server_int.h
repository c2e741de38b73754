/* packtrackd internals shared by the files of src/server (not installed). */
#ifndef PT_SERVER_INT_H
#define PT_SERVER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

#include "pt_tl.h"
#include "server/pt_server.h"
#include "session/pt_sess.h"
#include "store/pt_db.h"

typedef struct pt_conn pt_conn;

/* A token bucket of abuse control (abuse.c). */
typedef struct pt_abuse_bucket {
    double tokens; /* what may still be taken now; below 0: overdrawn */
    uint64_t ms;   /* loop time of the last refill */
} pt_abuse_bucket;
typedef struct pt_srv_sess pt_srv_sess;
typedef struct pt_srv_user pt_srv_user;

/* A device seen by this server: its sessions, and the user it is bound to. */
typedef struct pt_srv_device {
    uint8_t pk[32];                 /* the Noise static key */
    bool bound;                     /* a devices row ties it to a user */
    uint8_t user_id[16];            /* valid when bound */
    pt_srv_sess *sessions;          /* via pt_srv_sess.dev_next */
    uint32_t nconns;                /* connections with an established channel */
    uint32_t confirm_us;            /* how long it takes to confirm a live push (0: not
                                       known yet; messaging.c probe_confirmed) */
    int64_t probe_id;               /* the push being timed (0: none) and when it went */
    uint64_t probe_ns;
    uint64_t addr_reg_ms;           /* loop time of its last addr.register, 0: none (addrs.c) */
    void *cluster_sub;              /* cluster mode: its pt.dev subscription while connected */
    struct pt_srv_device *next;     /* hash chain */
} pt_srv_device;

/* A session: one per (device key, session_id); outlives connections. */
struct pt_srv_sess {
    uint8_t device_pk[32];          /* the device's Noise static key */
    pt_srv_device *dev;             /* its device entry */
    struct pt_srv_sess *dev_next;   /* the device's other sessions */
    uint64_t session_id;
    pt_sess *sess;
    pt_conn *conn;                  /* the connection carrying it now, or NULL */
    uint64_t detached_ms;           /* loop time when it lost its connection */
    uint64_t synced_seq;            /* server sync_seq at its last messages.sync, 0: none */
    struct pt_srv_sess *next;       /* hash chain */
    struct pt_srv_sess *all_prev, *all_next; /* every session */
};

/* A client connection. Two threads may own parts of it (ARCHITECTURE.md, "Worker
 * loops"): the socket side (tcp, timer, chan, obfs, out, inflight and the io_ fields)
 * belongs to its worker loop `io`; the rest (session, device, lists, rate limit)
 * to the server's loop. Without workers both are the server's loop and the two sides
 * call each other directly; with workers they exchange records and commands through
 * the mailbox (mb_ fields, under io->mu) and the struct is freed by whichever side
 * drops the last reference. */
struct pt_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;               /* handshake timeout, then idle timeout */
    pt_server *srv;
    struct pt_io *io;               /* the worker loop that owns its socket and channel */
    uv_loop_t *loop;                /* io's loop */
    pt_chan *chan;
    /* the socket side's flags (kept apart from the server side's: with workers each
     * thread writes its own, and a load the compiler widens must not span both) */
    bool writing, read_paused;
    bool throttled;                 /* reading paused by the rate limit; the timer resumes it */
    const char *close_after_write;  /* reason, when closing once the writes drain */
    uv_write_t wreq;
    pt_srv_sess *sess;              /* attached session, NULL until the first record */
    struct pt_srv_device *dev;      /* the peer's device, once the channel is up */
    uint8_t peer_pk[32];            /* the peer's static key, set with the first record or "up" */
    bool online;                    /* counted in the presence of dev's user */
    pt_buf out;                     /* sealed bytes waiting for the next write */
    pt_buf inflight;                /* what uv_write still sends (the socket did not take
                                     * all at once), untouched until on_write */
    bool closing;                   /* the server side let go of it */
    bool close_req;                 /* the server side asked its worker to close it */
    bool in_input;                  /* records being handled: replies are flushed after */
    bool resync;                    /* the client saw a gap in our seqnos: close */
    bool dirty;                     /* on the server's list of connections to flush */
    pt_conn *dirty_prev, *dirty_next;
    bool ack_wait;                  /* on the server's list of sessions with acks waiting */
    pt_conn *ack_prev, *ack_next;
    int open_handles;               /* libuv handles not yet closed */
    char peer[72];                  /* "ip:port" for logs (46 + 1 + 5) */
    char ip[48];                    /* the peer's address, for per-address limits */
    struct pt_ip_entry *ipe;        /* counted in the per-address table: its entry there
                                     * (kept while it has connections); NULL: not */
    pt_abuse_bucket bucket;         /* rate limit: messages it may still send now */
    uint64_t msgs_seen;             /* session messages already charged */
    uint64_t active_ms;             /* io loop time of its last read or write (trimming) */
    uint64_t core_active_ms;        /* server loop time of its last records or output */
    pt_conn *prev, *next;           /* every connection (server loop) */
    bool in_handshake;              /* on the server's handshake queue (channel not up yet) */
    pt_conn *hs_prev, *hs_next;     /* that queue, oldest first */
    struct pt_obfs_conn *obfs;      /* obfuscation layer (obfs_conn.c), NULL when off */
    /* worker loops (server.c): */
    _Atomic int refs;               /* threaded: server side + worker side + mailbox lists */
    int sockfd;                     /* threaded: the accepted socket until the worker opens it */
    bool io_started;                /* threaded: the worker was told to open it */
    bool io_closing;                /* worker: its handles are closing */
    bool io_core_gone;              /* worker: the server side let go (no "closed" event) */
    bool io_hs_failed;              /* worker: it closes because its handshake failed */
    bool pk_set;                    /* worker (or the one loop): peer_pk is set */
    const char *io_why;             /* worker: why it closes */
    uint8_t io_ev;                  /* worker: events not yet posted (PT_CONN_EV_*) */
    pt_conn *io_prev, *io_next;     /* worker: its connections */
    pt_conn *post_next;             /* worker: on io->post (events to post this iteration) */
    bool on_post;
    pt_buf recs;                    /* worker: records read, not yet posted (u32 length + bytes) */
    _Atomic size_t in_pending;      /* bytes of records posted and not yet taken by the server */
    _Atomic bool in_paused;         /* the worker stopped reading it for that (RESUME) */
    pt_buf seal;                    /* server: records to seal, not yet posted */
    pt_buf core_work;               /* server: the records it took from the mailbox */
    pt_buf io_work;                 /* worker: the records to seal it took from the mailbox */
    /* the mailbox, under io->mu */
    pt_buf mb_recs;                 /* records for the server loop */
    pt_buf mb_seal;                 /* records for the worker to seal and send */
    uint8_t mb_ev, mb_cmd;          /* PT_CONN_EV_* for the server, PT_CONN_CMD_* for the worker */
    const char *mb_ev_why, *mb_cmd_why;
    uint32_t mb_pause_ms;
    bool on_ev_list, on_cmd_list;
    pt_conn *ev_next, *cmd_next;
};

/* A worker loop (server.c): the sockets and channels of its connections. */
typedef struct pt_io {
    pt_server *srv;
    uv_loop_t *loop;                /* &own, or the server's loop when there are no workers */
    uv_loop_t own;
    bool threaded;
    unsigned index;
    uv_thread_t thread;
    bool thread_on;
    uv_async_t wake;                /* worker: commands arrived */
    uv_async_t core_wake;           /* server loop: events arrived */
    uv_check_t post_check;          /* worker: posts the iteration's events */
    uv_idle_t post_idle;            /* worker: the poll must not block while some wait */
    uv_timer_t trim_timer;          /* gives back idle connections' buffers */
    pthread_mutex_t mu;
    pt_conn *ev_list, *cmd_list;    /* under mu */
    bool stop_req, stop_force;      /* under mu */
    bool stopping;                  /* worker */
    bool handles_closed;            /* worker: its own handles are closing (the loop ends) */
    size_t live;                    /* worker: connections whose handles are not all closed */
    pt_conn *post;                  /* worker: connections with events to post */
    pt_conn *conns;                 /* worker: its connections */
    size_t nconns;                  /* server loop: connections given to it and not closed */
    bool wake_due;                  /* server loop: commands posted, wake-up not yet sent */
    struct pt_io_ev {               /* server loop: the events taken in one wake-up */
        pt_conn *c;
        uint8_t ev;
        const char *why;
    } *batch;
    size_t batch_cap;
    uint8_t readbuf[65536];         /* shared by every read on this loop */
} pt_io;

enum {
    PT_CONN_EV_UP = 1,              /* the channel is up (peer_pk set); records: mb_recs */
    PT_CONN_EV_CLOSED = 2,          /* the worker closed it (mb_ev_why) */
    PT_CONN_CMD_START = 1,          /* open sockfd on the worker's loop */
    PT_CONN_CMD_SEAL = 2,           /* records in mb_seal */
    PT_CONN_CMD_THROTTLE = 4,       /* stop reading for mb_pause_ms */
    PT_CONN_CMD_CLOSE_AW = 8,       /* close once the writes drain (mb_cmd_why) */
    PT_CONN_CMD_CLOSE = 16,         /* close now; the server side is gone */
    PT_CONN_CMD_RESUME = 32,        /* the server took most of its input: read again */
};

/* What the metrics endpoint reports (src/server/metrics.c); loop thread only. */
typedef struct pt_srv_counters {
    uint64_t conns_accepted;        /* TCP connections accepted */
    uint64_t conns_refused;         /* closed at once: banned address or a connection cap */
    uint64_t conns_evicted;         /* handshakes closed to make room at max_connections */
    uint64_t handshake_failures;    /* channel handshakes that failed or timed out */
    uint64_t rpc_calls;             /* application calls received */
    uint64_t msgs_in;               /* items accepted for routing (messages, group messages, receipts) */
    uint64_t msgs_out;              /* updates handed to device sessions (live pushes and sync) */
    uint64_t msgs_unstored;         /* items every device confirmed before the writer stored them */
    uint64_t throttles;             /* reads paused by the rate limit */
    uint64_t disc_requests;         /* LAN discovery datagrams received (lan.c) */
    uint64_t disc_replies;          /* BSRs sent */
    uint64_t disc_dropped;          /* datagrams not answered: malformed, not a BSM, rate limited */
} pt_srv_counters;

typedef struct pt_metrics_conn pt_metrics_conn;
typedef struct pt_dir_user pt_dir_user;
typedef struct pt_dir_block pt_dir_block;
typedef struct pt_queue_ent pt_queue_ent;

#define PT_SRV_PENDING_SENDS 16384u /* sends waiting for the writer found by id (a power of 2) */

/* One listen address's socket (cfg.host:port is the first, cfg.listen_also the others). */
typedef struct pt_listener {
    uv_tcp_t tcp;
    pt_server *srv;
    bool pending;                   /* libuv accepted a connection accept_one has not taken:
                                     * it stops watching this socket until then */
    char host[256];
    uint16_t port;                  /* as bound */
} pt_listener;

struct pt_server {
    pt_server_config cfg;
    char host[256], data_dir[1024], ready_file[1024], config_path[1024];
    char listen_also[1024];         /* cfg.listen_also's copy ("" for none) */
    uv_loop_t loop;
    bool loop_ready, stopping;
    pt_listener listeners[PT_SERVER_MAX_LISTEN];
    size_t nlisteners;
    uv_async_t stop_async;
    uv_timer_t gc_timer;
    uv_timer_t trim_timer;          /* gives back idle connections' buffers (on_trim) */
    uv_check_t flush_check;         /* flushes the dirty connections once per loop iteration */
    uv_idle_t flush_idle;           /* active while some are dirty: the poll must not block */
    pt_conn *dirty;                 /* connections whose sessions have output to seal */
    uv_timer_t ack_timer;           /* flushes the acks that waited long enough (ack_wait) */
    pt_env sess_env;                /* the sessions' environment: the clock below */
    int64_t clk_off_ms;             /* pt_srv_now_ms: wall clock minus monotonic clock */
    uint64_t clk_loop_ms;           /* loop time of the last refresh of clk_off_ms */
    bool clk_set;
    pt_conn *ack_wait;              /* connections whose sessions hold acks not yet due */
    uv_signal_t sigint, sigterm, sighup;
    uint16_t port;
    uint8_t static_sk[32], static_pk[32];
    uint8_t salt_secret[PT_SESS_SALT_SECRET_LEN];
    pt_conn *conns;
    size_t nconns;
    pt_conn *hs_head, *hs_tail;     /* connections still in their handshake, oldest first */
    unsigned accepts_turn;          /* connections accepted in this loop iteration */
    uv_timer_t accept_timer;        /* takes a connection left pending (budget spent, no memory) */
    pt_srv_sess **sess_buckets;
    size_t sess_nbuckets, sess_n;
    pt_srv_sess *sess_all;
    pt_srv_device **dev_buckets;    /* device registry */
    size_t dev_nbuckets, dev_n;
    struct pt_db *db;               /* the store (data_dir/packtrack.db) */
    int64_t next_server_id;         /* next message id to assign */
    int64_t server_id_limit;        /* end of the ids reserved (stored, or in the cluster) */
    bool ids_reserving;             /* local mode: the next block is being stored */
    uint64_t sync_seq;              /* counts messages.sync calls (pt_srv_sess.synced_seq) */
    void **pending_sends;           /* sends waiting for the writer, by server_id (messaging.c) */
    pt_srv_user **user_buckets;     /* presence: users online or with a status write pending */
    size_t user_nbuckets, user_n;
    struct pt_srv_rpres **rpres;    /* cluster mode: users connected to other nodes (presence.c) */
    size_t rpres_nb, rpres_n;
    struct pt_srv_chosen **chosen;  /* cluster mode: statuses chosen through any node (presence.c) */
    struct pt_ip_entry **ip_buckets; /* per-address connections and bans */
    size_t ip_nbuckets;
    uint64_t bans;                  /* flooding addresses banned so far */
    pt_srv_counters counters;
    pt_queue_ent **queue_buckets;   /* queue rows per device (queues.c) */
    size_t queue_nbuckets, queue_devices;
    int64_t queue_rows;             /* queue rows stored or being stored, all devices */
    pt_dir_user **dir_users;        /* users' devices (directory.c) */
    size_t dir_nusers_b, dir_nusers;
    pt_dir_block **dir_blocks;      /* who blocked whom (directory.c) */
    size_t dir_nblocks_b, dir_nblocks;
    struct pt_srv_addr_reg **addr_buckets; /* direct-address registrations by user (addrs.c) */
    size_t addr_nbuckets, addr_n;
    char metrics_host[256];
    uint16_t metrics_port;
    bool metrics_on;                /* the metrics listener is open */
    uv_tcp_t metrics_listener;
    pt_metrics_conn *metrics_conns; /* scrapes being answered, and answered ones lingering */
    size_t metrics_nconns;          /* of those, the ones not yet answered */
    size_t metrics_nlinger;         /* of those, the answered ones waiting for the client's close */
    uv_alloc_cb alloc_cb;
    uv_read_cb read_cb;
    uv_timer_cb timer_cb;           /* a connection's timer (obfs_conn.c re-arms it) */
    _Atomic uint32_t hs_timeout_ms, idle_timeout_ms; /* cfg's, for the worker threads */
    pt_io **ios;                    /* the worker loops; one unthreaded when workers = 0 */
    _Atomic int closes_pending;     /* connections closed here that their worker has not yet */
    _Atomic uint64_t hs_failures_workers; /* handshake failures counted by the workers (at
                                             once, before the peer can see the close) */
    unsigned nios;
    struct pt_obfs_server *obfs;    /* obfuscation state (obfs_conn.c), NULL when off */
    struct pt_srv_lan *lan;         /* LAN discovery responder (lan.c), NULL when off */
    /* operations (issue 9): reload.c, logfile.c, control.c, notify.c */
    char log_file[1024];            /* the log file in use; "" while logging to stderr */
    uv_signal_t sigusr1;            /* reopens the log file */
    bool sigusr1_on;
    uint64_t started_ms;            /* loop time at startup, for `status` */
    uint64_t reloads;               /* configuration reloads that succeeded */
    struct pt_ctl *ctl;             /* the control socket (control.c), NULL when closed */
    uint8_t (*banned)[16];          /* banned users, sorted (admin.c) */
    size_t nbanned, banned_cap;
    struct pt_cluster *cluster;     /* cluster mode (pt_cluster.h); NULL: local mode */
};

void pt_conn_close(pt_conn *c, const char *why);
/* The socket side (its worker loop's thread; obfs_conn.c): closes the connection and,
 * with workers, tells the server loop. */
void pt_conn_io_close(pt_conn *c, const char *why);
bool pt_conn_io_closing(const pt_conn *c);
/* The configured timeouts, read on any thread (reload changes them). */
uint32_t pt_srv_hs_timeout_ms(const pt_server *s);
uint32_t pt_srv_idle_timeout_ms(const pt_server *s);
/* A reload changed the timeouts. */
void pt_srv_timeouts_changed(pt_server *s);
/* The wall clock (ms since 1970) for the server loop, without a clock read per call:
 * the loop's time plus an offset read once a second (server loop only). */
uint64_t pt_srv_now_ms(pt_server *s);
/* Has c's session output sealed and written at the end of this loop iteration,
 * together with everything else queued for it meanwhile: one record batch and one
 * write per connection per iteration, not one per reply or push. Returns 0. */
int pt_conn_flush(pt_conn *c);
pt_srv_sess *pt_srv_sess_lookup(pt_server *s, const uint8_t pk[32], uint64_t sid);
void pt_srv_sess_destroy(pt_server *s, pt_srv_sess *e);

/* Answers one application call on c's session (src/server/rpc.c). */
void pt_srv_rpc(pt_conn *c, uint64_t msg_id, const uint8_t *body, size_t len);

/* Queues rpc_error(code, message) as the answer to req on session e. */
void pt_srv_reply_error(pt_srv_sess *e, uint64_t req, int code, const char *msg);
/* Queues an encoded result on session e and flushes its connection, if any. */
void pt_srv_reply(pt_srv_sess *e, uint64_t req, const pt_buf *result);

/* The device registry and messaging (src/server/messaging.c). */
int pt_srv_devices_init(pt_server *s);
void pt_srv_devices_free(pt_server *s);
/* Finds or creates the device entry (reading its binding from the store). */
pt_srv_device *pt_srv_device_get(pt_server *s, const uint8_t pk[32]);
void pt_srv_device_add_session(pt_srv_device *d, pt_srv_sess *e);
void pt_srv_device_remove_session(pt_server *s, pt_srv_sess *e);
/* A connection's channel came up / the connection closes: the device is
 * connected while it has one, and its user is online while some device is. */
int pt_srv_device_conn_up(pt_server *s, pt_conn *c);
void pt_srv_device_conn_down(pt_server *s, pt_conn *c);
/* A device was revoked: closes its connections and drops what the loop knows of it.
 * Idempotent. _remote: through another node (cluster_nats.c); also drops its rows in
 * this node's store (queued notices) and their count. */
void pt_srv_device_revoked(pt_server *s, const uint8_t user_id[16], const uint8_t device[32]);
void pt_srv_device_revoked_remote(pt_server *s, const uint8_t user_id[16], const uint8_t device[32]);
/* The RPCs of one module (messaging.c, presence.c, contacts.c, prekeys.c, groups.c);
 * each returns false when the constructor is not one of its own. The store is open. */
bool pt_srv_messaging_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded);
bool pt_srv_presence_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded);
bool pt_srv_contacts_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded);
bool pt_srv_prekeys_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded);
bool pt_srv_groups_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded);
bool pt_srv_devices_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded);
bool pt_srv_addrs_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded);

/* Direct addresses (addrs.c, S2WMP REG/LP): registrations held in memory only, one
 * per connected bound device. init/free pair with the server; drop forgets device's
 * registration (its last connection went, or it was revoked); no-op when it has none. */
int pt_srv_addrs_init(pt_server *s);
void pt_srv_addrs_free(pt_server *s);
void pt_srv_addrs_drop(pt_server *s, const uint8_t user[16], const uint8_t device[32]);

/* ---- helpers shared by the RPC modules (messaging.c) ------------------------------------ */

/* Where an asynchronous reply goes: found again by (device, session) after the
 * commit, because the session may have gone in the meantime. */
typedef struct pt_srv_reply_to {
    pt_server *srv;
    uint8_t device_pk[32];
    uint64_t session_id;
    uint64_t req_msg_id;
} pt_srv_reply_to;

void pt_srv_reply_to_init(pt_srv_reply_to *r, pt_conn *c, uint64_t req);
/* The session to answer, or NULL (logged) when it is gone. */
pt_srv_sess *pt_srv_reply_session(const pt_srv_reply_to *r);
void pt_srv_reply_ok(pt_srv_sess *e, uint64_t req);
/* Frees the calling loop thread's encode buffer (messaging.c), at the end of its run. */
void pt_srv_enc_free(void);
/* Answers 401 DEVICE_NOT_BOUND and returns false when c's device has no user. */
bool pt_srv_require_bound(pt_conn *c, uint64_t req);

/* A growable list of device keys. */
typedef struct pt_srv_devlist {
    uint8_t (*pk)[32];              /* n keys: malloc'd, or the caller's (borrowed) */
    size_t n, cap;
    bool borrowed;                  /* pk is a buffer of cap keys the list does not own (a
                                       stack array): outgrown, the keys move to the heap */
} pt_srv_devlist;
/* An empty list over buf, an array of keys on the caller's stack. */
#define PT_SRV_DEVLIST_ON(buf) ((pt_srv_devlist){.pk = (buf), .cap = PT_ARRAY_LEN(buf), .borrowed = true})

int pt_srv_devlist_add(pt_srv_devlist *l, const uint8_t pk[32]);
void pt_srv_devlist_free(pt_srv_devlist *l); /* leaves an empty list */
/* Appends the devices of user (PT_SERVER_USER_DEVICES_MAX at most) except `skip`
 * (may be NULL). Any connection: the reader on the loop, the writer in apply(). */
int pt_srv_user_devices(sqlite3 *db, const uint8_t user[16], const uint8_t *skip,
                        pt_srv_devlist *out);
/* Queue rows of device, or a negative pt_err. */
int pt_srv_queue_count(sqlite3 *db, const uint8_t device[32]);
/* 1 when some device of l has quota queue rows or more, 0 if none, < 0 on error. */
int pt_srv_queues_full(sqlite3 *db, const pt_srv_devlist *l, uint32_t quota);
/* 1 when user `by` blocked user `whom`, 0 if not, < 0 on error. Any connection. */
int pt_srv_blocked(sqlite3 *db, const uint8_t by[16], const uint8_t whom[16]);
/* 1 when the user exists, 0 if not, < 0 on error. */
int pt_srv_user_exists(sqlite3 *db, const uint8_t user[16]);

/* What a messages row holds (kind says which update it becomes). */
enum pt_srv_item_kind {
    PT_ITEM_MESSAGE = 0,            /* updates.newMessage */
    PT_ITEM_GROUP_MESSAGE = 1,      /* updates.newGroupMessage */
    PT_ITEM_RECEIPT = 2,            /* updates.receipt */
    PT_ITEM_CONTACT = 3,            /* updates.contact */
    PT_ITEM_GROUP_EVENT = 4,        /* updates.groupEvent */
};

/* One stored-and-forwarded item; its bytes are borrowed. */
typedef struct pt_srv_item {
    int64_t server_id;
    int kind;                       /* enum pt_srv_item_kind */
    uint64_t date_ms;
    uint8_t from[16];               /* sending user (the actor of a group event) */
    uint8_t from_device[32];
    uint8_t group_id[16];           /* group kinds */
    uint8_t peer[16];               /* group event: the member concerned */
    int64_t about;                  /* receipt: the server_id it is about */
    int32_t code;                   /* receipt status, contact action or group event */
    pt_tl_bytes note;               /* contact request note (UTF-8) */
    pt_tl_bytes payload;            /* envelope or prekey bundle */
} pt_srv_item;

/* Appends the updates.* object for it. */
int pt_srv_item_encode(pt_buf *out, const pt_srv_item *it);
/* Writer thread: one messages row and one queue row per device of `to`
 * (nothing when `to` is empty). */
int pt_srv_item_store(sqlite3 *db, const pt_srv_item *it, const pt_srv_devlist *to);
/* Sends an encoded update to every connected session of device (or only to
 * session `only` when given). */
void pt_srv_push_device(pt_server *s, const uint8_t device[32], pt_srv_sess *only,
                        const pt_buf *update);
void pt_srv_push_devices(pt_server *s, const pt_srv_devlist *to, const pt_buf *update);
/* Pushes to every connected device of user (nothing when the user is offline). */
void pt_srv_push_user(pt_server *s, const uint8_t user[16], const pt_buf *update);
/* The same, to the user's devices connected to this node only (never to other nodes). */
void pt_srv_push_user_here(pt_server *s, const uint8_t user[16], const pt_buf *update);
/* Encodes it once and pushes it to every device of `to`. */
void pt_srv_push_item(pt_server *s, const pt_srv_devlist *to, const pt_srv_item *it);
/* Cluster mode, on the loop: the item goes to the durable queue of each device of `to`
 * in JetStream (not to the store, not pushed from here: each device's consumer
 * delivers it); cb(arg, rc, id) once JetStream answered every publish
 * (pt_cluster_enqueue: 0, PT_ERR_TOO_BIG for a full queue, PT_ERR_IO; id: the server
 * id it is queued under, read back when find_id and an earlier try stored it). key:
 * the request's identity (pt_srv_request_key), so that the same request made again,
 * through any node, is queued once. 0, or an error (cb is not called). */
int pt_srv_item_enqueue(pt_server *s, const pt_srv_item *it, const uint8_t *key, bool find_id,
                        const pt_srv_devlist *to, void (*cb)(void *arg, int rc, int64_t id), void *arg);
/* The identity of a request, the same on every node: BLAKE2b-128 of "PT1 request" ||
 * device key || session_id u64le || msg_id u64le (PROTOCOL.md §6.2). */
void pt_srv_request_key(uint8_t key[16], const pt_srv_reply_to *r);
/* Whether a device of l holds quota items or more: 1, 0, or a negative pt_err. Writer
 * thread; in cluster mode asks JetStream (pt_cluster_queues_full), else the store. */
int pt_srv_queues_full_any(pt_server *s, sqlite3 *db, const pt_srv_devlist *l, uint32_t quota);

/* Cluster mode (pt_cluster.h), on the loop: another node's device confirmed items
 * this node queued for it / asked for its queue (each item is sent to it through
 * the cluster). */
void pt_srv_received_remote(pt_server *s, const uint8_t device[32], const int64_t *ids, uint32_t n);
void pt_srv_sync_remote(pt_server *s, const uint8_t device[32]);

/* Forwards an item from c's device (kind, group_id, about, code and payload taken
 * from proto; the rest is filled in) to `devices`: pushed to the connected ones
 * now, stored once and queued for each, answered with messages.sent after the
 * commit, or refused with RECIPIENT_QUEUE_FULL. Empties *devices. */
void pt_srv_forward(pt_conn *c, uint64_t req, const pt_srv_item *proto, pt_srv_devlist *devices);
/* The next server_id, from a block reserved first (local mode: stored in the store's
 * server_ids; cluster mode: in the bucket). PT_ERR_AGAIN (local) when the next
 * block is not yet stored, PT_ERR_IO when the cluster did not answer. Loop thread. */
int pt_srv_take_server_id(pt_server *s, int64_t *id);
/* Local mode, at start-up (the loop not yet running): stores the first block of
 * server ids above every id used before. */
int pt_srv_ids_init(pt_server *s);
/* Appends the devices of user but device skip: the store's in local mode (c NULL), the
 * cluster directory's (every node's; blocking) in cluster mode. Any thread. */
int pt_srv_user_devices_any(struct pt_cluster *c, sqlite3 *db, const uint8_t user[16], const uint8_t *skip,
                            pt_srv_devlist *out);
/* Cluster mode: whether user is bound, in this node's store or on any node: 1, 0, or a
 * negative pt_err. Any thread. */
int pt_srv_user_known(struct pt_cluster *c, sqlite3 *db, const uint8_t user[16]);
/* Cluster mode: whether version of a record ('k' lo hi, or 'g' group: its copy here) is
 * newer than the one this node's copy holds; if so it is noted as the copy's, in the
 * same transaction as the copy's rows. 1 newer (write the copy), 0 not (leave it: the
 * watch of the bucket and a node's own write both bring a version, in either order),
 * or a negative pt_err. Writer thread. */
int pt_srv_copy_newer(sqlite3 *db, const uint8_t *record, size_t len, uint32_t version);
/* Cluster mode: the relation of users lo and hi changed on some node (the watch of the
 * bucket's k.*.* keys): copies it into this node's store and its directory of blocks.
 * Loop thread. */
/* Cluster mode: group changed on some node (the watch of the g.* keys; rec is the
 * bucket's record): replaces this node's copy. Loop thread. */
void pt_srv_group_remote(pt_server *s, const uint8_t group[16], const uint8_t *rec, size_t len);
struct pt_cluster_contact;
void pt_srv_contact_remote(pt_server *s, const uint8_t lo[16], const uint8_t hi[16], uint32_t version,
                           const struct pt_cluster_contact *k);

/* ---- presence (presence.c) ------------------------------------------------------------- */

/* Status values: what a user chooses, and what others see. */
#define PT_STATUS_OFFLINE 0         /* seen only */
#define PT_STATUS_ONLINE 1
#define PT_STATUS_BUSY 2
#define PT_STATUS_AWAY 3
#define PT_STATUS_INVISIBLE 4       /* chosen only: seen as offline */

/* Contact states (contacts.state, from user_id's side). */
#define PT_CONTACT_REQUEST_SENT 1
#define PT_CONTACT_REQUEST_RECEIVED 2
#define PT_CONTACT_FRIENDS 3
#define PT_CONTACT_BLOCKED 4

int pt_srv_presence_init(pt_server *s);
void pt_srv_presence_free(pt_server *s);
/* One more (up) or one less connection of a device of user. A user is online
 * while it has one; friends hear of the transitions. */
void pt_srv_presence_conn(pt_server *s, const uint8_t user[16], bool up);
/* What others see of user: PT_STATUS_OFFLINE .. PT_STATUS_AWAY. */
int pt_srv_presence_visible(pt_server *s, const uint8_t user[16]);
/* Whether some device of user is connected. */
bool pt_srv_presence_connected(pt_server *s, const uint8_t user[16]);
/* Pushes updates.userStatus(about, what `to` may see of it) to `to`'s devices. */
void pt_srv_presence_tell(pt_server *s, const uint8_t about[16], const uint8_t to[16]);
/* Cluster mode (presence.c): user is connected to node with status (PT_STATUS_OFFLINE:
 * no longer) and name, as that node says; the node is gone (its users are offline);
 * another node started: announce this node's users. Loop thread. */
void pt_srv_presence_remote(pt_server *s, uint32_t node, const uint8_t user[16], int status, const char *name);
void pt_srv_presence_node_gone(pt_server *s, uint32_t node);
void pt_srv_presence_announce(pt_server *s);
/* Cluster mode: the status user chose, stored in the bucket (o.<user hex>) by whichever
 * node; this node adopts it (a user invisible through one node is invisible on all). */
void pt_srv_presence_chosen(pt_server *s, const uint8_t user[16], int status);

/* Queue accounting (src/server/queues.c): rows per device kept in memory, loaded
 * once at startup and then changed with every store and deletion, so neither the
 * quota check nor the metrics count rows. A send reserves its rows when it is
 * submitted (and gives them back if its commit fails), so the quota holds for
 * sends still in flight; other stored items are added after their commit. */
int pt_srv_queues_init(pt_server *s); /* after the store is open */
void pt_srv_queues_free(pt_server *s);
uint32_t pt_srv_queue_len(pt_server *s, const uint8_t device[32]);
/* One more row (+1) or one fewer (-1) for every device of l. */
void pt_srv_queue_add(pt_server *s, const pt_srv_devlist *l, int delta);
void pt_srv_queue_sub(pt_server *s, const uint8_t device[32], uint32_t n);
/* Whether some device of l has quota rows or more. */
bool pt_srv_queue_any_full(pt_server *s, const pt_srv_devlist *l, uint32_t quota);

/* The routing directory (src/server/directory.c): users' devices and blocks in
 * memory, so that routing a send runs no SQL. Loop thread only. */
int pt_srv_dir_init(pt_server *s); /* after the store is open: loads the blocks */
void pt_srv_dir_free(pt_server *s);
/* Appends the devices of user (PT_SERVER_USER_DEVICES_MAX at most) except `skip`
 * (may be NULL); reads them from the store the first time. 0 or a negative pt_err. */
int pt_srv_dir_user_devices(pt_server *s, const uint8_t user[16], const uint8_t *skip,
                            pt_srv_devlist *out);
/* A binding committed: device belongs to user. */
void pt_srv_dir_device_bound(pt_server *s, const uint8_t user[16], const uint8_t device[32]);
/* The user was deleted (admin.c): its device list goes; the next lookup reads the store. */
void pt_srv_dir_forget_user(pt_server *s, const uint8_t user[16]);
bool pt_srv_dir_blocked(pt_server *s, const uint8_t by[16], const uint8_t whom[16]);
/* A contact operation committed: whether `by` blocks `whom` now. */
int pt_srv_dir_set_blocked(pt_server *s, const uint8_t by[16], const uint8_t whom[16], bool blocked);

/* ---- operations (issue 9) --------------------------------------------------------------- */

/* Rereads the configuration file and applies what can change live (reload.c).
 * via names the trigger in the log ("SIGHUP", "control"). 0, or an error with a
 * one-line reason in msg (may be NULL); the running configuration then stays. */
int pt_srv_reload(pt_server *s, const char *via, char *msg, size_t msglen);

/* The log file (logfile.c): opened at startup when configured; reopened at the
 * same path on SIGUSR1 or `packtrackctl reopen-logs`. */
int pt_srv_logs_start(pt_server *s);
void pt_srv_logs_stop(pt_server *s);   /* back to stderr */
void pt_srv_logs_signal_start(pt_server *s);
void pt_srv_logs_signal_stop(pt_server *s);
int pt_srv_reopen_logs(pt_server *s, const char *via, char *msg, size_t msglen);
/* A reload named path (NULL: none) as the log file: switches to it if it changed. */
int pt_srv_reload_log_file(pt_server *s, const char *path, char *msg, size_t msglen);

/* Operators' user administration (admin.c). */
int pt_srv_admin_init(pt_server *s);  /* loads the bans; after the store is open */
void pt_srv_admin_free(pt_server *s);
/* Whether user is banned: its devices' calls are answered 403 USER_BANNED. */
bool pt_srv_user_banned(const pt_server *s, const uint8_t user[16]);
typedef enum { PT_ADMIN_BAN, PT_ADMIN_UNBAN, PT_ADMIN_DELETE } pt_srv_admin_action;
typedef struct pt_srv_admin_result {
    int rc;                         /* 0, PT_ERR_NOT_FOUND (no such user) or another error */
    const char *error;              /* a sentence when rc != 0 (static storage) */
    uint8_t user_id[16];
    char name[128];                 /* the user's display name */
    size_t devices;                 /* delete: devices removed */
    size_t queued;                  /* delete: queue rows dropped */
    size_t conns_closed;            /* connections closed */
} pt_srv_admin_result;
typedef void (*pt_srv_admin_cb)(void *ud, const pt_srv_admin_result *r);
/* Resolves the username and applies the action through the store's writer; cb
 * runs on the loop once it is committed (or at once when it cannot start). */
void pt_srv_admin_user(pt_server *s, pt_srv_admin_action action, const char *name, pt_srv_admin_cb cb,
                       void *ud);

/* The control socket (control.c): lock takes DATA/packtrackd.lock (before the store
 * opens), start listens on DATA/control.sock, stop closes it and every request,
 * free (after the loop is closed) releases the lock. */
typedef struct pt_ctl pt_ctl;
int pt_srv_ctl_lock(pt_server *s);
int pt_srv_ctl_start(pt_server *s);
void pt_srv_ctl_stop(pt_server *s);
void pt_srv_ctl_free(pt_server *s);

#define PT_CTL_PATH_MAX 4096        /* a backup FILE path, with its NUL */

/* A control request, parsed and checked but not run. */
typedef enum pt_ctl_cmd {
    PT_CTL_STATUS,
    PT_CTL_USERS,
    PT_CTL_USER,
    PT_CTL_RELOAD,
    PT_CTL_REOPEN_LOGS,
    PT_CTL_BACKUP,
    PT_CTL_METRICS,
} pt_ctl_cmd;

struct cJSON;
typedef struct pt_ctl_req {
    struct cJSON *json;             /* owned: the parsed request, which the strings point into */
    const char *name;               /* the "cmd" string as sent, for the log; NULL when absent */
    pt_ctl_cmd cmd;                 /* the command, valid only when the parse returned 0 */
    bool online;                    /* users: only those online ("online": true) */
    pt_srv_admin_action action;     /* user: what to do */
    const char *user;               /* user: the NAME, not empty */
    const char *file;               /* backup: an absolute path, shorter than PT_CTL_PATH_MAX */
} pt_ctl_req;

/* A line of the control protocol, either way (text[len], never read past): the JSON
 * object it holds, followed by nothing but space, tab, CR or LF (cJSON skips any byte
 * up to 0x20 before it); NULL for anything else. Release with cJSON_Delete. */
struct cJSON *pt_ctl_json_object(const char *text, size_t len);

/* Parses the request line line[len] (a JSON object; line[len] is never read) and
 * checks the command's arguments, without running it: 0, or PT_ERR_INVAL with the
 * answer's error sentence in err (errlen > 0). out is always written; release it
 * with pt_ctl_req_free, which keeps out->name readable until then (it is set
 * whenever "cmd" is a string, valid or not). No I/O, no state. */
int pt_ctl_request_parse(pt_ctl_req *out, const char *line, size_t len, char *err,
                         size_t errlen) PT_WUR;
void pt_ctl_req_free(pt_ctl_req *r);

/* systemd readiness notifications (notify.c); nothing outside systemd. */
typedef enum { PT_SRV_NOTIFY_READY, PT_SRV_NOTIFY_RELOADING, PT_SRV_NOTIFY_STOPPING } pt_srv_notify_state;
void pt_srv_notify(pt_server *s, pt_srv_notify_state st);

/* Binds t to addr (uv_tcp_bind's flags), listens and reads back the port bound (port 0
 * in addr: a free one): 0 or a libuv error (server.c). */
int pt_srv_tcp_listen(uv_tcp_t *t, const struct sockaddr_storage *addr, unsigned flags, int backlog,
                      uv_connection_cb cb, uint16_t *port);

/* The metrics endpoint (src/server/metrics.c): HTTP/1.0 GET /metrics on its own
 * listener on the loop, when cfg.metrics_host is set. */
int pt_metrics_start(pt_server *s);
void pt_metrics_stop(pt_server *s); /* closes the listener and any scrape in progress */
/* Appends the Prometheus text exposition of s's state. */
int pt_metrics_render(pt_server *s, pt_buf *out);

#define PT_METRICS_REQ_MAX 4096     /* request line + headers a scrape may send, bytes */

/* What the metrics endpoint answers to the bytes a scraper has sent so far. */
typedef enum pt_metrics_answer {
    PT_METRICS_MORE = 0,            /* the headers have not ended yet: read on */
    PT_METRICS_SCRAPE,              /* 200, the exposition (GET /metrics) */
    PT_METRICS_HEALTHZ,             /* 200, {"status":"ok"} (GET /healthz) */
    PT_METRICS_NOT_FOUND,           /* 404, another path (not logged) */
    PT_METRICS_BAD_METHOD,          /* 405, not GET */
    PT_METRICS_BAD_REQUEST,         /* 400, malformed, NUL byte or oversized */
} pt_metrics_answer;

typedef struct pt_metrics_verdict {
    pt_metrics_answer answer;       /* what to do: wait for more, or which answer */
    int status;                     /* HTTP status code; 0 for PT_METRICS_MORE */
    const char *reason;             /* its reason phrase ("OK"); NULL for PT_METRICS_MORE */
    const char *why;                /* 400 and 405: what the log line says; else NULL */
} pt_metrics_verdict;

/* Judges the request bytes req[len] received on a metrics connection (no I/O, no
 * state): PT_METRICS_MORE until the blank line that ends the headers, then the
 * answer, decided by the bytes before that blank line alone (what follows it is
 * never read). A NUL byte is a 400 as soon as it arrives; so are PT_METRICS_REQ_MAX
 * bytes without the blank line (a longer len is judged on its first
 * PT_METRICS_REQ_MAX bytes, all a connection holds). Feeding the same bytes in any
 * chunks, stopping at the first answer, gives the answer for all of them at once. */
pt_metrics_answer pt_metrics_request(const char *req, size_t len, pt_metrics_verdict *out);

/* Abuse control (src/server/abuse.c). */
int pt_abuse_init(pt_server *s);
void pt_abuse_free(pt_server *s);
/* On accept: 0, or PT_ERR_STATE with *why when the address is banned, at its cap of
 * connections or over its rate of new ones. */
int pt_abuse_admit(pt_server *s, pt_conn *c, const char **why);
void pt_abuse_release(pt_server *s, pt_conn *c);
/* Charges the messages c's session received since the last call to c and to its
 * address: 0 within both rates; 1 over one, pause reading for *pause_ms; -1
 * flooding: its address is now banned and the connection must close. */
#define PT_ABUSE_FLOOD_BURSTS 4
int pt_abuse_charge(pt_server *s, pt_conn *c, uint32_t *pause_ms);
void pt_abuse_gc(pt_server *s);

/* For store apply functions (run on the writer thread) whose op struct `o` has
 * err_code / err_msg fields: PT_SRV_FAIL answers the RPC with that error and rolls
 * the operation back; PT_SRV_TRY returns a negative store error as is. */
#define PT_SRV_FAIL(code, msg)                                                                     \
    do {                                                                                           \
        o->err_code = (code);                                                                      \
        o->err_msg = (msg);                                                                        \
        return PT_ERR_STATE;                                                                       \
    } while (0)
#define PT_SRV_TRY(expr)                                                                           \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ < 0) return rc_;                                                                   \
    } while (0)

/* RPC error codes (rpc_error.error_code), HTTP-like. */
#define PT_RPC_BAD_REQUEST 400
#define PT_RPC_NOT_BOUND 401
#define PT_RPC_FORBIDDEN 403
#define PT_RPC_NOT_FOUND 404
#define PT_RPC_CONFLICT 409
#define PT_RPC_TOO_LARGE 413
#define PT_RPC_QUOTA 429
#define PT_RPC_INTERNAL 500
#define PT_RPC_UNAVAILABLE 503

/* ---- LAN discovery (lan.c) ------------------------------------------------------------- */
typedef struct pt_srv_lan pt_srv_lan;
/* Opens the UDP responder unless cfg.discovery_off; after the listener is bound (the
 * BSR names its port). A port that cannot be bound is only a warning: 0, or
 * PT_ERR_NOMEM. */
int pt_srv_lan_start(pt_server *s);
/* Closes its sockets (shutdown); pt_srv_lan_free() after the loop has run them down. */
void pt_srv_lan_stop(pt_server *s);
void pt_srv_lan_free(pt_server *s); /* NULL lan is a no-op */
/* The BSR obfs flags (PT_DISC_OBFS_*) of a pt_obfs_mode. */
uint8_t pt_srv_lan_obfs_flags(int mode);

#endif
