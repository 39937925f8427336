#!/usr/bin/env python3
"""Writes a GGUF file with one tensor of every type peft reads (F32, F16, BF16, Q4_0, Q4_1, Q8_0,
Q4_K, Q6_K) and, next to it, what the `gguf` package's `dequantize` makes of each (raw float32,
name-sorted, one .f32 file per tensor). The test reads both and compares bit for bit.

Block contents are random bytes (the quantized codes and 6-bit scales), with every fp16 scale
field replaced by a finite random half, so the values are ordinary numbers and every bit of the
layout is exercised.

  make_dequant_fixture.py OUT_DIR
"""
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.constants import GGML_QUANT_SIZES

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(1234)


def halfs(n):
    return (rng.standard_normal(n).astype(np.float32) * 0.05).astype(np.float16).view(np.uint8).reshape(n, 2)


# Byte offsets of fp16 fields inside each block.
half_fields = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q8_0: [0], Q.Q4_K: [0, 2], Q.Q6_K: [208]}
rows = 3
w = gguf.GGUFWriter(str(out / "dequant.gguf"), "llama")
w.add_uint32("peft.test.rows", rows)
expected = {}
for qt in [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.Q4_K, Q.Q6_K]:
    block, size = GGML_QUANT_SIZES[qt]
    cols = 512 if block > 1 else 40
    nblocks = rows * cols // block
    if qt == Q.F32:
        raw = rng.standard_normal(rows * cols).astype(np.float32).view(np.uint8)
    elif qt == Q.F16:
        raw = rng.standard_normal(rows * cols).astype(np.float16).view(np.uint8)
    elif qt == Q.BF16:
        raw = (rng.standard_normal(rows * cols).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    else:
        raw = rng.integers(0, 256, size=(nblocks, size), dtype=np.uint8)
        for off in half_fields[qt]:
            raw[:, off:off + 2] = halfs(nblocks)
        raw = raw.reshape(-1)
    raw = raw.reshape(rows, cols // block * size)
    name = f"t.{qt.name.lower()}"
    w.add_tensor(name, raw, raw_dtype=qt)
    expected[name] = gguf.quants.dequantize(raw, qt).astype(np.float32).reshape(-1)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
for name, v in expected.items():
    v.tofile(out / (name + ".f32"))
print(f"wrote {len(expected)} tensors to {out / 'dequant.gguf'}")
