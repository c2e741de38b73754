/* bench/loadgen driver: NATS JetStream through libnats, the NATS-only ceiling of
 * cluster mode (issue 8). It does what packtrackd's cluster backend
 * (src/server/cluster_nats.c) does with NATS for one message, and nothing else:
 *
 *   stream    LG_QUEUE, subjects lg.q.>, work-queue retention, file storage,
 *             replicas min(3, servers), a 2-minute duplicate window (PT_QUEUE's
 *             settings); deleted and made again at the start of a run
 *   consumer  per receiving client: durable "lg<i>", filter lg.q.<i>, pushing to
 *             lg.qd.<i>, explicit acks (5 s, 1,024 pending)
 *   send      js_PublishAsync to lg.q.<peer> with a Nats-Msg-Id; the sender's ack
 *             is JetStream's publish ack (stored on a quorum of the replicas)
 *   delivery  a message on lg.qd.<i>, acked at once with "+ACK"
 *
 * One NATS connection per --port (client i uses the (i mod n)-th, as a
 * packtrackd node serves its clients over its one connection), with libnats'
 * shared delivery thread. libnats calls back on its own threads: the callbacks
 * put what arrived into the client's inbox and wake loadgen's loop through the
 * client's eventfd, so lg_delivered() and lg_acked() run on the loop only.
 */
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/pt_common.h"
#include "lg.h"

#define JS_STREAM "LG_QUEUE"
#define JS_REPLICAS_MAX 3
#define JS_WAIT_MS 5000
#define JS_ACK_WAIT_MS 5000
#define JS_MAX_ACK_PENDING 1024
#define JS_DUP_WINDOW_S 120

#define JS_SETUP_THREADS 8 /* consumers created at once (each is a JetStream request) */

enum { EV_DELIVERED = 1, EV_ACKED, EV_NACKED, EV_READY, EV_FAILED };

typedef struct js_ev {
    struct js_ev *next;
    int kind;     /* EV_* */
    uint64_t tag; /* EV_ACKED / EV_NACKED: the message's seq */
    size_t len;
    uint8_t data[]; /* EV_DELIVERED: the payload */
} js_ev;

/* One client: its subscription and its inbox (filled by libnats' threads). */
typedef struct jsc {
    natsSubscription *sub; /* lg.qd.<i> */
    jsCtx *js;             /* borrowed: its connection's context */
    pthread_mutex_t mu;    /* guards head and tail */
    js_ev *head, *tail;
    struct jsc *next_job; /* in the setup queue */
    lg_client *c;
} jsc;

/* The run's connections, shared by the clients. */
static struct {
    lg_run *run;
    natsConnection *nc[LG_PORTS_MAX];
    jsCtx *js[LG_PORTS_MAX];
    uint32_t n;
    /* setup: worker threads create the consumers (a Raft group each, slow) */
    pthread_t workers[JS_SETUP_THREADS];
    int nworkers;
    pthread_mutex_t mu; /* guards what follows */
    pthread_cond_t cv;
    jsc *jobs;
    bool stop;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* Says what failed; returns -1 for the caller to return. */
static int log_nats(const char *what, natsStatus st)
{
    fprintf(stderr, "loadgen: jetstream: %s: %s\n", what, natsStatus_GetText(st));
    nats_PrintLastErrorStack(stderr);
    return -1;
}

/* From libnats' threads: queues ev for the loop; the first one wakes it. */
static void inbox_put(lg_client *c, js_ev *ev)
{
    jsc *j = c->drv;
    ev->next = NULL;
    pthread_mutex_lock(&j->mu);
    bool was_empty = !j->head;
    if (j->tail)
        j->tail->next = ev;
    else
        j->head = ev;
    j->tail = ev;
    pthread_mutex_unlock(&j->mu);
    if (was_empty) {
        uint64_t one = 1;
        if (write(c->fd, &one, sizeof one) < 0) { /* the counter cannot overflow at our rates */
        }
    }
}

static js_ev *ev_new(int kind, uint64_t tag, const void *data, size_t len)
{
    js_ev *ev = malloc(sizeof *ev + len);
    if (!ev) return NULL;
    ev->kind = kind;
    ev->tag = tag;
    ev->len = len;
    if (len) memcpy(ev->data, data, len);
    return ev;
}

/* The publish ack (or its failure) of a message: back to its sender. */
static void on_puback(jsCtx *js, natsMsg *m, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)closure;
    const uint8_t *d = (const uint8_t *)natsMsg_GetData(m);
    int len = natsMsg_GetDataLength(m);
    lg_client *s = len >= LG_HDR ? lg_client_at(g.run, pt_get_u32le(d + 4)) : NULL;
    if (s) {
        if (pae)
            fprintf(stderr, "loadgen: jetstream: publish failed: %s (%d %s)\n",
                    natsStatus_GetText(pae->Err), (int)pae->ErrCode,
                    pae->ErrText ? pae->ErrText : "");
        js_ev *ev = ev_new(pa && !pae ? EV_ACKED : EV_NACKED, pt_get_u64le(d + 8), NULL, 0);
        if (ev) inbox_put(s, ev);
    }
    natsMsg_Destroy(m);
}

/* A delivery of the client's consumer: acked here, handled on the loop. */
static void on_delivery(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)sub;
    lg_client *c = closure;
    const char *reply = natsMsg_GetReply(m);
    if (reply) natsConnection_PublishString(nc, reply, "+ACK");
    js_ev *ev = ev_new(EV_DELIVERED, 0, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    if (ev) inbox_put(c, ev);
    natsMsg_Destroy(m);
}

static int make_stream(jsCtx *js, int replicas)
{
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[] = {"lg.q.>"};
    sc.Name = JS_STREAM;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Retention = js_WorkQueuePolicy;
    sc.Storage = js_FileStorage;
    sc.Replicas = replicas;
    sc.Duplicates = (int64_t)JS_DUP_WINDOW_S * 1000000000;
    js_DeleteStream(js, JS_STREAM, NULL, NULL); /* a fresh, empty stream per run */
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = NATS_TIMEOUT;
    for (int tries = 0; tries < 4 && (st == NATS_TIMEOUT || st == NATS_NO_RESPONDERS); tries++)
        st = js_AddStream(&si, js, &sc, NULL, &jerr); /* a new cluster may still elect its leader */
    if (st != NATS_OK) {
        fprintf(stderr, "loadgen: jetstream: cannot create stream " JS_STREAM " (R%d): error %d\n",
                replicas, (int)jerr);
        return log_nats("js_AddStream", st);
    }
    jsStreamInfo_Destroy(si);
    return 0;
}

/* Makes client c's durable consumer (blocks for JetStream's answer). */
static int make_consumer(lg_client *c)
{
    jsc *j = c->drv;
    char durable[32], filter[48], deliver[48];
    snprintf(durable, sizeof durable, "lg%u", c->idx);
    snprintf(filter, sizeof filter, "lg.q.%u", c->idx);
    snprintf(deliver, sizeof deliver, "lg.qd.%u", c->idx);
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = durable;
    cc.FilterSubject = filter;
    cc.DeliverSubject = deliver;
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = (int64_t)JS_ACK_WAIT_MS * 1000000;
    cc.MaxAckPending = JS_MAX_ACK_PENDING;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_AddConsumer(&ci, j->js, JS_STREAM, &cc, NULL, &jerr);
    if (st != NATS_OK) {
        fprintf(stderr, "loadgen: jetstream: consumer %s: error %d\n", durable, (int)jerr);
        log_nats("js_AddConsumer", st);
        return -1;
    }
    jsConsumerInfo_Destroy(ci);
    return 0;
}

static void *worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g.mu);
    for (;;) {
        while (!g.jobs && !g.stop)
            pthread_cond_wait(&g.cv, &g.mu);
        if (g.stop) break;
        jsc *j = g.jobs;
        g.jobs = j->next_job;
        pthread_mutex_unlock(&g.mu);
        js_ev *ev = ev_new(make_consumer(j->c) == 0 ? EV_READY : EV_FAILED, 0, NULL, 0);
        if (ev) inbox_put(j->c, ev);
        pthread_mutex_lock(&g.mu);
    }
    pthread_mutex_unlock(&g.mu);
    return NULL;
}

static int js_init(lg_run *r)
{
    const lg_opts *o = lg_options(r);
    g.run = r;
    natsStatus st = nats_Open(-1);
    if (st != NATS_OK) return log_nats("nats_Open", st);
    for (uint32_t i = 0; i < o->nports; i++) {
        natsOptions *no = NULL;
        char url[300], name[32];
        snprintf(url, sizeof url, "nats://%s:%u", o->host, o->ports[i]);
        snprintf(name, sizeof name, "loadgen-%u", i);
        st = natsOptions_Create(&no);
        if (st == NATS_OK) st = natsOptions_SetURL(no, url);
        if (st == NATS_OK) st = natsOptions_SetName(no, name);
        /* libnats' shared delivery thread(s) rather than one thread per subscription */
        if (st == NATS_OK) st = natsOptions_UseGlobalMessageDelivery(no, true);
        if (st == NATS_OK) st = natsOptions_SetNoRandomize(no, true);
        if (st == NATS_OK) st = natsConnection_Connect(&g.nc[i], no);
        natsOptions_Destroy(no);
        if (st != NATS_OK) {
            fprintf(stderr, "loadgen: jetstream: cannot connect to %s\n", url);
            return log_nats("connect", st);
        }
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = JS_WAIT_MS;
        jo.PublishAsync.MaxPending = 1 << 20; /* the open loop may have many in flight */
        jo.PublishAsync.AckHandler = on_puback;
        if ((st = natsConnection_JetStream(&g.js[i], g.nc[i], &jo)) != NATS_OK)
            return log_nats("JetStream", st);
        g.n = i + 1;
    }
    /* the replicas of cluster mode: as many as there are servers, 3 at most */
    char **known = NULL;
    int nknown = 0, replicas = 1;
    if (natsConnection_GetServers(g.nc[0], &known, &nknown) == NATS_OK) {
        replicas = nknown < 1 ? 1 : nknown > JS_REPLICAS_MAX ? JS_REPLICAS_MAX : nknown;
        for (int i = 0; i < nknown; i++)
            free(known[i]);
        free(known);
    }
    if (make_stream(g.js[0], replicas)) return -1;
    for (; g.nworkers < JS_SETUP_THREADS; g.nworkers++)
        if (pthread_create(&g.workers[g.nworkers], NULL, worker_main, NULL) != 0) return -1;
    fprintf(stderr, "loadgen: jetstream: stream " JS_STREAM " with %d replicas, %u connections\n",
            replicas, g.n);
    return 0;
}

/* Subscribes to the client's delivery subject; a worker makes its consumer and
 * the client is ready (stage 1) when the inbox says so. */
static int js_connect(lg_run *r, lg_client *c)
{
    (void)r;
    jsc *j = calloc(1, sizeof *j);
    if (!j) return -1;
    pthread_mutex_init(&j->mu, NULL);
    j->c = c;
    c->drv = j;
    if ((c->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) return -1;
    uint32_t k = c->idx % g.n;
    j->js = g.js[k];
    char deliver[48];
    snprintf(deliver, sizeof deliver, "lg.qd.%u", c->idx);
    natsStatus st = natsConnection_Subscribe(&j->sub, g.nc[k], deliver, on_delivery, c);
    if (st != NATS_OK) return log_nats("subscribe", st);
    /* no limit on what waits in the delivery queue: loadgen counts what is lost */
    natsSubscription_SetPendingLimits(j->sub, -1, -1);
    pthread_mutex_lock(&g.mu);
    j->next_job = g.jobs;
    g.jobs = j;
    pthread_cond_signal(&g.cv);
    pthread_mutex_unlock(&g.mu);
    return 0;
}

static int js_input(lg_run *r, lg_client *c)
{
    jsc *j = c->drv;
    uint64_t n;
    if (read(c->fd, &n, sizeof n) < 0) { /* EAGAIN: woken for an event already taken */
    }
    pthread_mutex_lock(&j->mu);
    js_ev *ev = j->head;
    j->head = j->tail = NULL;
    pthread_mutex_unlock(&j->mu);
    while (ev) {
        js_ev *next = ev->next;
        if (ev->kind == EV_DELIVERED)
            lg_delivered(r, c, ev->data, ev->len);
        else if (ev->kind == EV_READY)
            c->stage = 1;
        else if (ev->kind == EV_FAILED)
            c->stage = -1; /* the core stops the run */
        else
            lg_acked(r, c, ev->tag, ev->kind == EV_ACKED);
        free(ev);
        ev = next;
    }
    return 0;
}

static int js_send(lg_run *r, lg_client *c, const uint8_t *payload, size_t len, uint64_t *tag)
{
    (void)r;
    jsc *j = c->drv;
    char subj[48], id[48];
    uint64_t seq = pt_get_u64le(payload + 8);
    snprintf(subj, sizeof subj, "lg.q.%u", c->peer);
    snprintf(id, sizeof id, "%u.%llu", c->idx, (unsigned long long)seq);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id;
    *tag = seq;
    natsStatus st = js_PublishAsync(j->js, subj, payload, (int)len, &po);
    if (st != NATS_OK) return log_nats("js_PublishAsync", st);
    return 0;
}

static int js_flush(lg_run *r, lg_client *c)
{
    (void)r;
    (void)c;
    return 0; /* libnats' flusher thread writes */
}

/* Stops every callback: the subscriptions, the connections, libnats' threads. */
static void teardown(lg_run *r)
{
    pthread_mutex_lock(&g.mu);
    g.stop = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    for (int i = 0; i < g.nworkers; i++)
        pthread_join(g.workers[i], NULL);
    g.nworkers = 0;
    for (uint32_t i = 0;; i++) {
        lg_client *c = lg_client_at(r, i);
        if (!c) break;
        jsc *j = c->drv;
        if (j && j->sub) {
            natsSubscription_Unsubscribe(j->sub);
            natsSubscription_Destroy(j->sub);
            j->sub = NULL;
        }
    }
    js_DeleteStream(g.js[0], JS_STREAM, NULL, NULL); /* and its consumers: nothing left behind */
    for (uint32_t i = 0; i < g.n; i++) {
        jsCtx_Destroy(g.js[i]);
        natsConnection_Destroy(g.nc[i]);
    }
    g.n = 0;
    nats_CloseAndWait(2000);
}

/* loadgen closes the clients in order: the first close stops libnats for all. */
static void js_close(lg_run *r, lg_client *c)
{
    if (g.n) teardown(r);
    jsc *j = c->drv;
    if (!j) return;
    for (js_ev *ev = j->head, *next; ev; ev = next) {
        next = ev->next;
        free(ev);
    }
    pthread_mutex_destroy(&j->mu);
    free(j);
    c->drv = NULL;
}

const lg_driver lg_driver_jetstream = {
    .name = "js",
    .acks = true,
    .stages = 1,
    .init = js_init,
    .connect = js_connect,
    .input = js_input,
    .send = js_send,
    .flush = js_flush,
    .close = js_close,
};
