/* The fixed identity key that fuzz_disc_packet verifies records against, shared with
 * its seed generator (fuzz/seeds/make_disc_seeds.c) so that the seeds' signatures are
 * good ones and the fuzzer starts from the accepting path. Never outside fuzz/. */
#ifndef PT_FUZZ_DISC_H
#define PT_FUZZ_DISC_H

#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "discovery/pt_disc.h"

#define FZ_DISC_NOW_MS 1700000000000ull /* the clock the fuzz targets stand at */

/* pk (and sk, when not NULL) of the fixed identity: Ed25519 from seed "fuzz-disc..." */
static inline void fz_disc_identity(uint8_t pk[32], uint8_t *sk)
{
    static const uint8_t seed[32] = "fuzz-disc identity seed, fixed!";
    uint8_t skbuf[64];
    if (pt_ed25519_seed_keypair(pk, skbuf, seed) != 0) abort();
    if (sk) memcpy(sk, skbuf, 64);
}

#endif
