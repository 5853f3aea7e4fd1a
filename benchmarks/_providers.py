"""The LIF implementations the benchmarks compare ("providers"), all behind one call shape.

A provider's `build(cfg, device)` returns a Runner (`runner(x) -> (spikes, v_last)` over
x [T, N], from the neuron's default initial state) or raises Skip with the reason it cannot run
here. Providers:

    torch          tssd_fast's pure-PyTorch autograd loop (the oracle and the baseline)
    cpp/cuda/triton/cupy
                   tssd_fast's fused backends, as tssd_fast.available_backends(device) reports
    torch-compile  torch.compile(fullgraph=True) of the reference loop (one compile per shape)
    sj-torch, sj-cuda, sj-triton, sj-inductor
                   SpikingJelly's LIFNode (step_mode='m') with each of its implementations
                   (2.x: chosen through its LIF implementation selector, the one its
                   SJ_LIF_CUDA_IMPLEMENTATION variable sets; inductor = torch.compile of the
                   node); 0.0.0.0.x: its `backend` argument ('torch', 'cupy').
"""
import inspect
import os
from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Tuple

import torch

import tssd_fast
from tssd_fast.ops import registry
from tssd_fast.ops.config import PAPER, SPIKINGJELLY_DEFAULT, LIFConfig
from tssd_fast.ops.reference import compute_dtype, lif_multistep_ref

ALL_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


class Skip(Exception):
    """A provider (or one point of it) cannot run here; str(e) says why."""


# ------------------------------------------------------------------------------------ neuron
@dataclass(frozen=True)
class NeuronConfig:
    """The LIF neuron every provider runs (docs/NEURON.md), in the benchmarks' terms (a name and
    the surrogate by its CLI name); `lif()` gives the op's LIFConfig. v_reset None = soft reset."""

    name: str = "paper"
    tau: float = 2.0
    decay_input: bool = False
    v_threshold: float = 1.0
    v_reset: Optional[float] = None
    surrogate: str = "rect"
    alpha: float = 1.0
    detach_reset: bool = False

    def lif(self) -> LIFConfig:
        """The same neuron as the op's configuration record."""
        return LIFConfig(self.tau, self.v_threshold, self.v_reset, self.decay_input,
                         _SURROGATE_NAMES.index(self.surrogate), self.alpha, self.detach_reset)

    @property
    def saves_window_bits(self) -> bool:
        """Rect + soft reset: the fused backward needs only the window bit (1 bit per step)."""
        return self.lif().saves_window_bits

    @property
    def v_init(self) -> float:
        return self.lif().v_init

    def tssd_surrogate(self):
        return self.lif().neuron_kwargs()["surrogate_function"]

    def describe(self) -> str:
        reset = "soft reset" if self.v_reset is None else f"hard reset to {self.v_reset:g}"
        sg = {"rect": "Rect", "sigmoid": "Sigmoid", "atan": "ATan"}[self.surrogate]
        return (f"{self.name}: tau={self.tau:g}, decay_input={self.decay_input}, v_threshold="
                f"{self.v_threshold:g}, {reset}, {sg}(alpha={self.alpha:g})"
                + (", detach_reset" if self.detach_reset else ""))


_SURROGATE_NAMES = ("rect", "sigmoid", "atan")  # LIFConfig.surrogate_id -> the CLI's name


def _from_lif(name: str, c: LIFConfig) -> "NeuronConfig":
    return NeuronConfig(name, c.tau, c.decay_input, c.v_threshold, c.v_reset,
                        _SURROGATE_NAMES[c.surrogate_id], c.alpha, c.detach_reset)


PRESETS = {
    # the TSSD paper's neuron: H = (1 - 1/tau) V + X, soft reset, rectangular surrogate a=1
    "paper": _from_lif("paper", PAPER),
    # SpikingJelly's LIFNode defaults: its fused kernels (Sigmoid) can take part
    "sj": _from_lif("sj", SPIKINGJELLY_DEFAULT),
}


def neuron_config(preset: str = "paper", **overrides) -> NeuronConfig:
    """A preset ('paper' or 'sj') with fields overridden (None values are ignored, except
    v_reset given through `reset='soft'`). Named 'custom' when anything changed."""
    cfg = PRESETS[preset]
    reset = overrides.pop("reset", None)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if reset == "soft":
        changes["v_reset"] = None
    elif reset == "hard" and changes.get("v_reset", cfg.v_reset) is None:
        changes["v_reset"] = 0.0
    if "surrogate" in changes and "alpha" not in changes:
        changes["alpha"] = {"rect": 1.0, "sigmoid": 4.0, "atan": 2.0}[changes["surrogate"]]
    new = replace(cfg, **changes)
    return new if new == cfg else replace(new, name="custom")


# ---------------------------------------------------------------------------------- runners
class Runner:
    """A built provider: `runner(x)` -> (spikes [T, N], v_last [N]); `activate()` is called
    once before a point is checked and timed (e.g. to select an implementation)."""

    def __init__(self, fn: Callable, activate: Optional[Callable[[], None]] = None):
        self.fn = fn
        self._activate = activate

    def __call__(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.fn(x)

    def activate(self) -> None:
        if self._activate is not None:
            self._activate()


@dataclass
class Provider:
    """One implementation to benchmark.

    kind: 'reference' (the oracle), 'tssd', 'compile' (torch.compile: its first call compiles,
    counted against the compile budget) or 'spikingjelly'. build(cfg, device) -> Runner, or
    raises Skip. dtypes: the storage dtypes it takes (others are skipped)."""

    name: str
    kind: str
    description: str
    build: Callable[[NeuronConfig, torch.device], Runner]
    dtypes: Tuple[torch.dtype, ...] = ALL_DTYPES
    hint: Optional[Callable[[torch.dtype], Optional[str]]] = None  # added to a 'wrong' status


def _tssd_runner(backend: str):
    def build(cfg: NeuronConfig, device: torch.device) -> Runner:
        dev = device.type
        if backend != "torch":
            if dev not in registry.info(backend).devices():
                where = ", ".join(registry.info(backend).devices())
                hint = " (or CPU under TRITON_INTERPRET=1, a test mode)" if backend == "triton" \
                    else ""
                raise Skip(f"runs on {where} only{hint}")
            if backend not in tssd_fast.available_backends(dev):
                raise Skip(registry.why_unavailable(backend) or f"unavailable on {dev}")
        # Through the module, as a user calls it: LIFNode's host path is part of the cost.
        node = tssd_fast.LIFNode(tau=cfg.tau, decay_input=cfg.decay_input,
                                 v_threshold=cfg.v_threshold, v_reset=cfg.v_reset,
                                 surrogate_function=cfg.tssd_surrogate(),
                                 detach_reset=cfg.detach_reset, step_mode="m", backend=backend)

        def run(x):
            node.reset()
            return node(x), node.v

        return Runner(run)

    return build


def _raise_recompile_limit(n: int = 512) -> None:
    import torch._dynamo.config as dc
    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                 "accumulated_recompile_limit"):
        if hasattr(dc, name) and getattr(dc, name) < n:
            setattr(dc, name, n)


def _compile_runner(cfg: NeuronConfig, device: torch.device) -> Runner:
    if not hasattr(torch, "compile"):
        raise Skip(f"torch {torch.__version__} has no torch.compile")
    _raise_recompile_limit()
    sg = cfg.tssd_surrogate()

    def reference(x):
        v0 = torch.full(x.shape[1:], cfg.v_init, dtype=compute_dtype(x.dtype), device=x.device)
        s, v, _ = lif_multistep_ref(x, v0, cfg.tau, cfg.decay_input, cfg.v_threshold,
                                    cfg.v_reset, sg, cfg.detach_reset, False)
        return s, v

    return Runner(torch.compile(reference, fullgraph=True, dynamic=False))


# ----------------------------------------------------------------------------- SpikingJelly
def _sj_modules():
    try:
        from spikingjelly.activation_based import neuron as sjn
        from spikingjelly.activation_based import surrogate as sjs
    except Exception as e:  # noqa: BLE001 - absent, or broken by a missing dependency
        raise Skip(f"spikingjelly not importable ({type(e).__name__}: {e}); "
                   f"bash scripts/install_compare.sh sets it up") from None
    return sjn, sjs


def _sj_node(cfg: NeuronConfig, device, **extra):
    sjn, sjs = _sj_modules()
    sg_cls = {"rect": sjs.Rect, "sigmoid": sjs.Sigmoid, "atan": sjs.ATan}[cfg.surrogate]
    node = sjn.LIFNode(tau=float(cfg.tau), decay_input=cfg.decay_input,
                       v_threshold=cfg.v_threshold, v_reset=cfg.v_reset,
                       surrogate_function=sg_cls(alpha=cfg.alpha),
                       detach_reset=cfg.detach_reset, step_mode="m", **extra)
    return node.to(device)


def sj_has_backend_arg() -> bool:
    """SpikingJelly 0.0.0.0.x: LIFNode(backend=...). 2.x: no such argument."""
    sjn, _ = _sj_modules()
    return "backend" in inspect.signature(sjn.LIFNode.__init__).parameters


def _sj_selection():
    try:
        from spikingjelly._ops import lif as sj_lif
        return sj_lif._selection
    except Exception as e:  # noqa: BLE001
        raise Skip(f"this spikingjelly has no LIF implementation selector "
                   f"(spikingjelly._ops.lif._selection: {e})") from None


def _sj_fuses(cfg: NeuronConfig) -> bool:
    try:
        from spikingjelly._ops.surrogate import _surrogate_spec
        sjn, sjs = _sj_modules()
        sg = {"rect": sjs.Rect, "sigmoid": sjs.Sigmoid, "atan": sjs.ATan}[cfg.surrogate]()
        return _surrogate_spec(sg) is not None
    except Skip:
        raise
    except Exception:  # noqa: BLE001
        return cfg.surrogate != "rect"


def _sj_runner(impl: str):
    """SpikingJelly's LIFNode with implementation `impl`: 'torch', 'cuda', 'triton' (2.x),
    'cupy' (0.0.0.0.x) or 'inductor' (torch.compile of the node)."""

    def build(cfg: NeuronConfig, device: torch.device) -> Runner:
        if sj_has_backend_arg():  # SpikingJelly 0.0.0.0.x
            if impl == "inductor":
                node = _sj_node(cfg, device, backend="torch")
            else:
                if impl == "cupy" and device.type != "cuda":
                    raise Skip("runs on CUDA only")
                node = _sj_node(cfg, device)
                if impl not in node.supported_backends:
                    raise Skip(f"not a backend of this spikingjelly "
                               f"(supported: {node.supported_backends})")
                node = _sj_node(cfg, device, backend=impl)
            return _sj_node_runner(node, impl == "inductor")
        # SpikingJelly 2.x
        if impl == "cupy":
            raise Skip("spikingjelly 2.x has no CuPy backend (its CUDA kernels are 'sj-cuda')")
        if impl in ("cuda", "triton") and device.type != "cuda":
            raise Skip("runs on CUDA only (spikingjelly 2.x runs its torch loop on CPU)")
        fuses = _sj_fuses(cfg)
        if impl in ("cuda", "triton") and not fuses:
            raise Skip(f"spikingjelly has no fused kernel for the {cfg.surrogate} surrogate (it "
                       f"runs its torch loop); use --neuron sj for Sigmoid")
        activate = None
        if device.type == "cuda":
            selection = _sj_selection()
            # 'auto' for inductor (its own compile-time choice) and for a surrogate it cannot
            # fuse (it refuses an explicit choice there and runs its torch loop)
            requested = "auto" if impl == "inductor" or not fuses else impl

            def activate():
                selection._requested = requested
                selection._selections.clear()
                selection._compiled_selections.clear()
                if requested != "auto":
                    try:
                        got = selection.diagnostics(device)
                    except Exception as e:  # noqa: BLE001
                        raise Skip(f"spikingjelly cannot select {impl}: {e}") from None
                    if got["implementation"] != requested:
                        reason = got["unavailable"].get(requested, "not selected")
                        raise Skip(f"spikingjelly {impl} unavailable: {reason}")

            activate()  # fail at build time when unavailable
        node = _sj_node(cfg, device)
        return _sj_node_runner(node, impl == "inductor", activate)

    return build


def _sj_hint(dtype: torch.dtype) -> Optional[str]:
    if dtype in (torch.float16, torch.bfloat16):
        return ("SpikingJelly keeps V in the input dtype, the reference computes in fp32")
    return None


SJ_PROFILE_REFUSED = "cannot run this execution profile"  # its explicit choice refused an input


def _sj_node_runner(node, compiled: bool, activate=None) -> Runner:
    call = node
    if compiled:
        if not hasattr(torch, "compile"):
            raise Skip(f"torch {torch.__version__} has no torch.compile")
        _raise_recompile_limit()
        call = torch.compile(node)

    def run(x):
        node.reset()
        s = call(x)
        return s, node.v

    return Runner(run, activate)


# ------------------------------------------------------------------------------------ lists
REFERENCE = "torch"
COMPILE_KINDS = ("compile",)


def tssd_provider(backend: str) -> Provider:
    desc = {"torch": "tssd_fast pure-PyTorch autograd loop (reference)",
            "cpp": "tssd_fast fused CPU kernel", "cuda": "tssd_fast fused CUDA kernel",
            "triton": "tssd_fast Triton kernel", "cupy": "tssd_fast CuPy kernel"}[backend]
    kind = "reference" if backend == REFERENCE else "tssd"
    return Provider(backend, kind, desc, _tssd_runner(backend),
                    registry.info(backend).dtypes)


def all_providers(device) -> List[Provider]:
    """Every provider that could run on `device`'s type, the reference first."""
    dev = torch.device(device).type
    order = registry.AUTO_ORDER.get(dev, ())
    tssd = [b for b in order if b != REFERENCE]
    tssd += [b for b in registry.BACKENDS if b not in tssd and b != REFERENCE and
             (dev in registry.info(b).devices() or (dev == "cpu" and b == "triton"))]
    out = [tssd_provider(REFERENCE)] + [tssd_provider(b) for b in tssd]
    out.append(Provider("torch-compile", "compile",
                        "torch.compile(fullgraph=True) of the reference loop", _compile_runner))
    sj_impls = ("torch", "cuda", "triton", "cupy", "inductor") if dev == "cuda" else (
        "torch", "inductor")
    for impl in sj_impls:
        kind = "compile" if impl == "inductor" else "spikingjelly"
        desc = ("torch.compile of SpikingJelly's LIFNode" if impl == "inductor"
                else f"SpikingJelly LIFNode, {impl} implementation")
        dtypes = ALL_DTYPES if impl in ("torch", "inductor") else (
            torch.float32, torch.float16, torch.bfloat16)
        out.append(Provider(f"sj-{impl}", kind, desc, _sj_runner(impl), dtypes, _sj_hint))
    return out


def interpreted_triton(device) -> bool:
    """Whether 'triton' would run through the Triton interpreter (CPU, TRITON_INTERPRET=1)."""
    return torch.device(device).type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"
