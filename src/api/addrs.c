/*
 * libpacktrack: direct addresses (S2WMP REG/LP, docs/PROTOCOL.md §6.9). This device
 * registers where it can be reached peer to peer; a friend's registrations are
 * looked up to try a direct connection. The server is trusted with none of it: a
 * looked-up device key is kept only when the user's signed device list has it, so a
 * server cannot send us to a device of its own.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "api/api_int.h"

#define ADDRS_MAX 8 /* as packtrackd takes them (PT_SERVER_ADDRS_MAX) */

/* Text to the 16-byte wire form: IPv6, or IPv4 as ::ffff:a.b.c.d. */
static bool addr_parse(const char *text, uint8_t out[16])
{
    struct in_addr v4;
    if (inet_pton(AF_INET, text, &v4) == 1) {
        static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        memcpy(out, prefix, 12);
        memcpy(out + 12, &v4, 4);
        return true;
    }
    return inet_pton(AF_INET6, text, out) == 1;
}

static void addr_format(const uint8_t a[16], char *out, size_t cap)
{
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const char *ok = memcmp(a, prefix, 12) == 0 ? inet_ntop(AF_INET, a + 12, out, (socklen_t)cap)
                                                : inet_ntop(AF_INET6, a, out, (socklen_t)cap);
    if (!ok && cap) out[0] = 0;
}

int pt_addr_register(pt_ctx *x, const char *const *addrs, size_t n, uint16_t port)
{
    if (n > ADDRS_MAX)
        return pt_api_fail(x, PT_ERR_INVAL, "at most %d addresses can be registered, not %zu",
                           ADDRS_MAX, n);
    if (n && port == 0) return pt_api_fail(x, PT_ERR_INVAL, "the port must be 1-65535");
    uint8_t raw[ADDRS_MAX][16];
    pt_tl_bytes items[ADDRS_MAX];
    for (size_t i = 0; i < n; i++) {
        if (!addrs[i] || !addr_parse(addrs[i], raw[i]))
            return pt_api_fail(x, PT_ERR_INVAL, "'%s' is not an IPv4 or IPv6 address",
                               addrs[i] ? addrs[i] : "(null)");
        items[i] = (pt_tl_bytes){raw[i], 16};
    }
    int rc;
    PT_API_CALL(rc, x, NULL, addr_register,
                q.addrs = (pt_tl_vec_bytes){(uint32_t)n, n ? items : NULL};
                q.port = n ? port : 0);
    if (rc == PT_ERR_REFUSED) {
        char why[sizeof x->last_error];
        snprintf(why, sizeof why, "%s", x->last_error);
        if (strncmp(why, "FLOOD_WAIT", 10) == 0)
            return pt_api_fail(
                x, rc, "addresses can be registered once a second; try again in a moment (%s)",
                why);
        return pt_api_fail(x, rc, "the server refused the addresses (%s)", why);
    }
    return rc;
}

/* Reads the signed device list of user c (of us when self: *mine) again from the
 * server, checking every signature; device_listed() then tells who is on it. */
static int device_lists_for(pt_ctx *x, bool self, pt_api_contact *c, pt_device **mine,
                            size_t *nmine)
{
    if (self) return pt_devices(x, mine, nmine);
    return pt_api_person(x, c->user_id, true, c);
}

static bool device_listed(const uint8_t dev[32], bool self, const pt_api_contact *c,
                          const pt_device *mine, size_t nmine)
{
    if (self) {
        char id[PT_ID_HEX_LEN];
        pt_hex_encode(id, dev, 16); /* pt_device.id: the first 16 bytes of the key */
        for (size_t i = 0; i < nmine; i++)
            if (strcasecmp(mine[i].id, id) == 0) return true;
        return false;
    }
    for (size_t i = 0; i < c->ndev; i++)
        if (memcmp(c->dev[i].device, dev, 32) == 0) return true;
    return false;
}

int pt_addr_lookup(pt_ctx *x, const char *name, pt_peer_addr **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!name || !*name)
        return pt_api_fail(x, PT_ERR_INVAL, "whose addresses? the username is empty");
    pt_api_contact c;
    memset(&c, 0, sizeof c);
    bool self = strcasecmp(name, x->username) == 0;
    int rc = 0;
    if (self)
        memcpy(c.user_id, x->user_id, 16);
    else if ((rc = pt_api_resolve(x, name, &c)) != 0)
        return rc;
    self = memcmp(c.user_id, x->user_id, 16) == 0;
    pt_api_reply r;
    PT_API_CALL(rc, x, &r, addr_lookup, memcpy(q.user_id, c.user_id, 16));
    if (rc == PT_ERR_REFUSED) {
        char why[sizeof x->last_error];
        snprintf(why, sizeof why, "%s", x->last_error);
        return pt_api_fail(x, rc, "the server refused the lookup (%s)", why);
    }
    if (rc) return rc;
    if (r.o.id != PT_TL_ADDR_PEERS_ID) {
        pt_api_reply_free(&r);
        return pt_api_fail(x, PT_ERR_PROTO,
                           "the server answered the address lookup with something else");
    }
    const pt_tl_vec_addr_peer *peers = &r.o.u.addr_peers.peers;
    size_t total = 0;
    for (uint32_t i = 0; i < peers->n; i++)
        total += peers->items[i].addrs.n;
    pt_device *mine = NULL;
    size_t nmine = 0;
    pt_peer_addr *res = NULL;
    if (total == 0) goto out;
    if ((rc = device_lists_for(x, self, &c, &mine, &nmine)) != 0) goto out;
    if (!(res = calloc(total, sizeof *res))) {
        rc = PT_ERR_NOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < peers->n; i++) {
        const pt_tl_addr_peer *p = &peers->items[i];
        if (p->port < 1 || p->port > 65535) continue;
        if (!device_listed(p->device, self, &c, mine, nmine)) {
            pt_log_warn("libpacktrack: the server gave an address of a device not on %s's signed "
                        "list; ignored",
                        self ? "our" : c.name);
            continue;
        }
        for (uint32_t k = 0; k < p->addrs.n; k++) {
            if (p->addrs.items[k].len != 16) continue;
            pt_peer_addr *a = &res[*n];
            pt_hex_encode(a->device, p->device, 32);
            addr_format(p->addrs.items[k].data, a->addr, sizeof a->addr);
            if (!a->addr[0]) continue;
            a->port = (uint16_t)p->port;
            a->registered_at_ms = p->registered_at;
            (*n)++;
        }
    }
    if (*n) {
        *out = res;
        res = NULL;
    }
out:
    free(res);
    pt_free(mine);
    pt_api_reply_free(&r);
    if (rc) *n = 0;
    return rc;
}
