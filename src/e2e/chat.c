#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "e2e/pt_chat.h"
#include "wire/pt_wire.h"

enum { IN_CONNECT = 1, IN_COM = 2, IN_DISCONNECT = 3, IN_ACK = 4, IN_ROOM_KEY = 5, IN_MSG = 6 };

#define DIGEST_LEN 16
#define COM_HDR (1 + PT_CHAT_MSG_ID_LEN + 8 + DIGEST_LEN + 4)
#define MSG_HDR (COM_HDR + 1 + PT_CHAT_GROUP_ID_LEN)

/* Sessions kept per peer. Two devices that open sessions to each other at the same
 * moment each get the other's pre-key message: both sessions must stay readable,
 * and both sides must settle on the same one to send on (RELIABILITY.md defect 3). */
#define SESSIONS_PER_PEER 3

typedef struct peer {
    uint8_t id[PT_OLM_KEY_LEN];         /* Curve25519 identity */
    pt_olm_session *s[SESSIONS_PER_PEER]; /* s[0]: the one we send on; all are tried */
    size_t n;
} peer;

struct pt_chat {
    const pt_env *env;
    pt_olm_account *acct;
    uint8_t my_id[PT_OLM_KEY_LEN], my_ed[PT_OLM_KEY_LEN];
    peer *peers;                          /* open sessions, one per peer identity */
    size_t npeers;
    uint8_t (*seen)[PT_CHAT_MSG_ID_LEN];  /* ring of delivered message ids */
    size_t nseen, seen_next;
    uint8_t last[PT_OLM_KEY_LEN];         /* the peer of the last receive */
    bool has_last;
    pt_buf plain;                         /* decryption output, reused */
    pt_buf inner;                         /* inner message being built */
};

pt_chat *pt_chat_new(const pt_env *env, pt_olm_account *acct)
{
    pt_chat *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->env = env;
    c->acct = acct;
    pt_olm_account_identity(acct, c->my_id, c->my_ed);
    c->peers = calloc(PT_CHAT_MAX_PEERS, sizeof *c->peers);
    c->seen = calloc(PT_CHAT_SEEN_IDS, sizeof *c->seen);
    if (!c->peers || !c->seen) {
        pt_chat_free(c);
        return NULL;
    }
    pt_buf_init(&c->plain);
    pt_buf_init(&c->inner);
    return c;
}

void pt_chat_free(pt_chat *c)
{
    if (!c) return;
    for (size_t i = 0; c->peers && i < c->npeers; i++)
        for (size_t k = 0; k < c->peers[i].n; k++) pt_olm_session_free(c->peers[i].s[k]);
    free(c->peers);
    free(c->seen);
    pt_buf_free(&c->plain);
    pt_buf_free(&c->inner);
    free(c);
}

static peer *find_peer(const pt_chat *c, const uint8_t id[PT_OLM_KEY_LEN])
{
    for (size_t i = 0; i < c->npeers; i++)
        if (memcmp(c->peers[i].id, id, PT_OLM_KEY_LEN) == 0) return &c->peers[i];
    return NULL;
}

bool pt_chat_has_session(const pt_chat *c, const uint8_t peer_id[static PT_OLM_KEY_LEN])
{
    return find_peer(c, peer_id) != NULL;
}

static peer *peer_slot(pt_chat *c, const uint8_t id[PT_OLM_KEY_LEN])
{
    peer *p = find_peer(c, id);
    if (p) return p;
    if (c->npeers == PT_CHAT_MAX_PEERS) return NULL;
    p = &c->peers[c->npeers++];
    memset(p, 0, sizeof *p);
    memcpy(p->id, id, PT_OLM_KEY_LEN);
    return p;
}

/* Adds s as the session with id to send on; older ones stay readable (the oldest
 * beyond SESSIONS_PER_PEER is wiped). */
static int set_peer(pt_chat *c, const uint8_t id[PT_OLM_KEY_LEN], pt_olm_session *s)
{
    peer *p = peer_slot(c, id);
    if (!p) {
        pt_olm_session_free(s);
        return PT_ERR_TOO_BIG;
    }
    if (p->n == SESSIONS_PER_PEER) pt_olm_session_free(p->s[--p->n]);
    memmove(&p->s[1], &p->s[0], p->n * sizeof p->s[0]);
    p->s[0] = s;
    p->n++;
    return 0;
}

/* A session a pre-key message of theirs just opened. We send on it from now on, but
 * when our own first session to them is still unanswered, they may be doing the same
 * with ours at this moment: then both sides keep the session with the smaller id,
 * which they compute alike, so they settle on the same one at once. */
static int add_inbound(pt_chat *c, const uint8_t id[PT_OLM_KEY_LEN], pt_olm_session *s)
{
    peer *p = find_peer(c, id);
    pt_olm_session *ours = p && p->n ? p->s[0] : NULL;
    bool race = false;
    if (ours && pt_olm_session_next_type(ours) == PT_OLM_MSG_PREKEY && !pt_olm_session_has_received(ours)) {
        uint8_t a[PT_OLM_SESSION_ID_LEN], b[PT_OLM_SESSION_ID_LEN];
        pt_olm_session_id(ours, a);
        pt_olm_session_id(s, b);
        race = memcmp(a, b, sizeof a) < 0; /* ours is the smaller: it stays in front */
    }
    int rc = set_peer(c, id, s);
    if (rc == 0 && race) { /* s went in front: swap it behind ours */
        p = find_peer(c, id);
        pt_olm_session *t = p->s[0];
        p->s[0] = p->s[1];
        p->s[1] = t;
    }
    return rc;
}

static void drop_peer(pt_chat *c, peer *p)
{
    for (size_t k = 0; k < p->n; k++) pt_olm_session_free(p->s[k]); /* wipes the keys */
    *p = c->peers[--c->npeers];
    memset(&c->peers[c->npeers], 0, sizeof *p);
}

static int header(const pt_chat *c, pt_buf *out, uint8_t kind)
{
    uint8_t *h = pt_buf_extend(out, PT_CHAT_HDR_LEN);
    if (!h) return PT_ERR_NOMEM;
    memcpy(h, "PTE", 3);
    h[3] = PT_CHAT_VERSION;
    h[4] = kind;
    memcpy(h + 5, c->my_id, PT_OLM_KEY_LEN);
    return 0;
}

/* Encrypts c->inner for session s and appends a SECURE envelope (or the tail of
 * one whose header the caller wrote) to out. */
static int seal_inner(pt_chat *c, pt_olm_session *s, pt_buf *out)
{
    size_t at = out->len;
    uint8_t *t = pt_buf_extend(out, 1);
    if (!t) return PT_ERR_NOMEM;
    pt_olm_msg_type type;
    int rc = pt_olm_encrypt(s, c->env, c->inner.data, c->inner.len, out, &type);
    if (rc) {
        out->len = at;
        return rc;
    }
    out->data[at] = (uint8_t)type;
    pt_buf_reset(&c->inner);
    return 0;
}

static int build_connect(pt_chat *c, pt_olm_session *s)
{
    uint8_t m[3] = {IN_CONNECT, pt_olm_account_suites(c->acct), (uint8_t)pt_olm_session_suite(s)};
    pt_buf_reset(&c->inner);
    return pt_buf_append(&c->inner, m, sizeof m);
}

static int append_bundle(pt_chat *c, uint32_t key_id, pt_buf *out)
{
    pt_olm_bundle b;
    int rc = pt_olm_account_bundle(c->acct, key_id, &b);
    if (rc) return rc;
    uint8_t *dst = pt_buf_extend(out, PT_OLM_BUNDLE_LEN);
    if (!dst) return PT_ERR_NOMEM;
    pt_olm_bundle_encode(dst, &b);
    return 0;
}

int pt_chat_friend_request(pt_chat *c, uint32_t key_id, const char *note, pt_buf *out)
{
    size_t nlen = note ? strlen(note) : 0;
    if (nlen > PT_CHAT_NOTE_MAX || !pt_wire_utf8_valid((const uint8_t *)note, nlen)) return PT_ERR_INVAL;
    size_t at = out->len;
    int rc = header(c, out, PT_CHAT_FRIEND_REQUEST);
    if (rc == 0) rc = append_bundle(c, key_id, out);
    uint8_t l[2] = {(uint8_t)nlen, (uint8_t)(nlen >> 8)};
    if (rc == 0) rc = pt_buf_append(out, l, 2);
    if (rc == 0) rc = pt_buf_append(out, note, nlen);
    if (rc) out->len = at;
    return rc;
}

/* Parses the bundle at p and checks it is signed and names the envelope's sender. */
static int read_bundle(const uint8_t *sender, const uint8_t *p, size_t len, pt_olm_bundle *b)
{
    if (len < PT_OLM_BUNDLE_LEN || pt_olm_bundle_decode(b, p, PT_OLM_BUNDLE_LEN) != 0)
        return PT_ERR_DECODE;
    if (pt_olm_bundle_verify(b) != 0 || memcmp(b->identity_key, sender, PT_OLM_KEY_LEN) != 0)
        return PT_ERR_AUTH;
    return 0;
}

static int parse_header(const uint8_t *env, size_t len, uint8_t *kind)
{
    if (len < PT_CHAT_HDR_LEN || memcmp(env, "PTE", 3) != 0) return PT_ERR_DECODE;
    if (env[3] != PT_CHAT_VERSION) return PT_ERR_VERSION;
    *kind = env[4];
    return 0;
}

int pt_chat_friend_accept(pt_chat *c, const uint8_t *req, size_t len, pt_buf *out)
{
    uint8_t kind;
    pt_olm_bundle theirs;
    int rc = parse_header(req, len, &kind);
    if (rc) return rc;
    if (kind != PT_CHAT_FRIEND_REQUEST) return PT_ERR_PROTO;
    if ((rc = read_bundle(req + 5, req + PT_CHAT_HDR_LEN, len - PT_CHAT_HDR_LEN, &theirs))) return rc;
    pt_err err = 0;
    pt_olm_session *s = pt_olm_session_new_outbound(c->acct, c->env, &theirs, &err);
    if (!s) return err ? (int)err : PT_ERR_NOMEM;
    /* our bundle carries our identity and signing key; the fallback key stands in
     * for a one-time key, since the session is already open */
    pt_olm_key fb;
    if (pt_olm_account_fallback_key(c->acct, &fb) != 0) {
        if ((rc = pt_olm_account_generate_fallback_key(c->acct, c->env)) != 0 ||
            (rc = pt_olm_account_fallback_key(c->acct, &fb)) != 0) {
            pt_olm_session_free(s);
            return rc;
        }
    }
    size_t at = out->len;
    rc = header(c, out, PT_CHAT_FRIEND_ACCEPT);
    if (rc == 0) rc = append_bundle(c, fb.id, out);
    if (rc == 0) rc = build_connect(c, s);
    if (rc == 0) rc = seal_inner(c, s, out);
    if (rc == 0) rc = set_peer(c, theirs.identity_key, s);
    else pt_olm_session_free(s);
    if (rc) out->len = at;
    return rc;
}

int pt_chat_friend_deny(pt_chat *c, pt_buf *out) { return header(c, out, PT_CHAT_FRIEND_DENY); }

int pt_chat_send(pt_chat *c, const uint8_t peer_id[static PT_OLM_KEY_LEN], const uint8_t *text,
                 size_t len, uint8_t msg_id[static PT_CHAT_MSG_ID_LEN], pt_buf *out)
{
    if (len > PT_CHAT_TEXT_MAX || !pt_wire_utf8_valid(text, len)) return PT_ERR_INVAL;
    peer *p = find_peer(c, peer_id);
    if (!p) return PT_ERR_NOT_FOUND;
    pt_env_random(c->env, msg_id, PT_CHAT_MSG_ID_LEN);
    pt_buf_reset(&c->inner);
    uint8_t *h = pt_buf_extend(&c->inner, COM_HDR);
    if (!h) return PT_ERR_NOMEM;
    h[0] = IN_COM;
    memcpy(h + 1, msg_id, PT_CHAT_MSG_ID_LEN);
    pt_put_u64le(h + 17, pt_env_now_ms(c->env));
    int rc = pt_blake2b(h + 25, DIGEST_LEN, text, len, NULL, 0);
    pt_put_u32le(h + 25 + DIGEST_LEN, (uint32_t)len);
    if (rc == 0) rc = pt_buf_append(&c->inner, text, len);
    size_t at = out->len;
    if (rc == 0) rc = header(c, out, PT_CHAT_SECURE);
    if (rc == 0) rc = seal_inner(c, p->s[0], out);
    if (rc) out->len = at;
    return rc;
}

int pt_chat_send_msg(pt_chat *c, const uint8_t peer_id[static PT_OLM_KEY_LEN], const pt_chat_msg *m,
                     pt_buf *out)
{
    if (m->ctx > PT_CHAT_CTX_MAX || m->len > PT_CHAT_TEXT_MAX - (MSG_HDR - COM_HDR) ||
        !pt_wire_utf8_valid(m->text, m->len))
        return PT_ERR_INVAL;
    peer *p = find_peer(c, peer_id);
    if (!p) return PT_ERR_NOT_FOUND;
    pt_buf_reset(&c->inner);
    uint8_t *h = pt_buf_extend(&c->inner, MSG_HDR);
    if (!h) return PT_ERR_NOMEM;
    h[0] = IN_MSG;
    memcpy(h + 1, m->msg_id, PT_CHAT_MSG_ID_LEN);
    pt_put_u64le(h + 17, m->time_ms);
    int rc = pt_blake2b(h + 25, DIGEST_LEN, m->text, m->len, NULL, 0);
    h[25 + DIGEST_LEN] = m->ctx;
    memcpy(h + 26 + DIGEST_LEN, m->conv, PT_CHAT_GROUP_ID_LEN);
    pt_put_u32le(h + MSG_HDR - 4, (uint32_t)m->len);
    if (rc == 0) rc = pt_buf_append(&c->inner, m->text, m->len);
    size_t at = out->len;
    if (rc == 0) rc = header(c, out, PT_CHAT_SECURE);
    if (rc == 0) rc = seal_inner(c, p->s[0], out);
    pt_wipe(c->inner.data, c->inner.cap);
    pt_buf_reset(&c->inner);
    if (rc) out->len = at;
    return rc;
}

int pt_chat_open(pt_chat *c, pt_olm_suite suite, const uint8_t identity[static PT_OLM_KEY_LEN],
                 const uint8_t one_time[static PT_OLM_KEY_LEN])
{
    pt_err err = 0;
    pt_olm_session *s = pt_olm_session_new_outbound_raw(c->acct, c->env, suite, identity, one_time, &err);
    if (!s) return err ? (int)err : PT_ERR_NOMEM;
    return set_peer(c, identity, s);
}

void pt_chat_forget(pt_chat *c, const uint8_t peer_id[static PT_OLM_KEY_LEN])
{
    peer *p = find_peer(c, peer_id);
    if (p) drop_peer(c, p);
}

/* A peer's sessions: one sealed pickle ("PTOL...") when there is one, else
 * "PTCS" ‖ count u8 ‖ (u32le length ‖ sealed pickle) per session, in order. */
static const uint8_t multi_magic[4] = {'P', 'T', 'C', 'S'};

int pt_chat_pickle_session(const pt_chat *c, const uint8_t peer_id[static PT_OLM_KEY_LEN],
                           const uint8_t *key, size_t keylen, pt_buf *out)
{
    const peer *p = find_peer(c, peer_id);
    if (!p || p->n == 0) return PT_ERR_NOT_FOUND;
    if (p->n == 1) return pt_olm_session_pickle(p->s[0], c->env, key, keylen, out);
    uint8_t count = (uint8_t)p->n;
    int rc = pt_buf_append(out, multi_magic, 4);
    if (rc == 0) rc = pt_buf_append(out, &count, 1);
    pt_buf one;
    pt_buf_init(&one);
    for (size_t i = 0; rc == 0 && i < p->n; i++) {
        pt_buf_reset(&one);
        uint8_t l[4];
        if ((rc = pt_olm_session_pickle(p->s[i], c->env, key, keylen, &one)) != 0) break;
        pt_put_u32le(l, (uint32_t)one.len);
        if ((rc = pt_buf_append(out, l, 4)) == 0) rc = pt_buf_append(out, one.data, one.len);
    }
    pt_buf_free(&one);
    return rc;
}

static int restore_one(pt_chat *c, const uint8_t peer_id[PT_OLM_KEY_LEN], const uint8_t *key, size_t keylen,
                       const uint8_t *in, size_t len, pt_olm_session **out)
{
    pt_err err = 0;
    pt_olm_session *s = pt_olm_session_unpickle(key, keylen, in, len, &err);
    if (!s) return err ? (int)err : PT_ERR_NOMEM;
    uint8_t theirs[PT_OLM_KEY_LEN];
    pt_olm_session_their_identity(s, theirs);
    if (memcmp(theirs, peer_id, PT_OLM_KEY_LEN) != 0) {
        pt_olm_session_free(s);
        return PT_ERR_DECODE;
    }
    (void)c;
    *out = s;
    return 0;
}

int pt_chat_restore_session(pt_chat *c, const uint8_t peer_id[static PT_OLM_KEY_LEN],
                            const uint8_t *key, size_t keylen, const uint8_t *in, size_t len)
{
    pt_olm_session *got[SESSIONS_PER_PEER] = {0};
    size_t n = 0;
    int rc = 0;
    if (len >= 5 && memcmp(in, multi_magic, 4) == 0) {
        size_t count = in[4], at = 5;
        if (count < 1 || count > SESSIONS_PER_PEER) return PT_ERR_DECODE;
        for (size_t i = 0; rc == 0 && i < count; i++) {
            if (len - at < 4) {
                rc = PT_ERR_DECODE;
                break;
            }
            size_t l = pt_get_u32le(in + at);
            at += 4;
            if (l > len - at) {
                rc = PT_ERR_DECODE;
                break;
            }
            if ((rc = restore_one(c, peer_id, key, keylen, in + at, l, &got[n])) == 0) n++;
            at += l;
        }
        if (rc == 0 && at != len) rc = PT_ERR_DECODE;
    } else {
        if ((rc = restore_one(c, peer_id, key, keylen, in, len, &got[0])) == 0) n = 1;
    }
    if (rc) {
        for (size_t i = 0; i < n; i++) pt_olm_session_free(got[i]);
        return rc;
    }
    peer *p = find_peer(c, peer_id);
    if (p) { /* replaces what we held for that peer */
        for (size_t k = 0; k < p->n; k++) pt_olm_session_free(p->s[k]);
        p->n = 0;
    }
    for (size_t i = n; i-- > 0;) /* oldest first, so the first one ends in front */
        if ((rc = set_peer(c, peer_id, got[i])) != 0) {
            for (size_t j = 0; j < i; j++) pt_olm_session_free(got[j]);
            return rc;
        }
    return 0;
}

bool pt_chat_last_peer(const pt_chat *c, uint8_t peer_id[static PT_OLM_KEY_LEN])
{
    if (c->has_last) memcpy(peer_id, c->last, PT_OLM_KEY_LEN);
    return c->has_last;
}

int pt_chat_send_room_key(pt_chat *c, const uint8_t peer_id[static PT_OLM_KEY_LEN],
                          const uint8_t group_id[static PT_CHAT_GROUP_ID_LEN], const uint8_t *key,
                          size_t len, pt_buf *out)
{
    if (len == 0 || len > PT_CHAT_ROOM_KEY_MAX) return PT_ERR_INVAL;
    peer *p = find_peer(c, peer_id);
    if (!p) return PT_ERR_NOT_FOUND;
    pt_buf_reset(&c->inner);
    uint8_t *h = pt_buf_extend(&c->inner, 1 + PT_CHAT_GROUP_ID_LEN + 2);
    if (!h) return PT_ERR_NOMEM;
    h[0] = IN_ROOM_KEY;
    memcpy(h + 1, group_id, PT_CHAT_GROUP_ID_LEN);
    h[17] = (uint8_t)len;
    h[18] = (uint8_t)(len >> 8);
    size_t at = out->len;
    int rc = pt_buf_append(&c->inner, key, len);
    if (rc == 0) rc = header(c, out, PT_CHAT_SECURE);
    if (rc == 0) rc = seal_inner(c, p->s[0], out);
    pt_wipe(c->inner.data, c->inner.cap); /* a group key: do not leave it behind */
    pt_buf_reset(&c->inner);
    if (rc) out->len = at;
    return rc;
}

int pt_chat_disconnect(pt_chat *c, const uint8_t peer_id[static PT_OLM_KEY_LEN], pt_buf *out)
{
    peer *p = find_peer(c, peer_id);
    if (!p) return PT_ERR_NOT_FOUND;
    uint8_t m[2] = {IN_DISCONNECT, 0};
    pt_buf_reset(&c->inner);
    size_t at = out->len;
    int rc = pt_buf_append(&c->inner, m, sizeof m);
    if (rc == 0) rc = header(c, out, PT_CHAT_SECURE);
    if (rc == 0) rc = seal_inner(c, p->s[0], out);
    if (rc) {
        out->len = at;
        return rc;
    }
    drop_peer(c, p);
    return 0;
}

/* ---- receiving ---------------------------------------------------------------------- */

static int clear_ack(pt_chat *c, const uint8_t *env, size_t len, int code, pt_buf *reply,
                     pt_chat_event *ev)
{
    ev->type = PT_CHAT_EV_REJECTED;
    ev->code = code;
    uint8_t hash[DIGEST_LEN];
    int rc = pt_blake2b(hash, sizeof hash, env, len, NULL, 0);
    memcpy(ev->msg_id, hash, sizeof hash);
    size_t at = reply->len;
    if (rc == 0) rc = header(c, reply, PT_CHAT_CLEAR_ACK);
    if (rc == 0) rc = pt_buf_append(reply, hash, sizeof hash);
    uint8_t cb = (uint8_t)code;
    if (rc == 0) rc = pt_buf_append(reply, &cb, 1);
    if (rc) reply->len = at;
    return rc;
}

static int encrypted_ack(pt_chat *c, peer *p, const uint8_t *msg_id, int code, pt_buf *reply)
{
    uint8_t m[1 + PT_CHAT_MSG_ID_LEN + 1];
    m[0] = IN_ACK;
    memcpy(m + 1, msg_id, PT_CHAT_MSG_ID_LEN);
    m[1 + PT_CHAT_MSG_ID_LEN] = (uint8_t)code;
    pt_buf_reset(&c->inner);
    size_t at = reply->len;
    int rc = pt_buf_append(&c->inner, m, sizeof m);
    if (rc == 0) rc = header(c, reply, PT_CHAT_SECURE);
    if (rc == 0) rc = seal_inner(c, p->s[0], reply);
    if (rc) reply->len = at;
    return rc;
}

static bool seen_before(pt_chat *c, const uint8_t id[PT_CHAT_MSG_ID_LEN])
{
    for (size_t i = 0; i < c->nseen; i++)
        if (memcmp(c->seen[i], id, PT_CHAT_MSG_ID_LEN) == 0) return true;
    memcpy(c->seen[c->seen_next], id, PT_CHAT_MSG_ID_LEN);
    c->seen_next = (c->seen_next + 1) % PT_CHAT_SEEN_IDS;
    if (c->nseen < PT_CHAT_SEEN_IDS) c->nseen++;
    return false;
}

/* Handles a decrypted inner message from peer p. */
static int on_inner(pt_chat *c, peer *p, const uint8_t *m, size_t n, pt_chat_event *ev,
                    pt_buf *reply, const uint8_t *env, size_t envlen)
{
    if (n < 1) return clear_ack(c, env, envlen, PT_CHAT_ACK_CORRUPTED, reply, ev);
    switch (m[0]) {
    case IN_CONNECT:
        if (n != 3) return clear_ack(c, env, envlen, PT_CHAT_ACK_CORRUPTED, reply, ev);
        ev->type = PT_CHAT_EV_CONNECTED;
        ev->suite = (int)pt_olm_session_suite(p->s[0]);
        return 0;
    case IN_COM: {
        if (n < COM_HDR || n - COM_HDR != pt_get_u32le(m + 25 + DIGEST_LEN))
            return clear_ack(c, env, envlen, PT_CHAT_ACK_CORRUPTED, reply, ev);
        const uint8_t *text = m + COM_HDR;
        size_t tlen = n - COM_HDR;
        memcpy(ev->msg_id, m + 1, PT_CHAT_MSG_ID_LEN);
        uint8_t d[DIGEST_LEN];
        int rc = pt_blake2b(d, sizeof d, text, tlen, NULL, 0);
        if (rc) return rc;
        if (pt_ct_memcmp(d, m + 25, DIGEST_LEN) != 0) {
            ev->type = PT_CHAT_EV_REJECTED;
            ev->code = PT_CHAT_ACK_HASH_MISMATCH;
            return encrypted_ack(c, p, ev->msg_id, PT_CHAT_ACK_HASH_MISMATCH, reply);
        }
        if (!pt_wire_utf8_valid(text, tlen)) {
            ev->type = PT_CHAT_EV_REJECTED;
            ev->code = PT_CHAT_ACK_CORRUPTED;
            return encrypted_ack(c, p, ev->msg_id, PT_CHAT_ACK_CORRUPTED, reply);
        }
        /* exactly once: a copy delivered again is acknowledged, not shown */
        ev->type = seen_before(c, ev->msg_id) ? PT_CHAT_EV_NONE : PT_CHAT_EV_MESSAGE;
        ev->time_ms = pt_get_u64le(m + 17);
        ev->text = text;
        ev->len = tlen;
        return encrypted_ack(c, p, ev->msg_id, PT_CHAT_ACK_ACCEPTED, reply);
    }
    case IN_MSG: {
        if (n < MSG_HDR || n - MSG_HDR != pt_get_u32le(m + MSG_HDR - 4) ||
            m[25 + DIGEST_LEN] > PT_CHAT_CTX_MAX)
            return clear_ack(c, env, envlen, PT_CHAT_ACK_CORRUPTED, reply, ev);
        const uint8_t *text = m + MSG_HDR;
        size_t tlen = n - MSG_HDR;
        memcpy(ev->msg_id, m + 1, PT_CHAT_MSG_ID_LEN);
        uint8_t d[DIGEST_LEN];
        int rc = pt_blake2b(d, sizeof d, text, tlen, NULL, 0);
        if (rc) return rc;
        if (pt_ct_memcmp(d, m + 25, DIGEST_LEN) != 0 || !pt_wire_utf8_valid(text, tlen)) {
            ev->type = PT_CHAT_EV_REJECTED;
            ev->code = pt_ct_memcmp(d, m + 25, DIGEST_LEN) != 0 ? PT_CHAT_ACK_HASH_MISMATCH
                                                                 : PT_CHAT_ACK_CORRUPTED;
            return encrypted_ack(c, p, ev->msg_id, ev->code, reply);
        }
        ev->type = seen_before(c, ev->msg_id) ? PT_CHAT_EV_NONE : PT_CHAT_EV_MESSAGE;
        ev->time_ms = pt_get_u64le(m + 17);
        ev->ctx = m[25 + DIGEST_LEN];
        memcpy(ev->conv, m + 26 + DIGEST_LEN, PT_CHAT_GROUP_ID_LEN);
        ev->text = text;
        ev->len = tlen;
        return encrypted_ack(c, p, ev->msg_id, PT_CHAT_ACK_ACCEPTED, reply);
    }
    case IN_DISCONNECT:
        if (n != 2) return clear_ack(c, env, envlen, PT_CHAT_ACK_CORRUPTED, reply, ev);
        ev->type = PT_CHAT_EV_DISCONNECTED;
        drop_peer(c, p);
        return 0;
    case IN_ROOM_KEY: {
        size_t kl = n >= 19 ? (size_t)m[17] | (size_t)m[18] << 8 : 0;
        if (n < 19 || kl == 0 || kl > PT_CHAT_ROOM_KEY_MAX || n - 19 != kl)
            return clear_ack(c, env, envlen, PT_CHAT_ACK_CORRUPTED, reply, ev);
        ev->type = PT_CHAT_EV_ROOM_KEY;
        memcpy(ev->msg_id, m + 1, PT_CHAT_GROUP_ID_LEN);
        ev->text = m + 19;
        ev->len = kl;
        return 0;
    }
    case IN_ACK:
        if (n != 2 + PT_CHAT_MSG_ID_LEN) return clear_ack(c, env, envlen, PT_CHAT_ACK_CORRUPTED, reply, ev);
        ev->type = PT_CHAT_EV_ACK;
        memcpy(ev->msg_id, m + 1, PT_CHAT_MSG_ID_LEN);
        ev->code = m[1 + PT_CHAT_MSG_ID_LEN];
        return 0;
    default:
        return clear_ack(c, env, envlen, PT_CHAT_ACK_CORRUPTED, reply, ev);
    }
}

int pt_chat_receive(pt_chat *c, const uint8_t *env, size_t len, pt_chat_event *ev, pt_buf *reply)
{
    memset(ev, 0, sizeof *ev);
    c->has_last = false;
    if (c->plain.len) pt_wipe(c->plain.data, c->plain.len); /* the previous plaintext */
    uint8_t kind;
    if (parse_header(env, len, &kind) != 0)
        return clear_ack(c, env, len, PT_CHAT_ACK_CORRUPTED, reply, ev);
    const uint8_t *sender = env + 5, *p = env + PT_CHAT_HDR_LEN;
    size_t n = len - PT_CHAT_HDR_LEN;
    memcpy(ev->peer, sender, PT_OLM_KEY_LEN);
    pt_olm_bundle b;
    pt_err err = 0;
    switch (kind) {
    case PT_CHAT_FRIEND_REQUEST: {
        int rc = read_bundle(sender, p, n, &b);
        if (rc) return clear_ack(c, env, len, rc == PT_ERR_AUTH ? PT_CHAT_ACK_NOT_VALIDATED
                                                                : PT_CHAT_ACK_CORRUPTED, reply, ev);
        if (n < PT_OLM_BUNDLE_LEN + 2) return clear_ack(c, env, len, PT_CHAT_ACK_CORRUPTED, reply, ev);
        size_t nl = p[PT_OLM_BUNDLE_LEN] | (size_t)p[PT_OLM_BUNDLE_LEN + 1] << 8;
        const uint8_t *note = p + PT_OLM_BUNDLE_LEN + 2;
        if (nl > PT_CHAT_NOTE_MAX || n - PT_OLM_BUNDLE_LEN - 2 != nl || !pt_wire_utf8_valid(note, nl))
            return clear_ack(c, env, len, PT_CHAT_ACK_CORRUPTED, reply, ev);
        ev->type = PT_CHAT_EV_FRIEND_REQUEST;
        memcpy(ev->peer_signing, b.signing_key, PT_OLM_KEY_LEN);
        ev->text = note;
        ev->len = nl;
        return 0;
    }
    case PT_CHAT_FRIEND_ACCEPT: {
        int rc = read_bundle(sender, p, n, &b);
        if (rc) return clear_ack(c, env, len, rc == PT_ERR_AUTH ? PT_CHAT_ACK_NOT_VALIDATED
                                                                : PT_CHAT_ACK_CORRUPTED, reply, ev);
        if (n < PT_OLM_BUNDLE_LEN + 1 || p[PT_OLM_BUNDLE_LEN] != PT_OLM_MSG_PREKEY)
            return clear_ack(c, env, len, PT_CHAT_ACK_CORRUPTED, reply, ev);
        pt_buf_reset(&c->plain);
        pt_olm_session *s = pt_olm_session_new_inbound(c->acct, sender, p + PT_OLM_BUNDLE_LEN + 1,
                                                       n - PT_OLM_BUNDLE_LEN - 1, &c->plain, &err);
        if (!s) return clear_ack(c, env, len, PT_CHAT_ACK_UNDECRYPTABLE, reply, ev);
        if (c->plain.len != 3 || c->plain.data[0] != IN_CONNECT) {
            pt_olm_session_free(s);
            return clear_ack(c, env, len, PT_CHAT_ACK_CORRUPTED, reply, ev);
        }
        if ((rc = set_peer(c, sender, s)) != 0) return rc;
        ev->type = PT_CHAT_EV_FRIEND_ACCEPTED;
        ev->suite = (int)pt_olm_session_suite(s);
        memcpy(ev->peer_signing, b.signing_key, PT_OLM_KEY_LEN);
        return 0;
    }
    case PT_CHAT_FRIEND_DENY:
        if (n != 0) return clear_ack(c, env, len, PT_CHAT_ACK_CORRUPTED, reply, ev);
        ev->type = PT_CHAT_EV_FRIEND_DENIED;
        return 0;
    case PT_CHAT_CLEAR_ACK:
        if (n != DIGEST_LEN + 1) return clear_ack(c, env, len, PT_CHAT_ACK_CORRUPTED, reply, ev);
        ev->type = PT_CHAT_EV_ACK;
        memcpy(ev->msg_id, p, DIGEST_LEN);
        ev->code = p[DIGEST_LEN];
        return 0;
    case PT_CHAT_SECURE: {
        if (n < 1 || (p[0] != PT_OLM_MSG_PREKEY && p[0] != PT_OLM_MSG_NORMAL))
            return clear_ack(c, env, len, PT_CHAT_ACK_CORRUPTED, reply, ev);
        peer *pr = find_peer(c, sender);
        pt_buf_reset(&c->plain);
        size_t k = SESSIONS_PER_PEER; /* the session that matches a pre-key message */
        for (size_t i = 0; p[0] == PT_OLM_MSG_PREKEY && pr && i < pr->n && k == SESSIONS_PER_PEER; i++)
            if (pt_olm_session_matches_inbound(pr->s[i], p + 1, n - 1)) k = i;
        if (p[0] == PT_OLM_MSG_PREKEY && k == SESSIONS_PER_PEER) {
            /* a peer (re)opening a session: only with a pre-key message of its own */
            pt_olm_session *s = pt_olm_session_new_inbound(c->acct, sender, p + 1, n - 1, &c->plain, &err);
            if (!s) return clear_ack(c, env, len, PT_CHAT_ACK_UNDECRYPTABLE, reply, ev);
            int rc = add_inbound(c, sender, s);
            if (rc) return rc;
            pr = find_peer(c, sender);
        } else if (p[0] == PT_OLM_MSG_PREKEY) {
            if (pt_olm_decrypt(pr->s[k], PT_OLM_MSG_PREKEY, p + 1, n - 1, &c->plain) != 0)
                return clear_ack(c, env, len, PT_CHAT_ACK_UNDECRYPTABLE, reply, ev);
        } else {
            if (!pr) return clear_ack(c, env, len, PT_CHAT_ACK_NOT_VALIDATED, reply, ev);
            /* any session we keep may be the one: a failed try changes nothing */
            bool ok = false;
            for (size_t i = 0; i < pr->n && !ok; i++) {
                pt_buf_reset(&c->plain);
                ok = pt_olm_decrypt(pr->s[i], PT_OLM_MSG_NORMAL, p + 1, n - 1, &c->plain) == 0;
            }
            if (!ok) return clear_ack(c, env, len, PT_CHAT_ACK_UNDECRYPTABLE, reply, ev);
        }
        memcpy(c->last, sender, PT_OLM_KEY_LEN);
        c->has_last = true;
        return on_inner(c, pr, c->plain.data, c->plain.len, ev, reply, env, len);
    }
    default:
        return clear_ack(c, env, len, PT_CHAT_ACK_CORRUPTED, reply, ev);
    }
}

/* ---- multi-device envelopes --------------------------------------------------------- */

int pt_chat_multi_begin(pt_buf *out, size_t *at)
{
    *at = out->len;
    uint8_t *h = pt_buf_extend(out, PT_CHAT_MULTI_HDR);
    if (!h) return PT_ERR_NOMEM;
    memcpy(h, "PTM", 3);
    h[3] = PT_CHAT_VERSION;
    h[4] = h[5] = 0;
    return 0;
}

int pt_chat_multi_add(pt_buf *out, size_t at, const uint8_t recipient[static PT_OLM_KEY_LEN],
                      const uint8_t *entry, size_t len)
{
    size_t n = (size_t)out->data[at + 4] | (size_t)out->data[at + 5] << 8;
    if (n >= PT_CHAT_MULTI_MAX || len > UINT32_MAX) return PT_ERR_TOO_BIG;
    uint8_t *p = pt_buf_extend(out, PT_OLM_KEY_LEN + 4 + len);
    if (!p) return PT_ERR_NOMEM;
    memcpy(p, recipient, PT_OLM_KEY_LEN);
    pt_put_u32le(p + PT_OLM_KEY_LEN, (uint32_t)len);
    memcpy(p + PT_OLM_KEY_LEN + 4, entry, len);
    n++;
    out->data[at + 4] = (uint8_t)n;
    out->data[at + 5] = (uint8_t)(n >> 8);
    return 0;
}

int pt_chat_multi_find(const uint8_t *env, size_t len, const uint8_t recipient[static PT_OLM_KEY_LEN],
                       const uint8_t **entry, size_t *elen)
{
    if (len < PT_CHAT_MULTI_HDR || memcmp(env, "PTM", 3) != 0) return PT_ERR_DECODE;
    if (env[3] != PT_CHAT_VERSION) return PT_ERR_DECODE;
    size_t n = (size_t)env[4] | (size_t)env[5] << 8, off = PT_CHAT_MULTI_HDR;
    if (n > PT_CHAT_MULTI_MAX) return PT_ERR_DECODE;
    int found = PT_ERR_NOT_FOUND;
    for (size_t i = 0; i < n; i++) {
        if (len - off < PT_OLM_KEY_LEN + 4) return PT_ERR_DECODE;
        size_t l = pt_get_u32le(env + off + PT_OLM_KEY_LEN);
        if (l > len - off - PT_OLM_KEY_LEN - 4) return PT_ERR_DECODE;
        if (memcmp(env + off, recipient, PT_OLM_KEY_LEN) == 0) {
            if (found == 0) return PT_ERR_DECODE; /* two entries for one device */
            *entry = env + off + PT_OLM_KEY_LEN + 4;
            *elen = l;
            found = 0;
        }
        off += PT_OLM_KEY_LEN + 4 + l;
    }
    return off == len ? found : PT_ERR_DECODE;
}

int pt_chat_envelope_sender(const uint8_t *env, size_t len, uint8_t sender[static PT_OLM_KEY_LEN])
{
    uint8_t kind;
    int rc = parse_header(env, len, &kind);
    if (rc) return rc;
    memcpy(sender, env + 5, PT_OLM_KEY_LEN);
    return 0;
}
