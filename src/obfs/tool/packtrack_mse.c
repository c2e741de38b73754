/*
 * packtrack-mse - runs an MSE handshake over TCP, then relays stdin to the peer
 * and the peer to stdout through the negotiated stream (RC4 or plaintext).
 *
 *   packtrack-mse connect HOST PORT --skey HEX [--crypto rc4|plain|both] [--timeout S]
 *   packtrack-mse listen PORT --skey HEX [--bind ADDR] [--crypto ...] [--timeout S]
 *
 * listen takes one connection; with PORT 0 it prints the port it got on stderr
 * ("packtrack-mse: listening on 127.0.0.1:PORT") before accepting. stdin is read
 * only once the handshake is done. EOF on stdin half-closes the connection; EOF
 * from the peer ends the program. Exit status 0 after a clean end, 1 on a usage
 * or socket error, 2 when the handshake fails. A tool for testing and debugging
 * interoperability, not a server: plain POSIX sockets and poll.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "obfs/pt_mse.h"

#define IO_CHUNK 16384

static const char USAGE[] =
    "usage: packtrack-mse connect HOST PORT --skey HEX [options]\n"
    "       packtrack-mse listen PORT --skey HEX [--bind ADDR] [options]\n"
    "Runs BitTorrent Message Stream Encryption (MSE/PHE v1.0) as initiator (connect)\n"
    "or receiver (listen), then relays stdin/stdout through the encrypted stream.\n"
    "options:\n"
    "  --skey HEX          the shared secret (BitTorrent: the 40-hex-digit info-hash)\n"
    "  --crypto rc4|plain|both  methods provided (connect) or accepted (listen);\n"
    "                      default both, RC4 preferred\n"
    "  --timeout SECONDS   handshake timeout (default 30)\n"
    "  --bind ADDR         listen address (default 127.0.0.1)\n"
    "  --help              this text\n";

typedef struct opts {
    bool listen;
    const char *host, *port, *bind;
    uint8_t skey[PT_MSE_SKEY_MAX];
    size_t skey_len;
    uint32_t crypto;
    unsigned timeout_s;
} opts;

/* Prints "packtrack-mse: what 'arg'" and the usage; returns the exit status. */
static int usage_error(const char *what, const char *arg)
{
    if (arg) fprintf(stderr, "packtrack-mse: %s '%s'\n%s", what, arg, USAGE);
    else fprintf(stderr, "packtrack-mse: %s\n%s", what, USAGE);
    return 1;
}

static int parse_args(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->crypto = PT_MSE_CRYPTO_RC4 | PT_MSE_CRYPTO_PLAIN;
    o->timeout_s = 30;
    o->bind = "127.0.0.1";
    int pos = 0;
    const char *skey = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(USAGE, stdout);
            exit(0);
        } else if (strcmp(a, "--skey") == 0 && has_val) {
            skey = argv[++i];
        } else if (strcmp(a, "--bind") == 0 && has_val) {
            o->bind = argv[++i];
        } else if (strcmp(a, "--timeout") == 0 && has_val) {
            char *end;
            long t = strtol(argv[++i], &end, 10);
            if (*end || t < 1 || t > 3600) return usage_error("bad --timeout", argv[i]);
            o->timeout_s = (unsigned)t;
        } else if (strcmp(a, "--crypto") == 0 && has_val) {
            const char *c = argv[++i];
            if (strcmp(c, "rc4") == 0) o->crypto = PT_MSE_CRYPTO_RC4;
            else if (strcmp(c, "plain") == 0) o->crypto = PT_MSE_CRYPTO_PLAIN;
            else if (strcmp(c, "both") == 0) o->crypto = PT_MSE_CRYPTO_RC4 | PT_MSE_CRYPTO_PLAIN;
            else return usage_error("bad --crypto (rc4, plain or both):", c);
        } else if (a[0] == '-') {
            return usage_error("unknown option or missing value:", a);
        } else if (pos == 0) {
            if (strcmp(a, "connect") == 0) o->listen = false;
            else if (strcmp(a, "listen") == 0) o->listen = true;
            else return usage_error("unknown command (connect or listen):", a);
            pos++;
        } else if (pos == 1 && !o->listen) {
            o->host = a;
            pos++;
        } else if ((pos == 1 && o->listen) || (pos == 2 && !o->listen)) {
            o->port = a;
            pos++;
        } else {
            return usage_error("unexpected argument", a);
        }
    }
    if (!o->port) return usage_error("missing command, host or port", NULL);
    if (!skey) return usage_error("--skey is required", NULL);
    size_t hl = strlen(skey);
    if (hl == 0 || hl % 2 || hl / 2 > PT_MSE_SKEY_MAX || pt_hex_decode(o->skey, hl / 2, skey) != 0)
        return usage_error("bad --skey (1 to 64 bytes in hex):", skey);
    o->skey_len = hl / 2;
    return 0;
}

static int open_socket(const opts *o)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (o->listen) hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(o->listen ? o->bind : o->host, o->port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "packtrack-mse: %s: %s\n", o->listen ? o->bind : o->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) continue;
        int one = 1;
        if (o->listen) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        int ok = o->listen ? bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1) == 0
                           : connect(fd, ai->ai_addr, ai->ai_addrlen) == 0;
        if (!ok) {
            fprintf(stderr, "packtrack-mse: %s %s: %s\n", o->listen ? "listen" : "connect",
                    o->port, strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0 || !o->listen) return fd;

    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        fprintf(stderr, "packtrack-mse: listening on %s:%s\n", host, serv);
    int c = accept(fd, NULL, NULL);
    if (c < 0) fprintf(stderr, "packtrack-mse: accept: %s\n", strerror(errno));
    close(fd);
    return c;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Handshake, then relay. Returns the exit status. */
static int run(const opts *o, int sock)
{
    const pt_env *env = pt_env_default();
    pt_mse_skey sk = {o->skey, o->skey_len};
    pt_mse_config cfg;
    pt_mse_config_init(&cfg, !o->listen);
    cfg.skeys = &sk;
    cfg.nskeys = 1;
    cfg.crypto = o->crypto;
    cfg.timeout_ms = o->timeout_s * 1000u;
    cfg.dh_timeout_ms = cfg.timeout_ms;
    int err = 0, status = 1;
    pt_mse *m = pt_mse_new(env, &cfg, &err);
    if (!m) {
        fprintf(stderr, "packtrack-mse: %s\n", pt_strerror(err));
        return 1;
    }
    pt_buf out, payload;
    pt_buf_init(&out);
    pt_buf_init(&payload);
    uint8_t buf[IO_CHUNK];
    bool stdin_open = true;
    int rc = pt_mse_start(m, &out);
    for (;;) {
        if (rc < 0) {
            fprintf(stderr, "packtrack-mse: handshake failed: %s (%s)\n", pt_strerror(rc),
                    pt_mse_reason_name(pt_mse_failure(m)));
            status = 2;
            break;
        }
        if (out.len && write_all(sock, out.data, out.len) != 0) {
            fprintf(stderr, "packtrack-mse: send: %s\n", strerror(errno));
            break;
        }
        pt_buf_reset(&out);
        if (payload.len && write_all(STDOUT_FILENO, payload.data, payload.len) != 0) break;
        pt_buf_reset(&payload);
        bool done = pt_mse_done(m);
        struct pollfd pf[2] = {{.fd = sock, .events = POLLIN},
                               {.fd = STDIN_FILENO, .events = POLLIN}};
        int timeout = -1;
        if (!done) {
            uint64_t now = pt_env_mono_ms(env), dl = pt_mse_deadline_ms(m);
            timeout = dl <= now ? 0 : (int)(dl - now);
        }
        int n = poll(pf, done && stdin_open ? 2 : 1, timeout);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        if (!done && (rc = pt_mse_check_timeout(m)) < 0) continue;
        if (pf[0].revents) {
            ssize_t got = read(sock, buf, sizeof buf);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                if (!done) {
                    fprintf(stderr, "packtrack-mse: peer closed during the handshake (%s)\n",
                            got < 0 ? strerror(errno) : "EOF");
                    status = 2;
                } else {
                    status = 0;
                }
                break;
            }
            rc = pt_mse_input(m, buf, (size_t)got, &out, &payload);
            if (rc == PT_MSE_DONE && !done)
                fprintf(stderr, "packtrack-mse: handshake done, %s\n",
                        pt_mse_selected(m) == PT_MSE_CRYPTO_RC4 ? "rc4" : "plaintext");
            continue;
        }
        if (done && stdin_open && pf[1].revents) {
            ssize_t got = read(STDIN_FILENO, buf, sizeof buf);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                stdin_open = false;
                shutdown(sock, SHUT_WR);
                continue;
            }
            rc = pt_mse_seal(m, &out, buf, (size_t)got);
        }
    }
    pt_buf_free(&out);
    pt_buf_free(&payload);
    pt_mse_free(m);
    return status;
}

int main(int argc, char **argv)
{
    opts o;
    if (argc < 2) return usage_error("missing command", NULL);
    if (parse_args(argc, argv, &o) != 0) return 1;
    if (pt_init() != 0) {
        fprintf(stderr, "packtrack-mse: crypto library initialisation failed\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN); /* a closed peer is a write error, not a kill */
    int sock = open_socket(&o);
    if (sock < 0) return 1;
    int status = run(&o, sock);
    close(sock);
    return status;
}
