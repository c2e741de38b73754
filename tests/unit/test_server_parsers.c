/* The server's pure request and file parsers, answer by answer: the metrics
 * endpoint's HTTP request (metrics.c), the control socket's JSON line (control.c),
 * the configuration file from memory (config.c) and the backup header (backup.c).
 * Their fuzz targets (fuzz/fuzz_{metrics_request,ctl_request,config,backup_header}.c)
 * check the properties; these tables pin the exact answers. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "server/pt_backup.h"
#include "server/pt_config.h"
#include "server/pt_server_int.h"
#include "testutil.h"

#define LIT(s) s, sizeof s - 1

/* ---- metrics.c ----------------------------------------------------------------------------- */

static void test_metrics_request(void **state)
{
    (void)state;
    static char big[PT_METRICS_REQ_MAX + 10], line[400];
    memset(big, 'A', sizeof big);
    snprintf(line, sizeof line, "GET /%0300d HTTP/1.0\r\n\r\n", 0);
    const struct {
        const char *req;
        size_t len;
        pt_metrics_answer a;
        int status;
        const char *why;
    } cases[] = {
        {LIT("GET /metrics HTTP/1.0\r\n\r\n"), PT_METRICS_SCRAPE, 200, NULL},
        {LIT("GET /metrics?x=1 HTTP/1.1\r\nHost: x\nAccept: */*\n\n"), PT_METRICS_SCRAPE, 200,
         NULL},
        {LIT("GET /healthz HTTP/1.1\n\n"), PT_METRICS_HEALTHZ, 200, NULL},
        {LIT("GET /other HTTP/1.1\r\nHost: x\r\n\r\n"), PT_METRICS_NOT_FOUND, 404, NULL},
        {LIT("GET /metricsx HTTP/1.0\r\n\r\n"), PT_METRICS_NOT_FOUND, 404, NULL},
        {LIT("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), PT_METRICS_BAD_METHOD, 405,
         "not GET"},
        {LIT("get /metrics HTTP/1.0\r\n\r\n"), PT_METRICS_BAD_REQUEST, 400, "malformed method"},
        {LIT("GET /metrics\r\n\r\n"), PT_METRICS_BAD_REQUEST, 400, "malformed request line"},
        {LIT("GET  /metrics HTTP/1.0\r\n\r\n"), PT_METRICS_BAD_REQUEST, 400,
         "malformed request line"},
        {LIT("GET /metrics HTTP/2.0\r\n\r\n"), PT_METRICS_BAD_REQUEST, 400,
         "malformed request line"},
        {LIT("\r\n\r\n"), PT_METRICS_BAD_REQUEST, 400, "malformed request line"},
        {LIT("GET /me\0rics HTTP/1.0\r\n\r\n"), PT_METRICS_BAD_REQUEST, 400,
         "NUL byte in the request"},
        {LIT("GET /me\0"), PT_METRICS_BAD_REQUEST, 400, "NUL byte in the request"},
        /* what follows the blank line is never read: once a 400 in the same segment */
        {LIT("GET /metrics HTTP/1.0\r\n\r\n\0body"), PT_METRICS_SCRAPE, 200, NULL},
        {line, strlen(line), PT_METRICS_BAD_REQUEST, 400, "request line too long"},
        {LIT(""), PT_METRICS_MORE, 0, NULL},
        {LIT("GET /metrics HTTP/1.0\r\n"), PT_METRICS_MORE, 0, NULL},
        {LIT("GET /metrics HTTP/1.0\r\n\r"), PT_METRICS_MORE, 0, NULL},
        {big, PT_METRICS_REQ_MAX - 1, PT_METRICS_MORE, 0, NULL},
        {big, PT_METRICS_REQ_MAX, PT_METRICS_BAD_REQUEST, 400, "request over 4096 bytes"},
        {big, sizeof big, PT_METRICS_BAD_REQUEST, 400, "request over 4096 bytes"},
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(cases); i++) {
        pt_metrics_verdict v;
        pt_metrics_answer a = pt_metrics_request(cases[i].req, cases[i].len, &v);
        if (a != cases[i].a || v.answer != a || v.status != cases[i].status ||
            (cases[i].why ? !v.why || strcmp(v.why, cases[i].why) != 0 : v.why != NULL))
            fail_msg("case %zu: answer %d status %d why %s", i, (int)a, v.status,
                     v.why ? v.why : "-");
    }
}

/* Byte by byte, as the slowest scraper sends it: read on, then the same answer. */
static void test_metrics_request_split(void **state)
{
    (void)state;
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\0trailing";
    pt_metrics_verdict v;
    size_t end = strlen(req);
    for (size_t n = 0; n < end; n++)
        assert_int_equal(pt_metrics_request(req, n, &v), PT_METRICS_MORE);
    for (size_t n = end; n <= sizeof req - 1; n++)
        assert_int_equal(pt_metrics_request(req, n, &v), PT_METRICS_HEALTHZ);
}

/* ---- control.c ----------------------------------------------------------------------------- */

static void test_ctl_request(void **state)
{
    (void)state;
    static char longpath[PT_CTL_PATH_MAX + 40];
    snprintf(longpath, sizeof longpath, "{\"cmd\":\"backup\",\"file\":\"/%0*d\"}", PT_CTL_PATH_MAX,
             0);
    const struct {
        const char *line;
        int rc;
        pt_ctl_cmd cmd;
        const char *name; /* out->name, NULL: none */
        const char *arg;  /* user or file; error: the sentence */
    } cases[] = {
        {"{\"cmd\":\"status\"}", 0, PT_CTL_STATUS, "status", NULL},
        {" {\"cmd\" : \"status\", \"x\": [1]} \r\t ", 0, PT_CTL_STATUS, "status", NULL},
        /* one object and white space: trailing bytes were once ignored */
        {"{\"cmd\":\"status\"} trailing", PT_ERR_INVAL, 0, NULL,
         "malformed request: expected a JSON object with \"cmd\""},
        {"{\"cmd\":\"reload\"}{\"cmd\":\"status\"}", PT_ERR_INVAL, 0, NULL,
         "malformed request: expected a JSON object with \"cmd\""},
        {"{\"cmd\":\"users\",\"online\":true}", 0, PT_CTL_USERS, "users", NULL},
        {"{\"cmd\":\"user\",\"action\":\"delete\",\"name\":\"alice\"}", 0, PT_CTL_USER, "user",
         "alice"},
        {"{\"cmd\":\"reload\"}", 0, PT_CTL_RELOAD, "reload", NULL},
        {"{\"cmd\":\"reopen-logs\"}", 0, PT_CTL_REOPEN_LOGS, "reopen-logs", NULL},
        {"{\"cmd\":\"backup\",\"file\":\"/tmp/b.bak\"}", 0, PT_CTL_BACKUP, "backup", "/tmp/b.bak"},
        {"{\"cmd\":\"metrics\"}", 0, PT_CTL_METRICS, "metrics", NULL},
        {"{\"cmd\":\"user\",\"action\":\"ban\",\"name\":\"\"}", PT_ERR_INVAL, 0, "user",
         "user: needs an action (ban, unban, delete) and a NAME"},
        {"{\"cmd\":\"user\",\"name\":\"a\"}", PT_ERR_INVAL, 0, "user",
         "user: needs an action (ban, unban, delete) and a NAME"},
        {"{\"cmd\":\"user\",\"action\":\"kick\",\"name\":\"a\"}", PT_ERR_INVAL, 0, "user",
         "user: unknown action 'kick' (ban, unban, delete)"},
        {"{\"cmd\":\"backup\",\"file\":\"rel.bak\"}", PT_ERR_INVAL, 0, "backup",
         "backup: needs an absolute FILE path (packtrackctl makes it absolute)"},
        {longpath, PT_ERR_INVAL, 0, "backup", "backup: path too long"},
        {"{\"cmd\":\"nope\"}", PT_ERR_INVAL, 0, "nope", "unknown command 'nope'"},
        {"{\"cmd\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxyyy\"}", PT_ERR_INVAL, 0,
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxyyy",
         "unknown command 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'"},
        {"{\"cmd\":1}", PT_ERR_INVAL, 0, NULL,
         "malformed request: expected a JSON object with \"cmd\""},
        {"[\"cmd\"]", PT_ERR_INVAL, 0, NULL,
         "malformed request: expected a JSON object with \"cmd\""},
        {"", PT_ERR_INVAL, 0, NULL, "malformed request: expected a JSON object with \"cmd\""},
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(cases); i++) {
        pt_ctl_req r;
        char err[1600];
        int rc = pt_ctl_request_parse(&r, cases[i].line, strlen(cases[i].line), err, sizeof err);
        const char *arg = rc                       ? err
                          : r.cmd == PT_CTL_USER   ? r.user
                          : r.cmd == PT_CTL_BACKUP ? r.file
                                                   : NULL;
        if (rc != cases[i].rc || (rc == 0 && r.cmd != cases[i].cmd) ||
            (cases[i].name ? !r.name || strcmp(r.name, cases[i].name) != 0 : r.name != NULL) ||
            (cases[i].arg ? !arg || strcmp(arg, cases[i].arg) != 0 : arg != NULL))
            fail_msg("case %zu: rc %d cmd %d name %s arg %s", i, rc, (int)r.cmd,
                     r.name ? r.name : "-", arg ? arg : "-");
        if (rc == 0 && r.cmd == PT_CTL_USERS) assert_true(r.online);
        if (rc == 0 && r.cmd == PT_CTL_USER) assert_int_equal(r.action, PT_ADMIN_DELETE);
        pt_ctl_req_free(&r);
    }
}

/* ---- config.c ------------------------------------------------------------------------------ */

static pt_config_file cf, cf2;

static void test_config_mem(void **state)
{
    (void)state;
    const struct {
        const char *text;
        size_t len;
        int rc;
        const char *first; /* the first diagnostic, NULL: none */
    } cases[] = {
        {LIT("[server]\nlog_level = debug\n[limits]\nidle_timeout = 30"), 0, NULL},
        {LIT("\xEF\xBB\xBF[server]\r\nlog_level = debug\r\n"), 0, NULL},
        {LIT("[limits]\nidle_timeout = soon\n"), PT_ERR_INVAL,
         "m.conf:2:16: error: idle_timeout: expected a whole number of seconds, got 'soon'"},
        {LIT("[server]\nlog_level = de\0bug\n"), PT_ERR_INVAL,
         "m.conf:2:15: error: NUL byte in the file"},
        {LIT("[limits]\nban_time = 5\nban_time = 6\n"), 0,
         "m.conf:3:1: warning: 'ban_time' is set again (first on line 2); this value wins"},
        {LIT("[server]\n[srv]\nx = 1\n"), PT_ERR_INVAL, "m.conf:2:2: error: unknown section [srv]"},
        {LIT(""), 0, NULL},
        /* keys before any [section] were once dropped without a word */
        {LIT("listen = 1.2.3.4:5\n[server]\nlog_level = info\n"), PT_ERR_INVAL,
         "m.conf:1:1: error: 'listen' is before any [section]"},
        {LIT("  workers = 2\n"), PT_ERR_INVAL, "m.conf:1:3: error: 'workers' is before any [section]"},
        /* a first line shorter than a byte order mark (read past it under ASan once) */
        {LIT("\n[server]\n"), 0, NULL},
        {LIT("x"), PT_ERR_INVAL, "m.conf:1:1: error: expected 'key = value' or '[section]'"},
        {LIT("\xEF\xBB"), PT_ERR_INVAL, "m.conf:1:1: error: expected 'key = value' or '[section]'"},
        {LIT("\xEF\xBB\xBF[server]\nworkers = 2\n"), 0, NULL},
    };
    char path[300];
    snprintf(path, sizeof path, "%s/m.conf", pt_test_tmpdir("cfgmem"));
    for (size_t i = 0; i < PT_ARRAY_LEN(cases); i++) {
        int rc = pt_config_load_mem(&cf, "m.conf", cases[i].text, cases[i].len);
        const char *first = cases[i].first;
        if (rc != cases[i].rc ||
            (first ? cf.ndiags == 0 || strncmp(cf.diags[0].text, first, strlen(first)) != 0
                   : cf.ndiags != 0))
            fail_msg("case %zu: rc %d, first: %s", i, rc, cf.ndiags ? cf.diags[0].text : "(none)");
        /* the same bytes as a file: the same answer (the names differ) */
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(cases[i].text, 1, cases[i].len, f), cases[i].len);
        fclose(f);
        assert_int_equal(pt_config_load(&cf2, path), rc);
        assert_int_equal(cf2.ndiags, cf.ndiags);
        assert_true(cf2.set == cf.set);
        for (size_t k = 0; k < cf.ndiags; k++) {
            assert_int_equal(cf2.diags[k].line, cf.diags[k].line);
            assert_int_equal(cf2.diags[k].col, cf.diags[k].col);
            assert_string_equal(strstr(cf2.diags[k].text, ": "), strstr(cf.diags[k].text, ": "));
        }
    }
    assert_int_equal(
        pt_config_load_mem(&cf, "m.conf", LIT("[limits]\nidle_timeout = 30\nban_time = 7\n")), 0);
    assert_int_equal(cf.cfg.idle_timeout_ms, 30000);
    assert_int_equal(cf.cfg.ban_s, 7);
    assert_int_equal(cf.line[PT_CFG_BAN_TIME], 3);
    /* spaces inside the brackets: the section is the name without them (libinih
     * alone took " limits " and every key of it was unknown) */
    assert_int_equal(pt_config_load_mem(&cf, "m.conf", LIT("[ limits ]\nban_time = 9\n[\tserver]\nworkers = 3\n")), 0);
    assert_int_equal(cf.ndiags, 0);
    assert_int_equal(cf.cfg.ban_s, 9);
    assert_int_equal(cf.line[PT_CFG_BAN_TIME], 2);
}

/* More warnings than the table keeps, then an error: the error is kept, so a failed
 * reload says what is wrong (it once answered with an empty sentence). */
static void test_config_error_after_warnings(void **state)
{
    (void)state;
    char text[4096] = "[limits]\n";
    for (int i = 0; i < PT_CONFIG_MAX_DIAGS + 3; i++)
        strcat(text, "ban_time = 5\n");
    strcat(text, "ban_time = x\n");
    assert_int_equal(pt_config_load_mem(&cf, "m.conf", text, strlen(text)), PT_ERR_INVAL);
    assert_int_equal(cf.nerrors, 1);
    assert_int_equal(cf.nwarnings, PT_CONFIG_MAX_DIAGS + 3);
    assert_int_equal(cf.ndiags, PT_CONFIG_MAX_DIAGS);
    assert_non_null(
        strstr(pt_config_first_error(&cf), ":37:12: error: ban_time: expected a whole number"));
    assert_false(cf.diags[0].error);
}

/* ---- backup.c ------------------------------------------------------------------------------ */

static size_t header(char *out, size_t cap, const char *size_db, const char *fmt_line)
{
    static const char hexs[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    int n = snprintf(out, cap,
                     "%s\ncreated 2026-01-01T00:00:00Z\npacktrackd 0.1.0\nschema 6\n"
                     "file packtrack.db %s %s\nfile server.key 65 %s\n",
                     fmt_line, size_db, hexs, hexs);
    uint8_t h[32];
    crypto_hash_sha256(h, (const uint8_t *)out, (unsigned long long)n);
    n += snprintf(out + n, cap - (size_t)n, "end ");
    pt_hex_encode(out + n, h, 32);
    n += 64;
    n += snprintf(out + n, cap - (size_t)n, "\nDATA");
    return (size_t)n;
}

static void test_backup_header(void **state)
{
    (void)state;
    const struct {
        const char *size_db, *magic;
        int rc;
        const char *msg;
    } cases[] = {
        {"3", "PACKTRACK-BACKUP 1", 0, NULL},
        {"18446744073709551615", "PACKTRACK-BACKUP 1", 0, NULL},
        /* a sign was once taken and wrapped around: -1 read as 2^64 - 1 */
        {"-1", "PACKTRACK-BACKUP 1", PT_ERR_DECODE, "malformed header line: file packtrack.db -1 "},
        {"+3", "PACKTRACK-BACKUP 1", PT_ERR_DECODE, "malformed header line: file packtrack.db +3 "},
        {"18446744073709551616", "PACKTRACK-BACKUP 1", PT_ERR_DECODE, "malformed header line: "},
        {"3x", "PACKTRACK-BACKUP 1", PT_ERR_DECODE, "malformed header line: "},
        {"3", "PACKTRACK-BACKUP 2", PT_ERR_VERSION, "archive format 2 is newer"},
        {"3", "PACKTRACK-BACKUP 0", PT_ERR_DECODE, "archive format 0 is not valid"},
        {"3", "PACKTRACK-BACKUP", PT_ERR_DECODE,
         "not a PackTrack backup (no PACKTRACK-BACKUP line)"},
        /* the format is digits only: sscanf's %d took these (and overflowed on the last) */
        {"3", "PACKTRACK-BACKUP +1", PT_ERR_DECODE, "not a PackTrack backup (no PACKTRACK-BACKUP line)"},
        {"3", "PACKTRACK-BACKUP  1", PT_ERR_DECODE, "not a PackTrack backup (no PACKTRACK-BACKUP line)"},
        {"3", "PACKTRACK-BACKUP 1 ", PT_ERR_DECODE, "not a PackTrack backup (no PACKTRACK-BACKUP line)"},
        {"3", "PACKTRACK-BACKUP 4294967297", PT_ERR_VERSION, "archive format 4294967297 is newer"},
        {"3", "PACKTRACK-BACKUP 18446744073709551616", PT_ERR_VERSION,
         "archive format 18446744073709551616 is newer"},
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(cases); i++) {
        char buf[1024], msg[300] = "";
        size_t n = header(buf, sizeof buf, cases[i].size_db, cases[i].magic);
        FILE *f = fmemopen(buf, n, "r");
        assert_non_null(f);
        pt_backup_info info;
        pt_backup_entry e[PT_BACKUP_NFILES];
        memset(&info, 0, sizeof info);
        int rc = pt_backup_parse_header(f, &info, e, msg, sizeof msg);
        if (rc != cases[i].rc ||
            (cases[i].msg && strncmp(msg, cases[i].msg, strlen(cases[i].msg)) != 0))
            fail_msg("case %zu: rc %d msg %s", i, rc, msg);
        if (rc == 0) {
            char rest[8] = "";
            assert_non_null(fgets(rest, sizeof rest, f)); /* left at the files' bytes */
            assert_string_equal(rest, "DATA");
            assert_int_equal(info.format, 1);
            assert_int_equal(info.schema, 6);
            assert_string_equal(info.created, "2026-01-01T00:00:00Z");
            assert_string_equal(info.version, "0.1.0");
            assert_true(e[0].size == strtoull(cases[i].size_db, NULL, 10));
            assert_true(e[1].size == 65);
        }
        fclose(f);
    }
    /* damaged: a header byte changed after the checksum was made */
    char buf[1024], msg[300];
    size_t n = header(buf, sizeof buf, "3", "PACKTRACK-BACKUP 1");
    buf[strlen("PACKTRACK-BACKUP 1\ncreated 2")] = '3';
    FILE *f = fmemopen(buf, n, "r");
    pt_backup_info info;
    pt_backup_entry e[PT_BACKUP_NFILES];
    memset(&info, 0, sizeof info);
    assert_int_equal(pt_backup_parse_header(f, &info, e, msg, sizeof msg), PT_ERR_AUTH);
    fclose(f);
    /* cut inside the header, at the end of a line */
    f = fmemopen(buf, (size_t)(strstr(buf, "file ") - buf), "r");
    assert_int_equal(pt_backup_parse_header(f, &info, e, msg, sizeof msg), PT_ERR_DECODE);
    assert_string_equal(msg, "the archive is truncated (incomplete header)");
    fclose(f);
    for (size_t i = 0; i < PT_BACKUP_NFILES; i++)
        assert_null(strchr(pt_backup_file_name(i), '/'));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_request),
        cmocka_unit_test(test_metrics_request_split),
        cmocka_unit_test(test_ctl_request),
        cmocka_unit_test(test_config_mem),
        cmocka_unit_test(test_config_error_after_warnings),
        cmocka_unit_test(test_backup_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
