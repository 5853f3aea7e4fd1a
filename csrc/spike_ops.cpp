// The spike-input layers' ops (tssd_fast/models/spike_layers.py, docs/MEMORY.md): schema, and
// the autograd formula of the packed convolution. Part of tssd_fast._C; the pack / unpack
// kernels register themselves per device (csrc/cpu/spike_pack_cpu.cpp, csrc/cuda/lif_cuda.cpp).
//
//   pack_spikes(x, bits, divisor) -> [bits, ceil(n / 8)] uint8    (csrc/spike_pack_host.h)
//   unpack_spikes(packed, size, stride, dtype, bits, divisor) -> x
//   spike_conv2d(x, weight, bias?, stride, padding, dilation, groups, bits, divisor,
//                repeat_base?, repeat_T) -> conv2d
//   spike_linear(x [N, in], weight, bias?, bits, divisor) -> F.linear
//   lean_avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor?)
//
// spike_linear: the same for F.linear on a 2-D input, with the matrix products of autograd's
// addmm / mm formulas.
// lean_avg_pool2d is F.avg_pool2d that keeps only x's shape, strides and dtype: its gradient
// never reads x's values, but autograd's own formula keeps x.
// spike_conv2d is F.conv2d whose backward keeps x packed to `bits` bits per value instead of x
// itself (or, with repeat_T > 0, a direct-encoded x = repeat_base [B, ...] at every one of
// repeat_T steps: the batch once), and computes the gradients with the ATen call autograd's own formula makes
// (convolution_backward, on the unpacked input), so they are bit for bit nn.Conv2d's. In C++
// because the same formula as a Python autograd.Function cost 60-70 us of host time per layer
// call on top of the convolution (benchmarks/results/cpu_2026-12-07_spike_ops.md).
#include <ATen/core/LegacyTypeDispatch.h>  // AutoDispatchBelowADInplaceOrView
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/avg_pool2d.h>
#include <ATen/ops/avg_pool2d_backward.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/zeros.h>
#include <c10/core/MemoryFormat.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>  // DelayedError
#include <torch/library.h>

#include <array>
#include <optional>
#include <vector>

#include "spike_pack_host.h"  // read_as_it_lies

namespace tssd_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

const c10::TypedOperatorHandle<at::Tensor(const at::Tensor&, int64_t, int64_t)>& pack_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tssd_fast::pack_spikes", "")
                             .typed<at::Tensor(const at::Tensor&, int64_t, int64_t)>();
  return op;
}

using UnpackSig = at::Tensor(const at::Tensor&, c10::IntArrayRef, c10::IntArrayRef,
                             at::ScalarType, int64_t, int64_t);
const c10::TypedOperatorHandle<UnpackSig>& unpack_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tssd_fast::unpack_spikes", "")
                             .typed<UnpackSig>();
  return op;
}

// torch's strides of a contiguous tensor of `sizes` (a size 0 or 1 counts as 1).
std::vector<int64_t> contiguous_strides(c10::IntArrayRef sizes) {
  std::vector<int64_t> out(sizes.size());
  int64_t step = 1;
  for (int64_t i = static_cast<int64_t>(sizes.size()) - 1; i >= 0; --i) {
    out[i] = step;
    step *= std::max<int64_t>(sizes[i], 1);
  }
  return out;
}

at::Tensor cast(const at::Tensor& t, at::ScalarType dtype) {
  return !t.defined() || t.scalar_type() == dtype ? t : t.to(dtype);
}

// With create_graph=True, backward's results must not be differentiated again: to these
// formulas the unpacked input is a constant, so a second derivative would silently miss its
// terms. As torch's @once_differentiable (the Python fallback uses it): the results get an
// error node that raises if a second backward reaches it.
variable_list once_differentiable(variable_list out) {
  if (!at::GradMode::is_enabled()) return out;
  for (auto& t : out) {
    if (t.defined()) {
      t = t.detach();
      t.set_requires_grad(true);
    }
  }
  return torch::autograd::DelayedError(
      "tssd_fast: trying to differentiate twice a spike-input layer's backward (memory='default' "
      "or 'min' keeps its input packed: first derivatives only; use memory='plain' for double "
      "backward)",
      static_cast<int64_t>(out.size()))(std::move(out));
}

class SpikeConvFunction : public torch::autograd::Function<SpikeConvFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                            c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                            int64_t bits, int64_t divisor,
                            const std::optional<at::Tensor>& repeat_base, int64_t repeat_T) {
    // autocast (when on) casts here as in F.conv2d: its dispatch key is still set
    at::Tensor out = at::conv2d(x, weight, bias, stride, padding, dilation, groups);
    const at::Tensor b = bias.has_value() ? *bias : at::Tensor();
    // a direct-encoded x is its image batch at every step: keep the batch once instead
    const bool repeat = repeat_T > 0;
    ctx->save_for_backward({repeat ? *repeat_base : pack_op().call(x, bits, divisor), weight, b});
    ctx->saved_data["repeat_T"] = repeat_T;
    ctx->saved_data["size"] = x.sizes();
    ctx->saved_data["strides"] =
        read_as_it_lies(x) ? x.strides().vec() : contiguous_strides(x.sizes());
    ctx->saved_data["dtype"] = x.scalar_type();
    ctx->saved_data["code"] = std::vector<int64_t>{bits, divisor, groups};
    ctx->saved_data["geometry"] = std::vector<int64_t>{stride[0], stride[1], padding[0],
                                                       padding[1], dilation[0], dilation[1]};
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const bool create_graph = at::GradMode::is_enabled();
    const at::AutoGradMode no_grad(false);
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &planes = saved[0], &weight = saved[1], &bias = saved[2];  // (or the batch)
    const at::Tensor& grad = grads[0];
    const auto code = ctx->saved_data["code"].toIntVector();
    const auto g = ctx->saved_data["geometry"].toIntVector();
    const at::ScalarType x_dtype = ctx->saved_data["dtype"].toScalarType();
    const at::ScalarType cdtype = grad.scalar_type();  // autocast's, or the input's
    const int64_t repeat_T = ctx->saved_data["repeat_T"].toInt();
    at::Tensor x;
    if (repeat_T > 0) {  // planes is the image batch [B, ...]: expand over time, as the forward's x
      std::vector<int64_t> sizes = planes.sizes().vec();
      sizes.insert(sizes.begin(), repeat_T);
      x = planes.unsqueeze(0).expand(sizes).flatten(0, 1);
    } else {
      x = unpack_op().call(planes, ctx->saved_data["size"].toIntVector(),
                           ctx->saved_data["strides"].toIntVector(), x_dtype, code[0], code[1]);
    }
    x = cast(x, cdtype);
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      bias.defined() && ctx->needs_input_grad(2)};
    const int64_t bias_size = bias.defined() ? bias.size(0) : 0;
    const at::OptionalIntArrayRef bias_sizes =
        bias.defined() ? at::OptionalIntArrayRef(c10::IntArrayRef(&bias_size, 1)) : std::nullopt;
    auto [gx, gw, gb] = at::convolution_backward(
        grad, x, cast(weight, cdtype), bias_sizes, {g[0], g[1]}, {g[2], g[3]}, {g[4], g[5]},
        /*transposed=*/false, {0, 0}, code[2], mask);
    // autocast's casts are differentiable: their backward casts the gradient back
    variable_list out(11);
    if (mask[0]) out[0] = cast(gx, x_dtype);
    if (mask[1]) out[1] = cast(gw, weight.scalar_type());
    if (mask[2]) out[2] = cast(gb, bias.scalar_type());
    const at::AutoGradMode restore(create_graph);
    return once_differentiable(std::move(out));
  }
};

class SpikeLinearFunction : public torch::autograd::Function<SpikeLinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, int64_t bits, int64_t divisor) {
    at::Tensor out = at::linear(x, weight, bias);  // autocast (when on) casts here
    const at::Tensor b = bias.has_value() ? *bias : at::Tensor();
    ctx->save_for_backward({pack_op().call(x, bits, divisor), weight, b});
    ctx->saved_data["size"] = x.sizes();
    ctx->saved_data["strides"] =
        read_as_it_lies(x) ? x.strides().vec() : contiguous_strides(x.sizes());
    ctx->saved_data["dtype"] = x.scalar_type();
    ctx->saved_data["code"] = std::vector<int64_t>{bits, divisor};
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const bool create_graph = at::GradMode::is_enabled();
    const at::AutoGradMode no_grad(false);
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &planes = saved[0], &weight = saved[1], &bias = saved[2];
    const at::Tensor& grad = grads[0];
    const at::ScalarType x_dtype = ctx->saved_data["dtype"].toScalarType();
    const at::ScalarType cdtype = grad.scalar_type();
    variable_list out(5);
    if (ctx->needs_input_grad(0)) out[0] = cast(grad.mm(cast(weight, cdtype)), x_dtype);
    if (ctx->needs_input_grad(1)) {
      const auto code = ctx->saved_data["code"].toIntVector();
      const at::Tensor x = unpack_op().call(planes, ctx->saved_data["size"].toIntVector(),
                                            ctx->saved_data["strides"].toIntVector(), x_dtype,
                                            code[0], code[1]);
      out[1] = cast(grad.t().mm(cast(x, cdtype)), weight.scalar_type());
    }
    if (bias.defined() && ctx->needs_input_grad(2)) {
      out[2] = cast(grad.sum(0), bias.scalar_type());
    }
    const at::AutoGradMode restore(create_graph);
    return once_differentiable(std::move(out));
  }
};

at::Tensor spike_linear_autograd(const at::Tensor& x, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, int64_t bits,
                                 int64_t divisor) {
  TORCH_CHECK(x.dim() == 2, "tssd_fast: spike_linear takes a 2-D input, got ", x.dim(), "-D");
  const bool bias_grad = bias.has_value() && bias->defined() && bias->requires_grad();
  if (!(at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad() || bias_grad))) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return at::linear(x, weight, bias);
  }
  return SpikeLinearFunction::apply(x, weight, bias, bits, divisor);
}

at::Tensor spike_linear_plain(const at::Tensor& x, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, int64_t, int64_t) {
  return at::linear(x, weight, bias);
}

// Which backward lean_avg_pool2d takes for non-overlapping windows: the broadcast on CUDA only
// (auto), always, or never (ATen's avg_pool2d_backward). Tests set it (set_pool_backward).
enum PoolBackwardMode : int { kPoolAuto = 0, kPoolBroadcast = 1, kPoolAten = 2 };
int& pool_backward_mode() {
  static int mode = kPoolAuto;
  return mode;
}

class LeanAvgPoolFunction : public torch::autograd::Function<LeanAvgPoolFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, c10::IntArrayRef kernel,
                            c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode,
                            bool count_include_pad, std::optional<int64_t> divisor) {
    ctx->saved_data["size"] = x.sizes();
    ctx->saved_data["strides"] = x.strides();
    ctx->saved_data["dtype"] = x.scalar_type();
    ctx->saved_data["device"] = x.device();
    ctx->saved_data["args"] = std::vector<int64_t>{kernel[0], kernel[1], stride[0], stride[1],
                                                   padding[0], padding[1], ceil_mode,
                                                   count_include_pad};
    ctx->saved_data["divisor"] = divisor;
    return at::avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto a = ctx->saved_data["args"].toIntVector();
    const auto d = ctx->saved_data["divisor"].toOptional<int64_t>();
    const auto size = ctx->saved_data["size"].toIntVector();
    const auto strides = ctx->saved_data["strides"].toIntVector();
    const auto options = at::TensorOptions()
                             .dtype(ctx->saved_data["dtype"].toScalarType())
                             .device(ctx->saved_data["device"].toDevice());
    variable_list out(7);
    const int64_t divide = d.has_value() ? *d : a[0] * a[1];
    const int mode = pool_backward_mode();
    const bool wanted = mode == kPoolBroadcast ||
                        (mode == kPoolAuto && options.device().type() == c10::DeviceType::CUDA);
    if (wanted && a[0] == a[2] && a[1] == a[3] && a[4] == 0 && a[5] == 0 && divide > 0 &&
        (divide & (divide - 1)) == 0 && (!a[6] || (size[2] % a[0] == 0 && size[3] % a[1] == 0))) {
      out[0] = pool_backward_by_broadcast(grads[0], size, strides, a[0], a[1], divide, options);
      return out;
    }
    // shape and layout only: avg_pool2d_backward does not read the input's values
    const at::Tensor like = at::empty_strided(size, strides, options);
    out[0] = at::avg_pool2d_backward(grads[0], like, {a[0], a[1]}, {a[2], a[3]}, {a[4], a[5]},
                                     a[6] != 0, a[7] != 0, d);
    return out;
  }

  // Windows that do not overlap (kernel == stride, no padding) and a power-of-two divisor: each
  // input element lies in at most one window, so its gradient is that window's times 1/divisor
  // (exact), and 0 past the last window. ATen's avg_pool2d_backward computes the same numbers
  // with a search over the windows per input element: on an H200 it ran at 7% of the copy
  // bandwidth (0.55 ms of a 7.6 ms VGG-9 step for 4 calls; gpu_2026-11-28_c1d6259). This is one
  // elementwise kernel writing the input's size, in the layout torch's backward would choose.
  // Used on CUDA only (kPoolAuto): on the CPU ATen's kernel measured faster (47 vs 67 ms at
  // [128, 128, 32, 32]); on the GPU it is a prediction until a GPU run times it.
  static at::Tensor pool_backward_by_broadcast(const at::Tensor& grad,
                                               const std::vector<int64_t>& size,
                                               const std::vector<int64_t>& strides, int64_t kh,
                                               int64_t kw, int64_t divide,
                                               const at::TensorOptions& options) {
    const int64_t N = size[0], C = size[1], H = size[2], W = size[3];
    const int64_t Ho = grad.size(2), Wo = grad.size(3);
    const bool cl = strides == c10::get_channels_last_strides_2d(size) &&
                    strides != contiguous_strides(size);
    const bool partial = Ho * kh != H || Wo * kw != W;
    const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    at::Tensor gin = partial ? at::zeros(size, options.memory_format(fmt))
                             : at::empty(size, options.memory_format(fmt));
    const auto s = gin.strides();
    // gin's covered part as [N, C, Ho, kh, Wo, kw]: a view with gin's own strides
    at::Tensor windows = gin.as_strided({N, C, Ho, kh, Wo, kw},
                                        {s[0], s[1], kh * s[2], s[2], kw * s[3], s[3]});
    at::mul_out(windows, grad.unsqueeze(3).unsqueeze(5).expand({N, C, Ho, kh, Wo, kw}),
                at::Scalar(1.0 / static_cast<double>(divide)));
    return gin;
  }
};

at::Tensor lean_avg_pool2d(const at::Tensor& x, c10::IntArrayRef kernel, c10::IntArrayRef stride,
                           c10::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                           std::optional<int64_t> divisor) {
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 2,
              "tssd_fast: lean_avg_pool2d takes 2 kernel sizes, strides and paddings");
  if (!(at::GradMode::is_enabled() && x.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return at::avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor);
  }
  return LeanAvgPoolFunction::apply(x, kernel, stride, padding, ceil_mode, count_include_pad,
                                    divisor);
}

at::Tensor lean_avg_pool2d_plain(const at::Tensor& x, c10::IntArrayRef kernel,
                                 c10::IntArrayRef stride, c10::IntArrayRef padding,
                                 bool ceil_mode, bool count_include_pad,
                                 std::optional<int64_t> divisor) {
  return at::avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor);
}

at::Tensor spike_conv2d_autograd(const at::Tensor& x, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                                 c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                 int64_t groups, int64_t bits, int64_t divisor,
                                 const std::optional<at::Tensor>& repeat_base, int64_t repeat_T) {
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "tssd_fast: spike_conv2d takes 2 strides, paddings and dilations");
  TORCH_CHECK(repeat_T <= 0 || (repeat_base.has_value() && repeat_base->defined() &&
                                repeat_base->dim() == x.dim() &&
                                repeat_base->size(0) * repeat_T == x.size(0)),
              "tssd_fast: spike_conv2d: repeat_T > 0 needs repeat_base [B, ...] with T*B = x's "
              "first size");
  const bool bias_grad = bias.has_value() && bias->defined() && bias->requires_grad();
  if (!(at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad() || bias_grad))) {
    at::AutoDispatchBelowADInplaceOrView guard;  // nothing to keep: the convolution alone
    return at::conv2d(x, weight, bias, stride, padding, dilation, groups);
  }
  return SpikeConvFunction::apply(x, weight, bias, stride, padding, dilation, groups, bits,
                                  divisor, repeat_base, repeat_T);
}

// Below autograd (inference mode, meta / fake tensors): the convolution, nothing kept.
at::Tensor spike_conv2d_plain(const at::Tensor& x, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                              c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                              int64_t, int64_t, const std::optional<at::Tensor>&, int64_t) {
  return at::conv2d(x, weight, bias, stride, padding, dilation, groups);
}

}  // namespace

void set_pool_backward(int64_t mode) {
  TORCH_CHECK(mode >= kPoolAuto && mode <= kPoolAten, "tssd_fast: pool backward mode ", mode);
  pool_backward_mode() = static_cast<int>(mode);
}

using SpikeConvSig = at::Tensor(const at::Tensor&, const at::Tensor&,
                                const std::optional<at::Tensor>&, c10::IntArrayRef,
                                c10::IntArrayRef, c10::IntArrayRef, int64_t, int64_t, int64_t,
                                const std::optional<at::Tensor>&, int64_t);

at::Tensor spike_conv2d_call(const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                             c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                             int64_t bits, int64_t divisor,
                             const std::optional<at::Tensor>& repeat_base, int64_t repeat_T) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tssd_fast::spike_conv2d", "")
                             .typed<SpikeConvSig>();
  return op.call(x, weight, bias, stride, padding, dilation, groups, bits, divisor, repeat_base,
                 repeat_T);
}

at::Tensor spike_linear_call(const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, int64_t bits,
                             int64_t divisor) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("tssd_fast::spike_linear", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                            const std::optional<at::Tensor>&, int64_t, int64_t)>();
  return op.call(x, weight, bias, bits, divisor);
}

using LeanPoolSig = at::Tensor(const at::Tensor&, c10::IntArrayRef, c10::IntArrayRef,
                               c10::IntArrayRef, bool, bool, std::optional<int64_t>);

at::Tensor lean_avg_pool2d_call(const at::Tensor& x, c10::IntArrayRef kernel,
                                c10::IntArrayRef stride, c10::IntArrayRef padding,
                                bool ceil_mode, bool count_include_pad,
                                std::optional<int64_t> divisor) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tssd_fast::lean_avg_pool2d", "")
                             .typed<LeanPoolSig>();
  return op.call(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor);
}

}  // namespace tssd_fast

TORCH_LIBRARY_FRAGMENT(tssd_fast, m) {
  // no autograd: they run inside the layers' autograd formulas
  m.def("pack_spikes(Tensor x, int bits, int divisor) -> Tensor");
  m.def("unpack_spikes(Tensor packed, int[] size, int[] stride, ScalarType dtype, int bits, "
        "int divisor) -> Tensor");
  m.def("spike_conv2d(Tensor x, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
        "int[] dilation, int groups, int bits, int divisor, Tensor? repeat_base=None, "
        "int repeat_T=0) -> Tensor");
  m.def("spike_linear(Tensor x, Tensor weight, Tensor? bias, int bits, int divisor) -> Tensor");
  m.def("lean_avg_pool2d(Tensor x, int[] kernel, int[] stride, int[] padding, bool ceil_mode, "
        "bool count_include_pad, int? divisor_override) -> Tensor");
}

TORCH_LIBRARY_IMPL(tssd_fast, Autograd, m) {
  m.impl("spike_conv2d", &tssd_fast::spike_conv2d_autograd);
  m.impl("spike_linear", &tssd_fast::spike_linear_autograd);
  m.impl("lean_avg_pool2d", &tssd_fast::lean_avg_pool2d);
}

TORCH_LIBRARY_IMPL(tssd_fast, CompositeExplicitAutograd, m) {
  m.impl("spike_conv2d", &tssd_fast::spike_conv2d_plain);
  m.impl("spike_linear", &tssd_fast::spike_linear_plain);
  m.impl("lean_avg_pool2d", &tssd_fast::lean_avg_pool2d_plain);
}
