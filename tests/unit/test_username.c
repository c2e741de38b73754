/* Username rules of src/server/username.c (the list in pt_username.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "server/pt_username.h"
#include "testutil.h"

typedef struct un_out {
    char display[PT_USERNAME_DISPLAY_SIZE];
    char key[PT_USERNAME_KEY_SIZE];
    char skeleton[PT_USERNAME_SKELETON_SIZE];
    pt_username_reason why;
    int rc;
} un_out;

static un_out *un_check_n(const char *s, size_t len)
{
    static un_out o;
    memset(&o, 0x55, sizeof o);
    o.rc = pt_username_check(s, len, o.display, o.key, o.skeleton, &o.why);
    if (o.why != PT_UN_OK) { /* refusals always clear the outputs */
        assert_int_equal(o.display[0], 0);
        assert_int_equal(o.key[0], 0);
        assert_int_equal(o.skeleton[0], 0);
    }
    return &o;
}

static un_out *un_check(const char *s)
{
    return un_check_n(s, strlen(s));
}

/* Asserts s is refused for `why`, naming s on failure. */
static void expect_reason(const char *s, size_t len, pt_username_reason why)
{
    un_out *o = un_check_n(s, len);
    if (o->why != why) fail_msg("\"%s\": reason %d, want %d", s, (int)o->why, (int)why);
}

static void expect_ok(const char *s)
{
    un_out *o = un_check(s);
    if (o->why != PT_UN_OK || o->rc != 0)
        fail_msg("\"%s\" refused: %s", s, pt_username_reason_str(o->why));
}

static char *dup_key(const char *s)
{
    un_out *o = un_check(s);
    if (o->why != PT_UN_OK) fail_msg("\"%s\" refused: %s", s, pt_username_reason_str(o->why));
    return strdup(o->key);
}

static char *dup_skeleton(const char *s)
{
    un_out *o = un_check(s);
    if (o->why != PT_UN_OK) fail_msg("\"%s\" refused: %s", s, pt_username_reason_str(o->why));
    return strdup(o->skeleton);
}

static void expect_same_key(const char *a, const char *b)
{
    char *ka = dup_key(a), *kb = dup_key(b);
    if (strcmp(ka, kb) != 0)
        fail_msg("keys differ: \"%s\" -> \"%s\", \"%s\" -> \"%s\"", a, ka, b, kb);
    free(ka);
    free(kb);
}

static void expect_other_key(const char *a, const char *b)
{
    char *ka = dup_key(a), *kb = dup_key(b);
    if (strcmp(ka, kb) == 0) fail_msg("\"%s\" and \"%s\" share the key \"%s\"", a, b, ka);
    free(ka);
    free(kb);
}

static void expect_same_skeleton(const char *a, const char *b)
{
    char *sa = dup_skeleton(a), *sb = dup_skeleton(b);
    if (strcmp(sa, sb) != 0)
        fail_msg("skeletons differ: \"%s\" -> \"%s\", \"%s\" -> \"%s\"", a, sa, b, sb);
    free(sa);
    free(sb);
}

static void expect_other_skeleton(const char *a, const char *b)
{
    char *sa = dup_skeleton(a), *sb = dup_skeleton(b);
    if (strcmp(sa, sb) == 0) fail_msg("\"%s\" and \"%s\" share the skeleton \"%s\"", a, b, sa);
    free(sa);
    free(sb);
}

/* s repeated n times, in a static buffer. */
static const char *rep(const char *s, size_t n)
{
    static char buf[4096];
    size_t l = strlen(s);
    assert_true(l * n < sizeof buf);
    for (size_t i = 0; i < n; i++)
        memcpy(buf + i * l, s, l);
    buf[l * n] = '\0';
    return buf;
}

static void test_ascii(void **state)
{
    (void)state;
    un_out *o = un_check("alice");
    assert_int_equal(o->rc, 0);
    assert_int_equal(o->why, PT_UN_OK);
    assert_string_equal(o->display, "alice");
    assert_string_equal(o->key, "alice");
    assert_string_equal(o->skeleton, "alice");
    o = un_check("Bob_99");
    assert_string_equal(o->display, "Bob_99");
    assert_string_equal(o->key, "bob_99");
    const char *ok[] = {"x", "_", "42", "john.doe", "mary-jane", "o'neil", "a:b", "ZZ_top"};
    for (size_t i = 0; i < PT_ARRAY_LEN(ok); i++)
        expect_ok(ok[i]);
    /* why may be NULL; the rc alone tells */
    char d[PT_USERNAME_DISPLAY_SIZE], k[PT_USERNAME_KEY_SIZE], s[PT_USERNAME_SKELETON_SIZE];
    assert_int_equal(pt_username_check("carol", 5, d, k, s, NULL), 0);
    assert_int_equal(pt_username_check("a b", 3, d, k, s, NULL), PT_ERR_INVAL);
    assert_int_equal(pt_username_init(), 0);
}

static void test_nfc(void **state)
{
    (void)state;
    un_out *o = un_check("Jos\xc3\xa9"); /* U+00E9 */
    assert_string_equal(o->display, "Jos\xc3\xa9");
    assert_string_equal(o->key, "jos\xc3\xa9");
    char *skel = strdup(o->skeleton);
    o = un_check("Jose\xcc\x81"); /* e + U+0301 */
    assert_int_equal(o->why, PT_UN_OK);
    assert_string_equal(o->display, "Jos\xc3\xa9");
    assert_string_equal(o->key, "jos\xc3\xa9");
    assert_string_equal(o->skeleton, skel);
    free(skel);
    expect_same_key("JOS\xc3\x89", "jose\xcc\x81");
    /* Hangul: jamo sent separately compose into one syllable */
    o = un_check("\xe1\x84\x80\xe1\x85\xa1"); /* U+1100 U+1161 */
    assert_int_equal(o->why, PT_UN_OK);
    assert_string_equal(o->display, "\xea\xb0\x80"); /* U+AC00 */
    /* canonical order of marks does not matter: ậ sent two ways */
    expect_same_key("a\xcc\xa3\xcc\x82", "a\xcc\x82\xcc\xa3");
    /* singletons: KELVIN SIGN is K, OHM SIGN is omega */
    o = un_check("\xe2\x84\xaa");
    assert_string_equal(o->display, "K");
    assert_string_equal(o->key, "k");
}

static void test_case(void **state)
{
    (void)state;
    expect_same_key("Alice", "ALICE");
    expect_same_key("Alice", "aLiCe");
    assert_string_equal(un_check("ALICE")->display, "ALICE"); /* display keeps the case */
    /* ß and capital ẞ fold to "ss" */
    expect_same_key("Stra\xc3\x9f\x65", "STRASSE");
    expect_same_key("STRA\xe1\xba\x9e\x45", "strasse");
    assert_string_equal(un_check("Stra\xc3\x9f\x65")->key, "strasse");
    /* Greek: capital sigma and final sigma both fold to sigma */
    const char *upper =
        "\xce\x9f\xce\x94\xce\xa5\xce\xa3\xce\xa3\xce\x95\xce\xa5\xce\xa3"; /* ΟΔΥΣΣΕΥΣ */
    const char *final =
        "\xce\xbf\xce\xb4\xcf\x85\xcf\x83\xcf\x83\xce\xb5\xcf\x85\xcf\x82"; /* οδυσσευς */
    const char *medial =
        "\xce\xbf\xce\xb4\xcf\x85\xcf\x83\xcf\x83\xce\xb5\xcf\x85\xcf\x83"; /* οδυσσευσ */
    expect_same_key(upper, final);
    expect_same_key(final, medial);
    assert_string_equal(un_check(upper)->key, medial);
    /* Turkish i: default folding, not Turkic; the skeleton ties ı and i */
    expect_other_key("\xc4\xb0stanbul", "istanbul"); /* İstanbul */
    expect_other_key("\xc4\xb1stanbul", "istanbul"); /* ıstanbul */
    expect_same_skeleton("\xc4\xb1stanbul", "istanbul");
    assert_string_equal(un_check("\xc4\xb0stanbul")->key, "i\xcc\x87stanbul");
}

static void test_length(void **state)
{
    (void)state;
    expect_ok("a");
    expect_ok(rep("a", 32));
    expect_reason(rep("a", 33), 33, PT_UN_TOO_LONG);
    assert_int_equal(un_check(rep("a", 33))->rc, PT_ERR_TOO_BIG);
    /* é precomposed (2 bytes) and decomposed (3 bytes, 2 code points) */
    expect_ok(rep("\xc3\xa9", 32));
    expect_reason(rep("\xc3\xa9", 33), 66, PT_UN_TOO_LONG);
    un_out *o = un_check(rep("e\xcc\x81", 32)); /* 64 code points sent, 32 after NFC */
    assert_int_equal(o->why, PT_UN_OK);
    assert_string_equal(o->display, rep("\xc3\xa9", 32));
    expect_reason(rep("e\xcc\x81", 33), 99, PT_UN_TOO_LONG);
    /* an accent with no precomposed form counts as its own character */
    expect_ok(rep("q\xcc\x81", 16));
    expect_reason(rep("q\xcc\x81", 17), 51, PT_UN_TOO_LONG);
    /* 3- and 4-byte characters */
    expect_ok(rep("\xe3\x82\x86", 32)); /* ゆ */
    expect_reason(rep("\xe3\x82\x86", 33), 99, PT_UN_TOO_LONG);
    o = un_check(rep("\xf0\xa0\x80\x80", 32)); /* U+20000, CJK Ext. B */
    assert_int_equal(o->why, PT_UN_OK);
    assert_int_equal(strlen(o->display), PT_USERNAME_MAX_BYTES);
    expect_reason(rep("\xf0\xa0\x80\x80", 33), 132, PT_UN_TOO_LONG);
    /* the longest canonical decomposition: ᾂ as 4 code points, 8 bytes, x32 */
    o = un_check(rep("\xce\xb1\xcc\x93\xcc\x80\xcd\x85", 32));
    assert_int_equal(o->why, PT_UN_OK);
    assert_string_equal(o->display, rep("\xe1\xbe\x82", 32));
    /* 32 Hangul syllables sent as 96 jamo (288 bytes) */
    o = un_check(rep("\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8", 32));
    assert_int_equal(o->why, PT_UN_OK);
    assert_string_equal(o->display, rep("\xea\xb0\x81", 32)); /* 각 */
    /* over the byte limit: refused before any decoding */
    expect_reason(rep("a", PT_USERNAME_MAX_INPUT_BYTES + 1), PT_USERNAME_MAX_INPUT_BYTES + 1,
                  PT_UN_TOO_LONG);
    expect_reason(rep("\xff", PT_USERNAME_MAX_INPUT_BYTES + 1), PT_USERNAME_MAX_INPUT_BYTES + 1,
                  PT_UN_TOO_LONG);
}

static void test_empty(void **state)
{
    (void)state;
    expect_reason("", 0, PT_UN_EMPTY);
    char d[PT_USERNAME_DISPLAY_SIZE], k[PT_USERNAME_KEY_SIZE], s[PT_USERNAME_SKELETON_SIZE];
    pt_username_reason why = PT_UN_OK;
    assert_int_equal(pt_username_check(NULL, 0, d, k, s, &why), PT_ERR_INVAL);
    assert_int_equal(why, PT_UN_EMPTY);
}

static void test_bad_utf8(void **state)
{
    (void)state;
    /* clang-format off */
    static const char *const bad[] = {
        "\xc0\xaf",             /* overlong '/' */
        "\xc1\xbf",             /* overlong */
        "\xe0\x80\xaf",         /* overlong, 3 bytes */
        "\xf0\x80\x80\xaf",     /* overlong, 4 bytes */
        "\xed\xa0\x80",         /* U+D800 high surrogate */
        "\xed\xbf\xbf",         /* U+DFFF low surrogate */
        "\xed\xa0\xbd\xed\xb8\x80", /* CESU-8 surrogate pair */
        "\xf4\x90\x80\x80",     /* U+110000 */
        "\xf8\x88\x80\x80\x80", /* 5-byte form */
        "ab\xe2\x82",           /* truncated */
        "\xe2\x82" "ab",        /* truncated inside */
        "\x80",                 /* lone continuation */
        "\xff",
        "a\xfe",
    };
    /* clang-format on */
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        expect_reason(bad[i], strlen(bad[i]), PT_UN_BAD_UTF8);
        assert_int_equal(un_check(bad[i])->rc, PT_ERR_DECODE);
    }
    expect_reason("\x07\xff", 2, PT_UN_BAD_UTF8); /* UTF-8 is judged first */
    expect_reason(" \xff", 2, PT_UN_BAD_UTF8);
}

static void test_control(void **state)
{
    (void)state;
    expect_reason("a\0b", 3, PT_UN_CONTROL); /* U+0000 */
    expect_reason("\0", 1, PT_UN_CONTROL);
    /* clang-format off */
    static const char *const bad[] = {
        "a\x07" "b",              /* BEL */
        "\x1b[31mred",            /* ESC */
        "a\x7f",                  /* DEL */
        "a\xc2\x80",              /* U+0080 C1 */
        "ali\xe2\x80\x8b" "ce",   /* U+200B zero-width space */
        "ali\xe2\x80\x8c" "ce",   /* U+200C ZWNJ */
        "ali\xe2\x80\x8d" "ce",   /* U+200D ZWJ */
        "\xe2\x80\xae" "ecila",   /* U+202E right-to-left override */
        "\xe2\x81\xa6" "alice",   /* U+2066 left-to-right isolate */
        "\xe2\x80\x8f" "alice",   /* U+200F right-to-left mark */
        "\xef\xbb\xbf" "alice",   /* U+FEFF byte-order mark */
        "ali\xc2\xad" "ce",       /* U+00AD soft hyphen */
        "\xe2\x81\xa0" "alice",   /* U+2060 word joiner */
        "a\xee\x80\x80",          /* U+E000 private use */
        "a\xf3\xb0\x80\x80",      /* U+F0000 private use plane */
        "a\xcd\xb8",              /* U+0378 unassigned */
        "a\xef\xbf\xbf",          /* U+FFFF noncharacter */
        "a\xef\xb7\x90",          /* U+FDD0 noncharacter */
        "a\xf3\xa0\x80\x81",      /* U+E0001 language tag */
    };
    /* clang-format on */
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        expect_reason(bad[i], strlen(bad[i]), PT_UN_CONTROL);
        assert_int_equal(un_check(bad[i])->rc, PT_ERR_INVAL);
    }
}

static void test_whitespace(void **state)
{
    (void)state;
    /* clang-format off */
    static const char *const bad[] = {
        "a b", " alice", "alice ", "\talice", "a\nb", "a\r\n", "a\x0b" "b",
        "a\xc2\xa0" "b",     /* U+00A0 no-break space */
        "a\xe3\x80\x80" "b", /* U+3000 ideographic space */
        "a\xe2\x80\x83" "b", /* U+2003 em space */
        "a\xe2\x80\xa8" "b", /* U+2028 line separator */
        "a\xc2\x85" "b",     /* U+0085 next line */
        "a\xe1\x9a\x80" "b", /* U+1680 ogham space mark */
        " ",
        "a\xe2\x80\x8b b", /* a control and a space: the space is reported */
    };
    /* clang-format on */
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++)
        expect_reason(bad[i], strlen(bad[i]), PT_UN_WHITESPACE);
}

static void test_leading_mark(void **state)
{
    (void)state;
    expect_reason("\xcc\x81\x61", 3, PT_UN_LEADING_MARK); /* U+0301 first */
    expect_reason("\xcc\x81", 2, PT_UN_LEADING_MARK);
    expect_reason("\xe0\xa4\xbe\x61", 4, PT_UN_LEADING_MARK); /* U+093E, a spacing mark */
    expect_ok("a\xcc\x81");
}

static void test_char_limit(void **state)
{
    (void)state;
    /* clang-format off */
    static const char *const bad[] = {
        "\xef\xbd\x81\xef\xbd\x8c\xef\xbd\x89\xef\xbd\x83\xef\xbd\x85", /* fullwidth alice */
        "\xf0\x9d\x90\x9a\xf0\x9d\x90\xa5", /* mathematical bold al */
        "alice\xf0\x9f\x98\x80",           /* emoji */
        "\xef\xac\x81le",                  /* ﬁ ligature */
        "\xc7\x84",                        /* Ǆ */
        "a@b", "a|b", "a!", "a/b", "a#b", "(alice)", "a+b", "a\"b", "a$",
        "\xe2\x84\x96",                    /* № */
        "\xe2\x85\xa0",                    /* Roman numeral one */
        "\xe3\x85\xa4",                    /* U+3164 Hangul filler, an invisible letter */
        "\xe1\x85\x9f" "a",                /* U+115F Hangul choseong filler */
        "a\xcd\x8f" "b",                   /* U+034F combining grapheme joiner */
        "a\xef\xb8\x8f",                   /* U+FE0F variation selector */
    };
    /* clang-format on */
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++)
        expect_reason(bad[i], strlen(bad[i]), PT_UN_CONFUSABLE_CHAR);
}

static void test_invisible(void **state)
{
    (void)state;
    expect_reason("e\xcc\x81\xcc\x81", 5, PT_UN_INVISIBLE);  /* é + second acute */
    expect_reason("ab\xcc\x88\xcc\x88", 6, PT_UN_INVISIBLE); /* b with two diaereses */
    expect_ok("a\xcc\x81\xcc\x88");                          /* two different marks */
}

static void test_scripts(void **state)
{
    (void)state;
    expect_reason("p\xd0\xb0ypal", 7, PT_UN_MIXED_SCRIPT); /* Cyrillic а */
    expect_reason("\xd0\xb0lice", 6, PT_UN_MIXED_SCRIPT);
    expect_reason("\xce\xb1lpha", 6, PT_UN_MIXED_SCRIPT);     /* Greek α + Latin */
    expect_reason("\xd0\xb8\xce\xb1", 4, PT_UN_MIXED_SCRIPT); /* Cyrillic + Greek */
    expect_reason("\xd0\xb8\xd7\x90", 4, PT_UN_MIXED_SCRIPT); /* Cyrillic + Hebrew */
    assert_int_equal(un_check("p\xd0\xb0ypal")->rc, PT_ERR_INVAL);
    /* clang-format off */
    static const char *const ok[] = {
        "\xd0\xb8\xd0\xb2\xd0\xb0\xd0\xbd",                   /* иван */
        "\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd_1990",              /* Иван_1990 */
        "\xe1\xbc\x88\xce\xbb\xce\xad\xce\xbe\xce\xb1\xce\xbd\xce\xb4\xcf\x81\xce\xbf\xcf\x82", /* Ἀλέξανδρος */
        "\xe3\x82\x86\xe3\x81\x86\xe3\x81\x8d",               /* ゆうき */
        "\xe7\x8e\x8b\xe5\xb0\x8f\xe6\x98\x8e",               /* 王小明 */
        "\xe5\xb1\xb1\xe7\x94\xb0\xe3\x82\x86\xe3\x81\x86\xe3\x81\x8d\xe3\x82\xab", /* 山田ゆうきカ */
        "\xea\xb9\x80\xeb\xaf\xbc\xec\xa4\x80",               /* 김민준 */
        "\xd9\x85\xd8\xad\xd9\x85\xd8\xaf",                   /* محمد */
        "\xd7\x93\xd7\x95\xd7\x93",                           /* דוד */
        "\xe0\xa4\xa6\xe0\xa5\x87\xe0\xa4\xb5",               /* देव */
        "yuki\xe7\x8e\x8b",                                   /* Latin + Han */
        "\xe0\xb8\xaa\xe0\xb8\xa1\xe0\xb8\x8a\xe0\xb8\xb2\xe0\xb8\xa2", /* สมชาย */
    };
    /* clang-format on */
    for (size_t i = 0; i < PT_ARRAY_LEN(ok); i++)
        expect_ok(ok[i]);
    /* digits from two number systems */
    expect_reason("\xd9\xa1\x32\x33", 4, PT_UN_MIXED_NUMBERS); /* ١23 */
    expect_ok("\xd9\x85\xd9\xa1\xd9\xa2");                     /* م١٢ */
}

static void test_skeleton(void **state)
{
    (void)state;
    /* pairs that pass every rule, have different keys, and look alike */
    /* clang-format off */
    static const char *const alike[][2] = {
        {"paypal", "paypaI"},                                    /* capital i */
        {"paypal", "PAYPAL"},                                    /* same key too */
        {"modern", "rnodern"},                                   /* m / rn */
        {"google", "g00gle"},                                    /* o / 0 */
        {"google", "GOOGLE"},
        {"l1", "ll"},                                            /* 1 / l */
        {"ilia", "\xc4\xb1l\xc4\xb1" "a"},                       /* dotless ı */
        {"scope", "\xd1\x95\xd1\x81\xd0\xbe\xd1\x80\xd0\xb5"},   /* Cyrillic ѕсоре */
        {"coco", "\xd1\x81\xd0\xbe\xd1\x81\xd0\xbe"},            /* Cyrillic сосо */
        {"\xce\xbf\xce\xbf", "oo"},                              /* Greek οο */
        {"corn", "com"},                                         /* rn / m again */
    };
    /* clang-format on */
    for (size_t i = 0; i < PT_ARRAY_LEN(alike); i++) {
        expect_same_skeleton(alike[i][0], alike[i][1]);
        if (i != 1 && i != 4) expect_other_key(alike[i][0], alike[i][1]);
    }
    assert_string_equal(un_check("paypaI")->skeleton, "paypal");
    assert_string_equal(un_check("m")->skeleton, "rn");
    /* names that merely resemble each other are distinct */
    expect_other_skeleton("paypal", "paypai");
    expect_other_skeleton("alice", "alicia");
    expect_other_skeleton("\xd0\xb8\xd0\xb2\xd0\xb0\xd0\xbd", "ivan");
    /* the NFC and NFD forms of one name draw the same */
    expect_same_skeleton("Jos\xc3\xa9", "Jose\xcc\x81");
}

static void test_idempotent(void **state)
{
    (void)state;
    /* clang-format off */
    static const char *const names[] = {
        "Alice", "Jose\xcc\x81", "Stra\xc3\x9f\x65", "\xc4\xb0stanbul", "g00gle",
        "\xe1\x84\x80\xe1\x85\xa1", "\xce\x9f\xce\x94\xce\xa5\xce\xa3", "\xe2\x84\xaa" "elvin",
    };
    /* clang-format on */
    for (size_t i = 0; i < PT_ARRAY_LEN(names); i++) {
        un_out a = *un_check(names[i]);
        assert_int_equal(a.why, PT_UN_OK);
        un_out *b = un_check(a.display);
        assert_int_equal(b->why, PT_UN_OK);
        assert_string_equal(b->display, a.display);
        assert_string_equal(b->key, a.key);
        assert_string_equal(b->skeleton, a.skeleton);
        b = un_check(a.key); /* the key of a key is itself */
        if (b->why == PT_UN_OK) assert_string_equal(b->key, a.key);
    }
}

static void test_reason_strings(void **state)
{
    (void)state;
    for (int r = 0; r < PT_UN_REASON_COUNT; r++) {
        const char *s = pt_username_reason_str((pt_username_reason)r);
        assert_non_null(s);
        assert_true(strlen(s) > 10);
        for (int q = 0; q < r; q++)
            assert_string_not_equal(s, pt_username_reason_str((pt_username_reason)q));
    }
    assert_true(strlen(pt_username_reason_str(PT_UN_REASON_COUNT)) > 0);
    assert_true(strlen(pt_username_reason_str((pt_username_reason)-1)) > 0);
    assert_non_null(strstr(pt_username_reason_str(PT_UN_MIXED_SCRIPT), "Cyrillic"));
    assert_non_null(strstr(pt_username_reason_str(PT_UN_TOO_LONG), "32"));
}

/* Many threads check at once, the first of them racing to open the checker. */
#define UN_THREADS 4
#define UN_ROUNDS 200
static void *un_thread(void *arg)
{
    (void)arg;
    static const char *const names[] = {"Alice", "p\xd0\xb0ypal",
                                        "\xd0\xb8\xd0\xb2\xd0\xb0\xd0\xbd", "g00gle"};
    static const pt_username_reason want[] = {PT_UN_OK, PT_UN_MIXED_SCRIPT, PT_UN_OK, PT_UN_OK};
    static const char *const skel[] = {"alice", "", "", "google"};
    char d[PT_USERNAME_DISPLAY_SIZE], k[PT_USERNAME_KEY_SIZE], s[PT_USERNAME_SKELETON_SIZE];
    for (int i = 0; i < UN_ROUNDS; i++) {
        size_t j = (size_t)i % PT_ARRAY_LEN(names);
        pt_username_reason why;
        int rc = pt_username_check(names[j], strlen(names[j]), d, k, s, &why);
        if (why != want[j] || (rc == 0) != (why == PT_UN_OK)) return (void *)1;
        if (skel[j][0] && strcmp(s, skel[j]) != 0) return (void *)1;
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    pthread_t t[UN_THREADS];
    for (int i = 0; i < UN_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, un_thread, NULL), 0);
    for (int i = 0; i < UN_THREADS; i++) {
        void *res;
        assert_int_equal(pthread_join(t[i], &res), 0);
        assert_null(res);
    }
}

int main(void)
{
    /* test_threads first, so that its threads race to open the checker */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_ascii),
        cmocka_unit_test(test_nfc),
        cmocka_unit_test(test_case),
        cmocka_unit_test(test_length),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_bad_utf8),
        cmocka_unit_test(test_control),
        cmocka_unit_test(test_whitespace),
        cmocka_unit_test(test_leading_mark),
        cmocka_unit_test(test_char_limit),
        cmocka_unit_test(test_invisible),
        cmocka_unit_test(test_scripts),
        cmocka_unit_test(test_skeleton),
        cmocka_unit_test(test_idempotent),
        cmocka_unit_test(test_reason_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
