/* packtrackd as a real process, driven by our client over 127.0.0.1. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_sent */
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/pt_client.h"
#include "pt_tl.h"
#include "testutil.h"
#include "wire/pt_wire.h"

typedef struct results {
    size_t n;
    uint64_t req[20000];      /* req_msg_id of each result, in arrival order */
    uint32_t seq[20000];      /* the echoed sequence number */
    uint32_t nbytes[20000];   /* echoed payload length */
    int errors;               /* rpc_error results */
    int pongs;
    int destroyed;           /* destroy_session_ok results */
    int64_t last_ping;
} results;

static void on_event(void *ud, const pt_sess_event *ev)
{
    results *r = ud;
    if (ev->type == PT_SESS_EV_PONG) {
        r->pongs++;
        r->last_ping = ev->value;
        return;
    }
    if (ev->type != PT_SESS_EV_RESULT) return;
    uint8_t am[256];
    pt_arena a;
    pt_arena_init(&a, am, sizeof am);
    pt_tl_obj o;
    assert_int_equal(pt_tl_decode_any(&o, ev->body, ev->len, &a), 0);
    if (o.id == PT_TL_RPC_ERROR_ID) {
        r->errors++;
        return;
    }
    if (o.id == PT_TL_DESTROY_SESSION_OK_ID) {
        r->destroyed++;
        return;
    }
    assert_int_equal(o.id, PT_TL_PT_ECHORESULT_ID);
    assert_true(r->n < PT_ARRAY_LEN(r->req));
    r->req[r->n] = ev->req_msg_id;
    r->seq[r->n] = o.u.pt_echoResult.payload.len >= 4 ? pt_get_u32le(o.u.pt_echoResult.payload.data) : 0;
    r->nbytes[r->n] = o.u.pt_echoResult.payload.len;
    r->n++;
}

static uint64_t send_echo(pt_client *c, uint32_t seq, size_t size)
{
    static uint8_t payload[65536];
    pt_put_u32le(payload, seq);
    for (size_t i = 4; i < size; i++) payload[i] = (uint8_t)(seq + i);
    pt_tl_pt_echo e = {.payload = {payload, (uint32_t)size}};
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_tl_pt_echo_encode(&b, &e), 0);
    uint64_t id = 0;
    assert_int_equal(pt_client_send(c, b.data, b.len, &id), 0);
    pt_buf_free(&b);
    return id;
}

/* Pumps until `want` results arrived or 20 s passed. */
static void pump_until(pt_client *c, results *r, size_t want)
{
    PT_TEST_WHILE_FOR(r->n < want, 20000, {
        int rc = pt_client_pump(c, 10, on_event, r);
        if (rc) fail_msg("pump: %s", pt_strerror(rc));
    });
    assert_int_equal(r->n, want);
}

static pt_client *new_client(const char *home, const uint8_t *suites, size_t n, const char *fp)
{
    pt_client_config cfg = {.home = home, .suites = suites, .nsuites = n, .server_fingerprint = fp};
    int err = -1;
    pt_client *c = pt_client_new(&cfg, &err);
    assert_non_null(c);
    assert_int_equal(err, 0);
    return c;
}

static results *new_results(void) { return calloc(1, sizeof(results)); }

/* Echo through every suite; XX on first contact, IK once the key is pinned. */
static void test_echo_every_suite(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    for (uint8_t suite = PT_SUITE_MIN; suite <= PT_SUITE_MAX; suite++) {
        char home[300];
        snprintf(home, sizeof home, "%s/client%d", srv.dir, suite);
        pt_client *c = new_client(home, &suite, 1, NULL);
        results *r = new_results();
        assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
        assert_false(pt_client_used_ik(c));
        assert_int_equal(pt_client_suite(c), suite);
        const size_t sizes[] = {4, 100, 16384, 60000};
        for (uint32_t i = 0; i < 4; i++) send_echo(c, i, sizes[i]);
        pump_until(c, r, 4);
        for (uint32_t i = 0; i < 4; i++) {
            assert_int_equal(r->seq[i], i);
            assert_int_equal(r->nbytes[i], sizes[i]);
        }
        assert_int_equal(pt_client_ping(c, 99, NULL), 0);
        PT_TEST_WHILE_FOR(!r->pongs, 5000, assert_int_equal(pt_client_pump(c, 10, on_event, r), 0));
        assert_int_equal(r->pongs, 1);
        assert_int_equal(r->last_ping, 99);
        /* second contact: the key is pinned, IK is used, the session resumes */
        assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
        assert_true(pt_client_used_ik(c));
        send_echo(c, 7, 10);
        pump_until(c, r, 5);
        assert_int_equal(r->seq[4], 7);
        pt_client_free(c);
        free(r);
    }
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* A client driven by the caller's own poll (pt_client_input, pt_client_flush, as
 * an event loop over many clients uses them): 200 echoes of 60,000 bytes (12 MB
 * each way, more than the socket buffers hold) through a small send buffer. The
 * first flush leaves bytes pending; the loop writes them as the socket drains and
 * reads the results as they come; every result arrives, in order. Neither call
 * blocks: with nothing to read, input returns at once. */
static void test_event_driven_client(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    char home[300];
    snprintf(home, sizeof home, "%s/client", srv.dir);
    pt_client *c = new_client(home, NULL, 0, NULL);
    results *r = new_results();
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    int sndbuf = 32768;
    assert_int_equal(setsockopt(pt_client_fd(c), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);
    enum { N = 200, SIZE = 60000 };
    for (uint32_t i = 0; i < N; i++) send_echo(c, i, SIZE);
    assert_int_equal(pt_client_flush(c), 0);
    assert_true(pt_client_out_pending(c) > 0); /* 12 MB do not fit */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int flushes = 1;
    while (r->n < N) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        assert_true(t1.tv_sec - t0.tv_sec < 30);
        struct pollfd p = {.fd = pt_client_fd(c), .events = POLLIN | (pt_client_out_pending(c) ? POLLOUT : 0)};
        assert_true(poll(&p, 1, 1000) >= 0);
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) assert_int_equal(pt_client_input(c, on_event, r), 0);
        if (p.revents & POLLOUT) {
            assert_int_equal(pt_client_flush(c), 0);
            flushes++;
        }
    }
    assert_int_equal(pt_client_out_pending(c), 0);
    assert_true(flushes > 1);
    for (uint32_t i = 0; i < N; i++) {
        assert_int_equal(r->seq[i], i);
        assert_int_equal(r->nbytes[i], SIZE);
    }
    /* nothing more to read: input returns at once, and delivers nothing */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(pt_client_input(c, on_event, r), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 2000);
    assert_int_equal(r->n, N);
    pt_client_free(c);
    free(r);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* Bytes the kernel has sent on fd (TCP_INFO). */
static uint64_t bytes_sent(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len), 0);
    assert_true(len >= offsetof(struct tcp_info, tcpi_bytes_sent) + sizeof ti.tcpi_bytes_sent);
    return ti.tcpi_bytes_sent;
}

static pt_client *chain_client;
enum { CHAIN = 20 };

/* on_event, and each echo result but the last sends the next echo from the callback */
static void on_event_chain(void *ud, const pt_sess_event *ev)
{
    results *r = ud;
    size_t n = r->n;
    on_event(ud, ev);
    if (r->n > n && r->seq[n] + 1 < CHAIN) send_echo(chain_client, r->seq[n] + 1, 100);
}

/* pt_client_read writes nothing, not even what the callback queued during the read:
 * the caller's next pt_client_flush sends it, so a call made in answer to a result
 * goes out with the acks that result produced. A chain of 20 echoes, each sent from
 * the callback of the one before. */
static void test_read_defers_output(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    chain_client = new_client(pt_test_tmpdir("cl"), NULL, 0, NULL);
    pt_client *c = chain_client;
    results *r = new_results();
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    send_echo(c, 0, 100);
    assert_int_equal(pt_client_flush(c), 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int fd = pt_client_fd(c), answered = 0;
    while (r->n < CHAIN) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        assert_true(t1.tv_sec - t0.tv_sec < 30);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_true(poll(&p, 1, 1000) >= 0);
        if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
        size_t n = r->n;
        uint64_t b0 = bytes_sent(fd);
        assert_int_equal(pt_client_read(c, on_event_chain, r), 0);
        assert_int_equal(bytes_sent(fd), b0); /* the read wrote nothing */
        assert_int_equal(pt_client_flush(c), 0);
        if (r->n > n && r->n < CHAIN) {
            assert_true(bytes_sent(fd) > b0); /* the flush wrote the next echo */
            answered++;
        }
    }
    assert_int_equal(answered, CHAIN - 1);
    for (uint32_t i = 0; i < CHAIN; i++) assert_int_equal(r->seq[i], i);
    pt_client_free(c);
    chain_client = NULL;
    free(r);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

static void test_unknown_method_is_an_rpc_error(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    pt_client *c = new_client(pt_test_tmpdir("cl"), NULL, 0, NULL);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    uint8_t body[8];
    pt_put_u32le(body, 0x0badf00d);
    pt_put_u32le(body + 4, 0);
    assert_int_equal(pt_client_send(c, body, sizeof body, NULL), 0);
    results *r = new_results();
    PT_TEST_WHILE_FOR(!r->errors, 5000, assert_int_equal(pt_client_pump(c, 10, on_event, r), 0));
    assert_int_equal(r->errors, 1);
    pt_client_free(c);
    free(r);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

static void test_pinned_key_changed_is_refused(void **state)
{
    (void)state;
    pt_test_server a;
    pt_test_server_start(&a, NULL, 0, NULL);
    uint16_t port = a.port;
    const char *home = pt_test_tmpdir("cl");
    char h[300];
    snprintf(h, sizeof h, "%s", home);
    pt_client *c = new_client(h, NULL, 0, NULL);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", port), 0);
    assert_int_equal(pt_test_server_stop(&a), 0);
    /* another server (another key) on the same address */
    pt_test_server b;
    pt_test_server_start(&b, NULL, port, NULL);
    assert_string_not_equal(a.fingerprint, b.fingerprint);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", port), PT_ERR_KEY_MISMATCH);
    assert_false(pt_client_connected(c));
    pt_client_free(c);
    /* a known_servers edited by hand, its last line without a newline: the pin goes on
     * a line of its own (and is used: IK); one that cannot be read is not taken for a
     * file without the pin (that would trust any key): the connect fails */
    const char *h2 = pt_test_tmpdir("cl-pins");
    char pins[400];
    snprintf(pins, sizeof pins, "%s/known_servers", h2);
    FILE *pf = fopen(pins, "w");
    assert_non_null(pf);
    fputs("example.org:7000 00112233", pf); /* no newline */
    fclose(pf);
    pt_client *e = new_client(h2, NULL, 0, NULL);
    assert_int_equal(pt_client_connect(e, "127.0.0.1", port), 0);
    assert_false(pt_client_used_ik(e));
    assert_int_equal(pt_client_connect(e, "127.0.0.1", port), 0);
    assert_true(pt_client_used_ik(e));
    size_t plen = 0;
    char *text = pt_test_read_file(pins, &plen);
    assert_non_null(text);
    assert_non_null(strstr(text, "example.org:7000 00112233\n127.0.0.1:"));
    free(text);
    assert_int_equal(unlink(pins), 0);
    assert_int_equal(mkdir(pins, 0700), 0); /* opens, then every read fails (even as root) */
    assert_int_equal(pt_client_connect(e, "127.0.0.1", port), PT_ERR_IO);
    assert_false(pt_client_connected(e));
    pt_client_free(e);
    /* an explicit fingerprint: right one accepted, wrong one refused */
    pt_client *ok = new_client(pt_test_tmpdir("cl"), NULL, 0, b.fingerprint);
    assert_int_equal(pt_client_connect(ok, "127.0.0.1", port), 0);
    assert_true(pt_client_used_ik(ok));
    pt_client_free(ok);
    pt_client *bad = new_client(pt_test_tmpdir("cl"), NULL, 0, a.fingerprint);
    assert_int_equal(pt_client_connect(bad, "127.0.0.1", port), PT_ERR_KEY_MISMATCH);
    pt_client_free(bad);
    assert_int_equal(pt_test_server_stop(&b), 0);
}

/* The TCP connection is cut again and again while both directions are busy;
 * every call is answered exactly once. */
static void test_resumption_exactly_once(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    pt_client *c = new_client(pt_test_tmpdir("cl"), NULL, 0, NULL);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    results *r = new_results();
    const uint32_t total = 3000;
    uint64_t *ids = calloc(total, sizeof *ids);
    uint32_t sent = 0;
    int drops = 0;
    for (int iter = 0; iter < 100000 && r->n < total; iter++) {
        /* keep ~200 calls of 2 KiB in flight: both directions stay busy */
        while (sent < total && sent - r->n < 200) {
            ids[sent] = send_echo(c, sent, 2048);
            sent++;
        }
        int rc = pt_client_pump(c, 5, on_event, r);
        if (rc == 0 && sent >= (uint32_t)(drops + 1) * 400 && drops < 6) {
            /* mid-stream: unsent output and unread input are thrown away */
            pt_client_drop(c);
            drops++;
            rc = PT_ERR_CLOSED;
        }
        if (rc) {
            assert_int_equal(rc, PT_ERR_CLOSED);
            assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
        }
    }
    assert_int_equal(drops, 6);
    assert_int_equal(r->n, total);
    /* exactly once: each call has one result, with its own payload */
    uint8_t *seen = calloc(total, 1);
    for (size_t i = 0; i < r->n; i++) {
        uint32_t s = r->seq[i];
        assert_true(s < total);
        assert_int_equal(seen[s], 0);
        seen[s] = 1;
        assert_int_equal(r->req[i], ids[s]);
        assert_int_equal(r->nbytes[i], 2048);
    }
    assert_int_equal(pt_sess_unacked(pt_client_session(c)), 0);
    assert_true(pt_test_log_count(&srv, "resumed session") >= 6);
    free(seen);
    free(ids);
    free(r);
    pt_client_free(c);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

static int raw_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Waits for the server to close fd; returns the ms it took, or -1 after timeout_ms. */
static int elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (int)((t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000);
}

static int wait_closed(int fd, int timeout_ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int el; (el = elapsed_ms(&t0)) < timeout_ms;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, timeout_ms - el) <= 0) continue;
        char buf[256];
        if (recv(fd, buf, sizeof buf, 0) <= 0) return elapsed_ms(&t0);
    }
    return -1;
}

static void test_garbage_timeouts_and_bad_frames(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--handshake-timeout", "1", "--idle-timeout", "2", NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    /* garbage before the handshake: closed at once */
    int fd = raw_connect(srv.port);
    assert_int_equal(send(fd, "GET / HTTP/1.1\r\n\r\n", 18, 0), 18);
    int ms = wait_closed(fd, 3000);
    assert_true(ms >= 0 && ms < 500);
    close(fd);
    /* silence: closed by the handshake timeout (1 s) */
    fd = raw_connect(srv.port);
    ms = wait_closed(fd, 5000);
    assert_true(ms >= 800 && ms < 3000);
    close(fd);
    /* a slow handshake that stops half way: also timed out */
    fd = raw_connect(srv.port);
    assert_int_equal(send(fd, "PTK\x01", 4, 0), 4);
    ms = wait_closed(fd, 5000);
    assert_true(ms >= 800 && ms < 3000);
    close(fd);
    /* garbage inside the handshake: closed */
    fd = raw_connect(srv.port);
    const uint8_t hello[] = {'P', 'T', 'K', 1, 1, 1, 1};
    assert_int_equal(send(fd, hello, sizeof hello, 0), (ssize_t)sizeof hello);
    uint8_t junk[40] = {36, 0, 0, 0};
    for (int i = 4; i < 40; i++) junk[i] = (uint8_t)(i * 7);
    assert_int_equal(send(fd, junk, sizeof junk, 0), (ssize_t)sizeof junk);
    /* message 1 of XX is a bare key, so the server answers; a bogus msg 3 then fails */
    usleep(100000);
    uint8_t m3[68] = {64, 0, 0, 0};
    assert_int_equal(send(fd, m3, sizeof m3, 0), (ssize_t)sizeof m3);
    ms = wait_closed(fd, 3000);
    assert_true(ms >= 0 && ms < 500);
    close(fd);
    /* an established client that goes idle is closed by the idle timeout (2 s) */
    pt_client *c = new_client(pt_test_tmpdir("cl"), NULL, 0, NULL);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    int rc = 0;
    PT_TEST_WHILE_FOR(rc == 0, 5000, rc = pt_client_pump(c, 10, NULL, NULL));
    assert_int_equal(rc, PT_ERR_CLOSED);
    /* an oversized frame after the handshake: closed without allocating it */
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    uint8_t huge[4];
    pt_put_u32le(huge, 0x7fffffffu);
    assert_int_equal(send(pt_client_fd(c), huge, 4, 0), 4);
    ms = wait_closed(pt_client_fd(c), 3000);
    assert_true(ms >= 0 && ms < 500);
    pt_client_free(c);
    assert_true(pt_test_log_count(&srv, "handshake timeout") >= 2);
    assert_true(pt_test_log_count(&srv, "idle timeout") >= 1);
    assert_true(pt_test_log_count(&srv, "length exceeds limit") >= 1);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

static void test_destroy_other_session(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    const char *home = pt_test_tmpdir("cl");
    char h[300];
    snprintf(h, sizeof h, "%s", home);
    pt_client *a = new_client(h, NULL, 0, NULL), *b = new_client(h, NULL, 0, NULL);
    assert_int_equal(pt_client_connect(a, "127.0.0.1", srv.port), 0);
    assert_int_equal(pt_client_connect(b, "127.0.0.1", srv.port), 0);
    results *ra = new_results(), *rb = new_results();
    send_echo(b, 1, 8);
    pump_until(b, rb, 1);
    pt_tl_destroy_session d = {.session_id = (int64_t)pt_sess_id(pt_client_session(b))};
    pt_buf buf;
    pt_buf_init(&buf);
    assert_int_equal(pt_tl_destroy_session_encode(&buf, &d), 0);
    assert_int_equal(pt_client_send(a, buf.data, buf.len, NULL), 0);
    int rc = 0;
    PT_TEST_WHILE_FOR(true, 1500, assert_int_equal(pt_client_pump(a, 5, on_event, ra), 0));
    PT_TEST_WHILE_FOR(rc == 0, 1500, rc = pt_client_pump(b, 5, on_event, rb));
    assert_int_equal(ra->destroyed, 1);
    assert_int_equal(rc, PT_ERR_CLOSED); /* b's session is gone with its connection */
    assert_int_equal(pt_test_log_count(&srv, "session destroyed"), 1);
    pt_buf_free(&buf);
    free(ra);
    free(rb);
    pt_client_free(a);
    pt_client_free(b);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

static void test_sigterm_closes_clients(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    pt_client *c = new_client(pt_test_tmpdir("cl"), NULL, 0, NULL);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    assert_int_equal(pt_test_server_stop(&srv), 0);
    int rc = 0;
    PT_TEST_WHILE_FOR(rc == 0, 1000, rc = pt_client_pump(c, 10, NULL, NULL));
    assert_int_equal(rc, PT_ERR_CLOSED);
    assert_int_equal(pt_test_log_count(&srv, "shutting down:"), 1);
    pt_client_free(c);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A configuration file, flags overriding it, and SIGHUP applying a new one. */
static void test_config_file_and_sighup(void **state)
{
    (void)state;
    const char *dir = pt_test_tmpdir("conf");
    char conf[300], home[300];
    snprintf(conf, sizeof conf, "%s/packtrackd.conf", dir);
    snprintf(home, sizeof home, "%s/client", dir);
    write_text(conf, "[server]\nlog_level = debug\n[limits]\nidle_timeout = 300\n");
    const char *extra[] = {"--config", conf, NULL};
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, extra);
    pt_client *c = new_client(home, NULL, 0, NULL);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    /* a broken file on SIGHUP is refused; the server keeps running */
    write_text(conf, "[limits]\nidle_timeout = soon\n");
    kill(srv.pid, SIGHUP);
    usleep(200000);
    assert_int_equal(pt_test_log_count(&srv, "keeping the running configuration"), 1);
    /* a good one applies: idle connections now close after 1 s */
    write_text(conf, "[limits]\nidle_timeout = 1\n");
    kill(srv.pid, SIGHUP);
    usleep(200000);
    assert_int_equal(pt_test_log_count(&srv, "SIGHUP: reloaded"), 1);
    assert_int_equal(pt_client_ping(c, 1, NULL), 0); /* traffic restarts the idle timer */
    int rc = 0;
    PT_TEST_WHILE_FOR(rc == 0, 3000, rc = pt_client_pump(c, 10, NULL, NULL));
    assert_int_equal(rc, PT_ERR_CLOSED);
    pt_client_free(c);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* Per-address connection cap, and a flooding client banned for a while. */
static void test_abuse_limits(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--max-conns-per-ip", "3", "--rate-limit", "50", "--ban-time", "2", NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    int fds[3];
    for (int i = 0; i < 3; i++) fds[i] = raw_connect(srv.port);
    usleep(100000);
    int extra_fd = raw_connect(srv.port); /* the fourth from this address */
    int ms = wait_closed(extra_fd, 3000);
    assert_true(ms >= 0 && ms < 500);
    close(extra_fd);
    for (int i = 0; i < 3; i++) close(fds[i]);
    usleep(200000);
    /* within the rate: fine; a burst over it: slowed down, all answered */
    pt_client *c = new_client(pt_test_tmpdir("cl"), NULL, 0, NULL);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    results *r = new_results();
    for (uint32_t i = 0; i < 20; i++) send_echo(c, i, 8);
    pump_until(c, r, 20);
    for (uint32_t i = 0; i < 150; i++) send_echo(c, i, 8);
    PT_TEST_WHILE_FOR(r->n < 170, 6000, assert_int_equal(pt_client_pump(c, 10, on_event, r), 0));
    assert_int_equal(r->n, 170);
    assert_int_equal(pt_test_log_count(&srv, "banned for"), 0);
    /* far above it (more than four bursts at once): closed and banned */
    for (uint32_t i = 0; i < 1000; i++) send_echo(c, i, 8);
    int rc = 0;
    PT_TEST_WHILE_FOR(rc == 0, 3000, rc = pt_client_pump(c, 10, on_event, r));
    assert_int_equal(rc, PT_ERR_CLOSED);
    assert_int_equal(pt_test_log_count(&srv, "banned for 2 s"), 1);
    /* banned: refused at once */
    assert_true(pt_client_connect(c, "127.0.0.1", srv.port) != 0);
    assert_true(pt_test_log_count(&srv, "address banned for flooding") >= 1);
    /* after the ban, welcome again; the session resumes and every call is answered */
    usleep(2300000);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    PT_TEST_WHILE_FOR(r->n < 1170, 15000, assert_int_equal(pt_client_pump(c, 5, on_event, r), 0));
    assert_int_equal(r->n, 1170); /* nothing lost: answered before the close or resent after */
    assert_int_equal(pt_test_log_count(&srv, "banned for 2 s"), 1);
    free(r);
    pt_client_free(c);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* The limits of an address: new connections per second, and messages per second
 * from all its connections together (each of them within its own rate). */
static void test_address_limits(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--ip-conn-rate", "1", "--rate-limit", "1000", "--ip-rate-limit", "100",
                           "--ban-time", "2", NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    /* a burst of two new connections, then one a second: of six at once, four (three
     * if the machine took a second over them) are closed at accept */
    int fds[6], refused = 0;
    for (int i = 0; i < 6; i++) fds[i] = raw_connect(srv.port);
    for (int i = 0; i < 6; i++) {
        int ms = wait_closed(fds[i], 300);
        refused += ms >= 0;
        close(fds[i]);
    }
    assert_true(refused >= 3 && refused <= 4);
    assert_int_equal(pt_test_log_count(&srv, "refused: too many new connections from this address"), refused);
    usleep(2100000); /* the bucket refills: two connections again */
    pt_client *a = new_client(pt_test_tmpdir("cl-a"), NULL, 0, NULL);
    pt_client *b = new_client(pt_test_tmpdir("cl-b"), NULL, 0, NULL);
    assert_int_equal(pt_client_connect(a, "127.0.0.1", srv.port), 0);
    assert_int_equal(pt_client_connect(b, "127.0.0.1", srv.port), 0);
    /* 150 each: within each connection's rate, over the address's burst of 200
     * together: slowed down, every call answered, no ban */
    results *ra = new_results(), *rb = new_results();
    for (uint32_t i = 0; i < 150; i++) send_echo(a, i, 8);
    for (uint32_t i = 0; i < 150; i++) send_echo(b, i, 8);
    for (int i = 0; i < 1000 && (ra->n < 150 || rb->n < 150); i++) {
        assert_int_equal(pt_client_pump(a, 5, on_event, ra), 0);
        assert_int_equal(pt_client_pump(b, 5, on_event, rb), 0);
    }
    assert_int_equal(ra->n, 150);
    assert_int_equal(rb->n, 150);
    assert_true(pt_test_log_count(&srv, "banned for") == 0);
    /* 1,200 at once from the two (200 from a, then 1,000 from b, each within its own
     * rate): the address floods (four bursts, 800, over); b, whose messages took it
     * over, is closed and the address banned (new connections refused); a stays,
     * paused for a while */
    usleep(2100000); /* the address's bucket full again (its last read may have overdrawn it) */
    for (uint32_t i = 0; i < 200; i++) send_echo(a, i, 8);
    PT_TEST_WHILE_FOR(ra->n < 350, 2000, assert_int_equal(pt_client_pump(a, 5, on_event, ra), 0));
    assert_int_equal(ra->n, 350); /* charged and answered before b sends */
    for (uint32_t i = 0; i < 1000; i++) send_echo(b, i, 8);
    int rca = 0, rcb = 0;
    for (int i = 0; i < 300 && rcb == 0; i++) {
        rca = pt_client_pump(a, 5, on_event, ra);
        if (rca) break;
        rcb = pt_client_pump(b, 5, on_event, rb);
    }
    assert_int_equal(rca, 0);
    assert_int_equal(rcb, PT_ERR_CLOSED);
    assert_int_equal(pt_test_log_count(&srv, "over 100 messages/s from all its connections: banned for 2 s"), 1);
    assert_true(pt_client_connect(b, "127.0.0.1", srv.port) != 0); /* banned */
    assert_int_equal(pt_client_pump(a, 5, on_event, ra), 0);   /* a is still in */
    free(ra);
    free(rb);
    pt_client_free(a);
    pt_client_free(b);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* Several listen addresses: a --listen again (or a list) adds one; the ready file
 * names each after the first ("listen HOST:PORT"), and a client gets in through any. */
static void test_listen_addresses(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--listen", " 127.0.0.2:0, 127.0.0.3:0", NULL}; /* spaces: fine */
    pt_test_server_start(&srv, NULL, 0, extra);
    char path[400];
    snprintf(path, sizeof path, "%s/ready", srv.dir);
    char *ready = pt_test_read_file(path, NULL);
    assert_non_null(ready);
    const char *hosts[] = {"127.0.0.1", "127.0.0.2", "127.0.0.3"};
    uint16_t ports[3] = {srv.port, 0, 0};
    for (int i = 1; i < 3; i++) {
        char key[32];
        snprintf(key, sizeof key, "listen %s:", hosts[i]);
        const char *l = strstr(ready, key);
        assert_non_null(l);
        ports[i] = (uint16_t)atoi(l + strlen(key));
        assert_true(ports[i] > 0 && ports[i] != srv.port);
    }
    free(ready);
    assert_int_equal(pt_test_log_count(&srv, "also listening on 127.0.0.3:"), 1);
    for (int i = 0; i < 3; i++) {
        pt_client *c = new_client(pt_test_tmpdir("cl"), NULL, 0, NULL);
        assert_int_equal(pt_client_connect(c, hosts[i], ports[i]), 0);
        results *r = new_results();
        send_echo(c, 7, 64);
        pump_until(c, r, 1);
        assert_int_equal(r->n, 1);
        assert_int_equal(r->seq[0], 7);
        free(r);
        pt_client_free(c);
    }
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* An IPv6 first listen address: the ready file's first line, its metrics line and
 * the log give it in brackets ([::1]:PORT), so the port is after the last colon. */
static void test_listen_ipv6(void **state)
{
    (void)state;
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 lo6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool v6 = probe >= 0 && bind(probe, (struct sockaddr *)&lo6, sizeof lo6) == 0;
    int why = errno;
    if (probe >= 0) close(probe);
    if (!v6) { /* a kernel or container with IPv6 turned off: nothing can listen on ::1 */
        fprintf(stderr,
                "test_listen_ipv6: skipped: this host cannot bind [::1] (%s), so no server can "
                "listen on IPv6 here; the [HOST]:PORT parsing and formatting are still checked "
                "by test_common\n",
                strerror(why));
        skip();
    }
    pt_test_server srv;
    const char *extra[] = {"--metrics", "[::1]:0", NULL};
    pt_test_server_start_at(&srv, NULL, "[::1]:0", extra);
    char path[400];
    snprintf(path, sizeof path, "%s/ready", srv.dir);
    char *ready = pt_test_read_file(path, NULL);
    assert_non_null(ready);
    char want[64];
    snprintf(want, sizeof want, "[::1]:%u\n", srv.port);
    assert_int_equal(strncmp(ready, want, strlen(want)), 0);
    assert_non_null(strstr(ready, "\nmetrics [::1]:"));
    free(ready);
    char logged[64];
    snprintf(logged, sizeof logged, " listening on [::1]:%u ", srv.port);
    assert_int_equal(pt_test_log_count(&srv, logged), 1);
    pt_client *c = new_client(pt_test_tmpdir("cl"), NULL, 0, NULL);
    assert_int_equal(pt_client_connect(c, "::1", srv.port), 0);
    results *r = new_results();
    send_echo(c, 9, 64);
    pump_until(c, r, 1);
    assert_int_equal(r->n, 1);
    free(r);
    pt_client_free(c);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

static int run_cmd(const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>&1", getenv("PT_PACKTRACKD"), args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Exit status: 0 fine, 1 a bad command line or configuration (or cannot start);
 * 2 is only --check-config's "warnings, no errors" (tests/integration/test_ops.c). */
static void test_command_line(void **state)
{
    (void)state;
    assert_int_equal(run_cmd("--help"), 0);
    assert_int_equal(run_cmd("--version"), 0);
    assert_int_equal(run_cmd("--listen nonsense"), 1);
    assert_int_equal(run_cmd("--listen 127.0.0.1:99999"), 1);
    assert_int_equal(run_cmd("--listen 127.0.0.1:0,nonsense --check-config"), 1);
    assert_int_equal(run_cmd("--listen 127.0.0.1:0 --listen nonsense --check-config"), 1);
    assert_int_equal(run_cmd("--listen 127.0.0.1:0,127.0.0.2:0,127.0.0.3:0,127.0.0.4:0,127.0.0.5:0,"
                             "127.0.0.6:0,127.0.0.7:0,127.0.0.8:0,127.0.0.9:0 --check-config"), 1);
    assert_int_equal(run_cmd("--suites PT1-NOPE"), 1);
    assert_int_equal(run_cmd("--idle-timeout 0"), 1);
    assert_int_equal(run_cmd("--log-level loud"), 1);
    assert_int_equal(run_cmd("--bogus"), 1);
    assert_int_equal(run_cmd("--data /proc/nonexistent/x --listen 127.0.0.1:0"), 1);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "--config %s/docs/packtrackd.conf --check-config", getenv("PT_SOURCE_DIR"));
    assert_int_equal(run_cmd(cmd), 0);
    assert_int_equal(run_cmd("--config /nonexistent.conf --check-config"), 1);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_command_line),
        cmocka_unit_test(test_echo_every_suite),
        cmocka_unit_test(test_event_driven_client),
        cmocka_unit_test(test_read_defers_output),
        cmocka_unit_test(test_unknown_method_is_an_rpc_error),
        cmocka_unit_test(test_pinned_key_changed_is_refused),
        cmocka_unit_test(test_resumption_exactly_once),
        cmocka_unit_test(test_garbage_timeouts_and_bad_frames),
        cmocka_unit_test(test_destroy_other_session),
        cmocka_unit_test(test_sigterm_closes_clients),
        cmocka_unit_test(test_config_file_and_sighup),
        cmocka_unit_test(test_abuse_limits),
        cmocka_unit_test(test_address_limits),
        cmocka_unit_test(test_listen_addresses),
        cmocka_unit_test(test_listen_ipv6),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
