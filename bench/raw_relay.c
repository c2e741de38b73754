/*
 * bench/raw_relay - the raw ceiling of issue 3's server-load benchmark: the least
 * a relay can do per message on this machine. One thread, one epoll set, plain
 * TCP. A frame is a u32 little-endian length and that many bytes. A client's
 * first frame is "HELO" + u32 index; the relay answers "OK!!" and from then on
 * copies every frame the client sends, unchanged, to the client whose index is
 * its own ^ 1. Per readable socket: one read, the frames routed into the
 * partner's buffer, one write of that buffer. No crypto, no acks, no disk.
 *
 * Usage: raw_relay --listen HOST:PORT [--ready-file PATH]
 * PORT 0 picks a free port; the ready file gets "HOST:PORT\n" once listening.
 * SIGTERM or SIGINT stop it.
 */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define FRAME_MAX 65536
#define MAX_INDEX (1u << 20)

typedef struct conn {
    int fd;
    int64_t idx;          /* -1 until its hello */
    uint8_t *in, *out;    /* unparsed input; bytes the socket has not taken */
    size_t in_len, in_cap, out_len, out_cap;
    int want_out;         /* EPOLLOUT requested */
} conn;

static conn **by_index;   /* registered clients */
static size_t nindex;
static int ep;
static volatile sig_atomic_t stop;

static void on_stop(int sig)
{
    (void)sig;
    stop = 1;
}

static uint32_t get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int reserve(uint8_t **b, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 16384;
    while (nc < need) nc *= 2;
    uint8_t *n = realloc(*b, nc);
    if (!n) return -1;
    *b = n;
    *cap = nc;
    return 0;
}

static void conn_free(conn *c)
{
    if (c->idx >= 0 && (size_t)c->idx < nindex && by_index[c->idx] == c) by_index[c->idx] = NULL;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

/* Writes what c->out holds; asks for EPOLLOUT if the socket is full. */
static int conn_write(conn *c)
{
    size_t off = 0;
    while (off < c->out_len) {
        ssize_t n = send(c->fd, c->out + off, c->out_len - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            return -1;
        }
        off += (size_t)n;
    }
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
    int want = c->out_len > 0;
    if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want;
    }
    return 0;
}

static int queue_frame(conn *to, const uint8_t *frame, size_t len)
{
    if (reserve(&to->out, &to->out_cap, to->out_len + len)) return -1;
    memcpy(to->out + to->out_len, frame, len);
    to->out_len += len;
    return 0;
}

static int register_client(conn *c, uint32_t idx)
{
    if (idx >= MAX_INDEX || c->idx >= 0) return -1;
    if (idx >= nindex) {
        size_t n = nindex ? nindex : 1024;
        while (n <= idx) n *= 2;
        conn **b = realloc(by_index, n * sizeof *b);
        if (!b) return -1;
        memset(b + nindex, 0, (n - nindex) * sizeof *b);
        by_index = b;
        nindex = n;
    }
    by_index[idx] = c;
    c->idx = idx;
    static const uint8_t ok[8] = {4, 0, 0, 0, 'O', 'K', '!', '!'};
    return queue_frame(c, ok, sizeof ok) || conn_write(c);
}

/* One read; routes every complete frame; one write to the partner. */
static int conn_read(conn *c)
{
    if (reserve(&c->in, &c->in_cap, c->in_len + 65536)) return -1;
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n == 0) return -1;
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    c->in_len += (size_t)n;
    size_t off = 0;
    conn *to = NULL;
    while (c->in_len - off >= 4) {
        uint32_t len = get_u32le(c->in + off);
        if (len == 0 || len > FRAME_MAX) return -1;
        if (c->in_len - off - 4 < len) break;
        const uint8_t *f = c->in + off;
        if (c->idx < 0) {
            if (len != 8 || memcmp(f + 4, "HELO", 4) != 0 || register_client(c, get_u32le(f + 8)))
                return -1;
        } else {
            size_t p = (size_t)(c->idx ^ 1);
            to = p < nindex ? by_index[p] : NULL;
            if (to && queue_frame(to, f, 4 + (size_t)len)) return -1;
        }
        off += 4 + (size_t)len;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    /* a partner whose socket failed is closed by its own event, never from here */
    if (to && conn_write(to) != 0) to->out_len = 0;
    return 0;
}

int main(int argc, char **argv)
{
    const char *listen_at = NULL, *ready = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--listen")) listen_at = argv[i + 1];
        else if (!strcmp(argv[i], "--ready-file")) ready = argv[i + 1];
    }
    if (!listen_at || !strchr(listen_at, ':')) {
        fprintf(stderr, "usage: raw_relay --listen HOST:PORT [--ready-file PATH]\n");
        return 2;
    }
    char host[64];
    snprintf(host, sizeof host, "%.*s", (int)(strrchr(listen_at, ':') - listen_at), listen_at);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(strrchr(listen_at, ':') + 1))};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "raw_relay: '%s' is not an IPv4 address\n", host);
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 4096) != 0) {
        fprintf(stderr, "raw_relay: cannot listen on %s: %s\n", listen_at, strerror(errno));
        return 1;
    }
    socklen_t al = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &al);
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    if (ready) {
        char tmp[1024];
        snprintf(tmp, sizeof tmp, "%s.tmp", ready);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%s:%u\n", host, ntohs(a.sin_port)) < 0 || fclose(f) != 0 ||
            rename(tmp, ready) != 0) {
            fprintf(stderr, "raw_relay: cannot write %s\n", ready);
            return 1;
        }
    }
    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, 1000);
        if (n < 0 && errno != EINTR) break;
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    conn *nc = calloc(1, sizeof *nc);
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    nc->idx = -1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            int rc = 0;
            if (evs[i].events & EPOLLOUT) rc = conn_write(c);
            if (rc == 0 && evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) rc = conn_read(c);
            if (rc) conn_free(c);
        }
    }
    close(lfd);
    return 0;
}
