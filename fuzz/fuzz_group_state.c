/* Fuzz target for stored group state and membership chains (pt_group_restore,
 * pt_group_from_chain, src/e2e/group). The first byte picks a mode: bit 0 the
 * format (0: a serialized state, 1: a bare chain), bit 1 whether to pin the
 * creator (the fixed key of the corpus's creator) or trust the chain's CREATE,
 * bit 2 (states only) whether this target first rewrites the trailing SHA-256
 * checksum so the chain inside is reached. Properties: a refusal is one of the
 * documented codes; an accepted state serializes (or chains) back to exactly the
 * input, its epoch is the op count minus one, and a pinned creator is the one it
 * reports. Any broken property abort()s. */
#include <stdlib.h>

#include "fuzz_env.h"
#include "e2e/pt_group.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t creator[32];
    static int inited;
    if (!inited) {
        uint8_t seed[32], sk[64];
        if (pt_init() != 0) abort();
        fz_key(seed, 0x10); /* alice in fuzz_group_op.c and the corpus */
        if (pt_ed25519_seed_keypair(creator, sk, seed) != 0) abort();
        inited = 1;
    }
    if (size < 1) return 0;
    bool chain = data[0] & 1, pin = data[0] & 2, fix = data[0] & 4;
    size_t len = size - 1;
    uint8_t *b = malloc(len ? len : 1);
    if (!b) abort();
    memcpy(b, data + 1, len);
    if (!chain && fix && len >= 32 && pt_hash(PT_HASH_SHA256, b + len - 32, b, len - 32) != 0)
        abort();
    pt_err e;
    pt_group *g = chain ? pt_group_from_chain(b, len, pin ? creator : NULL, &e)
                        : pt_group_restore(b, len, pin ? creator : NULL, &e);
    if (!g) {
        if (e != PT_ERR_DECODE && e != PT_ERR_VERSION && e != PT_ERR_TOO_BIG && e != PT_ERR_AUTH &&
            e != PT_ERR_STATE && e != PT_ERR_REPLAY)
            abort();
    } else {
        pt_buf again;
        pt_buf_init(&again);
        if ((chain ? pt_group_chain(g, &again) : pt_group_serialize(g, &again)) != 0 ||
            again.len != len || memcmp(again.data, b, len) != 0)
            abort();
        const uint8_t *c = chain ? b : b + 6;
        if (pt_group_epoch(g) + 1 != pt_get_u32le(c)) abort();
        if (pin && memcmp(pt_group_creator(g), creator, 32) != 0) abort();
        if (pt_group_member_count(g) == 0) abort();
        pt_buf_free(&again);
        pt_group_free(g);
    }
    free(b);
    return 0;
}
