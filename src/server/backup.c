/* Backup archives (pt_backup.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server/pt_backup.h"
#include "store/pt_db.h"

#define HEADER_MAX PT_BACKUP_HEADER_MAX
static const char *const files[PT_BACKUP_NFILES] = {"packtrack.db", "server.key"};
#define NFILES PT_BACKUP_NFILES

const char *pt_backup_file_name(size_t i)
{
    PT_ASSERT(i < NFILES);
    return files[i];
}

int pt_datadir_lock(const char *data_dir, char *msg, size_t msglen)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", data_dir, PT_DATADIR_LOCK);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(msg, msglen, "%s: %s", p, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            snprintf(msg, msglen, "a packtrackd is running on %s (it holds %s); stop it first", data_dir, p);
        else
            snprintf(msg, msglen, "%s: %s", p, strerror(e));
        return -1;
    }
    return fd;
}

static void hex32(char out[65], const uint8_t h[32]) { pt_hex_encode(out, h, 32); }

/* SHA-256 of the file and its size. */
static int hash_file(const char *path, uint8_t h[32], uint64_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return PT_ERR_IO;
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    uint8_t buf[65536];
    size_t n;
    *size = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        crypto_hash_sha256_update(&st, buf, n);
        *size += n;
    }
    int rc = ferror(f) ? PT_ERR_IO : 0;
    fclose(f);
    crypto_hash_sha256_final(&st, h);
    return rc;
}

static int copy_into(FILE *out, const char *path, uint64_t size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return PT_ERR_IO;
    uint8_t buf[65536];
    uint64_t left = size;
    while (left) {
        size_t want = left < sizeof buf ? (size_t)left : sizeof buf;
        if (fread(buf, 1, want, f) != want || fwrite(buf, 1, want, out) != want) break;
        left -= want;
    }
    fclose(f);
    return left ? PT_ERR_IO : 0;
}

static int db_snapshot(const char *src_path, const char *dst_path, char *msg, size_t msglen)
{
    sqlite3 *src = NULL, *dst = NULL;
    int rc = PT_ERR_IO;
    if (sqlite3_open_v2(src_path, &src, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        snprintf(msg, msglen, "%s: %s", src_path, src ? sqlite3_errmsg(src) : "cannot open");
        goto out;
    }
    sqlite3_busy_timeout(src, 5000);
    unlink(dst_path);
    if (sqlite3_open_v2(dst_path, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        snprintf(msg, msglen, "%s: %s", dst_path, dst ? sqlite3_errmsg(dst) : "cannot create");
        goto out;
    }
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    if (!b) {
        snprintf(msg, msglen, "backup: %s", sqlite3_errmsg(dst));
        goto out;
    }
    /* every page in one step: one read transaction, one consistent snapshot */
    int st;
    for (int tries = 0; (st = sqlite3_backup_step(b, -1)) == SQLITE_BUSY || st == SQLITE_LOCKED; tries++) {
        if (tries == 100) break;
        sqlite3_sleep(50);
    }
    sqlite3_backup_finish(b);
    if (st != SQLITE_DONE) {
        snprintf(msg, msglen, "backup of %s: %s", src_path, sqlite3_errstr(st));
        goto out;
    }
    /* a self-contained file: no WAL beside it */
    if (sqlite3_exec(dst, "PRAGMA journal_mode=DELETE", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(msg, msglen, "backup: %s", sqlite3_errmsg(dst));
        goto out;
    }
    rc = 0;
out:
    sqlite3_close(src);
    sqlite3_close(dst);
    return rc;
}

/* Reads users and queue counts and the schema version; checks integrity. */
static int db_inspect(const char *path, pt_backup_info *info, char *msg, size_t msglen)
{
    sqlite3 *db = NULL;
    int rc = PT_ERR_DECODE;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        snprintf(msg, msglen, "the archived database cannot be opened: %s", db ? sqlite3_errmsg(db) : "?");
        goto out;
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK) {
        snprintf(msg, msglen, "the archived database is not a database: %s", sqlite3_errmsg(db));
        goto out;
    }
    int s = sqlite3_step(st);
    bool ok = s == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
    if (!ok)
        snprintf(msg, msglen, "the archived database fails PRAGMA integrity_check: %s",
                 s == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : sqlite3_errmsg(db));
    sqlite3_finalize(st);
    if (!ok) goto out;
    const char *q[] = {"PRAGMA user_version", "SELECT count(*) FROM users", "SELECT count(*) FROM queue"};
    int64_t v[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        if (sqlite3_prepare_v2(db, q[i], -1, &st, NULL) != SQLITE_OK) {
            snprintf(msg, msglen, "the archived database lacks PackTrack's tables: %s", sqlite3_errmsg(db));
            goto out;
        }
        if (sqlite3_step(st) == SQLITE_ROW) v[i] = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    info->schema = (int)v[0];
    info->users = v[1];
    info->queued = v[2];
    if (info->schema > PT_DB_SCHEMA_VERSION) {
        snprintf(msg, msglen, "the archived database has schema %d, newer than this PackTrack's %d: "
                 "restore it with a newer packtrackctl", info->schema, PT_DB_SCHEMA_VERSION);
        goto out;
    }
    rc = 0;
out:
    sqlite3_close(db);
    return rc;
}

int pt_backup_create(const char *data_dir, const char *path, pt_backup_info *info_out, char *msg,
                     size_t msglen)
{
    pt_backup_info info = {.format = PT_BACKUP_FORMAT};
    char src[1200], snap[1200], key[1200], tmp[1200];
    snprintf(src, sizeof src, "%s/packtrack.db", data_dir);
    snprintf(key, sizeof key, "%s/server.key", data_dir);
    snprintf(snap, sizeof snap, "%s.db.tmp", path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = db_snapshot(src, snap, msg, msglen);
    FILE *out = NULL;
    if (rc) goto out;
    if ((rc = db_inspect(snap, &info, msg, msglen)) != 0) goto out;
    const char *paths[NFILES] = {snap, key};
    uint8_t h[NFILES][32];
    uint64_t size[NFILES];
    for (int i = 0; i < NFILES; i++) {
        if ((rc = hash_file(paths[i], h[i], &size[i])) != 0) {
            snprintf(msg, msglen, "%s: %s", i ? key : snap, strerror(errno));
            goto out;
        }
    }
    info.db_bytes = size[0];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(info.created, sizeof info.created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(info.version, sizeof info.version, "%s", PT_VERSION_STRING);
    char header[HEADER_MAX];
    int n = snprintf(header, sizeof header, "%s %d\ncreated %s\npacktrackd %s\nschema %d\n", PT_BACKUP_MAGIC,
                     PT_BACKUP_FORMAT, info.created, info.version, info.schema);
    for (int i = 0; i < NFILES; i++) {
        char hx[65];
        hex32(hx, h[i]);
        n += snprintf(header + n, sizeof header - (size_t)n, "file %s %llu %s\n", files[i],
                      (unsigned long long)size[i], hx);
    }
    uint8_t hh[32];
    char hx[65];
    crypto_hash_sha256(hh, (const uint8_t *)header, (unsigned long long)n);
    hex32(hx, hh);
    n += snprintf(header + n, sizeof header - (size_t)n, "end %s\n", hx);
    rc = PT_ERR_IO;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600); /* it holds the server key */
    if (fd < 0 || !(out = fdopen(fd, "wb"))) {
        snprintf(msg, msglen, "%s: %s", tmp, strerror(errno));
        if (fd >= 0) close(fd);
        goto out;
    }
    if (fwrite(header, 1, (size_t)n, out) != (size_t)n) goto write_err;
    for (int i = 0; i < NFILES; i++)
        if (copy_into(out, paths[i], size[i]) != 0) goto write_err;
    if (fflush(out) != 0 || fsync(fileno(out)) != 0) goto write_err;
    if (fclose(out) != 0) {
        out = NULL;
        goto write_err;
    }
    out = NULL;
    if (rename(tmp, path) != 0) goto write_err;
    rc = 0;
    if (info_out) *info_out = info;
    goto out;
write_err:
    snprintf(msg, msglen, "%s: %s", tmp, strerror(errno ? errno : EIO));
    unlink(tmp);
out:
    if (out) {
        fclose(out);
        unlink(tmp);
    }
    unlink(snap);
    return rc;
}

/* ---- restore ---------------------------------------------------------------------------------- */

typedef pt_backup_entry entry;

/* A file's size in the header: decimal digits only (sscanf's %llu would take a sign
 * and wrap "-1" around to 2^64 - 1), within uint64_t. */
static bool parse_size(const char *text, uint64_t *out)
{
    if (*text < '0' || *text > '9') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (*end || errno) return false;
    *out = v;
    return true;
}

/* text (a header line without its newline) after prefix, as digits only; else false.
 * Not sscanf's %d: it takes a sign and spaces, and a number out of range is undefined. */
static bool field_number(const char *text, const char *prefix, uint64_t *out)
{
    size_t pl = strlen(prefix);
    return strncmp(text, prefix, pl) == 0 && parse_size(text + pl, out);
}

int pt_backup_parse_header(FILE *f, pt_backup_info *info,
                           pt_backup_entry e[static PT_BACKUP_NFILES], char *msg, size_t msglen)
{
    char header[HEADER_MAX + 1];
    size_t used = 0;
    char line[600];
    bool magic = false, ended = false;
    bool have[NFILES] = {false, false};
    while (!ended && fgets(line, sizeof line, f)) {
        size_t ll = strlen(line);
        if (ll == 0 || line[ll - 1] != '\n') {
            snprintf(msg, msglen, "not a PackTrack backup (malformed header)");
            return PT_ERR_DECODE;
        }
        char text[sizeof line];
        memcpy(text, line, ll - 1);
        text[ll - 1] = 0;
        uint64_t number;
        if (!magic) {
            static const char magic_sp[] = PT_BACKUP_MAGIC " ";
            const char *digits = text + sizeof magic_sp - 1;
            if (strncmp(text, magic_sp, sizeof magic_sp - 1) != 0 || !*digits ||
                strspn(digits, "0123456789") != strlen(digits)) {
                snprintf(msg, msglen, "not a PackTrack backup (no %s line)", PT_BACKUP_MAGIC);
                return PT_ERR_DECODE;
            }
            if (!parse_size(digits, &number)) number = UINT64_MAX; /* past 2^64: newer than any */
            info->format = number > INT_MAX ? INT_MAX : (int)number;
            if (number > PT_BACKUP_FORMAT) {
                snprintf(msg, msglen, "archive format %.40s is newer than this packtrackctl understands "
                         "(format %d): restore it with the PackTrack version that wrote it, or a newer one",
                         digits, PT_BACKUP_FORMAT);
                return PT_ERR_VERSION;
            }
            if (number < 1) {
                snprintf(msg, msglen, "archive format 0 is not valid");
                return PT_ERR_DECODE;
            }
            magic = true;
        } else if (strncmp(line, "end ", 4) == 0) {
            uint8_t want[32], got[32];
            line[ll - 1] = 0;
            if (pt_hex_decode(want, 32, line + 4) != 0) {
                snprintf(msg, msglen, "malformed header checksum");
                return PT_ERR_DECODE;
            }
            crypto_hash_sha256(got, (const uint8_t *)header, used);
            if (sodium_memcmp(want, got, 32) != 0) {
                snprintf(msg, msglen, "the header's checksum does not match: the archive is damaged");
                return PT_ERR_AUTH;
            }
            ended = true;
            continue;
        } else if (strncmp(line, "file ", 5) == 0) {
            char name[64], sz[32], hx[80];
            uint64_t size;
            if (sscanf(line, "file %63s %31s %79s", name, sz, hx) != 3 || !parse_size(sz, &size)) {
                snprintf(msg, msglen, "malformed header line: %.80s", line);
                return PT_ERR_DECODE;
            }
            int i = strcmp(name, files[0]) == 0 ? 0 : strcmp(name, files[1]) == 0 ? 1 : -1;
            if (i < 0 || have[i] || pt_hex_decode(e[i].h, 32, hx) != 0) {
                snprintf(msg, msglen, "unexpected file entry in the header: %.80s", name);
                return PT_ERR_DECODE;
            }
            e[i].size = size;
            have[i] = true;
        } else if (field_number(text, "schema ", &number)) {
            info->schema = number > INT_MAX ? INT_MAX : (int)number; /* informative */
        } else if (sscanf(line, "created %31s", info->created) == 1 ||
                   sscanf(line, "packtrackd %31s", info->version) == 1) {
            /* informative */
        }
        if (used + ll > HEADER_MAX) {
            snprintf(msg, msglen, "not a PackTrack backup (header over %d bytes)", HEADER_MAX);
            return PT_ERR_DECODE;
        }
        memcpy(header + used, line, ll);
        used += ll;
    }
    if (!magic) {
        snprintf(msg, msglen, "not a PackTrack backup (empty)");
        return PT_ERR_DECODE;
    }
    if (!ended || !have[0] || !have[1]) {
        snprintf(msg, msglen, "the archive is truncated (incomplete header)");
        return PT_ERR_DECODE;
    }
    return 0;
}

static int extract(FILE *f, const char *dst, const entry *e, const char *name, char *msg, size_t msglen)
{
    int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(msg, msglen, "%s: %s", dst, strerror(errno));
        return PT_ERR_IO;
    }
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    uint8_t buf[65536];
    uint64_t left = e->size;
    int rc = 0;
    while (left && rc == 0) {
        size_t want = left < sizeof buf ? (size_t)left : sizeof buf;
        size_t got = fread(buf, 1, want, f);
        if (got != want) {
            snprintf(msg, msglen, "the archive is truncated (in %s)", name);
            rc = PT_ERR_DECODE;
            break;
        }
        crypto_hash_sha256_update(&st, buf, got);
        if (write(fd, buf, got) != (ssize_t)got) {
            snprintf(msg, msglen, "%s: %s", dst, strerror(errno));
            rc = PT_ERR_IO;
        }
        left -= got;
    }
    uint8_t h[32];
    crypto_hash_sha256_final(&st, h);
    if (rc == 0 && sodium_memcmp(h, e->h, 32) != 0) {
        snprintf(msg, msglen, "%s does not match its SHA-256 in the header: the archive is damaged", name);
        rc = PT_ERR_AUTH;
    }
    if (rc == 0 && fsync(fd) != 0) rc = PT_ERR_IO;
    close(fd);
    return rc;
}

int pt_backup_restore(const char *path, const char *data_dir, bool dry_run, pt_backup_info *info_out,
                      char *msg, size_t msglen)
{
    pt_backup_info info;
    memset(&info, 0, sizeof info);
    entry e[NFILES];
    memset(e, 0, sizeof e);
    char tmpdir[1200];
    bool made_tmp = false;
    int rc;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(msg, msglen, "%s: %s", path, strerror(errno));
        return PT_ERR_IO;
    }
    if ((rc = pt_backup_parse_header(f, &info, e, msg, msglen)) != 0) goto out;
    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(msg, msglen, "%s: %s", data_dir, strerror(errno));
        rc = PT_ERR_IO;
        goto out;
    }
    snprintf(tmpdir, sizeof tmpdir, "%s/.restore-XXXXXX", data_dir);
    if (!mkdtemp(tmpdir)) {
        snprintf(msg, msglen, "%s: %s", data_dir, strerror(errno));
        rc = PT_ERR_IO;
        goto out;
    }
    made_tmp = true;
    char dst[NFILES][1300];
    for (int i = 0; i < NFILES; i++) {
        snprintf(dst[i], sizeof dst[i], "%s/%s", tmpdir, files[i]);
        if ((rc = extract(f, dst[i], &e[i], files[i], msg, msglen)) != 0) goto out;
    }
    if (fgetc(f) != EOF) {
        snprintf(msg, msglen, "unexpected bytes after the last file: the archive is damaged");
        rc = PT_ERR_DECODE;
        goto out;
    }
    if (e[1].size != 65 && e[1].size != 64) {
        snprintf(msg, msglen, "server.key in the archive is not a key file (%llu bytes)",
                 (unsigned long long)e[1].size);
        rc = PT_ERR_DECODE;
        goto out;
    }
    info.db_bytes = e[0].size;
    if ((rc = db_inspect(dst[0], &info, msg, msglen)) != 0) goto out;
    if (!dry_run) {
        /* set aside what is there, -wal and -shm included: a stale WAL would be
         * replayed into the restored database */
        char stamp[32], a[1300], b[1400];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
        static const char *const old[] = {"packtrack.db", "packtrack.db-wal", "packtrack.db-shm", "server.key"};
        for (size_t i = 0; i < PT_ARRAY_LEN(old); i++) {
            snprintf(a, sizeof a, "%s/%s", data_dir, old[i]);
            snprintf(b, sizeof b, "%s.pre-restore-%s", a, stamp);
            if (rename(a, b) != 0 && errno != ENOENT) {
                snprintf(msg, msglen, "cannot set %s aside: %s", a, strerror(errno));
                rc = PT_ERR_IO;
                goto out;
            }
        }
        struct stat dst_st;
        bool own = stat(data_dir, &dst_st) == 0 && geteuid() == 0;
        for (int i = 0; i < NFILES; i++) {
            snprintf(a, sizeof a, "%s/%s", data_dir, files[i]);
            /* root restoring for the service user: the files get the directory's owner */
            if (own && chown(dst[i], dst_st.st_uid, dst_st.st_gid) != 0) {
                snprintf(msg, msglen, "chown %s: %s", dst[i], strerror(errno));
                rc = PT_ERR_IO;
                goto out;
            }
            if (rename(dst[i], a) != 0) {
                snprintf(msg, msglen, "cannot install %s: %s", a, strerror(errno));
                rc = PT_ERR_IO;
                goto out;
            }
        }
    }
    rc = 0;
out:
    fclose(f);
    if (made_tmp) {
        for (int i = 0; i < NFILES; i++) {
            char p[1300];
            snprintf(p, sizeof p, "%s/%s", tmpdir, files[i]);
            unlink(p);
        }
        rmdir(tmpdir);
    }
    if (info_out) *info_out = info;
    return rc;
}
