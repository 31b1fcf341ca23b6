#!/usr/bin/env python3
"""Load test of the example server (`make bench-server`).

Trains a small checkpoint once (cached in --dir), starts `afa-server` on loopback, drives it with wrk at
1, 2 and 8 connections for a bounded time each, and prints requests/s, p50/p99 latency and errors beside
the same images segmented in process (`afa bench segment`: decode, segment, encode, no network). Then it
keeps the load on and reads the server's RSS after 1,000 and after 10,000 requests. Traffic goes to
127.0.0.1 only. Standard library only.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request


def run(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def checkpoint(afa, root):
    ck = os.path.join(root, "run", "checkpoints", "latest.safetensors")
    if not os.path.exists(ck):
        run([afa, "synth", "--out", os.path.join(root, "data"), "--train", "48", "--val", "8", "--size", "96",
             "--classes", "5", "--seed", "3"], stdout=subprocess.DEVNULL)
        run([afa, "train", "--data", os.path.join(root, "data"), "--out", os.path.join(root, "run"), "--preset", "tiny",
             "--crop", "96", "--iters", "60", "--eval-every", "0"], stdout=subprocess.DEVNULL)
    return ck


def images(afa, root, size):
    folder = os.path.join(root, f"images{size}")
    if not os.path.isdir(folder):
        run([afa, "synth", "--out", folder, "--train", "1", "--val", "4", "--size", str(size), "--classes", "5",
             "--seed", "11"], stdout=subprocess.DEVNULL)
    jpg = os.path.join(folder, "JPEGImages")
    return sorted(os.path.join(jpg, f) for f in os.listdir(jpg) if f.startswith("val_"))


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def served(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(r'^afa_http_requests_total\{route="/v1/segment"[^}]*\} (\S+)$', text, re.M))


def served_in_flight(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    m = re.search(r"^afa_inference_in_flight (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def ms(value, unit):
    return float(value) * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[unit]


def wrk(port, conns, seconds, imgs, lua):
    env = dict(os.environ, AFA_BENCH_IMAGES=":".join(imgs))
    out = subprocess.run(["wrk", "-t", str(min(conns, 2)), "-c", str(conns), "-d", f"{seconds}s", "--latency", "-s", lua,
                          f"http://127.0.0.1:{port}/v1/segment"], check=True, capture_output=True, text=True, env=env).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)$", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50": lat.get("50", float("nan")), "p99": lat.get("99", float("nan")), "errors": errors, "requests": total}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--afa", default=".build/release/afa")
    ap.add_argument("--server", default="examples/server/.build/release/afa-server")
    ap.add_argument("--dir", default=".bench-server")
    ap.add_argument("--size", type=int, default=320, help="side of the test images")
    ap.add_argument("--seconds", type=int, default=10, help="wrk time per connection count")
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--soak", type=int, default=10000, help="requests before the last RSS reading")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    ck = checkpoint(args.afa, args.dir)
    imgs = images(args.afa, args.dir, args.size)
    lua = os.path.join(os.path.dirname(os.path.abspath(__file__)), "post_images.lua")

    inproc = {}
    for conns in (1, 2, 8):
        out = subprocess.run([args.afa, "bench", "segment", "--checkpoint", ck, "--concurrency", str(conns), "--requests",
                              "300", "--json", *imgs], check=True, capture_output=True, text=True).stdout
        inproc[conns] = json.loads(out.strip().splitlines()[-1])

    server = subprocess.Popen([args.server, "--checkpoint", ck, "--port", str(args.port), "--host", "127.0.0.1",
                               "--log-level", "warning"])
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{args.port}/health", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        rows = {}
        for conns in (1, 2, 8):
            rows[conns] = wrk(args.port, conns, args.seconds, imgs, lua)
        # Memory over time: RSS after the first 1,000 and after `soak` requests under 8 connections.
        readings = {}
        for mark in (1000, args.soak):
            while served(args.port) < mark:
                wrk(args.port, 8, 5, imgs, lua)
            readings[mark] = (served(args.port), rss_mb(server.pid))
        # Graceful shutdown: a large image (1 MP, the default limit) in flight when SIGTERM arrives still gets its answer.
        big = images(args.afa, args.dir, 1024)[0]
        answer = {}

        def slow_request():
            req = urllib.request.Request(f"http://127.0.0.1:{args.port}/v1/segment", data=open(big, "rb").read(),
                                         headers={"Content-Type": "image/jpeg"})
            try:
                with urllib.request.urlopen(req, timeout=600) as r:
                    answer["status"], answer["bytes"] = r.status, len(r.read())
            except Exception as e:  # noqa: BLE001 - reported below
                answer["error"] = repr(e)

        t = threading.Thread(target=slow_request)
        t.start()
        while served_in_flight(args.port) < 1 and t.is_alive():
            time.sleep(0.005)
        server.send_signal(signal.SIGTERM)
        t.join()
        code = server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()

    print()
    print(f"example server, tiny checkpoint, {len(imgs)} JPEGs of {args.size}x{args.size}, loopback, wrk {args.seconds} s per row")
    print(f"{'connections':>11}  {'in-process req/s':>16}  {'server req/s':>12}  {'ratio':>5}  {'p50 ms':>7}  {'p99 ms':>7}  "
          f"{'in-proc p50':>11}  {'errors':>6}  {'requests':>8}")
    for conns in (1, 2, 8):
        r, i = rows[conns], inproc[conns]
        print(f"{conns:>11}  {i['requests_per_s']:>16.1f}  {r['rps']:>12.1f}  {r['rps'] / i['requests_per_s']:>5.2f}  "
              f"{r['p50']:>7.1f}  {r['p99']:>7.1f}  {i['p50_ms']:>11.1f}  {r['errors']:>6}  {r['requests']:>8}")
    (n1, rss1), (n2, rss2) = readings[1000], readings[args.soak]
    print(f"RSS after {n1:.0f} requests: {rss1:.1f} MB; after {n2:.0f}: {rss2:.1f} MB ({100 * (rss2 / rss1 - 1):+.1f}%)")
    print(f"SIGTERM with a 1024x1024 request in flight: that request got {answer}; server exit status {code}")
    ok = rows[8]["rps"] >= 0.9 * inproc[8]["requests_per_s"] and all(r["errors"] == 0 for r in rows.values()) \
        and rss2 <= 1.05 * rss1 and code == 0 and answer.get("status") == 200
    print("targets (8 connections >= 90% of in-process, 0 errors, RSS within 5%, clean exit):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
