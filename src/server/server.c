#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <uv.h>

#include "crypto/pt_crypto.h"
#include "pt_tl.h"
#include "server/pt_cluster.h"
#include "server/pt_config.h"
#include "server/pt_server_int.h"
#include "store/pt_db.h"
#include "store/pt_keyfile.h"

/* ---- the session table ---------------------------------------------------------------- */

static size_t sess_hash(const uint8_t pk[32], uint64_t sid, size_t nb)
{
    return (size_t)((pt_get_u64le(pk) ^ (sid * 0x9e3779b97f4a7c15ull)) % nb);
}

static pt_srv_sess *sess_find(pt_server *s, const uint8_t pk[32], uint64_t sid)
{
    for (pt_srv_sess *e = s->sess_buckets[sess_hash(pk, sid, s->sess_nbuckets)]; e; e = e->next)
        if (e->session_id == sid && memcmp(e->device_pk, pk, 32) == 0) return e;
    return NULL;
}

/* Counts the device's sessions; *oldest: its detached session idle the longest. */
static size_t sess_count_device(pt_server *s, const uint8_t pk[32], pt_srv_sess **oldest)
{
    size_t n = 0;
    *oldest = NULL;
    for (pt_srv_sess *e = s->sess_all; e; e = e->all_next) {
        if (memcmp(e->device_pk, pk, 32) != 0) continue;
        n++;
        if (!e->conn && (!*oldest || e->detached_ms < (*oldest)->detached_ms)) *oldest = e;
    }
    return n;
}

static int sess_grow(pt_server *s)
{
    size_t nb = s->sess_nbuckets * 2;
    pt_srv_sess **b = calloc(nb, sizeof *b);
    if (!b) return PT_ERR_NOMEM;
    for (pt_srv_sess *e = s->sess_all; e; e = e->all_next) {
        size_t h = sess_hash(e->device_pk, e->session_id, nb);
        e->next = b[h];
        b[h] = e;
    }
    free(s->sess_buckets);
    s->sess_buckets = b;
    s->sess_nbuckets = nb;
    return 0;
}

/* libuv reads the monotonic clock once per loop iteration (and after the poll, before
 * the I/O callbacks); the sessions' message ids and time checks and the sends' dates
 * take the wall clock from it: clock reads per message were 3-5 % of a loaded
 * server's CPU. The offset is read again once a second, so a step of the wall clock
 * shows within a second; ms ids that would not grow are made to (src/session). */
uint64_t pt_srv_now_ms(pt_server *s)
{
    uint64_t loop = uv_now(&s->loop);
    if (!s->clk_set || loop - s->clk_loop_ms >= 1000) {
        /* the offset from the monotonic clock read now, not from the loop's time (read
         * when the iteration began): the result is never ahead of the wall clock and
         * does not step back at the next refresh */
        s->clk_off_ms = (int64_t)pt_env_now_ms(pt_env_default()) - (int64_t)(uv_hrtime() / 1000000u);
        s->clk_loop_ms = loop;
        s->clk_set = true;
    }
    return (uint64_t)((int64_t)loop + s->clk_off_ms);
}

static uint64_t sess_env_now_ms(void *ctx) { return pt_srv_now_ms(ctx); }

static pt_srv_sess *sess_create(pt_server *s, const uint8_t pk[32], uint64_t sid)
{
    if (s->sess_n >= s->sess_nbuckets && sess_grow(s) != 0) return NULL;
    pt_srv_sess *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    pt_sess_config sc = {.role = PT_SESS_SERVER, .session_id = sid, .salt_secret = s->salt_secret};
    pt_srv_device *d = pt_srv_device_get(s, pk);
    if (!d || !(e->sess = pt_sess_new(&s->sess_env, &sc))) {
        free(e);
        return NULL;
    }
    pt_srv_device_add_session(d, e);
    memcpy(e->device_pk, pk, 32);
    e->session_id = sid;
    size_t h = sess_hash(pk, sid, s->sess_nbuckets);
    e->next = s->sess_buckets[h];
    s->sess_buckets[h] = e;
    e->all_next = s->sess_all;
    if (s->sess_all) s->sess_all->all_prev = e;
    s->sess_all = e;
    s->sess_n++;
    return e;
}

void pt_srv_sess_destroy(pt_server *s, pt_srv_sess *e)
{
    pt_srv_sess **pp = &s->sess_buckets[sess_hash(e->device_pk, e->session_id, s->sess_nbuckets)];
    while (*pp != e) pp = &(*pp)->next;
    *pp = e->next;
    if (e->all_prev) e->all_prev->all_next = e->all_next;
    else s->sess_all = e->all_next;
    if (e->all_next) e->all_next->all_prev = e->all_prev;
    if (e->conn) e->conn->sess = NULL;
    pt_srv_device_remove_session(s, e);
    pt_sess_free(e->sess);
    free(e);
    s->sess_n--;
}

pt_srv_sess *pt_srv_sess_lookup(pt_server *s, const uint8_t pk[32], uint64_t sid)
{
    return sess_find(s, pk, sid);
}

/* ---- connections ------------------------------------------------------------------------ */

/*
 * A connection has a socket side (reads, writes, the channel's handshake and records,
 * obfuscation, its timer) run by its worker loop, and a server side (session, device,
 * presence, rate limit) run by the server's loop (ARCHITECTURE.md, "Worker loops").
 * Functions named io_* and the socket's libuv callbacks run on the worker. Without
 * workers (one unthreaded pt_io on the server's loop) the sides call each other
 * directly, as they always did; with workers they exchange decrypted records, records
 * to seal and commands through the connection's mailbox, each direction batched per
 * loop iteration behind one lock and one wake-up.
 */

static void on_flush_idle(uv_idle_t *h) { (void)h; }
static void conn_start_write(pt_conn *c);
static void conn_close_after_write(pt_conn *c, const char *why);
static int on_record(void *ud, const uint8_t *rec, size_t len);
static int core_channel_up(pt_conn *c);
static void on_timer(uv_timer_t *t);
static void io_close(pt_conn *c, const char *why);
static bool io_may_read(const pt_conn *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

/* The handshake queue: connections whose channel is not up yet, oldest first. */
static void hs_push(pt_server *s, pt_conn *c)
{
    c->in_handshake = true;
    c->hs_prev = s->hs_tail;
    c->hs_next = NULL;
    if (s->hs_tail) s->hs_tail->hs_next = c;
    else s->hs_head = c;
    s->hs_tail = c;
}

static void hs_remove(pt_server *s, pt_conn *c)
{
    if (!c->in_handshake) return;
    c->in_handshake = false;
    if (c->hs_prev) c->hs_prev->hs_next = c->hs_next;
    else s->hs_head = c->hs_next;
    if (c->hs_next) c->hs_next->hs_prev = c->hs_prev;
    else s->hs_tail = c->hs_prev;
    c->hs_prev = c->hs_next = NULL;
}

uint32_t pt_srv_hs_timeout_ms(const pt_server *s)
{
    return atomic_load_explicit(&s->hs_timeout_ms, memory_order_relaxed);
}

uint32_t pt_srv_idle_timeout_ms(const pt_server *s)
{
    return atomic_load_explicit(&s->idle_timeout_ms, memory_order_relaxed);
}

void pt_srv_timeouts_changed(pt_server *s)
{
    atomic_store_explicit(&s->hs_timeout_ms, s->cfg.handshake_timeout_ms, memory_order_relaxed);
    atomic_store_explicit(&s->idle_timeout_ms, s->cfg.idle_timeout_ms, memory_order_relaxed);
}

static void conn_free(pt_conn *c)
{
    pt_buf_free(&c->recs);
    pt_buf_free(&c->seal);
    pt_buf_free(&c->core_work);
    pt_buf_free(&c->io_work);
    pt_buf_free(&c->mb_recs);
    pt_buf_free(&c->mb_seal);
    free(c);
}

static void conn_ref(pt_conn *c) { atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed); }

static void conn_unref(pt_conn *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) conn_free(c);
}

/* Worker: what the socket side holds. */
static void io_release(pt_conn *c)
{
    pt_obfs_conn_free(c->obfs); /* obfuscation (obfs_conn.c) */
    c->obfs = NULL;
    pt_chan_free(c->chan);
    c->chan = NULL;
    pt_buf_free(&c->out);
    pt_buf_free(&c->inflight);
}

/* Appends one record, length first, to a mailbox buffer. */
static int put_record(pt_buf *b, const uint8_t *rec, size_t len)
{
    if (len > UINT32_MAX) return PT_ERR_TOO_BIG;
    uint8_t *p = pt_buf_extend(b, 4 + len);
    if (!p) return PT_ERR_NOMEM;
    pt_put_u32le(p, (uint32_t)len);
    memcpy(p + 4, rec, len);
    return 0;
}

/* Moves src's bytes to the end of dst (by swapping when dst is empty). */
static int move_bytes(pt_buf *dst, pt_buf *src)
{
    if (!src->len) return 0;
    if (!dst->len) {
        pt_buf t = *dst;
        *dst = *src;
        *src = t;
        return 0;
    }
    int rc = pt_buf_append(dst, src->data, src->len);
    pt_buf_reset(src);
    return rc;
}

/* ---- the worker side: events for the server loop ---- */

static void on_post_idle(uv_idle_t *h) { (void)h; }

/* Worker: c has events for the server loop; they go at the end of this iteration. */
static void io_post_later(pt_conn *c, uint8_t ev)
{
    pt_io *io = c->io;
    c->io_ev |= ev;
    if (c->on_post) return;
    c->on_post = true;
    if (!io->post) uv_idle_start(&io->post_idle, on_post_idle); /* the poll must not block */
    c->post_next = io->post;
    io->post = c;
}

/* Worker: hands the iteration's records and events to the server loop. */
static void io_post_all(pt_io *io)
{
    if (!io->post) return;
    pt_conn *failed = NULL;
    pthread_mutex_lock(&io->mu);
    for (pt_conn *c = io->post, *next; c; c = next) {
        next = c->post_next;
        c->on_post = false;
        c->post_next = NULL;
        size_t n = c->recs.len;
        if (move_bytes(&c->mb_recs, &c->recs) == 0) {
            atomic_fetch_add(&c->in_pending, n);
        } else if (!c->io_closing) {
            c->post_next = failed; /* no memory: closed below (the records are lost) */
            failed = c;
        }
        c->mb_ev |= c->io_ev;
        if (c->io_ev & PT_CONN_EV_CLOSED) c->mb_ev_why = c->io_why;
        c->io_ev = 0;
        if (!c->on_ev_list) {
            c->on_ev_list = true;
            conn_ref(c);
            c->ev_next = io->ev_list;
            io->ev_list = c;
        }
    }
    io->post = NULL;
    pthread_mutex_unlock(&io->mu);
    uv_idle_stop(&io->post_idle);
    uv_async_send(&io->core_wake);
    for (pt_conn *c = failed, *next; c; c = next) {
        next = c->post_next;
        c->post_next = NULL;
        io_close(c, "out of memory");
    }
}

static void on_post_check(uv_check_t *h) { io_post_all(h->data); }

/* ---- closing ---- */

static void io_try_stop(pt_io *io);

static void conn_handle_closed(uv_handle_t *h)
{
    pt_conn *c = h->data;
    if (--c->open_handles > 0) return;
    io_release(c);
    if (!c->io->threaded) {
        conn_free(c);
        return;
    }
    pt_io *io = c->io;
    if (!c->io_core_gone) io_post_later(c, PT_CONN_EV_CLOSED);
    if (c->on_post) io_post_all(io); /* now: the worker's reference goes next */
    conn_unref(c);
    io->live--;
    io_try_stop(io);
}

/* Worker: closes the socket side. */
static void io_close_handles(pt_conn *c)
{
    if (c->io_closing) return;
    c->io_closing = true;
    pt_io *io = c->io;
    if (c->io_prev) c->io_prev->io_next = c->io_next;
    else if (io->conns == c) io->conns = c->io_next;
    if (c->io_next) c->io_next->io_prev = c->io_prev;
    c->io_prev = c->io_next = NULL;
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

/* Server loop: everything the server side knows of c goes. */
/* ---- acknowledgements that wait (src/session: they ride with other output) ---- */

#define ACK_TICK_MS (PT_SESS_ACK_DELAY_MS / 5) /* an ack goes at most this late */

static void on_ack_timer(uv_timer_t *t);

static void ack_wait_add(pt_conn *c)
{
    pt_server *s = c->srv;
    if (c->ack_wait || s->stopping) return;
    if (!s->ack_wait) uv_timer_start(&s->ack_timer, on_ack_timer, ACK_TICK_MS, ACK_TICK_MS);
    c->ack_wait = true;
    c->ack_prev = NULL;
    c->ack_next = s->ack_wait;
    if (s->ack_wait) s->ack_wait->ack_prev = c;
    s->ack_wait = c;
}

static void ack_wait_remove(pt_conn *c)
{
    pt_server *s = c->srv;
    if (!c->ack_wait) return;
    c->ack_wait = false;
    if (c->ack_prev) c->ack_prev->ack_next = c->ack_next;
    else s->ack_wait = c->ack_next;
    if (c->ack_next) c->ack_next->ack_prev = c->ack_prev;
    c->ack_prev = c->ack_next = NULL;
    if (!s->ack_wait && !s->stopping) uv_timer_stop(&s->ack_timer);
}

/* Every ACK_TICK_MS while some wait: the sessions whose acks are due are flushed (in
 * this iteration's check phase); those with none left leave the list. */
static void on_ack_timer(uv_timer_t *t)
{
    pt_server *s = t->data;
    for (pt_conn *c = s->ack_wait, *next; c; c = next) {
        next = c->ack_next;
        int64_t wait = c->sess ? pt_sess_ack_wait_ms(c->sess->sess) : -1;
        if (wait > 0) continue;
        ack_wait_remove(c); /* the flush puts it back if some are still pending */
        if (wait == 0) pt_conn_flush(c);
    }
}

static void core_release(pt_conn *c, const char *why)
{
    pt_server *s = c->srv;
    c->closing = true;
    if (why) pt_log_debug("conn %s: closed: %s", c->peer, why);
    hs_remove(s, c);
    pt_abuse_release(s, c);
    if (c->sess) {
        c->sess->conn = NULL;
        c->sess->detached_ms = uv_now(&s->loop);
        c->sess = NULL;
    }
    pt_srv_device_conn_down(s, c);
    if (c->dirty) {
        c->dirty = false;
        if (c->dirty_prev) c->dirty_prev->dirty_next = c->dirty_next;
        else s->dirty = c->dirty_next;
        if (c->dirty_next) c->dirty_next->dirty_prev = c->dirty_prev;
    }
    ack_wait_remove(c);
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->nconns--;
    c->io->nconns--;
}

/* Server loop: queues a command for c's worker and wakes it. */
static void core_post(pt_conn *c, uint8_t cmd, const char *why, uint32_t pause_ms)
{
    pt_io *io = c->io;
    if (!io->thread_on) return; /* joined: every socket is closed */
    int rc = 0;
    pthread_mutex_lock(&io->mu);
    if (cmd & PT_CONN_CMD_SEAL) rc = move_bytes(&c->mb_seal, &c->seal);
    if (rc) cmd = PT_CONN_CMD_CLOSE_AW, why = "out of memory";
    c->mb_cmd |= cmd;
    if (cmd & (PT_CONN_CMD_CLOSE | PT_CONN_CMD_CLOSE_AW)) c->mb_cmd_why = why;
    if (cmd & PT_CONN_CMD_THROTTLE) c->mb_pause_ms = pause_ms;
    if (!c->on_cmd_list) {
        c->on_cmd_list = true;
        conn_ref(c);
        c->cmd_next = io->cmd_list;
        io->cmd_list = c;
    }
    pthread_mutex_unlock(&io->mu);
    if (!io->wake_due) { /* woken once, in this iteration's check phase (core_wake_ios) */
        io->wake_due = true;
        uv_idle_start(&c->srv->flush_idle, on_flush_idle); /* the poll must not block */
    }
}

/* Server loop: wakes the workers that were given commands in this iteration. */
static void core_wake_ios(pt_server *s)
{
    for (unsigned i = 0; i < s->nios; i++) {
        pt_io *io = s->ios[i];
        if (!io->wake_due) continue;
        io->wake_due = false;
        uv_async_send(&io->wake);
    }
}

/* Closes a connection now (server loop). Never frees inside its own callback: libuv
 * calls conn_handle_closed() later, after the current dispatch. */
void pt_conn_close(pt_conn *c, const char *why)
{
    if (c->closing) return;
    core_release(c, why);
    if (!c->io->threaded) {
        io_close_handles(c);
        return;
    }
    if (!c->io_started) { /* the worker never saw it */
        if (c->sockfd >= 0) close(c->sockfd);
        io_release(c);
        conn_unref(c); /* the worker's reference */
    } else {
        atomic_fetch_add_explicit(&c->srv->closes_pending, 1, memory_order_relaxed);
        core_post(c, PT_CONN_CMD_CLOSE, why, 0);
    }
    conn_unref(c); /* the server side's */
}

/* Worker: the socket side ends the connection (peer gone, timeout, bad input). */
static void io_close(pt_conn *c, const char *why)
{
    if (!c->io->threaded) {
        pt_conn_close(c, why);
        return;
    }
    if (c->io_closing) return;
    if (why) c->io_why = why;
    if (c->io_hs_failed) atomic_fetch_add(&c->srv->hs_failures_workers, 1);
    io_close_handles(c);
}

void pt_conn_io_close(pt_conn *c, const char *why) { io_close(c, why); }

static bool io_closing(const pt_conn *c);
bool pt_conn_io_closing(const pt_conn *c) { return io_closing(c); }

/* Server loop: sends what is queued, then closes. */
static void core_close_after_write(pt_conn *c, const char *why)
{
    if (c->closing || c->close_req) return;
    if (!c->io->threaded) {
        conn_close_after_write(c, why);
        return;
    }
    c->close_req = true;
    core_post(c, PT_CONN_CMD_SEAL | PT_CONN_CMD_CLOSE_AW, why ? why : "done", 0);
}

/* Worker: sends what is queued, then closes. */
static void conn_close_after_write(pt_conn *c, const char *why)
{
    if (io_closing(c)) return;
    c->close_after_write = why ? why : "done";
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (!c->writing && c->out.len == 0) io_close(c, c->close_after_write);
    else conn_start_write(c);
}

static bool io_closing(const pt_conn *c) { return c->io->threaded ? c->io_closing : c->closing; }

/* What follows a finished write: the next one, the close that waited for it, or
 * reading again after backpressure. */
static void write_done(pt_conn *c)
{
    if (c->out.len) {
        conn_start_write(c);
        return;
    }
    if (c->close_after_write) {
        io_close(c, c->close_after_write);
        return;
    }
    if (c->read_paused) {
        c->read_paused = false;
        if (c->io->threaded ? io_may_read(c) : !c->throttled)
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
}

static void on_write(uv_write_t *req, int status)
{
    pt_conn *c = req->data;
    c->writing = false;
    pt_buf_reset(&c->inflight);
    if (io_closing(c)) return;
    if (status < 0) {
        io_close(c, uv_strerror(status));
        return;
    }
    write_done(c);
}

static void conn_start_write(pt_conn *c)
{
    if (c->writing || io_closing(c)) return;
    c->active_ms = uv_now(c->loop); /* a connection that only receives is busy too */
    if (c->obfs && pt_obfs_conn_wrap(c) != 0) { /* obfuscation (obfs_conn.c): seal for the wire */
        io_close(c, "obfuscation layer failed");
        return;
    }
    if (c->out.len == 0) return;
    /* Most writes go at once. uv_try_write needs no request then, where libuv's
     * uv_write re-registers the socket with epoll after each completed one (an
     * epoll_ctl per write: 0.13 per message in the closed loop) and runs on_write
     * from the next loop iteration. What the socket does not take goes by uv_write. */
    uv_buf_t all = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &all, 1);
    if (n < 0 && n != UV_EAGAIN) {
        io_close(c, uv_strerror(n));
        return;
    }
    if (n == (int)c->out.len) {
        pt_buf_reset(&c->out);
        write_done(c);
        return;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    pt_buf t = c->inflight; /* swap: the bytes in flight stay put until on_write */
    c->inflight = c->out;
    c->out = t;
    uv_buf_t b = uv_buf_init((char *)c->inflight.data + done, (unsigned)(c->inflight.len - done));
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        io_close(c, uv_strerror(rc));
        return;
    }
    c->writing = true;
}

/* Worker: stops reading a peer whose output piles up; write_done reads again. */
static void io_backpressure(pt_conn *c)
{
    if (c->out.len + c->inflight.len > PT_SERVER_MAX_OUTBUF && !c->read_paused) {
        c->read_paused = true;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

static int emit_record(void *ud, const uint8_t *rec, size_t len)
{
    pt_conn *c = ud;
    if (c->io->threaded) return put_record(&c->seal, rec, len); /* sealed by the worker */
    return pt_chan_seal(c->chan, &c->out, rec, len);
}

/* Server loop: seals (or has the worker seal) everything the attached session has
 * queued, now. */
static int conn_flush_now(pt_conn *c)
{
    if (c->closing || !c->sess) return 0;
    c->core_active_ms = uv_now(&c->srv->loop);
    int rc = pt_sess_flush(c->sess->sess, emit_record, c);
    if (rc) return rc;
    if (pt_sess_acks_pending(c->sess->sess)) ack_wait_add(c);
    if (c->io->threaded) {
        if (c->seal.len) core_post(c, PT_CONN_CMD_SEAL, NULL, 0);
        return 0;
    }
    io_backpressure(c);
    conn_start_write(c);
    return 0;
}

int pt_conn_flush(pt_conn *c)
{
    if (c->dirty || c->closing) return 0;
    pt_server *s = c->srv;
    /* output queued from a timer (a presence notice when an idle connection
     * closes, say) is flushed in this iteration's check phase, not after the next
     * event: an active idle handle makes the poll return at once */
    if (!s->dirty && !s->stopping) uv_idle_start(&s->flush_idle, on_flush_idle);
    c->dirty = true;
    c->dirty_prev = NULL;
    c->dirty_next = s->dirty;
    if (s->dirty) s->dirty->dirty_prev = c;
    s->dirty = c;
    return 0;
}

/* Flushes every dirty connection (the uv_check handle: after the I/O callbacks
 * and the writer's completions of this loop iteration). */
static void flush_dirty(pt_server *s)
{
    while (s->dirty) {
        pt_conn *c = s->dirty;
        s->dirty = c->dirty_next;
        if (s->dirty) s->dirty->dirty_prev = NULL;
        c->dirty = false;
        c->dirty_prev = c->dirty_next = NULL;
        int rc = conn_flush_now(c);
        if (rc) {
            pt_log_warn("conn %s: %s; closing", c->peer, pt_strerror(rc));
            core_close_after_write(c, pt_strerror(rc));
        }
    }
    core_wake_ios(s);
    uv_idle_stop(&s->flush_idle);
}

static void on_flush_check(uv_check_t *h)
{
    pt_server *s = h->data;
    s->accepts_turn = 0; /* a new loop iteration: a new accept budget */
    flush_dirty(s);
}

static void on_timer(uv_timer_t *t)
{
    pt_conn *c = t->data;
    if (c->throttled) {
        c->throttled = false;
        if (c->io->threaded ? io_may_read(c) : !c->read_paused)
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        uv_timer_start(&c->timer, on_timer, pt_srv_idle_timeout_ms(c->srv), 0);
        return;
    }
    if (c->obfs && pt_obfs_conn_on_timer(c)) return; /* obfuscation (obfs_conn.c): still its turn */
    bool up = pt_chan_established(c->chan);
    const char *why = up ? "idle timeout" : "handshake timeout";
    pt_log_info("conn %s: %s", c->peer, why);
    if (!up) {
        if (!c->io->threaded) c->srv->counters.handshake_failures++;
        c->io_hs_failed = true;
    }
    io_close(c, why);
}

/* ---- the server side: sessions ---- */

static void on_sess_event(void *ud, const pt_sess_event *ev)
{
    pt_conn *c = ud;
    switch (ev->type) {
    case PT_SESS_EV_CALL:
        c->srv->counters.rpc_calls++;
        pt_srv_rpc(c, ev->msg_id, ev->body, ev->len);
        break;
    case PT_SESS_EV_BAD_MSG:
        if (ev->value == PT_BAD_MSG_SEQNO_LOW || ev->value == PT_BAD_MSG_SEQNO_HIGH) {
            /* the client missed (or got twice) something we sent on this connection:
             * a record lost on the way. Only a new connection repairs that: the
             * session resends what is unacknowledged there (on_record closes). */
            pt_log_warn("conn %s: the client saw a gap in our messages (bad_msg %lld); "
                        "closing, it resyncs on its next connection",
                        c->peer, (long long)ev->value);
            c->resync = true;
            break;
        }
        pt_log_debug("conn %s: client rejected msg %016llx: code %lld", c->peer,
                     (unsigned long long)ev->req_msg_id, (long long)ev->value);
        break;
    default:
        break;
    }
}

/* Binds the connection to its session on the first record. */
static int attach_session(pt_conn *c, const uint8_t *rec, size_t len)
{
    pt_server *s = c->srv;
    uint64_t salt, sid;
    int rc = pt_sess_peek(rec, len, &salt, &sid);
    if (rc) return rc;
    if (c->sess) return c->sess->session_id == sid ? 0 : PT_ERR_PROTO;
    const uint8_t *pk = c->peer_pk;
    pt_srv_sess *e = sess_find(s, pk, sid);
    if (e) {
        if (e->conn) {
            pt_conn *old = e->conn;
            old->sess = NULL;
            e->conn = NULL;
            pt_conn_close(old, "session resumed on another connection");
        }
        pt_sess_resume(e->sess);
        pt_log_debug("conn %s: resumed session %016llx", c->peer, (unsigned long long)sid);
    } else {
        pt_srv_sess *oldest;
        if (sess_count_device(s, pk, &oldest) >= PT_SERVER_MAX_SESSIONS_PER_DEVICE) {
            /* a client that starts a process per command leaves sessions behind:
             * the one idle longest makes room; live ones are never taken */
            if (!oldest) {
                pt_log_warn("conn %s: too many sessions for one device", c->peer);
                return PT_ERR_TOO_BIG;
            }
            pt_log_debug("conn %s: session %016llx dropped to make room", c->peer,
                         (unsigned long long)oldest->session_id);
            pt_srv_sess_destroy(s, oldest);
        }
        if (!(e = sess_create(s, pk, sid))) return PT_ERR_NOMEM;
        if ((rc = pt_sess_created(e->sess, len >= 24 ? pt_get_u64le(rec + 16) : 0)) != 0) return rc;
        pt_log_debug("conn %s: new session %016llx", c->peer, (unsigned long long)sid);
    }
    e->conn = c;
    c->sess = e;
    if (s->cluster) pt_cluster_attached(s->cluster, pk, e);
    return 0;
}

/* Worker: the peer's key, for the server side (fixed once the channel is up). */
static void io_note_peer(pt_conn *c)
{
    if (c->pk_set) return;
    memcpy(c->peer_pk, pt_chan_remote_static(c->chan), 32);
    c->pk_set = true;
}

/* A decrypted record: the server side's (without workers: straight from the channel). */
static int on_record(void *ud, const uint8_t *rec, size_t len)
{
    pt_conn *c = ud;
    if (!c->io->threaded) io_note_peer(c);
    int rc = c->dev ? 0 : core_channel_up(c);
    if (rc == 0) rc = attach_session(c, rec, len);
    if (rc) return rc;
    rc = pt_sess_input(c->sess->sess, rec, len, on_sess_event, c);
    return rc == 0 && c->resync ? PT_ERR_PROTO : rc; /* see on_sess_event */
}

/* Worker: a decrypted record goes to the server loop. */
static int io_on_record(void *ud, const uint8_t *rec, size_t len)
{
    pt_conn *c = ud;
    io_note_peer(c);
    int rc = put_record(&c->recs, rec, len);
    if (rc == 0) io_post_later(c, 0);
    return rc;
}

/* Server loop: the channel came up (before its first record is handled: the calls
 * need the device, a ban or a binding). PT_ERR_NOMEM when the device cannot be made. */
static int core_channel_up(pt_conn *c)
{
    hs_remove(c->srv, c); /* authenticated: never evicted to make room */
    if (c->closing || c->dev) return 0;
    return pt_srv_device_conn_up(c->srv, c);
}

/* Server loop: charges what c's session received against its rate and its
 * address's; a flood is closed, an overdraft paused. Returns false when c was
 * closed. */
static bool core_charge(pt_conn *c, int *verdict_out)
{
    uint32_t pause_ms = 0;
    int verdict = pt_abuse_charge(c->srv, c, &pause_ms);
    *verdict_out = verdict;
    if (verdict < 0) {
        if (conn_flush_now(c) == 0) core_close_after_write(c, "flooding");
        else pt_conn_close(c, "flooding");
        return false;
    }
    if (verdict > 0) { /* over the rate: read again once the bucket has refilled */
        c->srv->counters.throttles++;
        if (c->io->threaded) core_post(c, PT_CONN_CMD_THROTTLE, NULL, pause_ms);
        else {
            c->throttled = true;
            uv_read_stop((uv_stream_t *)&c->tcp);
            uv_timer_start(&c->timer, on_timer, pause_ms, 0);
        }
    }
    return true;
}

/* Server loop: n bytes of c's records were taken; a worker that stopped reading it
 * (too much input waiting for this loop) reads again once it is down to a quarter. */
static void core_input_done(pt_conn *c, size_t n)
{
    size_t left = atomic_fetch_sub(&c->in_pending, n) - n;
    if (left <= PT_SERVER_MAX_INBUF / 4 && atomic_load(&c->in_paused) && !c->closing)
        core_post(c, PT_CONN_CMD_RESUME, NULL, 0);
}

/* Server loop: one connection's events from its worker, in the order they happened. */
static void core_events(pt_conn *c, uint8_t ev, const char *why)
{
    pt_server *s = c->srv;
    if (c->closing) return;
    /* once this side has decided to close it (or the server stops), what was still on
     * its way is not acted on, as a single loop stops reading at that point: only the
     * worker's "closed" still counts */
    bool act = !c->close_req && !s->stopping;
    int rc = 0;
    if (act && (ev & PT_CONN_EV_UP)) rc = core_channel_up(c);
    if (act && rc == 0 && c->core_work.len) {
        c->core_active_ms = uv_now(&s->loop);
        c->in_input = true;
        for (size_t off = 0; off + 4 <= c->core_work.len && rc == 0 && !c->closing;) {
            size_t len = pt_get_u32le(c->core_work.data + off);
            rc = on_record(c, c->core_work.data + off + 4, len);
            off += 4 + len;
        }
        c->in_input = false;
        if (c->closing) return; /* a call closed it (its session destroyed, say) */
        int verdict;
        if (rc == 0 && core_charge(c, &verdict) && !c->close_req) pt_conn_flush(c);
        if (c->closing) return;
    }
    if (c->core_work.len) core_input_done(c, c->core_work.len);
    if (ev & PT_CONN_EV_CLOSED) {
        core_release(c, why);
        conn_unref(c); /* the server side's reference */
        return;
    }
    if (rc && !c->close_req) {
        pt_log_warn("conn %s: %s; closing", c->peer, pt_strerror(rc));
        if (conn_flush_now(c) == 0) core_close_after_write(c, pt_strerror(rc));
        else pt_conn_close(c, pt_strerror(rc));
    }
}

/* Server loop: takes what io's connections posted. */
static void core_take_events(pt_io *io)
{
    size_t n = 0;
    pthread_mutex_lock(&io->mu);
    while (io->ev_list) {
        if (n == io->batch_cap) {
            size_t cap = io->batch_cap ? 2 * io->batch_cap : 64;
            struct pt_io_ev *b = realloc(io->batch, cap * sizeof *b);
            if (!b) break; /* the rest waits for the next wake-up */
            io->batch = b;
            io->batch_cap = cap;
        }
        pt_conn *c = io->ev_list;
        io->ev_list = c->ev_next;
        c->ev_next = NULL;
        c->on_ev_list = false;
        pt_buf_reset(&c->core_work);
        pt_buf t = c->core_work;
        c->core_work = c->mb_recs;
        c->mb_recs = t;
        io->batch[n++] = (struct pt_io_ev){c, c->mb_ev, c->mb_ev_why};
        c->mb_ev = 0;
    }
    bool more = io->ev_list != NULL;
    pthread_mutex_unlock(&io->mu);
    if (more) uv_async_send(&io->core_wake);
    /* the list is newest first: the connections are handled oldest first */
    for (size_t k = n; k-- > 0;) {
        pt_conn *c = io->batch[k].c;
        core_events(c, io->batch[k].ev, io->batch[k].why);
        pt_buf_reset(&c->core_work);
        conn_unref(c); /* the list's reference */
    }
}

static void on_core_wake(uv_async_t *a) { core_take_events(a->data); }

/* ---- the worker side: reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    pt_conn *c = h->data;
    /* One loop, one read at a time: a shared buffer, no allocation per read. */
    buf->base = (char *)c->io->readbuf;
    buf->len = sizeof c->io->readbuf;
}

/* The socket side: the channel is up (peer_pk set). */
static void log_channel_up(const pt_conn *c)
{
    char fp[PT_FINGERPRINT_LEN];
    pt_fingerprint(fp, c->peer_pk);
    pt_log_info("conn %s: secure channel up: %s, device %.17s", c->peer,
                pt_suite_name(pt_chan_suite(c->chan)), fp);
}

/* Without workers: the whole of a read, as one loop always did it. */
static void read_unthreaded(pt_conn *c, const uint8_t *data, size_t len)
{
    bool was_established = pt_chan_established(c->chan);
    c->in_input = true;
    int rc = pt_chan_input(c->chan, data, len, &c->out, on_record, c);
    c->in_input = false;
    if (c->closing) return;
    int verdict = 0;
    if (rc == 0 && !core_charge(c, &verdict)) return;
    if (rc == 0) rc = pt_conn_flush(c);
    if (rc && !was_established && !pt_chan_established(c->chan)) c->srv->counters.handshake_failures++;
    if (rc) {
        pt_log_warn("conn %s: %s; closing", c->peer, pt_strerror(rc));
        conn_close_after_write(c, pt_strerror(rc));
        return;
    }
    if (!was_established && pt_chan_established(c->chan)) {
        io_note_peer(c);
        if (core_channel_up(c) != 0) {
            pt_conn_close(c, "out of memory");
            return;
        }
        log_channel_up(c);
    }
    if (verdict > 0) {
        conn_start_write(c);
        return;
    }
    uint32_t t = pt_chan_established(c->chan) ? pt_srv_idle_timeout_ms(c->srv) : 0;
    if (t) uv_timer_start(&c->timer, on_timer, t, 0);
    conn_start_write(c);
}

/* Worker: true when c may read (not paused for any reason, not closing). */
static bool io_may_read(const pt_conn *c)
{
    return !c->throttled && !c->read_paused && !c->close_after_write && !c->io_closing &&
           !atomic_load(&c->in_paused);
}

/* Worker: stops reading c while more than PT_SERVER_MAX_INBUF of its records wait for
 * the server loop (a single loop handled each read before the next); the server loop
 * sends RESUME once it has taken most of them (core_input_done). The flag is set
 * before the count is read again, and the server loop takes from the count before it
 * reads the flag: one of the two sees the other (sequentially consistent atomics). */
static void io_input_limit(pt_conn *c)
{
    if (atomic_load(&c->in_paused) || c->io_closing) return;
    if (atomic_load(&c->in_pending) + c->recs.len <= PT_SERVER_MAX_INBUF) return;
    atomic_store(&c->in_paused, true);
    if (atomic_load(&c->in_pending) + c->recs.len > PT_SERVER_MAX_INBUF) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        return;
    }
    atomic_store(&c->in_paused, false);
}

/* With workers: the channel here, the records to the server loop. */
static void read_threaded(pt_conn *c, const uint8_t *data, size_t len)
{
    bool was_established = pt_chan_established(c->chan);
    int rc = pt_chan_input(c->chan, data, len, &c->out, io_on_record, c);
    bool up = !was_established && pt_chan_established(c->chan);
    if (up) {
        io_note_peer(c);
        io_post_later(c, PT_CONN_EV_UP);
        log_channel_up(c);
    }
    if (rc) {
        if (!pt_chan_established(c->chan)) c->io_hs_failed = true;
        pt_log_warn("conn %s: %s; closing", c->peer, pt_strerror(rc));
        conn_close_after_write(c, pt_strerror(rc));
        return;
    }
    if (!c->throttled) {
        uint32_t t = pt_chan_established(c->chan) ? pt_srv_idle_timeout_ms(c->srv) : 0;
        if (t) uv_timer_start(&c->timer, on_timer, t, 0);
    }
    io_input_limit(c);
    conn_start_write(c);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    pt_conn *c = st->data;
    if (n == 0) return;
    if (n < 0) {
        io_close(c, n == UV_EOF ? "peer closed" : uv_strerror((int)n));
        return;
    }
    const uint8_t *data = (const uint8_t *)buf->base;
    size_t len = (size_t)n;
    c->active_ms = uv_now(c->loop);
    if (c->obfs) { /* obfuscation (obfs_conn.c): unwrap before the channel */
        int orc = pt_obfs_conn_input(c, &data, &len);
        if (orc < 0) {
            io_close(c, "obfuscation handshake failed");
            return;
        }
        if (orc == 0) {
            conn_start_write(c);
            return;
        }
    }
    if (c->io->threaded) read_threaded(c, data, len);
    else read_unthreaded(c, data, len);
}

/* Worker: opens the socket side of c on its loop (without workers, accept_one has
 * accepted straight into c->tcp). */
static void io_open(pt_conn *c)
{
    pt_io *io = c->io;
    if (io->threaded) {
        uv_tcp_init(io->loop, &c->tcp);
        uv_timer_init(io->loop, &c->timer);
        c->tcp.data = c->timer.data = c;
        c->open_handles = 2;
        int rc = uv_tcp_open(&c->tcp, (uv_os_sock_t)c->sockfd);
        if (rc != 0) close(c->sockfd);
        c->sockfd = -1;
        io->live++;
        c->io_next = io->conns;
        if (io->conns) io->conns->io_prev = c;
        io->conns = c;
        if (rc != 0) {
            io_close(c, uv_strerror(rc));
            return;
        }
    }
    c->active_ms = uv_now(io->loop);
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_start(&c->timer, on_timer, pt_obfs_conn_first_timeout_ms(c), 0);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- the worker side: commands from the server loop ---- */

static void io_seal_work(pt_conn *c)
{
    int rc = 0;
    for (size_t off = 0; off + 4 <= c->io_work.len && rc == 0;) {
        size_t len = pt_get_u32le(c->io_work.data + off);
        rc = pt_chan_seal(c->chan, &c->out, c->io_work.data + off + 4, len);
        off += 4 + len;
    }
    pt_buf_reset(&c->io_work);
    if (rc) {
        pt_log_warn("conn %s: %s; closing", c->peer, pt_strerror(rc));
        conn_close_after_write(c, pt_strerror(rc));
    }
}

static void on_io_wake(uv_async_t *a)
{
    pt_io *io = a->data;
    pthread_mutex_lock(&io->mu);
    pt_conn *list = io->cmd_list;
    io->cmd_list = NULL;
    bool stop = io->stop_req, force = io->stop_force;
    pthread_mutex_unlock(&io->mu);
    while (list) {
        /* one connection at a time: what arrives for it meanwhile waits its turn */
        pt_conn *c = list;
        pthread_mutex_lock(&io->mu);
        list = c->cmd_next;
        c->cmd_next = NULL;
        c->on_cmd_list = false;
        uint8_t cmd = c->mb_cmd;
        const char *why = c->mb_cmd_why;
        uint32_t pause_ms = c->mb_pause_ms;
        c->mb_cmd = 0;
        pt_buf t = c->io_work;
        c->io_work = c->mb_seal;
        c->mb_seal = t;
        pthread_mutex_unlock(&io->mu);
        if (cmd & PT_CONN_CMD_START) io_open(c);
        if (cmd & PT_CONN_CMD_CLOSE) c->io_core_gone = true;
        bool counted_close = cmd & PT_CONN_CMD_CLOSE;
        if (c->io_closing) {
            pt_buf_reset(&c->io_work);
        } else {
            io_seal_work(c);
            io_backpressure(c);
            if ((cmd & PT_CONN_CMD_RESUME) && atomic_load(&c->in_paused) &&
                atomic_load(&c->in_pending) <= PT_SERVER_MAX_INBUF / 4) {
                atomic_store(&c->in_paused, false);
                if (io_may_read(c)) uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
            }
            if ((cmd & PT_CONN_CMD_THROTTLE) && !io_closing(c) && !c->close_after_write) {
                c->throttled = true;
                uv_read_stop((uv_stream_t *)&c->tcp);
                uv_timer_start(&c->timer, on_timer, pause_ms, 0);
            }
            if (cmd & PT_CONN_CMD_CLOSE) io_close_handles(c); /* the socket is closed now */
            else if (cmd & PT_CONN_CMD_CLOSE_AW) conn_close_after_write(c, why);
            else conn_start_write(c);
        }
        if (counted_close) atomic_fetch_sub_explicit(&io->srv->closes_pending, 1, memory_order_relaxed);
        conn_unref(c); /* the list's reference */
    }
    if (stop && !io->stopping) {
        io->stopping = true;
        if (force)
            for (pt_conn *c = io->conns, *next; c; c = next) {
                next = c->io_next;
                io_close(c, "server stopping");
            }
    }
    io_try_stop(io);
}

/* ---- worker loops ---- */

static void io_try_stop(pt_io *io)
{
    if (!io->stopping || io->live || io->handles_closed) return;
    io->handles_closed = true;
    uv_close((uv_handle_t *)&io->wake, NULL);
    uv_close((uv_handle_t *)&io->post_check, NULL);
    uv_close((uv_handle_t *)&io->post_idle, NULL);
    uv_close((uv_handle_t *)&io->trim_timer, NULL);
}

/* Every second: connections quiet for a second give back the buffers they last
 * used (each keeps its largest size otherwise; five of at least 256 bytes are a
 * quarter of an idle connection's memory). A busy connection (it read or wrote
 * within the second) is not touched, so the load path keeps its buffers. */
#define TRIM_AFTER_MS 1000

static void on_io_trim(uv_timer_t *t)
{
    pt_io *io = t->data;
    uint64_t now = uv_now(io->loop);
    for (pt_conn *c = io->conns; c; c = c->io_next) {
        if (io_closing(c) || c->writing || now - c->active_ms < TRIM_AFTER_MS) continue;
        if (!io->threaded && (c->dirty || c->in_input)) continue; /* the one loop's output pending */
        if (c->out.len == 0) pt_buf_free(&c->out);
        pt_buf_free(&c->inflight); /* not writing: nothing in it */
        pt_chan_trim(c->chan);
    }
}

static void io_thread(void *arg)
{
    pt_io *io = arg;
    uv_run(io->loop, UV_RUN_DEFAULT);
}

static void io_free(pt_io *io)
{
    if (!io) return;
    if (io->threaded) {
        uv_loop_close(&io->own);
        pthread_mutex_destroy(&io->mu);
    }
    free(io->batch);
    free(io);
}

/* Makes the worker loops (or the one unthreaded pt_io on the server's loop). */
static int ios_start(pt_server *s)
{
    unsigned n = s->cfg.workers;
    if (n == 0) {
        n = uv_available_parallelism(); /* the CPUs this process may run on */
        if (n <= 1) n = PT_SERVER_WORKERS_NONE;
    }
    if (n > PT_SERVER_MAX_WORKERS && n != PT_SERVER_WORKERS_NONE) n = PT_SERVER_MAX_WORKERS;
    bool threaded = n != PT_SERVER_WORKERS_NONE;
    if (!threaded) n = 1;
    if (!(s->ios = calloc(n, sizeof *s->ios))) return PT_ERR_NOMEM;
    for (unsigned i = 0; i < n; i++) {
        pt_io *io = calloc(1, sizeof *io);
        if (!io) return PT_ERR_NOMEM;
        s->ios[s->nios++] = io;
        io->srv = s;
        io->index = i;
        if (!threaded) {
            io->loop = &s->loop;
            uv_timer_init(io->loop, &io->trim_timer);
            io->trim_timer.data = io;
            uv_timer_start(&io->trim_timer, on_io_trim, TRIM_AFTER_MS, TRIM_AFTER_MS);
            uv_unref((uv_handle_t *)&io->trim_timer); /* the loop ends without it */
            break;
        }
        io->threaded = true;
        if (uv_loop_init(&io->own) != 0) {
            free(io);
            s->ios[--s->nios] = NULL;
            return PT_ERR_IO;
        }
        pthread_mutex_init(&io->mu, NULL);
        io->loop = &io->own;
        uv_async_init(io->loop, &io->wake, on_io_wake);
        uv_check_init(io->loop, &io->post_check);
        uv_idle_init(io->loop, &io->post_idle);
        uv_timer_init(io->loop, &io->trim_timer);
        io->wake.data = io->post_check.data = io->post_idle.data = io->trim_timer.data = io;
        uv_check_start(&io->post_check, on_post_check);
        uv_timer_start(&io->trim_timer, on_io_trim, TRIM_AFTER_MS, TRIM_AFTER_MS);
        uv_unref((uv_handle_t *)&io->trim_timer);
        uv_async_init(&s->loop, &io->core_wake, on_core_wake);
        io->core_wake.data = io;
        if (uv_thread_create(&io->thread, io_thread, io) != 0) {
            pt_log_error("cannot start worker loop %u", i);
            uv_close((uv_handle_t *)&io->core_wake, NULL);
            io->stopping = true;
            io_try_stop(io);
            uv_run(io->loop, UV_RUN_DEFAULT); /* its handles closed: the loop can be closed */
            return PT_ERR_IO;
        }
        io->thread_on = true;
    }
    pt_log_info("connections: %s", threaded ? "worker loops" : "on the main loop (no workers)");
    if (threaded) pt_log_info("worker loops: %u", n);
    return 0;
}

/* Stops the worker loops (force: closing their connections now), waits for them and
 * takes their last events. */
static void ios_join(pt_server *s, bool force)
{
    for (unsigned i = 0; i < s->nios; i++) {
        pt_io *io = s->ios[i];
        if (!io->thread_on) continue;
        pthread_mutex_lock(&io->mu);
        io->stop_req = true;
        io->stop_force |= force;
        pthread_mutex_unlock(&io->mu);
        uv_async_send(&io->wake);
    }
    for (unsigned i = 0; i < s->nios; i++) {
        pt_io *io = s->ios[i];
        if (!io->thread_on) continue;
        uv_thread_join(&io->thread);
        io->thread_on = false;
        core_take_events(io);
    }
}

/* The worker with the fewest connections. */
static pt_io *pick_io(pt_server *s)
{
    pt_io *best = s->ios[0];
    for (unsigned i = 1; i < s->nios; i++)
        if (s->ios[i]->nconns < best->nconns) best = s->ios[i];
    return best;
}

/* ---- accepting ---- */

static void peer_name(pt_conn *c, int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0) return;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    } else {
        uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
    snprintf(c->ip, sizeof c->ip, "%s", ip);
}

static void free_handle(uv_handle_t *h) { free(h); }

/* Takes the socket libuv accepted into a handle of the server's loop, for a worker's
 * loop: a descriptor of its own (the handle's goes with the handle). -1: failed. */
static int accept_fd(pt_server *s, pt_listener *l)
{
    uv_tcp_t *t = malloc(sizeof *t);
    if (!t) return -2;
    uv_tcp_init(&s->loop, t);
    int fd = -1;
    uv_os_fd_t ofd;
    if (uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)t) == 0 &&
        uv_fileno((uv_handle_t *)t, &ofd) == 0)
        fd = fcntl(ofd, F_DUPFD_CLOEXEC, 0);
    uv_close((uv_handle_t *)t, free_handle);
    return fd;
}

/* Takes the connection libuv accepted on l (its accepted_fd). PT_ERR_NOMEM leaves it
 * pending, to be taken later. */
static int accept_one(pt_server *s, pt_listener *l)
{
    pt_conn *c = calloc(1, sizeof *c);
    if (!c) return PT_ERR_NOMEM;
    pt_io *io = pick_io(s);
    c->srv = s;
    c->io = io;
    c->loop = io->loop;
    c->sockfd = -1;
    if (io->threaded) {
        int fd = accept_fd(s, l);
        if (fd == -2) {
            free(c);
            return PT_ERR_NOMEM;
        }
        atomic_init(&c->refs, 2); /* the server side's and the worker's */
        c->sockfd = fd;
    } else {
        uv_tcp_init(&s->loop, &c->tcp);
        uv_timer_init(&s->loop, &c->timer);
        c->tcp.data = c->timer.data = c;
        c->open_handles = 2;
        c->io_next = io->conns; /* the unthreaded pt_io's list, for trimming */
        if (io->conns) io->conns->io_prev = c;
        io->conns = c;
    }
    s->accepts_turn++;
    pt_buf_init(&c->out);
    pt_buf_init(&c->inflight);
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    io->nconns++;
    s->counters.conns_accepted++;
    c->core_active_ms = uv_now(&s->loop);
    strcpy(c->peer, "?");
    if (io->threaded) {
        if (c->sockfd < 0) {
            pt_conn_close(c, "accept failed");
            return 0;
        }
        peer_name(c, c->sockfd);
    } else {
        uv_os_fd_t fd;
        if (uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->tcp) != 0) {
            pt_conn_close(c, "accept failed");
            return 0;
        }
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) peer_name(c, fd);
    }
    const char *why = NULL;
    if (pt_abuse_admit(s, c, &why) != 0) {
        pt_log_warn("conn %s: refused: %s", c->peer, why);
        s->counters.conns_refused++;
        pt_conn_close(c, why);
        return 0;
    }
    if (s->nconns == (size_t)s->cfg.max_connections + 1 && s->hs_head) {
        /* Full (just: a reload may have lowered the cap below what is open). The
         * connection longest in its handshake makes room: otherwise a crowd of
         * addresses, each under the per-address cap, could hold every slot with
         * half-open handshakes and keep real clients out for as long as it reconnects
         * (refusing the newcomer, as before, serves whoever reconnects fastest). This
         * way an authenticated connection is never closed for a newcomer, and a
         * handshake holds its slot only while it is not the oldest. (With worker
         * loops, a channel that came up on its worker a moment ago, its "up" not yet
         * here, still counts as a handshake.) */
        pt_conn *old = s->hs_head;
        pt_log_debug("conn %s: %u connections: closing the oldest handshake (%s) to admit it",
                     c->peer, s->cfg.max_connections, old->peer);
        s->counters.conns_evicted++;
        pt_conn_close(old, "evicted: the server is full and this handshake was the oldest");
    }
    if (s->nconns > s->cfg.max_connections) { /* every slot is an authenticated connection */
        pt_log_warn("conn %s: refused: %u connections already", c->peer, s->cfg.max_connections);
        s->counters.conns_refused++;
        pt_conn_close(c, "too many connections");
        return 0;
    }
    pt_chan_config cc = {.is_server = true, .suites = s->cfg.suites, .nsuites = s->cfg.nsuites,
                         .static_sk = s->static_sk, .static_pk = s->static_pk};
    int err = 0;
    if (!(c->chan = pt_chan_new(pt_env_default(), &cc, &err))) {
        pt_conn_close(c, pt_strerror(err));
        return 0;
    }
    if ((err = pt_obfs_conn_attach(c)) != 0) { /* obfuscation (obfs_conn.c) */
        pt_conn_close(c, pt_strerror(err));
        return 0;
    }
    hs_push(s, c);
    if (io->threaded) pt_log_debug("conn %s: accepted (worker %u)", c->peer, io->index);
    else pt_log_debug("conn %s: accepted", c->peer);
    if (io->threaded) {
        c->io_started = true;
        core_post(c, PT_CONN_CMD_START, NULL, 0);
    } else {
        io_open(c);
    }
    return 0;
}

static void on_accept_timer(uv_timer_t *t);

/* Leaves l's accepted connection pending: libuv stops watching l until uv_accept()
 * is called, which accept_one() does when the timer fires (for every listener
 * pending then). */
static void defer_accept(pt_listener *l, uint64_t ms)
{
    l->pending = true;
    uv_timer_t *t = &l->srv->accept_timer; /* one for all: not pushed later by another */
    if (!uv_is_active((uv_handle_t *)t) || uv_timer_get_due_in(t) > ms)
        uv_timer_start(t, on_accept_timer, ms, 0);
}

/* With worker loops, connections the server loop closed stay open until their worker
 * gets to them: while a turn's worth are waiting, accepting waits too (a flood that
 * keeps the server evicting would otherwise hold sockets far past max_connections). */
static bool closes_lag(pt_server *s)
{
    return atomic_load_explicit(&s->closes_pending, memory_order_relaxed) >= PT_SERVER_ACCEPTS_PER_TURN;
}

static void on_accept_timer(uv_timer_t *t)
{
    pt_server *s = t->data;
    if (s->stopping) return;
    for (size_t i = 0; i < s->nlisteners; i++) {
        pt_listener *l = &s->listeners[i];
        if (!l->pending) continue;
        l->pending = false;
        if (closes_lag(s)) defer_accept(l, 1);
        else if (accept_one(s, l) != 0) defer_accept(l, 10); /* no memory: try again a little later */
    }
}

static void on_connection(uv_stream_t *server, int status);

int pt_srv_tcp_listen(uv_tcp_t *t, const struct sockaddr_storage *addr, unsigned flags, int backlog,
                      uv_connection_cb cb, uint16_t *port)
{
    int rc;
    if ((rc = uv_tcp_bind(t, (const struct sockaddr *)addr, flags)) != 0 ||
        (rc = uv_listen((uv_stream_t *)t, backlog, cb)) != 0)
        return rc;
    struct sockaddr_storage bound;
    int bl = sizeof bound;
    if ((rc = uv_tcp_getsockname(t, (struct sockaddr *)&bound, &bl)) != 0) return rc;
    *port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
    return 0;
}

/* Binds and listens on host:port (port 0: a free one) as the next listener; v6only:
 * an IPv6 socket that takes IPv6 connections only. */
static int listen_on(pt_server *s, const char *host, uint16_t port, bool v6only)
{
    pt_listener *l = &s->listeners[s->nlisteners];
    struct sockaddr_storage addr;
    bool v6 = strchr(host, ':') != NULL;
    int uvrc = v6 ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr)
                  : uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
    if (uvrc != 0) {
        pt_log_error("invalid listen address %s", host);
        return PT_ERR_INVAL;
    }
    uv_tcp_init(&s->loop, &l->tcp);
    l->tcp.data = l;
    l->srv = s;
    s->nlisteners++; /* closed with the others from here on */
    unsigned flags = v6 && v6only ? UV_TCP_IPV6ONLY : 0;
    if ((uvrc = pt_srv_tcp_listen(&l->tcp, &addr, flags, 511, on_connection, &l->port)) != 0) {
        char hp[PT_HOSTPORT_LEN];
        pt_log_error("cannot listen on %s: %s", pt_hostport_format(hp, host, port), uv_strerror(uvrc));
        return PT_ERR_IO;
    }
    snprintf(l->host, sizeof l->host, "%.*s", (int)sizeof l->host - 1, host);
    return 0;
}

/* The first address (s->host, cfg.port: s->port is where it is bound), then the
 * others. An IPv6 address takes IPv6 only when an IPv4 one has the same port (so
 * that [::]:P and 0.0.0.0:P can both be given); otherwise it takes both, as alone. */
static int listen_all(pt_server *s)
{
    char hosts[PT_SERVER_MAX_LISTEN][256];
    uint16_t ports[PT_SERVER_MAX_LISTEN];
    size_t n = 1;
    snprintf(hosts[0], sizeof hosts[0], "%s", s->host);
    ports[0] = s->cfg.port;
    for (const char *p = s->listen_also; *p;) {
        size_t len = strcspn(p, ",");
        char item[300];
        snprintf(item, sizeof item, "%.*s", (int)len, p);
        if (n == PT_SERVER_MAX_LISTEN || pt_parse_listen(item, hosts[n], sizeof hosts[n], &ports[n]) != 0) {
            pt_log_error("invalid listen address %s", item);
            return PT_ERR_INVAL;
        }
        n++;
        p += len + (p[len] == ',');
    }
    for (size_t i = 0; i < n; i++) {
        bool v6only = false;
        for (size_t j = 0; j < n && strchr(hosts[i], ':'); j++)
            v6only |= ports[i] && ports[j] == ports[i] && !strchr(hosts[j], ':');
        int rc = listen_on(s, hosts[i], ports[i], v6only);
        if (rc) return rc;
    }
    s->port = s->listeners[0].port;
    return 0;
}

static void on_connection(uv_stream_t *server, int status)
{
    pt_listener *l = server->data;
    pt_server *s = l->srv;
    if (status < 0 || s->stopping) return;
    /* At most PT_SERVER_ACCEPTS_PER_TURN a loop iteration: libuv accepts until the
     * backlog is empty, and a flood that reconnects as fast as it is closed would keep
     * the loop in here, reading nothing, while every connection accepted in the turn
     * holds its memory until the turn's close callbacks (the handshakes evicted at
     * max_connections among them, before their bytes were read). The rest waits in
     * the kernel's backlog for the next iteration. A connection the callback does not
     * take must still be taken (libuv stops accepting until it is): on no memory too. */
    if (s->accepts_turn >= PT_SERVER_ACCEPTS_PER_TURN) defer_accept(l, 0);
    else if (closes_lag(s)) defer_accept(l, 1);
    else if (accept_one(s, l) != 0) defer_accept(l, 10);
}

/* ---- sessions without a connection expire ------------------------------------------------ */

static void on_gc(uv_timer_t *t)
{
    pt_server *s = t->data;
    pt_abuse_gc(s);
    uint64_t now = uv_now(&s->loop);
    for (pt_srv_sess *e = s->sess_all, *next; e; e = next) {
        next = e->all_next;
        if (!e->conn && now - e->detached_ms > s->cfg.session_expiry_ms) {
            pt_log_debug("session %016llx expired", (unsigned long long)e->session_id);
            pt_srv_sess_destroy(s, e);
        }
    }
}

/* Every second: sessions of connections quiet for a second give back their buffers
 * (the worker loops trim the sockets' side: on_io_trim), and those that sent something
 * the client has not acknowledged for PROBE_AFTER_MS ping it (pt_sess_probe: a record
 * lost on the way, with nothing sent after it, would leave the client waiting until
 * the idle timeout; clients acknowledge within PT_SESS_ACK_DELAY_MS). */
#define PROBE_AFTER_MS 1000

static void on_trim(uv_timer_t *t)
{
    pt_server *s = t->data;
    uint64_t now = uv_now(&s->loop);
    for (pt_conn *c = s->conns; c; c = c->next) {
        if (c->closing || c->dirty || c->in_input || !c->sess || now - c->core_active_ms < TRIM_AFTER_MS)
            continue;
        pt_sess_trim(c->sess->sess);
        int rc = pt_sess_probe(c->sess->sess, PROBE_AFTER_MS);
        if (rc > 0) {
            pt_log_debug("conn %s: output unacknowledged for %d ms; pinging", c->peer,
                         PROBE_AFTER_MS);
            pt_conn_flush(c);
        }
    }
}

/* ---- lifetime ------------------------------------------------------------------------------- */

static void on_stop_async(uv_async_t *a)
{
    pt_server *s = a->data;
    if (s->stopping) return;
    s->stopping = true;
    pt_log_info("shutting down: %zu connections, %zu sessions", s->nconns, s->sess_n);
    for (size_t i = 0; i < s->nlisteners; i++) uv_close((uv_handle_t *)&s->listeners[i].tcp, NULL);
    uv_close((uv_handle_t *)&s->gc_timer, NULL);
    uv_close((uv_handle_t *)&s->trim_timer, NULL);
    uv_close((uv_handle_t *)&s->ack_timer, NULL);
    uv_close((uv_handle_t *)&s->accept_timer, NULL);
    uv_close((uv_handle_t *)&s->stop_async, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sighup, NULL);
    pt_srv_notify(s, PT_SRV_NOTIFY_STOPPING); /* ops (issue 9) */
    pt_srv_logs_signal_stop(s);
    pt_srv_ctl_stop(s);
    pt_metrics_stop(s);
    pt_srv_lan_stop(s); /* LAN discovery (lan.c) */
    pt_cluster_stop(s);
    /* the writer finishes what was submitted; replies still go out */
    if (s->db) {
        pt_db_close(s->db);
        s->db = NULL;
    }
    /* and the acknowledgements that wait (a new process would not know the ids),
     * also those of records taken in this very iteration */
    while (s->ack_wait) ack_wait_remove(s->ack_wait);
    for (pt_conn *c = s->conns; c; c = c->next) {
        if (!c->sess || !pt_sess_acks_pending(c->sess->sess)) continue;
        pt_sess_acks_now(c->sess->sess);
        pt_conn_flush(c);
    }
    flush_dirty(s);
    for (pt_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        core_close_after_write(c, "server shutting down");
    }
    /* the worker loops finish their writes after this loop ends (pt_server_run) */
    for (unsigned i = 0; i < s->nios; i++)
        if (s->ios[i]->threaded) uv_unref((uv_handle_t *)&s->ios[i]->core_wake);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    pt_log_info("received %s", signum == SIGINT ? "SIGINT" : "SIGTERM");
    on_stop_async((uv_async_t *)&((pt_server *)sig->data)->stop_async);
}

/* SIGHUP: reread the configuration file, what can change live changes now
 * (reload.c), and reopen the log file (after a rotation that moved it), as
 * SIGUSR1 does; a file the reload just opened is reopened too, which is harmless. */
static void on_sighup(uv_signal_t *sig, int signum)
{
    (void)signum;
    pt_server *s = sig->data;
    (void)pt_srv_reload(s, "SIGHUP", NULL, 0); /* logged there */
    char msg[1200];
    if (s->log_file[0]) (void)pt_srv_reopen_logs(s, "SIGHUP", msg, sizeof msg); /* likewise */
}

void pt_server_stop(pt_server *s) { uv_async_send(&s->stop_async); }

uint16_t pt_server_port(const pt_server *s) { return s->port; }
uint16_t pt_server_metrics_port(const pt_server *s) { return s->metrics_on ? s->metrics_port : 0; }
const uint8_t *pt_server_public_key(const pt_server *s) { return s->static_pk; }

static int load_next_server_id(pt_server *s)
{
    sqlite3_stmt *st;
    int rc = pt_db_prepare(pt_db_reader(s->db), "SELECT coalesce(max(server_id), 0) FROM messages", &st);
    if (rc) return rc;
    rc = pt_db_step(st);
    s->next_server_id = rc == 1 ? sqlite3_column_int64(st, 0) + 1 : 1;
    sqlite3_finalize(st);
    return rc < 0 ? rc : 0;
}

/* The secure heap for connection secrets (pt_crypto.h): made by the first server
 * of the process. Without it every connection costs three sodium_malloc() mapping
 * groups, ~24 KiB resident and 12 mappings: vm.max_map_count (65,530) stopped a
 * server near 5,400 connections. */
static void make_secure_heap(const pt_server_config *cfg)
{
    if (cfg->secure_heap_kib == PT_SECURE_HEAP_OFF) {
        pt_log_info("secure heap: off (a guarded mapping group per secret)");
        return;
    }
    size_t want = cfg->secure_heap_kib == PT_SECURE_HEAP_AUTO
                      ? (size_t)cfg->max_connections * PT_SERVER_SECURE_HEAP_PER_CONN
                      : (size_t)cfg->secure_heap_kib * 1024;
    size_t got = 0;
    bool locked = false;
    int rc = pt_secure_heap_init(want, &got, &locked);
    if (rc == PT_ERR_EXISTS) return; /* another server of this process made it */
    if (rc == PT_ERR_REFUSED) {
        pt_log_info("secure heap: off in sanitizer builds (a mapping group per secret)");
    } else if (rc != 0) {
        pt_log_warn("secure heap: cannot make %zu KiB; a mapping group per secret instead "
                    "(vm.max_map_count then limits connections)", want / 1024);
    } else if (!locked) {
        struct rlimit rl = {0};
        getrlimit(RLIMIT_MEMLOCK, &rl);
        pt_log_warn("secure heap: %zu KiB, not locked in memory (RLIMIT_MEMLOCK %llu KiB, or its "
                    "guard pages were refused): secrets may be swapped out; raise the limit "
                    "(LimitMEMLOCK=) or lower secure_heap",
                    got / 1024, (unsigned long long)rl.rlim_cur / 1024);
    } else {
        pt_log_info("secure heap: %zu KiB, locked in memory", got / 1024);
    }
}

pt_server *pt_server_new(const pt_server_config *cfg, int *err)
{
    int rc = PT_ERR_NOMEM;
    pt_server *s = calloc(1, sizeof *s);
    if (!s) goto fail;
    s->cfg = *cfg;
    if (!s->cfg.host) s->cfg.host = PT_SERVER_DEFAULT_HOST;
    if (!s->cfg.data_dir) s->cfg.data_dir = PT_SERVER_DEFAULT_DATA;
    if (!s->cfg.nsuites) {
        s->cfg.nsuites = pt_suite_defaults(false, s->cfg.suites);
    }
    if (!s->cfg.handshake_timeout_ms) s->cfg.handshake_timeout_ms = PT_SERVER_HANDSHAKE_TIMEOUT_MS;
    if (!s->cfg.idle_timeout_ms) s->cfg.idle_timeout_ms = PT_SERVER_IDLE_TIMEOUT_MS;
    if (!s->cfg.session_expiry_ms) s->cfg.session_expiry_ms = PT_SERVER_SESSION_EXPIRY_MS;
    if (!s->cfg.max_connections) s->cfg.max_connections = PT_SERVER_MAX_CONNECTIONS;
    if (!s->cfg.queue_quota) s->cfg.queue_quota = PT_SERVER_QUEUE_QUOTA;
    if (!s->cfg.confirm_wait_ms) s->cfg.confirm_wait_ms = PT_SERVER_CONFIRM_WAIT_MS;
    if (!s->cfg.max_conns_per_ip) s->cfg.max_conns_per_ip = PT_SERVER_MAX_CONNS_PER_IP;
    if (!s->cfg.rate_limit) s->cfg.rate_limit = PT_SERVER_RATE_LIMIT;
    if (!s->cfg.ip_rate_limit) s->cfg.ip_rate_limit = PT_SERVER_IP_RATE_LIMIT;
    if (!s->cfg.ip_conn_rate) s->cfg.ip_conn_rate = PT_SERVER_IP_CONN_RATE;
    if (!s->cfg.ban_s) s->cfg.ban_s = PT_SERVER_BAN_S;
    snprintf(s->host, sizeof s->host, "%s", s->cfg.host);
    snprintf(s->listen_also, sizeof s->listen_also, "%s", s->cfg.listen_also ? s->cfg.listen_also : "");
    s->cfg.listen_also = NULL; /* the caller's string; s->listen_also is ours */
    s->cfg.host = s->host;
    snprintf(s->data_dir, sizeof s->data_dir, "%s", s->cfg.data_dir);
    s->cfg.data_dir = s->data_dir;
    s->cfg.ready_file = NULL;
    if (cfg->ready_file) snprintf(s->ready_file, sizeof s->ready_file, "%s", cfg->ready_file);
    if (cfg->config_path) snprintf(s->config_path, sizeof s->config_path, "%s", cfg->config_path);
    s->cfg.config_path = NULL;
    if (s->cfg.test_user_id_bits >= 128) s->cfg.test_user_id_bits = 0;
    if (cfg->metrics_host) {
        snprintf(s->metrics_host, sizeof s->metrics_host, "%s", cfg->metrics_host);
        s->cfg.metrics_host = s->metrics_host;
    }
    s->alloc_cb = on_alloc;
    s->read_cb = on_read;
    s->timer_cb = on_timer;
    if ((rc = pt_srv_logs_start(s)) != 0) goto fail; /* ops (issue 9): log_file */
    make_secure_heap(&s->cfg);

    rc = PT_ERR_IO;
    if (mkdir(s->data_dir, 0700) != 0 && errno != EEXIST) {
        pt_log_error("cannot create data directory %s: %s", s->data_dir, strerror(errno));
        goto fail;
    }
    if ((rc = pt_srv_ctl_lock(s)) != 0) goto fail; /* ops (issue 9): one server per data dir */
    char path[sizeof s->data_dir + 32];
    snprintf(path, sizeof path, "%s/server.key", s->data_dir);
    if ((rc = pt_keyfile_load_or_create(path, s->static_sk, s->static_pk)) != 0) goto fail;
    pt_random(s->salt_secret, sizeof s->salt_secret);
    s->sess_env = *pt_env_default(); /* the sessions' clock: pt_srv_now_ms */
    s->sess_env.now_ms = sess_env_now_ms;
    s->sess_env.ctx = s;

    s->sess_nbuckets = 1024;
    rc = PT_ERR_NOMEM;
    if (!(s->sess_buckets = calloc(s->sess_nbuckets, sizeof *s->sess_buckets))) goto fail;
    if ((rc = pt_srv_devices_init(s)) != 0) goto fail;
    if ((rc = pt_abuse_init(s)) != 0) goto fail;
    if ((rc = pt_srv_presence_init(s)) != 0) goto fail;
    if ((rc = pt_srv_addrs_init(s)) != 0) goto fail;
    if ((rc = pt_obfs_server_init(s)) != 0) goto fail; /* obfuscation (obfs_conn.c) */

    rc = PT_ERR_IO;
    if (uv_loop_init(&s->loop) != 0) goto fail;
    s->loop_ready = true;
    snprintf(path, sizeof path, "%s/packtrack.db", s->data_dir);
    if ((rc = pt_db_open(&s->db, path, &s->loop)) != 0) goto fail;
    if ((rc = load_next_server_id(s)) != 0) goto fail;
    if ((rc = pt_srv_queues_init(s)) != 0) goto fail;
    if ((rc = pt_srv_dir_init(s)) != 0) goto fail;
    if ((rc = pt_srv_admin_init(s)) != 0) goto fail; /* ops (issue 9): bans */
    if (s->cfg.cluster.nats_urls) {
        /* cluster mode: this node's server_ids are node_id << 40 | n, so that ids
         * from different nodes never meet */
        int64_t base = (int64_t)s->cfg.cluster.node_id << PT_CLUSTER_SERVER_ID_SHIFT;
        if (s->next_server_id > base + (INT64_C(1) << PT_CLUSTER_SERVER_ID_SHIFT)) {
            pt_log_error("cluster: %s holds messages of another node (server_id %lld); "
                         "each node needs its own data directory and node_id",
                         s->data_dir, (long long)s->next_server_id - 1);
            rc = PT_ERR_INVAL;
            goto fail;
        }
        if (s->next_server_id <= base) s->next_server_id = base + 1;
        if ((rc = pt_cluster_start(s)) != 0) goto fail;
        /* sessions move between nodes: one salt secret for the cluster (a failure is
         * logged; clients then get one bad_server_salt when they move) */
        (void)pt_cluster_salt_secret(s->cluster, s->salt_secret, sizeof s->salt_secret);
        /* the queue is JetStream's, not this store's: ids come from a block reserved
         * in the cluster, above every id this node ever used */
        if ((rc = pt_cluster_reserve_ids(s->cluster, &s->next_server_id, &s->server_id_limit)) != 0) {
            pt_log_error("cluster: cannot reserve server ids in the bucket");
            goto fail;
        }
    } else if ((rc = pt_srv_ids_init(s)) != 0) {
        pt_log_error("cannot store the first block of server ids");
        goto fail;
    }
    if ((rc = listen_all(s)) != 0) goto fail;
    uv_async_init(&s->loop, &s->stop_async, on_stop_async);
    s->stop_async.data = s;
    uv_timer_init(&s->loop, &s->gc_timer);
    s->gc_timer.data = s;
    uv_timer_start(&s->gc_timer, on_gc, 10000, 10000);
    uv_timer_init(&s->loop, &s->trim_timer);
    s->trim_timer.data = s;
    uv_timer_start(&s->trim_timer, on_trim, TRIM_AFTER_MS, TRIM_AFTER_MS);
    uv_timer_init(&s->loop, &s->ack_timer);
    s->ack_timer.data = s;
    pt_srv_timeouts_changed(s);
    if ((rc = ios_start(s)) != 0) goto fail;
    uv_timer_init(&s->loop, &s->accept_timer);
    s->accept_timer.data = s;
    uv_check_init(&s->loop, &s->flush_check);
    s->flush_check.data = s;
    uv_check_start(&s->flush_check, on_flush_check);
    uv_unref((uv_handle_t *)&s->flush_check); /* does not keep the loop alive */
    uv_idle_init(&s->loop, &s->flush_idle);
    uv_signal_init(&s->loop, &s->sigint);
    uv_signal_init(&s->loop, &s->sigterm);
    s->sigint.data = s->sigterm.data = s;
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_init(&s->loop, &s->sighup);
    s->sighup.data = s;
    uv_signal_start(&s->sighup, on_sighup, SIGHUP);
    signal(SIGPIPE, SIG_IGN);
    if ((rc = pt_metrics_start(s)) != 0) goto fail;
    if ((rc = pt_srv_lan_start(s)) != 0) goto fail; /* LAN discovery (lan.c): never fails on a busy port */
    pt_srv_logs_signal_start(s); /* ops (issue 9): SIGUSR1, the control socket */
    if ((rc = pt_srv_ctl_start(s)) != 0) goto fail;
    s->started_ms = uv_now(&s->loop);
    if (s->cfg.test_user_id_bits)
        pt_log_warn("TEST ONLY: user ids shortened to %u bits", s->cfg.test_user_id_bits);
    if (err) *err = 0;
    return s;
fail:
    pt_server_free(s);
    if (err) *err = rc;
    return NULL;
}

int pt_server_run(pt_server *s)
{
    char fp[PT_FINGERPRINT_LEN];
    pt_fingerprint(fp, s->static_pk);
    char hp[PT_HOSTPORT_LEN];
    pt_log_info("packtrackd %s listening on %s (data %s)", PT_VERSION_STRING,
                pt_hostport_format(hp, s->host, s->port), s->data_dir);
    for (size_t i = 1; i < s->nlisteners; i++)
        pt_log_info("also listening on %s",
                    pt_hostport_format(hp, s->listeners[i].host, s->listeners[i].port));
    pt_log_info("server key fingerprint %s", fp);
    if (s->ready_file[0]) {
        char tmp[sizeof s->ready_file + 8];
        snprintf(tmp, sizeof tmp, "%s.tmp", s->ready_file);
        FILE *f = fopen(tmp, "w");
        bool ok = f && fprintf(f, "%s\n%s\n", pt_hostport_format(hp, s->host, s->port), fp) >= 0;
        if (ok && s->metrics_on)
            ok = fprintf(f, "metrics %s\n", pt_hostport_format(hp, s->metrics_host, s->metrics_port)) >= 0;
        for (size_t i = 1; ok && i < s->nlisteners; i++)
            ok = fprintf(f, "listen %s\n",
                         pt_hostport_format(hp, s->listeners[i].host, s->listeners[i].port)) >= 0;
        if (f && fclose(f) != 0) ok = false;
        if (!ok || rename(tmp, s->ready_file) != 0) {
            pt_log_error("cannot write ready file %s", s->ready_file);
            return PT_ERR_IO;
        }
    }
    pt_srv_notify(s, PT_SRV_NOTIFY_READY); /* ops (issue 9): systemd Type=notify */
    uv_run(&s->loop, UV_RUN_DEFAULT);
    ios_join(s, false);
    pt_srv_enc_free(); /* this thread's encode buffer: a server run in a thread of a
                        * program that goes on (the tests) would leave it behind */
    pt_log_info("stopped");
    return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

void pt_server_free(pt_server *s)
{
    if (!s) return;
    s->stopping = true; /* no presence pushes while everything goes */
    if (s->ios) ios_join(s, true);
    while (s->sess_all) pt_srv_sess_destroy(s, s->sess_all);
    free(s->sess_buckets);
    if (s->db) {
        pt_db_close(s->db);
        s->db = NULL;
    }
    pt_srv_ctl_stop(s); /* ops (issue 9) */
    pt_cluster_stop(s); /* no more wake-ups from NATS threads */
    if (s->loop_ready) {
        /* close whatever is still open (a server that never ran) */
        uv_walk(&s->loop, close_walk, NULL);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
    }
    for (unsigned i = 0; i < s->nios; i++) io_free(s->ios[i]);
    free(s->ios);
    pt_srv_presence_free(s);
    pt_srv_addrs_free(s);
    pt_srv_queues_free(s);
    pt_srv_dir_free(s);
    pt_srv_devices_free(s);
    free(s->pending_sends);
    pt_cluster_free(s); /* after the devices: it unsubscribes them */
    pt_abuse_free(s);
    pt_obfs_server_free(s);
    pt_srv_lan_free(s);
    pt_wipe(s->static_sk, sizeof s->static_sk);
    pt_wipe(s->salt_secret, sizeof s->salt_secret);
    pt_srv_ctl_free(s); /* ops (issue 9) */
    pt_srv_admin_free(s);
    pt_srv_logs_stop(s);
    free(s);
}
