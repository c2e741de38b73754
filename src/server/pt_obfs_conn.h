/*
 * src/server obfs_conn - packtrackd's glue between a connection and the
 * obfuscation layer of src/obfs (docs/PROTOCOL.md, "Obfuscation layer").
 *
 * The layer sits under the channel: bytes read from the socket go through
 * pt_obfs_conn_input() before pt_chan_input(), and what the channel queued in
 * pt_conn.out goes through pt_obfs_conn_wrap() just before it is written. With
 * the mode off, pt_conn.obfs is NULL and none of this runs.
 *
 * Modes: accept / prefer take a plain channel hello or an MSE handshake on the
 * same port (pt_obfs_conn_detect() gives the rule); require takes MSE only;
 * pt-obfs takes pt-obfs only, and a first flight that does not verify gets no
 * answer (the connection is read and discarded until the obfuscation handshake
 * timeout) or, with a decoy address, is relayed to that service.
 */
#ifndef PT_OBFS_CONN_H
#define PT_OBFS_CONN_H

#include <stdbool.h>
#include <stdio.h>

#include "common/pt_common.h"

typedef enum pt_obfs_mode {
    PT_OBFS_MODE_OFF = 0, /* plain channel only */
    PT_OBFS_MODE_ACCEPT,  /* plain or MSE, told apart by the first bytes */
    PT_OBFS_MODE_PREFER,  /* the same as accept on a server (the difference is the client's) */
    PT_OBFS_MODE_REQUIRE, /* MSE only */
    PT_OBFS_MODE_PTOBFS,  /* pt-obfs only */
} pt_obfs_mode;

#define PT_OBFS_NK_MIN 16             /* network key bytes, MSE (pt-obfs: exactly 32) */
#define PT_OBFS_NK_MAX 64
#define PT_OBFS_HANDSHAKE_TIMEOUT_MS 30000
#define PT_OBFS_DETECT_LEN 6          /* accept mode: bytes that tell a plain hello */

typedef struct pt_obfs_server_config {
    int mode;                           /* a pt_obfs_mode */
    uint8_t network_key[PT_OBFS_NK_MAX]; /* NK; secret, never printed */
    size_t nklen;                       /* 0: not set */
    char server_id[256];                /* MSE: SKEY = BLAKE2b-160(NK, label ‖ server_id); "" default */
    uint32_t handshake_timeout_ms;      /* until the layer is up; 0: 30 s */
    char decoy[300];                    /* pt-obfs: numeric "HOST:PORT" for rejected flights; "" silent */
    unsigned defer_rules;               /* MSE: PT_MSE_RULE_* bits answered at the deadline, not at once */
} pt_obfs_server_config;

/* Sets one setting by its config-file name: mode, network_key (hex, or the path
 * of a file holding hex or the raw key), server_id, handshake_timeout (seconds),
 * decoy, defer_rules (comma list of short,long,sync,skey,vc,provide,select, or
 * all / none). NULL when taken, else a sentence saying what is expected. */
const char *pt_obfs_config_set(pt_obfs_server_config *o, const char *key, const char *value);
/* Checks the settings together (a mode that needs a key has one of the right
 * length, decoy only with pt-obfs). 0, or PT_ERR_INVAL with a sentence in err. */
int pt_obfs_config_check(const pt_obfs_server_config *o, char *err, size_t errlen) PT_WUR;
/* Writes the [obfuscation] section, without the key itself. */
void pt_obfs_config_print(const pt_obfs_server_config *o, FILE *f);
const char *pt_obfs_mode_name(int mode);

struct pt_server;
struct pt_conn;
typedef struct pt_obfs_conn pt_obfs_conn;

/* Server-wide state (the MSE SKEY, the pt-obfs replay cache, the decoy address),
 * from s->cfg.obfs. 0 or a negative error (logged). */
int pt_obfs_server_init(struct pt_server *s) PT_WUR;
void pt_obfs_server_free(struct pt_server *s);

/* A new connection: sets c->obfs (NULL with the mode off). 0 or PT_ERR_NOMEM. */
int pt_obfs_conn_attach(struct pt_conn *c) PT_WUR;
/* How long the first timer of a connection runs: the obfuscation handshake
 * timeout with the layer on, else the channel's handshake timeout. */
uint32_t pt_obfs_conn_first_timeout_ms(const struct pt_conn *c);
/* Bytes read: on return 1 the channel gets (*data, *len) (valid until the next
 * call); 0: nothing for the channel now (handshake, silence, decoy relay);
 * negative: a final error, logged with the peer; close the connection. */
int pt_obfs_conn_input(struct pt_conn *c, const uint8_t **data, size_t *len) PT_WUR;
/* Just before a write: replaces c->out (channel bytes) by what goes on the
 * wire (our handshake bytes, then the channel bytes sealed). 0 or an error. */
int pt_obfs_conn_wrap(struct pt_conn *c) PT_WUR;
/* The connection timer fired: true when the layer keeps the connection (a
 * decoy relay in use, or its own deadline not quite reached; the timer is
 * re-armed), false to close it (the reason is logged). */
bool pt_obfs_conn_on_timer(struct pt_conn *c);
void pt_obfs_conn_free(pt_obfs_conn *o); /* NULL is a no-op; a decoy relay is closed */

/* The accept-mode rule on the first bytes p[0..n): 1 a plain channel hello
 * ("PTK", then at byte 5 a suite count of 1..8), 0 MSE, -1 undecided (every
 * byte so far fits a hello; fewer than PT_OBFS_DETECT_LEN). */
int pt_obfs_conn_detect(const uint8_t *p, size_t n);

#endif /* PT_OBFS_CONN_H */
