#!/usr/bin/env python3
"""Runs every libFuzzer target for a bounded time (`make fuzz`, FUZZ_S seconds each) and prints one row
per target: executions, executions/s, coverage (edges), corpus size, findings (crashes, timeouts > 1 s,
leaks, out-of-memory). Findings are kept in Tests/Fuzz/findings/<target>/; a run with findings exits 1.
Standard library only."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

# Longest input per target: a seed of each kind fits, with room to grow.
MAX_LEN = {"safetensors": 8192, "checkpoint": 131072, "image": 16384, "labels": 8192, "dataset-lists": 2048, "recipe": 4096}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", required=True, help="folder with the fuzz-<kind> executables")
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--targets", default=",".join(MAX_LEN))
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    rows, failed = [], False
    for kind in args.targets.split(","):
        exe = os.path.join(args.bin, f"fuzz-{kind}")
        seeds = os.path.join(here, "corpus", kind)
        work = tempfile.mkdtemp(prefix=f"afa-fuzz-{kind}-")
        findings = os.path.join(here, "findings", kind)
        os.makedirs(findings, exist_ok=True)
        cmd = [exe, work, seeds, f"-max_total_time={args.seconds}", "-timeout=1", "-rss_limit_mb=2048",
               f"-max_len={MAX_LEN[kind]}", "-print_final_stats=1", f"-artifact_prefix={findings}/", "-detect_leaks=1"]
        print("+", " ".join(cmd), flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1", SWIFT_BACKTRACE="enable=no",
                                                                      LSAN_OPTIONS=f"suppressions={os.path.join(here, '..', 'lsan.supp')}"))
        log = p.stderr
        execs = int((re.findall(r"stat::number_of_executed_units:\s+(\d+)", log) or ["0"])[-1])
        speed = int((re.findall(r"stat::average_exec_per_sec:\s+(\d+)", log) or ["0"])[-1])
        cov = (re.findall(r"cov: (\d+)", log) or ["0"])[-1]
        corpus = len(os.listdir(work))
        artifacts = sorted(f for f in os.listdir(findings) if not f.startswith("."))
        shutil.rmtree(work, ignore_errors=True)
        ok = p.returncode == 0 and not artifacts
        failed |= not ok
        if not ok:
            print(log[-4000:], file=sys.stderr)
        rows.append((kind, execs, speed, cov, corpus, len(artifacts), p.returncode))
        print(f"  {kind}: {execs} executions ({speed}/s), coverage {cov}, {len(artifacts)} findings", flush=True)
    print()
    print(f"{'target':<14} {'executions':>11} {'exec/s':>7} {'coverage':>8} {'corpus':>7} {'findings':>8} {'exit':>4}")
    for kind, execs, speed, cov, corpus, n, rc in rows:
        print(f"{kind:<14} {execs:>11} {speed:>7} {cov:>8} {corpus:>7} {n:>8} {rc:>4}")
    print(f"{sum(r[5] for r in rows)} findings" + (" (see Tests/Fuzz/findings/)" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
