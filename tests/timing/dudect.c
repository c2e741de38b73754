/*
 * pt-dudect: a dudect-style leakage test of the secret comparisons (issue 11).
 *
 * For each target, measurements of one operation on inputs of two classes, drawn at
 * random and interleaved: class 0 a fixed input (the forgery that agrees with the
 * right value for as long as possible, or a fixed secret), class 1 a random one.
 * Welch's t-test between the classes' timings, on all samples and on samples below
 * several percentiles (cropping, as dudect does, takes out the long tail of
 * interrupts). A constant-time operation gives |t| small however many samples; the
 * verdict threshold is |t| < 4.5 (Reparaz, Balasch, Verbauwhede, "Dude, is my code
 * constant time?", DATE 2017). Written here from the paper's method, not from its code.
 *
 *   pt-dudect [--measurements N] [--only NAME] [--seed N]
 * Exit 0 when every target stays under the threshold, 1 otherwise.
 */
#include <getopt.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "channel/mtp2.h"
#include "common/pt_common.h"
#include "crypto/pt_crypto.h"
#include "e2e/pt_olm.h"

#if defined(__x86_64__)
#include <x86intrin.h>
static inline uint64_t ticks(void)
{
    _mm_lfence();
    uint64_t t = __rdtsc();
    _mm_lfence();
    return t;
}
#else
static inline uint64_t ticks(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
#endif

#define THRESHOLD 4.5
#define NCROPS 6
#define BATCH 10000
#define MAX_IN 1536 /* an MTProto envelope carries up to 1024 bytes of padding */

static volatile int sink;

/* ---- the targets ------------------------------------------------------------------------------ */

typedef struct target {
    const char *name;
    const char *what;
    bool control;                           /* must leak: checks the test's power */
    size_t inlen;
    void (*prepare)(uint8_t *in, int cls); /* outside the timed region */
    void (*run)(uint8_t *in);               /* the timed operation */
} target;

static void random_bytes(uint8_t *p, size_t n) { pt_random(p, n); }

/* 1. pt_ct_memcmp of a 32-byte MAC: equal vs random */
static uint8_t mac_ref[32];
static void memcmp_prepare(uint8_t *in, int cls)
{
    if (cls == 0) memcpy(in, mac_ref, 32);
    else random_bytes(in, 32);
}
static void memcmp_run(uint8_t *in) { sink = pt_ct_memcmp(in, mac_ref, 32); }

/* 0. the control: memcmp returns at the first difference, so a test that cannot
 * see it cannot see anything. It must be reported as leaking. */
static void control_run(uint8_t *in) { sink = memcmp(in, mac_ref, 32); }

/* 2, 3. AEAD open (record suites 1 and 2): right tag but its last byte vs a random tag */
static pt_aead *aead_cp, *aead_gcm;
static uint8_t aead_ct_cp[64 + 16], aead_ct_gcm[64 + 16];
static const uint8_t aead_nonce[12] = {1};
static void aead_prepare_with(uint8_t *in, int cls, const uint8_t *ct)
{
    memcpy(in, ct, 80);
    if (cls == 0) in[79] ^= 1;
    else random_bytes(in + 64, 16);
}
static void aead_cp_prepare(uint8_t *in, int cls) { aead_prepare_with(in, cls, aead_ct_cp); }
static void aead_gcm_prepare(uint8_t *in, int cls) { aead_prepare_with(in, cls, aead_ct_gcm); }
static void aead_cp_run(uint8_t *in)
{
    uint8_t out[80];
    sink = pt_aead_open(aead_cp, out, aead_nonce, NULL, 0, in, 80);
}
static void aead_gcm_run(uint8_t *in)
{
    uint8_t out[80];
    sink = pt_aead_open(aead_gcm, out, aead_nonce, NULL, 0, in, 80);
}

/* 4. the encrypt-then-MAC record check (suites 3, 4): HMAC-SHA-256 over seq, iv,
 * ciphertext, then the constant-time compare, exactly as src/channel does it */
static pt_mac *etm_mac;
static uint8_t etm_rec[16 + 64 + 32]; /* iv, ciphertext, tag */
static void etm_prepare(uint8_t *in, int cls)
{
    memcpy(in, etm_rec, sizeof etm_rec);
    if (cls == 0) in[sizeof etm_rec - 1] ^= 1;
    else random_bytes(in + 80, 32);
}
static void etm_run(uint8_t *in)
{
    uint8_t seq[8] = {0}, tag[PT_HASH_MAX_LEN];
    const uint8_t *parts[3] = {seq, in, in + 16};
    const size_t lens[3] = {8, 16, 64};
    if (pt_mac_compute(etm_mac, tag, parts, lens, 3) != 0) abort();
    sink = pt_ct_memcmp(tag, in + 80, 32);
}

/* 5. the MTProto 2.0 msg_key check: a valid envelope with its last ciphertext byte
 * changed vs a random ciphertext of the same length */
static pt_mtp2 *mtp;
static uint8_t mtp_env[MAX_IN];
static size_t mtp_len;
static void mtp_prepare(uint8_t *in, int cls)
{
    memcpy(in, mtp_env, mtp_len);
    if (cls == 0) in[mtp_len - 1] ^= 1;
    else random_bytes(in + 24, mtp_len - 24);
}
static void mtp_run(uint8_t *in)
{
    uint8_t out[MAX_IN];
    size_t n;
    sink = pt_mtp2_open(mtp, PT_MTP2_X_CLIENT, out, sizeof out, &n, in, mtp_len);
}

/* 6. the end-to-end (Olm, olm.v1) MAC check: a normal message with the last MAC byte
 * changed vs random MAC bytes; a failed decrypt changes no state, so it repeats */
static pt_olm_session *olm_rx;
static uint8_t olm_msg[MAX_IN];
static size_t olm_len;
static void olm_prepare(uint8_t *in, int cls)
{
    memcpy(in, olm_msg, olm_len);
    if (cls == 0) in[olm_len - 1] ^= 1;
    else random_bytes(in + olm_len - 8, 8);
}
static pt_buf olm_out;
static void olm_run(uint8_t *in)
{
    pt_buf_reset(&olm_out);
    sink = pt_olm_decrypt(olm_rx, PT_OLM_MSG_NORMAL, in, olm_len, &olm_out);
}

/* 7, 8. decoding a secret from hex / base64 (keys in files and on command lines):
 * a fixed key vs random keys */
static void hex_prepare(uint8_t *in, int cls)
{
    uint8_t k[32];
    if (cls == 0) memset(k, 0, 32);
    else random_bytes(k, 32);
    pt_hex_encode((char *)in, k, 32);
}
static void hex_run(uint8_t *in)
{
    uint8_t k[32];
    sink = pt_hex_decode(k, 32, (const char *)in);
}
static void b64_prepare(uint8_t *in, int cls)
{
    uint8_t k[32];
    if (cls == 0) memset(k, 0, 32);
    else random_bytes(k, 32);
    pt_base64_encode((char *)in, k, 32);
}
static void b64_run(uint8_t *in)
{
    uint8_t k[32];
    size_t n;
    sink = pt_base64_decode(k, sizeof k, &n, (const char *)in, PT_BASE64_LEN(32));
}

static int setup(void)
{
    random_bytes(mac_ref, sizeof mac_ref);
    uint8_t key[32], plain[64];
    random_bytes(key, 32);
    random_bytes(plain, 64);
    if (!(aead_cp = pt_aead_new(PT_AEAD_CHACHAPOLY, key)) || !(aead_gcm = pt_aead_new(PT_AEAD_AESGCM, key)))
        return -1;
    if (pt_aead_seal(aead_cp, aead_ct_cp, aead_nonce, NULL, 0, plain, 64) ||
        pt_aead_seal(aead_gcm, aead_ct_gcm, aead_nonce, NULL, 0, plain, 64))
        return -1;
    if (!(etm_mac = pt_mac_new(PT_HASH_SHA256, key, 32))) return -1;
    random_bytes(etm_rec, 80);
    {
        uint8_t seq[8] = {0};
        const uint8_t *parts[3] = {seq, etm_rec, etm_rec + 16};
        const size_t lens[3] = {8, 16, 64};
        if (pt_mac_compute(etm_mac, etm_rec + 80, parts, lens, 3)) return -1;
    }
    /* MTProto 2.0: an auth key, one envelope client -> server */
    uint8_t ak[PT_MTP2_AUTH_KEY_LEN];
    random_bytes(ak, sizeof ak);
    if (!(mtp = pt_mtp2_new(ak))) return -1;
    uint8_t inner[PT_MTP2_INNER_HDR_LEN + 32] = {0};
    pt_put_u32le(inner + PT_MTP2_LEN_OFFSET, 32);
    pt_buf env;
    pt_buf_init(&env);
    if (pt_mtp2_seal(mtp, pt_env_default(), PT_MTP2_X_CLIENT, &env, inner, sizeof inner) || env.len > MAX_IN)
        return -1;
    memcpy(mtp_env, env.data, env.len);
    mtp_len = env.len;
    pt_buf_free(&env);
    /* Olm: alice opens, bob answers, bob's next normal message is the one we tamper */
    pt_err err = 0;
    pt_olm_account *a = pt_olm_account_new(pt_env_default(), PT_OLM_SUITES_ALL, &err);
    pt_olm_account *b = pt_olm_account_new(pt_env_default(), PT_OLM_SUITES_ALL, &err);
    if (!a || !b || pt_olm_account_generate_one_time_keys(b, pt_env_default(), 1)) return -1;
    pt_olm_key otk;
    uint8_t bid[32], bed[32];
    pt_olm_account_identity(b, bid, bed);
    if (pt_olm_account_unpublished_keys(b, &otk, 1) != 1) return -1;
    pt_olm_session *as = pt_olm_session_new_outbound_raw(a, pt_env_default(), PT_OLM_SUITE_OLM_V1, bid, otk.key, &err);
    if (!as) return -1;
    pt_buf m, out;
    pt_buf_init(&m);
    pt_buf_init(&out);
    pt_olm_msg_type t;
    if (pt_olm_encrypt(as, pt_env_default(), (const uint8_t *)"hello", 5, &m, &t)) return -1;
    pt_olm_session *bs = pt_olm_session_new_inbound(b, NULL, m.data, m.len, &out, &err);
    if (!bs) return -1;
    pt_buf_reset(&m);
    if (pt_olm_encrypt(bs, pt_env_default(), (const uint8_t *)"a message of bob's", 18, &m, &t) || t != PT_OLM_MSG_NORMAL ||
        m.len > MAX_IN)
        return -1;
    memcpy(olm_msg, m.data, m.len);
    olm_len = m.len;
    olm_rx = as;
    pt_buf_free(&m);
    pt_buf_free(&out);
    pt_buf_init(&olm_out);
    pt_olm_session_free(bs);
    pt_olm_account_free(a);
    pt_olm_account_free(b);
    /* sanity: the untampered forms verify, the tampered ones do not */
    uint8_t tmp[MAX_IN];
    memcpy(tmp, olm_msg, olm_len);
    tmp[olm_len - 1] ^= 1;
    pt_buf_reset(&olm_out);
    if (pt_olm_decrypt(olm_rx, PT_OLM_MSG_NORMAL, tmp, olm_len, &olm_out) == 0) return -1;
    return 0;
}

static const target targets[] = {
    {"control_memcmp", "CONTROL: libc memcmp (early exit), must leak", true, 32, memcmp_prepare, control_run},
    {"ct_memcmp", "pt_ct_memcmp, 32-byte MAC: equal vs random", false, 32, memcmp_prepare, memcmp_run},
    {"record_chachapoly", "record open, suite 1 (ChaCha20-Poly1305 tag)", false, 80, aead_cp_prepare, aead_cp_run},
    {"record_aesgcm", "record open, suite 2 (AES-256-GCM tag)", false, 80, aead_gcm_prepare, aead_gcm_run},
    {"record_etm", "record MAC check, suites 3/4 (HMAC-SHA-256 + compare)", false, 112, etm_prepare, etm_run},
    {"mtproto2_msg_key", "MTPROTO2 envelope open: the msg_key check", false, MAX_IN, mtp_prepare, mtp_run},
    {"olm_mac", "end-to-end Olm (olm.v1) message MAC check", false, MAX_IN, olm_prepare, olm_run},
    {"hex_secret", "secret key from 64 hex digits (pt_hex_decode)", false, 65, hex_prepare, hex_run},
    {"base64_secret", "secret key from base64 (pt_base64_decode)", false, 48, b64_prepare, b64_run},
};

/* ---- Welch's t-test, online ---------------------------------------------------------------------- */

typedef struct welch {
    double n[2], mean[2], m2[2];
} welch;

static void welch_add(welch *w, int cls, double x)
{
    w->n[cls]++;
    double d = x - w->mean[cls];
    w->mean[cls] += d / w->n[cls];
    w->m2[cls] += d * (x - w->mean[cls]);
}

static double welch_t(const welch *w)
{
    if (w->n[0] < 2 || w->n[1] < 2) return 0;
    double v0 = w->m2[0] / (w->n[0] - 1), v1 = w->m2[1] / (w->n[1] - 1);
    double den = sqrt(v0 / w->n[0] + v1 / w->n[1]);
    return den > 0 ? (w->mean[0] - w->mean[1]) / den : 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Measures t; returns max |t| over the crops and fills the first crop's stats. */
static double measure(const target *t, long total, double *mean0, double *mean1)
{
    static uint8_t in[BATCH][MAX_IN];
    static int cls[BATCH];
    static uint64_t dt[BATCH], sorted[BATCH];
    welch w[NCROPS + 1];
    memset(w, 0, sizeof w);
    uint64_t crop[NCROPS] = {0};
    static const double pct[NCROPS] = {0.50, 0.75, 0.90, 0.95, 0.99, 0.999};
    for (long done = 0, batch = 0; done < total; batch++) {
        long n = total - done < BATCH ? total - done : BATCH;
        for (long i = 0; i < n; i++) {
            uint8_t r;
            pt_random(&r, 1);
            cls[i] = r & 1;
            t->prepare(in[i], cls[i]);
        }
        for (long i = 0; i < n; i++) {
            uint64_t t0 = ticks();
            t->run(in[i]);
            dt[i] = ticks() - t0;
        }
        if (batch == 0) { /* warm-up batch: sets the crop thresholds, not counted */
            memcpy(sorted, dt, (size_t)n * sizeof *dt);
            qsort(sorted, (size_t)n, sizeof *sorted, cmp_u64);
            for (int k = 0; k < NCROPS; k++) crop[k] = sorted[(size_t)(pct[k] * (double)(n - 1))];
            continue;
        }
        for (long i = 0; i < n; i++) {
            welch_add(&w[NCROPS], cls[i], (double)dt[i]);
            for (int k = 0; k < NCROPS; k++)
                if (dt[i] <= crop[k]) welch_add(&w[k], cls[i], (double)dt[i]);
        }
        done += n;
    }
    double worst = 0;
    for (int k = 0; k <= NCROPS; k++) {
        double v = fabs(welch_t(&w[k]));
        if (v > worst) worst = v;
    }
    *mean0 = w[0].mean[0];
    *mean1 = w[0].mean[1];
    return worst;
}

int main(int argc, char **argv)
{
    long total = 1000000;
    const char *only = NULL;
    static const struct option opts[] = {{"measurements", required_argument, NULL, 'n'},
                                         {"only", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'n') total = atol(optarg);
        else if (c == 'o') only = optarg;
        else {
            printf("usage: pt-dudect [--measurements N (default 1000000)] [--only NAME]\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (total < 2 * BATCH) total = 2 * BATCH;
    if (pt_crypto_init() != 0 || setup() != 0) {
        fprintf(stderr, "pt-dudect: setup failed\n");
        return 2;
    }
    printf("| target | what | measurements | mean ticks (class 0 / 1, p50 crop) | max |t| | verdict |\n");
    printf("|---|---|---|---|---|---|\n");
    int bad = 0;
    for (size_t i = 0; i < sizeof targets / sizeof *targets; i++) {
        if (only && strcmp(only, targets[i].name) != 0) continue;
        double m0, m1;
        double t = measure(&targets[i], total, &m0, &m1);
        bool leaks = t >= THRESHOLD;
        bool ok = targets[i].control ? leaks : !leaks;
        bad += !ok;
        printf("| %s | %s | %ld | %.0f / %.0f | %.2f | %s |\n", targets[i].name, targets[i].what, total, m0, m1, t,
               targets[i].control ? (leaks ? "leaks, as it must (the test sees it)" : "NOT SEEN: the test is blind")
                                  : (leaks ? "LEAKS?" : "no leak found"));
        fflush(stdout);
    }
    return bad ? 1 : 0;
}
