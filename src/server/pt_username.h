/*
 * pt_username.h - the rules a username must follow, and the two strings the
 * server compares to keep names unique and unmistakable.
 *
 * PackTrack has no registration: a user claims a name. A claim is accepted
 * when every rule below holds, checked in this order (the first rule broken
 * is the reason reported):
 *
 *  1. Not empty (PT_UN_EMPTY).
 *  2. At most PT_USERNAME_MAX_INPUT_BYTES bytes as sent (PT_UN_TOO_LONG); no
 *     name of 32 characters is longer than that in any normalisation form.
 *  3. Well-formed UTF-8 (PT_UN_BAD_UTF8): no overlong forms, surrogates
 *     (U+D800-U+DFFF), code points above U+10FFFF, stray or truncated bytes.
 *  4. No whitespace at all (PT_UN_WHITESPACE): neither the ASCII space nor
 *     tabs, line breaks, no-break or ideographic spaces (Unicode White_Space).
 *     A name is one word, as in "@alice": this avoids "alice" / "alice " /
 *     "a lice" look-alikes and any question of trimming.
 *  5. No control, format, surrogate, private-use or unassigned code points
 *     (general categories Cc, Cf, Cs, Co, Cn; PT_UN_CONTROL). This refuses
 *     NUL, BEL, zero-width spaces and joiners (U+200B-U+200D), bidirectional
 *     overrides and isolates (U+202A-U+202E, U+2066-U+2069), the byte-order
 *     mark U+FEFF and soft hyphens.
 *  6. The name is normalised to NFC; what is shown is that form. It must have
 *     1 to PT_USERNAME_MAX_CHARS (32) code points (PT_UN_TOO_LONG): "é" counts
 *     one whether sent as U+00E9 or as "e" + U+0301; an accent that has no
 *     precomposed form counts on its own.
 *  7. It must not begin with a combining mark (PT_UN_LEADING_MARK), which would
 *     draw itself onto whatever the client shows before the name.
 *  8. Every character is in Unicode's recommended identifier set (UTS #39
 *     Identifier_Status=Allowed, plus its inclusion characters ' - . : and
 *     a few script-specific joining signs such as U+00B7 and U+30FB). That is
 *     letters and digits of living scripts in either case, combining accents,
 *     and "_". Symbols, emoji, most punctuation, and stylised or compatibility
 *     letters (fullwidth "ａ", mathematical "𝐚", ligatures "ﬁ", "Ǆ") are refused
 *     (PT_UN_CONFUSABLE_CHAR).
 *  9. The same non-spacing mark may not be repeated on one letter
 *     (PT_UN_INVISIBLE): it draws once and so hides a difference.
 * 10. One script (PT_UN_MIXED_SCRIPT), at ICU's "moderately restrictive" level:
 *     letters of a single script; or Latin with Han, Hiragana and Katakana; or
 *     Latin with Han and Bopomofo; or Latin with Han and Hangul; or Latin with
 *     one other recommended script except Cyrillic and Greek. Digits, "_" and
 *     combining marks belong to every script. So "иван" and "ゆうき" are
 *     accepted, "pаypal" with a Cyrillic "а" is not.
 * 11. Digits come from one number system (PT_UN_MIXED_NUMBERS): "1٢" is refused.
 *
 * An accepted name yields three strings, all NUL-terminated UTF-8:
 *  - display:  the NFC form, as the user typed it (case kept).
 *  - key:      the unique lookup key, NFKC_Casefold of the display (utf8proc,
 *              full Unicode case folding, not locale-specific). Two names with
 *              equal keys are the same name: "Alice" = "ALICE" = "alice";
 *              "Straße" = "STRASSE" = "strasse" (ß and ẞ fold to "ss");
 *              Greek final sigma folds to sigma, so "ΟΔΥΣΣΕΥΣ" = "οδυσσευς" =
 *              "οδυσσευσ"; Turkish dotted "İ" folds to "i" + U+0307 and dotless
 *              "ı" stays itself, so "İstanbul", "istanbul" and "ıstanbul" are three
 *              keys (the skeleton below ties the last two).
 *  - skeleton: what the name looks like: ICU's UTS #39 confusable skeleton of
 *              the display, then case-folded like the key. The server refuses
 *              a claim whose skeleton equals an existing name's skeleton, even
 *              when the keys differ: "paypaI" (capital i), "pаypal" (Cyrillic а),
 *              "g00gle", "rn"/"m", "ılıa"/"ilia" and Cyrillic "ѕсоре"/"scope" each
 *              share a skeleton. It is computed from the display, not the key,
 *              because folding first would hide "I"/"l" and "0"/"O"; so the same
 *              key can have different skeletons, and a user who changes the case
 *              of a display must have the new skeleton checked again.
 *
 * Threads: every function is thread-safe. The ICU spoof checker is opened once,
 * on first use (pthread_once), shared read-only by all threads and kept until
 * the process exits (it is never freed; leak checkers see it as reachable).
 * pt_username_init() opens it eagerly. No I/O; the only allocations are ICU's.
 */
#ifndef PT_USERNAME_H
#define PT_USERNAME_H

#include <stddef.h>

#include "common/pt_common.h"

#define PT_USERNAME_MAX_CHARS 32                          /* code points after NFC */
#define PT_USERNAME_MAX_BYTES (4 * PT_USERNAME_MAX_CHARS) /* display: 4 bytes per code point */
/* Longest claim examined: each NFC code point has a canonical decomposition of at
 * most 4 code points (U+1F82), and every code point of any input that normalises
 * to it accounts for at least one of those, in at most 4 bytes. */
#define PT_USERNAME_MAX_INPUT_BYTES (4 * 4 * PT_USERNAME_MAX_CHARS)
/* Full case folding at most triples the UTF-8 length (U+0390, 2 bytes, folds to
 * 3 code points, 6 bytes); NFKC changes nothing the allowed set contains.
 * Measured with Unicode 15: at most 5 bytes per code point (U+1F80). */
#define PT_USERNAME_KEY_MAX_BYTES (3 * PT_USERNAME_MAX_BYTES)
/* ICU's skeleton of an allowed code point is at most 7 times its UTF-8 length
 * (a Hangul syllable, 3 bytes, becomes up to 7 jamo, 21 bytes; ICU 72), the folded
 * skeleton at most 6 times; 8 leaves room for newer Unicode data. */
#define PT_USERNAME_SKELETON_MAX_BYTES (8 * PT_USERNAME_MAX_BYTES)

#define PT_USERNAME_DISPLAY_SIZE (PT_USERNAME_MAX_BYTES + 1)
#define PT_USERNAME_KEY_SIZE (PT_USERNAME_KEY_MAX_BYTES + 1)
#define PT_USERNAME_SKELETON_SIZE (PT_USERNAME_SKELETON_MAX_BYTES + 1)

/* Why a claimed name was refused; rule numbers refer to the list above. */
typedef enum pt_username_reason {
    PT_UN_OK = 0,          /* accepted */
    PT_UN_EMPTY,           /* rule 1 */
    PT_UN_TOO_LONG,        /* rules 2 and 6 */
    PT_UN_BAD_UTF8,        /* rule 3 */
    PT_UN_WHITESPACE,      /* rule 4 */
    PT_UN_CONTROL,         /* rule 5: Cc, Cf, Cs, Co, Cn */
    PT_UN_LEADING_MARK,    /* rule 7 */
    PT_UN_CONFUSABLE_CHAR, /* rule 8: outside the UTS #39 identifier set */
    PT_UN_INVISIBLE,       /* rule 9 */
    PT_UN_MIXED_SCRIPT,    /* rule 10 */
    PT_UN_MIXED_NUMBERS,   /* rule 11 */
    PT_UN_INTERNAL,        /* the Unicode libraries failed; not the user's fault */
    PT_UN_REASON_COUNT     /* number of reasons, for iteration */
} pt_username_reason;

/* A static English sentence to show the user, e.g. "usernames may not mix
 * letters from different scripts (such as Latin and Cyrillic)"; never NULL,
 * never empty; out-of-range values get a generic sentence. */
const char *pt_username_reason_str(pt_username_reason r);

/* Opens the shared spoof checker now rather than on the first check, so that
 * the cost is paid, and a failure seen, at startup. Idempotent; 0 or
 * PT_ERR_NOMEM (ICU could not allocate or find its data). Optional. */
int pt_username_init(void) PT_WUR;

/* Checks `len` bytes claimed as a username (they need not be NUL-terminated and
 * may contain anything). On success returns 0 and writes display, key and
 * skeleton as described above; *why = PT_UN_OK. On refusal writes "" to all
 * three, sets *why and returns
 *  PT_ERR_TOO_BIG  for PT_UN_TOO_LONG,
 *  PT_ERR_DECODE   for PT_UN_BAD_UTF8,
 *  PT_ERR_INVAL    for every other rule,
 *  PT_ERR_NOMEM    for PT_UN_INTERNAL (ICU failed, or a library produced more
 *                  than the bounds above; report it, do not blame the user).
 * `why` may be NULL. `claimed` may be NULL only when len is 0. */
int pt_username_check(const char *claimed, size_t len,
                      char display[static PT_USERNAME_DISPLAY_SIZE],
                      char key[static PT_USERNAME_KEY_SIZE],
                      char skeleton[static PT_USERNAME_SKELETON_SIZE],
                      pt_username_reason *why) PT_WUR;

#endif
