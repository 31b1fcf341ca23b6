#!/usr/bin/env python3
"""Training quality, like for like (make bench-quality).

Trains the product (`afa train`) and the reference trainer (`train_ref.py`, PyTorch; benchmark-only) on the
same generated datasets with the same recipe and seeds, scores both on the val split with the reference's
protocol (`afa eval --reference-protocol`: CAM and affinity from the training step's multi-scale CAM pass,
segmentation at scale 1), and prints mean ± sd over the seeds
of CAM, affinity and segmentation mIoU and classifier F1, side by side. A third row per dataset is the
product's default tiny recipe; `--trainers product-nearest` adds a fourth, the default recipe with the
affinity labels sampled as the method samples them (one pixel per grid cell, not the cell's majority).
`--set train.radius=2` (repeatable) runs the product rows with keys of their resolved recipe changed; those rows
are stored and shown under their own name (`product-default[train.radius=2]`), so an experiment never mixes
with the rows it is compared against.

Datasets are `afa synth` variants fixed here (classes, image size, object size and count, plain or cluttered
backgrounds, occlusion). `--quick` runs two of them for a few hundred iterations and two seeds, to check the
harness end to end; the full run takes hours on two cores. Results go to --out (JSON) as they arrive, each
product result with the full recipe it trained with, and runs found there are not repeated unless the binary
now resolves that row to another recipe (delete the file to start over).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> `afa synth` options (400 train / 100 val images each; seed 11 for the images).
DATASETS = {
    "default-96": [],
    "ten-classes-96": ["--classes", "10"],
    "plain-96": ["--plain"],
    "occluded-96": ["--occlusion", "--max-objects", "4"],
    "small-objects-128": ["--size", "128", "--object-size", "0.06,0.14", "--max-objects", "5"],
    "large-objects-128": ["--size", "128", "--object-size", "0.2,0.35", "--max-objects", "2"],
}
QUICK_DATASETS = ["default-96", "occluded-96"]
TRAINERS = ("reference", "product-same", "product-default", "product-nearest")
# product-nearest: the default tiny recipe with the affinity labels sampled at the grid point's pixel, as the
# method and the reference do, instead of each grid cell's most frequent label (`aff_label_sampling`): the
# evidence for the default's choice. Not in the default --trainers.
DEFAULT_TRAINERS = TRAINERS[:3]

# The recipe both trainers share: the reference's defaults at this size (lr 1e-3 with the heads at 10x,
# frozen backbone norms, rescale 0.5-2.0, no drop-path, the method's patch strides), crop 96, batch 4.
SHARED = {"lr": 1e-3, "rescale": (0.5, 2.0), "train_norms": False, "strides": [4, 2, 2, 1], "crop": 96, "batch": 4}


def run(cmd, log):
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        with open(log) as f:
            sys.stderr.write(f.read()[-3000:])
        raise SystemExit(f"failed: {' '.join(cmd)} (log {log})")


# Recipe keys the harness sets itself on `afa train`'s command line, which overrides --config: a --set of one of
# them would be silently undone.
HARNESS_KEYS = {"iterations", "seed", "threads", "crop_size", "batch_size", "eval_every", "checkpoint_every",
                "preset", "train.max_iters"}


def parse_settings(items):
    """`key.path=value` strings -> [(["key", "path"], value)]; the value is JSON where it parses as JSON
    (numbers, true/false, lists), else the string itself."""
    settings = []
    for item in items:
        path, eq, text = item.partition("=")
        if not eq or not path:
            raise SystemExit(f"--set {item!r}: expected key=value, e.g. train.radius=2")
        if "/" in item:
            raise SystemExit(f"--set {item!r}: a '/' would break the results' keys (dataset/row/iterations/seed)")
        if path in HARNESS_KEYS:
            raise SystemExit(f"--set {path}: the harness sets this one (--iters, --seeds, --threads, and the shared "
                             f"crop and batch)")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        settings.append((path.split("."), value))
    return settings


def variant_name(settings):
    """The suffix that keys a row with changed recipe keys: '' without any, else '[a.b=1,c=x]', the keys in
    alphabetical order so that the same settings given in another order find the same rows."""
    if not settings:
        return ""
    text = lambda v: v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    return "[" + ",".join(sorted(".".join(path) + "=" + text(v) for path, v in settings)) + "]"


def apply_settings(recipe, settings):
    """Puts each setting into the resolved recipe. Only keys the recipe already has can be set, so a typo
    fails here instead of running a row that silently ignores it."""
    for path, value in settings:
        node = recipe
        for i, part in enumerate(path):
            if not isinstance(node, dict) or part not in node:
                raise SystemExit(f"--set {'.'.join(path)}: the recipe has no key {'.'.join(path[:i + 1])!r} "
                                 f"(see `afa train --dry-run` for the keys)")
            if i == len(path) - 1:
                node[part] = value
            else:
                node = node[part]


def train_command(afa, data, out, iters, seed, threads):
    return [afa, "train", "--data", data, "--out", out, "--preset", "tiny", "--iters", str(iters), "--seed", str(seed),
            "--eval-every", "0", "--checkpoint-every", str(iters), "--threads", str(threads),
            "--crop", str(SHARED["crop"]), "--batch", str(SHARED["batch"])]


def row_recipe(afa, data, iters, seed, trainer, settings=()):
    """The full recipe a product row trains with: the binary's resolved default (`afa train --dry-run`) with
    the row's changes and the --set keys put in. Stored with each result, so that a result measured with
    another recipe (an older build's default) is trained again instead of shown as this row's."""
    cmd = train_command(afa, data, os.devnull, iters, seed, 1) + ["--dry-run"]
    recipe = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    if trainer != "product-default":
        recipe["train"]["aff_label_sampling"] = "nearest"   # the method's and the reference's
    if trainer == "product-same":
        recipe["model"]["strides"] = SHARED["strides"]
        recipe["train"]["lr"] = SHARED["lr"]
        recipe["scale_range"] = list(SHARED["rescale"])
        recipe["train_norms"] = SHARED["train_norms"]
    apply_settings(recipe, settings)
    return recipe


def same_recipe(a, b):
    """Whether two rows' recipes train the same run: every key but the thread count, which does not change
    the results (they are bit-identical across thread counts)."""
    strip = lambda r: {k: v for k, v in r.items() if k != "threads"}
    return a is not None and b is not None and strip(a) == strip(b)


def product_run(afa, data, work, iters, seed, threads, recipe):
    """Trains with `afa train` on the given full recipe and returns the single-scale evaluation."""
    out = os.path.join(work, "run")
    config = os.path.join(work, "recipe.json")
    with open(config, "w") as f:
        json.dump(dict(recipe, threads=threads), f)
    run(train_command(afa, data, out, iters, seed, threads) + ["--config", config], os.path.join(work, "train.log"))
    report = os.path.join(work, "eval.json")
    run([afa, "eval", "--data", data, "--checkpoint", os.path.join(out, "checkpoints", "latest.safetensors"), "--scales", "1",
         "--no-flip", "--reference-protocol", "--json", report, "--threads", str(threads)], os.path.join(work, "eval.log"))
    with open(report) as f:
        r = json.load(f)["reference_protocol"]
    with open(os.path.join(out, "log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    return {"cam": r["cam_miou"], "aff": r["aff_miou"], "seg": r["seg_miou"], "f1": r["cls_f1_per_image"],
            "labels": label_phases(log, iters), "recipe": recipe}


def reference_run(python, ref_dir, data, work, iters, seed, threads):
    out, labels = os.path.join(work, "ref.json"), os.path.join(work, "labels.jsonl")
    run([python, os.path.join(HERE, "train_ref_labels.py"), ref_dir, labels, "--data", data, "--preset", "tiny", "--crop", str(SHARED["crop"]),
         "--batch", str(SHARED["batch"]), "--scale-range", str(SHARED["rescale"][0]), str(SHARED["rescale"][1]),
         "--max-iters", str(iters), "--lr", str(SHARED["lr"]), "--eval-every", str(iters), "--seed", str(seed),
         "--threads", str(threads), "--out", out], os.path.join(work, "ref.log"))
    with open(out) as f:
        r = json.load(f)["final"]
    with open(labels) as f:
        log = [json.loads(line) for line in f]
    return dict({k: r[k] for k in ("cam", "aff", "seg", "f1")}, labels=label_phases(log, iters))


def label_phases(log, iters):
    """Mean target shares (log lines' `labels`) over the two phases with a segmentation target: the
    pseudo-label phase (after the CAM-only 10%, up to 30%) and the affinity-label phase (the rest)."""
    cam, switch = round(0.1 * iters), round(0.3 * iters)
    def mean(rows):
        rows = [x["labels"] for x in rows if "labels" in x]
        return {k: statistics.mean(r[k] for r in rows) for k in rows[0]} if rows else None
    return {"pseudo_phase": mean([x for x in log if cam < x["iter"] <= switch]),
            "affinity_phase": mean([x for x in log if x["iter"] > switch])}


def row_names(results, datasets, iters):
    """The table's rows for these datasets: the default trainers always (a missing one shows '-'), then
    every other trainer and recipe variant that has results, in a fixed order."""
    found = {key.split("/")[1] for key in results
             if key.split("/")[0] in datasets and key.split("/")[2] == str(iters)}
    def order(row):
        trainer = row.split("[")[0]   # a recipe variant sorts by its trainer, then by its settings
        return (TRAINERS.index(trainer) if trainer in TRAINERS else len(TRAINERS), row)
    return list(DEFAULT_TRAINERS) + sorted(found - set(DEFAULT_TRAINERS), key=order)


def seed_rows(results, name, row, iters, seeds):
    return [results[k] for k in (f"{name}/{row}/{iters}/{s}" for s in range(seeds)) if k in results]


def mean_sd(values):
    if not values:
        return "-"
    m = statistics.mean(values) * 100
    sd = statistics.stdev(values) * 100 if len(values) > 1 else 0.0
    return f"{m:5.1f} ± {sd:3.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--afa", required=True)
    ap.add_argument("--python", required=True, help="a Python with torch, numpy and Pillow")
    ap.add_argument("--reference", required=True, help="folder with train_ref.py and afa_ref.py")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--from-seed", type=int, default=0,
                    help="train only seeds from this one on (earlier seeds come from --out, to extend a table)")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--quick", action="store_true", help="2 datasets, 2 seeds, 300 iterations")
    ap.add_argument("--trainers", default=",".join(DEFAULT_TRAINERS),
                    help="which rows to run, comma-separated (a subset gathers evidence sooner; the table shows what exists)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the generated datasets and every run's folder (checkpoints, logs) under $TMPDIR")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="change a key of the product rows' resolved recipe (e.g. train.aff_weight=0.3; repeatable); "
                         "the rows are keyed by it, so they are kept apart from the unchanged ones")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="quality.json")
    args = ap.parse_args()
    settings = parse_settings(args.set)
    variant = variant_name(settings)
    if args.quick:
        args.iters, args.seeds, args.datasets = 300, 2, ",".join(QUICK_DATASETS)
    afa = os.path.abspath(args.afa)
    results = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = json.load(f)
    trainers = args.trainers.split(",")
    unknown = [t for t in trainers if t not in TRAINERS]
    if unknown:
        raise SystemExit(f"unknown trainer(s) {unknown}; choose from {', '.join(TRAINERS)}")
    if settings and "reference" in trainers:
        raise SystemExit("--set changes the product's recipe; the reference trainer has its own options "
                         "(leave `reference` out of --trainers)")
    base = tempfile.mkdtemp(prefix="afa-quality-")
    datasets = args.datasets.split(",")
    # Seed-major, so that a partial run already covers every dataset once.
    for seed in range(args.from_seed, args.seeds):
        for name in datasets:
            data = os.path.join(base, name)
            if not os.path.isdir(data):
                subprocess.run([afa, "synth", "--out", data, "--train", "400", "--val", "100", "--seed", "11"] + DATASETS[name],
                               check=True, stdout=subprocess.DEVNULL)
            for trainer in trainers:
                row = trainer if trainer == "reference" else trainer + variant
                key = f"{name}/{row}/{args.iters}/{seed}"
                recipe = None if trainer == "reference" else row_recipe(afa, data, args.iters, seed, trainer, settings)
                if key in results:
                    if recipe is None or same_recipe(results[key].get("recipe"), recipe):
                        continue
                    print(f"{key}: measured with another recipe (an older build's default?); training it again", flush=True)
                work = tempfile.mkdtemp(prefix=f"{trainer}-", dir=base)
                if trainer == "reference":
                    r = reference_run(args.python, args.reference, data, work, args.iters, seed, args.threads)
                else:
                    r = product_run(afa, data, work, args.iters, seed, args.threads, recipe)
                results[key] = r
                print(f"{key}: cam {100 * r['cam']:.1f} aff {100 * r['aff']:.1f} seg {100 * r['seg']:.1f} f1 {r['f1']:.3f}", flush=True)
                with open(args.out + ".tmp", "w") as f:
                    json.dump(results, f, indent=1)
                os.replace(args.out + ".tmp", args.out)
                if not args.keep:
                    shutil.rmtree(work)   # its checkpoints and logs; a failed run's stay, named in the error
    if not args.keep:
        shutil.rmtree(base)
    print()
    print(f"{args.iters} iterations, seeds 0-{args.seeds - 1}, scored as train_ref.py scores; mIoU and F1 in %, mean ± sd over seeds")
    width = max([16] + [len(r) for r in row_names(results, datasets, args.iters)])
    print(f"{'dataset':<20} {'trainer':<{width}} {'CAM':>12} {'aff':>12} {'seg':>12} {'F1':>12}")
    for name in datasets:
        for row in row_names(results, [name], args.iters):
            rows = seed_rows(results, name, row, args.iters, args.seeds)
            print(f"{name:<20} {row:<{width}} " + " ".join(f"{mean_sd([r[k] for r in rows]):>12}" for k in ("cam", "aff", "seg", "f1")))
    print()
    print("Training targets, mean share in % over the seeds: pseudo label (bg/fg/ignored) in the pseudo-label phase,")
    print("affinity-refined label (bg/fg/ignored) and labelled / positive affinity pairs in the affinity-label phase")
    print(f"{'dataset':<20} {'trainer':<{width}} {'pseudo bg/fg/ign':>18} {'refined bg/fg/ign':>18} {'pairs lab/pos':>14}")
    for name in datasets:
        for row in row_names(results, [name], args.iters):
            rows = [r.get("labels") for r in seed_rows(results, name, row, args.iters, args.seeds)]
            rows = [r for r in rows if r and r["pseudo_phase"] and r["affinity_phase"]]
            if not rows:
                continue
            m = lambda phase, k: 100 * statistics.mean(r[phase][k] for r in rows)
            print(f"{name:<20} {row:<{width}} "
                  f"{m('pseudo_phase', 'pseudo_bg'):5.1f}/{m('pseudo_phase', 'pseudo_fg'):4.1f}/{m('pseudo_phase', 'pseudo_ignored'):4.1f}      "
                  f"{m('affinity_phase', 'refined_bg'):5.1f}/{m('affinity_phase', 'refined_fg'):4.1f}/{m('affinity_phase', 'refined_ignored'):4.1f}      "
                  f"{m('affinity_phase', 'pairs_labelled'):5.1f}/{m('affinity_phase', 'pairs_positive'):4.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
