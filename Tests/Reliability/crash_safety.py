#!/usr/bin/env python3
"""Crash-safety checks of `afa train` (make crash-test; a short form runs in make test).

kill/resume: trains a small run uninterrupted, then trains the same run again while killing it with
SIGKILL at random moments (`--kills` times; every other kill aimed at a checkpoint being written, found by
watching for the writer's temporary file), resuming each time with `--resume`. The final checkpoint must
equal the uninterrupted run's byte for byte (all tensors: weights, optimiser state, RNG, counters).

full disk: a run whose directory is a small tmpfs (root, or an unprivileged user+mount namespace) must
stop with a clear "No space left on device" error naming the file, and its latest checkpoint must still
open (`afa eval` on it).

Standard library only. Exit status 0 when every check passes; checks that cannot run here (no way to
mount a tmpfs) are reported as SKIPPED and do not fail the run.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time


def train_cmd(afa, data, out, iters, resume=False):
    cmd = [afa, "train", "--data", data, "--out", out, "--preset", "tiny", "--crop", "48", "--batch", "2",
           "--iters", str(iters), "--checkpoint-every", "2", "--eval-every", "0", "--seed", "7"]
    return cmd + (["--resume"] if resume else [])


def tensors(path):
    """name -> (dtype, shape, bytes) of a safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    return {k: (v["dtype"], v["shape"], blob[base + v["data_offsets"][0]:base + v["data_offsets"][1]]) for k, v in header.items()}


def kill_resume(afa, data, work, iters, kills, seed):
    rng = random.Random(seed)
    ref = os.path.join(work, "uninterrupted")
    t0 = time.time()
    subprocess.run(train_cmd(afa, data, ref, iters), check=True, stdout=subprocess.DEVNULL)
    full_s = time.time() - t0
    run = os.path.join(work, "killed")
    ckdir = os.path.join(run, "checkpoints")
    trials = []
    while len(trials) < kills:
        resume = os.path.exists(os.path.join(run, "config.json"))
        p = subprocess.Popen(train_cmd(afa, data, run, iters, resume), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        aim = "checkpoint write" if len(trials) % 2 == 1 else "random moment"
        # Each attempt runs for a random share of the uninterrupted time: on average 70% of the run is spread
        # over the kills (start-up and work since the last checkpoint are lost each time), so all of them happen.
        deadline = time.time() + rng.uniform(0.2, max(0.5, 1.4 * full_s / kills))
        killed_during = None
        while p.poll() is None:
            if aim == "checkpoint write":
                try:
                    busy = [f for f in os.listdir(ckdir) if ".tmp-" in f]
                except FileNotFoundError:
                    busy = []
                if busy and time.time() > deadline - 0.25:
                    p.send_signal(signal.SIGKILL)
                    killed_during = "while writing " + busy[0].split(".tmp-")[0].lstrip(".")
                    break
                time.sleep(0.0005)
            elif time.time() >= deadline:
                p.send_signal(signal.SIGKILL)
                killed_during = "mid-run"
                break
            else:
                time.sleep(0.005)
        _, err = p.communicate()
        if p.returncode == 0:
            break   # finished before the kill: the remaining trials have nothing left to interrupt
        if p.returncode != -signal.SIGKILL:
            print(err.decode(errors="replace"), file=sys.stderr)
            raise SystemExit(f"kill/resume: afa train failed with status {p.returncode}")
        trials.append(killed_during)
        notice = [l for l in err.decode(errors="replace").splitlines() if "resuming from" in l or "starting from" in l]
        print(f"  kill {len(trials):2d}: {killed_during}" + (f"  [{notice[0].strip()[:120]}]" if notice else ""), flush=True)
    p = subprocess.run(train_cmd(afa, data, run, iters, resume=True), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode != 0:
        print(p.stderr.decode(errors="replace"), file=sys.stderr)
        raise SystemExit("kill/resume: the final --resume failed")
    a = tensors(os.path.join(ref, "checkpoints", "latest.safetensors"))
    b = tensors(os.path.join(run, "checkpoints", "latest.safetensors"))
    differ = sorted(k for k in a if k not in b or a[k] != b[k]) + sorted(k for k in b if k not in a)
    during_write = sum(1 for t in trials if t.startswith("while writing"))
    print(f"kill/resume: {len(trials)} SIGKILLs ({during_write} during a checkpoint write), {iters} iterations; "
          f"final checkpoint: {len(a) - len(differ)} of {len(a)} tensors equal to the uninterrupted run's")
    if differ:
        print("  differing: " + ", ".join(differ[:10]), file=sys.stderr)
    return not differ and len(trials) == kills


def mount_prefix():
    """How to run a command with a tmpfs mounted: directly as root, else in a user+mount namespace."""
    if os.geteuid() == 0:
        return []
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return ["unshare", "-rm"] if probe.returncode == 0 else None


def full_disk(afa, data, work):
    prefix = mount_prefix()
    if prefix is None:
        print("full disk: SKIPPED (not root and no user namespaces to mount a tmpfs)")
        return True
    mnt = os.path.join(work, "small-disk")
    os.makedirs(mnt)
    run = os.path.join(mnt, "run")
    # ~1.9 MB per tiny checkpoint at 3 classes: 6 MB hold config, log and two checkpoints, not three.
    script = (f"mount -t tmpfs -o size=6m tmpfs {mnt} && "
              f"{' '.join(train_cmd(afa, data, run, 40))}; status=$?; "
              f"{afa} eval --data {data} --checkpoint {run}/checkpoints/latest.safetensors --json {work}/eval.json >/dev/null 2>{work}/eval.err; "
              f"echo \"eval=$?\" >&2; ls {run}/checkpoints >&2; umount {mnt}; exit $status")
    p = subprocess.run(prefix + ["sh", "-c", script], capture_output=True, text=True)
    err = p.stderr
    message = next((l for l in err.splitlines() if "No space left on device" in l), None)
    eval_ok = "eval=0" in err
    ok = p.returncode != 0 and message is not None and eval_ok
    print(f"full disk: afa train exit {p.returncode}; error: {message.strip() if message else '(none)'}; "
          f"latest checkpoint {'opens and evaluates' if eval_ok else 'DOES NOT OPEN'}")
    if not ok:
        print(err[-3000:], file=sys.stderr)
        if os.path.exists(os.path.join(work, "eval.err")):
            print(open(os.path.join(work, "eval.err")).read()[-2000:], file=sys.stderr)
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--afa", required=True)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--iters", type=int, default=160)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    afa = os.path.abspath(args.afa)
    work = tempfile.mkdtemp(prefix="afa-crash-")
    try:
        data = os.path.join(work, "data")
        subprocess.run([afa, "synth", "--out", data, "--train", "24", "--val", "8", "--size", "64", "--classes", "3", "--seed", "3"],
                       check=True, stdout=subprocess.DEVNULL)
        ok = kill_resume(afa, data, work, args.iters, args.kills, args.seed)
        ok = full_disk(afa, data, work) and ok
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("crash safety: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
