/* Shared helpers for PackTrack's cmocka tests. */
#ifndef PT_TESTUTIL_H
#define PT_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/pt_common.h"

/* Path of ../shared/<rel> next to the source tree, or NULL when absent
 * (people who clone the project alone do not have it). Static storage. */
const char *pt_test_shared_path(const char *rel);
/* Reads a whole file into a malloc'd NUL-terminated buffer; NULL on error. */
char *pt_test_read_file(const char *path, size_t *len);
/* Decodes hex into a malloc'd buffer (len in *out_len); aborts the test on bad hex. */
uint8_t *pt_test_unhex(const char *hex, size_t *out_len);
/* An environment whose randomness replays `script` bytes in order, then a
 * deterministic stream; clocks return the values in the struct. */
typedef struct pt_test_env {
    pt_env env;
    const uint8_t *script;
    size_t script_len, script_pos;
    uint64_t counter;  /* for the deterministic stream after the script */
    uint64_t now_ms, mono_ms;
} pt_test_env;
void pt_test_env_init(pt_test_env *t, const uint8_t *script, size_t script_len);

#endif
