#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/lstore.h"
#include "crypto/pt_crypto.h"

/* Argon2id cost: libsodium's "interactive" level (2 passes, 64 MiB), as the
 * profile is unlocked by every command of the CLI. Stored per file, so a later
 * version can raise it for new passwords without breaking old stores. */
#define KDF_OPS 2
#define KDF_MEM (64u * 1024 * 1024)
#define WRAP_AD "packtrack store key v1"

static const char schema[] =
    "CREATE TABLE meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);"       /* clear: KDF parameters */
    "CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB NOT NULL);"         /* sealed secrets, settings */
    "CREATE TABLE sessions (peer BLOB PRIMARY KEY, v BLOB NOT NULL);" /* Olm sessions (pickled) */
    "CREATE TABLE contacts (user_id BLOB PRIMARY KEY, v BLOB NOT NULL);"
    "CREATE TABLE groups (group_id BLOB PRIMARY KEY, v BLOB NOT NULL);"
    "CREATE TABLE messages ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  msg_id BLOB NOT NULL UNIQUE,"     /* random, 16 bytes */
    "  server_id INTEGER,"              /* outgoing: what the server called it */
    "  seen INTEGER NOT NULL DEFAULT 0,"
    "  v BLOB NOT NULL);"
    "CREATE INDEX messages_by_server_id ON messages(server_id);"
    "CREATE TABLE outbox ("               /* sends not yet stored by the server, in order */
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  oid BLOB NOT NULL UNIQUE,"         /* random: names the row in the sealing */
    "  v BLOB NOT NULL);"
    "CREATE TABLE seen_envelopes ("       /* exactly once: envelopes already handled */
    "  hash BLOB PRIMARY KEY, at_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "PRAGMA user_version = 1;";

struct pt_lstore {
    sqlite3 *db;
    uint8_t *key; /* secure memory, PT_LSTORE_KEY_LEN */
};

static int exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
    pt_log_error("local store: %s", msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return PT_ERR_IO;
}

static void path_of(char *out, size_t cap, const char *home)
{
    snprintf(out, cap, "%s/%s", home, PT_LSTORE_FILE);
}

static int open_db(const char *path, int flags, sqlite3 **db)
{
    if (sqlite3_open_v2(path, db, flags, NULL) != SQLITE_OK) {
        pt_log_error("local store %s: %s", path, *db ? sqlite3_errmsg(*db) : "out of memory");
        sqlite3_close(*db);
        *db = NULL;
        return PT_ERR_IO;
    }
    sqlite3_busy_timeout(*db, 5000);
    /* another packtrack process may hold the store: wait, then fail clearly */
    return exec(*db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;");
}

static int meta_put(sqlite3 *db, const char *k, const void *v, size_t len)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO meta(k, v) VALUES (?, ?)", -1, &st, NULL))
        return PT_ERR_IO;
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, v, (int)len, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : PT_ERR_IO;
    sqlite3_finalize(st);
    return rc;
}

static int meta_get(sqlite3 *db, const char *k, void *v, size_t len)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT v FROM meta WHERE k = ?", -1, &st, NULL)) return PT_ERR_DECODE;
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    int rc = PT_ERR_DECODE;
    if (sqlite3_step(st) == SQLITE_ROW && (size_t)sqlite3_column_bytes(st, 0) == len) {
        memcpy(v, sqlite3_column_blob(st, 0), len);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Seals the store key under password with a fresh salt, into meta. */
static int wrap_key(pt_lstore *s, const char *pw, size_t pwlen)
{
    uint8_t salt[PT_ARGON2_SALT_LEN], kek[32], nonce[PT_XCHACHA_NONCE_LEN];
    uint8_t wrapped[PT_LSTORE_KEY_LEN + 16], params[12];
    pt_random(salt, sizeof salt);
    pt_random(nonce, sizeof nonce);
    pt_put_u32le(params, 1); /* KDF: Argon2id */
    pt_put_u32le(params + 4, KDF_OPS);
    pt_put_u32le(params + 8, KDF_MEM / 1024);
    int rc = pt_argon2id(kek, sizeof kek, pw, pwlen, salt, KDF_OPS, KDF_MEM);
    if (rc == 0)
        rc = pt_xchacha_seal(wrapped, s->key, PT_LSTORE_KEY_LEN, (const uint8_t *)WRAP_AD,
                             sizeof WRAP_AD - 1, nonce, kek);
    pt_wipe(kek, sizeof kek);
    if (rc == 0) rc = meta_put(s->db, "kdf", params, sizeof params);
    if (rc == 0) rc = meta_put(s->db, "salt", salt, sizeof salt);
    if (rc == 0) rc = meta_put(s->db, "nonce", nonce, sizeof nonce);
    if (rc == 0) rc = meta_put(s->db, "key", wrapped, sizeof wrapped);
    return rc;
}

static pt_lstore *lstore_alloc(void)
{
    pt_lstore *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->key = pt_secure_alloc(PT_LSTORE_KEY_LEN);
    if (!s->key) {
        free(s);
        return NULL;
    }
    return s;
}

void pt_lstore_close(pt_lstore *s)
{
    if (!s) return;
    if (s->db) sqlite3_close(s->db);
    pt_secure_free(s->key);
    free(s);
}

int pt_lstore_create(const char *home, const char *pw, size_t pwlen, pt_lstore **out)
{
    char path[4096];
    path_of(path, sizeof path, home);
    if (access(path, F_OK) == 0) return PT_ERR_EXISTS;
    if (mkdir(home, 0700) != 0 && errno != EEXIST) {
        pt_log_error("cannot create %s: %s", home, strerror(errno));
        return PT_ERR_IO;
    }
    pt_lstore *s = lstore_alloc();
    if (!s) return PT_ERR_NOMEM;
    int rc = open_db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &s->db);
    if (rc == 0 && chmod(path, 0600) != 0) rc = PT_ERR_IO;
    pt_random(s->key, PT_LSTORE_KEY_LEN);
    if (rc == 0) rc = exec(s->db, "BEGIN");
    if (rc == 0) rc = exec(s->db, schema);
    if (rc == 0) rc = wrap_key(s, pw, pwlen);
    if (rc == 0) rc = exec(s->db, "COMMIT");
    if (rc) {
        pt_lstore_close(s);
        pt_lstore_destroy(home);
        return rc;
    }
    *out = s;
    return 0;
}

void pt_lstore_destroy(const char *home)
{
    static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
    char path[4096];
    for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
        snprintf(path, sizeof path, "%s/%s%s", home, PT_LSTORE_FILE, suffix[i]);
        unlink(path);
    }
}

int pt_lstore_open(const char *home, const char *pw, size_t pwlen, pt_lstore **out)
{
    char path[4096];
    path_of(path, sizeof path, home);
    if (access(path, F_OK) != 0) return PT_ERR_NOT_FOUND;
    pt_lstore *s = lstore_alloc();
    if (!s) return PT_ERR_NOMEM;
    uint8_t salt[PT_ARGON2_SALT_LEN], nonce[PT_XCHACHA_NONCE_LEN], wrapped[PT_LSTORE_KEY_LEN + 16];
    uint8_t params[12], kek[32];
    int rc = open_db(path, SQLITE_OPEN_READWRITE, &s->db);
    if (rc == 0 && (meta_get(s->db, "kdf", params, sizeof params) || meta_get(s->db, "salt", salt, sizeof salt) ||
                    meta_get(s->db, "nonce", nonce, sizeof nonce) ||
                    meta_get(s->db, "key", wrapped, sizeof wrapped)))
        rc = PT_ERR_DECODE;
    uint32_t ops = rc == 0 ? pt_get_u32le(params + 4) : 0, mem_kib = rc == 0 ? pt_get_u32le(params + 8) : 0;
    if (rc == 0 && (pt_get_u32le(params) != 1 || ops < 1 || ops > 64 || mem_kib < 8 || mem_kib > 4u << 20))
        rc = PT_ERR_DECODE;
    if (rc == 0) rc = pt_argon2id(kek, sizeof kek, pw, pwlen, salt, ops, (size_t)mem_kib * 1024);
    if (rc == 0 && pt_xchacha_open(s->key, wrapped, sizeof wrapped, (const uint8_t *)WRAP_AD,
                                   sizeof WRAP_AD - 1, nonce, kek) != 0)
        rc = PT_ERR_PASSWORD;
    pt_wipe(kek, sizeof kek);
    if (rc) {
        if (rc == PT_ERR_DECODE) pt_log_error("local store %s is damaged or not a PackTrack store", path);
        pt_lstore_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

int pt_lstore_passwd(pt_lstore *s, const char *pw, size_t pwlen)
{
    int rc = exec(s->db, "BEGIN IMMEDIATE");
    if (rc) return rc;
    if ((rc = wrap_key(s, pw, pwlen)) == 0) rc = exec(s->db, "COMMIT");
    if (rc) pt_lstore_rollback(s);
    return rc;
}

sqlite3 *pt_lstore_db(pt_lstore *s) { return s->db; }

void pt_lstore_subkey(const pt_lstore *s, const char *label, uint8_t out[static 32])
{
    int rc = pt_blake2b(out, 32, (const uint8_t *)label, strlen(label), s->key, PT_LSTORE_KEY_LEN);
    PT_ASSERT(rc == 0);
}

int pt_lstore_begin(pt_lstore *s) { return exec(s->db, "BEGIN IMMEDIATE"); }
int pt_lstore_commit(pt_lstore *s) { return exec(s->db, "COMMIT"); }

void pt_lstore_rollback(pt_lstore *s)
{
    if (!sqlite3_get_autocommit(s->db) && exec(s->db, "ROLLBACK") != 0)
        pt_log_warn("local store: rollback failed");
}

/* The associated data of a sealed value: table ‖ 0 ‖ row. */
static int make_ad(pt_buf *ad, const char *table, const void *row, size_t rowlen)
{
    int rc = pt_buf_append(ad, table, strlen(table) + 1);
    if (rc == 0 && rowlen) rc = pt_buf_append(ad, row, rowlen);
    return rc;
}

int pt_lstore_seal(const pt_lstore *s, const char *table, const void *row, size_t rowlen,
                   const uint8_t *in, size_t len, pt_buf *out)
{
    pt_buf ad;
    pt_buf_init(&ad);
    int rc = make_ad(&ad, table, row, rowlen);
    size_t at = out->len;
    uint8_t *p = rc == 0 ? pt_buf_extend(out, PT_XCHACHA_NONCE_LEN + len + 16) : NULL;
    if (!p) rc = PT_ERR_NOMEM;
    if (rc == 0) {
        pt_random(p, PT_XCHACHA_NONCE_LEN);
        rc = pt_xchacha_seal(p + PT_XCHACHA_NONCE_LEN, in, len, ad.data, ad.len, p, s->key);
    }
    if (rc && p) out->len = at;
    pt_buf_free(&ad);
    return rc;
}

int pt_lstore_unseal(const pt_lstore *s, const char *table, const void *row, size_t rowlen,
                     const uint8_t *in, size_t len, pt_buf *out)
{
    if (len < PT_XCHACHA_NONCE_LEN + 16) return PT_ERR_DECODE;
    pt_buf ad;
    pt_buf_init(&ad);
    int rc = make_ad(&ad, table, row, rowlen);
    size_t at = out->len, n = len - PT_XCHACHA_NONCE_LEN - 16;
    uint8_t *p = rc == 0 ? pt_buf_extend(out, n + 1) : NULL;
    if (!p) rc = PT_ERR_NOMEM;
    if (rc == 0) {
        rc = pt_xchacha_open(p, in + PT_XCHACHA_NONCE_LEN, len - PT_XCHACHA_NONCE_LEN, ad.data, ad.len,
                             in, s->key);
        if (rc == 0) {
            p[n] = 0; /* texts can be used as C strings; not counted in len */
            out->len = at + n;
        } else {
            rc = PT_ERR_AUTH;
            out->len = at;
        }
    }
    pt_buf_free(&ad);
    return rc;
}

int pt_lstore_write_row(pt_lstore *s, const char *table, const char *sql, const uint8_t *key, size_t keylen,
                        const pt_buf *plain)
{
    pt_buf sealed;
    pt_buf_init(&sealed);
    int rc = pt_lstore_seal(s, table, key, keylen, plain->data, plain->len, &sealed);
    sqlite3_stmt *st = NULL;
    if (rc == 0 && sqlite3_prepare_v2(s->db, sql, -1, &st, NULL)) rc = PT_ERR_IO;
    if (rc == 0) {
        sqlite3_bind_blob(st, 1, key, (int)keylen, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, sealed.data, (int)sealed.len, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE) {
            pt_log_error("local store: %s", sqlite3_errmsg(s->db));
            rc = PT_ERR_IO;
        }
    }
    sqlite3_finalize(st);
    pt_buf_free(&sealed);
    return rc;
}

int pt_lstore_put(pt_lstore *s, const char *name, const uint8_t *v, size_t len)
{
    pt_buf sealed;
    pt_buf_init(&sealed);
    int rc = pt_lstore_seal(s, "kv", name, strlen(name), v, len, &sealed);
    sqlite3_stmt *st = NULL;
    if (rc == 0 && sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO kv(k, v) VALUES (?, ?)", -1, &st, NULL))
        rc = PT_ERR_IO;
    if (rc == 0) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, sealed.data, (int)sealed.len, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE) {
            pt_log_error("local store: %s", sqlite3_errmsg(s->db));
            rc = PT_ERR_IO;
        }
    }
    sqlite3_finalize(st);
    pt_buf_free(&sealed);
    return rc;
}

int pt_lstore_get(pt_lstore *s, const char *name, pt_buf *out)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT v FROM kv WHERE k = ?", -1, &st, NULL)) return PT_ERR_IO;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = PT_ERR_NOT_FOUND;
    if (sqlite3_step(st) == SQLITE_ROW)
        rc = pt_lstore_unseal(s, "kv", name, strlen(name), sqlite3_column_blob(st, 0),
                              (size_t)sqlite3_column_bytes(st, 0), out);
    sqlite3_finalize(st);
    return rc;
}

int pt_lstore_del(pt_lstore *s, const char *name)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "DELETE FROM kv WHERE k = ?", -1, &st, NULL)) return PT_ERR_IO;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : PT_ERR_IO;
    sqlite3_finalize(st);
    return rc;
}
