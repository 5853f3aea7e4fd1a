"""Helpers several test files share: a backend's run checked against the float64 oracle
(_reference64.py), the small network of the torch.compile / opcheck tests, and BN statistics
for eval-mode tests. (tests/ is on sys.path: pytest puts it there, and the Triton interpreter
child of test_triton_interpret.py has it on PYTHONPATH.)"""
import math

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import tssd_fast
from tssd_fast import LIFNode, surrogate
from tssd_fast.ops import lif_op
from tssd_fast.ops.config import FLAG_GRAD_V0, LIFConfig
from _reference64 import Neuron, backward, forward

# compute dtype of each storage dtype
CDT = {torch.float64: torch.float64, torch.float32: torch.float32,
       torch.float16: torch.float32, torch.bfloat16: torch.float32}
# Gradients: fp64 / fp32 kernels against a float64 BPTT; fp16 / bf16 results are one rounding
# of an fp32 value, so they may differ from the rounded float64 value by one unit in the last
# place of the storage dtype. (rtol, atol)
GRAD_TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (2e-5, 1e-5),
            torch.float16: (2 ** -10, 2 ** -10), torch.bfloat16: (2 ** -7, 2 ** -7)}


def oracle_input(shape, dtype, noncontig=False) -> torch.Tensor:
    """x [T, *] on the CPU: 1.2 N(0, 1) + 0.4 drawn in float64, rounded to `dtype`;
    noncontig: a permuted view of a draw in the reversed shape."""
    if noncontig:
        x = torch.randn(*reversed(shape), dtype=torch.float64).permute(
            *reversed(range(len(shape))))
    else:
        x = torch.randn(*shape, dtype=torch.float64)
    return (x * 1.2 + 0.4).to(dtype)


def initial_v(n: Neuron, shape, dtype, random: bool) -> torch.Tensor:
    """v0 [*] on the CPU in the compute dtype: 0.5 N(0, 1) drawn in float64, or the rest
    voltage (v_reset; 0 for soft reset)."""
    cdt = CDT[dtype]
    if random:
        return (torch.randn(shape[1:], dtype=torch.float64) * 0.5).to(cdt)
    return torch.full(shape[1:], 0.0 if n.v_reset is None else n.v_reset, dtype=cdt)


def check_against_oracle(n: Neuron, x, v0, xr, v_init, outputs, dtype, store_v_seq: bool):
    """A lif_multistep run against the oracle: spikes and voltages bitwise equal to its forward
    in the compute dtype; the gradients of x and v0 within the dtype's rounding of its float64
    BPTT, for random output gradients.

    x, v0: the CPU input and initial voltage; xr, v_init: the leaves the run got (any device;
    v_init None for the default state); outputs: its (spikes, v_last, v_seq)."""
    spikes, v_last, v_seq = outputs
    T = x.shape[0]
    N = math.prod(x.shape[1:])
    cdt = CDT[dtype]
    assert spikes.dtype == dtype and spikes.shape == x.shape
    assert v_last.dtype == cdt and v_last.shape == x.shape[1:]
    S, H, V = forward(x.reshape(T, N).to(cdt), v0.reshape(N).to(cdt), n, cdt)
    assert torch.equal(spikes.cpu().reshape(T, N).to(cdt), S), "spikes differ from the oracle"
    if T:
        assert torch.equal(v_last.cpu().reshape(N), V[-1]), "v_last differs from the oracle"
    if store_v_seq:
        assert torch.equal(v_seq.cpu().reshape(T, N), V), "v_seq differs from the oracle"
    if x.numel() == 0 and v_init is None:
        return  # nothing requires a gradient path through an empty op
    dev = spikes.device
    gs = torch.randn(x.shape, dtype=torch.float64).to(dtype)
    gvl = torch.randn(x.shape[1:], dtype=torch.float64).to(cdt)
    outs, grads = [spikes, v_last], [gs.to(dev), gvl.to(dev)]
    gvs = None
    if store_v_seq:
        gvs = torch.randn(x.shape, dtype=torch.float64).to(cdt)
        outs.append(v_seq)
        grads.append(gvs.to(dev))
    inputs = [xr] + ([v_init] if v_init is not None else [])
    got = torch.autograd.grad(outs, inputs, grads, allow_unused=True)
    gx_ref, gv0_ref = backward(H, S, n, gs.reshape(T, N), gvl.reshape(N),
                               None if gvs is None else gvs.reshape(T, N))
    rtol, atol = GRAD_TOL[dtype]
    assert got[0].dtype == dtype
    torch.testing.assert_close(got[0].cpu().reshape(T, N).double(), gx_ref.to(dtype).double(),
                               rtol=rtol, atol=atol)
    if v_init is not None:
        ctol = GRAD_TOL[cdt]
        torch.testing.assert_close(got[1].cpu().reshape(N).double(), gv0_ref.to(cdt).double(),
                                   rtol=ctol[0], atol=ctol[1])


def fwd_args(x, v0, hard, surr, store, save, backend):
    """Arguments of the forward op of `backend` (tssd_fast.ops.lif_op.op_overloads): tau 2,
    threshold 1, v_reset 0, no decay_input, alpha 1 (Rect) or 4, no detach_reset."""
    cfg = LIFConfig(2.0, 1.0, 0.0 if hard else None, False, surr, 1.0 if surr == 0 else 4.0,
                    False)
    return (x, v0, 0.0) + cfg.op_args(store, save) + lif_op.op_overloads(backend)[2]


def bwd_args(grad_s, grad_v_seq, grad_v_last, saved, hard, surr, backend, order=(),
             grad_v0=False):
    """Arguments of the backward op of `backend`, for the neuron of fwd_args; grad_v0: ask for
    grad_v0 (FLAG_GRAD_V0), else the op returns it as [0]."""
    cfg = LIFConfig(2.0, 1.0, 0.0 if hard else None, False, surr, 1.0 if surr == 0 else 4.0,
                    False)
    flags = cfg.flags() | (FLAG_GRAD_V0 if grad_v0 else 0)
    return ((grad_s, grad_v_seq, grad_v_last, saved) + cfg.scalars() + (flags, list(order))
            + lif_op.op_overloads(backend)[2])


class TinySNN(nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.lif1 = LIFNode(v_reset=None, decay_input=False, surrogate_function=surrogate.Rect(),
                            step_mode="m", backend=backend)
        self.fc2 = nn.Linear(16, 5)
        self.lif2 = LIFNode(step_mode="m", backend=backend)

    def forward(self, x):  # x [T, B, 12]
        return self.lif2(self.fc2(self.lif1(self.fc1(x)))).mean(0)


def eager_and_compiled(backend, device="cpu"):
    """TinySNN(backend) on one input, run eagerly, then reset and run through
    torch.compile(fullgraph=True). Returns (model, eager output, lif2.v after the eager run,
    eager parameter grads, compiled output, compiled parameter grads)."""
    torch.manual_seed(1)
    model = TinySNN(backend).to(device)
    x = torch.randn(4, 3, 12, device=device) * 2
    eager = model(x)
    v_eager = model.lif2.v
    g_eager = torch.autograd.grad(eager.sum(), list(model.parameters()))
    tssd_fast.reset_net(model)
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x)
    g_comp = torch.autograd.grad(out.sum(), list(model.parameters()))
    return model, eager, v_eager, g_eager, out, g_comp


def eval_with_batch_stats(model, x, T):
    """Eval mode with BN running statistics set from ``x`` (fresh BN stats leave the network silent)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass sets the batch statistics
    model.train()
    with torch.no_grad():
        model(x, T, return_weak=model.weak is not None)
    model.eval()
    with torch.no_grad():
        out = model(x, T)
    assert (out - out[:1]).abs().max() > 0.1, "the network is silent: the test would be vacuous"
    return model


class OpLog(TorchDispatchMode):
    """Records every ATen / custom op that runs under it as (op, args, outputs), backward's
    included (the autograd engine carries the mode to its thread)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.calls.append((func, args, out))
        return out

    def ops(self):
        return [str(func) for func, _, _ in self.calls]
