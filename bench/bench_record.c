/*
 * bench_record - record throughput of the secure channel for every suite, against
 * the raw library calls that give the same protection without our framing,
 * measured in the same run.
 *
 * One record = pt_chan_seal on the client + pt_chan_input on the server (frame
 * parsing, decryption, checks, the record callback). Plaintexts are 100 bytes and
 * 16 KiB, session-shaped (a 32-byte header with msg_id at offset 16, strictly
 * increasing, and the body length at offset 28) because the MTProto suite needs
 * that; the other suites ignore it. The raw baselines, per record:
 *   PT1-CHACHAPOLY-BLAKE2B   libsodium ChaCha20-Poly1305 IETF encrypt + decrypt
 *   PT1-AESGCM-SHA256        OpenSSL EVP AES-256-GCM encrypt + decrypt, contexts made once
 *   ECDHE-AES128_CTR-SHA256  random IV, EVP AES-128-CTR + libsodium HMAC-SHA256 (keyed
 *                            state copied per MAC), both ways
 *   ECDHE-AES256_CTR-SHA384  random IV, EVP AES-256-CTR + OpenSSL HMAC-SHA384 (EVP_MAC
 *                            re-initialised with its key), both ways
 *   MTPROTO2-AES256IGE       the same random padding, SHA-256 msg_key + 2 SHA-256 KDF +
 *                            pt_aes256_ige_encrypt, then KDF + decrypt + msg_key check
 * Each measurement is the median of several interleaved runs.
 *
 *   bench_record [--quick] [--reps N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <sodium.h>

#include "channel/pt_chan.h"

#define BIG 16384
#define ROOM (BIG + 2048) /* largest sealed record: padding, IV, MAC and header */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_record: %s: %s\n", what, pt_strerror(rc));
    exit(1);
}

/* ---- the channel ----------------------------------------------------------------- */

typedef struct pair {
    int suite;
    pt_chan *cl, *sv;
    uint64_t msg_id; /* last msg_id sealed; MTProto requires them to increase */
    pt_buf wire;     /* the sealed frame, reused */
    pt_buf reply;    /* whatever the server writes back (nothing, once established) */
} pair;

typedef struct sink {
    size_t records, bytes;
    uint8_t x; /* reads each record so that nothing is skipped */
} sink;

static int on_record(void *ud, const uint8_t *rec, size_t len)
{
    sink *s = ud;
    s->records++;
    s->bytes += len;
    s->x ^= rec[len - 1];
    return 0;
}

static uint8_t server_sk[32], server_pk[32], client_sk[32];

static pt_chan *new_chan(bool server, const uint8_t *suite)
{
    pt_chan_config cfg = {.is_server = server,
                          .suites = suite,
                          .nsuites = 1,
                          .static_sk = server ? server_sk : client_sk,
                          .server_pk = server ? NULL : server_pk};
    int err = 0;
    pt_chan *c = pt_chan_new(pt_env_default(), &cfg, &err);
    if (!c) die("pt_chan_new", err);
    return c;
}

static void establish(pair *p, uint8_t suite)
{
    memset(p, 0, sizeof *p);
    p->suite = suite;
    p->cl = new_chan(false, &suite);
    p->sv = new_chan(true, &suite);
    pt_buf co, so;
    pt_buf_init(&co);
    pt_buf_init(&so);
    pt_buf_init(&p->wire);
    pt_buf_init(&p->reply);
    sink s = {0};
    int rc = pt_chan_start(p->cl, &co);
    for (int i = 0; rc == 0 && i < 8 && (co.len || so.len); i++) {
        pt_buf in = co;
        pt_buf_init(&co);
        if (in.len) rc = pt_chan_input(p->sv, in.data, in.len, &so, on_record, &s);
        pt_buf_free(&in);
        in = so;
        pt_buf_init(&so);
        if (rc == 0 && in.len) rc = pt_chan_input(p->cl, in.data, in.len, &co, on_record, &s);
        pt_buf_free(&in);
    }
    if (rc) die("handshake", rc);
    if (!pt_chan_established(p->cl) || !pt_chan_established(p->sv))
        die("handshake did not complete", PT_ERR_STATE);
    pt_buf_free(&co);
    pt_buf_free(&so);
    if (pt_buf_reserve(&p->wire, ROOM + PT_CHAN_FRAME_HDR)) die("reserve", PT_ERR_NOMEM);
}

static void pair_free(pair *p)
{
    pt_chan_free(p->cl);
    pt_chan_free(p->sv);
    pt_buf_free(&p->wire);
    pt_buf_free(&p->reply);
}

/* Seconds for n records of len bytes (rec is session-shaped) through seal + input. */
static double time_chan(pair *p, uint8_t *rec, size_t len, size_t n)
{
    sink s = {0};
    int rc = 0;
    double t0 = now_s();
    for (size_t i = 0; i < n && rc == 0; i++) {
        pt_put_u64le(rec + 16, p->msg_id += 4);
        pt_buf_reset(&p->wire);
        rc = pt_chan_seal(p->cl, &p->wire, rec, len);
        if (rc == 0) rc = pt_chan_input(p->sv, p->wire.data, p->wire.len, &p->reply, on_record, &s);
    }
    double dt = now_s() - t0;
    if (rc) die("seal/open", rc);
    if (s.records != n || s.bytes != n * len) die("records lost", PT_ERR_STATE);
    return dt;
}

/* ---- the raw baselines ----------------------------------------------------------- */

typedef struct raw {
    int suite;
    uint8_t key[32], mac_key[48];
    uint64_t n; /* record counter: nonce or MAC sequence */
    EVP_CIPHER *cipher;
    EVP_CIPHER_CTX *enc, *dec;         /* GCM, CTR */
    crypto_auth_hmacsha256_state h256; /* keyed once */
    EVP_MAC *mac;
    EVP_MAC_CTX *mac_seal, *mac_open; /* HMAC-SHA384, keyed once */
    uint8_t auth_key[256];            /* MTProto */
    uint8_t *ct, *pt;                 /* ROOM bytes each */
} raw;

static void check(int ok, const char *what)
{
    if (!ok) die(what, PT_ERR_CRYPTO);
}

static void raw_init(raw *r, int suite)
{
    memset(r, 0, sizeof *r);
    r->suite = suite;
    randombytes_buf(r->key, sizeof r->key);
    randombytes_buf(r->mac_key, sizeof r->mac_key);
    randombytes_buf(r->auth_key, sizeof r->auth_key);
    r->ct = malloc(ROOM);
    r->pt = malloc(ROOM);
    check(r->ct && r->pt, "malloc");
    const char *cipher = suite == PT_SUITE_AESGCM_SHA256      ? "AES-256-GCM"
                         : suite == PT_SUITE_AES128CTR_SHA256 ? "AES-128-CTR"
                         : suite == PT_SUITE_AES256CTR_SHA384 ? "AES-256-CTR"
                                                              : NULL;
    if (cipher) {
        check((r->cipher = EVP_CIPHER_fetch(NULL, cipher, NULL)) != NULL, cipher);
        check((r->enc = EVP_CIPHER_CTX_new()) && (r->dec = EVP_CIPHER_CTX_new()), "ctx");
        check(EVP_EncryptInit_ex2(r->enc, r->cipher, r->key, NULL, NULL) == 1, "init");
        /* CTR decryption is encryption; GCM needs a decrypting context for the tag. */
        check((suite == PT_SUITE_AESGCM_SHA256
                   ? EVP_DecryptInit_ex2(r->dec, r->cipher, r->key, NULL, NULL)
                   : EVP_EncryptInit_ex2(r->dec, r->cipher, r->key, NULL, NULL)) == 1,
              "init");
    }
    if (suite == PT_SUITE_AES128CTR_SHA256) crypto_auth_hmacsha256_init(&r->h256, r->mac_key, 32);
    if (suite == PT_SUITE_AES256CTR_SHA384) {
        OSSL_PARAM q[2] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA2-384", 0),
                           OSSL_PARAM_construct_end()};
        check((r->mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) != NULL, "HMAC");
        r->mac_seal = EVP_MAC_CTX_new(r->mac);
        r->mac_open = EVP_MAC_CTX_new(r->mac);
        check(r->mac_seal && r->mac_open && EVP_MAC_init(r->mac_seal, r->mac_key, 48, q) == 1 &&
                  EVP_MAC_init(r->mac_open, r->mac_key, 48, q) == 1,
              "HMAC init");
    }
}

static void raw_free(raw *r)
{
    EVP_CIPHER_CTX_free(r->enc);
    EVP_CIPHER_CTX_free(r->dec);
    EVP_CIPHER_free(r->cipher);
    EVP_MAC_CTX_free(r->mac_seal);
    EVP_MAC_CTX_free(r->mac_open);
    EVP_MAC_free(r->mac);
    free(r->ct);
    free(r->pt);
}

static int raw_chacha(raw *r, const uint8_t *in, size_t len)
{
    uint8_t nonce[12] = {0};
    unsigned long long clen, mlen;
    pt_put_u64le(nonce + 4, r->n++);
    crypto_aead_chacha20poly1305_ietf_encrypt(r->ct, &clen, in, len, NULL, 0, NULL, nonce, r->key);
    return crypto_aead_chacha20poly1305_ietf_decrypt(r->pt, &mlen, NULL, r->ct, clen, NULL, 0,
                                                     nonce, r->key) == 0 &&
           mlen == len;
}

static int raw_gcm(raw *r, const uint8_t *in, size_t len)
{
    uint8_t nonce[12] = {0};
    int outl = 0, ilen = (int)len;
    pt_put_u64be(nonce + 4, r->n++);
    int ok = EVP_EncryptInit_ex2(r->enc, NULL, NULL, nonce, NULL) == 1 &&
             EVP_EncryptUpdate(r->enc, r->ct, &outl, in, ilen) == 1 &&
             EVP_EncryptFinal_ex(r->enc, r->ct + len, &outl) == 1 &&
             EVP_CIPHER_CTX_ctrl(r->enc, EVP_CTRL_GCM_GET_TAG, 16, r->ct + len) == 1;
    return ok && EVP_DecryptInit_ex2(r->dec, NULL, NULL, nonce, NULL) == 1 &&
           EVP_DecryptUpdate(r->dec, r->pt, &outl, r->ct, ilen) == 1 &&
           EVP_CIPHER_CTX_ctrl(r->dec, EVP_CTRL_GCM_SET_TAG, 16, r->ct + len) == 1 &&
           EVP_DecryptFinal_ex(r->dec, r->pt + len, &outl) == 1;
}

/* HMAC(seq || iv || ct) into tag, with the suite's hash. */
static int raw_mac(raw *r, EVP_MAC_CTX *m, uint8_t *tag, const uint8_t seq[8], const uint8_t *ivct,
                   size_t len)
{
    if (r->suite == PT_SUITE_AES128CTR_SHA256) {
        crypto_auth_hmacsha256_state st = r->h256;
        crypto_auth_hmacsha256_update(&st, seq, 8);
        crypto_auth_hmacsha256_update(&st, ivct, 16 + len);
        crypto_auth_hmacsha256_final(&st, tag);
        return 1;
    }
    size_t outl = 0;
    return EVP_MAC_init(m, NULL, 0, NULL) == 1 && EVP_MAC_update(m, seq, 8) == 1 &&
           EVP_MAC_update(m, ivct, 16 + len) == 1 && EVP_MAC_final(m, tag, &outl, 48) == 1;
}

static int raw_ctr(raw *r, const uint8_t *in, size_t len)
{
    size_t maclen = r->suite == PT_SUITE_AES128CTR_SHA256 ? 32 : 48;
    uint8_t seq[8], tag[48];
    int outl = 0, ilen = (int)len;
    pt_put_u64be(seq, r->n++);
    randombytes_buf(r->ct, 16);
    int ok = EVP_EncryptInit_ex2(r->enc, NULL, NULL, r->ct, NULL) == 1 &&
             EVP_EncryptUpdate(r->enc, r->ct + 16, &outl, in, ilen) == 1 &&
             raw_mac(r, r->mac_seal, r->ct + 16 + len, seq, r->ct, len);
    return ok && raw_mac(r, r->mac_open, tag, seq, r->ct, len) &&
           sodium_memcmp(tag, r->ct + 16 + len, maclen) == 0 &&
           EVP_EncryptInit_ex2(r->dec, NULL, NULL, r->ct, NULL) == 1 &&
           EVP_EncryptUpdate(r->dec, r->pt, &outl, r->ct + 16, ilen) == 1;
}

/* MTProto 2.0 key and iv from msg_key (see src/channel/mtp2.h), direction x = 0. */
static void mtp_kdf(const raw *r, const uint8_t msg_key[16], uint8_t key[32], uint8_t iv[32])
{
    uint8_t a[32], b[32];
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, msg_key, 16);
    crypto_hash_sha256_update(&st, r->auth_key, 36);
    crypto_hash_sha256_final(&st, a);
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, r->auth_key + 40, 36);
    crypto_hash_sha256_update(&st, msg_key, 16);
    crypto_hash_sha256_final(&st, b);
    memcpy(key, a, 8), memcpy(key + 8, b + 8, 16), memcpy(key + 24, a + 24, 8);
    memcpy(iv, b, 8), memcpy(iv + 8, a + 8, 16), memcpy(iv + 24, b + 24, 8);
}

static void mtp_msg_key(const raw *r, uint8_t msg_key[16], const uint8_t *p, size_t len)
{
    uint8_t large[32];
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, r->auth_key + 88, 32);
    crypto_hash_sha256_update(&st, p, len);
    crypto_hash_sha256_final(&st, large);
    memcpy(msg_key, large + 8, 16);
}

static int raw_mtproto(raw *r, const uint8_t *in, size_t len)
{
    uint8_t extra, key[32], iv[32], msg_key[16];
    randombytes_buf(&extra, 1); /* the same padding rule as pt_mtp2_seal */
    size_t pad = 12 + (16 - (len + 12) % 16) % 16 + (size_t)(extra & 15) * 16, n = len + pad;
    uint8_t *body = r->ct + 24;
    memcpy(body, in, len);
    randombytes_buf(body + len, pad);
    mtp_msg_key(r, r->ct + 8, body, n);
    mtp_kdf(r, r->ct + 8, key, iv);
    if (pt_aes256_ige_encrypt(body, body, n, key, iv) != 0) return 0;
    mtp_kdf(r, r->ct + 8, key, iv);
    if (pt_aes256_ige_decrypt(r->pt, body, n, key, iv) != 0) return 0;
    mtp_msg_key(r, msg_key, r->pt, n);
    return sodium_memcmp(msg_key, r->ct + 8, 16) == 0;
}

static double time_raw(raw *r, const uint8_t *in, size_t len, size_t n)
{
    int (*one)(raw *, const uint8_t *, size_t) = r->suite == PT_SUITE_CHACHAPOLY_BLAKE2B
                                                     ? raw_chacha
                                                 : r->suite == PT_SUITE_AESGCM_SHA256 ? raw_gcm
                                                 : r->suite == PT_SUITE_MTPROTO2      ? raw_mtproto
                                                                                      : raw_ctr;
    int ok = 1;
    double t0 = now_s();
    for (size_t i = 0; i < n && ok; i++)
        ok = one(r, in, len);
    double dt = now_s() - t0;
    if (!ok) die("raw baseline", PT_ERR_CRYPTO);
    return dt;
}

/* ---- main -------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    bool quick = false;
    int reps = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--quick] [--reps N]\n", argv[0]);
            return 2;
        }
    }
    if (pt_init() != 0) die("pt_init", PT_ERR_CRYPTO);
    if (reps <= 0) reps = quick ? 3 : 15;
    if (reps > 99) reps = 99;
    const double run_s = quick ? 0.012 : 0.05; /* target length of one timed run */

    pt_random(server_sk, 32);
    pt_random(client_sk, 32);
    if (pt_x25519_base(server_pk, server_sk) != 0) die("server key", PT_ERR_CRYPTO);
    static uint8_t rec[BIG];
    pt_random(rec, sizeof rec);
    static const size_t sizes[] = {100, BIG};

    printf("bench_record: pt_chan_seal + pt_chan_input per record vs the raw library calls\n");
    printf("median of %d runs of ~%.0f ms each; target: ratio <= 1.50 for the AEAD suites "
           "at 100 B\n\n",
           reps, run_s * 1e3);
    printf("%-24s %6s %11s %9s %11s %9s %6s %s\n", "suite", "bytes", "chan ns/rec", "chan MB/s",
           "raw ns/rec", "raw MB/s", "ratio", "target");
    bool all_met = true;
    for (int suite = PT_SUITE_MIN; suite <= PT_SUITE_MAX; suite++) {
        pair p;
        raw r;
        establish(&p, (uint8_t)suite);
        raw_init(&r, suite);
        for (size_t z = 0; z < PT_ARRAY_LEN(sizes); z++) {
            size_t len = sizes[z];
            memset(rec, 0, 32);
            pt_put_u32le(rec + 28, (uint32_t)(len - 32));
            /* calibrate: records per run from a short warm-up of both */
            size_t n = 16;
            double per = 0;
            while ((per = time_chan(&p, rec, len, n)) < run_s / 8)
                n *= 2;
            time_raw(&r, rec, len, n);
            n = (size_t)((double)n * run_s / per) + 1;
            double chan[99], base[99], ratio[99];
            for (int i = 0; i < reps; i++) { /* interleaved: both see the same machine */
                chan[i] = time_chan(&p, rec, len, n) / (double)n * 1e9;
                base[i] = time_raw(&r, rec, len, n) / (double)n * 1e9;
                ratio[i] = chan[i] / base[i];
            }
            double mc = median(chan, (size_t)reps), mb = median(base, (size_t)reps);
            double mr = median(ratio, (size_t)reps);
            bool aead = suite == PT_SUITE_CHACHAPOLY_BLAKE2B || suite == PT_SUITE_AESGCM_SHA256;
            const char *target = "-";
            if (aead && len == 100) {
                target = mr <= 1.5 ? "met" : "MISSED";
                all_met &= mr <= 1.5;
            }
            printf("%-24s %6zu %11.0f %9.1f %11.0f %9.1f %6.2f %s\n", pt_suite_name(suite), len, mc,
                   (double)len * 1e3 / mc, mb, (double)len * 1e3 / mb, mr, target);
            fflush(stdout);
        }
        raw_free(&r);
        pair_free(&p);
    }
    printf("\nns/rec = seal + open of one record; MB/s = plaintext bytes per second through"
           " both;\nratio = median over runs of chan / raw\n");
    printf("overall: %s\n", all_met ? "all targets met" : "some targets missed");
    return 0;
}
