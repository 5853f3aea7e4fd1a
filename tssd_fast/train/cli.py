"""Command line of ``python -m tssd_fast.train`` (also under ``torchrun``).

Every flag is optional: unset flags come from the preset (the paper's recipe for the dataset
unless ``--preset`` names another), a ``--config`` file or the ``--resume`` checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

from .config import ARCH_NAMES, METHOD_NAMES, PRESETS, TrainConfig, load_config_file, resolve_config

DATASETS = ("cifar10", "cifar100", "cifar10-dvs", "dvs-gesture", "imagenet", "synthetic", "synthetic-dvs", "digits")

_EPILOG = """presets (--preset; default: paper-dvs for event data, paper-imagenet for imagenet, else paper-static):
""" + "\n".join(f"  {name:15s} " + ", ".join(f"{k}={v}" for k, v in p.items()) for name, p in PRESETS.items()) + """

precedence: built-in defaults < preset < flags; with --config FILE or --resume CKPT:
  defaults < that config < --preset (if given) < flags.

examples:
  python -m tssd_fast.train --dataset cifar10 --data-dir /data --arch vgg9 --method tssd --T 2 --T-teacher 4
  python -m tssd_fast.train --resume runs/x/checkpoint_last.pt            # continue a run
  python -m tssd_fast.train --resume runs/x/checkpoint_best.pt --eval-only --T-eval 1 2 4
  torchrun --nproc_per_node 4 -m tssd_fast.train --dataset cifar10-dvs --data-dir /data/dvs --batch-size 16
docs: docs/TRAINING.md"""


def _default(name: str) -> str:
    v = TrainConfig.__dataclass_fields__[name].default
    return "derived" if v is None else str(v)


def _data_opt(text: str):
    """``KEY=VALUE`` with VALUE parsed as JSON when possible (``size=16``, ``flip=true``)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        value = json.loads(value)
    except json.JSONDecodeError:
        pass
    return key.strip().replace("-", "_"), value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the message and where to look, without the usage block
    (which for this many flags says nothing about the mistake)."""

    def error(self, message: str):
        own = message.startswith(("argument ", "unrecognized arguments", "the following arguments"))
        self.exit(2, f"{self.prog}: error: {message}" + ("  (--help lists every flag)" if own else "") + "\n")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser (flags not given stay absent from the namespace)."""
    p = _Parser(
        prog="python -m tssd_fast.train", usage="%(prog)s [options]   (all optional; see below)", argument_default=argparse.SUPPRESS, allow_abbrev=False,
        description="Train or evaluate a spiking VGG/ResNet with TSSD, its ablations, TKS, TSER or KD.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    B = argparse.BooleanOptionalAction

    g = p.add_argument_group("data")
    g.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (default {_default('dataset')})")
    g.add_argument("--data-dir", dest="data_dir", help="dataset folder (see docs/DATA.md)")
    g.add_argument("--data-opt", dest="data_opts", action="append", type=_data_opt, metavar="KEY=VALUE",
                   help="extra build_dataset option, repeatable: e.g. size=16, num_samples=64, split_by=window")
    g.add_argument("--workers", type=int, help=f"DataLoader workers per process (default {_default('workers')})")

    g = p.add_argument_group("model")
    g.add_argument("--arch", choices=ARCH_NAMES, help=f"network (default {_default('arch')})")
    g.add_argument("--width", type=float, help="channel width multiplier (default 1.0)")
    g.add_argument("--weak-stage", dest="weak_stage", type=int, help="stage of the weak classifier (ssd/tssd)")
    g.add_argument("--stem", choices=("auto", "cifar", "imagenet"), help="ResNet stem (auto: imagenet if input >= 112 px)")
    g.add_argument("--backend", help="LIF backend: auto, torch, cpp, cuda, triton, cupy (default auto)")
    g.add_argument("--memory", choices=("default", "min", "plain"),
                   help="what backward keeps (docs/MEMORY.md): default = spikes as bits, bitwise the plain "
                        "results; min = also recompute BN inputs in backward (less memory, slower); plain = torch's layers")
    g.add_argument("--cudnn-benchmark", dest="cudnn_benchmark", choices=("auto", "on", "off"),
                   help="CUDA: let cuDNN time its conv algorithms (auto = on, except with --memory min, whose "
                        "backward recompute then picks the forward's algorithm: docs/MEMORY.md)")
    g.add_argument("--channels-last", dest="channels_last", action=B,
                   help="keep conv weights and image batches in channels_last memory format (NHWC); the "
                        "spiking layers keep it through time (default off; docs/TRAINING.md)")

    g = p.add_argument_group("method")
    g.add_argument("--method", choices=METHOD_NAMES,
                   help="tssd (default) = CE + alpha*TSD + beta*SSD; baseline/tsd/ssd ablations; tks; tser/kd "
                        "(need --teacher); ann trains the ANN twin (a teacher for kd/tser)")
    g.add_argument("--T", type=int, help="student / inference timesteps (preset)")
    g.add_argument("--T-teacher", dest="T_teacher", type=int, help="teacher timesteps T' > T for tsd/tssd (preset; else 2T)")
    g.add_argument("--T-eval", dest="T_eval", type=int, nargs="+", metavar="T",
                   help="timesteps to evaluate at (default T); test_acc and the best checkpoint use the first")
    g.add_argument("--alpha", type=float, help="TSD weight (tsd/tssd), distillation weight (tks/kd/tser)")
    g.add_argument("--beta", type=float, help="SSD weight (ssd/tssd)")
    g.add_argument("--tau", type=float, help="temperature (tks/kd/tser)")
    g.add_argument("--teacher-mode", dest="teacher_mode", choices=("separate", "shared_prefix"),
                   help="separate T and T' runs (default) or one T' run whose first T steps are the student")
    g.add_argument("--extension", action=B, help="SSD target = the T'-step output (the paper's extension)")
    g.add_argument("--teacher-ce", dest="teacher_ce", action=B, help="also add CE on the T'-step output")
    g.add_argument("--teacher", help="kd/tser: checkpoint of a --method ann run")

    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=("sgd", "adamw", "lamb"))
    g.add_argument("--lr", type=float, help="initial learning rate (paper: 0.1)")
    g.add_argument("--momentum", type=float)
    g.add_argument("--weight-decay", dest="weight_decay", type=float, help="paper: 1e-4 static, 1e-3 DVS")
    g.add_argument("--scheduler", choices=("step", "cosine", "constant"))
    g.add_argument("--lr-step", dest="lr_step", type=int, help="step schedule period in epochs (paper: 30)")
    g.add_argument("--lr-gamma", dest="lr_gamma", type=float, help="step schedule factor (paper: 0.1)")
    g.add_argument("--schedule-epochs", dest="schedule_epochs", type=int, help="cosine period (default: epochs)")
    g.add_argument("--epochs", type=int, help="paper: 100")
    g.add_argument("--batch-size", dest="batch_size", type=int, help="per process (paper: 64 on one GPU)")
    g.add_argument("--test-batch-size", dest="test_batch_size", type=int)
    g.add_argument("--grad-clip", dest="grad_clip", type=float, help="clip the gradient norm")
    g.add_argument("--max-steps-per-epoch", dest="max_steps_per_epoch", type=int, help="cut epochs short (smoke runs)")

    g = p.add_argument_group("run")
    g.add_argument("--preset", choices=sorted(PRESETS), help="recipe to start from (see below)")
    g.add_argument("--config", help="JSON config to start from (e.g. a run's config.json)")
    g.add_argument("--out-dir", dest="out_dir", help="run folder (default runs/<dataset>_<arch>_<method>_T<T>_seed<seed>; "
                                                    "with --resume the checkpoint's folder)")
    g.add_argument("--resume", metavar="PATH", help="checkpoint to continue from (its config is the base)")
    g.add_argument("--overwrite", action=B, help="replace a run already in --out-dir")
    g.add_argument("--seed", type=int, help="default 0")
    g.add_argument("--device", help="auto (cuda:LOCAL_RANK if available, else cpu), cpu, cuda, cuda:1")
    g.add_argument("--amp", action=B, help="mixed precision with torch.autocast (bf16 on CPU; bf16 or fp16 on CUDA)")
    g.add_argument("--amp-dtype", dest="amp_dtype", choices=("auto", "bf16", "fp16"), help="fp16 uses a GradScaler")
    g.add_argument("--cuda-graphs", dest="cuda_graphs", action="store_true",
                   help="capture each training step (forward, backward, SGD) in a CUDA graph and replay it: "
                        "no per-kernel launch cost; one GPU process, SGD, fp32 or bf16; the last short batch "
                        "of an epoch runs eagerly")
    g.add_argument("--eval-only", dest="eval_only", action="store_true",
                   help="evaluate the --resume weights at every --T-eval and write eval.json")
    g.add_argument("--early-exit-threshold", dest="early_exit_threshold", type=float,
                   help="with --eval-only: also evaluate early exit through the weak classifier")
    g.add_argument("--progress", action=B, help="tqdm progress bar (default on)")
    g.add_argument("--tensorboard", action=B, help="TensorBoard logs in OUT_DIR/tb when installed (default on)")
    g.add_argument("--dist-backend", dest="dist_backend", choices=("auto", "gloo", "nccl"),
                   help="process-group backend under torchrun (auto: nccl on CUDA, gloo on CPU)")
    g.add_argument("--print-config", dest="print_config", action="store_true",
                   help="print the resolved config as JSON and exit")
    # test hooks (hidden): make the loss of global step N NaN (on rank 0); log every rank's batches
    g.add_argument("--debug-nan-at-step", dest="debug_nan_at_step", type=int, help=argparse.SUPPRESS)
    g.add_argument("--debug-trace", dest="debug_trace", action="store_true", help=argparse.SUPPRESS)
    return p


def config_from_args(argv: Optional[List[str]] = None) -> TrainConfig:
    """Parse ``argv`` and resolve the config (preset, --config / --resume base, flags)."""
    ns = vars(build_parser().parse_args(None if argv is None else [str(a) for a in argv]))
    ns.pop("print_config", None)
    config_path = ns.pop("config", None)
    if "data_opts" in ns:
        ns["data_opts"] = dict(ns["data_opts"])
    base: Optional[Dict[str, Any]] = None
    if config_path:
        base = load_config_file(config_path)
    elif ns.get("resume"):
        from .checkpoint import load_checkpoint
        base = load_checkpoint(ns["resume"]).get("config")
    return resolve_config(ns, base)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad arguments, 3 non-finite loss)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    try:
        cfg = config_from_args(argv)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError) as e:
        parser.error(str(e))
    if "--print-config" in argv:
        print(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
        return 0
    from .loop import NonFiniteLossError, RunSetupError, run

    try:
        run(cfg)
    except NonFiniteLossError as e:
        if os.environ.get("RANK", "0") == "0":  # every rank stops; rank 0 reports
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 3
    except (RunSetupError, FileNotFoundError) as e:  # e.g. an existing run, a missing dataset
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
