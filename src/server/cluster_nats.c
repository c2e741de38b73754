/*
 * The nats implementation of pt_cluster.h (libnats, Debian libnats-dev).
 *
 * libnats runs its own threads: message callbacks (and the ack handler of the
 * asynchronous publishes to the queue stream) copy what arrived into an inbox
 * under a mutex and wake the loop with a uv_async; creating a device's consumer
 * (a JetStream request) runs on this file's worker thread; the loop then pushes, resends or
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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "crypto/pt_crypto.h"
#include "server/pt_cluster.h"
#include "server/pt_server_int.h"
#include "server/pt_username.h"

#define BUCKET "pt_users"
#define BIND_TRIES 8         /* compare-and-set attempts on a user record */
#define RESERVE_TRIES 40     /* reading and writing i.<node> (server-id blocks), ~6 s */

enum { PUB_FAILED = 0, PUB_OK, PUB_FULL }; /* the answer to a publish to a device's queue */
enum { IN_DEV = 1, IN_SYNC, IN_RCV, IN_QDEL, IN_PUBACK, IN_RESET, IN_READY, IN_REVOKED, IN_BOUND, IN_CONTACT,
       IN_GROUP, IN_PRES, IN_STATUS, IN_ORIGINAL, IN_RECONNECTED };
#define N_WATCHES 5 /* watches of the bucket: revocations, devices, contacts, groups, statuses */

/* Presence across nodes: every node publishes on pt.pres (node u32le | kind | ...)
 * a PRES_USER message when one of its users comes, goes or changes status, a
 * PRES_BEAT every PRES_BEAT_MS, PRES_HELLO when it starts (the others forget what it
 * said before, and announce their users) and PRES_BYE when it stops. A node not
 * heard for PRES_GONE_MS is taken for gone: its users are offline. A node heard
 * again after that (or for the first time) is told this node's users. */
#define PRES_BEAT_MS 2000
#define PRES_GONE_MS 7000
#define PRES_PEERS 256
enum { PRES_USER = 1, PRES_BEAT, PRES_HELLO, PRES_BYE };

#define QSTREAM "PT_QUEUE"          /* the durable per-device queues: pt.q.<device hex> */
#define Q_ACK_WAIT_MS 5000          /* a delivery not confirmed in this time comes again */
#define Q_MAX_ACK_PENDING 1024      /* deliveries per device not yet confirmed */
#define Q_PUB_WAIT_MS 5000          /* a publish not acknowledged in this time is retried */
#define Q_PUB_TRIES 4               /* then the send fails (the sender's client resends) */
#define CLAIM_MAX_MS 20000          /* a prekey fetch hands a key out within this of its read
                                       (c->claim_max_ms); claim keys go 3 times that after */
#define Q_DUP_WINDOW_S 120          /* JetStream drops a publish whose Nats-Msg-Id it saw */
#define Q_CONFIRMED 256             /* confirmations kept per device for later deliveries */
#define Q_BUCKETS 1024
#define SEND_BUCKETS 4096
#define Q_RETRY 0x80                /* qsend.tries[i] flag: publish again at the next retry tick */
#define NAME_CACHE 512              /* display names of other nodes' users kept (contacts.get) */
#define Q_WORKERS 4                 /* threads checking devices' consumers (JetStream round trips,
                                     * ~0.5 s to create a replicated one on a busy machine) */

/* pt.q.<device hex>: the device's queue in the stream */
static void q_subject(char out[72], const uint8_t pk[32])
{
    memcpy(out, "pt.q.", 5);
    pt_hex_encode(out + 5, pk, 32);
}

/* A delivery from the device's consumer, waiting for the device to confirm it. */
typedef struct qpend {
    int64_t sid;
    uint64_t sseq;                  /* its sequence in the stream: pushes go in this order */
    char *reply;                    /* JetStream's ack subject of the latest delivery */
    size_t len;
    uint8_t *update;                /* the encoded update, to push again after a sync */
} qpend;

/* A device connected here (cluster mode): its subscriptions and its deliveries. */
typedef struct qdev {
    struct qdev *next;
    uint8_t pk[32];
    natsSubscription *dev_sub;      /* pt.dev.<hex>: live updates */
    natsSubscription *q_sub;        /* pt.qd.<hex>: deliveries of its durable consumer */
    qpend *pend;
    size_t npend, cap;
    bool ready;                     /* its consumer checked: deliveries are pushed */
    uint32_t gen;                   /* which coming up of the device this is (jobs carry it) */
    int64_t confirmed[Q_CONFIRMED]; /* ids confirmed here with no delivery pending (a ring) */
    unsigned nconf;
} qdev;

/* A send waiting for JetStream to acknowledge its publishes, one per device. */
typedef struct qsend {
    struct qsend *next;
    int64_t sid;
    pt_cluster_queued_cb cb;
    void *arg;
    size_t n, left;
    int rc;
    uint8_t (*pk)[32];
    uint8_t *tries;                 /* per device: publishes made (| Q_RETRY); 0xff: answered */
    uint8_t key[16];                /* the request's key: Nats-Msg-Id k<key hex>.<device hex> */
    uint64_t dup_seq;               /* a publish JetStream had already: that copy's sequence */
    size_t dup_i;                   /* and its device */
    bool resolving;                 /* answered; a worker reads which server id that copy has */
    bool find_id;                   /* the caller wants that id (sends); notices do not */
    size_t len;
    uint8_t data[];                 /* server_id i64le || the encoded update */
} qsend;

/* Work that waits for JetStream: creating a consumer, or reading the server id of an
 * item stored by an earlier publish of the same request (seq != 0). On a worker thread. */
enum { JOB_CONSUMER = 0, JOB_ORIGINAL, JOB_QUOTA, JOB_CHECK, JOB_UNCLAIM };
enum { ORIG_FOUND = 0, ORIG_GONE, ORIG_FAILED }; /* IN_ORIGINAL: what the worker found */
typedef struct job {
    struct job *next;
    int kind;                       /* JOB_* */
    uint32_t quota;                 /* JOB_QUOTA: the queue quota to set */
    uint8_t pk[32];
    uint32_t gen;                   /* the qdev's generation it is for */
    uint64_t seq;                   /* JOB_ORIGINAL: the stream sequence of that item */
    int64_t sid;                    /* and the send waiting for it (qsend.sid) */
    uint64_t due_ms;                /* JOB_UNCLAIM: not before (uv_hrtime, ms) */
    uint32_t nids;                  /* JOB_UNCLAIM: the one-time key ids of device pk */
    int32_t ids[];
} job;

static void job_push(struct pt_cluster *c, job *j, bool first);
static void job_post(struct pt_cluster *c, const uint8_t pk[32], uint32_t gen);

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
    jsCtx *jsq;                     /* asynchronous publishes to the queue stream */
    kvStore *kv;                    /* the pt_users bucket */
    uint32_t replicas;
    struct {
        bool used;
        uint8_t user[16];
        char name[PT_CLUSTER_NAME_SIZE];
    } names[NAME_CACHE];            /* loop thread: users' display names (never change) */
    _Atomic uint32_t quota;         /* items per device queue (the stream's per-subject limit;
                                     * 0: none): set by a worker, read by the loop for logs */
    uint32_t quota_asked;           /* loop thread: the queue_quota this node last asked for */
    uint32_t consumer_idle_s;       /* consumers' inactive threshold */
    uint32_t claim_max_ms;          /* CLAIM_MAX_MS, or PT_TEST_CLAIM_MAX_MS (tests only) */
    qdev *qdevs[Q_BUCKETS];         /* loop thread only */
    qsend *sends[SEND_BUCKETS];     /* loop thread only */
    uv_timer_t retry_timer;         /* publishes to try again */
    uv_timer_t pres_timer;          /* presence heartbeats (PRES_BEAT_MS) */
    natsSubscription *pres_sub;     /* pt.pres */
    struct {
        uint32_t node;
        uint64_t seen_ms;           /* uv_now of its last message */
    } peers[PRES_PEERS];            /* loop thread: the nodes heard on pt.pres */
    int npeers;
    pthread_t workers[Q_WORKERS];
    int nworkers;
    bool worker_stop;
    uint8_t busy[Q_WORKERS][32];    /* devices a worker is on (with mu): one job per device */
    bool busy_on[Q_WORKERS];
    uint32_t next_gen;              /* loop thread */
    pthread_cond_t job_cv;          /* with mu */
    job *jobs, *jobs_tail;
    job *later, *later_tail;        /* with mu: JOB_UNCLAIMs not yet due, by due_ms */
    natsSubscription *sync_sub, *rcv_sub;
    pthread_t watch_threads[N_WATCHES]; /* watches of the bucket (watch_main) */
    int nwatches;
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

static void on_pres_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub;
    pt_cluster *c = closure;
    const uint8_t *d = (const uint8_t *)natsMsg_GetData(m);
    int n = natsMsg_GetDataLength(m);
    static const uint8_t none[32];
    if (n >= 5 && pt_get_u32le(d) != c->node) inbox_put(c, IN_PRES, none, d, (size_t)n);
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

/* A delivery of a device's durable consumer: [u16 reply length | reply | stream sequence
 * u64le | server_id i64le | update] to the loop. */
static void on_qd_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub;
    const char *subj = natsMsg_GetSubject(m), *reply = natsMsg_GetReply(m);
    int len = natsMsg_GetDataLength(m);
    uint8_t pk[32];
    size_t rl = reply ? strlen(reply) : 0;
    /* JetStream delivers it with the subject it was stored under: pt.q.<device hex> */
    if (strncmp(subj, "pt.q.", 5) == 0 && strlen(subj + 5) == 64 && pt_hex_decode(pk, 32, subj + 5) == 0 &&
        rl > 0 && rl < 1024 && len > 8) {
        jsMsgMetaData *meta = NULL;
        uint64_t sseq = UINT64_MAX; /* unknown: after the others */
        if (natsMsg_GetMetaData(&meta, m) == NATS_OK) sseq = meta->Sequence.Stream;
        jsMsgMetaData_Destroy(meta);
        uint8_t *b = malloc(2 + rl + 8 + (size_t)len);
        if (b) {
            b[0] = (uint8_t)rl, b[1] = (uint8_t)(rl >> 8);
            memcpy(b + 2, reply, rl);
            pt_put_u64le(b + 2 + rl, sseq);
            memcpy(b + 2 + rl + 8, natsMsg_GetData(m), (size_t)len);
            inbox_put(closure, IN_QDEL, pk, b, 2 + rl + 8 + (size_t)len);
            free(b);
        }
    }
    natsMsg_Destroy(m);
}

static bool queue_full(const jsPubAckErr *pae)
{
    /* 10077 is any failed store; the per-subject limit says which in its text
     * (nats-server: "maximum messages per subject exceeded") */
    return pae && pae->ErrCode == JSStreamStoreFailedErr && pae->ErrText && strstr(pae->ErrText, "per subject");
}

/* JetStream's answer to a publish to pt.q.<device> (whose data starts with the item's
 * server id): [server_id i64le | PUB_* | sequence of the copy JetStream already had
 * (0: none) u64le] to the loop. */
static void on_puback(jsCtx *js, natsMsg *m, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    const char *subj = natsMsg_GetSubject(m);
    const uint8_t *data = (const uint8_t *)natsMsg_GetData(m);
    uint8_t pk[32], d[17];
    if (subj && strlen(subj) == 5 + 64 && memcmp(subj, "pt.q.", 5) == 0 && pt_hex_decode(pk, 32, subj + 5) == 0 &&
        data && natsMsg_GetDataLength(m) >= 8) {
        memcpy(d, data, 8);
        d[8] = pa && !pae ? PUB_OK : queue_full(pae) ? PUB_FULL : PUB_FAILED;
        pt_put_u64le(d + 9, pa && !pae && pa->Duplicate ? pa->Sequence : 0);
        if (pae)
            pt_log_debug("cluster: publish of item %lld: %s (%d %s)", (long long)pt_get_u64le(data),
                         natsStatus_GetText(pae->Err), (int)pae->ErrCode, pae->ErrText ? pae->ErrText : "");
        inbox_put(closure, IN_PUBACK, pk, d, sizeof d);
    }
    natsMsg_Destroy(m);
}

/* NATS is back after an outage: JetStream may have deleted the consumers of devices
 * still connected here meanwhile (consumer_idle), so each is checked again. */
static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    static const uint8_t none[32];
    inbox_put(closure, IN_RECONNECTED, none, NULL, 0);
}

static void on_sub_complete(void *closure)
{
    pt_cluster *c = closure;
    pthread_mutex_lock(&c->mu);
    if (--c->live_subs == 0) pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void q_delivered(pt_cluster *c, const uint8_t pk[32], const uint8_t *d, size_t len);
static void q_puback(pt_cluster *c, const uint8_t pk[32], int64_t sid, int status, uint64_t dup_seq);
static void q_original(pt_cluster *c, int64_t sid, int64_t original, int found);
static void q_ready(pt_cluster *c, const uint8_t pk[32], bool reset, uint32_t gen);

static void log_nats(const char *what, natsStatus st);

/* ---- presence across nodes ------------------------------------------------------------------- */

static void pres_publish(pt_cluster *c, const uint8_t *msg, size_t len)
{
    natsStatus st = natsConnection_Publish(c->nc, "pt.pres", msg, (int)len);
    if (st != NATS_OK) pt_log_debug("cluster: a presence message was not sent (%s)", natsStatus_GetText(st));
}

static void pres_simple(pt_cluster *c, int kind)
{
    uint8_t msg[5];
    pt_put_u32le(msg, c->node);
    msg[4] = (uint8_t)kind;
    pres_publish(c, msg, sizeof msg);
}

void pt_cluster_presence(pt_cluster *c, const uint8_t user[16], int status, const char *name)
{
    uint8_t msg[5 + 16 + 2 + 255];
    size_t nl = name ? strlen(name) : 0;
    if (nl > 255) nl = 255;
    pt_put_u32le(msg, c->node);
    msg[4] = PRES_USER;
    memcpy(msg + 5, user, 16);
    msg[21] = (uint8_t)status;
    msg[22] = (uint8_t)nl;
    if (nl) memcpy(msg + 23, name, nl);
    pres_publish(c, msg, 23 + nl);
}

int pt_cluster_status_put(pt_cluster *c, const uint8_t user[16], int status)
{
    char key[2 + 33];
    key[0] = 'o', key[1] = '.';
    pt_hex_encode(key + 2, user, 16);
    uint8_t v = (uint8_t)status;
    natsStatus st = kvStore_Put(NULL, c->kv, key, &v, 1);
    if (st != NATS_OK) log_nats("storing a status", st);
    return st == NATS_OK ? 0 : PT_ERR_IO;
}

/* A message on pt.pres from another node (loop thread). */
static void pres_heard(pt_cluster *c, const uint8_t *d, size_t len)
{
    uint32_t node = pt_get_u32le(d);
    uint64_t now = uv_now(&c->srv->loop);
    int i = 0;
    while (i < c->npeers && c->peers[i].node != node) i++;
    if (d[4] == PRES_BYE) {
        if (i < c->npeers) c->peers[i] = c->peers[--c->npeers];
        pt_srv_presence_node_gone(c->srv, node);
        return;
    }
    bool fresh = i == c->npeers;
    if (fresh && c->npeers < PRES_PEERS) c->peers[c->npeers++].node = node;
    if (i < c->npeers) c->peers[i].seen_ms = now;
    if (d[4] == PRES_HELLO) { /* (re)started: what it said before is void */
        pt_srv_presence_node_gone(c->srv, node);
        pt_srv_presence_announce(c->srv);
    } else if (fresh) { /* new, or back after we took it for gone (it did the same) */
        pt_srv_presence_announce(c->srv);
    }
    if (d[4] == PRES_USER && len >= 23 && len == 23 + (size_t)d[22] && d[21] <= PT_STATUS_INVISIBLE) {
        char name[256];
        memcpy(name, d + 23, d[22]);
        name[d[22]] = 0;
        pt_srv_presence_remote(c->srv, node, d + 5, d[21], name);
    }
}

/* JOB_UNCLAIMs whose time has come go to the workers. */
static void unclaims_due(pt_cluster *c)
{
    uint64_t now = uv_hrtime() / 1000000;
    pthread_mutex_lock(&c->mu);
    while (c->later && c->later->due_ms <= now) {
        job *j = c->later;
        c->later = j->next;
        if (!c->later) c->later_tail = NULL;
        j->next = NULL;
        if (c->jobs_tail) c->jobs_tail->next = j;
        else c->jobs = j;
        c->jobs_tail = j;
        pthread_cond_signal(&c->job_cv);
    }
    pthread_mutex_unlock(&c->mu);
}

static void on_pres_tick(uv_timer_t *t)
{
    pt_cluster *c = t->data;
    unclaims_due(c);
    pres_simple(c, PRES_BEAT);
    uint64_t now = uv_now(&c->srv->loop);
    for (int i = 0; i < c->npeers;) {
        if (now - c->peers[i].seen_ms < PRES_GONE_MS) {
            i++;
            continue;
        }
        uint32_t node = c->peers[i].node;
        c->peers[i] = c->peers[--c->npeers];
        pt_log_info("cluster: node %u not heard for %d s: its users are offline here", node, PRES_GONE_MS / 1000);
        pt_srv_presence_node_gone(c->srv, node);
    }
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
        } else if (it->kind == IN_QDEL) {
            q_delivered(c, it->pk, it->data, it->len);
        } else if ((it->kind == IN_RESET || it->kind == IN_READY) && it->len == 4) {
            q_ready(c, it->pk, it->kind == IN_RESET, pt_get_u32le(it->data));
        } else if (it->kind == IN_REVOKED && it->len == 16) {
            pt_srv_device_revoked_remote(c->srv, it->data, it->pk);
        } else if (it->kind == IN_BOUND && it->len == 16) {
            pt_srv_dir_device_bound(c->srv, it->data, it->pk);
        } else if (it->kind == IN_STATUS && it->len == 1) {
            pt_srv_presence_chosen(c->srv, it->pk, it->data[0]);
        } else if (it->kind == IN_PRES) {
            pres_heard(c, it->data, it->len);
        } else if (it->kind == IN_GROUP) {
            pt_srv_group_remote(c->srv, it->pk, it->data, it->len);
        } else if (it->kind == IN_CONTACT) {
            pt_cluster_contact k;
            if (pt_cluster_contact_decode(&k, it->data, it->len) == 0)
                pt_srv_contact_remote(c->srv, it->pk, it->pk + 16, pt_get_u32le(it->data + 1), &k);
            else pt_log_error("cluster: a contact record in the bucket does not parse; not copied");
        } else if (it->kind == IN_PUBACK) {
            q_puback(c, it->pk, (int64_t)pt_get_u64le(it->data), it->data[8], pt_get_u64le(it->data + 9));
        } else if (it->kind == IN_RECONNECTED) {
            size_t n = 0;
            for (size_t h = 0; h < Q_BUCKETS; h++)
                for (qdev *q = c->qdevs[h]; q; q = q->next, n++) {
                    job *j = calloc(1, sizeof *j);
                    if (!j) continue;
                    j->kind = JOB_CHECK;
                    memcpy(j->pk, q->pk, 32);
                    job_push(c, j, false);
                }
            pt_log_info("cluster: NATS reconnected; checking the consumers of %zu device(s) connected here", n);
        } else if (it->kind == IN_ORIGINAL && it->len == 17) {
            q_original(c, (int64_t)pt_get_u64le(it->data), (int64_t)pt_get_u64le(it->data + 8), it->data[16]);
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

/* Watches of the bucket, one thread each (watch_main):
 *  - r.*: revocations, from whichever node, so that the node a revoked device is
 *    connected to closes it and forgets what it cached (a bind through any node is
 *    refused already: pt_cluster_bind);
 *  - v.*.*: the devices users bind, on whichever node, so that a node that looked a
 *    user up before learns the user's new devices (the routing directory);
 *  - k.*.*: contacts (requests, friends, blocks) changed on whichever node, copied to
 *    this node's store and its directory of blocks (pt_srv_contact_remote);
 *  - g.*: groups changed on whichever node, copied to this node's store
 *    (pt_srv_group_remote), where group sends read their members.
 * Watches rather than broadcasts: they resume after a lost NATS connection, where a
 * broadcast would be missed. A new watch replays what the keys hold (idempotent). */

/* The cluster is going: worker and watch threads end. */
static bool stopping(pt_cluster *c)
{
    pthread_mutex_lock(&c->mu);
    bool stop = c->worker_stop;
    pthread_mutex_unlock(&c->mu);
    return stop;
}

/* r.<device hex> = user_id[16]: IN_REVOKED for the device, with the user */
static void on_revoked_key(pt_cluster *c, kvEntry *e)
{
    const char *key = kvEntry_Key(e);
    uint8_t dev[32];
    if (strlen(key) == 66 && pt_hex_decode(dev, 32, key + 2) == 0 && kvEntry_ValueLen(e) == 16)
        inbox_put(c, IN_REVOKED, dev, kvEntry_Value(e), 16);
}

/* v.<user hex>.<device hex>: IN_BOUND for the device, with the user */
static void on_device_key(pt_cluster *c, kvEntry *e)
{
    const char *key = kvEntry_Key(e);
    uint8_t user[16], dev[32];
    char uh[33] = "";
    if (strlen(key) == 2 + 32 + 1 + 64 && key[34] == '.') memcpy(uh, key + 2, 32);
    if (uh[0] && pt_hex_decode(user, 16, uh) == 0 && pt_hex_decode(dev, 32, key + 35) == 0)
        inbox_put(c, IN_BOUND, dev, user, 16);
}

/* k.<lo hex>.<hi hex>: IN_CONTACT for the pair (lo || hi), with the record */
static void on_contact_key(pt_cluster *c, kvEntry *e)
{
    const char *key = kvEntry_Key(e);
    uint8_t pair[32];
    char lo[33] = "";
    if (strlen(key) == 2 + 32 + 1 + 32 && key[34] == '.') memcpy(lo, key + 2, 32);
    if (lo[0] && pt_hex_decode(pair, 16, lo) == 0 && pt_hex_decode(pair + 16, 16, key + 35) == 0)
        inbox_put(c, IN_CONTACT, pair, kvEntry_Value(e), (size_t)kvEntry_ValueLen(e));
}

/* g.<group hex>: IN_GROUP for the group (pk: its id, then zeros), with the record */
static void on_group_key(pt_cluster *c, kvEntry *e)
{
    const char *key = kvEntry_Key(e);
    uint8_t id[32] = {0};
    if (strlen(key) == 2 + 32 && pt_hex_decode(id, 16, key + 2) == 0)
        inbox_put(c, IN_GROUP, id, kvEntry_Value(e), (size_t)kvEntry_ValueLen(e));
}

/* o.<user hex> = status: IN_STATUS for the user (pk: its id, then zeros) */
static void on_status_key(pt_cluster *c, kvEntry *e)
{
    const char *key = kvEntry_Key(e);
    uint8_t id[32] = {0};
    const uint8_t *v = kvEntry_Value(e);
    if (strlen(key) == 2 + 32 && pt_hex_decode(id, 16, key + 2) == 0 && kvEntry_ValueLen(e) == 1 &&
        v[0] >= PT_STATUS_ONLINE && v[0] <= PT_STATUS_INVISIBLE)
        inbox_put(c, IN_STATUS, id, v, 1);
}

static const struct watch_def {
    const char *filter, *what;
    void (*on_put)(pt_cluster *c, kvEntry *e);
} watches[N_WATCHES] = {
    {"r.*", "revocations", on_revoked_key},
    {"v.*.*", "users' devices", on_device_key},
    {"k.*.*", "contacts", on_contact_key},
    {"g.*", "groups", on_group_key},
    {"o.*", "statuses", on_status_key},
};

typedef struct watch_arg {
    pt_cluster *c;
    const struct watch_def *def;
} watch_arg;

static void *watch_main(void *arg)
{
    pt_cluster *c = ((watch_arg *)arg)->c;
    const struct watch_def *def = ((watch_arg *)arg)->def;
    free(arg);
    kvWatchOptions wo;
    kvWatchOptions_Init(&wo);
    wo.IgnoreDeletes = true;
    /* A watch that fails (NATS or JetStream restarting, a leader being elected) is
     * made again, every 0.5 s then every 5 s; a new one replays the keys. */
    for (int fails = 0; !stopping(c);) {
        kvWatcher *w = NULL;
        natsStatus st = kvStore_Watch(&w, c->kv, def->filter, &wo);
        while (st == NATS_OK && !stopping(c)) {
            kvEntry *e = NULL;
            st = kvWatcher_Next(&e, w, 500);
            if (st == NATS_TIMEOUT) {
                st = NATS_OK;
                continue;
            }
            if (st != NATS_OK || !e) continue; /* !e: the end of what was there at start */
            fails = 0;
            if (kvEntry_Operation(e) == kvOp_Put) def->on_put(c, e);
            kvEntry_Destroy(e);
        }
        if (w) kvWatcher_Destroy(w);
        if (stopping(c)) break;
        if (fails++ == 0)
            pt_log_warn("cluster: the watch of %s failed (%s); making it again", def->what, natsStatus_GetText(st));
        for (int k = 0; k < (fails < 10 ? 5 : 50) && !stopping(c); k++) uv_sleep(100);
    }
    return NULL;
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

static int open_bucket_as_is(pt_cluster *c, uint32_t replicas);

/* Reads of the bucket from its leader only. libnats makes buckets with AllowDirect,
 * which lets any replica answer a get, and one that lags answers with an older value:
 * a key created a moment ago through another node is not there yet (a device's prekeys
 * just uploaded, a server-id block after a restart). The directory needs to read what
 * was written, so the bucket's stream is switched to gets through its leader, and the
 * bucket opened again (libnats picks the kind of get when it opens it). */
static void read_from_leader(pt_cluster *c)
{
    /* A cluster that just started may time the update out while it elects the stream's
     * leader, and still apply it: each try looks again first. */
    bool direct = true;
    for (int tries = 0; tries < 4 && direct; tries++) {
        jsStreamInfo *si = NULL;
        jsErrCode jerr = 0;
        natsStatus st = js_GetStreamInfo(&si, c->js, "KV_" BUCKET, NULL, &jerr);
        if (st == NATS_OK && !(direct = si->Config->AllowDirect)) {
            jsStreamInfo_Destroy(si);
            break;
        }
        if (st == NATS_OK) {
            si->Config->AllowDirect = false;
            jsStreamInfo *u = NULL;
            st = js_UpdateStream(&u, c->js, si->Config, NULL, &jerr);
            jsStreamInfo_Destroy(u);
            direct = st != NATS_OK;
        }
        jsStreamInfo_Destroy(si);
        if (direct)
            pt_log_warn("cluster: bucket " BUCKET ": turning direct gets off: %s; trying again",
                        natsStatus_GetText(st));
    }
    if (direct) pt_log_error("cluster: bucket " BUCKET ": direct gets stay on; reads may lag");
    /* Opened again even when another node turned direct gets off: this node may have
     * opened the bucket before that, and its handle would still send direct gets, which
     * nothing answers once they are off (every read timed out: CI, 2026-12-06). */
    kvStore *kv = NULL;
    if (js_KeyValue(&kv, c->js, BUCKET) == NATS_OK) {
        kvStore_Destroy(c->kv);
        c->kv = kv;
    }
}

static int open_bucket(pt_cluster *c, uint32_t replicas)
{
    int rc = open_bucket_as_is(c, replicas);
    if (rc == 0) read_from_leader(c);
    return rc;
}

static int open_bucket_as_is(pt_cluster *c, uint32_t replicas)
{
    natsStatus st = js_KeyValue(&c->kv, c->js, BUCKET);
    if (st == NATS_OK) return 0;
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = BUCKET;
    kc.Description = "packtrackd: usernames, skeletons, users' devices, prekeys, server-id blocks";
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

/* The queue quota: JetStream refuses an item for a device whose subject holds `quota`
 * items (discard new, per subject, nats-server 2.9.2 and later), and the publish's
 * answer says so. The limit is the stream's, one for the whole cluster. It is set when
 * the stream is made and raised by a node asking for more; it is never lowered here:
 * JetStream trims every subject above a lowered limit to its newest items, which would
 * drop queued items (so would adding a limit to a stream made without one). */
static void queue_limits(jsStreamConfig *sc, uint32_t quota)
{
    sc->MaxMsgsPerSubject = quota;
    sc->Discard = js_DiscardNew;
    sc->DiscardNewPerSubject = true;
}

/* The stream's configuration as JetStream keeps it: a server that does not know
 * DiscardNewPerSubject ignores it and drops the *oldest* item of a full subject, so
 * then the limit is taken off again (raising a limit never trims). */
static void check_kept(pt_cluster *c, jsStreamConfig *kept)
{
    if (kept->MaxMsgsPerSubject <= 0 || (kept->Discard == js_DiscardNew && kept->DiscardNewPerSubject)) {
        atomic_store(&c->quota, kept->MaxMsgsPerSubject > 0 ? (uint32_t)kept->MaxMsgsPerSubject : 0);
        return;
    }
    pt_log_error("cluster: this nats-server does not keep discard_new_per_subject (2.9.2 and later do): "
                 "the queue quota is not enforced in JetStream");
    kept->MaxMsgsPerSubject = -1;
    jsStreamInfo *u = NULL;
    natsStatus st = js_UpdateStream(&u, c->js, kept, NULL, NULL);
    jsStreamInfo_Destroy(u);
    if (st != NATS_OK) log_nats("taking the per-device limit off the stream " QSTREAM, st);
    atomic_store(&c->quota, 0);
}

/* Raises the stream's limit to quota when it is lower; a lower quota is logged and the
 * stream's kept. A stream without a limit (made by an earlier version) stays so. */
static int set_queue_quota_locked(pt_cluster *c, uint32_t quota);

static int set_queue_quota(pt_cluster *c, uint32_t quota)
{
    /* one at a time (two reloads): each reads the configuration, then writes it */
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    int rc = set_queue_quota_locked(c, quota);
    pthread_mutex_unlock(&mu);
    return rc;
}

static int set_queue_quota_locked(pt_cluster *c, uint32_t quota)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetStreamInfo(&si, c->js, QSTREAM, NULL, &jerr);
    if (st != NATS_OK) {
        log_nats("reading the stream " QSTREAM "'s configuration", st);
        return PT_ERR_IO;
    }
    jsStreamConfig *sc = si->Config;
    int64_t was = sc->MaxMsgsPerSubject;
    if (was <= 0) {
        pt_log_warn("cluster: the stream " QSTREAM " has no per-device limit (made by an earlier version): "
                    "queue_quota is not enforced in JetStream; adding one would drop items above it "
                    "(docs/ARCHITECTURE.md, \"Queue quota\")");
        atomic_store(&c->quota, 0);
    } else if ((int64_t)quota < was) {
        pt_log_warn("cluster: queue_quota %u is below the stream " QSTREAM "'s %lld items per device, which "
                    "stays (lowering it would drop queued items)", quota, (long long)was);
        check_kept(c, sc);
    } else if ((int64_t)quota > was || sc->Discard != js_DiscardNew || !sc->DiscardNewPerSubject) {
        queue_limits(sc, quota);
        jsStreamInfo *u = NULL;
        st = js_UpdateStream(&u, c->js, sc, NULL, &jerr);
        if (st == NATS_OK) {
            pt_log_info("cluster: queue quota raised to %u items per device (stream " QSTREAM ", was %lld)",
                        quota, (long long)was);
            check_kept(c, u->Config);
        } else {
            log_nats("raising the queue quota on the stream " QSTREAM, st);
        }
        jsStreamInfo_Destroy(u);
    } else {
        check_kept(c, sc);
    }
    jsStreamInfo_Destroy(si);
    return st == NATS_OK ? 0 : PT_ERR_IO;
}

int pt_cluster_set_queue_quota(pt_cluster *c, uint32_t quota)
{
    if (quota == c->quota_asked) return 0; /* a reload that left it as it was */
    c->quota_asked = quota;
    /* on a worker: JetStream requests wait up to 5 s, and this runs on the loop */
    job *j = calloc(1, sizeof *j);
    if (!j) return PT_ERR_NOMEM;
    j->kind = JOB_QUOTA;
    j->quota = quota;
    job_push(c, j, false);
    return 0;
}

/* The stream exists: this node's quota raises its limit if need be. A JetStream that
 * does not answer that now (a leader being elected, a busy machine) does not stop the
 * node from starting: the stream keeps its limit, and the next reload asks again. */
static int quota_at_start(pt_cluster *c)
{
    if (set_queue_quota(c, c->quota) != 0) {
        pt_log_warn("cluster: the queue quota could not be checked on the stream " QSTREAM
                    " at start; it keeps its limit (the next reload asks again)");
        c->quota_asked = 0;
    }
    return 0;
}

/* The queue stream: work-queue retention (a message goes once its consumer acked
 * it), file storage, `replicas` copies, a 2-minute deduplication window, the quota. */
static int open_queue_stream(pt_cluster *c)
{
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[] = {"pt.q.>"};
    sc.Name = QSTREAM;
    sc.Description = "packtrackd: per-device queues of stored items";
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Retention = js_WorkQueuePolicy;
    sc.Storage = js_FileStorage;
    sc.Replicas = c->replicas;
    sc.Duplicates = (int64_t)Q_DUP_WINDOW_S * 1000000000;
    queue_limits(&sc, c->quota);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    /* there already (the usual case): its quota, and no create request with another
     * configuration */
    if (js_GetStreamInfo(&si, c->js, QSTREAM, NULL, &jerr) == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return quota_at_start(c);
    }
    si = NULL;
    natsStatus st = NATS_TIMEOUT;
    /* a cluster that just started may still be electing the stream's leader */
    for (int tries = 0; tries < 4 && (st == NATS_TIMEOUT || st == NATS_NO_RESPONDERS); tries++) {
        if (tries) pt_log_warn("cluster: stream " QSTREAM " not ready (%s); trying again", natsStatus_GetText(st));
        st = js_AddStream(&si, c->js, &sc, NULL, &jerr);
    }
    if (st == NATS_OK) {
        check_kept(c, si->Config);
        jsStreamInfo_Destroy(si);
        return 0;
    }
    /* There already: made before with another configuration (name exists), or by
     * another node at this same moment (2.9 then answers that the subjects overlap). */
    if ((jerr == JSStreamNameExistErr || jerr == JSStreamSubjectOverlapErr) &&
        js_GetStreamInfo(&si, c->js, QSTREAM, NULL, NULL) == NATS_OK) {
        if (si->Config->Replicas != (int64_t)c->replicas)
            pt_log_warn("cluster: stream " QSTREAM " exists with %lld replicas; used as it is",
                        (long long)si->Config->Replicas);
        jsStreamInfo_Destroy(si);
        /* made by another version, or with another quota: raised to this node's */
        return quota_at_start(c);
    }
    log_nats("cannot create the JetStream stream " QSTREAM, st);
    return PT_ERR_IO;
}

static void add_consumer(pt_cluster *c, const uint8_t pk[32]);

/* The worker: each device that comes up gets its durable push consumer, without
 * blocking the loop. A consumer that still has deliveries out (unconfirmed, or
 * delivered while no node had the device's subject: into the void, back only after
 * the ack wait) would hand them over behind later items; it is made again instead,
 * so that it delivers what is left in stream order (a work queue keeps what was not
 * acked; IN_RESET, once the old one is gone, tells the loop to drop what it had
 * delivered). Then the loop is told the device is ready (IN_READY): until then its
 * deliveries wait, unpushed. A delivery of the old consumer that reaches this node
 * after its delete was answered (possible across NATS servers, not seen) would
 * still be pushed at IN_READY; a deliver subject per consumer would close that. */
static void ensure_consumer(pt_cluster *c, const uint8_t pk[32], uint32_t gen)
{
    uint8_t g[4];
    pt_put_u32le(g, gen);
    char hex[65], durable[80];
    pt_hex_encode(hex, pk, 32);
    snprintf(durable, sizeof durable, "d%s", hex);
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    if (js_GetConsumerInfo(&ci, c->js, QSTREAM, durable, NULL, &jerr) == NATS_OK) {
        bool out = ci->NumAckPending > 0;
        jsConsumerInfo_Destroy(ci);
        if (!out) {
            inbox_put(c, IN_READY, pk, g, sizeof g);
            return;
        }
        natsStatus st = js_DeleteConsumer(c->js, QSTREAM, durable, NULL, &jerr);
        if (st != NATS_OK)
            pt_log_warn("cluster: consumer %.17s...: cannot make it again: %s", durable,
                        natsStatus_GetText(st));
        /* After the delete, not before: until it is gone the old consumer still
         * delivers (an item sent after the device came back), and such a delivery,
         * held and pushed at IN_READY, overtook the older ones the new consumer
         * delivers (test_chat_across_nodes: 11, 10, 12 under load). Ahead of
         * everything the new one delivers. */
        inbox_put(c, IN_RESET, pk, g, sizeof g);
    }
    add_consumer(c, pk);
    inbox_put(c, IN_READY, pk, g, sizeof g);
}

static void add_consumer(pt_cluster *c, const uint8_t pk[32])
{
    char hex[65], durable[80], filter[80], deliver[80];
    pt_hex_encode(hex, pk, 32);
    snprintf(durable, sizeof durable, "d%s", hex);
    snprintf(filter, sizeof filter, "pt.q.%s", hex);
    snprintf(deliver, sizeof deliver, "pt.qd.%s", hex);
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = durable;
    cc.FilterSubject = filter;
    cc.DeliverSubject = deliver;
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = (int64_t)Q_ACK_WAIT_MS * 1000000;
    cc.MaxAckPending = Q_MAX_ACK_PENDING;
    /* while the device is connected its node subscribes to the deliver subject (interest);
     * once nobody has, JetStream deletes the consumer after this, keeping its items */
    cc.InactiveThreshold = (int64_t)c->consumer_idle_s * 1000000000;
    for (int tries = 0; tries < 3; tries++) {
        /* a try that timed out may have made it, and the device been revoked since (its
         * consumer deleted): not made again (a stray one goes after consumer_idle) */
        if (tries && pt_cluster_revoked(c, pk) == 1) return;
        jsConsumerInfo *ci = NULL;
        jsErrCode jerr = 0;
        natsStatus st = js_AddConsumer(&ci, c->js, QSTREAM, &cc, NULL, &jerr);
        if (st == NATS_OK) {
            pt_log_debug("cluster: consumer d%.16s... ready", hex);
            jsConsumerInfo_Destroy(ci);
            return;
        }
        if (jerr == JSConsumerNameExistErr || jerr == JSConsumerExistingActiveErr) return; /* there */
        if (stopping(c)) return;
        pt_log_warn("cluster: consumer for device %.16s...: %s (%d)%s", hex, natsStatus_GetText(st), (int)jerr,
                    tries < 2 ? "; trying again" : "");
    }
}

/* The server id of the item at stream sequence j->seq, which an earlier publish of the
 * same request stored (another node that died before it answered, or this one): to
 * the loop as IN_ORIGINAL [j->sid | that id, 0 when the item has left the queue]. */
static void find_original(pt_cluster *c, const job *j)
{
    uint8_t d[17] = {0};
    pt_put_u64le(d, (uint64_t)j->sid);
    char subj[72];
    q_subject(subj, j->pk);
    d[16] = ORIG_FAILED;
    /* a stream leader being elected does not answer for a few seconds */
    for (int tries = 0; tries < 4 && d[16] == ORIG_FAILED && !stopping(c); tries++) {
        if (tries) uv_sleep(500);
        natsMsg *m = NULL;
        jsErrCode jerr = 0;
        natsStatus st = js_GetMsg(&m, c->js, QSTREAM, j->seq, NULL, &jerr);
        if (st == NATS_OK && natsMsg_GetDataLength(m) >= 8 && natsMsg_GetSubject(m) &&
            strcmp(natsMsg_GetSubject(m), subj) == 0) {
            memcpy(d + 8, natsMsg_GetData(m), 8);
            d[16] = ORIG_FOUND;
        } else if (st == NATS_OK || jerr == JSNoMessageFoundErr) {
            d[16] = ORIG_GONE; /* acked and deleted (sequences are never reused) */
        } else {
            log_nats("reading an item stored before", st);
        }
        natsMsg_Destroy(m);
    }
    inbox_put(c, IN_ORIGINAL, j->pk, d, sizeof d);
}

/* After a NATS outage: the consumer of a device connected here may have been deleted
 * meanwhile (consumer_idle); made again if so. One that exists is left as it is (its
 * deliveries out are this node's, their ack subjects still valid). */
static void check_consumer(pt_cluster *c, const uint8_t pk[32])
{
    char hex[65], durable[80];
    pt_hex_encode(hex, pk, 32);
    snprintf(durable, sizeof durable, "d%s", hex);
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetConsumerInfo(&ci, c->js, QSTREAM, durable, NULL, &jerr);
    jsConsumerInfo_Destroy(ci);
    if (st != NATS_OK && jerr == JSConsumerNotFoundErr) {
        pt_log_info("cluster: consumer %.17s... was deleted while NATS was away; made again", durable);
        add_consumer(c, pk);
    }
}

static void unclaim(pt_cluster *c, const job *j);

static void *worker_main(void *arg)
{
    pt_cluster *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        /* the first job whose device no other worker is on: two jobs for one device
         * (up, down, up) must not delete and create its consumer at the same time */
        job *j = NULL, *prev = NULL;
        int slot = -1;
        while (!c->worker_stop) {
            for (j = c->jobs, prev = NULL; j; prev = j, j = j->next) {
                bool busy = false;
                for (int i = 0; i < Q_WORKERS && !busy && (j->kind == JOB_CONSUMER || j->kind == JOB_CHECK); i++)
                    busy = c->busy_on[i] && memcmp(c->busy[i], j->pk, 32) == 0;
                if (!busy) break;
            }
            if (j) break;
            pthread_cond_wait(&c->job_cv, &c->mu);
        }
        if (c->worker_stop) break;
        if (prev) prev->next = j->next;
        else c->jobs = j->next;
        if (c->jobs_tail == j) c->jobs_tail = prev;
        for (int i = 0; i < Q_WORKERS && slot < 0; i++)
            if (!c->busy_on[i]) slot = i;
        c->busy_on[slot] = true;
        memcpy(c->busy[slot], j->pk, 32);
        pthread_mutex_unlock(&c->mu);
        if (j->kind == JOB_ORIGINAL) find_original(c, j);
        else if (j->kind == JOB_UNCLAIM) unclaim(c, j);
        else if (j->kind == JOB_QUOTA) (void)set_queue_quota(c, j->quota);
        else if (j->kind == JOB_CHECK) check_consumer(c, j->pk);
        else ensure_consumer(c, j->pk, j->gen);
        free(j);
        pthread_mutex_lock(&c->mu);
        c->busy_on[slot] = false;
        pthread_cond_broadcast(&c->job_cv); /* a job held back for this device may go */
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void job_push(struct pt_cluster *c, job *j, bool first)
{
    pthread_mutex_lock(&c->mu);
    if (first) {
        j->next = c->jobs;
        c->jobs = j;
        if (!c->jobs_tail) c->jobs_tail = j;
        pthread_cond_signal(&c->job_cv);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    if (c->jobs_tail) c->jobs_tail->next = j;
    else c->jobs = j;
    c->jobs_tail = j;
    pthread_cond_signal(&c->job_cv);
    pthread_mutex_unlock(&c->mu);
}

static void job_post(pt_cluster *c, const uint8_t pk[32], uint32_t gen)
{
    job *j = calloc(1, sizeof *j);
    if (!j) return;
    j->gen = gen;
    memcpy(j->pk, pk, 32);
    job_push(c, j, false);
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
    c->quota = c->quota_asked = s->cfg.queue_quota ? s->cfg.queue_quota : PT_SERVER_QUEUE_QUOTA;
    c->consumer_idle_s = cc->consumer_idle_s ? cc->consumer_idle_s : PT_CLUSTER_CONSUMER_IDLE_S;
    c->claim_max_ms = CLAIM_MAX_MS;
    const char *t = getenv("PT_TEST_CLAIM_MAX_MS"); /* tests: claim keys dropped sooner */
    if (t && atoi(t) >= 100 && atoi(t) < CLAIM_MAX_MS) {
        c->claim_max_ms = (uint32_t)atoi(t);
        pt_log_warn("TEST ONLY: prekey fetches give up after %u ms (PT_TEST_CLAIM_MAX_MS)", c->claim_max_ms);
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    pthread_cond_init(&c->job_cv, NULL);
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
    if (st == NATS_OK) st = natsOptions_SetReconnectedCB(o, on_reconnected, c);
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
    c->replicas = cc->replicas;
    if (!c->replicas) { /* min(3, the servers this cluster has) */
        char **known = NULL;
        int nknown = 0;
        c->replicas = PT_CLUSTER_REPLICAS;
        if (natsConnection_GetServers(c->nc, &known, &nknown) == NATS_OK) {
            if (nknown > 0 && (uint32_t)nknown < c->replicas) c->replicas = (uint32_t)nknown;
            for (int i = 0; i < nknown; i++) free(known[i]);
            free(known);
        }
    }
    int rc = open_bucket(c, c->replicas);
    if (rc) return rc;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    jo.PublishAsync.MaxPending = 65536;
    jo.PublishAsync.StallWait = 50;
    jo.PublishAsync.AckHandler = on_puback;
    jo.PublishAsync.AckHandlerClosure = c;
    if ((st = natsConnection_JetStream(&c->jsq, c->nc, &jo)) != NATS_OK) {
        log_nats("no JetStream context", st);
        return PT_ERR_IO;
    }
    if ((rc = open_queue_stream(c)) != 0) return rc;
    for (; c->nworkers < Q_WORKERS; c->nworkers++)
        if (pthread_create(&c->workers[c->nworkers], NULL, worker_main, c) != 0) return PT_ERR_IO;
    if (uv_async_init(&s->loop, &c->async, on_async) != 0) return PT_ERR_IO;
    c->async.data = c;
    uv_timer_init(&s->loop, &c->retry_timer);
    c->retry_timer.data = c;
    uv_timer_init(&s->loop, &c->pres_timer);
    c->pres_timer.data = c;
    pthread_mutex_lock(&c->mu);
    c->async_on = true;
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < N_WATCHES; i++) {
        watch_arg *wa = malloc(sizeof *wa);
        if (!wa) return PT_ERR_NOMEM;
        *wa = (watch_arg){c, &watches[i]};
        if (pthread_create(&c->watch_threads[i], NULL, watch_main, wa) != 0) return free(wa), PT_ERR_IO;
        c->nwatches++;
    }
    char subj[48];
    snprintf(subj, sizeof subj, "pt.rcv.%u", c->node);
    if (!(c->sync_sub = subscribe(c, "pt.sync", on_sync_msg)) || !(c->rcv_sub = subscribe(c, subj, on_rcv_msg)) ||
        !(c->pres_sub = subscribe(c, "pt.pres", on_pres_msg)))
        return PT_ERR_IO;
    pres_simple(c, PRES_HELLO); /* the others announce their users */
    uv_timer_start(&c->pres_timer, on_pres_tick, PRES_BEAT_MS, PRES_BEAT_MS);
    if ((st = natsConnection_FlushTimeout(c->nc, 5000)) != NATS_OK) {
        log_nats("NATS did not answer a flush", st);
        return PT_ERR_IO;
    }
    char url[256] = "";
    natsConnection_GetConnectedUrl(c->nc, url, sizeof url);
    pt_log_info("cluster: node %u connected to NATS at %s; directory bucket " BUCKET ", queue stream " QSTREAM
                ", %u replicas", c->node, url, c->replicas);
    return 0;
}

void pt_cluster_stop(pt_server *s)
{
    pt_cluster *c = s->cluster;
    if (!c) return;
    if (c->pres_sub) { /* the others take this node's users offline now, not in 7 s */
        pres_simple(c, PRES_BYE);
        natsConnection_FlushTimeout(c->nc, 500);
    }
    unsubscribe(&c->sync_sub);
    unsubscribe(&c->rcv_sub);
    unsubscribe(&c->pres_sub);
    pthread_mutex_lock(&c->mu);
    bool on = c->async_on;
    c->async_on = false;
    pthread_mutex_unlock(&c->mu);
    if (on) {
        uv_close((uv_handle_t *)&c->async, NULL);
        uv_close((uv_handle_t *)&c->retry_timer, NULL);
        uv_close((uv_handle_t *)&c->pres_timer, NULL);
    }
}

void pt_cluster_free(pt_server *s)
{
    pt_cluster *c = s->cluster;
    if (!c) return;
    s->cluster = NULL;
    unsubscribe(&c->sync_sub);
    unsubscribe(&c->rcv_sub);
    unsubscribe(&c->pres_sub);
    if (c->nworkers || c->nwatches) {
        pthread_mutex_lock(&c->mu);
        c->worker_stop = true;
        pthread_cond_broadcast(&c->job_cv);
        pthread_mutex_unlock(&c->mu);
        for (int i = 0; i < c->nworkers; i++) pthread_join(c->workers[i], NULL);
        for (int i = 0; i < c->nwatches; i++) /* within 500 ms: kvWatcher_Next's wait */
            pthread_join(c->watch_threads[i], NULL);
    }
    for (job *j = c->jobs, *next; j; j = next) {
        next = j->next;
        free(j);
    }
    for (job *j = c->later, *next; j; j = next) { /* claim keys left (ARCHITECTURE.md) */
        next = j->next;
        free(j);
    }
    for (size_t i = 0; i < Q_BUCKETS; i++)
        while (c->qdevs[i]) {
            void *q = c->qdevs[i];
            pt_cluster_device_down(c, &q);
        }
    for (size_t i = 0; i < SEND_BUCKETS; i++)
        for (qsend *q = c->sends[i], *next; q; q = next) {
            next = q->next;
            free(q->pk);
            free(q->tries);
            free(q);
        }
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
    jsCtx_Destroy(c->jsq);
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
    pthread_cond_destroy(&c->job_cv);
    free(c);
}

/* ---- routing ------------------------------------------------------------------------------- */

static void dev_subject(char out[72], const uint8_t pk[32])
{
    memcpy(out, "pt.dev.", 7);
    pt_hex_encode(out + 7, pk, 32);
}

static size_t qdev_hash(const uint8_t pk[32]) { return (size_t)(pt_get_u64le(pk) % Q_BUCKETS); }

static qdev *qdev_find(pt_cluster *c, const uint8_t pk[32])
{
    for (qdev *q = c->qdevs[qdev_hash(pk)]; q; q = q->next)
        if (memcmp(q->pk, pk, 32) == 0) return q;
    return NULL;
}

void pt_cluster_device_up(pt_cluster *c, const uint8_t pk[32], void **sub)
{
    if (*sub) return;
    qdev *q = calloc(1, sizeof *q);
    if (!q) return;
    memcpy(q->pk, pk, 32);
    char subj[80], hex[65];
    dev_subject(subj, pk);
    q->dev_sub = subscribe(c, subj, on_dev_msg);
    pt_hex_encode(hex, pk, 32);
    snprintf(subj, sizeof subj, "pt.qd.%s", hex);
    q->q_sub = subscribe(c, subj, on_qd_msg);
    size_t h = qdev_hash(pk);
    q->next = c->qdevs[h];
    c->qdevs[h] = q;
    *sub = q;
    q->gen = ++c->next_gen;
    job_post(c, pk, q->gen); /* its consumer, which then delivers to pt.qd.<hex> */
}

static void ack_publish(pt_cluster *c, const char *reply, const char *what)
{
    natsStatus st = natsConnection_PublishString(c->nc, reply, what);
    if (st != NATS_OK) pt_log_debug("cluster: %s to %s: %s", what, reply, natsStatus_GetText(st));
}

void pt_cluster_device_down(pt_cluster *c, void **sub)
{
    qdev *q = *sub;
    *sub = NULL;
    if (!q) return;
    for (qdev **pp = &c->qdevs[qdev_hash(q->pk)]; *pp; pp = &(*pp)->next)
        if (*pp == q) {
            *pp = q->next;
            break;
        }
    unsubscribe(&q->dev_sub);
    unsubscribe(&q->q_sub);
    /* what it did not confirm is delivered again at once, wherever it is next */
    for (size_t i = 0; i < q->npend; i++) {
        ack_publish(c, q->pend[i].reply, "-NAK");
        free(q->pend[i].reply);
        free(q->pend[i].update);
    }
    free(q->pend);
    free(q);
}

/* ---- durable queues (the stream PT_QUEUE) ------------------------------------------------------ */

static void q_delivered(pt_cluster *c, const uint8_t pk[32], const uint8_t *d, size_t len)
{
    size_t rl = (size_t)(d[0] | d[1] << 8);
    char *reply = malloc(rl + 1);
    if (!reply) return;
    memcpy(reply, d + 2, rl);
    reply[rl] = 0;
    uint64_t sseq = pt_get_u64le(d + 2 + rl);
    const uint8_t *body = d + 2 + rl + 8;
    size_t blen = len - 2 - rl - 8;
    int64_t sid = (int64_t)pt_get_u64le(body);
    qdev *q = qdev_find(c, pk);
    if (!q) { /* gone from here meanwhile: to wherever it is now */
        ack_publish(c, reply, "-NAK");
        free(reply);
        return;
    }
    for (unsigned i = 0; i < Q_CONFIRMED && i < q->nconf; i++)
        if (q->confirmed[i] == sid) { /* confirmed already (a delivery through another node) */
            ack_publish(c, reply, "+ACK");
            free(reply);
            return;
        }
    qpend *p = NULL;
    for (size_t i = 0; i < q->npend && !p; i++)
        if (q->pend[i].sid == sid) p = &q->pend[i];
    if (p) { /* delivered again: the latest ack subject counts */
        free(p->reply);
        p->reply = reply;
    } else {
        if (q->npend == q->cap) {
            size_t cap = q->cap ? q->cap * 2 : 16;
            qpend *np = realloc(q->pend, cap * sizeof *np);
            if (!np) {
                free(reply);
                return;
            }
            q->pend = np;
            q->cap = cap;
        }
        uint8_t *u = malloc(blen - 8);
        if (!u) {
            free(reply);
            return;
        }
        memcpy(u, body + 8, blen - 8);
        size_t at = q->npend; /* kept in stream order */
        while (at > 0 && q->pend[at - 1].sseq > sseq) at--;
        memmove(&q->pend[at + 1], &q->pend[at], (q->npend - at) * sizeof *q->pend);
        q->npend++;
        p = &q->pend[at];
        *p = (qpend){.sid = sid, .sseq = sseq, .reply = reply, .len = blen - 8, .update = u};
    }
    if (!q->ready) return; /* pushed once the consumer is checked (q_ready) */
    pt_buf b = {.data = p->update, .len = p->len, .cap = p->len};
    pt_srv_push_device(c->srv, pk, NULL, &b);
}

/* IN_RESET (reset): the device's consumer is about to be made again; the deliveries
 * held here are dropped unacked (their ack subjects belong to the consumer that goes;
 * the new one delivers them again). IN_READY: the consumer is checked; what came
 * meanwhile is pushed now, in stream order. */
static void q_ready(pt_cluster *c, const uint8_t pk[32], bool reset, uint32_t gen)
{
    qdev *q = qdev_find(c, pk);
    if (!q || q->gen != gen) return; /* for an earlier coming up of the device */
    if (reset) { /* before the old consumer goes: its deliveries held here go with it */
        for (size_t i = 0; i < q->npend; i++) {
            free(q->pend[i].reply);
            free(q->pend[i].update);
        }
        q->npend = 0;
        q->ready = false;
        return;
    }
    if (q->ready) return;
    q->ready = true;
    for (size_t i = 0; i < q->npend; i++) {
        pt_buf b = {.data = q->pend[i].update, .len = q->pend[i].len, .cap = q->pend[i].len};
        pt_srv_push_device(c->srv, pk, NULL, &b);
    }
}

/* The device confirmed ids (on this node): their deliveries are acked to JetStream;
 * ids with no delivery here are remembered, for a delivery that comes later. */
static void q_confirm(pt_cluster *c, const uint8_t pk[32], const int64_t *ids, uint32_t n)
{
    qdev *q = qdev_find(c, pk);
    if (!q) return;
    for (uint32_t k = 0; k < n; k++) {
        bool found = false;
        for (size_t i = 0; i < q->npend; i++) {
            if (q->pend[i].sid != ids[k]) continue;
            ack_publish(c, q->pend[i].reply, "+ACK");
            free(q->pend[i].reply);
            free(q->pend[i].update);
            /* keep the rest in delivery order: they may be pushed again */
            memmove(&q->pend[i], &q->pend[i + 1], (q->npend - i - 1) * sizeof *q->pend);
            q->npend--;
            found = true;
            break;
        }
        if (!found) q->confirmed[q->nconf++ % Q_CONFIRMED] = ids[k];
    }
}

static size_t send_hash(int64_t sid) { return (size_t)((uint64_t)sid % SEND_BUCKETS); }

static int q_publish(pt_cluster *c, qsend *q, size_t i)
{
    char subj[72], id[112], key[33];
    q_subject(subj, q->pk[i]);
    pt_hex_encode(key, q->key, 16);
    snprintf(id, sizeof id, "k%s.%s", key, subj + 5);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id;
    po.MaxWait = Q_PUB_WAIT_MS;
    po.ExpectStream = QSTREAM;
    q->tries[i]++;
    natsStatus st = js_PublishAsync(c->jsq, subj, q->data, (int)q->len, &po);
    if (st != NATS_OK) pt_log_debug("cluster: publish to %s: %s", subj, natsStatus_GetText(st));
    return st == NATS_OK ? 0 : PT_ERR_IO;
}

static void q_unlink(pt_cluster *c, qsend *q)
{
    for (qsend **pp = &c->sends[send_hash(q->sid)]; *pp; pp = &(*pp)->next)
        if (*pp == q) {
            *pp = q->next;
            break;
        }
}

static void q_send_free(qsend *q)
{
    free(q->pk);
    free(q->tries);
    free(q);
}

/* true when that was the last answer (q is freed). A queue over its quota refuses the
 * item (PT_ERR_TOO_BIG: RECIPIENT_QUEUE_FULL) unless another device's publish failed. */
static bool q_answered(pt_cluster *c, qsend *q, size_t i, int status)
{
    if (status == PUB_FAILED) {
        pt_log_warn("cluster: JetStream did not store item %lld after %d tries", (long long)q->sid, Q_PUB_TRIES);
        q->rc = PT_ERR_IO;
    } else if (status == PUB_FULL) {
        char hex[17];
        pt_hex_encode(hex, q->pk[i], 8);
        pt_log_info("cluster: item %lld refused: the queue of device %s... is full (%u items)", (long long)q->sid, hex,
                    atomic_load(&c->quota));
        if (q->rc == 0) q->rc = PT_ERR_TOO_BIG;
    }
    q->tries[i] = 0xff;
    if (--q->left) return false;
    if (q->rc == 0 && q->dup_seq && q->find_id && !q->resolving) { /* stored before: under which id? */
        job *j = calloc(1, sizeof *j);
        if (j) {
            q->resolving = true;
            memcpy(j->pk, q->pk[q->dup_i], 32);
            j->kind = JOB_ORIGINAL;
            j->seq = q->dup_seq;
            j->sid = q->sid;
            job_push(c, j, true); /* a sender waits: ahead of the consumers' checks */
            return true; /* answered at IN_ORIGINAL */
        }
    }
    q_unlink(c, q);
    q->cb(q->arg, q->rc, q->sid);
    q_send_free(q);
    return true;
}

/* A worker read the server id of the copy an earlier publish of the same request
 * stored (ORIG_GONE: it has left the queue, delivered and confirmed; ORIG_FAILED:
 * JetStream did not answer, and the sender gets an error: its client sends again,
 * and the copy is still found by its key). */
static void q_original(pt_cluster *c, int64_t sid, int64_t original, int found)
{
    qsend *q = c->sends[send_hash(sid)];
    while (q && q->sid != sid) q = q->next;
    if (!q || !q->resolving) return;
    if (found == ORIG_GONE)
        pt_log_info("cluster: item %lld was stored before by an earlier try of its request (stream sequence "
                    "%llu), which has left the queue; answered with this try's id", (long long)sid,
                    (unsigned long long)q->dup_seq);
    else if (found == ORIG_FOUND && original != sid)
        pt_log_info("cluster: item %lld was stored before by an earlier try of its request, as %lld; answered "
                    "with that id", (long long)sid, (long long)original);
    else if (found == ORIG_FAILED)
        pt_log_warn("cluster: item %lld was stored before by an earlier try of its request, whose id could not "
                    "be read; the send is answered with an error", (long long)sid);
    q_unlink(c, q);
    q->cb(q->arg, found == ORIG_FAILED ? PT_ERR_IO : 0, found == ORIG_FOUND ? original : sid);
    q_send_free(q);
}

/* Publishes that failed are tried again after a pause (a stream leader being
 * elected after a NATS server died takes a few seconds); the same Nats-Msg-Id, so
 * JetStream keeps one copy of what did arrive. */
static void on_retry_tick(uv_timer_t *t)
{
    pt_cluster *c = t->data;
    bool more = false;
    for (size_t h = 0; h < SEND_BUCKETS; h++)
        for (qsend *q = c->sends[h], *next; q; q = next) {
            next = q->next;
            for (size_t i = 0; i < q->n; i++) {
                if (q->tries[i] == 0xff || !(q->tries[i] & Q_RETRY)) continue;
                q->tries[i] &= (uint8_t)~Q_RETRY;
                if (q_publish(c, q, i) == 0) continue;
                if (q->tries[i] < Q_PUB_TRIES) {
                    q->tries[i] |= Q_RETRY;
                    more = true;
                } else if (q_answered(c, q, i, PUB_FAILED)) {
                    break; /* q is gone */
                }
            }
        }
    if (!more) uv_timer_stop(t);
}

static void q_puback(pt_cluster *c, const uint8_t pk[32], int64_t sid, int status, uint64_t dup_seq)
{
    qsend *q = c->sends[send_hash(sid)];
    while (q && q->sid != sid) q = q->next;
    if (!q) return; /* answered already */
    size_t i = 0;
    while (i < q->n && memcmp(q->pk[i], pk, 32) != 0) i++;
    if (i == q->n || q->tries[i] == 0xff || (q->tries[i] & Q_RETRY)) return;
    if (status == PUB_OK && dup_seq && !q->dup_seq) {
        q->dup_seq = dup_seq;
        q->dup_i = i;
    }
    if (status == PUB_FAILED && q->tries[i] < Q_PUB_TRIES) {
        q->tries[i] |= Q_RETRY;
        if (!uv_is_active((uv_handle_t *)&c->retry_timer)) uv_timer_start(&c->retry_timer, on_retry_tick, 500, 500);
        return;
    }
    q_answered(c, q, i, status);
}

int pt_cluster_enqueue(pt_cluster *c, int64_t server_id, const uint8_t *key, bool find_id, const pt_srv_devlist *to,
                       const pt_buf *update, pt_cluster_queued_cb cb, void *arg)
{
    if (to->n == 0 || !key) return PT_ERR_INVAL;
    qsend *q = calloc(1, sizeof *q + 8 + update->len);
    if (!q) return PT_ERR_NOMEM;
    q->pk = malloc(to->n * 32);
    q->tries = calloc(to->n, 1);
    if (!q->pk || !q->tries) {
        q_send_free(q);
        return PT_ERR_NOMEM;
    }
    memcpy(q->pk, to->pk, to->n * 32);
    q->sid = server_id;
    memcpy(q->key, key, 16);
    q->find_id = find_id;
    q->cb = cb;
    q->arg = arg;
    q->n = q->left = to->n;
    q->len = 8 + update->len;
    pt_put_u64le(q->data, (uint64_t)server_id);
    memcpy(q->data + 8, update->data, update->len);
    size_t h = send_hash(server_id);
    q->next = c->sends[h];
    c->sends[h] = q;
    bool retry = false;
    for (size_t i = 0; i < q->n; i++)
        if (q_publish(c, q, i) != 0) { /* not even buffered (NATS away, too many in flight) */
            q->tries[i] |= Q_RETRY;
            retry = true;
        }
    if (retry && !uv_is_active((uv_handle_t *)&c->retry_timer))
        uv_timer_start(&c->retry_timer, on_retry_tick, 500, 500);
    return 0;
}

int pt_cluster_queues_full(pt_cluster *c, const pt_srv_devlist *to, uint32_t quota)
{
    for (size_t i = 0; i < to->n; i++) {
        char subj[72];
        q_subject(subj, to->pk[i]);
        jsOptions o;
        jsOptions_Init(&o);
        o.Stream.Info.SubjectsFilter = subj;
        jsStreamInfo *si = NULL;
        jsErrCode jerr = 0;
        natsStatus st = js_GetStreamInfo(&si, c->js, QSTREAM, &o, &jerr);
        if (st != NATS_OK) {
            log_nats("reading a device's queue length", st);
            return PT_ERR_IO;
        }
        uint64_t n = 0;
        for (int k = 0; si->State.Subjects && k < si->State.Subjects->Count; k++) n += si->State.Subjects->List[k].Msgs;
        jsStreamInfo_Destroy(si);
        if (n >= quota) return 1;
    }
    return 0;
}

void pt_cluster_route(pt_cluster *c, const uint8_t pk[32], const pt_buf *update)
{
    char subj[72];
    dev_subject(subj, pk);
    natsStatus st = natsConnection_Publish(c->nc, subj, update->data, (int)update->len);
    if (st != NATS_OK) pt_log_debug("cluster: publish to %s: %s", subj, natsStatus_GetText(st));
}

void pt_cluster_attached(pt_cluster *c, const uint8_t pk[32], pt_srv_sess *e)
{
    /* Deliveries that came while the device's connection had no session yet could
     * not be pushed; they go first, in delivery order, so that a later one pushed
     * live cannot overtake them (per-sender order, PROTOCOL.md §6.2). */
    qdev *q = qdev_find(c, pk);
    for (size_t i = 0; q && q->ready && i < q->npend; i++) {
        pt_buf b = {.data = q->pend[i].update, .len = q->pend[i].len, .cap = q->pend[i].len};
        pt_srv_push_device(c->srv, pk, e, &b);
    }
}

void pt_cluster_sync(pt_cluster *c, const uint8_t pk[32])
{
    /* deliveries of its durable queue not yet confirmed: again to the session that
     * synced (its first connection may have come up before its session did) */
    qdev *q = qdev_find(c, pk);
    for (size_t i = 0; q && q->ready && i < q->npend; i++) {
        pt_buf b = {.data = q->pend[i].update, .len = q->pend[i].len, .cap = q->pend[i].len};
        pt_srv_push_device(c->srv, pk, NULL, &b);
    }
    uint8_t m[36];
    memcpy(m, pk, 32);
    pt_put_u32le(m + 32, c->node);
    natsConnection_Publish(c->nc, "pt.sync", m, sizeof m);
}

void pt_cluster_received(pt_cluster *c, const uint8_t pk[32], const int64_t *ids, uint32_t n)
{
    q_confirm(c, pk, ids, n);
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

/* Whether key exists in the bucket: 1, 0, or PT_ERR_IO. */
static int key_exists(pt_cluster *c, const char *key)
{
    kvEntry *e = NULL;
    natsStatus st = kvStore_Get(&e, c->kv, key);
    kvEntry_Destroy(e);
    return st == NATS_OK ? 1 : st == NATS_NOT_FOUND ? 0 : PT_ERR_IO;
}

/* Creates key (create-only): 0 when it exists now, made here or before; PT_ERR_IO. */
static int create_or_there(pt_cluster *c, const char *key, const void *v, int len)
{
    if (kvStore_Create(NULL, c->kv, key, v, len) == NATS_OK) return 0;
    return key_exists(c, key) == 1 ? 0 : PT_ERR_IO; /* there already, or no answer */
}

/* The 16-byte user id stored at key: 0, PT_ERR_NOT_FOUND, PT_ERR_DECODE or PT_ERR_IO. */
static int key_user_id(pt_cluster *c, const char *key, uint8_t user_id[16])
{
    kvEntry *e = NULL;
    natsStatus st = kvStore_Get(&e, c->kv, key);
    if (st == NATS_NOT_FOUND) return PT_ERR_NOT_FOUND;
    if (st != NATS_OK) return PT_ERR_IO;
    int rc = kvEntry_ValueLen(e) == 16 ? 0 : PT_ERR_DECODE;
    if (rc == 0) memcpy(user_id, kvEntry_Value(e), 16);
    kvEntry_Destroy(e);
    return rc;
}

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

/* "v.<user hex>.<device hex>": that device belongs to that user. */
static void user_dev_key(char out[2 + 33 + 65], const uint8_t user_id[16], const uint8_t device[32])
{
    out[0] = 'v', out[1] = '.';
    pt_hex_encode(out + 2, user_id, 16);
    out[34] = '.';
    pt_hex_encode(out + 35, device, 32);
}

/* Adds the user's devices named by v.<user hex>.* to r (the ones not in it yet, up to
 * PT_SERVER_USER_DEVICES_MAX): 0 or PT_ERR_IO. A watch on the keys' subject lists them
 * (its first NULL entry ends the current values). */
static int list_user_devices(pt_cluster *c, const uint8_t user_id[16], pt_cluster_user_rec *r)
{
    char filter[2 + 33 + 2];
    filter[0] = 'v', filter[1] = '.';
    pt_hex_encode(filter + 2, user_id, 16);
    memcpy(filter + 34, ".*", 3);
    kvWatchOptions wo;
    kvWatchOptions_Init(&wo);
    wo.IgnoreDeletes = true;
    wo.MetaOnly = true;
    kvWatcher *w = NULL;
    natsStatus st = kvStore_Watch(&w, c->kv, filter, &wo);
    int rc = st == NATS_OK ? 0 : PT_ERR_IO;
    for (;;) {
        kvEntry *e = NULL;
        if (rc || (st = kvWatcher_Next(&e, w, 2000)) != NATS_OK) {
            if (!rc) log_nats("listing a user's devices", st);
            rc = PT_ERR_IO;
            break;
        }
        if (!e) break; /* every current key seen */
        const char *k = kvEntry_Key(e);
        uint8_t dev[32];
        if (k && strlen(k) == 2 + 32 + 1 + 64 && pt_hex_decode(dev, 32, k + 35) == 0) {
            bool have = false;
            for (unsigned i = 0; i < r->ndev && !have; i++) have = memcmp(r->dev[i], dev, 32) == 0;
            if (!have && r->ndev < PT_SERVER_USER_DEVICES_MAX) memcpy(r->dev[r->ndev++], dev, 32);
        }
        kvEntry_Destroy(e);
    }
    kvWatcher_Destroy(w);
    return rc;
}

/* Records device as the user's: the user record u.<user> is created once (identity,
 * name; create-only, so two first binds agree on one), the device gets its own
 * create-only key v.<user>.<device>. A compare-and-set on a list in u.<user> lost one
 * of two devices bound at once on two nodes: on nats-server 2.9 concurrent updates of
 * one revision can all succeed (see the prekeys below). 0, PT_ERR_EXISTS (*why),
 * PT_ERR_IO. */
static int record_device(pt_cluster *c, const uint8_t user_id[16], const uint8_t identity[32],
                         const char *display, const char *key, const uint8_t device[32], const char **why)
{
    char uk[2 + 33];
    user_key(uk, user_id);
    static _Thread_local uint8_t buf[PT_CLUSTER_USER_REC_MAX];
    static _Thread_local pt_cluster_user_rec r;
    bool recorded = false;
    for (int tries = 0; tries < BIND_TRIES && !recorded; tries++) {
        kvEntry *e = NULL;
        natsStatus st = kvStore_Get(&e, c->kv, uk);
        if (st == NATS_NOT_FOUND) {
            memset(&r, 0, sizeof r);
            memcpy(r.identity, identity, 32);
            snprintf(r.display, sizeof r.display, "%s", display);
            snprintf(r.key, sizeof r.key, "%s", key);
            size_t len = pt_cluster_user_rec_encode(buf, &r);
            /* lost to another first bind (or a lagging read): read it again */
            if (kvStore_Create(NULL, c->kv, uk, buf, (int)len) == NATS_OK) recorded = true;
            continue;
        }
        if (st != NATS_OK) return PT_ERR_IO;
        int rc = pt_cluster_user_rec_decode(&r, kvEntry_Value(e), (size_t)kvEntry_ValueLen(e));
        kvEntry_Destroy(e);
        if (rc) return PT_ERR_IO;
        if (memcmp(r.identity, identity, 32) != 0) return *why = "USER_ID_COLLISION", PT_ERR_EXISTS;
        if (strcmp(r.key, key) != 0) return *why = "USER_HAS_ANOTHER_USERNAME", PT_ERR_EXISTS;
        recorded = true;
    }
    if (!recorded) return PT_ERR_IO;
    char vk[2 + 33 + 65];
    user_dev_key(vk, user_id, device);
    return create_or_there(c, vk, "", 0); /* there already: a second bind of this device */
}

int pt_cluster_bind(pt_cluster *c, const uint8_t user_id[16], const uint8_t identity[32],
                    const char *display, const char *key, const char *skeleton,
                    const uint8_t device[32], const char **why)
{
    char nk[2 + 65], sk[2 + 65];
    name_key(nk, 'n', key);
    name_key(sk, 's', skeleton);
    int revoked = pt_cluster_revoked(c, device);
    if (revoked != 0) {
        *why = revoked > 0 ? "DEVICE_REVOKED" : "CLUSTER_UNAVAILABLE";
        return revoked > 0 ? PT_ERR_EXISTS : revoked;
    }
    int named = claim(c, nk, user_id);
    if (named < 0) {
        *why = named == PT_ERR_EXISTS ? "USERNAME_TAKEN" : "CLUSTER_UNAVAILABLE";
        return named;
    }
    int skel = claim(c, sk, user_id);
    int rc = skel < 0 ? skel : record_device(c, user_id, identity, display, key, device, why);
    if (rc == 0) { /* d.<device>: its user, for the node it connects to next */
        char dk[2 + 65];
        dk[0] = 'd', dk[1] = '.';
        pt_hex_encode(dk + 2, device, 32);
        int mine = claim(c, dk, user_id);
        if (mine < 0) {
            rc = mine;
            *why = mine == PT_ERR_EXISTS ? "DEVICE_BOUND_TO_ANOTHER_USER" : "CLUSTER_UNAVAILABLE";
        }
    }
    if (skel < 0) *why = skel == PT_ERR_EXISTS ? "USERNAME_CONFUSABLE" : "CLUSTER_UNAVAILABLE";
    else if (rc == PT_ERR_IO) *why = "CLUSTER_UNAVAILABLE";
    if (rc < 0) { /* give back what this call claimed */
        if (skel == 1) kvStore_Delete(c->kv, sk);
        if (named == 1) kvStore_Delete(c->kv, nk);
    }
    return rc;
}

int pt_cluster_user_name(pt_cluster *c, const uint8_t user_id[16], char display[PT_CLUSTER_NAME_SIZE])
{
    size_t h = (size_t)(pt_get_u64le(user_id) % NAME_CACHE);
    if (c->names[h].used && memcmp(c->names[h].user, user_id, 16) == 0) {
        memcpy(display, c->names[h].name, PT_CLUSTER_NAME_SIZE);
        return 0;
    }
    int rc = pt_cluster_user(c, user_id, NULL, display, NULL);
    if (rc == 0) {
        c->names[h].used = true;
        memcpy(c->names[h].user, user_id, 16);
        memcpy(c->names[h].name, display, PT_CLUSTER_NAME_SIZE);
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
    pt_cluster_user_rec *r = malloc(sizeof *r);
    int rc = r ? pt_cluster_user_rec_decode(r, kvEntry_Value(e), (size_t)kvEntry_ValueLen(e)) : PT_ERR_NOMEM;
    kvEntry_Destroy(e);
    /* devices: the list of records written before v.<user>.<device> keys, and those */
    if (rc == 0 && devs) rc = list_user_devices(c, user_id, r);
    if (rc == 0) {
        if (identity) memcpy(identity, r->identity, 32);
        if (display) snprintf(display, PT_CLUSTER_NAME_SIZE, "%s", r->display);
        for (unsigned i = 0; devs && i < r->ndev && rc == 0; i++) rc = pt_srv_devlist_add(devs, r->dev[i]);
    }
    free(r);
    return rc;
}

int pt_cluster_device_user(pt_cluster *c, const uint8_t device[32], uint8_t user_id[16])
{
    char dk[2 + 65];
    dk[0] = 'd', dk[1] = '.';
    pt_hex_encode(dk + 2, device, 32);
    return key_user_id(c, dk, user_id);
}

int pt_cluster_resolve(pt_cluster *c, const char *key, uint8_t user_id[16])
{
    char nk[2 + 65];
    name_key(nk, 'n', key);
    return key_user_id(c, nk, user_id);
}

/* ---- the cluster's salt secret ------------------------------------------------------------- */

int pt_cluster_salt_secret(pt_cluster *c, uint8_t *secret, size_t len)
{
    /* x.salt: created once (create-only) by the first node; every node reads it */
    uint8_t mine[64];
    if (len > sizeof mine) return PT_ERR_INVAL;
    pt_random(mine, len);
    natsStatus st = kvStore_Create(NULL, c->kv, "x.salt", mine, (int)len);
    for (int tries = 0; tries < 20 && st != NATS_OK; tries++) {
        if (tries) uv_sleep(100);
        kvEntry *e = NULL;
        st = kvStore_Get(&e, c->kv, "x.salt");
        if (st == NATS_OK && kvEntry_ValueLen(e) == (int)len) memcpy(mine, kvEntry_Value(e), len);
        else if (st == NATS_OK) st = NATS_ERR; /* another length: not ours to use */
        kvEntry_Destroy(e);
    }
    if (st == NATS_OK) memcpy(secret, mine, len);
    else log_nats("reading the cluster's salt secret (x.salt); this node's salts are its own", st);
    pt_wipe(mine, sizeof mine);
    return st == NATS_OK ? 0 : PT_ERR_IO;
}

/* ---- server ids ---------------------------------------------------------------------------- */

int pt_cluster_reserve_ids(pt_cluster *c, int64_t *next, int64_t *limit)
{
    char key[32];
    snprintf(key, sizeof key, "i.%u", c->node);
    int64_t base = (int64_t)c->node << PT_CLUSTER_SERVER_ID_SHIFT;
    /* A read may come from a replica that lags (just after a restart of the cluster
     * it did, for a second): the write on its revision then fails, and the same read
     * right away fails the same way. So the tries are spread over about 6 s. */
    for (int tries = 0; tries < RESERVE_TRIES; tries++) {
        if (tries) uv_sleep(tries < 10 ? 20 : 200);
        kvEntry *e = NULL;
        natsStatus st = kvStore_Get(&e, c->kv, key);
        int64_t from = base + 1;
        uint64_t rev = 0;
        if (st == NATS_OK) {
            if (kvEntry_ValueLen(e) == 8) from = (int64_t)pt_get_u64le(kvEntry_Value(e));
            rev = kvEntry_Revision(e);
            kvEntry_Destroy(e);
        } else if (st != NATS_NOT_FOUND) {
            pt_log_warn("cluster: reading %s: %s", key, natsStatus_GetText(st));
            continue;
        }
        if (from < *next) from = *next;
        int64_t to = from + PT_CLUSTER_ID_BLOCK;
        if (to >= base + (INT64_C(1) << PT_CLUSTER_SERVER_ID_SHIFT)) {
            pt_log_error("cluster: node %u has used up its server ids", c->node);
            return PT_ERR_INVAL;
        }
        uint8_t v[8];
        pt_put_u64le(v, (uint64_t)to);
        st = rev ? kvStore_Update(NULL, c->kv, key, v, 8, rev) : kvStore_Create(NULL, c->kv, key, v, 8);
        if (st == NATS_OK) {
            *next = from;
            *limit = to;
            return 0;
        }
        pt_log_warn("cluster: writing %s: %s", key, natsStatus_GetText(st));
    }
    return PT_ERR_IO;
}

/* ---- the prekey directory ------------------------------------------------------------------ */

#define PREKEY_TRIES 64 /* compare-and-set attempts: every fetch of a device's bundle rewrites it */

static void prekey_key(char out[2 + 65], const uint8_t device[32])
{
    out[0] = 'p', out[1] = '.';
    pt_hex_encode(out + 2, device, 32);
}

/* Reads p.<device> into r: its revision (0: none yet, r empty), or PT_ERR_IO / PT_ERR_DECODE. */
static int64_t prekey_get(pt_cluster *c, const char *key, pt_cluster_prekeys *r)
{
    kvEntry *e = NULL;
    natsStatus st = kvStore_Get(&e, c->kv, key);
    if (st == NATS_NOT_FOUND) {
        memset(&r->sig, 0, sizeof r->sig);
        r->n = 0;
        r->floor = INT32_MIN;
        return 0;
    }
    if (st != NATS_OK) {
        log_nats("reading prekeys", st);
        return PT_ERR_IO;
    }
    int rc = pt_cluster_prekeys_decode(r, kvEntry_Value(e), (size_t)kvEntry_ValueLen(e));
    int64_t rev = (int64_t)kvEntry_Revision(e);
    kvEntry_Destroy(e);
    if (rc) pt_log_error("cluster: the prekeys at %s do not parse; left as they are", key);
    return rc ? rc : rev;
}

/* Writes r at key if its revision is still rev (0: if it does not exist): 0, or 1 when
 * someone else wrote first. */
static int prekey_cas(pt_cluster *c, const char *key, const pt_cluster_prekeys *r, int64_t rev,
                      uint8_t *buf)
{
    size_t len = pt_cluster_prekeys_encode(buf, r);
    natsStatus st = rev ? kvStore_Update(NULL, c->kv, key, buf, (int)len, (uint64_t)rev)
                        : kvStore_Create(NULL, c->kv, key, buf, (int)len);
    return st == NATS_OK ? 0 : 1;
}

static void claim_key(char out[2 + 65 + 12], const uint8_t device[32], int32_t id)
{
    out[0] = 'c', out[1] = '.';
    pt_hex_encode(out + 2, device, 32);
    snprintf(out + 2 + 64, 12, ".%u", (uint32_t)id);
}

/* Claim keys go once their ids have left the list: a fetch hands a key out only
 * within CLAIM_MAX_MS of reading the list (pt_cluster_prekeys_take), so a while
 * after the upload that wrote the list without an id (3 x CLAIM_MAX_MS), no fetch that saw the id is
 * still at work, and none after it tries the id (a claim made again then would find
 * the key free). The stream's subject of each is purged: no key, no delete marker
 * left. Pending purges are in memory: a node that stops first leaves those keys. */

/* Milliseconds of CLOCK_BOOTTIME: the fetch's deadline counts a suspended machine's
 * time too (CLOCK_MONOTONIC, uv_hrtime, stops then, while other nodes purge). */
static uint64_t boot_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0) return uv_hrtime() / 1000000;
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void claim_subject(char out[80 + 2 + 65 + 12], const uint8_t device[32], int32_t id)
{
    memcpy(out, "$KV." BUCKET ".", sizeof "$KV." BUCKET ".");
    claim_key(out + strlen(out), device, id);
}

static void unclaim_later(pt_cluster *c, const uint8_t device[32], const int32_t *ids, uint32_t n)
{
    if (!n) return;
    job *j = calloc(1, sizeof *j + n * sizeof *ids);
    if (!j) {
        pt_log_warn("cluster: out of memory; %u claim key(s) of handed-out prekeys stay in the bucket", n);
        return;
    }
    j->kind = JOB_UNCLAIM;
    memcpy(j->pk, device, 32);
    j->due_ms = uv_hrtime() / 1000000 + 3 * (uint64_t)c->claim_max_ms;
    j->nids = n;
    memcpy(j->ids, ids, n * sizeof *ids);
    pthread_mutex_lock(&c->mu);
    if (c->later_tail) c->later_tail->next = j;
    else c->later = j;
    c->later_tail = j;
    pthread_mutex_unlock(&c->mu);
}

static void unclaim(pt_cluster *c, const job *j)
{
    uint32_t gone = 0;
    for (uint32_t i = 0; i < j->nids && !stopping(c); i++) {
        char subj[80 + 2 + 65 + 12];
        claim_subject(subj, j->pk, j->ids[i]);
        jsOptions o;
        jsOptions_Init(&o);
        o.Stream.Purge.Subject = subj;
        jsErrCode jerr = 0;
        natsStatus st = js_PurgeStream(c->js, "KV_" BUCKET, &o, &jerr);
        if (st == NATS_OK) {
            gone++;
            continue;
        }
        log_nats("dropping the claim keys of handed-out prekeys (the rest stay)", st);
        break; /* JetStream away: not 500 waits on this worker */
    }
    pt_log_debug("cluster: %u of %u claim key(s) of a device's handed-out prekeys dropped", gone, j->nids);
}

/* Whether one-time key id of device was handed out: 1, 0, or PT_ERR_IO. */
static int claimed(pt_cluster *c, const uint8_t device[32], int32_t id)
{
    char ck[2 + 65 + 12];
    claim_key(ck, device, id);
    return key_exists(c, ck);
}

int pt_cluster_prekeys_put(pt_cluster *c, const uint8_t device[32], const pt_cluster_signed *sig,
                           const pt_cluster_prekey *keys, uint32_t n, int *count)
{
    char key[2 + 65];
    prekey_key(key, device);
    pt_cluster_prekeys *r = malloc(sizeof *r);
    uint8_t *buf = malloc(PT_CLUSTER_PREKEYS_MAX);
    int32_t *gone = malloc(PT_SERVER_PREKEY_STORED_MAX * sizeof *gone); /* claimed, left out */
    uint32_t ngone = 0;
    int rc = r && buf && gone ? PT_ERR_IO : PT_ERR_NOMEM;
    for (int tries = 0; r && buf && gone && tries < PREKEY_TRIES; tries++) {
        int64_t rev = prekey_get(c, key, r);
        if (rev < 0) {
            rc = PT_ERR_IO;
            break;
        }
        /* One-time key ids only grow (a device numbers its keys ++): every id stored
         * before is at most the floor, and only ids above it are taken. So an upload
         * sent again adds nothing, and a key handed out, whose id leaves the list
         * below and whose claim key goes later, never comes back. */
        int32_t floor = r->floor;
        for (uint32_t k = 0; k < r->n; k++)
            if (r->k[k].id > floor) floor = r->k[k].id;
        /* the keys handed out since the last upload leave the list here (fetches never
         * rewrite it: see pt_cluster_prekeys_take) */
        uint32_t w = 0;
        int cl = 0;
        ngone = 0;
        for (uint32_t k = 0; k < r->n && cl >= 0; k++)
            if ((cl = claimed(c, device, r->k[k].id)) == 0) r->k[w++] = r->k[k];
            else if (cl == 1) gone[ngone++] = r->k[k].id;
        if (cl < 0) {
            rc = PT_ERR_IO;
            break;
        }
        r->n = w;
        uint32_t fresh = 0; /* ids above the floor, each once */
        for (uint32_t i = 0; i < n; i++) fresh += pt_cluster_prekey_new(keys, i, floor);
        if (r->n + fresh > PT_SERVER_PREKEY_STORED_MAX) {
            rc = PT_ERR_TOO_BIG;
            break;
        }
        if (sig->has) r->sig = *sig;
        r->floor = floor;
        for (uint32_t i = 0; i < n; i++)
            if (pt_cluster_prekey_new(keys, i, floor)) {
                r->k[r->n++] = keys[i];
                if (keys[i].id > r->floor) r->floor = keys[i].id;
            }
        /* Only uploads write the list, and a device uploads one at a time, so this
         * compare-and-set has no real contender (which matters: see the take). */
        if (prekey_cas(c, key, r, rev, buf) == 0) {
            *count = (int)r->n;
            rc = 0;
            unclaim_later(c, device, gone, ngone);
            break;
        }
    }
    if (rc == PT_ERR_IO) pt_log_warn("cluster: the prekeys of a device could not be stored");
    free(r);
    free(buf);
    free(gone);
    return rc;
}

static int by_id(const void *a, const void *b)
{
    int32_t x = ((const pt_cluster_prekey *)a)->id, y = ((const pt_cluster_prekey *)b)->id;
    return (x > y) - (x < y);
}

/* A fetch never rewrites the list: it claims a key by creating c.<device hex>.<id>,
 * and whoever creates it owns the key. Creating a key that must not exist is exact
 * on a replicated bucket, where an update on a revision is not: on nats-server 2.9
 * (Debian 12) concurrent updates naming the same revision can all succeed
 * (nats-io/nats-server#4320, fixed in 2.9.21), which we measured here: 616 successes
 * for 200 rounds of 6 concurrent updates on a 3-server cluster, against exactly 200 of
 * 200 for concurrent creates. So the one-time keys are handed out by creates. */
int pt_cluster_prekeys_take(pt_cluster *c, const uint8_t device[32], pt_cluster_signed *sig,
                            pt_cluster_prekey *otk, int *left)
{
    char key[2 + 65];
    prekey_key(key, device);
    pt_cluster_prekeys *r = malloc(sizeof *r);
    int rc = r ? PT_ERR_IO : PT_ERR_NOMEM;
    otk->len = 0;
    uint64_t read_ms = boot_ms();
    int64_t rev = r ? prekey_get(c, key, r) : PT_ERR_NOMEM;
    if (rev < 0) {
        rc = (int)rev == PT_ERR_NOMEM ? PT_ERR_NOMEM : PT_ERR_IO;
    } else if (!r->sig.has) {
        rc = 0;
    } else {
        *sig = r->sig;
        qsort(r->k, r->n, sizeof r->k[0], by_id); /* the oldest first */
        rc = 1;
        *left = 0;
        for (uint32_t k = 0; k < r->n; k++) {
            char ck[2 + 65 + 12];
            uint8_t node[4];
            pt_put_u32le(node, c->node);
            claim_key(ck, device, r->k[k].id);
            natsStatus st = kvStore_Create(NULL, c->kv, ck, node, sizeof node);
            if (boot_ms() - read_ms > c->claim_max_ms) { /* its claim key may be gone */
                pt_log_warn("cluster: a prekey fetch took over %u ms; no one-time key handed out",
                            c->claim_max_ms);
                rc = PT_ERR_IO;
                break;
            }
            if (st == NATS_OK) {
                *otk = r->k[k];
                *left = (int)(r->n - k - 1); /* those after it: at most that many */
                break;
            }
            /* Taken already (JetStream refused: wrong last sequence), or no answer? A
             * read cannot tell: it may come from a replica that lags. Skipping a key
             * is always safe; only a create that succeeded hands one out. */
            if (st != NATS_TIMEOUT && st != NATS_NO_RESPONDERS && st != NATS_CONNECTION_CLOSED &&
                st != NATS_CONNECTION_DISCONNECTED && st != NATS_NOT_YET_CONNECTED)
                continue;
            log_nats("claiming a one-time prekey", st);
            rc = PT_ERR_IO;
            break;
        }
    }
    if (rc == PT_ERR_IO) pt_log_warn("cluster: a prekey bundle could not be taken");
    free(r);
    return rc;
}

int pt_cluster_prekeys_signed(pt_cluster *c, const uint8_t device[32], pt_cluster_signed *sig)
{
    char key[2 + 65];
    prekey_key(key, device);
    pt_cluster_prekeys *r = malloc(sizeof *r);
    if (!r) return PT_ERR_NOMEM;
    int64_t rev = prekey_get(c, key, r);
    int rc = rev < 0 ? PT_ERR_IO : r->sig.has ? 1 : 0;
    if (rc == 1) *sig = r->sig;
    free(r);
    return rc;
}

/* A revoked device never reads its queue again: its items and its consumer go (as its
 * rows go in local mode). A failure leaves them to the consumer's inactive threshold
 * (the consumer) and to nobody (the items: logged). */
static void drop_queue(pt_cluster *c, const uint8_t device[32])
{
    char subj[72], durable[80];
    q_subject(subj, device);
    snprintf(durable, sizeof durable, "d%s", subj + 5);
    jsErrCode jerr = 0;
    natsStatus st = js_DeleteConsumer(c->js, QSTREAM, durable, NULL, &jerr);
    if (st != NATS_OK && jerr != JSConsumerNotFoundErr) log_nats("deleting a revoked device's consumer", st);
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Purge.Subject = subj;
    if ((st = js_PurgeStream(c->js, QSTREAM, &o, &jerr)) != NATS_OK)
        log_nats("dropping a revoked device's queue", st);
}

static void revoked_key(char out[2 + 65], const uint8_t device[32])
{
    out[0] = 'r', out[1] = '.';
    pt_hex_encode(out + 2, device, 32);
}

int pt_cluster_revoke(pt_cluster *c, const uint8_t user_id[16], const uint8_t device[32])
{
    uint8_t owner[16];
    int rc = pt_cluster_device_user(c, device, owner);
    if (rc) return rc == PT_ERR_NOT_FOUND ? rc : PT_ERR_IO;
    if (memcmp(owner, user_id, 16) != 0) return PT_ERR_NOT_FOUND;
    char rk[2 + 65], vk[2 + 33 + 65], pk[2 + 65];
    revoked_key(rk, device);
    if (create_or_there(c, rk, user_id, 16) != 0) return PT_ERR_IO; /* or revoked before */
    user_dev_key(vk, user_id, device);
    prekey_key(pk, device);
    natsStatus a = kvStore_Delete(c->kv, vk), b = kvStore_Delete(c->kv, pk);
    if (a != NATS_OK || b != NATS_OK) {
        log_nats("revoking a device", a != NATS_OK ? a : b);
        return PT_ERR_IO;
    }
    drop_queue(c, device);
    /* its claim keys (a fetch still at work may leave one) */
    char subj[80 + 2 + 65 + 12];
    claim_subject(subj, device, 0);
    strcpy(strrchr(subj, '.') + 1, "*");
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Purge.Subject = subj;
    jsErrCode jerr = 0;
    natsStatus st = js_PurgeStream(c->js, "KV_" BUCKET, &o, &jerr);
    if (st != NATS_OK) log_nats("dropping a revoked device's claim keys", st);
    return 0;
}

int pt_cluster_revoked(pt_cluster *c, const uint8_t device[32])
{
    char rk[2 + 65];
    revoked_key(rk, device);
    return key_exists(c, rk);
}

/* ---- versioned records: groups (g.<group hex>), contacts (k.<user hex>.<user hex>) --------------- */

/* A record changes by version: a change reads version n and publishes the whole record
 * as version n + 1 to the key's subject with Nats-Msg-Id "<key>.<n + 1>". JetStream
 * keeps the first publish of an id and answers the others "duplicate", so of two
 * changes made on version n at the same moment exactly one becomes n + 1; the other
 * reads again and is made on n + 1. The publish also names the revision it read
 * (expected last subject sequence): that check alone is not exact on Debian's
 * nats-server 2.9.10 for publishes racing each other (ARCHITECTURE.md, "Prekeys"),
 * but it refuses a publish that arrives late, after other versions were written
 * (one libnats held back while it reconnected, past the 2-minute duplicate window).
 * A change that took longer than VREC_STALE_MS between its read and its publish,
 * or finds the connection down, is not published.
 * Every record starts with format 1 | version u32le | change id [8] (random: which
 * change wrote it, so that a publish whose answer was lost is recognised). */
#define VREC_STALE_MS 60000
#define VREC_HEAD PT_CLUSTER_VREC_HEAD
#define VREC_MAX PT_CLUSTER_GROUP_REC_MAX /* the largest record */

/* Reads key: the version (0: no record) with the bytes in raw (*len of them, at most
 * VREC_MAX), or PT_ERR_IO / PT_ERR_DECODE; ref says what was read, for vrec_put. */
static int64_t vrec_read(pt_cluster *c, const char *key, uint8_t *raw, size_t *len, pt_cluster_vref *ref)
{
    *len = 0;
    memset(ref, 0, sizeof *ref); /* mine: set by the caller after the read */
    ref->read_ms = uv_hrtime() / 1000000;
    kvEntry *e = NULL;
    natsStatus st = kvStore_Get(&e, c->kv, key);
    if (st == NATS_NOT_FOUND) return 0;
    if (st != NATS_OK) {
        log_nats("reading a record", st);
        return PT_ERR_IO;
    }
    size_t n = (size_t)kvEntry_ValueLen(e);
    int64_t v = PT_ERR_DECODE;
    if (n >= VREC_HEAD && n <= VREC_MAX && ((const uint8_t *)kvEntry_Value(e))[0] == 1) {
        memcpy(raw, kvEntry_Value(e), n);
        *len = n;
        v = (int64_t)pt_get_u32le(raw + 1);
        ref->version = v;
        ref->rev = kvEntry_Revision(e);
        memcpy(ref->change, raw + 5, 8);
    }
    kvEntry_Destroy(e);
    if (v < 0) pt_log_error("cluster: the record at %s does not parse; left as it is", key);
    return v;
}

/* Publishes raw (len bytes; its head is filled here) as the version after the one ref
 * read: 0 written; 1 when another change made that version first, or the read is too
 * old (read again and retry); PT_ERR_IO. */
static int vrec_put(pt_cluster *c, const char *key, uint8_t *raw, size_t len, const pt_cluster_vref *ref)
{
    if (ref->version < 0 || ref->version >= UINT32_MAX || len < VREC_HEAD) return PT_ERR_INVAL;
    if (uv_hrtime() / 1000000 - ref->read_ms > VREC_STALE_MS) return 1; /* read again */
    if (natsConnection_Status(c->nc) != NATS_CONN_STATUS_CONNECTED) return PT_ERR_IO;
    uint32_t next = (uint32_t)ref->version + 1;
    raw[0] = 1;
    pt_put_u32le(raw + 1, next);
    if (ref->mine) memcpy(raw + 5, ref->mine, 8);
    else pt_random(raw + 5, 8);
    char subj[160], id[160];
    snprintf(subj, sizeof subj, "$KV." BUCKET ".%s", key);
    snprintf(id, sizeof id, "%s.%u", key, next);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id;
    po.ExpectLastSubjectSeq = ref->rev; /* 0 (a new key): not checked */
    jsPubAck *pa = NULL;
    natsStatus st = js_Publish(&pa, c->js, subj, raw, (int)len, &po, NULL);
    bool stored = st == NATS_OK && !pa->Duplicate;
    jsPubAck_Destroy(pa);
    if (stored) return 0;
    /* a duplicate, a refusal or no answer: whose version is there now? Ours when it
     * holds our change id (a publish whose answer was lost). */
    uint8_t *now = malloc(VREC_MAX);
    size_t now_len = 0;
    pt_cluster_vref again;
    int64_t v = now ? vrec_read(c, key, now, &now_len, &again) : PT_ERR_NOMEM;
    int rc = v == (int64_t)next && now_len == len && memcmp(now, raw, len) == 0 ? 0
             : v > ref->version                                                ? 1
                                                                               : PT_ERR_IO;
    free(now);
    if (rc == PT_ERR_IO) log_nats("writing a record", st == NATS_OK ? NATS_ERR : st);
    return rc;
}

static void group_key(char out[2 + 33], const uint8_t group[16])
{
    out[0] = 'g', out[1] = '.';
    pt_hex_encode(out + 2, group, 16);
}

int64_t pt_cluster_group_get(pt_cluster *c, const uint8_t group[16], pt_cluster_group *g, pt_cluster_vref *ref)
{
    char key[2 + 33];
    group_key(key, group);
    g->nm = g->ni = 0;
    uint8_t *raw = malloc(VREC_MAX);
    size_t len;
    pt_cluster_vref r0;
    if (!ref) ref = &r0;
    int64_t v = raw ? vrec_read(c, key, raw, &len, ref) : PT_ERR_NOMEM;
    if (v > 0 && pt_cluster_group_decode(g, raw, len) != 0) {
        pt_log_error("cluster: the group at %s does not parse; left as it is", key);
        v = PT_ERR_DECODE;
    }
    free(raw);
    if (v > 0 && g->nm == 0) { /* the last member left: no group */
        g->ni = 0;
        return 0;
    }
    return v;
}

int pt_cluster_group_put(pt_cluster *c, const uint8_t group[16], const pt_cluster_group *g,
                         const pt_cluster_vref *ref)
{
    if (g->nm + g->ni > PT_SERVER_GROUP_MAX_MEMBERS) return PT_ERR_INVAL;
    char key[2 + 33];
    group_key(key, group);
    uint8_t *raw = malloc(VREC_MAX);
    if (!raw) return PT_ERR_NOMEM;
    int rc = vrec_put(c, key, raw, pt_cluster_group_encode(raw, g), ref);
    free(raw);
    return rc;
}

/* k.<lo hex>.<hi hex>: the relation of two users, lo < hi (bytewise). */
static void contact_key(char out[2 + 33 + 33], const uint8_t a[16], const uint8_t b[16], bool *a_is_lo)
{
    *a_is_lo = memcmp(a, b, 16) < 0;
    out[0] = 'k', out[1] = '.';
    pt_hex_encode(out + 2, *a_is_lo ? a : b, 16);
    out[34] = '.';
    pt_hex_encode(out + 35, *a_is_lo ? b : a, 16);
}

int64_t pt_cluster_contact_get(pt_cluster *c, const uint8_t me[16], const uint8_t peer[16], int *mine,
                               int *theirs, pt_cluster_vref *ref)
{
    char key[2 + 33 + 33];
    bool lo;
    contact_key(key, me, peer, &lo);
    uint8_t *raw = malloc(VREC_MAX);
    size_t len;
    pt_cluster_contact k = {0};
    int64_t v = raw ? vrec_read(c, key, raw, &len, ref) : PT_ERR_NOMEM;
    if (v > 0 && pt_cluster_contact_decode(&k, raw, len) != 0) v = PT_ERR_DECODE;
    free(raw);
    *mine = lo ? k.lo_state : k.hi_state;
    *theirs = lo ? k.hi_state : k.lo_state;
    return v;
}

int pt_cluster_contact_put(pt_cluster *c, const uint8_t me[16], const uint8_t peer[16], int mine, int theirs,
                           const void *note, size_t note_len, const pt_cluster_vref *ref)
{
    if (note_len > PT_SERVER_NOTE_MAX) return PT_ERR_INVAL;
    char key[2 + 33 + 33];
    bool lo;
    contact_key(key, me, peer, &lo);
    pt_cluster_contact k = {.lo_state = lo ? mine : theirs, .hi_state = lo ? theirs : mine,
                            .note_len = (uint16_t)note_len};
    if (note_len) memcpy(k.note, note, note_len);
    uint8_t raw[PT_CLUSTER_CONTACT_REC_MAX];
    return vrec_put(c, key, raw, pt_cluster_contact_encode(raw, &k), ref);
}
