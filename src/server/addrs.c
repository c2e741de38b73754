/*
 * Direct addresses (S2WMP REG/LP): where a device can be reached peer to peer.
 *
 * A connected, bound device registers up to PT_SERVER_ADDRS_MAX addresses and one
 * port with addr.register; addr.lookup gives a user's registrations to that user's
 * friends and to its own other devices. The registrations live here, in memory,
 * one per device, keyed by user: never written to the store, replaced by the next
 * addr.register, gone when the device's last connection closes or it is revoked
 * (a device that is offline cannot be reached directly either).
 *
 * A lookup that may not see anything (a stranger, an invisible user, a banned one)
 * gets an empty list rather than an error, so it cannot tell "not allowed" from
 * "nothing registered".
 */
#include <stdlib.h>

#include "server/pt_server_int.h"

typedef struct pt_srv_addr_reg {
    uint8_t user_id[16];                    /* the device's user: the key of the table */
    uint8_t device[32];                     /* the device's Noise static key */
    uint8_t addrs[PT_SERVER_ADDRS_MAX][16]; /* IPv6, IPv4 as ::ffff:a.b.c.d */
    uint32_t naddrs;                        /* 1..PT_SERVER_ADDRS_MAX */
    uint16_t port;                          /* 1..65535 */
    int64_t registered_ms;                  /* wall clock of the addr.register, ms since 1970 */
    struct pt_srv_addr_reg *next;           /* hash chain */
} pt_srv_addr_reg;

static size_t reg_hash(const uint8_t user[16], size_t nb)
{
    return (size_t)(pt_get_u64le(user) % nb);
}

int pt_srv_addrs_init(pt_server *s)
{
    s->addr_nbuckets = 256;
    s->addr_n = 0;
    s->addr_buckets = calloc(s->addr_nbuckets, sizeof *s->addr_buckets);
    return s->addr_buckets ? 0 : PT_ERR_NOMEM;
}

void pt_srv_addrs_free(pt_server *s)
{
    for (size_t i = 0; s->addr_buckets && i < s->addr_nbuckets; i++) {
        for (pt_srv_addr_reg *r = s->addr_buckets[i], *next; r; r = next) {
            next = r->next;
            free(r);
        }
    }
    free(s->addr_buckets);
    s->addr_buckets = NULL;
    s->addr_n = 0;
}

/* The slot holding device's registration, or the end of its user's chain. */
static pt_srv_addr_reg **reg_slot(pt_server *s, const uint8_t user[16], const uint8_t device[32])
{
    pt_srv_addr_reg **pp = &s->addr_buckets[reg_hash(user, s->addr_nbuckets)];
    while (*pp &&
           !(memcmp((*pp)->device, device, 32) == 0 && memcmp((*pp)->user_id, user, 16) == 0))
        pp = &(*pp)->next;
    return pp;
}

static void reg_grow(pt_server *s)
{
    size_t nb = s->addr_nbuckets * 2;
    pt_srv_addr_reg **b = calloc(nb, sizeof *b);
    if (!b) return; /* longer chains, still correct */
    for (size_t i = 0; i < s->addr_nbuckets; i++) {
        for (pt_srv_addr_reg *r = s->addr_buckets[i], *next; r; r = next) {
            next = r->next;
            size_t h = reg_hash(r->user_id, nb);
            r->next = b[h];
            b[h] = r;
        }
    }
    free(s->addr_buckets);
    s->addr_buckets = b;
    s->addr_nbuckets = nb;
}

void pt_srv_addrs_drop(pt_server *s, const uint8_t user[16], const uint8_t device[32])
{
    if (!s->addr_buckets) return;
    pt_srv_addr_reg **pp = reg_slot(s, user, device);
    pt_srv_addr_reg *r = *pp;
    if (!r) return;
    *pp = r->next;
    free(r);
    s->addr_n--;
}

/* ---- addr.register --------------------------------------------------------------------------- */

/* Unspecified (::, ::ffff:0.0.0.0) and multicast (ff00::/8, ::ffff:224.0.0.0/4)
 * addresses can never be connected to. */
static bool addr_usable(const uint8_t a[16])
{
    static const uint8_t zero[16], v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a, zero, 16) == 0 || a[0] == 0xff) return false;
    if (memcmp(a, v4mapped, 12) == 0) {
        if (memcmp(a + 12, zero, 4) == 0) return false;
        if ((a[12] & 0xf0) == 0xe0) return false;
    }
    return true;
}

static void rpc_register(pt_conn *c, uint64_t req, const pt_tl_addr_register *q)
{
    pt_server *s = c->srv;
    pt_srv_sess *e = c->sess;
    if (!pt_srv_require_bound(c, req)) return;
    pt_srv_device *d = e->dev;
    if (q->addrs.n > PT_SERVER_ADDRS_MAX) {
        pt_srv_reply_error(e, req, PT_RPC_BAD_REQUEST, "TOO_MANY_ADDRS");
        return;
    }
    for (uint32_t i = 0; i < q->addrs.n; i++) {
        if (q->addrs.items[i].len != 16 || !addr_usable(q->addrs.items[i].data)) {
            pt_srv_reply_error(e, req, PT_RPC_BAD_REQUEST, "ADDR_INVALID");
            return;
        }
    }
    if (q->addrs.n && (q->port < 1 || q->port > 65535)) {
        pt_srv_reply_error(e, req, PT_RPC_BAD_REQUEST, "PORT_INVALID");
        return;
    }
    /* after the checks: a malformed call costs the device nothing */
    uint64_t now = uv_now(&s->loop);
    if (d->addr_reg_ms && now - d->addr_reg_ms < PT_SERVER_ADDR_REG_INTERVAL_MS) {
        pt_srv_reply_error(e, req, PT_RPC_QUOTA, "FLOOD_WAIT_1");
        return;
    }
    if (q->addrs.n == 0) { /* withdrawn */
        pt_srv_addrs_drop(s, d->user_id, d->pk);
    } else {
        pt_srv_addr_reg *r = *reg_slot(s, d->user_id, d->pk);
        if (!r) {
            if (!(r = calloc(1, sizeof *r))) {
                pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "OUT_OF_MEMORY");
                return;
            }
            memcpy(r->user_id, d->user_id, 16);
            memcpy(r->device, d->pk, 32);
            if (s->addr_n >= s->addr_nbuckets) reg_grow(s);
            size_t h = reg_hash(r->user_id, s->addr_nbuckets);
            r->next = s->addr_buckets[h];
            s->addr_buckets[h] = r;
            s->addr_n++;
        }
        r->naddrs = q->addrs.n;
        for (uint32_t i = 0; i < q->addrs.n; i++)
            memcpy(r->addrs[i], q->addrs.items[i].data, 16);
        r->port = (uint16_t)q->port;
        r->registered_ms = (int64_t)pt_env_now_ms(pt_env_default());
    }
    d->addr_reg_ms = now ? now : 1;
    pt_srv_reply_ok(e, req);
}

/* ---- addr.lookup ----------------------------------------------------------------------------- */

/* 1 when a and b are friends both ways, 0 if not, < 0 on error. */
static int mutual_friends(pt_server *s, const uint8_t a[16], const uint8_t b[16])
{
    sqlite3_stmt *st;
    int rc = pt_db_stmt(pt_db_reader(s->db),
                        "SELECT count(*) FROM contacts WHERE state = ?3 AND "
                        "((user_id = ?1 AND peer_id = ?2) OR (user_id = ?2 AND peer_id = ?1))",
                        &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, a, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, b, 16, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, PT_CONTACT_FRIENDS);
    rc = pt_db_step(st);
    if (rc == 1) rc = sqlite3_column_int(st, 0) == 2;
    pt_db_release(st);
    return rc;
}

static void rpc_lookup(pt_conn *c, uint64_t req, const pt_tl_addr_lookup *q)
{
    pt_server *s = c->srv;
    pt_srv_sess *e = c->sess;
    if (!pt_srv_require_bound(c, req)) return;
    const uint8_t *me = e->dev->user_id;
    bool self = memcmp(q->user_id, me, 16) == 0;
    bool allowed = self;
    if (!self) {
        int rc = mutual_friends(s, me, q->user_id);
        if (rc < 0) {
            pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
            return;
        }
        /* an invisible user looks offline, and an offline one has no registration */
        allowed = rc == 1 && pt_srv_presence_visible(s, q->user_id) != PT_STATUS_OFFLINE &&
                  !pt_srv_user_banned(s, q->user_id);
    }
    size_t n = 0;
    for (pt_srv_addr_reg *r = s->addr_buckets[reg_hash(q->user_id, s->addr_nbuckets)]; allowed && r;
         r = r->next)
        if (memcmp(r->user_id, q->user_id, 16) == 0) n++;
    pt_tl_addr_peer *peers = calloc(n ? n : 1, sizeof *peers);
    pt_tl_bytes *addrs = calloc(n ? n * PT_SERVER_ADDRS_MAX : 1, sizeof *addrs);
    if (!peers || !addrs) {
        free(peers);
        free(addrs);
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "OUT_OF_MEMORY");
        return;
    }
    size_t k = 0;
    for (pt_srv_addr_reg *r = s->addr_buckets[reg_hash(q->user_id, s->addr_nbuckets)]; n && r;
         r = r->next) {
        if (memcmp(r->user_id, q->user_id, 16) != 0) continue;
        if (self && memcmp(r->device, e->device_pk, 32) == 0)
            continue; /* the caller knows its own */
        pt_tl_addr_peer *p = &peers[k];
        memcpy(p->device, r->device, 32);
        p->addrs = (pt_tl_vec_bytes){r->naddrs, addrs + k * PT_SERVER_ADDRS_MAX};
        for (uint32_t i = 0; i < r->naddrs; i++)
            p->addrs.items[i] = (pt_tl_bytes){r->addrs[i], 16};
        p->port = r->port;
        p->registered_at = r->registered_ms;
        k++;
    }
    pt_tl_addr_peers res = {.peers = {(uint32_t)k, k ? peers : NULL}};
    pt_buf out;
    pt_buf_init(&out);
    if (pt_tl_addr_peers_encode(&out, &res) == 0)
        pt_srv_reply(e, req, &out);
    else
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
    pt_buf_free(&out);
    free(peers);
    free(addrs);
}

bool pt_srv_addrs_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded)
{
    switch (ctor) {
    case PT_TL_ADDR_REGISTER_ID:
        rpc_register(c, msg_id, decoded);
        return true;
    case PT_TL_ADDR_LOOKUP_ID:
        rpc_lookup(c, msg_id, decoded);
        return true;
    default:
        return false;
    }
}
