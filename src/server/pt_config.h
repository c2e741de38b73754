/*
 * packtrackd's configuration file: INI, read with libinih. Command-line flags
 * override the file. Every key, its default, and whether a reload (SIGHUP or
 * `packtrackctl reload`) applies it (R) or it needs a restart (-):
 *
 *   [server]
 *   listen = 127.0.0.1:7000          -  HOST:PORT, [V6]:PORT; several, comma separated
 *   data = ./var                     -  server.key, packtrack.db, control.sock live here
 *   suites = PT1-CHACHAPOLY-BLAKE2B,PT1-AESGCM-SHA256,...   -  allowed, preferred first
 *   log_level = info                 R  error | warn | info | debug
 *   log_file =                       R  append logs there instead of stderr; SIGUSR1 reopens
 *   metrics_listen = 127.0.0.1:9100  -  /metrics and /healthz; off when absent; HOST defaults
 *                                       to 127.0.0.1 when only :PORT is given
 *   secure_heap = auto               -  KiB of locked memory for connection secrets (auto:
 *                                       4 KiB per max_connections), or off
 *   workers = auto                   -  worker loops for the connections' sockets and
 *                                       channels: auto (one per core; none on one core),
 *                                       0 (all on the main loop) or 1 to 64
 *   [limits]                         R  (all of them)
 *   handshake_timeout = 10           ; seconds
 *   idle_timeout = 300               ; seconds
 *   session_expiry = 900             ; seconds a session outlives its connection
 *   max_connections = 16384
 *   queue_quota = 10000              ; undelivered messages kept per device
 *   confirm_wait_ms = 20             ; longest ms a message sent live to every recipient device
 *                                    ; waits for their confirmations before it is stored
 *                                    ; (2x each device's confirmation time + 0.2 ms); 0: never
 *   max_conns_per_ip = 64            ; connections from one address
 *   rate_limit = 5000                ; messages/s per connection (bursts of twice that)
 *   ip_rate_limit = 20000            ; messages/s from one address, all its connections
 *                                    ; together (bursts of twice that)
 *   ip_conn_rate = 100               ; new connections/s from one address (bursts of twice that)
 *   ban_time = 600                   ; seconds a flooding address is banned
 *   [obfuscation]                    -  the layer under the channel (obfs_conn.c)
 *   mode = off                       ; off | accept | prefer | require | pt-obfs
 *   network_key =                    ; hex (16..64 bytes; pt-obfs: 32) or a key file
 *   server_id =                      ; MSE SKEY input, the same on the clients
 *   handshake_timeout = 30           ; seconds until the layer is up
 *   decoy =                          ; pt-obfs: HOST:PORT for rejected flights
 *   defer_rules = none               ; MSE rules answered at the deadline instead
 *   [discovery]                      -  the LAN discovery responder (lan.c)
 *   enabled = true                   ; true | false (also yes/no, on/off, 1/0)
 *   port = 7001                      ; UDP port, 1 to 65535
 *   [cluster]                        -  cluster mode over NATS JetStream (pt_cluster.h)
 *   nats_urls =                      ; nats://HOST:PORT,...; absent: local mode (SQLite only)
 *   node_id =                        ; 1 to 8388607, unique per node; required with nats_urls
 *   credentials =                    ; NATS .creds file
 *   tls_ca = / tls_cert = / tls_key = ; TLS to the NATS servers (tls_ca turns it on)
 *   replicas = 3                     ; replicas of the bucket and the queue stream, 1 to 5
 *
 * Every problem is reported as "FILE:LINE:COL: error: ..." or "...: warning: ...":
 * syntax, unknown section or key, a value of the wrong type or out of range, a key
 * or data file the running user cannot read. A key missing from the file takes
 * its default (on a reload too), unless the command line set it.
 */
#ifndef PT_CONFIG_H
#define PT_CONFIG_H

#include "server/pt_server.h"

/* The keys, as bits of pt_config_file.set and pt_server_config.pinned. */
typedef enum pt_config_key {
    PT_CFG_LISTEN = 0,
    PT_CFG_DATA,
    PT_CFG_SUITES,
    PT_CFG_LOG_LEVEL,
    PT_CFG_LOG_FILE,
    PT_CFG_METRICS,
    PT_CFG_HANDSHAKE_TIMEOUT,
    PT_CFG_IDLE_TIMEOUT,
    PT_CFG_SESSION_EXPIRY,
    PT_CFG_MAX_CONNECTIONS,
    PT_CFG_QUEUE_QUOTA,
    PT_CFG_MAX_CONNS_PER_IP,
    PT_CFG_RATE_LIMIT,
    PT_CFG_BAN_TIME,
    PT_CFG_OBFS_MODE,
    PT_CFG_OBFS_NETWORK_KEY,
    PT_CFG_OBFS_SERVER_ID,
    PT_CFG_OBFS_HANDSHAKE_TIMEOUT,
    PT_CFG_OBFS_DECOY,
    PT_CFG_OBFS_DEFER_RULES,
    PT_CFG_DISC_ENABLED,
    PT_CFG_DISC_PORT,
    PT_CFG_CLUSTER_NATS_URLS,
    PT_CFG_CLUSTER_NODE_ID,
    PT_CFG_CLUSTER_CREDENTIALS,
    PT_CFG_CLUSTER_TLS_CA,
    PT_CFG_CLUSTER_TLS_CERT,
    PT_CFG_CLUSTER_TLS_KEY,
    PT_CFG_CLUSTER_REPLICAS,
    PT_CFG_SECURE_HEAP,
    PT_CFG_WORKERS,
    PT_CFG_CONFIRM_WAIT,
    PT_CFG_CLUSTER_CONSUMER_IDLE,
    PT_CFG_IP_RATE_LIMIT,
    PT_CFG_IP_CONN_RATE,
    PT_CFG_NKEYS
} pt_config_key;

#define PT_CFG_BIT(k) (UINT64_C(1) << (k))

/* One key: its section and name, and whether a reload applies it. */
typedef struct pt_config_key_info {
    const char *section;
    const char *name;
    bool reloadable;            /* false: a changed value logs "requires restart: KEY" */
} pt_config_key_info;
const pt_config_key_info *pt_config_key_get(pt_config_key k);

#define PT_CONFIG_MAX_DIAGS 32       /* problems kept with their text; more are counted */

typedef struct pt_config_diag {
    bool error;                 /* false: a warning */
    int line, col;              /* 1-based; 0 when the problem has no place in the file */
    char text[400];             /* "FILE:LINE:COL: error: what" */
} pt_config_diag;

/* What a file said, with presence bits so that flags can override. */
typedef struct pt_config_file {
    pt_server_config cfg;       /* values read (strings point into this struct) */
    uint64_t set;               /* PT_CFG_BIT of each key present */
    int line[PT_CFG_NKEYS];     /* where each key was (last) set */
    int log_level;              /* a pt_log_level */
    char host[256];
    char listen_also[1024];     /* the addresses after the first, comma separated */
    char data[1024];
    char metrics_host[256];
    char log_file[1024];
    char nats_urls[1024];
    char nats_creds[1024], nats_tls_ca[1024], nats_tls_cert[1024], nats_tls_key[1024];
    bool network_key_inline;    /* network_key is the key itself, not a file's path */
    size_t nerrors, nwarnings;  /* every problem found, kept or not */
    size_t ndiags;
    pt_config_diag diags[PT_CONFIG_MAX_DIAGS]; /* the first ones, in file order */
} pt_config_file;

/* Reads path and checks every key. Returns 0 when the file has no error (it may
 * have warnings), PT_ERR_IO when it cannot be read, PT_ERR_INVAL when some key is
 * wrong; out->diags says what and where either way (a secret is never quoted). */
int pt_config_load(pt_config_file *out, const char *path) PT_WUR;
/* The same for a file's bytes data[len] already in memory (NUL bytes and a last
 * line without '\n' as in a file); name stands for the path in the diagnostics.
 * Never PT_ERR_IO; nothing is read but data (and the key files it names). */
int pt_config_load_mem(pt_config_file *out, const char *name, const char *data, size_t len) PT_WUR;

/* The checks that need the whole configuration, and the file system as the running
 * user: the data directory, its key and database files, the log file, the
 * obfuscation settings together. cfg is the effective configuration (file plus
 * command line), f the file it came from, read from path (NULL: no file, f zeroed;
 * problems are then reported without a place). Adds to f's diagnostics. */
void pt_config_check_env(pt_config_file *f, const char *path, const pt_server_config *cfg);

/* The first error's text, for one-line reports ("" when there is none). */
const char *pt_config_first_error(const pt_config_file *f);

/* Parses "HOST:PORT" / "[V6]:PORT" into host (size hostlen) and port. */
int pt_parse_listen(const char *arg, char *host, size_t hostlen, uint16_t *port) PT_WUR;
/* The same, and "PORT" or ":PORT" alone mean 127.0.0.1 (the metrics listener). */
int pt_parse_listen_local(const char *arg, char *host, size_t hostlen, uint16_t *port) PT_WUR;
/* "ADDR[, ADDR...]" (at most PT_SERVER_MAX_LISTEN, each as pt_parse_listen takes it): the
 * first into host and port, the others, checked, into also ("ADDR,ADDR", "" for none). */
int pt_parse_listen_list(const char *list, char *host, size_t hostlen, uint16_t *port, char *also,
                         size_t alsolen) PT_WUR;

/* Parses whole seconds from 1 to max_s into milliseconds. */
int pt_parse_seconds(const char *arg, uint32_t max_s, uint32_t *out_ms) PT_WUR;
/* A decimal integer in [min, max]: 0, PT_ERR_DECODE when it is not a number at all,
 * PT_ERR_INVAL when it is one but out of range. */
int pt_parse_uint(const char *arg, uint32_t min, uint32_t max, uint32_t *out) PT_WUR;
/* true/yes/on/1 or false/no/off/0 (any case): 0 or PT_ERR_DECODE. */
int pt_parse_bool(const char *arg, bool *out) PT_WUR;
/* "auto" (PT_SECURE_HEAP_AUTO), "off" (PT_SECURE_HEAP_OFF) or KiB, 64 to 4194304. */
int pt_parse_secure_heap(const char *arg, uint32_t *kib) PT_WUR;
/* "auto" (0), "0" (PT_SERVER_WORKERS_NONE) or 1 to PT_SERVER_MAX_WORKERS. */
int pt_parse_workers(const char *arg, uint32_t *n) PT_WUR;

#endif
