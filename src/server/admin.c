/*
 * Operators' user administration (packtrackctl user ban|unban|delete).
 *
 * Ban: a banned_users row and an entry in a sorted in-memory set; the user's
 * connections are closed at once, and every later call from a device bound to
 * the user is answered 403 USER_BANNED (rpc.c) until an unban. Sessions stay,
 * so an unbanned device resumes where it was.
 *
 * Delete: one transaction removes the user's devices (and prekeys), the queue
 * rows waiting for them (messages nobody else waits for go too), contacts in
 * both directions, group memberships and invitations, pending device links and
 * the users row. The username is retired, not freed: a retired_usernames row
 * keeps the name (and its confusable skeleton) from being bound again, so nobody
 * can take over a deleted user's name and be mistaken for them by their former
 * contacts. A ban, if any, is kept: the same identity key cannot come back under
 * a new name either; unban it first if that is wanted. After the commit the
 * user's connections and sessions are dropped and the in-memory directory,
 * queue counts and blocks forget the user.
 */
#include <stdlib.h>

#include "server/pt_server_int.h"
#include "server/pt_username.h"

/* ---- the in-memory ban set ------------------------------------------------------------------ */

static int id_cmp(const void *a, const void *b) { return memcmp(a, b, 16); }

bool pt_srv_user_banned(const pt_server *s, const uint8_t user[16])
{
    return s->nbanned && bsearch(user, s->banned, s->nbanned, 16, id_cmp) != NULL;
}

static int ban_add(pt_server *s, const uint8_t user[16])
{
    if (pt_srv_user_banned(s, user)) return 0;
    if (s->nbanned == s->banned_cap) {
        size_t cap = s->banned_cap ? s->banned_cap * 2 : 16;
        void *p = realloc(s->banned, cap * 16);
        if (!p) return PT_ERR_NOMEM;
        s->banned = p;
        s->banned_cap = cap;
    }
    size_t i = 0;
    while (i < s->nbanned && memcmp(s->banned[i], user, 16) < 0) i++;
    memmove(s->banned[i + 1], s->banned[i], (s->nbanned - i) * 16);
    memcpy(s->banned[i], user, 16);
    s->nbanned++;
    return 0;
}

static void ban_remove(pt_server *s, const uint8_t user[16])
{
    uint8_t(*e)[16] = bsearch(user, s->banned, s->nbanned, 16, id_cmp);
    if (!e) return;
    size_t i = (size_t)(e - s->banned);
    memmove(s->banned[i], s->banned[i + 1], (s->nbanned - i - 1) * 16);
    s->nbanned--;
}

int pt_srv_admin_init(pt_server *s)
{
    sqlite3_stmt *st;
    int rc = pt_db_prepare(pt_db_reader(s->db), "SELECT user_id FROM banned_users", &st);
    if (rc) return rc;
    while ((rc = pt_db_step(st)) == 1)
        if (sqlite3_column_bytes(st, 0) == 16 && (rc = ban_add(s, sqlite3_column_blob(st, 0))) != 0) break;
    sqlite3_finalize(st);
    return rc < 0 ? rc : 0;
}

void pt_srv_admin_free(pt_server *s)
{
    free(s->banned);
    s->banned = NULL;
    s->nbanned = s->banned_cap = 0;
}

/* ---- operations ----------------------------------------------------------------------------- */

typedef struct admin_op {
    pt_db_op op;
    pt_server *srv;
    pt_srv_admin_action action;
    pt_srv_admin_result r;
    pt_srv_admin_cb cb;
    void *ud;
    int64_t now_ms;
    pt_srv_devlist devices;         /* delete: the user's devices, read in the transaction */
    uint8_t (*blocks)[32];          /* delete: (by, whom) pairs of blocks involving the user */
    size_t nblocks;
} admin_op;

static int step_user(sqlite3 *db, const char *sql, const admin_op *o)
{
    sqlite3_stmt *st;
    int rc = pt_db_prepare(db, sql, &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, o->r.user_id, 16, SQLITE_STATIC);
    if (sqlite3_bind_parameter_count(st) >= 2) sqlite3_bind_int64(st, 2, o->now_ms);
    rc = pt_db_step(st);
    sqlite3_finalize(st);
    return rc < 0 ? rc : 0;
}

static int admin_apply(sqlite3 *db, void *arg)
{
    admin_op *o = arg;
    if (o->action == PT_ADMIN_BAN)
        return step_user(db, "INSERT OR IGNORE INTO banned_users(user_id, banned_ms) VALUES (?1, ?2)", o);
    if (o->action == PT_ADMIN_UNBAN) return step_user(db, "DELETE FROM banned_users WHERE user_id = ?1", o);
    /* delete: what the loop must forget afterwards, then the rows */
    sqlite3_stmt *st;
    int rc = pt_db_prepare(db, "SELECT device_key FROM devices WHERE user_id = ?", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, o->r.user_id, 16, SQLITE_STATIC);
    while ((rc = pt_db_step(st)) == 1)
        if (sqlite3_column_bytes(st, 0) == 32 && (rc = pt_srv_devlist_add(&o->devices, sqlite3_column_blob(st, 0))))
            break;
    sqlite3_finalize(st);
    if (rc < 0) return rc;
    if ((rc = pt_db_prepare(db, "SELECT user_id, peer_id FROM contacts WHERE state = ?2 AND "
                                "(user_id = ?1 OR peer_id = ?1)", &st)))
        return rc;
    sqlite3_bind_blob(st, 1, o->r.user_id, 16, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, PT_CONTACT_BLOCKED);
    while ((rc = pt_db_step(st)) == 1) {
        if (sqlite3_column_bytes(st, 0) != 16 || sqlite3_column_bytes(st, 1) != 16) continue;
        void *p = realloc(o->blocks, (o->nblocks + 1) * sizeof *o->blocks);
        if (!p) {
            rc = PT_ERR_NOMEM;
            break;
        }
        o->blocks = p;
        memcpy(o->blocks[o->nblocks], sqlite3_column_blob(st, 0), 16);
        memcpy(o->blocks[o->nblocks] + 16, sqlite3_column_blob(st, 1), 16);
        o->nblocks++;
    }
    sqlite3_finalize(st);
    if (rc < 0) return rc;
    if ((rc = pt_db_prepare(db, "SELECT count(*) FROM queue WHERE device_key IN "
                                "(SELECT device_key FROM devices WHERE user_id = ?)", &st)))
        return rc;
    sqlite3_bind_blob(st, 1, o->r.user_id, 16, SQLITE_STATIC);
    if ((rc = pt_db_step(st)) == 1) o->r.queued = (size_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc < 0) return rc;
    static const char *const steps[] = {
        "UPDATE messages SET refs = refs - (SELECT count(*) FROM queue q JOIN devices d "
        "ON q.device_key = d.device_key WHERE d.user_id = ?1 AND q.server_id = messages.server_id) "
        "WHERE server_id IN (SELECT q.server_id FROM queue q JOIN devices d "
        "ON q.device_key = d.device_key WHERE d.user_id = ?1)",
        "DELETE FROM queue WHERE device_key IN (SELECT device_key FROM devices WHERE user_id = ?1)",
        "DELETE FROM messages WHERE refs <= 0",
        "DELETE FROM prekeys WHERE device_key IN (SELECT device_key FROM devices WHERE user_id = ?1)",
        "DELETE FROM prekey_floor WHERE device_key IN (SELECT device_key FROM devices WHERE user_id = ?1)",
        "DELETE FROM devices WHERE user_id = ?1",
        "DELETE FROM contacts WHERE user_id = ?1 OR peer_id = ?1",
        "DELETE FROM group_members WHERE user_id = ?1",
        "DELETE FROM group_invites WHERE user_id = ?1 OR inviter = ?1",
        "DELETE FROM device_links WHERE user_id = ?1",
        ("INSERT OR REPLACE INTO retired_usernames(username_key, username_skeleton, deleted_ms) "
         "SELECT username_key, username_skeleton, ?2 FROM users WHERE user_id = ?1 AND username_key IS NOT NULL"),
        "DELETE FROM users WHERE user_id = ?1",
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(steps); i++)
        if ((rc = step_user(db, steps[i], o)) != 0) return rc;
    return 0;
}

static void admin_done(void *arg, int rc)
{
    admin_op *o = arg;
    pt_server *s = o->srv;
    char hex[33];
    pt_hex_encode(hex, o->r.user_id, 16);
    o->r.rc = rc;
    if (rc != 0) {
        o->r.error = "the store refused the change (see the server log)";
        pt_log_error("admin: %s of user %s failed: %s", o->action == PT_ADMIN_BAN ? "ban"
                     : o->action == PT_ADMIN_UNBAN ? "unban" : "delete", hex, pt_strerror(rc));
    } else if (o->action == PT_ADMIN_UNBAN) {
        ban_remove(s, o->r.user_id);
        pt_log_info("admin: user %s (\"%s\") unbanned", hex, o->r.name);
    } else {
        if (o->action == PT_ADMIN_BAN && ban_add(s, o->r.user_id) != 0) {
            o->r.rc = PT_ERR_NOMEM;
            o->r.error = "out of memory";
        }
        /* disconnect the user's devices (closing updates presence) */
        for (pt_conn *c = s->conns, *next; c; c = next) {
            next = c->next;
            bool mine = false;
            if (o->action == PT_ADMIN_BAN)
                mine = c->dev && c->dev->bound && memcmp(c->dev->user_id, o->r.user_id, 16) == 0;
            for (size_t i = 0; !mine && c->dev && i < o->devices.n; i++)
                mine = memcmp(c->dev->pk, o->devices.pk[i], 32) == 0;
            if (!mine || c->closing) continue;
            pt_conn_close(c, o->action == PT_ADMIN_BAN ? "user banned" : "user deleted");
            o->r.conns_closed++;
        }
        if (o->action == PT_ADMIN_DELETE) {
            for (size_t i = 0; i < o->devices.n; i++) {
                pt_srv_device *d = pt_srv_device_get(s, o->devices.pk[i]);
                if (d) d->bound = false;
                for (pt_srv_sess *e = s->sess_all, *next; e; e = next) {
                    next = e->all_next;
                    if (memcmp(e->device_pk, o->devices.pk[i], 32) == 0) pt_srv_sess_destroy(s, e);
                }
                pt_srv_queue_sub(s, o->devices.pk[i], pt_srv_queue_len(s, o->devices.pk[i]));
            }
            for (size_t i = 0; i < o->nblocks; i++)
                (void)pt_srv_dir_set_blocked(s, o->blocks[i], o->blocks[i] + 16, false);
            pt_srv_dir_forget_user(s, o->r.user_id);
            o->r.devices = o->devices.n;
            pt_log_info("admin: user %s (\"%s\") deleted: %zu devices, %zu queued items, name retired",
                        hex, o->r.name, o->devices.n, o->r.queued);
        } else {
            pt_log_info("admin: user %s (\"%s\") banned; %zu connections closed", hex, o->r.name,
                        o->r.conns_closed);
        }
    }
    o->cb(o->ud, &o->r);
    pt_srv_devlist_free(&o->devices);
    free(o->blocks);
    free(o);
}

void pt_srv_admin_user(pt_server *s, pt_srv_admin_action action, const char *name, pt_srv_admin_cb cb,
                       void *ud)
{
    pt_srv_admin_result r = {.rc = PT_ERR_NOT_FOUND};
    char display[PT_USERNAME_DISPLAY_SIZE], key[PT_USERNAME_KEY_SIZE], skel[PT_USERNAME_SKELETON_SIZE];
    sqlite3_stmt *st = NULL;
    if (!s->db) {
        r.rc = PT_ERR_STATE;
        r.error = "the server is shutting down";
        cb(ud, &r);
        return;
    }
    if (pt_username_check(name, strlen(name), display, key, skel, NULL) != 0) {
        r.error = "no such user (not a valid username)";
        cb(ud, &r);
        return;
    }
    int rc = pt_db_prepare(pt_db_reader(s->db), "SELECT user_id, username FROM users WHERE username_key = ?", &st);
    if (rc == 0) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        rc = pt_db_step(st);
        if (rc == 1 && sqlite3_column_bytes(st, 0) == 16) {
            memcpy(r.user_id, sqlite3_column_blob(st, 0), 16);
            snprintf(r.name, sizeof r.name, "%s", (const char *)sqlite3_column_text(st, 1));
        }
    }
    sqlite3_finalize(st);
    if (rc != 1) {
        r.rc = rc < 0 ? rc : PT_ERR_NOT_FOUND;
        r.error = rc < 0 ? "store error (see the server log)" : "no such user";
        cb(ud, &r);
        return;
    }
    admin_op *o = calloc(1, sizeof *o);
    if (!o) {
        r.rc = PT_ERR_NOMEM;
        r.error = "out of memory";
        cb(ud, &r);
        return;
    }
    o->srv = s;
    o->action = action;
    o->r = r;
    o->cb = cb;
    o->ud = ud;
    o->now_ms = (int64_t)pt_env_now_ms(pt_env_default());
    o->op = (pt_db_op){.apply = admin_apply, .done = admin_done, .arg = o};
    pt_db_submit(s->db, &o->op);
}
