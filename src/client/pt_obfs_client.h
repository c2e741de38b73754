/*
 * src/client obfs_client - the client side of the obfuscation layer under the
 * channel (docs/PROTOCOL.md, "Obfuscation layer"); client.c calls it at four
 * places: after the channel's hello (start), on every read (input), on every
 * write (write) and when the connection drops (free).
 *
 * Modes: mse (MSE only: never a plain byte), mse-prefer (MSE, and if that
 * handshake fails, one more connection with the plain channel), pt-obfs.
 */
#ifndef PT_OBFS_CLIENT_H
#define PT_OBFS_CLIENT_H

#include <stdbool.h>

#include "common/pt_common.h"

typedef enum pt_obfsc_mode {
    PT_OBFSC_OFF = 0,
    PT_OBFSC_MSE,        /* "mse": MSE, never plain */
    PT_OBFSC_MSE_PREFER, /* "mse-prefer": MSE, then plain if the MSE handshake fails */
    PT_OBFSC_PTOBFS,     /* "pt-obfs" */
} pt_obfsc_mode;

typedef struct pt_obfsc_settings {
    int mode;                  /* a pt_obfsc_mode */
    uint8_t network_key[64];   /* NK */
    size_t nklen;
    char server_id[256];       /* MSE SKEY input; "" by default, as on the server */
} pt_obfsc_settings;

/* Parses the mode (NULL or "off", "mse", "mse-prefer", "pt-obfs"), the key (hex;
 * 16..64 bytes, pt-obfs exactly 32; required unless off) and the server id
 * (NULL: ""). 0, or PT_ERR_INVAL with one log line naming what is wrong. */
int pt_obfsc_settings_parse(pt_obfsc_settings *out, const char *mode, const char *hex_key,
                            const char *server_id) PT_WUR;
const char *pt_obfsc_mode_name(int mode);

typedef struct pt_obfsc pt_obfsc;

/* One connection's layer; timeout_ms bounds its handshake. NULL with *err set. */
pt_obfsc *pt_obfsc_new(const pt_obfsc_settings *s, int timeout_ms, int *err);
void pt_obfsc_free(pt_obfsc *o); /* NULL is a no-op; wipes keys */

/* Takes the channel's first bytes from chan_out (the MSE IA; pt-obfs: sealed
 * behind the first flight) and queues the layer's first bytes for the wire. */
int pt_obfsc_start(pt_obfsc *o, pt_buf *chan_out) PT_WUR;
/* Seals what the channel queued in chan_out (emptying it) and sends what the
 * socket takes now. 0, or PT_ERR_CLOSED / PT_ERR_NOMEM / a seal error. */
int pt_obfsc_write(pt_obfsc *o, int fd, pt_buf *chan_out) PT_WUR;
/* Bytes sealed but not yet sent. */
size_t pt_obfsc_pending(const pt_obfsc *o);
/* Bytes read: *data, *len get what the channel should read (valid until the next
 * call; *len may be 0). A negative return is final. */
int pt_obfsc_input(pt_obfsc *o, const uint8_t *in, size_t len, const uint8_t **data,
                   size_t *dlen) PT_WUR;
/* Whether the layer's handshake completed (for the message, and mse-prefer). */
bool pt_obfsc_up(const pt_obfsc *o);

#endif /* PT_OBFS_CLIENT_H */
