#!/usr/bin/env python3
"""`afa report` in a real browser (make check-report).

Trains a short run with evaluations, writes its report, and opens it in headless Chromium: the page
must render (a screenshot that is not blank), its DOM must hold the expected titles, three charts and a
picture per evaluation, it must load nothing from outside the file, and the browser must log no console
error.
"""
import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checklist import Checklist  # noqa: E402
from small_run import small_run  # noqa: E402

TITLES = ["AFA run report", "Losses", "Learning rates", "Training targets", "mIoU over iterations", "Per-class IoU", "Confusion matrix", "Pictures"]
CHECKS = Checklist("check-report")
check = CHECKS.check


def png_pixels(path):
    """Width, height and the decompressed scanlines of a PNG."""
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    i, idat, size = 8, b"", None
    while i < len(raw):
        (n,) = struct.unpack(">I", raw[i:i + 4])
        kind, body = raw[i + 4:i + 8], raw[i + 8:i + 8 + n]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        i += 12 + n
    return size, zlib.decompress(idat)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--afa", required=True)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="afa-report-")
    try:
        run = small_run(os.path.abspath(args.afa), work)
        subprocess.run([os.path.abspath(args.afa), "report", run], check=True, stdout=subprocess.DEVNULL)
        page = os.path.join(run, "report.html")
        html = open(page, encoding="utf-8").read()
        check(not re.search(r"""(src|href)=["'](?!data:)""", html) and "<script" not in html,
              f"self-contained: no external src/href, no scripts ({len(html) // 1024} KiB)")
        browser = [args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
                   f"--user-data-dir={os.path.join(work, 'profile')}"]
        shot = os.path.join(work, "shot.png")
        p = subprocess.run(browser + [f"--screenshot={shot}", "--window-size=1100,1800", "file://" + page],
                           capture_output=True, text=True, timeout=120)
        console = [line for line in p.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
        check(p.returncode == 0 and not console, f"Chromium rendered the page without console messages ({console[:2]})")
        (w, h), pixels = png_pixels(shot)
        distinct = len(set(pixels[:: max(1, len(pixels) // 200000)]))
        check(w == 1100 and distinct > 20, f"screenshot {w}×{h} is not blank ({distinct} distinct byte values)")
        dom = subprocess.run(browser + ["--dump-dom", "file://" + page], capture_output=True, text=True, timeout=120).stdout
        missing = [t for t in TITLES if t not in dom]
        check(not missing, f"titles in the rendered DOM (missing: {missing})")
        svgs, imgs = dom.count("<svg"), len(re.findall(r'<img [^>]*src="data:image/png;base64,', dom))
        check(svgs == 4 and imgs == 3, f"{svgs} charts (4) and {imgs} picture grids (one per evaluation: 3)")
        keep = os.environ.get("AFA_REPORT_SHOT")
        if keep:
            shutil.copy(shot, keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return CHECKS.finish()


if __name__ == "__main__":
    sys.exit(main())
