/*
 * Groups: membership on the server, content end to end.
 *
 * The creator (role 2) and admins (role 1) invite; an invited user joins; members
 * leave; the creator kicks anyone, an admin kicks plain members; the creator
 * makes and unmakes admins. The rules (group_rules) are written once and applied
 * to the group as read from either store: in local mode the store's tables, in
 * the writer's transaction; in cluster mode the bucket's record g.<group hex>,
 * whose next version only one change can write (read again and retried when
 * another node's change made it first). In cluster mode the tables are this node's
 * copy of every group, kept by a watch of the g.* keys (pt_srv_group_remote), so
 * that group sends and groups.getMembers read locally. A change is announced as updates.groupEvent, stored once and
 * queued for every member device (and for the user concerned when it is no longer
 * a member). messages.sendGroup stores the envelope once (one messages row) and
 * queues it for every member device but the sending one, like messages.send;
 * members who blocked the sender are left out.
 */
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "server/pt_cluster.h"
#include "server/pt_server_int.h"

#define ROLE_NONE (-1)
#define ROLE_MEMBER 0
#define ROLE_ADMIN 1
#define ROLE_CREATOR 2

/* updates.groupEvent events */
#define EVENT_INVITED 1
#define EVENT_JOINED 2
#define EVENT_LEFT 3
#define EVENT_KICKED 4
#define EVENT_ADMIN 5
#define EVENT_NOT_ADMIN 6

enum { OP_CREATE, OP_INVITE, OP_JOIN, OP_LEAVE, OP_KICK, OP_SET_ADMIN };

typedef struct group_op {
    pt_db_op op;
    pt_srv_reply_to to;
    int what;                       /* OP_* */
    uint8_t group[16], me[16], my_device[32], target[16];
    bool admin;                     /* OP_SET_ADMIN */
    bool tell_target;               /* the target is no member afterwards but hears of it */
    int err_code;
    const char *err_msg;
    pt_srv_item item;               /* the event */
    pt_srv_devlist devices;         /* who hears of it */
    uint8_t key[16];                /* the request's identity (pt_srv_request_key) */
    bool published;                 /* cluster: the bucket has the change (this node's tables are
                                       a copy: a store failure after it does not undo it) */
} group_op;

typedef pt_cluster_group group_rec;

static int member_at(const group_rec *g, const uint8_t user[16])
{
    for (uint32_t i = 0; i < g->nm; i++)
        if (memcmp(g->m[i].user, user, 16) == 0) return (int)i;
    return -1;
}

static int invite_at(const group_rec *g, const uint8_t user[16])
{
    for (uint32_t i = 0; i < g->ni; i++)
        if (memcmp(g->inv[i].user, user, 16) == 0) return (int)i;
    return -1;
}

static int role_of(const group_rec *g, const uint8_t user[16])
{
    int i = member_at(g, user);
    return i < 0 ? ROLE_NONE : g->m[i].role;
}

static void member_add(group_rec *g, const uint8_t user[16], int role)
{
    memcpy(g->m[g->nm].user, user, 16);
    g->m[g->nm++].role = (uint8_t)role;
}

static void member_remove(group_rec *g, int i) { g->m[i] = g->m[--g->nm]; }
static void invite_remove(group_rec *g, int i) { g->inv[i] = g->inv[--g->ni]; }

/* The rules, the same for both stores: whether o may be made on group g as read
 * (exists: whether there is such a group). For OP_INVITE the caller has looked up
 * whether the target is a user (target_known) and blocked the caller (blocked).
 * 0 with g changed as o changes it, o->item.code and o->tell_target set; or
 * PT_ERR_STATE with o's error (PT_SRV_FAIL). */
static int group_rules(group_rec *g, bool exists, group_op *o, bool target_known, bool blocked)
{
    if (o->what == OP_CREATE) {
        g->nm = g->ni = 0;
        member_add(g, o->me, ROLE_CREATOR);
        return 0;
    }
    if (!exists) PT_SRV_FAIL(PT_RPC_NOT_FOUND, "GROUP_NOT_FOUND");
    int mine = role_of(g, o->me), ti = member_at(g, o->target), ii = invite_at(g, o->target);
    int theirs = ti < 0 ? ROLE_NONE : g->m[ti].role;
    if (o->what != OP_JOIN && mine == ROLE_NONE) PT_SRV_FAIL(PT_RPC_FORBIDDEN, "NOT_A_MEMBER");
    switch (o->what) {
    case OP_INVITE:
        if (mine < ROLE_ADMIN) PT_SRV_FAIL(PT_RPC_FORBIDDEN, "NOT_ADMIN");
        if (!target_known) PT_SRV_FAIL(PT_RPC_NOT_FOUND, "USER_NOT_FOUND");
        if (theirs != ROLE_NONE) PT_SRV_FAIL(PT_RPC_CONFLICT, "ALREADY_MEMBER");
        if (blocked) PT_SRV_FAIL(PT_RPC_FORBIDDEN, "BLOCKED");
        if (g->nm + g->ni - (ii >= 0) >= PT_SERVER_GROUP_MAX_MEMBERS)
            PT_SRV_FAIL(PT_RPC_CONFLICT, "GROUP_FULL");
        if (ii < 0) {
            memcpy(g->inv[g->ni].user, o->target, 16);
            memcpy(g->inv[g->ni++].inviter, o->me, 16);
        }
        o->item.code = EVENT_INVITED;
        return 0;
    case OP_JOIN:
        if (theirs != ROLE_NONE) PT_SRV_FAIL(PT_RPC_CONFLICT, "ALREADY_MEMBER");
        if (ii < 0) PT_SRV_FAIL(PT_RPC_FORBIDDEN, "NOT_INVITED");
        invite_remove(g, ii);
        member_add(g, o->me, ROLE_MEMBER);
        o->item.code = EVENT_JOINED;
        return 0;
    case OP_LEAVE:
        member_remove(g, ti);
        o->item.code = EVENT_LEFT;
        o->tell_target = true;
        return 0;
    case OP_KICK:
        if (mine < ROLE_ADMIN) PT_SRV_FAIL(PT_RPC_FORBIDDEN, "NOT_ADMIN");
        if (memcmp(o->target, o->me, 16) == 0) PT_SRV_FAIL(PT_RPC_BAD_REQUEST, "CANNOT_KICK_SELF");
        if (theirs == ROLE_NONE) { /* revokes an invitation */
            if (ii < 0) PT_SRV_FAIL(PT_RPC_NOT_FOUND, "NOT_A_MEMBER");
            invite_remove(g, ii);
        } else {
            if (theirs >= mine) PT_SRV_FAIL(PT_RPC_FORBIDDEN, "NOT_ALLOWED");
            member_remove(g, ti);
        }
        o->item.code = EVENT_KICKED;
        o->tell_target = true;
        return 0;
    case OP_SET_ADMIN:
        if (mine != ROLE_CREATOR) PT_SRV_FAIL(PT_RPC_FORBIDDEN, "NOT_CREATOR");
        if (theirs == ROLE_NONE) PT_SRV_FAIL(PT_RPC_NOT_FOUND, "NOT_A_MEMBER");
        if (theirs == ROLE_CREATOR) PT_SRV_FAIL(PT_RPC_BAD_REQUEST, "CANNOT_CHANGE_CREATOR");
        g->m[ti].role = o->admin ? ROLE_ADMIN : ROLE_MEMBER;
        o->item.code = o->admin ? EVENT_ADMIN : EVENT_NOT_ADMIN;
        return 0;
    default:
        return PT_ERR_INVAL;
    }
}

/* Who hears of the change: the invitee alone for an invitation, otherwise every
 * member device but the acting one, and the user concerned when no longer a member. */
static int event_devices(pt_cluster *c, sqlite3 *db, const group_rec *g, group_op *o)
{
    if (o->what == OP_INVITE) return pt_srv_user_devices_any(c, db, o->target, NULL, &o->devices);
    for (uint32_t i = 0; i < g->nm; i++)
        PT_SRV_TRY(pt_srv_user_devices_any(c, db, g->m[i].user, o->my_device, &o->devices));
    if (o->tell_target) PT_SRV_TRY(pt_srv_user_devices_any(c, db, o->target, o->my_device, &o->devices));
    return 0;
}

/* ---- local mode: the group in the store's tables ---------------------------------------------- */

/* Runs sql with ?1 = group, ?2 = user and ?3 = n, as far as it has parameters; for
 * single-row changes and lookups: returns the first column of the first row, 0
 * when there is none, or a negative pt_err. */
static int exec_gu(sqlite3 *db, const char *sql, const uint8_t group[16], const uint8_t *user,
                   int64_t n)
{
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, sql, &st);
    if (rc) return rc;
    int np = sqlite3_bind_parameter_count(st);
    sqlite3_bind_blob(st, 1, group, 16, SQLITE_STATIC);
    if (np >= 2 && user) sqlite3_bind_blob(st, 2, user, 16, SQLITE_STATIC);
    if (np >= 3) sqlite3_bind_int64(st, 3, n);
    rc = pt_db_step(st);
    if (rc == 1) rc = sqlite3_column_int(st, 0);
    pt_db_release(st);
    return rc;
}

/* Reads group from the store (writer or reader connection) into *g: 1 when it
 * exists, 0 when not, or a negative pt_err. */
static int sql_group_load(sqlite3 *db, const uint8_t group[16], group_rec *g)
{
    g->nm = g->ni = 0;
    int rc = exec_gu(db, "SELECT 1 FROM groups WHERE group_id = ?1", group, NULL, 1);
    if (rc <= 0) return rc;
    sqlite3_stmt *st;
    PT_SRV_TRY(pt_db_stmt(db, "SELECT user_id, role FROM group_members WHERE group_id = ?", &st));
    sqlite3_bind_blob(st, 1, group, 16, SQLITE_STATIC);
    while ((rc = pt_db_step(st)) == 1 && g->nm < PT_SERVER_GROUP_MAX_MEMBERS) {
        if (sqlite3_column_bytes(st, 0) != 16) continue;
        member_add(g, sqlite3_column_blob(st, 0), sqlite3_column_int(st, 1));
    }
    pt_db_release(st);
    PT_SRV_TRY(rc);
    PT_SRV_TRY(pt_db_stmt(db, "SELECT user_id, inviter FROM group_invites WHERE group_id = ?", &st));
    sqlite3_bind_blob(st, 1, group, 16, SQLITE_STATIC);
    while ((rc = pt_db_step(st)) == 1 && g->nm + g->ni < PT_SERVER_GROUP_MAX_MEMBERS) {
        if (sqlite3_column_bytes(st, 0) != 16 || sqlite3_column_bytes(st, 1) != 16) continue;
        memcpy(g->inv[g->ni].user, sqlite3_column_blob(st, 0), 16);
        memcpy(g->inv[g->ni++].inviter, sqlite3_column_blob(st, 1), 16);
    }
    pt_db_release(st);
    return rc < 0 ? rc : 1;
}

static int add_invite(sqlite3 *db, const uint8_t group[16], const uint8_t user[16],
                      const uint8_t inviter[16])
{
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "INSERT INTO group_invites(group_id, user_id, inviter, created_ms) "
                               "VALUES (?,?,?,?) ON CONFLICT DO NOTHING", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, group, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, user, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, inviter, 16, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)pt_env_now_ms(pt_env_default()));
    rc = pt_db_step(st);
    pt_db_release(st);
    return rc < 0 ? rc : 0;
}

/* Writes the change group_rules made, row by row. */
static int sql_group_write(sqlite3 *db, const group_rec *g, const group_op *o)
{
    const uint8_t *gid = o->group;
    switch (o->what) {
    case OP_CREATE:
        PT_SRV_TRY(exec_gu(db, "INSERT INTO groups(group_id, creator, created_ms) VALUES (?1, ?2, ?3)", gid,
                           o->me, (int64_t)pt_env_now_ms(pt_env_default())));
        return exec_gu(db, "INSERT INTO group_members(group_id, user_id, role) VALUES (?1, ?2, ?3)", gid,
                       o->me, ROLE_CREATOR);
    case OP_INVITE:
        return add_invite(db, gid, o->target, o->me);
    case OP_JOIN:
        PT_SRV_TRY(exec_gu(db, "DELETE FROM group_invites WHERE group_id = ?1 AND user_id = ?2", gid, o->me,
                           1));
        PT_SRV_TRY(exec_gu(db, "INSERT INTO group_members(group_id, user_id, role) VALUES (?1, ?2, ?3)", gid,
                           o->me, ROLE_MEMBER));
        return 0;
    case OP_LEAVE:
    case OP_KICK:
        PT_SRV_TRY(exec_gu(db, "DELETE FROM group_invites WHERE group_id = ?1 AND user_id = ?2", gid,
                           o->target, 1));
        PT_SRV_TRY(exec_gu(db, "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2", gid,
                           o->target, 1));
        /* the last member gone: the group goes (its invitations with it) */
        if (g->nm == 0) PT_SRV_TRY(exec_gu(db, "DELETE FROM groups WHERE group_id = ?1", gid, NULL, 1));
        return 0;
    case OP_SET_ADMIN:
        return exec_gu(db, "UPDATE group_members SET role = ?3 WHERE group_id = ?1 AND user_id = ?2", gid,
                       o->target, o->admin ? ROLE_ADMIN : ROLE_MEMBER);
    default:
        return PT_ERR_INVAL;
    }
}
/* Cluster mode: replaces this node's copy of group with g (no members: no group). */
static int sql_group_replace(sqlite3 *db, const uint8_t group[16], const group_rec *g)
{
    if (g->nm == 0) return exec_gu(db, "DELETE FROM groups WHERE group_id = ?1", group, NULL, 1) < 0 ? PT_ERR_IO : 0;
    int creator = 0;
    for (uint32_t i = 0; i < g->nm; i++)
        if (g->m[i].role == ROLE_CREATOR) creator = (int)i;
    PT_SRV_TRY(exec_gu(db, "INSERT INTO groups(group_id, creator, created_ms) VALUES (?1, ?2, ?3) "
                           "ON CONFLICT DO NOTHING", group, g->m[creator].user,
                       (int64_t)pt_env_now_ms(pt_env_default())));
    PT_SRV_TRY(exec_gu(db, "DELETE FROM group_members WHERE group_id = ?1", group, NULL, 1));
    PT_SRV_TRY(exec_gu(db, "DELETE FROM group_invites WHERE group_id = ?1", group, NULL, 1));
    for (uint32_t i = 0; i < g->nm; i++)
        PT_SRV_TRY(exec_gu(db, "INSERT INTO group_members(group_id, user_id, role) VALUES (?1, ?2, ?3)", group,
                           g->m[i].user, g->m[i].role));
    for (uint32_t i = 0; i < g->ni; i++) PT_SRV_TRY(add_invite(db, group, g->inv[i].user, g->inv[i].inviter));
    return 0;
}

/* ---- cluster mode: the group in the bucket (g.<group hex>) ------------------------------------ */

/* Whether version of group is newer than this node's copy (then noted as the copy's):
 * 1, 0 or a negative pt_err (pt_srv_copy_newer). */
static int copy_newer(sqlite3 *db, const uint8_t group[16], uint32_t version)
{
    uint8_t rec[17] = {'g'};
    memcpy(rec + 1, group, 16);
    return pt_srv_copy_newer(db, rec, sizeof rec, version);
}

#define GROUP_CAS_TRIES 16

/* Reads the group, applies the rules and writes the next version unless another
 * change made it first, else again: two changes made at the same moment on two
 * nodes are applied one after the other, the second to what the first left. */
/* The request made again (after its node died before answering, or after a
 * reconnection) finds the group's latest version written by itself (change id: the
 * request key's first 7 bytes and the event code it sent; also when that version
 * emptied the group), or, for a create, the group it made (its id comes from the key
 * too): not applied twice; answered as the first time, and the event goes again
 * (under the request's key: JetStream keeps one). */
static int cluster_change(pt_cluster *c, group_rec *g, group_op *o, bool known, bool blocked, uint32_t *version)
{
    uint8_t change[8];
    for (int tries = 0; tries < GROUP_CAS_TRIES; tries++) {
        pt_cluster_vref ref;
        int64_t v = pt_cluster_group_get(c, o->group, g, &ref);
        if (v < 0) PT_SRV_FAIL(PT_RPC_UNAVAILABLE, "CLUSTER_UNAVAILABLE");
        *version = (uint32_t)ref.version;
        if (ref.version > 0 && (o->what == OP_CREATE || memcmp(ref.change, o->key, 7) == 0)) {
            pt_log_info("groups: a request made again was applied before (version %lld); not again",
                        (long long)ref.version);
            o->item.code = o->what == OP_CREATE ? 0 : ref.change[7];
            o->tell_target = o->what == OP_LEAVE || o->what == OP_KICK;
            o->published = true;
            return 0;
        }
        o->tell_target = false;
        PT_SRV_TRY(group_rules(g, v > 0, o, known, blocked));
        memcpy(change, o->key, 7);
        change[7] = (uint8_t)o->item.code;
        ref.mine = change;
        int rc = pt_cluster_group_put(c, o->group, g, &ref);
        if (rc == 0) {
            o->published = true;
            *version = (uint32_t)ref.version + 1;
            return 0;
        }
        if (rc < 0) PT_SRV_FAIL(PT_RPC_UNAVAILABLE, "CLUSTER_UNAVAILABLE");
    }
    pt_log_warn("groups: a group kept changing under %d tries; the change was refused", GROUP_CAS_TRIES);
    PT_SRV_FAIL(PT_RPC_UNAVAILABLE, "CLUSTER_BUSY");
}

/* Writer thread. In cluster mode the membership change is written to the bucket
 * first, then this node's copy: when the store then fails (a full disk), the change
 * holds, is answered as made and its event goes (group_done; published). */
static int group_apply(sqlite3 *db, void *arg)
{
    group_op *o = arg;
    pt_cluster *c = o->to.srv->cluster;
    group_rec *g = malloc(sizeof *g);
    if (!g) return PT_ERR_NOMEM;
    int rc = 0, known = 1, blocked = 0;
    if (o->what == OP_INVITE) {
        known = pt_srv_user_known(c, db, o->target);
        blocked = pt_srv_blocked(db, o->target, o->me); /* this node's contacts (cluster: see docs) */
        rc = known < 0 ? known : blocked < 0 ? blocked : 0;
    }
    if (rc == 0 && c) {
        uint32_t version = 0;
        rc = cluster_change(c, g, o, known, blocked, &version);
        /* who hears of it, before this node's copy is written (a store failure there
         * does not undo the change, and the event still goes) */
        if (rc == 0 && o->what != OP_CREATE) rc = event_devices(c, db, g, o);
        /* this node's copy, at once, unless the watch brought a newer version first */
        int newer = rc == 0 ? copy_newer(db, o->group, version) : 0;
        if (newer < 0) rc = newer;
        if (newer > 0) rc = sql_group_replace(db, o->group, g);
        free(g);
        return rc;
    } else if (rc == 0) {
        int exists = o->what == OP_CREATE ? 0 : sql_group_load(db, o->group, g);
        rc = exists < 0 ? exists : group_rules(g, exists, o, known, blocked);
        if (rc == 0) rc = sql_group_write(db, g, o);
    }
    /* local mode (cluster mode returned above; its event goes to JetStream in group_done) */
    if (rc == 0 && o->what != OP_CREATE) rc = event_devices(NULL, db, g, o);
    if (rc == 0 && o->what != OP_CREATE) rc = pt_srv_item_store(db, &o->item, &o->devices);
    free(g);
    return rc;
}

static void group_reply(group_op *o, int rc);

/* Cluster mode: JetStream answered the event's publishes. The change holds either way;
 * a device whose queue is full (or a publish that kept failing) does not get the event
 * (it reads the members with groups.getMembers), which is logged, and the change is
 * answered as made. */
static void group_queued(void *arg, int rc, int64_t id)
{
    (void)id;
    group_op *o = arg;
    if (rc) pt_log_warn("groups: event %lld was not queued for every device concerned (%s)",
                        (long long)o->item.server_id, rc == PT_ERR_TOO_BIG ? "a queue is full" : pt_strerror(rc));
    group_reply(o, 0);
}

static void group_done(void *arg, int rc)
{
    group_op *o = arg;
    pt_server *s = o->to.srv;
    if (rc != 0 && o->published) { /* cluster: made; this node's copy failed */
        pt_log_warn("groups: a change is in the cluster but this node's store failed (%s): answered as made; "
                    "this node's copy of the group is written when the watch brings that version", pt_strerror(rc));
        rc = 0;
    }
    if (rc == 0 && o->what != OP_CREATE && s->cluster && o->devices.n) {
        if (pt_srv_item_enqueue(s, &o->item, o->key, false, &o->devices, group_queued, o) == 0) return;
        group_queued(o, PT_ERR_IO, 0);
        return;
    }
    if (rc == 0 && o->what != OP_CREATE && !s->cluster) {
        pt_srv_push_item(s, &o->devices, &o->item);
        pt_srv_queue_add(s, &o->devices, 1); /* group_apply stored it for them */
    }
    group_reply(o, rc);
}

static void group_reply(group_op *o, int rc)
{
    pt_srv_sess *e = pt_srv_reply_session(&o->to);
    if (e && rc == 0 && o->what == OP_CREATE) {
        pt_buf out;
        pt_buf_init(&out);
        pt_tl_groups_created r;
        memcpy(r.group_id, o->group, 16);
        if (pt_tl_groups_created_encode(&out, &r) == 0) pt_srv_reply(e, o->to.req_msg_id, &out);
        pt_buf_free(&out);
    } else if (e && rc == 0) {
        pt_srv_reply_ok(e, o->to.req_msg_id);
    } else if (e) {
        pt_srv_reply_error(e, o->to.req_msg_id, o->err_code ? o->err_code : PT_RPC_INTERNAL,
                           o->err_msg ? o->err_msg : "STORE_FAILED");
    }
    pt_srv_devlist_free(&o->devices);
    free(o);
}

/* Cluster mode: a new group's id comes from the request's key (BLAKE2b-128 of "PT1 group"
 * || key), so the create made again through another node names the group it made. */
static void group_id_of(uint8_t id[16], const uint8_t key[16])
{
    uint8_t in[9 + 16];
    memcpy(in, "PT1 group", 9);
    memcpy(in + 9, key, 16);
    if (pt_blake2b(id, 16, in, sizeof in, NULL, 0) != 0) pt_random(id, 16);
}

static void submit(pt_conn *c, uint64_t req, int what, const uint8_t *group, const uint8_t *target,
                   bool admin)
{
    pt_srv_sess *e = c->sess;
    if (!pt_srv_require_bound(c, req)) return;
    group_op *o = calloc(1, sizeof *o);
    if (!o) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "OUT_OF_MEMORY");
        return;
    }
    pt_srv_reply_to_init(&o->to, c, req);
    o->what = what;
    pt_srv_request_key(o->key, &o->to);
    if (group) memcpy(o->group, group, 16);
    else if (c->srv->cluster) group_id_of(o->group, o->key); /* made again: the same group */
    else pt_random(o->group, 16);
    memcpy(o->me, e->dev->user_id, 16);
    memcpy(o->my_device, e->device_pk, 32);
    memcpy(o->target, target ? target : o->me, 16);
    o->admin = admin;
    if (pt_srv_take_server_id(c->srv, &o->item.server_id) != 0) {
        pt_srv_reply_error(e, req, PT_RPC_UNAVAILABLE,
                           c->srv->cluster ? "CLUSTER_UNAVAILABLE" : "STORE_BUSY");
        free(o);
        return;
    }
    o->item = (pt_srv_item){.server_id = o->item.server_id, .kind = PT_ITEM_GROUP_EVENT,
                            .date_ms = pt_env_now_ms(pt_env_default())};
    memcpy(o->item.group_id, o->group, 16);
    memcpy(o->item.from, o->me, 16);
    memcpy(o->item.from_device, o->my_device, 32);
    memcpy(o->item.peer, o->target, 16);
    o->op = (pt_db_op){.apply = group_apply, .done = group_done, .arg = o};
    pt_db_submit(c->srv->db, &o->op);
}

/* ---- groups.getMembers ---------------------------------------------------------------------------- */

/* Reads group on the loop from the store's reader connection (in cluster mode this
 * node's copy, kept by the watch of the bucket's g.* keys). 1, 0 (no such group),
 * or a negative pt_err. */
static int load_group(pt_server *s, const uint8_t group[16], group_rec *g)
{
    return sql_group_load(pt_db_reader(s->db), group, g);
}

/* Reads group into a new *g and answers 404/403/500 unless c's user is a member:
 * the group, or NULL when answered. */
static group_rec *member_group(pt_conn *c, uint64_t req, const uint8_t group[16])
{
    group_rec *g = malloc(sizeof *g);
    int rc = g ? load_group(c->srv, group, g) : PT_ERR_NOMEM;
    if (rc == 1 && role_of(g, c->sess->dev->user_id) != ROLE_NONE) return g;
    if (rc < 0) pt_srv_reply_error(c->sess, req, PT_RPC_INTERNAL, "INTERNAL");
    else if (rc == 0) pt_srv_reply_error(c->sess, req, PT_RPC_NOT_FOUND, "GROUP_NOT_FOUND");
    else pt_srv_reply_error(c->sess, req, PT_RPC_FORBIDDEN, "NOT_A_MEMBER");
    free(g);
    return NULL;
}

static int by_user(const void *a, const void *b)
{
    return memcmp(((const pt_tl_groups_member *)a)->user_id, ((const pt_tl_groups_member *)b)->user_id, 16);
}

static void rpc_members(pt_conn *c, uint64_t req, const pt_tl_groups_getMembers *q)
{
    if (!pt_srv_require_bound(c, req)) return;
    group_rec *g = member_group(c, req, q->group_id);
    if (!g) return;
    pt_tl_groups_member *items = calloc(g->nm, sizeof *items);
    pt_buf out;
    pt_buf_init(&out);
    for (uint32_t i = 0; items && i < g->nm; i++) {
        memcpy(items[i].user_id, g->m[i].user, 16);
        items[i].role = g->m[i].role;
    }
    if (items) qsort(items, g->nm, sizeof *items, by_user);
    pt_tl_groups_members r = {.members = {.n = g->nm, .items = items}};
    memcpy(r.group_id, q->group_id, 16);
    if (items && pt_tl_groups_members_encode(&out, &r) == 0) pt_srv_reply(c->sess, req, &out);
    else pt_srv_reply_error(c->sess, req, PT_RPC_INTERNAL, "INTERNAL");
    pt_buf_free(&out);
    free(items);
    free(g);
}

/* ---- messages.sendGroup ----------------------------------------------------------------------------- */

static void rpc_send_group(pt_conn *c, uint64_t req, const pt_tl_messages_sendGroup *q)
{
    pt_srv_sess *e = c->sess;
    if (!pt_srv_require_bound(c, req)) return;
    if (q->envelope.len > PT_SERVER_ENVELOPE_MAX) {
        pt_srv_reply_error(e, req, PT_RPC_TOO_LARGE, "ENVELOPE_TOO_LARGE");
        return;
    }
    group_rec *g = member_group(c, req, q->group_id);
    if (!g) return;
    /* every member device but this one, leaving out members who blocked the sender */
    pt_srv_devlist devices = {0};
    int rc = 0;
    for (uint32_t i = 0; i < g->nm && rc == 0; i++)
        if (!pt_srv_dir_blocked(c->srv, g->m[i].user, e->dev->user_id))
            rc = pt_srv_dir_user_devices(c->srv, g->m[i].user, e->device_pk, &devices);
    free(g);
    if (rc < 0) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
        pt_srv_devlist_free(&devices);
        return;
    }
    pt_srv_item it = {.kind = PT_ITEM_GROUP_MESSAGE, .payload = q->envelope};
    memcpy(it.group_id, q->group_id, 16);
    pt_srv_forward(c, req, &it, &devices);
}

/* ---- cluster mode: groups changed on other nodes ---------------------------------------------- */

typedef struct group_copy {
    pt_db_op op;
    uint8_t group[16];
    uint32_t version;
    group_rec g;
} group_copy;

static int copy_apply(sqlite3 *db, void *arg)
{
    group_copy *r = arg;
    int newer = copy_newer(db, r->group, r->version);
    return newer <= 0 ? newer : sql_group_replace(db, r->group, &r->g);
}

static void copy_done(void *arg, int rc)
{
    if (rc) pt_log_warn("groups: a group changed on another node was not copied here (%s)", pt_strerror(rc));
    free(arg);
}

void pt_srv_group_remote(pt_server *s, const uint8_t group[16], const uint8_t *rec, size_t len)
{
    if (!s->db) return;
    group_copy *r = malloc(sizeof *r);
    if (!r) {
        pt_log_error("groups: out of memory; a group changed on another node is not copied here");
        return;
    }
    if (pt_cluster_group_decode(&r->g, rec, len) != 0) {
        pt_log_error("groups: a group record in the cluster does not parse; not copied");
        free(r);
        return;
    }
    memcpy(r->group, group, 16);
    r->version = pt_get_u32le(rec + 1); /* the head: decoded above */
    r->op = (pt_db_op){.apply = copy_apply, .done = copy_done, .arg = r, .rerunnable = true};
    pt_db_submit(s->db, &r->op);
}

bool pt_srv_groups_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded)
{
    switch (ctor) {
    case PT_TL_GROUPS_CREATE_ID: submit(c, msg_id, OP_CREATE, NULL, NULL, false); return true;
    case PT_TL_GROUPS_INVITE_ID: {
        const pt_tl_groups_invite *q = decoded;
        submit(c, msg_id, OP_INVITE, q->group_id, q->user_id, false);
        return true;
    }
    case PT_TL_GROUPS_JOIN_ID:
        submit(c, msg_id, OP_JOIN, ((const pt_tl_groups_join *)decoded)->group_id, NULL, false);
        return true;
    case PT_TL_GROUPS_LEAVE_ID:
        submit(c, msg_id, OP_LEAVE, ((const pt_tl_groups_leave *)decoded)->group_id, NULL, false);
        return true;
    case PT_TL_GROUPS_KICK_ID: {
        const pt_tl_groups_kick *q = decoded;
        submit(c, msg_id, OP_KICK, q->group_id, q->user_id, false);
        return true;
    }
    case PT_TL_GROUPS_SETADMIN_ID: {
        const pt_tl_groups_setAdmin *q = decoded;
        submit(c, msg_id, OP_SET_ADMIN, q->group_id, q->user_id, q->admin);
        return true;
    }
    case PT_TL_GROUPS_GETMEMBERS_ID: rpc_members(c, msg_id, decoded); return true;
    case PT_TL_MESSAGES_SENDGROUP_ID: rpc_send_group(c, msg_id, decoded); return true;
    default: return false;
    }
}
