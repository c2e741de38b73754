/*
 * src/server - packtrackd's server logic on a libuv event loop: accepts
 * connections, runs the channel handshake and the session layer, keeps sessions
 * across reconnects and answers the RPCs. main.c is only the command line.
 */
#ifndef PT_SERVER_H
#define PT_SERVER_H

#include "channel/pt_chan.h"
#include "common/pt_common.h"
#include "server/pt_obfs_conn.h"

#define PT_SERVER_DEFAULT_HOST "127.0.0.1"
#define PT_SERVER_DEFAULT_PORT 7000
#define PT_SERVER_DEFAULT_DATA "./var"
#define PT_SERVER_HANDSHAKE_TIMEOUT_MS 10000
#define PT_SERVER_IDLE_TIMEOUT_MS 300000
#define PT_SERVER_SESSION_EXPIRY_MS 900000  /* a session with no connection lives this long */
#define PT_SERVER_MAX_CONNECTIONS 16384
#define PT_SERVER_ACCEPTS_PER_TURN 64 /* connections accepted per loop iteration at most */
#define PT_SERVER_WORKERS_NONE UINT32_MAX /* pt_server_config.workers: everything on one loop */
#define PT_SERVER_MAX_WORKERS 64
#define PT_SERVER_MAX_INBUF (4u << 20)      /* worker loops: stop reading a peer whose records
                                               wait for the main loop beyond this */
#define PT_SERVER_MAX_OUTBUF (4u << 20)     /* stop reading a peer whose replies pile up */
#define PT_SERVER_MAX_SESSIONS_PER_DEVICE 16
#define PT_SERVER_ENVELOPE_MAX 65536        /* end-to-end envelope, bytes */
#define PT_SERVER_QUEUE_QUOTA 10000         /* undelivered messages per device */
#define PT_SERVER_CONFIRM_WAIT_MS 20         /* the longest the store waits for confirmations */
#define PT_SERVER_CONFIRM_WAIT_OFF UINT32_MAX /* pt_server_config.confirm_wait_ms: never wait */
#define PT_SERVER_MAX_CONNS_PER_IP 64
#define PT_SERVER_RATE_LIMIT 5000           /* messages per second per connection (burst 2x) */
#define PT_SERVER_IP_RATE_LIMIT 20000       /* messages per second from one address (burst 2x) */
#define PT_SERVER_IP_CONN_RATE 100          /* new connections per second from one address (burst 2x) */
#define PT_SERVER_BAN_S 600                 /* how long a flooding address is banned */
#define PT_SERVER_SECURE_HEAP_PER_CONN 4096 /* bytes of secure heap per connection (auto size) */
#define PT_SECURE_HEAP_AUTO 0u              /* secure_heap_kib: max_connections KiB */
#define PT_SECURE_HEAP_OFF UINT32_MAX       /* secure_heap_kib: no heap, a mapping per secret */
#define PT_SERVER_USER_DEVICES_MAX 64       /* devices of one user reached by a send */
#define PT_SERVER_PAGE_MAX 100              /* users.list / contacts.get entries per page */
#define PT_SERVER_NOTE_MAX 256              /* contact request note, bytes */
#define PT_SERVER_BUNDLE_MAX 8192           /* opaque prekey bundle in contacts.*, bytes */
#define PT_SERVER_RECEIPT_MAX 4096          /* receipt envelope, bytes */
#define PT_SERVER_PREKEY_MAX 64             /* one public prekey, bytes */
#define PT_SERVER_PREKEY_UPLOAD_MAX 100     /* one-time prekeys in one upload */
#define PT_SERVER_PREKEY_STORED_MAX 500     /* one-time prekeys stored per device */
#define PT_SERVER_LINK_TTL_MS (10 * 60 * 1000) /* a device-link blob lives this long */
#define PT_SERVER_LINK_MAX 4096             /* a device-link blob, bytes */
#define PT_SERVER_PREKEY_LOW 10             /* fewer left: the device is asked to top up */
#define PT_SERVER_GROUP_MAX_MEMBERS 256     /* members + pending invitations of a group */
#define PT_SERVER_ADDRS_MAX 8               /* direct addresses in one addr.register */
#define PT_SERVER_ADDR_REG_INTERVAL_MS 1000 /* a device registers at most this often */

/* Cluster mode (docs/ARCHITECTURE.md "Cluster mode"): several packtrackd nodes share
 * routing and the username directory through NATS JetStream. All NULL / 0: one node
 * alone with its SQLite store (local mode, the default). */
#define PT_CLUSTER_NODE_ID_MAX 8388607u     /* 2^23 - 1: server_ids are node_id << 40 | n */
#define PT_CLUSTER_REPLICAS 3               /* default replicas of the JetStream buckets */
#define PT_CLUSTER_CONSUMER_IDLE_S 3600     /* default [cluster] consumer_idle, seconds */
typedef struct pt_cluster_config {
    const char *nats_urls;                /* comma-separated nats:// or tls:// URLs; NULL: local mode */
    uint32_t node_id;                     /* 1 .. PT_CLUSTER_NODE_ID_MAX, unique in the cluster */
    const char *credentials;              /* NATS .creds file (JWT + NKey seed), or NULL */
    const char *tls_ca;                   /* CA bundle that signs the NATS servers' certificates */
    const char *tls_cert, *tls_key;       /* client certificate chain and key, or NULL */
    uint32_t replicas;                    /* JetStream replicas of the buckets; 0 = PT_CLUSTER_REPLICAS */
    uint32_t consumer_idle_s;             /* a device's JetStream consumer is deleted after this long
                                             without the device; 0 = PT_CLUSTER_CONSUMER_IDLE_S */
} pt_cluster_config;

#define PT_SERVER_MAX_LISTEN 8              /* listen addresses */

typedef struct pt_server_config {
    const char *host;                     /* listen address, default 127.0.0.1 */
    uint16_t port;                        /* 0 picks a free port */
    const char *listen_also;              /* more listen addresses, "HOST:PORT,[V6]:PORT,..."
                                             (each port 0: a free one), or NULL */
    const char *data_dir;                 /* holds server.key; created if missing */
    uint8_t suites[PT_CHAN_MAX_SUITES];   /* allowed, in server preference order */
    size_t nsuites;                       /* 0 = every suite, default order */
    uint32_t handshake_timeout_ms;        /* 0 = default */
    uint32_t idle_timeout_ms;             /* 0 = default */
    uint32_t session_expiry_ms;           /* 0 = default */
    uint32_t max_connections;             /* 0 = default */
    uint32_t queue_quota;                 /* 0 = default */
    uint32_t confirm_wait_ms;             /* how long a message every recipient device was sent
                                             live waits for their confirmations before it is
                                             stored (confirmed by all: never stored); 0 = default,
                                             PT_SERVER_CONFIRM_WAIT_OFF = stored at once */
    uint32_t max_conns_per_ip;            /* 0 = default */
    uint32_t rate_limit;                  /* messages/s per connection; 0 = default */
    uint32_t ip_rate_limit;               /* messages/s from one address, all its connections
                                             together; 0 = default */
    uint32_t ip_conn_rate;                /* connections accepted per second from one address;
                                             0 = default */
    uint32_t ban_s;                       /* 0 = default */
    uint32_t workers;                     /* worker loops for the connections' sockets and
                                             channels; 0 = default (one per core, none on a
                                             single core), PT_SERVER_WORKERS_NONE = none */
    uint32_t secure_heap_kib;             /* PT_SECURE_HEAP_AUTO, _OFF, or KiB; packtrackd
                                             makes the heap (process-wide, pt_crypto.h) */
    const char *metrics_host;             /* metrics endpoint address; NULL = no endpoint */
    uint16_t metrics_port;                /* 0 picks a free port */
    unsigned test_user_id_bits;           /* TEST ONLY: user ids keep only this many leading
                                             bits, so that tests can force collisions; 0 (or
                                             >= 128) = the real 128. packtrackd never sets it
                                             (no flag, key or variable reaches it) */
    const char *ready_file;               /* if set, "host:port\n" is written there once listening */
    const char *config_path;              /* reread on SIGHUP / packtrackctl reload, if set */
    const char *log_file;                 /* logs appended there instead of stderr; NULL: stderr */
    uint64_t pinned;                      /* PT_CFG_BIT()s of keys given on the command line:
                                             a reload leaves them as they are */
    pt_obfs_server_config obfs;           /* obfuscation layer; zero: off */
    bool discovery_off;                   /* true: no LAN discovery responder (lan.c) */
    uint16_t discovery_port;              /* its UDP port; 0 = PT_DISC_PORT (7001) */
    pt_cluster_config cluster;            /* cluster mode when nats_urls is set (pt_cluster.h) */
} pt_server_config;

typedef struct pt_server pt_server;

/* Loads (or creates) the server key, binds and listens. The config is copied. */
pt_server *pt_server_new(const pt_server_config *cfg, int *err);
/* Runs the event loop until pt_server_stop() or SIGINT/SIGTERM; 0 on a clean stop. */
int pt_server_run(pt_server *s);
/* Asks the loop to stop: no new connections, replies flushed, connections closed.
 * Safe from any thread and from signal context via the loop's async handle. */
void pt_server_stop(pt_server *s);
void pt_server_free(pt_server *s); /* NULL is a no-op */

uint16_t pt_server_port(const pt_server *s);
/* The metrics endpoint's port, 0 when there is none. */
uint16_t pt_server_metrics_port(const pt_server *s);
const uint8_t *pt_server_public_key(const pt_server *s);

#endif
