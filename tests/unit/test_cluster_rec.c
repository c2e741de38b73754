/* The records cluster mode keeps in its bucket (src/server/cluster_rec.c): each kind
 * encodes and decodes back to what it was, and truncated, overlong or out-of-range
 * input is refused with PT_ERR_DECODE. The fuzz corpus (fuzz_cluster_record) starts
 * from the byte layouts checked here. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "server/pt_cluster.h"
#include "server/pt_server_int.h"

static void test_group_round_trip(void **state)
{
    (void)state;
    static pt_cluster_group g, back;
    static uint8_t buf[PT_CLUSTER_GROUP_REC_MAX];
    g.nm = PT_SERVER_GROUP_MAX_MEMBERS - 3;
    g.ni = 3;
    for (uint32_t i = 0; i < g.nm; i++) memset(g.m[i].user, (int)i, 16), g.m[i].role = (uint8_t)(i % 3);
    for (uint32_t i = 0; i < g.ni; i++) memset(g.inv[i].user, 200 + (int)i, 16), memset(g.inv[i].inviter, 1, 16);
    memset(buf, 0, PT_CLUSTER_VREC_HEAD);
    buf[0] = 1;
    size_t n = pt_cluster_group_encode(buf, &g);
    assert_int_equal(n, PT_CLUSTER_VREC_HEAD + 4 + 17 * g.nm + 32 * g.ni);
    assert_true(n <= PT_CLUSTER_GROUP_REC_MAX);
    assert_int_equal(pt_cluster_group_decode(&back, buf, n), 0);
    assert_int_equal(back.nm, g.nm);
    assert_int_equal(back.ni, g.ni);
    assert_memory_equal(back.m, g.m, sizeof g.m[0] * g.nm);
    assert_memory_equal(back.inv, g.inv, sizeof g.inv[0] * g.ni);
    assert_int_equal(pt_cluster_group_decode(&back, buf, n - 1), PT_ERR_DECODE);
    buf[0] = 2; /* a format we do not know */
    assert_int_equal(pt_cluster_group_decode(&back, buf, n), PT_ERR_DECODE);
    buf[0] = 1;
    buf[PT_CLUSTER_VREC_HEAD + 2 + 16] = 3; /* a role beyond the creator's */
    assert_int_equal(pt_cluster_group_decode(&back, buf, n), PT_ERR_DECODE);
    g.ni = 4; /* one more than fits */
    n = pt_cluster_group_encode(buf, &g);
    assert_int_equal(pt_cluster_group_decode(&back, buf, n), PT_ERR_DECODE);
}

static void test_contact_round_trip(void **state)
{
    (void)state;
    pt_cluster_contact k = {.lo_state = PT_CONTACT_REQUEST_SENT, .hi_state = PT_CONTACT_REQUEST_RECEIVED,
                            .note_len = 5}, back;
    memcpy(k.note, "hello", 5);
    uint8_t buf[PT_CLUSTER_CONTACT_REC_MAX] = {1};
    size_t n = pt_cluster_contact_encode(buf, &k);
    assert_int_equal(n, PT_CLUSTER_VREC_HEAD + 4 + 5);
    assert_int_equal(pt_cluster_contact_decode(&back, buf, n), 0);
    assert_int_equal(back.lo_state, k.lo_state);
    assert_int_equal(back.hi_state, k.hi_state);
    assert_int_equal(back.note_len, 5);
    assert_memory_equal(back.note, "hello", 5);
    assert_int_equal(pt_cluster_contact_decode(&back, buf, n + 1), PT_ERR_DECODE);
    assert_int_equal(pt_cluster_contact_decode(&back, buf, PT_CLUSTER_VREC_HEAD + 3), PT_ERR_DECODE);
    buf[PT_CLUSTER_VREC_HEAD] = PT_CONTACT_BLOCKED + 1;
    assert_int_equal(pt_cluster_contact_decode(&back, buf, n), PT_ERR_DECODE);
    buf[PT_CLUSTER_VREC_HEAD] = PT_CONTACT_BLOCKED;
    buf[0] = 2; /* a format we do not know */
    assert_int_equal(pt_cluster_contact_decode(&back, buf, n), PT_ERR_DECODE);
}

static void test_user_and_prekeys_round_trip(void **state)
{
    (void)state;
    static pt_cluster_user_rec u, ub;
    static uint8_t buf[PT_CLUSTER_USER_REC_MAX + PT_CLUSTER_PREKEYS_MAX];
    memset(u.identity, 7, 32);
    strcpy(u.display, "Ålice");
    strcpy(u.key, "alice");
    u.ndev = 2;
    memset(u.dev[1], 9, 32);
    size_t n = pt_cluster_user_rec_encode(buf, &u);
    assert_int_equal(pt_cluster_user_rec_decode(&ub, buf, n), 0);
    assert_memory_equal(&ub, &u, sizeof u);
    assert_int_equal(pt_cluster_user_rec_decode(&ub, buf, n - 1), PT_ERR_DECODE);
    static pt_cluster_prekeys p, pb;
    p.sig = (pt_cluster_signed){.has = true, .id = 5, .len = 32};
    memset(p.sig.signature, 3, 64);
    p.n = 2;
    p.k[0] = (pt_cluster_prekey){.id = 1, .len = 32};
    p.k[1] = (pt_cluster_prekey){.id = 2, .len = 32};
    n = pt_cluster_prekeys_encode(buf, &p);
    assert_int_equal(pt_cluster_prekeys_decode(&pb, buf, n), 0);
    assert_int_equal(pb.n, 2);
    assert_int_equal(pb.k[1].id, 2);
    assert_memory_equal(pb.sig.signature, p.sig.signature, 64);
    assert_int_equal(pt_cluster_prekeys_decode(&pb, buf, n + 1), PT_ERR_DECODE);
    /* the floor: kept; a record of version 1 (no floor) reads the largest id listed */
    p.floor = 40;
    n = pt_cluster_prekeys_encode(buf, &p);
    assert_int_equal(buf[0], 2);
    assert_int_equal(pt_cluster_prekeys_decode(&pb, buf, n), 0);
    assert_int_equal(pb.floor, 40);
    assert_int_equal(pt_cluster_prekeys_decode(&pb, buf, n - 1), PT_ERR_DECODE);
    buf[0] = 1;
    assert_int_equal(pt_cluster_prekeys_decode(&pb, buf, n - 4), 0);
    assert_int_equal(pb.floor, 2);
    assert_int_equal(pb.n, 2);
    p.n = 0;
    n = pt_cluster_prekeys_encode(buf, &p);
    buf[0] = 1;
    assert_int_equal(pt_cluster_prekeys_decode(&pb, buf, n - 4), 0);
    assert_int_equal(pb.floor, INT32_MIN);
    buf[0] = 3; /* a format we do not know */
    assert_int_equal(pt_cluster_prekeys_decode(&pb, buf, n), PT_ERR_DECODE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_round_trip),
        cmocka_unit_test(test_contact_round_trip),
        cmocka_unit_test(test_user_and_prekeys_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
