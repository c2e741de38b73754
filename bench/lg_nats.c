/* bench/loadgen driver: nats-server, core publish/subscribe (the text protocol
 * over a plain socket). Client i subscribes to "lg.i" and publishes to
 * "lg.<peer>". Core NATS has no per-message ack: at-most-once delivery. The
 * setup ends with PING/PONG, which the server answers only after it has
 * processed the SUB before it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lg.h"

static int nats_init(lg_run *r)
{
    (void)r;
    return 0;
}

static int nats_connect(lg_run *r, lg_client *c)
{
    const lg_opts *o = lg_options(r);
    lg_io *io = calloc(1, sizeof *io);
    if (!io) return -1;
    c->drv = io;
    if ((c->fd = lg_tcp_connect(o->host, lg_port_of(o, c->idx))) < 0) return -1;
    char buf[256];
    int n = snprintf(buf, sizeof buf,
                     "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,"
                     "\"name\":\"lg%u\",\"lang\":\"c\",\"version\":\"0\",\"protocol\":1}\r\n"
                     "SUB lg.%u 1\r\nPING\r\n",
                     c->idx, c->idx);
    return lg_io_append(io, buf, (size_t)n);
}

/* Finds "\r\n" in p[0..n); returns its offset or -1. */
static long find_crlf(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++)
        if (p[i] == '\r' && p[i + 1] == '\n') return (long)i;
    return -1;
}

static int nats_input(lg_run *r, lg_client *c)
{
    lg_io *io = c->drv;
    if (lg_io_read(io, c->fd)) return -1;
    size_t off = 0;
    for (;;) {
        const uint8_t *p = io->in + off;
        size_t left = io->in_len - off;
        long eol = find_crlf(p, left);
        if (eol < 0) break;
        if (eol >= 4 && memcmp(p, "MSG ", 4) == 0) {
            /* MSG <subject> <sid> [reply-to] <#bytes>: the size is the last field */
            long k = eol;
            while (k > 0 && p[k - 1] != ' ') k--;
            size_t sz = strtoul((const char *)p + k, NULL, 10);
            if (sz > LG_PAYLOAD_MAX) return -1;
            if (left < (size_t)eol + 2 + sz + 2) break;
            lg_delivered(r, c, p + eol + 2, sz);
            off += (size_t)eol + 2 + sz + 2;
            continue;
        }
        if (eol >= 4 && memcmp(p, "PING", 4) == 0) {
            if (lg_io_append(io, "PONG\r\n", 6)) return -1;
        } else if (eol >= 4 && memcmp(p, "PONG", 4) == 0) {
            if (c->stage == 0) c->stage = 1;
        } else if (eol >= 4 && memcmp(p, "-ERR", 4) == 0) {
            fprintf(stderr, "loadgen: nats client %u: %.*s\n", c->idx, (int)eol, (const char *)p);
            lg_note_error(r, "nats -ERR");
        } /* INFO and +OK need nothing */
        off += (size_t)eol + 2;
    }
    lg_io_consume_in(io, off);
    return 0; /* a PONG waits for the core's flush */
}

static int nats_send(lg_run *r, lg_client *c, const uint8_t *payload, size_t len, uint64_t *tag)
{
    (void)r;
    char h[64];
    int n = snprintf(h, sizeof h, "PUB lg.%u %zu\r\n", c->peer, len);
    *tag = 0;
    lg_io *io = c->drv;
    return lg_io_append(io, h, (size_t)n) || lg_io_append(io, payload, len) ||
                   lg_io_append(io, "\r\n", 2)
               ? -1
               : 0;
}

static int nats_flush(lg_run *r, lg_client *c)
{
    (void)r;
    return lg_io_flush(c->drv, c);
}

static void nats_close(lg_run *r, lg_client *c)
{
    (void)r;
    if (c->drv) lg_io_free(c->drv);
    free(c->drv);
    c->drv = NULL;
}

const lg_driver lg_driver_nats = {
    .name = "nats",
    .acks = false,
    .stages = 1,
    .init = nats_init,
    .connect = nats_connect,
    .input = nats_input,
    .send = nats_send,
    .flush = nats_flush,
    .close = nats_close,
};
