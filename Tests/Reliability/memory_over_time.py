#!/usr/bin/env python3
"""Resident memory of `afa train` over a long run (make memory-test).

Samples the process's RSS (/proc/PID/status, VmRSS) twice a second together with the iteration it has
reached (from RUN/log.jsonl), prints the curve at every tenth of the run, and checks that after warm-up
RSS stays within --tolerance (default 5%) of its value at the end of warm-up. Warm-up ends 5% of the run
after the last phase switch of the recipe (the affinity-label switch at 30% of the iterations), when
every buffer of the steady state exists. Standard library only; exit status 1 when RSS grows past the
tolerance.
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
    ap.add_argument("--afa", required=True)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=96, help="side of the generated images")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--json", help="write the samples here")
    args = ap.parse_args()
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

    warm = int(args.iters * 0.35)
    steady = [s for s in samples if s[1] >= warm]
    if not steady:
        raise SystemExit("no samples after warm-up")
    base = steady[0][2]
    peak = max(s[2] for s in steady)
    final = steady[-1][2]
    print(f"{'iteration':>9} {'seconds':>8} {'RSS MB':>8}")
    shown = set()
    for t, it, r in samples:
        tenth = it * 10 // args.iters
        if tenth not in shown and it > 0:
            shown.add(tenth)
            print(f"{it:>9} {t:>8.1f} {r:>8.1f}")
    print(f"{samples[-1][1]:>9} {samples[-1][0]:>8.1f} {samples[-1][2]:>8.1f}")
    growth = peak / base - 1
    print(f"{args.preset} {args.iters} iterations ({len(samples)} samples): RSS after warm-up (iteration {steady[0][1]}) "
          f"{base:.1f} MB, peak after it {peak:.1f} MB ({growth * 100:+.1f}%), final {final:.1f} MB ({(final / base - 1) * 100:+.1f}%)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "iterations": args.iters, "warmup_iteration": steady[0][1], "samples": samples}, f)
    ok = growth <= args.tolerance
    print("memory over time: " + ("PASS" if ok else f"FAIL (more than {args.tolerance * 100:.0f}% above the warm-up value)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
