"""Reads float32 tensors and metadata of a safetensors file with the standard library only."""
import array
import json
import struct


def read(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, e in header.items():
        if e["dtype"] != "F32":
            continue
        a, b = e["data_offsets"]
        t = array.array("f")
        t.frombytes(raw[8 + n + a:8 + n + b])
        tensors[name] = t
    return tensors, meta


def max_relative_difference(a, b):
    """max |a − b| / max |b| per tensor, the largest over the tensors (names must match)."""
    assert a.keys() == b.keys(), f"different tensors: {sorted(a.keys() ^ b.keys())[:5]}"
    worst, where = 0.0, None
    for name in a:
        scale = max((abs(v) for v in b[name]), default=0.0)
        diff = max((abs(x - y) for x, y in zip(a[name], b[name])), default=0.0)
        rel = diff / scale if scale > 0 else diff
        if rel > worst:
            worst, where = rel, name
    return worst, where
