/*
 * Abuse control, per connection and per address:
 * - at most max_conns_per_ip connections open from one address, and new ones from
 *   it at most ip_conn_rate per second (bursts of twice that): each costs the
 *   server a handshake; one over either limit is closed as soon as it is accepted;
 * - a token bucket per connection (rate_limit messages per second, bursts of twice
 *   that), and one per address that all its connections draw on (ip_rate_limit):
 *   many connections cannot add up to more than one address may send.
 * A connection that overdraws its bucket or its address's is throttled: the server
 * stops reading from it until the bucket is back at zero (TCP pushes back on the
 * client). Overdrawing either by more than PT_ABUSE_FLOOD_BURSTS bursts at once is
 * flooding: the connection's replies and acknowledgements are flushed, it is
 * closed (for the address's bucket: the connection whose messages took it over
 * the line), and its address is banned for ban_s seconds (the S2WMP rule): new
 * connections from it are closed as soon as they are accepted. Its other open
 * connections stay, each held to its own rate and to what is left of the
 * address's, which is set back to one burst overdrawn (a pause of about two
 * seconds for them all), so that one flooding client behind a shared address does
 * not cut off the others already in. Flushing the acknowledgements first means a
 * banned client does not come back with the same backlog.
 */
#include <stdlib.h>

#include "server/pt_server_int.h"

typedef struct pt_ip_entry {
    char ip[48];
    uint32_t conns;            /* open connections from this address */
    uint64_t banned_until_ms;  /* loop time; 0 when not banned */
    pt_abuse_bucket msgs;      /* ip_rate_limit: messages from all its connections */
    pt_abuse_bucket accepts;   /* ip_conn_rate: connections accepted */
    struct pt_ip_entry *next;
} pt_ip_entry;

/* Refills b at rate per second (capped at a burst of twice that) up to now. */
static void refill(pt_abuse_bucket *b, uint32_t rate, uint64_t now)
{
    double burst = 2.0 * rate;
    if (now > b->ms) b->tokens += (double)(now - b->ms) * rate / 1000.0;
    if (b->tokens > burst) b->tokens = burst;
    b->ms = now;
}

/* A bucket made full at loop time now. */
static pt_abuse_bucket full(uint32_t rate, uint64_t now) { return (pt_abuse_bucket){2.0 * rate, now}; }

static size_t ip_hash(const char *ip, size_t nb)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a: a table index, not security */
    for (const char *p = ip; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return (size_t)(h % nb);
}

int pt_abuse_init(pt_server *s)
{
    s->ip_nbuckets = 1024;
    s->ip_buckets = calloc(s->ip_nbuckets, sizeof *s->ip_buckets);
    return s->ip_buckets ? 0 : PT_ERR_NOMEM;
}

void pt_abuse_free(pt_server *s)
{
    for (size_t i = 0; s->ip_buckets && i < s->ip_nbuckets; i++) {
        for (pt_ip_entry *e = s->ip_buckets[i], *n; e; e = n) {
            n = e->next;
            free(e);
        }
    }
    free(s->ip_buckets);
    s->ip_buckets = NULL;
}

static pt_ip_entry *ip_get(pt_server *s, const char *ip, bool create)
{
    size_t h = ip_hash(ip, s->ip_nbuckets);
    for (pt_ip_entry *e = s->ip_buckets[h]; e; e = e->next)
        if (strcmp(e->ip, ip) == 0) return e;
    if (!create) return NULL;
    pt_ip_entry *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    snprintf(e->ip, sizeof e->ip, "%s", ip);
    uint64_t now = uv_now(&s->loop);
    e->msgs = full(s->cfg.ip_rate_limit, now);
    e->accepts = full(s->cfg.ip_conn_rate, now);
    e->next = s->ip_buckets[h];
    s->ip_buckets[h] = e;
    return e;
}

int pt_abuse_admit(pt_server *s, pt_conn *c, const char **why)
{
    uint64_t now = uv_now(&s->loop);
    pt_ip_entry *e = ip_get(s, c->ip, true);
    if (!e) {
        *why = "out of memory";
        return PT_ERR_NOMEM;
    }
    if (e->banned_until_ms > now) {
        *why = "address banned for flooding";
        return PT_ERR_STATE;
    }
    if (e->conns >= s->cfg.max_conns_per_ip) {
        *why = "too many connections from this address";
        return PT_ERR_STATE;
    }
    refill(&e->accepts, s->cfg.ip_conn_rate, now);
    if (e->accepts.tokens < 1.0) {
        *why = "too many new connections from this address";
        return PT_ERR_STATE;
    }
    e->accepts.tokens -= 1.0;
    e->conns++;
    c->ipe = e;
    c->bucket = full(s->cfg.rate_limit, now);
    return 0;
}

void pt_abuse_release(pt_server *s, pt_conn *c)
{
    (void)s;
    if (!c->ipe) return;
    if (c->ipe->conns) c->ipe->conns--;
    c->ipe = NULL;
}

/* Takes n tokens from b: 0 within its rate; 1 overdrawn, *pause_ms (the longer of
 * this and what is already there) until it is back at zero; -1 flooding. */
static int draw(pt_abuse_bucket *b, uint32_t rate, uint64_t now, uint64_t n, uint32_t *pause_ms)
{
    refill(b, rate, now);
    b->tokens -= (double)n;
    if (b->tokens >= 0) return 0;
    if (b->tokens < -PT_ABUSE_FLOOD_BURSTS * 2.0 * rate) return -1;
    uint32_t ms = (uint32_t)(-b->tokens * 1000.0 / rate) + 1;
    if (ms > *pause_ms) *pause_ms = ms;
    return 1;
}

int pt_abuse_charge(pt_server *s, pt_conn *c, uint32_t *pause_ms)
{
    *pause_ms = 0;
    if (!c->sess) return 0;
    uint64_t n = pt_sess_messages_in(c->sess->sess);
    /* a resumed session carries its count over: charge only what is new here */
    if (n < c->msgs_seen) c->msgs_seen = n;
    uint64_t fresh = n - c->msgs_seen;
    c->msgs_seen = n;
    uint64_t now = uv_now(&s->loop);
    pt_ip_entry *e = c->ipe;
    int conn = draw(&c->bucket, s->cfg.rate_limit, now, fresh, pause_ms);
    int addr = e ? draw(&e->msgs, s->cfg.ip_rate_limit, now, fresh, pause_ms) : 0;
    if (conn >= 0 && addr >= 0) return conn || addr;
    if (!e) e = ip_get(s, c->ip, true);
    if (e) e->banned_until_ms = now + (uint64_t)s->cfg.ban_s * 1000u;
    /* the connection that took the address over the line goes; the address's bucket
     * is set back to one burst overdrawn, so that its other connections are paused
     * (about two seconds) at their next message, not closed one by one */
    if (addr < 0 && e) e->msgs.tokens = -2.0 * s->cfg.ip_rate_limit;
    s->bans++;
    if (conn < 0)
        pt_log_warn("conn %s: flooding (over %u messages/s): address %s banned for %u s", c->peer,
                    s->cfg.rate_limit, c->ip, s->cfg.ban_s);
    else
        pt_log_warn("conn %s: flooding: its address %s over %u messages/s from all its connections: "
                    "banned for %u s", c->peer, c->ip, s->cfg.ip_rate_limit, s->cfg.ban_s);
    return -1;
}

void pt_abuse_gc(pt_server *s)
{
    uint64_t now = uv_now(&s->loop);
    for (size_t i = 0; i < s->ip_nbuckets; i++) {
        for (pt_ip_entry **pp = &s->ip_buckets[i]; *pp;) {
            pt_ip_entry *e = *pp;
            /* forgotten once nothing of it is left: no connection, no ban, both
             * buckets full again (else a connect-close loop would start afresh) */
            refill(&e->msgs, s->cfg.ip_rate_limit, now);
            refill(&e->accepts, s->cfg.ip_conn_rate, now);
            if (e->conns == 0 && e->banned_until_ms <= now &&
                e->msgs.tokens >= 2.0 * s->cfg.ip_rate_limit &&
                e->accepts.tokens >= 2.0 * s->cfg.ip_conn_rate) {
                *pp = e->next;
                free(e);
            } else {
                pp = &e->next;
            }
        }
    }
}
