/*
 * libpacktrack: people. Contact records (sealed in the local store), device
 * lists checked against identity keys, friend requests, presence, safety
 * numbers, our own devices and the keys we publish.
 */
#include <stdio.h>
#include <stdlib.h>

#include "api/api_int.h"
#include "crypto/pt_crypto.h"
#include "e2e/pt_safety.h"
#include "store/pt_keyfile.h"

static const char signed_prekey_label[] = "PT1 signed prekey";
static const char revoke_label[] = "PT1 revoke device";

/* ---- contact records ------------------------------------------------------------------------------ */

static int contact_encode(const pt_api_contact *c, pt_buf *b)
{
    int rc = pt_wr_str(b, c->name);
    if (rc == 0) rc = pt_buf_append(b, c->identity_key, 32);
    if (rc == 0) rc = pt_wr_u8(b, c->state);
    if (rc == 0) rc = pt_wr_u8(b, c->status);
    if (rc == 0) rc = pt_wr_u8(b, c->verified);
    if (rc == 0) rc = pt_wr_u8(b, c->key_changed);
    if (rc == 0) rc = pt_buf_append(b, c->known_hash, 16);
    if (rc == 0) rc = pt_wr_u32(b, (uint32_t)c->ndev);
    for (size_t i = 0; rc == 0 && i < c->ndev; i++) rc = pt_buf_append(b, &c->dev[i], sizeof c->dev[i]);
    if (rc == 0) rc = pt_wr_u8(b, c->lan);
    return rc;
}

static int contact_decode(pt_api_contact *c, const uint8_t *p, size_t n)
{
    pt_rd r = {p, n, false};
    pt_rd_str(&r, c->name, sizeof c->name);
    pt_rd_fixed(&r, c->identity_key, 32);
    c->state = pt_rd_u8(&r);
    c->status = pt_rd_u8(&r);
    c->verified = pt_rd_u8(&r);
    c->key_changed = pt_rd_u8(&r);
    pt_rd_fixed(&r, c->known_hash, 16);
    c->ndev = pt_rd_u32(&r);
    if (c->ndev > PT_API_MAX_DEVICES) return PT_ERR_DECODE;
    for (size_t i = 0; i < c->ndev; i++) pt_rd_fixed(&r, (uint8_t *)&c->dev[i], sizeof c->dev[i]);
    c->lan = r.n ? pt_rd_u8(&r) : 0; /* records written before the LAN had no flags */
    return r.bad ? PT_ERR_DECODE : 0;
}

int pt_api_contact_save(pt_ctx *x, const pt_api_contact *c)
{
    pt_buf plain;
    pt_buf_init(&plain);
    int rc = contact_encode(c, &plain);
    if (rc == 0)
        rc = pt_lstore_write_row(x->st, "contacts", "INSERT OR REPLACE INTO contacts(user_id, v) VALUES (?1, ?2)",
                                 c->user_id, 16, &plain);
    pt_buf_free(&plain);
    return rc;
}

int pt_api_contact_load(pt_ctx *x, const uint8_t user_id_in[16], pt_api_contact *c)
{
    uint8_t user_id[16];
    memcpy(user_id, user_id_in, 16);
    memset(c, 0, sizeof *c);
    memcpy(c->user_id, user_id, 16);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(pt_lstore_db(x->st), "SELECT v FROM contacts WHERE user_id = ?", -1, &st, NULL))
        return PT_ERR_IO;
    sqlite3_bind_blob(st, 1, user_id, 16, SQLITE_STATIC);
    int rc = PT_ERR_NOT_FOUND;
    if (sqlite3_step(st) == SQLITE_ROW) {
        pt_buf b;
        pt_buf_init(&b);
        rc = pt_lstore_unseal(x->st, "contacts", user_id, 16, sqlite3_column_blob(st, 0),
                              (size_t)sqlite3_column_bytes(st, 0), &b);
        if (rc == 0) rc = contact_decode(c, b.data, b.len);
        pt_buf_free(&b);
    }
    sqlite3_finalize(st);
    return rc;
}

/* Every contact record, for lookups by name; *out freed by the caller. */
static int contact_all(pt_ctx *x, pt_api_contact **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(pt_lstore_db(x->st), "SELECT user_id FROM contacts", -1, &st, NULL)) return PT_ERR_IO;
    size_t cap = 0;
    int rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != 16) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            pt_api_contact *p = realloc(*out, cap * sizeof *p);
            if (!p) {
                rc = PT_ERR_NOMEM;
                break;
            }
            *out = p;
        }
        if (pt_api_contact_load(x, sqlite3_column_blob(st, 0), &(*out)[*n]) == 0) (*n)++;
    }
    sqlite3_finalize(st);
    return rc;
}

int pt_api_contact_by_name(pt_ctx *x, const char *name, pt_api_contact *c)
{
    pt_api_contact *all;
    size_t n;
    int rc = contact_all(x, &all, &n);
    if (rc) return rc;
    rc = PT_ERR_NOT_FOUND;
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(all[i].name, name) == 0) {
            *c = all[i];
            rc = 0;
            break;
        }
    free(all);
    return rc;
}

/* ---- identities and device lists ------------------------------------------------------------------ */

static int check_identity(pt_ctx *x, const uint8_t user_id[16], const uint8_t ik[32])
{
    uint8_t h[16];
    if (pt_blake2b(h, 16, ik, 32, NULL, 0) != 0 || pt_ct_memcmp(h, user_id, 16) != 0)
        return pt_api_fail(x, PT_ERR_AUTH, "the server gave an identity key that does not match the user id");
    return 0;
}

static int user_from_reply(pt_ctx *x, const pt_api_reply *r, pt_api_contact *c)
{
    const pt_tl_users_user *u = &r->o.u.users_user;
    if (r->o.id != PT_TL_USERS_USER_ID || u->username.len >= sizeof c->name)
        return pt_api_fail(x, PT_ERR_PROTO, "unexpected answer to a user lookup");
    int rc = check_identity(x, u->user_id, u->identity_key);
    if (rc) return rc;
    memcpy(c->user_id, u->user_id, 16);
    memcpy(c->identity_key, u->identity_key, 32);
    memcpy(c->name, u->username.data, u->username.len);
    c->name[u->username.len] = 0;
    return 0;
}

/* The device set's digest: what "verified" refers to. */
static void devices_hash(const pt_api_contact *c, uint8_t out[16])
{
    uint8_t buf[PT_API_MAX_DEVICES * 32];
    for (size_t i = 0; i < c->ndev; i++) memcpy(buf + 32 * i, c->dev[i].curve, 32);
    if (pt_blake2b(out, 16, buf, 32 * c->ndev, NULL, 0) != 0) memset(out, 0, 16);
}

static int refresh_devices(pt_ctx *x, pt_api_contact *c)
{
    pt_api_reply r;
    int rc;
    PT_API_CALL(rc, x, &r, prekeys_list, memcpy(q.user_id, c->user_id, 16));
    if (rc) return rc;
    const pt_tl_prekeys_bundles *b = &r.o.u.prekeys_bundles;
    if (r.o.id != PT_TL_PREKEYS_BUNDLES_ID || memcmp(b->identity_key, c->identity_key, 32) != 0) {
        pt_api_reply_free(&r);
        return pt_api_fail(x, PT_ERR_AUTH, "the server gave another identity key for %s", c->name);
    }
    pt_api_dev *old = malloc(sizeof c->dev);
    if (!old) {
        pt_api_reply_free(&r);
        return PT_ERR_NOMEM;
    }
    size_t nold = c->ndev, n = 0;
    memcpy(old, c->dev, nold * sizeof *old);
    bool first = pt_ct_is_zero(c->known_hash, 16); /* no baseline yet: trust on first use */
    for (uint32_t i = 0; i < b->bundles.n && n < PT_API_MAX_DEVICES; i++) {
        const pt_tl_prekeys_bundle *d = &b->bundles.items[i];
        uint8_t msg[sizeof signed_prekey_label - 1 + 32 + 4 + 64];
        if (d->signed_key.len != 64 || d->signature.len != 64) continue;
        memcpy(msg, signed_prekey_label, sizeof signed_prekey_label - 1);
        memcpy(msg + 17, d->device, 32);
        pt_put_u32le(msg + 49, (uint32_t)d->signed_key_id);
        memcpy(msg + 53, d->signed_key.data, 64);
        if (pt_ed25519_verify(d->signature.data, msg, sizeof msg, c->identity_key) != 0) {
            pt_log_warn("%s: a device record with a bad signature is ignored", c->name);
            continue;
        }
        memcpy(c->dev[n].device, d->device, 32);
        memcpy(c->dev[n].curve, d->signed_key.data, 32);
        memcpy(c->dev[n].fallback, d->signed_key.data + 32, 32);
        /* trust on first use: the devices of the first list seen are known; a device
         * that appears later (or a device re-keyed) is not, until the user trusts or
         * verifies it. A device that goes away changes nothing. */
        c->dev[n].known = first;
        for (size_t j = 0; j < nold && !first; j++)
            if (memcmp(old[j].curve, c->dev[n].curve, 32) == 0 && memcmp(old[j].device, c->dev[n].device, 32) == 0)
                c->dev[n].known = old[j].known;
        memset(c->dev[n].pad, 0, sizeof c->dev[n].pad);
        n++;
    }
    free(old);
    pt_api_reply_free(&r);
    c->ndev = n;
    if (n == 0) return 0;
    if (first) devices_hash(c, c->known_hash);
    c->key_changed = 0;
    for (size_t i = 0; i < n; i++) c->key_changed |= !c->dev[i].known;
    return 0;
}

void pt_api_stale(pt_ctx *x, const uint8_t user_id[16])
{
    for (size_t i = 0; i < x->nfresh; i++)
        if (memcmp(x->fresh[i], user_id, 16) == 0) memset(x->fresh[i], 0, 16);
}

int pt_api_person(pt_ctx *x, const uint8_t user_id_in[16], bool refresh, pt_api_contact *c)
{
    uint8_t user_id[16]; /* user_id_in may point into *c, which is cleared below */
    memcpy(user_id, user_id_in, 16);
    int rc = pt_api_contact_load(x, user_id, c);
    if (rc == PT_ERR_NOT_FOUND) {
        pt_api_reply r;
        PT_API_CALL(rc, x, &r, users_get, memcpy(q.user_id, user_id, 16));
        if (rc) return rc;
        rc = user_from_reply(x, &r, c);
        pt_api_reply_free(&r);
        if (rc) return rc;
        refresh = true;
    } else if (rc) {
        return rc;
    }
    for (size_t i = 0; refresh && x->in_send && i < x->nfresh; i++)
        if (memcmp(x->fresh[i], user_id, 16) == 0) refresh = false; /* read earlier in this send */
    if (refresh) {
        rc = refresh_devices(x, c);
        if ((rc == PT_ERR_OFFLINE || rc == PT_ERR_TIMEOUT) && x->lan && c->ndev)
            return 0; /* serverless: the list we verified last time is what we have */
        if (rc) return rc;
        if (x->in_send && x->nfresh < sizeof x->fresh / sizeof *x->fresh) memcpy(x->fresh[x->nfresh++], user_id, 16);
    }
    return refresh ? pt_api_contact_save(x, c) : 0;
}

int pt_api_resolve(pt_ctx *x, const char *name, pt_api_contact *c)
{
    if (pt_api_contact_by_name(x, name, c) == 0) return 0;
    pt_api_reply r;
    int rc;
    PT_API_CALL(rc, x, &r, users_resolve, q.name = (pt_tl_bytes){(const uint8_t *)name, (uint32_t)strlen(name)});
    if (rc == PT_ERR_REFUSED) return pt_api_fail(x, PT_ERR_NOT_FOUND, "there is no user named '%s' on this server", name);
    if (rc) return rc;
    memset(c, 0, sizeof *c);
    rc = user_from_reply(x, &r, c);
    pt_api_reply_free(&r);
    if (rc) return rc;
    return pt_api_person(x, c->user_id, false, c);
}

/* ---- the keys we publish ---------------------------------------------------------------------- */

/* ---- contacts met on the local network ---------------------------------------------------------- */

/* Our signed prekey as the directory publishes it (the fallback key), for an INTRO. */
int pt_api_own_bundle(pt_ctx *x, uint32_t *key_id, uint8_t spk[64], uint8_t sig[64])
{
    pt_olm_key fb;
    uint8_t msg[sizeof signed_prekey_label - 1 + 32 + 4 + 64];
    int rc = pt_olm_account_fallback_key(x->acct, &fb);
    if (rc) return rc;
    memcpy(spk, x->my_curve, 32);
    memcpy(spk + 32, fb.key, 32);
    memcpy(msg, signed_prekey_label, 17);
    memcpy(msg + 17, x->dev_pk, 32);
    pt_put_u32le(msg + 49, fb.id);
    memcpy(msg + 53, spk, 64);
    *key_id = fb.id;
    return pt_ed25519_sign(sig, msg, sizeof msg, x->id_sk);
}

/* A contact record from a stranger's INTRO, checked as the directory's records are:
 * the user id is the identity key's hash and the device's signed prekey is signed by
 * that identity key over this device key. The device is known (the user compared the
 * fingerprint before asking, or answers a request they will compare). */
int pt_api_contact_from_intro(pt_ctx *x, const uint8_t identity_key[32], const char *name, const uint8_t device[32],
                              uint32_t key_id, const uint8_t spk[64], const uint8_t sig[64], pt_api_contact *c)
{
    memset(c, 0, sizeof *c);
    uint8_t msg[sizeof signed_prekey_label - 1 + 32 + 4 + 64];
    if (pt_blake2b(c->user_id, 16, identity_key, 32, NULL, 0) != 0) return PT_ERR_CRYPTO;
    memcpy(msg, signed_prekey_label, 17);
    memcpy(msg + 17, device, 32);
    pt_put_u32le(msg + 49, key_id);
    memcpy(msg + 53, spk, 64);
    if (pt_ed25519_verify(sig, msg, sizeof msg, identity_key) != 0)
        return pt_api_fail(x, PT_ERR_AUTH, "a nearby device's introduction is not signed by the identity it names");
    memcpy(c->identity_key, identity_key, 32);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->ndev = 1;
    memcpy(c->dev[0].device, device, 32);
    memcpy(c->dev[0].curve, spk, 32);
    memcpy(c->dev[0].fallback, spk + 32, 32);
    c->dev[0].known = 1;
    devices_hash(c, c->known_hash);
    return 0;
}

/* Friendships made on the local network, told to the server once it is reachable: a
 * request (or, when they asked first, an accept), so it routes between the two. */
int pt_api_sync_lan_friends(pt_ctx *x)
{
    pt_api_contact *all;
    size_t n;
    int rc = contact_all(x, &all, &n);
    if (rc) return rc;
    for (size_t i = 0; i < n && x->online; i++) {
        pt_api_contact *c = &all[i];
        if (!(c->lan & PT_API_LAN_SERVER_OWED) ||
            (c->state != PT_CONTACT_STATE_FRIEND && c->state != PT_CONTACT_STATE_REQUEST_SENT))
            continue;
        PT_API_CALL(rc, x, NULL, contacts_request, memcpy(q.to, c->user_id, 16); q.note = (pt_tl_bytes){NULL, 0});
        if (rc == PT_ERR_REFUSED && strcmp(x->last_error, "PEER_REQUESTED_YOU") == 0)
            PT_API_CALL(rc, x, NULL, contacts_accept, memcpy(q.peer, c->user_id, 16));
        if (rc == PT_ERR_REFUSED && strcmp(x->last_error, "ALREADY_FRIENDS") == 0) rc = 0;
        if (rc == 0) {
            c->lan &= (uint8_t)~PT_API_LAN_SERVER_OWED;
            rc = pt_api_contact_save(x, c);
        } else if (rc == PT_ERR_REFUSED) {
            pt_log_warn("the server does not take our friendship with %s (%s); it stays on the local network",
                        c->name, x->last_error);
            rc = 0;
        }
        if (rc) break;
    }
    free(all);
    return rc == PT_ERR_OFFLINE || rc == PT_ERR_TIMEOUT ? 0 : rc;
}

int pt_api_upload_keys(pt_ctx *x, bool signed_too)
{
    int rc;
    if (pt_olm_account_one_time_key_count(x->acct) < PT_API_OTK_BATCH / 2 &&
        (rc = pt_olm_account_generate_one_time_keys(x->acct, x->env, PT_API_OTK_BATCH)) != 0)
        return rc;
    pt_olm_key keys[2 * PT_API_OTK_BATCH];
    size_t n = pt_olm_account_unpublished_keys(x->acct, keys, 2 * PT_API_OTK_BATCH);
    pt_tl_prekeys_key items[2 * PT_API_OTK_BATCH];
    for (size_t i = 0; i < n; i++) items[i] = (pt_tl_prekeys_key){.key_id = (int32_t)keys[i].id, .key = {keys[i].key, 32}};
    uint8_t spk[64], sig[64], msg[sizeof signed_prekey_label - 1 + 32 + 4 + 64];
    pt_olm_key fb;
    if (signed_too) {
        if ((rc = pt_olm_account_fallback_key(x->acct, &fb)) != 0) return rc;
        memcpy(spk, x->my_curve, 32);
        memcpy(spk + 32, fb.key, 32);
        memcpy(msg, signed_prekey_label, 17);
        memcpy(msg + 17, x->dev_pk, 32);
        pt_put_u32le(msg + 49, fb.id);
        memcpy(msg + 53, spk, 64);
        if ((rc = pt_ed25519_sign(sig, msg, sizeof msg, x->id_sk)) != 0) return rc;
    }
    PT_API_CALL(rc, x, NULL, prekeys_upload, q.one_time_keys = (pt_tl_vec_prekeys_key){(uint32_t)n, items};
                if (signed_too) {
                    q.signed_key_id = (int32_t)fb.id;
                    q.signed_key = (pt_tl_bytes){spk, 64};
                    q.signature = (pt_tl_bytes){sig, 64};
                });
    if (rc) return rc;
    pt_olm_account_mark_published(x->acct);
    return pt_api_save_account(x);
}

/* ---- friends ------------------------------------------------------------------------------------ */

static int set_state(pt_ctx *x, pt_api_contact *c, int state)
{
    c->state = (uint8_t)state;
    return pt_api_contact_save(x, c);
}

int pt_friend_add(pt_ctx *x, const char *name, const char *note)
{
    pt_api_contact c;
    int rc = pt_api_resolve(x, name, &c);
    if (rc) return rc;
    if (memcmp(c.user_id, x->user_id, 16) == 0) return pt_api_fail(x, PT_ERR_INVAL, "you cannot befriend yourself");
    const char *n = note ? note : "";
    /* the server's limit (PT_SERVER_NOTE_MAX, docs/PROTOCOL.md §6.4); a note to a
     * stranger on the LAN may be 512 bytes (pt_lan_friend_request) */
    if (strlen(n) > 256) return pt_api_fail(x, PT_ERR_TOO_BIG, "the note is longer than 256 bytes");
    PT_API_CALL(rc, x, NULL, contacts_request, memcpy(q.to, c.user_id, 16);
                q.note = (pt_tl_bytes){(const uint8_t *)n, (uint32_t)strlen(n)});
    if (rc == PT_ERR_REFUSED) return pt_api_fail(x, rc, "%s refused the friend request: %s", c.name, x->last_error);
    if (rc) return rc;
    return set_state(x, &c, c.state == PT_CONTACT_STATE_REQUEST_RECEIVED ? PT_CONTACT_STATE_FRIEND : PT_CONTACT_STATE_REQUEST_SENT);
}

int pt_friend_accept(pt_ctx *x, const char *name)
{
    pt_api_contact c;
    int rc = pt_api_contact_by_name(x, name, &c);
    if (rc == 0 && (c.lan & PT_API_LAN_MET) && c.state == PT_CONTACT_STATE_REQUEST_RECEIVED)
        return pt_api_lan_accept(x, &c); /* asked on the local network: answered there */
    if ((rc = pt_api_resolve(x, name, &c)) != 0) return rc;
    PT_API_CALL(rc, x, NULL, contacts_accept, memcpy(q.peer, c.user_id, 16));
    if (rc == PT_ERR_REFUSED) return pt_api_fail(x, rc, "no friend request from %s to accept (%s)", c.name, x->last_error);
    if (rc) return rc;
    return set_state(x, &c, PT_CONTACT_STATE_FRIEND);
}

int pt_friend_deny(pt_ctx *x, const char *name)
{
    pt_api_contact c;
    int rc = pt_api_resolve(x, name, &c);
    if (rc) return rc;
    PT_API_CALL(rc, x, NULL, contacts_deny, memcpy(q.peer, c.user_id, 16));
    if (rc == PT_ERR_REFUSED) return pt_api_fail(x, rc, "no friend request from %s to deny (%s)", c.name, x->last_error);
    if (rc) return rc;
    return set_state(x, &c, PT_CONTACT_STATE_NONE);
}

void pt_api_on_contact(pt_ctx *x, const pt_tl_updates_contact *u)
{
    pt_api_contact c;
    if (pt_api_person(x, u->from, false, &c) != 0) {
        pt_log_warn("a contact update from an unknown user is ignored: %s", x->last_error);
        return;
    }
    pt_event ev = {.user = c.name};
    char note[PT_NAME_MAX * 4 + 1] = "";
    switch (u->action) {
    case 1:
        /* a request already accepted (we answered it before this push was read)
         * never takes a friendship back */
        if (c.state == PT_CONTACT_STATE_FRIEND) break;
        c.state = PT_CONTACT_STATE_REQUEST_RECEIVED;
        ev.type = PT_EVENT_FRIEND_REQUEST;
        snprintf(note, sizeof note, "%.*s", (int)u->note.len, (const char *)u->note.data);
        ev.text = note;
        break;
    case 2: c.state = PT_CONTACT_STATE_FRIEND, ev.type = PT_EVENT_FRIEND_ACCEPTED; break;
    case 3: c.state = PT_CONTACT_STATE_NONE, ev.type = PT_EVENT_FRIEND_DENIED; break;
    case 4: c.state = PT_CONTACT_STATE_NONE; break;
    default: return;
    }
    if (pt_api_contact_save(x, &c) != 0) return; /* not confirmed: the server sends it again */
    int rc;
    int64_t id = u->server_id;
    PT_API_NOTICE(rc, x, messages_confirm, q.server_ids = (pt_tl_vec_long){1, &id});
    (void)rc;
    if (ev.type) pt_api_emit(x, &ev);
}

void pt_api_on_status(pt_ctx *x, const pt_tl_updates_userStatus *u)
{
    pt_api_contact c;
    if (pt_api_contact_load(x, u->user_id, &c) != 0) return;
    c.status = (uint8_t)u->status;
    if (pt_api_contact_save(x, &c) != 0) return;
    pt_event ev = {.type = PT_EVENT_PRESENCE, .user = c.name, .status = (pt_status)u->status};
    pt_api_emit(x, &ev);
}

int pt_api_sync_contacts(pt_ctx *x)
{
    /* the server knows states and presence; our records know names and trust */
    int rc = pt_api_ensure_online(x);
    uint8_t after[16] = {0};
    for (int page = 0; rc == 0 && page < 100; page++) {
        pt_api_reply r;
        PT_API_CALL(rc, x, &r, contacts_get, memcpy(q.after, after, 16); q.limit = 100);
        if (rc) break;
        const pt_tl_contacts_list *l = &r.o.u.contacts_list;
        for (uint32_t i = 0; i < l->contacts.n; i++) {
            const pt_tl_contacts_contact *k = &l->contacts.items[i];
            pt_api_contact c;
            memcpy(after, k->user_id, 16);
            if (pt_api_person(x, k->user_id, false, &c) != 0) continue;
            /* a friend's devices are checked each time: a new or changed device key
             * is what "KEY CHANGED" reports */
            if (k->state == PT_CONTACT_STATE_FRIEND && refresh_devices(x, &c) != 0)
                pt_log_warn("%s: device list unavailable", c.name);
            c.state = (uint8_t)k->state;
            c.status = (uint8_t)k->status;
            if (pt_api_contact_save(x, &c) != 0) continue;
        }
        bool more = l->more && l->contacts.n > 0;
        pt_api_reply_free(&r);
        if (!more) break;
    }
    return rc;
}

void pt_api_on_typing(pt_ctx *x, const pt_tl_updates_typing *u)
{
    pt_api_contact c;
    if (x->no_typing || pt_api_contact_load(x, u->from, &c) != 0 || c.state != PT_CONTACT_STATE_FRIEND) return;
    pt_event ev = {.type = PT_EVENT_TYPING, .user = c.name, .typing = u->typing};
    pt_api_emit(x, &ev);
}

int pt_send_typing(pt_ctx *x, const char *to, int typing)
{
    if (x->no_typing) return 0;
    pt_api_contact c;
    int rc = pt_api_contact_by_name(x, to, &c);
    if (rc) return pt_api_fail(x, rc, "you have no friend named '%s'", to);
    PT_API_CALL(rc, x, NULL, messages_setTyping, memcpy(q.to, c.user_id, 16); q.typing = typing != 0);
    return rc;
}

int pt_contacts(pt_ctx *x, pt_contact **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (pt_api_sync_contacts(x) != 0) pt_log_debug("contacts: offline, showing what this device knows");
    pt_api_contact *all;
    size_t na;
    int rc = contact_all(x, &all, &na);
    if (rc) return rc;
    pt_contact *res = calloc(na ? na : 1, sizeof *res);
    if (!res) {
        free(all);
        return PT_ERR_NOMEM;
    }
    for (size_t i = 0; i < na; i++) {
        const pt_api_contact *c = &all[i];
        if (c->state == PT_CONTACT_STATE_NONE || memcmp(c->user_id, x->user_id, 16) == 0) continue;
        pt_contact *o = &res[(*n)++];
        snprintf(o->name, sizeof o->name, "%s", c->name);
        pt_hex_encode(o->user_id, c->user_id, 16);
        o->state = (pt_contact_state)c->state;
        o->status = c->state == PT_CONTACT_STATE_FRIEND ? (pt_status)c->status : PT_PRESENCE_OFFLINE;
        o->verified = c->verified;
        o->key_changed = c->key_changed;
    }
    free(all);
    *out = res;
    return 0;
}

int pt_users_online(pt_ctx *x, pt_user **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    uint8_t after[16] = {0};
    for (int page = 0; page < 1000; page++) {
        pt_api_reply r;
        int rc;
        PT_API_CALL(rc, x, &r, users_list, memcpy(q.after, after, 16); q.limit = 100);
        if (rc) {
            free(*out);
            *out = NULL;
            *n = 0;
            return rc;
        }
        const pt_tl_users_onlineList *l = &r.o.u.users_onlineList;
        for (uint32_t i = 0; i < l->users.n; i++) {
            if (*n == cap) {
                cap = cap ? 2 * cap : 16;
                pt_user *p = realloc(*out, cap * sizeof *p);
                if (!p) {
                    pt_api_reply_free(&r);
                    return PT_ERR_NOMEM;
                }
                *out = p;
            }
            const pt_tl_users_onlineUser *u = &l->users.items[i];
            pt_user *o = &(*out)[(*n)++];
            snprintf(o->name, sizeof o->name, "%.*s", (int)u->username.len, (const char *)u->username.data);
            pt_hex_encode(o->user_id, u->user_id, 16);
            o->status = (pt_status)u->status;
            memcpy(after, u->user_id, 16);
        }
        bool more = l->more && l->users.n > 0;
        pt_api_reply_free(&r);
        if (!more) break;
    }
    return 0;
}

/* ---- trust --------------------------------------------------------------------------------------- */

int pt_contact_safety_number(pt_ctx *x, const char *name, char out[PT_SAFETY_MAX])
{
    pt_api_contact c;
    int rc = pt_api_resolve(x, name, &c);
    if (rc) return rc;
    char digits[PT_SAFETY_DIGITS + 1];
    if ((rc = pt_safety_number(digits, x->id_pk, x->user_id, c.identity_key, c.user_id)) != 0) return rc;
    char f[72];
    pt_safety_format(f, digits);
    snprintf(out, PT_SAFETY_MAX, "%s", f);
    return 0;
}

int pt_contact_safety_qr(pt_ctx *x, const char *name, char out[PT_SAFETY_QR_MAX])
{
    pt_api_contact c;
    int rc = pt_api_resolve(x, name, &c);
    if (rc) return rc;
    char qr[PT_SAFETY_QR_LEN + 1];
    pt_safety_qr(qr, x->id_pk, c.identity_key);
    snprintf(out, PT_SAFETY_QR_MAX, "%s", qr);
    return 0;
}

/* Records the current device set of name as known; verified too when `verified`. */
static int accept_keys(pt_ctx *x, const char *name, bool verified)
{
    pt_api_contact c;
    int rc = pt_api_resolve(x, name, &c);
    if (rc) return rc;
    if ((rc = pt_api_ensure_online(x)) != 0) return pt_api_fail(x, rc, "the server is needed to read %s's current keys", c.name);
    if ((rc = refresh_devices(x, &c)) != 0) return rc;
    if (c.ndev == 0) return pt_api_fail(x, PT_ERR_STATE, "%s has no device with published keys yet", c.name);
    c.verified = verified;
    c.key_changed = 0;
    for (size_t i = 0; i < c.ndev; i++) c.dev[i].known = 1;
    devices_hash(&c, c.known_hash);
    return pt_api_contact_save(x, &c);
}

int pt_contact_verify(pt_ctx *x, const char *name) { return accept_keys(x, name, true); }
int pt_contact_trust(pt_ctx *x, const char *name) { return accept_keys(x, name, false); }

int pt_contact_info(pt_ctx *x, const char *name, pt_contact *out)
{
    pt_api_contact c;
    int rc = pt_api_resolve(x, name, &c);
    if (rc) return rc;
    if (x->online && c.state == PT_CONTACT_STATE_FRIEND && refresh_devices(x, &c) == 0 &&
        (rc = pt_api_contact_save(x, &c)) != 0)
        return rc;
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", c.name);
    pt_hex_encode(out->user_id, c.user_id, 16);
    out->state = (pt_contact_state)c.state;
    out->status = c.state == PT_CONTACT_STATE_FRIEND ? (pt_status)c.status : PT_PRESENCE_OFFLINE;
    out->verified = c.verified;
    out->key_changed = c.key_changed;
    return 0;
}

/* ---- our devices --------------------------------------------------------------------------------- */

int pt_devices(pt_ctx *x, pt_device **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    pt_api_contact me = {0};
    memcpy(me.user_id, x->user_id, 16);
    memcpy(me.identity_key, x->id_pk, 32);
    snprintf(me.name, sizeof me.name, "%s", x->username);
    int rc = refresh_devices(x, &me);
    if (rc) return rc;
    pt_device *res = calloc(me.ndev ? me.ndev : 1, sizeof *res);
    if (!res) return PT_ERR_NOMEM;
    for (size_t i = 0; i < me.ndev; i++) {
        pt_hex_encode(res[i].id, me.dev[i].device, 16);
        char fp[PT_FINGERPRINT_LEN];
        pt_fingerprint(fp, me.dev[i].device);
        snprintf(res[i].fingerprint, sizeof res[i].fingerprint, "%s", fp);
        res[i].this_device = memcmp(me.dev[i].device, x->dev_pk, 32) == 0;
    }
    *out = res;
    *n = me.ndev;
    return 0;
}

int pt_device_revoke(pt_ctx *x, const char *id)
{
    size_t idlen = id ? strlen(id) : 0;
    if (idlen < 4) return pt_api_fail(x, PT_ERR_INVAL, "give at least 4 hex digits of the device id");
    pt_api_contact me = {0};
    memcpy(me.user_id, x->user_id, 16);
    memcpy(me.identity_key, x->id_pk, 32);
    int rc = refresh_devices(x, &me);
    if (rc) return rc;
    const pt_api_dev *hit = NULL;
    for (size_t i = 0; i < me.ndev; i++) {
        char hex[65];
        pt_hex_encode(hex, me.dev[i].device, 32);
        if (strncasecmp(hex, id, idlen) != 0) continue;
        if (hit) return pt_api_fail(x, PT_ERR_INVAL, "'%s' matches more than one device; give more digits", id);
        hit = &me.dev[i];
    }
    if (!hit) return pt_api_fail(x, PT_ERR_NOT_FOUND, "no device of yours starts with '%s' (see 'packtrack device list')", id);
    if (memcmp(hit->device, x->dev_pk, 32) == 0)
        return pt_api_fail(x, PT_ERR_INVAL, "this is the device you are using; revoke it from another one");
    uint8_t msg[sizeof revoke_label - 1 + 32], sig[64];
    memcpy(msg, revoke_label, sizeof revoke_label - 1);
    memcpy(msg + sizeof revoke_label - 1, hit->device, 32);
    if ((rc = pt_ed25519_sign(sig, msg, sizeof msg, x->id_sk)) != 0) return rc;
    PT_API_CALL(rc, x, NULL, devices_revoke, memcpy(q.device, hit->device, 32); q.signature = (pt_tl_bytes){sig, 64});
    if (rc == 0) pt_chat_forget(x->chat, hit->curve);
    if (rc == 0) rc = pt_api_save_session(x, hit->curve);
    return rc;
}
