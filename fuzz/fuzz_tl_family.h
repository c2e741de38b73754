/* Fuzz body for a generated TL decoder family, PT_TL_FAMILY_DECODE() (from schema/packtrack.tl,
 * named by the including file). Properties, each abort()ing when broken:
 *  - a decode fails only with PT_ERR_DECODE or PT_ERR_TOO_BIG and then leaves
 *    the arena as it was;
 *  - what decodes re-encodes to exactly the input (the codec is canonical) and
 *    is a constructor of the family that pt_tl_decode_any() reads the same way;
 *  - with a tiny arena the same input decodes identically or reports
 *    PT_ERR_TOO_BIG, never anything else. */
/* Shared body of the fuzz_tl_<family> targets: each defines PT_TL_FAMILY_DECODE
 * as its family's generated decoder and includes this file. */
#ifndef PT_TL_FAMILY_DECODE
#error "define PT_TL_FAMILY_DECODE before including fuzz_tl_family.h"
#endif
#include <stdlib.h>

#include "pt_tl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ARENA_SIZE (64 * 1024)
#define TINY_ARENA_SIZE 64

static void reencode_equals(const pt_tl_obj *o, const uint8_t *data, size_t size)
{
    pt_buf b;
    pt_buf_init(&b);
    if (pt_tl_encode_any(&b, o) != 0) abort();
    if (b.len != size || memcmp(b.data, data, size) != 0) abort();
    pt_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t mem[ARENA_SIZE];
    pt_arena a;
    pt_tl_obj o, any;
    pt_arena_init(&a, mem, sizeof mem);
    int rc = PT_TL_FAMILY_DECODE(&o, data, size, &a);
    if (rc != 0) {
        if ((rc != PT_ERR_DECODE && rc != PT_ERR_TOO_BIG) || a.used != 0) abort();
    } else {
        if (a.used > a.cap || pt_tl_name(o.id) == NULL) abort();
        reencode_equals(&o, data, size);
        pt_arena_reset(&a);
        if (pt_tl_decode_any(&any, data, size, &a) != 0 || any.id != o.id) abort();
        reencode_equals(&any, data, size);
    }

    static uint8_t tiny_mem[TINY_ARENA_SIZE];
    pt_arena tiny;
    pt_arena_init(&tiny, tiny_mem, sizeof tiny_mem);
    int trc = PT_TL_FAMILY_DECODE(&o, data, size, &tiny);
    if (trc == 0) {
        if (rc != 0) abort(); /* what fits 64 bytes fits 64 KiB */
        reencode_equals(&o, data, size);
    } else {
        if ((trc != PT_ERR_DECODE && trc != PT_ERR_TOO_BIG) || tiny.used != 0) abort();
        if (rc == 0 && trc != PT_ERR_TOO_BIG) abort();
    }
    return 0;
}
