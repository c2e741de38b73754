/* Megolm sender-key sessions, byte-compatible with libolm (see pt_megolm.h and
 * docs/PROTOCOL.md §8.2). Every primitive comes from src/crypto. */
#include "e2e/pt_megolm.h"

#include <stdlib.h>

#define KDF_INFO "MEGOLM_KEYS"
#define AES_KEY_LEN 32
#define MAC_KEY_LEN 32
#define IV_OFF (AES_KEY_LEN + MAC_KEY_LEN)
#define DERIVED_LEN (IV_OFF + PT_AES_BLOCK) /* aes key, mac key, iv */
#define TAG_INDEX 0x08                      /* field 1, varint */
#define TAG_CIPHERTEXT 0x12                 /* field 2, length-delimited */
#define TRAILER_LEN (PT_MEGOLM_MAC_LEN + PT_MEGOLM_SIG_LEN)
#define CHECKSUM_LEN PT_SHA256_LEN
#define STATE_VERSION 1
#define OUT_STATE_LEN (4 + 1 + 4 + PT_MEGOLM_RATCHET_LEN + PT_ED25519_SEED_LEN + CHECKSUM_LEN)
#define IN_STATE_FIXED                                                                             \
    (4 + 1 + 2 * (4 + PT_MEGOLM_RATCHET_LEN) + PT_MEGOLM_ID_LEN + 1 + 2 + CHECKSUM_LEN)
#define IN_FLAG_VERIFIED 1u

/* ---- the ratchet --------------------------------------------------------------- */

/* R(to) = HMAC-SHA-256(key = R(from), msg = the byte `to`), as libolm's rehash_part. */
static int rehash(pt_megolm_ratchet *r, int from, int to)
{
    uint8_t seed = (uint8_t)to, tmp[PT_SHA256_LEN];
    int rc = pt_hmac(PT_HASH_SHA256, tmp, r->data[from], PT_MEGOLM_PART_LEN, &seed, 1);
    if (rc == 0) memcpy(r->data[to], tmp, PT_MEGOLM_PART_LEN);
    pt_wipe(tmp, sizeof tmp);
    return rc;
}

int pt_megolm_ratchet_advance(pt_megolm_ratchet *r)
{
    uint32_t mask = 0x00ffffffu;
    int h = 0, rc = 0;
    r->counter++;
    /* h = the highest part whose counter byte changed: R(h) rolls, and every
     * lower part is reseeded from it. */
    while (h < PT_MEGOLM_PARTS && (r->counter & mask)) {
        h++;
        mask >>= 8;
    }
    for (int i = PT_MEGOLM_PARTS - 1; rc == 0 && i >= h; i--)
        rc = rehash(r, h, i);
    return rc;
}

int pt_megolm_ratchet_advance_to(pt_megolm_ratchet *r, uint32_t to)
{
    PT_ASSERT(to >= r->counter);
    for (int j = 0; j < PT_MEGOLM_PARTS; j++) {
        int shift = (PT_MEGOLM_PARTS - j - 1) * 8;
        uint32_t mask = ~(uint32_t)0 << shift;
        unsigned steps = ((to >> shift) - (r->counter >> shift)) & 0xffu;
        if (steps == 0) continue; /* to >= counter, so no wrap-around case */
        /* All but the last step only roll R(j); the last also reseeds R(j+1..3). */
        for (; steps > 1; steps--)
            if (rehash(r, j, j) != 0) return PT_ERR_CRYPTO;
        for (int k = PT_MEGOLM_PARTS - 1; k >= j; k--)
            if (rehash(r, j, k) != 0) return PT_ERR_CRYPTO;
        r->counter = to & mask;
    }
    return 0;
}

/* aes key || mac key || iv = HKDF-SHA-256(salt = none, ikm = R0..R3, "MEGOLM_KEYS"). */
static int derive(uint8_t keys[static DERIVED_LEN], const pt_megolm_ratchet *r)
{
    return pt_hkdf(PT_HASH_SHA256, keys, DERIVED_LEN, NULL, 0, &r->data[0][0],
                   PT_MEGOLM_RATCHET_LEN, (const uint8_t *)KDF_INFO, sizeof KDF_INFO - 1);
}

/* ---- varints and the message codec --------------------------------------------- */

static int put_varint(pt_buf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        tmp[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) tmp[n] |= 0x80;
        n++;
    } while (v);
    return pt_buf_append(b, tmp, n);
}

/* A varint of at most 64 bits; PT_ERR_DECODE when unterminated or longer. */
static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p == end) return PT_ERR_DECODE;
        uint8_t c = *(*p)++;
        if (shift == 63 && (c & 0x7e)) return PT_ERR_DECODE; /* beyond 64 bits */
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return PT_ERR_DECODE;
}

int pt_megolm_msg_decode(pt_megolm_msg *m, const uint8_t *buf, size_t len)
{
    memset(m, 0, sizeof *m);
    if (len > PT_MEGOLM_MAX_MESSAGE) return PT_ERR_TOO_BIG;
    if (len < 1 + TRAILER_LEN) return PT_ERR_DECODE;
    if (buf[0] != PT_MEGOLM_MSG_VERSION) return PT_ERR_VERSION;
    const uint8_t *p = buf + 1, *end = buf + len - TRAILER_LEN;
    bool has_index = false, has_ct = false;
    while (p < end) {
        uint8_t first = *p;
        uint64_t tag, v;
        if (get_varint(&p, end, &tag) != 0) return PT_ERR_DECODE;
        if (first == TAG_INDEX) {
            if (has_index || get_varint(&p, end, &v) != 0 || v > UINT32_MAX) return PT_ERR_DECODE;
            m->index = (uint32_t)v;
            has_index = true;
        } else if (first == TAG_CIPHERTEXT) {
            if (has_ct || get_varint(&p, end, &v) != 0 || v > (uint64_t)(end - p))
                return PT_ERR_DECODE;
            m->ciphertext = p;
            m->ciphertext_len = (size_t)v;
            p += v;
            has_ct = true;
        } else if ((first & 7) == 0) { /* an unknown varint field, skipped as libolm does */
            if (get_varint(&p, end, &v) != 0) return PT_ERR_DECODE;
        } else if ((first & 7) == 2) { /* an unknown length-delimited field */
            if (get_varint(&p, end, &v) != 0 || v > (uint64_t)(end - p)) return PT_ERR_DECODE;
            p += v;
        } else {
            return PT_ERR_DECODE;
        }
    }
    if (!has_index || !has_ct) return PT_ERR_DECODE;
    if (m->ciphertext_len > PT_MEGOLM_MAX_CIPHERTEXT) return PT_ERR_TOO_BIG;
    if (m->ciphertext_len == 0 || m->ciphertext_len % PT_AES_BLOCK) return PT_ERR_DECODE;
    m->version = buf[0];
    m->mac_covered_len = len - TRAILER_LEN;
    m->mac = buf + m->mac_covered_len;
    m->signed_len = len - PT_MEGOLM_SIG_LEN;
    m->sig = buf + m->signed_len;
    return 0;
}

/* ---- key formats ------------------------------------------------------------------ */

/* version || u32be counter || R0..R3 || public key: the first 165 bytes of both. */
static void put_key_body(uint8_t *p, uint8_t version, const pt_megolm_ratchet *r,
                         const uint8_t pk[static PT_MEGOLM_ID_LEN])
{
    p[0] = version;
    p[1] = (uint8_t)(r->counter >> 24);
    p[2] = (uint8_t)(r->counter >> 16);
    p[3] = (uint8_t)(r->counter >> 8);
    p[4] = (uint8_t)r->counter;
    memcpy(p + 5, r->data, PT_MEGOLM_RATCHET_LEN);
    memcpy(p + 5 + PT_MEGOLM_RATCHET_LEN, pk, PT_MEGOLM_ID_LEN);
}

static uint32_t get_u32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void get_ratchet(pt_megolm_ratchet *r, const uint8_t *p, uint32_t counter)
{
    memcpy(r->data, p, PT_MEGOLM_RATCHET_LEN);
    r->counter = counter;
}

/* ---- outbound sessions ------------------------------------------------------------- */

struct pt_megolm_out {
    pt_megolm_ratchet ratchet;         /* the value for the next message */
    uint8_t seed[PT_ED25519_SEED_LEN]; /* the signing key's seed, kept for storage */
    uint8_t sk[PT_ED25519_SK_LEN];     /* signing key */
    uint8_t pk[PT_ED25519_PK_LEN];     /* session id */
};

static pt_megolm_out *out_alloc(pt_err *err)
{
    pt_megolm_out *s = pt_secure_alloc(sizeof *s);
    if (!s && err) *err = PT_ERR_NOMEM;
    if (s) memset(s, 0, sizeof *s);
    return s;
}

pt_megolm_out *pt_megolm_out_new(const pt_env *env, pt_err *err)
{
    PT_ASSERT(env);
    pt_megolm_out *s = out_alloc(err);
    if (!s) return NULL;
    /* libolm's order: 128 bytes of ratchet, then the Ed25519 seed. */
    pt_env_random(env, s->ratchet.data, PT_MEGOLM_RATCHET_LEN);
    pt_env_random(env, s->seed, sizeof s->seed);
    s->ratchet.counter = 0;
    if (pt_ed25519_seed_keypair(s->pk, s->sk, s->seed) != 0) {
        pt_megolm_out_free(s);
        if (err) *err = PT_ERR_CRYPTO;
        return NULL;
    }
    if (err) *err = PT_OK;
    return s;
}

void pt_megolm_out_free(pt_megolm_out *s)
{
    if (s) pt_secure_free(s);
}

uint32_t pt_megolm_out_index(const pt_megolm_out *s)
{
    return s->ratchet.counter;
}

void pt_megolm_out_id(const pt_megolm_out *s, uint8_t id[static PT_MEGOLM_ID_LEN])
{
    memcpy(id, s->pk, PT_MEGOLM_ID_LEN);
}

int pt_megolm_out_session_key(const pt_megolm_out *s, uint8_t key[static PT_MEGOLM_SESSION_KEY_LEN])
{
    put_key_body(key, PT_MEGOLM_KEY_VERSION, &s->ratchet, s->pk);
    return pt_ed25519_sign(key + PT_MEGOLM_EXPORT_LEN, key, PT_MEGOLM_EXPORT_LEN, s->sk);
}

int pt_megolm_out_encrypt(pt_megolm_out *s, pt_buf *out, const uint8_t *pt, size_t len)
{
    PT_ASSERT(s && out && (pt || len == 0));
    if (len > PT_MEGOLM_MAX_PLAINTEXT) return PT_ERR_TOO_BIG;
    if (s->ratchet.counter == UINT32_MAX) return PT_ERR_STATE;
    size_t start = out->len, ct_len = (len / PT_AES_BLOCK + 1) * PT_AES_BLOCK;
    uint8_t keys[DERIVED_LEN], mac[PT_SHA256_LEN], sig[PT_MEGOLM_SIG_LEN];
    const uint8_t *aes_key = keys, *mac_key = keys + AES_KEY_LEN, *iv = keys + IV_OFF;
    pt_megolm_ratchet next = s->ratchet;
    uint8_t head[2] = {PT_MEGOLM_MSG_VERSION, TAG_INDEX}, ct_tag = TAG_CIPHERTEXT;
    int rc = derive(keys, &s->ratchet);
    if (rc == 0) rc = pt_buf_append(out, head, sizeof head);
    if (rc == 0) rc = put_varint(out, s->ratchet.counter);
    if (rc == 0) rc = pt_buf_append(out, &ct_tag, 1);
    if (rc == 0) rc = put_varint(out, ct_len);
    size_t ct_at = out->len;
    if (rc == 0) rc = pt_aes256_cbc_encrypt(out, pt, len, aes_key, iv);
    if (rc == 0 && out->len - ct_at != ct_len) rc = PT_ERR_CRYPTO;
    if (rc == 0)
        rc =
            pt_hmac(PT_HASH_SHA256, mac, mac_key, MAC_KEY_LEN, out->data + start, out->len - start);
    if (rc == 0) rc = pt_buf_append(out, mac, PT_MEGOLM_MAC_LEN);
    if (rc == 0) rc = pt_ed25519_sign(sig, out->data + start, out->len - start, s->sk);
    if (rc == 0) rc = pt_buf_append(out, sig, sizeof sig);
    if (rc == 0) rc = pt_megolm_ratchet_advance(&next);
    if (rc == 0)
        s->ratchet = next;
    else if (out->len > start) {
        pt_wipe(out->data + start, out->len - start);
        out->len = start;
    }
    pt_wipe(keys, sizeof keys);
    pt_wipe(mac, sizeof mac);
    pt_wipe(&next, sizeof next);
    return rc;
}

static int append_checksum(pt_buf *out, size_t start)
{
    uint8_t sum[CHECKSUM_LEN];
    int rc = pt_hash(PT_HASH_SHA256, sum, out->data + start, out->len - start);
    if (rc == 0) rc = pt_buf_append(out, sum, sizeof sum);
    return rc;
}

static bool checksum_ok(const uint8_t *buf, size_t len)
{
    uint8_t sum[CHECKSUM_LEN];
    if (len < CHECKSUM_LEN || pt_hash(PT_HASH_SHA256, sum, buf, len - CHECKSUM_LEN) != 0)
        return false;
    return pt_ct_memcmp(sum, buf + len - CHECKSUM_LEN, CHECKSUM_LEN) == 0;
}

int pt_megolm_out_serialize(const pt_megolm_out *s, pt_buf *out)
{
    size_t start = out->len;
    uint8_t *p = pt_buf_extend(out, OUT_STATE_LEN - CHECKSUM_LEN);
    if (!p) return PT_ERR_NOMEM;
    memcpy(p, "PTMO", 4);
    p[4] = STATE_VERSION;
    pt_put_u32le(p + 5, s->ratchet.counter);
    memcpy(p + 9, s->ratchet.data, PT_MEGOLM_RATCHET_LEN);
    memcpy(p + 9 + PT_MEGOLM_RATCHET_LEN, s->seed, PT_ED25519_SEED_LEN);
    int rc = append_checksum(out, start);
    if (rc != 0) {
        pt_wipe(out->data + start, out->len - start);
        out->len = start;
    }
    return rc;
}

pt_megolm_out *pt_megolm_out_restore(const uint8_t *buf, size_t len, pt_err *err)
{
    int rc = PT_ERR_DECODE;
    pt_megolm_out *s = NULL;
    if (len != OUT_STATE_LEN || memcmp(buf, "PTMO", 4) != 0) goto fail;
    if (buf[4] != STATE_VERSION) {
        rc = PT_ERR_VERSION;
        goto fail;
    }
    if (!checksum_ok(buf, len)) goto fail;
    if (!(s = out_alloc(err))) return NULL;
    get_ratchet(&s->ratchet, buf + 9, pt_get_u32le(buf + 5));
    memcpy(s->seed, buf + 9 + PT_MEGOLM_RATCHET_LEN, PT_ED25519_SEED_LEN);
    if (pt_ed25519_seed_keypair(s->pk, s->sk, s->seed) != 0) {
        rc = PT_ERR_CRYPTO;
        goto fail;
    }
    if (err) *err = PT_OK;
    return s;
fail:
    pt_megolm_out_free(s);
    if (err) *err = rc;
    return NULL;
}

/* ---- inbound sessions -------------------------------------------------------------- */

typedef struct idx_range {
    uint32_t lo, hi; /* inclusive */
} idx_range;

struct pt_megolm_in {
    pt_megolm_ratchet initial;              /* earliest known value: history stays readable */
    pt_megolm_ratchet latest;               /* most advanced value computed, a cache */
    uint8_t pk[PT_MEGOLM_ID_LEN];           /* signing key = session id */
    bool verified;                          /* signed key, or a message decrypted */
    size_t nranges;                         /* used entries of ranges */
    idx_range ranges[PT_MEGOLM_MAX_RANGES]; /* decrypted indices: sorted, disjoint, not adjacent */
};

static pt_megolm_in *in_alloc(pt_err *err)
{
    pt_megolm_in *s = pt_secure_alloc(sizeof *s);
    if (!s && err) *err = PT_ERR_NOMEM;
    if (s) memset(s, 0, sizeof *s);
    return s;
}

static pt_megolm_in *in_from_key(const uint8_t *key, size_t len, bool is_export, pt_err *err)
{
    size_t want = is_export ? PT_MEGOLM_EXPORT_LEN : PT_MEGOLM_SESSION_KEY_LEN;
    uint8_t version = is_export ? PT_MEGOLM_EXPORT_VERSION : PT_MEGOLM_KEY_VERSION;
    int rc = PT_ERR_DECODE;
    if (!key || len != want) goto fail;
    if (key[0] != version) {
        rc = PT_ERR_VERSION;
        goto fail;
    }
    const uint8_t *pk = key + 5 + PT_MEGOLM_RATCHET_LEN;
    if (!is_export &&
        pt_ed25519_verify(key + PT_MEGOLM_EXPORT_LEN, key, PT_MEGOLM_EXPORT_LEN, pk) != 0) {
        rc = PT_ERR_AUTH;
        goto fail;
    }
    pt_megolm_in *s = in_alloc(err);
    if (!s) return NULL;
    get_ratchet(&s->initial, key + 5, get_u32be(key + 1));
    s->latest = s->initial;
    memcpy(s->pk, pk, PT_MEGOLM_ID_LEN);
    s->verified = !is_export;
    if (err) *err = PT_OK;
    return s;
fail:
    if (err) *err = rc;
    return NULL;
}

pt_megolm_in *pt_megolm_in_from_session_key(const uint8_t *key, size_t len, pt_err *err)
{
    return in_from_key(key, len, false, err);
}

pt_megolm_in *pt_megolm_in_from_export(const uint8_t *key, size_t len, pt_err *err)
{
    return in_from_key(key, len, true, err);
}

void pt_megolm_in_free(pt_megolm_in *s)
{
    if (s) pt_secure_free(s);
}

void pt_megolm_in_id(const pt_megolm_in *s, uint8_t id[static PT_MEGOLM_ID_LEN])
{
    memcpy(id, s->pk, PT_MEGOLM_ID_LEN);
}

uint32_t pt_megolm_in_first_index(const pt_megolm_in *s)
{
    return s->initial.counter;
}
bool pt_megolm_in_verified(const pt_megolm_in *s)
{
    return s->verified;
}

bool pt_megolm_in_seen(const pt_megolm_in *s, uint32_t index)
{
    /* Messages mostly arrive in order: look from the newest range down. */
    for (size_t i = s->nranges; i-- > 0;) {
        if (index > s->ranges[i].hi) return false;
        if (index >= s->ranges[i].lo) return true;
    }
    return false;
}

/* Records index x (not yet seen), keeping the ranges sorted, disjoint and
 * non-adjacent. Runs its loop at most twice: once more after a fold. */
static void record_index(pt_megolm_in *s, uint32_t x)
{
    for (;;) {
        size_t i = 0, n = s->nranges;
        while (i < n && s->ranges[i].hi < x)
            i++; /* the first range ending after x */
        bool join_prev = i > 0 && s->ranges[i - 1].hi + 1 == x;
        bool join_next = i < n && s->ranges[i].lo - 1 == x;
        if (join_prev && join_next) {
            s->ranges[i - 1].hi = s->ranges[i].hi;
            memmove(&s->ranges[i], &s->ranges[i + 1], (n - i - 1) * sizeof(idx_range));
            s->nranges--;
            return;
        }
        if (join_prev || join_next) {
            if (join_prev)
                s->ranges[i - 1].hi = x;
            else
                s->ranges[i].lo = x;
            return;
        }
        if (n < PT_MEGOLM_MAX_RANGES) {
            memmove(&s->ranges[i + 1], &s->ranges[i], (n - i) * sizeof(idx_range));
            s->ranges[i].lo = s->ranges[i].hi = x;
            s->nranges++;
            return;
        }
        /* Full: fold the two oldest ranges together. The gap between them now
         * counts as seen, so late messages from it are refused, never replayed. */
        s->ranges[0].hi = s->ranges[1].hi;
        memmove(&s->ranges[1], &s->ranges[2], (n - 2) * sizeof(idx_range));
        s->nranges--;
        if (pt_megolm_in_seen(s, x)) return;
    }
}

/* A copy of the ratchet at index (>= initial.counter): from the latest value when
 * index is at or beyond it (which then moves forward), else from the initial one. */
static int ratchet_at(pt_megolm_in *s, uint32_t index, pt_megolm_ratchet *r)
{
    *r = index >= s->latest.counter ? s->latest : s->initial;
    int rc = pt_megolm_ratchet_advance_to(r, index);
    if (rc == 0 && index >= s->latest.counter) s->latest = *r;
    return rc;
}

int pt_megolm_in_decrypt(pt_megolm_in *s, pt_buf *out, uint32_t *index, const uint8_t *msg,
                         size_t len, unsigned flags)
{
    PT_ASSERT(s && out && (msg || len == 0));
    pt_megolm_msg m;
    int rc = pt_megolm_msg_decode(&m, msg, len);
    if (rc != 0) return rc;
    if (index) *index = m.index;
    /* The signature first, as libolm: nothing else is trusted before it. */
    if (pt_ed25519_verify(m.sig, msg, m.signed_len, s->pk) != 0) return PT_ERR_AUTH;
    if (m.index < s->initial.counter) return PT_ERR_NOT_FOUND;
    if (!(flags & PT_MEGOLM_ALLOW_REPLAY) && pt_megolm_in_seen(s, m.index)) return PT_ERR_REPLAY;

    pt_megolm_ratchet r;
    uint8_t keys[DERIVED_LEN], mac[PT_SHA256_LEN];
    size_t start = out->len;
    rc = ratchet_at(s, m.index, &r);
    if (rc == 0) rc = derive(keys, &r);
    if (rc == 0)
        rc = pt_hmac(PT_HASH_SHA256, mac, keys + AES_KEY_LEN, MAC_KEY_LEN, msg, m.mac_covered_len);
    if (rc == 0 && pt_ct_memcmp(mac, m.mac, PT_MEGOLM_MAC_LEN) != 0) rc = PT_ERR_AUTH;
    if (rc == 0 &&
        pt_aes256_cbc_decrypt(out, m.ciphertext, m.ciphertext_len, keys, keys + IV_OFF) != 0)
        rc = PT_ERR_AUTH; /* bad padding under a valid MAC: the sender is broken */
    pt_wipe(&r, sizeof r);
    pt_wipe(keys, sizeof keys);
    pt_wipe(mac, sizeof mac);
    if (rc != 0) {
        if (out->len > start) pt_wipe(out->data + start, out->len - start);
        out->len = start;
        return rc;
    }
    s->verified = true;
    if (!pt_megolm_in_seen(s, m.index)) record_index(s, m.index);
    return 0;
}

int pt_megolm_in_export(pt_megolm_in *s, uint32_t index, uint8_t key[static PT_MEGOLM_EXPORT_LEN])
{
    if (index < s->initial.counter) return PT_ERR_NOT_FOUND;
    pt_megolm_ratchet r;
    int rc = ratchet_at(s, index, &r);
    if (rc == 0) put_key_body(key, PT_MEGOLM_EXPORT_VERSION, &r, s->pk);
    pt_wipe(&r, sizeof r);
    return rc;
}

int pt_megolm_in_serialize(const pt_megolm_in *s, pt_buf *out)
{
    size_t start = out->len, n = s->nranges;
    uint8_t *p = pt_buf_extend(out, IN_STATE_FIXED - CHECKSUM_LEN + n * 8);
    if (!p) return PT_ERR_NOMEM;
    memcpy(p, "PTMI", 4);
    p[4] = STATE_VERSION;
    p += 5;
    const pt_megolm_ratchet *rs[2] = {&s->initial, &s->latest};
    for (int k = 0; k < 2; k++) {
        pt_put_u32le(p, rs[k]->counter);
        memcpy(p + 4, rs[k]->data, PT_MEGOLM_RATCHET_LEN);
        p += 4 + PT_MEGOLM_RATCHET_LEN;
    }
    memcpy(p, s->pk, PT_MEGOLM_ID_LEN);
    p += PT_MEGOLM_ID_LEN;
    *p++ = s->verified ? IN_FLAG_VERIFIED : 0;
    *p++ = (uint8_t)n;
    *p++ = (uint8_t)(n >> 8);
    for (size_t i = 0; i < n; i++, p += 8) {
        pt_put_u32le(p, s->ranges[i].lo);
        pt_put_u32le(p + 4, s->ranges[i].hi);
    }
    int rc = append_checksum(out, start);
    if (rc != 0) {
        pt_wipe(out->data + start, out->len - start);
        out->len = start;
    }
    return rc;
}

pt_megolm_in *pt_megolm_in_restore(const uint8_t *buf, size_t len, pt_err *err)
{
    int rc = PT_ERR_DECODE;
    pt_megolm_in *s = NULL;
    pt_megolm_ratchet check;
    if (!buf || len < IN_STATE_FIXED || memcmp(buf, "PTMI", 4) != 0) goto fail;
    if (buf[4] != STATE_VERSION) {
        rc = PT_ERR_VERSION;
        goto fail;
    }
    const uint8_t *p = buf + 5 + 2 * (4 + PT_MEGOLM_RATCHET_LEN) + PT_MEGOLM_ID_LEN;
    uint8_t flags = p[0];
    size_t n = (size_t)p[1] | (size_t)p[2] << 8;
    if ((flags & ~IN_FLAG_VERIFIED) || n > PT_MEGOLM_MAX_RANGES || len != IN_STATE_FIXED + n * 8 ||
        !checksum_ok(buf, len))
        goto fail;
    if (!(s = in_alloc(err))) return NULL;
    get_ratchet(&s->initial, buf + 9, pt_get_u32le(buf + 5));
    get_ratchet(&s->latest, buf + 13 + PT_MEGOLM_RATCHET_LEN,
                pt_get_u32le(buf + 9 + PT_MEGOLM_RATCHET_LEN));
    memcpy(s->pk, p - PT_MEGOLM_ID_LEN, PT_MEGOLM_ID_LEN);
    s->verified = flags & IN_FLAG_VERIFIED;
    p += 3;
    for (size_t i = 0; i < n; i++, p += 8) {
        idx_range r = {pt_get_u32le(p), pt_get_u32le(p + 4)};
        /* sorted, disjoint, not adjacent, and never below the first index */
        if (r.lo > r.hi || r.lo < s->initial.counter ||
            (i > 0 && (uint64_t)s->ranges[i - 1].hi + 1 >= r.lo))
            goto fail;
        s->ranges[i] = r;
    }
    s->nranges = n;
    /* The cache must be the first value advanced, or the blob lies about one of them. */
    if (s->latest.counter < s->initial.counter) goto fail;
    check = s->initial;
    if (pt_megolm_ratchet_advance_to(&check, s->latest.counter) != 0) {
        rc = PT_ERR_CRYPTO;
        goto fail;
    }
    if (pt_ct_memcmp(check.data, s->latest.data, PT_MEGOLM_RATCHET_LEN) != 0) goto fail;
    pt_wipe(&check, sizeof check);
    if (err) *err = PT_OK;
    return s;
fail:
    pt_wipe(&check, sizeof check);
    pt_megolm_in_free(s);
    if (err) *err = rc;
    return NULL;
}
