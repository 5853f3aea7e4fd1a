"""A whole TSSD training step captured in a CUDA graph (tssd_fast.train.cuda_graph.GraphedStep)
gives the loss, gradients and weights of the same step run eagerly (needs a CUDA device); its
static inputs are copied into, never rebound."""
import copy

import pytest
import torch

from tssd_fast.distill import make_method
from tssd_fast.models import build_model
from tssd_fast.train.cuda_graph import GraphedStep

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (torch.cuda.is_available() is False)")


def _net(backend):
    torch.manual_seed(0)
    return build_model("vgg9", backend=backend, input_size=32, num_classes=10,
                       width=0.25).cuda().train()


@needs_cuda
@pytest.mark.parametrize("backend", ["cuda", "torch"])
def test_replayed_step_matches_eager(backend):
    torch.backends.cudnn.deterministic = True  # the same convolution kernels in both runs
    try:
        a = _net(backend)
        b = copy.deepcopy(a)
        opt_a = torch.optim.SGD(a.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        opt_b = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        method = make_method("tssd", T=2, T_teacher=4)
        g = torch.Generator(device="cuda").manual_seed(1)
        batches = [(torch.randn(8, 3, 32, 32, device="cuda", generator=g),
                    torch.randint(0, 10, (8,), device="cuda", generator=g)) for _ in range(2)]
        x, y = (t.clone() for t in batches[0])  # the graph's static inputs

        graphed = GraphedStep(lambda: method.step(b, x, y)[0], opt_b, static_inputs=(x, y),
                              warmup=2)

        def eager(xb, yb):
            loss = method.step(a, xb, yb)[0]
            opt_a.zero_grad(set_to_none=True)
            loss.backward()
            opt_a.step()
            return loss

        # the first call warms up with 2 eager steps on the static batch, then captures and
        # replays once: 3 steps on batch 0
        loss_b = graphed().clone()
        for _ in range(3):
            loss_a = eager(*batches[0])
        torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
        # a replay on a new batch
        graphed.copy_inputs(*batches[1])
        loss_b = graphed().clone()
        loss_a = eager(*batches[1])
        assert graphed.captures == 1
        torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
        for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
            torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-6, msg=name)
            torch.testing.assert_close(pb, pa, rtol=1e-5, atol=1e-6, msg=name)
        assert loss_b.item() > 0 and any(p.grad.abs().sum() > 0 for p in b.parameters())
        # a new learning rate is a Python number baked into the graph: captured again
        for group in opt_b.param_groups:
            group["lr"] = 0.01
        graphed()
        assert graphed.captures == 2
    finally:
        torch.backends.cudnn.deterministic = False


def test_static_shapes_are_enforced():
    x = torch.zeros(4, 3)
    graphed = GraphedStep(lambda: x.sum(), torch.optim.SGD([torch.zeros(1, requires_grad=True)],
                                                            lr=0.1), static_inputs=(x,))
    graphed.copy_inputs(torch.ones(4, 3))
    assert torch.equal(x, torch.ones(4, 3))  # copied into the captured tensor, not rebound
    with pytest.raises(ValueError, match="static shapes"):
        graphed.copy_inputs(torch.zeros(3, 3))
