/*
 * The records cluster mode keeps in the bucket (pt_cluster.h lists the keys), encoded
 * and decoded without libnats, so that every build has them and fuzz/ can reach
 * them (fuzz_cluster_record): what another node wrote is input like any other.
 * Integers are little-endian.
 */
#include <string.h>

#include "server/pt_cluster.h"
#include "server/pt_server_int.h"

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }

/* ---- u.<user hex> --------------------------------------------------------------------------- */
int pt_cluster_user_rec_decode(pt_cluster_user_rec *r, const uint8_t *p, size_t len)
{
    memset(r, 0, sizeof *r);
    size_t off = 0;
    if (len < 32 + 2) return PT_ERR_DECODE;
    memcpy(r->identity, p, 32);
    off = 32;
    uint16_t dl = get16(p + off);
    off += 2;
    if (dl >= sizeof r->display || len < off + dl + 2) return PT_ERR_DECODE;
    memcpy(r->display, p + off, dl);
    off += dl;
    uint16_t kl = get16(p + off);
    off += 2;
    if (kl >= sizeof r->key || len < off + kl + 1) return PT_ERR_DECODE;
    memcpy(r->key, p + off, kl);
    off += kl;
    r->ndev = p[off++];
    if (r->ndev > PT_SERVER_USER_DEVICES_MAX || len != off + 32 * (size_t)r->ndev) return PT_ERR_DECODE;
    memcpy(r->dev, p + off, 32 * (size_t)r->ndev);
    return 0;
}

size_t pt_cluster_user_rec_encode(uint8_t *out, const pt_cluster_user_rec *r)
{
    size_t off = 32, dl = strlen(r->display), kl = strlen(r->key);
    memcpy(out, r->identity, 32);
    put16(out + off, (uint16_t)dl);
    memcpy(out + off + 2, r->display, dl);
    off += 2 + dl;
    put16(out + off, (uint16_t)kl);
    memcpy(out + off + 2, r->key, kl);
    off += 2 + kl;
    out[off++] = r->ndev;
    memcpy(out + off, r->dev, 32 * (size_t)r->ndev);
    return off + 32 * (size_t)r->ndev;
}

/* ---- p.<device hex> ------------------------------------------------------------------------- */

bool pt_cluster_prekey_new(const pt_cluster_prekey *keys, uint32_t i, int64_t floor)
{
    if (keys[i].id <= floor) return false;
    for (uint32_t k = 0; k < i; k++)
        if (keys[k].id == keys[i].id) return false;
    return true;
}

/* version 2 | has_signed | [id i32 | len | key | signature] | n u16 | n x (id i32 | len | key) |
 * floor i32. Version 1 had no floor: it reads as the largest id listed. */
int pt_cluster_prekeys_decode(pt_cluster_prekeys *r, const uint8_t *p, size_t len)
{
    memset(&r->sig, 0, sizeof r->sig);
    r->n = 0;
    r->floor = INT32_MIN;
    size_t off = 2;
    if (len < 2 || (p[0] != 1 && p[0] != 2) || p[1] > 1) return PT_ERR_DECODE;
    if (p[1]) {
        if (len - off < 5 || p[off + 4] == 0 || p[off + 4] > PT_SERVER_PREKEY_MAX)
            return PT_ERR_DECODE;
        r->sig.has = true;
        r->sig.id = (int32_t)pt_get_u32le(p + off);
        r->sig.len = p[off + 4];
        off += 5;
        if (len - off < (size_t)r->sig.len + 64) return PT_ERR_DECODE;
        memcpy(r->sig.key, p + off, r->sig.len);
        memcpy(r->sig.signature, p + off + r->sig.len, 64);
        off += (size_t)r->sig.len + 64;
    }
    if (len - off < 2) return PT_ERR_DECODE;
    uint32_t n = get16(p + off);
    off += 2;
    if (n > PT_SERVER_PREKEY_STORED_MAX) return PT_ERR_DECODE;
    for (uint32_t i = 0; i < n; i++) {
        if (len - off < 5 || p[off + 4] == 0 || p[off + 4] > PT_SERVER_PREKEY_MAX)
            return PT_ERR_DECODE;
        pt_cluster_prekey *k = &r->k[i];
        k->id = (int32_t)pt_get_u32le(p + off);
        k->len = p[off + 4];
        off += 5;
        if (len - off < k->len) return PT_ERR_DECODE;
        memcpy(k->key, p + off, k->len);
        off += k->len;
        if (p[0] == 1 && k->id > r->floor) r->floor = k->id;
    }
    r->n = n;
    if (p[0] == 2) {
        if (len - off < 4) return PT_ERR_DECODE;
        r->floor = (int32_t)pt_get_u32le(p + off);
        off += 4;
    }
    return off == len ? 0 : PT_ERR_DECODE;
}

size_t pt_cluster_prekeys_encode(uint8_t *out, const pt_cluster_prekeys *r)
{
    size_t off = 0;
    out[off++] = 2;
    out[off++] = r->sig.has;
    if (r->sig.has) {
        pt_put_u32le(out + off, (uint32_t)r->sig.id);
        out[off + 4] = r->sig.len;
        off += 5;
        memcpy(out + off, r->sig.key, r->sig.len);
        off += r->sig.len;
        memcpy(out + off, r->sig.signature, 64);
        off += 64;
    }
    put16(out + off, (uint16_t)r->n);
    off += 2;
    for (uint32_t i = 0; i < r->n; i++) {
        pt_put_u32le(out + off, (uint32_t)r->k[i].id);
        out[off + 4] = r->k[i].len;
        off += 5;
        memcpy(out + off, r->k[i].key, r->k[i].len);
        off += r->k[i].len;
    }
    pt_put_u32le(out + off, (uint32_t)r->floor);
    return off + 4;
}

/* ---- g.<group hex> (after the versioned head) ------------------------------------------------ */

/* head | nm u16 | nm x (user[16] | role) | ni u16 | ni x (user[16] | inviter[16]) */
int pt_cluster_group_decode(pt_cluster_group *g, const uint8_t *p, size_t len)
{
    g->nm = g->ni = 0;
    if (len < PT_CLUSTER_VREC_HEAD + 4 || p[0] != 1) return PT_ERR_DECODE;
    uint32_t nm = get16(p + PT_CLUSTER_VREC_HEAD);
    size_t off = PT_CLUSTER_VREC_HEAD + 2;
    if (nm > PT_SERVER_GROUP_MAX_MEMBERS || len - off < (size_t)nm * 17 + 2) return PT_ERR_DECODE;
    for (uint32_t i = 0; i < nm; i++, off += 17) {
        memcpy(g->m[i].user, p + off, 16);
        g->m[i].role = p[off + 16];
        if (g->m[i].role > 2) return PT_ERR_DECODE;
    }
    uint32_t ni = get16(p + off);
    off += 2;
    if (nm + ni > PT_SERVER_GROUP_MAX_MEMBERS || len - off != (size_t)ni * 32) return PT_ERR_DECODE;
    for (uint32_t i = 0; i < ni; i++, off += 32) {
        memcpy(g->inv[i].user, p + off, 16);
        memcpy(g->inv[i].inviter, p + off + 16, 16);
    }
    g->nm = nm, g->ni = ni;
    return 0;
}

size_t pt_cluster_group_encode(uint8_t *out, const pt_cluster_group *g)
{
    size_t off = PT_CLUSTER_VREC_HEAD;
    put16(out + off, (uint16_t)g->nm);
    off += 2;
    for (uint32_t i = 0; i < g->nm; i++, off += 17) {
        memcpy(out + off, g->m[i].user, 16);
        out[off + 16] = g->m[i].role;
    }
    put16(out + off, (uint16_t)g->ni);
    off += 2;
    for (uint32_t i = 0; i < g->ni; i++, off += 32) {
        memcpy(out + off, g->inv[i].user, 16);
        memcpy(out + off + 16, g->inv[i].inviter, 16);
    }
    return off;
}

/* ---- k.<lo user>.<hi user> (after the versioned head) ---------------------------------------- */

/* head | state of lo towards hi | state of hi towards lo | note_len u16 | note */
int pt_cluster_contact_decode(pt_cluster_contact *k, const uint8_t *p, size_t len)
{
    if (len < PT_CLUSTER_VREC_HEAD + 4 || p[0] != 1) return PT_ERR_DECODE;
    size_t nl = get16(p + PT_CLUSTER_VREC_HEAD + 2);
    if (nl > PT_SERVER_NOTE_MAX || len != PT_CLUSTER_VREC_HEAD + 4 + nl || p[PT_CLUSTER_VREC_HEAD] > PT_CONTACT_BLOCKED ||
        p[PT_CLUSTER_VREC_HEAD + 1] > PT_CONTACT_BLOCKED)
        return PT_ERR_DECODE;
    k->lo_state = p[PT_CLUSTER_VREC_HEAD];
    k->hi_state = p[PT_CLUSTER_VREC_HEAD + 1];
    k->note_len = (uint16_t)nl;
    memcpy(k->note, p + PT_CLUSTER_VREC_HEAD + 4, nl);
    return 0;
}

size_t pt_cluster_contact_encode(uint8_t *out, const pt_cluster_contact *k)
{
    out[PT_CLUSTER_VREC_HEAD] = (uint8_t)k->lo_state;
    out[PT_CLUSTER_VREC_HEAD + 1] = (uint8_t)k->hi_state;
    put16(out + PT_CLUSTER_VREC_HEAD + 2, k->note_len);
    if (k->note_len) memcpy(out + PT_CLUSTER_VREC_HEAD + 4, k->note, k->note_len);
    return PT_CLUSTER_VREC_HEAD + 4 + (size_t)k->note_len;
}
