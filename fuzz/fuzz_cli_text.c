/* Fuzz target for the terminal client's text from other people (src/cli/text.c):
 * pt_cli_printable, which `packtrack recv`, `history` and the listings print through,
 * and pt_tui_wide, which the chat screen draws from. Arbitrary bytes (cut at the first
 * NUL, as a C string is) as a message text or a name. Properties, each abort()ing when
 * broken:
 *  - the output is well-formed UTF-8 with no control character (C0, DEL, C1), no
 *    surrogate, no unassigned code point, no U+2028/U+2029 and no bidi override or
 *    isolate, but: with an indent, a newline followed by exactly that indent, and a
 *    tab; without, neither;
 *  - nothing printable is lost or moved: one code point out per code point in (or per
 *    invalid byte), and input that is well-formed and printable comes out unchanged;
 *  - made printable again, the output (without an indent) is unchanged;
 *  - pt_tui_wide gives one character per code point (or invalid byte), each printable
 *    (as above: no U+2028/U+2029, no bidi control), a newline or a space (for a tab). */
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "cli/tui.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the chat screen may not draw (pt_tui_wide): checked by ranges first (not only by
 * the code's own predicate), then by the categories the code names. */
static bool ctl_cp(utf8proc_int32_t c)
{
    if (c < 0x20 || c > 0x10FFFF || (c >= 0x7f && c <= 0x9f) || (c >= 0xD800 && c <= 0xDFFF))
        return true;
    utf8proc_category_t cat = utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CS || cat == UTF8PROC_CATEGORY_CN;
}

/* What may not be printed (pt_cli_printable): that, line and paragraph separators, and
 * bidi overrides and isolates. */
static bool bad_cp(utf8proc_int32_t c)
{
    return ctl_cp(c) || c == 0x2028 || c == 0x2029 || (c >= 0x202A && c <= 0x202E) ||
           (c >= 0x2066 && c <= 0x2069);
}

/* Code points (an invalid byte counting as one) of s; *clean: well-formed, and every
 * one printable (a newline and a tab counting as printable when `lines`). */
static size_t units(const char *s, bool lines, bool *clean)
{
    size_t len = strlen(s), n = 0;
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    *clean = true;
    while (len) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(p, (utf8proc_ssize_t)len, &c);
        if (k <= 0) {
            *clean = false;
            k = 1;
        } else if (bad_cp(c) && !(lines && (c == '\n' || c == '\t'))) {
            *clean = false;
        }
        n++;
        p += k;
        len -= (size_t)k;
    }
    return n;
}

/* Checks out = pt_cli_printable(in, indent); returns its code points, indents left out. */
static size_t check_out(const char *out, const char *indent)
{
    size_t len = strlen(out), ilen = indent ? strlen(indent) : 0, n = 0;
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)out;
    while (len) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(p, (utf8proc_ssize_t)len, &c);
        if (k <= 0) abort(); /* not well-formed */
        if (c == '\n') {
            if (!indent || len - 1 < ilen || memcmp(p + 1, indent, ilen) != 0) abort();
            k += (utf8proc_ssize_t)ilen;
        } else if (c == '\t') {
            if (!indent) abort();
        } else if (bad_cp(c)) {
            abort();
        }
        n++;
        p += k;
        len -= (size_t)k;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 1);
    if (!in) return 0;
    memcpy(in, data, size);
    in[size] = 0;
    static const char *const indents[] = {NULL, "    ", ""};
    for (size_t i = 0; i < sizeof indents / sizeof *indents; i++) {
        const char *indent = indents[i];
        char *out = pt_cli_printable(in, indent);
        if (!out) abort();
        bool clean;
        size_t n = units(in, indent != NULL, &clean);
        if (check_out(out, indent) != n) abort();
        if (clean && strcmp(out, in) != 0 && !(indent && indent[0] && strchr(in, '\n'))) abort();
        if (!indent) {
            char *again = pt_cli_printable(out, NULL);
            if (!again || strcmp(again, out) != 0) abort();
            free(again);
        }
        free(out);
    }
    wchar_t *w = pt_tui_wide(in);
    if (!w) abort();
    bool clean;
    size_t n = units(in, true, &clean), wn = wcslen(w);
    if (wn != n) abort();
    for (size_t i = 0; i < wn; i++)
        if (w[i] != '\n' && (bad_cp((utf8proc_int32_t)w[i]) || w[i] == '\t')) abort();
    free(w);
    free(in);
    return 0;
}
