#include <stdlib.h>
#include <zlib.h>

#include "crypto/pt_crypto.h"
#include "pt_tl.h"
#include "session/pt_sess.h"
#include "wire/pt_wire.h"

/* One outgoing message. Content messages stay here until acknowledged. */
typedef struct omsg {
    uint64_t msg_id;
    uint64_t orig_id;      /* the id the application was given (msg_id may be renewed) */
    uint64_t container_id; /* the container it last travelled in, 0 if plain */
    uint32_t seqno;
    uint32_t len;
    bool content;   /* content-related: acknowledged and resent until then */
    bool sent;      /* emitted on the current connection */
    bool ever_sent; /* emitted at least once: a resend must travel in a container */
    uint8_t body[]; /* len bytes */
} omsg;

struct pt_sess {
    const pt_env *env;
    pt_sess_role role;
    uint64_t session_id;
    uint8_t salt_secret[PT_SESS_SALT_SECRET_LEN]; /* server */
    uint64_t salt;                 /* client: salt put in our records */
    uint64_t salt_period;          /* server: the salt period the two below are for (+1) */
    uint64_t salt_cur, salt_prev;  /* server: its salts, computed once per period */
    int64_t time_offset_ms;        /* client: server clock minus ours */
    uint64_t last_msg_id;          /* last id generated; ids strictly increase */
    uint64_t renewals;             /* client: times the session restarted (clock correction) */
    bool renew_pending;            /* client: restart once the current record is processed */
    int64_t renew_correction_ms;   /* client: the last clock correction, for the log */
    uint32_t content_sent;         /* content messages we created */
    uint32_t content_recv;         /* content messages we accepted */
    bool fresh;                    /* server: created for a client that may be resuming */
    uint64_t msgs_in;              /* messages received, containers' contents included */
    omsg **q;                      /* outgoing, in send order */
    size_t qn, qcap;
    bool q_unordered;              /* q is not in msg_id order (find_out) */
    uint64_t *acks;                /* received content msg_ids to acknowledge */
    size_t nacks, acks_cap;
    uint64_t acks_since_ms;        /* clock when the first of them was received */
    uint64_t *win;                 /* received msg_ids, sorted ascending; grows to
                                    * PT_SESS_WINDOW (an idle session holds a few) */
    size_t win_cap;
    size_t win_n;
    uint64_t win_floor;            /* ids <= this were forgotten (0: none yet) */
    uint64_t max_recv_id;
    uint64_t (*renamed)[2];        /* (new id, original id) of acked renewed messages:
                                    * PT_SESS_RENAMED, made at the first one */
    size_t renamed_next;
    pt_buf rec;                    /* record being built by flush */
    pt_buf tmp;                    /* encoding scratch */
    uint64_t in_now_ms;            /* while pt_sess_input processes a record or pt_sess_flush
                                    * runs: the clock read for it, used for what it sends
                                    * too; 0 otherwise */
    uint64_t probe_ms;             /* clock of the last probe (pt_sess_probe), 0: none */
    uint64_t probe_id;             /* its ping's msg_id */
};

/* Scratch for decoding: an arena for vectors and a buffer for gunzip. One per
 * thread, so sessions cost no memory for them. */
static _Thread_local uint8_t arena_mem[PT_CHAN_RECORD_MAX + 4096];
static _Thread_local uint8_t gunzip_mem[PT_SESS_BODY_MAX];

/* ---- salts ------------------------------------------------------------------------ */

/* The clock: read once per record received, for its checks and the replies it makes
 * (a clock read per message was 3 % of a loaded server's CPU), and once per flush;
 * outside those, a new reading. */
static uint64_t now_ms(const pt_sess *s) { return s->in_now_ms ? s->in_now_ms : pt_env_now_ms(s->env); }

uint64_t pt_sess_salt_for(const uint8_t secret[static PT_SESS_SALT_SECRET_LEN], uint64_t now_ms)
{
    uint8_t period[8], out[16]; /* BLAKE2b's shortest output is 16 bytes */
    pt_put_u64le(period, now_ms / 1000 / PT_SESS_SALT_PERIOD_S);
    if (pt_blake2b(out, sizeof out, period, sizeof period, secret, PT_SESS_SALT_SECRET_LEN) != 0)
        PT_ASSERT(!"BLAKE2b with valid lengths cannot fail");
    return pt_get_u64le(out);
}

bool pt_sess_salt_valid(const uint8_t secret[static PT_SESS_SALT_SECRET_LEN], uint64_t salt,
                        uint64_t now_ms)
{
    uint64_t cur = pt_sess_salt_for(secret, now_ms);
    uint64_t into_period_s = now_ms / 1000 % PT_SESS_SALT_PERIOD_S;
    uint64_t prev = now_ms >= PT_SESS_SALT_PERIOD_S * 1000ull
                        ? pt_sess_salt_for(secret, now_ms - PT_SESS_SALT_PERIOD_S * 1000ull)
                        : cur;
    return salt == cur || (into_period_s < PT_SESS_SALT_GRACE_S && salt == prev);
}

/* The salts of now_ms's period and the one before, kept for the period: two BLAKE2b
 * per record in (pt_sess_salt_valid) were 4 % of a loaded server's CPU, and one per
 * record out (pt_sess_salt_for) 2 %. */
static void salt_refresh(pt_sess *s, uint64_t now_ms)
{
    uint64_t period = now_ms / 1000 / PT_SESS_SALT_PERIOD_S + 1; /* 0: nothing kept */
    if (period == s->salt_period) return;
    s->salt_cur = pt_sess_salt_for(s->salt_secret, now_ms);
    s->salt_prev = now_ms >= PT_SESS_SALT_PERIOD_S * 1000ull
                       ? pt_sess_salt_for(s->salt_secret, now_ms - PT_SESS_SALT_PERIOD_S * 1000ull)
                       : s->salt_cur;
    s->salt_period = period;
}

static bool salt_ok(pt_sess *s, uint64_t salt, uint64_t now_ms)
{
    salt_refresh(s, now_ms);
    uint64_t into_period_s = now_ms / 1000 % PT_SESS_SALT_PERIOD_S;
    return salt == s->salt_cur || (into_period_s < PT_SESS_SALT_GRACE_S && salt == s->salt_prev);
}

/* ---- lifetime ------------------------------------------------------------------- */

pt_sess *pt_sess_new(const pt_env *env, const pt_sess_config *cfg)
{
    PT_ASSERT(cfg->role != PT_SESS_SERVER || cfg->salt_secret);
    pt_sess *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->env = env;
    s->role = cfg->role;
    s->session_id = cfg->session_id;
    if (cfg->salt_secret) memcpy(s->salt_secret, cfg->salt_secret, PT_SESS_SALT_SECRET_LEN);
    s->salt = cfg->salt;
    s->time_offset_ms = cfg->time_offset_ms;
    pt_buf_init(&s->rec);
    pt_buf_init(&s->tmp);
    return s;
}

void pt_sess_trim(pt_sess *s)
{
    if (!s) return;
    pt_buf_free(&s->rec); /* scratch of one flush or one call: reset before each use */
    pt_buf_free(&s->tmp);
    if (s->qn == 0) {
        free(s->q);
        s->q = NULL;
        s->qcap = 0;
    }
    if (s->nacks == 0) {
        free(s->acks);
        s->acks = NULL;
        s->acks_cap = 0;
    }
}

void pt_sess_free(pt_sess *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->qn; i++) free(s->q[i]);
    free(s->q);
    free(s->acks);
    free(s->win);
    free(s->renamed);
    pt_buf_free(&s->rec);
    pt_buf_free(&s->tmp);
    pt_wipe(s->salt_secret, sizeof s->salt_secret);
    free(s);
}

uint64_t pt_sess_id(const pt_sess *s) { return s->session_id; }
uint64_t pt_sess_renewals(const pt_sess *s) { return s->renewals; }
int64_t pt_sess_time_offset_ms(const pt_sess *s) { return s->time_offset_ms; }
uint64_t pt_sess_messages_in(const pt_sess *s) { return s->msgs_in; }

size_t pt_sess_unacked(const pt_sess *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->qn; i++) n += s->q[i]->content;
    return n;
}

uint64_t pt_sess_salt_now(pt_sess *s)
{
    if (s->role != PT_SESS_SERVER) return s->salt;
    salt_refresh(s, now_ms(s));
    return s->salt_cur;
}

/* Acknowledgements wait for other output to travel with: an answer acknowledges its
 * request itself (an rpc_result or a pong: no msgs_ack), and a msgs_ack inside a record
 * that goes anyway costs no record, write or wake-up of its own. They go alone once
 * the oldest has waited PT_SESS_ACK_DELAY_MS, or once PT_SESS_ACK_BATCH are pending. */
static bool acks_due(const pt_sess *s, uint64_t now)
{
    if (s->nacks >= PT_SESS_ACK_BATCH) return true;
    /* a clock that went back makes them due at once */
    return s->nacks && (now < s->acks_since_ms || now - s->acks_since_ms >= PT_SESS_ACK_DELAY_MS);
}

bool pt_sess_has_output(const pt_sess *s)
{
    for (size_t i = 0; i < s->qn; i++)
        if (!s->q[i]->sent) return true;
    return acks_due(s, pt_env_now_ms(s->env));
}

bool pt_sess_acks_pending(const pt_sess *s) { return s->nacks > 0; }

void pt_sess_acks_now(pt_sess *s) { s->acks_since_ms = 0; }

int64_t pt_sess_ack_wait_ms(const pt_sess *s)
{
    if (!s->nacks) return -1;
    uint64_t now = pt_env_now_ms(s->env);
    if (acks_due(s, now)) return 0;
    return (int64_t)(s->acks_since_ms + PT_SESS_ACK_DELAY_MS - now);
}

/* ---- ids ---------------------------------------------------------------------------- */

/* The id of (corrected) clock time ms from now (ms <= 0: the past), low bits clear. */
static uint64_t id_in(const pt_sess *s, int64_t ms)
{
    int64_t at = (int64_t)now_ms(s) + s->time_offset_ms + ms;
    uint64_t t = at > 0 ? (uint64_t)at : 0;
    return ((t / 1000) << 32 | ((t % 1000) << 32) / 1000) & ~3ull;
}

static uint64_t id_now(const pt_sess *s) { return id_in(s, 0); }

/* Client ids = 0 mod 4; server replies = 1, server-initiated = 3. The upper 32
 * bits are unix time; ids strictly increase. */
static uint64_t gen_msg_id(pt_sess *s, bool response)
{
    uint64_t low = s->role == PT_SESS_CLIENT ? 0 : response ? 1 : 3;
    uint64_t id = id_now(s) | low;
    if (id <= s->last_msg_id) id = ((s->last_msg_id & ~3ull) + 4) | low;
    s->last_msg_id = id;
    return id;
}

static uint32_t gen_seqno(pt_sess *s, bool content)
{
    return content ? 2 * s->content_sent++ + 1 : 2 * s->content_sent;
}

/* ---- the outgoing queue ----------------------------------------------------------- */

static int enqueue(pt_sess *s, const uint8_t *body, size_t len, bool content, bool response,
                   uint64_t *msg_id)
{
    if (len > PT_SESS_BODY_MAX) return PT_ERR_TOO_BIG;
    if (s->qn == s->qcap) {
        size_t cap = s->qcap ? 2 * s->qcap : 16;
        omsg **q = realloc(s->q, cap * sizeof *q);
        if (!q) return PT_ERR_NOMEM;
        s->q = q;
        s->qcap = cap;
    }
    omsg *m = malloc(sizeof *m + len);
    if (!m) return PT_ERR_NOMEM;
    m->msg_id = m->orig_id = gen_msg_id(s, response);
    m->container_id = 0;
    m->seqno = gen_seqno(s, content);
    m->len = (uint32_t)len;
    m->content = content;
    m->sent = m->ever_sent = false;
    memcpy(m->body, body, len);
    if (s->qn && s->q[s->qn - 1]->msg_id >= m->msg_id) s->q_unordered = true; /* ids wrapped */
    s->q[s->qn++] = m;
    if (msg_id) *msg_id = m->msg_id;
    return 0;
}

/* The queue is in send order, and ids grow with it: they strictly increase as
 * messages are queued, and a session renewal renumbers the whole queue in order, so a
 * binary search finds an id (with acks 30 ms late at 169,000 msgs/s the scan from the
 * front was 3 % of the server's CPU). Two things break the order, and set
 * q_unordered until the queue is empty or renumbered: a message a
 * bad_msg_notification renews keeps its place (and its seqno, which the peer checks
 * in order) with an id above those after it, and ids from a clock offset a hostile
 * server made can wrap around. Then a miss falls back to the scan. */
static omsg *find_out(const pt_sess *s, uint64_t msg_id, size_t *idx)
{
    size_t lo = 0, hi = s->qn;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->q[mid]->msg_id < msg_id) lo = mid + 1;
        else hi = mid;
    }
    if (lo == s->qn || s->q[lo]->msg_id != msg_id) {
        if (!s->q_unordered) return NULL;
        for (lo = 0; lo < s->qn && s->q[lo]->msg_id != msg_id; lo++) {}
        if (lo == s->qn) return NULL;
    }
    if (idx) *idx = lo;
    return s->q[lo];
}

static void remove_out(pt_sess *s, size_t i)
{
    free(s->q[i]);
    memmove(&s->q[i], &s->q[i + 1], (s->qn - i - 1) * sizeof *s->q);
    s->qn--;
    if (s->qn == 0) s->q_unordered = false;
}

/* The id the application knows for one of our messages, which may have been
 * renewed after a bad_msg_notification. */
static uint64_t orig_id_of(const pt_sess *s, uint64_t msg_id)
{
    const omsg *m = find_out(s, msg_id, NULL);
    if (m) return m->orig_id;
    for (size_t i = 0; s->renamed && i < PT_SESS_RENAMED; i++)
        if (s->renamed[i][0] == msg_id) return s->renamed[i][1];
    return msg_id;
}

/* An acknowledgement (explicit or implied by a reply) for one of our messages. */
static void acked(pt_sess *s, uint64_t msg_id, pt_sess_event_cb cb, void *ud)
{
    size_t i;
    omsg *m = find_out(s, msg_id, &i);
    if (!m || !m->content || !m->ever_sent) return;
    pt_sess_event ev = {.type = PT_SESS_EV_ACKED, .msg_id = m->orig_id};
    if (m->orig_id != m->msg_id && !s->renamed)
        s->renamed = calloc(PT_SESS_RENAMED, sizeof *s->renamed); /* NULL: replies naming it lost */
    if (m->orig_id != m->msg_id && s->renamed) { /* a reply may still name the renewed id */
        s->renamed[s->renamed_next][0] = m->msg_id;
        s->renamed[s->renamed_next][1] = m->orig_id;
        s->renamed_next = (s->renamed_next + 1) % PT_SESS_RENAMED;
    }
    remove_out(s, i);
    cb(ud, &ev);
}

static int queue_encoded(pt_sess *s, int rc, bool content, bool response, uint64_t *msg_id)
{
    if (rc == 0) rc = enqueue(s, s->tmp.data, s->tmp.len, content, response, msg_id);
    pt_buf_reset(&s->tmp);
    return rc;
}

int pt_sess_send(pt_sess *s, const uint8_t *body, size_t len, bool gzip, uint64_t *msg_id)
{
    if (len < 4 || len % 4) return PT_ERR_INVAL;
    if (s->qn >= PT_SESS_MAX_QUEUED) return PT_ERR_AGAIN;
    if (gzip && len > 256) {
        uLongf zlen = compressBound((uLong)len) + 32;
        uint8_t *z = malloc(zlen);
        z_stream zs = {0};
        int ok = z && deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8,
                                   Z_DEFAULT_STRATEGY) == Z_OK;
        if (ok) {
            zs.next_in = (Bytef *)body;
            zs.avail_in = (uInt)len;
            zs.next_out = z;
            zs.avail_out = (uInt)zlen;
            ok = deflate(&zs, Z_FINISH) == Z_STREAM_END;
            deflateEnd(&zs);
        }
        if (ok && zs.total_out + 12 < len) {
            pt_tl_gzip_packed g = {.packed_data = {z, (uint32_t)zs.total_out}};
            int rc = queue_encoded(s, pt_tl_gzip_packed_encode(&s->tmp, &g), true,
                                   s->role == PT_SESS_SERVER ? false : false, msg_id);
            free(z);
            return rc;
        }
        free(z);
    }
    return enqueue(s, body, len, true, false, msg_id);
}

/* An answer (rpc_result, pong) acknowledges the message it answers: that one's pending
 * ack is not sent. The request is usually among the last ones received. */
static void drop_ack(pt_sess *s, uint64_t id)
{
    for (size_t i = s->nacks; i-- > 0;) {
        if (s->acks[i] == id) {
            s->acks[i] = s->acks[--s->nacks]; /* their order does not matter */
            return;
        }
    }
}

int pt_sess_reply(pt_sess *s, uint64_t req_msg_id, const uint8_t *result, size_t len)
{
    if (s->role != PT_SESS_SERVER) return PT_ERR_STATE;
    pt_tl_rpc_result r = {.req_msg_id = (int64_t)req_msg_id, .result = {result, (uint32_t)len}};
    int rc = queue_encoded(s, pt_tl_rpc_result_encode(&s->tmp, &r), true, true, NULL);
    if (rc == 0) drop_ack(s, req_msg_id);
    return rc;
}

int pt_sess_ping(pt_sess *s, int64_t ping_id, uint64_t *msg_id)
{
    pt_tl_ping p = {.ping_id = ping_id};
    return queue_encoded(s, pt_tl_ping_encode(&s->tmp, &p), true, false, msg_id);
}

int pt_sess_probe(pt_sess *s, uint64_t age_ms)
{
    uint64_t now = now_ms(s);
    if (s->probe_ms && now - s->probe_ms < PT_SESS_PROBE_EVERY_MS) return 0;
    if (s->probe_id && find_out(s, s->probe_id, NULL)) return 0; /* the last one is out */
    /* the oldest content message sent: ids carry the clock they were made at (the
     * queue is in send order; a renewed id is newer, which only delays the probe) */
    const omsg *old = NULL;
    for (size_t i = 0; i < s->qn && !old; i++)
        if (s->q[i]->content && s->q[i]->ever_sent) old = s->q[i];
    if (!old || old->msg_id >= id_in(s, -(int64_t)age_ms)) return 0;
    int rc = pt_sess_ping(s, (int64_t)now, &s->probe_id);
    if (rc) return rc;
    s->probe_ms = now;
    return 1;
}

int pt_sess_created(pt_sess *s, uint64_t first_msg_id)
{
    if (s->role != PT_SESS_SERVER) return PT_ERR_STATE;
    s->fresh = true;
    uint64_t unique;
    pt_env_random(s->env, &unique, sizeof unique);
    pt_tl_new_session_created n = {.first_msg_id = (int64_t)first_msg_id,
                                   .unique_id = (int64_t)unique,
                                   .server_salt = (int64_t)pt_sess_salt_now(s)};
    return queue_encoded(s, pt_tl_new_session_created_encode(&s->tmp, &n), true, false, NULL);
}

int pt_sess_state_req(pt_sess *s, const uint64_t *ids, size_t n)
{
    pt_tl_msgs_state_req r = {.msg_ids = {.n = (uint32_t)n, .items = (int64_t *)ids}};
    return queue_encoded(s, pt_tl_msgs_state_req_encode(&s->tmp, &r), false, false, NULL);
}

static int notify_bad(pt_sess *s, uint64_t bad_id, uint32_t bad_seqno, int code)
{
    pt_log_debug("session %016llx: bad msg %016llx seqno %u: code %d",
                 (unsigned long long)s->session_id, (unsigned long long)bad_id, bad_seqno, code);
    int rc;
    if (code == PT_BAD_MSG_SALT) {
        pt_tl_bad_server_salt b = {.bad_msg_id = (int64_t)bad_id,
                                   .bad_msg_seqno = (int32_t)bad_seqno,
                                   .error_code = code,
                                   .new_server_salt = (int64_t)pt_sess_salt_now(s)};
        rc = pt_tl_bad_server_salt_encode(&s->tmp, &b);
    } else {
        pt_tl_bad_msg_notification b = {.bad_msg_id = (int64_t)bad_id,
                                        .bad_msg_seqno = (int32_t)bad_seqno,
                                        .error_code = code};
        rc = pt_tl_bad_msg_notification_encode(&s->tmp, &b);
    }
    return queue_encoded(s, rc, false, true, NULL);
}

void pt_sess_resume(pt_sess *s)
{
    for (size_t i = 0; i < s->qn; i++) s->q[i]->sent = false;
}

/* ---- flush ------------------------------------------------------------------------- */

static uint8_t *rec_header(pt_sess *s, uint64_t msg_id, uint32_t seqno)
{
    pt_buf_reset(&s->rec);
    uint8_t *h = pt_buf_extend(&s->rec, PT_SESS_HDR_LEN);
    if (!h) return NULL;
    pt_put_u64le(h, pt_sess_salt_now(s));
    pt_put_u64le(h + 8, s->session_id);
    pt_put_u64le(h + 16, msg_id);
    pt_put_u32le(h + 24, seqno);
    pt_put_u32le(h + 28, 0);
    return h;
}

static void rec_finish(pt_sess *s) { pt_put_u32le(s->rec.data + 28, (uint32_t)(s->rec.len - PT_SESS_HDR_LEN)); }

/* Builds the msgs_ack messages for pending acks (appended to the queue unsent). */
static int queue_acks(pt_sess *s)
{
    const size_t per_msg = 4096;
    for (size_t off = 0; off < s->nacks; off += per_msg) {
        size_t n = s->nacks - off < per_msg ? s->nacks - off : per_msg;
        pt_tl_msgs_ack a = {.msg_ids = {.n = (uint32_t)n, .items = (int64_t *)(s->acks + off)}};
        int rc = queue_encoded(s, pt_tl_msgs_ack_encode(&s->tmp, &a), false, true, NULL);
        if (rc) return rc;
    }
    s->nacks = 0;
    return 0;
}

static int flush(pt_sess *s, pt_sess_emit_cb emit, void *ud)
{
    int rc;
    size_t unsent = 0, first = s->qn;
    for (size_t i = 0; i < s->qn; i++) {
        if (!s->q[i]->sent) {
            unsent++;
            if (first == s->qn) first = i;
        }
    }
    if (s->nacks && (unsent || acks_due(s, now_ms(s)))) { /* with the rest, or due (above) */
        size_t qn = s->qn;
        if ((rc = queue_acks(s)) != 0) return rc;
        unsent += s->qn - qn; /* first stays: the acks come after the others */
    }
    if (unsent == 0) return 0;
    if (unsent == 1 && !s->q[first]->ever_sent) {
        /* one fresh message: a plain record */
        omsg *m = s->q[first];
        if (!rec_header(s, m->msg_id, m->seqno) || pt_buf_append(&s->rec, m->body, m->len))
            return PT_ERR_NOMEM;
        rec_finish(s);
        if ((rc = emit(ud, s->rec.data, s->rec.len)) != 0) return rc;
        m->sent = m->ever_sent = true;
        m->container_id = 0;
    } else {
        /* containers, each with a fresh id above every id inside it */
        size_t i = first;
        while (i < s->qn) {
            uint64_t cid = gen_msg_id(s, s->role == PT_SESS_SERVER);
            if (!rec_header(s, cid, gen_seqno(s, false)) ||
                pt_buf_reserve(&s->rec, PT_SESS_CONTAINER_HDR))
                return PT_ERR_NOMEM;
            uint8_t *ch = pt_buf_extend(&s->rec, PT_SESS_CONTAINER_HDR);
            pt_put_u32le(ch, PT_SESS_CONTAINER_ID);
            uint32_t count = 0;
            size_t start = i;
            for (; i < s->qn && count < PT_SESS_CONTAINER_MAX_MSGS; i++) {
                omsg *m = s->q[i];
                if (m->sent) continue;
                if (s->rec.len + PT_SESS_INNER_HDR + m->len > PT_CHAN_RECORD_MAX && count > 0) break;
                uint8_t *h = pt_buf_extend(&s->rec, PT_SESS_INNER_HDR);
                if (!h) return PT_ERR_NOMEM;
                pt_put_u64le(h, m->msg_id);
                pt_put_u32le(h + 8, m->seqno);
                pt_put_u32le(h + 12, m->len);
                if (pt_buf_append(&s->rec, m->body, m->len)) return PT_ERR_NOMEM;
                count++;
            }
            if (count == 0) break;
            pt_put_u32le(s->rec.data + PT_SESS_HDR_LEN + 4, count);
            rec_finish(s);
            if ((rc = emit(ud, s->rec.data, s->rec.len)) != 0) return rc;
            for (size_t k = start; k < i; k++) {
                if (s->q[k]->sent) continue;
                s->q[k]->sent = s->q[k]->ever_sent = true;
                s->q[k]->container_id = cid;
            }
        }
    }
    /* service messages are fire-and-forget: drop them once sent */
    size_t w = 0;
    for (size_t r = 0; r < s->qn; r++) {
        if (!s->q[r]->content && s->q[r]->sent)
            free(s->q[r]);
        else
            s->q[w++] = s->q[r];
    }
    s->qn = w;
    if (s->qn == 0) s->q_unordered = false;
    return 0;
}

int pt_sess_flush(pt_sess *s, pt_sess_emit_cb emit, void *ud)
{
    if (s->qn == 0 && s->nacks == 0) return 0;
    if (s->in_now_ms) return flush(s, emit, ud); /* during input: its clock read */
    /* one clock read for the whole flush: its ids, salts and acks' age (the clock
     * was read two or three times per record, 2 % of a loaded server's CPU) */
    s->in_now_ms = pt_env_now_ms(s->env);
    int rc = flush(s, emit, ud);
    s->in_now_ms = 0;
    return rc;
}

/* ---- the replay window --------------------------------------------------------------- */

enum { WIN_NEW, WIN_DUP, WIN_OLD };

static size_t win_lower_bound(const pt_sess *s, uint64_t id)
{
    if (id > s->max_recv_id) return s->win_n; /* ids mostly grow: the window is not read */
    size_t lo = 0, hi = s->win_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->win[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int win_check(const pt_sess *s, uint64_t id)
{
    if (s->win_floor && id <= s->win_floor) return WIN_OLD;
    size_t i = win_lower_bound(s, id);
    return i < s->win_n && s->win[i] == id ? WIN_DUP : WIN_NEW;
}

static int win_add(pt_sess *s, uint64_t id)
{
    if (s->win_n == s->win_cap && s->win_cap < PT_SESS_WINDOW) {
        size_t cap = s->win_cap ? 2 * s->win_cap : 16;
        uint64_t *w = realloc(s->win, cap * sizeof *w);
        if (!w) return PT_ERR_NOMEM;
        s->win = w;
        s->win_cap = cap;
    }
    if (s->win_n == PT_SESS_WINDOW) {
        /* forget the oldest quarter at once; later ids at or below it are "too old" */
        size_t drop = PT_SESS_WINDOW / 4;
        s->win_floor = s->win[drop - 1];
        memmove(s->win, s->win + drop, (s->win_n - drop) * sizeof *s->win);
        s->win_n -= drop;
    }
    size_t i = win_lower_bound(s, id);
    memmove(s->win + i + 1, s->win + i, (s->win_n - i) * sizeof *s->win);
    s->win[i] = id;
    s->win_n++;
    if (id > s->max_recv_id) s->max_recv_id = id;
    return 0;
}

/* ---- input ---------------------------------------------------------------------------- */

static bool is_content(uint32_t ctor)
{
    switch (ctor) {
    case PT_SESS_CONTAINER_ID:
    case PT_TL_MSGS_ACK_ID:
    case PT_TL_BAD_MSG_NOTIFICATION_ID:
    case PT_TL_BAD_SERVER_SALT_ID:
    case PT_TL_MSGS_STATE_REQ_ID:
    case PT_TL_MSGS_STATE_INFO_ID:
    case PT_TL_MSG_RESEND_REQ_ID:
        return false;
    default:
        return true;
    }
}

static int add_ack(pt_sess *s, uint64_t id)
{
    if (s->nacks == s->acks_cap) {
        if (s->acks_cap >= PT_SESS_MAX_PENDING_ACKS) {
            int rc = queue_acks(s); /* too many: put them in messages now */
            if (rc) return rc;
        } else {
            size_t cap = s->acks_cap ? 2 * s->acks_cap : 64;
            uint64_t *a = realloc(s->acks, cap * sizeof *a);
            if (!a) return PT_ERR_NOMEM;
            s->acks = a;
            s->acks_cap = cap;
        }
    }
    if (s->nacks == 0) s->acks_since_ms = now_ms(s);
    s->acks[s->nacks++] = id;
    return 0;
}

typedef struct in_ctx {
    pt_sess_event_cb cb;
    void *ud;
} in_ctx;

static int gunzip(const uint8_t *in, size_t len, size_t *out_len)
{
    z_stream zs = {0};
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) return PT_ERR_NOMEM;
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = gunzip_mem;
    zs.avail_out = sizeof gunzip_mem;
    int zr = inflate(&zs, Z_FINISH);
    *out_len = zs.total_out;
    bool all_in = zs.avail_in == 0;
    inflateEnd(&zs);
    if (zr == Z_STREAM_END && all_in) return 0;
    /* Z_BUF_ERROR with no room left: the body inflates past the limit (a bomb) */
    return zr == Z_BUF_ERROR && zs.avail_out == 0 ? PT_ERR_TOO_BIG : PT_ERR_DECODE;
}

/* Client: the server said our ids run ahead of its clock, and ids from the
 * corrected clock would not be above those already used. Ids must increase within
 * a session (and, for MTPROTO2, on a connection), so the session starts over: a new
 * session id, ids and seqnos from the corrected clock, every unacknowledged message
 * renumbered (the application keeps the ids it was given) and sent again on the
 * next connection. Acks owed to the old session are dropped with it: the server
 * resends what it still has through the new one (messages.sync). */
static void renew_session(pt_sess *s)
{
    uint64_t old = s->session_id;
    do pt_env_random(s->env, &s->session_id, sizeof s->session_id);
    while (s->session_id == old);
    s->renewals++;
    s->last_msg_id = 0;
    s->content_sent = s->content_recv = 0;
    s->win_n = 0;
    s->win_floor = s->max_recv_id = 0;
    s->nacks = 0;
    if (s->renamed) memset(s->renamed, 0, PT_SESS_RENAMED * sizeof *s->renamed); /* old ids */
    s->renamed_next = 0;
    size_t w = 0;
    for (size_t r = 0; r < s->qn; r++) {
        omsg *m = s->q[r];
        if (!m->content) {
            free(m);
            continue;
        }
        m->msg_id = gen_msg_id(s, false);
        m->seqno = gen_seqno(s, true);
        m->container_id = 0;
        m->sent = m->ever_sent = false;
        s->q[w++] = m;
    }
    s->qn = w;
    s->q_unordered = false; /* renumbered in order (unless the ids wrapped) */
    for (size_t i = 1; i < s->qn; i++)
        if (s->q[i - 1]->msg_id >= s->q[i]->msg_id) s->q_unordered = true;
    pt_log_info("session %016llx: our clock ran %lld ms ahead of the server's; ids restart in "
                "session %016llx on a new connection", (unsigned long long)old,
                (long long)-s->renew_correction_ms, (unsigned long long)s->session_id);
}

/* Handles one accepted object. */
static int dispatch(pt_sess *s, uint64_t msg_id, const uint8_t *body, size_t len, bool in_gzip,
                    const in_ctx *ic)
{
    uint32_t ctor = pt_get_u32le(body);
    pt_arena arena;
    pt_arena_init(&arena, arena_mem, sizeof arena_mem);
    pt_tl_obj o;
    pt_sess_event ev = {.msg_id = msg_id, .body = body, .len = len};
    int rc = 0;

    if (ctor == PT_TL_GZIP_PACKED_ID || ctor == PT_TL_RPC_RESULT_ID ||
        (ctor != PT_SESS_CONTAINER_ID && !is_content(ctor)) || ctor == PT_TL_PING_ID ||
        ctor == PT_TL_PONG_ID || ctor == PT_TL_NEW_SESSION_CREATED_ID) {
        if ((rc = pt_tl_decode_service(&o, body, len, &arena)) != 0) return rc;
    }
    switch (ctor) {
    case PT_TL_GZIP_PACKED_ID: {
        if (in_gzip) return PT_ERR_DECODE;
        size_t n = 0;
        if ((rc = gunzip(o.u.gzip_packed.packed_data.data, o.u.gzip_packed.packed_data.len, &n)))
            return rc;
        if (n < 4 || n % 4) return PT_ERR_DECODE;
        return dispatch(s, msg_id, gunzip_mem, n, true, ic);
    }
    case PT_TL_MSGS_ACK_ID:
        for (uint32_t i = 0; i < o.u.msgs_ack.msg_ids.n; i++)
            acked(s, (uint64_t)o.u.msgs_ack.msg_ids.items[i], ic->cb, ic->ud);
        return 0;
    case PT_TL_BAD_SERVER_SALT_ID:
    case PT_TL_BAD_MSG_NOTIFICATION_ID: {
        bool salt = ctor == PT_TL_BAD_SERVER_SALT_ID;
        uint64_t bad = (uint64_t)(salt ? o.u.bad_server_salt.bad_msg_id : o.u.bad_msg_notification.bad_msg_id);
        int code = salt ? o.u.bad_server_salt.error_code : o.u.bad_msg_notification.error_code;
        ev.type = PT_SESS_EV_BAD_MSG;
        ev.req_msg_id = orig_id_of(s, bad);
        ev.value = code;
        if (salt) s->salt = (uint64_t)o.u.bad_server_salt.new_server_salt;
        if (code == PT_BAD_MSG_ID_TOO_LOW || code == PT_BAD_MSG_ID_TOO_HIGH) {
            /* resynchronise with the server clock carried in its msg_id */
            uint64_t srv_ms = (msg_id >> 32) * 1000 + ((msg_id & 0xffffffffu) * 1000 >> 32);
            int64_t before = s->time_offset_ms;
            s->time_offset_ms = (int64_t)srv_ms - (int64_t)pt_env_now_ms(s->env);
            s->renew_correction_ms = s->time_offset_ms - before;
            /* Ids must go down for the server to take them: the +4 clamp of gen_msg_id
             * keeps them above last_msg_id, which is fine while that is less than half
             * the server's future window ahead of the corrected clock (a few ms of
             * round trip are), and not when the clock was ahead by more than that
             * window. Then the rest of the record is still the old session's;
             * pt_sess_input renews. */
            if (s->role == PT_SESS_CLIENT &&
                s->last_msg_id > id_now(s) + ((uint64_t)(PT_SESS_FUTURE_S / 2) << 32))
                s->renew_pending = true;
        }
        if (code == PT_BAD_MSG_DUPLICATE) {
            acked(s, bad, ic->cb, ic->ud);
        } else if (salt || code == PT_BAD_MSG_ID_TOO_LOW || code == PT_BAD_MSG_ID_TOO_HIGH ||
                   code == PT_BAD_MSG_TOO_OLD) {
            /* The peer did not process it (or a whole container holding it):
             * resend, same seqno. A wrong salt leaves the id unrecorded, so it
             * is kept; a wrong or forgotten id is renewed. */
            for (size_t i = 0; i < s->qn; i++) {
                omsg *m = s->q[i];
                if (m->msg_id != bad && m->container_id != bad) continue;
                if (!salt) {
                    m->msg_id = gen_msg_id(s, false);
                    if (i + 1 < s->qn) s->q_unordered = true; /* above those after it */
                }
                m->container_id = 0;
                m->sent = false;
            }
        }
        ic->cb(ic->ud, &ev);
        return 0;
    }
    case PT_TL_NEW_SESSION_CREATED_ID:
        if (s->role == PT_SESS_CLIENT) s->salt = (uint64_t)o.u.new_session_created.server_salt;
        ev.type = PT_SESS_EV_NEW_SESSION;
        ev.value = o.u.new_session_created.server_salt;
        ic->cb(ic->ud, &ev);
        return 0;
    case PT_TL_MSGS_STATE_REQ_ID: {
        uint32_t n = o.u.msgs_state_req.msg_ids.n;
        uint8_t *info = malloc(n ? n : 1);
        if (!info) return PT_ERR_NOMEM;
        for (uint32_t i = 0; i < n; i++) {
            uint64_t id = (uint64_t)o.u.msgs_state_req.msg_ids.items[i];
            int w = win_check(s, id);
            info[i] = w == WIN_DUP ? 4 : w == WIN_OLD ? 1 : id > s->max_recv_id ? 3 : 2;
        }
        pt_tl_msgs_state_info r = {.req_msg_id = (int64_t)msg_id, .info = {info, n}};
        rc = queue_encoded(s, pt_tl_msgs_state_info_encode(&s->tmp, &r), false, true, NULL);
        free(info);
        return rc;
    }
    case PT_TL_MSG_RESEND_REQ_ID:
        for (uint32_t i = 0; i < o.u.msg_resend_req.msg_ids.n; i++) {
            omsg *m = find_out(s, (uint64_t)o.u.msg_resend_req.msg_ids.items[i], NULL);
            if (m && m->content) m->sent = false;
        }
        return 0;
    case PT_TL_PING_ID: {
        pt_tl_pong p = {.msg_id = (int64_t)msg_id, .ping_id = o.u.ping.ping_id};
        rc = queue_encoded(s, pt_tl_pong_encode(&s->tmp, &p), true, true, NULL);
        if (rc == 0) drop_ack(s, msg_id); /* the pong acknowledges the ping */
        return rc;
    }
    case PT_TL_PONG_ID:
        ev.req_msg_id = orig_id_of(s, (uint64_t)o.u.pong.msg_id);
        acked(s, (uint64_t)o.u.pong.msg_id, ic->cb, ic->ud); /* a pong answers the ping */
        ev.type = PT_SESS_EV_PONG;
        ev.value = o.u.pong.ping_id;
        ic->cb(ic->ud, &ev);
        return 0;
    case PT_TL_RPC_RESULT_ID:
        if (s->role != PT_SESS_CLIENT) return 0;
        ev.req_msg_id = orig_id_of(s, (uint64_t)o.u.rpc_result.req_msg_id);
        acked(s, (uint64_t)o.u.rpc_result.req_msg_id, ic->cb, ic->ud); /* implied ack */
        ev.type = PT_SESS_EV_RESULT;
        ev.body = o.u.rpc_result.result.data;
        ev.len = o.u.rpc_result.result.len;
        ic->cb(ic->ud, &ev);
        return 0;
    case PT_TL_MSGS_STATE_INFO_ID:
    default:
        ev.type = s->role == PT_SESS_SERVER ? PT_SESS_EV_CALL : PT_SESS_EV_UPDATE;
        ic->cb(ic->ud, &ev);
        return 0;
    }
}

/* Checks one message (outer or inside a container) and dispatches it. Rejected
 * messages are answered with a notification; only malformed bytes return errors. */
static int process(pt_sess *s, uint64_t msg_id, uint32_t seqno, const uint8_t *body, size_t len,
                   bool inner, const in_ctx *ic)
{
    if (len < 4 || len % 4) return PT_ERR_DECODE;
    s->msgs_in++;
    uint32_t ctor = pt_get_u32le(body);
    bool content = is_content(ctor);
    unsigned low = (unsigned)(msg_id & 3);
    if (s->role == PT_SESS_SERVER ? low != 0 : (low != 1 && low != 3))
        return notify_bad(s, msg_id, seqno, PT_BAD_MSG_ID_PARITY);
    if (s->role == PT_SESS_SERVER) {
        uint64_t now_s = now_ms(s) / 1000, t = msg_id >> 32;
        if (t + PT_SESS_PAST_S < now_s) return notify_bad(s, msg_id, seqno, PT_BAD_MSG_ID_TOO_LOW);
        if (t > now_s + PT_SESS_FUTURE_S) return notify_bad(s, msg_id, seqno, PT_BAD_MSG_ID_TOO_HIGH);
    }
    int w = win_check(s, msg_id);
    if (w == WIN_DUP) return content ? notify_bad(s, msg_id, seqno, PT_BAD_MSG_DUPLICATE) : 0;
    if (w == WIN_OLD) return notify_bad(s, msg_id, seqno, PT_BAD_MSG_TOO_OLD);
    if (content && seqno % 2 == 0) return notify_bad(s, msg_id, seqno, PT_BAD_MSG_ODD_EXPECTED);
    if (content && s->fresh) {
        /* A session the server just created may belong to a client that is
         * resuming after a server restart: its numbering continues, so its first
         * content message sets the baseline. */
        s->content_recv = (seqno - 1) / 2;
        s->fresh = false;
    }
    if (content && ctor == PT_TL_NEW_SESSION_CREATED_ID && s->role == PT_SESS_CLIENT) {
        /* The server (re)created the session: its numbering starts over. */
        s->content_recv = 0;
        s->win_n = 0;
        s->win_floor = 0;
        s->max_recv_id = 0;
    }
    if (content) {
        uint32_t expect = 2 * s->content_recv + 1;
        if (seqno < expect) return notify_bad(s, msg_id, seqno, PT_BAD_MSG_SEQNO_LOW);
        if (seqno > expect) return notify_bad(s, msg_id, seqno, PT_BAD_MSG_SEQNO_HIGH);
    } else if (seqno % 2 == 1) {
        return notify_bad(s, msg_id, seqno, PT_BAD_MSG_EVEN_EXPECTED);
    }

    if (ctor == PT_SESS_CONTAINER_ID) {
        if (inner || len < PT_SESS_CONTAINER_HDR) return notify_bad(s, msg_id, seqno, PT_BAD_MSG_CONTAINER);
        uint32_t count = pt_get_u32le(body + 4);
        size_t off = PT_SESS_CONTAINER_HDR;
        /* validate the whole layout before acting on any inner message */
        for (uint32_t i = 0; i < count; i++) {
            if (count > PT_SESS_CONTAINER_MAX_MSGS || len - off < PT_SESS_INNER_HDR)
                return notify_bad(s, msg_id, seqno, PT_BAD_MSG_CONTAINER);
            uint32_t ilen = pt_get_u32le(body + off + 12);
            if (len - off - PT_SESS_INNER_HDR < ilen)
                return notify_bad(s, msg_id, seqno, PT_BAD_MSG_CONTAINER);
            off += PT_SESS_INNER_HDR + ilen;
        }
        if (off != len) return notify_bad(s, msg_id, seqno, PT_BAD_MSG_CONTAINER);
        off = PT_SESS_CONTAINER_HDR;
        for (uint32_t i = 0; i < count; i++) {
            const uint8_t *h = body + off;
            uint32_t ilen = pt_get_u32le(h + 12);
            int rc = process(s, pt_get_u64le(h), pt_get_u32le(h + 8), h + PT_SESS_INNER_HDR, ilen,
                             true, ic);
            if (rc) return rc;
            off += PT_SESS_INNER_HDR + ilen;
        }
        /* The container's own id after those inside it: it is above them, so every id
         * goes at the end of the window (the other way round each inner id was a
         * search and an insertion in front of it). One inside with the same id took it. */
        return win_check(s, msg_id) == WIN_NEW ? win_add(s, msg_id) : 0;
    }
    int wr = win_add(s, msg_id);
    if (wr) return wr;
    if (content) {
        s->content_recv++;
        int rc = add_ack(s, msg_id);
        if (rc) return rc;
    }
    return dispatch(s, msg_id, body, len, false, ic);
}

int pt_sess_peek(const uint8_t *rec, size_t len, uint64_t *salt, uint64_t *session_id)
{
    if (len < PT_SESS_HDR_LEN) return PT_ERR_DECODE;
    *salt = pt_get_u64le(rec);
    *session_id = pt_get_u64le(rec + 8);
    return 0;
}

int pt_sess_input(pt_sess *s, const uint8_t *rec, size_t len, pt_sess_event_cb cb, void *ud)
{
    if (len < PT_SESS_HDR_LEN + 4) return PT_ERR_DECODE;
    uint64_t salt = pt_get_u64le(rec), sid = pt_get_u64le(rec + 8), msg_id = pt_get_u64le(rec + 16);
    uint32_t seqno = pt_get_u32le(rec + 24), blen = pt_get_u32le(rec + 28);
    if (blen != len - PT_SESS_HDR_LEN) return PT_ERR_DECODE;
    if (sid != s->session_id) return PT_ERR_PROTO;
    uint64_t now = pt_env_now_ms(s->env);
    if (s->role == PT_SESS_SERVER && !salt_ok(s, salt, now)) return notify_bad(s, msg_id, seqno, PT_BAD_MSG_SALT);
    in_ctx ic = {cb, ud};
    s->in_now_ms = now;
    int rc = process(s, msg_id, seqno, rec + PT_SESS_HDR_LEN, blen, false, &ic);
    s->in_now_ms = 0;
    if (s->renew_pending) { /* also when the record failed later on: it closes anyway */
        s->renew_pending = false;
        renew_session(s);
        rc = PT_ERR_CLOSED; /* the connection carries the old session: reconnect */
    }
    return rc;
}
