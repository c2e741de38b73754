/* Fuzz target for pt_ctl_request_parse(): arbitrary bytes as a control socket
 * request line. Properties, each abort()ing when broken:
 *  - the result is 0 or PT_ERR_INVAL; an error has a NUL-terminated sentence of one
 *    of the known forms that fits the buffer (a quoted name or action at most 40
 *    bytes), and no argument left set; success leaves err "";
 *  - out->name is set exactly when the bytes parse (cJSON) as an object whose "cmd"
 *    is a string, followed by nothing but white space, and it is that string;
 *  - an accepted request names a known command, and its arguments are what the
 *    JSON says and what the command needs: user has a non-empty NAME and one of
 *    ban / unban / delete, backup an absolute path shorter than PT_CTL_PATH_MAX,
 *    users' online flag is "online": true;
 *  - the parse is deterministic and our code does not read past len (the input is
 *    copied to a buffer of exactly len bytes; the system's libcjson is not
 *    instrumented, so ASan does not see its own reads), and an accepted request written back as the
 *    canonical JSON packtrackctl sends is accepted again with the same command and
 *    arguments. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "server/pt_server_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fz_cmds[] = {
    [PT_CTL_STATUS] = "status",
    [PT_CTL_USERS] = "users",
    [PT_CTL_USER] = "user",
    [PT_CTL_RELOAD] = "reload",
    [PT_CTL_REOPEN_LOGS] = "reopen-logs",
    [PT_CTL_BACKUP] = "backup",
    [PT_CTL_METRICS] = "metrics",
};
static const char *const fz_actions[] = {
    [PT_ADMIN_BAN] = "ban", [PT_ADMIN_UNBAN] = "unban", [PT_ADMIN_DELETE] = "delete"};

static bool fz_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

/* An error sentence: one of the known forms; a quoted value is cut at 40 bytes. */
static void fz_check_error(const char *err, size_t cap)
{
    const char *end = memchr(err, 0, cap);
    if (!end || end == err) abort();
    if (strcmp(err, "malformed request: expected a JSON object with \"cmd\"") == 0 ||
        strcmp(err, "user: needs an action (ban, unban, delete) and a NAME") == 0 ||
        strcmp(err, "backup: needs an absolute FILE path (packtrackctl makes it absolute)") == 0 ||
        strcmp(err, "backup: path too long") == 0)
        return;
    const char *tail;
    size_t head;
    if (fz_prefix(err, "unknown command '")) {
        head = strlen("unknown command '");
        tail = "'";
    } else if (fz_prefix(err, "user: unknown action '")) {
        head = strlen("user: unknown action '");
        tail = "' (ban, unban, delete)";
    } else {
        abort();
    }
    size_t len = (size_t)(end - err), tl = strlen(tail);
    if (len < head + tl || strcmp(end - tl, tail) != 0 || len - head - tl > 40) abort();
}

static int fz_parse(pt_ctl_req *r, const char *line, size_t len, char *err, size_t cap)
{
    memset(err, 0x55, cap);
    int rc = pt_ctl_request_parse(r, line, len, err, cap);
    if (rc != 0 && rc != PT_ERR_INVAL) abort();
    if (rc != 0) {
        fz_check_error(err, cap);
        if (r->user || r->file) abort();
        return rc;
    }
    if (err[0]) abort();
    if ((unsigned)r->cmd >= PT_ARRAY_LEN(fz_cmds) || !r->name ||
        strcmp(r->name, fz_cmds[r->cmd]) != 0)
        abort();
    switch (r->cmd) {
    case PT_CTL_USER:
        if ((unsigned)r->action >= PT_ARRAY_LEN(fz_actions) || !r->user || !*r->user || r->file)
            abort();
        break;
    case PT_CTL_BACKUP:
        if (!r->file || r->file[0] != '/' || strlen(r->file) >= PT_CTL_PATH_MAX || r->user) abort();
        break;
    default:
        if (r->user || r->file) abort();
        break;
    }
    if (r->cmd != PT_CTL_USERS && r->online) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char err[1600], err2[1600];
    char *line = malloc(size ? size : 1); /* exactly len bytes: ASan sees a read past them */
    if (!line) return 0;
    if (size) memcpy(line, data, size);
    pt_ctl_req r, r2;
    int rc = fz_parse(&r, line, size, err, sizeof err);

    /* out->name against an independent look at the JSON */
    const char *end = NULL;
    cJSON *q = cJSON_ParseWithLengthOpts(line, size, &end, false);
    bool blank_after = true; /* nothing but white space after the object */
    for (const char *p = end; q && p < line + size; p++)
        blank_after &= memchr(" \t\r\n", *p, 4) != NULL;
    if (!blank_after) {
        cJSON_Delete(q);
        q = NULL;
    }
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(q, "cmd");
    if (cJSON_IsString(cmd) != (r.name != NULL)) abort();
    if (r.name && strcmp(r.name, cmd->valuestring) != 0) abort();
    if (rc == 0) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(q, "online");
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(q, "name");
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(q, "action");
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(q, "file");
        if (r.cmd == PT_CTL_USERS && r.online != cJSON_IsTrue(o)) abort();
        if (r.cmd == PT_CTL_USER &&
            (!cJSON_IsString(n) || strcmp(n->valuestring, r.user) != 0 || !cJSON_IsString(a) ||
             strcmp(a->valuestring, fz_actions[r.action]) != 0))
            abort();
        if (r.cmd == PT_CTL_BACKUP && (!cJSON_IsString(f) || strcmp(f->valuestring, r.file) != 0))
            abort();
    }
    cJSON_Delete(q);

    /* deterministic */
    int rc2 = fz_parse(&r2, line, size, err2, sizeof err2);
    if (rc2 != rc || strcmp(err, err2) != 0 || (r.name == NULL) != (r2.name == NULL)) abort();
    pt_ctl_req_free(&r2);

    /* the canonical request (packtrackctl's) means the same */
    if (rc == 0) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "cmd", fz_cmds[r.cmd]);
        if (r.cmd == PT_CTL_USERS && r.online) cJSON_AddTrueToObject(c, "online");
        if (r.cmd == PT_CTL_USER) {
            cJSON_AddStringToObject(c, "action", fz_actions[r.action]);
            cJSON_AddStringToObject(c, "name", r.user);
        }
        if (r.cmd == PT_CTL_BACKUP) cJSON_AddStringToObject(c, "file", r.file);
        char *text = cJSON_PrintUnformatted(c);
        cJSON_Delete(c);
        if (!text) abort();
        if (fz_parse(&r2, text, strlen(text), err2, sizeof err2) != 0) abort();
        if (r2.cmd != r.cmd || r2.online != r.online ||
            (r.cmd == PT_CTL_USER && (r2.action != r.action || strcmp(r2.user, r.user) != 0)) ||
            (r.cmd == PT_CTL_BACKUP && strcmp(r2.file, r.file) != 0))
            abort();
        pt_ctl_req_free(&r2);
        free(text);
    }
    pt_ctl_req_free(&r);
    if (r.json || r.name) abort(); /* freed and cleared */
    free(line);
    return 0;
}
