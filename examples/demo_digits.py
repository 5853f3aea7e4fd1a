"""Baseline vs TSSD on a small real dataset, on CPU, offline, in a few minutes.

    python examples/demo_digits.py            # 3 seeds x {baseline, TSSD separate, TSSD shared_prefix}
    python examples/demo_digits.py --quick    # 1 seed, 2 epochs: a smoke run

Data: scikit-learn's handwritten digits (``build_dataset('digits')``: 1442 train / 355 test
grayscale images, upsampled 8x8 -> 16x16 because VGG-9 needs a size divisible by 16).
Model: spiking VGG-9 at width 0.125 (channels 8-16 | 32-32 | 64-64 | 64-64), the same network
for every method; the TSSD runs add the weak classifier after stage 3 (training only: it is not
part of the inference network).
Budget: the same for every method: epochs, batch 64, SGD (momentum 0.9, lr 0.1, x0.1 every
``--lr-step`` epochs, weight decay 1e-4: the paper's recipe, shortened), T=2; TSSD adds the
T'=4 teacher run (alpha = beta = 1, the paper's values). Same epochs means TSSD spends more
compute per epoch (a T=2 and a T'=4 run, or one T'=4 run with shared_prefix).
Reported: test accuracy after the last epoch (not the best epoch: the test set is not used to
pick anything), mean ± sample std over the seeds, at the training T=2 and at T=1 inference.
Runs go to ``--out`` (default runs/demo_digits/<method>_seed<k>), one process per run with
``--jobs`` in parallel, each on ``--threads`` torch threads. ``--out`` also gets ``demo.csv``
(one row per run) and ``demo.png`` (accuracy per method with error bars; train and test
accuracy per epoch, mean over seeds; needs matplotlib).
Numbers are repeatable on one machine, not across machines: see docs/STUDY.md. The longer,
paired study where the baseline overfits is ``examples/study_digits.py``.
Requires scikit-learn.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

VARIANTS = {
    "baseline": dict(method="baseline"),
    "tssd": dict(method="tssd", teacher_mode="separate"),
    "tssd-shared_prefix": dict(method="tssd", teacher_mode="shared_prefix"),
}


def _one_run(job):
    """Worker: train one (variant, seed) in this process; returns its summary dict."""
    variant, seed, args = job
    import torch

    torch.set_num_threads(args["threads"])
    from tssd_fast.train import resolve_config, run

    flags = dict(dataset="digits", data_opts={"size": 16}, arch="vgg9", width=args["width"], T=2, T_teacher=4,
                 T_eval=[2, 1], epochs=args["epochs"], batch_size=64, lr=0.1, momentum=0.9, weight_decay=1e-4,
                 scheduler="step", lr_step=args["lr_step"], lr_gamma=0.1, workers=0, seed=seed,
                 backend=args["backend"], out_dir=os.path.join(args["out"], f"{variant}_seed{seed}"),
                 overwrite=True, progress=False, tensorboard=False, preset="paper-static", **VARIANTS[variant])
    cfg = resolve_config(flags)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        summary = run(cfg)
    summary["variant"] = variant
    summary["seed"] = seed
    return summary


def _mean_std(values):
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else float("nan")
    return m, s


def _fmt(values) -> str:
    m, s = _mean_std([100 * v for v in values])
    return f"{m:6.2f} ± {s:4.2f}" if not math.isnan(s) else f"{m:6.2f}"


def _read_metrics(out: str, variant: str, seed: int):
    path = os.path.join(out, f"{variant}_seed{seed}", "metrics.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_csv(path: str, results) -> None:
    """One row per run: last-epoch test accuracy at T=2 and T=1, last-epoch train accuracy, seconds."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "seed", "test_acc_T2", "test_acc_T1", "train_acc_last_epoch", "seconds"])
        for r in sorted(results, key=lambda r: (r["variant"], r["seed"])):
            last = _read_metrics(os.path.dirname(r["out_dir"]), r["variant"], r["seed"])[-1]
            w.writerow([r["variant"], r["seed"], f"{r['last_test_acc_T2']:.6f}", f"{r['last_test_acc_T1']:.6f}",
                        f"{last['train_acc']:.6f}", f"{r['seconds']:.1f}"])


def _plot(results, table, out: str, path: str):
    """Bars (mean ± std at T=2 and T=1, seeds as dots) and mean train/test curves; None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(table):
        for key, off, hatch in (("T2", -0.2, ""), ("T1", 0.2, "//")):
            m, s = row[key]
            ax.bar(i + off, 100 * m, 0.38, yerr=0 if math.isnan(s) else 100 * s, color=colors[i], alpha=0.55,
                   hatch=hatch, capsize=3, label=("T=2" if key == "T2" else "T=1 (inference)") if i == 0 else None)
            seeds = row["per_seed_" + key]
            ax.plot([i + off] * len(seeds), [100 * v for v in seeds], "k.", ms=4)
        runs = [_read_metrics(out, row["variant"], r["seed"]) for r in results if r["variant"] == row["variant"]]
        ep = [rec["epoch"] for rec in runs[0]]
        for key, style in (("test_acc", "-"), ("train_acc", "--")):
            mean = [statistics.fmean(100 * run[j][key] for run in runs) for j in range(len(ep))]
            ax2.plot(ep, mean, style, color=colors[i], label=row["variant"] if key == "test_acc" else None)
    lo = min(100 * v for row in table for k in ("per_seed_T2", "per_seed_T1") for v in row[k])
    ax.set_ylim(max(0, lo - 3), 100)
    ax.set_xticks(range(len(table)), [row["variant"] for row in table], fontsize=8)
    ax.set(ylabel="test accuracy (%)", title="last epoch: mean ± std over seeds (dots = seeds)")
    ax.legend(fontsize=8)
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="train (dashed, running) and test (solid, T=2), mean over seeds")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    """Run the demonstration and print the summary table; returns 0."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, help="number of seeds (default 3; --quick: 1)")
    p.add_argument("--epochs", type=int, help="epochs per run (default 6; --quick: 2)")
    p.add_argument("--lr-step", type=int, default=2, help="lr x0.1 every N epochs (default 2)")
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs in parallel")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--backend", default="auto", help="LIF backend")
    p.add_argument("--out", default=os.path.join("runs", "demo_digits"))
    p.add_argument("--quick", action="store_true", help="1 seed, 2 epochs unless given (smoke run)")
    p.add_argument("--json", help="also write the per-run summaries and the table to this JSON file")
    a = p.parse_args(argv)
    a.seeds = a.seeds or (1 if a.quick else 3)
    a.epochs = a.epochs or (2 if a.quick else 6)
    args = dict(epochs=a.epochs, lr_step=a.lr_step, width=a.width, threads=a.threads, backend=a.backend, out=a.out)
    jobs = [(v, s, args) for s in range(a.seeds) for v in a.variants]
    # the longest runs first, so the parallel workers finish together
    jobs.sort(key=lambda j: j[0] == "baseline")
    print(f"digits, spiking VGG-9 width {a.width}, T=2 (teacher T'=4), {a.epochs} epochs, {a.seeds} seed(s), "
          f"{len(jobs)} runs on {a.jobs} process(es) x {a.threads} thread(s) ...", flush=True)
    t0 = time.perf_counter()
    results = []
    if a.jobs > 1:
        with mp.get_context("spawn").Pool(a.jobs) as pool:
            for r in pool.imap_unordered(_one_run, jobs):
                print(f"  {r['variant']:20s} seed {r['seed']}: test acc T=2 {100 * r['last_test_acc_T2']:.2f}  "
                      f"T=1 {100 * r['last_test_acc_T1']:.2f}  ({r['seconds']:.0f} s)", flush=True)
                results.append(r)
    else:
        for job in jobs:
            r = _one_run(job)
            print(f"  {r['variant']:20s} seed {r['seed']}: test acc T=2 {100 * r['last_test_acc_T2']:.2f}  "
                  f"T=1 {100 * r['last_test_acc_T1']:.2f}  ({r['seconds']:.0f} s)", flush=True)
            results.append(r)
    wall = time.perf_counter() - t0

    table = []
    print()
    print(f"{'method':22s} {'test acc % T=2':>16s} {'test acc % T=1':>16s} {'train s/run':>12s}")
    for v in a.variants:
        rs = [r for r in results if r["variant"] == v]
        t2 = [r["last_test_acc_T2"] for r in rs]
        t1 = [r["last_test_acc_T1"] for r in rs]
        secs = statistics.fmean(r["seconds"] for r in rs)
        table.append({"variant": v, "T2": _mean_std(t2), "T1": _mean_std(t1), "seconds_per_run": secs,
                      "per_seed_T2": t2, "per_seed_T1": t1})
        print(f"{v:22s} {_fmt(t2):>16s} {_fmt(t1):>16s} {secs:12.0f}")
    print(f"(mean ± sample std over {a.seeds} seed(s), accuracy after the last epoch; wall time {wall:.0f} s)")
    _write_csv(os.path.join(a.out, "demo.csv"), results)
    png = _plot(results, table, a.out, os.path.join(a.out, "demo.png"))
    print(f"wrote {os.path.join(a.out, 'demo.csv')}" + (f" and {png}" if png else " (no plot: matplotlib missing)"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "runs": results, "table": table, "wall_seconds": wall}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
