#!/usr/bin/env python3
"""The reference trainer with its training targets counted, for the like-for-like harness.

    train_ref_labels.py REFERENCE_DIR LABELS.jsonl [train_ref.py options...]

Runs `train_ref.py` unchanged, except that every iteration's refined pseudo label, affinity-refined
label and affinity target are counted as the product counts them (`LabelCounts`: background /
foreground / ignored pixels, positive / negative / unlabelled pairs) and written, every 20 iterations,
as one JSON line `{"iter": n, "labels": {...}}` with the keys of the product's `log.jsonl` `labels`.
`iter` counts iterations from 1, as the product's log does.
"""
import json
import os
import sys

EVERY = 20
IGNORE = 255


def counts(out):
    def split(t):
        t = t.reshape(-1)
        bg = int((t == 0).sum())
        ig = int((t == IGNORE).sum())
        return [bg, t.numel() - bg - ig, ig]
    aff = out["label.aff_label"].reshape(-1)
    pos, neg = int((aff == 1).sum()), int((aff == 0).sum())
    return split(out["label.refined_pseudo_label"]) + split(out["label.refined_aff_label"]) + [pos, neg, aff.numel() - pos - neg]


def shares(c):
    f = lambda x, n: x / n if n else 0.0
    npx, nref, labelled = sum(c[0:3]), sum(c[3:6]), c[6] + c[7]
    return {"pseudo_bg": f(c[0], npx), "pseudo_fg": f(c[1], npx), "pseudo_ignored": f(c[2], npx),
            "refined_bg": f(c[3], nref), "refined_fg": f(c[4], nref), "refined_ignored": f(c[5], nref),
            "pairs_labelled": f(labelled, labelled + c[8]), "pairs_positive": f(c[6], labelled)}


def main():
    ref_dir, labels_path = sys.argv[1], sys.argv[2]
    sys.path.insert(0, os.path.abspath(ref_dir))
    sys.argv = [os.path.join(ref_dir, "train_ref.py")] + sys.argv[3:]
    import afa_ref
    import train_ref

    inner = afa_ref.train_iteration
    window, done = [0] * 9, [0]
    log = open(labels_path, "w")

    def counted(*args, **kwargs):
        out = inner(*args, **kwargs)
        window[:] = [a + b for a, b in zip(window, counts(out))]
        done[0] += 1
        if done[0] % EVERY == 0:
            log.write(json.dumps({"iter": done[0], "labels": shares(window)}) + "\n")
            log.flush()
            window[:] = [0] * 9
        return out

    afa_ref.train_iteration = counted     # train_ref looks it up on the module at call time
    try:
        train_ref.main()
    finally:
        log.close()


if __name__ == "__main__":
    main()
