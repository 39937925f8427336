#!/usr/bin/env python3
"""Copies a GGUF file with one value of one tensor made non-finite, for the error tests.

usage: poison_gguf.py IN OUT TENSOR

An F32 tensor gets a NaN as its first element; an F16 or BF16 one an fp16/bf16 infinity; a
quantized one (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K) an fp16 infinity as its first block's scale d. Reads
the header with the standard library only (GGUF version 3, little-endian).
"""
import shutil
import struct
import sys

SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
# ggml type id -> (name, byte offset of the value to poison inside the first block, bytes to write)
POISON = {
    0: ("F32", 0, struct.pack("<I", 0x7FC00000)),
    1: ("F16", 0, struct.pack("<H", 0x7C00)),
    30: ("BF16", 0, struct.pack("<H", 0x7F80)),
    2: ("Q4_0", 0, struct.pack("<H", 0x7C00)),
    3: ("Q4_1", 0, struct.pack("<H", 0x7C00)),
    8: ("Q8_0", 0, struct.pack("<H", 0x7C00)),
    12: ("Q4_K", 0, struct.pack("<H", 0x7C00)),
    14: ("Q6_K", 208, struct.pack("<H", 0x7C00)),
}


def main(src, dst, tensor):
    with open(src, "rb") as f:
        data = f.read(64 << 20)  # the header is well inside this
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take("Q")
        s = data[pos:pos + n].decode("utf-8", "replace")
        pos += n
        return s

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        return take(SCALAR[t])

    if data[:4] != b"GGUF" or take_at(data, 4) != 3:
        sys.exit(f"{src}: not a version 3 GGUF file")
    pos = 8
    n_tensors, n_kv = take("Q"), take("Q")
    alignment = 32
    for _ in range(n_kv):
        key, t = string(), take("I")
        v = value(t)
        if key == "general.alignment":
            alignment = v
    found = None
    for _ in range(n_tensors):
        name = string()
        dims = [take("Q") for _ in range(take("I"))]
        ttype, offset = take("I"), take("Q")
        if name == tensor:
            found = (ttype, offset)
    if not found:
        sys.exit(f"{src}: no tensor '{tensor}'")
    ttype, offset = found
    if ttype not in POISON:
        sys.exit(f"{src}: tensor '{tensor}' has ggml type {ttype}, which this script does not poison")
    _, within, patch = POISON[ttype]
    start = (pos + alignment - 1) // alignment * alignment
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        f.seek(start + offset + within)
        f.write(patch)


def take_at(data, at):
    return struct.unpack_from("<I", data, at)[0]


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
