/* Fuzz target for the server side of pt_chan (src/channel): a server with a fixed
 * static key allowing all five suites, in the deterministic fuzz_env, fed the
 * input as client bytes. The input is a list of chunks, each one length byte
 * then that many bytes (the last may be short); each chunk is one pt_chan_input
 * call, so frames arrive split and glued in every way. Each record received is
 * answered with pt_chan_seal. The corpus holds whole handshakes and records for
 * every suite and both patterns (fuzz/seeds/make_seeds.c). Properties, each
 * abort()ing when broken:
 *  - pt_chan_pending_input() never exceeds one hello plus one largest frame;
 *  - once pt_chan_input has failed, every later call fails too;
 *  - records arrive only once established, and then the suite, peer key and
 *    handshake hash are known;
 *  - what the server writes is a server hello then well-formed frames. */
#include <stdlib.h>

#include "channel/mtp2.h"
#include "channel/pt_chan.h"
#include "fuzz_env.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PENDING_MAX (PT_CHAN_FRAME_MAX + PT_CHAN_FRAME_HDR + PT_CHAN_HELLO_MAX)

typedef struct fz_server {
    pt_chan *c;
    pt_buf sealed; /* our answers to records */
    size_t records;
} fz_server;

static int on_record(void *ud, const uint8_t *rec, size_t len)
{
    fz_server *f = ud;
    if (!pt_chan_established(f->c) || (len && !rec)) abort();
    volatile uint8_t sink = 0; /* every byte must be readable (ASan checks) */
    for (size_t i = 0; i < len; i++) sink ^= rec[i];
    (void)sink;
    /* An answer shaped as a session record, so that every suite (MTProto needs
     * the inner header) can seal it. */
    uint8_t reply[PT_MTP2_INNER_HDR_LEN + 4] = {0};
    pt_put_u64le(reply + 16, ++f->records * 4 + 1);
    pt_put_u32le(reply + 28, 4);
    if (pt_chan_seal(f->c, &f->sealed, reply, sizeof reply) != 0) abort();
    return 0;
}

/* The server's output: a 6-byte server hello, then frames of at most
 * PT_CHAN_FRAME_MAX bytes (handshake messages, then nothing: the target's
 * records go to f->sealed). */
static void check_output(const pt_buf *out)
{
    if (out->len == 0) return;
    if (out->len < PT_CHAN_SERVER_HELLO_LEN || memcmp(out->data, "PTK\x01", 4) != 0) abort();
    size_t off = PT_CHAN_SERVER_HELLO_LEN;
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
    fz_env env;
    fz_env_init(&env, 0);
    uint8_t sk[32];
    fz_key(sk, FZ_SERVER_KEY);
    pt_chan_config cfg = {.is_server = true, .suites = fz_all_suites, .nsuites = PT_SUITE_MAX,
                          .static_sk = sk};
    fz_server f = {0};
    int err = -1;
    if (!(f.c = pt_chan_new(&env.env, &cfg, &err)) || err != 0) abort();
    pt_buf out;
    pt_buf_init(&out);
    pt_buf_init(&f.sealed);

    int failed = 0;
    size_t off = 0;
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
            int suite = pt_chan_suite(f.c);
            const uint8_t *hh = pt_chan_handshake_hash(f.c, &hlen);
            if (suite < PT_SUITE_MIN || suite > PT_SUITE_MAX || !pt_chan_remote_static(f.c) ||
                !hh || (hlen != 32 && hlen != 64))
                abort();
        }
        if (failed >= 2) break; /* one more call after the first error suffices */
    }
    /* Nothing more (an empty read) after an error is an error too. */
    if (failed && pt_chan_input(f.c, NULL, 0, &out, on_record, &f) == 0) abort();
    if (!failed && f.records && !pt_chan_established(f.c)) abort();
    check_output(&out);

    pt_buf_free(&out);
    pt_buf_free(&f.sealed);
    pt_chan_free(f.c);
    return 0;
}
