#!/usr/bin/env python3
"""Writes the seed corpora in Tests/Fuzz/corpus/ (committed; run again only to change them):
valid files of every kind the product reads plus hand-made edge cases. Uses the `afa` executable for
images, masks, a micro checkpoint and its recipe. Standard library only."""
import json
import os
import struct
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
afa = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", ".build", "release", "afa")
corpus = os.path.join(here, "corpus")


def put(kind, name, data):
    os.makedirs(os.path.join(corpus, kind), exist_ok=True)
    with open(os.path.join(corpus, kind, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def copy(kind, src, name=None):
    with open(src, "rb") as f:
        put(kind, name or os.path.basename(src), f.read())


def safetensors(tensors, metadata=None):
    """tensors: name -> (dtype, shape, raw bytes)."""
    header, blob = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


# safetensors: every dtype, metadata, scalars, empty tensors, and broken headers
f32 = struct.pack("<6f", 1, -2, 3.5, 0, 1e-30, 7)
put("safetensors", "f32.safetensors", safetensors({"a.weight": ("F32", [2, 3], f32)}, {"format": "pt"}))
put("safetensors", "dtypes.safetensors", safetensors({
    "f16": ("F16", [2], struct.pack("<2e", 1.5, -2)), "bf16": ("BF16", [2], b"\x80\x3f\x00\xc0"),
    "f64": ("F64", [1], struct.pack("<d", 2.25)), "i64": ("I64", [], struct.pack("<q", 42)),
    "i32": ("I32", [2], struct.pack("<2i", -1, 7)), "u8": ("U8", [3], b"\x00\x7f\xff"), "b": ("BOOL", [2], b"\x00\x01"),
    "empty": ("F32", [0, 4], b"")}))
put("safetensors", "empty-header.safetensors", struct.pack("<Q", 2) + b"{}")
put("safetensors", "overlap.safetensors", struct.pack("<Q", 96) + json.dumps(
    {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
).encode().ljust(96) + f32)
put("safetensors", "huge-shape.safetensors", struct.pack("<Q", 80) + json.dumps(
    {"x": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 8]}}).encode().ljust(80) + f32)
put("safetensors", "truncated.safetensors", safetensors({"a": ("F32", [2, 3], f32)})[:-7])

# dataset text files: classes.txt \0 split list \0 cls_labels.txt
put("dataset-lists", "valid.txt", "background\ncat\ndog\n\0img_a\nimg_b extra\n\0img_a 1\nimg_b 2 1\n")
put("dataset-lists", "bad-ids.txt", "background\ncat\n\0x\ny\n\0x 0 5 -1 cat\ny,1\n")
put("dataset-lists", "no-labels.txt", "\0a\n\0")

with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([afa, "synth", "--out", f"{tmp}/data", "--train", "4", "--val", "2", "--size", "32", "--classes", "3",
                    "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
    for sub, kinds in (("JPEGImages", ["image"]), ("SegmentationClass", ["image", "labels"])):
        folder = os.path.join(tmp, "data", sub)
        for name in sorted(os.listdir(folder))[:3]:
            for kind in kinds:
                copy(kind, os.path.join(folder, name))
    # A micro model (a few thousand values) so a whole checkpoint fits the fuzzer's input length.
    base = os.path.join(tmp, "base")
    subprocess.run([afa, "train", "--data", f"{tmp}/data", "--out", base, "--preset", "tiny", "--crop", "32", "--batch", "2",
                    "--iters", "1", "--eval-every", "0"], check=True, stdout=subprocess.DEVNULL)
    recipe = json.load(open(os.path.join(base, "config.json")))
    put("recipe", "tiny.json", json.dumps(recipe, indent=1, sort_keys=True))
    m = recipe["model"]
    m.update(embed_dims=[4, 4, 4, 4], num_heads=[1, 1, 1, 1], depths=[1, 1, 1, 2], embedding_dim=4)
    with open(os.path.join(tmp, "micro.json"), "w") as f:
        json.dump(recipe, f)
    put("recipe", "micro.json", json.dumps(recipe, sort_keys=True))
    micro = os.path.join(tmp, "micro")
    subprocess.run([afa, "train", "--data", f"{tmp}/data", "--out", micro, "--config", f"{tmp}/micro.json", "--iters", "1",
                    "--eval-every", "0"], check=True, stdout=subprocess.DEVNULL)
    copy("checkpoint", os.path.join(micro, "checkpoints", "latest.safetensors"), "micro.safetensors")
# Edge-case images: truncated JPEG, PNG signature only, a JPEG frame header declaring 65500 x 60000.
jpg = open(os.path.join(corpus, "image", sorted(n for n in os.listdir(os.path.join(corpus, "image")) if n.endswith(".jpg"))[0]), "rb").read()
put("image", "truncated.jpg", jpg[: len(jpg) // 2])
put("image", "signature.png", b"\x89PNG\r\n\x1a\n")
sof = next(i for i in range(len(jpg) - 9) if jpg[i] == 0xFF and jpg[i + 1] in (0xC0, 0xC2))
put("image", "huge-declared.jpg", jpg[: sof + 5] + struct.pack(">HH", 60000, 65500) + jpg[sof + 9:])
for kind in sorted(os.listdir(corpus)):
    files = os.listdir(os.path.join(corpus, kind))
    print(f"{kind}: {len(files)} seeds, largest {max(os.path.getsize(os.path.join(corpus, kind, f)) for f in files)} bytes")
