/* bench/loadgen driver: an MQTT 3.1.1 broker (mosquitto), QoS 1, over a plain
 * socket. Client i (clean session, id "lg<i>") subscribes to "lg/<i>" at QoS 1
 * and publishes to "lg/<peer>" at QoS 1: the broker answers each PUBLISH with a
 * PUBACK (the sender ack) and delivers to the subscriber, which PUBACKs it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lg.h"

typedef struct mq {
    lg_io io;
    uint16_t next_pid; /* packet identifiers of our PUBLISHes, 1..65535 */
} mq;

enum { CONNECT = 1, CONNACK = 2, PUBLISH = 3, PUBACK = 4, SUBSCRIBE = 8, SUBACK = 9, PINGREQ = 12,
       PINGRESP = 13 };

/* Fixed header: type/flags byte, then the remaining length (varint). */
static size_t put_fixed(uint8_t *p, uint8_t first, size_t rem)
{
    size_t n = 0;
    p[n++] = first;
    do {
        uint8_t b = rem % 128;
        rem /= 128;
        p[n++] = (uint8_t)(b | (rem ? 0x80 : 0));
    } while (rem);
    return n;
}

static size_t put_str(uint8_t *p, const char *s, size_t len)
{
    p[0] = (uint8_t)(len >> 8);
    p[1] = (uint8_t)len;
    memcpy(p + 2, s, len);
    return 2 + len;
}

static int mq_init(lg_run *r)
{
    (void)r;
    return 0;
}

static int mq_connect(lg_run *r, lg_client *c)
{
    const lg_opts *o = lg_options(r);
    mq *m = calloc(1, sizeof *m);
    if (!m) return -1;
    c->drv = m;
    m->next_pid = 1;
    if ((c->fd = lg_tcp_connect(o->host, lg_port_of(o, c->idx))) < 0) return -1;
    char id[32], topic[32];
    size_t idl = (size_t)snprintf(id, sizeof id, "lg%u", c->idx);
    size_t tl = (size_t)snprintf(topic, sizeof topic, "lg/%u", c->idx);
    uint8_t b[256], v[128];
    /* CONNECT: "MQTT", level 4, clean session, keep-alive 0 (off), client id */
    size_t vn = put_str(v, "MQTT", 4);
    v[vn++] = 4;
    v[vn++] = 0x02;
    v[vn++] = 0;
    v[vn++] = 0;
    vn += put_str(v + vn, id, idl);
    size_t n = put_fixed(b, CONNECT << 4, vn);
    memcpy(b + n, v, vn);
    n += vn;
    /* SUBSCRIBE packet id 1, one filter at QoS 1 */
    vn = 0;
    v[vn++] = 0;
    v[vn++] = 1;
    vn += put_str(v + vn, topic, tl);
    v[vn++] = 1;
    n += put_fixed(b + n, SUBSCRIBE << 4 | 0x2, vn);
    memcpy(b + n, v, vn);
    n += vn;
    return lg_io_append(&m->io, b, n);
}

static int mq_input(lg_run *r, lg_client *c)
{
    mq *m = c->drv;
    lg_io *io = &m->io;
    if (lg_io_read(io, c->fd)) return -1;
    size_t off = 0;
    for (;;) {
        const uint8_t *p = io->in + off;
        size_t left = io->in_len - off, rem = 0, hn = 1;
        int shift = 0;
        bool complete_len = false;
        while (hn < left && hn <= 4) {
            rem |= (size_t)(p[hn] & 0x7f) << shift;
            shift += 7;
            if (!(p[hn++] & 0x80)) {
                complete_len = true;
                break;
            }
        }
        if (!complete_len) {
            if (hn > 4) return -1;
            break;
        }
        if (rem > LG_PAYLOAD_MAX + 64) return -1;
        if (left < hn + rem) break;
        const uint8_t *v = p + hn;
        switch (p[0] >> 4) {
        case CONNACK:
            if (rem != 2 || v[1] != 0) return -1;
            break;
        case SUBACK:
            if (rem < 3 || v[2] == 0x80) return -1;
            c->stage = 1;
            break;
        case PUBACK:
            if (rem != 2) return -1;
            lg_acked(r, c, (uint64_t)(v[0] << 8 | v[1]), true);
            break;
        case PUBLISH: {
            unsigned qos = (p[0] >> 1) & 3;
            if (rem < 2) return -1;
            size_t tl = (size_t)(v[0] << 8 | v[1]), h = 2 + tl + (qos ? 2 : 0);
            if (h > rem) return -1;
            lg_delivered(r, c, v + h, rem - h);
            if (qos) {
                uint8_t ack[4] = {PUBACK << 4, 2, v[2 + tl], v[3 + tl]};
                if (lg_io_append(io, ack, 4)) return -1;
            }
            break;
        }
        case PINGRESP:
            break;
        default:
            return -1;
        }
        off += hn + rem;
    }
    lg_io_consume_in(io, off);
    return 0; /* PUBACKs wait for the core's flush, with this client's next PUBLISHes */
}

static int mq_send(lg_run *r, lg_client *c, const uint8_t *payload, size_t len, uint64_t *tag)
{
    (void)r;
    mq *m = c->drv;
    char topic[32];
    size_t tl = (size_t)snprintf(topic, sizeof topic, "lg/%u", c->peer);
    uint8_t h[64];
    size_t n = put_fixed(h, PUBLISH << 4 | 1 << 1, 2 + tl + 2 + len);
    n += put_str(h + n, topic, tl);
    uint16_t pid = m->next_pid;
    m->next_pid = m->next_pid == 65535 ? 1 : m->next_pid + 1;
    h[n++] = (uint8_t)(pid >> 8);
    h[n++] = (uint8_t)pid;
    *tag = pid;
    return lg_io_append(&m->io, h, n) || lg_io_append(&m->io, payload, len) ? -1 : 0;
}

static int mq_flush(lg_run *r, lg_client *c)
{
    (void)r;
    mq *m = c->drv;
    return lg_io_flush(&m->io, c);
}

static void mq_close(lg_run *r, lg_client *c)
{
    (void)r;
    mq *m = c->drv;
    if (m) lg_io_free(&m->io);
    free(m);
    c->drv = NULL;
}

const lg_driver lg_driver_mqtt = {
    .name = "mqtt",
    .acks = true,
    .stages = 1,
    .init = mq_init,
    .connect = mq_connect,
    .input = mq_input,
    .send = mq_send,
    .flush = mq_flush,
    .close = mq_close,
};
