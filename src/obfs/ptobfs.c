/*
 * pt-obfs v1 (see pt_ptobfs.h and docs/PROTOCOL.md §10). Keys:
 *   K_hdr  = BLAKE2b-256(key = NK, "pt-obfs v1 header key")
 *   K_mac  = BLAKE2b-256(key = NK, "pt-obfs v1 mac key")
 *   K_sess = BLAKE2b-256(key = NK, "pt-obfs v1 session key")
 *   dir    = BLAKE2b-512(key = K_sess, "c2s" | "s2c" ‖ nonce ‖ tag) = k_len ‖ k_data
 * Record n of a direction: nonce(n) = u64le(n) ‖ 16 zero bytes,
 *   hdr  = u16be(body_len) XOR XChaCha20(k_len, nonce(n))[0..2)
 *   body = XChaCha20-Poly1305(k_data, nonce(n), ad = hdr)(u16be data_len ‖ data ‖ zeros)
 */
#include <pthread.h>
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "crypto/pt_crypto_stream.h"
#include "obfs/pt_ptobfs.h"

#define KEY 32
static const char LBL_HDR[] = "pt-obfs v1 header key";
static const char LBL_MAC[] = "pt-obfs v1 mac key";
static const char LBL_SESS[] = "pt-obfs v1 session key";
static const char LBL_FLIGHT[] = "pt-obfs v1 flight";
#define LBL_FLIGHT_LEN (sizeof LBL_FLIGHT - 1)

/* ---- replay cache ------------------------------------------------------------------ */

typedef struct replay_entry {
    uint8_t nonce[PT_OBFS_NONCE_LEN];
    uint64_t last_minute; /* the server minute after which the flight is stale anyway */
} replay_entry;

struct pt_obfs_replay {
    pthread_mutex_t mu;  /* one cache for the connections of every worker loop */
    replay_entry *ring;  /* FIFO in insertion order */
    size_t cap, head, count;
    uint32_t *tbl;       /* open addressing: ring index + 1, 0 = empty */
    size_t tsize;        /* power of two >= 2 * cap */
    uint64_t salt;       /* hash key, so that nonces cannot be chosen to collide */
};

pt_obfs_replay *pt_obfs_replay_new(size_t capacity)
{
    if (capacity == 0 || capacity > (1u << 24)) return NULL;
    pt_obfs_replay *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->cap = capacity;
    r->tsize = 16;
    while (r->tsize < 2 * capacity) r->tsize <<= 1;
    r->ring = calloc(capacity, sizeof *r->ring);
    r->tbl = calloc(r->tsize, sizeof *r->tbl);
    r->salt = pt_random_u64();
    pthread_mutex_init(&r->mu, NULL);
    if (!r->ring || !r->tbl) {
        pt_obfs_replay_free(r);
        return NULL;
    }
    return r;
}

void pt_obfs_replay_free(pt_obfs_replay *r)
{
    if (!r) return;
    pthread_mutex_destroy(&r->mu);
    free(r->ring);
    free(r->tbl);
    free(r);
}

size_t pt_obfs_replay_count(pt_obfs_replay *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->count;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static size_t home(const pt_obfs_replay *r, const uint8_t *nonce)
{
    uint64_t h = (pt_get_u64le(nonce) ^ r->salt) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (r->tsize - 1);
}

/* The table slot holding nonce, or the empty slot where it would go. */
static size_t find_slot(const pt_obfs_replay *r, const uint8_t *nonce)
{
    size_t i = home(r, nonce);
    while (r->tbl[i] && memcmp(r->ring[r->tbl[i] - 1].nonce, nonce, PT_OBFS_NONCE_LEN) != 0)
        i = (i + 1) & (r->tsize - 1);
    return i;
}

/* Backward-shift deletion keeps every probe chain unbroken. */
static void remove_slot(pt_obfs_replay *r, size_t i)
{
    size_t mask = r->tsize - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!r->tbl[j]) break;
        size_t k = home(r, r->ring[r->tbl[j] - 1].nonce);
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays) continue;
        r->tbl[i] = r->tbl[j];
        i = j;
    }
    r->tbl[i] = 0;
}

/* 0 when inserted, PT_ERR_REPLAY when present, PT_ERR_NOMEM when full of live entries. */
static int replay_insert(pt_obfs_replay *r, const uint8_t *nonce, uint64_t now_min,
                         uint64_t last_minute)
{
    while (r->count > 0 && r->ring[r->head].last_minute < now_min) {
        remove_slot(r, find_slot(r, r->ring[r->head].nonce));
        r->head = (r->head + 1) % r->cap;
        r->count--;
    }
    size_t slot = find_slot(r, nonce);
    if (r->tbl[slot]) return PT_ERR_REPLAY;
    if (r->count == r->cap) return PT_ERR_NOMEM;
    size_t idx = (r->head + r->count) % r->cap;
    memcpy(r->ring[idx].nonce, nonce, PT_OBFS_NONCE_LEN);
    r->ring[idx].last_minute = last_minute;
    r->tbl[slot] = (uint32_t)idx + 1;
    r->count++;
    return 0;
}

/* ---- connection -------------------------------------------------------------------- */

enum { ST_NEW, ST_FLIGHT, ST_OPEN, ST_REJECTED, ST_FAILED };

typedef struct dir_keys {
    uint8_t k_len[KEY], k_data[KEY];
    uint64_t n; /* records so far */
} dir_keys;

struct pt_obfs {
    const pt_env *env;
    bool server, decoy;
    int state;
    int err;                   /* ST_FAILED: final error; ST_REJECTED: the reason */
    uint16_t flight_pad_max, record_pad_max;
    uint64_t deadline;         /* monotonic ms; 0 once met */
    pt_obfs_replay *replay;
    uint8_t k_hdr[KEY], k_mac[KEY], k_sess[KEY];
    dir_keys tx, rx;
    uint8_t payload[PT_OBFS_PAYLOAD_LEN]; /* server: the client's */
    pt_buf in;                 /* received, not yet consumed (held for the decoy) */
};

void pt_obfs_config_init(pt_obfs_config *cfg, bool is_server)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->is_server = is_server;
    cfg->flight_pad_max = 512;
    cfg->record_pad_max = 255;
    cfg->timeout_ms = PT_OBFS_TIMEOUT_MS;
}

static uint64_t minute_now(const pt_obfs *o) { return pt_env_now_ms(o->env) / PT_OBFS_WINDOW_MS; }

static size_t random_upto(const pt_env *env, size_t max)
{
    if (max == 0) return 0;
    uint32_t span = (uint32_t)max + 1, limit = 65536u - 65536u % span;
    for (;;) {
        uint8_t b[2];
        pt_env_random(env, b, sizeof b);
        uint32_t v = (uint32_t)b[0] << 8 | b[1];
        if (v < limit) return v % span;
    }
}

/* tag = BLAKE2b-256(K_mac, label ‖ u64be(minute) ‖ flight[0..len)). */
static int flight_tag(const pt_obfs *o, uint8_t tag[static PT_OBFS_TAG_LEN], uint64_t minute,
                      const uint8_t *flight, size_t len)
{
    uint8_t msg[LBL_FLIGHT_LEN + 8 + PT_OBFS_HDR_LEN + PT_OBFS_FLIGHT_PAD_MAX];
    PT_ASSERT(len <= PT_OBFS_HDR_LEN + PT_OBFS_FLIGHT_PAD_MAX);
    memcpy(msg, LBL_FLIGHT, LBL_FLIGHT_LEN);
    pt_put_u64be(msg + LBL_FLIGHT_LEN, minute);
    memcpy(msg + LBL_FLIGHT_LEN + 8, flight, len);
    return pt_blake2b(tag, PT_OBFS_TAG_LEN, msg, LBL_FLIGHT_LEN + 8 + len, o->k_mac, KEY);
}

static int derive_dir(const pt_obfs *o, dir_keys *d, const char *which, const uint8_t *nonce,
                      const uint8_t *tag)
{
    uint8_t msg[3 + PT_OBFS_NONCE_LEN + PT_OBFS_TAG_LEN], out[64];
    memcpy(msg, which, 3);
    memcpy(msg + 3, nonce, PT_OBFS_NONCE_LEN);
    memcpy(msg + 3 + PT_OBFS_NONCE_LEN, tag, PT_OBFS_TAG_LEN);
    int rc = pt_blake2b(out, sizeof out, msg, sizeof msg, o->k_sess, KEY);
    memcpy(d->k_len, out, KEY);
    memcpy(d->k_data, out + KEY, KEY);
    d->n = 0;
    pt_wipe(out, sizeof out);
    return rc;
}

static int derive_session(pt_obfs *o, const uint8_t *nonce, const uint8_t *tag)
{
    int rc = derive_dir(o, o->server ? &o->rx : &o->tx, "c2s", nonce, tag);
    if (rc == 0) rc = derive_dir(o, o->server ? &o->tx : &o->rx, "s2c", nonce, tag);
    return rc;
}

static void record_nonce(uint8_t nonce[static PT_OBFS_NONCE_LEN], uint64_t n)
{
    memset(nonce, 0, PT_OBFS_NONCE_LEN);
    pt_put_u64le(nonce, n);
}

static int len_mask(const dir_keys *d, uint8_t mask[2], const uint8_t *nonce)
{
    static const uint8_t zero[2];
    return pt_xchacha20_xor(mask, zero, 2, nonce, 0, d->k_len);
}

int pt_obfs_client_start(pt_obfs *o, const uint8_t payload[static PT_OBFS_PAYLOAD_LEN], pt_buf *out)
{
    PT_ASSERT(o && !o->server && o->state == ST_NEW && out);
    size_t pad = random_upto(o->env, o->flight_pad_max);
    size_t body = PT_OBFS_HDR_LEN + pad;
    uint8_t *p = pt_buf_extend(out, body + PT_OBFS_TAG_LEN);
    if (!p) return PT_ERR_NOMEM;
    pt_env_random(o->env, p, PT_OBFS_NONCE_LEN);
    uint8_t clear[PT_OBFS_PAYLOAD_LEN + 2];
    memcpy(clear, payload, PT_OBFS_PAYLOAD_LEN);
    clear[PT_OBFS_PAYLOAD_LEN] = (uint8_t)(pad >> 8);
    clear[PT_OBFS_PAYLOAD_LEN + 1] = (uint8_t)pad;
    int rc = pt_xchacha20_xor(p + PT_OBFS_NONCE_LEN, clear, sizeof clear, p, 0, o->k_hdr);
    pt_wipe(clear, sizeof clear);
    pt_env_random(o->env, p + PT_OBFS_HDR_LEN, pad);
    if (rc == 0) rc = flight_tag(o, p + body, minute_now(o), p, body);
    if (rc == 0) rc = derive_session(o, p, p + body);
    if (rc != 0) {
        out->len -= body + PT_OBFS_TAG_LEN;
        return rc;
    }
    o->state = ST_OPEN;
    return 0;
}

int pt_obfs_seal(pt_obfs *o, pt_buf *out, const uint8_t *data, size_t len)
{
    PT_ASSERT(o && out && (len == 0 || data));
    if (o->state != ST_OPEN) return PT_ERR_STATE;
    if (len > PT_OBFS_RECORD_DATA_MAX) return PT_ERR_TOO_BIG;
    size_t pad = random_upto(o->env, o->record_pad_max);
    size_t inner = 2 + len + pad, body = inner + PT_AEAD_TAG_LEN;
    uint8_t *p = pt_buf_extend(out, 2 + body);
    if (!p) return PT_ERR_NOMEM;
    uint8_t nonce[PT_OBFS_NONCE_LEN], mask[2];
    record_nonce(nonce, o->tx.n);
    int rc = len_mask(&o->tx, mask, nonce);
    p[0] = (uint8_t)(body >> 8) ^ mask[0];
    p[1] = (uint8_t)body ^ mask[1];
    uint8_t *q = p + 2;
    q[0] = (uint8_t)(len >> 8);
    q[1] = (uint8_t)len;
    if (len) memmove(q + 2, data, len);
    memset(q + 2 + len, 0, pad);
    if (rc == 0) rc = pt_xchacha_seal(q, q, inner, p, 2, nonce, o->tx.k_data);
    if (rc != 0) {
        out->len -= 2 + body;
        return rc;
    }
    o->tx.n++;
    return 0;
}

static int fail(pt_obfs *o, int err, const char *why)
{
    o->state = ST_FAILED;
    o->err = err;
    pt_log_info("pt-obfs: %s: %s (%s)", o->server ? "server" : "client", why, pt_strerror(err));
    pt_buf_free(&o->in);
    return err;
}

/* Opens every whole record in o->in. 0 or a final error. */
static int open_records(pt_obfs *o, pt_buf *data)
{
    size_t off = 0;
    int rc = 0;
    while (o->in.len - off >= 2) {
        uint8_t nonce[PT_OBFS_NONCE_LEN], mask[2];
        record_nonce(nonce, o->rx.n);
        if ((rc = len_mask(&o->rx, mask, nonce)) != 0) break;
        const uint8_t *hdr = o->in.data + off;
        size_t body = (size_t)(hdr[0] ^ mask[0]) << 8 | (hdr[1] ^ mask[1]);
        if (body < 2 + PT_AEAD_TAG_LEN || body > PT_OBFS_RECORD_MAX - 2) {
            pt_buf_consume(&o->in, off);
            return fail(o, PT_ERR_DECODE, "record length out of range");
        }
        if (o->in.len - off - 2 < body) break;
        uint8_t *q = o->in.data + off + 2;
        if (pt_xchacha_open(q, q, body, hdr, 2, nonce, o->rx.k_data) != 0) {
            pt_buf_consume(&o->in, off);
            return fail(o, PT_ERR_AUTH, "record does not authenticate");
        }
        size_t dlen = (size_t)q[0] << 8 | q[1];
        if (dlen > body - 2 - PT_AEAD_TAG_LEN || dlen > PT_OBFS_RECORD_DATA_MAX) {
            pt_buf_consume(&o->in, off);
            return fail(o, PT_ERR_DECODE, "record data length exceeds the record");
        }
        if (dlen && pt_buf_append(data, q + 2, dlen) != 0) {
            rc = PT_ERR_NOMEM;
            break;
        }
        o->rx.n++;
        o->deadline = 0; /* the client's wait for the server is over */
        off += 2 + body;
    }
    pt_buf_consume(&o->in, off);
    return rc ? fail(o, rc, "internal failure") : 0;
}

/* Server: the verdict on a rejected flight. */
static int reject(pt_obfs *o, int reason, const char *why)
{
    o->state = ST_REJECTED;
    o->err = reason;
    o->deadline = 0;
    pt_log_info("pt-obfs: server: first flight rejected: %s (%s), %s", why, pt_strerror(reason),
                o->decoy ? "forwarding to the decoy" : "staying silent");
    if (!o->decoy) pt_buf_free(&o->in);
    return o->decoy ? PT_OBFS_DECOY : PT_OBFS_SILENT;
}

/* Server: judges the first flight once whole. */
static int read_flight(pt_obfs *o, pt_buf *data)
{
    if (o->in.len < PT_OBFS_HDR_LEN) return PT_OBFS_NEED_MORE;
    const uint8_t *f = o->in.data;
    uint8_t clear[PT_OBFS_PAYLOAD_LEN + 2];
    if (pt_xchacha20_xor(clear, f + PT_OBFS_NONCE_LEN, sizeof clear, f, 0, o->k_hdr) != 0)
        return reject(o, PT_ERR_CRYPTO, "internal failure");
    size_t pad = (size_t)clear[PT_OBFS_PAYLOAD_LEN] << 8 | clear[PT_OBFS_PAYLOAD_LEN + 1];
    if (pad > PT_OBFS_FLIGHT_PAD_MAX) {
        pt_wipe(clear, sizeof clear);
        return reject(o, PT_ERR_TOO_BIG, "padding length out of range");
    }
    size_t body = PT_OBFS_HDR_LEN + pad;
    if (o->in.len < body + PT_OBFS_TAG_LEN) {
        pt_wipe(clear, sizeof clear);
        return PT_OBFS_NEED_MORE;
    }
    /* The tag must verify for the server's minute or a neighbour; all three are
     * computed so that timing does not tell which. */
    uint64_t now = minute_now(o), client_min = 0;
    int ok = 0;
    for (uint64_t m = now - 1; m <= now + 1; m++) {
        uint8_t tag[PT_OBFS_TAG_LEN];
        if (flight_tag(o, tag, m, f, body) != 0) return reject(o, PT_ERR_CRYPTO, "internal failure");
        if (pt_ct_memcmp(tag, f + body, PT_OBFS_TAG_LEN) == 0) {
            ok = 1;
            client_min = m;
        }
    }
    if (!ok) {
        pt_wipe(clear, sizeof clear);
        return reject(o, PT_ERR_AUTH, "tag does not verify (wrong network key, clock or bytes)");
    }
    pthread_mutex_lock(&o->replay->mu);
    int rc = replay_insert(o->replay, f, now, client_min + 1);
    pthread_mutex_unlock(&o->replay->mu);
    if (rc != 0) {
        pt_wipe(clear, sizeof clear);
        return reject(o, rc, rc == PT_ERR_REPLAY ? "nonce replayed" : "replay cache full");
    }
    memcpy(o->payload, clear, PT_OBFS_PAYLOAD_LEN);
    pt_wipe(clear, sizeof clear);
    if ((rc = derive_session(o, f, f + body)) != 0) return fail(o, rc, "key derivation failed");
    pt_buf_consume(&o->in, body + PT_OBFS_TAG_LEN);
    o->state = ST_OPEN;
    o->deadline = 0;
    rc = open_records(o, data);
    return rc ? rc : PT_OBFS_ACCEPT;
}

int pt_obfs_input(pt_obfs *o, const uint8_t *in, size_t len, pt_buf *data)
{
    PT_ASSERT(o && data && (len == 0 || in));
    int rc = pt_obfs_check_timeout(o);
    if (rc != 0) return rc;
    switch (o->state) {
    case ST_NEW: return PT_ERR_STATE;
    case ST_FAILED: return o->err;
    case ST_REJECTED: return o->decoy ? PT_OBFS_DECOY : PT_OBFS_SILENT;
    default: break;
    }
    /* Before the verdict the flight is bounded: more bytes than a whole flight can
     * only be records that follow it, so buffering stops mattering after that. */
    if (len && pt_buf_append(&o->in, in, len) != 0) return fail(o, PT_ERR_NOMEM, "out of memory");
    if (o->state == ST_FLIGHT) return read_flight(o, data);
    return open_records(o, data);
}

int pt_obfs_check_timeout(pt_obfs *o)
{
    PT_ASSERT(o);
    if (o->deadline == 0 || o->state == ST_FAILED || o->state == ST_REJECTED) return 0;
    if (pt_env_mono_ms(o->env) < o->deadline) return 0;
    if (o->server) return reject(o, PT_ERR_TIMEOUT, "no whole first flight before the deadline");
    return fail(o, PT_ERR_TIMEOUT, "no record from the server before the deadline");
}

uint64_t pt_obfs_deadline_ms(const pt_obfs *o)
{
    return o->deadline && o->state != ST_FAILED && o->state != ST_REJECTED ? o->deadline
                                                                           : UINT64_MAX;
}

bool pt_obfs_accepted(const pt_obfs *o) { return o->server && o->state == ST_OPEN; }

const uint8_t *pt_obfs_client_payload(const pt_obfs *o)
{
    return o->server && o->state == ST_OPEN ? o->payload : NULL;
}

int pt_obfs_reject_reason(const pt_obfs *o) { return o->state == ST_REJECTED ? o->err : 0; }

const uint8_t *pt_obfs_held(const pt_obfs *o, size_t *len)
{
    bool held = o->state == ST_REJECTED && o->decoy;
    *len = held ? o->in.len : 0;
    return held ? o->in.data : NULL;
}

pt_obfs *pt_obfs_new(const pt_env *env, const pt_obfs_config *cfg, int *err)
{
    PT_ASSERT(env && cfg);
    int rc = PT_ERR_INVAL;
    pt_obfs *o = NULL;
    if (!cfg->network_key || cfg->flight_pad_max > PT_OBFS_FLIGHT_PAD_MAX ||
        cfg->record_pad_max > PT_OBFS_RECORD_PAD_MAX || (cfg->is_server && !cfg->replay))
        goto out;
    rc = PT_ERR_NOMEM;
    if (!(o = pt_secure_alloc(sizeof *o))) goto out;
    memset(o, 0, sizeof *o);
    o->env = env;
    o->server = cfg->is_server;
    o->decoy = cfg->reject_to_decoy;
    o->flight_pad_max = cfg->flight_pad_max;
    o->record_pad_max = cfg->record_pad_max;
    o->replay = cfg->replay;
    o->state = o->server ? ST_FLIGHT : ST_NEW;
    o->deadline = pt_env_mono_ms(env) + (cfg->timeout_ms ? cfg->timeout_ms : PT_OBFS_TIMEOUT_MS);
    pt_buf_init(&o->in);
    rc = pt_blake2b(o->k_hdr, KEY, (const uint8_t *)LBL_HDR, sizeof LBL_HDR - 1, cfg->network_key,
                    PT_OBFS_KEY_LEN);
    if (rc == 0)
        rc = pt_blake2b(o->k_mac, KEY, (const uint8_t *)LBL_MAC, sizeof LBL_MAC - 1,
                        cfg->network_key, PT_OBFS_KEY_LEN);
    if (rc == 0)
        rc = pt_blake2b(o->k_sess, KEY, (const uint8_t *)LBL_SESS, sizeof LBL_SESS - 1,
                        cfg->network_key, PT_OBFS_KEY_LEN);
out:
    if (rc != 0 && o) {
        pt_obfs_free(o);
        o = NULL;
    }
    if (err) *err = rc;
    return o;
}

void pt_obfs_free(pt_obfs *o)
{
    if (!o) return;
    pt_buf_free(&o->in);
    pt_secure_free(o);
}
