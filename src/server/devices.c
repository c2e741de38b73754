/*
 * The devices of a user (docs/PROTOCOL.md §6.8): the signed device list read
 * without consuming one-time keys, the sealed blobs that link a new device, and
 * revocation. The server never reads a link blob; it only keeps it for
 * PT_SERVER_LINK_TTL_MS and hands it out once.
 */
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "server/pt_cluster.h"
#include "server/pt_server_int.h"

static const char revoke_label[] = "PT1 revoke device";

/* ---- prekeys.list ------------------------------------------------------------------------------ */

static void reply_bundles(pt_srv_sess *e, uint64_t req, pt_tl_prekeys_bundles *res)
{
    pt_buf out;
    pt_buf_init(&out);
    if (pt_tl_prekeys_bundles_encode(&out, res) == 0) pt_srv_reply(e, req, &out);
    else pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
    pt_buf_free(&out);
}

/* Cluster mode: the devices and signed prekeys are the cluster's (pt_cluster.h): bucket
 * reads, one per device and a watch for the list, made on the store's writer thread
 * (like prekeys.fetch) so that the loop never waits for JetStream. */
typedef struct list_op {
    pt_db_op op;
    pt_srv_reply_to to;
    uint8_t user[16];
    int rc;
    pt_tl_prekeys_bundles res;
    uint32_t n;
    uint8_t device[PT_SERVER_USER_DEVICES_MAX][32];
    pt_cluster_signed sig[PT_SERVER_USER_DEVICES_MAX];
} list_op;

static int list_cluster_apply(sqlite3 *db, void *arg)
{
    (void)db;
    list_op *o = arg;
    pt_cluster *cl = o->to.srv->cluster;
    pt_srv_devlist l = {0};
    int rc = pt_cluster_user(cl, o->user, o->res.identity_key, NULL, &l);
    for (size_t i = 0; rc == 0 && i < l.n && o->n < PT_SERVER_USER_DEVICES_MAX; i++) {
        int r = pt_cluster_prekeys_signed(cl, l.pk[i], &o->sig[o->n]);
        if (r < 0) rc = r;
        else if (r == 1) memcpy(o->device[o->n++], l.pk[i], 32);
    }
    pt_srv_devlist_free(&l);
    o->rc = rc;
    return 0; /* nothing written: answered in done */
}

static void list_cluster_done(void *arg, int rc)
{
    list_op *o = arg;
    pt_srv_sess *e = pt_srv_reply_session(&o->to);
    if (rc == 0) rc = o->rc;
    if (e && rc) {
        bool nf = rc == PT_ERR_NOT_FOUND;
        pt_srv_reply_error(e, o->to.req_msg_id, nf ? PT_RPC_NOT_FOUND : PT_RPC_UNAVAILABLE,
                           nf ? "USER_NOT_FOUND" : "CLUSTER_UNAVAILABLE");
    } else if (e) {
        pt_tl_prekeys_bundle items[PT_SERVER_USER_DEVICES_MAX];
        for (uint32_t i = 0; i < o->n; i++) {
            const pt_cluster_signed *g = &o->sig[i];
            items[i] = (pt_tl_prekeys_bundle){.signed_key_id = g->id,
                                              .signed_key = {g->key, g->len},
                                              .signature = {g->signature, PT_ED25519_SIG_LEN}};
            memcpy(items[i].device, o->device[i], 32);
        }
        o->res.bundles = (pt_tl_vec_prekeys_bundle){.n = o->n, .items = items};
        reply_bundles(e, o->to.req_msg_id, &o->res);
    }
    free(o);
}

static void list_cluster(pt_conn *c, uint64_t req, const pt_tl_prekeys_list *q)
{
    list_op *o = calloc(1, sizeof *o);
    if (!o) {
        pt_srv_reply_error(c->sess, req, PT_RPC_INTERNAL, "OUT_OF_MEMORY");
        return;
    }
    pt_srv_reply_to_init(&o->to, c, req);
    memcpy(o->user, q->user_id, 16);
    o->op = (pt_db_op){.apply = list_cluster_apply, .done = list_cluster_done, .arg = o};
    pt_db_submit(c->srv->db, &o->op);
}

static void rpc_list(pt_conn *c, uint64_t req, const pt_tl_prekeys_list *q)
{
    pt_srv_sess *e = c->sess;
    if (!pt_srv_require_bound(c, req)) return;
    sqlite3 *r = pt_db_reader(c->srv->db);
    int blocked = pt_srv_blocked(r, q->user_id, e->dev->user_id);
    if (blocked != 0) {
        pt_srv_reply_error(e, req, blocked < 0 ? PT_RPC_INTERNAL : PT_RPC_FORBIDDEN,
                           blocked < 0 ? "INTERNAL" : "BLOCKED");
        return;
    }
    if (c->srv->cluster) {
        list_cluster(c, req, q);
        return;
    }
    sqlite3_stmt *st;
    if (pt_db_prepare(r, "SELECT identity_key FROM users WHERE user_id = ?", &st)) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
        return;
    }
    sqlite3_bind_blob(st, 1, q->user_id, 16, SQLITE_STATIC);
    pt_tl_prekeys_bundles res = {0};
    int rc = pt_db_step(st);
    bool found = rc == 1 && sqlite3_column_bytes(st, 0) == 32;
    if (found) memcpy(res.identity_key, sqlite3_column_blob(st, 0), 32);
    sqlite3_finalize(st);
    if (!found) {
        pt_srv_reply_error(e, req, rc < 0 ? PT_RPC_INTERNAL : PT_RPC_NOT_FOUND,
                           rc < 0 ? "INTERNAL" : "USER_NOT_FOUND");
        return;
    }
    if (pt_db_prepare(r, "SELECT p.device_key, p.key_id, p.public, p.signature FROM devices d "
                         "JOIN prekeys p ON p.device_key = d.device_key AND p.kind = 1 "
                         "WHERE d.user_id = ? ORDER BY d.created_ms, d.device_key LIMIT ?", &st)) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
        return;
    }
    sqlite3_bind_blob(st, 1, q->user_id, 16, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, PT_SERVER_USER_DEVICES_MAX);
    pt_tl_prekeys_bundle items[PT_SERVER_USER_DEVICES_MAX];
    uint32_t n = 0;
    while ((rc = pt_db_step(st)) == 1 && n < PT_SERVER_USER_DEVICES_MAX) {
        if (sqlite3_column_bytes(st, 0) != 32 || sqlite3_column_bytes(st, 3) != PT_ED25519_SIG_LEN)
            continue;
        pt_tl_prekeys_bundle *b = &items[n++];
        *b = (pt_tl_prekeys_bundle){
            .signed_key_id = sqlite3_column_int(st, 1),
            .signed_key = {sqlite3_column_blob(st, 2), (uint32_t)sqlite3_column_bytes(st, 2)},
            .signature = {sqlite3_column_blob(st, 3), PT_ED25519_SIG_LEN}};
        memcpy(b->device, sqlite3_column_blob(st, 0), 32);
        /* a column's memory lasts until the next step: the reply gets a copy */
        uint8_t *keep = malloc((size_t)b->signed_key.len + PT_ED25519_SIG_LEN);
        if (!keep) {
            rc = PT_ERR_NOMEM;
            n--;
            break;
        }
        memcpy(keep, b->signed_key.data, b->signed_key.len);
        memcpy(keep + b->signed_key.len, b->signature.data, PT_ED25519_SIG_LEN);
        b->signed_key.data = keep;
        b->signature.data = keep + b->signed_key.len;
    }
    sqlite3_finalize(st);
    if (rc < 0) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
    } else {
        res.bundles = (pt_tl_vec_prekeys_bundle){.n = n, .items = items};
        reply_bundles(e, req, &res);
    }
    for (uint32_t i = 0; i < n; i++) free((void *)items[i].signed_key.data);
}

/* ---- devices.putLink / devices.takeLink ---------------------------------------------------------- */

typedef struct link_op {
    pt_db_op op;
    pt_srv_reply_to to;
    bool take;
    uint8_t link_id[16], user_id[16];
    int64_t now_ms;
    int err_code;
    const char *err_msg;
    size_t len;
    uint8_t blob[PT_SERVER_LINK_MAX];
} link_op;

static int link_apply(sqlite3 *db, void *arg)
{
    link_op *o = arg;
    sqlite3_stmt *st;
    /* expired links go first, whatever the request */
    PT_SRV_TRY(pt_db_prepare(db, "DELETE FROM device_links WHERE expires_ms <= ?", &st));
    sqlite3_bind_int64(st, 1, o->now_ms);
    int rc = pt_db_step(st);
    sqlite3_finalize(st);
    PT_SRV_TRY(rc);
    if (!o->take) {
        PT_SRV_TRY(pt_db_prepare(db, "INSERT INTO device_links(link_id, user_id, blob, expires_ms) "
                                     "VALUES (?,?,?,?)", &st));
        sqlite3_bind_blob(st, 1, o->link_id, 16, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, o->user_id, 16, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, o->blob, (int)o->len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, o->now_ms + PT_SERVER_LINK_TTL_MS);
        rc = pt_db_step(st);
        sqlite3_finalize(st);
        if (rc == PT_ERR_STATE) PT_SRV_FAIL(PT_RPC_CONFLICT, "LINK_ID_TAKEN");
        return rc < 0 ? rc : 0;
    }
    PT_SRV_TRY(pt_db_prepare(db, "DELETE FROM device_links WHERE link_id = ? RETURNING blob", &st));
    sqlite3_bind_blob(st, 1, o->link_id, 16, SQLITE_STATIC);
    rc = pt_db_step(st);
    int len = rc == 1 ? sqlite3_column_bytes(st, 0) : 0;
    if (rc == 1 && len > 0 && len <= PT_SERVER_LINK_MAX) {
        o->len = (size_t)len;
        memcpy(o->blob, sqlite3_column_blob(st, 0), o->len);
    }
    while (rc == 1) rc = pt_db_step(st);
    sqlite3_finalize(st);
    PT_SRV_TRY(rc);
    if (o->len == 0) PT_SRV_FAIL(PT_RPC_NOT_FOUND, "LINK_NOT_FOUND");
    return 0;
}

static void link_done(void *arg, int rc)
{
    link_op *o = arg;
    pt_srv_sess *e = pt_srv_reply_session(&o->to);
    if (e && rc == 0 && o->take) {
        pt_buf out;
        pt_buf_init(&out);
        pt_tl_devices_link r = {.blob = {o->blob, (uint32_t)o->len}};
        if (pt_tl_devices_link_encode(&out, &r) == 0) pt_srv_reply(e, o->to.req_msg_id, &out);
        else pt_srv_reply_error(e, o->to.req_msg_id, PT_RPC_INTERNAL, "INTERNAL");
        pt_buf_free(&out);
    } else if (e && rc == 0) {
        pt_srv_reply_ok(e, o->to.req_msg_id);
    } else if (e) {
        pt_srv_reply_error(e, o->to.req_msg_id, o->err_code ? o->err_code : PT_RPC_INTERNAL,
                           o->err_msg ? o->err_msg : "STORE_FAILED");
    }
    pt_wipe(o->blob, o->len);
    free(o);
}

static void rpc_link(pt_conn *c, uint64_t req, const uint8_t link_id[16], const pt_tl_bytes *blob)
{
    pt_srv_sess *e = c->sess;
    bool take = blob == NULL;
    if (!take && !pt_srv_require_bound(c, req)) return; /* taking needs no user yet */
    if (!take && (blob->len == 0 || blob->len > PT_SERVER_LINK_MAX)) {
        pt_srv_reply_error(e, req, PT_RPC_TOO_LARGE, "LINK_BLOB_INVALID");
        return;
    }
    link_op *o = calloc(1, sizeof *o);
    if (!o) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "OUT_OF_MEMORY");
        return;
    }
    pt_srv_reply_to_init(&o->to, c, req);
    o->take = take;
    memcpy(o->link_id, link_id, 16);
    o->now_ms = (int64_t)pt_env_now_ms(pt_env_default());
    if (!take) {
        memcpy(o->user_id, e->dev->user_id, 16);
        o->len = blob->len;
        memcpy(o->blob, blob->data, blob->len);
    }
    o->op = (pt_db_op){.apply = link_apply, .done = link_done, .arg = o};
    pt_db_submit(c->srv->db, &o->op);
}

/* ---- devices.revoke ------------------------------------------------------------------------------ */

typedef struct revoke_op {
    pt_db_op op;
    pt_srv_reply_to to;
    uint8_t user_id[16], device[32];
    int64_t now_ms;
    int err_code;
    const char *err_msg;
} revoke_op;

static int drop_device_rows(sqlite3 *db, const uint8_t user_id[16], const uint8_t device[32], int64_t now_ms);

static int revoke_apply(sqlite3 *db, void *arg)
{
    revoke_op *o = arg;
    sqlite3_stmt *st;
    PT_SRV_TRY(pt_db_prepare(db, "SELECT 1 FROM devices WHERE device_key = ? AND user_id = ?", &st));
    sqlite3_bind_blob(st, 1, o->device, 32, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, o->user_id, 16, SQLITE_STATIC);
    int rc = pt_db_step(st);
    sqlite3_finalize(st);
    PT_SRV_TRY(rc);
    bool here = rc == 1;
    pt_cluster *cl = o->to.srv->cluster;
    if (cl) { /* first the cluster: no node may list it or hand out its bundle again */
        int cr = pt_cluster_revoke(cl, o->user_id, o->device);
        if (cr == PT_ERR_NOT_FOUND && !here) PT_SRV_FAIL(PT_RPC_NOT_FOUND, "DEVICE_NOT_FOUND");
        if (cr == PT_ERR_IO) PT_SRV_FAIL(PT_RPC_UNAVAILABLE, "CLUSTER_UNAVAILABLE");
        if (!here) return 0; /* bound through another node: its rows are there */
    }
    if (!here) PT_SRV_FAIL(PT_RPC_NOT_FOUND, "DEVICE_NOT_FOUND");
    return drop_device_rows(db, o->user_id, o->device, o->now_ms);
}

/* What the store holds for a revoked device goes: its queue, messages nobody else
 * waits for, its row (prekeys cascade); it is remembered as revoked. Idempotent. */
static int drop_device_rows(sqlite3 *db, const uint8_t user_id[16], const uint8_t device[32], int64_t now_ms)
{
    sqlite3_stmt *st;
    int rc;
    static const char *const steps[] = {
        /* its queue goes, and messages nobody else waits for */
        ("UPDATE messages SET refs = refs - 1 WHERE server_id IN "
         "(SELECT server_id FROM queue WHERE device_key = ?1)"),
        "DELETE FROM queue WHERE device_key = ?1",
        "DELETE FROM messages WHERE refs <= 0",
        "DELETE FROM devices WHERE device_key = ?1", /* prekeys cascade */
        "DELETE FROM prekey_floor WHERE device_key = ?1",
        "INSERT OR IGNORE INTO revoked_devices(device_key, user_id, revoked_ms) VALUES (?1, ?2, ?3)",
    };
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        if ((rc = pt_db_prepare(db, steps[i], &st)) != 0) return rc;
        if (sqlite3_bind_parameter_count(st) >= 1) sqlite3_bind_blob(st, 1, device, 32, SQLITE_STATIC);
        if (sqlite3_bind_parameter_count(st) >= 2) sqlite3_bind_blob(st, 2, user_id, 16, SQLITE_STATIC);
        if (sqlite3_bind_parameter_count(st) >= 3) sqlite3_bind_int64(st, 3, now_ms);
        rc = pt_db_step(st);
        sqlite3_finalize(st);
        if (rc < 0) return rc;
    }
    return 0;
}

void pt_srv_device_revoked(pt_server *s, const uint8_t user_id[16], const uint8_t device[32])
{
    for (pt_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->dev && !c->closing && memcmp(c->peer_pk, device, 32) == 0)
            pt_conn_close(c, "device revoked");
    }
    pt_srv_addrs_drop(s, user_id, device);
    pt_srv_device *d = pt_srv_device_get(s, device);
    if (d) d->bound = false;
    pt_srv_dir_forget_user(s, user_id); /* the in-memory routing follows the store */
}

typedef struct remote_revoke {
    pt_db_op op;
    pt_server *s;
    uint8_t user_id[16], device[32];
    int64_t now_ms;
} remote_revoke;

static int remote_revoke_apply(sqlite3 *db, void *arg)
{
    remote_revoke *o = arg;
    return drop_device_rows(db, o->user_id, o->device, o->now_ms);
}

static void remote_revoke_done(void *arg, int rc)
{
    remote_revoke *o = arg;
    if (rc == 0) pt_srv_queue_sub(o->s, o->device, pt_srv_queue_len(o->s, o->device));
    else pt_log_warn("a device revoked through another node: its rows here stay (%s)", pt_strerror(rc));
    free(o);
}

void pt_srv_device_revoked_remote(pt_server *s, const uint8_t user_id[16], const uint8_t device[32])
{
    pt_srv_device_revoked(s, user_id, device);
    remote_revoke *o = calloc(1, sizeof *o);
    if (!o) return;
    o->s = s;
    memcpy(o->user_id, user_id, 16);
    memcpy(o->device, device, 32);
    o->now_ms = (int64_t)pt_env_now_ms(pt_env_default());
    o->op = (pt_db_op){.apply = remote_revoke_apply, .done = remote_revoke_done, .arg = o};
    pt_db_submit(s->db, &o->op);
}

static void revoke_done(void *arg, int rc)
{
    revoke_op *o = arg;
    pt_server *s = o->to.srv;
    if (rc == 0) {
        char hex[65];
        pt_hex_encode(hex, o->device, 32);
        pt_log_info("device %.16s revoked", hex);
        pt_srv_device_revoked(s, o->user_id, o->device);
        pt_srv_queue_sub(s, o->device, pt_srv_queue_len(s, o->device)); /* its rows went */
    }
    pt_srv_sess *e = pt_srv_reply_session(&o->to);
    if (e && rc == 0) pt_srv_reply_ok(e, o->to.req_msg_id);
    else if (e) pt_srv_reply_error(e, o->to.req_msg_id, o->err_code ? o->err_code : PT_RPC_INTERNAL,
                                   o->err_msg ? o->err_msg : "STORE_FAILED");
    free(o);
}

static void rpc_revoke(pt_conn *c, uint64_t req, const pt_tl_devices_revoke *q)
{
    pt_srv_sess *e = c->sess;
    if (!pt_srv_require_bound(c, req)) return;
    sqlite3_stmt *st;
    uint8_t ik[32];
    if (pt_db_prepare(pt_db_reader(c->srv->db), "SELECT identity_key FROM users WHERE user_id = ?", &st)) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
        return;
    }
    sqlite3_bind_blob(st, 1, e->dev->user_id, 16, SQLITE_STATIC);
    int rc = pt_db_step(st);
    bool ok = rc == 1 && sqlite3_column_bytes(st, 0) == 32;
    if (ok) memcpy(ik, sqlite3_column_blob(st, 0), 32);
    sqlite3_finalize(st);
    uint8_t msg[sizeof revoke_label - 1 + 32];
    memcpy(msg, revoke_label, sizeof revoke_label - 1);
    memcpy(msg + sizeof revoke_label - 1, q->device, 32);
    if (!ok) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
        return;
    }
    if (q->signature.len != PT_ED25519_SIG_LEN ||
        pt_ed25519_verify(q->signature.data, msg, sizeof msg, ik) != 0) {
        pt_srv_reply_error(e, req, PT_RPC_FORBIDDEN, "REVOKE_SIGNATURE_INVALID");
        return;
    }
    revoke_op *o = calloc(1, sizeof *o);
    if (!o) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "OUT_OF_MEMORY");
        return;
    }
    pt_srv_reply_to_init(&o->to, c, req);
    memcpy(o->user_id, e->dev->user_id, 16);
    memcpy(o->device, q->device, 32);
    o->now_ms = (int64_t)pt_env_now_ms(pt_env_default());
    o->op = (pt_db_op){.apply = revoke_apply, .done = revoke_done, .arg = o};
    pt_db_submit(c->srv->db, &o->op);
}

bool pt_srv_devices_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded)
{
    switch (ctor) {
    case PT_TL_PREKEYS_LIST_ID: rpc_list(c, msg_id, decoded); return true;
    case PT_TL_DEVICES_PUTLINK_ID: {
        const pt_tl_devices_putLink *q = decoded;
        rpc_link(c, msg_id, q->link_id, &q->blob);
        return true;
    }
    case PT_TL_DEVICES_TAKELINK_ID: {
        const pt_tl_devices_takeLink *q = decoded;
        rpc_link(c, msg_id, q->link_id, NULL);
        return true;
    }
    case PT_TL_DEVICES_REVOKE_ID: rpc_revoke(c, msg_id, decoded); return true;
    default: return false;
    }
}
