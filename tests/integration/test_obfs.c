/*
 * The obfuscation layer wired into packtrackd and the client (src/server/obfs_conn.c,
 * src/client/obfs_client.c), with real packtrackd processes on 127.0.0.1.
 *
 * A recording TCP proxy (a thread of this program) sits between client and server
 * where the bytes on the wire matter: it keeps the first bytes and the length of
 * the first read of each direction of every connection. Random probe bytes come
 * from a seeded generator; the seed is printed. Every wait is bounded.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/pt_client.h"
#include "obfs/pt_ptobfs.h"
#include "pt_tl.h"
#include "testutil.h"

static const char NK[] = "6a1f0c9e3b5d7a2c4e6f8091a3b5c7d9e1f20314253647586970a1b2c3d4e5f6";
static const char NK_WRONG[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/* ---- helpers --------------------------------------------------------------------------- */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t rng_state;
static uint8_t rng_byte(void)
{
    rng_state ^= rng_state << 13; /* xorshift64: reproducible probes */
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint8_t)(rng_state >> 24);
}

typedef struct echo_results {
    int echoes, pongs, errors;
} echo_results;

static void on_event(void *ud, const pt_sess_event *ev)
{
    echo_results *r = ud;
    if (ev->type == PT_SESS_EV_PONG) r->pongs++;
    if (ev->type != PT_SESS_EV_RESULT) return;
    uint8_t am[256];
    pt_arena a;
    pt_arena_init(&a, am, sizeof am);
    pt_tl_obj o;
    assert_int_equal(pt_tl_decode_any(&o, ev->body, ev->len, &a), 0);
    if (o.id == PT_TL_PT_ECHORESULT_ID) r->echoes++;
    else r->errors++;
}

/* One pt.echo of `size` bytes and a ping, both answered within 10 s. */
static void echo_roundtrip(pt_client *c, size_t size)
{
    static uint8_t payload[65536];
    for (size_t i = 0; i < size; i++) payload[i] = (uint8_t)i;
    pt_tl_pt_echo e = {.payload = {payload, (uint32_t)size}};
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_tl_pt_echo_encode(&b, &e), 0);
    assert_int_equal(pt_client_send(c, b.data, b.len, NULL), 0);
    pt_buf_free(&b);
    assert_int_equal(pt_client_ping(c, 7, NULL), 0);
    echo_results r = {0};
    PT_TEST_WHILE_FOR(r.echoes < 1 || r.pongs < 1, 10000,
                      assert_int_equal(pt_client_pump(c, 10, on_event, &r), 0));
    assert_int_equal(r.echoes, 1);
    assert_int_equal(r.pongs, 1);
    assert_int_equal(r.errors, 0);
}

static pt_client *new_client(const char *mode, const char *key, int timeout_ms)
{
    pt_client_config cfg = {.home = pt_test_tmpdir("ocl"), .obfuscation = mode, .network_key = key,
                            .timeout_ms = timeout_ms};
    int err = -1;
    pt_client *c = pt_client_new(&cfg, &err);
    assert_non_null(c);
    assert_int_equal(err, 0);
    return c;
}

static int raw_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static int listen_any(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 64), 0);
    socklen_t sl = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &sl);
    *port = ntohs(a.sin_port);
    return fd;
}

static void send_all(int fd, const uint8_t *p, size_t len)
{
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

/* Reads what fd says for up to ms (into buf, at most cap bytes); *eof when the
 * peer closed. Returns the byte count. */
static size_t read_for(int fd, int ms, uint8_t *buf, size_t cap, bool *eof)
{
    size_t got = 0;
    *eof = false;
    uint64_t end = mono_ms() + (uint64_t)ms;
    for (uint64_t now; !*eof && (now = mono_ms()) < end;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(end - now)) <= 0) continue;
        uint8_t tmp[4096];
        ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n <= 0) {
            *eof = true;
            break;
        }
        size_t k = (size_t)n < cap - got ? (size_t)n : cap - got;
        memcpy(buf + got, tmp, k);
        got += k;
    }
    return got;
}

/* ---- a recording proxy ------------------------------------------------------------------ */

#define REC_MAX 128
#define REC_KEEP 2048

typedef struct rec_dir {
    uint8_t head[REC_KEEP]; /* the first bytes of this direction */
    size_t kept;
    size_t first_read;      /* length of the first read (the first packet) */
    size_t total;
} rec_dir;

typedef struct proxy {
    int lfd;
    uint16_t port, target;
    pthread_t th;
    volatile int stop;
    volatile int nconn;     /* connections relayed (finished or not) */
    rec_dir c2s[REC_MAX], s2c[REC_MAX];
} proxy;

static void rec(rec_dir *d, const uint8_t *p, size_t n)
{
    if (d->total == 0) d->first_read = n;
    size_t k = n < REC_KEEP - d->kept ? n : REC_KEEP - d->kept;
    memcpy(d->head + d->kept, p, k);
    d->kept += k;
    d->total += n;
}

/* Relays one connection until either side closes or stop is set. */
static void relay(proxy *px, int cfd, int idx)
{
    int sfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(px->target)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(sfd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(sfd);
        return;
    }
    int fds[2] = {cfd, sfd};
    while (!px->stop) {
        struct pollfd p[2] = {{.fd = cfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        if (poll(p, 2, 100) <= 0) continue;
        bool done = false;
        for (int i = 0; i < 2 && !done; i++) {
            if (!p[i].revents) continue;
            uint8_t buf[65536];
            ssize_t n = recv(fds[i], buf, sizeof buf, 0);
            if (n <= 0 || send(fds[1 - i], buf, (size_t)n, MSG_NOSIGNAL) != n) {
                done = true;
                break;
            }
            if (idx < REC_MAX) rec(i == 0 ? &px->c2s[idx] : &px->s2c[idx], buf, (size_t)n);
        }
        if (done) break;
    }
    close(sfd);
}

static void *proxy_main(void *arg)
{
    proxy *px = arg;
    while (!px->stop) {
        struct pollfd p = {.fd = px->lfd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) continue;
        int cfd = accept(px->lfd, NULL, NULL);
        if (cfd < 0) continue;
        int idx = px->nconn++;
        relay(px, cfd, idx);
        close(cfd);
    }
    return NULL;
}

static proxy *proxy_start(uint16_t target)
{
    proxy *px = calloc(1, sizeof *px);
    assert_non_null(px);
    px->target = target;
    px->lfd = listen_any(&px->port);
    assert_int_equal(pthread_create(&px->th, NULL, proxy_main, px), 0);
    return px;
}

static void proxy_stop(proxy *px)
{
    px->stop = 1;
    pthread_join(px->th, NULL);
    close(px->lfd);
    free(px);
}

/* ---- the byte-distribution check ------------------------------------------------------- */

/* The first 96 bytes of n recorded streams: no position holds a fixed value (none
 * takes one value more than 12 times in 100), the 256 byte values are spread as
 * a uniform source would spread them (chi-square, 255 degrees of freedom, below
 * 360: p < 1e-5 to fail by chance; one fixed byte in the 96 adds about 260), and
 * the first packets vary in length. */
static void check_random_looking(const char *what, const rec_dir *d, int n)
{
    unsigned hist[256] = {0}, distinct_len = 0;
    unsigned worst = 0;
    int worst_pos = -1;
    for (int pos = 0; pos < 96; pos++) {
        unsigned cnt[256] = {0};
        for (int i = 0; i < n; i++) {
            assert_true(d[i].kept >= 96);
            cnt[d[i].head[pos]]++;
            hist[d[i].head[pos]]++;
        }
        for (int v = 0; v < 256; v++)
            if (cnt[v] > worst) {
                worst = cnt[v];
                worst_pos = pos;
            }
    }
    double expect = 96.0 * n / 256.0, chi2 = 0;
    for (int v = 0; v < 256; v++) chi2 += (hist[v] - expect) * (hist[v] - expect) / expect;
    size_t minlen = SIZE_MAX, maxlen = 0;
    for (int i = 0; i < n; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++) seen = d[j].first_read == d[i].first_read;
        distinct_len += !seen;
        if (d[i].first_read < minlen) minlen = d[i].first_read;
        if (d[i].first_read > maxlen) maxlen = d[i].first_read;
    }
    print_message("[ %s ] %d connections: chi-square %.1f (255 dof), most common value at one "
                  "position %u/%d (offset %d), first packets %zu..%zu bytes, %u distinct lengths\n",
                  what, n, chi2, worst, n, worst_pos, minlen, maxlen, distinct_len);
    assert_true(worst <= 12);
    assert_true(chi2 < 360.0);
    assert_true(distinct_len >= 30);
}

/* ---- MSE: require, accept, prefer ----------------------------------------------------- */

static void test_mse_require_end_to_end(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--obfuscation", "require", "--network-key", NK, NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    pt_client *c = new_client("mse", NK, 5000);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    assert_false(pt_client_used_ik(c));
    echo_roundtrip(c, 60000);
    /* again: the key is pinned now, so IK; the session resumes through MSE too */
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    assert_true(pt_client_used_ik(c));
    echo_roundtrip(c, 100);
    pt_client_free(c);
    assert_int_equal(pt_test_log_count(&srv, "obfuscation: MSE handshake done"), 2);
    assert_int_equal(pt_test_log_count(&srv, "secure channel up"), 2);

    /* a plain client gets nothing back and gives up at its own timeout */
    pt_client *plain = new_client(NULL, NULL, 1500);
    uint64_t t0 = mono_ms();
    int rc = pt_client_connect(plain, "127.0.0.1", srv.port);
    assert_true(rc == PT_ERR_TIMEOUT || rc == PT_ERR_CLOSED);
    assert_true(mono_ms() - t0 < 5000);
    pt_client_free(plain);
    assert_true(pt_test_log_count(&srv, "a plain channel hello, but this port takes require only") >= 1);
    assert_int_equal(pt_test_log_count(&srv, "secure channel up"), 2);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

static void test_accept_serves_plain_and_mse(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--obfuscation", "accept", "--network-key", NK, NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    const char *modes[] = {NULL, "mse", "off", "mse-prefer"};
    for (size_t i = 0; i < PT_ARRAY_LEN(modes); i++) {
        pt_client *c = new_client(modes[i], NK, 5000);
        assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
        echo_roundtrip(c, 1000);
        pt_client_free(c);
    }
    assert_int_equal(pt_test_log_count(&srv, "obfuscation: plain channel hello"), 2);
    assert_int_equal(pt_test_log_count(&srv, "obfuscation: MSE handshake done"), 2);
    assert_int_equal(pt_test_log_count(&srv, "secure channel up"), 4);
    /* prefer is accept on a server */
    assert_int_equal(pt_test_server_stop(&srv), 0);
    const char *extra2[] = {"--obfuscation", "prefer", "--network-key", NK, NULL};
    pt_test_server_start(&srv, NULL, 0, extra2);
    for (size_t i = 0; i < 2; i++) {
        pt_client *c = new_client(modes[i], NK, 5000);
        assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
        echo_roundtrip(c, 10);
        pt_client_free(c);
    }
    assert_int_equal(pt_test_log_count(&srv, "secure channel up"), 2);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* A client in mse mode never says a plain byte, even to a plain-only server;
 * mse-prefer falls back to the plain channel there. */
static void test_mse_client_never_plain(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    proxy *px = proxy_start(srv.port);
    pt_client *c = new_client("mse", NK, 3000);
    uint64_t t0 = mono_ms();
    int rc = pt_client_connect(c, "127.0.0.1", px->port);
    assert_true(rc == PT_ERR_CLOSED || rc == PT_ERR_TIMEOUT);
    assert_true(mono_ms() - t0 < 4000);
    assert_false(pt_client_connected(c));
    pt_client_free(c);
    for (int i = 0; i < 100 && px->nconn < 1; i++) usleep(10000);
    usleep(100000);
    assert_int_equal(px->nconn, 1); /* one attempt, no plain retry */
    const rec_dir *d = &px->c2s[0];
    assert_true(d->kept >= 96);
    assert_true(memcmp(d->head, "PTK", 3) != 0);
    for (size_t i = 0; i + 3 <= d->kept; i++) assert_true(memcmp(d->head + i, "PTK\x01", 4) != 0);
    assert_int_equal(px->s2c[0].total, 0);
    assert_int_equal(pt_test_log_count(&srv, "secure channel up"), 0);

    pt_client *p = new_client("mse-prefer", NK, 3000);
    assert_int_equal(pt_client_connect(p, "127.0.0.1", px->port), 0);
    echo_roundtrip(p, 10);
    pt_client_free(p);
    assert_int_equal(px->nconn, 3); /* MSE refused, then plain */
    assert_int_equal(memcmp(px->c2s[2].head, "PTK", 3), 0);
    proxy_stop(px);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

static void test_mse_wrong_key(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--obfuscation", "require", "--network-key", NK, NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    pt_client *c = new_client("mse", NK_WRONG, 5000);
    uint64_t t0 = mono_ms();
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), PT_ERR_CLOSED);
    assert_true(mono_ms() - t0 < 2000); /* fail-fast: the server closes at once */
    pt_client_free(c);
    assert_int_equal(pt_test_log_count(&srv, "MSE handshake failed: unknown SKEY hash"), 1);
    assert_int_equal(pt_test_server_stop(&srv), 0);

    /* the rule deferred: the server goes quiet and closes at its deadline (2 s) */
    const char *extra2[] = {"--obfuscation", "require", "--network-key", NK, "--obfs-defer", "skey,vc",
                            "--obfs-handshake-timeout", "2", NULL};
    pt_test_server_start(&srv, NULL, 0, extra2);
    c = new_client("mse", NK_WRONG, 6000);
    t0 = mono_ms();
    int rc = pt_client_connect(c, "127.0.0.1", srv.port);
    uint64_t took = mono_ms() - t0;
    assert_int_equal(rc, PT_ERR_CLOSED);
    assert_true(took >= 1500 && took < 5000);
    pt_client_free(c);
    assert_int_equal(pt_test_log_count(&srv, "(deferred: silent until the deadline)"), 1);
    /* a right key still gets in */
    c = new_client("mse", NK, 5000);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    echo_roundtrip(c, 10);
    pt_client_free(c);
    /* garbage of every length is never answered and never crashes it */
    rng_state = 0x5eed0001u;
    print_message("seed %#llx\n", (unsigned long long)rng_state);
    int fds[4];
    const size_t lens[4] = {10, 96, 700, 5000};
    for (int i = 0; i < 4; i++) {
        uint8_t junk[5000];
        for (size_t k = 0; k < lens[i]; k++) junk[k] = rng_byte();
        fds[i] = raw_connect(srv.port);
        send_all(fds[i], junk, lens[i]);
    }
    for (int i = 0; i < 4; i++) {
        uint8_t buf[1024];
        bool eof;
        size_t got = read_for(fds[i], 4000, buf, sizeof buf, &eof);
        assert_true(got == 0 || lens[i] == 96); /* 96 bytes are a whole Ya: Yb comes back */
        assert_true(eof);
        close(fds[i]);
    }
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* 100 connections to a require-mode server through the recording proxy. */
static void test_mse_capture_looks_random(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--obfuscation", "require", "--network-key", NK, NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    proxy *px = proxy_start(srv.port);
    pt_client *c = new_client("mse", NK, 5000);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(pt_client_connect(c, "127.0.0.1", px->port), 0);
        if (i % 25 == 0) echo_roundtrip(c, 100);
        pt_client_drop(c);
    }
    pt_client_free(c);
    for (int i = 0; i < 100 && px->nconn < 100; i++) usleep(10000);
    px->stop = 1;
    pthread_join(px->th, NULL);
    assert_int_equal(px->nconn, 100);
    check_random_looking("MSE client->server", px->c2s, 100);
    check_random_looking("MSE server->client", px->s2c, 100);
    close(px->lfd);
    free(px);
    assert_int_equal(pt_test_log_count(&srv, "secure channel up"), 100);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* ---- pt-obfs ---------------------------------------------------------------------------- */

static void test_ptobfs_end_to_end(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--obfuscation", "pt-obfs", "--network-key", NK, NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    pt_client *c = new_client("pt-obfs", NK, 5000);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    echo_roundtrip(c, 60000);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    assert_true(pt_client_used_ik(c));
    echo_roundtrip(c, 20000);
    pt_client_free(c);
    assert_int_equal(pt_test_log_count(&srv, "pt-obfs first flight verified"), 2);
    /* a wrong key: silence, so the client gives up at its timeout */
    c = new_client("pt-obfs", NK_WRONG, 1500);
    uint64_t t0 = mono_ms();
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), PT_ERR_TIMEOUT);
    assert_true(mono_ms() - t0 < 4000);
    pt_client_free(c);
    /* Logged as rejected at once, except when the wrong key decrypts the padding
     * length to one longer than what was sent (about 1 in 100): then the server
     * waits for the rest until the client gives up. */
    assert_true(pt_test_log_count(&srv, "pt-obfs flight rejected") <= 1);
    /* an MSE or plain client gets the same silence */
    c = new_client("mse", NK, 1500);
    assert_true(pt_client_connect(c, "127.0.0.1", srv.port) != 0);
    pt_client_free(c);
    assert_int_equal(pt_test_log_count(&srv, "secure channel up"), 2);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

typedef struct probe {
    const char *what;
    uint8_t bytes[2048];
    size_t len;
    int fd;
} probe;

static void make_probes(probe *p, uint16_t port, const uint8_t *flight, size_t flight_len)
{
    p[0].what = "random bytes";
    p[0].len = 600;
    for (size_t k = 0; k < p[0].len; k++) p[0].bytes[k] = rng_byte();
    p[1].what = "replayed flight";
    memcpy(p[1].bytes, flight, flight_len);
    p[1].len = flight_len;
    p[2].what = "flight with the wrong key";
    uint8_t key[32], payload[32] = {1};
    assert_int_equal(pt_hex_decode(key, 32, NK_WRONG), 0);
    pt_obfs_config pc;
    pt_obfs_config_init(&pc, false);
    pc.network_key = key;
    pt_obfs *o = pt_obfs_new(pt_env_default(), &pc, NULL);
    assert_non_null(o);
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_obfs_client_start(o, payload, &b), 0);
    assert_int_equal(pt_obfs_seal(o, &b, (const uint8_t *)"PTK\x01\x01\x01\x01", 7), 0);
    assert_true(b.len <= sizeof p[2].bytes);
    memcpy(p[2].bytes, b.data, b.len);
    p[2].len = b.len;
    pt_buf_free(&b);
    pt_obfs_free(o);
    p[3].what = "an HTTP request";
    p[3].len = (size_t)snprintf((char *)p[3].bytes, sizeof p[3].bytes, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    for (int i = 0; i < 4; i++) {
        p[i].fd = raw_connect(port);
        send_all(p[i].fd, p[i].bytes, p[i].len);
    }
}

static size_t capture_flight(uint16_t port, uint8_t *flight, size_t cap)
{
    proxy *px = proxy_start(port);
    pt_client *c = new_client("pt-obfs", NK, 5000);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", px->port), 0);
    pt_client_free(c);
    for (int i = 0; i < 100 && px->nconn < 1; i++) usleep(10000);
    px->stop = 1;
    pthread_join(px->th, NULL);
    size_t n = px->c2s[0].first_read;
    assert_true(n > 0 && n <= cap && n <= px->c2s[0].kept);
    memcpy(flight, px->c2s[0].head, n);
    close(px->lfd);
    free(px);
    return n;
}

static void test_ptobfs_probes_get_silence(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--obfuscation", "pt-obfs", "--network-key", NK, "--obfs-handshake-timeout", "3", NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    uint8_t flight[2048];
    size_t flen = capture_flight(srv.port, flight, sizeof flight);
    rng_state = 0x5eed0002u;
    print_message("seed %#llx\n", (unsigned long long)rng_state);
    probe p[4];
    uint64_t t0 = mono_ms();
    make_probes(p, srv.port, flight, flen);
    /* 1.5 s in: no byte back, and every connection is still open */
    for (int i = 0; i < 4; i++) {
        uint8_t buf[256];
        bool eof;
        int wait = (int)(t0 + 1500 - mono_ms());
        size_t got = read_for(p[i].fd, wait > 0 ? wait : 0, buf, sizeof buf, &eof);
        if (got || eof) print_message("%s: %zu bytes, eof %d\n", p[i].what, got, eof);
        assert_int_equal(got, 0);
        assert_false(eof);
    }
    /* closed without a word at the handshake timeout (3 s) */
    for (int i = 0; i < 4; i++) {
        uint8_t buf[256];
        bool eof;
        size_t got = read_for(p[i].fd, 4000, buf, sizeof buf, &eof);
        assert_int_equal(got, 0);
        assert_true(eof);
        close(p[i].fd);
    }
    uint64_t took = mono_ms() - t0;
    assert_true(took >= 2500 && took < 6000);
    /* one verdict line each: rejected on arrival, or no whole flight by the deadline */
    /* the replay is named as one when its flight arrived whole before the deadline;
     * on a loaded machine it can reach the deadline first (then: no whole flight) */
    assert_true(pt_test_log_count(&srv, "nonce replayed") <= 1);
    assert_int_equal(pt_test_log_count(&srv, "pt-obfs flight rejected") +
                         pt_test_log_count(&srv, "no whole flight in time"), 4);
    /* the capture's own client gets its channel up, or (on a loaded machine) gives up
     * on its timeout first; no prober ever does */
    assert_true(pt_test_log_count(&srv, "secure channel up") <= 1);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* A decoy: an HTTP-ish service that answers whatever arrives, then closes. */
typedef struct decoy_srv {
    int lfd;
    uint16_t port;
    pthread_t th;
    volatile int stop, served;
    uint8_t first[8][64]; /* the first bytes each connection brought */
    size_t nfirst[8];
} decoy_srv;

static const char DECOY_ANSWER[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

static void *decoy_main(void *arg)
{
    decoy_srv *d = arg;
    while (!d->stop) {
        struct pollfd p = {.fd = d->lfd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) continue;
        int fd = accept(d->lfd, NULL, NULL);
        if (fd < 0) continue;
        uint8_t buf[4096];
        struct pollfd q = {.fd = fd, .events = POLLIN};
        ssize_t n = poll(&q, 1, 3000) == 1 ? recv(fd, buf, sizeof buf, 0) : 0;
        int i = d->served;
        if (n > 0 && i < 8) {
            d->nfirst[i] = (size_t)n < sizeof d->first[i] ? (size_t)n : sizeof d->first[i];
            memcpy(d->first[i], buf, d->nfirst[i]);
        }
        if (n > 0) send(fd, DECOY_ANSWER, sizeof DECOY_ANSWER - 1, MSG_NOSIGNAL);
        d->served++;
        close(fd);
    }
    return NULL;
}

static void test_ptobfs_probes_get_the_decoy(void **state)
{
    (void)state;
    decoy_srv *d = calloc(1, sizeof *d);
    d->lfd = listen_any(&d->port);
    assert_int_equal(pthread_create(&d->th, NULL, decoy_main, d), 0);
    char decoy[64];
    snprintf(decoy, sizeof decoy, "127.0.0.1:%u", d->port);
    pt_test_server srv;
    const char *extra[] = {"--obfuscation", "pt-obfs", "--network-key", NK, "--obfs-decoy", decoy,
                           "--obfs-handshake-timeout", "2", NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    uint8_t flight[2048];
    size_t flen = capture_flight(srv.port, flight, sizeof flight);
    rng_state = 0x5eed0003u;
    print_message("seed %#llx\n", (unsigned long long)rng_state);
    probe p[4];
    make_probes(p, srv.port, flight, flen);
    for (int i = 0; i < 4; i++) {
        uint8_t buf[256];
        bool eof;
        size_t got = read_for(p[i].fd, 6000, buf, sizeof buf, &eof);
        print_message("%s: the decoy's %zu bytes back, closed %d\n", p[i].what, got, eof);
        assert_int_equal(got, sizeof DECOY_ANSWER - 1);
        assert_memory_equal(buf, DECOY_ANSWER, got);
        assert_true(eof);
        close(p[i].fd);
    }
    assert_int_equal(d->served, 4);
    /* the decoy saw each prober's own first bytes */
    int matched = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            matched += d->nfirst[j] > 0 && memcmp(d->first[j], p[i].bytes, d->nfirst[j]) == 0;
    assert_int_equal(matched, 4);
    /* the real client is still served */
    pt_client *c = new_client("pt-obfs", NK, 5000);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", srv.port), 0);
    echo_roundtrip(c, 10);
    pt_client_free(c);
    assert_int_equal(pt_test_log_count(&srv, "relayed to the decoy"), 4);
    assert_int_equal(pt_test_server_stop(&srv), 0);
    d->stop = 1;
    pthread_join(d->th, NULL);
    close(d->lfd);
    free(d);
}

static void test_ptobfs_capture_looks_random(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--obfuscation", "pt-obfs", "--network-key", NK, NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    proxy *px = proxy_start(srv.port);
    pt_client *c = new_client("pt-obfs", NK, 5000);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(pt_client_connect(c, "127.0.0.1", px->port), 0);
        pt_client_drop(c);
    }
    pt_client_free(c);
    for (int i = 0; i < 100 && px->nconn < 100; i++) usleep(10000);
    px->stop = 1;
    pthread_join(px->th, NULL);
    assert_int_equal(px->nconn, 100);
    check_random_looking("pt-obfs client->server", px->c2s, 100);
    close(px->lfd);
    free(px);
    assert_int_equal(pt_test_log_count(&srv, "secure channel up"), 100);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* ---- configuration --------------------------------------------------------------------- */

static int run_cmd(const char *args, const char *out)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>&1", getenv("PT_PACKTRACKD"), args, out);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_config_checks(void **state)
{
    (void)state;
    const char *dir = pt_test_tmpdir("oconf");
    char out[300], conf[300], keyfile[300], args[1500];
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(conf, sizeof conf, "%s/p.conf", dir);
    snprintf(keyfile, sizeof keyfile, "%s/nk", dir);
    FILE *f = fopen(keyfile, "w");
    fprintf(f, "%s\n", NK);
    fclose(f);
    const struct {
        const char *args;
        int status;
        const char *says;
    } cases[] = {
        {"--obfuscation require", 1, "needs a network key"},
        {"--obfuscation sometimes", 1, "expected off, accept, prefer, require or pt-obfs"},
        {"--obfuscation pt-obfs --network-key 00112233445566778899aabbccddeeff", 1, "exactly 32 bytes"},
        {"--obfuscation require --network-key 0011", 1, "expected 32 to 128 hex digits"},
        {"--obfuscation require --network-key /nonexistent/key", 1, "neither hex nor a readable key file"},
        {"--obfuscation require --network-key " "6a1f0c9e3b5d7a2c4e6f8091a3b5c7d9" " --obfs-decoy 127.0.0.1:80",
         1, "only used in mode pt-obfs"},
        {"--obfuscation pt-obfs --network-key KEYFILE --obfs-decoy localhost:80", 1, "numeric HOST:PORT"},
        {"--obfuscation require --network-key KEYFILE --obfs-defer skey,bogus", 1, "defer_rules"},
        {"--obfuscation require --network-key KEYFILE --obfs-handshake-timeout 0", 1, "1 to 3600"},
        {"--obfuscation pt-obfs --network-key KEYFILE --obfs-decoy 127.0.0.1:8080 --check-config", 0,
         "network_key = (set, 32 bytes)"},
        {"--obfuscation require --network-key KEYFILE --obfs-defer all --check-config", 0,
         "defer_rules = short,long,sync,skey,vc,provide,select"},
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(cases); i++) {
        char a[1000];
        const char *k = strstr(cases[i].args, "KEYFILE");
        if (k) snprintf(a, sizeof a, "%.*s%s%s", (int)(k - cases[i].args), cases[i].args, keyfile, k + 7);
        else snprintf(a, sizeof a, "%s", cases[i].args);
        snprintf(args, sizeof args, "%s%s", a, strstr(a, "--check-config") ? "" : " --check-config");
        int st = run_cmd(args, out);
        char *text = pt_test_read_file(out, NULL);
        if (st != cases[i].status || !strstr(text, cases[i].says))
            fail_msg("packtrackd %s: status %d, said: %s", args, st, text);
        assert_null(strstr(text, NK)); /* the key is never echoed */
        free(text);
    }
    /* the file: an [obfuscation] section; errors name the line and hide the key */
    f = fopen(conf, "w");
    fprintf(f, "[obfuscation]\nmode = pt-obfs\nnetwork_key = %s\nhandshake_timeout = 5\n", NK);
    fclose(f);
    snprintf(args, sizeof args, "--config %s --check-config", conf);
    chmod(conf, 0644); /* the key inline in a file others can read: a warning, status 2 */
    assert_int_equal(run_cmd(args, out), 2);
    char *warned = pt_test_read_file(out, NULL);
    assert_non_null(strstr(warned, "p.conf:3:1: warning: the network key is in a file other users can read"));
    assert_null(strstr(warned, NK));
    free(warned);
    chmod(conf, 0600);
    assert_int_equal(run_cmd(args, out), 0);
    char *text = pt_test_read_file(out, NULL);
    assert_non_null(strstr(text, "mode = pt-obfs"));
    assert_non_null(strstr(text, "handshake_timeout = 5"));
    assert_null(strstr(text, NK));
    free(text);
    f = fopen(conf, "w");
    fprintf(f, "[obfuscation]\nmode = require\nnetwork_key = %.20s\n", NK);
    fclose(f);
    assert_int_equal(run_cmd(args, out), 1); /* errors: 1 (2 is "warnings only") */
    text = pt_test_read_file(out, NULL);
    assert_non_null(strstr(text, "p.conf:3:15: error: network_key"));
    assert_null(strstr(text, "6a1f0c9e3b5d"));
    free(text);
    /* docs/packtrackd.conf stays a valid file */
    snprintf(args, sizeof args, "--config %s/docs/packtrackd.conf --check-config", getenv("PT_SOURCE_DIR"));
    assert_int_equal(run_cmd(args, out), 0);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_checks),
        cmocka_unit_test(test_mse_require_end_to_end),
        cmocka_unit_test(test_accept_serves_plain_and_mse),
        cmocka_unit_test(test_mse_client_never_plain),
        cmocka_unit_test(test_mse_wrong_key),
        cmocka_unit_test(test_mse_capture_looks_random),
        cmocka_unit_test(test_ptobfs_end_to_end),
        cmocka_unit_test(test_ptobfs_probes_get_silence),
        cmocka_unit_test(test_ptobfs_probes_get_the_decoy),
        cmocka_unit_test(test_ptobfs_capture_looks_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
