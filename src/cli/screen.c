/*
 * Drawing for the terminal UI. curses places a cell by the C library's wcwidth() of
 * its first character; for most clusters that is also libutf8proc's width and the
 * cluster goes into one cell with its combining characters. Where they differ (a
 * flag is two one-column letters to wcwidth(), a ZWJ family three emoji, a character
 * newer than the C library is unknown) curses would lose count of the columns and
 * every later write on the row would land off by the difference. Those clusters are
 * drawn as blanks of their width, so curses' model stays exact, and written over the
 * blanks after each refresh ("overlays"), straight to the terminal.
 */
#include <langinfo.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tui.h"

#define DOTTED_CIRCLE 0x25CC /* the base a lone combining mark is shown on */

typedef struct cell_overlay {
    int y, x;
    attr_t attr;
    char text[64]; /* the cluster in UTF-8 (a longer one is cut at a code point) */
} cell_overlay;

static struct {
    cell_overlay *v, *old; /* this frame's and the last frame's */
    size_t n, nold, cap, capold;
} ov;

static void cell_overlay_add(int y, int x, attr_t attr, const wchar_t *s, size_t n)
{
    if (ov.n == ov.cap) {
        size_t cap = ov.cap ? 2 * ov.cap : 64;
        cell_overlay *v = realloc(ov.v, cap * sizeof *v);
        if (!v) return; /* the blanks stay blank */
        ov.v = v;
        ov.cap = cap;
    }
    cell_overlay *o = &ov.v[ov.n];
    char *u = pt_tui_utf8(s, n);
    if (!u) return;
    size_t len = strlen(u), cut = len < sizeof o->text ? len : sizeof o->text - 1;
    while (cut < len && cut > 0 && ((unsigned char)u[cut] & 0xC0) == 0x80) cut--;
    memcpy(o->text, u, cut);
    o->text[cut] = 0;
    free(u);
    o->y = y;
    o->x = x;
    o->attr = attr;
    ov.n++;
}

/* One cluster s[0..n) of `width` columns at (y, x). */
static void put_cluster(int y, int x, const wchar_t *s, size_t n, int width, attr_t attr)
{
    wchar_t cell[CCHARW_MAX + 1];
    size_t k = 0;
    if (wcwidth(s[0]) == 0 && n < CCHARW_MAX) cell[k++] = DOTTED_CIRCLE;
    bool fits_one_cell = n + k <= CCHARW_MAX;
    for (size_t i = 0; i < n && fits_one_cell; i++) {
        /* curses keeps only zero-width characters after the first one of a cell */
        if ((k > 0 && wcwidth(s[i]) != 0) || (k == 0 && wcwidth(s[i]) != width)) fits_one_cell = false;
        cell[k++] = s[i];
    }
    cchar_t cc;
    if (fits_one_cell) {
        cell[k] = 0;
        if (setcchar(&cc, cell, attr, (short)PAIR_NUMBER(attr), NULL) == OK) {
            mvadd_wch(y, x, &cc);
            return;
        }
    }
    for (int i = 0; i < width; i++) mvaddch(y, x + i, ' ' | attr);
    cell_overlay_add(y, x, attr, s, n);
}

int pt_tui_put(int y, int x, int maxw, const wchar_t *s, size_t n, attr_t attr)
{
    int used = 0;
    for (size_t i = 0; i < n;) {
        int cw;
        size_t j = pt_tui_cluster(s, n, i, &cw);
        if (used + cw > maxw) break;
        if (s[i] != L'\n') put_cluster(y, x + used, s + i, j - i, cw, attr);
        used += cw;
        i = j;
    }
    return used;
}

int pt_tui_put_utf8(int y, int x, int maxw, const char *s, attr_t attr)
{
    wchar_t *w = pt_tui_wide(s);
    if (!w) return 0;
    int used = pt_tui_put(y, x, maxw, w, wcslen(w), attr);
    free(w);
    return used;
}

int pt_tui_put_qr(int y, int x, int h, int w, const char *text)
{
    for (int quiet = 4; quiet >= 1; quiet = quiet > 2 ? 2 : quiet - 1) {
        int rows, cols;
        char *qr = pt_cli_qr_rows(text, quiet, &rows, &cols);
        if (!qr) return 0;
        if (rows <= h && cols <= w) {
            char *save = NULL;
            int r = 0;
            for (char *line = strtok_r(qr, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
                pt_tui_put_utf8(y + r++, x, w, line, A_NORMAL);
            free(qr);
            return rows;
        }
        free(qr);
    }
    return 0;
}

static int out_char(int c) { return putchar(c); }

static bool same_cell_overlay(const cell_overlay *a, const cell_overlay *b)
{
    return a->y == b->y && a->x == b->x && a->attr == b->attr && strcmp(a->text, b->text) == 0;
}

void pt_tui_present(void)
{
    /* a row that had an cell_overlay which is gone or moved is repainted whole: curses
     * thinks it shows blanks there and would not touch them */
    for (size_t i = 0; i < ov.nold; i++) {
        bool kept = false;
        for (size_t k = 0; k < ov.n && !kept; k++) kept = same_cell_overlay(&ov.old[i], &ov.v[k]);
        if (!kept) wredrawln(stdscr, ov.old[i].y, 1);
    }
    refresh();
    const char *cup = tigetstr("cup");
    if (ov.n && cup && cup != (char *)-1) {
        fflush(stdout); /* curses wrote its own buffer; ours follows */
        for (size_t i = 0; i < ov.n; i++) {
            fputs(tiparm(cup, ov.v[i].y, ov.v[i].x), stdout);
            vid_puts(ov.v[i].attr & ~A_COLOR, (short)PAIR_NUMBER(ov.v[i].attr), NULL, out_char);
            fputs(ov.v[i].text, stdout);
        }
        vid_puts(A_NORMAL, 0, NULL, out_char);
        int cy, cx;
        getyx(curscr, cy, cx);
        fputs(tiparm(cup, cy, cx), stdout); /* where curses believes the cursor is */
        fflush(stdout);
    }
    /* this frame's list becomes the old one; the next frame starts empty */
    cell_overlay *v = ov.old;
    size_t cap = ov.capold;
    ov.old = ov.v;
    ov.nold = ov.n;
    ov.capold = ov.cap;
    ov.v = v;
    ov.cap = cap;
    ov.n = 0;
}

SCREEN *pt_tui_screen_start(void)
{
    SCREEN *scr = newterm(NULL, stdout, stdin);
    if (!scr) return NULL;
    raw(); /* Ctrl-C and Ctrl-D arrive as keys: quitting always goes through endwin() */
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    set_escdelay(25);
    if (has_colors()) {
        start_color();
        use_default_colors();
        static const short fg[] = {[C_TITLE] = COLOR_CYAN, [C_ME] = COLOR_CYAN,      [C_THEM] = COLOR_GREEN,
                                   [C_READ] = COLOR_BLUE,  [C_FAIL] = COLOR_RED,     [C_ONLINE] = COLOR_GREEN,
                                   [C_BUSY] = COLOR_RED,   [C_AWAY] = COLOR_YELLOW,  [C_NOTICE] = COLOR_YELLOW,
                                   [C_WARN] = COLOR_RED};
        for (short i = 1; i < (short)(sizeof fg / sizeof *fg); i++) init_pair(i, fg[i], -1);
    }
    return scr;
}

bool pt_tui_utf8_locale(void)
{
    setlocale(LC_ALL, "");
    if (strcmp(nl_langinfo(CODESET), "UTF-8") == 0) return true;
    return setlocale(LC_CTYPE, "C.UTF-8") && strcmp(nl_langinfo(CODESET), "UTF-8") == 0;
}
