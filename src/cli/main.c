/*
 * packtrack - the command-line client. One function per command and a dispatch
 * table; everything goes through libpacktrack's public API.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <utf8proc.h>

#include "cli.h"

static const char usage_text[] =
    "usage: packtrack [--home DIR] [--server HOST:PORT] [--password-file FILE] COMMAND ...\n"
    "\n"
    "  init --user NAME          create identity + store, claim NAME on the server\n"
    "  init --link CODE          add this home as a new device of your user (code from 'device link')\n"
    "  whoami [--qr]             name, 128-bit user id (32 hex), fingerprint (and its QR code)\n"
    "  status [online|busy|away|invisible]\n"
    "  list                      users online on the server\n"
    "  friend add NAME [--note TEXT] | friend accept NAME | friend deny NAME\n"
    "  friend add NAME --nearby [--expect FP | --yes]\n"
    "                            ask someone on this network (no server needed), after\n"
    "                            comparing their fingerprint\n"
    "  friend list               friends with status and verification state\n"
    "  safety NAME [--verified]  safety number with NAME (--verified: you compared it)\n"
    "  verify NAME [--yes]       show the safety number and its QR code, ask, record it\n"
    "  trust NAME                accept NAME's changed keys without verifying them\n"
    "  send NAME TEXT            exit 0 once the server has stored it; prints the message id\n"
    "  recv [--wait SECONDS] [--json]\n"
    "                            prints messages received since last time; with --json one\n"
    "                            object per line: {\"id\",\"from\",\"to\",\"group\",\"time\",\"text\"}\n"
    "  history NAME|#GROUP [--search TEXT] [--limit N] [--json]\n"
    "                            earlier messages (search runs in memory, nothing written)\n"
    "  receipts [on|off]         send read receipts (default on)\n"
    "  typing [on|off]           typing notifications, sent and shown (default on)\n"
    "  group create NAME MEMBER... | group send NAME TEXT | group members NAME\n"
    "  device link | device list | device revoke ID\n"
    "  passwd                    re-seal the local store under a new password\n"
    "  chat [NAME]               interactive terminal UI\n"
    "  nearby [--wait SECONDS] [--json]\n"
    "                            servers, friends and others discovery sees on this network\n"
    "\n"
    "options:\n"
    "  --home DIR            profile directory (default ~/.packtrack)\n"
    "  --server HOST:PORT    server (default 127.0.0.1:7000; IPv6: [ADDRESS]:PORT)\n"
    "  --fingerprint FP      expected server key (default: trusted on first use)\n"
    "  --password-file FILE  read the password from the first line of FILE; else\n"
    "                        $PACKTRACK_PASSWORD; else a prompt without echo\n"
    "  --timeout SECONDS     how long to wait for the server (default 10)\n"
    "  --obfuscate MODE      off (default), mse (never plain), mse-prefer (MSE, else\n"
    "                        plain) or pt-obfs; the server's mode must take it\n"
    "  --network-key HEX     the network key the server is configured with\n"
    "  --lan                 local-network discovery and direct chat with friends nearby\n"
    "                        (send, recv, chat); default: on when no server answers\n"
    "  --no-lan              never use the local network\n"
    "  --discovery-port N    UDP port of LAN discovery (default 7001)\n"
    "  -v, --verbose         log what the library does to stderr\n"
    "  -h, --help            this text;  -V, --version  the version\n"
    "\n"
    "exit codes: 0 done; 1 failed (the message says why); 2 bad command line;\n"
    "3 no profile, wrong password or damaged store; 4 server not reachable (a message\n"
    "is kept and sent later); 5 no such user, friend, group or device.\n";

int pt_cli_fail(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("packtrack: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return err;
}

static int exit_code_of(int err)
{
    switch (err) {
    case PT_OK: return PT_EXIT_OK;
    case PT_ERR_PASSWORD:
    case PT_ERR_EXISTS:
    case PT_ERR_DECODE: return PT_EXIT_PROFILE;
    case PT_ERR_OFFLINE:
    case PT_ERR_TIMEOUT:
    case PT_ERR_IO: return PT_EXIT_OFFLINE;
    case PT_ERR_NOT_FOUND: return PT_EXIT_NOTFOUND;
    default: return PT_EXIT_FAIL;
    }
}

int pt_cli_report(const pt_ctx *ctx, int err, const char *what)
{
    const char *last = pt_last_error(ctx);
    /* it may quote the server's words or a LAN peer's name: printed as text is */
    char *msg = last && *last ? pt_cli_printable(last, NULL) : NULL;
    if (msg) pt_cli_fail(0, "%s: %s", what, msg);
    else pt_cli_fail(0, "%s: %s", what, pt_strerror(err));
    free(msg);
    return exit_code_of(err);
}

/* ---- passwords ------------------------------------------------------------------------------ */

static char *read_line_from(FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    return line;
}

static char *prompt_noecho(const char *prompt)
{
    FILE *tty = fopen("/dev/tty", "r+");
    if (!tty) return NULL;
    struct termios old, noecho;
    bool restore = tcgetattr(fileno(tty), &old) == 0;
    if (restore) {
        noecho = old;
        noecho.c_lflag &= (tcflag_t)~ECHO;
        tcsetattr(fileno(tty), TCSAFLUSH, &noecho);
    }
    fputs(prompt, tty);
    fflush(tty);
    char *pw = read_line_from(tty);
    if (restore) tcsetattr(fileno(tty), TCSAFLUSH, &old);
    fputc('\n', tty);
    fclose(tty);
    return pw;
}

void pt_cli_password_free(char *pw)
{
    if (!pw) return;
    volatile char *p = pw;
    while (*p) *p++ = 0;
    free(pw);
}

char *pt_cli_password(const pt_cli *cli, const char *prompt, bool confirm, const char *env_name, const char *file)
{
    if (file) {
        FILE *f = fopen(file, "r");
        if (!f) {
            pt_cli_fail(0, "cannot read the password file %s: %s", file, strerror(errno));
            return NULL;
        }
        char *pw = read_line_from(f);
        fclose(f);
        if (!pw || !*pw) {
            pt_cli_fail(0, "the password file %s is empty", file);
            pt_cli_password_free(pw);
            return NULL;
        }
        return pw;
    }
    const char *env = getenv(env_name);
    if (env && *env) return strdup(env);
    (void)cli;
    char *pw = prompt_noecho(prompt);
    if (!pw) {
        pt_cli_fail(0, "no password: use --password-file FILE or set %s (no terminal to ask on)", env_name);
        return NULL;
    }
    if (!*pw) {
        pt_cli_fail(0, "the password is empty");
        pt_cli_password_free(pw);
        return NULL;
    }
    if (confirm) {
        char *again = prompt_noecho("Repeat the password: ");
        bool same = again && strcmp(again, pw) == 0;
        pt_cli_password_free(again);
        if (!same) {
            pt_cli_fail(0, "the passwords differ");
            pt_cli_password_free(pw);
            return NULL;
        }
    }
    return pw;
}

pt_ctx *pt_cli_open(pt_cli *cli, int *exit_code)
{
    char *pw = pt_cli_password(cli, "Password: ", false, "PACKTRACK_PASSWORD", cli->password_file);
    if (!pw) {
        *exit_code = PT_EXIT_PROFILE;
        return NULL;
    }
    pt_err err;
    pt_ctx *ctx = pt_open(&cli->opt, pw, &err);
    pt_cli_password_free(pw);
    if (!ctx) *exit_code = pt_cli_report(NULL, err, "cannot open the profile");
    if (!ctx && err == PT_ERR_NOT_FOUND) *exit_code = PT_EXIT_PROFILE;
    return ctx;
}

const char *pt_cli_status_name(pt_status s)
{
    switch (s) {
    case PT_PRESENCE_ONLINE: return "online";
    case PT_PRESENCE_BUSY: return "busy";
    case PT_PRESENCE_AWAY: return "away";
    case PT_PRESENCE_INVISIBLE: return "invisible";
    default: return "offline";
    }
}

/* ---- commands --------------------------------------------------------------------------------- */

static int need_args(pt_cli *cli, int min, int max, const char *usage)
{
    if (cli->argc - 1 < min || (max >= 0 && cli->argc - 1 > max))
        return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack %s", usage);
    return 0;
}

/* The QR code of who we are: what another user scans to check our fingerprint. */
static void print_id_qr(pt_ctx *ctx)
{
    char text[256];
    snprintf(text, sizeof text, "packtrack:%s:%s:%s", pt_username(ctx), pt_user_id(ctx), pt_identity_fingerprint(ctx));
    if (pt_cli_print_qr(stdout, text) != 0) fprintf(stderr, "packtrack: no QR code (libqrencode failed)\n");
}

static int cmd_init(pt_cli *cli)
{
    const char *user = NULL, *link = NULL;
    for (int i = 1; i < cli->argc; i++) {
        if (strcmp(cli->argv[i], "--user") == 0 && i + 1 < cli->argc) user = cli->argv[++i];
        else if (strcmp(cli->argv[i], "--link") == 0 && i + 1 < cli->argc) link = cli->argv[++i];
        else return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack init --user NAME | init --link CODE");
    }
    if (!user == !link) return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack init --user NAME | init --link CODE");
    char *pw = pt_cli_password(cli, "New password for this profile: ", true, "PACKTRACK_PASSWORD", cli->password_file);
    if (!pw) return PT_EXIT_PROFILE;
    pt_err err;
    /* the network steps say what they do: nothing waits without a word */
    fprintf(stderr, "packtrack: creating keys, then connecting to %s (waiting up to %d s) to %s...\n",
            cli->opt.server ? cli->opt.server : "127.0.0.1:7000",
            cli->opt.timeout_ms ? cli->opt.timeout_ms / 1000 : 10,
            user ? "claim the name" : "fetch the link");
    pt_ctx *ctx = user ? pt_create(&cli->opt, pw, user, &err) : pt_create_linked(&cli->opt, pw, link, &err);
    pt_cli_password_free(pw);
    if (!ctx) return pt_cli_report(NULL, err, user ? "init" : "init --link");
    printf("name:        %s\nuser id:     %s\nfingerprint: %s\n", pt_username(ctx), pt_user_id(ctx),
           pt_identity_fingerprint(ctx));
    print_id_qr(ctx);
    pt_close(ctx);
    return 0;
}

static int cmd_whoami(pt_cli *cli, pt_ctx *ctx)
{
    int rc = need_args(cli, 0, 1, "whoami [--qr]");
    if (rc) return rc;
    if (cli->argc == 2 && strcmp(cli->argv[1], "--qr") != 0) return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack whoami [--qr]");
    printf("name:        %s\nuser id:     %s\nfingerprint: %s\n", pt_username(ctx), pt_user_id(ctx),
           pt_identity_fingerprint(ctx));
    if (cli->argc == 2) print_id_qr(ctx);
    return 0;
}

static int cmd_status(pt_cli *cli, pt_ctx *ctx)
{
    int rc = need_args(cli, 0, 1, "status [online|busy|away|invisible]");
    if (rc) return rc;
    if (cli->argc == 1) {
        printf("%s\n", pt_cli_status_name(pt_get_status(ctx)));
        return 0;
    }
    static const char *const names[] = {"", "online", "busy", "away", "invisible"};
    for (int s = 1; s <= 4; s++)
        if (strcmp(cli->argv[1], names[s]) == 0) {
            if ((rc = pt_set_status(ctx, (pt_status)s)) != 0) return pt_cli_report(ctx, rc, "status");
            printf("%s\n", names[s]);
            return 0;
        }
    return pt_cli_fail(PT_EXIT_USAGE, "status '%s' is not one of online, busy, away, invisible", cli->argv[1]);
}

/* Names and texts from other people (through the server or the LAN) as they may be
 * printed (pt_cli_printable): a ring of SHOWN strings, each valid until SHOWN more were
 * made, enough for one printf. A name or a one-line field: indent NULL. */
#define SHOWN 8
static const char *shown_as(const char *s, const char *indent)
{
    static char *ring[SHOWN];
    static unsigned at;
    char **slot = &ring[at++ % SHOWN];
    free(*slot);
    *slot = pt_cli_printable(s ? s : "", indent);
    return *slot ? *slot : "?";
}
static const char *shown(const char *s) { return shown_as(s, NULL); }

static int cmd_list(pt_cli *cli, pt_ctx *ctx)
{
    int rc = need_args(cli, 0, 0, "list");
    if (rc) return rc;
    pt_user *u;
    size_t n;
    if ((rc = pt_users_online(ctx, &u, &n)) != 0) return pt_cli_report(ctx, rc, "list");
    for (size_t i = 0; i < n; i++) printf("%s\t%s\n", shown(u[i].name), pt_cli_status_name(u[i].status));
    pt_free(u);
    return 0;
}

static const char *state_name(pt_contact_state s)
{
    switch (s) {
    case PT_CONTACT_STATE_REQUEST_SENT: return "request sent";
    case PT_CONTACT_STATE_REQUEST_RECEIVED: return "request received";
    case PT_CONTACT_STATE_FRIEND: return "friend";
    case PT_CONTACT_STATE_BLOCKED: return "blocked";
    default: return "none";
    }
}

static int connect_or_lan(pt_cli *cli, pt_ctx *ctx);

/* "ab:CD:..." and "abcd..." compare equal */
static bool same_fingerprint(const char *a, const char *b)
{
    for (;;) {
        while (*a == ':' || *a == ' ') a++;
        while (*b == ':' || *b == ' ') b++;
        if (!*a || !*b) return !*a && !*b;
        if (tolower((unsigned char)*a++) != tolower((unsigned char)*b++)) return false;
    }
}

static bool confirm_on_tty(const char *question)
{
    FILE *tty = fopen("/dev/tty", "r+");
    if (!tty) return false;
    fputs(question, tty);
    fflush(tty);
    char line[16] = "";
    bool yes = fgets(line, sizeof line, tty) && (line[0] == 'y' || line[0] == 'Y');
    fclose(tty);
    return yes;
}

/* friend add on the local network: the stranger introduces themselves, the user
 * compares the fingerprint, then the request goes to their device directly. */
static int friend_add_nearby(pt_ctx *ctx, const char *name, const char *note, const char *expect, bool yes)
{
    pt_stranger *v;
    size_t n, at = 0, hits = 0;
    int rc = pt_lan_strangers(ctx, 2000, &v, &n);
    if (rc) return pt_cli_report(ctx, rc, "friend add");
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(v[i].name, name) == 0) at = i, hits++;
    if (hits == 0) {
        pt_free(v);
        return pt_cli_fail(PT_EXIT_NOTFOUND, "no one nearby introduced themselves as '%s' (their packtrack must be "
                                             "running with --lan: chat, or recv --wait)", name);
    }
    if (hits > 1) {
        for (size_t i = 0; i < n; i++)
            if (strcasecmp(v[i].name, name) == 0) fprintf(stderr, "  %s at %s: %s\n", shown(v[i].name), v[i].addr, v[i].fingerprint);
        pt_free(v);
        return pt_cli_fail(PT_EXIT_FAIL, "several devices nearby call themselves '%s'; nothing was sent", name);
    }
    fprintf(stderr, "%s is nearby at %s. Their identity fingerprint:\n  %s\n"
                    "Compare it with what %s's own device shows (packtrack whoami).\n",
            shown(v[at].name), v[at].addr, v[at].fingerprint, shown(v[at].name));
    if (expect && !same_fingerprint(expect, v[at].fingerprint)) {
        pt_free(v);
        return pt_cli_fail(PT_EXIT_FAIL, "the fingerprint differs from --expect: nothing was sent");
    }
    if (!expect && !yes && !confirm_on_tty("Is it the same? [y/N] ")) {
        pt_free(v);
        return pt_cli_fail(PT_EXIT_FAIL, "not confirmed (no terminal? use --expect FP or --yes): nothing was sent");
    }
    rc = pt_lan_friend_request(ctx, v[at].user_id, note);
    pt_free(v);
    if (rc) return pt_cli_report(ctx, rc, "friend add");
    fprintf(stderr, "packtrack: friend request sent to %s directly\n", name);
    return 0;
}

static int cmd_friend(pt_cli *cli, pt_ctx *ctx)
{
    if (cli->argc < 2) return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack friend add|accept|deny NAME | friend list");
    const char *sub = cli->argv[1];
    int rc;
    if (strcmp(sub, "list") == 0) {
        pt_contact *c;
        size_t n;
        pt_nearby *near = NULL;
        size_t nnear = 0;
        if ((rc = connect_or_lan(cli, ctx)) != 0) return rc;
        /* on the local network, friends whose devices answer are "nearby" */
        if (pt_lan_active(ctx) && pt_lan_scan(ctx, 1000) == 0 && pt_nearby_list(ctx, &near, &nnear) != 0) nnear = 0;
        if ((rc = pt_contacts(ctx, &c, &n)) != 0) {
            pt_free(near);
            return pt_cli_report(ctx, rc, "friend list");
        }
        for (size_t i = 0; i < n; i++) {
            const char *st = c[i].state == PT_CONTACT_STATE_FRIEND ? pt_cli_status_name(c[i].status) : state_name(c[i].state);
            for (size_t k = 0; k < nnear; k++)
                if (near[k].kind == PT_NEARBY_FRIEND && strcmp(near[k].name, c[i].name) == 0 &&
                    c[i].state == PT_CONTACT_STATE_FRIEND && !pt_connected(ctx))
                    st = "nearby";
            printf("%s\t%s\t%s\t%s\n", shown(c[i].name), st,
                   c[i].key_changed ? "KEY CHANGED" : c[i].verified ? "verified" : "unverified",
                   state_name(c[i].state));
        }
        pt_free(c);
        pt_free(near);
        return 0;
    }
    if (cli->argc < 3) return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack friend %s NAME", sub);
    const char *name = cli->argv[2];
    if (strcmp(sub, "add") == 0) {
        const char *note = NULL, *expect = NULL;
        bool yes = false, nearby = false;
        for (int i = 3; i < cli->argc; i++) {
            if (strcmp(cli->argv[i], "--note") == 0 && i + 1 < cli->argc) note = cli->argv[++i];
            else if (strcmp(cli->argv[i], "--expect") == 0 && i + 1 < cli->argc) expect = cli->argv[++i];
            else if (strcmp(cli->argv[i], "--yes") == 0) yes = true;
            else if (strcmp(cli->argv[i], "--nearby") == 0) nearby = true;
            else return pt_cli_fail(PT_EXIT_USAGE,
                                    "usage: packtrack friend add NAME [--note TEXT] [--nearby [--expect FP | --yes]]");
        }
        if (nearby && cli->lan == 0) return pt_cli_fail(PT_EXIT_USAGE, "--nearby needs the local network (not --no-lan)");
        if (nearby) cli->lan = 1;
        if ((rc = connect_or_lan(cli, ctx)) != 0) return rc;
        if (nearby || (!pt_connected(ctx) && pt_lan_active(ctx)))
            return friend_add_nearby(ctx, name, note, expect, yes);
        rc = pt_friend_add(ctx, name, note);
    } else if (cli->argc != 3) {
        return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack friend %s NAME", sub);
    } else if (strcmp(sub, "accept") == 0) {
        if ((rc = connect_or_lan(cli, ctx)) != 0) return rc;
        rc = pt_friend_accept(ctx, name);
    } else if (strcmp(sub, "deny") == 0) {
        rc = pt_friend_deny(ctx, name);
    } else {
        return pt_cli_fail(PT_EXIT_USAGE, "unknown 'friend %s'; use add, accept, deny or list", sub);
    }
    if (rc) return pt_cli_report(ctx, rc, "friend");
    return 0;
}

static int cmd_safety(pt_cli *cli, pt_ctx *ctx)
{
    int rc = need_args(cli, 1, 2, "safety NAME [--verified]");
    if (rc) return rc;
    bool mark = cli->argc == 3 && strcmp(cli->argv[2], "--verified") == 0;
    if (cli->argc == 3 && !mark) return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack safety NAME [--verified]");
    char sn[PT_SAFETY_MAX];
    if ((rc = pt_contact_safety_number(ctx, cli->argv[1], sn)) != 0) return pt_cli_report(ctx, rc, "safety");
    printf("%s\n", sn);
    if (mark && (rc = pt_contact_verify(ctx, cli->argv[1])) != 0) return pt_cli_report(ctx, rc, "safety --verified");
    return 0;
}

static bool ask_yes(const char *question)
{
    FILE *tty = fopen("/dev/tty", "r+");
    if (!tty) return false;
    fprintf(tty, "%s [y/N] ", question);
    fflush(tty);
    char line[16] = "";
    bool yes = fgets(line, sizeof line, tty) && (line[0] == 'y' || line[0] == 'Y');
    fclose(tty);
    return yes;
}

static int cmd_verify(pt_cli *cli, pt_ctx *ctx)
{
    int rc = need_args(cli, 1, 2, "verify NAME [--yes]");
    if (rc) return rc;
    bool yes = cli->argc == 3 && strcmp(cli->argv[2], "--yes") == 0;
    if (cli->argc == 3 && !yes) return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack verify NAME [--yes]");
    const char *name = cli->argv[1];
    char sn[PT_SAFETY_MAX], qr[PT_SAFETY_QR_MAX];
    if ((rc = pt_contact_safety_number(ctx, name, sn)) != 0 || (rc = pt_contact_safety_qr(ctx, name, qr)) != 0)
        return pt_cli_report(ctx, rc, "verify");
    printf("Safety number with %s (the same on both sides):\n\n    %s\n\n", name, sn);
    pt_cli_print_qr(stdout, qr);
    printf("\nCompare it with what %s sees (in person, or on a call you trust), or scan the code.\n", name);
    fflush(stdout);
    if (!yes && !ask_yes("Do the numbers match?")) {
        fprintf(stderr, "packtrack: not verified; nothing changed\n");
        return PT_EXIT_FAIL;
    }
    if ((rc = pt_contact_verify(ctx, name)) != 0) return pt_cli_report(ctx, rc, "verify");
    printf("%s is verified\n", name);
    return 0;
}

static int cmd_trust(pt_cli *cli, pt_ctx *ctx)
{
    int rc = need_args(cli, 1, 1, "trust NAME");
    if (rc) return rc;
    if ((rc = pt_contact_trust(ctx, cli->argv[1])) != 0) return pt_cli_report(ctx, rc, "trust");
    printf("%s's current keys are accepted (unverified; 'packtrack verify %s' to compare safety numbers)\n",
           cli->argv[1], cli->argv[1]);
    return 0;
}

static int cmd_receipts(pt_cli *cli, pt_ctx *ctx)
{
    int rc = need_args(cli, 0, 1, "receipts [on|off]");
    if (rc) return rc;
    if (cli->argc == 2) {
        int on = strcmp(cli->argv[1], "on") == 0;
        if (!on && strcmp(cli->argv[1], "off") != 0) return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack receipts [on|off]");
        if ((rc = pt_set_read_receipts(ctx, on)) != 0) return pt_cli_report(ctx, rc, "receipts");
    }
    printf("read receipts %s\n", pt_get_read_receipts(ctx) ? "on" : "off");
    return 0;
}

static int cmd_typing(pt_cli *cli, pt_ctx *ctx)
{
    int rc = need_args(cli, 0, 1, "typing [on|off]");
    if (rc) return rc;
    if (cli->argc == 2) {
        int on = strcmp(cli->argv[1], "on") == 0;
        if (!on && strcmp(cli->argv[1], "off") != 0) return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack typing [on|off]");
        if ((rc = pt_set_typing_notifications(ctx, on)) != 0) return pt_cli_report(ctx, rc, "typing");
    }
    printf("typing notifications %s\n", pt_get_typing_notifications(ctx) ? "on" : "off");
    return 0;
}

int pt_cli_lan(pt_cli *cli, pt_ctx *ctx, int server_rc)
{
    bool want = cli->lan == 1 || (cli->lan == -1 && (server_rc == PT_ERR_OFFLINE || server_rc == PT_ERR_TIMEOUT));
    if (!want || pt_lan_active(ctx)) return 0;
    int rc = pt_lan_start(ctx, cli->discovery_port);
    if (rc == 0) return 0;
    if (cli->lan == 1) return pt_cli_report(ctx, rc, "--lan");
    return 0; /* auto: without the local network we go on as before */
}

/* send, recv and chat: the server, else (or with --lan also) the local network */
static int connect_or_lan(pt_cli *cli, pt_ctx *ctx)
{
    int rc = cli->lan == 0 ? 0 : pt_connect(ctx);
    return pt_cli_lan(cli, ctx, rc);
}

static int cmd_send(pt_cli *cli, pt_ctx *ctx)
{
    int rc = need_args(cli, 2, 2, "send NAME TEXT");
    if (rc) return rc;
    if ((rc = connect_or_lan(cli, ctx)) != 0) return rc;
    char id[PT_ID_HEX_LEN];
    rc = pt_send(ctx, cli->argv[1], cli->argv[2], id);
    if (rc) return pt_cli_report(ctx, rc, "send");
    printf("%s\n", id);
    return 0;
}

/* s as a JSON string, ASCII control characters, DEL and C1 escaped (and U+2028/U+2029,
 * which JavaScript took as line ends); an invalid byte is U+FFFD. */
static void print_json_string(const char *s)
{
    putchar('"');
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    size_t len = strlen(s);
    while (len) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(p, (utf8proc_ssize_t)len, &c);
        if (k <= 0) {
            c = 0xFFFD;
            k = 1;
        }
        switch (c) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        default:
            if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0x2028 || c == 0x2029 || c == 0xFFFD)
                printf("\\u%04x", (unsigned)c);
            else
                fwrite(p, 1, (size_t)k, stdout);
        }
        p += k;
        len -= (size_t)k;
    }
    putchar('"');
}

static void format_time(char *out, size_t cap, int64_t ms, bool iso)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (iso) {
        gmtime_r(&t, &tm);
        size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(out + n, cap - n, ".%03dZ", (int)(ms % 1000));
    } else {
        localtime_r(&t, &tm);
        strftime(out, cap, "%Y-%m-%d %H:%M:%S", &tm);
    }
}

/* A text's second and later lines, under the first's text and never at the margin */
#define TEXT_INDENT "    "

static void print_messages(const pt_message *m, size_t n, bool json)
{
    for (size_t i = 0; i < n; i++) {
        char t[40];
        format_time(t, sizeof t, m[i].time_ms, json);
        static const char *const why[] = {"", "unknown session or changed key", "corrupted", "corrupted",
                                          "could not decrypt"};
        const char *reason = m[i].undecryptable && m[i].code >= 1 && m[i].code <= 4 ? why[m[i].code] : "unreadable";
        if (json) {
            fputs("{\"id\":", stdout);
            print_json_string(m[i].id);
            fputs(",\"from\":", stdout);
            print_json_string(m[i].from);
            fputs(",\"to\":", stdout);
            print_json_string(m[i].to);
            fputs(",\"group\":", stdout);
            print_json_string(m[i].group);
            fputs(",\"time\":", stdout);
            print_json_string(t);
            fputs(",\"text\":", stdout);
            print_json_string(m[i].text);
            if (m[i].undecryptable) {
                fputs(",\"undecryptable\":true,\"reason\":", stdout);
                print_json_string(reason);
            }
            if (m[i].outgoing) {
                static const char *const states[] = {"queued", "stored", "delivered", "read", "failed"};
                fputs(",\"state\":", stdout);
                print_json_string(m[i].delivery <= PT_DELIVERY_FAILED ? states[m[i].delivery] : "unknown");
            }
            fputs("}\n", stdout);
        } else if (m[i].undecryptable) {
            printf("[%s] %s%s%s%s: <a message that could not be read: %s; %s's device was asked to send it again>\n",
                   t, m[i].group[0] ? "#" : "", shown(m[i].group), m[i].group[0] ? " " : "", shown(m[i].from), reason,
                   shown(m[i].from));
        } else if (m[i].group[0]) {
            printf("[%s] #%s <%s> %s\n", t, shown(m[i].group), shown(m[i].from), shown_as(m[i].text, TEXT_INDENT));
        } else if (m[i].outgoing) {
            printf("[%s] you -> %s: %s\n", t, shown(m[i].to), shown_as(m[i].text, TEXT_INDENT));
        } else {
            printf("[%s] %s: %s\n", t, shown(m[i].from), shown_as(m[i].text, TEXT_INDENT));
        }
    }
}

static int cmd_recv(pt_cli *cli, pt_ctx *ctx)
{
    int wait_s = 0;
    bool json = false;
    for (int i = 1; i < cli->argc; i++) {
        char *end;
        if (strcmp(cli->argv[i], "--json") == 0) json = true;
        else if (strcmp(cli->argv[i], "--wait") == 0 && i + 1 < cli->argc &&
                 (wait_s = (int)strtol(cli->argv[++i], &end, 10), *end == 0) && wait_s >= 0 && wait_s <= 86400)
            continue;
        else return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack recv [--wait SECONDS] [--json]");
    }
    int rc = connect_or_lan(cli, ctx);
    if (rc) return rc;
    rc = pt_sync(ctx, wait_s * 1000);
    int sync_rc = rc;
    pt_message *m;
    size_t n;
    if ((rc = pt_unseen(ctx, &m, &n)) != 0) return pt_cli_report(ctx, rc, "recv");
    print_messages(m, n, json);
    fflush(stdout);
    rc = pt_mark_seen(ctx, m, n);
    pt_free(m);
    if (rc) return pt_cli_report(ctx, rc, "recv");
    if (sync_rc) return pt_cli_report(ctx, sync_rc, "recv (showing what this device already had)");
    return 0;
}


static int cmd_history(pt_cli *cli, pt_ctx *ctx)
{
    const char *conv = NULL, *search = NULL;
    bool json = false;
    long limit = 100;
    for (int i = 1; i < cli->argc; i++) {
        char *end;
        if (strcmp(cli->argv[i], "--json") == 0) json = true;
        else if (strcmp(cli->argv[i], "--search") == 0 && i + 1 < cli->argc) search = cli->argv[++i];
        else if (strcmp(cli->argv[i], "--limit") == 0 && i + 1 < cli->argc &&
                 (limit = strtol(cli->argv[++i], &end, 10), *end == 0) && limit > 0 && limit <= 1000000)
            continue;
        else if (!conv && cli->argv[i][0] != '-') conv = cli->argv[i];
        else return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack history NAME|#GROUP [--search TEXT] [--limit N] [--json]");
    }
    if (!conv) return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack history NAME|#GROUP [--search TEXT] [--limit N] [--json]");
    pt_message *m;
    size_t n;
    int rc = search ? pt_search(ctx, conv, search, (size_t)limit, &m, &n) : pt_history(ctx, conv, (size_t)limit, &m, &n);
    if (rc) return pt_cli_report(ctx, rc, "history");
    print_messages(m, n, json);
    fflush(stdout);
    pt_free(m);
    return 0;
}

static int cmd_group(pt_cli *cli, pt_ctx *ctx)
{
    if (cli->argc < 3) return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack group create NAME MEMBER... | send NAME TEXT | members NAME");
    const char *sub = cli->argv[1], *name = cli->argv[2];
    int rc;
    if (strcmp(sub, "create") == 0) {
        if (cli->argc < 4) return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack group create NAME MEMBER...");
        if ((rc = pt_group_create(ctx, name, (const char *const *)cli->argv + 3, (size_t)cli->argc - 3)) != 0)
            return pt_cli_report(ctx, rc, "group create");
        return 0;
    }
    if (strcmp(sub, "send") == 0) {
        if (cli->argc != 4) return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack group send NAME TEXT");
        char id[PT_ID_HEX_LEN];
        if ((rc = pt_group_send(ctx, name, cli->argv[3], id)) != 0) return pt_cli_report(ctx, rc, "group send");
        printf("%s\n", id);
        return 0;
    }
    if (strcmp(sub, "members") == 0) {
        if (cli->argc != 3) return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack group members NAME");
        pt_user *u;
        size_t n;
        if ((rc = pt_group_members(ctx, name, &u, &n)) != 0) return pt_cli_report(ctx, rc, "group members");
        for (size_t i = 0; i < n; i++) printf("%s\n", shown(u[i].name));
        pt_free(u);
        return 0;
    }
    return pt_cli_fail(PT_EXIT_USAGE, "unknown 'group %s'; use create, send or members", sub);
}

static int cmd_device(pt_cli *cli, pt_ctx *ctx)
{
    if (cli->argc < 2) return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack device link | list | revoke ID");
    const char *sub = cli->argv[1];
    int rc;
    if (strcmp(sub, "link") == 0 && cli->argc == 2) {
        char code[PT_LINK_CODE_MAX];
        if ((rc = pt_device_link_code(ctx, code)) != 0) return pt_cli_report(ctx, rc, "device link");
        printf("%s\n", code);
        fprintf(stderr, "On the new device run: packtrack --home DIR init --link %s\n"
                        "The code works once, for 10 minutes. Keep it secret: it carries your identity.\n", code);
        return 0;
    }
    if (strcmp(sub, "list") == 0 && cli->argc == 2) {
        pt_device *d;
        size_t n;
        if ((rc = pt_devices(ctx, &d, &n)) != 0) return pt_cli_report(ctx, rc, "device list");
        for (size_t i = 0; i < n; i++) printf("%s\t%s%s\n", d[i].id, d[i].fingerprint, d[i].this_device ? "\t(this device)" : "");
        pt_free(d);
        return 0;
    }
    if (strcmp(sub, "revoke") == 0 && cli->argc == 3) {
        if ((rc = pt_device_revoke(ctx, cli->argv[2])) != 0) return pt_cli_report(ctx, rc, "device revoke");
        return 0;
    }
    return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack device link | list | revoke ID");
}

/* chat opens the profile, or (none in --home yet) creates one inside the UI. Without
 * --password-file or $PACKTRACK_PASSWORD the password is asked for only when there is
 * a profile: an empty password probes, as pt_open() answers PT_ERR_NOT_FOUND before
 * it derives a key (with a profile, the probe costs one wasted derivation). */
static int cmd_chat_start(pt_cli *cli)
{
    int rc = need_args(cli, 0, 1, "chat [NAME]");
    if (rc) return rc;
    const char *peer = cli->argc == 2 ? cli->argv[1] : NULL;
    bool given = cli->password_file || (getenv("PACKTRACK_PASSWORD") && *getenv("PACKTRACK_PASSWORD"));
    char *pw = given ? pt_cli_password(cli, "Password: ", false, "PACKTRACK_PASSWORD", cli->password_file) : NULL;
    if (given && !pw) return PT_EXIT_PROFILE;
    pt_err err;
    pt_ctx *ctx = pt_open(&cli->opt, pw ? pw : "", &err);
    if (!ctx && err == PT_ERR_NOT_FOUND) {
        rc = pt_cli_chat_first_run(&cli->opt, pw, peer);
        pt_cli_password_free(pw);
        return rc;
    }
    pt_cli_password_free(pw);
    if (!ctx && !given) ctx = pt_cli_open(cli, &rc);
    else if (!ctx) rc = pt_cli_report(NULL, err, "cannot open the profile");
    if (!ctx) return rc;
    if ((rc = connect_or_lan(cli, ctx)) != 0) {
        pt_close(ctx);
        return rc;
    }
    rc = pt_cli_chat(ctx, peer);
    pt_close(ctx);
    return rc;
}

static const char *obfs_text(int f, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s%s%s", f & 1 ? "plain," : "", f & 2 ? "mse," : "", f & 8 ? "pt-obfs," : "",
             f & 4 ? "required," : "");
    size_t n = strlen(out);
    if (n) out[n - 1] = 0;
    return out;
}

static int cmd_nearby(pt_cli *cli, pt_ctx *ctx)
{
    int wait_s = 2;
    bool json = false;
    for (int i = 1; i < cli->argc; i++) {
        char *end;
        if (strcmp(cli->argv[i], "--json") == 0) json = true;
        else if (strcmp(cli->argv[i], "--wait") == 0 && i + 1 < cli->argc &&
                 (wait_s = (int)strtol(cli->argv[++i], &end, 10), *end == 0) && wait_s >= 0 && wait_s <= 3600)
            continue;
        else return pt_cli_fail(PT_EXIT_USAGE, "usage: packtrack nearby [--wait SECONDS] [--json]");
    }
    if (cli->lan == 0) return pt_cli_fail(PT_EXIT_USAGE, "nearby needs the local network (not --no-lan)");
    (void)pt_connect(ctx); /* with a server, friends it knows an address of are listed too */
    int rc = pt_lan_start(ctx, cli->discovery_port);
    if (rc == 0) rc = pt_lan_scan(ctx, wait_s * 1000);
    pt_nearby *v;
    size_t n;
    if (rc == 0) rc = pt_nearby_list(ctx, &v, &n);
    if (rc) return pt_cli_report(ctx, rc, "nearby");
    static const char *const kinds[] = {"", "server", "friend", "stranger"};
    for (size_t i = 0; i < n; i++) {
        char o[64];
        if (json) {
            printf("{\"kind\":\"%s\",\"name\":", kinds[v[i].kind]);
            print_json_string(v[i].name);
            printf(",\"addr\":\"%s\",\"port\":%u,\"fingerprint\":\"%s\",\"obfs\":%d,\"connected\":%d}\n",
                   v[i].addr, v[i].port, v[i].fingerprint, v[i].obfs, v[i].connected);
        } else if (v[i].kind == PT_NEARBY_SERVER) {
            printf("server   %s:%u  %s  (%s)\n", v[i].addr, v[i].port, v[i].fingerprint, obfs_text(v[i].obfs, o, sizeof o));
        } else if (v[i].kind == PT_NEARBY_FRIEND) {
            printf("friend   %s  %s:%u  device %.23s%s\n", shown(v[i].name), v[i].addr, v[i].port, v[i].fingerprint,
                   v[i].connected ? "  (connected)" : "");
        } else {
            printf("someone nearby  %s\n", v[i].addr);
        }
    }
    if (!json && n == 0) printf("nothing nearby answered in %d s\n", wait_s);
    pt_free(v);
    return 0;
}

static int cmd_passwd(pt_cli *cli, pt_ctx *ctx)
{
    int rc = need_args(cli, 0, 0, "passwd");
    if (rc) return rc;
    char *pw = pt_cli_password(cli, "New password: ", true, "PACKTRACK_NEW_PASSWORD", getenv("PACKTRACK_NEW_PASSWORD_FILE"));
    if (!pw) return PT_EXIT_PROFILE;
    rc = pt_change_password(ctx, pw);
    pt_cli_password_free(pw);
    if (rc) return pt_cli_report(ctx, rc, "passwd");
    fprintf(stderr, "packtrack: the store is sealed under the new password\n");
    return 0;
}

typedef struct command {
    const char *name;
    int (*run)(pt_cli *cli, pt_ctx *ctx); /* NULL ctx for commands that open nothing */
    bool connect;                         /* needs the server before running */
} command;

static const command commands[] = {
    {"whoami", cmd_whoami, false}, {"status", cmd_status, false}, {"list", cmd_list, true},
    {"friend", cmd_friend, false}, {"safety", cmd_safety, false}, {"send", cmd_send, false},
    {"recv", cmd_recv, false},     {"group", cmd_group, true},    {"device", cmd_device, true},
    {"passwd", cmd_passwd, false}, {"verify", cmd_verify, true}, {"trust", cmd_trust, true},
    {"history", cmd_history, false}, {"nearby", cmd_nearby, false}, {"receipts", cmd_receipts, false}, {"typing", cmd_typing, false}, /* chat: cmd_chat_start() */
};

int main(int argc, char **argv)
{
    pt_cli cli = {.prog = argv[0], .lan = -1};
    int verbose = 0;
    static const struct option opts[] = {
        {"home", required_argument, NULL, 'H'},          {"server", required_argument, NULL, 's'},
        {"password-file", required_argument, NULL, 'p'}, {"fingerprint", required_argument, NULL, 'f'},
        {"timeout", required_argument, NULL, 't'},       {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},                {"version", no_argument, NULL, 'V'},
        {"obfuscate", required_argument, NULL, 'O'},     {"network-key", required_argument, NULL, 'K'},
        {"lan", no_argument, NULL, 'L'},                 {"no-lan", no_argument, NULL, 'N'},
        {"discovery-port", required_argument, NULL, 'D'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "+vhV", opts, NULL)) != -1) {
        switch (c) {
        case 'H': cli.opt.home = optarg; break;
        case 's': cli.opt.server = optarg; break;
        case 'p': cli.password_file = optarg; break;
        case 'f': cli.opt.server_fingerprint = optarg; break;
        case 't': {
            char *end;
            long s = strtol(optarg, &end, 10);
            if (*end || s < 1 || s > 3600) return pt_cli_fail(PT_EXIT_USAGE, "--timeout takes 1-3600 seconds");
            cli.opt.timeout_ms = (int)s * 1000;
            break;
        }
        case 'O':
            if (strcmp(optarg, "off") && strcmp(optarg, "mse") && strcmp(optarg, "mse-prefer") &&
                strcmp(optarg, "pt-obfs"))
                return pt_cli_fail(PT_EXIT_USAGE, "--obfuscate takes off, mse, mse-prefer or pt-obfs");
            cli.opt.obfuscation = optarg;
            break;
        case 'K': {
            size_t n = strlen(optarg);
            if (n % 2 || n < 32 || n > 128 || strspn(optarg, "0123456789abcdefABCDEF") != n)
                return pt_cli_fail(PT_EXIT_USAGE, "--network-key takes 32 to 128 hex digits");
            cli.opt.network_key = optarg;
            break;
        }
        case 'L': cli.lan = 1; break;
        case 'N': cli.lan = 0; break;
        case 'D': {
            char *end;
            long p = strtol(optarg, &end, 10);
            if (*end || p < 1 || p > 65535) return pt_cli_fail(PT_EXIT_USAGE, "--discovery-port takes 1-65535");
            cli.discovery_port = (uint16_t)p;
            break;
        }
        case 'v': verbose = 1; break;
        case 'h': fputs(usage_text, stdout); return 0;
        case 'V': printf("packtrack %s\n", pt_version()); return 0;
        default: fputs(usage_text, stderr); return PT_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fputs(usage_text, stderr);
        return PT_EXIT_USAGE;
    }
    if (!verbose) setenv("PT_LOG_LEVEL", "error", 0);
    else setenv("PT_LOG_LEVEL", "debug", 1);
    if (pt_init() != 0) return pt_cli_fail(PT_EXIT_FAIL, "cannot initialise the crypto libraries");
    cli.argc = argc - optind;
    cli.argv = argv + optind;
    const char *name = cli.argv[0];
    if (strcmp(name, "init") == 0) return cmd_init(&cli);
    if (strcmp(name, "chat") == 0) return cmd_chat_start(&cli);
    if (strcmp(name, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
        if (strcmp(commands[i].name, name) != 0) continue;
        int code;
        pt_ctx *ctx = pt_cli_open(&cli, &code);
        if (!ctx) return code;
        int rc = commands[i].connect ? pt_connect(ctx) : 0;
        if (rc) code = pt_cli_report(ctx, rc, name);
        else code = commands[i].run(&cli, ctx);
        pt_close(ctx);
        return code;
    }
    fprintf(stderr, "packtrack: unknown command '%s'\n\n%s", name, usage_text);
    return PT_EXIT_USAGE;
}
