/* Fuzz target for the sealed Olm state (src/e2e/olm_pickle.c and the two body
 * parsers). The AEAD stops any changed pickle before a parser sees it, so the
 * input is sealed here under the fixed key first: data[0] picks
 *   0: the rest is a session body   1: the rest is an account body
 *   2: the rest is a whole pickle, opened as a session and as an account.
 * Properties, each abort()ing when broken: a body that loads comes back out as the
 * same bytes (restored exactly); what does not load is an error code, nothing
 * half-built. Seeds (the real bodies of fuzz_olm_env.h's world):
 * fuzz/seeds/make_olm_seeds.c. */
#include "fuzz_olm_env.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void roundtrip(uint8_t kind, const uint8_t *body, size_t len)
{
    fz_env e;
    fz_env_init(&e, 0x3c);
    pt_buf in, sealed, again, body2;
    pt_buf_init(&in);
    pt_buf_init(&sealed);
    pt_buf_init(&again);
    pt_buf_init(&body2);
    FZ_OLM_CHECK(pt_buf_append(&in, body, len) == 0);
    FZ_OLM_CHECK(olm_pickle_seal(&sealed, &e.env, kind, FZ_OLM_PICKLE_KEY, 32, &in) == 0);
    pt_err err = 0;
    if (kind == OLM_PICKLE_SESSION) {
        pt_olm_session *s =
            pt_olm_session_unpickle(FZ_OLM_PICKLE_KEY, 32, sealed.data, sealed.len, &err);
        if (s) FZ_OLM_CHECK(pt_olm_session_pickle(s, &e.env, FZ_OLM_PICKLE_KEY, 32, &again) == 0);
        FZ_OLM_CHECK(s ? err == 0 : err < 0);
        pt_olm_session_free(s);
    } else {
        pt_olm_account *a =
            pt_olm_account_unpickle(FZ_OLM_PICKLE_KEY, 32, sealed.data, sealed.len, &err);
        if (a) FZ_OLM_CHECK(pt_olm_account_pickle(a, &e.env, FZ_OLM_PICKLE_KEY, 32, &again) == 0);
        FZ_OLM_CHECK(a ? err == 0 : err < 0);
        pt_olm_account_free(a);
    }
    if (err == 0) {
        FZ_OLM_CHECK(olm_pickle_open(&body2, kind, FZ_OLM_PICKLE_KEY, 32, again.data, again.len) ==
                     0);
        FZ_OLM_CHECK(body2.len == len && (len == 0 || memcmp(body2.data, body, len) == 0));
    }
    pt_buf_free(&in);
    pt_buf_free(&sealed);
    pt_buf_free(&again);
    pt_buf_free(&body2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FZ_OLM_CHECK(pt_init() == 0);
    if (size < 1) return 0;
    switch (data[0] % 3) {
    case 0:
        roundtrip(OLM_PICKLE_SESSION, data + 1, size - 1);
        break;
    case 1:
        roundtrip(OLM_PICKLE_ACCOUNT, data + 1, size - 1);
        break;
    default: {
        pt_err err = 0;
        pt_olm_session *s =
            pt_olm_session_unpickle(FZ_OLM_PICKLE_KEY, 32, data + 1, size - 1, &err);
        FZ_OLM_CHECK(s ? err == 0 : err < 0);
        pt_olm_session_free(s);
        pt_olm_account *a =
            pt_olm_account_unpickle(FZ_OLM_PICKLE_KEY, 32, data + 1, size - 1, &err);
        FZ_OLM_CHECK(a ? err == 0 : err < 0);
        pt_olm_account_free(a);
    }
    }
    return 0;
}
