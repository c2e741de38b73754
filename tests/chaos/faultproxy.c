/*
 * pt-faultproxy - a seeded, user-space fault injector between PackTrack clients
 * and packtrackd (this kernel has no netem). It listens on 127.0.0.1, opens one
 * upstream connection per client connection and forwards both directions.
 *
 * It understands PackTrack's framing (docs/PROTOCOL.md §1-2): the clear client
 * hello (6 + n bytes) and server hello (6 bytes) are forwarded untouched; after
 * them every u32-length-prefixed frame (Noise handshake messages, then records)
 * is one unit the faults act on. Each fault has a rate in [0, 1]:
 *
 *   --drop P      the frame is not forwarded. The receiver either fails the next
 *                 record's AEAD (nonce gap) and closes, or, if it was the last
 *                 frame before a wait, the connection stalls until a timeout.
 *   --dup P       the frame is forwarded twice (the copy fails AEAD: replayed nonce).
 *   --reorder P   the frame is held and forwarded after the next one (or after
 *                 50 ms if none follows): the receiver gets nonce n+1 before n.
 *   --delay P     the frame (and, to keep order, those behind it) waits 1 ..
 *                 --delay-max ms (default 200) before it is forwarded.
 *   --truncate P  the frame is shortened (its length field rewritten to match):
 *                 a shorter record fails authentication.
 *   --flip P      one bit of the frame's data (never its length field) is flipped.
 *   --cut P       after the frame both TCP connections are closed.
 *   --replay P    a frame captured earlier in the same direction (this connection
 *                 or an earlier one) is injected before this one: a record replay.
 *   --oversize P  the frame's length field is replaced by one above
 *                 PT_CHAN_FRAME_MAX (133,120): the receiver must close before it
 *                 reserves memory.
 *
 * --records-only leaves the Noise handshake frames alone (the adversary
 * campaigns aim at records); --dir c2s|s2c|both picks the directions (both).
 *
 * Determinism: the decisions for the k-th frame of direction d of the c-th
 * accepted connection come from a generator seeded by (seed, c, d) and consume a
 * fixed number of draws per frame, so a seed replays the same fault pattern
 * whatever the interleaving of connections; scheduling of the processes around
 * it can still differ between runs.
 *
 * Outcome of tampering: a connection that carried an injected or altered frame
 * (dup, reorder, truncate, flip, replay, oversize) is "tampered". If the receiver
 * of that direction then closes the connection it counts as rejected (late when
 * that took over 3 s: a receiver that paused reading, e.g. packtrackd's rate
 * limit, reads the frame late); if it is still open 30 s after the tampered
 * bytes were written it counts as survived (and the proxy cuts it); if the other
 * side or the proxy closed first, undecided. Target: 0 survived.
 *
 * Control: SIGUSR1 toggles calm mode (every rate 0, for the drain phase of a
 * campaign); SIGUSR2 cuts every connection; SIGTERM/SIGINT print the counters as
 * "key value" lines on stdout and exit 0. The seed is printed at startup.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define MAX_CONNS 128
#define FRAME_SANE_MAX (140u * 1024u)   /* above any legitimate frame: switch to raw */
#define OVERSIZE_MIN (128u * 1024u + 2048u + 1u) /* PT_CHAN_FRAME_MAX + 1 */
#define REPLAY_RING 32
#define REPLAY_KEEP_MAX 8192            /* frames captured for replay are at most this long */
#define HOLD_MAX_MS 50
#define SLOW_MS 3000                   /* a tampered connection still open: reported */
#define VERDICT_MS 30000                /* ... and still open now: survived */
#define QUEUE_BYTES_MAX (8u << 20)      /* stop reading a direction above this backlog */
#define DRAWS_PER_FRAME 12

enum { F_CUT, F_DROP, F_TRUNC, F_FLIP, F_OVERSIZE, F_REPLAY, F_DUP, F_REORDER, F_DELAY, F_NFAULTS };
static const char *const fault_names[F_NFAULTS] = {"cut", "drop", "truncate", "flip", "oversize",
                                                   "replay", "dup", "reorder", "delay"};

typedef struct item {
    uint8_t *p;
    size_t n, off;
    uint64_t due_ms;  /* not written before this time */
    bool tampered;    /* injected or altered: the receiver must reject it */
} item;

typedef struct dir {
    int from, to;            /* indexes into conn.fd: read from, write to */
    uint8_t *in;             /* bytes read, not yet a whole frame */
    size_t in_len, in_cap;
    int phase;               /* 0 hello, 1 frames, 2 raw (not PackTrack framing) */
    uint64_t nframe;         /* frames seen */
    unsigned hs_frames;      /* Noise handshake frames in this direction */
    uint64_t rng;            /* decisions for this direction */
    item *q;                 /* to write, in order */
    size_t qn, qcap, qbytes;
    item held;               /* reorder: waits for the next frame */
    bool has_held;
    uint64_t held_since, last_due;
    uint64_t tampered_at;    /* when tampered bytes were written (0: none pending) */
    bool judged;             /* tampering already counted for this direction */
    bool slow;               /* still open SLOW_MS after the tampering */
} dir;

typedef struct conn {
    int fd[2];               /* 0 client side, 1 server side */
    dir d[2];                /* 0 client -> server, 1 server -> client */
    uint64_t idx;
    int closer;              /* the side whose socket reported EOF or an error; -1 none */
    bool cut_after;          /* close once the queues are written */
} conn;

static struct {
    double rate[F_NFAULTS];
    unsigned delay_max_ms;
    bool records_only;
    int dirs;                /* bit 0 c2s, bit 1 s2c */
    uint64_t seed;
} cfg = {.delay_max_ms = 200, .dirs = 3};

static struct {
    uint64_t conns, upstream_refused, frames, bytes, fault[F_NFAULTS];
    uint64_t tampered, rejected, rejected_late, survived, undecided;
} st;

static conn *conns[MAX_CONNS];
static volatile sig_atomic_t sig_calm, sig_cut, sig_stop;
static bool calm;
static struct { uint8_t *p; size_t n; } ring[2][REPLAY_RING];
static size_t ring_next[2];

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double unit(uint64_t *s) { return (double)(splitmix(s) >> 11) / 9007199254740992.0; }

static void die(const char *what)
{
    fprintf(stderr, "pt-faultproxy: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    void *r = realloc(p, n ? n : 1);
    if (!r) die("realloc");
    return r;
}

static void push(dir *d, const uint8_t *p, size_t n, uint64_t due, bool tampered)
{
    if (d->qn == d->qcap) {
        d->qcap = d->qcap ? 2 * d->qcap : 16;
        d->q = xrealloc(d->q, d->qcap * sizeof *d->q);
    }
    item *it = &d->q[d->qn++];
    it->p = xrealloc(NULL, n);
    memcpy(it->p, p, n);
    it->n = n;
    it->off = 0;
    it->due_ms = due;
    it->tampered = tampered;
    d->qbytes += n;
}

static void push_held(dir *d)
{
    if (!d->has_held) return;
    if (d->qn == d->qcap) {
        d->qcap = d->qcap ? 2 * d->qcap : 16;
        d->q = xrealloc(d->q, d->qcap * sizeof *d->q);
    }
    d->q[d->qn++] = d->held;
    d->qbytes += d->held.n;
    d->has_held = false;
}

static void put_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void capture(int dirn, const uint8_t *p, size_t n)
{
    if (n > REPLAY_KEEP_MAX) return;
    size_t k = ring_next[dirn]++ % REPLAY_RING;
    free(ring[dirn][k].p);
    ring[dirn][k].p = xrealloc(NULL, n);
    memcpy(ring[dirn][k].p, p, n);
    ring[dirn][k].n = n;
}

/* One whole frame (header included) of direction dirn: decide its fate. */
static void on_frame(conn *c, int dirn, const uint8_t *f, size_t n)
{
    dir *d = &c->d[dirn];
    uint64_t now = now_ms();
    double u[DRAWS_PER_FRAME];
    for (int i = 0; i < DRAWS_PER_FRAME; i++) u[i] = unit(&d->rng);
    bool record = d->nframe >= d->hs_frames;
    d->nframe++;
    st.frames++;
    st.bytes += n;
    bool eligible = !calm && (cfg.dirs & (1 << dirn)) && (record || !cfg.records_only);
    double r[F_NFAULTS] = {0};
    if (eligible) memcpy(r, cfg.rate, sizeof r);
    uint64_t due = now > d->last_due ? now : d->last_due;
    if (u[F_DELAY] < r[F_DELAY]) {
        due = now + 1 + (uint64_t)(u[9] * cfg.delay_max_ms);
        if (due < d->last_due) due = d->last_due;
        st.fault[F_DELAY]++;
    }
    d->last_due = due;
    if (u[F_CUT] < r[F_CUT]) {
        st.fault[F_CUT]++;
        c->cut_after = true;
    }
    if (u[F_DROP] < r[F_DROP]) {
        st.fault[F_DROP]++;
        return;
    }
    uint8_t *out = xrealloc(NULL, n);
    memcpy(out, f, n);
    size_t len = n;
    bool tampered = false;
    if (u[F_TRUNC] < r[F_TRUNC] && n > 5) {
        len = 4 + 1 + (size_t)(u[10] * (double)(n - 5)); /* 1 .. data-1 bytes of data */
        put_u32le(out, (uint32_t)(len - 4));
        st.fault[F_TRUNC]++;
        tampered = true;
    }
    if (u[F_FLIP] < r[F_FLIP] && len > 4) {
        size_t bit = (size_t)(u[11] * (double)((len - 4) * 8));
        out[4 + bit / 8] ^= (uint8_t)(1u << (bit % 8));
        st.fault[F_FLIP]++;
        tampered = true;
    }
    if (u[F_OVERSIZE] < r[F_OVERSIZE]) {
        uint32_t big = OVERSIZE_MIN + (uint32_t)(u[10] * (double)(UINT32_MAX - OVERSIZE_MIN));
        put_u32le(out, big);
        st.fault[F_OVERSIZE]++;
        tampered = true;
    }
    if (u[F_REPLAY] < r[F_REPLAY] && record && ring_next[dirn] > 0) {
        size_t have = ring_next[dirn] < REPLAY_RING ? ring_next[dirn] : REPLAY_RING;
        size_t k = (size_t)(u[9] * (double)have);
        push(d, ring[dirn][k].p, ring[dirn][k].n, due, true);
        st.fault[F_REPLAY]++;
    }
    if (record) capture(dirn, f, n);
    if (u[F_REORDER] < r[F_REORDER] && !d->has_held) {
        d->held = (item){.p = out, .n = len, .due_ms = due, .tampered = true};
        d->has_held = true;
        d->held_since = now;
        st.fault[F_REORDER]++;
        return;
    }
    push(d, out, len, due, tampered || d->has_held);
    if (u[F_DUP] < r[F_DUP]) {
        push(d, out, len, due, true);
        st.fault[F_DUP]++;
    }
    free(out);
    push_held(d);
}

/* Splits what was read into hellos and frames. */
static void parse(conn *c, int dirn)
{
    dir *d = &c->d[dirn];
    size_t pos = 0;
    for (int guard = 0; guard < 100000; guard++) {
        size_t avail = d->in_len - pos;
        const uint8_t *p = d->in + pos;
        if (d->phase == 2) {
            if (avail) push(d, p, avail, now_ms(), false);
            pos += avail;
            break;
        }
        if (d->phase == 0) {
            if (avail < 6) break;
            if (memcmp(p, "PTK", 3) != 0) {
                d->phase = 2; /* obfuscated or foreign: forward as is */
                continue;
            }
            size_t hl = dirn == 0 ? 6u + p[5] : 6u;
            if (avail < hl) break;
            if (dirn == 0) {
                c->d[0].hs_frames = p[4] == 2 ? 1 : 2; /* IK: one frame each way; XX: two from the client */
                c->d[1].hs_frames = 1;
            }
            push(d, p, hl, now_ms(), false);
            pos += hl;
            d->phase = 1;
            continue;
        }
        if (avail < 4) break;
        uint32_t fl = get_u32le(p);
        if (fl == 0 || fl > FRAME_SANE_MAX) {
            d->phase = 2;
            continue;
        }
        if (avail < 4u + fl) break;
        on_frame(c, dirn, p, 4u + fl);
        pos += 4u + fl;
    }
    if (pos) {
        memmove(d->in, d->in + pos, d->in_len - pos);
        d->in_len -= pos;
    }
}

static void judge_close(conn *c, int closer)
{
    /* closer: the side (0 client, 1 server) whose socket reported EOF or an error,
     * or -1 when the proxy closed. Direction 0 is received by the server (side 1). */
    for (int k = 0; k < 2; k++) {
        dir *d = &c->d[k];
        if (!d->tampered_at || d->judged) continue;
        d->judged = true;
        int receiver = k == 0 ? 1 : 0;
        if (closer == receiver) {
            st.rejected++;
            st.rejected_late += d->slow;
        } else {
            st.undecided++;
        }
    }
}

static void conn_free(size_t i, int closer)
{
    conn *c = conns[i];
    judge_close(c, closer);
    for (int k = 0; k < 2; k++) {
        close(c->fd[k]);
        dir *d = &c->d[k];
        for (size_t j = 0; j < d->qn; j++) free(d->q[j].p);
        if (d->has_held) free(d->held.p);
        free(d->q);
        free(d->in);
    }
    free(c);
    conns[i] = NULL;
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void on_accept(int lfd, const struct sockaddr_in *up)
{
    int cfd = accept(lfd, NULL, NULL);
    if (cfd < 0) return;
    size_t slot = MAX_CONNS;
    for (size_t i = 0; i < MAX_CONNS; i++)
        if (!conns[i]) {
            slot = i;
            break;
        }
    int sfd = socket(AF_INET, SOCK_STREAM, 0);
    if (slot == MAX_CONNS || sfd < 0 || connect(sfd, (const struct sockaddr *)up, sizeof *up) != 0) {
        st.upstream_refused++;
        if (sfd >= 0) close(sfd);
        close(cfd);
        return;
    }
    set_nonblock(cfd);
    set_nonblock(sfd);
    conn *c = calloc(1, sizeof *c);
    if (!c) die("calloc");
    c->fd[0] = cfd;
    c->fd[1] = sfd;
    c->idx = st.conns++;
    c->closer = -1;
    for (int k = 0; k < 2; k++) {
        c->d[k].from = k;
        c->d[k].to = 1 - k;
        c->d[k].rng = cfg.seed ^ (c->idx * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)k << 62);
        splitmix(&c->d[k].rng);
    }
    conns[slot] = c;
}

/* Writes what is due (everything when flush); returns -1 when the destination failed. */
static int drain(conn *c, int dirn, uint64_t now, bool flush)
{
    dir *d = &c->d[dirn];
    if (d->has_held && (now - d->held_since >= HOLD_MAX_MS || flush)) push_held(d);
    size_t done = 0;
    int rc = 0;
    while (done < d->qn) {
        item *it = &d->q[done];
        if (it->due_ms > now && !flush) break;
        ssize_t w = write(c->fd[d->to], it->p + it->off, it->n - it->off);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) rc = -1;
            break;
        }
        it->off += (size_t)w;
        if (it->off < it->n) break;
        if (it->tampered && !d->tampered_at) {
            d->tampered_at = now ? now : 1;
            st.tampered++;
        }
        d->qbytes -= it->n;
        free(it->p);
        done++;
    }
    if (done) {
        memmove(d->q, d->q + done, (d->qn - done) * sizeof *d->q);
        d->qn -= done;
    }
    return rc;
}

static void on_signal(int sig)
{
    if (sig == SIGUSR1) sig_calm = 1;
    else if (sig == SIGUSR2) sig_cut = 1;
    else sig_stop = 1;
}

static void print_stats(void)
{
    printf("seed %llu\nconnections %llu\nupstream_refused %llu\nframes %llu\nbytes %llu\n",
           (unsigned long long)cfg.seed, (unsigned long long)st.conns,
           (unsigned long long)st.upstream_refused, (unsigned long long)st.frames,
           (unsigned long long)st.bytes);
    for (int i = 0; i < F_NFAULTS; i++) printf("%s %llu\n", fault_names[i], (unsigned long long)st.fault[i]);
    printf("tampered %llu\nrejected %llu\nrejected_late %llu\nsurvived %llu\nundecided %llu\n",
           (unsigned long long)st.tampered, (unsigned long long)st.rejected,
           (unsigned long long)st.rejected_late, (unsigned long long)st.survived,
           (unsigned long long)st.undecided);
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: pt-faultproxy --upstream HOST:PORT [--listen HOST:PORT] [--seed N]\n"
            "         [--drop P] [--dup P] [--reorder P] [--delay P] [--delay-max MS]\n"
            "         [--truncate P] [--flip P] [--cut P] [--replay P] [--oversize P]\n"
            "         [--records-only] [--dir both|c2s|s2c] [--ready-file PATH]\n");
    exit(2);
}

static int parse_addr(const char *s, struct sockaddr_in *a)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

static double rate_arg(const char *name, const char *v)
{
    char *end;
    double r = strtod(v, &end);
    if (*end || r < 0 || r > 1) {
        fprintf(stderr, "pt-faultproxy: --%s %s: a rate is a number from 0 to 1\n", name, v);
        exit(2);
    }
    return r;
}

int main(int argc, char **argv)
{
    enum { O_UP = 256, O_LISTEN, O_SEED, O_DELAYMAX, O_RECORDS, O_DIR, O_READY };
    static const struct option opts[] = {
        {"upstream", required_argument, NULL, O_UP},     {"listen", required_argument, NULL, O_LISTEN},
        {"seed", required_argument, NULL, O_SEED},       {"delay-max", required_argument, NULL, O_DELAYMAX},
        {"records-only", no_argument, NULL, O_RECORDS},  {"dir", required_argument, NULL, O_DIR},
        {"ready-file", required_argument, NULL, O_READY},
        {"cut", required_argument, NULL, F_CUT},         {"drop", required_argument, NULL, F_DROP},
        {"truncate", required_argument, NULL, F_TRUNC},  {"flip", required_argument, NULL, F_FLIP},
        {"oversize", required_argument, NULL, F_OVERSIZE}, {"replay", required_argument, NULL, F_REPLAY},
        {"dup", required_argument, NULL, F_DUP},         {"reorder", required_argument, NULL, F_REORDER},
        {"delay", required_argument, NULL, F_DELAY},     {NULL, 0, NULL, 0}};
    const char *upstream = NULL, *listen_at = "127.0.0.1:0", *ready = NULL;
    bool seeded = false;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (o >= 0 && o < F_NFAULTS) {
            cfg.rate[o] = rate_arg(fault_names[o], optarg);
            continue;
        }
        switch (o) {
        case O_UP: upstream = optarg; break;
        case O_LISTEN: listen_at = optarg; break;
        case O_SEED: cfg.seed = strtoull(optarg, NULL, 0); seeded = true; break;
        case O_DELAYMAX: cfg.delay_max_ms = (unsigned)atoi(optarg); break;
        case O_RECORDS: cfg.records_only = true; break;
        case O_DIR:
            cfg.dirs = strcmp(optarg, "c2s") == 0 ? 1 : strcmp(optarg, "s2c") == 0 ? 2 : 3;
            break;
        case O_READY: ready = optarg; break;
        default: usage();
        }
    }
    struct sockaddr_in up, la;
    if (!upstream || parse_addr(upstream, &up) || parse_addr(listen_at, &la)) usage();
    if (!seeded) cfg.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    fprintf(stderr, "pt-faultproxy: seed %llu\n", (unsigned long long)cfg.seed);

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&la, sizeof la) != 0 || listen(lfd, 64) != 0) die("listen");
    socklen_t sl = sizeof la;
    getsockname(lfd, (struct sockaddr *)&la, &sl);
    if (ready) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s.tmp", ready);
        FILE *f = fopen(tmp, "w");
        if (!f) die(tmp);
        fprintf(f, "127.0.0.1:%u\n", ntohs(la.sin_port));
        fclose(f);
        if (rename(tmp, ready) != 0) die("rename");
    }

    struct pollfd pfd[1 + 2 * MAX_CONNS];
    int owner[1 + 2 * MAX_CONNS]; /* conn slot * 2 + side */
    while (!sig_stop) {
        if (sig_calm) {
            sig_calm = 0;
            calm = !calm;
            fprintf(stderr, "pt-faultproxy: %s\n", calm ? "calm" : "faults on");
        }
        uint64_t now = now_ms();
        int timeout = 100;
        nfds_t n = 0;
        pfd[n++] = (struct pollfd){.fd = lfd, .events = POLLIN};
        for (size_t i = 0; i < MAX_CONNS; i++) {
            conn *c = conns[i];
            if (!c) continue;
            if (sig_cut) {
                conn_free(i, -1);
                continue;
            }
            bool idle = true;
            for (int k = 0; k < 2; k++) {
                dir *d = &c->d[k];
                if (drain(c, k, now, c->closer >= 0) != 0 && c->closer < 0) c->closer = d->to;
                if (d->qn || d->has_held) idle = false;
                if (d->tampered_at && !d->judged && !d->slow && now - d->tampered_at > SLOW_MS) {
                    d->slow = true; /* a receiver that paused reading (backpressure) is slow, not fooled */
                    fprintf(stderr, "pt-faultproxy: connection %llu direction %d still open %u ms after tampering\n",
                            (unsigned long long)c->idx, k, SLOW_MS);
                }
                if (d->tampered_at && !d->judged && now - d->tampered_at > VERDICT_MS) {
                    d->judged = true;
                    st.survived++;
                    fprintf(stderr, "pt-faultproxy: connection %llu direction %d survived tampering\n",
                            (unsigned long long)c->idx, k);
                    c->cut_after = true;
                }
            }
            if (c->closer >= 0 || (c->cut_after && idle)) {
                conn_free(i, c->closer);
                continue;
            }
            for (int side = 0; side < 2; side++) {
                dir *rd = &c->d[side];            /* reads from this side */
                dir *wd = &c->d[1 - side];        /* writes to this side */
                short ev = 0;
                if (rd->qbytes < QUEUE_BYTES_MAX) ev |= POLLIN;
                if (wd->qn && wd->q[0].due_ms <= now) ev |= POLLOUT;
                if (wd->qn && wd->q[0].due_ms > now && (int)(wd->q[0].due_ms - now) < timeout)
                    timeout = (int)(wd->q[0].due_ms - now);
                if (wd->has_held && timeout > HOLD_MAX_MS) timeout = HOLD_MAX_MS;
                owner[n] = (int)(i * 2) + side;
                pfd[n++] = (struct pollfd){.fd = c->fd[side], .events = ev};
            }
        }
        sig_cut = 0;
        int pr = poll(pfd, n, timeout);
        if (pr < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (pfd[0].revents & POLLIN) on_accept(lfd, &up);
        for (nfds_t j = 1; j < n; j++) {
            if (!pfd[j].revents) continue;
            size_t i = (size_t)owner[j] / 2;
            int side = owner[j] % 2;
            conn *c = conns[i];
            if (!c) continue;
            dir *rd = &c->d[side];
            if (pfd[j].revents & (POLLIN | POLLHUP | POLLERR)) {
                if (rd->in_cap - rd->in_len < 65536) {
                    rd->in_cap = rd->in_len + 65536;
                    rd->in = xrealloc(rd->in, rd->in_cap);
                }
                ssize_t r = read(c->fd[side], rd->in + rd->in_len, rd->in_cap - rd->in_len);
                if (r > 0) {
                    rd->in_len += (size_t)r;
                    parse(c, side);
                } else if ((r == 0 || (errno != EAGAIN && errno != EINTR)) && c->closer < 0) {
                    c->closer = side;
                }
            }
        }
    }
    for (size_t i = 0; i < MAX_CONNS; i++)
        if (conns[i]) conn_free(i, -1);
    print_stats();
    return 0;
}
