/* The RPCs packtrackd answers. Each handler decodes its request with the
 * generated codecs and queues exactly one rpc_result; the one notice
 * (messages.confirm) is answered by nothing. */
#include "pt_tl.h"
#include "server/pt_server_int.h"
#include "wire/pt_wire.h"

void pt_srv_reply(pt_srv_sess *e, uint64_t req, const pt_buf *result)
{
    int rc = pt_sess_reply(e->sess, req, result->data, result->len);
    if (rc) {
        pt_log_warn("session %016llx: cannot queue reply: %s", (unsigned long long)e->session_id,
                    pt_strerror(rc));
        return;
    }
    /* while its input is being processed, the connection flushes afterwards */
    if (e->conn && !e->conn->in_input && pt_conn_flush(e->conn) != 0)
        pt_conn_close(e->conn, "flush failed");
}

void pt_srv_reply_error(pt_srv_sess *e, uint64_t req, int code, const char *msg)
{
    pt_buf b;
    pt_buf_init(&b);
    pt_tl_rpc_error err = {.error_code = code,
                           .error_message = {(const uint8_t *)msg, (uint32_t)strlen(msg)}};
    if (pt_tl_rpc_error_encode(&b, &err) == 0) pt_srv_reply(e, req, &b);
    pt_buf_free(&b);
}

static void reply_encoded(pt_conn *c, uint64_t req, pt_buf *b, int rc)
{
    if (rc == 0) pt_srv_reply(c->sess, req, b);
    else pt_log_warn("conn %s: cannot encode reply: %s", c->peer, pt_strerror(rc));
}

static void reply_error(pt_conn *c, uint64_t req, int code, const char *msg)
{
    pt_srv_reply_error(c->sess, req, code, msg);
}

void pt_srv_rpc(pt_conn *c, uint64_t msg_id, const uint8_t *body, size_t len)
{
    static _Thread_local uint8_t arena_mem[PT_CHAN_RECORD_MAX];
    pt_arena a;
    pt_arena_init(&a, arena_mem, sizeof arena_mem);
    pt_tl_obj o;
    if (pt_tl_decode_any(&o, body, len, &a) != 0) {
        if (len >= 4 && pt_get_u32le(body) == PT_TL_MESSAGES_CONFIRM_ID) /* a notice: no answer */
            pt_log_warn("conn %s: a messages.confirm that does not parse; ignored", c->peer);
        else
            reply_error(c, msg_id, PT_RPC_BAD_REQUEST, "BAD_REQUEST");
        return;
    }
    pt_buf b;
    pt_buf_init(&b);
    switch (o.id) {
    case PT_TL_PT_ECHO_ID: {
        pt_tl_pt_echoResult r = {.payload = o.u.pt_echo.payload};
        reply_encoded(c, msg_id, &b, pt_tl_pt_echoResult_encode(&b, &r));
        break;
    }
    case PT_TL_DESTROY_SESSION_ID: {
        /* Only another session of the same device, never the one asking. */
        uint64_t sid = (uint64_t)o.u.destroy_session.session_id;
        pt_srv_sess *e = sid == c->sess->session_id
                             ? NULL
                             : pt_srv_sess_lookup(c->srv, c->sess->device_pk, sid);
        int rc;
        if (e) {
            if (e->conn) pt_conn_close(e->conn, "session destroyed");
            pt_srv_sess_destroy(c->srv, e);
            pt_tl_destroy_session_ok r = {.session_id = (int64_t)sid};
            rc = pt_tl_destroy_session_ok_encode(&b, &r);
        } else {
            pt_tl_destroy_session_none r = {.session_id = (int64_t)sid};
            rc = pt_tl_destroy_session_none_encode(&b, &r);
        }
        reply_encoded(c, msg_id, &b, rc);
        break;
    }
    case PT_TL_MESSAGES_CONFIRM_ID: /* a notice: never answered, not even with an error */
        if (!c->srv->db)
            pt_log_debug("conn %s: messages.confirm while shutting down: delivered again", c->peer);
        else if (c->dev && c->dev->bound && pt_srv_user_banned(c->srv, c->dev->user_id))
            pt_log_debug("conn %s: messages.confirm of a banned user: ignored", c->peer);
        else
            pt_srv_messaging_rpc(c, msg_id, o.id, &o.u);
        break;
    default:
        if (!c->srv->db) /* shutting down: the store is closed */
            reply_error(c, msg_id, PT_RPC_UNAVAILABLE, "SHUTTING_DOWN");
        else if (c->dev && c->dev->bound && pt_srv_user_banned(c->srv, c->dev->user_id))
            reply_error(c, msg_id, PT_RPC_FORBIDDEN, "USER_BANNED"); /* packtrackctl user ban */
        else if (!pt_srv_messaging_rpc(c, msg_id, o.id, &o.u) &&
                 !pt_srv_presence_rpc(c, msg_id, o.id, &o.u) &&
                 !pt_srv_contacts_rpc(c, msg_id, o.id, &o.u) &&
                 !pt_srv_prekeys_rpc(c, msg_id, o.id, &o.u) &&
                 !pt_srv_groups_rpc(c, msg_id, o.id, &o.u) &&
                 !pt_srv_devices_rpc(c, msg_id, o.id, &o.u) &&
                 !pt_srv_addrs_rpc(c, msg_id, o.id, &o.u))
            reply_error(c, msg_id, PT_RPC_BAD_REQUEST, "METHOD_UNKNOWN");
    }
    pt_buf_free(&b);
}
