/* Fuzz target for bundles: pt_olm_bundle_decode, then (when it decodes) an exact
 * re-encoding, signature verification, and a session started from it by the fixed
 * account A of fuzz_olm_env.h. Properties, each abort()ing when broken: a bundle
 * that decodes re-encodes to the same bytes; a session starts only from a bundle
 * whose signature verifies and that names a suite we share, with the suite pt.v1
 * when both sides have it; every failure is an error code. Seeds:
 * fuzz/seeds/make_olm_seeds.c. */
#include "fuzz_olm_env.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fz_olm w;
    static int ready;
    if (!ready) {
        fz_olm_build(&w, PT_OLM_SUITE_PT_V1);
        ready = 1;
    }
    pt_olm_bundle b;
    if (pt_olm_bundle_decode(&b, data, size) != 0) return 0;
    uint8_t enc[PT_OLM_BUNDLE_LEN];
    pt_olm_bundle_encode(enc, &b);
    FZ_OLM_CHECK(size == PT_OLM_BUNDLE_LEN && memcmp(enc, data, size) == 0);
    int verified = pt_olm_bundle_verify(&b);
    FZ_OLM_CHECK(verified == 0 || verified == PT_ERR_AUTH);
    pt_olm_account *a = fz_olm_account(&w.acct_a);
    fz_env e;
    fz_env_init(&e, 0x77);
    pt_err err = 0;
    pt_olm_session *s = pt_olm_session_new_outbound(a, &e.env, &b, &err);
    if (s) {
        FZ_OLM_CHECK(verified == 0 && (b.suites & PT_OLM_SUITES_ALL));
        FZ_OLM_CHECK(pt_olm_session_suite(s) ==
                     ((b.suites & PT_OLM_SUITE_PT_V1) ? PT_OLM_SUITE_PT_V1 : PT_OLM_SUITE_OLM_V1));
        pt_buf out;
        pt_buf_init(&out);
        pt_olm_msg_type t;
        FZ_OLM_CHECK(pt_olm_encrypt(s, &e.env, data, 16, &out, &t) == 0 && t == PT_OLM_MSG_PREKEY);
        pt_buf_free(&out);
        pt_olm_session_free(s);
    } else {
        FZ_OLM_CHECK(err < 0);
        FZ_OLM_CHECK(verified != 0 || !(b.suites & PT_OLM_SUITES_ALL) || err == PT_ERR_WEAK_KEY);
    }
    pt_olm_account_free(a);
    return 0;
}
