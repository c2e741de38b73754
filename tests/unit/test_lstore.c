/* The client's sealed local store (src/api/lstore.c): passwords, sealing, moves. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "api/lstore.h"
#include "store/pt_db.h"
#include "testutil.h"

static const char pw[] = "a fine password", pw2[] = "another one";

static void test_create_open_password(void **state)
{
    (void)state;
    const char *home = pt_test_tmpdir("lstore");
    pt_lstore *s;
    assert_int_equal(pt_lstore_open(home, pw, sizeof pw - 1, &s), PT_ERR_NOT_FOUND);
    assert_int_equal(pt_lstore_create(home, pw, sizeof pw - 1, &s), 0);
    char path[400];
    snprintf(path, sizeof path, "%s/store.db", home);
    struct stat stt;
    assert_int_equal(stat(path, &stt), 0);
    assert_int_equal(stt.st_mode & 0777, 0600);
    assert_int_equal(pt_lstore_put(s, "identity", (const uint8_t *)"secret!", 7), 0);
    pt_lstore_close(s);
    pt_lstore *again;
    assert_int_equal(pt_lstore_create(home, pw, sizeof pw - 1, &again), PT_ERR_EXISTS);

    /* a wrong password opens nothing and changes nothing */
    char *before = pt_test_read_file(path, NULL);
    size_t blen;
    free(pt_test_read_file(path, &blen));
    assert_int_equal(pt_lstore_open(home, pw2, sizeof pw2 - 1, &s), PT_ERR_PASSWORD);
    size_t alen;
    char *after = pt_test_read_file(path, &alen);
    assert_int_equal(alen, blen);
    assert_memory_equal(before, after, blen);
    free(before);
    free(after);

    assert_int_equal(pt_lstore_open(home, pw, sizeof pw - 1, &s), 0);
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_lstore_get(s, "identity", &b), 0);
    assert_int_equal(b.len, 7);
    assert_memory_equal(b.data, "secret!", 7);
    pt_buf_reset(&b);
    assert_int_equal(pt_lstore_get(s, "nothing", &b), PT_ERR_NOT_FOUND);
    /* re-sealing: the new password opens it, the old one no longer does */
    assert_int_equal(pt_lstore_passwd(s, pw2, sizeof pw2 - 1), 0);
    pt_lstore_close(s);
    assert_int_equal(pt_lstore_open(home, pw, sizeof pw - 1, &s), PT_ERR_PASSWORD);
    assert_int_equal(pt_lstore_open(home, pw2, sizeof pw2 - 1, &s), 0);
    assert_int_equal(pt_lstore_get(s, "identity", &b), 0);
    assert_memory_equal(b.data, "secret!", 7);
    pt_buf_free(&b);
    pt_lstore_close(s);
}

static void test_sealing_binds_the_row(void **state)
{
    (void)state;
    const char *home = pt_test_tmpdir("lstore2");
    pt_lstore *s;
    assert_int_equal(pt_lstore_create(home, pw, sizeof pw - 1, &s), 0);
    pt_buf sealed, out;
    pt_buf_init(&sealed);
    pt_buf_init(&out);
    const uint8_t row[16] = {1}, other[16] = {2};
    assert_int_equal(pt_lstore_seal(s, "messages", row, 16, (const uint8_t *)"text", 4, &sealed), 0);
    assert_int_equal(sealed.len, 24 + 4 + 16);
    assert_int_equal(pt_lstore_unseal(s, "messages", row, 16, sealed.data, sealed.len, &out), 0);
    assert_int_equal(out.len, 4);
    assert_memory_equal(out.data, "text", 4);
    assert_int_equal(out.data[4], 0); /* usable as a C string */
    /* another row, another table, a flipped bit, a truncation: refused */
    pt_buf_reset(&out);
    assert_int_equal(pt_lstore_unseal(s, "messages", other, 16, sealed.data, sealed.len, &out), PT_ERR_AUTH);
    assert_int_equal(pt_lstore_unseal(s, "contacts", row, 16, sealed.data, sealed.len, &out), PT_ERR_AUTH);
    sealed.data[30] ^= 1;
    assert_int_equal(pt_lstore_unseal(s, "messages", row, 16, sealed.data, sealed.len, &out), PT_ERR_AUTH);
    assert_int_equal(pt_lstore_unseal(s, "messages", row, 16, sealed.data, 20, &out), PT_ERR_DECODE);
    assert_int_equal(out.len, 0);
    /* a kv value moved under another name does not open */
    assert_int_equal(pt_lstore_put(s, "a", (const uint8_t *)"AAAA", 4), 0);
    assert_int_equal(pt_db_exec(pt_lstore_db(s), "INSERT INTO kv(k, v) SELECT 'b', v FROM kv WHERE k = 'a'"), 0);
    assert_int_equal(pt_lstore_get(s, "b", &out), PT_ERR_AUTH);
    /* subkeys differ by label and are stable */
    uint8_t k1[32], k2[32], k3[32];
    pt_lstore_subkey(s, "olm pickle", k1);
    pt_lstore_subkey(s, "other", k2);
    pt_lstore_subkey(s, "olm pickle", k3);
    assert_memory_not_equal(k1, k2, 32);
    assert_memory_equal(k1, k3, 32);
    pt_buf_free(&sealed);
    pt_buf_free(&out);
    pt_lstore_close(s);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_open_password),
        cmocka_unit_test(test_sealing_binds_the_row),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
