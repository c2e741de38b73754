/*
 * Identities and store-and-forward messages.
 *
 * A send is forwarded to the recipient's connected devices at once (without
 * waiting for the disk) and written, with one queue row per recipient device,
 * through the store's group-commit writer; the sender gets messages.sent only
 * after that commit. A device deletes messages from its queue with
 * messages.received; until then they are delivered again by messages.sync, and
 * the client drops duplicates by server_id.
 *
 * Everything else that is stored and forwarded (group messages, receipts, contact
 * notices, group events) is an "item" of another kind in the same two tables and
 * goes through the same helpers (pt_srv_item_*, pt_srv_push_*, pt_srv_forward).
 */
#include <stdio.h>
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "pt_tl.h"
#include "server/pt_cluster.h"
#include "server/pt_server_int.h"
#include "server/pt_username.h"
#include "store/pt_db.h"

static const char device_cert_label[] = "PT1 device cert";

/* ---- the device registry ---------------------------------------------------------------- */

static size_t dev_hash(const uint8_t pk[32], size_t nb) { return (size_t)(pt_get_u64le(pk) % nb); }

int pt_srv_devices_init(pt_server *s)
{
    s->dev_nbuckets = 1024;
    s->dev_buckets = calloc(s->dev_nbuckets, sizeof *s->dev_buckets);
    return s->dev_buckets ? 0 : PT_ERR_NOMEM;
}

void pt_srv_devices_free(pt_server *s)
{
    for (size_t i = 0; s->dev_buckets && i < s->dev_nbuckets; i++) {
        for (pt_srv_device *d = s->dev_buckets[i], *next; d; d = next) {
            next = d->next;
            if (d->cluster_sub) pt_cluster_device_down(s->cluster, &d->cluster_sub);
            free(d);
        }
    }
    free(s->dev_buckets);
    s->dev_buckets = NULL;
}

/* Reads the device's binding from the store. */
static void load_binding(pt_server *s, pt_srv_device *d)
{
    sqlite3_stmt *st;
    if (!s->db ||
        pt_db_stmt(pt_db_reader(s->db), "SELECT user_id FROM devices WHERE device_key = ?", &st))
        return;
    sqlite3_bind_blob(st, 1, d->pk, 32, SQLITE_STATIC);
    if (pt_db_step(st) == 1 && sqlite3_column_bytes(st, 0) == 16) {
        memcpy(d->user_id, sqlite3_column_blob(st, 0), 16);
        d->bound = true;
    }
    pt_db_release(st);
    /* cluster mode: bound on another node (a blocking read of the bucket, on the loop,
     * the first time this node sees the device) */
    if (!d->bound && s->cluster && pt_cluster_device_user(s->cluster, d->pk, d->user_id) == 0) d->bound = true;
}

static pt_srv_device *dev_find(pt_server *s, const uint8_t pk[32])
{
    for (pt_srv_device *d = s->dev_buckets[dev_hash(pk, s->dev_nbuckets)]; d; d = d->next)
        if (memcmp(d->pk, pk, 32) == 0) return d;
    return NULL;
}

pt_srv_device *pt_srv_device_get(pt_server *s, const uint8_t pk[32])
{
    pt_srv_device *d = dev_find(s, pk);
    if (d) return d;
    size_t h = dev_hash(pk, s->dev_nbuckets);
    d = calloc(1, sizeof *d);
    if (!d) return NULL;
    memcpy(d->pk, pk, 32);
    load_binding(s, d);
    d->next = s->dev_buckets[h];
    s->dev_buckets[h] = d;
    s->dev_n++;
    return d;
}

void pt_srv_device_add_session(pt_srv_device *d, pt_srv_sess *e)
{
    e->dev = d;
    e->dev_next = d->sessions;
    d->sessions = e;
}

/* A device with neither sessions nor connections is forgotten (its binding
 * lives in the store). */
static void device_maybe_free(pt_server *s, pt_srv_device *d)
{
    if (d->sessions || d->nconns) return;
    pt_srv_device **pp = &s->dev_buckets[dev_hash(d->pk, s->dev_nbuckets)];
    while (*pp != d) pp = &(*pp)->next;
    *pp = d->next;
    free(d);
    s->dev_n--;
}

void pt_srv_device_remove_session(pt_server *s, pt_srv_sess *e)
{
    pt_srv_device *d = e->dev;
    if (!d) return;
    for (pt_srv_sess **pp = &d->sessions; *pp; pp = &(*pp)->dev_next) {
        if (*pp == e) {
            *pp = e->dev_next;
            break;
        }
    }
    e->dev = NULL;
    device_maybe_free(s, d);
}

int pt_srv_device_conn_up(pt_server *s, pt_conn *c)
{
    pt_srv_device *d = pt_srv_device_get(s, c->peer_pk);
    if (!d) return PT_ERR_NOMEM;
    c->dev = d;
    d->nconns++;
    if (s->cluster && d->nconns == 1) pt_cluster_device_up(s->cluster, d->pk, &d->cluster_sub);
    if (d->bound) {
        c->online = true;
        pt_srv_presence_conn(s, d->user_id, true);
    }
    return 0;
}

void pt_srv_device_conn_down(pt_server *s, pt_conn *c)
{
    pt_srv_device *d = c->dev;
    if (!d) return;
    c->dev = NULL;
    d->nconns--;
    if (d->nconns == 0) d->probe_id = 0; /* its push is lost: no sample (messaging.c probe_*) */
    if (d->nconns == 0 && d->cluster_sub) pt_cluster_device_down(s->cluster, &d->cluster_sub);
    if (d->nconns == 0 && d->bound) pt_srv_addrs_drop(s, d->user_id, d->pk); /* offline: unreachable */
    if (c->online) {
        c->online = false;
        pt_srv_presence_conn(s, d->user_id, false);
    }
    device_maybe_free(s, d);
}

/* ---- replies ----------------------------------------------------------------------------- */

typedef pt_srv_reply_to reply_to;

void pt_srv_reply_to_init(pt_srv_reply_to *r, pt_conn *c, uint64_t req)
{
    r->srv = c->srv;
    memcpy(r->device_pk, c->sess->device_pk, 32);
    r->session_id = c->sess->session_id;
    r->req_msg_id = req;
}

pt_srv_sess *pt_srv_reply_session(const pt_srv_reply_to *r)
{
    pt_srv_sess *e = pt_srv_sess_lookup(r->srv, r->device_pk, r->session_id);
    if (!e) pt_log_debug("reply to %016llx dropped: its session is gone",
                         (unsigned long long)r->req_msg_id);
    return e;
}

#define reply_to_init pt_srv_reply_to_init
#define reply_session pt_srv_reply_session

/* Encode buffers for the updates and replies of the message path, which the session
 * copies at once: one per loop thread, kept, so that they cost no malloc and no wipe
 * per message (they hold routing data and end-to-end ciphertext, nothing secret). A
 * nested use (a flush that closes a connection, which tells someone) gets its own. */
static _Thread_local pt_buf tl_enc;
static _Thread_local bool tl_enc_busy;

static pt_buf *enc_take(pt_buf *own)
{
    if (tl_enc_busy) {
        pt_buf_init(own);
        return own;
    }
    tl_enc_busy = true;
    pt_buf_reset(&tl_enc);
    return &tl_enc;
}

static void enc_give(pt_buf *b, pt_buf *own)
{
    if (b == own) pt_buf_free(own);
    else tl_enc_busy = false;
}

void pt_srv_enc_free(void)
{
    pt_buf_free(&tl_enc);
    tl_enc_busy = false;
}

void pt_srv_reply_ok(pt_srv_sess *e, uint64_t req)
{
    pt_buf own, *out = enc_take(&own);
    pt_tl_pt_ok ok;
    memset(&ok, 0, sizeof ok);
    if (pt_tl_pt_ok_encode(out, &ok) == 0) pt_srv_reply(e, req, out);
    enc_give(out, &own);
}

bool pt_srv_require_bound(pt_conn *c, uint64_t req)
{
    if (c->sess->dev && c->sess->dev->bound) return true;
    pt_srv_reply_error(c->sess, req, PT_RPC_NOT_BOUND, "DEVICE_NOT_BOUND");
    return false;
}

/* "USERNAME_INVALID: <the rule broken, in English>" */
static void reply_username_error(pt_srv_sess *e, uint64_t req, pt_username_reason why)
{
    char msg[256];
    snprintf(msg, sizeof msg, "USERNAME_INVALID: %s", pt_username_reason_str(why));
    pt_srv_reply_error(e, req, why == PT_UN_INTERNAL ? PT_RPC_INTERNAL : PT_RPC_BAD_REQUEST, msg);
}

/* ---- auth.bindUsername ---------------------------------------------------------------------- */

typedef struct bind_op {
    pt_db_op op;
    reply_to to;
    uint8_t device_pk[32], identity_key[32], user_id[16];
    uint8_t cert[PT_ED25519_SIG_LEN];
    char display[PT_USERNAME_DISPLAY_SIZE], key[PT_USERNAME_KEY_SIZE],
        skeleton[PT_USERNAME_SKELETON_SIZE];
    int err_code;          /* rpc error to answer, 0 on success */
    const char *err_msg;
} bind_op;

static int bind_apply(sqlite3 *db, void *arg)
{
    bind_op *b = arg;
    sqlite3_stmt *st;
    int rc;
    /* the user: new, or the same identity key again */
    if ((rc = pt_db_stmt(db, "SELECT identity_key, username_key FROM users WHERE user_id = ?", &st)))
        return rc;
    sqlite3_bind_blob(st, 1, b->user_id, 16, SQLITE_STATIC);
    rc = pt_db_step(st);
    bool exists = rc == 1;
    if (exists) {
        const void *k = sqlite3_column_blob(st, 0);
        const unsigned char *un = sqlite3_column_text(st, 1);
        if (sqlite3_column_bytes(st, 0) != 32 || memcmp(k, b->identity_key, 32) != 0) {
            b->err_code = PT_RPC_CONFLICT, b->err_msg = "USER_ID_COLLISION";
        } else if (un && strcmp((const char *)un, b->key) != 0) {
            b->err_code = PT_RPC_CONFLICT, b->err_msg = "USER_HAS_ANOTHER_USERNAME";
        }
    }
    pt_db_release(st);
    if (rc < 0) return rc;
    if (b->err_code) return PT_ERR_STATE;
    if (!exists) {
        /* retired_usernames: a deleted user's name stays taken (packtrackctl(8)) */
        if ((rc = pt_db_stmt(db, "SELECT username_key = ?1 FROM users WHERE username_key = ?1 "
                                    "OR username_skeleton = ?2 UNION ALL SELECT username_key = ?1 "
                                    "FROM retired_usernames WHERE username_key = ?1 "
                                    "OR username_skeleton = ?2", &st)))
            return rc;
        sqlite3_bind_text(st, 1, b->key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, b->skeleton, -1, SQLITE_STATIC);
        rc = pt_db_step(st);
        if (rc == 1) {
            b->err_code = PT_RPC_CONFLICT;
            b->err_msg = sqlite3_column_int(st, 0) ? "USERNAME_TAKEN" : "USERNAME_CONFUSABLE";
        }
        pt_db_release(st);
        if (rc < 0) return rc;
        if (b->err_code) return PT_ERR_STATE;
        if ((rc = pt_db_stmt(db, "INSERT INTO users(user_id, identity_key, username, username_key,"
                                    " username_skeleton, created_ms) VALUES (?,?,?,?,?,?)", &st)))
            return rc;
        sqlite3_bind_blob(st, 1, b->user_id, 16, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, b->identity_key, 32, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, b->display, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, b->key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, b->skeleton, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)pt_env_now_ms(pt_env_default()));
        rc = pt_db_step(st);
        pt_db_release(st);
        if (rc == PT_ERR_STATE) b->err_code = PT_RPC_CONFLICT, b->err_msg = "USERNAME_TAKEN";
        if (rc < 0) return rc;
    }
    /* a revoked device never binds again */
    if ((rc = pt_db_prepare(db, "SELECT 1 FROM revoked_devices WHERE device_key = ?", &st))) return rc;
    sqlite3_bind_blob(st, 1, b->device_pk, 32, SQLITE_STATIC);
    rc = pt_db_step(st);
    sqlite3_finalize(st);
    if (rc < 0) return rc;
    if (rc == 1) {
        b->err_code = PT_RPC_FORBIDDEN, b->err_msg = "DEVICE_REVOKED";
        return PT_ERR_STATE;
    }
    /* the device: bound once, to one user */
    if ((rc = pt_db_stmt(db, "INSERT INTO devices(device_key, user_id, cert, created_ms) "
                                "VALUES (?,?,?,?) ON CONFLICT(device_key) DO NOTHING", &st)))
        return rc;
    sqlite3_bind_blob(st, 1, b->device_pk, 32, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, b->user_id, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, b->cert, sizeof b->cert, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)pt_env_now_ms(pt_env_default()));
    rc = pt_db_step(st);
    pt_db_release(st);
    if (rc < 0) return rc;
    if ((rc = pt_db_stmt(db, "SELECT user_id FROM devices WHERE device_key = ?", &st))) return rc;
    sqlite3_bind_blob(st, 1, b->device_pk, 32, SQLITE_STATIC);
    rc = pt_db_step(st);
    if (rc == 1 && (sqlite3_column_bytes(st, 0) != 16 ||
                    memcmp(sqlite3_column_blob(st, 0), b->user_id, 16) != 0))
        b->err_code = PT_RPC_CONFLICT, b->err_msg = "DEVICE_BOUND_TO_ANOTHER_USER";
    pt_db_release(st);
    if (rc < 0) return rc;
    if (!b->err_code && b->to.srv->cluster) {
        /* last, once everything local agrees: the name and the device for the whole
         * cluster (a JetStream round trip on this writer thread; binds are rare) */
        const char *why = "CLUSTER_UNAVAILABLE";
        rc = pt_cluster_bind(b->to.srv->cluster, b->user_id, b->identity_key, b->display, b->key,
                             b->skeleton, b->device_pk, &why);
        if (rc) b->err_code = rc == PT_ERR_EXISTS ? PT_RPC_CONFLICT : PT_RPC_UNAVAILABLE, b->err_msg = why;
    }
    return b->err_code ? PT_ERR_STATE : 0;
}

static void bind_done(void *arg, int rc)
{
    bind_op *b = arg;
    pt_srv_sess *e = reply_session(&b->to);
    if (rc == 0) {
        /* a device without sessions has no entry: the store has its binding */
        pt_srv_device *d = dev_find(b->to.srv, b->device_pk);
        if (d && !d->bound) {
            d->bound = true;
            memcpy(d->user_id, b->user_id, 16);
            for (pt_conn *c = b->to.srv->conns; c; c = c->next) { /* it counts for its user now */
                if (c->dev != d || c->online) continue;
                c->online = true;
                pt_srv_presence_conn(b->to.srv, d->user_id, true);
            }
        }
        pt_srv_dir_device_bound(b->to.srv, b->user_id, b->device_pk);
        char hex[33];
        pt_hex_encode(hex, b->user_id, 16);
        pt_log_info("user %s bound username \"%s\"", hex, b->display);
    } else if (b->err_msg && strcmp(b->err_msg, "USER_ID_COLLISION") == 0) {
        char hex[33];
        pt_hex_encode(hex, b->user_id, 16);
        pt_log_warn("user id collision: another identity key already has user id %s; "
                    "\"%s\" refused", hex, b->display);
    }
    if (e) {
        if (rc == 0) {
            pt_buf out;
            pt_buf_init(&out);
            pt_tl_auth_bound r = {.username = {(const uint8_t *)b->display, (uint32_t)strlen(b->display)}};
            memcpy(r.user_id, b->user_id, 16);
            if (pt_tl_auth_bound_encode(&out, &r) == 0) pt_srv_reply(e, b->to.req_msg_id, &out);
            pt_buf_free(&out);
        } else {
            pt_srv_reply_error(e, b->to.req_msg_id, b->err_code ? b->err_code : PT_RPC_INTERNAL,
                               b->err_msg ? b->err_msg : "INTERNAL");
        }
    }
    free(b);
}

static void rpc_bind(pt_conn *c, uint64_t req, const pt_tl_auth_bindUsername *q)
{
    pt_srv_sess *e = c->sess;
    if (q->device_cert.len != PT_ED25519_SIG_LEN) {
        pt_srv_reply_error(e, req, PT_RPC_BAD_REQUEST, "BAD_DEVICE_CERT");
        return;
    }
    uint8_t msg[sizeof device_cert_label - 1 + 32];
    memcpy(msg, device_cert_label, sizeof device_cert_label - 1);
    memcpy(msg + sizeof device_cert_label - 1, e->device_pk, 32);
    if (pt_ed25519_verify(q->device_cert.data, msg, sizeof msg, q->identity_key) != 0) {
        pt_srv_reply_error(e, req, PT_RPC_FORBIDDEN, "DEVICE_CERT_INVALID");
        return;
    }
    bind_op *b = calloc(1, sizeof *b);
    if (!b) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "OUT_OF_MEMORY");
        return;
    }
    pt_username_reason why;
    if (pt_username_check((const char *)q->name.data, q->name.len, b->display, b->key, b->skeleton,
                          &why) != 0) {
        reply_username_error(e, req, why);
        free(b);
        return;
    }
    reply_to_init(&b->to, c, req);
    memcpy(b->device_pk, e->device_pk, 32);
    memcpy(b->identity_key, q->identity_key, 32);
    memcpy(b->cert, q->device_cert.data, PT_ED25519_SIG_LEN);
    if (pt_blake2b(b->user_id, 16, q->identity_key, 32, NULL, 0) != 0) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
        free(b);
        return;
    }
    unsigned bits = c->srv->cfg.test_user_id_bits; /* tests only: see pt_server_config */
    if (bits) {
        for (unsigned i = 0; i < 16; i++) {
            if (i * 8 >= bits) b->user_id[i] = 0;
            else if (i * 8 + 8 > bits) b->user_id[i] &= (uint8_t)(0xff00u >> (bits - i * 8));
        }
    }
    b->op = (pt_db_op){.apply = bind_apply, .done = bind_done, .arg = b};
    pt_db_submit(c->srv->db, &b->op);
}

/* ---- users.resolve ----------------------------------------------------------------------------- */

/* Cluster mode: answers users.user for a user this node's store does not have, from
 * the cluster directory (a blocking JetStream read on the loop: users of other nodes
 * only). */
static void reply_cluster_user(pt_conn *c, uint64_t req, const uint8_t user_id[16])
{
    char display[PT_CLUSTER_NAME_SIZE];
    pt_tl_users_user u;
    memset(&u, 0, sizeof u);
    int rc = pt_cluster_user(c->srv->cluster, user_id, u.identity_key, display, NULL);
    if (rc) {
        if (rc == PT_ERR_NOT_FOUND) pt_srv_reply_error(c->sess, req, PT_RPC_NOT_FOUND, "USER_NOT_FOUND");
        else pt_srv_reply_error(c->sess, req, PT_RPC_UNAVAILABLE, "CLUSTER_UNAVAILABLE");
        return;
    }
    memcpy(u.user_id, user_id, 16);
    u.username = (pt_tl_bytes){(const uint8_t *)display, (uint32_t)strlen(display)};
    pt_buf out;
    pt_buf_init(&out);
    if (pt_tl_users_user_encode(&out, &u) == 0) pt_srv_reply(c->sess, req, &out);
    pt_buf_free(&out);
}

static void rpc_resolve(pt_conn *c, uint64_t req, const pt_tl_users_resolve *q)
{
    char display[PT_USERNAME_DISPLAY_SIZE], key[PT_USERNAME_KEY_SIZE],
        skel[PT_USERNAME_SKELETON_SIZE];
    pt_username_reason why;
    if (pt_username_check((const char *)q->name.data, q->name.len, display, key, skel, &why) != 0) {
        reply_username_error(c->sess, req, why);
        return;
    }
    sqlite3_stmt *st;
    if (pt_db_stmt(pt_db_reader(c->srv->db),
                      "SELECT user_id, username, identity_key FROM users WHERE username_key = ?", &st)) {
        pt_srv_reply_error(c->sess, req, PT_RPC_INTERNAL, "INTERNAL");
        return;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (pt_db_step(st) != 1 && c->srv->cluster) { /* a user of another node? */
        pt_db_release(st);
        uint8_t user_id[16];
        int rc = pt_cluster_resolve(c->srv->cluster, key, user_id);
        if (rc == 0) reply_cluster_user(c, req, user_id);
        else if (rc == PT_ERR_NOT_FOUND) pt_srv_reply_error(c->sess, req, PT_RPC_NOT_FOUND, "USER_NOT_FOUND");
        else pt_srv_reply_error(c->sess, req, PT_RPC_UNAVAILABLE, "CLUSTER_UNAVAILABLE");
        return;
    }
    if (sqlite3_column_bytes(st, 0) == 16 && sqlite3_column_bytes(st, 2) == 32) {
        pt_tl_users_user u = {.username = {sqlite3_column_text(st, 1),
                                           (uint32_t)sqlite3_column_bytes(st, 1)}};
        memcpy(u.user_id, sqlite3_column_blob(st, 0), 16);
        memcpy(u.identity_key, sqlite3_column_blob(st, 2), 32);
        pt_buf out;
        pt_buf_init(&out);
        if (pt_tl_users_user_encode(&out, &u) == 0) pt_srv_reply(c->sess, req, &out);
        pt_buf_free(&out);
    } else {
        pt_srv_reply_error(c->sess, req, PT_RPC_NOT_FOUND, "USER_NOT_FOUND");
    }
    pt_db_release(st);
}

/* ---- users.get ------------------------------------------------------------------------------ */

static void rpc_get_user(pt_conn *c, uint64_t req, const pt_tl_users_get *q)
{
    sqlite3_stmt *st;
    if (pt_db_stmt(pt_db_reader(c->srv->db),
                      "SELECT username, identity_key FROM users WHERE user_id = ?", &st)) {
        pt_srv_reply_error(c->sess, req, PT_RPC_INTERNAL, "INTERNAL");
        return;
    }
    sqlite3_bind_blob(st, 1, q->user_id, 16, SQLITE_STATIC);
    if (pt_db_step(st) != 1 && c->srv->cluster) { /* a user of another node? */
        pt_db_release(st);
        reply_cluster_user(c, req, q->user_id);
        return;
    }
    if (sqlite3_column_bytes(st, 1) == 32) {
        pt_tl_users_user u = {.username = {sqlite3_column_text(st, 0),
                                           (uint32_t)sqlite3_column_bytes(st, 0)}};
        memcpy(u.user_id, q->user_id, 16);
        memcpy(u.identity_key, sqlite3_column_blob(st, 1), 32);
        pt_buf out;
        pt_buf_init(&out);
        if (pt_tl_users_user_encode(&out, &u) == 0) pt_srv_reply(c->sess, req, &out);
        pt_buf_free(&out);
    } else {
        pt_srv_reply_error(c->sess, req, PT_RPC_NOT_FOUND, "USER_NOT_FOUND");
    }
    pt_db_release(st);
}

/* ---- device lists, queues, blocks ------------------------------------------------------------ */

int pt_srv_devlist_add(pt_srv_devlist *l, const uint8_t pk[32])
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        uint8_t(*p)[32] = l->borrowed ? malloc(cap * sizeof *l->pk) : realloc(l->pk, cap * sizeof *l->pk);
        if (!p) return PT_ERR_NOMEM;
        if (l->borrowed && l->n) memcpy(p, l->pk, l->n * sizeof *l->pk);
        l->pk = p;
        l->cap = cap;
        l->borrowed = false;
    }
    memcpy(l->pk[l->n++], pk, 32);
    return 0;
}

void pt_srv_devlist_free(pt_srv_devlist *l)
{
    if (!l->borrowed) free(l->pk);
    memset(l, 0, sizeof *l);
}

int pt_srv_user_devices(sqlite3 *db, const uint8_t user[16], const uint8_t *skip, pt_srv_devlist *out)
{
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "SELECT device_key FROM devices WHERE user_id = ? LIMIT ?", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, user, 16, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, PT_SERVER_USER_DEVICES_MAX);
    while ((rc = pt_db_step(st)) == 1) {
        if (sqlite3_column_bytes(st, 0) != 32) continue;
        const uint8_t *pk = sqlite3_column_blob(st, 0);
        if (skip && memcmp(pk, skip, 32) == 0) continue;
        if ((rc = pt_srv_devlist_add(out, pk)) != 0) break;
    }
    pt_db_release(st);
    return rc < 0 ? rc : 0;
}

int pt_srv_user_devices_any(pt_cluster *c, sqlite3 *db, const uint8_t user[16], const uint8_t *skip,
                            pt_srv_devlist *out)
{
    if (!c) return pt_srv_user_devices(db, user, skip, out);
    pt_srv_devlist all = {0};
    int rc = pt_cluster_user(c, user, NULL, NULL, &all);
    if (rc == PT_ERR_NOT_FOUND) rc = 0;
    for (size_t i = 0; i < all.n && rc == 0; i++)
        if (!skip || memcmp(all.pk[i], skip, 32) != 0) rc = pt_srv_devlist_add(out, all.pk[i]);
    pt_srv_devlist_free(&all);
    return rc;
}

int pt_srv_user_known(pt_cluster *c, sqlite3 *db, const uint8_t user[16])
{
    int rc = pt_srv_user_exists(db, user);
    if (rc != 0 || !c) return rc;
    rc = pt_cluster_user(c, user, NULL, NULL, NULL);
    return rc == 0 ? 1 : rc == PT_ERR_NOT_FOUND ? 0 : rc;
}

int pt_srv_copy_newer(sqlite3 *db, const uint8_t *record, size_t len, uint32_t version)
{
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "SELECT version FROM copy_versions WHERE record = ?", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, record, (int)len, SQLITE_STATIC);
    rc = pt_db_step(st);
    int64_t held = rc == 1 ? sqlite3_column_int64(st, 0) : -1;
    pt_db_release(st);
    if (rc < 0) return rc;
    if (held > (int64_t)version) /* the watch lagging behind a write of this node's */
        pt_log_info("cluster: version %u of a %s arrived after version %lld; not copied over it", version,
                    record[0] == 'g' ? "group" : "relation", (long long)held);
    if (held >= (int64_t)version) return 0;
    rc = pt_db_stmt(db, "INSERT OR REPLACE INTO copy_versions(record, version) VALUES (?, ?)", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, record, (int)len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, version);
    rc = pt_db_step(st);
    pt_db_release(st);
    return rc < 0 ? rc : 1;
}

int pt_srv_queue_count(sqlite3 *db, const uint8_t device[32])
{
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "SELECT count(*) FROM queue WHERE device_key = ?", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, device, 32, SQLITE_STATIC);
    rc = pt_db_step(st);
    int n = rc == 1 ? sqlite3_column_int(st, 0) : (rc < 0 ? rc : PT_ERR_IO);
    pt_db_release(st);
    return n;
}

int pt_srv_queues_full(sqlite3 *db, const pt_srv_devlist *l, uint32_t quota)
{
    for (size_t i = 0; i < l->n; i++) {
        int n = pt_srv_queue_count(db, l->pk[i]);
        if (n < 0) return n;
        if ((uint32_t)n >= quota) return 1;
    }
    return 0;
}

int pt_srv_blocked(sqlite3 *db, const uint8_t by[16], const uint8_t whom[16])
{
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "SELECT 1 FROM contacts WHERE user_id = ? AND peer_id = ? AND state = ?",
                           &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, by, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, whom, 16, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, PT_CONTACT_BLOCKED);
    rc = pt_db_step(st);
    pt_db_release(st);
    return rc;
}

int pt_srv_user_exists(sqlite3 *db, const uint8_t user[16])
{
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "SELECT 1 FROM users WHERE user_id = ?", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, user, 16, SQLITE_STATIC);
    rc = pt_db_step(st);
    pt_db_release(st);
    return rc;
}

/* ---- items: what a messages row becomes ----------------------------------------------------- */

int pt_srv_item_encode(pt_buf *out, const pt_srv_item *it)
{
    switch (it->kind) {
    case PT_ITEM_MESSAGE: {
        pt_tl_updates_newMessage u = {.server_id = it->server_id, .date = (int64_t)it->date_ms,
                                      .envelope = it->payload};
        memcpy(u.from, it->from, 16);
        memcpy(u.from_device, it->from_device, 32);
        return pt_tl_updates_newMessage_encode(out, &u);
    }
    case PT_ITEM_GROUP_MESSAGE: {
        pt_tl_updates_newGroupMessage u = {.server_id = it->server_id,
                                           .date = (int64_t)it->date_ms, .envelope = it->payload};
        memcpy(u.group_id, it->group_id, 16);
        memcpy(u.from, it->from, 16);
        memcpy(u.from_device, it->from_device, 32);
        return pt_tl_updates_newGroupMessage_encode(out, &u);
    }
    case PT_ITEM_RECEIPT: {
        pt_tl_updates_receipt u = {.server_id = it->server_id, .date = (int64_t)it->date_ms,
                                   .about_server_id = it->about, .status = it->code,
                                   .envelope = it->payload};
        memcpy(u.from, it->from, 16);
        memcpy(u.from_device, it->from_device, 32);
        return pt_tl_updates_receipt_encode(out, &u);
    }
    case PT_ITEM_CONTACT: {
        pt_tl_updates_contact u = {.server_id = it->server_id, .date = (int64_t)it->date_ms,
                                   .action = it->code, .note = it->note, .bundle = it->payload};
        memcpy(u.from, it->from, 16);
        memcpy(u.from_device, it->from_device, 32);
        return pt_tl_updates_contact_encode(out, &u);
    }
    case PT_ITEM_GROUP_EVENT: {
        pt_tl_updates_groupEvent u = {.server_id = it->server_id, .date = (int64_t)it->date_ms,
                                      .event = it->code};
        memcpy(u.group_id, it->group_id, 16);
        memcpy(u.actor, it->from, 16);
        memcpy(u.user_id, it->peer, 16);
        return pt_tl_updates_groupEvent_encode(out, &u);
    }
    default:
        return PT_ERR_INVAL;
    }
}

static bool kind_has_group(int kind)
{
    return kind == PT_ITEM_GROUP_MESSAGE || kind == PT_ITEM_GROUP_EVENT;
}

int pt_srv_item_store(sqlite3 *db, const pt_srv_item *it, const pt_srv_devlist *to)
{
    if (to->n == 0) return 0; /* nobody to queue it for: a row nobody would delete */
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "INSERT INTO messages(server_id, sender, sender_device, date_ms, "
                               "envelope, refs, kind, group_id, peer, about, status, note) "
                               "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, it->server_id);
    sqlite3_bind_blob(st, 2, it->from, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, it->from_device, 32, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)it->date_ms);
    if (it->payload.len) sqlite3_bind_blob(st, 5, it->payload.data, (int)it->payload.len, SQLITE_STATIC);
    else sqlite3_bind_zeroblob(st, 5, 0);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)to->n);
    sqlite3_bind_int(st, 7, it->kind);
    if (kind_has_group(it->kind)) sqlite3_bind_blob(st, 8, it->group_id, 16, SQLITE_STATIC);
    if (it->kind == PT_ITEM_GROUP_EVENT) sqlite3_bind_blob(st, 9, it->peer, 16, SQLITE_STATIC);
    if (it->kind == PT_ITEM_RECEIPT) sqlite3_bind_int64(st, 10, it->about);
    if (it->kind != PT_ITEM_MESSAGE && it->kind != PT_ITEM_GROUP_MESSAGE)
        sqlite3_bind_int(st, 11, it->code);
    if (it->note.len)
        sqlite3_bind_text(st, 12, (const char *)it->note.data, (int)it->note.len, SQLITE_STATIC);
    rc = pt_db_step(st);
    pt_db_release(st);
    if (rc < 0) return rc;
    if ((rc = pt_db_stmt(db, "INSERT INTO queue(device_key, server_id) VALUES (?,?)", &st))) return rc;
    for (size_t i = 0; i < to->n && rc >= 0; i++) {
        sqlite3_reset(st);
        sqlite3_bind_blob(st, 1, to->pk[i], 32, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, it->server_id);
        rc = pt_db_step(st);
    }
    pt_db_release(st);
    return rc < 0 ? rc : 0;
}

void pt_srv_push_device(pt_server *s, const uint8_t device[32], pt_srv_sess *only, const pt_buf *update)
{
    pt_srv_device *d = only ? only->dev : dev_find(s, device);
    for (pt_srv_sess *e = d ? d->sessions : NULL; e; e = e->dev_next) {
        if ((only && e != only) || !e->conn) continue;
        if (pt_sess_send(e->sess, update->data, update->len, false, NULL) != 0) continue;
        s->counters.msgs_out++;
        /* while its input is being processed, the connection flushes afterwards */
        if (!e->conn->in_input && pt_conn_flush(e->conn) != 0) pt_conn_close(e->conn, "flush failed");
    }
}

void pt_srv_push_devices(pt_server *s, const pt_srv_devlist *to, const pt_buf *update)
{
    for (size_t i = 0; i < to->n; i++) {
        pt_srv_push_device(s, to->pk[i], NULL, update);
        if (s->cluster) { /* not connected here: to the node it is connected to, if any */
            pt_srv_device *d = dev_find(s, to->pk[i]);
            if (!d || d->nconns == 0) pt_cluster_route(s->cluster, to->pk[i], update);
        }
    }
}

void pt_srv_push_user(pt_server *s, const uint8_t user[16], const pt_buf *update)
{
    if (!s->db || !pt_srv_presence_connected(s, user)) return;
    pt_srv_devlist l = {0};
    if (pt_srv_dir_user_devices(s, user, NULL, &l) == 0) pt_srv_push_devices(s, &l, update);
    pt_srv_devlist_free(&l);
}

void pt_srv_push_user_here(pt_server *s, const uint8_t user[16], const pt_buf *update)
{
    pt_srv_devlist l = {0};
    if (s->db && pt_srv_dir_user_devices(s, user, NULL, &l) == 0)
        for (size_t i = 0; i < l.n; i++) pt_srv_push_device(s, l.pk[i], NULL, update);
    pt_srv_devlist_free(&l);
}

void pt_srv_push_item(pt_server *s, const pt_srv_devlist *to, const pt_srv_item *it)
{
    pt_buf own, *b = enc_take(&own);
    if (pt_srv_item_encode(b, it) == 0) pt_srv_push_devices(s, to, b);
    else pt_log_warn("cannot encode update %lld", (long long)it->server_id);
    enc_give(b, &own);
}

/* ---- messages.send, messages.sendReceipt ----------------------------------------------------- */

typedef struct send_op {
    pt_db_op op;
    reply_to to;
    uint64_t fwd_seq;           /* the server's sync_seq when it was forwarded */
    uint64_t confirmed;         /* in the ring: bit i: devices.pk[i] confirmed it before it was stored */
    bool withdrawn;             /* every device confirmed it first: never stored */
    pt_srv_item item;
    pt_srv_devlist devices;     /* the recipient's devices (borrowed: data) */
    uint8_t data[];             /* the devices' keys (32 each), then item.payload's bytes */
} send_op;

static int send_apply(sqlite3 *db, void *arg)
{
    send_op *m = arg;
    return pt_srv_item_store(db, &m->item, &m->devices);
}

/* A session that synced after the item was forwarded (a device that reconnected
 * meanwhile) may have missed both: the forward went to its old connection or to
 * none, and its sync read the queue before this commit. It gets the item now; the
 * client drops what it already has by envelope hash. (RELIABILITY.md defect 5.) */
static void repush_after_sync(send_op *m)
{
    pt_server *s = m->to.srv;
    if (s->sync_seq == m->fwd_seq) return; /* no sync since: nobody can have missed it */
    pt_buf b;
    pt_buf_init(&b);
    bool encoded = false;
    for (size_t i = 0; i < m->devices.n; i++) {
        pt_srv_device *d = dev_find(s, m->devices.pk[i]);
        for (pt_srv_sess *e = d ? d->sessions : NULL; e; e = e->dev_next) {
            if (!e->conn || e->synced_seq <= m->fwd_seq) continue;
            if (!encoded && pt_srv_item_encode(&b, &m->item) != 0) break;
            encoded = true;
            pt_srv_push_device(s, m->devices.pk[i], e, &b);
        }
    }
    pt_buf_free(&b);
}

static void reply_sent(send_op *m, int rc)
{
    pt_srv_sess *e = reply_session(&m->to);
    if (!e) return;
    if (rc == 0) {
        pt_buf own, *out = enc_take(&own);
        pt_tl_messages_sent r = {.server_id = m->item.server_id, .date = (int64_t)m->item.date_ms};
        if (pt_tl_messages_sent_encode(out, &r) == 0) pt_srv_reply(e, m->to.req_msg_id, out);
        enc_give(out, &own);
    } else if (rc == PT_ERR_TOO_BIG) { /* cluster mode: a device's queue in JetStream is full */
        pt_srv_reply_error(e, m->to.req_msg_id, PT_RPC_QUOTA, "RECIPIENT_QUEUE_FULL");
    } else {
        pt_srv_reply_error(e, m->to.req_msg_id, PT_RPC_INTERNAL, "STORE_FAILED");
    }
}

/* ---- sends waiting for the writer (local mode) ---------------------------------------------------
 * A message forwarded to online devices usually reaches them, and comes back
 * confirmed by messages.received, well before the writer's next group commit. Once
 * every recipient device confirmed it, the store has nothing left to do for it: the
 * send is withdrawn from the writer's queue (if it has not begun to apply it; one
 * still queued is freed there and then), the sender gets messages.sent at once
 * (durable: every recipient device has it, the rule of PROTOCOL.md §6.2), and no
 * row is written or deleted. The sends waiting
 * are found by server_id in a ring of PT_SRV_PENDING_SENDS slots; one whose slot is
 * taken is simply stored. */

static uint64_t all_devices(const send_op *m)
{
    return m->devices.n >= 64 ? UINT64_MAX : (UINT64_C(1) << m->devices.n) - 1;
}

static send_op **pending_slot(pt_server *s, int64_t id)
{
    if (!s->pending_sends) return NULL;
    return (send_op **)&s->pending_sends[(uint64_t)id & (PT_SRV_PENDING_SENDS - 1)];
}

static bool pending_add(pt_server *s, send_op *m)
{
    if (m->devices.n > 64) return false; /* one bit per device in m->confirmed */
    if (!s->pending_sends && !(s->pending_sends = calloc(PT_SRV_PENDING_SENDS, sizeof(void *))))
        return false;
    send_op **slot = pending_slot(s, m->item.server_id);
    if (*slot) return false;
    *slot = m;
    return true;
}

static void pending_remove(pt_server *s, send_op *m)
{
    send_op **slot = pending_slot(s, m->item.server_id);
    if (slot && *slot == m) *slot = NULL;
}

/* How long a device takes to confirm what it was sent live: one push at a time is
 * timed (the probe), its confirmation gives a sample, and confirm_us is their
 * average (weight 1/8). A probe not confirmed within a second is replaced by the
 * next push and counts as a sample of its age (a device that does not confirm is
 * soon not waited for); one whose device disconnected is dropped. */
static void probe_sample(pt_srv_device *d, uint64_t ns)
{
    uint64_t us = ns / 1000;
    if (us > UINT32_MAX / 2) us = UINT32_MAX / 2;
    d->confirm_us = d->confirm_us ? (uint32_t)(((uint64_t)d->confirm_us * 7 + us) / 8) : (uint32_t)us;
}

static void probe_start(pt_srv_device *d, int64_t id, uint64_t now_ns)
{
    if (d->probe_id && now_ns - d->probe_ns < 1000000000u) return; /* one is out */
    if (d->probe_id) probe_sample(d, now_ns - d->probe_ns);
    d->probe_id = id;
    d->probe_ns = now_ns;
}

static void probe_confirmed(pt_srv_device *d, int64_t id)
{
    if (!d || !d->probe_id || d->probe_id != id) return;
    probe_sample(d, uv_hrtime() - d->probe_ns);
    d->probe_id = 0;
}

/* Whether the write of item `id` to `l`, just pushed live, may be spared by their
 * confirmations: false when confirm_wait_ms is off or a device is not connected
 * here. Then *hold_us is how long the writer waits for them: twice the slowest
 * device's confirmation time plus 0.2 ms, or 0 (written as soon as the writer gets
 * to it) when that is more than confirm_wait_ms (a device that confirms in batches,
 * say every 20 ms, would delay every acknowledgement by a whole wait for little
 * gain). Not held, the send can still be withdrawn until the writer applies it: on a
 * server short of CPU the writer lags (PT_DB_WRITER_NICE), confirmations are slow
 * too, and withdrawing is what keeps it from storing and deleting every message
 * (docs/BENCHMARKS.md, "Overload"). A device not measured yet is taken to confirm
 * in a quarter of confirm_wait_ms. Starts probes on the devices; the first one not
 * connected here ends the loop. now: uv_hrtime(). */
static bool hold_for(pt_server *s, const pt_srv_devlist *l, int64_t id, uint64_t now,
                     uint32_t *hold_us)
{
    uint32_t max = s->cfg.confirm_wait_ms;
    uint64_t hold = 0;
    bool slow = false;
    *hold_us = 0;
    if (!max || max == PT_SERVER_CONFIRM_WAIT_OFF || l->n == 0) return false;
    for (size_t i = 0; i < l->n; i++) {
        pt_srv_device *d = dev_find(s, l->pk[i]);
        if (!d || d->nconns == 0) return false;
        probe_start(d, id, now);
        uint64_t est = d->confirm_us ? d->confirm_us : (uint64_t)max * 250;
        if (2 * est + 200 > (uint64_t)max * 1000) slow = true; /* too slow to be waited for */
        if (2 * est + 200 > hold) hold = 2 * est + 200;
    }
    if (!slow) *hold_us = (uint32_t)hold;
    return true;
}

/* Device `dev` (key `device`) confirmed item `id`. True if the item is in the ring
 * (held or not): the confirmations are its business then. Once every device
 * confirmed it, it is withdrawn; if the writer was faster, send_done deletes the
 * confirmed rows. */
static bool confirm_pending(pt_server *s, pt_srv_device *dev, const uint8_t device[32], int64_t id)
{
    probe_confirmed(dev, id);
    send_op **slot = pending_slot(s, id);
    send_op *m = slot ? *slot : NULL;
    if (!m || m->item.server_id != id) return false;
    size_t i = 0;
    while (i < m->devices.n && memcmp(m->devices.pk[i], device, 32) != 0) i++;
    if (i == m->devices.n) return false; /* not one of its devices: deletes nothing */
    if (m->confirmed & (UINT64_C(1) << i)) return true; /* again */
    m->confirmed |= UINT64_C(1) << i;
    int w = m->confirmed == all_devices(m) ? pt_db_withdraw(s->db, &m->op) : 0;
    if (!w) return true;
    m->withdrawn = true;
    *slot = NULL;
    pt_srv_queue_add(s, &m->devices, -1); /* the reservation */
    s->counters.msgs_unstored++;
    reply_sent(m, 0);
    if (w == PT_DB_REMOVED) { /* out of the writer's queue: send_done will not run */
        pt_srv_devlist_free(&m->devices);
        free(m);
    }
    return true;
}

static void send_done(void *arg, int rc)
{
    send_op *m = arg;
    bool queued = m->op.apply == NULL; /* cluster mode: JetStream's queue, not the store */
    if (m->withdrawn) { /* answered when the last device confirmed it */
        pt_srv_devlist_free(&m->devices);
        free(m);
        return;
    }
    if (!queued) pending_remove(m->to.srv, m);
    /* a failed write of a message every device confirmed meanwhile: it is durable */
    reply_sent(m, m->devices.n && m->confirmed == all_devices(m) ? 0 : rc);
    /* confirmed while it was being stored: those rows go now (rc != 0: none were
     * written, and the reservation goes below) */
    for (size_t i = 0; rc == 0 && i < m->devices.n && m->confirmed; i++)
        if (m->confirmed & (UINT64_C(1) << i))
            pt_srv_received_remote(m->to.srv, m->devices.pk[i], &m->item.server_id, 1);
    if (rc != 0 && !queued) pt_srv_queue_add(m->to.srv, &m->devices, -1); /* the reservation */
    if (rc == 0 && !queued) repush_after_sync(m);
    pt_srv_devlist_free(&m->devices);
    free(m);
}

int pt_srv_item_enqueue(pt_server *s, const pt_srv_item *it, const uint8_t *key, bool find_id,
                        const pt_srv_devlist *to, void (*cb)(void *arg, int rc, int64_t id), void *arg)
{
    pt_buf b;
    pt_buf_init(&b);
    int rc = pt_srv_item_encode(&b, it);
    if (rc == 0) rc = pt_cluster_enqueue(s->cluster, it->server_id, key, find_id, to, &b, cb, arg);
    pt_buf_free(&b);
    return rc;
}

void pt_srv_request_key(uint8_t key[16], const pt_srv_reply_to *r)
{
    uint8_t in[11 + 32 + 16];
    memcpy(in, "PT1 request", 11);
    memcpy(in + 11, r->device_pk, 32);
    pt_put_u64le(in + 43, r->session_id);
    pt_put_u64le(in + 51, r->req_msg_id);
    if (pt_blake2b(key, 16, in, sizeof in, NULL, 0) != 0) memset(key, 0, 16); /* not reached (libsodium) */
}

/* JetStream queued the send (cluster mode): under its own server id, or under the one
 * an earlier try of the same request got (a node that stored it and died before it
 * answered; the client sent it again here): the sender is told that one. */
static void send_queued(void *arg, int rc, int64_t id)
{
    send_op *m = arg;
    if (rc == 0) m->item.server_id = id;
    send_done(m, rc);
}

int pt_srv_queues_full_any(pt_server *s, sqlite3 *db, const pt_srv_devlist *l, uint32_t quota)
{
    if (!s->cluster) return pt_srv_queues_full(db, l, quota);
    int rc = pt_cluster_queues_full(s->cluster, l, quota);
    return rc != 0 ? rc : pt_srv_queues_full(db, l, quota); /* and rows from before */
}

/* Cluster mode: the item goes to each recipient device's durable queue in JetStream
 * (pt_cluster_enqueue), and messages.sent is answered once JetStream acknowledged
 * them all. The device's consumer delivers it wherever the device is connected; it
 * is not pushed from here, so each device gets it once, through its queue. */
static void forward_cluster(pt_server *s, send_op *m)
{
    m->op.apply = NULL;
    s->counters.msgs_in++;
    uint8_t key[16];
    pt_srv_request_key(key, &m->to);
    int rc = pt_srv_item_enqueue(s, &m->item, key, true, &m->devices, send_queued, m);
    if (rc != 0) send_done(m, rc);
}

/* ---- server ids ----------------------------------------------------------------------------------
 * server_ids only grow, across restarts too: clients know items by them (receipts
 * name one, duplicates are dropped by them). The largest id in `messages` is no
 * bound: confirmed rows are deleted, and a message every device confirmed before
 * the writer got to it is never written. So ids are handed out from a block whose
 * end is stored first (table server_ids); the next block is stored while half of
 * the current one is left. */

#define ID_BLOCK (INT64_C(1) << 20)

typedef struct ids_op {
    pt_db_op op;
    pt_server *s;
    int64_t reserved;   /* ids below it may be handed out once this is stored */
    bool *finished;     /* start-up: set when done */
} ids_op;

static int ids_apply(sqlite3 *db, void *arg)
{
    ids_op *o = arg;
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "UPDATE server_ids SET reserved = max(reserved, ?)", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, o->reserved);
    rc = pt_db_step(st);
    pt_db_release(st);
    if (rc < 0 || sqlite3_changes(db) == 1) return rc < 0 ? rc : 0;
    /* the row is missing (the migration makes it; a file edited by hand may not) */
    if ((rc = pt_db_stmt(db, "INSERT INTO server_ids(reserved) VALUES (?)", &st))) return rc;
    sqlite3_bind_int64(st, 1, o->reserved);
    rc = pt_db_step(st);
    pt_db_release(st);
    return rc < 0 ? rc : 0;
}

static void ids_done(void *arg, int rc)
{
    ids_op *o = arg;
    pt_server *s = o->s;
    if (rc == 0 && o->reserved > s->server_id_limit) s->server_id_limit = o->reserved;
    if (rc != 0) pt_log_error("store: cannot reserve server ids up to %lld", (long long)o->reserved);
    s->ids_reserving = false;
    if (o->finished) *o->finished = true;
    free(o);
}

static int reserve_ids(pt_server *s, int64_t upto, bool *finished)
{
    ids_op *o = calloc(1, sizeof *o);
    if (!o) return PT_ERR_NOMEM;
    /* urgent: every send waits for it, and under overload the writer is behind */
    *o = (ids_op){.op = {.apply = ids_apply, .done = ids_done, .arg = o, .commutes = true, .urgent = true},
                  .s = s, .reserved = upto, .finished = finished};
    s->ids_reserving = true;
    pt_db_submit(s->db, &o->op);
    return 0;
}

int pt_srv_ids_init(pt_server *s)
{
    sqlite3_stmt *st;
    int rc = pt_db_prepare(pt_db_reader(s->db), "SELECT reserved FROM server_ids", &st);
    if (rc) return rc;
    rc = pt_db_step(st);
    int64_t reserved = rc == 1 ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if (rc < 0) return rc;
    if (reserved > s->next_server_id) s->next_server_id = reserved;
    /* before the loop runs: wait here for the first block to be stored */
    bool finished = false;
    if ((rc = reserve_ids(s, s->next_server_id + ID_BLOCK, &finished)) != 0) return rc;
    while (!finished) uv_run(&s->loop, UV_RUN_ONCE);
    return s->server_id_limit > s->next_server_id ? 0 : PT_ERR_IO;
}

int pt_srv_take_server_id(pt_server *s, int64_t *id)
{
    if (s->cluster) {
        /* a block of ids reserved in the bucket runs out once per 16M ids */
        if (s->next_server_id >= s->server_id_limit &&
            pt_cluster_reserve_ids(s->cluster, &s->next_server_id, &s->server_id_limit) != 0)
            return PT_ERR_IO;
    } else {
        if (s->server_id_limit - s->next_server_id < ID_BLOCK / 2 && !s->ids_reserving)
            (void)reserve_ids(s, s->server_id_limit + ID_BLOCK, NULL); /* retried at the next id */
        if (s->next_server_id >= s->server_id_limit) return PT_ERR_AGAIN; /* the store is behind */
    }
    *id = s->next_server_id++;
    return 0;
}

void pt_srv_forward(pt_conn *c, uint64_t req, const pt_srv_item *proto, pt_srv_devlist *devices)
{
    pt_srv_sess *e = c->sess;
    pt_server *s = c->srv;
    int rc = pt_srv_queue_any_full(s, devices, s->cfg.queue_quota) ? 1 : 0;
    size_t keys = devices->n * sizeof *devices->pk; /* one allocation: no malloc per list */
    send_op *m = rc == 0 ? calloc(1, sizeof *m + keys + proto->payload.len) : NULL;
    if (!m) {
        pt_srv_reply_error(e, req, rc > 0 ? PT_RPC_QUOTA : PT_RPC_INTERNAL,
                           rc > 0 ? "RECIPIENT_QUEUE_FULL" : rc < 0 ? "INTERNAL" : "OUT_OF_MEMORY");
        pt_srv_devlist_free(devices);
        return;
    }
    reply_to_init(&m->to, c, req);
    if (keys) memcpy(m->data, devices->pk, keys);
    m->devices = (pt_srv_devlist){.pk = (uint8_t(*)[32])m->data, .n = devices->n, .cap = devices->n, .borrowed = true};
    pt_srv_devlist_free(devices);
    if (proto->payload.len) memcpy(m->data + keys, proto->payload.data, proto->payload.len);
    m->item = *proto;
    m->item.payload = (pt_tl_bytes){m->data + keys, proto->payload.len};
    m->item.note = (pt_tl_bytes){NULL, 0};
    if (pt_srv_take_server_id(s, &m->item.server_id) != 0) {
        pt_srv_reply_error(e, req, PT_RPC_UNAVAILABLE,
                           s->cluster ? "CLUSTER_UNAVAILABLE" : "STORE_BUSY");
        pt_srv_devlist_free(&m->devices);
        free(m);
        return;
    }
    m->fwd_seq = s->sync_seq;
    m->item.date_ms = pt_srv_now_ms(s);
    memcpy(m->item.from, e->dev->user_id, 16);
    memcpy(m->item.from_device, e->device_pk, 32);
    if (s->cluster) {
        forward_cluster(s, m);
        return;
    }
    /* forward to the connected devices now; the sender hears back after the commit */
    pt_srv_push_item(s, &m->devices, &m->item);
    pt_srv_queue_add(s, &m->devices, 1);
    s->counters.msgs_in++;
    m->op = (pt_db_op){.apply = send_apply, .done = send_done, .arg = m, .rerunnable = true};
    /* every device has it now: the store waits a little for their confirmations */
    uint32_t hold;
    uint64_t now = uv_hrtime(); /* one reading for the probes and the store */
    if (hold_for(s, &m->devices, m->item.server_id, now, &hold) && pending_add(s, m))
        m->op.hold_us = hold; /* only sends that may be withdrawn are in the ring */
    pt_db_submit_at(s->db, &m->op, now);
}

/* Forwards an item to every device of user `to`, unless `to` blocked the sender. */
static void send_to_user(pt_conn *c, uint64_t req, const uint8_t to[16], const pt_srv_item *proto)
{
    pt_srv_sess *e = c->sess;
    if (pt_srv_dir_blocked(c->srv, to, e->dev->user_id)) {
        pt_srv_reply_error(e, req, PT_RPC_FORBIDDEN, "BLOCKED");
        return;
    }
    uint8_t on_stack[8][32];
    pt_srv_devlist devices = PT_SRV_DEVLIST_ON(on_stack);
    if (pt_srv_dir_user_devices(c->srv, to, NULL, &devices) != 0) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
    } else if (devices.n == 0) {
        pt_srv_reply_error(e, req, PT_RPC_NOT_FOUND, "USER_NOT_FOUND");
    } else {
        pt_srv_forward(c, req, proto, &devices);
    }
    pt_srv_devlist_free(&devices);
}

static void rpc_send(pt_conn *c, uint64_t req, const pt_tl_messages_send *q)
{
    if (!pt_srv_require_bound(c, req)) return;
    if (q->envelope.len > PT_SERVER_ENVELOPE_MAX) {
        pt_srv_reply_error(c->sess, req, PT_RPC_TOO_LARGE, "ENVELOPE_TOO_LARGE");
        return;
    }
    pt_srv_item it = {.kind = PT_ITEM_MESSAGE, .payload = q->envelope};
    send_to_user(c, req, q->to, &it);
}

static void rpc_send_receipt(pt_conn *c, uint64_t req, const pt_tl_messages_sendReceipt *q)
{
    if (!pt_srv_require_bound(c, req)) return;
    if (q->status < 0 || q->status > 255) {
        pt_srv_reply_error(c->sess, req, PT_RPC_BAD_REQUEST, "RECEIPT_STATUS_INVALID");
        return;
    }
    if (q->envelope.len > PT_SERVER_RECEIPT_MAX) {
        pt_srv_reply_error(c->sess, req, PT_RPC_TOO_LARGE, "ENVELOPE_TOO_LARGE");
        return;
    }
    pt_srv_item it = {.kind = PT_ITEM_RECEIPT, .about = q->about_server_id, .code = q->status,
                      .payload = q->envelope};
    send_to_user(c, req, q->to, &it);
}

/* ---- messages.received, messages.sync ---------------------------------------------------------- */

typedef struct received_op {
    pt_db_op op;
    reply_to to;
    uint8_t device[32];
    bool remote;        /* confirmed through another node (cluster mode): no reply */
    bool notice;        /* messages.confirm: no reply either */
    uint32_t deleted;   /* queue rows apply() deleted */
    uint32_t n;
    int64_t ids[]; /* n server ids */
} received_op;

static int received_apply(sqlite3 *db, void *arg)
{
    received_op *r = arg;
    r->deleted = 0; /* rerunnable */
    sqlite3_stmt *del, *dec, *gc;
    int rc = pt_db_stmt(db, "DELETE FROM queue WHERE device_key = ? AND server_id = ?", &del);
    if (rc) return rc;
    if ((rc = pt_db_stmt(db, "DELETE FROM messages WHERE server_id = ? AND refs <= 1", &gc))) {
        pt_db_release(del);
        return rc;
    }
    if ((rc = pt_db_stmt(db, "UPDATE messages SET refs = refs - 1 WHERE server_id = ?", &dec))) {
        pt_db_release(del);
        pt_db_release(gc);
        return rc;
    }
    for (uint32_t i = 0; i < r->n && rc >= 0; i++) {
        sqlite3_reset(del);
        sqlite3_bind_blob(del, 1, r->device, 32, SQLITE_STATIC);
        sqlite3_bind_int64(del, 2, r->ids[i]);
        if ((rc = pt_db_step(del)) < 0 || sqlite3_changes(db) == 0) continue;
        r->deleted++;
        /* the last reference (one recipient device: the usual case) deletes the row
         * at once, without rewriting it first to count down */
        sqlite3_reset(gc);
        sqlite3_bind_int64(gc, 1, r->ids[i]);
        if ((rc = pt_db_step(gc)) < 0 || sqlite3_changes(db) == 1) continue;
        sqlite3_reset(dec);
        sqlite3_bind_int64(dec, 1, r->ids[i]);
        rc = pt_db_step(dec);
    }
    pt_db_release(del);
    pt_db_release(gc);
    pt_db_release(dec);
    return rc < 0 ? rc : 0;
}

static void ok_done(void *arg, int rc)
{
    received_op *r = arg;
    if (rc == 0) pt_srv_queue_sub(r->to.srv, r->device, r->deleted);
    if (rc != 0 && r->notice)
        pt_log_warn("messages.confirm of %u ids: %s; they are delivered again", r->n, pt_strerror(rc));
    pt_srv_sess *e = r->remote || r->notice ? NULL : reply_session(&r->to);
    if (e) {
        if (rc == 0) pt_srv_reply_ok(e, r->to.req_msg_id);
        else pt_srv_reply_error(e, r->to.req_msg_id, PT_RPC_INTERNAL, "STORE_FAILED");
    }
    free(r);
}

/* The deletes commute with held sends: they only name rows of sends not held (a
 * held one's confirmations stay with it, confirm_pending). */
static void submit_received(pt_server *s, received_op *r)
{
    r->op = (pt_db_op){.apply = received_apply, .done = ok_done, .arg = r, .rerunnable = true, .commutes = true};
    pt_db_submit(s->db, &r->op);
}

/* messages.received (answered: req is its msg_id) and messages.confirm (a notice:
 * req 0, nothing answered; its session's msgs_ack says it arrived). */
static void rpc_received(pt_conn *c, uint64_t req, const pt_tl_vec_long *ids)
{
    pt_server *s = c->srv;
    /* Local mode: what still waits for the writer and is now confirmed by all needs no
     * row. The operation is made at the first id that does: with held sends, usually
     * none, and then nothing is allocated. */
    received_op *r = NULL;
    for (uint32_t i = 0; i < ids->n; i++) {
        int64_t id = ids->items[i];
        if (!s->cluster && confirm_pending(s, c->sess->dev, c->sess->device_pk, id)) continue;
        if (!r && !(r = calloc(1, sizeof *r + (ids->n - i) * sizeof(int64_t)))) {
            if (req) pt_srv_reply_error(c->sess, req, PT_RPC_INTERNAL, "OUT_OF_MEMORY");
            else pt_log_warn("conn %s: messages.confirm: out of memory; delivered again", c->peer);
            return;
        }
        r->ids[r->n++] = id;
    }
    if (!r) {
        if (req) pt_srv_reply_ok(c->sess, req);
        return;
    }
    reply_to_init(&r->to, c, req);
    r->notice = req == 0;
    memcpy(r->device, c->sess->device_pk, 32);
    if (s->cluster) /* JetStream's queues: nothing waits for this node's writer */
        pt_cluster_received(s->cluster, r->device, r->ids, r->n);
    submit_received(s, r);
}

void pt_srv_received_remote(pt_server *s, const uint8_t device[32], const int64_t *ids, uint32_t n)
{
    if (!s->db || pt_srv_queue_len(s, device) == 0) return; /* nothing of it queued here */
    received_op *r = calloc(1, sizeof *r + n * sizeof(int64_t));
    if (!r) return;
    r->to.srv = s;
    r->remote = true;
    memcpy(r->device, device, 32);
    r->n = n;
    memcpy(r->ids, ids, n * sizeof(int64_t));
    submit_received(s, r);
}

/* Copies a BLOB column of exactly n bytes into out; false when it has another size. */
static bool column_fixed(sqlite3_stmt *st, int col, uint8_t *out, int n)
{
    if (sqlite3_column_bytes(st, col) != n) return false;
    memcpy(out, sqlite3_column_blob(st, col), (size_t)n);
    return true;
}

/* Calls emit for each item queued here for device, encoded, in server_id order;
 * the number of items, or -1 when the store cannot be read. */
static long queue_scan(pt_server *s, const uint8_t device[32], void (*emit)(void *arg, const pt_buf *b),
                       void *arg)
{
    sqlite3_stmt *st;
    if (pt_db_stmt(pt_db_reader(s->db),
                      "SELECT m.server_id, m.sender, m.sender_device, m.date_ms, m.envelope, m.kind, "
                      "m.group_id, m.peer, m.about, m.status, m.note "
                      "FROM queue q JOIN messages m ON m.server_id = q.server_id "
                      "WHERE q.device_key = ? ORDER BY q.server_id",
                      &st))
        return -1;
    sqlite3_bind_blob(st, 1, device, 32, SQLITE_STATIC);
    long n = 0;
    pt_buf b;
    pt_buf_init(&b);
    while (pt_db_step(st) == 1) {
        pt_srv_item it = {.server_id = sqlite3_column_int64(st, 0),
                          .date_ms = (uint64_t)sqlite3_column_int64(st, 3),
                          .kind = sqlite3_column_int(st, 5),
                          .about = sqlite3_column_int64(st, 8),
                          .code = sqlite3_column_int(st, 9)};
        if (!column_fixed(st, 1, it.from, 16) || !column_fixed(st, 2, it.from_device, 32)) continue;
        if (kind_has_group(it.kind) && !column_fixed(st, 6, it.group_id, 16)) continue;
        if (it.kind == PT_ITEM_GROUP_EVENT && !column_fixed(st, 7, it.peer, 16)) continue;
        it.payload = (pt_tl_bytes){sqlite3_column_blob(st, 4), (uint32_t)sqlite3_column_bytes(st, 4)};
        it.note = (pt_tl_bytes){sqlite3_column_text(st, 10), (uint32_t)sqlite3_column_bytes(st, 10)};
        pt_buf_reset(&b);
        if (pt_srv_item_encode(&b, &it) != 0) continue;
        emit(arg, &b);
        n++;
    }
    pt_db_release(st);
    pt_buf_free(&b);
    return n;
}

static void emit_to_session(void *arg, const pt_buf *b)
{
    pt_conn *c = arg;
    pt_srv_push_device(c->srv, c->sess->device_pk, c->sess, b);
}

static void rpc_sync(pt_conn *c, uint64_t req)
{
    pt_srv_sess *e = c->sess;
    e->synced_seq = ++c->srv->sync_seq; /* items committing after this read come again at their commit */
    long n = queue_scan(c->srv, e->device_pk, emit_to_session, c);
    if (n < 0) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
        return;
    }
    pt_log_debug("conn %s: sync delivered %ld queued messages", c->peer, n);
    /* cluster mode: what other nodes queued for it comes through them */
    if (c->srv->cluster) pt_cluster_sync(c->srv->cluster, e->device_pk);
    pt_srv_reply_ok(e, req);
}

typedef struct remote_sync {
    pt_server *srv;
    const uint8_t *device;
} remote_sync;

static void emit_to_cluster(void *arg, const pt_buf *b)
{
    remote_sync *r = arg;
    pt_cluster_route(r->srv->cluster, r->device, b);
}

void pt_srv_sync_remote(pt_server *s, const uint8_t device[32])
{
    if (!s->db || !s->cluster || pt_srv_queue_len(s, device) == 0) return;
    remote_sync r = {s, device};
    long n = queue_scan(s, device, emit_to_cluster, &r);
    if (n > 0) pt_log_debug("cluster: resent %ld queued items to a device on another node", n);
}

bool pt_srv_messaging_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded)
{
    switch (ctor) {
    case PT_TL_AUTH_BINDUSERNAME_ID: rpc_bind(c, msg_id, decoded); return true;
    case PT_TL_USERS_RESOLVE_ID: rpc_resolve(c, msg_id, decoded); return true;
    case PT_TL_USERS_GET_ID: rpc_get_user(c, msg_id, decoded); return true;
    case PT_TL_MESSAGES_SEND_ID: rpc_send(c, msg_id, decoded); return true;
    case PT_TL_MESSAGES_SENDRECEIPT_ID: rpc_send_receipt(c, msg_id, decoded); return true;
    case PT_TL_MESSAGES_RECEIVED_ID:
        rpc_received(c, msg_id, &((const pt_tl_messages_received *)decoded)->server_ids);
        return true;
    case PT_TL_MESSAGES_CONFIRM_ID: /* a notice: never answered */
        rpc_received(c, 0, &((const pt_tl_messages_confirm *)decoded)->server_ids);
        return true;
    case PT_TL_MESSAGES_SYNC_ID: rpc_sync(c, msg_id); return true;
    default: return false;
    }
}
