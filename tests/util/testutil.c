#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "crypto/pt_crypto.h"
#include "testutil.h"

const char *pt_test_shared_path(const char *rel)
{
    static char path[4096];
    const char *dir = getenv("PT_SHARED_DIR");
    if (!dir) dir = "../shared";
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    struct stat st;
    return stat(path, &st) == 0 ? path : NULL;
}

char *pt_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (len) *len = (size_t)n;
    }
    return buf;
}

uint8_t *pt_test_unhex(const char *hex, size_t *out_len)
{
    size_t n = strlen(hex) / 2;
    uint8_t *out = malloc(n ? n : 1);
    assert_non_null(out);
    assert_int_equal(strlen(hex) % 2, 0);
    if (n) assert_int_equal(pt_hex_decode(out, n, hex), 0);
    *out_len = n;
    return out;
}

static void test_random(void *ctx, void *buf, size_t len)
{
    pt_test_env *t = ctx;
    uint8_t *p = buf;
    while (len > 0 && t->script_pos < t->script_len) {
        *p++ = t->script[t->script_pos++];
        len--;
    }
    while (len > 0) { /* deterministic, not random: tests only */
        uint8_t blk[32], ctr[8];
        pt_put_u64le(ctr, t->counter++);
        pt_blake2b(blk, sizeof blk, ctr, sizeof ctr, NULL, 0);
        size_t k = len < sizeof blk ? len : sizeof blk;
        memcpy(p, blk, k);
        p += k;
        len -= k;
    }
}
static uint64_t test_now(void *ctx) { return ((pt_test_env *)ctx)->now_ms; }
static uint64_t test_mono(void *ctx) { return ((pt_test_env *)ctx)->mono_ms; }

int pt_test_gcm_openssl(void **state)
{
    (void)state;
    pt_aead_force_openssl(true);
    return 0;
}

int pt_test_gcm_default(void **state)
{
    (void)state;
    pt_aead_force_openssl(false);
    return 0;
}

void pt_test_env_init(pt_test_env *t, const uint8_t *script, size_t script_len)
{
    memset(t, 0, sizeof *t);
    t->env.random = test_random;
    t->env.now_ms = test_now;
    t->env.mono_ms = test_mono;
    t->env.ctx = t;
    t->script = script;
    t->script_len = script_len;
    t->now_ms = 1700000000000ull;
    t->mono_ms = 1000;
}

/* ---- real packtrackd processes ---------------------------------------------------- */
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *pt_test_tmpdir(const char *tag)
{
    static char path[256];
    snprintf(path, sizeof path, "/tmp/pt-%s-XXXXXX", tag);
    assert_non_null(mkdtemp(path));
    return path;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Servers still running when the test program exits (a failed assertion
 * skips the test's own stop) are killed, so no test leaves a process behind. */
static int live_pids[64];

static void kill_live_servers(void)
{
    for (size_t i = 0; i < PT_ARRAY_LEN(live_pids); i++) {
        if (live_pids[i] > 0) {
            kill(live_pids[i], SIGKILL);
            waitpid(live_pids[i], NULL, 0);
            live_pids[i] = 0;
        }
    }
}

static void track_pid(int pid, bool add)
{
    static bool registered;
    if (!registered) {
        atexit(kill_live_servers);
        registered = true;
    }
    for (size_t i = 0; i < PT_ARRAY_LEN(live_pids); i++) {
        if (add ? live_pids[i] == 0 : live_pids[i] == pid) {
            live_pids[i] = add ? pid : 0;
            return;
        }
    }
}

void pt_test_server_start(pt_test_server *s, const char *dir, uint16_t port, const char *const *extra)
{
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
    pt_test_server_start_at(s, dir, listen, extra);
}

void pt_test_server_start_at(pt_test_server *s, const char *dir, const char *listen, const char *const *extra)
{
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s", dir ? dir : pt_test_tmpdir("srv"));
    char ready[300];
    snprintf(ready, sizeof ready, "%s/ready", s->dir);
    snprintf(s->log, sizeof s->log, "%s/packtrackd.log", s->dir);
    unlink(ready);
    const char *bin = getenv("PT_PACKTRACKD");
    assert_non_null(bin);
    const char *argv[32] = {bin, "--listen", listen, "--data", s->dir, "--ready-file", ready,
                            "--log-level", "debug"};
    int n = 9;
    /* LAN discovery stays off unless the test asks for it (--discovery-port N): many
     * servers at once should not all answer on UDP 7001 */
    bool discovery = false;
    for (int i = 0; extra && extra[i]; i++) discovery |= strncmp(extra[i], "--discovery", 11) == 0;
    if (!discovery) argv[n++] = "--no-discovery";
    for (int i = 0; extra && extra[i] && n < 31; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* stdout too: a test that dies (an ASan report, an abort) must not leave a
         * server holding ctest's pipe, or ctest waits for its 300 s timeout */
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    track_pid(pid, true);
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(ready, "r");
        if (f) {
            char line[128];
            unsigned p = 0;
            if (fgets(line, sizeof line, f) && sscanf(strrchr(line, ':') + 1, "%u", &p) == 1 &&
                fgets(s->fingerprint, sizeof s->fingerprint, f)) {
                s->fingerprint[strcspn(s->fingerprint, "\n")] = 0;
                s->port = (uint16_t)p;
                fclose(f);
                return;
            }
            fclose(f);
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            track_pid(pid, false);
            fail_msg("packtrackd exited early; see %s", s->log);
        }
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fail_msg("packtrackd did not become ready in 10 s; see %s", s->log);
}

int pt_test_server_stop(pt_test_server *s)
{
    if (s->pid <= 0) return -1;
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            track_pid(s->pid, false);
            s->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        sleep_ms(10);
    }
    pt_test_server_kill(s);
    return -1;
}

void pt_test_server_kill(pt_test_server *s)
{
    if (s->pid <= 0) return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    track_pid(s->pid, false);
    s->pid = 0;
}

int pt_test_log_count(const pt_test_server *s, const char *needle)
{
    char *text = pt_test_read_file(s->log, NULL);
    int n = 0;
    for (char *p = text; p && (p = strstr(p, needle)); p++) n++;
    free(text);
    return n;
}
