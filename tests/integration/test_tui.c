/* `packtrack chat` driven through tmux against a real packtrackd: alice opens the
 * conversation with bob, sends text with an emoji and CJK characters and sees its
 * delivery marks; bob answers with the CLI; the screen survives a resize; /quit
 * exits 0. Every wait is bounded; only our own tmux server and packtrackd are killed. */
#define _XOPEN_SOURCE 700 /* wcswidth() */
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include "testutil.h"

#define SENT "hello bob 😀 世界 from the tui"
#define REPLY "reply from bob 🎉 你好"

static pt_test_server srv;
static char bin[512], dir[300], home_a[320], home_b[320], sock[64];
static bool tmux_started;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs a shell command; returns its exit status (-1 if it did not exit). */
static int sh(const char *cmd)
{
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A command's stdout (at most 64 KiB), malloc'd. */
static char *sh_out(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    for (size_t k; n < cap && (k = fread(buf + n, 1, cap - n, p)) > 0;) n += k;
    buf[n] = 0;
    pclose(p);
    return buf;
}

/* `packtrack --home HOME --server ... ARGS`; args are shell words. */
static char *cli(const char *home, const char *args, int *status)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' --home '%s' --server 127.0.0.1:%u --timeout 10 %s 2>&1; echo \"rc=$?\"", bin,
             home, srv.port, args);
    char *out = sh_out(cmd);
    char *rc = strstr(out, "rc=");
    while (rc && strstr(rc + 1, "rc=")) rc = strstr(rc + 1, "rc=");
    *status = rc ? atoi(rc + 3) : -1;
    return out;
}

static void cli_ok(const char *home, const char *args)
{
    int st;
    char *out = cli(home, args, &st);
    if (st != 0) fail_msg("packtrack %s: exit %d: %s", args, st, out);
    free(out);
}

static int tmux(const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "tmux -u -L %s %s >/dev/null 2>&1", sock, args);
    return sh(cmd);
}

static char *capture(void)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "tmux -u -L %s capture-pane -p -t pt 2>/dev/null", sock);
    return sh_out(cmd);
}

/* Polls the screen (10 s at most) until every needle is on it; the last screen is
 * printed when one never appears. */
static void wait_screen(const char *const *needles, size_t n)
{
    char *screen = NULL;
    for (int i = 0; i < 100; i++, sleep_ms(100)) {
        free(screen);
        screen = capture();
        size_t k = 0;
        while (k < n && strstr(screen, needles[k])) k++;
        if (k == n) {
            free(screen);
            return;
        }
    }
    for (size_t k = 0; k < n; k++)
        if (!strstr(screen, needles[k])) fail_msg("'%s' never appeared; the screen:\n%s", needles[k], screen);
}

/* No line of the screen is wider than the window (tmux would have wrapped it). */
static void assert_fits(int cols, int rows)
{
    char *screen = capture(), *save = NULL;
    int lines = 0;
    for (char *line = strtok_r(screen, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        wchar_t w[1024];
        size_t n = mbstowcs(w, line, 1024);
        assert_true(n != (size_t)-1);
        int width = wcswidth(w, n);
        if (width > cols) fail_msg("a line is %d columns wide in a %d-column window: %s", width, cols, line);
        lines++;
    }
    assert_true(lines <= rows);
    free(screen);
}

static void test_chat(void **state)
{
    (void)state;
    if (sh("tmux -V >/dev/null 2>&1") != 0) fail_msg("tmux is missing: run scripts/deps.sh");
    int st;
    /* two users who are friends */
    cli_ok(home_a, "init --user alice");
    cli_ok(home_b, "init --user bob");
    cli_ok(home_a, "friend add bob --note 'from the tui test'");
    cli_ok(home_b, "recv");
    cli_ok(home_b, "friend accept alice");
    char *friends = cli(home_a, "friend list", &st);
    assert_int_equal(st, 0);
    assert_non_null(strstr(friends, "bob\t"));
    free(friends);

    /* alice's chat in a 120x40 window; the shell writes its exit status */
    char cmd[2048], exit_file[400];
    snprintf(exit_file, sizeof exit_file, "%s/exit", dir);
    snprintf(cmd, sizeof cmd,
             "new-session -d -s pt -x 120 -y 40 \"'%s' --home '%s' --server 127.0.0.1:%u chat bob; echo \\$? > '%s'\"",
             bin, home_a, srv.port, exit_file);
    assert_int_equal(tmux(cmd), 0);
    tmux_started = true;
    wait_screen((const char *[]){"bob>", "connected", "│"}, 3);

    /* alice sends: the server stores it (✓) */
    assert_int_equal(tmux("send-keys -t pt -l '" SENT "'"), 0);
    assert_int_equal(tmux("send-keys -t pt Enter"), 0);
    wait_screen((const char *[]){"alice: " SENT " ✓"}, 1);

    /* bob reads it intact (a read receipt goes back) and answers */
    char *got = cli(home_b, "recv --wait 5", &st);
    assert_int_equal(st, 0);
    if (!strstr(got, "alice: " SENT)) fail_msg("bob received: %s", got);
    free(got);
    cli_ok(home_b, "send alice '" REPLY "'");
    wait_screen((const char *[]){"bob: " REPLY, "alice: " SENT " ✓✓"}, 2);
    assert_fits(120, 40);

    /* a smaller window: the layout follows and the messages are still there */
    assert_int_equal(tmux("resize-window -t pt -x 80 -y 20"), 0);
    wait_screen((const char *[]){"bob: " REPLY, "alice: " SENT " ✓✓", "bob>"}, 3);
    assert_fits(80, 20);
    /* too narrow for the conversation list: the messages take the whole width */
    assert_int_equal(tmux("resize-window -t pt -x 44 -y 12"), 0);
    wait_screen((const char *[]){" bob: " REPLY, "bob>"}, 2);
    char *screen = capture(), *reply = strstr(screen, " bob: " REPLY);
    assert_non_null(reply);
    while (reply > screen && reply[-1] != '\n') reply--;
    if (!(reply[0] == ' ' && reply[1] >= '0' && reply[1] <= '9'))
        fail_msg("the list still takes room at 44 columns:\n%s", screen);
    free(screen);
    assert_fits(44, 12);

    /* /quit ends the program with 0 and the session with it */
    assert_int_equal(tmux("send-keys -t pt -l /quit"), 0);
    assert_int_equal(tmux("send-keys -t pt Enter"), 0);
    int i = 0;
    while (i++ < 100 && tmux("has-session -t pt") == 0) sleep_ms(100);
    assert_int_not_equal(tmux("has-session -t pt"), 0);
    char *code = pt_test_read_file(exit_file, NULL);
    assert_non_null(code);
    assert_string_equal(code, "0\n");
    free(code);
}

static int setup(void **state)
{
    (void)state;
    const char *b = getenv("PT_PACKTRACK");
    assert_non_null(b);
    snprintf(bin, sizeof bin, "%s", b);
    snprintf(dir, sizeof dir, "%s", pt_test_tmpdir("tui"));
    snprintf(home_a, sizeof home_a, "%s/alice", dir);
    snprintf(home_b, sizeof home_b, "%s/bob", dir);
    snprintf(sock, sizeof sock, "pt-tui-%d", (int)getpid());
    /* the chat and tmux inherit these: a UTF-8 locale, the password, no outer tmux */
    setenv("PACKTRACK_PASSWORD", "correct horse battery staple", 1);
    setenv("LC_ALL", "C.UTF-8", 1);
    unsetenv("TMUX");
    setenv("TMUX_TMPDIR", dir, 1); /* our tmux socket lives and dies with the test's directory */
    setlocale(LC_ALL, "C.UTF-8"); /* for wcswidth() in assert_fits */
    pt_test_server_start(&srv, NULL, 0, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (tmux_started) tmux("kill-server");
    pt_test_server_stop(&srv);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
