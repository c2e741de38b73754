/* MSE interop: our MSE (the packtrack-mse tool over src/obfs/mse.c) against
 * libtorrent, an independent implementation, through Debian's python3-libtorrent.
 *
 * Each case runs tests/interop/mse_libtorrent.py under /usr/bin/python3 (found
 * via $PT_SOURCE_DIR); the script makes a torrent and an encrypted-only libtorrent
 * session at one crypto level, runs $PT_BUILD_DIR/packtrack-mse as its child and
 * prints a one-line JSON verdict, asserted here:
 *   out/rc4, out/plain  our initiator -> libtorrent; our BitTorrent handshake is
 *                       answered by libtorrent's for the same info-hash (= SKEY)
 *   in/rc4, in/plain    libtorrent's outgoing connection -> our receiver; its
 *                       BitTorrent handshake arrives intact
 * In every case libtorrent must also list our peer with the matching encryption
 * flag. A missing libtorrent is a failure naming scripts/deps.sh, never a skip.
 * Each child gets RUN_TIMEOUT_MS, then its process group is killed by PID. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define PYTHON "/usr/bin/python3"
#define RUN_TIMEOUT_MS 90000 /* the script bounds each of its steps to 20 s */

static const char *DEPS_HINT =
    PYTHON " cannot import libtorrent: run scripts/deps.sh (Debian package python3-libtorrent)";

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs argv in its own process group, stdin from /dev/null, stdout into *out
 * (malloc'd, NUL-terminated). Kills the group after RUN_TIMEOUT_MS. Returns the
 * wait status, or -1 on timeout. */
static int run_child(char *const argv[], char **out)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, STDIN_FILENO);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid);
    close(fds[1]);
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    assert_non_null(buf);
    uint64_t deadline = mono_ms() + RUN_TIMEOUT_MS;
    bool timed_out = false;
    for (;;) {
        uint64_t now = mono_ms();
        if (now >= deadline) {
            timed_out = true;
            break;
        }
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int pr = poll(&pfd, 1, (int)(deadline - now));
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) continue;
        if (cap - len < 1024) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t n = read(fds[0], buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
    }
    close(fds[0]);
    buf[len] = 0;
    *out = buf;
    if (timed_out) kill(-pid, SIGKILL); /* our child's group: python and its packtrack-mse */
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return timed_out ? -1 : status;
}

static int libtorrent_state; /* 0 unknown, 1 importable, -1 not */

static void require_libtorrent(void)
{
    if (libtorrent_state == 0) {
        char *out = NULL;
        char *argv[] = {PYTHON, "-c", "import libtorrent; print('libtorrent', libtorrent.__version__)",
                        NULL};
        int st = run_child(argv, &out);
        if (st < 0) fail_msg(PYTHON " -c 'import libtorrent' did not finish in %d ms", RUN_TIMEOUT_MS);
        libtorrent_state = WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 1 : -1;
        if (libtorrent_state == 1) print_message("%s", out);
        free(out);
    }
    if (libtorrent_state < 0) fail_msg("%s", DEPS_HINT);
}

static void test_libtorrent_available(void **state)
{
    (void)state;
    require_libtorrent();
}

static void run_case(const char *which, const char *crypto)
{
    require_libtorrent();
    const char *src = getenv("PT_SOURCE_DIR"), *build = getenv("PT_BUILD_DIR");
    if (!src || !build) fail_msg("PT_SOURCE_DIR and PT_BUILD_DIR must be set (ctest sets them)");
    char script[4096], tool[4096];
    snprintf(script, sizeof script, "%s/tests/interop/mse_libtorrent.py", src);
    snprintf(tool, sizeof tool, "%s/packtrack-mse", build);
    if (access(tool, X_OK) != 0) fail_msg("%s is missing: build the packtrack-mse target", tool);
    char *argv[] = {PYTHON, script, "--tool", tool, "--case", (char *)which, "--crypto",
                    (char *)crypto, NULL};
    char *out = NULL;
    uint64_t t0 = mono_ms();
    int st = run_child(argv, &out);
    print_message("%s/%s (%llu ms): %s", which, crypto, (unsigned long long)(mono_ms() - t0), out);
    if (st < 0) fail_msg("%s/%s: helper did not finish in %d ms", which, crypto, RUN_TIMEOUT_MS);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 3) fail_msg("%s", DEPS_HINT);
    cJSON *v = cJSON_Parse(out);
    if (!v) fail_msg("%s/%s: no JSON verdict from the helper", which, crypto);
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(v, "ok");
    const cJSON *sees = cJSON_GetObjectItemCaseSensitive(v, "libtorrent_sees");
    const cJSON *flag = cJSON_GetObjectItemCaseSensitive(sees, strcmp(crypto, "rc4") == 0 ? "rc4" : "plaintext");
    const cJSON *tool_err = cJSON_GetObjectItemCaseSensitive(v, "tool_stderr");
    bool good = cJSON_IsTrue(ok) && cJSON_IsTrue(flag) && cJSON_IsString(tool_err) &&
                strstr(tool_err->valuestring,
                       strcmp(crypto, "rc4") == 0 ? "handshake done, rc4" : "handshake done, plaintext");
    cJSON_Delete(v);
    free(out);
    assert_true(good);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_ours_to_libtorrent_rc4(void **state) { (void)state, run_case("out", "rc4"); }
static void test_ours_to_libtorrent_plain(void **state) { (void)state, run_case("out", "plain"); }
static void test_libtorrent_to_ours_rc4(void **state) { (void)state, run_case("in", "rc4"); }
static void test_libtorrent_to_ours_plain(void **state) { (void)state, run_case("in", "plain"); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_libtorrent_available),
        cmocka_unit_test(test_ours_to_libtorrent_rc4),
        cmocka_unit_test(test_ours_to_libtorrent_plain),
        cmocka_unit_test(test_libtorrent_to_ours_rc4),
        cmocka_unit_test(test_libtorrent_to_ours_plain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
