/* Tests for the generated TL codecs (gen/pt_tl.[ch]), the wire runtime under
 * them (src/wire) and the generator itself (scripts/tlgen.py). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pt_tl.h"
#include "testutil.h"

static uint8_t arena_mem[1 << 16];

static pt_arena fresh_arena(void)
{
    pt_arena a;
    pt_arena_init(&a, arena_mem, sizeof arena_mem);
    return a;
}

static void assert_hex(const pt_buf *b, const char *hex)
{
    size_t n;
    uint8_t *want = pt_test_unhex(hex, &n);
    assert_int_equal(b->len, n);
    assert_memory_equal(b->data, want, n);
    free(want);
}

static pt_tl_bytes str(const char *s) { return (pt_tl_bytes){(const uint8_t *)s, (uint32_t)strlen(s)}; }

/* ---- one sample per constructor ------------------------------------------- */

static int64_t ids2[] = {1, 2};
static int64_t ids3[] = {INT64_MIN, -1, INT64_MAX};
static const uint8_t packed[] = {0x1f, 0x8b, 0x08, 0x00, 0x01};
static const uint8_t boxed_pong[] = {0xc5, 0x73, 0x77, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0};

static size_t make_samples(pt_tl_obj *s)
{
    size_t n = 0;
    memset(s, 0, 17 * sizeof *s);
    s[n].id = PT_TL_MSGS_ACK_ID;
    s[n++].u.msgs_ack.msg_ids = (pt_tl_vec_long){2, ids2};
    s[n].id = PT_TL_BAD_MSG_NOTIFICATION_ID;
    s[n++].u.bad_msg_notification = (pt_tl_bad_msg_notification){0x0123456789abcdefLL, 7, 16};
    s[n].id = PT_TL_BAD_SERVER_SALT_ID;
    s[n++].u.bad_server_salt = (pt_tl_bad_server_salt){-5, -6, 48, 0x1122334455667788LL};
    s[n].id = PT_TL_NEW_SESSION_CREATED_ID;
    s[n++].u.new_session_created = (pt_tl_new_session_created){1, 2, 3};
    s[n].id = PT_TL_MSGS_STATE_REQ_ID;
    s[n++].u.msgs_state_req.msg_ids = (pt_tl_vec_long){3, ids3};
    s[n].id = PT_TL_MSGS_STATE_INFO_ID;
    s[n++].u.msgs_state_info = (pt_tl_msgs_state_info){42, str("\x01\x02 \xc3\xa9t\xc3\xa9 \xf0\x9f\x93\xa6")};
    s[n].id = PT_TL_MSG_RESEND_REQ_ID;
    s[n++].u.msg_resend_req.msg_ids = (pt_tl_vec_long){0, NULL};
    s[n].id = PT_TL_GZIP_PACKED_ID;
    s[n++].u.gzip_packed.packed_data = (pt_tl_bytes){packed, sizeof packed};
    s[n].id = PT_TL_PING_ID;
    s[n++].u.ping.ping_id = 0x0102030405060708LL;
    s[n].id = PT_TL_PONG_ID;
    s[n++].u.pong = (pt_tl_pong){9, 0x0102030405060708LL};
    s[n].id = PT_TL_DESTROY_SESSION_ID;
    s[n++].u.destroy_session.session_id = -1;
    s[n].id = PT_TL_DESTROY_SESSION_OK_ID;
    s[n++].u.destroy_session_ok.session_id = 77;
    s[n].id = PT_TL_DESTROY_SESSION_NONE_ID;
    s[n++].u.destroy_session_none.session_id = 78;
    s[n].id = PT_TL_RPC_RESULT_ID;
    s[n++].u.rpc_result = (pt_tl_rpc_result){5, {boxed_pong, sizeof boxed_pong}};
    s[n].id = PT_TL_RPC_ERROR_ID;
    s[n++].u.rpc_error = (pt_tl_rpc_error){420, str("FLOOD_WAIT_3")};
    s[n].id = PT_TL_PT_ECHO_ID;
    s[n++].u.pt_echo.payload = str("hello");
    s[n].id = PT_TL_PT_ECHORESULT_ID;
    s[n++].u.pt_echoResult.payload = (pt_tl_bytes){NULL, 0};
    return n;
}

static bool bytes_eq(pt_tl_bytes x, pt_tl_bytes y)
{
    return x.len == y.len && (x.len == 0 || memcmp(x.data, y.data, x.len) == 0);
}

static bool vec_eq(pt_tl_vec_long x, pt_tl_vec_long y)
{
    return x.n == y.n && (x.n == 0 || memcmp(x.items, y.items, x.n * sizeof *x.items) == 0);
}

/* Field-by-field equality, so a round trip proves values, not just bytes. */
static bool obj_eq(const pt_tl_obj *x, const pt_tl_obj *y)
{
    if (x->id != y->id) return false;
    const pt_tl_obj *a = x, *b = y;
    switch (x->id) {
    case PT_TL_MSGS_ACK_ID:
        return vec_eq(a->u.msgs_ack.msg_ids, b->u.msgs_ack.msg_ids);
    case PT_TL_BAD_MSG_NOTIFICATION_ID:
        return a->u.bad_msg_notification.bad_msg_id == b->u.bad_msg_notification.bad_msg_id &&
               a->u.bad_msg_notification.bad_msg_seqno == b->u.bad_msg_notification.bad_msg_seqno &&
               a->u.bad_msg_notification.error_code == b->u.bad_msg_notification.error_code;
    case PT_TL_BAD_SERVER_SALT_ID:
        return a->u.bad_server_salt.bad_msg_id == b->u.bad_server_salt.bad_msg_id &&
               a->u.bad_server_salt.bad_msg_seqno == b->u.bad_server_salt.bad_msg_seqno &&
               a->u.bad_server_salt.error_code == b->u.bad_server_salt.error_code &&
               a->u.bad_server_salt.new_server_salt == b->u.bad_server_salt.new_server_salt;
    case PT_TL_NEW_SESSION_CREATED_ID:
        return a->u.new_session_created.first_msg_id == b->u.new_session_created.first_msg_id &&
               a->u.new_session_created.unique_id == b->u.new_session_created.unique_id &&
               a->u.new_session_created.server_salt == b->u.new_session_created.server_salt;
    case PT_TL_MSGS_STATE_REQ_ID:
        return vec_eq(a->u.msgs_state_req.msg_ids, b->u.msgs_state_req.msg_ids);
    case PT_TL_MSGS_STATE_INFO_ID:
        return a->u.msgs_state_info.req_msg_id == b->u.msgs_state_info.req_msg_id &&
               bytes_eq(a->u.msgs_state_info.info, b->u.msgs_state_info.info);
    case PT_TL_MSG_RESEND_REQ_ID:
        return vec_eq(a->u.msg_resend_req.msg_ids, b->u.msg_resend_req.msg_ids);
    case PT_TL_GZIP_PACKED_ID:
        return bytes_eq(a->u.gzip_packed.packed_data, b->u.gzip_packed.packed_data);
    case PT_TL_PING_ID:
        return a->u.ping.ping_id == b->u.ping.ping_id;
    case PT_TL_PONG_ID:
        return a->u.pong.msg_id == b->u.pong.msg_id && a->u.pong.ping_id == b->u.pong.ping_id;
    case PT_TL_DESTROY_SESSION_ID:
        return a->u.destroy_session.session_id == b->u.destroy_session.session_id;
    case PT_TL_DESTROY_SESSION_OK_ID:
        return a->u.destroy_session_ok.session_id == b->u.destroy_session_ok.session_id;
    case PT_TL_DESTROY_SESSION_NONE_ID:
        return a->u.destroy_session_none.session_id == b->u.destroy_session_none.session_id;
    case PT_TL_RPC_RESULT_ID:
        return a->u.rpc_result.req_msg_id == b->u.rpc_result.req_msg_id &&
               bytes_eq(a->u.rpc_result.result, b->u.rpc_result.result);
    case PT_TL_RPC_ERROR_ID:
        return a->u.rpc_error.error_code == b->u.rpc_error.error_code &&
               bytes_eq(a->u.rpc_error.error_message, b->u.rpc_error.error_message);
    case PT_TL_PT_ECHO_ID:
        return bytes_eq(a->u.pt_echo.payload, b->u.pt_echo.payload);
    case PT_TL_PT_ECHORESULT_ID:
        return bytes_eq(a->u.pt_echoResult.payload, b->u.pt_echoResult.payload);
    default:
        fail_msg("obj_eq: constructor %08x has no comparison; add one", x->id);
        return false;
    }
}

/* Decodes with the constructor's own decoder and re-encodes with its own
 * encoder: the typed API must agree with the generic one. */
#define TYPED(C, ID)                                                              \
    case ID: {                                                                    \
        pt_tl_##C v;                                                              \
        rc = pt_tl_##C##_decode(&v, buf, len, a);                                 \
        if (rc == 0) {                                                            \
            assert_int_equal(pt_tl_##C##_encode(out, &v), 0);                     \
            dec->id = ID;                                                         \
            dec->u.C = v;                                                         \
        }                                                                         \
        break;                                                                    \
    }

static int typed_roundtrip(uint32_t id, const uint8_t *buf, size_t len, pt_arena *a,
                           pt_buf *out, pt_tl_obj *dec)
{
    int rc = PT_ERR_INVAL;
    switch (id) {
        TYPED(msgs_ack, PT_TL_MSGS_ACK_ID)
        TYPED(bad_msg_notification, PT_TL_BAD_MSG_NOTIFICATION_ID)
        TYPED(bad_server_salt, PT_TL_BAD_SERVER_SALT_ID)
        TYPED(new_session_created, PT_TL_NEW_SESSION_CREATED_ID)
        TYPED(msgs_state_req, PT_TL_MSGS_STATE_REQ_ID)
        TYPED(msgs_state_info, PT_TL_MSGS_STATE_INFO_ID)
        TYPED(msg_resend_req, PT_TL_MSG_RESEND_REQ_ID)
        TYPED(gzip_packed, PT_TL_GZIP_PACKED_ID)
        TYPED(ping, PT_TL_PING_ID)
        TYPED(pong, PT_TL_PONG_ID)
        TYPED(destroy_session, PT_TL_DESTROY_SESSION_ID)
        TYPED(destroy_session_ok, PT_TL_DESTROY_SESSION_OK_ID)
        TYPED(destroy_session_none, PT_TL_DESTROY_SESSION_NONE_ID)
        TYPED(rpc_result, PT_TL_RPC_RESULT_ID)
        TYPED(rpc_error, PT_TL_RPC_ERROR_ID)
        TYPED(pt_echo, PT_TL_PT_ECHO_ID)
        TYPED(pt_echoResult, PT_TL_PT_ECHORESULT_ID)
    default:
        fail_msg("typed_roundtrip: constructor %08x missing; add it", id);
    }
    return rc;
}

static bool in_api(uint32_t id) { return id == PT_TL_PT_ECHO_ID || id == PT_TL_PT_ECHORESULT_ID; }

static void test_roundtrip_every_constructor(void **state)
{
    (void)state;
    pt_tl_obj s[17];
    size_t n = make_samples(s);
    assert_int_equal(n, 17);
    for (size_t i = 0; i < n; i++) {
        pt_buf enc, re, typed;
        pt_buf_init(&enc);
        pt_buf_init(&re);
        pt_buf_init(&typed);
        pt_arena a = fresh_arena();
        pt_tl_obj d;
        assert_non_null(pt_tl_name(s[i].id));
        assert_int_equal(pt_tl_encode_any(&enc, &s[i]), 0);
        assert_int_equal(pt_get_u32le(enc.data), s[i].id);

        assert_int_equal(pt_tl_decode_any(&d, enc.data, enc.len, &a), 0);
        assert_true(obj_eq(&s[i], &d));
        assert_int_equal(pt_tl_encode_any(&re, &d), 0);
        assert_int_equal(re.len, enc.len);
        assert_memory_equal(re.data, enc.data, enc.len);

        pt_arena_reset(&a);
        assert_int_equal(typed_roundtrip(s[i].id, enc.data, enc.len, &a, &typed, &d), 0);
        assert_true(obj_eq(&s[i], &d));
        assert_int_equal(typed.len, enc.len);
        assert_memory_equal(typed.data, enc.data, enc.len);

        /* Each family decoder takes its own constructors and only those. */
        pt_arena_reset(&a);
        int rs = pt_tl_decode_service(&d, enc.data, enc.len, &a);
        int ra = pt_tl_decode_api(&d, enc.data, enc.len, &a);
        assert_int_equal(rs, in_api(s[i].id) ? PT_ERR_DECODE : 0);
        assert_int_equal(ra, in_api(s[i].id) ? 0 : PT_ERR_DECODE);
        pt_buf_free(&enc);
        pt_buf_free(&re);
        pt_buf_free(&typed);
    }
}

static void test_truncation_and_trailing(void **state)
{
    (void)state;
    pt_tl_obj s[17];
    size_t n = make_samples(s);
    for (size_t i = 0; i < n; i++) {
        pt_buf enc;
        pt_buf_init(&enc);
        assert_int_equal(pt_tl_encode_any(&enc, &s[i]), 0);
        pt_arena a = fresh_arena();
        pt_tl_obj d;
        pt_buf other;
        pt_buf_init(&other);
        bool open = s[i].id == PT_TL_RPC_RESULT_ID; /* Object takes the rest */
        for (size_t k = 0; k < enc.len; k++) {
            /* rpc_result: a shorter 4-aligned Object (at least its id) is valid. */
            if (open && k >= 16 && k % 4 == 0) continue;
            int rc = pt_tl_decode_any(&d, enc.data, k, &a);
            if (rc != PT_ERR_DECODE) fail_msg("%s: prefix of %zu/%zu bytes gave %d",
                                              pt_tl_name(s[i].id), k, enc.len, rc);
            assert_int_equal(typed_roundtrip(s[i].id, enc.data, k, &a, &other, &d), PT_ERR_DECODE);
            assert_int_equal(a.used, 0);
        }
        /* Trailing garbage: one byte, and one whole word. */
        assert_non_null(pt_buf_extend(&enc, 1));
        enc.data[enc.len - 1] = 0;
        assert_int_equal(pt_tl_decode_any(&d, enc.data, enc.len, &a), PT_ERR_DECODE);
        assert_int_equal(typed_roundtrip(s[i].id, enc.data, enc.len, &a, &other, &d), PT_ERR_DECODE);
        assert_non_null(pt_buf_extend(&enc, 3));
        memset(enc.data + enc.len - 4, 0, 4);
        assert_int_equal(pt_tl_decode_any(&d, enc.data, enc.len, &a), open ? 0 : PT_ERR_DECODE);
        assert_int_equal(other.len, 0); /* no failed decode produced anything to encode */
        pt_buf_free(&enc);
        pt_buf_free(&other);
    }
}

/* ---- known answers ---------------------------------------------------------- */

static void test_known_answers(void **state)
{
    (void)state;
    pt_buf b;
    pt_buf_init(&b);

    pt_tl_msgs_ack ack = {{2, ids2}};
    assert_int_equal(pt_tl_msgs_ack_encode(&b, &ack), 0);
    assert_hex(&b, "59b4d662" "15c4b51c" "02000000" "0100000000000000" "0200000000000000");

    pt_buf_reset(&b);
    pt_tl_ping ping = {0x0102030405060708LL};
    assert_int_equal(pt_tl_ping_encode(&b, &ping), 0);
    assert_hex(&b, "ec77be7a" "0807060504030201");

    pt_buf_reset(&b);
    pt_tl_pong pong = {0x5e0b700000000000LL, 0x0102030405060708LL};
    assert_int_equal(pt_tl_pong_encode(&b, &pong), 0);
    assert_hex(&b, "c5737734" "0000000000700b5e" "0807060504030201");

    pt_buf_reset(&b);
    pt_tl_bad_server_salt salt = {1, 2, 48, -1};
    assert_int_equal(pt_tl_bad_server_salt_encode(&b, &salt), 0);
    assert_hex(&b, "7b44abed" "0100000000000000" "02000000" "30000000" "ffffffffffffffff");

    pt_buf_reset(&b);
    pt_tl_rpc_error err = {400, str("BAD")};
    assert_int_equal(pt_tl_rpc_error_encode(&b, &err), 0);
    assert_hex(&b, "19ca4421" "90010000" "03424144");

    pt_buf_reset(&b);
    pt_tl_rpc_result res = {7, {boxed_pong, sizeof boxed_pong}};
    assert_int_equal(pt_tl_rpc_result_encode(&b, &res), 0);
    assert_hex(&b, "016d5cf3" "0700000000000000"
                   "c5737734" "0100000000000000" "0200000000000000");

    pt_buf_reset(&b);
    pt_tl_gzip_packed gz = {{packed, sizeof packed}};
    assert_int_equal(pt_tl_gzip_packed_encode(&b, &gz), 0);
    assert_hex(&b, "a1cf7230" "051f8b08" "00010000");

    assert_string_equal(pt_tl_name(PT_TL_MSGS_ACK_ID), "msgs_ack");
    assert_string_equal(pt_tl_name(PT_TL_PT_ECHORESULT_ID), "pt.echoResult");
    assert_null(pt_tl_name(0xdeadbeefu));
    assert_null(pt_tl_name(PT_WIRE_VECTOR_ID));
    pt_buf_free(&b);
}

/* Runs a Python expression through /usr/bin/python3 and returns its integer output. */
static unsigned long python_int(const char *expr)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c 'import zlib; print(%s)'", expr);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    unsigned long v = 0;
    assert_int_equal(fscanf(p, "%lu", &v), 1);
    assert_int_equal(pclose(p), 0);
    return v;
}

static void test_crc32_ids(void **state)
{
    (void)state;
    /* TL normalisation: no id, single spaces, field type bytes spelled string. */
    assert_int_equal(PT_TL_PT_ECHO_ID,
                     python_int("zlib.crc32(b\"pt.echo payload:string = pt.EchoResult\")"));
    assert_int_equal(PT_TL_PT_ECHORESULT_ID,
                     python_int("zlib.crc32(b\"pt.echoResult payload:string = pt.EchoResult\")"));
    /* The schema's explicit MTProto ids follow the same rule. */
    assert_int_equal(PT_TL_GZIP_PACKED_ID,
                     python_int("zlib.crc32(b\"gzip_packed packed_data:string = Object\")"));
    assert_int_equal(PT_TL_MSGS_ACK_ID,
                     python_int("zlib.crc32(b\"msgs_ack msg_ids:Vector long = MsgsAck\")"));
}

/* ---- bytes / string ------------------------------------------------------------ */

static void test_bytes_forms(void **state)
{
    (void)state;
    static const size_t lens[] = {0, 1, 2, 3, 4, 5, 252, 253, 254, 255, 256, 300, 1000, 70000};
    static uint8_t data[70000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 7 + 1);
    for (size_t i = 0; i < PT_ARRAY_LEN(lens); i++) {
        size_t n = lens[i];
        pt_buf b;
        pt_buf_init(&b);
        pt_tl_pt_echo e = {{data, (uint32_t)n}}, d;
        assert_int_equal(pt_tl_pt_echo_encode(&b, &e), 0);
        size_t head = n <= 253 ? 1 : 4;
        size_t body = (head + n + 3) / 4 * 4;
        assert_int_equal(b.len, 4 + body);
        const uint8_t *p = b.data + 4;
        if (head == 1) {
            assert_int_equal(p[0], n);
        } else {
            assert_int_equal(p[0], 254);
            assert_int_equal(p[1] | p[2] << 8 | p[3] << 16, n);
        }
        assert_memory_equal(p + head, data, n);
        for (size_t k = head + n; k < body; k++) assert_int_equal(p[k], 0);
        pt_arena a = fresh_arena();
        assert_int_equal(pt_tl_pt_echo_decode(&d, b.data, b.len, &a), 0);
        assert_int_equal(d.payload.len, n);
        assert_ptr_equal(d.payload.data, b.data + 4 + head); /* zero-copy */
        assert_int_equal(a.used, 0);
        pt_buf_free(&b);
    }

    /* Exact bytes: the 1-byte form pads 1+len to 4, the long form pads 4+len. */
    pt_buf b;
    pt_buf_init(&b);
    pt_tl_pt_echo e = {str("ab")};
    assert_int_equal(pt_tl_pt_echo_encode(&b, &e), 0);
    assert_hex(&b, "4a10284b" "02616200");
    pt_buf_reset(&b);
    e.payload = str("abcd");
    assert_int_equal(pt_tl_pt_echo_encode(&b, &e), 0);
    assert_hex(&b, "4a10284b" "04616263" "64000000");
    pt_buf_free(&b);
}

static int decode_echo_hex(const char *hex)
{
    size_t n;
    uint8_t *buf = pt_test_unhex(hex, &n);
    pt_arena a = fresh_arena();
    pt_tl_pt_echo d;
    int rc = pt_tl_pt_echo_decode(&d, buf, n, &a);
    free(buf);
    return rc;
}

static void test_reject_bad_bytes(void **state)
{
    (void)state;
    assert_int_equal(decode_echo_hex("4a10284b" "02616200"), 0);
    assert_int_equal(decode_echo_hex("4a10284b" "02616201"), PT_ERR_DECODE);          /* padding */
    assert_int_equal(decode_echo_hex("4a10284b" "01610080"), PT_ERR_DECODE);          /* padding */
    assert_int_equal(decode_echo_hex("4a10284b" "03616263"), 0);                      /* no padding */
    assert_int_equal(decode_echo_hex("4a10284b" "05616263"), PT_ERR_DECODE);          /* too long */
    /* Long form for a length that fits the short one: non-canonical. */
    assert_int_equal(decode_echo_hex("4a10284b" "fe050000" "6162636465000000"), PT_ERR_DECODE);
    assert_int_equal(decode_echo_hex("4a10284b" "fe000000"), PT_ERR_DECODE);
    assert_int_equal(decode_echo_hex("4a10284b" "ff050000" "6162636465000000"), PT_ERR_DECODE);
    assert_int_equal(decode_echo_hex("4a10284b" "fefd0000"), PT_ERR_DECODE);
    /* Long form with a huge length and nothing behind it. */
    assert_int_equal(decode_echo_hex("4a10284b" "feffffff"), PT_ERR_DECODE);

    /* 254 bytes: canonical long form; a non-zero pad byte is still rejected. */
    size_t n = 4 + 4 + 254 + 2;
    uint8_t *buf = calloc(1, n);
    assert_non_null(buf);
    pt_put_u32le(buf, PT_TL_PT_ECHO_ID);
    buf[4] = 254;
    buf[5] = 254;
    pt_arena a = fresh_arena();
    pt_tl_pt_echo d;
    assert_int_equal(pt_tl_pt_echo_decode(&d, buf, n, &a), 0);
    buf[n - 1] = 1;
    assert_int_equal(pt_tl_pt_echo_decode(&d, buf, n, &a), PT_ERR_DECODE);
    free(buf);
}

static int decode_state_info(const char *s, size_t len)
{
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_wire_put_u32(&b, PT_TL_MSGS_STATE_INFO_ID), 0);
    assert_int_equal(pt_wire_put_i64(&b, 1), 0);
    pt_tl_bytes v = {(const uint8_t *)s, (uint32_t)len};
    assert_int_equal(pt_wire_put_bytes(&b, &v), 0); /* bytes: no UTF-8 check on the way out */
    pt_arena a = fresh_arena();
    pt_tl_msgs_state_info d;
    int rc = pt_tl_msgs_state_info_decode(&d, b.data, b.len, &a);
    pt_buf_free(&b);
    return rc;
}

static void test_reject_invalid_utf8(void **state)
{
    (void)state;
    static const char *bad[] = {
        "\xff", "\x80", "a\xc3", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xed\xa0\x80",
        "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80", "\xe2\x82", "ok\xf0\x9f\x93",
    };
    static const char *good[] = {"", "plain", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x93\xa6",
                                 "\xed\x9f\xbf", "\xee\x80\x80", "\xf4\x8f\xbf\xbf"};
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        assert_int_equal(decode_state_info(bad[i], strlen(bad[i])), PT_ERR_DECODE);
        assert_false(pt_wire_utf8_valid((const uint8_t *)bad[i], strlen(bad[i])));
    }
    for (size_t i = 0; i < PT_ARRAY_LEN(good); i++)
        assert_int_equal(decode_state_info(good[i], strlen(good[i])), 0);
    /* NUL is valid UTF-8 and allowed. */
    assert_int_equal(decode_state_info("a\0b", 3), 0);

    /* The encoder refuses what the decoder would refuse, and leaves out as it was. */
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_buf_append(&b, "keep", 4), 0);
    pt_tl_rpc_error err = {1, str("\xc0\x80")};
    assert_int_equal(pt_tl_rpc_error_encode(&b, &err), PT_ERR_INVAL);
    assert_int_equal(b.len, 4);
    pt_buf_free(&b);
}

/* ---- vectors, ids, arena ------------------------------------------------------ */

static void test_reject_vector_count(void **state)
{
    (void)state;
    static const uint32_t counts[] = {3, 1000, 0x10000000u, 0xffffffffu};
    for (size_t i = 0; i < PT_ARRAY_LEN(counts); i++) {
        pt_buf b;
        pt_buf_init(&b);
        assert_int_equal(pt_wire_put_u32(&b, PT_TL_MSGS_ACK_ID), 0);
        assert_int_equal(pt_wire_put_vector(&b, counts[i]), 0);
        assert_int_equal(pt_wire_put_i64(&b, 1), 0);
        assert_int_equal(pt_wire_put_i64(&b, 2), 0);
        /* A small arena: a decoder that allocated before checking would say
         * TOO_BIG; the count check must say DECODE first. */
        uint8_t small[64];
        pt_arena a;
        pt_arena_init(&a, small, sizeof small);
        pt_tl_msgs_ack d;
        assert_int_equal(pt_tl_msgs_ack_decode(&d, b.data, b.len, &a), PT_ERR_DECODE);
        assert_int_equal(a.used, 0);
        pt_buf_free(&b);
    }
    /* The check itself: two longs justify a count of 2, not 3. */
    uint8_t in[8 + 16] = {0};
    pt_put_u32le(in, PT_WIRE_VECTOR_ID);
    pt_put_u32le(in + 4, 3);
    pt_arena a = fresh_arena();
    pt_wire_reader r;
    uint32_t n;
    pt_wire_reader_init(&r, in, sizeof in, &a);
    assert_int_equal(pt_wire_get_vector(&r, &n, 8), PT_ERR_DECODE);
    pt_put_u32le(in + 4, 2);
    pt_wire_reader_init(&r, in, sizeof in, &a);
    assert_int_equal(pt_wire_get_vector(&r, &n, 8), 0);
    assert_int_equal(n, 2);
    /* A wrong vector id. */
    pt_put_u32le(in, PT_WIRE_VECTOR_ID + 1);
    pt_wire_reader_init(&r, in, sizeof in, &a);
    assert_int_equal(pt_wire_get_vector(&r, &n, 8), PT_ERR_DECODE);
}

static void test_reject_wrong_id(void **state)
{
    (void)state;
    pt_buf b;
    pt_buf_init(&b);
    pt_tl_pong pong = {1, 2};
    assert_int_equal(pt_tl_pong_encode(&b, &pong), 0);
    pt_arena a = fresh_arena();
    pt_tl_ping ping;
    pt_tl_obj o;
    /* pong's body is ping's plus 8 bytes; the id must still decide. */
    assert_int_equal(pt_tl_ping_decode(&ping, b.data, 12, &a), PT_ERR_DECODE);
    assert_int_equal(pt_tl_decode_api(&o, b.data, b.len, &a), PT_ERR_DECODE);
    pt_put_u32le(b.data, 0xdeadbeefu);
    assert_int_equal(pt_tl_decode_any(&o, b.data, b.len, &a), PT_ERR_DECODE);
    assert_int_equal(pt_tl_decode_service(&o, b.data, b.len, &a), PT_ERR_DECODE);
    pt_put_u32le(b.data, PT_WIRE_VECTOR_ID);
    assert_int_equal(pt_tl_decode_any(&o, b.data, b.len, &a), PT_ERR_DECODE);

    pt_buf_reset(&b);
    pt_tl_pt_echo e = {str("x")};
    assert_int_equal(pt_tl_pt_echo_encode(&b, &e), 0);
    assert_int_equal(pt_tl_decode_service(&o, b.data, b.len, &a), PT_ERR_DECODE);
    assert_int_equal(pt_tl_decode_api(&o, b.data, b.len, &a), 0);
    assert_int_equal(o.id, PT_TL_PT_ECHO_ID);

    /* msgs_ack whose vector is not boxed with the vector id. */
    pt_buf_reset(&b);
    pt_tl_msgs_ack ack = {{2, ids2}};
    assert_int_equal(pt_tl_msgs_ack_encode(&b, &ack), 0);
    pt_put_u32le(b.data + 4, 0x1cb5c416u);
    assert_int_equal(pt_tl_decode_service(&o, b.data, b.len, &a), PT_ERR_DECODE);

    /* An unknown id cannot be encoded either. */
    memset(&o, 0, sizeof o);
    o.id = 0xdeadbeefu;
    pt_buf_reset(&b);
    assert_int_equal(pt_tl_encode_any(&b, &o), PT_ERR_INVAL);
    assert_int_equal(b.len, 0);
    pt_buf_free(&b);
}

static void test_arena(void **state)
{
    (void)state;
    int64_t ids[100];
    for (int i = 0; i < 100; i++) ids[i] = i * 1000003;
    pt_tl_msgs_ack ack = {{100, ids}}, d;
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_tl_msgs_ack_encode(&b, &ack), 0);

    /* 800 bytes of items do not fit in 799 (+ alignment slack). */
    static uint8_t mem[1024] __attribute__((aligned(8)));
    pt_arena a;
    pt_arena_init(&a, mem, 799);
    memset(&d, 0xaa, sizeof d);
    assert_int_equal(pt_tl_msgs_ack_decode(&d, b.data, b.len, &a), PT_ERR_TOO_BIG);
    assert_int_equal(a.used, 0);
    assert_int_equal(d.msg_ids.n, 0); /* zeroed on error */
    assert_null(d.msg_ids.items);
    pt_tl_obj o;
    assert_int_equal(pt_tl_decode_any(&o, b.data, b.len, &a), PT_ERR_TOO_BIG);

    pt_arena_init(&a, mem, 800);
    assert_int_equal(pt_tl_msgs_ack_decode(&d, b.data, b.len, &a), 0);
    assert_int_equal(a.used, 800);
    assert_memory_equal(d.msg_ids.items, ids, sizeof ids);

    /* A misaligned base still yields 8-aligned items. */
    pt_arena_init(&a, mem + 1, sizeof mem - 1);
    assert_int_equal(pt_tl_msgs_ack_decode(&d, b.data, b.len, &a), 0);
    assert_int_equal((uintptr_t)d.msg_ids.items % 8, 0);
    assert_int_equal(a.used, 807);

    /* The allocator itself. */
    pt_arena_init(&a, mem, 16);
    uint8_t *p1 = pt_arena_alloc(&a, 1, 1);
    uint8_t *p2 = pt_arena_alloc(&a, 1, 8);
    assert_ptr_equal(p1, mem);
    assert_ptr_equal(p2, mem + 8);
    assert_null(pt_arena_alloc(&a, 1, 1));
    assert_null(pt_arena_alloc(&a, SIZE_MAX / 2, 4)); /* overflow */
    assert_null(pt_arena_alloc(&a, 0, 4));
    pt_arena_reset(&a);
    assert_non_null(pt_arena_alloc(&a, 2, 8));
    pt_buf_free(&b);
}

static void test_encode_limits(void **state)
{
    (void)state;
    pt_buf b;
    pt_buf_init(&b);
    assert_int_equal(pt_buf_append(&b, "keep", 4), 0);
    /* Object must look like a boxed value: at least an id, whole words. */
    static const uint8_t six[6] = {1, 2, 3, 4, 5, 6};
    pt_tl_rpc_result res = {1, {six, 6}};
    assert_int_equal(pt_tl_rpc_result_encode(&b, &res), PT_ERR_INVAL);
    res.result.len = 0;
    assert_int_equal(pt_tl_rpc_result_encode(&b, &res), PT_ERR_INVAL);
    assert_int_equal(b.len, 4);
    /* 2^24 bytes do not fit TL's 3-byte length; refused before reading data. */
    pt_tl_pt_echo e = {{six, 1u << 24}};
    assert_int_equal(pt_tl_pt_echo_encode(&b, &e), PT_ERR_TOO_BIG);
    assert_int_equal(b.len, 4);
    /* Object on the decode side: a partial word after the fixed fields. */
    uint8_t in[4 + 8 + 6] = {0};
    pt_put_u32le(in, PT_TL_RPC_RESULT_ID);
    pt_arena a = fresh_arena();
    pt_tl_rpc_result d;
    assert_int_equal(pt_tl_rpc_result_decode(&d, in, sizeof in, &a), PT_ERR_DECODE);
    assert_int_equal(pt_tl_rpc_result_decode(&d, in, 16, &a), 0);
    assert_int_equal(d.result.len, 4);
    assert_ptr_equal(d.result.data, in + 12);
    pt_buf_free(&b);
}

static void test_depth_limit(void **state)
{
    (void)state;
    /* The schema has no recursive type yet; the runtime enforces the cap. */
    pt_arena a = fresh_arena();
    pt_wire_reader r;
    pt_wire_reader_init(&r, NULL, 0, &a);
    for (int i = 0; i < PT_TL_MAX_DEPTH; i++) assert_int_equal(pt_wire_enter(&r), 0);
    assert_int_equal(pt_wire_enter(&r), PT_ERR_TOO_BIG);
    pt_wire_leave(&r);
    assert_int_equal(pt_wire_enter(&r), 0);
    /* Empty input decodes to nothing. */
    pt_tl_obj o;
    assert_int_equal(pt_tl_decode_any(&o, NULL, 0, &a), PT_ERR_DECODE);
}

/* ---- the generator ------------------------------------------------------------- */

typedef struct gen_dir {
    char dir[64];
    char schema[128];
    char errlog[128];
} gen_dir;

/* Runs tlgen.py on `text`; returns its exit status and leaves stderr in g->errlog. */
static int run_tlgen(gen_dir *g, const char *text)
{
    const char *src = getenv("PT_SOURCE_DIR");
    assert_non_null(src);
    FILE *f = fopen(g->schema, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/scripts/tlgen.py' '%s' '%s/out' 2>'%s'",
             src, g->schema, g->dir, g->errlog);
    int st = system(cmd);
    assert_true(st != -1 && WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* Skips the test when ctest's PT_SOURCE_DIR is not set (a manual run). */
static void gen_dir_open(gen_dir *g)
{
    if (!getenv("PT_SOURCE_DIR")) skip();
    snprintf(g->dir, sizeof g->dir, "/tmp/pt_tlgen_XXXXXX");
    assert_non_null(mkdtemp(g->dir));
    snprintf(g->schema, sizeof g->schema, "%s/s.tl", g->dir);
    snprintf(g->errlog, sizeof g->errlog, "%s/err", g->dir);
}

static void gen_dir_close(gen_dir *g)
{
    char p[160];
    snprintf(p, sizeof p, "%s/out/pt_tl.h", g->dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/out/pt_tl.c", g->dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/out", g->dir);
    rmdir(p);
    unlink(g->schema);
    unlink(g->errlog);
    rmdir(g->dir);
}

static void test_tlgen_rejects_bad_schemas(void **state)
{
    (void)state;
    static const struct {
        const char *why, *text, *where;
    } bad[] = {
        {"no ';'", "// @family a\nfoo x:int = Foo\n", ":2:"},
        {"no '='", "// @family a\nfoo x:int Foo;\n", ":2:"},
        {"two results", "// @family a\nfoo x:int = Foo Bar;\n", ":2:"},
        {"duplicate id", "// @family a\nfoo#1 x:int = Foo;\nbar#1 y:int = Foo;\n", ":3:"},
        {"duplicate name", "// @family a\nfoo x:int = Foo;\nfoo y:int = Foo;\n", ":3:"},
        {"unknown type", "// @family a\nfoo x:Nope = Foo;\n", ":2:"},
        {"Object not last", "// @family a\n\nfoo x:Object y:int = Foo;\n", ":3:"},
        {"bad hex id", "// @family a\nfoo#xyz x:int = Foo;\n", ":2:"},
        {"id of vector", "// @family a\nfoo#1cb5c415 x:int = Foo;\n", ":2:"},
        {"bad field", "// @family a\nfoo x = Foo;\n", ":2:"},
        {"duplicate field", "// @family a\nfoo x:int x:long = Foo;\n", ":2:"},
        {"flags", "// @family a\nfoo f:# x:f.0?int = Foo;\n", ":2:"},
        {"outside a family", "foo x:int = Foo;\n", ":1:"},
        {"empty family", "// @family a\n// @family b\nfoo x:int = Foo;\n", ":1:"},
        {"unknown directive", "// @famly a\nfoo x:int = Foo;\n", ":1:"},
        {"no base case", "// @family a\nfoo x:Foo = Foo;\n", ":2:"},
        {"C name clash", "// @family a\nfoo_bar x:int = Foo;\nfoo.bar x:long = Foo;\n", ":3:"},
        {"empty schema", "// nothing\n", ":"},
    };
    gen_dir g;
    gen_dir_open(&g);
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        int rc = run_tlgen(&g, bad[i].text);
        char *err = pt_test_read_file(g.errlog, NULL);
        assert_non_null(err);
        if (rc == 0 || !strstr(err, bad[i].where) || !strstr(err, "error"))
            fail_msg("%s: exit %d, stderr: %s", bad[i].why, rc, err);
        free(err);
    }
    /* The harness itself works: a good schema passes. */
    assert_int_equal(run_tlgen(&g, "// @family a\nfoo x:int = Foo;\n"), 0);
    gen_dir_close(&g);
}

/* Ids left to the CRC32 rule must come out as the MTProto ids. */
static void test_tlgen_crc_rule_matches_mtproto(void **state)
{
    (void)state;
    gen_dir g;
    gen_dir_open(&g);
    assert_int_equal(run_tlgen(&g, "// @family mt\n"
                                   "msgs_ack msg_ids:Vector<long> = MsgsAck;\n"
                                   "gzip_packed packed_data:bytes = Object;\n"
                                   "msgs_state_info req_msg_id:long info:string = MsgsStateInfo;\n"
                                   "rpc_result req_msg_id:long result:Object = RpcResult;\n"
                                   "bad_server_salt bad_msg_id:long bad_msg_seqno:int\n"
                                   "    error_code:int new_server_salt:long = BadMsgNotification;\n"),
                     0);
    char path[160];
    snprintf(path, sizeof path, "%s/out/pt_tl.h", g.dir);
    char *h = pt_test_read_file(path, NULL);
    assert_non_null(h);
    assert_non_null(strstr(h, "0x62d6b459u /* msgs_ack"));
    assert_non_null(strstr(h, "0x3072cfa1u /* gzip_packed"));
    assert_non_null(strstr(h, "0x04deb57du /* msgs_state_info"));
    assert_non_null(strstr(h, "0xf35c6d01u /* rpc_result"));
    assert_non_null(strstr(h, "0xedab447bu /* bad_server_salt"));
    free(h);
    gen_dir_close(&g);
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_constructor),
        cmocka_unit_test(test_truncation_and_trailing),
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_crc32_ids),
        cmocka_unit_test(test_bytes_forms),
        cmocka_unit_test(test_reject_bad_bytes),
        cmocka_unit_test(test_reject_invalid_utf8),
        cmocka_unit_test(test_reject_vector_count),
        cmocka_unit_test(test_reject_wrong_id),
        cmocka_unit_test(test_arena),
        cmocka_unit_test(test_encode_limits),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_tlgen_rejects_bad_schemas),
        cmocka_unit_test(test_tlgen_crc_rule_matches_mtproto),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
