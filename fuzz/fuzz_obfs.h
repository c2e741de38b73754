/* Configurations shared by the obfuscation fuzz targets (fuzz_mse_receiver,
 * fuzz_mse_initiator, fuzz_ptobfs_server) and their seed generator
 * (fuzz/seeds/make_obfs_seeds.c), so that seeds meet the keys the targets draw
 * in the deterministic fuzz_env. Each input is one mode byte, then chunks: a
 * length byte and that many bytes (the last may be short), one
 * pt_*_input call per chunk. */
#ifndef PT_FUZZ_OBFS_H
#define PT_FUZZ_OBFS_H

#include "fuzz_env.h"
#include "obfs/pt_mse.h"
#include "obfs/pt_ptobfs.h"

#define FZ_LABEL_MSE_A 0x41  /* fuzz_env stream of the MSE initiator */
#define FZ_LABEL_MSE_B 0x42  /* ... of the MSE receiver */
#define FZ_LABEL_OBFS_C 0x43 /* ... of the pt-obfs client */
#define FZ_LABEL_OBFS_S 0x44 /* ... of the pt-obfs server */

static const uint8_t fz_mse_skey[20] = "fuzz-info-hash-00001";
static const uint8_t fz_mse_ia[] = "\x13" "BitTorrent protocol fuzz initial payload";
static const uint8_t fz_obfs_key[32] = "PackTrack fuzz network key 00001";

/* mode bit 0: plaintext only (receiver accepts / initiator provides), else both;
 * bit 1: every rule deferred; bit 2: PadC/PadD up to 512. */
static inline void fz_mse_config(pt_mse_config *cfg, bool initiator, uint8_t mode,
                                 pt_mse_skey *skey)
{
    pt_mse_config_init(cfg, initiator);
    *skey = (pt_mse_skey){fz_mse_skey, sizeof fz_mse_skey};
    cfg->skeys = skey;
    cfg->nskeys = 1;
    if (mode & 1) cfg->crypto = PT_MSE_CRYPTO_PLAIN;
    if (mode & 2) cfg->defer_rules = PT_MSE_RULES_ALL;
    if (mode & 4) cfg->pad_cd_max = PT_MSE_PAD_MAX;
    if (initiator) {
        cfg->ia = fz_mse_ia;
        cfg->ia_len = sizeof fz_mse_ia - 1;
    }
}

static inline void fz_obfs_config(pt_obfs_config *cfg, bool server, pt_obfs_replay *r)
{
    pt_obfs_config_init(cfg, server);
    cfg->network_key = fz_obfs_key;
    cfg->replay = r;
}

#endif /* PT_FUZZ_OBFS_H */
