/* Internals shared by the olm_*.c files of src/e2e; not for other layers. */
#ifndef PT_OLM_INT_H
#define PT_OLM_INT_H

#include "crypto/pt_crypto.h"
#include "e2e/pt_olm.h"

#define OLM_KEY PT_OLM_KEY_LEN

/* The KDF labels and the version bytes of one suite. */
typedef struct olm_suite_params {
    const uint8_t *root_info; /* HKDF info of the triple-DH step */
    size_t root_info_len;
    const uint8_t *ratchet_info; /* HKDF info of each DH ratchet step */
    size_t ratchet_info_len;
    const uint8_t *keys_info; /* HKDF info of message key -> cipher keys */
    size_t keys_info_len;
} olm_suite_params;

/* NULL for an unknown suite value. */
const olm_suite_params *olm_suite_get(unsigned suite);

/* A chain: the ratchet key that names it and where it stands. */
typedef struct olm_chain {
    uint8_t ratchet_key[OLM_KEY]; /* public ratchet key of the chain's owner */
    uint8_t key[OLM_KEY];         /* chain key C(i,j) */
    uint32_t index;               /* j: the next message key's index */
} olm_chain;

/* A message key kept for a message that has not arrived yet. */
typedef struct olm_skipped {
    uint8_t ratchet_key[OLM_KEY]; /* the chain it belongs to */
    uint8_t key[OLM_KEY];         /* message key M(i,j) */
    uint32_t index;               /* j */
} olm_skipped;

struct pt_olm_session {
    uint8_t suite;                   /* pt_olm_suite, fixed at creation */
    bool outbound;                   /* we started it (we are "Alice") */
    bool received;                   /* a message has decrypted: no more pre-key messages */
    uint8_t alice_identity[OLM_KEY]; /* the initiator's identity key */
    uint8_t alice_base[OLM_KEY];     /* the initiator's base (ephemeral) key */
    uint8_t bob_one_time[OLM_KEY];   /* the responder's one-time key used */
    uint8_t their_identity[OLM_KEY]; /* the peer's identity key */
    uint8_t root[OLM_KEY];           /* root key R(i) */
    bool has_sender;                 /* false: the next encrypt makes a ratchet key */
    uint8_t sender_sk[OLM_KEY];      /* private half of sender.ratchet_key */
    olm_chain sender;                /* our sending chain */
    uint32_t n_recv;                 /* receiver chains in use */
    olm_chain recv[PT_OLM_MAX_RECEIVER_CHAINS]; /* newest first */
    uint32_t n_skipped;                         /* entries of skipped in use, oldest first */
    uint32_t cap_skipped;                       /* entries allocated */
    olm_skipped *skipped;                       /* secure memory, NULL when cap is 0 */
    pt_aes_cbc *cbc;                            /* olm.v1: AES-CBC context reused per message */
};

/* ---- olm_ratchet.c ------------------------------------------------------------------ */
/* R(0), C(0,0) = HKDF(secret, info=root label) for the initiator (sending chain
 * with our first ratchet key) or the responder (receiving chain of theirs). */
int olm_ratchet_init_alice(pt_olm_session *s, const uint8_t *secret, size_t len,
                           const uint8_t ratchet_sk[static OLM_KEY]) PT_WUR;
int olm_ratchet_init_bob(pt_olm_session *s, const uint8_t *secret, size_t len,
                         const uint8_t their_ratchet[static OLM_KEY]) PT_WUR;
/* Appends one message: a normal one (header, ciphertext, MAC or tag), or with
 * prekey that message wrapped in a pre-key message (whose header pt.v1
 * authenticates with the inner header). State changes only on success. */
int olm_ratchet_encrypt(pt_olm_session *s, const pt_env *env, const uint8_t *pt, size_t len,
                        pt_buf *out, bool prekey) PT_WUR;
/* Decrypts a decoded normal message; ad/adlen is what pt.v1 authenticates (the
 * header, preceded by the pre-key header when there is one). */
int olm_ratchet_decrypt(pt_olm_session *s, const pt_olm_msg *m, const uint8_t *ad, size_t adlen,
                        pt_buf *out) PT_WUR;
/* Frees and wipes the skipped-key store. */
void olm_ratchet_clear(pt_olm_session *s);
/* Makes room for n skipped keys in total. */
int olm_skipped_reserve(pt_olm_session *s, size_t n) PT_WUR;

/* ---- olm_message.c ------------------------------------------------------------------ */
/* Bytes of an olm.v1 normal message header for a counter and ciphertext length. */
size_t olm_v1_header_len(uint32_t counter, size_t ctlen);
/* Writes that header; returns the bytes written. */
size_t olm_v1_header_write(uint8_t *p, const uint8_t ratchet_key[static OLM_KEY], uint32_t counter,
                           size_t ctlen);
/* The pre-key header (everything before the inner message) of either suite. */
size_t olm_prekey_header_len(pt_olm_suite suite, size_t inner_len);
size_t olm_prekey_header_write(uint8_t *p, pt_olm_suite suite,
                               const uint8_t one_time[static OLM_KEY],
                               const uint8_t base[static OLM_KEY],
                               const uint8_t identity[static OLM_KEY], size_t inner_len);

/* ---- olm_account.c ------------------------------------------------------------------ */
/* The private key of our one-time or fallback key with this public key; NULL when
 * we have none. *is_fallback tells which. */
const uint8_t *olm_account_lookup(const pt_olm_account *a, const uint8_t pk[static OLM_KEY],
                                  bool *is_fallback);
void olm_account_remove_key(pt_olm_account *a, const uint8_t pk[static OLM_KEY]);
const uint8_t *olm_account_curve_sk(const pt_olm_account *a);
const uint8_t *olm_account_curve_pk(const pt_olm_account *a);

/* ---- olm_pickle.c ------------------------------------------------------------------- */
#define OLM_PICKLE_ACCOUNT 'A'
#define OLM_PICKLE_SESSION 'S'

/* A bounded reader over a decrypted body: any overrun sets bad. */
typedef struct olm_reader {
    const uint8_t *p;
    size_t left;
    bool bad;
} olm_reader;
void olm_get(olm_reader *r, void *dst, size_t n);
uint8_t olm_get_u8(olm_reader *r);
uint32_t olm_get_u32(olm_reader *r);
/* Writers append to a body buffer; the first failure sticks in *rc. */
void olm_put(pt_buf *b, int *rc, const void *src, size_t n);
void olm_put_u8(pt_buf *b, int *rc, uint8_t v);
void olm_put_u32(pt_buf *b, int *rc, uint32_t v);

/* Seals body under the caller's key and appends the pickle to out. */
int olm_pickle_seal(pt_buf *out, const pt_env *env, uint8_t kind, const uint8_t *key, size_t keylen,
                    const pt_buf *body) PT_WUR;
/* Opens a pickle of that kind into body (appended). */
int olm_pickle_open(pt_buf *body, uint8_t kind, const uint8_t *key, size_t keylen,
                    const uint8_t *in, size_t len) PT_WUR;

#endif /* PT_OLM_INT_H */
