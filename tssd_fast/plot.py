"""Accuracy and loss curves of training runs: ``python -m tssd_fast.plot RUN_DIR... [-o out.png]``.

Reads ``metrics.jsonl`` of each run folder written by ``python -m tssd_fast.train`` and draws,
per epoch, the test accuracy (solid) and train accuracy (dashed) on the left and the train loss
on the right, one colour per run. Needs matplotlib (imported when plotting).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence


def read_metrics(run_dir: str) -> List[Dict]:
    """The per-epoch records of a run folder (or of a metrics.jsonl path), in file order."""
    run_dir = os.fspath(run_dir)
    path = run_dir if run_dir.endswith(".jsonl") else os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_label(run_dir: str) -> str:
    """Legend label: the folder name, plus method and T from its config.json when present."""
    run_dir = os.fspath(run_dir)
    name = os.path.basename(os.path.normpath(run_dir if not run_dir.endswith(".jsonl") else os.path.dirname(run_dir)))
    cfg_path = os.path.join(run_dir, "config.json")
    if os.path.isfile(cfg_path):
        try:
            with open(cfg_path) as f:
                cfg = json.load(f).get("config", {})
            return f"{name} ({cfg.get('method')}, T={cfg.get('T')})"
        except (OSError, ValueError):
            pass
    return name


def plot_runs(run_dirs: Sequence[str], out: str, title: Optional[str] = None, labels: Optional[Sequence[str]] = None) -> str:
    """Draw the curves of ``run_dirs`` into the PNG ``out``; returns ``out``."""
    import matplotlib.pyplot as plt
    fig = draw_runs(run_dirs, title, labels)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def draw_runs(run_dirs: Sequence[str], title: Optional[str] = None, labels: Optional[Sequence[str]] = None):
    """The matplotlib figure of :func:`plot_runs` (accuracy axes first, then loss), not saved."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("tssd_fast.plot needs matplotlib: pip install matplotlib") from e
    if not run_dirs:
        raise ValueError("give at least one run folder")
    from matplotlib.ticker import MaxNLocator
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = set()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(run_dirs):
        recs = read_metrics(run)
        label = labels[i] if labels else run_label(run)
        c = colors[i % len(colors)]
        ep = [r["epoch"] for r in recs]
        ax_acc.plot(ep, [100 * r["test_acc"] for r in recs], "-o", color=c, ms=3, label=f"{label} test")
        if all("train_acc" in r for r in recs):
            # a marker too: a one-epoch run has a single point, which a bare line does not show
            ax_acc.plot(ep, [100 * r["train_acc"] for r in recs], "--s", color=c, alpha=0.6, ms=3,
                        mfc="none", label=f"{label} train")
        ax_loss.plot(ep, [r["train_loss"] for r in recs], "-o", color=c, ms=3, label=label)
        epochs.update(ep)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="train loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        # whole epochs only, and half an epoch of room either side (one epoch: 0.5-1.5, not 0.96-1.04)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m tssd_fast.plot RUN_DIR... [-o OUT.png] [--title T]``."""
    p = argparse.ArgumentParser(prog="python -m tssd_fast.plot",
                                description="Plot accuracy/loss curves of tssd_fast.train runs to a PNG.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (holding metrics.jsonl)")
    p.add_argument("-o", "--out", help="PNG path (default: RUN_DIR/curves.png for one run, ./curves.png for several)")
    p.add_argument("--title", help="figure title")
    p.add_argument("--labels", nargs="+", help="legend labels, one per run")
    a = p.parse_args(argv)
    if a.labels and len(a.labels) != len(a.runs):
        p.error("--labels needs one label per run")
    out = a.out or (os.path.join(a.runs[0], "curves.png") if len(a.runs) == 1 else "curves.png")
    try:
        plot_runs(a.runs, out, a.title, a.labels)
    except (FileNotFoundError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
