#include <stdio.h>

#include "crypto/pt_crypto.h"
#include "e2e/pt_safety.h"

/* 30 digits for one side: SHA-512(version ‖ key ‖ id), then 5200 times
 * SHA-512(previous ‖ key); six 5-byte chunks, each a big-endian 40-bit number
 * mod 100000 as five digits. The iterations make a second key with the same
 * fingerprint expensive to search for. */
static int fingerprint(char out[31], const uint8_t key[32], const uint8_t id[16])
{
    uint8_t h[PT_SHA512_LEN], in[2 + 32 + 16];
    in[0] = 0;
    in[1] = PT_SAFETY_VERSION;
    memcpy(in + 2, key, 32);
    memcpy(in + 34, id, 16);
    int rc = pt_hash(PT_HASH_SHA512, h, in, sizeof in);
    for (int i = 0; rc == 0 && i < PT_SAFETY_ITERATIONS; i++)
        rc = pt_hash2(PT_HASH_SHA512, h, h, sizeof h, key, 32);
    for (int c = 0; rc == 0 && c < 6; c++) {
        uint64_t v = 0;
        for (int k = 0; k < 5; k++) v = v << 8 | h[5 * c + k];
        snprintf(out + 5 * c, 6, "%05u", (unsigned)(v % 100000));
    }
    return rc;
}

int pt_safety_number(char digits[static PT_SAFETY_DIGITS + 1], const uint8_t key_a[static 32],
                     const uint8_t id_a[static 16], const uint8_t key_b[static 32],
                     const uint8_t id_b[static 16])
{
    char fa[31], fb[31];
    int rc = fingerprint(fa, key_a, id_a);
    if (rc == 0) rc = fingerprint(fb, key_b, id_b);
    if (rc) return rc;
    bool a_first = strcmp(fa, fb) <= 0;
    snprintf(digits, PT_SAFETY_DIGITS + 1, "%s%s", a_first ? fa : fb, a_first ? fb : fa);
    return 0;
}

void pt_safety_format(char out[static 72], const char digits[static PT_SAFETY_DIGITS + 1])
{
    size_t o = 0;
    for (int g = 0; g < 12; g++) {
        if (g) out[o++] = ' ';
        memcpy(out + o, digits + 5 * g, 5);
        o += 5;
    }
    out[o] = 0;
}

void pt_safety_qr(char out[static PT_SAFETY_QR_LEN + 1], const uint8_t key_a[static 32],
                  const uint8_t key_b[static 32])
{
    bool a_first = memcmp(key_a, key_b, 32) <= 0;
    memcpy(out, "PTSN0:", 6);
    pt_hex_encode(out + 6, a_first ? key_a : key_b, 32);
    pt_hex_encode(out + 6 + 64, a_first ? key_b : key_a, 32);
}

int pt_safety_qr_verify(const char *scanned, const uint8_t key_a[static 32],
                        const uint8_t key_b[static 32])
{
    if (strlen(scanned) != PT_SAFETY_QR_LEN || memcmp(scanned, "PTSN0:", 6) != 0)
        return PT_ERR_DECODE;
    uint8_t k[32]; /* decoded only to validate the hex */
    char hex[65];
    memcpy(hex, scanned + 6, 64);
    hex[64] = 0;
    if (pt_hex_decode(k, 32, hex) != 0) return PT_ERR_DECODE;
    memcpy(hex, scanned + 70, 64);
    if (pt_hex_decode(k, 32, hex) != 0) return PT_ERR_DECODE;
    char mine[PT_SAFETY_QR_LEN + 1];
    pt_safety_qr(mine, key_a, key_b);
    /* public keys, nothing secret: compare the canonical form as text */
    return strcmp(mine, scanned) == 0 ? 0 : PT_ERR_KEY_MISMATCH;
}
