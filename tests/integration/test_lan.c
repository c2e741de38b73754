/*
 * LAN discovery and serverless chat (issue 7) on a real network: network namespaces
 * joined by a bridge, made and removed by this test, with a real packtrackd and real
 * packtrack processes in them.
 *
 *   NSsw  the bridge (a namespace of its own, so the host's network is not touched)
 *   NSh1  10.213.0.1  packtrackd (discovery on UDP 7001)
 *   NSh2  10.213.0.2  alice
 *   NSh3  10.213.0.3  bob
 *   NSh4  10.213.0.4  mallory: forged answers and a flood, made here with src/discovery
 *
 * Needs root (CI runs as root); elsewhere it is skipped with a message.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "netns.h"
#include "testutil.h"
#include "crypto/pt_crypto.h"
#include "discovery/pt_disc.h"

#define OUT_MAX 65536
#define SUBNET "10.213.0."

static int host_of[3] = {2, 3, 4}; /* where alice, bob and carol run */
static char dir[256], homes[3][300];
static char server_fp[80];
static pid_t server_pid = -1;
static const char *server_arg = SUBNET "1:7000";
enum { SW, H1, H2, H3, H4, H5, H6 };
enum { ALICE, BOB, CAROL };

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static pt_netns net;

/* In a child: moves into namespace h. */
static void enter(int h) { pt_netns_enter(&net, h); }

/* ---- processes ------------------------------------------------------------------------------------ */

static const char *env_path(const char *name)
{
    const char *p = getenv(name);
    if (!p) fail_msg("%s is not set (run through ctest)", name);
    return p;
}

/* Starts packtrack ARGS in the namespace of `who`; stdout to out_file (or /dev/null). */
static pid_t spawn(int who, const char *out_file, const char *const *args)
{
    const char *argv[40] = {env_path("PT_PACKTRACK"), "--home", homes[who], "--server", server_arg, "--timeout", "5"};
    int n = 7;
    for (int i = 0; args[i]; i++) argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        enter(host_of[who]);
        int fd = open(out_file ? out_file : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int nul = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        dup2(nul, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int reap(pid_t pid, int max_ms)
{
    int st;
    for (int waited = 0; waited < max_ms; waited += 50) {
        if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        sleep_ms(50);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    fail_msg("a packtrack process did not finish in %d ms", max_ms);
    return -1;
}

/* Runs packtrack ARGS as `who` and returns its exit status; stdout in out. */
static int runv(int who, char *out, const char *const *args)
{
    char file[400];
    snprintf(file, sizeof file, "%s/out.%d", dir, who);
    pid_t pid = spawn(who, file, args);
    int rc = reap(pid, 30000);
    size_t len = 0;
    char *s = pt_test_read_file(file, &len);
    snprintf(out, OUT_MAX, "%s", s ? s : "");
    free(s);
    return rc;
}

#define RUN(rc, who, out, ...)                                                                     \
    do {                                                                                           \
        const char *const a_[] = {__VA_ARGS__, NULL};                                              \
        (rc) = runv((who), (out), a_);                                                             \
    } while (0)
#define OK(who, out, ...)                                                                          \
    do {                                                                                           \
        int rc_;                                                                                   \
        RUN(rc_, who, out, __VA_ARGS__);                                                           \
        if (rc_ != 0) fail_msg("packtrack %s exited %d: %s", #__VA_ARGS__, rc_, out);              \
    } while (0)
#define SPAWN(who, file, ...) spawn((who), (file), (const char *const[]){__VA_ARGS__, NULL})

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

static char out[OUT_MAX];

/* `to` listens (--lan recv) while `from` sends `text` directly (exit 0); `to` must
 * show it exactly once. Returns the send's duration in ms. */
static uint64_t direct_send(int from, int to, const char *to_name, const char *text)
{
    static const char *const names[] = {"alice", "bob", "carol"};
    char file[400], line[200];
    snprintf(file, sizeof file, "%s/%s.direct", dir, names[to]);
    pid_t rx = SPAWN(to, file, "--lan", "recv", "--wait", "20");
    sleep_ms(1000);
    uint64_t t0 = mono_ms();
    OK(from, out, "--lan", "send", to_name, text);
    uint64_t took = mono_ms() - t0;
    assert_int_equal(reap(rx, 25000), 0);
    size_t len;
    char *got = pt_test_read_file(file, &len);
    assert_non_null(got);
    snprintf(line, sizeof line, "%s: %s", names[from], text);
    if (count(got, line) != 1) fail_msg("%s got: %s", names[to], got);
    free(got);
    return took;
}

static void server_start_on(const char *listen)
{
    char data[300], ready[400];
    snprintf(data, sizeof data, "%s/server", dir);
    snprintf(ready, sizeof ready, "%s/ready", dir);
    mkdir(data, 0700);
    unlink(ready);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        enter(H1);
        char log[400];
        snprintf(log, sizeof log, "%s/server.log", dir);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fd, 2);
        execl(env_path("PT_PACKTRACKD"), "packtrackd", "--listen", listen, "--data", data, "--ready-file",
              ready, "--discovery-port", "7001", (char *)NULL);
        _exit(127);
    }
    server_pid = pid;
    for (int i = 0; i < 200; i++) {
        size_t len;
        char *s = pt_test_read_file(ready, &len);
        if (s && strchr(s, '\n')) {
            char *fp = strchr(s, '\n') + 1;
            fp[strcspn(fp, "\n")] = 0;
            snprintf(server_fp, sizeof server_fp, "%s", fp);
            free(s);
            if (server_fp[0]) return;
        }
        free(s);
        sleep_ms(50);
    }
    fail_msg("packtrackd did not get ready in its namespace");
}

static void server_start(void) { server_start_on("0.0.0.0:7000"); }

static void server_stop(void)
{
    if (server_pid <= 0) return;
    kill(server_pid, SIGTERM);
    int st;
    waitpid(server_pid, &st, 0);
    server_pid = -1;
}

/* ---- mallory: forged packets from h4, made with src/discovery ---------------------------------- */

/* Waits (up to wait_ms) for a BPM on UDP 7001 and answers it with a BPR that claims to
 * be `victim` but is signed by a key of our own; also announces the same lie in a BPM
 * of our own. Exit status: the number of forged answers sent (0: saw no BPM). */
static int mallory_forge(const uint8_t victim[16], int wait_ms)
{
    enter(H4);
    if (pt_crypto_init() != 0) return 0;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(PT_DISC_PORT)};
    if (bind(fd, (struct sockaddr *)&me, sizeof me) != 0) return 0;
    uint8_t pk[32], sk[64];
    if (pt_ed25519_keypair(pk, sk) != 0) return 0;
    int sent = 0;
    uint64_t end = mono_ms() + (uint64_t)wait_ms;
    while (mono_ms() < end && sent < 3) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0) continue;
        uint8_t buf[512];
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
        pt_disc_pkt q;
        if (n <= 0 || pt_disc_decode(buf, (size_t)n, &q) != 0 || q.type != PT_DISC_BPM) continue;
        if (from.sin_addr.s_addr == inet_addr(SUBNET "4")) continue;
        for (uint8_t type = PT_DISC_BPR; type >= PT_DISC_BPM; type--) {
            pt_disc_pkt r = {.type = type, .flags = type == PT_DISC_BPM ? PT_DISC_FLAG_RECORD : 0};
            memcpy(r.nonce, q.nonce, 16);
            memcpy(r.rec.user_id, victim, 16);
            pt_random(r.rec.device, 32);
            uint16_t port;
            struct sockaddr_in mine = {.sin_family = AF_INET, .sin_addr.s_addr = inet_addr(SUBNET "4")};
            if (pt_disc_addr_from_sockaddr((struct sockaddr *)&mine, r.rec.addr, &port) != 0) return sent;
            r.rec.port = 7000;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            r.rec.ts_ms = (uint64_t)ts.tv_sec * 1000;
            size_t len;
            if (pt_disc_record_sign(&r.rec, type, r.nonce, sk) != 0 || pt_disc_encode(&r, buf, sizeof buf, &len) != 0)
                return sent;
            struct sockaddr_in to = from;
            if (type == PT_DISC_BPM) to.sin_port = htons(PT_DISC_PORT);
            if (sendto(fd, buf, len, 0, (struct sockaddr *)&to, sizeof to) == (ssize_t)len && type == PT_DISC_BPR) sent++;
        }
    }
    return sent;
}

typedef struct flood_result {
    unsigned sent, replies;
    unsigned long bytes_out, bytes_in, elapsed_ms;
} flood_result;

/* COUNT anonymous BPM to h3's port 7001 as fast as one socket sends, then 1.5 s of
 * listening; the figures go to fd. */
static void mallory_flood(int out_fd, unsigned count_)
{
    enter(H4);
    flood_result r = {0};
    if (pt_crypto_init() != 0) _exit(1);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(PT_DISC_PORT),
                             .sin_addr.s_addr = inet_addr(SUBNET "3")};
    uint64_t start = mono_ms();
    uint8_t buf[512];
    for (unsigned i = 0; i < count_; i++) {
        pt_disc_pkt q = {.type = PT_DISC_BPM};
        pt_random(q.nonce, 16);
        size_t len;
        if (pt_disc_encode(&q, buf, sizeof buf, &len) != 0) _exit(1);
        if (sendto(fd, buf, len, 0, (struct sockaddr *)&to, sizeof to) == (ssize_t)len) {
            r.sent++;
            r.bytes_out += len;
        }
        for (;;) { /* replies while we go */
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0) break;
            r.replies++;
            r.bytes_in += (unsigned long)n;
        }
    }
    uint64_t end = mono_ms() + 1500;
    while (mono_ms() < end) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 50) <= 0) continue;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            r.replies++;
            r.bytes_in += (unsigned long)n;
        }
    }
    r.elapsed_ms = (unsigned long)(mono_ms() - start);
    if (write(out_fd, &r, sizeof r) != (ssize_t)sizeof r) _exit(1);
    _exit(0);
}

/* ---- setup ---------------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    const char *why;
    if (!pt_netns_possible(&why)) {
        fprintf(stderr, "test_lan: %s: skipped\n", why);
        return 0;
    }
    if (!pt_netns_make(&net, "pt", 6, SUBNET, 1u << H5 | 1u << H6)) {
        fprintf(stderr, "test_lan: cannot build the namespaces\n");
        return -1;
    }
    snprintf(dir, sizeof dir, "%s", pt_test_tmpdir("lan"));
    for (int i = 0; i < 3; i++) snprintf(homes[i], sizeof homes[i], "%s/%s", dir, (const char *[]){"alice", "bob", "carol"}[i]);
    setenv("PACKTRACK_PASSWORD", "lan test password", 1);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    server_stop();
    if (net.up) pt_netns_destroy(&net);
    return 0;
}

#define NEED_NET()                                                                                 \
    do {                                                                                           \
        if (!net.up) skip();                                                                       \
    } while (0)


/* Two friends on the server, one message through it (the sessions exist). */
static void test_friends_through_server(void **state)
{
    (void)state;
    NEED_NET();
    server_start();
    OK(ALICE, out, "init", "--user", "alice");
    OK(BOB, out, "init", "--user", "bob");
    OK(CAROL, out, "init", "--user", "carol"); /* never meets alice through the server */
    OK(ALICE, out, "friend", "add", "bob");
    OK(BOB, out, "friend", "accept", "alice");
    OK(ALICE, out, "send", "bob", "through the server");
    OK(BOB, out, "recv");
    assert_int_equal(count(out, "through the server"), 1);
}

/* BSM from alice's host: the server on h1 answers with its key. */
static void test_discovers_server(void **state)
{
    (void)state;
    NEED_NET();
    OK(ALICE, out, "nearby", "--json", "--wait", "2");
    if (!strstr(out, "\"kind\":\"server\"") || !strstr(out, "\"addr\":\"" SUBNET "1\"") || !strstr(out, "\"port\":7000"))
        fail_msg("no server in: %s", out);
    if (!strstr(out, server_fp)) fail_msg("the server's key %s is not in: %s", server_fp, out);
}

/* S2WMP REG/LP: alice (on the LAN) registers her direct address with the server; bob,
 * whose broadcasts cannot reach her (another discovery port), still learns it from the
 * server, because they are friends. */
static void test_lookup_beyond_broadcast(void **state)
{
    (void)state;
    NEED_NET();
    char alice_out[400];
    snprintf(alice_out, sizeof alice_out, "%s/alice.reg", dir);
    pid_t alice = SPAWN(ALICE, alice_out, "--lan", "recv", "--wait", "15");
    sleep_ms(1500);
    OK(BOB, out, "--lan", "--discovery-port", "7999", "nearby", "--json", "--wait", "1");
    kill(alice, SIGTERM);
    reap(alice, 10000);
    if (!strstr(out, "\"kind\":\"friend\",\"name\":\"alice\"") || !strstr(out, "\"addr\":\"" SUBNET "2\""))
        fail_msg("bob did not learn alice's address from the server: %s", out);
}

/* The server stops: alice and bob find each other by broadcast, both ways, and what
 * waited for bob while he was away reaches him once he appears. */
static void test_serverless_both_ways(void **state)
{
    (void)state;
    NEED_NET();
    server_stop();
    int rc;
    RUN(rc, ALICE, out, "--lan", "send", "bob", "queued while bob was away");
    assert_int_equal(rc, 4); /* kept: no server, bob not nearby */

    char bob_out[400], alice_out[400];
    snprintf(bob_out, sizeof bob_out, "%s/bob.recv", dir);
    snprintf(alice_out, sizeof alice_out, "%s/alice.recv", dir);
    pid_t bob = SPAWN(BOB, bob_out, "--lan", "recv", "--wait", "20");
    sleep_ms(500);
    pid_t alice = SPAWN(ALICE, alice_out, "--lan", "recv", "--wait", "8"); /* she finds him, it goes */
    assert_int_equal(reap(bob, 25000), 0);
    size_t len;
    char *s = pt_test_read_file(bob_out, &len);
    assert_non_null(s);
    if (count(s, "alice: queued while bob was away") != 1) fail_msg("bob got: %s", s);
    free(s);
    kill(alice, SIGTERM);
    reap(alice, 10000);

    /* presence on the LAN: bob (listening) is nearby in alice's friend list */
    bob = SPAWN(BOB, bob_out, "--lan", "recv", "--wait", "8");
    sleep_ms(800);
    OK(ALICE, out, "--lan", "friend", "list");
    kill(bob, SIGTERM);
    reap(bob, 10000);
    if (!strstr(out, "bob\tnearby\t")) fail_msg("bob is not nearby in alice's list: %s", out);
    OK(ALICE, out, "--lan", "friend", "list"); /* and no longer once he stopped */
    if (strstr(out, "bob\tnearby\t")) fail_msg("bob still nearby after he left: %s", out);

    /* each way while the other listens */
    uint64_t took = direct_send(BOB, ALICE, "alice", "straight to alice");
    fprintf(stderr, "test_lan: a direct send took %llu ms\n", (unsigned long long)took);
    direct_send(ALICE, BOB, "bob", "straight to bob");
}

/* The server comes back: the rows delivered directly go to it too (for other devices),
 * and nobody sees any message twice. */
static void test_server_back_no_duplicates(void **state)
{
    (void)state;
    NEED_NET();
    server_start();
    OK(ALICE, out, "recv");
    OK(BOB, out, "recv");
    OK(ALICE, out, "recv");
    assert_int_equal(count(out, "straight"), 0);
    OK(BOB, out, "history", "alice");
    assert_int_equal(count(out, "queued while bob was away"), 1);
    assert_int_equal(count(out, "straight to bob"), 1);
    assert_int_equal(count(out, "straight to alice"), 1);
    OK(ALICE, out, "history", "bob");
    assert_int_equal(count(out, "straight to alice"), 1);
    assert_int_equal(count(out, "queued while bob was away"), 1);
    server_stop();
}

/* S2WMP start-up: the server moved to another port. A client that cannot reach it where
 * it was asks the LAN (BSM), recognises its pinned key in a BSR and uses it there. */
static void test_server_found_by_broadcast(void **state)
{
    (void)state;
    NEED_NET();
    server_start_on("0.0.0.0:7100");
    OK(ALICE, out, "send", "bob", "found our server by broadcast"); /* configured: :7000 */
    OK(BOB, out, "recv");
    assert_int_equal(count(out, "alice: found our server by broadcast"), 1);
    /* alice pinned the key under the new address once: the next start finds it there
     * and adds no line (known_servers held the configured address and the new one) */
    OK(ALICE, out, "send", "bob", "and again");
    char path[400];
    snprintf(path, sizeof path, "%s/known_servers", homes[ALICE]);
    size_t len = 0;
    char *pins = pt_test_read_file(path, &len);
    assert_non_null(pins);
    fprintf(stderr, "test_lan: alice's known_servers:\n%s", pins);
    assert_int_equal(count(pins, "\n"), 2);
    assert_int_equal(count(pins, SUBNET "1:7000 "), 1);
    assert_int_equal(count(pins, ":7100 "), 1);
    free(pins);
    server_stop();
}

/* Mallory answers alice's broadcast claiming to be bob (signed by another key) and
 * announces the same: alice lists someone nearby, never bob. */
static void test_spoofed_bpr_ignored(void **state)
{
    (void)state;
    NEED_NET();
    /* bob's user id, from his whoami */
    OK(BOB, out, "--no-lan", "whoami");
    char *idl = strstr(out, "user id:");
    assert_non_null(idl);
    char hex[33];
    assert_int_equal(sscanf(idl, "user id: %32s", hex), 1);
    uint8_t victim[16];
    assert_int_equal(pt_hex_decode(victim, 16, hex), 0);

    pid_t m = fork();
    assert_true(m >= 0);
    if (m == 0) _exit(mallory_forge(victim, 6000));
    sleep_ms(300);
    OK(ALICE, out, "nearby", "--json", "--wait", "3");
    int st;
    waitpid(m, &st, 0);
    int forged = WIFEXITED(st) ? WEXITSTATUS(st) : 0;
    fprintf(stderr, "test_lan: mallory sent %d forged answers; alice saw:\n%s", forged, out);
    assert_true(forged >= 1);
    if (strstr(out, "\"kind\":\"friend\"") || strstr(out, "\"name\":\"bob\""))
        fail_msg("a forged record was believed: %s", out);
    if (!strstr(out, "\"kind\":\"stranger\"") || !strstr(out, SUBNET "4"))
        fail_msg("mallory is not listed as someone nearby: %s", out);
}

/* A flood of BPM from one host: bob answers a few, then nothing; never more bytes out
 * than came in. */
static void test_bpm_flood_rate_limited(void **state)
{
    (void)state;
    NEED_NET();
    char bob_out[400];
    snprintf(bob_out, sizeof bob_out, "%s/bob.flood", dir);
    pid_t bob = SPAWN(BOB, bob_out, "--lan", "recv", "--wait", "10");
    sleep_ms(1000);
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t m = fork();
    assert_true(m >= 0);
    if (m == 0) {
        close(p[0]);
        mallory_flood(p[1], 2000);
    }
    close(p[1]);
    flood_result r = {0};
    ssize_t got = read(p[0], &r, sizeof r);
    close(p[0]);
    int st;
    waitpid(m, &st, 0);
    kill(bob, SIGTERM);
    reap(bob, 10000);
    assert_int_equal(got, (ssize_t)sizeof r);
    unsigned long allowed = PT_DISC_LIMIT_BURST + PT_DISC_LIMIT_PER_S * (r.elapsed_ms / 1000 + 1);
    fprintf(stderr, "test_lan: flood: sent %u (%lu bytes) in %lu ms, replies %u (%lu bytes), allowed %lu\n", r.sent,
            r.bytes_out, r.elapsed_ms, r.replies, r.bytes_in, allowed);
    assert_true(r.sent >= 1000);
    assert_true(r.replies >= 1);        /* bob does answer */
    assert_true(r.replies <= allowed);  /* but only a few */
    assert_true(r.bytes_in <= r.bytes_out);
    assert_true(r.bytes_in <= (unsigned long)r.replies * PT_DISC_BPR_LEN);
}

/* A segment with no IPv4 at all: alice and bob find each other by IPv6 link-local
 * multicast and chat over link-local addresses. */
static void test_ipv6_link_local(void **state)
{
    (void)state;
    NEED_NET();
    if (access("/proc/sys/net/ipv6", F_OK) != 0) {
        fprintf(stderr, "test_lan: this kernel has no IPv6 (/proc/sys/net/ipv6): the IPv6 case is skipped\n");
        skip();
    }
    host_of[ALICE] = H5;
    host_of[BOB] = H6;
    direct_send(ALICE, BOB, "bob", "over IPv6 link-local");
    OK(ALICE, out, "--lan", "nearby", "--json", "--wait", "1");
    host_of[ALICE] = H2;
    host_of[BOB] = H3;
}

/* The user's fingerprint, from whoami. */
static void fingerprint_of(int who, char fp[128])
{
    OK(who, out, "--no-lan", "whoami");
    char *l = strstr(out, "fingerprint:");
    assert_non_null(l);
    assert_int_equal(sscanf(l, "fingerprint: %127s", fp), 1);
}

/* Strangers become friends without a server: carol introduces herself, alice compares
 * the fingerprint and asks, carol accepts, and they chat directly; when the server is
 * back it learns the friendship and carries their messages too. */
static void test_friends_met_on_lan(void **state)
{
    (void)state;
    NEED_NET();
    char carol_fp[128], carol_out[400], alice_out[400];
    fingerprint_of(CAROL, carol_fp);
    snprintf(carol_out, sizeof carol_out, "%s/carol.recv", dir);
    snprintf(alice_out, sizeof alice_out, "%s/alice.recv2", dir);
    pid_t carol = SPAWN(CAROL, carol_out, "--lan", "recv", "--wait", "30");
    sleep_ms(1000);
    int rc;
    /* a fingerprint that is not carol's: nothing is sent */
    RUN(rc, ALICE, out, "friend", "add", "carol", "--nearby", "--expect",
        "00000000:00000000:00000000:00000000:00000000:00000000:00000000:00000000");
    assert_int_equal(rc, 1);
    OK(ALICE, out, "friend", "add", "carol", "--nearby", "--expect", carol_fp, "--note", "hi from the cafe");
    kill(carol, SIGTERM);
    reap(carol, 10000);
    OK(CAROL, out, "--no-lan", "friend", "list");
    if (!strstr(out, "alice\t") || !strstr(out, "request received")) fail_msg("carol's contacts: %s", out);
    OK(ALICE, out, "--no-lan", "friend", "list");
    if (!strstr(out, "carol\t") || !strstr(out, "request sent")) fail_msg("alice's contacts: %s", out);

    pid_t alice = SPAWN(ALICE, alice_out, "--lan", "recv", "--wait", "25");
    sleep_ms(1000);
    OK(CAROL, out, "--lan", "friend", "accept", "alice");
    OK(CAROL, out, "--lan", "send", "alice", "hello, new friend");
    assert_int_equal(reap(alice, 30000), 0);
    size_t len;
    char *s = pt_test_read_file(alice_out, &len);
    assert_non_null(s);
    if (count(s, "carol: hello, new friend") != 1) fail_msg("alice got: %s", s);
    free(s);
    OK(ALICE, out, "--no-lan", "friend", "list");
    if (!strstr(out, "carol\t") || strstr(out, "request")) fail_msg("alice's contacts after the accept: %s", out);

    /* the server learns the friendship from both, then routes between them */
    server_start();
    OK(ALICE, out, "--no-lan", "recv");
    OK(CAROL, out, "--no-lan", "recv");
    OK(ALICE, out, "--no-lan", "send", "carol", "through the server now");
    OK(CAROL, out, "--no-lan", "recv");
    assert_int_equal(count(out, "alice: through the server now"), 1);
    OK(CAROL, out, "--no-lan", "history", "alice");
    assert_int_equal(count(out, "hello, new friend"), 1);
    server_stop();
}

/* Two profiles on one machine share UDP 7001: the loopback broadcast reaches both. */
static void test_same_host(void **state)
{
    (void)state;
    NEED_NET();
    host_of[BOB] = H2;
    direct_send(ALICE, BOB, "bob", "on the same machine");
    host_of[BOB] = H3;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_friends_through_server),
        cmocka_unit_test(test_discovers_server),
        cmocka_unit_test(test_lookup_beyond_broadcast),
        cmocka_unit_test(test_serverless_both_ways),
        cmocka_unit_test(test_server_back_no_duplicates),
        cmocka_unit_test(test_server_found_by_broadcast),
        cmocka_unit_test(test_spoofed_bpr_ignored),
        cmocka_unit_test(test_bpm_flood_rate_limited),
        cmocka_unit_test(test_friends_met_on_lan),
        cmocka_unit_test(test_ipv6_link_local),
        cmocka_unit_test(test_same_host),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
