/* The SQLite store: migrations, group commit, per-operation isolation, reopen. */
#include <dirent.h>
#include <errno.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "store/pt_db.h"
#include "testutil.h"

typedef struct ins {
    pt_db_op op;
    int64_t id;   /* server_id to insert */
    int done_rc;  /* set by done() */
    int runs;     /* times apply ran */
    int order;    /* *ndone after its done() */
    int *ndone;
} ins;

static int apply_insert(sqlite3 *db, void *arg)
{
    ins *x = arg;
    sqlite3_stmt *st;
    int rc = pt_db_prepare(db, "INSERT INTO messages(server_id, sender, sender_device, date_ms, "
                               "envelope, refs) VALUES (?, x'00', x'00', 0, x'01', 0)", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, x->id);
    rc = pt_db_step(st);
    sqlite3_finalize(st);
    return rc < 0 ? rc : 0;
}

static void done_insert(void *arg, int rc)
{
    ins *x = arg;
    x->done_rc = rc;
    x->order = ++*x->ndone;
}

static int count_rows(pt_db *db)
{
    sqlite3_stmt *st;
    assert_int_equal(pt_db_prepare(pt_db_reader(db), "SELECT count(*) FROM messages", &st), 0);
    assert_int_equal(pt_db_step(st), 1);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

static void close_db(pt_db *db, uv_loop_t *loop)
{
    pt_db_close(db);
    uv_run(loop, UV_RUN_DEFAULT); /* runs the close callback that frees it */
}

static void test_group_commit_and_reopen(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/pt.db", pt_test_tmpdir("db"));
    uv_loop_t loop;
    uv_loop_init(&loop);
    pt_db *db;
    assert_int_equal(pt_db_open(&db, path, &loop), 0);
    enum { N = 2000 };
    ins *ops = calloc(N + 1, sizeof *ops);
    int ndone = 0;
    for (int i = 0; i < N; i++) {
        ops[i] = (ins){.op = {.apply = apply_insert, .done = done_insert}, .id = i + 1, .ndone = &ndone};
        ops[i].op.arg = &ops[i];
        pt_db_submit(db, &ops[i].op);
    }
    /* a duplicate key fails alone: the others of its batch still commit */
    ops[N] = (ins){.op = {.apply = apply_insert, .done = done_insert}, .id = 5, .ndone = &ndone};
    ops[N].op.arg = &ops[N];
    pt_db_submit(db, &ops[N].op);
    for (int i = 0; i < 10000 && ndone < N + 1; i++) uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(ndone, N + 1);
    for (int i = 0; i < N; i++) assert_int_equal(ops[i].done_rc, 0);
    assert_int_equal(ops[N].done_rc, PT_ERR_STATE);
    pt_db_stats st;
    pt_db_get_stats(db, &st);
    printf("%d operations in %llu commits (largest batch %llu, last commit %llu us)\n", N + 1,
           (unsigned long long)st.commits, (unsigned long long)st.max_batch,
           (unsigned long long)st.last_commit_us);
    assert_int_equal(st.ops, N + 1);
    assert_true(st.commits < N / 10); /* batched, not one fsync per write */
    assert_int_equal(count_rows(db), N);
    close_db(db, &loop);
    /* everything acknowledged is there after reopening */
    assert_int_equal(pt_db_open(&db, path, &loop), 0);
    assert_int_equal(count_rows(db), N);
    close_db(db, &loop);
    free(ops);
    uv_loop_close(&loop);
}

/* The same from the statement cache, counting its runs (rerunnable ops may run twice). */
static int apply_insert_cached(sqlite3 *db, void *arg)
{
    ins *x = arg;
    x->runs++;
    sqlite3_stmt *st;
    int rc = pt_db_stmt(db, "INSERT INTO messages(server_id, sender, sender_device, date_ms, "
                            "envelope, refs) VALUES (?, x'00', x'00', 0, x'01', 0)", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, x->id);
    rc = pt_db_step(st);
    pt_db_release(st);
    return rc < 0 ? rc : 0;
}

/* Rerunnable ops share a savepoint; one failing among them is undone alone. */
static void test_rerunnable_ops_fail_alone(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/pt.db", pt_test_tmpdir("db"));
    uv_loop_t loop;
    uv_loop_init(&loop);
    pt_db *db;
    assert_int_equal(pt_db_open(&db, path, &loop), 0);
    enum { N = 3000 };
    ins *ops = calloc(N, sizeof *ops);
    int ndone = 0;
    for (int i = 0; i < N; i++) {
        /* every 100th a duplicate of the one before it; every 7th not rerunnable */
        int64_t id = i % 100 == 99 ? i : i + 1;
        ops[i] = (ins){.op = {.apply = apply_insert_cached, .done = done_insert, .rerunnable = i % 7 != 0},
                       .id = id, .ndone = &ndone};
        ops[i].op.arg = &ops[i];
        pt_db_submit(db, &ops[i].op);
    }
    for (int i = 0; i < 10000 && ndone < N; i++) uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(ndone, N);
    int failed = 0, reruns = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(ops[i].done_rc, i % 100 == 99 ? PT_ERR_STATE : 0);
        failed += ops[i].done_rc != 0;
        assert_true(ops[i].runs >= 1 && ops[i].runs <= 2);
        reruns += ops[i].runs - 1;
    }
    assert_int_equal(failed, N / 100);
    assert_true(reruns > 0); /* the shared savepoints were rolled back and rerun */
    assert_int_equal(count_rows(db), N - N / 100);
    close_db(db, &loop);
    assert_int_equal(pt_db_open(&db, path, &loop), 0);
    assert_int_equal(count_rows(db), N - N / 100);
    close_db(db, &loop);
    free(ops);
    uv_loop_close(&loop);
}

/* Cached statements: the same one each time, reset and unbound; nested use gets
 * a fresh one; both go back with pt_db_release. */
static void test_statement_cache(void **state)
{
    (void)state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    static const char sql[] = "SELECT ?1";
    sqlite3_stmt *a, *b, *c;
    assert_int_equal(pt_db_stmt(db, sql, &a), 0);
    sqlite3_bind_int(a, 1, 7);
    assert_int_equal(pt_db_step(a), 1); /* left on a row: release must reset it */
    assert_int_equal(pt_db_stmt(db, sql, &b), 0); /* nested: another statement */
    assert_ptr_not_equal(a, b);
    pt_db_release(b);
    pt_db_release(a);
    assert_int_equal(pt_db_stmt(db, sql, &c), 0);
    assert_ptr_equal(c, a); /* the cached one again */
    assert_int_equal(pt_db_step(c), 1);
    assert_int_equal(sqlite3_column_type(c, 0), SQLITE_NULL); /* bindings were cleared */
    pt_db_release(c);
    pt_db_release(NULL);
    assert_int_equal(pt_db_stmt(db, "SELECT nonsense FROM nowhere", &a), PT_ERR_IO);
    assert_null(a);
    pt_db_forget(db); /* a bare connection: its cached statements go first */
    assert_int_equal(sqlite3_close(db), SQLITE_OK); /* none left behind */
}

/* An op held (hold_us) waits that long unless withdrawn; commuting ops behind it
 * do not wait for it, any other op releases it and goes after it; a withdrawn op is
 * never applied, and one withdrawn from the queue never comes back to done(). */
static void test_held_ops(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/pt.db", pt_test_tmpdir("db-hold"));
    uv_loop_t loop;
    uv_loop_init(&loop);
    pt_db *db;
    assert_int_equal(pt_db_open(&db, path, &loop), 0);
    int ndone = 0;
    ins ops[10];
    for (int i = 0; i < 10; i++) {
        ops[i] = (ins){.op = {.apply = apply_insert, .done = done_insert}, .id = i + 1, .done_rc = 99,
                       .ndone = &ndone};
        ops[i].op.arg = &ops[i];
    }
    /* a second: the checks of what did not wait keep a wide margin on a busy machine */
    ops[0].op.hold_us = ops[2].op.hold_us = ops[3].op.hold_us = 1000000;
    ops[1].op.commutes = true;
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < 3; i++) pt_db_submit(db, &ops[i].op);
    for (int i = 0; i < 1000 && ndone < 1; i++) uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(ndone, 1);
    assert_int_equal(ops[1].done_rc, 0); /* the one not held went first */
    assert_int_equal(ops[0].done_rc, 99);
    assert_true(uv_hrtime() - t0 < 900000000u);
    assert_int_equal(pt_db_withdraw(db, &ops[2].op), PT_DB_REMOVED);
    assert_int_equal(pt_db_withdraw(db, &ops[1].op), 0); /* applied already */
    for (int i = 0; i < 1000 && ndone < 2; i++) uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(ndone, 2);
    assert_int_equal(ops[0].done_rc, 0);
    assert_true(uv_hrtime() - t0 >= 990000000u); /* the held one waited its time */
    assert_int_equal(pt_db_withdraw(db, &ops[0].op), 0);
    for (int i = 0; i < 20; i++) uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(ops[2].done_rc, 99); /* out of the queue: its done() never runs */
    assert_int_equal(ndone, 2);
    assert_int_equal(count_rows(db), 2); /* 1 and 2; the withdrawn 3 was never written */
    sqlite3_stmt *st;
    assert_int_equal(pt_db_prepare(pt_db_reader(db), "SELECT count(*) FROM messages WHERE server_id = 3", &st), 0);
    assert_int_equal(pt_db_step(st), 1);
    assert_int_equal(sqlite3_column_int(st, 0), 0);
    sqlite3_finalize(st);

    /* an op that does not commute releases the held one before it */
    t0 = uv_hrtime();
    pt_db_submit(db, &ops[3].op);
    pt_db_submit(db, &ops[4].op);
    for (int i = 0; i < 1000 && ndone < 4; i++) uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(ndone, 4);
    assert_true(uv_hrtime() - t0 < 900000000u);
    assert_true(ops[3].order < ops[4].order);
    assert_int_equal(count_rows(db), 4);

    /* held ops fall due in order: one held shorter after one held longer waits for it */
    ops[5].op.hold_us = 1000000;
    ops[6].op.hold_us = 10000;
    t0 = uv_hrtime();
    pt_db_submit(db, &ops[5].op);
    pt_db_submit(db, &ops[6].op);
    for (int i = 0; i < 1000 && ndone < 6; i++) uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(ndone, 6);
    assert_true(ops[5].order < ops[6].order);
    assert_true(uv_hrtime() - t0 >= 990000000u);

    /* ... but not for one withdrawn: with the last held op gone, the next is due after
     * the one now last (20 ms), not after the one withdrawn (a second) */
    ops[7].op.hold_us = 20000;
    ops[8].op.hold_us = 1000000;
    ops[9].op.hold_us = 10000;
    t0 = uv_hrtime();
    pt_db_submit(db, &ops[7].op);
    pt_db_submit(db, &ops[8].op);
    assert_int_equal(pt_db_withdraw(db, &ops[8].op), PT_DB_REMOVED);
    pt_db_submit(db, &ops[9].op);
    for (int i = 0; i < 1000 && ndone < 8; i++) uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(ndone, 8);
    assert_true(uv_hrtime() - t0 < 900000000u);
    assert_true(ops[7].order < ops[9].order);
    assert_int_equal(ops[8].done_rc, 99);
    close_db(db, &loop);
    uv_loop_close(&loop);
}

/* The writer yields to the loops: its thread ("pt-db-writer") runs PT_DB_WRITER_NICE
 * nicer than the thread that opened the store. Every op it has not applied yet can
 * be withdrawn, held or not: one still queued is taken out (no done()), one the
 * writer took is skipped (done() with rc 0). */
typedef struct gate {
    ins in;
    sem_t started, go;
} gate;

static int apply_gate(sqlite3 *db, void *arg)
{
    gate *g = arg;
    sem_post(&g->started);
    while (sem_wait(&g->go) != 0) {}
    return apply_insert(db, &g->in);
}

static void done_gate(void *arg, int rc) { done_insert(&((gate *)arg)->in, rc); }

/* Reads the writer thread's file NAME under /proc/self/task into buf; false while
 * there is no thread named pt-db-writer (yet). */
static bool writer_file(const char *name, char *buf, size_t size)
{
    bool found = false;
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    for (struct dirent *e; !found && (e = readdir(d)) != NULL;) {
        char path[300], comm[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        bool writer = fgets(comm, sizeof comm, f) && strcmp(comm, "pt-db-writer\n") == 0;
        fclose(f);
        if (!writer) continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/%s", e->d_name, name);
        assert_non_null(f = fopen(path, "r"));
        size_t n = fread(buf, 1, size - 1, f);
        fclose(f);
        buf[n] = '\0';
        found = true;
    }
    closedir(d);
    return found;
}

static int writer_nice(void)
{
    char buf[512];
    if (!writer_file("stat", buf, sizeof buf)) return 100;
    const char *p = strrchr(buf, ')'); /* after the name: state, then fields 4..; nice is the 19th */
    assert_non_null(p);
    long v;
    assert_int_equal(sscanf(p + 2, /* fields 3 to 18 skipped, 19 read */
                            "%*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %ld", &v),
                     1);
    return (int)v;
}

/* The writer thread's state letter ('S' while it waits), 0 while there is none. */
static char writer_state(void)
{
    char buf[512];
    if (!writer_file("stat", buf, sizeof buf)) return 0;
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : 0;
}

/* How often the writer thread has slept (each wait for work or for a held op). */
static long writer_sleeps(void)
{
    char buf[4096];
    assert_true(writer_file("status", buf, sizeof buf));
    const char *p = strstr(buf, "\nvoluntary_ctxt_switches:");
    assert_non_null(p);
    return strtol(p + strlen("\nvoluntary_ctxt_switches:"), NULL, 10);
}

static void test_writer_yields(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/pt.db", pt_test_tmpdir("db-yield"));
    uv_loop_t loop;
    uv_loop_init(&loop);
    errno = 0;
    int base = getpriority(PRIO_PROCESS, 0);
    assert_true(base != -1 || errno == 0);
    pt_db *db;
    assert_int_equal(pt_db_open(&db, path, &loop), 0);
    int expect = base + PT_DB_WRITER_NICE > 19 ? 19 : base + PT_DB_WRITER_NICE;
    int got = writer_nice(); /* the thread names itself, then lowers its priority */
    for (int i = 0; i < 200 && got != expect; i++, got = writer_nice()) usleep(10000);
    assert_int_equal(got, expect);
    assert_true(expect > base || base == 19);

    /* one submitted while the writer applies another: taken out of the queue */
    int ndone = 0;
    gate g = {.in = {.id = 1, .done_rc = 99, .ndone = &ndone}};
    g.in.op = (pt_db_op){.apply = apply_gate, .done = done_gate, .arg = &g};
    assert_int_equal(sem_init(&g.started, 0, 0), 0);
    assert_int_equal(sem_init(&g.go, 0, 0), 0);
    ins b = {.op = {.apply = apply_insert, .done = done_insert}, .id = 2, .done_rc = 99, .ndone = &ndone};
    b.op.arg = &b;
    pt_db_submit(db, &g.in.op);
    while (sem_wait(&g.started) != 0) {} /* the writer is in the first op's apply */
    pt_db_submit(db, &b.op);                /* not held: the writer takes it next */
    assert_int_equal(pt_db_withdraw(db, &b.op), PT_DB_REMOVED); /* but it has not yet */
    sem_post(&g.go);
    for (int i = 0; i < 1000 && ndone < 1; i++) uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < 20; i++) uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(ndone, 1);
    assert_int_equal(g.in.done_rc, 0);
    assert_int_equal(b.done_rc, 99); /* its done() never runs: the op is ours again */

    /* one the writer took with another (a held op released by it) and has not
     * applied yet: skipped, its done() runs */
    g.in.id = 3;
    g.in.done_rc = 99;
    g.in.op.hold_us = 60000000; /* a minute: only b's submission releases it */
    b.id = 4;
    pt_db_submit(db, &g.in.op);
    pt_db_submit(db, &b.op); /* does not commute: g goes first, in the same batch */
    while (sem_wait(&g.started) != 0) {}
    assert_int_equal(pt_db_withdraw(db, &b.op), PT_DB_SKIPPED);
    sem_post(&g.go);
    for (int i = 0; i < 1000 && ndone < 3; i++) uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(ndone, 3);
    assert_int_equal(g.in.done_rc, 0);
    assert_int_equal(b.done_rc, 0);

    /* held ops released into the ready queue by one that does not commute, then
     * withdrawn from its middle and its head while the writer is busy */
    ins h[3];
    for (int i = 0; i < 3; i++) {
        h[i] = (ins){.op = {.apply = apply_insert, .done = done_insert, .hold_us = 60000000}, .id = 5 + i,
                     .done_rc = 99, .ndone = &ndone};
        h[i].op.arg = &h[i];
    }
    h[2].op.hold_us = 0; /* the one that releases them */
    g.in.id = 8;
    g.in.done_rc = 99;
    g.in.op.hold_us = 0;
    pt_db_submit(db, &g.in.op);
    while (sem_wait(&g.started) != 0) {}
    for (int i = 0; i < 3; i++) pt_db_submit(db, &h[i].op); /* ready: 5, 6, 7 */
    assert_int_equal(pt_db_withdraw(db, &h[1].op), PT_DB_REMOVED); /* the middle */
    assert_int_equal(pt_db_withdraw(db, &h[0].op), PT_DB_REMOVED); /* the head */
    sem_post(&g.go);
    for (int i = 0; i < 1000 && ndone < 5; i++) uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < 20; i++) uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(ndone, 5); /* g and 7 */
    assert_int_equal(g.in.done_rc, 0);
    assert_int_equal(h[2].done_rc, 0);
    assert_int_equal(h[0].done_rc, 99);
    assert_int_equal(h[1].done_rc, 99);
    assert_int_equal(count_rows(db), 4); /* 1, 3, 7 and 8; the withdrawn 2, 4, 5 and 6 never */
    sqlite3_stmt *st;
    assert_int_equal(pt_db_prepare(pt_db_reader(db), "SELECT count(*) FROM messages WHERE server_id IN (2, 4, 5, 6)", &st), 0);
    assert_int_equal(pt_db_step(st), 1);
    assert_int_equal(sqlite3_column_int(st, 0), 0);
    sqlite3_finalize(st);

    /* an urgent op goes before what waits (the server-id reservation) */
    ins x = {.op = {.apply = apply_insert, .done = done_insert}, .id = 9, .done_rc = 99, .ndone = &ndone};
    ins u = {.op = {.apply = apply_insert, .done = done_insert, .commutes = true, .urgent = true}, .id = 10,
             .done_rc = 99, .ndone = &ndone};
    x.op.arg = &x;
    u.op.arg = &u;
    g.in.id = 11;
    pt_db_submit(db, &g.in.op);
    while (sem_wait(&g.started) != 0) {}
    pt_db_submit(db, &x.op);
    pt_db_submit(db, &u.op);
    sem_post(&g.go);
    for (int i = 0; i < 1000 && ndone < 8; i++) uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(ndone, 8);
    assert_int_equal(x.done_rc, 0);
    assert_int_equal(u.done_rc, 0);
    assert_true(u.order < x.order);
    sem_destroy(&g.started);
    sem_destroy(&g.go);
    close_db(db, &loop);
    uv_loop_close(&loop);
}

/* Sends their confirmations withdraw before their time do not wake the writer: it
 * sleeps until the earliest held op it saw is due. One held for less than that
 * does wake it. */
static void test_withdrawn_do_not_wake(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/pt.db", pt_test_tmpdir("db-wake"));
    uv_loop_t loop;
    uv_loop_init(&loop);
    pt_db *db;
    assert_int_equal(pt_db_open(&db, path, &loop), 0);
    int ndone = 0;
    ins a = {.op = {.apply = apply_insert, .done = done_insert, .hold_us = 2000000}, .id = 1,
             .done_rc = 99, .ndone = &ndone};
    a.op.arg = &a;
    for (int i = 0; i < 500 && writer_state() != 'S'; i++) usleep(10000); /* waits for work */
    assert_int_equal(writer_state(), 'S');
    long before = writer_sleeps();
    pt_db_submit(db, &a.op);
    /* woken, it saw a and sleeps again, until a is due in 2 s (a busy machine may
     * take a while to run it: wait for that, not a fixed time) */
    for (int i = 0; i < 500 && (writer_sleeps() == before || writer_state() != 'S'); i++) usleep(10000);
    assert_true(writer_sleeps() > before);
    before = writer_sleeps();
    assert_int_equal(pt_db_withdraw(db, &a.op), PT_DB_REMOVED);
    for (int i = 0; i < 100; i++) { /* later than a, each withdrawn while both queues are empty */
        a.id = 2 + i;
        pt_db_submit(db, &a.op);
        assert_int_equal(pt_db_withdraw(db, &a.op), PT_DB_REMOVED);
        usleep(1000); /* time for a writer that was woken to sleep again */
    }
    usleep(100000);
    long woken = writer_sleeps() - before;
    assert_true(woken <= 3); /* 100 when each one woke it */

    /* one due before the writer means to wake: it is woken for it */
    ins b = {.op = {.apply = apply_insert, .done = done_insert, .hold_us = 10000}, .id = 200,
             .done_rc = 99, .ndone = &ndone};
    b.op.arg = &b;
    uint64_t t0 = uv_hrtime();
    pt_db_submit(db, &b.op);
    for (int i = 0; i < 300 && ndone < 1; i++) { /* bounded: no wake-up would be a hang */
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(10000);
    }
    assert_int_equal(ndone, 1);
    assert_int_equal(b.done_rc, 0);
    assert_true(uv_hrtime() - t0 < 1000000000u); /* not at the 2 s a was held for */
    assert_int_equal(count_rows(db), 1);
    close_db(db, &loop);
    uv_loop_close(&loop);
}

static void test_refuses_newer_or_broken_files(void **state)
{
    (void)state;
    const char *dir = pt_test_tmpdir("db");
    char path[300];
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* a database from the future */
    snprintf(path, sizeof path, "%s/future.db", dir);
    sqlite3 *raw;
    assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
    assert_int_equal(pt_db_exec(raw, "PRAGMA user_version=99"), 0);
    sqlite3_close(raw);
    pt_db *db = NULL;
    assert_int_equal(pt_db_open(&db, path, &loop), PT_ERR_VERSION);
    assert_null(db);
    /* not a database at all */
    snprintf(path, sizeof path, "%s/garbage.db", dir);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 100; i++) fputs("this is not an SQLite file\n", f);
    fclose(f);
    assert_int_equal(pt_db_open(&db, path, &loop), PT_ERR_IO);
    /* a directory that does not exist */
    assert_int_equal(pt_db_open(&db, "/nonexistent/dir/pt.db", &loop), PT_ERR_IO);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
}

static void test_schema(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/pt.db", pt_test_tmpdir("db"));
    uv_loop_t loop;
    uv_loop_init(&loop);
    pt_db *db;
    assert_int_equal(pt_db_open(&db, path, &loop), 0);
    sqlite3_stmt *st;
    assert_int_equal(pt_db_prepare(pt_db_reader(db), "PRAGMA user_version", &st), 0);
    assert_int_equal(pt_db_step(st), 1);
    assert_int_equal(sqlite3_column_int(st, 0), PT_DB_SCHEMA_VERSION);
    sqlite3_finalize(st);
    assert_int_equal(pt_db_prepare(pt_db_reader(db), "PRAGMA journal_mode", &st), 0);
    assert_int_equal(pt_db_step(st), 1);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    /* every commit is fsynced before it is acknowledged: synchronous=FULL (2), set by
     * the one function that opens both connections, the writer's and this one */
    assert_int_equal(pt_db_prepare(pt_db_reader(db), "PRAGMA synchronous", &st), 0);
    assert_int_equal(pt_db_step(st), 1);
    assert_int_equal(sqlite3_column_int(st, 0), 2);
    sqlite3_finalize(st);
    const char *tables[] = {"users", "devices", "prekeys", "contacts", "groups", "group_members",
                            "messages", "queue"};
    for (size_t i = 0; i < PT_ARRAY_LEN(tables); i++) {
        assert_int_equal(pt_db_prepare(pt_db_reader(db),
                                       "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", &st), 0);
        sqlite3_bind_text(st, 1, tables[i], -1, SQLITE_STATIC);
        assert_int_equal(pt_db_step(st), 1);
        sqlite3_finalize(st);
    }
    close_db(db, &loop);
    uv_loop_close(&loop);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    pt_log_set_level(PT_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema),
        cmocka_unit_test(test_group_commit_and_reopen),
        cmocka_unit_test(test_rerunnable_ops_fail_alone),
        cmocka_unit_test(test_statement_cache),
        cmocka_unit_test(test_held_ops),
        cmocka_unit_test(test_writer_yields),
        cmocka_unit_test(test_withdrawn_do_not_wake),
        cmocka_unit_test(test_refuses_newer_or_broken_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
