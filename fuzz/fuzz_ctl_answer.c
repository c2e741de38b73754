/* Fuzz target for pt_ctl_show(): arbitrary bytes as packtrackd's answer on the
 * control socket, read for each command packtrackctl sends. Properties, each
 * abort()ing when broken:
 *  - the exit status is PT_CTL_EXIT_UNREACHABLE exactly when the bytes are not a JSON
 *    object (cJSON's verdict) followed by nothing but white space, with one line on
 *    the error stream and nothing on the output; else PT_CTL_EXIT_OK exactly when "ok" is true, else PT_CTL_EXIT_FAILED;
 *  - with --json, an object is printed as exactly one line;
 *  - a failure prints "packtrackctl: CMD: " and one line on the error stream;
 *  - the same bytes give the same output (no uninitialised read), and our code reads
 *    nothing past len (the input is copied to a buffer of exactly len bytes; the
 *    system's libcjson is not instrumented, so ASan does not see its own reads). */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/pt_ctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fz_cmds[][2] = {
    {"status", ""},       {"users", ""},   {"user", "ban"},     {"user", "unban"}, {"user", "delete"},
    {"reload", ""},       {"backup", ""},  {"reopen-logs", ""}, {"metrics", ""},
};

typedef struct {
    char *out, *err;       /* what went to each stream */
    size_t outlen, errlen; /* their lengths */
    int rc;                /* pt_ctl_show's exit status */
} fz_run;

static void fz_show(fz_run *r, const char *cmd, const char *action, const char *buf, size_t len, bool json)
{
    FILE *out = open_memstream(&r->out, &r->outlen);
    FILE *err = open_memstream(&r->err, &r->errlen);
    if (!out || !err) abort();
    r->rc = pt_ctl_show(out, err, cmd, action, buf, len, json);
    fclose(out);
    fclose(err);
}

static size_t fz_lines(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536) return 0;
    char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(buf, size, &end, false);
    bool object = cJSON_IsObject(j);
    for (const char *p = end; object && p < buf + size; p++)
        object = *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n';
    bool ok = object && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "ok"));
    cJSON_Delete(j);
    int want = !object ? PT_CTL_EXIT_UNREACHABLE : ok ? PT_CTL_EXIT_OK : PT_CTL_EXIT_FAILED;
    for (size_t i = 0; i < sizeof fz_cmds / sizeof *fz_cmds; i++) {
        for (int json = 0; json < 2; json++) {
            fz_run a = {0}, b = {0};
            fz_show(&a, fz_cmds[i][0], fz_cmds[i][1], buf, size, json);
            fz_show(&b, fz_cmds[i][0], fz_cmds[i][1], buf, size, json);
            if (a.rc != want) abort();
            if (a.rc != b.rc || a.outlen != b.outlen || a.errlen != b.errlen ||
                memcmp(a.out, b.out, a.outlen) != 0 || memcmp(a.err, b.err, a.errlen) != 0)
                abort();
            if (!object && (a.outlen != 0 || fz_lines(a.err, a.errlen) != 1)) abort();
            if (object && json && (fz_lines(a.out, a.outlen) != 1 || a.out[a.outlen - 1] != '\n' || a.errlen))
                abort();
            if (object && !json && !ok) {
                char head[64];
                int n = snprintf(head, sizeof head, "packtrackctl: %s: ", fz_cmds[i][0]);
                if (a.errlen < (size_t)n || memcmp(a.err, head, (size_t)n) != 0) abort();
                /* the error text is the server's: it may hold newlines of its own */
                if (a.err[a.errlen - 1] != '\n') abort();
            }
            free(a.out);
            free(a.err);
            free(b.out);
            free(b.err);
        }
    }
    free(buf);
    return 0;
}
