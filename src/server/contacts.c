/*
 * Contacts: friend requests relayed between users, and blocks.
 *
 * Each relation is two contacts rows, one per side (request sent / received,
 * friends), or one row for a block (the blocker's; the blocked side's row is
 * deleted). Every check and change runs in the writer's transaction, so two
 * racing calls see each other's result. What the other side must hear (a request
 * with the requester's prekey bundle, an acceptance with the accepter's, a
 * denial, a removal) is stored and queued for each of its devices like a message:
 * a user who is offline gets it from messages.sync. A block is never announced.
 *
 * The rules (contact_rules) are written once. In cluster mode the relation is the
 * bucket's versioned record k.<lo>.<hi> (pt_cluster_contact_put: of two changes made
 * at the same moment on two nodes one is made again on top of the other); the rows
 * here are a copy, which every node keeps from a watch of those keys
 * (pt_srv_contact_remote), so reads and the block checks stay local.
 */
#include <stdio.h>
#include <stdlib.h>

#include "server/pt_cluster.h"
#include "server/pt_server_int.h"
#include "server/pt_username.h"

enum { OP_REQUEST, OP_ACCEPT, OP_DENY, OP_REMOVE, OP_BLOCK };

/* updates.contact actions */
#define ACTION_REQUEST 1
#define ACTION_ACCEPTED 2
#define ACTION_DENIED 3
#define ACTION_REMOVED 4

typedef struct contact_op {
    pt_db_op op;
    pt_srv_reply_to to;
    int what;                       /* OP_* */
    uint8_t me[16], peer[16];
    uint32_t quota;                 /* the server's queue quota, for requests */
    int err_code;                   /* rpc error to answer, 0 on success */
    const char *err_msg;
    bool notify;                    /* apply() queued item for devices */
    bool friends;                   /* apply() made them friends */
    bool blocks_peer, blocked_by_peer; /* block states apply() left: me -> peer, peer -> me */
    pt_srv_item item;               /* the notice for the peer */
    uint8_t key[16];                /* the request's identity (pt_srv_request_key) */
    bool published;                 /* cluster: the bucket has the change (this node's rows are
                                       a copy: a store failure after it does not undo it) */
    pt_srv_devlist devices;         /* the peer's devices */
    uint8_t data[];                 /* note ‖ bundle */
} contact_op;

/* Contact state of (user, peer): 0 when there is no row, or a negative pt_err. */
static int get_state(sqlite3 *db, const uint8_t user[16], const uint8_t peer[16])
{
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "SELECT state FROM contacts WHERE user_id = ? AND peer_id = ?", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, user, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, peer, 16, SQLITE_STATIC);
    rc = pt_db_step(st);
    if (rc == 1) rc = sqlite3_column_int(st, 0);
    pt_db_release(st);
    return rc;
}

static int set_state(sqlite3 *db, const uint8_t user[16], const uint8_t peer[16], int state,
                     const pt_tl_bytes *note)
{
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "INSERT INTO contacts(user_id, peer_id, state, note, updated_ms) "
                               "VALUES (?,?,?,?,?) ON CONFLICT(user_id, peer_id) DO UPDATE SET "
                               "state = excluded.state, note = excluded.note, "
                               "updated_ms = excluded.updated_ms", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, user, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, peer, 16, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, state);
    if (note && note->len) sqlite3_bind_text(st, 4, (const char *)note->data, (int)note->len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)pt_env_now_ms(pt_env_default()));
    rc = pt_db_step(st);
    pt_db_release(st);
    return rc < 0 ? rc : 0;
}

static int del_state(sqlite3 *db, const uint8_t user[16], const uint8_t peer[16])
{
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "DELETE FROM contacts WHERE user_id = ? AND peer_id = ?", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, user, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, peer, 16, SQLITE_STATIC);
    rc = pt_db_step(st);
    pt_db_release(st);
    return rc < 0 ? rc : 0;
}

/* The rules, the same for both stores: from the states of the two sides (mine: me
 * towards peer; theirs: peer towards me) to the states o leaves, *nmine and *ntheirs;
 * o->item.code is the notice the peer gets (0: none). PT_ERR_STATE with o's error. */
static int contact_rules(contact_op *o, int mine, int theirs, int *nmine, int *ntheirs)
{
    *nmine = mine, *ntheirs = theirs;
    o->item.code = 0;
    switch (o->what) {
    case OP_REQUEST:
        if (theirs == PT_CONTACT_BLOCKED) PT_SRV_FAIL(PT_RPC_FORBIDDEN, "BLOCKED");
        if (mine == PT_CONTACT_BLOCKED) PT_SRV_FAIL(PT_RPC_CONFLICT, "PEER_BLOCKED");
        if (mine == PT_CONTACT_FRIENDS) PT_SRV_FAIL(PT_RPC_CONFLICT, "ALREADY_FRIENDS");
        if (mine == PT_CONTACT_REQUEST_RECEIVED) PT_SRV_FAIL(PT_RPC_CONFLICT, "PEER_REQUESTED_YOU");
        *nmine = PT_CONTACT_REQUEST_SENT, *ntheirs = PT_CONTACT_REQUEST_RECEIVED;
        o->item.code = ACTION_REQUEST;
        return 0;
    case OP_ACCEPT:
        if (mine != PT_CONTACT_REQUEST_RECEIVED) PT_SRV_FAIL(PT_RPC_NOT_FOUND, "NO_PENDING_REQUEST");
        *nmine = *ntheirs = PT_CONTACT_FRIENDS;
        o->item.code = ACTION_ACCEPTED;
        o->friends = true;
        return 0;
    case OP_DENY:
        if (mine != PT_CONTACT_REQUEST_RECEIVED) PT_SRV_FAIL(PT_RPC_NOT_FOUND, "NO_PENDING_REQUEST");
        *nmine = *ntheirs = 0;
        o->item.code = ACTION_DENIED;
        return 0;
    case OP_REMOVE:
        if (mine == 0) PT_SRV_FAIL(PT_RPC_NOT_FOUND, "NOT_A_CONTACT");
        *nmine = 0;
        if (mine == PT_CONTACT_BLOCKED || theirs == PT_CONTACT_BLOCKED) return 0; /* unblocked */
        *ntheirs = 0;
        o->item.code = ACTION_REMOVED;
        return 0;
    case OP_BLOCK:
        *nmine = PT_CONTACT_BLOCKED;
        if (theirs != PT_CONTACT_BLOCKED) *ntheirs = 0;
        return 0;
    default:
        return PT_ERR_INVAL;
    }
}

/* A request is refused when one of the peer's queues here is full. */
static int check_quota(sqlite3 *db, contact_op *o)
{
    if (o->what != OP_REQUEST) return 0;
    int rc = pt_srv_queues_full_any(o->to.srv, db, &o->devices, o->quota);
    PT_SRV_TRY(rc);
    if (rc) PT_SRV_FAIL(PT_RPC_QUOTA, "RECIPIENT_QUEUE_FULL");
    return 0;
}

/* Cluster mode: whether version of the relation of a and b is newer than this node's
 * copy (then noted as the copy's): 1, 0 or a negative pt_err. */
static int copy_newer(sqlite3 *db, const uint8_t a[16], const uint8_t b[16], uint32_t version)
{
    bool a_lo = memcmp(a, b, 16) < 0;
    uint8_t rec[33] = {'k'};
    memcpy(rec + 1, a_lo ? a : b, 16);
    memcpy(rec + 17, a_lo ? b : a, 16);
    return pt_srv_copy_newer(db, rec, sizeof rec, version);
}

/* Sets the store's row of (user, peer) to state (0: no row). */
static int put_state(sqlite3 *db, const uint8_t user[16], const uint8_t peer[16], int state,
                     const pt_tl_bytes *note)
{
    return state ? set_state(db, user, peer, state, note) : del_state(db, user, peer);
}

/* Cluster mode: the relation is the bucket's record k.<lo>.<hi>; the rules run on it
 * and the next version is written unless another change made it first (then again:
 * a request each way made at the same moment on two nodes gives one request and one
 * PEER_REQUESTED_YOU, as on one node). */
/* The request made again (its client resent it after its node died before answering,
 * or to this node after a reconnection) finds the relation's latest version written
 * by itself: a version's change id is the request key's first 7 bytes and the notice
 * code that change sent. It is not applied twice; the caller is answered as the first
 * time and that notice goes again (under the request's key: JetStream keeps one). A
 * change made by someone else since hides it, and the request is judged again. */
static int cluster_change(pt_cluster *c, sqlite3 *db, contact_op *o, int *mine, int *theirs, int *nmine,
                          int *ntheirs, uint32_t *version)
{
    uint8_t change[8];
    for (int tries = 0; tries < 16; tries++) {
        pt_cluster_vref ref;
        int64_t v = pt_cluster_contact_get(c, o->me, o->peer, mine, theirs, &ref);
        if (v < 0) PT_SRV_FAIL(PT_RPC_UNAVAILABLE, "CLUSTER_UNAVAILABLE");
        *version = (uint32_t)v;
        if (ref.version > 0 && memcmp(ref.change, o->key, 7) == 0) {
            pt_log_info("contacts: a request made again was applied before (version %lld); not again",
                        (long long)ref.version);
            o->item.code = ref.change[7];
            o->friends = o->what == OP_ACCEPT;
            *nmine = *mine, *ntheirs = *theirs;
            o->published = true;
            return 0;
        }
        o->friends = false;
        PT_SRV_TRY(contact_rules(o, *mine, *theirs, nmine, ntheirs));
        PT_SRV_TRY(check_quota(db, o));
        if (*nmine == *mine && *ntheirs == *theirs && o->what != OP_REQUEST) return 0; /* no change */
        memcpy(change, o->key, 7);
        change[7] = (uint8_t)o->item.code;
        ref.mine = change;
        const pt_tl_bytes *note = o->what == OP_REQUEST ? &o->item.note : NULL;
        int rc = pt_cluster_contact_put(c, o->me, o->peer, *nmine, *ntheirs, note ? note->data : NULL,
                                        note ? note->len : 0, &ref);
        if (rc == 0) {
            o->published = true;
            *version = (uint32_t)v + 1;
            return 0;
        }
        if (rc < 0) PT_SRV_FAIL(PT_RPC_UNAVAILABLE, "CLUSTER_UNAVAILABLE");
    }
    pt_log_warn("contacts: a relation kept changing under 16 tries; the change was refused");
    PT_SRV_FAIL(PT_RPC_UNAVAILABLE, "CLUSTER_BUSY");
}

static int contact_change(sqlite3 *db, contact_op *o)
{
    pt_cluster *c = o->to.srv->cluster;
    int rc = pt_srv_user_known(c, db, o->peer);
    if (rc < 0) return rc;
    if (rc == 0) PT_SRV_FAIL(PT_RPC_NOT_FOUND, "USER_NOT_FOUND");
    /* who hears of it: the peer's devices (every op but a block may tell them) */
    if (o->what != OP_BLOCK) PT_SRV_TRY(pt_srv_user_devices_any(c, db, o->peer, NULL, &o->devices));
    int mine, theirs, nmine, ntheirs;
    if (c) {
        uint32_t version = 0;
        PT_SRV_TRY(cluster_change(c, db, o, &mine, &theirs, &nmine, &ntheirs, &version));
        /* what contact_apply reads back below, for when the store fails from here on */
        o->blocks_peer = nmine == PT_CONTACT_BLOCKED;
        o->blocked_by_peer = ntheirs == PT_CONTACT_BLOCKED;
        o->notify = o->item.code != 0; /* the notice goes to JetStream after (contact_done) */
        /* the copy here may hold a newer version already (the watch brought it), or an
         * older one than the version this change read: both rows, as the watch's copy */
        int newer = version ? copy_newer(db, o->me, o->peer, version) : 1;
        PT_SRV_TRY(newer);
        if (!newer) return 0;
        const pt_tl_bytes *note = o->what == OP_REQUEST ? &o->item.note : NULL;
        PT_SRV_TRY(put_state(db, o->me, o->peer, nmine, note));
        return put_state(db, o->peer, o->me, ntheirs, note); /* notify was set above */
    } else {
        PT_SRV_TRY(mine = get_state(db, o->me, o->peer));
        PT_SRV_TRY(theirs = get_state(db, o->peer, o->me));
        PT_SRV_TRY(contact_rules(o, mine, theirs, &nmine, &ntheirs));
        PT_SRV_TRY(check_quota(db, o));
    }
    const pt_tl_bytes *note = o->what == OP_REQUEST ? &o->item.note : NULL;
    if (nmine != mine || o->what == OP_REQUEST || o->what == OP_BLOCK)
        PT_SRV_TRY(put_state(db, o->me, o->peer, nmine, note));
    if (ntheirs != theirs || o->what == OP_REQUEST || o->what == OP_ACCEPT)
        PT_SRV_TRY(put_state(db, o->peer, o->me, ntheirs, note));
    if (!o->item.code) return 0;
    PT_SRV_TRY(pt_srv_item_store(db, &o->item, &o->devices));
    o->notify = true;
    return 0;
}

/* Applies the operation and notes the blocks it leaves, for the routing directory. */
static int contact_apply(sqlite3 *db, void *arg)
{
    contact_op *o = arg;
    PT_SRV_TRY(contact_change(db, o));
    int mine = get_state(db, o->me, o->peer), theirs = get_state(db, o->peer, o->me);
    PT_SRV_TRY(mine);
    PT_SRV_TRY(theirs);
    o->blocks_peer = mine == PT_CONTACT_BLOCKED;
    o->blocked_by_peer = theirs == PT_CONTACT_BLOCKED;
    return 0;
}

/* ---- cluster mode: relations changed on other nodes ------------------------------------------- */

typedef struct remote_op {
    pt_db_op op;
    pt_server *srv;
    uint8_t lo[16], hi[16];
    uint8_t rec[33];                /* 'k' lo hi: the copy's name in copy_versions */
    uint32_t version;
    bool stale;                     /* the copy here holds this version or a newer one */
    pt_cluster_contact k;
} remote_op;

static int remote_apply(sqlite3 *db, void *arg)
{
    remote_op *r = arg;
    r->stale = false; /* rerunnable */
    int newer = pt_srv_copy_newer(db, r->rec, sizeof r->rec, r->version);
    if (newer <= 0) {
        r->stale = newer == 0;
        return newer;
    }
    pt_tl_bytes note = {r->k.note, r->k.note_len};
    PT_SRV_TRY(put_state(db, r->lo, r->hi, r->k.lo_state, &note));
    return put_state(db, r->hi, r->lo, r->k.hi_state, &note);
}

static void remote_done(void *arg, int rc)
{
    remote_op *r = arg;
    if (rc == 0) {
        if (!r->stale) {
            pt_srv_dir_set_blocked(r->srv, r->lo, r->hi, r->k.lo_state == PT_CONTACT_BLOCKED);
            pt_srv_dir_set_blocked(r->srv, r->hi, r->lo, r->k.hi_state == PT_CONTACT_BLOCKED);
        }
    } else {
        pt_log_warn("contacts: a relation changed on another node was not copied here (%s)", pt_strerror(rc));
    }
    free(r);
}

void pt_srv_contact_remote(pt_server *s, const uint8_t lo[16], const uint8_t hi[16], uint32_t version,
                           const pt_cluster_contact *k)
{
    if (!s->db) return;
    remote_op *r = calloc(1, sizeof *r);
    if (!r) {
        pt_log_error("contacts: out of memory; a relation changed on another node is not copied here");
        return;
    }
    r->srv = s;
    memcpy(r->lo, lo, 16);
    memcpy(r->hi, hi, 16);
    r->rec[0] = 'k';
    memcpy(r->rec + 1, lo, 16);
    memcpy(r->rec + 17, hi, 16);
    r->version = version;
    r->k = *k;
    r->op = (pt_db_op){.apply = remote_apply, .done = remote_done, .arg = r, .rerunnable = true};
    pt_db_submit(s->db, &r->op);
}

static void contact_reply(contact_op *o, int rc)
{
    pt_srv_sess *e = pt_srv_reply_session(&o->to);
    if (e) {
        if (rc == 0) pt_srv_reply_ok(e, o->to.req_msg_id);
        else pt_srv_reply_error(e, o->to.req_msg_id, o->err_code ? o->err_code : PT_RPC_INTERNAL,
                                o->err_msg ? o->err_msg : "STORE_FAILED");
    }
    pt_srv_devlist_free(&o->devices);
    free(o);
}

/* Cluster mode: JetStream answered the notice's publishes. The relation changed in
 * any case. A request whose notice was refused (a queue that filled up since the
 * check, or publishes that kept failing) is answered with the error: asking again is
 * allowed and sends it again. Any other change is answered as made (asking again would
 * be refused by the rules): the peer reads the relation with contacts.get. */
static void contact_queued(void *arg, int rc, int64_t id)
{
    (void)id;
    contact_op *o = arg;
    if (rc) pt_log_warn("contacts: notice %lld was not queued for every device of its recipient (%s)",
                        (long long)o->item.server_id, rc == PT_ERR_TOO_BIG ? "a queue is full" : pt_strerror(rc));
    if (o->what != OP_REQUEST) rc = 0;
    else if (rc == PT_ERR_TOO_BIG) o->err_code = PT_RPC_QUOTA, o->err_msg = "RECIPIENT_QUEUE_FULL";
    contact_reply(o, rc);
}

static void contact_done(void *arg, int rc)
{
    contact_op *o = arg;
    pt_server *s = o->to.srv;
    if (rc != 0 && o->published) { /* cluster: made; this node's copy failed */
        pt_log_warn("contacts: a change is in the cluster but this node's store failed (%s): answered as "
                    "made; this node's copy of the relation is written when the watch brings that version",
                    pt_strerror(rc));
        rc = 0;
    }
    if (rc == 0) {
        pt_srv_dir_set_blocked(s, o->me, o->peer, o->blocks_peer);
        pt_srv_dir_set_blocked(s, o->peer, o->me, o->blocked_by_peer);
    }
    if (rc == 0 && o->notify && !s->cluster) {
        pt_srv_push_item(s, &o->devices, &o->item);
        pt_srv_queue_add(s, &o->devices, 1);
    }
    if (rc == 0 && o->friends) { /* each sees the other's presence from now on */
        pt_srv_presence_tell(s, o->me, o->peer);
        pt_srv_presence_tell(s, o->peer, o->me);
    }
    if (rc == 0 && o->notify && s->cluster && o->devices.n) { /* the peer's queues in JetStream */
        if ((rc = pt_srv_item_enqueue(s, &o->item, o->key, false, &o->devices, contact_queued, o)) == 0) return;
        contact_queued(o, rc, 0);
        return;
    }
    contact_reply(o, rc);
}

static void submit(pt_conn *c, uint64_t req, int what, const uint8_t peer[16], pt_tl_bytes note,
                   pt_tl_bytes bundle)
{
    pt_srv_sess *e = c->sess;
    if (!pt_srv_require_bound(c, req)) return;
    if (memcmp(peer, e->dev->user_id, 16) == 0) {
        pt_srv_reply_error(e, req, PT_RPC_BAD_REQUEST, "PEER_IS_SELF");
        return;
    }
    if (note.len > PT_SERVER_NOTE_MAX || bundle.len > PT_SERVER_BUNDLE_MAX) {
        pt_srv_reply_error(e, req, PT_RPC_TOO_LARGE, note.len > PT_SERVER_NOTE_MAX ? "NOTE_TOO_LARGE"
                                                                                  : "BUNDLE_TOO_LARGE");
        return;
    }
    contact_op *o = calloc(1, sizeof *o + note.len + bundle.len);
    if (!o) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "OUT_OF_MEMORY");
        return;
    }
    int64_t id;
    if (pt_srv_take_server_id(c->srv, &id) != 0) {
        pt_srv_reply_error(e, req, PT_RPC_UNAVAILABLE,
                           c->srv->cluster ? "CLUSTER_UNAVAILABLE" : "STORE_BUSY");
        free(o);
        return;
    }
    pt_srv_reply_to_init(&o->to, c, req);
    pt_srv_request_key(o->key, &o->to);
    o->what = what;
    memcpy(o->me, e->dev->user_id, 16);
    memcpy(o->peer, peer, 16);
    o->quota = c->srv->cfg.queue_quota;
    if (note.len) memcpy(o->data, note.data, note.len);
    if (bundle.len) memcpy(o->data + note.len, bundle.data, bundle.len);
    o->item = (pt_srv_item){.server_id = id, .kind = PT_ITEM_CONTACT,
                            .date_ms = pt_env_now_ms(pt_env_default()),
                            .note = {o->data, note.len},
                            .payload = {o->data + note.len, bundle.len}};
    memcpy(o->item.from, o->me, 16);
    memcpy(o->item.from_device, e->device_pk, 32);
    o->op = (pt_db_op){.apply = contact_apply, .done = contact_done, .arg = o};
    pt_db_submit(c->srv->db, &o->op);
}

/* ---- contacts.get ------------------------------------------------------------------------------ */

typedef struct contact_row {
    uint8_t user_id[16];
    char username[PT_USERNAME_DISPLAY_SIZE];
    int state;
} contact_row;

static void rpc_get(pt_conn *c, uint64_t req, const pt_tl_contacts_get *q)
{
    pt_srv_sess *e = c->sess;
    if (!pt_srv_require_bound(c, req)) return;
    if (q->limit < 1) {
        pt_srv_reply_error(e, req, PT_RPC_BAD_REQUEST, "LIMIT_INVALID");
        return;
    }
    size_t limit = q->limit > PT_SERVER_PAGE_MAX ? PT_SERVER_PAGE_MAX : (size_t)q->limit;
    contact_row *rows = calloc(limit + 1, sizeof *rows);
    pt_tl_contacts_contact *items = calloc(limit, sizeof *items);
    sqlite3_stmt *st = NULL;
    if (!rows || !items ||
        pt_db_stmt(pt_db_reader(c->srv->db),
                      "SELECT c.peer_id, c.state, u.username FROM contacts c "
                      "LEFT JOIN users u ON u.user_id = c.peer_id "
                      "WHERE c.user_id = ? AND c.peer_id > ? ORDER BY c.peer_id LIMIT ?", &st)) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
        goto out;
    }
    sqlite3_bind_blob(st, 1, e->dev->user_id, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, q->after, 16, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)limit + 1);
    size_t n = 0;
    while (n <= limit && pt_db_step(st) == 1) {
        if (sqlite3_column_bytes(st, 0) != 16) continue;
        memcpy(rows[n].user_id, sqlite3_column_blob(st, 0), 16);
        rows[n].state = sqlite3_column_int(st, 1);
        const unsigned char *name = sqlite3_column_text(st, 2);
        snprintf(rows[n].username, sizeof rows[n].username, "%s", name ? (const char *)name : "");
        n++;
    }
    /* cluster mode: a user of another node is named by the cluster directory (a
     * blocking read on the loop the first time this node names that user) */
    for (size_t i = 0; c->srv->cluster && i < n && i < limit; i++) {
        char display[PT_CLUSTER_NAME_SIZE];
        if (!rows[i].username[0] && pt_cluster_user_name(c->srv->cluster, rows[i].user_id, display) == 0)
            snprintf(rows[i].username, sizeof rows[i].username, "%.*s",
                     (int)sizeof rows[i].username - 1, display);
    }
    pt_tl_contacts_list r = {.contacts = {.n = (uint32_t)(n < limit ? n : limit), .items = items},
                             .more = n > limit};
    for (uint32_t i = 0; i < r.contacts.n; i++) {
        memcpy(items[i].user_id, rows[i].user_id, 16);
        items[i].username = (pt_tl_bytes){(const uint8_t *)rows[i].username,
                                          (uint32_t)strlen(rows[i].username)};
        items[i].state = rows[i].state;
        items[i].status = rows[i].state == PT_CONTACT_FRIENDS
                              ? pt_srv_presence_visible(c->srv, rows[i].user_id)
                              : PT_STATUS_OFFLINE;
    }
    pt_buf out;
    pt_buf_init(&out);
    if (pt_tl_contacts_list_encode(&out, &r) == 0) pt_srv_reply(e, req, &out);
    else pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
    pt_buf_free(&out);
out:
    pt_db_release(st);
    free(rows);
    free(items);
}

bool pt_srv_contacts_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded)
{
    const pt_tl_bytes none = {NULL, 0};
    switch (ctor) {
    case PT_TL_CONTACTS_REQUEST_ID: {
        const pt_tl_contacts_request *q = decoded;
        submit(c, msg_id, OP_REQUEST, q->to, q->note, q->bundle);
        return true;
    }
    case PT_TL_CONTACTS_ACCEPT_ID: {
        const pt_tl_contacts_accept *q = decoded;
        submit(c, msg_id, OP_ACCEPT, q->peer, none, q->bundle);
        return true;
    }
    case PT_TL_CONTACTS_DENY_ID:
        submit(c, msg_id, OP_DENY, ((const pt_tl_contacts_deny *)decoded)->peer, none, none);
        return true;
    case PT_TL_CONTACTS_REMOVE_ID:
        submit(c, msg_id, OP_REMOVE, ((const pt_tl_contacts_remove *)decoded)->peer, none, none);
        return true;
    case PT_TL_CONTACTS_BLOCK_ID:
        submit(c, msg_id, OP_BLOCK, ((const pt_tl_contacts_block *)decoded)->peer, none, none);
        return true;
    case PT_TL_CONTACTS_GET_ID: rpc_get(c, msg_id, decoded); return true;
    default: return false;
    }
}
