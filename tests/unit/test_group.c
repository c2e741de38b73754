/* Unit and property tests for src/e2e/group: membership ops, the refusal of
 * unsigned, wrongly signed, non-admin, replayed, gapped and forked ops (what a
 * server could try), rotation after a removal (tied to Megolm: the removed
 * member cannot read the new session), sender-key announcements, domain
 * separation between op kinds and Megolm signatures, codec limits, and storage
 * (round trip, every truncation and flipped byte refused). A seeded random walk
 * checks every op against a model.
 *
 * Seeded: the seed is printed and can be replayed with PT_TEST_SEED=<n>. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "testutil.h"
#include "crypto/pt_crypto.h"
#include "e2e/pt_group.h"
#include "e2e/pt_megolm.h"

static uint64_t g_seed, g_state;

static uint64_t rnd(void)
{
    uint64_t z = (g_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rnd_bytes(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
}

static int setup(void **state)
{
    (void)state;
    g_state = g_seed;
    return 0;
}

/* A person: identity key pair, user id, devices (with their key pairs). */
typedef struct who {
    const char *name;
    uint8_t pk[32], sk[64], seed[32];
    uint8_t dev[4][32], dev_sk[4][64];
} who;

static void make_who(who *w, const char *name)
{
    w->name = name;
    rnd_bytes(w->seed, 32);
    assert_int_equal(pt_ed25519_seed_keypair(w->pk, w->sk, w->seed), 0);
    for (int d = 0; d < 4; d++) {
        uint8_t s[32];
        rnd_bytes(s, 32);
        assert_int_equal(pt_ed25519_seed_keypair(w->dev[d], w->dev_sk[d], s), 0);
    }
}

#define U(w) (const uint8_t *)(w)->name, strlen((w)->name)

static pt_group *create(const who *admin, pt_buf *op)
{
    uint8_t script[32];
    rnd_bytes(script, sizeof script);
    pt_test_env te;
    pt_test_env_init(&te, script, sizeof script);
    pt_buf_reset(op);
    assert_int_equal(pt_group_op_create(op, &te.env, admin->pk, admin->sk, U(admin),
                                        (const uint8_t(*)[32])admin->dev, 2),
                     0);
    pt_err e;
    pt_group *g = pt_group_from_create(op->data, op->len, admin->pk, &e);
    assert_int_equal(e, 0);
    assert_non_null(g);
    return g;
}

/* Builds, signs (with sign_sk) and encodes an op on top of g's head, bypassing the
 * builders' checks: what an attacker can send. */
static void raw_op(pt_buf *out, const pt_group *g, uint8_t kind, const uint8_t signer[32],
                   const uint8_t sign_sk[64], const who *target, const uint8_t (*devs)[32],
                   size_t ndev)
{
    pt_group_op op;
    memset(&op, 0, sizeof op);
    op.kind = kind;
    memcpy(op.group_id, pt_group_id(g), 32);
    op.epoch = pt_group_epoch(g) + 1;
    memcpy(op.prev, pt_group_head(g), 32);
    memcpy(op.signer, signer, 32);
    op.user = (const uint8_t *)target->name;
    op.user_len = strlen(target->name);
    memcpy(op.identity, target->pk, 32);
    if (ndev) memcpy(op.devices, devs, ndev * 32);
    op.ndev = ndev;
    if (sign_sk) assert_int_equal(pt_group_op_sign(&op, sign_sk), 0);
    pt_buf_reset(out);
    assert_int_equal(pt_group_op_encode(&op, out), 0);
}

static void apply_ok(pt_group *g, const pt_buf *op)
{
    assert_int_equal(pt_group_apply(g, op->data, op->len), 0);
}

/* Same epoch, head and members. */
static void assert_same(const pt_group *a, const pt_group *b)
{
    assert_int_equal(pt_group_epoch(a), pt_group_epoch(b));
    assert_memory_equal(pt_group_head(a), pt_group_head(b), 32);
    assert_memory_equal(pt_group_id(a), pt_group_id(b), 32);
    assert_int_equal(pt_group_member_count(a), pt_group_member_count(b));
    assert_int_equal(pt_group_rekey_epoch(a), pt_group_rekey_epoch(b));
    for (size_t i = 0; i < pt_group_member_count(a); i++) {
        pt_group_member_info x, y;
        assert_int_equal(pt_group_member(a, i, &x), 0);
        assert_int_equal(pt_group_member(b, i, &y), 0);
        assert_int_equal(x.user_len, y.user_len);
        assert_memory_equal(x.user, y.user, x.user_len);
        assert_memory_equal(x.identity, y.identity, 32);
        assert_int_equal(x.ndev, y.ndev);
        assert_memory_equal(x.devices, y.devices, x.ndev * 32);
        assert_int_equal(x.admin, y.admin);
    }
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_ops(void **state)
{
    (void)state;
    who alice, bob, carol;
    make_who(&alice, "alice");
    make_who(&bob, "bob");
    make_who(&carol, "carol");
    pt_buf op;
    pt_buf_init(&op);
    pt_group *g = create(&alice, &op);
    pt_err e;
    /* The creator is pinned: another trusted key refuses the group. */
    assert_null(pt_group_from_create(op.data, op.len, bob.pk, &e));
    assert_int_equal(e, PT_ERR_AUTH);
    assert_memory_equal(pt_group_creator(g), alice.pk, 32);
    assert_int_equal(pt_group_epoch(g), 0);
    assert_true(pt_group_is_admin(g, alice.pk));
    assert_true(pt_group_has_device(g, U(&alice), alice.dev[1]));
    assert_false(pt_group_has_device(g, U(&alice), alice.dev[2]));

    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_add_member(g, &op, alice.pk, alice.sk, U(&bob), bob.pk,
                                            (const uint8_t(*)[32])bob.dev, 1),
                     0);
    apply_ok(g, &op);
    assert_int_equal(pt_group_epoch(g), 1);
    assert_false(pt_group_is_admin(g, bob.pk));
    /* bob is no admin yet: his builder call is refused and writes nothing */
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_add_member(g, &op, bob.pk, bob.sk, U(&carol), carol.pk,
                                            (const uint8_t(*)[32])carol.dev, 1),
                     PT_ERR_AUTH);
    assert_int_equal(op.len, 0);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_promote(g, &op, alice.pk, alice.sk, U(&bob)), 0);
    apply_ok(g, &op);
    assert_true(pt_group_is_admin(g, bob.pk));
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_add_member(g, &op, bob.pk, bob.sk, U(&carol), carol.pk,
                                            (const uint8_t(*)[32])carol.dev, 1),
                     0);
    apply_ok(g, &op);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_add_device(g, &op, bob.pk, bob.sk, U(&carol), carol.dev[1]), 0);
    apply_ok(g, &op);
    assert_true(pt_group_has_device(g, U(&carol), carol.dev[1]));
    assert_false(pt_group_rotation_needed(g));
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_remove_device(g, &op, alice.pk, alice.sk, U(&carol), carol.dev[0]),
                     0);
    apply_ok(g, &op);
    assert_false(pt_group_has_device(g, U(&carol), carol.dev[0]));
    assert_true(pt_group_rotation_needed(g));
    assert_int_equal(pt_group_rekey_epoch(g), 5);
    pt_group_rotation_done(g);
    assert_false(pt_group_rotation_needed(g));
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_remove_member(g, &op, alice.pk, alice.sk, U(&carol)), 0);
    apply_ok(g, &op);
    assert_true(pt_group_rotation_needed(g));
    assert_int_equal(pt_group_rekey_epoch(g), 6);
    assert_int_equal(pt_group_member_count(g), 2);
    assert_false(pt_group_has_device(g, U(&carol), carol.dev[1]));

    /* Semantics the builders refuse (PT_ERR_STATE), leaving out alone. */
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_add_member(g, &op, alice.pk, alice.sk, U(&bob), bob.pk,
                                            (const uint8_t(*)[32])bob.dev, 1),
                     PT_ERR_STATE);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_add_member(g, &op, alice.pk, alice.sk, U(&carol), carol.pk,
                                            (const uint8_t(*)[32])alice.dev, 1),
                     PT_ERR_STATE);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_add_member(g, &op, alice.pk, alice.sk, U(&carol), bob.pk,
                                            (const uint8_t(*)[32])carol.dev, 1),
                     PT_ERR_STATE);
    uint8_t twice[2][32];
    memcpy(twice[0], carol.dev[2], 32);
    memcpy(twice[1], carol.dev[2], 32);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_add_member(g, &op, alice.pk, alice.sk, U(&carol), carol.pk,
                                            (const uint8_t(*)[32])twice, 2),
                     PT_ERR_STATE);
    assert_int_equal(pt_group_op_promote(g, &op, alice.pk, alice.sk, U(&bob)), PT_ERR_STATE);
    assert_int_equal(pt_group_op_remove_member(g, &op, alice.pk, alice.sk, U(&carol)),
                     PT_ERR_STATE);
    assert_int_equal(pt_group_op_add_device(g, &op, alice.pk, alice.sk, U(&bob), alice.dev[0]),
                     PT_ERR_STATE);
    assert_int_equal(pt_group_op_remove_device(g, &op, alice.pk, alice.sk, U(&bob), bob.dev[0]),
                     PT_ERR_STATE);
    assert_int_equal(pt_group_op_remove_device(g, &op, alice.pk, alice.sk, U(&alice), bob.dev[0]),
                     PT_ERR_STATE);
    assert_int_equal(op.len, 0);
    /* the last admin cannot go; with two admins one may remove the other */
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_remove_member(g, &op, alice.pk, alice.sk, U(&bob)), 0);
    apply_ok(g, &op);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_remove_member(g, &op, alice.pk, alice.sk, U(&alice)),
                     PT_ERR_STATE);
    assert_int_equal(pt_group_epoch(g), 7);
    pt_group_free(g);
    pt_buf_free(&op);
}

/* What a server (or a non-admin) could try; the state never moves. */
static void test_forgeries_refused(void **state)
{
    (void)state;
    who alice, bob, server, mallory;
    make_who(&alice, "alice");
    make_who(&bob, "bob");
    make_who(&server, "server");
    make_who(&mallory, "mallory");
    pt_buf op, good;
    pt_buf_init(&op);
    pt_buf_init(&good);
    pt_group *g = create(&alice, &op);
    pt_buf create_op;
    pt_buf_init(&create_op);
    assert_int_equal(pt_buf_append(&create_op, op.data, op.len), 0);
    assert_int_equal(pt_group_op_add_member(g, &good, alice.pk, alice.sk, U(&bob), bob.pk,
                                            (const uint8_t(*)[32])bob.dev, 1),
                     0);
    pt_buf first;
    pt_buf_init(&first);
    assert_int_equal(pt_buf_append(&first, good.data, good.len), 0);
    apply_ok(g, &good);
    uint8_t head[32];
    memcpy(head, pt_group_head(g), 32);

    /* unsigned: claims alice, zero signature */
    raw_op(&op, g, PT_GROUP_OP_ADD_DEVICE, alice.pk, NULL, &alice, (const uint8_t(*)[32])server.dev,
           1);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_AUTH);
    /* wrongly signed: claims alice, signed by the server's key */
    raw_op(&op, g, PT_GROUP_OP_ADD_DEVICE, alice.pk, server.sk, &alice,
           (const uint8_t(*)[32])server.dev, 1);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_AUTH);
    /* the server signs as itself: no admin */
    raw_op(&op, g, PT_GROUP_OP_ADD_MEMBER, server.pk, server.sk, &mallory,
           (const uint8_t(*)[32])mallory.dev, 1);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_AUTH);
    raw_op(&op, g, PT_GROUP_OP_ADD_DEVICE, server.pk, server.sk, &bob,
           (const uint8_t(*)[32])server.dev, 1);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_AUTH);
    /* a member who is no admin */
    raw_op(&op, g, PT_GROUP_OP_PROMOTE, bob.pk, bob.sk, &bob, NULL, 0);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_AUTH);
    raw_op(&op, g, PT_GROUP_OP_ADD_DEVICE, bob.pk, bob.sk, &bob, (const uint8_t(*)[32])server.dev,
           1);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_AUTH);
    /* replays: the last op and the CREATE */
    assert_int_equal(pt_group_apply(g, first.data, first.len), PT_ERR_REPLAY);
    assert_int_equal(pt_group_apply(g, create_op.data, create_op.len), PT_ERR_REPLAY);
    /* a validly signed op with a gap, a fork, another group, a second CREATE */
    pt_group_op o;
    raw_op(&op, g, PT_GROUP_OP_PROMOTE, alice.pk, alice.sk, &bob, NULL, 0);
    assert_int_equal(pt_group_op_decode(&o, op.data, op.len), 0);
    o.epoch += 1;
    assert_int_equal(pt_group_op_sign(&o, alice.sk), 0);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_encode(&o, &op), 0);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_STATE);
    o.epoch -= 1;
    o.prev[0] ^= 1;
    assert_int_equal(pt_group_op_sign(&o, alice.sk), 0);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_encode(&o, &op), 0);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_STATE);
    o.prev[0] ^= 1;
    o.group_id[5] ^= 1;
    assert_int_equal(pt_group_op_sign(&o, alice.sk), 0);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_encode(&o, &op), 0);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_STATE);
    raw_op(&op, g, PT_GROUP_OP_CREATE, alice.pk, alice.sk, &alice, (const uint8_t(*)[32])alice.dev,
           1);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_STATE);
    /* every flipped bit of a good op (one seeded bit per byte) is refused */
    raw_op(&op, g, PT_GROUP_OP_ADD_DEVICE, alice.pk, alice.sk, &bob,
           (const uint8_t(*)[32])bob.dev + 1, 1);
    assert_int_equal(pt_group_check(g, op.data, op.len), 0);
    uint8_t *pristine = malloc(op.len);
    memcpy(pristine, op.data, op.len);
    for (size_t k = 0; k < op.len; k++) {
        op.data[k] ^= (uint8_t)(1u << (rnd() % 8));
        assert_int_not_equal(pt_group_apply(g, op.data, op.len), 0);
        memcpy(op.data, pristine, op.len);
    }
    free(pristine);
    /* every truncation, and a byte too many */
    for (size_t k = 0; k < op.len; k++)
        assert_int_not_equal(pt_group_apply(g, op.data, k), 0);
    assert_int_equal(pt_buf_append(&op, "x", 1), 0);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_DECODE);
    assert_int_equal(pt_group_epoch(g), 1);
    assert_memory_equal(pt_group_head(g), head, 32);
    assert_int_equal(pt_group_member_count(g), 2);

    /* A removed admin's signature no longer counts. */
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_promote(g, &op, alice.pk, alice.sk, U(&bob)), 0);
    apply_ok(g, &op);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_remove_member(g, &op, bob.pk, bob.sk, U(&alice)), 0);
    apply_ok(g, &op);
    raw_op(&op, g, PT_GROUP_OP_ADD_MEMBER, alice.pk, alice.sk, &mallory,
           (const uint8_t(*)[32])mallory.dev, 1);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_AUTH);

    pt_buf_free(&first);
    pt_buf_free(&create_op);
    pt_buf_free(&good);
    pt_buf_free(&op);
    pt_group_free(g);
}

/* Removal -> rotation: the remaining members start a new Megolm session, announce
 * it at the new epoch, and the removed member's old key does not open it. Stale and
 * foreign announcements are refused. */
static void test_removal_rotation_and_sender_keys(void **state)
{
    (void)state;
    who alice, bob, carol;
    make_who(&alice, "alice");
    make_who(&bob, "bob");
    make_who(&carol, "carol");
    pt_buf op, ann;
    pt_buf_init(&op);
    pt_buf_init(&ann);
    pt_group *g = create(&alice, &op);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_add_member(g, &op, alice.pk, alice.sk, U(&bob), bob.pk,
                                            (const uint8_t(*)[32])bob.dev, 2),
                     0);
    apply_ok(g, &op);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_add_member(g, &op, alice.pk, alice.sk, U(&carol), carol.pk,
                                            (const uint8_t(*)[32])carol.dev, 1),
                     0);
    apply_ok(g, &op);

    /* bob's first Megolm session, announced and shared with carol */
    uint8_t script[160], sid[32], key[PT_MEGOLM_SESSION_KEY_LEN];
    rnd_bytes(script, sizeof script);
    pt_test_env te;
    pt_test_env_init(&te, script, sizeof script);
    pt_megolm_out *s1 = pt_megolm_out_new(&te.env, NULL);
    pt_megolm_out_id(s1, sid);
    assert_int_equal(pt_group_sender_key_make(g, &ann, U(&bob), bob.dev[1], bob.dev_sk[1], sid, 0),
                     0);
    pt_group_sender_key k;
    assert_int_equal(pt_group_sender_key_verify(g, &k, ann.data, ann.len), 0);
    assert_memory_equal(k.session_id, sid, 32);
    assert_int_equal(k.epoch, 2);
    assert_int_equal(pt_megolm_out_session_key(s1, key), 0);
    pt_megolm_in *carol_in = pt_megolm_in_from_session_key(key, sizeof key, NULL);
    assert_non_null(carol_in);
    /* a device that is not a member device cannot announce, nor sign for another */
    pt_buf bad;
    pt_buf_init(&bad);
    assert_int_equal(
        pt_group_sender_key_make(g, &bad, U(&bob), carol.dev[0], carol.dev_sk[0], sid, 0),
        PT_ERR_STATE);
    /* a flipped bit anywhere is refused */
    for (size_t i = 0; i < ann.len; i++) {
        ann.data[i] ^= 0x10;
        assert_int_not_equal(pt_group_sender_key_verify(g, &k, ann.data, ann.len), 0);
        ann.data[i] ^= 0x10;
    }

    /* carol is removed: rotation needed; bob's old announcement is stale */
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_remove_member(g, &op, alice.pk, alice.sk, U(&carol)), 0);
    apply_ok(g, &op);
    assert_true(pt_group_rotation_needed(g));
    assert_int_equal(pt_group_sender_key_verify(g, &k, ann.data, ann.len), PT_ERR_STATE);
    /* carol's own device can no longer announce */
    pt_buf_reset(&bad);
    assert_int_equal(
        pt_group_sender_key_make(g, &bad, U(&carol), carol.dev[0], carol.dev_sk[0], sid, 0),
        PT_ERR_STATE);

    /* bob rotates */
    rnd_bytes(script, sizeof script);
    pt_test_env_init(&te, script, sizeof script);
    pt_megolm_out *s2 = pt_megolm_out_new(&te.env, NULL);
    uint8_t sid2[32];
    pt_megolm_out_id(s2, sid2);
    pt_buf_reset(&ann);
    assert_int_equal(pt_group_sender_key_make(g, &ann, U(&bob), bob.dev[0], bob.dev_sk[0], sid2, 0),
                     0);
    pt_group_rotation_done(g);
    assert_int_equal(pt_group_sender_key_verify(g, &k, ann.data, ann.len), 0);
    assert_int_equal(k.epoch, 3);
    pt_buf m, p;
    pt_buf_init(&m);
    pt_buf_init(&p);
    assert_int_equal(pt_megolm_out_encrypt(s2, &m, (const uint8_t *)"after carol left", 16), 0);
    assert_int_equal(pt_megolm_in_decrypt(carol_in, &p, NULL, m.data, m.len, 0), PT_ERR_AUTH);
    assert_int_equal(p.len, 0);

    /* an announcement from another group (same people, new group) is refused */
    pt_buf op2;
    pt_buf_init(&op2);
    pt_group *g2 = create(&alice, &op2);
    pt_buf_reset(&op2);
    assert_int_equal(pt_group_op_add_member(g2, &op2, alice.pk, alice.sk, U(&bob), bob.pk,
                                            (const uint8_t(*)[32])bob.dev, 1),
                     0);
    apply_ok(g2, &op2);
    assert_int_equal(pt_group_sender_key_verify(g2, &k, ann.data, ann.len), PT_ERR_STATE);
    pt_group_free(g2);
    pt_buf_free(&op2);

    pt_buf_free(&m);
    pt_buf_free(&p);
    pt_buf_free(&bad);
    pt_megolm_in_free(carol_in);
    pt_megolm_out_free(s1);
    pt_megolm_out_free(s2);
    pt_buf_free(&ann);
    pt_buf_free(&op);
    pt_group_free(g);
}

/* One key signs a Megolm message, a Megolm session key and group ops: no signature
 * of one kind is accepted as another. */
static void test_domain_separation(void **state)
{
    (void)state;
    who alice, bob;
    make_who(&alice, "alice");
    make_who(&bob, "bob");
    pt_buf op, m;
    pt_buf_init(&op);
    pt_buf_init(&m);
    pt_group *g = create(&alice, &op);
    /* a Megolm session whose signing key is alice's identity key */
    uint8_t script[160], key[PT_MEGOLM_SESSION_KEY_LEN];
    rnd_bytes(script, 128);
    memcpy(script + 128, alice.seed, 32);
    pt_test_env te;
    pt_test_env_init(&te, script, sizeof script);
    pt_megolm_out *mo = pt_megolm_out_new(&te.env, NULL);
    uint8_t sid[32];
    pt_megolm_out_id(mo, sid);
    assert_memory_equal(sid, alice.pk, 32);
    assert_int_equal(pt_megolm_out_session_key(mo, key), 0);
    pt_megolm_in *mi = pt_megolm_in_from_session_key(key, sizeof key, NULL);
    assert_non_null(mi);
    assert_int_equal(pt_megolm_out_encrypt(mo, &m, (const uint8_t *)"hi", 2), 0);

    /* Megolm bytes as an op: refused by the codec. */
    assert_int_not_equal(pt_group_apply(g, m.data, m.len), 0);
    assert_int_not_equal(pt_group_apply(g, key, sizeof key), 0);
    /* A Megolm signature (message or session key) as an op signature: refused. */
    raw_op(&op, g, PT_GROUP_OP_ADD_MEMBER, alice.pk, NULL, &bob, (const uint8_t(*)[32])bob.dev, 1);
    memcpy(op.data + op.len - 64, m.data + m.len - 64, 64);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_AUTH);
    memcpy(op.data + op.len - 64, key + PT_MEGOLM_EXPORT_LEN, 64);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_AUTH);
    /* The op signed over its bytes alone (no context string): refused. */
    uint8_t sig[64];
    assert_int_equal(pt_ed25519_sign(sig, op.data, op.len - 64, alice.sk), 0);
    memcpy(op.data + op.len - 64, sig, 64);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_AUTH);
    /* Signed with another kind's context (the sender-key one): refused. */
    const char ctx[] = "PackTrack e2e v1 group-sender-key";
    uint8_t *tmp = malloc(sizeof ctx + op.len);
    memcpy(tmp, ctx, sizeof ctx);
    memcpy(tmp + sizeof ctx, op.data, op.len - 64);
    assert_int_equal(pt_ed25519_sign(sig, tmp, sizeof ctx + op.len - 64, alice.sk), 0);
    memcpy(op.data + op.len - 64, sig, 64);
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_AUTH);
    /* ...and with its own context it passes: the test above is not vacuous. */
    const char own[] = "PackTrack e2e v1 group-add-member";
    memcpy(tmp, own, sizeof own);
    memcpy(tmp + sizeof own, op.data, op.len - 64);
    assert_int_equal(pt_ed25519_sign(sig, tmp, sizeof own + op.len - 64, alice.sk), 0);
    memcpy(op.data + op.len - 64, sig, 64);
    assert_int_equal(pt_group_check(g, op.data, op.len), 0);
    free(tmp);

    /* A signed op as a Megolm message: refused; its signature on a Megolm message:
     * refused. */
    pt_buf p;
    pt_buf_init(&p);
    assert_int_not_equal(pt_megolm_in_decrypt(mi, &p, NULL, op.data, op.len, 0), 0);
    memcpy(m.data + m.len - 64, op.data + op.len - 64, 64);
    assert_int_equal(pt_megolm_in_decrypt(mi, &p, NULL, m.data, m.len, 0), PT_ERR_AUTH);

    /* A REMOVE signature on a PROMOTE (same layout, kind byte changed): refused. */
    apply_ok(g, &op); /* bob joins */
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_remove_member(g, &op, alice.pk, alice.sk, U(&bob)), 0);
    op.data[1] = PT_GROUP_OP_PROMOTE;
    assert_int_equal(pt_group_apply(g, op.data, op.len), PT_ERR_AUTH);
    /* A sender-key announcement signature is not an op signature either. */
    pt_buf ann;
    pt_buf_init(&ann);
    assert_int_equal(
        pt_group_sender_key_make(g, &ann, U(&alice), alice.dev[0], alice.dev_sk[0], sid, 0), 0);
    assert_int_not_equal(pt_group_apply(g, ann.data, ann.len), 0);
    pt_group_sender_key k;
    assert_int_not_equal(pt_group_sender_key_verify(g, &k, op.data, op.len), 0);

    pt_buf_free(&ann);
    pt_buf_free(&p);
    pt_megolm_in_free(mi);
    pt_megolm_out_free(mo);
    pt_buf_free(&m);
    pt_buf_free(&op);
    pt_group_free(g);
}

static void test_codec_limits(void **state)
{
    (void)state;
    who alice, bob;
    make_who(&alice, "alice");
    make_who(&bob, "bob");
    pt_buf op;
    pt_buf_init(&op);
    pt_group *g = create(&alice, &op);
    pt_group_op o;
    assert_int_equal(pt_group_op_decode(&o, op.data, op.len), 0);
    assert_int_equal(o.kind, PT_GROUP_OP_CREATE);
    assert_int_equal(o.ndev, 2);
    for (size_t k = 0; k < op.len; k++)
        assert_int_not_equal(pt_group_op_decode(&o, op.data, k), 0);
    op.data[0] = 2;
    assert_int_equal(pt_group_op_decode(&o, op.data, op.len), PT_ERR_VERSION);
    op.data[0] = 1;
    op.data[1] = 9;
    assert_int_equal(pt_group_op_decode(&o, op.data, op.len), PT_ERR_DECODE);
    op.data[1] = PT_GROUP_SENDER_KEY;
    assert_int_equal(pt_group_op_decode(&o, op.data, op.len), PT_ERR_DECODE);
    uint8_t *big = calloc(1, PT_GROUP_OP_MAX_LEN + 1);
    big[0] = 1;
    assert_int_equal(pt_group_op_decode(&o, big, PT_GROUP_OP_MAX_LEN + 1), PT_ERR_TOO_BIG);
    free(big);
    /* the device count: 0 and 17 refused, 16 (the most) fits in the maximum length */
    uint8_t devs[17][32];
    rnd_bytes(&devs[0][0], sizeof devs);
    pt_group_op w;
    memset(&w, 0, sizeof w);
    w.kind = PT_GROUP_OP_ADD_MEMBER;
    uint8_t name[PT_GROUP_MAX_USER_LEN];
    memset(name, 'n', sizeof name);
    w.user = name;
    w.user_len = sizeof name;
    w.ndev = 16;
    memcpy(w.devices, devs, 16 * 32);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_encode(&w, &op), 0);
    assert_int_equal(op.len, PT_GROUP_OP_MAX_LEN);
    assert_int_equal(pt_group_op_decode(&o, op.data, op.len), 0);
    assert_int_equal(o.ndev, 16);
    size_t count_at = PT_GROUP_OP_HEADER_LEN + 1 + sizeof name + 32;
    op.data[count_at] = 17;
    assert_int_equal(pt_group_op_decode(&o, op.data, op.len), PT_ERR_DECODE);
    op.data[count_at] = 0;
    assert_int_equal(pt_group_op_decode(&o, op.data, op.len), PT_ERR_DECODE);
    w.ndev = 17;
    assert_int_equal(pt_group_op_encode(&w, &op), PT_ERR_INVAL);
    w.ndev = 1;
    w.user_len = 0;
    assert_int_equal(pt_group_op_encode(&w, &op), PT_ERR_INVAL);
    w.user_len = 256;
    assert_int_equal(pt_group_op_encode(&w, &op), PT_ERR_INVAL);
    /* a zero-length user id on the wire */
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_remove_member(g, &op, alice.pk, alice.sk, U(&alice)),
                     PT_ERR_STATE);
    raw_op(&op, g, PT_GROUP_OP_REMOVE_MEMBER, alice.pk, alice.sk, &bob, NULL, 0);
    op.data[PT_GROUP_OP_HEADER_LEN] = 0;
    assert_int_equal(pt_group_op_decode(&o, op.data, op.len), PT_ERR_DECODE);
    /* sender keys */
    pt_group_sender_key k;
    pt_buf_reset(&op);
    uint8_t sid[32] = {1};
    assert_int_equal(
        pt_group_sender_key_make(g, &op, U(&alice), alice.dev[0], alice.dev_sk[0], sid, 7), 0);
    assert_int_equal(pt_group_sender_key_decode(&k, op.data, op.len), 0);
    assert_int_equal(k.first_index, 7);
    for (size_t i = 0; i < op.len; i++)
        assert_int_not_equal(pt_group_sender_key_decode(&k, op.data, i), 0);
    assert_int_equal(pt_buf_append(&op, "", 1), 0);
    assert_int_equal(pt_group_sender_key_decode(&k, op.data, op.len), PT_ERR_DECODE);
    pt_buf_free(&op);
    pt_group_free(g);
}

static void test_storage(void **state)
{
    (void)state;
    who alice, bob, carol;
    make_who(&alice, "alice");
    make_who(&bob, "bob");
    make_who(&carol, "carol");
    pt_buf op, blob, chain;
    pt_buf_init(&op);
    pt_buf_init(&blob);
    pt_buf_init(&chain);
    pt_group *g = create(&alice, &op);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_add_member(g, &op, alice.pk, alice.sk, U(&bob), bob.pk,
                                            (const uint8_t(*)[32])bob.dev, 2),
                     0);
    apply_ok(g, &op);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_add_member(g, &op, alice.pk, alice.sk, U(&carol), carol.pk,
                                            (const uint8_t(*)[32])carol.dev, 1),
                     0);
    apply_ok(g, &op);
    pt_buf_reset(&op);
    assert_int_equal(pt_group_op_remove_device(g, &op, alice.pk, alice.sk, U(&bob), bob.dev[0]), 0);
    apply_ok(g, &op);
    assert_true(pt_group_rotation_needed(g));

    for (int rotated = 0; rotated < 2; rotated++) {
        if (rotated) pt_group_rotation_done(g);
        pt_buf_reset(&blob);
        assert_int_equal(pt_group_serialize(g, &blob), 0);
        pt_err e;
        pt_group *r = pt_group_restore(blob.data, blob.len, alice.pk, &e);
        assert_non_null(r);
        assert_same(g, r);
        assert_int_equal(pt_group_rotation_needed(r), !rotated);
        /* the restored copy keeps accepting the chain */
        pt_buf_reset(&op);
        assert_int_equal(pt_group_op_promote(r, &op, alice.pk, alice.sk, U(&carol)), 0);
        assert_int_equal(pt_group_check(g, op.data, op.len), 0);
        pt_group_free(r);
        assert_null(pt_group_restore(blob.data, blob.len, bob.pk, &e));
        assert_int_equal(e, PT_ERR_AUTH);
    }
    pt_err e;
    for (size_t k = 0; k < blob.len; k++) {
        assert_null(pt_group_restore(blob.data, k, NULL, &e));
        assert_int_not_equal(e, 0);
        blob.data[k] ^= (uint8_t)(1u << (k % 8));
        assert_null(pt_group_restore(blob.data, blob.len, NULL, &e));
        blob.data[k] ^= (uint8_t)(1u << (k % 8));
    }
    /* The chain alone is verified op by op; a joiner rebuilds the same state. */
    assert_int_equal(pt_group_chain(g, &chain), 0);
    pt_group *j = pt_group_from_chain(chain.data, chain.len, alice.pk, &e);
    assert_non_null(j);
    assert_same(g, j);
    pt_group_free(j);
    for (size_t k = 0; k < chain.len; k++) {
        assert_null(pt_group_from_chain(chain.data, k, alice.pk, &e));
        chain.data[k] ^= 0x01;
        j = pt_group_from_chain(chain.data, chain.len, alice.pk, &e);
        /* flipping bit 0 of a length or count always breaks the framing; of an op,
         * its signature or its chain link */
        assert_null(j);
        chain.data[k] ^= 0x01;
    }
    /* a count that says more ops than there are; one too many bytes */
    chain.data[0]++;
    assert_null(pt_group_from_chain(chain.data, chain.len, alice.pk, &e));
    assert_int_equal(e, PT_ERR_DECODE);
    chain.data[0]--;
    assert_int_equal(pt_buf_append(&chain, "", 1), 0);
    assert_null(pt_group_from_chain(chain.data, chain.len, alice.pk, &e));
    assert_int_equal(e, PT_ERR_DECODE);
    /* Without a pinned creator anyone can make a chain; the caller sees who did. */
    pt_buf op2;
    pt_buf_init(&op2);
    pt_group *other = create(&bob, &op2);
    pt_buf_reset(&chain);
    assert_int_equal(pt_group_chain(other, &chain), 0);
    j = pt_group_from_chain(chain.data, chain.len, NULL, &e);
    assert_non_null(j);
    assert_memory_equal(pt_group_creator(j), bob.pk, 32);
    pt_group_free(j);
    assert_null(pt_group_from_chain(chain.data, chain.len, alice.pk, &e));
    assert_int_equal(e, PT_ERR_AUTH);
    pt_group_free(other);
    pt_buf_free(&op2);

    pt_buf_free(&op);
    pt_buf_free(&blob);
    pt_buf_free(&chain);
    pt_group_free(g);
}

/* ---- a seeded random walk against a model --------------------------------------------- */

#define NW 7 /* six people and the server */

typedef struct model_user {
    bool member, admin;
    uint8_t dev[PT_GROUP_MAX_DEVICES][32];
    size_t ndev;
} model_user;

static bool model_device_used(const model_user *mu, const uint8_t d[32])
{
    for (int u = 0; u < NW; u++)
        for (size_t i = 0; mu[u].member && i < mu[u].ndev; i++)
            if (memcmp(mu[u].dev[i], d, 32) == 0) return true;
    return false;
}

static void test_random_walk(void **state)
{
    (void)state;
    static const char *names[NW] = {"u0", "u1", "u2", "u3", "u4", "u5", "server"};
    who w[NW];
    model_user mu[NW];
    memset(mu, 0, sizeof mu);
    for (int i = 0; i < NW; i++)
        make_who(&w[i], names[i]);
    pt_buf op, applied;
    pt_buf_init(&op);
    pt_buf_init(&applied); /* every applied op: u16 len || bytes, for replays */
    size_t napplied = 0;
    /* u0 creates with its first two devices */
    pt_group *g = create(&w[0], &op);
    mu[0].member = mu[0].admin = true;
    memcpy(mu[0].dev, w[0].dev, 64);
    mu[0].ndev = 2;
    size_t accepted = 0, counts[20] = {0};

    for (int step = 0; step < 400; step++) {
        /* now and then, replay an old op */
        if (napplied && rnd() % 20 == 0) {
            size_t pick = (size_t)(rnd() % napplied), at = 0;
            for (size_t i = 0; i < pick; i++)
                at += 2 + (applied.data[at] | applied.data[at + 1] << 8);
            size_t len = applied.data[at] | applied.data[at + 1] << 8;
            assert_int_equal(pt_group_apply(g, applied.data + at + 2, len), PT_ERR_REPLAY);
            continue;
        }
        uint8_t kind = (uint8_t)(2 + rnd() % 5);
        int t = (int)(rnd() % (NW - 1)), s = (int)(rnd() % NW), forge = (int)(rnd() % 10);
        /* mostly admins sign */
        if (rnd() % 3) {
            for (int k = 0; k < NW; k++) {
                int c = (s + k) % NW;
                if (mu[c].member && mu[c].admin) {
                    s = c;
                    break;
                }
            }
        }
        uint8_t devs[3][32];
        size_t ndev = 0;
        if (kind == PT_GROUP_OP_ADD_MEMBER) {
            ndev = 1 + (size_t)(rnd() % 3);
            for (size_t i = 0; i < ndev; i++)
                rnd_bytes(devs[i], 32);
        } else if (kind == PT_GROUP_OP_ADD_DEVICE) {
            ndev = 1;
            rnd_bytes(devs[0], 32);
        } else if (kind == PT_GROUP_OP_REMOVE_DEVICE) {
            ndev = 1;
            if (mu[t].ndev && rnd() % 4)
                memcpy(devs[0], mu[t].dev[rnd() % mu[t].ndev], 32);
            else
                rnd_bytes(devs[0], 32);
        }
        /* sometimes reuse a device someone has */
        if (ndev && kind != PT_GROUP_OP_REMOVE_DEVICE && rnd() % 8 == 0 && mu[0].ndev)
            memcpy(devs[0], mu[0].dev[0], 32);

        pt_group_op o;
        memset(&o, 0, sizeof o);
        o.kind = kind;
        memcpy(o.group_id, pt_group_id(g), 32);
        o.epoch = pt_group_epoch(g) + 1;
        memcpy(o.prev, pt_group_head(g), 32);
        memcpy(o.signer, w[s].pk, 32);
        o.user = (const uint8_t *)w[t].name;
        o.user_len = strlen(w[t].name);
        memcpy(o.identity, w[t].pk, 32);
        memcpy(o.devices, devs, ndev * 32);
        o.ndev = ndev;
        const uint8_t *sk = w[s].sk;
        int expect;
        /* forge: 0 unsigned, 1 signed by someone else, 2 stale epoch, 3 gap, 4 fork */
        if (forge == 2) o.epoch--;
        if (forge == 3) o.epoch++;
        if (forge == 4) o.prev[rnd() % 32] ^= 1;
        if (forge == 1) sk = w[(s + 1) % NW].sk;
        if (forge == 0)
            memset(o.sig, 0, 64);
        else
            assert_int_equal(pt_group_op_sign(&o, sk), 0);

        if (forge <= 1)
            expect = PT_ERR_AUTH;
        else if (forge == 2)
            expect = PT_ERR_REPLAY;
        else if (forge <= 4)
            expect = PT_ERR_STATE;
        else if (!(mu[s].member && mu[s].admin))
            expect = PT_ERR_AUTH;
        else {
            model_user *m = &mu[t];
            bool ok = false;
            size_t admins = 0, members = 0;
            for (int u = 0; u < NW; u++)
                admins += mu[u].member && mu[u].admin, members += mu[u].member;
            switch (kind) {
            case PT_GROUP_OP_ADD_MEMBER:
                ok = !m->member && members < PT_GROUP_MAX_MEMBERS;
                for (size_t i = 0; ok && i < ndev; i++) {
                    ok = !model_device_used(mu, devs[i]);
                    for (size_t j = i + 1; ok && j < ndev; j++)
                        ok = memcmp(devs[i], devs[j], 32) != 0;
                }
                break;
            case PT_GROUP_OP_REMOVE_MEMBER:
                ok = m->member && !(m->admin && admins == 1);
                break;
            case PT_GROUP_OP_PROMOTE:
                ok = m->member && !m->admin;
                break;
            case PT_GROUP_OP_ADD_DEVICE:
                ok = m->member && m->ndev < PT_GROUP_MAX_DEVICES && !model_device_used(mu, devs[0]);
                break;
            case PT_GROUP_OP_REMOVE_DEVICE:
                ok = false;
                for (size_t i = 0; m->member && m->ndev >= 2 && i < m->ndev; i++)
                    ok |= memcmp(m->dev[i], devs[0], 32) == 0;
                break;
            }
            expect = ok ? 0 : PT_ERR_STATE;
        }
        pt_buf_reset(&op);
        assert_int_equal(pt_group_op_encode(&o, &op), 0);
        bool rot = pt_group_rotation_needed(g);
        int rc = pt_group_apply(g, op.data, op.len);
        if (rc != expect)
            fail_msg("step %d: kind %u signer %d target %d forge %d: got %d, model says %d (seed "
                     "%" PRIu64 ")",
                     step, kind, s, t, forge, rc, expect, g_seed);
        counts[(rc == 0 ? 0 : -rc) % 20]++;
        if (rc != 0) {
            assert_int_equal(pt_group_rotation_needed(g), rot);
            continue;
        }
        accepted++;
        uint8_t n[2] = {(uint8_t)op.len, (uint8_t)(op.len >> 8)};
        assert_int_equal(pt_buf_append(&applied, n, 2), 0);
        assert_int_equal(pt_buf_append(&applied, op.data, op.len), 0);
        napplied++;
        model_user *m = &mu[t];
        switch (kind) {
        case PT_GROUP_OP_ADD_MEMBER:
            m->member = true;
            m->admin = false;
            memcpy(m->dev, devs, ndev * 32);
            m->ndev = ndev;
            break;
        case PT_GROUP_OP_REMOVE_MEMBER:
            m->member = false;
            m->ndev = 0;
            break;
        case PT_GROUP_OP_PROMOTE:
            m->admin = true;
            break;
        case PT_GROUP_OP_ADD_DEVICE:
            memcpy(m->dev[m->ndev++], devs[0], 32);
            break;
        case PT_GROUP_OP_REMOVE_DEVICE:
            for (size_t i = 0; i < m->ndev; i++) {
                if (memcmp(m->dev[i], devs[0], 32) != 0) continue;
                memmove(m->dev[i], m->dev[i + 1], (m->ndev - i - 1) * 32);
                m->ndev--;
                break;
            }
            break;
        }
        bool removal = kind == PT_GROUP_OP_REMOVE_MEMBER || kind == PT_GROUP_OP_REMOVE_DEVICE;
        assert_int_equal(pt_group_rotation_needed(g), rot || removal);
        if (removal) assert_int_equal(pt_group_rekey_epoch(g), pt_group_epoch(g));
        if (rnd() % 4 == 0) pt_group_rotation_done(g);
        /* the group and the model agree on every member */
        for (int u = 0; u < NW; u++) {
            assert_int_equal(pt_group_is_admin(g, w[u].pk), mu[u].member && mu[u].admin);
            for (size_t i = 0; i < mu[u].ndev; i++)
                assert_true(pt_group_has_device(g, (const uint8_t *)w[u].name, strlen(w[u].name),
                                                mu[u].dev[i]));
        }
    }
    /* the walk did exercise both outcomes */
    assert_true(accepted >= 20);
    assert_true(counts[-PT_ERR_AUTH] > 0 && counts[-PT_ERR_STATE] > 0 &&
                counts[-PT_ERR_REPLAY] > 0);
    /* a joiner replaying the chain, and a restored copy, agree */
    pt_buf chain, blob;
    pt_buf_init(&chain);
    pt_buf_init(&blob);
    assert_int_equal(pt_group_chain(g, &chain), 0);
    pt_err e;
    pt_group *j = pt_group_from_chain(chain.data, chain.len, w[0].pk, &e);
    assert_non_null(j);
    assert_same(g, j);
    assert_int_equal(pt_group_serialize(g, &blob), 0);
    pt_group *r = pt_group_restore(blob.data, blob.len, w[0].pk, &e);
    assert_non_null(r);
    assert_same(g, r);
    assert_int_equal(pt_group_rotation_needed(r), pt_group_rotation_needed(g));
    pt_group_free(r);
    pt_group_free(j);
    pt_buf_free(&chain);
    pt_buf_free(&blob);
    pt_buf_free(&applied);
    pt_buf_free(&op);
    pt_group_free(g);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    const char *s = getenv("PT_TEST_SEED");
    g_seed = s ? strtoull(s, NULL, 0) : pt_random_u64();
    printf("test_group: seed %" PRIu64 " (replay with PT_TEST_SEED=%" PRIu64 ")\n", g_seed, g_seed);
    fflush(stdout);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_ops, setup),
        cmocka_unit_test_setup(test_forgeries_refused, setup),
        cmocka_unit_test_setup(test_removal_rotation_and_sender_keys, setup),
        cmocka_unit_test_setup(test_domain_separation, setup),
        cmocka_unit_test_setup(test_codec_limits, setup),
        cmocka_unit_test_setup(test_storage, setup),
        cmocka_unit_test_setup(test_random_walk, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
