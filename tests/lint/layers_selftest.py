#!/usr/bin/env python3
"""layers_selftest.py - the layer lint (layers.py) can fail: on a small made-up tree it
passes a downward include and fails an upward one, a comment that disagrees with the lists,
and a file listed under the wrong layer. Temporary files only; nothing else is read."""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import layers  # noqa: E402

CMAKE = """# Layers, lowest first: base, net.
set(CORE_BASE core/base/a.c)
set(CORE_NET core/net/b.c)
set(CORE_SOURCES ${CORE_BASE} ${CORE_NET})
"""


def tree(cmake, a_c, b_c):
    root = tempfile.mkdtemp(prefix="layers-")
    for d in ("core/base", "core/net"):
        os.makedirs(os.path.join(root, d))
    files = {"CMakeLists.txt": cmake, "core/base/a.h": "", "core/base/a.c": a_c,
             "core/net/b.h": "", "core/net/b.c": b_c, "core/main.c": '#include "net/b.h"\n'}
    for rel, text in files.items():
        with open(os.path.join(root, rel), "w", encoding="utf-8") as f:
            f.write(text)
    return root


def run(root):
    try:
        return layers.check(root)[1]
    except ValueError as e:
        return [str(e)]


def main():
    ok = True
    cases = [
        ("downward include", tree(CMAKE, '#include "a.h"\n', '#include "../base/a.h"\n'), 0),
        ("upward include", tree(CMAKE, '#include "../net/b.h"\n', ""), 1),
        ("upward include from core/", tree(CMAKE, '#include "net/b.h"\n', ""), 1),
        ("comment disagrees", tree(CMAKE.replace("base, net", "net, base"), "", ""), 1),
        ("file in the wrong list", tree(CMAKE.replace("core/base/a.c", "core/net/a.c"), "", ""), 1),
    ]
    for name, root, want in cases:
        errors = run(root)
        if len(errors) != want:
            print("FAIL %s: %d error(s), want %d: %s" % (name, len(errors), want, errors))
            ok = False
        else:
            print("ok   %s%s" % (name, (": " + errors[0]) if errors else ""))
        shutil.rmtree(root)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
