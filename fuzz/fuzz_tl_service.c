/* libFuzzer target for the generated decoder family "service"; the body and the
 * properties it checks are in fuzz_tl_family.h. */
#define PT_TL_FAMILY_DECODE pt_tl_decode_service
#include "fuzz_tl_family.h"
