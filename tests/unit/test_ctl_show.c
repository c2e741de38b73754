/* packtrackctl's printing of packtrackd's answers (src/ctl/show.c): what each command
 * prints, and an answer with fields missing, of another type, or no JSON at all. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/pt_ctl.h"
#include "testutil.h"

typedef struct {
    char *out, *err;       /* what went to stdout and stderr */
    size_t outlen, errlen; /* their lengths */
    int rc;                /* the exit status */
} shown;

static shown show(const char *cmd, const char *action, const char *answer, bool json)
{
    shown r = {0};
    FILE *out = open_memstream(&r.out, &r.outlen), *err = open_memstream(&r.err, &r.errlen);
    assert_non_null(out);
    assert_non_null(err);
    r.rc = pt_ctl_show(out, err, cmd, action, answer, strlen(answer), json);
    fclose(out);
    fclose(err);
    return r;
}

static void done(shown *r)
{
    free(r->out);
    free(r->err);
}

static void test_answers(void **state)
{
    (void)state;
    const struct {
        const char *cmd, *action, *answer;
        bool json;
        int rc;
        const char *out, *err; /* what each stream must hold, exactly */
    } cases[] = {
        {"user", "ban", "{\"ok\":true,\"name\":\"alice\",\"connections_closed\":2}", false, PT_CTL_EXIT_OK,
         "banned alice (2 connections closed)\n", ""},
        {"user", "delete", "{\"ok\":false,\"error\":\"no user 'zed'\"}", false, PT_CTL_EXIT_FAILED, "",
         "packtrackctl: user: no user 'zed'\n"},
        {"reload", "", "{\"ok\":false}", false, PT_CTL_EXIT_FAILED, "FAIL\n", "packtrackctl: reload: failed\n"},
        {"reload", "", "{\"ok\":true,\"message\":\"2 warnings\"}", false, PT_CTL_EXIT_OK, "OK\n",
         "packtrackctl: 2 warnings\n"},
        {"status", "", "{\"ok\":true,\"version\":\"1.0\",\"pid\":42,\"metrics\":null,\"listen\":[1]}", false,
         PT_CTL_EXIT_OK, "version        1.0\npid            42\nmetrics        -\n", ""},
        {"status", "", "{\"ok\":true,\n\"pid\":42}\n", true, PT_CTL_EXIT_OK, "{\"ok\":true,\"pid\":42}\n", ""},
        {"metrics", "", "{\"ok\":true,\"text\":\"a 1\\nb 2\\n\"}", false, PT_CTL_EXIT_OK, "a 1\nb 2\n", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        shown r = show(cases[i].cmd, cases[i].action, cases[i].answer, cases[i].json);
        if (r.rc != cases[i].rc || strcmp(r.out, cases[i].out) != 0 || strcmp(r.err, cases[i].err) != 0)
            fail_msg("case %zu: rc %d, out '%s', err '%s'", i, r.rc, r.out, r.err);
        done(&r);
    }
}

/* Fields missing or of another type print as "?" or 0, never as "(null)". */
static void test_missing_fields(void **state)
{
    (void)state;
    shown r = show("users", "", "{\"ok\":true,\"users\":[{\"name\":\"bob\"},7,{\"user_id\":5}]}", false);
    assert_int_equal(r.rc, PT_CTL_EXIT_OK);
    assert_null(strstr(r.out, "(null)"));
    assert_non_null(strstr(r.out, "bob "));
    assert_int_equal(r.out[r.outlen - 1], '\n');
    size_t lines = 0;
    for (size_t i = 0; i < r.outlen; i++) lines += r.out[i] == '\n';
    assert_int_equal(lines, 3); /* the header and the two objects */
    done(&r);
    r = show("users", "", "{\"ok\":true,\"users\":{\"name\":\"x\"}}", false); /* not an array */
    assert_int_equal(r.rc, PT_CTL_EXIT_OK);
    assert_null(strchr(strchr(r.out, '\n') + 1, '\n'));
    done(&r);
    r = show("backup", "", "{\"ok\":true,\"file\":3}", false);
    assert_string_equal(r.out, "backup written to ?: format 0, schema 0, 0 bytes of database, 0 users, "
                               "0 queued messages\n");
    done(&r);
    r = show("user", "unban", "{\"ok\":true}", false);
    assert_string_equal(r.out, "unbanned ?\n");
    done(&r);
}

static void test_not_json(void **state)
{
    (void)state;
    const char *bad[] = {"", "nope", "[1,2]", "\"ok\"", "{\"ok\":true", "{\"ok\":true}x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        shown r = show("status", "", bad[i], i % 2 == 0);
        assert_int_equal(r.rc, PT_CTL_EXIT_UNREACHABLE);
        assert_string_equal(r.out, "");
        assert_string_equal(r.err, "packtrackctl: packtrackd's answer is not a JSON object\n");
        done(&r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answers),
        cmocka_unit_test(test_missing_fields),
        cmocka_unit_test(test_not_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
