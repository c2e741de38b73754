/*
 * The terminal UI's internal interface: text (src/cli/text.c), drawing on the
 * curses screen (src/cli/screen.c), the first run (src/cli/firstrun.c) and the chat
 * itself (src/cli/tui.c). Text is kept as wchar_t arrays (decoded once, invalid bytes
 * replaced) because every layout decision is a count of columns over grapheme clusters.
 */
#ifndef PT_CLI_TUI_H
#define PT_CLI_TUI_H

#define NCURSES_WIDECHAR 1
#include <curses.h>
#include <stdbool.h>
#include <stddef.h>
#include <wchar.h>

#include "cli.h"

/* ---- text.c: UTF-8, grapheme clusters and their widths (libutf8proc) ---------------------- */

/* Decodes UTF-8 from the network, the store or the user: an invalid byte, a control
 * character (but newline), an unassigned code point and a bidi override or isolate
 * become U+FFFD, U+2028 and U+2029 a newline, tab a space, so nothing can move the
 * cursor or reorder the screen. Returns a malloc'd string, NULL when out of memory. */
wchar_t *pt_tui_wide(const char *s);
/* Encodes s[0..n) as UTF-8; malloc'd, NULL when out of memory. */
char *pt_tui_utf8(const wchar_t *s, size_t n);
/* The end of the grapheme cluster that starts at s[i] (i < n, i a cluster boundary)
 * and, in *width, its columns: the widest code point (utf8proc_charwidth), 2 for a
 * flag (a pair of regional indicators), at least 1 (a lone combining mark is shown
 * on a dotted circle) and at most 2. A newline is a cluster of its own. */
size_t pt_tui_cluster(const wchar_t *s, size_t n, size_t i, int *width);
/* Columns of s[0..n) (n a cluster boundary). */
int pt_tui_width(const wchar_t *s, size_t n);
/* How many characters of s[0..n) fit in maxw columns without cutting a cluster;
 * *used gets their columns. */
size_t pt_tui_fit(const wchar_t *s, size_t n, int maxw, int *used);
/* The cluster boundary at or after i, and the one before i (0 at the start). */
size_t pt_tui_next(const wchar_t *s, size_t n, size_t i);
size_t pt_tui_prev(const wchar_t *s, size_t n, size_t i);
/* Whether a typed character may go into the edit line (no controls, no unassigned). */
bool pt_tui_typable(wint_t c);

/* ---- screen.c: drawing ---------------------------------------------------------------------- */

/* Draws at most maxw columns of s[0..n) at (y, x) in attr; returns the columns used.
 * A cluster that curses would measure differently (flags, ZWJ sequences, characters
 * newer than the C library's tables) is drawn as blanks of its width and written over
 * them by pt_tui_present(), so curses' idea of every column stays true. */
int pt_tui_put(int y, int x, int maxw, const wchar_t *s, size_t n, attr_t attr);
int pt_tui_put_utf8(int y, int x, int maxw, const char *s, attr_t attr);
/* Draws the QR code of text with its top left corner at (y, x), in at most h rows and
 * w columns (the quiet zone shrinks to fit); returns the rows used, 0 when it does not fit. */
int pt_tui_put_qr(int y, int x, int h, int w, const char *text);
/* refresh(), then the clusters curses could not place. Call instead of refresh(). */
void pt_tui_present(void);
/* Starts curses on the terminal (raw, no echo, keypad, colours); NULL when it cannot. */
SCREEN *pt_tui_screen_start(void);
/* The UI needs a UTF-8 locale for widths and for talking to the terminal; C.UTF-8
 * when the environment names none. false: none available (ASCII marks are used). */
bool pt_tui_utf8_locale(void);

enum { C_TITLE = 1, C_ME, C_THEM, C_READ, C_FAIL, C_ONLINE, C_BUSY, C_AWAY, C_NOTICE, C_WARN };

/* ---- firstrun.c ----------------------------------------------------------------------------- */

/* On a started screen: asks for a username and (when password is NULL) a new password
 * twice without echo, creates the profile with progress and a clear message when the
 * server cannot be reached, then shows the user id, the fingerprint and its QR code.
 * Returns the open profile, NULL when the user gave up (q, Ctrl-C). */
pt_ctx *pt_tui_first_run(const pt_options *o, const char *password);

/* The QR text that identifies us: "packtrack:NAME:USERID:FINGERPRINT". */
void pt_tui_id_qr_text(const pt_ctx *ctx, char *out, size_t cap);

#endif
