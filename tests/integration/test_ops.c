/* Operating packtrackd (issue 9): --check-config, reload, logs, packtrackctl,
 * backup and restore, /healthz. Real packtrackd and packtrackctl processes. */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
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

static void sleep_ms(int ms)
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

static int run_ctl(const char *args, char **out) { return run_bin(ctl_bin(), args, out); }

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
        {"[server]\nlisten = 127.0.0.1:7000, [::1]:7000\n", 0, NULL}, /* several */
        {"[server]\nlisten = 127.0.0.1:7000, nonsense\n", 1, ":2:10: error: listen: expected HOST:PORT"},
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

/* ---- users over pt_client (as tests/integration/test_messaging.c) -------------------------- */

typedef struct user {
    pt_client *c;
    uint8_t id_pk[32], id_sk[64], user_id[16];
    char home[300];
    uint64_t waiting;
    bool got_reply;
    int err_code;
    char err_msg[64];
    int64_t got_ids[4096];
    uint32_t got_seq[4096];
    size_t ngot;
} user;

static void on_event(void *ud, const pt_sess_event *ev)
{
    user *u = ud;
    uint8_t am[4096];
    pt_arena a;
    pt_arena_init(&a, am, sizeof am);
    pt_tl_obj o;
    if (ev->type == PT_SESS_EV_UPDATE) {
        assert_int_equal(pt_tl_decode_any(&o, ev->body, ev->len, &a), 0);
        if (o.id != PT_TL_UPDATES_NEWMESSAGE_ID) return;
        for (size_t i = 0; i < u->ngot; i++)
            if (u->got_ids[i] == o.u.updates_newMessage.server_id) return;
        assert_true(u->ngot < 4096);
        u->got_ids[u->ngot] = o.u.updates_newMessage.server_id;
        u->got_seq[u->ngot] = pt_get_u32le(o.u.updates_newMessage.envelope.data);
        u->ngot++;
        return;
    }
    if (ev->type != PT_SESS_EV_RESULT || ev->req_msg_id != u->waiting) return;
    u->got_reply = true;
    assert_int_equal(pt_tl_decode_any(&o, ev->body, ev->len, &a), 0);
    if (o.id == PT_TL_RPC_ERROR_ID) {
        u->err_code = o.u.rpc_error.error_code;
        snprintf(u->err_msg, sizeof u->err_msg, "%.*s", (int)o.u.rpc_error.error_message.len,
                 (const char *)o.u.rpc_error.error_message.data);
    } else if (o.id == PT_TL_AUTH_BOUND_ID) {
        memcpy(u->user_id, o.u.auth_bound.user_id, 16);
    }
}

/* One pump; a closed connection is reported, not failed here. */
static int pump(user *u, int ms) { return pt_client_pump(u->c, ms, on_event, u); }

static void pump_ok(user *u, int ms)
{
    int rc = pump(u, ms);
    if (rc) fail_msg("pump: %s (a connection was dropped)", pt_strerror(rc));
}

static void call(user *u, pt_buf *body)
{
    u->got_reply = false;
    u->err_code = 0;
    u->err_msg[0] = 0;
    assert_int_equal(pt_client_send(u->c, body->data, body->len, &u->waiting), 0);
    PT_TEST_WHILE_FOR(!u->got_reply, 10000, pump_ok(u, 10));
    assert_true(u->got_reply);
    pt_buf_reset(body);
}

static void user_new(user *u, const char *tag)
{
    memset(u, 0, sizeof *u);
    snprintf(u->home, sizeof u->home, "%s", pt_test_tmpdir(tag));
    assert_int_equal(pt_ed25519_keypair(u->id_pk, u->id_sk), 0);
    pt_client_config cfg = {.home = u->home};
    int err;
    u->c = pt_client_new(&cfg, &err);
    assert_non_null(u->c);
}

static int bind_name(user *u, const char *name)
{
    uint8_t msg[15 + 32], cert[64];
    memcpy(msg, "PT1 device cert", 15);
    memcpy(msg + 15, pt_client_device_key(u->c), 32);
    assert_int_equal(pt_ed25519_sign(cert, msg, sizeof msg, u->id_sk), 0);
    pt_tl_auth_bindUsername b = {.name = {(const uint8_t *)name, (uint32_t)strlen(name)}, .device_cert = {cert, 64}};
    memcpy(b.identity_key, u->id_pk, 32);
    pt_buf body;
    pt_buf_init(&body);
    assert_int_equal(pt_tl_auth_bindUsername_encode(&body, &b), 0);
    call(u, &body);
    pt_buf_free(&body);
    return u->err_code;
}

static int send_msg(user *u, const uint8_t to[16], uint32_t seq)
{
    uint8_t env[64];
    memset(env, 0xab, sizeof env);
    pt_put_u32le(env, seq);
    pt_tl_messages_send m = {.envelope = {env, sizeof env}};
    memcpy(m.to, to, 16);
    pt_buf body;
    pt_buf_init(&body);
    assert_int_equal(pt_tl_messages_send_encode(&body, &m), 0);
    call(u, &body);
    pt_buf_free(&body);
    return u->err_code;
}

static void sync_all(user *u)
{
    pt_buf body;
    pt_buf_init(&body);
    pt_tl_messages_sync sy;
    memset(&sy, 0, sizeof sy);
    assert_int_equal(pt_tl_messages_sync_encode(&body, &sy), 0);
    call(u, &body);
    assert_int_equal(u->err_code, 0);
    pt_buf_free(&body);
}

static void ctl_args(char *buf, size_t len, const pt_test_server *s, const char *rest)
{
    snprintf(buf, len, "-d %s %s", s->dir, rest);
}

static int ctl(const pt_test_server *s, const char *rest, char **out)
{
    char a[1200];
    ctl_args(a, sizeof a, s, rest);
    return run_ctl(a, out);
}

/* ---- reload ---------------------------------------------------------------------------------- */

/* A broken file on reload: FAIL, one error line with FILE:LINE:COL, the old
 * configuration and every connection stay; a good one: OK, and a changed
 * restart-only key is named. */
static void test_reload_broken_keeps_serving(void **state)
{
    (void)state;
    const char *dir = pt_test_tmpdir("rl");
    char conf[300];
    snprintf(conf, sizeof conf, "%s/p.conf", dir);
    write_text(conf, "[server]\nlisten = 127.0.0.1:0\n[limits]\nidle_timeout = 2\n");
    const char *extra[] = {"--config", conf, NULL};
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, extra);
    user a;
    user_new(&a, "a");
    assert_int_equal(pt_client_connect(a.c, "127.0.0.1", srv.port), 0);
    write_text(conf, "[server]\nlisten = 127.0.0.1:0\n[limits]\nidle_timeout = 600\nqueue_quota = lots\n");
    char *out;
    assert_int_equal(ctl(&srv, "reload", &out), 1);
    assert_non_null(strstr(out, "FAIL"));
    char want[400];
    snprintf(want, sizeof want, "%s:5:15: error: queue_quota", conf);
    assert_non_null(strstr(out, want));
    free(out);
    assert_int_equal(pt_test_log_count(&srv, "reload failed: "), 1);
    assert_int_equal(pt_test_log_count(&srv, want), 1);
    assert_int_equal(pt_test_log_count(&srv, "keeping the running configuration"), 1);
    /* still the old idle timeout (2 s, not 600): the quiet connection is closed */
    assert_int_equal(pt_client_ping(a.c, 1, NULL), 0);
    int rc = 0;
    PT_TEST_WHILE_FOR(rc == 0, 5000, rc = pump(&a, 10));
    assert_int_equal(rc, PT_ERR_CLOSED);
    /* and the server kept serving */
    assert_int_equal(pt_client_connect(a.c, "127.0.0.1", srv.port), 0);
    assert_int_equal(pt_client_ping(a.c, 2, NULL), 0);
    pump_ok(&a, 50);
    /* a good file applies; suites need a restart and say so (listen is on the
     * command line here, which a reload leaves alone: nothing to say about it) */
    write_text(conf, "[server]\nlisten = 127.0.0.1:7999\nsuites = PT1-AESGCM-SHA256\n[limits]\nidle_timeout = 600\n");
    assert_int_equal(ctl(&srv, "reload", &out), 0);
    assert_non_null(strstr(out, "OK"));
    free(out);
    assert_int_equal(pt_test_log_count(&srv, "requires restart: suites"), 1);
    assert_int_equal(pt_test_log_count(&srv, "requires restart: listen"), 0);
    assert_int_equal(pt_test_log_count(&srv, "control: reloaded"), 1);
    assert_int_equal(ctl(&srv, "--json status", &out), 0);
    cJSON *st = cJSON_Parse(out);
    assert_non_null(st);
    assert_int_equal((int)cJSON_GetObjectItem(st, "reloads")->valuedouble, 1);
    cJSON_Delete(st);
    free(out);
    pt_client_free(a.c);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* 1,000 messages from one client to another, reloads (good and broken, by
 * packtrackctl and by SIGHUP) every 100: no connection drops, nothing is lost. */
static void test_reload_during_exchange(void **state)
{
    (void)state;
    const char *dir = pt_test_tmpdir("rx");
    char conf[300], good[300], broken[300];
    snprintf(conf, sizeof conf, "%s/p.conf", dir);
    snprintf(good, sizeof good, "[server]\nlisten = 127.0.0.1:0\n[limits]\nrate_limit = 100000\n");
    snprintf(broken, sizeof broken, "[limits]\nrate_limit = fast\n");
    write_text(conf, good);
    const char *extra[] = {"--config", conf, NULL};
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, extra);
    user a, b;
    user_new(&a, "a");
    user_new(&b, "b");
    assert_int_equal(pt_client_connect(a.c, "127.0.0.1", srv.port), 0);
    assert_int_equal(pt_client_connect(b.c, "127.0.0.1", srv.port), 0);
    assert_int_equal(bind_name(&a, "alice"), 0);
    assert_int_equal(bind_name(&b, "bob"), 0);
    int reloads = 0;
    for (uint32_t i = 0; i < 1000; i++) {
        assert_int_equal(send_msg(&a, b.user_id, i), 0);
        pump_ok(&b, 0);
        if (i % 100 == 50) {
            write_text(conf, (i / 100) % 2 ? broken : good);
            if ((i / 100) % 3 == 0) {
                kill(srv.pid, SIGHUP);
            } else {
                char *out;
                int st = ctl(&srv, "reload", &out);
                assert_int_equal(st, (i / 100) % 2 ? 1 : 0);
                free(out);
            }
            reloads++;
        }
    }
    PT_TEST_WHILE_FOR(b.ngot < 1000, 10000, pump_ok(&b, 10));
    assert_int_equal(b.ngot, 1000);
    for (uint32_t i = 0; i < 1000; i++) assert_int_equal(b.got_seq[i], i);
    pump_ok(&a, 10);
    assert_int_equal(reloads, 10);
    assert_int_equal(pt_test_log_count(&srv, "reload failed"), 5);
    assert_int_equal(pt_test_log_count(&srv, ": reloaded"), 5);
    assert_int_equal(pt_test_log_count(&srv, "closed"), 0); /* no connection closed */
    assert_int_equal(pt_test_log_count(&srv, "user bob"), 0);
    pt_client_free(a.c);
    pt_client_free(b.c);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* ---- logs ------------------------------------------------------------------------------------- */

static void test_log_reopen_after_move(void **state)
{
    (void)state;
    const char *dir = pt_test_tmpdir("lg");
    char logf[300], moved[300], moved2[300], moved3[300];
    snprintf(logf, sizeof logf, "%s/packtrackd.log", dir);
    snprintf(moved, sizeof moved, "%s/packtrackd.log.1", dir);
    snprintf(moved2, sizeof moved2, "%s/packtrackd.log.2", dir);
    snprintf(moved3, sizeof moved3, "%s/packtrackd.log.3", dir);
    const char *extra[] = {"--log-file", logf, NULL};
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, extra);
    char *text = pt_test_read_file(logf, NULL);
    assert_non_null(text);
    assert_non_null(strstr(text, "listening on"));
    free(text);
    /* logrotate: move, then reopen-logs */
    assert_int_equal(rename(logf, moved), 0);
    char *out;
    assert_int_equal(ctl(&srv, "reopen-logs", &out), 0);
    free(out);
    assert_int_equal(ctl(&srv, "status", &out), 0); /* logs "control: status" (debug) */
    free(out);
    text = pt_test_read_file(logf, NULL);
    assert_non_null(text);
    assert_non_null(strstr(text, "control: log file reopened"));
    assert_non_null(strstr(text, "control: status"));
    free(text);
    text = pt_test_read_file(moved, NULL);
    assert_null(strstr(text, "control: status")); /* nothing more in the old file */
    free(text);
    /* and with SIGUSR1 */
    assert_int_equal(rename(logf, moved2), 0);
    kill(srv.pid, SIGUSR1);
    for (int i = 0; i < 200 && access(logf, F_OK) != 0; i++) sleep_ms(10);
    text = pt_test_read_file(logf, NULL);
    assert_non_null(text);
    assert_non_null(strstr(text, "SIGUSR1: log file reopened"));
    free(text);
    /* and with SIGHUP, which also rereads the configuration (none here) */
    assert_int_equal(rename(logf, moved3), 0);
    kill(srv.pid, SIGHUP);
    for (int i = 0; i < 200 && access(logf, F_OK) != 0; i++) sleep_ms(10);
    assert_int_equal(pt_test_server_stop(&srv), 0);
    text = pt_test_read_file(logf, NULL);
    assert_non_null(text);
    assert_non_null(strstr(text, "SIGHUP: log file reopened"));
    assert_non_null(strstr(text, "stopped"));
    free(text);
    text = pt_test_read_file(moved3, NULL);
    assert_non_null(strstr(text, "SIGHUP: no configuration file to reload"));
    assert_null(strstr(text, "stopped")); /* nothing after the reopen in the old file */
    free(text);
}

/* ---- packtrackctl: --json, bans, deletion ---------------------------------------------------- */

static cJSON *ctl_json(const pt_test_server *s, const char *rest, int want_status)
{
    char *out;
    char a[600];
    snprintf(a, sizeof a, "--json %s", rest);
    int st = ctl(s, a, &out);
    cJSON *o = cJSON_Parse(out);
    if (!o || st != want_status) fail_msg("packtrackctl %s: status %d (want %d): %s", rest, st, want_status, out);
    free(out);
    assert_true(cJSON_IsBool(cJSON_GetObjectItem(o, "ok")));
    assert_int_equal(cJSON_IsTrue(cJSON_GetObjectItem(o, "ok")), want_status == 0);
    if (want_status) assert_true(cJSON_IsString(cJSON_GetObjectItem(o, "error")));
    return o;
}

static void test_ctl_json_ban_delete(void **state)
{
    (void)state;
    pt_test_server srv;
    const char *extra[] = {"--metrics", "0", NULL};
    pt_test_server_start(&srv, NULL, 0, extra);
    user a, b, c;
    user_new(&a, "a");
    user_new(&b, "b");
    user_new(&c, "c");
    assert_int_equal(pt_client_connect(a.c, "127.0.0.1", srv.port), 0);
    assert_int_equal(pt_client_connect(b.c, "127.0.0.1", srv.port), 0);
    assert_int_equal(pt_client_connect(c.c, "127.0.0.1", srv.port), 0);
    assert_int_equal(bind_name(&a, "alice"), 0);
    assert_int_equal(bind_name(&b, "bob"), 0);
    /* every command's --json parses */
    cJSON *o = ctl_json(&srv, "status", 0);
    assert_string_equal(cJSON_GetObjectItem(o, "version")->valuestring, PT_VERSION_STRING);
    assert_true(cJSON_GetObjectItem(o, "connections")->valuedouble >= 3);
    cJSON_Delete(o);
    o = ctl_json(&srv, "users", 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "users")), 2);
    cJSON_Delete(o);
    o = ctl_json(&srv, "users --online", 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "users")), 2);
    cJSON_Delete(o);
    o = ctl_json(&srv, "metrics", 0);
    assert_non_null(strstr(cJSON_GetObjectItem(o, "text")->valuestring, "packtrackd_connections "));
    cJSON_Delete(o);
    cJSON_Delete(ctl_json(&srv, "reload", 0)); /* no file: nothing to do, OK */
    cJSON_Delete(ctl_json(&srv, "reopen-logs", 0));
    cJSON_Delete(ctl_json(&srv, "user ban nobody", 1));
    /* ban: alice is disconnected, then refused with 403 USER_BANNED */
    o = ctl_json(&srv, "user ban alice", 0);
    assert_int_equal((int)cJSON_GetObjectItem(o, "connections_closed")->valuedouble, 1);
    cJSON_Delete(o);
    int rc = 0;
    PT_TEST_WHILE_FOR(rc == 0, 3000, rc = pump(&a, 10));
    assert_int_equal(rc, PT_ERR_CLOSED);
    assert_int_equal(pt_client_connect(a.c, "127.0.0.1", srv.port), 0);
    assert_int_equal(send_msg(&a, b.user_id, 1), 403);
    assert_string_equal(a.err_msg, "USER_BANNED");
    o = ctl_json(&srv, "users", 0);
    cJSON *u0 = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "users"), 0);
    assert_string_equal(cJSON_GetObjectItem(u0, "name")->valuestring, "alice");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(u0, "banned")));
    cJSON_Delete(o);
    cJSON_Delete(ctl_json(&srv, "user unban alice", 0));
    assert_int_equal(send_msg(&a, b.user_id, 2), 0);
    /* delete: bob's queue goes, his connection too, and nobody takes his name */
    pt_client_drop(b.c);
    for (uint32_t i = 0; i < 5; i++) assert_int_equal(send_msg(&a, b.user_id, 10 + i), 0);
    o = ctl_json(&srv, "user delete bob", 0);
    assert_int_equal((int)cJSON_GetObjectItem(o, "devices_deleted")->valuedouble, 1);
    assert_true(cJSON_GetObjectItem(o, "queued_deleted")->valuedouble >= 5);
    cJSON_Delete(o);
    assert_int_equal(send_msg(&a, b.user_id, 20), 404);
    assert_int_equal(bind_name(&c, "Bob"), 409);
    assert_string_equal(c.err_msg, "USERNAME_TAKEN");
    o = ctl_json(&srv, "status", 0);
    assert_int_equal((int)cJSON_GetObjectItem(o, "queue_rows")->valuedouble, 0);
    cJSON_Delete(o);
    o = ctl_json(&srv, "users", 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "users")), 1);
    cJSON_Delete(o);
    /* /healthz on the metrics listener */
    char *out;
    char cmd[200];
    o = ctl_json(&srv, "status", 0);
    snprintf(cmd, sizeof cmd, "-s http://%s/healthz", cJSON_GetObjectItem(o, "metrics")->valuestring);
    cJSON_Delete(o);
    assert_int_equal(run_bin("curl", cmd, &out), 0);
    assert_string_equal(out, "{\"status\":\"ok\"}\n");
    free(out);
    /* unreachable and usage exit statuses */
    assert_int_equal(run_ctl("-d /nonexistent status", NULL), 3);
    assert_int_equal(run_ctl("frobnicate", NULL), 2);
    assert_int_equal(run_ctl("user ban", NULL), 2);
    pt_client_free(a.c);
    pt_client_free(b.c);
    pt_client_free(c.c);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* ---- backup and restore ---------------------------------------------------------------------- */

/* A backup taken while messages are being stored restores into a server that
 * delivers every message the backup holds: a gap-free prefix of what was sent,
 * at least everything acknowledged before the backup started. */
static void test_backup_under_load_restores(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    user a, b;
    user_new(&a, "a");
    user_new(&b, "b");
    assert_int_equal(pt_client_connect(a.c, "127.0.0.1", srv.port), 0);
    assert_int_equal(pt_client_connect(b.c, "127.0.0.1", srv.port), 0);
    assert_int_equal(bind_name(&a, "alice"), 0);
    assert_int_equal(bind_name(&b, "bob"), 0);
    pt_client_drop(b.c); /* offline: everything queues */
    const char *bdir = pt_test_tmpdir("bk");
    char archive[300], args[1400];
    snprintf(archive, sizeof archive, "%s/pt.backup", bdir);
    uint32_t sent = 0;
    for (; sent < 200; sent++) assert_int_equal(send_msg(&a, b.user_id, sent), 0);
    uint32_t before = sent;
    /* the backup runs in another process while alice keeps sending */
    char outpath[400];
    snprintf(outpath, sizeof outpath, "%s/backup.json", bdir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        snprintf(args, sizeof args, "%s -d %.200s --json backup %.250s >%.300s 2>&1", ctl_bin(), srv.dir, archive, outpath);
        execl("/bin/sh", "sh", "-c", args, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    for (; sent < 2000; sent++) {
        assert_int_equal(send_msg(&a, b.user_id, sent), 0);
        if (waitpid(pid, &st, WNOHANG) == pid) {
            pid = 0;
            break;
        }
    }
    if (pid) assert_int_equal(waitpid(pid, &st, 0), pid);
    for (uint32_t i = 0; i < 100; i++, sent++) assert_int_equal(send_msg(&a, b.user_id, sent), 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char *out = pt_test_read_file(outpath, NULL);
    cJSON *o = cJSON_Parse(out);
    if (!o) fail_msg("backup output: %s", out);
    free(out);
    int queued = (int)cJSON_GetObjectItem(o, "queued")->valuedouble;
    assert_int_equal((int)cJSON_GetObjectItem(o, "format")->valuedouble, 1);
    cJSON_Delete(o);
    assert_true(queued >= (int)before && queued <= (int)sent);
    /* the archive is the server's: refused into its running directory */
    snprintf(args, sizeof args, "-d %s restore %s", srv.dir, archive);
    assert_int_equal(run_ctl(args, &out), 1);
    assert_non_null(strstr(out, "stop it first"));
    free(out);
    assert_int_equal(pt_test_server_stop(&srv), 0);
    /* restore into a fresh directory; a dry run first changes nothing */
    const char *rdir = pt_test_tmpdir("rs");
    snprintf(args, sizeof args, "-d %s --json restore %s --dry-run", rdir, archive);
    assert_int_equal(run_ctl(args, &out), 0);
    o = cJSON_Parse(out);
    assert_non_null(o);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(o, "dry_run")));
    cJSON_Delete(o);
    free(out);
    char p[400];
    snprintf(p, sizeof p, "%s/packtrack.db", rdir);
    assert_int_not_equal(access(p, F_OK), 0);
    snprintf(args, sizeof args, "-d %s restore %s", rdir, archive);
    assert_int_equal(run_ctl(args, &out), 0);
    free(out);
    pt_test_server r;
    pt_test_server_start(&r, rdir, 0, NULL);
    assert_int_equal(pt_client_connect(b.c, "127.0.0.1", r.port), 0); /* same key: the pin holds */
    b.ngot = 0;
    sync_all(&b);
    PT_TEST_WHILE_FOR(b.ngot < (size_t)queued, 3000, pump_ok(&b, 10));
    assert_int_equal((int)b.ngot, queued);
    for (int i = 0; i < queued; i++) assert_int_equal(b.got_seq[i], (uint32_t)i); /* no gap */
    pt_client_free(a.c);
    pt_client_free(b.c);
    assert_int_equal(pt_test_server_stop(&r), 0);
}

/* A damaged archive, and one from a newer format, are refused with a clear message. */
static void test_restore_refuses(void **state)
{
    (void)state;
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    const char *bdir = pt_test_tmpdir("bk");
    char archive[300], bad[300], args[900];
    snprintf(archive, sizeof archive, "%s/pt.backup", bdir);
    snprintf(bad, sizeof bad, "%s/bad.backup", bdir);
    snprintf(args, sizeof args, "-d %s backup %s", srv.dir, archive);
    char *out;
    assert_int_equal(run_ctl(args, &out), 0);
    free(out);
    assert_int_equal(pt_test_server_stop(&srv), 0);
    size_t len;
    char *text = pt_test_read_file(archive, &len);
    assert_non_null(text);
    struct stat stt;
    assert_int_equal(stat(archive, &stt), 0);
    assert_int_equal(stt.st_mode & 077, 0); /* it holds the server key */
    const char *rdir = pt_test_tmpdir("rs");
    /* newer format */
    text[strlen("PACKTRACK-BACKUP ")] = '2';
    FILE *f = fopen(bad, "wb");
    fwrite(text, 1, len, f);
    fclose(f);
    snprintf(args, sizeof args, "-d %s restore %s", rdir, bad);
    assert_int_equal(run_ctl(args, &out), 1);
    assert_non_null(strstr(out, "archive format 2 is newer than this packtrackctl understands (format 1)"));
    free(out);
    /* a flipped byte in the database */
    text[strlen("PACKTRACK-BACKUP ")] = '1';
    text[len - 100] ^= 1;
    f = fopen(bad, "wb");
    fwrite(text, 1, len, f);
    fclose(f);
    assert_int_equal(run_ctl(args, &out), 1);
    assert_non_null(strstr(out, "does not match its SHA-256"));
    free(out);
    /* truncated */
    f = fopen(bad, "wb");
    fwrite(text, 1, len / 2, f);
    fclose(f);
    assert_int_equal(run_ctl(args, &out), 1);
    assert_non_null(strstr(out, "truncated"));
    free(out);
    free(text);
    char p[400];
    snprintf(p, sizeof p, "%s/packtrack.db", rdir);
    assert_int_not_equal(access(p, F_OK), 0); /* nothing installed */
}

/* ---- systemd notifications ------------------------------------------------------------------- */

static void expect_notify(int fd, const char *want)
{
    char buf[512];
    for (int i = 0; i < 50; i++) {
        struct timeval tv = {0, 100000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n <= 0) continue;
        buf[n] = 0;
        if (strstr(buf, want)) return;
    }
    fail_msg("no sd_notify message with %s", want);
}

static void test_sd_notify(void **state)
{
    (void)state;
    const char *dir = pt_test_tmpdir("sd");
    char sock[300], conf[300];
    snprintf(sock, sizeof sock, "%s/notify", dir);
    snprintf(conf, sizeof conf, "%s/p.conf", dir);
    write_text(conf, "[server]\nlisten = 127.0.0.1:0\n");
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%.100s", sock);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    setenv("NOTIFY_SOCKET", sock, 1);
    const char *extra[] = {"--config", conf, NULL};
    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, extra);
    unsetenv("NOTIFY_SOCKET");
    expect_notify(fd, "READY=1");
    kill(srv.pid, SIGHUP);
    expect_notify(fd, "RELOADING=1");
    expect_notify(fd, "READY=1");
    assert_int_equal(pt_test_server_stop(&srv), 0);
    expect_notify(fd, "STOPPING=1");
    close(fd);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_config),
        cmocka_unit_test(test_reload_broken_keeps_serving),
        cmocka_unit_test(test_reload_during_exchange),
        cmocka_unit_test(test_log_reopen_after_move),
        cmocka_unit_test(test_ctl_json_ban_delete),
        cmocka_unit_test(test_backup_under_load_restores),
        cmocka_unit_test(test_restore_refuses),
        cmocka_unit_test(test_sd_notify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
