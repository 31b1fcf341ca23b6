#!/usr/bin/env python3
"""Runs a test command built with AddressSanitizer (`make asan`) and judges its report.

Memory errors (out-of-bounds, use after free, double free …) and test failures fail the run. Leaks fail
it when any frame of the leaked allocation's stack belongs to the product (the AFA, Layers, TensorCore,
SafeTensors and ImageIO modules or the C codec glue). Leaks made entirely inside the toolchain's libraries
are listed and do not fail it: on Linux, XCTest's support for `async` tests keeps each test case object
alive after the run (a weak reference it never releases), and with it whatever the test case holds.
LSAN_OPTIONS suppressions (Tests/lsan.supp) cover the known cases at the allocation site already.
Standard library only."""
import re
import subprocess
import sys

PRODUCT = re.compile(r"\$s(3AFA|6Layers|10TensorCore|11SafeTensors|7ImageIO)[0-9A-Z_a-z]|\bafa_[a-z_]+\b|codecs\.c")


def main():
    cmd = sys.argv[1:]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    lines = []
    for line in p.stdout:
        sys.stdout.write(line)
        lines.append(line)
    rc = p.wait()
    log = "".join(lines)
    memory_errors = [l for l in lines if "ERROR: AddressSanitizer" in l]
    failures = [l for l in lines if re.search(r"Executed \d+ tests?, with [1-9]\d* failures?", l)] + \
               [l for l in lines if re.search(r": error: \S+ : ", l)]
    leaks = re.split(r"\n(?=(?:Direct|Indirect) leak of)", log)[1:]
    product_leaks = [b.split("\n\n")[0] for b in leaks if PRODUCT.search(b.split("\n\n")[0])]
    if memory_errors or failures:
        print(f"asan: FAIL ({len(memory_errors)} memory error(s), {len(failures)} test failure line(s))", file=sys.stderr)
        return 1
    if product_leaks:
        print(f"asan: FAIL: {len(product_leaks)} leak(s) with a frame in the product:", file=sys.stderr)
        for b in product_leaks[:5]:
            print(b, file=sys.stderr)
        return 1
    if rc != 0 and not leaks:
        print(f"asan: FAIL (exit status {rc})", file=sys.stderr)
        return 1
    print(f"asan: PASS: no memory errors, no test failures, no leaks in the product"
          + (f" ({len(leaks)} leak report(s) inside the toolchain's libraries, listed above)" if leaks else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
