/*
 * libpacktrack: messages and groups. Sending goes through the outbox: a message
 * is first stored (history + outbox, one transaction), then encrypted once for
 * every device it must reach (the envelope is written back to the outbox with the
 * advanced session states, one transaction), then sent until the server stores
 * it. A crash at any point resends the same bytes, which receivers recognise.
 * Receiving: an envelope is decrypted, its message, the session state and the
 * envelope's hash are committed together, and only then is the server told to
 * delete it.
 */
#include <stdio.h>
#include <stdlib.h>

#include "api/api_int.h"
#include "crypto/pt_crypto.h"
#include "wire/pt_wire.h"

#include <utf8proc.h>

/* ---- message rows -------------------------------------------------------------------------------- */

static int msg_encode(const pt_api_msg *m, pt_buf *b)
{
    int rc = pt_wr_u8(b, m->outgoing);
    if (rc == 0) rc = pt_wr_u8(b, m->delivery);
    if (rc == 0) rc = pt_wr_u8(b, m->code);
    if (rc == 0) rc = pt_buf_append(b, m->group_id, 16);
    if (rc == 0) rc = pt_buf_append(b, m->peer, 16);
    if (rc == 0) rc = pt_wr_str(b, m->from);
    if (rc == 0) rc = pt_wr_str(b, m->to);
    if (rc == 0) rc = pt_wr_str(b, m->group);
    if (rc == 0) rc = pt_wr_u64(b, m->time_ms);
    if (rc == 0) rc = pt_wr_bytes(b, m->text.data, m->text.len);
    if (rc == 0) rc = pt_wr_u8(b, m->undecryptable);
    if (rc == 0) rc = pt_wr_u8(b, m->resent);
    return rc;
}

static int msg_decode(pt_api_msg *m, const uint8_t *p, size_t n)
{
    pt_rd r = {p, n, false};
    m->outgoing = pt_rd_u8(&r);
    m->delivery = pt_rd_u8(&r);
    m->code = pt_rd_u8(&r);
    pt_rd_fixed(&r, m->group_id, 16);
    pt_rd_fixed(&r, m->peer, 16);
    pt_rd_str(&r, m->from, sizeof m->from);
    pt_rd_str(&r, m->to, sizeof m->to);
    pt_rd_str(&r, m->group, sizeof m->group);
    m->time_ms = pt_rd_u64(&r);
    size_t tl;
    const uint8_t *t = pt_rd_bytes(&r, &tl);
    m->undecryptable = r.n >= 2 ? pt_rd_u8(&r) : 0;
    m->resent = r.n >= 1 ? pt_rd_u8(&r) : 0;
    if (r.bad) return PT_ERR_DECODE;
    pt_buf_reset(&m->text);
    int rc = pt_buf_append(&m->text, t ? t : (const uint8_t *)"", tl);
    if (rc == 0) rc = pt_buf_reserve(&m->text, 1);
    if (rc == 0) m->text.data[m->text.len] = 0;
    return rc;
}

/* Inserts (or, with replace, rewrites) a row; a second insert of a msg_id is ignored. */
static int msg_store(pt_ctx *x, const pt_api_msg *m, bool seen, bool replace)
{
    pt_buf plain, sealed;
    pt_buf_init(&plain);
    pt_buf_init(&sealed);
    int rc = msg_encode(m, &plain);
    if (rc == 0) rc = pt_lstore_seal(x->st, "messages", m->msg_id, 16, plain.data, plain.len, &sealed);
    sqlite3_stmt *st = NULL;
    const char *sql = replace ? "UPDATE messages SET v = ?2, server_id = ?3 WHERE msg_id = ?1"
                              : "INSERT INTO messages(msg_id, v, server_id, seen) VALUES (?1, ?2, ?3, ?4) "
                                "ON CONFLICT(msg_id) DO NOTHING";
    if (rc == 0 && sqlite3_prepare_v2(pt_lstore_db(x->st), sql, -1, &st, NULL)) rc = PT_ERR_IO;
    if (rc == 0) {
        sqlite3_bind_blob(st, 1, m->msg_id, 16, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, sealed.data, (int)sealed.len, SQLITE_STATIC);
        if (m->server_id) sqlite3_bind_int64(st, 3, m->server_id);
        else sqlite3_bind_null(st, 3);
        if (!replace) sqlite3_bind_int(st, 4, seen);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : PT_ERR_IO;
    }
    sqlite3_finalize(st);
    pt_buf_free(&plain);
    pt_buf_free(&sealed);
    return rc;
}

/* Loads the row st points at: columns msg_id, server_id, v. */
int pt_api_msg_load(pt_ctx *x, sqlite3_stmt *st, pt_api_msg *m)
{
    if (sqlite3_column_bytes(st, 0) != 16) return PT_ERR_DECODE;
    memcpy(m->msg_id, sqlite3_column_blob(st, 0), 16);
    m->server_id = sqlite3_column_int64(st, 1);
    pt_buf b;
    pt_buf_init(&b);
    int rc = pt_lstore_unseal(x->st, "messages", m->msg_id, 16, sqlite3_column_blob(st, 2),
                              (size_t)sqlite3_column_bytes(st, 2), &b);
    if (rc == 0) rc = msg_decode(m, b.data, b.len);
    pt_buf_free(&b);
    return rc;
}

static int msg_find(pt_ctx *x, const char *where, int64_t key, const uint8_t *id, pt_api_msg *m)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT msg_id, server_id, v FROM messages WHERE %s", where);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(pt_lstore_db(x->st), sql, -1, &st, NULL)) return PT_ERR_IO;
    if (id) sqlite3_bind_blob(st, 1, id, 16, SQLITE_STATIC);
    else sqlite3_bind_int64(st, 1, key);
    int rc = sqlite3_step(st) == SQLITE_ROW ? pt_api_msg_load(x, st, m) : PT_ERR_NOT_FOUND;
    sqlite3_finalize(st);
    return rc;
}

static void to_public(const pt_api_msg *m, pt_message *o)
{
    memset(o, 0, sizeof *o);
    pt_hex_encode(o->id, m->msg_id, 16);
    snprintf(o->from, sizeof o->from, "%s", m->from);
    snprintf(o->to, sizeof o->to, "%s", m->to);
    snprintf(o->group, sizeof o->group, "%s", m->group);
    o->time_ms = (int64_t)m->time_ms;
    o->outgoing = m->outgoing;
    o->delivery = (pt_delivery)m->delivery;
    o->code = m->code;
    o->undecryptable = m->undecryptable;
    o->text = (const char *)m->text.data;
}

static void emit_msg(pt_ctx *x, pt_event_type type, const pt_api_msg *m)
{
    pt_message pm;
    to_public(m, &pm);
    pt_event ev = {.type = type, .message = &pm};
    pt_api_emit(x, &ev);
}

/* ---- groups ---------------------------------------------------------------------------------------- */

static int group_save(pt_ctx *x, const pt_api_group *g)
{
    pt_buf plain;
    pt_buf_init(&plain);
    int rc = pt_wr_str(&plain, g->name);
    if (rc == 0) rc = pt_wr_u8(&plain, g->joined);
    if (rc == 0)
        rc = pt_lstore_write_row(x->st, "groups", "INSERT OR REPLACE INTO groups(group_id, v) VALUES (?1, ?2)",
                                 g->group_id, 16, &plain);
    pt_buf_free(&plain);
    return rc;
}

static int group_decode(pt_ctx *x, sqlite3_stmt *st, pt_api_group *g)
{
    memset(g, 0, sizeof *g);
    if (sqlite3_column_bytes(st, 0) != 16) return PT_ERR_DECODE;
    memcpy(g->group_id, sqlite3_column_blob(st, 0), 16);
    pt_buf b;
    pt_buf_init(&b);
    int rc = pt_lstore_unseal(x->st, "groups", g->group_id, 16, sqlite3_column_blob(st, 1),
                              (size_t)sqlite3_column_bytes(st, 1), &b);
    if (rc == 0) {
        pt_rd r = {b.data, b.len, false};
        pt_rd_str(&r, g->name, sizeof g->name);
        g->joined = pt_rd_u8(&r);
        if (r.bad) rc = PT_ERR_DECODE;
    }
    pt_buf_free(&b);
    return rc;
}

int pt_api_group_load(pt_ctx *x, const uint8_t gid[16], pt_api_group *g)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(pt_lstore_db(x->st), "SELECT group_id, v FROM groups WHERE group_id = ?", -1, &st, NULL))
        return PT_ERR_IO;
    sqlite3_bind_blob(st, 1, gid, 16, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_ROW ? group_decode(x, st, g) : PT_ERR_NOT_FOUND;
    sqlite3_finalize(st);
    return rc;
}

static int group_by_name(pt_ctx *x, const char *name, pt_api_group *g)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(pt_lstore_db(x->st), "SELECT group_id, v FROM groups", -1, &st, NULL)) return PT_ERR_IO;
    int rc = PT_ERR_NOT_FOUND;
    while (sqlite3_step(st) == SQLITE_ROW)
        if (group_decode(x, st, g) == 0 && strcasecmp(g->name, name) == 0) {
            rc = 0;
            break;
        }
    sqlite3_finalize(st);
    if (rc) pt_api_fail(x, rc, "you are in no group named '%s'", name);
    return rc;
}

/* ---- the outbox ------------------------------------------------------------------------------------ */

typedef struct out_row {
    int64_t seq;
    uint8_t oid[16];
    uint8_t kind;              /* PT_OUT_* */
    uint8_t target[16];        /* user (DIRECT, INFO), our user (COPY), group (GROUP) */
    pt_chat_msg m;             /* the message; text points into `text` */
    pt_buf text;
    pt_buf env;                /* empty until encrypted */
    uint8_t dev[32];           /* RESEND: the one device (Olm identity) it goes to */
    uint8_t direct;            /* a device of the recipient acknowledged it on a direct (LAN)
                                  connection; the row still goes to the server for the others */
} out_row;

static int out_encode(const out_row *o, pt_buf *b)
{
    int rc = pt_wr_u8(b, o->kind);
    if (rc == 0) rc = pt_buf_append(b, o->target, 16);
    if (rc == 0) rc = pt_wr_u8(b, o->m.ctx);
    if (rc == 0) rc = pt_buf_append(b, o->m.conv, 16);
    if (rc == 0) rc = pt_buf_append(b, o->m.msg_id, 16);
    if (rc == 0) rc = pt_wr_u64(b, o->m.time_ms);
    if (rc == 0) rc = pt_wr_bytes(b, o->m.text, o->m.len);
    if (rc == 0) rc = pt_wr_bytes(b, o->env.data, o->env.len);
    if (rc == 0) rc = pt_buf_append(b, o->dev, 32);
    if (rc == 0) rc = pt_wr_u8(b, o->direct);
    return rc;
}

static int out_decode(out_row *o, const uint8_t *p, size_t n)
{
    pt_rd r = {p, n, false};
    o->kind = pt_rd_u8(&r);
    pt_rd_fixed(&r, o->target, 16);
    o->m.ctx = pt_rd_u8(&r);
    pt_rd_fixed(&r, o->m.conv, 16);
    pt_rd_fixed(&r, o->m.msg_id, 16);
    o->m.time_ms = pt_rd_u64(&r);
    size_t tl, el;
    const uint8_t *t = pt_rd_bytes(&r, &tl);
    const uint8_t *e = pt_rd_bytes(&r, &el);
    pt_rd_fixed(&r, o->dev, 32);
    o->direct = r.n ? pt_rd_u8(&r) : 0; /* rows written before direct delivery have no flag */
    if (r.bad) return PT_ERR_DECODE;
    int rc = pt_buf_append(&o->text, t ? t : (const uint8_t *)"", tl);
    if (rc == 0 && el) rc = pt_buf_append(&o->env, e, el);
    o->m.text = o->text.data ? o->text.data : (const uint8_t *)"";
    o->m.len = tl;
    return rc;
}

static int out_write(pt_ctx *x, const out_row *o, bool update)
{
    pt_buf plain;
    pt_buf_init(&plain);
    int rc = out_encode(o, &plain);
    if (rc == 0)
        rc = pt_lstore_write_row(x->st, "outbox",
                                 update ? "UPDATE outbox SET v = ?2 WHERE oid = ?1" : "INSERT INTO outbox(oid, v) VALUES (?1, ?2)",
                                 o->oid, 16, &plain);
    pt_buf_free(&plain);
    return rc;
}

static int out_add_dev(pt_ctx *x, uint8_t kind, const uint8_t target[16], const pt_chat_msg *m,
                       const uint8_t *dev)
{
    out_row o = {.kind = kind, .m = *m};
    if (dev) memcpy(o.dev, dev, 32);
    pt_random(o.oid, 16);
    memcpy(o.target, target, 16);
    pt_buf_init(&o.env);
    return out_write(x, &o, false);
}

static int out_add(pt_ctx *x, uint8_t kind, const uint8_t target[16], const pt_chat_msg *m)
{
    return out_add_dev(x, kind, target, m, NULL);
}

static void out_free(out_row *o)
{
    pt_buf_free(&o->text);
    pt_buf_free(&o->env);
}

/* Opens a session with a device we have none with, from the server's directory. */
static int open_session(pt_ctx *x, const uint8_t user[16], const pt_api_dev *d)
{
    pt_api_reply r;
    int rc;
    PT_API_CALL(rc, x, &r, prekeys_fetch, memcpy(q.user_id, user, 16); memcpy(q.device, d->device, 32));
    if ((rc == PT_ERR_OFFLINE || rc == PT_ERR_TIMEOUT) && x->lan && !pt_ct_is_zero(d->fallback, 32))
        return pt_chat_open(x->chat, PT_OLM_SUITE_PT_V1, d->curve, d->fallback); /* serverless: the signed fallback key */
    if (rc) return rc;
    const uint8_t *otk = d->fallback;
    const pt_tl_prekeys_bundles *b = &r.o.u.prekeys_bundles;
    if (r.o.id == PT_TL_PREKEYS_BUNDLES_ID && b->bundles.n == 1 && b->bundles.items[0].one_time_key.len == 32 &&
        memcmp(b->bundles.items[0].device, d->device, 32) == 0)
        otk = b->bundles.items[0].one_time_key.data;
    rc = pt_chat_open(x->chat, PT_OLM_SUITE_PT_V1, d->curve, otk);
    pt_api_reply_free(&r);
    return rc;
}

/* Encrypts m for each device of person p (but this device), adding entries to the
 * container at `at`; the peers touched are appended to `touched`. */
static int encrypt_for(pt_ctx *x, const pt_api_contact *p, const pt_chat_msg *m, pt_buf *env, size_t at,
                       pt_buf *touched)
{
    pt_buf one;
    pt_buf_init(&one);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < p->ndev; i++) {
        const pt_api_dev *d = &p->dev[i];
        if (memcmp(d->curve, x->my_curve, 32) == 0) continue;
        if (!pt_chat_has_session(x->chat, d->curve) && (rc = open_session(x, p->user_id, d)) != 0) {
            if (rc == PT_ERR_REFUSED) { /* the device went away: skip it */
                rc = 0;
                continue;
            }
            break;
        }
        pt_buf_reset(&one);
        if ((rc = pt_chat_send_msg(x->chat, d->curve, m, &one)) != 0) break;
        if ((rc = pt_chat_multi_add(env, at, d->curve, one.data, one.len)) != 0) break;
        rc = pt_buf_append(touched, d->curve, 32);
    }
    pt_buf_free(&one);
    return rc;
}

static int me_as_person(pt_ctx *x, pt_api_contact *me)
{
    return pt_api_person(x, x->user_id, true, me);
}

/* Builds o->env for the row: every device it must reach, with sessions opened as needed. */
static int build_envelope(pt_ctx *x, out_row *o, pt_buf *touched)
{
    size_t at;
    int rc = pt_chat_multi_begin(&o->env, &at);
    pt_api_contact *p = malloc(sizeof *p);
    if (!p) return PT_ERR_NOMEM;
    if (rc == 0 && o->kind == PT_OUT_GROUP) {
        pt_api_reply r;
        PT_API_CALL(rc, x, &r, groups_getMembers, memcpy(q.group_id, o->target, 16));
        for (uint32_t i = 0; rc == 0 && i < r.o.u.groups_members.members.n; i++) {
            const uint8_t *uid = r.o.u.groups_members.members.items[i].user_id;
            if (memcmp(uid, x->user_id, 16) == 0) continue;
            if ((rc = pt_api_person(x, uid, true, p)) == 0) rc = encrypt_for(x, p, &o->m, &o->env, at, touched);
        }
        if (rc == 0) pt_api_reply_free(&r);
        /* our other devices get a copy that says it is ours */
        pt_chat_msg copy = o->m;
        copy.ctx = PT_CHAT_CTX_SENT_GROUP;
        if (rc == 0 && (rc = me_as_person(x, p)) == 0) rc = encrypt_for(x, p, &copy, &o->env, at, touched);
    } else if (rc == 0) {
        rc = o->kind == PT_OUT_COPY ? me_as_person(x, p) : pt_api_person(x, o->target, true, p);
        if (rc == 0 && o->kind == PT_OUT_RESEND) { /* only the device that could not read it */
            size_t k = 0;
            for (size_t i = 0; i < p->ndev; i++)
                if (memcmp(p->dev[i].curve, o->dev, 32) == 0) p->dev[k++] = p->dev[i];
            p->ndev = k;
        }
        if (rc == 0) rc = encrypt_for(x, p, &o->m, &o->env, at, touched);
    }
    free(p);
    return rc;
}

/* After the server stored a row: the history row moves to STORED. */
static int mark_stored(pt_ctx *x, const out_row *o, int64_t server_id)
{
    if (o->kind != PT_OUT_DIRECT && o->kind != PT_OUT_GROUP) return 0;
    pt_api_msg m = {0};
    pt_buf_init(&m.text);
    int rc = msg_find(x, "msg_id = ?", 0, o->m.msg_id, &m);
    if (rc == 0 && m.delivery < PT_DELIVERY_STORED) {
        m.delivery = PT_DELIVERY_STORED;
        m.server_id = server_id;
        rc = msg_store(x, &m, true, true);
        if (rc == 0) emit_msg(x, PT_EVENT_DELIVERY, &m);
    }
    pt_buf_free(&m.text);
    return rc == PT_ERR_NOT_FOUND ? 0 : rc;
}

static int mark_failed(pt_ctx *x, const out_row *o)
{
    pt_api_msg m = {0};
    pt_buf_init(&m.text);
    int rc = msg_find(x, "msg_id = ?", 0, o->m.msg_id, &m);
    if (rc == 0 && (o->kind == PT_OUT_DIRECT || o->kind == PT_OUT_GROUP)) {
        m.delivery = PT_DELIVERY_FAILED;
        rc = msg_store(x, &m, true, true);
        if (rc == 0) emit_msg(x, PT_EVENT_DELIVERY, &m);
    }
    pt_buf_free(&m.text);
    return rc == PT_ERR_NOT_FOUND ? 0 : rc;
}

static int delete_row(pt_ctx *x, const out_row *o)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(pt_lstore_db(x->st), "DELETE FROM outbox WHERE oid = ?", -1, &st, NULL)) return PT_ERR_IO;
    sqlite3_bind_blob(st, 1, o->oid, 16, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : PT_ERR_IO;
    sqlite3_finalize(st);
    return rc;
}

static int save_touched(pt_ctx *x, const pt_buf *touched)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i + 32 <= touched->len; i += 32) rc = pt_api_save_session(x, touched->data + i);
    return rc;
}

/* Encrypts the row once: the envelope and the sessions it moved are stored together,
 * so every later send (to the server or directly) is the same bytes. */
static int ensure_env(pt_ctx *x, out_row *o)
{
    if (o->env.len) return 0;
    pt_buf touched;
    pt_buf_init(&touched);
    int rc = build_envelope(x, o, &touched);
    if (rc == 0 && (rc = pt_lstore_begin(x->st)) == 0) {
        rc = out_write(x, o, true);
        if (rc == 0) rc = save_touched(x, &touched);
        if (rc == 0) rc = pt_lstore_commit(x->st);
        else pt_lstore_rollback(x->st);
    }
    pt_buf_free(&touched);
    if (rc) pt_buf_reset(&o->env);
    return rc;
}

/* Encrypts (once) and sends one row; 0 once the server stored it. */
static int flush_row(pt_ctx *x, out_row *o)
{
    int rc = ensure_env(x, o);
    if (rc) return rc;
    pt_api_reply r;
    const uint8_t *to = o->kind == PT_OUT_COPY ? x->user_id : o->target;
    pt_tl_bytes env = {o->env.data, (uint32_t)o->env.len};
    if (o->kind == PT_OUT_GROUP)
        PT_API_CALL(rc, x, &r, messages_sendGroup, memcpy(q.group_id, o->target, 16); q.envelope = env);
    else
        PT_API_CALL(rc, x, &r, messages_send, memcpy(q.to, to, 16); q.envelope = env);
    bool full = rc == PT_ERR_REFUSED && (strcmp(x->last_error, "RECIPIENT_QUEUE_FULL") == 0 ||
                                         strcmp(x->last_error, "QUEUE_FULL") == 0 ||
                                         strncmp(x->last_error, "QUOTA", 5) == 0);
    if (rc == PT_ERR_REFUSED && (full || strcmp(x->last_error, "STORE_FAILED") == 0)) {
        /* a full recipient queue is not a verdict on the message either: it is kept
         * and tried again with the same backoff (before, the flush asked again at once,
         * in a loop, and pt_send read a refusal) */
        snprintf(x->store_reason, sizeof x->store_reason, "%.31s", x->last_error);
        /* the server could not commit it (disk full, I/O error): not a verdict on the
         * message. Keep the row and send it again later; the server may have forwarded
         * it already, and the recipient drops the copy by envelope hash. */
        int b = x->store_backoff_ms ? x->store_backoff_ms : PT_API_BACKOFF_MIN_MS;
        x->store_retry_ms = pt_env_now_ms(x->env) + (uint64_t)b;
        x->store_backoff_ms = b * 2 > PT_API_STORE_BACKOFF_MAX_MS ? PT_API_STORE_BACKOFF_MAX_MS : b * 2;
        pt_log_warn("libpacktrack: the server could not store a message (%s); it is kept and sent again in %d ms",
                    x->store_reason, b);
        return PT_ERR_AGAIN;
    }
    if (rc == PT_ERR_REFUSED) {
        if (o->kind == PT_OUT_COPY && strcmp(x->last_error, "USER_NOT_FOUND") == 0) rc = 0; /* no other device */
        char why[256];
        snprintf(why, sizeof why, "%s", x->last_error);
        if ((rc = pt_lstore_begin(x->st)) == 0) {
            rc = delete_row(x, o);
            if (rc == 0) rc = mark_failed(x, o);
            if (rc == 0) rc = pt_lstore_commit(x->st);
            else pt_lstore_rollback(x->st);
        }
        return rc ? rc : pt_api_fail(x, PT_ERR_REFUSED, "the server refused the message: %s", why);
    }
    if (rc) return rc;
    x->store_backoff_ms = 0;
    int64_t sid = r.o.id == PT_TL_MESSAGES_SENT_ID ? r.o.u.messages_sent.server_id : 0;
    pt_api_reply_free(&r);
    if ((rc = pt_lstore_begin(x->st)) != 0) return rc;
    rc = delete_row(x, o);
    if (rc == 0) rc = mark_stored(x, o, sid);
    if (rc == 0) rc = pt_lstore_commit(x->st);
    else pt_lstore_rollback(x->st);
    return rc;
}

/* Reads the row at st (columns seq, oid, v). */
static int load_row(pt_ctx *x, sqlite3_stmt *st, out_row *o)
{
    memset(o, 0, sizeof *o);
    pt_buf_init(&o->text);
    pt_buf_init(&o->env);
    o->seq = sqlite3_column_int64(st, 0);
    if (sqlite3_column_bytes(st, 1) != 16) return PT_ERR_DECODE;
    memcpy(o->oid, sqlite3_column_blob(st, 1), 16);
    pt_buf b;
    pt_buf_init(&b);
    int rc = pt_lstore_unseal(x->st, "outbox", o->oid, 16, sqlite3_column_blob(st, 2),
                              (size_t)sqlite3_column_bytes(st, 2), &b);
    if (rc == 0) rc = out_decode(o, b.data, b.len);
    pt_buf_free(&b);
    return rc;
}

static int flush_outbox(pt_ctx *x);

/* Not reentrant: a call inside flush_row can reconnect (a session restart after a
 * clock correction, api.c) and run after_connect, whose own flush would send the row
 * the outer one is sending again, as a second call. The outer loop goes on with the
 * rows after it anyway. */
int pt_api_flush_outbox(pt_ctx *x)
{
    if (x->flushing_outbox) return 0;
    x->flushing_outbox = true;
    int rc = flush_outbox(x);
    x->flushing_outbox = false;
    return rc;
}

static int flush_outbox(pt_ctx *x)
{
    sqlite3 *db = pt_lstore_db(x->st);
    int rc = 0;
    if (pt_env_now_ms(x->env) < x->store_retry_ms) return 0; /* STORE_FAILED a moment ago: wait */
    for (int guard = 0; guard < 100000 && rc == 0; guard++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "SELECT seq, oid, v FROM outbox ORDER BY seq LIMIT 1", -1, &st, NULL)) return PT_ERR_IO;
        if (sqlite3_step(st) != SQLITE_ROW) {
            sqlite3_finalize(st);
            return 0;
        }
        out_row o;
        rc = load_row(x, st, &o);
        sqlite3_finalize(st);
        if (rc == PT_ERR_DECODE || rc == PT_ERR_AUTH) {
            pt_log_error("local store: an outbox entry is damaged; it is dropped");
            rc = delete_row(x, &o);
        } else if (rc == 0) {
            rc = flush_row(x, &o);
            if (rc == PT_ERR_REFUSED) rc = 0; /* reported and dropped: go on with the next */
        }
        out_free(&o);
        if (rc == PT_ERR_AGAIN) return 0; /* kept: sent again after x->store_retry_ms */
    }
    return rc;
}

/* ---- direct (LAN) delivery of outbox rows -------------------------------------------------------------- */

/* Rows that may go directly to `user`: 1:1 messages (and resends) to them that no
 * device of theirs acknowledged directly yet. With `build`, each is encrypted (once)
 * and handed to fn; without, fn sees env == NULL for rows not encrypted yet. */
static int outbox_direct(pt_ctx *x, const uint8_t user[16], bool build, pt_api_direct_fn fn, void *ud)
{
    sqlite3 *db = pt_lstore_db(x->st);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT seq, oid, v FROM outbox WHERE seq > ? ORDER BY seq LIMIT 1", -1, &st, NULL))
        return PT_ERR_IO;
    int64_t after = -1;
    int rc = 0;
    for (int guard = 0; guard < 100000 && rc == 0; guard++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, after);
        if (sqlite3_step(st) != SQLITE_ROW) break;
        out_row o;
        int lr = load_row(x, st, &o);
        after = o.seq;
        if (lr == 0 && !o.direct && (o.kind == PT_OUT_DIRECT || o.kind == PT_OUT_RESEND) &&
            memcmp(o.target, user, 16) == 0) {
            if (build) {
                sqlite3_reset(st); /* ensure_env writes: no statement may hold the table */
                rc = ensure_env(x, &o);
            }
            if (rc == 0 && (o.env.len || !build)) {
                uint8_t hash[16];
                if (o.env.len && pt_blake2b(hash, 16, o.env.data, o.env.len, NULL, 0) != 0) rc = PT_ERR_CRYPTO;
                else rc = fn(x, ud, o.env.len ? o.env.data : NULL, o.env.len, hash);
            }
        }
        out_free(&o);
    }
    sqlite3_finalize(st);
    return rc;
}

int pt_api_outbox_direct(pt_ctx *x, const uint8_t user[16], pt_api_direct_fn fn, void *ud)
{
    return outbox_direct(x, user, true, fn, ud);
}

int pt_api_outbox_direct_peek(pt_ctx *x, const uint8_t user[16], pt_api_direct_fn fn, void *ud)
{
    return outbox_direct(x, user, false, fn, ud);
}

/* The row whose envelope has this hash reached the recipient: DELIVERED, and never
 * sent directly again (the server still gets it for the recipient's other devices). */
int pt_api_outbox_direct_acked(pt_ctx *x, const uint8_t hash[16])
{
    sqlite3 *db = pt_lstore_db(x->st);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT seq, oid, v FROM outbox WHERE seq > ? ORDER BY seq LIMIT 1", -1, &st, NULL))
        return PT_ERR_IO;
    int64_t after = -1;
    int rc = 0;
    for (int guard = 0; guard < 100000; guard++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, after);
        if (sqlite3_step(st) != SQLITE_ROW) break;
        out_row o;
        int lr = load_row(x, st, &o);
        after = o.seq;
        uint8_t h[16];
        if (lr == 0 && o.env.len && pt_blake2b(h, 16, o.env.data, o.env.len, NULL, 0) == 0 &&
            memcmp(h, hash, 16) == 0) {
            sqlite3_finalize(st);
            st = NULL;
            pt_api_msg m = {0};
            pt_buf_init(&m.text);
            o.direct = 1;
            if ((rc = pt_lstore_begin(x->st)) == 0) {
                rc = out_write(x, &o, true);
                bool found = false;
                if (rc == 0 && o.kind == PT_OUT_DIRECT) {
                    int fr = msg_find(x, "msg_id = ?", 0, o.m.msg_id, &m);
                    found = fr == 0;
                    if (fr == 0 && m.delivery < PT_DELIVERY_DELIVERED) {
                        m.delivery = PT_DELIVERY_DELIVERED;
                        rc = msg_store(x, &m, true, true);
                    } else {
                        found = false;
                    }
                }
                if (rc == 0) rc = pt_lstore_commit(x->st);
                else pt_lstore_rollback(x->st);
                if (rc == 0 && found) emit_msg(x, PT_EVENT_DELIVERY, &m);
            }
            pt_buf_free(&m.text);
            out_free(&o);
            break;
        }
        out_free(&o);
    }
    if (st) sqlite3_finalize(st);
    return rc;
}

/* ---- sending ---------------------------------------------------------------------------------------- */

static int check_text(pt_ctx *x, const char *text)
{
    size_t len = text ? strlen(text) : 0;
    if (len == 0) return pt_api_fail(x, PT_ERR_INVAL, "the message is empty");
    if (len > PT_TEXT_MAX) return pt_api_fail(x, PT_ERR_TOO_BIG, "the message is longer than %d bytes", PT_TEXT_MAX);
    if (!pt_wire_utf8_valid((const uint8_t *)text, len))
        return pt_api_fail(x, PT_ERR_INVAL, "the message is not valid UTF-8; nothing was sent");
    return 0;
}

/* Stores a new outgoing message and its outbox rows, then flushes. */
static int send_common(pt_ctx *x, pt_api_msg *m, uint8_t kind, const uint8_t target[16], char id[PT_ID_HEX_LEN])
{
    pt_chat_msg cm = {.ctx = kind == PT_OUT_GROUP ? PT_CHAT_CTX_GROUP : PT_CHAT_CTX_DIRECT,
                      .time_ms = m->time_ms, .text = m->text.data, .len = m->text.len};
    memcpy(cm.msg_id, m->msg_id, 16);
    if (kind == PT_OUT_GROUP) memcpy(cm.conv, target, 16);
    int rc = pt_lstore_begin(x->st);
    if (rc) return rc;
    rc = msg_store(x, m, true, false);
    if (rc == 0) rc = out_add(x, kind, target, &cm);
    if (rc == 0 && kind == PT_OUT_DIRECT) {
        pt_chat_msg copy = cm;
        copy.ctx = PT_CHAT_CTX_SENT_COPY;
        memcpy(copy.conv, target, 16);
        rc = out_add(x, PT_OUT_COPY, x->user_id, &copy);
    }
    if (rc == 0) rc = pt_lstore_commit(x->st);
    else pt_lstore_rollback(x->st);
    if (rc) return pt_api_fail(x, rc, "cannot store the message: %s", pt_strerror(rc));
    if (id) pt_hex_encode(id, m->msg_id, 16);
    if ((rc = pt_api_ensure_online(x)) == 0) rc = pt_api_flush_outbox(x);
    pt_api_process_updates(x);
    if (rc && x->lan && kind == PT_OUT_DIRECT) { /* no server: straight to the friend, if nearby */
        int lr = pt_api_lan_deliver(x, target, PT_API_LAN_WAIT_MS);
        if (lr == 0) rc = 0;
    }
    pt_api_msg now = {0};
    pt_buf_init(&now.text);
    int st = msg_find(x, "msg_id = ?", 0, m->msg_id, &now);
    int delivery = st == 0 ? now.delivery : PT_DELIVERY_QUEUED;
    pt_buf_free(&now.text);
    if (delivery == PT_DELIVERY_FAILED) return PT_ERR_REFUSED;
    if (delivery >= PT_DELIVERY_STORED) return 0;
    if (rc == 0) rc = PT_ERR_OFFLINE;
    if (rc == PT_ERR_OFFLINE && x->online && pt_env_now_ms(x->env) < x->store_retry_ms &&
        strcmp(x->store_reason, "STORE_FAILED") != 0)
        pt_api_fail(x, rc, "the recipient's queue on the server is full (%s); the message is kept and will be sent "
                           "again", x->store_reason);
    else if (rc == PT_ERR_OFFLINE && x->online && pt_env_now_ms(x->env) < x->store_retry_ms)
        pt_api_fail(x, rc, "the server could not store messages just now (STORE_FAILED: its disk may be full); "
                           "the message is kept and will be sent again");
    else if ((rc == PT_ERR_OFFLINE || rc == PT_ERR_TIMEOUT) && x->lan)
        pt_api_fail(x, rc, "no server is reachable and the recipient is not nearby; the message is kept and "
                           "will be sent when either appears");
    else if (rc == PT_ERR_OFFLINE || rc == PT_ERR_TIMEOUT)
        pt_api_fail(x, rc, "the server is not reachable; the message is kept and will be sent later");
    return rc;
}

static int send_direct(pt_ctx *x, const char *to, const char *text, char id[PT_ID_HEX_LEN]);
static int send_group(pt_ctx *x, const char *group, const char *text, char id[PT_ID_HEX_LEN]);

/* One send reads each device list once (see in_send). */
int pt_send(pt_ctx *x, const char *to, const char *text, char id[PT_ID_HEX_LEN])
{
    x->in_send = true;
    x->nfresh = 0;
    int rc = send_direct(x, to, text, id);
    x->in_send = false;
    x->nfresh = 0;
    return rc;
}

int pt_group_send(pt_ctx *x, const char *group, const char *text, char id[PT_ID_HEX_LEN])
{
    x->in_send = true;
    x->nfresh = 0;
    int rc = send_group(x, group, text, id);
    x->in_send = false;
    x->nfresh = 0;
    return rc;
}

static int send_direct(pt_ctx *x, const char *to, const char *text, char id[PT_ID_HEX_LEN])
{
    int rc = check_text(x, text);
    if (rc) return rc;
    pt_api_contact *c = malloc(sizeof *c);
    if (!c) return PT_ERR_NOMEM;
    bool online = pt_api_ensure_online(x) == 0; /* takes in what waits, e.g. an acceptance */
    rc = pt_api_contact_by_name(x, to, c);
    if (rc == PT_ERR_NOT_FOUND && online) rc = pt_api_resolve(x, to, c);
    if (rc == 0 && c->state != PT_CONTACT_STATE_FRIEND && online && pt_api_sync_contacts(x) == 0)
        rc = pt_api_contact_load(x, c->user_id, c);
    if (rc == 0 && online && c->state == PT_CONTACT_STATE_FRIEND) {
        rc = pt_api_person(x, c->user_id, true, c);
        /* the link dropped while we asked: the keys we checked last time decide, and the
         * message is kept (PT_ERR_OFFLINE must always mean "kept": RELIABILITY.md defect 6) */
        if (rc == PT_ERR_OFFLINE || rc == PT_ERR_TIMEOUT) rc = pt_api_contact_load(x, c->user_id, c);
    }
    if (rc == PT_ERR_OFFLINE || rc == PT_ERR_TIMEOUT) /* nothing to keep it for: say so, not "kept" */
        rc = pt_api_fail(x, PT_ERR_STATE, "no friend named '%s' is known on this device and the server cannot be "
                                          "asked now; nothing was kept", to);
    if (rc == 0 && c->key_changed)
        rc = pt_api_fail(x, PT_ERR_KEY_MISMATCH, "%s's keys changed (a device was added, removed or re-keyed); compare "
                                                 "safety numbers, then run 'packtrack trust %s' or 'packtrack verify %s'",
                         c->name, c->name, c->name);
    else if (rc == 0 && c->state != PT_CONTACT_STATE_FRIEND)
        rc = pt_api_fail(x, PT_ERR_STATE, "%s is not your friend yet; send a request with 'friend add %s'", c->name, c->name);
    else if (rc == PT_ERR_NOT_FOUND)
        pt_api_fail(x, rc, "you have no friend named '%s'", to);
    if (rc) {
        free(c);
        return rc;
    }
    pt_api_msg m = {.outgoing = 1, .delivery = PT_DELIVERY_QUEUED, .time_ms = pt_env_now_ms(x->env)};
    pt_random(m.msg_id, 16);
    memcpy(m.peer, c->user_id, 16);
    snprintf(m.from, sizeof m.from, "%s", x->username);
    snprintf(m.to, sizeof m.to, "%s", c->name);
    pt_buf_init(&m.text);
    rc = pt_buf_append(&m.text, text, strlen(text));
    if (rc == 0) rc = send_common(x, &m, PT_OUT_DIRECT, c->user_id, id);
    pt_buf_free(&m.text);
    free(c);
    return rc;
}

static int send_group(pt_ctx *x, const char *group, const char *text, char id[PT_ID_HEX_LEN])
{
    int rc = check_text(x, text);
    pt_api_group g;
    if (rc == 0) rc = group_by_name(x, group, &g);
    if (rc) return rc;
    if (pt_api_ensure_online(x) == 0) { /* a member whose keys changed stops the message */
        pt_api_reply r;
        PT_API_CALL(rc, x, &r, groups_getMembers, memcpy(q.group_id, g.group_id, 16));
        pt_api_contact *c = malloc(sizeof *c);
        for (uint32_t i = 0; rc == 0 && c && i < r.o.u.groups_members.members.n; i++) {
            const uint8_t *uid = r.o.u.groups_members.members.items[i].user_id;
            if (memcmp(uid, x->user_id, 16) == 0 || pt_api_person(x, uid, true, c) != 0) continue;
            if (c->key_changed)
                rc = pt_api_fail(x, PT_ERR_KEY_MISMATCH, "%s's keys changed; compare safety numbers, then run "
                                                         "'packtrack trust %s' or 'packtrack verify %s'",
                                 c->name, c->name, c->name);
        }
        if (r.arena) pt_api_reply_free(&r);
        free(c);
        if (rc == PT_ERR_REFUSED) rc = 0; /* not a member any more: the send says so */
        /* the link dropped while we asked: the message is kept and goes when it is back
         * (PT_ERR_OFFLINE must always mean "kept": RELIABILITY.md defect 6) */
        if (rc == PT_ERR_OFFLINE || rc == PT_ERR_TIMEOUT) rc = 0;
        if (rc) return rc;
    }
    pt_api_msg m = {.outgoing = 1, .delivery = PT_DELIVERY_QUEUED, .time_ms = pt_env_now_ms(x->env)};
    pt_random(m.msg_id, 16);
    memcpy(m.group_id, g.group_id, 16);
    memcpy(m.peer, x->user_id, 16);
    snprintf(m.from, sizeof m.from, "%s", x->username);
    snprintf(m.group, sizeof m.group, "%s", g.name);
    pt_buf_init(&m.text);
    rc = pt_buf_append(&m.text, text, strlen(text));
    if (rc == 0) rc = send_common(x, &m, PT_OUT_GROUP, g.group_id, id);
    pt_buf_free(&m.text);
    return rc;
}

/* ---- receiving ---------------------------------------------------------------------------------------- */

static void ack_server(pt_ctx *x, int64_t server_id)
{
    if (server_id == 0) return; /* it came directly, not from the server */
    int rc;
    PT_API_NOTICE(rc, x, messages_confirm, q.server_ids = (pt_tl_vec_long){1, &server_id});
    if (rc) pt_log_debug("could not confirm item %lld: %s", (long long)server_id, pt_strerror(rc));
}

bool pt_api_envelope_seen(pt_ctx *x, const uint8_t hash[16])
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(pt_lstore_db(x->st), "SELECT 1 FROM seen_envelopes WHERE hash = ?", -1, &st, NULL)) return false;
    sqlite3_bind_blob(st, 1, hash, 16, SQLITE_STATIC);
    bool seen = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return seen;
}

static int remember_envelope(pt_ctx *x, const uint8_t hash[16])
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(pt_lstore_db(x->st), "INSERT OR IGNORE INTO seen_envelopes(hash, at_ms) VALUES (?, ?)",
                           -1, &st, NULL))
        return PT_ERR_IO;
    sqlite3_bind_blob(st, 1, hash, 16, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)pt_env_now_ms(x->env));
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : PT_ERR_IO;
    sqlite3_finalize(st);
    return rc;
}

/* Whose device sent this: the device must be in the sender's signed device list. */
static bool device_matches(const pt_api_contact *p, const uint8_t dev[32], const uint8_t curve[32])
{
    for (size_t i = 0; i < p->ndev; i++)
        if (memcmp(p->dev[i].device, dev, 32) == 0) return memcmp(p->dev[i].curve, curve, 32) == 0;
    return false;
}

static void send_receipt(pt_ctx *x, const uint8_t to[16], int64_t about, int status, const uint8_t curve[32],
                         const pt_buf *reply)
{
    if (about == 0) return; /* a direct delivery: its ACK on the connection said it */
    pt_buf env;
    pt_buf_init(&env);
    size_t at;
    int rc = 0;
    if (reply && reply->len) {
        rc = pt_chat_multi_begin(&env, &at);
        if (rc == 0) rc = pt_chat_multi_add(&env, at, curve, reply->data, reply->len);
    }
    if (rc == 0)
        PT_API_CALL(rc, x, NULL, messages_sendReceipt, memcpy(q.to, to, 16); q.about_server_id = about;
                    q.status = status; q.envelope = (pt_tl_bytes){env.data, (uint32_t)env.len});
    if (rc) pt_log_debug("receipt not sent: %s", x->last_error);
    pt_buf_free(&env);
}

static int mark_unseen(pt_ctx *x, const uint8_t msg_id[16])
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(pt_lstore_db(x->st), "UPDATE messages SET seen = 0 WHERE msg_id = ?", -1, &st, NULL))
        return PT_ERR_IO;
    sqlite3_bind_blob(st, 1, msg_id, 16, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : PT_ERR_IO;
    sqlite3_finalize(st);
    return rc;
}

void pt_api_on_message(pt_ctx *x, int64_t server_id, const uint8_t from[16], const uint8_t dev[32],
                       const uint8_t *group_id, const pt_tl_bytes *env)
{
    uint8_t hash[16], sender[32];
    if (pt_blake2b(hash, 16, env->data, env->len, NULL, 0) != 0) return;
    if (pt_api_envelope_seen(x, hash)) { /* delivered again after a crash or reconnect */
        ack_server(x, server_id);
        return;
    }
    const uint8_t *inner = NULL;
    size_t ilen = 0;
    int rc = pt_chat_multi_find(env->data, env->len, x->my_curve, &inner, &ilen);
    pt_api_contact *p = malloc(sizeof *p);
    pt_buf reply;
    pt_buf_init(&reply);
    pt_api_msg m = {0};
    pt_buf_init(&m.text);
    pt_chat_event ev = {0};
    bool from_me = memcmp(from, x->user_id, 16) == 0, group_info = false, replaces = false;
    pt_api_group g = {0};
    if (!p) goto out;
    if (rc == 0) rc = pt_chat_envelope_sender(inner, ilen, sender);
    if (rc) {
        /* not for this device (added after it was sent) or malformed: drop it */
        pt_log_info("item %lld has nothing for this device (%s); dropped", (long long)server_id, pt_strerror(rc));
        goto done;
    }
    if ((rc = pt_api_person(x, from, false, p)) == 0 && !device_matches(p, dev, sender)) {
        pt_api_stale(x, from);
        rc = pt_api_person(x, from, true, p);
    }
    if (rc)
        goto out; /* server unreachable: try again when it delivers again */
    if (!device_matches(p, dev, sender)) {
        pt_log_warn("a message claiming to be from %s comes from a device not in their signed list; dropped", p->name);
        goto done;
    }
    bool allowed = from_me || p->state == PT_CONTACT_STATE_FRIEND ||
                   (group_id && pt_api_group_load(x, group_id, &g) == 0);
    if (!allowed && pt_api_sync_contacts(x) == 0 && pt_api_contact_load(x, from, p) == 0)
        allowed = p->state == PT_CONTACT_STATE_FRIEND; /* befriended from another of our devices */
    if (!allowed) {
        pt_log_warn("a message from %s, who is not a friend, is dropped", p->name);
        goto done;
    }
    if ((rc = pt_chat_receive(x->chat, inner, ilen, &ev, &reply)) != 0) goto out;
    if (ev.type == PT_CHAT_EV_MESSAGE) {
        memcpy(m.msg_id, ev.msg_id, 16);
        m.time_ms = ev.time_ms;
        m.server_id = server_id;
        snprintf(m.from, sizeof m.from, "%s", p->name);
        if ((rc = pt_buf_append(&m.text, ev.text, ev.len)) != 0) goto out;
        if (pt_buf_reserve(&m.text, 1) == 0) m.text.data[m.text.len] = 0;
        switch (ev.ctx) {
        case PT_CHAT_CTX_RESEND: {
            /* the copy that failed comes again: it takes the placeholder's place */
            pt_api_msg ph = {0};
            pt_buf_init(&ph.text);
            if (!from_me && msg_find(x, "msg_id = ?", 0, ev.conv, &ph) == 0 && ph.undecryptable &&
                memcmp(ph.peer, from, 16) == 0) {
                memcpy(m.msg_id, ph.msg_id, 16);
                m.server_id = ph.server_id; /* receipts name the item the sender knows */
                memcpy(m.group_id, ph.group_id, 16);
                snprintf(m.group, sizeof m.group, "%s", ph.group);
                replaces = true;
            }
            pt_buf_free(&ph.text);
            memcpy(m.peer, from, 16);
            snprintf(m.to, sizeof m.to, "%s", m.group[0] ? "" : x->username);
            break;
        }
        case PT_CHAT_CTX_DIRECT:
            memcpy(m.peer, from, 16);
            snprintf(m.to, sizeof m.to, "%s", x->username);
            break;
        case PT_CHAT_CTX_SENT_COPY: {
            if (!from_me) goto done;
            pt_api_contact *to = malloc(sizeof *to);
            if (!to || pt_api_person(x, ev.conv, false, to) != 0) {
                free(to);
                goto out;
            }
            m.outgoing = 1;
            m.delivery = PT_DELIVERY_STORED;
            memcpy(m.peer, ev.conv, 16);
            snprintf(m.to, sizeof m.to, "%s", to->name);
            free(to);
            break;
        }
        case PT_CHAT_CTX_GROUP:
        case PT_CHAT_CTX_SENT_GROUP:
            if (!group_id || memcmp(group_id, ev.conv, 16) != 0) goto done; /* must match the routing */
            if (pt_api_group_load(x, ev.conv, &g) != 0) {
                memcpy(g.group_id, ev.conv, 16);
                pt_hex_encode(g.name, ev.conv, 8); /* a name arrives with the group's info */
            }
            memcpy(m.group_id, ev.conv, 16);
            memcpy(m.peer, from, 16);
            snprintf(m.group, sizeof m.group, "%s", g.name);
            m.outgoing = ev.ctx == PT_CHAT_CTX_SENT_GROUP && from_me;
            m.delivery = m.outgoing ? PT_DELIVERY_STORED : 0;
            break;
        case PT_CHAT_CTX_GROUP_INFO:
            group_info = true;
            memcpy(g.group_id, ev.conv, 16);
            snprintf(g.name, sizeof g.name, "%.*s", (int)ev.len, (const char *)ev.text);
            g.joined = 1;
            break;
        default: goto done;
        }
    } else if (ev.type == PT_CHAT_EV_REJECTED && !from_me) {
        /* never dropped silently: a placeholder says what happened, and the receipt
         * below asks the sender's device to send it again over a new session */
        memcpy(m.msg_id, ev.msg_id, 16);
        m.time_ms = pt_env_now_ms(x->env);
        m.server_id = server_id;
        m.undecryptable = 1;
        m.code = (uint8_t)ev.code;
        memcpy(m.peer, from, 16);
        snprintf(m.from, sizeof m.from, "%s", p->name);
        if (group_id) {
            memcpy(m.group_id, group_id, 16);
            if (pt_api_group_load(x, group_id, &g) != 0) pt_hex_encode(g.name, group_id, 8);
            snprintf(m.group, sizeof m.group, "%s", g.name);
        } else {
            snprintf(m.to, sizeof m.to, "%s", x->username);
        }
        if (pt_buf_reserve(&m.text, 1) == 0) m.text.data[0] = 0;
        pt_log_info("a message from %s could not be read (code %d); asking for it again", p->name, ev.code);
    }
    /* one transaction: the message, the session, the envelope seen */
    if ((rc = pt_lstore_begin(x->st)) != 0) goto out;
    rc = remember_envelope(x, hash);
    uint8_t peer[32];
    if (rc == 0 && pt_chat_last_peer(x->chat, peer)) rc = pt_api_save_session(x, peer);
    if (rc == 0) rc = pt_api_save_account(x); /* a pre-key message used a one-time key */
    bool store_msg = (ev.type == PT_CHAT_EV_MESSAGE && !group_info) || m.undecryptable;
    if (rc == 0 && store_msg) rc = msg_store(x, &m, false, replaces);
    if (rc == 0 && replaces) rc = mark_unseen(x, m.msg_id);
    if (rc == 0 && group_info) rc = group_save(x, &g);
    if (rc == 0) rc = pt_lstore_commit(x->st);
    else pt_lstore_rollback(x->st);
    if (rc) goto out;
    ack_server(x, server_id);
    if (ev.type == PT_CHAT_EV_MESSAGE && !from_me)
        send_receipt(x, from, m.server_id ? m.server_id : server_id, PT_CHAT_ACK_ACCEPTED + 5, sender, &reply);
    else if (ev.type == PT_CHAT_EV_REJECTED && !from_me)
        send_receipt(x, from, server_id, ev.code, sender, &reply);
    if (group_info) {
        int jr;
        PT_API_CALL(jr, x, NULL, groups_join, memcpy(q.group_id, g.group_id, 16));
        (void)jr; /* already a member, or the invitation is gone: either way nothing to do */
        pt_event ge = {.type = PT_EVENT_GROUP, .group = g.name, .user = p->name, .text = "joined"};
        pt_api_emit(x, &ge);
    } else if (store_msg) {
        emit_msg(x, PT_EVENT_MESSAGE, &m);
    }
    goto out;
done: /* handled without a message: remember it and let the server forget it */
    if (remember_envelope(x, hash) == 0) ack_server(x, server_id);
out:
    pt_buf_free(&reply);
    pt_buf_free(&m.text);
    free(p);
}

/* The receiver could not read one of our messages: forget our session with that
 * device and send the message again (once) over a new one, naming its placeholder. */
static void resend(pt_ctx *x, pt_api_msg *m, const pt_tl_updates_receipt *u, const uint8_t placeholder[16])
{
    pt_api_contact *p = malloc(sizeof *p);
    const uint8_t *curve = NULL;
    if (p && pt_api_person(x, u->from, true, p) == 0)
        for (size_t i = 0; i < p->ndev; i++)
            if (memcmp(p->dev[i].device, u->from_device, 32) == 0) curve = p->dev[i].curve;
    if (!curve) {
        free(p);
        return;
    }
    pt_chat_msg cm = {.ctx = PT_CHAT_CTX_RESEND, .time_ms = m->time_ms, .text = m->text.data, .len = m->text.len};
    memcpy(cm.msg_id, m->msg_id, 16);
    memcpy(cm.conv, placeholder, 16);
    pt_chat_forget(x->chat, curve);
    m->resent = 1;
    int rc = pt_lstore_begin(x->st);
    if (rc == 0) {
        rc = pt_api_save_session(x, curve);
        if (rc == 0) rc = out_add_dev(x, PT_OUT_RESEND, u->from, &cm, curve);
        if (rc == 0) rc = msg_store(x, m, true, true);
        if (rc == 0) rc = pt_lstore_commit(x->st);
        else pt_lstore_rollback(x->st);
    }
    if (rc == 0) pt_log_info("%s could not read a message (code %d): sending it again over a new session", p->name, (int)u->status);
    free(p);
}

void pt_api_on_receipt(pt_ctx *x, const pt_tl_updates_receipt *u)
{
    /* an encrypted ACK keeps the session moving: decrypt it; a clear one names what failed */
    const uint8_t *inner;
    size_t ilen;
    uint8_t failed_id[16] = {0};
    bool have_failed = false;
    if (u->envelope.len && pt_chat_multi_find(u->envelope.data, u->envelope.len, x->my_curve, &inner, &ilen) == 0) {
        pt_chat_event ev;
        pt_buf reply;
        pt_buf_init(&reply);
        uint8_t peer[32];
        if (pt_chat_receive(x->chat, inner, ilen, &ev, &reply) == 0) {
            if (ev.type == PT_CHAT_EV_ACK && ev.code >= 1 && ev.code <= 4) {
                memcpy(failed_id, ev.msg_id, 16);
                have_failed = true;
            }
            if (pt_chat_last_peer(x->chat, peer) && pt_api_save_session(x, peer) != 0)
                pt_log_warn("local store: a session state could not be saved");
        }
        pt_buf_free(&reply);
    }
    pt_api_msg m = {0};
    pt_buf_init(&m.text);
    int rc = msg_find(x, "server_id = ?", u->about_server_id, NULL, &m);
    if (rc == 0 && m.outgoing) {
        if (u->status >= 1 && u->status <= 4) {
            if (have_failed && !m.resent) {
                m.code = (uint8_t)u->status;
                resend(x, &m, u, failed_id);
            } else if (m.delivery < PT_DELIVERY_DELIVERED) {
                m.delivery = PT_DELIVERY_FAILED;
                m.code = (uint8_t)u->status;
                if (msg_store(x, &m, true, true) == 0) emit_msg(x, PT_EVENT_DELIVERY, &m);
            }
        } else {
            uint8_t want = u->status == 6 ? PT_DELIVERY_READ : PT_DELIVERY_DELIVERED;
            if (want > m.delivery || m.delivery == PT_DELIVERY_FAILED) {
                m.delivery = want;
                m.code = 0;
                if (msg_store(x, &m, true, true) == 0) emit_msg(x, PT_EVENT_DELIVERY, &m);
            }
        }
    }
    pt_buf_free(&m.text);
    ack_server(x, u->server_id);
}

void pt_api_on_group_event(pt_ctx *x, const pt_tl_updates_groupEvent *u)
{
    static const char *const what[] = {"", "invited", "joined", "left", "removed", "made admin", "admin revoked"};
    pt_api_contact *actor = malloc(sizeof *actor);
    pt_api_group g;
    if (actor && pt_api_person(x, u->actor, false, actor) == 0) {
        bool known = pt_api_group_load(x, u->group_id, &g) == 0;
        if (!known) pt_hex_encode(g.name, u->group_id, 8);
        /* an invitation from a friend is accepted; the group's name follows in its info */
        if (u->event == 1 && memcmp(u->user_id, x->user_id, 16) == 0 && actor->state == PT_CONTACT_STATE_FRIEND) {
            int rc;
            PT_API_CALL(rc, x, NULL, groups_join, memcpy(q.group_id, u->group_id, 16));
            if (rc) pt_log_info("could not join a group: %s", x->last_error);
        }
        if (u->event >= 1 && u->event <= 6) {
            pt_event ev = {.type = PT_EVENT_GROUP, .group = g.name, .user = actor->name, .text = what[u->event]};
            pt_api_emit(x, &ev);
        }
    }
    free(actor);
    ack_server(x, u->server_id);
}

/* ---- groups: create, members ------------------------------------------------------------------------ */

int pt_group_create(pt_ctx *x, const char *name, const char *const *members, size_t n)
{
    size_t nl = name ? strlen(name) : 0;
    if (nl == 0 || nl >= PT_NAME_MAX || !pt_wire_utf8_valid((const uint8_t *)name, nl))
        return pt_api_fail(x, PT_ERR_INVAL, "a group name is 1-%d bytes of UTF-8", PT_NAME_MAX - 1);
    pt_api_group g;
    if (group_by_name(x, name, &g) == 0) return pt_api_fail(x, PT_ERR_EXISTS, "you already have a group named '%s'", name);
    if (n == 0 || n > 256) return pt_api_fail(x, PT_ERR_INVAL, "a group needs 1-256 members besides you");
    pt_api_contact *c = calloc(n, sizeof *c);
    if (!c) return PT_ERR_NOMEM;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = pt_api_resolve(x, members[i], &c[i]);
        if (rc == 0 && c[i].state != PT_CONTACT_STATE_FRIEND)
            rc = pt_api_fail(x, PT_ERR_STATE, "%s is not your friend; only friends can be added", c[i].name);
    }
    pt_api_reply r;
    if (rc == 0) PT_API_CALL(rc, x, &r, groups_create, (void)q);
    if (rc == 0) {
        memcpy(g.group_id, r.o.u.groups_created.group_id, 16);
        pt_api_reply_free(&r);
        snprintf(g.name, sizeof g.name, "%s", name);
        g.joined = 1;
        rc = group_save(x, &g);
    }
    for (size_t i = 0; rc == 0 && i < n; i++)
        PT_API_CALL(rc, x, NULL, groups_invite, memcpy(q.group_id, g.group_id, 16); memcpy(q.user_id, c[i].user_id, 16));
    /* each member (and our other devices) learns the group's name from us, encrypted */
    pt_chat_msg info = {.ctx = PT_CHAT_CTX_GROUP_INFO, .time_ms = pt_env_now_ms(x->env),
                        .text = (const uint8_t *)name, .len = nl};
    memcpy(info.conv, g.group_id, 16);
    if (rc == 0 && (rc = pt_lstore_begin(x->st)) == 0) {
        for (size_t i = 0; rc == 0 && i <= n; i++) {
            pt_random(info.msg_id, 16);
            rc = out_add(x, i < n ? PT_OUT_INFO : PT_OUT_COPY, i < n ? c[i].user_id : x->user_id, &info);
        }
        if (rc == 0) rc = pt_lstore_commit(x->st);
        else pt_lstore_rollback(x->st);
    }
    free(c);
    if (rc == 0) rc = pt_api_flush_outbox(x);
    return rc;
}

int pt_group_members(pt_ctx *x, const char *group, pt_user **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    pt_api_group g;
    int rc = group_by_name(x, group, &g);
    if (rc) return rc;
    pt_api_reply r;
    PT_API_CALL(rc, x, &r, groups_getMembers, memcpy(q.group_id, g.group_id, 16));
    if (rc) return rc;
    const pt_tl_groups_members *l = &r.o.u.groups_members;
    pt_user *res = calloc(l->members.n ? l->members.n : 1, sizeof *res);
    pt_api_contact *c = malloc(sizeof *c);
    if (!res || !c) rc = PT_ERR_NOMEM;
    for (uint32_t i = 0; rc == 0 && i < l->members.n; i++) {
        const uint8_t *uid = l->members.items[i].user_id;
        if (memcmp(uid, x->user_id, 16) == 0) {
            snprintf(res[*n].name, sizeof res[*n].name, "%s", x->username);
        } else if (pt_api_person(x, uid, false, c) == 0) {
            snprintf(res[*n].name, sizeof res[*n].name, "%s", c->name);
            res[*n].status = c->state == PT_CONTACT_STATE_FRIEND ? (pt_status)c->status : PT_PRESENCE_OFFLINE;
        } else {
            continue;
        }
        pt_hex_encode(res[*n].user_id, uid, 16);
        (*n)++;
    }
    pt_api_reply_free(&r);
    free(c);
    if (rc) {
        free(res);
        *n = 0;
        return rc;
    }
    *out = res;
    return 0;
}

/* ---- reading ------------------------------------------------------------------------------------------- */

int pt_sync(pt_ctx *x, int wait_ms)
{
    int rc = pt_api_ensure_online(x);
    if (rc == 0) {
        PT_API_CALL(rc, x, NULL, messages_sync, (void)q);
        if (rc == 0) pt_api_order_updates(x);
        pt_api_process_updates(x);
    }
    bool serverless = rc && x->lan; /* on the local network only: wait there */
    if (rc && !serverless) return rc;
    uint64_t end = pt_env_now_ms(x->env) + (uint64_t)(wait_ms > 0 ? wait_ms : 0);
    for (;;) {
        sqlite3_stmt *st;
        bool any = false;
        if (sqlite3_prepare_v2(pt_lstore_db(x->st), "SELECT 1 FROM messages WHERE seen = 0 LIMIT 1", -1, &st, NULL) == 0) {
            any = sqlite3_step(st) == SQLITE_ROW;
            sqlite3_finalize(st);
        }
        uint64_t now = pt_env_now_ms(x->env);
        if (any || now >= end) break;
        if ((rc = pt_poll(x, (int)(end - now > 200 ? 200 : end - now))) != 0) return rc;
    }
    if (!x->online) return serverless ? 0 : PT_ERR_OFFLINE;
    return pt_api_flush_outbox(x);
}

static int list_messages(pt_ctx *x, sqlite3_stmt *st, pt_message **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    /* one allocation: the array, then the texts */
    pt_buf all;
    pt_buf_init(&all);
    size_t count = 0;
    pt_api_msg m = {0};
    pt_buf_init(&m.text);
    int rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        if (pt_api_msg_load(x, st, &m) != 0) {
            pt_log_warn("local store: a message does not open; skipped");
            continue;
        }
        pt_message pm;
        to_public(&m, &pm);
        pm.text = NULL;
        rc = pt_buf_append(&all, &pm, sizeof pm);
        if (rc == 0) rc = pt_wr_bytes(&all, m.text.data, m.text.len + 1);
        count++;
    }
    pt_buf_free(&m.text);
    if (rc) {
        pt_buf_free(&all);
        return rc;
    }
    size_t texts = all.len - count * sizeof(pt_message);
    pt_message *res = malloc(count * sizeof *res + texts + 1);
    if (!res) {
        pt_buf_free(&all);
        return PT_ERR_NOMEM;
    }
    char *tp = (char *)(res + count);
    size_t off = 0;
    for (size_t i = 0; i < count; i++) {
        memcpy(&res[i], all.data + off, sizeof *res);
        off += sizeof *res;
        uint32_t tl = pt_get_u32le(all.data + off);
        memcpy(tp, all.data + off + 4, tl);
        res[i].text = tp;
        tp += tl;
        off += 4 + tl;
    }
    pt_buf_free(&all);
    *out = res;
    *n = count;
    return 0;
}

int pt_unseen(pt_ctx *x, pt_message **out, size_t *n)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(pt_lstore_db(x->st), "SELECT msg_id, server_id, v FROM messages WHERE seen = 0 ORDER BY seq",
                           -1, &st, NULL))
        return PT_ERR_IO;
    int rc = list_messages(x, st, out, n);
    sqlite3_finalize(st);
    return rc;
}

/* Read receipts owed (seen = 2) go out when we are online; then seen = 1. */
static int send_read_receipts(pt_ctx *x);

int pt_api_send_read_receipts(pt_ctx *x) /* not reentrant, like pt_api_flush_outbox */
{
    if (x->sending_receipts) return 0;
    x->sending_receipts = true;
    int rc = send_read_receipts(x);
    x->sending_receipts = false;
    return rc;
}

static int send_read_receipts(pt_ctx *x)
{
    if (!x->online) return 0;
    sqlite3 *db = pt_lstore_db(x->st);
    for (int guard = 0; guard < 10000; guard++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "SELECT msg_id, server_id, v FROM messages WHERE seen = 2 LIMIT 1", -1, &st, NULL))
            return PT_ERR_IO;
        pt_api_msg m = {0};
        pt_buf_init(&m.text);
        int rc = sqlite3_step(st) == SQLITE_ROW ? pt_api_msg_load(x, st, &m) : PT_ERR_NOT_FOUND;
        sqlite3_finalize(st);
        if (rc == PT_ERR_NOT_FOUND) return 0;
        if (rc == 0 && m.server_id && !m.outgoing) {
            int64_t about = m.server_id;
            PT_API_CALL(rc, x, NULL, messages_sendReceipt, memcpy(q.to, m.peer, 16); q.about_server_id = about;
                        q.status = 6);
            if (rc == PT_ERR_OFFLINE || rc == PT_ERR_TIMEOUT) {
                pt_buf_free(&m.text);
                return rc;
            }
        }
        if (sqlite3_prepare_v2(db, "UPDATE messages SET seen = 1 WHERE msg_id = ?", -1, &st, NULL) == 0) {
            sqlite3_bind_blob(st, 1, m.msg_id, 16, SQLITE_STATIC);
            rc = sqlite3_step(st) == SQLITE_DONE ? 0 : PT_ERR_IO;
            sqlite3_finalize(st);
        }
        pt_buf_free(&m.text);
        if (rc) return rc; /* a refusal is not retried; a store error stops here */
    }
    return 0;
}

int pt_mark_seen(pt_ctx *x, const pt_message *msgs, size_t n)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        uint8_t id[16];
        if (pt_hex_decode(id, 16, msgs[i].id) != 0) return pt_api_fail(x, PT_ERR_INVAL, "bad message id");
        sqlite3_stmt *st;
        /* incoming messages owe a read receipt (2) until it is sent (1) */
        if (sqlite3_prepare_v2(pt_lstore_db(x->st), "UPDATE messages SET seen = ?2 WHERE msg_id = ?1 AND seen = 0",
                               -1, &st, NULL))
            return PT_ERR_IO;
        sqlite3_bind_blob(st, 1, id, 16, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, msgs[i].outgoing || x->no_read_receipts ? 1 : 2);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : PT_ERR_IO;
        sqlite3_finalize(st);
    }
    if (rc == 0 && pt_api_send_read_receipts(x) != 0) pt_log_debug("read receipts wait for the server");
    return rc;
}

/* Our groups, by name (the group id in user_id). */
int pt_groups(pt_ctx *x, pt_user **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(pt_lstore_db(x->st), "SELECT group_id, v FROM groups", -1, &st, NULL)) return PT_ERR_IO;
    size_t cap = 0;
    int rc = 0;
    pt_api_group g;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        if (group_decode(x, st, &g) != 0) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            pt_user *p = realloc(*out, cap * sizeof *p);
            if (!p) {
                rc = PT_ERR_NOMEM;
                break;
            }
            *out = p;
        }
        pt_user *u = &(*out)[(*n)++];
        memset(u, 0, sizeof *u);
        snprintf(u->name, sizeof u->name, "%s", g.name);
        pt_hex_encode(u->user_id, g.group_id, 16);
    }
    sqlite3_finalize(st);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

/* Case folding for search: NFKC + case fold (utf8proc), so "Straße" finds "STRASSE". */
static char *fold(const char *s)
{
    utf8proc_uint8_t *out = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)s, 0, &out,
                                      UTF8PROC_NULLTERM | UTF8PROC_STABLE | UTF8PROC_COMPAT | UTF8PROC_CASEFOLD);
    if (n < 0) {
        free(out);
        return NULL;
    }
    return (char *)out;
}

static int history_filter(pt_ctx *x, const char *conversation, const char *text, size_t limit, pt_message **out,
                          size_t *n)
{
    *out = NULL;
    *n = 0;
    char *needle = NULL;
    if (text && !(needle = fold(text))) return pt_api_fail(x, PT_ERR_INVAL, "the search text is not valid UTF-8");
    sqlite3_stmt *st;
    /* names and texts are sealed: filter after opening (in memory), newest first */
    if (sqlite3_prepare_v2(pt_lstore_db(x->st), "SELECT msg_id, server_id, v FROM messages ORDER BY seq DESC", -1, &st,
                           NULL)) {
        free(needle);
        return PT_ERR_IO;
    }
    pt_message *all;
    size_t na;
    int rc = list_messages(x, st, &all, &na);
    sqlite3_finalize(st);
    if (rc) {
        free(needle);
        return rc;
    }
    bool group = conversation && conversation[0] == '#';
    size_t k = 0;
    for (size_t i = 0; i < na && k < limit; i++) {
        const pt_message *m = &all[i];
        bool hit = !conversation ||
                   (group ? strcasecmp(m->group, conversation + 1) == 0
                          : !m->group[0] && (strcasecmp(m->from, conversation) == 0 || strcasecmp(m->to, conversation) == 0));
        if (hit && needle) {
            char *hay = fold(m->text);
            hit = hay && strstr(hay, needle) != NULL;
            if (hay) {
                pt_wipe(hay, strlen(hay));
                free(hay);
            }
        }
        if (hit) all[k++] = *m;
    }
    for (size_t i = 0; i < k / 2; i++) {
        pt_message t = all[i];
        all[i] = all[k - 1 - i];
        all[k - 1 - i] = t;
    }
    if (needle) {
        pt_wipe(needle, strlen(needle));
        free(needle);
    }
    *out = all;
    *n = k;
    return 0;
}

int pt_history(pt_ctx *x, const char *conversation, size_t limit, pt_message **out, size_t *n)
{
    return history_filter(x, conversation, NULL, limit, out, n);
}

int pt_search(pt_ctx *x, const char *conversation, const char *text, size_t limit, pt_message **out, size_t *n)
{
    if (!text || !*text) return pt_api_fail(x, PT_ERR_INVAL, "search for what? the text is empty");
    return history_filter(x, conversation, text, limit, out, n);
}
