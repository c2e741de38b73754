/* packtrackd: the obfuscation layer under the channel (pt_obfs_conn.h). */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <uv.h>

#include "crypto/pt_crypto.h"
#include "obfs/pt_mse.h"
#include "obfs/pt_ptobfs.h"
#include "server/pt_config.h"
#include "server/pt_obfs_conn.h"
#include "server/pt_server_int.h"

#define REPLAY_CAPACITY 65536     /* pt-obfs nonces remembered (about 3 minutes' worth) */
#define DECOY_QUEUE_MAX (4u << 20) /* bytes queued towards either side of a decoy relay */

/* ---- settings ------------------------------------------------------------------------------ */

static const char *const mode_names[] = {"off", "accept", "prefer", "require", "pt-obfs"};
static const char *const rule_names[] = {"short", "long", "sync", "skey", "vc", "provide", "select"};

const char *pt_obfs_mode_name(int mode)
{
    return mode >= 0 && mode < (int)PT_ARRAY_LEN(mode_names) ? mode_names[mode] : "?";
}

static bool all_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i])) return false;
    return true;
}

/* hex of 16..64 bytes into o; false when s is not that */
static bool key_from_hex(pt_obfs_server_config *o, const char *s, size_t n)
{
    if (n % 2 || n / 2 < PT_OBFS_NK_MIN || n / 2 > PT_OBFS_NK_MAX || !all_hex(s, n)) return false;
    char tmp[2 * PT_OBFS_NK_MAX + 1];
    memcpy(tmp, s, n);
    tmp[n] = 0;
    bool ok = pt_hex_decode(o->network_key, n / 2, tmp) == 0;
    pt_wipe(tmp, sizeof tmp);
    if (ok) o->nklen = n / 2;
    return ok;
}

/* A key file holds the key in hex (whitespace around it ignored) or raw. */
static const char *key_from_file(pt_obfs_server_config *o, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return "network_key: neither hex nor a readable key file";
    uint8_t buf[4 * PT_OBFS_NK_MAX];
    size_t n = fread(buf, 1, sizeof buf, f);
    bool too_long = n == sizeof buf;
    fclose(f);
    const char *why = NULL;
    size_t a = 0, b = n;
    while (a < b && isspace(buf[a])) a++;
    while (b > a && isspace(buf[b - 1])) b--;
    if (too_long) why = "network_key: the key file is too long (16 to 64 bytes, raw or hex)";
    else if (key_from_hex(o, (const char *)buf + a, b - a)) why = NULL;
    else if (n >= PT_OBFS_NK_MIN && n <= PT_OBFS_NK_MAX) {
        memcpy(o->network_key, buf, n);
        o->nklen = n;
    } else {
        why = "network_key: the key file holds neither 16 to 64 raw bytes nor their hex";
    }
    pt_wipe(buf, sizeof buf);
    return why;
}

static const char *rules_parse(unsigned *out, const char *value)
{
    if (strcmp(value, "none") == 0 || !*value) {
        *out = 0;
        return NULL;
    }
    if (strcmp(value, "all") == 0) {
        *out = PT_MSE_RULES_ALL;
        return NULL;
    }
    unsigned bits = 0;
    for (const char *p = value; *p;) {
        size_t len = strcspn(p, ",");
        size_t i = 0;
        while (i < PT_ARRAY_LEN(rule_names) &&
               !(strlen(rule_names[i]) == len && strncmp(p, rule_names[i], len) == 0))
            i++;
        if (i == PT_ARRAY_LEN(rule_names))
            return "defer_rules: expected all, none or a comma list of short, long, sync, skey, vc, "
                   "provide, select";
        bits |= 1u << i;
        p += len + (p[len] == ',');
    }
    *out = bits;
    return NULL;
}

const char *pt_obfs_config_set(pt_obfs_server_config *o, const char *key, const char *value)
{
    if (strcmp(key, "mode") == 0) {
        for (size_t i = 0; i < PT_ARRAY_LEN(mode_names); i++) {
            if (strcmp(value, mode_names[i]) == 0) {
                o->mode = (int)i;
                return NULL;
            }
        }
        return "mode: expected off, accept, prefer, require or pt-obfs";
    }
    if (strcmp(key, "network_key") == 0) {
        pt_wipe(o->network_key, sizeof o->network_key);
        o->nklen = 0;
        if (!*value) return NULL; /* unset */
        if (key_from_hex(o, value, strlen(value))) return NULL;
        FILE *f = fopen(value, "rb");
        if (f) {
            fclose(f);
            return key_from_file(o, value);
        }
        return all_hex(value, strlen(value))
                   ? "network_key: expected 32 to 128 hex digits (16 to 64 bytes) or a key file"
                   : "network_key: neither hex nor a readable key file";
    }
    if (strcmp(key, "server_id") == 0) {
        if (strlen(value) >= sizeof o->server_id) return "server_id: at most 255 bytes";
        snprintf(o->server_id, sizeof o->server_id, "%s", value);
        return NULL;
    }
    if (strcmp(key, "handshake_timeout") == 0)
        return pt_parse_seconds(value, 3600, &o->handshake_timeout_ms) ? "handshake_timeout: 1 to 3600 seconds" : NULL;
    if (strcmp(key, "decoy") == 0) {
        char host[256];
        uint16_t port;
        struct sockaddr_storage ss;
        if (!*value) {
            o->decoy[0] = 0;
            return NULL;
        }
        if (strlen(value) >= sizeof o->decoy || pt_parse_listen(value, host, sizeof host, &port) != 0 ||
            port == 0 ||
            (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
             uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0))
            return "decoy: expected a numeric HOST:PORT ([V6]:PORT), port 1 to 65535";
        snprintf(o->decoy, sizeof o->decoy, "%s", value);
        return NULL;
    }
    if (strcmp(key, "defer_rules") == 0) return rules_parse(&o->defer_rules, value);
    return "unknown key in [obfuscation] (mode, network_key, server_id, handshake_timeout, decoy, "
           "defer_rules)";
}

int pt_obfs_config_check(const pt_obfs_server_config *o, char *err, size_t errlen)
{
    const char *m = pt_obfs_mode_name(o->mode);
    if (o->mode != PT_OBFS_MODE_OFF && o->nklen == 0)
        snprintf(err, errlen, "obfuscation mode %s needs a network key (network_key / --network-key)", m);
    else if (o->mode == PT_OBFS_MODE_PTOBFS && o->nklen != PT_OBFS_KEY_LEN)
        snprintf(err, errlen, "obfuscation mode pt-obfs needs a network key of exactly 32 bytes "
                 "(64 hex digits); this one has %zu", o->nklen);
    else if (o->decoy[0] && o->mode != PT_OBFS_MODE_PTOBFS)
        snprintf(err, errlen, "obfuscation decoy %s is only used in mode pt-obfs (mode is %s)", o->decoy, m);
    else if (o->defer_rules && o->mode != PT_OBFS_MODE_ACCEPT && o->mode != PT_OBFS_MODE_PREFER &&
             o->mode != PT_OBFS_MODE_REQUIRE)
        snprintf(err, errlen, "obfuscation defer_rules apply to MSE (accept, prefer, require); mode is %s", m);
    else
        return 0;
    return PT_ERR_INVAL;
}

void pt_obfs_config_print(const pt_obfs_server_config *o, FILE *f)
{
    fprintf(f, "[obfuscation]\nmode = %s\n", pt_obfs_mode_name(o->mode));
    if (o->nklen) fprintf(f, "network_key = (set, %zu bytes)\n", o->nklen);
    else fprintf(f, "network_key = (none)\n");
    fprintf(f, "server_id = %s\nhandshake_timeout = %u\ndecoy = %s\ndefer_rules = ", o->server_id,
            (o->handshake_timeout_ms ? o->handshake_timeout_ms : PT_OBFS_HANDSHAKE_TIMEOUT_MS) / 1000,
            o->decoy[0] ? o->decoy : "(none: silent)");
    bool any = false;
    for (size_t i = 0; i < PT_ARRAY_LEN(rule_names); i++) {
        if (o->defer_rules & (1u << i)) {
            fprintf(f, "%s%s", any ? "," : "", rule_names[i]);
            any = true;
        }
    }
    fprintf(f, "%s\n", any ? "" : "none");
}

/* ---- server-wide state ----------------------------------------------------------------------- */

struct pt_obfs_server {
    uint8_t skey[PT_MSE_PT_SKEY_LEN]; /* MSE SKEY of this server */
    pt_mse_skey mse_skey;             /* points at skey */
    pt_obfs_replay *replay;           /* pt-obfs nonces seen */
    struct sockaddr_storage decoy;    /* pt-obfs decoy, when has_decoy */
    bool has_decoy;
    uint32_t timeout_ms;              /* obfuscation handshake */
};

int pt_obfs_server_init(pt_server *s)
{
    const pt_obfs_server_config *cfg = &s->cfg.obfs;
    char err[256];
    if (cfg->mode == PT_OBFS_MODE_OFF) return 0;
    if (pt_obfs_config_check(cfg, err, sizeof err) != 0) {
        pt_log_error("%s", err);
        return PT_ERR_INVAL;
    }
    struct pt_obfs_server *o = calloc(1, sizeof *o);
    if (!o) return PT_ERR_NOMEM;
    s->obfs = o;
    o->timeout_ms = cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : PT_OBFS_HANDSHAKE_TIMEOUT_MS;
    if (cfg->mode == PT_OBFS_MODE_PTOBFS) {
        if (!(o->replay = pt_obfs_replay_new(REPLAY_CAPACITY))) return PT_ERR_NOMEM;
        if (cfg->decoy[0]) {
            char host[256];
            uint16_t port = 0;
            if (pt_parse_listen(cfg->decoy, host, sizeof host, &port) != 0 ||
                (uv_ip4_addr(host, port, (struct sockaddr_in *)&o->decoy) != 0 &&
                 uv_ip6_addr(host, port, (struct sockaddr_in6 *)&o->decoy) != 0)) {
                pt_log_error("obfuscation decoy '%s' is not a numeric HOST:PORT", cfg->decoy);
                return PT_ERR_INVAL;
            }
            o->has_decoy = true;
        }
    } else {
        int rc = pt_mse_packtrack_skey(o->skey, cfg->network_key, cfg->nklen, cfg->server_id);
        if (rc) return rc;
        o->mse_skey.data = o->skey;
        o->mse_skey.len = sizeof o->skey;
    }
    pt_log_info("obfuscation: %s, handshake timeout %u s%s%s", pt_obfs_mode_name(cfg->mode),
                o->timeout_ms / 1000, o->has_decoy ? ", rejected flights go to the decoy " : "",
                o->has_decoy ? cfg->decoy : "");
    return 0;
}

void pt_obfs_server_free(pt_server *s)
{
    struct pt_obfs_server *o = s->obfs;
    if (!o) return;
    pt_obfs_replay_free(o->replay);
    pt_wipe(o->skey, sizeof o->skey);
    free(o);
    s->obfs = NULL;
}

/* ---- one connection ------------------------------------------------------------------------- */

typedef struct decoy decoy;

enum oc_state {
    OC_DETECT,  /* accept / prefer: first bytes not yet seen */
    OC_PLAIN,   /* accept / prefer: a plain channel; the layer steps aside */
    OC_MSE,     /* MSE handshake, then the RC4 stream */
    OC_PTOBFS,  /* pt-obfs flight, then records */
    OC_SILENT,  /* rejected: read and discard until the timer closes it */
    OC_DECOY,   /* rejected: relayed to the decoy */
};

struct pt_obfs_conn {
    enum oc_state state;
    bool up;                    /* the layer is established: channel bytes flow */
    bool doom_logged;           /* a deferred MSE failure was logged */
    pt_mse *mse;
    pt_obfs *po;
    pt_buf raw;                 /* bytes for the wire ahead of what wrap seals */
    pt_buf plain;               /* unwrapped bytes for the channel */
    uint8_t first[PT_OBFS_DETECT_LEN]; /* the first bytes, for detection or the log */
    size_t nfirst;
    bool first_judged;          /* require / pt-obfs: a plain hello was looked for */
    decoy *relay;               /* OC_DECOY: the relay, until either side ends it */
    uint64_t activity_ms;       /* OC_DECOY: loop time of the last byte relayed */
};

int pt_obfs_conn_detect(const uint8_t *p, size_t n)
{
    static const uint8_t magic[3] = {'P', 'T', 'K'};
    for (size_t i = 0; i < n && i < PT_OBFS_DETECT_LEN; i++) {
        if (i < 3 && p[i] != magic[i]) return 0;
        if (i == 5 && (p[5] == 0 || p[5] > PT_CHAN_MAX_SUITES)) return 0;
    }
    return n >= PT_OBFS_DETECT_LEN ? 1 : -1;
}

uint32_t pt_obfs_conn_first_timeout_ms(const pt_conn *c)
{
    return c->obfs ? c->srv->obfs->timeout_ms : pt_srv_hs_timeout_ms(c->srv);
}

static int new_mse(pt_conn *c)
{
    pt_server *s = c->srv;
    pt_mse_config mc;
    pt_mse_config_init(&mc, false);
    mc.skeys = &s->obfs->mse_skey;
    mc.nskeys = 1;
    mc.crypto = PT_MSE_CRYPTO_RC4; /* a plaintext stream would show the channel's hello */
    mc.timeout_ms = mc.dh_timeout_ms = s->obfs->timeout_ms;
    mc.defer_rules = s->cfg.obfs.defer_rules;
    int err = 0;
    pt_obfs_conn *o = c->obfs;
    if (!(o->mse = pt_mse_new(pt_env_default(), &mc, &err))) return err;
    o->state = OC_MSE;
    return pt_mse_start(o->mse, &o->raw);
}

int pt_obfs_conn_attach(pt_conn *c)
{
    pt_server *s = c->srv;
    if (!s->obfs) return 0;
    pt_obfs_conn *o = calloc(1, sizeof *o);
    if (!o) return PT_ERR_NOMEM;
    c->obfs = o;
    pt_buf_init(&o->raw);
    pt_buf_init(&o->plain);
    switch (s->cfg.obfs.mode) {
    case PT_OBFS_MODE_ACCEPT:
    case PT_OBFS_MODE_PREFER:
        o->state = OC_DETECT; /* MSE is set up only once the first bytes say so */
        return 0;
    case PT_OBFS_MODE_REQUIRE:
        return new_mse(c);
    default: {
        pt_obfs_config pc;
        pt_obfs_config_init(&pc, true);
        pc.network_key = s->cfg.obfs.network_key;
        pc.timeout_ms = s->obfs->timeout_ms;
        pc.reject_to_decoy = s->obfs->has_decoy;
        pc.replay = s->obfs->replay;
        int err = 0;
        if (!(o->po = pt_obfs_new(pt_env_default(), &pc, &err))) return err;
        o->state = OC_PTOBFS;
        return 0;
    }
    }
}

/* The layer is up: the channel's own handshake timeout starts now. */
static void layer_up(pt_conn *c, const char *what)
{
    c->obfs->up = true;
    uv_timer_start(&c->timer, c->srv->timer_cb, pt_srv_hs_timeout_ms(c->srv), 0);
    pt_log_debug("conn %s: obfuscation: %s", c->peer, what);
}

/* ---- the decoy relay ---------------------------------------------------------------------- */

/* Owns itself: lives until its socket is closed, whichever side ends first. */
struct decoy {
    uv_tcp_t tcp;
    uv_connect_t creq;
    pt_conn *conn;              /* the prober; NULL once its connection is gone */
    pt_buf pending;             /* prober bytes read before the connect completed */
    bool connected, closed;
    uint8_t buf[16384];
};

typedef struct copy_write {
    uv_write_t req;             /* first: the callback gets this pointer */
    uint8_t data[];
} copy_write;

static void on_copy_written(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static int write_copy(uv_stream_t *st, const uint8_t *p, size_t len)
{
    if (uv_stream_get_write_queue_size(st) > DECOY_QUEUE_MAX) return PT_ERR_TOO_BIG;
    copy_write *w = malloc(sizeof *w + len);
    if (!w) return PT_ERR_NOMEM;
    memcpy(w->data, p, len);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)len);
    int rc = uv_write(&w->req, st, &b, 1, on_copy_written);
    if (rc < 0) {
        free(w);
        return PT_ERR_IO;
    }
    return 0;
}

static void on_decoy_closed(uv_handle_t *h)
{
    decoy *d = h->data;
    pt_buf_free(&d->pending);
    free(d);
}

static void decoy_close(decoy *d)
{
    if (d->closed) return;
    d->closed = true;
    if (d->conn && d->conn->obfs) d->conn->obfs->relay = NULL;
    d->conn = NULL;
    uv_close((uv_handle_t *)&d->tcp, on_decoy_closed);
}

static void on_prober_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    pt_conn *c = req->handle->data;
    free(req);
    if (!pt_conn_io_closing(c)) pt_conn_io_close(c, "decoy closed");
}

/* The decoy ended: what it said reaches the prober, then the prober's connection closes. */
static void decoy_ended(decoy *d, const char *why)
{
    pt_conn *c = d->conn;
    decoy_close(d);
    if (!c || pt_conn_io_closing(c)) return;
    pt_log_debug("conn %s: decoy relay ended: %s", c->peer, why);
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req || uv_shutdown(req, (uv_stream_t *)&c->tcp, on_prober_shutdown) != 0) {
        free(req);
        pt_conn_io_close(c, "decoy closed");
    }
}

static void on_decoy_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    decoy *d = h->data;
    *buf = uv_buf_init((char *)d->buf, sizeof d->buf);
}

static void on_decoy_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    decoy *d = st->data;
    if (n == 0) return;
    if (n < 0) {
        decoy_ended(d, n == UV_EOF ? "end of stream" : uv_strerror((int)n));
        return;
    }
    pt_conn *c = d->conn;
    if (!c || pt_conn_io_closing(c)) {
        decoy_close(d);
        return;
    }
    c->obfs->activity_ms = uv_now(c->loop);
    if (write_copy((uv_stream_t *)&c->tcp, (const uint8_t *)buf->base, (size_t)n) != 0)
        decoy_ended(d, "the prober does not read");
}

static void on_decoy_connect(uv_connect_t *req, int status)
{
    decoy *d = req->data;
    if (d->closed) return;
    pt_conn *c = d->conn;
    if (status < 0 || !c || pt_conn_io_closing(c)) {
        if (c && !pt_conn_io_closing(c)) {
            /* the verdict stands: the prober gets silence instead */
            pt_log_warn("conn %s: decoy %s unreachable (%s); staying silent", c->peer,
                        c->srv->cfg.obfs.decoy, uv_strerror(status));
            c->obfs->state = OC_SILENT;
        }
        decoy_close(d);
        return;
    }
    d->connected = true;
    if (d->pending.len && write_copy((uv_stream_t *)&d->tcp, d->pending.data, d->pending.len) != 0) {
        decoy_ended(d, "write to the decoy failed");
        return;
    }
    pt_buf_free(&d->pending);
    uv_read_start((uv_stream_t *)&d->tcp, on_decoy_alloc, on_decoy_read);
}

/* A rejected flight: relay it and what follows to the decoy. */
static void decoy_start(pt_conn *c)
{
    pt_obfs_conn *o = c->obfs;
    size_t held = 0;
    const uint8_t *p = pt_obfs_held(o->po, &held);
    o->state = OC_DECOY;
    o->activity_ms = uv_now(c->loop);
    decoy *d = calloc(1, sizeof *d);
    if (!d) goto silent;
    pt_buf_init(&d->pending);
    if (held && pt_buf_append(&d->pending, p, held) != 0) {
        free(d);
        goto silent;
    }
    uv_tcp_init(c->loop, &d->tcp);
    d->tcp.data = d->creq.data = d;
    d->conn = c;
    o->relay = d;
    if (uv_tcp_connect(&d->creq, &d->tcp, (const struct sockaddr *)&c->srv->obfs->decoy,
                       on_decoy_connect) != 0) {
        decoy_close(d);
        goto silent;
    }
    return;
silent:
    pt_log_warn("conn %s: cannot reach the decoy; staying silent", c->peer);
    o->state = OC_SILENT;
}

/* ---- the hooks ---------------------------------------------------------------------------- */

/* Require / pt-obfs: a plain client gets the same silence as anyone, but the
 * operator learns from the log why it could not connect. */
static void note_plain_hello(pt_conn *c, const uint8_t *p, size_t len)
{
    pt_obfs_conn *o = c->obfs;
    if (o->first_judged) return;
    size_t take = len < PT_OBFS_DETECT_LEN - o->nfirst ? len : PT_OBFS_DETECT_LEN - o->nfirst;
    memcpy(o->first + o->nfirst, p, take);
    o->nfirst += take;
    int v = pt_obfs_conn_detect(o->first, o->nfirst);
    if (v < 0) return;
    o->first_judged = true;
    if (v == 1)
        pt_log_info("conn %s: a plain channel hello, but this port takes %s only", c->peer,
                    pt_obfs_mode_name(c->srv->cfg.obfs.mode));
}

static int mse_input(pt_conn *c, const uint8_t *in, size_t len)
{
    pt_obfs_conn *o = c->obfs;
    bool was_up = o->up;
    int rc = pt_mse_input(o->mse, in, len, &o->raw, &o->plain);
    if (rc < 0) {
        pt_log_info("conn %s: MSE handshake failed: %s (%s)", c->peer,
                    pt_mse_reason_name(pt_mse_failure(o->mse)), pt_strerror(rc));
        return rc;
    }
    if (rc == PT_MSE_DONE && !was_up) layer_up(c, "MSE handshake done");
    if (rc == PT_MSE_NEED_MORE && !o->doom_logged && pt_mse_failure(o->mse) != PT_MSE_OK) {
        o->doom_logged = true;
        pt_log_info("conn %s: MSE handshake failed: %s (deferred: silent until the deadline)",
                    c->peer, pt_mse_reason_name(pt_mse_failure(o->mse)));
    }
    return 0;
}

int pt_obfs_conn_input(pt_conn *c, const uint8_t **data, size_t *len)
{
    pt_obfs_conn *o = c->obfs;
    int rc = 0;
    pt_buf_reset(&o->plain);
    switch (o->state) {
    case OC_PLAIN:
        return 1;
    case OC_DETECT: {
        size_t take = *len < PT_OBFS_DETECT_LEN - o->nfirst ? *len : PT_OBFS_DETECT_LEN - o->nfirst;
        memcpy(o->first + o->nfirst, *data, take);
        o->nfirst += take;
        int verdict = pt_obfs_conn_detect(o->first, o->nfirst);
        if (verdict < 0) return 0; /* every byte fits a plain hello so far */
        o->first_judged = true;
        if (pt_buf_append(&o->plain, o->first, o->nfirst) != 0 ||
            pt_buf_append(&o->plain, *data + take, *len - take) != 0)
            return PT_ERR_NOMEM;
        if (verdict == 1) {
            o->state = OC_PLAIN;
            layer_up(c, "plain channel hello");
            *data = o->plain.data;
            *len = o->plain.len;
            return 1;
        }
        if ((rc = new_mse(c)) != 0) return rc;
        pt_buf t = o->plain; /* the bytes so far are MSE's */
        pt_buf_init(&o->plain);
        rc = mse_input(c, t.data, t.len);
        pt_buf_free(&t);
        break;
    }
    case OC_MSE:
        note_plain_hello(c, *data, *len);
        rc = mse_input(c, *data, *len);
        break;
    case OC_PTOBFS:
        note_plain_hello(c, *data, *len);
        rc = pt_obfs_input(o->po, *data, *len, &o->plain);
        if (rc == PT_OBFS_ACCEPT) {
            layer_up(c, "pt-obfs first flight verified");
            rc = 0;
        } else if (rc == PT_OBFS_SILENT) {
            o->state = OC_SILENT;
            pt_log_info("conn %s: pt-obfs flight rejected (%s); silent", c->peer,
                        pt_strerror(pt_obfs_reject_reason(o->po)));
            return 0;
        } else if (rc == PT_OBFS_DECOY) {
            pt_log_info("conn %s: pt-obfs flight rejected (%s); relayed to the decoy", c->peer,
                        pt_strerror(pt_obfs_reject_reason(o->po)));
            decoy_start(c);
            return 0;
        } else if (rc < 0) {
            pt_log_info("conn %s: pt-obfs stream failed: %s", c->peer, pt_strerror(rc));
        }
        break;
    case OC_SILENT:
        return 0;
    case OC_DECOY:
        o->activity_ms = uv_now(c->loop);
        if (!o->relay) return 0;
        if (!o->relay->connected) {
            if (o->relay->pending.len + *len > DECOY_QUEUE_MAX) {
                decoy_ended(o->relay, "too much before the decoy answered the connect");
                return 0;
            }
            return pt_buf_append(&o->relay->pending, *data, *len);
        }
        if (write_copy((uv_stream_t *)&o->relay->tcp, *data, *len) != 0) {
            decoy_ended(o->relay, "the decoy does not read");
            return 0;
        }
        return 0;
    }
    if (rc < 0) return rc;
    if (!o->plain.len) return 0;
    *data = o->plain.data;
    *len = o->plain.len;
    return 1;
}

int pt_obfs_conn_wrap(pt_conn *c)
{
    pt_obfs_conn *o = c->obfs;
    if (o->state == OC_PLAIN) return 0;
    int rc = 0;
    if (c->out.len) {
        if (!o->up) return PT_ERR_STATE; /* the channel speaks only once the layer is up */
        if (o->mse) {
            rc = pt_mse_seal(o->mse, &o->raw, c->out.data, c->out.len);
        } else {
            for (size_t off = 0; rc == 0 && off < c->out.len; off += PT_OBFS_RECORD_DATA_MAX) {
                size_t n = c->out.len - off < PT_OBFS_RECORD_DATA_MAX ? c->out.len - off
                                                                     : PT_OBFS_RECORD_DATA_MAX;
                rc = pt_obfs_seal(o->po, &o->raw, c->out.data + off, n);
            }
        }
        pt_buf_reset(&c->out);
        if (rc) return rc;
    }
    pt_buf t = c->out; /* empty: swap storage with raw */
    c->out = o->raw;
    o->raw = t;
    return 0;
}

/* Re-arms the connection timer for ms. */
static bool rearm(pt_conn *c, uint64_t ms)
{
    uv_timer_start(&c->timer, c->srv->timer_cb, ms ? ms : 1, 0);
    return true;
}

bool pt_obfs_conn_on_timer(pt_conn *c)
{
    pt_obfs_conn *o = c->obfs;
    uint64_t now = pt_env_mono_ms(pt_env_default());
    int rc;
    if (o->up) return false; /* the channel's handshake or idle timeout */
    switch (o->state) {
    case OC_MSE:
        if ((rc = pt_mse_check_timeout(o->mse)) == 0 && pt_mse_deadline_ms(o->mse) > now)
            return rearm(c, pt_mse_deadline_ms(o->mse) - now); /* the loop's clock ran ahead */
        pt_log_info("conn %s: MSE handshake failed: %s", c->peer,
                    pt_mse_reason_name(pt_mse_failure(o->mse)));
        return false;
    case OC_PTOBFS:
        if ((rc = pt_obfs_check_timeout(o->po)) == 0 && pt_obfs_deadline_ms(o->po) > now)
            return rearm(c, pt_obfs_deadline_ms(o->po) - now);
        if (rc == PT_OBFS_DECOY) {
            pt_log_info("conn %s: pt-obfs: no whole flight in time; relayed to the decoy", c->peer);
            decoy_start(c);
            return o->state == OC_DECOY ? rearm(c, pt_srv_idle_timeout_ms(c->srv)) : false;
        }
        pt_log_info("conn %s: pt-obfs: no whole flight in time; closing without a word", c->peer);
        return false;
    case OC_DECOY: {
        uint64_t idle = uv_now(c->loop) - o->activity_ms;
        if (o->relay && idle < pt_srv_idle_timeout_ms(c->srv))
            return rearm(c, pt_srv_idle_timeout_ms(c->srv) - idle);
        pt_log_info("conn %s: decoy relay idle; closing", c->peer);
        return false;
    }
    case OC_DETECT:
        pt_log_info("conn %s: obfuscation: fewer than %d bytes before the deadline", c->peer,
                    PT_OBFS_DETECT_LEN);
        return false;
    default:
        pt_log_info("conn %s: pt-obfs: silent connection reached the deadline", c->peer);
        return false;
    }
}

void pt_obfs_conn_free(pt_obfs_conn *o)
{
    if (!o) return;
    if (o->relay) decoy_close(o->relay);
    pt_mse_free(o->mse);
    pt_obfs_free(o->po);
    pt_buf_free(&o->raw);
    pt_buf_free(&o->plain);
    pt_wipe(o->first, sizeof o->first);
    free(o);
}
