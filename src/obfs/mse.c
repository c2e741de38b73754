/*
 * MSE v1.0 (see pt_mse.h). The handshake, with the states below:
 *   1 A->B  Ya, PadA                                          B: WAIT_Y
 *   2 B->A  Yb, PadB                                          A: WAIT_Y
 *   3 A->B  HASH('req1',S), HASH('req2',SKEY)^HASH('req3',S),   B: SYNC, SKEY, VC, PADC, IA
 *           ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
 *   4 B->A  ENCRYPT(VC, crypto_select, len(PadD), PadD)        A: SYNC, SELECT, PADD
 *   then    ENCRYPT2(payload) both ways                         DONE
 * Every number on the wire is big-endian. Bytes are kept in rx until a state has
 * all it needs, so input may arrive split anywhere.
 */
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "crypto/pt_crypto_legacy.h"
#include "obfs/pt_mse.h"

enum mse_state {
    ST_INIT,   /* pt_mse_start not called yet */
    ST_WAIT_Y, /* waiting for the peer's 96-byte DH key */
    ST_SYNC,   /* B: scanning for HASH('req1', S); A: for ENCRYPT(VC) */
    ST_SKEY,   /* B: the 20-byte SKEY hash */
    ST_VC,     /* B: VC, crypto_provide, len(PadC) */
    ST_PADC,   /* B: PadC, len(IA) */
    ST_IA,     /* B: IA */
    ST_SELECT, /* A: crypto_select, len(PadD) */
    ST_PADD,   /* A: PadD */
    ST_DONE,   /* payload flows */
    ST_DOOMED, /* a deferred rule failed: swallow input until the deadline */
    ST_FAILED, /* final error in err */
};

static const uint8_t VC[8];

struct pt_mse {
    const pt_env *env;
    bool initiator;
    int state;
    int err;                    /* final or deferred error */
    pt_mse_reason reason;       /* why */
    uint8_t skey[PT_MSE_SKEYS_MAX][PT_MSE_SKEY_MAX];
    size_t skey_len[PT_MSE_SKEYS_MAX];
    uint8_t req2[PT_MSE_SKEYS_MAX][PT_SHA1_OUT_LEN]; /* receiver: HASH('req2', SKEY_i) */
    size_t nskeys;
    int skey_idx;               /* receiver: which SKEY matched */
    uint32_t crypto;            /* initiator: provided; receiver: acceptable */
    bool prefer_plain;
    uint16_t pad_ab_max, pad_cd_max;
    unsigned defer;             /* rules handled late */
    uint8_t *ia;                /* initiator: IA to send (copied) */
    size_t ia_len;
    uint64_t deadline, dh_deadline; /* monotonic ms */
    uint8_t priv[PT_DH768_PRIV_LEN]; /* wiped once S is known */
    uint8_t pub[PT_DH768_LEN];
    uint8_t s[PT_DH768_LEN];    /* receiver keeps S until the SKEY is known */
    uint8_t req1[PT_SHA1_OUT_LEN], req3[PT_SHA1_OUT_LEN]; /* receiver */
    uint8_t enc_vc[8];          /* initiator: ENCRYPT(VC) under B's key */
    pt_rc4 *enc, *dec;          /* our keystream, the peer's */
    pt_buf rx;                  /* received, not yet consumed */
    size_t consumed;            /* bytes of the stream consumed before rx[0] */
    size_t scan;                /* SYNC: rx offsets below this were ruled out */
    size_t need_len;            /* PADC / IA / PADD: length announced */
    uint32_t provided, selected;
};

static const char *role(const pt_mse *m) { return m->initiator ? "initiator" : "receiver"; }

const char *pt_mse_reason_name(pt_mse_reason r)
{
    switch (r) {
    case PT_MSE_OK: return "ok";
    case PT_MSE_RULE_SHORT: return "fewer than 96 bytes before the DH timeout";
    case PT_MSE_RULE_LONG: return "more than 608 bytes before the DH step";
    case PT_MSE_RULE_SYNC: return "no synchronisation point within the limit";
    case PT_MSE_RULE_SKEY: return "unknown SKEY hash";
    case PT_MSE_RULE_VC: return "VC does not decrypt to zeros";
    case PT_MSE_RULE_PROVIDE: return "no acceptable method in crypto_provide";
    case PT_MSE_RULE_SELECT: return "crypto_select names a method not provided";
    case PT_MSE_RULES_ALL: break;
    case PT_MSE_FAIL_FORMAT: return "malformed handshake field";
    case PT_MSE_FAIL_TIMEOUT: return "handshake timeout";
    case PT_MSE_FAIL_INTERNAL: return "internal failure";
    }
    return "unknown";
}

void pt_mse_config_init(pt_mse_config *cfg, bool initiator)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->initiator = initiator;
    cfg->crypto = PT_MSE_CRYPTO_PLAIN | PT_MSE_CRYPTO_RC4;
    cfg->pad_ab_max = PT_MSE_PAD_MAX;
    cfg->timeout_ms = PT_MSE_TIMEOUT_MS;
    cfg->dh_timeout_ms = PT_MSE_TIMEOUT_MS;
}

/* Records a failure. A deferred rule dooms the handshake (silence until the
 * deadline); anything else is final at once. Returns the error. */
static int fail(pt_mse *m, int err, pt_mse_reason reason)
{
    m->err = err;
    m->reason = reason;
    bool later = (m->defer & (unsigned)reason) != 0;
    m->state = later ? ST_DOOMED : ST_FAILED;
    pt_log_info("mse: %s: %s (%s)%s", role(m), pt_mse_reason_name(reason), pt_strerror(err),
                later ? ", answered at the deadline" : "");
    pt_buf_reset(&m->rx);
    pt_wipe(m->priv, sizeof m->priv);
    pt_wipe(m->s, sizeof m->s);
    return later ? PT_MSE_NEED_MORE : err;
}

static void put_u32be(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static uint32_t get_u32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void put_u16be(uint8_t *p, size_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static size_t get_u16be(const uint8_t *p) { return (size_t)p[0] << 8 | p[1]; }

/* Uniform in 0..max, from the environment's randomness (rejection sampling). */
static size_t random_upto(const pt_env *env, size_t max)
{
    uint32_t span = (uint32_t)max + 1, limit = 65536u - 65536u % span;
    for (;;) {
        uint8_t b[2];
        pt_env_random(env, b, sizeof b);
        uint32_t r = (uint32_t)get_u16be(b);
        if (r < limit) return r % span;
    }
}

/* HASH(tag, a, b) with b optional. */
static int hash3(uint8_t out[static PT_SHA1_OUT_LEN], const char *tag, const uint8_t *a,
                 size_t alen, const uint8_t *b, size_t blen)
{
    const uint8_t *parts[3] = {(const uint8_t *)tag, a, b};
    size_t lens[3] = {4, alen, blen};
    return pt_sha1_parts(out, parts, lens, b ? 3 : 2);
}

/* Makes both RC4 streams from S and the chosen SKEY: we send with keyA if we are
 * A, keyB if we are B; the peer's is the other. */
static int make_streams(pt_mse *m, const uint8_t *skey, size_t skey_len)
{
    uint8_t ka[PT_SHA1_OUT_LEN], kb[PT_SHA1_OUT_LEN];
    int rc = hash3(ka, "keyA", m->s, sizeof m->s, skey, skey_len);
    if (rc == 0) rc = hash3(kb, "keyB", m->s, sizeof m->s, skey, skey_len);
    if (rc == 0) {
        m->enc = pt_rc4_new(m->initiator ? ka : kb, sizeof ka, PT_MSE_RC4_DROP);
        m->dec = pt_rc4_new(m->initiator ? kb : ka, sizeof ka, PT_MSE_RC4_DROP);
        if (!m->enc || !m->dec) rc = PT_ERR_CRYPTO;
    }
    pt_wipe(ka, sizeof ka);
    pt_wipe(kb, sizeof kb);
    pt_wipe(m->s, sizeof m->s);
    return rc;
}

/* Appends ENCRYPT(in) to out. */
static int append_enc(pt_mse *m, pt_buf *out, const uint8_t *in, size_t len)
{
    if (len == 0) return 0;
    uint8_t *p = pt_buf_extend(out, len);
    if (!p) return PT_ERR_NOMEM;
    return pt_rc4_xor(m->enc, p, in, len);
}

/* Appends our DH key and a random pad. */
static int send_key(pt_mse *m, pt_buf *out)
{
    pt_env_random(m->env, m->priv, sizeof m->priv);
    int rc = pt_dh768_public(m->pub, m->priv);
    if (rc != 0) return rc;
    size_t pad = random_upto(m->env, m->pad_ab_max);
    uint8_t *p = pt_buf_extend(out, PT_DH768_LEN + pad);
    if (!p) return PT_ERR_NOMEM;
    memcpy(p, m->pub, PT_DH768_LEN);
    pt_env_random(m->env, p + PT_DH768_LEN, pad);
    return 0;
}

int pt_mse_start(pt_mse *m, pt_buf *out)
{
    PT_ASSERT(m && out && m->state == ST_INIT);
    m->state = ST_WAIT_Y;
    if (!m->initiator) return 0;
    int rc = send_key(m, out);
    return rc ? fail(m, rc, PT_MSE_FAIL_INTERNAL) : 0;
}

/* Initiator, step 3, once Yb and so S are known. */
static int send_step3(pt_mse *m, pt_buf *out)
{
    const uint8_t *skey = m->skey[0];
    size_t skey_len = m->skey_len[0];
    uint8_t h1[PT_SHA1_OUT_LEN], h2[PT_SHA1_OUT_LEN], h3[PT_SHA1_OUT_LEN];
    int rc = hash3(h1, "req1", m->s, sizeof m->s, NULL, 0);
    if (rc == 0) rc = hash3(h2, "req2", skey, skey_len, NULL, 0);
    if (rc == 0) rc = hash3(h3, "req3", m->s, sizeof m->s, NULL, 0);
    if (rc == 0) rc = make_streams(m, skey, skey_len);
    if (rc != 0) return rc;
    for (size_t i = 0; i < sizeof h2; i++) h2[i] ^= h3[i];
    if (pt_buf_append(out, h1, sizeof h1) != 0 || pt_buf_append(out, h2, sizeof h2) != 0)
        return PT_ERR_NOMEM;

    size_t padc = random_upto(m->env, m->pad_cd_max);
    uint8_t hdr[8 + 4 + 2 + PT_MSE_PAD_MAX + 2] = {0}; /* VC, provide, len(PadC), PadC, len(IA) */
    put_u32be(hdr + 8, m->crypto);
    put_u16be(hdr + 12, padc);
    put_u16be(hdr + 14 + padc, m->ia_len);
    if ((rc = append_enc(m, out, hdr, 16 + padc)) != 0) return rc;
    if ((rc = append_enc(m, out, m->ia, m->ia_len)) != 0) return rc;
    /* B's stream begins with ENCRYPT(VC): the 8 bytes A resynchronises on. */
    return pt_rc4_xor(m->dec, m->enc_vc, VC, sizeof VC);
}

/* Receiver, step 4. */
static int send_step4(pt_mse *m, pt_buf *out)
{
    size_t padd = random_upto(m->env, m->pad_cd_max);
    uint8_t hdr[8 + 4 + 2 + PT_MSE_PAD_MAX] = {0};
    put_u32be(hdr + 8, m->selected);
    put_u16be(hdr + 12, padd);
    return append_enc(m, out, hdr, 14 + padd);
}

/* The peer's DH key has arrived (first 96 bytes of rx). B draws its own key only
 * now, so that a port scan that sends nothing costs no exponentiation. */
static int on_key(pt_mse *m, pt_buf *out)
{
    if (m->rx.len > PT_MSE_EARLY_MAX) return fail(m, PT_ERR_TOO_BIG, PT_MSE_RULE_LONG);
    int rc = m->initiator ? 0 : send_key(m, out);
    if (rc != 0) return fail(m, rc, PT_MSE_FAIL_INTERNAL);
    rc = pt_dh768_shared(m->s, m->priv, m->rx.data);
    pt_wipe(m->priv, sizeof m->priv);
    if (rc == PT_ERR_WEAK_KEY) return fail(m, rc, PT_MSE_FAIL_FORMAT);
    if (rc == 0 && m->initiator) rc = send_step3(m, out);
    return rc ? fail(m, rc, PT_MSE_FAIL_INTERNAL) : 0;
}

/* Consumes n bytes of rx. */
static void eat(pt_mse *m, size_t n)
{
    pt_buf_consume(&m->rx, n);
    m->consumed += n;
    m->scan = 0;
}

/* Looks for the synchronisation pattern pat[0..plen) in rx; it must end within
 * `limit` bytes of the connection start. 1 found (consumed), 0 need more,
 * negative on failure. */
static int sync_on(pt_mse *m, const uint8_t *pat, size_t plen, size_t limit)
{
    while (m->scan + plen <= m->rx.len) {
        if (m->consumed + m->scan + plen > limit) break;
        if (pt_ct_memcmp(m->rx.data + m->scan, pat, plen) == 0) {
            eat(m, m->scan + plen);
            return 1;
        }
        m->scan++;
    }
    if (m->consumed + m->rx.len >= limit) return fail(m, PT_ERR_PROTO, PT_MSE_RULE_SYNC);
    return 0;
}

/* Decrypts the first n bytes of rx in place under the peer's stream. */
static int dec_rx(pt_mse *m, size_t n)
{
    return pt_rc4_xor(m->dec, m->rx.data, m->rx.data, n);
}

/* The handshake is over: whatever is left in rx is payload. */
static int finish(pt_mse *m, pt_buf *payload)
{
    m->state = ST_DONE;
    pt_log_debug("mse: %s: done, %s", role(m),
                 m->selected == PT_MSE_CRYPTO_RC4 ? "rc4" : "plaintext");
    if (m->rx.len == 0) return PT_MSE_DONE;
    uint8_t *p = pt_buf_extend(payload, m->rx.len);
    if (!p) return PT_ERR_NOMEM;
    int rc = 0;
    if (m->selected == PT_MSE_CRYPTO_RC4)
        rc = pt_rc4_xor(m->dec, p, m->rx.data, m->rx.len);
    else
        memcpy(p, m->rx.data, m->rx.len);
    eat(m, m->rx.len);
    return rc ? rc : PT_MSE_DONE;
}

/* Runs states while rx holds enough. Returns NEED_MORE, DONE or an error. */
static int advance(pt_mse *m, pt_buf *out, pt_buf *payload)
{
    int rc;
    for (;;) {
        switch (m->state) {
        case ST_WAIT_Y:
            if (m->rx.len < PT_DH768_LEN) return PT_MSE_NEED_MORE;
            if ((rc = on_key(m, out)) != 0 || m->state != ST_WAIT_Y) return rc;
            if (!m->initiator) {
                if ((rc = hash3(m->req1, "req1", m->s, sizeof m->s, NULL, 0)) != 0 ||
                    (rc = hash3(m->req3, "req3", m->s, sizeof m->s, NULL, 0)) != 0)
                    return fail(m, rc, PT_MSE_FAIL_INTERNAL);
            }
            eat(m, PT_DH768_LEN);
            m->state = ST_SYNC;
            break;
        case ST_SYNC:
            rc = m->initiator ? sync_on(m, m->enc_vc, sizeof m->enc_vc, PT_MSE_SYNC_A)
                              : sync_on(m, m->req1, sizeof m->req1, PT_MSE_SYNC_B);
            if (rc <= 0 || m->state != ST_SYNC) return rc;
            m->state = m->initiator ? ST_SELECT : ST_SKEY;
            break;
        case ST_SKEY: {
            if (m->rx.len < PT_SHA1_OUT_LEN) return PT_MSE_NEED_MORE;
            uint8_t h[PT_SHA1_OUT_LEN];
            for (size_t i = 0; i < sizeof h; i++) h[i] = m->rx.data[i] ^ m->req3[i];
            int found = -1;
            for (size_t i = 0; i < m->nskeys; i++) /* no early exit: timing says nothing */
                if (pt_ct_memcmp(h, m->req2[i], sizeof h) == 0 && found < 0) found = (int)i;
            if (found < 0) return fail(m, PT_ERR_AUTH, PT_MSE_RULE_SKEY);
            m->skey_idx = found;
            if ((rc = make_streams(m, m->skey[found], m->skey_len[found])) != 0)
                return fail(m, rc, PT_MSE_FAIL_INTERNAL);
            eat(m, PT_SHA1_OUT_LEN);
            m->state = ST_VC;
            break;
        }
        case ST_VC:
            if (m->rx.len < 14) return PT_MSE_NEED_MORE;
            if ((rc = dec_rx(m, 14)) != 0) return fail(m, rc, PT_MSE_FAIL_INTERNAL);
            if (pt_ct_memcmp(m->rx.data, VC, sizeof VC) != 0)
                return fail(m, PT_ERR_AUTH, PT_MSE_RULE_VC);
            m->provided = get_u32be(m->rx.data + 8);
            uint32_t both = m->provided & m->crypto & PT_MSE_CRYPTO_KNOWN;
            if (both == 0) return fail(m, PT_ERR_NO_SUITE, PT_MSE_RULE_PROVIDE);
            m->selected = both == PT_MSE_CRYPTO_KNOWN
                              ? (m->prefer_plain ? PT_MSE_CRYPTO_PLAIN : PT_MSE_CRYPTO_RC4)
                              : both;
            m->need_len = get_u16be(m->rx.data + 12);
            if (m->need_len > PT_MSE_PAD_MAX) return fail(m, PT_ERR_PROTO, PT_MSE_FAIL_FORMAT);
            eat(m, 14);
            m->state = ST_PADC;
            break;
        case ST_PADC:
            if (m->rx.len < m->need_len + 2) return PT_MSE_NEED_MORE;
            if ((rc = dec_rx(m, m->need_len + 2)) != 0) return fail(m, rc, PT_MSE_FAIL_INTERNAL);
            size_t ia_len = get_u16be(m->rx.data + m->need_len);
            eat(m, m->need_len + 2);
            m->need_len = ia_len;
            m->state = ST_IA;
            break;
        case ST_IA: {
            if (m->rx.len < m->need_len) return PT_MSE_NEED_MORE;
            uint8_t *p = pt_buf_extend(payload, m->need_len);
            if (!p) return fail(m, PT_ERR_NOMEM, PT_MSE_FAIL_INTERNAL);
            if (m->need_len && (rc = pt_rc4_xor(m->dec, p, m->rx.data, m->need_len)) != 0)
                return fail(m, rc, PT_MSE_FAIL_INTERNAL);
            eat(m, m->need_len);
            if ((rc = send_step4(m, out)) != 0) return fail(m, rc, PT_MSE_FAIL_INTERNAL);
            return finish(m, payload);
        }
        case ST_SELECT: {
            if (m->rx.len < 6) return PT_MSE_NEED_MORE;
            if ((rc = dec_rx(m, 6)) != 0) return fail(m, rc, PT_MSE_FAIL_INTERNAL);
            uint32_t sel = get_u32be(m->rx.data) & PT_MSE_CRYPTO_KNOWN;
            if ((sel != PT_MSE_CRYPTO_PLAIN && sel != PT_MSE_CRYPTO_RC4) || !(sel & m->crypto))
                return fail(m, PT_ERR_NO_SUITE, PT_MSE_RULE_SELECT);
            m->selected = sel;
            m->need_len = get_u16be(m->rx.data + 4);
            if (m->need_len > PT_MSE_PAD_MAX) return fail(m, PT_ERR_PROTO, PT_MSE_FAIL_FORMAT);
            eat(m, 6);
            m->state = ST_PADD;
            break;
        }
        case ST_PADD:
            if (m->rx.len < m->need_len) return PT_MSE_NEED_MORE;
            if ((rc = dec_rx(m, m->need_len)) != 0) return fail(m, rc, PT_MSE_FAIL_INTERNAL);
            eat(m, m->need_len);
            return finish(m, payload);
        default:
            return PT_ERR_STATE;
        }
    }
}

/* 0, or fails the handshake if a deadline has passed. */
static int check_deadlines(pt_mse *m)
{
    if (m->state == ST_DONE || m->state == ST_FAILED) return 0;
    uint64_t now = pt_env_mono_ms(m->env);
    if (m->state == ST_DOOMED) {
        if (now < m->deadline) return 0;
        m->state = ST_FAILED;
        pt_log_info("mse: %s: deadline reached after %s", role(m), pt_mse_reason_name(m->reason));
        return m->err;
    }
    if (now >= m->deadline) return fail(m, PT_ERR_TIMEOUT, PT_MSE_FAIL_TIMEOUT);
    if (m->state == ST_WAIT_Y && now >= m->dh_deadline) {
        int rc = fail(m, PT_ERR_TIMEOUT, PT_MSE_RULE_SHORT);
        return rc == PT_MSE_NEED_MORE ? 0 : rc;
    }
    return 0;
}

int pt_mse_input(pt_mse *m, const uint8_t *in, size_t len, pt_buf *out, pt_buf *payload)
{
    PT_ASSERT(m && out && payload && (len == 0 || in));
    if (m->state == ST_INIT) return PT_ERR_STATE;
    int rc = check_deadlines(m);
    if (rc != 0) return rc;
    if (m->state == ST_FAILED) return m->err;
    if (m->state == ST_DOOMED) return PT_MSE_NEED_MORE;
    if (m->state == ST_DONE) {
        if (len == 0) return PT_MSE_DONE;
        uint8_t *p = pt_buf_extend(payload, len);
        if (!p) return PT_ERR_NOMEM;
        if (m->selected != PT_MSE_CRYPTO_RC4) {
            memcpy(p, in, len);
            return PT_MSE_DONE;
        }
        return pt_rc4_xor(m->dec, p, in, len) == 0 ? PT_MSE_DONE : PT_ERR_CRYPTO;
    }
    if (len && pt_buf_append(&m->rx, in, len) != 0) return fail(m, PT_ERR_NOMEM, PT_MSE_FAIL_INTERNAL);
    return advance(m, out, payload);
}

int pt_mse_seal(pt_mse *m, pt_buf *out, const uint8_t *data, size_t len)
{
    PT_ASSERT(m && out && (len == 0 || data));
    if (m->state != ST_DONE) return PT_ERR_STATE;
    if (len == 0) return 0;
    if (m->selected == PT_MSE_CRYPTO_RC4) return append_enc(m, out, data, len);
    return pt_buf_append(out, data, len);
}

int pt_mse_check_timeout(pt_mse *m)
{
    PT_ASSERT(m);
    int rc = check_deadlines(m);
    if (rc != 0) return rc;
    return m->state == ST_FAILED ? m->err : 0;
}

uint64_t pt_mse_deadline_ms(const pt_mse *m)
{
    if (m->state == ST_DONE || m->state == ST_FAILED) return UINT64_MAX;
    if (m->state == ST_WAIT_Y && m->dh_deadline < m->deadline) return m->dh_deadline;
    return m->deadline;
}

bool pt_mse_done(const pt_mse *m) { return m->state == ST_DONE; }
uint32_t pt_mse_selected(const pt_mse *m) { return m->state == ST_DONE ? m->selected : 0; }
uint32_t pt_mse_provided(const pt_mse *m) { return m->provided; }
int pt_mse_skey_index(const pt_mse *m) { return m->skey_idx; }
pt_mse_reason pt_mse_failure(const pt_mse *m) { return m->reason; }

pt_mse *pt_mse_new(const pt_env *env, const pt_mse_config *cfg, int *err)
{
    PT_ASSERT(env && cfg);
    int rc = PT_ERR_INVAL;
    pt_mse *m = NULL;
    if (cfg->nskeys < 1 || cfg->nskeys > PT_MSE_SKEYS_MAX || !cfg->skeys ||
        (cfg->initiator && cfg->nskeys != 1) || cfg->ia_len > PT_MSE_IA_MAX ||
        (cfg->ia_len && !cfg->ia) || cfg->pad_ab_max > PT_MSE_PAD_MAX ||
        cfg->pad_cd_max > PT_MSE_PAD_MAX || (cfg->crypto & PT_MSE_CRYPTO_KNOWN) == 0 ||
        (cfg->initiator && cfg->ia_len && !cfg->ia))
        goto out;
    for (size_t i = 0; i < cfg->nskeys; i++)
        if (!cfg->skeys[i].data || cfg->skeys[i].len < 1 || cfg->skeys[i].len > PT_MSE_SKEY_MAX)
            goto out;
    rc = PT_ERR_NOMEM;
    if (!(m = pt_secure_alloc(sizeof *m))) goto out;
    memset(m, 0, sizeof *m);
    m->env = env;
    m->initiator = cfg->initiator;
    m->state = ST_INIT;
    m->skey_idx = -1;
    m->nskeys = cfg->nskeys;
    m->crypto = cfg->crypto & (cfg->initiator ? 0xffffffffu : PT_MSE_CRYPTO_KNOWN);
    m->prefer_plain = cfg->prefer_plaintext;
    m->pad_ab_max = cfg->pad_ab_max;
    m->pad_cd_max = cfg->pad_cd_max;
    m->defer = cfg->defer_rules & PT_MSE_RULES_ALL;
    pt_buf_init(&m->rx);
    if (cfg->ia_len) {
        if (!(m->ia = malloc(cfg->ia_len))) goto out;
        memcpy(m->ia, cfg->ia, cfg->ia_len);
        m->ia_len = cfg->ia_len;
    }
    rc = 0;
    for (size_t i = 0; i < cfg->nskeys && rc == 0; i++) {
        memcpy(m->skey[i], cfg->skeys[i].data, cfg->skeys[i].len);
        m->skey_len[i] = cfg->skeys[i].len;
        rc = hash3(m->req2[i], "req2", m->skey[i], m->skey_len[i], NULL, 0);
    }
    if (rc != 0) goto out;
    uint64_t now = pt_env_mono_ms(env);
    m->deadline = now + (cfg->timeout_ms ? cfg->timeout_ms : PT_MSE_TIMEOUT_MS);
    m->dh_deadline = now + (cfg->dh_timeout_ms ? cfg->dh_timeout_ms : PT_MSE_TIMEOUT_MS);
out:
    if (rc != 0 && m) {
        pt_mse_free(m);
        m = NULL;
    }
    if (err) *err = rc;
    return m;
}

void pt_mse_free(pt_mse *m)
{
    if (!m) return;
    pt_rc4_free(m->enc);
    pt_rc4_free(m->dec);
    pt_buf_free(&m->rx);
    if (m->ia) {
        pt_wipe(m->ia, m->ia_len);
        free(m->ia);
    }
    pt_secure_free(m);
}

int pt_mse_packtrack_skey(uint8_t out[static PT_MSE_PT_SKEY_LEN], const uint8_t *network_key,
                          size_t nklen, const char *server_id)
{
    static const char label[] = "PackTrack MSE SKEY v1"; /* the NUL is part of the input */
    if (!network_key || nklen < 16 || nklen > 64 || !server_id || strlen(server_id) > 255)
        return PT_ERR_INVAL;
    uint8_t msg[sizeof label + 255];
    size_t idlen = strlen(server_id);
    memcpy(msg, label, sizeof label);
    memcpy(msg + sizeof label, server_id, idlen);
    return pt_blake2b(out, PT_MSE_PT_SKEY_LEN, msg, sizeof label + idlen, network_key, nklen);
}
