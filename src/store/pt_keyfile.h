/* Static X25519 key files: 64 hex digits of the private key and a newline,
 * mode 0600. Used for the server's identity and a client device's key. */
#ifndef PT_KEYFILE_H
#define PT_KEYFILE_H

#include "common/pt_common.h"

/* Loads the key at path, or creates a new one there when the file does not
 * exist. PT_ERR_IO on unreadable/unwritable files, PT_ERR_DECODE on a malformed
 * file (never overwritten), PT_ERR_INVAL when an existing file is readable by
 * group or others. */
int pt_keyfile_load_or_create(const char *path, uint8_t sk[static 32], uint8_t pk[static 32]) PT_WUR;

/* Fingerprint shown to users: the public key as 64 hex digits in groups of 8
 * separated by ':' (71 chars + NUL). */
#define PT_FINGERPRINT_LEN 72
void pt_fingerprint(char out[static PT_FINGERPRINT_LEN], const uint8_t pk[static 32]);
/* Parses a fingerprint (with or without ':' separators) into a public key. */
int pt_fingerprint_parse(uint8_t pk[static 32], const char *fp) PT_WUR;

#endif
