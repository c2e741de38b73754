/*
 * Text for the terminal UI: decoding with replacement, and grapheme clusters with
 * their widths from libutf8proc's tables (not the C library's wcwidth(), which counts
 * a ZWJ family as three emoji and a flag as two letters).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tui.h"

#define REPLACEMENT 0xFFFD

static bool is_regional_indicator(wchar_t c) { return c >= 0x1F1E6 && c <= 0x1F1FF; }

/* Code points that must not reach the terminal as they are. */
static bool unprintable(utf8proc_int32_t c)
{
    if (c < 0 || c > 0x10FFFF) return true;
    utf8proc_category_t cat = utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CS || cat == UTF8PROC_CATEGORY_CN;
}

/* Bidi overrides and isolates (U+202A..U+202E, U+2066..U+2069): in someone else's
 * text they would reorder what follows them, on bidi-capable terminals even past the
 * text's end (a name shown after it reversed, a forged line). */
static bool is_bidi_control(utf8proc_int32_t c)
{
    return (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069);
}

/* Line and paragraph separators: new lines to the reader, not to the terminal. */
static bool is_line_separator(utf8proc_int32_t c) { return c == 0x2028 || c == 0x2029; }

wchar_t *pt_tui_wide(const char *s)
{
    size_t len = strlen(s), n = 0;
    wchar_t *w = malloc((len + 1) * sizeof *w);
    if (!w) return NULL;
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    while (len) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(p, (utf8proc_ssize_t)len, &c);
        if (k <= 0) { /* one bad byte is one replacement; decoding goes on after it */
            c = REPLACEMENT;
            k = 1;
        }
        if (c == '\t') c = ' ';
        else if (is_line_separator(c)) c = '\n';
        else if (c != '\n' && (unprintable(c) || is_bidi_control(c))) c = REPLACEMENT;
        w[n++] = (wchar_t)c;
        p += k;
        len -= (size_t)k;
    }
    w[n] = 0;
    return w;
}

char *pt_cli_printable(const char *s, const char *indent)
{
    size_t len = strlen(s), ilen = indent ? strlen(indent) : 0;
    /* each input byte gives at most 3 (U+FFFD), a newline 1 + ilen */
    char *out = malloc(len * (3 + ilen) + 1), *o = out;
    if (!out) return NULL;
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    while (len) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(p, (utf8proc_ssize_t)len, &c);
        if (k <= 0) { /* one bad byte is one replacement */
            c = REPLACEMENT;
            k = 1;
        }
        if (is_line_separator(c)) c = '\n';
        if (indent && c == '\n') {
            *o++ = '\n';
            memcpy(o, indent, ilen);
            o += ilen;
        } else {
            if ((!(indent && c == '\t') && unprintable(c)) || is_bidi_control(c)) c = REPLACEMENT;
            o += utf8proc_encode_char(c, (utf8proc_uint8_t *)o);
        }
        p += k;
        len -= (size_t)k;
    }
    *o = 0;
    return out;
}

char *pt_tui_utf8(const wchar_t *w, size_t n)
{
    char *out = malloc(n * 4 + 1), *p = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        utf8proc_int32_t c = (utf8proc_int32_t)w[i];
        if (!utf8proc_codepoint_valid(c)) c = REPLACEMENT;
        p += utf8proc_encode_char(c, (utf8proc_uint8_t *)p);
    }
    *p = 0;
    return out;
}

size_t pt_tui_cluster(const wchar_t *s, size_t n, size_t i, int *width)
{
    utf8proc_int32_t state = 0;
    int w = utf8proc_charwidth((utf8proc_int32_t)s[i]), ri = is_regional_indicator(s[i]);
    size_t j = i + 1;
    if (s[i] != L'\n')
        for (; j < n && s[j] != L'\n' &&
               !utf8proc_grapheme_break_stateful((utf8proc_int32_t)s[j - 1], (utf8proc_int32_t)s[j], &state);
             j++) {
            int cw = utf8proc_charwidth((utf8proc_int32_t)s[j]);
            if (cw > w) w = cw;
            ri += is_regional_indicator(s[j]);
        }
    if (ri >= 2) w = 2; /* a flag: emoji presentation, two columns wherever it shows as one */
    *width = w < 1 ? 1 : w > 2 ? 2 : w;
    return j;
}

int pt_tui_width(const wchar_t *s, size_t n)
{
    int w = 0, cw;
    for (size_t i = 0; i < n; w += cw) i = pt_tui_cluster(s, n, i, &cw);
    return w;
}

size_t pt_tui_fit(const wchar_t *s, size_t n, int maxw, int *used)
{
    int w = 0;
    size_t i = 0;
    while (i < n) {
        int cw;
        size_t j = pt_tui_cluster(s, n, i, &cw);
        if (w + cw > maxw) break;
        w += cw;
        i = j;
    }
    *used = w;
    return i;
}

size_t pt_tui_next(const wchar_t *s, size_t n, size_t i)
{
    int cw;
    size_t a = 0;
    while (a < i && a < n) a = pt_tui_cluster(s, n, a, &cw);
    return a < n ? a : n;
}

size_t pt_tui_prev(const wchar_t *s, size_t n, size_t i)
{
    int cw;
    size_t a = 0;
    while (a < n) {
        size_t b = pt_tui_cluster(s, n, a, &cw);
        if (b >= i) return a;
        a = b;
    }
    return a;
}

bool pt_tui_typable(wint_t c) { return c >= 0x20 && !unprintable((utf8proc_int32_t)c); }
