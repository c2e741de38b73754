/*
 * The whole system the way a new user meets it: a real packtrackd and the real
 * `packtrack` command in three homes (alice, bob, carol), plus a second device of
 * alice. Every command the README shows runs here.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <dirent.h>
#include <sys/stat.h>

#include "testutil.h"

#define OUT_MAX 65536

static pt_test_server srv;
static char server_arg[64];
static char homes[5][300]; /* alice, bob, carol, alice's and bob's second devices */
enum { A, B, C, A2, B2 };

static const char *cli_path(void)
{
    const char *p = getenv("PT_PACKTRACK");
    if (!p) fail_msg("PT_PACKTRACK is not set (run through ctest)");
    return p;
}

static char err_out[OUT_MAX]; /* the last command's stderr (runv) */

/* Runs packtrack --home H --server S --timeout 10 ARGS...; stdout into out, stderr
 * into err_out (through a file: a pipe it filled would block the child while
 * stdout is read). Returns the exit status. */
static int runv(int who, char *out, const char *const *args)
{
    char errf[340];
    snprintf(errf, sizeof errf, "%s.stderr", homes[who]);
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    const char *argv[32] = {cli_path(), "--home", homes[who], "--server", server_arg, "--timeout", "10"};
    int n = 7;
    for (int i = 0; args[i]; i++) argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int efd = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (efd >= 0) dup2(efd, 2);
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fd[1]);
    size_t len = 0;
    ssize_t r;
    while (len < OUT_MAX - 1 && (r = read(fd[0], out + len, OUT_MAX - 1 - len)) > 0) len += (size_t)r;
    out[len] = 0;
    close(fd[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    size_t elen = 0;
    char *e = pt_test_read_file(errf, &elen);
    snprintf(err_out, sizeof err_out, "%s", e ? e : "");
    free(e);
    if (e) fputs(err_out, stderr); /* as before: a failing test shows it */
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#define RUN(rc, who, out, ...)                                                                     \
    do {                                                                                           \
        const char *const a_[] = {__VA_ARGS__, NULL};                                              \
        (rc) = runv((who), (out), a_);                                                             \
    } while (0)

/* Must succeed. */
#define OK(who, out, ...)                                                                          \
    do {                                                                                           \
        const char *const a_[] = {__VA_ARGS__, NULL};                                              \
        int rc_ = runv((who), (out), a_);                                                          \
        if (rc_ != 0) fail_msg("packtrack %s %s (%s) exited %d: %s", a_[0], a_[1] ? a_[1] : "",     \
                               homes[who], rc_, (out));                                            \
    } while (0)

/* Starts a command in the background (output discarded); returns its pid. */
static pid_t spawn(int who, const char *const *args)
{
    const char *argv[32] = {cli_path(), "--home", homes[who], "--server", server_arg, "--timeout", "10"};
    int n = 7;
    for (int i = 0; args[i]; i++) argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int reap(pid_t pid)
{
    int st;
    for (int i = 0; i < 300; i++) { /* 30 s at most */
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(100 * 1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    fail_msg("a background packtrack did not finish");
    return -1;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

/* The line of `out` that starts with name (friend list / list), or NULL. */
static const char *line_of(const char *out, const char *name)
{
    size_t l = strlen(name);
    for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, name, l) == 0 && p[l] == '\t') return p;
    return NULL;
}

static bool line_has(const char *out, const char *name, const char *what)
{
    const char *l = line_of(out, name);
    if (!l) return false;
    const char *e = strchr(l, '\n');
    char buf[512];
    size_t n = e ? (size_t)(e - l) : strlen(l);
    if (n >= sizeof buf) n = sizeof buf - 1;
    memcpy(buf, l, n);
    buf[n] = 0;
    return strstr(buf, what) != NULL;
}

static char *out;

static int setup(void **state)
{
    (void)state;
    setenv("PACKTRACK_PASSWORD", "correct horse battery staple", 1);
    out = malloc(OUT_MAX);
    pt_test_server_start(&srv, NULL, 0, NULL);
    snprintf(server_arg, sizeof server_arg, "127.0.0.1:%u", srv.port);
    static char tmp[300];
    snprintf(tmp, sizeof tmp, "%s", pt_test_tmpdir("clitmp"));
    setenv("TMPDIR", tmp, 1); /* the clients' temporary files land here, to be checked */
    const char *names[] = {"alice", "bob", "carol", "alice2", "bob2"};
    for (int i = 0; i < 5; i++) snprintf(homes[i], sizeof homes[i], "%s/home", pt_test_tmpdir(names[i]));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pt_test_server_stop(&srv);
    free(out);
    return 0;
}

/* init, whoami, wrong password, a taken name, bad UTF-8. */
static void test_init_and_errors(void **state)
{
    (void)state;
    OK(A, out, "init", "--user", "alice");
    assert_non_null(strstr(out, "name:        alice"));
    OK(B, out, "init", "--user", "bob");
    OK(C, out, "init", "--user", "carol");
    int rc;
    RUN(rc, A, out, "init", "--user", "alice");
    assert_int_equal(rc, 3); /* a profile is there already */
    RUN(rc, A2, out, "init", "--user", "Alice");
    assert_int_equal(rc, 1); /* the name is taken (case-insensitively) */
    assert_non_null(strstr(err_out, "that username is taken; choose another (USERNAME_TAKEN)"));
    RUN(rc, A2, out, "init", "--user", "a1ice"); /* its skeleton is alice's */
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err_out, "looks like one that is taken; choose another (USERNAME_CONFUSABLE)"));
    RUN(rc, A2, out, "init", "--user", "ali ce");
    assert_int_equal(rc, 1); /* the server's reason, in words */
    assert_non_null(strstr(err_out, "usernames may not contain spaces, tabs, line breaks or other "
                                    "whitespace (USERNAME_INVALID)"));
    OK(A, out, "whoami");
    assert_non_null(strstr(out, "alice"));
    const char *id = strstr(out, "user id:     ");
    assert_non_null(id);
    for (int i = 0; i < 32; i++) assert_non_null(strchr("0123456789abcdef", id[13 + i]));
    assert_true(id[13 + 32] == '\n');
    setenv("PACKTRACK_PASSWORD", "wrong", 1);
    RUN(rc, A, out, "whoami");
    assert_int_equal(rc, 3);
    setenv("PACKTRACK_PASSWORD", "correct horse battery staple", 1);
    RUN(rc, A, out, "frobnicate");
    assert_int_equal(rc, 2);
    RUN(rc, A, out, "status", "sleepy");
    assert_int_equal(rc, 2);
    RUN(rc, A, out, "send", "bob", "\xff\xfe");
    assert_int_equal(rc, 1); /* not UTF-8 (and bob is no friend yet): refused */
}

static void test_friends(void **state)
{
    (void)state;
    int rc;
    RUN(rc, A, out, "send", "bob", "too early");
    assert_int_equal(rc, 1); /* not friends */
    /* an error that quotes a name (here one typed, as a server's or a LAN peer's words
     * can be) reaches the terminal as text */
    RUN(rc, A, out, "send", "b\x1b]0;owned\x07ob", "hi");
    assert_int_equal(rc, 5); /* no such friend */
    assert_null(strchr(err_out, 0x1b));
    assert_null(strchr(err_out, 0x07));
    assert_non_null(strstr(err_out, "b\xef\xbf\xbd]0;owned\xef\xbf\xbdob"));
    char long_note[300];
    memset(long_note, 'x', 257);
    long_note[257] = 0;
    RUN(rc, A, out, "friend", "add", "bob", "--note", long_note);
    assert_int_equal(rc, 1); /* refused by the library, not a 413 from the server */
    assert_non_null(strstr(err_out, "the note is longer than 256 bytes"));
    OK(A, out, "friend", "add", "bob", "--note", "it's alice from the meetup");
    OK(B, out, "recv");
    OK(B, out, "friend", "list");
    assert_true(line_has(out, "alice", "request received"));
    OK(B, out, "friend", "accept", "alice");
    OK(A, out, "recv");
    OK(A, out, "friend", "list");
    assert_true(line_has(out, "bob", "friend"));
    /* carol asks alice, who denies; then again, and alice accepts */
    OK(C, out, "friend", "add", "alice");
    OK(A, out, "recv");
    OK(A, out, "friend", "deny", "carol");
    OK(C, out, "recv");
    OK(C, out, "friend", "list");
    assert_null(line_of(out, "alice"));
    OK(C, out, "friend", "add", "alice", "--note", "please?");
    OK(A, out, "recv");
    OK(A, out, "friend", "accept", "carol");
    OK(B, out, "friend", "add", "carol");
    OK(C, out, "recv");
    OK(C, out, "friend", "accept", "bob");
    OK(C, out, "friend", "list");
    assert_true(line_has(out, "alice", "friend"));
    assert_true(line_has(out, "bob", "friend"));
    RUN(rc, A, out, "friend", "add", "nobody-here");
    assert_int_equal(rc, 5);
}

static void test_messages(void **state)
{
    (void)state;
    OK(A, out, "send", "bob", "hello bob 👋 — ünïcödé");
    char id[40];
    snprintf(id, sizeof id, "%.32s", out);
    OK(B, out, "recv", "--json");
    assert_int_equal(count(out, "\n"), 1);
    assert_non_null(strstr(out, id));
    assert_non_null(strstr(out, "\"from\":\"alice\""));
    assert_non_null(strstr(out, "\"to\":\"bob\""));
    assert_non_null(strstr(out, "\"group\":\"\""));
    assert_non_null(strstr(out, "\"text\":\"hello bob 👋 — ünïcödé\""));
    OK(B, out, "recv", "--json");
    assert_string_equal(out, ""); /* nothing twice */
    OK(B, out, "send", "alice", "hi alice, \"quoted\"\tand tabbed");
    OK(A, out, "recv", "--json");
    assert_non_null(strstr(out, "\"text\":\"hi alice, \\\"quoted\\\"\\tand tabbed\""));
    /* nothing alice sends reaches bob's terminal as a command: ESC (a colour, a title,
     * OSC 52 clipboard), BEL, DEL and C1's CSI become U+FFFD, and a second line is
     * indented so that it cannot pass for a message of its own */
    OK(A, out, "send", "bob",
       "\x1b[31mred\x1b]52;c;ZXZpbA==\x07 \x7f \xc2\x9b" "2J\n[2026-01-01 00:00:00] carol: forged");
    OK(B, out, "recv");
    fprintf(stderr, "test_cli: shown: %s", out);
    assert_null(strchr(out, 0x1b));
    assert_null(strchr(out, 0x07));
    assert_null(strchr(out, 0x7f));
    assert_null(strstr(out, "\xc2\x9b"));
    assert_non_null(strstr(out, "alice: \xef\xbf\xbd[31mred\xef\xbf\xbd]52;c;ZXZpbA==\xef\xbf\xbd"));
    assert_non_null(strstr(out, "\n    [2026-01-01 00:00:00] carol: forged\n"));
    assert_int_equal(count(out, "\n["), 0);
    OK(B, out, "history", "alice", "--json");
    assert_non_null(strstr(out, "\\u001b[31mred\\u001b]52;c;ZXZpbA==\\u0007 \\u007f \\u009b2J\\n[2026"));
    /* carol is not running: the message waits for her */
    OK(A, out, "send", "carol", "are you there?");
    OK(A, out, "send", "carol", "second one");
    OK(C, out, "recv");
    assert_non_null(strstr(out, "alice: are you there?"));
    const char *first = strstr(out, "are you there?"), *second = strstr(out, "second one");
    assert_true(first && second && first < second); /* in order */
}

static void test_presence(void **state)
{
    (void)state;
    const char *wait[] = {"recv", "--wait", "6", NULL};
    pid_t bg = spawn(B, wait); /* bob stays connected for a while */
    bool seen = false;
    for (int i = 0; i < 40 && !seen; i++) {
        OK(A, out, "list");
        seen = line_of(out, "bob") != NULL;
        if (!seen) sleep_ms(100);
    }
    assert_true(seen);
    assert_true(line_has(out, "bob", "online"));
    OK(A, out, "friend", "list");
    assert_true(line_has(out, "bob", "online"));
    OK(B, out, "status", "away");
    OK(A, out, "friend", "list");
    assert_true(line_has(out, "bob", "away"));
    OK(B, out, "status", "invisible");
    OK(A, out, "list");
    assert_null(line_of(out, "bob"));
    OK(A, out, "friend", "list");
    assert_true(line_has(out, "bob", "offline"));
    OK(B, out, "status", "online");
    OK(A, out, "send", "bob", "wake up"); /* ends bob's recv --wait */
    assert_int_equal(reap(bg), 0);
    OK(B, out, "recv"); /* the background recv printed it to /dev/null and marked it seen */
}

static void test_safety(void **state)
{
    (void)state;
    char a[200], b[200];
    OK(A, out, "safety", "bob");
    snprintf(a, sizeof a, "%s", out);
    OK(B, out, "safety", "alice");
    snprintf(b, sizeof b, "%s", out);
    assert_string_equal(a, b);
    assert_int_equal(strlen(a), 12 * 5 + 11 + 1);
    OK(A, out, "safety", "carol");
    assert_string_not_equal(out, a);
    OK(A, out, "safety", "bob", "--verified");
    OK(A, out, "friend", "list");
    assert_true(line_has(out, "bob", "verified"));
}

static void test_group(void **state)
{
    (void)state;
    OK(A, out, "group", "create", "trio", "bob", "carol");
    OK(B, out, "recv");
    OK(C, out, "recv");
    OK(A, out, "group", "members", "trio");
    assert_int_equal(count(out, "\n"), 3);
    assert_non_null(strstr(out, "bob\n"));
    assert_non_null(strstr(out, "carol\n"));
    OK(A, out, "group", "send", "trio", "hello both");
    OK(B, out, "recv", "--json");
    assert_non_null(strstr(out, "\"group\":\"trio\""));
    assert_non_null(strstr(out, "\"text\":\"hello both\""));
    OK(C, out, "recv", "--json");
    assert_non_null(strstr(out, "\"text\":\"hello both\""));
    OK(B, out, "group", "send", "trio", "bob here");
    OK(A, out, "recv");
    assert_non_null(strstr(out, "#trio <bob> bob here"));
    OK(C, out, "recv");
    assert_non_null(strstr(out, "#trio <bob> bob here"));
    int rc;
    RUN(rc, A, out, "group", "send", "nosuch", "x");
    assert_int_equal(rc, 5);
}

static void test_second_device(void **state)
{
    (void)state;
    OK(A, out, "device", "link");
    char code[100];
    snprintf(code, sizeof code, "%s", out);
    code[strcspn(code, "\n")] = 0;
    OK(A2, out, "init", "--link", code);
    assert_non_null(strstr(out, "name:        alice"));
    int rc;
    RUN(rc, C, out, "init", "--link", code); /* used: and carol has a profile anyway */
    assert_int_not_equal(rc, 0);
    OK(A, out, "device", "list");
    assert_int_equal(count(out, "\n"), 2);
    assert_int_equal(count(out, "(this device)"), 1);
    /* alice has a new device: bob's client stops until he accepts it */
    RUN(rc, B, out, "send", "alice", "to all of you");
    assert_int_equal(rc, 1);
    OK(B, out, "friend", "list");
    assert_true(line_has(out, "alice", "KEY CHANGED"));
    OK(B, out, "trust", "alice");
    OK(B, out, "friend", "list");
    assert_true(line_has(out, "alice", "\tunverified"));
    OK(B, out, "send", "alice", "to all of you");
    OK(A, out, "recv");
    if (!strstr(out, "bob: to all of you")) fail_msg("alice's first device got: %s", out);
    OK(A2, out, "recv");
    assert_non_null(strstr(out, "bob: to all of you"));
    OK(A2, out, "send", "bob", "from my second device");
    OK(B, out, "recv");
    assert_non_null(strstr(out, "alice: from my second device"));
    OK(A, out, "recv");
    assert_non_null(strstr(out, "-> bob: from my second device")); /* the first device sees it too */
    /* alice verified bob's keys (test_safety); a new device of bob is flagged */
    OK(A, out, "friend", "list");
    assert_true(line_has(out, "bob", "\tverified"));
    OK(B, out, "device", "link");
    snprintf(code, sizeof code, "%s", out);
    code[strcspn(code, "\n")] = 0;
    OK(B2, out, "init", "--link", code);
    OK(A, out, "friend", "list");
    assert_true(line_has(out, "bob", "KEY CHANGED"));
    OK(A, out, "safety", "bob", "--verified");
    OK(A, out, "friend", "list");
    assert_true(line_has(out, "bob", "\tverified"));
    OK(A, out, "send", "bob", "both of bob's devices");
    OK(B2, out, "recv");
    assert_non_null(strstr(out, "alice: both of bob's devices"));
    OK(B, out, "recv");
    assert_non_null(strstr(out, "alice: both of bob's devices"));
    /* bob loses his second device: revoked from the first, it is locked out */
    OK(B2, out, "device", "list");
    char id[40] = "";
    for (const char *p = out; *p; p = strchr(p, '\n') + 1) {
        if (!strstr(p, "(this device)") || (strchr(p, '\n') && strstr(p, "(this device)") > strchr(p, '\n'))) {
            if (!strchr(p, '\n')) break;
            continue;
        }
        snprintf(id, sizeof id, "%.8s", p);
        break;
    }
    assert_int_equal(strlen(id), 8);
    RUN(rc, B, out, "device", "revoke", "zz");
    assert_int_equal(rc, 1); /* too short to name a device */
    OK(B, out, "device", "revoke", id);
    OK(B, out, "device", "list");
    assert_int_equal(count(out, "\n"), 1);
    RUN(rc, B2, out, "send", "alice", "from a revoked device");
    assert_int_not_equal(rc, 0);
    OK(A, out, "recv");
    assert_null(strstr(out, "from a revoked device"));
}

static void test_server_restart(void **state)
{
    (void)state;
    OK(A, out, "send", "bob", "sent before the restart");
    uint16_t port = srv.port;
    char dir[256];
    snprintf(dir, sizeof dir, "%s", srv.dir);
    assert_int_equal(pt_test_server_stop(&srv), 0);
    int rc;
    RUN(rc, A, out, "send", "bob", "sent while it was down");
    assert_int_equal(rc, 4); /* kept for later */
    pt_test_server_start(&srv, dir, port, NULL);
    OK(A, out, "recv"); /* connecting sends what was kept */
    OK(B, out, "recv");
    assert_int_equal(count(out, "sent before the restart"), 1);
    assert_int_equal(count(out, "sent while it was down"), 1);
}

/* kill -9 of the client in the middle of sending: whatever it accepted arrives
 * exactly once. */
static void test_kill_while_sending(void **state)
{
    (void)state;
    enum { N = 12 };
    char text[N][40];
    int done[N];
    srand((unsigned)time(NULL));
    unsigned seed = (unsigned)rand();
    print_message("kill seed %u\n", seed);
    for (int i = 0; i < N; i++) {
        snprintf(text[i], sizeof text[i], "killed-%u-%02d.", seed, i);
        const char *args[] = {"send", "bob", text[i], NULL};
        pid_t p = spawn(A, args);
        sleep_ms((int)((seed + (unsigned)i * 37) % 250));
        kill(p, SIGKILL);
        done[i] = reap(p);
    }
    /* some sends were accepted and kept while the server was away */
    uint16_t port = srv.port;
    char dir[256];
    snprintf(dir, sizeof dir, "%s", srv.dir);
    assert_int_equal(pt_test_server_stop(&srv), 0);
    int rc;
    RUN(rc, A, out, "send", "bob", "kept-1");
    assert_int_equal(rc, 4);
    RUN(rc, A, out, "send", "bob", "kept-2");
    assert_int_equal(rc, 4);
    pt_test_server_start(&srv, dir, port, NULL);
    for (int i = 0; i < 4; i++) { /* flushes killed at various points */
        const char *args[] = {"recv", NULL};
        pid_t p = spawn(A, args);
        sleep_ms(15 * i);
        kill(p, SIGKILL);
        reap(p);
    }
    OK(A, out, "recv");
    OK(B, out, "recv");
    int delivered = 0;
    for (int i = 0; i < N; i++) {
        int c = count(out, text[i]);
        if (c > 1) fail_msg("%s arrived %d times:\n%s", text[i], c, out); /* never twice */
        if (done[i] == 0) assert_int_equal(c, 1); /* finished sends all arrived */
        delivered += c;
    }
    assert_int_equal(count(out, "kept-1"), 1);
    assert_int_equal(count(out, "kept-2"), 1);
    print_message("kill -9 while sending: %d of %d killed sends were accepted and delivered once\n", delivered, N);
}

static void test_passwd(void **state)
{
    (void)state;
    char pwfile[300];
    snprintf(pwfile, sizeof pwfile, "%s/newpw", pt_test_tmpdir("pw"));
    FILE *f = fopen(pwfile, "w");
    assert_non_null(f);
    fputs("a new password\n", f);
    fclose(f);
    setenv("PACKTRACK_NEW_PASSWORD_FILE", pwfile, 1);
    OK(C, out, "passwd");
    unsetenv("PACKTRACK_NEW_PASSWORD_FILE");
    int rc;
    RUN(rc, C, out, "whoami"); /* the old password no longer opens it */
    assert_int_equal(rc, 3);
    OK(C, out, "--password-file", pwfile, "whoami");
}

/* 1 when any file under dir (recursively) contains needle. */
static int dir_contains(const char *dir, const char *needle)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            found = dir_contains(p, needle);
            continue;
        }
        size_t len;
        char *data = pt_test_read_file(p, &len);
        if (!data) continue;
        for (size_t i = 0; !found && i + strlen(needle) <= len; i++)
            found = memcmp(data + i, needle, strlen(needle)) == 0;
        free(data);
    }
    closedir(d);
    return found;
}

/* history, search, receipts off, verify, and no plaintext on disk */
static void test_history_and_privacy(void **state)
{
    (void)state;
    OK(A, out, "history", "bob", "--json");
    int lines = 0, sent_hello = 0, got_hi = 0;
    for (char *l = out; *l;) {
        char *nl = strchr(l, '\n');
        assert_non_null(nl);
        *nl = 0;
        cJSON *j = cJSON_Parse(l);
        if (!j) fail_msg("history --json line does not parse: %s", l);
        const char *text = cJSON_GetStringValue(cJSON_GetObjectItem(j, "text"));
        const char *from = cJSON_GetStringValue(cJSON_GetObjectItem(j, "from"));
        assert_non_null(text);
        assert_non_null(from);
        assert_non_null(cJSON_GetStringValue(cJSON_GetObjectItem(j, "id")));
        assert_non_null(cJSON_GetStringValue(cJSON_GetObjectItem(j, "time")));
        sent_hello += strcmp(text, "hello bob 👋 — ünïcödé") == 0 && strcmp(from, "alice") == 0;
        got_hi += strcmp(text, "hi alice, \"quoted\"\tand tabbed") == 0 && strcmp(from, "bob") == 0;
        cJSON_Delete(j);
        lines++;
        l = nl + 1;
    }
    assert_true(lines >= 5);
    assert_int_equal(sent_hello, 1);
    assert_int_equal(got_hi, 1);
    OK(A, out, "history", "bob", "--search", "ÜNÏCÖDÉ"); /* case folding beyond ASCII */
    assert_int_equal(count(out, "\n"), 1);
    assert_non_null(strstr(out, "hello bob"));
    OK(A, out, "history", "#trio", "--search", "BOB HERE");
    assert_non_null(strstr(out, "#trio <bob> bob here"));
    OK(A, out, "history", "bob", "--search", "no such words");
    assert_string_equal(out, "");

    /* read receipts: on, then off on bob's side */
    OK(A, out, "send", "bob", "receipt one");
    OK(B, out, "recv");
    OK(A, out, "recv");
    OK(A, out, "history", "bob", "--search", "receipt one", "--json");
    assert_non_null(strstr(out, "\"state\":\"read\""));
    OK(B, out, "receipts", "off");
    assert_non_null(strstr(out, "off"));
    OK(A, out, "send", "bob", "receipt two");
    OK(B, out, "recv");
    OK(A, out, "recv");
    OK(A, out, "history", "bob", "--search", "receipt two", "--json");
    assert_non_null(strstr(out, "\"state\":\"delivered\""));
    OK(B, out, "receipts", "on");

    /* verify without a terminal: --yes records it */
    OK(A, out, "verify", "carol", "--yes");
    assert_non_null(strstr(out, "carol is verified"));
    OK(A, out, "friend", "list");
    assert_true(line_has(out, "carol", "\tverified"));

    /* a marker sent and received is nowhere on disk in the clear */
    const char *marker = "PLAINTEXT-MARKER-7f3a9c";
    OK(A, out, "send", "bob", marker);
    OK(B, out, "recv");
    assert_non_null(strstr(out, marker));
    OK(A, out, "history", "bob", "--search", "marker-7F3A9C");
    assert_non_null(strstr(out, marker));
    for (int i = 0; i < 5; i++)
        if (dir_contains(homes[i], marker)) fail_msg("the marker is in the clear under %s", homes[i]);
    assert_false(dir_contains(getenv("TMPDIR"), marker));
    assert_false(dir_contains(srv.dir, marker)); /* the server holds ciphertext only */
}

/* bob's device loses its sessions: alice's next message shows as a placeholder,
 * alice's client re-keys and sends it again, and it replaces the placeholder. */
static void test_undecryptable(void **state)
{
    (void)state;
    OK(A, out, "send", "bob", "before the loss");
    OK(B, out, "recv");
    OK(B, out, "send", "alice", "ack"); /* both sides past their pre-key messages */
    OK(A, out, "recv");
    char path[400];
    snprintf(path, sizeof path, "%s/store.db", homes[B]);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DELETE FROM sessions", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    OK(A, out, "send", "bob", "after the loss");
    OK(B, out, "recv");
    if (!strstr(out, "alice: <a message that could not be read")) fail_msg("bob got: %s", out);
    assert_null(strstr(out, "after the loss"));
    OK(A, out, "recv"); /* takes in the failure receipt, re-keys, sends again */
    OK(B, out, "recv", "--json");
    assert_non_null(strstr(out, "\"text\":\"after the loss\""));
    OK(B, out, "history", "alice", "--json");
    assert_int_equal(count(out, "after the loss"), 1);
    assert_int_equal(count(out, "undecryptable"), 0); /* the placeholder was replaced */
    OK(A, out, "send", "bob", "and after that");
    OK(B, out, "recv");
    assert_non_null(strstr(out, "alice: and after that"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_and_errors), cmocka_unit_test(test_friends),
        cmocka_unit_test(test_messages),        cmocka_unit_test(test_presence),
        cmocka_unit_test(test_safety),          cmocka_unit_test(test_group),
        cmocka_unit_test(test_second_device),   cmocka_unit_test(test_server_restart),
        cmocka_unit_test(test_kill_while_sending), cmocka_unit_test(test_history_and_privacy),
        cmocka_unit_test(test_undecryptable),
        cmocka_unit_test(test_passwd),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
