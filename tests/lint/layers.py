#!/usr/bin/env python3
"""layers.py - the layer lint: no core file includes a header from a layer above its own.

The layer order is read from the top-level CMakeLists.txt itself, from the line
`set(CORE_SOURCES ${CORE_BASE} ${CORE_OBS} ...)` (lowest first), so that the picture drawn
there stays the truth. The comment above the lists ("# Layers, lowest first: ...") must name
the same order, and every file a CORE_<LAYER> list names must live in core/<layer>/.

Every core/**/*.{c,h} is read; each `#include "..."` is resolved as the compiler does (beside
the including file first, then from core/). An include that resolves to a header in a layer
above the including file's layer fails the check. Files directly in core/ (main.c) wire a
role and may include any layer. Usage: layers.py [source dir]; exit 0 when clean, 1 otherwise.
"""
import os
import re
import sys


def read_layers(cmake_path):
    """Returns the layer names lowest first, or raises ValueError naming what is wrong."""
    with open(cmake_path, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"set\(\s*CORE_SOURCES\s+([^)]*)\)", text)
    if not m:
        raise ValueError("no set(CORE_SOURCES ...) in %s" % cmake_path)
    layers = [v.lower() for v in re.findall(r"\$\{CORE_([A-Z0-9_]+)\}", m.group(1))]
    if not layers:
        raise ValueError("set(CORE_SOURCES ...) names no ${CORE_<LAYER>} list")
    c = re.search(r"#\s*Layers, lowest first:\s*([a-z0-9_, ]+)", text)
    if not c:
        raise ValueError("no '# Layers, lowest first: ...' comment in %s" % cmake_path)
    said = [w.strip() for w in c.group(1).split(",") if w.strip()]
    if said != layers:
        raise ValueError("the comment says layers %s but CORE_SOURCES orders them %s"
                         % (", ".join(said), ", ".join(layers)))
    for layer in layers:
        lm = re.search(r"set\(\s*CORE_%s\s+([^)]*)\)" % layer.upper(), text)
        if not lm:
            raise ValueError("no set(CORE_%s ...) list" % layer.upper())
        for src in lm.group(1).split():
            if not src.startswith("core/%s/" % layer):
                raise ValueError("CORE_%s lists %s, which is not in core/%s/"
                                 % (layer.upper(), src, layer))
    return layers


def layer_of(rel):
    """The layer directory of a path relative to core/, or None for core/ itself."""
    parts = rel.split(os.sep)
    return parts[0] if len(parts) > 1 else None


def check(root):
    core = os.path.join(root, "core")
    layers = read_layers(os.path.join(root, "CMakeLists.txt"))
    rank = {name: i for i, name in enumerate(layers)}
    errors = []
    for dirpath, _, files in os.walk(core):
        for name in sorted(files):
            if not name.endswith((".c", ".h")):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, core)
            src_layer = layer_of(rel)
            if src_layer is None:
                continue
            if src_layer not in rank:
                errors.append("core/%s: directory core/%s/ is not a layer of CMakeLists.txt"
                              % (rel, src_layer))
                continue
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
                    if not m:
                        continue
                    target = os.path.normpath(os.path.join(dirpath, m.group(1)))
                    if not os.path.exists(target):
                        target = os.path.normpath(os.path.join(core, m.group(1)))
                    if not os.path.exists(target):
                        errors.append("core/%s:%d: include \"%s\" not found"
                                      % (rel, lineno, m.group(1)))
                        continue
                    trel = os.path.relpath(target, core)
                    if trel.startswith(".."):
                        continue  # outside core/ (none today)
                    t_layer = layer_of(trel)
                    if t_layer is None or t_layer not in rank:
                        errors.append("core/%s:%d: includes core/%s, which is in no layer"
                                      % (rel, lineno, trel))
                    elif rank[t_layer] > rank[src_layer]:
                        errors.append("core/%s:%d: includes core/%s: %s is above %s "
                                      "(layers, lowest first: %s)"
                                      % (rel, lineno, trel, t_layer, src_layer,
                                         ", ".join(layers)))
    return layers, errors


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
    try:
        layers, errors = check(os.path.abspath(root))
    except ValueError as e:
        print("layers: %s" % e)
        return 1
    for e in errors:
        print(e)
    if errors:
        print("layers: %d include(s) break the layer order" % len(errors))
        return 1
    print("layers: every core include stays in its layer or below (%s)" % ", ".join(layers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
