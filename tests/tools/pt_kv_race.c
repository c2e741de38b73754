/*
 * pt-kv-race: which JetStream primitives are exact under concurrency on the NATS
 * cluster at hand (docs/ARCHITECTURE.md, "Cluster mode", prekeys). Six connections
 * spread over the given servers race, ROUNDS times, on:
 *   update  kvStore_Update naming the same revision: exactly one should succeed;
 *   create  kvStore_Create of one fresh key: exactly one should succeed;
 *   msgid   js_Publish with one Nats-Msg-Id: exactly one should not be a duplicate.
 * Prints the winners of each against the rounds. On Debian's nats-server 2.9.10 with
 * three servers, update wins more than once per round (nats-io/nats-server#4320).
 *
 *   scripts/cluster-up.sh -n 0 -m 3 -d DIR      # then, with its PT_CLUSTER_NATS:
 *   build/tests/pt-kv-race nats://127.0.0.1:14201,nats://127.0.0.1:14202,nats://127.0.0.1:14203 [ROUNDS]
 */
#if __has_include(<nats/nats.h>)
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RACERS 6

static kvStore *kvs[RACERS];
static jsCtx *jss[RACERS];
static pthread_barrier_t bar;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t rev;
static int rounds = 200, wins[3];

static void win(int what)
{
    pthread_mutex_lock(&mu);
    wins[what]++;
    pthread_mutex_unlock(&mu);
}

static void *racer(void *arg)
{
    long i = (long)arg;
    for (int r = 0; r < rounds; r++) {
        char key[32], id[32];
        snprintf(key, sizeof key, "n%d", r);
        snprintf(id, sizeof id, "claim.%d", r);
        pthread_barrier_wait(&bar);
        if (kvStore_Update(NULL, kvs[i], "k", "v", 1, rev) == NATS_OK) win(0);
        pthread_barrier_wait(&bar);
        if (kvStore_Create(NULL, kvs[i], key, "v", 1) == NATS_OK) win(1);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = id;
        jsPubAck *pa = NULL;
        if (js_Publish(&pa, jss[i], "ptrace.x", "v", 1, &po, NULL) == NATS_OK && !pa->Duplicate) win(2);
        jsPubAck_Destroy(pa);
        pthread_barrier_wait(&bar);
        if (i == 0) {
            kvEntry *e = NULL;
            if (kvStore_Get(&e, kvs[0], "k") == NATS_OK) rev = kvEntry_Revision(e);
            kvEntry_Destroy(e);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: pt-kv-race NATS_URL[,NATS_URL...] [ROUNDS]\n");
        return 2;
    }
    if (argc > 2) rounds = atoi(argv[2]);
    char *urls[16];
    int nurls = 0;
    for (char *u = strtok(argv[1], ","); u && nurls < 16; u = strtok(NULL, ",")) urls[nurls++] = u;
    natsConnection *nc[RACERS];
    for (int i = 0; i < RACERS; i++) {
        if (natsConnection_ConnectTo(&nc[i], urls[i % nurls]) != NATS_OK ||
            natsConnection_JetStream(&jss[i], nc[i], NULL) != NATS_OK) {
            fprintf(stderr, "pt-kv-race: cannot connect to %s\n", urls[i % nurls]);
            return 1;
        }
    }
    int replicas = nurls < 3 ? nurls : 3;
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = "ptrace";
    kc.History = 1;
    kc.Replicas = replicas;
    kc.StorageType = js_FileStorage;
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[] = {"ptrace.>"};
    sc.Name = "PTRACE";
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Replicas = replicas;
    sc.Storage = js_FileStorage;
    sc.Duplicates = (int64_t)600 * 1000000000;
    jsStreamInfo *si = NULL;
    if (js_CreateKeyValue(&kvs[0], jss[0], &kc) != NATS_OK || js_AddStream(&si, jss[0], &sc, NULL, NULL) != NATS_OK) {
        fprintf(stderr, "pt-kv-race: cannot create the bucket ptrace or the stream PTRACE (exist already?)\n");
        return 1;
    }
    jsStreamInfo_Destroy(si);
    for (int i = 1; i < RACERS; i++) js_KeyValue(&kvs[i], jss[i], "ptrace");
    kvStore_Create(&rev, kvs[0], "k", "v", 1);
    pthread_barrier_init(&bar, NULL, RACERS);
    pthread_t t[RACERS];
    for (long i = 0; i < RACERS; i++) pthread_create(&t[i], NULL, racer, (void *)i);
    for (int i = 0; i < RACERS; i++) pthread_join(t[i], NULL);
    printf("%d racers, %d rounds, %d replicas: update on one revision %d winners, create %d, "
           "Nats-Msg-Id %d (exact: %d each)\n",
           RACERS, rounds, replicas, wins[0], wins[1], wins[2], rounds);
    js_DeleteKeyValue(jss[0], "ptrace");
    js_DeleteStream(jss[0], "PTRACE", NULL, NULL);
    for (int i = 0; i < RACERS; i++) {
        kvStore_Destroy(kvs[i]);
        jsCtx_Destroy(jss[i]);
        natsConnection_Destroy(nc[i]);
    }
    return wins[1] == rounds && wins[2] == rounds ? 0 : 1;
}
#else
#include <stdio.h>
int main(void)
{
    fprintf(stderr, "pt-kv-race: built without libnats\n");
    return 2;
}
#endif
