/* Operating packtrackd (issue 9): --check-config, reload, logs, packtrackctl,
 * backup and restore, /healthz. Real packtrackd and packtrackctl processes. */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/pt_client.h"
#include "crypto/pt_crypto.h"
#include "pt_tl.h"
#include "testutil.h"
#include "wire/pt_wire.h"

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static __attribute__((unused)) void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs "$bin args" with stdout and stderr into a file; returns the exit status
 * and (if out) the output, malloc'd. */
static int run_bin(const char *bin, const char *args, char **out)
{
    static int seq;
    char path[128], cmd[4096];
    snprintf(path, sizeof path, "/tmp/pt-ops-out-%d-%d", (int)getpid(), seq++);
    snprintf(cmd, sizeof cmd, "timeout 60 %s %s >%s 2>&1 </dev/null", bin, args, path);
    int st = system(cmd);
    char *text = pt_test_read_file(path, NULL);
    unlink(path);
    if (out) *out = text ? text : strdup("");
    else free(text);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int run_d(const char *args, char **out) { return run_bin(getenv("PT_PACKTRACKD"), args, out); }

static const char *ctl_bin(void)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/packtrackctl", getenv("PT_BUILD_DIR"));
    return p;
}

static __attribute__((unused)) int run_ctl(const char *args, char **out) { return run_bin(ctl_bin(), args, out); }

/* ---- --check-config --------------------------------------------------------------------- */

typedef struct conf_case {
    const char *text;       /* the file */
    int status;             /* expected exit status */
    const char *expect;     /* expected in the output, after "FILE:" */
} conf_case;

static void test_check_config(void **state)
{
    (void)state;
    const char *dir = pt_test_tmpdir("conf");
    char conf[300], keyfile[300], data[300], args[1200];
    snprintf(conf, sizeof conf, "%s/p.conf", dir);
    snprintf(keyfile, sizeof keyfile, "%s/nk.key", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    write_text(keyfile, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
    chmod(keyfile, 0);
    bool root = geteuid() == 0; /* root reads any file: the unreadable-file case needs a user */
    char unreadable[600];
    snprintf(unreadable, sizeof unreadable, "[obfuscation]\nmode = pt-obfs\nnetwork_key = %s\n", keyfile);
    const conf_case cases[] = {
        /* clean */
        {"[server]\nlog_level = debug\n[limits]\nidle_timeout = 30\n", 0, NULL},
        /* unknown key, unknown section, syntax */
        {"[server]\n  listen_on = 1.2.3.4:5\n", 1, ":2:3: error: unknown key 'listen_on' in [server]"},
        {"[server]\n[srv]\nx = 1\n", 1, ":2:2: error: unknown section [srv]"},
        {"[limits]\nidle_timeout 30\n", 1, ":2:1: error: expected 'key = value' or '[section]'"},
        /* wrong type */
        {"[limits]\nidle_timeout = soon\n", 1, ":2:16: error: idle_timeout: expected a whole number of seconds, got 'soon'"},
        {"[server]\nlisten=localhost\n", 1, ":2:8: error: listen: expected HOST:PORT"},
        {"[server]\nlog_level =  loud\n", 1, ":2:14: error: log_level: expected error, warn, info or debug, got 'loud'"},
        /* out of range */
        {"[limits]\nqueue_quota = 0\n", 1, ":2:15: error: queue_quota: 0 is out of range (1 to 100000000)"},
        {"[limits]\nhandshake_timeout = 3601\n", 1, ":2:21: error: handshake_timeout: 3601 is out of range (1 to 3600 seconds)"},
        {"[server]\nlisten = 127.0.0.1:70000\n", 1, ":2:10: error: listen: expected HOST:PORT"},
        /* a key file the running user cannot read */
        {root ? "[obfuscation]\nnetwork_key = /nonexistent/nk.key\n" : unreadable, 1,
         root ? ":2:15: error: network_key: cannot read key file '/nonexistent/nk.key'"
              : ":3:15: error: network_key: cannot read key file"},
        /* warnings only: exit 2 */
        {"[limits]\nban_time = 5\nban_time = 6\n", 2, ":3:1: warning: 'ban_time' is set again (first on line 2)"},
        {"[server]\nmetrics_listen = 0.0.0.0:9100\n", 2, ":2:1: warning: metrics_listen: 0.0.0.0 is not a loopback address"},
        /* several problems: every one reported */
        {"[limits]\nidle_timeout = x\nqueue_quota = -1\nnope = 1\n", 1, ":4:1: error: unknown key 'nope'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_text(conf, cases[i].text);
        char *out;
        snprintf(args, sizeof args, "--check-config -c %s --data %s", conf, data);
        int st = run_d(args, &out);
        char want[700];
        if (cases[i].expect) snprintf(want, sizeof want, "%s%s", conf, cases[i].expect);
        if (st != cases[i].status || (cases[i].expect && !strstr(out, want)))
            fail_msg("case %zu: status %d (want %d), output:\n%s\nwanted: %s", i, st, cases[i].status, out,
                     cases[i].expect ? want : "(nothing)");
        if (i == sizeof cases / sizeof *cases - 1) { /* all three, in order */
            assert_non_null(strstr(out, ":2:16: error: idle_timeout"));
            assert_non_null(strstr(out, ":3:15: error: queue_quota: expected a whole number"));
            assert_non_null(strstr(out, "3 errors, 0 warnings"));
        }
        free(out);
    }
    /* an unreadable data directory, as the running user */
    if (!root) {
        mkdir(data, 0700);
        chmod(data, 0);
        write_text(conf, "[server]\nlog_level = info\n");
        char *out;
        snprintf(args, sizeof args, "--check-config -c %s --data %s", conf, data);
        assert_int_equal(run_d(args, &out), 1);
        assert_non_null(strstr(out, "is not usable by uid"));
        free(out);
        chmod(data, 0700);
    }
    /* a missing file, and the shipped example */
    char *out;
    assert_int_equal(run_d("--check-config -c /nonexistent/packtrackd.conf", &out), 1);
    assert_non_null(strstr(out, "/nonexistent/packtrackd.conf: error: cannot read"));
    free(out);
    snprintf(args, sizeof args, "--check-config -c %s/docs/packtrackd.conf --data %s", getenv("PT_SOURCE_DIR"), data);
    assert_int_equal(run_d(args, &out), 0);
    free(out);
    /* a network key is never echoed */
    write_text(conf, "[obfuscation]\nnetwork_key = 00112233445566778899aabbccddeeffzz\n");
    snprintf(args, sizeof args, "--check-config -c %s --data %s", conf, data);
    assert_int_equal(run_d(args, &out), 1);
    assert_null(strstr(out, "00112233"));
    free(out);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
