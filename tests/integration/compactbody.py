"""compactbody.py - builds compact /sync bodies (docs/API.md, "The compact body") for the tests."""
import json

def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)

def s(x):
    x = x.encode() if isinstance(x, str) else x
    return varint(len(x)) + x

def body(env, reps, counters):
    """counters: [(name, [(rep_index, pos, neg)], [folded rep_index], [(tok, amount, settled)])]"""
    e = json.dumps(env, separators=(",", ":")).encode()
    out = b"CSB1" + s(e) + varint(len(reps)) + b"".join(s(r) for r in reps)
    out += varint(len(counters))
    for name, entries, folded, toks in counters:
        out += s(name) + varint(len(entries))
        for i, p, n in entries:
            out += varint(i) + varint(p) + varint(n)
        out += varint(len(folded)) + b"".join(varint(i) for i in folded)
        out += varint(len(toks))
        for t, a, st in toks:
            out += s(t) + varint((a << 1) ^ (a >> 63) if a >= 0 else ((-a - 1) << 1) | 1) + bytes([st])
    return out
