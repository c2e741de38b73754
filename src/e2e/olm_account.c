/*
 * Device identity (Curve25519 + Ed25519), one-time and fallback keys, signed
 * bundles, and the account's sealed serialisation. Key generation follows
 * libolm's account.cpp byte for byte: the same random bytes give the same keys.
 */
#include "e2e/olm_int.h"

typedef struct olm_otk {
    uint32_t id;         /* account-local id */
    bool published;      /* handed to the server already */
    uint8_t pk[OLM_KEY]; /* Curve25519 public key */
    uint8_t sk[OLM_KEY]; /* its private key */
} olm_otk;

typedef struct olm_fallback {
    bool present;
    olm_otk k;
} olm_fallback;

struct pt_olm_account {
    uint8_t suites;            /* suites accepted and offered */
    uint8_t curve_sk[OLM_KEY]; /* Curve25519 identity private key */
    uint8_t curve_pk[OLM_KEY];
    uint8_t ed_sk[PT_ED25519_SK_LEN]; /* Ed25519 signing key (seed ‖ public) */
    uint8_t ed_pk[PT_ED25519_PK_LEN];
    uint32_t next_key_id; /* last id handed out */
    uint32_t n_otk;       /* one-time keys in use, newest first */
    olm_otk otk[PT_OLM_MAX_ONE_TIME_KEYS];
    olm_fallback fallback;      /* current fallback key */
    olm_fallback prev_fallback; /* the one before, until forgotten */
};

static pt_olm_account *account_alloc(void)
{
    pt_olm_account *a = pt_secure_alloc(sizeof *a);
    if (a) memset(a, 0, sizeof *a);
    return a;
}

static void set_err(pt_err *err, int rc)
{
    if (err) *err = (pt_err)rc;
}

pt_olm_account *pt_olm_account_new(const pt_env *env, uint8_t suites, pt_err *err)
{
    if (!(suites & PT_OLM_SUITES_ALL) || (suites & ~PT_OLM_SUITES_ALL)) {
        set_err(err, PT_ERR_INVAL);
        return NULL;
    }
    pt_olm_account *a = account_alloc();
    if (!a) {
        set_err(err, PT_ERR_NOMEM);
        return NULL;
    }
    uint8_t rnd[2 * OLM_KEY];
    pt_env_random(env, rnd, sizeof rnd);
    int rc = pt_ed25519_seed_keypair(a->ed_pk, a->ed_sk, rnd);
    memcpy(a->curve_sk, rnd + OLM_KEY, OLM_KEY);
    if (rc == 0) rc = pt_x25519_base(a->curve_pk, a->curve_sk);
    pt_wipe(rnd, sizeof rnd);
    a->suites = suites;
    if (rc != 0) {
        pt_olm_account_free(a);
        a = NULL;
    }
    set_err(err, rc);
    return a;
}

void pt_olm_account_free(pt_olm_account *a)
{
    pt_secure_free(a); /* wipes */
}

void pt_olm_account_identity(const pt_olm_account *a, uint8_t curve[static PT_OLM_KEY_LEN],
                             uint8_t ed[static PT_OLM_KEY_LEN])
{
    memcpy(curve, a->curve_pk, OLM_KEY);
    memcpy(ed, a->ed_pk, OLM_KEY);
}

uint8_t pt_olm_account_suites(const pt_olm_account *a)
{
    return a->suites;
}

const uint8_t *olm_account_curve_sk(const pt_olm_account *a)
{
    return a->curve_sk;
}
const uint8_t *olm_account_curve_pk(const pt_olm_account *a)
{
    return a->curve_pk;
}

int pt_olm_account_sign(const pt_olm_account *a, uint8_t sig[static PT_OLM_SIG_LEN],
                        const uint8_t *msg, size_t len)
{
    return pt_ed25519_sign(sig, msg, len, a->ed_sk);
}

/* ---- one-time and fallback keys ------------------------------------------------------------ */

static int make_key(olm_otk *k, pt_olm_account *a, const pt_env *env)
{
    pt_env_random(env, k->sk, OLM_KEY);
    k->id = ++a->next_key_id;
    k->published = false;
    return pt_x25519_base(k->pk, k->sk);
}

int pt_olm_account_generate_one_time_keys(pt_olm_account *a, const pt_env *env, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        olm_otk k;
        int rc = make_key(&k, a, env);
        if (rc != 0) {
            pt_wipe(&k, sizeof k);
            return rc;
        }
        /* newest first; a full list drops its oldest (last) key */
        if (a->n_otk < PT_OLM_MAX_ONE_TIME_KEYS) a->n_otk++;
        memmove(&a->otk[1], &a->otk[0], (a->n_otk - 1) * sizeof a->otk[0]);
        a->otk[0] = k;
        pt_wipe(&k, sizeof k);
    }
    return 0;
}

size_t pt_olm_account_unpublished_keys(const pt_olm_account *a, pt_olm_key *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = a->n_otk; i-- > 0 && n < cap;) {
        if (a->otk[i].published) continue;
        out[n].id = a->otk[i].id;
        memcpy(out[n].key, a->otk[i].pk, OLM_KEY);
        n++;
    }
    return n;
}

size_t pt_olm_account_one_time_key_count(const pt_olm_account *a)
{
    return a->n_otk;
}

void pt_olm_account_mark_published(pt_olm_account *a)
{
    for (size_t i = 0; i < a->n_otk; i++)
        a->otk[i].published = true;
    a->fallback.k.published = true;
}

int pt_olm_account_generate_fallback_key(pt_olm_account *a, const pt_env *env)
{
    olm_otk k;
    int rc = make_key(&k, a, env);
    if (rc == 0) {
        a->prev_fallback = a->fallback;
        a->fallback.present = true;
        a->fallback.k = k;
    }
    pt_wipe(&k, sizeof k);
    return rc;
}

int pt_olm_account_fallback_key(const pt_olm_account *a, pt_olm_key *out)
{
    if (!a->fallback.present) return PT_ERR_NOT_FOUND;
    out->id = a->fallback.k.id;
    memcpy(out->key, a->fallback.k.pk, OLM_KEY);
    return 0;
}

void pt_olm_account_forget_old_fallback_key(pt_olm_account *a)
{
    pt_wipe(&a->prev_fallback, sizeof a->prev_fallback);
}

const uint8_t *olm_account_lookup(const pt_olm_account *a, const uint8_t pk[static OLM_KEY],
                                  bool *is_fallback)
{
    for (size_t i = 0; i < a->n_otk; i++) {
        if (pt_ct_memcmp(a->otk[i].pk, pk, OLM_KEY) == 0) {
            *is_fallback = false;
            return a->otk[i].sk;
        }
    }
    const olm_fallback *f[2] = {&a->fallback, &a->prev_fallback};
    for (int i = 0; i < 2; i++) {
        if (f[i]->present && pt_ct_memcmp(f[i]->k.pk, pk, OLM_KEY) == 0) {
            *is_fallback = true;
            return f[i]->k.sk;
        }
    }
    return NULL;
}

void olm_account_remove_key(pt_olm_account *a, const uint8_t pk[static OLM_KEY])
{
    for (size_t i = 0; i < a->n_otk; i++) {
        if (pt_ct_memcmp(a->otk[i].pk, pk, OLM_KEY) != 0) continue;
        memmove(&a->otk[i], &a->otk[i + 1], (a->n_otk - i - 1) * sizeof a->otk[0]);
        a->n_otk--;
        pt_wipe(&a->otk[a->n_otk], sizeof a->otk[0]);
        return;
    }
}

/* ---- bundles ----------------------------------------------------------------------------- */

#define BUNDLE_SIGNED_LEN (PT_OLM_BUNDLE_LEN - PT_OLM_SIG_LEN)
static const uint8_t BUNDLE_LABEL[16] = "PT-E2E-BUNDLE-V1";

void pt_olm_bundle_encode(uint8_t out[static PT_OLM_BUNDLE_LEN], const pt_olm_bundle *b)
{
    out[0] = PT_OLM_BUNDLE_VERSION;
    out[1] = b->suites;
    out[2] = b->flags;
    pt_put_u32le(out + 3, b->key_id);
    memcpy(out + 7, b->identity_key, OLM_KEY);
    memcpy(out + 7 + OLM_KEY, b->signing_key, OLM_KEY);
    memcpy(out + 7 + 2 * OLM_KEY, b->one_time_key, OLM_KEY);
    memcpy(out + BUNDLE_SIGNED_LEN, b->signature, PT_OLM_SIG_LEN);
}

int pt_olm_bundle_decode(pt_olm_bundle *out, const uint8_t *buf, size_t len)
{
    if (len < 1) return PT_ERR_DECODE;
    if (buf[0] != PT_OLM_BUNDLE_VERSION) return PT_ERR_VERSION;
    if (len != PT_OLM_BUNDLE_LEN) return PT_ERR_DECODE;
    if (buf[2] & ~PT_OLM_BUNDLE_FALLBACK) return PT_ERR_DECODE;
    out->suites = buf[1];
    out->flags = buf[2];
    out->key_id = pt_get_u32le(buf + 3);
    memcpy(out->identity_key, buf + 7, OLM_KEY);
    memcpy(out->signing_key, buf + 7 + OLM_KEY, OLM_KEY);
    memcpy(out->one_time_key, buf + 7 + 2 * OLM_KEY, OLM_KEY);
    memcpy(out->signature, buf + BUNDLE_SIGNED_LEN, PT_OLM_SIG_LEN);
    return 0;
}

/* label ‖ the encoding up to the signature */
static void bundle_signed_bytes(uint8_t m[static sizeof BUNDLE_LABEL + BUNDLE_SIGNED_LEN],
                                const pt_olm_bundle *b)
{
    uint8_t enc[PT_OLM_BUNDLE_LEN];
    pt_olm_bundle_encode(enc, b);
    memcpy(m, BUNDLE_LABEL, sizeof BUNDLE_LABEL);
    memcpy(m + sizeof BUNDLE_LABEL, enc, BUNDLE_SIGNED_LEN);
}

int pt_olm_bundle_verify(const pt_olm_bundle *b)
{
    uint8_t m[sizeof BUNDLE_LABEL + BUNDLE_SIGNED_LEN];
    bundle_signed_bytes(m, b);
    return pt_ed25519_verify(b->signature, m, sizeof m, b->signing_key) == 0 ? 0 : PT_ERR_AUTH;
}

int pt_olm_account_bundle(const pt_olm_account *a, uint32_t key_id, pt_olm_bundle *out)
{
    const olm_otk *k = NULL;
    uint8_t flags = 0;
    for (size_t i = 0; i < a->n_otk && !k; i++)
        if (a->otk[i].id == key_id) k = &a->otk[i];
    if (!k && a->fallback.present && a->fallback.k.id == key_id) {
        k = &a->fallback.k;
        flags = PT_OLM_BUNDLE_FALLBACK;
    }
    if (!k && a->prev_fallback.present && a->prev_fallback.k.id == key_id) {
        k = &a->prev_fallback.k;
        flags = PT_OLM_BUNDLE_FALLBACK;
    }
    if (!k) return PT_ERR_NOT_FOUND;
    memset(out, 0, sizeof *out);
    memcpy(out->identity_key, a->curve_pk, OLM_KEY);
    memcpy(out->signing_key, a->ed_pk, OLM_KEY);
    out->suites = a->suites;
    out->flags = flags;
    out->key_id = key_id;
    memcpy(out->one_time_key, k->pk, OLM_KEY);
    uint8_t m[sizeof BUNDLE_LABEL + BUNDLE_SIGNED_LEN];
    bundle_signed_bytes(m, out);
    return pt_ed25519_sign(out->signature, m, sizeof m, a->ed_sk);
}

/* ---- sealed serialisation ---------------------------------------------------------------- */

static void put_key(pt_buf *b, int *rc, const olm_otk *k)
{
    olm_put_u32(b, rc, k->id);
    olm_put_u8(b, rc, k->published);
    olm_put(b, rc, k->pk, OLM_KEY);
    olm_put(b, rc, k->sk, OLM_KEY);
}

static void get_key(olm_reader *r, olm_otk *k)
{
    k->id = olm_get_u32(r);
    uint8_t pub = olm_get_u8(r);
    if (pub > 1) r->bad = true;
    k->published = pub;
    olm_get(r, k->pk, OLM_KEY);
    olm_get(r, k->sk, OLM_KEY);
}

int pt_olm_account_pickle(const pt_olm_account *a, const pt_env *env, const uint8_t *key,
                          size_t keylen, pt_buf *out)
{
    pt_buf body;
    pt_buf_init(&body);
    int rc = pt_buf_reserve(&body, sizeof *a + 64);
    olm_put_u8(&body, &rc, a->suites);
    olm_put_u32(&body, &rc, a->next_key_id);
    olm_put(&body, &rc, a->curve_sk, OLM_KEY);
    olm_put(&body, &rc, a->curve_pk, OLM_KEY);
    olm_put(&body, &rc, a->ed_sk, PT_ED25519_SK_LEN);
    olm_put(&body, &rc, a->ed_pk, PT_ED25519_PK_LEN);
    olm_put_u32(&body, &rc, a->n_otk);
    for (size_t i = 0; i < a->n_otk; i++)
        put_key(&body, &rc, &a->otk[i]);
    const olm_fallback *f[2] = {&a->fallback, &a->prev_fallback};
    for (int i = 0; i < 2; i++) {
        olm_put_u8(&body, &rc, f[i]->present);
        if (f[i]->present) put_key(&body, &rc, &f[i]->k);
    }
    if (rc == 0) rc = olm_pickle_seal(out, env, OLM_PICKLE_ACCOUNT, key, keylen, &body);
    pt_buf_free(&body); /* wipes */
    return rc;
}

pt_olm_account *pt_olm_account_unpickle(const uint8_t *key, size_t keylen, const uint8_t *in,
                                        size_t len, pt_err *err)
{
    pt_buf body;
    pt_buf_init(&body);
    pt_olm_account *a = NULL;
    int rc = pt_buf_reserve(&body, len);
    if (rc == 0) rc = olm_pickle_open(&body, OLM_PICKLE_ACCOUNT, key, keylen, in, len);
    if (rc == 0 && !(a = account_alloc())) rc = PT_ERR_NOMEM;
    if (rc == 0) {
        olm_reader r = {body.data, body.len, false};
        a->suites = olm_get_u8(&r);
        a->next_key_id = olm_get_u32(&r);
        olm_get(&r, a->curve_sk, OLM_KEY);
        olm_get(&r, a->curve_pk, OLM_KEY);
        olm_get(&r, a->ed_sk, PT_ED25519_SK_LEN);
        olm_get(&r, a->ed_pk, PT_ED25519_PK_LEN);
        a->n_otk = olm_get_u32(&r);
        if (a->n_otk > PT_OLM_MAX_ONE_TIME_KEYS) r.bad = true;
        for (size_t i = 0; i < a->n_otk && !r.bad; i++)
            get_key(&r, &a->otk[i]);
        olm_fallback *f[2] = {&a->fallback, &a->prev_fallback};
        for (int i = 0; i < 2 && !r.bad; i++) {
            uint8_t present = olm_get_u8(&r);
            if (present > 1) r.bad = true;
            f[i]->present = present;
            if (present) get_key(&r, &f[i]->k);
        }
        if (!(a->suites & PT_OLM_SUITES_ALL) || (a->suites & ~PT_OLM_SUITES_ALL)) r.bad = true;
        if (r.bad || r.left != 0) rc = PT_ERR_DECODE;
    }
    pt_buf_free(&body);
    if (rc != 0) {
        pt_olm_account_free(a);
        a = NULL;
    }
    set_err(err, rc);
    return a;
}
