/* Fuzz target for pt_username_check(): arbitrary bytes as a claimed name.
 * Properties, each abort()ing when broken:
 *  - the return code and the reason agree, and PT_UN_INTERNAL never happens
 *    (it would mean a buffer bound in pt_username.h is wrong);
 *  - a refusal leaves "" in all three outputs;
 *  - an accepted name gives NUL-terminated, well-formed UTF-8 within each
 *    buffer, a display of 1-32 code points, and non-empty key and skeleton;
 *  - checking the display again accepts it with the same three strings, and
 *    a key that is itself acceptable is its own key (folding is idempotent). */
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "server/pt_username.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fz_out {
    char display[PT_USERNAME_DISPLAY_SIZE];
    char key[PT_USERNAME_KEY_SIZE];
    char skeleton[PT_USERNAME_SKELETON_SIZE];
    pt_username_reason why;
} fz_out;

static int fz_check(const char *s, size_t len, fz_out *o)
{
    memset(o, 0x55, sizeof *o);
    int rc = pt_username_check(s, len, o->display, o->key, o->skeleton, &o->why);
    int want;
    switch (o->why) {
    case PT_UN_OK:
        want = 0;
        break;
    case PT_UN_TOO_LONG:
        want = PT_ERR_TOO_BIG;
        break;
    case PT_UN_BAD_UTF8:
        want = PT_ERR_DECODE;
        break;
    case PT_UN_EMPTY:
    case PT_UN_WHITESPACE:
    case PT_UN_CONTROL:
    case PT_UN_LEADING_MARK:
    case PT_UN_CONFUSABLE_CHAR:
    case PT_UN_INVISIBLE:
    case PT_UN_MIXED_SCRIPT:
    case PT_UN_MIXED_NUMBERS:
        want = PT_ERR_INVAL;
        break;
    default:
        abort(); /* PT_UN_INTERNAL or garbage */
    }
    if (rc != want) abort();
    if (rc != 0 && (o->display[0] || o->key[0] || o->skeleton[0])) abort();
    return rc;
}

/* Code points in the NUL-terminated UTF-8 string s[cap]; aborts when it is not one. */
static size_t fz_utf8_chars(const char *s, size_t cap)
{
    const char *end = memchr(s, '\0', cap);
    if (!end) abort();
    size_t len = (size_t)(end - s), n = 0;
    for (size_t i = 0; i < len; n++) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &cp);
        if (k <= 0 || cp < 0) abort();
        i += (size_t)k;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fz_out a, b;
    if (fz_check((const char *)data, size, &a) != 0) {
        if (size > PT_USERNAME_MAX_INPUT_BYTES && a.why != PT_UN_TOO_LONG) abort();
        return 0;
    }
    size_t n = fz_utf8_chars(a.display, sizeof a.display);
    if (n < 1 || n > PT_USERNAME_MAX_CHARS) abort();
    if (fz_utf8_chars(a.key, sizeof a.key) < 1) abort();
    if (fz_utf8_chars(a.skeleton, sizeof a.skeleton) < 1) abort();

    if (fz_check(a.display, strlen(a.display), &b) != 0) abort();
    if (strcmp(a.display, b.display) || strcmp(a.key, b.key) || strcmp(a.skeleton, b.skeleton))
        abort();
    if (fz_check(a.key, strlen(a.key), &b) == 0 && strcmp(a.key, b.key) != 0) abort();
    return 0;
}
