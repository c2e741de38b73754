/*
 * src/e2e/group - group membership that the server cannot change.
 *
 * A group is a hash chain of membership operations (create, add member, remove
 * member, promote, add device, remove device), each signed by the Ed25519
 * identity key of a member who is an admin at that point of the chain. Every
 * member replays and verifies the whole chain from a CREATE op whose signer it
 * trusts (verified out of band, e.g. by safety number), so a server that injects,
 * drops, reorders or replays operations is refused: it holds no admin key (the
 * 2022 Matrix attacks let a homeserver add devices and members on its own).
 *
 * Each op names its epoch (the previous one + 1) and the hash of the previous op.
 * Removing a member or a device raises "rotation needed": every sender must start
 * a new Megolm session and share it with the remaining devices only, so that the
 * removed party cannot read on. A sender-key announcement, signed by a member
 * device, binds a Megolm session id to the group and an epoch at or after the
 * last removal.
 *
 * Domain separation: what an op or announcement signature covers is a distinct
 * NUL-terminated context string per kind ("PackTrack e2e v1 group-...") followed
 * by the encoded bytes; Megolm signs bytes that begin 0x02 or 0x03, never 'P'.
 *
 * Error convention (internal layer): 0 or a negative pt_err; constructors return
 * NULL and write *err (err may be NULL). PT_ERR_DECODE / PT_ERR_VERSION /
 * PT_ERR_TOO_BIG for malformed bytes, PT_ERR_AUTH for a bad signature or a signer
 * without the right, PT_ERR_REPLAY for an op at or below the current epoch,
 * PT_ERR_STATE for an op that does not follow the head (another group, a gap, a
 * fork) or makes no sense in the current state (unknown user, duplicate key, the
 * last admin removed...).
 */
#ifndef PT_GROUP_H
#define PT_GROUP_H

#include <stdbool.h>

#include "common/pt_common.h"
#include "crypto/pt_crypto.h"

#define PT_GROUP_ID_LEN 32
#define PT_GROUP_KEY_LEN PT_ED25519_PK_LEN /* identity and device keys */
#define PT_GROUP_HASH_LEN PT_SHA256_LEN
#define PT_GROUP_MAX_USER_LEN 255 /* user ids are opaque bytes, 1..255 of them */
#define PT_GROUP_MAX_DEVICES 16   /* per member */
#define PT_GROUP_MAX_MEMBERS 256
#define PT_GROUP_MAX_OPS 16384 /* chain length; a longer group must be re-created */
#define PT_GROUP_VERSION 1
/* version, kind, group id, epoch, previous hash, signer */
#define PT_GROUP_OP_HEADER_LEN (2 + PT_GROUP_ID_LEN + 8 + PT_GROUP_HASH_LEN + PT_GROUP_KEY_LEN)
#define PT_GROUP_OP_MAX_LEN                                                                        \
    (PT_GROUP_OP_HEADER_LEN + 1 + PT_GROUP_MAX_USER_LEN + PT_GROUP_KEY_LEN + 1 +                   \
     PT_GROUP_MAX_DEVICES * PT_GROUP_KEY_LEN + PT_ED25519_SIG_LEN)
#define PT_GROUP_SENDER_KEY_MAX_LEN                                                                \
    (2 + PT_GROUP_ID_LEN + 8 + 1 + PT_GROUP_MAX_USER_LEN + PT_GROUP_KEY_LEN + 32 + 4 +             \
     PT_ED25519_SIG_LEN)

typedef enum pt_group_op_kind {
    PT_GROUP_OP_CREATE = 1,        /* user, identity, devices; self-signed; epoch 0 */
    PT_GROUP_OP_ADD_MEMBER = 2,    /* user, identity, devices; a new non-admin member */
    PT_GROUP_OP_REMOVE_MEMBER = 3, /* user; raises rotation needed */
    PT_GROUP_OP_PROMOTE = 4,       /* user becomes an admin */
    PT_GROUP_OP_ADD_DEVICE = 5,    /* user, device */
    PT_GROUP_OP_REMOVE_DEVICE = 6, /* user, device; raises rotation needed */
    PT_GROUP_SENDER_KEY = 7,       /* not an op: the kind byte of an announcement */
} pt_group_op_kind;

/* One operation, decoded or to be encoded. */
typedef struct pt_group_op {
    uint8_t kind;                       /* pt_group_op_kind 1..6 */
    uint8_t group_id[PT_GROUP_ID_LEN];  /* the group it changes */
    uint64_t epoch;                     /* epoch after the op */
    uint8_t prev[PT_GROUP_HASH_LEN];    /* chain hash of the previous op; 0 for CREATE */
    uint8_t signer[PT_GROUP_KEY_LEN];   /* identity key that signs */
    const uint8_t *user;                /* borrowed: the input or the caller's */
    size_t user_len;                    /* 1..PT_GROUP_MAX_USER_LEN */
    uint8_t identity[PT_GROUP_KEY_LEN]; /* CREATE, ADD_MEMBER */
    /* CREATE/ADD_MEMBER: ndev (1..16) devices; ADD_DEVICE/REMOVE_DEVICE: one */
    uint8_t devices[PT_GROUP_MAX_DEVICES][PT_GROUP_KEY_LEN];
    size_t ndev;                     /* devices in use */
    uint8_t sig[PT_ED25519_SIG_LEN]; /* over context(kind) || NUL || bytes before it */
} pt_group_op;

/* Pure codec (a fuzz target): exact length, known version and kind, 1..16
 * devices where a list is carried. Semantics and signature are not checked. */
int pt_group_op_decode(pt_group_op *op, const uint8_t *buf, size_t len) PT_WUR;
/* Appends the encoding of op, signature included. PT_ERR_INVAL for a field out
 * of range. */
int pt_group_op_encode(const pt_group_op *op, pt_buf *out) PT_WUR;
/* Fills op->sig with sk's signature; no state is checked (see the builders). */
int pt_group_op_sign(pt_group_op *op, const uint8_t sk[static PT_ED25519_SK_LEN]) PT_WUR;

typedef struct pt_group pt_group;

/* ---- building ops: signed, checked against g as pt_group_check() does, appended
 *      to out (left as it was on error). They do not change g: apply the op. ---- */

/* A new group: a random id from env, epoch 0, the signer (pk, sk) as its first
 * member and admin with the given devices. */
int pt_group_op_create(pt_buf *out, const pt_env *env, const uint8_t pk[static PT_GROUP_KEY_LEN],
                       const uint8_t sk[static PT_ED25519_SK_LEN], const uint8_t *user,
                       size_t user_len, const uint8_t (*devices)[PT_GROUP_KEY_LEN],
                       size_t ndev) PT_WUR;
int pt_group_op_add_member(const pt_group *g, pt_buf *out,
                           const uint8_t pk[static PT_GROUP_KEY_LEN],
                           const uint8_t sk[static PT_ED25519_SK_LEN], const uint8_t *user,
                           size_t user_len, const uint8_t identity[static PT_GROUP_KEY_LEN],
                           const uint8_t (*devices)[PT_GROUP_KEY_LEN], size_t ndev) PT_WUR;
int pt_group_op_remove_member(const pt_group *g, pt_buf *out,
                              const uint8_t pk[static PT_GROUP_KEY_LEN],
                              const uint8_t sk[static PT_ED25519_SK_LEN], const uint8_t *user,
                              size_t user_len) PT_WUR;
int pt_group_op_promote(const pt_group *g, pt_buf *out, const uint8_t pk[static PT_GROUP_KEY_LEN],
                        const uint8_t sk[static PT_ED25519_SK_LEN], const uint8_t *user,
                        size_t user_len) PT_WUR;
int pt_group_op_add_device(const pt_group *g, pt_buf *out,
                           const uint8_t pk[static PT_GROUP_KEY_LEN],
                           const uint8_t sk[static PT_ED25519_SK_LEN], const uint8_t *user,
                           size_t user_len, const uint8_t device[static PT_GROUP_KEY_LEN]) PT_WUR;
int pt_group_op_remove_device(const pt_group *g, pt_buf *out,
                              const uint8_t pk[static PT_GROUP_KEY_LEN],
                              const uint8_t sk[static PT_ED25519_SK_LEN], const uint8_t *user,
                              size_t user_len,
                              const uint8_t device[static PT_GROUP_KEY_LEN]) PT_WUR;

/* ---- the state -------------------------------------------------------------- */

/* A group from its CREATE op. trusted_creator (32 bytes, may be NULL) is the
 * creator's identity key as verified out of band: the op must be signed by it,
 * else PT_ERR_AUTH. With NULL the caller must check pt_group_creator() itself. */
pt_group *pt_group_from_create(const uint8_t *op, size_t len, const uint8_t *trusted_creator,
                               pt_err *err);
void pt_group_free(pt_group *g); /* NULL is a no-op */

/* Verifies op against the current state and applies it; on error g is unchanged. */
int pt_group_apply(pt_group *g, const uint8_t *op, size_t len) PT_WUR;
/* As pt_group_apply() without changing anything: 0 when it would apply. */
int pt_group_check(const pt_group *g, const uint8_t *op, size_t len) PT_WUR;

/* The whole chain, for a member who joins: u32le n || n * (u16le len || op). */
int pt_group_chain(const pt_group *g, pt_buf *out) PT_WUR;
/* Replays and verifies a chain (see pt_group_from_create for trusted_creator). */
pt_group *pt_group_from_chain(const uint8_t *buf, size_t len, const uint8_t *trusted_creator,
                              pt_err *err);
/* Storage: "PTGS" || 1 || flags (bit 0: rotation needed) || chain || SHA-256 of
 * the rest. Restore re-verifies every signature: a corrupted or truncated blob is
 * refused, whatever byte is touched. */
int pt_group_serialize(const pt_group *g, pt_buf *out) PT_WUR;
pt_group *pt_group_restore(const uint8_t *buf, size_t len, const uint8_t *trusted_creator,
                           pt_err *err);

/* ---- queries ---------------------------------------------------------------- */

/* A member as the state holds it; pointers valid until g next changes. */
typedef struct pt_group_member_info {
    const uint8_t *user; /* user_len bytes */
    size_t user_len;
    const uint8_t *identity;                    /* PT_GROUP_KEY_LEN bytes */
    const uint8_t (*devices)[PT_GROUP_KEY_LEN]; /* ndev keys */
    size_t ndev;
    bool admin;
} pt_group_member_info;

const uint8_t *pt_group_id(const pt_group *g);      /* PT_GROUP_ID_LEN bytes */
const uint8_t *pt_group_creator(const pt_group *g); /* the CREATE signer */
uint64_t pt_group_epoch(const pt_group *g);
const uint8_t *pt_group_head(const pt_group *g); /* chain hash of the last op */
size_t pt_group_member_count(const pt_group *g);
/* Member i in order of addition; PT_ERR_NOT_FOUND past the end. */
int pt_group_member(const pt_group *g, size_t i, pt_group_member_info *out) PT_WUR;
/* Whether user is a member and device one of its current devices. */
bool pt_group_has_device(const pt_group *g, const uint8_t *user, size_t user_len,
                         const uint8_t device[static PT_GROUP_KEY_LEN]);
/* Whether identity is the key of a current admin. */
bool pt_group_is_admin(const pt_group *g, const uint8_t identity[static PT_GROUP_KEY_LEN]);

/* True after a member or device was removed, until pt_group_rotation_done(): the
 * caller must replace its outbound Megolm session before sending again. */
bool pt_group_rotation_needed(const pt_group *g);
void pt_group_rotation_done(pt_group *g);
/* The epoch of the last removal (0 if none): sender keys announced before it are
 * refused. */
uint64_t pt_group_rekey_epoch(const pt_group *g);

/* ---- sender-key announcements ------------------------------------------------- */

typedef struct pt_group_sender_key {
    uint8_t group_id[PT_GROUP_ID_LEN];
    uint64_t epoch;      /* the sender's epoch when it started the session */
    const uint8_t *user; /* borrowed from the input */
    size_t user_len;
    uint8_t device[PT_GROUP_KEY_LEN]; /* the signing device */
    uint8_t session_id[32];           /* the Megolm session id (its Ed25519 key) */
    uint32_t first_index;             /* the index its session key starts at */
    uint8_t sig[PT_ED25519_SIG_LEN];
} pt_group_sender_key;

/* Signs an announcement for a Megolm session with a member device's key at the
 * current epoch; PT_ERR_STATE when (user, device) is not a current member device. */
int pt_group_sender_key_make(const pt_group *g, pt_buf *out, const uint8_t *user, size_t user_len,
                             const uint8_t device_pk[static PT_GROUP_KEY_LEN],
                             const uint8_t device_sk[static PT_ED25519_SK_LEN],
                             const uint8_t session_id[static 32], uint32_t first_index) PT_WUR;
/* Pure codec, a fuzz target. */
int pt_group_sender_key_decode(pt_group_sender_key *k, const uint8_t *buf, size_t len) PT_WUR;
/* Decodes and verifies: this group, a valid device signature, a current member
 * device (else PT_ERR_AUTH), an epoch between the last removal and now (else
 * PT_ERR_STATE). On success k describes it; then check that the session key
 * received over the 1:1 channel has this session id. */
int pt_group_sender_key_verify(const pt_group *g, pt_group_sender_key *k, const uint8_t *buf,
                               size_t len) PT_WUR;

#endif /* PT_GROUP_H */
