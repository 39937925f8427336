#!/usr/bin/env python3
"""Checks event files written by peft::train::tensorboard_writer with TensorBoard's own reader.

Usage:
  tensorboard_check.py DIR                 print every scalar as "tag<TAB>step<TAB>value"
  tensorboard_check.py DIR EXPECTED_JSON   check the scalars equal EXPECTED_JSON exactly

EXPECTED_JSON is a list of [tag, step, value] triples, e.g. '[["train/loss", 1, 0.5]]' (NaN and
Infinity are accepted). The set of (tag, step) pairs read must equal the expected one, and each value
must equal the expected value rounded to float32 (the writer stores floats). Besides TensorBoard's
reader, the TFRecord framing (lengths and both masked CRC-32Cs) is checked independently, because
TensorBoard's loader stops silently at a corrupt record.

Exit status: 0 pass, 1 mismatch or corrupt file, 2 usage error, 77 tensorboard not importable (skip).
"""

import glob
import json
import math
import os
import struct
import sys

try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
except ImportError as e:  # ctest SKIP_RETURN_CODE
    print(f"SKIP: cannot import tensorboard: {e}", file=sys.stderr)
    sys.exit(77)


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def check_framing(path):
    """Returns a list of problems in the TFRecord framing of one file (empty if none)."""
    with open(path, "rb") as f:
        data = f.read()
    pos, n, problems = 0, 0, []
    while pos < len(data):
        if len(data) - pos < 12:
            return problems + [f"{path}: record {n}: truncated header"]
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        if hcrc != masked_crc32c(header):
            return problems + [f"{path}: record {n}: bad length CRC"]
        body = data[pos + 12 : pos + 12 + length]
        tail = data[pos + 12 + length : pos + 16 + length]
        if len(body) < length or len(tail) < 4:
            return problems + [f"{path}: record {n}: truncated data"]
        if struct.unpack("<I", tail)[0] != masked_crc32c(body):
            problems.append(f"{path}: record {n}: bad data CRC")
        pos += 16 + length
        n += 1
    if n == 0:
        problems.append(f"{path}: no records")
    return problems


def as_float32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    logdir = argv[1]
    files = sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
    if not files:
        print(f"FAIL: no events.out.tfevents.* file in '{logdir}'", file=sys.stderr)
        return 1
    problems = [p for f in files for p in check_framing(f)]

    acc = EventAccumulator(logdir, size_guidance={"scalars": 0})  # 0: keep every event, no sampling
    acc.Reload()
    if acc.file_version != 2.0:
        problems.append(f"file_version is {acc.file_version!r}, expected 2.0 ('brain.Event:2')")
    got = {}
    for tag in acc.Tags()["scalars"]:
        for ev in acc.Scalars(tag):
            if (tag, ev.step) in got:
                problems.append(f"duplicate scalar {tag!r} step {ev.step}")
            got[(tag, ev.step)] = ev.value

    if len(argv) == 2:
        for (tag, step), value in sorted(got.items()):
            print(f"{tag}\t{step}\t{value!r}")
    else:
        try:
            expected = {(str(t), int(s)): as_float32(float(v)) for t, s, v in json.loads(argv[2])}
        except (ValueError, TypeError) as e:
            print(f"usage: EXPECTED_JSON must be a list of [tag, step, value]: {e}", file=sys.stderr)
            return 2
        for key in sorted(expected.keys() - got.keys()):
            problems.append(f"missing scalar {key[0]!r} step {key[1]}")
        for key in sorted(got.keys() - expected.keys()):
            problems.append(f"unexpected scalar {key[0]!r} step {key[1]} = {got[key]!r}")
        for key in sorted(expected.keys() & got.keys()):
            if not same(got[key], expected[key]):
                problems.append(f"scalar {key[0]!r} step {key[1]}: read {got[key]!r}, expected {expected[key]!r}")

    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"OK: {len(got)} scalars in {len(files)} file(s) under '{logdir}'", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
