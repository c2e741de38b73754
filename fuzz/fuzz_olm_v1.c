/* Fuzz target for olm.v1 messages (libolm's format), normal and pre-key: decode ->
 * encode -> decode round trips, then a decrypt attempt on the fixed world of
 * fuzz_olm_env.h picked by the first byte (a normal or pre-key message to B's
 * session, a pre-key message starting a session on B's account, a normal message
 * to A's session). Properties, each abort()ing when broken: round trips agree and
 * are stable; a refused message appends nothing and leaves the session (or the
 * account) byte-for-byte as it was; a message that decrypts is refused when it
 * comes again. Seeds: fuzz/seeds/make_olm_seeds.c. */
#include "fuzz_olm_env.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fz_olm w;
    static int ready;
    if (!ready) {
        fz_olm_build(&w, PT_OLM_SUITE_OLM_V1);
        ready = 1;
    }
    return fz_olm_message_target(&w, data, size);
}
