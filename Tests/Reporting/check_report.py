#!/usr/bin/env python3
"""`afa report` in a real browser, and the console while a command runs (make check-report).

Trains a short run with evaluations, writes its report, and opens it in headless Chromium: the page
must render (a screenshot that is not blank), its DOM must hold the expected titles, four charts and a
picture per evaluation, it must load nothing from outside the file, and the browser must log no console
error. Then `afa eval` on that run's checkpoint shows one live progress line on a (pseudo-)terminal,
plain lines with `--log-format plain` there (as under mpirun) and plain lines when piped.
"""
import argparse
import os
import pty
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


def on_terminal(cmd):
    """Runs `cmd` with its stdout on a pseudo-terminal; returns the exit status and what it wrote there."""
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:   # EIO once the child's side is closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(), out.decode("utf-8", "replace")


def check_console(afa, run):
    evaluate = [afa, "eval", "--data", os.path.join(os.path.dirname(run), "data"), "--checkpoint",
                os.path.join(run, "checkpoints", "latest.safetensors"), "--scales", "1", "--no-flip", "--threads", "2"]
    live = "\x1b[K"   # the live line redraws itself: carriage return, text, erase to the end of the line
    status, text = on_terminal(evaluate)
    check(status == 0 and live in text and "\r[" in text, "on a terminal: one live progress line (redrawn in place)")
    status, plain = on_terminal(evaluate + ["--log-format", "plain"])
    lines = [line for line in plain.splitlines() if "image 6/6" in line]
    check(status == 0 and live not in plain and "\r[" not in plain and lines, f"--log-format plain on a terminal: plain lines ({lines[:1]})")
    piped = subprocess.run(evaluate, capture_output=True, text=True)
    check(piped.returncode == 0 and live not in piped.stdout and "image 6/6" in piped.stdout, "piped: plain lines")


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
        check_console(os.path.abspath(args.afa), run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return CHECKS.finish()


if __name__ == "__main__":
    sys.exit(main())
