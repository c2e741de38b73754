/*
 * Identities and store-and-forward messages.
 *
 * A send is forwarded to the recipient's connected devices at once (without
 * waiting for the disk) and written, with one queue row per recipient device,
 * through the store's group-commit writer; the sender gets messages.sent only
 * after that commit. A device deletes messages from its queue with
 * messages.received; until then they are delivered again by messages.sync, and
 * the client drops duplicates by server_id.
 */
#include <stdio.h>
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "pt_tl.h"
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
    if (pt_db_prepare(pt_db_reader(s->db), "SELECT user_id FROM devices WHERE device_key = ?", &st))
        return;
    sqlite3_bind_blob(st, 1, d->pk, 32, SQLITE_STATIC);
    if (pt_db_step(st) == 1 && sqlite3_column_bytes(st, 0) == 16) {
        memcpy(d->user_id, sqlite3_column_blob(st, 0), 16);
        d->bound = true;
    }
    sqlite3_finalize(st);
}

pt_srv_device *pt_srv_device_get(pt_server *s, const uint8_t pk[32])
{
    size_t h = dev_hash(pk, s->dev_nbuckets);
    for (pt_srv_device *d = s->dev_buckets[h]; d; d = d->next)
        if (memcmp(d->pk, pk, 32) == 0) return d;
    pt_srv_device *d = calloc(1, sizeof *d);
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
    if (d->sessions) return;
    /* no session left: forget the device (its binding lives in the store) */
    pt_srv_device **pp = &s->dev_buckets[dev_hash(d->pk, s->dev_nbuckets)];
    while (*pp != d) pp = &(*pp)->next;
    *pp = d->next;
    free(d);
    s->dev_n--;
}

/* ---- replies ----------------------------------------------------------------------------- */

/* A pending asynchronous reply: found again by (device, session) after the commit,
 * because the session may have gone in the meantime. */
typedef struct reply_to {
    pt_server *srv;
    uint8_t device_pk[32];
    uint64_t session_id;
    uint64_t req_msg_id;
} reply_to;

static void reply_to_init(reply_to *r, pt_conn *c, uint64_t req)
{
    r->srv = c->srv;
    memcpy(r->device_pk, c->sess->device_pk, 32);
    r->session_id = c->sess->session_id;
    r->req_msg_id = req;
}

static pt_srv_sess *reply_session(const reply_to *r)
{
    pt_srv_sess *e = pt_srv_sess_lookup(r->srv, r->device_pk, r->session_id);
    if (!e) pt_log_debug("reply to %016llx dropped: its session is gone",
                         (unsigned long long)r->req_msg_id);
    return e;
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
    if ((rc = pt_db_prepare(db, "SELECT identity_key, username_key FROM users WHERE user_id = ?", &st)))
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
    sqlite3_finalize(st);
    if (rc < 0) return rc;
    if (b->err_code) return PT_ERR_STATE;
    if (!exists) {
        if ((rc = pt_db_prepare(db, "SELECT username_key = ?1 FROM users WHERE username_key = ?1 "
                                    "OR username_skeleton = ?2", &st)))
            return rc;
        sqlite3_bind_text(st, 1, b->key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, b->skeleton, -1, SQLITE_STATIC);
        rc = pt_db_step(st);
        if (rc == 1) {
            b->err_code = PT_RPC_CONFLICT;
            b->err_msg = sqlite3_column_int(st, 0) ? "USERNAME_TAKEN" : "USERNAME_CONFUSABLE";
        }
        sqlite3_finalize(st);
        if (rc < 0) return rc;
        if (b->err_code) return PT_ERR_STATE;
        if ((rc = pt_db_prepare(db, "INSERT INTO users(user_id, identity_key, username, username_key,"
                                    " username_skeleton, created_ms) VALUES (?,?,?,?,?,?)", &st)))
            return rc;
        sqlite3_bind_blob(st, 1, b->user_id, 16, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, b->identity_key, 32, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, b->display, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, b->key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, b->skeleton, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)pt_env_now_ms(pt_env_default()));
        rc = pt_db_step(st);
        sqlite3_finalize(st);
        if (rc == PT_ERR_STATE) b->err_code = PT_RPC_CONFLICT, b->err_msg = "USERNAME_TAKEN";
        if (rc < 0) return rc;
    }
    /* the device: bound once, to one user */
    if ((rc = pt_db_prepare(db, "INSERT INTO devices(device_key, user_id, cert, created_ms) "
                                "VALUES (?,?,?,?) ON CONFLICT(device_key) DO NOTHING", &st)))
        return rc;
    sqlite3_bind_blob(st, 1, b->device_pk, 32, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, b->user_id, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, b->cert, sizeof b->cert, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)pt_env_now_ms(pt_env_default()));
    rc = pt_db_step(st);
    sqlite3_finalize(st);
    if (rc < 0) return rc;
    if ((rc = pt_db_prepare(db, "SELECT user_id FROM devices WHERE device_key = ?", &st))) return rc;
    sqlite3_bind_blob(st, 1, b->device_pk, 32, SQLITE_STATIC);
    rc = pt_db_step(st);
    if (rc == 1 && (sqlite3_column_bytes(st, 0) != 16 ||
                    memcmp(sqlite3_column_blob(st, 0), b->user_id, 16) != 0))
        b->err_code = PT_RPC_CONFLICT, b->err_msg = "DEVICE_BOUND_TO_ANOTHER_USER";
    sqlite3_finalize(st);
    if (rc < 0) return rc;
    return b->err_code ? PT_ERR_STATE : 0;
}

static void bind_done(void *arg, int rc)
{
    bind_op *b = arg;
    pt_srv_sess *e = reply_session(&b->to);
    if (rc == 0) {
        pt_srv_device *d = pt_srv_device_get(b->to.srv, b->device_pk);
        if (d) {
            d->bound = true;
            memcpy(d->user_id, b->user_id, 16);
        }
        char hex[33];
        pt_hex_encode(hex, b->user_id, 16);
        pt_log_info("user %s bound username \"%s\"", hex, b->display);
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
    b->op = (pt_db_op){.apply = bind_apply, .done = bind_done, .arg = b};
    pt_db_submit(c->srv->db, &b->op);
}

/* ---- users.resolve ----------------------------------------------------------------------------- */

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
    if (pt_db_prepare(pt_db_reader(c->srv->db),
                      "SELECT user_id, username, identity_key FROM users WHERE username_key = ?", &st)) {
        pt_srv_reply_error(c->sess, req, PT_RPC_INTERNAL, "INTERNAL");
        return;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (pt_db_step(st) == 1 && sqlite3_column_bytes(st, 0) == 16 && sqlite3_column_bytes(st, 2) == 32) {
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
    sqlite3_finalize(st);
}

/* ---- messages ---------------------------------------------------------------------------- */

#define MAX_RECIPIENT_DEVICES 64

typedef struct send_op {
    pt_db_op op;
    reply_to to;
    int64_t server_id;
    uint64_t date_ms;
    uint8_t sender[16], sender_device[32];
    uint8_t devices[MAX_RECIPIENT_DEVICES][32];
    size_t ndevices;
    uint32_t len;
    uint8_t envelope[]; /* len bytes */
} send_op;

static int send_apply(sqlite3 *db, void *arg)
{
    send_op *m = arg;
    sqlite3_stmt *st;
    int rc = pt_db_prepare(db, "INSERT INTO messages(server_id, sender, sender_device, date_ms, "
                               "envelope, refs) VALUES (?,?,?,?,?,?)", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, m->server_id);
    sqlite3_bind_blob(st, 2, m->sender, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, m->sender_device, 32, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)m->date_ms);
    sqlite3_bind_blob(st, 5, m->envelope, (int)m->len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)m->ndevices);
    rc = pt_db_step(st);
    sqlite3_finalize(st);
    if (rc < 0) return rc;
    if ((rc = pt_db_prepare(db, "INSERT INTO queue(device_key, server_id) VALUES (?,?)", &st))) return rc;
    for (size_t i = 0; i < m->ndevices && rc >= 0; i++) {
        sqlite3_reset(st);
        sqlite3_bind_blob(st, 1, m->devices[i], 32, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, m->server_id);
        rc = pt_db_step(st);
    }
    sqlite3_finalize(st);
    return rc < 0 ? rc : 0;
}

static void send_done(void *arg, int rc)
{
    send_op *m = arg;
    pt_srv_sess *e = reply_session(&m->to);
    if (e) {
        if (rc == 0) {
            pt_buf out;
            pt_buf_init(&out);
            pt_tl_messages_sent r = {.server_id = m->server_id, .date = (int64_t)m->date_ms};
            if (pt_tl_messages_sent_encode(&out, &r) == 0) pt_srv_reply(e, m->to.req_msg_id, &out);
            pt_buf_free(&out);
        } else {
            pt_srv_reply_error(e, m->to.req_msg_id, PT_RPC_INTERNAL, "STORE_FAILED");
        }
    }
    free(m);
}

/* Pushes updates.newMessage to every connected session of device d (or only to
 * session `only` when given). */
static void push_message(pt_server *s, const uint8_t device[32], pt_srv_sess *only,
                         const pt_tl_updates_newMessage *u)
{
    pt_buf b;
    pt_buf_init(&b);
    if (pt_tl_updates_newMessage_encode(&b, u) != 0) {
        pt_buf_free(&b);
        return;
    }
    pt_srv_device *d = only ? only->dev : NULL;
    if (!d) {
        size_t h = dev_hash(device, s->dev_nbuckets);
        for (d = s->dev_buckets[h]; d && memcmp(d->pk, device, 32) != 0; d = d->next) {}
    }
    for (pt_srv_sess *e = d ? d->sessions : NULL; e; e = e->dev_next) {
        if ((only && e != only) || !e->conn) continue;
        if (pt_sess_send(e->sess, b.data, b.len, false, NULL) == 0) {
            if (pt_conn_flush(e->conn) != 0) pt_conn_close(e->conn, "flush failed");
        }
    }
    pt_buf_free(&b);
}

static int count_queue(pt_server *s, const uint8_t device[32])
{
    sqlite3_stmt *st;
    if (pt_db_prepare(pt_db_reader(s->db), "SELECT count(*) FROM queue WHERE device_key = ?", &st))
        return -1;
    sqlite3_bind_blob(st, 1, device, 32, SQLITE_STATIC);
    int n = pt_db_step(st) == 1 ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    return n;
}

static void rpc_send(pt_conn *c, uint64_t req, const pt_tl_messages_send *q)
{
    pt_srv_sess *e = c->sess;
    pt_server *s = c->srv;
    if (!e->dev || !e->dev->bound) {
        pt_srv_reply_error(e, req, PT_RPC_NOT_BOUND, "DEVICE_NOT_BOUND");
        return;
    }
    if (q->envelope.len > PT_SERVER_ENVELOPE_MAX) {
        pt_srv_reply_error(e, req, PT_RPC_TOO_LARGE, "ENVELOPE_TOO_LARGE");
        return;
    }
    send_op *m = calloc(1, sizeof *m + q->envelope.len);
    if (!m) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "OUT_OF_MEMORY");
        return;
    }
    sqlite3_stmt *st;
    if (pt_db_prepare(pt_db_reader(s->db), "SELECT device_key FROM devices WHERE user_id = ?", &st)) {
        free(m);
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
        return;
    }
    sqlite3_bind_blob(st, 1, q->to, 16, SQLITE_STATIC);
    while (m->ndevices < MAX_RECIPIENT_DEVICES && pt_db_step(st) == 1) {
        if (sqlite3_column_bytes(st, 0) == 32) memcpy(m->devices[m->ndevices++], sqlite3_column_blob(st, 0), 32);
    }
    sqlite3_finalize(st);
    if (m->ndevices == 0) {
        free(m);
        pt_srv_reply_error(e, req, PT_RPC_NOT_FOUND, "USER_NOT_FOUND");
        return;
    }
    for (size_t i = 0; i < m->ndevices; i++) {
        int n = count_queue(s, m->devices[i]);
        if (n < 0 || (uint32_t)n >= s->cfg.queue_quota) {
            free(m);
            pt_srv_reply_error(e, req, PT_RPC_QUOTA, n < 0 ? "INTERNAL" : "RECIPIENT_QUEUE_FULL");
            return;
        }
    }
    reply_to_init(&m->to, c, req);
    m->server_id = s->next_server_id++;
    m->date_ms = pt_env_now_ms(pt_env_default());
    memcpy(m->sender, e->dev->user_id, 16);
    memcpy(m->sender_device, e->device_pk, 32);
    m->len = q->envelope.len;
    memcpy(m->envelope, q->envelope.data, q->envelope.len);
    /* forward to the connected devices now; the sender hears back after the commit */
    pt_tl_updates_newMessage u = {.server_id = m->server_id, .date = (int64_t)m->date_ms,
                                  .envelope = {m->envelope, m->len}};
    memcpy(u.from, m->sender, 16);
    memcpy(u.from_device, m->sender_device, 32);
    for (size_t i = 0; i < m->ndevices; i++) push_message(s, m->devices[i], NULL, &u);
    m->op = (pt_db_op){.apply = send_apply, .done = send_done, .arg = m};
    pt_db_submit(s->db, &m->op);
}

typedef struct received_op {
    pt_db_op op;
    reply_to to;
    uint8_t device[32];
    uint32_t n;
    int64_t ids[]; /* n server ids */
} received_op;

static int received_apply(sqlite3 *db, void *arg)
{
    received_op *r = arg;
    sqlite3_stmt *del, *dec, *gc;
    int rc = pt_db_prepare(db, "DELETE FROM queue WHERE device_key = ? AND server_id = ?", &del);
    if (rc) return rc;
    if ((rc = pt_db_prepare(db, "UPDATE messages SET refs = refs - 1 WHERE server_id = ?", &dec))) {
        sqlite3_finalize(del);
        return rc;
    }
    if ((rc = pt_db_prepare(db, "DELETE FROM messages WHERE server_id = ? AND refs <= 0", &gc))) {
        sqlite3_finalize(del);
        sqlite3_finalize(dec);
        return rc;
    }
    for (uint32_t i = 0; i < r->n && rc >= 0; i++) {
        sqlite3_reset(del);
        sqlite3_bind_blob(del, 1, r->device, 32, SQLITE_STATIC);
        sqlite3_bind_int64(del, 2, r->ids[i]);
        if ((rc = pt_db_step(del)) < 0 || sqlite3_changes(db) == 0) continue;
        sqlite3_reset(dec);
        sqlite3_bind_int64(dec, 1, r->ids[i]);
        if ((rc = pt_db_step(dec)) < 0) break;
        sqlite3_reset(gc);
        sqlite3_bind_int64(gc, 1, r->ids[i]);
        rc = pt_db_step(gc);
    }
    sqlite3_finalize(del);
    sqlite3_finalize(dec);
    sqlite3_finalize(gc);
    return rc < 0 ? rc : 0;
}

static void ok_done(void *arg, int rc)
{
    received_op *r = arg;
    pt_srv_sess *e = reply_session(&r->to);
    if (e) {
        if (rc == 0) {
            pt_buf out;
            pt_buf_init(&out);
            pt_tl_pt_ok ok;
            memset(&ok, 0, sizeof ok);
            if (pt_tl_pt_ok_encode(&out, &ok) == 0) pt_srv_reply(e, r->to.req_msg_id, &out);
            pt_buf_free(&out);
        } else {
            pt_srv_reply_error(e, r->to.req_msg_id, PT_RPC_INTERNAL, "STORE_FAILED");
        }
    }
    free(r);
}

static void rpc_received(pt_conn *c, uint64_t req, const pt_tl_messages_received *q)
{
    received_op *r = calloc(1, sizeof *r + q->server_ids.n * sizeof(int64_t));
    if (!r) {
        pt_srv_reply_error(c->sess, req, PT_RPC_INTERNAL, "OUT_OF_MEMORY");
        return;
    }
    reply_to_init(&r->to, c, req);
    memcpy(r->device, c->sess->device_pk, 32);
    r->n = q->server_ids.n;
    for (uint32_t i = 0; i < r->n; i++) r->ids[i] = q->server_ids.items[i];
    r->op = (pt_db_op){.apply = received_apply, .done = ok_done, .arg = r};
    pt_db_submit(c->srv->db, &r->op);
}

static void rpc_sync(pt_conn *c, uint64_t req)
{
    pt_srv_sess *e = c->sess;
    sqlite3_stmt *st;
    if (pt_db_prepare(pt_db_reader(c->srv->db),
                      "SELECT m.server_id, m.sender, m.sender_device, m.date_ms, m.envelope "
                      "FROM queue q JOIN messages m ON m.server_id = q.server_id "
                      "WHERE q.device_key = ? ORDER BY q.server_id",
                      &st)) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
        return;
    }
    sqlite3_bind_blob(st, 1, e->device_pk, 32, SQLITE_STATIC);
    size_t n = 0;
    while (pt_db_step(st) == 1) {
        if (sqlite3_column_bytes(st, 1) != 16 || sqlite3_column_bytes(st, 2) != 32) continue;
        pt_tl_updates_newMessage u = {
            .server_id = sqlite3_column_int64(st, 0),
            .date = sqlite3_column_int64(st, 3),
            .envelope = {sqlite3_column_blob(st, 4), (uint32_t)sqlite3_column_bytes(st, 4)}};
        memcpy(u.from, sqlite3_column_blob(st, 1), 16);
        memcpy(u.from_device, sqlite3_column_blob(st, 2), 32);
        push_message(c->srv, e->device_pk, e, &u);
        n++;
    }
    sqlite3_finalize(st);
    pt_log_debug("conn %s: sync delivered %zu queued messages", c->peer, n);
    pt_buf out;
    pt_buf_init(&out);
    pt_tl_pt_ok ok;
    memset(&ok, 0, sizeof ok);
    if (pt_tl_pt_ok_encode(&out, &ok) == 0) pt_srv_reply(e, req, &out);
    pt_buf_free(&out);
}

bool pt_srv_messaging_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded)
{
    if (!c->srv->db) { /* shutting down: the store is closed */
        pt_srv_reply_error(c->sess, msg_id, PT_RPC_UNAVAILABLE, "SHUTTING_DOWN");
        return true;
    }
    switch (ctor) {
    case PT_TL_AUTH_BINDUSERNAME_ID: rpc_bind(c, msg_id, decoded); return true;
    case PT_TL_USERS_RESOLVE_ID: rpc_resolve(c, msg_id, decoded); return true;
    case PT_TL_MESSAGES_SEND_ID: rpc_send(c, msg_id, decoded); return true;
    case PT_TL_MESSAGES_RECEIVED_ID: rpc_received(c, msg_id, decoded); return true;
    case PT_TL_MESSAGES_SYNC_ID: rpc_sync(c, msg_id); return true;
    default: return false;
    }
}
