/*
 * The metrics endpoint: Prometheus text exposition (format 0.0.4) over plain
 * HTTP/1.0, on its own listen address (metrics_listen / --metrics; off unless
 * set), served by the server's event loop.
 *
 * A scrape must never hold the loop: a request is at most PT_METRICS_REQ_MAX
 * bytes and must be complete within PT_METRICS_TIMEOUT_MS, at most
 * PT_METRICS_MAX_CONNS scrapes are served at once (more are closed at accept),
 * and the answer is built from counters already in memory (no store query). One
 * request per connection: GET /metrics is answered 200 (and GET /healthz 200 with
 * {"status":"ok"}, for load balancers and systemd-less supervisors), another path 404, another
 * method 405, anything malformed or oversized 400; then the connection closes.
 * It closes the way HTTP servers must when they answer before the client has
 * stopped sending (a 400 for an oversized request, a request with a body): our
 * side is shut down first (FIN after the answer), and what the client still sends
 * is read and dropped until it closes too, for at most PT_METRICS_LINGER_MS and
 * PT_METRICS_LINGER_MAX bytes. A close() with unread bytes would send a reset,
 * and the reset throws away the part of the answer the client has not received.
 * A lingering connection no longer counts against PT_METRICS_MAX_CONNS (a prober
 * that reads and keeps its socket open must not crowd out scrapes); past
 * PT_METRICS_MAX_LINGER of them, an answered connection closes at once.
 * Bind the endpoint to a private address: it is not authenticated.
 */
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "server/pt_server_int.h"

#define PT_METRICS_TIMEOUT_MS 5000    /* to send the whole request */
#define PT_METRICS_MAX_CONNS 16       /* scrapes served at once */
#define PT_METRICS_LINGER_MS 2000     /* after the answer: waiting for the client's close */
#define PT_METRICS_LINGER_MAX 65536   /* after the answer: bytes read and dropped at most */
#define PT_METRICS_MAX_LINGER 64      /* answered connections lingering at once */

struct pt_metrics_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;               /* request timeout, then the linger's */
    uv_write_t wreq;
    uv_shutdown_t sreq;             /* our FIN, once the answer is written */
    pt_server *srv;
    int open_handles;               /* libuv handles not yet closed */
    bool closing, answered;
    bool lingering;                 /* answer written; reading only to drop */
    size_t dropped;                 /* bytes read and dropped while lingering */
    size_t len;                     /* bytes of req received */
    char req[PT_METRICS_REQ_MAX];
    pt_buf resp;                    /* the answer being written */
    pt_metrics_conn *prev, *next;   /* every scrape in progress */
};

/* ---- the exposition ----------------------------------------------------------------------- */

static int put(pt_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int put(pt_buf *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line) return PT_ERR_INVAL;
    return pt_buf_append(b, line, (size_t)n);
}

static int metric(pt_buf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    int rc = put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    return rc ? rc : put(b, "%s %llu\n", name, (unsigned long long)v);
}

int pt_metrics_render(pt_server *s, pt_buf *out)
{
    const pt_srv_counters *k = &s->counters;
    int rc = 0;
#define M(name, type, help, v)                                                                     \
    if (rc == 0) rc = metric(out, "packtrackd_" name, type, help, (uint64_t)(v))
    M("connections", "gauge", "Connections open now.", s->nconns);
    M("connections_accepted_total", "counter", "TCP connections accepted.", k->conns_accepted);
    M("connections_refused_total", "counter",
      "Connections closed at accept: banned address or a connection cap.", k->conns_refused);
    M("connections_evicted_total", "counter",
      "Handshakes closed to make room for a new connection at max_connections.", k->conns_evicted);
    M("handshake_failures_total", "counter", "Channel handshakes that failed or timed out.",
      k->handshake_failures + atomic_load(&s->hs_failures_workers));
    if (rc == 0 && s->nios && s->ios[0]->threaded) {
        rc = put(out, "# HELP packtrackd_worker_connections Connections carried by each worker loop.\n"
                      "# TYPE packtrackd_worker_connections gauge\n");
        for (unsigned i = 0; rc == 0 && i < s->nios; i++)
            rc = put(out, "packtrackd_worker_connections{worker=\"%u\"} %zu\n", i, s->ios[i]->nconns);
    }
    M("sessions", "gauge", "Sessions kept, with or without a connection.", s->sess_n);
    M("rpc_calls_total", "counter", "Application calls received.", k->rpc_calls);
    M("messages_in_total", "counter",
      "Messages, group messages and receipts accepted for routing.", k->msgs_in);
    M("messages_out_total", "counter",
      "Updates handed to device sessions (live pushes and messages.sync).", k->msgs_out);
    M("messages_unstored_total", "counter",
      "Items every recipient device confirmed before the writer stored them (never written).",
      k->msgs_unstored);
    M("queue_rows", "gauge", "Undelivered queue rows, all devices (stored or being stored).",
      s->queue_rows < 0 ? 0 : s->queue_rows);
    M("queue_devices", "gauge", "Devices with undelivered queue rows.", s->queue_devices);
    M("bans_total", "counter", "Addresses banned for flooding.", s->bans);
    M("discovery_requests_total", "counter", "LAN discovery datagrams received.", k->disc_requests);
    M("discovery_replies_total", "counter", "LAN discovery replies (BSR) sent.", k->disc_replies);
    M("discovery_dropped_total", "counter",
      "LAN discovery datagrams not answered: malformed, not a solicitation or rate limited.", k->disc_dropped);
    M("rate_limit_throttles_total", "counter", "Reads paused because a connection exceeded its rate.",
      k->throttles);
    pt_secure_stats sec;
    pt_secure_get_stats(&sec);
    M("secure_heap_bytes", "gauge", "Size of the secure heap for connection secrets (0: none).",
      sec.heap_size);
    M("secure_heap_used_bytes", "gauge", "Bytes of the secure heap in use (connection secrets and OpenSSL's own).",
      sec.heap_used);
    M("secure_heap_spilled_total", "counter",
      "Secrets that did not fit in the secure heap and got a mapping group of their own.", sec.spilled);
    if (s->db) {
        pt_db_stats st;
        pt_db_get_stats(s->db, &st);
        M("store_commits_total", "counter", "Group commits of the store's writer.", st.commits);
        M("store_commit_failures_total", "counter", "Group commits that failed.", st.failed_commits);
        M("store_ops_total", "counter", "Write operations applied by the store's writer.", st.ops);
        M("store_max_batch", "gauge", "Most operations committed in one transaction so far.",
          st.max_batch);
        if (rc == 0)
            rc = put(out, "# HELP packtrackd_store_commit_seconds Duration of the writer's COMMIT "
                          "(with its fsync).\n# TYPE packtrackd_store_commit_seconds histogram\n");
        uint64_t cum = 0;
        for (size_t i = 0; rc == 0 && i <= PT_DB_COMMIT_BUCKETS; i++) {
            cum += st.commit_hist[i];
            if (i < PT_DB_COMMIT_BUCKETS)
                rc = put(out, "packtrackd_store_commit_seconds_bucket{le=\"%g\"} %llu\n",
                         pt_db_commit_bucket_us[i] / 1e6, (unsigned long long)cum);
            else
                rc = put(out, "packtrackd_store_commit_seconds_bucket{le=\"+Inf\"} %llu\n",
                         (unsigned long long)cum);
        }
        if (rc == 0)
            rc = put(out, "packtrackd_store_commit_seconds_sum %.6f\npacktrackd_store_commit_seconds_count %llu\n",
                     st.commit_us_sum / 1e6, (unsigned long long)cum);
    }
#undef M
    return rc;
}

/* ---- the HTTP side ------------------------------------------------------------------------ */

static void mc_closed(uv_handle_t *h)
{
    pt_metrics_conn *m = h->data;
    if (--m->open_handles > 0) return;
    pt_buf_free(&m->resp);
    free(m);
}

static void mc_close(pt_metrics_conn *m)
{
    if (m->closing) return;
    m->closing = true;
    pt_server *s = m->srv;
    if (m->prev) m->prev->next = m->next;
    else s->metrics_conns = m->next;
    if (m->next) m->next->prev = m->prev;
    if (m->lingering) s->metrics_nlinger--;
    else s->metrics_nconns--;
    uv_close((uv_handle_t *)&m->tcp, mc_closed);
    uv_close((uv_handle_t *)&m->timer, mc_closed);
}

/* Our FIN is out (or failed: the linger's timer closes then). Never touches the
 * connection, which may be closing (ECANCELED). */
static void mc_shut(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

/* The client has not closed within PT_METRICS_LINGER_MS of the answer: close. */
static void mc_linger_over(uv_timer_t *t)
{
    mc_close(t->data);
}

static void mc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void mc_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

/* HTTP/1.0: the answer ends with the connection. Our FIN goes after the answer;
 * the connection closes at the client's (see the top of the file). */
static void mc_written(uv_write_t *req, int status)
{
    pt_metrics_conn *m = req->data;
    pt_server *s = m->srv;
    if (status < 0 || m->closing || s->metrics_nlinger >= PT_METRICS_MAX_LINGER) {
        mc_close(m);
        return;
    }
    m->lingering = true; /* from here on counted apart from the scrapes being answered */
    s->metrics_nconns--;
    s->metrics_nlinger++;
    if (uv_shutdown(&m->sreq, (uv_stream_t *)&m->tcp, mc_shut) != 0 ||
        uv_read_start((uv_stream_t *)&m->tcp, mc_alloc, mc_read) != 0) {
        mc_close(m);
        return;
    }
    uv_timer_start(&m->timer, mc_linger_over, PT_METRICS_LINGER_MS, 0);
}

/* Sends the status line, the headers and body (may be NULL; type NULL: the
 * Prometheus text type for 200), then closes after the client (mc_written). */
static void mc_answer_typed(pt_metrics_conn *m, int code, const char *reason, const pt_buf *body, const char *type)
{
    m->answered = true;
    uv_read_stop((uv_stream_t *)&m->tcp);
    uv_timer_stop(&m->timer);
    if (!type) type = code == 200 ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8";
    char head[256], text[64];
    snprintf(text, sizeof text, "%d %s\n", code, reason);
    size_t blen = body ? body->len : strlen(text);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     code, reason, type, blen);
    if (n < 0 || (size_t)n >= sizeof head || pt_buf_append(&m->resp, head, (size_t)n) != 0 ||
        pt_buf_append(&m->resp, body ? (const char *)body->data : text, blen) != 0) {
        mc_close(m);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)m->resp.data, (unsigned)m->resp.len);
    m->wreq.data = m;
    if (uv_write(&m->wreq, (uv_stream_t *)&m->tcp, &b, 1, mc_written) != 0) mc_close(m);
}

static void mc_answer(pt_metrics_conn *m, int code, const char *reason, const pt_buf *body)
{
    mc_answer_typed(m, code, reason, body, NULL);
}

static void mc_bad(pt_metrics_conn *m, int code, const char *reason, const char *why)
{
    pt_log_info("metrics: %s from a scraper: %s", reason, why);
    mc_answer(m, code, reason, NULL);
}

/* Answers a complete request as v says. */
static void mc_request(pt_metrics_conn *m, const pt_metrics_verdict *v)
{
    switch (v->answer) {
    case PT_METRICS_MORE:
        return;
    case PT_METRICS_BAD_REQUEST:
    case PT_METRICS_BAD_METHOD:
        mc_bad(m, v->status, v->reason, v->why);
        return;
    case PT_METRICS_NOT_FOUND:
        mc_answer(m, v->status, v->reason, NULL);
        return;
    case PT_METRICS_HEALTHZ: {
        /* liveness: the loop answered; nothing else is consulted */
        pt_buf ok;
        pt_buf_init(&ok);
        if (pt_buf_append(&ok, "{\"status\":\"ok\"}\n", 16) == 0)
            mc_answer_typed(m, 200, "OK", &ok, "application/json");
        else
            mc_answer(m, 500, "Internal Server Error", NULL);
        pt_buf_free(&ok);
        return;
    }
    case PT_METRICS_SCRAPE: {
        pt_buf body;
        pt_buf_init(&body);
        if (pt_metrics_render(m->srv, &body) == 0) mc_answer(m, 200, "OK", &body);
        else mc_answer(m, 500, "Internal Server Error", NULL);
        pt_buf_free(&body);
        return;
    }
    }
}

/* Where the headers end (just past the blank line), or 0 when not yet. */
static size_t headers_end(const char *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (p[i] != '\n') continue;
        if (p[i + 1] == '\n') return i + 2;
        if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') return i + 3;
    }
    return 0;
}

static pt_metrics_answer verdict(pt_metrics_verdict *out, pt_metrics_answer a, const char *why)
{
    static const struct {
        int status;
        const char *reason;
    } http[] = {
        [PT_METRICS_MORE] = {0, NULL},
        [PT_METRICS_SCRAPE] = {200, "OK"},
        [PT_METRICS_HEALTHZ] = {200, "OK"},
        [PT_METRICS_NOT_FOUND] = {404, "Not Found"},
        [PT_METRICS_BAD_METHOD] = {405, "Method Not Allowed"},
        [PT_METRICS_BAD_REQUEST] = {400, "Bad Request"},
    };
    out->answer = a;
    out->status = http[a].status;
    out->reason = http[a].reason;
    out->why = why;
    return a;
}

pt_metrics_answer pt_metrics_request(const char *req, size_t len, pt_metrics_verdict *out)
{
    if (len > PT_METRICS_REQ_MAX) len = PT_METRICS_REQ_MAX;
    size_t end = headers_end(req, len);
    if (memchr(req, 0, end ? end : len))
        return verdict(out, PT_METRICS_BAD_REQUEST, "NUL byte in the request");
    if (!end) {
        if (len == PT_METRICS_REQ_MAX)
            return verdict(out, PT_METRICS_BAD_REQUEST, "request over 4096 bytes");
        _Static_assert(PT_METRICS_REQ_MAX == 4096, "the text above gives the limit");
        return verdict(out, PT_METRICS_MORE, NULL);
    }
    /* request line: METHOD SP TARGET SP HTTP/1.x */
    size_t line_len = (size_t)((const char *)memchr(req, '\n', end) - req);
    char line[256];
    if (line_len >= sizeof line)
        return verdict(out, PT_METRICS_BAD_REQUEST, "request line too long");
    memcpy(line, req, line_len);
    line[line_len] = 0;
    if (line_len && line[line_len - 1] == '\r') line[--line_len] = 0;
    char *sp1 = strchr(line, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strchr(sp2 + 1, ' ') || sp1 == line || sp2 == sp1 + 1 ||
        (strcmp(sp2 + 1, "HTTP/1.0") != 0 && strcmp(sp2 + 1, "HTTP/1.1") != 0))
        return verdict(out, PT_METRICS_BAD_REQUEST, "malformed request line");
    *sp1 = *sp2 = 0;
    for (const char *p = line; *p; p++)
        if (*p < 'A' || *p > 'Z') return verdict(out, PT_METRICS_BAD_REQUEST, "malformed method");
    if (strcmp(line, "GET") != 0) return verdict(out, PT_METRICS_BAD_METHOD, "not GET");
    const char *path = sp1 + 1;
    size_t plen = strcspn(path, "?");
    if (plen == 8 && memcmp(path, "/healthz", 8) == 0)
        return verdict(out, PT_METRICS_HEALTHZ, NULL);
    if (plen != 8 || memcmp(path, "/metrics", 8) != 0)
        return verdict(out, PT_METRICS_NOT_FOUND, NULL);
    return verdict(out, PT_METRICS_SCRAPE, NULL);
}

static void mc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    pt_metrics_conn *m = h->data;
    if (m->lingering) { /* what comes now is dropped: the request is judged */
        buf->base = m->req;
        buf->len = sizeof m->req;
        return;
    }
    buf->base = m->req + m->len;
    buf->len = sizeof m->req - m->len; /* never 0: a full buffer is answered at once */
}

static void mc_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    pt_metrics_conn *m = st->data;
    if (m->lingering && n != 0) {
        if (n < 0 || (m->dropped += (size_t)n) > PT_METRICS_LINGER_MAX) mc_close(m);
        return;
    }
    if (n == 0 || m->answered) return;
    if (n < 0) {
        mc_close(m); /* gone before asking */
        return;
    }
    m->len += (size_t)n;
    /* judged again from the start: the verdict must not depend on how TCP split the bytes */
    pt_metrics_verdict v;
    if (pt_metrics_request(m->req, m->len, &v) != PT_METRICS_MORE) mc_request(m, &v);
}

static void mc_timeout(uv_timer_t *t)
{
    pt_metrics_conn *m = t->data;
    pt_log_info("metrics: request not complete in %d ms; closing", PT_METRICS_TIMEOUT_MS);
    mc_close(m);
}

static void on_metrics_connection(uv_stream_t *l, int status)
{
    pt_server *s = l->data;
    if (status < 0 || s->stopping) return;
    pt_metrics_conn *m = calloc(1, sizeof *m);
    if (!m) return;
    m->srv = s;
    pt_buf_init(&m->resp);
    uv_tcp_init(&s->loop, &m->tcp);
    uv_timer_init(&s->loop, &m->timer);
    m->tcp.data = m->timer.data = m;
    m->open_handles = 2;
    m->next = s->metrics_conns;
    if (s->metrics_conns) s->metrics_conns->prev = m;
    s->metrics_conns = m;
    s->metrics_nconns++;
    if (uv_accept(l, (uv_stream_t *)&m->tcp) != 0) {
        mc_close(m);
        return;
    }
    if (s->metrics_nconns > PT_METRICS_MAX_CONNS) {
        pt_log_warn("metrics: %d scrapes at once already; closing a new one", PT_METRICS_MAX_CONNS);
        mc_close(m);
        return;
    }
    uv_timer_start(&m->timer, mc_timeout, PT_METRICS_TIMEOUT_MS, 0);
    uv_read_start((uv_stream_t *)&m->tcp, mc_alloc, mc_read);
}

int pt_metrics_start(pt_server *s)
{
    if (!s->cfg.metrics_host) return 0;
    struct sockaddr_storage addr;
    const char *h = s->metrics_host;
    int rc = strchr(h, ':') ? uv_ip6_addr(h, s->cfg.metrics_port, (struct sockaddr_in6 *)&addr)
                            : uv_ip4_addr(h, s->cfg.metrics_port, (struct sockaddr_in *)&addr);
    if (rc != 0) {
        pt_log_error("invalid metrics address %s", h);
        return PT_ERR_INVAL;
    }
    uv_tcp_init(&s->loop, &s->metrics_listener);
    s->metrics_listener.data = s;
    s->metrics_on = true; /* the handle is open: pt_metrics_stop closes it */
    if ((rc = pt_srv_tcp_listen(&s->metrics_listener, &addr, 0, 64, on_metrics_connection,
                                &s->metrics_port)) != 0) {
        char hp[PT_HOSTPORT_LEN];
        pt_log_error("cannot listen for metrics on %s: %s", pt_hostport_format(hp, h, s->cfg.metrics_port),
                     uv_strerror(rc));
        return PT_ERR_IO;
    }
    char hp[PT_HOSTPORT_LEN];
    pt_log_info("metrics on http://%s/metrics", pt_hostport_format(hp, h, s->metrics_port));
    return 0;
}

void pt_metrics_stop(pt_server *s)
{
    if (!s->metrics_on) return;
    s->metrics_on = false;
    uv_close((uv_handle_t *)&s->metrics_listener, NULL);
    while (s->metrics_conns) mc_close(s->metrics_conns);
}
