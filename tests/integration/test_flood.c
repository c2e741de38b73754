/*
 * Slowloris and a connection flood from another host (issue 11's adversary list),
 * in network namespaces made here: h1 runs packtrackd, h2 attacks, h3 is a
 * legitimate client measuring the round trip of pings before and during the attack.
 *
 * test_slowloris_and_flood: one attacker address. Checks: every legitimate ping is
 * answered during the attack; the attacker holds no more connections than the
 * per-address cap, and none beyond the handshake timeout.
 *
 * test_botnet_slowloris: a botnet, BOT_ADDRS source addresses on h2, each keeping
 * BOT_PER_ADDR slow handshakes open (above the per-address cap; a socket the server
 * closes is opened again at once), far more than --max-connections. Checks: the
 * legitimate client connects at its first attempt and every ping is answered (the
 * server makes room by closing the oldest handshake, never an authenticated
 * connection); the server never holds more than --max-connections (+ slack); no
 * attacker socket outlives the handshake timeout; the server is alive after.
 *
 * The latencies are printed (a figure, not a check: the machine is shared).
 * Needs root; skipped otherwise.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/pt_client.h"
#include "crypto/pt_crypto.h"
#include "netns.h"
#include "server/pt_server.h"
#include "testutil.h"

#define SUBNET "10.214.0."
#define SLOW_CONNS 300  /* slowloris sockets the attacker opens */
#define PER_IP 64       /* the server's cap for the test */
#define PINGS 200
#define MAX_CONNS 512     /* the server's --max-connections */
#define HS_TIMEOUT_MS 2000 /* the server's --handshake-timeout */
#define BOT_ADDRS 32      /* the botnet's source addresses on h2: SUBNET.100 .. */
#define BOT_FIRST 100
#define BOT_PER_ADDR 80   /* slow sockets per address, above PER_IP */
#define BOT_SECS 12
#define BOT_REOPEN 128    /* sockets the botnet opens again per round (20 ms) at most */

static pt_netns net;
static pid_t server_pid = -1;
static char dir[256], server_fp[80];

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void on_pong(void *ud, const pt_sess_event *ev)
{
    if (ev->type == PT_SESS_EV_PONG) *(bool *)ud = true;
}

typedef struct lat {
    unsigned sent, answered;
    unsigned long p50_us, p99_us;
    unsigned connect_attempts; /* pt_client_connect calls until one succeeded (or gave up) */
    unsigned long connect_ms;  /* from the first attempt to the channel being up */
    int connected;
} lat;

static int cmp_ul(const void *a, const void *b)
{
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    return x < y ? -1 : x > y;
}

/* In h3: connects, then PINGS pings one at a time; the figures go to fd. */
static void legit_client(int fd, int delay_ms)
{
    pt_netns_enter(&net, 3);
    if (delay_ms) usleep((useconds_t)delay_ms * 1000);
    lat r = {0};
    uint8_t dsk[32];
    pt_random(dsk, 32);
    char home[300];
    snprintf(home, sizeof home, "%s/legit-%d", dir, delay_ms);
    mkdir(home, 0700);
    pt_client_config cfg = {.home = home, .server_fingerprint = server_fp, .device_sk = dsk, .timeout_ms = 5000};
    int err = 0;
    pt_client *c = pt_client_new(&cfg, &err);
    static unsigned long us[PINGS];
    /* a refused connection is tried again after 100 ms, for 10 s: what a starved
     * client sees is how many attempts it took */
    uint64_t c0 = mono_ms();
    while (c && !r.connected && mono_ms() - c0 < 10000) {
        r.connect_attempts++;
        if (pt_client_connect(c, SUBNET "1", 7000) == 0) r.connected = 1;
        else usleep(100 * 1000);
    }
    r.connect_ms = (unsigned long)(mono_ms() - c0);
    if (r.connected) {
        for (int i = 0; i < PINGS; i++) {
            uint64_t id, t0 = mono_us();
            bool pong = false;
            r.sent++;
            if (pt_client_ping(c, i, &id) != 0) break;
            uint64_t end = mono_ms() + 3000;
            while (!pong && mono_ms() < end)
                if (pt_client_pump(c, 50, on_pong, &pong) != 0) break;
            if (!pong) break;
            us[r.answered++] = (unsigned long)(mono_us() - t0);
            usleep(10 * 1000);
        }
    }
    if (r.answered) {
        qsort(us, r.answered, sizeof *us, cmp_ul);
        r.p50_us = us[r.answered / 2];
        r.p99_us = us[(r.answered * 99) / 100 >= r.answered ? r.answered - 1 : (r.answered * 99) / 100];
    }
    pt_client_free(c);
    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r) _exit(1);
    _exit(0);
}

typedef struct attack {
    unsigned opened, refused, open_at_1s, open_at_end, flood_connects;
} attack;

/* In h2: SLOW_CONNS sockets each sending the hello one byte every 400 ms, plus a
 * connect/close flood, for `secs`; counts what the server lets it hold. */
static void attacker(int fd, int secs)
{
    pt_netns_enter(&net, 2);
    attack a = {0};
    static int s[SLOW_CONNS];
    static size_t sent[SLOW_CONNS];
    static const uint8_t hello[] = {'P', 'T', 'K', 1, 1, 1, 1};
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(7000)};
    inet_pton(AF_INET, SUBNET "1", &sa.sin_addr);
    for (int i = 0; i < SLOW_CONNS; i++) {
        s[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (connect(s[i], (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
            close(s[i]);
            s[i] = -1;
            a.refused++;
            continue;
        }
        a.opened++;
    }
    uint64_t start = mono_ms(), next_byte = start;
    bool sampled = false;
    while (mono_ms() - start < (uint64_t)secs * 1000) {
        /* the flood: connect and close as fast as one socket goes */
        for (int k = 0; k < 50; k++) {
            int f = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (connect(f, (struct sockaddr *)&sa, sizeof sa) == 0 || errno == EINPROGRESS) a.flood_connects++;
            close(f);
        }
        if (mono_ms() >= next_byte) { /* the slow part: one more hello byte each */
            next_byte += 400;
            for (int i = 0; i < SLOW_CONNS; i++)
                if (s[i] >= 0 && sent[i] < sizeof hello && send(s[i], hello + sent[i], 1, MSG_NOSIGNAL) == 1) sent[i]++;
        }
        /* which of ours did the server close? */
        for (int i = 0; i < SLOW_CONNS; i++) {
            if (s[i] < 0) continue;
            char b[64];
            ssize_t n = recv(s[i], b, sizeof b, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINPROGRESS &&
                           errno != ENOTCONN)) {
                close(s[i]);
                s[i] = -1;
            }
        }
        if (!sampled && mono_ms() - start >= 1000) {
            sampled = true;
            for (int i = 0; i < SLOW_CONNS; i++) a.open_at_1s += s[i] >= 0;
        }
        usleep(20 * 1000);
    }
    for (int i = 0; i < SLOW_CONNS; i++) a.open_at_end += s[i] >= 0;
    if (write(fd, &a, sizeof a) != (ssize_t)sizeof a) _exit(1);
    _exit(0);
}

typedef struct botnet {
    unsigned sockets;            /* slow sockets it keeps (BOT_ADDRS x BOT_PER_ADDR, or what the fd limit allows) */
    unsigned opened;             /* connects started, first ones and reopenings */
    unsigned closed_by_server;   /* sockets the server closed (refused, evicted or timed out) */
    unsigned long max_life_ms;   /* the longest a socket stayed connected before the server closed it */
    unsigned open_at_end;        /* still connected when the attack stopped */
    unsigned long oldest_at_end_ms;
    unsigned not_started;        /* open at the end with no hello byte sent: still connecting
                                    (the server at its cap stops accepting and the kernel's
                                    backlog fills), or opened since the last 400 ms tick */
} botnet;

/* In h2, from BOT_ADDRS source addresses: keeps BOT_PER_ADDR sockets per address
 * sending the hello one byte every 400 ms; a socket the server closes is opened
 * again (BOT_REOPEN per round at most), for `secs`. */
static void botnet_attack(int fd, int secs)
{
    pt_netns_enter(&net, 2);
    enum { N = BOT_ADDRS * BOT_PER_ADDR };
    struct rlimit rl = {N + 64, N + 64};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(1);
    botnet b = {0};
    b.sockets = rl.rlim_cur > 64 + N ? N : (unsigned)(rl.rlim_cur - 64);
    static int s[N], idx[N];
    static uint64_t born[N]; /* connected: when its first hello byte went (0: not yet) */
    static size_t sent[N];
    static struct pollfd pf[N];
    static const uint8_t hello[] = {'P', 'T', 'K', 1, 1, 1, 1};
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(7000)};
    inet_pton(AF_INET, SUBNET "1", &to.sin_addr);
    for (unsigned i = 0; i < b.sockets; i++) s[i] = -1;
    uint64_t start = mono_ms(), next_byte = start + 400;
    bool first = true;
    while (mono_ms() - start < (uint64_t)secs * 1000) {
        uint64_t now = mono_ms();
        unsigned budget = first ? b.sockets : BOT_REOPEN;
        first = false;
        for (unsigned i = 0; i < b.sockets && budget; i++) {
            if (s[i] >= 0) continue;
            budget--;
            char src[32];
            snprintf(src, sizeof src, SUBNET "%u", BOT_FIRST + i / BOT_PER_ADDR);
            struct sockaddr_in from = {.sin_family = AF_INET};
            inet_pton(AF_INET, src, &from.sin_addr);
            int k = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (k < 0) break;
            if (bind(k, (struct sockaddr *)&from, sizeof from) != 0 ||
                (connect(k, (struct sockaddr *)&to, sizeof to) != 0 && errno != EINPROGRESS)) {
                close(k);
                continue;
            }
            s[i] = k;
            born[i] = 0;
            sent[i] = 0;
            b.opened++;
        }
        if (now >= next_byte) { /* the slow part: one more hello byte each */
            next_byte += 400;
            for (unsigned i = 0; i < b.sockets; i++)
                if (s[i] >= 0 && sent[i] < sizeof hello && send(s[i], hello + sent[i], 1, MSG_NOSIGNAL) == 1 &&
                    sent[i]++ == 0)
                    born[i] = now;
        }
        /* which of ours did the server close? */
        nfds_t n = 0;
        for (unsigned i = 0; i < b.sockets; i++)
            if (s[i] >= 0) {
                pf[n] = (struct pollfd){.fd = s[i], .events = POLLIN | POLLRDHUP};
                idx[n++] = (int)i;
            }
        if (poll(pf, n, 20) <= 0) continue;
        now = mono_ms();
        for (nfds_t j = 0; j < n; j++) {
            if (!pf[j].revents) continue;
            int i = idx[j];
            char buf[256];
            ssize_t r = recv(s[i], buf, sizeof buf, MSG_DONTWAIT);
            if (r > 0 && !(pf[j].revents & (POLLRDHUP | POLLHUP | POLLERR))) continue; /* the server's hello */
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !(pf[j].revents & (POLLHUP | POLLERR)))
                continue;
            if (born[i] && now - born[i] > b.max_life_ms) b.max_life_ms = (unsigned long)(now - born[i]);
            b.closed_by_server++;
            close(s[i]);
            s[i] = -1;
        }
    }
    uint64_t end = mono_ms();
    for (unsigned i = 0; i < b.sockets; i++)
        if (s[i] >= 0 && !born[i]) {
            b.not_started++;
        } else if (s[i] >= 0) {
            b.open_at_end++;
            if (end - born[i] > b.oldest_at_end_ms) b.oldest_at_end_ms = (unsigned long)(end - born[i]);
        }
    if (write(fd, &b, sizeof b) != (ssize_t)sizeof b) _exit(1);
    _exit(0);
}

/* Sockets the server process holds now (its fd table). */
static int server_sockets(void)
{
    char path[64], link[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)server_pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char p[400];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        ssize_t l = readlink(p, link, sizeof link - 1);
        if (l > 0) {
            link[l] = 0;
            n += strncmp(link, "socket:", 7) == 0;
        }
    }
    closedir(d);
    return n;
}

static int group_setup(void **state)
{
    (void)state;
    const char *why;
    if (!pt_netns_possible(&why)) {
        fprintf(stderr, "test_flood: %s: skipped\n", why);
        return 0;
    }
    if (!pt_netns_make(&net, "pf", 3, SUBNET, 0)) return -1;
    if (!pt_netns_add_addrs(&net, 2, SUBNET, BOT_FIRST, BOT_ADDRS)) return -1;
    snprintf(dir, sizeof dir, "%s", pt_test_tmpdir("flood"));
    char data[300], ready[400], log[400];
    snprintf(data, sizeof data, "%s/server", dir);
    snprintf(ready, sizeof ready, "%s/ready", dir);
    snprintf(log, sizeof log, "%s/server.log", dir);
    mkdir(data, 0700);
    pid_t pid = fork();
    if (pid == 0) {
        pt_netns_enter(&net, 1);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fd, 2);
        char perip[16], maxc[16], hs[16];
        snprintf(perip, sizeof perip, "%d", PER_IP);
        snprintf(maxc, sizeof maxc, "%d", MAX_CONNS);
        snprintf(hs, sizeof hs, "%d", HS_TIMEOUT_MS / 1000);
        execl(getenv("PT_PACKTRACKD"), "packtrackd", "--listen", "0.0.0.0:7000", "--data", data, "--ready-file", ready,
              "--no-discovery", "--handshake-timeout", hs, "--max-conns-per-ip", perip, "--max-connections", maxc,
              (char *)NULL);
        _exit(127);
    }
    server_pid = pid;
    for (int i = 0; i < 200; i++) {
        size_t len;
        char *s = pt_test_read_file(ready, &len);
        char *nl = s ? strchr(s, '\n') : NULL;
        if (nl && strchr(nl + 1, '\n')) {
            snprintf(server_fp, sizeof server_fp, "%.*s", (int)strcspn(nl + 1, "\n"), nl + 1);
            free(s);
            return 0;
        }
        free(s);
        usleep(50 * 1000);
    }
    return -1;
}

static int group_teardown(void **state)
{
    (void)state;
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
    }
    if (net.up) pt_netns_destroy(&net);
    return 0;
}

static void test_slowloris_and_flood(void **state)
{
    (void)state;
    if (!net.up) skip();
    int lp[2], ap[2];
    assert_int_equal(pipe(lp), 0);
    /* before the attack */
    pid_t c = fork();
    if (c == 0) legit_client(lp[1], 0);
    lat before = {0}, during = {0};
    assert_int_equal(read(lp[0], &before, sizeof before), (ssize_t)sizeof before);
    waitpid(c, NULL, 0);
    /* during: the attack runs 6 s, the client starts after 1 s */
    assert_int_equal(pipe(ap), 0);
    pid_t at = fork();
    if (at == 0) attacker(ap[1], 6);
    c = fork();
    if (c == 0) legit_client(lp[1], 1000);
    assert_int_equal(read(lp[0], &during, sizeof during), (ssize_t)sizeof during);
    attack a = {0};
    assert_int_equal(read(ap[0], &a, sizeof a), (ssize_t)sizeof a);
    waitpid(c, NULL, 0);
    waitpid(at, NULL, 0);
    fprintf(stderr,
            "test_flood: before: %u/%u pings, p50 %lu us, p99 %lu us\n"
            "test_flood: during: %u/%u pings, p50 %lu us, p99 %lu us\n"
            "test_flood: attacker: %u slow sockets opened, %u open after 1 s, %u after 6 s; %u flood connects\n",
            before.answered, before.sent, before.p50_us, before.p99_us, during.answered, during.sent, during.p50_us,
            during.p99_us, a.opened, a.open_at_1s, a.open_at_end, a.flood_connects);
    assert_int_equal(before.answered, PINGS);
    assert_int_equal(during.answered, PINGS);   /* served through the attack */
    assert_true(a.open_at_1s <= PER_IP + 8);     /* the per-address cap (+ a few in the kernel's queue) */
    assert_int_equal(a.open_at_end, 0);          /* nobody holds a half-open hello past the timeout */
}

static void test_botnet_slowloris(void **state)
{
    (void)state;
    if (!net.up) skip();
    int lp[2], ap[2];
    assert_int_equal(pipe(lp), 0);
    assert_int_equal(pipe(ap), 0);
    int base = server_sockets(); /* the listener and the like */
    assert_true(base > 0);
    pid_t c = fork();
    if (c == 0) legit_client(lp[1], 0);
    lat before = {0}, during = {0}, after = {0};
    assert_int_equal(read(lp[0], &before, sizeof before), (ssize_t)sizeof before);
    waitpid(c, NULL, 0);
    /* during: the botnet runs BOT_SECS, the client starts once it has filled the server */
    pid_t at = fork();
    if (at == 0) botnet_attack(ap[1], BOT_SECS);
    c = fork();
    if (c == 0) legit_client(lp[1], 2700);
    /* what the server holds, every 100 ms until the botnet reports */
    int held_max = 0, held_at[BOT_SECS + 2] = {0};
    uint64_t t0 = mono_ms();
    struct pollfd pf = {.fd = ap[0], .events = POLLIN};
    while (poll(&pf, 1, 100) == 0) {
        int h = server_sockets() - base;
        if (h > held_max) held_max = h;
        unsigned sec = (unsigned)((mono_ms() - t0) / 1000);
        if (sec < BOT_SECS + 2 && h > held_at[sec]) held_at[sec] = h;
    }
    botnet b = {0};
    assert_int_equal(read(ap[0], &b, sizeof b), (ssize_t)sizeof b);
    assert_int_equal(read(lp[0], &during, sizeof during), (ssize_t)sizeof during);
    waitpid(c, NULL, 0);
    waitpid(at, NULL, 0);
    /* after: the server is alive and serves */
    assert_int_equal(kill(server_pid, 0), 0);
    c = fork();
    if (c == 0) legit_client(lp[1], 0);
    assert_int_equal(read(lp[0], &after, sizeof after), (ssize_t)sizeof after);
    waitpid(c, NULL, 0);
    fprintf(stderr,
            "test_flood: botnet: %d addresses x %d slow sockets (%u kept), --max-connections %d, per address %d\n"
            "test_flood: botnet before: %u/%u pings, p50 %lu us, p99 %lu us\n"
            "test_flood: botnet during: connected %s after %u attempt(s), %lu ms; %u/%u pings, p50 %lu us, p99 %lu us\n"
            "test_flood: botnet after:  %u/%u pings, p50 %lu us, p99 %lu us\n"
            "test_flood: botnet: %u connects, %u closed by the server, longest held %lu ms; at the end %u open, "
            "oldest %lu ms, %u with no byte sent yet\n"
            "test_flood: server connections held (max per second):",
            BOT_ADDRS, BOT_PER_ADDR, b.sockets, MAX_CONNS, PER_IP, before.answered, before.sent, before.p50_us,
            before.p99_us, during.connected ? "yes" : "NO", during.connect_attempts, during.connect_ms,
            during.answered, during.sent, during.p50_us, during.p99_us, after.answered, after.sent, after.p50_us,
            after.p99_us, b.opened, b.closed_by_server, b.max_life_ms, b.open_at_end, b.oldest_at_end_ms,
            b.not_started);
    for (int i = 0; i < BOT_SECS + 2; i++) fprintf(stderr, " %d", held_at[i]);
    fprintf(stderr, "; max %d\n", held_max);
    assert_int_equal(before.answered, PINGS);
    assert_true(b.closed_by_server > (unsigned)MAX_CONNS); /* it did fill the server */
    assert_true(during.connected);
    assert_true(during.connect_attempts <= 2);      /* not starved */
    assert_int_equal(during.answered, PINGS);       /* served through the attack */
    /* the global cap, + sockets being closed: with worker loops (the default on more than
     * one core) also those the main loop closed and a worker has not yet, at most one
     * accept turn's worth (PT_SERVER_ACCEPTS_PER_TURN) before the server stops accepting */
    assert_true(held_max <= MAX_CONNS + 16 + PT_SERVER_ACCEPTS_PER_TURN);
    /* nothing held past the handshake timeout. The attacker's clock starts at a
     * socket's first hello byte (a connect the kernel has not completed is no held
     * connection: with the server at its cap the backlog fills, and a socket born at
     * the start was seen still connecting at the end); it also counts the time the
     * connection waited in the kernel's backlog before the server took it (at most
     * 64 a loop iteration, and none while the server is at its cap) and its own
     * polling: 6 s of slack (CI, with another test beside this one, saw 4.7 s of
     * backlog wait once). Without the timeout, sockets stay the whole BOT_SECS (12 s):
     * those the server took first are still open at the end, 11 s old or more. */
#ifndef PT_SANITIZE_BUILD
    assert_true(b.max_life_ms <= HS_TIMEOUT_MS + 6000);
    assert_true(b.oldest_at_end_ms <= HS_TIMEOUT_MS + 6000);
#else
    /* Under ASan the server accepts several times slower and the backlog wait, which
     * the attacker cannot tell from a held connection, dominates (5.1 s and 8.0 s
     * measured): these two bounds are checked in the normal build only. */
#endif
    assert_int_equal(after.answered, PINGS);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slowloris_and_flood),
        cmocka_unit_test(test_botnet_slowloris),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
