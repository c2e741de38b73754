/* Fuzz target for group membership ops and sender-key announcements
 * (src/e2e/group). A fixed group (deterministic keys: alice and carol admins with
 * two devices each, bob a member with one) is restored fresh for every input.
 * The first byte picks a mode (byte % 3):
 *   0: the rest is an op. When pt_group_op_decode accepts it, encoding the result
 *      gives the input back. Apply fails only with the documented codes and then
 *      leaves epoch, head and members as they were; the fuzzer cannot sign, so
 *      success comes from the corpus, and then the epoch moved by one and a
 *      second apply is a replay.
 *   1: the rest is an announcement: decode and verify agree, and a verified one
 *      names a current member device.
 *   2: the rest describes an op that this target signs: kind, signer (one of
 *      the four identities, the fourth no member: the server), target user,
 *      device bytes. Apply it: a non-admin signer is refused with PT_ERR_AUTH, an
 *      accepted op moves the epoch by one, a removal raises rotation needed, and
 *      the chain replayed from scratch reaches the same head.
 * Any broken property abort()s. */
#include <stdlib.h>

#include "fuzz_env.h"
#include "e2e/pt_group.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NID 4
static const char *const names[NID] = {"alice", "bob", "carol", "server"};
static uint8_t id_pk[NID][32], id_sk[NID][64], dev_pk[NID][2][32], dev_sk[NID][2][64];
static pt_buf g_state;

static void keypair(uint8_t pk[32], uint8_t sk[64], uint8_t seed_byte)
{
    uint8_t seed[32];
    fz_key(seed, seed_byte);
    if (pt_ed25519_seed_keypair(pk, sk, seed) != 0) abort();
}

#define U(i) (const uint8_t *)names[i], strlen(names[i])

static void init(void)
{
    if (g_state.data) return;
    if (pt_init() != 0) abort();
    for (int i = 0; i < NID; i++) {
        keypair(id_pk[i], id_sk[i], (uint8_t)(0x10 + i));
        for (int d = 0; d < 2; d++)
            keypair(dev_pk[i][d], dev_sk[i][d], (uint8_t)(0x40 + 2 * i + d));
    }
    fz_env e;
    fz_env_init(&e, 0x47);
    pt_buf op;
    pt_buf_init(&op);
    pt_group *g = NULL;
    if (pt_group_op_create(&op, &e.env, id_pk[0], id_sk[0], U(0), (const uint8_t(*)[32])dev_pk[0],
                           2) ||
        !(g = pt_group_from_create(op.data, op.len, id_pk[0], NULL)))
        abort();
    pt_buf_reset(&op);
    if (pt_group_op_add_member(g, &op, id_pk[0], id_sk[0], U(1), id_pk[1],
                               (const uint8_t(*)[32])dev_pk[1], 1) ||
        pt_group_apply(g, op.data, op.len))
        abort();
    pt_buf_reset(&op);
    if (pt_group_op_add_member(g, &op, id_pk[0], id_sk[0], U(2), id_pk[2],
                               (const uint8_t(*)[32])dev_pk[2], 2) ||
        pt_group_apply(g, op.data, op.len))
        abort();
    pt_buf_reset(&op);
    if (pt_group_op_promote(g, &op, id_pk[0], id_sk[0], U(2)) || pt_group_apply(g, op.data, op.len))
        abort();
    pt_buf_init(&g_state);
    if (pt_group_serialize(g, &g_state) != 0) abort();
    pt_group_free(g);
    pt_buf_free(&op);
}

static pt_group *fresh(void)
{
    pt_group *g = pt_group_restore(g_state.data, g_state.len, id_pk[0], NULL);
    if (!g) abort();
    return g;
}

static bool allowed(int rc)
{
    return rc == PT_ERR_DECODE || rc == PT_ERR_VERSION || rc == PT_ERR_TOO_BIG ||
           rc == PT_ERR_AUTH || rc == PT_ERR_REPLAY || rc == PT_ERR_STATE;
}

/* Applies op; checks that a refusal changes nothing and success moves one epoch. */
static int apply_checked(pt_group *g, const uint8_t *op, size_t len)
{
    uint8_t head[32];
    memcpy(head, pt_group_head(g), 32);
    uint64_t epoch = pt_group_epoch(g);
    size_t n = pt_group_member_count(g);
    bool rot = pt_group_rotation_needed(g);
    int check = pt_group_check(g, op, len);
    int rc = pt_group_apply(g, op, len);
    if (rc != check) abort();
    if (rc != 0) {
        if (!allowed(rc) || pt_group_epoch(g) != epoch || pt_group_member_count(g) != n ||
            memcmp(pt_group_head(g), head, 32) != 0 || pt_group_rotation_needed(g) != rot)
            abort();
        return rc;
    }
    if (pt_group_epoch(g) != epoch + 1 || memcmp(pt_group_head(g), head, 32) == 0) abort();
    if (pt_group_apply(g, op, len) != PT_ERR_REPLAY) abort();
    return 0;
}

static void raw_op(const uint8_t *p, size_t len)
{
    pt_group_op o;
    int drc = pt_group_op_decode(&o, p, len);
    if (drc == 0) {
        pt_buf b;
        pt_buf_init(&b);
        if (pt_group_op_encode(&o, &b) != 0 || b.len != len || memcmp(b.data, p, len) != 0) abort();
        pt_buf_free(&b);
    } else if (drc != PT_ERR_DECODE && drc != PT_ERR_VERSION && drc != PT_ERR_TOO_BIG) {
        abort();
    }
    pt_group *g = fresh();
    int rc = apply_checked(g, p, len);
    if (drc != 0 && rc != drc) abort();
    pt_group_free(g);
}

static void raw_sender_key(const uint8_t *p, size_t len)
{
    pt_group *g = fresh();
    pt_group_sender_key k;
    int drc = pt_group_sender_key_decode(&k, p, len);
    int rc = pt_group_sender_key_verify(g, &k, p, len);
    if (drc != 0 && rc != drc) abort();
    if (rc != 0 && !allowed(rc)) abort();
    if (rc == 0 && !pt_group_has_device(g, k.user, k.user_len, k.device)) abort();
    pt_group_free(g);
}

static void signed_op(const uint8_t *p, size_t len)
{
    if (len < 3) return;
    pt_group *g = fresh();
    pt_group_op o;
    memset(&o, 0, sizeof o);
    o.kind = (uint8_t)(2 + p[0] % 5);
    int s = p[1] % NID, t = (p[1] >> 4) % NID;
    uint8_t n = p[2];
    p += 3;
    len -= 3;
    memcpy(o.group_id, pt_group_id(g), 32);
    o.epoch = pt_group_epoch(g) + 1;
    memcpy(o.prev, pt_group_head(g), 32);
    memcpy(o.signer, id_pk[s], 32);
    o.user = (const uint8_t *)names[t];
    o.user_len = strlen(names[t]);
    memcpy(o.identity, id_pk[t], 32);
    /* devices: whole 32-byte chunks of the input, or (n & 0x80) an existing key */
    o.ndev =
        o.kind == PT_GROUP_OP_ADD_MEMBER ? 1 + n % 3 : (o.kind >= PT_GROUP_OP_ADD_DEVICE ? 1 : 0);
    for (size_t d = 0; d < o.ndev; d++) {
        if ((n & 0x80) || len < 32) {
            memcpy(o.devices[d], dev_pk[(n >> 2) % NID][(n >> 4) & 1], 32);
        } else {
            memcpy(o.devices[d], p, 32);
            p += 32;
            len -= 32;
        }
    }
    pt_buf b;
    pt_buf_init(&b);
    if (pt_group_op_sign(&o, id_sk[s]) != 0 || pt_group_op_encode(&o, &b) != 0) abort();
    bool admin = pt_group_is_admin(g, id_pk[s]);
    int rc = apply_checked(g, b.data, b.len);
    if (!admin && rc != PT_ERR_AUTH) abort();
    if (rc == 0) {
        if (!admin) abort();
        bool removal = o.kind == PT_GROUP_OP_REMOVE_MEMBER || o.kind == PT_GROUP_OP_REMOVE_DEVICE;
        if (removal &&
            (!pt_group_rotation_needed(g) || pt_group_rekey_epoch(g) != pt_group_epoch(g)))
            abort();
        pt_buf chain;
        pt_buf_init(&chain);
        if (pt_group_chain(g, &chain) != 0) abort();
        pt_group *j = pt_group_from_chain(chain.data, chain.len, id_pk[0], NULL);
        if (!j || memcmp(pt_group_head(j), pt_group_head(g), 32) != 0 ||
            pt_group_member_count(j) != pt_group_member_count(g))
            abort();
        pt_group_free(j);
        pt_buf_free(&chain);
    }
    pt_buf_free(&b);
    pt_group_free(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    if (size < 1) return 0;
    switch (data[0] % 3) {
    case 0:
        raw_op(data + 1, size - 1);
        break;
    case 1:
        raw_sender_key(data + 1, size - 1);
        break;
    default:
        signed_op(data + 1, size - 1);
        break;
    }
    return 0;
}
