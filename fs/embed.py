#!/usr/bin/env python3
# Writes a C file defining `const char NAME[]` (NUL-terminated) and
# `const size_t NAME_len` with the bytes of INPUT: documents the daemon
# serves (docs/openapi.json) are compiled in from the tree.
import sys

src, out, name = sys.argv[1:4]
data = open(src, 'rb').read()
with open(out, 'w') as f:
    f.write('#include <stddef.h>\n')
    f.write('const char %s[] = {\n' % name)
    for i in range(0, len(data), 16):
        f.write(''.join('%d,' % b for b in data[i:i + 16]) + '\n')
    f.write('0 };\n')
    f.write('const size_t %s_len = %d;\n' % (name, len(data)))
