"""The torch.library registration: opcheck of both ops, torch.compile(fullgraph=True) with
LIFNode inside, and the autograd formula of the op against the oracle."""
import pytest
import torch

import tssd_fast
from _helpers import eager_and_compiled, fwd_args

CPU_FUSED = [b for b in tssd_fast.available_backends("cpu") if b != "torch"]


@pytest.mark.parametrize("backend", CPU_FUSED)
@pytest.mark.parametrize("hard,surr,store", [(False, 0, False), (True, 1, True), (False, 2, True)])
def test_opcheck_forward(backend, hard, surr, store):
    x = torch.randn(5, 7, requires_grad=True)
    v0 = torch.randn(7, requires_grad=True)
    torch.library.opcheck(torch.ops.tssd_fast.lif_forward.default,
                          fwd_args(x, v0, hard, surr, store, True, backend))
    torch.library.opcheck(torch.ops.tssd_fast.lif_forward.default,
                          fwd_args(x.detach(), v0.detach(), hard, surr, store, False, backend))


@pytest.mark.parametrize("backend", CPU_FUSED)
def test_opcheck_backward(backend):
    x, v0 = torch.randn(9, 6), torch.randn(6)
    for hard, surr in [(False, 0), (True, 0), (True, 2)]:
        _, _, _, h, bits = torch.ops.tssd_fast.lif_forward(
            *fwd_args(x, v0, hard, surr, False, True, backend))
        args = (torch.randn(9, 6), torch.randn(9, 6), torch.randn(6), h, bits, 2.0, 1.0, 0.0,
                hard, False, surr, 1.0, False, backend)
        torch.library.opcheck(torch.ops.tssd_fast.lif_backward.default, args)
        args = args[:1] + (None, None) + args[3:]
        torch.library.opcheck(torch.ops.tssd_fast.lif_backward.default, args)


@pytest.mark.parametrize("backend", CPU_FUSED)
def test_torch_compile_fullgraph(backend):
    model, eager, v_eager, g_eager, out, g_comp = eager_and_compiled(backend)
    assert torch.equal(out, eager)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert torch.equal(model.lif2.v, v_eager)  # state written back by the compiled graph
    assert model.lif1.v.shape == (3, 16)
