/* pt-obfs (src/obfs/ptobfs.c) in memory: acceptance and records both ways, and
 * the server's silence for replays, a wrong network key, random bytes, stale
 * clocks, a full replay cache and a deadline; the decoy verdict; the look of the
 * first flights. Seeded pt_test_env randomness and clocks throughout. */
#include <stdio.h>
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "obfs/pt_ptobfs.h"
#include "testutil.h"

static const uint8_t NK[32] = "PackTrack test network key 0001";
static const uint8_t NK2[32] = "PackTrack test network key 0002";
static uint8_t PAYLOAD[32];

typedef struct side {
    pt_test_env te;
    pt_obfs *o;
    pt_buf out, data;
    int rc;
} side;

static void side_new(side *s, bool server, const uint8_t *nk, pt_obfs_replay *r, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    pt_test_env_init(&s->te, NULL, 0);
    s->te.counter = seed;
    pt_buf_init(&s->out);
    pt_buf_init(&s->data);
    pt_obfs_config cfg;
    pt_obfs_config_init(&cfg, server);
    cfg.network_key = nk;
    cfg.replay = r;
    int err = -1;
    s->o = pt_obfs_new(&s->te.env, &cfg, &err);
    assert_int_equal(err, 0);
    assert_non_null(s->o);
}

static void side_free(side *s)
{
    pt_obfs_free(s->o);
    pt_buf_free(&s->out);
    pt_buf_free(&s->data);
}

/* Feeds buf to s in chunks (0 = whole); returns the last result. */
static int feed(side *s, const uint8_t *buf, size_t len, size_t chunk)
{
    size_t off = 0;
    s->rc = PT_OBFS_NEED_MORE;
    int accepted = 0;
    while (off < len) {
        size_t n = chunk && len - off > chunk ? chunk : len - off;
        s->rc = pt_obfs_input(s->o, buf + off, n, &s->data);
        if (s->rc == PT_OBFS_ACCEPT) accepted++;
        if (s->rc < 0 || s->rc >= PT_OBFS_SILENT) break;
        off += n;
    }
    assert_true(accepted <= 1);
    return accepted ? PT_OBFS_ACCEPT : s->rc;
}

static void test_accept_and_records(void **state)
{
    (void)state;
    size_t chunks[] = {0, 1, 5, 333};
    for (size_t ci = 0; ci < PT_ARRAY_LEN(chunks); ci++) {
        pt_obfs_replay *r = pt_obfs_replay_new(64);
        side c, s;
        side_new(&c, false, NK, NULL, 1 + ci);
        side_new(&s, true, NK, r, 1000 + ci);
        assert_int_equal(pt_obfs_seal(c.o, &c.out, PAYLOAD, 1), PT_ERR_STATE); /* before start */
        assert_int_equal(pt_obfs_client_start(c.o, PAYLOAD, &c.out), 0);
        /* Records pipelined after the flight: empty, small, largest. */
        static uint8_t big[PT_OBFS_RECORD_DATA_MAX];
        for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 13);
        assert_int_equal(pt_obfs_seal(c.o, &c.out, NULL, 0), 0);
        assert_int_equal(pt_obfs_seal(c.o, &c.out, (const uint8_t *)"hello", 5), 0);
        assert_int_equal(pt_obfs_seal(c.o, &c.out, big, sizeof big), 0);
        assert_int_equal(pt_obfs_seal(c.o, &c.out, big, sizeof big + 1), PT_ERR_TOO_BIG);
        assert_int_equal(pt_obfs_seal(s.o, &s.out, big, 1), PT_ERR_STATE); /* before accept */

        assert_int_equal(feed(&s, c.out.data, c.out.len, chunks[ci]), PT_OBFS_ACCEPT);
        assert_true(pt_obfs_accepted(s.o));
        assert_memory_equal(pt_obfs_client_payload(s.o), PAYLOAD, 32);
        assert_int_equal(s.data.len, 5 + sizeof big);
        assert_memory_equal(s.data.data, "hello", 5);
        assert_memory_equal(s.data.data + 5, big, sizeof big);
        assert_int_equal(pt_obfs_deadline_ms(s.o), UINT64_MAX);

        for (int k = 0; k < 20; k++)
            assert_int_equal(pt_obfs_seal(s.o, &s.out, big + k, (size_t)k * 100), 0);
        assert_int_equal(feed(&c, s.out.data, s.out.len, chunks[ci]), PT_OBFS_NEED_MORE);
        size_t want = 0;
        for (int k = 0; k < 20; k++) want += (size_t)k * 100;
        assert_int_equal(c.data.len, want);
        assert_int_equal(pt_obfs_check_timeout(c.o), 0);
        side_free(&c);
        side_free(&s);
        pt_obfs_replay_free(r);
    }
}

static void test_replay_refused(void **state)
{
    (void)state;
    pt_obfs_replay *r = pt_obfs_replay_new(64);
    side c, s1, s2, s3;
    side_new(&c, false, NK, NULL, 2);
    assert_int_equal(pt_obfs_client_start(c.o, PAYLOAD, &c.out), 0);
    side_new(&s1, true, NK, r, 2000);
    assert_int_equal(feed(&s1, c.out.data, c.out.len, 0), PT_OBFS_ACCEPT);
    assert_int_equal(pt_obfs_replay_count(r), 1);
    side_new(&s2, true, NK, r, 2001);
    assert_int_equal(feed(&s2, c.out.data, c.out.len, 7), PT_OBFS_SILENT);
    assert_int_equal(pt_obfs_reject_reason(s2.o), PT_ERR_REPLAY);
    assert_int_equal(s2.out.len, 0);
    assert_null(pt_obfs_client_payload(s2.o));
    assert_int_equal(pt_obfs_seal(s2.o, &s2.out, PAYLOAD, 1), PT_ERR_STATE);
    /* The verdict is final. */
    assert_int_equal(pt_obfs_input(s2.o, PAYLOAD, 4, &s2.data), PT_OBFS_SILENT);
    /* A decoy-configured server hands over exactly the bytes it got. */
    memset(&s3, 0, sizeof s3);
    pt_test_env_init(&s3.te, NULL, 0);
    pt_buf_init(&s3.data);
    pt_obfs_config cfg;
    pt_obfs_config_init(&cfg, true);
    cfg.network_key = NK;
    cfg.replay = r;
    cfg.reject_to_decoy = true;
    s3.o = pt_obfs_new(&s3.te.env, &cfg, NULL);
    assert_non_null(s3.o);
    assert_int_equal(feed(&s3, c.out.data, c.out.len, 0), PT_OBFS_DECOY);
    size_t held = 0;
    const uint8_t *h = pt_obfs_held(s3.o, &held);
    assert_int_equal(held, c.out.len);
    assert_memory_equal(h, c.out.data, held);
    side_free(&c);
    side_free(&s1);
    side_free(&s2);
    side_free(&s3);
    pt_obfs_replay_free(r);
}

static void test_wrong_key_and_stale_clock_silent(void **state)
{
    (void)state;
    pt_obfs_replay *r = pt_obfs_replay_new(64);
    /* Clock offsets (client minus server, minutes) and whether they pass. */
    struct { int64_t skew_min; int ok; } cases[] = {{0, 1}, {1, 1}, {-1, 1}, {2, 0}, {-2, 0}, {-60, 0}};
    for (size_t i = 0; i < PT_ARRAY_LEN(cases); i++) {
        side c, s;
        side_new(&c, false, NK, NULL, 3 + i);
        side_new(&s, true, NK, r, 3000 + i);
        c.te.now_ms = (uint64_t)((int64_t)s.te.now_ms + cases[i].skew_min * PT_OBFS_WINDOW_MS);
        assert_int_equal(pt_obfs_client_start(c.o, PAYLOAD, &c.out), 0);
        int v = feed(&s, c.out.data, c.out.len, 0);
        assert_int_equal(v, cases[i].ok ? PT_OBFS_ACCEPT : PT_OBFS_SILENT);
        if (!cases[i].ok) assert_int_equal(pt_obfs_reject_reason(s.o), PT_ERR_AUTH);
        side_free(&c);
        side_free(&s);
    }
    /* Wrong network key. */
    side c, s;
    side_new(&c, false, NK2, NULL, 9);
    side_new(&s, true, NK, r, 9000);
    assert_int_equal(pt_obfs_client_start(c.o, PAYLOAD, &c.out), 0);
    assert_int_equal(feed(&s, c.out.data, c.out.len, 0), PT_OBFS_SILENT);
    /* Under the wrong key the pad length decrypts to noise: usually out of range,
     * else the tag fails once the bytes are in. */
    int why = pt_obfs_reject_reason(s.o);
    assert_true(why == PT_ERR_TOO_BIG || why == PT_ERR_AUTH);
    assert_int_equal(s.out.len + s.data.len, 0);
    side_free(&c);
    side_free(&s);
    pt_obfs_replay_free(r);
}

static void test_random_bytes_silent(void **state)
{
    (void)state;
    pt_obfs_replay *r = pt_obfs_replay_new(64);
    pt_test_env rng;
    pt_test_env_init(&rng, NULL, 0);
    rng.counter = 4444;
    int timed_out = 0, at_once = 0;
    for (int round = 0; round < 200; round++) {
        uint8_t buf[2500], l[2];
        pt_env_random(&rng.env, l, 2);
        size_t len = (size_t)(l[0] | l[1] << 8) % sizeof buf;
        pt_env_random(&rng.env, buf, len);
        side s;
        side_new(&s, true, NK, r, 40000 + (uint64_t)round);
        int v = feed(&s, buf, len, 1 + round % 64);
        assert_true(v == PT_OBFS_NEED_MORE || v == PT_OBFS_SILENT);
        if (v == PT_OBFS_NEED_MORE) {
            s.te.mono_ms += PT_OBFS_TIMEOUT_MS;
            assert_int_equal(pt_obfs_check_timeout(s.o), PT_OBFS_SILENT);
            assert_int_equal(pt_obfs_reject_reason(s.o), PT_ERR_TIMEOUT);
            timed_out++;
        } else {
            at_once++;
        }
        assert_false(pt_obfs_accepted(s.o));
        assert_int_equal(s.data.len, 0);
        side_free(&s);
    }
    printf("random streams: %d rejected on their bytes, %d at the deadline\n", at_once, timed_out);
    assert_true(at_once > 50 && timed_out > 0);
    assert_int_equal(pt_obfs_replay_count(r), 0); /* nothing unauthenticated enters the cache */
    pt_obfs_replay_free(r);
}

static void test_replay_cache_bounds(void **state)
{
    (void)state;
    pt_obfs_replay *r = pt_obfs_replay_new(2);
    uint64_t server_now = 0;
    for (int i = 0; i < 4; i++) {
        side c, s;
        side_new(&c, false, NK, NULL, 50 + (uint64_t)i);
        side_new(&s, true, NK, r, 5000 + (uint64_t)i);
        if (i == 3) s.te.now_ms += 3 * PT_OBFS_WINDOW_MS, c.te.now_ms = s.te.now_ms;
        server_now = s.te.now_ms;
        assert_int_equal(pt_obfs_client_start(c.o, PAYLOAD, &c.out), 0);
        int v = feed(&s, c.out.data, c.out.len, 0);
        if (i < 2 || i == 3) {
            assert_int_equal(v, PT_OBFS_ACCEPT); /* i == 3: the old entries expired */
        } else {
            assert_int_equal(v, PT_OBFS_SILENT); /* full of live entries: fail closed */
            assert_int_equal(pt_obfs_reject_reason(s.o), PT_ERR_NOMEM);
        }
        side_free(&c);
        side_free(&s);
    }
    (void)server_now;
    assert_int_equal(pt_obfs_replay_count(r), 1);
    pt_obfs_replay_free(r);

    /* Many entries with expiry and collisions in a small table. */
    r = pt_obfs_replay_new(100);
    pt_test_env te;
    pt_test_env_init(&te, NULL, 0);
    for (int i = 0; i < 1000; i++) {
        side c, s;
        side_new(&c, false, NK, NULL, 100000 + (uint64_t)i * 3);
        side_new(&s, true, NK, r, 200000 + (uint64_t)i);
        c.te.now_ms = s.te.now_ms = te.now_ms + (uint64_t)(i / 40) * PT_OBFS_WINDOW_MS;
        assert_int_equal(pt_obfs_client_start(c.o, PAYLOAD, &c.out), 0);
        assert_int_equal(feed(&s, c.out.data, c.out.len, 0), PT_OBFS_ACCEPT);
        side_free(&s);
        side_new(&s, true, NK, r, 300000 + (uint64_t)i);
        s.te.now_ms = c.te.now_ms;
        assert_int_equal(feed(&s, c.out.data, c.out.len, 0), PT_OBFS_SILENT);
        assert_int_equal(pt_obfs_reject_reason(s.o), PT_ERR_REPLAY);
        side_free(&c);
        side_free(&s);
    }
    assert_true(pt_obfs_replay_count(r) <= 100);
    pt_obfs_replay_free(r);
}

static void test_tampered_record_and_timeouts(void **state)
{
    (void)state;
    pt_obfs_replay *r = pt_obfs_replay_new(8);
    side c, s;
    side_new(&c, false, NK, NULL, 6);
    side_new(&s, true, NK, r, 6000);
    assert_int_equal(pt_obfs_client_start(c.o, PAYLOAD, &c.out), 0);
    size_t flight = c.out.len;
    assert_int_equal(pt_obfs_seal(c.o, &c.out, (const uint8_t *)"abc", 3), 0);
    c.out.data[c.out.len - 1] ^= 1;
    assert_int_equal(feed(&s, c.out.data, flight, 0), PT_OBFS_ACCEPT);
    assert_int_equal(feed(&s, c.out.data + flight, c.out.len - flight, 0), PT_ERR_AUTH);
    assert_int_equal(pt_obfs_input(s.o, NULL, 0, &s.data), PT_ERR_AUTH); /* final */
    assert_int_equal(s.data.len, 0);
    side_free(&s);
    /* A record length out of range. */
    side_new(&s, true, NK, r, 6001);
    side_free(&c);
    side_new(&c, false, NK, NULL, 7);
    assert_int_equal(pt_obfs_client_start(c.o, PAYLOAD, &c.out), 0);
    flight = c.out.len;
    assert_int_equal(pt_obfs_seal(c.o, &c.out, NULL, 0), 0);
    c.out.data[flight] ^= 0xff;
    assert_int_equal(feed(&s, c.out.data, c.out.len, 0), PT_ERR_DECODE);
    /* The client gives up when the server never answers. */
    c.te.mono_ms += PT_OBFS_TIMEOUT_MS;
    assert_int_equal(pt_obfs_check_timeout(c.o), PT_ERR_TIMEOUT);
    assert_int_equal(pt_obfs_input(c.o, NULL, 0, &c.data), PT_ERR_TIMEOUT);
    side_free(&c);
    side_free(&s);
    pt_obfs_replay_free(r);
}

static double chi_square(const size_t counts[256], size_t total)
{
    double expect = (double)total / 256, chi = 0;
    for (int i = 0; i < 256; i++)
        chi += ((double)counts[i] - expect) * ((double)counts[i] - expect) / expect;
    return chi;
}

static void test_first_flights_look_random(void **state)
{
    (void)state;
    /* 100 first flights with the same payload: their first 58 bytes (nonce,
     * encrypted payload and pad length) pooled, and their lengths. See test_mse
     * for the bound. */
    size_t counts[256] = {0}, seen[PT_OBFS_FLIGHT_MAX + 1] = {0}, distinct = 0;
    for (int i = 0; i < 100; i++) {
        side c;
        side_new(&c, false, NK, NULL, 700000 + (uint64_t)i * 1000);
        assert_int_equal(pt_obfs_client_start(c.o, PAYLOAD, &c.out), 0);
        for (int k = 0; k < PT_OBFS_HDR_LEN; k++) counts[c.out.data[k]]++;
        if (seen[c.out.len]++ == 0) distinct++;
        side_free(&c);
    }
    double chi = chi_square(counts, 100 * PT_OBFS_HDR_LEN);
    printf("chi-square of first-flight bytes %.1f; distinct lengths %zu\n", chi, distinct);
    assert_true(chi < 400);
    assert_true(distinct > 80);
}

static void test_config_checks(void **state)
{
    (void)state;
    pt_test_env te;
    pt_test_env_init(&te, NULL, 0);
    pt_obfs_config cfg;
    pt_obfs_config_init(&cfg, true);
    int err = 0;
    assert_null(pt_obfs_new(&te.env, &cfg, &err)); /* no key */
    assert_int_equal(err, PT_ERR_INVAL);
    cfg.network_key = NK;
    assert_null(pt_obfs_new(&te.env, &cfg, &err)); /* server without a replay cache */
    assert_null(pt_obfs_replay_new(0));
    pt_obfs_free(NULL);
    pt_obfs_replay_free(NULL);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    pt_log_set_level(PT_LOG_ERROR);
    for (int i = 0; i < 32; i++) PAYLOAD[i] = (uint8_t)(0xe0 + i);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_and_records),
        cmocka_unit_test(test_replay_refused),
        cmocka_unit_test(test_wrong_key_and_stale_clock_silent),
        cmocka_unit_test(test_random_bytes_silent),
        cmocka_unit_test(test_replay_cache_bounds),
        cmocka_unit_test(test_tampered_record_and_timeouts),
        cmocka_unit_test(test_first_flights_look_random),
        cmocka_unit_test(test_config_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
