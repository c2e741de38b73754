#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>

#include "server/pt_config.h"

int pt_parse_listen(const char *arg, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon = strrchr(arg, ':');
    if (!colon || colon == arg) return PT_ERR_INVAL;
    size_t hl = (size_t)(colon - arg);
    const char *h = arg;
    if (arg[0] == '[') {
        if (hl < 3 || arg[hl - 1] != ']') return PT_ERR_INVAL;
        h++;
        hl -= 2;
    }
    if (hl >= hostlen) return PT_ERR_INVAL;
    uint32_t p;
    if (pt_parse_uint(colon + 1, 0, 65535, &p) != 0) return PT_ERR_INVAL;
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = (uint16_t)p;
    return 0;
}

int pt_parse_uint(const char *arg, uint32_t min, uint32_t max, uint32_t *out)
{
    if (!*arg || *arg == '-' || *arg == '+' || *arg == ' ') return PT_ERR_INVAL;
    char *end;
    errno = 0;
    unsigned long v = strtoul(arg, &end, 10);
    if (errno || *end || v < min || v > max) return PT_ERR_INVAL;
    *out = (uint32_t)v;
    return 0;
}

int pt_parse_seconds(const char *arg, uint32_t max_s, uint32_t *out_ms)
{
    uint32_t v;
    if (pt_parse_uint(arg, 1, max_s, &v) != 0) return PT_ERR_INVAL;
    *out_ms = v * 1000u;
    return 0;
}

typedef struct load_ctx {
    pt_config_file *f;
    char *err;
    size_t errlen;
    const char *path;
    bool failed;
    char what[400];   /* the first error, without its line (inih reports that) */
} load_ctx;

static int on_kv(void *user, const char *section, const char *name, const char *value)
{
    load_ctx *x = user;
    pt_config_file *f = x->f;
    const char *why = NULL;
    uint32_t v;
    if (strcmp(section, "server") == 0) {
        if (strcmp(name, "listen") == 0) {
            if (pt_parse_listen(value, f->host, sizeof f->host, &f->cfg.port) != 0)
                why = "listen: expected HOST:PORT";
            f->cfg.host = f->host;
            f->has_listen = true;
        } else if (strcmp(name, "data") == 0) {
            if (!*value || strlen(value) >= sizeof f->data) why = "data: expected a directory";
            snprintf(f->data, sizeof f->data, "%s", value);
            f->cfg.data_dir = f->data;
            f->has_data = true;
        } else if (strcmp(name, "suites") == 0) {
            int n = pt_suite_list_parse(value, f->cfg.suites, PT_CHAN_MAX_SUITES);
            if (n < 0) why = "suites: expected a comma-separated list of known suites";
            else f->cfg.nsuites = (size_t)n;
            f->has_suites = true;
        } else if (strcmp(name, "metrics_listen") == 0) {
            if (pt_parse_listen(value, f->metrics_host, sizeof f->metrics_host, &f->cfg.metrics_port) != 0)
                why = "metrics_listen: expected HOST:PORT";
            f->cfg.metrics_host = f->metrics_host;
            f->has_metrics = true;
        } else if (strcmp(name, "log_level") == 0) {
            pt_log_level lvl;
            if (pt_log_parse_level(value, &lvl) != 0) why = "log_level: expected error, warn, info or debug";
            f->log_level = (int)lvl;
            f->has_log_level = true;
        } else {
            why = "unknown key in [server]";
        }
    } else if (strcmp(section, "limits") == 0) {
        if (strcmp(name, "handshake_timeout") == 0) {
            if (pt_parse_seconds(value, 3600, &f->cfg.handshake_timeout_ms)) why = "handshake_timeout: 1 to 3600 seconds";
        } else if (strcmp(name, "idle_timeout") == 0) {
            if (pt_parse_seconds(value, 86400, &f->cfg.idle_timeout_ms)) why = "idle_timeout: 1 to 86400 seconds";
        } else if (strcmp(name, "session_expiry") == 0) {
            if (pt_parse_seconds(value, 30 * 86400, &f->cfg.session_expiry_ms)) why = "session_expiry: 1 to 2592000 seconds";
        } else if (strcmp(name, "max_connections") == 0) {
            if (pt_parse_uint(value, 1, 1000000, &v)) why = "max_connections: 1 to 1000000";
            else f->cfg.max_connections = v;
        } else if (strcmp(name, "max_conns_per_ip") == 0) {
            if (pt_parse_uint(value, 1, 1000000, &v)) why = "max_conns_per_ip: 1 to 1000000";
            else f->cfg.max_conns_per_ip = v;
        } else if (strcmp(name, "rate_limit") == 0) {
            if (pt_parse_uint(value, 1, 10000000, &v)) why = "rate_limit: 1 to 10000000 messages/s";
            else f->cfg.rate_limit = v;
        } else if (strcmp(name, "ban_time") == 0) {
            if (pt_parse_uint(value, 1, 30 * 86400, &v)) why = "ban_time: 1 to 2592000 seconds";
            else f->cfg.ban_s = v;
        } else if (strcmp(name, "queue_quota") == 0) {
            if (pt_parse_uint(value, 1, 100000000, &v)) why = "queue_quota: 1 to 100000000";
            else f->cfg.queue_quota = v;
        } else {
            why = "unknown key in [limits]";
        }
    } else if (strcmp(section, "obfuscation") == 0) { /* obfs_conn.c */
        why = pt_obfs_config_set(&f->cfg.obfs, name, value);
        f->has_obfs = true;
    } else {
        why = "unknown section (expected [server], [limits] or [obfuscation])";
    }
    if (why && !x->failed) {
        snprintf(x->what, sizeof x->what, "%s (got '%s = %s')", why, name,
                 strcmp(name, "network_key") == 0 ? "..." : value); /* never echo a key */
        x->failed = true;
    }
    return why ? 0 : 1; /* 0 makes ini_parse_file return this line */
}

int pt_config_load(pt_config_file *out, const char *path, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    FILE *fp = fopen(path, "r");
    if (!fp) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return PT_ERR_IO;
    }
    load_ctx x = {.f = out, .err = err, .errlen = errlen, .path = path};
    int line = ini_parse_file(fp, on_kv, &x);
    fclose(fp);
    if (x.failed) {
        snprintf(err, errlen, "%s:%d: %s", path, line, x.what);
        return PT_ERR_INVAL;
    }
    if (line != 0) {
        snprintf(err, errlen, "%s:%d: not INI syntax (expected [section] or key = value)", path, line);
        return PT_ERR_INVAL;
    }
    return 0;
}
