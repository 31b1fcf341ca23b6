"""Writes the extra dense-CRF cases next to this file with ../shared/reference/make_crf_golden.py (needs
numpy and pydensecrf, PyPI pydensecrf2)."""
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
script = os.path.join(here, "../../../../shared/reference/make_crf_golden.py")
cases = {
    "crf_two_classes": ["--seed", "1", "--height", "37", "--width", "53", "--classes", "2", "--iters", "5"],
    "crf_params_c6": ["--seed", "2", "--height", "40", "--width", "48", "--classes", "6", "--pos-xy-std", "1", "--pos-w", "5",
                      "--bi-xy-std", "20", "--bi-rgb-std", "13", "--bi-w", "10", "--iters", "7"],
    "crf_row_c3": ["--seed", "3", "--height", "1", "--width", "40", "--classes", "3"],
    "crf_column_c21": ["--seed", "5", "--height", "50", "--width", "1", "--classes", "21", "--iters", "3"],
}
for name, args in cases.items():
    subprocess.run([sys.executable, script, os.path.join(here, name + ".safetensors")] + args, check=True)
