/*
 * packtrack, the command-line client: shared declarations of the command files.
 * The CLI uses only the public API (include/packtrack.h).
 */
#ifndef PT_CLI_H
#define PT_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "packtrack.h"

/* Exit codes: documented in docs/packtrack.1.md and `packtrack --help`. */
enum {
    PT_EXIT_OK = 0,
    PT_EXIT_FAIL = 1,     /* the operation failed (the message says why) */
    PT_EXIT_USAGE = 2,    /* bad command line */
    PT_EXIT_PROFILE = 3,  /* no profile, wrong password, damaged store */
    PT_EXIT_OFFLINE = 4,  /* the server is not reachable (a message is kept for later) */
    PT_EXIT_NOTFOUND = 5, /* no such user, friend, group or device */
};

typedef struct pt_cli {
    pt_options opt;
    const char *password_file;
    const char *prog;
    int argc;     /* the command's arguments (argv[0] is the command) */
    char **argv;
    int lan;      /* --lan 1, --no-lan 0, else -1: on when no server answers */
    uint16_t discovery_port; /* --discovery-port; 0: 7001 */
} pt_cli;

/* Turns the local network on as --lan / --no-lan say (auto: when the server did not
 * answer, i.e. server_rc is PT_ERR_OFFLINE or PT_ERR_TIMEOUT). Returns 0 or an exit code. */
int pt_cli_lan(pt_cli *cli, pt_ctx *ctx, int server_rc);

/* Prints "packtrack: MSG" to stderr and returns the exit code for err. */
int pt_cli_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Reports the last error of ctx (or of the last open) and maps it to an exit code. */
int pt_cli_report(const pt_ctx *ctx, int err, const char *what);
/* Opens the profile (asking for the password as documented); NULL after reporting. */
pt_ctx *pt_cli_open(pt_cli *cli, int *exit_code);
/* The password: --password-file, else $PACKTRACK_PASSWORD, else a prompt without echo.
 * confirm asks twice (for a new password). The result is freed with pt_cli_password_free. */
char *pt_cli_password(const pt_cli *cli, const char *prompt, bool confirm, const char *env_name,
                      const char *file);
void pt_cli_password_free(char *pw);
const char *pt_cli_status_name(pt_status s);

/* s (UTF-8 from the network or the store) made safe to print on a terminal: an invalid
 * byte, a control character, a surrogate, an unassigned code point and a bidi override
 * or isolate (U+202A-U+202E, U+2066-U+2069) become U+FFFD, so nothing in it can move
 * the cursor, send the terminal a command or reorder what follows it on the line. With
 * `indent`, a line break (newline, U+2028, U+2029) is a newline followed by indent (a
 * text's later lines never start at the margin, where each message starts) and a tab
 * is kept; without, both become U+FFFD (a name in a one-line, tab-separated listing).
 * malloc'd; NULL when out of memory. (src/cli/text.c) */
char *pt_cli_printable(const char *s, const char *indent);

/* Prints text as a QR code made of half blocks (libqrencode); -1 if it does not fit. */
int pt_cli_print_qr(FILE *f, const char *text);
/* The same QR code as rows of UTF-8 half blocks, each ended by '\n', with `quiet`
 * light modules around it; *rows and *cols get its size in character cells.
 * malloc'd; NULL when text does not fit in a QR code. */
char *pt_cli_qr_rows(const char *text, int quiet, int *rows, int *cols);

/* The terminal UI (src/cli/tui.c): `packtrack chat [NAME]`. */
int pt_cli_chat(pt_ctx *ctx, const char *name);
/* The terminal UI for a home without a profile: creates one first (src/cli/firstrun.c),
 * with password when given, else asked twice in the UI; then chats as pt_cli_chat(). */
int pt_cli_chat_first_run(const pt_options *o, const char *password, const char *name);

#endif
