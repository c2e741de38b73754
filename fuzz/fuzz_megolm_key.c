/* Fuzz target for Megolm session keys and exported keys (src/e2e/megolm). The
 * first byte picks a mode:
 *   0: the rest is a session key (version 2, signed); 1: an exported key
 *     (version 1). Parsing fails with DECODE/VERSION/AUTH only; a key that
 *     parses exports, at its first index, exactly its own bytes (an export), or
 *     its first 165 with version 1 (a session key); the export imports back.
 *   2, 3: the ratchet. The next 4 bytes are a start index, the next 2 a distance
 *     (mode 2: at most 2047, also stepped one by one; mode 3: the full 16 bits
 *     shifted left by a further byte, jumped only), the rest fills the ratchet.
 *     An inbound session imported at the start exports at start + distance what
 *     the ratchet reaches by pt_megolm_ratchet_advance_to (and by single steps),
 *     and refuses any index below the start.
 * Any broken property abort()s. */
#include <stdlib.h>

#include "fuzz_env.h"
#include "e2e/pt_megolm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void parse(const uint8_t *k, size_t len, bool is_export)
{
    pt_err e;
    pt_megolm_in *s = is_export ? pt_megolm_in_from_export(k, len, &e)
                                : pt_megolm_in_from_session_key(k, len, &e);
    if (!s) {
        if (e != PT_ERR_DECODE && e != PT_ERR_VERSION && e != PT_ERR_AUTH) abort();
        if (is_export && e == PT_ERR_AUTH) abort();
        return;
    }
    if (e != 0 || pt_megolm_in_verified(s) == is_export) abort();
    uint8_t ex[PT_MEGOLM_EXPORT_LEN], id[32];
    if (pt_megolm_in_export(s, pt_megolm_in_first_index(s), ex) != 0) abort();
    if (ex[0] != PT_MEGOLM_EXPORT_VERSION || memcmp(ex + 1, k + 1, PT_MEGOLM_EXPORT_LEN - 1) != 0)
        abort();
    pt_megolm_in_id(s, id);
    if (memcmp(id, k + 5 + PT_MEGOLM_RATCHET_LEN, 32) != 0) abort();
    if (pt_megolm_in_first_index(s) > 0 &&
        pt_megolm_in_export(s, pt_megolm_in_first_index(s) - 1, ex) != PT_ERR_NOT_FOUND)
        abort();
    pt_megolm_in *t = pt_megolm_in_from_export(ex, sizeof ex, NULL);
    if (!t || pt_megolm_in_verified(t)) abort();
    pt_megolm_in_free(t);
    pt_megolm_in_free(s);
}

static void ratchet(const uint8_t *p, size_t len, bool full)
{
    if (len < 6) return;
    pt_megolm_ratchet r;
    memset(&r, 0, sizeof r);
    r.counter = pt_get_u32le(p);
    uint32_t dist = (uint32_t)p[4] | (uint32_t)p[5] << 8;
    p += 6;
    len -= 6;
    if (full && len) {
        dist = dist << 8 | p[0];
        p++;
        len--;
    } else if (!full) {
        dist &= 2047;
    }
    if ((uint64_t)r.counter + dist > UINT32_MAX) dist = UINT32_MAX - r.counter;
    memcpy(r.data, p, len < PT_MEGOLM_RATCHET_LEN ? len : PT_MEGOLM_RATCHET_LEN);
    uint8_t key[PT_MEGOLM_EXPORT_LEN] = {PT_MEGOLM_EXPORT_VERSION}, out[PT_MEGOLM_EXPORT_LEN];
    key[1] = (uint8_t)(r.counter >> 24);
    key[2] = (uint8_t)(r.counter >> 16);
    key[3] = (uint8_t)(r.counter >> 8);
    key[4] = (uint8_t)r.counter;
    memcpy(key + 5, r.data, PT_MEGOLM_RATCHET_LEN);
    pt_megolm_in *s = pt_megolm_in_from_export(key, sizeof key, NULL);
    if (!s) abort();
    uint32_t to = r.counter + dist;
    pt_megolm_ratchet j = r;
    if (pt_megolm_ratchet_advance_to(&j, to) != 0 || j.counter != to) abort();
    if (!full) {
        pt_megolm_ratchet st = r;
        for (uint32_t i = 0; i < dist; i++)
            if (pt_megolm_ratchet_advance(&st) != 0) abort();
        if (st.counter != to || memcmp(st.data, j.data, sizeof j.data) != 0) abort();
    }
    if (pt_megolm_in_export(s, to, out) != 0 || memcmp(out + 5, j.data, PT_MEGOLM_RATCHET_LEN) != 0)
        abort();
    /* back at the start: from the initial ratchet, not the advanced cache */
    if (pt_megolm_in_export(s, r.counter, out) != 0 || memcmp(out, key, sizeof key) != 0) abort();
    if (r.counter > 0 && pt_megolm_in_export(s, r.counter - 1, out) != PT_ERR_NOT_FOUND) abort();
    pt_megolm_in_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    if (!inited) {
        if (pt_init() != 0) abort();
        inited = 1;
    }
    if (size < 1) return 0;
    switch (data[0] & 3) {
    case 0:
        parse(data + 1, size - 1, false);
        break;
    case 1:
        parse(data + 1, size - 1, true);
        break;
    default:
        ratchet(data + 1, size - 1, data[0] & 1);
        break;
    }
    return 0;
}
