/*
 * Groups: membership on the server, content end to end.
 *
 * The creator (role 2) and admins (role 1) invite; an invited user joins; members
 * leave; the creator kicks anyone, an admin kicks plain members; the creator
 * makes and unmakes admins. Every check and change runs in the writer's
 * transaction. A change is announced as updates.groupEvent, stored once and
 * queued for every member device (and for the user concerned when it is no longer
 * a member). messages.sendGroup stores the envelope once (one messages row) and
 * queues it for every member device but the sending one, like messages.send;
 * members who blocked the sender are left out.
 */
#include <stdlib.h>

#include "crypto/pt_crypto.h"
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
    int err_code;
    const char *err_msg;
    pt_srv_item item;               /* the event */
    pt_srv_devlist devices;         /* who hears of it */
} group_op;

/* *role = the role of user in group, or ROLE_NONE; returns 0 or a negative pt_err. */
static int get_role(sqlite3 *db, const uint8_t group[16], const uint8_t user[16], int *role)
{
    sqlite3_stmt *st;
    *role = ROLE_NONE;
    int rc = pt_db_stmt(db, "SELECT role FROM group_members WHERE group_id = ? AND user_id = ?", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, group, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, user, 16, SQLITE_STATIC);
    rc = pt_db_step(st);
    if (rc == 1) *role = sqlite3_column_int(st, 0);
    pt_db_release(st);
    return rc < 0 ? rc : 0;
}

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

static int has_invite(sqlite3 *db, const uint8_t group[16], const uint8_t user[16])
{
    return exec_gu(db, "SELECT 1 FROM group_invites WHERE group_id = ?1 AND user_id = ?2",
                   group, user, 1);
}

/* Appends the devices of every member of group, except device skip. */
static int member_devices(sqlite3 *db, const uint8_t group[16], const uint8_t *skip,
                          pt_srv_devlist *out)
{
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "SELECT user_id FROM group_members WHERE group_id = ?", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, group, 16, SQLITE_STATIC);
    while ((rc = pt_db_step(st)) == 1) {
        if (sqlite3_column_bytes(st, 0) != 16) continue;
        uint8_t user[16];
        memcpy(user, sqlite3_column_blob(st, 0), 16);
        if ((rc = pt_srv_user_devices(db, user, skip, out)) != 0) break;
    }
    pt_db_release(st);
    return rc < 0 ? rc : 0;
}

static int create_apply(sqlite3 *db, group_op *o)
{
    int64_t now = (int64_t)pt_env_now_ms(pt_env_default());
    PT_SRV_TRY(exec_gu(db, "INSERT INTO groups(group_id, creator, created_ms) VALUES (?1, ?2, ?3)", o->group,
                o->me, now));
    PT_SRV_TRY(exec_gu(db, "INSERT INTO group_members(group_id, user_id, role) VALUES (?1, ?2, ?3)", o->group,
                o->me, ROLE_CREATOR));
    return 0;
}

static int group_apply(sqlite3 *db, void *arg)
{
    group_op *o = arg;
    if (o->what == OP_CREATE) return create_apply(db, o);
    int rc = exec_gu(db, "SELECT 1 FROM groups WHERE group_id = ?1", o->group, NULL, 1);
    PT_SRV_TRY(rc);
    if (rc == 0) PT_SRV_FAIL(PT_RPC_NOT_FOUND, "GROUP_NOT_FOUND");
    int mine, theirs;
    PT_SRV_TRY(get_role(db, o->group, o->me, &mine));
    if (o->what != OP_JOIN && mine == ROLE_NONE) PT_SRV_FAIL(PT_RPC_FORBIDDEN, "NOT_A_MEMBER");
    PT_SRV_TRY(get_role(db, o->group, o->target, &theirs));
    bool tell_target = false; /* the target is no member afterwards but must hear of it */
    switch (o->what) {
    case OP_INVITE:
        if (mine < ROLE_ADMIN) PT_SRV_FAIL(PT_RPC_FORBIDDEN, "NOT_ADMIN");
        PT_SRV_TRY(rc = pt_srv_user_exists(db, o->target));
        if (rc == 0) PT_SRV_FAIL(PT_RPC_NOT_FOUND, "USER_NOT_FOUND");
        if (theirs != ROLE_NONE) PT_SRV_FAIL(PT_RPC_CONFLICT, "ALREADY_MEMBER");
        PT_SRV_TRY(rc = pt_srv_blocked(db, o->target, o->me));
        if (rc) PT_SRV_FAIL(PT_RPC_FORBIDDEN, "BLOCKED");
        PT_SRV_TRY(rc = exec_gu(db, "SELECT (SELECT count(*) FROM group_members WHERE group_id = ?1) + "
                             "(SELECT count(*) FROM group_invites WHERE group_id = ?1 AND "
                             "user_id <> ?2)", o->group, o->target, 0));
        if (rc >= PT_SERVER_GROUP_MAX_MEMBERS) PT_SRV_FAIL(PT_RPC_CONFLICT, "GROUP_FULL");
        PT_SRV_TRY(add_invite(db, o->group, o->target, o->me));
        o->item.code = EVENT_INVITED;
        /* only the invitee hears of it */
        PT_SRV_TRY(pt_srv_user_devices(db, o->target, NULL, &o->devices));
        return pt_srv_item_store(db, &o->item, &o->devices);
    case OP_JOIN:
        if (mine != ROLE_NONE) PT_SRV_FAIL(PT_RPC_CONFLICT, "ALREADY_MEMBER");
        PT_SRV_TRY(rc = has_invite(db, o->group, o->me));
        if (rc == 0) PT_SRV_FAIL(PT_RPC_FORBIDDEN, "NOT_INVITED");
        PT_SRV_TRY(exec_gu(db, "DELETE FROM group_invites WHERE group_id = ?1 AND user_id = ?2",
                    o->group, o->me, 1));
        PT_SRV_TRY(exec_gu(db, "INSERT INTO group_members(group_id, user_id, role) VALUES (?1, ?2, ?3)",
                    o->group, o->me, ROLE_MEMBER));
        o->item.code = EVENT_JOINED;
        break;
    case OP_LEAVE:
        PT_SRV_TRY(exec_gu(db, "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2",
                    o->group, o->me, 1));
        o->item.code = EVENT_LEFT;
        tell_target = true;
        break;
    case OP_KICK:
        if (mine < ROLE_ADMIN) PT_SRV_FAIL(PT_RPC_FORBIDDEN, "NOT_ADMIN");
        if (memcmp(o->target, o->me, 16) == 0) PT_SRV_FAIL(PT_RPC_BAD_REQUEST, "CANNOT_KICK_SELF");
        if (theirs == ROLE_NONE) { /* revokes an invitation */
            PT_SRV_TRY(rc = has_invite(db, o->group, o->target));
            if (rc == 0) PT_SRV_FAIL(PT_RPC_NOT_FOUND, "NOT_A_MEMBER");
            PT_SRV_TRY(exec_gu(db, "DELETE FROM group_invites WHERE group_id = ?1 AND user_id = ?2",
                        o->group, o->target, 1));
        } else {
            if (theirs >= mine) PT_SRV_FAIL(PT_RPC_FORBIDDEN, "NOT_ALLOWED");
            PT_SRV_TRY(exec_gu(db, "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2",
                        o->group, o->target, 1));
        }
        o->item.code = EVENT_KICKED;
        tell_target = true;
        break;
    case OP_SET_ADMIN:
        if (mine != ROLE_CREATOR) PT_SRV_FAIL(PT_RPC_FORBIDDEN, "NOT_CREATOR");
        if (theirs == ROLE_NONE) PT_SRV_FAIL(PT_RPC_NOT_FOUND, "NOT_A_MEMBER");
        if (theirs == ROLE_CREATOR) PT_SRV_FAIL(PT_RPC_BAD_REQUEST, "CANNOT_CHANGE_CREATOR");
        PT_SRV_TRY(exec_gu(db, "UPDATE group_members SET role = ?3 WHERE group_id = ?1 AND user_id = ?2",
                    o->group, o->target, o->admin ? ROLE_ADMIN : ROLE_MEMBER));
        o->item.code = o->admin ? EVENT_ADMIN : EVENT_NOT_ADMIN;
        break;
    default:
        return PT_ERR_INVAL;
    }
    PT_SRV_TRY(member_devices(db, o->group, o->my_device, &o->devices));
    if (tell_target) PT_SRV_TRY(pt_srv_user_devices(db, o->target, o->my_device, &o->devices));
    /* the last member gone: the group goes (its invitations with it) */
    PT_SRV_TRY(rc = exec_gu(db, "SELECT count(*) FROM group_members WHERE group_id = ?1", o->group, NULL,
                     0));
    if (rc == 0) PT_SRV_TRY(exec_gu(db, "DELETE FROM groups WHERE group_id = ?1", o->group, NULL, 1));
    return pt_srv_item_store(db, &o->item, &o->devices);
}

static void group_done(void *arg, int rc)
{
    group_op *o = arg;
    if (rc == 0 && o->what != OP_CREATE) {
        pt_srv_push_item(o->to.srv, &o->devices, &o->item);
        pt_srv_queue_add(o->to.srv, &o->devices, 1); /* group_apply stored it for them */
    }
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
    if (group) memcpy(o->group, group, 16);
    else pt_random(o->group, 16);
    memcpy(o->me, e->dev->user_id, 16);
    memcpy(o->my_device, e->device_pk, 32);
    memcpy(o->target, target ? target : o->me, 16);
    o->admin = admin;
    o->item = (pt_srv_item){.server_id = c->srv->next_server_id++, .kind = PT_ITEM_GROUP_EVENT,
                            .date_ms = pt_env_now_ms(pt_env_default())};
    memcpy(o->item.group_id, o->group, 16);
    memcpy(o->item.from, o->me, 16);
    memcpy(o->item.from_device, o->my_device, 32);
    memcpy(o->item.peer, o->target, 16);
    o->op = (pt_db_op){.apply = group_apply, .done = group_done, .arg = o};
    pt_db_submit(c->srv->db, &o->op);
}

/* ---- groups.getMembers ---------------------------------------------------------------------------- */

/* Answers 404/403 and returns false unless c's user is a member of group (reader). */
static bool require_member(pt_conn *c, uint64_t req, const uint8_t group[16])
{
    sqlite3 *r = pt_db_reader(c->srv->db);
    int role, rc = get_role(r, group, c->sess->dev->user_id, &role);
    if (rc == 0 && role != ROLE_NONE) return true;
    int exists = rc < 0 ? rc : exec_gu(r, "SELECT 1 FROM groups WHERE group_id = ?1", group, NULL, 1);
    if (exists < 0) pt_srv_reply_error(c->sess, req, PT_RPC_INTERNAL, "INTERNAL");
    else if (exists == 0) pt_srv_reply_error(c->sess, req, PT_RPC_NOT_FOUND, "GROUP_NOT_FOUND");
    else pt_srv_reply_error(c->sess, req, PT_RPC_FORBIDDEN, "NOT_A_MEMBER");
    return false;
}

static void rpc_members(pt_conn *c, uint64_t req, const pt_tl_groups_getMembers *q)
{
    if (!pt_srv_require_bound(c, req) || !require_member(c, req, q->group_id)) return;
    pt_tl_groups_member *items = calloc(PT_SERVER_GROUP_MAX_MEMBERS, sizeof *items);
    sqlite3_stmt *st = NULL;
    if (!items || pt_db_stmt(pt_db_reader(c->srv->db),
                                "SELECT user_id, role FROM group_members WHERE group_id = ? "
                                "ORDER BY user_id", &st)) {
        pt_srv_reply_error(c->sess, req, PT_RPC_INTERNAL, "INTERNAL");
        goto out;
    }
    sqlite3_bind_blob(st, 1, q->group_id, 16, SQLITE_STATIC);
    uint32_t n = 0;
    while (n < PT_SERVER_GROUP_MAX_MEMBERS && pt_db_step(st) == 1) {
        if (sqlite3_column_bytes(st, 0) != 16) continue;
        memcpy(items[n].user_id, sqlite3_column_blob(st, 0), 16);
        items[n++].role = sqlite3_column_int(st, 1);
    }
    pt_tl_groups_members r = {.members = {.n = n, .items = items}};
    memcpy(r.group_id, q->group_id, 16);
    pt_buf out;
    pt_buf_init(&out);
    if (pt_tl_groups_members_encode(&out, &r) == 0) pt_srv_reply(c->sess, req, &out);
    else pt_srv_reply_error(c->sess, req, PT_RPC_INTERNAL, "INTERNAL");
    pt_buf_free(&out);
out:
    pt_db_release(st);
    free(items);
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
    if (!require_member(c, req, q->group_id)) return;
    /* every member device but this one, leaving out members who blocked the sender */
    sqlite3 *r = pt_db_reader(c->srv->db);
    sqlite3_stmt *st;
    pt_srv_devlist devices = {0};
    int rc = pt_db_stmt(r, "SELECT m.user_id FROM group_members m WHERE m.group_id = ?1 AND NOT "
                              "EXISTS (SELECT 1 FROM contacts k WHERE k.user_id = m.user_id AND "
                              "k.peer_id = ?2 AND k.state = ?3)", &st);
    if (rc == 0) {
        sqlite3_bind_blob(st, 1, q->group_id, 16, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, e->dev->user_id, 16, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, PT_CONTACT_BLOCKED);
        while ((rc = pt_db_step(st)) == 1) {
            uint8_t user[16];
            if (sqlite3_column_bytes(st, 0) != 16) continue;
            memcpy(user, sqlite3_column_blob(st, 0), 16);
            if ((rc = pt_srv_user_devices(r, user, e->device_pk, &devices)) != 0) break;
        }
        pt_db_release(st);
    }
    if (rc < 0) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
        pt_srv_devlist_free(&devices);
        return;
    }
    pt_srv_item it = {.kind = PT_ITEM_GROUP_MESSAGE, .payload = q->envelope};
    memcpy(it.group_id, q->group_id, 16);
    pt_srv_forward(c, req, &it, &devices);
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
