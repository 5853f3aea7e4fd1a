"""The torch.library registration: opcheck of both ops, torch.compile(fullgraph=True) with
LIFNode inside, and the autograd formula of the op against the oracle."""
import pytest
import torch

import tssd_fast
from _helpers import bwd_args, eager_and_compiled, fwd_args
from tssd_fast.ops.lif_op import op_overloads

CPU_FUSED = [b for b in tssd_fast.available_backends("cpu") if b != "torch"]


@pytest.mark.parametrize("backend", CPU_FUSED)
@pytest.mark.parametrize("hard,surr,store", [(False, 0, False), (True, 1, True), (False, 2, True)])
def test_opcheck_forward(backend, hard, surr, store):
    x = torch.randn(5, 7, requires_grad=True)
    v0 = torch.randn(7, requires_grad=True)
    fwd = op_overloads(backend)[0]
    torch.library.opcheck(fwd, fwd_args(x, v0, hard, surr, store, True, backend))
    torch.library.opcheck(fwd, fwd_args(x.detach(), v0.detach(), hard, surr, store, False,
                                        backend))
    # the scalar start state (no v0 tensor) and a channels_last input
    torch.library.opcheck(fwd, fwd_args(x, None, hard, surr, store, True, backend))
    x4 = torch.randn(3, 2, 4, 5, 6).permute(0, 1, 3, 4, 2).requires_grad_()
    torch.library.opcheck(fwd, fwd_args(x4, None, hard, surr, store, True, backend))


@pytest.mark.parametrize("backend", CPU_FUSED)
def test_opcheck_backward(backend):
    x, v0 = torch.randn(9, 6), torch.randn(6)
    fwd, bwd, _ = op_overloads(backend)
    for hard, surr in [(False, 0), (True, 0), (True, 2)]:
        saved = fwd(*fwd_args(x, v0, hard, surr, False, True, backend))[3]
        for grad_v0 in (False, True):  # grad_v0 [0] (not asked for) or [6]
            args = bwd_args(torch.randn(9, 6), torch.randn(9, 6), torch.randn(6), saved, hard,
                            surr, backend, grad_v0=grad_v0)
            torch.library.opcheck(bwd, args)
            args = args[:1] + (None, None) + args[3:]
            torch.library.opcheck(bwd, args)


@pytest.mark.parametrize("backend", CPU_FUSED)
def test_torch_compile_fullgraph(backend):
    model, eager, v_eager, g_eager, out, g_comp = eager_and_compiled(backend)
    assert torch.equal(out, eager)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert torch.equal(model.lif2.v, v_eager)  # state written back by the compiled graph
    assert model.lif1.v.shape == (3, 16)
