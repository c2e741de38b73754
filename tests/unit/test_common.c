#include "testutil.h"
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

int main(void)
{
    assert_int_equal(pt_init(), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_roundtrip),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
