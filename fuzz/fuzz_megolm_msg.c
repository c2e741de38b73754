/* Fuzz target for Megolm group messages (src/e2e/megolm): pt_megolm_msg_decode
 * and pt_megolm_in_decrypt. A fixed outbound session (deterministic fuzz_env, so
 * the corpus can hold messages that really decrypt) and, per input, a fresh
 * inbound session from its session key. The first byte picks a mode:
 *   even: the rest is a message. decode and decrypt agree on malformed input;
 *     a failed decrypt appends nothing; one that succeeds appends less than the
 *     message, is then refused as a replay, and decrypts again only with
 *     PT_MEGOLM_ALLOW_REPLAY, to the same plaintext.
 *   odd: the next four bytes are an index (u32le) the sender jumps to (its
 *     stored state, rewritten), the rest a plaintext (cut to the limit). The
 *     message decrypts to it under a key shared at that index, is a replay the
 *     second time, and any single flipped bit is refused.
 * Any broken property abort()s. */
#include <stdlib.h>

#include "fuzz_env.h"
#include "e2e/pt_megolm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static pt_megolm_out *g_out;
static uint8_t g_key[PT_MEGOLM_SESSION_KEY_LEN];
static pt_buf g_state;

static void init(void)
{
    if (g_out) return;
    fz_env e;
    fz_env_init(&e, 0x4d);
    if (pt_init() != 0 || !(g_out = pt_megolm_out_new(&e.env, NULL))) abort();
    if (pt_megolm_out_session_key(g_out, g_key) != 0) abort();
    pt_buf_init(&g_state);
    if (pt_megolm_out_serialize(g_out, &g_state) != 0) abort();
}

static bool allowed(int rc)
{
    return rc == PT_ERR_DECODE || rc == PT_ERR_VERSION || rc == PT_ERR_TOO_BIG ||
           rc == PT_ERR_AUTH || rc == PT_ERR_NOT_FOUND || rc == PT_ERR_REPLAY;
}

static void raw(const uint8_t *msg, size_t len)
{
    pt_megolm_in *in = pt_megolm_in_from_session_key(g_key, sizeof g_key, NULL);
    if (!in) abort();
    pt_megolm_msg m;
    int drc = pt_megolm_msg_decode(&m, msg, len);
    if (drc == 0 &&
        (m.ciphertext < msg || m.ciphertext + m.ciphertext_len > msg + m.mac_covered_len ||
         m.signed_len != len - PT_MEGOLM_SIG_LEN || m.ciphertext_len % 16))
        abort();
    pt_buf out;
    pt_buf_init(&out);
    uint32_t idx = 0;
    int rc = pt_megolm_in_decrypt(in, &out, &idx, msg, len, 0);
    if (drc != 0 && rc != drc) abort();
    if (rc != 0) {
        if (!allowed(rc) || out.len != 0) abort();
    } else {
        if (out.len >= len || idx != m.index || !pt_megolm_in_seen(in, idx)) abort();
        pt_buf again;
        pt_buf_init(&again);
        if (pt_megolm_in_decrypt(in, &again, NULL, msg, len, 0) != PT_ERR_REPLAY || again.len)
            abort();
        if (pt_megolm_in_decrypt(in, &again, NULL, msg, len, PT_MEGOLM_ALLOW_REPLAY) != 0 ||
            again.len != out.len || memcmp(again.data, out.data, out.len) != 0)
            abort();
        pt_buf_free(&again);
    }
    pt_buf_free(&out);
    pt_megolm_in_free(in);
}

static void roundtrip(uint32_t index, const uint8_t *pt, size_t len)
{
    if (len > PT_MEGOLM_MAX_PLAINTEXT) len = PT_MEGOLM_MAX_PLAINTEXT;
    /* The sender's state at `index`: its stored form with the counter rewritten
     * and the checksum recomputed (the ratchet does not match the counter, which
     * is fine: both sides see the same values). */
    uint8_t st[512];
    if (g_state.len > sizeof st) abort();
    memcpy(st, g_state.data, g_state.len);
    pt_put_u32le(st + 5, index);
    if (pt_hash(PT_HASH_SHA256, st + g_state.len - 32, st, g_state.len - 32) != 0) abort();
    pt_megolm_out *o = pt_megolm_out_restore(st, g_state.len, NULL);
    if (!o) abort();
    uint8_t key[PT_MEGOLM_SESSION_KEY_LEN];
    if (pt_megolm_out_session_key(o, key) != 0) abort();
    pt_megolm_in *in = pt_megolm_in_from_session_key(key, sizeof key, NULL);
    if (!in || pt_megolm_in_first_index(in) != index) abort();
    pt_buf m, p;
    pt_buf_init(&m);
    pt_buf_init(&p);
    int rc = pt_megolm_out_encrypt(o, &m, pt, len);
    if (index == UINT32_MAX) {
        if (rc != PT_ERR_STATE || m.len) abort();
        goto out;
    }
    if (rc != 0 || m.len > PT_MEGOLM_MAX_MESSAGE) abort();
    uint32_t idx;
    if (pt_megolm_in_decrypt(in, &p, &idx, m.data, m.len, 0) != 0 || idx != index || p.len != len ||
        (len && memcmp(p.data, pt, len) != 0))
        abort();
    if (pt_megolm_in_decrypt(in, &p, NULL, m.data, m.len, 0) != PT_ERR_REPLAY) abort();
    size_t bit = (index * 2654435761u + len) % (m.len * 8);
    m.data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    pt_buf_reset(&p);
    rc = pt_megolm_in_decrypt(in, &p, NULL, m.data, m.len, PT_MEGOLM_ALLOW_REPLAY);
    if (rc == 0 || !allowed(rc) || p.len) abort();
out:
    pt_buf_free(&m);
    pt_buf_free(&p);
    pt_megolm_in_free(in);
    pt_megolm_out_free(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    if (size < 1) return 0;
    if (!(data[0] & 1)) {
        raw(data + 1, size - 1);
    } else if (size >= 5) {
        roundtrip(pt_get_u32le(data + 1), data + 5, size - 5);
    }
    return 0;
}
