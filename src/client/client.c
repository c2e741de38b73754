#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client/pt_client.h"
#include "client/pt_obfs_client.h"
#include "crypto/pt_crypto.h"
#include "store/pt_keyfile.h"

struct pt_client {
    char home[1024];
    uint8_t suites[PT_CHAN_MAX_SUITES];
    size_t nsuites;
    bool no_ik, used_ik;
    int timeout_ms;
    uint8_t fp_key[32];        /* from the configured fingerprint */
    bool has_fp;
    uint8_t sk[32], pk[32];    /* device key */
    uint8_t server_pk[32];     /* of the current connection */
    int fd;
    pt_chan *chan;
    pt_sess *sess;
    pt_buf out;                /* sealed bytes not yet written */
    pt_sess_event_cb cb;       /* during pump */
    void *ud;
    size_t delivered;          /* events delivered during this pump */
    pt_obfsc_settings obfs_set; /* obfuscation mode and key (obfs_client.c) */
    pt_obfsc *obfs;            /* the layer on this connection, NULL when plain */
    bool obfs_failed;          /* the last connect failed in the obfuscation handshake */
};

/* Bytes queued for the socket, sealed or not. */
static size_t out_pending(const pt_client *c)
{
    return c->out.len + (c->obfs ? pt_obfsc_pending(c->obfs) : 0);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

pt_client *pt_client_new(const pt_client_config *cfg, int *err)
{
    int rc = PT_ERR_NOMEM;
    pt_client *c = calloc(1, sizeof *c);
    if (!c) goto fail;
    c->fd = -1;
    pt_buf_init(&c->out);
    if (cfg->home) {
        snprintf(c->home, sizeof c->home, "%s", cfg->home);
    } else {
        const char *h = getenv("HOME");
        snprintf(c->home, sizeof c->home, "%s/.packtrack", h ? h : ".");
    }
    rc = PT_ERR_INVAL;
    if (cfg->suites) {
        if (cfg->nsuites == 0 || cfg->nsuites > PT_CHAN_MAX_SUITES) goto fail;
        memcpy(c->suites, cfg->suites, cfg->nsuites);
        c->nsuites = cfg->nsuites;
    } else {
        c->nsuites = pt_suite_defaults(false, c->suites);
    }
    if (cfg->server_fingerprint) {
        if (pt_fingerprint_parse(c->fp_key, cfg->server_fingerprint) != 0) {
            pt_log_error("server fingerprint '%s' is not 64 hex digits", cfg->server_fingerprint);
            goto fail;
        }
        c->has_fp = true;
    }
    if ((rc = pt_obfsc_settings_parse(&c->obfs_set, cfg->obfuscation, cfg->network_key,
                                      cfg->obfs_server_id)) != 0)
        goto fail;
    c->no_ik = cfg->no_ik;
    c->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : PT_CLIENT_CONNECT_TIMEOUT_MS;
    rc = PT_ERR_IO;
    if (mkdir(c->home, 0700) != 0 && errno != EEXIST) {
        pt_log_error("cannot create %s: %s", c->home, strerror(errno));
        goto fail;
    }
    if (cfg->device_sk) { /* the caller keeps the key (sealed in its own store) */
        memcpy(c->sk, cfg->device_sk, 32);
        if ((rc = pt_x25519_base(c->pk, c->sk)) != 0) goto fail;
    } else {
        char path[1100];
        snprintf(path, sizeof path, "%s/device.key", c->home);
        if ((rc = pt_keyfile_load_or_create(path, c->sk, c->pk)) != 0) goto fail;
    }
    uint64_t sid;
    pt_random(&sid, sizeof sid);
    pt_sess_config sc = {.role = PT_SESS_CLIENT, .session_id = sid};
    rc = PT_ERR_NOMEM;
    if (!(c->sess = pt_sess_new(pt_env_default(), &sc))) goto fail;
    if (err) *err = 0;
    return c;
fail:
    pt_client_free(c);
    if (err) *err = rc;
    return NULL;
}

static int write_some(pt_client *c);
static int emit_record(void *ud, const uint8_t *rec, size_t len);

void pt_client_free(pt_client *c)
{
    if (!c) return;
    if (pt_client_connected(c) && pt_sess_acks_pending(c->sess)) {
        /* the acknowledgements that wait go now (best effort, not waited for): the
         * server would otherwise send those messages again on the next connection */
        pt_sess_acks_now(c->sess);
        if (pt_sess_flush(c->sess, emit_record, c) == 0) (void)write_some(c);
    }
    pt_client_drop(c);
    pt_sess_free(c->sess);
    pt_buf_free(&c->out);
    pt_wipe(c->sk, sizeof c->sk);
    pt_wipe(&c->obfs_set, sizeof c->obfs_set);
    free(c);
}

void pt_client_drop(pt_client *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    pt_chan_free(c->chan);
    c->chan = NULL;
    pt_obfsc_free(c->obfs);
    c->obfs = NULL;
    pt_buf_reset(&c->out);
}

bool pt_client_connected(const pt_client *c) { return c->fd >= 0 && c->chan && pt_chan_established(c->chan); }
int pt_client_fd(const pt_client *c) { return c->fd; }
int pt_client_suite(const pt_client *c) { return c->chan ? pt_chan_suite(c->chan) : 0; }
const uint8_t *pt_client_server_key(const pt_client *c) { return c->server_pk; }
const uint8_t *pt_client_device_key(const pt_client *c) { return c->pk; }
pt_sess *pt_client_session(pt_client *c) { return c->sess; }
bool pt_client_used_ik(const pt_client *c) { return c->used_ik; }

/* ---- known_servers: "HOST:PORT HEXKEY" lines ------------------------------------------ */

bool pt_known_servers_find(const char *buf, size_t len, const char *hostport,
                           uint8_t key[static 32])
{
    size_t hplen = strlen(hostport);
    for (size_t at = 0; at < len;) {
        const char *line = buf + at;
        const char *nl = memchr(line, '\n', len - at);
        size_t n = nl ? (size_t)(nl - line) : len - at;
        at += n + 1;
        if (n && line[n - 1] == '\r') n--;
        /* HOSTPORT, one space, 64 hex digits and nothing else */
        if (n != hplen + 1 + 64 || memcmp(line, hostport, hplen) != 0 || line[hplen] != ' ')
            continue;
        char hex[65];
        memcpy(hex, line + hplen + 1, 64);
        hex[64] = 0;
        uint8_t k[32];
        if (pt_hex_decode(k, sizeof k, hex) != 0) continue;
        memcpy(key, k, 32);
        return true;
    }
    return false;
}

int pt_known_servers_lookup(const char *home, const char *hostport, uint8_t key[static 32])
{
    char path[1100];
    snprintf(path, sizeof path, "%s/known_servers", home);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        pt_log_error("%s: %s", path, strerror(errno));
        return PT_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        pt_log_error("%s: %s", path, strerror(errno));
        close(fd);
        return PT_ERR_IO;
    }
    if (st.st_size > PT_KNOWN_SERVERS_MAX) {
        pt_log_error("%s: over %d bytes: not a file of pinned keys", path, PT_KNOWN_SERVERS_MAX);
        close(fd);
        return PT_ERR_TOO_BIG;
    }
    size_t want = (size_t)st.st_size, n = 0;
    char *buf = malloc(want ? want : 1);
    int rc = buf ? 0 : PT_ERR_NOMEM;
    while (rc == 0 && n < want) {
        ssize_t r = read(fd, buf + n, want - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            pt_log_error("%s: %s", path, strerror(errno));
            rc = PT_ERR_IO;
        }
        if (r <= 0) break; /* shorter than it was: what is there */
        n += (size_t)r;
    }
    close(fd);
    if (rc == 0) rc = pt_known_servers_find(buf, n, hostport, key) ? 1 : 0;
    free(buf);
    return rc;
}

int pt_known_servers_line(char *out, size_t cap, const char *hostport, const uint8_t key[static 32])
{
    char hex[65];
    pt_hex_encode(hex, key, 32);
    int n = snprintf(out, cap, "%s %s\n", hostport, hex);
    if (n < 0 || (size_t)n >= cap || strpbrk(hostport, " \r\n") || !*hostport) return PT_ERR_INVAL;
    return n;
}

int pt_known_servers_add(const char *home, const char *hostport, const uint8_t key[static 32])
{
    char path[1100], line[400];
    snprintf(path, sizeof path, "%s/known_servers", home);
    int n = pt_known_servers_line(line + 1, sizeof line - 1, hostport, key);
    if (n < 0) return n;
    int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return PT_ERR_IO;
    /* a file edited by hand may end without a newline: the pin goes on a line of its own */
    struct stat st;
    char last = '\n';
    if (fstat(fd, &st) == 0 && st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) != 1)
        last = '\n';
    const char *from = last == '\n' ? line + 1 : line;
    line[0] = '\n';
    size_t len = (size_t)n + (last == '\n' ? 0 : 1);
    int rc = write(fd, from, len) == (ssize_t)len ? 0 : PT_ERR_IO; /* one write: whole lines */
    close(fd);
    return rc;
}

/* ---- I/O ------------------------------------------------------------------------------ */

static int tcp_connect(const char *host, uint16_t port, int timeout_ms)
{
    char ps[8];
    snprintf(ps, sizeof ps, "%u", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, ps, &hints, &res) != 0) return -1;
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
            close(fd);
            fd = -1;
            continue;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t el = sizeof err;
        if (poll(&p, 1, timeout_ms) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static int on_record(void *ud, const uint8_t *rec, size_t len);

static void on_event(void *ud, const pt_sess_event *ev)
{
    pt_client *c = ud;
    c->delivered++;
    if (c->cb) c->cb(c->ud, ev);
}

static int on_record(void *ud, const uint8_t *rec, size_t len)
{
    pt_client *c = ud;
    return pt_sess_input(c->sess, rec, len, on_event, c);
}

/* Writes as much of c->out as the socket takes now. */
static int write_some(pt_client *c)
{
    if (c->obfs) return pt_obfsc_write(c->obfs, c->fd, &c->out); /* obfs_client.c */
    while (c->out.len) {
        ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return 0;
            return PT_ERR_CLOSED;
        }
        pt_buf_consume(&c->out, (size_t)n);
    }
    return 0;
}

/* Reads what is available and feeds the channel. */
static int read_some(pt_client *c)
{
    uint8_t buf[65536];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n == 0) return PT_ERR_CLOSED;
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : PT_ERR_CLOSED;
    const uint8_t *data = buf;
    size_t len = (size_t)n;
    if (c->obfs) { /* obfs_client.c: unwrap before the channel */
        int rc = pt_obfsc_input(c->obfs, buf, (size_t)n, &data, &len);
        if (rc || len == 0) return rc;
    }
    return pt_chan_input(c->chan, data, len, &c->out, on_record, c);
}

static int emit_record(void *ud, const uint8_t *rec, size_t len)
{
    pt_client *c = ud;
    return pt_chan_seal(c->chan, &c->out, rec, len);
}

static int handshake_once(pt_client *c, const char *host, uint16_t port, const uint8_t *pin,
                          bool ik, bool obfs)
{
    int fd = tcp_connect(host, port, c->timeout_ms);
    if (fd < 0) {
        pt_log_warn("cannot connect to %s:%u", host, port);
        return PT_ERR_IO;
    }
    c->fd = fd;
    pt_chan_config cc = {.suites = c->suites, .nsuites = c->nsuites, .static_sk = c->sk,
                         .server_pk = pin, .use_ik = ik};
    int rc = 0;
    if (!(c->chan = pt_chan_new(pt_env_default(), &cc, &rc))) return rc;
    if ((rc = pt_chan_start(c->chan, &c->out)) != 0) return rc;
    if (obfs) { /* obfs_client.c: the hello becomes the layer's first payload */
        if (!(c->obfs = pt_obfsc_new(&c->obfs_set, c->timeout_ms, &rc))) return rc;
        if ((rc = pt_obfsc_start(c->obfs, &c->out)) != 0) return rc;
    }
    uint64_t deadline = now_ms() + (uint64_t)c->timeout_ms;
    while (!pt_chan_established(c->chan)) {
        if ((rc = write_some(c)) != 0) return rc;
        uint64_t t = now_ms();
        if (t >= deadline) return PT_ERR_TIMEOUT;
        struct pollfd p = {.fd = c->fd, .events = POLLIN | (out_pending(c) ? POLLOUT : 0)};
        if (poll(&p, 1, (int)(deadline - t)) < 0 && errno != EINTR) return PT_ERR_IO;
        if (p.revents & (POLLIN | POLLHUP | POLLERR) && (rc = read_some(c)) != 0) return rc;
    }
    memcpy(c->server_pk, pt_chan_remote_static(c->chan), 32);
    return write_some(c);
}

/* With obfuscation configured its handshake comes first; mse-prefer falls back
 * to the plain channel when that handshake (not the channel's) failed. */
static int handshake(pt_client *c, const char *host, uint16_t port, const uint8_t *pin, bool ik)
{
    int mode = c->obfs_set.mode;
    int rc = handshake_once(c, host, port, pin, ik, mode != PT_OBFSC_OFF);
    if (rc == 0 || !c->obfs || pt_obfsc_up(c->obfs)) return rc;
    c->obfs_failed = true;
    pt_log_error("%s handshake with %s:%u failed: %s", pt_obfsc_mode_name(mode), host, port,
                 rc == PT_ERR_CLOSED ? "the server closed the connection (wrong network key or "
                                       "server id, or the server does not take this mode)"
                 : rc == PT_ERR_TIMEOUT ? "no answer in time (wrong network key or clock, or the "
                                          "server does not take this mode)"
                                        : pt_strerror(rc));
    if (mode != PT_OBFSC_MSE_PREFER) return rc;
    pt_log_info("mse-prefer: trying %s:%u with the plain channel", host, port);
    pt_client_drop(c);
    c->obfs_failed = false;
    return handshake_once(c, host, port, pin, ik, false);
}

int pt_client_connect(pt_client *c, const char *host, uint16_t port)
{
    pt_client_drop(c);
    char hostport[300];
    snprintf(hostport, sizeof hostport, "%s:%u", host, port);
    uint8_t pinned[32];
    /* a file that cannot be read is not taken for one without a pin: that would trust
     * whatever key the server shows */
    int pin = c->has_fp ? 0 : pt_known_servers_lookup(c->home, hostport, pinned);
    if (pin < 0) return pin;
    bool stored = pin == 1, have_pin = stored;
    if (c->has_fp) {
        memcpy(pinned, c->fp_key, 32);
        have_pin = true;
    }
    int rc = PT_ERR_IO;
    c->used_ik = false;
    c->obfs_failed = false;
    if (have_pin && !c->no_ik) {
        rc = handshake(c, host, port, pinned, true);
        c->used_ik = rc == 0;
        if (rc) {
            pt_log_debug("IK handshake with %s failed (%s); trying XX", hostport, pt_strerror(rc));
            pt_client_drop(c);
        }
    }
    if (!c->used_ik && !c->obfs_failed) /* XX cannot help when the obfuscation failed */
        rc = handshake(c, host, port, have_pin ? pinned : NULL, false);
    if (rc == PT_ERR_KEY_MISMATCH) {
        char want[PT_FINGERPRINT_LEN], got[PT_FINGERPRINT_LEN];
        pt_fingerprint(want, pinned);
        const uint8_t *k = c->chan ? pt_chan_presented_static(c->chan) : NULL;
        if (k) pt_fingerprint(got, k);
        else snprintf(got, sizeof got, "?");
        pt_log_error("server %s presented key %s but %s is pinned: refusing", hostport, got, want);
    }
    if (rc) {
        pt_client_drop(c);
        return rc;
    }
    if (!stored && !c->has_fp && (rc = pt_known_servers_add(c->home, hostport, c->server_pk)) != 0) {
        pt_client_drop(c);
        return rc;
    }
    pt_sess_resume(c->sess);
    return 0;
}

int pt_client_send(pt_client *c, const uint8_t *body, size_t len, uint64_t *msg_id)
{
    return pt_sess_send(c->sess, body, len, false, msg_id);
}

int pt_client_ping(pt_client *c, int64_t ping_id, uint64_t *msg_id)
{
    return pt_sess_ping(c->sess, ping_id, msg_id);
}

int pt_client_flush(pt_client *c)
{
    if (!pt_client_connected(c)) return PT_ERR_CLOSED;
    int rc = pt_sess_flush(c->sess, emit_record, c);
    if (rc == 0) rc = write_some(c);
    if (rc) pt_client_drop(c);
    return rc;
}

int pt_client_read(pt_client *c, pt_sess_event_cb cb, void *ud)
{
    if (!pt_client_connected(c)) return PT_ERR_CLOSED;
    c->cb = cb;
    c->ud = ud;
    c->delivered = 0;
    int rc = read_some(c);
    c->cb = NULL;
    if (rc) pt_client_drop(c);
    return rc;
}

int pt_client_input(pt_client *c, pt_sess_event_cb cb, void *ud)
{
    int rc = pt_client_read(c, cb, ud);
    return rc ? rc : pt_client_flush(c); /* acks and replies it produced */
}

size_t pt_client_out_pending(const pt_client *c) { return out_pending(c); }

int pt_client_pump(pt_client *c, int timeout_ms, pt_sess_event_cb cb, void *ud)
{
    if (!pt_client_connected(c)) return PT_ERR_CLOSED;
    c->cb = cb;
    c->ud = ud;
    c->delivered = 0;
    uint64_t deadline = now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    int rc = 0;
    bool polled = false; /* a zero timeout still reads what is ready */
    for (;;) {
        if ((rc = pt_sess_flush(c->sess, emit_record, c)) != 0) break;
        if ((rc = write_some(c)) != 0) break;
        uint64_t t = now_ms();
        if (c->delivered && out_pending(c) == 0) break;
        if (t >= deadline && out_pending(c) == 0 && polled) break;
        int wait = t >= deadline ? (polled ? 10 : 0) : (int)(deadline - t);
        int64_t acks = pt_sess_ack_wait_ms(c->sess); /* acks waiting for output (src/session) */
        if (acks >= 0 && acks < wait) wait = (int)acks;
        polled = true;
        struct pollfd p = {.fd = c->fd, .events = POLLIN | (out_pending(c) ? POLLOUT : 0)};
        if (poll(&p, 1, wait) < 0 && errno != EINTR) {
            rc = PT_ERR_IO;
            break;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR) && (rc = read_some(c)) != 0) break;
        if (t >= deadline + 5000) { /* cannot drain the output: the peer is stuck */
            rc = PT_ERR_TIMEOUT;
            break;
        }
    }
    if (rc == 0) rc = pt_sess_flush(c->sess, emit_record, c);
    if (rc == 0) rc = write_some(c);
    c->cb = NULL;
    if (rc) pt_client_drop(c);
    return rc;
}
