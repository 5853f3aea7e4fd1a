"""The spike-input layers on CUDA (docs/MEMORY.md): the CUDA pack / unpack kernels
(csrc/cuda/spike_pack_kernels.cu) make the CPU kernel's bytes and give the input back bit for bit,
and SpikeConv2d / LeanAvgPool2d / ConvBN in memory='default' (ConvBN also in 'min') are torch's layers bit for bit
(cuDNN deterministic and unbenchmarked, so that both runs pick one algorithm). Skipped, with the
reason, without a CUDA device; on the GPU machine the compiled CUDA extension is required."""
import contextlib

import pytest
import torch

from tssd_fast.models import ConvBN, LeanAvgPool2d, SpikeCode, SpikeConv2d, set_memory_mode
from tssd_fast.models import spike_layers
from test_memory import EDGE_CODES, POOLS, _edge_inputs, _values
from _helpers import OpLog

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)", allow_module_level=True)
pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _deterministic_cudnn():
    old = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old


def test_compiled_cuda_ops_are_there():
    assert spike_layers._compiled_ops("cuda"), "tssd_fast._C_cuda has no pack / unpack kernels"


@pytest.mark.parametrize("code", EDGE_CODES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_cuda_pack_is_the_cpu_pack(code, dtype):
    assert spike_layers._compiled_ops("cuda")
    for x in _edge_inputs(code, dtype):
        packed, strides = spike_layers.pack_spikes(x.cuda(), code)
        want, want_strides = spike_layers.pack_spikes(x, code)
        assert torch.equal(packed.cpu(), want) and strides == want_strides
        back = spike_layers.unpack_spikes(packed, x.shape, strides, dtype, code)
        assert back.is_cuda and back.stride() == tuple(strides) and torch.equal(back.cpu(), x)


@pytest.mark.parametrize("layout", ["nchw", "cl"])
@pytest.mark.parametrize("amp", [None, torch.bfloat16], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("make", ["conv", "convbn", "convbn-min", "pool"])
def test_layers_are_torch_layers_bitwise_on_cuda(layout, amp, make):
    """On CUDA too (cuDNN's BatchNorm for 'min': its statistics and backward), bit for bit."""
    fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
    build = {"conv": lambda: SpikeConv2d(8, 16, 3, padding=1, stride=2, bias=True),
             "convbn": lambda: ConvBN(SpikeConv2d(8, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16)),
             "pool": lambda: LeanAvgPool2d(2)}[make.replace("-min", "")]
    nets = []
    for mode in ("min" if make == "convbn-min" else "default", "plain"):
        torch.manual_seed(3)
        nets.append(set_memory_mode(build().cuda().to(memory_format=fmt), mode))
    shape = (2, 3, 8, 12, 12) if make.startswith("convbn") else (6, 8, 12, 12)
    x = _values(SpikeCode(), shape).cuda()
    if x.dim() == 4:
        x = x.contiguous(memory_format=fmt)
    outs, grads = [], []
    for net in nets:
        xi = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=amp) if amp else contextlib.nullcontext():
            y = net(xi)
        y.backward(torch.ones_like(y))
        outs.append(y)
        grads.append([xi.grad] + [p.grad for p in net.parameters()])
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(a, b) for a, b in zip(grads[0], grads[1]))
    if make == "conv":
        assert "SpikeConvFunction" in outs[0].grad_fn.name()  # the C++ formula ran
    if make == "convbn-min":
        assert "ConvBNRecomputeFunction" in outs[0].grad_fn.next_functions[0][0].name()
        assert all(torch.equal(a, b) for a, b in zip(nets[0].buffers(), nets[1].buffers()))


@pytest.mark.parametrize("kw", POOLS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("layout", ["nchw", "cl"])
def test_lean_pool_backward_on_cuda_is_torch_backward(kw, dtype, layout):
    """On CUDA non-overlapping pools with a power-of-two divisor take the broadcast backward
    (csrc/lean_pool_op.cpp), not avg_pool2d_backward: the same numbers and strides as torch's."""
    fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
    k = kw["kernel_size"]
    broadcast = (kw.get("stride") in (None, k) and not kw.get("padding")
                 and kw.get("divisor_override", 2) in (2, 8))
    for shape in [(4, 8, 32, 32), (2, 3, 9, 7)]:
        x = torch.randn(shape, device="cuda", dtype=dtype).contiguous(memory_format=fmt)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = LeanAvgPool2d(**kw)(xa), torch.nn.AvgPool2d(**kw)(xb)
        g = torch.randn_like(ya)
        with OpLog() as log:
            ya.backward(g)
        yb.backward(g)
        assert torch.equal(xa.grad, xb.grad) and xa.grad.stride() == xb.grad.stride()
        partial_ceil = kw.get("ceil_mode") and (shape[2] % 2 or shape[3] % 2)
        assert ("aten.avg_pool2d_backward.default" in log.ops()) == (not broadcast or bool(partial_ceil))
