/*
 * packtrackd's LAN discovery responder (src/server/lan.c) on a real process: a BSM
 * to 127.0.0.1 gets a 64-byte BSR naming the server's key, TCP port and obfs flags;
 * anything malformed gets nothing; a flood gets at most what the limiter allows and
 * never more bytes than it sent; a busy UDP port never stops the server.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "crypto/pt_crypto.h"
#include "discovery/pt_disc.h"
#include "server/pt_server_int.h"
#include "store/pt_keyfile.h"

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A UDP port free on 0.0.0.0 and [::] right now. */
static uint16_t free_udp_port(void)
{
    for (int tries = 0; tries < 50; tries++) {
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        assert_true(fd >= 0);
        struct sockaddr_in a = {.sin_family = AF_INET};
        socklen_t al = sizeof a;
        assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
        close(fd);
        uint16_t port = ntohs(a.sin_port);
        int fd6 = socket(AF_INET6, SOCK_DGRAM, 0);
        if (fd6 < 0) return port; /* no IPv6 here */
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
        int ok = bind(fd6, (struct sockaddr *)&a6, sizeof a6) == 0;
        close(fd6);
        if (ok) return port;
    }
    fail_msg("no free UDP port");
    return 0;
}

static void start_with_discovery(pt_test_server *srv, uint16_t udp_port, const char *const *more)
{
    static char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", udp_port);
    const char *extra[16] = {"--discovery-port", portstr};
    int n = 2;
    for (int i = 0; more && more[i] && n < 15; i++) extra[n++] = more[i];
    extra[n] = NULL;
    pt_test_server_start(srv, NULL, 0, extra);
}

static int udp_socket(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    assert_true(fd >= 0);
    return fd;
}

static void send_to(int fd, uint16_t port, const uint8_t *p, size_t n)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(sendto(fd, p, n, 0, (struct sockaddr *)&a, sizeof a), (ssize_t)n);
}

/* One datagram within timeout_ms: its length, or -1 when none came. */
static ssize_t recv_within(int fd, uint8_t *buf, size_t cap, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) <= 0) return -1;
    return recv(fd, buf, cap, 0);
}

static size_t make_bsm(uint8_t out[PT_DISC_MAX_LEN], uint8_t nonce[16])
{
    pt_random(nonce, 16);
    pt_disc_pkt p = {.type = PT_DISC_BSM};
    memcpy(p.nonce, nonce, 16);
    size_t n;
    assert_int_equal(pt_disc_encode(&p, out, PT_DISC_MAX_LEN, &n), 0);
    return n;
}

/* Sends a BSM and checks the BSR: exactly 64 bytes, our nonce, the key the server
 * printed, its TCP port and the expected obfs flags. */
static void expect_bsr(const pt_test_server *srv, uint16_t udp_port, uint8_t want_obfs)
{
    int fd = udp_socket();
    uint8_t req[PT_DISC_MAX_LEN], nonce[16], buf[2048];
    size_t n = make_bsm(req, nonce);
    assert_int_equal(n, 64);
    ssize_t got = -1;
    for (int i = 0; i < 3 && got < 0; i++) { /* UDP: a retry or two on a loaded machine */
        send_to(fd, udp_port, req, n);
        got = recv_within(fd, buf, sizeof buf, 1000);
    }
    assert_int_equal(got, PT_DISC_BSR_LEN);
    pt_disc_pkt rep;
    assert_int_equal(pt_disc_decode(buf, (size_t)got, &rep), 0);
    assert_int_equal(rep.type, PT_DISC_BSR);
    assert_memory_equal(rep.nonce, nonce, 16);
    char fp[PT_FINGERPRINT_LEN];
    pt_fingerprint(fp, rep.server_key);
    assert_string_equal(fp, srv->fingerprint);
    assert_int_equal(rep.port, srv->port);
    assert_int_equal(rep.obfs, want_obfs);
    close(fd);
}

static void test_bsm_answered(void **state)
{
    (void)state;
    pt_test_server srv;
    uint16_t udp = free_udp_port();
    start_with_discovery(&srv, udp, NULL);
    expect_bsr(&srv, udp, PT_DISC_OBFS_PLAIN);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

static void test_obfs_flags(void **state)
{
    (void)state;
    assert_int_equal(pt_srv_lan_obfs_flags(PT_OBFS_MODE_OFF), PT_DISC_OBFS_PLAIN);
    assert_int_equal(pt_srv_lan_obfs_flags(PT_OBFS_MODE_ACCEPT), PT_DISC_OBFS_PLAIN | PT_DISC_OBFS_MSE);
    assert_int_equal(pt_srv_lan_obfs_flags(PT_OBFS_MODE_PREFER), PT_DISC_OBFS_PLAIN | PT_DISC_OBFS_MSE);
    assert_int_equal(pt_srv_lan_obfs_flags(PT_OBFS_MODE_REQUIRE), PT_DISC_OBFS_MSE | PT_DISC_OBFS_REQUIRED);
    assert_int_equal(pt_srv_lan_obfs_flags(PT_OBFS_MODE_PTOBFS), PT_DISC_OBFS_PTOBFS | PT_DISC_OBFS_REQUIRED);
    static const char nk[] = "6a1f0c9e3b5d7a2c4e6f8091a3b5c7d9e1f20314253647586970a1b2c3d4e5f6";
    pt_test_server srv;
    uint16_t udp = free_udp_port();
    const char *more[] = {"--obfuscation", "require", "--network-key", nk, NULL};
    start_with_discovery(&srv, udp, more);
    expect_bsr(&srv, udp, PT_DISC_OBFS_MSE | PT_DISC_OBFS_REQUIRED);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

static void test_malformed_ignored(void **state)
{
    (void)state;
    pt_test_server srv;
    uint16_t udp = free_udp_port();
    start_with_discovery(&srv, udp, NULL);
    int fd = udp_socket();
    uint8_t bsm[PT_DISC_MAX_LEN], nonce[16], buf[2048], bad[1200];
    size_t n = make_bsm(bsm, nonce);
    /* short, long, bad magic, bad version, nonzero padding, a BPM, a BSR, garbage */
    send_to(fd, udp, bsm, n - 1);
    memcpy(bad, bsm, n);
    bad[n] = 0;
    send_to(fd, udp, bad, n + 1);
    bad[0] = 'X';
    send_to(fd, udp, bad, n);
    memcpy(bad, bsm, n);
    bad[3] = 2;
    send_to(fd, udp, bad, n);
    memcpy(bad, bsm, n);
    bad[40] = 1;
    send_to(fd, udp, bad, n);
    pt_disc_pkt other = {.type = PT_DISC_BPM};
    size_t on;
    assert_int_equal(pt_disc_encode(&other, bad, sizeof bad, &on), 0);
    send_to(fd, udp, bad, on);
    other.type = PT_DISC_BSR;
    assert_int_equal(pt_disc_encode(&other, bad, sizeof bad, &on), 0);
    send_to(fd, udp, bad, on);
    pt_random(bad, sizeof bad);
    send_to(fd, udp, bad, sizeof bad);
    send_to(fd, udp, bad, 1);
    assert_int_equal(recv_within(fd, buf, sizeof buf, 700), -1);
    /* the same socket is still answered: the silence above was the packets' doing */
    send_to(fd, udp, bsm, n);
    assert_int_equal(recv_within(fd, buf, sizeof buf, 2000), PT_DISC_BSR_LEN);
    assert_int_equal(pt_test_log_count(&srv, "dropped a datagram"), 9); /* debug level */
    assert_int_equal(pt_test_log_count(&srv, " warn discovery"), 0);
    close(fd);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

static void test_flood_limited(void **state)
{
    (void)state;
    pt_test_server srv;
    uint16_t udp = free_udp_port();
    start_with_discovery(&srv, udp, NULL);
    int fd = udp_socket();
    int rcvbuf = 1 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    uint8_t req[PT_DISC_MAX_LEN], nonce[16], buf[2048];
    size_t n = make_bsm(req, nonce);
    uint64_t t0 = mono_ms();
    size_t sent = 0, bytes_out = 0;
    for (int i = 0; i < 200; i++) {
        send_to(fd, udp, req, n);
        sent++;
        bytes_out += n;
    }
    size_t replies = 0, bytes_in = 0;
    uint64_t until = mono_ms() + 1000;
    for (uint64_t now; (now = mono_ms()) < until;) {
        ssize_t got = recv_within(fd, buf, sizeof buf, (int)(until - now));
        if (got < 0) continue;
        assert_int_equal(got, PT_DISC_BSR_LEN);
        pt_disc_pkt rep;
        assert_int_equal(pt_disc_decode(buf, (size_t)got, &rep), 0);
        assert_memory_equal(rep.nonce, nonce, 16);
        replies++;
        bytes_in += (size_t)got;
    }
    uint64_t elapsed = mono_ms() - t0;
    print_message("flood: sent %zu (%zu bytes) in %llu ms, replies %zu (%zu bytes)\n", sent, bytes_out,
                  (unsigned long long)elapsed, replies, bytes_in);
    assert_true(replies >= PT_DISC_LIMIT_BURST);
    assert_true(replies * 1000 <= PT_DISC_LIMIT_BURST * 1000 + PT_DISC_LIMIT_PER_S * elapsed);
    assert_true(bytes_in <= bytes_out);
    /* one warning for the whole flood, no line per packet above debug */
    assert_true(pt_test_log_count(&srv, " warn discovery") <= 1);
    assert_true((size_t)pt_test_log_count(&srv, "dropped a datagram") + replies + 2 >= 200);
    close(fd);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* A UDP port someone else holds (without SO_REUSEADDR) is a warning, and
 * --no-discovery opens nothing at all. */
static void test_busy_port_and_off(void **state)
{
    (void)state;
    uint16_t udp = free_udp_port();
    int hold = udp_socket();
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(udp)};
    assert_int_equal(bind(hold, (struct sockaddr *)&a, sizeof a), 0);
    pt_test_server srv;
    start_with_discovery(&srv, udp, NULL);
    assert_true(pt_test_log_count(&srv, "discovery: cannot listen on UDP 0.0.0.0") == 1);
    assert_int_equal(pt_test_server_stop(&srv), 0);
    close(hold);

    udp = free_udp_port();
    const char *off[] = {"--no-discovery", NULL};
    start_with_discovery(&srv, udp, off);
    int fd = udp_socket();
    uint8_t req[PT_DISC_MAX_LEN], nonce[16], buf[2048];
    size_t n = make_bsm(req, nonce);
    send_to(fd, udp, req, n);
    assert_int_equal(recv_within(fd, buf, sizeof buf, 700), -1);
    assert_int_equal(pt_test_log_count(&srv, "discovery:"), 0);
    close(fd);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bsm_answered),
        cmocka_unit_test(test_obfs_flags),
        cmocka_unit_test(test_malformed_ignored),
        cmocka_unit_test(test_flood_limited),
        cmocka_unit_test(test_busy_port_and_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
