#!/usr/bin/env python3
# Placeholder generator: emits empty codecs until the real one lands.
import sys, os
out = sys.argv[2]
open(os.path.join(out, "pt_tl.h"), "w").write("#ifndef PT_TL_H\n#define PT_TL_H\n#endif\n")
open(os.path.join(out, "pt_tl.c"), "w").write('#include "pt_tl.h"\ntypedef int pt_tl_placeholder;\n')
