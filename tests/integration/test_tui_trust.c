/* `packtrack chat` through tmux against a real packtrackd, for issue 10's terminal
 * parts: the first run (walk-through, QR code, an unreachable server), the trust states
 * in the title bar (/verify, a key change that stops sending until /trust), /search
 * over an earlier run, /receipts off, notifications, and the layout of CJK, emoji, a
 * ZWJ family and a flag.
 *
 * The layout checks compare captured rows with what the width rules (libutf8proc,
 * one cluster = one width) say, and only where tmux 3.x draws the same widths: CJK and
 * simple emoji 2, a ZWJ family 2, a flag 2, a combining accent 0. tmux draws an emoji
 * with a skin-tone modifier as two emoji (4 columns), so that is not used here. What
 * is checked: rows break where the fixture says, marks written later in place (✓ then
 * ✓✓) land right after the text, editing in the middle of such text leaves the row as
 * expected, the cursor is where the widths put it, and no row is wider than the window.
 * Every wait is bounded; only our own tmux server and packtrackd are killed. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "testutil.h"

#define PASSWORD "correct horse battery staple"
#define FAMILY "\U0001F468\u200D\U0001F469\u200D\U0001F467" /* 👨‍👩‍👧 */
#define FLAG "\U0001F1EB\U0001F1F7"                          /* 🇫🇷 */

static pt_test_server srv;
static char bin[512], dir[300], sock[64], fake_bin[400], notify_log[400];
static char home_a[320], home_b[320], home_b2[320], home_c[320];
static bool tmux_started;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int sh(const char *cmd)
{
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

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

/* `packtrack --home HOME --server ... ARGS` (shell words); *status gets the exit code. */
static char *cli(const char *home, const char *args, int *status)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' --home '%s' --server 127.0.0.1:%u --timeout 10 %s 2>&1; echo \"rc=$?\"", bin,
             home, srv.port, args);
    char *out = sh_out(cmd);
    char *rc = strstr(out, "rc=");
    while (rc && strstr(rc + 1, "rc=")) rc = strstr(rc + 1, "rc=");
    *status = rc ? atoi(rc + 3) : -1;
    if (rc) *rc = 0;
    return out;
}

static void cli_ok(const char *home, const char *args)
{
    int st;
    char *out = cli(home, args, &st);
    if (st != 0) fail_msg("packtrack %s: exit %d: %s", args, st, out);
    free(out);
}

static int tmux(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int tmux(const char *fmt, ...)
{
    char args[4096], cmd[4200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "tmux -u -L %s %s >/dev/null 2>&1", sock, args);
    return sh(cmd);
}

static char *capture(const char *s)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "tmux -u -L %s capture-pane -p -t %s 2>/dev/null", sock, s);
    return sh_out(cmd);
}

static void keys(const char *s, const char *literal) { assert_int_equal(tmux("send-keys -t %s -l '%s'", s, literal), 0); }
static void key(const char *s, const char *name) { assert_int_equal(tmux("send-keys -t %s %s", s, name), 0); }
static void line(const char *s, const char *literal)
{
    keys(s, literal);
    key(s, "Enter");
}

/* Polls session s (15 s at most) until every needle is on the screen. */
static char *wait_screen_n(const char *s, const char *const *needles, size_t n)
{
    char *screen = NULL;
    for (int i = 0; i < 150; i++, sleep_ms(100)) {
        free(screen);
        screen = capture(s);
        size_t k = 0;
        while (k < n && strstr(screen, needles[k])) k++;
        if (k == n) return screen;
    }
    for (size_t k = 0; k < n; k++)
        if (!strstr(screen, needles[k])) fail_msg("%s: '%s' never appeared; the screen:\n%s", s, needles[k], screen);
    return screen;
}
#define wait_screen(s, ...) free(wait_screen_n(s, (const char *[]){__VA_ARGS__}, sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)))

static void wait_not_on_screen(const char *s, const char *needle)
{
    char *screen = NULL;
    for (int i = 0; i < 150; i++, sleep_ms(100)) {
        free(screen);
        screen = capture(s);
        if (!strstr(screen, needle)) {
            free(screen);
            return;
        }
    }
    fail_msg("%s: '%s' never went away; the screen:\n%s", s, needle, screen);
}

/* Starts `packtrack chat ARGS` for home in session s (cols x rows); env: words for env(1). */
static void start_chat(const char *s, const char *home, const char *env, const char *server, const char *args,
                       int cols, int rows)
{
    char exit_file[400], srvarg[64];
    snprintf(exit_file, sizeof exit_file, "%s/exit-%s", dir, s);
    unlink(exit_file);
    if (server) snprintf(srvarg, sizeof srvarg, "%s", server);
    else snprintf(srvarg, sizeof srvarg, "127.0.0.1:%u", srv.port);
    /* a tmux server whose last session just ended may still be exiting: try again */
    int rc = -1;
    for (int i = 0; i < 10 && rc != 0; i++) {
        if (i) sleep_ms(200);
        rc = tmux("new-session -d -s %s -x %d -y %d \"env %s '%s' --home '%s' --server %s --timeout 3 chat %s; "
                  "echo \\$? > '%s'; sleep 30\"",
                  s, cols, rows, env ? env : "", bin, home, srvarg, args ? args : "", exit_file);
    }
    assert_int_equal(rc, 0);
    tmux_started = true;
}

/* Waits until the chat in s has exited; returns its exit code. */
static int chat_exit_code(const char *s)
{
    char exit_file[400];
    snprintf(exit_file, sizeof exit_file, "%s/exit-%s", dir, s);
    /* the shell creates the file before it writes the code: wait for the whole line
     * (reading it empty made a chat that exited with 3 look like 0) */
    char *code = NULL;
    for (int i = 0; i < 150; i++, sleep_ms(100)) {
        if ((code = pt_test_read_file(exit_file, NULL)) && strchr(code, '\n')) break;
        free(code);
        code = NULL;
    }
    if (!code) fail_msg("%s: the chat did not exit; the screen:\n%s", s, capture(s));
    int rc = atoi(code);
    free(code);
    tmux("kill-session -t %s", s);
    return rc;
}

static void quit_chat(const char *s)
{
    line(s, "/quit");
    assert_int_equal(chat_exit_code(s), 0);
}

/* The row of the screen holding needle (its first occurrence), malloc'd. */
static char *row_with(const char *screen, const char *needle)
{
    const char *p = strstr(screen, needle);
    if (!p) return NULL;
    const char *a = p, *b = strchr(p, '\n');
    while (a > screen && a[-1] != '\n') a--;
    if (!b) b = p + strlen(p);
    return strndup(a, (size_t)(b - a));
}

/* ------------------------------------------------------------------------------------- */

static void test_first_run(void **state)
{
    (void)state;
    if (sh("tmux -V >/dev/null 2>&1") != 0) fail_msg("tmux is missing: run scripts/deps.sh");
    /* a server that is not there: a clear message and what to check, then q */
    start_chat("nosrv", home_c, "-u PACKTRACK_PASSWORD", "127.0.0.1:1", NULL, 120, 40);
    wait_screen("nosrv", "Username:");
    line("nosrv", "carol");
    wait_screen("nosrv", "Password:");
    line("nosrv", PASSWORD);
    wait_screen("nosrv", "Repeat the password:");
    line("nosrv", PASSWORD);
    wait_screen("nosrv", "could not be reached", "packtrackd is running", "--server HOST:PORT", "r: try again");
    keys("nosrv", "q");
    assert_int_equal(chat_exit_code("nosrv"), 3);

    /* the real server: name, password twice (never on the screen), the QR, the chat */
    start_chat("first", home_c, "-u PACKTRACK_PASSWORD", NULL, NULL, 120, 45);
    wait_screen("first", "no profile in", "Username:");
    line("first", "carol");
    wait_screen("first", "Password:");
    line("first", "different");
    wait_screen("first", "Repeat the password:");
    line("first", "passwords");
    wait_screen("first", "The passwords differ", "Password:");
    line("first", PASSWORD);
    wait_screen("first", "Repeat the password:");
    line("first", PASSWORD);
    char *screen = wait_screen_n("first", (const char *[]){"Welcome, carol", "user id:", "fingerprint:", "Press Enter"}, 4);
    if (strstr(screen, "horse") || strstr(screen, "different")) fail_msg("a password is on the screen:\n%s", screen);
    /* the QR code: rows of half blocks and full blocks */
    int qr_rows = 0;
    for (char *p = screen; (p = strstr(p, "█")) != NULL; p = strchr(p, '\n') ? strchr(p, '\n') : p + 1) qr_rows++;
    if (qr_rows < 15 || (!strstr(screen, "▀") && !strstr(screen, "▄"))) fail_msg("no QR code:\n%s", screen);
    char *uid_row = row_with(screen, "user id:");
    char uid[40] = "";
    assert_int_equal(sscanf(strstr(uid_row, "user id:") + 8, " %32[0-9a-f]", uid), 1);
    assert_int_equal(strlen(uid), 32);
    free(uid_row);
    free(screen);
    key("first", "Enter");
    wait_screen("first", "PackTrack · carol", "connected");
    quit_chat("first");
    /* the profile is there, under that password, with that id */
    int st;
    char *who = cli(home_c, "whoami", &st);
    assert_int_equal(st, 0);
    if (!strstr(who, uid)) fail_msg("whoami does not show %s: %s", uid, who);
    free(who);
}

static void test_verify_and_key_change(void **state)
{
    (void)state;
    if (sh("tmux -V >/dev/null 2>&1") != 0) fail_msg("tmux is missing: run scripts/deps.sh");
    cli_ok(home_a, "init --user alice");
    cli_ok(home_b, "init --user bob");
    cli_ok(home_a, "friend add bob");
    cli_ok(home_b, "recv");
    cli_ok(home_b, "friend accept alice");
    int st;
    char *sn = cli(home_b, "safety alice", &st); /* bob's side of the same number */
    assert_int_equal(st, 0);
    char first_group[6] = "", last_group[6] = "";
    assert_int_equal(sscanf(sn, "%5s", first_group), 1);
    snprintf(last_group, sizeof last_group, "%.5s", sn + 66);
    free(sn);

    start_chat("a", home_a, NULL, NULL, "bob", 120, 45);
    wait_screen("a", "bob>", "connected", "[unverified]");
    line("a", "/verify");
    char *screen = wait_screen_n("a", (const char *[]){"Safety number of alice (you) and bob", first_group, last_group,
                                                        "y: the numbers match"}, 4);
    if (!strstr(screen, "▀") && !strstr(screen, "▄")) fail_msg("no QR code:\n%s", screen);
    free(screen);
    keys("a", "y");
    wait_screen("a", "[verified]", "bob is verified");
    line("a", "verified hello");
    wait_screen("a", "alice: verified hello ✓");

    /* bob adds a device: alice's client sees new keys and will not send until /trust */
    char cmd[1024]; /* the code alone: stdout, without the advice on stderr */
    snprintf(cmd, sizeof cmd, "'%s' --home '%s' --server 127.0.0.1:%u device link 2>/dev/null", bin, home_b, srv.port);
    char *code = sh_out(cmd), link[128] = "";
    if (sscanf(code, "%127s", link) != 1) fail_msg("no link code: %s", code);
    free(code);
    char args[256];
    snprintf(args, sizeof args, "init --link '%s'", link);
    cli_ok(home_b2, args);
    line("a", "after the link");
    wait_screen("a", "[KEY CHANGED]", "not sent (/verify or /trust first)", "keys changed", "bob> after the link");
    key("a", "Enter"); /* still refused */
    wait_screen("a", "not sent (/verify or /trust first)");
    key("a", "C-u");
    line("a", "/trust");
    wait_screen("a", "[unverified]", "current keys are accepted");
    line("a", "after trust");
    wait_screen("a", "alice: after trust ✓");
    screen = capture("a");
    if (strstr(screen, "alice: after the link")) fail_msg("a refused message is shown as sent:\n%s", screen);
    free(screen);
    quit_chat("a");
    /* both of bob's devices get what was sent after /trust */
    char *got = cli(home_b2, "recv --wait 5", &st);
    assert_int_equal(st, 0);
    if (!strstr(got, "after trust") || strstr(got, "after the link")) fail_msg("bob's new device got: %s", got);
    free(got);
}

/* A group's title counts the members whose keys are not verified. */
static void test_group_title(void **state)
{
    (void)state;
    if (sh("tmux -V >/dev/null 2>&1") != 0) fail_msg("tmux is missing: run scripts/deps.sh");
    cli_ok(home_a, "group create team bob");
    cli_ok(home_b, "recv"); /* bob joins */
    start_chat("g", home_a, NULL, NULL, "'#team'", 120, 40);
    wait_screen("g", "#team>", "[1 of 1 unverified]");
    line("g", "/verify bob");
    wait_screen("g", "Safety number of alice (you) and bob");
    keys("g", "y");
    wait_screen("g", "[1 verified]");
    quit_chat("g");
}

static void test_search_earlier_run(void **state)
{
    (void)state;
    if (sh("tmux -V >/dev/null 2>&1") != 0) fail_msg("tmux is missing: run scripts/deps.sh");
    start_chat("s1", home_a, NULL, NULL, "bob", 120, 40);
    wait_screen("s1", "bob>", "connected");
    line("s1", "a needle 4711 in the haystack");
    wait_screen("s1", "alice: a needle 4711 in the haystack ✓");
    quit_chat("s1");

    start_chat("s2", home_a, NULL, NULL, "bob", 120, 40);
    wait_screen("s2", "bob>", "connected");
    line("s2", "/search NEEDLE 4711");
    wait_screen("s2", "“NEEDLE 4711” in bob: 1 found", "alice: a needle 4711 in the haystack");
    char *screen = capture("s2"), *row = row_with(screen, "alice: a needle 4711");
    /* results carry their date: YYYY-MM-DD HH:MM */
    char *at = strstr(row, "alice: a needle");
    if (at - row < 17 || at[-1] != ' ' || at[-7] != ' ' || at[-13] != '-' || at[-10] != '-') fail_msg("no date before the result: %s", row);
    free(row);
    free(screen);
    key("s2", "Escape");
    wait_not_on_screen("s2", "found —");
    line("s2", "/search -a haystack");
    wait_screen("s2", "in all conversations: 1 found", "[bob] alice: a needle 4711");
    key("s2", "Escape");
    line("s2", "/search nothing-like-this");
    wait_screen("s2", "nothing found");
    key("s2", "Escape");
    quit_chat("s2");
}

/* The delivery state alice's store has for the message with this text. */
static char *state_of(const char *text)
{
    int st;
    cli_ok(home_a, "recv"); /* takes in the receipts */
    char *out = cli(home_a, "history bob --json --limit 50", &st);
    assert_int_equal(st, 0);
    char *state = NULL, *save = NULL;
    for (char *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(l);
        if (!j) continue;
        const cJSON *t = cJSON_GetObjectItem(j, "text"), *s = cJSON_GetObjectItem(j, "state");
        if (cJSON_IsString(t) && strcmp(t->valuestring, text) == 0 && cJSON_IsString(s)) {
            free(state);
            state = strdup(s->valuestring);
        }
        cJSON_Delete(j);
    }
    free(out);
    if (!state) fail_msg("'%s' is not in alice's history", text);
    return state;
}

static void test_receipts_and_notifications(void **state)
{
    (void)state;
    if (sh("tmux -V >/dev/null 2>&1") != 0) fail_msg("tmux is missing: run scripts/deps.sh");
    char env[1024];
    snprintf(env, sizeof env, "PATH='%s':\\\"\\$PATH\\\" PT_NOTIFY_LOG='%s'", fake_bin, notify_log);
    start_chat("b", home_b, env, NULL, "alice", 120, 40);
    wait_screen("b", "alice>", "connected");
    line("b", "/receipts off");
    wait_screen("b", "read receipts off");
    cli_ok(home_a, "send bob 'seen without a receipt'");
    wait_screen("b", "alice: seen without a receipt");
    sleep_ms(1500); /* a receipt, if one were sent, has had its time */
    char *s = state_of("seen without a receipt");
    assert_string_equal(s, "delivered");
    free(s);
    /* the same with receipts on: the read mark comes back (so the check above could fail) */
    line("b", "/receipts on");
    wait_screen("b", "read receipts on");
    cli_ok(home_a, "send bob 'seen with a receipt'");
    wait_screen("b", "alice: seen with a receipt");
    for (int i = 0; i < 30; i++, sleep_ms(300)) {
        s = state_of("seen with a receipt");
        bool read = strcmp(s, "read") == 0;
        free(s);
        if (read) break;
        if (i == 29) fail_msg("no read receipt with receipts on");
    }

    /* a friend request shows in the title; Ctrl-Y accepts it */
    line("b", "/notify on");
    wait_screen("b", "desktop notifications on");
    cli_ok(home_c, "friend add bob");
    wait_screen("b", "1 friend request", "Friend request from carol");
    key("b", "C-y");
    wait_screen("b", "you are now friends");
    wait_not_on_screen("b", "1 friend request");
    /* a direct message to a conversation that is not open: bell and notification, names only */
    cli_ok(home_c, "send bob 'the secret plan is <b>here</b>'");
    char *log = NULL;
    for (int i = 0; i < 100 && !(log = pt_test_read_file(notify_log, NULL)); i++) sleep_ms(100);
    if (!log) fail_msg("notify-send was not run; the screen:\n%s", capture("b"));
    for (int i = 0; i < 20 && !strstr(log, "\n"); i++, sleep_ms(100)) {
        free(log);
        log = pt_test_read_file(notify_log, NULL);
    }
    if (!strstr(log, "[--app-name=PackTrack] [--] [PackTrack] [new message from carol]"))
        fail_msg("notify-send got: %s", log);
    if (strstr(log, "secret")) fail_msg("the message text reached notify-send: %s", log);
    free(log);
    char *flag = sh_out("tmux -u -L \"$PT_TMUX_SOCK\" display -p -t b '#{window_bell_flag}'");
    assert_string_equal(flag, "1\n");
    free(flag);
    wait_screen("b", "carol (1)"); /* the unread count in the list */
    quit_chat("b");
}

/* Columns of a row by the fixture's widths: ASCII 1, the test's CJK and emoji 2, a
 * family or a flag 2, the combining accent 0, box drawing and marks 1. */
static int fixture_width(const char *row)
{
    int w = 0;
    for (const char *p = row; *p;) {
        if (strncmp(p, FAMILY, strlen(FAMILY)) == 0) {
            w += 2;
            p += strlen(FAMILY);
        } else if (strncmp(p, FLAG, strlen(FLAG)) == 0) {
            w += 2;
            p += strlen(FLAG);
        } else if (strncmp(p, "\u0301", 2) == 0) {
            p += 2;
        } else if ((unsigned char)*p < 0x80) {
            w++;
            p++;
        } else {
            unsigned char c = (unsigned char)*p;
            size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            /* U+1100.. wide: the CJK and emoji of this test; box drawing, ✓, ●, ○ narrow */
            bool wide = len == 4 || (len == 3 && c >= 0xE3);
            w += wide ? 2 : 1;
            p += len;
        }
    }
    return w;
}

static void test_unicode_layout(void **state)
{
    (void)state;
    if (sh("tmux -V >/dev/null 2>&1") != 0) fail_msg("tmux is missing: run scripts/deps.sh");
    static const char *const texts[] = {
        "世界你好 cjk",
        "emoji 😀🎉 ok",
        "family " FAMILY " end",
        "flag " FLAG " end",
        "cafe\u0301 combining",
        "mix 世" FAMILY FLAG "😀e\u0301 end",
    };
    start_chat("u", home_a, NULL, NULL, "bob", 80, 24);
    wait_screen("u", "bob>", "connected");
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        line("u", texts[i]);
        char want[256];
        snprintf(want, sizeof want, "alice: %s ✓", texts[i]);
        wait_screen("u", want);
    }
    /* bob reads them: every mark is rewritten in place, right after its text */
    char *got = NULL;
    int st;
    got = cli(home_b, "recv --wait 5", &st);
    free(got);
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        char want[256];
        snprintf(want, sizeof want, "alice: %s ✓✓", texts[i]);
        wait_screen("u", want);
    }
    /* long runs of two-column clusters break where the fixture says: the pane is 80 -
     * 23 columns, text lines are 56 wide, so 28 clusters a row */
    char run[30 * 32] = "";
    for (int i = 0; i < 30; i++) strcat(run, FAMILY);
    line("u", run);
    char row28[28 * 32] = "", row2[2 * 32 + 16] = "";
    for (int i = 0; i < 28; i++) strcat(row28, FAMILY);
    snprintf(row2, sizeof row2, "%s%s ✓", FAMILY, FAMILY);
    char *screen = wait_screen_n("u", (const char *[]){row28, row2}, 2);
    char *r = row_with(screen, row28);
    if (strstr(r, FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY
                      FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY FAMILY
                          FAMILY))
        fail_msg("29 families on a 56-column row: %s", r);
    free(r);
    /* no row wider than the window, none wrapped: 24 rows, the input on the last */
    int rows = 0;
    char *save = NULL, *last = NULL;
    for (char *l = strtok_r(screen, "\n", &save); l; l = strtok_r(NULL, "\n", &save), rows++) {
        if (fixture_width(l) > 80) fail_msg("row %d is %d columns wide: %s", rows, fixture_width(l), l);
        last = l;
    }
    assert_true(rows <= 24);
    assert_non_null(last);
    if (strncmp(last, "bob>", 4) != 0) fail_msg("the input line is not the last row: %s", last);
    free(screen);

    /* the edit line: clusters move and go as one, and what is drawn after them lines up */
    keys("u", FAMILY FLAG "世X");
    key("u", "Left");
    keys("u", "Y");
    wait_screen("u", "bob> " FAMILY FLAG "世YX");
    key("u", "Home");
    key("u", "Right");
    key("u", "Right");
    key("u", "BSpace"); /* the flag, both regional indicators */
    wait_screen("u", "bob> " FAMILY "世YX");
    char *cx = sh_out("tmux -u -L \"$PT_TMUX_SOCK\" display -p -t u '#{cursor_x}'");
    assert_string_equal(cx, "7\n"); /* "bob> " and the family: 5 + 2 */
    free(cx);
    key("u", "C-u");
    quit_chat("u");
}

/* bob's device loses its sessions: alice's next message shows on bob's screen as a
 * placeholder with its reason, and is replaced in place once alice's client has
 * re-keyed and sent it again. */
static void test_undecryptable_placeholder(void **state)
{
    (void)state;
    cli_ok(home_a, "send bob 'before the loss'");
    cli_ok(home_b, "recv");
    cli_ok(home_b, "send alice 'ack'"); /* both sides past their pre-key messages */
    cli_ok(home_a, "recv");
    char path[400];
    snprintf(path, sizeof path, "%s/store.db", home_b);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DELETE FROM sessions", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    start_chat("u1", home_b, NULL, NULL, "alice", 120, 40);
    wait_screen("u1", "alice>", "connected");
    cli_ok(home_a, "send bob 'after the loss'");
    wait_screen("u1", "could not be read: unknown session");
    cli_ok(home_a, "recv"); /* the failure receipt: alice re-keys and sends it again */
    wait_screen("u1", "alice: after the loss");
    wait_not_on_screen("u1", "could not be read");
    quit_chat("u1");
}

/* typing notifications: shown to the friend while alice types, gone when she
 * clears the line; with /typing off none is sent */
static void test_typing(void **state)
{
    (void)state;
    start_chat("y1", home_a, NULL, NULL, "bob", 120, 40);
    start_chat("y2", home_b, NULL, NULL, "alice", 120, 40);
    wait_screen("y1", "bob>", "connected");
    wait_screen("y2", "alice>", "connected");
    keys("y1", "hello the");
    wait_screen("y2", "alice is typing");
    key("y1", "C-u");
    wait_not_on_screen("y2", "alice is typing");
    line("y1", "/typing off");
    wait_screen("y1", "typing notifications off");
    keys("y1", "quiet now");
    sleep_ms(2500);
    char *screen = capture("y2");
    if (strstr(screen, "alice is typing")) fail_msg("typing shown although off:\n%s", screen);
    free(screen);
    key("y1", "C-u");
    line("y1", "/typing on");
    quit_chat("y1");
    quit_chat("y2");
}

static int setup(void **state)
{
    (void)state;
    const char *b = getenv("PT_PACKTRACK");
    assert_non_null(b);
    snprintf(bin, sizeof bin, "%s", b);
    snprintf(dir, sizeof dir, "%s", pt_test_tmpdir("tuitrust"));
    snprintf(home_a, sizeof home_a, "%s/alice", dir);
    snprintf(home_b, sizeof home_b, "%s/bob", dir);
    snprintf(home_b2, sizeof home_b2, "%s/bob2", dir);
    snprintf(home_c, sizeof home_c, "%s/carol", dir);
    snprintf(sock, sizeof sock, "pt-tuit-%d", (int)getpid());
    setenv("PT_TMUX_SOCK", sock, 1);
    /* a notify-send that only writes down its arguments */
    snprintf(fake_bin, sizeof fake_bin, "%s/bin", dir);
    snprintf(notify_log, sizeof notify_log, "%s/notify.log", dir);
    char script[500];
    assert_int_equal(mkdir(fake_bin, 0700), 0);
    snprintf(script, sizeof script, "%s/notify-send", fake_bin);
    FILE *f = fopen(script, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\nfor a; do printf '[%s] ' \"$a\"; done >> \"$PT_NOTIFY_LOG\"\necho >> \"$PT_NOTIFY_LOG\"\n", f);
    fclose(f);
    assert_int_equal(chmod(script, 0755), 0);
    setenv("PACKTRACK_PASSWORD", PASSWORD, 1);
    setenv("LC_ALL", "C.UTF-8", 1);
    unsetenv("TMUX");
    setenv("TMUX_TMPDIR", dir, 1);
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
        cmocka_unit_test(test_first_run),
        cmocka_unit_test(test_verify_and_key_change),
        cmocka_unit_test(test_group_title),
        cmocka_unit_test(test_search_earlier_run),
        cmocka_unit_test(test_receipts_and_notifications),
        cmocka_unit_test(test_undecryptable_placeholder),
        cmocka_unit_test(test_typing),
        cmocka_unit_test(test_unicode_layout),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
