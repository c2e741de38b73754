/*
 * src/api/lstore - the client's local store: one SQLite file in the profile
 * directory, every secret and every message sealed with XChaCha20-Poly1305.
 *
 * Keys: a random 32-byte store key (held in secure memory while open) seals the
 * rows; it is itself sealed under a key derived by Argon2id from the user's
 * password, with a random salt. Changing the password re-seals only that one
 * value, in one transaction. Each sealed value is nonce (24) ‖ ciphertext ‖ tag,
 * and its associated data names the table and the row, so a value moved to
 * another row does not open. What stays readable without the password: row
 * counts, message sequence numbers and flags, the server address book
 * (known_servers) — no names, keys or texts.
 */
#ifndef PT_LSTORE_H
#define PT_LSTORE_H

#include <sqlite3.h>

#include "common/pt_common.h"

#define PT_LSTORE_FILE "store.db"
#define PT_LSTORE_KEY_LEN 32

typedef struct pt_lstore pt_lstore;

/* Creates home/store.db (PT_ERR_EXISTS if it is there) sealed under password. */
int pt_lstore_create(const char *home, const char *pw, size_t pwlen, pt_lstore **out) PT_WUR;
/* Opens it: PT_ERR_NOT_FOUND without a store, PT_ERR_PASSWORD for a wrong
 * password (nothing written), PT_ERR_DECODE for a damaged file. */
int pt_lstore_open(const char *home, const char *pw, size_t pwlen, pt_lstore **out) PT_WUR;
void pt_lstore_close(pt_lstore *s); /* NULL is a no-op; wipes the key */
/* Removes a store that pt_lstore_create made but whose profile never came to be. */
void pt_lstore_destroy(const char *home);
int pt_lstore_passwd(pt_lstore *s, const char *pw, size_t pwlen) PT_WUR;

sqlite3 *pt_lstore_db(pt_lstore *s);
/* A subkey of the store key for another use (label names it), e.g. Olm pickles. */
void pt_lstore_subkey(const pt_lstore *s, const char *label, uint8_t out[static 32]);

int pt_lstore_begin(pt_lstore *s) PT_WUR;
int pt_lstore_commit(pt_lstore *s) PT_WUR;
void pt_lstore_rollback(pt_lstore *s);

/* Seals in (appending to out) for (table, row) / opens it into out (appended). */
int pt_lstore_seal(const pt_lstore *s, const char *table, const void *row, size_t rowlen,
                   const uint8_t *in, size_t len, pt_buf *out) PT_WUR;
int pt_lstore_unseal(const pt_lstore *s, const char *table, const void *row, size_t rowlen,
                     const uint8_t *in, size_t len, pt_buf *out) PT_WUR;

/* Seals plain for (table, key) and runs sql with ?1 = key (blob) and ?2 = the sealed
 * value: the one way rows with a sealed value are written. */
int pt_lstore_write_row(pt_lstore *s, const char *table, const char *sql, const uint8_t *key,
                        size_t keylen, const pt_buf *plain) PT_WUR;

/* The sealed key-value table: names of secrets and settings. get: PT_ERR_NOT_FOUND. */
int pt_lstore_put(pt_lstore *s, const char *name, const uint8_t *v, size_t len) PT_WUR;
int pt_lstore_get(pt_lstore *s, const char *name, pt_buf *out) PT_WUR;
int pt_lstore_del(pt_lstore *s, const char *name) PT_WUR;

#endif
