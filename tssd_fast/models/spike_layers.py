"""Layers that keep less for backward when their input is spikes (docs/MEMORY.md).

A convolution keeps its input for the weight gradient. After a LIF neuron that input holds only
0 and 1 (or, after a 2x2 average pool of spikes, multiples of 1/4; after a residual sum of two
spike maps, 0, 1 or 2), so it fits in 1 to 3 bits instead of 32. The layers here keep it packed
8 values per byte per bit plane and unpack it, exactly, in backward; the gradients are computed
by the same ATen calls autograd makes, so losses and gradients are bit for bit those of
``nn.Conv2d`` / ``nn.Linear``. The formulas and the packing run as C++ ops (csrc/spike_ops.cpp,
csrc/conv_bn_op.cpp, csrc/lean_pool_op.cpp; csrc/spike_pack.h: one pack and one unpack kernel
per layer, no Python in backward) when tssd_fast's compiled extension serves the device, else
as the Python autograd functions and torch ops below (the same bytes and results):

* :class:`SpikeConv2d`, :class:`SpikeLinear`: drop-in subclasses of ``nn.Conv2d`` / ``nn.Linear``
  (same arguments and state-dict keys) plus ``code=`` (:class:`SpikeCode`, what the input holds).
* :class:`LeanAvgPool2d`: ``nn.AvgPool2d`` that keeps only its input's shape (its gradient never
  reads the input; autograd keeps the input anyway).
* :class:`ConvBN`: conv + BatchNorm over merged time and batch. It keeps a direct-encoded
  input (the same image at every timestep) once instead of T times, and in ``memory='min'``
  mode it also drops the BatchNorm input and recomputes it from the packed conv input in backward.
* :func:`set_memory_mode` switches every such layer of a network between ``'plain'`` (torch's
  own layers, everything kept), ``'default'`` (packed, bitwise identical) and ``'min'``
  (+ recompute).

The input is trusted to be what ``code`` says (the networks of ``tssd_fast.models`` know their
producers); checking it costs a pass over the tensor, so it is off unless
``TSSD_FAST_CHECK_SPIKES=1`` or :func:`check_spikes` turns it on (the tests do). Packing happens
only when autograd will need the input; without grad, and under ``torch.compile``, these layers
are torch's layers.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

MEMORY_MODES = ("plain", "default", "min")

_CHECK = [os.environ.get("TSSD_FAST_CHECK_SPIKES", "") not in ("", "0")]


def check_spikes(enabled: bool = True) -> None:
    """Turn on (or off) the check that every packed input really holds the values its code says.

    The check unpacks right after packing and compares with ``torch.equal``; a mismatch raises
    ``ValueError``. Off by default (``TSSD_FAST_CHECK_SPIKES=1`` turns it on at import).
    """
    _CHECK[0] = bool(enabled)


@dataclass(frozen=True)
class SpikeCode:
    """What a spike-input layer's input holds: ``k / divisor`` for integers ``0 <= k <= max_count``.

    ``SpikeCode()`` = spikes {0, 1}; ``SpikeCode(2)`` = the sum of two spike maps {0, 1, 2}
    (a ResNet block output); ``SpikeCode(4, 4)`` = a 2x2 average pool of spikes {0, 1/4, .., 1}.
    ``divisor`` must be a power of two, so ``k / divisor`` is exact in every float dtype and
    unpacking gives back the very same bits. Kept in ``bits`` = bit length of ``max_count`` bits
    per value.
    """

    max_count: int = 1
    divisor: int = 1

    def __post_init__(self):
        if not 1 <= self.max_count <= 255:
            raise ValueError(f"max_count must be in 1..255, got {self.max_count}")
        if self.divisor < 1 or self.divisor & (self.divisor - 1):
            raise ValueError(f"divisor must be a power of two, got {self.divisor}")

    @property
    def bits(self) -> int:
        """Bits kept per value."""
        return self.max_count.bit_length()


SPIKES = SpikeCode()
"""Spikes {0, 1}: the output of a LIF neuron."""


# ------------------------------------------------------------------------------------ packing
_CONSTANTS: dict = {}


def _constant(key, make) -> torch.Tensor:
    """A small constant tensor, built once per key (the key names its device and dtype)."""
    if key not in _CONSTANTS:
        _CONSTANTS[key] = make()
    return _CONSTANTS[key]


def _bit_weights(device, dtype) -> torch.Tensor:
    """[8]: 1, 2, .., 128 in ``dtype`` (in uint8: the mask of each bit of a byte)."""
    return _constant(("weights", device, dtype),
                     lambda: (2.0 ** torch.arange(8, dtype=torch.float64)).to(device=device, dtype=dtype))


def _plane_shifts(device, dtype, bits: int) -> torch.Tensor:
    """[bits, 1]: 0, 1, .., bits - 1 (the shift that brings plane j's bit to bit 0)."""
    return _constant(("shifts", device, dtype, bits),
                     lambda: torch.arange(bits, dtype=dtype).view(-1, 1).to(device))


def _reads_as_it_lies(x: torch.Tensor) -> bool:
    """Contiguous and 4-D channels_last tensors are packed as they lie in memory (and come back
    with x's exact strides, so backward picks the kernels autograd would); any other layout is
    packed as a contiguous copy and comes back contiguous. csrc/spike_pack_host.h: the same rule."""
    return x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))


def _contiguous_strides(shape) -> tuple:
    """torch's strides of a contiguous tensor of ``shape`` (a size 0 or 1 counts as 1)."""
    strides, step = [], 1
    for n in reversed(tuple(shape)):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


_OPS: dict = {}  # device type -> the compiled module whose ops serve it, or False


def _compiled_ops(device_type: str):
    """tssd_fast.ops' compiled module when it has the pack / unpack kernels for this device,
    else False (no build, TSSD_FAST_NO_JIT=1, another device): then the torch implementations
    below do the same work in a handful of elementwise ops. Looked up once per device type.
    """
    found = _OPS.get(device_type)
    if found is None:
        from ..ops import _ext
        load = {"cpu": _ext.cpu_module, "cuda": _ext.cuda_module}.get(device_type)
        ok = (load is not None and load() is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
            "tssd_fast::pack_spikes", device_type.upper()))
        found = _OPS[device_type] = _ext.cpu_module() if ok else False  # (cpu_module binds the ops)
    return found


def pack_spikes(x: torch.Tensor, code: SpikeCode = SPIKES):
    """Pack ``x`` (values ``k / code.divisor``) into ``[code.bits, ceil(n / 8)]`` uint8 bit planes.

    Plane ``j``, byte ``m``, bit ``i`` holds bit ``j`` of ``k`` at element ``8 m + i`` of ``x`` in
    memory order. Returns ``(packed, strides)``; :func:`unpack_spikes` reverses it exactly.
    Values outside the code are not detected here (see :func:`check_spikes`). One launch of the
    compiled op (csrc/spike_pack.h) where the extension is built, else a few torch ops.
    """
    if x.requires_grad and torch.is_grad_enabled():  # (a layer's forward runs without grad)
        x = x.detach()
    strides = x.stride() if _reads_as_it_lies(x) else _contiguous_strides(x.shape)
    if _compiled_ops(x.device.type):
        return torch.ops.tssd_fast.pack_spikes(x, code.bits, code.divisor), strides
    return _pack_torch(x, code), strides


def unpack_spikes(packed: torch.Tensor, shape, strides, dtype, code: SpikeCode = SPIKES) -> torch.Tensor:
    """Inverse of :func:`pack_spikes`: a tensor of ``shape`` / ``strides`` / ``dtype``, bit for bit."""
    if _compiled_ops(packed.device.type):
        return torch.ops.tssd_fast.unpack_spikes(packed, shape, strides, dtype, code.bits, code.divisor)
    return _unpack_torch(packed, shape, strides, dtype, code)


def _pack_torch(x: torch.Tensor, code: SpikeCode) -> torch.Tensor:
    """:func:`pack_spikes` in torch ops (the fallback; the compiled op makes the same bytes)."""
    x = x if _reads_as_it_lies(x) else x.contiguous()
    flat = x.permute(0, 2, 3, 1).reshape(-1) if not x.is_contiguous() else x.view(-1)
    n = flat.numel()
    with _no_autocast(x.device.type):
        if code.bits == 1 and code.divisor == 1:
            # one pass: each group of 8 spikes dotted with (1, 2, .., 128); exact in every float
            # dtype (integer partial sums <= 255 need 8 significant bits: bf16 has 8)
            if n % 8:
                flat = F.pad(flat, (0, 8 - n % 8))
            return (flat.view(-1, 8) @ _bit_weights(x.device, flat.dtype)).to(torch.uint8).unsqueeze(0)
        k = (flat * code.divisor if code.divisor != 1 else flat).to(torch.uint8)
        if n % 8:
            k = F.pad(k, (0, 8 - n % 8))
        if sys.byteorder == "little":
            # 8 codes = the 8 bytes of an int64; (v >> j) & 0x01..01 keeps bit j of each byte, and
            # the multiply gathers those 8 bits into the top byte (no carries: distinct positions);
            # every plane at once, by broadcasting over j
            v = k.view(torch.int64).unsqueeze(0) >> _plane_shifts(x.device, torch.int64, code.bits)
            return (((v & _LOW_BITS) * _GATHER) >> 56).to(torch.uint8)
        planes = (k.view(1, -1, 8) >> _plane_shifts(x.device, torch.uint8, code.bits).unsqueeze(-1)) & 1
        return (planes.to(torch.float32) @ _bit_weights(x.device, torch.float32)).to(torch.uint8)


_LOW_BITS = 0x0101010101010101
_GATHER = 0x0102040810204080


def _unpack_torch(packed: torch.Tensor, shape, strides, dtype, code: SpikeCode) -> torch.Tensor:
    """:func:`unpack_spikes` in torch ops (the fallback)."""
    with _no_autocast(packed.device.type):
        # elementwise, by broadcasting over the 8 bits of a byte. A 256-entry table lookup is as
        # fast on the CPU, but on an H200 its gather kernel took 3.9 of a VGG-9 step's 11.7 ms
        # of device time; this way the step takes 8.3 ms (plain: 7.6; profile_step.py)
        bits = (packed.unsqueeze(-1) & _bit_weights(packed.device, torch.uint8)).ne_(0)  # [planes, m, 8] 0/1
        if code.bits == 1:
            k = bits  # one plane: its [1, m, 8] bytes are k's
        else:
            bits <<= _plane_shifts(packed.device, torch.uint8, code.bits).unsqueeze(-1)
            k = bits.sum(0, dtype=torch.uint8)  # k <= max_count <= 255
        flat = k.view(-1).to(dtype)
        if code.divisor != 1:
            flat = flat.mul_(1.0 / code.divisor)  # a power of two: exact in every float dtype
    # as_strided reads only the elements the shape covers (the last byte's padding stays
    # unused): no slice first, as every view op is one more dispatch per layer call
    return flat.as_strided(tuple(shape), tuple(strides))


@contextlib.contextmanager
def _no_autocast(device_type: str):
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            yield
    else:
        yield


# ------------------------------------------------------------------------------ kept inputs
@dataclass(frozen=True)
class _Repeat:
    """A direct-encoded input: ``base`` ([B, ...], the image batch) at every one of ``T`` steps."""

    base: torch.Tensor
    T: int

    def full(self) -> torch.Tensor:
        """The merged ``[T*B, ...]`` tensor, laid out as ``flatten(0, 1)`` of the expansion lays it."""
        return self.base.unsqueeze(0).expand(self.T, *self.base.shape).flatten(0, 1)


def _keep_input(ctx, x: torch.Tensor, code: SpikeCode | None, repeat: _Repeat | None) -> torch.Tensor:
    """What to save for ``x``: the image batch once (repeat), packed bits (code), or x itself."""
    ctx.x_shape, ctx.x_dtype, ctx.code, ctx.repeat_T = tuple(x.shape), x.dtype, None, None
    if repeat is not None:
        ctx.repeat_T = repeat.T
        return repeat.base
    if code is not None:
        packed, ctx.x_strides = pack_spikes(x, code)
        if _CHECK[0]:
            _check_code(x, code, packed, ctx.x_strides)
        ctx.code = code
        return packed
    return x


def _check_code(x: torch.Tensor, code: SpikeCode, packed=None, strides=None) -> None:
    """check_spikes: x must come back from its packed bits unchanged."""
    if packed is None:
        packed, strides = pack_spikes(x, code)
    if not torch.equal(unpack_spikes(packed, x.shape, strides, x.dtype, code), x):
        raise ValueError(f"spike-input layer: the input does not hold only the values of {code} "
                         "(build the layer without code=, or with memory='plain')")


def _restore_input(ctx, kept: torch.Tensor) -> torch.Tensor:
    if ctx.repeat_T is not None:
        return _Repeat(kept, ctx.repeat_T).full()
    if ctx.code is not None:
        return unpack_spikes(kept, ctx.x_shape, ctx.x_strides, ctx.x_dtype, ctx.code)
    return kept


def _cast(t: torch.Tensor | None, dtype) -> torch.Tensor | None:
    return t if t is None or t.dtype == dtype else t.to(dtype)


# ----------------------------------------------------------------------------- autograd ops
class _ConvFn(torch.autograd.Function):
    """F.conv2d forward; backward = aten.convolution_backward on the restored input, as autograd.

    Once differentiable (as every formula here that restores a packed input): to backward the
    restored input is a constant, so a second derivative would miss its terms; it raises instead.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, code, repeat):
        out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)  # autocast casts as usual
        kept = _keep_input(ctx, x, code, repeat)
        ctx.save_for_backward(kept, weight, bias)
        ctx.geometry = (stride, padding, dilation, groups)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        kept, weight, bias = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]]
        return (*_conv2d_backward(grad, _restore_input(ctx, kept), weight, bias, ctx.geometry, mask),
                None, None, None, None, None, None)


def _conv2d_backward(grad, x, weight, bias, geometry, mask):
    """The gradients of conv2d(x, weight, bias, *geometry) as autograd's formula computes them:
    aten.convolution_backward in grad's dtype (the compute dtype: autocast's, or the input's),
    each cast back to its input's dtype (autocast's casts are differentiable); None where mask
    says no. x is the restored input. (C++: conv2d_backward in csrc/spike_autograd.h.)"""
    stride, padding, dilation, groups = geometry
    cd = grad.dtype
    gx, gw, gb = torch.ops.aten.convolution_backward(
        grad, _cast(x, cd), _cast(weight, cd), None if bias is None else [bias.shape[0]], list(stride),
        list(padding), list(dilation), False, [0] * len(stride), groups, mask)
    return (_cast(gx, x.dtype) if mask[0] else None, _cast(gw, weight.dtype) if mask[1] else None,
            _cast(gb, bias.dtype) if mask[2] else None)


class _LinearFn(torch.autograd.Function):
    """F.linear on a 2-D input; backward with the matrix products autograd's addmm/mm formulas use."""

    @staticmethod
    def forward(ctx, x, weight, bias, code):
        out = F.linear(x, weight, bias)
        ctx.save_for_backward(_keep_input(ctx, x, code, None), weight, bias)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        kept, weight, bias = ctx.saved_tensors
        cdtype = grad.dtype
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _cast(grad.mm(_cast(weight, cdtype)), ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            x = _cast(_restore_input(ctx, kept), cdtype)
            gw = _cast(grad.t().mm(x), weight.dtype)
        if bias is not None and ctx.needs_input_grad[2]:
            gb = _cast(grad.sum(0), bias.dtype)
        return gx, gw, gb, None


class _AvgPoolFn(torch.autograd.Function):
    """F.avg_pool2d that keeps only the input's shape: its backward never reads the input's values."""

    @staticmethod
    def forward(ctx, x, args):
        ctx.meta = (tuple(x.shape), x.stride(), x.dtype, x.device)
        ctx.args = args
        return F.avg_pool2d(x, *args)

    @staticmethod
    def backward(ctx, grad):
        shape, strides, dtype, device = ctx.meta
        like = torch.empty_strided(shape, strides, dtype=dtype, device=device)  # shape and layout only
        kernel, stride, padding, ceil_mode, count_include_pad, divisor = ctx.args
        return torch.ops.aten.avg_pool2d_backward(grad, like, kernel, stride, padding, ceil_mode,
                                                  count_include_pad, divisor), None


class _ConvBNFn(torch.autograd.Function):
    """F.conv2d + F.batch_norm keeping neither the BN input nor (for spikes) the dense conv input.

    The fallback of the compiled conv_bn_recompute op (csrc/conv_bn_op.cpp), with the same
    formula: forward makes the ATen calls F.conv2d and F.batch_norm make and keeps the input (as
    _keep_input) and BatchNorm's per-channel statistics; backward recomputes only the convolution
    (in the forward's compute dtype, autocast off) and calls the gradient formulas autograd's own
    nodes call, so the gradients are the plain layers'. On CUDA that needs cudnn.benchmark off:
    backward runs on autograd's thread, whose cuDNN plan cache is its own, and a benchmarked
    choice there may be another algorithm than the forward's (docs/MEMORY.md).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, geometry, bn_weight, bn_bias, running_mean, running_var, bn_args, code,
                repeat):
        training, momentum, eps, cudnn_enabled = bn_args
        y = _conv2d(x, weight, bias, geometry)  # autocast casts as usual; BatchNorm has no policy
        _check_batch_size(y, training)
        z, save_mean, save_invstd, reserve, impl = torch.ops.aten._batch_norm_impl_index(
            y, bn_weight, bn_bias, running_mean, running_var, training, momentum, eps, cudnn_enabled)
        # the running statistics themselves, as autograd's BatchNorm node saves them
        ctx.save_for_backward(_keep_input(ctx, x, code, repeat), weight, bias, bn_weight, running_mean, running_var,
                              save_mean, save_invstd, reserve)
        ctx.geometry, ctx.y_dtype = geometry, y.dtype
        ctx.bn = (impl, training, eps, bn_bias is not None)
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        kept, weight, bias, bn_weight, running_mean, running_var, save_mean, save_invstd, reserve = ctx.saved_tensors
        impl, training, eps, has_bn_bias = ctx.bn
        need = ctx.needs_input_grad
        x = _restore_input(ctx, kept)
        cd = ctx.y_dtype
        with _no_autocast(x.device.type):  # backward() may run inside an autocast region
            y = _conv2d(_cast(x, cd), _cast(weight, cd), _cast(bias, cd), ctx.geometry)
        conv_mask = [need[0], need[1], bias is not None and need[2]]
        bn_mask = [any(conv_mask), bn_weight is not None and need[4], has_bn_bias and need[5]]
        # (the C++ op first makes a cuDNN grad contiguous in y's layout, as autograd's formula;
        # cudnn_batch_norm_backward does that itself, so it is left out here)
        gy, gbn_w, gbn_b = torch.ops.aten._batch_norm_impl_index_backward(
            impl, y, grad, bn_weight, running_mean, running_var, save_mean, save_invstd, training, eps, bn_mask,
            reserve)
        gx = gw = gb = None
        if any(conv_mask):
            gx, gw, gb = _conv2d_backward(gy, x, weight, bias, ctx.geometry, conv_mask)
        return (gx, gw, gb, None, gbn_w if bn_mask[1] else None, gbn_b if bn_mask[2] else None,
                None, None, None, None, None)


def _conv2d(x, weight, bias, geometry) -> torch.Tensor:
    """_ConvBNFn's convolution, forward's and recompute (benchmarks/memory_diff.py probes it here)."""
    return F.conv2d(x, weight, bias, *geometry)


def _check_batch_size(y: torch.Tensor, training: bool) -> None:
    """F.batch_norm's own check, which ATen leaves to Python."""
    if training and y.shape[0] * math.prod(y.shape[2:]) == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {y.size()}")


def _recomputable(conv: nn.Conv2d, bn: nn.Module) -> bool:
    """Whether ConvBN's 'min' can run conv + BN as one op: a BatchNorm2d whose forward is
    nn.BatchNorm2d's (not SyncBatchNorm's, nor a subclass's own), and no forward or backward
    hooks on either module or globally (the op calls neither module; a lazy BatchNorm
    initialises in a hook)."""
    module = nn.modules.module
    return (isinstance(bn, nn.BatchNorm2d) and type(bn).forward is nn.modules.batchnorm._BatchNorm.forward
            and not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                        for m in (conv, bn))
            and not (module._global_forward_hooks or module._global_forward_pre_hooks
                     or module._global_backward_hooks or module._global_backward_pre_hooks))


def _batch_norm_args(bn: nn.BatchNorm2d):
    """``(running_mean, running_var, (training, momentum, eps, cudnn_enabled))``: F.batch_norm's
    arguments as ``nn.BatchNorm2d.forward`` computes them, counting the step as it does
    (``num_batches_tracked``)."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # a cumulative moving average
            momentum = 1.0 / float(bn.num_batches_tracked)
    training = bn.training or (bn.running_mean is None and bn.running_var is None)
    kept = not bn.training or bn.track_running_stats  # else the buffers must not be updated
    return (bn.running_mean if kept else None, bn.running_var if kept else None,
            (training, momentum, bn.eps, torch.backends.cudnn.enabled))


def _conv_bn_recompute(conv: nn.Conv2d, bn: nn.Module, x: torch.Tensor, code: SpikeCode | None,
                       repeat: _Repeat | None):
    """``bn(conv(x))`` keeping only ``x`` (packed with code, or once with repeat) and BN's
    statistics; None where this does not apply (see _recomputable; 'same' / 'valid' padding)."""
    if not _recomputable(conv, bn):
        return None
    x, padding, repeat = _padded(conv, x, repeat)
    if isinstance(padding, str):
        return None
    running_mean, running_var, bn_args = _batch_norm_args(bn)
    geometry = (conv.stride, padding, conv.dilation, conv.groups)
    ops = _compiled_ops(x.device.type)
    if ops:  # the same formula in C++ (csrc/conv_bn_op.cpp)
        if code is not None and repeat is None and _CHECK[0]:
            _check_code(x, code)
        bits, divisor = (code.bits, code.divisor) if code is not None and repeat is None else (0, 1)
        return ops.conv_bn_recompute(x, conv.weight, conv.bias, *geometry, bn.weight, bn.bias, running_mean,
                                     running_var, *bn_args, bits, divisor,
                                     None if repeat is None else repeat.base, 0 if repeat is None else repeat.T)
    return _ConvBNFn.apply(x, conv.weight, conv.bias, geometry, bn.weight, bn.bias, running_mean, running_var,
                           bn_args, code, repeat)


def _needs_grad(*tensors) -> bool:
    """Whether to take the memory-saving path: autograd will keep inputs, and we run eagerly.

    Under torch.compile the layers are torch's layers: dynamo does not trace these autograd
    functions (their packed intermediates), and the compiler plans its own saved tensors.
    """
    if _is_compiling():
        return False
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _is_compiling() -> bool:
    fn = getattr(torch.compiler, "is_compiling", None)
    return bool(fn and fn())


def _padded(conv: nn.Conv2d, x: torch.Tensor, repeat: _Repeat | None):
    """``(x, padding, repeat)`` for a convolution with zero padding: a padding mode other than
    zeros pads first, as nn.Conv2d does (padding copies values, the code holds; no repeat left)."""
    if conv.padding_mode != "zeros":
        return F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode), (0, 0), None
    return x, conv.padding, repeat


def _spike_conv(conv: nn.Conv2d, x: torch.Tensor, code: SpikeCode | None, repeat: _Repeat | None) -> torch.Tensor:
    """``conv(x)`` keeping ``x`` packed (code) or once (repeat); torch's conv when nothing needs a gradient."""
    if not _needs_grad(x, conv.weight, conv.bias):
        return nn.Conv2d.forward(conv, x)
    x, padding, repeat = _padded(conv, x, repeat)
    if isinstance(padding, str):  # 'same' / 'valid': let torch resolve it, keep x as is
        return nn.Conv2d.forward(conv, x)
    ops = _compiled_ops(x.device.type) if code is not None or repeat is not None else False
    if ops:
        # the same formula as _ConvFn, in C++ (csrc/spike_ops.cpp): no Python between autograd
        # and the kernels (benchmarks/results/cpu_2026-12-07_spike_ops.md)
        if repeat is not None:
            return ops.spike_conv2d(x, conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups,
                                    1, 1, repeat.base, repeat.T)
        if _CHECK[0]:
            _check_code(x, code)
        return ops.spike_conv2d(x, conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups,
                                code.bits, code.divisor, None, 0)
    return _ConvFn.apply(x, conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups, code, repeat)


# -------------------------------------------------------------------------------------- modules
class SpikeConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose backward keeps its input packed to ``code.bits`` bits per value.

    Same arguments, parameters and state-dict keys as ``nn.Conv2d``, plus ``code``
    (:class:`SpikeCode`, default: spikes {0, 1}) saying what the input holds. Losses and
    gradients are bit for bit those of ``nn.Conv2d`` (tested), in fp32, fp16/bf16 and under
    autocast. The input must hold only the values of ``code`` (a LIF output): it is trusted, not
    checked, unless :func:`check_spikes` is on. ``memory='plain'`` (or :func:`set_memory_mode`)
    makes it a plain ``nn.Conv2d``.
    """

    def __init__(self, *args, code: SpikeCode = SPIKES, **kwargs):
        super().__init__(*args, **kwargs)
        self.code = code
        self.memory = "default"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.memory == "plain":
            return super().forward(x)
        return _spike_conv(self, x, self.code, None)

    def extra_repr(self) -> str:  # noqa: D102
        return f"{super().extra_repr()}, code={self.code}, memory={self.memory!r}"


class SpikeLinear(nn.Linear):
    """``nn.Linear`` whose backward keeps its input packed to ``code.bits`` bits per value.

    Same arguments, parameters and state-dict keys as ``nn.Linear``, plus ``code``
    (:class:`SpikeCode`). Inputs of any rank are merged to 2-D (as ``F.linear`` does for
    contiguous inputs). Bit for bit ``nn.Linear``'s loss and gradients for 2-D and 3-D inputs
    (tested); the input is trusted as for :class:`SpikeConv2d`.
    """

    def __init__(self, *args, code: SpikeCode = SPIKES, **kwargs):
        super().__init__(*args, **kwargs)
        self.code = code
        self.memory = "default"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.memory == "plain" or x.dim() < 2 or not _needs_grad(x, self.weight, self.bias):
            return super().forward(x)
        x2 = x.reshape(-1, x.shape[-1])
        ops = _compiled_ops(x.device.type)
        if ops:  # the same formula in C++ (csrc/spike_ops.cpp)
            if _CHECK[0]:
                _check_code(x2, self.code)
            out = ops.spike_linear(x2, self.weight, self.bias, self.code.bits, self.code.divisor)
        else:
            out = _LinearFn.apply(x2, self.weight, self.bias, self.code)
        return out.view(*x.shape[:-1], out.shape[-1])

    def extra_repr(self) -> str:  # noqa: D102
        return f"{super().extra_repr()}, code={self.code}, memory={self.memory!r}"


class LeanAvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` that keeps only its input's shape for backward (any input, not only spikes).

    Average pooling's gradient does not depend on the input's values, but autograd keeps the
    input; this keeps nothing. Outputs and gradients are bit for bit ``nn.AvgPool2d``'s (ATen's
    kernels, or on the CPU for NCHW input and non-overlapping windows faster ones with ATen's
    arithmetic, csrc/cpu/avg_pool_cpu.cpp).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.memory = "default"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.memory == "plain" or _is_compiling():  # torch.compile: torch's layer (_needs_grad)
            return super().forward(x)
        grad = _needs_grad(x)
        ops = _compiled_ops(x.device.type)
        # the same formula in C++ (csrc/lean_pool_op.cpp); on the CPU without a gradient too,
        # for its kernel for NCHW input (the same numbers as torch's, faster)
        if not (grad or ops and x.dim() == 4 and x.device.type == "cpu"):
            return super().forward(x)
        args = (self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                self.divisor_override)
        args = tuple(_pair(a) if i < 3 else a for i, a in enumerate(args))
        if ops and x.dim() == 4:
            return ops.lean_avg_pool2d(x, *args)
        return _AvgPoolFn.apply(x, args)


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


class ConvBN(nn.Sequential):
    """``Conv2d`` + ``BatchNorm2d`` on a ``[T, B, ...]`` sequence over the merged ``T*B`` axis.

    The same computation and state-dict keys as ``SeqToANN(conv, bn)``. What it keeps for backward
    depends on ``memory`` (:func:`set_memory_mode`):

    * ``'plain'``: what torch keeps (the conv input and the BN input).
    * ``'default'``: a :class:`SpikeConv2d` keeps its input packed; a direct-encoded input (a
      sequence expanded over time with stride 0, see ``models.direct_encode``) is kept once,
      ``[B, ...]``, instead of ``T`` times. Bitwise the plain results.
    * ``'min'``: also drops the BN input (the conv output), keeping BN's per-channel statistics,
      and recomputes the conv output in backward from the kept input: one more conv forward per
      step (one op, csrc/conv_bn_op.cpp). Bitwise the plain results. Where the conv or the BN
      has forward or backward hooks (or the BN's forward is not ``nn.BatchNorm2d``'s, e.g.
      SyncBatchNorm), it keeps what ``'default'`` keeps and calls the modules, so the hooks fire.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d):
        super().__init__(conv, bn)
        self.memory = "default"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        T, B = x.shape[:2]
        conv, bn = self[0], self[1]
        if self.memory == "plain" or not _needs_grad(x, *conv.parameters(), *bn.parameters()):
            y = bn(conv(x.flatten(0, 1)))
            return y.reshape(T, B, *y.shape[1:])
        repeat = _Repeat(x[0], T) if T > 1 and x.stride(0) == 0 else None
        code = conv.code if isinstance(conv, SpikeConv2d) and conv.memory != "plain" else None
        flat = x.flatten(0, 1)
        y = _conv_bn_recompute(conv, bn, flat, code, repeat) if self.memory == "min" else None
        if y is None:
            y = bn(_spike_conv(conv, flat, None, repeat)) if repeat is not None else bn(conv(flat))
        return y.reshape(T, B, *y.shape[1:])


def set_memory_mode(module: nn.Module, mode: str) -> nn.Module:
    """Set ``memory`` = ``mode`` (``'plain'``, ``'default'`` or ``'min'``) on every layer of this module.

    ``'plain'`` gives torch's own layers' behaviour; ``'default'`` keeps spike inputs packed and
    direct-encoded inputs once (bitwise the same results); ``'min'`` also recomputes each
    :class:`ConvBN`'s BatchNorm input in backward. Returns ``module``.
    """
    if mode not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {MEMORY_MODES}, got {mode!r}")
    for m in module.modules():
        if isinstance(m, (SpikeConv2d, SpikeLinear, LeanAvgPool2d, ConvBN)):
            m.memory = mode  # only ConvBN tells 'min' from 'default'
    return module
