/* Fuzz target for the MSE initiator (src/obfs/mse.c) in the deterministic
 * fuzz_env: after pt_mse_start, the input (fuzz_obfs.h format) is the receiver's
 * side of the stream. Corpus: whole handshakes in each mode with payload
 * (fuzz/seeds/make_obfs_seeds.c). Properties, each abort()ing when broken:
 *  - results are PT_MSE_NEED_MORE, PT_MSE_DONE or a negative error;
 *  - errors are final, and so is done;
 *  - no payload before done; once done the selection is one provided method. */
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
    fz_env_init(&env, FZ_LABEL_MSE_A);
    pt_mse_config cfg;
    pt_mse_skey sk;
    fz_mse_config(&cfg, true, data[0], &sk);
    int err = -1;
    pt_mse *m = pt_mse_new(&env.env, &cfg, &err);
    if (!m || err != 0) abort();
    pt_buf out, payload;
    pt_buf_init(&out);
    pt_buf_init(&payload);
    if (pt_mse_start(m, &out) != 0 || out.len < PT_MSE_DH_LEN) abort();

    int failed = 0, done = 0;
    size_t off = 1;
    while (off < size) {
        size_t n = data[off++];
        if (n > size - off) n = size - off;
        int rc = pt_mse_input(m, data + off, n, &out, &payload);
        off += n;
        if (rc != PT_MSE_NEED_MORE && rc != PT_MSE_DONE && rc >= 0) abort();
        if (failed && rc >= 0) abort();
        if (done && rc != PT_MSE_DONE) abort();
        if (rc < 0) failed++;
        if (rc == PT_MSE_DONE) done = 1;
        if (!done && payload.len) abort();
        if (failed >= 2) break;
    }
    if (done) {
        uint32_t sel = pt_mse_selected(m);
        if ((sel != PT_MSE_CRYPTO_RC4 && sel != PT_MSE_CRYPTO_PLAIN) || !(sel & cfg.crypto)) abort();
        if (pt_mse_seal(m, &out, fz_mse_ia, 4) != 0) abort();
    }
    if (pt_mse_check_timeout(m) > 0) abort(); /* 0 or an error, the clocks stand still */
    pt_buf_free(&out);
    pt_buf_free(&payload);
    pt_mse_free(m);
    return 0;
}
