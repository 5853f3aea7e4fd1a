#!/usr/bin/env python
"""Train step: what the fused neuron buys a whole TSSD training step, end to end.

    python benchmarks/train_step.py              # the default sweep for this device
    python benchmarks/train_step.py --quick      # VGG-9 only, small (seconds on CPU)
    python benchmarks/train_step.py --list       # which neurons run here, and why not

One point = one training step of a spiking network (VGG-9, ResNet-18) on a synthetic batch:
method.step (student T run, teacher T' run, weak classifier, losses; tssd_fast.distill) +
zero_grad + backward + SGD(momentum) step, in train mode, optionally under torch.autocast(bf16)
and with the model in channels_last. Data loading is not part of it (one fixed batch on the
device). Methods: 'baseline' (CE only, no teacher run, no weak head), 'tssd' (teacher_mode=
'separate': a T run and a T' run), 'tssd-shared' (teacher_mode='shared_prefix': one T' run).

Neurons (see --list): 'torch' = tssd_fast's pure-PyTorch reference LIFNode, every fused
tssd_fast backend of the device, SpikingJelly's LIFNode with its fastest implementations, and
'stand-in' (no neuron, see below). All of one group (arch, input, precision, layout, method)
start from the same weights and batch; the first step's loss is checked against the
reference's ('differs' when it is off by more than 1e-3 relative in fp32, 2e-2 in bf16).

Timing: the providers of a group are timed in interleaved rounds (one step of each per round,
order rotated), so load changes on a shared machine hit all alike; median and p20 / p80 of the
per-step times after warm-up (perf_counter on CPU; CUDA events on GPU).

Figures: img/s = batch / median step time (p20-p80 of the step time gives the spread);
speedup = the reference neuron's step / this step (same network, method, precision, layout);
'vs fp32' (GPU) = the reference neuron's fp32 NCHW step of the same method / this step;
neuron % = 1 - t(stand-in) / t(step), where the stand-in replaces every neuron by a one-kernel
Heaviside with a straight-through gradient (one elementwise pass forward, none backward,
nothing saved): the share of the step the neuron costs beyond that pass (a timing method, not
the profiler: it works the same for every implementation, SpikingJelly's too). The stand-in's
own row gives the ceiling: reference step / network-without-neuron step.
saved = bytes autograd saves for backward during the step's forward (unique storages; weights
and the batch excluded; the teacher run's graph included); peak (GPU) = extra CUDA memory at
the peak of a step above what was allocated before it (weights, gradients, optimizer state and
the batch excluded).

Memory modes (after the neuron sweep; --memory-modes, --no-memory-modes): the same step with
the fastest fused tssd_fast neuron in each build_model(memory=...) mode: 'plain' (torch's
layers keep everything), 'default' (spike inputs kept as bits, the batch once; bitwise plain's
results, checked: same first loss, same state_dict after the first optimizer step and same
gradients, bit for bit, that first step run with cuDNN's deterministic heuristics so plain is
reproducible at all on a GPU; a mode that differs says how: loss, how many tensors and gradients
differ, the largest difference, which tensors, and whether a second plain run reproduces the
first) and 'min' (also recompute every BN input in backward; benchmarks/memory_diff.py takes a
'min' difference apart on the GPU). Per mode: the step time (interleaved) and its
ratio to plain's, saved bytes split into float and uint8 tensors, the CUDA peak, and how many
times the batch (or T) fits in plain's activation memory. The neuron sweep itself runs in
--memory (default 'default'). docs/MEMORY.md explains the modes.

SpikingJelly 2.x has no fused kernel for the paper's Rect surrogate: with the default
'--neuron paper' its LIFNode runs its torch loop everywhere (sj-torch). '--neuron sj'
(Sigmoid, hard reset) is the comparison with its fused CUDA / Triton kernels (sj-cuda,
sj-triton); with bf16 it keeps V in bf16, so its first-step loss 'differs' there.

Results: a table on stdout, rows appended to benchmarks/results/local/train_step.csv after each
group (untracked, so a run leaves the checkout clean; --csv PATH appends elsewhere, e.g. to the
committed benchmarks/results/train_step.csv; --no-csv), --json PATH, --plot PATH (PNG; needs
matplotlib). The GPU default is
48 groups (2 networks x 2 inputs x 2 precisions x 2 layouts x 3 methods) of about 6 neurons,
dominated by VGG-9 on 128x128 frames (~55 GiB saved for backward by the reference neuron at
batch 64): expect several minutes; split it (--input cifar, then --input dvs) or cap it
(--time-budget S) where a command's time is limited. Rows of finished groups are in the CSV.
"""
import argparse
import contextlib
import dataclasses
import math
import os
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _providers as P
    import _train_step_neurons as N
    import harness
else:
    from . import _providers as P
    from . import _train_step_neurons as N
    from . import harness

import torch

from tssd_fast.distill import make_method
from tssd_fast.models import build_model
from tssd_fast.train.cuda_graph import GraphedStep

ARCHS = ("vgg9", "resnet18")
METHODS = OrderedDict([("baseline", dict(name="baseline")),
                       ("tssd", dict(name="tssd", teacher_mode="separate")),
                       ("tssd-shared", dict(name="tssd", teacher_mode="shared_prefix"))])
PRECISIONS = OrderedDict([("fp32", None), ("bf16", torch.bfloat16)])
LAYOUTS = ("nchw", "cl")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """A synthetic input: static images (direct encoding) or DVS frames [B, T_max, C, H, W]."""

    name: str
    kind: str
    channels: int
    size: int
    classes: int
    T: int
    T_teacher: int

    def describe(self, batch: int) -> str:
        what = "images" if self.kind == "static" else "event frames"
        return (f"{self.name}: {batch}x{self.channels}x{self.size}x{self.size} {what}, "
                f"{self.classes} classes, T={self.T} T'={self.T_teacher}")


INPUTS = OrderedDict([
    ("cifar", InputSpec("cifar", "static", 3, 32, 10, 2, 4)),
    ("dvs", InputSpec("dvs", "dvs", 2, 128, 10, 5, 6)),
])

LOSS_TOL = {"fp32": 1e-3, "bf16": 2e-2}
SGD = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)

CSV_FIELDS = ["timestamp", "device", "device_name", "commit", "torch", "triton", "spikingjelly",
              "tssd_fast", "torch_threads", "loadavg_1min", "neuron", "memory", "arch", "width", "input",
              "batch", "T", "T_teacher", "method", "precision", "layout", "provider", "kind",
              "median_ms", "p20_ms", "p80_ms", "reps", "img_per_s", "img_per_s_p20",
              "img_per_s_p80", "speedup", "speedup_vs_fp32", "neuron_share", "standin_ms",
              "saved_bytes", "peak_bytes", "loss0", "loss0_ref", "first_call_s", "status"]
DEFAULT_CSV = harness.LOCAL_RESULTS_DIR / "train_step.csv"  # untracked; see harness


# ------------------------------------------------------------------------------------ points
@dataclasses.dataclass(frozen=True)
class Group:
    """Everything but the neuron: the providers of a group are compared with each other."""

    arch: str
    inp: InputSpec
    precision: str
    layout: str
    method: str
    batch: int
    width: float
    launch: str = "eager"  # or "graph": the whole step captured once and replayed (CUDA)

    def key(self):
        return (self.arch, self.inp.name, self.precision, self.layout, self.method, self.launch)

    @property
    def layout_label(self) -> str:
        return self.layout + ("+graph" if self.launch == "graph" else "")


def make_batch(g: Group, device, seed: int):
    """A fixed synthetic batch: N(0, 1) images, or DVS frames with ~15 % of pixels active."""
    gen = torch.Generator().manual_seed(seed)
    s = g.inp
    if s.kind == "static":
        x = torch.randn(g.batch, s.channels, s.size, s.size, generator=gen)
    else:
        t_max = max(s.T, s.T_teacher)
        x = (torch.rand(g.batch, t_max, s.channels, s.size, s.size, generator=gen) < 0.15).float()
    y = torch.randint(0, s.classes, (g.batch,), generator=gen)
    x, y = x.to(device), y.to(device)
    if g.layout == "cl" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def model_kwargs(g: Group) -> dict:
    """build_model arguments (as tssd_fast.train: VGG-9 takes the input size; ResNet the
    ImageNet stem from 112 px up)."""
    kw = dict(num_classes=g.inp.classes, in_channels=g.inp.channels, width=g.width)
    if g.arch == "vgg9":
        kw["input_size"] = g.inp.size
    else:
        kw["stem"] = "imagenet" if g.inp.size >= 112 else "cifar"
    if g.method == "baseline":
        kw["weak_stage"] = None
    return kw


def make_method_for(g: Group):
    spec = dict(METHODS[g.method])
    name = spec.pop("name")
    if name == "baseline":
        return make_method(name, T=g.inp.T)
    return make_method(name, T=g.inp.T, T_teacher=g.inp.T_teacher, **spec)


class Point:
    """One provider's network, optimizer and step function in one group."""

    def __init__(self, g: Group, p: N.NeuronProvider, x, y, device, seed: int,
                 memory: str = "default"):
        self.g, self.p, self.x, self.y, self.device = g, p, x, y, torch.device(device)
        if p.activate:
            p.activate()
        torch.manual_seed(seed)  # same weights for every provider of the group
        # every neuron here emits 0/1 (the stand-in too): the same layers for all of them
        model = build_model(g.arch, neuron=p.factory, memory=memory, binary_spikes=True,
                            **model_kwargs(g)).to(self.device)
        if g.layout == "cl":
            model = model.to(memory_format=torch.channels_last)
        self.model = model.train()
        self.opt = torch.optim.SGD(model.parameters(), **SGD)
        self.method = make_method_for(g)
        self.amp = PRECISIONS[g.precision]
        # --cuda-graphs: forward, backward and optimizer captured once, then replayed; the
        # warm-up steps before the capture are undone (restore), so step 1 is step 1
        self.graphed = (GraphedStep(self.forward, self.opt, restore=self.model)
                        if g.launch == "graph" else None)

    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp)

    def forward(self):
        with self.autocast():
            loss, _, _ = self.method.step(self.model, self.x, self.y, 0, 1)
        return loss

    def step(self):
        """One training step, as tssd_fast.train does it (bf16 needs no GradScaler)."""
        if self.p.activate:
            self.p.activate()
        if self.graphed is not None:
            return self.graphed()
        loss = self.forward()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss

    def saved_bytes(self) -> Optional[int]:
        by = self.saved_by_dtype()
        return None if by is None else sum(by.values())

    def saved_by_dtype(self) -> Optional[Dict[str, int]]:
        if self.p.activate:
            self.p.activate()
        exclude = [self.x, *self.model.parameters()]
        try:
            return harness.saved_tensor_bytes_by_dtype(self.forward, exclude=exclude)
        except Exception:  # noqa: BLE001 - n/a rather than a failed point
            return None

    def peak_bytes(self) -> Optional[int]:
        try:
            return harness.peak_memory_bytes(self.step, self.device)
        except Exception:  # noqa: BLE001
            return None


# ------------------------------------------------------------------------------------- sweep
def _row(g: Group, p: N.NeuronProvider, status: str, **kw) -> dict:
    r = {"memory": None, "arch": g.arch, "width": g.width, "input": g.inp.name, "batch": g.batch, "T": g.inp.T,
         "T_teacher": None if g.method == "baseline" else g.inp.T_teacher, "method": g.method,
         "precision": g.precision, "layout": g.layout_label, "provider": p.name, "kind": p.kind,
         "median_ms": None, "p20_ms": None, "p80_ms": None, "reps": None, "img_per_s": None,
         "img_per_s_p20": None, "img_per_s_p80": None, "speedup": None,
         "speedup_vs_fp32": None, "neuron_share": None, "standin_ms": None,
         "saved_bytes": None, "peak_bytes": None, "loss0": None, "loss0_ref": None,
         "first_call_s": None, "status": status}
    r.update(kw)
    return r


def run_group(g: Group, providers: Sequence[N.NeuronProvider], device, timer, seed: int,
              progress: Optional[harness.Progress] = None, memory: str = "default") -> List[dict]:
    """Build every provider's point, check its first step, time all of them interleaved,
    then measure memory. Returns one row per runnable provider."""
    runnable = [p for p in providers if p.skip is None]
    tag = f"{g.arch} {g.inp.name} {g.precision} {g.layout_label} {g.method}"
    rows: Dict[str, dict] = {}
    points: Dict[str, Point] = {}
    try:
        x, y = make_batch(g, device, seed)
    except Exception as e:  # noqa: BLE001
        return [_row(g, p, f"error: batch: {harness.short_error(e)}") for p in runnable]
    # 1. build and first step (the check)
    loss_ref = None
    for p in runnable:
        if progress is not None:
            progress.step(f"{tag} {p.name}")
        pt, err = None, None
        try:
            pt = Point(g, p, x, y, device, seed, memory)
            t0 = time.perf_counter()
            loss0 = pt.step().item()
            harness.synchronize(device)
            first = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - reported, the others go on
            err = harness.short_error(e)
        if err is not None:  # (outside the except: its traceback no longer holds tensors)
            rows[p.name] = _row(g, p, f"error: {err}")
            pt = None
            harness.free_memory(device)
            continue
        if p.name == N.REFERENCE:
            loss_ref = loss0
        points[p.name] = pt
        rows[p.name] = _row(g, p, "ok", loss0=loss0, first_call_s=first)
    tol = LOSS_TOL.get(g.precision, 2e-2)
    for name, r in rows.items():
        r["loss0_ref"] = loss_ref
        if r["status"] != "ok" or r["kind"] == "standin" or loss_ref is None:
            continue
        rel = abs(r["loss0"] - loss_ref) / max(abs(loss_ref), 1e-12)
        if not math.isfinite(r["loss0"]) or rel > tol:
            why = " (SpikingJelly keeps V in bf16)" if r["kind"] == "sj" and \
                g.precision == "bf16" else ""
            r["status"] = (f"differs: loss0 {r['loss0']:.5g} vs {loss_ref:.5g} "
                           f"({100 * rel:.2g}% > {100 * tol:g}%){why}")
    # 2. interleaved timing
    timings = harness.measure_interleaved({n: pt.step for n, pt in points.items()}, device, timer)
    for name, t in timings.items():
        r = rows[name]
        if isinstance(t, BaseException):
            r["status"] = f"error while timing: {harness.short_error(t)}"
            points.pop(name)
            continue
        r.update(median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms, reps=t.reps,
                 img_per_s=g.batch / t.median_ms * 1e3, img_per_s_p20=g.batch / t.p80_ms * 1e3,
                 img_per_s_p80=g.batch / t.p20_ms * 1e3)
    harness.free_memory(device)
    # 3. memory, one provider at a time
    for name, pt in points.items():
        rows[name]["saved_bytes"] = pt.saved_bytes()
        rows[name]["peak_bytes"] = pt.peak_bytes()
    points.clear()
    harness.free_memory(device)
    # 4. ratios within the group
    ref = rows.get(N.REFERENCE)
    ref_ms = ref["median_ms"] if ref else None
    sti = rows.get(N.STANDIN)
    st_ms = sti["median_ms"] if sti else None
    for r in rows.values():
        if r["median_ms"] is None:
            continue
        if ref_ms:
            r["speedup"] = ref_ms / r["median_ms"]
        if st_ms and r["kind"] != "standin":
            r["standin_ms"] = st_ms
            r["neuron_share"] = 1.0 - st_ms / r["median_ms"]
    return [rows[p.name] for p in runnable if p.name in rows]


def add_vs_fp32(rows: List[dict]) -> None:
    """speedup_vs_fp32: the reference neuron's fp32 NCHW step of the same network and method /
    this step."""
    base = {(r["arch"], r["input"], r["method"]): r["median_ms"] for r in rows
            if r["provider"] == N.REFERENCE and r["precision"] == "fp32"
            and r["layout"] == "nchw" and r["median_ms"]}
    for r in rows:
        b = base.get((r["arch"], r["input"], r["method"]))
        if b and r["median_ms"]:
            r["speedup_vs_fp32"] = b / r["median_ms"]


# ----------------------------------------------------------------------------- memory modes
MEMORY_MODES = ("plain", "default", "min")
MEMORY_CSV_FIELDS = ["timestamp", "device", "device_name", "commit", "torch", "torch_threads",
                     "loadavg_1min", "neuron", "arch", "width", "input", "batch", "T",
                     "T_teacher", "method", "precision", "layout", "provider", "memory",
                     "median_ms", "p20_ms", "p80_ms", "reps", "time_vs_plain", "saved_bytes",
                     "saved_float_bytes", "saved_int_bytes", "saved_vs_plain", "peak_bytes",
                     "peak_vs_plain", "loss0", "same_as_plain", "status"]


def _tensor_diff(name: str, a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[dict]:
    """None when ``a`` and ``b`` are equal (torch.equal; both None counts as equal), else how
    they differ: elements that differ, max |a - b| and max |a - b| / max(|a|, |b|) over them
    (about 6e-8 to 1.2e-7 is one fp32 rounding; NaN counts as a difference)."""
    if a is None or b is None:
        return None if a is None and b is None else {"name": name, "note": "missing on one side"}
    if a.shape != b.shape:
        return {"name": name, "note": f"shape {tuple(a.shape)} vs {tuple(b.shape)}"}
    if torch.equal(a, b):
        return None
    x, y = a.detach().cpu().double(), b.detach().cpu().double()
    mask = x != y  # (NaN != NaN)
    d = (x - y).abs()[mask]
    rel = d / torch.maximum(x.abs(), y.abs())[mask]
    return {"name": name, "numel": a.numel(), "n_diff": int(mask.sum()),
            "max_abs": float(d.max()), "max_rel": float(rel.max())}


def compare_steps(model: torch.nn.Module, ref: torch.nn.Module, loss: float, loss_ref: float) -> dict:
    """How ``model``'s first step differs from ``ref``'s, bit for bit: the loss, every state_dict
    tensor (weights and BN buffers after the optimizer step) and every parameter's gradient.
    ``same`` is True only when all of them are equal."""
    def diffs(pairs):
        pairs = list(pairs)
        found = [d for d in (_tensor_diff(n, a, b) for n, a, b in pairs) if d is not None]
        return {"n": len(pairs), "differ": found}

    sa, sb = model.state_dict(), ref.state_dict()
    state = diffs((k, sa[k], sb.get(k)) for k in sa)
    state["n"] = len(set(sa) | set(sb))
    state["differ"] += [{"name": k, "note": "missing on one side"} for k in sb if k not in sa]
    pb = dict(ref.named_parameters())
    grads = diffs((k, p.grad, pb[k].grad if k in pb else None) for k, p in model.named_parameters())
    loss_equal = loss == loss_ref
    return {"same": loss_equal and not state["differ"] and not grads["differ"], "loss": loss,
            "loss_ref": loss_ref, "loss_equal": loss_equal, "state": state, "grads": grads}


def _diff_part(label: str, part: dict, names: int) -> str:
    found = part["differ"]
    text = f"{label} {len(found)}/{part['n']} differ"
    if found and names:
        shown = [d["name"] + (f" [{d['note']}]" if "note" in d else "") for d in found[:names]]
        text += " (" + ", ".join(shown) + (f", +{len(found) - names}" if len(found) > names else "") + ")"
    num = [d for d in found if "max_abs" in d]
    if num:
        worst = max(num, key=lambda d: d["max_rel"])
        text += (f", max |d| {max(d['max_abs'] for d in num):.2g}, max rel {worst['max_rel']:.2g}"
                 f" at {worst['name']}")
    return text


def describe_diff(diff: dict, names: int = 3, against: str = "plain") -> str:
    """One line from compare_steps: the loss, how many state_dict tensors and gradients differ,
    the largest absolute and relative difference (and where), the first ``names`` that differ
    (state_dict order) and, when run_memory_group added it, whether a second plain run
    reproduces the first bit for bit."""
    if diff["loss_equal"]:
        loss = "loss equal"
    else:
        loss = (f"loss {diff['loss']:.9g} vs {diff['loss_ref']:.9g} "
                f"(|d| {abs(diff['loss'] - diff['loss_ref']):.2g})")
    text = (f"differs from {against}: {loss}; " + _diff_part("tensors", diff["state"], names)
            + "; " + _diff_part("grads", diff["grads"], names))
    rerun = diff.get("plain_rerun")
    if rerun is not None:
        text += "; plain rerun: " + (rerun if isinstance(rerun, str) else
                                     "identical" if rerun["same"] else
                                     describe_diff(rerun, names=1, against="plain").replace(
                                         "differs from plain: ", "differs too: "))
    return text


def reproducible_cudnn():
    """cuDNN's deterministic algorithms, chosen by heuristics, for the step that compares memory
    modes bit for bit: with cudnn.benchmark on, the chosen algorithms (and their rounding) depend
    on timing, and some use atomics, so plain itself is not reproducible bit for bit on a GPU
    (an H200 showed it). The timed steps run with the caller's settings."""
    return harness.cudnn_settings(benchmark=False, deterministic=True)


def _plain_rerun(g: Group, p: N.NeuronProvider, x, y, device, seed: int, ref: "Point",
                 loss_ref: float):
    """A second plain point, one step, compared with the first: the control that tells a
    difference of the modes from run-to-run nondeterminism (e.g. atomics in cuDNN kernels)."""
    try:
        pt = Point(g, p, x, y, device, seed, memory="plain")
        with reproducible_cudnn():
            loss = pt.step().item()
    except Exception as e:  # noqa: BLE001
        return f"error: {harness.short_error(e)}"
    return compare_steps(pt.model, ref.model, loss, loss_ref)


def run_memory_group(g: Group, p: N.NeuronProvider, modes: Sequence[str], device, timer,
                     seed: int, progress: Optional[harness.Progress] = None) -> List[dict]:
    """One network, method and neuron in every memory mode (build_model(memory=...)): the
    first step checked against 'plain' (same loss, the same state_dict after the optimizer
    step and the same gradients, bit for bit; a mode that differs gets compare_steps' detail in
    its row's 'plain_diff', its status says what differs, and a second plain run, once per
    group, tells whether plain reproduces itself), the steps timed interleaved, then saved bytes
    (by dtype) and the CUDA peak per mode."""
    tag = f"{g.arch} {g.inp.name} {g.precision} {g.layout} {g.method}"
    x, y = make_batch(g, device, seed)
    base = {"arch": g.arch, "width": g.width, "input": g.inp.name, "batch": g.batch,
            "T": g.inp.T, "T_teacher": None if g.method == "baseline" else g.inp.T_teacher,
            "method": g.method, "precision": g.precision, "layout": g.layout,
            "provider": p.name}
    rows: Dict[str, dict] = {}
    points: Dict[str, Point] = {}
    for mode in modes:
        if progress is not None:
            progress.step(f"{tag} memory={mode}")
        rows[mode] = dict(base, memory=mode, status="ok")
        try:
            pt = Point(g, p, x, y, device, seed, memory=mode)
            with reproducible_cudnn():
                rows[mode]["loss0"] = pt.step().item()
        except Exception as e:  # noqa: BLE001 - reported, the other modes go on
            rows[mode]["status"] = f"error: {harness.short_error(e)}"
            continue
        points[mode] = pt
    ref, rerun = points.get("plain"), None
    for mode, pt in points.items():
        if ref is not None and mode != "plain":
            diff = compare_steps(pt.model, ref.model, rows[mode]["loss0"], rows["plain"]["loss0"])
            rows[mode]["same_as_plain"] = diff["same"]
            if not diff["same"]:
                if rerun is None:
                    rerun = _plain_rerun(g, p, x, y, device, seed, ref, rows["plain"]["loss0"])
                    harness.free_memory(device)
                diff["plain_rerun"] = rerun
                rows[mode]["plain_diff"] = diff
                rows[mode]["status"] = describe_diff(diff)
    timings = harness.measure_interleaved({m: pt.step for m, pt in points.items()}, device, timer)
    for mode, t in timings.items():
        if isinstance(t, BaseException):
            rows[mode]["status"] = f"error while timing: {harness.short_error(t)}"
            continue
        rows[mode].update(median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms, reps=t.reps)
    harness.free_memory(device)
    for mode, pt in points.items():
        by = pt.saved_by_dtype()
        if by is not None:
            floats = sum(n for d, n in by.items() if d.startswith(("float", "bfloat")))
            rows[mode].update(saved_bytes=sum(by.values()), saved_float_bytes=floats,
                              saved_int_bytes=sum(by.values()) - floats)
        rows[mode]["peak_bytes"] = pt.peak_bytes()
    points.clear()
    harness.free_memory(device)
    plain = rows.get("plain", {})
    for r in rows.values():
        for key, ref_key in (("time_vs_plain", "median_ms"), ("saved_vs_plain", "saved_bytes"),
                             ("peak_vs_plain", "peak_bytes")):
            if r.get(ref_key) and plain.get(ref_key):
                r[key] = r[ref_key] / plain[ref_key]
    return [{k: None for k in MEMORY_CSV_FIELDS} | r for r in rows.values()]


def memory_provider(providers: Sequence[N.NeuronProvider]) -> Optional[N.NeuronProvider]:
    """The neuron of the memory-mode comparison: the first fused tssd_fast backend that runs
    here ('cpp' on CPU), else the reference."""
    ok = [p for p in providers if p.skip is None]
    return next((p for p in ok if p.kind == "tssd"),
                next((p for p in ok if p.kind == "reference"), None))


def render_memory(rows: List[dict], cuda: bool) -> str:
    """The memory-mode table, and how much more batch (or T) each mode fits in plain's memory."""
    headers = ["arch", "input", "prec", "layout", "method", "memory", "ms", "p20-p80 ms",
               "time vs plain", "saved", "float", "bits", "saved vs plain",
               *(["peak", "peak vs plain"] if cuda else []), "status"]
    table, fits, long, last = [], [], [], None
    for r in rows:
        key = (r["arch"], r["input"], r["precision"], r["layout"], r["method"])
        if last is not None and key != last:
            table.append([""] * len(headers))
        last = key
        timed = r.get("median_ms") is not None
        table.append([
            r["arch"], r["input"], r["precision"], r["layout"], r["method"], r["memory"],
            harness.fmt_ms(r["median_ms"]) if timed else "-",
            f"{harness.fmt_ms(r['p20_ms'])}-{harness.fmt_ms(r['p80_ms'])}" if timed else "-",
            _x(r.get("time_vs_plain")), harness.fmt_bytes(r.get("saved_bytes")),
            harness.fmt_bytes(r.get("saved_float_bytes")),
            harness.fmt_bytes(r.get("saved_int_bytes")), _pct(r.get("saved_vs_plain")),
            *([harness.fmt_bytes(r.get("peak_bytes")), _pct(r.get("peak_vs_plain"))]
              if cuda else []),
            r["status"] if len(r["status"]) <= STATUS_WIDTH else r["status"][:STATUS_WIDTH - 3] + "..."])
        if len(r["status"]) > STATUS_WIDTH:
            long.append(f"  {' '.join(key)} memory={r['memory']}: {r['status']}")
        if r["memory"] != "plain" and r.get("saved_vs_plain"):
            fits.append(f"  {' '.join(key)} memory={r['memory']}: {1 / r['saved_vs_plain']:.2f}x the "
                        f"batch (or T) in plain's activation memory"
                        + (f"; peak {1 / r['peak_vs_plain']:.2f}x smaller" if r.get("peak_vs_plain")
                           else "")
                        + (f"; step time {_x(r.get('time_vs_plain'))} plain's"
                           if r.get("time_vs_plain") else ""))
    right = set(range(headers.index("ms"), len(headers) - 1))
    return (harness.format_table(headers, table, right)
            + ("\n\nstatus in full (the JSON rows' 'plain_diff' lists every tensor that differs; "
               "rel = |d| / max(|a|, |b|), one fp32 rounding is about 1e-7):\n" + "\n".join(long)
               if long else "")
            + ("\n\n" + "\n".join(fits) if fits else ""))


STATUS_WIDTH = 64
"""The memory table's status column: longer statuses are cut there and printed in full below."""


# ------------------------------------------------------------------------------------ report
def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _x(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _name(r: dict) -> str:
    """Provider name, marked when its first-step loss differed from the reference."""
    return r["provider"] + (" (differs)" if r["status"].startswith("differs") else "")


def render_table(rows: List[dict], cuda: bool, show_prec: bool, show_layout: bool) -> str:
    headers = ["arch", "input", *(["prec"] if show_prec else []),
               *(["layout"] if show_layout else []), "method", "neuron", "ms", "p20-p80 ms",
               "img/s", "speedup", *(["vs fp32"] if cuda else []), "neuron %", "saved",
               *(["peak"] if cuda else []), "1st s", "status"]
    table, last = [], None
    for r in rows:
        key = (r["arch"], r["input"], r["precision"], r["layout"], r["method"])
        if last is not None and key != last:
            table.append([""] * len(headers))
        last = key
        timed = r["median_ms"] is not None
        standin = r["kind"] == "standin"
        status = r["status"] if len(r["status"]) <= 60 else r["status"][:57] + "..."
        table.append([
            r["arch"], r["input"], *([r["precision"]] if show_prec else []),
            *([r["layout"]] if show_layout else []), r["method"],
            r["provider"] + ("*" if standin else ""),
            harness.fmt_ms(r["median_ms"]) if timed else "-",
            f"{harness.fmt_ms(r['p20_ms'])}-{harness.fmt_ms(r['p80_ms'])}" if timed else "-",
            f"{r['img_per_s']:.3g}" if timed else "-",
            _x(r["speedup"]), *([_x(r["speedup_vs_fp32"])] if cuda else []),
            "-" if standin else _pct(r["neuron_share"]),
            harness.fmt_bytes(r["saved_bytes"]),
            *([harness.fmt_bytes(r["peak_bytes"])] if cuda else []),
            f"{r['first_call_s']:.2f}" if r["first_call_s"] is not None else "-",
            status,
        ])
    first_num = headers.index("ms")
    right = set(range(first_num, len(headers) - 1))
    return harness.format_table(headers, table, right)


def _groups(rows: List[dict]):
    out = OrderedDict()
    for r in rows:
        out.setdefault((r["arch"], r["input"], r["precision"], r["layout"], r["method"]),
                       []).append(r)
    return out


def _best(rows: List[dict], kind: str) -> Optional[dict]:
    """The fastest timed row of `kind` ('differs' rows included: they ran, and are marked)."""
    ok = [r for r in rows if r["kind"] == kind and r["median_ms"]]
    return min(ok, key=lambda r: r["median_ms"]) if ok else None


def render_summary(rows: List[dict], show_pl: bool) -> str:
    """Per group: the best fused backend's speedup and neuron share against the reference's,
    SpikingJelly's best, the ceiling (network without neuron)."""
    lines = []
    for (arch, inp, prec, lay, method), rs in _groups(rows).items():
        ref = next((r for r in rs if r["kind"] == "reference" and r["median_ms"]), None)
        fused, sj = _best(rs, "tssd"), _best(rs, "sj")
        st = next((r for r in rs if r["kind"] == "standin" and r["median_ms"]), None)
        parts = []
        if fused and ref:
            parts.append(f"{_name(fused)} {_x(fused['speedup'])}")
            if fused["neuron_share"] is not None and ref["neuron_share"] is not None:
                parts.append(f"neuron {_pct(ref['neuron_share'])} -> "
                             f"{_pct(fused['neuron_share'])} of the step")
        if sj and ref:
            parts.append(f"{_name(sj)} {_x(sj['speedup'])}")
        if fused and sj:
            parts.append(f"{fused['provider']} / {sj['provider']} "
                         f"{sj['median_ms'] / fused['median_ms']:.2f}x")
        if st and ref:
            parts.append(f"ceiling {_x(st['speedup'])}")
        if parts:
            where = f"{arch} {inp}" + (f" {prec} {lay}" if show_pl else "") + f" {method}"
            lines.append(f"  {where:<34} " + "; ".join(parts))
    return "\n".join(lines)


STEP_TARGET = 1.6  # issue #11 (and #10): the TSSD VGG-9 step, eager, over the reference neuron's


def render_target(rows: List[dict], cuda: bool) -> str:
    """The GPU goal of issue #11: TSSD VGG-9 step with the best fused backend >= STEP_TARGET x
    the reference-neuron step and faster than SpikingJelly's best."""
    lines = []
    for (arch, inp, prec, lay, method), rs in _groups(rows).items():
        if arch != "vgg9" or method != "tssd":
            continue
        ref = next((r for r in rs if r["kind"] == "reference" and r["median_ms"]), None)
        fused, sj = _best(rs, "tssd"), _best(rs, "sj")
        if not (ref and fused):
            continue
        sp = fused["speedup"]
        txt = (f"  vgg9 {inp} {prec} {lay}: {_name(fused)} {sp:.2f}x the reference "
               f"[>= {STEP_TARGET}x: {'met' if sp >= STEP_TARGET else 'NOT met'}]")
        if sj:
            ratio = sj["median_ms"] / fused["median_ms"]
            txt += (f"; {ratio:.2f}x {_name(sj)} "
                    f"[faster than SpikingJelly: {'met' if ratio > 1 else 'NOT met'}]")
        else:
            txt += "; SpikingJelly not measured"
        lines.append(txt)
    if not lines:
        return ""
    head = (f"target (TSSD VGG-9 step, best fused backend >= {STEP_TARGET}x the reference-neuron "
            "step and faster than SpikingJelly's best):")
    if not cuda:
        head += "\n  (a GPU goal; the CPU figures are for information)"
    return head + "\n" + "\n".join(lines)


def write_plot(path, rows: List[dict]) -> Optional[str]:
    """img/s per method (bars: one per neuron), one panel per (arch, input, precision, layout)."""
    plt, err = harness.import_pyplot()
    if err:
        return err
    ok = [r for r in rows if r["median_ms"]]
    if not ok:
        return "--plot: no measured points to plot"
    panels = list(OrderedDict.fromkeys((r["arch"], r["input"], r["precision"], r["layout"])
                                       for r in ok))
    provs = list(OrderedDict.fromkeys(r["provider"] for r in ok))
    cols = min(2, len(panels))
    nrow = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrow, cols, figsize=(6.5 * cols, 3.6 * nrow), squeeze=False)
    width = 0.8 / max(1, len(provs))
    for i, pan in enumerate(panels):
        ax = axes[i // cols][i % cols]
        mine = [r for r in ok if (r["arch"], r["input"], r["precision"], r["layout"]) == pan]
        methods = list(OrderedDict.fromkeys(r["method"] for r in mine))
        for j, prov in enumerate(provs):
            vals = []
            for m in methods:
                r = next((r for r in mine if r["method"] == m and r["provider"] == prov), None)
                vals.append(r["img_per_s"] if r else 0.0)
            xs = [k + (j - (len(provs) - 1) / 2) * width for k in range(len(methods))]
            ax.bar(xs, vals, width, label=prov + ("*" if prov == N.STANDIN else ""))
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods)
        ax.set_ylabel("images / s")
        ax.set_title(" ".join(pan))
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    for k in range(len(panels), nrow * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle("training step throughput (* = network without neuron)")
    harness.save_figure(fig, path)
    return None


# --------------------------------------------------------------------------------------- CLI
def parse_args(argv=None) -> argparse.Namespace:
    ap = harness.argument_parser(
        prog="train_step.py",
        description="One full TSSD training step (student + teacher + weak head + losses + "
                    "backward +\noptimizer) of spiking VGG-9 / ResNet-18, per neuron: the "
                    "pure-PyTorch reference,\nevery fused tssd_fast backend, SpikingJelly's "
                    "LIFNode, and a no-neuron stand-in.",
        epilog="defaults -- CPU: vgg9,resnet18 at width 0.25, batch 8, cifar (3x32x32, T=2 "
               "T'=4), fp32, NCHW;\n                 torch threads: torch's choice, or 1 when "
               "the CPU is busy at start.\n            GPU: vgg9,resnet18 at width 1, batch 64, "
               "cifar (T=2 T'=4) and dvs (2x128x128,\n                 T=5 T'=6), fp32,bf16 "
               "(autocast), NCHW and channels_last.\n  --quick -- vgg9 only; CPU: width 0.125, "
               "batch 4; GPU: cifar, NCHW.\nmethods: baseline, tssd (teacher_mode='separate'), "
               "tssd-shared (teacher_mode='shared_prefix').")
    ap.add_argument("--quick", action="store_true", help="VGG-9 only, small (seconds on CPU)")
    ap.add_argument("--arch", type=harness.list_arg(choices=ARCHS), metavar="LIST",
                    help="vgg9, resnet18")
    ap.add_argument("--input", type=harness.list_arg(choices=tuple(INPUTS)), metavar="LIST",
                    dest="inputs", help="cifar (3x32x32 images), dvs (2x128x128 event frames)")
    ap.add_argument("--dvs", action="store_true", help="add the dvs input (same as --input "
                    "cifar,dvs)")
    ap.add_argument("--methods", type=harness.list_arg(choices=tuple(METHODS)), metavar="LIST",
                    help="baseline, tssd, tssd-shared (default all)")
    ap.add_argument("--precision", type=harness.list_arg(choices=tuple(PRECISIONS)),
                    metavar="LIST", help="fp32 and/or bf16 (torch.autocast)")
    ap.add_argument("--layout", type=harness.list_arg(choices=LAYOUTS), metavar="LIST",
                    help="nchw and/or cl (channels_last model and images)")
    ap.add_argument("--providers", type=harness.list_arg(), metavar="LIST",
                    help="which neurons (see --list); the reference 'torch' and the stand-in "
                         "always run. Groups: tssd, sj")
    ap.add_argument("--no-standin", action="store_true",
                    help="skip the stand-in run (no neuron %% column)")
    ap.add_argument("--list", action="store_true", help="list the neurons and exit")
    ap.add_argument("--memory", choices=MEMORY_MODES, default="default",
                    help="what backward keeps in the neuron sweep (build_model(memory=...); "
                         "default: 'default')")
    ap.add_argument("--memory-modes", type=harness.list_arg(choices=MEMORY_MODES),
                    metavar="LIST", default=list(MEMORY_MODES),
                    help="the memory-mode comparison after the sweep (fastest fused neuron, "
                         "method tssd if swept): saved bytes, CUDA peak and step time per mode "
                         "(default plain,default,min)")
    ap.add_argument("--no-memory-modes", action="store_true", help="skip that comparison")
    ap.add_argument("--cudnn-benchmark", choices=("on", "off"), default="on",
                    help="CUDA: cudnn.benchmark for the timed steps (default on; tssd_fast.train "
                         "turns it off for --memory min: time that with --memory min "
                         "--memory-modes min,plain --cudnn-benchmark off)")
    s = ap.add_argument_group("size")
    s.add_argument("--batch", type=int)
    s.add_argument("--width", type=float, help="channel width multiplier")
    s.add_argument("--T", type=int, help="student timesteps (all inputs)")
    s.add_argument("--T-teacher", type=int, dest="T_teacher", help="teacher timesteps T'")
    s.add_argument("--neuron", choices=sorted(P.PRESETS), default="paper",
                   help="paper: soft reset, Rect(1), decay_input=False, tau=2 (the TSSD "
                        "paper); sj: SpikingJelly's defaults (hard reset, Sigmoid(4)), where "
                        "its fused kernels take part")
    t = harness.add_timing_args(
        ap, min_time_help="seconds of timed steps per neuron at least (CPU 1.0, GPU 0.3, "
                          "--quick 0.05)",
        min_reps_help="timed steps per neuron at least (CPU 7, GPU 5, --quick 3)",
        threads_help="torch CPU threads (default: torch's choice, or 1 when the 1-min load "
                     "average exceeds half the cores at start)")
    ap.add_argument("--cuda-graphs", action="store_true",
                    help="also run every group with the whole step captured in a CUDA graph and "
                         "replayed (layout shown as nchw+graph); CUDA only")
    t.add_argument("--time-budget", type=float, metavar="S",
                   help="stop starting new groups after S seconds (the rest is reported "
                        "skipped)")
    harness.add_output_args(
        ap, DEFAULT_CSV, csv_when=" after each group",
        plot_help="PNG of img/s per method and neuron",
        strict_help="exit 1 when a neuron differs from the reference or fails")
    return ap.parse_args(argv)


def resolve_threads(args, device) -> str:
    """Set torch's CPU threads; returns a note for the header."""
    if args.threads:
        torch.set_num_threads(args.threads)
        return f"--threads {args.threads}"
    if device.type != "cpu":
        return "torch's choice"
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return "torch's choice"
    cores = os.cpu_count() or 1
    if cores > 1 and load > 0.5 * cores:
        torch.set_num_threads(1)
        return (f"1 (auto: load average {load:.1f} on {cores} cores at start; multi-threaded "
                f"convolutions stall when another process takes a core; --threads N overrides)")
    return "torch's choice"


def resolve_sweep(args, device) -> dict:
    cuda = device.type == "cuda"
    if cuda:
        archs = ["vgg9"] if args.quick else list(ARCHS)
        inputs = ["cifar"] if args.quick else list(INPUTS)
        precs = ["fp32", "bf16"]
        if not torch.cuda.is_bf16_supported():
            precs = ["fp32"]
        layouts = ["nchw"] if args.quick else list(LAYOUTS)
        batch, width = 64, 1.0
        timer = harness.TimerOptions(min_reps=args.min_reps or (3 if args.quick else 5),
                                     max_reps=100, max_time_s=3.0, warmup_reps=2,
                                     warmup_s=0.05,
                                     min_time_s=args.min_time if args.min_time is not None
                                     else (0.05 if args.quick else 0.3))
    else:
        archs = ["vgg9"] if args.quick else list(ARCHS)
        inputs = ["cifar", "dvs"] if args.dvs else ["cifar"]
        precs, layouts = ["fp32"], ["nchw"]
        batch, width = (4, 0.125) if args.quick else (8, 0.25)
        timer = harness.TimerOptions(min_reps=args.min_reps or (3 if args.quick else 7),
                                     max_reps=50, max_time_s=10.0, warmup_reps=1, warmup_s=0.0,
                                     min_time_s=args.min_time if args.min_time is not None
                                     else (0.05 if args.quick else 1.0))
    specs = []
    for name in (args.inputs or inputs):
        s = INPUTS[name]
        T = args.T or s.T
        Tt = args.T_teacher or (s.T_teacher if s.T_teacher > T else T + 1)
        if Tt <= T:
            raise SystemExit(f"--T-teacher ({Tt}) must exceed T ({T})")
        specs.append(dataclasses.replace(s, T=T, T_teacher=Tt))
    return {"archs": args.arch or archs, "inputs": specs,
            "methods": args.methods or list(METHODS), "precisions": args.precision or precs,
            "layouts": args.layout or layouts, "batch": args.batch or batch,
            "width": args.width or width, "timer": timer}


def select_providers(all_p: List[N.NeuronProvider], wanted: Optional[Sequence[str]],
                     no_standin: bool) -> List[N.NeuronProvider]:
    out = all_p
    if wanted:
        groups = {"tssd": [p.name for p in all_p if p.kind in ("reference", "tssd")],
                  "sj": [p.name for p in all_p if p.kind == "sj"],
                  "all": [p.name for p in all_p]}
        names = {N.REFERENCE, N.STANDIN}
        names |= harness.select_names(wanted, [p.name for p in all_p], groups, "neuron")
        out = [p for p in all_p if p.name in names]
    if no_standin:
        out = [p for p in out if p.kind != "standin"]
    return out


def main(argv=None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    device = harness.resolve_device(args.device)
    cfg = P.neuron_config(args.neuron)
    cuda = device.type == "cuda"
    providers = select_providers(N.all_providers(cfg, device, args.providers or ()),
                                 args.providers, args.no_standin)
    if args.list:
        print(f"neurons on {device} ({cfg.describe()}):")
        for p in providers:
            state = "runs" if p.skip is None else f"skipped: {p.skip}"
            print(f"  {p.name:<10} {p.description}\n  {'':<10} -> {state}")
        return 0
    threads_note = resolve_threads(args, device)
    sweep = resolve_sweep(args, device)
    if cuda:
        torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on"  # tssd_fast.train: on unless min

    env = harness.environment(device)
    env["threads_note"] = threads_note
    if cuda:
        env["cudnn_benchmark"] = torch.backends.cudnn.benchmark
        env["allow_tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32,
                             "cudnn": torch.backends.cudnn.allow_tf32}
    inputs = sweep["inputs"]
    print("Train step -- one full training step per neuron implementation (end to end)\n"
          f"{harness.environment_header(env)}\n"
          f"torch threads: {threads_note}"
          + (f"; cudnn.benchmark {args.cudnn_benchmark}, TF32 matmul {env['allow_tf32']['matmul']} / cudnn "
             f"{env['allow_tf32']['cudnn']}" if cuda else "") + "\n"
          f"networks: {', '.join(sweep['archs'])} at width {sweep['width']:g}"
          + (" (reduced from 1: the full width takes seconds per step on a small CPU; neuron "
             "shares are larger at reduced width, where the convolutions shrink faster "
             "than the neurons)" if sweep["width"] < 1 else "")
          + f"; batch {sweep['batch']}\n"
          f"inputs: " + "; ".join(s.describe(sweep["batch"]) for s in inputs) + "\n"
          f"neuron: {cfg.describe()}\n"
          f"methods: {', '.join(sweep['methods'])}; precision: "
          f"{', '.join(sweep['precisions'])}; layout: {', '.join(sweep['layouts'])}; optimizer "
          f"SGD(momentum 0.9, weight decay 5e-4)\n"
          f"timing: interleaved rounds, >= {sweep['timer'].min_reps} steps and "
          f">= {sweep['timer'].min_time_s:g} s per neuron after "
          f"{sweep['timer'].warmup_reps} warm-up step(s)\n", flush=True)

    if args.cuda_graphs and not cuda:
        raise SystemExit("--cuda-graphs needs a CUDA device (--device cuda)")
    launches = ("eager", "graph") if args.cuda_graphs else ("eager",)
    groups = [Group(a, s, pr, lay, m, sweep["batch"], sweep["width"], la)
              for a in sweep["archs"] for s in inputs for pr in sweep["precisions"]
              for lay in sweep["layouts"] for m in sweep["methods"] for la in launches]
    runnable = [p for p in providers if p.skip is None]
    progress = harness.Progress(len(groups) * max(1, len(runnable)),
                                enabled=not args.no_progress)
    rows: List[dict] = []
    csv_path = None
    env_cols = {k: env.get(k) for k in ("timestamp", "device", "device_name", "commit", "torch",
                                         "triton", "spikingjelly", "tssd_fast", "torch_threads",
                                         "loadavg_1min")}
    for g in groups:
        if args.time_budget is not None and time.perf_counter() - t_start > args.time_budget:
            new = [_row(g, p, f"skipped: --time-budget {args.time_budget:g} s spent")
                   for p in runnable]
            for _ in runnable:
                progress.step(f"{g.arch} {g.inp.name} (time budget spent)")
        else:
            new = run_group(g, providers, device, sweep["timer"], args.seed, progress,
                            args.memory)
        for r in new:
            r.update(env_cols, neuron=cfg.describe(), memory=args.memory)
        rows += new
        add_vs_fp32(rows)
        if not args.no_csv and args.csv:
            csv_path = harness.append_csv(args.csv, new, CSV_FIELDS)
    progress.close()
    mem_rows: List[dict] = []
    mem_p = memory_provider(providers)
    if not args.no_memory_modes and mem_p is not None and args.memory_modes:
        mem_method = "tssd" if "tssd" in sweep["methods"] else sweep["methods"][0]
        mem_groups = list(OrderedDict.fromkeys(
            Group(a, s, pr, lay, mem_method, sweep["batch"], sweep["width"])
            for a in sweep["archs"] for s in inputs for pr in sweep["precisions"]
            for lay in sweep["layouts"]))
        mprog = harness.Progress(len(mem_groups) * len(args.memory_modes),
                                 enabled=not args.no_progress)
        for g in mem_groups:
            if args.time_budget is not None and time.perf_counter() - t_start > args.time_budget:
                break
            new = run_memory_group(g, mem_p, args.memory_modes, device, sweep["timer"],
                                   args.seed, mprog)
            for r in new:
                r.update(env_cols, neuron=cfg.describe())
            mem_rows += new
            if not args.no_csv and args.csv:
                harness.append_csv(Path(args.csv).with_name(Path(args.csv).stem + "_memory.csv"),
                                   new, MEMORY_CSV_FIELDS)
        mprog.close()
    wall = time.perf_counter() - t_start

    show_prec = len(sweep["precisions"]) > 1 or sweep["precisions"] != ["fp32"]
    show_layout = len(sweep["layouts"]) > 1 or sweep["layouts"] != ["nchw"] or args.cuda_graphs
    print(render_table(rows, cuda, show_prec, show_layout))
    summary = render_summary(rows, show_prec or show_layout)
    if summary:
        print("\nsummary (best fused backend and SpikingJelly's best against the reference "
              "neuron; ceiling = reference step / network without neuron):\n" + summary)
    target = render_target(rows, cuda)
    if target:
        print("\n" + target)
    if mem_rows:
        print(f"\nmemory modes ({mem_p.name} neuron; build_model(memory=...), docs/MEMORY.md): "
              "plain = torch's layers keep everything; default = spike inputs kept as bits, "
              "the batch once, avg pools keep shapes only (bitwise plain's results); min = "
              "also recompute each BN input in backward. First step checked bit for bit against "
              "plain" + (" (cuDNN deterministic, no benchmark)" if cuda else "")
              + ". saved = kept for backward (float = fp32/bf16 tensors, bits = uint8: LIF window "
              "bits and packed spikes); time vs plain = this mode's median step / plain's, "
              "timed interleaved"
              + ("; peak = CUDA memory at the peak of a step" if cuda else "") + ":\n"
              + render_memory(mem_rows, cuda))
    skipped = [p for p in providers if p.skip is not None]
    if skipped:
        print("\nnot run here:")
        for p in skipped:
            print(f"  {p.name:<10} {p.skip}")
    print("\nlegend: ms = median step time (p20-p80 spread); img/s = batch / median; speedup = "
          "reference-neuron step / this step, same network, method, precision and layout"
          + ("; vs fp32 = reference-neuron fp32 NCHW step of the same method / this step"
             if cuda else "")
          + "; neuron % = 1 - t(stand-in)/t(step): the share of the step the neuron costs "
            "beyond a one-kernel Heaviside with straight-through gradient (timed, not "
            "profiled); * stand-in = the network without neuron, its speedup is the ceiling; "
            "1st s = the first step (compiles kernels; on GPU the group's first neuron also "
            "pays cuDNN autotuning); "
            "saved = bytes autograd saves for backward in the step's forward (weights and "
            "batch excluded; the teacher run's graph included)"
          + ("; peak = CUDA memory at the peak of a step above what was allocated before it."
             if cuda else "; peak memory is reported on CUDA only.")
          + " Neurons are interleaved step by step while timed. First-step loss checked "
            "against the reference ('differs').")
    try:
        load_end = os.getloadavg()[0]
    except (OSError, AttributeError):
        load_end = None
    noisy = [r for r in rows if r["median_ms"] and (r["p80_ms"] - r["p20_ms"]) >
             0.2 * r["median_ms"]]
    if load_end is not None and not cuda:
        print(f"\nload average (1 min) at the end: {load_end:.2f} on {os.cpu_count()} cores"
              + (f"; {len(noisy)} of {sum(1 for r in rows if r['median_ms'])} timings spread "
                 f"more than 20% (p20-p80): compare speedups, not absolute times"
                 if noisy else "")
              + ("; a negative neuron % (a step timed faster than the stand-in) is noise"
                 if any((r["neuron_share"] or 0) < 0 for r in rows) else ""))
    bad = [r for r in rows + mem_rows if r["status"].startswith(("differs", "error"))]
    if bad:
        print(f"\nWARNING: {len(bad)} point(s) differ or failed: "
              + "; ".join(sorted({f"{r['provider']}: {r['status']}" for r in bad}))[:600])
    print(f"\nwall time: {wall:.1f} s", flush=True)
    if csv_path is not None:
        print(f"rows appended to {csv_path}")
    harness.write_json_and_plot(args, lambda: {
        "environment": env, "neuron": {"describe": cfg.describe(), **dataclasses.asdict(cfg)},
        "sweep": {"archs": sweep["archs"], "inputs": [dataclasses.asdict(s) for s in inputs],
                  "methods": sweep["methods"], "precisions": sweep["precisions"],
                  "layouts": sweep["layouts"], "batch": sweep["batch"],
                  "width": sweep["width"], "optimizer": {"SGD": SGD},
                  "timer": dataclasses.asdict(sweep["timer"]), "timing": "interleaved"},
        "neuron_share_method": "1 - t(stand-in)/t(step); stand-in = one-kernel Heaviside "
                               "with straight-through gradient in every neuron's place",
        "providers": {p.name: ("runs" if p.skip is None else f"skipped: {p.skip}")
                      for p in providers},
        "load_end": load_end, "wall_s": wall, "rows": rows, "memory": args.memory,
        "memory_rows": mem_rows},
        lambda path: write_plot(path, rows))
    return 1 if (args.strict and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
