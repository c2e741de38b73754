/* Direct addresses (S2WMP REG/LP, docs/PROTOCOL.md §6.9) through libpacktrack against a
 * real packtrackd: alice and bob are friends, carol a stranger. Every wait is bounded. */
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

#include "api/api_int.h" /* PT_API_CALL: calls the library itself never makes */
#include "packtrack.h"
#include "testutil.h"

#define PASSWORD "correct horse"

static pt_test_server srv;
static char server_arg[64];

static pt_ctx *make_user(const char *name)
{
    char home[300];
    snprintf(home, sizeof home, "%s/%s", pt_test_tmpdir("addrs"), name);
    pt_options o = {.home = home,
                    .server = server_arg,
                    .server_fingerprint = srv.fingerprint,
                    .timeout_ms = 5000};
    pt_err err;
    pt_ctx *c = pt_create(&o, PASSWORD, name, &err);
    if (!c) fail_msg("create %s: %s (%s)", name, pt_strerror(err), pt_last_error(NULL));
    return c;
}

static bool contact_is(pt_ctx *c, const char *name, pt_contact_state want)
{
    pt_contact *cs;
    size_t n;
    bool ok = false;
    if (pt_contacts(c, &cs, &n) != 0) return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(cs[i].name, name) == 0 && cs[i].state == want) ok = true;
    pt_free(cs);
    return ok;
}

static void wait_contact(pt_ctx *c, const char *name, pt_contact_state want)
{
    for (int i = 0; i < 50; i++) {
        if (contact_is(c, name, want)) return;
        pt_sync(c, 200);
    }
    fail_msg("%s never reached state %d", name, (int)want);
}

/* This device's key prefix (pt_device.id, 32 hex digits). */
static void this_device(pt_ctx *c, char id[PT_ID_HEX_LEN])
{
    pt_device *ds;
    size_t n;
    assert_int_equal(pt_devices(c, &ds, &n), 0);
    id[0] = 0;
    for (size_t i = 0; i < n; i++)
        if (ds[i].this_device) snprintf(id, PT_ID_HEX_LEN, "%s", ds[i].id);
    pt_free(ds);
    assert_true(id[0]);
}

/* pt_addr_lookup that must succeed; returns the count, entries in *out. */
static size_t lookup(pt_ctx *c, const char *name, pt_peer_addr **out)
{
    size_t n = 99;
    int rc = pt_addr_lookup(c, name, out, &n);
    if (rc) fail_msg("lookup of %s: %s (%s)", name, pt_strerror(rc), pt_last_error(c));
    if (n == 0) assert_null(*out);
    return n;
}

static bool has_addr(const pt_peer_addr *a, size_t n, const char *addr, uint16_t port,
                     const char *dev)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i].addr, addr) == 0 && a[i].port == port &&
            strncasecmp(a[i].device, dev, 32) == 0 && strlen(a[i].device) == 64 &&
            a[i].registered_at_ms > 0)
            return true;
    return false;
}

/* Waits (~5 s at most) until c's lookup of name has `want` entries. */
static void wait_count(pt_ctx *c, const char *name, size_t want)
{
    size_t n = 0;
    for (int i = 0; i < 50; i++) {
        pt_peer_addr *a;
        n = lookup(c, name, &a);
        pt_free(a);
        if (n == want) return;
        usleep(100 * 1000);
    }
    fail_msg("lookup of %s: %zu entries, expected %zu", name, n, want);
}

/* The registration limit is once a second per device. */
static void next_second(void)
{
    usleep(1100 * 1000);
}

/* addr.register with raw fields, as a client that skipped the library's checks
 * would send it; returns rc, and the server's error text in last_error. */
static int raw_register(pt_ctx *c, const uint8_t (*addrs)[16], const uint32_t *lens, uint32_t n,
                        int32_t port)
{
    pt_tl_bytes items[16];
    for (uint32_t i = 0; i < n; i++)
        items[i] = (pt_tl_bytes){addrs[i], lens[i]};
    int rc;
    PT_API_CALL(rc, c, NULL, addr_register, q.addrs = (pt_tl_vec_bytes){n, n ? items : NULL};
                q.port = port);
    return rc;
}

static void test_register_lookup(void **state)
{
    (void)state;
    assert_int_equal(pt_init(), 0);
    pt_test_server_start(&srv, NULL, 0, NULL);
    snprintf(server_arg, sizeof server_arg, "127.0.0.1:%u", srv.port);
    pt_ctx *alice = make_user("alice"), *bob = make_user("bob"), *carol = make_user("carol");
    assert_int_equal(pt_friend_add(alice, "bob", NULL), 0);
    wait_contact(bob, "alice", PT_CONTACT_STATE_REQUEST_RECEIVED);
    assert_int_equal(pt_friend_accept(bob, "alice"), 0);
    wait_contact(alice, "bob", PT_CONTACT_STATE_FRIEND);
    char bob_dev[PT_ID_HEX_LEN];
    this_device(bob, bob_dev);
    pt_peer_addr *a;

    /* nothing registered yet: opt-in */
    assert_int_equal(lookup(alice, "bob", &a), 0);

    /* bob registers two addresses; alice (a friend) sees them with bob's device key */
    const char *two[] = {"192.0.2.10", "2001:db8::7"};
    assert_int_equal(pt_addr_register(bob, two, 2, 4242), 0);
    size_t n = lookup(alice, "bob", &a);
    assert_int_equal(n, 2);
    assert_true(has_addr(a, n, "192.0.2.10", 4242, bob_dev));
    assert_true(has_addr(a, n, "2001:db8::7", 4242, bob_dev));
    pt_free(a);

    /* carol (a stranger) gets an empty list, not an error */
    assert_int_equal(lookup(carol, "bob", &a), 0);
    /* bob's own lookup lists his other devices only: he has none */
    assert_int_equal(lookup(bob, "bob", &a), 0);
    /* no such user */
    size_t m = 7;
    assert_int_equal(pt_addr_lookup(alice, "nobody-here", &a, &m), PT_ERR_NOT_FOUND);
    assert_int_equal(m, 0);
    assert_null(a);

    /* invisible: alice sees nothing; visible again: the registration is still there */
    assert_int_equal(pt_set_status(bob, PT_PRESENCE_INVISIBLE), 0);
    assert_int_equal(lookup(alice, "bob", &a), 0);
    assert_int_equal(pt_set_status(bob, PT_PRESENCE_ONLINE), 0);
    assert_int_equal(lookup(alice, "bob", &a), 2);
    pt_free(a);

    /* at most one registration a second */
    const char *one[] = {"198.51.100.1"};
    assert_int_equal(pt_addr_register(bob, one, 1, 5000), PT_ERR_REFUSED);
    assert_non_null(strstr(pt_last_error(bob), "FLOOD_WAIT"));

    /* the library refuses what it can check */
    const char *bad[] = {"not-an-address"};
    assert_int_equal(pt_addr_register(bob, bad, 1, 5000), PT_ERR_INVAL);
    const char *nine[] = {"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5",
                          "192.0.2.6", "192.0.2.7", "192.0.2.8", "192.0.2.9"};
    assert_int_equal(pt_addr_register(bob, nine, 9, 5000), PT_ERR_INVAL);
    assert_int_equal(pt_addr_register(bob, one, 1, 0), PT_ERR_INVAL);

    /* the server refuses the rest, each with its code (and none of them counts
     * towards the rate limit) */
    next_second();
    uint8_t raw[9][16] = {{0}};
    uint32_t lens[9];
    for (int i = 0; i < 9; i++) {
        raw[i][10] = raw[i][11] = 0xff;
        raw[i][12] = 192, raw[i][14] = 2, raw[i][15] = (uint8_t)(i + 1);
        lens[i] = 16;
    }
    lens[0] = 4;
    assert_int_equal(raw_register(bob, raw, lens, 1, 5000), PT_ERR_REFUSED);
    assert_string_equal(pt_last_error(bob), "ADDR_INVALID");
    lens[0] = 16;
    assert_int_equal(raw_register(bob, raw, lens, 9, 5000), PT_ERR_REFUSED);
    assert_string_equal(pt_last_error(bob), "TOO_MANY_ADDRS");
    assert_int_equal(raw_register(bob, raw, lens, 1, 0), PT_ERR_REFUSED);
    assert_string_equal(pt_last_error(bob), "PORT_INVALID");
    assert_int_equal(raw_register(bob, raw, lens, 1, 70000), PT_ERR_REFUSED);
    assert_string_equal(pt_last_error(bob), "PORT_INVALID");
    uint8_t mcast[1][16] = {{0xff, 0x02, [15] = 1}}, zero[1][16] = {{0}};
    assert_int_equal(raw_register(bob, mcast, lens, 1, 5000), PT_ERR_REFUSED);
    assert_string_equal(pt_last_error(bob), "ADDR_INVALID");
    assert_int_equal(raw_register(bob, zero, lens, 1, 5000), PT_ERR_REFUSED);
    assert_string_equal(pt_last_error(bob), "ADDR_INVALID");
    /* the refused calls changed nothing */
    assert_int_equal(lookup(alice, "bob", &a), 2);
    pt_free(a);

    /* re-registering replaces */
    assert_int_equal(pt_addr_register(bob, one, 1, 5000), 0);
    n = lookup(alice, "bob", &a);
    assert_int_equal(n, 1);
    assert_true(has_addr(a, n, "198.51.100.1", 5000, bob_dev));
    pt_free(a);

    /* an empty list withdraws */
    next_second();
    assert_int_equal(pt_addr_register(bob, NULL, 0, 0), 0);
    assert_int_equal(lookup(alice, "bob", &a), 0);

    /* bob's registration goes with his connection */
    next_second();
    assert_int_equal(pt_addr_register(bob, two, 2, 4242), 0);
    assert_int_equal(lookup(alice, "bob", &a), 2);
    pt_free(a);
    pt_close(bob);
    wait_count(alice, "bob", 0);

    pt_close(alice);
    pt_close(carol);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

/* A user's other devices see each other's registrations; a friend sees them all. */
static void test_linked_devices(void **state)
{
    (void)state;
    pt_test_server_start(&srv, NULL, 0, NULL);
    snprintf(server_arg, sizeof server_arg, "127.0.0.1:%u", srv.port);
    pt_ctx *alice = make_user("alice"), *bob = make_user("bob");
    char code[PT_LINK_CODE_MAX];
    assert_int_equal(pt_device_link_code(bob, code), 0);
    char home[300];
    snprintf(home, sizeof home, "%s/bob2", pt_test_tmpdir("addrs"));
    pt_options o = {.home = home,
                    .server = server_arg,
                    .server_fingerprint = srv.fingerprint,
                    .timeout_ms = 5000};
    pt_err err;
    pt_ctx *bob2 = pt_create_linked(&o, PASSWORD, code, &err);
    if (!bob2) fail_msg("link: %s (%s)", pt_strerror(err), pt_last_error(NULL));
    assert_int_equal(pt_friend_add(alice, "bob", NULL), 0);
    wait_contact(bob, "alice", PT_CONTACT_STATE_REQUEST_RECEIVED);
    assert_int_equal(pt_friend_accept(bob, "alice"), 0);
    wait_contact(alice, "bob", PT_CONTACT_STATE_FRIEND);
    char dev1[PT_ID_HEX_LEN], dev2[PT_ID_HEX_LEN];
    this_device(bob, dev1);
    this_device(bob2, dev2);

    const char *a1[] = {"192.0.2.1"}, *a2[] = {"192.0.2.2", "fe80::1"};
    assert_int_equal(pt_addr_register(bob, a1, 1, 1111), 0);
    assert_int_equal(pt_addr_register(bob2, a2, 2, 2222), 0);
    pt_peer_addr *a;
    size_t n = lookup(bob, "bob", &a); /* bob sees bob2's, not his own */
    assert_int_equal(n, 2);
    assert_true(has_addr(a, n, "192.0.2.2", 2222, dev2));
    assert_true(has_addr(a, n, "fe80::1", 2222, dev2));
    pt_free(a);
    n = lookup(bob2, "bob", &a);
    assert_int_equal(n, 1);
    assert_true(has_addr(a, n, "192.0.2.1", 1111, dev1));
    pt_free(a);
    n = lookup(alice, "bob", &a);
    assert_int_equal(n, 3);
    assert_true(has_addr(a, n, "192.0.2.1", 1111, dev1));
    assert_true(has_addr(a, n, "192.0.2.2", 2222, dev2));
    pt_free(a);

    /* one device leaving takes only its own registration */
    pt_close(bob2);
    wait_count(alice, "bob", 1);

    pt_close(alice);
    pt_close(bob);
    assert_int_equal(pt_test_server_stop(&srv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_lookup),
        cmocka_unit_test(test_linked_devices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
