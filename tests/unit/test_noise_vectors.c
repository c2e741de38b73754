/* Noise against the cacophony vectors (../shared/vectors/noise/cacophony.txt):
 * every vector whose pattern and suite we implement, with the ephemeral keys
 * injected through the environment's randomness. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "noise/pt_noise.h"
#include "testutil.h"

static uint8_t *field(const cJSON *v, const char *name, size_t *len)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(v, name);
    if (!cJSON_IsString(f)) return NULL;
    return pt_test_unhex(f->valuestring, len);
}

/* Runs one vector; returns 1 if run, 0 if not applicable. Fails the test on mismatch. */
static int run_vector(const cJSON *v)
{
    const cJSON *jn = cJSON_GetObjectItemCaseSensitive(v, "name");
    if (!cJSON_IsString(jn)) jn = cJSON_GetObjectItemCaseSensitive(v, "protocol_name");
    if (!cJSON_IsString(jn)) return 0;
    const char *name = jn->valuestring;
    char pat[16];
    pt_noise_suite suite;
    if (strncmp(name, "Noise_", 6) != 0) return 0;
    const char *tail = strchr(name + 6, '_');
    if (!tail || (size_t)(tail - (name + 6)) >= sizeof pat) return 0;
    memcpy(pat, name + 6, (size_t)(tail - (name + 6)));
    pat[tail - (name + 6)] = 0;
    if (strcmp(tail, "_25519_ChaChaPoly_BLAKE2b") == 0)
        suite = PT_NOISE_CHACHAPOLY_BLAKE2B;
    else if (strcmp(tail, "_25519_AESGCM_SHA256") == 0)
        suite = PT_NOISE_AESGCM_SHA256;
    else
        return 0;
    pt_noise_pattern pattern;
    if (pt_noise_pattern_from_name(pat, &pattern) != 0) return 0;
    if (cJSON_GetObjectItemCaseSensitive(v, "init_psks")) return 0;

    size_t l_ip, l_rp, l_is, l_rs, l_ie, l_re, l_irs, l_rrs, l_hh;
    uint8_t *ipro = field(v, "init_prologue", &l_ip), *rpro = field(v, "resp_prologue", &l_rp);
    uint8_t *is = field(v, "init_static", &l_is), *rs = field(v, "resp_static", &l_rs);
    uint8_t *ie = field(v, "init_ephemeral", &l_ie), *re = field(v, "resp_ephemeral", &l_re);
    uint8_t *irs = field(v, "init_remote_static", &l_irs);
    uint8_t *rrs = field(v, "resp_remote_static", &l_rrs);
    uint8_t *hh = field(v, "handshake_hash", &l_hh);

    pt_test_env ienv, renv;
    pt_test_env_init(&ienv, ie, ie ? l_ie : 0);
    pt_test_env_init(&renv, re, re ? l_re : 0);
    pt_noise_hs *ini = pt_noise_hs_new(&ienv.env, pattern, suite, true, ipro, ipro ? l_ip : 0, is, irs);
    pt_noise_hs *res = pt_noise_hs_new(&renv.env, pattern, suite, false, rpro, rpro ? l_rp : 0, rs, rrs);
    if (!ini || !res) fail_msg("%s: handshake setup failed", name);

    bool one_way = strlen(pat) == 1;
    pt_noise_cs isend, irecv, rsend, rrecv;
    bool split = false;
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(v, "messages");
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        size_t lp, lc;
        uint8_t *payload = field(m, "payload", &lp), *ct = field(m, "ciphertext", &lc);
        bool from_init = one_way || i % 2 == 0;
        pt_buf out, got;
        pt_buf_init(&out);
        pt_buf_init(&got);
        if (!split) {
            pt_noise_hs *w = from_init ? ini : res, *r = from_init ? res : ini;
            assert_int_equal(pt_noise_hs_write(w, &out, payload, lp), 0);
            if (out.len != lc || memcmp(out.data, ct, lc) != 0)
                fail_msg("%s: handshake message %d differs", name, i);
            assert_int_equal(pt_noise_hs_read(r, &got, ct, lc), 0);
            assert_int_equal(got.len, lp);
            if (lp) assert_memory_equal(got.data, payload, lp);
            if (pt_noise_hs_done(ini)) {
                assert_true(pt_noise_hs_done(res));
                assert_int_equal(pt_noise_hs_split(ini, &isend, &irecv), 0);
                assert_int_equal(pt_noise_hs_split(res, &rsend, &rrecv), 0);
                size_t a, b;
                const uint8_t *h1 = pt_noise_hs_hash(ini, &a), *h2 = pt_noise_hs_hash(res, &b);
                assert_int_equal(a, b);
                assert_memory_equal(h1, h2, a);
                if (hh) assert_memory_equal(h1, hh, l_hh);
                split = true;
            }
        } else {
            pt_noise_cs *w = from_init ? &isend : &rsend, *r = from_init ? &rrecv : &irecv;
            uint8_t *o = pt_buf_extend(&out, lp + 16);
            assert_int_equal(pt_noise_cs_encrypt(w, o, NULL, 0, payload, lp), 0);
            if (lp + 16 != lc || memcmp(o, ct, lc) != 0)
                fail_msg("%s: transport message %d differs", name, i);
            uint8_t *g = pt_buf_extend(&got, lc);
            assert_int_equal(pt_noise_cs_decrypt(r, g, NULL, 0, ct, lc), 0);
            if (lp) assert_memory_equal(g, payload, lp);
        }
        pt_buf_free(&out);
        pt_buf_free(&got);
        free(payload);
        free(ct);
        i++;
    }
    assert_true(split);
    pt_noise_cs_clear(&isend);
    pt_noise_cs_clear(&irecv);
    pt_noise_cs_clear(&rsend);
    pt_noise_cs_clear(&rrecv);
    pt_noise_hs_free(ini);
    pt_noise_hs_free(res);
    free(ipro); free(rpro); free(is); free(rs); free(ie); free(re); free(irs); free(rrs); free(hh);
    return 1;
}

static void test_cacophony(void **state)
{
    (void)state;
    const char *path = pt_test_shared_path("vectors/noise/cacophony.txt");
    if (!path) {
        printf("skipped: ../shared/vectors/noise/cacophony.txt not present\n");
        return;
    }
    char *text = pt_test_read_file(path, NULL);
    assert_non_null(text);
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    int ran = 0, total = 0, xx = 0, ik = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(root, "vectors")) {
        total++;
        if (run_vector(v)) {
            ran++;
            const char *n = cJSON_GetObjectItemCaseSensitive(v, "name")->valuestring;
            xx += strncmp(n, "Noise_XX_", 9) == 0;
            ik += strncmp(n, "Noise_IK_", 9) == 0;
        }
    }
    printf("cacophony: %d of %d vectors apply and pass (XX: %d, IK: %d)\n", ran, total, xx, ik);
    assert_int_equal(xx, 2);
    assert_int_equal(ik, 2);
    assert_true(ran >= 30); /* 15 patterns x 2 suites */
    cJSON_Delete(root);
    free(text);
}

/* Tampering: a flipped bit in any handshake message fails the reader. */
static void test_tamper(void **state)
{
    (void)state;
    uint8_t isk[32], rsk[32], rpk[32];
    pt_random(isk, 32);
    pt_random(rsk, 32);
    assert_int_equal(pt_x25519_base(rpk, rsk), 0);
    for (int suite = 0; suite < 2; suite++) {
        for (int msg = 0; msg < 3; msg++) {
            for (int bit = 0; bit < 8 * 48; bit += 37) {
                pt_noise_hs *i = pt_noise_hs_new(pt_env_default(), PT_NOISE_XX, suite, true, NULL, 0, isk, NULL);
                pt_noise_hs *r = pt_noise_hs_new(pt_env_default(), PT_NOISE_XX, suite, false, NULL, 0, rsk, NULL);
                pt_buf b, p;
                pt_buf_init(&b);
                pt_buf_init(&p);
                bool failed = false;
                for (int k = 0; k < 3 && !failed; k++) {
                    pt_noise_hs *w = k % 2 ? r : i, *rd = k % 2 ? i : r;
                    pt_buf_reset(&b);
                    assert_int_equal(pt_noise_hs_write(w, &b, (const uint8_t *)"hi", 2), 0);
                    if (k == msg) b.data[(size_t)bit / 8 % b.len] ^= (uint8_t)(1u << (bit % 8));
                    int rc = pt_noise_hs_read(rd, &p, b.data, b.len);
                    /* msg 0 carries only e and a clear payload: a flip there is
                     * detected by the next message's tag, which covers h. */
                    if (rc != 0) failed = true;
                }
                assert_true(failed);
                pt_buf_free(&b);
                pt_buf_free(&p);
                pt_noise_hs_free(i);
                pt_noise_hs_free(r);
            }
        }
    }
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cacophony),
        cmocka_unit_test(test_tamper),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
