/*
 * packtrackctl: an answer of packtrackd printed for people (or, with --json, as the
 * one line of JSON it is). Any field may be missing or of another type: a missing
 * string prints as "?" (a user's name in the users list as nothing: a user may have
 * none), a missing number as 0.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/pt_ctl.h"
#include "server/pt_server_int.h"

/* The string k of o, or NULL when missing or not a string. */
static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

/* The string k of o, or "?" (never NULL: every one goes to a %s). */
static const char *text(const cJSON *o, const char *k)
{
    const char *s = str(o, k);
    return s ? s : "?";
}

/* The number k of o, or 0 when missing or not a number. */
static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* Whether k of o is true (a missing or non-boolean k is false). */
static bool flag(const cJSON *o, const char *k)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

/* status: one "KEY VALUE" line per known key present (null as "-"). */
static void show_status(FILE *out, const cJSON *a)
{
    static const char *keys[] = {"version", "pid", "uptime_s", "listen", "fingerprint", "data_dir", "config",
                                 "log_level", "log_file", "metrics", "connections", "sessions",
                                 "users_online", "queue_rows", "banned_users", "reloads"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(a, keys[i]);
        if (!v) continue;
        if (cJSON_IsString(v) && v->valuestring) fprintf(out, "%-14s %s\n", keys[i], v->valuestring);
        else if (cJSON_IsNumber(v)) fprintf(out, "%-14s %.0f\n", keys[i], v->valuedouble);
        else if (cJSON_IsNull(v)) fprintf(out, "%-14s -\n", keys[i]);
    }
}

/* users: a header and one row per object of the "users" array. */
static void show_users(FILE *out, const cJSON *a)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(a, "users"), *u;
    fprintf(out, "%-24s %-32s %7s %-6s %s\n", "NAME", "USER ID", "DEVICES", "ONLINE", "BANNED");
    if (!cJSON_IsArray(arr)) return;
    cJSON_ArrayForEach(u, arr) {
        if (!cJSON_IsObject(u)) continue;
        fprintf(out, "%-24s %-32s %7.0f %-6s %s\n", str(u, "name") ? str(u, "name") : "", text(u, "user_id"),
                num(u, "devices"), flag(u, "online") ? "yes" : "no", flag(u, "banned") ? "yes" : "no");
    }
}

int pt_ctl_show(FILE *out, FILE *err, const char *cmd, const char *action, const char *answer, size_t len,
                bool json)
{
    cJSON *a = pt_ctl_json_object(answer, len); /* the protocol's rule, as the server reads */
    if (!a) {
        fprintf(err, "packtrackctl: packtrackd's answer is not a JSON object\n");
        return PT_CTL_EXIT_UNREACHABLE;
    }
    bool ok = flag(a, "ok");
    int rc = ok ? PT_CTL_EXIT_OK : PT_CTL_EXIT_FAILED;
    if (json) {
        char *t = cJSON_PrintUnformatted(a);
        if (t) fprintf(out, "%s\n", t);
        free(t);
    } else if (!ok) {
        if (strcmp(cmd, "reload") == 0) fprintf(out, "FAIL\n");
        fprintf(err, "packtrackctl: %s: %s\n", cmd, str(a, "error") ? str(a, "error") : "failed");
    } else if (strcmp(cmd, "status") == 0) {
        show_status(out, a);
    } else if (strcmp(cmd, "users") == 0) {
        show_users(out, a);
    } else if (strcmp(cmd, "user") == 0) {
        if (strcmp(action, "ban") == 0)
            fprintf(out, "banned %s (%.0f connections closed)\n", text(a, "name"), num(a, "connections_closed"));
        else if (strcmp(action, "unban") == 0)
            fprintf(out, "unbanned %s\n", text(a, "name"));
        else
            fprintf(out, "deleted %s: %.0f devices, %.0f queued messages; the name stays reserved\n",
                    text(a, "name"), num(a, "devices_deleted"), num(a, "queued_deleted"));
    } else if (strcmp(cmd, "reload") == 0) {
        fprintf(out, "OK\n");
        if (str(a, "message")) fprintf(err, "packtrackctl: %s\n", str(a, "message"));
    } else if (strcmp(cmd, "reopen-logs") == 0) {
        fprintf(out, "%s\n", str(a, "message") ? str(a, "message") : "OK");
    } else if (strcmp(cmd, "backup") == 0) {
        fprintf(out,
                "backup written to %s: format %.0f, schema %.0f, %.0f bytes of database, %.0f users, "
                "%.0f queued messages\n",
                text(a, "file"), num(a, "format"), num(a, "schema"), num(a, "db_bytes"), num(a, "users"),
                num(a, "queued"));
    } else if (strcmp(cmd, "metrics") == 0) {
        fputs(str(a, "text") ? str(a, "text") : "", out);
    }
    cJSON_Delete(a);
    return rc;
}
