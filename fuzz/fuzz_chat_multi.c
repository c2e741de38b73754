/* Fuzz target for the multi-device envelope (pt_chat_multi_find) and the envelope
 * header (pt_chat_envelope_sender). Properties, each abort()ing when broken: an
 * entry that is found lies inside the input; the container re-built from the
 * entries found for every recipient named in it is byte-identical to the input
 * (or the recipient is named twice, which makes the container malformed);
 * every failure is PT_ERR_DECODE or PT_ERR_NOT_FOUND. */
#include <stdio.h>
#include <stdlib.h>

#include "e2e/pt_chat.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_chat_multi: property failed: %s\n", #c);                         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t sender[PT_OLM_KEY_LEN];
    int rc = pt_chat_envelope_sender(data, size, sender);
    CHECK(rc == 0 || rc == PT_ERR_DECODE || rc == PT_ERR_VERSION);
    /* the first recipient key named in the input, if any, and a key of all 0x41 */
    uint8_t probe[2][PT_OLM_KEY_LEN];
    memset(probe[1], 0x41, sizeof probe[1]);
    memcpy(probe[0], size >= PT_CHAT_MULTI_HDR + PT_OLM_KEY_LEN ? data + PT_CHAT_MULTI_HDR : probe[1],
           PT_OLM_KEY_LEN);
    bool whole = true;
    for (int i = 0; i < 2; i++) {
        const uint8_t *e = NULL;
        size_t el = 0;
        rc = pt_chat_multi_find(data, size, probe[i], &e, &el);
        CHECK(rc == 0 || rc == PT_ERR_DECODE || rc == PT_ERR_NOT_FOUND);
        if (rc == 0) CHECK(e >= data && el <= size && e + el <= data + size);
        if (rc == PT_ERR_DECODE) whole = false;
    }
    if (!whole || size < PT_CHAT_MULTI_HDR) return 0;
    /* a valid container: rebuild it entry by entry and compare */
    size_t n = (size_t)data[4] | (size_t)data[5] << 8, off = PT_CHAT_MULTI_HDR, at;
    pt_buf b;
    pt_buf_init(&b);
    CHECK(pt_chat_multi_begin(&b, &at) == 0);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *e;
        size_t el;
        int frc = pt_chat_multi_find(data, size, data + off, &e, &el);
        if (frc == PT_ERR_DECODE) { /* only a recipient named twice is refused as a whole */
            int named = 0;
            for (size_t o2 = PT_CHAT_MULTI_HDR, j = 0; j < n; j++) {
                named += memcmp(data + o2, data + off, PT_OLM_KEY_LEN) == 0;
                o2 += PT_OLM_KEY_LEN + 4 + pt_get_u32le(data + o2 + PT_OLM_KEY_LEN);
            }
            CHECK(named >= 2);
            pt_buf_free(&b);
            return 0;
        }
        CHECK(frc == 0);
        CHECK(e == data + off + PT_OLM_KEY_LEN + 4);
        CHECK(pt_chat_multi_add(&b, at, data + off, e, el) == 0);
        off += PT_OLM_KEY_LEN + 4 + el;
    }
    CHECK(b.len == size && memcmp(b.data, data, size) == 0);
    pt_buf_free(&b);
    return 0;
}
