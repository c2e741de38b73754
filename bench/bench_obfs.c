/*
 * bench_obfs - cost of the obfuscation layer (src/obfs), with the plain channel
 * record layer measured in the same run as the baseline.
 *
 * Handshakes/s (one process plays both sides, so each figure is the CPU of a
 * client plus a server):
 *   MSE       full MSE handshake in memory (two 768-bit DH key pairs and shared
 *             secrets, SHA-1, RC4 set-up with the 1024-byte drop), pads 0..512,
 *             RC4 selected, IA of 64 bytes
 *   pt-obfs   client first flight + server verification (3 BLAKE2b tags, replay
 *             cache) + session keys, then one record each way
 *   Noise     the channel's own XX handshake (pt_chan), for scale
 * Bulk MB/s for 16 KiB writes, sender + receiver:
 *   rc4 raw       pt_rc4_xor alone (the legacy-provider wrapper), one direction
 *   MSE rc4       pt_mse_seal + pt_mse_input
 *   MSE plain     the same with plaintext selected (copies only)
 *   pt-obfs       pt_obfs_seal + pt_obfs_input (XChaCha20-Poly1305 records,
 *                 masked length, 0..255 bytes of padding each)
 *   channel       pt_chan_seal + pt_chan_input, PT1-CHACHAPOLY-BLAKE2B (baseline)
 * Each figure is the median of --reps runs (default 5).
 *
 *   bench_obfs [--quick] [--reps N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "channel/pt_chan.h"
#include "crypto/pt_crypto.h"
#include "crypto/pt_crypto_legacy.h"
#include "obfs/pt_mse.h"
#include "obfs/pt_ptobfs.h"

#define CHUNK 16384

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
    fprintf(stderr, "bench_obfs: %s: %s\n", what, pt_strerror(rc));
    exit(1);
}

static const uint8_t SKEY[20] = "bench-info-hash-0001";
static const uint8_t NK[32] = "PackTrack bench network key 0001";
static uint8_t buf[CHUNK];

/* ---- MSE ---------------------------------------------------------------------------- */

typedef struct mse_pair {
    pt_mse *a, *b;
    pt_buf ao, bo, ap, bp; /* outputs and payloads */
} mse_pair;

static void mse_establish(mse_pair *p, uint32_t crypto)
{
    static const uint8_t ia[64];
    pt_mse_skey sk = {SKEY, sizeof SKEY};
    pt_mse_config ca, cb;
    pt_mse_config_init(&ca, true);
    pt_mse_config_init(&cb, false);
    ca.skeys = cb.skeys = &sk;
    ca.nskeys = cb.nskeys = 1;
    ca.ia = ia;
    ca.ia_len = sizeof ia;
    cb.crypto = crypto;
    int err;
    memset(p, 0, sizeof *p);
    if (!(p->a = pt_mse_new(pt_env_default(), &ca, &err))) die("pt_mse_new", err);
    if (!(p->b = pt_mse_new(pt_env_default(), &cb, &err))) die("pt_mse_new", err);
    int rc = pt_mse_start(p->a, &p->ao);
    if (rc == 0) rc = pt_mse_start(p->b, &p->bo);
    for (int i = 0; rc >= 0 && i < 4 && !(pt_mse_done(p->a) && pt_mse_done(p->b)); i++) {
        pt_buf in = p->ao;
        pt_buf_init(&p->ao);
        if (in.len) rc = pt_mse_input(p->b, in.data, in.len, &p->bo, &p->bp);
        pt_buf_free(&in);
        in = p->bo;
        pt_buf_init(&p->bo);
        if (rc >= 0 && in.len) rc = pt_mse_input(p->a, in.data, in.len, &p->ao, &p->ap);
        pt_buf_free(&in);
    }
    if (rc < 0) die("MSE handshake", rc);
    if (!pt_mse_done(p->a) || !pt_mse_done(p->b)) die("MSE handshake incomplete", PT_ERR_STATE);
    pt_buf_reset(&p->ao);
    pt_buf_reset(&p->bp);
}

static void mse_free(mse_pair *p)
{
    pt_mse_free(p->a);
    pt_mse_free(p->b);
    pt_buf_free(&p->ao);
    pt_buf_free(&p->bo);
    pt_buf_free(&p->ap);
    pt_buf_free(&p->bp);
}

static double time_mse_handshakes(size_t n)
{
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        mse_pair p;
        mse_establish(&p, PT_MSE_CRYPTO_RC4 | PT_MSE_CRYPTO_PLAIN);
        mse_free(&p);
    }
    return now_s() - t0;
}

static double time_mse_bulk(uint32_t crypto, size_t n)
{
    mse_pair p;
    mse_establish(&p, crypto);
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        pt_buf_reset(&p.ao);
        pt_buf_reset(&p.bp);
        int rc = pt_mse_seal(p.a, &p.ao, buf, CHUNK);
        if (rc == 0) rc = pt_mse_input(p.b, p.ao.data, p.ao.len, &p.bo, &p.bp);
        if (rc < 0 || p.bp.len != CHUNK) die("MSE bulk", rc);
    }
    double dt = now_s() - t0;
    mse_free(&p);
    return dt;
}

static double time_rc4_raw(size_t n)
{
    uint8_t key[20] = {1};
    pt_rc4 *r = pt_rc4_new(key, sizeof key, PT_MSE_RC4_DROP);
    if (!r) die("pt_rc4_new", PT_ERR_CRYPTO);
    static uint8_t out[CHUNK];
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
        if (pt_rc4_xor(r, out, buf, CHUNK) != 0) die("pt_rc4_xor", PT_ERR_CRYPTO);
    double dt = now_s() - t0;
    pt_rc4_free(r);
    return dt;
}

/* ---- pt-obfs ------------------------------------------------------------------------ */

typedef struct obfs_pair {
    pt_obfs *c, *s;
    pt_buf wire, data;
} obfs_pair;

static void obfs_establish(obfs_pair *p, pt_obfs_replay *r)
{
    pt_obfs_config cc, sc;
    pt_obfs_config_init(&cc, false);
    pt_obfs_config_init(&sc, true);
    cc.network_key = sc.network_key = NK;
    sc.replay = r;
    int err;
    memset(p, 0, sizeof *p);
    if (!(p->c = pt_obfs_new(pt_env_default(), &cc, &err))) die("pt_obfs_new", err);
    if (!(p->s = pt_obfs_new(pt_env_default(), &sc, &err))) die("pt_obfs_new", err);
    uint8_t eph[32] = {9};
    int rc = pt_obfs_client_start(p->c, eph, &p->wire);
    if (rc == 0) rc = pt_obfs_seal(p->c, &p->wire, buf, 48);
    if (rc == 0) rc = pt_obfs_input(p->s, p->wire.data, p->wire.len, &p->data);
    if (rc != PT_OBFS_ACCEPT) die("pt-obfs accept", rc < 0 ? rc : PT_ERR_AUTH);
    pt_buf_reset(&p->wire);
    pt_buf_reset(&p->data);
    rc = pt_obfs_seal(p->s, &p->wire, buf, 48);
    if (rc == 0) rc = pt_obfs_input(p->c, p->wire.data, p->wire.len, &p->data);
    if (rc != 0 || p->data.len != 48) die("pt-obfs reply", rc);
}

static void obfs_free(obfs_pair *p)
{
    pt_obfs_free(p->c);
    pt_obfs_free(p->s);
    pt_buf_free(&p->wire);
    pt_buf_free(&p->data);
}

static double time_obfs_handshakes(size_t n)
{
    pt_obfs_replay *r = pt_obfs_replay_new(n + 16);
    if (!r) die("replay cache", PT_ERR_NOMEM);
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        obfs_pair p;
        obfs_establish(&p, r);
        obfs_free(&p);
    }
    double dt = now_s() - t0;
    pt_obfs_replay_free(r);
    return dt;
}

static double time_obfs_bulk(size_t n)
{
    pt_obfs_replay *r = pt_obfs_replay_new(4);
    obfs_pair p;
    obfs_establish(&p, r);
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        pt_buf_reset(&p.wire);
        pt_buf_reset(&p.data);
        int rc = pt_obfs_seal(p.c, &p.wire, buf, CHUNK);
        if (rc == 0) rc = pt_obfs_input(p.s, p.wire.data, p.wire.len, &p.data);
        if (rc != 0 || p.data.len != CHUNK) die("pt-obfs bulk", rc);
    }
    double dt = now_s() - t0;
    obfs_free(&p);
    pt_obfs_replay_free(r);
    return dt;
}

/* ---- the channel baseline ------------------------------------------------------------ */

static uint8_t server_sk[32], client_sk[32];

typedef struct chan_pair {
    pt_chan *cl, *sv;
    pt_buf wire, reply;
    size_t bytes;
} chan_pair;

static int on_record(void *ud, const uint8_t *rec, size_t len)
{
    (void)rec;
    ((chan_pair *)ud)->bytes += len;
    return 0;
}

static void chan_establish(chan_pair *p)
{
    static const uint8_t suite = PT_SUITE_CHACHAPOLY_BLAKE2B;
    pt_chan_config cc = {.suites = &suite, .nsuites = 1, .static_sk = client_sk};
    pt_chan_config sc = {.is_server = true, .suites = &suite, .nsuites = 1, .static_sk = server_sk};
    int err;
    memset(p, 0, sizeof *p);
    if (!(p->cl = pt_chan_new(pt_env_default(), &cc, &err))) die("pt_chan_new", err);
    if (!(p->sv = pt_chan_new(pt_env_default(), &sc, &err))) die("pt_chan_new", err);
    pt_buf co, so;
    pt_buf_init(&co);
    pt_buf_init(&so);
    int rc = pt_chan_start(p->cl, &co);
    for (int i = 0; rc == 0 && i < 8 && (co.len || so.len); i++) {
        pt_buf in = co;
        pt_buf_init(&co);
        if (in.len) rc = pt_chan_input(p->sv, in.data, in.len, &so, on_record, p);
        pt_buf_free(&in);
        in = so;
        pt_buf_init(&so);
        if (rc == 0 && in.len) rc = pt_chan_input(p->cl, in.data, in.len, &co, on_record, p);
        pt_buf_free(&in);
    }
    pt_buf_free(&co);
    pt_buf_free(&so);
    if (rc) die("channel handshake", rc);
    if (!pt_chan_established(p->cl) || !pt_chan_established(p->sv))
        die("channel handshake incomplete", PT_ERR_STATE);
}

static void chan_free(chan_pair *p)
{
    pt_chan_free(p->cl);
    pt_chan_free(p->sv);
    pt_buf_free(&p->wire);
    pt_buf_free(&p->reply);
}

static double time_chan_handshakes(size_t n)
{
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        chan_pair p;
        chan_establish(&p);
        chan_free(&p);
    }
    return now_s() - t0;
}

static double time_chan_bulk(size_t n)
{
    chan_pair p;
    chan_establish(&p);
    /* Session-shaped records (msg_id at 16, length at 28) like bench_record. */
    static uint8_t rec[CHUNK];
    pt_put_u32le(rec + 28, CHUNK - 32);
    uint64_t msg_id = 0;
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        pt_put_u64le(rec + 16, msg_id += 4);
        pt_buf_reset(&p.wire);
        int rc = pt_chan_seal(p.cl, &p.wire, rec, CHUNK);
        if (rc == 0) rc = pt_chan_input(p.sv, p.wire.data, p.wire.len, &p.reply, on_record, &p);
        if (rc) die("channel bulk", rc);
    }
    double dt = now_s() - t0;
    if (p.bytes != n * CHUNK) die("channel records lost", PT_ERR_STATE);
    chan_free(&p);
    return dt;
}

/* ---- main ------------------------------------------------------------------------------ */

typedef double (*hs_fn)(size_t);

static double rate(hs_fn f, size_t n, int reps)
{
    double v[32];
    for (int r = 0; r < reps; r++) v[r] = (double)n / f(n);
    return median(v, (size_t)reps);
}

int main(int argc, char **argv)
{
    int reps = 5;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) quick = true;
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_obfs [--quick] [--reps N]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 32) reps = 5;
    if (pt_init() != 0) die("pt_init", PT_ERR_CRYPTO);
    pt_random(buf, sizeof buf);
    pt_random(server_sk, 32);
    pt_random(client_sk, 32);
    size_t hs = quick ? 100 : 1000, bulk = quick ? 2000 : 20000; /* bulk: 16 KiB each */

    printf("bench_obfs: median of %d runs; one process plays both sides\n\n", reps);
    printf("%-44s %12s\n", "handshakes (client + server CPU)", "per second");
    printf("%-44s %12.0f\n", "MSE (768-bit DH, RC4 selected, pads 0..512)",
           rate(time_mse_handshakes, hs, reps));
    printf("%-44s %12.0f\n", "pt-obfs (flight, accept, 1 record each way)",
           rate(time_obfs_handshakes, hs, reps));
    printf("%-44s %12.0f\n", "channel Noise XX (baseline)", rate(time_chan_handshakes, hs, reps));

    printf("\n%-44s %12s\n", "bulk, 16 KiB writes (seal + open)", "MB/s");
    struct {
        const char *name;
        int kind;
    } rows[] = {{"rc4 raw (pt_rc4_xor, one side)", 0},
                {"MSE rc4", 1},
                {"MSE plaintext", 2},
                {"pt-obfs stream (XChaCha20-Poly1305 + pad)", 3},
                {"channel PT1-CHACHAPOLY-BLAKE2B (baseline)", 4}};
    for (size_t k = 0; k < PT_ARRAY_LEN(rows); k++) {
        double v[32];
        for (int r = 0; r < reps; r++) {
            double dt = 0;
            switch (rows[k].kind) {
            case 0: dt = time_rc4_raw(bulk); break;
            case 1: dt = time_mse_bulk(PT_MSE_CRYPTO_RC4, bulk); break;
            case 2: dt = time_mse_bulk(PT_MSE_CRYPTO_PLAIN, bulk); break;
            case 3: dt = time_obfs_bulk(bulk); break;
            default: dt = time_chan_bulk(bulk); break;
            }
            v[r] = (double)bulk * CHUNK / dt / 1e6;
        }
        printf("%-44s %12.0f\n", rows[k].name, median(v, (size_t)reps));
    }
    return 0;
}
