#!/usr/bin/env python3
"""Convert a PyTorch checkpoint (.pth, e.g. SegFormer's ImageNet mit_b1.pth) to safetensors for
`afa train --pretrained`. Needs torch and safetensors; keys are kept as they are (a `state_dict` or
`model` wrapper is unwrapped)."""
import sys

import torch
from safetensors.torch import save_file


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: pth_to_safetensors.py IN.pth OUT.safetensors")
    obj = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    tensors = {k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
               for k, v in obj.items() if isinstance(v, torch.Tensor)}
    save_file(tensors, sys.argv[2])
    print(f"wrote {len(tensors)} tensors to {sys.argv[2]}")


if __name__ == "__main__":
    main()
