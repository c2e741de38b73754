/*
 * Reloading the configuration (SIGHUP, `packtrackctl reload`): the file is read
 * and checked whole before anything changes, so an invalid file leaves the running
 * configuration in force (one error line with its FILE:LINE:COL). A valid one
 * applies the reloadable keys at once (log_level, log_file, [limits]) and logs
 * "requires restart: KEY" for each other key whose value differs from the running
 * one. Connections and sessions are never touched. A key the file no longer sets
 * goes back to its default; a key given on the command line keeps that value.
 */
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "discovery/pt_disc.h"
#include "server/pt_cluster.h"
#include "server/pt_config.h"
#include "server/pt_server_int.h"

static bool pinned(const pt_server *s, pt_config_key k) { return (s->cfg.pinned & PT_CFG_BIT(k)) != 0; }

/* A reloadable number: the file's value, else the default, unless pinned. */
static void reload_u32(pt_server *s, const pt_config_file *f, pt_config_key k, uint32_t *field,
                       uint32_t from_file, uint32_t dflt)
{
    if (pinned(s, k)) return;
    *field = (f->set & PT_CFG_BIT(k)) ? from_file : dflt;
}

static void needs_restart(const pt_server *s, pt_config_key k, bool differs, int *count)
{
    if (pinned(s, k) || !differs) return;
    const pt_config_key_info *ki = pt_config_key_get(k);
    if (strcmp(ki->section, "server") == 0) pt_log_warn("requires restart: %s", ki->name);
    else pt_log_warn("requires restart: %s.%s", ki->section, ki->name);
    (*count)++;
}

/* Logs "requires restart: KEY" for each restart-only key the file changes. */
static int compare_restart_keys(const pt_server *s, const pt_config_file *f)
{
    int n = 0;
    const pt_server_config *c = &f->cfg;
    bool set_listen = f->set & PT_CFG_BIT(PT_CFG_LISTEN);
    const char *host = set_listen ? c->host : PT_SERVER_DEFAULT_HOST;
    uint16_t port = set_listen ? c->port : PT_SERVER_DEFAULT_PORT;
    const char *also = set_listen && c->listen_also ? c->listen_also : "";
    needs_restart(s, PT_CFG_LISTEN,
                  strcmp(host, s->host) != 0 || port != s->cfg.port || strcmp(also, s->listen_also) != 0,
                  &n);
    const char *data = (f->set & PT_CFG_BIT(PT_CFG_DATA)) ? c->data_dir : PT_SERVER_DEFAULT_DATA;
    needs_restart(s, PT_CFG_DATA, strcmp(data, s->data_dir) != 0, &n);
    uint8_t defaults[PT_CHAN_MAX_SUITES];
    const uint8_t *suites = defaults;
    size_t nsuites = pt_suite_defaults(false, defaults);
    if ((f->set & PT_CFG_BIT(PT_CFG_SUITES)) && c->nsuites) suites = c->suites, nsuites = c->nsuites;
    needs_restart(s, PT_CFG_SUITES,
                  nsuites != s->cfg.nsuites || memcmp(suites, s->cfg.suites, nsuites) != 0, &n);
    bool m_new = (f->set & PT_CFG_BIT(PT_CFG_METRICS)) != 0, m_old = s->cfg.metrics_host != NULL;
    needs_restart(s, PT_CFG_METRICS,
                  m_new != m_old || (m_new && (strcmp(c->metrics_host, s->metrics_host) != 0 ||
                                               c->metrics_port != s->cfg.metrics_port)), &n);
    const pt_obfs_server_config *a = &c->obfs, *b = &s->cfg.obfs;
    needs_restart(s, PT_CFG_OBFS_MODE, a->mode != b->mode, &n);
    needs_restart(s, PT_CFG_OBFS_NETWORK_KEY,
                  a->nklen != b->nklen || (a->nklen && pt_ct_memcmp(a->network_key, b->network_key, a->nklen) != 0), &n);
    needs_restart(s, PT_CFG_OBFS_SERVER_ID, strcmp(a->server_id, b->server_id) != 0, &n);
    needs_restart(s, PT_CFG_OBFS_HANDSHAKE_TIMEOUT, a->handshake_timeout_ms != b->handshake_timeout_ms, &n);
    needs_restart(s, PT_CFG_OBFS_DECOY, strcmp(a->decoy, b->decoy) != 0, &n);
    needs_restart(s, PT_CFG_OBFS_DEFER_RULES, a->defer_rules != b->defer_rules, &n);
    const char *urls_new = (f->set & PT_CFG_BIT(PT_CFG_CLUSTER_NATS_URLS)) ? c->cluster.nats_urls : NULL;
    const char *urls_old = s->cfg.cluster.nats_urls;
    needs_restart(s, PT_CFG_CLUSTER_NATS_URLS,
                  !urls_new != !urls_old || (urls_new && urls_old && strcmp(urls_new, urls_old) != 0), &n);
    uint32_t node_new = (f->set & PT_CFG_BIT(PT_CFG_CLUSTER_NODE_ID)) ? c->cluster.node_id : 0;
    needs_restart(s, PT_CFG_CLUSTER_NODE_ID, node_new != s->cfg.cluster.node_id, &n);
    uint32_t idle_new = (f->set & PT_CFG_BIT(PT_CFG_CLUSTER_CONSUMER_IDLE)) ? c->cluster.consumer_idle_s : 0;
    needs_restart(s, PT_CFG_CLUSTER_CONSUMER_IDLE, idle_new != s->cfg.cluster.consumer_idle_s, &n);
    bool d_off = (f->set & PT_CFG_BIT(PT_CFG_DISC_ENABLED)) && c->discovery_off;
    needs_restart(s, PT_CFG_DISC_ENABLED, d_off != s->cfg.discovery_off, &n);
    uint16_t d_port = (f->set & PT_CFG_BIT(PT_CFG_DISC_PORT)) ? c->discovery_port : 0;
    needs_restart(s, PT_CFG_DISC_PORT, (d_port ? d_port : PT_DISC_PORT) !=
                                           (s->cfg.discovery_port ? s->cfg.discovery_port : PT_DISC_PORT), &n);
    uint32_t heap_new = (f->set & PT_CFG_BIT(PT_CFG_SECURE_HEAP)) ? c->secure_heap_kib : PT_SECURE_HEAP_AUTO;
    bool heap_differs = heap_new != s->cfg.secure_heap_kib;
    if (!heap_differs && heap_new == PT_SECURE_HEAP_AUTO) { /* auto follows max_connections, at start */
        uint32_t maxc = pinned(s, PT_CFG_MAX_CONNECTIONS) ? s->cfg.max_connections
                        : (f->set & PT_CFG_BIT(PT_CFG_MAX_CONNECTIONS)) ? c->max_connections
                                                                         : PT_SERVER_MAX_CONNECTIONS;
        pt_secure_stats st;
        pt_secure_get_stats(&st);
        heap_differs = st.heap_size && (uint64_t)maxc * PT_SERVER_SECURE_HEAP_PER_CONN > st.heap_size;
    }
    needs_restart(s, PT_CFG_SECURE_HEAP, heap_differs, &n);
    uint32_t workers = (f->set & PT_CFG_BIT(PT_CFG_WORKERS)) ? c->workers : 0;
    needs_restart(s, PT_CFG_WORKERS, workers != s->cfg.workers, &n);
    return n;
}

static int reload(pt_server *s, const char *via, char *msg, size_t msglen)
{
    if (!s->config_path[0]) {
        pt_log_info("%s: no configuration file to reload", via);
        snprintf(msg, msglen, "no configuration file (started without --config); nothing to reload");
        return 0;
    }
    pt_srv_notify(s, PT_SRV_NOTIFY_RELOADING);
    int rc = PT_ERR_NOMEM;
    pt_config_file *f = calloc(1, sizeof *f);
    if (!f) {
        pt_log_error("%s: reload failed: out of memory; keeping the running configuration", via);
        snprintf(msg, msglen, "out of memory");
        goto out;
    }
    rc = pt_config_load(f, s->config_path);
    char obfs_err[300];
    if (rc == 0 && pt_obfs_config_check(&f->cfg.obfs, obfs_err, sizeof obfs_err) != 0) {
        /* the obfuscation settings need a restart anyway, but an inconsistent set is
         * still a file that would not start: refuse it as a whole */
        snprintf(msg, msglen, "%s:%d:1: error: %s", s->config_path, f->line[PT_CFG_OBFS_MODE], obfs_err);
        rc = PT_ERR_INVAL;
    } else if (rc != 0) {
        size_t more = f->nerrors - 1;
        snprintf(msg, msglen, "%s%s", pt_config_first_error(f),
                 more ? " (and more errors: run packtrackd --check-config)" : "");
    }
    if (rc == 0) rc = pt_srv_reload_log_file(s, f->cfg.log_file, msg, msglen);
    if (rc != 0) {
        pt_log_error("%s: reload failed: %s; keeping the running configuration", via, msg);
        goto out;
    }
    if (!pinned(s, PT_CFG_LOG_LEVEL))
        pt_log_set_level((f->set & PT_CFG_BIT(PT_CFG_LOG_LEVEL)) ? (pt_log_level)f->log_level : PT_LOG_INFO);
    const pt_server_config *c = &f->cfg;
    reload_u32(s, f, PT_CFG_HANDSHAKE_TIMEOUT, &s->cfg.handshake_timeout_ms, c->handshake_timeout_ms,
               PT_SERVER_HANDSHAKE_TIMEOUT_MS);
    reload_u32(s, f, PT_CFG_IDLE_TIMEOUT, &s->cfg.idle_timeout_ms, c->idle_timeout_ms, PT_SERVER_IDLE_TIMEOUT_MS);
    pt_srv_timeouts_changed(s); /* the worker loops read them */
    reload_u32(s, f, PT_CFG_SESSION_EXPIRY, &s->cfg.session_expiry_ms, c->session_expiry_ms,
               PT_SERVER_SESSION_EXPIRY_MS);
    reload_u32(s, f, PT_CFG_MAX_CONNECTIONS, &s->cfg.max_connections, c->max_connections, PT_SERVER_MAX_CONNECTIONS);
    reload_u32(s, f, PT_CFG_QUEUE_QUOTA, &s->cfg.queue_quota, c->queue_quota, PT_SERVER_QUEUE_QUOTA);
    /* cluster mode: the quota is the queue stream's, raised (never lowered) by a worker
     * thread, which logs the outcome */
    if (s->cluster) (void)pt_cluster_set_queue_quota(s->cluster, s->cfg.queue_quota);
    reload_u32(s, f, PT_CFG_CONFIRM_WAIT, &s->cfg.confirm_wait_ms, c->confirm_wait_ms, PT_SERVER_CONFIRM_WAIT_MS);
    reload_u32(s, f, PT_CFG_MAX_CONNS_PER_IP, &s->cfg.max_conns_per_ip, c->max_conns_per_ip,
               PT_SERVER_MAX_CONNS_PER_IP);
    reload_u32(s, f, PT_CFG_RATE_LIMIT, &s->cfg.rate_limit, c->rate_limit, PT_SERVER_RATE_LIMIT);
    reload_u32(s, f, PT_CFG_IP_RATE_LIMIT, &s->cfg.ip_rate_limit, c->ip_rate_limit,
               PT_SERVER_IP_RATE_LIMIT);
    reload_u32(s, f, PT_CFG_IP_CONN_RATE, &s->cfg.ip_conn_rate, c->ip_conn_rate, PT_SERVER_IP_CONN_RATE);
    reload_u32(s, f, PT_CFG_BAN_TIME, &s->cfg.ban_s, c->ban_s, PT_SERVER_BAN_S);
    int restart = compare_restart_keys(s, f);
    for (size_t i = 0; i < f->ndiags; i++) pt_log_warn("%s: %s", via, f->diags[i].text);
    s->reloads++;
    pt_log_info("%s: reloaded %s (log level %d, idle timeout %u s, queue quota %u%s)", via, s->config_path,
                (int)pt_log_get_level(), s->cfg.idle_timeout_ms / 1000, s->cfg.queue_quota,
                restart ? "; some keys need a restart" : "");
    snprintf(msg, msglen, "reloaded %s%s", s->config_path,
             restart ? " (some changed keys require a restart: see the log)" : "");
out:
    free(f);
    pt_srv_notify(s, PT_SRV_NOTIFY_READY);
    return rc;
}

int pt_srv_reload(pt_server *s, const char *via, char *out, size_t outlen)
{
    char msg[1600];
    int rc = reload(s, via, msg, sizeof msg);
    if (out && outlen) snprintf(out, outlen, "%s", msg);
    return rc;
}
