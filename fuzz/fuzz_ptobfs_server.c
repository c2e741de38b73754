/* Fuzz target for the pt-obfs server (src/obfs/ptobfs.c) in the deterministic
 * fuzz_env with a fresh replay cache per input: the input (fuzz_obfs.h format;
 * mode bit 0 selects the decoy verdict) is the client's side. Corpus: valid
 * first flights followed by records (fuzz/seeds/make_obfs_seeds.c). Properties,
 * each abort()ing when broken:
 *  - results are NEED_MORE, ACCEPT (at most once), the configured reject
 *    verdict, or a negative error from a record after a verified flight (then
 *    never with a reject reason); verdicts and errors are final;
 *  - no data and no client payload before accepting; a rejected decoy server
 *    holds at most the bytes it was given;
 *  - once accepted, sealing a record works. */
#include <stdlib.h>

#include "fuzz_obfs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    if (!inited) {
        if (pt_init() != 0) abort();
        pt_log_set_level(PT_LOG_ERROR);
        inited = 1;
    }
    if (size == 0) return 0;
    fz_env env;
    fz_env_init(&env, FZ_LABEL_OBFS_S);
    pt_obfs_replay *r = pt_obfs_replay_new(16);
    if (!r) abort();
    pt_obfs_config cfg;
    fz_obfs_config(&cfg, true, r);
    cfg.reject_to_decoy = data[0] & 1;
    int reject = cfg.reject_to_decoy ? PT_OBFS_DECOY : PT_OBFS_SILENT;
    int err = -1;
    pt_obfs *o = pt_obfs_new(&env.env, &cfg, &err);
    if (!o || err != 0) abort();
    pt_buf got;
    pt_buf_init(&got);

    int accepted = 0, final = 0;
    size_t off = 1, fed = 0;
    while (off < size) {
        size_t n = data[off++];
        if (n > size - off) n = size - off;
        int rc = pt_obfs_input(o, data + off, n, &got);
        off += n;
        fed += n;
        if (rc < 0) { /* a record after the flight (maybe in this very call) */
            if (pt_obfs_reject_reason(o) != 0) abort();
            final = rc;
            break;
        }
        if (rc == PT_OBFS_ACCEPT && accepted++) abort();
        if (rc != PT_OBFS_NEED_MORE && rc != PT_OBFS_ACCEPT && rc != reject) abort();
        if (!accepted && (got.len || pt_obfs_client_payload(o))) abort();
        if (rc == reject) {
            final = rc;
            break;
        }
    }
    if (final && pt_obfs_input(o, data, 1, &got) != final) abort(); /* verdicts are final */
    if (final == PT_OBFS_DECOY) {
        size_t held = 0;
        (void)pt_obfs_held(o, &held);
        if (held > fed) abort();
    }
    if (accepted && !final) {
        if (!pt_obfs_client_payload(o)) abort();
        if (pt_obfs_seal(o, &got, fz_obfs_key, 8) != 0) abort();
    }
    if (pt_obfs_check_timeout(o) > PT_OBFS_DECOY) abort();
    pt_buf_free(&got);
    pt_obfs_free(o);
    pt_obfs_replay_free(r);
    return 0;
}
