// The spike-input layers' ops (tssd_fast/models/spike_layers.py, docs/MEMORY.md): schema, and
// the autograd formulas of the packed convolution and linear layer. Part of tssd_fast._C; the
// pack / unpack kernels register themselves per device (csrc/cpu/spike_pack_cpu.cpp,
// csrc/cuda/lif_cuda.cpp); the lean average pool is in csrc/lean_pool_op.cpp.
//
//   pack_spikes(x, bits, divisor) -> [bits, ceil(n / 8)] uint8    (csrc/spike_pack_host.h)
//   unpack_spikes(packed, size, stride, dtype, bits, divisor) -> x
//   spike_conv2d(x, weight, bias?, stride, padding, dilation, groups, bits, divisor,
//                repeat_base?, repeat_T) -> F.conv2d
//   spike_linear(x [N, in], weight, bias?, bits, divisor) -> F.linear
//
// spike_conv2d is F.conv2d whose backward keeps x packed to `bits` bits per value instead of x
// itself (or, with repeat_T > 0, a direct-encoded x = repeat_base [B, ...] at every one of
// repeat_T steps: the batch once), and computes the gradients with the ATen call autograd's own
// formula makes (convolution_backward, on the unpacked input), so they are bit for bit
// nn.Conv2d's. spike_linear: the same for F.linear on a 2-D input, with the matrix products of
// autograd's addmm / mm formulas. In C++ because the same formulas as Python autograd.Functions
// cost 60-110 us of host time per layer call on top of the layer
// (benchmarks/results/cpu_2026-12-07_spike_ops.md).
#include <ATen/core/LegacyTypeDispatch.h>  // AutoDispatchBelowADInplaceOrView
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/linear.h>
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

// The layer input as backward keeps it: its bit planes, with what unpacks them (size, layout,
// code) in ctx; the twin of spike_layers._keep_input / _restore_input.
at::Tensor keep_packed(AutogradContext* ctx, const at::Tensor& x, int64_t bits, int64_t divisor) {
  ctx->saved_data["size"] = x.sizes();
  ctx->saved_data["strides"] =
      read_as_it_lies(x) ? x.strides().vec() : contiguous_strides(x.sizes());
  ctx->saved_data["code"] = std::vector<int64_t>{bits, divisor};
  return pack_op().call(x, bits, divisor);
}

at::Tensor unpack_kept(AutogradContext* ctx, const at::Tensor& planes, at::ScalarType dtype) {
  const auto code = ctx->saved_data["code"].toIntVector();
  return unpack_op().call(planes, ctx->saved_data["size"].toIntVector(),
                          ctx->saved_data["strides"].toIntVector(), dtype, code[0], code[1]);
}

// Whether a call records a graph: grad mode on and an input that needs a gradient.
bool records_grad(const at::Tensor& x, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias) {
  const bool bias_grad = bias.has_value() && bias->defined() && bias->requires_grad();
  return at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad() || bias_grad);
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
    ctx->save_for_backward(
        {repeat_T > 0 ? *repeat_base : keep_packed(ctx, x, bits, divisor), weight, b});
    ctx->saved_data["repeat_T"] = repeat_T;
    ctx->saved_data["dtype"] = x.scalar_type();
    ctx->saved_data["geometry"] = std::vector<int64_t>{
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups};
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const bool create_graph = at::GradMode::is_enabled();
    const at::AutoGradMode no_grad(false);
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &planes = saved[0], &weight = saved[1], &bias = saved[2];  // (or the batch)
    const at::Tensor& grad = grads[0];
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
      x = unpack_kept(ctx, planes, x_dtype);
    }
    x = cast(x, cdtype);
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      bias.defined() && ctx->needs_input_grad(2)};
    const int64_t bias_size = bias.defined() ? bias.size(0) : 0;
    const at::OptionalIntArrayRef bias_sizes =
        bias.defined() ? at::OptionalIntArrayRef(c10::IntArrayRef(&bias_size, 1)) : std::nullopt;
    auto [gx, gw, gb] = at::convolution_backward(
        grad, x, cast(weight, cdtype), bias_sizes, {g[0], g[1]}, {g[2], g[3]}, {g[4], g[5]},
        /*transposed=*/false, {0, 0}, g[6], mask);
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
    ctx->save_for_backward({keep_packed(ctx, x, bits, divisor), weight, b});
    ctx->saved_data["dtype"] = x.scalar_type();
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
      out[1] = cast(grad.t().mm(cast(unpack_kept(ctx, planes, x_dtype), cdtype)),
                    weight.scalar_type());
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
  if (!records_grad(x, weight, bias)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return at::linear(x, weight, bias);
  }
  return SpikeLinearFunction::apply(x, weight, bias, bits, divisor);
}

at::Tensor spike_linear_plain(const at::Tensor& x, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, int64_t, int64_t) {
  return at::linear(x, weight, bias);
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
  if (!records_grad(x, weight, bias)) {
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
}

TORCH_LIBRARY_IMPL(tssd_fast, Autograd, m) {
  m.impl("spike_conv2d", &tssd_fast::spike_conv2d_autograd);
  m.impl("spike_linear", &tssd_fast::spike_linear_autograd);
}

TORCH_LIBRARY_IMPL(tssd_fast, CompositeExplicitAutograd, m) {
  m.impl("spike_conv2d", &tssd_fast::spike_conv2d_plain);
  m.impl("spike_linear", &tssd_fast::spike_linear_plain);
}
