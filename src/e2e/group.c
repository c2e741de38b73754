/* Group membership as a signed hash chain of admin operations (see pt_group.h and
 * docs/PROTOCOL.md §8.2, "Groups"). */
#include "e2e/pt_group.h"

#include <stdlib.h>

#define CHAIN_CONTEXT "PackTrack e2e v1 group-chain"
#define STATE_MAGIC "PTGS"
#define STATE_VERSION 1
#define STATE_FLAG_ROTATE 1u
#define CHECKSUM_LEN PT_SHA256_LEN
#define OFF_KIND 1
#define OFF_GROUP 2
#define OFF_EPOCH (OFF_GROUP + PT_GROUP_ID_LEN)
#define OFF_PREV (OFF_EPOCH + 8)
#define OFF_SIGNER (OFF_PREV + PT_GROUP_HASH_LEN)

/* What each kind's signature covers begins with its own context string, NUL
 * included, so no signature of one kind (or of Megolm) verifies as another. */
static const char *const contexts[] = {
    [PT_GROUP_OP_CREATE] = "PackTrack e2e v1 group-create",
    [PT_GROUP_OP_ADD_MEMBER] = "PackTrack e2e v1 group-add-member",
    [PT_GROUP_OP_REMOVE_MEMBER] = "PackTrack e2e v1 group-remove-member",
    [PT_GROUP_OP_PROMOTE] = "PackTrack e2e v1 group-promote",
    [PT_GROUP_OP_ADD_DEVICE] = "PackTrack e2e v1 group-add-device",
    [PT_GROUP_OP_REMOVE_DEVICE] = "PackTrack e2e v1 group-remove-device",
    [PT_GROUP_SENDER_KEY] = "PackTrack e2e v1 group-sender-key",
};

static bool has_member_body(uint8_t kind)
{
    return kind == PT_GROUP_OP_CREATE || kind == PT_GROUP_OP_ADD_MEMBER;
}
static bool has_device_body(uint8_t kind)
{
    return kind == PT_GROUP_OP_ADD_DEVICE || kind == PT_GROUP_OP_REMOVE_DEVICE;
}
static bool is_op_kind(uint8_t kind)
{
    return kind >= PT_GROUP_OP_CREATE && kind <= PT_GROUP_OP_REMOVE_DEVICE;
}

/* sig over context(kind) || NUL || msg */
static int sign_ctx(uint8_t sig[static PT_ED25519_SIG_LEN], uint8_t kind, const uint8_t *msg,
                    size_t len, const uint8_t sk[static PT_ED25519_SK_LEN])
{
    size_t clen = strlen(contexts[kind]) + 1;
    uint8_t *tmp = malloc(clen + len);
    if (!tmp) return PT_ERR_NOMEM;
    memcpy(tmp, contexts[kind], clen);
    memcpy(tmp + clen, msg, len);
    int rc = pt_ed25519_sign(sig, tmp, clen + len, sk);
    free(tmp);
    return rc;
}

static int verify_ctx(const uint8_t sig[static PT_ED25519_SIG_LEN], uint8_t kind,
                      const uint8_t *msg, size_t len, const uint8_t pk[static PT_GROUP_KEY_LEN])
{
    size_t clen = strlen(contexts[kind]) + 1;
    uint8_t *tmp = malloc(clen + len);
    if (!tmp) return PT_ERR_NOMEM;
    memcpy(tmp, contexts[kind], clen);
    memcpy(tmp + clen, msg, len);
    int rc = pt_ed25519_verify(sig, tmp, clen + len, pk) == 0 ? 0 : PT_ERR_AUTH;
    free(tmp);
    return rc;
}

/* ---- the op codec -------------------------------------------------------------- */

/* A bounds-checked cursor. */
typedef struct rd {
    const uint8_t *p;
    size_t left;
} rd;

static const uint8_t *take(rd *r, size_t n)
{
    if (r->left < n) return NULL;
    const uint8_t *q = r->p;
    r->p += n;
    r->left -= n;
    return q;
}

static int take_copy(rd *r, void *dst, size_t n)
{
    const uint8_t *q = take(r, n);
    if (!q) return PT_ERR_DECODE;
    memcpy(dst, q, n);
    return 0;
}

static int take_user(rd *r, const uint8_t **user, size_t *user_len)
{
    const uint8_t *n = take(r, 1);
    if (!n || *n == 0 || !(*user = take(r, *n))) return PT_ERR_DECODE;
    *user_len = *n;
    return 0;
}

int pt_group_op_decode(pt_group_op *op, const uint8_t *buf, size_t len)
{
    memset(op, 0, sizeof *op);
    if (len > PT_GROUP_OP_MAX_LEN) return PT_ERR_TOO_BIG;
    if (len < 2) return PT_ERR_DECODE;
    if (buf[0] != PT_GROUP_VERSION) return PT_ERR_VERSION;
    if (!is_op_kind(buf[OFF_KIND])) return PT_ERR_DECODE;
    rd r = {buf + 2, len - 2};
    const uint8_t *q;
    op->kind = buf[OFF_KIND];
    if (take_copy(&r, op->group_id, PT_GROUP_ID_LEN) != 0 || !(q = take(&r, 8)) ||
        take_copy(&r, op->prev, PT_GROUP_HASH_LEN) != 0 ||
        take_copy(&r, op->signer, PT_GROUP_KEY_LEN) != 0 ||
        take_user(&r, &op->user, &op->user_len) != 0)
        return PT_ERR_DECODE;
    op->epoch = pt_get_u64le(q);
    if (has_member_body(op->kind)) {
        if (take_copy(&r, op->identity, PT_GROUP_KEY_LEN) != 0 || !(q = take(&r, 1)) || *q == 0 ||
            *q > PT_GROUP_MAX_DEVICES ||
            take_copy(&r, op->devices, (size_t)*q * PT_GROUP_KEY_LEN) != 0)
            return PT_ERR_DECODE;
        op->ndev = *q;
    } else if (has_device_body(op->kind)) {
        if (take_copy(&r, op->devices[0], PT_GROUP_KEY_LEN) != 0) return PT_ERR_DECODE;
        op->ndev = 1;
    }
    if (take_copy(&r, op->sig, PT_ED25519_SIG_LEN) != 0 || r.left != 0) return PT_ERR_DECODE;
    return 0;
}

/* The encoding without the signature. */
static int encode_body(const pt_group_op *op, pt_buf *out)
{
    if (!is_op_kind(op->kind) || !op->user || op->user_len == 0 ||
        op->user_len > PT_GROUP_MAX_USER_LEN)
        return PT_ERR_INVAL;
    if (has_member_body(op->kind) && (op->ndev == 0 || op->ndev > PT_GROUP_MAX_DEVICES))
        return PT_ERR_INVAL;
    uint8_t head[PT_GROUP_OP_HEADER_LEN + 1];
    head[0] = PT_GROUP_VERSION;
    head[OFF_KIND] = op->kind;
    memcpy(head + OFF_GROUP, op->group_id, PT_GROUP_ID_LEN);
    pt_put_u64le(head + OFF_EPOCH, op->epoch);
    memcpy(head + OFF_PREV, op->prev, PT_GROUP_HASH_LEN);
    memcpy(head + OFF_SIGNER, op->signer, PT_GROUP_KEY_LEN);
    head[PT_GROUP_OP_HEADER_LEN] = (uint8_t)op->user_len;
    int rc = pt_buf_append(out, head, sizeof head);
    if (rc == 0) rc = pt_buf_append(out, op->user, op->user_len);
    if (rc == 0 && has_member_body(op->kind)) {
        uint8_t n = (uint8_t)op->ndev;
        rc = pt_buf_append(out, op->identity, PT_GROUP_KEY_LEN);
        if (rc == 0) rc = pt_buf_append(out, &n, 1);
        if (rc == 0) rc = pt_buf_append(out, op->devices, op->ndev * PT_GROUP_KEY_LEN);
    } else if (rc == 0 && has_device_body(op->kind)) {
        rc = pt_buf_append(out, op->devices[0], PT_GROUP_KEY_LEN);
    }
    return rc;
}

int pt_group_op_encode(const pt_group_op *op, pt_buf *out)
{
    size_t start = out->len;
    int rc = encode_body(op, out);
    if (rc == 0) rc = pt_buf_append(out, op->sig, PT_ED25519_SIG_LEN);
    if (rc != 0) out->len = start;
    return rc;
}

int pt_group_op_sign(pt_group_op *op, const uint8_t sk[static PT_ED25519_SK_LEN])
{
    pt_buf b;
    pt_buf_init(&b);
    int rc = encode_body(op, &b);
    if (rc == 0) rc = sign_ctx(op->sig, op->kind, b.data, b.len, sk);
    pt_buf_free(&b);
    return rc;
}

/* ---- the state ------------------------------------------------------------------- */

typedef struct member {
    uint8_t user[PT_GROUP_MAX_USER_LEN];                     /* user id */
    size_t user_len;                                         /* 1..255 */
    uint8_t identity[PT_GROUP_KEY_LEN];                      /* identity key */
    uint8_t devices[PT_GROUP_MAX_DEVICES][PT_GROUP_KEY_LEN]; /* current devices */
    size_t ndev;                                             /* 1..16 */
    bool admin;                                              /* may sign ops */
} member;

struct pt_group {
    uint8_t id[PT_GROUP_ID_LEN];       /* from the CREATE op */
    uint8_t creator[PT_GROUP_KEY_LEN]; /* the CREATE signer */
    uint64_t epoch;                    /* epoch of the last op */
    uint8_t head[PT_GROUP_HASH_LEN];   /* chain hash of the last op */
    uint64_t rekey_epoch;              /* epoch of the last removal, 0 if none */
    bool rotation_needed;              /* a removal since the last rotation_done */
    member *members;                   /* nmembers in order of addition */
    size_t nmembers, cap;              /* used and allocated entries */
    pt_buf chain;                      /* every applied op: u16le len || bytes */
    uint32_t nops;                     /* ops in chain */
};

static int chain_hash(uint8_t out[static PT_GROUP_HASH_LEN], const uint8_t *op, size_t len)
{
    return pt_hash2(PT_HASH_SHA256, out, (const uint8_t *)CHAIN_CONTEXT, sizeof CHAIN_CONTEXT, op,
                    len);
}

static member *find_user(const pt_group *g, const uint8_t *user, size_t len)
{
    for (size_t i = 0; i < g->nmembers; i++)
        if (g->members[i].user_len == len && memcmp(g->members[i].user, user, len) == 0)
            return &g->members[i];
    return NULL;
}

static bool identity_used(const pt_group *g, const uint8_t key[static PT_GROUP_KEY_LEN])
{
    for (size_t i = 0; i < g->nmembers; i++)
        if (memcmp(g->members[i].identity, key, PT_GROUP_KEY_LEN) == 0) return true;
    return false;
}

static bool device_used(const pt_group *g, const uint8_t key[static PT_GROUP_KEY_LEN])
{
    for (size_t i = 0; i < g->nmembers; i++)
        for (size_t d = 0; d < g->members[i].ndev; d++)
            if (memcmp(g->members[i].devices[d], key, PT_GROUP_KEY_LEN) == 0) return true;
    return false;
}

static size_t admin_count(const pt_group *g)
{
    size_t n = 0;
    for (size_t i = 0; i < g->nmembers; i++)
        n += g->members[i].admin;
    return n;
}

static bool devices_distinct(const pt_group_op *op)
{
    for (size_t a = 0; a < op->ndev; a++)
        for (size_t b = a + 1; b < op->ndev; b++)
            if (memcmp(op->devices[a], op->devices[b], PT_GROUP_KEY_LEN) == 0) return false;
    return true;
}

/* Whether op makes sense in state g (signature and chain position already checked). */
static int check_semantics(const pt_group *g, const pt_group_op *op)
{
    member *m = find_user(g, op->user, op->user_len);
    switch (op->kind) {
    case PT_GROUP_OP_ADD_MEMBER:
        if (m || g->nmembers >= PT_GROUP_MAX_MEMBERS || identity_used(g, op->identity) ||
            !devices_distinct(op))
            return PT_ERR_STATE;
        for (size_t d = 0; d < op->ndev; d++)
            if (device_used(g, op->devices[d])) return PT_ERR_STATE;
        return 0;
    case PT_GROUP_OP_REMOVE_MEMBER:
        /* A group always keeps an admin, or it could never change again. */
        if (!m || (m->admin && admin_count(g) == 1)) return PT_ERR_STATE;
        return 0;
    case PT_GROUP_OP_PROMOTE:
        return m && !m->admin ? 0 : PT_ERR_STATE;
    case PT_GROUP_OP_ADD_DEVICE:
        return m && m->ndev < PT_GROUP_MAX_DEVICES && !device_used(g, op->devices[0])
                   ? 0
                   : PT_ERR_STATE;
    case PT_GROUP_OP_REMOVE_DEVICE:
        if (!m || m->ndev < 2) return PT_ERR_STATE; /* remove the member instead */
        for (size_t d = 0; d < m->ndev; d++)
            if (memcmp(m->devices[d], op->devices[0], PT_GROUP_KEY_LEN) == 0) return 0;
        return PT_ERR_STATE;
    default:
        return PT_ERR_STATE; /* CREATE only starts a chain */
    }
}

/* Decodes buf and checks it as the next op of g. */
static int check_op(const pt_group *g, pt_group_op *op, const uint8_t *buf, size_t len)
{
    int rc = pt_group_op_decode(op, buf, len);
    if (rc != 0) return rc;
    if (memcmp(op->group_id, g->id, PT_GROUP_ID_LEN) != 0) return PT_ERR_STATE;
    rc = verify_ctx(op->sig, op->kind, buf, len - PT_ED25519_SIG_LEN, op->signer);
    if (rc != 0) return rc;
    if (op->epoch <= g->epoch) return PT_ERR_REPLAY;
    if (op->epoch != g->epoch + 1 || memcmp(op->prev, g->head, PT_GROUP_HASH_LEN) != 0)
        return PT_ERR_STATE;
    if (!pt_group_is_admin(g, op->signer)) return PT_ERR_AUTH;
    if (g->nops >= PT_GROUP_MAX_OPS) return PT_ERR_TOO_BIG;
    return check_semantics(g, op);
}

static int add_member(pt_group *g, const pt_group_op *op, bool admin)
{
    if (g->nmembers == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 4;
        member *m = realloc(g->members, cap * sizeof *m);
        if (!m) return PT_ERR_NOMEM;
        g->members = m;
        g->cap = cap;
    }
    member *m = &g->members[g->nmembers++];
    memset(m, 0, sizeof *m);
    memcpy(m->user, op->user, op->user_len);
    m->user_len = op->user_len;
    memcpy(m->identity, op->identity, PT_GROUP_KEY_LEN);
    memcpy(m->devices, op->devices, op->ndev * PT_GROUP_KEY_LEN);
    m->ndev = op->ndev;
    m->admin = admin;
    return 0;
}

/* Appends the op to the chain record and moves the head. */
static int push_chain(pt_group *g, const uint8_t *buf, size_t len)
{
    uint8_t n[2] = {(uint8_t)len, (uint8_t)(len >> 8)};
    size_t start = g->chain.len;
    int rc = chain_hash(g->head, buf, len);
    if (rc == 0) rc = pt_buf_append(&g->chain, n, 2);
    if (rc == 0) rc = pt_buf_append(&g->chain, buf, len);
    if (rc != 0) g->chain.len = start;
    return rc;
}

int pt_group_check(const pt_group *g, const uint8_t *buf, size_t len)
{
    pt_group_op op;
    return check_op(g, &op, buf, len);
}

int pt_group_apply(pt_group *g, const uint8_t *buf, size_t len)
{
    pt_group_op op;
    int rc = check_op(g, &op, buf, len);
    if (rc != 0) return rc;
    /* Reserve what can fail first, so that an error leaves g unchanged. */
    if (op.kind == PT_GROUP_OP_ADD_MEMBER && g->nmembers == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 4;
        member *m = realloc(g->members, cap * sizeof *m);
        if (!m) return PT_ERR_NOMEM;
        g->members = m;
        g->cap = cap;
    }
    uint8_t old_head[PT_GROUP_HASH_LEN];
    memcpy(old_head, g->head, sizeof old_head);
    if ((rc = push_chain(g, buf, len)) != 0) {
        memcpy(g->head, old_head, sizeof old_head);
        return rc;
    }
    member *m = find_user(g, op.user, op.user_len);
    switch (op.kind) {
    case PT_GROUP_OP_ADD_MEMBER:
        (void)add_member(g, &op, false); /* cannot fail: room reserved above */
        break;
    case PT_GROUP_OP_REMOVE_MEMBER: {
        size_t i = (size_t)(m - g->members);
        memmove(m, m + 1, (g->nmembers - i - 1) * sizeof *m);
        g->nmembers--;
        g->rotation_needed = true;
        g->rekey_epoch = op.epoch;
        break;
    }
    case PT_GROUP_OP_PROMOTE:
        m->admin = true;
        break;
    case PT_GROUP_OP_ADD_DEVICE:
        memcpy(m->devices[m->ndev++], op.devices[0], PT_GROUP_KEY_LEN);
        break;
    case PT_GROUP_OP_REMOVE_DEVICE:
        for (size_t d = 0; d < m->ndev; d++) {
            if (memcmp(m->devices[d], op.devices[0], PT_GROUP_KEY_LEN) != 0) continue;
            memmove(m->devices[d], m->devices[d + 1], (m->ndev - d - 1) * PT_GROUP_KEY_LEN);
            m->ndev--;
            break;
        }
        g->rotation_needed = true;
        g->rekey_epoch = op.epoch;
        break;
    }
    g->epoch = op.epoch;
    g->nops++;
    return 0;
}

pt_group *pt_group_from_create(const uint8_t *buf, size_t len, const uint8_t *trusted_creator,
                               pt_err *err)
{
    pt_group_op op;
    pt_group *g = NULL;
    static const uint8_t zero[PT_GROUP_HASH_LEN];
    int rc = pt_group_op_decode(&op, buf, len);
    if (rc != 0) goto fail;
    rc = PT_ERR_STATE;
    if (op.kind != PT_GROUP_OP_CREATE || op.epoch != 0 || memcmp(op.prev, zero, sizeof zero) != 0 ||
        !devices_distinct(&op))
        goto fail;
    rc = PT_ERR_AUTH;
    /* Self-signed by the creator's identity key, which the caller may pin. */
    if (memcmp(op.signer, op.identity, PT_GROUP_KEY_LEN) != 0 ||
        (trusted_creator && memcmp(trusted_creator, op.signer, PT_GROUP_KEY_LEN) != 0))
        goto fail;
    if ((rc = verify_ctx(op.sig, op.kind, buf, len - PT_ED25519_SIG_LEN, op.signer)) != 0)
        goto fail;
    rc = PT_ERR_NOMEM;
    if (!(g = calloc(1, sizeof *g))) goto fail;
    pt_buf_init(&g->chain);
    memcpy(g->id, op.group_id, PT_GROUP_ID_LEN);
    memcpy(g->creator, op.signer, PT_GROUP_KEY_LEN);
    if ((rc = add_member(g, &op, true)) != 0 || (rc = push_chain(g, buf, len)) != 0) goto fail;
    g->nops = 1;
    if (err) *err = PT_OK;
    return g;
fail:
    pt_group_free(g);
    if (err) *err = rc;
    return NULL;
}

void pt_group_free(pt_group *g)
{
    if (!g) return;
    free(g->members);
    pt_buf_free(&g->chain);
    free(g);
}

/* ---- chain and storage ------------------------------------------------------------- */

int pt_group_chain(const pt_group *g, pt_buf *out)
{
    uint8_t n[4];
    pt_put_u32le(n, g->nops);
    size_t start = out->len;
    int rc = pt_buf_append(out, n, 4);
    if (rc == 0) rc = pt_buf_append(out, g->chain.data, g->chain.len);
    if (rc != 0) out->len = start;
    return rc;
}

pt_group *pt_group_from_chain(const uint8_t *buf, size_t len, const uint8_t *trusted_creator,
                              pt_err *err)
{
    rd r = {buf, len};
    const uint8_t *q, *op;
    pt_group *g = NULL;
    int rc = PT_ERR_DECODE;
    if (!buf || !(q = take(&r, 4))) goto fail;
    uint32_t n = pt_get_u32le(q);
    if (n == 0) goto fail;
    if (n > PT_GROUP_MAX_OPS) {
        rc = PT_ERR_TOO_BIG;
        goto fail;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!(q = take(&r, 2))) {
            rc = PT_ERR_DECODE;
            goto fail;
        }
        size_t oplen = (size_t)q[0] | (size_t)q[1] << 8;
        if (!(op = take(&r, oplen))) {
            rc = PT_ERR_DECODE;
            goto fail;
        }
        if (i == 0) {
            pt_err e;
            if (!(g = pt_group_from_create(op, oplen, trusted_creator, &e))) {
                rc = e;
                goto fail;
            }
        } else if ((rc = pt_group_apply(g, op, oplen)) != 0) {
            goto fail;
        }
    }
    if (r.left != 0) {
        rc = PT_ERR_DECODE;
        goto fail;
    }
    if (err) *err = PT_OK;
    return g;
fail:
    pt_group_free(g);
    if (err) *err = rc;
    return NULL;
}

int pt_group_serialize(const pt_group *g, pt_buf *out)
{
    size_t start = out->len;
    uint8_t head[6] = {'P', 'T',           'G',
                       'S', STATE_VERSION, g->rotation_needed ? STATE_FLAG_ROTATE : 0};
    uint8_t sum[CHECKSUM_LEN];
    int rc = pt_buf_append(out, head, sizeof head);
    if (rc == 0) rc = pt_group_chain(g, out);
    if (rc == 0) rc = pt_hash(PT_HASH_SHA256, sum, out->data + start, out->len - start);
    if (rc == 0) rc = pt_buf_append(out, sum, sizeof sum);
    if (rc != 0) out->len = start;
    return rc;
}

pt_group *pt_group_restore(const uint8_t *buf, size_t len, const uint8_t *trusted_creator,
                           pt_err *err)
{
    uint8_t sum[CHECKSUM_LEN];
    int rc = PT_ERR_DECODE;
    if (!buf || len < 6 + 4 + CHECKSUM_LEN || memcmp(buf, STATE_MAGIC, 4) != 0) goto fail;
    if (buf[4] != STATE_VERSION) {
        rc = PT_ERR_VERSION;
        goto fail;
    }
    if (buf[5] & ~STATE_FLAG_ROTATE) goto fail;
    if (pt_hash(PT_HASH_SHA256, sum, buf, len - CHECKSUM_LEN) != 0 ||
        pt_ct_memcmp(sum, buf + len - CHECKSUM_LEN, CHECKSUM_LEN) != 0)
        goto fail;
    pt_err e;
    pt_group *g = pt_group_from_chain(buf + 6, len - 6 - CHECKSUM_LEN, trusted_creator, &e);
    if (!g) {
        rc = e;
        goto fail;
    }
    /* The chain sets the flag on each removal; the stored flag says whether the
     * caller has rotated since. */
    g->rotation_needed = buf[5] & STATE_FLAG_ROTATE;
    if (err) *err = PT_OK;
    return g;
fail:
    if (err) *err = rc;
    return NULL;
}

/* ---- queries ------------------------------------------------------------------------ */

const uint8_t *pt_group_id(const pt_group *g)
{
    return g->id;
}
const uint8_t *pt_group_creator(const pt_group *g)
{
    return g->creator;
}
uint64_t pt_group_epoch(const pt_group *g)
{
    return g->epoch;
}
const uint8_t *pt_group_head(const pt_group *g)
{
    return g->head;
}
size_t pt_group_member_count(const pt_group *g)
{
    return g->nmembers;
}
bool pt_group_rotation_needed(const pt_group *g)
{
    return g->rotation_needed;
}
void pt_group_rotation_done(pt_group *g)
{
    g->rotation_needed = false;
}
uint64_t pt_group_rekey_epoch(const pt_group *g)
{
    return g->rekey_epoch;
}

int pt_group_member(const pt_group *g, size_t i, pt_group_member_info *out)
{
    if (i >= g->nmembers) return PT_ERR_NOT_FOUND;
    const member *m = &g->members[i];
    out->user = m->user;
    out->user_len = m->user_len;
    out->identity = m->identity;
    out->devices = (const uint8_t(*)[PT_GROUP_KEY_LEN])m->devices;
    out->ndev = m->ndev;
    out->admin = m->admin;
    return 0;
}

bool pt_group_has_device(const pt_group *g, const uint8_t *user, size_t user_len,
                         const uint8_t device[static PT_GROUP_KEY_LEN])
{
    const member *m = find_user(g, user, user_len);
    for (size_t d = 0; m && d < m->ndev; d++)
        if (memcmp(m->devices[d], device, PT_GROUP_KEY_LEN) == 0) return true;
    return false;
}

bool pt_group_is_admin(const pt_group *g, const uint8_t identity[static PT_GROUP_KEY_LEN])
{
    for (size_t i = 0; i < g->nmembers; i++)
        if (g->members[i].admin && memcmp(g->members[i].identity, identity, PT_GROUP_KEY_LEN) == 0)
            return true;
    return false;
}

/* ---- builders ------------------------------------------------------------------------ */

/* Signs op, checks it against g (NULL for CREATE) and appends it to out. */
static int finish(const pt_group *g, pt_group_op *op, pt_buf *out,
                  const uint8_t sk[static PT_ED25519_SK_LEN])
{
    size_t start = out->len;
    int rc = pt_group_op_sign(op, sk);
    if (rc == 0) rc = pt_group_op_encode(op, out);
    if (rc != 0) return rc;
    if (g) {
        rc = pt_group_check(g, out->data + start, out->len - start);
    } else {
        pt_err e;
        pt_group *tmp = pt_group_from_create(out->data + start, out->len - start, NULL, &e);
        rc = tmp ? 0 : e;
        pt_group_free(tmp);
    }
    if (rc != 0) out->len = start;
    return rc;
}

static void next_op(const pt_group *g, pt_group_op *op, uint8_t kind,
                    const uint8_t pk[static PT_GROUP_KEY_LEN], const uint8_t *user, size_t user_len)
{
    memset(op, 0, sizeof *op);
    op->kind = kind;
    memcpy(op->group_id, g->id, PT_GROUP_ID_LEN);
    op->epoch = g->epoch + 1;
    memcpy(op->prev, g->head, PT_GROUP_HASH_LEN);
    memcpy(op->signer, pk, PT_GROUP_KEY_LEN);
    op->user = user;
    op->user_len = user_len;
}

static int set_devices(pt_group_op *op, const uint8_t (*devices)[PT_GROUP_KEY_LEN], size_t ndev)
{
    if (ndev == 0 || ndev > PT_GROUP_MAX_DEVICES || !devices) return PT_ERR_INVAL;
    memcpy(op->devices, devices, ndev * PT_GROUP_KEY_LEN);
    op->ndev = ndev;
    return 0;
}

int pt_group_op_create(pt_buf *out, const pt_env *env, const uint8_t pk[static PT_GROUP_KEY_LEN],
                       const uint8_t sk[static PT_ED25519_SK_LEN], const uint8_t *user,
                       size_t user_len, const uint8_t (*devices)[PT_GROUP_KEY_LEN], size_t ndev)
{
    pt_group_op op;
    memset(&op, 0, sizeof op);
    op.kind = PT_GROUP_OP_CREATE;
    pt_env_random(env, op.group_id, PT_GROUP_ID_LEN);
    memcpy(op.signer, pk, PT_GROUP_KEY_LEN);
    memcpy(op.identity, pk, PT_GROUP_KEY_LEN);
    op.user = user;
    op.user_len = user_len;
    int rc = set_devices(&op, devices, ndev);
    return rc ? rc : finish(NULL, &op, out, sk);
}

int pt_group_op_add_member(const pt_group *g, pt_buf *out,
                           const uint8_t pk[static PT_GROUP_KEY_LEN],
                           const uint8_t sk[static PT_ED25519_SK_LEN], const uint8_t *user,
                           size_t user_len, const uint8_t identity[static PT_GROUP_KEY_LEN],
                           const uint8_t (*devices)[PT_GROUP_KEY_LEN], size_t ndev)
{
    pt_group_op op;
    next_op(g, &op, PT_GROUP_OP_ADD_MEMBER, pk, user, user_len);
    memcpy(op.identity, identity, PT_GROUP_KEY_LEN);
    int rc = set_devices(&op, devices, ndev);
    return rc ? rc : finish(g, &op, out, sk);
}

int pt_group_op_remove_member(const pt_group *g, pt_buf *out,
                              const uint8_t pk[static PT_GROUP_KEY_LEN],
                              const uint8_t sk[static PT_ED25519_SK_LEN], const uint8_t *user,
                              size_t user_len)
{
    pt_group_op op;
    next_op(g, &op, PT_GROUP_OP_REMOVE_MEMBER, pk, user, user_len);
    return finish(g, &op, out, sk);
}

int pt_group_op_promote(const pt_group *g, pt_buf *out, const uint8_t pk[static PT_GROUP_KEY_LEN],
                        const uint8_t sk[static PT_ED25519_SK_LEN], const uint8_t *user,
                        size_t user_len)
{
    pt_group_op op;
    next_op(g, &op, PT_GROUP_OP_PROMOTE, pk, user, user_len);
    return finish(g, &op, out, sk);
}

int pt_group_op_add_device(const pt_group *g, pt_buf *out,
                           const uint8_t pk[static PT_GROUP_KEY_LEN],
                           const uint8_t sk[static PT_ED25519_SK_LEN], const uint8_t *user,
                           size_t user_len, const uint8_t device[static PT_GROUP_KEY_LEN])
{
    pt_group_op op;
    next_op(g, &op, PT_GROUP_OP_ADD_DEVICE, pk, user, user_len);
    memcpy(op.devices[0], device, PT_GROUP_KEY_LEN);
    op.ndev = 1;
    return finish(g, &op, out, sk);
}

int pt_group_op_remove_device(const pt_group *g, pt_buf *out,
                              const uint8_t pk[static PT_GROUP_KEY_LEN],
                              const uint8_t sk[static PT_ED25519_SK_LEN], const uint8_t *user,
                              size_t user_len, const uint8_t device[static PT_GROUP_KEY_LEN])
{
    pt_group_op op;
    next_op(g, &op, PT_GROUP_OP_REMOVE_DEVICE, pk, user, user_len);
    memcpy(op.devices[0], device, PT_GROUP_KEY_LEN);
    op.ndev = 1;
    return finish(g, &op, out, sk);
}

/* ---- sender-key announcements ----------------------------------------------------- */

/* version 1 || kind 7 || group id || u64le epoch || u8 n || user || device ||
 * session id || u32le first index || signature */
int pt_group_sender_key_decode(pt_group_sender_key *k, const uint8_t *buf, size_t len)
{
    memset(k, 0, sizeof *k);
    if (len > PT_GROUP_SENDER_KEY_MAX_LEN) return PT_ERR_TOO_BIG;
    if (len < 2) return PT_ERR_DECODE;
    if (buf[0] != PT_GROUP_VERSION) return PT_ERR_VERSION;
    if (buf[1] != PT_GROUP_SENDER_KEY) return PT_ERR_DECODE;
    rd r = {buf + 2, len - 2};
    const uint8_t *e, *f;
    if (take_copy(&r, k->group_id, PT_GROUP_ID_LEN) != 0 || !(e = take(&r, 8)) ||
        take_user(&r, &k->user, &k->user_len) != 0 ||
        take_copy(&r, k->device, PT_GROUP_KEY_LEN) != 0 ||
        take_copy(&r, k->session_id, sizeof k->session_id) != 0 || !(f = take(&r, 4)) ||
        take_copy(&r, k->sig, PT_ED25519_SIG_LEN) != 0 || r.left != 0)
        return PT_ERR_DECODE;
    k->epoch = pt_get_u64le(e);
    k->first_index = pt_get_u32le(f);
    return 0;
}

int pt_group_sender_key_make(const pt_group *g, pt_buf *out, const uint8_t *user, size_t user_len,
                             const uint8_t device_pk[static PT_GROUP_KEY_LEN],
                             const uint8_t device_sk[static PT_ED25519_SK_LEN],
                             const uint8_t session_id[static 32], uint32_t first_index)
{
    if (!user || user_len == 0 || user_len > PT_GROUP_MAX_USER_LEN) return PT_ERR_INVAL;
    if (!pt_group_has_device(g, user, user_len, device_pk)) return PT_ERR_STATE;
    size_t start = out->len;
    uint8_t head[2 + PT_GROUP_ID_LEN + 8 + 1], tail[32 + 4], sig[PT_ED25519_SIG_LEN];
    head[0] = PT_GROUP_VERSION;
    head[1] = PT_GROUP_SENDER_KEY;
    memcpy(head + 2, g->id, PT_GROUP_ID_LEN);
    pt_put_u64le(head + 2 + PT_GROUP_ID_LEN, g->epoch);
    head[sizeof head - 1] = (uint8_t)user_len;
    memcpy(tail, session_id, 32);
    pt_put_u32le(tail + 32, first_index);
    int rc = pt_buf_append(out, head, sizeof head);
    if (rc == 0) rc = pt_buf_append(out, user, user_len);
    if (rc == 0) rc = pt_buf_append(out, device_pk, PT_GROUP_KEY_LEN);
    if (rc == 0) rc = pt_buf_append(out, tail, sizeof tail);
    if (rc == 0)
        rc = sign_ctx(sig, PT_GROUP_SENDER_KEY, out->data + start, out->len - start, device_sk);
    if (rc == 0) rc = pt_buf_append(out, sig, sizeof sig);
    if (rc != 0) out->len = start;
    return rc;
}

int pt_group_sender_key_verify(const pt_group *g, pt_group_sender_key *k, const uint8_t *buf,
                               size_t len)
{
    int rc = pt_group_sender_key_decode(k, buf, len);
    if (rc != 0) return rc;
    if (memcmp(k->group_id, g->id, PT_GROUP_ID_LEN) != 0) return PT_ERR_STATE;
    rc = verify_ctx(k->sig, PT_GROUP_SENDER_KEY, buf, len - PT_ED25519_SIG_LEN, k->device);
    if (rc != 0) return rc;
    if (!pt_group_has_device(g, k->user, k->user_len, k->device)) return PT_ERR_AUTH;
    /* A session started before the last removal may be known to the removed party. */
    if (k->epoch < g->rekey_epoch || k->epoch > g->epoch) return PT_ERR_STATE;
    return 0;
}
