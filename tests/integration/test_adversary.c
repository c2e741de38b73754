/*
 * The adversary cases of issue 11 that need a protocol-aware attacker rather than a
 * fault proxy, against a real packtrackd. Each prints attempts and acceptances;
 * every acceptance fails the test.
 *
 *   downgrade       a man in the middle strips the strong suites from the client hello
 *   static swap     a man in the middle alters the client's encrypted static key (the
 *                   unknown-key-share attempt: the server would bind the session to
 *                   another device than the one that ran the handshake)
 *   low order       a client sends low-order X25519 points as its ephemeral key
 *   impersonation   an attacker holding Alice's device key answers as the server (KCI:
 *                   its own key, or Alice's, as the server's static key)
 *   olm/megolm      a Megolm payload offered on the Olm path and an Olm message on the
 *                   Megolm path
 *   flood           slowloris and a connection flood from another host (network
 *                   namespaces), with a legitimate client's p50/p99 round trip before
 *                   and during the flood
 *   lost record     a record from the server dropped on the way, under the suite
 *                   without a record counter (MTProto 2.0): the client sees the gap in
 *                   the session's numbering and says so (bad_msg_notification 33), and
 *                   packtrackd closes the connection (the next one resends)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "channel/pt_chan.h"
#include "client/pt_client.h"
#include "crypto/pt_crypto.h"
#include "e2e/pt_chat.h"
#include "e2e/pt_megolm.h"
#include "e2e/pt_olm.h"
#include "netns.h"
#include "store/pt_keyfile.h"
#include "testutil.h"

static pt_test_server srv;
static uint8_t server_pk[32];

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int listen_any(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 64), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static int connect_to(const char *ip, uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void on_pong(void *ud, const pt_sess_event *ev)
{
    if (ev->type == PT_SESS_EV_PONG) *(bool *)ud = true;
}

/* A client with a fresh device key and the server's key pinned; true when its
 * handshake completed and the server answered a ping on it: accepted. */
static bool client_accepted(uint16_t port, bool no_ik, int *connect_rc)
{
    uint8_t dsk[32];
    pt_random(dsk, 32);
    const char *home = pt_test_tmpdir("adv");
    pt_client_config cfg = {.home = home, .server_fingerprint = srv.fingerprint, .device_sk = dsk,
                            .timeout_ms = 3000, .no_ik = no_ik};
    int err = 0;
    pt_client *c = pt_client_new(&cfg, &err);
    assert_non_null(c);
    bool ok = false;
    int rc = pt_client_connect(c, "127.0.0.1", port);
    if (connect_rc) *connect_rc = rc;
    uint64_t id;
    if (rc == 0 && pt_client_ping(c, 7, &id) == 0) {
        uint64_t end = mono_ms() + 2000;
        while (!ok && mono_ms() < end)
            if (pt_client_pump(c, 100, on_pong, &ok) != 0) break;
    }
    pt_client_free(c);
    return ok;
}

/* ---- a man in the middle ------------------------------------------------------------------------ */

enum { MITM_RELAY = 0, MITM_DOWNGRADE = 1, MITM_STATIC = 2 };

/* Relays one connection between cfd and the server, rewriting as `mode` says. */
static void mitm_relay(int cfd, int mode)
{
    int sfd = connect_to("127.0.0.1", srv.port);
    if (sfd < 0) return;
    uint8_t in[1 << 16];
    size_t have = 0;     /* client bytes not yet parsed */
    bool hello_done = false;
    int pattern = 0, frame_no = 0;
    struct pollfd pf[2] = {{.fd = cfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    uint64_t end = mono_ms() + 8000;
    while (mono_ms() < end && poll(pf, 2, 200) >= 0) {
        if (pf[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            uint8_t b[65536];
            ssize_t n = read(sfd, b, sizeof b);
            if (n <= 0 || write(cfd, b, (size_t)n) != n) break;
        }
        if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t n = read(cfd, in + have, sizeof in - have);
        if (n <= 0) break;
        have += (size_t)n;
        /* parse: the hello, then u32le-length frames */
        size_t off = 0;
        for (;;) {
            if (!hello_done) {
                if (have - off < 6 || have - off < 6 + (size_t)in[off + 5]) break;
                size_t hl = 6 + in[off + 5];
                pattern = in[off + 4];
                if (mode == MITM_DOWNGRADE) { /* [all suites] -> [ECDHE-AES128_CTR-SHA256] */
                    uint8_t h[7] = {in[off], in[off + 1], in[off + 2], in[off + 3], in[off + 4], 1,
                                    PT_SUITE_AES128CTR_SHA256};
                    if (write(sfd, h, sizeof h) != (ssize_t)sizeof h) return;
                } else if (write(sfd, in + off, hl) != (ssize_t)hl) {
                    return;
                }
                off += hl;
                hello_done = true;
                continue;
            }
            if (have - off < 4) break;
            size_t fl = pt_get_u32le(in + off);
            if (have - off < 4 + fl) break;
            frame_no++;
            /* the initiator's static key: IK message 1 (after e), XX message 3 (first) */
            if (mode == MITM_STATIC && pattern == PT_CHAN_PATTERN_IK && frame_no == 1 && fl > 40)
                in[off + 4 + 40] ^= 0x01;
            if (mode == MITM_STATIC && pattern == PT_CHAN_PATTERN_XX && frame_no == 2 && fl > 8)
                in[off + 4 + 8] ^= 0x01;
            if (write(sfd, in + off, 4 + fl) != (ssize_t)(4 + fl)) return;
            off += 4 + fl;
        }
        memmove(in, in + off, have - off);
        have -= off;
    }
    close(sfd);
}

/* Runs a MITM for `conns` connections; returns the client side's accepted count. */
static int mitm_campaign(int mode, int attempts, const char *name)
{
    uint16_t port;
    int lfd = listen_any(&port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        for (int i = 0; i < attempts * 2; i++) { /* IK then XX per client connect */
            int cfd = accept(lfd, NULL, NULL);
            if (cfd < 0) _exit(0);
            mitm_relay(cfd, mode);
            close(cfd);
        }
        _exit(0);
    }
    close(lfd);
    int accepted = 0, failed = 0;
    for (int i = 0; i < attempts; i++) {
        int rc = 0;
        if (client_accepted(port, i % 2 == 1, &rc)) accepted++;
        if (rc != 0) failed++;
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    fprintf(stderr, "test_adversary: %-14s attempts %d, accepted %d (handshakes failed %d)\n", name, attempts,
            accepted, failed);
    return accepted;
}

static void test_downgrade(void **state)
{
    (void)state;
    assert_true(client_accepted(srv.port, false, NULL)); /* the controls: the honest path works, */
    assert_true(client_accepted(srv.port, true, NULL));
    assert_int_equal(mitm_campaign(MITM_RELAY, 4, "plain relay"), 4); /* and through the proxy too */
    assert_int_equal(mitm_campaign(MITM_DOWNGRADE, 10, "downgrade"), 0);
}

static void test_static_swap(void **state)
{
    (void)state;
    assert_int_equal(mitm_campaign(MITM_STATIC, 10, "static swap"), 0);
}

/* ---- low-order points as the client's ephemeral key ---------------------------------------------------- */

static const char *const low_order[] = {
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
};

/* One attempt: hello (pattern, suite 1), then message 1 with e = point (and for IK a
 * would-be encrypted static of 48 zero bytes). Accepted when the server answers with a
 * handshake frame: it then took the point. */
static bool low_order_accepted(const uint8_t point[32], int pattern)
{
    int fd = connect_to("127.0.0.1", srv.port);
    assert_true(fd >= 0);
    uint8_t msg[6 + 1 + 4 + 32 + 48] = {'P', 'T', 'K', PT_CHAN_VERSION, (uint8_t)pattern, 1,
                                        PT_SUITE_CHACHAPOLY_BLAKE2B};
    size_t flen = pattern == PT_CHAN_PATTERN_IK ? 32 + 48 : 32;
    pt_put_u32le(msg + 7, (uint32_t)flen);
    memcpy(msg + 11, point, 32);
    assert_int_equal(write(fd, msg, 11 + flen), (ssize_t)(11 + flen));
    uint8_t buf[4096];
    size_t got = 0;
    uint64_t end = mono_ms() + 3000;
    while (mono_ms() < end) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0) continue;
        ssize_t n = read(fd, buf + got, sizeof buf - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    return got > PT_CHAN_SERVER_HELLO_LEN; /* anything after the server hello: a handshake reply */
}

static void test_low_order_points(void **state)
{
    (void)state;
    int attempts = 0, accepted = 0;
    for (size_t i = 0; i < sizeof low_order / sizeof *low_order; i++) {
        uint8_t p[32];
        assert_int_equal(pt_hex_decode(p, 32, low_order[i]), 0);
        for (int pattern = PT_CHAN_PATTERN_XX; pattern <= PT_CHAN_PATTERN_IK; pattern++) {
            attempts++;
            accepted += low_order_accepted(p, pattern);
        }
    }
    /* the control: a real ephemeral key is answered (XX) */
    uint8_t pk[32], sk[32];
    assert_int_equal(pt_x25519_keypair(pk, sk), 0);
    assert_true(low_order_accepted(pk, PT_CHAN_PATTERN_XX));
    fprintf(stderr, "test_adversary: %-14s attempts %d, accepted %d\n", "low order", attempts, accepted);
    assert_int_equal(accepted, 0);
}

/* ---- impersonating the server (KCI) ------------------------------------------------------------------ */

/* A fake server holding `static_sk`: runs the server side of the channel for one
 * connection; exits 0 when its handshake completed. */
static void fake_server(int lfd, const uint8_t *static_sk)
{
    int cfd = accept(lfd, NULL, NULL);
    if (cfd < 0) _exit(2);
    static const uint8_t suites[] = {PT_SUITE_CHACHAPOLY_BLAKE2B, PT_SUITE_AESGCM_SHA256};
    pt_chan_config cfg = {.is_server = true, .suites = suites, .nsuites = 2, .static_sk = static_sk};
    int err = 0;
    pt_chan *ch = pt_chan_new(pt_env_default(), &cfg, &err);
    if (!ch) _exit(2);
    pt_buf out;
    pt_buf_init(&out);
    uint64_t end = mono_ms() + 4000;
    while (mono_ms() < end && !pt_chan_established(ch)) {
        struct pollfd pf = {.fd = cfd, .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0) continue;
        uint8_t b[4096];
        ssize_t n = read(cfd, b, sizeof b);
        if (n <= 0) break;
        int rc = pt_chan_input(ch, b, (size_t)n, &out, NULL, NULL);
        if (out.len && write(cfd, out.data, out.len) != (ssize_t)out.len) break;
        pt_buf_reset(&out);
        if (rc) break;
    }
    _exit(pt_chan_established(ch) ? 0 : 1);
}

static void test_impersonation(void **state)
{
    (void)state;
    /* alice's device key: the attacker has it */
    uint8_t alice_sk[32], alice_pk[32], own_sk[32], own_pk[32];
    assert_int_equal(pt_x25519_keypair(alice_pk, alice_sk), 0);
    assert_int_equal(pt_x25519_keypair(own_pk, own_sk), 0);
    int attempts = 0, accepted = 0;
    for (int variant = 0; variant < 2; variant++)
        for (int no_ik = 0; no_ik < 2; no_ik++) {
            uint16_t port;
            int lfd = listen_any(&port);
            pid_t pid = fork();
            assert_true(pid >= 0);
            if (pid == 0) fake_server(lfd, variant ? alice_sk : own_sk);
            close(lfd);
            const char *home = pt_test_tmpdir("kci");
            pt_client_config cfg = {.home = home, .server_fingerprint = srv.fingerprint, .device_sk = alice_sk,
                                    .timeout_ms = 3000, .no_ik = no_ik};
            int err = 0;
            pt_client *c = pt_client_new(&cfg, &err);
            assert_non_null(c);
            int rc = pt_client_connect(c, "127.0.0.1", port);
            pt_client_free(c);
            int st;
            waitpid(pid, &st, 0);
            attempts++;
            if (rc == 0) accepted++;
            assert_int_not_equal(rc, 0);
        }
    fprintf(stderr, "test_adversary: %-14s attempts %d, accepted %d\n", "impersonation", attempts, accepted);
    assert_int_equal(accepted, 0);
}

/* ---- Olm and Megolm payloads on each other's paths ---------------------------------------------------- */

static void test_olm_megolm_confusion(void **state)
{
    (void)state;
    pt_err err = 0;
    pt_olm_account *a = pt_olm_account_new(pt_env_default(), PT_OLM_SUITES_ALL, &err);
    pt_olm_account *b = pt_olm_account_new(pt_env_default(), PT_OLM_SUITES_ALL, &err);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(pt_olm_account_generate_one_time_keys(b, pt_env_default(), 2), 0);
    pt_olm_key otk;
    uint8_t bid[32], bed[32], aid[32], aed[32];
    pt_olm_account_identity(b, bid, bed);
    pt_olm_account_identity(a, aid, aed);
    assert_int_equal(pt_olm_account_unpublished_keys(b, &otk, 1), 1);
    pt_chat *ca = pt_chat_new(pt_env_default(), a), *cb = pt_chat_new(pt_env_default(), b);
    assert_int_equal(pt_chat_open(ca, PT_OLM_SUITE_PT_V1, bid, otk.key), 0);
    pt_buf env, reply, mg;
    pt_buf_init(&env);
    pt_buf_init(&reply);
    pt_buf_init(&mg);
    pt_chat_msg m = {.ctx = PT_CHAT_CTX_DIRECT, .time_ms = 1, .text = (const uint8_t *)"hi", .len = 2};
    assert_int_equal(pt_chat_send_msg(ca, bid, &m, &env), 0);
    pt_chat_event ev;
    assert_int_equal(pt_chat_receive(cb, env.data, env.len, &ev, &reply), 0);
    assert_int_equal(ev.type, PT_CHAT_EV_MESSAGE);

    /* a Megolm message of alice's group session */
    pt_megolm_out *g = pt_megolm_out_new(pt_env_default(), &err);
    assert_non_null(g);
    uint8_t skey[PT_MEGOLM_SESSION_KEY_LEN];
    assert_int_equal(pt_megolm_out_session_key(g, skey), 0);
    assert_int_equal(pt_megolm_out_encrypt(g, &mg, (const uint8_t *)"group", 5), 0);
    int attempts = 0, accepted = 0;
    /* on the Olm path: the envelope header of alice's SECURE kind, then the Megolm bytes
     * in place of the Olm message (as a normal and as a pre-key message) */
    for (int kind = 0; kind < 2; kind++) {
        pt_buf forged;
        pt_buf_init(&forged);
        size_t hdr = PT_CHAT_HDR_LEN;
        assert_int_equal(pt_buf_append(&forged, env.data, hdr), 0);
        uint8_t t = kind ? PT_OLM_MSG_PREKEY : PT_OLM_MSG_NORMAL;
        assert_int_equal(pt_buf_append(&forged, &t, 1), 0);
        assert_int_equal(pt_buf_append(&forged, mg.data, mg.len), 0);
        pt_buf_reset(&reply);
        int rc = pt_chat_receive(cb, forged.data, forged.len, &ev, &reply);
        attempts++;
        if (rc == 0 && ev.type == PT_CHAT_EV_MESSAGE) accepted++;
        pt_buf_free(&forged);
    }
    /* on the Megolm path: the Olm envelope and its inner message */
    pt_megolm_in *gi = pt_megolm_in_from_session_key(skey, sizeof skey, &err);
    assert_non_null(gi);
    pt_buf plain;
    pt_buf_init(&plain);
    const uint8_t *olm_part = env.data + PT_CHAT_HDR_LEN + 1;
    size_t olm_len = env.len - PT_CHAT_HDR_LEN - 1;
    attempts++;
    if (pt_megolm_in_decrypt(gi, &plain, NULL, olm_part, olm_len, 0) == 0) accepted++;
    attempts++;
    if (pt_megolm_in_decrypt(gi, &plain, NULL, env.data, env.len, 0) == 0) accepted++;
    /* the control: the Megolm message itself is accepted there */
    assert_int_equal(pt_megolm_in_decrypt(gi, &plain, NULL, mg.data, mg.len, 0), 0);
    fprintf(stderr, "test_adversary: %-14s attempts %d, accepted %d\n", "olm/megolm", attempts, accepted);
    assert_int_equal(accepted, 0);
    pt_buf_free(&plain);
    pt_megolm_in_free(gi);
    pt_megolm_out_free(g);
    pt_buf_free(&env);
    pt_buf_free(&reply);
    pt_buf_free(&mg);
    pt_chat_free(ca);
    pt_chat_free(cb);
    pt_olm_account_free(a);
    pt_olm_account_free(b);
}

/* ---- a record lost on the way ------------------------------------------------------------- */

/* Relays one connection to the server. A byte on ctl arms it: the next whole frame
 * from the server is not forwarded, and a byte goes back on ctl. */
static void lossy_relay(int cfd, int ctl)
{
    int sfd = connect_to("127.0.0.1", srv.port);
    if (sfd < 0) return;
    static uint8_t in[1 << 18]; /* server bytes not yet parsed: a frame is at most 133,124 */
    size_t have = 0;
    bool hello_done = false, armed = false;
    struct pollfd pf[3] = {
        {.fd = cfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}, {.fd = ctl, .events = POLLIN}};
    uint64_t end = mono_ms() + 20000;
    while (mono_ms() < end && poll(pf, 3, 200) >= 0) {
        char b1;
        if ((pf[2].revents & POLLIN) && read(ctl, &b1, 1) == 1) armed = true;
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            uint8_t b[65536];
            ssize_t n = read(cfd, b, sizeof b);
            if (n <= 0 || write(sfd, b, (size_t)n) != n) break;
        }
        if (!(pf[1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t n = read(sfd, in + have, sizeof in - have);
        if (n <= 0) break; /* the server closed: so does the client's side */
        have += (size_t)n;
        size_t off = 0;
        for (;;) { /* the server hello (6 bytes), then u32le-length frames */
            size_t fl = 0, hdr = hello_done ? 4 : 6;
            if (have - off < hdr) break;
            if (hello_done) fl = pt_get_u32le(in + off);
            if (have - off < hdr + fl) break;
            if (hello_done && armed) {
                armed = false;
                if (write(ctl, "x", 1) != 1) return;
            } else if (write(cfd, in + off, hdr + fl) != (ssize_t)(hdr + fl)) {
                return;
            }
            hello_done = true;
            off += hdr + fl;
        }
        memmove(in, in + off, have - off);
        have -= off;
    }
    close(sfd);
}

static void on_pong_count(void *ud, const pt_sess_event *ev)
{
    if (ev->type == PT_SESS_EV_PONG) (*(int *)ud)++;
}

/* Pumps c for up to ms, or until *pongs reaches want or the connection is gone; the
 * pump's result. */
static int pump_pongs(pt_client *c, int *pongs, int want, int ms)
{
    uint64_t end = mono_ms() + (uint64_t)ms;
    int rc = 0;
    while (rc == 0 && pt_client_connected(c) && (want < 0 || *pongs < want) && mono_ms() < end)
        rc = pt_client_pump(c, 50, on_pong_count, pongs);
    return rc;
}

static void test_lost_record(void **state)
{
    (void)state;
    uint16_t port;
    int lfd = listen_any(&port);
    int ctl[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ctl[0]);
        int cfd = accept(lfd, NULL, NULL);
        if (cfd >= 0) lossy_relay(cfd, ctl[1]);
        _exit(0);
    }
    close(lfd);
    close(ctl[1]);
    int gaps_before = pt_test_log_count(&srv, "saw a gap in our messages");

    uint8_t dsk[32], suite = PT_SUITE_MTPROTO2;
    pt_random(dsk, 32);
    pt_client_config cfg = {.home = pt_test_tmpdir("gap"), .server_fingerprint = srv.fingerprint,
                            .device_sk = dsk, .timeout_ms = 3000, .suites = &suite, .nsuites = 1};
    int err = 0;
    pt_client *c = pt_client_new(&cfg, &err);
    assert_non_null(c);
    assert_int_equal(pt_client_connect(c, "127.0.0.1", port), 0);
    assert_int_equal(pt_client_suite(c), PT_SUITE_MTPROTO2);
    int pongs = 0;
    uint64_t id;
    assert_int_equal(pt_client_ping(c, 1, &id), 0);
    assert_int_equal(pump_pongs(c, &pongs, 1, 2000), 0);
    assert_int_equal(pongs, 1);
    assert_int_equal(pump_pongs(c, &pongs, -1, 300), 0); /* whatever else the server had to say */

    /* the record with the second pong is lost */
    assert_int_equal(write(ctl[0], "d", 1), 1);
    assert_int_equal(pt_client_ping(c, 2, &id), 0);
    struct pollfd pf = {.fd = ctl[0], .events = POLLIN};
    uint64_t end = mono_ms() + 2000;
    while (poll(&pf, 1, 0) == 0 && mono_ms() < end)
        assert_int_equal(pt_client_pump(c, 50, on_pong_count, &pongs), 0);
    char b;
    assert_int_equal(read(ctl[0], &b, 1), 1);
    assert_int_equal(pump_pongs(c, &pongs, 2, 300), 0);
    assert_int_equal(pongs, 1);

    /* the third shows the gap: the client refuses it and says so, the server closes */
    assert_int_equal(pt_client_ping(c, 3, &id), 0);
    int rc = pump_pongs(c, &pongs, -1, 3000);
    assert_true(rc != 0 || !pt_client_connected(c));
    assert_int_equal(pongs, 1);
    end = mono_ms() + 2000;
    const char *gap = "saw a gap in our messages";
    while (pt_test_log_count(&srv, gap) == gaps_before && mono_ms() < end) usleep(20000);
    assert_int_equal(pt_test_log_count(&srv, gap), gaps_before + 1);
    pt_client_free(c);
    close(ctl[0]);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

static int group_setup(void **state)
{
    (void)state;
    const char *const extra[] = {"--handshake-timeout", "2", NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    assert_int_equal(pt_fingerprint_parse(server_pk, srv.fingerprint), 0);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pt_test_server_stop(&srv);
    return 0;
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_downgrade),
        cmocka_unit_test(test_static_swap),
        cmocka_unit_test(test_low_order_points),
        cmocka_unit_test(test_impersonation),
        cmocka_unit_test(test_olm_megolm_confusion),
        cmocka_unit_test(test_lost_record),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
