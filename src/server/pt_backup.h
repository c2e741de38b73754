/*
 * Backup archives of a packtrackd data directory (backup.c), written by the
 * running server (packtrackctl backup) and restored by packtrackctl restore into
 * a data directory no server is using.
 *
 * Format 1, a text header then the files' bytes back to back:
 *
 *   PACKTRACK-BACKUP 1
 *   created 2026-01-01T00:00:00Z
 *   packtrackd 0.1.0
 *   schema 6
 *   file packtrack.db SIZE SHA256HEX
 *   file server.key SIZE SHA256HEX
 *   end SHA256HEX                      (of every header byte before this line)
 *   <SIZE bytes of packtrack.db><SIZE bytes of server.key>
 *
 * packtrack.db is a snapshot taken with SQLite's online backup API in one read
 * transaction, so it is consistent while the server keeps writing (WAL readers do
 * not block the writer). A reader refuses a format newer than PT_BACKUP_FORMAT.
 */
#ifndef PT_BACKUP_H
#define PT_BACKUP_H

#include <stdio.h>

#include "common/pt_common.h"

#define PT_BACKUP_FORMAT 1
#define PT_BACKUP_MAGIC "PACKTRACK-BACKUP"
#define PT_DATADIR_LOCK "packtrackd.lock"   /* flock()ed by the server while it runs */

typedef struct pt_backup_info {
    int format;                 /* the archive's format version */
    int schema;                 /* the database's schema version */
    char created[32];           /* UTC, ISO 8601 */
    char version[32];           /* packtrackd that wrote it */
    uint64_t db_bytes;
    int64_t users, queued;      /* rows in users and queue */
} pt_backup_info;

/* Writes an archive of data_dir to path (through path.tmp, renamed when
 * complete). Blocks: run it off the event loop. 0, or an error with a sentence in
 * msg. info (may be NULL) describes what was written. */
int pt_backup_create(const char *data_dir, const char *path, pt_backup_info *info, char *msg,
                     size_t msglen) PT_WUR;

/* Checks the archive at path completely (header checksum, format version, every
 * file's size and SHA-256, PRAGMA integrity_check, the schema version) and,
 * unless dry_run, installs it into data_dir: the files it replaces are kept
 * beside it as NAME.pre-restore-TIMESTAMP, stale -wal / -shm files included.
 * The caller must hold the data directory's lock (pt_datadir_lock). */
int pt_backup_restore(const char *path, const char *data_dir, bool dry_run, pt_backup_info *info,
                      char *msg, size_t msglen) PT_WUR;

/* Takes the data directory's lock (DIR/packtrackd.lock, flock, not waiting):
 * a descriptor to keep open while using the directory, or -1 with a sentence in
 * msg (held by a running packtrackd, or an I/O error). */
int pt_datadir_lock(const char *data_dir, char *msg, size_t msglen);

#define PT_BACKUP_NFILES 2          /* packtrack.db, server.key, in this order */
#define PT_BACKUP_HEADER_MAX 4096   /* header bytes before its "end" line */

/* One file of the archive, as its header line announces it. */
typedef struct pt_backup_entry {
    uint64_t size;              /* bytes that follow in the archive */
    uint8_t h[32];              /* their SHA-256 */
} pt_backup_entry;

/* The name of the archive's file i (< PT_BACKUP_NFILES), in the order of the bytes. */
const char *pt_backup_file_name(size_t i);

/* Reads the header from f (any stream: a file, fmemopen'ed bytes) up to and with
 * its "end" line, so that f is left at the first file's bytes: 0 when the magic
 * line, a known format, exactly one line per file (e[i] for pt_backup_file_name(i))
 * and a matching header checksum are there; else an error (PT_ERR_DECODE malformed
 * or truncated, PT_ERR_VERSION a newer format, PT_ERR_AUTH a checksum mismatch) with a
 * sentence in msg. info gets the format and what the informative lines say (format,
 * schema, created, version), whatever the result; e is written only for the files seen.
 * Reads no more than the header, and nothing but f. */
int pt_backup_parse_header(FILE *f, pt_backup_info *info,
                           pt_backup_entry e[static PT_BACKUP_NFILES], char *msg,
                           size_t msglen) PT_WUR;

#endif
