/* Fuzz target for pt_config_load_mem(): arbitrary bytes as packtrackd's
 * configuration file. Properties, each abort()ing when broken:
 *  - the result is 0 or PT_ERR_INVAL, and PT_ERR_INVAL exactly when an error was
 *    counted; min(counted, the table) diagnostics are kept (the first ones, but the
 *    last slot may hold the first error instead of a warning),
 *    each NUL-terminated, "NAME:LINE:COL: error: " or "...: warning: " as its flag
 *    says, with LINE a line of the input (1 to the number of lines) and COL >= 1;
 *    with an error counted, one is kept (pt_config_first_error is never "");
 *  - every key marked set has the line of the input where it was set;
 *  - a file that loads has every value it set within the range its key allows, and
 *    its strings point into the file's struct, NUL-terminated;
 *  - loading the same bytes again gives the same diagnostics;
 *  - stability: the values a file that loads sets (every key but suites and the
 *    [obfuscation] ones), written back as a canonical file ("[section]" lines,
 *    "key=value"), load without an error or a warning into the same effective
 *    values, and that file written back again is the same text.
 * Inputs that could name a key file for network_key (a '/' anywhere and the key's
 * name) are skipped: the loader reads that file (a FIFO or /dev/stdin would hang the
 * run, and the answer would depend on the machine). access() and stat() of the
 * cluster's paths are left in: they do not block. */
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/pt_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_NAME "fuzz.conf"

static size_t fz_lines(const uint8_t *d, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += d[i] == '\n';
    return k + (n && d[n - 1] != '\n');
}

/* Whether d[n] holds the string w (memmem is a GNU extension). */
static bool fz_has(const uint8_t *d, size_t n, const char *w)
{
    size_t wl = strlen(w);
    for (size_t i = 0; i + wl <= n; i++)
        if (memcmp(d + i, w, wl) == 0) return true;
    return false;
}

static void fz_check_str(const char *s, const char *base, size_t cap)
{
    if (!s) return;
    if (s != base || !memchr(base, 0, cap)) abort();
}

static void fz_range(const pt_config_file *f, pt_config_key k, uint32_t v, uint32_t min,
                     uint32_t max)
{
    if ((f->set & PT_CFG_BIT(k)) && (v < min || v > max)) abort();
}

static void fz_check(const pt_config_file *f, int rc, size_t nlines)
{
    if (rc != 0 && rc != PT_ERR_INVAL) abort();
    if ((rc != 0) != (f->nerrors > 0)) abort();
    size_t total = f->nerrors + f->nwarnings;
    if (f->ndiags != (total < PT_CONFIG_MAX_DIAGS ? total : PT_CONFIG_MAX_DIAGS)) abort();
    if (f->nerrors && !pt_config_first_error(f)[0]) abort();
    for (size_t i = 0; i < f->ndiags; i++) {
        const pt_config_diag *d = &f->diags[i];
        if (!memchr(d->text, 0, sizeof d->text)) abort();
        if (d->line < 1 || (size_t)d->line > nlines || d->col < 1) abort();
        char head[100];
        snprintf(head, sizeof head, FZ_NAME ":%d:%d: %s: ", d->line, d->col,
                 d->error ? "error" : "warning");
        if (strncmp(d->text, head, strlen(head)) != 0) abort();
    }
    if (f->set >> PT_CFG_NKEYS) abort();
    for (int k = 0; k < PT_CFG_NKEYS; k++)
        if ((f->set & PT_CFG_BIT(k)) && (f->line[k] < 1 || (size_t)f->line[k] > nlines)) abort();
    if (rc != 0) return;

    const pt_server_config *c = &f->cfg;
    fz_check_str(c->host, f->host, sizeof f->host);
    fz_check_str(c->listen_also, f->listen_also, sizeof f->listen_also);
    fz_check_str(c->data_dir, f->data, sizeof f->data);
    fz_check_str(c->metrics_host, f->metrics_host, sizeof f->metrics_host);
    fz_check_str(c->log_file, f->log_file, sizeof f->log_file);
    fz_check_str(c->cluster.nats_urls, f->nats_urls, sizeof f->nats_urls);
    if (c->listen_also && !c->listen_also[0]) abort();
    if (c->data_dir && !c->data_dir[0]) abort();
    fz_range(f, PT_CFG_HANDSHAKE_TIMEOUT, c->handshake_timeout_ms, 1000, 3600 * 1000);
    fz_range(f, PT_CFG_IDLE_TIMEOUT, c->idle_timeout_ms, 1000, 86400 * 1000);
    fz_range(f, PT_CFG_SESSION_EXPIRY, c->session_expiry_ms, 1000, 30 * 86400 * 1000u);
    if (c->handshake_timeout_ms % 1000 || c->idle_timeout_ms % 1000 || c->session_expiry_ms % 1000)
        abort();
    fz_range(f, PT_CFG_MAX_CONNECTIONS, c->max_connections, 1, 1000000);
    fz_range(f, PT_CFG_QUEUE_QUOTA, c->queue_quota, 1, 100000000);
    if (c->confirm_wait_ms != PT_SERVER_CONFIRM_WAIT_OFF)
        fz_range(f, PT_CFG_CONFIRM_WAIT, c->confirm_wait_ms, 1, 1000);
    fz_range(f, PT_CFG_MAX_CONNS_PER_IP, c->max_conns_per_ip, 1, 1000000);
    fz_range(f, PT_CFG_RATE_LIMIT, c->rate_limit, 1, 10000000);
    fz_range(f, PT_CFG_IP_RATE_LIMIT, c->ip_rate_limit, 1, 100000000);
    fz_range(f, PT_CFG_IP_CONN_RATE, c->ip_conn_rate, 1, 1000000);
    fz_range(f, PT_CFG_BAN_TIME, c->ban_s, 1, 30 * 86400);
    fz_range(f, PT_CFG_DISC_PORT, c->discovery_port, 1, 65535);
    fz_range(f, PT_CFG_CLUSTER_REPLICAS, c->cluster.replicas, 1, 5);
    fz_range(f, PT_CFG_CLUSTER_CONSUMER_IDLE, c->cluster.consumer_idle_s, 1, 31536000);
    if (c->workers != PT_SERVER_WORKERS_NONE)
        fz_range(f, PT_CFG_WORKERS, c->workers, 0, PT_SERVER_MAX_WORKERS);
    if (c->secure_heap_kib != PT_SECURE_HEAP_OFF && c->secure_heap_kib != PT_SECURE_HEAP_AUTO)
        fz_range(f, PT_CFG_SECURE_HEAP, c->secure_heap_kib, 64, 4u * 1024 * 1024);
    if ((f->set & PT_CFG_BIT(PT_CFG_LOG_LEVEL)) &&
        (f->log_level < PT_LOG_ERROR || f->log_level > PT_LOG_DEBUG))
        abort();
}

/* ---- the canonical file -------------------------------------------------------------------- */

typedef struct fz_text {
    char buf[16384];
    size_t len;
    uint64_t keys;       /* the keys written */
    const char *section; /* the last [section] written */
} fz_text;

static void fz_put(fz_text *t, pt_config_key k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fz_put(fz_text *t, pt_config_key k, const char *fmt, ...)
{
    const pt_config_key_info *ki = pt_config_key_get(k);
    char line[2200];
    int n = snprintf(line, sizeof line, "%s=", ki->name);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0 || (size_t)(n + m) >= sizeof line) abort();
    /* inih's line limit: a value a file could hold within it may come back longer
     * (brackets around a host): such a key is left out, not a finding */
    if (n + m > ini_max_line - 3) return;
    if (!t->section || strcmp(t->section, ki->section) != 0) {
        t->len += (size_t)snprintf(t->buf + t->len, sizeof t->buf - t->len, "[%s]\n", ki->section);
        t->section = ki->section;
    }
    if (t->len + (size_t)(n + m) + 2 > sizeof t->buf) abort();
    t->len += (size_t)snprintf(t->buf + t->len, sizeof t->buf - t->len, "%s\n", line);
    t->keys |= PT_CFG_BIT(k);
}

/* HOST:PORT as pt_parse_listen reads it back to host and port. */
static void fz_addr(char *out, size_t cap, const char *host, unsigned port)
{
    bool bracket = host[0] == '[' || host[0] == ' ' || host[0] == '\t' || host[0] == '\v' ||
                   host[0] == '\f' || host[0] == '\r';
    snprintf(out, cap, bracket ? "[%s]:%u" : "%s:%u", host, port);
}

static void fz_write(const pt_config_file *f, fz_text *t)
{
    static const char *const lv[] = {"error", "warn", "info", "debug"};
    const pt_server_config *c = &f->cfg;
    char a[600];
    memset(t, 0, sizeof *t);
#define SET(k) (f->set & PT_CFG_BIT(k))
    if (SET(PT_CFG_LISTEN)) {
        fz_addr(a, sizeof a, c->host, c->port);
        fz_put(t, PT_CFG_LISTEN, "%s%s%s", a, c->listen_also ? "," : "",
               c->listen_also ? c->listen_also : "");
    }
    if (SET(PT_CFG_DATA)) fz_put(t, PT_CFG_DATA, "%s", c->data_dir);
    if (SET(PT_CFG_LOG_LEVEL)) fz_put(t, PT_CFG_LOG_LEVEL, "%s", lv[f->log_level]);
    if (SET(PT_CFG_LOG_FILE)) fz_put(t, PT_CFG_LOG_FILE, "%s", c->log_file ? c->log_file : "");
    if (SET(PT_CFG_METRICS)) {
        fz_addr(a, sizeof a, c->metrics_host, c->metrics_port);
        fz_put(t, PT_CFG_METRICS, "%s", a);
    }
    if (SET(PT_CFG_SECURE_HEAP))
        fz_put(t, PT_CFG_SECURE_HEAP, "%s",
               c->secure_heap_kib == PT_SECURE_HEAP_AUTO ? "auto"
               : c->secure_heap_kib == PT_SECURE_HEAP_OFF
                   ? "off"
                   : (snprintf(a, sizeof a, "%u", c->secure_heap_kib), a));
    if (SET(PT_CFG_WORKERS))
        fz_put(t, PT_CFG_WORKERS, "%s",
               c->workers == 0 ? "auto"
               : c->workers == PT_SERVER_WORKERS_NONE
                   ? "0"
                   : (snprintf(a, sizeof a, "%u", c->workers), a));
    if (SET(PT_CFG_HANDSHAKE_TIMEOUT))
        fz_put(t, PT_CFG_HANDSHAKE_TIMEOUT, "%u", c->handshake_timeout_ms / 1000);
    if (SET(PT_CFG_IDLE_TIMEOUT)) fz_put(t, PT_CFG_IDLE_TIMEOUT, "%u", c->idle_timeout_ms / 1000);
    if (SET(PT_CFG_SESSION_EXPIRY))
        fz_put(t, PT_CFG_SESSION_EXPIRY, "%u", c->session_expiry_ms / 1000);
    if (SET(PT_CFG_MAX_CONNECTIONS)) fz_put(t, PT_CFG_MAX_CONNECTIONS, "%u", c->max_connections);
    if (SET(PT_CFG_QUEUE_QUOTA)) fz_put(t, PT_CFG_QUEUE_QUOTA, "%u", c->queue_quota);
    if (SET(PT_CFG_CONFIRM_WAIT))
        fz_put(t, PT_CFG_CONFIRM_WAIT, "%u",
               c->confirm_wait_ms == PT_SERVER_CONFIRM_WAIT_OFF ? 0 : c->confirm_wait_ms);
    if (SET(PT_CFG_MAX_CONNS_PER_IP)) fz_put(t, PT_CFG_MAX_CONNS_PER_IP, "%u", c->max_conns_per_ip);
    if (SET(PT_CFG_RATE_LIMIT)) fz_put(t, PT_CFG_RATE_LIMIT, "%u", c->rate_limit);
    if (SET(PT_CFG_IP_RATE_LIMIT)) fz_put(t, PT_CFG_IP_RATE_LIMIT, "%u", c->ip_rate_limit);
    if (SET(PT_CFG_IP_CONN_RATE)) fz_put(t, PT_CFG_IP_CONN_RATE, "%u", c->ip_conn_rate);
    if (SET(PT_CFG_BAN_TIME)) fz_put(t, PT_CFG_BAN_TIME, "%u", c->ban_s);
    if (SET(PT_CFG_DISC_ENABLED))
        fz_put(t, PT_CFG_DISC_ENABLED, "%s", c->discovery_off ? "false" : "true");
    if (SET(PT_CFG_DISC_PORT)) fz_put(t, PT_CFG_DISC_PORT, "%u", c->discovery_port);
    if (SET(PT_CFG_CLUSTER_NATS_URLS))
        fz_put(t, PT_CFG_CLUSTER_NATS_URLS, "%s", c->cluster.nats_urls ? c->cluster.nats_urls : "");
    if (SET(PT_CFG_CLUSTER_NODE_ID)) fz_put(t, PT_CFG_CLUSTER_NODE_ID, "%u", c->cluster.node_id);
    if (SET(PT_CFG_CLUSTER_REPLICAS)) fz_put(t, PT_CFG_CLUSTER_REPLICAS, "%u", c->cluster.replicas);
    if (SET(PT_CFG_CLUSTER_CONSUMER_IDLE))
        fz_put(t, PT_CFG_CLUSTER_CONSUMER_IDLE, "%u", c->cluster.consumer_idle_s);
    if (SET(PT_CFG_CLUSTER_CREDENTIALS))
        fz_put(t, PT_CFG_CLUSTER_CREDENTIALS, "%s", c->cluster.credentials);
    if (SET(PT_CFG_CLUSTER_TLS_CA)) fz_put(t, PT_CFG_CLUSTER_TLS_CA, "%s", c->cluster.tls_ca);
    if (SET(PT_CFG_CLUSTER_TLS_CERT)) fz_put(t, PT_CFG_CLUSTER_TLS_CERT, "%s", c->cluster.tls_cert);
    if (SET(PT_CFG_CLUSTER_TLS_KEY)) fz_put(t, PT_CFG_CLUSTER_TLS_KEY, "%s", c->cluster.tls_key);
#undef SET
}

static bool fz_str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The values of the keys in mask agree. */
static bool fz_same_values(const pt_config_file *x, const pt_config_file *y, uint64_t mask)
{
    const pt_server_config *a = &x->cfg, *b = &y->cfg;
#define K(k) (mask & PT_CFG_BIT(k))
    return (x->set & mask) == (y->set & mask) &&
           (!K(PT_CFG_LISTEN) || (fz_str_eq(a->host, b->host) && a->port == b->port &&
                                  fz_str_eq(a->listen_also, b->listen_also))) &&
           (!K(PT_CFG_DATA) || fz_str_eq(a->data_dir, b->data_dir)) &&
           (!K(PT_CFG_LOG_LEVEL) || x->log_level == y->log_level) &&
           (!K(PT_CFG_LOG_FILE) || fz_str_eq(a->log_file, b->log_file)) &&
           (!K(PT_CFG_METRICS) ||
            (fz_str_eq(a->metrics_host, b->metrics_host) && a->metrics_port == b->metrics_port)) &&
           (!K(PT_CFG_SECURE_HEAP) || a->secure_heap_kib == b->secure_heap_kib) &&
           (!K(PT_CFG_WORKERS) || a->workers == b->workers) &&
           (!K(PT_CFG_HANDSHAKE_TIMEOUT) || a->handshake_timeout_ms == b->handshake_timeout_ms) &&
           (!K(PT_CFG_IDLE_TIMEOUT) || a->idle_timeout_ms == b->idle_timeout_ms) &&
           (!K(PT_CFG_SESSION_EXPIRY) || a->session_expiry_ms == b->session_expiry_ms) &&
           (!K(PT_CFG_MAX_CONNECTIONS) || a->max_connections == b->max_connections) &&
           (!K(PT_CFG_QUEUE_QUOTA) || a->queue_quota == b->queue_quota) &&
           (!K(PT_CFG_CONFIRM_WAIT) || a->confirm_wait_ms == b->confirm_wait_ms) &&
           (!K(PT_CFG_MAX_CONNS_PER_IP) || a->max_conns_per_ip == b->max_conns_per_ip) &&
           (!K(PT_CFG_RATE_LIMIT) || a->rate_limit == b->rate_limit) &&
           (!K(PT_CFG_IP_RATE_LIMIT) || a->ip_rate_limit == b->ip_rate_limit) &&
           (!K(PT_CFG_IP_CONN_RATE) || a->ip_conn_rate == b->ip_conn_rate) &&
           (!K(PT_CFG_BAN_TIME) || a->ban_s == b->ban_s) &&
           (!K(PT_CFG_DISC_ENABLED) || a->discovery_off == b->discovery_off) &&
           (!K(PT_CFG_DISC_PORT) || a->discovery_port == b->discovery_port) &&
           (!K(PT_CFG_CLUSTER_NATS_URLS) ||
            fz_str_eq(a->cluster.nats_urls, b->cluster.nats_urls)) &&
           (!K(PT_CFG_CLUSTER_NODE_ID) || a->cluster.node_id == b->cluster.node_id) &&
           (!K(PT_CFG_CLUSTER_REPLICAS) || a->cluster.replicas == b->cluster.replicas) &&
           (!K(PT_CFG_CLUSTER_CONSUMER_IDLE) ||
            a->cluster.consumer_idle_s == b->cluster.consumer_idle_s) &&
           (!K(PT_CFG_CLUSTER_CREDENTIALS) ||
            fz_str_eq(a->cluster.credentials, b->cluster.credentials)) &&
           (!K(PT_CFG_CLUSTER_TLS_CA) || fz_str_eq(a->cluster.tls_ca, b->cluster.tls_ca)) &&
           (!K(PT_CFG_CLUSTER_TLS_CERT) || fz_str_eq(a->cluster.tls_cert, b->cluster.tls_cert)) &&
           (!K(PT_CFG_CLUSTER_TLS_KEY) || fz_str_eq(a->cluster.tls_key, b->cluster.tls_key));
#undef K
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pt_config_file f, g, h;
    static fz_text t1, t2;
    const char *in = (const char *)data;
    if (memchr(data, '/', size) && fz_has(data, size, "network_key")) return 0;
    size_t nlines = fz_lines(data, size);
    int rc = pt_config_load_mem(&f, FZ_NAME, in, size);
    fz_check(&f, rc, nlines);

    int rc2 = pt_config_load_mem(&g, FZ_NAME, in, size);
    if (rc2 != rc || g.ndiags != f.ndiags || g.nerrors != f.nerrors || g.nwarnings != f.nwarnings)
        abort();
    for (size_t i = 0; i < f.ndiags; i++)
        if (strcmp(f.diags[i].text, g.diags[i].text) != 0) abort();
    if (rc != 0) return 0;

    fz_write(&f, &t1);
    int rc3 = pt_config_load_mem(&h, FZ_NAME, t1.buf, t1.len);
    fz_check(&h, rc3, fz_lines((const uint8_t *)t1.buf, t1.len));
    if (rc3 != 0 || h.nwarnings != 0 || h.set != t1.keys) abort();
    if (!fz_same_values(&f, &h, t1.keys)) abort();
    fz_write(&h, &t2);
    if (t1.len != t2.len || memcmp(t1.buf, t2.buf, t1.len) != 0) abort();
    return 0;
}
