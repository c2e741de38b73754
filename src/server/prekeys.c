/*
 * The prekey directory: each device publishes a signed prekey and a stock of
 * one-time prekeys; anyone may fetch a bundle for a user's devices.
 *
 * Keys are opaque public bytes to the server. The signed prekey's signature is
 * checked against the device's user identity key (what is signed is in
 * schema/packtrack.tl and docs/PROTOCOL.md §6.5), so a server bug cannot swap it
 * silently; clients verify it again. A fetch consumes one one-time key per device
 * inside the writer's transaction (DELETE ... RETURNING): the writer applies one
 * operation at a time, so two fetches can never be handed the same key, and the
 * key is gone from disk before anyone sees it. A device whose stock falls below
 * PT_SERVER_PREKEY_LOW is asked, if connected, to top up (updates.prekeysLow); with
 * none left, bundles carry only the signed prekey.
 *
 * Cluster mode keeps them in the cluster's key-value bucket instead (pt_cluster.h,
 * key p.<device hex>): a device uploads on one node and is fetched on any; an upload
 * and a fetch each rewrite the device's value by compare-and-set, so two fetches on
 * two nodes can never be handed the same one-time key either.
 */
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "server/pt_cluster.h"
#include "server/pt_server_int.h"

#define KIND_ONE_TIME 0
#define KIND_SIGNED 1

static const char signed_prekey_label[] = "PT1 signed prekey";

/* ---- prekeys.upload ------------------------------------------------------------------------------ */

typedef pt_cluster_prekey one_time_key; /* id, len, key */

typedef struct upload_op {
    pt_db_op op;
    pt_srv_reply_to to;
    uint8_t device[32];
    bool has_signed;
    int32_t signed_id;
    uint8_t signed_len;
    uint8_t signed_key[PT_SERVER_PREKEY_MAX];
    uint8_t signature[PT_ED25519_SIG_LEN];
    int count;                      /* one-time keys stored afterwards */
    int err_code;
    const char *err_msg;
    uint32_t n;
    one_time_key keys[];            /* n one-time keys */
} upload_op;

static int count_one_time(sqlite3 *db, const uint8_t device[32])
{
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "SELECT count(*) FROM prekeys WHERE device_key = ? AND kind = ?", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, device, 32, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, KIND_ONE_TIME);
    rc = pt_db_step(st);
    if (rc == 1) rc = sqlite3_column_int(st, 0);
    else if (rc == 0) rc = PT_ERR_IO;
    pt_db_release(st);
    return rc;
}

/* Cluster mode: the bucket, not SQLite. */
static int upload_cluster(upload_op *o)
{
    pt_cluster_signed sig = {.has = o->has_signed, .id = o->signed_id, .len = o->signed_len};
    memcpy(sig.key, o->signed_key, sizeof sig.key);
    memcpy(sig.signature, o->signature, sizeof sig.signature);
    int rc = pt_cluster_prekeys_put(o->to.srv->cluster, o->device, &sig, o->keys, o->n, &o->count);
    if (rc == PT_ERR_TOO_BIG) {
        o->err_code = PT_RPC_TOO_LARGE;
        o->err_msg = "TOO_MANY_PREKEYS";
        return PT_ERR_STATE;
    }
    if (rc) o->err_msg = "CLUSTER_UNAVAILABLE";
    return rc;
}

/* The device's largest one-time key id stored so far (INT64_MIN: none), or a
 * negative pt_err in *rc. */
static int64_t get_floor(sqlite3 *db, const uint8_t device[32], int *rc)
{
    sqlite3_stmt *st;
    if ((*rc = pt_db_stmt(db, "SELECT floor FROM prekey_floor WHERE device_key = ?", &st))) return 0;
    sqlite3_bind_blob(st, 1, device, 32, SQLITE_STATIC);
    int step = pt_db_step(st);
    int64_t floor = step == 1 ? sqlite3_column_int64(st, 0) : INT64_MIN;
    pt_db_release(st);
    *rc = step < 0 ? step : 0;
    return floor;
}

/* One-time key ids only grow (a device numbers its keys ++): only ids above every id
 * the device stored before are taken, so an upload sent again (its answer lost)
 * adds nothing, and a key handed out since never comes back. */
static int upload_apply(sqlite3 *db, void *arg)
{
    upload_op *o = arg;
    if (o->to.srv->cluster) return upload_cluster(o);
    int have = count_one_time(db, o->device), rc;
    if (have < 0) return have;
    int64_t floor = get_floor(db, o->device, &rc), top = floor;
    if (rc) return rc;
    uint32_t fresh = 0;
    for (uint32_t i = 0; i < o->n; i++)
        if (pt_cluster_prekey_new(o->keys, i, floor)) {
            fresh++;
            if (o->keys[i].id > top) top = o->keys[i].id;
        }
    if ((uint32_t)have + fresh > PT_SERVER_PREKEY_STORED_MAX) {
        o->err_code = PT_RPC_TOO_LARGE;
        o->err_msg = "TOO_MANY_PREKEYS";
        return PT_ERR_STATE;
    }
    sqlite3_stmt *st;
    if (o->has_signed) {
        if ((rc = pt_db_stmt(db, "DELETE FROM prekeys WHERE device_key = ? AND kind = ?", &st)))
            return rc;
        sqlite3_bind_blob(st, 1, o->device, 32, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, KIND_SIGNED);
        rc = pt_db_step(st);
        pt_db_release(st);
        if (rc < 0) return rc;
    }
    if ((rc = pt_db_stmt(db, "INSERT INTO prekeys(device_key, kind, key_id, public, signature) "
                                "VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING", &st)))
        return rc;
    if (o->has_signed) {
        sqlite3_bind_blob(st, 1, o->device, 32, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, KIND_SIGNED);
        sqlite3_bind_int(st, 3, o->signed_id);
        sqlite3_bind_blob(st, 4, o->signed_key, o->signed_len, SQLITE_STATIC);
        sqlite3_bind_blob(st, 5, o->signature, sizeof o->signature, SQLITE_STATIC);
        rc = pt_db_step(st);
    }
    for (uint32_t i = 0; i < o->n && rc >= 0; i++) {
        if (!pt_cluster_prekey_new(o->keys, i, floor)) continue;
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        sqlite3_bind_blob(st, 1, o->device, 32, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, KIND_ONE_TIME);
        sqlite3_bind_int(st, 3, o->keys[i].id);
        sqlite3_bind_blob(st, 4, o->keys[i].key, o->keys[i].len, SQLITE_STATIC);
        rc = pt_db_step(st);
    }
    pt_db_release(st);
    if (rc < 0) return rc;
    if (top > floor) {
        if ((rc = pt_db_stmt(db, "INSERT INTO prekey_floor(device_key, floor) VALUES (?, ?) "
                                 "ON CONFLICT(device_key) DO UPDATE SET floor = excluded.floor", &st)))
            return rc;
        sqlite3_bind_blob(st, 1, o->device, 32, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, top);
        rc = pt_db_step(st);
        pt_db_release(st);
        if (rc < 0) return rc;
    }
    o->count = count_one_time(db, o->device);
    return o->count < 0 ? o->count : 0;
}

static void upload_done(void *arg, int rc)
{
    upload_op *o = arg;
    pt_srv_sess *e = pt_srv_reply_session(&o->to);
    if (e && rc == 0) {
        pt_buf out;
        pt_buf_init(&out);
        pt_tl_prekeys_count r = {.one_time_keys = o->count};
        if (pt_tl_prekeys_count_encode(&out, &r) == 0) pt_srv_reply(e, o->to.req_msg_id, &out);
        pt_buf_free(&out);
    } else if (e) {
        pt_srv_reply_error(e, o->to.req_msg_id, o->err_code ? o->err_code : PT_RPC_INTERNAL,
                           o->err_msg ? o->err_msg : "STORE_FAILED");
    }
    free(o);
}

/* The identity key of user, from the store; 0, or PT_ERR_NOT_FOUND. */
static int identity_key(pt_server *s, const uint8_t user[16], uint8_t out[32])
{
    sqlite3_stmt *st;
    int rc = pt_db_stmt(pt_db_reader(s->db), "SELECT identity_key FROM users WHERE user_id = ?", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, user, 16, SQLITE_STATIC);
    rc = pt_db_step(st);
    if (rc == 1 && sqlite3_column_bytes(st, 0) == 32) {
        memcpy(out, sqlite3_column_blob(st, 0), 32);
        rc = 0;
    } else if (rc >= 0) {
        rc = PT_ERR_NOT_FOUND;
    }
    pt_db_release(st);
    return rc;
}

static void rpc_upload(pt_conn *c, uint64_t req, const pt_tl_prekeys_upload *q)
{
    pt_srv_sess *e = c->sess;
    if (!pt_srv_require_bound(c, req)) return;
    if (q->one_time_keys.n > PT_SERVER_PREKEY_UPLOAD_MAX) {
        pt_srv_reply_error(e, req, PT_RPC_TOO_LARGE, "TOO_MANY_PREKEYS");
        return;
    }
    bool has_signed = q->signed_key.len > 0;
    bool bad = has_signed ? q->signed_key.len > PT_SERVER_PREKEY_MAX ||
                                q->signature.len != PT_ED25519_SIG_LEN
                          : q->signature.len != 0;
    for (uint32_t i = 0; i < q->one_time_keys.n; i++) {
        uint32_t len = q->one_time_keys.items[i].key.len;
        bad |= len == 0 || len > PT_SERVER_PREKEY_MAX;
    }
    if (bad) {
        pt_srv_reply_error(e, req, PT_RPC_BAD_REQUEST, "PREKEY_INVALID");
        return;
    }
    if (has_signed) {
        uint8_t ik[32], msg[sizeof signed_prekey_label - 1 + 32 + 4 + PT_SERVER_PREKEY_MAX];
        size_t len = 0;
        memcpy(msg, signed_prekey_label, sizeof signed_prekey_label - 1);
        len += sizeof signed_prekey_label - 1;
        memcpy(msg + len, e->device_pk, 32);
        len += 32;
        pt_put_u32le(msg + len, (uint32_t)q->signed_key_id);
        len += 4;
        memcpy(msg + len, q->signed_key.data, q->signed_key.len);
        len += q->signed_key.len;
        int rc = identity_key(c->srv, e->dev->user_id, ik);
        if (rc == PT_ERR_NOT_FOUND && c->srv->cluster) /* bound on another node */
            rc = pt_cluster_user(c->srv->cluster, e->dev->user_id, ik, NULL, NULL);
        if (rc) {
            pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
            return;
        }
        if (pt_ed25519_verify(q->signature.data, msg, len, ik) != 0) {
            pt_srv_reply_error(e, req, PT_RPC_FORBIDDEN, "PREKEY_SIGNATURE_INVALID");
            return;
        }
    }
    upload_op *o = calloc(1, sizeof *o + q->one_time_keys.n * sizeof(one_time_key));
    if (!o) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "OUT_OF_MEMORY");
        return;
    }
    pt_srv_reply_to_init(&o->to, c, req);
    memcpy(o->device, e->device_pk, 32);
    o->has_signed = has_signed;
    if (has_signed) {
        o->signed_id = q->signed_key_id;
        o->signed_len = (uint8_t)q->signed_key.len;
        memcpy(o->signed_key, q->signed_key.data, q->signed_key.len);
        memcpy(o->signature, q->signature.data, PT_ED25519_SIG_LEN);
    }
    o->n = q->one_time_keys.n;
    for (uint32_t i = 0; i < o->n; i++) {
        o->keys[i].id = q->one_time_keys.items[i].key_id;
        o->keys[i].len = (uint8_t)q->one_time_keys.items[i].key.len;
        memcpy(o->keys[i].key, q->one_time_keys.items[i].key.data, o->keys[i].len);
    }
    o->op = (pt_db_op){.apply = upload_apply, .done = upload_done, .arg = o};
    pt_db_submit(c->srv->db, &o->op);
}

/* ---- prekeys.fetch ---------------------------------------------------------------------------------- */

typedef struct bundle {
    uint8_t device[32];
    int32_t signed_id;
    uint8_t signed_len;
    uint8_t signed_key[PT_SERVER_PREKEY_MAX];
    uint8_t signature[PT_ED25519_SIG_LEN];
    bool has_otk;
    int32_t otk_id;
    uint8_t otk_len;
    uint8_t otk[PT_SERVER_PREKEY_MAX];
    int left;                       /* one-time keys left after this fetch */
} bundle;

typedef struct fetch_op {
    pt_db_op op;
    pt_srv_reply_to to;
    uint8_t user[16], identity_key[32];
    uint8_t device[32];             /* the device asked for */
    bool all;                       /* every device of user instead */
    uint8_t requester[32];          /* the asking device, never its own bundle */
    int err_code;
    const char *err_msg;
    size_t n;
    bundle b[PT_SERVER_USER_DEVICES_MAX];
} fetch_op;

/* Cluster mode: fills b from the bucket (1, 0 or an error, as fetch_device). */
static int fetch_cluster(pt_cluster *c, bundle *b)
{
    pt_cluster_signed sig;
    pt_cluster_prekey otk;
    int rc = pt_cluster_prekeys_take(c, b->device, &sig, &otk, &b->left);
    if (rc != 1) return rc;
    b->signed_id = sig.id;
    b->signed_len = sig.len;
    memcpy(b->signed_key, sig.key, sizeof b->signed_key);
    memcpy(b->signature, sig.signature, sizeof b->signature);
    b->has_otk = otk.len > 0;
    if (b->has_otk) {
        b->otk_id = otk.id;
        b->otk_len = otk.len;
        memcpy(b->otk, otk.key, otk.len);
    }
    return 1;
}

/* Fills b for device: 1 with a bundle, 0 when it has no signed prekey. */
static int fetch_device(pt_server *s, sqlite3 *db, bundle *b)
{
    if (s->cluster) return fetch_cluster(s->cluster, b);
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "SELECT key_id, public, signature FROM prekeys "
                               "WHERE device_key = ? AND kind = ?", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, b->device, 32, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, KIND_SIGNED);
    rc = pt_db_step(st);
    int len = rc == 1 ? sqlite3_column_bytes(st, 1) : 0;
    if (rc == 1 && len > 0 && len <= PT_SERVER_PREKEY_MAX &&
        sqlite3_column_bytes(st, 2) == PT_ED25519_SIG_LEN) {
        b->signed_id = sqlite3_column_int(st, 0);
        b->signed_len = (uint8_t)len;
        memcpy(b->signed_key, sqlite3_column_blob(st, 1), (size_t)len);
        memcpy(b->signature, sqlite3_column_blob(st, 2), PT_ED25519_SIG_LEN);
    } else if (rc >= 0) {
        rc = 0;
    }
    pt_db_release(st);
    if (rc != 1) return rc;
    /* consume the oldest one-time key: removed by the very statement that reads it */
    if ((rc = pt_db_stmt(db, "DELETE FROM prekeys WHERE device_key = ?1 AND kind = ?2 AND key_id = "
                                "(SELECT min(key_id) FROM prekeys WHERE device_key = ?1 AND kind = ?2) "
                                "RETURNING key_id, public", &st)))
        return rc;
    sqlite3_bind_blob(st, 1, b->device, 32, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, KIND_ONE_TIME);
    rc = pt_db_step(st);
    len = rc == 1 ? sqlite3_column_bytes(st, 1) : 0;
    if (rc == 1 && len > 0 && len <= PT_SERVER_PREKEY_MAX) {
        b->has_otk = true;
        b->otk_id = sqlite3_column_int(st, 0);
        b->otk_len = (uint8_t)len;
        memcpy(b->otk, sqlite3_column_blob(st, 1), (size_t)len);
    }
    while (rc == 1) rc = pt_db_step(st); /* run the statement to completion */
    pt_db_release(st);
    if (rc < 0) return rc;
    if ((b->left = count_one_time(db, b->device)) < 0) return b->left;
    return 1;
}

static int fetch_apply(sqlite3 *db, void *arg)
{
    fetch_op *o = arg;
    pt_srv_devlist l = {0};
    int rc = pt_srv_user_devices(db, o->user, o->requester, &l);
    if (rc == 0 && o->to.srv->cluster) {
        /* the devices bound on any node (this node's store knows its own users only) */
        pt_srv_devlist all = {0};
        rc = pt_cluster_user(o->to.srv->cluster, o->user, NULL, NULL, &all);
        for (size_t i = 0; rc == 0 && i < all.n; i++) {
            bool have = memcmp(all.pk[i], o->requester, 32) == 0;
            for (size_t k = 0; k < l.n && !have; k++) have = memcmp(l.pk[k], all.pk[i], 32) == 0;
            if (!have) rc = pt_srv_devlist_add(&l, all.pk[i]);
        }
        if (rc == PT_ERR_NOT_FOUND) rc = 0;
        pt_srv_devlist_free(&all);
        if (rc) o->err_msg = "CLUSTER_UNAVAILABLE";
    }
    if (rc) goto out;
    o->n = 0;
    bool found = o->all;
    for (size_t i = 0; i < l.n && o->n < PT_SERVER_USER_DEVICES_MAX; i++) {
        if (!o->all && memcmp(l.pk[i], o->device, 32) != 0) continue;
        found = true;
        bundle *b = &o->b[o->n];
        memset(b, 0, sizeof *b);
        memcpy(b->device, l.pk[i], 32);
        if ((rc = fetch_device(o->to.srv, db, b)) < 0) goto out;
        o->n += (size_t)rc;
    }
    rc = 0;
    if (o->n == 0) {
        o->err_code = PT_RPC_NOT_FOUND;
        o->err_msg = found ? "NO_PREKEYS" : "DEVICE_NOT_FOUND";
        rc = PT_ERR_STATE;
    }
out:
    pt_srv_devlist_free(&l);
    return rc;
}

static void fetch_done(void *arg, int rc)
{
    fetch_op *o = arg;
    pt_server *s = o->to.srv;
    if (rc == 0) { /* ask the devices running low to top up */
        for (size_t i = 0; i < o->n; i++) {
            if (o->b[i].left >= PT_SERVER_PREKEY_LOW) continue;
            pt_buf b;
            pt_buf_init(&b);
            pt_tl_updates_prekeysLow u = {.one_time_keys = o->b[i].left};
            if (pt_tl_updates_prekeysLow_encode(&b, &u) == 0) pt_srv_push_device(s, o->b[i].device, NULL, &b);
            pt_buf_free(&b);
        }
    }
    pt_srv_sess *e = pt_srv_reply_session(&o->to);
    if (e && rc == 0) {
        pt_tl_prekeys_bundle items[PT_SERVER_USER_DEVICES_MAX];
        for (size_t i = 0; i < o->n; i++) {
            const bundle *b = &o->b[i];
            items[i] = (pt_tl_prekeys_bundle){
                .signed_key_id = b->signed_id, .signed_key = {b->signed_key, b->signed_len},
                .signature = {b->signature, PT_ED25519_SIG_LEN},
                .one_time_key_id = b->has_otk ? b->otk_id : 0,
                .one_time_key = {b->has_otk ? b->otk : NULL, b->has_otk ? b->otk_len : 0}};
            memcpy(items[i].device, b->device, 32);
        }
        pt_tl_prekeys_bundles r = {.bundles = {.n = (uint32_t)o->n, .items = items}};
        memcpy(r.identity_key, o->identity_key, 32);
        pt_buf out;
        pt_buf_init(&out);
        if (pt_tl_prekeys_bundles_encode(&out, &r) == 0) pt_srv_reply(e, o->to.req_msg_id, &out);
        else pt_srv_reply_error(e, o->to.req_msg_id, PT_RPC_INTERNAL, "INTERNAL");
        pt_buf_free(&out);
    } else if (e) {
        pt_srv_reply_error(e, o->to.req_msg_id, o->err_code ? o->err_code : PT_RPC_INTERNAL,
                           o->err_msg ? o->err_msg : "STORE_FAILED");
    }
    free(o);
}

static void rpc_fetch(pt_conn *c, uint64_t req, const pt_tl_prekeys_fetch *q)
{
    static const uint8_t zero[32];
    pt_srv_sess *e = c->sess;
    if (!pt_srv_require_bound(c, req)) return;
    fetch_op *o = calloc(1, sizeof *o);
    if (!o) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "OUT_OF_MEMORY");
        return;
    }
    int rc = identity_key(c->srv, q->user_id, o->identity_key);
    if (rc == PT_ERR_NOT_FOUND && c->srv->cluster) /* a user bound on another node */
        rc = pt_cluster_user(c->srv->cluster, q->user_id, o->identity_key, NULL, NULL);
    int blocked = rc == 0 ? pt_srv_dir_blocked(c->srv, q->user_id, e->dev->user_id) : 0;
    if (rc || blocked) {
        if (rc == PT_ERR_NOT_FOUND) pt_srv_reply_error(e, req, PT_RPC_NOT_FOUND, "USER_NOT_FOUND");
        else if (blocked > 0) pt_srv_reply_error(e, req, PT_RPC_FORBIDDEN, "BLOCKED");
        else pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
        free(o);
        return;
    }
    pt_srv_reply_to_init(&o->to, c, req);
    memcpy(o->user, q->user_id, 16);
    memcpy(o->device, q->device, 32);
    o->all = memcmp(q->device, zero, 32) == 0;
    memcpy(o->requester, e->device_pk, 32);
    o->op = (pt_db_op){.apply = fetch_apply, .done = fetch_done, .arg = o};
    pt_db_submit(c->srv->db, &o->op);
}

bool pt_srv_prekeys_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded)
{
    switch (ctor) {
    case PT_TL_PREKEYS_UPLOAD_ID: rpc_upload(c, msg_id, decoded); return true;
    case PT_TL_PREKEYS_FETCH_ID: rpc_fetch(c, msg_id, decoded); return true;
    default: return false;
    }
}
