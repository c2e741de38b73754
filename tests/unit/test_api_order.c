/* pt_api_order_by_server: the updates of stored items a sync brings are put in
 * server-id order, each node's among themselves (src/api/api.c). A sender that moved
 * from node 2 to node 1 (its node died) has its later items under smaller ids: those
 * keep the order the cluster's queue delivered them in. */
#include <stdint.h>
#include <string.h>
#include "api/api_int.h"
#include "testutil.h"

#define NODE(n) ((int64_t)(n) << 40)

typedef struct batch {
    uint8_t raw[8][12];
    pt_buf upd[8];
    size_t n;
} batch;

/* An updates.newMessage head with server id sid (0: an ephemeral update, no id). */
static void add(batch *b, int64_t sid)
{
    uint8_t *p = b->raw[b->n];
    pt_put_u32le(p, sid ? PT_TL_UPDATES_NEWMESSAGE_ID : PT_TL_UPDATES_TYPING_ID);
    pt_put_u64le(p + 4, (uint64_t)sid);
    b->upd[b->n] = (pt_buf){.data = p, .len = 12, .cap = 12};
    b->n++;
}

static void check(const batch *b, const int64_t *want)
{
    for (size_t i = 0; i < b->n; i++) {
        int64_t got = (int64_t)pt_get_u64le(b->upd[i].data + 4);
        if (pt_get_u32le(b->upd[i].data) != PT_TL_UPDATES_NEWMESSAGE_ID) got = 0;
        if (got != want[i]) fail_msg("place %zu: server id %lld, expected %lld", i, (long long)got, (long long)want[i]);
    }
}

/* Local mode (node 0): a live push that came before older queued items goes after them;
 * an ephemeral update keeps its place. */
static void test_local_ids_sorted(void **state)
{
    (void)state;
    batch b = {0};
    add(&b, 5), add(&b, 3), add(&b, 0), add(&b, 4);
    pt_api_order_by_server(b.upd, b.n);
    check(&b, (const int64_t[]){3, 4, 0, 5});
}

/* Cluster: two items stored through node 2, then two through node 1 (the sender moved):
 * delivered in that order, kept in that order (sorted by id alone, node 1's would go
 * first). */
static void test_nodes_keep_delivery_order(void **state)
{
    (void)state;
    batch b = {0};
    add(&b, NODE(2) | 5), add(&b, NODE(2) | 6), add(&b, NODE(1) | 7), add(&b, NODE(1) | 8);
    pt_api_order_by_server(b.upd, b.n);
    check(&b, (const int64_t[]){NODE(2) | 5, NODE(2) | 6, NODE(1) | 7, NODE(1) | 8});
}

/* Each node's items in id order, in the places that node's items came in. */
static void test_each_node_sorted_in_its_places(void **state)
{
    (void)state;
    batch b = {0};
    add(&b, NODE(2) | 6), add(&b, NODE(1) | 8), add(&b, 0), add(&b, NODE(2) | 5), add(&b, NODE(1) | 7);
    pt_api_order_by_server(b.upd, b.n);
    check(&b, (const int64_t[]){NODE(2) | 5, NODE(1) | 7, 0, NODE(2) | 6, NODE(1) | 8});
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_ids_sorted),
        cmocka_unit_test(test_nodes_keep_delivery_order),
        cmocka_unit_test(test_each_node_sorted_in_its_places),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
