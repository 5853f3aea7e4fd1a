"""Drop-in parity with SpikingJelly's own LIFNode in a small SpikingJelly conv net: same spikes,
same gradients of inputs and weights, multi-step and single-step; SpikingJelly's reset_net and
set_step_mode drive tssd_fast.LIFNode. Skipped (with the reason) when spikingjelly is absent."""
import copy

import pytest
import torch
from torch import nn

import tssd_fast

sj = pytest.importorskip("spikingjelly.activation_based",
                         reason="spikingjelly not importable: bash scripts/install_compare.sh "
                                "(spikingjelly==2.0.0 --no-deps, loguru, packaging)")
from spikingjelly.activation_based import functional as sjf  # noqa: E402
from spikingjelly.activation_based import layer, neuron, surrogate  # noqa: E402

CONFIGS = [
    dict(tau=2.0, decay_input=False, v_reset=None, surrogate_function=surrogate.Rect(),
         detach_reset=False),                                       # the TSSD paper's neuron
    dict(tau=2.0, decay_input=True, v_reset=0.0, surrogate_function=surrogate.Sigmoid(),
         detach_reset=False),                                       # SpikingJelly's default
    dict(tau=3.0, decay_input=True, v_threshold=0.5, v_reset=-0.1, surrogate_function=surrogate.ATan(),
         detach_reset=True),
]


def sj_net(cfg):
    net = nn.Sequential(
        layer.Conv2d(2, 6, 3, padding=1), layer.BatchNorm2d(6), neuron.LIFNode(**cfg),
        layer.MaxPool2d(2), layer.Flatten(), layer.Linear(6 * 4 * 4, 5), neuron.LIFNode(**cfg))
    nn.init.normal_(net[5].weight, std=1.2)  # strong enough that the output layer spikes
    return net


def swap_neurons(net, backend):
    ours = copy.deepcopy(net)
    for i, m in enumerate(ours):
        if isinstance(m, neuron.LIFNode):
            ours[i] = tssd_fast.LIFNode(m.tau, m.decay_input, m.v_threshold, m.v_reset,
                                        m.surrogate_function, m.detach_reset, m.step_mode,
                                        backend)
    return ours


def run(net, x, mode):
    sjf.reset_net(net)
    if mode == "m":
        out = net(x)
    else:
        out = torch.stack([net(xt) for xt in x])
    (gx,) = torch.autograd.grad(out, x, torch.ones_like(out) * 0.3, retain_graph=True)
    gw = torch.autograd.grad(out, [p for p in net.parameters()], torch.ones_like(out) * 0.3)
    return out.detach(), gx, gw


@pytest.mark.parametrize("backend", tssd_fast.available_backends("cpu"))
@pytest.mark.parametrize("mode", ["m", "s"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["paper", "sj-default", "atan-hard-detach"])
def test_same_spikes_and_gradients_as_spikingjelly(backend, mode, cfg):
    torch.manual_seed(0)
    net = sj_net(cfg)
    sjf.set_step_mode(net, mode)
    ours = swap_neurons(net, backend)
    sjf.set_step_mode(ours, mode)  # SpikingJelly's own helper sets our nodes' step_mode too
    assert all(m.step_mode == mode for m in ours if isinstance(m, tssd_fast.LIFNode))
    x = (torch.randn(4, 3, 2, 8, 8) * 2).requires_grad_()
    ref_out, ref_gx, ref_gw = run(net, x, mode)
    out, gx, gw = run(ours, x, mode)
    assert ref_out.sum() > 0, "test input too weak: no output spikes"
    assert torch.equal(out, ref_out)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-5, atol=1e-6)
    for a, b in zip(gw, ref_gw):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------- SpikingJelly's own utilities
def test_detach_net_gives_truncated_bptt_like_spikingjelly():
    # functional.detach_net calls m.detach() on every stateful module: a second backward after
    # it must work, and the gradients must match SpikingJelly's LIFNode chunk by chunk.
    cfg = CONFIGS[1]
    torch.manual_seed(0)
    x = torch.randn(6, 4, 12) * 2
    results = []
    for make in (lambda: neuron.LIFNode(**cfg, step_mode="m"),
                 lambda: tssd_fast.LIFNode(**cfg, step_mode="m", backend="cpp")):
        torch.manual_seed(1)
        net = nn.Sequential(nn.Linear(12, 8), make())
        grads = []
        for chunk in x.split(2):  # three chunks of 2 steps, state carried, graph cut between
            net(chunk).sum().backward()
            grads.append(net[0].weight.grad.clone())
            net.zero_grad()
            sjf.detach_net(net)
        results.append(grads)
    for g_sj, g_ours in zip(*results):
        torch.testing.assert_close(g_ours, g_sj, rtol=1e-5, atol=1e-6)


def test_op_counter_counts_the_fused_op():
    from spikingjelly.activation_based import op_counter
    from tssd_fast.counting import flop_rules, memory_access_rules
    T, N = 4, 30
    x = torch.randn(T, N, requires_grad=True)
    node = tssd_fast.LIFNode(v_reset=None, decay_input=False, step_mode="m", backend="cpp",
                             surrogate_function=tssd_fast.surrogate.Rect())
    flops = op_counter.FlopCounter(extra_rules=flop_rules())
    mem = op_counter.MemoryAccessCounter(extra_rules=memory_access_rules())
    with op_counter.DispatchCounterMode([flops, mem], strict=True):  # strict: every op has a rule
        node(x).sum().backward()  # (its module tracker needs a scalar's backward)
    counted = flops.get_total()
    # forward 8 per neuron-step (soft reset); backward from the window bits: 1 + 2 + 3 + 1 + 1;
    # plus what SpikingJelly's own rules count for sum() and its backward
    assert (8 + 8) * T * N <= counted < (8 + 8 + 4) * T * N, counted
    fwd_only = op_counter.FlopCounter(extra_rules=flop_rules())
    with op_counter.DispatchCounterMode([fwd_only], strict=True), torch.no_grad():
        node.reset()
        node(x)
    assert fwd_only.get_total() == 8 * T * N
    # bytes: forward reads x, writes spikes, v_last and the bits; backward reads grad_s and
    # the bits, writes grad_x (4-byte floats, ceil(T/8) x N bytes of bits)
    assert mem.get_total() >= (4 * T * N) * 4 + 4 * N + 2 * N
