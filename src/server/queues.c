/*
 * Queue accounting: how many queue rows each device has, kept in memory.
 *
 * The quota check of every send and the metrics' queue gauge read these counts
 * instead of running count(*) on the store. They are loaded once when the server
 * starts (nothing is in flight then, so the store's count is exact) and from then
 * on follow every change the loop learns of: a send's rows when it is submitted
 * (given back if its commit fails), other items' rows after their commit, and
 * deleted rows after messages.received commits. Only devices with rows have an
 * entry.
 */
#include <stdlib.h>

#include "server/pt_server_int.h"

struct pt_queue_ent {
    uint8_t pk[32];                 /* the device */
    uint32_t n;                     /* its queue rows */
    pt_queue_ent *next;             /* hash chain */
};

static size_t q_hash(const uint8_t pk[32], size_t nb) { return (size_t)(pt_get_u64le(pk + 8) % nb); }

static pt_queue_ent *q_find(pt_server *s, const uint8_t pk[32])
{
    for (pt_queue_ent *e = s->queue_buckets[q_hash(pk, s->queue_nbuckets)]; e; e = e->next)
        if (memcmp(e->pk, pk, 32) == 0) return e;
    return NULL;
}

static void q_grow(pt_server *s)
{
    size_t nb = s->queue_nbuckets * 2;
    pt_queue_ent **b = calloc(nb, sizeof *b);
    if (!b) return; /* longer chains, still correct */
    for (size_t i = 0; i < s->queue_nbuckets; i++) {
        for (pt_queue_ent *e = s->queue_buckets[i], *next; e; e = next) {
            next = e->next;
            size_t h = q_hash(e->pk, nb);
            e->next = b[h];
            b[h] = e;
        }
    }
    free(s->queue_buckets);
    s->queue_buckets = b;
    s->queue_nbuckets = nb;
}

static pt_queue_ent *q_get(pt_server *s, const uint8_t pk[32])
{
    pt_queue_ent *e = q_find(s, pk);
    if (e) return e;
    if (s->queue_devices >= s->queue_nbuckets) q_grow(s);
    if (!(e = calloc(1, sizeof *e))) return NULL;
    memcpy(e->pk, pk, 32);
    size_t h = q_hash(pk, s->queue_nbuckets);
    e->next = s->queue_buckets[h];
    s->queue_buckets[h] = e;
    s->queue_devices++;
    return e;
}

static void q_drop(pt_server *s, pt_queue_ent *e)
{
    pt_queue_ent **pp = &s->queue_buckets[q_hash(e->pk, s->queue_nbuckets)];
    while (*pp != e) pp = &(*pp)->next;
    *pp = e->next;
    free(e);
    s->queue_devices--;
}

static void q_change(pt_server *s, const uint8_t pk[32], int64_t delta)
{
    pt_queue_ent *e = delta > 0 ? q_get(s, pk) : q_find(s, pk);
    if (!e) {
        if (delta > 0) pt_log_warn("queue accounting: out of memory; a device's quota is undercounted");
        return;
    }
    int64_t n = (int64_t)e->n + delta;
    if (n < 0) n = 0; /* never below zero, whatever the store said */
    s->queue_rows += n - (int64_t)e->n;
    e->n = (uint32_t)n;
    if (n == 0) q_drop(s, e);
}

int pt_srv_queues_init(pt_server *s)
{
    s->queue_nbuckets = 1024;
    if (!(s->queue_buckets = calloc(s->queue_nbuckets, sizeof *s->queue_buckets))) return PT_ERR_NOMEM;
    sqlite3_stmt *st;
    int rc = pt_db_prepare(pt_db_reader(s->db),
                           "SELECT device_key, count(*) FROM queue GROUP BY device_key", &st);
    if (rc) return rc;
    while ((rc = pt_db_step(st)) == 1) {
        if (sqlite3_column_bytes(st, 0) != 32) continue;
        q_change(s, sqlite3_column_blob(st, 0), sqlite3_column_int64(st, 1));
    }
    sqlite3_finalize(st);
    if (rc < 0) return rc;
    pt_log_debug("queues: %lld rows for %zu devices", (long long)s->queue_rows, s->queue_devices);
    return 0;
}

void pt_srv_queues_free(pt_server *s)
{
    for (size_t i = 0; s->queue_buckets && i < s->queue_nbuckets; i++) {
        for (pt_queue_ent *e = s->queue_buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(s->queue_buckets);
    s->queue_buckets = NULL;
    s->queue_devices = 0;
    s->queue_rows = 0;
}

uint32_t pt_srv_queue_len(pt_server *s, const uint8_t device[32])
{
    pt_queue_ent *e = q_find(s, device);
    return e ? e->n : 0;
}

void pt_srv_queue_add(pt_server *s, const pt_srv_devlist *l, int delta)
{
    for (size_t i = 0; i < l->n; i++) q_change(s, l->pk[i], delta);
}

void pt_srv_queue_sub(pt_server *s, const uint8_t device[32], uint32_t n)
{
    if (n) q_change(s, device, -(int64_t)n);
}

bool pt_srv_queue_any_full(pt_server *s, const pt_srv_devlist *l, uint32_t quota)
{
    for (size_t i = 0; i < l->n; i++)
        if (pt_srv_queue_len(s, l->pk[i]) >= quota) return true;
    return false;
}
