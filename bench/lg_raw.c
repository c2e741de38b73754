/* bench/loadgen driver: the raw relay (bench/raw_relay.c). Frames are a u32
 * little-endian length and the bytes; the first frame, "HELO" + u32 index,
 * names the client, and the relay answers "OK!!". Every later frame goes to the
 * client whose index is ours ^ 1. No acks, no crypto, no disk. */
#include <stdlib.h>
#include <string.h>

#include "common/pt_common.h"
#include "lg.h"

static int raw_init(lg_run *r)
{
    (void)r;
    return 0;
}

static int raw_connect(lg_run *r, lg_client *c)
{
    const lg_opts *o = lg_options(r);
    lg_io *io = calloc(1, sizeof *io);
    if (!io) return -1;
    c->drv = io;
    if ((c->fd = lg_tcp_connect(o->host, lg_port_of(o, c->idx))) < 0) return -1;
    uint8_t hello[12];
    pt_put_u32le(hello, 8);
    memcpy(hello + 4, "HELO", 4);
    pt_put_u32le(hello + 8, c->idx);
    return lg_io_append(io, hello, sizeof hello);
}

static int raw_input(lg_run *r, lg_client *c)
{
    lg_io *io = c->drv;
    if (lg_io_read(io, c->fd)) return -1;
    size_t off = 0;
    while (io->in_len - off >= 4) {
        uint32_t n = pt_get_u32le(io->in + off);
        if (n == 0 || n > LG_PAYLOAD_MAX) return -1;
        if (io->in_len - off - 4 < n) break;
        const uint8_t *p = io->in + off + 4;
        if (c->stage == 0) {
            if (n != 4 || memcmp(p, "OK!!", 4) != 0) return -1;
            c->stage = 1;
        } else {
            lg_delivered(r, c, p, n);
        }
        off += 4 + (size_t)n;
    }
    lg_io_consume_in(io, off);
    return 0;
}

static int raw_send(lg_run *r, lg_client *c, const uint8_t *payload, size_t len, uint64_t *tag)
{
    (void)r;
    uint8_t h[4];
    pt_put_u32le(h, (uint32_t)len);
    *tag = 0;
    lg_io *io = c->drv;
    return lg_io_append(io, h, 4) || lg_io_append(io, payload, len) ? -1 : 0;
}

static int raw_flush(lg_run *r, lg_client *c)
{
    (void)r;
    return lg_io_flush(c->drv, c);
}

static void raw_close(lg_run *r, lg_client *c)
{
    (void)r;
    if (c->drv) lg_io_free(c->drv);
    free(c->drv);
    c->drv = NULL;
}

const lg_driver lg_driver_raw = {
    .name = "raw",
    .acks = false,
    .stages = 1,
    .init = raw_init,
    .connect = raw_connect,
    .input = raw_input,
    .send = raw_send,
    .flush = raw_flush,
    .close = raw_close,
};
