/* Fuzz target for stored Megolm sessions (pt_megolm_in_restore and
 * pt_megolm_out_restore, src/e2e/megolm). The first byte picks a mode: bit 0 the
 * kind (0 inbound, 1 outbound); bit 1 set means this target first rewrites the
 * trailing SHA-256 checksum of the rest so that the semantic checks behind it
 * (lengths, flags, ordered replay ranges, the latest ratchet being the first one
 * advanced) are reached. Properties: restore fails only with DECODE or VERSION
 * and a restored session serializes back to exactly the input; an inbound one
 * never counts an index below its first as seen, and an outbound one produces a
 * message that its own session key decrypts (or refuses to wrap at the last
 * index). Any broken property abort()s. */
#include <stdlib.h>

#include "fuzz_env.h"
#include "e2e/pt_megolm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    if (!inited) {
        if (pt_init() != 0) abort();
        inited = 1;
    }
    if (size < 1) return 0;
    bool outbound = data[0] & 1, fix = data[0] & 2;
    size_t len = size - 1;
    uint8_t *b = malloc(len ? len : 1);
    if (!b) abort();
    memcpy(b, data + 1, len);
    if (fix && len >= 32 && pt_hash(PT_HASH_SHA256, b + len - 32, b, len - 32) != 0) abort();
    pt_err e;
    pt_buf again;
    pt_buf_init(&again);
    if (!outbound) {
        pt_megolm_in *s = pt_megolm_in_restore(b, len, &e);
        if (!s) {
            if (e != PT_ERR_DECODE && e != PT_ERR_VERSION) abort();
        } else {
            if (pt_megolm_in_serialize(s, &again) != 0 || again.len != len ||
                memcmp(again.data, b, len) != 0)
                abort();
            if (pt_megolm_in_first_index(s) > 0 &&
                pt_megolm_in_seen(s, pt_megolm_in_first_index(s) - 1))
                abort();
            pt_megolm_in_free(s);
        }
    } else {
        pt_megolm_out *s = pt_megolm_out_restore(b, len, &e);
        if (!s) {
            if (e != PT_ERR_DECODE && e != PT_ERR_VERSION) abort();
        } else {
            if (pt_megolm_out_serialize(s, &again) != 0 || again.len != len ||
                memcmp(again.data, b, len) != 0)
                abort();
            uint8_t key[PT_MEGOLM_SESSION_KEY_LEN];
            if (pt_megolm_out_session_key(s, key) != 0) abort();
            pt_megolm_in *in = pt_megolm_in_from_session_key(key, sizeof key, NULL);
            pt_buf m, p;
            pt_buf_init(&m);
            pt_buf_init(&p);
            int rc = pt_megolm_out_encrypt(s, &m, (const uint8_t *)"fz", 2);
            if (!in || (rc != 0 && rc != PT_ERR_STATE)) abort();
            if (rc == 0 &&
                (pt_megolm_in_decrypt(in, &p, NULL, m.data, m.len, 0) != 0 || p.len != 2))
                abort();
            pt_buf_free(&m);
            pt_buf_free(&p);
            pt_megolm_in_free(in);
            pt_megolm_out_free(s);
        }
    }
    pt_buf_free(&again);
    free(b);
    return 0;
}
