/*
 * libpacktrack core: profiles (create, link, open), the connection and its
 * calls, and the dispatch of what the server pushes. People are in people.c,
 * messages and groups in msg.c.
 */
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "api/api_int.h"
#include "client/pt_obfs_client.h"
#include "crypto/pt_crypto.h"
#include "store/pt_keyfile.h"
#include "wire/pt_wire.h"

static const char device_cert_label[] = "PT1 device cert";

/* ---- records ------------------------------------------------------------------------------------ */

static const uint8_t *rd_take(pt_rd *r, size_t n)
{
    if (r->bad || r->n < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->n -= n;
    return p;
}

uint8_t pt_rd_u8(pt_rd *r)
{
    const uint8_t *p = rd_take(r, 1);
    return p ? p[0] : 0;
}

uint32_t pt_rd_u32(pt_rd *r)
{
    const uint8_t *p = rd_take(r, 4);
    return p ? pt_get_u32le(p) : 0;
}

uint64_t pt_rd_u64(pt_rd *r)
{
    const uint8_t *p = rd_take(r, 8);
    return p ? pt_get_u64le(p) : 0;
}

void pt_rd_fixed(pt_rd *r, uint8_t *out, size_t n)
{
    const uint8_t *p = rd_take(r, n);
    if (p) memcpy(out, p, n);
    else memset(out, 0, n);
}

const uint8_t *pt_rd_bytes(pt_rd *r, size_t *len)
{
    *len = pt_rd_u32(r);
    const uint8_t *p = rd_take(r, *len);
    if (!p) *len = 0;
    return p;
}

void pt_rd_str(pt_rd *r, char *out, size_t cap)
{
    size_t n;
    const uint8_t *p = pt_rd_bytes(r, &n);
    if (n >= cap) {
        r->bad = true;
        n = 0;
    }
    if (n) memcpy(out, p, n);
    out[n] = 0;
}

int pt_wr_u8(pt_buf *b, uint8_t v) { return pt_buf_append(b, &v, 1); }

int pt_wr_u32(pt_buf *b, uint32_t v)
{
    uint8_t t[4];
    pt_put_u32le(t, v);
    return pt_buf_append(b, t, 4);
}

int pt_wr_u64(pt_buf *b, uint64_t v)
{
    uint8_t t[8];
    pt_put_u64le(t, v);
    return pt_buf_append(b, t, 8);
}

int pt_wr_bytes(pt_buf *b, const void *p, size_t len)
{
    int rc = pt_wr_u32(b, (uint32_t)len);
    return rc ? rc : pt_buf_append(b, p, len);
}

int pt_wr_str(pt_buf *b, const char *s) { return pt_wr_bytes(b, s, strlen(s)); }

/* ---- errors and events ------------------------------------------------------------------------- */

int pt_api_fail(pt_ctx *x, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->last_error, sizeof x->last_error, fmt, ap);
    va_end(ap);
    pt_log_debug("libpacktrack: %s (%s)", x->last_error, pt_strerror(rc));
    return rc;
}

/* What the last failed pt_create/pt_create_linked/pt_open said (they return NULL). */
static _Thread_local char open_error[256];

const char *pt_last_error(const pt_ctx *x) { return x ? x->last_error : open_error; }

void pt_api_emit(pt_ctx *x, const pt_event *ev)
{
    if (x->cb) x->cb(x->ud, ev);
}

void pt_set_event_cb(pt_ctx *x, pt_event_cb cb, void *ud)
{
    x->cb = cb;
    x->ud = ud;
}

void pt_free(void *p) { free(p); }

/* ---- the context ------------------------------------------------------------------------------- */

static int parse_server(pt_ctx *x, const char *server)
{
    uint16_t port;
    if (pt_parse_hostport(server, x->host, sizeof x->host, &port) != 0)
        return pt_api_fail(x, PT_ERR_INVAL, "server '%s' is not HOST:PORT ([ADDRESS]:PORT for IPv6)",
                           server);
    if (port == 0) return pt_api_fail(x, PT_ERR_INVAL, "server '%s': port must be 1-65535", server);
    x->port = port;
    return 0;
}

static pt_ctx *ctx_new(const pt_options *o, pt_err *err)
{
    int rc = pt_init();
    if (rc) {
        if (err) *err = (pt_err)rc;
        return NULL;
    }
    pt_ctx *x = calloc(1, sizeof *x);
    if (!x || !(x->id_sk = pt_secure_alloc(64))) {
        free(x);
        if (err) *err = PT_ERR_NOMEM;
        return NULL;
    }
    x->env = pt_env_default();
    x->status = PT_PRESENCE_ONLINE;
    x->backoff_ms = PT_API_BACKOFF_MIN_MS;
    x->timeout_ms = o && o->timeout_ms > 0 ? o->timeout_ms : PT_API_DEFAULT_TIMEOUT_MS;
    const char *home = o ? o->home : NULL;
    const char *h = getenv("HOME");
    if (home) snprintf(x->home, sizeof x->home, "%s", home);
    else snprintf(x->home, sizeof x->home, "%s/.packtrack", h ? h : ".");
    rc = parse_server(x, o && o->server ? o->server : "127.0.0.1:7000");
    if (rc == 0 && o && o->server_fingerprint) {
        uint8_t k[32];
        if (pt_fingerprint_parse(k, o->server_fingerprint) != 0)
            rc = pt_api_fail(x, PT_ERR_INVAL, "server fingerprint must be 64 hex digits");
        snprintf(x->server_fp, sizeof x->server_fp, "%s", o->server_fingerprint);
    }
    pt_obfsc_settings os;
    if (rc == 0 && o && o->obfuscation) {
        if (pt_obfsc_settings_parse(&os, o->obfuscation, o->network_key, NULL) != 0)
            rc = pt_api_fail(x, PT_ERR_INVAL, "obfuscation must be off, mse, mse-prefer or pt-obfs, "
                             "with a network key in hex (pt-obfs: 32 bytes, else 16 to 64)");
        pt_wipe(&os, sizeof os);
        snprintf(x->obfuscation, sizeof x->obfuscation, "%s", o->obfuscation);
        snprintf(x->network_key, sizeof x->network_key, "%s", o->network_key ? o->network_key : "");
    }
    if (rc) {
        if (err) *err = (pt_err)rc;
        pt_close(x);
        return NULL;
    }
    return x;
}

void pt_api_reply_free(pt_api_reply *r)
{
    pt_buf_free(&r->body);
    free(r->arena);
    r->arena = NULL;
}

static void clear_results(pt_ctx *x)
{
    for (size_t i = 0; i < x->nres; i++) pt_buf_free(&x->res[i].body);
    x->nres = 0;
}

void pt_close(pt_ctx *x)
{
    if (!x) return;
    pt_api_lan_free(x);
    pt_client_free(x->cl);
    pt_chat_free(x->chat);
    pt_olm_account_free(x->acct);
    pt_lstore_close(x->st);
    clear_results(x);
    free(x->res);
    for (size_t i = 0; i < x->nupd; i++) pt_buf_free(&x->upd[i]);
    free(x->upd);
    pt_secure_free(x->id_sk);
    pt_wipe(x->dev_sk, sizeof x->dev_sk);
    pt_wipe(x->network_key, sizeof x->network_key);
    pt_wipe(x->pickle_key, sizeof x->pickle_key);
    free(x);
}

/* ---- profile persistence ----------------------------------------------------------------------- */

static int save_profile(pt_ctx *x)
{
    pt_buf b;
    pt_buf_init(&b);
    int rc = pt_wr_str(&b, x->username);
    if (rc == 0) rc = pt_buf_append(&b, x->user_id, 16);
    if (rc == 0) rc = pt_wr_u8(&b, (uint8_t)x->status);
    if (rc == 0) rc = pt_wr_u8(&b, x->bound);
    if (rc == 0) rc = pt_wr_u8(&b, x->no_read_receipts);
    if (rc == 0) rc = pt_wr_u8(&b, x->no_typing);
    if (rc == 0) rc = pt_lstore_put(x->st, "profile", b.data, b.len);
    pt_buf_free(&b);
    return rc;
}

int pt_api_save_account(pt_ctx *x)
{
    pt_buf b;
    pt_buf_init(&b);
    int rc = pt_olm_account_pickle(x->acct, x->env, x->pickle_key, sizeof x->pickle_key, &b);
    if (rc == 0) rc = pt_lstore_put(x->st, "account", b.data, b.len);
    pt_buf_free(&b);
    return rc;
}

int pt_api_save_session(pt_ctx *x, const uint8_t peer[32])
{
    sqlite3 *db = pt_lstore_db(x->st);
    sqlite3_stmt *st;
    pt_buf b;
    pt_buf_init(&b);
    int rc = pt_chat_pickle_session(x->chat, peer, x->pickle_key, sizeof x->pickle_key, &b);
    if (rc == PT_ERR_NOT_FOUND) { /* the session ended: forget it here too */
        if (sqlite3_prepare_v2(db, "DELETE FROM sessions WHERE peer = ?", -1, &st, NULL)) return PT_ERR_IO;
        sqlite3_bind_blob(st, 1, peer, 32, SQLITE_STATIC);
    } else if (rc == 0) {
        if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO sessions(peer, v) VALUES (?, ?)", -1, &st, NULL)) {
            pt_buf_free(&b);
            return PT_ERR_IO;
        }
        sqlite3_bind_blob(st, 1, peer, 32, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, b.data, (int)b.len, SQLITE_STATIC);
    } else {
        pt_buf_free(&b);
        return rc;
    }
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : PT_ERR_IO;
    sqlite3_finalize(st);
    pt_buf_free(&b);
    return rc;
}

pt_api_test_hooks pt_api_test;

static int set_identity(pt_ctx *x)
{
    int rc = pt_blake2b(x->user_id, 16, x->id_pk, 32, NULL, 0);
    unsigned bits = pt_api_test.user_id_bits; /* tests only: as the server's knob */
    for (unsigned i = 0; bits && bits < 128 && i < 16; i++) {
        if (i * 8 >= bits) x->user_id[i] = 0;
        else if (i * 8 + 8 > bits) x->user_id[i] &= (uint8_t)(0xff00u >> (bits - i * 8));
    }
    pt_hex_encode(x->user_hex, x->user_id, 16);
    char fp[PT_FINGERPRINT_LEN];
    pt_fingerprint(fp, x->id_pk);
    snprintf(x->id_fp, sizeof x->id_fp, "%s", fp);
    return rc;
}

static int new_identity(pt_ctx *x)
{
    int rc = pt_api_test.identity ? pt_api_test.identity(x->id_pk, x->id_sk)
                                  : pt_ed25519_keypair(x->id_pk, x->id_sk);
    if (rc == 0) rc = set_identity(x);
    if (rc == 0) rc = pt_lstore_put(x->st, "identity", x->id_sk, 64);
    return rc;
}

/* Loads everything a profile holds into x (after the store is open). */
static int load_profile(pt_ctx *x)
{
    pt_buf b;
    pt_buf_init(&b);
    pt_lstore_subkey(x->st, "olm pickle", x->pickle_key);
    int rc = pt_lstore_get(x->st, "identity", &b);
    if (rc == 0 && b.len != 64) rc = PT_ERR_DECODE;
    if (rc == 0) {
        memcpy(x->id_sk, b.data, 64);
        memcpy(x->id_pk, b.data + 32, 32); /* libsodium's secret key ends with the public key */
        rc = set_identity(x);
    }
    pt_buf_reset(&b);
    if (rc == 0) rc = pt_lstore_get(x->st, "device", &b);
    if (rc == 0 && b.len != 32) rc = PT_ERR_DECODE;
    if (rc == 0) {
        memcpy(x->dev_sk, b.data, 32);
        rc = pt_x25519_base(x->dev_pk, x->dev_sk);
    }
    pt_buf_reset(&b);
    if (rc == 0) rc = pt_lstore_get(x->st, "account", &b);
    if (rc == 0) {
        pt_err e = 0;
        x->acct = pt_olm_account_unpickle(x->pickle_key, sizeof x->pickle_key, b.data, b.len, &e);
        if (!x->acct) rc = e ? (int)e : PT_ERR_NOMEM;
    }
    pt_buf_reset(&b);
    if (rc == 0 && pt_lstore_get(x->st, "profile", &b) == 0) {
        pt_rd r = {b.data, b.len, false};
        pt_rd_str(&r, x->username, sizeof x->username);
        pt_rd_fixed(&r, x->user_id, 16);
        x->status = (pt_status)pt_rd_u8(&r);
        x->bound = pt_rd_u8(&r);
        if (r.n) x->no_read_receipts = pt_rd_u8(&r); /* absent in older profiles */
        if (r.n) x->no_typing = pt_rd_u8(&r);
        if (r.bad) rc = PT_ERR_DECODE;
    }
    pt_buf_free(&b);
    if (rc == 0) {
        pt_olm_account_identity(x->acct, x->my_curve, x->my_ed);
        if (!(x->chat = pt_chat_new(x->env, x->acct))) rc = PT_ERR_NOMEM;
    }
    /* the sessions with other devices */
    sqlite3_stmt *st;
    if (rc == 0 && sqlite3_prepare_v2(pt_lstore_db(x->st), "SELECT peer, v FROM sessions", -1, &st, NULL) == 0) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            if (sqlite3_column_bytes(st, 0) != 32) continue;
            int r2 = pt_chat_restore_session(x->chat, sqlite3_column_blob(st, 0), x->pickle_key,
                                             sizeof x->pickle_key, sqlite3_column_blob(st, 1),
                                             (size_t)sqlite3_column_bytes(st, 1));
            if (r2) pt_log_warn("local store: a session state does not load (%s); it is skipped",
                                pt_strerror(r2));
        }
        sqlite3_finalize(st);
    }
    if (rc) return pt_api_fail(x, rc, "the local store is damaged: %s", pt_strerror(rc));
    return 0;
}

static int open_client(pt_ctx *x)
{
    pt_client_config cfg = {.home = x->home, .device_sk = x->dev_sk,
                            .server_fingerprint = x->server_fp[0] ? x->server_fp : NULL,
                            .timeout_ms = x->timeout_ms,
                            .obfuscation = x->obfuscation[0] ? x->obfuscation : NULL,
                            .network_key = x->network_key[0] ? x->network_key : NULL};
    int rc = 0;
    x->cl = pt_client_new(&cfg, &rc);
    return x->cl ? 0 : rc;
}

/* ---- the connection ------------------------------------------------------------------------------ */

static void on_sess_event(void *ud, const pt_sess_event *ev)
{
    pt_ctx *x = ud;
    if (ev->type == PT_SESS_EV_RESULT) {
        if (x->nres == x->capres) {
            size_t cap = x->capres ? 2 * x->capres : 8;
            pt_api_result *n = realloc(x->res, cap * sizeof *n);
            if (!n) return; /* the call times out: reported there */
            x->res = n;
            x->capres = cap;
        }
        pt_api_result *r = &x->res[x->nres];
        pt_buf_init(&r->body);
        if (pt_buf_append(&r->body, ev->body, ev->len) != 0) return;
        r->req = ev->req_msg_id;
        x->nres++;
    } else if (ev->type == PT_SESS_EV_BAD_MSG) {
        /* the session layer resends it (docs/PROTOCOL.md §5); say why, once per rejection */
        bool low = ev->value == PT_BAD_MSG_ID_TOO_LOW;
        if (low || ev->value == PT_BAD_MSG_ID_TOO_HIGH)
            pt_log_warn("libpacktrack: the server rejected a message as too %s (code %d): this device's clock "
                        "differs from the server's by more than %d s; resynchronised and resent",
                        low ? "old" : "new", (int)ev->value, low ? PT_SESS_PAST_S : PT_SESS_FUTURE_S);
        else if (ev->value == PT_BAD_MSG_SALT)
            pt_log_info("libpacktrack: new server salt; the message is resent");
        else
            pt_log_debug("libpacktrack: the server rejected a message (code %d)", (int)ev->value);
    } else if (ev->type == PT_SESS_EV_UPDATE) {
        if (x->nupd == x->capupd) {
            size_t cap = x->capupd ? 2 * x->capupd : 16;
            pt_buf *n = realloc(x->upd, cap * sizeof *n);
            if (!n) {
                pt_log_warn("libpacktrack: out of memory; an update is fetched again later");
                return;
            }
            x->upd = n;
            x->capupd = cap;
        }
        pt_buf_init(&x->upd[x->nupd]);
        if (pt_buf_append(&x->upd[x->nupd], ev->body, ev->len) == 0) x->nupd++;
    }
}

static void went_offline(pt_ctx *x, const char *why)
{
    if (!x->online) return;
    x->online = false;
    pt_api_lan_server_lost(x);
    pt_client_drop(x->cl);
    pt_log_info("disconnected from %s:%u: %s", x->host, x->port, why);
    x->next_try_ms = pt_env_now_ms(x->env) + (uint64_t)x->backoff_ms;
    pt_event ev = {.type = PT_EVENT_CONNECTION, .status = PT_PRESENCE_OFFLINE};
    pt_api_emit(x, &ev);
}

/* One pump; PT_ERR_OFFLINE when the link went down. When it went down because the
 * session restarted after a clock correction (src/session: ids that would go down
 * need a new session on a new connection), the next connection is made at once,
 * and PT_ERR_AGAIN tells a waiting call to reconnect and keep waiting: its request
 * is still queued in the session, under the id the call knows. */
static int pump(pt_ctx *x, int ms)
{
    uint64_t renewals = pt_sess_renewals(pt_client_session(x->cl));
    int rc = pt_client_pump(x->cl, ms, on_sess_event, x);
    if (rc == 0) return 0;
    bool renewed = pt_sess_renewals(pt_client_session(x->cl)) != renewals;
    went_offline(x, renewed ? "the session restarts after a clock correction" : pt_strerror(rc));
    if (!renewed) return PT_ERR_OFFLINE;
    x->next_try_ms = 0;
    return PT_ERR_AGAIN;
}

/* The server id of a stored item's update (the field after the constructor id); 0 for
 * the ephemeral ones (presence, typing, key top-ups). */
static int64_t update_server_id(const pt_buf *u)
{
    if (u->len < 12) return 0;
    switch (pt_get_u32le(u->data)) {
    case PT_TL_UPDATES_NEWMESSAGE_ID:
    case PT_TL_UPDATES_NEWGROUPMESSAGE_ID:
    case PT_TL_UPDATES_CONTACT_ID:
    case PT_TL_UPDATES_GROUPEVENT_ID:
    case PT_TL_UPDATES_RECEIPT_ID: return (int64_t)pt_get_u64le(u->data + 4);
    default: return 0;
    }
}

/* Server ids in cluster mode are node_id << 40 | n (docs/PROTOCOL.md §6.2): each node's
 * ids grow, but those of two nodes do not compare in time. */
#define SERVER_ID_NODE_SHIFT 40

typedef struct upd_key {
    int64_t node, sid;
    size_t at;
    pt_buf u;
} upd_key;

static int upd_cmp(const void *a, const void *b)
{
    const upd_key *p = a, *q = b;
    if (p->node != q->node) return p->node < q->node ? -1 : 1;
    if (p->sid != q->sid) return p->sid < q->sid ? -1 : 1;
    return p->at < q->at ? -1 : p->at > q->at; /* stable */
}

static int by_place(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

void pt_api_order_by_server(pt_buf *upd, size_t n)
{
    size_t k = 0;
    upd_key *v = malloc((n ? n : 1) * sizeof *v);
    size_t *places = malloc((n ? n : 1) * sizeof *places);
    if (!v || !places) { /* unordered then, as before: nothing is lost */
        free(v);
        free(places);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        int64_t sid = update_server_id(&upd[i]);
        if (sid) v[k++] = (upd_key){sid >> SERVER_ID_NODE_SHIFT, sid, i, upd[i]};
    }
    /* The items of each node in id order, in the places that node's items came in:
     * the items of different nodes keep the order they came in (a cluster's queue
     * delivers a sender's items in the order they were stored, across nodes too). */
    qsort(v, k, sizeof *v, upd_cmp);
    for (size_t g = 0, e; g < k; g = e) { /* g..e: one node's items, sorted */
        for (e = g; e < k && v[e].node == v[g].node; e++) places[e - g] = v[e].at;
        qsort(places, e - g, sizeof *places, by_place);
        for (size_t j = g; j < e; j++) upd[places[j - g]] = v[j].u;
    }
    free(v);
    free(places);
}

void pt_api_order_updates(pt_ctx *x) { pt_api_order_by_server(x->upd, x->nupd); }

static int after_connect(pt_ctx *x)
{
    int rc;
    PT_API_CALL(rc, x, NULL, messages_sync, (void)q);
    /* a live push may have come before the older items the sync brings: stored items
     * are taken in server order (per-sender order, docs/PROTOCOL.md §6.2) */
    if (rc == 0) pt_api_order_updates(x);
    if (rc == 0) pt_api_process_updates(x);
    if (rc == 0) rc = pt_api_flush_outbox(x);
    if (rc == 0) rc = pt_api_send_read_receipts(x);
    if (rc == 0) rc = pt_api_sync_lan_friends(x);
    return rc == PT_ERR_OFFLINE || rc == PT_ERR_TIMEOUT ? rc : 0;
}

int pt_api_ensure_online(pt_ctx *x)
{
    if (x->online) return 0;
    uint64_t now = pt_env_now_ms(x->env);
    if (now < x->next_try_ms) return pt_api_fail(x, PT_ERR_OFFLINE, "server %s:%u not reachable; retrying later", x->host, x->port);
    int rc = pt_client_connect(x->cl, x->host, x->port);
    if (rc) {
        x->next_try_ms = now + (uint64_t)x->backoff_ms;
        x->backoff_ms = x->backoff_ms * 2 > PT_API_BACKOFF_MAX_MS ? PT_API_BACKOFF_MAX_MS : x->backoff_ms * 2;
        if (rc == PT_ERR_KEY_MISMATCH)
            return pt_api_fail(x, rc, "the server at %s:%u has a different key than the one pinned in "
                                      "%s/known_servers: refusing to talk to it", x->host, x->port, x->home);
        return pt_api_fail(x, PT_ERR_OFFLINE, "cannot reach the server at %s:%u (%s); is packtrackd running?",
                           x->host, x->port, pt_strerror(rc));
    }
    x->online = true;
    x->backoff_ms = PT_API_BACKOFF_MIN_MS;
    pt_log_info("connected to %s:%u", x->host, x->port);
    pt_event ev = {.type = PT_EVENT_CONNECTION, .status = PT_PRESENCE_ONLINE};
    pt_api_emit(x, &ev);
    if (x->bound) return after_connect(x);
    return 0;
}

/* Drops the results no call waits for any more (a call that gave up, or ids of
 * calls made before a reconnect); keeps those of outer calls still waiting while a
 * nested one (after_connect's, on a reconnect) runs. */
static void clear_unawaited(pt_ctx *x, uint64_t answered)
{
    size_t w = 0;
    for (size_t i = 0; i < x->nres; i++) {
        bool awaited = false;
        for (size_t k = 0; k < x->nawait; k++)
            awaited |= x->awaiting[k] == x->res[i].req && x->res[i].req != answered;
        if (awaited)
            x->res[w++] = x->res[i];
        else
            pt_buf_free(&x->res[i].body);
    }
    x->nres = w;
}

static int call_wait(pt_ctx *x, uint64_t id, pt_api_reply *r);

int pt_api_call(pt_ctx *x, pt_buf *req, pt_api_reply *r)
{
    if (r) memset(r, 0, sizeof *r);
    int rc = pt_api_ensure_online(x);
    if (rc) return rc;
    uint64_t id;
    if ((rc = pt_client_send(x->cl, req->data, req->len, &id)) != 0)
        return pt_api_fail(x, rc, "cannot send: %s", pt_strerror(rc));
    bool tracked = x->nawait < PT_API_MAX_NESTED;
    if (tracked) x->awaiting[x->nawait++] = id;
    rc = call_wait(x, id, r);
    if (tracked) x->nawait--;
    return rc;
}

int pt_api_notice(pt_ctx *x, pt_buf *req)
{
    if (!x->online) return PT_ERR_OFFLINE;
    int rc = pt_client_send(x->cl, req->data, req->len, NULL);
    if (rc) return pt_api_fail(x, rc, "cannot send: %s", pt_strerror(rc));
    return pump(x, 0); /* written now: the application may stop polling after this */
}

static int call_wait(pt_ctx *x, uint64_t id, pt_api_reply *r)
{
    int rc;
    uint64_t deadline = pt_env_now_ms(x->env) + (uint64_t)x->timeout_ms;
    for (;;) {
        for (size_t i = 0; i < x->nres; i++) {
            if (x->res[i].req != id) continue;
            pt_buf body = x->res[i].body;
            x->res[i] = x->res[--x->nres];
            clear_unawaited(x, id); /* answers nobody waits for any more */
            size_t cap = 4 * body.len + 4096;
            void *arena = malloc(cap);
            pt_arena a;
            pt_tl_obj o;
            if (!arena) {
                pt_buf_free(&body);
                return PT_ERR_NOMEM;
            }
            pt_arena_init(&a, arena, cap);
            rc = pt_tl_decode_any(&o, body.data, body.len, &a);
            if (rc == 0 && o.id == PT_TL_RPC_ERROR_ID) {
                snprintf(x->last_error, sizeof x->last_error, "%.*s", (int)o.u.rpc_error.error_message.len,
                         (const char *)o.u.rpc_error.error_message.data);
                rc = PT_ERR_REFUSED;
            } else if (rc) {
                pt_api_fail(x, rc, "the server's answer does not parse");
            }
            if (r && rc == 0) {
                r->o = o;
                r->body = body;
                r->arena = arena;
            } else {
                pt_buf_free(&body);
                free(arena);
            }
            return rc;
        }
        uint64_t now = pt_env_now_ms(x->env);
        if (now >= deadline) return pt_api_fail(x, PT_ERR_TIMEOUT, "the server did not answer in %d ms", x->timeout_ms);
        if ((rc = pump(x, (int)(deadline - now))) == PT_ERR_AGAIN && x->renew_reconnects < 3) {
            x->renew_reconnects++; /* bounded: a server whose clock keeps jumping cannot spin us */
            rc = pt_api_ensure_online(x);
            x->renew_reconnects--;
        }
        if (rc == PT_ERR_AGAIN) rc = PT_ERR_OFFLINE;
        if (rc) return pt_api_fail(x, rc, "the connection to %s:%u dropped", x->host, x->port);
    }
}

int pt_connect(pt_ctx *x)
{
    x->next_try_ms = 0;
    int rc = pt_api_ensure_online(x);
    pt_api_process_updates(x);
    return rc;
}

int pt_connected(const pt_ctx *x) { return x->online; }
int pt_fd(const pt_ctx *x) { return x->online ? pt_client_fd(x->cl) : -1; }

/* pt_poll with the local network on: the server's socket (when there is one) is
 * polled together with the LAN's. */
static int poll_lan(pt_ctx *x, int timeout_ms)
{
    if (!x->online && pt_api_ensure_online(x) != 0) { /* tries when the backoff allows */
    }
    bool ready = false;
    if (x->online) { /* acknowledgements that wait fall due (src/session): pump by then */
        int64_t acks = pt_sess_ack_wait_ms(pt_client_session(x->cl));
        if (acks >= 0 && acks < timeout_ms) timeout_ms = (int)acks;
    }
    int rc = pt_api_lan_service(x, timeout_ms, x->online ? pt_client_fd(x->cl) : -1, &ready);
    if (rc) return rc;
    if (x->online) {
        rc = pump(x, 0);
        pt_api_process_updates(x);
        if (rc == 0 && x->online) rc = pt_api_flush_outbox(x);
        if (rc == 0 && x->online) pt_api_lan_server_exchange(x);
    }
    return rc == PT_ERR_OFFLINE || rc == PT_ERR_TIMEOUT || rc == PT_ERR_AGAIN ? 0 : rc;
}

int pt_poll(pt_ctx *x, int timeout_ms)
{
    if (x->lan) return poll_lan(x, timeout_ms);
    if (!x->online) {
        int rc = pt_api_ensure_online(x);
        if (rc) {
            /* nothing to do until the next try: sleep without a socket */
            uint64_t now = pt_env_now_ms(x->env);
            uint64_t wait = x->next_try_ms > now ? x->next_try_ms - now : 0;
            if (wait > (uint64_t)timeout_ms) wait = (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
            if (wait) poll(NULL, 0, (int)wait);
            return rc == PT_ERR_OFFLINE ? 0 : rc;
        }
    }
    int rc = pump(x, timeout_ms);
    pt_api_process_updates(x);
    if (rc == 0 && x->online) rc = pt_api_flush_outbox(x);
    return rc == PT_ERR_OFFLINE || rc == PT_ERR_TIMEOUT || rc == PT_ERR_AGAIN ? 0 : rc;
}

/* ---- updates --------------------------------------------------------------------------------------- */

static void dispatch(pt_ctx *x, const pt_tl_obj *o)
{
    switch (o->id) {
    case PT_TL_UPDATES_NEWMESSAGE_ID: {
        const pt_tl_updates_newMessage *u = &o->u.updates_newMessage;
        pt_api_on_message(x, u->server_id, u->from, u->from_device, NULL, &u->envelope);
        break;
    }
    case PT_TL_UPDATES_NEWGROUPMESSAGE_ID: {
        const pt_tl_updates_newGroupMessage *u = &o->u.updates_newGroupMessage;
        pt_api_on_message(x, u->server_id, u->from, u->from_device, u->group_id, &u->envelope);
        break;
    }
    case PT_TL_UPDATES_RECEIPT_ID: pt_api_on_receipt(x, &o->u.updates_receipt); break;
    case PT_TL_UPDATES_CONTACT_ID: pt_api_on_contact(x, &o->u.updates_contact); break;
    case PT_TL_UPDATES_USERSTATUS_ID: pt_api_on_status(x, &o->u.updates_userStatus); break;
    case PT_TL_UPDATES_GROUPEVENT_ID: pt_api_on_group_event(x, &o->u.updates_groupEvent); break;
    case PT_TL_UPDATES_TYPING_ID: pt_api_on_typing(x, &o->u.updates_typing); break;
    case PT_TL_UPDATES_PREKEYSLOW_ID:
        if (pt_api_upload_keys(x, false) != 0) pt_log_warn("could not publish more one-time keys: %s", x->last_error);
        break;
    default: pt_log_debug("libpacktrack: update %08x ignored", o->id); break;
    }
}

void pt_api_process_updates(pt_ctx *x)
{
    if (x->in_updates) return;
    x->in_updates = true;
    size_t cap = 0;
    void *arena = NULL;
    while (x->nupd) {
        pt_buf u = x->upd[0];
        memmove(x->upd, x->upd + 1, --x->nupd * sizeof *x->upd);
        size_t need = 4 * u.len + 4096;
        if (need > cap) {
            void *n = realloc(arena, need);
            if (!n) {
                pt_buf_free(&u);
                continue;
            }
            arena = n;
            cap = need;
        }
        pt_arena a;
        pt_arena_init(&a, arena, cap);
        pt_tl_obj o;
        if (pt_tl_decode_any(&o, u.data, u.len, &a) == 0) dispatch(x, &o);
        else pt_log_warn("libpacktrack: an update from the server does not parse; ignored");
        pt_buf_free(&u);
    }
    free(arena);
    x->in_updates = false;
}

/* ---- profiles --------------------------------------------------------------------------------- */

static int bind_username(pt_ctx *x, const char *name)
{
    uint8_t msg[sizeof device_cert_label - 1 + 32], cert[64];
    int rc = 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        memcpy(msg, device_cert_label, sizeof device_cert_label - 1);
        memcpy(msg + sizeof device_cert_label - 1, x->dev_pk, 32);
        if ((rc = pt_ed25519_sign(cert, msg, sizeof msg, x->id_sk)) != 0) return rc;
        pt_api_reply r;
        PT_API_CALL(rc, x, &r, auth_bindUsername, q.name = (pt_tl_bytes){(const uint8_t *)name, (uint32_t)strlen(name)};
                    memcpy(q.identity_key, x->id_pk, 32); q.device_cert = (pt_tl_bytes){cert, 64});
        if (rc == PT_ERR_REFUSED && strcmp(x->last_error, "USER_ID_COLLISION") == 0) {
            /* S2WMP: another identity hashes to our id; make a new one and try again */
            pt_log_warn("user id collision: generating a new identity key");
            if ((rc = new_identity(x)) != 0) return rc;
            continue;
        }
        if (rc) return rc;
        const pt_tl_auth_bound *b = &r.o.u.auth_bound;
        if (r.o.id != PT_TL_AUTH_BOUND_ID || memcmp(b->user_id, x->user_id, 16) != 0 ||
            b->username.len >= sizeof x->username) {
            pt_api_reply_free(&r);
            return pt_api_fail(x, PT_ERR_PROTO, "the server answered the name claim with something else");
        }
        memcpy(x->username, b->username.data, b->username.len);
        x->username[b->username.len] = 0;
        pt_api_reply_free(&r);
        return 0;
    }
    return rc;
}

static const char *const username_errors[][2] = {
    {"USERNAME_TAKEN", "that username is taken; choose another"},
    {"USERNAME_CONFUSABLE", "that username looks like one that is taken; choose another"},
    {"USERNAME_INVALID", "usernames are 1-32 characters, without control or invisible characters"},
};

/* The server's refusal of a name, in words: "CODE" or "CODE: the rule broken"
 * (USERNAME_INVALID says which), kept as "words (CODE)". */
static void explain_refusal(pt_ctx *x)
{
    for (size_t i = 0; i < sizeof username_errors / sizeof *username_errors; i++) {
        const char *code = username_errors[i][0];
        size_t n = strlen(code);
        if (strncmp(x->last_error, code, n) != 0 || (x->last_error[n] && x->last_error[n] != ':'))
            continue;
        const char *why = x->last_error[n] == ':' ? x->last_error + n + 1 : "";
        while (*why == ' ') why++;
        char words[sizeof x->last_error];
        snprintf(words, sizeof words, "%s", *why ? why : username_errors[i][1]);
        snprintf(x->last_error, sizeof x->last_error, "%.*s (%s)",
                 (int)(sizeof x->last_error - n - 4), words, code);
        return;
    }
}

/* The steps shared by create and create_linked once the identity is known. */
static int finish_profile(pt_ctx *x, const char *name)
{
    int rc = bind_username(x, name);
    if (rc == PT_ERR_REFUSED) explain_refusal(x);
    if (rc) return rc;
    x->bound = true;
    if ((rc = pt_lstore_begin(x->st)) != 0) return rc;
    rc = save_profile(x);
    if (rc == 0) rc = pt_lstore_commit(x->st);
    else pt_lstore_rollback(x->st);
    if (rc) return rc;
    if ((rc = pt_api_upload_keys(x, true)) != 0) return rc;
    if ((rc = pt_api_sync_contacts(x)) != 0) return rc; /* a linked device starts with the friends */
    return after_connect(x);
}

/* A new store with a new device and Olm account (identity set by the caller). */
static int new_device(pt_ctx *x, const char *password)
{
    int rc = pt_lstore_create(x->home, password, strlen(password), &x->st);
    if (rc == PT_ERR_EXISTS)
        return pt_api_fail(x, rc, "%s already holds a profile; use another --home or remove it", x->home);
    if (rc) return pt_api_fail(x, rc, "cannot create the local store in %s", x->home);
    pt_lstore_subkey(x->st, "olm pickle", x->pickle_key);
    pt_random(x->dev_sk, 32);
    pt_err e = 0;
    if ((rc = pt_x25519_base(x->dev_pk, x->dev_sk)) != 0) return rc;
    if (!(x->acct = pt_olm_account_new(x->env, PT_OLM_SUITES_ALL, &e))) return e ? (int)e : PT_ERR_NOMEM;
    if ((rc = pt_olm_account_generate_fallback_key(x->acct, x->env)) != 0) return rc;
    if ((rc = pt_olm_account_generate_one_time_keys(x->acct, x->env, PT_API_OTK_BATCH)) != 0) return rc;
    pt_olm_account_identity(x->acct, x->my_curve, x->my_ed);
    if (!(x->chat = pt_chat_new(x->env, x->acct))) return PT_ERR_NOMEM;
    if ((rc = pt_lstore_put(x->st, "device", x->dev_sk, 32)) != 0) return rc;
    if ((rc = pt_api_save_account(x)) != 0) return rc;
    return open_client(x);
}

static pt_ctx *create_failed(pt_ctx *x, int rc, pt_err *err)
{
    if (err) *err = (pt_err)rc;
    if (x->st && rc != PT_ERR_EXISTS) {
        pt_lstore_close(x->st);
        x->st = NULL;
        pt_lstore_destroy(x->home);
    }
    if (!x->last_error[0]) pt_api_fail(x, rc, "%s", pt_strerror(rc));
    pt_log_debug("%s", x->last_error);
    snprintf(open_error, sizeof open_error, "%s", x->last_error);
    pt_close(x);
    return NULL;
}

pt_ctx *pt_create(const pt_options *o, const char *password, const char *username, pt_err *err)
{
    pt_ctx *x = ctx_new(o, err);
    if (!x) return NULL;
    if (!password || !username) return create_failed(x, PT_ERR_INVAL, err);
    int rc = new_device(x, password);
    if (rc == 0) rc = new_identity(x);
    if (rc == 0) rc = pt_api_ensure_online(x);
    if (rc == 0) rc = finish_profile(x, username);
    if (rc) return create_failed(x, rc, err);
    if (err) *err = 0;
    return x;
}

pt_ctx *pt_open(const pt_options *o, const char *password, pt_err *err)
{
    pt_ctx *x = ctx_new(o, err);
    if (!x) return NULL;
    int rc = password ? pt_lstore_open(x->home, password, strlen(password), &x->st) : PT_ERR_INVAL;
    if (rc == PT_ERR_NOT_FOUND) pt_api_fail(x, rc, "no profile in %s; run 'packtrack init' first", x->home);
    else if (rc == PT_ERR_PASSWORD) pt_api_fail(x, rc, "wrong password for the profile in %s", x->home);
    if (rc == 0) rc = load_profile(x);
    if (rc == 0 && !x->bound) rc = pt_api_fail(x, PT_ERR_STATE, "the profile in %s was never completed; remove it and run 'packtrack init' again", x->home);
    if (rc == 0) rc = open_client(x);
    if (rc) {
        if (err) *err = (pt_err)rc;
        if (!x->last_error[0]) pt_api_fail(x, rc, "%s", pt_strerror(rc));
        snprintf(open_error, sizeof open_error, "%s", x->last_error);
        pt_close(x); /* the store was only read: nothing to undo */
        return NULL;
    }
    if (err) *err = 0;
    return x;
}

int pt_change_password(pt_ctx *x, const char *pw)
{
    if (!pw || !*pw) return pt_api_fail(x, PT_ERR_INVAL, "the new password is empty");
    int rc = pt_lstore_passwd(x->st, pw, strlen(pw));
    return rc ? pt_api_fail(x, rc, "could not re-seal the store: %s", pt_strerror(rc)) : 0;
}

/* ---- identity ----------------------------------------------------------------------------------- */

const char *pt_username(const pt_ctx *x) { return x->username; }
const char *pt_user_id(const pt_ctx *x) { return x->user_hex; }
const char *pt_identity_fingerprint(const pt_ctx *x) { return x->id_fp; }
pt_status pt_get_status(const pt_ctx *x) { return x->status; }

int pt_set_status(pt_ctx *x, pt_status status)
{
    if (status < PT_PRESENCE_ONLINE || status > PT_PRESENCE_INVISIBLE)
        return pt_api_fail(x, PT_ERR_INVAL, "status must be online, busy, away or invisible");
    int rc;
    PT_API_CALL(rc, x, NULL, users_setStatus, q.status = (int32_t)status);
    if (rc) return rc;
    x->status = status;
    return save_profile(x);
}

/* ---- device links ------------------------------------------------------------------------------ */

#define LINK_LABEL "PT1 device link"

static int link_key(const uint8_t secret[16], uint8_t key[32])
{
    return pt_blake2b(key, 32, (const uint8_t *)LINK_LABEL, sizeof LINK_LABEL - 1, secret, 16);
}

int pt_device_link_code(pt_ctx *x, char code[PT_LINK_CODE_MAX])
{
    uint8_t raw[32], key[32], nonce[PT_XCHACHA_NONCE_LEN];
    pt_random(raw, sizeof raw); /* link id ‖ secret */
    pt_buf plain, blob;
    pt_buf_init(&plain);
    pt_buf_init(&blob);
    int rc = pt_buf_append(&plain, x->id_sk, 64);
    if (rc == 0) rc = pt_wr_str(&plain, x->username);
    uint8_t *p = rc == 0 ? pt_buf_extend(&blob, PT_XCHACHA_NONCE_LEN + plain.len + 16) : NULL;
    if (rc == 0 && !p) rc = PT_ERR_NOMEM;
    if (rc == 0) rc = link_key(raw + 16, key);
    if (rc == 0) {
        pt_random(nonce, sizeof nonce);
        memcpy(p, nonce, sizeof nonce);
        rc = pt_xchacha_seal(p + sizeof nonce, plain.data, plain.len, raw, 16, nonce, key);
    }
    pt_wipe(key, sizeof key);
    pt_buf_free(&plain);
    if (rc == 0)
        PT_API_CALL(rc, x, NULL, devices_putLink, memcpy(q.link_id, raw, 16);
                    q.blob = (pt_tl_bytes){blob.data, (uint32_t)blob.len});
    pt_buf_free(&blob);
    if (rc == 0) {
        char hex[65];
        pt_hex_encode(hex, raw, 32);
        size_t o = 0;
        for (int i = 0; i < 64; i += 8) o += (size_t)snprintf(code + o, PT_LINK_CODE_MAX - o, "%s%.8s", i ? "-" : "", hex + i);
    }
    pt_wipe(raw, sizeof raw);
    return rc;
}

pt_ctx *pt_create_linked(const pt_options *o, const char *password, const char *code, pt_err *err)
{
    pt_ctx *x = ctx_new(o, err);
    if (!x) return NULL;
    char hex[65];
    size_t n = 0;
    for (const char *c = code ? code : ""; *c && n < 64; c++)
        if (*c != '-' && *c != ' ') hex[n++] = *c;
    hex[n] = 0;
    uint8_t raw[32], key[32];
    if (!password || n != 64 || pt_hex_decode(raw, 32, hex) != 0) {
        pt_api_fail(x, PT_ERR_INVAL, "a link code is 64 hex digits (as 'packtrack device link' shows it)");
        return create_failed(x, PT_ERR_INVAL, err);
    }
    int rc = new_device(x, password);
    if (rc == 0) rc = pt_api_ensure_online(x);
    pt_api_reply r = {0};
    if (rc == 0) PT_API_CALL(rc, x, &r, devices_takeLink, memcpy(q.link_id, raw, 16));
    if (rc == PT_ERR_REFUSED)
        pt_api_fail(x, rc, "the link code is unknown, used or expired (codes last 10 minutes); make a new one");
    pt_buf plain;
    pt_buf_init(&plain);
    if (rc == 0) {
        const pt_tl_bytes *b = &r.o.u.devices_link.blob;
        uint8_t *p = b->len > PT_XCHACHA_NONCE_LEN + 16 ? pt_buf_extend(&plain, b->len) : NULL;
        rc = link_key(raw + 16, key);
        if (rc == 0 && (!p || pt_xchacha_open(p, b->data + PT_XCHACHA_NONCE_LEN, b->len - PT_XCHACHA_NONCE_LEN,
                                              raw, 16, b->data, key) != 0))
            rc = pt_api_fail(x, PT_ERR_AUTH, "the link code does not open what the server holds; check the code");
        pt_wipe(key, sizeof key);
    }
    pt_api_reply_free(&r);
    char name[PT_NAME_MAX] = "";
    if (rc == 0) {
        pt_rd rd = {plain.data, plain.len - PT_XCHACHA_NONCE_LEN - 16, false};
        pt_rd_fixed(&rd, x->id_sk, 64);
        pt_rd_str(&rd, name, sizeof name);
        if (rd.bad) rc = pt_api_fail(x, PT_ERR_DECODE, "the linked device sent a damaged profile");
        memcpy(x->id_pk, x->id_sk + 32, 32);
    }
    pt_buf_free(&plain);
    pt_wipe(raw, sizeof raw);
    if (rc == 0) rc = set_identity(x);
    if (rc == 0) rc = pt_lstore_put(x->st, "identity", x->id_sk, 64);
    if (rc == 0) rc = finish_profile(x, name);
    if (rc) return create_failed(x, rc, err);
    if (err) *err = 0;
    return x;
}

int pt_set_read_receipts(pt_ctx *x, int on)
{
    x->no_read_receipts = !on;
    return save_profile(x);
}

int pt_get_read_receipts(const pt_ctx *x) { return !x->no_read_receipts; }

int pt_set_typing_notifications(pt_ctx *x, int on)
{
    x->no_typing = !on;
    return save_profile(x);
}

int pt_get_typing_notifications(const pt_ctx *x) { return !x->no_typing; }
