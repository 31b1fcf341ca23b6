#!/usr/bin/env python3
"""Dense CRF: this product against pydensecrf on the same input (benchmark-only; `make bench-crf`).

Makes a VOC-sized case with `make_crf_golden.py` (image of flat regions, noisy probabilities that follow
them; 500x375, 21 classes by default), checks that `afa replay` reproduces pydensecrf on it
(`compare.py --recommended --require-all`), then times both in alternating rounds (the machine may be
shared, so neither side gets the quiet minutes alone) and prints the medians and their ratio.

    compare_crf.py --afa .build/release/afa --reference ../shared/reference [--width 500 --height 375
                   --classes 21 --threads 2 --rounds 5 --runs 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def time_pydensecrf(image, prob, params, runs):
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax
    c, h, w = prob.shape
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        d = dcrf.DenseCRF2D(w, h, c)
        d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(prob)))
        d.addPairwiseGaussian(sxy=params["pos_xy_std"], compat=params["pos_w"])
        d.addPairwiseBilateral(sxy=params["bi_xy_std"], srgb=params["bi_rgb_std"], rgbim=image, compat=params["bi_w"])
        np.array(d.inference(params["iters"]))
        times.append(time.perf_counter() - t0)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--afa", required=True)
    ap.add_argument("--reference", required=True, help="folder with make_crf_golden.py and compare.py")
    ap.add_argument("--width", type=int, default=500)
    ap.add_argument("--height", type=int, default=375)
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per side and round")
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()
    sys.path.insert(0, a.reference)
    from compare import read_safetensors

    with tempfile.TemporaryDirectory() as tmp:
        case = os.path.join(tmp, "case.safetensors")
        subprocess.run([sys.executable, os.path.join(a.reference, "make_crf_golden.py"), case, "--seed", "7",
                        "--height", str(a.height), "--width", str(a.width), "--classes", str(a.classes)],
                       check=True, capture_output=True)
        dump = os.path.join(tmp, "dump.safetensors")
        subprocess.run([a.afa, "replay", case, "--output", dump], check=True, capture_output=True)
        cmp = subprocess.run([sys.executable, os.path.join(a.reference, "compare.py"), dump, case, "--recommended",
                              "--require-all", "--quiet"], capture_output=True, text=True)
        print(f"replay against pydensecrf on this input: {(cmp.stdout.strip().splitlines() or ['?'])[-1]}")
        if cmp.returncode != 0:
            sys.exit("the replay does not match pydensecrf on the benchmark input")
        tensors, meta = read_safetensors(case)
        image, prob = np.array(tensors["crf.image"], order="C"), np.array(tensors["crf.prob"], order="C")  # writable copies
        params = json.loads(meta["crf"])
        ours, theirs = [], []
        for _ in range(a.rounds):
            out = subprocess.run([a.afa, "bench", "crf", "--input", case, "--threads", str(a.threads), "--runs", str(a.runs),
                                  "--json"], check=True, capture_output=True, text=True).stdout
            ours.append(json.loads(out.strip().splitlines()[-1])["median_ms"])
            theirs.append(1e3 * statistics.median(time_pydensecrf(image, prob, params, a.runs)))
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(f"dense CRF {a.width}x{a.height}, {a.classes} classes, {params['iters']} iterations "
          f"({a.rounds} alternating rounds of {a.runs} runs, medians):")
    print(f"  pydensecrf (1 thread)        {mt:8.1f} ms   rounds: {', '.join(f'{t:.0f}' for t in theirs)}")
    print(f"  afa ({a.threads} thread{'s' if a.threads > 1 else ''})               {mo:8.1f} ms   rounds: {', '.join(f'{t:.0f}' for t in ours)}")
    print(f"  ratio afa / pydensecrf       {mo / mt:8.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"afa_ms": mo, "pydensecrf_ms": mt, "ratio": mo / mt, "threads": a.threads, "afa_rounds": ours,
                       "pydensecrf_rounds": theirs, "width": a.width, "height": a.height, "classes": a.classes}, f, indent=1)


if __name__ == "__main__":
    main()
