"""The torch.library registration: opcheck of both ops, torch.compile(fullgraph=True) with
LIFNode inside, and the autograd formula of the op against the oracle."""
import pytest
import torch
from torch import nn

import tssd_fast
from tssd_fast import LIFNode, surrogate

CPU_FUSED = [b for b in tssd_fast.available_backends("cpu") if b != "torch"]


def _fwd_args(x, v0, hard, surr, store, save, backend):
    return (x, v0, 2.0, 1.0, 0.0, hard, False, surr, 1.0 if surr == 0 else 4.0, False, store,
            save, backend)


@pytest.mark.parametrize("backend", CPU_FUSED)
@pytest.mark.parametrize("hard,surr,store", [(False, 0, False), (True, 1, True), (False, 2, True)])
def test_opcheck_forward(backend, hard, surr, store):
    x = torch.randn(5, 7, requires_grad=True)
    v0 = torch.randn(7, requires_grad=True)
    torch.library.opcheck(torch.ops.tssd_fast.lif_forward.default,
                          _fwd_args(x, v0, hard, surr, store, True, backend))
    torch.library.opcheck(torch.ops.tssd_fast.lif_forward.default,
                          _fwd_args(x.detach(), v0.detach(), hard, surr, store, False, backend))


@pytest.mark.parametrize("backend", CPU_FUSED)
def test_opcheck_backward(backend):
    x, v0 = torch.randn(9, 6), torch.randn(6)
    for hard, surr in [(False, 0), (True, 0), (True, 2)]:
        _, _, _, h, bits = torch.ops.tssd_fast.lif_forward(
            *_fwd_args(x, v0, hard, surr, False, True, backend))
        args = (torch.randn(9, 6), torch.randn(9, 6), torch.randn(6), h, bits, 2.0, 1.0, 0.0,
                hard, False, surr, 1.0, False, backend)
        torch.library.opcheck(torch.ops.tssd_fast.lif_backward.default, args)
        args = args[:1] + (None, None) + args[3:]
        torch.library.opcheck(torch.ops.tssd_fast.lif_backward.default, args)


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


@pytest.mark.parametrize("backend", CPU_FUSED)
def test_torch_compile_fullgraph(backend):
    torch.manual_seed(1)
    model = TinySNN(backend)
    x = torch.randn(4, 3, 12) * 2
    eager = model(x)
    v_eager = model.lif2.v
    g_eager = torch.autograd.grad(eager.sum(), list(model.parameters()))
    tssd_fast.reset_net(model)
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x)
    g_comp = torch.autograd.grad(out.sum(), list(model.parameters()))
    assert torch.equal(out, eager)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert torch.equal(model.lif2.v, v_eager)  # state written back by the compiled graph
    assert model.lif1.v.shape == (3, 16)
