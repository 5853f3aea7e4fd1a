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


def _setup(backend, device):
    torch.manual_seed(0)
    a = build_model("vgg9", backend=backend, input_size=32, num_classes=10,
                    width=0.25).to(device).train()
    b = copy.deepcopy(a)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    method = make_method("tssd", T=2, T_teacher=4)
    g = torch.Generator(device=device).manual_seed(1)
    batches = [(torch.randn(8, 3, 32, 32, device=device, generator=g),
                torch.randint(0, 10, (8,), device=device, generator=g)) for _ in range(3)]
    return a, b, opt_a, opt_b, method, batches


def _check_graphed_equals_eager(backend, device, capture, exact):
    """Three steps through GraphedStep(restore=...) against three eager steps from the same
    start: the warm-up is undone, so both train the same steps; then a learning-rate change
    captures again, and the steps still agree."""
    a, b, opt_a, opt_b, method, batches = _setup(backend, device)
    x, y = (t.clone() for t in batches[0])  # the graph's static inputs
    graphed = GraphedStep(lambda: method.step(b, x, y)[0], opt_b, static_inputs=(x, y),
                          warmup=2, restore=b, capture=capture)

    def eager(xb, yb):
        loss = method.step(a, xb, yb)[0]
        opt_a.zero_grad(set_to_none=True)
        loss.backward()
        opt_a.step()
        return loss

    def same(u, v, **tol):
        if exact:
            assert torch.equal(u, v), (u - v).abs().max()
        else:
            torch.testing.assert_close(u, v, **tol)

    for i, (xb, yb) in enumerate(batches + batches[:1]):
        if i == 3:  # a new learning rate is a Python number baked into the graph
            for group in opt_a.param_groups + opt_b.param_groups:
                group["lr"] = 0.01
        graphed.copy_inputs(xb, yb)
        loss_b = graphed().detach().clone()
        loss_a = eager(xb, yb).detach()
        same(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    assert graphed.captures == 2
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        same(pb.grad, pa.grad, rtol=1e-4, atol=1e-6)
        same(pb, pa, rtol=1e-5, atol=1e-6)
    for (name, ba), bb in zip(a.named_buffers(), b.buffers()):
        same(bb, ba, rtol=1e-5, atol=1e-6)
    assert loss_b.item() > 0 and any(p.grad.abs().sum() > 0 for p in b.parameters())


def test_warm_up_is_undone_and_steps_match_eager_on_cpu():
    # capture=False: the same warm-up, restore and re-capture logic without a graph, bitwise
    _check_graphed_equals_eager("cpp", "cpu", capture=False, exact=True)


def test_restore_needs_sgd_without_dampening():
    p = torch.zeros(1, requires_grad=True)
    with pytest.raises(ValueError, match="SGD"):
        GraphedStep(lambda: p.sum(), torch.optim.AdamW([p]), restore=torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="dampening"):
        GraphedStep(lambda: p.sum(), torch.optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.5),
                    restore=torch.nn.Linear(1, 1))


@needs_cuda
@pytest.mark.parametrize("backend", ["cuda", "torch"])
def test_replayed_step_matches_eager(backend):
    torch.backends.cudnn.deterministic = True  # the same convolution kernels in both runs
    try:
        _check_graphed_equals_eager(backend, "cuda", capture=True, exact=False)
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
