/*
 * The configuration file (pt_config.h). libinih splits the lines; a reader of our
 * own feeds it one physical line at a time, so that every problem can be placed at
 * FILE:LINE:COL, checks the syntax inih would only count, and lets the parse go on
 * past the first problem so that one run reports them all.
 */
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/pt_cluster.h"
#include "server/pt_config.h"

/* ---- values ------------------------------------------------------------------------------ */

int pt_parse_listen(const char *arg, char *host, size_t hostlen, uint16_t *port)
{
    return pt_parse_hostport(arg, host, hostlen, port);
}

int pt_parse_listen_list(const char *list, char *host, size_t hostlen, uint16_t *port, char *also,
                         size_t alsolen)
{
    size_t n = 0, used = 0;
    also[0] = 0;
    for (const char *p = list;;) {
        while (*p == ' ' || *p == '\t') p++;
        const char *end = p + strcspn(p, ",");
        const char *e = end;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t')) e--;
        char item[300], h[256];
        uint16_t pt;
        if ((size_t)(e - p) >= sizeof item || ++n > PT_SERVER_MAX_LISTEN) return PT_ERR_INVAL;
        memcpy(item, p, (size_t)(e - p));
        item[e - p] = 0;
        if (n == 1) {
            if (pt_parse_listen(item, host, hostlen, port) != 0) return PT_ERR_INVAL;
        } else {
            int w = pt_parse_listen(item, h, sizeof h, &pt) != 0
                        ? -1
                        : snprintf(also + used, alsolen - used, "%s%s", used ? "," : "", item);
            if (w < 0 || (size_t)w >= alsolen - used) return PT_ERR_INVAL;
            used += (size_t)w;
        }
        if (!*end) return 0;
        p = end + 1;
    }
}

int pt_parse_listen_local(const char *arg, char *host, size_t hostlen, uint16_t *port)
{
    uint32_t p;
    const char *digits = arg[0] == ':' ? arg + 1 : arg;
    if (strchr(digits, ':') == NULL && pt_parse_uint(digits, 0, 65535, &p) == 0) {
        if (hostlen < sizeof "127.0.0.1") return PT_ERR_INVAL;
        memcpy(host, "127.0.0.1", sizeof "127.0.0.1");
        *port = (uint16_t)p;
        return 0;
    }
    return pt_parse_listen(arg, host, hostlen, port);
}

int pt_parse_uint(const char *arg, uint32_t min, uint32_t max, uint32_t *out)
{
    if (!*arg || *arg < '0' || *arg > '9') return PT_ERR_DECODE;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    if (*end) return PT_ERR_DECODE;
    if (errno || v < min || v > max) return PT_ERR_INVAL;
    *out = (uint32_t)v;
    return 0;
}

int pt_parse_bool(const char *arg, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < PT_ARRAY_LEN(yes); i++) {
        if (strcasecmp(arg, yes[i]) == 0) return *out = true, 0;
        if (strcasecmp(arg, no[i]) == 0) return *out = false, 0;
    }
    return PT_ERR_DECODE;
}

int pt_parse_secure_heap(const char *arg, uint32_t *kib)
{
    if (strcasecmp(arg, "auto") == 0) return *kib = PT_SECURE_HEAP_AUTO, 0;
    if (strcasecmp(arg, "off") == 0) return *kib = PT_SECURE_HEAP_OFF, 0;
    return pt_parse_uint(arg, 64, 4u * 1024 * 1024, kib);
}

int pt_parse_workers(const char *arg, uint32_t *n)
{
    if (strcasecmp(arg, "auto") == 0) return *n = 0, 0;
    int rc = pt_parse_uint(arg, 0, PT_SERVER_MAX_WORKERS, n);
    if (rc == 0 && *n == 0) *n = PT_SERVER_WORKERS_NONE;
    return rc;
}

int pt_parse_seconds(const char *arg, uint32_t max_s, uint32_t *out_ms)
{
    uint32_t v;
    int rc = pt_parse_uint(arg, 1, max_s, &v);
    if (rc != 0) return rc;
    *out_ms = v * 1000u;
    return 0;
}

/* ---- the keys ------------------------------------------------------------------------------ */

static const pt_config_key_info keys[PT_CFG_NKEYS] = {
    [PT_CFG_LISTEN] = {"server", "listen", false},
    [PT_CFG_DATA] = {"server", "data", false},
    [PT_CFG_SUITES] = {"server", "suites", false},
    [PT_CFG_LOG_LEVEL] = {"server", "log_level", true},
    [PT_CFG_LOG_FILE] = {"server", "log_file", true},
    [PT_CFG_METRICS] = {"server", "metrics_listen", false},
    [PT_CFG_HANDSHAKE_TIMEOUT] = {"limits", "handshake_timeout", true},
    [PT_CFG_IDLE_TIMEOUT] = {"limits", "idle_timeout", true},
    [PT_CFG_SESSION_EXPIRY] = {"limits", "session_expiry", true},
    [PT_CFG_MAX_CONNECTIONS] = {"limits", "max_connections", true},
    [PT_CFG_QUEUE_QUOTA] = {"limits", "queue_quota", true},
    [PT_CFG_MAX_CONNS_PER_IP] = {"limits", "max_conns_per_ip", true},
    [PT_CFG_RATE_LIMIT] = {"limits", "rate_limit", true},
    [PT_CFG_BAN_TIME] = {"limits", "ban_time", true},
    [PT_CFG_OBFS_MODE] = {"obfuscation", "mode", false},
    [PT_CFG_OBFS_NETWORK_KEY] = {"obfuscation", "network_key", false},
    [PT_CFG_OBFS_SERVER_ID] = {"obfuscation", "server_id", false},
    [PT_CFG_OBFS_HANDSHAKE_TIMEOUT] = {"obfuscation", "handshake_timeout", false},
    [PT_CFG_OBFS_DECOY] = {"obfuscation", "decoy", false},
    [PT_CFG_OBFS_DEFER_RULES] = {"obfuscation", "defer_rules", false},
    [PT_CFG_DISC_ENABLED] = {"discovery", "enabled", false},
    [PT_CFG_DISC_PORT] = {"discovery", "port", false},
    [PT_CFG_CLUSTER_NATS_URLS] = {"cluster", "nats_urls", false},
    [PT_CFG_CLUSTER_NODE_ID] = {"cluster", "node_id", false},
    [PT_CFG_CLUSTER_CREDENTIALS] = {"cluster", "credentials", false},
    [PT_CFG_CLUSTER_TLS_CA] = {"cluster", "tls_ca", false},
    [PT_CFG_CLUSTER_TLS_CERT] = {"cluster", "tls_cert", false},
    [PT_CFG_CLUSTER_TLS_KEY] = {"cluster", "tls_key", false},
    [PT_CFG_CLUSTER_REPLICAS] = {"cluster", "replicas", false},
    [PT_CFG_CLUSTER_CONSUMER_IDLE] = {"cluster", "consumer_idle", false},
    [PT_CFG_SECURE_HEAP] = {"server", "secure_heap", false},
    [PT_CFG_WORKERS] = {"server", "workers", false},
    [PT_CFG_CONFIRM_WAIT] = {"limits", "confirm_wait_ms", true},
    [PT_CFG_IP_RATE_LIMIT] = {"limits", "ip_rate_limit", true},
    [PT_CFG_IP_CONN_RATE] = {"limits", "ip_conn_rate", true},
};

const pt_config_key_info *pt_config_key_get(pt_config_key k)
{
    PT_ASSERT((unsigned)k < PT_CFG_NKEYS);
    return &keys[k];
}

static bool section_known(const char *name)
{
    return strcmp(name, "server") == 0 || strcmp(name, "limits") == 0 ||
           strcmp(name, "obfuscation") == 0 || strcmp(name, "discovery") == 0 ||
           strcmp(name, "cluster") == 0;
}

/* ---- diagnostics --------------------------------------------------------------------------- */

const char *pt_config_first_error(const pt_config_file *f)
{
    for (size_t i = 0; i < f->ndiags; i++)
        if (f->diags[i].error) return f->diags[i].text;
    return "";
}

static void diag(pt_config_file *f, const char *path, bool error, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void diag(pt_config_file *f, const char *path, bool error, int line, int col, const char *fmt, ...)
{
    if (error) f->nerrors++;
    else f->nwarnings++;
    pt_config_diag *d;
    if (f->ndiags < PT_CONFIG_MAX_DIAGS) {
        d = &f->diags[f->ndiags++];
    } else {
        /* full: only the first error displaces the last warning kept, so that a file
         * with errors always has one to show (pt_config_first_error, reload's reply) */
        if (!error || pt_config_first_error(f)[0]) return;
        d = &f->diags[PT_CONFIG_MAX_DIAGS - 1];
    }
    d->error = error;
    d->line = line;
    d->col = col;
    int n;
    if (path && line > 0) n = snprintf(d->text, sizeof d->text, "%s:%d:%d: %s: ", path, line, col, error ? "error" : "warning");
    else if (path) n = snprintf(d->text, sizeof d->text, "%s: %s: ", path, error ? "error" : "warning");
    else n = snprintf(d->text, sizeof d->text, "packtrackd: %s: ", error ? "error" : "warning");
    if (n < 0 || (size_t)n >= sizeof d->text) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->text + n, sizeof d->text - (size_t)n, fmt, ap);
    va_end(ap);
}

/* ---- the parse ----------------------------------------------------------------------------- */

typedef struct load_ctx {
    pt_config_file *f;
    FILE *fp;                   /* the file, or NULL: the lines come from mem */
    const char *mem;            /* pt_config_load_mem's buffer */
    size_t memlen, mempos;      /* mem's length, and where its next line starts */
    bool mem_failed;            /* out of memory copying a line of mem */
    bool had_section;           /* a [section] line came: keys are no longer before any */
    const char *path;
    int lineno;                 /* the physical line inih is parsing */
    char *raw;                  /* that line as read (getline buffer) */
    size_t rawcap;
    bool section_ok;            /* the current section is one we know */
} load_ctx;

static int col_of(const char *raw, const char *p) { return (int)(p - raw) + 1; }

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t') p++;
    return p;
}

/* The next physical line into x->raw, as getline() returns it: its length with the
 * '\n' (the last line may lack it), NUL bytes included, or -1 at the end. */
static ssize_t next_line(load_ctx *x)
{
    if (x->fp) return getline(&x->raw, &x->rawcap, x->fp);
    if (x->mempos >= x->memlen) return -1;
    const char *p = x->mem + x->mempos;
    const char *nl = memchr(p, '\n', x->memlen - x->mempos);
    size_t n = nl ? (size_t)(nl - p) + 1 : x->memlen - x->mempos;
    if (n >= SSIZE_MAX) return -1;
    if (n + 1 > x->rawcap) {
        char *raw = realloc(x->raw, n + 1);
        if (!raw) {
            x->mem_failed = true;
            return -1;
        }
        x->raw = raw;
        x->rawcap = n + 1;
    }
    memcpy(x->raw, p, n);
    x->raw[n] = 0;
    x->mempos += n;
    return (ssize_t)n;
}

/* One physical line for inih; a line inih would reject or misread is reported here
 * and handed over as a comment, so the parse goes on. */
static char *reader(char *str, int num, void *stream)
{
    load_ctx *x = stream;
    pt_config_file *f = x->f;
    ssize_t n = next_line(x);
    if (n < 0) return NULL;
    x->lineno++;
    if (memchr(x->raw, 0, (size_t)n)) {
        diag(f, x->path, true, x->lineno, col_of(x->raw, memchr(x->raw, 0, (size_t)n)), "NUL byte in the file");
        strcpy(str, ";\n");
        return str;
    }
    while (n > 0 && (x->raw[n - 1] == '\n' || x->raw[n - 1] == '\r')) x->raw[--n] = 0;
    const char *p = x->raw;
    /* a UTF-8 byte order mark; strncmp: the line may be shorter than it */
    if (x->lineno == 1 && strncmp(p, "\xEF\xBB\xBF", 3) == 0) p += 3;
    p = skip_ws(p);                 /* indentation never continues a value here */
    size_t len = strlen(p);
    if ((size_t)num < 3 || len > (size_t)num - 3) {
        diag(f, x->path, true, x->lineno, num - 2, "line longer than %d characters", num - 3);
        strcpy(str, ";\n");
        return str;
    }
    if (*p == 0 || *p == ';' || *p == '#') {
        strcpy(str, ";\n");
        return str;
    }
    if (*p == '[') {
        x->had_section = true;
        const char *close = strchr(p, ']');
        if (!close) {
            diag(f, x->path, true, x->lineno, col_of(x->raw, p), "expected ']' after the section name");
            x->section_ok = false;
            strcpy(str, ";\n");
            return str;
        }
        const char *rest = skip_ws(close + 1);
        if (*rest && *rest != ';' && *rest != '#')
            diag(f, x->path, true, x->lineno, col_of(x->raw, rest), "unexpected text after the section name");
        char name[64];
        const char *ns = skip_ws(p + 1);
        size_t nl = (size_t)(close - ns);
        while (nl && (ns[nl - 1] == ' ' || ns[nl - 1] == '\t')) nl--;
        snprintf(name, sizeof name, "%.*s", (int)(nl < sizeof name ? nl : sizeof name - 1), ns);
        x->section_ok = section_known(name);
        if (!x->section_ok)
            diag(f, x->path, true, x->lineno, col_of(x->raw, ns),
                 "unknown section [%s] (expected [server], [limits], [obfuscation], [discovery] or [cluster])", name);
        /* libinih takes what is between the brackets as it is: "[ server ]" is given
         * to it as "[server]" (num >= len + 3 >= the name's length + 3) */
        snprintf(str, (size_t)num, "[%s]\n", name);
        return str;
    } else {
        size_t k = strcspn(p, "=:");
        if (!p[k]) {
            diag(f, x->path, true, x->lineno, col_of(x->raw, p), "expected 'key = value' or '[section]'");
            strcpy(str, ";\n");
            return str;
        }
        if (k == 0) {
            diag(f, x->path, true, x->lineno, col_of(x->raw, p), "missing key before '%c'", p[0]);
            strcpy(str, ";\n");
            return str;
        }
    }
    memcpy(str, p, len);
    str[len] = '\n';
    str[len + 1] = 0;
    return str;
}

/* What to quote of a bad value: never a network key, at most 64 bytes. */
static const char *shown(const char *name, const char *value, char *buf, size_t len)
{
    if (strcmp(name, "network_key") == 0 && !strchr(value, '/')) return "...";
    snprintf(buf, len, "%.64s%s", value, strlen(value) > 64 ? "..." : "");
    return buf;
}

static int on_kv(void *user, const char *section, const char *name, const char *value)
{
    load_ctx *x = user;
    pt_config_file *f = x->f;
    bool bom = x->lineno == 1 && strncmp(x->raw, "\xEF\xBB\xBF", 3) == 0;
    const char *p = skip_ws(x->raw + (bom ? 3 : 0));
    int kcol = col_of(x->raw, p);
    /* in an unknown section: reported at its header */
    if (!x->section_ok) {
        if (!x->had_section)
            diag(f, x->path, true, x->lineno, kcol, "'%s' is before any [section]", name);
        return 1;
    }
    const char *eq = p + strcspn(p, "=:");
    int vcol = col_of(x->raw, *eq ? skip_ws(eq + 1) : eq);
    int k = -1;
    for (int i = 0; i < PT_CFG_NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0) k = i;
    if (k < 0) {
        char known[300] = "";
        size_t used = 0;
        for (int i = 0; i < PT_CFG_NKEYS; i++) {
            if (strcmp(keys[i].section, section) != 0) continue;
            int w = snprintf(known + used, sizeof known - used, "%s%s", used ? ", " : "", keys[i].name);
            if (w > 0 && (size_t)w < sizeof known - used) used += (size_t)w;
        }
        diag(f, x->path, true, x->lineno, kcol, "unknown key '%s' in [%s] (known: %s)", name, section, known);
        return 1;
    }
    if (f->set & PT_CFG_BIT(k))
        diag(f, x->path, false, x->lineno, kcol, "'%s' is set again (first on line %d); this value wins",
             name, f->line[k]);
    f->set |= PT_CFG_BIT(k);
    f->line[k] = x->lineno;
    char q[80];
    const char *sv = shown(name, value, q, sizeof q);
    uint32_t v;
    int rc;
#define BAD(...) diag(f, x->path, true, x->lineno, vcol, __VA_ARGS__)
#define SECONDS(field, max)                                                                        \
    if ((rc = pt_parse_seconds(value, max, &f->cfg.field)) == PT_ERR_DECODE)                       \
        BAD("%s: expected a whole number of seconds, got '%s'", name, sv);                        \
    else if (rc)                                                                                   \
        BAD("%s: %s is out of range (1 to %u seconds)", name, sv, (unsigned)(max))
#define NUMBER(field, min, max)                                                                    \
    if ((rc = pt_parse_uint(value, min, max, &v)) == PT_ERR_DECODE)                                \
        BAD("%s: expected a whole number, got '%s'", name, sv);                                   \
    else if (rc)                                                                                   \
        BAD("%s: %s is out of range (%u to %u)", name, sv, (unsigned)(min), (unsigned)(max));      \
    else                                                                                           \
        f->cfg.field = v
    switch ((pt_config_key)k) {
    case PT_CFG_LISTEN:
        if (pt_parse_listen_list(value, f->host, sizeof f->host, &f->cfg.port, f->listen_also,
                                 sizeof f->listen_also) != 0)
            BAD("listen: expected HOST:PORT or [V6]:PORT with a port 0 to 65535 (up to %d, comma "
                "separated), got '%s'", PT_SERVER_MAX_LISTEN, sv);
        f->cfg.host = f->host;
        f->cfg.listen_also = f->listen_also[0] ? f->listen_also : NULL;
        break;
    case PT_CFG_DATA:
        if (!*value || strlen(value) >= sizeof f->data) BAD("data: expected a directory path");
        snprintf(f->data, sizeof f->data, "%s", value);
        f->cfg.data_dir = f->data;
        break;
    case PT_CFG_SUITES: {
        int ns = pt_suite_list_parse(value, f->cfg.suites, PT_CHAN_MAX_SUITES);
        if (ns < 0) BAD("suites: expected a comma-separated list of known suites, got '%s'", sv);
        else f->cfg.nsuites = (size_t)ns;
        break;
    }
    case PT_CFG_LOG_LEVEL: {
        pt_log_level lvl;
        if (pt_log_parse_level(value, &lvl) != 0) BAD("log_level: expected error, warn, info or debug, got '%s'", sv);
        f->log_level = (int)lvl;
        break;
    }
    case PT_CFG_LOG_FILE:
        if (strlen(value) >= sizeof f->log_file) BAD("log_file: path too long");
        snprintf(f->log_file, sizeof f->log_file, "%s", value);
        f->cfg.log_file = f->log_file[0] ? f->log_file : NULL;
        break;
    case PT_CFG_METRICS:
        if (pt_parse_listen_local(value, f->metrics_host, sizeof f->metrics_host, &f->cfg.metrics_port) != 0)
            BAD("metrics_listen: expected HOST:PORT, [V6]:PORT or :PORT, got '%s'", sv);
        f->cfg.metrics_host = f->metrics_host;
        break;
    case PT_CFG_HANDSHAKE_TIMEOUT: SECONDS(handshake_timeout_ms, 3600); break;
    case PT_CFG_IDLE_TIMEOUT: SECONDS(idle_timeout_ms, 86400); break;
    case PT_CFG_SESSION_EXPIRY: SECONDS(session_expiry_ms, 30 * 86400); break;
    case PT_CFG_MAX_CONNECTIONS: NUMBER(max_connections, 1, 1000000); break;
    case PT_CFG_QUEUE_QUOTA: NUMBER(queue_quota, 1, 100000000); break;
    case PT_CFG_CONFIRM_WAIT:
        NUMBER(confirm_wait_ms, 0, 1000);
        if (rc == 0 && v == 0) f->cfg.confirm_wait_ms = PT_SERVER_CONFIRM_WAIT_OFF;
        break;
    case PT_CFG_MAX_CONNS_PER_IP: NUMBER(max_conns_per_ip, 1, 1000000); break;
    case PT_CFG_RATE_LIMIT: NUMBER(rate_limit, 1, 10000000); break;
    case PT_CFG_IP_RATE_LIMIT: NUMBER(ip_rate_limit, 1, 100000000); break;
    case PT_CFG_IP_CONN_RATE: NUMBER(ip_conn_rate, 1, 1000000); break;
    case PT_CFG_BAN_TIME: NUMBER(ban_s, 1, 30 * 86400); break;
    case PT_CFG_DISC_ENABLED: {
        bool on;
        if (pt_parse_bool(value, &on) != 0) BAD("enabled: expected true or false, got '%s'", sv);
        else f->cfg.discovery_off = !on;
        break;
    }
    case PT_CFG_DISC_PORT:
        if ((rc = pt_parse_uint(value, 1, 65535, &v)) == PT_ERR_DECODE) BAD("port: expected a UDP port number, got '%s'", sv);
        else if (rc) BAD("port: %s is out of range (1 to 65535)", sv);
        else f->cfg.discovery_port = (uint16_t)v;
        break;
    case PT_CFG_CLUSTER_NATS_URLS:
        if (pt_cluster_urls_check(value) != 0 || strlen(value) >= sizeof f->nats_urls)
            BAD("nats_urls: expected nats://HOST:PORT or tls://HOST:PORT, comma separated, got '%s'", sv);
        snprintf(f->nats_urls, sizeof f->nats_urls, "%s", value);
        f->cfg.cluster.nats_urls = f->nats_urls[0] ? f->nats_urls : NULL;
        break;
    case PT_CFG_CLUSTER_NODE_ID: NUMBER(cluster.node_id, 1, PT_CLUSTER_NODE_ID_MAX); break;
    case PT_CFG_CLUSTER_REPLICAS: NUMBER(cluster.replicas, 1, 5); break;
    case PT_CFG_CLUSTER_CONSUMER_IDLE: NUMBER(cluster.consumer_idle_s, 1, 31536000); break;
    case PT_CFG_SECURE_HEAP:
        if (pt_parse_secure_heap(value, &v) != 0)
            BAD("secure_heap: expected auto, off or a size in KiB from 64 to 4194304, got '%s'", sv);
        else f->cfg.secure_heap_kib = v;
        break;
    case PT_CFG_WORKERS:
        if (pt_parse_workers(value, &v) != 0) BAD("workers: expected auto or 0 to 64, got '%s'", sv);
        else f->cfg.workers = v;
        break;
    case PT_CFG_CLUSTER_CREDENTIALS:
    case PT_CFG_CLUSTER_TLS_CA:
    case PT_CFG_CLUSTER_TLS_CERT:
    case PT_CFG_CLUSTER_TLS_KEY: {
        char *buf = k == PT_CFG_CLUSTER_CREDENTIALS ? f->nats_creds
                    : k == PT_CFG_CLUSTER_TLS_CA   ? f->nats_tls_ca
                    : k == PT_CFG_CLUSTER_TLS_CERT ? f->nats_tls_cert
                                                   : f->nats_tls_key;
        const char **field = k == PT_CFG_CLUSTER_CREDENTIALS ? &f->cfg.cluster.credentials
                             : k == PT_CFG_CLUSTER_TLS_CA   ? &f->cfg.cluster.tls_ca
                             : k == PT_CFG_CLUSTER_TLS_CERT ? &f->cfg.cluster.tls_cert
                                                            : &f->cfg.cluster.tls_key;
        if (!*value || strlen(value) >= sizeof f->nats_creds) BAD("%s: expected a file path", name);
        else if (access(value, R_OK) != 0) BAD("%s: cannot read '%s': %s", name, sv, strerror(errno));
        snprintf(buf, sizeof f->nats_creds, "%s", value);
        *field = buf[0] ? buf : NULL;
        break;
    }
    case PT_CFG_OBFS_NETWORK_KEY:
        f->network_key_inline = *value && !strchr(value, '/');
        if (*value && strchr(value, '/') && access(value, R_OK) != 0) {
            BAD("network_key: cannot read key file '%s': %s", sv, strerror(errno));
            break;
        }
        struct stat kst;
        if (*value && strchr(value, '/') && stat(value, &kst) == 0 && (kst.st_mode & 077))
            diag(f, x->path, false, x->lineno, vcol,
                 "network_key: key file %s is accessible to other users (mode %04o); chmod 600 it",
                 value, (unsigned)(kst.st_mode & 07777));
        /* fall through */
    default: {
        const char *why = pt_obfs_config_set(&f->cfg.obfs, name, value);
        if (why && strcmp(name, "network_key") == 0) BAD("%s", why);
        else if (why) BAD("%s, got '%s'", why, sv);
        break;
    }
    }
#undef SECONDS
#undef NUMBER
#undef BAD
    return 1;
}

/* The parse of x's lines, the file's or the buffer's, into x->f. */
static int load(load_ctx *x)
{
    pt_config_file *out = x->f;
    x->section_ok = false;
    int rc = ini_parse_stream(reader, x, on_kv, x);
    bool read_err = x->fp ? ferror(x->fp) : x->mem_failed;
    free(x->raw);
    x->raw = NULL;
    if (read_err) diag(out, x->path, true, 0, 0, "read error");
    /* a line inih refused that the reader did not (none known) */
    if (rc > 0 && out->nerrors == 0)
        diag(out, x->path, true, rc, 1, "not INI syntax (expected [section] or key = value)");
    return out->nerrors ? PT_ERR_INVAL : 0;
}

int pt_config_load(pt_config_file *out, const char *path)
{
    memset(out, 0, sizeof *out);
    FILE *fp = fopen(path, "r");
    if (!fp) {
        diag(out, path, true, 0, 0, "cannot read the configuration file: %s", strerror(errno));
        return PT_ERR_IO;
    }
    load_ctx x = {.f = out, .fp = fp, .path = path};
    int rc = load(&x);
    fclose(fp);
    return rc;
}

int pt_config_load_mem(pt_config_file *out, const char *name, const char *data, size_t len)
{
    PT_ASSERT(out && name && (data || len == 0));
    memset(out, 0, sizeof *out);
    load_ctx x = {.f = out, .mem = data, .memlen = len, .path = name};
    return load(&x);
}

/* ---- the environment ------------------------------------------------------------------------ */

/* The diagnostic's place for key k: its line in f when the file set it and the
 * command line did not. */
static int key_line(const pt_config_file *f, const pt_server_config *cfg, pt_config_key k)
{
    if (!f || (cfg->pinned & PT_CFG_BIT(k)) || !(f->set & PT_CFG_BIT(k))) return 0;
    return f->line[k];
}

static void check_dir_file(pt_config_file *f, const char *path, int line, const char *dir,
                           const char *name, int mode, bool secret)
{
    char p[1200];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (stat(p, &st) != 0) return; /* created at startup */
    if (access(p, mode) != 0) {
        diag(f, path, true, line, line ? 1 : 0, "%s is not %s by uid %u: %s", p,
             mode & W_OK ? "readable and writable" : "readable", (unsigned)geteuid(), strerror(errno));
        return;
    }
    if (secret && (st.st_mode & 077))
        diag(f, path, false, line, line ? 1 : 0, "%s is accessible to other users (mode %04o); chmod 600 it",
             p, (unsigned)(st.st_mode & 07777));
}

void pt_config_check_env(pt_config_file *f, const char *path, const pt_server_config *cfg)
{
    pt_config_file *fin = path ? f : NULL;
    const char *where = path;
    char err[300];
    if (pt_obfs_config_check(&cfg->obfs, err, sizeof err) != 0) {
        int line = key_line(fin, cfg, PT_CFG_OBFS_MODE);
        diag(f, line ? where : NULL, true, line, line ? 1 : 0, "%s", err);
    }
    /* the data directory and what the server reads in it */
    const char *dir = cfg->data_dir ? cfg->data_dir : PT_SERVER_DEFAULT_DATA;
    int dline = key_line(fin, cfg, PT_CFG_DATA);
    const char *dwhere = dline ? where : NULL;
    struct stat st;
    if (stat(dir, &st) != 0) {
        char parent[1100];
        snprintf(parent, sizeof parent, "%s", dir);
        char *slash = strrchr(parent, '/');
        if (slash == parent) slash[1] = 0;
        else if (slash) *slash = 0;
        else strcpy(parent, ".");
        if (errno != ENOENT)
            diag(f, dwhere, true, dline, dline ? 1 : 0, "data directory %s: %s", dir, strerror(errno));
        else if (access(parent, W_OK | X_OK) != 0)
            diag(f, dwhere, true, dline, dline ? 1 : 0,
                 "data directory %s does not exist and %s is not writable by uid %u: %s", dir, parent,
                 (unsigned)geteuid(), strerror(errno));
    } else if (!S_ISDIR(st.st_mode)) {
        diag(f, dwhere, true, dline, dline ? 1 : 0, "data directory %s is not a directory", dir);
    } else if (access(dir, R_OK | W_OK | X_OK) != 0) {
        diag(f, dwhere, true, dline, dline ? 1 : 0, "data directory %s is not usable by uid %u: %s", dir,
             (unsigned)geteuid(), strerror(errno));
    } else {
        check_dir_file(f, dwhere, dline, dir, "server.key", R_OK, true);
        check_dir_file(f, dwhere, dline, dir, "packtrack.db", R_OK | W_OK, false);
    }
    /* the log file */
    if (cfg->log_file) {
        int line = key_line(fin, cfg, PT_CFG_LOG_FILE);
        const char *w = line ? where : NULL;
        if (stat(cfg->log_file, &st) == 0) {
            if (access(cfg->log_file, W_OK) != 0)
                diag(f, w, true, line, line ? 1 : 0, "log_file %s is not writable by uid %u: %s", cfg->log_file,
                     (unsigned)geteuid(), strerror(errno));
        } else {
            char parent[1100];
            snprintf(parent, sizeof parent, "%s", cfg->log_file);
            char *slash = strrchr(parent, '/');
            if (slash == parent) slash[1] = 0;
            else if (slash) *slash = 0;
            else strcpy(parent, ".");
            if (access(parent, W_OK | X_OK) != 0)
                diag(f, w, true, line, line ? 1 : 0, "log_file %s cannot be created in %s by uid %u: %s",
                     cfg->log_file, parent, (unsigned)geteuid(), strerror(errno));
        }
    }
    /* cluster mode */
    const char *cerr = pt_cluster_config_error(&cfg->cluster);
    if (cerr) {
        int line = key_line(fin, cfg, PT_CFG_CLUSTER_NATS_URLS);
        diag(f, line ? where : NULL, true, line, line ? 1 : 0, "%s", cerr);
    }
    /* the metrics endpoint is not authenticated */
    if (cfg->metrics_host && strcmp(cfg->metrics_host, "127.0.0.1") != 0 &&
        strcmp(cfg->metrics_host, "::1") != 0 && strncmp(cfg->metrics_host, "127.", 4) != 0) {
        int line = key_line(fin, cfg, PT_CFG_METRICS);
        diag(f, line ? where : NULL, false, line, line ? 1 : 0,
             "metrics_listen: %s is not a loopback address; /metrics is not authenticated",
             cfg->metrics_host);
    }
    /* a network key written into a file others can read */
    if (fin && cfg->obfs.nklen && !(cfg->pinned & PT_CFG_BIT(PT_CFG_OBFS_NETWORK_KEY)) &&
        fin->network_key_inline && stat(path, &st) == 0 && (st.st_mode & 077)) {
        diag(f, where, false, fin->line[PT_CFG_OBFS_NETWORK_KEY], 1,
             "the network key is in a file other users can read (mode %04o); chmod 600 it",
             (unsigned)(st.st_mode & 07777));
    }
}
