/* packtrackd internals shared by the files of src/server (not installed). */
#ifndef PT_SERVER_INT_H
#define PT_SERVER_INT_H

#include <uv.h>

#include "server/pt_server.h"
#include "session/pt_sess.h"

typedef struct pt_conn pt_conn;

/* A session: one per (device key, session_id); outlives connections. */
typedef struct pt_srv_sess {
    uint8_t device_pk[32];          /* the device's Noise static key */
    uint64_t session_id;
    pt_sess *sess;
    pt_conn *conn;                  /* the connection carrying it now, or NULL */
    uint64_t detached_ms;           /* loop time when it lost its connection */
    struct pt_srv_sess *next;       /* hash chain */
    struct pt_srv_sess *all_prev, *all_next; /* every session */
} pt_srv_sess;

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
    const char *close_after_write;  /* reason, when closing once the writes drain */
    int open_handles;               /* libuv handles not yet closed */
    char peer[72];                  /* "ip:port" for logs (46 + 1 + 5) */
    pt_conn *prev, *next;           /* every connection */
};

struct pt_server {
    pt_server_config cfg;
    char host[256], data_dir[1024], ready_file[1024];
    uv_loop_t loop;
    bool loop_ready, stopping;
    uv_tcp_t listener;
    uv_async_t stop_async;
    uv_timer_t gc_timer;
    uv_signal_t sigint, sigterm;
    uint16_t port;
    uint8_t static_sk[32], static_pk[32];
    uint8_t salt_secret[PT_SESS_SALT_SECRET_LEN];
    pt_conn *conns;
    size_t nconns;
    pt_srv_sess **sess_buckets;
    size_t sess_nbuckets, sess_n;
    pt_srv_sess *sess_all;
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

#endif
