/* Writes the seed corpora of fuzz_olm_v1, fuzz_olm_pt1, fuzz_olm_bundle and
 * fuzz_olm_state into fuzz/corpus/<target>/ (files named seed-*; existing files
 * are overwritten, others left alone). Not part of the build: the seeds are
 * committed. It builds the same deterministic world as the targets
 * (fuzz/fuzz_olm_env.h), so the messages in the seeds decrypt there. Rerun it
 * after changing fuzz_env.h, fuzz_olm_env.h or the formats. From the repository
 * root, after building build-fz (or any build):
 *
 *   cc -std=c17 -D_DEFAULT_SOURCE -Isrc -Iinclude -Ibuild-fz/gen -Ifuzz \
 *      fuzz/seeds/make_olm_seeds.c build-fz/libptcore.a \
 *      $(pkg-config --libs libsodium libcrypto libuv zlib) -lpthread -o /tmp/make_olm_seeds
 *   /tmp/make_olm_seeds fuzz/corpus
 */
#include <errno.h>
#include <sys/stat.h>

#include "fuzz_olm_env.h"

static const char *root;
static int written;

static void write_seed(const char *target, const char *name, uint8_t mode, const uint8_t *p,
                       size_t n, bool with_mode)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, target);
    FZ_OLM_CHECK(mkdir(path, 0755) == 0 || errno == EEXIST);
    snprintf(path, sizeof path, "%s/%s/seed-%s", root, target, name);
    FILE *f = fopen(path, "wb");
    FZ_OLM_CHECK(f);
    if (with_mode) FZ_OLM_CHECK(fwrite(&mode, 1, 1, f) == 1);
    FZ_OLM_CHECK(n == 0 || fwrite(p, 1, n, f) == n);
    FZ_OLM_CHECK(fclose(f) == 0);
    written++;
}

static void messages(const char *target, pt_olm_suite suite)
{
    fz_olm w;
    fz_olm_build(&w, suite);
    static const char *names[FZ_OLM_MSGS] = {"m1", "m2", "r0", "r1", "n0", "f0"};
    static const uint8_t modes[FZ_OLM_MSGS] = {1, 1, 3, 3, 2, 2};
    char name[64];
    for (int i = 0; i < FZ_OLM_MSGS; i++) {
        const pt_buf *m = &w.msg[i];
        snprintf(name, sizeof name, "%s", names[i]);
        write_seed(target, name, modes[i], m->data, m->len, true);
        /* every message to every destination, and cut short */
        for (uint8_t mode = 0; mode < 4; mode++) {
            if (mode == modes[i]) continue;
            snprintf(name, sizeof name, "%s-to-%u", names[i], mode);
            write_seed(target, name, mode, m->data, m->len, true);
        }
        snprintf(name, sizeof name, "%s-cut", names[i]);
        write_seed(target, name, modes[i], m->data, m->len / 2, true);
    }
    /* the normal message inside a pre-key message, on its own */
    pt_olm_prekey p;
    FZ_OLM_CHECK(pt_olm_prekey_decode(&p, suite, w.msg[FZ_M1].data, w.msg[FZ_M1].len) == 0);
    write_seed(target, "m1-inner", 0, p.message, p.message_len, true);
    /* the other suite's message */
    fz_olm other;
    fz_olm_build(&other, suite == PT_OLM_SUITE_PT_V1 ? PT_OLM_SUITE_OLM_V1 : PT_OLM_SUITE_PT_V1);
    write_seed(target, "other-suite-r0", 3, other.msg[FZ_R0].data, other.msg[FZ_R0].len, true);
    write_seed(target, "other-suite-n0", 2, other.msg[FZ_N0].data, other.msg[FZ_N0].len, true);
}

static void bundles(void)
{
    fz_olm w;
    fz_olm_build(&w, PT_OLM_SUITE_PT_V1);
    uint8_t enc[PT_OLM_BUNDLE_LEN];
    pt_olm_bundle_encode(enc, &w.bundle);
    write_seed("fuzz_olm_bundle", "valid", 0, enc, sizeof enc, false);
    pt_olm_bundle b = w.bundle;
    b.suites = PT_OLM_SUITE_OLM_V1; /* a downgrade: the signature no longer verifies */
    pt_olm_bundle_encode(enc, &b);
    write_seed("fuzz_olm_bundle", "stripped-suites", 0, enc, sizeof enc, false);
    b = w.bundle;
    b.flags = PT_OLM_BUNDLE_FALLBACK;
    pt_olm_bundle_encode(enc, &b);
    write_seed("fuzz_olm_bundle", "flags", 0, enc, sizeof enc, false);
    write_seed("fuzz_olm_bundle", "short", 0, enc, 100, false);
}

static void states(void)
{
    for (int s = 0; s < 2; s++) {
        pt_olm_suite suite = s ? PT_OLM_SUITE_PT_V1 : PT_OLM_SUITE_OLM_V1;
        fz_olm w;
        fz_olm_build(&w, suite);
        const pt_buf *sealed[3] = {&w.sa, &w.sb, &w.acct_b};
        const char *names[3] = {"sa", "sb", "acct-b"};
        for (int i = 0; i < 3; i++) {
            uint8_t kind = i == 2 ? OLM_PICKLE_ACCOUNT : OLM_PICKLE_SESSION;
            pt_buf body;
            pt_buf_init(&body);
            FZ_OLM_CHECK(olm_pickle_open(&body, kind, FZ_OLM_PICKLE_KEY, 32, sealed[i]->data,
                                         sealed[i]->len) == 0);
            char name[64];
            snprintf(name, sizeof name, "%s-%s-body", s ? "pt1" : "olm1", names[i]);
            write_seed("fuzz_olm_state", name, i == 2 ? 1 : 0, body.data, body.len, true);
            snprintf(name, sizeof name, "%s-%s-sealed", s ? "pt1" : "olm1", names[i]);
            write_seed("fuzz_olm_state", name, 2, sealed[i]->data, sealed[i]->len, true);
            pt_buf_free(&body);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s fuzz/corpus\n", argv[0]);
        return 2;
    }
    root = argv[1];
    messages("fuzz_olm_v1", PT_OLM_SUITE_OLM_V1);
    messages("fuzz_olm_pt1", PT_OLM_SUITE_PT_V1);
    bundles();
    states();
    printf("make_olm_seeds: %d seeds written under %s\n", written, root);
    return 0;
}
