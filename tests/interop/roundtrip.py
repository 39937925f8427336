#!/usr/bin/env python3
"""Interoperability with the reference Python `safetensors` package.

  roundtrip.py check <dir>   reads <dir>/from_cpp.safetensors (written by peft) and compares it with the
                             expectations in <dir>/from_cpp.json; then writes <dir>/from_python.safetensors
                             (F32, F64, F16, I64 tensors and metadata) for peft to read back.
Exit code 77 when numpy or safetensors is not installed (the test is then skipped).
"""
import json
import sys

try:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save_file
except ImportError as e:  # pragma: no cover
    print(f"SKIPPED: {e}")
    sys.exit(77)


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "check":
        print(__doc__)
        return 2
    d = sys.argv[2]
    expected = json.load(open(f"{d}/from_cpp.json"))
    with safe_open(f"{d}/from_cpp.safetensors", "np") as f:
        meta = f.metadata()
        assert meta == expected["metadata"], (meta, expected["metadata"])
        keys = sorted(f.keys())
        assert keys == sorted(expected["tensors"]), (keys, sorted(expected["tensors"]))
        for name, want in expected["tensors"].items():
            t = f.get_tensor(name)
            assert t.dtype == np.float32, (name, t.dtype)
            assert list(t.shape) == want["shape"], (name, t.shape, want["shape"])
            assert np.allclose(t.reshape(-1), np.array(want["values"], dtype=np.float32), rtol=0, atol=0), name
    print(f"python read {len(keys)} tensors written by peft: names, shapes, values and metadata match")
    rng = np.random.default_rng(7)
    save_file({
        "f32": rng.normal(size=(3, 4)).astype(np.float32),
        "f64": rng.normal(size=(5,)).astype(np.float64),
        "f16": np.array([1.0, -2.0, 0.5, 65504.0, 6e-8], dtype=np.float16),
        "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
    }, f"{d}/from_python.safetensors", metadata={"format": "np", "origin": "python"})
    with open(f"{d}/from_python.json", "w") as out:
        with safe_open(f"{d}/from_python.safetensors", "np") as f:
            json.dump({k: {"shape": list(f.get_tensor(k).shape),
                           "values": f.get_tensor(k).astype(np.float64).reshape(-1).tolist()} for k in f.keys()}, out)
    print("python wrote from_python.safetensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
