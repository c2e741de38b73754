/* bench/loadgen: plain TCP sockets and buffers for the peers' drivers. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lg.h"

int lg_tcp_connect(const char *host, uint16_t port)
{
    char ps[8];
    snprintf(ps, sizeof ps, "%u", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, ps, &hints, &res) != 0) return -1;
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd; /* blocking until the caller makes it non-blocking */
}

static int grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 4096;
    while (nc < need) nc *= 2;
    uint8_t *b = realloc(*buf, nc);
    if (!b) return -1;
    *buf = b;
    *cap = nc;
    return 0;
}

int lg_io_append(lg_io *io, const void *p, size_t n)
{
    if (grow(&io->out, &io->out_cap, io->out_len + n)) return -1;
    memcpy(io->out + io->out_len, p, n);
    io->out_len += n;
    return 0;
}

int lg_io_read(lg_io *io, int fd)
{
    if (grow(&io->in, &io->in_cap, io->in_len + 65536)) return -1;
    ssize_t n = recv(fd, io->in + io->in_len, io->in_cap - io->in_len, 0);
    if (n == 0) return -1;
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    io->in_len += (size_t)n;
    return 0;
}

int lg_io_flush(lg_io *io, lg_client *c)
{
    size_t off = 0;
    while (off < io->out_len) {
        ssize_t n = send(c->fd, io->out + off, io->out_len - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            return -1;
        }
        off += (size_t)n;
    }
    memmove(io->out, io->out + off, io->out_len - off);
    io->out_len -= off;
    c->want_out = io->out_len > 0;
    return 0;
}

void lg_io_consume_in(lg_io *io, size_t n)
{
    memmove(io->in, io->in + n, io->in_len - n);
    io->in_len -= n;
}

void lg_io_free(lg_io *io)
{
    free(io->in);
    free(io->out);
    memset(io, 0, sizeof *io);
}
