#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "crypto/pt_crypto.h"
#include "testutil.h"

const char *pt_test_shared_path(const char *rel)
{
    static char path[4096];
    const char *dir = getenv("PT_SHARED_DIR");
    if (!dir) dir = "../shared";
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    struct stat st;
    return stat(path, &st) == 0 ? path : NULL;
}

char *pt_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (len) *len = (size_t)n;
    }
    return buf;
}

uint8_t *pt_test_unhex(const char *hex, size_t *out_len)
{
    size_t n = strlen(hex) / 2;
    uint8_t *out = malloc(n ? n : 1);
    assert_non_null(out);
    assert_int_equal(strlen(hex) % 2, 0);
    if (n) assert_int_equal(pt_hex_decode(out, n, hex), 0);
    *out_len = n;
    return out;
}

static void test_random(void *ctx, void *buf, size_t len)
{
    pt_test_env *t = ctx;
    uint8_t *p = buf;
    while (len > 0 && t->script_pos < t->script_len) {
        *p++ = t->script[t->script_pos++];
        len--;
    }
    while (len > 0) { /* deterministic, not random: tests only */
        uint8_t blk[32], ctr[8];
        pt_put_u64le(ctr, t->counter++);
        pt_blake2b(blk, sizeof blk, ctr, sizeof ctr, NULL, 0);
        size_t k = len < sizeof blk ? len : sizeof blk;
        memcpy(p, blk, k);
        p += k;
        len -= k;
    }
}
static uint64_t test_now(void *ctx) { return ((pt_test_env *)ctx)->now_ms; }
static uint64_t test_mono(void *ctx) { return ((pt_test_env *)ctx)->mono_ms; }

void pt_test_env_init(pt_test_env *t, const uint8_t *script, size_t script_len)
{
    memset(t, 0, sizeof *t);
    t->env.random = test_random;
    t->env.now_ms = test_now;
    t->env.mono_ms = test_mono;
    t->env.ctx = t;
    t->script = script;
    t->script_len = script_len;
    t->now_ms = 1700000000000ull;
    t->mono_ms = 1000;
}
