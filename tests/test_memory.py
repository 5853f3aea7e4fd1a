"""Training memory (docs/MEMORY.md): spike inputs kept as bits, direct encoding kept once, and
memory='min' (BN inputs recomputed). Every path is compared bit for bit with torch's own layers
(memory='plain'), which keep everything."""
import contextlib
import sys

import pytest
import torch
import torch.nn as nn

from tssd_fast.distill import make_method
from tssd_fast.models import (ConvBN, LeanAvgPool2d, SpikeCode, SpikeConv2d, SpikeLinear, build_model, check_spikes,
                              direct_encode, set_memory_mode)
from tssd_fast.models import spike_layers
from tssd_fast.models.spike_layers import pack_spikes, unpack_spikes

from _helpers import OpLog

pytestmark = pytest.mark.usefixtures("one_thread")

CODES = [SpikeCode(), SpikeCode(3), SpikeCode(4, 4)]


@pytest.fixture(autouse=True)
def _checked():
    check_spikes(True)  # every packed input is verified against its code
    yield
    check_spikes(False)


def _values(code, shape, dtype=torch.float32):
    return torch.randint(0, code.max_count + 1, shape).to(dtype) / code.divisor


@pytest.fixture(params=["compiled", "torch"])
def pack_impl(request, monkeypatch):
    """The compiled pack / unpack ops (csrc/spike_pack.h), or the torch fallback."""
    if request.param == "torch":
        monkeypatch.setitem(spike_layers._OPS, "cpu", False)
    else:
        assert spike_layers._compiled_ops("cpu"), "the compiled CPU extension has no pack op"
    return request.param


@pytest.mark.parametrize("code", CODES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_pack_roundtrip_exact_with_layout(code, dtype, byteorder, monkeypatch, pack_impl):
    monkeypatch.setattr(sys, "byteorder", byteorder)  # the portable path must agree with the fast one
    x = _values(code, (5, 3, 7, 9), dtype)  # 945 values: not a multiple of 8
    for v in (x, x.contiguous(memory_format=torch.channels_last), x.transpose(1, 3), x[:, 1:]):
        packed, strides = pack_spikes(v, code)
        assert packed.dtype == torch.uint8 and packed.shape == (code.bits, (v.numel() + 7) // 8)
        back = unpack_spikes(packed, v.shape, strides, dtype, code)
        assert torch.equal(back, v) and back.dtype == dtype
        if v.is_contiguous() or v.is_contiguous(memory_format=torch.channels_last):
            assert back.stride() == v.stride()
        else:
            assert back.is_contiguous()


@pytest.mark.parametrize("code", CODES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_pack_layout_by_hand(code, dtype, byteorder, monkeypatch, pack_impl):
    """Plane j, byte m, bit i = bit j of the code k = x * divisor at element 8 m + i."""
    monkeypatch.setattr(sys, "byteorder", byteorder)
    x = _values(code, (3, 11), dtype)  # 33 values: a partial last byte
    packed, _ = pack_spikes(x, code)
    k = [int(v * code.divisor) for v in x.flatten().tolist()] + [0] * 7
    want = [[sum(((k[8 * m + i] >> j) & 1) << i for i in range(8)) for m in range(5)]
            for j in range(code.bits)]
    assert packed.tolist() == want


EDGE_CODES = CODES + [SpikeCode(2, 2), SpikeCode(1, 8), SpikeCode(255), SpikeCode(255, 128)]


def _edge_inputs(code, dtype):
    """Odd sizes (empty, 1, primes, partial last bytes) in every layout pack_spikes meets."""
    x4 = _values(code, (3, 5, 7, 2), dtype)
    return [_values(code, s, dtype) for s in [(0,), (1,), (7,), (8,), (9,), (2, 0, 3), (13, 17)]] + [
        x4, x4.contiguous(memory_format=torch.channels_last), x4.transpose(0, 2), x4[:, 1:4],
        x4[..., ::2], _values(code, (1, 3, 1, 1), dtype).contiguous(memory_format=torch.channels_last),
        _values(code, (2, 3, 4), dtype).permute(2, 0, 1)]


@pytest.mark.parametrize("code", EDGE_CODES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_compiled_pack_is_the_torch_pack(code, dtype, monkeypatch):
    """The compiled ops make the torch fallback's bytes, and unpack either to the same tensor."""
    assert spike_layers._compiled_ops("cpu"), "the compiled CPU extension has no pack op"
    for x in _edge_inputs(code, dtype):
        packed, strides = pack_spikes(x, code)
        want = spike_layers._pack_torch(x, code)
        assert torch.equal(packed, want), (code, dtype, x.shape, x.stride())
        back = unpack_spikes(packed, x.shape, strides, dtype, code)
        ref = spike_layers._unpack_torch(want, x.shape, strides, dtype, code)
        assert torch.equal(back, x) and torch.equal(ref, x)
        assert back.stride() == ref.stride() == tuple(strides) and back.dtype == dtype


@pytest.mark.parametrize("code", [SpikeCode(), SpikeCode(255, 128)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_compiled_pack_across_blocks_and_tasks(code, dtype):
    """The CPU kernels work in blocks of 64 bytes inside tasks of 16384 bytes: two full tasks,
    three blocks and a partial byte, against the torch fallback's bytes, with two threads."""
    n = 8 * (2 * 16384 + 3 * 64) + 5
    x = _values(code, (n,), dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        packed, strides = pack_spikes(x, code)
        assert torch.equal(packed, spike_layers._pack_torch(x, code))
        back = unpack_spikes(packed, x.shape, strides, dtype, code)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(back, x)


def test_pack_ops_reject_bad_arguments():
    ops = torch.ops.tssd_fast
    assert spike_layers._compiled_ops("cpu")
    x = torch.ones(4, 4)
    planes = ops.pack_spikes(x, 1, 1)
    for bits, divisor in [(0, 1), (9, 1), (1, 3), (1, 0)]:
        with pytest.raises(RuntimeError, match="bits|divisor"):
            ops.pack_spikes(x, bits, divisor)
    with pytest.raises(RuntimeError, match="floating-point"):
        ops.pack_spikes(x.int(), 1, 1)
    with pytest.raises(RuntimeError, match="planes"):
        ops.unpack_spikes(planes, [4, 5], [5, 1], torch.float32, 1, 1)  # 20 elements need 3 bytes
    with pytest.raises(RuntimeError, match="planes"):
        ops.unpack_spikes(planes, [4, 4], [4, 1], torch.float32, 2, 1)  # 1 plane, not 2
    with pytest.raises(RuntimeError, match="dense"):
        ops.unpack_spikes(planes, [4, 4], [1, 1], torch.float32, 1, 1)  # overlapping
    with pytest.raises(RuntimeError, match="floating"):
        ops.unpack_spikes(planes, [4, 4], [4, 1], torch.int32, 1, 1)


@pytest.mark.parametrize("layout", ["nchw", "cl"])
def test_spike_conv2d_packs_with_one_op_each_way(layout):
    """A training call of a SpikeConv2d runs one pack op in forward and one unpack op in backward
    (on a GPU: one launch each), around the ops plain autograd runs."""
    fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
    conv = SpikeConv2d(4, 6, 3, padding=1).to(memory_format=fmt)
    x = _values(SpikeCode(), (2, 4, 5, 5)).contiguous(memory_format=fmt).requires_grad_()
    check_spikes(False)  # the check's own unpack would be logged too
    with OpLog() as log:
        conv(x).sum().backward()
    ops = log.ops()
    assert ops.count("tssd_fast.pack_spikes.default") == 1, ops
    assert ops.count("tssd_fast.unpack_spikes.default") == 1, ops
    assert ops.index("tssd_fast.unpack_spikes.default") < ops.index("aten.convolution_backward.default")
    assert "SpikeConvFunction" in conv(x).grad_fn.name()  # the C++ autograd formula (csrc/spike_ops.cpp)


@pytest.mark.parametrize("grads", ["x", "weight", "bias", "all"])
@pytest.mark.parametrize("pack_impl_", ["compiled", "torch"])
def test_spike_conv2d_partial_gradients_bitwise(grads, pack_impl_, monkeypatch):
    """Only some of x, weight, bias need a gradient (a frozen layer, the first layer): the others
    get none, and the ones asked for are nn.Conv2d's bit for bit."""
    if pack_impl_ == "torch":
        monkeypatch.setitem(spike_layers._OPS, "cpu", False)
    a, b = _twin(lambda: SpikeConv2d(4, 6, 3, padding=1, bias=True))
    x = _values(SpikeCode(), (3, 4, 7, 7))
    xs = []
    for m in (a, b):
        m.weight.requires_grad_(grads in ("weight", "all"))
        m.bias.requires_grad_(grads in ("bias", "all"))
        xs.append(x.clone().requires_grad_(grads in ("x", "all")))
        if grads == "x":  # nothing of the layer needs a gradient, only its input
            m.weight.requires_grad_(False)
    ya, yb = a(xs[0]), b(xs[1])
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    for ta, tb in [(xs[0], xs[1]), (a.weight, b.weight), (a.bias, b.bias)]:
        assert (ta.grad is None) == (tb.grad is None) and (ta.grad is None or torch.equal(ta.grad, tb.grad))
    assert torch.equal(ya, yb)


@pytest.mark.parametrize("layer", ["conv", "linear", "convbn-min"])
def test_double_backward_raises_instead_of_missing_terms(layer, pack_impl):
    """create_graph=True works, but differentiating the packed layers' gradients again raises (to
    their backward the unpacked input is a constant: a second derivative would miss its terms);
    plain layers differentiate twice as torch does."""
    make = {"conv": lambda: SpikeConv2d(3, 4, 3, padding=1),
            "linear": lambda: SpikeLinear(6, 4),
            "convbn-min": lambda: ConvBN(SpikeConv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))}[layer]
    shape = {"conv": (2, 3, 5, 5), "linear": (5, 6), "convbn-min": (2, 2, 3, 5, 5)}[layer]
    for mode in ("plain", "min" if layer == "convbn-min" else "default"):
        net = set_memory_mode(make(), mode)
        x = _values(SpikeCode(), shape).requires_grad_()
        weight = next(net.parameters())
        gw, = torch.autograd.grad(net(x).square().sum(), [weight], create_graph=True)
        if mode == "plain":
            gw.sum().backward()  # d(gw)/dx exists
            assert x.grad is not None and x.grad.abs().sum() > 0
        else:
            with pytest.raises(RuntimeError, match="differentiate twice"):
                gw.sum().backward()


def test_spike_conv2d_op_without_grad_is_conv2d():
    """Without a gradient to record (no_grad, inference_mode) the op is the convolution alone."""
    assert spike_layers._compiled_ops("cpu")
    x = _values(SpikeCode(), (2, 4, 6, 6))
    w, b = torch.randn(5, 4, 3, 3, requires_grad=True), torch.randn(5)
    want = torch.nn.functional.conv2d(x, w, b, 1, 1).detach()
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx(), OpLog() as log:
            y = torch.ops.tssd_fast.spike_conv2d(x, w, b, [1, 1], [1, 1], [1, 1], 1, 1, 1)
        assert torch.equal(y, want) and y.grad_fn is None
        assert "tssd_fast.pack_spikes.default" not in log.ops()


def test_spike_ops_opcheck():
    """Schema, fake (meta) implementations and autograd registration of the five ops."""
    assert spike_layers._compiled_ops("cpu")
    x = _values(SpikeCode(3), (2, 3, 5, 5))
    planes = torch.ops.tssd_fast.pack_spikes(x, 2, 1)
    torch.library.opcheck(torch.ops.tssd_fast.pack_spikes, (x, 2, 1))
    torch.library.opcheck(torch.ops.tssd_fast.unpack_spikes, (planes, [2, 3, 5, 5], [75, 25, 5, 1], torch.float32, 2, 1))
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    torch.library.opcheck(torch.ops.tssd_fast.spike_conv2d,
                          (x.requires_grad_(), w, None, [1, 1], [1, 1], [1, 1], 1, 2, 1),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    torch.library.opcheck(torch.ops.tssd_fast.spike_linear,
                          (x.detach().view(-1, 5), torch.randn(4, 5, requires_grad=True), torch.randn(4), 2, 1),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    torch.library.opcheck(torch.ops.tssd_fast.lean_avg_pool2d,
                          (torch.randn(2, 3, 6, 6, requires_grad=True), [2, 2], [2, 2], [0, 0], False, True, None))


def _twin(make, mode="default"):
    torch.manual_seed(1)
    a = make()
    torch.manual_seed(1)
    b = set_memory_mode(make(), "plain")
    set_memory_mode(a, mode)
    return a, b


def _same_step(a, b, x, amp=None):
    """Forward + backward of a and of b (plain) on x: outputs and all gradients equal bitwise."""
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ctx = torch.autocast("cpu", dtype=amp) if amp else contextlib.nullcontext()
    with ctx:
        ya, yb = a(xa), b(xb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(ya, yb)
    assert torch.equal(xa.grad, xb.grad)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p.grad, q.grad), n


@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, padding=1, bias=True), dict(groups=2, padding=1),
                                dict(padding=1, padding_mode="reflect"), dict(kernel_size=1, stride=2)], ids=str)
@pytest.mark.parametrize("layout", ["nchw", "cl"])
@pytest.mark.parametrize("amp", [None, torch.bfloat16], ids=["fp32", "bf16-autocast"])
def test_spike_conv2d_is_conv2d_bitwise(kw, layout, amp, pack_impl):
    kw = dict(kernel_size=3, bias=False) | kw
    fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
    a, b = _twin(lambda: SpikeConv2d(4, 6, **kw).to(memory_format=fmt))
    assert type(b).forward is SpikeConv2d.forward and b.memory == "plain"
    assert a.state_dict().keys() == nn.Conv2d(4, 6, **kw).state_dict().keys()
    _same_step(a, b, _values(SpikeCode(), (6, 4, 10, 10)).contiguous(memory_format=fmt), amp)


@pytest.mark.parametrize("shape", [(12, 33), (3, 4, 33)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("amp", [None, torch.bfloat16], ids=["fp32", "bf16-autocast"])
def test_spike_linear_is_linear_bitwise(shape, bias, amp, pack_impl):
    code = SpikeCode(4, 4)
    a, b = _twin(lambda: SpikeLinear(33, 7, bias=bias, code=code))
    _same_step(a, b, _values(code, shape), amp)
    if pack_impl == "compiled":
        y = a(_values(code, shape).requires_grad_())
        assert "SpikeLinearFunction" in y.grad_fn.next_functions[0][0].name() or \
            "SpikeLinearFunction" in y.grad_fn.name()  # the C++ formula (csrc/spike_ops.cpp)


@pytest.mark.parametrize("grads", ["x", "weight", "bias", "weight+bias"])
def test_spike_linear_partial_gradients_bitwise(grads, pack_impl):
    a, b = _twin(lambda: SpikeLinear(9, 5))
    x = _values(SpikeCode(), (6, 9))
    xs = []
    for m in (a, b):
        m.weight.requires_grad_("weight" in grads)
        m.bias.requires_grad_("bias" in grads)
        xs.append(x.clone().requires_grad_(grads == "x"))
    ya, yb = a(xs[0]), b(xs[1])
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(ya, yb)
    for ta, tb in [(xs[0], xs[1]), (a.weight, b.weight), (a.bias, b.bias)]:
        assert (ta.grad is None) == (tb.grad is None) and (ta.grad is None or torch.equal(ta.grad, tb.grad))


def test_lean_avg_pool_is_avg_pool_bitwise(pack_impl):
    a, b = _twin(lambda: LeanAvgPool2d(3, stride=2, padding=1))
    _same_step(a, b, torch.randn(4, 3, 11, 11))
    a, b = _twin(lambda: LeanAvgPool2d(2))
    _same_step(a, b, torch.randn(4, 3, 10, 10).contiguous(memory_format=torch.channels_last))
    a, b = _twin(lambda: LeanAvgPool2d((3, 2), stride=(2, 1), ceil_mode=True, count_include_pad=False,
                                       padding=(1, 0), divisor_override=5))
    _same_step(a, b, torch.randn(2, 3, 8, 7))
    a, b = _twin(lambda: LeanAvgPool2d(2))
    _same_step(a, b, torch.randn(3, 6, 6))  # unbatched: torch's path
    if pack_impl == "compiled":
        y = LeanAvgPool2d(2)(torch.randn(1, 2, 4, 4, requires_grad=True))
        assert "LeanAvgPoolFunction" in y.grad_fn.name()  # the C++ formula (csrc/lean_pool_op.cpp)


def test_lean_avg_pool_cpu_kernel_skips_views_it_cannot_read():
    """A negated view (its data is -x, read lazily) goes to ATen, with ATen's numbers."""
    base = torch.randn(2, 3, 8, 8)
    for grad in (False, True):
        x = base.clone().requires_grad_(grad)
        with OpLog() as log:
            got = LeanAvgPool2d(2)(x._neg_view() if not grad else x.neg())
        want = nn.AvgPool2d(2)(-base)
        assert torch.equal(got.detach(), want)
        if not grad:
            assert "aten.avg_pool2d.default" in log.ops()


def test_lean_avg_pool_under_torch_compile_is_torchs_layer():
    """torch.compile(fullgraph=True) traces torch's pool, with and without a gradient, also once
    the compiled ops are loaded (an eager call first)."""
    pool = LeanAvgPool2d(2)
    pool(torch.randn(2, 3, 8, 8, requires_grad=True)).sum().backward()
    pool(torch.randn(2, 3, 8, 8))
    compiled = torch.compile(pool, fullgraph=True)
    for grad in (False, True):
        x = torch.randn(2, 3, 8, 8, requires_grad=grad)
        with torch.set_grad_enabled(grad):
            assert torch.equal(compiled(x), nn.functional.avg_pool2d(x, 2))


def test_lean_avg_pool_backward_on_the_cpu():
    """NCHW: the CPU kernel of csrc/cpu/avg_pool_cpu.cpp; channels_last: ATen's backward."""
    for fmt, aten in ((torch.contiguous_format, False), (torch.channels_last, True)):
        x = torch.randn(2, 3, 8, 8).contiguous(memory_format=fmt).requires_grad_()
        y = LeanAvgPool2d(2)(x)
        with OpLog() as log:
            y.sum().backward()
        assert ("aten.avg_pool2d_backward.default" in log.ops()) == aten, fmt


POOLS = [dict(kernel_size=2), dict(kernel_size=(2, 1)), dict(kernel_size=4), dict(kernel_size=2, divisor_override=8),
         dict(kernel_size=2, ceil_mode=True), dict(kernel_size=2, divisor_override=3),
         dict(kernel_size=2, stride=1), dict(kernel_size=2, padding=1)]


POOLS_FWD = POOLS + [dict(kernel_size=3), dict(kernel_size=(3, 2)), dict(kernel_size=2, divisor_override=5),
                     dict(kernel_size=2, divisor_override=257),
                     dict(kernel_size=3, ceil_mode=True)]


def _cpu_pool_kernel(kw, x):
    """Whether csrc/cpu/avg_pool_cpu.cpp pools x with nn.AvgPool2d(**kw) (avg_pool2d_windows_apply):
    NCHW strides, kernel == stride, no padding, every window whole."""
    k = kw["kernel_size"]
    kh, kwd = (k, k) if isinstance(k, int) else k
    H, W = x.shape[2:]
    return (kw.get("stride") in (None, k) and not kw.get("padding")
            and x.stride() == torch.empty(x.shape).stride() and H >= kh and W >= kwd
            and (not kw.get("ceil_mode") or (H % kh == 0 and W % kwd == 0)))


@pytest.fixture
def pool_broadcast_everywhere():
    """The broadcast backward on the CPU too (by default CUDA only: ATen's is faster on the CPU)."""
    ops = spike_layers._compiled_ops("cpu")
    assert ops
    ops.set_pool_backward(1)
    yield
    ops.set_pool_backward(0)


@pytest.mark.parametrize("kw", POOLS_FWD, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
def test_lean_avg_pool_backward_is_torch_backward_bitwise(kw, dtype, pool_broadcast_everywhere):
    """The C++ backward's own paths give avg_pool2d_backward's numbers bit for bit, zeros past
    the last window and the layout torch chooses, on even and odd sizes, channels_last, and
    gradients down to denormals: for non-overlapping windows the CPU kernel on NCHW input (any
    divisor: 3, 5, 9 divide) and the broadcast otherwise (a power-of-two divisor); the other pools
    go through avg_pool2d_backward itself."""
    k = kw["kernel_size"]
    kh, kwd = (k, k) if isinstance(k, int) else k
    windows = kw.get("stride") in (None, k) and not kw.get("padding")
    broadcast = windows and kw.get("divisor_override", 2) in (2, 8) and kh * kwd in (1, 2, 4, 8, 16)
    for shape in [(2, 3, 8, 8), (2, 3, 9, 7), (1, 2, 4, 12), (3, 1, 5, 5)]:
        for fmt in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(shape, dtype=dtype).contiguous(memory_format=fmt)
            xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
            ya = LeanAvgPool2d(**kw)(xa)
            yb = nn.AvgPool2d(**kw)(xb)
            g = torch.randn_like(ya) * torch.tensor([1.0, 1e-40 if dtype == torch.float32 else 1e-3]).to(dtype)[
                torch.randint(0, 2, ya.shape)]
            with OpLog() as log:
                ya.backward(g)
            yb.backward(g)
            assert torch.equal(xa.grad, xb.grad), (shape, fmt)
            assert xa.grad.stride() == xb.grad.stride(), (shape, fmt, xa.grad.stride(), xb.grad.stride())
            used = "aten.avg_pool2d_backward.default" in log.ops()
            whole = not kw.get("ceil_mode") or (shape[2] % kh == 0 and shape[3] % kwd == 0)
            assert used != (_cpu_pool_kernel(kw, x) or broadcast and whole), (kw, shape, log.ops())


@pytest.mark.parametrize("kw", POOLS_FWD, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
def test_lean_avg_pool_forward_is_torch_forward_bitwise(kw, dtype):
    """On the CPU the C++ op pools NCHW input with non-overlapping windows itself
    (csrc/cpu/avg_pool_cpu.cpp): the same numbers as nn.AvgPool2d bit for bit, on random values
    (a different summation order or a multiply by 1/divisor would show), every dtype, divisors
    3, 5 and 9, odd sizes and ceil_mode, with and without a gradient; other pools and layouts go
    to ATen."""
    for shape in [(2, 3, 8, 8), (2, 3, 9, 7), (1, 2, 4, 12), (3, 1, 5, 5), (1, 1, 2, 1), (2, 2, 3, 6)]:
        for fmt in (torch.contiguous_format, torch.channels_last):
            x = (torch.randn(shape, dtype=torch.float64) * 3).to(dtype).contiguous(memory_format=fmt)
            try:
                want = nn.AvgPool2d(**kw)(x)
            except RuntimeError as e:  # a window larger than the input: the same error
                with pytest.raises(RuntimeError, match="Output size is too small"):
                    LeanAvgPool2d(**kw)(x.requires_grad_())
                assert "Output size is too small" in str(e)
                continue
            for grad in (False, True):
                xr = x.clone().requires_grad_(grad)
                with OpLog() as log:
                    got = LeanAvgPool2d(**kw)(xr)
                assert torch.equal(got.detach(), want) and got.stride() == want.stride(), (shape, fmt)
                ours = _cpu_pool_kernel(kw, x)
                assert ("aten.avg_pool2d.default" not in log.ops()) == ours, (kw, shape, fmt, log.ops())


def test_spike_layers_keep_bits_not_floats():
    saved = []

    def pack(t):
        saved.append(t)
        return t

    x = _values(SpikeCode(), (8, 16, 12, 12)).requires_grad_()
    conv = SpikeConv2d(16, 8, 3, padding=1, bias=False)
    pool = LeanAvgPool2d(2)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        conv(x)
        pool(x)
    kept = [t for t in saved if t.untyped_storage().data_ptr() not in
            (conv.weight.untyped_storage().data_ptr(),)]
    assert [t.dtype for t in kept] == [torch.uint8]
    assert sum(t.numel() for t in kept) == x.numel() // 8


def test_check_rejects_values_outside_the_code():
    conv = SpikeConv2d(2, 3, 3)
    with pytest.raises(ValueError, match="does not hold"):
        conv(torch.randn(1, 2, 5, 5, requires_grad=True))
    with pytest.raises(ValueError, match="does not hold"):
        SpikeConv2d(2, 3, 3, code=SpikeCode(2))(torch.full((1, 2, 5, 5), 4.0, requires_grad=True))  # needs 3 bits
    with pytest.raises(ValueError):
        SpikeCode(4, 3)  # not a power of two: k / 3 is not exact
    with pytest.raises(ValueError):
        set_memory_mode(conv, "tiny")


@pytest.mark.parametrize("mode", ["default", "min"])
@pytest.mark.parametrize("training", [True, False])
def test_conv_bn_on_direct_encoding_bitwise(mode, training, pack_impl):
    """ConvBN on an image expanded over time (stride 0) and on spikes, both modes, train and eval."""
    def make():
        return ConvBN(nn.Conv2d(3, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5))
    a, b = _twin(make, mode)
    a.train(training), b.train(training)
    img = torch.randn(4, 3, 8, 8, requires_grad=True)
    img_b = img.detach().clone().requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        ya = a(direct_encode(img, 3))
    yb = b(direct_encode(img_b, 3))
    # the image batch is kept itself, once; no [T*B] copy of it
    assert any(t.untyped_storage().data_ptr() == img.untyped_storage().data_ptr() for t in saved)
    assert not any(t.shape == (12, 3, 8, 8) for t in saved), [t.shape for t in saved]
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(ya, yb) and torch.equal(img.grad, img_b.grad)
    for p, q in zip([*a.parameters(), *a.buffers()], [*b.parameters(), *b.buffers()]):
        assert torch.equal(p, q) and (p.grad is None or torch.equal(p.grad, q.grad))
    a, b = _twin(lambda: ConvBN(SpikeConv2d(3, 5, 3, padding=1, bias=True), nn.BatchNorm2d(5)), mode)
    a.train(training), b.train(training)
    _same_step(a, b, _values(SpikeCode(), (2, 4, 3, 8, 8)))
    a, b = _twin(make, mode)  # any input (e.g. DVS frames) kept as it is
    a.train(training), b.train(training)
    _same_step(a, b, torch.randn(2, 4, 3, 8, 8))


@pytest.mark.parametrize("mode", ["default", "min"])
@pytest.mark.parametrize("fwd_amp", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_backward_inside_autocast_is_plain_backward(mode, fwd_amp):
    """backward() called inside an autocast region (forward with or without autocast): 'min'
    recomputes under the forward's autocast state, so its gradients are still plain's. (Before,
    an fp32 forward's recompute ran in bf16 there: conv weight gradients off by ~0.4.)"""
    a, b = _twin(lambda: ConvBN(SpikeConv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)), mode)
    x = _values(SpikeCode(), (2, 4, 3, 8, 8))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=fwd_amp) if fwd_amp else contextlib.nullcontext():
        ya, yb = a(xa), b(xb)
    g = torch.randn_like(ya)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya.backward(g)
        yb.backward(g)
    assert torch.equal(ya, yb) and torch.equal(xa.grad, xb.grad)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p.grad, q.grad), n


class _OwnForwardBN(nn.BatchNorm2d):
    """A BatchNorm with its own forward: ConvBN's 'min' cannot assume F.batch_norm's arguments."""

    def forward(self, x):
        return super().forward(x) * 1.0


BN_CASES = {"affine": dict(), "no-affine": dict(affine=False), "untracked": dict(track_running_stats=False),
            "cumulative": dict(momentum=None), "own-forward": dict()}


@pytest.mark.parametrize("bn_case", list(BN_CASES))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("conv_kw", [dict(padding=1, bias=False), dict(stride=2, padding=2, dilation=2, bias=True),
                                     dict(padding=1, padding_mode="reflect", groups=3)], ids=["p1", "s2d2b", "reflect-g3"])
def test_conv_bn_min_is_plain_bitwise(bn_case, training, conv_kw, pack_impl):
    """ConvBN 'min' against torch's layers, two steps: outputs, every gradient and the BN buffers
    (running statistics, num_batches_tracked) bit for bit, for the BatchNorm variants
    nn.BatchNorm2d.forward distinguishes. A BatchNorm with its own forward keeps 'default'."""
    bn_type = _OwnForwardBN if bn_case == "own-forward" else nn.BatchNorm2d
    a, b = _twin(lambda: ConvBN(SpikeConv2d(3, 6, 3, **conv_kw), bn_type(6, **BN_CASES[bn_case])), "min")
    a.train(training), b.train(training)
    for step in range(2):
        x = _values(SpikeCode(), (2, 3, 3, 9, 9))
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = a(xa), b(xb)
        node = ya.grad_fn.next_functions[0][0].name()  # (past ConvBN's reshape to [T, B, ...])
        want = "ConvBNRecomputeFunction" if spike_layers._compiled_ops("cpu") else "_ConvBNFn"
        assert (want in node) == (bn_case != "own-forward"), node
        g = torch.randn_like(ya)
        ya.backward(g)
        yb.backward(g)
        assert torch.equal(ya, yb) and torch.equal(xa.grad, xb.grad)
        for (n, p), q in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(p.grad, q.grad), n
        for (n, t), u in zip(a.named_buffers(), b.buffers()):
            assert torch.equal(t, u), n


@pytest.mark.parametrize("frozen", ["conv", "bn", "input-only", "bn-only"])
def test_conv_bn_min_partial_gradients_bitwise(frozen, pack_impl):
    """A frozen conv or BN (or only the input needing a gradient): the gradients asked for are
    plain's bit for bit, the others are not computed."""
    a, b = _twin(lambda: ConvBN(SpikeConv2d(3, 5, 3, padding=1, bias=True), nn.BatchNorm2d(5)), "min")
    x = _values(SpikeCode(), (2, 2, 3, 6, 6))
    xs = []
    for m in (a, b):
        for p in m[0].parameters():
            p.requires_grad_(frozen in ("bn", "bn-only"))
        for p in m[1].parameters():
            p.requires_grad_(frozen in ("conv", "bn-only"))
        xs.append(x.clone().requires_grad_(frozen != "bn-only"))
    ya, yb = a(xs[0]), b(xs[1])
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(ya, yb)
    for ta, tb in [(xs[0], xs[1]), *zip(a.parameters(), b.parameters())]:
        assert (ta.grad is None) == (tb.grad is None) and (ta.grad is None or torch.equal(ta.grad, tb.grad))


@pytest.mark.parametrize("where", ["conv", "bn", "pre-bn", "backward-bn", "lazy-bn"])
def test_conv_bn_min_with_hooks_runs_the_modules(where, pack_impl):
    """Hooks on the conv or the BN (a lazy BN initialises in one) fire in 'min' too: the
    modules run as in 'default', with plain's results."""
    seen = []

    def make():
        bn = nn.LazyBatchNorm2d() if where == "lazy-bn" else nn.BatchNorm2d(5)
        net = ConvBN(SpikeConv2d(3, 5, 3, padding=1), bn)
        if where == "conv":
            net[0].register_forward_hook(lambda m, i, o: seen.append(where))
        elif where == "bn":
            net[1].register_forward_hook(lambda m, i, o: seen.append(where))
        elif where == "pre-bn":
            net[1].register_forward_pre_hook(lambda m, i: seen.append(where))
        elif where == "backward-bn":
            net[1].register_full_backward_hook(lambda m, gi, go: seen.append(where))
        return net
    a, b = _twin(make, "min")
    seen.clear()
    x = _values(SpikeCode(), (2, 2, 3, 6, 6)).requires_grad_()

    def node(net):
        return net(x).grad_fn.next_functions[0][0].name()  # (past ConvBN's reshape)
    y = a(x)
    first = y.grad_fn.next_functions[0][0].name()
    if where == "backward-bn":
        y.sum().backward()
        a.zero_grad(set_to_none=True)
    assert seen == ([] if where == "lazy-bn" else [where])
    assert "ConvBNRecompute" not in first and "_ConvBNFn" not in first
    _same_step(a, b, _values(SpikeCode(), (2, 2, 3, 6, 6)))
    if where == "lazy-bn":  # initialised by its first call: from now on it recomputes
        assert type(a[1]) is nn.BatchNorm2d
        assert "ConvBNRecompute" in node(a) or "_ConvBNFn" in node(a)


def test_conv_bn_min_recomputes_only_the_convolution():
    """Backward recomputes the convolution, not the BatchNorm (its statistics are kept), and
    calls the gradient formulas autograd's nodes call."""
    net = set_memory_mode(ConvBN(SpikeConv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5)), "min")
    x = _values(SpikeCode(), (2, 2, 3, 6, 6)).requires_grad_()
    check_spikes(False)
    y = net(x)
    with OpLog() as log:
        y.sum().backward()
    ops = log.ops()
    assert ops.count("aten.convolution.default") == 1, ops
    assert not any("batch_norm.default" in o and "backward" not in o for o in ops), ops
    assert "aten.native_batch_norm_backward.default" in ops and "aten.convolution_backward.default" in ops


def test_conv_bn_min_eval_output_uses_the_statistics_at_backward_as_plain():
    """An eval-mode output whose BatchNorm is then updated by a training call before backward:
    torch's node normalised with the running statistics themselves, updated by then; 'min' too."""
    a, b = _twin(lambda: ConvBN(SpikeConv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5)), "min")
    x = _values(SpikeCode(), (2, 2, 3, 6, 6))
    outs = []
    for m in (a, b):
        xi = x.clone().requires_grad_()
        m.eval()
        y = m(xi)
        m.train()
        m(x.clone().requires_grad_())  # updates the running statistics in place
        y.backward(torch.ones_like(y))
        outs.append((y, xi.grad, [p.grad for p in m.parameters()]))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert all(torch.equal(p, q) for p, q in zip(outs[0][2], outs[1][2]))


def test_conv_bn_min_empty_batch_and_batch_of_one(pack_impl):
    """An empty batch runs as plain; one value per channel in training raises plain's ValueError."""
    a, b = _twin(lambda: ConvBN(SpikeConv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)), "min")
    _same_step(a, b, _values(SpikeCode(), (2, 0, 3, 5, 5)))
    one = _values(SpikeCode(), (1, 1, 3, 1, 1)).requires_grad_()
    for m in (a, b):
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
            m(one)
    assert torch.equal(a[1].num_batches_tracked, b[1].num_batches_tracked)


def test_conv_bn_recompute_opcheck():
    """Schema (running statistics mutated in place), fake implementation and autograd registration."""
    assert spike_layers._compiled_ops("cpu")
    x = _values(SpikeCode(3), (4, 3, 5, 5)).requires_grad_()
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    bn_w, bn_b = torch.randn(4, requires_grad=True), torch.randn(4, requires_grad=True)
    for training in (True, False):
        args = (x, w, None, [1, 1], [1, 1], [1, 1], 1, bn_w, bn_b, torch.zeros(4), torch.ones(4), training, 0.1,
                1e-5, True, 2, 1)
        torch.library.opcheck(torch.ops.tssd_fast.conv_bn_recompute, args,
                              test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    with pytest.raises(RuntimeError, match="repeat_T > 0 needs repeat_base"):
        torch.ops.tssd_fast.conv_bn_recompute(x, w, None, [1, 1], [1, 1], [1, 1], 1, bn_w, bn_b, None, None, True,
                                              0.1, 1e-5, True, 0, 1, None, 3)


def _saved_bytes(fn, exclude):
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        if st.nbytes() and st.data_ptr() not in excluded:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def _tssd_step(arch, memory, amp=None, layout="nchw", training=True, size=32):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, size, size, generator=gen), torch.randint(0, 10, (4,), generator=gen)
    kw = dict(input_size=size) if arch == "vgg9" else dict(stem="imagenet" if size >= 64 else "cifar")
    model = build_model(arch, num_classes=10, width=0.125, memory=memory, **kw).train(training)
    if layout == "cl":
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    method = make_method("tssd", T=2, T_teacher=4)
    ctx = torch.autocast("cpu", dtype=amp) if amp else contextlib.nullcontext()
    with ctx:
        (loss, _, _), saved = _saved_bytes(lambda: method.step(model, x, y), [x, *model.parameters()])
    loss.backward()
    return model, loss, saved


@pytest.mark.parametrize("arch,size", [("vgg9", 32), ("resnet18", 32), ("resnet34", 64)])
@pytest.mark.parametrize("memory", ["default", "min"])
def test_tssd_step_bitwise_equal_to_plain_layers(arch, size, memory):
    """A whole TSSD step (student + teacher + weak classifier): same loss, gradients and BN
    statistics, bit for bit, as torch's layers; and less kept for backward."""
    ref, loss_ref, saved_ref = _tssd_step(arch, "plain", size=size)
    model, loss, saved = _tssd_step(arch, memory, size=size)
    assert model.state_dict().keys() == ref.state_dict().keys()
    assert torch.equal(loss, loss_ref)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(p.grad, q.grad), name
    for (name, b), c in zip(model.named_buffers(), ref.buffers()):
        assert torch.equal(b, c), name
    assert saved < (0.6 if memory == "default" else 0.25) * saved_ref


@pytest.mark.parametrize("memory", ["default", "min"])
@pytest.mark.parametrize("amp,layout,training", [(torch.bfloat16, "nchw", True), (None, "cl", True),
                                                 (None, "nchw", False)], ids=["bf16", "channels_last", "eval"])
def test_tssd_step_bitwise_autocast_layout_eval(memory, amp, layout, training):
    ref, loss_ref, _ = _tssd_step("vgg9", "plain", amp, layout, training)
    model, loss, _ = _tssd_step("vgg9", memory, amp, layout, training)
    assert torch.equal(loss, loss_ref)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_memory_mode_switch_and_other_neurons():
    model = build_model("vgg9", width=0.125, input_size=32)
    assert sum(isinstance(m, SpikeConv2d) for m in model.modules()) == 8  # all but the first conv
    assert all(m.memory == "min" for m in set_memory_mode(model, "min").modules() if hasattr(m, "memory"))
    # a neuron that is not known to emit 0/1 keeps plain conv inputs (unless binary_spikes=True)
    relu = build_model("resnet18", width=0.125, neuron=nn.ReLU)
    assert not any(isinstance(m, SpikeConv2d) for m in relu.modules())
    assert any(isinstance(m, SpikeConv2d) for m in build_model("resnet18", width=0.125, neuron=nn.ReLU,
                                                               binary_spikes=True).modules())
    ann = build_model("vgg9", width=0.125, spiking=False)
    assert not any(isinstance(m, (SpikeConv2d, SpikeLinear)) for m in ann.modules())
    with pytest.raises(ValueError):
        build_model("vgg9", memory="small")

