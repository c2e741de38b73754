/*
 * Safety numbers: what two users compare out of band to verify each other's
 * identity keys. Each side's identity key and user id give a 30-digit
 * fingerprint; the safety number is both fingerprints in a fixed (sorted) order,
 * so both users see the same 60 digits. The QR-able string carries both keys.
 */
#ifndef PT_SAFETY_H
#define PT_SAFETY_H

#include "common/pt_common.h"

#define PT_SAFETY_VERSION 0
#define PT_SAFETY_ITERATIONS 5200     /* SHA-512 rounds per fingerprint */
#define PT_SAFETY_DIGITS 60
#define PT_SAFETY_QR_LEN (6 + 2 * 64) /* "PTSN0:" + two hex keys */

/* digits receives 60 digits + NUL; formatted for display as 12 groups of 5 by
 * pt_safety_format(). Identity keys are 32 bytes; user ids 16 bytes. */
int pt_safety_number(char digits[static PT_SAFETY_DIGITS + 1], const uint8_t key_a[static 32],
                     const uint8_t id_a[static 16], const uint8_t key_b[static 32],
                     const uint8_t id_b[static 16]) PT_WUR;
/* "12345 67890 ..." (12 groups of 5 separated by spaces): out holds 72 chars. */
void pt_safety_format(char out[static 72], const char digits[static PT_SAFETY_DIGITS + 1]);
/* The QR payload: "PTSN0:" ‖ hex(lower key) ‖ hex(higher key), NUL-terminated. */
void pt_safety_qr(char out[static PT_SAFETY_QR_LEN + 1], const uint8_t key_a[static 32],
                  const uint8_t key_b[static 32]);
/* Checks a scanned QR payload against the two keys we hold: 0 when it matches,
 * PT_ERR_KEY_MISMATCH when it names other keys, PT_ERR_DECODE when malformed. */
int pt_safety_qr_verify(const char *scanned, const uint8_t key_a[static 32],
                        const uint8_t key_b[static 32]) PT_WUR;

#endif
