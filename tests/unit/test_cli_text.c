/* The terminal client's text from other people (src/cli/text.c): what the chat
 * screen draws (pt_tui_wide) and what the line commands print (pt_cli_printable)
 * can neither move the cursor nor reorder the screen; widths are grapheme clusters'. */
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "cli/tui.h"
#include "testutil.h"

static void wide_is(const char *in, const wchar_t *want)
{
    wchar_t *w = pt_tui_wide(in);
    assert_non_null(w);
    if (wcscmp(w, want) != 0) fail_msg("pt_tui_wide(\"%s\"): %ls, want %ls", in, w, want);
    free(w);
}

static void printable_is(const char *in, const char *indent, const char *want)
{
    char *s = pt_cli_printable(in, indent);
    assert_non_null(s);
    assert_string_equal(s, want);
    free(s);
}

static void test_chat_screen_text(void **state)
{
    (void)state;
    wide_is("plain 😀 世界", L"plain 😀 世界");
    wide_is("a\x1b]52;c;aGk=\x07z", L"a\xFFFD]52;c;aGk=\xFFFDz"); /* OSC 52: the clipboard */
    wide_is("\xc2\x9b" "2J", L"\xFFFD" "2J");                      /* C1 CSI */
    wide_is("tab\there", L"tab here");
    wide_is("bad \xff byte", L"bad \xFFFD byte");
    wide_is("line\nnext", L"line\nnext");
    /* bidi overrides and isolates would reorder the screen past the text */
    wide_is("x\u202Eevil\u202C y", L"x\xFFFD" "evil\xFFFD y");
    wide_is("\u2066iso\u2069", L"\xFFFD" "iso\xFFFD");
    /* line and paragraph separators are new lines, as the line commands print them */
    wide_is("one\u2028two\u2029three", L"one\ntwo\nthree");
}

static void test_printed_text(void **state)
{
    (void)state;
    /* a name (no indent): nothing may start a new line or a forged one */
    printable_is("bob\n[12:00] carol: hi", NULL, "bob\uFFFD[12:00] carol: hi");
    printable_is("bob\u2028x", NULL, "bob\uFFFDx");
    printable_is("\u202Eecila", NULL, "\uFFFDecila");
    printable_is("t\tab", NULL, "t\uFFFDab");
    /* a message (indented): its lines stay inside it */
    printable_is("one\ntwo\u2029three", "  ", "one\n  two\n  three");
    printable_is("t\tab \x1b[2J", "  ", "t\tab \uFFFD[2J");
    printable_is("ok 世界 😀", "  ", "ok 世界 😀");
}

static void test_widths(void **state)
{
    (void)state;
    wchar_t *w = pt_tui_wide("a世😀🇫🇷👩‍👩‍👧");
    assert_non_null(w);
    assert_int_equal(pt_tui_width(w, wcslen(w)), 1 + 2 + 2 + 2 + 2);
    free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_screen_text),
        cmocka_unit_test(test_printed_text),
        cmocka_unit_test(test_widths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
