"""Backward computes grad_v0 only when a v0 tensor needs it (FLAG_GRAD_V0).

A call from the scalar v_init (a fresh neuron, the usual training step after reset()) has no
state tensor to differentiate, so the backward op must not write the N values of grad_v0 (a
fifth of a bf16 T=2 backward's bytes). Checked here through the C++ op's autograd formula on
the CPU, as a user calls it: which flags lif_backward receives, what it returns, and that the
gradients that do flow are unchanged. The kernels' side (a null grad_v0 left untouched) is
checked in test_cuda_bodies_on_cpu.py, test_triton_interpret.py and test_cuda_compile.py.
"""
import pytest
import torch

import tssd_fast
from tssd_fast.ops.config import FLAG_GRAD_V0, PAPER, SPIKINGJELLY_DEFAULT
from _helpers import OpLog, bwd_args, fwd_args
from tssd_fast.ops.lif_op import op_overloads

NEURONS = {"paper": PAPER, "sj": SPIKINGJELLY_DEFAULT}


def _step(cfg, v0_kind, dtype=torch.float32, T=3, shape=(5, 7)):
    """One forward + backward through tssd_fast.lif_multistep (the cpp backend) from the state
    v0_kind: 'scalar' (v_init), 'tensor' (a v0 without grad) or 'grad' (a v0 with grad)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn((T,) + shape, generator=g) * 1.5).to(dtype).requires_grad_()
    v = None
    if v0_kind != "scalar":
        v = torch.randn(shape, generator=g) * 0.5
        v.requires_grad_(v0_kind == "grad")
    with OpLog() as log:
        spikes, v_last = tssd_fast.lif_multistep(x, v, backend="cpp",
                                                 **cfg.neuron_kwargs())[:2]
        (spikes.float() * torch.linspace(-1, 1, spikes.numel()).view_as(spikes)).sum().add(
            v_last.sum()).backward()
    # (flags, grad_v0) of each lif_backward call
    return x, v, [(args[8], out[1]) for func, args, out in log.calls
                  if func is torch.ops.tssd_fast.lif_backward.default]


@pytest.mark.parametrize("neuron", list(NEURONS))
@pytest.mark.parametrize("v0_kind", ["scalar", "tensor", "grad"])
def test_autograd_asks_for_grad_v0_only_when_v0_needs_it(neuron, v0_kind):
    x, v, calls = _step(NEURONS[neuron], v0_kind)
    assert len(calls) == 1
    flags, grad_v0 = calls[0]
    wanted = v0_kind == "grad"
    assert bool(flags & FLAG_GRAD_V0) == wanted
    assert grad_v0.shape == ((5, 7) if wanted else (0,))
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if v is not None:
        assert (v.grad is not None) == wanted


@pytest.mark.parametrize("neuron", list(NEURONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_grad_x_does_not_depend_on_grad_v0(neuron, dtype):
    # the same backward with and without grad_v0: grad_x bit for bit, grad_v0 [0] or [N]
    cfg = NEURONS[neuron]
    hard, surr = cfg.hard_reset, cfg.surrogate_id
    fwd, bwd, _ = op_overloads("cpp")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 4, 5, generator=g).to(dtype)
    saved = fwd(*fwd_args(x, None, hard, surr, False, True, "cpp"))[3]
    gs = torch.randn(9, 4, 5, generator=g).to(dtype)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    gvl = torch.randn(4, 5, generator=g, dtype=acc)
    gx0, gv0_none = bwd(*bwd_args(gs, None, gvl, saved, hard, surr, "cpp"))
    gx1, gv0 = bwd(*bwd_args(gs, None, gvl, saved, hard, surr, "cpp", grad_v0=True))
    assert torch.equal(gx0, gx1)
    assert gv0_none.shape == (0,) and gv0_none.dtype == acc
    assert gv0.shape == (4, 5) and gv0.dtype == acc and torch.isfinite(gv0).all()


@pytest.mark.parametrize("T", [0, 4])
def test_empty_inputs(T):
    # T = 0 or N = 0: grad_v0 is grad_v_last (or zeros) when asked for, [0] otherwise
    fwd, bwd, _ = op_overloads("cpp")
    for shape in ((T, 3), (T, 0)):
        x = torch.randn(shape)
        saved = fwd(*fwd_args(x, None, False, 0, False, True, "cpp"))[3]
        gvl = torch.randn(shape[1:])
        if T == 0:
            _, gv0 = bwd(*bwd_args(torch.randn(shape), None, gvl, saved, False, 0, "cpp",
                                   grad_v0=True))
            assert torch.equal(gv0, gvl)
            _, gv0 = bwd(*bwd_args(torch.randn(shape), None, None, saved, False, 0, "cpp",
                                   grad_v0=True))
            assert torch.equal(gv0, torch.zeros(shape[1:]))
        _, gv0 = bwd(*bwd_args(torch.randn(shape), None, gvl, saved, False, 0, "cpp"))
        assert gv0.shape == (0,)


def test_channels_last_input():
    # a permuted memory order: grad_x comes back in x's layout with or without grad_v0
    fwd, bwd, _ = op_overloads("cpp")
    x = torch.randn(3, 2, 4, 5, 6).permute(0, 1, 3, 4, 2)  # time outermost, channels last
    order = tssd_fast.ops.config.memory_order(x)
    assert order
    saved = fwd(*fwd_args(x, None, False, 0, False, True, "cpp"))[3]
    gs = torch.empty_like(x).normal_()  # x's strides
    gx0, gv0_none = bwd(*bwd_args(gs, None, None, saved, False, 0, "cpp", order=order))
    gx1, gv0 = bwd(*bwd_args(gs, None, None, saved, False, 0, "cpp", order=order,
                             grad_v0=True))
    assert torch.equal(gx0, gx1) and gx0.stride() == gx1.stride() and gx0.shape == x.shape
    assert gv0_none.shape == (0,) and gv0.shape == x.shape[1:]
