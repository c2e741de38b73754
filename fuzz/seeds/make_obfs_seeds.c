/* Writes the seed corpora of fuzz_mse_receiver, fuzz_mse_initiator and
 * fuzz_ptobfs_server into fuzz/corpus/<target>/ (files named seed-*; existing
 * files are overwritten, others left alone). Not part of the build: the seeds are
 * committed. It runs both peers in the deterministic fuzz_env with the labels and
 * configurations of fuzz_obfs.h, so the handshakes recorded meet the keys the
 * targets draw. Rerun it after changing fuzz_obfs.h, fuzz_env.h or the formats.
 * From the repository root, after building build (any configuration):
 *
 *   cc -std=c17 -D_DEFAULT_SOURCE -Isrc -Iinclude -Ifuzz \
 *      fuzz/seeds/make_obfs_seeds.c build/libptcore.a \
 *      $(pkg-config --libs libsodium libcrypto libuv zlib sqlite3) -lpthread -o /tmp/make_obfs_seeds
 *   /tmp/make_obfs_seeds fuzz/corpus
 */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_obfs.h"

#define CHECK(x)                                                                  \
    do {                                                                          \
        if (!(x)) {                                                               \
            fprintf(stderr, "make_obfs_seeds: %s:%d: %s\n", __FILE__, __LINE__, #x); \
            exit(1);                                                              \
        }                                                                         \
    } while (0)

static const char *root;

/* A seed: mode byte, then the stream cut into chunks of `chunk` bytes. */
static void write_seed(const char *target, const char *name, uint8_t mode, const uint8_t *s,
                       size_t len, size_t chunk)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/seed-%s", root, target, name);
    FILE *f = fopen(path, "wb");
    CHECK(f);
    fputc(mode, f);
    for (size_t off = 0; off < len;) {
        size_t n = len - off < chunk ? len - off : chunk;
        fputc((int)n, f);
        CHECK(fwrite(s + off, 1, n, f) == n);
        off += n;
    }
    CHECK(fclose(f) == 0);
    printf("%s\n", path);
}

/* Runs an MSE handshake plus one payload each way; records each side's bytes. */
static void mse_pair(uint8_t mode, pt_buf *a_sent, pt_buf *b_sent)
{
    fz_env ea, eb;
    fz_env_init(&ea, FZ_LABEL_MSE_A);
    fz_env_init(&eb, FZ_LABEL_MSE_B);
    pt_mse_config ca, cb;
    pt_mse_skey ka, kb;
    fz_mse_config(&ca, true, mode, &ka);
    fz_mse_config(&cb, false, mode, &kb);
    int err;
    pt_mse *a = pt_mse_new(&ea.env, &ca, &err), *b = pt_mse_new(&eb.env, &cb, &err);
    CHECK(a && b);
    pt_buf pa, pb;
    pt_buf_init(&pa);
    pt_buf_init(&pb);
    CHECK(pt_mse_start(a, a_sent) == 0 && pt_mse_start(b, b_sent) == 0);
    size_t da = 0, db = 0;
    for (int i = 0; i < 6; i++) {
        if (da < a_sent->len) {
            CHECK(pt_mse_input(b, a_sent->data + da, a_sent->len - da, b_sent, &pb) >= 0);
            da = a_sent->len;
        }
        if (db < b_sent->len) {
            CHECK(pt_mse_input(a, b_sent->data + db, b_sent->len - db, a_sent, &pa) >= 0);
            db = b_sent->len;
        }
    }
    CHECK(pt_mse_done(a) && pt_mse_done(b));
    CHECK(pt_mse_seal(a, a_sent, (const uint8_t *)"from A", 6) == 0);
    CHECK(pt_mse_seal(b, b_sent, (const uint8_t *)"from B", 6) == 0);
    pt_mse_free(a);
    pt_mse_free(b);
    pt_buf_free(&pa);
    pt_buf_free(&pb);
}

int main(int argc, char **argv)
{
    CHECK(argc == 2);
    root = argv[1];
    CHECK(pt_init() == 0);
    pt_log_set_level(PT_LOG_ERROR);
    static const uint8_t modes[] = {0, 1, 4, 5};
    for (size_t i = 0; i < sizeof modes; i++) {
        pt_buf as, bs;
        pt_buf_init(&as);
        pt_buf_init(&bs);
        mse_pair(modes[i], &as, &bs);
        char name[32];
        snprintf(name, sizeof name, "mode%u-whole", modes[i]);
        write_seed("fuzz_mse_receiver", name, modes[i], as.data, as.len, 255);
        write_seed("fuzz_mse_initiator", name, modes[i], bs.data, bs.len, 255);
        snprintf(name, sizeof name, "mode%u-split", modes[i]);
        write_seed("fuzz_mse_receiver", name, modes[i], as.data, as.len, 17);
        write_seed("fuzz_mse_initiator", name, modes[i], bs.data, bs.len, 17);
        /* The same stream with everything rules can defer deferred. */
        snprintf(name, sizeof name, "mode%u-defer", modes[i] | 2);
        write_seed("fuzz_mse_receiver", name, (uint8_t)(modes[i] | 2), as.data, as.len, 100);
        pt_buf_free(&as);
        pt_buf_free(&bs);
    }
    uint8_t junk[1400];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 151 + 7);
    write_seed("fuzz_mse_receiver", "junk", 0, junk, sizeof junk, 200);
    write_seed("fuzz_mse_initiator", "junk", 0, junk, sizeof junk, 200);

    for (int decoy = 0; decoy < 2; decoy++) {
        fz_env ec;
        fz_env_init(&ec, FZ_LABEL_OBFS_C);
        pt_obfs_config cfg;
        fz_obfs_config(&cfg, false, NULL);
        int err;
        pt_obfs *c = pt_obfs_new(&ec.env, &cfg, &err);
        CHECK(c);
        pt_buf out;
        pt_buf_init(&out);
        uint8_t payload[32];
        for (int i = 0; i < 32; i++) payload[i] = (uint8_t)i;
        CHECK(pt_obfs_client_start(c, payload, &out) == 0);
        CHECK(pt_obfs_seal(c, &out, (const uint8_t *)"first record", 12) == 0);
        CHECK(pt_obfs_seal(c, &out, NULL, 0) == 0);
        CHECK(pt_obfs_seal(c, &out, junk, 600) == 0);
        write_seed("fuzz_ptobfs_server", decoy ? "flight-decoy" : "flight", (uint8_t)decoy,
                   out.data, out.len, 255);
        write_seed("fuzz_ptobfs_server", decoy ? "flight-split-decoy" : "flight-split",
                   (uint8_t)decoy, out.data, out.len, 9);
        pt_buf_free(&out);
        pt_obfs_free(c);
    }
    write_seed("fuzz_ptobfs_server", "junk", 1, junk, sizeof junk, 255);
    return 0;
}
