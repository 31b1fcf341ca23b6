#!/usr/bin/env python3
"""Data-parallel throughput and its prediction at scale (make bench-dist).

On this machine: images/s of full AFA training iterations with 1 rank × T threads (`afa train`) against
T ranks × 1 thread (`mpirun -np T afa-mpi train`, same global batch), in alternating rounds; the gradient
allreduce alone (`afa-mpi bench-allreduce`) over shared memory and over TCP; the backward pass's share of
an iteration (`afa bench iteration`).

From those figures, the predicted scaling efficiency of N machines (each running what one rank runs
here, with T threads) on 10 and 25 Gb/s links: a ring allreduce moves 2(N−1)/N of the gradient buffer
through each link per step, plus 2(N−1) message latencies. Without overlap a step costs compute +
allreduce; overlapped with the backward pass (buckets sent as their gradients are ready) the allreduce
hides behind up to the backward's time.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "Distributed"))
from mpi import mpi_env  # noqa: E402  (the tests' way of starting Open MPI jobs)

WORKLOADS = {
    # name: (preset, crop, global batch, iterations, dataset image size)
    "tiny": ("tiny", 96, 4, 30, 96),
    "mit_b1": ("mit_b1", 320, 2, 8, 360),
}


def run(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env or mpi_env())
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-2000:] + p.stderr[-2000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return p.stdout


def images_per_second(run_dir, skip):
    """Images/s over the iterations after `skip` (warm-up), from log.jsonl's per-iteration lines."""
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        lines = [json.loads(x) for x in f]
    rates = [x["images_per_s"] for x in lines if x["iter"] > skip]
    return len(rates) / sum(1 / r for r in rates)   # total images / total time


def train_rate(afa, afa_mpi, data, work, name, ranks, threads, tag):
    preset, crop, batch, iters, _ = WORKLOADS[name]
    out = os.path.join(work, f"{name}-{tag}")
    opts = ["--data", data, "--out", out, "--preset", preset, "--crop", str(crop), "--batch", str(batch), "--iters", str(iters),
            "--log-every", "1", "--checkpoint-every", str(iters), "--eval-every", "0", "--threads", str(threads)]
    if ranks == 1:
        run([afa, "train"] + opts)
    else:
        run(["mpirun", "-np", str(ranks), "--oversubscribe", "--bind-to", "none", afa_mpi, "train"] + opts)
    return images_per_second(out, skip=max(2, iters // 5))


def allreduce(afa_mpi, ranks, floats_m, tcp):
    extra = ["--mca", "btl", "tcp,self"] if tcp else []
    out = run(["mpirun", "-np", str(ranks), "--oversubscribe", "--bind-to", "none"] + extra +
              [afa_mpi, "bench-allreduce", "--millions", ",".join(f"{m:.4f}" for m in floats_m), "--runs", "20", "--json"])
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--afa", required=True)
    ap.add_argument("--afa-mpi", required=True)
    ap.add_argument("--ranks", type=int, default=2, help="ranks (and threads of the single process)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per workload")
    ap.add_argument("--workloads", default="tiny,mit_b1")
    ap.add_argument("--latency-us", type=float, default=25.0, help="per-message latency assumed for the prediction")
    ap.add_argument("--faster", type=float, default=10.0,
                    help="also predict for machines this many times faster than this one (compute shrinks, the allreduce does not)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    afa, afa_mpi = os.path.abspath(args.afa), os.path.abspath(args.afa_mpi)
    work = tempfile.mkdtemp(prefix="afa-bench-dist-")
    results = {"ranks": args.ranks, "workloads": {}}
    for name in args.workloads.split(","):
        preset, crop, batch, iters, size = WORKLOADS[name]
        data = os.path.join(work, f"data-{size}")
        if not os.path.isdir(data):
            run([afa, "synth", "--out", data, "--train", "16", "--val", "2", "--size", str(size)])
        one, many = [], []
        for r in range(args.rounds):
            one.append(train_rate(afa, afa_mpi, data, work, name, 1, args.ranks, f"1x{args.ranks}-{r}"))
            many.append(train_rate(afa, afa_mpi, data, work, name, args.ranks, 1, f"{args.ranks}x1-{r}"))
        grads = os.path.join(work, f"grad-{name}.safetensors")
        run([afa_mpi, "step-gradients", "--data", data, "--preset", preset, "--crop", str(crop), "--batch", str(batch), "--output", grads])
        with open(grads, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        floats = sum((e["data_offsets"][1] - e["data_offsets"][0]) // 4 for k, e in header.items() if k != "__metadata__")
        bench = json.loads(run([afa, "bench", "iteration", "--preset", preset, "--size", str(crop), "--batch", str(batch),
                                "--runs", "3", "--threads", str(args.ranks), "--json"]))
        step_ms, backward_ms = bench["median_ms"], float(bench["extra"]["backward_ms"])
        shm = allreduce(afa_mpi, args.ranks, [floats / 1e6], tcp=False)[0]
        tcp = allreduce(afa_mpi, args.ranks, [floats / 1e6], tcp=True)[0]
        results["workloads"][name] = dict(
            preset=preset, crop=crop, global_batch=batch, iterations=iters,
            images_per_s_1rank=statistics.median(one), images_per_s_ranks=statistics.median(many),
            rounds_1rank=one, rounds_ranks=many, ratio=statistics.median(many) / statistics.median(one),
            gradient_floats=floats, gradient_mb=floats * 4 / 1e6, step_ms=step_ms, backward_ms=backward_ms,
            allreduce_shm_ms=shm["median_ms"], allreduce_shm_gbs=shm["bus_gb_per_s"],
            allreduce_tcp_ms=tcp["median_ms"], allreduce_tcp_gbs=tcp["bus_gb_per_s"])

    print(f"\nData-parallel training on this machine: 1 rank × {args.ranks} threads vs {args.ranks} ranks × 1 thread, same global batch "
          f"({args.rounds} alternating rounds, median)")
    print(f"{'workload':<22} {'1×' + str(args.ranks) + ' img/s':>11} {str(args.ranks) + '×1 img/s':>11} {'ratio':>6} "
          f"{'grad MB':>8} {'allreduce shm':>16} {'allreduce TCP':>16}")
    for name, w in results["workloads"].items():
        print(f"{name + ' ' + str(w['global_batch']) + '×' + str(w['crop']) + '²':<22} {w['images_per_s_1rank']:>11.2f} "
              f"{w['images_per_s_ranks']:>11.2f} {w['ratio']:>6.2f} {w['gradient_mb']:>8.1f} "
              f"{w['allreduce_shm_ms']:>7.1f} ms {w['allreduce_shm_gbs']:>4.1f} GB/s {w['allreduce_tcp_ms']:>7.1f} ms {w['allreduce_tcp_gbs']:>4.1f} GB/s")

    results["prediction"] = []
    for speed in (1.0, args.faster):
        machine = "this one" if speed == 1 else f"{speed:g}× faster than this one"
        print(f"\nPredicted scaling efficiency, one rank per machine, each machine {machine} "
              f"(ring allreduce, {args.latency_us:.0f} µs per message; 'overlap': the allreduce hidden behind the backward pass)")
        print(f"{'workload':<10} {'link':>7} " + " ".join(f"{'N=' + str(n) + ' plain':>11} {'overlap':>8}" for n in (8, 32, 128)))
        for name, w in results["workloads"].items():
            step, backward = w["step_ms"] / 1e3 / speed, w["backward_ms"] / 1e3 / speed
            for gbit in (10, 25):
                cells = []
                for n in (8, 32, 128):
                    t_ar = 2 * (n - 1) / n * w["gradient_mb"] * 8e6 / (gbit * 1e9) + 2 * (n - 1) * args.latency_us * 1e-6
                    plain = step / (step + t_ar)
                    overlap = step / (step + t_ar - min(t_ar, backward))
                    cells.append(f"{plain * 100:>10.1f}% {overlap * 100:>7.1f}%")
                    results["prediction"].append(dict(workload=name, speed=speed, link_gbit=gbit, machines=n, allreduce_ms=t_ar * 1e3,
                                                      efficiency=plain, efficiency_overlap=overlap))
                print(f"{name:<10} {str(gbit) + ' Gb/s':>7} " + " ".join(cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
