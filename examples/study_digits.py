"""Does TSSD help? A paired multi-seed study on real offline data where the baseline overfits.

    python examples/study_digits.py                  # the full study (6 methods x 6 seeds)
    python examples/study_digits.py --quick          # a smoke run of a few seconds
    python examples/study_digits.py --seeds 8 --epochs 80 --out runs/study_digits

The TSSD paper's gain (CIFAR-10, VGG-9, T=2: 93.35 -> 94.41) is, on our reading, a
regularisation effect of 100-epoch training in which the baseline overfits. This study builds
such a setting on data that needs no download and compares the methods on it, paired by seed.
Results and discussion: docs/STUDY.md.

Data: scikit-learn's handwritten digits (1797 8x8 images), upsampled to 16x16 as in
``tssd_fast.data.Digits``. A *reduced* training set: ``--train-per-class`` images per class
(default 10, so 100 in all), drawn per seed; every other image (1697) is the test set, so one
test image is 0.06 points. Standard augmentation for digits: a random shift of up to
``--shift`` pixels (zero padding, random crop; no flips, digits are not mirror-symmetric).
Model: spiking VGG-9 at ``--width`` (default 0.25), T=2; the methods with a TSD teacher run it
at T'=4. Optimisation: the paper's recipe scaled to ``--epochs`` (default 80): SGD momentum
0.9, lr divided by 10 after 30 % and 60 % of the epochs (the paper: every 30 of 100 epochs),
weight decay 1e-4, batch ``--batch-size`` (32), but ``--lr`` 0.03 instead of the paper's 0.1:
with a few steps per epoch, lr 0.1 made the TSSD runs blow up or stall in our pilots while the
baseline trained (docs/STUDY.md); the lower lr is the choice that favours TSSD.

Methods (``tssd_fast.distill``, each with its default weights): baseline (CE), TSD only, SSD
only, TSSD with a separate teacher run (the paper's), TSSD with ``teacher_mode='shared_prefix'``
(ours) and TKS.

Pairing: for a given seed every method gets the same training subset, the same initial weights
of the shared network (the weak head is built after it), the same data order and the same
augmentation draws (one ``torch.Generator`` per run that only the data pipeline uses).
Determinism: every run is one process on ``--threads`` torch threads (default 1) with
``torch.use_deterministic_algorithms(True)``; on one machine a rerun gives the same numbers.
Other machines can differ (CPU instruction set, oneDNN/MKL kernels, thread count, torch
version): see docs/STUDY.md.

Reported: accuracy after the last epoch (the test set picks nothing), mean ± sample std over
seeds, at T=2 and at T=1 (inference with fewer steps than trained); the train accuracy of the
final network on the un-augmented training set (the overfitting gap); and for every method the
paired difference to the baseline with a paired t-test and an exact Wilcoxon signed-rank test.

Writes to ``--out`` (default ``runs/study_digits``): ``runs.csv`` (one row per run),
``curves.csv`` (per evaluated epoch), ``summary.csv`` (per method, with the paired tests),
``study.md`` (the table, the tests and the machine), ``study.png`` (accuracy per method with
error bars, paired differences, train vs test curves). Needs scikit-learn; the plot needs
matplotlib and the progress bar tqdm (both optional).
"""
from __future__ import annotations

import argparse
import csv
import functools
import itertools
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

#: study name -> ``tssd_fast.distill.make_method`` name and options
METHODS: Dict[str, dict] = {
    "baseline": dict(method="baseline"),
    "tsd": dict(method="tsd"),
    "ssd": dict(method="ssd"),
    "tssd": dict(method="tssd", teacher_mode="separate"),
    "tssd-shared": dict(method="tssd", teacher_mode="shared_prefix"),
    "tks": dict(method="tks"),
}
LABELS = {"baseline": "baseline", "tsd": "TSD only", "ssd": "SSD only", "tssd": "TSSD (separate, paper)",
          "tssd-shared": "TSSD (shared_prefix)", "tks": "TKS"}
# relative cost of a training step, to start the longest runs first (the workers then finish together)
_COST = {"baseline": 1.0, "tks": 1.0, "ssd": 1.1, "tsd": 1.7, "tssd": 1.8, "tssd-shared": 2.0}

DEFAULTS = dict(seeds=6, epochs=80, train_per_class=10, width=0.25, batch_size=32, shift=2, eval_every=10, lr=0.03)
QUICK = dict(seeds=2, epochs=2, train_per_class=3, width=0.125, batch_size=16, shift=2, eval_every=1, lr=0.03)


# ------------------------------------------------------------------------------ statistics

def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """(mean, sample standard deviation); the std is NaN for fewer than two values."""
    m = statistics.fmean(values)
    return m, (statistics.stdev(values) if len(values) > 1 else float("nan"))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p-value ``P(|T| >= |t|)`` of Student's t distribution with ``df`` degrees of freedom."""
    if math.isnan(t):
        return float("nan")
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile (0.5 < q < 1) of Student's t with ``df`` degrees of freedom (bisection)."""
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if 1.0 - t_two_sided_p(mid, df) / 2.0 < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> Dict[str, float]:
    """Paired t-test of ``a - b`` (same seeds in the same order).

    Returns ``mean`` (of the differences), ``sd``, ``t``, ``df``, ``p`` (two-sided) and the 95 %
    confidence interval ``ci_lo``/``ci_hi`` of the mean difference. ``t`` is +-inf and ``p`` 0
    when every difference is the same non-zero value; NaN when all are zero.
    """
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("paired_t_test needs two sequences of the same length >= 2")
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    m, sd = statistics.fmean(d), statistics.stdev(d)
    se = sd / math.sqrt(n)
    if se == 0.0:
        t = float("nan") if m == 0.0 else math.copysign(math.inf, m)
    else:
        t = m / se
    half = t_quantile(0.975, n - 1) * se
    return {"mean": m, "sd": sd, "t": t, "df": n - 1, "p": t_two_sided_p(t, n - 1),
            "ci_lo": m - half, "ci_hi": m + half}


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float], ndigits: int = 9) -> Dict[str, float]:
    """Exact two-sided Wilcoxon signed-rank test of ``a - b`` (paired).

    Zero differences are dropped (Wilcoxon's convention); tied absolute differences get their
    average rank, and the exact null distribution is enumerated over all 2^n sign patterns of
    those ranks (n <= 20). Differences are rounded to ``ndigits`` first so that float noise does
    not break ties. Returns ``w_plus`` (rank sum of the positive differences), ``n`` (non-zero
    differences) and ``p``; with n = 5 the smallest possible p is 2/32 = 0.0625.
    """
    d = [round(x - y, ndigits) for x, y in zip(a, b)]
    d = [x for x in d if x != 0.0]
    n = len(d)
    if n == 0:
        return {"w_plus": 0.0, "n": 0, "p": 1.0}
    if n > 20:
        raise ValueError("the exact enumeration is limited to 20 non-zero differences")
    order = sorted(range(n), key=lambda i: abs(d[i]))
    ranks = [0.0] * n
    i = 0
    while i < n:  # average ranks over ties
        j = i
        while j + 1 < n and abs(d[order[j + 1]]) == abs(d[order[i]]):
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    w = sum(r for r, x in zip(ranks, d) if x > 0)
    total, le, ge = 0, 0, 0
    for signs in itertools.product((0, 1), repeat=n):
        s = sum(r for r, on in zip(ranks, signs) if on)
        total += 1
        le += s <= w + 1e-9
        ge += s >= w - 1e-9
    return {"w_plus": w, "n": n, "p": min(1.0, 2 * min(le, ge) / total)}


# ---------------------------------------------------------------------------------- machine

def machine_info(threads: int, jobs: int) -> Dict[str, str]:
    """What decides the numbers on this machine: CPU model, ISA torch uses, library versions, threads."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cfg = torch.__config__.show()
    onednn = next((ln.strip().split(" (")[0].replace("- ", "") for ln in cfg.splitlines() if "MKL-DNN" in ln),
                  "n/a")
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        capability = "n/a"
    return {"cpu": cpu, "logical_cpus": str(os.cpu_count()), "torch_cpu_capability": capability,
            "torch": str(torch.__version__), "onednn": onednn, "python": platform.python_version(),
            "threads_per_run": str(threads), "parallel_runs": str(jobs)}


# ------------------------------------------------------------------------------------ data

@functools.lru_cache(maxsize=1)
def _digits_arrays():
    """scikit-learn's digits, loaded once per process (importing scikit-learn takes seconds)."""
    from tssd_fast.data.digits import load_digits_arrays

    return load_digits_arrays()


def digits_split(seed: int, train_per_class: int, size: int = 16):
    """``(x_train, y_train, x_test, y_test)``: ``train_per_class`` images of each digit for training
    (drawn with ``numpy.random.default_rng(seed)``), all other images for testing.

    Images are float32 ``[N, 1, size, size]`` in [0, 1], upsampled bilinearly as
    ``tssd_fast.data.Digits`` does; labels int64.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    images, labels = _digits_arrays()
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        if train_per_class >= len(idx):
            raise ValueError(f"--train-per-class {train_per_class} leaves no test image of class {c}")
        train.append(idx[:train_per_class])
        test.append(idx[train_per_class:])
    out = []
    for keep in (np.sort(np.concatenate(train)), np.sort(np.concatenate(test))):
        x = torch.from_numpy(images[keep]).unsqueeze(1)
        if size != 8:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out += [x.contiguous(), torch.from_numpy(labels[keep])]
    return tuple(out)


def random_shift(x, shift: int, generator):
    """Shift every image of ``x`` ``[B, C, H, W]`` by its own random offset in [-shift, shift]^2
    (zero padding, then a random crop of the original size), drawing from ``generator``."""
    import torch
    import torch.nn.functional as F

    if shift <= 0:
        return x
    B, _, H, W = x.shape
    off = torch.randint(0, 2 * shift + 1, (B, 2), generator=generator)
    padded = F.pad(x, (shift,) * 4)
    return torch.stack([padded[b, :, i:i + H, j:j + W] for b, (i, j) in enumerate(off.tolist())])


# -------------------------------------------------------------------------------- training

def configure_determinism(threads: int) -> None:
    """Fix torch's thread count and ask for deterministic kernels (the run is then repeatable on
    one machine; reductions split over a different number of threads round differently)."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (or parallel work already ran) in this process
        pass
    torch.use_deterministic_algorithms(True)


def accuracy(model, x, y, T: int, batch: int = 512) -> float:
    """Top-1 accuracy of the spiking ``model`` (eval mode, time-averaged logits) at ``T`` steps."""
    import torch

    was = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += int((model(x[i:i + batch], T).mean(0).argmax(-1) == y[i:i + batch]).sum())
    model.train(was)
    return correct / len(y)


def build_run(name: str, seed: int, width: float, backend: str = "auto"):
    """``(method, model)`` of one run: the ``tssd_fast.distill`` method ``name`` (a key of
    ``METHODS``; T=2, teacher T'=4) and a spiking VGG-9 for 1x16x16 digits, whose shared layers
    get the same initial weights for every method of a seed (the weak head is built last)."""
    import torch

    from tssd_fast.distill import make_method
    from tssd_fast.models import build_model

    spec = dict(METHODS[name])
    teacher = {"T_teacher": 4} if name in ("tsd", "tssd", "tssd-shared") else {}
    method = make_method(spec.pop("method"), T=2, **teacher, **spec)
    torch.manual_seed(seed)
    model = build_model("vgg9", num_classes=10, in_channels=1, input_size=16, width=width,
                        weak_stage=3 if method.needs_weak else None, backend=backend)
    return method, model


def train_one(job: dict) -> dict:
    """Train one (method, seed) run as described in the module docstring; returns its results.

    ``job`` holds ``method``, ``seed`` and the study settings (``epochs``, ``train_per_class``,
    ``width``, ``batch_size``, ``shift``, ``eval_every``, ``threads``, ``backend``, ``lr``).
    Result keys: the final ``train_acc`` (un-augmented training set, T=2), ``test_acc_T2``,
    ``test_acc_T1``, ``seconds`` (wall), ``cpu_seconds`` (this process's CPU time: on a loaded
    machine the wall time grows, the CPU time much less) and ``curve`` (per evaluated epoch).
    """
    import torch

    configure_determinism(job["threads"])
    name, seed, epochs = job["method"], job["seed"], job["epochs"]
    x_tr, y_tr, x_te, y_te = digits_split(seed, job["train_per_class"])
    method, model = build_run(name, seed, job["width"], job["backend"])
    opt = torch.optim.SGD(model.parameters(), lr=job["lr"], momentum=0.9, weight_decay=1e-4)
    milestones = sorted({max(1, round(0.3 * epochs)), max(1, round(0.6 * epochs))})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    gen = torch.Generator().manual_seed(seed)  # data order and augmentation: the same for every method
    n, bs, curve = len(y_tr), job["batch_size"], []
    t0, c0 = time.perf_counter(), time.process_time()
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        lr = opt.param_groups[0]["lr"]  # the lr of this epoch (the scheduler steps at its end)
        loss_sum = correct = 0.0
        part_sums: Dict[str, float] = {}
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            x, y = random_shift(x_tr[idx], job["shift"], gen), y_tr[idx]
            loss, parts, logits = method.step(model, x, y, epoch=epoch, epochs=epochs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(parts["loss"]) * len(y)
            for k, v in parts.items():
                if k != "loss":
                    part_sums[k] = part_sums.get(k, 0.0) + float(v) * len(y)
            correct += float((logits.argmax(-1) == y).sum())
        sched.step()
        if not math.isfinite(loss_sum):
            raise RuntimeError(f"{name} seed {seed}: non-finite loss in epoch {epoch + 1}")
        if (epoch + 1) % job["eval_every"] == 0 or epoch + 1 == epochs:
            curve.append({"epoch": epoch + 1, "lr": lr,
                          "train_loss": loss_sum / n, **{f"train_{k}": v / n for k, v in part_sums.items()},
                          "train_acc_augmented": correct / n,
                          "train_acc": accuracy(model, x_tr, y_tr, 2), "test_acc_T2": accuracy(model, x_te, y_te, 2)})
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    return {"method": name, "seed": seed, "train_acc": curve[-1]["train_acc"], "test_acc_T2": curve[-1]["test_acc_T2"],
            "test_acc_T1": accuracy(model, x_te, y_te, 1), "n_train": n, "n_test": len(y_te),
            "seconds": seconds, "cpu_seconds": cpu_seconds, "curve": curve}


# --------------------------------------------------------------------------------- reports

def summarize(results: List[dict], methods: Sequence[str]) -> List[dict]:
    """Per method: mean ± std of the final accuracies (in %) and, against the baseline, the
    paired t-test and Wilcoxon test of the test accuracy at T=2 and T=1 (seeds matched)."""
    by = {(r["method"], r["seed"]): r for r in results}
    seeds = sorted({r["seed"] for r in results})
    rows = []
    for m in methods:
        rs = [by[(m, s)] for s in seeds if (m, s) in by]
        row = {"method": m, "label": LABELS[m], "n_seeds": len(rs)}
        for key in ("test_acc_T2", "test_acc_T1", "train_acc"):
            row[key + "_mean"], row[key + "_std"] = mean_std([100 * r[key] for r in rs])
        row["gap_mean"], row["gap_std"] = mean_std([100 * (r["train_acc"] - r["test_acc_T2"]) for r in rs])
        row["seconds_mean"] = statistics.fmean(r["seconds"] for r in rs)
        row["cpu_seconds_mean"] = statistics.fmean(r["cpu_seconds"] for r in rs)
        if "baseline" in methods and m != "baseline":
            pair = [s for s in seeds if (m, s) in by and ("baseline", s) in by]
            for key, tag in (("test_acc_T2", "T2"), ("test_acc_T1", "T1")):
                a = [100 * by[(m, s)][key] for s in pair]
                b = [100 * by[("baseline", s)][key] for s in pair]
                if len(pair) >= 2:
                    t = paired_t_test(a, b)
                    w = wilcoxon_signed_rank(a, b)
                    row.update({f"diff_{tag}_mean": t["mean"], f"diff_{tag}_sd": t["sd"],
                                f"diff_{tag}_ci_lo": t["ci_lo"], f"diff_{tag}_ci_hi": t["ci_hi"],
                                f"t_{tag}": t["t"], f"t_p_{tag}": t["p"], f"wilcoxon_p_{tag}": w["p"],
                                f"wins_{tag}": sum(x > y for x, y in zip(a, b)),
                                f"losses_{tag}": sum(x < y for x, y in zip(a, b))})
        rows.append(row)
    return rows


def write_csv(path: str, rows: List[dict]) -> None:
    """Write dict rows to ``path`` (columns: the union of the keys, in first-seen order)."""
    cols: List[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def _pm(row: dict, key: str) -> str:
    m, s = row[key + "_mean"], row[key + "_std"]
    return f"{m:.2f}" if math.isnan(s) else f"{m:.2f} ± {s:.2f}"


def markdown_report(rows: List[dict], settings: dict, machine: dict, wall: float, command: str,
                    cpu_total: float = float("nan"), load: str = "") -> str:
    """The study's table, paired tests, settings and machine as Markdown.

    ``cpu_total``: the runs' summed CPU seconds (divided by the parallel runs, it is the wall time
    the study would take on an otherwise idle machine); ``load``: the load average to quote."""
    seeds = rows[0]["n_seeds"] if rows else 0
    lines = [f"Command: `{command}`", "",
             f"Setting: digits 16x16, {settings['train_per_class']} training images per class "
             f"({10 * settings['train_per_class']}), the other images as test set; random shift ±{settings['shift']} px; "
             f"spiking VGG-9 width {settings['width']}, T=2 (teacher T'=4); {settings['epochs']} epochs, batch "
             f"{settings['batch_size']}, SGD lr {settings['lr']} /10 at 30 % and 60 %, weight decay 1e-4; "
             f"{seeds} seeds (0..{seeds - 1}), paired.", "",
             "| method | test % T=2 | test % T=1 | train % (final) | train − test | CPU s/run |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {_pm(r, 'test_acc_T2')} | {_pm(r, 'test_acc_T1')} | {_pm(r, 'train_acc')} | "
                     f"{_pm(r, 'gap')} | {r['cpu_seconds_mean']:.0f} |")
    if any("t_p_T2" in r for r in rows):
        lines += ["", "Paired against the baseline (same seeds): mean difference in points [95 % CI], "
                      "paired t-test p, exact Wilcoxon signed-rank p, wins/losses over seeds.", "",
                  "| method | Δ T=2 | t-test p | Wilcoxon p | W/L | Δ T=1 | t-test p | Wilcoxon p | W/L |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if "t_p_T2" not in r:
                continue
            cells = []
            for tag in ("T2", "T1"):
                cells += [f"{r[f'diff_{tag}_mean']:+.2f} [{r[f'diff_{tag}_ci_lo']:+.2f}, {r[f'diff_{tag}_ci_hi']:+.2f}]",
                          f"{r[f't_p_{tag}']:.3g}", f"{r[f'wilcoxon_p_{tag}']:.3g}",
                          f"{r[f'wins_{tag}']}/{r[f'losses_{tag}']}"]
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    idle = cpu_total / max(1, int(machine.get("parallel_runs", 1)))
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + ".",
              f"Time: wall {wall:.0f} s; the runs' CPU time {cpu_total:.0f} s, i.e. about {idle:.0f} s of wall "
              f"time on an idle machine" + (f"; load average at the end {load}" if load else "") + "."]
    return "\n".join(lines) + "\n"


def plot_study(results: List[dict], rows: List[dict], path: str, title: str = "") -> Optional[str]:
    """Draw the study's figure into ``path`` (PNG): accuracy per method with std error bars and
    the seeds as dots (T=2 and T=1), the paired differences to the baseline, and the mean train
    (dashed) and test (solid) accuracy curves. Returns ``path``, or None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    methods = [r["method"] for r in rows]
    colors = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 2))
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    for k, (key, off, hatch) in enumerate((("test_acc_T2", -0.2, ""), ("test_acc_T1", 0.2, "//"))):
        for i, r in enumerate(rows):
            ax.bar(i + off, r[key + "_mean"], 0.38, yerr=0 if math.isnan(r[key + "_std"]) else r[key + "_std"],
                   color=colors[r["method"]], alpha=0.55, hatch=hatch, capsize=3,
                   label=("T=2" if key.endswith("T2") else "T=1 (inference)") if i == 0 else None)
            vals = [100 * x[key] for x in results if x["method"] == r["method"]]
            ax.plot([i + off] * len(vals), vals, "k.", ms=4)
    lo = min(100 * x[k] for x in results for k in ("test_acc_T2", "test_acc_T1"))
    ax.set_ylim(max(0, lo - 3), 100)
    ax.set_xticks(range(len(rows)), [r["label"].replace(" (", "\n(") for r in rows], fontsize=7)
    ax.set(ylabel="test accuracy (%)", title="final test accuracy: mean ± std, dots = seeds")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.axhline(0, color="k", lw=0.8)
    for i, r in enumerate(rows):
        if "diff_T2_mean" not in r:
            continue
        for tag, off in (("T2", -0.15), ("T1", 0.15)):
            ax.errorbar(i + off, r[f"diff_{tag}_mean"], yerr=[[r[f"diff_{tag}_mean"] - r[f"diff_{tag}_ci_lo"]],
                                                               [r[f"diff_{tag}_ci_hi"] - r[f"diff_{tag}_mean"]]],
                        fmt="o" if tag == "T2" else "s", color=colors[r["method"]], capsize=3,
                        mfc="white" if tag == "T1" else None)
            base = {x["seed"]: x[f"test_acc_{tag}"] for x in results if x["method"] == "baseline"}
            d = [100 * (x[f"test_acc_{tag}"] - base[x["seed"]]) for x in results
                 if x["method"] == r["method"] and x["seed"] in base]
            ax.plot([i + off + 0.06] * len(d), d, "k.", ms=3)
    ax.set_xticks(range(len(rows)), [r["label"].replace(" (", "\n(") for r in rows], fontsize=7)
    ax.set(ylabel="points vs baseline (same seed)",
           title="paired difference to baseline: mean, 95 % CI\n(circle T=2, square T=1; dots = seeds)")
    ax = axes[2]
    for m in methods:
        curves = [x["curve"] for x in results if x["method"] == m]
        ep = [c["epoch"] for c in curves[0]]
        for key, style in (("test_acc_T2", "-"), ("train_acc", "--")):
            mean = [statistics.fmean(100 * c[j][key] for c in curves) for j in range(len(ep))]
            ax.plot(ep, mean, style, color=colors[m], lw=1.3, label=LABELS[m] if key == "test_acc_T2" else None)
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="train (dashed, un-augmented) vs test (solid), mean over seeds")
    ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    """Run the study, print and write its reports; returns 0."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, help=f"number of seeds 0..N-1 (default {DEFAULTS['seeds']})")
    p.add_argument("--epochs", type=int, help=f"epochs per run (default {DEFAULTS['epochs']})")
    p.add_argument("--train-per-class", type=int, help=f"training images per digit (default {DEFAULTS['train_per_class']})")
    p.add_argument("--width", type=float, help=f"VGG-9 channel multiplier (default {DEFAULTS['width']})")
    p.add_argument("--batch-size", type=int, help=f"(default {DEFAULTS['batch_size']})")
    p.add_argument("--shift", type=int, help=f"augmentation: random shift in pixels, 0 = none (default {DEFAULTS['shift']})")
    p.add_argument("--eval-every", type=int, help=f"epochs between curve points (default {DEFAULTS['eval_every']})")
    p.add_argument("--lr", type=float, help=f"initial learning rate (default {DEFAULTS['lr']})")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (part of what fixes the numbers)")
    p.add_argument("--backend", default="auto", help="LIF backend")
    p.add_argument("--out", default=os.path.join("runs", "study_digits"), help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (2 seeds, 2 epochs, 30 images, width 0.125); flags override")
    p.add_argument("--no-progress", action="store_true", help="per-run lines only, no tqdm bar")
    a = p.parse_args(argv)
    base = QUICK if a.quick else DEFAULTS
    settings = {k: (getattr(a, k) if getattr(a, k) is not None else v) for k, v in base.items()}
    settings.update(threads=a.threads, backend=a.backend)
    os.makedirs(a.out, exist_ok=True)
    jobs = [dict(settings, method=m, seed=s) for s in range(settings["seeds"]) for m in a.methods]
    jobs.sort(key=lambda j: -_COST[j["method"]])
    n_jobs = max(1, min(a.jobs, len(jobs)))
    print(f"digits study: {len(a.methods)} methods x {settings['seeds']} seeds = {len(jobs)} runs, "
          f"{settings['epochs']} epochs, {10 * settings['train_per_class']} training images, on {n_jobs} "
          f"process(es) x {a.threads} thread(s)", flush=True)
    bar = None
    if not a.no_progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=len(jobs), unit="run", file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            pass

    def report(r):
        msg = (f"  {r['method']:12s} seed {r['seed']}: test T=2 {100 * r['test_acc_T2']:6.2f}  T=1 "
               f"{100 * r['test_acc_T1']:6.2f}  train {100 * r['train_acc']:6.2f}  ({r['seconds']:.0f} s)")
        if bar is not None:
            bar.write(msg)
            bar.update(1)
        else:
            print(msg, flush=True)

    t0 = time.perf_counter()
    results = []
    if n_jobs > 1:
        with mp.get_context("spawn").Pool(n_jobs) as pool:
            for r in pool.imap_unordered(train_one, jobs):
                report(r)
                results.append(r)
    else:
        for job in jobs:
            r = train_one(job)
            report(r)
            results.append(r)
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    results.sort(key=lambda r: (a.methods.index(r["method"]), r["seed"]))
    rows = summarize(results, a.methods)
    command = "python examples/study_digits.py" + ("" if argv is None and len(sys.argv) == 1 else
                                                   " " + " ".join(sys.argv[1:] if argv is None else argv))
    machine = machine_info(a.threads, n_jobs)
    try:
        load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        load = ""
    report_md = markdown_report(rows, settings, machine, wall, command, sum(r["cpu_seconds"] for r in results), load)
    write_csv(os.path.join(a.out, "runs.csv"), [{k: v for k, v in r.items() if k != "curve"} for r in results])
    write_csv(os.path.join(a.out, "curves.csv"),
              [{"method": r["method"], "seed": r["seed"], **c} for r in results for c in r["curve"]])
    write_csv(os.path.join(a.out, "summary.csv"), rows)
    with open(os.path.join(a.out, "study.md"), "w") as f:
        f.write(report_md)
    png = plot_study(results, rows, os.path.join(a.out, "study.png"),
                     f"digits, {10 * settings['train_per_class']} training images, VGG-9 width {settings['width']}, "
                     f"T=2, {settings['epochs']} epochs, {settings['seeds']} seeds")
    print()
    print(report_md)
    print(f"wrote {a.out}/runs.csv, curves.csv, summary.csv, study.md" + (", study.png" if png else
                                                                           " (no plot: matplotlib missing)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
