/* pt_chat_receive on arbitrary envelopes, for a device that has one friend (so
 * SECURE envelopes reach the session code). Never crashes; a refusal always
 * comes with a receipt for the sender. */
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "e2e/pt_chat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t ctr;
static void det_random(void *ctx, void *buf, size_t len)
{
    (void)ctx;
    uint8_t *p = buf;
    while (len) {
        uint8_t blk[32], c[8];
        pt_put_u64le(c, ctr++);
        if (pt_blake2b(blk, 32, c, 8, (const uint8_t *)"fuzz", 4) != 0) abort();
        size_t k = len < 32 ? len : 32;
        memcpy(p, blk, k);
        p += k;
        len -= k;
    }
}
static uint64_t fixed_now(void *ctx) { (void)ctx; return 1763800000000ull; }
static const pt_env env = {det_random, fixed_now, fixed_now, NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        if (pt_init() != 0) abort();
        init = true;
    }
    ctr = 0;
    pt_err err;
    pt_olm_account *a = pt_olm_account_new(&env, PT_OLM_SUITES_ALL, &err);
    pt_olm_account *b = pt_olm_account_new(&env, PT_OLM_SUITES_ALL, &err);
    if (!a || !b || pt_olm_account_generate_one_time_keys(a, &env, 2) != 0) abort();
    pt_chat *ca = pt_chat_new(&env, a), *cb = pt_chat_new(&env, b);
    pt_buf req, acc, reply;
    pt_buf_init(&req);
    pt_buf_init(&acc);
    pt_buf_init(&reply);
    pt_olm_key k;
    if (!ca || !cb || pt_olm_account_unpublished_keys(a, &k, 1) != 1 ||
        pt_chat_friend_request(ca, k.id, NULL, &req) != 0 ||
        pt_chat_friend_accept(cb, req.data, req.len, &acc) != 0)
        abort();
    pt_chat_event ev;
    if (pt_chat_receive(ca, acc.data, acc.len, &ev, &reply) != 0 || ev.type != PT_CHAT_EV_FRIEND_ACCEPTED)
        abort();
    pt_buf_reset(&reply);
    /* the input, as an envelope to alice */
    int rc = pt_chat_receive(ca, data, size, &ev, &reply);
    if (rc != 0 && rc != PT_ERR_NOMEM) abort();
    if (ev.type == PT_CHAT_EV_REJECTED && reply.len == 0) abort();
    pt_buf_free(&req);
    pt_buf_free(&acc);
    pt_buf_free(&reply);
    pt_chat_free(ca);
    pt_chat_free(cb);
    pt_olm_account_free(a);
    pt_olm_account_free(b);
    return 0;
}
