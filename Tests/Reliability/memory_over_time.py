#!/usr/bin/env python3
"""Resident memory of `afa train` over a long run (make memory-test).

Samples the process's RSS (/proc/PID/status, VmRSS) twice a second together with the iteration it has
reached (from RUN/log.jsonl). RSS rises and falls within an iteration (large temporaries are mapped and
unmapped by the allocator), so it is compared window by window: the run after warm-up is cut into windows
of 5% of its iterations, and the peak of every window must stay within --tolerance (default 5%) of the
peak of the first one (the lows are reported too). Warm-up ends 5% of the run after the last phase switch
of the recipe (the affinity-label switch at 30% of the iterations), when every buffer of the steady state
exists. Prints the curve (low and peak per tenth of the run). `--analyze FILE` re-reads the samples a
previous run saved with `--json`. Standard library only; exit status 1 when RSS grows past the tolerance.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def last_iteration(log):
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").splitlines()
        for line in reversed(lines):
            try:
                return json.loads(line)["iter"]
            except (ValueError, KeyError):
                continue
    except FileNotFoundError:
        pass
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--afa")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=96, help="side of the generated images")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--json", help="write the samples here")
    ap.add_argument("--analyze", help="analyse the samples saved by an earlier run (--json) instead of running")
    args = ap.parse_args()
    if args.analyze:
        with open(args.analyze) as f:
            d = json.load(f)
        return analyze(d["samples"], d["preset"], d["iterations"], args.tolerance)
    afa = os.path.abspath(args.afa)
    work = tempfile.mkdtemp(prefix="afa-memory-")
    try:
        data = os.path.join(work, "data")
        subprocess.run([afa, "synth", "--out", data, "--train", "64", "--val", "4", "--size", str(args.size), "--classes", "5"],
                       check=True, stdout=subprocess.DEVNULL)
        run = os.path.join(work, "run")
        cmd = [afa, "train", "--data", data, "--out", run, "--preset", args.preset, "--crop", str(args.crop),
               "--batch", str(args.batch), "--iters", str(args.iters), "--eval-every", "0",
               "--checkpoint-every", str(max(1, args.iters // 4))]
        print("+", " ".join(cmd), flush=True)
        start = time.time()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        samples = []   # (seconds, iteration, rss MB)
        while p.poll() is None:
            r = rss_mb(p.pid)
            if r is not None:
                samples.append((time.time() - start, last_iteration(os.path.join(run, "log.jsonl")), r))
            time.sleep(0.5)
        err = p.stderr.read().decode(errors="replace")
        if p.returncode != 0:
            print(err[-3000:], file=sys.stderr)
            raise SystemExit(f"afa train failed with status {p.returncode}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "iterations": args.iters, "samples": samples}, f)
    return analyze(samples, args.preset, args.iters, args.tolerance)


def analyze(samples, preset, iters, tolerance):
    warm = int(iters * 0.35)
    width = max(1, iters // 20)
    windows = {}
    for _, it, r in samples:
        if it >= warm:
            windows.setdefault((it - warm) // width, []).append(r)
    keys = sorted(windows)
    if len(keys) < 2:
        raise SystemExit("too few samples after warm-up")
    first_peak, first_low = max(windows[keys[0]]), min(windows[keys[0]])
    peaks = [max(windows[k]) for k in keys]
    lows = [min(windows[k]) for k in keys]
    print(f"{'iterations':>11} {'low MB':>8} {'peak MB':>8}")
    tenth = max(1, iters // 10)
    rows = {}
    for _, it, r in samples:
        rows.setdefault(it // tenth, []).append(r)
    for k in sorted(rows):
        print(f"{k * tenth:>5}-{min(iters, (k + 1) * tenth):<5} {min(rows[k]):>8.1f} {max(rows[k]):>8.1f}")
    growth = max(peaks) / first_peak - 1
    print(f"{preset} {iters} iterations ({len(samples)} samples), {len(keys)} windows of {width} iterations after warm-up "
          f"(iteration {warm}): peak {first_peak:.1f} MB in the first window, {max(peaks):.1f} MB at most later "
          f"({growth * 100:+.1f}%), {peaks[-1]:.1f} MB in the last ({(peaks[-1] / first_peak - 1) * 100:+.1f}%); "
          f"lows {first_low:.1f} → {lows[-1]:.1f} MB ({(lows[-1] / first_low - 1) * 100:+.1f}%)")
    ok = growth <= tolerance
    print("memory over time: " + ("PASS" if ok else f"FAIL (a window's peak is more than {tolerance * 100:.0f}% above the first)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
