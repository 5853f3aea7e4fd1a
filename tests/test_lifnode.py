"""LIFNode, the module layer: state semantics of docs/NEURON.md ('s' and 'm' modes, .v,
.v_seq, reset, reset_net), defaults matching SpikingJelly's LIFNode, every backend."""
import inspect

import pytest
import torch
from torch import nn

import tssd_fast
from tssd_fast import LIFNode, surrogate
from _helpers import OpLog
from _reference64 import Neuron, backward, forward

BACKENDS = tssd_fast.available_backends("cpu")


def test_signature_matches_spikingjelly_lifnode():
    params = list(inspect.signature(LIFNode.__init__).parameters.values())[1:]
    names = [p.name for p in params]
    assert names == ["tau", "decay_input", "v_threshold", "v_reset", "surrogate_function",
                     "detach_reset", "step_mode", "backend", "store_v_seq"]
    d = {p.name: p.default for p in params}
    assert (d["tau"], d["decay_input"], d["v_threshold"], d["v_reset"], d["detach_reset"],
            d["step_mode"], d["backend"], d["store_v_seq"]) == (2.0, True, 1.0, 0.0, False, "s",
                                                                 "auto", False)
    assert isinstance(d["surrogate_function"], surrogate.Sigmoid)
    assert d["surrogate_function"].alpha == 4.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v_reset", [None, 0.0])
def test_single_step_equals_multi_step(backend, v_reset):
    x = torch.randn(6, 3, 4)
    m = LIFNode(v_reset=v_reset, step_mode="m", backend=backend, store_v_seq=True)
    s = LIFNode(v_reset=v_reset, step_mode="s", backend=backend, store_v_seq=True)
    out_m = m(x)
    out_s = torch.stack([s(xt) for xt in x])
    assert torch.equal(out_m, out_s)
    assert torch.equal(m.v, s.v) and torch.equal(m.v_seq, s.v_seq)
    assert m.v_seq.shape == x.shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_step_bptt_through_state(backend):
    # Gradients flow through .v across single-step calls exactly as through a multi-step call.
    n = Neuron(2.0, True, 1.0, 0.0, "ATan", 2.0, False)
    x = torch.randn(5, 17, requires_grad=True)
    node = LIFNode(surrogate_function=surrogate.ATan(), backend=backend)
    out = torch.stack([node(xt) for xt in x])
    g = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, g)
    S, H, _ = forward(x.detach(), torch.zeros(17), n, torch.float32)
    assert torch.equal(out.detach(), S)
    gref, _ = backward(H, S, n, g)
    torch.testing.assert_close(gx.double(), gref, rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_carries_over_until_reset(backend):
    x = torch.randn(8, 10)
    node = LIFNode(step_mode="m", backend=backend)
    full = node(x)
    node.reset()
    assert node.v == 0.0 and node.v_seq is None
    first, second = node(x[:3]), node(x[3:])
    assert torch.equal(torch.cat([first, second]), full)
    net = nn.Sequential(nn.Identity(), node)
    tssd_fast.reset_net(net)
    assert node.v == 0.0
    assert torch.equal(node(x), full)


def test_reset_net_calls_every_reset_getattr_would_find():
    # reset_net skips the attribute lookup for modules that cannot have a `reset`: every way a
    # module can still supply one must be called, as getattr(m, "reset") would find it
    calls = []

    class WithMethod(nn.Module):
        def reset(self):
            calls.append("method")

    class WithGetattr(nn.Module):  # supplies `reset` from its own __getattr__
        def __getattr__(self, name):
            if name == "reset":
                return lambda: calls.append("getattr")
            return super().__getattr__(name)

    class Callable(nn.Module):  # a submodule named `reset` is callable: it is called
        def forward(self):
            calls.append("submodule")

    instance_attr = nn.Identity()
    instance_attr.__dict__["reset"] = lambda: calls.append("instance")
    holder = nn.Module()
    holder.reset = Callable()
    buffer_holder = nn.Module()
    buffer_holder.register_buffer("reset", torch.zeros(1))  # a tensor is not callable: skipped
    net = nn.Sequential(WithMethod(), WithGetattr(), instance_attr, holder, buffer_holder,
                        nn.Linear(2, 2), LIFNode(step_mode="m"))
    tssd_fast.reset_net(net)
    assert sorted(calls) == ["getattr", "instance", "method", "submodule"]
    import tssd_fast.neuron as neuron
    for m in net.modules():  # the same answer as the full lookup, module by module
        assert neuron._reset_of(m) is not None or getattr(m, "reset", None) is None


@pytest.mark.parametrize("neuron", ["paper", "sj"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_training_call_runs_one_op_per_direction(neuron, dtype, layout):
    # a LIFNode training call from a reset state is lif_forward, then lif_backward: no fill,
    # cast or copy around them (each would be another pass over the data on a GPU)
    from tssd_fast.ops.config import PAPER, SPIKINGJELLY_DEFAULT
    cfg = {"paper": PAPER, "sj": SPIKINGJELLY_DEFAULT}[neuron]
    node = LIFNode(step_mode="m", backend="cpp", **cfg.neuron_kwargs())
    x = torch.randn(2 * 3, 4, 5, 6).to(dtype)
    if layout == "channels_last":  # [T*B, C, H, W] in NHWC, viewed as [T, B, C, H, W]
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.view(2, 3, 4, 5, 6).requires_grad_()
    g = torch.randn(x.shape).to(dtype)
    for _ in range(2):  # the second call: plans and constants already made
        node.reset()
        with OpLog() as log:
            (gx,) = torch.autograd.grad(node(x), x, g)
    assert log.ops() == ["tssd_fast.lif_forward.default", "tssd_fast.lif_backward.default"]
    assert gx.stride() == x.stride()


def test_soft_reset_state_starts_at_zero():
    node = LIFNode(v_reset=None)
    assert node.v == 0.0
    node2 = LIFNode(v_reset=-0.5)
    assert node2.v == -0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_shape_change_without_reset_is_an_error(backend):
    node = LIFNode(step_mode="m", backend=backend)
    node(torch.randn(2, 4, 5))
    with pytest.raises(RuntimeError, match="reset"):
        node(torch.randn(2, 3, 5))
    node.reset()
    assert node(torch.randn(2, 3, 5)).shape == (2, 3, 5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes_in_module(backend, dtype):
    node = LIFNode(step_mode="m", backend=backend)
    x = torch.randn(3, 5, dtype=dtype) * 2
    out = node(x)
    assert out.dtype == dtype
    assert node.v.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    S, _, _ = forward(x, torch.zeros(5), Neuron(), node.v.dtype)
    assert torch.equal(out.to(node.v.dtype), S)


def test_backends_agree_bitwise_in_fp32():
    # same operation order in every backend: fp32 spikes and voltages bitwise equal to 'torch'
    x = torch.randn(9, 4, 31) * 1.5
    outs = {}
    for b in BACKENDS:
        node = LIFNode(tau=1.7, v_reset=None, step_mode="m", backend=b, store_v_seq=True,
                       surrogate_function=surrogate.Rect())
        outs[b] = (node(x), node.v_seq)
    for b in BACKENDS:
        assert torch.equal(outs[b][0], outs["torch"][0]) and torch.equal(outs[b][1],
                                                                          outs["torch"][1])


def test_auto_env_override(monkeypatch):
    node = LIFNode(step_mode="m")
    x = torch.randn(2, 3)
    monkeypatch.setenv("TSSD_FAST_BACKEND", "torch")
    called = []
    import tssd_fast.ops.lif_op as F
    orig = F.lif_multistep_ref
    monkeypatch.setattr(F, "lif_multistep_ref", lambda *a, **k: called.append(1) or orig(*a, **k))
    node(x)
    assert called == [1]
    monkeypatch.setenv("TSSD_FAST_BACKEND", "nonsense")
    node.reset()
    node(x)  # the backend was resolved at the first call for this device and dtype
    assert called == [1, 1]
    node = LIFNode(step_mode="m")
    with pytest.raises(ValueError, match="TSSD_FAST_BACKEND=nonsense"):
        node(x)
    monkeypatch.setenv("TSSD_FAST_BACKEND", "cuda")  # names a backend that cannot run here
    node.backend = "auto"  # assigning it resolves again
    with pytest.raises(RuntimeError, match="TSSD_FAST_BACKEND"):
        node(x)


def test_auto_picks_cpp_on_cpu():
    from tssd_fast.ops.registry import resolve_backend
    assert resolve_backend("auto", "cpu", torch.float32) == BACKENDS[0]
    assert BACKENDS[-1] == "torch"


def test_available_backends_reports_only_working_ones():
    assert tssd_fast.available_backends("cpu")[-1] == "torch"
    if not torch.cuda.is_available():
        assert tssd_fast.available_backends("cuda") == []


def test_repr_and_surrogate_submodule():
    node = LIFNode(surrogate_function=surrogate.Rect(alpha=2.0), v_reset=None)
    r = repr(node)
    assert "tau=2.0" in r and "v_reset=None" in r and "Rect(alpha=2.0" in r


@pytest.mark.parametrize("backend", BACKENDS)
def test_channels_last_layout_is_kept_and_results_equal(backend):
    # [T, B, C, H, W] viewed from a channels_last [T*B, C, H, W] tensor: the op runs in that
    # memory order and returns outputs in the same layout; values and gradients are unchanged
    T, B, C, H, W = 3, 2, 5, 4, 3
    base = (torch.randn(T * B, C, H, W) * 1.5).to(memory_format=torch.channels_last)
    x_cl = base.reshape(T, B, C, H, W).requires_grad_()
    assert not x_cl.is_contiguous()
    x_c = x_cl.detach().contiguous().requires_grad_()
    kw = dict(tau=2.0, decay_input=False, v_reset=None, surrogate_function=surrogate.ATan(),
              store_v_seq=True, backend=backend)
    v_init = torch.randn(B, C, H, W) * 0.3
    s_cl, v_cl, vs_cl = tssd_fast.lif_multistep(x_cl, v_init, **kw)
    s_c, v_c, vs_c = tssd_fast.lif_multistep(x_c, v_init, **kw)
    assert torch.equal(s_cl, s_c) and torch.equal(v_cl, v_c) and torch.equal(vs_cl, vs_c)
    if backend != "torch":
        assert s_cl.stride() == x_cl.stride() and vs_cl.stride() == x_cl.stride()
    g = torch.randn(T, B, C, H, W)
    (g_cl,) = torch.autograd.grad((s_cl * g).sum() + v_cl.sum(), x_cl)
    (g_c,) = torch.autograd.grad((s_c * g).sum() + v_c.sum(), x_c)
    assert torch.equal(g_cl, g_c)


def test_env_override_error_names_the_variable(monkeypatch):
    # backend='auto' is what the user already has: the fix is the environment variable
    from tssd_fast.ops.registry import resolve_backend
    monkeypatch.setenv("TSSD_FAST_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="TSSD_FAST_BACKEND=cuda") as e:
        resolve_backend("auto", "cpu", torch.float32)
    assert "unset it" in str(e.value)
    monkeypatch.setenv("TSSD_FAST_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="TSSD_FAST_BACKEND=nonsense"):
        resolve_backend("auto", "cpu", torch.float32)
    # a backend named in the call is the caller's to change: no mention of the variable
    monkeypatch.delenv("TSSD_FAST_BACKEND")
    with pytest.raises(RuntimeError, match="use backend='auto'") as e:
        resolve_backend("cuda", "cpu", torch.float32)
    assert "TSSD_FAST_BACKEND" not in str(e.value)
