/*
 * LAN discovery, the server's side (docs/PROTOCOL.md §11.3): packtrackd answers a
 * BSM on UDP with a BSR naming its Noise static key, its TCP port and what its
 * listener takes. One UDP socket on 0.0.0.0:PORT (broadcasts arrive there) and one
 * on [::]:PORT that joins PT_DISC_MCAST6 on every interface. Neither is required: a
 * port that cannot be bound is a warning and the server runs without it.
 *
 * Everything here faces unauthenticated datagrams from anyone on the link, so:
 * replies are exactly as long as requests (no amplification), rate limited per
 * source and globally (pt_disc_limiter), sent with uv_udp_try_send (nothing is
 * allocated or queued per packet: a reply that cannot go at once is dropped), and
 * nothing is logged per packet above debug; refusals give one warning a minute.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdlib.h>

#include "discovery/pt_disc.h"
#include "server/pt_server_int.h"

#define LAN_WARN_INTERVAL_MS 60000 /* at most one "rate limited" warning this often */

struct pt_srv_lan {
    pt_server *srv;
    uv_udp_t udp4, udp6;
    bool on4, on6;                  /* bound and receiving */
    pt_disc_limiter *limiter;
    uint64_t last_warn_ms;          /* loop time of the last rate-limit warning */
    uint64_t limited_since_warn;    /* requests refused since then */
    uint8_t rbuf[PT_DISC_MAX_LEN + 1]; /* one byte more: a longer datagram shows as partial */
};

uint8_t pt_srv_lan_obfs_flags(int mode)
{
    switch (mode) {
    case PT_OBFS_MODE_ACCEPT:
    case PT_OBFS_MODE_PREFER: return PT_DISC_OBFS_PLAIN | PT_DISC_OBFS_MSE;
    case PT_OBFS_MODE_REQUIRE: return PT_DISC_OBFS_MSE | PT_DISC_OBFS_REQUIRED;
    case PT_OBFS_MODE_PTOBFS: return PT_DISC_OBFS_PTOBFS | PT_DISC_OBFS_REQUIRED;
    default: return PT_DISC_OBFS_PLAIN;
    }
}

static void lan_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    pt_srv_lan *l = h->data;
    *buf = uv_buf_init((char *)l->rbuf, sizeof l->rbuf);
}

static void drop(pt_srv_lan *l, const char *from, const char *why)
{
    l->srv->counters.disc_dropped++;
    pt_log_debug("discovery: dropped a datagram from %s: %s", from, why);
}

static void lan_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *sa, unsigned flags)
{
    (void)buf;
    pt_srv_lan *l = h->data;
    pt_server *s = l->srv;
    if (n == 0 && !sa) return; /* nothing more to read now */
    if (n < 0) {
        pt_log_debug("discovery: receive error: %s", uv_strerror((int)n));
        return;
    }
    if (!sa || s->stopping) return;
    s->counters.disc_requests++;
    uint8_t addr[16];
    uint16_t port;
    char from[PT_HOSTPORT_LEN] = "?";
    if (pt_disc_addr_from_sockaddr(sa, addr, &port) != 0) {
        drop(l, from, "not an IP address");
        return;
    }
    if (pt_log_get_level() >= PT_LOG_DEBUG) {
        char a[64];
        pt_disc_addr_format(addr, a, sizeof a);
        pt_hostport_format(from, a, port);
    }
    if (flags & UV_UDP_PARTIAL) {
        drop(l, from, "too long");
        return;
    }
    if (port == 0) { /* nothing can answer from port 0: a spoofed or broken source */
        drop(l, from, "source port 0");
        return;
    }
    pt_disc_pkt req;
    int rc = pt_disc_decode(l->rbuf, (size_t)n, &req);
    if (rc != 0) {
        drop(l, from, pt_strerror(rc));
        return;
    }
    if (req.type != PT_DISC_BSM) { /* peers' BPM/BPR share the port: not for us */
        drop(l, from, "not a server solicitation");
        return;
    }
    uint64_t now = uv_now(&s->loop);
    if (!pt_disc_limiter_allow(l->limiter, addr, now)) {
        drop(l, from, "rate limited");
        l->limited_since_warn++;
        if (!l->last_warn_ms || now - l->last_warn_ms >= LAN_WARN_INTERVAL_MS) {
            pt_log_warn("discovery: requests over the rate limit, not answered (%llu since the last warning)",
                        (unsigned long long)l->limited_since_warn);
            l->last_warn_ms = now ? now : 1;
            l->limited_since_warn = 0;
        }
        return;
    }
    /* the port of the first listen address that is not a loopback one (the asker
     * connects to the address this answer comes from), else the first */
    uint16_t tcp_port = s->port;
    for (size_t i = 0; i < s->nlisteners; i++) {
        const char *lh = s->listeners[i].host;
        if (strncmp(lh, "127.", 4) != 0 && strcmp(lh, "::1") != 0 && strcmp(lh, "localhost") != 0) {
            tcp_port = s->listeners[i].port;
            break;
        }
    }
    pt_disc_pkt rep = {.type = PT_DISC_BSR, .port = tcp_port, .obfs = pt_srv_lan_obfs_flags(s->cfg.obfs.mode)};
    memcpy(rep.nonce, req.nonce, sizeof rep.nonce);
    memcpy(rep.server_key, s->static_pk, sizeof rep.server_key);
    uint8_t out[PT_DISC_MAX_LEN];
    size_t len;
    if (pt_disc_encode(&rep, out, sizeof out, &len) != 0 || len > (size_t)n) { /* never more than asked */
        drop(l, from, "reply encoding");
        return;
    }
    uv_buf_t b = uv_buf_init((char *)out, (unsigned)len);
    int src = uv_udp_try_send(h, &b, 1, sa);
    if (src < 0) {
        drop(l, from, uv_strerror(src));
        return;
    }
    s->counters.disc_replies++;
    pt_log_debug("discovery: answered %s", from);
}

/* Joins the IPv6 group on every interface that takes it; the count joined. */
static int join_mcast6(uv_udp_t *h)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)h, &fd) != 0) return 0;
    struct ipv6_mreq mr;
    memset(&mr, 0, sizeof mr);
    if (inet_pton(AF_INET6, PT_DISC_MCAST6, &mr.ipv6mr_multiaddr) != 1) return 0;
    struct if_nameindex *ifs = if_nameindex();
    int joined = 0;
    for (struct if_nameindex *i = ifs; i && i->if_index; i++) {
        mr.ipv6mr_interface = i->if_index;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &mr, sizeof mr) == 0) joined++;
        else pt_log_debug("discovery: cannot join %s on %s: %s", PT_DISC_MCAST6, i->if_name, strerror(errno));
    }
    if (ifs) if_freenameindex(ifs);
    return joined;
}

static bool open_udp(pt_srv_lan *l, uv_udp_t *h, int family)
{
    pt_server *s = l->srv;
    uint16_t port = s->cfg.discovery_port ? s->cfg.discovery_port : PT_DISC_PORT;
    struct sockaddr_storage ss;
    const char *name = family == AF_INET ? "0.0.0.0" : "[::]";
    if (family == AF_INET) uv_ip4_addr("0.0.0.0", port, (struct sockaddr_in *)&ss);
    else uv_ip6_addr("::", port, (struct sockaddr_in6 *)&ss);
    int rc = uv_udp_init_ex(&s->loop, h, (unsigned)family);
    if (rc != 0) {
        pt_log_warn("discovery: no UDP socket for %s: %s; discovery off there", name, uv_strerror(rc));
        return false;
    }
    h->data = l;
    unsigned bflags = UV_UDP_REUSEADDR | (family == AF_INET6 ? UV_UDP_IPV6ONLY : 0);
    if ((rc = uv_udp_bind(h, (struct sockaddr *)&ss, bflags)) != 0 ||
        (family == AF_INET && (rc = uv_udp_set_broadcast(h, 1)) != 0) ||
        (rc = uv_udp_recv_start(h, lan_alloc, lan_recv)) != 0) {
        pt_log_warn("discovery: cannot listen on UDP %s:%u: %s; discovery off there", name, port, uv_strerror(rc));
        uv_close((uv_handle_t *)h, NULL);
        return false;
    }
    if (family == AF_INET6 && join_mcast6(h) == 0)
        pt_log_warn("discovery: could not join %s on any interface; IPv6 answers only to unicast", PT_DISC_MCAST6);
    pt_log_info("discovery: answering on UDP %s:%u", name, port);
    return true;
}

int pt_srv_lan_start(pt_server *s)
{
    if (s->cfg.discovery_off) return 0;
    pt_srv_lan *l = calloc(1, sizeof *l);
    if (!l) return PT_ERR_NOMEM;
    l->srv = s;
    l->limiter = pt_disc_limiter_new(PT_DISC_LIMIT_BURST, PT_DISC_LIMIT_PER_S, PT_DISC_LIMIT_GLOBAL_PER_S,
                                     PT_DISC_LIMIT_SLOTS);
    if (!l->limiter) {
        free(l);
        return PT_ERR_NOMEM;
    }
    s->lan = l;
    l->on4 = open_udp(l, &l->udp4, AF_INET);
    l->on6 = open_udp(l, &l->udp6, AF_INET6);
    if (s->cfg.obfs.mode == PT_OBFS_MODE_PTOBFS && (l->on4 || l->on6))
        pt_log_warn("discovery: answers tell the LAN that a pt-obfs server runs here; --no-discovery keeps it silent");
    return 0;
}

void pt_srv_lan_stop(pt_server *s)
{
    pt_srv_lan *l = s->lan;
    if (!l) return;
    if (l->on4) uv_close((uv_handle_t *)&l->udp4, NULL);
    if (l->on6) uv_close((uv_handle_t *)&l->udp6, NULL);
    l->on4 = l->on6 = false;
}

void pt_srv_lan_free(pt_server *s)
{
    pt_srv_lan *l = s->lan;
    if (!l) return;
    pt_disc_limiter_free(l->limiter);
    free(l);
    s->lan = NULL;
}
