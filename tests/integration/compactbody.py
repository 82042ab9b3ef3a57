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

def _counter(name, entries, folded, toks):
    out = s(name) + varint(len(entries))
    for i, p, n in entries:
        out += varint(i) + varint(p) + varint(n)
    out += varint(len(folded)) + b"".join(varint(i) for i in folded)
    out += varint(len(toks))
    for t, a, st in toks:
        out += s(t) + varint((a << 1) ^ (a >> 63) if a >= 0 else ((-a - 1) << 1) | 1) + bytes([st])
    return out


def body_life(env, reps, counters):
    """A "CSB2" body (each counter ends with its lifecycle state): counters as body()'s, each
    with a 5th member (flags, floor, dfloor): flags 1 deleted | 2 sealed, a floor
    [(rep_index, pos, neg)] or None."""
    e = json.dumps(env, separators=(",", ":")).encode()
    out = b"CSB2" + s(e) + varint(len(reps)) + b"".join(s(r) for r in reps)
    out += varint(len(counters))
    for name, entries, folded, toks, (flags, floor, dfloor) in counters:
        out += _counter(name, entries, folded, toks)
        out += bytes([flags | (4 if floor is not None else 0) | (8 if dfloor is not None else 0)])
        for fl in (floor, dfloor):
            if fl is not None:
                out += varint(len(fl)) + b"".join(varint(i) + varint(p) + varint(n)
                                                  for i, p, n in fl)
    return out


class Reader:
    def __init__(self, data):
        self.d, self.i = data, 0

    def varint(self):
        v, shift = 0, 0
        while True:
            b = self.d[self.i]
            self.i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v

    def bytes(self):
        n = self.varint()
        self.i += n
        return self.d[self.i - n:self.i]


def parse(data):
    """Reads a compact body whole (as a node of its version does: "CSB1" without lifecycle,
    "CSB2" with it). @return (envelope, replica table, {name: counter dict}); raises when a
    byte is left over or missing."""
    magic, rd = data[:4], Reader(data[4:])
    assert magic in (b"CSB1", b"CSB2"), magic
    env = json.loads(rd.bytes())
    reps = [rd.bytes().decode() for _ in range(rd.varint())]
    out = {}
    for _ in range(rd.varint()):
        name = rd.bytes().decode()
        c = {"entries": {reps[rd.varint()]: (rd.varint(), rd.varint())
                         for _ in range(rd.varint())}}
        c["folded"] = [reps[rd.varint()] for _ in range(rd.varint())]
        toks = []
        for _ in range(rd.varint()):
            toks.append((rd.bytes(), rd.varint(), rd.d[rd.i]))
            rd.i += 1
        c["tokens"] = toks
        if magic == b"CSB2":
            flags = rd.d[rd.i]
            rd.i += 1
            c["flags"] = flags & 3
            for bit, key in ((4, "floor"), (8, "dfloor")):
                if flags & bit:
                    c[key] = {reps[rd.varint()]: (rd.varint(), rd.varint())
                              for _ in range(rd.varint())}
        out[name] = c
    assert rd.i == len(rd.d), "%d bytes after the last counter" % (len(rd.d) - rd.i)
    return env, reps, out
