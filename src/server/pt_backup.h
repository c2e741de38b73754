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

#endif
