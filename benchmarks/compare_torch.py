#!/usr/bin/env python3
"""Side-by-side benchmark: the Swift product (`afa bench … --json`) against a PyTorch definition of the
same AFA model and training iteration, same threads, same input shapes.

    python3 benchmarks/compare_torch.py [--afa .build/release/afa] [--threads 2] [--presets tiny,mit_b1]

PyTorch is a benchmark-only dependency (`make bench-torch` installs it into .venv). Each workload runs in
its own process so that peak RSS is the workload's own. Prints one table with both columns and the
ratio Swift / PyTorch (below 1: Swift is faster / smaller).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
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
    body()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        body()
        times.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"median_ms": 1e3 * statistics.median(times), "peak_rss_mb": rss, "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--afa", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "afa"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--presets", default="tiny,mit_b1")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        w, p, b, s, r = args.worker
        print(json.dumps(torch_worker(w, p, int(b), int(s), args.threads, int(r))))
        return
    rows = []
    for preset in args.presets.split(","):
        for w, b, s in WORKLOADS:
            common = ["--preset", preset, "--batch", str(b), "--size", str(s), "--threads", str(args.threads), "--runs", str(args.runs)]
            sw = json.loads(subprocess.run([args.afa, "bench", w] + common + ["--json"], check=True, capture_output=True,
                                           text=True).stdout.strip().splitlines()[-1])
            th = json.loads(subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--worker", w, preset, str(b),
                                            str(s), str(args.runs)], check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            rows.append((f"{w} {preset} {b}x3x{s}x{s}", sw["median_ms"], th["median_ms"], sw["peak_rss_mb"], th["peak_rss_mb"]))
            print(f"  measured {rows[-1][0]}", file=sys.stderr)
    print(f"{'workload':34} {'Swift ms':>10} {'PyTorch ms':>11} {'ratio':>6} {'Swift RSS':>10} {'PyTorch RSS':>12} {'ratio':>6}")
    for name, s_ms, t_ms, s_rss, t_rss in rows:
        print(f"{name:34} {s_ms:10.1f} {t_ms:11.1f} {s_ms / t_ms:6.2f} {s_rss:9.0f}M {t_rss:11.0f}M {s_rss / t_rss:6.2f}")
    print(f"threads {args.threads}; ratio < 1: Swift faster / smaller")


if __name__ == "__main__":
    main()
