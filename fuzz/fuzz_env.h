/* A deterministic pt_env for fuzz targets and their seed generator (fuzz targets
 * cannot link tests/util). Randomness is BLAKE2b(label ‖ counter) and restarts
 * with every fz_env_init(), so an input replays to the same bytes every time and
 * a seed written by fuzz/seeds/make_seeds.c meets the same ephemeral keys when the
 * target runs it. The clocks stand still. Not random: never outside fuzz/. */
#ifndef PT_FUZZ_ENV_H
#define PT_FUZZ_ENV_H

#include <stdlib.h>

#include "channel/pt_chan.h"
#include "common/pt_common.h"
#include "crypto/pt_crypto.h"

#define FZ_NOW_MS 1700000000000ull /* 2023-11-14T22:13:20Z, as pt_test_env */
#define FZ_MONO_MS 1000ull

typedef struct fz_env {
    pt_env env;       /* points back at this struct */
    uint64_t counter; /* blocks of randomness handed out so far */
    uint8_t label;    /* separates the streams of two parties in one process */
} fz_env;

static inline void fz_random(void *ctx, void *buf, size_t len)
{
    fz_env *e = ctx;
    uint8_t *p = buf;
    while (len > 0) {
        uint8_t blk[32], in[9];
        in[0] = e->label;
        pt_put_u64le(in + 1, e->counter++);
        if (pt_blake2b(blk, sizeof blk, in, sizeof in, NULL, 0) != 0) abort();
        size_t k = len < sizeof blk ? len : sizeof blk;
        memcpy(p, blk, k);
        p += k;
        len -= k;
    }
}
static inline uint64_t fz_now(void *ctx) { return (void)ctx, FZ_NOW_MS; }
static inline uint64_t fz_mono(void *ctx) { return (void)ctx, FZ_MONO_MS; }

static inline void fz_env_init(fz_env *e, uint8_t label)
{
    e->env.random = fz_random;
    e->env.now_ms = fz_now;
    e->env.mono_ms = fz_mono;
    e->env.ctx = e;
    e->counter = 0;
    e->label = label;
}

/* Fixed X25519 static private keys: the server's (which a client may pin) and a
 * client's; other_sk is a second server key for the key-mismatch paths. */
static inline void fz_key(uint8_t sk[32], uint8_t seed)
{
    for (int i = 0; i < 32; i++) sk[i] = (uint8_t)(seed + i * 29);
}
#define FZ_SERVER_KEY 0x51
#define FZ_CLIENT_KEY 0xc3
#define FZ_OTHER_KEY 0x7e

/* The five suites in wire order: what the server target allows. */
static const uint8_t fz_all_suites[PT_SUITE_MAX] = {1, 2, 3, 4, 5};

/* The client target's configuration from its first input byte, shared with the
 * seed generator because the client hello (hence the Noise prologue) depends on
 * it. mode % 3: 0 = XX unpinned, 1 = XX pinned to the server key, 2 = IK;
 * (mode / 3) % 6: 0 = offer all five suites (reversed when mode >= 128),
 * k = offer only suite k. pin (32 bytes) receives the pinned key. */
static inline void fz_client_config(uint8_t mode, pt_chan_config *cfg, uint8_t suites[PT_SUITE_MAX],
                                    const uint8_t client_sk[32], uint8_t pin[32])
{
    static const uint8_t rev[PT_SUITE_MAX] = {5, 4, 3, 2, 1};
    unsigned variant = mode % 3, which = (mode / 3u) % 6;
    uint8_t server_sk[32];
    fz_key(server_sk, FZ_SERVER_KEY);
    if (pt_x25519_base(pin, server_sk) != 0) abort();
    memset(cfg, 0, sizeof *cfg);
    if (which == 0) {
        memcpy(suites, mode >= 128 ? rev : fz_all_suites, PT_SUITE_MAX);
        cfg->nsuites = PT_SUITE_MAX;
    } else {
        suites[0] = (uint8_t)which;
        cfg->nsuites = 1;
    }
    cfg->is_server = false;
    cfg->suites = suites;
    cfg->static_sk = client_sk;
    cfg->server_pk = variant == 0 ? NULL : pin;
    cfg->use_ik = variant == 2;
}

/* The session target's server salt secret and session id. */
static inline void fz_salt_secret(uint8_t secret[32])
{
    for (int i = 0; i < 32; i++) secret[i] = (uint8_t)(0xa5 ^ i);
}
#define FZ_SESSION_ID 0x1122334455667788ull

#endif /* PT_FUZZ_ENV_H */
