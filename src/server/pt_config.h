/*
 * packtrackd's configuration file: INI, read with libinih. Command-line flags
 * override the file. Every key, its default and its meaning:
 *
 *   [server]
 *   listen = 127.0.0.1:7000          ; HOST:PORT, [V6]:PORT
 *   data = ./var                     ; server.key and packtrack.db live here
 *   suites = PT1-CHACHAPOLY-BLAKE2B,PT1-AESGCM-SHA256,...   ; allowed, preferred first
 *   log_level = info                 ; error | warn | info | debug
 *   metrics_listen = 127.0.0.1:9100  ; Prometheus endpoint (GET /metrics); off when absent
 *   [limits]
 *   handshake_timeout = 10           ; seconds
 *   idle_timeout = 300               ; seconds
 *   session_expiry = 900             ; seconds a session outlives its connection
 *   max_connections = 16384
 *   queue_quota = 10000              ; undelivered messages kept per device
 *   max_conns_per_ip = 64            ; connections from one address
 *   rate_limit = 5000                ; messages/s per connection (bursts of twice that)
 *   ban_time = 600                   ; seconds a flooding address is banned
 *   [obfuscation]                    ; the layer under the channel (obfs_conn.c)
 *   mode = off                       ; off | accept | prefer | require | pt-obfs
 *   network_key =                    ; hex (16..64 bytes; pt-obfs: 32) or a key file
 *   server_id =                      ; MSE SKEY input, the same on the clients
 *   handshake_timeout = 30           ; seconds until the layer is up
 *   decoy =                          ; pt-obfs: HOST:PORT for rejected flights
 *   defer_rules = none               ; MSE rules answered at the deadline instead
 *
 * Unknown sections or keys and malformed values are errors that name the file and
 * line. On SIGHUP the server rereads the file: log_level and the [limits] take
 * effect at once; listen, data, suites, [obfuscation] and metrics_listen need a restart (a log
 * line says so).
 */
#ifndef PT_CONFIG_H
#define PT_CONFIG_H

#include "server/pt_server.h"

/* Options the file may set, with presence flags so flags can override. */
typedef struct pt_config_file {
    pt_server_config cfg;     /* values read (strings point into this struct) */
    bool has_listen, has_data, has_suites, has_log_level, has_metrics;
    bool has_obfs;            /* an [obfuscation] key was set (applies after a restart) */
    int log_level;            /* a pt_log_level */
    char host[256];
    char data[1024];
    char metrics_host[256];
} pt_config_file;

/* Reads path. 0, or PT_ERR_IO (unreadable) / PT_ERR_INVAL (bad content) with a
 * message "FILE:LINE: what" in err. */
int pt_config_load(pt_config_file *out, const char *path, char *err, size_t errlen) PT_WUR;

/* Parses "HOST:PORT" / "[V6]:PORT" into host (size hostlen) and port. */
int pt_parse_listen(const char *arg, char *host, size_t hostlen, uint16_t *port) PT_WUR;

/* Parses whole seconds from 1 to max_s into milliseconds. */
int pt_parse_seconds(const char *arg, uint32_t max_s, uint32_t *out_ms) PT_WUR;
int pt_parse_uint(const char *arg, uint32_t min, uint32_t max, uint32_t *out) PT_WUR;

#endif
