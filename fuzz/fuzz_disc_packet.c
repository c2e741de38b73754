/* Fuzz target for pt_disc_decode(): one UDP datagram of LAN discovery. Seeds: a valid
 * packet of each type, records signed by the fixed key of fuzz_disc.h
 * (fuzz/seeds/make_disc_seeds.c). Properties, each abort()ing when broken:
 *  - decoding returns 0, PT_ERR_DECODE or PT_ERR_VERSION, nothing else;
 *  - a packet that decodes re-encodes to exactly the same bytes (the format has one
 *    encoding per packet: any slack would be a way to smuggle bytes or a parser gap);
 *  - a record's signature check against the fixed key returns 0 or PT_ERR_AUTH, and
 *    a record that verifies no longer does for another packet type;
 *  - the record's address formats to a NUL-terminated string. */
#include <stdlib.h>

#include "fuzz_disc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    static uint8_t pk[32];
    if (!ready) {
        if (pt_crypto_init() != 0) abort();
        fz_disc_identity(pk, NULL);
        ready = true;
    }
    pt_disc_pkt p;
    int rc = pt_disc_decode(data, size, &p);
    if (rc == PT_ERR_DECODE || rc == PT_ERR_VERSION) return 0;
    if (rc != 0) abort();
    uint8_t out[PT_DISC_MAX_LEN];
    size_t n = 0;
    if (pt_disc_encode(&p, out, sizeof out, &n) != 0) abort();
    if (n != size || memcmp(out, data, size) != 0) abort();
    bool has_rec = p.type == PT_DISC_BPR || (p.type == PT_DISC_BPM && (p.flags & PT_DISC_FLAG_RECORD));
    if (has_rec) {
        int vrc = pt_disc_record_verify(&p.rec, p.type, p.nonce, pk);
        if (vrc != 0 && vrc != PT_ERR_AUTH) abort();
        uint8_t other = p.type == PT_DISC_BPR ? PT_DISC_BPM : PT_DISC_BPR;
        if (vrc == 0 && pt_disc_record_verify(&p.rec, other, p.nonce, pk) != PT_ERR_AUTH) abort();
        char text[64];
        memset(text, 0x55, sizeof text);
        pt_disc_addr_format(p.rec.addr, text, sizeof text);
        if (!memchr(text, 0, sizeof text)) abort();
        (void)pt_disc_fresh(p.rec.ts_ms, FZ_DISC_NOW_MS);
    }
    return 0;
}
