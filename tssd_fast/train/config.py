"""Training configuration: one flat dataclass, the paper's recipes as presets, and the
precedence rule (:func:`resolve_config`): ``defaults < preset < flags``, and with a config file
or a resumed checkpoint ``defaults < its config < --preset if given < flags``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

# Dataset families, for the automatic preset and the T defaults.
STATIC_DATASETS = ("cifar10", "cifar100", "synthetic", "digits")
DVS_DATASETS = ("cifar10-dvs", "dvs-gesture", "synthetic-dvs")
METHOD_NAMES = ("baseline", "tsd", "ssd", "tssd", "tks", "tser", "kd", "ann")
ARCH_NAMES = ("vgg9", "resnet18", "resnet34")
#: digits' image size when --data-opt size is not given (its own 8x8 fits no network here)
DIGITS_DEFAULT_SIZE = 16


@dataclass
class TrainConfig:
    """Everything a run needs; ``None`` means "derived" (from the preset, the dataset or the method).

    Saved as ``config.json`` in the run folder and inside every checkpoint.
    """

    # data
    dataset: str = "synthetic"
    data_dir: Optional[str] = None
    data_opts: Dict[str, Any] = field(default_factory=dict)  # extra build_dataset options
    workers: int = 4
    # model
    arch: str = "vgg9"
    width: float = 1.0
    weak_stage: Optional[int] = None  # None: the builder's default
    stem: str = "auto"  # resnet stem: auto (imagenet if input >= 112 px), cifar, imagenet
    backend: str = "auto"  # LIF backend
    memory: str = "default"  # what backward keeps: default (spikes as bits), min (+ BN inputs recomputed), plain
    cudnn_benchmark: str = "auto"  # CUDA: on | off | auto (on, except with memory=min: see cudnn_benchmark())
    channels_last: bool = False  # conv weights and 4-D image batches in channels_last memory format
    # method
    method: str = "tssd"
    T: Optional[int] = None
    T_teacher: Optional[int] = None
    T_eval: Optional[List[int]] = None  # None: [T]; test_acc is measured at T_eval[0]
    alpha: Optional[float] = None  # None: the method's default
    beta: Optional[float] = None
    tau: Optional[float] = None  # KD temperature (tks, kd, tser)
    teacher_mode: str = "separate"  # tsd/tssd: separate | shared_prefix
    extension: bool = False
    teacher_ce: bool = False
    teacher: Optional[str] = None  # kd/tser: checkpoint of an ANN trained with --method ann
    # optimisation
    optimizer: str = "sgd"  # sgd | adamw | lamb
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: str = "step"  # step | cosine | constant
    lr_step: int = 30
    lr_gamma: float = 0.1
    schedule_epochs: Optional[int] = None  # cosine period (None: epochs)
    epochs: int = 100
    batch_size: int = 64  # per process
    test_batch_size: Optional[int] = None
    grad_clip: Optional[float] = None
    max_steps_per_epoch: Optional[int] = None
    # run
    out_dir: Optional[str] = None
    resume: Optional[str] = None
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    cuda_graphs: bool = False  # capture each training step in a CUDA graph and replay it
    amp_dtype: str = "auto"  # auto (bf16 on CPU, bf16/fp16 on CUDA) | bf16 | fp16
    eval_only: bool = False
    early_exit_threshold: Optional[float] = None  # eval-only: also report early exit
    progress: bool = True
    tensorboard: bool = True  # used when tensorboard is importable
    dist_backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | gloo | nccl
    overwrite: bool = False
    preset: Optional[str] = None
    debug_nan_at_step: Optional[int] = None  # test hook: the loss of this global step becomes NaN
    debug_trace: bool = False  # test hook: every rank logs its batches to OUT_DIR/trace_rank<r>.jsonl

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TrainConfig))

_PAPER_SGD = dict(optimizer="sgd", lr=0.1, momentum=0.9, scheduler="step", lr_step=30,
                  lr_gamma=0.1, epochs=100, batch_size=64)

#: The TSSD paper's recipes (appendix A.1.2). T / T_teacher are not legible in our copy of the
#: paper; the values below are our reading of its Tables 2-4 (see docs/TRAINING.md).
PRESETS: Dict[str, Dict[str, Any]] = {
    "paper-static": dict(_PAPER_SGD, weight_decay=1e-4, T=2, T_teacher=4),
    "paper-dvs": dict(_PAPER_SGD, weight_decay=1e-3, T=5, T_teacher=10),
    # ImageNet follows Spike-driven Transformer: Lamb, lr 5e-4, cosine over 300 epochs of which
    # the first 150 are run, batch 32. Weight decay is not given in the paper: 0.01 is our choice.
    "paper-imagenet": dict(optimizer="lamb", lr=5e-4, weight_decay=0.01, scheduler="cosine",
                           schedule_epochs=300, epochs=150, batch_size=32, T=2, T_teacher=4,
                           arch="resnet34"),
    # Small CPU runs (smoke tests, examples): the paper's optimiser, fewer epochs, tiny VGG-9.
    "cpu-tiny": dict(_PAPER_SGD, weight_decay=1e-4, epochs=3, lr_step=2, batch_size=32,
                     width=0.125, T=2, T_teacher=4, workers=0),
}


def scaled_schedule(preset: Dict[str, Any], epochs: int, flags: Dict[str, Any]) -> Dict[str, Any]:
    """The preset's learning-rate schedule stretched to ``epochs`` (the schedule keys ``flags``
    does not set). A preset's ``lr_step`` and ``schedule_epochs`` are fractions of its own
    ``epochs`` (paper-static: /10 at 30 % of the run, cosine over twice the run for ImageNet);
    kept as absolute numbers, a longer run would decay the learning rate to nothing (cpu-tiny's
    step of 2 epochs gives 1e-20 by epoch 40) and a shorter one would never decay it."""
    out: Dict[str, Any] = {}
    base = preset.get("epochs")
    if not base or not isinstance(epochs, int) or epochs < 1:
        return out
    for key in ("lr_step", "schedule_epochs"):
        if key in preset and key not in flags:
            out[key] = max(1, int(preset[key] * epochs / base + 0.5))
    return out


def cudnn_benchmark(cfg: "TrainConfig") -> bool:
    """Whether a CUDA run autotunes cuDNN's algorithms (``torch.backends.cudnn.benchmark``).

    ``auto`` is on, except with ``memory='min'``: PyTorch caches the chosen cuDNN plans per
    thread, and min's backward recomputes each conv on autograd's thread, which may pick
    another algorithm than the forward did; the gradients then differ from plain's by that
    algorithm's rounding. Without benchmarking, both threads take cuDNN's heuristic choice: on
    an H200 every recomputed conv output was then the forward's, bit for bit (docs/MEMORY.md).
    """
    return cfg.cudnn_benchmark == "on" or (cfg.cudnn_benchmark == "auto" and cfg.memory != "min")


def uses_teacher_run(cfg: "TrainConfig") -> bool:
    """True when the method also runs the network with ``T_teacher`` steps (tsd, tssd, or the
    ssd/baseline variants with ``extension`` / ``teacher_ce``)."""
    if cfg.method in ("tsd", "tssd"):
        return True
    return cfg.method in ("baseline", "ssd") and (cfg.extension or cfg.teacher_ce)


def auto_preset(dataset: str) -> str:
    """The paper preset for a dataset: paper-dvs for event data, paper-imagenet, else paper-static."""
    name = canonical_dataset(dataset)
    if name in DVS_DATASETS:
        return "paper-dvs"
    if name == "imagenet":
        return "paper-imagenet"
    return "paper-static"


def canonical_dataset(name: str) -> str:
    """The data layer's canonical dataset name; ValueError naming the choices for an unknown one."""
    try:
        from ..data import canonical_name
    except ImportError:  # data layer not importable: keep the name, the run will say why
        return name.strip().lower()
    return canonical_name(name)


def _check_keys(values: Dict[str, Any], where: str) -> None:
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(f"unknown config keys in {where}: {unknown}")


def load_config_file(path: str) -> Dict[str, Any]:
    """Config values from a JSON file (e.g. a run's config.json; its ``config`` key if present)."""
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of config values")
    _check_keys(data, path)
    return data


def resolve_config(flags: Dict[str, Any], base: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """Resolve the configuration of a run.

    Args:
        flags: the values given explicitly (on the command line); they win over everything.
        base: values of a config file or of the checkpoint being resumed (already resolved).

    Precedence without ``base``: dataclass defaults < preset (``flags['preset']``, else the
    dataset's paper preset, see :func:`auto_preset`) < ``flags``. With ``base``: defaults <
    ``base`` < the preset if ``flags`` names one < ``flags``. ``data_opts`` are merged key by key
    in the same order. Derived values (T_eval, out_dir, ...) are filled in afterwards by
    :func:`finalize`. On resume the run folder defaults to the checkpoint's folder.
    """
    _check_keys(flags, "flags")
    values: Dict[str, Any] = {}
    preset = flags.get("preset")
    if base:
        _check_keys(base, "config file")
        values.update({k: v for k, v in base.items() if k not in _NOT_INHERITED})
    elif preset is None:
        preset = auto_preset(flags.get("dataset", TrainConfig.dataset))
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        values.update(PRESETS[preset])
        values["preset"] = preset
    merged_opts = {**values.get("data_opts", {}), **flags.get("data_opts", {})}
    if preset is not None and "epochs" in flags:
        values.update(scaled_schedule(PRESETS[preset], flags["epochs"], flags))
    if base and "T" in flags and "T_eval" not in flags and values.get("T_eval") == [values.get("T")]:
        values["T_eval"] = None  # it was derived from the old T: derive it again
    values.update(flags)
    values["data_opts"] = merged_opts
    if flags.get("resume") and "out_dir" not in flags:
        values["out_dir"] = os.path.dirname(os.path.abspath(flags["resume"]))
    return finalize(TrainConfig(**values))


# run-control fields that a config file / resumed checkpoint does not pass on
_NOT_INHERITED = ("resume", "eval_only", "overwrite", "debug_nan_at_step", "debug_trace", "early_exit_threshold")


def finalize(cfg: TrainConfig) -> TrainConfig:
    """Fill the derived fields and check the combination; returns ``cfg`` (modified in place)."""
    cfg.dataset = canonical_dataset(cfg.dataset)
    if cfg.method not in METHOD_NAMES:
        raise ValueError(f"unknown method {cfg.method!r}; choose from {METHOD_NAMES}")
    if cfg.T is None:
        cfg.T = 2
    if cfg.T < 1:
        raise ValueError(f"T must be >= 1, got {cfg.T}")
    if uses_teacher_run(cfg):
        if cfg.T_teacher is None:
            cfg.T_teacher = 2 * cfg.T
        if cfg.T_teacher <= cfg.T:
            raise ValueError(f"method {cfg.method} needs --T-teacher > --T (got T={cfg.T}, "
                             f"T_teacher={cfg.T_teacher})")
    if cfg.T_eval is None:
        cfg.T_eval = [cfg.T]
    cfg.T_eval = [int(t) for t in cfg.T_eval]
    if any(t < 1 for t in cfg.T_eval):
        raise ValueError(f"T_eval values must be >= 1, got {cfg.T_eval}")
    if cfg.teacher_mode not in ("separate", "shared_prefix"):
        raise ValueError(f"teacher_mode must be separate or shared_prefix, got {cfg.teacher_mode!r}")
    if cfg.method in ("kd", "tser") and not cfg.teacher and not cfg.eval_only:
        raise ValueError(f"--method {cfg.method} distils from a trained ANN: train one with "
                         f"--method ann and pass its checkpoint as --teacher PATH")
    for name, choices in (("optimizer", ("sgd", "adamw", "lamb")),
                          ("scheduler", ("step", "cosine", "constant")),
                          ("amp_dtype", ("auto", "bf16", "fp16")),
                          ("dist_backend", ("auto", "gloo", "nccl")),
                          ("stem", ("auto", "cifar", "imagenet")),
                          ("memory", ("default", "min", "plain")),
                          ("cudnn_benchmark", ("auto", "on", "off"))):
        if getattr(cfg, name) not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {getattr(cfg, name)!r}")
    if cfg.cuda_graphs and cfg.optimizer != "sgd":
        raise ValueError(f"--cuda-graphs captures the SGD step (its warm-up steps are undone "
                         f"exactly for SGD): use --optimizer sgd, not {cfg.optimizer}")
    if cfg.cuda_graphs and cfg.debug_nan_at_step:
        raise ValueError("--cuda-graphs replays a fixed step: the NaN test hook cannot act in it")
    if cfg.epochs < 1 and not cfg.eval_only:
        raise ValueError(f"--epochs must be >= 1, got {cfg.epochs} (to evaluate a checkpoint: "
                         f"--resume PATH --eval-only)")
    for name in ("batch_size", "lr_step"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {cfg.workers}")
    from ..ops.registry import BACKENDS
    if cfg.backend != "auto" and cfg.backend not in BACKENDS:
        raise ValueError(f"unknown --backend {cfg.backend!r}; choose auto or one of {', '.join(BACKENDS)}")
    if cfg.dataset == "digits" and "size" not in cfg.data_opts and not cfg.resume:
        # the 8x8 digits are too small for VGG-9 (needs a multiple of 16) and the ResNets'
        # pooling; 16x16 is the size of the demo (examples/demo_digits.py). A resumed run keeps
        # the options it was trained with.
        cfg.data_opts = {**cfg.data_opts, "size": DIGITS_DEFAULT_SIZE}
    if cfg.out_dir is None:
        cfg.out_dir = os.path.join("runs", f"{cfg.dataset}_{cfg.arch}_{cfg.method}_T{cfg.T}_seed{cfg.seed}")
    return cfg
