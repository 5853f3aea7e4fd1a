"""The neurons benchmarks/train_step.py puts into the networks, as factories for build_model.

    torch                  tssd_fast.LIFNode(backend='torch'): the pure-PyTorch reference
    cpp / cuda / triton / cupy
                           tssd_fast.LIFNode on each fused backend the device has
    sj-torch / sj-cuda / sj-triton (2.x), sj-cupy (0.0.0.0.x)
                           SpikingJelly's LIFNode(step_mode='m') with that implementation (2.x:
                           chosen through its LIF implementation selector, the one its
                           SJ_LIF_CUDA_IMPLEMENTATION variable sets)
    stand-in               a one-kernel Heaviside with a straight-through gradient: the network
                           with (almost) no neuron cost, to measure the neuron's share of a step

Every one is built from the same NeuronConfig (benchmarks/_providers.py: 'paper' or 'sj').
"""
import contextlib
import inspect
import os
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _providers as P
else:
    from . import _providers as P

import tssd_fast
from tssd_fast.ops import registry

REFERENCE = "torch"
STANDIN = "stand-in"
KINDS = ("reference", "tssd", "sj", "standin")


@dataclass
class NeuronProvider:
    """One neuron to put into the networks. `factory()` -> a multi-step module [T, *] -> [T, *]
    (None when skipped; `skip` says why). `activate()` runs before every step (SpikingJelly's
    implementation choice is global)."""

    name: str
    kind: str
    description: str
    factory: Optional[Callable[[], nn.Module]] = None
    skip: Optional[str] = None
    activate: Optional[Callable[[], None]] = None


# ------------------------------------------------------------------------------- stand-in
class _HeavisideSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, threshold: float):
        return (x >= threshold).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class NeuronStandIn(nn.Module):
    """x [T, *] -> (x >= v_threshold) in x's dtype, gradient passed straight through.

    The cheapest thing a neuron can be: one elementwise pass forward (read x, write spikes, in
    x's memory format), none backward, nothing saved. A step with it in every neuron's place
    costs what the rest of the network costs (convolutions, BN, pooling, heads, losses,
    optimizer) plus that one pass; 1 - t(stand-in) / t(step) is the share of the step the real
    neuron costs beyond it."""

    def __init__(self, v_threshold: float = 1.0):
        super().__init__()
        self.v_threshold = float(v_threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return _HeavisideSTE.apply(x, self.v_threshold)

    def extra_repr(self) -> str:
        return f"v_threshold={self.v_threshold}"


# -------------------------------------------------------------------------------- tssd_fast
def _tssd_factory(cfg: P.NeuronConfig, backend: str):
    return partial(tssd_fast.LIFNode, tau=float(cfg.tau), decay_input=cfg.decay_input,
                   v_threshold=cfg.v_threshold, v_reset=cfg.v_reset,
                   surrogate_function=cfg.tssd_surrogate(), detach_reset=cfg.detach_reset,
                   step_mode="m", backend=backend)


def _tssd_candidates(dev: str) -> List[str]:
    """The fused backends that could run on `dev`'s type (available or not)."""
    out = [b for b in registry.AUTO_ORDER.get(dev, ()) if b != REFERENCE]
    out += [b for b in registry.BACKENDS if b not in out and b != REFERENCE
            and dev in registry.info(b).devices()]
    return out


def tssd_providers(cfg: P.NeuronConfig, device,
                   explicit: Sequence[str] = ()) -> List[NeuronProvider]:
    dev = torch.device(device).type
    desc = {"torch": "tssd_fast LIFNode, pure-PyTorch reference",
            "cpp": "tssd_fast LIFNode, fused CPU kernel",
            "cuda": "tssd_fast LIFNode, fused CUDA kernel",
            "triton": "tssd_fast LIFNode, Triton kernel", "cupy": "tssd_fast LIFNode, CuPy kernel"}
    out = [NeuronProvider(REFERENCE, "reference", desc[REFERENCE], _tssd_factory(cfg, REFERENCE))]
    available = tssd_fast.available_backends(dev)
    for b in _tssd_candidates(dev):
        p = NeuronProvider(b, "tssd", desc[b])
        if dev == "cpu" and b == "triton" and os.environ.get("TRITON_INTERPRET") == "1" \
                and b not in explicit:
            p.skip = ("TRITON_INTERPRET=1 would run it through the Triton interpreter (a test "
                      "mode, far slower); pass --providers triton to time it anyway")
        elif dev not in registry.info(b).devices():
            p.skip = f"runs on {', '.join(registry.info(b).devices())} only" + (
                " (or CPU under TRITON_INTERPRET=1, a test mode)" if b == "triton" else "")
        elif b not in available:
            p.skip = registry.why_unavailable(b) or f"unavailable on {dev}"
        else:
            p.factory = _tssd_factory(cfg, b)
        out.append(p)
    return out


# ----------------------------------------------------------------------------- SpikingJelly
def _sj_modules():
    try:
        from spikingjelly.activation_based import neuron as sjn
        from spikingjelly.activation_based import surrogate as sjs
    except Exception as e:  # noqa: BLE001 - absent, or broken by a missing dependency
        raise P.Skip(f"spikingjelly not importable ({type(e).__name__}: {e}); "
                     f"bash scripts/install_compare.sh sets it up") from None
    return sjn, sjs


def _sj_surrogate(cfg: P.NeuronConfig, sjs):
    cls = {"rect": "Rect", "sigmoid": "Sigmoid", "atan": "ATan"}[cfg.surrogate]
    return getattr(sjs, cls)(alpha=cfg.alpha)


def _sj_fuses(cfg: P.NeuronConfig) -> bool:
    """Whether SpikingJelly 2.x has a fused kernel for this surrogate (its Rect has none)."""
    try:
        from spikingjelly._ops.surrogate import _surrogate_spec
        _, sjs = _sj_modules()
        return _surrogate_spec(_sj_surrogate(cfg, sjs)) is not None
    except P.Skip:
        raise
    except Exception:  # noqa: BLE001
        return cfg.surrogate != "rect"


def _sj_factory(cfg: P.NeuronConfig, **extra):
    sjn, sjs = _sj_modules()
    return partial(sjn.LIFNode, tau=float(cfg.tau), decay_input=cfg.decay_input,
                   v_threshold=cfg.v_threshold, v_reset=cfg.v_reset,
                   surrogate_function=_sj_surrogate(cfg, sjs), detach_reset=cfg.detach_reset,
                   step_mode="m", **extra)


def _sj_selector(impl: str, device):
    """activate() for SpikingJelly 2.x on CUDA: requests `impl` ('auto', 'cuda', 'triton',
    'torch') from its LIF selector (only when it changes: selecting costs imports). Raises
    Skip now if SpikingJelly cannot run it."""
    try:
        from spikingjelly._ops import lif as sj_lif
        sel = sj_lif._selection
    except Exception as e:  # noqa: BLE001
        raise P.Skip(f"this spikingjelly has no LIF implementation selector ({e})") from None

    def activate():
        if sel._requested != impl:
            sel._requested = impl
            sel._selections.clear()
            sel._compiled_selections.clear()

    activate()
    if impl != "auto":
        try:
            got = sel.diagnostics(torch.device(device))
        except Exception as e:  # noqa: BLE001
            raise P.Skip(f"spikingjelly cannot select {impl}: {e}") from None
        if got["implementation"] != impl:
            raise P.Skip(f"spikingjelly {impl} unavailable: "
                         f"{got['unavailable'].get(impl, 'not selected')}")
    return activate


@contextlib.contextmanager
def _skip_on_failure(p: NeuronProvider):
    """Sets up `p` in the with block; a failure there becomes `p.skip` (Skip: its message)."""
    try:
        yield
    except P.Skip as e:
        p.skip = str(e)
    except Exception as e:  # noqa: BLE001
        p.skip = f"failed to set up: {type(e).__name__}: {e}"


def sj_providers(cfg: P.NeuronConfig, device,
                 explicit: Sequence[str] = ()) -> List[NeuronProvider]:
    """SpikingJelly's LIFNode with its fastest implementations for this device and surrogate.

    2.x on CPU: 'sj-torch' (its only CPU path, a torch loop). 2.x on CUDA: 'sj-cuda' and
    'sj-triton' when the surrogate has a fused kernel there (Sigmoid, ATan, ...), else
    'sj-torch' (its torch loop, which it then runs in any case); 'sj-torch' with a fused
    surrogate only when asked for (--providers sj-torch). 0.0.0.0.x: 'sj-torch', 'sj-cupy'."""
    dev = torch.device(device).type
    try:
        sjn, _ = _sj_modules()
    except P.Skip as e:
        return [NeuronProvider("sj", "sj", "SpikingJelly LIFNode", skip=str(e))]
    out: List[NeuronProvider] = []
    if "backend" in inspect.signature(sjn.LIFNode.__init__).parameters:  # 0.0.0.0.x
        for impl in ("torch", "cupy"):
            p = NeuronProvider(f"sj-{impl}", "sj", f"SpikingJelly LIFNode, backend='{impl}'")
            if impl == "cupy" and dev != "cuda":
                p.skip = "runs on CUDA only"
            else:
                with _skip_on_failure(p):
                    probe = _sj_factory(cfg)()
                    if impl not in probe.supported_backends:
                        raise P.Skip(f"not a backend of this spikingjelly "
                                     f"({probe.supported_backends})")
                    p.factory = _sj_factory(cfg, backend=impl)
            out.append(p)
        return out
    fuses = _sj_fuses(cfg)
    if dev != "cuda":
        desc = ("SpikingJelly LIFNode: its CPU torch loop"
                + (" (fused-surrogate autograd)" if fuses else " (autograd)"))
        return [NeuronProvider("sj-torch", "sj", desc, _sj_factory(cfg))]
    for impl in ("cuda", "triton", "torch"):
        name = f"sj-{impl}"
        p = NeuronProvider(name, "sj", f"SpikingJelly LIFNode, {impl} implementation")
        if impl == "torch" and fuses and name not in explicit:
            continue
        if impl != "torch" and not fuses:
            p.skip = (f"spikingjelly has no fused kernel for the {cfg.surrogate} surrogate (it "
                      f"runs its torch loop: sj-torch); --neuron sj uses Sigmoid")
            out.append(p)
            continue
        with _skip_on_failure(p):
            p.activate = _sj_selector(impl if fuses else "auto", device)
            p.factory = _sj_factory(cfg)
        out.append(p)
    return out


def standin_provider(cfg: P.NeuronConfig) -> NeuronProvider:
    return NeuronProvider(STANDIN, "standin",
                          "no neuron: one-kernel Heaviside, straight-through gradient",
                          partial(NeuronStandIn, cfg.v_threshold))


def all_providers(cfg: P.NeuronConfig, device,
                  explicit: Sequence[str] = ()) -> List[NeuronProvider]:
    """Reference, fused tssd_fast backends, SpikingJelly, then the stand-in."""
    return (tssd_providers(cfg, device, explicit) + sj_providers(cfg, device, explicit)
            + [standin_provider(cfg)])
