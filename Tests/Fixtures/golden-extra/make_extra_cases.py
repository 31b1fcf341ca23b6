"""Writes the extra golden cases next to this file with the reference in ../shared/reference (needs torch)."""
import sys, os
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '../../../../shared/reference'))
import make_golden as M
import torch
torch.set_num_threads(2)
cases = [
    M.Case(name="nonsq_b3", seed=1, height=64, width=96, batch=3,
           boxes=((0, 64, 0, 96), (4, 60, 8, 90), (0, 64, 16, 96)), present=((0,), (3, 7), (1, 2, 5)), n_iter=3000),
    M.Case(name="cls_phase_c6", seed=2, height=96, width=64, num_classes=6, embedding_dim=24,
           boxes=((0, 96, 0, 64), (10, 96, 0, 50)), present=((0, 4), (2,)), n_iter=1500),
    M.Case(name="afflabel_phase", seed=3, height=80, width=112, batch=2, embedding_dim=16,
           boxes=((0, 80, 0, 112), (0, 70, 10, 112)), present=((5,), (8, 12)), n_iter=7000),
]
for c in cases:
    t, meta, fi, _ = M.run_case(c)
    M.write(os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{c.name}.safetensors"), t, meta)
    print(c.name, fi)
