"""A short training run with evaluations, for the checks of what a run leaves behind."""
import os
import subprocess


def small_run(afa, work, iters=30, eval_every=10, log_every=5):
    """Trains the tiny model for `iters` iterations on a small generated dataset; returns the run directory."""
    data, run = os.path.join(work, "data"), os.path.join(work, "run")
    subprocess.run([afa, "synth", "--out", data, "--train", "24", "--val", "6", "--size", "64"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([afa, "train", "--data", data, "--out", run, "--preset", "tiny", "--crop", "64", "--iters", str(iters),
                    "--eval-every", str(eval_every), "--log-every", str(log_every), "--checkpoint-every", "10", "--threads", "2"], check=True, stdout=subprocess.DEVNULL)
    return run
