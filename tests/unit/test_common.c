#include "testutil.h"
#include <unistd.h>
#include "crypto/pt_crypto.h"

static void test_hex_roundtrip(void **state)
{
    (void)state;
    uint8_t in[4] = {0xde, 0xad, 0xbe, 0xef}, out[4];
    char hex[9];
    pt_hex_encode(hex, in, 4);
    assert_string_equal(hex, "deadbeef");
    assert_int_equal(pt_hex_decode(out, 4, hex), 0);
    assert_memory_equal(in, out, 4);
    assert_int_equal(pt_hex_decode(out, 4, "deadbee"), PT_ERR_DECODE);
    assert_int_equal(pt_hex_decode(out, 4, "deadbeefaa"), PT_ERR_DECODE);
    assert_int_equal(pt_hex_decode(out, 4, "deadbeeg"), PT_ERR_DECODE);
}

static void test_base64(void **state)
{
    (void)state;
    /* RFC 4648 section 10 vectors, without padding */
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const enc[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char out[16];
        uint8_t back[16];
        size_t n = 99;
        pt_base64_encode(out, (const uint8_t *)plain[i], strlen(plain[i]));
        assert_string_equal(out, enc[i]);
        assert_int_equal(PT_BASE64_LEN(strlen(plain[i])), strlen(enc[i]));
        assert_int_equal(pt_base64_decode(back, sizeof back, &n, enc[i], strlen(enc[i])), 0);
        assert_int_equal(n, strlen(plain[i]));
        assert_memory_equal(back, plain[i], n);
    }
    uint8_t b[8];
    size_t n;
    assert_int_equal(pt_base64_decode(b, 8, &n, "Zm9v=", 5), PT_ERR_DECODE);
    assert_int_equal(pt_base64_decode(b, 8, &n, "Zm9*", 4), PT_ERR_DECODE);
    assert_int_equal(pt_base64_decode(b, 8, &n, "Z", 1), PT_ERR_DECODE);
    assert_int_equal(pt_base64_decode(b, 2, &n, "Zm9v", 4), PT_ERR_TOO_BIG);
}

static void test_buf(void **state)
{
    (void)state;
    pt_buf b;
    pt_buf_init(&b);
    for (int i = 0; i < 1000; i++) assert_int_equal(pt_buf_append(&b, &i, sizeof i), 0);
    assert_int_equal(b.len, 1000 * sizeof(int));
    pt_buf_consume(&b, 4 * sizeof(int));
    int v;
    memcpy(&v, b.data, sizeof v);
    assert_int_equal(v, 4);
    pt_buf_free(&b);
    assert_null(b.data);
}

static void test_strerror(void **state)
{
    (void)state;
    for (int e = 0; e >= PT_ERR_NOT_FOUND; e--) assert_string_not_equal(pt_strerror(e), "unknown error");
    assert_string_equal(pt_strerror(-9999), "unknown error");
}

static void test_hostport(void **state)
{
    (void)state;
    static const struct {
        const char *in, *host;
        int port; /* -1: refused */
    } cases[] = {
        {"127.0.0.1:7000", "127.0.0.1", 7000}, {"example.org:1", "example.org", 1},
        {"[::1]:7000", "::1", 7000},           {"[fe80::1%eth0]:9", "fe80::1%eth0", 9},
        {"::1:7000", "::1", 7000},             {"h:0", "h", 0},
        {"h:65535", "h", 65535},               {"h:65536", NULL, -1},
        {"h:", NULL, -1},                      {":7000", NULL, -1},
        {"h", NULL, -1},                       {"h:+80", NULL, -1},
        {"h: 80", NULL, -1},                   {"h:80x", NULL, -1},
        {"[]:80", NULL, -1},                   {"[::1:80", NULL, -1},
        {"h:0000080", NULL, -1},               {"", NULL, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char host[64] = "unchanged";
        uint16_t port = 4242;
        int rc = pt_parse_hostport(cases[i].in, host, sizeof host, &port);
        if (cases[i].port < 0) {
            if (rc != PT_ERR_INVAL || strcmp(host, "unchanged") != 0 || port != 4242)
                fail_msg("'%s' was taken: %d %s %u", cases[i].in, rc, host, port);
        } else if (rc != 0 || strcmp(host, cases[i].host) != 0 || port != cases[i].port) {
            fail_msg("'%s': %d '%s' %u", cases[i].in, rc, host, port);
        }
    }
    char hp[PT_HOSTPORT_LEN], back[64];
    uint16_t back_port;
    assert_string_equal(pt_hostport_format(hp, "::1", 7000), "[::1]:7000");
    assert_string_equal(pt_hostport_format(hp, "10.0.0.1", 0), "10.0.0.1:0");
    assert_int_equal(pt_parse_hostport(hp, back, sizeof back, &back_port), 0);
    assert_string_equal(back, "10.0.0.1");
    char small[4];
    uint16_t port;
    assert_int_equal(pt_parse_hostport("abcd:1", small, sizeof small, &port), PT_ERR_INVAL);
    assert_int_equal(pt_parse_hostport("abc:1", small, sizeof small, &port), 0);
}

/* A log line is one line whatever it quotes: control characters come out as \xNN. */
static void test_log_line(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pt_log_set_fd(p[1]);
    pt_log(PT_LOG_ERROR, "name '%s' refused", "a\nb\x1b[31m\xc2\x9b" "c\x7f\xc3\xa9");
    pt_log_set_fd(-1);
    close(p[1]);
    char got[2048];
    ssize_t n = read(p[0], got, sizeof got - 1);
    close(p[0]);
    assert_true(n > 0);
    got[n] = 0;
    const char *msg = strstr(got, " error ");
    assert_non_null(msg);
    assert_string_equal(msg, " error name 'a\\x0ab\\x1b[31m\\x9bc\\x7f\xc3\xa9' refused\n");
    /* a long one is cut, still one line */
    char big[3000];
    memset(big, '\n', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(pipe(p), 0);
    pt_log_set_fd(p[1]);
    pt_log(PT_LOG_ERROR, "%s", big);
    pt_log_set_fd(-1);
    close(p[1]);
    n = read(p[0], got, sizeof got - 1);
    close(p[0]);
    assert_true(n > 1000 && n <= 1024);
    assert_int_equal(got[n - 1], '\n');
    assert_null(memchr(got, '\n', (size_t)n - 1));
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_roundtrip),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_log_line),
        cmocka_unit_test(test_hostport),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
