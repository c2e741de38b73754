/*
 * bench_obfs_server - connects per second to a real packtrackd through each
 * obfuscation mode, with the plain channel measured in the same run as the
 * baseline. One connect is: TCP, the obfuscation handshake (none, MSE, or the
 * pt-obfs flight), the channel's Noise IK handshake (the key is pinned by a first
 * XX connect) and one ping answered. Client and server share the machine, so a
 * figure is client + server CPU plus loopback latency.
 *
 *   bench_obfs_server [--quick] [--reps N] [--packtrackd PATH]
 *
 * The three servers are started here (PATH, else $PT_PACKTRACKD, else
 * ./build/packtrackd) and stopped at the end. Each figure is the median of --reps
 * runs (default 5), the modes interleaved run by run.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/pt_client.h"

#define NK "6a1f0c9e3b5d7a2c4e6f8091a3b5c7d9e1f20314253647586970a1b2c3d4e5f6"

typedef struct mode {
    const char *name, *server_mode, *client_mode;
    int pid;
    uint16_t port;
    char dir[64];
    pt_client *cl;
    double rate[32];
} mode;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(const char *what)
{
    fprintf(stderr, "bench_obfs_server: %s\n", what);
    exit(1);
}

static void start_server(mode *m, const char *bin)
{
    snprintf(m->dir, sizeof m->dir, "/tmp/pt-bench-obfs-XXXXXX");
    if (!mkdtemp(m->dir)) die("mkdtemp");
    char ready[128], data[128];
    snprintf(ready, sizeof ready, "%s/ready", m->dir);
    snprintf(data, sizeof data, "%s/data", m->dir);
    const char *argv[] = {bin, "--listen", "127.0.0.1:0", "--data", data, "--ready-file", ready,
                          "--log-level", "error", "--rate-limit", "10000000", "--ip-rate-limit",
                          "100000000", "--ip-conn-rate", "1000000", "--obfuscation",
                          m->server_mode, "--network-key", NK, NULL};
    if (!m->server_mode) argv[15] = NULL;
    int pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    m->pid = pid;
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(ready, "r");
        unsigned p = 0;
        if (f) {
            char line[128];
            if (fgets(line, sizeof line, f) && sscanf(strrchr(line, ':') + 1, "%u", &p) == 1) {
                fclose(f);
                m->port = (uint16_t)p;
                return;
            }
            fclose(f);
        }
        usleep(10000);
    }
    die("packtrackd did not start");
}

static void on_event(void *ud, const pt_sess_event *ev)
{
    if (ev->type == PT_SESS_EV_PONG) (*(int *)ud)++;
}

static void connect_once(mode *m)
{
    if (pt_client_connect(m->cl, "127.0.0.1", m->port) != 0) die("connect failed");
    int pongs = 0;
    if (pt_client_ping(m->cl, 1, NULL) != 0) die("ping");
    for (int i = 0; i < 1000 && !pongs; i++)
        if (pt_client_pump(m->cl, 10, on_event, &pongs) != 0) die("pump");
    if (!pongs) die("no pong");
    pt_client_drop(m->cl);
}

int main(int argc, char **argv)
{
    int reps = 5, n = 400;
    const char *bin = getenv("PT_PACKTRACKD") ? getenv("PT_PACKTRACKD") : "./build/packtrackd";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) n = 40, reps = 3;
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--packtrackd") == 0 && i + 1 < argc) bin = argv[++i];
        else die("usage: bench_obfs_server [--quick] [--reps N] [--packtrackd PATH]");
    }
    if (reps < 1 || reps > 31) die("--reps takes 1..31");
    if (pt_init() != 0) die("pt_init");
    pt_log_set_level(PT_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    mode modes[] = {{.name = "plain channel (baseline)", .server_mode = NULL, .client_mode = NULL},
                    {.name = "MSE (require)", .server_mode = "require", .client_mode = "mse"},
                    {.name = "pt-obfs", .server_mode = "pt-obfs", .client_mode = "pt-obfs"}};
    size_t nm = sizeof modes / sizeof modes[0];
    for (size_t i = 0; i < nm; i++) {
        start_server(&modes[i], bin);
        char home[128];
        snprintf(home, sizeof home, "%s/client", modes[i].dir);
        pt_client_config cfg = {.home = home, .obfuscation = modes[i].client_mode,
                                .network_key = modes[i].client_mode ? NK : NULL};
        if (!(modes[i].cl = pt_client_new(&cfg, NULL))) die("client");
        connect_once(&modes[i]); /* XX once: the key is pinned, IK from now on */
    }
    for (int r = 0; r < reps; r++) {
        for (size_t i = 0; i < nm; i++) {
            double t0 = now_s();
            for (int k = 0; k < n; k++) connect_once(&modes[i]);
            modes[i].rate[r] = n / (now_s() - t0);
        }
    }
    printf("bench_obfs_server: median of %d runs of %d connects each (TCP + obfuscation + Noise IK + ping)\n\n",
           reps, n);
    printf("%-30s %12s %10s\n", "mode", "connects/s", "ms each");
    for (size_t i = 0; i < nm; i++) {
        qsort(modes[i].rate, (size_t)reps, sizeof(double), cmp_double);
        double med = reps % 2 ? modes[i].rate[reps / 2]
                              : (modes[i].rate[reps / 2 - 1] + modes[i].rate[reps / 2]) / 2;
        printf("%-30s %12.0f %10.3f\n", modes[i].name, med, 1000.0 / med);
        pt_client_free(modes[i].cl);
        kill(modes[i].pid, SIGTERM);
        waitpid(modes[i].pid, NULL, 0);
    }
    return 0;
}
