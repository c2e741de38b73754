/* Fuzz target for pt_mtp2_open (src/channel/mtp2). The first input byte picks a mode:
 *   mode 0, 1 (byte & 3): open the rest as an envelope under a fixed key, for x = 0
 *     and x = 8 (nearly always PT_ERR_AUTH at msg_key; the corpus holds envelopes
 *     that open).
 *   mode 2: seal the rest (cut to a multiple of 16) with pt_mtp2_seal_padded, open it
 *     back and check that it opens exactly when the length/padding rules hold, to the
 *     same bytes; then flip one bit of the envelope and check it is refused.
 *   mode 3: as mode 2, but the second byte chooses the padding length and the length
 *     field is rewritten to match it, so that most inputs are well-formed.
 * Bit 2 of the first byte picks x for modes 2 and 3; its upper bits and the length
 * pick the flipped bit. Any broken property abort()s. */
#include <stdlib.h>

#include "channel/mtp2.h"
#include "crypto/pt_crypto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static pt_mtp2 *fixed_mtp2(void)
{
    static pt_mtp2 *m;
    if (!m) {
        uint8_t key[PT_MTP2_AUTH_KEY_LEN]; /* the key of tests/unit/test_mtp2.c's known answers */
        if (pt_init() != 0) abort();
        for (int i = 0; i < PT_MTP2_AUTH_KEY_LEN; i++)
            key[i] = (uint8_t)(i * 37 + 11);
        if (!(m = pt_mtp2_new(key))) abort();
    }
    return m;
}

static void open_raw(pt_mtp2 *m, const uint8_t *in, size_t len)
{
    uint8_t *out = malloc(len ? len : 1);
    if (!out) abort();
    for (int x = 0; x <= 8; x += 8) {
        size_t olen = 1;
        int rc = pt_mtp2_open(m, x, out, len, &olen, in, len);
        if (rc == 0 ? olen < PT_MTP2_INNER_HDR_LEN || olen > len - PT_MTP2_HDR_LEN - PT_MTP2_PAD_MIN
                    : olen != 0 || (rc != PT_ERR_AUTH && rc != PT_ERR_DECODE))
            abort();
    }
    free(out);
}

static void roundtrip(pt_mtp2 *m, int x, uint8_t *p, size_t len, unsigned flip_seed)
{
    pt_buf env;
    pt_buf_init(&env);
    if (pt_mtp2_seal_padded(m, x, &env, p, len) != 0) abort();
    if (env.len != PT_MTP2_HDR_LEN + len) abort();
    size_t body = len >= PT_MTP2_INNER_HDR_LEN ? pt_get_u32le(p + PT_MTP2_LEN_OFFSET) : 0;
    int valid = len >= PT_MTP2_INNER_HDR_LEN && body <= len - PT_MTP2_INNER_HDR_LEN &&
                len - PT_MTP2_INNER_HDR_LEN - body >= PT_MTP2_PAD_MIN &&
                len - PT_MTP2_INNER_HDR_LEN - body <= PT_MTP2_PAD_MAX;
    uint8_t *out = malloc(env.len);
    size_t olen;
    if (!out) abort();
    int rc = pt_mtp2_open(m, x, out, env.len, &olen, env.data, env.len);
    if (valid) {
        if (rc != 0 || olen != PT_MTP2_INNER_HDR_LEN + body || memcmp(out, p, olen) != 0) abort();
    } else if (rc != PT_ERR_AUTH || olen != 0) {
        abort();
    }
    /* The other direction never opens it; nor does any single flipped bit. */
    if (pt_mtp2_open(m, x ^ 8, out, env.len, &olen, env.data, env.len) != PT_ERR_AUTH) abort();
    size_t bit = ((size_t)flip_seed * 2654435761u + len) % (env.len * 8);
    env.data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    if (pt_mtp2_open(m, x, out, env.len, &olen, env.data, env.len) != PT_ERR_AUTH) abort();
    free(out);
    pt_buf_free(&env);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pt_mtp2 *m = fixed_mtp2();
    if (size < 1) return 0;
    unsigned sel = data[0], mode = sel & 3;
    int x = (sel & 4) ? PT_MTP2_X_SERVER : PT_MTP2_X_CLIENT;
    if (mode < 2) {
        open_raw(m, data + 1, size - 1);
        return 0;
    }
    size_t skip = mode == 3 ? 2 : 1;
    if (size < skip) return 0;
    size_t len = (size - skip) / 16 * 16;
    if (len == 0) return 0;
    uint8_t *p = malloc(len);
    if (!p) abort();
    memcpy(p, data + skip, len);
    if (mode == 3 && len >= PT_MTP2_INNER_HDR_LEN + PT_MTP2_PAD_MIN) {
        size_t room = len - PT_MTP2_INNER_HDR_LEN; /* body + padding */
        size_t max_pad = room < PT_MTP2_PAD_MAX ? room : PT_MTP2_PAD_MAX;
        size_t pad = PT_MTP2_PAD_MIN + (data[1] * 4u) % (max_pad - PT_MTP2_PAD_MIN + 1);
        pt_put_u32le(p + PT_MTP2_LEN_OFFSET, (uint32_t)(room - pad));
    }
    roundtrip(m, x, p, len, sel >> 3);
    free(p);
    return 0;
}
