/* Noise interop: our engine (tests/tools/noise_peer) against python3-dissononce,
 * an independent implementation, for XX and IK, both suites, both roles, plus a
 * prologue mismatch that must kill the handshake on the side able to detect it.
 *
 * Each test runs tests/interop/noise_dissononce.py under /usr/bin/python3 (the
 * interpreter Debian's python3-dissononce installs into); the script runs
 * noise_peer as its child, drives both engines and prints a one-line JSON
 * verdict, which is asserted here. Keys, prologue and payloads are random per run.
 * A missing dissononce is a failure that names scripts/deps.sh, never a skip. */
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
#define RUN_TIMEOUT_MS 90000 /* the script gives up after 60 s itself */

static const char *DEPS_HINT =
    PYTHON " cannot import dissononce: run scripts/deps.sh (Debian package python3-dissononce)";

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs argv (argv[0] a path) in its own process group with stdin from /dev/null,
 * collecting stdout into *out (malloc'd, NUL-terminated). Kills the group after
 * RUN_TIMEOUT_MS. Returns the wait status, or -1 on timeout. */
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
    setpgid(pid, pid); /* also here, so the kill below cannot race the child's call */
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
        if (pr <= 0) continue; /* 0: the deadline check above ends the loop */
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
    if (timed_out) kill(-pid, SIGKILL); /* the group: python and its noise_peer */
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return timed_out ? -1 : status;
}

/* ---- the prerequisite --------------------------------------------------------- */

static int dissononce_state; /* 0 unknown, 1 importable, -1 not */

static void require_dissononce(void)
{
    if (dissononce_state == 0) {
        char *out = NULL;
        char *argv[] = {PYTHON, "-c",
                        "import dissononce.processing.impl.handshakestate, "
                        "dissononce.dh.x25519.x25519; print('dissononce', dissononce.__version__)",
                        NULL};
        int st = run_child(argv, &out);
        if (st < 0)
            fail_msg(PYTHON " -c 'import dissononce' did not finish in %d ms", RUN_TIMEOUT_MS);
        dissononce_state = WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 1 : -1;
        if (dissononce_state == 1) print_message("%s", out);
        free(out);
    }
    if (dissononce_state < 0) fail_msg("%s", DEPS_HINT);
}

static void test_dissononce_available(void **state)
{
    (void)state;
    require_dissononce();
}

/* ---- one combination ------------------------------------------------------------ */

typedef struct combo {
    const char *pattern; /* "XX" or "IK" */
    const char *suite;   /* "ChaChaPoly_BLAKE2b" or "AESGCM_SHA256" */
    const char *ours;    /* our engine's role: "initiator" or "responder" */
    bool mismatch;       /* give the sides different prologues */
} combo;

static const char *jstr(const cJSON *v, const char *name)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(v, name);
    return cJSON_IsString(f) ? f->valuestring : NULL;
}

/* Checks one transport direction: >= 3 messages, one empty, one of >= 60000 bytes. */
static void check_direction(const cJSON *transport, const char *dir, const char *what)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(transport, dir);
    if (!cJSON_IsArray(a)) fail_msg("%s: no transport report for %s", what, dir);
    int n = 0;
    bool empty = false, big = false;
    const cJSON *e;
    cJSON_ArrayForEach(e, a)
    {
        n++;
        empty |= e->valuedouble == 0;
        big |= e->valuedouble >= 60000;
    }
    if (n < 3 || !empty || !big)
        fail_msg("%s: %s carried %d messages (empty: %d, >= 60000 bytes: %d)", what, dir, n, empty,
                 big);
}

static void run_combo(const combo *c)
{
    require_dissononce();
    const char *src = getenv("PT_SOURCE_DIR"), *tools = getenv("PT_TOOLS_DIR");
    if (!src || !tools) fail_msg("PT_SOURCE_DIR and PT_TOOLS_DIR must be set (run via ctest)");
    char script[4096], peer[4096], what[128];
    snprintf(script, sizeof script, "%s/tests/interop/noise_dissononce.py", src);
    snprintf(peer, sizeof peer, "%s/noise_peer", tools);
    snprintf(what, sizeof what, "Noise_%s_25519_%s, ours %s%s", c->pattern, c->suite, c->ours,
             c->mismatch ? ", prologue mismatch" : "");
    if (access(peer, X_OK) != 0) fail_msg("%s: %s is missing; build the tests", what, peer);

    char *argv[] = {PYTHON,
                    script,
                    "--peer",
                    peer,
                    "--pattern",
                    (char *)c->pattern,
                    "--suite",
                    (char *)c->suite,
                    "--ours",
                    (char *)c->ours,
                    c->mismatch ? "--prologue-mismatch" : NULL,
                    NULL};
    uint64_t t0 = mono_ms();
    char *out = NULL;
    int st = run_child(argv, &out);
    uint64_t ms = mono_ms() - t0;
    if (st < 0) fail_msg("%s: no verdict within %d ms", what, RUN_TIMEOUT_MS);

    char *last = out + strlen(out); /* the verdict is the last stdout line */
    while (last > out && last[-1] == '\n')
        *--last = 0;
    while (last > out && last[-1] != '\n')
        last--;
    cJSON *v = cJSON_Parse(last);
    if (!v) fail_msg("%s: no JSON verdict (exit status %d), stdout:\n%s", what, st, out);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "missing_deps")))
        fail_msg("%s: %s", what, jstr(v, "error"));
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "ok")))
        fail_msg("%s: verdict not ok: %s", what, last);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    bool ours_init = strcmp(c->ours, "initiator") == 0;
    if (c->mismatch) {
        /* XX: message 1 (e) is cleartext, message 2 is the first the initiator can
         * authenticate. IK: message 1 is already keyed by es, so the responder. */
        bool xx = strcmp(c->pattern, "XX") == 0;
        bool detector_is_init = xx;
        const char *want = detector_is_init == ours_init ? "ours" : "dissononce";
        const cJSON *at = cJSON_GetObjectItemCaseSensitive(v, "failed_at");
        const char *by = jstr(v, "detected_by");
        if (!by || strcmp(by, want) != 0 || !cJSON_IsNumber(at) || at->valueint != (xx ? 1 : 0))
            fail_msg("%s: want the handshake refused by %s at message %d, got %s", what, want,
                     xx ? 1 : 0, last);
        print_message("%-62s refused by %s at message %d (%s), %llu ms\n", what, by,
                      at->valueint + 1, jstr(v, "error") ? jstr(v, "error") : "?",
                      (unsigned long long)ms);
    } else {
        const char *h1 = jstr(v, "hash_ours"), *h2 = jstr(v, "hash_dissononce");
        size_t hexlen = strcmp(c->suite, "AESGCM_SHA256") == 0 ? 64 : 128;
        if (!h1 || !h2 || strcmp(h1, h2) != 0 || strlen(h1) != hexlen)
            fail_msg("%s: handshake hashes %s / %s", what, h1 ? h1 : "-", h2 ? h2 : "-");
        assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "ours_learned_key_ok")));
        assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "dissononce_learned_key_ok")));
        assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "tamper_checked")));
        const cJSON *transport = cJSON_GetObjectItemCaseSensitive(v, "transport");
        check_direction(transport, "o2d", what);
        check_direction(transport, "d2o", what);
        print_message("%-62s ok, h=%.16s..., %llu ms\n", what, h1, (unsigned long long)ms);
    }
    cJSON_Delete(v);
    free(out);
}

#define COMBO(fn, pattern, suite, ours, mismatch)                                                  \
    static void fn(void **state)                                                                   \
    {                                                                                              \
        (void)state;                                                                               \
        run_combo(&(const combo){pattern, suite, ours, mismatch});                                 \
    }

COMBO(test_xx_chachapoly_ours_initiator, "XX", "ChaChaPoly_BLAKE2b", "initiator", false)
COMBO(test_xx_chachapoly_ours_responder, "XX", "ChaChaPoly_BLAKE2b", "responder", false)
COMBO(test_xx_aesgcm_ours_initiator, "XX", "AESGCM_SHA256", "initiator", false)
COMBO(test_xx_aesgcm_ours_responder, "XX", "AESGCM_SHA256", "responder", false)
COMBO(test_ik_chachapoly_ours_initiator, "IK", "ChaChaPoly_BLAKE2b", "initiator", false)
COMBO(test_ik_chachapoly_ours_responder, "IK", "ChaChaPoly_BLAKE2b", "responder", false)
COMBO(test_ik_aesgcm_ours_initiator, "IK", "AESGCM_SHA256", "initiator", false)
COMBO(test_ik_aesgcm_ours_responder, "IK", "AESGCM_SHA256", "responder", false)
COMBO(test_xx_prologue_mismatch_ours_initiator, "XX", "ChaChaPoly_BLAKE2b", "initiator", true)
COMBO(test_xx_prologue_mismatch_ours_responder, "XX", "AESGCM_SHA256", "responder", true)
COMBO(test_ik_prologue_mismatch_ours_initiator, "IK", "AESGCM_SHA256", "initiator", true)
COMBO(test_ik_prologue_mismatch_ours_responder, "IK", "ChaChaPoly_BLAKE2b", "responder", true)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dissononce_available),
        cmocka_unit_test(test_xx_chachapoly_ours_initiator),
        cmocka_unit_test(test_xx_chachapoly_ours_responder),
        cmocka_unit_test(test_xx_aesgcm_ours_initiator),
        cmocka_unit_test(test_xx_aesgcm_ours_responder),
        cmocka_unit_test(test_ik_chachapoly_ours_initiator),
        cmocka_unit_test(test_ik_chachapoly_ours_responder),
        cmocka_unit_test(test_ik_aesgcm_ours_initiator),
        cmocka_unit_test(test_ik_aesgcm_ours_responder),
        cmocka_unit_test(test_xx_prologue_mismatch_ours_initiator),
        cmocka_unit_test(test_xx_prologue_mismatch_ours_responder),
        cmocka_unit_test(test_ik_prologue_mismatch_ours_initiator),
        cmocka_unit_test(test_ik_prologue_mismatch_ours_responder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
