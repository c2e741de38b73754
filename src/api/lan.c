/*
 * libpacktrack on the local network (S2WMP): discovery of servers and friends by
 * broadcast, and chat over direct TCP connections when no server is reachable.
 *
 * Three sockets, all non-blocking and serviced from pt_poll() (and the waits of
 * pt_sync() and pt_send()):
 *   listen  UDP 0.0.0.0:disc_port (SO_REUSEADDR): BPM from others, answered with a
 *           BPR when the per-source limiter allows; their records are absorbed
 *   query   UDP ephemeral: our BSM and BPM broadcasts and the replies to them
 *   tcp     the peer-to-peer listener (the port our records announce)
 * A direct connection is the same channel as to a server (Noise, src/channel): the
 * initiator pins the device key the friend's signed record announced; the responder
 * accepts only a device of a friend. Inside it travel pt_p2p records: HELLO, then
 * MSG (the outbox's envelope, the same bytes the server would get) and ACK (its
 * hash, once the receiver committed it). A row delivered directly stays in the
 * outbox for the server, which reaches the friend's other devices; the receiver
 * knows the envelope's hash and takes it once.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/api_int.h"
#include "channel/pt_chan.h"
#include "crypto/pt_crypto.h"
#include "discovery/pt_disc.h"
#include "store/pt_keyfile.h"

#define LAN_MAX_PEERS 64
#define LAN_MAX_SERVERS 16
#define LAN_MAX_STRANGERS 32
#define LAN_MAX_CONNS 16
#define LAN_MAX_INFLIGHT 256
#define LAN_PEER_TTL_MS (90 * 1000)      /* a friend not heard of for this long is gone */
#define LAN_ANNOUNCE_MS (20 * 1000)      /* our BPM (with our record) this often */
#define LAN_HANDSHAKE_MS 5000
#define LAN_IDLE_MS (120 * 1000)
#define LAN_RETRY_MS 2000                /* a failed connection to a peer is retried after */
#define LAN_SCAN_WAIT_MS 1500            /* how long a send waits for a friend to answer */
#define LAN_BSM_WAIT_MS 600              /* how long start-up waits for our server to answer a BSM */
#define LAN_LOOKUP_MS (60 * 1000)        /* LP of our friends again this often */
#define LAN_INBUF_MAX (PT_CHAN_FRAME_MAX + 4096)

typedef struct lan_peer {
    uint8_t user_id[16];
    uint8_t device[32];
    uint8_t addr[16];
    uint32_t scope;      /* interface of a link-local IPv6 address */
    uint16_t port;
    uint64_t seen_ms;
    uint64_t retry_ms;   /* no new connection before this */
    char name[PT_NAME_MAX];
    bool used;
    bool present;        /* announced as online (event sent) */
} lan_peer;

typedef struct lan_server {
    uint8_t addr[16];
    uint8_t key[32];
    uint16_t port;
    uint8_t obfs;
    uint64_t seen_ms;
} lan_server;

typedef struct lan_stranger {
    uint8_t addr[16];
    uint64_t seen_ms;
    /* an unknown user's fresh, well-addressed record: where to ask them to introduce
     * themselves (their signature cannot be checked before that) */
    bool has_rec;
    uint8_t user_id[16], device[32];
    uint16_t port;
    uint32_t scope;
    uint64_t retry_ms;
    /* their INTRO, checked (pt_api_contact_from_intro) */
    bool introduced;
    pt_api_contact *intro;
} lan_stranger;

typedef struct lan_conn {
    int fd;
    pt_chan *ch;
    pt_buf out;          /* bytes to write */
    pt_buf in;           /* read, not yet fed (while connecting) */
    bool initiator, connecting, hello_sent, authed, closing;
    uint8_t user_id[16]; /* the friend, once authenticated (initiator: from the start) */
    uint8_t device[32];
    uint64_t started_ms, active_ms;
    bool intro;          /* a stranger's connection: INTRO, FRIEND_REQ, ACK, BYE only */
    bool introduced;     /* their INTRO was checked */
    size_t ninflight;    /* envelopes sent, not yet acknowledged */
    uint8_t inflight[LAN_MAX_INFLIGHT][16];
} lan_conn;

struct pt_lan {
    int udp_listen, udp_query, tcp;
    int udp6_listen, udp6_query; /* IPv6 link-local multicast (PT_DISC_MCAST6); -1 without IPv6 */
    uint16_t disc_port, tcp_port;
    pt_disc_limiter *lim;
    uint8_t bpm_nonce[16], bsm_nonce[16];
    uint64_t bpm_ms, bsm_ms, announce_ms;
    lan_peer peers[LAN_MAX_PEERS];
    lan_server servers[LAN_MAX_SERVERS];
    size_t nservers;
    lan_stranger strangers[LAN_MAX_STRANGERS];
    size_t nstrangers;
    lan_conn *conns[LAN_MAX_CONNS];
    uint64_t rx_requests, tx_replies, rx_bytes, tx_bytes, dropped;
    bool registered;     /* REG sent on the current server connection */
    /* the friend request in flight on the local network (pt_lan_friend_request) */
    bool req_pending, req_acked;
    uint8_t req_user[16], req_hash[16];
    char req_note[PT_P2P_NOTE_MAX + 1];
    uint8_t accept_hash[16]; /* BLAKE2b-128 of a FRIEND_ACCEPT record */
    uint64_t lookup_ms;  /* last LP round */
};

/* Intervals (timeouts, retries, expiry) on the monotonic clock; record timestamps on
 * the wall clock, which is what other devices compare them with. */
static uint64_t now_ms(pt_ctx *x) { return pt_env_mono_ms(x->env); }
static uint64_t wall_ms(pt_ctx *x) { return pt_env_now_ms(x->env); }

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -1 : 0;
}


/* ---- sockets ---------------------------------------------------------------------------------- */

static int udp_socket(uint16_t port, bool reuse)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
    if (reuse) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The direct-connection listener: dual-stack [::] where the kernel has IPv6, else IPv4. */
static int tcp_listener(uint16_t *port)
{
    int one = 1, zero = 0;
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(*port), .sin6_addr = in6addr_any};
        socklen_t len = sizeof sa;
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 16) == 0 &&
            getsockname(fd, (struct sockaddr *)&sa, &len) == 0) {
            *port = ntohs(sa.sin6_port);
            return fd;
        }
        close(fd);
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(*port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t len = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

/* IPv6 UDP: the listener joins PT_DISC_MCAST6 on every multicast interface. */
static int udp6_socket(uint16_t port, bool listener)
{
    int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &one, sizeof one);
    if (listener) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = in6addr_any};
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    if (listener) {
        struct if_nameindex *ifs = if_nameindex();
        int joined = 0;
        for (struct if_nameindex *i = ifs; i && i->if_index; i++) {
            struct ipv6_mreq mr = {.ipv6mr_interface = i->if_index};
            if (inet_pton(AF_INET6, PT_DISC_MCAST6, &mr.ipv6mr_multiaddr) == 1 &&
                setsockopt(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &mr, sizeof mr) == 0)
                joined++;
        }
        if (ifs) if_freenameindex(ifs);
        if (!joined) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

/* The address we send from toward `to` (a route lookup through a connected UDP socket). */
static void local_addr_toward(const struct sockaddr *to, socklen_t tolen, uint8_t addr[16])
{
    memset(addr, 0, 16);
    int fd = socket(to->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    int one = 1;
    if (to->sa_family == AF_INET) setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
    struct sockaddr_storage me;
    socklen_t len = sizeof me;
    uint16_t port;
    if (connect(fd, to, tolen) == 0 &&
        getsockname(fd, (struct sockaddr *)&me, &len) == 0 &&
        pt_disc_addr_from_sockaddr((struct sockaddr *)&me, addr, &port) != 0)
        memset(addr, 0, 16);
    close(fd);
}

static void send_dgram(pt_ctx *x, int fd, const uint8_t *p, size_t n, const struct sockaddr *to, socklen_t tolen)
{
    if (sendto(fd, p, n, 0, to, tolen) == (ssize_t)n) x->lan->tx_bytes += n;
    else pt_log_debug("lan: sendto: %s", strerror(errno));
}

/* Our signed record for a packet of `type` with `nonce`, sent toward `to`. */
static int our_record(pt_ctx *x, uint8_t type, const uint8_t nonce[16], const struct sockaddr *to,
                      socklen_t tolen, pt_disc_record *r)
{
    memset(r, 0, sizeof *r);
    memcpy(r->user_id, x->user_id, 16);
    memcpy(r->device, x->dev_pk, 32);
    local_addr_toward(to, tolen, r->addr);
    r->port = x->lan->tcp_port;
    r->ts_ms = wall_ms(x);
    return pt_disc_record_sign(r, type, nonce, x->id_sk);
}

/* One request of `type` to every IPv4 broadcast address of our interfaces and to the
 * loopback's (peers on this machine). A BPM's record names the address it leaves from,
 * so each copy is signed for its interface. */
static void broadcast(pt_ctx *x, uint8_t type)
{
    pt_lan *l = x->lan;
    pt_disc_pkt p = {.type = type};
    if (type == PT_DISC_BSM) {
        pt_random(l->bsm_nonce, 16);
        memcpy(p.nonce, l->bsm_nonce, 16);
        l->bsm_ms = now_ms(x);
    } else {
        pt_random(l->bpm_nonce, 16);
        memcpy(p.nonce, l->bpm_nonce, 16);
        l->bpm_ms = now_ms(x);
        l->announce_ms = l->bpm_ms;
    }
    struct sockaddr_in dst[16];
    size_t nd = 0;
    /* 127.255.255.255 is the loopback's broadcast address: it reaches every listener on
     * this machine, where a unicast to 127.0.0.1 would reach only one of the sockets
     * that share the port */
    dst[nd++] = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7fffffffu)};
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) == 0) {
        for (struct ifaddrs *i = ifs; i && nd < sizeof dst / sizeof *dst; i = i->ifa_next)
            if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && i->ifa_netmask &&
                (i->ifa_flags & IFF_BROADCAST) && (i->ifa_flags & IFF_UP)) {
                /* the subnet's broadcast address, from the netmask: an interface set up
                 * without "broadcast +" reports its own address as ifa_broadaddr */
                uint32_t a = ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr;
                uint32_t m = ((struct sockaddr_in *)i->ifa_netmask)->sin_addr.s_addr;
                dst[nd++] = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = (a & m) | ~m};
            }
        freeifaddrs(ifs);
    }
    if (nd == 1) /* no interface says where its broadcast goes: the limited broadcast */
        dst[nd++] = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_BROADCAST)};
    for (size_t k = 0; k < nd; k++) {
        dst[k].sin_port = htons(l->disc_port);
        p.flags = 0;
        memset(&p.rec, 0, sizeof p.rec);
        if (type == PT_DISC_BPM && x->status != PT_PRESENCE_INVISIBLE &&
            our_record(x, type, p.nonce, (struct sockaddr *)&dst[k], sizeof dst[k], &p.rec) == 0)
            p.flags = PT_DISC_FLAG_RECORD;
        uint8_t buf[PT_DISC_MAX_LEN];
        size_t n;
        if (pt_disc_encode(&p, buf, sizeof buf, &n) == 0)
            send_dgram(x, l->udp_query, buf, n, (struct sockaddr *)&dst[k], sizeof dst[k]);
    }
    if (l->udp6_query < 0) return;
    /* IPv6: the link-local group, once per interface that has a link-local address */
    uint32_t done[16];
    size_t ndone = 0;
    if (getifaddrs(&ifs) != 0) return;
    for (struct ifaddrs *i = ifs; i && ndone < 16; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET6 || !(i->ifa_flags & IFF_UP) ||
            !(i->ifa_flags & IFF_MULTICAST) || (i->ifa_flags & IFF_LOOPBACK))
            continue;
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)i->ifa_addr;
        if (!IN6_IS_ADDR_LINKLOCAL(&a6->sin6_addr)) continue;
        uint32_t idx = if_nametoindex(i->ifa_name);
        bool seen = !idx;
        for (size_t k = 0; k < ndone && !seen; k++) seen = done[k] == idx;
        if (seen) continue;
        done[ndone++] = idx;
        struct sockaddr_in6 to = {.sin6_family = AF_INET6, .sin6_port = htons(l->disc_port), .sin6_scope_id = idx};
        if (inet_pton(AF_INET6, PT_DISC_MCAST6, &to.sin6_addr) != 1) continue;
        setsockopt(l->udp6_query, IPPROTO_IPV6, IPV6_MULTICAST_IF, &idx, sizeof idx);
        p.flags = 0;
        memset(&p.rec, 0, sizeof p.rec);
        if (type == PT_DISC_BPM && x->status != PT_PRESENCE_INVISIBLE) {
            /* the address it leaves from: this interface's link-local one */
            memset(&p.rec, 0, sizeof p.rec);
            memcpy(p.rec.user_id, x->user_id, 16);
            memcpy(p.rec.device, x->dev_pk, 32);
            memcpy(p.rec.addr, &a6->sin6_addr, 16);
            p.rec.port = l->tcp_port;
            p.rec.ts_ms = wall_ms(x);
            if (pt_disc_record_sign(&p.rec, type, p.nonce, x->id_sk) == 0) p.flags = PT_DISC_FLAG_RECORD;
            else memset(&p.rec, 0, sizeof p.rec);
        }
        uint8_t buf[PT_DISC_MAX_LEN];
        size_t n;
        if (pt_disc_encode(&p, buf, sizeof buf, &n) == 0)
            send_dgram(x, l->udp6_query, buf, n, (struct sockaddr *)&to, sizeof to);
    }
    freeifaddrs(ifs);
}

/* ---- what discovery saw ---------------------------------------------------------------------------------- */

static lan_peer *peer_find(pt_lan *l, const uint8_t user_id[16])
{
    for (size_t i = 0; i < LAN_MAX_PEERS; i++)
        if (l->peers[i].used && memcmp(l->peers[i].user_id, user_id, 16) == 0) return &l->peers[i];
    return NULL;
}

/* Someone we cannot vouch for at addr; rec (or NULL) is their unchecked record. */
static lan_stranger *note_stranger(pt_lan *l, const uint8_t addr[16], const pt_disc_record *rec, uint32_t scope,
                                   uint64_t now)
{
    lan_stranger *s = NULL;
    for (size_t i = 0; i < l->nstrangers && !s; i++)
        if (rec ? l->strangers[i].has_rec && memcmp(l->strangers[i].user_id, rec->user_id, 16) == 0
                : !l->strangers[i].has_rec && memcmp(l->strangers[i].addr, addr, 16) == 0)
            s = &l->strangers[i];
    if (!s) {
        size_t at = 0;
        if (l->nstrangers < LAN_MAX_STRANGERS) {
            at = l->nstrangers++;
        } else {
            for (size_t i = 1; i < l->nstrangers; i++)
                if (l->strangers[i].seen_ms < l->strangers[at].seen_ms) at = i;
        }
        s = &l->strangers[at];
        free(s->intro);
        memset(s, 0, sizeof *s);
    }
    memcpy(s->addr, addr, 16);
    s->seen_ms = now;
    if (rec) {
        if (s->has_rec && memcmp(s->device, rec->device, 32) != 0 && s->introduced) { /* another device: ask again */
            s->introduced = false;
            free(s->intro);
            s->intro = NULL;
        }
        s->has_rec = true;
        memcpy(s->user_id, rec->user_id, 16);
        memcpy(s->device, rec->device, 32);
        s->port = rec->port;
        s->scope = scope;
    }
    return s;
}

static lan_stranger *stranger_by_user(pt_lan *l, const uint8_t user_id[16])
{
    for (size_t i = 0; i < l->nstrangers; i++)
        if (l->strangers[i].has_rec && memcmp(l->strangers[i].user_id, user_id, 16) == 0) return &l->strangers[i];
    return NULL;
}

static void emit_presence(pt_ctx *x, const char *name, pt_status st)
{
    pt_event ev = {.type = PT_EVENT_PRESENCE, .user = name, .status = st};
    pt_api_emit(x, &ev);
}

static bool has_direct_work(pt_ctx *x, const uint8_t user_id[16]);
static void connect_peer(pt_ctx *x, lan_peer *p);

/* Notes (or updates) where a friend's device is. */
static lan_peer *peer_note(pt_ctx *x, const uint8_t user_id[16], const uint8_t device[32], const uint8_t addr[16],
                           uint16_t port, const char *name)
{
    pt_lan *l = x->lan;
    lan_peer *p = peer_find(l, user_id);
    if (!p) {
        for (size_t i = 0; i < LAN_MAX_PEERS && !p; i++)
            if (!l->peers[i].used) p = &l->peers[i];
        if (!p) { /* full: the one heard of longest ago goes */
            p = &l->peers[0];
            for (size_t i = 1; i < LAN_MAX_PEERS; i++)
                if (l->peers[i].seen_ms < p->seen_ms) p = &l->peers[i];
        }
        memset(p, 0, sizeof *p);
        p->used = true;
        memcpy(p->user_id, user_id, 16);
    }
    bool moved = memcmp(p->addr, addr, 16) != 0 || p->port != port || memcmp(p->device, device, 32) != 0;
    memcpy(p->device, device, 32);
    memcpy(p->addr, addr, 16);
    p->port = port;
    p->seen_ms = now_ms(x);
    if (moved) p->retry_ms = 0;
    snprintf(p->name, sizeof p->name, "%s", name);
    return p;
}

/* A record from `src` in a packet of `type` with `nonce`: a friend's device is noted
 * (and connected to when messages wait for them); anything else is someone nearby. */
static void take_record(pt_ctx *x, const pt_disc_record *r, uint8_t type, const uint8_t nonce[16],
                        const uint8_t src[16], uint32_t scope)
{
    pt_lan *l = x->lan;
    uint64_t now = now_ms(x);
    if (memcmp(r->user_id, x->user_id, 16) == 0 && memcmp(r->device, x->dev_pk, 32) == 0) return; /* ours */
    pt_api_contact *c = malloc(sizeof *c);
    if (!c) return;
    bool ok = false, usable = false; /* usable: fresh, well addressed, of nobody we know */
    int known = -1;
    if (!pt_disc_fresh(r->ts_ms, wall_ms(x))) {
        pt_log_debug("lan: a stale record is ignored");
    } else if (memcmp(r->addr, src, 16) != 0) {
        pt_log_debug("lan: a record sent from another address than it names is ignored");
    } else if ((known = pt_api_contact_load(x, r->user_id, c)) == 0 &&
               (c->state == PT_CONTACT_STATE_FRIEND || c->state == PT_CONTACT_STATE_REQUEST_SENT ||
                c->state == PT_CONTACT_STATE_REQUEST_RECEIVED || memcmp(r->user_id, x->user_id, 16) == 0)) {
        if (pt_disc_record_verify(r, type, nonce, c->identity_key) != 0) {
            pt_log_warn("lan: a record claiming to be %s has a bad signature; ignored", c->name);
        } else {
            for (size_t i = 0; i < c->ndev && !ok; i++)
                ok = c->dev[i].known && memcmp(c->dev[i].device, r->device, 32) == 0;
            if (!ok) pt_log_warn("lan: %s announced a device we do not know; ignored", c->name);
        }
    }
    else if (known == PT_ERR_NOT_FOUND)
        usable = true;
    if (!ok) {
        pt_log_debug("lan: a record we cannot vouch for: someone nearby");
        note_stranger(l, src, usable ? r : NULL, scope, now);
        free(c);
        return;
    }
    lan_peer *p = peer_note(x, r->user_id, r->device, r->addr, r->port, c->name);
    p->scope = scope;
    free(c);
    if (!p->present && memcmp(p->user_id, x->user_id, 16) != 0) {
        p->present = true;
        pt_log_info("lan: %s is nearby", p->name);
        emit_presence(x, p->name, PT_PRESENCE_ONLINE);
    }
    if (now >= p->retry_ms && has_direct_work(x, p->user_id)) connect_peer(x, p); /* connect_peer checks the rest */
}

static void take_bsr(pt_ctx *x, const pt_disc_pkt *p, const uint8_t src[16])
{
    pt_lan *l = x->lan;
    if (memcmp(p->nonce, l->bsm_nonce, 16) != 0) return; /* not an answer to our question */
    lan_server *s = NULL;
    for (size_t i = 0; i < l->nservers && !s; i++)
        if (memcmp(l->servers[i].addr, src, 16) == 0 && l->servers[i].port == p->port) s = &l->servers[i];
    if (!s && l->nservers < LAN_MAX_SERVERS) s = &l->servers[l->nservers++];
    if (!s) return;
    memcpy(s->addr, src, 16);
    memcpy(s->key, p->server_key, 32);
    s->port = p->port;
    s->obfs = p->obfs;
    s->seen_ms = now_ms(x);
}

static void on_datagram(pt_ctx *x, int fd, bool listener)
{
    pt_lan *l = x->lan;
    for (int k = 0; k < 64; k++) {
        uint8_t buf[PT_DISC_MAX_LEN + 1];
        struct sockaddr_storage ss;
        socklen_t sslen = sizeof ss;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&ss, &sslen);
        if (n < 0) return;
        l->rx_bytes += (uint64_t)n;
        uint8_t src[16];
        uint16_t sport;
        uint32_t scope = ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_scope_id : 0;
        pt_disc_pkt p;
        if (pt_disc_addr_from_sockaddr((struct sockaddr *)&ss, src, &sport) != 0 ||
            pt_disc_decode(buf, (size_t)n, &p) != 0) {
            pt_log_debug("lan: a malformed datagram of %zd bytes is dropped", n);
            l->dropped++;
            continue;
        }
        pt_log_debug("lan: type %u from %s socket", p.type, listener ? "the listening" : "the query");
        if (listener && p.type == PT_DISC_BPM) {
            l->rx_requests++;
            if (p.flags & PT_DISC_FLAG_RECORD) take_record(x, &p.rec, PT_DISC_BPM, p.nonce, src, scope);
            if (x->status == PT_PRESENCE_INVISIBLE) continue; /* invisible: we do not answer */
            if (!pt_disc_limiter_allow(l->lim, src, now_ms(x))) {
                l->dropped++;
                continue;
            }
            pt_disc_pkt r = {.type = PT_DISC_BPR};
            memcpy(r.nonce, p.nonce, 16);
            size_t len;
            if (our_record(x, PT_DISC_BPR, p.nonce, (struct sockaddr *)&ss, sslen, &r.rec) != 0 ||
                pt_disc_encode(&r, buf, sizeof buf, &len) != 0 || len > (size_t)n)
                continue;
            send_dgram(x, fd, buf, len, (struct sockaddr *)&ss, sslen);
            l->tx_replies++;
        } else if (!listener && p.type == PT_DISC_BPR) {
            if (memcmp(p.nonce, l->bpm_nonce, 16) != 0) { /* an answer to no question of ours */
                l->dropped++;
                continue;
            }
            take_record(x, &p.rec, PT_DISC_BPR, p.nonce, src, scope);
        } else if (!listener && p.type == PT_DISC_BSR) {
            take_bsr(x, &p, src);
        } else {
            l->dropped++;
        }
    }
}

/* ---- direct connections ------------------------------------------------------------------------------- */

static void conn_free(pt_ctx *x, size_t i)
{
    lan_conn *c = x->lan->conns[i];
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    pt_chan_free(c->ch);
    pt_buf_free(&c->out);
    pt_buf_free(&c->in);
    free(c);
    x->lan->conns[i] = NULL;
}

static lan_conn *conn_to(pt_ctx *x, const uint8_t user_id[16])
{
    for (size_t i = 0; i < LAN_MAX_CONNS; i++) {
        lan_conn *c = x->lan->conns[i];
        if (c && !c->closing && !c->intro && (c->authed || c->initiator) && memcmp(c->user_id, user_id, 16) == 0)
            return c;
    }
    return NULL;
}

static int conn_add(pt_ctx *x, lan_conn *c)
{
    for (size_t i = 0; i < LAN_MAX_CONNS; i++)
        if (!x->lan->conns[i]) {
            x->lan->conns[i] = c;
            return 0;
        }
    return PT_ERR_TOO_BIG;
}

static int conn_flush_out(lan_conn *c)
{
    while (c->out.len && !c->connecting) {
        ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : PT_ERR_IO;
        pt_buf_consume(&c->out, (size_t)n);
    }
    return 0;
}

static int conn_send(lan_conn *c, const pt_p2p_rec *r)
{
    pt_buf plain;
    pt_buf_init(&plain);
    int rc = pt_p2p_encode(r, &plain);
    if (rc == 0) rc = pt_chan_seal(c->ch, &c->out, plain.data, plain.len);
    pt_buf_free(&plain);
    return rc ? rc : conn_flush_out(c);
}

static lan_conn *conn_new(pt_ctx *x, int fd, bool initiator, const uint8_t *pin)
{
    uint8_t suites[PT_CHAN_MAX_SUITES];
    size_t nsuites = pt_suite_defaults(true, suites); /* the AEAD suites */
    lan_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->fd = fd;
    pt_buf_init(&c->out);
    pt_buf_init(&c->in);
    pt_chan_config cfg = {.is_server = !initiator, .suites = suites, .nsuites = nsuites,
                          .static_sk = x->dev_sk, .static_pk = x->dev_pk, .server_pk = pin,
                          .use_ik = initiator};
    int err = 0;
    c->ch = pt_chan_new(x->env, &cfg, &err);
    if (!c->ch) {
        free(c);
        return NULL;
    }
    c->initiator = initiator;
    c->started_ms = c->active_ms = now_ms(x);
    return c;
}

static void connect_to(pt_ctx *x, const uint8_t user_id[16], const uint8_t device[32], const uint8_t addr[16],
                       uint16_t port, uint32_t scope, const char *name, bool intro);

static void connect_peer(pt_ctx *x, lan_peer *p)
{
    uint64_t now = now_ms(x);
    if (conn_to(x, p->user_id) || now < p->retry_ms || !p->port) return;
    p->retry_ms = now + LAN_RETRY_MS;
    connect_to(x, p->user_id, p->device, p->addr, p->port, p->scope, p->name, false);
}

/* Asks a stranger with a record to introduce themselves (once; again after 2 s). */
static void connect_stranger(pt_ctx *x, lan_stranger *st)
{
    uint64_t now = now_ms(x);
    if (!st->has_rec || !st->port || now < st->retry_ms) return;
    for (size_t i = 0; i < LAN_MAX_CONNS; i++) {
        lan_conn *c = x->lan->conns[i];
        if (c && c->intro && memcmp(c->user_id, st->user_id, 16) == 0) return;
    }
    st->retry_ms = now + LAN_RETRY_MS;
    connect_to(x, st->user_id, st->device, st->addr, st->port, st->scope, "someone nearby", true);
}

static void connect_to(pt_ctx *x, const uint8_t user_id[16], const uint8_t device[32], const uint8_t addr[16],
                       uint16_t port, uint32_t scope, const char *name, bool intro)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    pt_disc_addr_to_sockaddr(addr, port, scope, &ss, &sslen);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&ss, sslen) != 0 && errno != EINPROGRESS) {
        pt_log_debug("lan: cannot connect to %s: %s", name, strerror(errno));
        close(fd);
        return;
    }
    lan_conn *c = conn_new(x, fd, true, device);
    if (!c) {
        close(fd);
        return;
    }
    memcpy(c->user_id, user_id, 16);
    memcpy(c->device, device, 32);
    c->connecting = true;
    c->intro = intro;
    if (pt_chan_start(c->ch, &c->out) != 0 || conn_add(x, c) != 0) {
        close(fd);
        pt_chan_free(c->ch);
        pt_buf_free(&c->out);
        pt_buf_free(&c->in);
        free(c);
        return;
    }
    pt_log_debug("lan: connecting to %s", name);
}

/* The outbox rows for this friend go out on c (those not sent on it already). */
static int push_row(pt_ctx *x, void *ud, const uint8_t *env, size_t len, const uint8_t hash[16])
{
    lan_conn *c = ud;
    for (size_t i = 0; i < c->ninflight; i++)
        if (memcmp(c->inflight[i], hash, 16) == 0) return 0;
    if (c->ninflight == LAN_MAX_INFLIGHT) return PT_ERR_AGAIN;
    pt_p2p_rec r = {.type = PT_P2P_MSG, .env = env, .env_len = len};
    int rc = conn_send(c, &r);
    (void)x;
    if (rc == 0) memcpy(c->inflight[c->ninflight++], hash, 16);
    return rc;
}

static void push_outbox(pt_ctx *x, lan_conn *c)
{
    int rc = pt_api_outbox_direct(x, c->user_id, push_row, c);
    if (rc && rc != PT_ERR_AGAIN) pt_log_debug("lan: outbox for a direct peer: %s", pt_strerror(rc));
}

static int on_authed_record(pt_ctx *x, lan_conn *c, const pt_p2p_rec *r)
{
    switch (r->type) {
    case PT_P2P_MSG: {
        uint8_t hash[16];
        if (pt_blake2b(hash, 16, r->env, r->env_len, NULL, 0) != 0) return PT_ERR_CRYPTO;
        pt_tl_bytes env = {r->env, (uint32_t)r->env_len};
        if (!pt_api_envelope_seen(x, hash)) pt_api_on_message(x, 0, c->user_id, c->device, NULL, &env);
        if (pt_api_envelope_seen(x, hash)) { /* committed: it will never be taken twice */
            pt_p2p_rec a = {.type = PT_P2P_ACK};
            memcpy(a.hash, hash, 16);
            return conn_send(c, &a);
        }
        return 0; /* not stored (a store error): the sender sends it again */
    }
    case PT_P2P_ACK:
        if (memcmp(r->hash, x->lan->accept_hash, 16) == 0) { /* our FRIEND_ACCEPT arrived */
            pt_api_contact *p = malloc(sizeof *p);
            int rc = p ? pt_api_contact_load(x, c->user_id, p) : PT_ERR_NOMEM;
            if (rc == 0 && (p->lan & PT_API_LAN_ACCEPT_OWED)) {
                p->lan &= (uint8_t)~PT_API_LAN_ACCEPT_OWED;
                rc = pt_api_contact_save(x, p);
            }
            free(p);
            return rc;
        }
        for (size_t i = 0; i < c->ninflight; i++)
            if (memcmp(c->inflight[i], r->hash, 16) == 0) {
                memmove(c->inflight[i], c->inflight[i + 1], (c->ninflight - i - 1) * 16);
                c->ninflight--;
                break;
            }
        return pt_api_outbox_direct_acked(x, r->hash);
    case PT_P2P_PING: {
        pt_p2p_rec a = {.type = PT_P2P_PONG};
        return conn_send(c, &a);
    }
    case PT_P2P_PONG: return 0;
    case PT_P2P_BYE: c->closing = true; return 0;
    default: return PT_ERR_PROTO; /* a second HELLO */
    }
}

typedef struct rec_ctx {
    pt_ctx *x;
    lan_conn *c;
} rec_ctx;

/* The responder's check of HELLO: the channel's key is a known device of that friend. */
static int check_hello(pt_ctx *x, lan_conn *c, const uint8_t user_id[16])
{
    const uint8_t *dev = pt_chan_remote_static(c->ch);
    pt_api_contact *p = malloc(sizeof *p);
    if (!p || !dev) {
        free(p);
        return PT_ERR_AUTH;
    }
    bool ok = false;
    if (pt_api_contact_load(x, user_id, p) == 0 &&
        (p->state == PT_CONTACT_STATE_FRIEND || p->state == PT_CONTACT_STATE_REQUEST_SENT ||
         p->state == PT_CONTACT_STATE_REQUEST_RECEIVED || memcmp(user_id, x->user_id, 16) == 0))
        for (size_t i = 0; i < p->ndev && !ok; i++)
            ok = p->dev[i].known && memcmp(p->dev[i].device, dev, 32) == 0;
    if (ok) {
        memcpy(c->user_id, user_id, 16);
        memcpy(c->device, dev, 32);
        pt_log_info("lan: %s connected directly", p->name);
    } else {
        pt_log_warn("lan: a direct connection from a device that is not a friend's is refused");
    }
    free(p);
    return ok ? 0 : PT_ERR_AUTH;
}

/* ---- strangers: introductions and friend requests ------------------------------------------------ */

/* BLAKE2b-128 of a record as encoded: what an ACK names for a FRIEND_REQ or FRIEND_ACCEPT. */
static int rec_hash(const pt_p2p_rec *r, uint8_t out[16])
{
    pt_buf b;
    pt_buf_init(&b);
    int rc = pt_p2p_encode(r, &b);
    if (rc == 0) rc = pt_blake2b(out, 16, b.data, b.len, NULL, 0);
    pt_buf_free(&b);
    return rc;
}

static int send_intro(pt_ctx *x, lan_conn *c)
{
    pt_p2p_rec r = {.type = PT_P2P_INTRO, .name = (const uint8_t *)x->username, .name_len = strlen(x->username)};
    memcpy(r.identity_key, x->id_pk, 32);
    int rc = pt_api_own_bundle(x, &r.key_id, r.signed_key, r.sig);
    return rc ? rc : conn_send(c, &r);
}

static int send_friend_req(pt_ctx *x, lan_conn *c)
{
    pt_lan *l = x->lan;
    pt_p2p_rec r = {.type = PT_P2P_FRIEND_REQ, .env = (const uint8_t *)l->req_note, .env_len = strlen(l->req_note)};
    int rc = rec_hash(&r, l->req_hash);
    return rc ? rc : conn_send(c, &r);
}

/* Their INTRO, checked against the channel's key; kept with the stranger. */
static int take_intro(pt_ctx *x, lan_conn *c, const pt_p2p_rec *r)
{
    pt_lan *l = x->lan;
    const uint8_t *dev = pt_chan_remote_static(c->ch);
    char name[PT_P2P_NAME_MAX + 1];
    memcpy(name, r->name, r->name_len);
    name[r->name_len] = 0;
    if (!dev || !pt_wire_utf8_valid(r->name, r->name_len) || memchr(name, 0, r->name_len)) return PT_ERR_DECODE;
    pt_api_contact *in = malloc(sizeof *in);
    if (!in) return PT_ERR_NOMEM;
    int rc = pt_api_contact_from_intro(x, r->identity_key, name, dev, r->key_id, r->signed_key, r->sig, in);
    if (rc == 0 && c->initiator && memcmp(in->user_id, c->user_id, 16) != 0) rc = PT_ERR_AUTH; /* not whom we asked */
    if (rc) {
        free(in);
        pt_log_warn("lan: a nearby device's introduction does not check out; the connection is closed");
        return rc;
    }
    memcpy(c->user_id, in->user_id, 16);
    memcpy(c->device, dev, 32);
    lan_stranger *st = stranger_by_user(l, in->user_id);
    if (!st) { /* it came to us: where it is, it did not say; its record will */
        pt_disc_record fake = {0};
        memcpy(fake.user_id, in->user_id, 16);
        memcpy(fake.device, dev, 32);
        uint8_t zero[16] = {0};
        st = note_stranger(l, zero, &fake, 0, now_ms(x));
        st->has_rec = st->port != 0; /* no port: not one to connect to */
        if (!st->has_rec) memcpy(st->user_id, in->user_id, 16);
    }
    free(st->intro);
    st->intro = in;
    st->introduced = true;
    c->introduced = true;
    pt_log_debug("lan: %s (someone nearby) introduced themselves", in->name);
    return 0;
}

/* A stranger's request: a contact in REQUEST_RECEIVED, met on the local network. */
static int take_friend_req(pt_ctx *x, lan_conn *c, const pt_p2p_rec *r, const uint8_t *raw, size_t rawlen)
{
    lan_stranger *st = NULL;
    for (size_t i = 0; i < x->lan->nstrangers && !st; i++)
        if (x->lan->strangers[i].introduced && memcmp(x->lan->strangers[i].intro->user_id, c->user_id, 16) == 0)
            st = &x->lan->strangers[i];
    if (!st) return PT_ERR_PROTO;
    pt_api_contact *have = malloc(sizeof *have);
    if (!have) return PT_ERR_NOMEM;
    int rc = 0;
    if (pt_api_contact_load(x, c->user_id, have) == 0 && have->state != PT_CONTACT_STATE_NONE) {
        /* already a contact: nothing changes (a repeated request, or one we sent too) */
    } else if (pt_api_contact_by_name(x, st->intro->name, have) == 0 && memcmp(have->user_id, c->user_id, 16) != 0) {
        pt_log_warn("lan: a nearby stranger asks to be your friend as '%s', the name of another contact; refused",
                    st->intro->name);
        free(have);
        return PT_ERR_EXISTS;
    } else {
        pt_api_contact nc = *st->intro;
        nc.state = PT_CONTACT_STATE_REQUEST_RECEIVED;
        nc.lan = PT_API_LAN_MET;
        if ((rc = pt_api_contact_save(x, &nc)) == 0) {
            char note[PT_P2P_NOTE_MAX + 1];
            snprintf(note, sizeof note, "%.*s", (int)r->env_len, (const char *)r->env);
            pt_event ev = {.type = PT_EVENT_FRIEND_REQUEST, .user = nc.name, .text = note};
            pt_log_info("lan: %s, nearby, asks to be your friend", nc.name);
            pt_api_emit(x, &ev);
        }
    }
    free(have);
    if (rc) return rc;
    pt_p2p_rec a = {.type = PT_P2P_ACK};
    if ((rc = pt_blake2b(a.hash, 16, raw, rawlen, NULL, 0)) != 0) return rc;
    return conn_send(c, &a);
}

/* Records of a stranger's connection. */
static int on_intro_record(pt_ctx *x, lan_conn *c, const pt_p2p_rec *r, const uint8_t *raw, size_t rawlen)
{
    pt_lan *l = x->lan;
    int rc;
    switch (r->type) {
    case PT_P2P_INTRO:
        if (c->introduced) return PT_ERR_PROTO;
        if ((rc = take_intro(x, c, r)) != 0) return rc;
        c->intro = true;
        if (!c->initiator) return send_intro(x, c);
        if (l->req_pending && memcmp(l->req_user, c->user_id, 16) == 0) return send_friend_req(x, c);
        return 0;
    case PT_P2P_FRIEND_REQ:
        if (!c->introduced || c->initiator) return PT_ERR_PROTO;
        return take_friend_req(x, c, r, raw, rawlen);
    case PT_P2P_ACK:
        if (!c->introduced || !l->req_pending || memcmp(r->hash, l->req_hash, 16) != 0) return PT_ERR_PROTO;
        {
            lan_stranger *st = NULL;
            for (size_t i = 0; i < l->nstrangers && !st; i++)
                if (l->strangers[i].introduced && memcmp(l->strangers[i].intro->user_id, c->user_id, 16) == 0)
                    st = &l->strangers[i];
            if (!st) return PT_ERR_PROTO;
            pt_api_contact nc = *st->intro;
            nc.state = PT_CONTACT_STATE_REQUEST_SENT;
            nc.lan = PT_API_LAN_MET;
            if ((rc = pt_api_contact_save(x, &nc)) != 0) return rc;
            l->req_acked = true;
        }
        return 0;
    case PT_P2P_BYE: c->closing = true; return 0;
    default: return PT_ERR_PROTO;
    }
}

/* A contact's FRIEND_ACCEPT (they were asked on the local network). */
static int take_friend_accept(pt_ctx *x, lan_conn *c, const uint8_t *raw, size_t rawlen)
{
    pt_api_contact *p = malloc(sizeof *p);
    if (!p) return PT_ERR_NOMEM;
    int rc = pt_api_contact_load(x, c->user_id, p);
    if (rc == 0 && p->state == PT_CONTACT_STATE_REQUEST_SENT) {
        p->state = PT_CONTACT_STATE_FRIEND;
        p->lan |= PT_API_LAN_SERVER_OWED;
        if ((rc = pt_api_contact_save(x, p)) == 0) {
            pt_event ev = {.type = PT_EVENT_FRIEND_ACCEPTED, .user = p->name};
            pt_log_info("lan: %s accepted your friend request", p->name);
            pt_api_emit(x, &ev);
        }
    }
    free(p);
    if (rc) return rc;
    pt_p2p_rec a = {.type = PT_P2P_ACK};
    if ((rc = pt_blake2b(a.hash, 16, raw, rawlen, NULL, 0)) != 0) return rc;
    return conn_send(c, &a);
}

/* After HELLO: an accept we owe this contact goes first. */
static int send_owed_accept(pt_ctx *x, lan_conn *c)
{
    pt_api_contact *p = malloc(sizeof *p);
    if (!p) return PT_ERR_NOMEM;
    int rc = 0;
    if (pt_api_contact_load(x, c->user_id, p) == 0 && (p->lan & PT_API_LAN_ACCEPT_OWED)) {
        pt_p2p_rec a = {.type = PT_P2P_FRIEND_ACCEPT};
        rc = rec_hash(&a, x->lan->accept_hash);
        if (rc == 0) rc = conn_send(c, &a);
    }
    free(p);
    return rc;
}

static int on_record(void *ud, const uint8_t *rec, size_t len)
{
    rec_ctx *rc_ = ud;
    pt_ctx *x = rc_->x;
    lan_conn *c = rc_->c;
    pt_p2p_rec r;
    int rc = pt_p2p_decode(rec, len, &r);
    if (rc) return rc;
    c->active_ms = now_ms(x);
    if (!c->authed && (c->intro || r.type == PT_P2P_INTRO)) return on_intro_record(x, c, &r, rec, len);
    if (!c->authed) {
        if (r.type != PT_P2P_HELLO) return PT_ERR_PROTO;
        if (c->initiator) {
            if (memcmp(r.user_id, c->user_id, 16) != 0) return PT_ERR_AUTH;
        } else if ((rc = check_hello(x, c, r.user_id)) != 0) {
            return rc;
        } else {
            pt_p2p_rec h = {.type = PT_P2P_HELLO};
            memcpy(h.user_id, x->user_id, 16);
            if ((rc = conn_send(c, &h)) != 0) return rc;
        }
        c->authed = true;
        lan_peer *p = peer_find(x->lan, c->user_id);
        if (p) p->seen_ms = now_ms(x);
        if ((rc = send_owed_accept(x, c)) != 0) return rc;
        push_outbox(x, c);
        return 0;
    }
    if (r.type == PT_P2P_FRIEND_ACCEPT) return take_friend_accept(x, c, rec, len);
    return on_authed_record(x, c, &r);
}

/* Reads what is there and runs the channel; PT_ERR_* closes the connection. */
static int conn_readable(pt_ctx *x, lan_conn *c)
{
    uint8_t buf[16384];
    for (int k = 0; k < 64; k++) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n == 0) return PT_ERR_CLOSED;
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : PT_ERR_IO;
        bool was = pt_chan_established(c->ch);
        rec_ctx rcx = {x, c};
        int rc = pt_chan_input(c->ch, buf, (size_t)n, &c->out, on_record, &rcx);
        if (rc) return rc;
        if (!was && pt_chan_established(c->ch) && c->initiator && !c->hello_sent) {
            if (c->intro) {
                rc = send_intro(x, c);
            } else {
                pt_p2p_rec h = {.type = PT_P2P_HELLO};
                memcpy(h.user_id, x->user_id, 16);
                rc = conn_send(c, &h);
            }
            if (rc) return rc;
            c->hello_sent = true;
        }
        if ((rc = conn_flush_out(c)) != 0) return rc;
        if (c->closing) return PT_ERR_CLOSED;
    }
    return 0;
}

static void accept_all(pt_ctx *x)
{
    for (int k = 0; k < 16; k++) {
        int fd = accept(x->lan->tcp, NULL, NULL);
        if (fd < 0) return;
        if (set_nonblock(fd) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
            close(fd);
            continue;
        }
        lan_conn *c = conn_new(x, fd, false, NULL);
        if (!c || conn_add(x, c) != 0) {
            if (c) {
                pt_chan_free(c->ch);
                free(c);
            }
            close(fd);
            pt_log_warn("lan: too many direct connections; one is refused");
        }
    }
}

/* ---- S2WMP REG/LP through the server ---------------------------------------------------------------- */

/* While a server is reachable: tell it where our friends can reach this device directly
 * (REG; it shows them to friends only) and ask where our friends' devices are (LP), so
 * that when the server goes away, or a friend is on another subnet that broadcasts do
 * not reach, we still know where to connect. Once per connection, then every minute. */
void pt_api_lan_server_exchange(pt_ctx *x)
{
    pt_lan *l = x->lan;
    uint64_t now = now_ms(x);
    if (!l || !x->online || !x->bound || (l->registered && now - l->lookup_ms < LAN_LOOKUP_MS)) return;
    l->lookup_ms = now;
    if (!l->registered) {
        char text[8][64];
        const char *ptr[8];
        size_t n = 0;
        struct ifaddrs *ifs = NULL;
        if (getifaddrs(&ifs) == 0) {
            for (struct ifaddrs *i = ifs; i && n < 8; i = i->ifa_next)
                if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && (i->ifa_flags & IFF_UP) &&
                    !(i->ifa_flags & IFF_LOOPBACK) &&
                    inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, text[n], sizeof text[n])) {
                    ptr[n] = text[n];
                    n++;
                }
            freeifaddrs(ifs);
        }
        l->registered = true;
        if (n && pt_addr_register(x, ptr, n, l->tcp_port) != 0)
            pt_log_debug("lan: the server did not take our direct address: %s", x->last_error);
    }
    pt_contact *cs = NULL;
    size_t nc = 0;
    if (pt_contacts(x, &cs, &nc) != 0) return;
    for (size_t i = 0; i < nc && x->online; i++) {
        if (cs[i].state != PT_CONTACT_STATE_FRIEND) continue;
        pt_peer_addr *pa = NULL;
        size_t np = 0;
        uint8_t uid[16];
        if (pt_hex_decode(uid, 16, cs[i].user_id) != 0 || pt_addr_lookup(x, cs[i].name, &pa, &np) != 0) continue;
        for (size_t k = 0; k < np; k++) {
            uint8_t dev[32], addr[16] = {0};
            struct in_addr v4;
            struct in6_addr v6;
            if (pt_hex_decode(dev, 32, pa[k].device) != 0) continue;
            if (inet_pton(AF_INET, pa[k].addr, &v4) == 1) {
                addr[10] = addr[11] = 0xff;
                memcpy(addr + 12, &v4, 4);
            } else if (inet_pton(AF_INET6, pa[k].addr, &v6) == 1) {
                memcpy(addr, &v6, 16);
            } else {
                continue;
            }
            if (addr[0] == 0xfe && (addr[1] & 0xc0) == 0x80) continue; /* link-local: no scope to use */
            peer_note(x, uid, dev, addr, pa[k].port, cs[i].name);
            pt_log_debug("lan: the server says %s can be reached at %s:%u", cs[i].name, pa[k].addr, pa[k].port);
        }
        pt_free(pa);
    }
    pt_free(cs);
}

void pt_api_lan_server_lost(pt_ctx *x)
{
    if (x->lan) x->lan->registered = false;
}

/* ---- the service loop ---------------------------------------------------------------------------------- */

static void housekeeping(pt_ctx *x)
{
    pt_lan *l = x->lan;
    uint64_t now = now_ms(x);
    for (size_t i = 0; i < LAN_MAX_CONNS; i++) {
        lan_conn *c = l->conns[i];
        if (!c) continue;
        if ((!c->authed && now - c->started_ms > LAN_HANDSHAKE_MS) || now - c->active_ms > LAN_IDLE_MS) {
            pt_log_debug("lan: a direct connection timed out");
            conn_free(x, i);
        }
    }
    for (size_t i = 0; i < LAN_MAX_PEERS; i++) {
        lan_peer *p = &l->peers[i];
        if (!p->used || now - p->seen_ms < LAN_PEER_TTL_MS || conn_to(x, p->user_id)) continue;
        if (p->present) emit_presence(x, p->name, PT_PRESENCE_OFFLINE);
        p->used = false;
    }
    if (now - l->announce_ms >= LAN_ANNOUNCE_MS) broadcast(x, PT_DISC_BPM);
    for (size_t i = 0; i < LAN_MAX_PEERS; i++) { /* messages wait for a friend we know is here */
        lan_peer *p = &l->peers[i];
        /* the outbox is read (unsealed) only for a peer we would connect to now */
        if (p->used && p->port && now >= p->retry_ms && !conn_to(x, p->user_id) && has_direct_work(x, p->user_id))
            connect_peer(x, p);
    }
}

int pt_api_lan_service(pt_ctx *x, int timeout_ms, int extra_fd, bool *extra_ready)
{
    pt_lan *l = x->lan;
    if (extra_ready) *extra_ready = false;
    if (!l) return 0;
    struct pollfd pf[6 + LAN_MAX_CONNS];
    size_t idx[LAN_MAX_CONNS];
    nfds_t n = 0;
    pf[n++] = (struct pollfd){.fd = l->udp_listen, .events = POLLIN};
    pf[n++] = (struct pollfd){.fd = l->udp_query, .events = POLLIN};
    pf[n++] = (struct pollfd){.fd = l->tcp, .events = POLLIN};
    pf[n++] = (struct pollfd){.fd = extra_fd, .events = POLLIN};
    pf[n++] = (struct pollfd){.fd = l->udp6_listen, .events = POLLIN};
    pf[n++] = (struct pollfd){.fd = l->udp6_query, .events = POLLIN};
    size_t nc = 0;
    for (size_t i = 0; i < LAN_MAX_CONNS; i++) {
        lan_conn *c = l->conns[i];
        if (!c) continue;
        short ev = POLLIN;
        if (c->connecting || c->out.len) ev |= POLLOUT;
        idx[nc++] = i;
        pf[n++] = (struct pollfd){.fd = c->fd, .events = ev};
    }
    int r = poll(pf, n, timeout_ms > 0 ? timeout_ms : 0);
    if (r < 0) return errno == EINTR ? 0 : PT_ERR_IO;
    if (pf[0].revents & POLLIN) on_datagram(x, l->udp_listen, true);
    if (pf[1].revents & POLLIN) on_datagram(x, l->udp_query, false);
    if (pf[2].revents & POLLIN) accept_all(x);
    if (extra_ready && extra_fd >= 0 && (pf[3].revents & (POLLIN | POLLHUP | POLLERR))) *extra_ready = true;
    if (pf[4].revents & POLLIN) on_datagram(x, l->udp6_listen, true);
    if (pf[5].revents & POLLIN) on_datagram(x, l->udp6_query, false);
    for (size_t k = 0; k < nc; k++) {
        size_t i = idx[k];
        lan_conn *c = l->conns[i];
        short re = pf[6 + k].revents;
        if (!c || !re) continue;
        int rc = 0;
        if (c->connecting && (re & (POLLOUT | POLLERR | POLLHUP))) {
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err) rc = PT_ERR_IO;
            c->connecting = false;
        }
        if (rc == 0 && (re & POLLOUT)) rc = conn_flush_out(c);
        if (rc == 0 && (re & (POLLIN | POLLHUP | POLLERR))) rc = conn_readable(x, c);
        if (rc) {
            pt_log_debug("lan: a direct connection closed: %s", pt_strerror(rc));
            conn_free(x, i);
        }
    }
    housekeeping(x);
    return 0;
}

bool pt_api_lan_reaches(pt_ctx *x, const uint8_t user_id[16])
{
    if (!x->lan) return false;
    lan_conn *c = conn_to(x, user_id);
    return c && c->authed;
}

/* ---- what the outbox asks of us ----------------------------------------------------------------------- */

typedef struct any_ctx {
    bool any;
} any_ctx;

static int count_row(pt_ctx *x, void *ud, const uint8_t *env, size_t len, const uint8_t hash[16])
{
    (void)x, (void)env, (void)len, (void)hash;
    ((any_ctx *)ud)->any = true;
    return PT_ERR_AGAIN; /* one is enough */
}

static bool has_direct_work(pt_ctx *x, const uint8_t user_id[16])
{
    pt_api_contact *p = malloc(sizeof *p);
    bool owed = p && pt_api_contact_load(x, user_id, p) == 0 && (p->lan & PT_API_LAN_ACCEPT_OWED);
    free(p);
    if (owed) return true;
    any_ctx a = {false};
    (void)pt_api_outbox_direct_peek(x, user_id, count_row, &a);
    return a.any;
}

int pt_api_lan_deliver(pt_ctx *x, const uint8_t user_id[16], int wait_ms)
{
    if (!x->lan) return PT_ERR_OFFLINE;
    uint64_t end = now_ms(x) + (uint64_t)wait_ms;
    lan_peer *p = peer_find(x->lan, user_id);
    if (!p) broadcast(x, PT_DISC_BPM);
    else connect_peer(x, p);
    lan_conn *c = conn_to(x, user_id);
    if (c && c->authed) push_outbox(x, c);
    while (now_ms(x) < end) {
        if (!has_direct_work(x, user_id)) return 0;
        uint64_t left = end - now_ms(x);
        int rc = pt_api_lan_service(x, left > 100 ? 100 : (int)left, -1, NULL);
        if (rc) return rc;
        if ((p = peer_find(x->lan, user_id)) != NULL) connect_peer(x, p);
    }
    return has_direct_work(x, user_id) ? PT_ERR_OFFLINE : 0;
}

/* ---- S2WMP start-up: no server at the known address, so is our server here? ---------------------- */

/* The key we pinned for the configured server (--fingerprint, else known_servers). */
static bool pinned_key(pt_ctx *x, uint8_t key[32])
{
    if (x->server_fp[0]) return pt_fingerprint_parse(key, x->server_fp) == 0;
    char want[300];
    snprintf(want, sizeof want, "%s:%u", x->host, x->port);
    return pt_known_servers_lookup(x->home, want, key) == 1;
}

/* BSM, and if our own server (the key we pinned, nothing else: a stranger's server on
 * the LAN is never trusted this way) answers from another address, it is used there
 * for the rest of this session. */
static void find_server(pt_ctx *x)
{
    pt_lan *l = x->lan;
    uint8_t key[32];
    if (x->online || !pinned_key(x, key)) return;
    broadcast(x, PT_DISC_BSM);
    uint64_t end = now_ms(x) + LAN_BSM_WAIT_MS;
    while (now_ms(x) < end && l->nservers == 0)
        if (pt_api_lan_service(x, 50, -1, NULL) != 0) break;
    for (size_t i = 0; i < l->nservers; i++) {
        if (pt_ct_memcmp(l->servers[i].key, key, 32) != 0) continue;
        char host[64], hostport[80];
        pt_disc_addr_format(l->servers[i].addr, host, sizeof host);
        if (strchr(host, '%') || (strcmp(host, x->host) == 0 && l->servers[i].port == x->port)) continue;
        /* the same key under the new address, so the channel pins it there too */
        snprintf(hostport, sizeof hostport, "%s:%u", host, l->servers[i].port);
        uint8_t there[32];
        /* with --fingerprint the client checks that key, not known_servers */
        int pinned = x->server_fp[0] ? 0 : pt_known_servers_lookup(x->home, hostport, there);
        if (pinned < 0 || (pinned == 1 && pt_ct_memcmp(there, key, 32) != 0)) {
            if (pinned == 1)
                pt_log_warn("lan: our server answered from %s, where another key is pinned; not used",
                            hostport);
            continue;
        }
        if (!pinned && !x->server_fp[0] && pt_known_servers_add(x->home, hostport, key) != 0)
            pt_log_warn("lan: cannot pin our server's key under %s in %s/known_servers", hostport,
                        x->home);
        char old[256];
        uint16_t oldport = x->port;
        snprintf(old, sizeof old, "%s", x->host);
        snprintf(x->host, sizeof x->host, "%s", host);
        x->port = l->servers[i].port;
        x->next_try_ms = 0;
        if (pt_api_ensure_online(x) == 0) {
            pt_log_info("lan: our server answered from %s:%u (configured: %s:%u); using it", host, x->port, old, oldport);
            return;
        }
        snprintf(x->host, sizeof x->host, "%s", old);
        x->port = oldport;
    }
}

/* ---- the public calls ------------------------------------------------------------------------------------ */

int pt_lan_start(pt_ctx *x, uint16_t discovery_port)
{
    if (x->lan) return 0;
    pt_lan *l = calloc(1, sizeof *l);
    if (!l) return PT_ERR_NOMEM;
    l->udp_listen = l->udp_query = l->tcp = l->udp6_listen = l->udp6_query = -1;
    l->disc_port = discovery_port ? discovery_port : PT_DISC_PORT;
    l->lim = pt_disc_limiter_new(PT_DISC_LIMIT_BURST, PT_DISC_LIMIT_PER_S, PT_DISC_LIMIT_GLOBAL_PER_S,
                                 PT_DISC_LIMIT_SLOTS);
    l->udp_listen = udp_socket(l->disc_port, true);
    l->udp_query = udp_socket(0, false);
    l->tcp = tcp_listener(&l->tcp_port);
    l->udp6_listen = udp6_socket(l->disc_port, true); /* optional: -1 without IPv6 */
    l->udp6_query = l->udp6_listen >= 0 ? udp6_socket(0, false) : -1;
    if (!l->lim || l->udp_listen < 0 || l->udp_query < 0 || l->tcp < 0) {
        int e = errno;
        if (l->udp_listen >= 0) close(l->udp_listen);
        if (l->udp_query >= 0) close(l->udp_query);
        if (l->tcp >= 0) close(l->tcp);
        pt_disc_limiter_free(l->lim);
        free(l);
        return pt_api_fail(x, PT_ERR_IO, "cannot open the local-network sockets (UDP port %u): %s",
                           discovery_port ? discovery_port : PT_DISC_PORT, strerror(e));
    }
    x->lan = l;
    pt_log_info("lan: discovery on UDP %u, direct connections on TCP %u", l->disc_port, l->tcp_port);
    find_server(x);            /* S2WMP: no server where we knew it: is it here? */
    broadcast(x, PT_DISC_BPM); /* we are here, and who else is? */
    return 0;
}

void pt_api_lan_free(pt_ctx *x)
{
    pt_lan *l = x->lan;
    if (!l) return;
    for (size_t i = 0; i < LAN_MAX_CONNS; i++) {
        lan_conn *c = l->conns[i];
        if (c && c->authed) {
            pt_p2p_rec bye = {.type = PT_P2P_BYE};
            (void)conn_send(c, &bye);
        }
        conn_free(x, i);
    }
    for (size_t i = 0; i < l->nstrangers; i++) free(l->strangers[i].intro);
    close(l->udp_listen);
    close(l->udp_query);
    if (l->udp6_listen >= 0) close(l->udp6_listen);
    if (l->udp6_query >= 0) close(l->udp6_query);
    close(l->tcp);
    pt_disc_limiter_free(l->lim);
    free(l);
    x->lan = NULL;
}

int pt_lan_active(const pt_ctx *x) { return x->lan != NULL; }

int pt_lan_scan(pt_ctx *x, int wait_ms)
{
    if (!x->lan) return pt_api_fail(x, PT_ERR_STATE, "the local network is not on (pt_lan_start)");
    pt_api_lan_server_exchange(x); /* friends the server knows an address of */
    broadcast(x, PT_DISC_BSM);
    broadcast(x, PT_DISC_BPM);
    uint64_t end = now_ms(x) + (uint64_t)(wait_ms > 0 ? wait_ms : 0);
    while (now_ms(x) < end) {
        uint64_t left = end - now_ms(x);
        int rc = pt_api_lan_service(x, left > 100 ? 100 : (int)left, -1, NULL);
        if (rc) return rc;
    }
    return 0;
}

int pt_nearby_list(pt_ctx *x, pt_nearby **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    pt_lan *l = x->lan;
    if (!l) return pt_api_fail(x, PT_ERR_STATE, "the local network is not on (pt_lan_start)");
    size_t cap = l->nservers + LAN_MAX_PEERS + l->nstrangers + 1;
    pt_nearby *v = calloc(cap, sizeof *v);
    if (!v) return PT_ERR_NOMEM;
    size_t k = 0;
    uint64_t now = now_ms(x);
    for (size_t i = 0; i < l->nservers; i++) {
        pt_nearby *e = &v[k++];
        e->kind = PT_NEARBY_SERVER;
        pt_disc_addr_format(l->servers[i].addr, e->addr, sizeof e->addr);
        e->port = l->servers[i].port;
        pt_fingerprint(e->fingerprint, l->servers[i].key);
        e->obfs = l->servers[i].obfs;
        e->seen_ms_ago = (int64_t)(now - l->servers[i].seen_ms);
    }
    for (size_t i = 0; i < LAN_MAX_PEERS; i++) {
        const lan_peer *p = &l->peers[i];
        if (!p->used || memcmp(p->user_id, x->user_id, 16) == 0) continue;
        pt_nearby *e = &v[k++];
        e->kind = PT_NEARBY_FRIEND;
        snprintf(e->name, sizeof e->name, "%s", p->name);
        pt_disc_addr_format(p->addr, e->addr, sizeof e->addr);
        e->port = p->port;
        pt_fingerprint(e->fingerprint, p->device);
        lan_conn *c = conn_to(x, p->user_id);
        e->connected = c && c->authed;
        e->seen_ms_ago = (int64_t)(now - p->seen_ms);
    }
    for (size_t i = 0; i < l->nstrangers; i++) {
        pt_nearby *e = &v[k++];
        e->kind = PT_NEARBY_STRANGER;
        snprintf(e->name, sizeof e->name, "someone nearby");
        pt_disc_addr_format(l->strangers[i].addr, e->addr, sizeof e->addr);
        e->seen_ms_ago = (int64_t)(now - l->strangers[i].seen_ms);
    }
    *out = v;
    *n = k;
    return 0;
}

/* ---- friends from strangers ---------------------------------------------------------------------------- */

int pt_lan_strangers(pt_ctx *x, int wait_ms, pt_stranger **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    pt_lan *l = x->lan;
    if (!l) return pt_api_fail(x, PT_ERR_STATE, "the local network is not on (pt_lan_start)");
    broadcast(x, PT_DISC_BPM);
    uint64_t end = now_ms(x) + (uint64_t)(wait_ms > 0 ? wait_ms : 0);
    while (now_ms(x) < end) {
        for (size_t i = 0; i < l->nstrangers; i++)
            if (!l->strangers[i].introduced) connect_stranger(x, &l->strangers[i]);
        uint64_t left = end - now_ms(x);
        int rc = pt_api_lan_service(x, left > 50 ? 50 : (int)left, -1, NULL);
        if (rc) return rc;
    }
    pt_stranger *v = calloc(l->nstrangers + 1, sizeof *v);
    if (!v) return PT_ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < l->nstrangers; i++) {
        const lan_stranger *st = &l->strangers[i];
        if (!st->introduced) continue;
        pt_stranger *e = &v[k++];
        snprintf(e->name, sizeof e->name, "%s", st->intro->name);
        pt_hex_encode(e->user_id, st->intro->user_id, 16);
        char fp[PT_FINGERPRINT_LEN];
        pt_fingerprint(fp, st->intro->identity_key);
        snprintf(e->fingerprint, sizeof e->fingerprint, "%s", fp);
        pt_disc_addr_format(st->addr, e->addr, sizeof e->addr);
    }
    *out = v;
    *n = k;
    return 0;
}

int pt_lan_friend_request(pt_ctx *x, const char *user_id, const char *note)
{
    pt_lan *l = x->lan;
    if (!l) return pt_api_fail(x, PT_ERR_STATE, "the local network is not on (pt_lan_start)");
    uint8_t uid[16];
    if (!user_id || pt_hex_decode(uid, 16, user_id) != 0)
        return pt_api_fail(x, PT_ERR_INVAL, "a user id is 32 hex digits");
    const char *nt = note ? note : "";
    if (strlen(nt) > PT_P2P_NOTE_MAX) return pt_api_fail(x, PT_ERR_TOO_BIG, "the note is longer than 512 bytes");
    lan_stranger *st = NULL;
    for (size_t i = 0; i < l->nstrangers && !st; i++)
        if (l->strangers[i].introduced && memcmp(l->strangers[i].intro->user_id, uid, 16) == 0) st = &l->strangers[i];
    if (!st || !st->has_rec)
        return pt_api_fail(x, PT_ERR_NOT_FOUND, "no one nearby introduced themselves with that id (pt_lan_strangers)");
    pt_api_contact *have = malloc(sizeof *have);
    if (!have) return PT_ERR_NOMEM;
    int rc = 0;
    if (pt_api_contact_by_name(x, st->intro->name, have) == 0 && memcmp(have->user_id, uid, 16) != 0)
        rc = pt_api_fail(x, PT_ERR_EXISTS, "you already have a contact named '%s' with another key", st->intro->name);
    else if (pt_api_contact_load(x, uid, have) == 0 && have->state == PT_CONTACT_STATE_FRIEND)
        rc = pt_api_fail(x, PT_ERR_EXISTS, "%s is already your friend", have->name);
    free(have);
    if (rc) return rc;
    l->req_pending = true;
    l->req_acked = false;
    memcpy(l->req_user, uid, 16);
    snprintf(l->req_note, sizeof l->req_note, "%s", nt);
    lan_conn *c = NULL;
    for (size_t i = 0; i < LAN_MAX_CONNS && !c; i++)
        if (l->conns[i] && l->conns[i]->intro && l->conns[i]->introduced && l->conns[i]->initiator &&
            memcmp(l->conns[i]->user_id, uid, 16) == 0)
            c = l->conns[i];
    if (c) rc = send_friend_req(x, c);
    else st->retry_ms = 0, connect_stranger(x, st);
    uint64_t end = now_ms(x) + (uint64_t)x->timeout_ms;
    while (rc == 0 && !l->req_acked && now_ms(x) < end) {
        uint64_t left = end - now_ms(x);
        rc = pt_api_lan_service(x, left > 50 ? 50 : (int)left, -1, NULL);
        if (!l->req_acked) connect_stranger(x, st);
    }
    bool acked = l->req_acked;
    l->req_pending = l->req_acked = false;
    if (rc) return rc;
    if (!acked) return pt_api_fail(x, PT_ERR_TIMEOUT, "%s did not take the request in %d ms", st->intro->name, x->timeout_ms);
    pt_log_info("lan: friend request sent to %s", st->intro->name);
    return 0;
}

int pt_api_lan_accept(pt_ctx *x, pt_api_contact *c)
{
    c->state = PT_CONTACT_STATE_FRIEND;
    c->lan |= PT_API_LAN_SERVER_OWED | PT_API_LAN_ACCEPT_OWED;
    int rc = pt_api_contact_save(x, c);
    if (rc) return rc;
    if (x->lan) (void)pt_api_lan_deliver(x, c->user_id, PT_API_LAN_WAIT_MS);
    pt_api_contact *now = malloc(sizeof *now);
    bool owed = !now || pt_api_contact_load(x, c->user_id, now) != 0 || (now->lan & PT_API_LAN_ACCEPT_OWED);
    free(now);
    if (owed)
        return pt_api_fail(x, PT_ERR_OFFLINE, "accepted; %s is not nearby now and is told when they are", c->name);
    return 0;
}
