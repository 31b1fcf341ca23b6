#!/usr/bin/env python3
"""`afa train`'s TensorBoard event files, read back by TensorBoard's own reader (make check-tensorboard).

Trains a short run with evaluations, then checks RUN/tb/ with `EventAccumulator`: every scalar tag is
there at the logged and evaluated iterations with the values of log.jsonl and eval.jsonl, and the picture
grid is there at each evaluation as a PNG of the stated size; every record's two masked CRC-32Cs are
checked with TensorBoard's implementation. A resumed run's START marker makes the reader drop the first
attempt's events after the checkpoint. Needs PyPI `tensorboard` (test-only); skips with a message when it
cannot be imported.
"""
import argparse
import glob
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checklist import Checklist  # noqa: E402
from small_run import small_run  # noqa: E402

CHECKS = Checklist("check-tensorboard")
check = CHECKS.check


def records(path, masked_crc32c):
    """The serialized events of one file, checking the framing and both CRCs of every record."""
    out, bad = [], 0
    with open(path, "rb") as f:
        raw = f.read()
    i = 0
    while i < len(raw):
        header = raw[i:i + 8]
        (n,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", raw[i + 8:i + 12])
        data = raw[i + 12:i + 12 + n]
        (dcrc,) = struct.unpack("<I", raw[i + 12 + n:i + 16 + n])
        bad += (masked_crc32c(header) != hcrc) + (masked_crc32c(data) != dcrc)
        out.append(data)
        i += 16 + n
    return out, bad, i == len(raw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--afa", required=True)
    args = ap.parse_args()
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    except ImportError as e:
        print(f"check-tensorboard: skipped: TensorBoard's reader cannot be imported ({e}); `pip install tensorboard` to run it")
        return 0
    work = tempfile.mkdtemp(prefix="afa-tb-")
    try:
        run = small_run(os.path.abspath(args.afa), work)
        files = glob.glob(os.path.join(run, "tb", "events.out.tfevents.*"))
        check(len(files) == 1, f"one event file in RUN/tb ({[os.path.basename(f) for f in files]})")
        recs, bad, whole = records(files[0], masked_crc32c)
        check(whole and bad == 0 and len(recs) > 50, f"{len(recs)} records, lengths consistent, {bad} CRC mismatches")

        ea = EventAccumulator(os.path.join(run, "tb"), size_guidance={"images": 0, "scalars": 0})
        ea.Reload()
        tags = ea.Tags()
        log = [json.loads(x) for x in open(os.path.join(run, "log.jsonl"))]
        evals = [json.loads(x) for x in open(os.path.join(run, "eval.jsonl"))]
        expected = {"loss/total": "loss", "loss/cls": "cls", "loss/seg": "seg", "loss/aff": "aff", "throughput/images_per_s": "images_per_s"}
        for tag, key in expected.items():
            got = [(e.step, e.value) for e in ea.Scalars(tag)] if tag in tags["scalars"] else []
            want = [(x["iter"], x[key]) for x in log]
            close = len(got) == len(want) and all(a[0] == b[0] and abs(a[1] - b[1]) <= 1e-6 * max(1, abs(b[1])) for a, b in zip(got, want))
            check(close, f"{tag}: steps {[s for s, _ in got]} and values as log.jsonl's '{key}'")
        for key in ["pseudo_bg", "pseudo_fg", "pseudo_ignored", "refined_bg", "refined_fg", "refined_ignored", "pairs_labelled", "pairs_positive"]:
            got = [(e.step, e.value) for e in ea.Scalars("labels/" + key)] if "labels/" + key in tags["scalars"] else []
            want = [(x["iter"], x["labels"][key]) for x in log]
            check(len(got) == len(want) and all(a[0] == b[0] and abs(a[1] - b[1]) <= 1e-6 for a, b in zip(got, want)),
                  f"labels/{key}: as log.jsonl's labels.{key} ({[round(v, 3) for _, v in got[:3]]} ...)")
        for g, name in enumerate(["backbone", "backbone_norm", "cls_and_afa_head", "decoder"]):
            got = [(e.step, e.value) for e in ea.Scalars("lr/" + name)] if "lr/" + name in tags["scalars"] else []
            check([s for s, _ in got] == [x["iter"] for x in log] and all(abs(v - x["lr"][g]) <= 1e-6 * max(x["lr"][g], 1e-12) for (_, v), x in zip(got, log)),
                  f"lr/{name} at every logged iteration")
        for tag, key in {"eval/cam_miou": "cam_miou", "eval/aff_miou": "aff_miou", "eval/seg_miou": "seg_miou", "eval/cls_f1": "cls_f1"}.items():
            got = [(e.step, e.value) for e in ea.Scalars(tag)] if tag in tags["scalars"] else []
            check([s for s, _ in got] == [x["iter"] for x in evals] and all(abs(v - x[key]) <= 1e-6 for (_, v), x in zip(got, evals)),
                  f"{tag}: {[(s, round(v, 4)) for s, v in got]}")
        images = ea.Images("pictures") if "pictures" in tags["images"] else []
        check([i.step for i in images] == [x["iter"] for x in evals], f"picture grids at the evaluations: steps {[i.step for i in images]}")
        check(all(i.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", i.encoded_image_string[16:24]) == (i.width, i.height)
                  for i in images), "each grid is a PNG of the stated width and height " + str([(i.width, i.height) for i in images[:1]]))

        # a resumed run: the first attempt's events after the checkpoint are dropped by the reader
        resumed = os.path.join(work, "resumed")
        shutil.copytree(run, resumed)
        for f in glob.glob(os.path.join(resumed, "checkpoints", "*")):
            if not f.endswith(("iter_20.safetensors",)):
                os.remove(f)
        subprocess.run([os.path.abspath(args.afa), "train", "--data", os.path.join(work, "data"), "--out", resumed, "--resume",
                        "--threads", "2"], check=True, stdout=subprocess.DEVNULL)
        ea = EventAccumulator(os.path.join(resumed, "tb"), size_guidance={"scalars": 0})
        ea.Reload()
        steps = [e.step for e in ea.Scalars("loss/total")]
        check(steps == [x["iter"] for x in log] and len(glob.glob(os.path.join(resumed, "tb", "*"))) == 2,
              f"after a resume from iteration 20 (two files), each step once: {steps}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return CHECKS.finish()


if __name__ == "__main__":
    sys.exit(main())
