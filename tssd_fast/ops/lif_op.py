"""The LIF op as Python sees it: fake implementations, the Python-launcher op, and `run`, the
one function the module layer (LIFNode) and the functional form call.

    tssd_fast::lif_forward / lif_backward        schema, autograd and the CPU / CUDA kernels in
                                                 C++ (csrc/lif_op.cpp); fakes here
    tssd_fast::lif_forward_py / lif_backward_py  the same contract plus a `backend` argument,
                                                 for the Python launchers (triton, cupy), with
                                                 torch.library's Python autograd

Contract (both ops, csrc/lif_host.h): x [T, *] in any layout; v0 [*] or None (then every neuron
starts at the scalar v_init); outputs spikes [T, *] (x's dtype), v_last [*], v_seq [T, *] or [0]
(compute dtype), with x's memory order when time is its outermost dim; `saved` is H [T, N], the
Rect window bits [ceil(T/8), N] uint8, or [0] when nothing is saved. Backward returns grad_x
[T, *] and grad_v0: [*] with FLAG_GRAD_V0, else [0] (the autograd formulas ask for it only when
a v0 tensor needs a gradient). Flags: ops.config.
"""
import math
from typing import List, Optional, Tuple

import torch

from . import _alloc, _ext, registry
from .backends import CPP_OP, REFERENCE
from .config import (FLAG_GRAD_V0, FLAG_SAVE, FLAG_STORE_V_SEQ, LIFConfig, config, inverse,
                     memory_order, permuted, tail_order, window_bits_saved, window_rows)
from .reference import compute_dtype, lif_multistep_ref

Tensors4 = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def check_state(v0: torch.Tensor, x: torch.Tensor) -> None:
    """The state must fit the input: the same errors as the C++ op (csrc/lif_host.h)."""
    if v0.shape != x.shape[1:]:
        raise RuntimeError(
            f"the neuron state has shape {list(v0.shape)} but the input needs "
            f"{list(x.shape[1:])} (input {list(x.shape)}, [T, *]): call reset() on the neuron "
            f"(or tssd_fast.reset_net(model)) before feeding a new shape")
    if v0.device != x.device:
        raise RuntimeError(f"the neuron state is on {v0.device} but the input is on {x.device}: "
                           f"call reset() after moving the model")


def _forward_outputs(x, flags, new_empty):
    """(order, x in memory order, flat outputs, views of them in x's layout) with the shapes and
    dtypes of csrc/lif_host.h; new_empty(shape, dtype) allocates. Shared by the fake and the
    Python-launcher implementations."""
    order = memory_order(x)
    xp = permuted(x, order)
    T, N = xp.shape[0], math.prod(xp.shape[1:])
    cdt = compute_dtype(x.dtype)
    save = bool(flags & FLAG_SAVE)
    bits = save and window_bits_saved(flags)
    flat = {"spikes": new_empty(xp.shape, x.dtype), "v_last": new_empty(xp.shape[1:], cdt),
            "v_seq": new_empty(xp.shape, cdt) if flags & FLAG_STORE_V_SEQ else None,
            "h": new_empty((T, N), cdt) if save and not bits else None,
            "bits": new_empty((window_rows(T), N), torch.uint8) if bits else None}
    spikes, v_last, v_seq = flat["spikes"], flat["v_last"], flat["v_seq"]
    if order:  # computed in memory order: viewed back in the input's dim order
        spikes, v_last = _in_input_order(spikes, v_last, order)
        v_seq = None if v_seq is None else permuted(v_seq, inverse(order))
    if v_seq is None:
        v_seq = x.new_empty((0,), dtype=cdt)
    saved = flat["bits"] if bits else (flat["h"] if save else x.new_empty((0,), dtype=cdt))
    return order, xp, flat, (spikes, v_last, v_seq, saved)


def _in_input_order(seq: torch.Tensor, state: torch.Tensor, order: List[int]):
    """A [T, *] and a [*] result computed in memory order `order`, viewed back in the input's
    dim order (the inverse permutations; [] leaves them as they are)."""
    return permuted(seq, inverse(order)), permuted(state, inverse(tail_order(order)))


def _fake_forward(x, v0, v_init, tau, v_threshold, v_reset, alpha, flags, backend=None):
    return _forward_outputs(x, flags, lambda s, d: x.new_empty(s, dtype=d))[3]


def _fake_backward(grad_s, grad_v_seq, grad_v_last, saved, tau, v_threshold, v_reset, alpha,
                   flags, order, backend=None):
    order = list(order)
    gp = permuted(grad_s, order)
    cdt = compute_dtype(grad_s.dtype)
    if not flags & FLAG_GRAD_V0:
        return (permuted(grad_s.new_empty(gp.shape), inverse(order)),
                grad_s.new_empty((0,), dtype=cdt))
    return _in_input_order(grad_s.new_empty(gp.shape), grad_s.new_empty(gp.shape[1:], dtype=cdt),
                           order)


def _fake_pack_spikes(x, bits, divisor):
    return x.new_empty((bits, (x.numel() + 7) // 8), dtype=torch.uint8)


def _fake_unpack_spikes(packed, size, stride, dtype, bits, divisor):
    return packed.new_empty_strided(size, stride, dtype=dtype)


_fakes_registered = []


def register_fakes() -> None:
    """Register the fakes of the C++ op (called once the compiled module has defined it)."""
    if not _fakes_registered and hasattr(torch.ops.tssd_fast, "lif_forward"):
        torch.library.register_fake("tssd_fast::lif_forward")(_fake_forward)
        torch.library.register_fake("tssd_fast::lif_backward")(_fake_backward)
        # the spike-input layers' packing (csrc/spike_pack_host.h)
        torch.library.register_fake("tssd_fast::pack_spikes")(_fake_pack_spikes)
        torch.library.register_fake("tssd_fast::unpack_spikes")(_fake_unpack_spikes)
        _fakes_registered.append(True)


# ------------------------------------------------------------------------------------------
# The op for Python launchers (triton, cupy): the same contract, computed in Python.
# ------------------------------------------------------------------------------------------

@torch.library.custom_op("tssd_fast::lif_forward_py", mutates_args=(),
                         device_types=("cpu", "cuda"))
def lif_forward_py(x: torch.Tensor, v0: Optional[torch.Tensor], v_init: float, tau: float,
                   v_threshold: float, v_reset: float, alpha: float, flags: int,
                   backend: str) -> Tensors4:
    """lif_forward through the Python launcher of `backend` (see the module docstring)."""
    return _py_forward(x, v0, v_init, tau, v_threshold, v_reset, alpha, flags, backend)


def _py_forward(x, v0, v_init, tau, v_threshold, v_reset, alpha, flags, backend) -> Tensors4:
    if not x.is_floating_point():
        raise TypeError(f"the LIF input must be floating point, got {x.dtype}")
    order, xp, flat, views = _forward_outputs(
        x, flags, lambda s, d: _alloc.new_empty(s, d, x.device))
    xc = xp.contiguous()
    T, N = xc.shape[0], flat["v_last"].numel()
    v0c = None  # None: the kernels start every neuron at the scalar v_init
    if v0 is not None:
        check_state(v0, x)
        v0c = permuted(v0, tail_order(order)).to(flat["v_last"].dtype).contiguous().view(N)
    if T == 0 or N == 0:
        flat["v_last"].copy_(v0c.view_as(flat["v_last"])) if v0c is not None \
            else flat["v_last"].fill_(v_init)
    else:
        def flat2(t):
            return None if t is None else t.view(T, N)
        registry.launcher(backend).forward(
            xc.view(T, N), v0c, flat2(flat["spikes"]), flat["v_last"].view(N),
            flat2(flat["v_seq"]), flat["h"], flat["bits"],
            config(tau, v_threshold, v_reset, alpha, flags), v_init)
    return views


lif_forward_py.register_fake(_fake_forward)


@torch.library.custom_op("tssd_fast::lif_backward_py", mutates_args=(),
                         device_types=("cpu", "cuda"))
def lif_backward_py(grad_s: torch.Tensor, grad_v_seq: Optional[torch.Tensor],
                    grad_v_last: Optional[torch.Tensor], saved: torch.Tensor, tau: float,
                    v_threshold: float, v_reset: float, alpha: float, flags: int,
                    order: List[int], backend: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """lif_backward through the Python launcher of `backend`."""
    return _py_backward(grad_s, grad_v_seq, grad_v_last, saved, tau, v_threshold, v_reset, alpha,
                        flags, order, backend)


def _py_backward(grad_s, grad_v_seq, grad_v_last, saved, tau, v_threshold, v_reset, alpha, flags,
                 order, backend):
    order = list(order)
    cdt = compute_dtype(grad_s.dtype)
    gs = permuted(grad_s, order).contiguous()
    shape = gs.shape
    T, N = shape[0], math.prod(shape[1:])
    grad_x = _alloc.new_empty((T, N), gs.dtype, gs.device)  # flat: viewed as `shape` below
    want_gv0 = bool(flags & FLAG_GRAD_V0)
    grad_v0 = _alloc.new_empty((N,), cdt, gs.device) if want_gv0 else None
    gvl = None
    if grad_v_last is not None:
        gvl = permuted(grad_v_last, tail_order(order)).to(cdt).contiguous().view(N)
    if T == 0 or N == 0:
        if want_gv0:
            grad_v0.copy_(gvl) if gvl is not None else grad_v0.zero_()
    else:
        cfg = config(tau, v_threshold, v_reset, alpha, flags)
        gvs = None
        if grad_v_seq is not None and grad_v_seq.numel():
            gvs = permuted(grad_v_seq, order).to(cdt).contiguous().view(T, N)
        bits = saved if window_bits_saved(flags) else None
        registry.launcher(backend).backward(
            gs.view(T, N), gvs, gvl, None if bits is not None else saved.view(T, N), bits,
            grad_x, grad_v0, cfg)
    if not want_gv0:
        return permuted(grad_x.view(shape), inverse(order)), gs.new_empty((0,), dtype=cdt)
    grad_x, grad_v0 = grad_x.view(shape), grad_v0.view(shape[1:])
    return _in_input_order(grad_x, grad_v0, order) if order else (grad_x, grad_v0)


lif_backward_py.register_fake(_fake_backward)


def _setup_context(ctx, inputs, output):
    x, v0, _, tau, v_threshold, v_reset, alpha, flags, backend = inputs
    ctx.has_v0 = v0 is not None  # no gradient for a scalar v_init
    ctx.args = (tau, v_threshold, v_reset, alpha, flags)
    ctx.backend = backend
    ctx.order = memory_order(x)
    ctx.x_meta = (x.shape, x.dtype)
    ctx.save_for_backward(output[3])
    ctx.mark_non_differentiable(output[3])
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_s, grad_v_last, grad_v_seq, _grad_saved, backward_fn=None):
    (saved,) = ctx.saved_tensors
    shape, dtype = ctx.x_meta
    if saved.numel() == 0 and math.prod(shape) > 0:
        raise RuntimeError("tssd_fast::lif_forward_py ran without the save flag but a gradient "
                           "was requested: set FLAG_SAVE when a graph is recorded")
    if grad_s is None:  # only v_last / v_seq were used downstream
        like = grad_v_last if grad_v_last is not None else grad_v_seq
        grad_s = torch.zeros(shape, dtype=dtype, device=like.device)
    gv0 = ctx.has_v0 and ctx.needs_input_grad[1]  # no gradient for a scalar v_init
    tau, v_threshold, v_reset, alpha, flags = ctx.args
    grad_x, grad_v0 = (backward_fn or lif_backward_py)(
        grad_s, grad_v_seq, grad_v_last, saved, tau, v_threshold, v_reset, alpha,
        flags | FLAG_GRAD_V0 if gv0 else flags, ctx.order, ctx.backend)
    return (grad_x, grad_v0 if gv0 else None) + (None,) * 7


lif_forward_py.register_autograd(_backward, setup_context=_setup_context)


class _PyLauncherLIF(torch.autograd.Function):
    """The eager path of the Python-launcher backends: the implementation and autograd formula
    of tssd_fast::lif_forward_py, without torch.library's per-call wrapper (tens of µs per call,
    the host time a GPU step pays per neuron). torch.compile traces the op instead."""

    @staticmethod
    def forward(ctx, x, v0, v_init, tau, v_threshold, v_reset, alpha, flags, backend):
        inputs = (x, v0, v_init, tau, v_threshold, v_reset, alpha, flags, backend)
        outs = _py_forward(*inputs)
        _setup_context(ctx, inputs, outs)
        return outs

    @staticmethod
    def backward(ctx, grad_s, grad_v_last, grad_v_seq, grad_saved):
        return _backward(ctx, grad_s, grad_v_last, grad_v_seq, grad_saved, _py_backward)


# ------------------------------------------------------------------------------------------
# The one entry point of the module layer.
# ------------------------------------------------------------------------------------------

def run(backend: str, cfg: LIFConfig, op_args: tuple, x: torch.Tensor, v, store_v_seq: bool,
        surrogate_function=None):
    """Run the neuron over x [T, *] from the state v (a float v_init or a tensor [*]) on the
    resolved `backend`. op_args: cfg.op_args(store_v_seq). Returns (spikes, v_last, v_seq or
    None); voltages in the compute dtype."""
    if isinstance(v, torch.Tensor):
        v0, v_init = v, 0.0
    else:
        v0, v_init = None, float(v)
    if v0 is not None:
        check_state(v0, x)  # in Python: the op's own check is a backstop
    kind = registry.info(backend).kind
    if kind == CPP_OP:
        fwd = traced_forward if torch.compiler.is_compiling() else eager_forward
        spikes, v_last, v_seq, _ = fwd(x, v0, v_init, *op_args)
    elif kind == REFERENCE:
        cdt = compute_dtype(x.dtype)
        if v0 is None:
            v0 = torch.full(x.shape[1:], v_init, dtype=cdt, device=x.device)
        return lif_multistep_ref(x, v0, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_reset,
                                 surrogate_function, cfg.detach_reset, store_v_seq)
    else:
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or (v0 is not None and v0.requires_grad))
        args = op_args[:-1] + (op_args[-1] | FLAG_SAVE,) if needs_grad else op_args
        if torch.compiler.is_compiling():
            spikes, v_last, v_seq, _ = torch.ops.tssd_fast.lif_forward_py.default(
                x, v0, v_init, *args, backend)
        elif not needs_grad:  # nothing to differentiate: no autograd node (~10 µs less)
            spikes, v_last, v_seq, _ = _py_forward(x, v0, v_init, *args, backend)
        else:
            spikes, v_last, v_seq, _ = _PyLauncherLIF.apply(x, v0, v_init, *args, backend)
    return spikes, v_last, (v_seq if store_v_seq else None)


def traced_forward(*args):
    """tssd_fast::lif_forward (the C++ op) as torch.compile traces it. Bound on first use: the
    op exists once the compiled module is loaded, which resolving 'cpp' / 'cuda' does."""
    global traced_forward
    traced_forward = torch.ops.tssd_fast.lif_forward.default
    return traced_forward(*args)


def eager_forward(*args):
    """The same op entered from C++ (tssd_fast._C.lif_forward): for eager calls, ~1 us cheaper
    than torch.ops' boxed call; the dispatcher still picks autograd and the device kernel."""
    global eager_forward
    eager_forward = _ext.cpu_module().lif_forward
    return eager_forward(*args)


def op_overloads(backend: str):
    """(forward op, backward op, trailing args) through which `backend` runs: the C++ op for
    'cpp' / 'cuda', the Python-launcher op (whose last argument is the backend) for 'triton' /
    'cupy'. For tests, benchmarks and direct calls; LIFNode and lif_multistep use run()."""
    if registry.info(backend).kind == CPP_OP:
        registry.runs_on(backend, "cuda" if backend == "cuda" else "cpu")  # loads the module
        return torch.ops.tssd_fast.lif_forward.default, torch.ops.tssd_fast.lif_backward.default, ()
    if registry.info(backend).kind == REFERENCE:
        raise ValueError("the 'torch' backend is not an op: call tssd_fast.lif_multistep")
    return (torch.ops.tssd_fast.lif_forward_py.default,
            torch.ops.tssd_fast.lif_backward_py.default, (backend,))
