/*
 * src/client - a client connection to packtrackd: TCP, the secure channel and a
 * session that survives reconnects. Driven by the caller with pt_client_pump();
 * no threads. The server's key is pinned on first use in HOME/known_servers.
 */
#ifndef PT_CLIENT_H
#define PT_CLIENT_H

#include "channel/pt_chan.h"
#include "session/pt_sess.h"

#define PT_CLIENT_CONNECT_TIMEOUT_MS 10000

typedef struct pt_client_config {
    const char *home;               /* device.key and known_servers; NULL: $HOME/.packtrack */
    const char *server_fingerprint; /* expected server key (64 hex, ':' allowed), or NULL */
    const uint8_t *suites;          /* offered in this order; NULL: all, default first */
    size_t nsuites;
    bool no_ik;                     /* always XX, even with a pinned key */
    int timeout_ms;                 /* connect + handshake; 0: default */
    const uint8_t *device_sk;       /* 32-byte X25519 device key; NULL: HOME/device.key */
    const char *obfuscation;        /* NULL/"off", "mse", "mse-prefer", "pt-obfs" (obfs_client.c) */
    const char *network_key;        /* hex; needed unless off */
    const char *obfs_server_id;     /* MSE SKEY input; NULL: "" (the server's default) */
} pt_client_config;

typedef struct pt_client pt_client;

pt_client *pt_client_new(const pt_client_config *cfg, int *err);
void pt_client_free(pt_client *c); /* NULL is a no-op */

/* Connects and runs the handshake. With a pinned key IK is tried first; if it
 * fails, XX tells whether the server's key changed (PT_ERR_KEY_MISMATCH, nothing
 * sent) or not. A session from an earlier connection is resumed: everything not
 * yet acknowledged is resent. */
int pt_client_connect(pt_client *c, const char *host, uint16_t port) PT_WUR;
/* Drops the TCP connection at once, keeping the session for the next connect. */
void pt_client_drop(pt_client *c);
bool pt_client_connected(const pt_client *c);

/* Queues an application call (see pt_sess_send). */
int pt_client_send(pt_client *c, const uint8_t *body, size_t len, uint64_t *msg_id) PT_WUR;
int pt_client_ping(pt_client *c, int64_t ping_id, uint64_t *msg_id) PT_WUR;
/* Sends what is queued and processes what arrives for up to timeout_ms,
 * returning early once a read delivered events. PT_ERR_CLOSED when the server
 * closed the connection (the session stays), other errors are fatal for it. */
int pt_client_pump(pt_client *c, int timeout_ms, pt_sess_event_cb cb, void *ud) PT_WUR;
/* For a caller that polls pt_client_fd itself (an event loop over many clients):
 * pt_client_input reads what the socket has now (one read), handles it and writes
 * what that produced (acks, replies); pt_client_flush seals what is queued and
 * writes what the socket takes. Neither blocks nor polls: when
 * pt_client_out_pending is not 0 the socket was full, and the caller flushes again
 * once it is writable. pt_client_read is pt_client_input without the write: what
 * the read produced stays queued for the caller's next pt_client_flush, so that
 * the calls it sends in answer go out in the same write (one TCP segment, not
 * two). Errors as pt_client_pump. */
int pt_client_input(pt_client *c, pt_sess_event_cb cb, void *ud) PT_WUR;
int pt_client_read(pt_client *c, pt_sess_event_cb cb, void *ud) PT_WUR;
int pt_client_flush(pt_client *c) PT_WUR;
size_t pt_client_out_pending(const pt_client *c);

int pt_client_fd(const pt_client *c);
int pt_client_suite(const pt_client *c);
const uint8_t *pt_client_server_key(const pt_client *c); /* after connect */
const uint8_t *pt_client_device_key(const pt_client *c);
pt_sess *pt_client_session(pt_client *c);
/* Whether the last successful connect used IK. */
bool pt_client_used_ik(const pt_client *c);

/* HOME/known_servers: the pinned server keys, one "HOST:PORT HEXKEY" line each (64 hex
 * digits); for a HOST:PORT the first well-formed line counts, others are skipped.
 * pt_known_servers_find looks hostport up in the file's text buf[len].
 * pt_known_servers_lookup reads HOME's file: 1 with the key, 0 with no file or no line
 * for hostport, else an error (PT_ERR_IO it cannot be read, PT_ERR_TOO_BIG over
 * PT_KNOWN_SERVERS_MAX bytes, PT_ERR_NOMEM), logged. pt_known_servers_add appends one
 * line (a newline first when the file does not end with one; mode 0600 when it makes
 * the file), as pt_known_servers_line formats it into out[cap]: its length, or
 * PT_ERR_INVAL for an empty hostport, one with a space or a line break, or one that
 * does not fit. */
#define PT_KNOWN_SERVERS_MAX (16 * 1024 * 1024)
bool pt_known_servers_find(const char *buf, size_t len, const char *hostport,
                           uint8_t key[static 32]);
int pt_known_servers_lookup(const char *home, const char *hostport, uint8_t key[static 32]);
int pt_known_servers_line(char *out, size_t cap, const char *hostport, const uint8_t key[static 32]);
int pt_known_servers_add(const char *home, const char *hostport, const uint8_t key[static 32]) PT_WUR;

#endif
