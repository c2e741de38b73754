/* packtrackd's Prometheus endpoint (--metrics), against a real process: the
 * counters move with traffic, and bad scrapers get a 400 and a close, never a
 * crash or a stalled loop. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client/pt_client.h"
#include "crypto/pt_crypto.h"
#include "pt_tl.h"
#include "testutil.h"
#include "wire/pt_wire.h"

/* ---- HTTP over a plain socket ------------------------------------------------------------ */

static int tcp_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Reads until the server closes (or timeout_ms); returns the bytes read (NUL-terminated
 * in buf) and the time it took in *ms, or -1 on a timeout. */
static int read_all(int fd, char *buf, size_t cap, int timeout_ms, int *ms)
{
    int64_t t0 = now_ms();
    size_t n = 0;
    for (;;) {
        int left = (int)(timeout_ms - (now_ms() - t0));
        if (left <= 0) return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0) continue;
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r <= 0) break;
        n += (size_t)r;
        if (n == cap - 1) break;
    }
    buf[n] = 0;
    if (ms) *ms = (int)(now_ms() - t0);
    return (int)n;
}

/* Sends req (len bytes), returns the whole answer (static storage). */
static const char *http(uint16_t port, const char *req, size_t len)
{
    static char resp[65536];
    int fd = tcp_connect(port);
    if (len) assert_int_equal(send(fd, req, len, MSG_NOSIGNAL), (ssize_t)len);
    int ms;
    assert_true(read_all(fd, resp, sizeof resp, 5000, &ms) >= 0);
    close(fd);
    return resp;
}

#define HTTP(port, lit) http(port, lit, sizeof lit - 1)

static const char *scrape(uint16_t port)
{
    const char *r = HTTP(port, "GET /metrics HTTP/1.0\r\n\r\n");
    if (strncmp(r, "HTTP/1.0 200 OK\r\n", 17) != 0) fail_msg("scrape: %.80s", r);
    assert_non_null(strstr(r, "Content-Type: text/plain; version=0.0.4"));
    return r;
}

/* The value of a sample line "name value" (name includes any labels); fails if absent. */
static double value(const char *text, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = text; (p = strstr(p, name)); p += nl) {
        if ((p == text || p[-1] == '\n') && p[nl] == ' ') return strtod(p + nl + 1, NULL);
    }
    fail_msg("metric %s missing", name);
    return -1;
}

static uint16_t metrics_port(const pt_test_server *srv)
{
    char path[300], line[128];
    snprintf(path, sizeof path, "%s/ready", srv->dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    unsigned port = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "metrics ", 8) == 0) sscanf(strrchr(line, ':') + 1, "%u", &port);
    fclose(f);
    assert_true(port > 0 && port < 65536);
    return (uint16_t)port;
}

/* ---- one user on one device (as in test_messaging.c) -------------------------------------- */

typedef struct user {
    pt_client *c;
    uint8_t id_pk[32], id_sk[64], user_id[16];
    uint64_t waiting;
    bool got_reply;
    int err_code;
    size_t ngot;               /* updates.newMessage received */
    int64_t got_ids[64];
} user;

static void on_event(void *ud, const pt_sess_event *ev)
{
    user *u = ud;
    uint8_t am[4096];
    pt_arena a;
    pt_arena_init(&a, am, sizeof am);
    pt_tl_obj o;
    if (ev->type == PT_SESS_EV_UPDATE) {
        assert_int_equal(pt_tl_decode_any(&o, ev->body, ev->len, &a), 0);
        if (o.id == PT_TL_UPDATES_NEWMESSAGE_ID && u->ngot < PT_ARRAY_LEN(u->got_ids))
            u->got_ids[u->ngot++] = o.u.updates_newMessage.server_id;
        return;
    }
    if (ev->type != PT_SESS_EV_RESULT || ev->req_msg_id != u->waiting) return;
    u->got_reply = true;
    assert_int_equal(pt_tl_decode_any(&o, ev->body, ev->len, &a), 0);
    if (o.id == PT_TL_RPC_ERROR_ID) u->err_code = o.u.rpc_error.error_code;
    else if (o.id == PT_TL_AUTH_BOUND_ID) memcpy(u->user_id, o.u.auth_bound.user_id, 16);
}

static void call(user *u, pt_buf *body)
{
    u->got_reply = false;
    u->err_code = 0;
    assert_int_equal(pt_client_send(u->c, body->data, body->len, &u->waiting), 0);
    for (int i = 0; i < 1000 && !u->got_reply; i++)
        assert_int_equal(pt_client_pump(u->c, 10, on_event, u), 0);
    assert_true(u->got_reply);
    pt_buf_reset(body);
}

static void user_new(user *u, uint16_t port, const char *name)
{
    memset(u, 0, sizeof *u);
    assert_int_equal(pt_ed25519_keypair(u->id_pk, u->id_sk), 0);
    pt_client_config cfg = {.home = pt_test_tmpdir(name)};
    int err;
    assert_non_null(u->c = pt_client_new(&cfg, &err));
    assert_int_equal(pt_client_connect(u->c, "127.0.0.1", port), 0);
    uint8_t msg[15 + 32], cert[64];
    memcpy(msg, "PT1 device cert", 15);
    memcpy(msg + 15, pt_client_device_key(u->c), 32);
    assert_int_equal(pt_ed25519_sign(cert, msg, sizeof msg, u->id_sk), 0);
    pt_tl_auth_bindUsername b = {.name = {(const uint8_t *)name, (uint32_t)strlen(name)},
                                 .device_cert = {cert, 64}};
    memcpy(b.identity_key, u->id_pk, 32);
    pt_buf body;
    pt_buf_init(&body);
    assert_int_equal(pt_tl_auth_bindUsername_encode(&body, &b), 0);
    call(u, &body);
    assert_int_equal(u->err_code, 0);
    pt_buf_free(&body);
}

static void send_msg(user *u, const uint8_t to[16])
{
    uint8_t env[100] = {0};
    pt_tl_messages_send m = {.envelope = {env, sizeof env}};
    memcpy(m.to, to, 16);
    pt_buf body;
    pt_buf_init(&body);
    assert_int_equal(pt_tl_messages_send_encode(&body, &m), 0);
    call(u, &body);
    assert_int_equal(u->err_code, 0);
    pt_buf_free(&body);
}

static void confirm(user *u)
{
    pt_buf body;
    pt_buf_init(&body);
    pt_tl_messages_received r = {.server_ids = {.n = (uint32_t)u->ngot, .items = u->got_ids}};
    assert_int_equal(pt_tl_messages_received_encode(&body, &r), 0);
    call(u, &body);
    assert_int_equal(u->err_code, 0);
    pt_buf_free(&body);
    u->ngot = 0;
}

/* ---- the tests ---------------------------------------------------------------------------- */

static void test_counters_move(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--metrics", "127.0.0.1:0", "--rate-limit", "50", NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    uint16_t mp = metrics_port(&srv);
    const char *m = scrape(mp);
    assert_true(value(m, "packtrackd_connections") == 0);
    assert_true(value(m, "packtrackd_messages_in_total") == 0);
    assert_true(value(m, "packtrackd_queue_rows") == 0);
    /* one commit at start-up: the first block of server ids */
    assert_true(value(m, "packtrackd_store_commit_seconds_bucket{le=\"+Inf\"}") == 1);

    user a, b;
    user_new(&a, srv.port, "alice");
    user_new(&b, srv.port, "bob");
    for (int i = 0; i < 5; i++) send_msg(&a, b.user_id);
    PT_TEST_WHILE_FOR(b.ngot < 5, 5000, assert_int_equal(pt_client_pump(b.c, 10, on_event, &b), 0));
    assert_int_equal(b.ngot, 5);
    confirm(&b);
    pt_client_drop(b.c); /* offline: the next three wait in its queue */
    for (int i = 0; i < 200 && value(scrape(mp), "packtrackd_connections") != 1; i++) usleep(10000);
    for (int i = 0; i < 3; i++) send_msg(&a, b.user_id);
    m = scrape(mp);
    assert_true(value(m, "packtrackd_connections") == 1);
    assert_true(value(m, "packtrackd_connections_accepted_total") == 2);
    assert_true(value(m, "packtrackd_messages_in_total") == 8);
    assert_true(value(m, "packtrackd_messages_out_total") == 5);
    assert_true(value(m, "packtrackd_queue_rows") == 3);
    assert_true(value(m, "packtrackd_queue_devices") == 1);
    assert_true(value(m, "packtrackd_rpc_calls_total") >= 11); /* 2 binds, 8 sends, 1 received */
    assert_true(value(m, "packtrackd_store_commits_total") >= 2);
    double commits = value(m, "packtrackd_store_commit_seconds_count");
    assert_true(commits >= 2);
    assert_true(value(m, "packtrackd_store_commit_seconds_bucket{le=\"+Inf\"}") == commits);
    assert_true(value(m, "packtrackd_store_commit_seconds_sum") > 0);

    /* bob comes back and confirms: the queue empties */
    assert_int_equal(pt_client_connect(b.c, "127.0.0.1", srv.port), 0);
    pt_buf body;
    pt_buf_init(&body);
    pt_tl_messages_sync sy;
    memset(&sy, 0, sizeof sy);
    assert_int_equal(pt_tl_messages_sync_encode(&body, &sy), 0);
    call(&b, &body);
    pt_buf_free(&body);
    assert_int_equal(b.ngot, 3);
    confirm(&b);
    m = scrape(mp);
    assert_true(value(m, "packtrackd_queue_rows") == 0);
    assert_true(value(m, "packtrackd_queue_devices") == 0);
    assert_true(value(m, "packtrackd_messages_out_total") == 8);

    /* a failed handshake */
    int fd = tcp_connect(srv.port);
    assert_int_equal(send(fd, "GET / HTTP/1.1\r\n\r\n", 18, MSG_NOSIGNAL), 18);
    char junk[256];
    assert_true(read_all(fd, junk, sizeof junk, 3000, NULL) >= 0);
    close(fd);
    m = scrape(mp);
    assert_true(value(m, "packtrackd_handshake_failures_total") == 1);
    assert_true(value(m, "packtrackd_rate_limit_throttles_total") == 0);
    assert_true(value(m, "packtrackd_bans_total") == 0);

    /* over the rate (50/s, bursts of 100): throttled; far over it: banned */
    uint8_t env[16] = {0};
    pt_tl_pt_echo e = {.payload = {env, sizeof env}};
    pt_buf eb;
    pt_buf_init(&eb);
    assert_int_equal(pt_tl_pt_echo_encode(&eb, &e), 0);
    for (int i = 0; i < 150; i++) assert_int_equal(pt_client_send(a.c, eb.data, eb.len, NULL), 0);
    PT_TEST_WHILE_FOR(true, 1000, assert_int_equal(pt_client_pump(a.c, 5, NULL, NULL), 0));
    m = scrape(mp);
    assert_true(value(m, "packtrackd_rate_limit_throttles_total") >= 1);
    for (int i = 0; i < 1000; i++) assert_int_equal(pt_client_send(a.c, eb.data, eb.len, NULL), 0);
    int rc = 0;
    PT_TEST_WHILE_FOR(rc == 0, 3000, rc = pt_client_pump(a.c, 10, NULL, NULL));
    assert_int_equal(rc, PT_ERR_CLOSED);
    pt_buf_free(&eb);
    m = scrape(mp);
    assert_true(value(m, "packtrackd_bans_total") == 1);
    assert_true(pt_client_connect(a.c, "127.0.0.1", srv.port) != 0); /* refused: banned */
    m = scrape(mp);
    assert_true(value(m, "packtrackd_connections_refused_total") >= 1);

    pt_client_free(a.c);
    pt_client_free(b.c);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

static double worker_conns(uint16_t mp, int w)
{
    char k[64];
    snprintf(k, sizeof k, "packtrackd_worker_connections{worker=\"%d\"}", w);
    return value(scrape(mp), k);
}

/* After a reconnection: live pushes resume once the device has synced. */
static void sync_user(user *u)
{
    pt_buf body;
    pt_buf_init(&body);
    pt_tl_messages_sync sy;
    memset(&sy, 0, sizeof sy);
    assert_int_equal(pt_tl_messages_sync_encode(&body, &sy), 0);
    call(u, &body);
    assert_int_equal(u->err_code, 0);
    pt_buf_free(&body);
}

/* n users named prefix0, prefix1, ... */
static void users_new(user *u, int n, uint16_t port, const char *prefix)
{
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "%s%d", prefix, i);
        user_new(&u[i], port, name);
    }
}

/* Every user sends one message to the next and each gets its one. */
static void ring_exchange(user *u, int n)
{
    for (int i = 0; i < n; i++) send_msg(&u[i], u[(i + 1) % n].user_id);
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < 500 && u[i].ngot < 1; k++)
            assert_int_equal(pt_client_pump(u[i].c, 10, on_event, &u[i]), 0);
        assert_int_equal(u[i].ngot, 1);
        confirm(&u[i]);
    }
}

/* Worker loops: each new connection goes to the worker with the fewest, users on
 * different workers reach each other, and the counts follow closes. */
static void test_workers_spread(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--metrics", "127.0.0.1:0", "--workers", "3", "--rate-limit", "100", NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    uint16_t mp = metrics_port(&srv);
    assert_int_equal(pt_test_log_count(&srv, "worker loops: 3"), 1);
    user u[6];
    users_new(u, 6, srv.port, "worker");
    for (int w = 0; w < 3; w++) assert_true(worker_conns(mp, w) == 2);
    assert_int_equal(pt_test_log_count(&srv, "(worker 0)"), 2);
    assert_int_equal(pt_test_log_count(&srv, "(worker 2)"), 2);
    ring_exchange(u, 6); /* user i on worker i % 3 */
    pt_client_drop(u[0].c);
    pt_client_drop(u[3].c);
    for (int i = 0; i < 300 && worker_conns(mp, 0) != 0; i++) usleep(10000);
    assert_true(worker_conns(mp, 0) == 0);
    assert_true(worker_conns(mp, 1) == 2 && worker_conns(mp, 2) == 2);
    assert_true(value(scrape(mp), "packtrackd_connections") == 4);
    /* the emptiest takes the next connection, and the two are back in the ring */
    assert_int_equal(pt_client_connect(u[0].c, "127.0.0.1", srv.port), 0);
    assert_int_equal(pt_client_connect(u[3].c, "127.0.0.1", srv.port), 0);
    sync_user(&u[0]);
    sync_user(&u[3]);
    assert_true(worker_conns(mp, 0) == 2);
    ring_exchange(u, 6);
    /* a flood that hangs up at once: its records and its close reach the main loop
     * together; the connection must still go (it once stayed, holding its slot) */
    for (int round = 0; round < 3; round++) {
        user f;
        char name[16];
        snprintf(name, sizeof name, "flood%d", round);
        user_new(&f, srv.port, name);
        uint8_t env[16] = {0};
        pt_tl_pt_echo e = {.payload = {env, sizeof env}};
        pt_buf eb;
        pt_buf_init(&eb);
        assert_int_equal(pt_tl_pt_echo_encode(&eb, &e), 0);
        for (int i = 0; i < 2000; i++) assert_int_equal(pt_client_send(f.c, eb.data, eb.len, NULL), 0);
        pt_buf_free(&eb);
        int prc = pt_client_pump(f.c, 0, NULL, NULL); /* written, not waited for */
        assert_true(prc == 0 || prc == PT_ERR_CLOSED);
        pt_client_free(f.c);
        for (int i = 0; i < 300 && value(scrape(mp), "packtrackd_connections") != 6; i++) usleep(10000);
        assert_true(value(scrape(mp), "packtrackd_connections") == 6);
        double sum = 0;
        for (int w = 0; w < 3; w++) sum += worker_conns(mp, w);
        assert_true(sum == 6);
        if (value(scrape(mp), "packtrackd_bans_total") > 0) break; /* refused from now on */
    }
    for (int i = 0; i < 6; i++) pt_client_free(u[i].c);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* workers = 0: every connection on the main loop (no worker metrics), as before. */
static void test_no_workers(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--metrics", "127.0.0.1:0", "--workers", "0", NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    uint16_t mp = metrics_port(&srv);
    assert_int_equal(pt_test_log_count(&srv, "connections: on the main loop"), 1);
    user u[4];
    users_new(u, 4, srv.port, "main");
    assert_null(strstr(scrape(mp), "packtrackd_worker_connections"));
    assert_true(value(scrape(mp), "packtrackd_connections") == 4);
    ring_exchange(u, 4);
    pt_client_drop(u[0].c);
    pt_client_drop(u[3].c);
    assert_int_equal(pt_client_connect(u[0].c, "127.0.0.1", srv.port), 0);
    assert_int_equal(pt_client_connect(u[3].c, "127.0.0.1", srv.port), 0);
    sync_user(&u[0]);
    sync_user(&u[3]);
    ring_exchange(u, 4);
    for (int i = 0; i < 4; i++) pt_client_free(u[i].c);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* Scrapers that misbehave get a clean answer and a close; the server carries on. */
static void test_bad_scrapers(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--metrics", "127.0.0.1:0", NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    uint16_t mp = metrics_port(&srv);
    const char *r;
    r = HTTP(mp, "garbage\r\n\r\n");
    assert_int_equal(strncmp(r, "HTTP/1.0 400 Bad Request\r\n", 26), 0);
    r = HTTP(mp, "GET /metrics\r\n\r\n"); /* HTTP/0.9 style: no version */
    assert_int_equal(strncmp(r, "HTTP/1.0 400 ", 13), 0);
    r = HTTP(mp, "GET /metrics HTTP/2.0\r\n\r\n");
    assert_int_equal(strncmp(r, "HTTP/1.0 400 ", 13), 0);
    r = HTTP(mp, "GET  /metrics HTTP/1.0\r\n\r\n");
    assert_int_equal(strncmp(r, "HTTP/1.0 400 ", 13), 0);
    r = HTTP(mp, "GET /me\0rics HTTP/1.0\r\n\r\n");
    assert_int_equal(strncmp(r, "HTTP/1.0 400 ", 13), 0);
    r = HTTP(mp, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(strncmp(r, "HTTP/1.0 405 ", 13), 0);
    r = HTTP(mp, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(strncmp(r, "HTTP/1.0 404 ", 13), 0);
    r = HTTP(mp, "GET /metrics?x=1 HTTP/1.1\r\nHost: x\nAccept: */*\n\n"); /* bare LFs */
    assert_int_equal(strncmp(r, "HTTP/1.0 200 ", 13), 0);
    /* bytes after the blank line are never read, NUL or not: the answer must not
     * depend on whether they came in the same segment (they once made it a 400) */
    r = HTTP(mp, "GET /metrics HTTP/1.0\r\n\r\n\0body");
    assert_int_equal(strncmp(r, "HTTP/1.0 200 ", 13), 0);
    /* oversized: 6000 bytes without the end of the headers */
    static char big[6000];
    memset(big, 'A', sizeof big);
    int fd = tcp_connect(mp);
    ssize_t sent = send(fd, big, sizeof big, MSG_NOSIGNAL);
    assert_true(sent > 0);
    static char resp[4096];
    int ms;
    assert_true(read_all(fd, resp, sizeof resp, 3000, &ms) > 0);
    assert_int_equal(strncmp(resp, "HTTP/1.0 400 ", 13), 0);
    close(fd);
    /* a request line that never ends: closed by the timeout (5 s), meanwhile the
     * loop serves others */
    int slow = tcp_connect(mp);
    assert_int_equal(send(slow, "GET /metr", 9, MSG_NOSIGNAL), 9);
    int64_t t0 = now_ms();
    scrape(mp);
    assert_true(now_ms() - t0 < 1000);
    assert_true(read_all(slow, resp, sizeof resp, 8000, &ms) >= 0);
    assert_true(ms >= 3000);
    close(slow);
    /* too many at once: the extra ones are closed at accept; the others still work */
    int idle[20];
    for (int i = 0; i < 20; i++) idle[i] = tcp_connect(mp);
    usleep(200000);
    int closed = 0;
    for (int i = 0; i < 20; i++) {
        struct pollfd p = {.fd = idle[i], .events = POLLIN};
        if (poll(&p, 1, 0) == 1 && recv(idle[i], resp, sizeof resp, MSG_DONTWAIT) == 0) closed++;
    }
    assert_int_equal(closed, 4); /* 16 served at once */
    for (int i = 0; i < 20; i++) close(idle[i]);
    usleep(100000);
    scrape(mp);
    /* the messaging side is unaffected */
    pt_client_config cfg = {.home = pt_test_tmpdir("cl")};
    int err;
    pt_client *c = pt_client_new(&cfg, &err);
    assert_non_null(c);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    assert_int_equal(pt_client_ping(c, 1, NULL), 0);
    pt_client_free(c);
    assert_true(pt_test_log_count(&srv, "metrics: Bad Request from a scraper") >= 6);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* Bytes a scraper sends after the server has answered must not cost it the
 * answer: a close() with unread bytes sends a reset, and the reset drops what the
 * client has not yet received. The client's receive buffer is kept small so the
 * answer is still in the server's send queue when the late bytes arrive. */
static void test_answer_outlives_late_bytes(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--metrics", "127.0.0.1:0", NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    uint16_t mp = metrics_port(&srv);
    size_t full = strlen(scrape(mp)); /* a scrape read at once: its size */
    if (full <= 4096) fail_msg("a scrape of %zu bytes is too short for this test", full);
    for (int round = 0; round < 2; round++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fd >= 0);
        int small = 2048;
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(mp)};
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
        /* round 0: a complete scrape; round 1: an oversized request (a 400) */
        static char req[6000];
        size_t len;
        if (round == 0) {
            len = (size_t)snprintf(req, sizeof req, "GET /metrics HTTP/1.0\r\n\r\n");
        } else {
            memset(req, 'A', sizeof req);
            len = sizeof req;
        }
        assert_int_equal(send(fd, req, len, MSG_NOSIGNAL), (ssize_t)len);
        /* the answer has begun to arrive (so the late bytes cannot be part of the
         * request); we read nothing of it yet */
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 5000), 1);
        usleep(100000); /* the server's write done: the rest waits in its send queue */
        assert_int_equal(send(fd, "late bytes", 10, MSG_NOSIGNAL), 10);
        usleep(200000);
        static char resp[65536];
        int n = read_all(fd, resp, sizeof resp, 5000, NULL);
        close(fd);
        assert_true(n > 0);
        const char *cl = strstr(resp, "Content-Length: ");
        const char *body = strstr(resp, "\r\n\r\n");
        assert_non_null(cl);
        assert_non_null(body);
        size_t want = strtoul(cl + 16, NULL, 10);
        if ((size_t)n != (size_t)(body + 4 - resp) + want)
            fail_msg("round %d: %d bytes of the answer received, %zu sent", round, n,
                     (size_t)(body + 4 - resp) + want);
        if (round == 0) assert_true((size_t)n + 2000 > full); /* the whole exposition */
        else assert_int_equal(strncmp(resp, "HTTP/1.0 400 ", 13), 0);
    }
    /* answered clients that keep their sockets open (lingering) do not count
     * against the 16 scrapes served at once: a scrape still gets in */
    int held[20];
    static char ans[65536];
    for (int i = 0; i < 20; i++) {
        held[i] = tcp_connect(mp);
        static const char hz[] = "GET /healthz HTTP/1.0\r\n\r\n";
        assert_int_equal(send(held[i], hz, sizeof hz - 1, MSG_NOSIGNAL), (ssize_t)(sizeof hz - 1));
        struct pollfd p = {.fd = held[i], .events = POLLIN};
        assert_int_equal(poll(&p, 1, 5000), 1);
        assert_true(recv(held[i], ans, sizeof ans, 0) > 0); /* answered; not closed by us */
    }
    scrape(mp);
    for (int i = 0; i < 20; i++) close(held[i]);
    scrape(mp);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* The secure heap for connection secrets: in use while connections are up, all of
 * it given back when they close, and connections past its size still work (their
 * secrets spill to mappings of their own). Sanitizer builds make no heap. */
static void test_secure_heap(void **state)
{
    (void)state;
    enum { N = 120 }; /* 120 x 640 bytes > the 64 KiB heap */
    pt_test_server srv;
    const char *extra[] = {"--metrics", "127.0.0.1:0", "--secure-heap", "64", "--max-conns-per-ip", "1000",
                           NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    uint16_t mp = metrics_port(&srv);
    const char *m = scrape(mp);
#ifdef PT_SANITIZE_BUILD
    assert_true(value(m, "packtrackd_secure_heap_bytes") == 0);
    printf("sanitizer build: packtrackd makes no secure heap; checking that connections work\n");
#else
    assert_true(value(m, "packtrackd_secure_heap_bytes") == 65536);
    assert_true(value(m, "packtrackd_secure_heap_used_bytes") == 0);
    assert_int_equal(pt_test_log_count(&srv, "secure heap: 64 KiB"), 1);
#endif
    pt_client *c[N];
    for (int i = 0; i < N; i++) {
        pt_client_config cfg = {.home = pt_test_tmpdir("heap")};
        int err;
        assert_non_null(c[i] = pt_client_new(&cfg, &err));
        assert_int_equal(pt_client_connect(c[i], "127.0.0.1", srv.port), 0);
    }
    user last; /* and one more that binds a name and gets an answer */
    user_new(&last, srv.port, "carol");
    for (int i = 0; i < 200 && value(scrape(mp), "packtrackd_connections") != N + 1; i++) usleep(10000);
    m = scrape(mp);
    assert_true(value(m, "packtrackd_connections") == N + 1);
#ifndef PT_SANITIZE_BUILD
    /* full, but for the eighth left to OpenSSL's own secure allocations */
    assert_true(value(m, "packtrackd_secure_heap_used_bytes") > 50000);
    assert_true(value(m, "packtrackd_secure_heap_used_bytes") <= 65536);
    assert_true(value(m, "packtrackd_secure_heap_spilled_total") > 0);
#endif
    /* quiet for over a second: the server gave back its buffers (server.c, on_trim);
     * the connection still works in both directions */
    usleep(2100 * 1000);
    uint8_t env[200];
    memset(env, 0x77, sizeof env);
    pt_tl_pt_echo e = {.payload = {env, sizeof env}};
    pt_buf eb;
    pt_buf_init(&eb);
    assert_int_equal(pt_tl_pt_echo_encode(&eb, &e), 0);
    call(&last, &eb);
    assert_int_equal(last.err_code, 0);
    pt_buf_free(&eb);
    for (int i = 0; i < N; i++) pt_client_free(c[i]);
    pt_client_free(last.c);
    for (int i = 0; i < 300 && value(scrape(mp), "packtrackd_connections") != 0; i++) usleep(10000);
    m = scrape(mp);
    assert_true(value(m, "packtrackd_connections") == 0);
    assert_true(value(m, "packtrackd_secure_heap_used_bytes") == 0); /* every secret given back */
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* Off by default: no listener, no ready-file line. */
static void test_off_by_default(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    char path[300];
    snprintf(path, sizeof path, "%s/ready", srv.dir);
    char *text = pt_test_read_file(path, NULL);
    assert_non_null(text);
    assert_null(strstr(text, "metrics"));
    free(text);
    assert_int_equal(pt_test_log_count(&srv, "metrics on"), 0);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_move),
        cmocka_unit_test(test_bad_scrapers),
        cmocka_unit_test(test_answer_outlives_late_bytes),
        cmocka_unit_test(test_off_by_default),
        cmocka_unit_test(test_workers_spread),
        cmocka_unit_test(test_no_workers),
        cmocka_unit_test(test_secure_heap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
