"""Training of spiking networks: ``python -m tssd_fast.train`` (see docs/TRAINING.md).

Programmatic use::

    from tssd_fast.train import resolve_config, run
    cfg = resolve_config({"dataset": "digits", "data_opts": {"size": 16}, "preset": "cpu-tiny",
                          "method": "tssd", "out_dir": "runs/d"})
    summary = run(cfg)   # dict: best_test_acc, last_test_acc, seconds, ...

``run`` joins a torchrun process group when launched under torchrun (DDP).
"""
from .config import PRESETS, TrainConfig, auto_preset, resolve_config


def run(cfg):
    """Train (or evaluate with ``cfg.eval_only``) as configured; see :func:`tssd_fast.train.loop.run`."""
    from .loop import run as _run
    return _run(cfg)


def main(argv=None) -> int:
    """The command line (``python -m tssd_fast.train``); returns the exit status."""
    from .cli import main as _main
    return _main(argv)


__all__ = ["PRESETS", "TrainConfig", "auto_preset", "resolve_config", "run", "main"]
