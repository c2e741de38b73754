/* The friend handshake and the client-to-client messages between two devices. */
#include <stdio.h>

#include "e2e/pt_chat.h"
#include "e2e/pt_megolm.h"
#include "testutil.h"

typedef struct dev {
    pt_olm_account *acct;
    pt_chat *chat;
    uint8_t id[32], ed[32];
} dev;

static void dev_new(dev *d, uint8_t suites)
{
    pt_err err = 0;
    d->acct = pt_olm_account_new(pt_env_default(), suites, &err);
    assert_non_null(d->acct);
    assert_int_equal(pt_olm_account_generate_one_time_keys(d->acct, pt_env_default(), 5), 0);
    d->chat = pt_chat_new(pt_env_default(), d->acct);
    assert_non_null(d->chat);
    pt_olm_account_identity(d->acct, d->id, d->ed);
}

static void dev_free(dev *d)
{
    pt_chat_free(d->chat);
    pt_olm_account_free(d->acct);
}

static uint32_t first_key(dev *d)
{
    pt_olm_key k;
    assert_int_equal(pt_olm_account_unpublished_keys(d->acct, &k, 1), 1);
    return k.id;
}

/* Delivers env to d; returns the event; the reply (if any) is left in reply. */
static pt_chat_event deliver(dev *d, const pt_buf *env, pt_buf *reply)
{
    pt_chat_event ev;
    pt_buf_reset(reply);
    assert_int_equal(pt_chat_receive(d->chat, env->data, env->len, &ev, reply), 0);
    return ev;
}

/* alice asks, bob accepts: both have a session. */
static void befriend(dev *a, dev *b, int want_suite)
{
    pt_buf env, reply;
    pt_buf_init(&env);
    pt_buf_init(&reply);
    assert_int_equal(pt_chat_friend_request(a->chat, first_key(a), "hi, it's alice", &env), 0);
    pt_chat_event ev = deliver(b, &env, &reply);
    assert_int_equal(ev.type, PT_CHAT_EV_FRIEND_REQUEST);
    assert_int_equal(ev.len, 14);
    assert_memory_equal(ev.text, "hi, it's alice", 14);
    assert_memory_equal(ev.peer, a->id, 32);
    assert_memory_equal(ev.peer_signing, a->ed, 32);
    pt_buf acc;
    pt_buf_init(&acc);
    assert_int_equal(pt_chat_friend_accept(b->chat, env.data, env.len, &acc), 0);
    assert_true(pt_chat_has_session(b->chat, a->id));
    ev = deliver(a, &acc, &reply);
    assert_int_equal(ev.type, PT_CHAT_EV_FRIEND_ACCEPTED);
    assert_int_equal(ev.suite, want_suite);
    assert_memory_equal(ev.peer_signing, b->ed, 32);
    assert_true(pt_chat_has_session(a->chat, b->id));
    pt_buf_free(&env);
    pt_buf_free(&acc);
    pt_buf_free(&reply);
}

static void converse(dev *a, dev *b, int rounds)
{
    pt_buf env, reply, back;
    pt_buf_init(&env);
    pt_buf_init(&reply);
    pt_buf_init(&back);
    for (int i = 0; i < rounds; i++) {
        dev *from = i % 3 == 2 ? b : a, *to = from == a ? b : a;
        char text[64];
        int n = snprintf(text, sizeof text, "message %d from %s \xf0\x9f\x98\x80", i, from == a ? "alice" : "bob");
        uint8_t id[16];
        pt_buf_reset(&env);
        assert_int_equal(pt_chat_send(from->chat, to->id, (const uint8_t *)text, (size_t)n, id, &env), 0);
        pt_chat_event ev = deliver(to, &env, &reply);
        assert_int_equal(ev.type, PT_CHAT_EV_MESSAGE);
        assert_int_equal(ev.len, (size_t)n);
        assert_memory_equal(ev.text, text, (size_t)n);
        assert_memory_equal(ev.msg_id, id, 16);
        assert_true(reply.len > 0);
        /* the ACK goes back and names the message, code 0 */
        ev = deliver(from, &reply, &back);
        assert_int_equal(ev.type, PT_CHAT_EV_ACK);
        assert_memory_equal(ev.msg_id, id, 16);
        assert_int_equal(ev.code, PT_CHAT_ACK_ACCEPTED);
        assert_int_equal(back.len, 0);
    }
    pt_buf_free(&env);
    pt_buf_free(&reply);
    pt_buf_free(&back);
}

static void test_handshake_and_messages(void **state)
{
    (void)state;
    const uint8_t suites[3] = {PT_OLM_SUITES_ALL, PT_OLM_SUITE_OLM_V1, PT_OLM_SUITES_ALL};
    const uint8_t other[3] = {PT_OLM_SUITES_ALL, PT_OLM_SUITES_ALL, PT_OLM_SUITE_OLM_V1};
    const int want[3] = {PT_OLM_SUITE_PT_V1, PT_OLM_SUITE_OLM_V1, PT_OLM_SUITE_OLM_V1};
    for (int k = 0; k < 3; k++) {
        dev a, b;
        dev_new(&a, suites[k]);
        dev_new(&b, other[k]);
        befriend(&a, &b, want[k]); /* pt.v1 when both have it, else olm.v1 */
        converse(&a, &b, 60);
        dev_free(&a);
        dev_free(&b);
    }
}

static void test_deny_replay_unknown_tamper(void **state)
{
    (void)state;
    dev a, b, c;
    dev_new(&a, PT_OLM_SUITES_ALL);
    dev_new(&b, PT_OLM_SUITES_ALL);
    dev_new(&c, PT_OLM_SUITES_ALL);
    pt_buf env, reply;
    pt_buf_init(&env);
    pt_buf_init(&reply);
    /* a denial carries nothing but the header */
    assert_int_equal(pt_chat_friend_deny(c.chat, &env), 0);
    assert_int_equal(env.len, PT_CHAT_HDR_LEN);
    assert_int_equal(deliver(&a, &env, &reply).type, PT_CHAT_EV_FRIEND_DENIED);

    befriend(&a, &b, PT_OLM_SUITE_PT_V1);
    uint8_t id[16];
    pt_buf_reset(&env);
    assert_int_equal(pt_chat_send(a.chat, b.id, (const uint8_t *)"once", 4, id, &env), 0);
    assert_int_equal(deliver(&b, &env, &reply).type, PT_CHAT_EV_MESSAGE);
    /* the same envelope again: refused, never shown twice */
    pt_chat_event ev = deliver(&b, &env, &reply);
    assert_int_equal(ev.type, PT_CHAT_EV_REJECTED);
    assert_int_equal(ev.code, PT_CHAT_ACK_UNDECRYPTABLE);
    pt_buf back;
    pt_buf_init(&back);
    ev = deliver(&a, &reply, &back); /* the clear receipt reaches the sender */
    assert_int_equal(ev.type, PT_CHAT_EV_ACK);
    assert_int_equal(ev.code, PT_CHAT_ACK_UNDECRYPTABLE);

    /* a sender b has no session with: "user id not validated" */
    pt_buf forged;
    pt_buf_init(&forged);
    pt_buf_reset(&env);
    assert_int_equal(pt_chat_send(a.chat, b.id, (const uint8_t *)"x", 1, id, &env), 0);
    assert_int_equal(pt_buf_append(&forged, env.data, env.len), 0);
    memcpy(forged.data + 5, c.id, 32);
    forged.data[PT_CHAT_HDR_LEN] = PT_OLM_MSG_NORMAL;
    assert_int_equal(deliver(&b, &forged, &reply).code, PT_CHAT_ACK_NOT_VALIDATED);
    /* every flipped byte of the Olm message: could not decrypt, nothing delivered */
    for (size_t i = PT_CHAT_HDR_LEN + 1; i < env.len; i += 3) {
        pt_buf_reset(&forged);
        assert_int_equal(pt_buf_append(&forged, env.data, env.len), 0);
        forged.data[i] ^= 0x20;
        ev = deliver(&b, &forged, &reply);
        assert_int_equal(ev.type, PT_CHAT_EV_REJECTED);
        assert_true(ev.code == PT_CHAT_ACK_UNDECRYPTABLE || ev.code == PT_CHAT_ACK_CORRUPTED);
    }
    /* the untouched one still arrives after all those forgeries */
    assert_int_equal(deliver(&b, &env, &reply).type, PT_CHAT_EV_MESSAGE);
    /* garbage: corrupted */
    pt_buf_reset(&forged);
    assert_int_equal(pt_buf_append(&forged, "PTX", 3), 0);
    assert_int_equal(deliver(&b, &forged, &reply).code, PT_CHAT_ACK_CORRUPTED);
    /* a request whose bundle is not signed by its sender */
    pt_buf_reset(&env);
    assert_int_equal(pt_chat_friend_request(a.chat, first_key(&a), NULL, &env), 0);
    env.data[PT_CHAT_HDR_LEN + 70] ^= 1;
    assert_int_equal(deliver(&c, &env, &reply).code, PT_CHAT_ACK_NOT_VALIDATED);
    assert_int_equal(pt_chat_friend_accept(c.chat, env.data, env.len, &reply), PT_ERR_AUTH);
    /* text must be UTF-8 */
    pt_buf_reset(&env);
    assert_int_equal(pt_chat_send(a.chat, b.id, (const uint8_t *)"\xc3\x28", 2, id, &env), PT_ERR_INVAL);
    assert_int_equal(pt_chat_send(a.chat, c.id, (const uint8_t *)"hi", 2, id, &env), PT_ERR_NOT_FOUND);

    /* disconnect: both sides forget the session */
    pt_buf_reset(&env);
    assert_int_equal(pt_chat_disconnect(a.chat, b.id, &env), 0);
    assert_false(pt_chat_has_session(a.chat, b.id));
    assert_int_equal(deliver(&b, &env, &reply).type, PT_CHAT_EV_DISCONNECTED);
    assert_false(pt_chat_has_session(b.chat, a.id));
    assert_int_equal(pt_chat_send(b.chat, a.id, (const uint8_t *)"hi", 2, id, &env), PT_ERR_NOT_FOUND);
    pt_buf_free(&env);
    pt_buf_free(&reply);
    pt_buf_free(&back);
    pt_buf_free(&forged);
    dev_free(&a);
    dev_free(&b);
    dev_free(&c);
}

/* A group sender hands its Megolm key to each member over the 1:1 sessions;
 * members then read the group messages; someone without the key cannot. */
static void test_room_keys(void **state)
{
    (void)state;
    dev a, b, c;
    dev_new(&a, PT_OLM_SUITES_ALL);
    dev_new(&b, PT_OLM_SUITES_ALL);
    dev_new(&c, PT_OLM_SUITE_OLM_V1);
    befriend(&b, &a, PT_OLM_SUITE_PT_V1); /* a accepts b's request: sessions both ways */
    befriend(&c, &a, PT_OLM_SUITE_OLM_V1);
    pt_err err = 0;
    pt_megolm_out *out = pt_megolm_out_new(pt_env_default(), &err);
    assert_non_null(out);
    uint8_t key[PT_MEGOLM_SESSION_KEY_LEN], gid[16] = {7, 7, 7};
    assert_int_equal(pt_megolm_out_session_key(out, key), 0);
    pt_buf env, reply, msg, plain;
    pt_buf_init(&env);
    pt_buf_init(&reply);
    pt_buf_init(&msg);
    pt_buf_init(&plain);
    pt_megolm_in *in[2];
    dev *members[2] = {&b, &c};
    for (int i = 0; i < 2; i++) {
        pt_buf_reset(&env);
        assert_int_equal(pt_chat_send_room_key(a.chat, members[i]->id, gid, key, sizeof key, &env), 0);
        /* the group key never appears in the envelope in the clear */
        for (size_t k = 0; k + 16 <= env.len; k++) assert_true(memcmp(env.data + k, key + 40, 16) != 0);
        pt_chat_event ev = deliver(members[i], &env, &reply);
        assert_int_equal(ev.type, PT_CHAT_EV_ROOM_KEY);
        assert_memory_equal(ev.msg_id, gid, 16);
        assert_int_equal(ev.len, sizeof key);
        assert_memory_equal(ev.text, key, sizeof key);
        in[i] = pt_megolm_in_from_session_key(ev.text, ev.len, &err);
        assert_non_null(in[i]);
    }
    for (int m = 0; m < 20; m++) {
        char text[32];
        int n = snprintf(text, sizeof text, "group message %d", m);
        pt_buf_reset(&msg);
        assert_int_equal(pt_megolm_out_encrypt(out, &msg, (const uint8_t *)text, (size_t)n), 0);
        for (int i = 0; i < 2; i++) {
            uint32_t index;
            pt_buf_reset(&plain);
            assert_int_equal(pt_megolm_in_decrypt(in[i], &plain, &index, msg.data, msg.len, 0), 0);
            assert_int_equal(index, (uint32_t)m);
            assert_int_equal(plain.len, (size_t)n);
            assert_memory_equal(plain.data, text, (size_t)n);
        }
    }
    /* no session, no key: a stranger cannot be sent one */
    uint8_t stranger[32] = {9};
    assert_int_equal(pt_chat_send_room_key(a.chat, stranger, gid, key, sizeof key, &env), PT_ERR_NOT_FOUND);
    assert_int_equal(pt_chat_send_room_key(a.chat, b.id, gid, key, 0, &env), PT_ERR_INVAL);
    for (int i = 0; i < 2; i++) pt_megolm_in_free(in[i]);
    pt_megolm_out_free(out);
    pt_buf_free(&env);
    pt_buf_free(&reply);
    pt_buf_free(&msg);
    pt_buf_free(&plain);
    dev_free(&a);
    dev_free(&b);
    dev_free(&c);
}

/* A session opened from a directory key (no friend handshake), MSG contexts, and
 * sessions that survive a pickle/restore into a fresh pt_chat on both sides. */
static void test_open_msg_and_persist(void **state)
{
    (void)state;
    dev a, b;
    dev_new(&a, PT_OLM_SUITES_ALL);
    dev_new(&b, PT_OLM_SUITES_ALL);
    pt_olm_key otk;
    assert_int_equal(pt_olm_account_unpublished_keys(b.acct, &otk, 1), 1);
    assert_int_equal(pt_chat_open(a.chat, PT_OLM_SUITE_PT_V1, b.id, otk.key), 0);
    assert_true(pt_chat_has_session(a.chat, b.id));

    pt_buf env, reply, pk;
    pt_buf_init(&env);
    pt_buf_init(&reply);
    pt_buf_init(&pk);
    pt_chat_msg m = {.ctx = PT_CHAT_CTX_GROUP, .time_ms = 1234, .text = (const uint8_t *)"héllo", .len = 6};
    memset(m.conv, 0x42, sizeof m.conv);
    memset(m.msg_id, 0x17, sizeof m.msg_id);
    assert_int_equal(pt_chat_send_msg(a.chat, b.id, &m, &env), 0);
    pt_chat_event ev = deliver(&b, &env, &reply);
    assert_int_equal(ev.type, PT_CHAT_EV_MESSAGE);
    assert_int_equal(ev.ctx, PT_CHAT_CTX_GROUP);
    assert_memory_equal(ev.conv, m.conv, 16);
    assert_memory_equal(ev.msg_id, m.msg_id, 16);
    assert_int_equal(ev.time_ms, 1234);
    assert_int_equal(ev.len, 6);
    assert_memory_equal(ev.text, "héllo", 6);
    uint8_t last[32];
    assert_true(pt_chat_last_peer(b.chat, last));
    assert_memory_equal(last, a.id, 32);
    /* the same bytes again: acknowledged, not shown twice */
    ev = deliver(&b, &env, &reply);
    assert_int_not_equal(ev.type, PT_CHAT_EV_MESSAGE);

    /* bob's ack opens the ratchet; then both sides move to new pt_chat objects */
    pt_buf ack;
    pt_buf_init(&ack);
    pt_buf_reset(&env);
    assert_int_equal(pt_chat_send_msg(a.chat, b.id, &m, &env), 0);
    m.msg_id[0] ^= 1;
    pt_buf_reset(&env);
    assert_int_equal(pt_chat_send_msg(a.chat, b.id, &m, &env), 0);
    ev = deliver(&b, &env, &ack);
    assert_int_equal(ev.type, PT_CHAT_EV_MESSAGE);
    ev = deliver(&a, &ack, &reply);
    assert_int_equal(ev.type, PT_CHAT_EV_ACK);
    assert_int_equal(ev.code, PT_CHAT_ACK_ACCEPTED);

    const uint8_t key[32] = {1, 2, 3};
    pt_buf sa, sb;
    pt_buf_init(&sa);
    pt_buf_init(&sb);
    assert_int_equal(pt_chat_pickle_session(a.chat, b.id, key, sizeof key, &sa), 0);
    assert_int_equal(pt_chat_pickle_session(b.chat, a.id, key, sizeof key, &sb), 0);
    uint8_t nobody[32] = {9};
    assert_int_equal(pt_chat_pickle_session(a.chat, nobody, key, sizeof key, &pk), PT_ERR_NOT_FOUND);
    pt_chat_free(a.chat);
    pt_chat_free(b.chat);
    a.chat = pt_chat_new(pt_env_default(), a.acct);
    b.chat = pt_chat_new(pt_env_default(), b.acct);
    /* a wrong key, a damaged state or another peer's state are refused */
    const uint8_t bad[32] = {7};
    assert_int_equal(pt_chat_restore_session(a.chat, b.id, bad, sizeof bad, sa.data, sa.len), PT_ERR_AUTH);
    sa.data[sa.len / 2] ^= 1;
    assert_int_not_equal(pt_chat_restore_session(a.chat, b.id, key, sizeof key, sa.data, sa.len), 0);
    sa.data[sa.len / 2] ^= 1;
    assert_int_equal(pt_chat_restore_session(a.chat, a.id, key, sizeof key, sa.data, sa.len), PT_ERR_DECODE);
    assert_false(pt_chat_has_session(a.chat, b.id));
    assert_int_equal(pt_chat_restore_session(a.chat, b.id, key, sizeof key, sa.data, sa.len), 0);
    assert_int_equal(pt_chat_restore_session(b.chat, a.id, key, sizeof key, sb.data, sb.len), 0);
    m.ctx = PT_CHAT_CTX_DIRECT;
    memset(m.conv, 0, sizeof m.conv);
    m.msg_id[1] ^= 1;
    pt_buf_reset(&env);
    assert_int_equal(pt_chat_send_msg(b.chat, a.id, &m, &env), 0);
    ev = deliver(&a, &env, &reply);
    assert_int_equal(ev.type, PT_CHAT_EV_MESSAGE);
    assert_int_equal(ev.ctx, PT_CHAT_CTX_DIRECT);

    /* bad arguments */
    m.ctx = PT_CHAT_CTX_MAX + 1;
    assert_int_equal(pt_chat_send_msg(b.chat, a.id, &m, &env), PT_ERR_INVAL);
    m.ctx = 0;
    m.text = (const uint8_t *)"\xff";
    m.len = 1;
    assert_int_equal(pt_chat_send_msg(b.chat, a.id, &m, &env), PT_ERR_INVAL);
    m.text = (const uint8_t *)"x";
    assert_int_equal(pt_chat_send_msg(b.chat, nobody, &m, &env), PT_ERR_NOT_FOUND);
    pt_chat_forget(b.chat, a.id);
    assert_false(pt_chat_has_session(b.chat, a.id));

    pt_buf_free(&env);
    pt_buf_free(&reply);
    pt_buf_free(&pk);
    pt_buf_free(&ack);
    pt_buf_free(&sa);
    pt_buf_free(&sb);
    dev_free(&a);
    dev_free(&b);
}

/* Alice and Bob open sessions to each other at the same moment (RELIABILITY.md
 * defect 3): each first message arrives as a pre-key message of a session the other
 * did not start. Both must read everything that follows, both ways, also after the
 * sessions went through a pickle and back. */
static void send_text(dev *from, dev *to, uint8_t tag, pt_buf *env)
{
    pt_chat_msg m = {.ctx = PT_CHAT_CTX_DIRECT, .time_ms = tag, .text = (const uint8_t *)"x", .len = 1};
    memset(m.msg_id, tag, sizeof m.msg_id);
    pt_buf_reset(env);
    assert_int_equal(pt_chat_send_msg(from->chat, to->id, &m, env), 0);
}

static void expect_text(dev *d, const pt_buf *env, uint8_t tag)
{
    pt_buf reply;
    pt_buf_init(&reply);
    pt_chat_event ev = deliver(d, env, &reply);
    if (ev.type != PT_CHAT_EV_MESSAGE) fail_msg("message %u: event %d code %d", tag, ev.type, ev.code);
    assert_int_equal(ev.msg_id[0], tag);
    pt_buf_free(&reply);
}

static void test_simultaneous_open(void **state)
{
    (void)state;
    for (int round = 0; round < 8; round++) { /* both orders of the session ids */
        dev a, b;
        dev_new(&a, PT_OLM_SUITES_ALL);
        dev_new(&b, PT_OLM_SUITES_ALL);
        pt_olm_key ka, kb;
        assert_int_equal(pt_olm_account_unpublished_keys(a.acct, &ka, 1), 1);
        assert_int_equal(pt_olm_account_unpublished_keys(b.acct, &kb, 1), 1);
        assert_int_equal(pt_chat_open(a.chat, PT_OLM_SUITE_PT_V1, b.id, kb.key), 0);
        assert_int_equal(pt_chat_open(b.chat, PT_OLM_SUITE_PT_V1, a.id, ka.key), 0);
        pt_buf ea, eb;
        pt_buf_init(&ea);
        pt_buf_init(&eb);
        send_text(&a, &b, 1, &ea); /* both first messages cross */
        send_text(&b, &a, 2, &eb);
        expect_text(&b, &ea, 1);
        expect_text(&a, &eb, 2);
        uint8_t tag = 3;
        for (int i = 0; i < 4; i++, tag += 2) { /* then both ways, also crossing */
            send_text(&a, &b, tag, &ea);
            send_text(&b, &a, (uint8_t)(tag + 1), &eb);
            expect_text(&a, &eb, (uint8_t)(tag + 1));
            expect_text(&b, &ea, tag);
        }
        /* both sessions survive a pickle: each side holds two for the other */
        const uint8_t key[32] = {4, 5, 6};
        pt_buf sa, sb;
        pt_buf_init(&sa);
        pt_buf_init(&sb);
        assert_int_equal(pt_chat_pickle_session(a.chat, b.id, key, sizeof key, &sa), 0);
        assert_int_equal(pt_chat_pickle_session(b.chat, a.id, key, sizeof key, &sb), 0);
        assert_memory_equal(sa.data, "PTCS", 4);
        send_text(&b, &a, 99, &eb); /* in flight across the restart */
        pt_chat_free(a.chat);
        pt_chat_free(b.chat);
        a.chat = pt_chat_new(pt_env_default(), a.acct);
        b.chat = pt_chat_new(pt_env_default(), b.acct);
        assert_int_equal(pt_chat_restore_session(a.chat, b.id, key, sizeof key, sa.data, sa.len), 0);
        assert_int_equal(pt_chat_restore_session(b.chat, a.id, key, sizeof key, sb.data, sb.len), 0);
        sa.data[4] = 9; /* a count beyond what is kept */
        assert_int_equal(pt_chat_restore_session(a.chat, b.id, key, sizeof key, sa.data, sa.len), PT_ERR_DECODE);
        expect_text(&a, &eb, 99);
        send_text(&a, &b, 100, &ea);
        expect_text(&b, &ea, 100);
        pt_buf_free(&ea);
        pt_buf_free(&eb);
        pt_buf_free(&sa);
        pt_buf_free(&sb);
        dev_free(&a);
        dev_free(&b);
    }
}

int main(void)
{
    assert_int_equal(pt_init(), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_and_messages),
        cmocka_unit_test(test_deny_replay_unknown_tamper),
        cmocka_unit_test(test_room_keys),
        cmocka_unit_test(test_open_msg_and_persist),
        cmocka_unit_test(test_simultaneous_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
