/* The client side of the obfuscation layer (pt_obfs_client.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "client/pt_obfs_client.h"
#include "crypto/pt_crypto.h"
#include "obfs/pt_mse.h"
#include "obfs/pt_ptobfs.h"

static const char *const mode_names[] = {"off", "mse", "mse-prefer", "pt-obfs"};

const char *pt_obfsc_mode_name(int mode)
{
    return mode >= 0 && mode < (int)PT_ARRAY_LEN(mode_names) ? mode_names[mode] : "?";
}

int pt_obfsc_settings_parse(pt_obfsc_settings *out, const char *mode, const char *hex_key,
                            const char *server_id)
{
    memset(out, 0, sizeof *out);
    out->mode = -1;
    for (size_t i = 0; i < PT_ARRAY_LEN(mode_names); i++)
        if (!mode || strcmp(mode, mode_names[i]) == 0) out->mode = mode ? (int)i : PT_OBFSC_OFF;
    if (out->mode < 0) {
        pt_log_error("obfuscation mode '%s' is not one of off, mse, mse-prefer, pt-obfs", mode);
        return PT_ERR_INVAL;
    }
    if (server_id && strlen(server_id) >= sizeof out->server_id) {
        pt_log_error("obfuscation server id is longer than 255 bytes");
        return PT_ERR_INVAL;
    }
    snprintf(out->server_id, sizeof out->server_id, "%s", server_id ? server_id : "");
    if (out->mode == PT_OBFSC_OFF) return 0;
    size_t n = hex_key ? strlen(hex_key) : 0;
    bool pt = out->mode == PT_OBFSC_PTOBFS;
    if (!hex_key || n % 2 || n / 2 < (pt ? 32 : 16) || n / 2 > (pt ? 32 : 64) ||
        pt_hex_decode(out->network_key, n / 2, hex_key) != 0) {
        pt_log_error("obfuscation mode %s needs a network key of %s in hex", mode,
                     pt ? "exactly 32 bytes (64 digits)" : "16 to 64 bytes (32 to 128 digits)");
        pt_wipe(out->network_key, sizeof out->network_key);
        return PT_ERR_INVAL;
    }
    out->nklen = n / 2;
    return 0;
}

struct pt_obfsc {
    int mode;
    pt_mse *mse;            /* MSE modes */
    pt_obfs *po;            /* pt-obfs */
    pt_obfsc_settings set;  /* copy: the key, the SKEY input */
    int timeout_ms;
    bool up;                /* the layer's handshake completed */
    pt_buf wire;            /* bytes for the socket, in order */
    pt_buf plain;           /* unwrapped bytes for the channel */
};

pt_obfsc *pt_obfsc_new(const pt_obfsc_settings *s, int timeout_ms, int *err)
{
    PT_ASSERT(s->mode != PT_OBFSC_OFF);
    pt_obfsc *o = pt_secure_alloc(sizeof *o);
    if (!o) {
        if (err) *err = PT_ERR_NOMEM;
        return NULL;
    }
    memset(o, 0, sizeof *o);
    o->mode = s->mode;
    o->set = *s;
    o->timeout_ms = timeout_ms;
    pt_buf_init(&o->wire);
    pt_buf_init(&o->plain);
    if (err) *err = 0;
    return o;
}

void pt_obfsc_free(pt_obfsc *o)
{
    if (!o) return;
    pt_mse_free(o->mse);
    pt_obfs_free(o->po);
    pt_buf_free(&o->wire);
    pt_buf_free(&o->plain);
    pt_secure_free(o);
}

static int seal_into(pt_obfsc *o, const uint8_t *p, size_t len)
{
    int rc = 0;
    if (o->mse) return pt_mse_seal(o->mse, &o->wire, p, len);
    for (size_t off = 0; rc == 0 && off < len; off += PT_OBFS_RECORD_DATA_MAX) {
        size_t n = len - off < PT_OBFS_RECORD_DATA_MAX ? len - off : PT_OBFS_RECORD_DATA_MAX;
        rc = pt_obfs_seal(o->po, &o->wire, p + off, n);
    }
    return rc;
}

int pt_obfsc_start(pt_obfsc *o, pt_buf *chan_out)
{
    int rc = 0;
    const pt_env *env = pt_env_default();
    uint32_t t = o->timeout_ms > 0 ? (uint32_t)o->timeout_ms : 0;
    if (o->mode == PT_OBFSC_PTOBFS) {
        pt_obfs_config pc;
        pt_obfs_config_init(&pc, false);
        pc.network_key = o->set.network_key;
        pc.timeout_ms = t;
        if (!(o->po = pt_obfs_new(env, &pc, &rc))) return rc;
        /* The flight's 32-byte payload is opaque to the layer; the channel's Noise
         * ephemeral only exists after the hello round trip, so it is random here. */
        uint8_t payload[PT_OBFS_PAYLOAD_LEN];
        pt_random(payload, sizeof payload);
        rc = pt_obfs_client_start(o->po, payload, &o->wire);
        pt_wipe(payload, sizeof payload);
        if (rc == 0) rc = seal_into(o, chan_out->data, chan_out->len);
    } else {
        uint8_t skey[PT_MSE_PT_SKEY_LEN];
        if ((rc = pt_mse_packtrack_skey(skey, o->set.network_key, o->set.nklen, o->set.server_id)))
            return rc;
        pt_mse_skey sk = {skey, sizeof skey};
        pt_mse_config mc;
        pt_mse_config_init(&mc, true);
        mc.skeys = &sk;
        mc.nskeys = 1;
        mc.crypto = PT_MSE_CRYPTO_RC4; /* plaintext after the handshake would show the channel */
        mc.ia = chan_out->data;        /* the channel's hello rides in IA: no extra round trip */
        mc.ia_len = chan_out->len;
        mc.timeout_ms = mc.dh_timeout_ms = t;
        o->mse = pt_mse_new(env, &mc, &rc);
        pt_wipe(skey, sizeof skey);
        if (!o->mse) return rc;
        rc = pt_mse_start(o->mse, &o->wire);
    }
    pt_buf_reset(chan_out);
    return rc;
}

int pt_obfsc_write(pt_obfsc *o, int fd, pt_buf *chan_out)
{
    if (chan_out->len) {
        /* MSE seals only once done; until then the channel has nothing to say */
        if (o->mse && !pt_mse_done(o->mse)) return PT_ERR_STATE;
        int rc = seal_into(o, chan_out->data, chan_out->len);
        pt_buf_reset(chan_out);
        if (rc) return rc;
    }
    while (o->wire.len) {
        ssize_t n = send(fd, o->wire.data, o->wire.len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return 0;
            return PT_ERR_CLOSED;
        }
        pt_buf_consume(&o->wire, (size_t)n);
    }
    return 0;
}

size_t pt_obfsc_pending(const pt_obfsc *o) { return o->wire.len; }

bool pt_obfsc_up(const pt_obfsc *o) { return o->up; }

int pt_obfsc_input(pt_obfsc *o, const uint8_t *in, size_t len, const uint8_t **data, size_t *dlen)
{
    pt_buf_reset(&o->plain);
    int rc;
    if (o->mse) {
        rc = pt_mse_input(o->mse, in, len, &o->wire, &o->plain);
        if (rc < 0)
            pt_log_error("MSE handshake failed: %s (%s)", pt_mse_reason_name(pt_mse_failure(o->mse)),
                         pt_strerror(rc));
    } else {
        rc = pt_obfs_input(o->po, in, len, &o->plain);
        if (rc < 0) pt_log_error("pt-obfs stream failed: %s", pt_strerror(rc));
    }
    if (rc < 0) return rc;
    /* MSE: done; pt-obfs: the first server record ended the client's wait */
    o->up = o->mse ? pt_mse_done(o->mse) : pt_obfs_deadline_ms(o->po) == UINT64_MAX;
    *data = o->plain.data;
    *dlen = o->plain.len;
    return 0;
}
