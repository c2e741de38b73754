/*
 * Abuse control: at most max_conns_per_ip connections per address, and a token
 * bucket per connection (rate_limit messages per second, bursts of twice that).
 * A connection that overdraws its bucket is throttled: the server stops reading
 * from it until the bucket is back at zero (TCP pushes back on the client). One
 * that overdraws by more than PT_ABUSE_FLOOD_BURSTS bursts at once is flooding:
 * its replies and acknowledgements are flushed, it is closed, and its address is
 * banned for ban_s seconds (the S2WMP rule); connections from a banned address are
 * closed as soon as they are accepted. Flushing the acknowledgements first means a
 * banned client does not come back with the same backlog.
 */
#include <stdlib.h>

#include "server/pt_server_int.h"

typedef struct pt_ip_entry {
    char ip[48];
    uint32_t conns;            /* open connections from this address */
    uint64_t banned_until_ms;  /* loop time; 0 when not banned */
    struct pt_ip_entry *next;
} pt_ip_entry;

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
    e->conns++;
    c->admitted = true;
    c->tokens = 2.0 * s->cfg.rate_limit;
    c->tokens_ms = now;
    return 0;
}

void pt_abuse_release(pt_server *s, pt_conn *c)
{
    if (!c->admitted) return;
    c->admitted = false;
    pt_ip_entry *e = ip_get(s, c->ip, false);
    if (e && e->conns) e->conns--;
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
    double burst = 2.0 * s->cfg.rate_limit;
    c->tokens += (double)(now - c->tokens_ms) * s->cfg.rate_limit / 1000.0;
    if (c->tokens > burst) c->tokens = burst;
    c->tokens_ms = now;
    c->tokens -= (double)fresh;
    if (c->tokens >= 0) return 0;
    if (c->tokens >= -PT_ABUSE_FLOOD_BURSTS * burst) {
        *pause_ms = (uint32_t)(-c->tokens * 1000.0 / s->cfg.rate_limit) + 1;
        return 1;
    }
    pt_ip_entry *e = ip_get(s, c->ip, true);
    if (e) e->banned_until_ms = now + (uint64_t)s->cfg.ban_s * 1000u;
    s->bans++;
    pt_log_warn("conn %s: flooding (over %u messages/s): address %s banned for %u s", c->peer,
                s->cfg.rate_limit, c->ip, s->cfg.ban_s);
    return -1;
}

void pt_abuse_gc(pt_server *s)
{
    uint64_t now = uv_now(&s->loop);
    for (size_t i = 0; i < s->ip_nbuckets; i++) {
        for (pt_ip_entry **pp = &s->ip_buckets[i]; *pp;) {
            pt_ip_entry *e = *pp;
            if (e->conns == 0 && e->banned_until_ms <= now) {
                *pp = e->next;
                free(e);
            } else {
                pp = &e->next;
            }
        }
    }
}
