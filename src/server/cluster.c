/*
 * Cluster mode's configuration checks (every build), and the refusal of a build
 * without libnats (the nats implementation is cluster_nats.c).
 */
#include <stdio.h>
#include <string.h>

#include "server/pt_cluster.h"
#include "server/pt_server_int.h"

int pt_cluster_urls_check(const char *list)
{
    if (!list || !*list) return PT_ERR_INVAL;
    const char *p = list;
    for (;;) {
        size_t n = strcspn(p, ",");
        size_t scheme = strncmp(p, "nats://", 7) == 0 ? 7 : strncmp(p, "tls://", 6) == 0 ? 6 : 0;
        if (!scheme || n <= scheme) return PT_ERR_INVAL;
        for (size_t i = scheme; i < n; i++)
            if (p[i] == ' ' || p[i] == '\t') return PT_ERR_INVAL;
        if (!p[n]) return 0;
        p += n + 1;
    }
}

const char *pt_cluster_config_error(const pt_cluster_config *cfg)
{
    if (!cfg->nats_urls) {
        if (cfg->node_id || cfg->credentials || cfg->tls_ca || cfg->tls_cert || cfg->tls_key)
            return "cluster: the [cluster] keys need nats_urls (or --cluster-nats)";
        return NULL;
    }
    if (!pt_cluster_available())
        return "cluster mode needs libnats, and this packtrackd was built without it "
               "(install libnats-dev, e.g. scripts/deps.sh, and rebuild)";
    if (pt_cluster_urls_check(cfg->nats_urls) != 0)
        return "cluster: nats_urls: expected nats://HOST:PORT or tls://HOST:PORT, comma separated";
    if (cfg->node_id == 0 || cfg->node_id > PT_CLUSTER_NODE_ID_MAX)
        return "cluster: node_id (--cluster-node-id) is required with nats_urls: 1 to 8388607, "
               "different on every node";
    if (!cfg->tls_cert != !cfg->tls_key) return "cluster: tls_cert and tls_key go together";
    return NULL;
}

#ifndef PT_HAVE_NATS
bool pt_cluster_available(void) { return false; }
int pt_cluster_start(pt_server *s)
{
    pt_log_error("%s", pt_cluster_config_error(&s->cfg.cluster));
    return PT_ERR_INVAL;
}
void pt_cluster_stop(pt_server *s) { (void)s; }
void pt_cluster_free(pt_server *s) { (void)s; }
void pt_cluster_device_up(pt_cluster *c, const uint8_t pk[32], void **sub) { (void)c, (void)pk, (void)sub; }
void pt_cluster_device_down(pt_cluster *c, void **sub) { (void)c, (void)sub; }
void pt_cluster_route(pt_cluster *c, const uint8_t pk[32], const pt_buf *u) { (void)c, (void)pk, (void)u; }
void pt_cluster_presence(pt_cluster *c, const uint8_t user[16], int status, const char *name)
{
    (void)c, (void)user, (void)status, (void)name;
}
int pt_cluster_status_put(pt_cluster *c, const uint8_t user[16], int status)
{
    (void)c, (void)user, (void)status;
    return PT_ERR_IO;
}
void pt_cluster_sync(pt_cluster *c, const uint8_t pk[32]) { (void)c, (void)pk; }
void pt_cluster_attached(pt_cluster *c, const uint8_t pk[32], struct pt_srv_sess *e)
{
    (void)c, (void)pk, (void)e;
}
void pt_cluster_received(pt_cluster *c, const uint8_t pk[32], const int64_t *ids, uint32_t n)
{
    (void)c, (void)pk, (void)ids, (void)n;
}
int pt_cluster_bind(pt_cluster *c, const uint8_t user_id[16], const uint8_t identity[32], const char *display,
                    const char *key, const char *skeleton, const uint8_t device[32], const char **why)
{
    (void)c, (void)user_id, (void)identity, (void)display, (void)key, (void)skeleton, (void)device;
    *why = "CLUSTER_UNAVAILABLE";
    return PT_ERR_IO;
}
int pt_cluster_user(pt_cluster *c, const uint8_t user_id[16], uint8_t identity[32],
                    char display[PT_CLUSTER_NAME_SIZE], struct pt_srv_devlist *devs)
{
    (void)c, (void)user_id, (void)identity, (void)display, (void)devs;
    return PT_ERR_NOT_FOUND;
}
int pt_cluster_resolve(pt_cluster *c, const char *key, uint8_t user_id[16])
{
    (void)c, (void)key, (void)user_id;
    return PT_ERR_NOT_FOUND;
}
int pt_cluster_enqueue(pt_cluster *c, int64_t server_id, const uint8_t *key, bool find_id,
                       const struct pt_srv_devlist *to, const pt_buf *update, pt_cluster_queued_cb cb, void *arg)
{
    (void)c, (void)server_id, (void)key, (void)find_id, (void)to, (void)update, (void)cb, (void)arg;
    return PT_ERR_IO;
}
int pt_cluster_device_user(pt_cluster *c, const uint8_t device[32], uint8_t user_id[16])
{
    (void)c, (void)device, (void)user_id;
    return PT_ERR_NOT_FOUND;
}
int pt_cluster_reserve_ids(pt_cluster *c, int64_t *next, int64_t *limit)
{
    (void)c, (void)next, (void)limit;
    return PT_ERR_IO;
}
int pt_cluster_prekeys_put(pt_cluster *c, const uint8_t device[32], const pt_cluster_signed *sig,
                           const pt_cluster_prekey *keys, uint32_t n, int *count)
{
    (void)c, (void)device, (void)sig, (void)keys, (void)n, (void)count;
    return PT_ERR_IO;
}
int pt_cluster_prekeys_take(pt_cluster *c, const uint8_t device[32], pt_cluster_signed *sig,
                            pt_cluster_prekey *otk, int *left)
{
    (void)c, (void)device, (void)sig, (void)otk, (void)left;
    return PT_ERR_IO;
}
int pt_cluster_prekeys_signed(pt_cluster *c, const uint8_t device[32], pt_cluster_signed *sig)
{
    (void)c, (void)device, (void)sig;
    return PT_ERR_IO;
}
int pt_cluster_queues_full(pt_cluster *c, const struct pt_srv_devlist *to, uint32_t quota)
{
    (void)c, (void)to, (void)quota;
    return PT_ERR_IO;
}
int pt_cluster_salt_secret(pt_cluster *c, uint8_t *secret, size_t len)
{
    (void)c, (void)secret, (void)len;
    return PT_ERR_IO;
}
int pt_cluster_user_name(pt_cluster *c, const uint8_t user_id[16], char display[PT_CLUSTER_NAME_SIZE])
{
    (void)c, (void)user_id, (void)display;
    return PT_ERR_NOT_FOUND;
}
int pt_cluster_set_queue_quota(pt_cluster *c, uint32_t quota)
{
    (void)c, (void)quota;
    return PT_ERR_IO;
}
int pt_cluster_revoke(pt_cluster *c, const uint8_t user_id[16], const uint8_t device[32])
{
    (void)c, (void)user_id, (void)device;
    return PT_ERR_IO;
}
int pt_cluster_revoked(pt_cluster *c, const uint8_t device[32])
{
    (void)c, (void)device;
    return PT_ERR_IO;
}
int64_t pt_cluster_contact_get(pt_cluster *c, const uint8_t me[16], const uint8_t peer[16], int *mine, int *theirs,
                               pt_cluster_vref *ref)
{
    (void)c, (void)me, (void)peer, (void)ref;
    *mine = *theirs = 0;
    return PT_ERR_IO;
}
int pt_cluster_contact_put(pt_cluster *c, const uint8_t me[16], const uint8_t peer[16], int mine, int theirs,
                           const void *note, size_t note_len, const pt_cluster_vref *ref)
{
    (void)c, (void)me, (void)peer, (void)mine, (void)theirs, (void)note, (void)note_len, (void)ref;
    return PT_ERR_IO;
}
int64_t pt_cluster_group_get(pt_cluster *c, const uint8_t group[16], pt_cluster_group *g, pt_cluster_vref *ref)
{
    (void)c, (void)group, (void)g, (void)ref;
    return PT_ERR_IO;
}
int pt_cluster_group_put(pt_cluster *c, const uint8_t group[16], const pt_cluster_group *g,
                         const pt_cluster_vref *ref)
{
    (void)c, (void)group, (void)g, (void)ref;
    return PT_ERR_IO;
}
#endif
