/*
 * bench_handshake - server-side secure-channel handshakes per second, against the
 * raw X25519 work the Noise responder cannot avoid, measured in the same run.
 *
 * Only the server's work is timed: pt_chan_new, the pt_chan_input calls that
 * take the client hello and the client's Noise messages, and pt_chan_free. The
 * client side is recorded beforehand: the server's ephemeral key comes from a
 * deterministic pt_env seeded per handshake, so replaying a recorded client
 * transcript against a fresh server reproduces the exact handshake (and the
 * client's last message still authenticates). Every replay must reach
 * "established", or the benchmark aborts.
 *
 * The baseline is what the responder must compute per handshake, straight from
 * libsodium: XX ("e", "e ee s es", "s se") = 1 crypto_scalarmult_base (its
 * ephemeral) + 3 crypto_scalarmult (ee, es, se); IK ("e es s ss", "e ee se") =
 * 1 base + 4 (es, ss, ee, se).
 *
 *   bench_handshake [--quick] [--reps N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <sodium.h>

#include "channel/pt_chan.h"

#define MSG_MAX 160 /* largest recorded client flight: IK msg1 is 4 + 32 + 48 + 16 */

typedef struct transcript {
    uint8_t hello[PT_CHAN_HELLO_MAX]; /* client hello */
    size_t hello_len;
    uint8_t m1[MSG_MAX]; /* framed Noise message 1 */
    size_t m1_len;
    uint8_t m3[MSG_MAX]; /* framed Noise message 3 (XX only) */
    size_t m3_len;
} transcript;

/* A reproducible randomness source for the server: handshake i always draws the
 * same ephemeral key, so a recorded client transcript replays exactly. The cost
 * (one ChaCha20 block) matches the default environment's randombytes_buf(). */
typedef struct det_rng {
    uint8_t seed[randombytes_SEEDBYTES];
    uint64_t draws;
} det_rng;

static void det_random(void *ctx, void *buf, size_t len)
{
    det_rng *r = ctx;
    uint8_t s[randombytes_SEEDBYTES];
    memcpy(s, r->seed, sizeof s);
    pt_put_u64le(s + 24, r->draws++);
    randombytes_buf_deterministic(buf, len, s);
}

static uint64_t mono_ms(void *ctx)
{
    (void)ctx;
    return 0; /* the channel does not read the clock */
}

static void det_seed(det_rng *r, uint64_t handshake)
{
    memset(r->seed, 0x5a, sizeof r->seed);
    pt_put_u64le(r->seed, handshake);
    r->draws = 0;
}

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
    fprintf(stderr, "bench_handshake: %s: %s\n", what, pt_strerror(rc));
    exit(1);
}

static uint8_t server_sk[32], server_pk[32], client_sk[32], client_pk[32];

static pt_chan *new_chan(const pt_env *env, bool server, const uint8_t *suite, bool ik)
{
    pt_chan_config cfg = {.is_server = server,
                          .suites = suite,
                          .nsuites = 1,
                          .static_sk = server ? server_sk : client_sk,
                          /* as packtrackd does: its public key is derived once at startup */
                          .static_pk = server ? server_pk : client_pk,
                          .server_pk = server ? NULL : server_pk,
                          .use_ik = ik};
    int err = 0;
    pt_chan *c = pt_chan_new(env, &cfg, &err);
    if (!c) die("pt_chan_new", err);
    return c;
}

static void save(uint8_t *dst, size_t *dst_len, pt_buf *from)
{
    if (from->len > MSG_MAX) die("client flight larger than MSG_MAX", PT_ERR_TOO_BIG);
    memcpy(dst, from->data, from->len);
    *dst_len = from->len;
    pt_buf_reset(from);
}

static int no_records(void *ud, const uint8_t *rec, size_t len)
{
    (void)ud, (void)rec, (void)len;
    return PT_ERR_PROTO; /* no record is sent during a handshake */
}

/* Runs one complete handshake in memory and records the client's bytes. */
static void record(transcript *t, uint8_t suite, bool ik, uint64_t i)
{
    det_rng rng;
    det_seed(&rng, i);
    pt_env senv = {det_random, mono_ms, mono_ms, &rng};
    pt_chan *cl = new_chan(pt_env_default(), false, &suite, ik);
    pt_chan *sv = new_chan(&senv, true, &suite, false);
    pt_buf co, so;
    pt_buf_init(&co);
    pt_buf_init(&so);
    int rc = pt_chan_start(cl, &co);
    save(t->hello, &t->hello_len, &co);
    if (!rc) rc = pt_chan_input(sv, t->hello, t->hello_len, &so, no_records, NULL);
    if (!rc) rc = pt_chan_input(cl, so.data, so.len, &co, no_records, NULL); /* server hello */
    pt_buf_reset(&so);
    save(t->m1, &t->m1_len, &co);
    if (!rc) rc = pt_chan_input(sv, t->m1, t->m1_len, &so, no_records, NULL);
    if (!rc) rc = pt_chan_input(cl, so.data, so.len, &co, no_records, NULL); /* msg 2 */
    pt_buf_reset(&so);
    save(t->m3, &t->m3_len, &co);
    if (!rc && t->m3_len) rc = pt_chan_input(sv, t->m3, t->m3_len, &so, no_records, NULL);
    if (rc) die("recording a handshake", rc);
    if (!pt_chan_established(cl) || !pt_chan_established(sv))
        die("recorded handshake did not complete", PT_ERR_STATE);
    pt_chan_free(cl);
    pt_chan_free(sv);
    pt_buf_free(&co);
    pt_buf_free(&so);
}

/* Seconds for the server side of n recorded handshakes. */
static double time_server(const transcript *ts, size_t n, uint8_t suite)
{
    det_rng rng;
    pt_env senv = {det_random, mono_ms, mono_ms, &rng};
    pt_buf out;
    pt_buf_init(&out);
    size_t failed = 0;
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        const transcript *t = &ts[i];
        det_seed(&rng, i);
        pt_chan *sv = new_chan(&senv, true, &suite, false);
        int rc = pt_chan_input(sv, t->hello, t->hello_len, &out, no_records, NULL);
        if (!rc) rc = pt_chan_input(sv, t->m1, t->m1_len, &out, no_records, NULL);
        if (!rc && t->m3_len) rc = pt_chan_input(sv, t->m3, t->m3_len, &out, no_records, NULL);
        failed += rc != 0 || !pt_chan_established(sv);
        pt_chan_free(sv);
        pt_buf_reset(&out); /* a server reuses its output buffer */
    }
    double dt = now_s() - t0;
    pt_buf_free(&out);
    if (failed) die("a replayed handshake failed", PT_ERR_AUTH);
    return dt;
}

/* Inputs for the raw baseline, one set per handshake. */
typedef struct raw_in {
    uint8_t e_sk[32];       /* the responder's ephemeral secret */
    uint8_t re[32], rs[32]; /* the initiator's ephemeral and static public keys */
} raw_in;

static uint8_t raw_sink; /* keeps the results observable */

/* Seconds for n handshakes' worth of responder X25519: 1 base + ndh scalarmults. */
static double time_raw(const raw_in *in, size_t n, bool ik)
{
    uint8_t pk[32], sh[32];
    unsigned acc = 0;
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        const raw_in *r = &in[i];
        if (crypto_scalarmult_base(pk, r->e_sk) != 0) abort();
        acc += pk[0];
        if (ik) { /* es, ss (message 1), then ee, se (message 2) */
            acc += crypto_scalarmult(sh, server_sk, r->re) | sh[0];
            acc += crypto_scalarmult(sh, server_sk, r->rs) | sh[0];
            acc += crypto_scalarmult(sh, r->e_sk, r->re) | sh[0];
            acc += crypto_scalarmult(sh, r->e_sk, r->rs) | sh[0];
        } else { /* ee, es (message 2), then se (message 3) */
            acc += crypto_scalarmult(sh, r->e_sk, r->re) | sh[0];
            acc += crypto_scalarmult(sh, server_sk, r->re) | sh[0];
            acc += crypto_scalarmult(sh, r->e_sk, r->rs) | sh[0];
        }
    }
    double dt = now_s() - t0;
    raw_sink ^= (uint8_t)acc;
    return dt;
}

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
    const size_t n = quick ? 150 : 600; /* handshakes per timed run */
    if (reps <= 0) reps = quick ? 3 : 15;
    if (reps > 99) reps = 99;

    pt_random(server_sk, 32);
    pt_random(client_sk, 32);
    if (pt_x25519_base(server_pk, server_sk) != 0) die("server key", PT_ERR_CRYPTO);
    if (pt_x25519_base(client_pk, client_sk) != 0) die("client key", PT_ERR_CRYPTO);

    transcript *ts = calloc(n, sizeof *ts);
    raw_in *raw = calloc(n, sizeof *raw);
    if (!ts || !raw) die("calloc", PT_ERR_NOMEM);
    for (size_t i = 0; i < n; i++) {
        uint8_t sk[32];
        pt_random(raw[i].e_sk, 32);
        pt_random(sk, 32);
        if (crypto_scalarmult_base(raw[i].re, sk) != 0) abort();
        pt_random(sk, 32);
        if (crypto_scalarmult_base(raw[i].rs, sk) != 0) abort();
    }

    printf("bench_handshake: server side of the channel handshake vs raw libsodium X25519\n");
    printf("%zu handshakes per run, median of %d runs, target ratio <= 1.30\n\n", n, reps);
    printf("%-24s %-3s %10s %10s %20s %7s %s\n", "suite", "pat", "hs/s", "us/hs",
           "raw X25519 us (ops)", "ratio", "target");
    static const uint8_t suites[] = {PT_SUITE_CHACHAPOLY_BLAKE2B, PT_SUITE_AESGCM_SHA256};
    bool all_met = true;
    for (size_t s = 0; s < PT_ARRAY_LEN(suites); s++) {
        for (int ik = 0; ik < 2; ik++) {
            for (size_t i = 0; i < n; i++)
                record(&ts[i], suites[s], ik, i);
            double srv[99], base[99], ratio[99];
            time_server(ts, n / 10 + 1, suites[s]); /* warm-up */
            time_raw(raw, n / 10 + 1, ik);
            for (int r = 0; r < reps; r++) { /* interleaved: both see the same machine */
                srv[r] = time_server(ts, n, suites[s]) / (double)n;
                base[r] = time_raw(raw, n, ik) / (double)n;
                ratio[r] = srv[r] / base[r];
            }
            double ms = median(srv, (size_t)reps), mb = median(base, (size_t)reps);
            double mr = median(ratio, (size_t)reps);
            bool met = mr <= 1.30;
            all_met &= met;
            char ops[32];
            snprintf(ops, sizeof ops, "%.1f (1b+%dm)", mb * 1e6, ik ? 4 : 3);
            printf("%-24s %-3s %10.0f %10.1f %20s %7.2f %s\n", pt_suite_name(suites[s]),
                   ik ? "IK" : "XX", 1.0 / ms, ms * 1e6, ops, mr, met ? "met" : "MISSED");
            fflush(stdout);
        }
    }
    printf("\nratio = median over runs of (server us/hs) / (raw X25519 us for the same ops);"
           " b = scalarmult_base, m = scalarmult\n");
    printf("overall: %s\n", all_met ? "all targets met" : "some targets missed");
    free(ts);
    free(raw);
    return 0;
}
