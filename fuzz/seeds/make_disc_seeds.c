/* Writes the seed corpora of fuzz_disc_packet and fuzz_p2p_record into
 * fuzz/corpus/<target>/ (files named seed-*; existing ones are overwritten): a valid
 * packet of each discovery type, records signed by the fixed key of fuzz/fuzz_disc.h,
 * and a valid peer-to-peer record of each type. Not part of the build: the seeds are
 * committed. From the repository root, after building build/:
 *
 *   cc -std=c17 -D_DEFAULT_SOURCE -Isrc -Iinclude -Ibuild/gen -Ifuzz \
 *      fuzz/seeds/make_disc_seeds.c build/libptcore.a \
 *      $(pkg-config --libs libsodium libcrypto libuv zlib) -lpthread -o /tmp/make_disc_seeds
 *   /tmp/make_disc_seeds fuzz/corpus
 */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_disc.h"

static const char *root;

#define CHECK(x)                                                                        \
    do {                                                                                \
        if (!(x)) {                                                                     \
            fprintf(stderr, "make_disc_seeds: %s:%d: %s failed\n", __FILE__, __LINE__, #x); \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

static void write_seed(const char *target, const char *name, const uint8_t *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s/seed-%s", root, target, name);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(p, 1, n, f) == n && fclose(f) == 0);
}

static void disc(const char *name, pt_disc_pkt *p)
{
    uint8_t out[PT_DISC_MAX_LEN];
    size_t n;
    CHECK(pt_disc_encode(p, out, sizeof out, &n) == 0);
    write_seed("fuzz_disc_packet", name, out, n);
}

static void p2p(const char *name, const pt_p2p_rec *r)
{
    pt_buf b;
    pt_buf_init(&b);
    CHECK(pt_p2p_encode(r, &b) == 0);
    write_seed("fuzz_p2p_record", name, b.data, b.len);
    pt_buf_free(&b);
}

int main(int argc, char **argv)
{
    CHECK(argc == 2 && pt_crypto_init() == 0);
    root = argv[1];
    uint8_t pk[32], sk[64];
    fz_disc_identity(pk, sk);
    pt_disc_pkt p;

    memset(&p, 0, sizeof p);
    p.type = PT_DISC_BSM;
    memset(p.nonce, 0x11, 16);
    disc("bsm", &p);

    p.type = PT_DISC_BSR;
    memset(p.server_key, 0x22, 32);
    p.port = 7000;
    p.obfs = PT_DISC_OBFS_PLAIN | PT_DISC_OBFS_MSE;
    disc("bsr", &p);

    memset(&p, 0, sizeof p);
    p.type = PT_DISC_BPM;
    memset(p.nonce, 0x33, 16);
    disc("bpm-anonymous", &p);

    p.flags = PT_DISC_FLAG_RECORD;
    memset(p.rec.user_id, 0x44, 16);
    memcpy(p.rec.device, pk, 32);
    static const uint8_t v4[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 20};
    memcpy(p.rec.addr, v4, 16);
    p.rec.port = 7100;
    p.rec.ts_ms = FZ_DISC_NOW_MS;
    CHECK(pt_disc_record_sign(&p.rec, p.type, p.nonce, sk) == 0);
    CHECK(pt_disc_record_verify(&p.rec, p.type, p.nonce, pk) == 0);
    disc("bpm-record", &p);

    p.type = PT_DISC_BPR;
    p.flags = 0;
    static const uint8_t v6[16] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    memcpy(p.rec.addr, v6, 16);
    CHECK(pt_disc_record_sign(&p.rec, p.type, p.nonce, sk) == 0);
    CHECK(pt_disc_record_verify(&p.rec, p.type, p.nonce, pk) == 0);
    disc("bpr", &p);

    pt_p2p_rec r;
    memset(&r, 0, sizeof r);
    r.type = PT_P2P_HELLO;
    memset(r.user_id, 0x44, 16);
    p2p("hello", &r);
    memset(&r, 0, sizeof r);
    r.type = PT_P2P_MSG;
    static const uint8_t env[] = "an end-to-end envelope";
    r.env = env;
    r.env_len = sizeof env - 1;
    p2p("msg", &r);
    r.has_group = true;
    memset(r.group_id, 0x55, 16);
    p2p("msg-group", &r);
    memset(&r, 0, sizeof r);
    r.type = PT_P2P_ACK;
    memset(r.hash, 0x66, 16);
    p2p("ack", &r);
    static const struct { uint8_t type; const char *name; } bare[] = {
        {PT_P2P_BYE, "bye"}, {PT_P2P_PING, "ping"}, {PT_P2P_PONG, "pong"}};
    for (size_t i = 0; i < PT_ARRAY_LEN(bare); i++) {
        memset(&r, 0, sizeof r);
        r.type = bare[i].type;
        p2p(bare[i].name, &r);
    }
    return 0;
}
