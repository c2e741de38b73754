/* Fuzz target for pt_p2p_decode(): one record of a peer-to-peer channel. Seeds: a
 * valid record of each type (fuzz/seeds/make_disc_seeds.c). Properties, each
 * abort()ing when broken:
 *  - decoding returns 0, PT_ERR_DECODE or PT_ERR_TOO_BIG, nothing else;
 *  - a record that decodes re-encodes to exactly the same bytes, and a MSG's
 *    envelope lies inside the input and within PT_P2P_ENV_MAX.
 * (These records carry no signature: the channel under them authenticates them.) */
#include <stdlib.h>

#include "discovery/pt_disc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pt_p2p_rec r;
    int rc = pt_p2p_decode(data, size, &r);
    if (rc == PT_ERR_DECODE || rc == PT_ERR_TOO_BIG) return 0;
    if (rc != 0) abort();
    if (r.type == PT_P2P_MSG &&
        (r.env_len > PT_P2P_ENV_MAX || r.env < data || r.env + r.env_len != data + size))
        abort();
    pt_buf b;
    pt_buf_init(&b);
    if (pt_p2p_encode(&r, &b) != 0) abort();
    if (b.len != size || memcmp(b.data, data, size) != 0) abort();
    pt_buf_free(&b);
    return 0;
}
