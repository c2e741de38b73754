/* Username rules (see pt_username.h): utf8proc decodes, classifies and
 * normalises; ICU's spoof checker judges the characters and scripts and draws
 * the skeleton. Everything works in fixed buffers sized from the header's
 * bounds, each of which is checked rather than trusted. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <unicode/uchar.h>
#include <unicode/uset.h>
#include <unicode/uspoof.h>
#include <utf8proc.h>

#include "server/pt_username.h"

/* A code point expands to at most this many under canonical decomposition
 * (U+1F82 -> U+03B1 U+0313 U+0300 U+0345). */
#define UN_MAX_CANON_EXPANSION 4
#define UN_NFC_OPTS (UTF8PROC_STABLE | UTF8PROC_COMPOSE)
#define UN_FOLD_OPTS                                                                               \
    (UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT | UTF8PROC_CASEFOLD | UTF8PROC_IGNORE)

static pthread_once_t un_once = PTHREAD_ONCE_INIT;
static USpoofChecker *un_checker; /* shared read-only after un_open_checker() */

static void un_open_checker(void)
{
    UErrorCode st = U_ZERO_ERROR;
    USpoofChecker *sc = uspoof_open(&st);
    USet *allowed = NULL;
    if (U_FAILURE(st)) goto out;
    uspoof_setChecks(
        sc, USPOOF_RESTRICTION_LEVEL | USPOOF_INVISIBLE | USPOOF_CHAR_LIMIT | USPOOF_MIXED_NUMBERS,
        &st);
    uspoof_setRestrictionLevel(sc, USPOOF_MODERATELY_RESTRICTIVE);
    /* ICU allows every code point by default; UTS #39 recommends these. */
    const USet *recommended = uspoof_getRecommendedSet(&st);
    const USet *inclusion = uspoof_getInclusionSet(&st);
    if (U_FAILURE(st)) goto out;
    allowed = uset_cloneAsThawed(recommended);
    if (!allowed) {
        st = U_MEMORY_ALLOCATION_ERROR;
        goto out;
    }
    uset_addAll(allowed, inclusion);
    uspoof_setAllowedChars(sc, allowed, &st); /* copies the set */
out:
    uset_close(allowed);
    if (U_FAILURE(st)) {
        uspoof_close(sc);
        return;
    }
    un_checker = sc;
}

static const USpoofChecker *un_get_checker(void)
{
    int rc = pthread_once(&un_once, un_open_checker);
    PT_ASSERT(rc == 0);
    return un_checker;
}

int pt_username_init(void)
{
    return un_get_checker() ? 0 : PT_ERR_NOMEM;
}

const char *pt_username_reason_str(pt_username_reason r)
{
    switch (r) {
    case PT_UN_OK:
        return "the username is valid";
    case PT_UN_EMPTY:
        return "usernames may not be empty";
    case PT_UN_TOO_LONG:
        return "usernames may have at most 32 characters";
    case PT_UN_BAD_UTF8:
        return "the username is not valid UTF-8 text";
    case PT_UN_WHITESPACE:
        return "usernames may not contain spaces, tabs, line breaks or other whitespace";
    case PT_UN_CONTROL:
        return "usernames may not contain control or invisible formatting characters "
               "(such as zero-width spaces or text-direction overrides), private-use "
               "or unassigned characters";
    case PT_UN_LEADING_MARK:
        return "usernames may not start with a combining mark (an accent with no letter "
               "before it)";
    case PT_UN_CONFUSABLE_CHAR:
        return "usernames may contain only letters, digits, accents and the signs _ - . ' :; "
               "symbols, emoji and stylised letters (fullwidth, mathematical, ligatures) "
               "are not allowed";
    case PT_UN_INVISIBLE:
        return "usernames may not repeat the same accent on one letter";
    case PT_UN_MIXED_SCRIPT:
        return "usernames may not mix letters from different scripts (such as Latin and "
               "Cyrillic)";
    case PT_UN_MIXED_NUMBERS:
        return "usernames may not mix digits from different number systems (such as 1 "
               "and \xd9\xa1)";
    case PT_UN_INTERNAL:
        return "the server could not check this username; please try again later";
    case PT_UN_REASON_COUNT:
        break;
    }
    return "this username is not allowed";
}

/* Encodes n code points as UTF-8 into out[cap], NUL-terminated; -1 if it does
 * not fit. */
static int un_encode(const utf8proc_int32_t *cps, size_t n, char *out, size_t cap, size_t *out_len)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        utf8proc_uint8_t tmp[4];
        size_t k = (size_t)utf8proc_encode_char(cps[i], tmp);
        if (k == 0 || k >= cap - w) return -1; /* keep room for the NUL */
        memcpy(out + w, tmp, k);
        w += k;
    }
    out[w] = '\0';
    *out_len = w;
    return 0;
}

/* Decomposes, maps and composes s[len] with `opts` into out[cap] through the
 * code-point buffer buf[nbuf]; -1 if anything fails or does not fit. */
static int un_map(const char *s, size_t len, int opts, utf8proc_int32_t *buf, size_t nbuf,
                  char *out, size_t cap, size_t *out_len)
{
    utf8proc_ssize_t n = utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, buf,
                                            (utf8proc_ssize_t)nbuf, (utf8proc_option_t)opts);
    if (n < 0 || (size_t)n > nbuf) return -1;
    n = utf8proc_normalize_utf32(buf, n, (utf8proc_option_t)opts);
    if (n < 0) return -1;
    return un_encode(buf, (size_t)n, out, cap, out_len);
}

/* Rules 3-5 on the bytes as sent. */
static pt_username_reason un_scan(const char *s, size_t len)
{
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    for (size_t i = 0; i < len;) { /* validate everything before judging anything */
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(p + i, (utf8proc_ssize_t)(len - i), &cp);
        if (k <= 0 || cp < 0) return PT_UN_BAD_UTF8;
        i += (size_t)k;
    }
    pt_username_reason why = PT_UN_OK;
    for (size_t i = 0; i < len;) {
        utf8proc_int32_t cp;
        i += (size_t)utf8proc_iterate(p + i, (utf8proc_ssize_t)(len - i), &cp);
        if (u_isUWhiteSpace(cp)) return PT_UN_WHITESPACE;
        switch (utf8proc_category(cp)) {
        case UTF8PROC_CATEGORY_CC:
        case UTF8PROC_CATEGORY_CF:
        case UTF8PROC_CATEGORY_CS:
        case UTF8PROC_CATEGORY_CO:
        case UTF8PROC_CATEGORY_CN:
            why = PT_UN_CONTROL;
            break; /* a later space wins */
        default:
            break;
        }
    }
    return why;
}

static int un_is_mark(utf8proc_int32_t cp)
{
    utf8proc_category_t c = utf8proc_category(cp);
    return c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_MC || c == UTF8PROC_CATEGORY_ME;
}

/* Rules 8-11, by ICU on the NFC form. */
static pt_username_reason un_spoof(const USpoofChecker *sc, const char *display, size_t len,
                                   UErrorCode *st)
{
    int32_t r = uspoof_checkUTF8(sc, display, (int32_t)len, NULL, st);
    if (U_FAILURE(*st)) return PT_UN_INTERNAL;
    if (r & USPOOF_CHAR_LIMIT) return PT_UN_CONFUSABLE_CHAR; /* implies RESTRICTION_LEVEL */
    if (r & USPOOF_INVISIBLE) return PT_UN_INVISIBLE;
    if (r & USPOOF_RESTRICTION_LEVEL) return PT_UN_MIXED_SCRIPT;
    if (r & USPOOF_MIXED_NUMBERS) return PT_UN_MIXED_NUMBERS;
    if (r != 0) return PT_UN_INTERNAL; /* a check we did not ask for */
    return PT_UN_OK;
}

static int un_err(pt_username_reason why)
{
    switch (why) {
    case PT_UN_OK:
        return 0;
    case PT_UN_TOO_LONG:
        return PT_ERR_TOO_BIG;
    case PT_UN_BAD_UTF8:
        return PT_ERR_DECODE;
    case PT_UN_INTERNAL:
        return PT_ERR_NOMEM;
    default:
        return PT_ERR_INVAL;
    }
}

/* Everything after the byte-level rules; the outputs hold garbage on failure. */
static pt_username_reason un_check(const char *claimed, size_t len,
                                   char display[static PT_USERNAME_DISPLAY_SIZE],
                                   char key[static PT_USERNAME_KEY_SIZE],
                                   char skeleton[static PT_USERNAME_SKELETON_SIZE])
{
    const USpoofChecker *sc = un_get_checker();
    if (!sc) return PT_UN_INTERNAL;

    /* Rule 6: NFC. A name of at most 32 NFC code points has at most 4 times as
     * many in NFD, so a longer decomposition is a name that is too long. */
    utf8proc_int32_t nfc[UN_MAX_CANON_EXPANSION * PT_USERNAME_MAX_CHARS];
    utf8proc_ssize_t n =
        utf8proc_decompose((const utf8proc_uint8_t *)claimed, (utf8proc_ssize_t)len, nfc,
                           (utf8proc_ssize_t)PT_ARRAY_LEN(nfc), UN_NFC_OPTS);
    if (n > (utf8proc_ssize_t)PT_ARRAY_LEN(nfc)) return PT_UN_TOO_LONG;
    if (n < 0) return PT_UN_INTERNAL; /* un_scan() accepted what utf8proc refuses */
    n = utf8proc_normalize_utf32(nfc, n, UN_NFC_OPTS);
    if (n < 0) return PT_UN_INTERNAL;
    if (n == 0) return PT_UN_EMPTY;
    if (n > PT_USERNAME_MAX_CHARS) return PT_UN_TOO_LONG;
    if (un_is_mark(nfc[0])) return PT_UN_LEADING_MARK; /* rule 7 */
    size_t dlen;
    if (un_encode(nfc, (size_t)n, display, PT_USERNAME_DISPLAY_SIZE, &dlen) != 0)
        return PT_UN_INTERNAL;

    UErrorCode st = U_ZERO_ERROR;
    pt_username_reason why = un_spoof(sc, display, dlen, &st);
    if (why != PT_UN_OK) return why;

    utf8proc_int32_t cps[PT_USERNAME_SKELETON_MAX_BYTES]; /* scratch for both foldings */
    size_t klen;
    if (un_map(display, dlen, UN_FOLD_OPTS, cps, PT_ARRAY_LEN(cps), key, PT_USERNAME_KEY_SIZE,
               &klen) != 0)
        return PT_UN_INTERNAL;

    char raw[PT_USERNAME_SKELETON_SIZE];
    int32_t rlen =
        uspoof_getSkeletonUTF8(sc, 0, display, (int32_t)dlen, raw, (int32_t)sizeof raw, &st);
    if (U_FAILURE(st) || rlen < 0 || (size_t)rlen >= sizeof raw) return PT_UN_INTERNAL;
    size_t slen;
    if (un_map(raw, (size_t)rlen, UN_FOLD_OPTS, cps, PT_ARRAY_LEN(cps), skeleton,
               PT_USERNAME_SKELETON_SIZE, &slen) != 0)
        return PT_UN_INTERNAL;
    return PT_UN_OK;
}

int pt_username_check(const char *claimed, size_t len,
                      char display[static PT_USERNAME_DISPLAY_SIZE],
                      char key[static PT_USERNAME_KEY_SIZE],
                      char skeleton[static PT_USERNAME_SKELETON_SIZE], pt_username_reason *why)
{
    PT_ASSERT(claimed != NULL || len == 0);
    pt_username_reason r;
    if (len == 0)
        r = PT_UN_EMPTY;
    else if (len > PT_USERNAME_MAX_INPUT_BYTES)
        r = PT_UN_TOO_LONG;
    else if ((r = un_scan(claimed, len)) == PT_UN_OK)
        r = un_check(claimed, len, display, key, skeleton);
    if (r != PT_UN_OK) {
        display[0] = key[0] = skeleton[0] = '\0';
    }
    if (why) *why = r;
    return un_err(r);
}
