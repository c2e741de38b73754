/*
 * bench/loadgen - issue 3's load generator (docs/BENCHMARKS.md, "Server load").
 *
 * Opens 2 x --pairs client connections to one server, pairs client i with
 * i ^ 1, and makes every client send --size-byte messages to its partner:
 *   closed loop: each client keeps --window messages in flight (a message is
 *                in flight until its partner has it and, where the protocol
 *                acknowledges, until its sender has the ack); gives the maximum
 *                rate, the server CPU per message and the latencies under load;
 *   open loop:   each client sends on a fixed schedule at --rate / (2 x pairs)
 *                per second (or, with --half, half the closed loop's rate of
 *                this same run); latencies are measured from the *intended*
 *                send time, so a stalled server cannot hide queueing delay.
 *   --idle N:    instead of load, N connections that set up (authenticate,
 *                subscribe) and stay idle; reports the server's RSS growth.
 * Delivery latency is send -> the recipient has it; ack latency is send -> the
 * sender has the server's acknowledgement (pt: messages.sent, i.e. durable;
 * MQTT: PUBACK). Every payload starts with magic, sender, sequence number and
 * send time, and is checked on arrival (misrouted or duplicated ones counted).
 * loadgen's own delay is reported beside them: in the open loop the send lag
 * (intended send time -> loadgen has written it, a part of both latencies) and the
 * busy part of its loop's turns (from the poll's return to the next poll: what a
 * message that arrived meanwhile waits at most before loadgen reads it), so a
 * figure that is loadgen's own queue is seen as such.
 *
 * The server is started by scripts/bench-loadgen.sh; --server-pid lets loadgen
 * read its CPU time (/proc/PID/stat, all threads) and RSS (/proc/PID/status).
 * One result line per phase starts with "RESULT" (key=value) for the script.
 *
 * Several servers (issue 8's cluster, scripts/bench-cluster.sh): --port takes a
 * list and client i connects to the (i mod n)-th; a pair (i, i ^ 1) is two
 * consecutive numbers, so with n >= 2 its two clients are on different servers.
 * --server-pid and --nats-pid take lists too: the CPU times are summed (the
 * nats-servers' apart from the packtrackd nodes'), the RSS of the servers too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/pt_common.h"
#include "lg.h"

#define OPEN_LOOP_CAP 1024        /* open loop: in flight per client before sends are skipped */
#define SETUP_TIMEOUT_NS (120ull * 1000000000u)
#define DRAIN_TIMEOUT_NS (5ull * 1000000000u)
#define TICK_NS 5000000ull        /* how often drivers get tick() */
#define IDLE_BATCH 500            /* idle connections set up at once */
#define MAX_SAMPLES (32u << 20)

typedef struct samples {
    uint64_t *v;
    size_t n, cap;
} samples;

struct lg_run {
    const lg_driver *drv;
    lg_opts o;
    int ep;                       /* epoll set */
    lg_client *cl;
    uint32_t ncl;                 /* clients set up so far */
    uint32_t cap;
    pid_t server_pids[LG_PORTS_MAX]; /* packtrackd nodes (or the one server measured) */
    uint32_t nserver_pids;
    pid_t nats_pids[LG_PORTS_MAX];   /* the nats-servers behind them, reported apart */
    uint32_t nnats_pids;
    /* the phase being measured */
    bool measuring;
    uint64_t meas_start_ns;
    uint64_t delivered_in_window;
    samples dlv, ack;
    samples lag, turn;            /* open loop: intended send time -> written; busy turns */
    uint64_t woke_ns;             /* when the last poll returned (0: none yet this phase) */
    /* counters over the whole run */
    uint64_t errors, dups, misrouted, skipped, lost;
    const char *last_error;
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static _Noreturn void die(const char *what, const char *arg)
{
    fprintf(stderr, "loadgen: %s%s\n", what, arg);
    exit(1);
}

const lg_opts *lg_options(const lg_run *r) { return &r->o; }
uint16_t lg_port_of(const lg_opts *o, uint32_t idx) { return o->ports[idx % o->nports]; }
lg_client *lg_client_at(lg_run *r, uint32_t idx) { return idx < r->ncl ? &r->cl[idx] : NULL; }

void lg_note_error(lg_run *r, const char *what)
{
    r->errors++;
    r->last_error = what;
}

/* ---- samples ------------------------------------------------------------------------------ */

static void sample_add(samples *s, uint64_t v)
{
    if (s->n == s->cap) {
        if (s->cap >= MAX_SAMPLES) return;
        size_t cap = s->cap ? 2 * s->cap : 65536;
        uint64_t *n = realloc(s->v, cap * sizeof *n);
        if (!n) return;
        s->v = n;
        s->cap = cap;
    }
    s->v[s->n++] = v;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Percentile q (0..1) in microseconds, after sorting; -1 without samples. */
static double pct_us(samples *s, double q)
{
    if (!s->n) return -1;
    size_t i = (size_t)(q * (double)(s->n - 1) + 0.5);
    return (double)s->v[i] / 1000.0;
}

/* Sorts s and gives its p50, p99 and (p999 not NULL) p99.9 in microseconds. */
static void percentiles(samples *s, double *p50, double *p99, double *p999)
{
    if (s->n) qsort(s->v, s->n, sizeof *s->v, cmp_u64);
    *p50 = pct_us(s, 0.50);
    *p99 = pct_us(s, 0.99);
    if (p999) *p999 = pct_us(s, 0.999);
}

/* ---- the server's /proc ---------------------------------------------------------------- */

/* utime + stime of every thread, in microseconds; 0 when unknown. */
static uint64_t server_cpu_us(pid_t pid)
{
    if (pid <= 0) return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p) return 0;
    unsigned long long ut = 0, st = 0;
    /* after ")": state(3) ... utime is field 14, stime 15 */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return 0;
    return (ut + st) * 1000000ull / (uint64_t)sysconf(_SC_CLK_TCK);
}

/* VmRSS in KiB; 0 when unknown. */
static uint64_t server_rss_kib(pid_t pid)
{
    if (pid <= 0) return 0;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %llu kB", &kib) == 1) break;
    fclose(f);
    return kib;
}

/* The sum over a list of processes; 0 for an empty list. */
static uint64_t pids_cpu_us(const pid_t *pids, uint32_t n)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n; i++) sum += server_cpu_us(pids[i]);
    return sum;
}

static uint64_t pids_rss_kib(const pid_t *pids, uint32_t n)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n; i++) sum += server_rss_kib(pids[i]);
    return sum;
}

/* CPU time of the whole machine in processes (user, nice, system) or stolen by
 * the hypervisor, in microseconds. Interrupts are left out: softirq time of our
 * own loopback traffic is often not charged to the processes. With niced, the
 * same without nice: work at nice 19 (fuzzers) takes a CPU only when it is idle. */
static uint64_t machine_busy_us(bool niced)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8) return 0;
    unsigned long long busy = v[0] + (niced ? v[1] : 0) + v[2] + v[7];
    return busy * 1000000ull / (uint64_t)sysconf(_SC_CLK_TCK);
}

/* Lines of /proc/PID/maps: memory mappings, limited by vm.max_map_count. */
static uint64_t server_maps(pid_t pid)
{
    if (pid <= 0) return 0;
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    uint64_t n = 0;
    while (fgets(line, sizeof line, f))
        if (strchr(line, '\n')) n++;
    fclose(f);
    return n;
}

static uint64_t self_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec +
           (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec;
}

/* ---- messages ------------------------------------------------------------------------------ */

static bool slot_complete(const lg_run *r, const lg_slot *s)
{
    return (s->flags & LG_DELIVERED) && (!r->drv->acks || (s->flags & LG_ACKED));
}

static void finish(lg_run *r, lg_client *sender, lg_slot *s)
{
    if (slot_complete(r, s) && sender->outstanding) sender->outstanding--;
}

void lg_delivered(lg_run *r, lg_client *receiver, const uint8_t *p, size_t len)
{
    if (len < LG_HDR || pt_get_u32le(p) != LG_MAGIC) {
        lg_note_error(r, "payload without our header");
        return;
    }
    uint32_t from = pt_get_u32le(p + 4);
    uint64_t seq = pt_get_u64le(p + 8), t = pt_get_u64le(p + 16);
    lg_client *s = lg_client_at(r, from);
    if (!s || s->peer != receiver->idx || !s->slots) {
        r->misrouted++;
        return;
    }
    lg_slot *sl = &s->slots[seq % LG_SLOTS];
    if (sl->seq != seq || !(sl->flags & LG_SENT) || (sl->flags & LG_DELIVERED)) {
        r->dups++;
        return;
    }
    uint64_t now = now_ns();
    sl->flags |= LG_DELIVERED;
    if (r->measuring) {
        r->delivered_in_window++;
        if (t >= r->meas_start_ns) sample_add(&r->dlv, now - t);
    }
    finish(r, s, sl);
}

void lg_acked(lg_run *r, lg_client *s, uint64_t tag, bool ok)
{
    if (!s->slots) return;
    lg_slot *found = NULL;
    for (uint64_t q = s->ack_scan; q < s->next_seq; q++) {
        lg_slot *sl = &s->slots[q % LG_SLOTS];
        if (sl->seq == q && (sl->flags & LG_SENT) && !(sl->flags & LG_ACKED) && sl->tag == tag) {
            found = sl;
            break;
        }
    }
    if (!found) {
        r->dups++;
        return;
    }
    uint64_t now = now_ns();
    found->flags |= LG_ACKED;
    if (!ok) r->errors++;
    if (r->measuring && found->t_ns >= r->meas_start_ns) sample_add(&r->ack, now - found->t_ns);
    finish(r, s, found);
    while (s->ack_scan < s->next_seq) {
        lg_slot *sl = &s->slots[s->ack_scan % LG_SLOTS];
        if (sl->seq == s->ack_scan && !(sl->flags & LG_ACKED)) break;
        s->ack_scan++;
    }
}

/* Sends c's next message, stamped t_ns. false when its slot is still busy. */
static bool send_one(lg_run *r, lg_client *c, uint64_t t_ns)
{
    uint64_t seq = c->next_seq;
    lg_slot *sl = &c->slots[seq % LG_SLOTS];
    if ((sl->flags & LG_SENT) && !slot_complete(r, sl)) return false;
    uint8_t p[LG_PAYLOAD_MAX];
    memset(p + LG_HDR, 0x5a, r->o.payload - LG_HDR);
    pt_put_u32le(p, LG_MAGIC);
    pt_put_u32le(p + 4, c->idx);
    pt_put_u64le(p + 8, seq);
    pt_put_u64le(p + 16, t_ns);
    *sl = (lg_slot){.seq = seq, .t_ns = t_ns, .flags = LG_SENT};
    c->next_seq++;
    c->outstanding++;
    if (r->drv->send(r, c, p, r->o.payload, &sl->tag) != 0) {
        fprintf(stderr, "loadgen: client %u: send failed\n", c->idx);
        exit(1);
    }
    return true;
}

/* ---- the event loop -------------------------------------------------------------------------- */

static _Noreturn void fail_client(lg_run *r, lg_client *c, const char *what)
{
    fprintf(stderr, "loadgen: %s client %u: %s failed\n", r->drv->name, c->idx, what);
    exit(1);
}

static void sync_out(lg_run *r, lg_client *c)
{
    if (c->want_out == c->epoll_out || c->fd < 0) return;
    struct epoll_event ev = {.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->epoll_out = c->want_out;
}

static void do_flush(lg_run *r, lg_client *c)
{
    c->dirty = false;
    if (r->drv->flush(r, c) != 0) fail_client(r, c, "write");
    sync_out(r, c);
}

/* Waits up to timeout_ns (< 0: 10 ms) and handles what is ready. With defer, what
 * the input produced is not written here: the caller adds the clients' own sends
 * and flushes the dirty ones, one write each (run_phase). */
static void loop_defer(lg_run *r, int64_t timeout_ns, bool defer)
{
    struct epoll_event evs[512];
    if (timeout_ns < 0) timeout_ns = 10000000;
    struct timespec ts = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
    if (r->measuring && r->woke_ns) sample_add(&r->turn, now_ns() - r->woke_ns);
    int n = epoll_pwait2(r->ep, evs, 512, &ts, NULL);
    if (n < 0 && errno == ENOSYS) n = epoll_wait(r->ep, evs, 512, (int)((timeout_ns + 999999) / 1000000));
    r->woke_ns = now_ns();
    if (n < 0) {
        if (errno == EINTR) return;
        perror("loadgen: epoll");
        exit(1);
    }
    for (int i = 0; i < n; i++) {
        lg_client *c = evs[i].data.ptr;
        if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            if (r->drv->input(r, c) != 0) fail_client(r, c, "read");
            c->dirty = true;
        }
        if ((evs[i].events & EPOLLOUT) || (c->dirty && !defer)) do_flush(r, c);
    }
}

static void loop_once(lg_run *r, int64_t timeout_ns) { loop_defer(r, timeout_ns, false); }

static void run_for(lg_run *r, uint64_t ns)
{
    uint64_t end = now_ns() + ns;
    for (uint64_t t; (t = now_ns()) < end && !interrupted;) loop_once(r, (int64_t)(end - t));
}

static void tick_all(lg_run *r, uint32_t from, uint32_t to, bool force)
{
    if (!r->drv->tick) return;
    for (uint32_t i = from; i < to; i++) {
        if (r->drv->tick(r, &r->cl[i], force) != 0) fail_client(r, &r->cl[i], "tick");
        sync_out(r, &r->cl[i]); /* a tick's write may have left bytes: wait for POLLOUT */
    }
}

/* Connects clients [from, to) and takes them through setup stages 1..upto. */
static void setup(lg_run *r, uint32_t from, uint32_t to, int upto, bool senders)
{
    uint64_t deadline = now_ns() + SETUP_TIMEOUT_NS;
    for (uint32_t i = from; i < to; i++) {
        lg_client *c = &r->cl[i];
        *c = (lg_client){.idx = i, .peer = i ^ 1u, .fd = -1};
        r->ncl = i + 1;
        if (senders && !(c->slots = calloc(LG_SLOTS, sizeof *c->slots))) die("out of memory", "");
        if (r->drv->connect(r, c) != 0 || c->fd < 0) fail_client(r, c, "connect");
        int fl = fcntl(c->fd, F_GETFL);
        fcntl(c->fd, F_SETFL, fl | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) fail_client(r, c, "epoll_ctl");
        do_flush(r, c);
    }
    for (int k = 1; k <= upto; k++) {
        if (k > 1) {
            for (uint32_t i = from; i < to; i++) {
                if (r->drv->start_stage(r, &r->cl[i], k) != 0) fail_client(r, &r->cl[i], "setup");
                do_flush(r, &r->cl[i]);
            }
        }
        for (;;) {
            uint32_t done = 0;
            for (uint32_t i = from; i < to; i++) {
                if (r->cl[i].stage < 0) fail_client(r, &r->cl[i], "setup");
                done += r->cl[i].stage >= k;
            }
            if (done == to - from) break;
            if (now_ns() > deadline || interrupted) {
                fprintf(stderr, "loadgen: setup stage %d: %u of %u clients ready after %llu s\n", k,
                        done, to - from, (unsigned long long)(SETUP_TIMEOUT_NS / 1000000000u));
                exit(1);
            }
            loop_once(r, 10000000);
        }
    }
}

/* One message per client, waited for: every route is in place before the
 * first phase (in cluster mode a device's JetStream consumer is made after it
 * connects, asynchronously; until then its messages wait in the stream). */
static void run_prime(lg_run *r)
{
    /* Without acks (core NATS: at most once), a message published before the
     * recipient's SUB reached the sender's server over the cluster's routes is
     * dropped: give the interest time to spread, and do not wait long for one
     * that was dropped anyway. */
    if (!r->drv->acks) run_for(r, 500000000);
    uint64_t t0 = now_ns(), deadline = t0 + (r->drv->acks ? SETUP_TIMEOUT_NS : 10000000000u);
    for (uint32_t i = 0; i < r->ncl; i++) {
        if (send_one(r, &r->cl[i], t0)) do_flush(r, &r->cl[i]);
    }
    for (;;) {
        uint64_t out_n = 0;
        for (uint32_t i = 0; i < r->ncl; i++) out_n += r->cl[i].outstanding;
        if (!out_n) break;
        if (now_ns() > deadline || interrupted) {
            fprintf(stderr, "loadgen: prime: %llu of %u messages not through after %.0f s\n",
                    (unsigned long long)out_n, r->ncl, (double)(deadline - t0) / 1e9);
            if (r->drv->acks) exit(1);
            r->lost += out_n; /* their slots stay taken: a smaller window for those clients */
            break;
        }
        tick_all(r, 0, r->ncl, false);
        loop_once(r, 1000000);
    }
    tick_all(r, 0, r->ncl, true);
    fprintf(stderr, "loadgen: %s: one message per client through in %.2f s\n", r->drv->name,
            (double)(now_ns() - t0) / 1e9);
}

/* ---- phases ------------------------------------------------------------------------------------- */

typedef struct phase_result {
    const char *phase;
    double rate_target;    /* open loop: msgs/s asked for */
    double secs, msgs_per_s;
    uint64_t msgs;
    double srv_cpu_pct, srv_us_per_msg, lg_cpu_pct;
    double nats_cpu_pct, nats_us_per_msg; /* the nats-servers (--nats-pid), -1 without */
    double other_cpu_pct;  /* the rest of the machine: other work that disturbs the run */
    double other_unniced_pct; /* the same without niced work (which yields to ours) */
    uint64_t srv_rss_kib;
    double d50, d99, d999, a50, a99, a999;
    double lag50, lag99, turn50, turn99;
    uint64_t lost, skipped;
} phase_result;

/* Runs one phase: warmup, measurement window, drain. rate 0 = closed loop. */
static void run_phase(lg_run *r, phase_result *out, int window, double rate, double warm_s, double dur_s)
{
    uint32_t n = r->ncl;
    uint64_t t0 = now_ns();
    uint64_t meas_start = t0 + (uint64_t)(warm_s * 1e9), end = meas_start + (uint64_t)(dur_s * 1e9);
    uint64_t interval = rate > 0 ? (uint64_t)(1e9 * n / rate) : 0;
    if (rate > 0) {
        for (uint32_t i = 0; i < n; i++) r->cl[i].next_due_ns = t0 + (uint64_t)((double)interval * i / n);
    }
    r->dlv.n = r->ack.n = r->lag.n = r->turn.n = 0;
    r->woke_ns = 0;
    r->measuring = false;
    r->delivered_in_window = 0;
    uint64_t skipped0 = r->skipped, cpu0 = 0, ncpu0 = 0, unniced0 = 0, self0 = 0, busy0 = 0, tm0 = 0, last_tick = t0;
    uint64_t prev = t0, stall = 0; /* the longest time between two turns of the loop */
    for (uint64_t now; (now = now_ns()) < end && !interrupted;) {
        if (now - prev > stall) stall = now - prev;
        prev = now;
        if (!r->measuring && now >= meas_start) {
            r->measuring = true;
            r->meas_start_ns = tm0 = now;
            cpu0 = pids_cpu_us(r->server_pids, r->nserver_pids);
            ncpu0 = pids_cpu_us(r->nats_pids, r->nnats_pids);
            self0 = self_cpu_us();
            busy0 = machine_busy_us(true);
            unniced0 = machine_busy_us(false);
        }
        int64_t timeout = -1;
        for (uint32_t i = 0; i < n; i++) {
            lg_client *c = &r->cl[i];
            bool sent = false;
            uint64_t due[256]; /* open loop: the intended times of what this turn sends */
            unsigned ndue = 0;
            if (rate <= 0) {
                while (c->outstanding < (uint32_t)window && send_one(r, c, now)) sent = true;
            } else {
                while (c->next_due_ns <= now) {
                    if (c->outstanding < OPEN_LOOP_CAP && send_one(r, c, c->next_due_ns)) {
                        sent = true;
                        if (ndue < 256) due[ndue++] = c->next_due_ns;
                    } else {
                        r->skipped++;
                    }
                    c->next_due_ns += interval;
                }
                int64_t wait = (int64_t)(c->next_due_ns - now);
                if (timeout < 0 || wait < timeout) timeout = wait;
            }
            if (sent || c->dirty) do_flush(r, c);
            if (ndue && r->measuring) {
                uint64_t written = now_ns();
                for (unsigned k = 0; k < ndue; k++) sample_add(&r->lag, written - due[k]);
            }
        }
        if (now - last_tick >= TICK_NS) {
            tick_all(r, 0, n, false);
            last_tick = now;
        }
        uint64_t left = end - now;
        if (timeout < 0 || (uint64_t)timeout > left) timeout = (int64_t)(left < 10000000 ? left : 10000000);
        loop_defer(r, timeout, true);
    }
    for (uint32_t i = 0; i < n; i++)
        if (r->cl[i].dirty) do_flush(r, &r->cl[i]);
    uint64_t tm1 = now_ns(), cpu1 = pids_cpu_us(r->server_pids, r->nserver_pids), self1 = self_cpu_us();
    uint64_t ncpu1 = pids_cpu_us(r->nats_pids, r->nnats_pids);
    uint64_t busy1 = machine_busy_us(true), unniced1 = machine_busy_us(false);
    if (!r->measuring) tm0 = tm1; /* the warm-up outlasted the phase: nothing measured */
    if (stall > 100000000u)
        fprintf(stderr, "loadgen: warning: the loop stalled for %.2f s in this phase\n", (double)stall / 1e9);
    uint64_t msgs = r->delivered_in_window;
    r->measuring = false;
    /* drain: nothing new; wait for what is in flight, confirm everything */
    uint64_t dl = now_ns() + DRAIN_TIMEOUT_NS;
    for (;;) {
        uint64_t out_n = 0;
        for (uint32_t i = 0; i < n; i++) out_n += r->cl[i].outstanding;
        if (!out_n || now_ns() > dl || interrupted) {
            r->lost += out_n;
            out->lost = out_n;
            break;
        }
        tick_all(r, 0, n, false);
        loop_once(r, 1000000);
    }
    tick_all(r, 0, n, true);
    run_for(r, 100000000);

    double secs = (double)(tm1 - tm0) / 1e9;
    out->rate_target = rate;
    out->secs = secs;
    out->msgs = msgs;
    out->msgs_per_s = secs > 0 ? (double)msgs / secs : 0;
    bool srv = r->nserver_pids > 0, nats = r->nnats_pids > 0;
    out->srv_cpu_pct = secs > 0 && srv ? (double)(cpu1 - cpu0) / (secs * 1e4) : -1;
    out->srv_us_per_msg = msgs && srv ? (double)(cpu1 - cpu0) / (double)msgs : -1;
    out->nats_cpu_pct = secs > 0 && nats ? (double)(ncpu1 - ncpu0) / (secs * 1e4) : -1;
    out->nats_us_per_msg = msgs && nats ? (double)(ncpu1 - ncpu0) / (double)msgs : -1;
    out->lg_cpu_pct = secs > 0 ? (double)(self1 - self0) / (secs * 1e4) : -1;
    double other = (double)(busy1 - busy0) - (double)(cpu1 - cpu0) - (double)(ncpu1 - ncpu0) -
                   (double)(self1 - self0);
    out->other_cpu_pct = secs > 0 ? (other > 0 ? other : 0) / (secs * 1e4) : -1;
    other += (double)(unniced1 - unniced0) - (double)(busy1 - busy0);
    out->other_unniced_pct = secs > 0 ? (other > 0 ? other : 0) / (secs * 1e4) : -1;
    out->srv_rss_kib = pids_rss_kib(r->server_pids, r->nserver_pids);
    out->skipped = r->skipped - skipped0;
    percentiles(&r->dlv, &out->d50, &out->d99, &out->d999);
    percentiles(&r->ack, &out->a50, &out->a99, &out->a999);
    percentiles(&r->lag, &out->lag50, &out->lag99, NULL);
    percentiles(&r->turn, &out->turn50, &out->turn99, NULL);
}

static void print_phase(const lg_run *r, const phase_result *p, uint32_t pairs, int window)
{
    printf("%-5s %-6s %8.0f msgs/s  delivery p50/p99/p99.9 %7.0f/%7.0f/%7.0f us", r->drv->name,
           p->phase, p->msgs_per_s, p->d50, p->d99, p->d999);
    if (r->drv->acks) printf("  ack %7.0f/%7.0f/%7.0f us", p->a50, p->a99, p->a999);
    printf("  server %5.1f%% CPU %6.2f us/msg RSS %llu KiB", p->srv_cpu_pct, p->srv_us_per_msg,
           (unsigned long long)p->srv_rss_kib);
    if (r->nnats_pids) printf("  nats %5.1f%% CPU %6.2f us/msg", p->nats_cpu_pct, p->nats_us_per_msg);
    if (p->rate_target > 0)
        printf("  send lag p50/p99 %.0f/%.0f us, turn %.0f/%.0f us", p->lag50, p->lag99, p->turn50,
               p->turn99);
    printf("  loadgen %5.1f%% CPU  other %4.1f%% (not niced %4.1f%%)\n", p->lg_cpu_pct, p->other_cpu_pct,
           p->other_unniced_pct);
    printf("RESULT target=%s phase=%s pairs=%u window=%d size=%zu rate_target=%.0f secs=%.3f "
           "msgs=%llu msgs_per_s=%.0f dlv_p50_us=%.1f dlv_p99_us=%.1f dlv_p999_us=%.1f "
           "ack_p50_us=%.1f ack_p99_us=%.1f ack_p999_us=%.1f srv_cpu_pct=%.1f srv_us_per_msg=%.3f "
           "srv_rss_kib=%llu nats_cpu_pct=%.1f nats_us_per_msg=%.3f servers=%u lg_cpu_pct=%.1f "
           "other_cpu_pct=%.1f other_unniced_pct=%.1f lag_p50_us=%.1f lag_p99_us=%.1f "
           "turn_p50_us=%.1f turn_p99_us=%.1f lost=%llu skipped=%llu errors=%llu dups=%llu "
           "misrouted=%llu\n",
           r->drv->name, p->phase, pairs, window, r->o.payload, p->rate_target, p->secs,
           (unsigned long long)p->msgs, p->msgs_per_s, p->d50, p->d99, p->d999, p->a50, p->a99,
           p->a999, p->srv_cpu_pct, p->srv_us_per_msg, (unsigned long long)p->srv_rss_kib,
           p->nats_cpu_pct, p->nats_us_per_msg, r->o.nports, p->lg_cpu_pct, p->other_cpu_pct,
           p->other_unniced_pct, p->lag50, p->lag99, p->turn50, p->turn99,
           (unsigned long long)p->lost, (unsigned long long)p->skipped,
           (unsigned long long)r->errors, (unsigned long long)r->dups,
           (unsigned long long)r->misrouted);
    fflush(stdout);
}

/* ---- idle connections ------------------------------------------------------------------------ */

static void run_idle(lg_run *r, uint32_t warm, uint32_t idle, double settle_s)
{
    pid_t pid = r->nserver_pids ? r->server_pids[0] : 0;
    uint64_t fresh = server_rss_kib(pid);
    uint64_t t0 = now_ns();
    setup(r, 0, warm, 1, false);
    run_for(r, (uint64_t)(settle_s * 1e9));
    uint64_t rss0 = server_rss_kib(pid), maps0 = server_maps(pid);
    for (uint32_t from = warm; from < warm + idle; from += IDLE_BATCH) {
        uint32_t to = from + IDLE_BATCH < warm + idle ? from + IDLE_BATCH : warm + idle;
        setup(r, from, to, 1, false);
    }
    double setup_s = (double)(now_ns() - t0) / 1e9;
    run_for(r, (uint64_t)(settle_s * 1e9));
    uint64_t rss1 = server_rss_kib(pid), maps1 = server_maps(pid);
    double per = idle ? (double)(rss1 - rss0) / idle : 0;
    double maps_per = idle ? ((double)maps1 - (double)maps0) / idle : 0;
    printf("%-5s idle   %u connections (+%u warm) set up in %.1f s: server RSS %llu -> %llu KiB, "
           "%.2f KiB and %.2f memory mappings per connection (fresh server %llu KiB)\n",
           r->drv->name, idle, warm, setup_s, (unsigned long long)rss0, (unsigned long long)rss1, per,
           maps_per, (unsigned long long)fresh);
    printf("RESULT target=%s phase=idle conns=%u warm=%u rss_fresh_kib=%llu rss_before_kib=%llu "
           "rss_after_kib=%llu kib_per_conn=%.2f maps_per_conn=%.2f setup_s=%.1f errors=%llu\n",
           r->drv->name, idle, warm, (unsigned long long)fresh, (unsigned long long)rss0,
           (unsigned long long)rss1, per, maps_per, setup_s, (unsigned long long)r->errors);
    fflush(stdout);
}

/* ---- main ----------------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static char own_home[] = "/dev/shm/loadgen-XXXXXX"; /* the client homes, when we made them */
static bool own_home_made;

/* Runs at every exit, the failed ones included: no client homes left behind. */
static void remove_own_home(void)
{
    if (own_home_made) nftw(own_home, rm_entry, 64, FTW_DEPTH | FTW_PHYS);
    own_home_made = false;
}

/* Splits a comma-separated option value in place (argv is ours to modify). */
static uint32_t split_list(char *arg, char *out[LG_PORTS_MAX], const char *opt)
{
    uint32_t n = 0;
    for (char *save = NULL, *t = strtok_r(arg, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (n == LG_PORTS_MAX) die("too many values (16 at most) in ", opt);
        out[n++] = t;
    }
    return n;
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: loadgen --target pt|raw|nats|mqtt|jetstream --port PORT[,PORT...] [OPTION]...\n"
            "  --port P1,P2,...    several servers (cluster nodes): client i connects to P(i mod n)\n"
            "  --host H            server address (127.0.0.1)\n"
            "  --server-pid PID,.. read the servers' CPU time (summed) and RSS from /proc\n"
            "  --nats-pid PID,...  read the nats-servers' CPU time too (summed, reported apart)\n"
            "  --fingerprint FP,.. pt: the server keys, one per port (the clients pin it and use IK)\n"
            "  --home DIR          pt: parent of the client homes (default: a new dir in /dev/shm)\n"
            "  --pairs N           client pairs (100)\n"
            "  --size N            payload bytes (100, at least %d)\n"
            "  --window N          closed loop: messages in flight per client (8)\n"
            "  --rate R            open loop only, R msgs/s in total\n"
            "  --half              closed loop, then open loop at half its rate\n"
            "  --prime             after setup, one message per client, waited for (routes ready)\n"
            "  --warmup S          seconds before each measurement (1)\n"
            "  --duration S        seconds measured per phase (5)\n"
            "  --confirm N         pt: confirm every N deliveries or 20 ms; 0 (default): what\n"
            "                      each read delivered, at once, as libpacktrack does\n"
            "  --idle N            no load: N idle connections, report the RSS growth\n"
            "  --idle-warm N       connections made before the RSS baseline (100)\n"
            "  --hold S            idle: keep the connections S seconds more at the end\n",
            LG_HDR);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"target", required_argument, NULL, 't'},   {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},     {"server-pid", required_argument, NULL, 'P'},
        {"fingerprint", required_argument, NULL, 'f'}, {"home", required_argument, NULL, 'd'},
        {"pairs", required_argument, NULL, 'n'},    {"size", required_argument, NULL, 's'},
        {"window", required_argument, NULL, 'w'},   {"rate", required_argument, NULL, 'r'},
        {"half", no_argument, NULL, '2'},           {"warmup", required_argument, NULL, 'W'},
        {"duration", required_argument, NULL, 'D'}, {"confirm", required_argument, NULL, 'c'},
        {"idle", required_argument, NULL, 'i'},     {"idle-warm", required_argument, NULL, 'I'},
        {"hold", required_argument, NULL, 'L'},     {"help", no_argument, NULL, 'h'},
        {"nats-pid", required_argument, NULL, 'N'}, {"prime", no_argument, NULL, 'R'},
        {NULL, 0, NULL, 0},
    };
    lg_run *r = calloc(1, sizeof *r);
    if (!r) return 1;
    r->o = (lg_opts){.host = "127.0.0.1", .payload = 100, .confirm_batch = 0};
    const char *target = NULL;
    unsigned pairs = 100, idle = 0, idle_warm = 100;
    int window = 8, o;
    double rate = 0, warm = 1, dur = 5, hold = 0;
    bool half = false, prime = false;
    char *list[LG_PORTS_MAX] = {0};
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 't': target = optarg; break;
        case 'H': r->o.host = optarg; break;
        case 'p':
            r->o.nports = split_list(optarg, list, "--port");
            for (uint32_t i = 0; i < r->o.nports; i++) r->o.ports[i] = (uint16_t)atoi(list[i]);
            break;
        case 'P':
            r->nserver_pids = split_list(optarg, list, "--server-pid");
            for (uint32_t i = 0; i < r->nserver_pids; i++) r->server_pids[i] = (pid_t)atoi(list[i]);
            break;
        case 'N':
            r->nnats_pids = split_list(optarg, list, "--nats-pid");
            for (uint32_t i = 0; i < r->nnats_pids; i++) r->nats_pids[i] = (pid_t)atoi(list[i]);
            break;
        case 'f':
            r->o.nfingerprints = split_list(optarg, list, "--fingerprint");
            memcpy(r->o.fingerprints, list, sizeof list);
            break;
        case 'd': r->o.home_dir = optarg; break;
        case 'n': pairs = (unsigned)atoi(optarg); break;
        case 's': r->o.payload = (size_t)atoi(optarg); break;
        case 'w': window = atoi(optarg); break;
        case 'r': rate = atof(optarg); break;
        case '2': half = true; break;
        case 'R': prime = true; break;
        case 'W': warm = atof(optarg); break;
        case 'D': dur = atof(optarg); break;
        case 'c':
            if ((r->o.confirm_batch = atoi(optarg)) < 0) {
                fprintf(stderr, "loadgen: --confirm wants a count >= 0\n");
                return 2;
            }
            break;
        case 'i': idle = (unsigned)atoi(optarg); break;
        case 'I': idle_warm = (unsigned)atoi(optarg); break;
        case 'L': hold = atof(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    bool ports_ok = r->o.nports > 0;
    for (uint32_t i = 0; i < r->o.nports; i++) ports_ok = ports_ok && r->o.ports[i] > 0;
    if (!target || !ports_ok) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(target, "pt")) r->drv = &lg_driver_pt;
    else if (!strcmp(target, "raw")) r->drv = &lg_driver_raw;
    else if (!strcmp(target, "nats")) r->drv = &lg_driver_nats;
    else if (!strcmp(target, "mqtt")) r->drv = &lg_driver_mqtt;
#ifdef LG_HAVE_JETSTREAM
    else if (!strcmp(target, "jetstream")) r->drv = &lg_driver_jetstream;
#endif
    else die("unknown target (pt, raw, nats, mqtt or jetstream with libnats): ", target);
    if (r->o.nfingerprints && r->o.nfingerprints != r->o.nports) die("--fingerprint: give one per port", "");
    if (r->o.payload < LG_HDR || r->o.payload > LG_PAYLOAD_MAX) die("--size out of range", "");
    if (window < 1 || window > LG_SLOTS / 2) die("--window out of range", "");
    if (pairs < 1 || pairs > 50000 || idle > 100000) die("--pairs or --idle out of range", "");
    if (r->drv->acks && !strcmp(target, "mqtt") && window > 20)
        fprintf(stderr, "loadgen: note: mosquitto sends at most 20 QoS 1 messages in flight per client\n");

    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_sigint);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (!r->o.home_dir) {
        if (!mkdtemp(own_home)) die("cannot create ", own_home);
        r->o.home_dir = own_home;
        own_home_made = true;
        atexit(remove_own_home);
    }
    pt_log_set_level(PT_LOG_WARN);
    r->cap = idle ? idle + idle_warm : 2 * pairs;
    if (!(r->cl = calloc(r->cap, sizeof *r->cl))) die("out of memory", "");
    if ((r->ep = epoll_create1(EPOLL_CLOEXEC)) < 0) die("epoll_create1 failed", "");
    if (r->drv->init(r) != 0) die("init failed: ", r->drv->name);

    if (idle) {
        run_idle(r, idle_warm, idle, dur < 2 ? dur : 2);
        if (hold > 0) run_for(r, (uint64_t)(hold * 1e9)); /* for a look at /proc/PID from outside */
    } else {
        uint64_t t = now_ns();
        setup(r, 0, 2 * pairs, r->drv->stages, true);
        fprintf(stderr, "loadgen: %s: %u clients ready in %.2f s\n", r->drv->name, 2 * pairs,
                (double)(now_ns() - t) / 1e9);
        if (prime) run_prime(r);
        phase_result p = {.phase = rate > 0 ? "open" : "closed"};
        run_phase(r, &p, window, rate, warm, dur);
        print_phase(r, &p, pairs, window);
        if (half && rate <= 0 && p.msgs_per_s > 0 && !interrupted) {
            phase_result h = {.phase = "half"};
            run_phase(r, &h, window, p.msgs_per_s / 2, warm, dur);
            print_phase(r, &h, pairs, window);
        }
    }
    for (uint32_t i = 0; i < r->ncl; i++) {
        lg_client *c = &r->cl[i];
        if (c->fd >= 0) epoll_ctl(r->ep, EPOLL_CTL_DEL, c->fd, NULL);
        if (r->drv->close) r->drv->close(r, c);
        if (c->fd >= 0) close(c->fd);
        free(c->slots);
    }
    close(r->ep);
    remove_own_home();
    int rc = r->errors || r->misrouted ? 3 : 0;
    if (rc) fprintf(stderr, "loadgen: %llu errors (last: %s), %llu misrouted\n",
                    (unsigned long long)r->errors, r->last_error ? r->last_error : "-",
                    (unsigned long long)r->misrouted);
    free(r->cl);
    free(r->dlv.v);
    free(r->lag.v);
    free(r->turn.v);
    free(r->ack.v);
    free(r);
    return rc;
}
