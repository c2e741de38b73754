/* libFuzzer target for the generated decoder family "api"; the body and the
 * properties it checks are in fuzz_tl_family.h. */
#define PT_TL_FAMILY_DECODE pt_tl_decode_api
#include "fuzz_tl_family.h"
