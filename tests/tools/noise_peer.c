/*
 * noise_peer - our Noise engine as a process, for interop tests against other
 * implementations (tests/interop/noise_dissononce.py drives it).
 *
 *   noise_peer PATTERN SUITE ROLE PROLOGUE_HEX STATIC_SK_HEX [REMOTE_PK_HEX]
 *
 *   PATTERN        a pattern name: XX, IK, ...
 *   SUITE          ChaChaPoly_BLAKE2b | AESGCM_SHA256 (DH is always 25519)
 *   ROLE           initiator | responder
 *   PROLOGUE_HEX   the prologue; "-" for an empty one
 *   STATIC_SK_HEX  our 32-byte static private key; "-" for none
 *   REMOTE_PK_HEX  the peer's static public key when pre-shared (IK initiator)
 *
 * It prints "ready" (or "err CODE TEXT" and exits 2), then answers one command
 * per stdin line with one stdout line, "ok [ARGS]" or "err CODE TEXT". Byte
 * strings are lowercase hex; an empty one may be omitted.
 *
 *   write [PAYLOAD]    next handshake message carrying PAYLOAD -> ok MESSAGE
 *   read MESSAGE       next handshake message                  -> ok PAYLOAD
 *   done               -> ok 1 when every handshake message is processed, else ok 0
 *   split              -> ok; the transport CipherStates exist from now on
 *   hash               -> ok H (the handshake hash)
 *   remote             -> ok RS, or ok - while the peer's static key is unknown
 *   encrypt [PLAIN]    -> ok CIPHERTEXT (send direction)
 *   decrypt CIPHER     -> ok PLAINTEXT (receive direction)
 *   quit, or EOF       -> exits 0
 *
 * The tool holds no protocol logic of its own: every byte on the wire is the
 * engine's, so the driver sees exactly what a real peer would.
 */
#include <stdio.h>
#include <stdlib.h>

#include "crypto/pt_crypto.h"
#include "noise/pt_noise.h"

typedef struct peer {
    pt_noise_hs *hs;  /* the handshake; kept after split for hash/remote */
    pt_noise_cs send; /* transport, valid once split */
    pt_noise_cs recv;
    bool split; /* split succeeded */
} peer;

static void reply_err(int code, const char *what)
{
    printf("err %d %s%s%s\n", code, pt_strerror(code), what ? ": " : "", what ? what : "");
}

static void reply_hex(const uint8_t *p, size_t len)
{
    char *hex = malloc(2 * len + 1);
    if (!hex) {
        reply_err(PT_ERR_NOMEM, NULL);
        return;
    }
    pt_hex_encode(hex, p, len);
    printf("ok %s\n", hex);
    free(hex);
}

/* Decodes a hex argument of any even length; "-" or "" is empty. *out is
 * malloc'd (never NULL on success). */
static int unhex(const char *hex, uint8_t **out, size_t *len)
{
    if (strcmp(hex, "-") == 0) hex = "";
    size_t n = strlen(hex);
    if (n % 2) return PT_ERR_DECODE;
    *out = malloc(n / 2 + 1);
    if (!*out) return PT_ERR_NOMEM;
    *len = n / 2;
    if (pt_hex_decode(*out, n / 2, hex) != 0) {
        free(*out);
        *out = NULL;
        return PT_ERR_DECODE;
    }
    return 0;
}

static int parse_suite(const char *s, pt_noise_suite *out)
{
    if (strcmp(s, "ChaChaPoly_BLAKE2b") == 0)
        *out = PT_NOISE_CHACHAPOLY_BLAKE2B;
    else if (strcmp(s, "AESGCM_SHA256") == 0)
        *out = PT_NOISE_AESGCM_SHA256;
    else
        return PT_ERR_INVAL;
    return 0;
}

/* Runs one command on bytes `in`; prints exactly one reply line. */
static void run_command(peer *p, const char *cmd, const uint8_t *in, size_t len)
{
    pt_buf out;
    pt_buf_init(&out);
    int rc = 0;
    if (strcmp(cmd, "write") == 0 || strcmp(cmd, "read") == 0) {
        rc = cmd[0] == 'w' ? pt_noise_hs_write(p->hs, &out, in, len)
                           : pt_noise_hs_read(p->hs, &out, in, len);
        if (rc == 0) reply_hex(out.data, out.len);
    } else if (strcmp(cmd, "done") == 0) {
        printf("ok %d\n", pt_noise_hs_done(p->hs) ? 1 : 0);
    } else if (strcmp(cmd, "split") == 0) {
        if (p->split)
            rc = PT_ERR_STATE;
        else
            rc = pt_noise_hs_split(p->hs, &p->send, &p->recv);
        if (rc == 0) {
            p->split = true;
            printf("ok\n");
        }
    } else if (strcmp(cmd, "hash") == 0) {
        size_t hlen;
        const uint8_t *h = pt_noise_hs_hash(p->hs, &hlen);
        reply_hex(h, hlen);
    } else if (strcmp(cmd, "remote") == 0) {
        const uint8_t *rs = pt_noise_hs_remote_static(p->hs);
        if (rs)
            reply_hex(rs, 32);
        else
            printf("ok -\n");
    } else if (strcmp(cmd, "encrypt") == 0 || strcmp(cmd, "decrypt") == 0) {
        bool enc = cmd[0] == 'e';
        if (!p->split)
            rc = PT_ERR_STATE;
        else if (len > PT_NOISE_MAX_MSG || (enc && len + PT_NOISE_TAG_LEN > PT_NOISE_MAX_MSG))
            rc = PT_ERR_TOO_BIG;
        else if (!enc && len < PT_NOISE_TAG_LEN)
            rc = PT_ERR_DECODE;
        size_t olen = rc != 0 ? 0 : enc ? len + PT_NOISE_TAG_LEN : len - PT_NOISE_TAG_LEN;
        uint8_t *dst = rc == 0 ? pt_buf_extend(&out, olen + 1) : NULL; /* +1: never 0 */
        if (rc == 0 && !dst) rc = PT_ERR_NOMEM;
        if (rc == 0)
            rc = enc ? pt_noise_cs_encrypt(&p->send, dst, NULL, 0, in, len)
                     : pt_noise_cs_decrypt(&p->recv, dst, NULL, 0, in, len);
        if (rc == 0) reply_hex(dst, olen);
    } else {
        reply_err(PT_ERR_INVAL, cmd);
    }
    if (rc != 0) reply_err(rc, cmd);
    pt_buf_free(&out);
}

int main(int argc, char **argv)
{
    if (argc < 6 || argc > 7) {
        fprintf(stderr,
                "usage: %s PATTERN SUITE initiator|responder PROLOGUE_HEX "
                "STATIC_SK_HEX [REMOTE_PK_HEX]\n",
                argv[0]);
        return 2;
    }
    if (pt_init() != 0) {
        reply_err(PT_ERR_CRYPTO, "pt_init");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    pt_noise_pattern pattern = PT_NOISE_XX;
    pt_noise_suite suite = PT_NOISE_CHACHAPOLY_BLAKE2B;
    bool initiator = strcmp(argv[3], "initiator") == 0;
    uint8_t *prologue = NULL, *sk = NULL, *rpk = NULL;
    size_t prologue_len = 0, sk_len = 0, rpk_len = 0;
    int rc = 0;
    const char *bad = NULL;
    if (pt_noise_pattern_from_name(argv[1], &pattern) != 0)
        bad = argv[1];
    else if (parse_suite(argv[2], &suite) != 0)
        bad = argv[2];
    else if (!initiator && strcmp(argv[3], "responder") != 0)
        bad = argv[3];
    else if (unhex(argv[4], &prologue, &prologue_len) != 0)
        bad = "PROLOGUE_HEX";
    else if (unhex(argv[5], &sk, &sk_len) != 0 || (sk_len != 0 && sk_len != 32))
        bad = "STATIC_SK_HEX";
    else if (argc == 7 && (unhex(argv[6], &rpk, &rpk_len) != 0 || (rpk_len != 0 && rpk_len != 32)))
        bad = "REMOTE_PK_HEX";

    peer p = {0};
    if (bad) {
        rc = PT_ERR_INVAL;
        reply_err(rc, bad);
        goto out;
    }
    p.hs = pt_noise_hs_new(pt_env_default(), pattern, suite, initiator, prologue, prologue_len,
                           sk_len ? sk : NULL, rpk_len ? rpk : NULL);
    if (!p.hs) {
        rc = PT_ERR_INVAL;
        reply_err(rc, "pt_noise_hs_new (missing static key?)");
        goto out;
    }
    printf("ready\n");

    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        char *arg = strchr(line, ' ');
        if (arg)
            *arg++ = 0;
        else
            arg = "";
        if (strcmp(line, "quit") == 0) break;
        uint8_t *in = NULL;
        size_t len = 0;
        int hrc = unhex(arg, &in, &len);
        if (hrc != 0)
            reply_err(hrc, "argument is not hex");
        else
            run_command(&p, line, in, len);
        if (in) pt_wipe(in, len);
        free(in);
    }
    free(line);

out:
    pt_noise_cs_clear(&p.send);
    pt_noise_cs_clear(&p.recv);
    pt_noise_hs_free(p.hs);
    if (sk) pt_wipe(sk, sk_len);
    free(prologue);
    free(sk);
    free(rpk);
    return rc ? 2 : 0;
}
