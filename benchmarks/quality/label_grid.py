#!/usr/bin/env python3
"""How many points of the affinity label's grid fall inside each object (benchmark-only analysis).

The affinity label is the pseudo label sampled by nearest neighbour on the stage-4 grid, one pixel per
16×16 cell (`RandomWalk.affinityLabel`, as in the method). An object that holds no grid point is absent
from it, and one that holds a single point gives no pair inside the object. For each VOC-layout dataset
given, this prints the share of ground-truth objects (4-connected components of one class, 4 pixels or
more, in the train split at scale 1) that a grid with a random offset places 0, 1 and ≥ 2 points in.

    python3 label_grid.py DATASET [DATASET ...]      (needs numpy and Pillow)
"""
import os
import random
import sys

import numpy as np
from PIL import Image

CELL = 16


def components(mask):
    """Yields the pixel lists of the 4-connected components of each non-background, non-ignore class."""
    h, w = mask.shape
    seen = np.zeros(mask.shape, dtype=bool)
    for y in range(h):
        for x in range(w):
            c = mask[y, x]
            if c == 0 or c == 255 or seen[y, x]:
                continue
            stack, pixels = [(y, x)], []
            seen[y, x] = True
            while stack:
                a, b = stack.pop()
                pixels.append((a, b))
                for p, q in ((a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)):
                    if 0 <= p < h and 0 <= q < w and not seen[p, q] and mask[p, q] == c:
                        seen[p, q] = True
                        stack.append((p, q))
            yield pixels


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    rng = random.Random(0)
    print(f"{'dataset':<22} {'objects':>7} {'median px':>9} {'0 points':>9} {'1 point':>8} {'>=2':>6} {'mean':>5}")
    for root in sys.argv[1:]:
        names = [l.strip() for l in open(os.path.join(root, "ImageSets/Segmentation/train.txt")) if l.strip()]
        counts, areas = [], []
        for n in names:
            mask = np.array(Image.open(os.path.join(root, "SegmentationClass", n + ".png")))
            for pixels in components(mask):
                if len(pixels) < 4:
                    continue
                oy, ox = rng.randrange(CELL), rng.randrange(CELL)
                counts.append(sum(1 for a, b in pixels if (a - oy) % CELL == 0 and (b - ox) % CELL == 0))
                areas.append(len(pixels))
        c = np.array(counts)
        print(f"{os.path.basename(os.path.normpath(root)):<22} {len(c):>7} {int(np.median(areas)):>9} "
              f"{100 * np.mean(c == 0):>8.1f}% {100 * np.mean(c == 1):>7.1f}% {100 * np.mean(c >= 2):>5.1f}% {c.mean():>5.2f}")


if __name__ == "__main__":
    main()
