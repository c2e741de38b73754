/*
 * LAN discovery (pt_disc.h): the packet codec, record signatures, freshness, the
 * address helpers and the reply limiter. Pure functions and plain memory: no
 * socket, no clock, no randomness (the callers pass the time in).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "discovery/pt_disc.h"

static const uint8_t magic[3] = {'P', 'T', 'D'};
static const char sig_label[8] = "PTD-REC1"; /* not NUL-terminated on purpose */

/* ---- the codec ------------------------------------------------------------------------------- */

static size_t type_len(uint8_t type)
{
    switch (type) {
    case PT_DISC_BSM: return PT_DISC_BSM_LEN;
    case PT_DISC_BSR: return PT_DISC_BSR_LEN;
    case PT_DISC_BPM: return PT_DISC_BPM_LEN;
    case PT_DISC_BPR: return PT_DISC_BPR_LEN;
    default: return 0;
    }
}

static void record_put(uint8_t *p, const pt_disc_record *r)
{
    memcpy(p, r->user_id, 16);
    memcpy(p + 16, r->device, 32);
    memcpy(p + 48, r->addr, 16);
    p[64] = (uint8_t)r->port;
    p[65] = (uint8_t)(r->port >> 8);
    pt_put_u64le(p + 66, r->ts_ms);
    memcpy(p + 74, r->sig, 64);
}

static void record_get(pt_disc_record *r, const uint8_t *p)
{
    memcpy(r->user_id, p, 16);
    memcpy(r->device, p + 16, 32);
    memcpy(r->addr, p + 48, 16);
    r->port = (uint16_t)(p[64] | p[65] << 8);
    r->ts_ms = pt_get_u64le(p + 66);
    memcpy(r->sig, p + 74, 64);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++) acc |= p[i];
    return acc == 0;
}

/* The encoder writes the canonical flags (BPM: only the record bit; others: none), so
 * whatever it produces, pt_disc_decode() accepts. */
int pt_disc_encode(const pt_disc_pkt *p, uint8_t *out, size_t cap, size_t *len)
{
    PT_ASSERT(p && out && len);
    size_t n = type_len(p->type);
    if (n == 0 || cap < n) return PT_ERR_INVAL;
    memset(out, 0, n);
    memcpy(out, magic, sizeof magic);
    out[3] = PT_DISC_VERSION;
    out[4] = p->type;
    out[5] = p->type == PT_DISC_BPM ? (uint8_t)(p->flags & PT_DISC_FLAG_RECORD) : 0;
    /* out[6..7]: reserved, zero */
    memcpy(out + PT_DISC_HDR_LEN, p->nonce, 16);
    uint8_t *body = out + PT_DISC_HDR_LEN + 16;
    switch (p->type) {
    case PT_DISC_BSM: break;
    case PT_DISC_BSR:
        memcpy(body, p->server_key, 32);
        body[32] = (uint8_t)p->port;
        body[33] = (uint8_t)(p->port >> 8);
        body[34] = p->obfs;
        break;
    case PT_DISC_BPM:
        if (out[5] & PT_DISC_FLAG_RECORD) record_put(body, &p->rec);
        break;
    case PT_DISC_BPR: record_put(body, &p->rec); break;
    }
    *len = n;
    return 0;
}

int pt_disc_decode(const uint8_t *in, size_t len, pt_disc_pkt *p)
{
    PT_ASSERT(p && (in || len == 0));
    memset(p, 0, sizeof *p);
    if (len < PT_DISC_HDR_LEN || memcmp(in, magic, sizeof magic) != 0) return PT_ERR_DECODE;
    if (in[3] != PT_DISC_VERSION) return PT_ERR_VERSION;
    uint8_t type = in[4], flags = in[5];
    size_t n = type_len(type);
    if (n == 0 || len != n) return PT_ERR_DECODE;
    if (in[6] != 0 || in[7] != 0) return PT_ERR_DECODE;
    if (flags != 0 && !(type == PT_DISC_BPM && flags == PT_DISC_FLAG_RECORD)) return PT_ERR_DECODE;
    const uint8_t *body = in + PT_DISC_HDR_LEN + 16;
    switch (type) {
    case PT_DISC_BSM:
        if (!all_zero(body, 40)) return PT_ERR_DECODE;
        break;
    case PT_DISC_BSR:
        if (!all_zero(body + 35, 5)) return PT_ERR_DECODE;
        memcpy(p->server_key, body, 32);
        p->port = (uint16_t)(body[32] | body[33] << 8);
        p->obfs = body[34];
        break;
    case PT_DISC_BPM:
        if (!(flags & PT_DISC_FLAG_RECORD)) {
            if (!all_zero(body, PT_DISC_RECORD_LEN)) return PT_ERR_DECODE;
            break;
        }
        record_get(&p->rec, body);
        break;
    case PT_DISC_BPR: record_get(&p->rec, body); break;
    }
    p->type = type;
    p->flags = flags;
    memcpy(p->nonce, in + PT_DISC_HDR_LEN, 16);
    return 0;
}

/* ---- record signatures ------------------------------------------------------------------------- */

#define SIG_MSG_LEN (sizeof sig_label + 1 + 16 + 16 + 32 + 16 + 2 + 8) /* 99 */

static void sig_message(uint8_t m[static SIG_MSG_LEN], const pt_disc_record *r, uint8_t type,
                        const uint8_t nonce[16])
{
    uint8_t *q = m;
    memcpy(q, sig_label, sizeof sig_label), q += sizeof sig_label;
    *q++ = type;
    memcpy(q, nonce, 16), q += 16;
    memcpy(q, r->user_id, 16), q += 16;
    memcpy(q, r->device, 32), q += 32;
    memcpy(q, r->addr, 16), q += 16;
    *q++ = (uint8_t)r->port;
    *q++ = (uint8_t)(r->port >> 8);
    pt_put_u64le(q, r->ts_ms);
}

int pt_disc_record_sign(pt_disc_record *r, uint8_t type, const uint8_t nonce[16], const uint8_t id_sk[64])
{
    PT_ASSERT(r && nonce && id_sk);
    uint8_t m[SIG_MSG_LEN];
    sig_message(m, r, type, nonce);
    return pt_ed25519_sign(r->sig, m, sizeof m, id_sk) == 0 ? 0 : PT_ERR_CRYPTO;
}

int pt_disc_record_verify(const pt_disc_record *r, uint8_t type, const uint8_t nonce[16],
                          const uint8_t id_pk[32])
{
    PT_ASSERT(r && nonce && id_pk);
    uint8_t m[SIG_MSG_LEN];
    sig_message(m, r, type, nonce);
    return pt_ed25519_verify(r->sig, m, sizeof m, id_pk) == 0 ? 0 : PT_ERR_AUTH;
}

bool pt_disc_fresh(uint64_t ts_ms, uint64_t now_ms)
{
    uint64_t d = ts_ms > now_ms ? ts_ms - now_ms : now_ms - ts_ms;
    return d <= PT_DISC_MAX_SKEW_MS;
}

/* ---- addresses --------------------------------------------------------------------------------- */

static const uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int pt_disc_addr_from_sockaddr(const struct sockaddr *sa, uint8_t addr[16], uint16_t *port)
{
    PT_ASSERT(sa && addr);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memcpy(addr, v4_prefix, 12);
        memcpy(addr + 12, &in->sin_addr, 4);
        if (port) *port = ntohs(in->sin_port);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(addr, &in6->sin6_addr, 16);
        if (port) *port = ntohs(in6->sin6_port);
        return 0;
    }
    return PT_ERR_INVAL;
}

void pt_disc_addr_to_sockaddr(const uint8_t addr[16], uint16_t port, uint32_t scope_id,
                              struct sockaddr_storage *ss, socklen_t *sslen)
{
    PT_ASSERT(addr && ss && sslen);
    memset(ss, 0, sizeof *ss);
    if (memcmp(addr, v4_prefix, 12) == 0) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        memcpy(&in->sin_addr, addr + 12, 4);
        *sslen = sizeof *in;
        return;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    memcpy(&in6->sin6_addr, addr, 16);
    in6->sin6_scope_id = scope_id;
    *sslen = sizeof *in6;
}

void pt_disc_addr_format(const uint8_t addr[16], char *out, size_t cap)
{
    PT_ASSERT(addr && out && cap >= 64);
    const char *ok = memcmp(addr, v4_prefix, 12) == 0 ? inet_ntop(AF_INET, addr + 12, out, (socklen_t)cap)
                                                       : inet_ntop(AF_INET6, addr, out, (socklen_t)cap);
    if (!ok) snprintf(out, cap, "?");
}

/* ---- the limiter ------------------------------------------------------------------------------- */
/*
 * Tokens are counted in thousandths, so that a refill of per_s tokens a second is
 * per_s thousandths a millisecond: integers only, no drift. The per-source buckets
 * live in a fixed table of `slots` entries, found through a hash of the address and
 * kept in least-recently-used order; a new source takes the oldest entry (and starts
 * with a full burst: the global bucket is what bounds many sources together).
 * Nothing is allocated after pt_disc_limiter_new().
 */
#define MILLI 1000u
#define NIL UINT32_MAX

typedef struct lim_bucket {
    uint64_t tokens; /* thousandths of a token */
    uint64_t last_ms; /* time of the last refill */
} lim_bucket;

typedef struct lim_slot {
    uint8_t addr[16];
    bool used;
    lim_bucket b;
    uint32_t hnext;           /* hash chain */
    uint32_t prev, next;      /* LRU list: head is the most recent */
} lim_slot;

struct pt_disc_limiter {
    uint64_t cap_milli;       /* per source: burst tokens */
    uint64_t rate;            /* per source: thousandths per ms (= tokens per s) */
    uint64_t gcap_milli;      /* global: one second of global_per_s */
    uint64_t grate;
    lim_bucket global;
    bool started;             /* global.last_ms is set */
    uint32_t nslots, nbuckets;
    uint32_t head, tail;      /* LRU list ends; NIL when empty */
    uint32_t nused;
    uint32_t *buckets;        /* hash heads */
    lim_slot *slots;
};

pt_disc_limiter *pt_disc_limiter_new(unsigned burst, unsigned per_s, unsigned global_per_s, unsigned slots)
{
    PT_ASSERT(burst >= 1 && global_per_s >= 1 && slots >= 1 && slots < (1u << 24));
    pt_disc_limiter *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->cap_milli = (uint64_t)burst * MILLI;
    l->rate = per_s;
    l->gcap_milli = (uint64_t)global_per_s * MILLI;
    l->grate = global_per_s;
    l->global.tokens = l->gcap_milli;
    l->nslots = slots;
    l->nbuckets = 1;
    while (l->nbuckets < slots) l->nbuckets <<= 1;
    l->head = l->tail = NIL;
    l->buckets = malloc(l->nbuckets * sizeof *l->buckets);
    l->slots = calloc(slots, sizeof *l->slots);
    if (!l->buckets || !l->slots) {
        pt_disc_limiter_free(l);
        return NULL;
    }
    for (uint32_t i = 0; i < l->nbuckets; i++) l->buckets[i] = NIL;
    return l;
}

void pt_disc_limiter_free(pt_disc_limiter *l)
{
    if (!l) return;
    free(l->buckets);
    free(l->slots);
    free(l);
}

static void refill(lim_bucket *b, uint64_t cap, uint64_t rate, uint64_t now_ms)
{
    if (now_ms <= b->last_ms) {
        b->last_ms = now_ms; /* a clock that went back: no refill, restart from here */
        return;
    }
    uint64_t elapsed = now_ms - b->last_ms;
    b->last_ms = now_ms;
    uint64_t missing = cap - b->tokens;
    if (rate == 0 || missing == 0) return;
    /* elapsed * rate cannot overflow below this bound */
    if (elapsed > missing / rate) b->tokens = cap;
    else b->tokens += elapsed * rate;
    if (b->tokens > cap) b->tokens = cap;
}

static uint32_t addr_hash(const uint8_t a[16], uint32_t nb)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++) h = (h ^ a[i]) * 16777619u;
    return h & (nb - 1);
}

static void lru_unlink(pt_disc_limiter *l, uint32_t i)
{
    lim_slot *s = &l->slots[i];
    if (s->prev != NIL) l->slots[s->prev].next = s->next;
    else l->head = s->next;
    if (s->next != NIL) l->slots[s->next].prev = s->prev;
    else l->tail = s->prev;
    s->prev = s->next = NIL;
}

static void lru_push_front(pt_disc_limiter *l, uint32_t i)
{
    lim_slot *s = &l->slots[i];
    s->prev = NIL;
    s->next = l->head;
    if (l->head != NIL) l->slots[l->head].prev = i;
    l->head = i;
    if (l->tail == NIL) l->tail = i;
}

static void hash_remove(pt_disc_limiter *l, uint32_t i)
{
    uint32_t *pp = &l->buckets[addr_hash(l->slots[i].addr, l->nbuckets)];
    while (*pp != NIL && *pp != i) pp = &l->slots[*pp].hnext;
    if (*pp == i) *pp = l->slots[i].hnext;
}

/* The slot of addr, created (evicting the least recently used) when it has none. */
static lim_slot *slot_get(pt_disc_limiter *l, const uint8_t addr[16], uint64_t now_ms)
{
    uint32_t h = addr_hash(addr, l->nbuckets);
    for (uint32_t i = l->buckets[h]; i != NIL; i = l->slots[i].hnext) {
        if (memcmp(l->slots[i].addr, addr, 16) == 0) {
            if (l->head != i) {
                lru_unlink(l, i);
                lru_push_front(l, i);
            }
            return &l->slots[i];
        }
    }
    uint32_t i;
    if (l->nused < l->nslots) {
        i = l->nused++;
    } else {
        i = l->tail;
        lru_unlink(l, i);
        hash_remove(l, i);
    }
    lim_slot *s = &l->slots[i];
    memcpy(s->addr, addr, 16);
    s->used = true;
    s->b.tokens = l->cap_milli;
    s->b.last_ms = now_ms;
    s->hnext = l->buckets[h];
    l->buckets[h] = i;
    lru_push_front(l, i);
    return s;
}

bool pt_disc_limiter_allow(pt_disc_limiter *l, const uint8_t addr[16], uint64_t now_ms)
{
    PT_ASSERT(l && addr);
    if (!l->started) {
        l->global.last_ms = now_ms;
        l->started = true;
    }
    refill(&l->global, l->gcap_milli, l->grate, now_ms);
    lim_slot *s = slot_get(l, addr, now_ms);
    refill(&s->b, l->cap_milli, l->rate, now_ms);
    if (s->b.tokens < MILLI || l->global.tokens < MILLI) return false;
    s->b.tokens -= MILLI;
    l->global.tokens -= MILLI;
    return true;
}
