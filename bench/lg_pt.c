/* bench/loadgen driver: packtrackd through our own client (src/client): the
 * secure channel, the session layer and the messaging RPCs of PROTOCOL.md §6.
 *
 * Stage 1: connect (IK with the pinned server key) and auth.bindUsername
 * "lg<i>" with a fresh Ed25519 identity and its device certificate. Stage 2
 * (senders only): users.resolve "lg<peer>". A message is messages.send(peer,
 * payload); its sender ack is messages.sent (durable), its delivery
 * updates.newMessage. The receiver confirms with messages.confirm (the notice that
 * nothing answers, as libpacktrack sends it): by default what one read delivered,
 * at once (libpacktrack confirms each message as soon as it has stored it); with
 * --confirm N, every N deliveries or 20 ms. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "client/pt_client.h"
#include "crypto/pt_crypto.h"
#include "lg.h"
#include "pt_tl.h"
#include "wire/pt_wire.h"

#define CONFIRM_EVERY_NS 20000000ull

typedef struct ptc {
    lg_run *run;
    lg_client *c;
    pt_client *cl;
    uint8_t id_pk[32], id_sk[64];   /* the user's identity key */
    uint8_t peer_id[16];            /* from users.resolve */
    uint64_t waiting;               /* msg_id of the setup call awaited */
    int64_t *confirm;               /* delivered server ids not yet confirmed */
    size_t nconfirm, confirm_cap;
    uint64_t last_confirm_ns;
    pt_buf body;                    /* encoding scratch */
} ptc;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The clients' secrets come from a secure heap, as the server's do: without one each
 * connection is about 11 mappings and vm.max_map_count stops loadgen near 5,500. */
#define LG_SECURE_HEAP (64u << 20) /* ~60,000 connections */

static int pt_init_drv(lg_run *r)
{
    (void)r;
    if (pt_init() != 0) return -1;
    int rc = pt_secure_heap_init(LG_SECURE_HEAP, NULL, NULL);
    if (rc != 0 && rc != PT_ERR_EXISTS && rc != PT_ERR_REFUSED)
        fprintf(stderr, "loadgen: no secure heap (%s): a mapping group per secret\n", pt_strerror(rc));
    return 0;
}

static void on_event(void *ud, const pt_sess_event *ev)
{
    ptc *p = ud;
    static uint8_t am[65536];
    pt_arena a;
    pt_arena_init(&a, am, sizeof am);
    pt_tl_obj o;
    if (ev->type == PT_SESS_EV_UPDATE) {
        if (pt_tl_decode_any(&o, ev->body, ev->len, &a) != 0) {
            lg_note_error(p->run, "undecodable update");
            return;
        }
        if (o.id != PT_TL_UPDATES_NEWMESSAGE_ID) return;
        const pt_tl_updates_newMessage *u = &o.u.updates_newMessage;
        if (p->nconfirm == p->confirm_cap) {
            size_t cap = p->confirm_cap ? 2 * p->confirm_cap : 256;
            int64_t *n = realloc(p->confirm, cap * sizeof *n);
            if (!n) {
                lg_note_error(p->run, "out of memory");
                return;
            }
            p->confirm = n;
            p->confirm_cap = cap;
        }
        p->confirm[p->nconfirm++] = u->server_id;
        lg_delivered(p->run, p->c, u->envelope.data, u->envelope.len);
        return;
    }
    if (ev->type != PT_SESS_EV_RESULT) return;
    if (pt_tl_decode_any(&o, ev->body, ev->len, &a) != 0) {
        lg_note_error(p->run, "undecodable result");
        return;
    }
    bool setup = p->waiting && ev->req_msg_id == p->waiting;
    switch (o.id) {
    case PT_TL_MESSAGES_SENT_ID:
        lg_acked(p->run, p->c, ev->req_msg_id, true);
        break;
    case PT_TL_AUTH_BOUND_ID:
        if (setup) p->c->stage = 1, p->waiting = 0;
        break;
    case PT_TL_USERS_USER_ID:
        if (setup) {
            memcpy(p->peer_id, o.u.users_user.user_id, 16);
            p->c->stage = 2;
            p->waiting = 0;
        }
        break;
    case PT_TL_RPC_ERROR_ID:
        fprintf(stderr, "loadgen: pt client %u: rpc_error %d %.*s\n", p->c->idx,
                o.u.rpc_error.error_code, (int)o.u.rpc_error.error_message.len,
                (const char *)o.u.rpc_error.error_message.data);
        if (setup) {
            p->c->stage = -1; /* the core stops the run */
        } else {
            lg_note_error(p->run, "rpc_error");
            lg_acked(p->run, p->c, ev->req_msg_id, false);
        }
        break;
    default:
        break;
    }
}

static int call(ptc *p)
{
    int rc = pt_client_send(p->cl, p->body.data, p->body.len, &p->waiting);
    pt_buf_reset(&p->body);
    if (rc) return rc;
    return pt_client_pump(p->cl, 0, on_event, p);
}

static int ptlg_connect(lg_run *r, lg_client *c)
{
    const lg_opts *o = lg_options(r);
    ptc *p = calloc(1, sizeof *p);
    if (!p) return -1;
    c->drv = p;
    p->run = r;
    p->c = c;
    pt_buf_init(&p->body);
    char home[1024];
    snprintf(home, sizeof home, "%s/c%u", o->home_dir, c->idx);
    const char *fp = o->nfingerprints ? o->fingerprints[c->idx % o->nfingerprints] : NULL;
    pt_client_config cfg = {.home = home, .server_fingerprint = fp};
    int err = 0;
    if (!(p->cl = pt_client_new(&cfg, &err))) {
        fprintf(stderr, "loadgen: pt client %u: %s\n", c->idx, pt_strerror(err));
        return -1;
    }
    if ((err = pt_client_connect(p->cl, o->host, lg_port_of(o, c->idx))) != 0) {
        fprintf(stderr, "loadgen: pt client %u: connect: %s\n", c->idx, pt_strerror(err));
        return -1;
    }
    c->fd = pt_client_fd(p->cl);
    /* auth.bindUsername: a new identity, its certificate over our device key */
    if (pt_ed25519_keypair(p->id_pk, p->id_sk) != 0) return -1;
    uint8_t msg[15 + 32], cert[64];
    memcpy(msg, "PT1 device cert", 15);
    memcpy(msg + 15, pt_client_device_key(p->cl), 32);
    if (pt_ed25519_sign(cert, msg, sizeof msg, p->id_sk) != 0) return -1;
    char name[32];
    snprintf(name, sizeof name, "lg%u", c->idx);
    pt_tl_auth_bindUsername b = {.name = {(const uint8_t *)name, (uint32_t)strlen(name)},
                                 .device_cert = {cert, 64}};
    memcpy(b.identity_key, p->id_pk, 32);
    if (pt_tl_auth_bindUsername_encode(&p->body, &b) != 0) return -1;
    return call(p);
}

static int pt_start_stage(lg_run *r, lg_client *c, int k)
{
    (void)r;
    ptc *p = c->drv;
    if (k != 2) return -1;
    char name[32];
    snprintf(name, sizeof name, "lg%u", c->peer);
    pt_tl_users_resolve q = {.name = {(const uint8_t *)name, (uint32_t)strlen(name)}};
    if (pt_tl_users_resolve_encode(&p->body, &q) != 0) return -1;
    return call(p);
}

static int send_confirm(ptc *p)
{
    p->last_confirm_ns = now_ns();
    if (p->nconfirm == 0) return 0;
    pt_tl_messages_confirm q = {.server_ids = {.n = (uint32_t)p->nconfirm, .items = p->confirm}};
    int rc = pt_tl_messages_confirm_encode(&p->body, &q);
    if (rc == 0) rc = pt_client_send(p->cl, p->body.data, p->body.len, NULL);
    pt_buf_reset(&p->body);
    p->nconfirm = 0;
    return rc;
}

/* Writes what is queued without waiting; a full socket asks the core for EPOLLOUT. */
static int flush_now(lg_client *c, ptc *p)
{
    int rc = pt_client_flush(p->cl);
    c->want_out = rc == 0 && pt_client_out_pending(p->cl) > 0;
    return rc;
}

static int pt_input(lg_run *r, lg_client *c)
{
    ptc *p = c->drv;
    /* the core saw the socket readable: one read, no poll, no write (pt_client_read);
     * the acks and confirmations it produced go out with the core's flush */
    int rc = pt_client_read(p->cl, on_event, p);
    if (rc) {
        fprintf(stderr, "loadgen: pt client %u: %s\n", c->idx, pt_strerror(rc));
        return -1;
    }
    if (c->stage < 0) return -1;
    size_t batch = (size_t)lg_options(r)->confirm_batch;
    if (p->nconfirm && p->nconfirm >= (batch ? batch : 1)) { /* 0: what this read delivered */
        if (send_confirm(p)) return -1;
    }
    return 0;
}

static int ptlg_send(lg_run *r, lg_client *c, const uint8_t *payload, size_t len, uint64_t *tag)
{
    (void)r;
    ptc *p = c->drv;
    pt_tl_messages_send m = {.envelope = {payload, (uint32_t)len}};
    memcpy(m.to, p->peer_id, 16);
    int rc = pt_tl_messages_send_encode(&p->body, &m);
    if (rc == 0) rc = pt_client_send(p->cl, p->body.data, p->body.len, tag);
    pt_buf_reset(&p->body);
    return rc ? -1 : 0;
}

static int pt_flush(lg_run *r, lg_client *c)
{
    (void)r;
    ptc *p = c->drv;
    if (c->stage < 2) return pt_client_pump(p->cl, 0, on_event, p) ? -1 : 0; /* setup */
    return flush_now(c, p) ? -1 : 0;
}

static int pt_tick(lg_run *r, lg_client *c, bool force)
{
    (void)r;
    ptc *p = c->drv;
    if (!p || c->stage < 2) return 0;
    bool confirm = p->nconfirm && (force || now_ns() - p->last_confirm_ns >= CONFIRM_EVERY_NS);
    /* the session's acks fall due on their own when nothing else goes out */
    if (!confirm && pt_sess_ack_wait_ms(pt_client_session(p->cl)) != 0) return 0;
    if (confirm && send_confirm(p)) return -1;
    return flush_now(c, p) ? -1 : 0;
}

static void ptlg_close(lg_run *r, lg_client *c)
{
    (void)r;
    ptc *p = c->drv;
    if (!p) return;
    pt_client_free(p->cl);
    pt_buf_free(&p->body);
    free(p->confirm);
    pt_wipe(p->id_sk, sizeof p->id_sk);
    free(p);
    c->drv = NULL;
    c->fd = -1; /* closed by pt_client_free */
}

const lg_driver lg_driver_pt = {
    .name = "pt",
    .acks = true,
    .stages = 2,
    .init = pt_init_drv,
    .connect = ptlg_connect,
    .start_stage = pt_start_stage,
    .input = pt_input,
    .send = ptlg_send,
    .flush = pt_flush,
    .tick = pt_tick,
    .close = ptlg_close,
};
