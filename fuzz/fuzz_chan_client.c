/* Fuzz target for the client side of pt_chan (src/channel). The first input byte
 * picks the client (fz_client_config in fuzz_env.h: XX unpinned, XX pinned or IK,
 * offering all suites or one); the client starts in the deterministic fuzz_env and
 * the rest of the input is the server's bytes, as chunks of one length byte then
 * that many bytes, one pt_chan_input call each. Each record received is answered
 * with pt_chan_seal. The corpus holds whole server transcripts for every variant
 * and suite (fuzz/seeds/make_seeds.c). Properties, each abort()ing when broken:
 *  - pt_chan_pending_input() never exceeds one hello plus one largest frame;
 *  - once pt_chan_input has failed, every later call fails too;
 *  - a pinned client is established only with the pinned server key, and then
 *    with one of the suites it offered;
 *  - records arrive only once established;
 *  - what the client writes is its hello then well-formed frames. */
#include <stdlib.h>

#include "channel/mtp2.h"
#include "channel/pt_chan.h"
#include "fuzz_env.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PENDING_MAX (PT_CHAN_FRAME_MAX + PT_CHAN_FRAME_HDR + PT_CHAN_HELLO_MAX)

typedef struct fz_client {
    pt_chan *c;
    pt_buf sealed; /* our answers to records */
    size_t records;
} fz_client;

static int on_record(void *ud, const uint8_t *rec, size_t len)
{
    fz_client *f = ud;
    if (!pt_chan_established(f->c) || (len && !rec)) abort();
    volatile uint8_t sink = 0; /* every byte must be readable (ASan checks) */
    for (size_t i = 0; i < len; i++) sink ^= rec[i];
    (void)sink;
    uint8_t reply[PT_MTP2_INNER_HDR_LEN + 4] = {0}; /* session-shaped: MTProto needs it */
    pt_put_u64le(reply + 16, ++f->records * 4);
    pt_put_u32le(reply + 28, 4);
    if (pt_chan_seal(f->c, &f->sealed, reply, sizeof reply) != 0) abort();
    return 0;
}

static void check_output(const pt_buf *out, size_t hello_len)
{
    if (out->len < hello_len || memcmp(out->data, "PTK\x01", 4) != 0) abort();
    size_t off = hello_len;
    while (off < out->len) {
        if (out->len - off < PT_CHAN_FRAME_HDR) abort();
        size_t flen = pt_get_u32le(out->data + off);
        if (flen == 0 || flen > PT_NOISE_MAX_MSG || out->len - off - PT_CHAN_FRAME_HDR < flen)
            abort();
        off += PT_CHAN_FRAME_HDR + flen;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    if (!inited) {
        if (pt_init() != 0) abort();
        inited = 1;
    }
    if (size < 1) return 0;
    fz_env env;
    fz_env_init(&env, 1);
    uint8_t sk[32], pin[32], suites[PT_SUITE_MAX];
    fz_key(sk, FZ_CLIENT_KEY);
    pt_chan_config cfg;
    fz_client_config(data[0], &cfg, suites, sk, pin);
    fz_client f = {0};
    int err = -1;
    if (!(f.c = pt_chan_new(&env.env, &cfg, &err)) || err != 0) abort();
    pt_buf out;
    pt_buf_init(&out);
    pt_buf_init(&f.sealed);
    if (pt_chan_start(f.c, &out) != 0 || out.len != 6 + cfg.nsuites) abort();
    size_t hello_len = out.len;

    int failed = 0;
    size_t off = 1;
    while (off < size) {
        size_t n = data[off++];
        if (n > size - off) n = size - off;
        int rc = pt_chan_input(f.c, data + off, n, &out, on_record, &f);
        off += n;
        if (failed && rc == 0) abort(); /* errors are final */
        if (rc != 0) failed++;
        if (pt_chan_pending_input(f.c) > PENDING_MAX) abort();
        if (pt_chan_established(f.c)) {
            size_t hlen = 0;
            const uint8_t *rs = pt_chan_remote_static(f.c);
            if (!rs || !pt_chan_handshake_hash(f.c, &hlen) || (hlen != 32 && hlen != 64)) abort();
            if (cfg.server_pk && memcmp(rs, pin, 32) != 0) abort(); /* pinning holds */
            if (!memchr(suites, pt_chan_suite(f.c), cfg.nsuites)) abort();
        }
        if (failed >= 2) break;
    }
    if (failed && pt_chan_input(f.c, NULL, 0, &out, on_record, &f) == 0) abort();
    check_output(&out, hello_len);

    pt_buf_free(&out);
    pt_buf_free(&f.sealed);
    pt_chan_free(f.c);
    return 0;
}
