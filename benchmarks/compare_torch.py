#!/usr/bin/env python3
"""Side-by-side benchmark: the Swift product (`afa bench … --json`) against a PyTorch definition of the
same AFA model and training iteration, same threads, same input shapes; for the inference rows also ONNX
Runtime running that PyTorch definition exported to ONNX (what a server might pick instead).

    python3 benchmarks/compare_torch.py [--afa .build/release/afa] [--threads 2] [--presets tiny,mit_b1]
    python3 benchmarks/compare_torch.py --scaling [--sizes 256,384,512,768,1024]

PyTorch, onnx and onnxruntime are benchmark-only dependencies (`make bench-torch` installs them into .venv);
without onnxruntime the ONNX columns say n/a. Each workload runs in its own process so that peak RSS is the
workload's own (the ONNX Runtime process never imports torch: the model is exported by another process
first). Prints one table with the columns and the ratios Swift / PyTorch and Swift / ONNX Runtime (below 1:
Swift is faster / smaller).

`--scaling` prints how the cost of mit_b1 inference (batch 1) grows with the input side: time and peak RSS
of the three, the analytic GFLOP of the forward and the share of it in the attention products q·kᵀ and
attn·v, which grow with tokens² / sr² while everything else grows with tokens.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import shutil
import subprocess
import sys
import tempfile
import time

PRESETS = {
    "tiny": ((16, 32, 40, 64), 32),
    "mit_b1": ((64, 128, 320, 512), 256),
}
HEADS, DEPTHS, SRS, STRIDES = (1, 2, 5, 8), (2, 2, 2, 2), (8, 4, 2, 1), (4, 2, 2, 1)
WORKLOADS = [("infer", 2, 320), ("infer-flip", 1, 512), ("fwdbwd", 2, 320), ("iteration", 2, 320)]


def build_model(preset: str, num_classes: int = 21):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    dims, embed = PRESETS[preset]

    class Attn(nn.Module):
        def __init__(self, c, heads, sr):
            super().__init__()
            self.h, self.sr = heads, sr
            self.q, self.kv, self.proj = nn.Linear(c, c), nn.Linear(c, 2 * c), nn.Linear(c, c)
            if sr > 1:
                self.srconv, self.norm = nn.Conv2d(c, c, sr, sr), nn.LayerNorm(c)

        def forward(self, x, hh, ww):
            b, n, c = x.shape
            d = c // self.h
            q = self.q(x).view(b, n, self.h, d).transpose(1, 2)
            y = x
            if self.sr > 1:
                y = self.norm(self.srconv(x.transpose(1, 2).reshape(b, c, hh, ww)).flatten(2).transpose(1, 2))
            k, v = self.kv(y).view(b, -1, 2, self.h, d).permute(2, 0, 3, 1, 4)
            logits = q @ k.transpose(-1, -2)
            out = (logits * d ** -0.5).softmax(-1) @ v
            raw = logits
            if self.sr > 1:   # raw logits pooled over sr×sr query cells
                m = logits.shape[-1]
                raw = F.avg_pool2d(logits.permute(0, 1, 3, 2).reshape(b, self.h * m, hh, ww), self.sr)
                raw = raw.reshape(b, self.h, m, -1).transpose(-1, -2)
            return self.proj(out.transpose(1, 2).reshape(b, n, c)), raw

    class Block(nn.Module):
        def __init__(self, c, heads, sr):
            super().__init__()
            self.n1, self.attn, self.n2 = nn.LayerNorm(c, eps=1e-6), Attn(c, heads, sr), nn.LayerNorm(c, eps=1e-6)
            self.fc1, self.dw, self.fc2 = nn.Linear(c, 4 * c), nn.Conv2d(4 * c, 4 * c, 3, 1, 1, groups=4 * c), nn.Linear(4 * c, c)

        def forward(self, x, hh, ww):
            a, raw = self.attn(self.n1(x), hh, ww)
            x = x + a
            y = self.fc1(self.n2(x))
            b, n, c4 = y.shape
            y = self.dw(y.transpose(1, 2).reshape(b, c4, hh, ww)).flatten(2).transpose(1, 2)
            return x + self.fc2(F.gelu(y)), raw

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            cin = 3
            self.embeds, self.stages, self.norms = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
            for s in range(4):
                k = 7 if s == 0 else 3
                self.embeds.append(nn.ModuleList([nn.Conv2d(cin, dims[s], k, STRIDES[s], k // 2), nn.LayerNorm(dims[s])]))
                self.stages.append(nn.ModuleList([Block(dims[s], HEADS[s], SRS[s]) for _ in range(DEPTHS[s])]))
                self.norms.append(nn.LayerNorm(dims[s], eps=1e-6))
                cin = dims[s]
            self.lin = nn.ModuleList([nn.Linear(d, embed) for d in dims])
            self.fuse, self.bn = nn.Conv2d(4 * embed, embed, 1, bias=False), nn.BatchNorm2d(embed)
            self.pred = nn.Conv2d(embed, num_classes, 1)
            self.classifier = nn.Conv2d(dims[3], num_classes - 1, 1, bias=False)
            self.attn_proj = nn.Conv2d(2 * HEADS[3], 1, 1)

        def encoder(self, x):
            outs, raws = [], []
            for (conv, ln), blocks, norm in zip(self.embeds, self.stages, self.norms):
                x = conv(x)
                b, c, hh, ww = x.shape
                t = ln(x.flatten(2).transpose(1, 2))
                for blk in blocks:
                    t, raw = blk(t, hh, ww)
                    raws.append(raw)
                x = norm(t).transpose(1, 2).reshape(b, c, hh, ww)
                outs.append(x)
            a = torch.cat(raws[-2:], 1)
            return outs, raws, torch.sigmoid(self.attn_proj(a + a.transpose(-1, -2)))[:, 0]

        def forward(self, x, cam_only=False):
            outs, raws, aff = self.encoder(x)
            if cam_only:
                return self.classifier(outs[3]), aff
            size = outs[0].shape[-2:]
            feats = []
            for i in (3, 2, 1, 0):
                b, c, hh, ww = outs[i].shape
                y = self.lin[i](outs[i].flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, hh, ww)
                feats.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False) if i else y)
            seg = self.pred(F.relu(self.bn(self.fuse(torch.cat(feats, 1)))))
            cls = self.classifier(outs[3]).flatten(2).max(2).values
            return cls, seg, aff

    return Net()


def par(image, masks, iters=10, dil=(1, 2, 4, 8, 12, 24)):
    """Pixel-Adaptive Refinement (48 dilated neighbours, colour + position softmax)."""
    import torch
    import torch.nn.functional as F
    offs = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]

    def nbrs(x):
        h, w = x.shape[-2:]
        out = []
        for d in dil:
            p = F.pad(x, (d, d, d, d), mode="replicate")
            out += [p[:, :, d + dy * d:d + dy * d + h, d + dx * d:d + dx * d + w] for dy, dx in offs]
        return torch.stack(out, 2)

    n = nbrs(image)
    colour = (-((n - image.unsqueeze(2)).abs() / (n.std(2, keepdim=True) + 1e-8) / 0.3) ** 2).mean(1, keepdim=True)
    dist = torch.tensor([math.sqrt(2) * d if dy and dx else float(d) for d in dil for dy, dx in offs])
    kern = colour.softmax(2) + 0.01 * (-(dist / (dist.std() + 1e-8) / 0.3) ** 2).softmax(0).view(1, 1, -1, 1, 1)
    m = F.interpolate(masks, size=image.shape[-2:], mode="bilinear", align_corners=True)
    for _ in range(iters):
        m = (nbrs(m) * kern).sum(2)
    return m


def torch_worker(workload: str, preset: str, batch: int, size: int, threads: int, runs: int) -> dict:
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build_model(preset)
    x = torch.randn(batch, 3, size, size)
    opt = torch.optim.AdamW(net.parameters(), lr=6e-5, weight_decay=0.01)

    def infer(flip):
        net.eval()
        with torch.no_grad():
            inp = torch.cat([x, x.flip(-1)]) if flip else x
            net(inp)

    def fwdbwd():
        net.train()
        cls, seg, aff = net(x)
        (cls.sum() * 0.01 + seg.sum() * 1e-4 + aff.sum() * 1e-4).backward()
        net.zero_grad(set_to_none=True)

    def iteration():
        net.train()
        b, _, h, w = x.shape
        with torch.no_grad():     # multi-scale CAM passes on the images and their flips
            total, aff = 0, None
            for s in (1.0, 0.5, 1.5):
                xs = x if s == 1.0 else F.interpolate(x, size=(int(s * h), int(s * w)), mode="bilinear", align_corners=False)
                cam, a = net(torch.cat([xs, xs.flip(-1)]), cam_only=True)
                up = F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)
                total = total + torch.maximum(up[:b], up[b:].flip(-1)).relu()
                if s == 1.5:
                    aff = a
            cams = total - total.amin((2, 3), keepdim=True)
            cams = cams / (cams.amax((2, 3), keepdim=True) + 1e-5)
            img = torch.rand(b, 3, h // 2, w // 2)
            for i in range(b):     # PAR for two background scores and the two propagated maps
                for _ in range(4):
                    par(img[i:i + 1], cams[i:i + 1, :3])
            a2 = aff[:b] ** 2     # random walk: squared, column-normalised affinity
            a2 = a2 / (a2.sum(1, keepdim=True) + 0.1)
            torch.bmm(torch.rand(b, 3, a2.shape[1]).softmax(1), a2)
        cls, seg, aff_pred = net(x)
        label = torch.randint(0, 21, (b, h, w))
        loss = F.multilabel_soft_margin_loss(cls, torch.zeros_like(cls)) + 0.1 * F.cross_entropy(
            F.interpolate(seg, size=(h, w), mode="bilinear", align_corners=False), label) + 0.1 * aff_pred.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    body = {"infer": lambda: infer(False), "infer-flip": lambda: infer(True), "fwdbwd": fwdbwd, "iteration": iteration}[workload]
    return dict(timed(body, runs), torch=torch.__version__)


def reference_worker(reference: str, preset: str, batch: int, size: int, threads: int, runs: int) -> dict:
    """Times `train_iteration` of the method's PyTorch reference (`afa_ref.py` in `reference`): the
    baseline of the iteration target. All three losses active (iteration 3000 > cam_iters), like the
    product's `afa bench iteration`."""
    import torch
    sys.path.insert(0, reference)
    import afa_ref
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    mcfg = afa_ref.ModelConfig.from_preset(preset, embedding_dim=PRESETS[preset][1])
    net = afa_ref.AFAModel(mcfg)
    afa_ref.init_weights(net, gen)
    tc = afa_ref.TrainConfig()
    opt = afa_ref.PolyWarmupAdamW.for_model(net, tc, 3000)
    par = afa_ref.PAR()
    pixels = torch.randint(0, 255, (batch, size, size, 3), generator=gen).numpy() + 0.75
    images = torch.from_numpy(afa_ref.normalize_image(pixels).transpose(0, 3, 1, 2).copy())
    labels = torch.zeros(batch, mcfg.num_classes - 1)
    for i in range(batch):
        labels[i, (3 * i) % labels.shape[1]] = labels[i, (3 * i + 7) % labels.shape[1]] = 1
    boxes = [[0, size, 0, size]] * batch

    def body():
        afa_ref.train_iteration(net, par, opt, images, labels, boxes, 3000, tc)

    return dict(timed(body, runs), torch=torch.__version__)


def timed(body, runs: int) -> dict:
    """One warm-up call, then the median of `runs` timed calls and this process's peak RSS."""
    body()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        body()
        times.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"median_ms": 1e3 * statistics.median(times), "peak_rss_mb": rss}


def export_onnx(preset: str, batch: int, size: int, path: str) -> None:
    """The PyTorch definition (seed 0 weights, eval mode) as a static-shape ONNX graph at `path`."""
    import warnings
    import torch
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    net = build_model(preset).eval()
    with torch.no_grad():
        torch.onnx.export(net, (torch.randn(batch, 3, size, size),), path, dynamo=False, input_names=["x"], opset_version=17)


def ort_worker(path: str, batch: int, size: int, flip: bool, threads: int, runs: int) -> dict:
    """Times one ONNX Runtime session on CPU (this process imports numpy and onnxruntime only)."""
    import numpy as np
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)

    def body():
        inp = np.concatenate([x, x[..., ::-1]]) if flip else x
        sess.run(None, {"x": inp})

    return dict(timed(body, runs), onnxruntime=ort.__version__)


def have_onnxruntime() -> bool:
    return subprocess.run([sys.executable, "-c", "import onnxruntime, onnx"], capture_output=True).returncode == 0


def ort_row(preset: str, workload: str, batch: int, size: int, threads: int, runs: int, tmp: str):
    """(ms, RSS MB) of ONNX Runtime for an inference workload, or None."""
    flip = workload == "infer-flip"
    path = os.path.join(tmp, f"{preset}-{batch}-{size}-{int(flip)}.onnx")
    subprocess.run([sys.executable, __file__, "--export", preset, str(batch * (2 if flip else 1)), str(size), path], check=True,
                   capture_output=True, text=True)
    out = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--ort-worker", path, str(batch), str(size),
                          str(int(flip)), str(runs)], check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    os.remove(path)
    return r["median_ms"], r["peak_rss_mb"]


def attention_gflop(preset: str, batch: int, size: int) -> float:
    """GFLOP of the attention products (q·kᵀ and attn·v, 2·N·M·C each, M = N / sr²) of the encoder."""
    dims, _ = PRESETS[preset]
    total, side = 0.0, size
    for s in range(4):
        side = (side + 2 * ((7 if s == 0 else 3) // 2) - (7 if s == 0 else 3)) // STRIDES[s] + 1
        n = side * side
        kv_side = side // SRS[s] if SRS[s] > 1 else side
        m = kv_side * kv_side
        total += DEPTHS[s] * 4.0 * n * m * dims[s]
    return batch * total / 1e9


def product(afa: str, workload: str, preset: str, batch: int, size: int, threads: int, runs: int) -> dict:
    common = ["--preset", preset, "--batch", str(batch), "--size", str(size), "--threads", str(threads), "--runs", str(runs)]
    return json.loads(subprocess.run([afa, "bench", workload] + common + ["--json"], check=True, capture_output=True,
                                     text=True).stdout.strip().splitlines()[-1])


def worker(flag: str, first: str, preset: str, batch: int, size: int, threads: int, runs: int) -> dict:
    """Runs this script as a worker process (`--worker` or `--ref-worker`) and returns its JSON line."""
    return json.loads(subprocess.run([sys.executable, __file__, "--threads", str(threads), flag, first, preset, str(batch),
                                      str(size), str(runs)], check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def pytorch(workload: str, preset: str, batch: int, size: int, threads: int, runs: int) -> dict:
    return worker("--worker", workload, preset, batch, size, threads, runs)


def reference(path: str, preset: str, batch: int, size: int, threads: int, runs: int) -> dict:
    return worker("--ref-worker", path, preset, batch, size, threads, runs)


def scaling(args, ort_ok: bool, tmp: str) -> None:
    sizes = [int(v) for v in args.sizes.split(",")]
    rows = []
    for size in sizes:
        sw = product(args.afa, "infer", "mit_b1", 1, size, args.threads, args.runs)
        th = pytorch("infer", "mit_b1", 1, size, args.threads, args.runs)
        ox = ort_row("mit_b1", "infer", 1, size, args.threads, args.runs, tmp) if ort_ok else None
        rows.append((size, sw["flops"] / 1e9, attention_gflop("mit_b1", 1, size), sw, th, ox))
        print(f"  measured {size}x{size}", file=sys.stderr)
    print("mit_b1 inference, batch 1: time and peak RSS against the input side")
    print(f"{'side':>5} {'GFLOP':>7} {'attn %':>7} {'Swift ms':>9} {'PyTorch':>9} {'ORT':>9} {'Sw/PT':>6} {'Sw/ORT':>6} "
          f"{'Swift GF/s':>10} {'Swift RSS':>10} {'PT RSS':>8} {'ORT RSS':>8} {'Sw/PT':>6}")
    for size, gf, attn, sw, th, ox in rows:
        o_ms, o_rss = ox if ox else (float("nan"), float("nan"))
        print(f"{size:5d} {gf:7.1f} {100 * attn / gf:6.1f}% {sw['median_ms']:9.1f} {th['median_ms']:9.1f} {o_ms:9.1f} "
              f"{sw['median_ms'] / th['median_ms']:6.2f} {sw['median_ms'] / o_ms:6.2f} {gf / sw['median_ms'] * 1e3:10.1f} "
              f"{sw['peak_rss_mb']:9.0f}M {th['peak_rss_mb']:7.0f}M {o_rss:7.0f}M {sw['peak_rss_mb'] / th['peak_rss_mb']:6.2f}")
    print(f"threads {args.threads}; GFLOP: the product's analytic count of the forward; attn %: its share in q·kᵀ and attn·v")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--afa", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "afa"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--presets", default="tiny,mit_b1")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scaling", action="store_true", help="mit_b1 inference cost against the input side (batch 1)")
    ap.add_argument("--sizes", default="256,384,512,768,1024")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--export", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--ort-worker", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--reference", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "reference"),
                    help="folder with the method's PyTorch reference afa_ref.py: its train_iteration is timed beside the "
                         "product's iteration rows (skipped when the folder has no afa_ref.py)")
    ap.add_argument("--ref-worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        w, p, b, s, r = args.worker
        print(json.dumps(torch_worker(w, p, int(b), int(s), args.threads, int(r))))
        return
    if args.ref_worker:
        path, p, b, s, r = args.ref_worker
        print(json.dumps(reference_worker(path, p, int(b), int(s), args.threads, int(r))))
        return
    if args.export:
        p, b, s, path = args.export
        export_onnx(p, int(b), int(s), path)
        return
    if args.ort_worker:
        path, b, s, flip, r = args.ort_worker
        print(json.dumps(ort_worker(path, int(b), int(s), flip == "1", args.threads, int(r))))
        return
    ort_ok = have_onnxruntime()
    if not ort_ok:
        print("compare_torch: onnxruntime or onnx not importable; the ONNX Runtime columns say n/a", file=sys.stderr)
    tmp = tempfile.mkdtemp(prefix="afa-onnx-")
    try:
        if args.scaling:
            scaling(args, ort_ok, tmp)
            return
        rows, ref_rows = [], []
        ref_ok = os.path.isfile(os.path.join(args.reference, "afa_ref.py"))
        for preset in args.presets.split(","):
            for w, b, s in WORKLOADS:
                sw = product(args.afa, w, preset, b, s, args.threads, args.runs)
                th = pytorch(w, preset, b, s, args.threads, args.runs)
                ox = ort_row(preset, w, b, s, args.threads, args.runs, tmp) if ort_ok and w.startswith("infer") else None
                rows.append((f"{w} {preset} {b}x3x{s}x{s}", sw["median_ms"], th["median_ms"], sw["peak_rss_mb"], th["peak_rss_mb"], ox))
                print(f"  measured {rows[-1][0]}", file=sys.stderr)
                if w == "iteration" and ref_ok:
                    ref = reference(os.path.abspath(args.reference), preset, b, s, args.threads, args.runs)
                    ref_rows.append((rows[-1][0], sw["median_ms"], ref["median_ms"], sw["peak_rss_mb"], ref["peak_rss_mb"]))
                    print(f"  measured {rows[-1][0]} with the method's reference", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'workload':34} {'Swift ms':>10} {'PyTorch ms':>11} {'ratio':>6} {'ORT ms':>8} {'ratio':>6} "
          f"{'Swift RSS':>10} {'PyTorch RSS':>12} {'ratio':>6} {'ORT RSS':>8}")
    for name, s_ms, t_ms, s_rss, t_rss, ox in rows:
        ort_cols = f"{ox[0]:8.1f} {s_ms / ox[0]:6.2f}" if ox else f"{'-':>8} {'-':>6}"
        ort_rss = f"{ox[1]:7.0f}M" if ox else f"{'-':>8}"
        print(f"{name:34} {s_ms:10.1f} {t_ms:11.1f} {s_ms / t_ms:6.2f} {ort_cols} {s_rss:9.0f}M {t_rss:11.0f}M {s_rss / t_rss:6.2f} {ort_rss}")
    print(f"threads {args.threads}; ratio < 1: Swift faster / smaller; ORT: ONNX Runtime on the exported PyTorch definition")
    if ref_rows:
        print("\nthe same Swift iterations against the method's PyTorch reference (afa_ref.py train_iteration)")
        print(f"{'workload':34} {'Swift ms':>10} {'ref ms':>11} {'ratio':>6} {'Swift RSS':>10} {'ref RSS':>12} {'ratio':>6}")
        for name, s_ms, r_ms, s_rss, r_rss in ref_rows:
            print(f"{name:34} {s_ms:10.1f} {r_ms:11.1f} {s_ms / r_ms:6.2f} {s_rss:9.0f}M {r_rss:11.0f}M {s_rss / r_rss:6.2f}")


if __name__ == "__main__":
    main()
