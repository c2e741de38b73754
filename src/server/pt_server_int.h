/* packtrackd internals shared by the files of src/server (not installed). */
#ifndef PT_SERVER_INT_H
#define PT_SERVER_INT_H

#include <uv.h>

#include "server/pt_server.h"
#include "session/pt_sess.h"

typedef struct pt_conn pt_conn;
typedef struct pt_srv_sess pt_srv_sess;

/* A device seen by this server: its sessions, and the user it is bound to. */
typedef struct pt_srv_device {
    uint8_t pk[32];                 /* the Noise static key */
    bool bound;                     /* a devices row ties it to a user */
    uint8_t user_id[16];            /* valid when bound */
    pt_srv_sess *sessions;          /* via pt_srv_sess.dev_next */
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
    struct pt_srv_sess *next;       /* hash chain */
    struct pt_srv_sess *all_prev, *all_next; /* every session */
};

struct pt_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;               /* handshake timeout, then idle timeout */
    pt_server *srv;
    pt_chan *chan;
    pt_srv_sess *sess;              /* attached session, NULL until the first record */
    pt_buf out;                     /* sealed bytes waiting for the next write */
    pt_buf inflight;                /* bytes handed to uv_write, untouched until on_write */
    uv_write_t wreq;
    bool writing, closing, read_paused;
    bool in_input;                  /* inside pt_chan_input: flush once it returns */
    const char *close_after_write;  /* reason, when closing once the writes drain */
    int open_handles;               /* libuv handles not yet closed */
    char peer[72];                  /* "ip:port" for logs (46 + 1 + 5) */
    pt_conn *prev, *next;           /* every connection */
};

struct pt_server {
    pt_server_config cfg;
    char host[256], data_dir[1024], ready_file[1024], config_path[1024];
    uv_loop_t loop;
    bool loop_ready, stopping;
    uv_tcp_t listener;
    uv_async_t stop_async;
    uv_timer_t gc_timer;
    uv_signal_t sigint, sigterm, sighup;
    uint16_t port;
    uint8_t static_sk[32], static_pk[32];
    uint8_t salt_secret[PT_SESS_SALT_SECRET_LEN];
    pt_conn *conns;
    size_t nconns;
    pt_srv_sess **sess_buckets;
    size_t sess_nbuckets, sess_n;
    pt_srv_sess *sess_all;
    pt_srv_device **dev_buckets;    /* device registry */
    size_t dev_nbuckets, dev_n;
    struct pt_db *db;               /* the store (data_dir/packtrack.db) */
    int64_t next_server_id;         /* next message id to assign */
    uv_alloc_cb alloc_cb;
    uv_read_cb read_cb;
    uint8_t readbuf[65536];         /* shared by every read on this loop */
};

void pt_conn_close(pt_conn *c, const char *why);
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
/* The messaging RPCs; return false when the constructor is not theirs. */
bool pt_srv_messaging_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded);

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

#endif
