/* Fuzz target for pt_noise_hs_read (src/noise): one side of a handshake in the
 * deterministic fuzz_env reads the peer's messages from the input. The first byte
 * picks the side: bit 0 the role (0: responder, which reads message 1 first;
 * 1: initiator, which writes message 1 and reads message 2), bit 1 the suite
 * (ChaChaPoly_BLAKE2b, AESGCM_SHA256), (byte >> 2) % 15 the pattern (8 = XX,
 * 13 = IK: the channel's two; the others come cheap). The rest is the peer's
 * messages, each a u16le length then that many bytes (the last may be short).
 * Whenever it is this side's turn it writes (empty payload); after the last
 * message it splits. The corpus holds every pattern, suite and role, made by
 * fuzz/seeds/make_seeds.c. Properties, each abort()ing when broken:
 *  - a read fails only with PT_ERR_DECODE, PT_ERR_TOO_BIG, PT_ERR_AUTH or
 *    PT_ERR_WEAK_KEY and leaves payload_out as it was; a write fails only with
 *    PT_ERR_WEAK_KEY (a low-order key the peer sent); after either, every
 *    later read or write fails with PT_ERR_STATE;
 *  - a read appends at most len bytes of payload;
 *  - a finished handshake knows the peer's static key when the pattern has one,
 *    splits, and its two CipherStates encrypt and decrypt. */
#include <stdlib.h>

#include "fuzz_env.h"
#include "noise/pt_noise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Does the peer's static key reach us (pre-message or an `s` token it writes)? */
static bool learns_remote_static(pt_noise_pattern p, bool initiator)
{
    if (pt_noise_needs_remote_static(p, initiator)) return true;
    /* X N K patterns: the first letter is the initiator's static, the second the
     * responder's; 'X' and 'I' transmit it, 'K' pre-shares, 'N' has none. */
    const char *name = pt_noise_pattern_name(p);
    char peer_letter = initiator ? name[1] : name[0]; /* one-way N K X: name[1] is 0 */
    return peer_letter == 'X' || peer_letter == 'I' || peer_letter == 'K';
}

static void check_split(pt_noise_hs *hs)
{
    pt_noise_cs tx, rx;
    if (pt_noise_hs_split(hs, &tx, &rx) != 0) abort();
    uint8_t msg[4 + PT_NOISE_TAG_LEN] = {'p', 't', 'f', 'z'};
    if (pt_noise_cs_encrypt(&tx, msg, NULL, 0, msg, 4) != 0) abort();
    /* Our receive key is the peer's send key, not ours: the tag cannot match. */
    if (pt_noise_cs_decrypt(&rx, msg, NULL, 0, msg, sizeof msg) == 0) abort();
    if (rx.n != 0 || tx.n != 1) abort();
    pt_noise_cs_clear(&tx);
    pt_noise_cs_clear(&rx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    if (!inited) {
        if (pt_init() != 0) abort();
        inited = 1;
    }
    if (size < 1) return 0;
    bool initiator = data[0] & 1;
    pt_noise_suite suite = (data[0] & 2) ? PT_NOISE_AESGCM_SHA256 : PT_NOISE_CHACHAPOLY_BLAKE2B;
    pt_noise_pattern pat = (pt_noise_pattern)((data[0] >> 2) % PT_NOISE_PATTERN_COUNT);

    fz_env env;
    fz_env_init(&env, 0);
    uint8_t sk[32], peer_sk[32], peer_pk[32];
    fz_key(sk, initiator ? FZ_CLIENT_KEY : FZ_SERVER_KEY);
    fz_key(peer_sk, initiator ? FZ_SERVER_KEY : FZ_CLIENT_KEY);
    if (pt_x25519_base(peer_pk, peer_sk) != 0) abort();
    static const uint8_t prologue[] = "PackTrack fuzz prologue";
    pt_noise_hs *hs = pt_noise_hs_new(&env.env, pat, suite, initiator, prologue, sizeof prologue,
                                      sk, pt_noise_needs_remote_static(pat, initiator) ? peer_pk : NULL);
    if (!hs) abort();

    pt_buf out, payload;
    pt_buf_init(&out);
    pt_buf_init(&payload);
    size_t off = 1;
    bool failed = false;
    while (!pt_noise_hs_done(hs)) {
        if (pt_noise_hs_my_turn(hs)) {
            /* A DH with a low-order key the peer sent fails here, not in the read. */
            int rc = pt_noise_hs_write(hs, &out, NULL, 0);
            if (rc == PT_ERR_WEAK_KEY) {
                failed = true;
                break;
            }
            if (rc != 0) abort();
            continue;
        }
        if (off >= size) break;
        size_t len = size - off >= 2 ? (size_t)data[off] | (size_t)data[off + 1] << 8 : 0;
        off += size - off >= 2 ? 2 : size - off;
        if (len > size - off) len = size - off;
        size_t before = payload.len;
        int rc = pt_noise_hs_read(hs, &payload, data + off, len);
        off += len;
        if (rc != 0) {
            if (rc != PT_ERR_DECODE && rc != PT_ERR_TOO_BIG && rc != PT_ERR_AUTH &&
                rc != PT_ERR_WEAK_KEY)
                abort();
            if (payload.len != before || pt_noise_hs_my_turn(hs)) abort();
            failed = true;
            break;
        }
        if (payload.len - before > len) abort();
    }
    if (failed) {
        uint8_t k1[32], k2[32];
        if (pt_noise_hs_read(hs, &payload, data, size) != PT_ERR_STATE) abort();
        if (pt_noise_hs_write(hs, &out, NULL, 0) != PT_ERR_STATE) abort();
        if (pt_noise_hs_split_keys(hs, k1, k2) != PT_ERR_STATE) abort();
    } else if (pt_noise_hs_done(hs)) {
        if (learns_remote_static(pat, initiator) != (pt_noise_hs_remote_static(hs) != NULL)) abort();
        check_split(hs);
    }
    pt_buf_free(&out);
    pt_buf_free(&payload);
    pt_noise_hs_free(hs);
    return 0;
}
