/* The secure channel, client and server in memory: every suite, XX and IK,
 * pinning, downgrade, tampering, replay, oversized frames and garbage. */
#include <stdio.h>
#include <stdlib.h>

#include "channel/pt_chan.h"
#include "testutil.h"

typedef struct side {
    pt_chan *c;
    pt_buf out;       /* bytes this side wants to send */
    pt_buf got;       /* concatenated record plaintexts received */
    int nrec;
    int err;          /* last pt_chan_input error */
} side;

static int on_record(void *ud, const uint8_t *rec, size_t len)
{
    side *s = ud;
    s->nrec++;
    return pt_buf_append(&s->got, rec, len);
}

static uint8_t server_sk[32], server_pk[32], client_sk[32];

static void setup_keys(void)
{
    pt_random(server_sk, 32);
    pt_random(client_sk, 32);
    assert_int_equal(pt_x25519_base(server_pk, server_sk), 0);
}

static void side_init(side *s, bool server, const uint8_t *suites, size_t n, const uint8_t *pin,
                      bool ik)
{
    memset(s, 0, sizeof *s);
    pt_chan_config cfg = {.is_server = server, .suites = suites, .nsuites = n,
                          .static_sk = server ? server_sk : client_sk,
                          .server_pk = pin, .use_ik = ik};
    int err = -1;
    s->c = pt_chan_new(pt_env_default(), &cfg, &err);
    assert_non_null(s->c);
    assert_int_equal(err, 0);
    pt_buf_init(&s->out);
    pt_buf_init(&s->got);
}

static void side_free(side *s)
{
    pt_chan_free(s->c);
    pt_buf_free(&s->out);
    pt_buf_free(&s->got);
}

/* Moves bytes from a to b; returns true if anything moved. Stops at an error. */
static bool move(side *a, side *b)
{
    if (a->out.len == 0 || b->err) return false; /* a failed side still sends its reply */
    pt_buf data = a->out;
    pt_buf_init(&a->out);
    b->err = pt_chan_input(b->c, data.data, data.len, &b->out, on_record, b);
    pt_buf_free(&data);
    return true;
}

static void pump(side *cl, side *sv)
{
    for (int i = 0; i < 20 && (move(cl, sv) | move(sv, cl)); i++) {}
}

/* Builds a session-shaped record (MTProto inner layout) with msg_id and body. */
static size_t make_rec(uint8_t *buf, uint64_t msg_id, const uint8_t *body, size_t len)
{
    memset(buf, 0, 32);
    pt_put_u64le(buf + 16, msg_id);
    pt_put_u32le(buf + 28, (uint32_t)len);
    memcpy(buf + 32, body, len);
    return 32 + len;
}

static void handshake(side *cl, side *sv, const uint8_t *cs, size_t cn, const uint8_t *ss,
                      size_t sn, const uint8_t *pin, bool ik)
{
    side_init(cl, false, cs, cn, pin, ik);
    side_init(sv, true, ss, sn, NULL, false);
    assert_int_equal(pt_chan_start(cl->c, &cl->out), 0);
    pump(cl, sv);
}

static void test_all_suites_roundtrip(void **state)
{
    (void)state;
    static uint8_t body[100000], rec[100032];
    pt_random(body, sizeof body);
    const size_t sizes[] = {0, 1, 100, 16384, sizeof body};
    for (uint8_t suite = PT_SUITE_MIN; suite <= PT_SUITE_MAX; suite++) {
        for (int ik = 0; ik < 2; ik++) {
            side cl, sv;
            handshake(&cl, &sv, &suite, 1, &suite, 1, server_pk, ik);
            assert_int_equal(cl.err, 0);
            assert_int_equal(sv.err, 0);
            assert_true(pt_chan_established(cl.c));
            assert_true(pt_chan_established(sv.c));
            assert_int_equal(pt_chan_suite(cl.c), suite);
            assert_memory_equal(pt_chan_remote_static(cl.c), server_pk, 32);
            uint8_t cpk[32];
            assert_int_equal(pt_x25519_base(cpk, client_sk), 0);
            assert_memory_equal(pt_chan_remote_static(sv.c), cpk, 32);
            size_t h1, h2;
            const uint8_t *hh1 = pt_chan_handshake_hash(cl.c, &h1), *hh2 = pt_chan_handshake_hash(sv.c, &h2);
            assert_int_equal(h1, h2);
            assert_memory_equal(hh1, hh2, h1);
            uint64_t id = 4;
            for (size_t i = 0; i < PT_ARRAY_LEN(sizes); i++) {
                if (i % 2) { /* quiet connections give back memory; the next record still goes */
                    pt_chan_trim(cl.c);
                    pt_chan_trim(sv.c);
                }
                size_t n = make_rec(rec, id += 4, body, sizes[i]);
                assert_int_equal(pt_chan_seal(cl.c, &cl.out, rec, n), 0);
                n = make_rec(rec, id + 1, body, sizes[i]);
                assert_int_equal(pt_chan_seal(sv.c, &sv.out, rec, n), 0);
                pump(&cl, &sv);
                assert_int_equal(cl.err, 0);
                assert_int_equal(sv.err, 0);
                assert_int_equal(sv.got.len, 32 + sizes[i]);
                assert_int_equal(cl.got.len, 32 + sizes[i]);
                assert_memory_equal(sv.got.data + 32, body, sizes[i]);
                assert_memory_equal(cl.got.data + 32, body, sizes[i]);
                pt_buf_reset(&sv.got);
                pt_buf_reset(&cl.got);
            }
            side_free(&cl);
            side_free(&sv);
        }
    }
}

static void test_server_preference_and_no_common_suite(void **state)
{
    (void)state;
    const uint8_t offer[] = {PT_SUITE_MTPROTO2, PT_SUITE_AESGCM_SHA256, PT_SUITE_CHACHAPOLY_BLAKE2B};
    const uint8_t allow[] = {PT_SUITE_CHACHAPOLY_BLAKE2B, PT_SUITE_AESGCM_SHA256};
    side cl, sv;
    handshake(&cl, &sv, offer, 3, allow, 2, NULL, false);
    assert_true(pt_chan_established(cl.c));
    assert_int_equal(pt_chan_suite(cl.c), PT_SUITE_CHACHAPOLY_BLAKE2B);
    side_free(&cl);
    side_free(&sv);

    const uint8_t only[] = {PT_SUITE_AES256CTR_SHA384};
    handshake(&cl, &sv, only, 1, allow, 2, NULL, false);
    assert_int_equal(sv.err, PT_ERR_NO_SUITE);
    assert_int_equal(cl.err, PT_ERR_NO_SUITE); /* the client was told why */
    side_free(&cl);
    side_free(&sv);
}

/* A man in the middle strips the strong suites from the client hello. */
static void test_downgrade_fails(void **state)
{
    (void)state;
    const uint8_t offer[] = {PT_SUITE_CHACHAPOLY_BLAKE2B, PT_SUITE_AES128CTR_SHA256};
    const uint8_t allow[] = {PT_SUITE_CHACHAPOLY_BLAKE2B, PT_SUITE_AES128CTR_SHA256};
    for (int ik = 0; ik < 2; ik++) {
        side cl, sv;
        side_init(&cl, false, offer, 2, server_pk, ik);
        side_init(&sv, true, allow, 2, NULL, false);
        assert_int_equal(pt_chan_start(cl.c, &cl.out), 0);
        /* rewrite "nsuites=2, [1,3]" into "nsuites=1, [3]" */
        assert_int_equal(cl.out.len, 8);
        cl.out.data[5] = 1;
        cl.out.data[6] = PT_SUITE_AES128CTR_SHA256;
        cl.out.len = 7;
        pump(&cl, &sv);
        assert_false(pt_chan_established(cl.c) && pt_chan_established(sv.c));
        assert_true(cl.err == PT_ERR_AUTH || sv.err == PT_ERR_AUTH);
        side_free(&cl);
        side_free(&sv);
    }
}

static void test_pinned_key_mismatch(void **state)
{
    (void)state;
    uint8_t wrong[32];
    pt_random(wrong, 32);
    const uint8_t s = PT_SUITE_CHACHAPOLY_BLAKE2B;
    side cl, sv;
    handshake(&cl, &sv, &s, 1, &s, 1, wrong, false);
    assert_int_equal(cl.err, PT_ERR_KEY_MISMATCH);
    assert_false(pt_chan_established(sv.c)); /* the client never sent msg 3 */
    side_free(&cl);
    side_free(&sv);
    /* IK towards the wrong key: the server cannot decrypt the first message. */
    handshake(&cl, &sv, &s, 1, &s, 1, wrong, true);
    assert_int_equal(sv.err, PT_ERR_AUTH);
    side_free(&cl);
    side_free(&sv);
}

static void test_tamper_and_replay(void **state)
{
    (void)state;
    uint8_t rec[64];
    for (uint8_t suite = PT_SUITE_MIN; suite <= PT_SUITE_MAX; suite++) {
        side cl, sv;
        handshake(&cl, &sv, &suite, 1, &suite, 1, NULL, false);
        assert_true(pt_chan_established(sv.c));
        size_t n = make_rec(rec, 8, (const uint8_t *)"hello world", 11);
        assert_int_equal(pt_chan_seal(cl.c, &cl.out, rec, n), 0);
        pt_buf frame;
        pt_buf_init(&frame);
        assert_int_equal(pt_buf_append(&frame, cl.out.data, cl.out.len), 0);
        /* every bit of the record body (not the length prefix) */
        for (size_t bit = 8 * PT_CHAN_FRAME_HDR; bit < 8 * frame.len; bit++) {
            side c2, s2;
            handshake(&c2, &s2, &suite, 1, &suite, 1, NULL, false);
            pt_buf_reset(&c2.out);
            assert_int_equal(pt_chan_seal(c2.c, &c2.out, rec, n), 0);
            if (bit / 8 >= c2.out.len) { /* MTProto padding is random: shorter frame */
                side_free(&c2);
                side_free(&s2);
                continue;
            }
            c2.out.data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            move(&c2, &s2);
            if (s2.err == 0) fail_msg("suite %d: flipped bit %zu accepted", suite, bit);
            assert_int_equal(s2.nrec, 0);
            side_free(&c2);
            side_free(&s2);
            if (bit > 8 * PT_CHAN_FRAME_HDR + 600) bit += 7; /* sample long MTProto frames */
        }
        /* replay: deliver the same record twice */
        move(&cl, &sv);
        assert_int_equal(sv.err, 0);
        assert_int_equal(sv.nrec, 1);
        sv.err = pt_chan_input(sv.c, frame.data, frame.len, &sv.out, on_record, &sv);
        assert_true(sv.err == PT_ERR_AUTH || sv.err == PT_ERR_REPLAY);
        assert_int_equal(sv.nrec, 1);
        pt_buf_free(&frame);
        side_free(&cl);
        side_free(&sv);
    }
}

static void test_oversized_frame_not_allocated(void **state)
{
    (void)state;
    const uint8_t s = PT_SUITE_CHACHAPOLY_BLAKE2B;
    side cl, sv;
    handshake(&cl, &sv, &s, 1, &s, 1, NULL, false);
    uint8_t hdr[4];
    pt_put_u32le(hdr, 0x7fffffffu);
    int rc = pt_chan_input(sv.c, hdr, 4, &sv.out, on_record, &sv);
    assert_int_equal(rc, PT_ERR_TOO_BIG);
    assert_true(pt_chan_pending_input(sv.c) < 1024);
    side_free(&cl);
    side_free(&sv);
    /* during the handshake the limit is Noise's 65535 */
    side_init(&sv, true, &s, 1, NULL, false);
    uint8_t hello[] = {'P', 'T', 'K', 1, 1, 1, 1, 0, 0, 1, 0};
    rc = pt_chan_input(sv.c, hello, sizeof hello, &sv.out, on_record, &sv);
    assert_int_equal(rc, PT_ERR_TOO_BIG);
    side_free(&sv);
}

static void test_garbage(void **state)
{
    (void)state;
    const uint8_t s = PT_SUITE_CHACHAPOLY_BLAKE2B;
    side sv;
    /* before the handshake: not our magic */
    side_init(&sv, true, &s, 1, NULL, false);
    assert_int_equal(pt_chan_input(sv.c, (const uint8_t *)"GET / HTTP/1.1\r\n", 16, &sv.out,
                                   on_record, &sv), PT_ERR_DECODE);
    side_free(&sv);
    side_init(&sv, true, &s, 1, NULL, false);
    assert_int_equal(pt_chan_input(sv.c, (const uint8_t *)"X", 1, &sv.out, on_record, &sv),
                     PT_ERR_DECODE);
    side_free(&sv);
    /* bad version: the server says why before closing */
    side_init(&sv, true, &s, 1, NULL, false);
    const uint8_t v9[] = {'P', 'T', 'K', 9, 1, 1, 1};
    assert_int_equal(pt_chan_input(sv.c, v9, sizeof v9, &sv.out, on_record, &sv), PT_ERR_VERSION);
    assert_int_equal(sv.out.len, PT_CHAN_SERVER_HELLO_LEN);
    assert_int_equal(sv.out.data[4], PT_CHAN_STATUS_VERSION);
    side_free(&sv);
    /* within the handshake: random bytes in place of Noise message 1 and 3 */
    for (int which = 0; which < 2; which++) {
        side cl;
        side_init(&cl, false, &s, 1, NULL, false);
        side_init(&sv, true, &s, 1, NULL, false);
        assert_int_equal(pt_chan_start(cl.c, &cl.out), 0);
        move(&cl, &sv);
        move(&sv, &cl); /* client now has sent msg 1 */
        if (which == 1) {
            move(&cl, &sv);
            move(&sv, &cl); /* msg 2 read; msg 3 in cl.out */
        }
        assert_true(cl.out.len > 8);
        pt_random(cl.out.data + 4, cl.out.len - 4);
        pump(&cl, &sv);
        /* message 1 is a bare ephemeral key: the forgery shows when the client
         * cannot open message 2; a forged message 3 fails at the server */
        assert_int_equal(which == 0 ? cl.err : sv.err, PT_ERR_AUTH);
        assert_false(pt_chan_established(sv.c));
        side_free(&cl);
        side_free(&sv);
    }
}

static void test_suite_names(void **state)
{
    (void)state;
    uint8_t ids[8];
    assert_int_equal(pt_suite_list_parse("PT1-CHACHAPOLY-BLAKE2B,MTPROTO2-AES256IGE", ids, 8), 2);
    assert_int_equal(ids[0], PT_SUITE_CHACHAPOLY_BLAKE2B);
    assert_int_equal(ids[1], PT_SUITE_MTPROTO2);
    assert_int_equal(pt_suite_list_parse("PT1-CHACHAPOLY-BLAKE2B,", ids, 8), PT_ERR_INVAL);
    assert_int_equal(pt_suite_list_parse("NOPE", ids, 8), PT_ERR_INVAL);
    assert_int_equal(pt_suite_list_parse("PT1-AESGCM-SHA256,PT1-AESGCM-SHA256", ids, 8), PT_ERR_INVAL);
    for (int i = PT_SUITE_MIN; i <= PT_SUITE_MAX; i++)
        assert_int_equal(pt_suite_from_name(pt_suite_name(i)), i);
}

/* 1 when /proc/cpuinfo lists every flag in flags (space separated), 0 when not, -1
 * when it cannot be read. */
static int cpu_has(const char *flags)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return -1;
    char line[8192];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) != 0) continue;
        found = true;
        char want[64];
        snprintf(want, sizeof want, "%s", flags);
        for (char *save = NULL, *w = strtok_r(want, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
            char pat[32];
            snprintf(pat, sizeof pat, " %s", w);
            char *p = strstr(line, pat);
            if (!p || (p[strlen(pat)] != ' ' && p[strlen(pat)] != '\n')) found = false;
        }
        break;
    }
    fclose(f);
    return found;
}

/* The default order: AES-GCM first where the CPU has AES instructions. */
static void test_default_suites(void **state)
{
    (void)state;
    uint8_t got[PT_CHAN_MAX_SUITES];
    const uint8_t hw[] = {PT_SUITE_AESGCM_SHA256, PT_SUITE_CHACHAPOLY_BLAKE2B, PT_SUITE_AES256CTR_SHA384,
                          PT_SUITE_AES128CTR_SHA256, PT_SUITE_MTPROTO2};
    const uint8_t sw[] = {PT_SUITE_CHACHAPOLY_BLAKE2B, PT_SUITE_AESGCM_SHA256, PT_SUITE_AES256CTR_SHA384,
                          PT_SUITE_AES128CTR_SHA256, PT_SUITE_MTPROTO2};
    assert_int_equal(pt_suite_defaults_for(true, false, got), 5);
    assert_memory_equal(got, hw, 5);
    assert_int_equal(pt_suite_defaults_for(false, false, got), 5);
    assert_memory_equal(got, sw, 5);
    assert_int_equal(pt_suite_defaults_for(true, true, got), 2);
    assert_memory_equal(got, hw, 2);
    assert_int_equal(pt_suite_defaults_for(false, true, got), 2);
    assert_memory_equal(got, sw, 2);

#if defined(__x86_64__) || defined(__i386__)
    int flags = cpu_has("aes pclmulqdq");
    if (flags >= 0) assert_int_equal(pt_aead_aesgcm_hw(), flags);
#endif
    bool aes = pt_aead_aesgcm_hw();
    printf("this CPU: AES instructions %s\n", aes ? "yes, AES-GCM preferred" : "no, ChaCha20 preferred");
    size_t n = pt_suite_defaults(false, got);
    assert_int_equal(n, 5);
    assert_memory_equal(got, aes ? hw : sw, 5);

    /* a client and a server on the defaults agree on the first */
    side cl, sv;
    handshake(&cl, &sv, got, n, got, n, NULL, false);
    assert_true(pt_chan_established(cl.c));
    assert_int_equal(pt_chan_suite(cl.c), aes ? PT_SUITE_AESGCM_SHA256 : PT_SUITE_CHACHAPOLY_BLAKE2B);
    side_free(&cl);
    side_free(&sv);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    setup_keys();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_suite_names),
        cmocka_unit_test(test_default_suites),
        cmocka_unit_test(test_all_suites_roundtrip),
        cmocka_unit_test_setup_teardown(test_all_suites_roundtrip, pt_test_gcm_openssl,
                                        pt_test_gcm_default),
        cmocka_unit_test(test_server_preference_and_no_common_suite),
        cmocka_unit_test(test_downgrade_fails),
        cmocka_unit_test(test_pinned_key_mismatch),
        cmocka_unit_test(test_tamper_and_replay),
        cmocka_unit_test(test_oversized_frame_not_allocated),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
