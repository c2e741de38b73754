#define _GNU_SOURCE /* pthread_setname_np, gettid */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "store/pt_db.h"

/* Schema migrations: migrations[i] takes the database from version i to i + 1. */
static const char *const migrations[PT_DB_SCHEMA_VERSION] = {
    /* 0 -> 1: identities, devices, prekeys, contacts, groups, durable queues */
    "CREATE TABLE users ("
    "  user_id BLOB PRIMARY KEY,"          /* BLAKE2b-128 of the identity key */
    "  identity_key BLOB NOT NULL UNIQUE," /* Ed25519, 32 bytes */
    "  username TEXT,"                     /* display form (NFC) */
    "  username_key TEXT UNIQUE,"          /* NFC + case fold: the lookup key */
    "  username_skeleton TEXT UNIQUE,"     /* confusable skeleton */
    "  created_ms INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE TABLE devices ("
    "  device_key BLOB PRIMARY KEY,"       /* the Noise static key */
    "  user_id BLOB NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,"
    "  cert BLOB NOT NULL,"                /* identity-key signature over the device key */
    "  created_ms INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX devices_by_user ON devices(user_id);"
    "CREATE TABLE prekeys ("
    "  device_key BLOB NOT NULL REFERENCES devices(device_key) ON DELETE CASCADE,"
    "  kind INTEGER NOT NULL,"             /* 0 one-time, 1 signed fallback */
    "  key_id INTEGER NOT NULL,"
    "  public BLOB NOT NULL,"
    "  signature BLOB,"
    "  PRIMARY KEY (device_key, kind, key_id)"
    ") WITHOUT ROWID;"
    "CREATE TABLE contacts ("
    "  user_id BLOB NOT NULL,"
    "  peer_id BLOB NOT NULL,"
    "  state INTEGER NOT NULL,"            /* see src/server: request sent/received, friends, blocked */
    "  note TEXT,"
    "  updated_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (user_id, peer_id)"
    ") WITHOUT ROWID;"
    "CREATE TABLE groups ("
    "  group_id BLOB PRIMARY KEY,"
    "  creator BLOB NOT NULL,"
    "  created_ms INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE TABLE group_members ("
    "  group_id BLOB NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,"
    "  user_id BLOB NOT NULL,"
    "  role INTEGER NOT NULL,"             /* 0 member, 1 admin, 2 creator */
    "  PRIMARY KEY (group_id, user_id)"
    ") WITHOUT ROWID;"
    "CREATE TABLE messages ("
    "  server_id INTEGER PRIMARY KEY,"     /* increasing, assigned by the server */
    "  sender BLOB NOT NULL,"
    "  sender_device BLOB NOT NULL,"
    "  date_ms INTEGER NOT NULL,"
    "  envelope BLOB NOT NULL,"
    "  refs INTEGER NOT NULL"              /* queue rows still pointing here */
    ");"
    "CREATE TABLE queue ("
    "  device_key BLOB NOT NULL,"
    "  server_id INTEGER NOT NULL REFERENCES messages(server_id),"
    "  PRIMARY KEY (device_key, server_id)"
    ") WITHOUT ROWID;",
    /* 1 -> 2: presence, group invitations, and what kind of item a messages row is
     * (src/server/pt_server_int.h, enum pt_srv_item_kind) */
    "ALTER TABLE users ADD COLUMN status INTEGER NOT NULL DEFAULT 1;" /* 1 online .. 4 invisible */
    "ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;" /* 0 message .. 4 group event */
    "ALTER TABLE messages ADD COLUMN group_id BLOB;"  /* group message or event */
    "ALTER TABLE messages ADD COLUMN peer BLOB;"      /* group event: the member concerned */
    "ALTER TABLE messages ADD COLUMN about INTEGER;"  /* receipt: the server_id acknowledged */
    "ALTER TABLE messages ADD COLUMN status INTEGER;" /* receipt status, contact action, group event */
    "ALTER TABLE messages ADD COLUMN note TEXT;"      /* contact request note */
    "CREATE TABLE group_invites ("
    "  group_id BLOB NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,"
    "  user_id BLOB NOT NULL,"
    "  inviter BLOB NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (group_id, user_id)"
    ") WITHOUT ROWID;",
    /* 2 -> 3: queue rows are found by server_id when a message is deleted (the
     * foreign-key check scanned the whole queue for every confirmed message:
     * 30% of the server's CPU under load, docs/BENCHMARKS.md) */
    "CREATE INDEX queue_by_server_id ON queue(server_id);",
    /* 3 -> 4: no foreign key from queue to messages, and so no index by server_id
     * for it: messages.refs already counts a message's queue rows (the row goes
     * with its last one), and the check plus the index were two B-tree lookups and
     * an index row to insert and delete per message, on the writer's hot path */
    "CREATE TABLE queue_v4 ("
    "  device_key BLOB NOT NULL,"
    "  server_id INTEGER NOT NULL,"        /* a messages row, counted in its refs */
    "  PRIMARY KEY (device_key, server_id)"
    ") WITHOUT ROWID;"
    "INSERT INTO queue_v4(device_key, server_id) SELECT device_key, server_id FROM queue;"
    "DROP TABLE queue;"
    "ALTER TABLE queue_v4 RENAME TO queue;",
    /* 4 -> 5: device linking and revocation (src/server/devices.c) */
    "CREATE TABLE device_links ("
    "  link_id BLOB PRIMARY KEY,"          /* 16 random bytes chosen by the linking device */
    "  user_id BLOB NOT NULL,"
    "  blob BLOB NOT NULL,"                /* sealed for the new device; opaque here */
    "  expires_ms INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE TABLE revoked_devices ("
    "  device_key BLOB PRIMARY KEY,"
    "  user_id BLOB NOT NULL,"
    "  revoked_ms INTEGER NOT NULL"
    ") WITHOUT ROWID;",
    /* 5 -> 6: operators' bans and deletions (src/server/admin.c, packtrackctl) */
    "CREATE TABLE banned_users ("
    "  user_id BLOB PRIMARY KEY,"
    "  banned_ms INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE TABLE retired_usernames ("     /* names of deleted users: never bound again */
    "  username_key TEXT PRIMARY KEY,"
    "  username_skeleton TEXT NOT NULL,"
    "  deleted_ms INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX retired_by_skeleton ON retired_usernames(username_skeleton);",
    /* 6 -> 7: server_ids are handed out from blocks whose end is stored first; the
     * largest id in messages is no bound (confirmed rows are deleted, and a message
     * confirmed by every device before the writer got to it is never written) */
    ("CREATE TABLE server_ids (reserved INTEGER NOT NULL);"
     "INSERT INTO server_ids SELECT coalesce(max(server_id), 0) + 1 FROM messages;"),
    /* 7 -> 8: cluster mode: the version of each contact and group record this node's
     * copy holds, so that an older version arriving late never replaces a newer one
     * (src/server/messaging.c, pt_srv_copy_newer) */
    "CREATE TABLE copy_versions ("
    "  record BLOB PRIMARY KEY,"           /* 'k' lo hi, or 'g' group id */
    "  version INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    /* and each device's largest one-time prekey id stored so far: ids only grow, so
     * an upload sent again (its answer lost) does not put back a key handed out since
     * (src/server/prekeys.c); from the keys stored, for devices that have some */
    "CREATE TABLE prekey_floor ("
    "  device_key BLOB PRIMARY KEY,"
    "  floor INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "INSERT INTO prekey_floor SELECT device_key, max(key_id) FROM prekeys WHERE kind = 0 "
    "GROUP BY device_key;",
};

const uint32_t pt_db_commit_bucket_us[PT_DB_COMMIT_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000};

struct pt_db {
    sqlite3 *w;                 /* the writer's connection (writer thread only) */
    sqlite3 *r;                 /* the reader connection (loop thread only) */
    uv_loop_t *loop;
    uv_async_t async;           /* wakes the loop when operations completed */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* submitted, not yet applied: ops the writer may take now, in the order they must
     * be applied, and held ops (hold_us), in the order they came and fall due */
    pt_db_op *ready_head, *ready_tail;
    pt_db_op *held_head, *held_tail;
    pt_db_op *done_head, *done_tail;       /* committed, done() not yet called */
    bool stopping, thread_started;
    /* when the writer wakes by itself: 0 while it is awake (it looks at both queues
     * before it sleeps), UINT64_MAX while it sleeps until it is signalled */
    uint64_t writer_wake_ns;
    pt_db_stats stats;
};

static void free_db(uv_handle_t *h);

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int pt_db_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        pt_log_error("sqlite: %s (in: %.60s)", err ? err : sqlite3_errmsg(db), sql);
        sqlite3_free(err);
        return PT_ERR_IO;
    }
    return 0;
}

/* For cleanup statements whose failure is already being handled (ROLLBACK after
 * an error): the error is logged by pt_db_exec and nothing more can be done. */
static void exec_cleanup(sqlite3 *db, const char *sql)
{
    if (pt_db_exec(db, sql) != 0) pt_log_warn("sqlite: cleanup '%s' failed", sql);
}

static int exec_cached(sqlite3 *db, const char *sql);
static void stmt_cache_purge(sqlite3 *db);

/* exec_cleanup for the writer's batch statements, from the statement cache. */
static void exec_cleanup_cached(sqlite3 *db, const char *sql)
{
    if (exec_cached(db, sql) != 0) pt_log_warn("sqlite: cleanup '%s' failed", sql);
}

int pt_db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK) {
        pt_log_error("sqlite: cannot prepare: %s (in: %.60s)", sqlite3_errmsg(db), sql);
        return PT_ERR_IO;
    }
    return 0;
}

/* ---- the statement cache ------------------------------------------------------------------
 * Per thread, so that neither thread locks: the writer thread only ever uses the
 * writer's connection, the loop thread the reader's. An open-addressing table of
 * (connection, SQL address) -> statement; the statements handed out and not yet
 * released are remembered in a short list, so that pt_db_release() knows a cached
 * statement from a fresh one. */

typedef struct stmt_ent {
    sqlite3 *db;
    const char *sql;               /* the caller's literal: the key is its address */
    sqlite3_stmt *st;
    bool busy;                     /* handed out, not released yet */
} stmt_ent;

#define STMT_BUSY_MAX 16           /* cached statements out at once, per thread */

static _Thread_local stmt_ent **t_stmts; /* t_cap slots, NULL or an entry */
static _Thread_local size_t t_cap, t_n;
static _Thread_local stmt_ent *t_busy[STMT_BUSY_MAX];
static _Thread_local size_t t_nbusy;

static size_t stmt_slot(sqlite3 *db, const char *sql, size_t cap)
{
    uint64_t h = ((uint64_t)(uintptr_t)db * 0x9e3779b97f4a7c15ull) ^ (uint64_t)(uintptr_t)sql;
    h ^= h >> 29;
    return (size_t)(h * 0xbf58476d1ce4e5b9ull >> 17) & (cap - 1);
}

static int stmt_table_resize(size_t cap)
{
    stmt_ent **t = calloc(cap, sizeof *t);
    if (!t) return PT_ERR_NOMEM;
    for (size_t i = 0; i < t_cap; i++) {
        stmt_ent *e = t_stmts[i];
        if (!e) continue;
        size_t j = stmt_slot(e->db, e->sql, cap);
        while (t[j]) j = (j + 1) & (cap - 1);
        t[j] = e;
    }
    free(t_stmts);
    t_stmts = t;
    t_cap = cap;
    return 0;
}

int pt_db_stmt(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
    *st = NULL;
    size_t j = 0;
    if (t_cap) {
        for (j = stmt_slot(db, sql, t_cap); t_stmts[j]; j = (j + 1) & (t_cap - 1)) {
            stmt_ent *e = t_stmts[j];
            if (e->db != db || e->sql != sql) continue;
            if (e->busy || t_nbusy == STMT_BUSY_MAX) return pt_db_prepare(db, sql, st); /* nested */
            e->busy = true;
            t_busy[t_nbusy++] = e;
            *st = e->st;
            return 0;
        }
    }
    if (t_nbusy == STMT_BUSY_MAX) return pt_db_prepare(db, sql, st);
    if ((t_n + 1) * 2 > t_cap) {
        int rc = stmt_table_resize(t_cap ? t_cap * 2 : 64);
        if (rc) return rc;
        j = stmt_slot(db, sql, t_cap);
        while (t_stmts[j]) j = (j + 1) & (t_cap - 1);
    }
    stmt_ent *e = calloc(1, sizeof *e);
    if (!e) return PT_ERR_NOMEM;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &e->st, NULL) != SQLITE_OK) {
        pt_log_error("sqlite: cannot prepare: %s (in: %.60s)", sqlite3_errmsg(db), sql);
        sqlite3_finalize(e->st);
        free(e);
        return PT_ERR_IO;
    }
    e->db = db;
    e->sql = sql;
    e->busy = true;
    t_stmts[j] = e;
    t_n++;
    t_busy[t_nbusy++] = e;
    *st = e->st;
    return 0;
}

void pt_db_release(sqlite3_stmt *st)
{
    if (!st) return;
    for (size_t i = t_nbusy; i-- > 0;) {
        if (t_busy[i]->st != st) continue;
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        t_busy[i]->busy = false;
        t_busy[i] = t_busy[--t_nbusy];
        return;
    }
    sqlite3_finalize(st);
}

void pt_db_forget(sqlite3 *db) { stmt_cache_purge(db); }

/* Finalizes the calling thread's cached statements of db. */
static void stmt_cache_purge(sqlite3 *db)
{
    if (!db || !t_cap) return;
    for (size_t i = 0; i < t_nbusy;) { /* none should be out; forget them if so */
        if (t_busy[i]->db == db) t_busy[i] = t_busy[--t_nbusy];
        else i++;
    }
    size_t kept = 0;
    for (size_t i = 0; i < t_cap; i++) {
        stmt_ent *e = t_stmts[i];
        if (!e) continue;
        if (e->db == db) {
            sqlite3_finalize(e->st);
            free(e);
            t_stmts[i] = NULL;
            t_n--;
        } else {
            kept++;
        }
    }
    if (kept == 0) {
        free(t_stmts);
        t_stmts = NULL;
        t_cap = t_n = t_nbusy = 0;
    } else if (stmt_table_resize(t_cap) != 0) {
        pt_log_warn("sqlite: statement cache left with holes");
    }
}

/* Runs a statement without results (BEGIN, SAVEPOINT, COMMIT ...) from the cache. */
static int exec_cached(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, sql, &st);
    if (rc) return rc;
    rc = pt_db_step(st);
    pt_db_release(st);
    return rc < 0 ? rc : 0;
}

int pt_db_step(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) return 1;
    if (rc == SQLITE_DONE) return 0;
    if ((rc & 0xff) == SQLITE_CONSTRAINT) return PT_ERR_STATE;
    pt_log_error("sqlite: %s", sqlite3_errmsg(sqlite3_db_handle(st)));
    return PT_ERR_IO;
}

static int open_conn(const char *path, sqlite3 **out)
{
    if (sqlite3_open_v2(path, out, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        pt_log_error("cannot open database %s: %s", path, *out ? sqlite3_errmsg(*out) : "out of memory");
        return PT_ERR_IO;
    }
    sqlite3_busy_timeout(*out, 5000);
    /* temp_store=MEMORY: the writer's per-operation savepoints keep the pages they
     * change in a statement sub-journal, which is otherwise a temporary file
     * (written for every operation, never needed after the commit). Durability
     * is the WAL's and synchronous=FULL's, unchanged. */
    return pt_db_exec(*out, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                            "PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;");
}

static int migrate(sqlite3 *db, const char *path)
{
    sqlite3_stmt *st;
    int rc = pt_db_prepare(db, "PRAGMA user_version", &st);
    if (rc) return rc;
    int version = pt_db_step(st) == 1 ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    if (version < 0) return PT_ERR_IO;
    if (version > PT_DB_SCHEMA_VERSION) {
        pt_log_error("database %s has schema version %d; this packtrackd knows up to %d",
                     path, version, PT_DB_SCHEMA_VERSION);
        return PT_ERR_VERSION;
    }
    for (int v = version; v < PT_DB_SCHEMA_VERSION; v++) {
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version=%d;", v + 1);
        if ((rc = pt_db_exec(db, "BEGIN IMMEDIATE")) != 0) return rc;
        if ((rc = pt_db_exec(db, migrations[v])) != 0 || (rc = pt_db_exec(db, bump)) != 0) {
            exec_cleanup(db, "ROLLBACK");
            return rc;
        }
        if ((rc = pt_db_exec(db, "COMMIT")) != 0) return rc;
        pt_log_info("database %s migrated to schema version %d", path, v + 1);
    }
    return 0;
}

enum { OP_QUEUED, OP_APPLYING, OP_WITHDRAWN };
enum { Q_NONE, Q_READY, Q_HELD }; /* pt_db_op.queue: taken by the writer, or where it waits */

/* The queues and the batch are doubly linked lists (pt_db_withdraw unlinks). */
static void list_append(pt_db_op **head, pt_db_op **tail, pt_db_op *op)
{
    op->next = NULL;
    op->prev = *tail;
    if (*tail) (*tail)->next = op;
    else *head = op;
    *tail = op;
}

static void list_prepend(pt_db_op **head, pt_db_op **tail, pt_db_op *op)
{
    op->prev = NULL;
    op->next = *head;
    if (*head) (*head)->prev = op;
    else *tail = op;
    *head = op;
}

static void list_unlink(pt_db_op **head, pt_db_op **tail, pt_db_op *op)
{
    if (op->prev) op->prev->next = op->next;
    else *head = op->next;
    if (op->next) op->next->prev = op->prev;
    else *tail = op->prev;
    op->next = op->prev = NULL;
    op->queue = Q_NONE;
}

static pt_db_op *list_pop(pt_db_op **head, pt_db_op **tail)
{
    pt_db_op *op = *head;
    list_unlink(head, tail, op);
    return op;
}

/* Whether the writer may apply op: it claims it, unless the loop withdrew it
 * first (it may still, until this moment). A claimed op stays claimed for a
 * rerun. */
static bool claim(pt_db_op *op)
{
    int expect = OP_QUEUED;
    return atomic_compare_exchange_strong(&op->state, &expect, OP_APPLYING) || expect == OP_APPLYING;
}

int pt_db_withdraw(pt_db *db, pt_db_op *op)
{
    pthread_mutex_lock(&db->mu);
    bool queued = op->queue != Q_NONE;
    if (queued) {
        /* still waiting: out of its queue, as if never submitted (the writer never
         * touches it again: on a loaded server that was a cache miss per message
         * in the writer, and a trip back to the loop for its done()) */
        if (op->queue == Q_READY) {
            list_unlink(&db->ready_head, &db->ready_tail, op);
        } else {
            list_unlink(&db->held_head, &db->held_tail, op);
        }
        atomic_store(&op->state, OP_WITHDRAWN);
    }
    pthread_mutex_unlock(&db->mu);
    if (queued) return PT_DB_REMOVED;
    int expect = OP_QUEUED;
    return atomic_compare_exchange_strong(&op->state, &expect, OP_WITHDRAWN) ? PT_DB_SKIPPED : 0;
}

/* Runs op in a savepoint of its own. */
static void run_one(pt_db *db, pt_db_op *op)
{
    if (!claim(op)) return;
    if (exec_cached(db->w, "SAVEPOINT op") != 0) {
        op->rc = PT_ERR_IO;
        return;
    }
    op->rc = op->apply(db->w, op->arg);
    if (op->rc) exec_cleanup_cached(db->w, "ROLLBACK TO op");
    exec_cleanup_cached(db->w, "RELEASE op");
}

/* Runs the rerunnable ops [first, end) in one savepoint; if one fails, rolls them
 * all back and runs each in its own savepoint, so that only the failing one is
 * undone. */
static void run_group(pt_db *db, pt_db_op *first, pt_db_op *end)
{
    if (first->next == end) {
        run_one(db, first);
        return;
    }
    if (exec_cached(db->w, "SAVEPOINT ops") != 0) {
        for (pt_db_op *op = first; op != end; op = op->next) op->rc = PT_ERR_IO;
        return;
    }
    bool failed = false;
    for (pt_db_op *op = first; op != end && !failed; op = op->next)
        if (claim(op)) failed = (op->rc = op->apply(db->w, op->arg)) != 0;
    if (failed) exec_cleanup_cached(db->w, "ROLLBACK TO ops");
    exec_cleanup_cached(db->w, "RELEASE ops");
    if (failed)
        for (pt_db_op *op = first; op != end; op = op->next) run_one(db, op);
}

/* Runs one batch: every op in a savepoint (a run of rerunnable ones in a shared
 * one), one commit. */
static void run_batch(pt_db *db, pt_db_op *batch)
{
    uint64_t n = 0;
    for (pt_db_op *op = batch; op; op = op->next) n += atomic_load(&op->state) != OP_WITHDRAWN;
    if (n == 0) return; /* nothing to apply: no transaction */
    int rc = exec_cached(db->w, "BEGIN IMMEDIATE");
    for (pt_db_op *op = batch, *end; op; op = end) {
        end = op->next;
        if (rc) {
            op->rc = rc;
            continue;
        }
        if (!op->rerunnable) {
            run_one(db, op);
            continue;
        }
        while (end && end->rerunnable) end = end->next;
        run_group(db, op, end);
    }
    if (rc == 0) {
        uint64_t t0 = now_ns();
        bool failed = exec_cached(db->w, "COMMIT") != 0;
        if (failed) {
            /* after an I/O error or a full disk SQLite has rolled the transaction back
             * itself: a second ROLLBACK would only log "no transaction is active" */
            if (!sqlite3_get_autocommit(db->w)) exec_cleanup_cached(db->w, "ROLLBACK");
            pt_log_error("store: a commit of %llu operation(s) failed; each is answered with an error "
                         "(clients keep their messages and send them again)", (unsigned long long)n);
            for (pt_db_op *op = batch; op; op = op->next) op->rc = PT_ERR_IO;
        }
        uint64_t us = (now_ns() - t0) / 1000;
        size_t b = 0;
        while (b < PT_DB_COMMIT_BUCKETS && us > pt_db_commit_bucket_us[b]) b++;
        pthread_mutex_lock(&db->mu);
        db->stats.commits++;
        db->stats.failed_commits += failed;
        db->stats.ops += n;
        if (n > db->stats.max_batch) db->stats.max_batch = n;
        db->stats.last_commit_us = us;
        db->stats.commit_us_sum += us;
        db->stats.commit_hist[b]++;
        pthread_mutex_unlock(&db->mu);
    }
}

/* When a held op falls due (CLOCK_MONOTONIC ns). */
static uint64_t due_at(const pt_db_op *op) { return op->submitted_ns + op->hold_us * 1000ull; }

/* (A withdrawn op is never in a queue: pt_db_withdraw unlinks it.) */
static bool due(const pt_db_op *op, uint64_t now)
{
    return now - op->submitted_ns >= op->hold_us * 1000ull;
}

/* Names the writer thread and makes it PT_DB_WRITER_NICE nicer than the thread
 * that started it (the store's opener, or its closer for the last rounds), whose
 * nice value a new thread inherits. Linux gives each thread its own nice value:
 * getpriority() and setpriority() with the thread id read and change this thread
 * only. A failure is logged and ignored: the writer then merely competes with the
 * loops as an equal. */
static void writer_setup(void)
{
    static atomic_bool warned; /* once: pt_db_close may run the writer again */
    pthread_setname_np(pthread_self(), "pt-db-writer");
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, (id_t)gettid()); /* -1 may be a value: errno tells */
    if (nice == -1 && errno != 0) nice = 0;
    nice = nice + PT_DB_WRITER_NICE > 19 ? 19 : nice + PT_DB_WRITER_NICE;
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), nice) != 0 && !atomic_exchange(&warned, true))
        pt_log_warn("store: cannot lower the writer's priority to nice %d: %s", nice, strerror(errno));
}

static void *writer_main(void *arg)
{
    pt_db *db = arg;
    writer_setup();
    pthread_mutex_lock(&db->mu);
    for (;;) {
        while (!db->ready_head && !db->held_head && !db->stopping) {
            db->writer_wake_ns = UINT64_MAX;
            pthread_cond_wait(&db->cv, &db->mu);
        }
        db->writer_wake_ns = 0;
        if (!db->ready_head && !db->held_head && db->stopping) break;
        /* take up to PT_DB_MAX_BATCH operations: the ready ones, then the held ones
         * that are due. Held ops fall due in the order they came (pt_db_submit), so
         * the first one not due ends the take. The ready ones go first: a held op that
         * came before one of them that does not commute was moved ahead of it, so
         * what stays held came after them or commutes with them. (One list scanned
         * for both at every wake-up was 4 % of a server's CPU at 262,000 msgs/s.) */
        uint64_t now = now_ns();
        pt_db_op *batch = NULL, *last = NULL;
        int taken = 0;
        while (taken < PT_DB_MAX_BATCH) {
            pt_db_op *op;
            if (db->ready_head) op = list_pop(&db->ready_head, &db->ready_tail);
            else if (db->held_head && (db->stopping || due(db->held_head, now)))
                op = list_pop(&db->held_head, &db->held_tail);
            else break;
            list_append(&batch, &last, op);
            taken++;
        }
        if (!batch) {
            /* not due yet: wait for it (at least PT_DB_HOLD_SLACK_US), or for more work */
            pt_db_op *h = db->held_head;
            uint64_t wake = due_at(h);
            uint64_t soonest = now + PT_DB_HOLD_SLACK_US * 1000ull;
            if (wake < soonest) wake = soonest;
            struct timespec ts = {.tv_sec = (time_t)(wake / 1000000000u), .tv_nsec = (long)(wake % 1000000000u)};
            db->writer_wake_ns = wake;
            pthread_cond_timedwait(&db->cv, &db->mu, &ts);
            db->writer_wake_ns = 0;
            continue;
        }
        pthread_mutex_unlock(&db->mu);
        run_batch(db, batch);
        pthread_mutex_lock(&db->mu);
        if (db->done_tail) db->done_tail->next = batch;
        else db->done_head = batch;
        db->done_tail = last;
        uv_async_send(&db->async);
    }
    pthread_mutex_unlock(&db->mu);
    stmt_cache_purge(db->w); /* this thread's statements */
    return NULL;
}

static void run_done(pt_db *db)
{
    pthread_mutex_lock(&db->mu);
    pt_db_op *op = db->done_head;
    db->done_head = db->done_tail = NULL;
    pthread_mutex_unlock(&db->mu);
    while (op) {
        pt_db_op *next = op->next;
        op->next = NULL;
        op->done(op->arg, op->rc);
        op = next;
    }
}

static void on_async(uv_async_t *a) { run_done(a->data); }

void pt_db_submit(pt_db *db, pt_db_op *op) { pt_db_submit_at(db, op, now_ns()); }

void pt_db_submit_at(pt_db *db, pt_db_op *op, uint64_t now)
{
    op->next = NULL;
    op->rc = 0;
    op->submitted_ns = now;
    atomic_init(&op->state, OP_QUEUED);
    pthread_mutex_lock(&db->mu);
    /* wake the writer if this op can be taken now, or if it sleeps until signalled or
     * until after this held op's time and slack. A writer that sleeps until the
     * earliest held op is due is not woken for later ones: sends withdrawn before
     * their time cost it no wake-up (they had cost 0.3 context switches each) */
    bool wake = op->hold_us == 0;
    PT_ASSERT(!op->urgent || (op->commutes && !op->hold_us));
    if (!op->hold_us && !op->commutes && db->held_head) {
        /* it might depend on what a held op writes (e.g. a device's queue order, or a
         * device deleted): every held op goes first, in order */
        for (pt_db_op *p = db->held_head; p; p = p->next) p->queue = Q_READY;
        db->held_head->prev = db->ready_tail;
        if (db->ready_tail) db->ready_tail->next = db->held_head;
        else db->ready_head = db->held_head;
        db->ready_tail = db->held_tail;
        db->held_head = db->held_tail = NULL;
    }
    if (op->hold_us) {
        /* held ops fall due in the order they came (each may be held for a different
         * time): a later one is never written before the one now last (a withdrawn
         * one no longer counts) */
        uint64_t due = due_at(op);
        if (db->held_tail && due < due_at(db->held_tail)) {
            due = due_at(db->held_tail);
            op->hold_us = (uint32_t)((due - op->submitted_ns + 999) / 1000);
        }
        if (due + PT_DB_HOLD_SLACK_US * 1000ull < db->writer_wake_ns) wake = true;
        list_append(&db->held_head, &db->held_tail, op);
        op->queue = Q_HELD;
    } else {
        if (op->urgent) list_prepend(&db->ready_head, &db->ready_tail, op);
        else list_append(&db->ready_head, &db->ready_tail, op);
        op->queue = Q_READY;
    }
    if (wake) pthread_cond_signal(&db->cv);
    pthread_mutex_unlock(&db->mu);
}

sqlite3 *pt_db_reader(pt_db *db) { return db->r; }

void pt_db_get_stats(pt_db *db, pt_db_stats *out)
{
    pthread_mutex_lock(&db->mu);
    *out = db->stats;
    pthread_mutex_unlock(&db->mu);
}

int pt_db_open(pt_db **out, const char *path, uv_loop_t *loop)
{
    *out = NULL;
    /* no global allocation statistics: a mutex less on every SQLite malloc (fails
     * harmlessly when SQLite was already initialised in this process) */
    static bool configured;
    if (!configured) {
        configured = true;
        (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    }
    pt_db *db = calloc(1, sizeof *db);
    if (!db) return PT_ERR_NOMEM;
    db->loop = loop;
    pthread_mutex_init(&db->mu, NULL);
    pthread_condattr_t ca; /* timed waits on CLOCK_MONOTONIC, as now_ns() */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&db->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = open_conn(path, &db->w);
    if (rc == 0) rc = migrate(db->w, path);
    if (rc == 0) rc = open_conn(path, &db->r);
    if (rc == 0 && uv_async_init(loop, &db->async, on_async) != 0) rc = PT_ERR_IO;
    if (rc) {
        sqlite3_close(db->r);
        sqlite3_close(db->w);
        pthread_mutex_destroy(&db->mu);
        pthread_cond_destroy(&db->cv);
        free(db);
        return rc;
    }
    db->async.data = db;
    if (pthread_create(&db->thread, NULL, writer_main, db) != 0) {
        uv_close((uv_handle_t *)&db->async, free_db); /* frees once the loop runs */
        return PT_ERR_NOMEM;
    }
    db->thread_started = true;
    *out = db;
    return 0;
}

static void free_db(uv_handle_t *h)
{
    pt_db *db = h->data;
    stmt_cache_purge(db->r);
    stmt_cache_purge(db->w);
    sqlite3_close(db->r);
    sqlite3_close(db->w);
    pthread_mutex_destroy(&db->mu);
    pthread_cond_destroy(&db->cv);
    free(db);
}

void pt_db_close(pt_db *db)
{
    if (!db) return;
    if (db->thread_started) {
        pthread_mutex_lock(&db->mu);
        db->stopping = true;
        pthread_cond_signal(&db->cv);
        pthread_mutex_unlock(&db->mu);
        pthread_join(db->thread, NULL);
        db->thread_started = false;
        run_done(db); /* what the writer finished before stopping */
        /* those done() callbacks may have submitted more (a confirmed message's
         * deletes): a writer runs once more for them, until nothing is left */
        for (int round = 0; round < 8; round++) {
            pthread_mutex_lock(&db->mu);
            bool more = db->ready_head || db->held_head;
            pthread_mutex_unlock(&db->mu);
            if (!more || pthread_create(&db->thread, NULL, writer_main, db) != 0) break;
            pthread_join(db->thread, NULL);
            run_done(db);
        }
        pthread_mutex_lock(&db->mu);
        if (db->ready_head || db->held_head) pt_log_error("store: operations left unwritten at close");
        pthread_mutex_unlock(&db->mu);
    }
    if (!uv_is_closing((uv_handle_t *)&db->async)) {
        uv_close((uv_handle_t *)&db->async, free_db);
    }
}
