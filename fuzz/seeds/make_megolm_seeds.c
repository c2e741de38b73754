/* Writes the seed corpora of fuzz_megolm_msg, fuzz_megolm_key, fuzz_megolm_state,
 * fuzz_group_op and fuzz_group_state into fuzz/corpus/<target>/ (files named
 * seed-*; existing files are overwritten, others left alone). Not part of the
 * build: the seeds are committed. It builds the same fixtures as the targets in
 * the same deterministic fuzz_env (the Megolm session of label 0x4d, the group of
 * label 0x47 with fz_key identities 0x10.. and devices 0x40..), so the messages,
 * keys and ops in the seeds verify when the targets run them. Rerun it after
 * changing fuzz_env.h, the formats or the targets' fixtures. From the repository
 * root, after building build-meg:
 *
 *   cc -std=c17 -D_DEFAULT_SOURCE -Isrc -Iinclude -Ibuild-meg/gen -Ifuzz \
 *      fuzz/seeds/make_megolm_seeds.c build-meg/libptcore.a \
 *      $(pkg-config --libs libsodium libcrypto libuv zlib) -lpthread -o /tmp/make_megolm_seeds
 *   /tmp/make_megolm_seeds fuzz/corpus
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "e2e/pt_group.h"
#include "e2e/pt_megolm.h"
#include "fuzz_env.h"

static const char *root;
static int written;

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "make_megolm_seeds: %s:%d: %s\n", __FILE__, __LINE__, #x);             \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* Writes mode || body as <root>/<target>/seed-<name>. */
static void seed(const char *target, const char *name, uint8_t mode, const uint8_t *body,
                 size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, target);
    CHECK(mkdir(path, 0755) == 0 || errno == EEXIST);
    snprintf(path, sizeof path, "%s/%s/seed-%s", root, target, name);
    FILE *f = fopen(path, "wb");
    CHECK(f);
    CHECK(fwrite(&mode, 1, 1, f) == 1);
    CHECK(len == 0 || fwrite(body, 1, len, f) == len);
    CHECK(fclose(f) == 0);
    written++;
}

/* ---- Megolm ------------------------------------------------------------------- */

static void megolm(void)
{
    fz_env e;
    fz_env_init(&e, 0x4d); /* fuzz_megolm_msg's sender */
    pt_megolm_out *o = pt_megolm_out_new(&e.env, NULL);
    CHECK(o);
    uint8_t key[PT_MEGOLM_SESSION_KEY_LEN], ex[PT_MEGOLM_EXPORT_LEN];
    CHECK(pt_megolm_out_session_key(o, key) == 0);
    pt_megolm_in *in = pt_megolm_in_from_session_key(key, sizeof key, NULL);
    CHECK(in);
    pt_buf m, st;
    pt_buf_init(&m);
    pt_buf_init(&st);
    static const char *const texts[] = {"", "hello", "exactly sixteen!",
                                        "a longer group message, over two blocks"};
    char name[64];
    for (int i = 0; i < 4; i++) {
        pt_buf_reset(&m);
        CHECK(pt_megolm_out_encrypt(o, &m, (const uint8_t *)texts[i], strlen(texts[i])) == 0);
        snprintf(name, sizeof name, "msg-index%d", i);
        seed("fuzz_megolm_msg", name, 0, m.data, m.len);
        if (i == 1) {
            CHECK(pt_megolm_in_decrypt(in, &st, NULL, m.data, m.len, 0) == 0);
            m.data[m.len - 70] ^= 1; /* the MAC */
            seed("fuzz_megolm_msg", "msg-bad-mac", 0, m.data, m.len);
        }
    }
    /* a hand-built message with unknown fields (does not verify: reaches the signature) */
    uint8_t odd[1 + 3 + 2 + 2 + 16 + 5 + 72] = {3, 0x18, 0x7f, 0x00, 0x08, 0x05, 0x12, 16};
    memcpy(odd + 8 + 16,
           "\x22\x03"
           "abc",
           5);
    seed("fuzz_megolm_msg", "msg-unknown-fields", 0, odd, sizeof odd);
    /* round trips at chosen indices */
    static const uint32_t idx[] = {0, 1, 255, 256, 65536, 0x01000000u, 0xfffffffeu, 0xffffffffu};
    for (size_t i = 0; i < sizeof idx / sizeof idx[0]; i++) {
        uint8_t b[4 + 20];
        pt_put_u32le(b, idx[i]);
        memcpy(b + 4, "plaintext for round", 20);
        snprintf(name, sizeof name, "roundtrip-%08x", idx[i]);
        seed("fuzz_megolm_msg", name, 1, b, sizeof b);
    }

    /* keys */
    seed("fuzz_megolm_key", "session-key", 0, key, sizeof key);
    CHECK(pt_megolm_in_export(in, 300, ex) == 0);
    seed("fuzz_megolm_key", "export-300", 1, ex, sizeof ex);
    key[100] ^= 1;
    seed("fuzz_megolm_key", "session-key-bad-sig", 0, key, sizeof key);
    key[100] ^= 1;
    uint8_t r[6 + 1 + 128];
    for (size_t i = 0; i < sizeof r; i++)
        r[i] = (uint8_t)(i * 7 + 3);
    pt_put_u32le(r, 0x00fffff0u);
    r[4] = 0x40; /* distance 0x40 (mode 2: steps and jump) */
    r[5] = 0;
    seed("fuzz_megolm_key", "ratchet-steps", 2, r, sizeof r);
    pt_put_u32le(r, 0x12345678u);
    r[4] = 0xff;
    r[5] = 0xff;
    seed("fuzz_megolm_key", "ratchet-jump", 3, r, sizeof r);

    /* states: an inbound with gaps in its replay record, an outbound */
    pt_buf_reset(&m);
    for (int i = 0; i < 3; i++) {
        pt_buf_reset(&m);
        CHECK(pt_megolm_out_encrypt(o, &m, (const uint8_t *)"x", 1) == 0);
        if (i != 1) CHECK(pt_megolm_in_decrypt(in, &st, NULL, m.data, m.len, 0) == 0);
    }
    pt_buf_reset(&st);
    CHECK(pt_megolm_in_serialize(in, &st) == 0);
    seed("fuzz_megolm_state", "in", 0, st.data, st.len);
    seed("fuzz_megolm_state", "in-fix", 2, st.data, st.len);
    pt_buf_reset(&st);
    CHECK(pt_megolm_out_serialize(o, &st) == 0);
    seed("fuzz_megolm_state", "out", 1, st.data, st.len);
    seed("fuzz_megolm_state", "out-fix", 3, st.data, st.len);
    pt_buf_free(&m);
    pt_buf_free(&st);
    pt_megolm_in_free(in);
    pt_megolm_out_free(o);
}

/* ---- groups ------------------------------------------------------------------- */

static const char *const names[4] = {"alice", "bob", "carol", "server"};
#define U(i) (const uint8_t *)names[i], strlen(names[i])

static void keypair(uint8_t pk[32], uint8_t sk[64], uint8_t seed_byte)
{
    uint8_t s[32];
    fz_key(s, seed_byte);
    CHECK(pt_ed25519_seed_keypair(pk, sk, s) == 0);
}

static void group(void)
{
    uint8_t id_pk[4][32], id_sk[4][64], dev_pk[4][2][32], dev_sk[4][2][64];
    for (int i = 0; i < 4; i++) {
        keypair(id_pk[i], id_sk[i], (uint8_t)(0x10 + i));
        for (int d = 0; d < 2; d++)
            keypair(dev_pk[i][d], dev_sk[i][d], (uint8_t)(0x40 + 2 * i + d));
    }
    fz_env e;
    fz_env_init(&e, 0x47);
    pt_buf op, b;
    pt_buf_init(&op);
    pt_buf_init(&b);
    pt_group *g;
    CHECK(pt_group_op_create(&op, &e.env, id_pk[0], id_sk[0], U(0), (const uint8_t(*)[32])dev_pk[0],
                             2) == 0);
    CHECK((g = pt_group_from_create(op.data, op.len, id_pk[0], NULL)));
    seed("fuzz_group_op", "replayed-create", 0, op.data, op.len);
    pt_buf_reset(&op);
    CHECK(pt_group_op_add_member(g, &op, id_pk[0], id_sk[0], U(1), id_pk[1],
                                 (const uint8_t(*)[32])dev_pk[1], 1) == 0);
    CHECK(pt_group_apply(g, op.data, op.len) == 0);
    pt_buf_reset(&op);
    CHECK(pt_group_op_add_member(g, &op, id_pk[0], id_sk[0], U(2), id_pk[2],
                                 (const uint8_t(*)[32])dev_pk[2], 2) == 0);
    CHECK(pt_group_apply(g, op.data, op.len) == 0);
    pt_buf_reset(&op);
    CHECK(pt_group_op_promote(g, &op, id_pk[0], id_sk[0], U(2)) == 0);
    CHECK(pt_group_apply(g, op.data, op.len) == 0);

    /* ops valid on the fixture (fuzz_group_op restores it for every input) */
    pt_buf_reset(&op);
    CHECK(pt_group_op_add_device(g, &op, id_pk[2], id_sk[2], U(1), dev_pk[1][1]) == 0);
    seed("fuzz_group_op", "add-device", 0, op.data, op.len);
    op.data[1] = PT_GROUP_OP_REMOVE_DEVICE;
    seed("fuzz_group_op", "kind-swapped", 0, op.data, op.len);
    pt_buf_reset(&op);
    CHECK(pt_group_op_remove_member(g, &op, id_pk[0], id_sk[0], U(2)) == 0);
    seed("fuzz_group_op", "remove-member", 0, op.data, op.len);
    pt_buf_reset(&op);
    CHECK(pt_group_op_promote(g, &op, id_pk[2], id_sk[2], U(1)) == 0);
    seed("fuzz_group_op", "promote", 0, op.data, op.len);
    pt_buf_reset(&op);
    CHECK(pt_group_op_remove_device(g, &op, id_pk[0], id_sk[0], U(2), dev_pk[2][0]) == 0);
    seed("fuzz_group_op", "remove-device", 0, op.data, op.len);
    pt_buf_reset(&op);
    uint8_t newdev[2][32];
    fz_key(newdev[0], 0x70);
    fz_key(newdev[1], 0x71);
    CHECK(pt_group_op_add_member(g, &op, id_pk[0], id_sk[0], U(3), id_pk[3],
                                 (const uint8_t(*)[32])newdev, 2) == 0);
    seed("fuzz_group_op", "add-member", 0, op.data, op.len);
    /* announcements */
    uint8_t sid[32];
    fz_key(sid, 0x33);
    pt_buf_reset(&op);
    CHECK(pt_group_sender_key_make(g, &op, U(1), dev_pk[1][0], dev_sk[1][0], sid, 12) == 0);
    seed("fuzz_group_op", "sender-key", 1, op.data, op.len);
    /* specs for the signing mode: kind, signer | target << 4, device byte */
    static const uint8_t specs[][3] = {{0, 0x30, 0x01}, {1, 0x20, 0x00}, {2, 0x12, 0x00},
                                       {3, 0x10, 0x80}, {4, 0x20, 0x00}, {4, 0x02, 0x00},
                                       {0, 0x33, 0x00}, {3, 0x20, 0x00}};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        uint8_t sp[3 + 64];
        memcpy(sp, specs[i], 3);
        for (int k = 0; k < 64; k++)
            sp[3 + k] = (uint8_t)(i * 31 + k);
        char name[32];
        snprintf(name, sizeof name, "signed-%zu", i);
        seed("fuzz_group_op", name, 2, sp, sizeof sp);
    }

    /* stored state and chain, after a removal (rotation flag set) */
    pt_buf_reset(&op);
    CHECK(pt_group_op_remove_device(g, &op, id_pk[0], id_sk[0], U(2), dev_pk[2][1]) == 0);
    CHECK(pt_group_apply(g, op.data, op.len) == 0);
    CHECK(pt_group_serialize(g, &b) == 0);
    seed("fuzz_group_state", "state", 0, b.data, b.len);
    seed("fuzz_group_state", "state-pinned", 2, b.data, b.len);
    seed("fuzz_group_state", "state-fix", 6, b.data, b.len);
    pt_buf_reset(&b);
    CHECK(pt_group_chain(g, &b) == 0);
    seed("fuzz_group_state", "chain", 1, b.data, b.len);
    seed("fuzz_group_state", "chain-pinned", 3, b.data, b.len);
    pt_buf_free(&op);
    pt_buf_free(&b);
    pt_group_free(g);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s fuzz/corpus\n", argv[0]);
        return 2;
    }
    root = argv[1];
    CHECK(pt_init() == 0);
    megolm();
    group();
    printf("make_megolm_seeds: %d seeds written under %s\n", written, root);
    return 0;
}
