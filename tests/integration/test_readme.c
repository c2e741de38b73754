/*
 * The README's walkthrough, run as written: every line between the walkthrough
 * markers, with `build/packtrack` pointing at this build, `~` at a fresh
 * directory and --server at a real packtrackd started here. Each line must exit 0;
 * the lines whose comments promise an output are checked for it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "testutil.h"

/* Runs one shell line; stdout into out. */
static int sh(const char *line, char *out, size_t cap)
{
    FILE *p = popen(line, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void test_walkthrough(void **state)
{
    (void)state;
    const char *src = getenv("PT_SOURCE_DIR"), *cli = getenv("PT_PACKTRACK");
    assert_non_null(src);
    assert_non_null(cli);
    char path[1024];
    snprintf(path, sizeof path, "%s/README.md", src);
    char *readme = pt_test_read_file(path, NULL);
    assert_non_null(readme);
    char *begin = strstr(readme, "<!-- walkthrough:begin");
    char *end = begin ? strstr(begin, "<!-- walkthrough:end") : NULL;
    assert_non_null(begin);
    assert_non_null(end);
    begin = strstr(begin, "```sh\n");
    assert_non_null(begin);
    begin += 6;

    pt_test_server srv;
    pt_test_server_start(&srv, NULL, 0, NULL);
    char home[300], server[64];
    snprintf(home, sizeof home, "%s", pt_test_tmpdir("readme"));
    snprintf(server, sizeof server, "127.0.0.1:%u", srv.port);
    setenv("HOME", home, 1);

    static char out[65536];
    char safety[2][200] = {"", ""};
    int nsafety = 0, nlines = 0;
    for (char *line = begin; line < end && strncmp(line, "```", 3) != 0;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = 0;
        char cmd[2048];
        const char *comment = strstr(line, "  # ");
        /* build/packtrack ARGS  ->  $PT_PACKTRACK --server S ARGS */
        if (strncmp(line, "build/packtrack ", 16) == 0)
            snprintf(cmd, sizeof cmd, "%s --server %s %s", cli, server, line + 16);
        else
            snprintf(cmd, sizeof cmd, "%s", line);
        if (strncmp(line, "export ", 7) == 0) { /* the environment of the lines after it */
            char *eq = strchr(line + 7, '=');
            assert_non_null(eq);
            *eq = 0;
            char val[256];
            snprintf(val, sizeof val, "%s", eq + 1);
            size_t vl = strlen(val);
            if (vl >= 2 && val[0] == '\'' && val[vl - 1] == '\'') {
                val[vl - 1] = 0;
                memmove(val, val + 1, vl - 1);
            }
            setenv(line + 7, val, 1);
        } else {
            int rc = sh(cmd, out, sizeof out);
            if (rc != 0) fail_msg("README line `%s` exited %d", line, rc);
            nlines++;
            if (comment && strstr(comment, "alice: hello bob")) assert_non_null(strstr(out, "alice: hello bob"));
            if (comment && strstr(comment, "\"text\":\"hi alice!\"")) {
                assert_non_null(strstr(out, "\"from\":\"bob\""));
                assert_non_null(strstr(out, "\"text\":\"hi alice!\""));
            }
            if (comment && strstr(comment, "bob  offline")) assert_non_null(strstr(out, "bob\toffline\tunverified\tfriend"));
            if (comment && strstr(comment, "user id")) assert_non_null(strstr(out, "user id:"));
            if (strstr(line, " safety ") && !strstr(line, "--verified") && nsafety < 2) {
                size_t l = strlen(out) < sizeof safety[0] - 1 ? strlen(out) : sizeof safety[0] - 1;
                memcpy(safety[nsafety], out, l);
                safety[nsafety++][l] = 0;
            }
        }
        line = nl + 1;
    }
    assert_true(nlines >= 12);
    assert_int_equal(nsafety, 2);
    assert_string_equal(safety[0], safety[1]);
    free(readme);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_walkthrough)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
