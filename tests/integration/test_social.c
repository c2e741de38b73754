/* Presence, contacts, blocks, the prekey directory, groups and receipts, against
 * real packtrackd processes. Every wait is bounded in count and time. */
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "client/pt_client.h"
#include "crypto/pt_crypto.h"
#include "pt_tl.h"
#include "server/pt_server.h"
#include "testutil.h"
#include "wire/pt_wire.h"

#define MAX_BLOBS 1024

/* A received body: an rpc result (id = the request's msg_id) or an update. */
typedef struct blob {
    uint64_t id;
    uint8_t *p;
    size_t n;
} blob;

/* One user on one device. */
typedef struct user {
    pt_client *c;
    uint8_t id_pk[32], id_sk[64], user_id[16], device[32];
    char home[300];
    int err_code;              /* of the last call: rpc_error code, 0 if none */
    char err_msg[64];
    blob last;                 /* the last call's result (owned by res) */
    blob res[MAX_BLOBS];       /* results, by request msg_id */
    size_t nres;
    blob upd[MAX_BLOBS];       /* updates, in arrival order */
    size_t nupd;
} user;

/* The server_id of an updates.contact, or 0. */
static int64_t contact_server_id(const uint8_t *body, size_t len)
{
    static uint8_t mem[65536];
    pt_arena a;
    pt_arena_init(&a, mem, sizeof mem);
    pt_tl_obj o;
    if (pt_tl_decode_any(&o, body, len, &a) != 0 || o.id != PT_TL_UPDATES_CONTACT_ID) return 0;
    return o.u.updates_contact.server_id;
}

static void on_event(void *ud, const pt_sess_event *ev)
{
    user *u = ud;
    blob *b;
    if (ev->type == PT_SESS_EV_UPDATE) {
        /* a contact event may come twice (live, and from the queue by messages.sync when
         * the sync ran between its commit and the push): clients drop it by server_id,
         * as this does (PROTOCOL.md 6.2) */
        int64_t sid = contact_server_id(ev->body, ev->len);
        for (size_t i = 0; sid && i < u->nupd; i++)
            if (u->upd[i].id == (uint64_t)sid) return;
        assert_true(u->nupd < MAX_BLOBS);
        b = &u->upd[u->nupd++];
        b->id = (uint64_t)sid;
    } else if (ev->type == PT_SESS_EV_RESULT) {
        assert_true(u->nres < MAX_BLOBS);
        b = &u->res[u->nres++];
        b->id = ev->req_msg_id;
    } else {
        return;
    }
    b->p = malloc(ev->len ? ev->len : 1);
    assert_non_null(b->p);
    memcpy(b->p, ev->body, ev->len);
    b->n = ev->len;
}

/* Decodes b; the result lives until four more decodes (arenas rotate). */
static pt_tl_obj dec(const blob *b)
{
    static uint8_t mem[4][65536];
    static int next;
    pt_arena a;
    pt_arena_init(&a, mem[next], sizeof mem[next]);
    next = (next + 1) % 4;
    pt_tl_obj o;
    assert_int_equal(pt_tl_decode_any(&o, b->p, b->n, &a), 0);
    return o;
}

static void pump(user *u, int ms)
{
    int rc = pt_client_pump(u->c, ms, on_event, u);
    if (rc) fail_msg("pump: %s", pt_strerror(rc));
}

static void clear_updates(user *u)
{
    for (size_t i = 0; i < u->nupd; i++) free(u->upd[i].p);
    u->nupd = 0;
}

static void clear_results(user *u)
{
    for (size_t i = 0; i < u->nres; i++) free(u->res[i].p);
    u->nres = 0;
    u->last = (blob){0};
}

static const blob *find_result(const user *u, uint64_t id)
{
    for (size_t i = 0; i < u->nres; i++)
        if (u->res[i].id == id) return &u->res[i];
    return NULL;
}

/* Queues body without waiting; returns the request's msg_id. */
static uint64_t send_body(user *u, pt_buf *body)
{
    uint64_t id;
    assert_int_equal(pt_client_send(u->c, body->data, body->len, &id), 0);
    pt_buf_reset(body);
    return id;
}

/* Waits (10 s at most) for the result of request id; records its error. */
static int await(user *u, uint64_t id)
{
    const blob *b = NULL;
    PT_TEST_WHILE_FOR(!(b = find_result(u, id)), 10000, pump(u, 10));
    if (!b) fail_msg("no reply to %016llx", (unsigned long long)id);
    u->last = *b;
    u->err_code = 0;
    u->err_msg[0] = 0;
    pt_tl_obj o = dec(b);
    if (o.id == PT_TL_RPC_ERROR_ID) {
        u->err_code = o.u.rpc_error.error_code;
        snprintf(u->err_msg, sizeof u->err_msg, "%.*s", (int)o.u.rpc_error.error_message.len,
                 (const char *)o.u.rpc_error.error_message.data);
    }
    return u->err_code;
}

/* Sends a request of TL type `type` whose fields the trailing statements set on
 * `q`, waits for its result and stores the error code (0 on success) in rc. */
#define CALL(rc, u, type, ...)                                                                     \
    do {                                                                                           \
        pt_tl_##type q = {0};                                                                      \
        __VA_ARGS__;                                                                               \
        pt_buf b_;                                                                                 \
        pt_buf_init(&b_);                                                                          \
        assert_int_equal(pt_tl_##type##_encode(&b_, &q), 0);                                       \
        (rc) = await((u), send_body((u), &b_));                                                    \
        pt_buf_free(&b_);                                                                          \
    } while (0)

static void user_new(user *u, const char *tag)
{
    memset(u, 0, sizeof *u);
    snprintf(u->home, sizeof u->home, "%s", pt_test_tmpdir(tag));
    assert_int_equal(pt_ed25519_keypair(u->id_pk, u->id_sk), 0);
    pt_client_config cfg = {.home = u->home};
    int err;
    u->c = pt_client_new(&cfg, &err);
    assert_non_null(u->c);
}

/* Another device of the same user as `of`. */
static void device_new(user *u, const user *of, const char *tag)
{
    user_new(u, tag);
    memcpy(u->id_pk, of->id_pk, 32);
    memcpy(u->id_sk, of->id_sk, 64);
}

static void user_connect(user *u, uint16_t port)
{
    assert_int_equal(pt_client_connect(u->c, "127.0.0.1", port), 0);
    memcpy(u->device, pt_client_device_key(u->c), 32);
}

static void user_free(user *u)
{
    clear_updates(u);
    clear_results(u);
    pt_client_free(u->c);
}

static int bind(user *u, const char *name)
{
    uint8_t msg[15 + 32], cert[64];
    memcpy(msg, "PT1 device cert", 15);
    memcpy(msg + 15, pt_client_device_key(u->c), 32);
    assert_int_equal(pt_ed25519_sign(cert, msg, sizeof msg, u->id_sk), 0);
    pt_tl_auth_bindUsername q = {.name = {(const uint8_t *)name, (uint32_t)strlen(name)},
                                 .device_cert = {cert, 64}};
    memcpy(q.identity_key, u->id_pk, 32);
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_tl_auth_bindUsername_encode(&b, &q), 0);
    int rc = await(u, send_body(u, &b));
    pt_buf_free(&b);
    if (rc == 0) memcpy(u->user_id, dec(&u->last).u.auth_bound.user_id, 16);
    return rc;
}

static void user_up(user *u, const char *name, uint16_t port)
{
    user_new(u, name);
    user_connect(u, port);
    assert_int_equal(bind(u, name), 0);
}

static pt_tl_bytes str(const char *s) { return (pt_tl_bytes){(const uint8_t *)s, (uint32_t)strlen(s)}; }

/* ---- updates ------------------------------------------------------------------------------------- */

typedef bool (*upd_pred)(const pt_tl_obj *o, const void *arg);

static size_t count_updates(user *u, uint32_t ctor, upd_pred pred, const void *arg)
{
    size_t n = 0;
    for (size_t i = 0; i < u->nupd; i++) {
        pt_tl_obj o = dec(&u->upd[i]);
        n += o.id == ctor && (!pred || pred(&o, arg));
    }
    return n;
}

/* Pumps u until it has n matching updates or ms passed; returns how many it has. */
static size_t wait_updates(user *u, uint32_t ctor, upd_pred pred, const void *arg, size_t n, int ms)
{
    size_t have = count_updates(u, ctor, pred, arg);
    for (int t = 0; t < ms && have < n; t += 10) {
        pump(u, 10);
        have = count_updates(u, ctor, pred, arg);
    }
    return have;
}

/* The last matching update (decoded), or id 0. */
static pt_tl_obj last_update(user *u, uint32_t ctor, upd_pred pred, const void *arg)
{
    pt_tl_obj r = {0};
    for (size_t i = 0; i < u->nupd; i++) {
        pt_tl_obj o = dec(&u->upd[i]);
        if (o.id == ctor && (!pred || pred(&o, arg))) r = o;
    }
    return r;
}

typedef struct status_is {
    const uint8_t *user;
    int status;
} status_is;

static bool pred_status(const pt_tl_obj *o, const void *arg)
{
    const status_is *w = arg;
    return memcmp(o->u.updates_userStatus.user_id, w->user, 16) == 0 &&
           (w->status < 0 || o->u.updates_userStatus.status == w->status);
}

/* Waits until `to` is told that `about` has status st. */
static void expect_status_at(user *to, const user *about, int st, int line)
{
    status_is w = {about->user_id, st};
    if (wait_updates(to, PT_TL_UPDATES_USERSTATUS_ID, pred_status, &w, 1, 3000) < 1)
        fail_msg("line %d: no updates.userStatus with status %d", line, st);
    clear_updates(to);
}
#define expect_status(to, about, st) expect_status_at((to), (about), (st), __LINE__)

static bool pred_contact(const pt_tl_obj *o, const void *arg)
{
    return o->u.updates_contact.action == *(const int *)arg;
}

/* ---- calls ------------------------------------------------------------------------------------- */

static int set_status(user *u, int st)
{
    int rc;
    CALL(rc, u, users_setStatus, q.status = st);
    return rc;
}

static void sync_queue(user *u)
{
    int rc;
    CALL(rc, u, messages_sync, (void)q);
    assert_int_equal(rc, 0);
}

/* messages.sync, then messages.received for everything delivered: an empty queue. */
static void sync_and_confirm(user *u)
{
    sync_queue(u);
    pump(u, 50);
    int64_t ids[MAX_BLOBS];
    uint32_t n = 0;
    for (size_t i = 0; i < u->nupd; i++) {
        pt_tl_obj o = dec(&u->upd[i]);
        switch (o.id) {
        case PT_TL_UPDATES_NEWMESSAGE_ID: ids[n++] = o.u.updates_newMessage.server_id; break;
        case PT_TL_UPDATES_NEWGROUPMESSAGE_ID: ids[n++] = o.u.updates_newGroupMessage.server_id; break;
        case PT_TL_UPDATES_RECEIPT_ID: ids[n++] = o.u.updates_receipt.server_id; break;
        case PT_TL_UPDATES_CONTACT_ID: ids[n++] = o.u.updates_contact.server_id; break;
        case PT_TL_UPDATES_GROUPEVENT_ID: ids[n++] = o.u.updates_groupEvent.server_id; break;
        default: break;
        }
    }
    int rc;
    CALL(rc, u, messages_received, q.server_ids = (pt_tl_vec_long){n, ids});
    assert_int_equal(rc, 0);
    clear_updates(u);
}

static int request(user *u, const user *to, const char *note, const char *bundle)
{
    int rc;
    CALL(rc, u, contacts_request, memcpy(q.to, to->user_id, 16); q.note = str(note);
         q.bundle = str(bundle));
    return rc;
}

static int accept_req(user *u, const user *peer, const char *bundle)
{
    int rc;
    CALL(rc, u, contacts_accept, memcpy(q.peer, peer->user_id, 16); q.bundle = str(bundle));
    return rc;
}

static int deny(user *u, const user *peer)
{
    int rc;
    CALL(rc, u, contacts_deny, memcpy(q.peer, peer->user_id, 16));
    return rc;
}

static int remove_contact(user *u, const user *peer)
{
    int rc;
    CALL(rc, u, contacts_remove, memcpy(q.peer, peer->user_id, 16));
    return rc;
}

static int block(user *u, const user *peer)
{
    int rc;
    CALL(rc, u, contacts_block, memcpy(q.peer, peer->user_id, 16));
    return rc;
}

/* The state (and in *status the presence) of peer in u's contacts; 0 when absent. */
static int contact_state(user *u, const user *peer, int *status)
{
    int rc;
    CALL(rc, u, contacts_get, q.limit = 100);
    assert_int_equal(rc, 0);
    pt_tl_obj o = dec(&u->last);
    assert_int_equal(o.id, PT_TL_CONTACTS_LIST_ID);
    for (uint32_t i = 0; i < o.u.contacts_list.contacts.n; i++) {
        const pt_tl_contacts_contact *k = &o.u.contacts_list.contacts.items[i];
        if (memcmp(k->user_id, peer->user_id, 16) != 0) continue;
        if (status) *status = k->status;
        return k->state;
    }
    return 0;
}

static void make_friends(user *a, user *b)
{
    assert_int_equal(request(a, b, "hello", "bundle-a"), 0);
    assert_int_equal(accept_req(b, a, "bundle-b"), 0);
    assert_int_equal(contact_state(a, b, NULL), 3);
    clear_updates(a);
    clear_updates(b);
}

static int send_msg(user *u, const user *to, const char *text, int64_t *server_id)
{
    int rc;
    CALL(rc, u, messages_send, memcpy(q.to, to->user_id, 16); q.envelope = str(text));
    if (rc == 0 && server_id) *server_id = dec(&u->last).u.messages_sent.server_id;
    return rc;
}

static int send_receipt(user *u, const user *to, int64_t about, int status, const char *text)
{
    int rc;
    CALL(rc, u, messages_sendReceipt, memcpy(q.to, to->user_id, 16); q.about_server_id = about;
         q.status = status; q.envelope = str(text));
    return rc;
}

/* Visible online users as u sees them through users.list pages of `limit`. */
static size_t list_all(user *u, int limit, uint8_t (*ids)[16], int *status, size_t max, int *pages)
{
    uint8_t after[16] = {0};
    size_t n = 0;
    *pages = 0;
    for (int guard = 0; guard < 100; guard++) {
        int rc;
        CALL(rc, u, users_list, memcpy(q.after, after, 16); q.limit = limit);
        assert_int_equal(rc, 0);
        pt_tl_obj o = dec(&u->last);
        assert_int_equal(o.id, PT_TL_USERS_ONLINELIST_ID);
        (*pages)++;
        const pt_tl_vec_users_onlineUser *v = &o.u.users_onlineList.users;
        assert_true(v->n <= (uint32_t)limit && v->n <= 100);
        for (uint32_t i = 0; i < v->n; i++) {
            assert_true(n < max);
            if (n) assert_true(memcmp(ids[n - 1], v->items[i].user_id, 16) < 0); /* sorted, no repeats */
            memcpy(ids[n], v->items[i].user_id, 16);
            status[n++] = v->items[i].status;
        }
        if (!o.u.users_onlineList.more) return n;
        assert_true(v->n > 0);
        memcpy(after, v->items[v->n - 1].user_id, 16);
    }
    fail_msg("users.list never ended");
    return n;
}

static int find_id(uint8_t (*ids)[16], size_t n, const uint8_t id[16])
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(ids[i], id, 16) == 0) return (int)i;
    return -1;
}

/* ---- presence ----------------------------------------------------------------------------------- */

static void test_presence(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    uint16_t port = srv.port;
    char dir[256];
    snprintf(dir, sizeof dir, "%s", srv.dir);
    user a, b, c;
    user_up(&a, "alice", port);
    user_up(&b, "bob", port);
    user_up(&c, "carol", port);
    assert_int_equal(request(&a, &b, "hi", "ka"), 0);
    assert_int_equal(accept_req(&b, &a, "kb"), 0);
    /* new friends learn each other's presence at once */
    expect_status(&a, &b, 1);
    expect_status(&b, &a, 1);

    assert_int_equal(set_status(&b, 2), 0); /* busy */
    expect_status(&a, &b, 2);
    assert_int_equal(set_status(&b, 3), 0); /* away */
    expect_status(&a, &b, 3);
    uint8_t ids[16][16];
    int st[16], pages;
    size_t n = list_all(&c, 10, ids, st, 16, &pages);
    assert_int_equal(n, 3);
    int i = find_id(ids, n, b.user_id);
    assert_true(i >= 0);
    assert_int_equal(st[i], 3);

    /* invisible: offline to friends, absent from users.list */
    assert_int_equal(set_status(&b, 4), 0);
    expect_status(&a, &b, 0);
    n = list_all(&c, 10, ids, st, 16, &pages);
    assert_int_equal(n, 2);
    assert_int_equal(find_id(ids, n, b.user_id), -1);
    int seen = -1;
    assert_int_equal(contact_state(&a, &b, &seen), 3);
    assert_int_equal(seen, 0);
    /* an invisible user coming and going says nothing */
    pt_client_drop(b.c);
    user_connect(&b, port);
    status_is any_b = {b.user_id, -1};
    assert_int_equal(wait_updates(&a, PT_TL_UPDATES_USERSTATUS_ID, pred_status, &any_b, 1, 300), 0);
    assert_int_equal(set_status(&b, 1), 0);
    expect_status(&a, &b, 1);
    assert_int_equal(contact_state(&a, &b, &seen), 3);
    assert_int_equal(seen, 1);
    assert_int_equal(set_status(&b, 9), 400);

    /* the last connection closing is going offline; the status is kept */
    assert_int_equal(set_status(&b, 3), 0);
    expect_status(&a, &b, 3);
    pt_client_drop(b.c);
    expect_status(&a, &b, 0);
    user_connect(&b, port);
    expect_status(&a, &b, 3);

    /* and survives a restart */
    assert_int_equal(pt_test_server_stop(&srv), 0);
    pt_test_server_start(&srv, dir, port, NULL);
    user_connect(&a, port);
    user_connect(&c, port);
    sync_queue(&a); /* pushes need a session: clients sync when they connect */
    sync_queue(&c);
    clear_updates(&a);
    user_connect(&b, port);
    expect_status(&a, &b, 3); /* online from the handshake on, before any request */
    /* a friend going offline is told too, in the other direction */
    sync_queue(&b);
    clear_updates(&b);
    pt_client_drop(a.c);
    expect_status(&b, &a, 0);

    /* carol, no friend of either, never heard a thing */
    pump(&c, 200);
    assert_int_equal(count_updates(&c, PT_TL_UPDATES_USERSTATUS_ID, NULL, NULL), 0);
    user_free(&a);
    user_free(&b);
    user_free(&c);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

static void test_users_list_paging(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    enum { N = 8 };
    user u[N];
    char name[16];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "user%d", i);
        user_up(&u[i], name, srv.port);
    }
    /* u6 invisible, u7 offline: six visible */
    assert_int_equal(set_status(&u[6], 4), 0);
    assert_int_equal(set_status(&u[5], 2), 0);
    pt_client_drop(u[7].c);
    uint8_t ids[N][16];
    int st[N], pages = 0;
    size_t n = 0;
    for (int t = 0; t < 100; t++) { /* until the server has seen u7 go */
        n = list_all(&u[0], 100, ids, st, N, &pages);
        if (n == 6) break;
        pump(&u[0], 20);
    }
    assert_int_equal(n, 6);
    assert_int_equal(pages, 1);
    for (int i = 0; i < 6; i++) {
        int k = find_id(ids, n, u[i].user_id);
        assert_true(k >= 0);
        assert_int_equal(st[k], i == 5 ? 2 : 1);
    }
    assert_int_equal(find_id(ids, n, u[6].user_id), -1);
    assert_int_equal(find_id(ids, n, u[7].user_id), -1);
    /* pages of 4 and of 1: the same users, in order, no repeats */
    uint8_t ids2[N][16];
    assert_int_equal(list_all(&u[1], 4, ids2, st, N, &pages), 6);
    assert_int_equal(pages, 2);
    assert_memory_equal(ids, ids2, 6 * 16);
    assert_int_equal(list_all(&u[2], 1, ids2, st, N, &pages), 6);
    assert_int_equal(pages, 6);
    assert_memory_equal(ids, ids2, 6 * 16);
    /* limits: a huge one is capped, zero is refused, unbound devices are refused */
    int rc;
    CALL(rc, &u[0], users_list, q.limit = 1000000);
    assert_int_equal(rc, 0);
    assert_int_equal(dec(&u[0].last).u.users_onlineList.users.n, 6);
    CALL(rc, &u[0], users_list, q.limit = 0);
    assert_int_equal(rc, 400);
    user x;
    user_new(&x, "x");
    user_connect(&x, srv.port);
    CALL(rc, &x, users_list, q.limit = 10);
    assert_int_equal(rc, 401);
    user_free(&x);
    for (int i = 0; i < N; i++) user_free(&u[i]);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* ---- contacts --------------------------------------------------------------------------------- */

static void test_friend_flow(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    user a, b, c;
    user_up(&a, "alice", srv.port);
    user_up(&b, "bob", srv.port);
    user_up(&c, "carol", srv.port);
    user nobody; /* a user id nobody has */
    memset(&nobody, 0, sizeof nobody);
    nobody.user_id[0] = 7;

    /* a request to an offline user waits for it */
    pt_client_drop(b.c);
    assert_int_equal(request(&a, &b, "it's alice", "alice-prekey-bundle"), 0);
    assert_int_equal(contact_state(&a, &b, NULL), 1);
    user_connect(&b, srv.port);
    assert_int_equal(count_updates(&b, PT_TL_UPDATES_CONTACT_ID, NULL, NULL), 0);
    sync_queue(&b);
    int act = 1;
    assert_int_equal(wait_updates(&b, PT_TL_UPDATES_CONTACT_ID, pred_contact, &act, 1, 1000), 1);
    pt_tl_obj o = last_update(&b, PT_TL_UPDATES_CONTACT_ID, pred_contact, &act);
    assert_memory_equal(o.u.updates_contact.from, a.user_id, 16);
    assert_int_equal(o.u.updates_contact.note.len, 10);
    assert_memory_equal(o.u.updates_contact.note.data, "it's alice", 10);
    assert_int_equal(o.u.updates_contact.bundle.len, 19);
    assert_memory_equal(o.u.updates_contact.bundle.data, "alice-prekey-bundle", 19);
    assert_int_equal(contact_state(&b, &a, NULL), 2);

    /* accepting sends bob's bundle back, live */
    assert_int_equal(accept_req(&b, &a, "bob-prekey-bundle"), 0);
    act = 2;
    assert_int_equal(wait_updates(&a, PT_TL_UPDATES_CONTACT_ID, pred_contact, &act, 1, 3000), 1);
    o = last_update(&a, PT_TL_UPDATES_CONTACT_ID, pred_contact, &act);
    assert_memory_equal(o.u.updates_contact.from, b.user_id, 16);
    assert_int_equal(o.u.updates_contact.bundle.len, 17);
    assert_memory_equal(o.u.updates_contact.bundle.data, "bob-prekey-bundle", 17);
    assert_int_equal(contact_state(&a, &b, NULL), 3);
    assert_int_equal(contact_state(&b, &a, NULL), 3);
    assert_int_equal(request(&a, &b, "", ""), 409);
    assert_string_equal(a.err_msg, "ALREADY_FRIENDS");
    assert_int_equal(accept_req(&b, &a, "x"), 404); /* nothing pending any more */

    /* refusals */
    assert_int_equal(request(&a, &a, "", ""), 400);
    assert_int_equal(request(&a, &nobody, "", ""), 404);
    char big[PT_SERVER_NOTE_MAX + 2];
    memset(big, 'n', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(request(&a, &c, big, ""), 413);

    /* deny */
    assert_int_equal(request(&c, &a, "carol here", "carol-bundle"), 0);
    assert_int_equal(request(&a, &c, "", ""), 409); /* c asked first: accept or deny */
    assert_string_equal(a.err_msg, "PEER_REQUESTED_YOU");
    assert_int_equal(deny(&a, &c), 0);
    act = 3;
    assert_int_equal(wait_updates(&c, PT_TL_UPDATES_CONTACT_ID, pred_contact, &act, 1, 3000), 1);
    assert_int_equal(accept_req(&a, &c, "late"), 404);
    assert_int_equal(contact_state(&c, &a, NULL), 0);
    assert_int_equal(contact_state(&a, &c, NULL), 0);
    assert_int_equal(deny(&a, &c), 404);

    /* remove */
    assert_int_equal(remove_contact(&a, &b), 0);
    act = 4;
    assert_int_equal(wait_updates(&b, PT_TL_UPDATES_CONTACT_ID, pred_contact, &act, 1, 3000), 1);
    assert_int_equal(contact_state(&a, &b, NULL), 0);
    assert_int_equal(contact_state(&b, &a, NULL), 0);
    assert_int_equal(remove_contact(&a, &b), 404);
    /* no longer friends: no presence either */
    clear_updates(&a);
    assert_int_equal(set_status(&b, 2), 0);
    status_is any_b = {b.user_id, -1};
    assert_int_equal(wait_updates(&a, PT_TL_UPDATES_USERSTATUS_ID, pred_status, &any_b, 1, 300), 0);
    user_free(&a);
    user_free(&b);
    user_free(&c);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

static int fetch(user *u, const uint8_t user_id[16], const uint8_t *device);
static int create_group(user *u, uint8_t gid[16]);
static int group_user_op(user *u, uint32_t ctor, const uint8_t gid[16], const user *target);

static void test_block(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    user a, b;
    user_up(&a, "alice", srv.port);
    user_up(&b, "bob", srv.port);
    make_friends(&a, &b);
    assert_int_equal(send_msg(&b, &a, "before", NULL), 0);
    sync_and_confirm(&a);
    assert_int_equal(block(&a, &b), 0);
    assert_int_equal(contact_state(&a, &b, NULL), 4);
    assert_int_equal(contact_state(&b, &a, NULL), 0);
    /* bob can send alice nothing */
    assert_int_equal(send_msg(&b, &a, "after", NULL), 403);
    assert_string_equal(b.err_msg, "BLOCKED");
    assert_int_equal(send_receipt(&b, &a, 1, 6, ""), 403);
    assert_int_equal(request(&b, &a, "please", "bundle"), 403);
    assert_int_equal(fetch(&b, a.user_id, NULL), 403);
    uint8_t gid[16];
    assert_int_equal(create_group(&b, gid), 0);
    assert_int_equal(group_user_op(&b, PT_TL_GROUPS_INVITE_ID, gid, &a), 403);
    /* nothing reached alice after the block */
    clear_updates(&a);
    sync_queue(&a);
    pump(&a, 100);
    for (size_t i = 0; i < a.nupd; i++) {
        pt_tl_obj o = dec(&a.upd[i]);
        assert_true(o.id != PT_TL_UPDATES_NEWMESSAGE_ID && o.id != PT_TL_UPDATES_CONTACT_ID &&
                    o.id != PT_TL_UPDATES_RECEIPT_ID && o.id != PT_TL_UPDATES_GROUPEVENT_ID);
    }
    /* nor presence: bob is no friend any more */
    clear_updates(&b);
    assert_int_equal(set_status(&a, 2), 0);
    status_is any_a = {a.user_id, -1};
    assert_int_equal(wait_updates(&b, PT_TL_UPDATES_USERSTATUS_ID, pred_status, &any_a, 1, 300), 0);
    /* alice must lift the block before asking bob herself */
    assert_int_equal(request(&a, &b, "", ""), 409);
    assert_string_equal(a.err_msg, "PEER_BLOCKED");
    assert_int_equal(remove_contact(&a, &b), 0); /* unblock */
    assert_int_equal(contact_state(&a, &b, NULL), 0);
    assert_int_equal(send_msg(&b, &a, "again", NULL), 0);
    assert_int_equal(request(&b, &a, "friends again?", "bundle"), 0);
    user_free(&a);
    user_free(&b);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* ---- prekeys ------------------------------------------------------------------------------------ */

/* Uploads n one-time keys with ids first.. (and a signed prekey when spk_id >= 0,
 * signed with `signer`'s identity key). */
static int upload(user *u, int spk_id, const user *signer, int first, int n)
{
    static uint8_t keys[128][32];
    pt_tl_prekeys_key otk[128];
    assert_true(n <= 128);
    for (int i = 0; i < n; i++) {
        pt_random(keys[i], 32);
        otk[i] = (pt_tl_prekeys_key){.key_id = first + i, .key = {keys[i], 32}};
    }
    uint8_t spk[32], sig[64], msg[17 + 32 + 4 + 32];
    pt_random(spk, 32);
    memcpy(msg, "PT1 signed prekey", 17);
    memcpy(msg + 17, u->device, 32);
    pt_put_u32le(msg + 49, (uint32_t)spk_id);
    memcpy(msg + 53, spk, 32);
    if (spk_id >= 0) assert_int_equal(pt_ed25519_sign(sig, msg, sizeof msg, signer->id_sk), 0);
    int rc;
    CALL(rc, u, prekeys_upload, q.one_time_keys = (pt_tl_vec_prekeys_key){(uint32_t)n, otk};
         if (spk_id >= 0) {
             q.signed_key_id = spk_id;
             q.signed_key = (pt_tl_bytes){spk, 32};
             q.signature = (pt_tl_bytes){sig, 64};
         });
    return rc;
}

static uint64_t fetch_async(user *u, const uint8_t user_id[16], const uint8_t *device)
{
    pt_tl_prekeys_fetch q;
    memset(&q, 0, sizeof q);
    memcpy(q.user_id, user_id, 16);
    if (device) memcpy(q.device, device, 32);
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_tl_prekeys_fetch_encode(&b, &q), 0);
    uint64_t id = send_body(u, &b);
    pt_buf_free(&b);
    return id;
}

static int fetch(user *u, const uint8_t user_id[16], const uint8_t *device)
{
    return await(u, fetch_async(u, user_id, device));
}

/* Checks one bundle of owner's device and returns its one-time key id, or -1. */
static int check_bundle(const pt_tl_obj *o, const user *owner)
{
    assert_int_equal(o->id, PT_TL_PREKEYS_BUNDLES_ID);
    assert_memory_equal(o->u.prekeys_bundles.identity_key, owner->id_pk, 32);
    assert_int_equal(o->u.prekeys_bundles.bundles.n, 1);
    const pt_tl_prekeys_bundle *b = &o->u.prekeys_bundles.bundles.items[0];
    assert_memory_equal(b->device, owner->device, 32);
    /* what the client checks: the signed prekey is the owner's */
    uint8_t msg[17 + 32 + 4 + 32];
    assert_int_equal(b->signed_key.len, 32);
    memcpy(msg, "PT1 signed prekey", 17);
    memcpy(msg + 17, b->device, 32);
    pt_put_u32le(msg + 49, (uint32_t)b->signed_key_id);
    memcpy(msg + 53, b->signed_key.data, 32);
    assert_int_equal(b->signature.len, 64);
    assert_int_equal(pt_ed25519_verify(b->signature.data, msg, sizeof msg, owner->id_pk), 0);
    if (b->one_time_key.len == 0) return -1;
    assert_int_equal(b->one_time_key.len, 32);
    return b->one_time_key_id;
}

static bool pred_any(const pt_tl_obj *o, const void *arg)
{
    (void)o;
    (void)arg;
    return true;
}

static void test_prekeys(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    user d, f, eve;
    user_up(&d, "dana", srv.port);
    user_up(&f, "frank", srv.port);
    user_up(&eve, "eve", srv.port);
    assert_int_equal(fetch(&f, d.user_id, NULL), 404); /* nothing published yet */
    assert_string_equal(f.err_msg, "NO_PREKEYS");
    /* the signed prekey must be signed by the device's user */
    assert_int_equal(upload(&d, 7, &eve, 0, 0), 403);
    assert_string_equal(d.err_msg, "PREKEY_SIGNATURE_INVALID");
    assert_int_equal(upload(&d, 7, &d, 100, 101), 413);
    enum { N = 12 };
    assert_int_equal(upload(&d, 7, &d, 100, N), 0);
    assert_int_equal(dec(&d.last).u.prekeys_count.one_time_keys, N);
    assert_int_equal(upload(&d, -1, NULL, 100, 1), 0); /* an id already there is ignored */
    assert_int_equal(dec(&d.last).u.prekeys_count.one_time_keys, N);

    /* N fetches get N distinct keys, then the signed prekey alone */
    bool seen[N] = {0};
    for (int i = 0; i < N + 1; i++) {
        assert_int_equal(fetch(&f, d.user_id, NULL), 0);
        pt_tl_obj o = dec(&f.last);
        int id = check_bundle(&o, &d);
        if (i == N) {
            assert_int_equal(id, -1);
            break;
        }
        assert_true(id >= 100 && id < 100 + N);
        assert_false(seen[id - 100]);
        seen[id - 100] = true;
    }
    /* an upload sent again after its keys were handed out (its answer was lost) puts
     * none back: ids only grow */
    assert_int_equal(upload(&d, -1, NULL, 100, N), 0);
    assert_int_equal(dec(&d.last).u.prekeys_count.one_time_keys, 0);
    assert_int_equal(fetch(&f, d.user_id, d.device), 0); /* by device too */
    pt_tl_obj o = dec(&f.last);
    assert_int_equal(check_bundle(&o, &d), -1);
    uint8_t other[32] = {9};
    assert_int_equal(fetch(&f, d.user_id, other), 404);
    assert_string_equal(f.err_msg, "DEVICE_NOT_FOUND");
    /* dana was asked to top up from the fetch that left 9 */
    assert_true(wait_updates(&d, PT_TL_UPDATES_PREKEYSLOW_ID, pred_any, NULL, N - 1, 3000) >= N - 1);
    int first = -1;
    for (size_t i = 0; i < d.nupd && first < 0; i++) {
        pt_tl_obj u = dec(&d.upd[i]);
        if (u.id == PT_TL_UPDATES_PREKEYSLOW_ID) first = u.u.updates_prekeysLow.one_time_keys;
    }
    assert_int_equal(first, PT_SERVER_PREKEY_LOW - 1);
    assert_int_equal(last_update(&d, PT_TL_UPDATES_PREKEYSLOW_ID, NULL, NULL).u.updates_prekeysLow.one_time_keys, 0);

    /* many clients fetching at once never share a key */
    enum { K = 40, CLIENTS = 8, EACH = 7 };
    assert_int_equal(upload(&d, -1, NULL, 1000, K), 0);
    user fs[CLIENTS];
    uint64_t ids[CLIENTS][EACH];
    char name[16];
    for (int i = 0; i < CLIENTS; i++) {
        snprintf(name, sizeof name, "fetcher%d", i);
        user_up(&fs[i], name, srv.port);
    }
    for (int j = 0; j < EACH; j++) /* all queued before any answer is read */
        for (int i = 0; i < CLIENTS; i++) ids[i][j] = fetch_async(&fs[i], d.user_id, NULL);
    for (int i = 0; i < CLIENTS; i++) pump(&fs[i], 1); /* all on the wire at once */
    int got[K] = {0}, with = 0, without = 0;
    for (int i = 0; i < CLIENTS; i++) {
        for (int j = 0; j < EACH; j++) {
            assert_int_equal(await(&fs[i], ids[i][j]), 0);
            pt_tl_obj r = dec(&fs[i].last);
            int id = check_bundle(&r, &d);
            if (id < 0) {
                without++;
                continue;
            }
            assert_true(id >= 1000 && id < 1000 + K);
            got[id - 1000]++;
            with++;
        }
    }
    assert_int_equal(with, K);
    assert_int_equal(without, CLIENTS * EACH - K);
    for (int k = 0; k < K; k++) assert_int_equal(got[k], 1);
    for (int i = 0; i < CLIENTS; i++) user_free(&fs[i]);
    user_free(&d);
    user_free(&f);
    user_free(&eve);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* ---- groups ----------------------------------------------------------------------------------------- */

static int create_group(user *u, uint8_t gid[16])
{
    int rc;
    CALL(rc, u, groups_create, (void)q);
    if (rc == 0) memcpy(gid, dec(&u->last).u.groups_created.group_id, 16);
    return rc;
}

static int group_user_op(user *u, uint32_t ctor, const uint8_t gid[16], const user *target)
{
    int rc = -1;
    switch (ctor) {
    case PT_TL_GROUPS_INVITE_ID:
        CALL(rc, u, groups_invite, memcpy(q.group_id, gid, 16); memcpy(q.user_id, target->user_id, 16));
        break;
    case PT_TL_GROUPS_KICK_ID:
        CALL(rc, u, groups_kick, memcpy(q.group_id, gid, 16); memcpy(q.user_id, target->user_id, 16));
        break;
    case PT_TL_GROUPS_JOIN_ID: CALL(rc, u, groups_join, memcpy(q.group_id, gid, 16)); break;
    case PT_TL_GROUPS_LEAVE_ID: CALL(rc, u, groups_leave, memcpy(q.group_id, gid, 16)); break;
    default: fail();
    }
    return rc;
}

static int set_admin(user *u, const uint8_t gid[16], const user *target, bool admin)
{
    int rc;
    CALL(rc, u, groups_setAdmin, memcpy(q.group_id, gid, 16); memcpy(q.user_id, target->user_id, 16);
         q.admin = admin);
    return rc;
}

static int send_group(user *u, const uint8_t gid[16], const char *text, int64_t *server_id)
{
    int rc;
    CALL(rc, u, messages_sendGroup, memcpy(q.group_id, gid, 16); q.envelope = str(text));
    if (rc == 0 && server_id) *server_id = dec(&u->last).u.messages_sent.server_id;
    return rc;
}

static bool pred_server_id(const pt_tl_obj *o, const void *arg)
{
    return o->u.updates_newGroupMessage.server_id == *(const int64_t *)arg;
}

static bool pred_event(const pt_tl_obj *o, const void *arg)
{
    return o->u.updates_groupEvent.event == *(const int *)arg;
}

static int64_t db_count(const char *dir, const char *sql, int64_t arg)
{
    char path[300];
    snprintf(path, sizeof path, "%s/packtrack.db", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_bind_parameter_count(st) > 0) sqlite3_bind_int64(st, 1, arg);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void test_groups(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    user a, b1, b2, c, d;
    user_up(&a, "alice", srv.port);
    user_up(&b1, "bob", srv.port);
    device_new(&b2, &b1, "bob2"); /* bob's second device */
    user_connect(&b2, srv.port);
    assert_int_equal(bind(&b2, "bob"), 0);
    user_up(&c, "carol", srv.port);
    user_up(&d, "dave", srv.port);

    uint8_t gid[16];
    assert_int_equal(create_group(&a, gid), 0);
    assert_int_equal(group_user_op(&a, PT_TL_GROUPS_INVITE_ID, gid, &b1), 0);
    assert_int_equal(group_user_op(&a, PT_TL_GROUPS_INVITE_ID, gid, &c), 0);
    int ev = 1;
    assert_int_equal(wait_updates(&b2, PT_TL_UPDATES_GROUPEVENT_ID, pred_event, &ev, 1, 3000), 1);
    assert_int_equal(group_user_op(&d, PT_TL_GROUPS_JOIN_ID, gid, NULL), 403);
    assert_string_equal(d.err_msg, "NOT_INVITED");
    assert_int_equal(group_user_op(&b1, PT_TL_GROUPS_JOIN_ID, gid, NULL), 0);
    assert_int_equal(group_user_op(&c, PT_TL_GROUPS_JOIN_ID, gid, NULL), 0);
    assert_int_equal(group_user_op(&c, PT_TL_GROUPS_JOIN_ID, gid, NULL), 409);
    assert_int_equal(group_user_op(&b1, PT_TL_GROUPS_INVITE_ID, gid, &d), 403);
    assert_string_equal(b1.err_msg, "NOT_ADMIN");
    ev = 2; /* alice heard both joins */
    assert_int_equal(wait_updates(&a, PT_TL_UPDATES_GROUPEVENT_ID, pred_event, &ev, 2, 3000), 2);

    int rc;
    CALL(rc, &a, groups_getMembers, memcpy(q.group_id, gid, 16));
    assert_int_equal(rc, 0);
    pt_tl_obj o = dec(&a.last);
    assert_int_equal(o.u.groups_members.members.n, 3);
    for (uint32_t i = 0; i < 3; i++) {
        const pt_tl_groups_member *m = &o.u.groups_members.members.items[i];
        assert_int_equal(m->role, memcmp(m->user_id, a.user_id, 16) == 0 ? 2 : 0);
    }
    CALL(rc, &d, groups_getMembers, memcpy(q.group_id, gid, 16));
    assert_int_equal(rc, 403);

    /* one message, stored once, delivered to every member device but the sender's */
    int64_t s1, s2;
    assert_int_equal(send_group(&a, gid, "to everyone", &s1), 0);
    user *members[] = {&b1, &b2, &c};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(wait_updates(members[i], PT_TL_UPDATES_NEWGROUPMESSAGE_ID, pred_server_id, &s1, 1,
                                      3000), 1);
        o = last_update(members[i], PT_TL_UPDATES_NEWGROUPMESSAGE_ID, pred_server_id, &s1);
        assert_memory_equal(o.u.updates_newGroupMessage.group_id, gid, 16);
        assert_memory_equal(o.u.updates_newGroupMessage.from, a.user_id, 16);
        assert_memory_equal(o.u.updates_newGroupMessage.envelope.data, "to everyone", 11);
    }
    assert_int_equal(send_group(&d, gid, "let me in", NULL), 403);
    assert_string_equal(d.err_msg, "NOT_A_MEMBER");

    /* a member who blocked the sender gets nothing from him in the group; the others do */
    assert_int_equal(block(&c, &b1), 0);
    int64_t s3;
    assert_int_equal(send_group(&b1, gid, "from bob", &s3), 0);
    assert_int_equal(wait_updates(&a, PT_TL_UPDATES_NEWGROUPMESSAGE_ID, pred_server_id, &s3, 1, 3000), 1);
    sync_queue(&c);
    assert_int_equal(wait_updates(&c, PT_TL_UPDATES_NEWGROUPMESSAGE_ID, pred_server_id, &s3, 1, 300), 0);
    assert_int_equal(remove_contact(&c, &b1), 0); /* unblocked */

    /* an admin kicks a member, not the creator */
    assert_int_equal(set_admin(&b1, gid, &c, true), 403);
    assert_int_equal(set_admin(&a, gid, &b1, true), 0);
    assert_int_equal(group_user_op(&b1, PT_TL_GROUPS_KICK_ID, gid, &a), 403);
    assert_int_equal(group_user_op(&b1, PT_TL_GROUPS_KICK_ID, gid, &c), 0);
    ev = 4;
    assert_int_equal(wait_updates(&c, PT_TL_UPDATES_GROUPEVENT_ID, pred_event, &ev, 1, 3000), 1);
    assert_int_equal(send_group(&c, gid, "still here?", NULL), 403);
    assert_int_equal(send_group(&a, gid, "without carol", &s2), 0);
    assert_int_equal(wait_updates(&b1, PT_TL_UPDATES_NEWGROUPMESSAGE_ID, pred_server_id, &s2, 1, 3000), 1);
    assert_int_equal(wait_updates(&b2, PT_TL_UPDATES_NEWGROUPMESSAGE_ID, pred_server_id, &s2, 1, 3000), 1);
    sync_queue(&c);
    assert_int_equal(wait_updates(&c, PT_TL_UPDATES_NEWGROUPMESSAGE_ID, pred_server_id, &s2, 1, 300), 0);

    /* leaving */
    assert_int_equal(group_user_op(&b2, PT_TL_GROUPS_LEAVE_ID, gid, NULL), 0);
    ev = 3;
    assert_int_equal(wait_updates(&a, PT_TL_UPDATES_GROUPEVENT_ID, pred_event, &ev, 1, 3000), 1);
    assert_int_equal(wait_updates(&b1, PT_TL_UPDATES_GROUPEVENT_ID, pred_event, &ev, 1, 3000), 1);
    assert_int_equal(send_group(&b1, gid, "gone", NULL), 403);
    assert_int_equal(group_user_op(&b1, PT_TL_GROUPS_LEAVE_ID, gid, NULL), 403);

    /* the store: one row per group message, one queue row per recipient device */
    assert_int_equal(pt_test_server_stop(&srv), 0);
    assert_int_equal(db_count(srv.dir, "SELECT count(*) FROM messages WHERE kind = 1", 0), 3);
    assert_int_equal(db_count(srv.dir, "SELECT count(*) FROM queue WHERE server_id = ?", s1), 3);
    assert_int_equal(db_count(srv.dir, "SELECT count(*) FROM queue WHERE server_id = ?", s2), 2);
    assert_int_equal(db_count(srv.dir, "SELECT refs FROM messages WHERE server_id = ?", s1), 3);
    user_free(&a);
    user_free(&b1);
    user_free(&b2);
    user_free(&c);
    user_free(&d);
}

/* ---- receipts ----------------------------------------------------------------------------------------- */

static bool pred_receipt(const pt_tl_obj *o, const void *arg)
{
    return o->u.updates_receipt.status == *(const int *)arg;
}

static void test_receipts(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    user a, b;
    user_up(&a, "alice", srv.port);
    user_up(&b, "bob", srv.port);
    int64_t sid;
    assert_int_equal(send_msg(&a, &b, "ciphertext", &sid), 0);
    /* every S2WMP ACK code (0 accepted .. 4 could not decrypt), delivered, read */
    char text[16];
    for (int stat = 0; stat <= 6; stat++) {
        snprintf(text, sizeof text, "ack-%d", stat);
        assert_int_equal(send_receipt(&b, &a, sid, stat, text), 0);
    }
    for (int stat = 0; stat <= 6; stat++) {
        assert_int_equal(wait_updates(&a, PT_TL_UPDATES_RECEIPT_ID, pred_receipt, &stat, 1, 3000), 1);
        pt_tl_obj o = last_update(&a, PT_TL_UPDATES_RECEIPT_ID, pred_receipt, &stat);
        assert_memory_equal(o.u.updates_receipt.from, b.user_id, 16);
        assert_memory_equal(o.u.updates_receipt.from_device, b.device, 32);
        assert_int_equal(o.u.updates_receipt.about_server_id, sid);
        snprintf(text, sizeof text, "ack-%d", stat);
        assert_int_equal(o.u.updates_receipt.envelope.len, strlen(text));
        assert_memory_equal(o.u.updates_receipt.envelope.data, text, strlen(text));
    }
    /* to an offline sender: waits in the queue */
    sync_and_confirm(&a);
    pt_client_drop(a.c);
    assert_int_equal(send_receipt(&b, &a, sid, 6, "read later"), 0);
    user_connect(&a, srv.port);
    sync_queue(&a);
    int six = 6; /* possibly twice: resent on the resumed session and from the queue */
    assert_true(wait_updates(&a, PT_TL_UPDATES_RECEIPT_ID, pred_receipt, &six, 1, 1000) >= 1);
    pt_tl_obj o = last_update(&a, PT_TL_UPDATES_RECEIPT_ID, pred_receipt, &six);
    assert_memory_equal(o.u.updates_receipt.envelope.data, "read later", 10);
    /* refusals */
    assert_int_equal(send_receipt(&b, &a, sid, 256, ""), 400);
    assert_int_equal(send_receipt(&b, &a, sid, -1, ""), 400);
    user nobody;
    memset(&nobody, 0, sizeof nobody);
    nobody.user_id[0] = 3;
    assert_int_equal(send_receipt(&b, &nobody, sid, 0, ""), 404);
    char big[PT_SERVER_RECEIPT_MAX + 2];
    memset(big, 'r', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(send_receipt(&b, &a, sid, 0, big), 413);
    user_free(&a);
    user_free(&b);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* The signed device list, device links and revocation (PROTOCOL §6.8). */
static void test_devices(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    user d1, d2, f, fresh;
    user_up(&d1, "dora", srv.port);
    device_new(&d2, &d1, "dora2");
    user_connect(&d2, srv.port);
    assert_int_equal(bind(&d2, "dora"), 0);
    user_up(&f, "finn", srv.port);
    int rc;
    CALL(rc, &f, prekeys_list, memcpy(q.user_id, d1.user_id, 16));
    assert_int_equal(rc, 0);
    assert_int_equal(dec(&f.last).u.prekeys_bundles.bundles.n, 0); /* nothing signed yet */
    assert_int_equal(upload(&d1, 1, &d1, 10, 3), 0);
    assert_int_equal(upload(&d2, 1, &d1, 10, 3), 0);
    for (int i = 0; i < 3; i++) { /* listing consumes no one-time key */
        CALL(rc, &f, prekeys_list, memcpy(q.user_id, d1.user_id, 16));
        assert_int_equal(rc, 0);
        pt_tl_obj o = dec(&f.last);
        assert_int_equal(o.u.prekeys_bundles.bundles.n, 2);
        assert_memory_equal(o.u.prekeys_bundles.identity_key, d1.id_pk, 32);
        for (int j = 0; j < 2; j++) {
            const pt_tl_prekeys_bundle *b = &o.u.prekeys_bundles.bundles.items[j];
            assert_int_equal(b->one_time_key.len, 0);
            assert_int_equal(b->signed_key.len, 32);
            assert_true(memcmp(b->device, d1.device, 32) == 0 || memcmp(b->device, d2.device, 32) == 0);
        }
    }
    assert_int_equal(upload(&d1, -1, NULL, 20, 0), 0);
    assert_int_equal(dec(&d1.last).u.prekeys_count.one_time_keys, 3);
    uint8_t nobody[16] = {1};
    CALL(rc, &f, prekeys_list, memcpy(q.user_id, nobody, 16));
    assert_int_equal(rc, 404);

    /* a link blob: put by a bound device, taken once by a device with no user */
    uint8_t link[16], lb[100];
    pt_random(link, sizeof link);
    pt_random(lb, sizeof lb);
    user_new(&fresh, "fresh");
    user_connect(&fresh, srv.port);
    CALL(rc, &fresh, devices_putLink, memcpy(q.link_id, link, 16); q.blob = (pt_tl_bytes){lb, 100});
    assert_int_equal(rc, 401); /* putting needs a user */
    CALL(rc, &d1, devices_putLink, memcpy(q.link_id, link, 16); q.blob = (pt_tl_bytes){lb, 0});
    assert_int_equal(rc, 413);
    CALL(rc, &d1, devices_putLink, memcpy(q.link_id, link, 16); q.blob = (pt_tl_bytes){lb, 100});
    assert_int_equal(rc, 0);
    CALL(rc, &d1, devices_putLink, memcpy(q.link_id, link, 16); q.blob = (pt_tl_bytes){lb, 100});
    assert_int_equal(rc, 409);
    CALL(rc, &fresh, devices_takeLink, memcpy(q.link_id, link, 16));
    assert_int_equal(rc, 0);
    pt_tl_obj o = dec(&fresh.last);
    assert_int_equal(o.u.devices_link.blob.len, 100);
    assert_memory_equal(o.u.devices_link.blob.data, lb, 100);
    CALL(rc, &fresh, devices_takeLink, memcpy(q.link_id, link, 16));
    assert_int_equal(rc, 404);
    assert_string_equal(fresh.err_msg, "LINK_NOT_FOUND");

    CALL(rc, &f, messages_send, memcpy(q.to, d1.user_id, 16); q.envelope = str("before the revoke"));
    assert_int_equal(rc, 0); /* routing now knows both of dora's devices */
    /* revocation: signed by the identity key, then the device is gone for good */
    uint8_t msg[17 + 32], sig[64];
    memcpy(msg, "PT1 revoke device", 17);
    memcpy(msg + 17, d2.device, 32);
    assert_int_equal(pt_ed25519_sign(sig, msg, sizeof msg, f.id_sk), 0);
    CALL(rc, &d1, devices_revoke, memcpy(q.device, d2.device, 32); q.signature = (pt_tl_bytes){sig, 64});
    assert_int_equal(rc, 403);
    assert_int_equal(pt_ed25519_sign(sig, msg, sizeof msg, d1.id_sk), 0);
    CALL(rc, &f, devices_revoke, memcpy(q.device, d2.device, 32); q.signature = (pt_tl_bytes){sig, 64});
    assert_int_equal(rc, 403); /* finn's identity key did not sign it */
    CALL(rc, &d1, devices_revoke, memcpy(q.device, d2.device, 32); q.signature = (pt_tl_bytes){sig, 64});
    assert_int_equal(rc, 0);
    int closed = 0;
    PT_TEST_WHILE_FOR(closed == 0, 2000, closed = pt_client_pump(d2.c, 10, on_event, &d2));
    assert_int_equal(closed, PT_ERR_CLOSED); /* the server hung up on the revoked device */
    CALL(rc, &f, prekeys_list, memcpy(q.user_id, d1.user_id, 16));
    assert_int_equal(rc, 0);
    assert_int_equal(dec(&f.last).u.prekeys_bundles.bundles.n, 1);
    CALL(rc, &d1, devices_revoke, memcpy(q.device, d2.device, 32); q.signature = (pt_tl_bytes){sig, 64});
    assert_int_equal(rc, 404);
    /* a send to dora reaches her one device left, not the revoked one */
    CALL(rc, &f, messages_send, memcpy(q.to, d1.user_id, 16); q.envelope = str("after the revoke"));
    assert_int_equal(rc, 0);
    {
        sqlite3 *db;
        char path[400];
        snprintf(path, sizeof path, "%s/packtrack.db", srv.dir);
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM queue WHERE device_key = ?", -1, &st, NULL), SQLITE_OK);
        sqlite3_bind_blob(st, 1, d2.device, 32, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    pt_client_drop(d2.c);
    user_connect(&d2, srv.port); /* the same device key comes back */
    assert_int_equal(bind(&d2, "dora"), 403);
    assert_string_equal(d2.err_msg, "DEVICE_REVOKED");

    user_free(&d1);
    user_free(&d2);
    user_free(&f);
    user_free(&fresh);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presence),
        cmocka_unit_test(test_users_list_paging),
        cmocka_unit_test(test_friend_flow),
        cmocka_unit_test(test_block),
        cmocka_unit_test(test_prekeys),
        cmocka_unit_test(test_groups),
        cmocka_unit_test(test_receipts),
        cmocka_unit_test(test_devices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
