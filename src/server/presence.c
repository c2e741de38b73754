/*
 * Presence: who is online, and what their friends see of it.
 *
 * A user is online while one of its bound devices has a connection whose
 * channel is up. The status a user chooses (online, busy, away, invisible) is stored
 * in users.status and kept here, in one entry per user that is online or has a
 * status write in flight. Transitions of what others may see (an invisible user
 * looks offline) are pushed as updates.userStatus to the user's friends only, and
 * only to their connected devices: presence is never queued.
 *
 * Cluster mode: each node tells the others when one of its users comes, goes or
 * changes status (pt_cluster_presence, subject pt.pres) and keeps what the others
 * told it (struct pt_srv_rpres). A user connected anywhere is online everywhere.
 * Every node compares what it shows of a user before and after each change, local
 * or told, and tells the friends connected to it, on their devices connected to it
 * only: each friend's device hears of a change once, from its own node. The status
 * a user chooses is also kept in the bucket (o.<user hex>), and every node adopts
 * it (pt_srv_presence_chosen), so invisible through one node is invisible on all.
 */
#include <stdio.h>
#include <stdlib.h>

#include "server/pt_cluster.h"
#include "server/pt_server_int.h"
#include "server/pt_username.h"

struct pt_srv_user {
    uint8_t user_id[16];
    char username[PT_USERNAME_DISPLAY_SIZE]; /* display form, for users.list */
    int status;                     /* chosen: PT_STATUS_ONLINE .. PT_STATUS_INVISIBLE */
    uint32_t nconn;                 /* connections of its bound devices */
    uint32_t pending;               /* users.setStatus writes not yet committed */
    pt_srv_user *next;              /* hash chain */
};

/* Cluster mode: a user connected to another node, as that node said. */
typedef struct pt_srv_rpres {
    uint8_t user_id[16];
    uint32_t node;
    int status;                     /* chosen: PT_STATUS_ONLINE .. PT_STATUS_INVISIBLE */
    char username[PT_USERNAME_DISPLAY_SIZE];
    struct pt_srv_rpres *next;      /* hash chain (by user) */
} pt_srv_rpres;

/* Cluster mode: statuses users chose through any node (o.<user hex>), so that a user
 * gets the status it chose wherever it connects; a user not listed is online. */
typedef struct pt_srv_chosen {
    uint8_t user_id[16];
    int status;
    struct pt_srv_chosen *next;
} pt_srv_chosen;

#define CHOSEN_BUCKETS 4096
static size_t user_hash(const uint8_t id[16], size_t nb) { return (size_t)(pt_get_u64le(id) % nb); }

int pt_srv_presence_init(pt_server *s)
{
    s->user_nbuckets = 1024;
    s->user_buckets = calloc(s->user_nbuckets, sizeof *s->user_buckets);
    s->rpres_nb = 1024;
    s->rpres = calloc(s->rpres_nb, sizeof *s->rpres);
    return s->user_buckets && s->rpres ? 0 : PT_ERR_NOMEM;
}

void pt_srv_presence_free(pt_server *s)
{
    for (size_t i = 0; s->user_buckets && i < s->user_nbuckets; i++) {
        for (pt_srv_user *u = s->user_buckets[i], *next; u; u = next) {
            next = u->next;
            free(u);
        }
    }
    for (size_t i = 0; s->rpres && i < s->rpres_nb; i++) {
        for (pt_srv_rpres *r = s->rpres[i], *next; r; r = next) {
            next = r->next;
            free(r);
        }
    }
    for (size_t i = 0; s->chosen && i < CHOSEN_BUCKETS; i++) {
        for (pt_srv_chosen *r = s->chosen[i], *next; r; r = next) {
            next = r->next;
            free(r);
        }
    }
    free(s->chosen);
    s->chosen = NULL;
    free(s->user_buckets);
    free(s->rpres);
    s->user_buckets = NULL;
    s->rpres = NULL;
    s->user_n = s->rpres_n = 0;
}

static pt_srv_user *user_find(pt_server *s, const uint8_t id[16])
{
    for (pt_srv_user *u = s->user_buckets[user_hash(id, s->user_nbuckets)]; u; u = u->next)
        if (memcmp(u->user_id, id, 16) == 0) return u;
    return NULL;
}

static void user_grow(pt_server *s)
{
    size_t nb = s->user_nbuckets * 2;
    pt_srv_user **b = calloc(nb, sizeof *b);
    if (!b) return; /* longer chains, still correct */
    for (size_t i = 0; i < s->user_nbuckets; i++) {
        for (pt_srv_user *u = s->user_buckets[i], *next; u; u = next) {
            next = u->next;
            size_t h = user_hash(u->user_id, nb);
            u->next = b[h];
            b[h] = u;
        }
    }
    free(s->user_buckets);
    s->user_buckets = b;
    s->user_nbuckets = nb;
}

static pt_srv_chosen **chosen_slot(pt_server *s, const uint8_t user[16]);

/* Finds or creates the entry, reading the stored status and name. */
static pt_srv_user *user_get(pt_server *s, const uint8_t id[16])
{
    pt_srv_user *u = user_find(s, id);
    if (u) return u;
    if (s->user_n >= s->user_nbuckets) user_grow(s);
    if (!(u = calloc(1, sizeof *u))) return NULL;
    memcpy(u->user_id, id, 16);
    u->status = PT_STATUS_ONLINE;
    sqlite3_stmt *st;
    if (s->db && pt_db_stmt(pt_db_reader(s->db),
                               "SELECT status, username FROM users WHERE user_id = ?", &st) == 0) {
        sqlite3_bind_blob(st, 1, id, 16, SQLITE_STATIC);
        if (pt_db_step(st) == 1) {
            int v = sqlite3_column_int(st, 0);
            if (v >= PT_STATUS_ONLINE && v <= PT_STATUS_INVISIBLE) u->status = v;
            const unsigned char *name = sqlite3_column_text(st, 1);
            if (name) snprintf(u->username, sizeof u->username, "%s", (const char *)name);
        }
        pt_db_release(st);
    }
    if (s->chosen) { /* cluster mode: chosen through any node */
        pt_srv_chosen **pp = chosen_slot(s, id);
        if (pp && *pp) u->status = (*pp)->status;
    }
    size_t h = user_hash(id, s->user_nbuckets);
    u->next = s->user_buckets[h];
    s->user_buckets[h] = u;
    s->user_n++;
    return u;
}

static void user_maybe_free(pt_server *s, pt_srv_user *u)
{
    if (u->nconn || u->pending) return;
    pt_srv_user **pp = &s->user_buckets[user_hash(u->user_id, s->user_nbuckets)];
    while (*pp != u) pp = &(*pp)->next;
    *pp = u->next;
    free(u);
    s->user_n--;
}

static int visible(const pt_srv_user *u)
{
    if (!u || !u->nconn || u->status == PT_STATUS_INVISIBLE) return PT_STATUS_OFFLINE;
    return u->status;
}

/* What the other nodes say of user: its status where it is not invisible, else
 * offline; *connected: connected to any other node. */
static int remote_visible(pt_server *s, const uint8_t user[16], bool *connected)
{
    int v = PT_STATUS_OFFLINE;
    *connected = false;
    for (pt_srv_rpres *r = s->rpres ? s->rpres[user_hash(user, s->rpres_nb)] : NULL; r; r = r->next) {
        if (memcmp(r->user_id, user, 16) != 0) continue;
        *connected = true;
        if (r->status != PT_STATUS_INVISIBLE && v == PT_STATUS_OFFLINE) v = r->status;
    }
    /* the status chosen last, through any node, over what a node said before it */
    pt_srv_chosen **pp = *connected && s->chosen ? chosen_slot(s, user) : NULL;
    if (pp && *pp) v = (*pp)->status == PT_STATUS_INVISIBLE ? PT_STATUS_OFFLINE : (*pp)->status;
    return v;
}

/* What others see of user, cluster-wide: this node's view while it is connected
 * here, else the other nodes'. */
static int combined(pt_server *s, const uint8_t user[16])
{
    const pt_srv_user *u = user_find(s, user);
    if (u && u->nconn) return visible(u);
    bool connected;
    return remote_visible(s, user, &connected);
}

int pt_srv_presence_visible(pt_server *s, const uint8_t user[16]) { return combined(s, user); }

static bool connected_here(pt_server *s, const uint8_t user[16])
{
    const pt_srv_user *u = user_find(s, user);
    return u && u->nconn;
}

bool pt_srv_presence_connected(pt_server *s, const uint8_t user[16])
{
    bool remote = false;
    if (connected_here(s, user)) return true;
    remote_visible(s, user, &remote);
    return remote;
}

/* Cluster mode: tells the other nodes what u now is here. */
static void announce(pt_server *s, const pt_srv_user *u)
{
    /* a node that stops says goodbye once instead (pt_cluster_stop) */
    if (s->cluster && !s->stopping) pt_cluster_presence(s->cluster, u->user_id, u->nconn ? u->status : PT_STATUS_OFFLINE, u->username);
}

static int encode_status(pt_buf *b, const uint8_t user[16], int status)
{
    pt_tl_updates_userStatus up = {.status = status};
    memcpy(up.user_id, user, 16);
    return pt_tl_updates_userStatus_encode(b, &up);
}

/* Tells user's friends connected to this node, on their devices connected here,
 * that they now see status (the other nodes tell theirs). */
static void notify_friends(pt_server *s, const uint8_t user[16], int status)
{
    if (s->stopping || !s->db) return;
    sqlite3_stmt *st;
    if (pt_db_stmt(pt_db_reader(s->db),
                      "SELECT peer_id FROM contacts WHERE user_id = ? AND state = ?", &st))
        return;
    sqlite3_bind_blob(st, 1, user, 16, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, PT_CONTACT_FRIENDS);
    /* collect first: pushing reads the store on the same connection */
    uint8_t (*friends)[16] = NULL;
    size_t n = 0, cap = 0;
    while (pt_db_step(st) == 1) {
        if (sqlite3_column_bytes(st, 0) != 16) continue;
        const uint8_t *f = sqlite3_column_blob(st, 0);
        if (!connected_here(s, f)) continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            void *p = realloc(friends, ncap * sizeof *friends);
            if (!p) break;
            friends = p;
            cap = ncap;
        }
        memcpy(friends[n++], f, 16);
    }
    pt_db_release(st);
    pt_buf b;
    pt_buf_init(&b);
    if (n && encode_status(&b, user, status) == 0)
        for (size_t i = 0; i < n; i++) pt_srv_push_user_here(s, friends[i], &b);
    free(friends);
    pt_buf_free(&b);
}

void pt_srv_presence_conn(pt_server *s, const uint8_t user[16], bool up)
{
    pt_srv_user *u = up ? user_get(s, user) : user_find(s, user);
    if (!u) return;
    int before = combined(s, user);
    uint32_t was = u->nconn;
    if (up) u->nconn++;
    else if (u->nconn) u->nconn--;
    if (!was != !u->nconn) announce(s, u);
    int after = combined(s, user);
    if (after != before) notify_friends(s, user, after);
    user_maybe_free(s, u);
}

void pt_srv_presence_tell(pt_server *s, const uint8_t about[16], const uint8_t to[16])
{
    pt_buf b;
    pt_buf_init(&b);
    if (encode_status(&b, about, pt_srv_presence_visible(s, about)) == 0) pt_srv_push_user(s, to, &b);
    pt_buf_free(&b);
}

/* ---- cluster mode: the users of other nodes ------------------------------------------------------- */

static void rpres_grow(pt_server *s)
{
    size_t nb = s->rpres_nb * 2;
    pt_srv_rpres **b = calloc(nb, sizeof *b);
    if (!b) return; /* longer chains, still correct */
    for (size_t i = 0; i < s->rpres_nb; i++) {
        for (pt_srv_rpres *r = s->rpres[i], *next; r; r = next) {
            next = r->next;
            size_t h = user_hash(r->user_id, nb);
            r->next = b[h];
            b[h] = r;
        }
    }
    free(s->rpres);
    s->rpres = b;
    s->rpres_nb = nb;
}

static void remote_set(pt_server *s, uint32_t node, const uint8_t user[16], int status, const char *name);

void pt_srv_presence_remote(pt_server *s, uint32_t node, const uint8_t user[16], int status, const char *name)
{
    int before = combined(s, user);
    remote_set(s, node, user, status, name);
    int after = combined(s, user);
    pt_log_debug("presence: user %02x%02x%02x%02x on node %u: status %d; shown here %d -> %d", user[0], user[1],
                 user[2], user[3], node, status, before, after);
    if (after != before) notify_friends(s, user, after);
}

static void remote_set(pt_server *s, uint32_t node, const uint8_t user[16], int status, const char *name)
{
    pt_srv_rpres **pp = &s->rpres[user_hash(user, s->rpres_nb)];
    while (*pp && (memcmp((*pp)->user_id, user, 16) != 0 || (*pp)->node != node)) pp = &(*pp)->next;
    if (status == PT_STATUS_OFFLINE) {
        if (*pp) {
            pt_srv_rpres *r = *pp;
            *pp = r->next;
            free(r);
            s->rpres_n--;
        }
        return;
    }
    pt_srv_rpres *r = *pp;
    if (!r) {
        if (s->rpres_n >= s->rpres_nb) {
            rpres_grow(s);
            pp = &s->rpres[user_hash(user, s->rpres_nb)];
        }
        if (!(r = calloc(1, sizeof *r))) {
            pt_log_error("presence: out of memory; a user of another node looks offline here");
            return;
        }
        memcpy(r->user_id, user, 16);
        r->node = node;
        r->next = *pp;
        *pp = r;
        s->rpres_n++;
    }
    r->status = status;
    snprintf(r->username, sizeof r->username, "%s", name);
}

void pt_srv_presence_node_gone(pt_server *s, uint32_t node)
{
    for (size_t i = 0; i < s->rpres_nb; i++) {
        for (pt_srv_rpres **pp = &s->rpres[i]; *pp;) {
            pt_srv_rpres *r = *pp;
            if (r->node != node) {
                pp = &r->next;
                continue;
            }
            uint8_t user[16];
            memcpy(user, r->user_id, 16);
            int before = combined(s, user);
            *pp = r->next;
            free(r);
            s->rpres_n--;
            int after = combined(s, user);
            if (after != before) notify_friends(s, user, after);
        }
    }
}

static pt_srv_chosen **chosen_slot(pt_server *s, const uint8_t user[16])
{
    if (!s->chosen && !(s->chosen = calloc(CHOSEN_BUCKETS, sizeof *s->chosen))) return NULL;
    pt_srv_chosen **pp = &s->chosen[user_hash(user, CHOSEN_BUCKETS)];
    while (*pp && memcmp((*pp)->user_id, user, 16) != 0) pp = &(*pp)->next;
    return pp;
}

void pt_srv_presence_chosen(pt_server *s, const uint8_t user[16], int status)
{
    pt_srv_chosen **pp = chosen_slot(s, user);
    if (!pp) return;
    int before = combined(s, user);
    if (!*pp && !(*pp = calloc(1, sizeof **pp))) return;
    memcpy((*pp)->user_id, user, 16);
    (*pp)->status = status;
    /* a user connected here whose status was changed through another node */
    pt_srv_user *u = user_find(s, user);
    if (u && u->status != status) {
        u->status = status;
        if (u->nconn) announce(s, u); /* what the other nodes keep of it here */
    }
    int after = combined(s, user);
    if (after != before) notify_friends(s, user, after);
}

void pt_srv_presence_announce(pt_server *s)
{
    for (size_t i = 0; i < s->user_nbuckets; i++)
        for (pt_srv_user *u = s->user_buckets[i]; u; u = u->next)
            if (u->nconn) announce(s, u);
}

/* ---- users.setStatus ------------------------------------------------------------------------ */

typedef struct status_op {
    pt_db_op op;
    pt_srv_reply_to to;
    uint8_t user_id[16];
    int status;
} status_op;

static int status_apply(sqlite3 *db, void *arg)
{
    status_op *o = arg;
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "UPDATE users SET status = ? WHERE user_id = ?", &st);
    if (rc) return rc;
    sqlite3_bind_int(st, 1, o->status);
    sqlite3_bind_blob(st, 2, o->user_id, 16, SQLITE_STATIC);
    rc = pt_db_step(st);
    pt_db_release(st);
    if (rc >= 0 && o->to.srv->cluster) rc = pt_cluster_status_put(o->to.srv->cluster, o->user_id, o->status);
    return rc < 0 ? rc : 0;
}

static void status_done(void *arg, int rc)
{
    status_op *o = arg;
    pt_server *s = o->to.srv;
    pt_srv_user *u = user_find(s, o->user_id);
    if (u) {
        u->pending--;
        user_maybe_free(s, u);
    }
    if (rc) pt_log_warn("users.setStatus: the status could not be stored: %s", pt_strerror(rc));
    pt_srv_sess *e = pt_srv_reply_session(&o->to);
    if (e) {
        if (rc == 0) pt_srv_reply_ok(e, o->to.req_msg_id);
        else pt_srv_reply_error(e, o->to.req_msg_id, PT_RPC_INTERNAL, "STORE_FAILED");
    }
    free(o);
}

static void rpc_set_status(pt_conn *c, uint64_t req, const pt_tl_users_setStatus *q)
{
    if (!pt_srv_require_bound(c, req)) return;
    if (q->status < PT_STATUS_ONLINE || q->status > PT_STATUS_INVISIBLE) {
        pt_srv_reply_error(c->sess, req, PT_RPC_BAD_REQUEST, "STATUS_INVALID");
        return;
    }
    status_op *o = calloc(1, sizeof *o);
    pt_srv_user *u = o ? user_get(c->srv, c->sess->dev->user_id) : NULL;
    if (!u) {
        free(o);
        pt_srv_reply_error(c->sess, req, PT_RPC_INTERNAL, "OUT_OF_MEMORY");
        return;
    }
    /* others see the change now; the reply waits for the commit */
    int before = combined(c->srv, u->user_id);
    u->status = q->status;
    u->pending++;
    if (c->srv->cluster) pt_srv_presence_chosen(c->srv, u->user_id, q->status);
    if (u->nconn) announce(c->srv, u);
    int after = combined(c->srv, u->user_id);
    if (after != before) notify_friends(c->srv, u->user_id, after);
    pt_srv_reply_to_init(&o->to, c, req);
    memcpy(o->user_id, u->user_id, 16);
    o->status = q->status;
    o->op = (pt_db_op){.apply = status_apply, .done = status_done, .arg = o};
    pt_db_submit(c->srv->db, &o->op);
}

/* ---- users.list ------------------------------------------------------------------------------ */

typedef struct listed {
    const uint8_t *user_id;
    const char *username;
    int status;
} listed;

static int cmp_listed(const void *a, const void *b)
{
    return memcmp(((const listed *)a)->user_id, ((const listed *)b)->user_id, 16);
}

static void rpc_list(pt_conn *c, uint64_t req, const pt_tl_users_list *q)
{
    pt_server *s = c->srv;
    if (!pt_srv_require_bound(c, req)) return;
    if (q->limit < 1) {
        pt_srv_reply_error(c->sess, req, PT_RPC_BAD_REQUEST, "LIMIT_INVALID");
        return;
    }
    size_t limit = q->limit > PT_SERVER_PAGE_MAX ? PT_SERVER_PAGE_MAX : (size_t)q->limit;
    /* every visible user after the cursor, sorted: O(online log online) per page;
     * in cluster mode with the users of the other nodes (once each) */
    listed *all = malloc((s->user_n + s->rpres_n + 1) * sizeof *all);
    pt_tl_users_onlineUser *items = calloc(limit, sizeof *items);
    if (!all || !items) {
        free(all);
        free(items);
        pt_srv_reply_error(c->sess, req, PT_RPC_INTERNAL, "OUT_OF_MEMORY");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < s->user_nbuckets; i++)
        for (pt_srv_user *u = s->user_buckets[i]; u; u = u->next)
            if (visible(u) != PT_STATUS_OFFLINE && memcmp(u->user_id, q->after, 16) > 0)
                all[n++] = (listed){u->user_id, u->username, visible(u)};
    for (size_t i = 0; i < s->rpres_nb; i++) {
        for (pt_srv_rpres *r = s->rpres[i]; r; r = r->next) {
            bool any;
            int v = remote_visible(s, r->user_id, &any);
            if (v != PT_STATUS_OFFLINE && !connected_here(s, r->user_id) && memcmp(r->user_id, q->after, 16) > 0)
                all[n++] = (listed){r->user_id, r->username, v};
        }
    }
    qsort(all, n, sizeof *all, cmp_listed);
    size_t k = 0; /* a user connected to two other nodes: once */
    for (size_t i = 0; i < n; i++)
        if (k == 0 || memcmp(all[k - 1].user_id, all[i].user_id, 16) != 0) all[k++] = all[i];
    n = k;
    pt_tl_users_onlineList r = {.users = {.n = (uint32_t)(n < limit ? n : limit), .items = items},
                                .more = n > limit};
    for (uint32_t i = 0; i < r.users.n; i++) {
        memcpy(items[i].user_id, all[i].user_id, 16);
        items[i].username = (pt_tl_bytes){(const uint8_t *)all[i].username, (uint32_t)strlen(all[i].username)};
        items[i].status = all[i].status;
    }
    pt_buf out;
    pt_buf_init(&out);
    if (pt_tl_users_onlineList_encode(&out, &r) == 0) pt_srv_reply(c->sess, req, &out);
    else pt_srv_reply_error(c->sess, req, PT_RPC_INTERNAL, "INTERNAL");
    pt_buf_free(&out);
    free(all);
    free(items);
}

/* ---- messages.setTyping ---------------------------------------------------------------------------- */

static void rpc_typing(pt_conn *c, uint64_t req, const pt_tl_messages_setTyping *q)
{
    pt_srv_sess *e = c->sess;
    if (!pt_srv_require_bound(c, req)) return;
    sqlite3_stmt *st;
    if (pt_db_prepare(pt_db_reader(c->srv->db), "SELECT state FROM contacts WHERE user_id = ? AND peer_id = ?", &st)) {
        pt_srv_reply_error(e, req, PT_RPC_INTERNAL, "INTERNAL");
        return;
    }
    sqlite3_bind_blob(st, 1, e->dev->user_id, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, q->to, 16, SQLITE_STATIC);
    bool friends = pt_db_step(st) == 1 && sqlite3_column_int(st, 0) == PT_CONTACT_FRIENDS;
    sqlite3_finalize(st);
    if (!friends) {
        pt_srv_reply_error(e, req, PT_RPC_FORBIDDEN, "NOT_FRIENDS");
        return;
    }
    pt_buf b;
    pt_buf_init(&b);
    pt_tl_updates_typing u = {.typing = q->typing};
    memcpy(u.from, e->dev->user_id, 16);
    if (pt_tl_updates_typing_encode(&b, &u) == 0) pt_srv_push_user(c->srv, q->to, &b);
    pt_buf_free(&b);
    pt_srv_reply_ok(e, req);
}

bool pt_srv_presence_rpc(pt_conn *c, uint64_t msg_id, uint32_t ctor, const void *decoded)
{
    switch (ctor) {
    case PT_TL_MESSAGES_SETTYPING_ID: rpc_typing(c, msg_id, decoded); return true;
    case PT_TL_USERS_SETSTATUS_ID: rpc_set_status(c, msg_id, decoded); return true;
    case PT_TL_USERS_LIST_ID: rpc_list(c, msg_id, decoded); return true;
    default: return false;
    }
}
