/*
 * The secure heap behind pt_secure_alloc (src/crypto/crypto.c): blocks come from
 * one arena once it exists, are zeroed when handed out and wiped when given back,
 * spill over to sodium_malloc() when full (an eighth of it is left to OpenSSL's
 * own secure allocations), and blocks made before it are still freed the right way.
 * One heap per process: the tests run in order.
 */
#include <stdio.h>
#include <stdlib.h>

#include <openssl/crypto.h>

#include "crypto/pt_crypto.h"
#include "testutil.h"

#define HEAP (64 * 1024) /* the smallest heap: 128 blocks of 512 bytes */

static uint8_t *before; /* a block made before the heap */

static bool all(const uint8_t *p, size_t len, uint8_t v)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != v) return false;
    return true;
}

static void test_without_heap(void **state)
{
    (void)state;
    pt_secure_stats st;
    pt_secure_get_stats(&st);
    assert_int_equal(st.heap_size, 0);
    assert_non_null(before = pt_secure_alloc(100));
    assert_true(all(before, 100, 0));
    memset(before, 0x5a, 100);
}

static void test_init(void **state)
{
    (void)state;
    size_t got = 0;
    bool locked = false;
    int rc = pt_secure_heap_init(HEAP - 1000, &got, &locked);
#ifdef PT_SANITIZE_BUILD
    assert_int_equal(rc, PT_ERR_REFUSED);
    printf("sanitizer build: no secure heap (a mapping group per block keeps overflows visible); "
           "the heap tests check only that blocks still work\n");
#else
    assert_int_equal(rc, 0);
    assert_int_equal(got, HEAP); /* rounded up to a power of two */
    printf("secure heap of %zu bytes, %s\n", got, locked ? "locked" : "not locked (RLIMIT_MEMLOCK)");
    assert_int_equal(pt_secure_heap_init(HEAP, NULL, NULL), PT_ERR_EXISTS);
    pt_secure_stats st;
    pt_secure_get_stats(&st);
    assert_int_equal(st.heap_size, HEAP);
    assert_int_equal(st.heap_used, 0);
#endif
}

static void test_blocks_from_heap(void **state)
{
    (void)state;
    pt_secure_stats s0, s1, s2;
    pt_secure_get_stats(&s0);
    uint8_t *a = pt_secure_alloc(56), *b = pt_secure_alloc(472);
    assert_non_null(a);
    assert_non_null(b);
    assert_true(all(a, 56, 0));
    assert_true(all(b, 472, 0));
    memset(a, 0xaa, 56);
    memset(b, 0xbb, 472);
    pt_secure_get_stats(&s1);
#ifndef PT_SANITIZE_BUILD
    assert_int_equal(s1.heap_used - s0.heap_used, 64 + 512); /* powers of two, 64 at least */
    assert_int_equal(s1.spilled, s0.spilled);
#endif
    pt_secure_free(a);
    pt_secure_free(b);
    pt_secure_get_stats(&s2);
    assert_int_equal(s2.heap_used, s0.heap_used);
}

static void test_free_wipes(void **state)
{
    (void)state;
#ifdef PT_SANITIZE_BUILD
    /* no heap in sanitizer builds: a freed block is unmapped, nothing left to read */
    printf("test_free_wipes: skipped in sanitizer builds (freed blocks are unmapped; the "
           "normal build checks the wipe)\n");
    skip();
#else
    uint8_t *p = pt_secure_alloc(512);
    assert_non_null(p);
    memset(p, 0xcc, 512);
    pt_secure_free(p);
    /* still inside the arena (mapped); the allocator keeps its free-list links in
     * the first bytes of a free block, the rest must be zero */
    assert_true(all(p + 32, 512 - 32, 0));
    /* and the same block comes back zeroed */
    uint8_t *q = pt_secure_alloc(512);
    assert_ptr_equal(p, q);
    assert_true(all(q, 512, 0));
    pt_secure_free(q);
#endif
}

static void test_full_heap_spills(void **state)
{
    (void)state;
    enum { N = HEAP / 512 + 4 };
    uint8_t *p[N];
    pt_secure_stats s0, s1, s2;
    pt_secure_get_stats(&s0);
    for (int i = 0; i < N; i++) {
        assert_non_null(p[i] = pt_secure_alloc(400));
        assert_true(all(p[i], 400, 0));
        memset(p[i], i, 400);
    }
    pt_secure_get_stats(&s1);
#ifndef PT_SANITIZE_BUILD
    /* ours stop an eighth short of the end: the rest stays OpenSSL's */
    size_t fit = (s1.heap_used - s0.heap_used) / 512;
    assert_true(s1.heap_used <= HEAP - HEAP / 8);
    assert_true(s1.heap_used > HEAP - HEAP / 8 - 512);
    assert_int_equal(s1.spilled - s0.spilled, N - fit);
    void *own = CRYPTO_secure_malloc(2048, NULL, 0); /* OpenSSL's own, e.g. a DRBG */
    assert_non_null(own);
    assert_true(CRYPTO_secure_allocated(own));
    CRYPTO_secure_clear_free(own, 2048, NULL, 0);
#endif
    for (int i = 0; i < N; i++) {
        assert_true(all(p[i], 400, (uint8_t)i)); /* no two blocks overlap */
        pt_secure_free(p[i]);
    }
    pt_secure_get_stats(&s2);
    assert_int_equal(s2.heap_used, 0);
}

static void test_block_from_before(void **state)
{
    (void)state;
    assert_true(all(before, 100, 0x5a));
    pt_secure_free(before); /* a sodium_malloc block: freed as one */
    before = NULL;
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_without_heap),     cmocka_unit_test(test_init),
        cmocka_unit_test(test_blocks_from_heap), cmocka_unit_test(test_free_wipes),
        cmocka_unit_test(test_full_heap_spills), cmocka_unit_test(test_block_from_before),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
