/* Prints the worked example of docs/PROTOCOL.md: a deterministic XX handshake
 * with PT1-CHACHAPOLY-BLAKE2B and one echo call, as the bytes on the wire. */
#include <stdio.h>
#include <stdlib.h>

#include "channel/pt_chan.h"
#include "pt_tl.h"
#include "session/pt_sess.h"

static uint64_t counter;
static void det_random(void *ctx, void *buf, size_t len)
{
    (void)ctx;
    uint8_t *p = buf;
    while (len) {
        uint8_t blk[32], ctr[8];
        pt_put_u64le(ctr, counter++);
        pt_blake2b(blk, sizeof blk, ctr, sizeof ctr, (const uint8_t *)"example", 7);
        size_t k = len < 32 ? len : 32;
        memcpy(p, blk, k);
        p += k;
        len -= k;
    }
}
static uint64_t fixed_now(void *ctx) { (void)ctx; return 1763800000000ull; }
static const pt_env env = {det_random, fixed_now, fixed_now, NULL};

static void dump(const char *what, const uint8_t *p, size_t n)
{
    printf("%s (%zu bytes):\n", what, n);
    for (size_t i = 0; i < n; i++) printf("%02x%s", p[i], i % 32 == 31 || i + 1 == n ? "\n" : "");
}

static pt_buf rec_out;
static int emit(void *ud, const uint8_t *rec, size_t len)
{
    (void)ud;
    dump("session record plaintext", rec, len);
    return pt_buf_append(&rec_out, rec, len);
}
static int on_rec(void *ud, const uint8_t *rec, size_t len)
{
    (void)ud;
    dump("record opened by the peer", rec, len);
    return 0;
}

int main(void)
{
    if (pt_init()) return 1;
    uint8_t csk[32], ssk[32], spk[32], cpk[32];
    det_random(NULL, csk, 32);
    det_random(NULL, ssk, 32);
    pt_x25519_base(spk, ssk);
    pt_x25519_base(cpk, csk);
    dump("client static public key", cpk, 32);
    dump("server static public key", spk, 32);
    const uint8_t offer[] = {PT_SUITE_CHACHAPOLY_BLAKE2B, PT_SUITE_AESGCM_SHA256};
    pt_chan_config cc = {.suites = offer, .nsuites = 2, .static_sk = csk};
    pt_chan_config sc = {.is_server = true, .suites = offer, .nsuites = 2, .static_sk = ssk};
    pt_chan *c = pt_chan_new(&env, &cc, NULL), *s = pt_chan_new(&env, &sc, NULL);
    pt_buf a, b;
    pt_buf_init(&a);
    pt_buf_init(&b);
    if (pt_chan_start(c, &a)) return 1;
    dump("1. client hello", a.data, a.len);
    if (pt_chan_input(s, a.data, a.len, &b, on_rec, NULL)) return 1;
    dump("2. server hello", b.data, b.len);
    pt_buf_reset(&a);
    if (pt_chan_input(c, b.data, b.len, &a, on_rec, NULL)) return 1;
    dump("3. frame: Noise XX message 1 (-> e)", a.data, a.len);
    pt_buf_reset(&b);
    if (pt_chan_input(s, a.data, a.len, &b, on_rec, NULL)) return 1;
    dump("4. frame: Noise XX message 2 (<- e, ee, s, es)", b.data, b.len);
    pt_buf_reset(&a);
    if (pt_chan_input(c, b.data, b.len, &a, on_rec, NULL)) return 1;
    dump("5. frame: Noise XX message 3 (-> s, se)", a.data, a.len);
    pt_buf_reset(&b);
    if (pt_chan_input(s, a.data, a.len, &b, on_rec, NULL)) return 1;
    size_t hl;
    const uint8_t *h = pt_chan_handshake_hash(c, &hl);
    dump("handshake hash h (both sides)", h, hl);

    pt_sess_config sess_cfg = {.role = PT_SESS_CLIENT, .session_id = 0x0123456789abcdefull,
                               .salt = 0x1122334455667788ull};
    pt_sess *sess = pt_sess_new(&env, &sess_cfg);
    uint8_t payload[] = {'h', 'i', '!'};
    pt_tl_pt_echo e = {.payload = {payload, sizeof payload}};
    pt_buf body;
    pt_buf_init(&body);
    if (pt_tl_pt_echo_encode(&body, &e)) return 1;
    dump("pt.echo(\"hi!\") body", body.data, body.len);
    if (pt_sess_send(sess, body.data, body.len, false, NULL)) return 1;
    pt_buf_init(&rec_out);
    if (pt_sess_flush(sess, emit, NULL)) return 1;
    pt_buf_reset(&a);
    if (pt_chan_seal(c, &a, rec_out.data, rec_out.len)) return 1;
    dump("6. frame: record (ChaCha20-Poly1305, nonce 0)", a.data, a.len);
    if (pt_chan_input(s, a.data, a.len, &b, on_rec, NULL)) return 1;
    pt_sess_free(sess);
    pt_chan_free(c);
    pt_chan_free(s);
    return 0;
}
