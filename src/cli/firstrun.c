/*
 * packtrack chat without a profile: create one inside the terminal. The name and the
 * password (twice, never shown) are asked for, pt_create() runs on a worker thread so
 * the screen counts the seconds while it waits for the server, and a failure says what
 * to check. On success the user id, the fingerprint and its QR code are shown.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tui.h"

enum { FIELD_MAX = 256 }; /* characters of a typed name or password */

typedef struct first_run {
    const pt_options *o;
    char home[512];     /* where the profile goes, for the messages */
    char server[300];   /* HOST:PORT, for the messages */
    int timeout_s;
    char lines[12][512]; /* what the screen says above the prompt */
    attr_t attr[12];
    int nlines;
} first_run;

typedef struct create_job {
    const pt_options *o;
    const char *password, *username;
    pt_ctx *ctx;
    pt_err err;
    char error[512];  /* pt_last_error(NULL) is per thread: read on the worker */
    atomic_bool done;
} create_job;

static void say_clear(first_run *f) { f->nlines = 0; }

static void say(first_run *f, attr_t attr, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(first_run *f, attr_t attr, const char *fmt, ...)
{
    if (f->nlines == (int)(sizeof f->lines / sizeof f->lines[0])) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->lines[f->nlines], sizeof f->lines[0], fmt, ap);
    va_end(ap);
    f->attr[f->nlines++] = attr;
}

/* The title and what f says; returns the next free row. */
static int frame(const first_run *f)
{
    int rows, cols;
    getmaxyx(stdscr, rows, cols);
    (void)rows;
    erase();
    attr_t title = COLOR_PAIR(C_TITLE) | A_REVERSE;
    attron(title);
    mvhline(0, 0, ' ', cols);
    attroff(title);
    pt_tui_put_utf8(0, 0, cols, " PackTrack · first run: a new profile", title);
    int y = 2;
    for (int i = 0; i < f->nlines; i++) {
        /* long lines wrap at spaces, indented like their first line */
        wchar_t *w = pt_tui_wide(f->lines[i]);
        if (!w) continue;
        size_t n = wcslen(w), a = 0, lead = wcsspn(w, L" ·");
        int indent = 0;
        while (a < n) {
            int used;
            size_t k = pt_tui_fit(w + a, n - a, cols - 3 - indent, &used);
            if (a + k < n)
                for (size_t b = k; b > 0; b--)
                    if (w[a + b] == L' ') {
                        k = b;
                        break;
                    }
            if (k == 0) k = 1;
            pt_tui_put(y++, 1 + indent, cols - 2 - indent, w + a, k, f->attr[i]);
            indent = (int)lead;
            a += k;
            while (a < n && w[a] == L' ') a++;
        }
        free(w);
    }
    return y + 1;
}

/* Reads one line at the bottom of the text; secret: nothing is shown. Returns the
 * malloc'd UTF-8 text, NULL when the user gave up (Esc, Ctrl-C). */
static char *ask(first_run *f, const char *prompt, bool secret)
{
    wchar_t in[FIELD_MAX + 1];
    size_t n = 0;
    char *out = NULL;
    for (;;) {
        int y = frame(f);
        int x = pt_tui_put_utf8(y, 1, COLS - 2, prompt, A_BOLD) + 1;
        if (!secret) x += pt_tui_put(y, x, COLS - x - 1, in, n, A_NORMAL);
        move(y, x);
        pt_tui_present();
        wint_t k;
        int kind = get_wch(&k);
        if (kind == ERR) continue;
        if (kind == KEY_CODE_YES) {
            if (k == KEY_BACKSPACE && n) n = pt_tui_prev(in, n, n);
            else if (k == KEY_ENTER) break;
            continue;
        }
        if (k == 27 || k == 3) goto out; /* Esc, Ctrl-C */
        if (k == L'\r' || k == L'\n') break;
        if (k == 127 || k == 8) {
            if (n) n = pt_tui_prev(in, n, n);
        } else if (k == 21) {
            n = 0;
        } else if (pt_tui_typable(k) && n < FIELD_MAX) {
            in[n++] = (wchar_t)k;
        }
    }
    out = pt_tui_utf8(in, n);
out:
    for (volatile wchar_t *p = in; p < in + FIELD_MAX + 1; p++) *p = 0; /* a password was here */
    return out;
}

static void wipe_free(char *s)
{
    if (!s) return;
    for (volatile char *p = s; *p; p++) *p = 0;
    free(s);
}

static void *create_worker(void *arg)
{
    create_job *j = arg;
    j->ctx = pt_create(j->o, j->password, j->username, &j->err);
    if (!j->ctx) snprintf(j->error, sizeof j->error, "%s", pt_last_error(NULL));
    atomic_store(&j->done, true);
    return NULL;
}

/* pt_create() with the seconds counting on the screen. */
static pt_ctx *create(first_run *f, const char *username, const char *password, pt_err *err, char *error, size_t cap)
{
    create_job j = {.o = f->o, .password = password, .username = username};
    atomic_init(&j.done, false);
    pthread_t th;
    if (pthread_create(&th, NULL, create_worker, &j) != 0) create_worker(&j);
    else {
        struct timespec t0, now;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (!atomic_load(&j.done)) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            long s = (long)(now.tv_sec - t0.tv_sec);
            say_clear(f);
            say(f, A_BOLD, "Creating the profile for %s…  %ld s", username, s);
            say(f, A_NORMAL, "  · an identity key, a device key and the encrypted store, on this computer (%s)", f->home);
            say(f, A_NORMAL, "  · connecting to the server %s (it has %d s to answer) and claiming the name %s",
                f->server, f->timeout_s, username);
            frame(f);
            pt_tui_present();
            napms(100);
        }
        pthread_join(th, NULL);
    }
    *err = j.err;
    snprintf(error, cap, "%s", j.error);
    return j.ctx;
}

/* Waits for r (true) or q / Esc / Ctrl-C (false). */
static bool retry_or_quit(first_run *f)
{
    say(f, A_BOLD, "r: try again    q: quit");
    for (;;) {
        frame(f);
        pt_tui_present();
        wint_t k;
        int kind = get_wch(&k);
        if (kind == ERR || kind == KEY_CODE_YES) continue;
        if (k == L'r' || k == L'R') return true;
        if (k == L'q' || k == L'Q' || k == 27 || k == 3) return false;
    }
}

/* Says why pt_create() failed and what to check; true: ask for another name. */
static bool explain(first_run *f, pt_err err, const char *error)
{
    say_clear(f);
    switch (err) {
    case PT_ERR_REFUSED:
        say(f, COLOR_PAIR(C_FAIL) | A_BOLD, "The server refused: %s", error);
        return true;
    case PT_ERR_OFFLINE:
    case PT_ERR_TIMEOUT:
    case PT_ERR_IO:
    case PT_ERR_CLOSED:
        say(f, COLOR_PAIR(C_FAIL) | A_BOLD, "The server at %s could not be reached (%s).", f->server, error);
        say(f, A_NORMAL, "Nothing was created. Check:");
        say(f, A_NORMAL, "  · that packtrackd is running on that machine and listens on that port;");
        say(f, A_NORMAL, "  · that --server HOST:PORT names it (now %s);", f->server);
        say(f, A_NORMAL, "  · that no firewall stops the connection, and that --obfuscate and --network-key "
                         "match the server's settings (-v logs the attempts).");
        return false;
    case PT_ERR_KEY_MISMATCH:
        say(f, COLOR_PAIR(C_FAIL) | A_BOLD, "The server's key is not the expected one: %s", error);
        say(f, A_NORMAL, "Check --fingerprint against what packtrackd prints when it starts, or the line for %s "
                         "in HOME/known_servers.", f->server);
        return false;
    default:
        say(f, COLOR_PAIR(C_FAIL) | A_BOLD, "The profile could not be created: %s", error);
        return false;
    }
}

/* Who we are, and the QR code of it, until Enter. */
static void show_identity(first_run *f, pt_ctx *ctx)
{
    char qr[512];
    pt_tui_id_qr_text(ctx, qr, sizeof qr);
    say_clear(f);
    say(f, A_BOLD, "Welcome, %s: your profile is ready.", pt_username(ctx));
    say(f, A_NORMAL, "  name:        %s", pt_username(ctx));
    say(f, A_NORMAL, "  user id:     %s", pt_user_id(ctx));
    say(f, A_NORMAL, "  fingerprint: %s", pt_identity_fingerprint(ctx));
    for (;;) {
        int y = frame(f), rows = LINES - y - 3;
        int used = pt_tui_put_qr(y, 3, rows, COLS - 4, qr);
        if (!used) pt_tui_put_utf8(y, 1, COLS - 2, "(the window is too small for the QR code: 'packtrack whoami --qr' prints it)", A_DIM);
        y += used ? used : 1;
        pt_tui_put_utf8(y + 1, 1, COLS - 2, "Friends scan the code (or compare the fingerprint) to know it is you.", A_NORMAL);
        pt_tui_put_utf8(y + 2, 1, COLS - 2, "Press Enter to start chatting.", A_BOLD);
        pt_tui_present();
        wint_t k;
        int kind = get_wch(&k);
        if (kind == KEY_CODE_YES && k == KEY_ENTER) return;
        if (kind == OK && (k == L'\r' || k == L'\n' || k == 3 || k == 27)) return;
    }
}

void pt_tui_id_qr_text(const pt_ctx *ctx, char *out, size_t cap)
{
    snprintf(out, cap, "packtrack:%s:%s:%s", pt_username(ctx), pt_user_id(ctx), pt_identity_fingerprint(ctx));
}

pt_ctx *pt_tui_first_run(const pt_options *o, const char *password)
{
    first_run f = {.o = o, .timeout_s = o->timeout_ms > 0 ? (o->timeout_ms + 999) / 1000 : 10};
    const char *h = getenv("HOME");
    if (o->home) snprintf(f.home, sizeof f.home, "%s", o->home);
    else snprintf(f.home, sizeof f.home, "%s/.packtrack", h ? h : ".");
    snprintf(f.server, sizeof f.server, "%s", o->server ? o->server : "127.0.0.1:7000");
    nodelay(stdscr, FALSE); /* every step here waits for the user */
    char *user = NULL, *pw = NULL;
    pt_ctx *ctx = NULL;
    bool keep = false; /* an error is on the screen: the next step adds to it */
    say(&f, A_BOLD, "Welcome to PackTrack. There is no profile in %s yet: this creates one.", f.home);
    say(&f, A_NORMAL, "Your keys are made on this computer and kept in a store sealed with your password; "
                      "the server (%s) learns your name, never your messages.", f.server);
    say(&f, A_NORMAL, "Esc quits without creating anything.");
    for (;;) {
        if (!user) {
            say(&f, A_NORMAL, "%s", "");
            say(&f, A_NORMAL, "Your username: 1-32 characters; others find you by it.");
            if (!(user = ask(&f, "Username:", false))) break;
            if (!*user) {
                free(user);
                user = NULL;
                say_clear(&f);
                say(&f, COLOR_PAIR(C_FAIL) | A_BOLD, "The username is empty.");
                continue;
            }
        }
        if (!password && !pw) {
            if (!keep) say_clear(&f);
            keep = false;
            say(&f, A_NORMAL, "A password for this profile (it is not shown as you type). It cannot be recovered: "
                              "without it the store cannot be opened.");
            char *again = NULL;
            if (!(pw = ask(&f, "Password:", true)) || !(again = ask(&f, "Repeat the password:", true))) break;
            bool same = strcmp(pw, again) == 0, empty = !*pw;
            wipe_free(again);
            if (!same || empty) {
                wipe_free(pw);
                pw = NULL;
                say_clear(&f);
                say(&f, COLOR_PAIR(C_FAIL) | A_BOLD, "%s", empty ? "The password is empty." : "The passwords differ; once more.");
                keep = true;
                continue;
            }
        }
        pt_err err;
        char error[512];
        if ((ctx = create(&f, user, password ? password : pw, &err, error, sizeof error)) != NULL) break;
        if (explain(&f, err, error)) { /* the name: ask again, keep the password */
            free(user);
            user = NULL;
            continue;
        }
        if (!retry_or_quit(&f)) break;
        say_clear(&f);
    }
    wipe_free(pw);
    free(user);
    if (ctx) show_identity(&f, ctx);
    nodelay(stdscr, TRUE);
    return ctx;
}
