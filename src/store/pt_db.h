/*
 * src/store/pt_db - packtrackd's SQLite store.
 *
 * One database file in WAL mode with synchronous=FULL: a committed transaction
 * survives a crash or power loss. Writes never run on the event loop: callers
 * submit operations to a writer thread, which takes every operation waiting,
 * runs them in ONE transaction (each inside its own savepoint, or a run of
 * rerunnable ones in a shared one, so one failing operation does not undo the
 * others) and commits once: group commit, one fsync
 * for a whole batch. Each operation's `done` callback then runs on the event loop
 * with its result. Reads run on the caller's thread on a separate connection
 * (WAL readers never wait for the writer).
 */
#ifndef PT_DB_H
#define PT_DB_H

#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <uv.h>

#include "common/pt_common.h"

#define PT_DB_SCHEMA_VERSION 8
#define PT_DB_MAX_BATCH 4096 /* operations in one transaction at most */
/* The writer thread ("pt-db-writer") runs this much nicer than the thread that
 * opened the store: on a server short of CPU the event loops go first, and their
 * confirmations withdraw the sends the writer would otherwise store and delete
 * (docs/ARCHITECTURE.md, "The store"). 5 is a weight of about a third of theirs;
 * with 15 or more, the writes a client waits for lag by seconds under overload. */
#define PT_DB_WRITER_NICE 5
/* A writer with nothing due sleeps at least this long (µs): the held ops that fall
 * due meanwhile go in one transaction, and a held op may be applied this much
 * after its time. Sends that confirmations withdraw would otherwise wake it about
 * once each, at the time of one already gone (docs/ARCHITECTURE.md, "The store"). */
#define PT_DB_HOLD_SLACK_US 1000

typedef struct pt_db pt_db;

/* One write. apply() runs on the writer thread inside the batch transaction and
 * returns 0 or a negative pt_err (its savepoint is then rolled back); done() runs
 * on the loop thread after the commit with apply's result, or with PT_ERR_IO when
 * the commit itself failed. The op is borrowed until done() is called. */
typedef struct pt_db_op {
    int (*apply)(sqlite3 *db, void *arg);
    void (*done)(void *arg, int rc);
    void *arg;
    bool rerunnable;        /* apply() only changes the database (and what it reports
                               is reset when it starts), so it may run twice: a run
                               of such ops shares one savepoint, and they are run
                               again one by one if one of them fails */
    int rc;                 /* filled by the writer */
    uint64_t submitted_ns;  /* for commit-latency metrics */
    _Atomic int state;      /* whether apply() may still be skipped (pt_db_withdraw) */
    uint32_t hold_us;       /* the writer waits until the op is this old before applying
                               it, so that it may be withdrawn first; 0: at once. Ops
                               behind a held one may pass it only if they commute.
                               Submitting raises it to the time of the last held op
                               (they fall due in order); a later withdrawal of that op
                               does not lower it again */
    bool commutes;          /* not held, and its effect does not depend on whether held
                               ops ran before it (e.g. deleting rows no held op writes).
                               Any other op releases every held op before it is queued:
                               the writer then applies them first, in order */
    bool urgent;            /* commutes, and goes before everything waiting: work that
                               other work waits for (the server-id reservation every
                               send needs), which a writer behind by seconds would
                               otherwise hold up */
    struct pt_db_op *next, *prev; /* queue links, owned by pt_db */
    uint8_t queue;          /* which of pt_db's queues holds it (0: none), owned by pt_db */
} pt_db_op;

/* Upper bounds (µs) of the commit-latency histogram's buckets; one more bucket
 * (+Inf) follows them. */
#define PT_DB_COMMIT_BUCKETS 12
extern const uint32_t pt_db_commit_bucket_us[PT_DB_COMMIT_BUCKETS];

typedef struct pt_db_stats {
    uint64_t commits;        /* transactions committed */
    uint64_t ops;            /* operations applied */
    uint64_t max_batch;      /* largest batch so far */
    uint64_t last_commit_us; /* duration of the latest commit (incl. fsync) */
    uint64_t commit_us_sum;  /* all commits' durations added up */
    uint64_t commit_hist[PT_DB_COMMIT_BUCKETS + 1]; /* commits per bucket (not cumulative), +Inf last */
    uint64_t failed_commits; /* COMMITs that failed (their operations got PT_ERR_IO) */
} pt_db_stats;

/* Opens (creating if needed) the database at path, migrates it to
 * PT_DB_SCHEMA_VERSION and starts the writer thread. Completions are delivered on
 * loop. PT_ERR_IO with a log line when the file cannot be opened, PT_ERR_VERSION
 * when it was written by a newer PackTrack. */
int pt_db_open(pt_db **out, const char *path, uv_loop_t *loop) PT_WUR;
/* Waits for queued operations, stops the writer and closes. Must run on the
 * loop thread; runs the remaining done() callbacks before returning. The memory
 * is released by a libuv close callback: run the loop once more afterwards. */
void pt_db_close(pt_db *db);

/* Queues a write; thread-safe. pt_db_submit_at takes the time of submission from a
 * CLOCK_MONOTONIC reading in ns (uv_hrtime) the caller just made, instead of reading
 * the clock again. */
void pt_db_submit(pt_db *db, pt_db_op *op);
void pt_db_submit_at(pt_db *db, pt_db_op *op, uint64_t now_ns);
/* Withdraws a submitted op whose apply() has not started, for writes that became
 * unnecessary while they waited (e.g. a message every recipient confirmed before
 * it was stored). Loop thread. Returns
 *   PT_DB_REMOVED  when the writer had not taken it yet: it is out of the queue,
 *                  done() will not run, and the op is the caller's again;
 *   PT_DB_SKIPPED  when the writer had taken it but not applied it: it skips it,
 *                  done() still runs (rc 0, or the error of its batch's commit),
 *                  and the op stays borrowed until then;
 *   0              once the writer has begun or finished applying it. */
enum { PT_DB_REMOVED = 1, PT_DB_SKIPPED = 2 };
int pt_db_withdraw(pt_db *db, pt_db_op *op) PT_WUR;
/* The read connection, for the loop thread only. */
sqlite3 *pt_db_reader(pt_db *db);
void pt_db_get_stats(pt_db *db, pt_db_stats *out);

/* Small helpers for prepared statements: prepare, bind, step. They map SQLite
 * errors to pt_err and log them. */
int pt_db_exec(sqlite3 *db, const char *sql) PT_WUR;
/* A fresh statement, for one-off queries; the caller finalizes it. */
int pt_db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st) PT_WUR;
/* The statement for sql on db from a cache of the calling thread, prepared on
 * first use and kept: compiling SQL was 40% of the server's CPU. sql must have
 * static storage (a string literal): the cache keys on its address and the
 * connection. Give it back with pt_db_release() on every path, before the next
 * use of the same sql on db (nested use gets a fresh statement, also released
 * with pt_db_release()). Cached statements are finalized by pt_db_close(). */
int pt_db_stmt(sqlite3 *db, const char *sql, sqlite3_stmt **st) PT_WUR;
/* Resets st and clears its bindings (a cached one), or finalizes it (a fresh one).
 * NULL is a no-op. A read statement ends its read transaction here. */
void pt_db_release(sqlite3_stmt *st);
/* Finalizes the calling thread's cached statements of db: for a connection that
 * did not come from pt_db_open(), before it is closed. */
void pt_db_forget(sqlite3 *db);
/* SQLITE_ROW -> 1, SQLITE_DONE -> 0, a constraint violation -> PT_ERR_STATE, other -> PT_ERR_IO. */
int pt_db_step(sqlite3_stmt *st) PT_WUR;

#endif
