/*
 * The nats implementation of pt_cluster.h (libnats, Debian libnats-dev).
 *
 * libnats runs its own threads: message callbacks copy what arrived into an inbox
 * under a mutex and wake the loop with a uv_async; the loop then pushes, resends or
 * deletes, as if a local client had asked. Publishing is buffered by libnats and
 * never waits. The key-value calls of the directory wait for JetStream's answer;
 * the bind runs on the store's writer thread, lookups on the loop (only for users
 * this node has never seen: the directory keeps what it learned).
 *
 * Shutdown: every subscription's completion callback counts it down; free waits
 * (2 s at most) for the count to reach zero after closing the connection, so no
 * callback runs on freed memory.
 */
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "crypto/pt_crypto.h"
#include "server/pt_cluster.h"
#include "server/pt_server_int.h"
#include "server/pt_username.h"

#define BUCKET "pt_users"
#define BIND_TRIES 8         /* compare-and-set attempts on a user record */

enum { IN_DEV = 1, IN_SYNC, IN_RCV };

typedef struct inbox_item {
    struct inbox_item *next;
    int kind;                       /* IN_* */
    uint8_t pk[32];                 /* the device concerned */
    size_t len;
    uint8_t data[];                 /* IN_DEV: the update; IN_RCV: server_ids, i64le */
} inbox_item;

struct pt_cluster {
    pt_server *srv;
    uint32_t node;                  /* this node's id */
    natsConnection *nc;
    jsCtx *js;
    kvStore *kv;                    /* the pt_users bucket */
    natsSubscription *sync_sub, *rcv_sub;
    uv_async_t async;               /* wakes the loop for the inbox */
    bool async_on;
    pthread_mutex_t mu;             /* guards what follows */
    pthread_cond_t cv;              /* live_subs reached zero */
    inbox_item *head, *tail;
    int live_subs;                  /* subscriptions whose completion has not run */
};

bool pt_cluster_available(void) { return true; }

/* ---- from libnats' threads to the loop ---------------------------------------------------- */

static void inbox_put(pt_cluster *c, int kind, const uint8_t pk[32], const void *data, size_t len)
{
    inbox_item *it = malloc(sizeof *it + len);
    if (!it) {
        pt_log_warn("cluster: out of memory; an update from another node is dropped");
        return;
    }
    it->next = NULL;
    it->kind = kind;
    memcpy(it->pk, pk, 32);
    it->len = len;
    if (len) memcpy(it->data, data, len);
    pthread_mutex_lock(&c->mu);
    if (!c->async_on) { /* the loop is going: nobody would read it */
        pthread_mutex_unlock(&c->mu);
        free(it);
        return;
    }
    if (c->tail) c->tail->next = it;
    else c->head = it;
    c->tail = it;
    uv_async_send(&c->async); /* under the lock: stop cannot close it meanwhile */
    pthread_mutex_unlock(&c->mu);
}

static void on_dev_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub;
    const char *subj = natsMsg_GetSubject(m);
    uint8_t pk[32];
    if (strncmp(subj, "pt.dev.", 7) == 0 && strlen(subj + 7) == 64 && pt_hex_decode(pk, 32, subj + 7) == 0)
        inbox_put(closure, IN_DEV, pk, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    natsMsg_Destroy(m);
}

static void on_sync_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub;
    pt_cluster *c = closure;
    const uint8_t *d = (const uint8_t *)natsMsg_GetData(m);
    if (natsMsg_GetDataLength(m) == 36 && pt_get_u32le(d + 32) != c->node) inbox_put(c, IN_SYNC, d, NULL, 0);
    natsMsg_Destroy(m);
}

static void on_rcv_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub;
    const uint8_t *d = (const uint8_t *)natsMsg_GetData(m);
    int len = natsMsg_GetDataLength(m);
    if (len > 32 && (len - 32) % 8 == 0) inbox_put(closure, IN_RCV, d, d + 32, (size_t)len - 32);
    natsMsg_Destroy(m);
}

static void on_sub_complete(void *closure)
{
    pt_cluster *c = closure;
    pthread_mutex_lock(&c->mu);
    if (--c->live_subs == 0) pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_async(uv_async_t *a)
{
    pt_cluster *c = a->data;
    pthread_mutex_lock(&c->mu);
    inbox_item *it = c->head;
    c->head = c->tail = NULL;
    pthread_mutex_unlock(&c->mu);
    while (it) {
        inbox_item *next = it->next;
        if (it->kind == IN_DEV) {
            pt_buf b = {.data = it->data, .len = it->len, .cap = it->len};
            pt_srv_push_device(c->srv, it->pk, NULL, &b);
        } else if (it->kind == IN_SYNC) {
            pt_srv_sync_remote(c->srv, it->pk);
        } else if (it->kind == IN_RCV) {
            uint32_t n = (uint32_t)(it->len / 8);
            int64_t *ids = malloc(n * sizeof *ids);
            if (ids) {
                for (uint32_t i = 0; i < n; i++) ids[i] = (int64_t)pt_get_u64le(it->data + 8 * i);
                pt_srv_received_remote(c->srv, it->pk, ids, n);
                free(ids);
            }
        }
        free(it);
        it = next;
    }
}

static natsSubscription *subscribe(pt_cluster *c, const char *subj, natsMsgHandler cb)
{
    natsSubscription *sub = NULL;
    natsStatus st = natsConnection_Subscribe(&sub, c->nc, subj, cb, c);
    if (st != NATS_OK) {
        pt_log_error("cluster: cannot subscribe to %s: %s", subj, natsStatus_GetText(st));
        return NULL;
    }
    if (natsSubscription_SetOnCompleteCB(sub, on_sub_complete, c) == NATS_OK) {
        pthread_mutex_lock(&c->mu);
        c->live_subs++;
        pthread_mutex_unlock(&c->mu);
    }
    return sub;
}

static void unsubscribe(natsSubscription **sub)
{
    if (!*sub) return;
    natsSubscription_Unsubscribe(*sub);
    natsSubscription_Destroy(*sub);
    *sub = NULL;
}

/* ---- lifetime --------------------------------------------------------------------------- */

static void log_nats(const char *what, natsStatus st)
{
    natsStatus last;
    const char *text = nats_GetLastError(&last);
    pt_log_error("cluster: %s: %s%s%s", what, natsStatus_GetText(st), text && *text ? ": " : "",
                 text ? text : "");
}

static int open_bucket(pt_cluster *c, uint32_t replicas)
{
    natsStatus st = js_KeyValue(&c->kv, c->js, BUCKET);
    if (st == NATS_OK) return 0;
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = BUCKET;
    kc.Description = "packtrackd: usernames, skeletons and users' devices";
    kc.History = 1;
    kc.StorageType = js_FileStorage;
    kc.Replicas = (int)replicas;
    st = js_CreateKeyValue(&c->kv, c->js, &kc);
    if (st != NATS_OK && js_KeyValue(&c->kv, c->js, BUCKET) == NATS_OK) return 0; /* another node won */
    if (st != NATS_OK) {
        log_nats("cannot create the JetStream bucket " BUCKET
                 " (is JetStream on, with at least `replicas` servers?)", st);
        return PT_ERR_IO;
    }
    return 0;
}

int pt_cluster_start(pt_server *s)
{
    const pt_cluster_config *cc = &s->cfg.cluster;
    const char *err = pt_cluster_config_error(cc);
    if (err) {
        pt_log_error("cluster: %s", err);
        return PT_ERR_INVAL;
    }
    pt_cluster *c = calloc(1, sizeof *c);
    if (!c) return PT_ERR_NOMEM;
    c->srv = s;
    c->node = cc->node_id;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    s->cluster = c; /* pt_cluster_free cleans up whatever follows */

    char urls[1024], *servers[16], *save = NULL;
    int nservers = 0;
    snprintf(urls, sizeof urls, "%s", cc->nats_urls);
    for (char *u = strtok_r(urls, ",", &save); u && nservers < 16; u = strtok_r(NULL, ",", &save))
        servers[nservers++] = u;
    char name[64];
    snprintf(name, sizeof name, "packtrackd-%u", c->node);
    natsOptions *o = NULL;
    natsStatus st = natsOptions_Create(&o);
    if (st == NATS_OK) st = natsOptions_SetServers(o, (const char **)servers, nservers);
    if (st == NATS_OK) st = natsOptions_SetName(o, name);
    if (st == NATS_OK) st = natsOptions_SetMaxReconnect(o, -1); /* keep trying: NATS is our network */
    if (st == NATS_OK) st = natsOptions_SetReconnectWait(o, 250);
    if (st == NATS_OK) st = natsOptions_SetTimeout(o, 2000);
    if (st == NATS_OK && cc->credentials) st = natsOptions_SetUserCredentialsFromFiles(o, cc->credentials, NULL);
    if (st == NATS_OK && cc->tls_ca) st = natsOptions_SetSecure(o, true);
    if (st == NATS_OK && cc->tls_ca) st = natsOptions_LoadCATrustedCertificates(o, cc->tls_ca);
    if (st == NATS_OK && cc->tls_cert) st = natsOptions_LoadCertificatesChain(o, cc->tls_cert, cc->tls_key);
    if (st != NATS_OK) {
        log_nats("bad NATS options (credentials or TLS files?)", st);
        natsOptions_Destroy(o);
        return PT_ERR_INVAL;
    }
    st = natsConnection_Connect(&c->nc, o);
    natsOptions_Destroy(o);
    if (st != NATS_OK) {
        log_nats("cannot connect to NATS", st);
        return PT_ERR_IO;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    if ((st = natsConnection_JetStream(&c->js, c->nc, &jo)) != NATS_OK) {
        log_nats("no JetStream context", st);
        return PT_ERR_IO;
    }
    int rc = open_bucket(c, cc->replicas ? cc->replicas : PT_CLUSTER_REPLICAS);
    if (rc) return rc;
    if (uv_async_init(&s->loop, &c->async, on_async) != 0) return PT_ERR_IO;
    c->async.data = c;
    pthread_mutex_lock(&c->mu);
    c->async_on = true;
    pthread_mutex_unlock(&c->mu);
    char subj[48];
    snprintf(subj, sizeof subj, "pt.rcv.%u", c->node);
    if (!(c->sync_sub = subscribe(c, "pt.sync", on_sync_msg)) || !(c->rcv_sub = subscribe(c, subj, on_rcv_msg)))
        return PT_ERR_IO;
    if ((st = natsConnection_FlushTimeout(c->nc, 5000)) != NATS_OK) {
        log_nats("NATS did not answer a flush", st);
        return PT_ERR_IO;
    }
    char url[256] = "";
    natsConnection_GetConnectedUrl(c->nc, url, sizeof url);
    pt_log_info("cluster: node %u connected to NATS at %s; directory bucket " BUCKET, c->node, url);
    return 0;
}

void pt_cluster_stop(pt_server *s)
{
    pt_cluster *c = s->cluster;
    if (!c) return;
    unsubscribe(&c->sync_sub);
    unsubscribe(&c->rcv_sub);
    pthread_mutex_lock(&c->mu);
    bool on = c->async_on;
    c->async_on = false;
    pthread_mutex_unlock(&c->mu);
    if (on) uv_close((uv_handle_t *)&c->async, NULL);
}

void pt_cluster_free(pt_server *s)
{
    pt_cluster *c = s->cluster;
    if (!c) return;
    s->cluster = NULL;
    unsubscribe(&c->sync_sub);
    unsubscribe(&c->rcv_sub);
    if (c->nc) natsConnection_Close(c->nc); /* closes every device subscription too */
    pthread_mutex_lock(&c->mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 2;
    while (c->live_subs > 0)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &until) != 0) break;
    bool leak = c->live_subs > 0;
    pthread_mutex_unlock(&c->mu);
    kvStore_Destroy(c->kv);
    jsCtx_Destroy(c->js);
    natsConnection_Destroy(c->nc);
    for (inbox_item *it = c->head, *next; it; it = next) {
        next = it->next;
        free(it);
    }
    if (leak) {
        pt_log_warn("cluster: NATS subscriptions still closing; their state is left allocated");
        return;
    }
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

/* ---- routing ------------------------------------------------------------------------------- */

static void dev_subject(char out[72], const uint8_t pk[32])
{
    memcpy(out, "pt.dev.", 7);
    pt_hex_encode(out + 7, pk, 32);
}

void pt_cluster_device_up(pt_cluster *c, const uint8_t pk[32], void **sub)
{
    if (*sub) return;
    char subj[72];
    dev_subject(subj, pk);
    *sub = subscribe(c, subj, on_dev_msg);
}

void pt_cluster_device_down(pt_cluster *c, void **sub)
{
    (void)c;
    natsSubscription *ns = *sub;
    unsubscribe(&ns);
    *sub = NULL;
}

void pt_cluster_route(pt_cluster *c, const uint8_t pk[32], const pt_buf *update)
{
    char subj[72];
    dev_subject(subj, pk);
    natsStatus st = natsConnection_Publish(c->nc, subj, update->data, (int)update->len);
    if (st != NATS_OK) pt_log_debug("cluster: publish to %s: %s", subj, natsStatus_GetText(st));
}

void pt_cluster_sync(pt_cluster *c, const uint8_t pk[32])
{
    uint8_t m[36];
    memcpy(m, pk, 32);
    pt_put_u32le(m + 32, c->node);
    natsConnection_Publish(c->nc, "pt.sync", m, sizeof m);
}

void pt_cluster_received(pt_cluster *c, const uint8_t pk[32], const int64_t *ids, uint32_t n)
{
    uint8_t *m = malloc(32 + 8 * (size_t)n);
    if (!m) return;
    bool *done = calloc(n ? n : 1, sizeof *done);
    if (!done) {
        free(m);
        return;
    }
    memcpy(m, pk, 32);
    /* one message per node that queued some of them */
    for (uint32_t i = 0; i < n; i++) {
        uint32_t node = pt_cluster_node_of(ids[i]);
        if (done[i] || node == c->node || node == 0) continue;
        size_t k = 0;
        for (uint32_t j = i; j < n; j++) {
            if (done[j] || pt_cluster_node_of(ids[j]) != node) continue;
            pt_put_u64le(m + 32 + 8 * k++, (uint64_t)ids[j]);
            done[j] = true;
        }
        char subj[32];
        snprintf(subj, sizeof subj, "pt.rcv.%u", node);
        natsConnection_Publish(c->nc, subj, m, (int)(32 + 8 * k));
    }
    free(done);
    free(m);
}

/* ---- the directory --------------------------------------------------------------------------- */

/* "<prefix>.<hex of BLAKE2b-256(s)>": fixed-length key-value keys for names of any script. */
static void name_key(char out[2 + 65], char prefix, const char *s)
{
    uint8_t h[32];
    pt_blake2b(h, 32, (const uint8_t *)s, strlen(s), NULL, 0);
    out[0] = prefix;
    out[1] = '.';
    pt_hex_encode(out + 2, h, 32);
}

static void user_key(char out[2 + 33], const uint8_t user_id[16])
{
    out[0] = 'u';
    out[1] = '.';
    pt_hex_encode(out + 2, user_id, 16);
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }

/* The user record: identity[32] | u16 display len | display | u16 key len | key |
 * u8 devices | devices[32 each]. */
typedef struct user_rec {
    uint8_t identity[32];
    char display[PT_CLUSTER_NAME_SIZE];
    char key[PT_USERNAME_KEY_SIZE];
    uint8_t ndev;
    uint8_t dev[PT_SERVER_USER_DEVICES_MAX][32];
} user_rec;

static int rec_decode(user_rec *r, const uint8_t *p, size_t len)
{
    memset(r, 0, sizeof *r);
    size_t off = 0;
    if (len < 32 + 2) return PT_ERR_DECODE;
    memcpy(r->identity, p, 32);
    off = 32;
    uint16_t dl = get16(p + off);
    off += 2;
    if (dl >= sizeof r->display || len < off + dl + 2) return PT_ERR_DECODE;
    memcpy(r->display, p + off, dl);
    off += dl;
    uint16_t kl = get16(p + off);
    off += 2;
    if (kl >= sizeof r->key || len < off + kl + 1) return PT_ERR_DECODE;
    memcpy(r->key, p + off, kl);
    off += kl;
    r->ndev = p[off++];
    if (r->ndev > PT_SERVER_USER_DEVICES_MAX || len != off + 32 * (size_t)r->ndev) return PT_ERR_DECODE;
    memcpy(r->dev, p + off, 32 * (size_t)r->ndev);
    return 0;
}

static size_t rec_encode(uint8_t *out, const user_rec *r)
{
    size_t off = 32, dl = strlen(r->display), kl = strlen(r->key);
    memcpy(out, r->identity, 32);
    put16(out + off, (uint16_t)dl);
    memcpy(out + off + 2, r->display, dl);
    off += 2 + dl;
    put16(out + off, (uint16_t)kl);
    memcpy(out + off + 2, r->key, kl);
    off += 2 + kl;
    out[off++] = r->ndev;
    memcpy(out + off, r->dev, 32 * (size_t)r->ndev);
    return off + 32 * (size_t)r->ndev;
}

#define REC_MAX (32 + 2 + PT_CLUSTER_NAME_SIZE + 2 + PT_USERNAME_KEY_SIZE + 1 + 32 * PT_SERVER_USER_DEVICES_MAX)

/* Creates kvkey = user_id: 1 created now, 0 it already names user_id, PT_ERR_EXISTS it
 * names another user, PT_ERR_IO. */
static int claim(pt_cluster *c, const char *kvkey, const uint8_t user_id[16])
{
    for (int tries = 0; tries < BIND_TRIES; tries++) {
        if (kvStore_Create(NULL, c->kv, kvkey, user_id, 16) == NATS_OK) return 1;
        kvEntry *e = NULL;
        natsStatus st = kvStore_Get(&e, c->kv, kvkey);
        if (st == NATS_NOT_FOUND) continue; /* deleted in between: create again */
        if (st != NATS_OK) return PT_ERR_IO;
        bool mine = kvEntry_ValueLen(e) == 16 && memcmp(kvEntry_Value(e), user_id, 16) == 0;
        kvEntry_Destroy(e);
        return mine ? 0 : PT_ERR_EXISTS;
    }
    return PT_ERR_IO;
}

/* Adds device to the user record (creating it): 0, PT_ERR_EXISTS (*why), PT_ERR_IO. */
static int record_device(pt_cluster *c, const uint8_t user_id[16], const uint8_t identity[32],
                         const char *display, const char *key, const uint8_t device[32], const char **why)
{
    char uk[2 + 33];
    user_key(uk, user_id);
    static _Thread_local uint8_t buf[REC_MAX];
    static _Thread_local user_rec r;
    for (int tries = 0; tries < BIND_TRIES; tries++) {
        kvEntry *e = NULL;
        natsStatus st = kvStore_Get(&e, c->kv, uk);
        uint64_t last = 0;
        if (st == NATS_NOT_FOUND) {
            memset(&r, 0, sizeof r);
            memcpy(r.identity, identity, 32);
            snprintf(r.display, sizeof r.display, "%s", display);
            snprintf(r.key, sizeof r.key, "%s", key);
        } else if (st == NATS_OK) {
            last = kvEntry_Revision(e);
            int rc = rec_decode(&r, kvEntry_Value(e), (size_t)kvEntry_ValueLen(e));
            kvEntry_Destroy(e);
            if (rc) return PT_ERR_IO;
            if (memcmp(r.identity, identity, 32) != 0) return *why = "USER_ID_COLLISION", PT_ERR_EXISTS;
            if (strcmp(r.key, key) != 0) return *why = "USER_HAS_ANOTHER_USERNAME", PT_ERR_EXISTS;
            for (unsigned i = 0; i < r.ndev; i++)
                if (memcmp(r.dev[i], device, 32) == 0) return 0;
            if (r.ndev >= PT_SERVER_USER_DEVICES_MAX) return 0; /* sends reach the first ones */
        } else {
            return PT_ERR_IO;
        }
        memcpy(r.dev[r.ndev++], device, 32);
        size_t len = rec_encode(buf, &r);
        st = last ? kvStore_Update(NULL, c->kv, uk, buf, (int)len, last)
                  : kvStore_Create(NULL, c->kv, uk, buf, (int)len);
        if (st == NATS_OK) return 0;
        /* someone else changed it first: read it again */
    }
    return PT_ERR_IO;
}

int pt_cluster_bind(pt_cluster *c, const uint8_t user_id[16], const uint8_t identity[32],
                    const char *display, const char *key, const char *skeleton,
                    const uint8_t device[32], const char **why)
{
    char nk[2 + 65], sk[2 + 65];
    name_key(nk, 'n', key);
    name_key(sk, 's', skeleton);
    int named = claim(c, nk, user_id);
    if (named < 0) {
        *why = named == PT_ERR_EXISTS ? "USERNAME_TAKEN" : "CLUSTER_UNAVAILABLE";
        return named;
    }
    int skel = claim(c, sk, user_id);
    int rc = skel < 0 ? skel : record_device(c, user_id, identity, display, key, device, why);
    if (skel < 0) *why = skel == PT_ERR_EXISTS ? "USERNAME_CONFUSABLE" : "CLUSTER_UNAVAILABLE";
    else if (rc == PT_ERR_IO) *why = "CLUSTER_UNAVAILABLE";
    if (rc < 0) { /* give back what this call claimed */
        if (skel == 1) kvStore_Delete(c->kv, sk);
        if (named == 1) kvStore_Delete(c->kv, nk);
    }
    return rc;
}

int pt_cluster_user(pt_cluster *c, const uint8_t user_id[16], uint8_t identity[32],
                    char display[PT_CLUSTER_NAME_SIZE], pt_srv_devlist *devs)
{
    char uk[2 + 33];
    user_key(uk, user_id);
    kvEntry *e = NULL;
    natsStatus st = kvStore_Get(&e, c->kv, uk);
    if (st == NATS_NOT_FOUND) return PT_ERR_NOT_FOUND;
    if (st != NATS_OK) return PT_ERR_IO;
    user_rec *r = malloc(sizeof *r);
    int rc = r ? rec_decode(r, kvEntry_Value(e), (size_t)kvEntry_ValueLen(e)) : PT_ERR_NOMEM;
    kvEntry_Destroy(e);
    if (rc == 0) {
        if (identity) memcpy(identity, r->identity, 32);
        if (display) snprintf(display, PT_CLUSTER_NAME_SIZE, "%s", r->display);
        for (unsigned i = 0; devs && i < r->ndev && rc == 0; i++) rc = pt_srv_devlist_add(devs, r->dev[i]);
    }
    free(r);
    return rc;
}

int pt_cluster_resolve(pt_cluster *c, const char *key, uint8_t user_id[16])
{
    char nk[2 + 65];
    name_key(nk, 'n', key);
    kvEntry *e = NULL;
    natsStatus st = kvStore_Get(&e, c->kv, nk);
    if (st == NATS_NOT_FOUND) return PT_ERR_NOT_FOUND;
    if (st != NATS_OK) return PT_ERR_IO;
    int rc = kvEntry_ValueLen(e) == 16 ? 0 : PT_ERR_DECODE;
    if (rc == 0) memcpy(user_id, kvEntry_Value(e), 16);
    kvEntry_Destroy(e);
    return rc;
}
